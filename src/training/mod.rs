//! Training configuration: the catalog (GPU types, base models), the presets, the one set of
//! rules, and the cost/duration estimator. All pure: the same code runs in the browser (live
//! estimate on every keystroke, field errors as you type) and on the server (authoritative).

#[cfg(feature = "ssr")]
pub mod calibration;
pub mod estimate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validation::FieldErrors;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    /// QLoRA: 4-bit NormalFloat base weights (bitsandbytes, CUDA only).
    Nf4,
    /// Plain LoRA on bf16/fp32 base weights.
    None,
}

impl Quantization {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nf4 => "nf4",
            Self::None => "none",
        }
    }

    /// Bytes per base-model parameter held in GPU memory.
    fn bytes_per_parameter(self) -> f64 {
        match self {
            Self::Nf4 => 0.6,
            Self::None => 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Runpod,
    Local,
}

/// Model size classes that throughput figures are given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SizeClass {
    /// Under 1B parameters.
    Tiny,
    /// 1–4B.
    Small,
    /// 4–10B (7–8B models).
    Medium,
    /// 10–20B.
    Large,
    /// Over 20B.
    Xl,
}

impl SizeClass {
    pub fn of(parameters_b: f64) -> Self {
        match parameters_b {
            p if p < 1.0 => Self::Tiny,
            p if p < 4.0 => Self::Small,
            p if p < 10.0 => Self::Medium,
            p if p < 20.0 => Self::Large,
            _ => Self::Xl,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
            Self::Medium => "medium",
            Self::Large => "large",
            Self::Xl => "xl",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct GpuType {
    pub id: String,
    pub name: String,
    pub backend: Backend,
    pub memory_gb: u32,
    /// Dollars per GPU per second (per-second billing).
    pub price_per_second: f64,
    /// Training tokens/s on one GPU, keyed `{size}_{quantization}` (e.g. `medium_nf4`); a
    /// missing key means the combination is not offered on this GPU.
    pub throughput: BTreeMap<String, f64>,
    /// Whether this server can run jobs on it (its backend is configured); an unavailable
    /// type can still be estimated.
    #[serde(default = "available_by_default")]
    pub available: bool,
    /// Why an unavailable type cannot run here and what fixes it (e.g. the local executor's
    /// Python lacks torch: `lora-pipeline worker install`); set by the server at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// How many GPUs of this type one job may use ([`bounds::GPU_COUNT`]; not settable in a
    /// catalog file until the worker trains on several).
    #[serde(skip_deserializing, default = "max_gpus_per_job")]
    pub max_count: u32,
    /// Cells of `throughput` measured from finished jobs: key → how many jobs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub measured: BTreeMap<String, u32>,
}

fn available_by_default() -> bool {
    true
}

fn max_gpus_per_job() -> u32 {
    bounds::GPU_COUNT.1
}

impl GpuType {
    pub fn tokens_per_second(&self, size: SizeClass, quantization: Quantization) -> Option<f64> {
        self.throughput
            .get(&format!("{}_{}", size.as_str(), quantization.as_str()))
            .copied()
            .filter(|t| *t > 0.0)
    }

    pub fn price_per_hour(&self, count: u32) -> f64 {
        self.price_per_second * 3600.0 * f64::from(count)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BaseModel {
    pub id: String,
    pub name: String,
    /// A Hugging Face id or a local path; what the worker loads.
    pub source: String,
    /// Billions of parameters.
    pub parameters_b: f64,
    pub context_length: u32,
    pub chat_template: String,
    /// The demo model (random weights): labelled as such wherever it appears.
    #[serde(default)]
    pub demo: bool,
    /// The architecture's dimensions, for the memory estimate; without them a rougher rule is
    /// used.
    #[serde(default)]
    pub shape: Option<ModelShape>,
    /// Presets adjusted for this model (`[model.presets.fast]`): fields over the preset's own.
    #[serde(default, skip_serializing_if = "ModelPresets::is_empty")]
    pub presets: ModelPresets,
}

/// A model's adjustments of the Fast, Balanced and Quality presets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ModelPresets {
    #[serde(default)]
    pub fast: Option<PresetOverride>,
    #[serde(default)]
    pub balanced: Option<PresetOverride>,
    #[serde(default)]
    pub quality: Option<PresetOverride>,
}

impl ModelPresets {
    pub fn is_empty(&self) -> bool {
        self.fast.is_none() && self.balanced.is_none() && self.quality.is_none()
    }
}

/// The fields a model changes in a preset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PresetOverride {
    pub learning_rate: Option<f64>,
    pub batch_size: Option<u32>,
    pub gradient_accumulation_steps: Option<u32>,
    pub epochs: Option<u32>,
    pub rank: Option<u32>,
    pub alpha: Option<u32>,
}

impl BaseModel {
    /// The preset's hyperparameters for this model.
    pub fn preset(&self, preset: PresetName) -> Hyperparameters {
        let base = preset.hyperparameters();
        let tweak = match preset {
            PresetName::Fast => self.presets.fast,
            PresetName::Balanced => self.presets.balanced,
            PresetName::Quality => self.presets.quality,
            PresetName::Custom => None,
        };
        let Some(t) = tweak else {
            return base;
        };
        Hyperparameters {
            learning_rate: t.learning_rate.unwrap_or(base.learning_rate),
            batch_size: t.batch_size.unwrap_or(base.batch_size),
            gradient_accumulation_steps: t
                .gradient_accumulation_steps
                .unwrap_or(base.gradient_accumulation_steps),
            epochs: t.epochs.unwrap_or(base.epochs),
            rank: t.rank.unwrap_or(base.rank),
            alpha: t.alpha.unwrap_or(base.alpha),
            ..base
        }
    }
}

/// A decoder's dimensions (its `config.json`: hidden_size, intermediate_size,
/// num_hidden_layers, num_key_value_heads × head_dim, vocab_size).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ModelShape {
    pub hidden: u32,
    pub intermediate: u32,
    pub layers: u32,
    /// Width of the key and value projections (grouped-query attention makes it narrower).
    pub kv: u32,
    pub vocab: u32,
}

/// What the operator offers: GPU types and base models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Catalog {
    #[serde(rename = "gpu")]
    pub gpus: Vec<GpuType>,
    #[serde(rename = "model")]
    pub models: Vec<BaseModel>,
    /// What one account may spend and run (`[limits]`; the defaults when absent).
    #[serde(default)]
    pub limits: crate::costs::Limits,
}

/// Finished jobs a throughput cell needs before measurements replace the catalog's figure.
pub const MIN_CALIBRATION_JOBS: u32 = 3;

/// Throughput measured by finished jobs of one GPU type, base model and quantization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Measurement {
    pub gpu_type: String,
    pub base_model: String,
    pub quantization: Quantization,
    /// Median training tokens/s per GPU.
    pub tokens_per_sec: f64,
    pub jobs: u32,
}

