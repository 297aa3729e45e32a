//! Models: the verified adapters of completed jobs — the list (cards with rating, final loss,
//! cost; sort and pages) and one model's page (the rating explained, the loss curve, the
//! before/after samples, the configuration, the model card, downloads, rename, delete).

use engine::format::{bytes, money, thousands};
use engine::jobs::MetricPoint;
use engine::models::ModelView;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton, use_id_param};
use crate::error::AppError;

/// Cards per page of the Models list.
const PAGE_SIZE: u32 = 24;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPageData {
    pub models: Vec<ModelView>,
    pub total: i64,
    pub page: u32,
}

#[server(prefix = "/rpc", endpoint = "list_models")]
pub async fn list_models(sort: Option<String>, page: u32) -> Result<ModelPageData, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    use engine::models::ModelSort;
    let sort = match sort.as_deref() {
        Some("quality") => ModelSort::Quality,
        _ => ModelSort::CreatedAt,
    };
    let page = page.max(1);
    let offset = i64::from(page - 1) * i64::from(PAGE_SIZE);
    let (models, total) =
        engine::models::service::list(&db, user.id, sort, i64::from(PAGE_SIZE), offset).await?;
    Ok(ModelPageData {
        models,
        total,
        page,
    })
}

/// A model with the run's curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSnapshot {
    pub model: ModelView,
    pub curve: Vec<MetricPoint>,
    /// The model card rendered on the server (escaped; no links or images).
    pub card_html: String,
}

#[server(prefix = "/rpc", endpoint = "model_page")]
pub async fn model_page(id: Uuid) -> Result<ModelSnapshot, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let model = engine::models::service::get(&db, user.id, id).await?;
    let curve = engine::jobs::service::metrics(&db, user.id, model.job_id).await?;
    let card_html = engine::models::card::to_html(model.model_card.as_deref().unwrap_or_default());
    Ok(ModelSnapshot {
        model,
        curve,
        card_html,
    })
}

#[server(prefix = "/rpc", endpoint = "update_model")]
pub async fn update_model(
    id: Uuid,
    name: String,
    description: String,
) -> Result<ModelView, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let update = engine::models::ModelUpdate {
        name: Some(name),
        description: Some(description),
    };
    Ok(engine::models::service::update(&db, user.id, id, &update).await?)
}

#[server(prefix = "/rpc", endpoint = "delete_model")]
pub async fn delete_model(id: Uuid) -> Result<(), AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    Ok(engine::models::service::delete(&db, user.id, id).await?)
}

/// "★★★★☆" for a 1–5 rating.
fn stars(score: u8) -> String {
    let score = usize::from(score.min(5));
    format!("{}{}", "★".repeat(score), "☆".repeat(5 - score))
}

#[component]
pub(crate) fn Stars(score: u8) -> impl IntoView {
    view! {
        <span class="stars" role="img" aria-label=format!("{score} of 5 stars")>{stars(score)}</span>
    }
}

