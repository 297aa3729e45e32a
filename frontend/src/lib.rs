//! The WASM entry point: hydrates the page's islands (the interactive parts of the
//! server-rendered page; everything else stays plain HTML).

// Leptos view types nest deeply.
#![recursion_limit = "256"]

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    app::hydrate_islands();
}

/// Benchmark hook (in the Train page's bundle) (docs/PERFORMANCE.md, `scripts/bench/estimate.mjs`): what one keystroke on
/// the Train page costs — the rules and the estimate — run `n` times in this WASM; returns
/// milliseconds per keystroke.
#[cfg(feature = "train")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn bench_estimate(n: u32) -> f64 {
    use engine::training::estimate::{DatasetSize, estimate};
    use engine::training::{
        Backend, BaseModel, Catalog, GpuType, PresetName, TrainingConfig, check_config,
    };

    let catalog = Catalog {
        gpus: vec![GpuType {
            id: "A100".into(),
            name: "A100".into(),
            backend: Backend::Runpod,
            memory_gb: 80,
            price_per_second: 0.00076,
            throughput: [("medium_nf4".to_owned(), 2550.0)].into_iter().collect(),
            available: true,
            unavailable_reason: None,
            max_count: 1,
            measured: Default::default(),
        }],
        models: vec![BaseModel {
            id: "llama".into(),
            name: "Llama 3.1 8B".into(),
            source: "meta-llama/Llama-3.1-8B-Instruct".into(),
            parameters_b: 8.03,
            context_length: 131_072,
            chat_template: "llama-3".into(),
            demo: false,
            shape: None,
            presets: Default::default(),
        }],
        limits: Default::default(),
    };
    let started = js_sys::Date::now();
    let mut checksum = 0.0;
    for i in 0..n.max(1) {
        let config = TrainingConfig {
            base_model: "llama".into(),
            preset: PresetName::Custom,
            hyperparameters: PresetName::Balanced.hyperparameters(),
            gpu_type: "A100".into(),
            gpu_count: 1 + i % 4,
        };
        if check_config(&config, &catalog).is_ok()
            && let Ok(e) = estimate(
                DatasetSize {
                    examples: 1_000 + u64::from(i),
                    total_tokens: 1_000_000,
                },
                &catalog.models[0],
                &catalog.gpus[0],
                config.gpu_count,
                &config.hyperparameters,
            )
        {
            checksum += e.cost.low;
        }
    }
    let elapsed = js_sys::Date::now() - started;
    std::hint::black_box(checksum);
    elapsed / f64::from(n.max(1))
}
