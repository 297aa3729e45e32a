//! The cost and duration estimate: a pure function, compiled into the WASM so the Train page
//! updates it on every keystroke without a request, and run again by the server at creation.
//!
//! Model:
//! - tokens per epoch = the dataset's tokens, each example truncated to `max_seq_len`
//!   (approximated from the total: `min(total, examples × max_seq_len)`), minus the eval split;
//! - steps per epoch = ⌈train examples ÷ (batch × accumulation × GPUs)⌉;
//! - throughput = the GPU's tokens/s for the model's size class and quantization × GPUs × a
//!   scaling efficiency of 0.9 per doubling;
//! - compute = tokens processed ÷ throughput, plus eval passes (a forward pass ≈ ⅓ of a step);
//! - overhead = cold start (serverless), model download and load (grows with size), save and
//!   upload of the adapter;
//! - billing is per second: cost = ⌈seconds⌉ × price × GPUs;
//! - the range is −20 % / +35 % around the point estimate (published throughput varies that
//!   much with sequence packing, GPU clocks and data), until calibration narrows it.

use serde::{Deserialize, Serialize};

use super::{Backend, BaseModel, GpuType, Hyperparameters, SizeClass};

/// What the estimate needs from the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DatasetSize {
    pub examples: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Range {
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Breakdown {
    pub compute: f64,
    /// Cold start and model download/load.
    pub startup: f64,
    /// Keeping the adapter in object storage for a month.
    pub storage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Estimate {
    /// Total cost in dollars.
    pub cost: Range,
    /// Wall-clock seconds from start to adapter uploaded.
    pub duration_seconds: Range,
    /// The point estimate's cost, by part.
    pub breakdown: Breakdown,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub tokens_processed: u64,
    pub tokens_per_second: f64,
    /// Finished jobs that measured `tokens_per_second` (0: the catalog's public figure).
    #[serde(default)]
    pub throughput_measured_jobs: u32,
    pub price_per_hour: f64,
    pub billed_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EstimateError {
    /// The GPU has no throughput figure for this model size and quantization.
    Unsupported,
    NoExamples,
}

const LOW: f64 = 0.80;
const HIGH: f64 = 1.35;
/// Serverless cold start before the handler runs.
const COLD_START_S: f64 = 45.0;
/// Seconds per billion parameters to download and load the base model (≈ 200 MB/s effective).
const LOAD_S_PER_B: f64 = 10.0;
const SAVE_UPLOAD_S: f64 = 20.0;

/// Throughput multiplier for `gpus` GPUs (data parallel): 0.9 per doubling.
pub fn scaling(gpus: u32) -> f64 {
    let gpus = f64::from(gpus.max(1));
    gpus * 0.9f64.powf(gpus.log2())
}

/// LoRA adapter size in bytes: two rank-r matrices per adapted projection (q, k, v, o, and the
/// three MLP ones), in bf16. Layer geometry is approximated from the parameter count.
pub fn adapter_bytes(model: &BaseModel, rank: u32) -> f64 {
    // For Llama-like models hidden ≈ (params / (12 × layers))^½ and layers ≈ 32 at 8B.
    let params = model.parameters_b * 1e9;
    let layers = (32.0 * (model.parameters_b / 8.0).powf(0.3)).max(2.0);
    let hidden = (params / (12.0 * layers)).sqrt();
    7.0 * 2.0 * f64::from(rank) * hidden * layers * 2.0
}

pub fn estimate(
    dataset: DatasetSize,
    model: &BaseModel,
    gpu: &GpuType,
    gpu_count: u32,
    hp: &Hyperparameters,
) -> Result<Estimate, EstimateError> {
    if dataset.examples == 0 {
        return Err(EstimateError::NoExamples);
    }
    let per_gpu = gpu
        .tokens_per_second(SizeClass::of(model.parameters_b), hp.quantization)
        .ok_or(EstimateError::Unsupported)?;
    let gpus = gpu_count.max(1);
    let throughput = per_gpu * scaling(gpus);

    let tokens = dataset
        .total_tokens
        .min(dataset.examples.saturating_mul(u64::from(hp.max_seq_len))) as f64;
    let train_share = 1.0 - hp.eval_fraction;
    let train_examples = ((dataset.examples as f64) * train_share).ceil().max(1.0) as u64;
    let effective_batch = u64::from(hp.batch_size.max(1))
        * u64::from(hp.gradient_accumulation_steps.max(1))
        * u64::from(gpus);
    let steps_per_epoch = train_examples.div_ceil(effective_batch);
    let total_steps = steps_per_epoch * u64::from(hp.epochs);
    let train_tokens = tokens * train_share * f64::from(hp.epochs);
    let eval_tokens = tokens * hp.eval_fraction * f64::from(hp.epochs);
    let compute_s = (train_tokens + eval_tokens / 3.0) / throughput;

    let cold_start = if gpu.backend == Backend::Runpod {
        COLD_START_S
    } else {
        5.0
    };
    let startup_s = cold_start + LOAD_S_PER_B * model.parameters_b;
    let total_s = compute_s + startup_s + SAVE_UPLOAD_S;

    let rate = gpu.price_per_second * f64::from(gpus);
    let billed = |seconds: f64| seconds.ceil();
    let storage = crate::costs::storage_cost(adapter_bytes(model, hp.rank));
    let compute_cost = billed(compute_s) * rate;
    let startup_cost = billed(startup_s + SAVE_UPLOAD_S) * rate;
    let cost_at = |factor: f64| billed(compute_s * factor) * rate + startup_cost + storage;

    Ok(Estimate {
        cost: Range {
            low: cost_at(LOW),
            high: cost_at(HIGH),
        },
        duration_seconds: Range {
            low: compute_s * LOW + startup_s + SAVE_UPLOAD_S,
            high: compute_s * HIGH + startup_s + SAVE_UPLOAD_S,
        },
        breakdown: Breakdown {
            compute: compute_cost,
            startup: startup_cost,
            storage,
        },
        steps_per_epoch,
        total_steps,
        tokens_processed: (train_tokens + eval_tokens).round() as u64,
        tokens_per_second: throughput,
        throughput_measured_jobs: gpu
            .measured
            .get(&format!(
                "{}_{}",
                SizeClass::of(model.parameters_b).as_str(),
                hp.quantization.as_str()
            ))
            .copied()
            .unwrap_or(0),
        price_per_hour: gpu.price_per_hour(gpus),
        billed_seconds: billed(total_s) as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::training::{PresetName, Quantization};

    fn a100() -> GpuType {
        GpuType {
            id: "A100".into(),
            name: "A100".into(),
            backend: Backend::Runpod,
            memory_gb: 80,
            price_per_second: 0.00076,
            throughput: BTreeMap::from([("medium_nf4".to_owned(), 2500.0)]),
            available: true,
            unavailable_reason: None,
            max_count: 1,
            measured: BTreeMap::new(),
        }
    }

    fn llama8b() -> BaseModel {
        BaseModel {
            id: "llama".into(),
            name: "Llama 8B".into(),
            source: "x".into(),
            parameters_b: 8.0,
            context_length: 8192,
            chat_template: "llama-3".into(),
            demo: false,
            shape: None,
            presets: Default::default(),
        }
    }

    fn balanced() -> Hyperparameters {
        Hyperparameters {
            eval_fraction: 0.0,
            ..PresetName::Balanced.hyperparameters()
        }
    }

    const DATA: DatasetSize = DatasetSize {
        examples: 1000,
        total_tokens: 1_000_000,
    };

    #[test]
    fn a_worked_estimate() {
        // 1,000 examples, 1,000,000 tokens, 3 epochs, no eval split, one A100 at 2,500 tok/s:
        // 3,000,000 tokens → 1,200 s of compute; startup 45 + 10 × 8 = 125 s; save 20 s.
        // Effective batch 4 × 4 = 16 → 63 steps per epoch, 189 in all.
        let e = estimate(DATA, &llama8b(), &a100(), 1, &balanced()).unwrap();
        assert_eq!(e.tokens_processed, 3_000_000);
        assert_eq!(e.steps_per_epoch, 63);
        assert_eq!(e.total_steps, 189);
        assert_eq!(e.billed_seconds, 1_200 + 125 + 20);
        assert!((e.breakdown.compute - 1_200.0 * 0.00076).abs() < 1e-9); // $0.912
        assert!((e.breakdown.startup - 145.0 * 0.00076).abs() < 1e-9); // $0.1102
        assert!((e.price_per_hour - 2.736).abs() < 1e-9);
        // Range: compute × 0.8 … × 1.35, the rest unchanged.
        assert!(
            (e.cost.low - (960.0 * 0.00076 + 145.0 * 0.00076 + e.breakdown.storage)).abs() < 1e-9
        );
        assert!(
            (e.cost.high - (1_620.0 * 0.00076 + 145.0 * 0.00076 + e.breakdown.storage)).abs()
                < 1e-9
        );
        assert!(e.cost.low < e.cost.high);
        assert!(e.breakdown.storage > 0.0 && e.breakdown.storage < 0.01);
    }

    #[test]
    fn doubling_epochs_doubles_compute_time() {
        let one = estimate(DATA, &llama8b(), &a100(), 1, &balanced()).unwrap();
        let twice = estimate(
            DATA,
            &llama8b(),
            &a100(),
            1,
            &Hyperparameters {
                epochs: 6,
                ..balanced()
            },
        )
        .unwrap();
        assert!((twice.breakdown.compute - 2.0 * one.breakdown.compute).abs() < 1e-9);
        assert_eq!(twice.total_steps, 2 * one.total_steps);
        assert_eq!(twice.tokens_processed, 2 * one.tokens_processed);
    }

    #[test]
    fn more_gpus_shorten_the_run() {
        let one = estimate(DATA, &llama8b(), &a100(), 1, &balanced()).unwrap();
        let four = estimate(DATA, &llama8b(), &a100(), 4, &balanced()).unwrap();
        assert!(four.duration_seconds.high < one.duration_seconds.high);
        assert!(four.steps_per_epoch < one.steps_per_epoch);
        assert!((scaling(4) - 4.0 * 0.81).abs() < 1e-9);
        assert!((four.price_per_hour - 4.0 * one.price_per_hour).abs() < 1e-9);
    }

    #[test]
    fn more_tokens_cost_more() {
        let small = estimate(DATA, &llama8b(), &a100(), 1, &balanced()).unwrap();
        let big = estimate(
            DatasetSize {
                examples: 1000,
                total_tokens: 1_500_000,
            },
            &llama8b(),
            &a100(),
            1,
            &balanced(),
        )
        .unwrap();
        assert!(big.cost.low > small.cost.low && big.cost.high > small.cost.high);
    }

    #[test]
    fn sequences_are_truncated_to_max_seq_len() {
        let long = DatasetSize {
            examples: 10,
            total_tokens: 100_000,
        };
        let hp = Hyperparameters {
            max_seq_len: 2048,
            epochs: 1,
            ..balanced()
        };
        let e = estimate(long, &llama8b(), &a100(), 1, &hp).unwrap();
        assert_eq!(e.tokens_processed, 20_480);
    }

    #[test]
    fn unsupported_and_empty_inputs_are_errors() {
        let hp = Hyperparameters {
            quantization: Quantization::None,
            ..balanced()
        };
        assert_eq!(
            estimate(DATA, &llama8b(), &a100(), 1, &hp),
            Err(EstimateError::Unsupported)
        );
        let empty = DatasetSize {
            examples: 0,
            total_tokens: 0,
        };
        assert_eq!(
            estimate(empty, &llama8b(), &a100(), 1, &balanced()),
            Err(EstimateError::NoExamples)
        );
    }
}
