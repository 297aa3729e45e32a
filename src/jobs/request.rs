//! A job as scripts ask for it (`POST /api/jobs`, `POST /api/jobs/estimate`): a preset plus any
//! subset of hyperparameters, the GPU optional, and the original's field names accepted as
//! aliases (DESIGN §6.1). [`JobRequest::resolve`] merges it over the preset into the complete
//! [`NewJob`] that the form sends and the rules check, saying what it chose or adapted.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::NewJob;
use crate::training::{
    Backend, Catalog, Hyperparameters, PresetName, Quantization, SizeClass, TrainingConfig,
    memory_needed_gb,
};
use crate::validation::FieldErrors;

/// `POST /api/jobs` and `POST /api/jobs/estimate`. Unknown fields are refused by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub dataset_id: Uuid,
    #[serde(alias = "model", alias = "model_id", alias = "base_model_id")]
    pub base_model: String,
    /// `fast`, `balanced` (the default), `quality` or `custom` (balanced values).
    #[serde(default, alias = "preset_id", skip_serializing_if = "Option::is_none")]
    pub preset: Option<PresetName>,
    /// Any subset; each given field replaces the preset's.
    #[serde(default, skip_serializing_if = "HyperparameterInput::is_empty")]
    pub hyperparameters: HyperparameterInput,
    /// Unset: the cheapest available GPU type that can run the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u32>,
    /// The original's spelling of `gpu_type` and `gpu_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_config: Option<GpuConfig>,
    #[serde(
        default,
        alias = "budget_limit",
        alias = "max_budget",
        skip_serializing_if = "Option::is_none"
    )]
    pub budget_cap: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm_low_budget: bool,
}

/// The original's `gpu_config: {type, count}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    #[serde(
        default,
        rename = "type",
        alias = "gpu_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu_type: Option<String>,
    #[serde(default, alias = "gpu_count", skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// Hyperparameters a request sets; the rest come from the preset. Aliases are the names the
/// original and common trainers (PEFT, transformers) use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HyperparameterInput {
    #[serde(default, alias = "lr", skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(
        default,
        alias = "per_device_train_batch_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub batch_size: Option<u32>,
    #[serde(
        default,
        alias = "gradient_accumulation",
        skip_serializing_if = "Option::is_none"
    )]
    pub gradient_accumulation_steps: Option<u32>,
    #[serde(
        default,
        alias = "num_epochs",
        alias = "num_train_epochs",
        skip_serializing_if = "Option::is_none"
    )]
    pub epochs: Option<u32>,
    #[serde(
        default,
        alias = "lora_rank",
        alias = "lora_r",
        alias = "r",
        skip_serializing_if = "Option::is_none"
    )]
    pub rank: Option<u32>,
    #[serde(default, alias = "lora_alpha", skip_serializing_if = "Option::is_none")]
    pub alpha: Option<u32>,
    #[serde(
        default,
        alias = "lora_dropout",
        skip_serializing_if = "Option::is_none"
    )]
    pub dropout: Option<f64>,
    #[serde(
        default,
        alias = "max_seq_length",
        alias = "max_length",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_seq_len: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    #[serde(
        default,
        alias = "eval_split",
        alias = "validation_split",
        skip_serializing_if = "Option::is_none"
    )]
    pub eval_fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl HyperparameterInput {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with every field this input sets replaced.
    pub fn over(&self, base: Hyperparameters) -> Hyperparameters {
        Hyperparameters {
            learning_rate: self.learning_rate.unwrap_or(base.learning_rate),
            batch_size: self.batch_size.unwrap_or(base.batch_size),
            gradient_accumulation_steps: self
                .gradient_accumulation_steps
                .unwrap_or(base.gradient_accumulation_steps),
            epochs: self.epochs.unwrap_or(base.epochs),
            rank: self.rank.unwrap_or(base.rank),
            alpha: self.alpha.unwrap_or(base.alpha),
            dropout: self.dropout.unwrap_or(base.dropout),
            max_seq_len: self.max_seq_len.unwrap_or(base.max_seq_len),
            warmup_ratio: self.warmup_ratio.unwrap_or(base.warmup_ratio),
            quantization: self.quantization.unwrap_or(base.quantization),
            eval_fraction: self.eval_fraction.unwrap_or(base.eval_fraction),
            seed: self.seed.unwrap_or(base.seed),
        }
    }
}

/// Something the merge chose or changed that the request did not say; shown with the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Adjustment {
    pub field: String,
    pub message: String,
}

/// A request merged over its preset: the complete job and what the merge decided.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedJob {
    pub job: NewJob,
    pub adjustments: Vec<Adjustment>,
}

