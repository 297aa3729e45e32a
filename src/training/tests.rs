//! The rules, presets and catalog.

use super::*;

fn catalog() -> Catalog {
    Catalog::builtin()
}

fn config(model: &str, gpu: &str, preset: PresetName) -> TrainingConfig {
    TrainingConfig {
        base_model: model.into(),
        preset,
        hyperparameters: preset.hyperparameters(),
        gpu_type: gpu.into(),
        gpu_count: 1,
    }
}

#[test]
fn presets_pass_the_rules_on_a_fitting_gpu() {
    for preset in [PresetName::Fast, PresetName::Balanced, PresetName::Quality] {
        assert_eq!(
            check_config(&config("llama-3.1-8b-instruct", "A100", preset), &catalog()),
            Ok(())
        );
        assert_eq!(
            check_config(&config("llama-3.1-8b-instruct", "4090", preset), &catalog()),
            Ok(())
        );
    }
}

#[test]
fn every_bound_is_enforced() {
    let mut c = config("llama-3.1-8b-instruct", "A100", PresetName::Custom);
    let hp = &mut c.hyperparameters;
    hp.learning_rate = 0.5;
    hp.batch_size = 0;
    hp.gradient_accumulation_steps = 65;
    hp.epochs = 21;
    hp.rank = 0;
    hp.alpha = 513;
    hp.dropout = 0.9;
    hp.max_seq_len = 64;
    hp.warmup_ratio = -0.1;
    hp.eval_fraction = 0.5;
    c.gpu_count = 9;
    let errors = check_config(&c, &catalog()).unwrap_err();
    for field in [
        "learning_rate",
        "batch_size",
        "gradient_accumulation_steps",
        "epochs",
        "rank",
        "alpha",
        "dropout",
        "max_seq_len",
        "warmup_ratio",
        "eval_fraction",
        "gpu_count",
    ] {
        assert!(errors.get(field).is_some(), "{field} should be refused");
    }
    let mut nan = config("llama-3.1-8b-instruct", "A100", PresetName::Custom);
    nan.hyperparameters.learning_rate = f64::NAN;
    assert!(
        check_config(&nan, &catalog())
            .unwrap_err()
            .get("learning_rate")
            .is_some()
    );
}

#[test]
fn unavailable_gpu_types_are_refused_with_what_to_do() {
    let mut catalog = catalog();
    for gpu in &mut catalog.gpus {
        gpu.available = gpu.backend == Backend::Local;
    }
    let errors = check_config(
        &config("llama-3.1-8b-instruct", "A100", PresetName::Fast),
        &catalog,
    )
    .unwrap_err();
    assert!(errors.get("gpu_type").unwrap().contains("RUNPOD_API_KEY"));
    let mut local = config("tiny-random-llama", "local", PresetName::Fast);
    local.hyperparameters.quantization = Quantization::None;
    assert!(check_config(&local, &catalog).is_ok());
}

