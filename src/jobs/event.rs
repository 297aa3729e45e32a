//! One typed job event, from the processor that writes it through the database, the SSE
//! routes and the browser that replays it. Stored as `job_events.kind` + `job_events.payload`
//! and sent over SSE as `{id, job_id, user_id, kind, payload, created_at}` (an adjacently
//! tagged enum), so the name of every quantity is the worker contract's, end to end.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::contract::{EvalEvent, MetricsEvent, WorkerResult};
use super::lifecycle::{JobStage, JobStatus};
use super::{JobRow, JobView, MetricPoint};
use crate::format::bytes as format_bytes;

/// What happened to a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job's status changed; carries its new summary (the Jobs list needs nothing else).
    Status(StatusChange),
    /// The job entered a stage (the platform's or the worker's).
    Stage(StageChange),
    /// A training step was measured.
    Metrics(MetricsUpdate),
    /// An evaluation on the held-out set.
    Eval(EvalEvent),
    /// A resumable checkpoint was saved.
    Checkpoint(CheckpointSaved),
    /// The worker's final result.
    Result(WorkerResult),
}

/// The kind of a [`JobEvent`]: the SSE event name and the `job_events.kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobEventKind {
    Status,
    Stage,
    Metrics,
    Eval,
    Checkpoint,
    Result,
}

super::lifecycle::text_enum!(JobEventKind {
    Status => "status",
    Stage => "stage",
    Metrics => "metrics",
    Eval => "eval",
    Checkpoint => "checkpoint",
    Result => "result",
});

impl JobEvent {
    pub fn kind(&self) -> JobEventKind {
        match self {
            Self::Status(_) => JobEventKind::Status,
            Self::Stage(_) => JobEventKind::Stage,
            Self::Metrics(_) => JobEventKind::Metrics,
            Self::Eval(_) => JobEventKind::Eval,
            Self::Checkpoint(_) => JobEventKind::Checkpoint,
            Self::Result(_) => JobEventKind::Result,
        }
    }

    /// The stored payload (the `payload` half of the serialised event).
    pub fn payload(&self) -> serde_json::Value {
        content_of(self)
    }

    /// Reads a stored event back from its two columns.
    pub fn from_parts(kind: &str, payload: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "kind": kind, "payload": payload }))
    }
}

/// The `payload` half of an adjacently tagged value, as serde writes it (events and tasks alike).
pub(crate) fn content_of(tagged: &impl Serialize) -> serde_json::Value {
    match serde_json::to_value(tagged) {
        Ok(serde_json::Value::Object(mut fields)) => fields.remove("payload").unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

/// A status change and the job's summary after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StatusChange {
    pub status: JobStatus,
    pub current_stage: JobStage,
    /// Why (an error or cancellation message), when there is a reason to give.
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
    pub progress: f64,
    pub current_step: i32,
    #[serde(default)]
    pub total_steps: Option<i32>,
    pub current_cost: f64,
    #[serde(default)]
    pub final_cost: Option<f64>,
    /// The attempt continues from the checkpoint at this step (a retry, or a lost run resumed).
    #[serde(default)]
    pub resumed_from_step: Option<i32>,
    /// The job's model (on `completed`).
    #[serde(default)]
    pub artifact_id: Option<Uuid>,
}

/// A checkpoint the worker saved: a retry continues from `step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CheckpointSaved {
    pub step: u32,
    pub size: u64,
    pub elapsed_s: f64,
}

/// A stage change; the worker's stage events carry timing and the step count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StageChange {
    pub stage: JobStage,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_examples: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_examples: Option<u64>,
    /// On `training`: the step the worker continued from (absent: from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from_step: Option<u32>,
}

/// The worker's metrics with what the platform derives from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct MetricsUpdate {
    #[serde(flatten)]
    pub metrics: MetricsEvent,
    /// 0–100; 100 is kept for the end of the whole job.
    #[serde(default)]
    pub progress: f64,
    /// Seconds left at this step's pace.
    #[serde(default)]
    pub eta_s: f64,
    /// Cost so far when the step was stored.
    #[serde(default)]
    pub current_cost: f64,
}