#[component]
pub fn ModelsPage() -> impl IntoView {
    let query = use_query_map();
    let sort = move || query.with(|q| q.get("sort").filter(|s| s == "quality"));
    let page = move || {
        query.with(|q| {
            q.get("page")
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(1)
        })
    };
    let models = Resource::new(
        move || (sort(), page()),
        |(sort, page)| list_models(sort, page),
    );
    view! {
        <PageHeader title="Models" description="Trained adapters with quality ratings and downloads.">
            <a class="btn btn-primary" href="/train">"Train a model"</a>
        </PageHeader>
        <nav class="filters" aria-label="Sort">
            <a href="/models" class="chip" class:active=move || sort().is_none() aria-current=move || sort().is_none().then_some("page")>"Newest"</a>
            <a href="/models?sort=quality" class="chip" class:active=move || sort().is_some() aria-current=move || sort().is_some().then_some("page")>"Best rated"</a>
        </nav>
        <Transition fallback=|| view! { <Skeleton rows=4/> }>
            {move || models.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(data) if data.models.is_empty() => view! {
                    <EmptyState icon="◆" title="No models yet">
                        <p>"Every successful training job produces a LoRA adapter here: adapter_config.json, adapter_model.safetensors and the tokenizer, checked file by file and rated 1–5 from its real metrics."</p>
                        <p><a class="btn btn-primary" href="/train">"Train your first model"</a></p>
                    </EmptyState>
                }.into_any(),
                Ok(data) => view! { <ModelCards data=data sort=sort()/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn ModelCards(data: ModelPageData, sort: Option<String>) -> impl IntoView {
    let pages = ((data.total.max(0) as u32).div_ceil(PAGE_SIZE)).max(1);
    let page = data.page;
    let link = move |p: u32| match &sort {
        Some(s) => format!("/models?sort={s}&page={p}"),
        None => format!("/models?page={p}"),
    };
    view! {
        <ul class="model-cards">
            {data.models.into_iter().map(|m| {
                let href = format!("/models/{}", m.id);
                let score = m.quality_metrics.as_ref().map(|q| q.overall_score);
                let loss = m.quality_metrics.as_ref().map(|q| format!("{:.4}", q.final_train_loss)).unwrap_or_else(|| "—".into());
                let cost = m.training_summary.as_ref().map(|s| money(s.cost)).unwrap_or_else(|| "—".into());
                view! {
                    <li class="card model-card">
                        <h2><a href=href>{m.name.clone()}</a></h2>
                        <p class="muted small">{m.base_model.clone()}</p>
                        {score.map(|s| view! { <Stars score=s/> })}
                        <dl class="facts">
                            <div><dt>"Final loss"</dt><dd>{loss}</dd></div>
                            <div><dt>"Cost"</dt><dd>{cost}</dd></div>
                            <div><dt>"Size"</dt><dd>{bytes(m.size())}</dd></div>
                            <div><dt>"Created"</dt><dd><time datetime=m.created_at.to_rfc3339()>{m.created_at.format("%Y-%m-%d %H:%M UTC").to_string()}</time></dd></div>
                        </dl>
                    </li>
                }
            }).collect_view()}
        </ul>
        <nav class="pager" aria-label="Pages">
            {(page > 1).then(|| view! { <a href=link(page - 1)>"← Newer"</a> })}
            <span class="muted small">{format!("Page {page} of {pages} · {} models", thousands(data.total))}</span>
            {(page < pages).then(|| view! { <a href=link(page + 1)>"Older →"</a> })}
        </nav>
    }
}

#[component]
pub fn ModelPage() -> impl IntoView {
    let id = use_id_param();
    let detail = Resource::new(
        move || id.get(),
        |id| async move {
            match id {
                Some(id) => model_page(id).await,
                None => Err(AppError::NotFound),
            }
        },
    );
    view! {
        <Transition fallback=|| view! { <Skeleton rows=8/> }>
            {move || detail.get().map(|result| match result {
                Err(AppError::NotFound) => view! {
                    <PageHeader title="Model not found" description="It does not exist, it was deleted, or it is not yours."/>
                    <p><a href="/models">"Back to your models"</a></p>
                }.into_any(),
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(data) => view! { <ModelDetailView data=data/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn ModelDetailView(data: ModelSnapshot) -> impl IntoView {
    let ModelSnapshot {
        model,
        curve,
        card_html,
    } = data;
    let id = model.id;
    let quality = model.quality_metrics.clone();
    let summary = model.training_summary.clone();
    let configuration = model.configuration.clone().unwrap_or_default();
    let hyperparameters: Vec<(String, String)> = configuration["hyperparameters"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.to_string().trim_matches('"').to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let job_href = format!("/jobs/{}", model.job_id);
    let train_again = format!("/train?from_job={}", model.job_id);
    let bundle = format!("/api/models/{id}/bundle");
    view! {
        <PageHeader title=model.name.clone() description=format!("LoRA adapter for {} · from job {}", model.base_model, &model.job_id.to_string()[..8])>
            <a class="btn btn-primary" href=bundle download>"Download all (.tar.gz)"</a>
            <a class="btn" href=train_again>"Train again with these settings"</a>
        </PageHeader>
        <section class="card model-rating" aria-labelledby="rating-heading">
            <h2 id="rating-heading">"Rating"</h2>
            {match quality.clone() {
                Some(q) => view! {
                    <p class="rating-line"><Stars score=q.overall_score/></p>
                    <p class="model-explanation">{q.explanation.clone()}</p>
                    <dl class="facts">
                        <div><dt>"Train loss"</dt><dd>{format!("{:.4} → {:.4}", q.initial_train_loss, q.final_train_loss)}</dd></div>
                        <div><dt>"Loss reduction"</dt><dd>{format!("{:.0}%", q.loss_reduction * 100.0)}</dd></div>
                        <div><dt>"Eval loss"</dt><dd>{q.final_eval_loss.map(|e| format!("{e:.4}")).unwrap_or_else(|| "no held-out set".into())}</dd></div>
                        <div><dt>"Perplexity"</dt><dd>{q.perplexity.map(|p| format!("{p:.2}")).unwrap_or_else(|| "—".into())}</dd></div>
                    </dl>
                }.into_any(),
                None => view! { <p class="muted">"No training curve was recorded, so the run could not be rated."</p> }.into_any(),
            }}
        </section>
        <section class="card">
            <h2>"Loss"</h2>
            <p class="small">{format!("{} logged steps; the run is on its job page.", curve.iter().filter(|p| p.train_loss.is_some()).count())} " " <a href=job_href>"Open the job"</a></p>
            <crate::charts::LossChart id="model-loss-chart" points=curve.clone()/>
        </section>
        <section class="card" aria-labelledby="samples-heading">
            <h2 id="samples-heading">"Before and after"</h2>
            {if model.samples.is_empty() {
                view! { <p class="muted">"No held-out prompts were set aside in this run (eval fraction 0), so there are no samples to compare."</p> }.into_any()
            } else {
                view! {
                    <p class="small muted">"Greedy answers to held-out prompts the adapter never trained on: the base model alone, then with the adapter, beside the dataset's own reply."</p>
                    <div class="samples">
                        {model.samples.iter().map(|s| view! {
                            <article class="sample">
                                <h3>{s.prompt.clone()}</h3>
                                <div class="sample-columns">
                                    <div><h4>"Base model"</h4><p class="sample-base">{s.base.clone()}</p></div>
                                    <div><h4>"With the adapter"</h4><p class="sample-adapter">{s.adapter.clone()}</p></div>
                                    <div><h4>"Dataset reply"</h4><p class="sample-reference">{s.reference.clone()}</p></div>
                                </div>
                            </article>
                        }).collect_view()}
                    </div>
                }.into_any()
            }}
        </section>
        <div class="chart-grid">
            <section class="card" aria-labelledby="config-heading">
                <h2 id="config-heading">"Configuration"</h2>
                <dl class="facts">
                    <div><dt>"Preset"</dt><dd>{configuration["preset"].as_str().unwrap_or("—").to_owned()}</dd></div>
                    {summary.clone().map(|s| view! {
                        <div><dt>"GPU"</dt><dd>{format!("{} × {} ({}, {})", s.gpu_count, s.gpu_type, s.device, s.quantization_used)}</dd></div>
                        <div><dt>"Steps"</dt><dd>{thousands(i64::from(s.total_steps))}</dd></div>
                        <div><dt>"Tokens/s"</dt><dd>{thousands(s.tokens_per_sec.round() as i64)}</dd></div>
                        <div><dt>"Cost"</dt><dd>{money(s.cost)}</dd></div>
                    })}
                    {hyperparameters.into_iter().map(|(k, v)| view! { <div><dt>{k}</dt><dd>{v}</dd></div> }).collect_view()}
                </dl>
            </section>
            <section class="card" aria-labelledby="files-heading">
                <h2 id="files-heading">"Files"</h2>
                <ul class="files">
                    {model.files.iter().map(|f| {
                        let href = format!("/api/models/{id}/files/{}", f.name);
                        view! {
                            <li>
                                <a href=href download>{f.name.clone()}</a>
                                <span class="muted small">{format!(" {} · sha256 {}…", bytes(f.size), &f.sha256[..f.sha256.len().min(12)])}</span>
                            </li>
                        }
                    }).collect_view()}
                </ul>
            </section>
        </div>
        <section class="card" aria-labelledby="card-heading">
            <h2 id="card-heading">"Model card"</h2>
            <div class="model-card-text" inner_html=card_html></div>
        </section>
        <ModelEditor id name=model.name.clone() description=model.description.clone().unwrap_or_default()/>
    }
}

/// Rename and delete, an island (the rest of the model page is plain HTML).
#[cfg_attr(any(feature = "ssr", feature = "bundle-charts"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-charts")), component)]
fn ModelEditor(id: Uuid, name: String, description: String) -> impl IntoView {
    let name = RwSignal::new(name);
    let description = RwSignal::new(description);
    let save = Action::new(move |_: &()| {
        update_model(id, name.get_untracked(), description.get_untracked())
    });
    let remove = Action::new(move |_: &()| delete_model(id));
    Effect::new(move || {
        if let Some(Ok(updated)) = save.value().get() {
            name.set(updated.name);
        }
    });
    Effect::new(move || {
        if let Some(Ok(())) = remove.value().get() {
            crate::components::go_to("/models");
        }
    });
    let on_delete = move |_| {
        if crate::components::confirm(
            "Delete this model? It disappears from your list and its downloads stop working.",
        ) {
            remove.dispatch(());
        }
    };
    let error = move || {
        save.value()
            .get()
            .and_then(Result::err)
            .or_else(|| remove.value().get().and_then(Result::err))
    };
    view! {
        <section class="card" aria-labelledby="edit-heading">
            <h2 id="edit-heading">"Name and description"</h2>
            {move || error().map(|e| view! { <p class="callout callout-danger" role="alert">{e.to_string()}</p> })}
            <form class="stack" on:submit=move |ev| { ev.prevent_default(); save.dispatch(()); }>
                <label for="model-name">"Name"</label>
                <input id="model-name" maxlength="200" required prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/>
                <label for="model-description">"Description"</label>
                <textarea id="model-description" maxlength="2000" rows="3" prop:value=move || description.get() on:input=move |ev| description.set(event_target_value(&ev))></textarea>
                <div class="row">
                    <button class="btn btn-primary" type="submit" disabled=move || save.pending().get()>{move || if save.pending().get() { "Saving…" } else { "Save" }}</button>
                    {move || matches!(save.value().get(), Some(Ok(_))).then(|| view! { <span class="muted small" role="status">"Saved."</span> })}
                    <button class="btn btn-danger" type="button" on:click=on_delete disabled=move || remove.pending().get()>"Delete model"</button>
                </div>
            </form>
        </section>
    }
}