/// Each bound on both sides: the limit itself passes, one step past it is refused.
#[test]
fn each_bound_holds_on_both_sides() {
    type Set = fn(&mut TrainingConfig, f64);
    let cases: [(&str, (f64, f64), f64, Set); 11] = [
        ("learning_rate", bounds::LEARNING_RATE, 1e-7, |c, v| {
            c.hyperparameters.learning_rate = v
        }),
        (
            "batch_size",
            (bounds::BATCH_SIZE.0.into(), bounds::BATCH_SIZE.1.into()),
            1.0,
            |c, v| c.hyperparameters.batch_size = v as u32,
        ),
        (
            "gradient_accumulation_steps",
            (
                bounds::GRADIENT_ACCUMULATION.0.into(),
                bounds::GRADIENT_ACCUMULATION.1.into(),
            ),
            1.0,
            |c, v| c.hyperparameters.gradient_accumulation_steps = v as u32,
        ),
        (
            "epochs",
            (bounds::EPOCHS.0.into(), bounds::EPOCHS.1.into()),
            1.0,
            |c, v| c.hyperparameters.epochs = v as u32,
        ),
        (
            "rank",
            (bounds::RANK.0.into(), bounds::RANK.1.into()),
            1.0,
            |c, v| c.hyperparameters.rank = v as u32,
        ),
        (
            "alpha",
            (bounds::ALPHA.0.into(), bounds::ALPHA.1.into()),
            1.0,
            |c, v| c.hyperparameters.alpha = v as u32,
        ),
        ("dropout", bounds::DROPOUT, 0.01, |c, v| {
            c.hyperparameters.dropout = v
        }),
        (
            "max_seq_len",
            (bounds::MAX_SEQ_LEN.0.into(), bounds::MAX_SEQ_LEN.1.into()),
            1.0,
            |c, v| c.hyperparameters.max_seq_len = v as u32,
        ),
        ("warmup_ratio", bounds::WARMUP_RATIO, 0.01, |c, v| {
            c.hyperparameters.warmup_ratio = v
        }),
        ("eval_fraction", bounds::EVAL_FRACTION, 0.01, |c, v| {
            c.hyperparameters.eval_fraction = v
        }),
        (
            "gpu_count",
            (bounds::GPU_COUNT.0.into(), bounds::GPU_COUNT.1.into()),
            1.0,
            |c, v| c.gpu_count = v as u32,
        ),
    ];
    // A small model on a big GPU: every in-range value fits in memory.
    let base = config("llama-3.2-1b-instruct", "H200", PresetName::Custom);
    let refused = |field: &str, value: f64, set: Set| {
        let mut c = base.clone();
        set(&mut c, value);
        check_config(&c, &catalog())
            .err()
            .is_some_and(|e| e.get(field).is_some())
    };
    for (field, (lo, hi), step, set) in cases {
        assert!(
            !refused(field, lo, set),
            "{field} = {lo} (the lower bound) passes"
        );
        assert!(
            !refused(field, hi, set),
            "{field} = {hi} (the upper bound) passes"
        );
        assert!(
            refused(field, lo - step, set),
            "{field} below {lo} is refused"
        );
        assert!(
            refused(field, hi + step, set),
            "{field} above {hi} is refused"
        );
    }
}

#[test]
fn catalog_membership_and_fit_are_checked() {
    let errors = check_config(&config("gpt-5", "TPU", PresetName::Fast), &catalog()).unwrap_err();
    assert!(errors.get("base_model").is_some() && errors.get("gpu_type").is_some());
    // 8B in bf16 does not fit a 24 GB card, and the 4090 has no figure for it.
    let mut c = config("llama-3.1-8b-instruct", "4090", PresetName::Balanced);
    c.hyperparameters.quantization = Quantization::None;
    assert!(
        check_config(&c, &catalog())
            .unwrap_err()
            .get("gpu_type")
            .unwrap()
            .contains("nf4")
    );
    // The local executor trains the demo model with plain LoRA only.
    let mut local = config("tiny-random-llama", "local", PresetName::Fast);
    assert!(
        check_config(&local, &catalog())
            .unwrap_err()
            .get("gpu_type")
            .unwrap()
            .contains("none")
    );
    local.hyperparameters.quantization = Quantization::None;
    assert_eq!(check_config(&local, &catalog()), Ok(()));
    // The sequence length cannot exceed the model's context.
    local.hyperparameters.max_seq_len = 4096;
    assert!(
        check_config(&local, &catalog())
            .unwrap_err()
            .get("max_seq_len")
            .is_some()
    );
}

