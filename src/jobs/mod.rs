//! Training jobs: creation (validated, estimated, queued) and reading them back. Execution
//! (submission to RunPod or the local executor, progress, cancel) arrives with the execution
//! capability; until then a created job waits in `queued`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::training::TrainingConfig;

pub mod contract;
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
}
