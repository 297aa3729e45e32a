//! Background work as typed tasks, and the worker that runs them: it leases rows from the
//! durable queue ([`crate::queue`]) and runs them, several at once (job polls spend their time
//! waiting on the GPU backend). Every server replica runs one; SKIP LOCKED keeps them from
//! taking the same task. [`dispatch`] and [`give_up`] match every [`Task`] kind, so a new kind
//! is a compile error until both say what to do with it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use crate::datasets::service as datasets;
use crate::db::{Db, Tx};
use crate::jobs::processor::Processor;
use crate::queue::{self, LeasedTask};
use crate::storage::Storage;

/// One unit of background work: stored as `work_queue.kind` + `work_queue.payload`.
///
/// Each kind has one dedupe key per subject ([`Task::dedupe_key`]): queueing a task whose key
/// is queued already replaces it, so a subject never has two tasks of the same key at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum Task {
    /// Validate an uploaded dataset and store its normalised training file.
    /// Key `validate:<dataset>`: a dataset is validated once at a time.
    #[serde(rename = "validate_dataset")]
    ValidateDataset { dataset_id: Uuid },
    /// Send a queued job to its GPU backend. Key `job:<job>`, shared with [`Task::PollJob`]:
    /// a job has one live task, and a submission turns into polling under the same key.
    #[serde(rename = "job_submit")]
    SubmitJob(JobTask),
    /// Follow a job on its GPU backend (reschedules itself). Key `job:<job>`.
    #[serde(rename = "job_poll")]
    PollJob(JobTask),
    /// Verify a succeeded run's files and make its model (the job's last task).
    #[serde(rename = "model_finalize")]
    FinalizeModel(JobTask),
    /// Send one webhook delivery; a failed attempt queues the next on the backoff schedule.
    /// Key `webhook:<delivery>`.
    #[serde(rename = "webhook_deliver")]
    DeliverWebhook { delivery_id: Uuid },
    /// One retention or maintenance chore; each run queues the next. Key `maintenance:<chore>`.
    #[serde(rename = "maintenance")]
    Maintenance { chore: crate::maintenance::Chore },
}

impl Task {
    /// The stored kind (the serde tag).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ValidateDataset { .. } => "validate_dataset",
            Self::SubmitJob(_) => "job_submit",
            Self::PollJob(_) => "job_poll",
            Self::FinalizeModel(_) => "model_finalize",
            Self::DeliverWebhook { .. } => "webhook_deliver",
            Self::Maintenance { .. } => "maintenance",
        }
    }

    /// The concurrency budget the task runs under.
    pub fn lane(&self) -> Lane {
        match self {
            Self::ValidateDataset { .. } => Lane::Validation,
            Self::SubmitJob(_) | Self::PollJob(_) | Self::FinalizeModel(_) => Lane::Jobs,
            Self::DeliverWebhook { .. } => Lane::Webhooks,
            Self::Maintenance { .. } => Lane::Maintenance,
        }
    }

    pub fn dedupe_key(&self) -> String {
        match self {
            Self::ValidateDataset { dataset_id } => format!("validate:{dataset_id}"),
            Self::SubmitJob(job) | Self::PollJob(job) | Self::FinalizeModel(job) => {
                job_key(job.job_id)
            }
            Self::DeliverWebhook { delivery_id } => format!("webhook:{delivery_id}"),
            Self::Maintenance { chore } => format!("maintenance:{}", chore.as_str()),
        }
    }

    pub fn payload(&self) -> serde_json::Value {
        crate::jobs::event::content_of(self)
    }

    /// Reads a stored task back.
    pub fn parse(kind: &str, payload: &serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "kind": kind, "payload": payload }))
    }

    /// Queues the task in the caller's transaction (it exists exactly when the change that
    /// needs it commits), due after `delay`.
    pub async fn enqueue(
        &self,
        tx: &mut Tx,
        user: Option<Uuid>,
        delay: Duration,
    ) -> Result<i64, sqlx::Error> {
        queue::enqueue_after(
            tx,
            self.kind(),
            self.payload(),
            user,
            &self.dedupe_key(),
            delay,
        )
        .await
    }
}

