//! The durable job processor. It runs as tasks on the work queue (leased with SKIP LOCKED, so
//! it is correct with any number of replicas, and a crash loses nothing):
//!
//! - [`Task::SubmitJob`] ([`submit`]) signs the dataset and upload URLs and calls `/run` with
//!   an executionTimeout from the estimate;
//! - [`Task::PollJob`] ([`poll`]) reads `/stream` (chunks are persisted before anything else),
//!   asks `/status` every few polls or when the stream says the job ended, and carries out what
//!   [`decide`] makes of it: keep polling, end the job, or stop the run first (cancel, budget
//!   cap, stall watchdog).
//!
//! Every write goes through [`crate::jobs::store`] (each transition checks what it changed),
//! every ending through [`crate::jobs::finish`], and every event has a per-attempt dedupe key,
//! so a replayed chunk or a task that runs twice changes nothing.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::db::{Db, Tx};
use crate::jobs::contract::ADAPTER_FILES;
use crate::jobs::finish::{self, Ending, Subject};
use crate::jobs::lifecycle::JobStage;
use crate::jobs::store::{self, ProcessingRow};
use crate::models::finalize::Outcome;
use crate::runpod::RunpodClient;
use crate::storage::Bucket;
use crate::storage::Storage;
use crate::tasks::{JobTask, Task, TaskError};
use crate::training::Catalog;

pub mod decide;
mod poll;
mod submit;

