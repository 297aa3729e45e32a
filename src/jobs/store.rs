//! Every SQL statement about training jobs and their curves (the event log is in
//! [`super::events`]). Rows are separate from views; each state transition is one function, an
//! `UPDATE … WHERE status = ANY(…)` whose allowed statuses come from [`JobStatus`]'s sets and
//! whose changed rows are returned, so a caller always knows whether it changed anything.
//! Every statement is checked against the schema at compile time (`sqlx::query!`, with the
//! offline data in `.sqlx/`). Functions take the caller's transaction: the request side (tenant transactions, row-level
//! security) and the processor (system transactions) share them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::MetricsUpdate;
use super::lifecycle::{JobStage, JobStatus};
use crate::db::Tx;

mod views;
pub use views::{active_views, curve, find_view, list_rows, list_views};

type Result<T> = std::result::Result<T, sqlx::Error>;

/// What the processor needs to know of a job.
#[derive(Debug, Clone)]
pub struct ProcessingRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: JobStatus,
    pub external_job_id: Option<String>,
    pub retry_count: i32,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub budget_cap: Option<f64>,
    pub current_cost: f64,
    pub gpu_type: String,
    pub gpu_count: i32,
    pub backend: String,
    pub base_model: String,
    pub hyperparameters: Value,
    pub estimate: Option<Value>,
    pub last_progress_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub normalized_key: Option<String>,
    pub dataset_name: String,
    /// The latest checkpoint: the attempt whose folder holds it, its step and sha256.
    pub checkpoint_attempt: Option<i32>,
    pub checkpoint_step: Option<i32>,
    pub checkpoint_sha256: Option<String>,
    pub auto_resumes: i32,
}

impl ProcessingRow {
    /// The prefix of this attempt's event keys (a retry starts a fresh sequence).
    pub fn attempt(&self) -> String {
        format!("a{}", self.retry_count)
    }
}