impl MetricsUpdate {
    /// Derives progress and the time left from a worker's metrics.
    pub fn new(metrics: MetricsEvent, current_cost: f64) -> Self {
        let total = metrics.total_steps.max(1);
        let progress = (f64::from(metrics.step) / f64::from(total) * 100.0).min(99.0);
        let eta_s = if metrics.step > 0 {
            metrics.elapsed_s / f64::from(metrics.step)
                * f64::from(total.saturating_sub(metrics.step))
        } else {
            0.0
        };
        Self {
            metrics,
            progress,
            eta_s,
            current_cost,
        }
    }
}

/// One event as stored and as sent over SSE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobEventRecord {
    /// Ordered per job; the SSE `id` (and so `Last-Event-ID`).
    pub id: i64,
    pub job_id: Uuid,
    pub user_id: Uuid,
    #[serde(flatten)]
    pub event: JobEvent,
    pub created_at: DateTime<Utc>,
}

/// How a log line reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Info,
    Success,
    Error,
}

super::lifecycle::text_enum!(LogLevel {
    Info => "info",
    Success => "success",
    Error => "error",
});

/// One line of a job's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct LogLine {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    pub text: String,
}

impl JobEvent {
    /// The event as a sentence for the log; `None` for events the log does not show (metrics
    /// are charted instead).
    pub fn describe(&self) -> Option<(LogLevel, String)> {
        let line = match self {
            Self::Stage(stage) => {
                let label = stage.stage.label();
                let message = stage.message.trim();
                // Workers often repeat the stage as its message.
                let text = if message.is_empty() || message.eq_ignore_ascii_case(label) {
                    label.to_owned()
                } else {
                    format!("{label}: {message}")
                };
                (LogLevel::Info, text)
            }
            Self::Eval(eval) => (
                LogLevel::Info,
                format!(
                    "Evaluation at step {}: loss {:.4}",
                    eval.step, eval.eval_loss
                ),
            ),
            Self::Checkpoint(saved) => (
                LogLevel::Info,
                format!(
                    "Checkpoint saved at step {} ({}): a retry continues from here",
                    saved.step,
                    format_bytes(saved.size)
                ),
            ),
            Self::Result(WorkerResult::Succeeded { files, .. }) => (
                LogLevel::Success,
                format!("The worker finished: {} files uploaded", files.len()),
            ),
            Self::Result(WorkerResult::Failed {
                error_code,
                message,
                hint,
            }) => (
                LogLevel::Error,
                format!("The worker failed ({error_code}): {message} {hint}"),
            ),
            Self::Status(change) => {
                let level = match change.status {
                    JobStatus::Completed => LogLevel::Success,
                    JobStatus::Failed => LogLevel::Error,
                    _ => LogLevel::Info,
                };
                match change.message.as_deref().filter(|m| !m.is_empty()) {
                    None => (level, format!("Status: {}", change.status)),
                    Some(message) => (level, format!("Status: {} — {message}", change.status)),
                }
            }
            Self::Metrics(_) => return None,
        };
        Some((line.0, line.1.trim().to_owned()))
    }
}

impl JobEventRecord {
    /// The log line for this event, if the log shows it.
    pub fn log_line(&self) -> Option<LogLine> {
        self.event.describe().map(|(level, text)| LogLine {
            id: self.id,
            at: self.created_at,
            level,
            text,
        })
    }
}