#[test]
fn calibration_replaces_throughput_once_enough_jobs_measured_it() {
    let catalog = catalog();
    let measured = |model: &str, tps: f64, jobs: u32| Measurement {
        gpu_type: "A100".into(),
        base_model: model.into(),
        quantization: Quantization::Nf4,
        tokens_per_sec: tps,
        jobs,
    };
    // Two 7–8B models share the `medium_nf4` cell: 2 × 2000 + 2 × 3000 over 4 jobs.
    let calibrated = catalog.calibrated(&[
        measured("llama-3.1-8b-instruct", 2000.0, 2),
        measured("mistral-7b-instruct-v0.3", 3000.0, 2),
        // Too few jobs: the catalog's figure stays.
        measured("qwen2.5-3b-instruct", 9999.0, 2),
        // Unknown models and nonsense are ignored.
        measured("gone", 1.0, 50),
        measured("llama-3.2-1b-instruct", f64::NAN, 50),
    ]);
    let a100 = calibrated.gpu("A100").unwrap();
    assert_eq!(a100.throughput["medium_nf4"], 2500.0);
    assert_eq!(a100.measured["medium_nf4"], 4);
    assert_eq!(
        a100.throughput["small_nf4"],
        catalog.gpu("A100").unwrap().throughput["small_nf4"]
    );
    assert!(!a100.measured.contains_key("small_nf4"));
    assert_eq!(catalog.calibrated(&[]), catalog);
}

#[test]
fn the_builtin_catalog_parses_and_has_the_demo_model_and_the_local_executor() {
    let catalog = catalog();
    assert!(catalog.gpus.len() >= 10);
    assert!(catalog.model("tiny-random-llama").is_some_and(|m| m.demo));
    assert_eq!(
        catalog.gpu("local").map(|g| g.backend),
        Some(Backend::Local)
    );
    assert_eq!(
        catalog.gpu("A100").map(|g| g.price_per_second),
        Some(0.00076)
    );
    assert!(Catalog::from_toml("[[gpu]]\nid = 1").is_err());
}

#[test]
fn one_gpu_per_job_until_the_worker_trains_on_several() {
    let mut c = config("llama-3.1-8b-instruct", "A100", PresetName::Balanced);
    c.gpu_count = 2;
    let errors = check_config(&c, &catalog()).unwrap_err();
    let message = errors.get("gpu_count").expect("two GPUs are refused");
    assert!(message.contains("billed but idle"), "{message}");
    // The catalog says so too, whatever an operator's file would claim.
    let catalog = Catalog::builtin();
    assert!(catalog.gpus.iter().all(|g| g.max_count == 1));
    let json = serde_json::to_value(&catalog.gpus[0]).unwrap();
    assert_eq!(json["max_count"], 1);
}

#[test]
fn the_memory_estimate_counts_what_the_worker_holds() {
    let catalog = catalog();
    let llama8b = catalog
        .model("llama-3.1-8b-instruct")
        .expect("in the catalog");
    assert!(
        llama8b.shape.is_some(),
        "catalog models carry their dimensions"
    );
    let mut hp = PresetName::Balanced.hyperparameters();
    hp.quantization = Quantization::Nf4;
    hp.batch_size = 4;
    hp.max_seq_len = 2048;
    hp.rank = 16;
    // 4.8 GB of nf4 weights, 0.7 GB of adapter and Adam state, 3.6 GB of checkpointed
    // activations, 1.6 GB for a chunk of 128k-vocabulary logits, 1 GB of CUDA context.
    let qlora = memory_needed_gb(llama8b, &hp);
    assert!((11.0..12.5).contains(&qlora), "{qlora}");
    hp.quantization = Quantization::None;
    let lora = memory_needed_gb(llama8b, &hp);
    assert!(
        (lora - qlora - 8.03 * 1.4).abs() < 0.01,
        "bf16 weights: {lora}"
    );
    // Activations grow with the micro-batch.
    hp.max_seq_len = 8192;
    assert!(memory_needed_gb(llama8b, &hp) > lora + 8.0);
    // A 24 GB card trains the 8B with QLoRA at batch 4 × 2048; the rules agree.
    let mut c = config("llama-3.1-8b-instruct", "4090", PresetName::Custom);
    c.hyperparameters.quantization = Quantization::Nf4;
    c.hyperparameters.batch_size = 4;
    c.hyperparameters.max_seq_len = 2048;
    assert_eq!(check_config(&c, &catalog), Ok(()));
}
