//! Models: the verified LoRA adapters that completed jobs produce — finalisation (files checked
//! against the worker's report, the adapter's config and safetensors header checked against the
//! job), a rating from the real run, a model card, and signed downloads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod card;
pub mod quality;
pub mod verify;

#[cfg(feature = "ssr")]
pub mod finalize;
#[cfg(feature = "ssr")]
pub mod service;
#[cfg(feature = "ssr")]
pub mod store;

pub use quality::{Convergence, Quality};

/// One file of a model, as stored (`model_artifacts.files`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ModelFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// The object's key in the models bucket (never sent to clients: downloads are signed).
    #[serde(default, skip_serializing)]
    pub key: String,
}

pub use crate::jobs::contract::Sample;

/// What the run was: shown on the model page and in the card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TrainingSummary {
    pub total_steps: u32,
    pub train_runtime_s: f64,
    pub tokens_per_sec: f64,
    pub train_tokens: u64,
    pub device: String,
    pub quantization_used: String,
    pub gpu_type: String,
    pub gpu_count: i32,
    /// Wall time from the start of the run to its end.
    pub duration_s: Option<f64>,
    pub cost: f64,
    pub estimated_cost: Option<f64>,
    pub dataset_name: String,
    pub dataset_sha256: Option<String>,
    pub dataset_examples: Option<i32>,
    pub dataset_tokens: Option<i64>,
}

/// A model as the API and the pages show it. Field names follow the original's (`id`,
/// `job_id`, `name`, `quality_metrics.overall_score`, `files`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ModelView {
    pub id: Uuid,
    pub job_id: Uuid,
    pub dataset_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub version: i32,
    pub status: String,
    pub base_model: String,
    pub files: Vec<ModelFile>,
    pub quality_metrics: Option<Quality>,
    pub training_summary: Option<TrainingSummary>,
    /// The job's configuration: preset, hyperparameters, GPU.
    pub configuration: Option<serde_json::Value>,
    pub model_card: Option<String>,
    pub samples: Vec<Sample>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ModelView {
    /// Total bytes of the model's files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// How a list of models is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ModelSort {
    /// Newest first.
    #[default]
    CreatedAt,
    /// Best rated first, then newest.
    Quality,
}

/// `PATCH /api/models/{id}`: rename or describe.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModelUpdate {
    #[serde(default)]
    pub name: Option<String>,
    /// An empty string clears it.
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /api/models/{id}/download` answer (the original's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DownloadLinks {
    pub model_id: Uuid,
    pub model_name: String,
    pub download_urls: std::collections::BTreeMap<String, String>,
    pub expires_in_seconds: i64,
}