/// The built-in catalog, as TOML (an operator's file has the same shape).
pub const BUILTIN_CATALOG: &str = include_str!("catalog.toml");

impl Catalog {
    /// The built-in catalog (it is tested to parse).
    #[cfg(feature = "ssr")]
    pub fn builtin() -> Self {
        Self::from_toml(BUILTIN_CATALOG).expect("the built-in catalog is valid TOML")
    }

    /// Parses an operator's catalog file.
    #[cfg(feature = "ssr")]
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// This catalog with throughput replaced by what finished jobs measured: a cell takes the
    /// jobs-weighted median tokens/s per GPU of its GPU type, model size class and quantization
    /// once at least [`MIN_CALIBRATION_JOBS`] jobs measured it.
    pub fn calibrated(&self, measurements: &[Measurement]) -> Self {
        let mut catalog = self.clone();
        // (gpu, cell) → (Σ jobs × tokens/s, Σ jobs)
        let mut cells: BTreeMap<(String, String), (f64, u32)> = BTreeMap::new();
        for m in measurements {
            let Some(model) = self.model(&m.base_model) else {
                continue;
            };
            if !(m.tokens_per_sec.is_finite() && m.tokens_per_sec > 0.0) {
                continue;
            }
            let key = format!(
                "{}_{}",
                SizeClass::of(model.parameters_b).as_str(),
                m.quantization.as_str()
            );
            let cell = cells.entry((m.gpu_type.clone(), key)).or_default();
            cell.0 += m.tokens_per_sec * f64::from(m.jobs);
            cell.1 += m.jobs;
        }
        for ((gpu, key), (weighted, jobs)) in cells {
            if jobs < MIN_CALIBRATION_JOBS {
                continue;
            }
            if let Some(gpu) = catalog.gpus.iter_mut().find(|g| g.id == gpu) {
                gpu.throughput
                    .insert(key.clone(), weighted / f64::from(jobs));
                gpu.measured.insert(key, jobs);
            }
        }
        catalog
    }

