//! Training jobs: creation (validated, estimated, queued), the worker contract, execution on
//! RunPod or the local executor (the processor), the event log and its live fan-out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::training::TrainingConfig;

pub mod contract;
#[cfg(feature = "ssr")]
pub mod events;
#[cfg(feature = "ssr")]
pub mod hub;
#[cfg(feature = "ssr")]
pub mod processor;
#[cfg(feature = "ssr")]
pub mod service;

/// `POST /api/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
pub struct JobView {
    pub id: Uuid,
    pub dataset_id: Uuid,
    pub dataset_name: Option<String>,
    pub base_model: String,
    pub preset: String,
    pub hyperparameters: serde_json::Value,
    pub gpu_type: String,
    pub gpu_count: i32,
    pub backend: String,
    pub status: String,
    pub current_stage: String,
    pub progress: f64,
    pub current_step: i32,
    pub total_steps: Option<i32>,
    pub current_cost: f64,
    pub estimated_total_cost: Option<f64>,
    pub budget_cap: Option<f64>,
    pub final_cost: Option<f64>,
    pub estimate: Option<serde_json::Value>,
    pub error_message: Option<String>,
    pub artifact_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub error_code: Option<String>,
    pub current_epoch: Option<f64>,
    /// The latest metrics event (loss, learning rate, tokens/s, ...).
    pub current_metrics: Option<serde_json::Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub estimated_completion_at: Option<DateTime<Utc>>,
    pub retry_count: i32,
    /// Billed execution time so far, from the backend.
    pub execution_ms: Option<i64>,
    pub cancel_requested: bool,
    /// The newest event id: where a live stream opened after this snapshot starts.
    pub last_event_id: i64,
}

/// One point of a job's training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub step: i32,
    pub epoch: Option<f64>,
    pub training_loss: Option<f64>,
    pub validation_loss: Option<f64>,
    pub learning_rate: Option<f64>,
    pub grad_norm: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    pub elapsed_s: Option<f64>,
}

/// Whether a job status is final.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}
