//! The durable job processor. It runs as tasks on the work queue (leased with SKIP LOCKED, so
//! it is correct with any number of replicas, and a crash loses nothing):
//!
//! - `job_submit` signs the dataset and upload URLs and calls `/run` with an executionTimeout
//!   from the estimate;
//! - `job_poll` reads `/stream` (chunks are persisted before anything else), asks `/status`
//!   every few polls or when the stream says the job ended, maps every RunPod status, keeps the
//!   cost so far, enforces the budget cap and the stall watchdog, and reschedules itself.
//!
//! Every state change is an `UPDATE … WHERE status …` whose changed rows are checked, and every
//! event has a per-job dedupe key, so a replayed chunk or a task that runs twice changes nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::contract::{
    ADAPTER_FILES, CONTRACT_VERSION, EvalEvent, MetricsEvent, StageEvent, WorkerEvent, WorkerInput,
    WorkerResult,
};
use super::events;
use crate::db::{Db, Tx};
use crate::notifications::{self, NewNotification};
use crate::queue;
use crate::runpod::{
    FailureDetail, Policy, RunRequest, RunpodClient, RunpodError, RunpodStatus, StatusResponse,
};
use crate::storage::{Bucket, Storage};
use crate::training::{Catalog, Hyperparameters};

pub const SUBMIT_TASK: &str = "job_submit";
pub const POLL_TASK: &str = "job_poll";

/// Largest adapter file a worker may upload (a rank-256 adapter of a 70B model is ~2 GB).
const MAX_ADAPTER_FILE: u64 = 8 << 30;

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Time between two polls of a running job.
    pub poll_interval: Duration,
    /// `/status` (for execution time and cost) on every n-th poll; `/stream` on every poll.
    pub status_every: u32,
    /// A running job with no new metric for this long is failed as stalled.
    pub stall_after: Duration,
    /// Consecutive failed polls (backend down, malformed answers) before a job is failed.
    pub max_poll_errors: u32,
    pub report_every_steps: u32,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            status_every: 3,
            stall_after: Duration::from_secs(15 * 60),
            max_poll_errors: 30,
            report_every_steps: 1,
        }
    }
}

/// The GPU backends this server is configured for; a job goes to the one its GPU type names.
#[derive(Clone, Default)]
pub struct Backends {
    /// RunPod Serverless (or a standalone executor standing in for it).
    pub runpod: Option<RunpodClient>,
    /// The local executor embedded in this server.
    pub local: Option<RunpodClient>,
}

#[derive(Clone)]
pub struct Processor {
    db: Db,
    storage: Storage,
    catalog: Arc<Catalog>,
    backends: Backends,
    config: ProcessorConfig,
}

#[derive(Debug, Serialize, Deserialize)]
struct TaskPayload {
    job_id: Uuid,
    /// The attempt (`retry_count`) the task belongs to; a task of an older attempt stops.
    #[serde(default)]
    attempt: Option<i32>,
    #[serde(default)]
    polls: u32,
    #[serde(default)]
    errors: u32,
}

#[derive(Debug, sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    external_job_id: Option<String>,
    retry_count: i32,
    cancel_requested_at: Option<DateTime<Utc>>,
    budget_cap: Option<f64>,
    current_cost: f64,
    gpu_type: String,
    gpu_count: i32,
    backend: String,
    base_model: String,
    hyperparameters: Value,
    estimate: Option<Value>,
    last_progress_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    normalized_key: Option<String>,
    dataset_name: String,
}

const JOB_QUERY: &str = "SELECT j.id, j.user_id, j.status, j.external_job_id, j.retry_count,
        j.cancel_requested_at, j.budget_cap::float8 AS budget_cap, j.current_cost::float8 AS current_cost,
        j.gpu_type, j.gpu_count, j.backend, j.base_model, j.hyperparameters, j.estimate,
        j.last_progress_at, j.started_at, d.normalized_key, d.name AS dataset_name
   FROM training_jobs j JOIN datasets d ON d.id = j.dataset_id WHERE j.id = $1";

impl JobRow {
    fn terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }

    /// The prefix of this attempt's event keys (a retry starts a fresh sequence).
    fn attempt(&self) -> String {
        format!("a{}", self.retry_count)
    }
}

/// How a job ends.
struct Ending<'a> {
    status: &'a str,
    stage: &'a str,
    error_code: Option<&'a str>,
    message: Option<String>,
}

impl<'a> Ending<'a> {
    fn failed(code: &'a str, message: impl Into<String>) -> Self {
        Self {
            status: "failed",
            stage: "failed",
            error_code: Some(code),
            message: Some(message.into()),
        }
    }