    pub fn gpu(&self, id: &str) -> Option<&GpuType> {
        self.gpus.iter().find(|g| g.id == id)
    }

    pub fn model(&self, id: &str) -> Option<&BaseModel> {
        self.models.iter().find(|m| m.id == id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PresetName {
    Fast,
    Balanced,
    Quality,
    Custom,
}

/// Every knob of a LoRA run, exactly as the worker receives it (DESIGN §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Hyperparameters {
    pub learning_rate: f64,
    pub batch_size: u32,
    pub gradient_accumulation_steps: u32,
    pub epochs: u32,
    pub rank: u32,
    pub alpha: u32,
    pub dropout: f64,
    pub max_seq_len: u32,
    pub warmup_ratio: f64,
    pub quantization: Quantization,
    pub eval_fraction: f64,
    pub seed: u64,
}

impl PresetName {
    /// The presets. The original's values (Fast 1e-4/8/1/8/16/0.05, Balanced 5e-5/4/3/16/32/0.1,
    /// Quality 3e-5/2/5/32/64/0.1) are kept except the learning rates: LoRA adapters learn well at
    /// 1e-4–2e-4 (the QLoRA paper uses 2e-4 for 7B), so 5e-5 and 3e-5 mostly waste GPU time. We
    /// use 2e-4, 1e-4 and 5e-5, with gradient accumulation keeping the effective batch at 16.
    pub fn hyperparameters(self) -> Hyperparameters {
        let base = Hyperparameters {
            learning_rate: 1e-4,
            batch_size: 4,
            gradient_accumulation_steps: 4,
            epochs: 3,
            rank: 16,
            alpha: 32,
            dropout: 0.1,
            max_seq_len: 2048,
            warmup_ratio: 0.03,
            quantization: Quantization::Nf4,
            eval_fraction: 0.05,
            seed: 42,
        };
        match self {
            Self::Fast => Hyperparameters {
                learning_rate: 2e-4,
                batch_size: 8,
                gradient_accumulation_steps: 2,
                epochs: 1,
                rank: 8,
                alpha: 16,
                dropout: 0.05,
                ..base
            },
            Self::Balanced | Self::Custom => base,
            Self::Quality => Hyperparameters {
                learning_rate: 5e-5,
                batch_size: 2,
                gradient_accumulation_steps: 8,
                epochs: 5,
                rank: 32,
                alpha: 64,
                ..base
            },
        }
    }
}

/// Bounds of every field, shared by the form and the server.
pub mod bounds {
    pub const LEARNING_RATE: (f64, f64) = (1e-6, 1e-2);
    pub const BATCH_SIZE: (u32, u32) = (1, 64);
    pub const GRADIENT_ACCUMULATION: (u32, u32) = (1, 64);
    pub const EPOCHS: (u32, u32) = (1, 20);
    pub const RANK: (u32, u32) = (1, 256);
    pub const ALPHA: (u32, u32) = (1, 512);
    pub const DROPOUT: (f64, f64) = (0.0, 0.5);
    pub const MAX_SEQ_LEN: (u32, u32) = (128, 32768);
    pub const WARMUP_RATIO: (f64, f64) = (0.0, 0.5);
    pub const EVAL_FRACTION: (f64, f64) = (0.0, 0.3);
    /// One GPU per job until the worker trains data-parallel: it uses GPU 0 only, so a second
    /// GPU would be billed but idle.
    pub const GPU_COUNT: (u32, u32) = (1, 1);
}

/// The whole configuration of a job, from the form to the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TrainingConfig {
    pub base_model: String,
    pub preset: PresetName,
    pub hyperparameters: Hyperparameters,
    pub gpu_type: String,
    pub gpu_count: u32,
}

/// Rows of logits the worker computes at once (its `LOSS_CHUNK`): only labelled positions go
/// through the output head, a chunk at a time.
const LOSS_CHUNK: f64 = 1024.0;

/// GPU memory a run needs, in GB, as the worker trains: the base weights at their precision;
/// the adapter in fp32 with its gradients and two Adam moments (16 bytes a parameter); the
/// activations of one micro-batch — with gradient checkpointing, which the worker turns on when
/// the full set would not fit, only each layer's input plus one layer's full set (the worker's
/// `activation_bytes`); one chunk of fp32 logits with its softmax and gradient; and a gigabyte
/// for the CUDA context and allocator slack.
pub fn memory_needed_gb(model: &BaseModel, hp: &Hyperparameters) -> f64 {
    let weights = model.parameters_b * hp.quantization.bytes_per_parameter();
    let Some(shape) = model.shape else {
        // No dimensions: a rule of thumb that grows with the model and the micro-batch.
        let activations =
            model.parameters_b.sqrt() * f64::from(hp.batch_size) * f64::from(hp.max_seq_len)
                / 4096.0;
        return weights * 1.15 + activations + 1.0;
    };
    let (h, i, kv) = (
        f64::from(shape.hidden),
        f64::from(shape.intermediate),
        f64::from(shape.kv),
    );
    let layers = f64::from(shape.layers);
    // LoRA on q, k, v, o, gate, up, down: r × (in + out) each.
    let adapter_params = f64::from(hp.rank) * (9.0 * h + 2.0 * kv + 3.0 * i) * layers;
    let tokens = f64::from(hp.batch_size) * f64::from(hp.max_seq_len);
    let layer_inputs = 2.0 * h * tokens * layers;
    let one_layer = 2.0 * (8.0 * h + 4.0 * i) * tokens;
    let logits = LOSS_CHUNK.min(tokens) * f64::from(shape.vocab) * 4.0 * 3.0;
    weights + (adapter_params * 16.0 + layer_inputs + one_layer + logits) / 1e9 + 1.0
}

/// The one set of rules: every field's bound, the model and GPU in the catalog, and whether
/// the model fits and runs on that GPU.
pub fn check_config(config: &TrainingConfig, catalog: &Catalog) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::new();
    let hp = &config.hyperparameters;
    let range_f = |errors: &mut FieldErrors, field: &str, value: f64, (lo, hi): (f64, f64)| {
        if !(value.is_finite() && value >= lo && value <= hi) {
            errors.add(field, format!("Use a value from {lo} to {hi}."));
        }
    };
    let range_u = |errors: &mut FieldErrors, field: &str, value: u32, (lo, hi): (u32, u32)| {
        if value < lo || value > hi {
            errors.add(field, format!("Use a whole number from {lo} to {hi}."));
        }
    };
    range_f(
        &mut errors,
        "learning_rate",
        hp.learning_rate,
        bounds::LEARNING_RATE,
    );
    range_u(&mut errors, "batch_size", hp.batch_size, bounds::BATCH_SIZE);
    range_u(
        &mut errors,
        "gradient_accumulation_steps",
        hp.gradient_accumulation_steps,
        bounds::GRADIENT_ACCUMULATION,
    );
    range_u(&mut errors, "epochs", hp.epochs, bounds::EPOCHS);
    range_u(&mut errors, "rank", hp.rank, bounds::RANK);
    range_u(&mut errors, "alpha", hp.alpha, bounds::ALPHA);
    range_f(&mut errors, "dropout", hp.dropout, bounds::DROPOUT);
    range_u(
        &mut errors,
        "max_seq_len",
        hp.max_seq_len,
        bounds::MAX_SEQ_LEN,
    );
    range_f(
        &mut errors,
        "warmup_ratio",
        hp.warmup_ratio,
        bounds::WARMUP_RATIO,
    );
    range_f(
        &mut errors,
        "eval_fraction",
        hp.eval_fraction,
        bounds::EVAL_FRACTION,
    );
    if config.gpu_count < bounds::GPU_COUNT.0 {
        errors.add("gpu_count", "Use at least 1 GPU.");
    } else if config.gpu_count > bounds::GPU_COUNT.1 {
        errors.add(
            "gpu_count",
            "One GPU per job for now: the worker trains on a single GPU, so a second would be billed but idle.",
        );
    }

