//! Train: choose a ready dataset, a base model, a preset and a GPU; the estimate is computed in
//! the browser on every change (the engine's pure estimator, compiled into the WASM) and the
//! form checks the same rules as the server.

use engine::jobs::NewJob;
use engine::training::estimate::{DatasetSize, EstimateError, estimate};
use engine::training::{
    Catalog, Hyperparameters, PresetName, Quantization, TrainingConfig, check_config,
};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyDataset {
    pub id: Uuid,
    pub name: String,
    pub examples: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingChoices {
    pub catalog: Catalog,
    pub datasets: Vec<ReadyDataset>,
    /// "Train again with these settings": an earlier job's dataset and configuration.
    pub prefill: Option<(Uuid, TrainingConfig)>,
}

#[server(prefix = "/rpc", endpoint = "train_context")]
pub async fn train_context(from_job: Option<Uuid>) -> Result<TrainingChoices, AppError> {
    let crate::server_context::SignedIn {
        user, db, catalog, ..
    } = crate::server_context::signed_in().await?;
    let filter = engine::datasets::ListFilter {
        status: Some(engine::datasets::DatasetStatus::Ready),
        page: 1,
        limit: 100,
        ..Default::default()
    };
    let (rows, _) = engine::datasets::service::list(&db, user.id, &filter)
        .await
        .map_err(AppError::internal)?;
    // Another user's job id reads as no job: nothing is prefilled.
    let prefill = match from_job {
        Some(id) => engine::jobs::service::get(&db, user.id, id)
            .await
            .ok()
            .and_then(|job| {
                let hyperparameters = job.hyperparameters.parse().ok()?;
                let preset = serde_json::from_value(serde_json::Value::String(job.preset)).ok()?;
                Some((
                    job.dataset_id,
                    TrainingConfig {
                        base_model: job.base_model,
                        preset,
                        hyperparameters,
                        gpu_type: job.gpu_type,
                        gpu_count: job.gpu_count.max(1) as u32,
                    },
                ))
            }),
        None => None,
    };
    Ok(TrainingChoices {
        prefill,
        catalog: (*catalog).clone(),
        datasets: rows
            .into_iter()
            .filter(|d| d.training_ready)
            .map(|d| ReadyDataset {
                id: d.id,
                name: d.name,
                examples: d.total_training_pairs.unwrap_or(0).max(0) as u64,
                total_tokens: d.total_tokens.unwrap_or(0).max(0) as u64,
            })
            .collect(),
    })
}

#[server(prefix = "/rpc", endpoint = "create_job", input = Json)]
pub async fn create_job(job: NewJob) -> Result<Uuid, AppError> {
    use engine::jobs::service::JobError;
    let crate::server_context::SignedIn {
        user, db, catalog, ..
    } = crate::server_context::signed_in().await?;
    match engine::jobs::service::create(&db, &catalog, user.id, &job, None).await {
        Ok(job) => Ok(job.id),
        Err(JobError::Invalid(fields)) => {
            Err(AppError::invalid("Check the highlighted fields.", fields))
        }
        Err(JobError::NotFound) => Err(AppError::NotFound),
        Err(JobError::Conflict(message)) => Err(AppError::Invalid {
            message,
            fields: Default::default(),
        }),
        Err(e) => Err(AppError::internal(e)),
    }
}

#[component]
pub fn TrainPage() -> impl IntoView {
    let query = leptos_router::hooks::use_query_map();
    let from_job =
        move || query.with(|q| q.get("from_job").and_then(|id| Uuid::parse_str(&id).ok()));
    let context = Resource::new(from_job, train_context);
    view! {
        <PageHeader title="Train" description="Pick a dataset, a base model and a preset; see the cost before you start."/>
        <Suspense fallback=|| view! { <Skeleton rows=6/> }>
            {move || context.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(ctx) if ctx.datasets.is_empty() => view! {
                    <EmptyState icon="▶" title="No dataset is ready to train">
                        <p>"Training needs a validated dataset with at least 10 usable examples."</p>
                        <p><a class="btn btn-primary" href="/datasets/new">"Upload a dataset"</a></p>
                    </EmptyState>
                }.into_any(),
                Ok(ctx) => view! { <TrainForm context=ctx/> }.into_any(),
            })}
        </Suspense>
    }
}