    fn cancelled(code: &'a str, message: impl Into<String>) -> Self {
        Self {
            status: "cancelled",
            stage: "cancelled",
            error_code: Some(code),
            message: Some(message.into()),
        }
    }
}

type TaskResult = Result<(), String>;

fn db_error(e: sqlx::Error) -> String {
    format!("database error: {e}")
}

impl Processor {
    pub fn new(
        db: Db,
        storage: Storage,
        catalog: Arc<Catalog>,
        backends: Backends,
        config: ProcessorConfig,
    ) -> Self {
        Self {
            db,
            storage,
            catalog,
            backends,
            config,
        }
    }

    /// The client of the job's backend, or the ending to record when it is not configured.
    fn client_for(&self, job: &JobRow) -> Result<&RunpodClient, Ending<'static>> {
        let client = match job.backend.as_str() {
            "runpod" => self.backends.runpod.as_ref(),
            "local" => self.backends.local.as_ref(),
            _ => None,
        };
        client.ok_or_else(|| Ending::failed("backend_unavailable", format!(
                "This server is not configured for the {} backend this job needs. Configure it, or retry on another GPU type.",
                job.backend
            )))
    }

    async fn load(&self, id: Uuid) -> Result<Option<JobRow>, String> {
        let mut tx = self.db.system().await.map_err(db_error)?;
        let row = sqlx::query_as::<_, JobRow>(JOB_QUERY)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(row)
    }

    /// A transaction holding the job's row lock, if the job is still on `job`'s attempt; `None`
    /// when a retry started a newer attempt (this task's view is stale: it must change nothing).
    /// The lock also orders the job's writes, so its event ids commit in order.
    async fn attempt_tx(&self, job: &JobRow) -> Result<Option<Tx>, String> {
        let mut tx = self.db.system().await.map_err(db_error)?;
        let current: Option<i32> =
            sqlx::query_scalar("SELECT retry_count FROM training_jobs WHERE id = $1 FOR UPDATE")
                .bind(job.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        if current == Some(job.retry_count) {
            Ok(Some(tx))
        } else {
            tx.rollback().await.map_err(db_error)?;
            Ok(None)
        }
    }

    fn rate_per_second(&self, job: &JobRow) -> f64 {
        self.catalog
            .gpu(&job.gpu_type)
            .map_or(0.0, |g| g.price_per_second)
            * f64::from(job.gpu_count.max(1))
    }

    /// `job_submit`: sign the URLs, call `/run`, remember the backend's id, start polling.
    pub async fn submit(&self, payload: &Value) -> TaskResult {
        let task: TaskPayload =
            serde_json::from_value(payload.clone()).map_err(|e| format!("bad payload: {e}"))?;
        let Some(job) = self.load(task.job_id).await? else {
            return Ok(());
        };
        if task.attempt.is_some_and(|a| a != job.retry_count) {
            return Ok(()); // a task of an attempt that was retried since
        }
        if job.status != "queued" || job.external_job_id.is_some() {
            // Cancelled before it was sent, or already sent by an earlier attempt.
            return Ok(());
        }
        let client = match self.client_for(&job) {
            Ok(client) => client,
            Err(ending) => return self.end(&job, ending).await,
        };
        let input = match self.worker_input(&job).await {
            Ok(input) => input,
            Err(message) => {
                return self
                    .end(&job, Ending::failed("submit_failed", message))
                    .await;
            }
        };
        let timeout = execution_timeout(job.estimate.as_ref());
        {
            let Some(mut tx) = self.attempt_tx(&job).await? else {
                return Ok(());
            };
            self.set_stage(
                &mut tx,
                &job,
                "submitting",
                "Sending the job to the GPU backend.",
            )
            .await?;
            sqlx::query("UPDATE training_jobs SET execution_timeout_ms = $2 WHERE id = $1")
                .bind(job.id)
                .bind(timeout.as_millis() as i64)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
        }
        let request = RunRequest {
            input: serde_json::to_value(&input).map_err(|e| e.to_string())?,
            policy: Some(Policy {
                execution_timeout: Some(timeout.as_millis() as u64),
                ttl: Some((timeout + Duration::from_secs(6 * 3600)).as_millis() as u64),
            }),
            webhook: None,
        };
        let accepted = match client.run(&request).await {
            Ok(r) => r,
            // The backend may have started the run: submitting again could pay for two.
            Err(e @ RunpodError::Uncertain(_)) => {
                return self
                    .end(
                        &job,
                        Ending::failed("submit_uncertain", format!(
                                "{e}. It may have started the run: check the GPU backend's console, then retry the job."
                            )),
                    )
                    .await;
            }
            Err(e) if e.is_transient() => return Err(e.to_string()),
            Err(e) => {
                return self
                    .end(&job, Ending::failed("submit_rejected", e.to_string()))
                    .await;
            }
        };
        match self.record_submission(&job, &accepted.id).await {
            Ok(true) => {
                tracing::info!(job = %job.id, external = %accepted.id, "job submitted");
                Ok(())
            }
            Ok(false) => {
                // Cancelled or retried while we were submitting: stop what we just started.
                let _ = client.cancel(&accepted.id).await;
                Ok(())
            }
            Err(e) => {
                // Nothing remembers this run: stop it rather than pay for it untracked.
                let _ = client.cancel(&accepted.id).await;
                Err(e)
            }
        }
    }

    /// Stores the backend's id and starts polling; `false` when the job moved on meanwhile.
    async fn record_submission(&self, job: &JobRow, external: &str) -> Result<bool, String> {
        let Some(mut tx) = self.attempt_tx(job).await? else {
            return Ok(false);
        };
        let changed = sqlx::query(
            "UPDATE training_jobs SET external_job_id = $2, status = 'initializing', current_stage = 'queued_on_gpu'
              WHERE id = $1 AND status = 'queued' AND external_job_id IS NULL",
        )
        .bind(job.id)
        .bind(external)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if changed != 1 {
            tx.rollback().await.map_err(db_error)?;
            return Ok(false);
        }
        self.status_event(&mut tx, job, "initializing", "queued_on_gpu", None)
            .await?;
        self.schedule_poll(&mut tx, job, 0, 0, self.config.poll_interval)
            .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn worker_input(&self, job: &JobRow) -> Result<WorkerInput, String> {
        let hyperparameters: Hyperparameters = serde_json::from_value(job.hyperparameters.clone())
            .map_err(|e| format!("the stored configuration is unreadable: {e}"))?;
        let dataset_key = job
            .normalized_key
            .as_deref()
            .ok_or("the dataset has no normalised training file")?;
        let model = self.catalog.model(&job.base_model).ok_or_else(|| {
            format!(
                "the base model {} is no longer in the catalog",
                job.base_model
            )
        })?;
        // Links live as long as the job may: its timeout plus time in the GPU queue.
        let lifetime = chrono::Duration::from_std(execution_timeout(job.estimate.as_ref()))
            .unwrap_or_default()
            + chrono::Duration::hours(6);
        let dataset = self
            .storage
            .presign_get(Bucket::Datasets, dataset_key, lifetime)
            .await
            .map_err(|e| format!("cannot sign the dataset link: {e}"))?;
        let mut upload_urls = std::collections::BTreeMap::new();
        for name in ADAPTER_FILES {
            let key = output_key(job.user_id, job.id, job.retry_count, name);
            let signed = self
                .storage
                .presign_put_upto(Bucket::Models, &key, MAX_ADAPTER_FILE, lifetime)
                .await
                .map_err(|e| format!("cannot sign an upload link: {e}"))?;
            upload_urls.insert(name.to_owned(), signed.url);
        }
        Ok(WorkerInput {
            contract_version: CONTRACT_VERSION,
            job_id: job.id,
            base_model: model.source.clone(),
            dataset_url: dataset.url,
            hyperparameters,
            upload_urls,
            report_every_steps: self.config.report_every_steps,
            max_steps: None,
        })
    }

    /// The queue gave up on a job's task: the job fails with the reason.
    pub async fn give_up(&self, payload: &Value, error: &str) -> TaskResult {
        let task: TaskPayload =
            serde_json::from_value(payload.clone()).map_err(|e| format!("bad payload: {e}"))?;
        let Some(job) = self.load(task.job_id).await? else {
            return Ok(());
        };
        self.end(
            &job,
            Ending::failed(
                "processing_failed",
                format!("The platform could not follow this job: {error}. Retry it."),
            ),
        )
        .await
    }

    /// `job_poll`: one look at a job on the backend.
    pub async fn poll(&self, payload: &Value) -> TaskResult {
        let task: TaskPayload =
            serde_json::from_value(payload.clone()).map_err(|e| format!("bad payload: {e}"))?;
        let Some(job) = self.load(task.job_id).await? else {
            return Ok(());
        };
        if job.terminal() || task.attempt.is_some_and(|a| a != job.retry_count) {
            return Ok(());
        }
        let Some(external) = job.external_job_id.clone() else {
            return Ok(());
        };
        let client = match self.client_for(&job) {
            Ok(client) => client,
            Err(ending) => return self.end(&job, ending).await,
        };
        if job.cancel_requested_at.is_some() {
            match client.cancel(&external).await {
                Ok(_) | Err(RunpodError::NotFound) => {}
                Err(e) if e.is_transient() => return self.retry_later(&job, &task, &e).await,
                Err(e) => tracing::warn!(job = %job.id, error = %e, "cancel was rejected"),
            }
            return self
                .end(
                    &job,
                    Ending::cancelled("cancelled", "Cancelled at your request."),
                )
                .await;
        }
        // When /stream is at its rate limit (hundreds of active jobs), each poll makes one call,
        // alternating /stream and /status: both endpoints' limits then refresh the job, and the
        // chunks wait in the stream for the next /stream poll.
        let saturated = client.stream_saturated().await;
        let skip_stream = saturated && task.polls % 2 == 1;
        let stream_status = if skip_stream {
            None
        } else {
            let stream = match client.stream(&external).await {
                Ok(s) => s,
                Err(e) => return self.poll_error(&job, &task, e).await,
            };
            // Persist what arrived before anything else: /stream delivers each chunk once.
            self.apply_outputs(&job, stream.stream.iter().map(|c| &c.output))
                .await?;
            Some(stream.status)
        };
        let ask_status = match stream_status {
            None => true,
            Some(status) => {
                status.is_terminal()
                    || status == RunpodStatus::InQueue
                    || (!saturated && task.polls.is_multiple_of(self.config.status_every.max(1)))
            }
        };
        if ask_status {
            let status = match client.status(&external).await {
                Ok(s) => s,
                Err(e) => return self.poll_error(&job, &task, e).await,
            };
            if self.apply_status(&job, &status).await? {
                return Ok(());
            }
        }
        // Guard rails, on the state as it is now.
        let Some(job) = self.load(task.job_id).await? else {
            return Ok(());
        };
        if job.terminal() {
            return Ok(());
        }
        if let Some(cap) = job.budget_cap
            && job.current_cost >= cap
        {
            // Ended only once the backend stopped it: otherwise the run would bill on unseen.
            if let Err(e) = stop_remote(client, &external).await {
                return self.retry_later(&job, &task, &e).await;
            }
            return self
                .end(&job, Ending::cancelled("budget_cap_reached", format!(
                        "Stopped: the cost reached the budget cap of {} (spent {}). Raise the cap and retry to continue.",
                        crate::format::money(cap),
                        crate::format::money(job.current_cost)
                    )))
                .await;
        }
        if job.status == "running" {
            let last = job.last_progress_at.or(job.started_at);
            if let Some(last) = last
                && (Utc::now() - last).to_std().unwrap_or_default() > self.config.stall_after
            {
                // Ended only once the backend stopped it: otherwise the run would bill on unseen.
                if let Err(e) = stop_remote(client, &external).await {
                    return self.retry_later(&job, &task, &e).await;
                }
                return self
                    .end(&job, Ending::failed("stalled", format!(
                            "Stalled: no progress for {}; the run was stopped. Retry it, or check the GPU backend's logs.",
                            crate::format::duration(self.config.stall_after.as_secs())
                        )))
                    .await;
            }
        }
        let Some(mut tx) = self.attempt_tx(&job).await? else {
            return Ok(());
        };
        self.schedule_poll(&mut tx, &job, task.polls + 1, 0, self.config.poll_interval)
            .await?;
        tx.commit().await.map_err(db_error)
    }

    async fn poll_error(&self, job: &JobRow, task: &TaskPayload, error: RunpodError) -> TaskResult {
        match error {
            RunpodError::NotFound => {
                self.end(job, Ending::failed("backend_lost", "The GPU backend no longer knows this job (its results expired, or the backend restarted). Retry the job."))
                .await
            }
            e if e.is_transient() => self.retry_later(job, task, &e).await,
            e => {
                self.end(job, Ending::failed("backend_rejected", e.to_string()))
                    .await
            }
        }
    }

    /// A transient failure: poll again later, or give up after too many in a row.
    async fn retry_later(
        &self,
        job: &JobRow,
        task: &TaskPayload,
        error: &RunpodError,
    ) -> TaskResult {
        let errors = task.errors + 1;
        tracing::warn!(job = %job.id, errors, %error, "poll failed");
        if errors >= self.config.max_poll_errors {
            return self
                .end(job, Ending::failed("backend_unreachable", format!(
                        "Lost contact with the GPU backend after {errors} attempts: {error}. Retry the job when it is reachable."
                    )))
                .await;
        }
        let backoff = self
            .config
            .poll_interval
            .saturating_mul(1 << errors.min(6))
            .min(Duration::from_secs(60));
        let Some(mut tx) = self.attempt_tx(job).await? else {
            return Ok(());
        };
        self.schedule_poll(&mut tx, job, task.polls + 1, errors, backoff)
            .await?;
        tx.commit().await.map_err(db_error)
    }

    async fn schedule_poll(
        &self,
        tx: &mut Tx,
        job: &JobRow,
        polls: u32,
        errors: u32,
        after: Duration,
    ) -> TaskResult {
        queue::enqueue_after(
            tx,
            POLL_TASK,
            json!({ "job_id": job.id, "attempt": job.retry_count, "polls": polls, "errors": errors }),
            Some(job.user_id),
            &task_key(job.id),
            after,
        )
        .await
        .map(|_| ())
        .map_err(db_error)
    }

    /// Stores worker events (from `/stream`, or the aggregate output) idempotently.
    async fn apply_outputs<'a>(
        &self,
        job: &JobRow,
        outputs: impl Iterator<Item = &'a Value>,
    ) -> TaskResult {
        let mut tx: Option<Tx> = None;
        for output in outputs {
            let event: WorkerEvent = match serde_json::from_value(output.clone()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "ignoring an unreadable worker event");
                    continue;
                }
            };
            if tx.is_none() {
                match self.attempt_tx(job).await? {
                    Some(t) => tx = Some(t),
                    None => return Ok(()),
                }
            }
            if let Some(tx) = tx.as_mut() {
                self.apply_event(tx, job, &event).await?;
            }
        }
        if let Some(tx) = tx {
            tx.commit().await.map_err(db_error)?;
        }
        Ok(())
    }

    async fn apply_event(&self, tx: &mut Tx, job: &JobRow, event: &WorkerEvent) -> TaskResult {
        let attempt = job.attempt();
        match event {
            WorkerEvent::Stage(StageEvent {
                stage,
                message,
                total_steps,
                ..
            }) => {
                let key = format!("{attempt}:stage:{}", stage.as_str());
                let recorded = record_event(tx, job, "stage", &key, event).await?;
                if recorded {
                    sqlx::query(
                        "UPDATE training_jobs SET current_stage = $2, total_steps = COALESCE($3, total_steps),
                                status = CASE WHEN status = 'initializing' THEN 'running' ELSE status END,
                                started_at = COALESCE(started_at, now()), last_progress_at = now()
                          WHERE id = $1 AND status IN ('initializing', 'running')",
                    )
                    .bind(job.id)
                    .bind(stage.as_str())
                    .bind(total_steps.map(|t| t as i32))
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                    if job.status == "initializing" {
                        self.status_event(tx, job, "running", stage.as_str(), None)
                            .await?;
                    }
                    tracing::debug!(job = %job.id, stage = stage.as_str(), %message, "stage");
                }
            }
            WorkerEvent::Metrics(m) => self.apply_metrics(tx, job, m).await?,
            WorkerEvent::Eval(EvalEvent {
                step, eval_loss, ..
            }) => {
                let key = format!("{attempt}:eval:{step}");
                let recorded = record_event(tx, job, "eval", &key, event).await?;
                if recorded {
                    sqlx::query(
                        "INSERT INTO metrics_points (user_id, job_id, step, validation_loss) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (job_id, step) DO UPDATE SET validation_loss = EXCLUDED.validation_loss",
                    )
                    .bind(job.user_id)
                    .bind(job.id)
                    .bind(*step as i32)
                    .bind(eval_loss)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                }
            }
            WorkerEvent::Result(result) => {
                let key = format!("{attempt}:result");
                let recorded = record_event(tx, job, "result", &key, event).await?;
                if recorded {
                    let tokens_per_sec = match result {
                        WorkerResult::Succeeded { metrics, .. } => Some(metrics.tokens_per_sec),
                        WorkerResult::Failed { .. } => None,
                    };
                    sqlx::query("UPDATE training_jobs SET worker_result = $2, tokens_per_sec = COALESCE($3, tokens_per_sec) WHERE id = $1")
                        .bind(job.id)
                        .bind(serde_json::to_value(result).unwrap_or_default())
                        .bind(tokens_per_sec)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                }
            }
        }
        Ok(())
    }

    async fn apply_metrics(&self, tx: &mut Tx, job: &JobRow, m: &MetricsEvent) -> TaskResult {
        let inserted = sqlx::query(
            "INSERT INTO metrics_points (user_id, job_id, step, epoch, training_loss, learning_rate, grad_norm,
                                         tokens_per_sec, gpu_util, elapsed_s)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (job_id, step) DO UPDATE
                SET epoch = EXCLUDED.epoch, training_loss = EXCLUDED.training_loss,
                    learning_rate = EXCLUDED.learning_rate, grad_norm = EXCLUDED.grad_norm,
                    tokens_per_sec = EXCLUDED.tokens_per_sec, gpu_util = EXCLUDED.gpu_util,
                    elapsed_s = EXCLUDED.elapsed_s
              WHERE metrics_points.training_loss IS NULL",
        )
        .bind(job.user_id)
        .bind(job.id)
        .bind(m.step as i32)
        .bind(m.epoch)
        .bind(m.train_loss)
        .bind(m.learning_rate)
        .bind(m.grad_norm)
        .bind(m.tokens_per_sec)
        .bind(m.gpu_util)
        .bind(m.elapsed_s)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if inserted == 0 {
            return Ok(()); // seen before
        }
        let total = m.total_steps.max(1);
        // 100% is kept for the end of the whole job, after saving and uploading.
        let progress = (f64::from(m.step) / f64::from(total) * 100.0).min(99.0);
        let eta_s = if m.step > 0 {
            m.elapsed_s / f64::from(m.step) * f64::from(total.saturating_sub(m.step))
        } else {
            0.0
        };
        let row: Option<(f64,)> = sqlx::query_as(
            "UPDATE training_jobs
                SET current_step = GREATEST(current_step, $2), total_steps = $3, current_epoch = $4, progress = GREATEST(progress, $5),
                    current_metrics = $6, last_progress_at = now(),
                    estimated_completion_at = now() + make_interval(secs => $7),
                    status = CASE WHEN status = 'initializing' THEN 'running' ELSE status END,
                    started_at = COALESCE(started_at, now())
              WHERE id = $1 AND status IN ('initializing', 'running')
          RETURNING current_cost::float8",
        )
        .bind(job.id)
        .bind(m.step as i32)
        .bind(total as i32)
        .bind(m.epoch)
        .bind(progress)
        .bind(serde_json::to_value(m).unwrap_or_default())
        .bind(eta_s)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        let mut payload = serde_json::to_value(m).unwrap_or_default();
        payload["progress"] = json!(progress);
        payload["eta_s"] = json!(eta_s);
        payload["current_cost"] = json!(row.map_or(job.current_cost, |r| r.0));
        events::record(
            tx,
            job.user_id,
            job.id,
            "metrics",
            &format!("{}:metrics:{}", job.attempt(), m.step),
            payload,
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Maps a `/status` answer; returns whether the job reached its end.
    async fn apply_status(&self, job: &JobRow, status: &StatusResponse) -> Result<bool, String> {
        let rate = self.rate_per_second(job);
        let cost = status.execution_time.map(|ms| ms as f64 / 1000.0 * rate);
        {
            let Some(mut tx) = self.attempt_tx(job).await? else {
                return Ok(true);
            };
            sqlx::query(
                "UPDATE training_jobs SET execution_ms = COALESCE($2, execution_ms), delay_ms = COALESCE($3, delay_ms),
                        current_cost = GREATEST(current_cost, COALESCE($4::numeric, current_cost))
                  WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
            )
            .bind(job.id)
            .bind(status.execution_time.map(|v| v as i64))
            .bind(status.delay_time.map(|v| v as i64))
            .bind(cost)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
        }
        match status.status {
            RunpodStatus::InQueue | RunpodStatus::InProgress => Ok(false),
            RunpodStatus::Completed => {
                // The aggregate output holds every yielded value: backfill what /stream missed.
                let outputs = status
                    .output
                    .as_ref()
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                self.apply_outputs(job, outputs.iter()).await?;
                let result = outputs.iter().rev().find_map(|o| {
                    match serde_json::from_value::<WorkerEvent>(o.clone()) {
                        Ok(WorkerEvent::Result(r)) => Some(r),
                        _ => None,
                    }
                });
                match result {
                    Some(WorkerResult::Succeeded { .. }) => {
                        self.complete(job, cost).await?;
                    }
                    Some(WorkerResult::Failed {
                        error_code,
                        message,
                        hint,
                    }) => {
                        self.end(
                            job,
                            Ending::failed(
                                &error_code,
                                if hint.is_empty() {
                                    message
                                } else {
                                    format!("{message} — {hint}")
                                },
                            ),
                        )
                        .await?;
                    }
                    None => {
                        self.end(job, Ending::failed("no_result", "The worker finished without reporting a result; the adapter cannot be trusted. Retry the job."))
                        .await?;
                    }
                }
                Ok(true)
            }
            RunpodStatus::Failed => {
                self.end(
                    job,
                    Ending::failed(
                        "worker_failed",
                        format!(
                            "The worker failed: {}",
                            FailureDetail::message_of(status.error.as_deref())
                        ),
                    ),
                )
                .await?;
                Ok(true)
            }
            RunpodStatus::Cancelled => {
                self.end(
                    job,
                    Ending::cancelled(
                        "cancelled_on_backend",
                        "The job was cancelled on the GPU backend.",
                    ),
                )
                .await?;
                Ok(true)
            }
            RunpodStatus::TimedOut => {
                self.end(job, Ending::failed("timed_out", "The run exceeded its execution timeout and was stopped. Retry with fewer epochs, or a faster GPU."))
                .await?;
                Ok(true)
            }
        }
    }

    /// The worker succeeded. Artifact registration will hang off this point; for now the job
    /// is finalised with its measured cost.
    async fn complete(&self, job: &JobRow, cost: Option<f64>) -> TaskResult {
        let Some(mut tx) = self.attempt_tx(job).await? else {
            return Ok(());
        };
        self.set_stage(&mut tx, job, "finalizing", "Recording the result.")
            .await?;
        let changed = sqlx::query(
            "UPDATE training_jobs
                SET status = 'completed', current_stage = 'completed', progress = 100, completed_at = now(),
                    final_cost = COALESCE($2::numeric, current_cost), current_cost = COALESCE($2::numeric, current_cost),
                    current_step = COALESCE(total_steps, current_step), error_code = NULL, error_message = NULL
              WHERE id = $1 AND status IN ('initializing', 'running')",
        )
        .bind(job.id)
        .bind(cost)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if changed == 1 {
            self.status_event(&mut tx, job, "completed", "completed", None)
                .await?;
            self.notify_end(&mut tx, job, "completed", None).await?;
        }
        tx.commit().await.map_err(db_error)
    }

    /// Ends a job (failed or cancelled) if it has not ended already.
    async fn end(&self, job: &JobRow, ending: Ending<'_>) -> TaskResult {
        let Some(mut tx) = self.attempt_tx(job).await? else {
            return Ok(());
        };
        let changed = sqlx::query(
            "UPDATE training_jobs
                SET status = $2, current_stage = $3, error_code = $4, error_message = $5, completed_at = now(),
                    final_cost = current_cost
              WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
        )
        .bind(job.id)
        .bind(ending.status)
        .bind(ending.stage)
        .bind(ending.error_code)
        .bind(ending.message.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if changed == 1 {
            self.status_event(
                &mut tx,
                job,
                ending.status,
                ending.stage,
                ending.message.as_deref(),
            )
            .await?;
            self.notify_end(&mut tx, job, ending.status, ending.message.as_deref())
                .await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn set_stage(&self, tx: &mut Tx, job: &JobRow, stage: &str, message: &str) -> TaskResult {
        let recorded = events::record(
            tx,
            job.user_id,
            job.id,
            "stage",
            &format!("{}:stage:{stage}", job.attempt()),
            json!({ "type": "stage", "stage": stage, "message": message }),
        )
        .await
        .map_err(db_error)?;
        if recorded.is_some() {
            sqlx::query("UPDATE training_jobs SET current_stage = $2 WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')")
                .bind(job.id)
                .bind(stage)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    /// A `status` event carries the job's new summary to its page and the owner's Jobs list.
    async fn status_event(
        &self,
        tx: &mut Tx,
        job: &JobRow,
        status: &str,
        stage: &str,
        message: Option<&str>,
    ) -> TaskResult {
        status_event(
            tx,
            job.user_id,
            job.id,
            job.retry_count,
            status,
            stage,
            message,
        )
        .await
    }

    async fn notify_end(
        &self,
        tx: &mut Tx,
        job: &JobRow,
        status: &str,
        message: Option<&str>,
    ) -> TaskResult {
        let (kind, title, priority) = match status {
            "completed" => (
                "job_completed",
                format!("Training finished on \"{}\"", job.dataset_name),
                "normal",
            ),
            "cancelled" => (
                "job_cancelled",
                format!("Training cancelled on \"{}\"", job.dataset_name),
                "normal",
            ),
            _ => (
                "job_failed",
                format!("Training failed on \"{}\"", job.dataset_name),
                "high",
            ),
        };
        notifications::create(
            tx,
            job.user_id,
            NewNotification {
                kind,
                title: &title,
                message: message.unwrap_or("The adapter was trained and uploaded."),
                priority,
                action_url: Some(&format!("/jobs/{}", job.id)),
                metadata: json!({ "job_id": job.id }),
            },
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

impl Processor {
    /// Re-queues the task of any unfinished job that has none (a task given up on while its job
    /// could not be updated, a row lost to an operator's hands): no job waits forever.
    /// Returns how many were re-queued.
    pub async fn reconcile(&self) -> Result<usize, String> {
        let mut tx = self.db.system().await.map_err(db_error)?;
        let orphans: Vec<(Uuid, Uuid, String, Option<String>, i32)> = sqlx::query_as(
            "SELECT j.id, j.user_id, j.status, j.external_job_id, j.retry_count
               FROM training_jobs j
              WHERE j.status IN ('queued', 'initializing', 'running')
                AND NOT EXISTS (SELECT 1 FROM work_queue q
                                 WHERE q.dedupe_key = 'job:' || j.id::text
                                   AND q.status IN ('pending', 'running'))
              ORDER BY j.created_at
              LIMIT 1000
                FOR UPDATE OF j SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        for (id, user, status, external, attempt) in &orphans {
            let kind = if status == "queued" && external.is_none() {
                SUBMIT_TASK
            } else {
                POLL_TASK
            };
            tracing::warn!(job = %id, kind, "re-queueing a job that had no task");
            queue::enqueue(
                &mut tx,
                kind,
                json!({ "job_id": id, "attempt": attempt }),
                Some(*user),
                &task_key(*id),
            )
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(orphans.len())
    }

    /// Runs [`Self::reconcile`] every `every` until `shutdown`.
    pub async fn keep_reconciling(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "cannot reconcile jobs and tasks");
            }
        }
    }
}

/// Cancels a run on the backend; a run it no longer knows is stopped too.
async fn stop_remote(client: &RunpodClient, external: &str) -> Result<(), RunpodError> {
    match client.cancel(external).await {
        Ok(_) | Err(RunpodError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Records a worker event in the job's log; `false` when it was seen before.
async fn record_event(
    tx: &mut Tx,
    job: &JobRow,
    kind: &str,
    key: &str,
    event: &WorkerEvent,
) -> Result<bool, String> {
    events::record(
        tx,
        job.user_id,
        job.id,
        kind,
        key,
        serde_json::to_value(event).unwrap_or_default(),
    )
    .await
    .map(|recorded| recorded.is_some())
    .map_err(db_error)
}

/// Records a status change event (shared with the cancel and retry actions).
pub async fn status_event(
    tx: &mut Tx,
    user: Uuid,
    job: Uuid,
    attempt: i32,
    status: &str,
    stage: &str,
    message: Option<&str>,
) -> TaskResult {
    /// progress, current step, total steps, cost so far, final cost.
    type Summary = (f64, i32, Option<i32>, f64, Option<f64>);
    let summary: Option<Summary> = sqlx::query_as(
        "SELECT progress, current_step, total_steps, current_cost::float8, final_cost::float8 FROM training_jobs WHERE id = $1",
    )
    .bind(job)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let (progress, step, total, cost, final_cost) = summary.unwrap_or((0.0, 0, None, 0.0, None));
    events::record(
        tx,
        user,
        job,
        "status",
        &format!("a{attempt}:status:{status}"),
        json!({
            "status": status, "current_stage": stage, "message": message, "progress": progress,
            "current_step": step, "total_steps": total, "current_cost": cost, "final_cost": final_cost,
        }),
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

/// One live task per job: submission turns into polling under the same key.
pub fn task_key(job: Uuid) -> String {
    format!("job:{job}")
}

/// Where a worker uploads an attempt's output files.
pub fn output_key(user: Uuid, job: Uuid, attempt: i32, name: &str) -> String {
    format!("{user}/jobs/{job}/a{attempt}/{name}")
}

/// The executionTimeout sent with a job: the high estimate with a 50% margin plus 10 minutes
/// for start-up, at least RunPod's default 10 minutes, at most a day.
pub fn execution_timeout(estimate: Option<&Value>) -> Duration {
    let high = estimate
        .and_then(|e| e.pointer("/duration_seconds/high"))
        .and_then(Value::as_f64)
        .unwrap_or(3600.0);
    Duration::from_secs_f64((high * 1.5 + 600.0).clamp(600.0, 86_400.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_timeout_has_a_margin_and_bounds() {
        assert_eq!(
            execution_timeout(None),
            Duration::from_secs(3600 * 3 / 2 + 600)
        );
        let quick = json!({"duration_seconds": {"low": 10.0, "high": 20.0}});
        assert_eq!(execution_timeout(Some(&quick)), Duration::from_secs(630));
        let long = json!({"duration_seconds": {"high": 1e9}});
        assert_eq!(execution_timeout(Some(&long)), Duration::from_secs(86_400));
    }
}
