//! The one typed contract between the platform and the GPU worker (DESIGN §6.3): what goes
//! into RunPod's `input`, and the events the worker's generator handler yields. The Python
//! side checks the same shapes against `worker/contract/*.schema.json`; both sides' tests read
//! the example files in `worker/contract/examples/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::training::Hyperparameters;

pub const CONTRACT_VERSION: u32 = 1;

/// The files a worker may upload; the first two are required for a usable adapter.
pub const ADAPTER_FILES: [&str; 6] = [
    "adapter_config.json",
    "adapter_model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// RunPod's `input` for a training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkerInput {
    pub contract_version: u32,
    pub job_id: Uuid,
    /// A Hugging Face id, a local path, or `tiny-random-llama` (built by the worker).
    pub base_model: String,
    /// Signed GET URL of the normalised chat JSONL.
    pub dataset_url: String,
    pub hyperparameters: Hyperparameters,
    /// File name → signed PUT URL.
    pub upload_urls: BTreeMap<String, String>,
    pub report_every_steps: u32,
    /// A cap on optimizer steps (demo runs, tests); `None` runs every epoch.
    #[serde(default)]
    pub max_steps: Option<u32>,
    /// The run's execution timeout: the worker stops training in time to save and upload the
    /// adapter so far, instead of being killed with nothing to show for the time billed.
    #[serde(default)]
    pub execution_timeout_s: Option<u64>,
    /// Metrics at most once per this many seconds (the worker's default: 1).
    #[serde(default)]
    pub report_interval_s: Option<f64>,
    /// Where checkpoints go, and the one to resume from.
    #[serde(default)]
    pub checkpoint: Option<CheckpointPlan>,
}

/// Save a resumable checkpoint every `every_s` seconds of training to `upload_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckpointPlan {
    pub every_s: f64,
    /// Signed PUT URL of this attempt's checkpoint file.
    pub upload_url: String,
    /// The latest checkpoint of an earlier attempt: training continues from it.
    #[serde(default)]
    pub resume: Option<ResumeFrom>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResumeFrom {
    /// Signed GET URL of the checkpoint file.
    pub url: String,
    pub step: u32,
    pub sha256: String,
}

/// The stages a worker reports, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkerStage {
    DownloadingDataset,
    LoadingModel,
    Training,
    Saving,
    Uploading,
}

impl WorkerStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DownloadingDataset => "downloading_dataset",
            Self::LoadingModel => "loading_model",
            Self::Training => "training",
            Self::Saving => "saving",
            Self::Uploading => "uploading",
        }
    }
}

/// One value yielded by the worker's generator handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerEvent {
    Stage(StageEvent),
    Metrics(MetricsEvent),
    Eval(EvalEvent),
    Checkpoint(CheckpointEvent),
    Result(WorkerResult),
}

/// A checkpoint was uploaded: a retry, or a run lost with its backend, resumes from `step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CheckpointEvent {
    pub step: u32,
    pub size: u64,
    pub sha256: String,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StageEvent {
    pub stage: WorkerStage,
    pub message: String,
    pub elapsed_s: f64,
    /// Only on `training`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_examples: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_examples: Option<u64>,
    /// Only on `training`: the run continued from the checkpoint at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from_step: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct MetricsEvent {
    pub step: u32,
    pub total_steps: u32,
    pub epoch: f64,
    pub train_loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    #[serde(default)]
    pub gpu_util: Option<f64>,
    pub elapsed_s: f64,
    /// GPU memory in use (NVML), GiB; absent on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_gb: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct EvalEvent {
    pub step: u32,
    pub epoch: f64,
    pub eval_loss: f64,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum WorkerResult {
    Succeeded {
        /// `deadline` when training stopped at the time limit (the adapter so far was saved).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stopped_early: Option<String>,
        files: Vec<UploadedFile>,
        metrics: FinalMetrics,
        quantization_used: String,
        device: String,
        /// Answers to held-out prompts from the base model and from the adapter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        samples: Option<Vec<Sample>>,
    },
    Failed {
        error_code: String,
        message: String,
        hint: String,
    },
}

/// An answer to one held-out prompt, greedy, from the base model and from the adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Sample {
    /// The conversation up to the reply, as plain text.
    pub prompt: String,
    /// The dataset's own reply.
    pub reference: String,
    pub base: String,
    pub adapter: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct UploadedFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct FinalMetrics {
    pub final_train_loss: f64,
    #[serde(default)]
    pub final_eval_loss: Option<f64>,
    pub total_steps: u32,
    pub train_runtime_s: f64,
    pub tokens_per_sec: f64,
    pub train_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/worker/contract/examples/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    /// The worker's own example files parse into our types and serialise back unchanged:
    /// no key drift between the two sides.
    #[test]
    fn worker_examples_round_trip() {
        let input: WorkerInput = serde_json::from_value(example("input.json")).unwrap();
        assert_eq!(input.contract_version, CONTRACT_VERSION);
        assert_eq!(serde_json::to_value(&input).unwrap(), example("input.json"));
        for name in [
            "stage.json",
            "metrics.json",
            "eval.json",
            "checkpoint.json",
            "result_succeeded.json",
            "result_failed.json",
        ] {
            let raw = example(name);
            let event: WorkerEvent = serde_json::from_value(raw.clone())
                .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
            assert_eq!(serde_json::to_value(&event).unwrap(), raw, "{name}");
        }
    }
}