/// A typed number as a whole count; anything else becomes 0, which the rules refuse.
fn whole(value: f64) -> u32 {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 {
        value.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

fn default_gpu(catalog: &Catalog) -> String {
    catalog
        .gpus
        .iter()
        .find(|g| g.id == "local" && g.available)
        .or(catalog.gpus.iter().find(|g| g.available))
        .or(catalog.gpus.first())
        .map(|g| g.id.clone())
        .unwrap_or_default()
}

/// The form and its estimate, an island: the rules and the estimator run in the browser on
/// every change, with no request.
#[cfg_attr(any(feature = "ssr", feature = "bundle-train"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-train")), component)]
fn TrainForm(context: TrainingChoices) -> impl IntoView {
    let catalog = StoredValue::new(context.catalog.clone());
    let datasets = StoredValue::new(context.datasets.clone());
    // An earlier job's settings, when its dataset is still ready to train.
    let prefill = context
        .prefill
        .clone()
        .filter(|(id, _)| context.datasets.iter().any(|d| d.id == *id));
    let dataset = RwSignal::new(
        prefill
            .as_ref()
            .map(|(id, _)| *id)
            .or(context.datasets.first().map(|d| d.id)),
    );
    let model = RwSignal::new(
        prefill
            .as_ref()
            .map(|(_, c)| c.base_model.clone())
            .unwrap_or_else(|| {
                context
                    .catalog
                    .models
                    .iter()
                    .find(|m| m.demo)
                    .or(context.catalog.models.first())
                    .map(|m| m.id.clone())
                    .unwrap_or_default()
            }),
    );
    let gpu = RwSignal::new(
        prefill
            .as_ref()
            .map(|(_, c)| c.gpu_type.clone())
            .unwrap_or_else(|| default_gpu(&context.catalog)),
    );
    let gpu_count = RwSignal::new(prefill.as_ref().map_or(1u32, |(_, c)| c.gpu_count));
    let preset = RwSignal::new(prefill.as_ref().map_or(PresetName::Fast, |(_, c)| c.preset));
    // A preset as the chosen model adjusts it (the demo model's take more steps).
    let local_defaults = move |p: PresetName, model_id: &str, gpu: &str| Hyperparameters {
        // The local executor trains plain LoRA (no bitsandbytes on CPU).
        quantization: if gpu == "local" {
            Quantization::None
        } else {
            Quantization::Nf4
        },
        ..catalog.with_value(|c| {
            c.model(model_id)
                .map_or_else(|| p.hyperparameters(), |m| m.preset(p))
        })
    };
    let hp = RwSignal::new(prefill.as_ref().map_or_else(
        || {
            local_defaults(
                PresetName::Fast,
                &model.get_untracked(),
                &gpu.get_untracked(),
            )
        },
        |(_, c)| c.hyperparameters,
    ));
    // The cap is prefilled from the estimate (× the server's margin) until the user types one.
    let budget = RwSignal::new(String::new());
    let budget_edited = RwSignal::new(false);
    let submitting = RwSignal::new(false);
    let server_error = RwSignal::new(None::<AppError>);

    let config = Memo::new(move |_| TrainingConfig {
        base_model: model.get(),
        preset: preset.get(),
        hyperparameters: hp.get(),
        gpu_type: gpu.get(),
        gpu_count: gpu_count.get(),
    });
    let errors = Memo::new(move |_| {
        catalog.with_value(|c| check_config(&config.get(), c).err().unwrap_or_default())
    });
    let chosen = move || {
        dataset
            .get()
            .and_then(|id| datasets.with_value(|d| d.iter().find(|x| x.id == id).cloned()))
    };
    let estimated = Memo::new(move |_| {
        let ds = chosen()?;
        let config = config.get();
        catalog.with_value(|c| {
            let model = c.model(&config.base_model)?;
            let gpu = c.gpu(&config.gpu_type)?;
            Some(estimate(
                DatasetSize {
                    examples: ds.examples,
                    total_tokens: ds.total_tokens,
                },
                model,
                gpu,
                config.gpu_count,
                &config.hyperparameters,
            ))
        })
    });
    let default_cap = Memo::new(move |_| {
        let high = estimated.get()?.ok()?.cost.high;
        catalog.with_value(|c| {
            let paid = c.gpu(&gpu.get())?.price_per_second > 0.0;
            paid.then(|| engine::costs::default_cap(high, &c.limits))
        })
    });
    let shown_budget = move || {
        if budget_edited.get() {
            budget.get()
        } else {
            default_cap
                .get()
                .map(|c| format!("{c:.2}"))
                .unwrap_or_default()
        }
    };
    let field = move |name: &'static str| {
        move || {
            errors
                .with(|e| e.get(name).map(str::to_owned))
                .or_else(|| server_error.with(|e| e.as_ref().and_then(|e| e.field(name))))
        }
    };
    let choose_preset = move |p: PresetName| {
        preset.set(p);
        if p != PresetName::Custom {
            hp.set(local_defaults(
                p,
                &model.get_untracked(),
                &gpu.get_untracked(),
            ));
        }
    };
    // Editing any advanced field makes the configuration custom.
    let edit = move |change: Box<dyn Fn(&mut Hyperparameters)>| {
        hp.update(|h| change(h));
        preset.set(PresetName::Custom);
    };
    let number = move |ev: &leptos::ev::Event| {
        event_target_value(ev)
            .trim()
            .parse::<f64>()
            .unwrap_or(f64::NAN)
    };

    let start = move |_| {
        if submitting.get_untracked() || !errors.with_untracked(|e| e.is_empty()) {
            return;
        }
        let Some(dataset_id) = dataset.get_untracked() else {
            return;
        };
        let budget_cap = shown_budget()
            .trim()
            .trim_start_matches('$')
            .parse::<f64>()
            .ok();
        let job = NewJob {
            dataset_id,
            config: config.get_untracked(),
            budget_cap,
            confirm_low_budget: false,
        };
        submitting.set(true);
        server_error.set(None);
        leptos::task::spawn_local(async move {
            match create_job(job).await {
                Ok(id) => crate::components::go_to(&format!("/jobs/{id}")),
                Err(e) => {
                    server_error.set(Some(e));
                    submitting.set(false);
                }
            }
        });
    };

    view! {
        <div class="train">
            <form class="card panel form train-form" on:submit=|ev| ev.prevent_default()>
                <label for="dataset">"Dataset"</label>
                <select id="dataset" on:change=move |ev| dataset.set(Uuid::parse_str(&event_target_value(&ev)).ok())>
                    {datasets.get_value().into_iter().map(|d| view! {
                        <option value=d.id.to_string() selected=move || dataset.get() == Some(d.id)>
                            {format!("{} — {} examples, {} tokens", d.name, engine::format::thousands(d.examples as i64), engine::format::thousands(d.total_tokens as i64))}
                        </option>
                    }).collect_view()}
                </select>
                {move || chosen().map(|d| view! {
                    <p class="muted small">{format!(
                        "{} examples · {} tokens · about {} tokens per example",
                        engine::format::thousands(d.examples as i64),
                        engine::format::thousands(d.total_tokens as i64),
                        engine::format::thousands((d.total_tokens / d.examples.max(1)) as i64)
                    )}</p>
                })}
                <label for="model">"Base model"</label>
                <select id="model" on:change=move |ev| {
                    model.set(event_target_value(&ev));
                    // A preset follows the model it is for.
                    let p = preset.get_untracked();
                    if p != PresetName::Custom {
                        hp.set(local_defaults(p, &model.get_untracked(), &gpu.get_untracked()));
                    }
                }>
                    {catalog.get_value().models.into_iter().map(|m| {
                        let id = m.id.clone();
                        view! { <option value=m.id.clone() selected=move || model.get() == id>{m.name.clone()}</option> }
                    }).collect_view()}
                </select>
                <p class="field-error">{field("base_model")}</p>
                {view! {
                <fieldset class="presets">
                    <legend>"Preset"</legend>
                    {[(PresetName::Fast, "Fast", "1 epoch, rank 8: a quick first adapter"),
                      (PresetName::Balanced, "Balanced", "3 epochs, rank 16: the usual choice"),
                      (PresetName::Quality, "Quality", "5 epochs, rank 32: slower, more capacity"),
                      (PresetName::Custom, "Custom", "your own values below")]
                        .into_iter()
                        .map(|(p, label, hint)| view! {
                            <label class="preset" class:selected=move || preset.get() == p>
                                <input type="radio" name="preset" prop:checked=move || preset.get() == p on:change=move |_| choose_preset(p)/>
                                <strong>{label}</strong>
                                <span class="muted small">{hint}</span>
                            </label>
                        })
                        .collect_view()}
                </fieldset>
                }.into_any()}
                <label for="gpu">"GPU"</label>
                <select id="gpu" on:change=move |ev| {
                    let id = event_target_value(&ev);
                    hp.update(|h| h.quantization = if id == "local" { Quantization::None } else { Quantization::Nf4 });
                    gpu.set(id);
                }>
                    {catalog.get_value().gpus.into_iter().map(|g| {
                        let id = g.id.clone();
                        view! {
                            <option value=g.id.clone() selected=move || gpu.get() == id>
                                {format!(
                                    "{} — {}/h{}",
                                    g.name,
                                    engine::format::money(g.price_per_hour(1)),
                                    match (g.available, g.unavailable_reason.is_some()) {
                                        (true, _) => "",
                                        (false, true) => " (unavailable: see below)",
                                        (false, false) => " (not configured on this server)",
                                    }
                                )}
                            </option>
                        }
                    }).collect_view()}
                </select>
                <p class="field-error">{field("gpu_type")}</p>
                {move || {
                    let chosen = gpu.get();
                    catalog
                        .get_value()
                        .gpus
                        .into_iter()
                        .find(|g| g.id == chosen && !g.available)
                        .and_then(|g| g.unavailable_reason)
                        .map(|reason| view! { <p class="muted small" role="note">{reason}</p> })
                }}
                <label for="gpu_count">"GPU count"</label>
                <input id="gpu_count" type="number" min=engine::training::bounds::GPU_COUNT.0 max=engine::training::bounds::GPU_COUNT.1
                    aria-describedby="gpu_count-help" prop:value=move || gpu_count.get().to_string()
                    on:input=move |ev| gpu_count.set(event_target_value(&ev).parse().unwrap_or(0))/>
                <p id="gpu_count-help" class="muted small">"One GPU per job: the worker trains on a single GPU, so more would be billed but idle."</p>
                <p class="field-error">{field("gpu_count")}</p>
                {view! {
                <details class="advanced">
                    <summary>"Advanced settings"</summary>
                    <div class="grid-fields">
                        <label>"Learning rate"<input id="learning_rate" inputmode="decimal" prop:value=move || hp.get().learning_rate.to_string()
                            on:change=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.learning_rate = v)); }/></label>
                        <p class="field-error">{field("learning_rate")}</p>
                        <label>"Epochs"<input id="epochs" type="number" prop:value=move || hp.get().epochs.to_string()
                            on:input=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.epochs = whole(v))); }/></label>
                        <p class="field-error">{field("epochs")}</p>
                        <label>"Batch size"<input id="batch_size" type="number" prop:value=move || hp.get().batch_size.to_string()
                            on:input=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.batch_size = whole(v))); }/></label>
                        <p class="field-error">{field("batch_size")}</p>
                        <label>"Gradient accumulation"<input id="gradient_accumulation_steps" type="number" prop:value=move || hp.get().gradient_accumulation_steps.to_string()
                            on:input=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.gradient_accumulation_steps = whole(v))); }/></label>
                        <p class="field-error">{field("gradient_accumulation_steps")}</p>
                        <label>"LoRA rank"<input id="rank" type="number" prop:value=move || hp.get().rank.to_string()
                            on:input=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.rank = whole(v))); }/></label>
                        <p class="field-error">{field("rank")}</p>
                        <label>"LoRA alpha"<input id="alpha" type="number" prop:value=move || hp.get().alpha.to_string()
                            on:input=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.alpha = whole(v))); }/></label>
                        <p class="field-error">{field("alpha")}</p>
                        <label>"Max sequence length"<input id="max_seq_len" type="number" prop:value=move || hp.get().max_seq_len.to_string()
                            on:input=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.max_seq_len = whole(v))); }/></label>
                        <p class="field-error">{field("max_seq_len")}</p>
                        <label>"LoRA dropout"<input id="dropout" inputmode="decimal" prop:value=move || hp.get().dropout.to_string()
                            on:change=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.dropout = v)); }/></label>
                        <p class="field-error">{field("dropout")}</p>
                        <label>"Warmup ratio"<input id="warmup_ratio" inputmode="decimal" prop:value=move || hp.get().warmup_ratio.to_string()
                            on:change=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.warmup_ratio = v)); }/></label>
                        <p class="field-error">{field("warmup_ratio")}</p>
                        <label>"Eval fraction"<input id="eval_fraction" inputmode="decimal" prop:value=move || hp.get().eval_fraction.to_string()
                            on:change=move |ev| { let v = number(&ev); edit(Box::new(move |h| h.eval_fraction = v)); }/></label>
                        <p class="field-error">{field("eval_fraction")}</p>
                        <label>"Quantization"
                            <select id="quantization" on:change=move |ev| {
                                let q = if event_target_value(&ev) == "nf4" { Quantization::Nf4 } else { Quantization::None };
                                edit(Box::new(move |h| h.quantization = q));
                            }>
                                <option value="nf4" selected=move || hp.get().quantization == Quantization::Nf4>"nf4 (QLoRA)"</option>
                                <option value="none" selected=move || hp.get().quantization == Quantization::None>"none (LoRA)"</option>
                            </select>
                        </label>
                    </div>
                </details>
                }.into_any()}
                <label for="budget">"Budget cap " <span class="muted">"(dollars)"</span></label>
                <input id="budget" inputmode="decimal" placeholder="none on a free GPU" aria-describedby="budget-hint"
                    prop:value=shown_budget
                    on:input=move |ev| { budget_edited.set(true); budget.set(event_target_value(&ev)); }/>
                <p id="budget-hint" class="muted small">{move || catalog.with_value(|c| format!(
                    "The job stops before it costs more. On a paid GPU it is required: prefilled with the high estimate × {}, up to {}.",
                    c.limits.cap_margin,
                    engine::format::money(c.limits.max_job_budget)
                ))}</p>
                <p class="field-error">{field("budget_cap")}</p>
                {move || server_error.get().filter(|e| !matches!(e, AppError::Invalid { fields, .. } if !fields.is_empty()))
                    .map(|e| view! { <p class="form-error" role="alert">{e.to_string()}</p> })}
                <button type="button" class="btn btn-primary" on:click=start
                    disabled=move || submitting.get() || !errors.with(|e| e.is_empty())>
                    {move || if submitting.get() { "Starting…" } else { "Start training" }}
                </button>
            </form>
            {view! {
            <aside class="card panel estimate" aria-live="polite" aria-label="Estimate">
                <h2>"Estimate"</h2>
                {move || match estimated.get() {
                    None => view! { <p class="muted">"Choose a dataset, a model and a GPU."</p> }.into_any(),
                    Some(Err(EstimateError::Unsupported)) => view! { <p class="form-error">"This GPU cannot train this model with this quantization."</p> }.into_any(),
                    Some(Err(EstimateError::NoExamples)) => view! { <p class="form-error">"The dataset has no usable examples."</p> }.into_any(),
                    Some(Ok(e)) if !errors.with(|x| x.is_empty()) => {
                        let _ = e;
                        view! { <p class="muted">"Fix the highlighted fields to see the estimate."</p> }.into_any()
                    }
                    Some(Ok(e)) => view! {
                        <p class="estimate-cost" id="estimate-cost">{format!("{} – {}", engine::format::money(e.cost.low), engine::format::money(e.cost.high))}</p>
                        <p class="muted" id="estimate-duration">{format!("{} – {}", engine::format::duration(e.duration_seconds.low as u64), engine::format::duration(e.duration_seconds.high as u64))}</p>
                        <dl class="estimate-facts">
                            <dt>"Compute"</dt><dd>{engine::format::money(e.breakdown.compute)}</dd>
                            <dt>"Cold start and model load"</dt><dd>{engine::format::money(e.breakdown.startup)}</dd>
                            <dt>"Storage (1 month)"</dt><dd>{engine::format::money(e.breakdown.storage)}</dd>
                            <dt>"Steps per epoch"</dt><dd id="estimate-steps">{engine::format::thousands(e.steps_per_epoch as i64)}</dd>
                            <dt>"Total steps"</dt><dd>{engine::format::thousands(e.total_steps as i64)}</dd>
                            <dt>"Tokens processed"</dt><dd>{engine::format::thousands(e.tokens_processed as i64)}</dd>
                            <dt>"Throughput"</dt><dd title="Catalog figures are replaced by the median measured in finished jobs once 3 have run">{format!(
                                "{} tokens/s ({})",
                                engine::format::thousands(e.tokens_per_second as i64),
                                match e.throughput_measured_jobs { 0 => "catalog figure".to_owned(), n => format!("measured in {n} jobs") }
                            )}</dd>
                            <dt>"Price"</dt><dd>{format!("{}/h", engine::format::money(e.price_per_hour))}</dd>
                        </dl>
                    }.into_any(),
                }}
            </aside>
            }.into_any()}
        </div>
    }
    .into_any()
}