/// Largest adapter file a worker may upload (a rank-256 adapter of a 70B model is ~2 GB).
const MAX_ADAPTER_FILE: u64 = 8 << 30;
/// Largest checkpoint: the adapter with its two Adam moments, in fp32 (4× the adapter).
const MAX_CHECKPOINT_FILE: u64 = 4 * MAX_ADAPTER_FILE;
/// The checkpoint's file name in an attempt's folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.pt";

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
    /// The worker reports metrics at most this often.
    pub report_interval: Duration,
    /// The worker saves a resumable checkpoint after this much training time.
    pub checkpoint_every: Duration,
    /// Runs lost with their backend are resumed automatically this many times per job.
    pub max_auto_resumes: u32,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            status_every: 3,
            stall_after: Duration::from_secs(15 * 60),
            max_poll_errors: 30,
            report_every_steps: 1,
            report_interval: Duration::from_secs(1),
            checkpoint_every: Duration::from_secs(600),
            max_auto_resumes: 3,
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
    fn client_for(&self, job: &ProcessingRow) -> Result<&RunpodClient, Ending> {
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

    async fn load(&self, id: Uuid) -> Result<Option<ProcessingRow>, TaskError> {
        let mut tx = self.db.system().await?;
        let row = store::load_for_processing(&mut tx, id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// A transaction holding the job's row lock, if the job is still on `job`'s attempt; `None`
    /// when a retry started a newer attempt (this task's view is stale: it must change nothing).
    async fn attempt_tx(&self, job: &ProcessingRow) -> Result<Option<Tx>, TaskError> {
        let mut tx = self.db.system().await?;
        if store::lock_attempt(&mut tx, job.id).await? == Some(job.retry_count) {
            Ok(Some(tx))
        } else {
            tx.rollback().await?;
            Ok(None)
        }
    }

    /// What the backend's reported execution time costs ([`crate::costs::compute_cost`]).
    fn billed_cost(
        &self,
        job: &ProcessingRow,
        status: &crate::runpod::StatusResponse,
    ) -> Option<f64> {
        status.execution_time.map(|ms| {
            crate::costs::compute_cost(ms, self.catalog.gpu(&job.gpu_type), job.gpu_count)
        })
    }

    /// Ends the job (in its own transaction, on its attempt) if it has not ended already. A
    /// failed or cancelled attempt's adapter files are deleted (its checkpoint stays: a retry
    /// continues from it).
    async fn finish(&self, job: &ProcessingRow, ending: Ending) -> Result<(), TaskError> {
        let Some(mut tx) = self.attempt_tx(job).await? else {
            return Ok(());
        };
        let ended =
            finish::finish(&mut tx, subject(job), &ending, false, &self.catalog.limits).await?;
        tx.commit().await?;
        if ended && !matches!(ending, Ending::Completed { .. }) {
            self.delete_files(job, [job.retry_count], &ADAPTER_FILES)
                .await;
        }
        Ok(())
    }

    /// The run succeeded: the job waits in `finalizing` while [`Task::FinalizeModel`] checks
    /// its files (the poll task's successor under the job's key).
    async fn hand_to_finalize(&self, job: &ProcessingRow) -> Result<(), TaskError> {
        let Some(mut tx) = self.attempt_tx(job).await? else {
            return Ok(());
        };
        self.enter_stage(
            &mut tx,
            job,
            JobStage::Finalizing,
            "Verifying the adapter files and rating the run.",
        )
        .await?;
        Task::FinalizeModel(JobTask::start(job.id, job.retry_count))
            .enqueue(&mut tx, Some(job.user_id), Duration::ZERO)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Task::FinalizeModel`]: the model, or the job failed with what is wrong with its files.
    pub async fn finalize(&self, task: &JobTask) -> Result<(), TaskError> {
        let Some(job) = self.load(task.job_id).await? else {
            return Ok(());
        };
        if is_stale(task, &job) {
            return Ok(());
        }
        let outcome = crate::models::finalize::finalize(
            &self.db,
            &self.storage,
            &self.catalog,
            job.id,
            job.retry_count,
        )
        .await?;
        match outcome {
            Outcome::Ready(model) => {
                tracing::info!(job = %job.id, %model, "model ready");
                // Checkpoints served retries; other attempts' files are nobody's model.
                let others = (0..job.retry_count).collect::<Vec<_>>();
                self.delete_files(&job, others, &ADAPTER_FILES).await;
                self.delete_files(&job, 0..=job.retry_count, &[CHECKPOINT_FILE])
                    .await;
                Ok(())
            }
            Outcome::Stale => Ok(()),
            Outcome::Rejected(rejected) => {
                tracing::warn!(job = %job.id, code = rejected.code, %rejected, "adapter rejected");
                self.finish(&job, Ending::failed(rejected.code, rejected.message))
                    .await
            }
        }
    }

    /// Deletes `names` of the given attempts (best effort: a file left behind costs storage,
    /// never correctness).
    async fn delete_files(
        &self,
        job: &ProcessingRow,
        attempts: impl IntoIterator<Item = i32>,
        names: &[&str],
    ) {
        for attempt in attempts {
            for name in names {
                let key = output_key(job.user_id, job.id, attempt, name);
                if let Err(e) = self.storage.delete(Bucket::Models, &key).await {
                    tracing::debug!(job = %job.id, %key, error = %e, "file not deleted");
                }
            }
        }
    }

    /// Queues the job's next poll.
    async fn schedule_poll(
        &self,
        tx: &mut Tx,
        job: &ProcessingRow,
        polls: u32,
        errors: u32,
        after: Duration,
    ) -> Result<(), TaskError> {
        let task = JobTask {
            job_id: job.id,
            attempt: Some(job.retry_count),
            polls,
            errors,
        };
        Task::PollJob(task)
            .enqueue(tx, Some(job.user_id), after)
            .await?;
        Ok(())
    }

    /// The queue gave up on a job's task: the job fails with the reason.
    pub async fn give_up(&self, task: &JobTask, error: &str) -> Result<(), TaskError> {
        let Some(job) = self.load(task.job_id).await? else {
            return Ok(());
        };
        self.finish(
            &job,
            Ending::failed(
                "processing_failed",
                format!("The platform could not follow this job: {error}. Retry it."),
            ),
        )
        .await
    }

    /// Re-queues the task of any unfinished job that has none (a task given up on while its job
    /// could not be updated, a row lost to an operator's hands): no job waits forever.
    /// Returns how many were re-queued.
    pub async fn reconcile(&self) -> Result<usize, TaskError> {
        let mut tx = self.db.system().await?;
        let orphans = store::orphans(&mut tx, 1000).await?;
        for orphan in &orphans {
            let job = JobTask::start(orphan.id, orphan.retry_count);
            let task = if orphan.status == crate::jobs::JobStatus::Queued
                && orphan.external_job_id.is_none()
            {
                Task::SubmitJob(job)
            } else if orphan.current_stage == JobStage::Finalizing {
                // The run is over; only its files are left to check.
                Task::FinalizeModel(job)
            } else {
                Task::PollJob(job)
            };
            tracing::warn!(job = %orphan.id, kind = task.kind(), "re-queueing a job that had no task");
            task.enqueue(&mut tx, Some(orphan.user_id), Duration::ZERO)
                .await?;
        }
        tx.commit().await?;
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

/// Whether a task belongs to another attempt than the job's current one.
fn is_stale(task: &JobTask, job: &ProcessingRow) -> bool {
    task.attempt.is_some_and(|a| a != job.retry_count)
}

fn subject(job: &ProcessingRow) -> Subject {
    Subject {
        id: job.id,
        user_id: job.user_id,
        attempt: job.retry_count,
    }
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
    use serde_json::json;

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