    let model = catalog.model(&config.base_model);
    let gpu = catalog.gpu(&config.gpu_type);
    if model.is_none() {
        errors.add("base_model", "Choose a base model from the list.");
    }
    if gpu.is_none() {
        errors.add("gpu_type", "Choose a GPU type from the list.");
    }
    if let Some(gpu) = gpu.filter(|g| !g.available) {
        errors.add(
            "gpu_type",
            match gpu.backend {
                Backend::Runpod => format!(
                    "{} runs on RunPod, which this server is not configured for (RUNPOD_API_KEY, RUNPOD_ENDPOINT_ID). Choose the local executor.",
                    gpu.name
                ),
                Backend::Local => gpu.unavailable_reason.clone().unwrap_or_else(|| {
                    "This server runs no local executor; choose a RunPod GPU type.".to_owned()
                }),
            },
        );
    }
    if let (Some(model), Some(gpu)) = (model, gpu) {
        if hp.max_seq_len > model.context_length {
            errors.add(
                "max_seq_len",
                format!(
                    "{} handles at most {} tokens.",
                    model.name, model.context_length
                ),
            );
        }
        let size = SizeClass::of(model.parameters_b);
        if gpu.tokens_per_second(size, hp.quantization).is_none() {
            errors.add(
                "gpu_type",
                match hp.quantization {
                    Quantization::Nf4 if gpu.backend == Backend::Local => {
                        "The local executor runs plain LoRA: set quantization to none.".to_owned()
                    }
                    _ => format!(
                        "{} cannot train a {} model with {} quantization; choose a larger GPU{}.",
                        gpu.name,
                        size.as_str(),
                        hp.quantization.as_str(),
                        if hp.quantization == Quantization::None {
                            " or nf4"
                        } else {
                            ""
                        }
                    ),
                },
            );
        } else {
            let needed = memory_needed_gb(model, hp);
            let available = f64::from(gpu.memory_gb) * f64::from(config.gpu_count);
            if needed > available {
                errors.add(
                    "batch_size",
                    format!(
                        "This needs about {needed:.0} GB of GPU memory; {} × {} has {available:.0} GB. Lower the \
                         batch size or sequence length, use nf4, or pick a larger GPU.",
                        config.gpu_count, gpu.name
                    ),
                );
            }
        }
    }
    errors.into_result()
}

#[cfg(all(test, feature = "ssr"))]
mod tests;