impl JobRequest {
    /// Merges the request over its preset (adjusted for the model) and fills the GPU: the one
    /// asked for, else the cheapest available type that can train the model. A preset's nf4 on a
    /// GPU type that trains plain LoRA only (the local executor without CUDA) becomes `none`;
    /// a quantization the request set itself is kept and checked like any other field.
    /// The result still goes through [`crate::training::check_config`].
    pub fn resolve(&self, catalog: &Catalog) -> Result<ResolvedJob, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut adjustments = Vec::new();
        let preset = self.preset.unwrap_or(PresetName::Balanced);
        let model = catalog.model(&self.base_model);
        let preset_values = model.map_or_else(|| preset.hyperparameters(), |m| m.preset(preset));
        let mut hyperparameters = self.hyperparameters.over(preset_values);

        let config = self.gpu_config.clone().unwrap_or_default();
        let gpu_type = pick("gpu_type", &self.gpu_type, &config.gpu_type, &mut errors);
        let gpu_count = pick("gpu_count", &self.gpu_count, &config.count, &mut errors).unwrap_or(1);
        let quantization_set = self.hyperparameters.quantization.is_some();

        let gpu_type = match (gpu_type, model) {
            (Some(id), _) => id,
            (None, Some(model)) => {
                let size = SizeClass::of(model.parameters_b);
                // The cheapest available type that runs the job as asked, or with the preset's
                // quantization adapted.
                let runs = |gpu: &crate::training::GpuType, hp: &Hyperparameters| {
                    gpu.available
                        && gpu.tokens_per_second(size, hp.quantization).is_some()
                        && memory_needed_gb(model, hp)
                            <= f64::from(gpu.memory_gb) * f64::from(gpu_count)
                };
                let plain = Hyperparameters {
                    quantization: Quantization::None,
                    ..hyperparameters
                };
                let cheapest = catalog
                    .gpus
                    .iter()
                    .filter(|g| runs(g, &hyperparameters) || (!quantization_set && runs(g, &plain)))
                    .min_by(|a, b| a.price_per_second.total_cmp(&b.price_per_second));
                match cheapest {
                    Some(gpu) => {
                        adjustments.push(Adjustment {
                            field: "gpu_type".into(),
                            message: format!(
                                "{} ({}): the cheapest available GPU type that can train {}.",
                                gpu.id, gpu.name, model.name
                            ),
                        });
                        gpu.id.clone()
                    }
                    None => {
                        errors.add(
                            "gpu_type",
                            format!(
                                "No available GPU type can train {} with these settings; lower batch_size or \
                                 max_seq_len, or choose a gpu_type from GET /api/catalog.",
                                model.name
                            ),
                        );
                        String::new()
                    }
                }
            }
            // An unknown model: check_config names it.
            (None, None) => String::new(),
        };