impl JobRow {
    /// Applies a streamed event of this job to the row, as [`JobView::follow`] does to the
    /// fields the row has (the test below checks both agree after every event of a run).
    pub fn follow(&mut self, record: &JobEventRecord) {
        if record.job_id != self.id {
            return;
        }
        match &record.event {
            JobEvent::Status(change) => {
                self.status = change.status;
                self.current_stage = change.current_stage;
                self.progress = change.progress;
                self.current_cost = change.current_cost;
                self.final_cost = change.final_cost;
            }
            JobEvent::Stage(stage) => {
                if !self.status.is_terminal() {
                    self.current_stage = stage.stage;
                }
            }
            JobEvent::Metrics(update) => {
                self.progress = self.progress.max(update.progress);
                self.current_cost = update.current_cost.max(self.current_cost);
                if self.status == JobStatus::Initializing {
                    self.status = JobStatus::Running;
                }
            }
            JobEvent::Checkpoint(_) | JobEvent::Eval(_) | JobEvent::Result(_) => {}
        }
    }
}

impl JobView {
    /// Applies one event to the view: the browser's reducer, and what a replay of the whole log
    /// is checked against (it must reach the view `GET /api/jobs/{id}` returns).
    pub fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Status(change) => {
                self.status = change.status;
                self.current_stage = change.current_stage;
                self.progress = change.progress;
                self.current_step = change.current_step;
                self.total_steps = change.total_steps.or(self.total_steps);
                self.current_cost = change.current_cost;
                self.final_cost = change.final_cost;
                if change.status.is_terminal() {
                    self.cancel_requested =
                        self.cancel_requested && change.status == JobStatus::Cancelled;
                } else {
                    self.cancel_requested = false;
                }
                match change.status {
                    JobStatus::Failed | JobStatus::Cancelled => {
                        self.error_message = change.message.clone();
                        self.error_code = change.error_code.clone();
                    }
                    JobStatus::Queued => {
                        // A retry starts a fresh attempt (from a checkpoint, when there is one).
                        self.error_message = None;
                        self.error_code = None;
                        self.current_metrics = None;
                        self.current_epoch = None;
                        self.resumed_from_step = change.resumed_from_step;
                    }
                    JobStatus::Initializing | JobStatus::Running | JobStatus::Completed => {
                        self.error_message = None;
                        self.error_code = None;
                    }
                }
                if change.artifact_id.is_some() {
                    self.artifact_id = change.artifact_id;
                }
            }
            JobEvent::Stage(stage) => {
                if !self.status.is_terminal() {
                    self.current_stage = stage.stage;
                }
                if let Some(total) = stage.total_steps {
                    self.total_steps = Some(total as i32);
                }
                if stage.stage == JobStage::Training {
                    // The worker says where it really continued from (it starts over from a
                    // checkpoint it cannot use).
                    self.resumed_from_step = stage.resumed_from_step.map(|s| s as i32);
                }
            }
            JobEvent::Checkpoint(saved) => self.checkpoint_step = Some(saved.step as i32),
            JobEvent::Metrics(update) => {
                let m = &update.metrics;
                self.current_step = self.current_step.max(m.step as i32);
                self.total_steps = Some(m.total_steps as i32);
                self.current_epoch = Some(m.epoch);
                self.progress = self.progress.max(update.progress);
                self.current_cost = update.current_cost.max(self.current_cost);
                self.current_metrics = Some(update.clone());
                if self.status == JobStatus::Initializing {
                    self.status = JobStatus::Running;
                }
            }
            JobEvent::Eval(_) | JobEvent::Result(_) => {}
        }
    }

    /// Applies a stored or streamed event of this job (others are ignored) and remembers where
    /// a live stream resumes.
    pub fn follow(&mut self, record: &JobEventRecord) {
        if record.job_id != self.id {
            return;
        }
        self.apply(&record.event);
        self.last_event_id = self.last_event_id.max(record.id);
    }

    /// Takes the status from a request's answer (a cancel's) unless the live stream has already
    /// brought a newer event: the stream can deliver the job's end before the answer arrives,
    /// and the answer must not turn a cancelled job back to running.
    pub fn take_answer(&mut self, answer: &JobView) {
        if answer.id != self.id {
            return;
        }
        if answer.last_event_id >= self.last_event_id {
            self.status = answer.status;
            self.current_stage = answer.current_stage;
            self.cancel_requested = answer.cancel_requested;
            self.last_event_id = answer.last_event_id;
        } else if !self.status.is_terminal() {
            // A request to cancel is no event: newer progress does not carry it.
            self.cancel_requested |= answer.cancel_requested;
        }
    }
}

