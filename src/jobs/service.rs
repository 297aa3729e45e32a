//! Creating and reading training jobs.

use uuid::Uuid;

use super::{JobView, MetricPoint, NewJob, processor};
use crate::db::Db;
use crate::notifications::{self, NewNotification};
use crate::training::estimate::{DatasetSize, EstimateError, estimate};
use crate::training::{Catalog, check_config};
use crate::validation::FieldErrors;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid job: {0}")]
    Invalid(FieldErrors),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("database error on jobs: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot record the job event: {0}")]
    Event(String),
}

const JOB_COLUMNS: &str = "j.id, j.dataset_id, d.name AS dataset_name, j.base_model, j.preset, j.hyperparameters, \
     j.gpu_type, j.gpu_count, j.backend, j.status, j.current_stage, j.progress, j.current_step, j.total_steps, \
     j.current_cost::float8 AS current_cost, j.estimated_total_cost::float8 AS estimated_total_cost, \
     j.budget_cap::float8 AS budget_cap, j.final_cost::float8 AS final_cost, j.estimate, j.error_message, \
     a.id AS artifact_id, j.created_at, j.error_code, j.current_epoch, j.current_metrics, j.started_at, \
     j.completed_at, j.estimated_completion_at, j.retry_count, j.execution_ms, j.cancel_requested_at, \
     (SELECT max(e.id) FROM job_events e WHERE e.job_id = j.id) AS last_event_id";

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    dataset_id: Uuid,
    dataset_name: Option<String>,
    base_model: String,
    preset: String,
    hyperparameters: serde_json::Value,
    gpu_type: String,
    gpu_count: i32,
    backend: String,
    status: String,
    current_stage: String,
    progress: f64,
    current_step: i32,
    total_steps: Option<i32>,
    current_cost: f64,
    estimated_total_cost: Option<f64>,
    budget_cap: Option<f64>,
    final_cost: Option<f64>,
    estimate: Option<serde_json::Value>,
    error_message: Option<String>,
    artifact_id: Option<Uuid>,
    created_at: chrono::DateTime<chrono::Utc>,
    error_code: Option<String>,
    current_epoch: Option<f64>,
    current_metrics: Option<serde_json::Value>,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    completed_at: Option<chrono::DateTime<chrono::Utc>>,
    estimated_completion_at: Option<chrono::DateTime<chrono::Utc>>,
    retry_count: i32,
    execution_ms: Option<i64>,
    cancel_requested_at: Option<chrono::DateTime<chrono::Utc>>,
    last_event_id: Option<i64>,
}

impl From<JobRow> for JobView {
    fn from(r: JobRow) -> Self {
        Self {
            id: r.id,
            dataset_id: r.dataset_id,
            dataset_name: r.dataset_name,
            base_model: r.base_model,
            preset: r.preset,
            hyperparameters: r.hyperparameters,
            gpu_type: r.gpu_type,
            gpu_count: r.gpu_count,
            backend: r.backend,
            status: r.status,
            current_stage: r.current_stage,
            progress: r.progress,
            current_step: r.current_step,
            total_steps: r.total_steps,
            current_cost: r.current_cost,
            estimated_total_cost: r.estimated_total_cost,
            budget_cap: r.budget_cap,
            final_cost: r.final_cost,
            estimate: r.estimate,
            error_message: r.error_message,
            artifact_id: r.artifact_id,
            created_at: r.created_at,
            error_code: r.error_code,
            current_epoch: r.current_epoch,
            current_metrics: r.current_metrics,
            started_at: r.started_at,
            completed_at: r.completed_at,
            estimated_completion_at: r.estimated_completion_at,
            retry_count: r.retry_count,
            execution_ms: r.execution_ms,
            cancel_requested: r.cancel_requested_at.is_some(),
            last_event_id: r.last_event_id.unwrap_or(0),
        }
    }
}

