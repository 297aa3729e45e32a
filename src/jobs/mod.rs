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

/// What a job stage means, in words (the UI shows these, not the raw names).
pub fn stage_label(stage: &str) -> &'static str {
    match stage {
        "queued" => "Queued",
        "submitting" => "Submitting to the GPU backend",
        "queued_on_gpu" => "Waiting for a GPU",
        "downloading_dataset" => "Downloading the dataset",
        "loading_model" => "Loading the base model",
        "training" => "Training",
        "saving" => "Saving the adapter",
        "uploading" => "Uploading the adapter",
        "finalizing" => "Finalizing",
        "completed" => "Completed",
        "failed" => "Failed",
        "cancelling" => "Cancelling",
        "cancelled" => "Cancelled",
        _ => "Working",
    }
}

/// One line of a job's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `info`, `success` or `error`.
    pub level: String,
    pub text: String,
}

/// Describes a job event for the log; `None` for events the log does not show (metrics).
pub fn describe_event(
    id: i64,
    at: DateTime<Utc>,
    kind: &str,
    payload: &serde_json::Value,
) -> Option<LogLine> {
    let text = |key: &str| {
        payload
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    };
    let (level, line) = match kind {
        "stage" => (
            "info",
            match text("message") {
                // Workers often repeat the stage as its message.
                message
                    if message.is_empty()
                        || message.eq_ignore_ascii_case(stage_label(text("stage"))) =>
                {
                    stage_label(text("stage")).to_owned()
                }
                message => format!("{}: {message}", stage_label(text("stage"))),
            },
        ),
        "eval" => (
            "info",
            format!(
                "Evaluation at step {}: loss {:.4}",
                payload.get("step").and_then(|v| v.as_i64()).unwrap_or(0),
                payload
                    .get("eval_loss")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(f64::NAN)
            ),
        ),
        "result" => match text("status") {
            "succeeded" => (
                "success",
                format!(
                    "The worker finished: {} files uploaded",
                    payload
                        .get("files")
                        .and_then(|f| f.as_array())
                        .map_or(0, Vec::len)
                ),
            ),
            _ => (
                "error",
                format!(
                    "The worker failed ({}): {} {}",
                    text("error_code"),
                    text("message"),
                    text("hint")
                ),
            ),
        },
        "status" => {
            let status = text("status");
            let level = match status {
                "completed" => "success",
                "failed" => "error",
                _ => "info",
            };
            match text("message") {
                "" => (level, format!("Status: {status}")),
                message => (level, format!("Status: {status} — {message}")),
            }
        }
        _ => return None,
    };
    Some(LogLine {
        id,
        at,
        level: level.to_owned(),
        text: line.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_read_as_sentences_for_the_log() {
        let at = DateTime::<Utc>::default();
        let line = |kind: &str, payload: serde_json::Value| describe_event(1, at, kind, &payload);
        assert_eq!(
            line(
                "stage",
                json!({"stage": "downloading_dataset", "message": "downloading the dataset"})
            )
            .unwrap()
            .text,
            "Downloading the dataset"
        );
        assert_eq!(
            line("stage", json!({"stage": "training", "message": "80 steps"}))
                .unwrap()
                .text,
            "Training: 80 steps"
        );
        let failed = line(
            "result",
            json!({"status": "failed", "error_code": "out_of_memory", "message": "CUDA OOM", "hint": "reduce batch_size"}),
        )
        .unwrap();
        assert_eq!(failed.level, "error");
        assert!(failed.text.contains("out_of_memory") && failed.text.contains("reduce batch_size"));
        assert_eq!(
            line("status", json!({"status": "completed"}))
                .unwrap()
                .level,
            "success"
        );
        assert!(
            line("metrics", json!({"step": 1})).is_none(),
            "metrics are charted, not logged"
        );
    }
}