/// Task kinds that share a concurrency budget on a replica. Validations read whole files (CPU
/// and disk), so few run at once; job tasks mostly wait on the GPU backend and keep slots of
/// their own, so a pile of uploads never delays a budget cap, a cancel or a stall check.
/// Webhook deliveries wait on other people's servers (up to 10 s each): a lane of their own.
/// Maintenance chores are slow and never urgent: one at a time, beside everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Validation,
    Jobs,
    Webhooks,
    Maintenance,
}

impl Lane {
    pub const ALL: [Lane; 4] = [
        Lane::Validation,
        Lane::Jobs,
        Lane::Webhooks,
        Lane::Maintenance,
    ];

    /// The stored kinds of the lane's tasks (a unit test checks every [`Task`] is in its lane's).
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            Self::Validation => &["validate_dataset"],
            Self::Jobs => &["job_submit", "job_poll", "model_finalize"],
            Self::Webhooks => &["webhook_deliver"],
            Self::Maintenance => &["maintenance"],
        }
    }
}

/// Tasks a replica runs at once, per [`Lane`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    pub validations: usize,
    pub jobs: usize,
    pub webhooks: usize,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            validations: 2,
            jobs: 32,
            webhooks: 8,
        }
    }
}

impl Concurrency {
    pub fn of(&self, lane: Lane) -> usize {
        match lane {
            Lane::Validation => self.validations,
            Lane::Jobs => self.jobs,
            Lane::Webhooks => self.webhooks,
            Lane::Maintenance => 1,
        }
        .max(1)
    }
}

/// The payload of a job's task ([`Task::SubmitJob`], [`Task::PollJob`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTask {
    pub job_id: Uuid,
    /// The attempt (`retry_count`) the task belongs to; a task of an older attempt stops.
    #[serde(default)]
    pub attempt: Option<i32>,
    /// Polls so far (every few asks `/status`).
    #[serde(default)]
    pub polls: u32,
    /// Failed polls in a row (backoff, then the job fails).
    #[serde(default)]
    pub errors: u32,
}

impl JobTask {
    /// The first task of an attempt.
    pub fn start(job_id: Uuid, attempt: i32) -> Self {
        Self {
            job_id,
            attempt: Some(attempt),
            polls: 0,
            errors: 0,
        }
    }
}

/// The one live task of a job.
pub fn job_key(job: Uuid) -> String {
    format!("job:{job}")
}

/// Why a task failed, and whether running it again may help.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct TaskError {
    #[source]
    cause: Box<dyn std::error::Error + Send + Sync>,
    retryable: bool,
}

