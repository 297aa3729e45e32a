//! Training jobs: creation (validated, estimated, queued), the worker contract, execution on
//! RunPod or the local executor (the processor), the event log and its live fan-out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::training::TrainingConfig;

pub use event::{JobEvent, JobEventKind, JobEventRecord, LogLevel, LogLine, MetricsUpdate};
pub use lifecycle::{JobStage, JobStatus};
pub use request::{Adjustment, GpuConfig, HyperparameterInput, JobRequest, ResolvedJob};

pub mod contract;
pub mod event;
#[cfg(feature = "ssr")]
pub mod events;
#[cfg(feature = "ssr")]
pub mod finish;
pub mod lifecycle;
#[cfg(feature = "ssr")]
pub mod processor;
pub mod request;
#[cfg(feature = "ssr")]
pub mod service;
#[cfg(feature = "ssr")]
pub mod store;

/// `POST /api/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct NewJob {
    pub dataset_id: Uuid,
    #[serde(flatten)]
    pub config: TrainingConfig,
    /// Stop the job when its cost reaches this many dollars.
    #[serde(default)]
    pub budget_cap: Option<f64>,
    /// Accept a cap below the low estimate (the job will likely be stopped early).
    #[serde(default)]
    pub confirm_low_budget: bool,
}

/// A job as the API and the UI show it. Field names follow the original's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobView {
    pub id: Uuid,
    pub dataset_id: Uuid,
    pub dataset_name: Option<String>,
    pub base_model: String,
    pub preset: String,
    pub hyperparameters: crate::raw_json::RawJson,
    pub gpu_type: String,
    pub gpu_count: i32,
    pub backend: String,
    pub status: JobStatus,
    pub current_stage: JobStage,
    pub progress: f64,
    pub current_step: i32,
    pub total_steps: Option<i32>,
    pub current_cost: f64,
    pub estimated_total_cost: Option<f64>,
    pub budget_cap: Option<f64>,
    pub final_cost: Option<f64>,
    pub estimate: Option<crate::raw_json::RawJson>,
    pub error_message: Option<String>,
    pub artifact_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub error_code: Option<String>,
    pub current_epoch: Option<f64>,
    /// The latest metrics (loss, learning rate, grad norm, tokens/s, GPU use, time left).
    pub current_metrics: Option<MetricsUpdate>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub estimated_completion_at: Option<DateTime<Utc>>,
    pub retry_count: i32,
    /// Billed execution time so far, from the backend.
    pub execution_ms: Option<i64>,
    pub cancel_requested: bool,
    /// This attempt continues from the checkpoint at this step.
    pub resumed_from_step: Option<i32>,
    /// The step of the latest checkpoint a retry would continue from.
    pub checkpoint_step: Option<i32>,
    /// The newest event id: where a live stream opened after this snapshot starts.
    pub last_event_id: i64,
}

/// A job as a row of the Jobs list: what the table shows and the live stream changes, without
/// the configuration, estimate and metrics a [`JobView`] carries (a page of 100 is sent to the
/// browser as the list's props and read from Postgres on every page view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobRow {
    pub id: Uuid,
    pub dataset_name: Option<String>,
    pub base_model: String,
    pub preset: String,
    pub gpu_type: String,
    pub gpu_count: i32,
    pub status: JobStatus,
    pub current_stage: JobStage,
    pub progress: f64,
    pub current_cost: f64,
    pub estimated_total_cost: Option<f64>,
    pub final_cost: Option<f64>,
    pub created_at: DateTime<Utc>,
}

impl From<&JobView> for JobRow {
    fn from(job: &JobView) -> Self {
        Self {
            id: job.id,
            dataset_name: job.dataset_name.clone(),
            base_model: job.base_model.clone(),
            preset: job.preset.clone(),
            gpu_type: job.gpu_type.clone(),
            gpu_count: job.gpu_count,
            status: job.status,
            current_stage: job.current_stage,
            progress: job.progress,
            current_cost: job.current_cost,
            estimated_total_cost: job.estimated_total_cost,
            final_cost: job.final_cost,
            created_at: job.created_at,
        }
    }
}

/// One point of a job's training curve; names as in the worker contract.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct MetricPoint {
    pub step: i32,
    pub epoch: Option<f64>,
    pub train_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    pub learning_rate: Option<f64>,
    pub grad_norm: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    /// GPU utilisation, percent (when the worker can read it).
    pub gpu_util: Option<f64>,
    pub elapsed_s: Option<f64>,
}

impl MetricPoint {
    /// An empty point at `step`.
    pub fn at(step: i32) -> Self {
        Self {
            step,
            ..Self::default()
        }
    }
}
