//! [`Task::PollJob`](crate::tasks::Task::PollJob): one look at a job on its backend. Worker
//! events are stored first (`/stream` delivers each chunk once), billing next, then
//! [`decide`](super::decide::decide) says what becomes of the job and this carries it out.

use chrono::Utc;
use serde_json::Value;

use super::Processor;
use std::time::Duration;

use super::decide::{self, AfterError, BackendState, Decision, Observation};
use crate::jobs::contract::{
    CheckpointEvent, EvalEvent, MetricsEvent, StageEvent, WorkerEvent, WorkerResult,
};
use crate::jobs::event::{CheckpointSaved, JobEvent, MetricsUpdate, StageChange};
use crate::jobs::events;
use crate::jobs::finish::Ending;
use crate::jobs::lifecycle::{JobStage, JobStatus};
use crate::jobs::store::{self, ProcessingRow, Restart};
use crate::runpod::{RunpodClient, RunpodError, RunpodStatus, StatusResponse};
use crate::tasks::{JobTask, Task, TaskError};

impl Processor {
    pub async fn poll(&self, task: &JobTask) -> Result<(), TaskError> {
        let Some(job) = self.load(task.job_id).await? else {
            return Ok(());
        };
        if job.status.is_terminal() || super::is_stale(task, &job) {
            return Ok(());
        }
        let Some(external) = job.external_job_id.clone() else {
            return Ok(());
        };
        let client = match self.client_for(&job) {
            Ok(client) => client,
            Err(ending) => return self.finish(&job, ending).await,
        };
        // A cancel is carried out at once, without reading the backend first.
        let status = if job.cancel_requested_at.is_some() {
            None
        } else {
            match self.observe(&job, task, client, &external).await? {
                Ok(status) => status,
                Err(e) => return self.poll_error(&job, task, e).await,
            }
        };
        // Decide on the job as it is now (events and billing applied).
        let Some(now) = self.load(task.job_id).await? else {
            return Ok(());
        };
        if now.status.is_terminal() || now.retry_count != job.retry_count {
            return Ok(());
        }
        let result = status.as_ref().and_then(final_result);
        let observation = Observation {
            status: now.status,
            cancel_requested: now.cancel_requested_at.is_some(),
            backend: status.as_ref().map(|s| BackendState {
                status: s.status,
                result: result.as_ref(),
                error: s.error.as_deref(),
                cost: self.billed_cost(&now, s),
            }),
            current_cost: now.current_cost,
            budget_cap: now.budget_cap,
            quiet_for: now
                .last_progress_at
                .or(now.started_at)
                .map(|last| (Utc::now() - last).to_std().unwrap_or_default()),
            stall_after: self.config.stall_after,
        };
        match decide::decide(&observation) {
            Decision::KeepPolling => {
                let Some(mut tx) = self.attempt_tx(&now).await? else {
                    return Ok(());
                };
                self.schedule_poll(&mut tx, &now, task.polls + 1, 0, self.config.poll_interval)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
            // A succeeded run becomes a model first: the job completes when its files check out.
            Decision::Finish(Ending::Completed { .. }) => self.hand_to_finalize(&now).await,
            Decision::Finish(ending) => self.finish(&now, ending).await,
            Decision::StopThenFinish(ending) => match client.cancel(&external).await {
                Ok(_) | Err(RunpodError::NotFound) => self.finish(&now, ending).await,
                Err(e) if e.is_transient() => self.retry_later(&now, task, &e).await,
                Err(e) => {
                    // The backend refuses to cancel (it has likely ended the run itself).
                    tracing::warn!(job = %now.id, error = %e, "cancel was rejected");
                    self.finish(&now, ending).await
                }
            },
        }
    }

    /// Reads the backend: `/stream` (persisted at once), and `/status` when it is due, whose
    /// billing and aggregate output are stored too. The `/status` answer, when asked.
    async fn observe(
        &self,
        job: &ProcessingRow,
        task: &JobTask,
        client: &RunpodClient,
        external: &str,
    ) -> Result<Result<Option<StatusResponse>, RunpodError>, TaskError> {
        // When /stream is at its rate limit (hundreds of active jobs), each poll makes one call,
        // alternating /stream and /status: both endpoints' limits then refresh the job, and the
        // chunks wait in the stream for the next /stream poll.
        let saturated = client.stream_saturated().await;
        let skip_stream = saturated && task.polls % 2 == 1;
        let stream_status = if skip_stream {
            None
        } else {
            let stream = match client.stream(external).await {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            self.apply_outputs(job, stream.stream.iter().map(|c| &c.output))
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
        if !ask_status {
            return Ok(Ok(None));
        }
        let status = match client.status(external).await {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let cost = self.billed_cost(job, &status);
        if let Some(mut tx) = self.attempt_tx(job).await? {
            store::record_billing(
                &mut tx,
                job.id,
                status.execution_time.map(|v| v as i64),
                status.delay_time.map(|v| v as i64),
                cost,
            )
            .await?;
            tx.commit().await?;
        }
        if status.status == RunpodStatus::Completed {
            // The aggregate output holds every yielded value: backfill what /stream missed.
            if let Some(outputs) = status.output.as_ref().and_then(Value::as_array) {
                self.apply_outputs(job, outputs.iter()).await?;
            }
        }
        Ok(Ok(Some(status)))
    }

    async fn poll_error(
        &self,
        job: &ProcessingRow,
        task: &JobTask,
        error: RunpodError,
    ) -> Result<(), TaskError> {
        let left = self
            .config
            .max_auto_resumes
            .saturating_sub(job.auto_resumes.max(0) as u32);
        match decide::on_backend_error(&error, left) {
            AfterError::Finish(ending) => self.finish(job, ending).await,
            AfterError::TryLater => self.retry_later(job, task, &error).await,
            AfterError::Resume => self.resume_lost(job).await,
        }
    }

    /// The backend lost the run: the next attempt starts from the latest checkpoint, at once.
    async fn resume_lost(&self, job: &ProcessingRow) -> Result<(), TaskError> {
        let Some(mut tx) = self.attempt_tx(job).await? else {
            return Ok(());
        };
        let how = Restart::Lost {
            attempt: job.retry_count,
            max_auto_resumes: self.config.max_auto_resumes as i32,
        };
        let Some(restarted) = store::restart(&mut tx, job.user_id, job.id, how).await? else {
            tx.rollback().await?;
            return Ok(()); // it ended or moved on meanwhile
        };
        Task::SubmitJob(JobTask::start(job.id, restarted.attempt))
            .enqueue(&mut tx, Some(job.user_id), Duration::ZERO)
            .await?;
        let from = match restarted.resumed_from_step {
            Some(step) => format!("from the checkpoint at step {step}"),
            None => "from the start (no checkpoint was saved yet)".to_owned(),
        };
        let message = format!(
            "The GPU backend lost the run (it restarted, or lost its worker); resuming {from}, automatic resume {} of {}.",
            job.auto_resumes + 1,
            self.config.max_auto_resumes
        );
        tracing::warn!(job = %job.id, attempt = restarted.attempt, resumed_from = ?restarted.resumed_from_step, "resuming a lost run");
        events::record_status(
            &mut tx,
            job.user_id,
            job.id,
            restarted.attempt,
            JobStatus::Queued,
            JobStage::Queued,
            Some(&message),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A transient failure: poll again later, or give up after too many in a row.
    async fn retry_later(
        &self,
        job: &ProcessingRow,
        task: &JobTask,
        error: &RunpodError,
    ) -> Result<(), TaskError> {
        let errors = task.errors + 1;
        tracing::warn!(job = %job.id, errors, %error, "poll failed");
        match decide::after_transient_error(
            errors,
            self.config.max_poll_errors,
            self.config.poll_interval,
            error,
        ) {
            Err(ending) => self.finish(job, ending).await,
            Ok(backoff) => {
                let Some(mut tx) = self.attempt_tx(job).await? else {
                    return Ok(());
                };
                self.schedule_poll(&mut tx, job, task.polls + 1, errors, backoff)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }

    /// Stores worker events (from `/stream`, or the aggregate output) idempotently.
    async fn apply_outputs<'a>(
        &self,
        job: &ProcessingRow,
        outputs: impl Iterator<Item = &'a Value>,
    ) -> Result<(), TaskError> {
        let mut tx = None;
        for output in outputs {
            let mut output = output.clone();
            without_nul(&mut output);
            let event: WorkerEvent = match serde_json::from_value(output) {
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
                apply_event(tx, job, event).await?;
            }
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Drops NUL characters from every string: PostgreSQL's `jsonb` refuses them, and one in a
/// worker's text (a sample a random model generated) must not make the job unfollowable.
fn without_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => s.retain(|c| c != '\0'),
        Value::Array(items) => items.iter_mut().for_each(without_nul),
        Value::Object(fields) => fields.values_mut().for_each(without_nul),
        _ => {}
    }
}

/// The worker's final result in a `/status` aggregate output.
fn final_result(status: &StatusResponse) -> Option<WorkerResult> {
    status
        .output
        .as_ref()
        .and_then(Value::as_array)?
        .iter()
        .rev()
        .find_map(|o| match serde_json::from_value::<WorkerEvent>(o.clone()) {
            Ok(WorkerEvent::Result(r)) => Some(r),
            _ => None,
        })
}

/// Stores one worker event and its effect on the job, once (keyed per attempt).
async fn apply_event(
    tx: &mut crate::db::Tx,
    job: &ProcessingRow,
    event: WorkerEvent,
) -> Result<(), TaskError> {
    let attempt = job.attempt();
    match event {
        WorkerEvent::Stage(StageEvent {
            stage,
            message,
            elapsed_s,
            total_steps,
            train_examples,
            eval_examples,
            resumed_from_step,
        }) => {
            let stage = JobStage::from(stage);
            let event = JobEvent::Stage(StageChange {
                stage,
                message,
                elapsed_s: Some(elapsed_s),
                total_steps,
                train_examples,
                eval_examples,
                resumed_from_step,
            });
            let key = format!("{attempt}:stage:{stage}");
            if events::record(tx, job.user_id, job.id, &key, &event)
                .await?
                .is_some()
            {
                let before =
                    store::enter_worker_stage(tx, job.id, stage, total_steps.map(|t| t as i32))
                        .await?;
                if stage == JobStage::Training {
                    // Where the worker really continues from: the curve after it is redrawn.
                    let from = resumed_from_step.map(|s| s as i32);
                    store::set_resumed_from(tx, job.id, from).await?;
                    store::truncate_curve(tx, job.id, from.unwrap_or(0)).await?;
                }
                if before == Some(JobStatus::Initializing) {
                    events::record_status(
                        tx,
                        job.user_id,
                        job.id,
                        job.retry_count,
                        JobStatus::Running,
                        stage,
                        None,
                    )
                    .await?;
                    notify_started(tx, job).await?;
                }
            }
        }
        WorkerEvent::Metrics(m) => apply_metrics(tx, job, m).await?,
        WorkerEvent::Eval(eval) => {
            let key = format!("{attempt}:eval:{}", eval.step);
            let EvalEvent {
                step, eval_loss, ..
            } = eval;
            if events::record(tx, job.user_id, job.id, &key, &JobEvent::Eval(eval))
                .await?
                .is_some()
            {
                store::insert_eval_point(tx, job.user_id, job.id, step as i32, eval_loss).await?;
            }
        }
        WorkerEvent::Checkpoint(CheckpointEvent {
            step,
            size,
            sha256,
            elapsed_s,
        }) => {
            let key = format!("{attempt}:checkpoint:{step}");
            let event = JobEvent::Checkpoint(CheckpointSaved {
                step,
                size,
                elapsed_s,
            });
            if events::record(tx, job.user_id, job.id, &key, &event)
                .await?
                .is_some()
            {
                store::record_checkpoint(
                    tx,
                    job.id,
                    job.retry_count,
                    step as i32,
                    size as i64,
                    &sha256,
                )
                .await?;
            }
        }
        WorkerEvent::Result(result) => {
            let key = format!("{attempt}:result");
            store::record_result(tx, job.id, &result).await?;
            events::record(tx, job.user_id, job.id, &key, &JobEvent::Result(result)).await?;
        }
    }
    Ok(())
}

/// Tells the owner the worker has started (billing runs from here).
async fn notify_started(tx: &mut crate::db::Tx, job: &ProcessingRow) -> Result<(), sqlx::Error> {
    let message = if job.retry_count == 0 {
        format!(
            "{} × {} is running it; the cost is billed from now.",
            job.gpu_count, job.gpu_type
        )
    } else {
        format!(
            "Attempt {} on {} × {}; the cost is billed from now.",
            job.retry_count + 1,
            job.gpu_count,
            job.gpu_type
        )
    };
    crate::notifications::create(
        tx,
        job.user_id,
        crate::notifications::NewNotification {
            kind: crate::notifications::NotificationKind::JobStarted,
            title: &format!("Training started on \"{}\"", job.dataset_name),
            message: &message,
            priority: crate::notifications::Priority::Low,
            action_url: Some(&format!("/jobs/{}", job.id)),
            metadata: serde_json::json!({ "job_id": job.id, "attempt": job.retry_count }),
        },
    )
    .await?;
    Ok(())
}

async fn apply_metrics(
    tx: &mut crate::db::Tx,
    job: &ProcessingRow,
    m: MetricsEvent,
) -> Result<(), TaskError> {
    if !store::insert_metric_point(tx, job.user_id, job.id, &m).await? {
        return Ok(()); // seen before
    }
    let key = format!("{}:metrics:{}", job.attempt(), m.step);
    let mut update = MetricsUpdate::new(m, job.current_cost);
    if let Some(cost) = store::advance(tx, job.id, &update).await? {
        update.current_cost = cost;
    }
    events::record(tx, job.user_id, job.id, &key, &JobEvent::Metrics(update)).await?;
    Ok(())
}