pub async fn load_for_processing(tx: &mut Tx, id: Uuid) -> Result<Option<ProcessingRow>> {
    sqlx::query_as!(
        ProcessingRow,
        r#"SELECT j.id, j.user_id, j.status AS "status: JobStatus", j.external_job_id, j.retry_count,
                  j.cancel_requested_at, j.budget_cap::float8 AS budget_cap,
                  j.current_cost::float8 AS "current_cost!", j.gpu_type, j.gpu_count, j.backend,
                  j.base_model, j.hyperparameters, j.estimate, j.last_progress_at, j.started_at,
                  d.normalized_key, d.name AS dataset_name, j.checkpoint_attempt, j.checkpoint_step,
                  j.checkpoint_sha256, j.auto_resumes
             FROM training_jobs j
             JOIN datasets d ON d.id = j.dataset_id AND d.user_id = j.user_id AND d.deleted_at IS NULL
            WHERE j.id = $1"#,
        id
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Locks the job's row and returns its attempt number. The lock orders the job's writes (its
/// event ids commit in order) and keeps a retry from starting under a task of the old attempt.
pub async fn lock_attempt(tx: &mut Tx, id: Uuid) -> Result<Option<i32>> {
    sqlx::query_scalar!(
        "SELECT retry_count FROM training_jobs WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Locks a job of `user` for a user action; its status and attempt.
pub async fn lock_for_user(tx: &mut Tx, user: Uuid, id: Uuid) -> Result<Option<(JobStatus, i32)>> {
    let row = sqlx::query!(
        r#"SELECT status AS "status: JobStatus", retry_count FROM training_jobs
            WHERE id = $1 AND user_id = $2 FOR UPDATE"#,
        id,
        user
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| (r.status, r.retry_count)))
}

/// A new job row, everything validated and estimated.
pub struct NewJobRow<'a> {
    pub user_id: Uuid,
    pub dataset_id: Uuid,
    pub base_model: &'a str,
    pub preset: Option<String>,
    pub hyperparameters: Value,
    pub gpu_type: &'a str,
    pub gpu_count: i32,
    pub backend: &'a str,
    pub total_steps: i32,
    pub estimate: Value,
    pub estimated_total_cost: f64,
    pub budget_cap: Option<f64>,
    pub duration_high_s: f64,
}

pub async fn insert(tx: &mut Tx, job: NewJobRow<'_>) -> Result<Uuid> {
    sqlx::query_scalar!(
        "INSERT INTO training_jobs (user_id, dataset_id, base_model, preset, hyperparameters, gpu_type, gpu_count,
                                    backend, total_steps, estimate, estimated_total_cost, budget_cap,
                                    estimated_completion_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::float8::numeric, $12::float8::numeric,
                 now() + make_interval(secs => $13))
         RETURNING id",
        job.user_id,
        job.dataset_id,
        job.base_model,
        job.preset,
        job.hyperparameters,
        job.gpu_type,
        job.gpu_count,
        job.backend,
        job.total_steps,
        job.estimate,
        job.estimated_total_cost,
        job.budget_cap,
        job.duration_high_s
    )
    .fetch_one(&mut **tx)
    .await
}

pub async fn set_execution_timeout(tx: &mut Tx, id: Uuid, timeout_ms: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE training_jobs SET execution_timeout_ms = $2 WHERE id = $1",
        id,
        timeout_ms
    )
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// `queued` → `initializing`: the backend accepted the run. `false` when the job moved on.
pub async fn mark_submitted(tx: &mut Tx, id: Uuid, external: &str) -> Result<bool> {
    let changed = sqlx::query!(
        "UPDATE training_jobs SET external_job_id = $2, status = $3, current_stage = $4
          WHERE id = $1 AND status = $5 AND external_job_id IS NULL",
        id,
        external,
        JobStatus::Initializing.as_str(),
        JobStage::QueuedOnGpu.as_str(),
        JobStatus::Queued.as_str()
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Moves an unfinished job to `stage`.
pub async fn set_stage(tx: &mut Tx, id: Uuid, stage: JobStage) -> Result<bool> {
    let changed = sqlx::query!(
        "UPDATE training_jobs SET current_stage = $2 WHERE id = $1 AND status = ANY($3)",
        id,
        stage.as_str(),
        &JobStatus::names(JobStatus::ACTIVE)
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// A worker entered `stage`: the job runs (from `initializing`), and the clock of the stall
/// watchdog restarts. Returns the status the job had, when it changed.
pub async fn enter_worker_stage(
    tx: &mut Tx,
    id: Uuid,
    stage: JobStage,
    total_steps: Option<i32>,
) -> Result<Option<JobStatus>> {
    sqlx::query_scalar!(
        r#"UPDATE training_jobs j SET current_stage = $2, total_steps = COALESCE($3, j.total_steps),
                  status = $4, started_at = COALESCE(j.started_at, now()), last_progress_at = now()
             FROM training_jobs before
            WHERE j.id = $1 AND before.id = j.id AND j.status = ANY($5)
        RETURNING before.status AS "status: JobStatus""#,
        id,
        stage.as_str(),
        total_steps,
        JobStatus::Running.as_str(),
        &JobStatus::names(JobStatus::ON_BACKEND)
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Stores a step's metrics on the curve; `false` when the step was stored before.
pub async fn insert_metric_point(
    tx: &mut Tx,
    user: Uuid,
    job: Uuid,
    m: &super::contract::MetricsEvent,
) -> Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO metrics_points (user_id, job_id, step, epoch, train_loss, learning_rate, grad_norm,
                                     tokens_per_sec, gpu_util, elapsed_s)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (job_id, step) DO UPDATE
            SET epoch = EXCLUDED.epoch, train_loss = EXCLUDED.train_loss,
                learning_rate = EXCLUDED.learning_rate, grad_norm = EXCLUDED.grad_norm,
                tokens_per_sec = EXCLUDED.tokens_per_sec, gpu_util = EXCLUDED.gpu_util,
                elapsed_s = EXCLUDED.elapsed_s
          WHERE metrics_points.train_loss IS NULL",
        user,
        job,
        m.step as i32,
        m.epoch,
        m.train_loss,
        m.learning_rate,
        m.grad_norm,
        m.tokens_per_sec,
        m.gpu_util,
        m.elapsed_s
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Stores an evaluation on the curve; `false` when it was stored before.
pub async fn insert_eval_point(
    tx: &mut Tx,
    user: Uuid,
    job: Uuid,
    step: i32,
    eval_loss: f64,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO metrics_points (user_id, job_id, step, eval_loss) VALUES ($1, $2, $3, $4)
         ON CONFLICT (job_id, step) DO UPDATE SET eval_loss = EXCLUDED.eval_loss",
        user,
        job,
        step,
        eval_loss
    )
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// A step's progress on the job; returns the cost so far, or `None` when the job has ended.
pub async fn advance(tx: &mut Tx, id: Uuid, update: &MetricsUpdate) -> Result<Option<f64>> {
    let m = &update.metrics;
    sqlx::query_scalar!(
        r#"UPDATE training_jobs
              SET current_step = GREATEST(current_step, $2), total_steps = $3, current_epoch = $4,
                  progress = GREATEST(progress, $5), last_progress_at = now(),
                  -- The cost in the stored metrics is the row's, as the event's is.
                  current_metrics = jsonb_set($6::jsonb, '{current_cost}', to_jsonb(current_cost::float8)),
                  estimated_completion_at = now() + make_interval(secs => $7),
                  status = $8, started_at = COALESCE(started_at, now())
            WHERE id = $1 AND status = ANY($9)
        RETURNING current_cost::float8 AS "current_cost!""#,
        id,
        m.step as i32,
        m.total_steps as i32,
        m.epoch,
        update.progress,
        serde_json::to_value(update).unwrap_or_default(),
        update.eta_s,
        JobStatus::Running.as_str(),
        &JobStatus::names(JobStatus::ON_BACKEND)
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Keeps the worker's final result (and its measured throughput, for calibration).
pub async fn record_result(
    tx: &mut Tx,
    id: Uuid,
    result: &super::contract::WorkerResult,
) -> Result<()> {
    let tokens_per_sec = match result {
        super::contract::WorkerResult::Succeeded { metrics, .. } => Some(metrics.tokens_per_sec),
        super::contract::WorkerResult::Failed { .. } => None,
    };
    sqlx::query!(
        "UPDATE training_jobs SET worker_result = $2, tokens_per_sec = COALESCE($3, tokens_per_sec)
          WHERE id = $1",
        id,
        serde_json::to_value(result).unwrap_or_default(),
        tokens_per_sec
    )
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Billed time from the backend and the cost so far (which never goes down).
pub async fn record_billing(
    tx: &mut Tx,
    id: Uuid,
    execution_ms: Option<i64>,
    delay_ms: Option<i64>,
    cost: Option<f64>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE training_jobs SET execution_ms = COALESCE($2, execution_ms), delay_ms = COALESCE($3, delay_ms),
                current_cost = GREATEST(current_cost, COALESCE($4::float8::numeric, current_cost))
          WHERE id = $1 AND status = ANY($5)",
        id,
        execution_ms,
        delay_ms,
        cost,
        &JobStatus::names(JobStatus::ACTIVE)
    )
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// How an active job ends (see [`super::finish`], the only caller).
pub struct EndRow<'a> {
    pub status: JobStatus,
    pub error_code: Option<&'a str>,
    pub message: Option<&'a str>,
    /// The measured cost, when the backend reported one; otherwise the cost so far stands.
    pub cost: Option<f64>,
    /// Only while not yet sent to a backend (a user's cancel of a queued job).
    pub only_unsubmitted: bool,
    /// The user asked for it (kept as `cancel_requested_at`).
    pub requested: bool,
}

/// Ends an active job; the dataset's name when it did (for the notification), `None` when the
/// job had already ended or moved on.
/// A job [`end`] ended.
pub struct Ended {
    pub dataset_name: String,
    /// Seconds since it started on its backend (`None`: it never started).
    pub ran_s: Option<f64>,
}

pub async fn end(tx: &mut Tx, id: Uuid, end: EndRow<'_>) -> Result<Option<Ended>> {
    let completed = end.status == JobStatus::Completed;
    let from: &[JobStatus] = if completed {
        JobStatus::ON_BACKEND
    } else {
        JobStatus::ACTIVE
    };
    sqlx::query!(
        "UPDATE training_jobs j
            SET status = $2, current_stage = $3, error_code = $4, error_message = $5, completed_at = now(),
                final_cost = COALESCE($6::float8::numeric, j.current_cost),
                current_cost = COALESCE($6::float8::numeric, j.current_cost),
                progress = CASE WHEN $7 THEN 100 ELSE j.progress END,
                current_step = CASE WHEN $7 THEN COALESCE(j.total_steps, j.current_step) ELSE j.current_step END,
                cancel_requested_at = CASE WHEN $8 THEN COALESCE(j.cancel_requested_at, now()) ELSE j.cancel_requested_at END
           FROM datasets d
          WHERE j.id = $1 AND d.id = j.dataset_id AND j.status = ANY($9)
            AND (NOT $10 OR j.external_job_id IS NULL)
      RETURNING d.name AS dataset_name,
                EXTRACT(EPOCH FROM now() - j.started_at)::float8 AS ran_s",
        id,
        end.status.as_str(),
        JobStage::ending(end.status)
            .unwrap_or(JobStage::Failed)
            .as_str(),
        end.error_code,
        end.message,
        end.cost,
        completed,
        end.requested,
        &JobStatus::names(from),
        end.only_unsubmitted
    )
    .fetch_optional(&mut **tx)
    .await
    .map(|row| {
        row.map(|r| Ended {
            dataset_name: r.dataset_name,
            ran_s: r.ran_s,
        })
    })
}

/// Asks the processor to stop a job on its backend. `false` when it has already ended.
pub async fn request_cancel(tx: &mut Tx, user: Uuid, id: Uuid) -> Result<bool> {
    let changed = sqlx::query!(
        "UPDATE training_jobs SET cancel_requested_at = COALESCE(cancel_requested_at, now()), current_stage = $3
          WHERE id = $1 AND user_id = $2 AND status = ANY($4)",
        id,
        user,
        JobStage::Cancelling.as_str(),
        &JobStatus::names(JobStatus::ACTIVE)
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Who starts a job's next attempt.
#[derive(Debug, Clone, Copy)]
pub enum Restart {
    /// The owner retries a failed or cancelled job.
    ByOwner,
    /// The processor resumes a run its backend lost, within the automatic budget.
    Lost { attempt: i32, max_auto_resumes: i32 },
}

/// A new attempt: its number and the checkpoint step it continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restarted {
    pub attempt: i32,
    pub resumed_from_step: Option<i32>,
}

/// Starts the job's next attempt, from its latest checkpoint when it has one; `None` when the
/// job cannot restart (its status, or the automatic budget). The curve is cut when the worker
/// says where it really continues from (see [`truncate_curve`]): it may find a newer
/// checkpoint of the same attempt than the one recorded, or none it can use.
pub async fn restart(tx: &mut Tx, user: Uuid, id: Uuid, how: Restart) -> Result<Option<Restarted>> {
    let (from, lost_attempt, max_auto) = match how {
        Restart::ByOwner => (JobStatus::RETRYABLE, None, None),
        Restart::Lost {
            attempt,
            max_auto_resumes,
        } => (JobStatus::ON_BACKEND, Some(attempt), Some(max_auto_resumes)),
    };
    sqlx::query_as!(
        Restarted,
        r#"UPDATE training_jobs
            SET status = $3, current_stage = $4, retry_count = retry_count + 1, external_job_id = NULL,
                resumed_from_step = checkpoint_step, current_step = COALESCE(checkpoint_step, 0),
                progress = CASE WHEN checkpoint_step IS NOT NULL AND total_steps > 0
                                THEN LEAST(99, 100.0 * checkpoint_step / total_steps) ELSE 0 END,
                current_epoch = NULL, current_metrics = NULL, current_cost = 0,
                final_cost = NULL, execution_ms = NULL, delay_ms = NULL, error_code = NULL, error_message = NULL,
                cancel_requested_at = NULL, last_progress_at = NULL, worker_result = NULL, started_at = NULL,
                completed_at = NULL, queued_at = now(),
                auto_resumes = auto_resumes + CASE WHEN $6::int IS NULL THEN 0 ELSE 1 END
          WHERE id = $1 AND user_id = $2 AND status = ANY($5)
            AND ($6::int IS NULL OR (retry_count = $6 AND auto_resumes < $7))
      RETURNING retry_count AS attempt, resumed_from_step"#,
        id,
        user,
        JobStatus::Queued.as_str(),
        JobStage::Queued.as_str(),
        &JobStatus::names(from),
        lost_attempt,
        max_auto
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Drops the curve's points after `step` (an attempt redraws them).
pub async fn truncate_curve(tx: &mut Tx, id: Uuid, step: i32) -> Result<()> {
    sqlx::query!(
        "DELETE FROM metrics_points WHERE job_id = $1 AND step > $2",
        id,
        step
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records the worker's latest checkpoint (its file is in `attempt`'s folder).
pub async fn record_checkpoint(
    tx: &mut Tx,
    id: Uuid,
    attempt: i32,
    step: i32,
    size: i64,
    sha256: &str,
) -> Result<bool> {
    let changed = sqlx::query!(
        "UPDATE training_jobs
            SET checkpoint_attempt = $2, checkpoint_step = $3, checkpoint_size = $4, checkpoint_sha256 = $5
          WHERE id = $1 AND retry_count = $2 AND status = ANY($6)",
        id,
        attempt,
        step,
        size,
        sha256,
        &JobStatus::names(JobStatus::ACTIVE)
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Where the worker says the attempt continued from (it starts over from a checkpoint it
/// cannot use).
pub async fn set_resumed_from(tx: &mut Tx, id: Uuid, step: Option<i32>) -> Result<()> {
    sqlx::query!(
        "UPDATE training_jobs SET resumed_from_step = $2 WHERE id = $1",
        id,
        step
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The summary a `status` event carries.
#[derive(Debug, Clone)]
pub struct Summary {
    pub progress: f64,
    pub current_step: i32,
    pub total_steps: Option<i32>,
    pub current_cost: f64,
    pub final_cost: Option<f64>,
    pub error_code: Option<String>,
    pub resumed_from_step: Option<i32>,
    /// The job's model, once finalisation made it.
    pub artifact_id: Option<Uuid>,
}

pub async fn summary(tx: &mut Tx, id: Uuid) -> Result<Option<Summary>> {
    sqlx::query_as!(
        Summary,
        r#"SELECT progress, current_step, total_steps, current_cost::float8 AS "current_cost!",
                  final_cost::float8 AS final_cost, error_code, resumed_from_step,
                  (SELECT a.id FROM model_artifacts a WHERE a.job_id = training_jobs.id) AS artifact_id
             FROM training_jobs WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut **tx)
    .await
}

/// An unfinished job without a live task (see the processor's reconciler).
#[derive(Debug)]
pub struct Orphan {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: JobStatus,
    pub external_job_id: Option<String>,
    pub retry_count: i32,
    pub current_stage: JobStage,
}

/// Unfinished jobs whose task (keyed `job:<id>`) is gone, oldest first, locked.
pub async fn orphans(tx: &mut Tx, limit: i64) -> Result<Vec<Orphan>> {
    sqlx::query_as!(
        Orphan,
        r#"SELECT j.id, j.user_id, j.status AS "status: JobStatus", j.external_job_id, j.retry_count,
                  j.current_stage AS "current_stage: JobStage"
             FROM training_jobs j
            WHERE j.status = ANY($1)
              AND NOT EXISTS (SELECT 1 FROM work_queue q
                               WHERE q.dedupe_key = 'job:' || j.id::text
                                 AND q.status IN ('pending', 'running'))
            ORDER BY j.created_at
            LIMIT $2
              FOR UPDATE OF j SKIP LOCKED"#,
        &JobStatus::names(JobStatus::ACTIVE),
        limit
    )
    .fetch_all(&mut **tx)
    .await
}

/// Median tokens/s per GPU of the last `recent` completed jobs, by GPU type, base model and
/// quantization (the catalog's calibration): `(gpu_type, base_model, quantization, tokens/s,
/// jobs)`. Only throughput figures cross tenants here, never a tenant's data.
pub async fn throughput_medians(
    tx: &mut Tx,
    recent: i64,
) -> Result<Vec<(String, String, String, f64, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT gpu_type AS "gpu_type!", base_model AS "base_model!", quantization,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY per_gpu) AS "tokens_per_sec!",
                  count(*) AS "jobs!"
             FROM (SELECT gpu_type, base_model, hyperparameters->>'quantization' AS quantization,
                          tokens_per_sec / GREATEST(gpu_count, 1) AS per_gpu
                     FROM training_jobs
                    WHERE status = $1 AND tokens_per_sec > 0
                    ORDER BY completed_at DESC
                    LIMIT $2) recent
            GROUP BY gpu_type, base_model, quantization"#,
        JobStatus::Completed.as_str(),
        recent
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some((
                r.gpu_type,
                r.base_model,
                r.quantization?,
                r.tokens_per_sec,
                r.jobs,
            ))
        })
        .collect())
}