impl TaskError {
    /// A failure that may pass (a database or network hiccup): the queue runs the task again.
    pub fn retryable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            cause: cause.into(),
            retryable: true,
        }
    }

    /// A failure that will not pass by running again (an unreadable task).
    pub fn permanent(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            cause: cause.into(),
            retryable: false,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl From<sqlx::Error> for TaskError {
    fn from(e: sqlx::Error) -> Self {
        Self::retryable(e)
    }
}

#[derive(Clone)]
pub struct Context {
    pub db: Db,
    pub storage: Storage,
    /// Where tasks write temporary files.
    pub scratch: PathBuf,
    /// Submits and follows training jobs.
    pub processor: Arc<Processor>,
    /// Tasks run at once by this replica, per lane.
    pub concurrency: Concurrency,
    /// Where webhooks may be delivered.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// How long the maintenance chores keep things.
    pub retention: crate::maintenance::Retention,
}

/// How often an idle worker looks for new tasks.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// A running task's place in its lane; given back when the task ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs tasks until `shutdown` turns true; tasks in progress are finished first. Each lane
/// leases only while it has free slots.
pub async fn run_worker(context: Context, mut shutdown: watch::Receiver<bool>) {
    let worker = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    tracing::info!(%worker, concurrency = ?context.concurrency, "background worker started");
    let busy: [Arc<AtomicUsize>; Lane::ALL.len()] = Default::default();
    let mut running = JoinSet::new();
    while !*shutdown.borrow() {
        while running.try_join_next().is_some() {}
        let mut leased_any = false;
        let mut failed = false;
        for (lane, busy) in Lane::ALL.into_iter().zip(&busy) {
            let free = context
                .concurrency
                .of(lane)
                .saturating_sub(busy.load(Ordering::Relaxed));
            if free == 0 {
                continue;
            }
            match queue::lease(&context.db, &worker, lane.kinds(), free).await {
                Ok(tasks) => {
                    for task in tasks {
                        leased_any = true;
                        busy.fetch_add(1, Ordering::Relaxed);
                        let slot = Slot(busy.clone());
                        let context = context.clone();
                        running.spawn(async move {
                            run_one(&context, task).await;
                            drop(slot);
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?lane, "could not lease tasks; retrying");
                    failed = true;
                }
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_secs(2)).await;
        } else if !leased_any {
            tokio::select! {
                () = tokio::time::sleep(IDLE_POLL) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    while running.join_next().await.is_some() {}
    tracing::info!("background worker stopped");
}

async fn run_one(context: &Context, leased: LeasedTask) {
    let span =
        tracing::info_span!("task", id = leased.id, kind = %leased.kind, attempt = leased.attempts);
    run_traced(context, leased).instrument(span).await;
}

async fn run_traced(context: &Context, leased: LeasedTask) {
    let started = std::time::Instant::now();
    let task = Task::parse(&leased.kind, &leased.payload);
    let result = match &task {
        Ok(task) => {
            queue::with_heartbeat(
                &context.db,
                leased.id,
                &leased.lease,
                dispatch(context, task),
            )
            .await
        }
        Err(e) => Err(TaskError::permanent(format!(
            "unreadable task {:?}: {e}",
            leased.kind
        ))),
    };
    // The kind label comes from the parsed task (a bounded set), never the stored text.
    let kind = task.as_ref().map_or("unreadable", Task::kind);
    metrics::histogram!(crate::operations::metrics::TASK_DURATION, "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(()) => "ok",
        Err(e) if e.is_retryable() && leased.attempts < leased.max_attempts => "retry",
        Err(_) => "failed",
    };
    metrics::counter!(crate::operations::metrics::TASKS, "kind" => kind, "outcome" => outcome)
        .increment(1);
    match result {
        Ok(()) => {
            if let Err(e) = queue::complete(&context.db, leased.id, &leased.lease).await {
                tracing::warn!(error = %e, "could not mark the task done; it may run again");
            }
        }
        Err(error) => {
            tracing::warn!(%error, retryable = error.is_retryable(), "task failed");
            let message = error.to_string();
            match queue::fail(&context.db, &leased, &message, error.is_retryable()).await {
                Ok(true) => {}
                Ok(false) => {
                    if let Ok(task) = &task {
                        give_up(context, task, &message).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not record the failure"),
            }
        }
    }
}

async fn dispatch(context: &Context, task: &Task) -> Result<(), TaskError> {
    match task {
        Task::ValidateDataset { dataset_id } => {
            datasets::run_validation(&context.db, &context.storage, &context.scratch, *dataset_id)
                .await
                .map_err(TaskError::retryable)
        }
        Task::SubmitJob(job) => context.processor.submit(job).await,
        Task::PollJob(job) => context.processor.poll(job).await,
        Task::FinalizeModel(job) => context.processor.finalize(job).await,
        Task::DeliverWebhook { delivery_id } => deliver_webhook(context, *delivery_id).await,
        Task::Maintenance { chore } => maintain(context, *chore).await,
    }
}

/// One chore, then its next run (in one transaction with nothing else: the chore's own work
/// is idempotent and committed as it goes).
async fn maintain(context: &Context, chore: crate::maintenance::Chore) -> Result<(), TaskError> {
    let outcome = crate::maintenance::run(&context.db, &context.storage, &context.retention, chore)
        .await
        .map_err(TaskError::retryable)?;
    metrics::counter!(crate::operations::metrics::MAINTENANCE_REMOVED, "chore" => chore.as_str())
        .increment(outcome.removed);
    if outcome.removed > 0 || outcome.reported > 0 {
        tracing::info!(
            chore = chore.as_str(),
            removed = outcome.removed,
            bytes = outcome.bytes,
            reported = outcome.reported,
            "maintenance"
        );
    }
    schedule_next(&context.db, chore).await?;
    Ok(())
}

/// Queues the chore's next run: as the running task's own successor (same key).
async fn schedule_next(db: &Db, chore: crate::maintenance::Chore) -> Result<(), sqlx::Error> {
    let mut tx = db.system().await?;
    Task::Maintenance { chore }
        .enqueue(&mut tx, None, chore.every())
        .await?;
    tx.commit().await
}

/// One attempt at a delivery, recorded; the next attempt (if any) is queued by `record`.
async fn deliver_webhook(context: &Context, delivery_id: Uuid) -> Result<(), TaskError> {
    let Some(delivery) = crate::webhooks::pending(&context.db, delivery_id).await? else {
        // Delivered, given up, or the webhook was removed.
        return Ok(());
    };
    let attempt = crate::webhooks::deliver(&delivery, context.webhooks).await;
    let status = crate::webhooks::record(&context.db, &delivery, &attempt).await?;
    tracing::info!(
        delivery = %delivery_id,
        event = %delivery.event,
        attempt = delivery.attempts + 1,
        ?attempt,
        %status,
        "webhook attempt"
    );
    Ok(())
}

/// The last attempt failed: leave the subject in a clear terminal state.
async fn give_up(context: &Context, task: &Task, error: &str) {
    let outcome = match task {
        Task::ValidateDataset { dataset_id } => {
            datasets::give_up_validation(&context.db, *dataset_id, error)
                .await
                .map_err(TaskError::from)
        }
        Task::SubmitJob(job) | Task::PollJob(job) | Task::FinalizeModel(job) => {
            context.processor.give_up(job, error).await
        }
        Task::DeliverWebhook { delivery_id } => {
            crate::webhooks::give_up(&context.db, *delivery_id, error)
                .await
                .map_err(TaskError::from)
        }
        // A chore that keeps failing still runs again at its next time.
        Task::Maintenance { chore } => schedule_next(&context.db, *chore)
            .await
            .map_err(TaskError::from),
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "could not leave the subject in a terminal state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_keep_their_stored_kinds_and_payloads() {
        let id = Uuid::nil();
        let stored = [
            ("validate_dataset", serde_json::json!({ "dataset_id": id })),
            (
                "job_submit",
                serde_json::json!({ "job_id": id, "attempt": 0 }),
            ),
            (
                "job_poll",
                serde_json::json!({ "job_id": id, "attempt": 2, "polls": 3, "errors": 1 }),
            ),
            // Written before attempts were recorded.
            ("job_poll", serde_json::json!({ "job_id": id })),
            ("webhook_deliver", serde_json::json!({ "delivery_id": id })),
            ("maintenance", serde_json::json!({ "chore": "orphans" })),
        ];
        for (kind, payload) in stored {
            let task = Task::parse(kind, &payload).unwrap();
            assert_eq!(task.kind(), kind);
            assert_eq!(Task::parse(task.kind(), &task.payload()).unwrap(), task);
        }
        assert!(Task::parse("unknown", &serde_json::json!({})).is_err());
        // Every kind is leased by its own lane and no other.
        let job = JobTask::start(id, 0);
        for task in [
            Task::ValidateDataset { dataset_id: id },
            Task::SubmitJob(job.clone()),
            Task::PollJob(job.clone()),
            Task::FinalizeModel(job),
            Task::DeliverWebhook { delivery_id: id },
        ] {
            for lane in Lane::ALL {
                assert_eq!(
                    lane.kinds().contains(&task.kind()),
                    lane == task.lane(),
                    "{} in {lane:?}",
                    task.kind()
                );
            }
        }
        assert_eq!(
            Task::ValidateDataset { dataset_id: id }.dedupe_key(),
            format!("validate:{id}")
        );
    }
}