/// Re-validates everything, snapshots the authoritative estimate and stores the job.
pub async fn create(
    db: &Db,
    catalog: &Catalog,
    user: Uuid,
    new: &NewJob,
) -> Result<JobView, JobError> {
    check_config(&new.config, catalog).map_err(JobError::Invalid)?;
    if new
        .budget_cap
        .is_some_and(|cap| !(cap.is_finite() && cap > 0.0))
    {
        return Err(JobError::Invalid(FieldErrors::single(
            "budget_cap",
            "Use an amount above $0.",
        )));
    }
    let mut tx = db.tenant(user).await?;
    let dataset = crate::datasets::find(&mut tx, user, new.dataset_id, false)
        .await?
        .ok_or(JobError::NotFound)?;
    if !dataset.training_ready {
        return Err(JobError::Conflict(format!(
            "the dataset is not ready to train ({})",
            dataset
                .status_message
                .as_deref()
                .unwrap_or(dataset.status.as_str())
        )));
    }
    let model = catalog
        .model(&new.config.base_model)
        .ok_or(JobError::NotFound)?;
    let gpu = catalog
        .gpu(&new.config.gpu_type)
        .ok_or(JobError::NotFound)?;
    let size = DatasetSize {
        examples: dataset.total_training_pairs.unwrap_or(0).max(0) as u64,
        total_tokens: dataset.total_tokens.unwrap_or(0).max(0) as u64,
    };
    let estimate = estimate(
        size,
        model,
        gpu,
        new.config.gpu_count,
        &new.config.hyperparameters,
    )
    .map_err(|e| match e {
        EstimateError::Unsupported => JobError::Invalid(FieldErrors::single(
            "gpu_type",
            "This GPU cannot train this model with this quantization.",
        )),
        EstimateError::NoExamples => {
            JobError::Conflict("the dataset has no usable examples".into())
        }
    })?;
    if let Some(cap) = new.budget_cap
        && cap < estimate.cost.low
        && !new.confirm_low_budget
    {
        return Err(JobError::Invalid(FieldErrors::single(
            "budget_cap",
            format!(
                "The cap is below the lowest estimate ({}): the job would likely stop early. Raise it, or confirm.",
                crate::format::money(estimate.cost.low)
            ),
        )));
    }
    let point =
        estimate.breakdown.compute + estimate.breakdown.startup + estimate.breakdown.storage;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO training_jobs (user_id, dataset_id, base_model, preset, hyperparameters, gpu_type, gpu_count,
                                    backend, total_steps, estimate, estimated_total_cost, budget_cap,
                                    estimated_completion_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::numeric, $12::numeric,
                 now() + make_interval(secs => $13))
         RETURNING id",
    )
    .bind(user)
    .bind(new.dataset_id)
    .bind(&new.config.base_model)
    .bind(serde_json::to_value(new.config.preset).ok().and_then(|v| v.as_str().map(str::to_owned)))
    .bind(serde_json::to_value(new.config.hyperparameters).unwrap_or_default())
    .bind(&new.config.gpu_type)
    .bind(new.config.gpu_count as i32)
    .bind(match gpu.backend {
        crate::training::Backend::Runpod => "runpod",
        crate::training::Backend::Local => "local",
    })
    .bind(i32::try_from(estimate.total_steps).unwrap_or(i32::MAX))
    .bind(serde_json::to_value(&estimate).unwrap_or_default())
    .bind(point)
    .bind(new.budget_cap)
    .bind(estimate.duration_seconds.high)
    .fetch_one(&mut *tx)
    .await?;
    notifications::create(
        &mut tx,
        user,
        NewNotification {
            kind: "job_queued",
            title: &format!("Training queued on \"{}\"", dataset.name),
            message: &format!(
                "{} on {} × {}; estimated {}–{}.",
                model.name,
                new.config.gpu_count,
                gpu.name,
                crate::format::money(estimate.cost.low),
                crate::format::money(estimate.cost.high)
            ),
            priority: "normal",
            action_url: Some(&format!("/jobs/{id}")),
            metadata: serde_json::json!({ "job_id": id, "dataset_id": new.dataset_id }),
        },
    )
    .await?;
    // Queued in the same transaction: the job exists exactly when its submission does.
    crate::queue::enqueue(
        &mut tx,
        processor::SUBMIT_TASK,
        serde_json::json!({ "job_id": id, "attempt": 0 }),
        Some(user),
        &processor::task_key(id),
    )
    .await?;
    processor::status_event(&mut tx, user, id, 0, "queued", "queued", None)
        .await
        .map_err(JobError::Event)?;
    let job = find(&mut tx, user, id).await?.ok_or(JobError::NotFound)?;
    tx.commit().await?;
    Ok(job)
}