        if let (Some(model), Some(gpu)) = (model, catalog.gpu(&gpu_type)) {
            let size = SizeClass::of(model.parameters_b);
            if !quantization_set
                && hyperparameters.quantization == Quantization::Nf4
                && gpu.tokens_per_second(size, Quantization::Nf4).is_none()
                && gpu.tokens_per_second(size, Quantization::None).is_some()
            {
                hyperparameters.quantization = Quantization::None;
                adjustments.push(Adjustment {
                    field: "hyperparameters.quantization".into(),
                    message: format!(
                        "none: {} trains plain LoRA{}; the preset's nf4 needs a CUDA GPU.",
                        gpu.name,
                        if gpu.backend == Backend::Local {
                            " (the local executor)"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
        errors.into_result()?;
        Ok(ResolvedJob {
            job: NewJob {
                dataset_id: self.dataset_id,
                config: TrainingConfig {
                    base_model: self.base_model.clone(),
                    preset: if self.hyperparameters.is_empty() {
                        preset
                    } else {
                        PresetName::Custom
                    },
                    hyperparameters,
                    gpu_type,
                    gpu_count,
                },
                budget_cap: self.budget_cap,
                confirm_low_budget: self.confirm_low_budget,
            },
            adjustments,
        })
    }
}

/// Our field or the original's spelling of it; both given and different is an error.
fn pick<T: Clone + PartialEq>(
    field: &str,
    ours: &Option<T>,
    original: &Option<T>,
    errors: &mut FieldErrors,
) -> Option<T> {
    match (ours, original) {
        (Some(a), Some(b)) if a != b => {
            errors.add(
                field,
                format!("{field} and gpu_config disagree; send one of them."),
            );
            None
        }
        (Some(v), _) | (None, Some(v)) => Some(v.clone()),
        (None, None) => None,
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use crate::training::check_config;

    fn request(body: serde_json::Value) -> Result<JobRequest, serde_json::Error> {
        serde_json::from_value(body)
    }

    const DATASET: &str = "6f1b8a5e-0c47-4a44-8a53-0d9a4f6c2a11";

    #[test]
    fn a_preset_alone_fills_every_hyperparameter_and_the_gpu() {
        let catalog = Catalog::builtin();
        let model = &catalog.models[0];
        let r = request(serde_json::json!({
            "dataset_id": DATASET, "base_model": model.id, "preset": "fast"
        }))
        .unwrap();
        let resolved = r.resolve(&catalog).unwrap();
        assert_eq!(resolved.job.config.preset, PresetName::Fast);
        let expected = model.preset(PresetName::Fast);
        let hp = resolved.job.config.hyperparameters;
        assert_eq!(
            Hyperparameters {
                quantization: expected.quantization,
                ..hp
            },
            expected,
            "only the quantization may be adapted"
        );
        assert!(
            resolved.adjustments.iter().any(|a| a.field == "gpu_type"),
            "the chosen GPU is said: {:?}",
            resolved.adjustments
        );
        check_config(&resolved.job.config, &catalog).expect("a resolved preset is valid");
    }

    #[test]
    fn the_originals_body_is_accepted_and_merged_over_the_preset() {
        let catalog = Catalog::builtin();
        let model = &catalog.models[0];
        let gpu = catalog.gpus.iter().find(|g| g.available).unwrap();
        let r = request(serde_json::json!({
            "dataset_id": DATASET,
            "model": model.id,
            "preset_id": "quality",
            "gpu_config": {"type": gpu.id, "count": 1},
            "hyperparameters": {"num_epochs": 2, "lora_rank": 4, "lora_alpha": 8, "lr": 0.0003},
            "budget_limit": 5.0
        }))
        .unwrap();
        let resolved = r.resolve(&catalog).unwrap();
        let hp = resolved.job.config.hyperparameters;
        assert_eq!(
            (hp.epochs, hp.rank, hp.alpha, hp.learning_rate),
            (2, 4, 8, 0.0003)
        );
        let quality = model.preset(PresetName::Quality);
        assert_eq!(
            (hp.batch_size, hp.gradient_accumulation_steps),
            (quality.batch_size, quality.gradient_accumulation_steps)
        );
        assert_eq!(resolved.job.config.preset, PresetName::Custom);
        assert_eq!(resolved.job.config.gpu_type, gpu.id);
        assert_eq!(resolved.job.budget_cap, Some(5.0));
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let top = request(serde_json::json!({
            "dataset_id": DATASET, "base_model": "m", "epochz": 3
        }))
        .unwrap_err();
        assert!(top.to_string().contains("unknown field `epochz`"), "{top}");
        let nested = request(serde_json::json!({
            "dataset_id": DATASET, "base_model": "m", "hyperparameters": {"ranc": 3}
        }))
        .unwrap_err();
        assert!(
            nested.to_string().contains("unknown field `ranc`"),
            "{nested}"
        );
    }

    #[test]
    fn gpu_type_and_gpu_config_must_agree() {
        let catalog = Catalog::builtin();
        let r = request(serde_json::json!({
            "dataset_id": DATASET, "base_model": catalog.models[0].id,
            "gpu_type": "a", "gpu_config": {"type": "b"}
        }))
        .unwrap();
        let errors = r.resolve(&catalog).unwrap_err();
        assert!(errors.0.contains_key("gpu_type"), "{errors:?}");
    }

    #[test]
    fn a_preset_runs_on_a_gpu_type_that_trains_plain_lora_only() {
        let mut catalog = Catalog::builtin();
        let model = catalog.models[0].clone();
        let size = SizeClass::of(model.parameters_b).as_str();
        // A type like the local executor without CUDA: plain LoRA only.
        let gpu = &mut catalog.gpus[0];
        gpu.available = true;
        gpu.memory_gb = 1024;
        gpu.throughput.clear();
        gpu.throughput.insert(format!("{size}_none"), 1000.0);
        let id = gpu.id.clone();
        for preset in ["fast", "balanced", "quality"] {
            let r = request(serde_json::json!({
                "dataset_id": DATASET, "base_model": model.id, "preset": preset, "gpu_type": id
            }))
            .unwrap();
            let resolved = r.resolve(&catalog).unwrap();
            assert_eq!(
                resolved.job.config.hyperparameters.quantization,
                Quantization::None
            );
            assert!(
                resolved
                    .adjustments
                    .iter()
                    .any(|a| a.field == "hyperparameters.quantization")
            );
            check_config(&resolved.job.config, &catalog).expect("adapted preset is valid");
        }
        // Asked for explicitly, nf4 stays and the rules refuse it.
        let r = request(serde_json::json!({
            "dataset_id": DATASET, "base_model": model.id, "gpu_type": id,
            "hyperparameters": {"quantization": "nf4"}
        }))
        .unwrap();
        let resolved = r.resolve(&catalog).unwrap();
        assert_eq!(
            resolved.job.config.hyperparameters.quantization,
            Quantization::Nf4
        );
        assert!(check_config(&resolved.job.config, &catalog).is_err());
    }
}