/// Adds an event's point to a training curve kept in step order (metrics and eval events).
pub fn apply_to_curve(points: &mut Vec<MetricPoint>, event: &JobEvent) {
    // An attempt draws the curve again from where its worker says it continues: the steps up
    // to its checkpoint are kept (the same run computed them), the rest is redrawn.
    if let JobEvent::Stage(stage) = event
        && stage.stage == JobStage::Training
    {
        let last = stage.resumed_from_step.map_or(0, |s| s as i32);
        points.retain(|p| p.step <= last);
        return;
    }
    let step = match event {
        JobEvent::Metrics(update) => update.metrics.step as i32,
        JobEvent::Eval(eval) => eval.step as i32,
        _ => return,
    };
    let index = match points.binary_search_by_key(&step, |p| p.step) {
        Ok(i) => i,
        Err(i) => {
            points.insert(i, MetricPoint::at(step));
            i
        }
    };
    let point = &mut points[index];
    match event {
        JobEvent::Metrics(update) => {
            let m = &update.metrics;
            if point.train_loss.is_none() {
                point.epoch = Some(m.epoch);
                point.train_loss = Some(m.train_loss);
                point.learning_rate = Some(m.learning_rate);
                point.grad_norm = Some(m.grad_norm);
                point.tokens_per_sec = Some(m.tokens_per_sec);
                point.gpu_util = m.gpu_util;
                point.elapsed_s = Some(m.elapsed_s);
            }
        }
        JobEvent::Eval(eval) => {
            point.eval_loss = Some(eval.eval_loss);
            point.epoch = point.epoch.or(Some(eval.epoch));
            point.elapsed_s = point.elapsed_s.or(Some(eval.elapsed_s));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::contract::{FinalMetrics, UploadedFile};
    use serde_json::json;

    fn metrics(step: u32, loss: f64) -> JobEvent {
        JobEvent::Metrics(MetricsUpdate::new(
            MetricsEvent {
                step,
                total_steps: 4,
                epoch: f64::from(step) / 4.0,
                train_loss: loss,
                learning_rate: 1e-4,
                grad_norm: 0.5,
                tokens_per_sec: 1000.0,
                gpu_util: Some(80.0),
                elapsed_s: f64::from(step),
                gpu_memory_gb: Some(12.5),
            },
            0.01 * f64::from(step),
        ))
    }

    fn status(status: JobStatus, stage: JobStage, progress: f64, step: i32) -> JobEvent {
        JobEvent::Status(StatusChange {
            status,
            current_stage: stage,
            message: None,
            error_code: None,
            progress,
            current_step: step,
            total_steps: Some(4),
            current_cost: 0.01 * f64::from(step),
            final_cost: status.is_terminal().then_some(0.04),
            resumed_from_step: None,
            artifact_id: None,
        })
    }

    fn stage(stage: JobStage) -> JobEvent {
        JobEvent::Stage(StageChange {
            stage,
            message: String::new(),
            elapsed_s: Some(0.1),
            total_steps: (stage == JobStage::Training).then_some(4),
            train_examples: None,
            eval_examples: None,
            resumed_from_step: None,
        })
    }

    fn view() -> JobView {
        JobView {
            id: Uuid::nil(),
            dataset_id: Uuid::nil(),
            dataset_name: None,
            base_model: "tiny-random-llama".into(),
            preset: "fast".into(),
            hyperparameters: crate::raw_json::RawJson::of(&json!({})).unwrap(),
            gpu_type: "local".into(),
            gpu_count: 1,
            backend: "local".into(),
            status: JobStatus::Queued,
            current_stage: JobStage::Queued,
            progress: 0.0,
            current_step: 0,
            total_steps: Some(4),
            current_cost: 0.0,
            estimated_total_cost: None,
            budget_cap: None,
            final_cost: None,
            estimate: None,
            error_message: None,
            artifact_id: None,
            created_at: DateTime::<Utc>::default(),
            error_code: None,
            current_epoch: None,
            current_metrics: None,
            started_at: None,
            completed_at: None,
            estimated_completion_at: None,
            retry_count: 0,
            execution_ms: None,
            cancel_requested: false,
            resumed_from_step: None,
            checkpoint_step: None,
            last_event_id: 0,
        }
    }

    /// A whole run, in the order the processor writes it.
    fn run() -> Vec<JobEvent> {
        let mut events = vec![
            status(JobStatus::Queued, JobStage::Queued, 0.0, 0),
            stage(JobStage::Submitting),
            status(JobStatus::Initializing, JobStage::QueuedOnGpu, 0.0, 0),
            stage(JobStage::DownloadingDataset),
            status(JobStatus::Running, JobStage::DownloadingDataset, 0.0, 0),
            stage(JobStage::LoadingModel),
            stage(JobStage::Training),
        ];
        for step in 1..=4 {
            events.push(metrics(step, 3.0 - f64::from(step) * 0.5));
        }
        events.push(JobEvent::Eval(EvalEvent {
            step: 4,
            epoch: 1.0,
            eval_loss: 1.25,
            elapsed_s: 4.5,
        }));
        events.push(stage(JobStage::Saving));
        events.push(stage(JobStage::Uploading));
        events.push(JobEvent::Result(WorkerResult::Succeeded {
            samples: None,
            stopped_early: None,
            files: vec![UploadedFile {
                name: "adapter_model.safetensors".into(),
                size: 10,
                sha256: "00".into(),
            }],
            metrics: FinalMetrics {
                final_train_loss: 1.0,
                final_eval_loss: Some(1.25),
                total_steps: 4,
                train_runtime_s: 4.0,
                tokens_per_sec: 1000.0,
                train_tokens: 4000,
            },
            quantization_used: "none".into(),
            device: "cpu".into(),
        }));
        events.push(stage(JobStage::Finalizing));
        events.push(status(JobStatus::Completed, JobStage::Completed, 100.0, 4));
        events
    }

    #[test]
    fn a_cancels_answer_never_undoes_the_end_the_stream_brought_first() {
        let record = |id: i64, job: &JobView, event: JobEvent| JobEventRecord {
            id,
            job_id: job.id,
            user_id: Uuid::nil(),
            event,
            created_at: DateTime::<Utc>::default(),
        };
        let mut job = view();
        job.follow(&record(
            1,
            &job,
            status(JobStatus::Running, JobStage::Training, 10.0, 1),
        ));
        // The answer to the cancel, written after event 2 (the stage change it made).
        let mut answer = job.clone();
        answer.current_stage = JobStage::Cancelling;
        answer.cancel_requested = true;
        answer.last_event_id = 2;

        // The answer first: it is the newest news.
        let mut in_order = job.clone();
        in_order.take_answer(&answer);
        assert_eq!(in_order.current_stage, JobStage::Cancelling);
        assert!(in_order.cancel_requested);

        // Newer progress first: the job still runs, and the cancel is under way.
        let mut progressed = job.clone();
        progressed.follow(&record(3, &progressed, metrics(2, 2.0)));
        progressed.take_answer(&answer);
        assert_eq!(progressed.status, JobStatus::Running);
        assert!(progressed.cancel_requested);
        assert_eq!(progressed.last_event_id, 3);

        // The stream first, up to the job's end: the late answer changes nothing.
        job.follow(&record(2, &job, stage(JobStage::Cancelling)));
        job.follow(&record(
            3,
            &job,
            status(JobStatus::Cancelled, JobStage::Cancelled, 10.0, 1),
        ));
        let ended = job.clone();
        job.take_answer(&answer);
        assert_eq!(job, ended);
        assert_eq!(job.status, JobStatus::Cancelled);
        // Another job's answer is never taken.
        let mut other = answer.clone();
        other.id = Uuid::from_u128(7);
        other.last_event_id = 99;
        job.take_answer(&other);
        assert_eq!(job, ended);
    }

    #[test]
    fn replaying_a_run_reaches_the_final_view() {
        let mut job = view();
        let mut curve = Vec::new();
        for (i, event) in run().iter().enumerate() {
            job.follow(&JobEventRecord {
                id: i as i64 + 1,
                job_id: job.id,
                user_id: Uuid::nil(),
                event: event.clone(),
                created_at: DateTime::<Utc>::default(),
            });
            apply_to_curve(&mut curve, event);
        }
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(job.current_stage, JobStage::Completed);
        assert_eq!(job.progress, 100.0);
        assert_eq!((job.current_step, job.total_steps), (4, Some(4)));
        assert_eq!(job.final_cost, Some(0.04));
        assert_eq!(job.last_event_id, run().len() as i64);
        let last = job.current_metrics.as_ref().unwrap();
        assert_eq!(last.metrics.grad_norm, 0.5);
        assert_eq!(last.metrics.gpu_util, Some(80.0));
        assert_eq!(curve.len(), 4);
        assert_eq!(curve[3].eval_loss, Some(1.25));
        assert_eq!(curve[3].train_loss, Some(1.0));
    }

    #[test]
    fn a_list_row_follows_a_run_as_the_view_does() {
        let mut job = view();
        let mut row = JobRow::from(&job);
        let mut events = run();
        // A failure, a retry and a late stage event, after the run.
        events.push(status(JobStatus::Failed, JobStage::Failed, 25.0, 1));
        events.push(stage(JobStage::Uploading));
        events.push(status(JobStatus::Queued, JobStage::Queued, 0.0, 0));
        events.push(status(
            JobStatus::Initializing,
            JobStage::QueuedOnGpu,
            0.0,
            0,
        ));
        events.push(metrics(1, 2.0));
        for (i, event) in events.into_iter().enumerate() {
            let record = JobEventRecord {
                id: i as i64 + 1,
                job_id: job.id,
                user_id: Uuid::nil(),
                event,
                created_at: DateTime::<Utc>::default(),
            };
            job.follow(&record);
            row.follow(&record);
            assert_eq!(row, JobRow::from(&job), "after event {}", i + 1);
        }
        // Another job's events leave the row alone.
        let before = row.clone();
        row.follow(&JobEventRecord {
            id: 99,
            job_id: Uuid::from_u128(7),
            user_id: Uuid::nil(),
            event: status(JobStatus::Failed, JobStage::Failed, 5.0, 1),
            created_at: DateTime::<Utc>::default(),
        });
        assert_eq!(row, before);
    }

    #[test]
    fn a_failure_then_a_retry_clears_the_error() {
        let mut job = view();
        job.apply(&metrics(1, 2.0));
        job.apply(&JobEvent::Status(StatusChange {
            message: Some("CUDA OOM — reduce batch_size".into()),
            error_code: Some("out_of_memory".into()),
            ..match status(JobStatus::Failed, JobStage::Failed, 25.0, 1) {
                JobEvent::Status(s) => s,
                _ => unreachable!(),
            }
        }));
        assert_eq!(job.error_code.as_deref(), Some("out_of_memory"));
        // A late stage event does not move a finished job.
        job.apply(&stage(JobStage::Uploading));
        assert_eq!(job.current_stage, JobStage::Failed);
        job.apply(&status(JobStatus::Queued, JobStage::Queued, 0.0, 0));
        assert_eq!(job.error_message, None);
        assert_eq!(job.current_metrics, None);
        assert_eq!((job.progress, job.current_step), (0.0, 0));
    }

    #[test]
    fn events_keep_the_wire_shape() {
        let record = JobEventRecord {
            id: 7,
            job_id: Uuid::nil(),
            user_id: Uuid::nil(),
            event: metrics(2, 1.5),
            created_at: DateTime::<Utc>::default(),
        };
        let wire = serde_json::to_value(&record).unwrap();
        assert_eq!(wire["kind"], "metrics");
        assert_eq!(wire["payload"]["train_loss"], 1.5);
        assert_eq!(wire["payload"]["progress"], 50.0);
        let back: JobEventRecord = serde_json::from_value(wire).unwrap();
        assert_eq!(back, record);
        // Events stored before the typed payloads (a `type` key, no derived fields) still read.
        let old = JobEvent::from_parts(
            "stage",
            json!({"type": "stage", "stage": "training", "message": "80 steps"}),
        )
        .unwrap();
        assert_eq!(old.kind(), JobEventKind::Stage);
        assert_eq!(
            JobEvent::from_parts(old.kind().as_str(), old.payload()).unwrap(),
            old
        );
    }

    #[test]
    fn events_read_as_sentences_for_the_log() {
        let text = |e: JobEvent| e.describe().unwrap().1;
        assert_eq!(
            text(JobEvent::Stage(StageChange {
                message: "downloading the dataset".into(),
                ..match stage(JobStage::DownloadingDataset) {
                    JobEvent::Stage(s) => s,
                    _ => unreachable!(),
                }
            })),
            "Downloading the dataset"
        );
        let failed = JobEvent::Result(WorkerResult::Failed {
            error_code: "out_of_memory".into(),
            message: "CUDA OOM".into(),
            hint: "reduce batch_size".into(),
        })
        .describe()
        .unwrap();
        assert_eq!(failed.0, LogLevel::Error);
        assert!(failed.1.contains("out_of_memory") && failed.1.contains("reduce batch_size"));
        let done = status(JobStatus::Completed, JobStage::Completed, 100.0, 4);
        assert_eq!(done.describe().unwrap().0, LogLevel::Success);
        assert!(metrics(1, 1.0).describe().is_none(), "metrics are charted");
    }

    #[test]
    fn a_resumed_attempt_redraws_the_curve_after_its_checkpoint() {
        let mut points = Vec::new();
        let mut job = view();
        for step in 1..=4 {
            apply_to_curve(&mut points, &metrics(step, 2.0 - f64::from(step) * 0.1));
        }
        let saved = JobEvent::Checkpoint(CheckpointSaved {
            step: 2,
            size: 1 << 20,
            elapsed_s: 3.0,
        });
        job.apply(&saved);
        assert_eq!(job.checkpoint_step, Some(2));
        assert!(saved.describe().unwrap().1.contains("step 2 (1.0 MB)"));

        let JobEvent::Status(mut queued) = status(JobStatus::Queued, JobStage::Queued, 50.0, 2)
        else {
            unreachable!()
        };
        queued.resumed_from_step = Some(2);
        let queued = JobEvent::Status(queued);
        apply_to_curve(&mut points, &queued);
        job.apply(&queued);
        assert_eq!(job.resumed_from_step, Some(2));
        assert_eq!(
            points.len(),
            4,
            "kept until the worker says where it continues"
        );

        let training_from = |step: Option<u32>| {
            let JobEvent::Stage(mut training) = stage(JobStage::Training) else {
                unreachable!()
            };
            training.resumed_from_step = step;
            JobEvent::Stage(training)
        };
        // The worker found a newer checkpoint of the same attempt than the recorded one.
        apply_to_curve(&mut points, &training_from(Some(3)));
        job.apply(&training_from(Some(3)));
        assert_eq!(points.iter().map(|p| p.step).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(job.resumed_from_step, Some(3));

        // A worker that could not use the checkpoint starts over: the whole curve is redrawn.
        apply_to_curve(&mut points, &training_from(None));
        job.apply(&training_from(None));
        assert!(points.is_empty());
        assert_eq!(job.resumed_from_step, None);
        apply_to_curve(&mut points, &metrics(1, 1.5));
        assert_eq!(
            points[0].train_loss,
            Some(1.5),
            "the new attempt's value, not the old one"
        );
    }
}