/// Asks for a job to stop. A job not yet sent ends here; one on the GPU backend is cancelled
/// there by the processor (it polls at once), which really stops the worker.
pub async fn cancel(db: &Db, user: Uuid, id: Uuid) -> Result<JobView, JobError> {
    let mut tx = db.tenant(user).await?;
    let (status, attempt): (String, i32) = sqlx::query_as(
        "SELECT status, retry_count FROM training_jobs WHERE id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(JobError::NotFound)?;
    match status.as_str() {
        "queued" => {
            let changed = sqlx::query(
                "UPDATE training_jobs SET status = 'cancelled', current_stage = 'cancelled', error_code = 'cancelled',
                        error_message = 'Cancelled at your request before it started.', completed_at = now(),
                        cancel_requested_at = now(), final_cost = current_cost
                  WHERE id = $1 AND user_id = $2 AND status = 'queued' AND external_job_id IS NULL",
            )
            .bind(id)
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed != 1 {
                // The submission is under way: let the processor cancel it on the backend.
                request_cancel(&mut tx, user, id).await?;
            } else {
                processor::status_event(
                    &mut tx,
                    user,
                    id,
                    attempt,
                    "cancelled",
                    "cancelled",
                    Some("Cancelled at your request before it started."),
                )
                .await
                .map_err(JobError::Event)?;
            }
        }
        "initializing" | "running" => request_cancel(&mut tx, user, id).await?,
        other => {
            return Err(JobError::Conflict(format!(
                "the job has already ended ({other}); nothing to cancel"
            )));
        }
    }
    let job = find(&mut tx, user, id).await?.ok_or(JobError::NotFound)?;
    tx.commit().await?;
    Ok(job)
}

async fn request_cancel(tx: &mut crate::db::Tx, user: Uuid, id: Uuid) -> Result<(), JobError> {
    let changed = sqlx::query(
        "UPDATE training_jobs SET cancel_requested_at = COALESCE(cancel_requested_at, now()), current_stage = 'cancelling'
          WHERE id = $1 AND user_id = $2 AND status IN ('queued', 'initializing', 'running')",
    )
    .bind(id)
    .bind(user)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed != 1 {
        return Err(JobError::Conflict(
            "the job has just ended; nothing to cancel".into(),
        ));
    }
    // Poll now rather than at the next interval.
    crate::queue::enqueue(
        tx,
        processor::POLL_TASK,
        serde_json::json!({ "job_id": id }),
        Some(user),
        &processor::task_key(id),
    )
    .await?;
    Ok(())
}

/// Runs a failed or cancelled job again from the start, as a new attempt.
pub async fn retry(db: &Db, user: Uuid, id: Uuid) -> Result<JobView, JobError> {
    let mut tx = db.tenant(user).await?;
    let attempt: Option<i32> = sqlx::query_scalar(
        "UPDATE training_jobs
            SET status = 'queued', current_stage = 'queued', retry_count = retry_count + 1, external_job_id = NULL,
                progress = 0, current_step = 0, current_epoch = NULL, current_metrics = NULL, current_cost = 0,
                final_cost = NULL, execution_ms = NULL, delay_ms = NULL, error_code = NULL, error_message = NULL,
                cancel_requested_at = NULL, last_progress_at = NULL, worker_result = NULL, started_at = NULL,
                completed_at = NULL, queued_at = now()
          WHERE id = $1 AND user_id = $2 AND status IN ('failed', 'cancelled')
      RETURNING retry_count",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(attempt) = attempt else {
        return match find(&mut tx, user, id).await? {
            None => Err(JobError::NotFound),
            Some(job) => Err(JobError::Conflict(format!(
                "only failed or cancelled jobs can be retried; this one is {}",
                job.status
            ))),
        };
    };
    // A new attempt draws its own curve.
    sqlx::query("DELETE FROM metrics_points WHERE job_id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    crate::queue::enqueue(
        &mut tx,
        processor::SUBMIT_TASK,
        serde_json::json!({ "job_id": id, "attempt": attempt }),
        Some(user),
        &processor::task_key(id),
    )
    .await?;
    processor::status_event(
        &mut tx,
        user,
        id,
        attempt,
        "queued",
        "queued",
        Some("Retrying."),
    )
    .await
    .map_err(JobError::Event)?;
    let job = find(&mut tx, user, id).await?.ok_or(JobError::NotFound)?;
    tx.commit().await?;
    Ok(job)
}

/// Every metric point of a job, in step order (the charts' history).
pub async fn metrics(db: &Db, user: Uuid, id: Uuid) -> Result<Vec<MetricPoint>, JobError> {
    let mut tx = db.tenant(user).await?;
    if find(&mut tx, user, id).await?.is_none() {
        return Err(JobError::NotFound);
    }
    let points = sqlx::query_as::<_, MetricPointRow>(
        "SELECT step, epoch, training_loss, validation_loss, learning_rate, grad_norm, tokens_per_sec, elapsed_s
           FROM metrics_points WHERE job_id = $1 AND user_id = $2 ORDER BY step",
    )
    .bind(id)
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(points.into_iter().map(Into::into).collect())
}

#[derive(sqlx::FromRow)]
struct MetricPointRow {
    step: i32,
    epoch: Option<f64>,
    training_loss: Option<f64>,
    validation_loss: Option<f64>,
    learning_rate: Option<f64>,
    grad_norm: Option<f64>,
    tokens_per_sec: Option<f64>,
    elapsed_s: Option<f64>,
}

impl From<MetricPointRow> for MetricPoint {
    fn from(r: MetricPointRow) -> Self {
        Self {
            step: r.step,
            epoch: r.epoch,
            training_loss: r.training_loss,
            validation_loss: r.validation_loss,
            learning_rate: r.learning_rate,
            grad_norm: r.grad_norm,
            tokens_per_sec: r.tokens_per_sec,
            elapsed_s: r.elapsed_s,
        }
    }
}

async fn find(
    tx: &mut crate::db::Tx,
    user: Uuid,
    id: Uuid,
) -> Result<Option<JobView>, sqlx::Error> {
    let row = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM training_jobs j
           JOIN datasets d ON d.id = j.dataset_id
           LEFT JOIN model_artifacts a ON a.job_id = j.id
          WHERE j.id = $1 AND j.user_id = $2"
    )))
    .bind(id)
    .bind(user)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(Into::into))
}

pub async fn get(db: &Db, user: Uuid, id: Uuid) -> Result<JobView, JobError> {
    let mut tx = db.tenant(user).await?;
    let job = find(&mut tx, user, id).await?.ok_or(JobError::NotFound)?;
    tx.commit().await?;
    Ok(job)
}

/// The caller's jobs, newest first, and the total matching `status`.
pub async fn list(
    db: &Db,
    user: Uuid,
    status: Option<&str>,
    page: u32,
    limit: u32,
) -> Result<(Vec<JobView>, i64), JobError> {
    let limit = i64::from(limit.clamp(1, 100));
    let offset = i64::from(page.max(1) - 1) * limit;
    let mut tx = db.tenant(user).await?;
    let rows = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM training_jobs j
           JOIN datasets d ON d.id = j.dataset_id
           LEFT JOIN model_artifacts a ON a.job_id = j.id
          WHERE j.user_id = $1 AND ($2::text IS NULL OR j.status = $2)
          ORDER BY j.created_at DESC, j.id LIMIT $3 OFFSET $4"
    )))
    .bind(user)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *tx)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM training_jobs WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)",
    )
    .bind(user)
    .bind(status)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((rows.into_iter().map(Into::into).collect(), total))
}
