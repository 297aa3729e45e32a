//! The overview, the landing page after login (the original's dashboard): this month's spend
//! against the budget, the active jobs with their progress (live in the browser), the latest
//! models and the datasets that need a look. Everything is read in one tenant transaction.

use chrono::{DateTime, Utc};
use engine::costs::BudgetView;
use engine::format::money;
use engine::jobs::{JobEvent, JobView};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::components::{ErrorState, PageHeader, Skeleton};
use crate::datasets::StatusBadge;
use crate::error::AppError;
use crate::live::UserMessage;

/// How many of each list the overview shows.
#[cfg(feature = "ssr")]
const SHOWN: i64 = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub budget: BudgetView,
    pub active_jobs: Vec<JobView>,
    pub recent_models: Vec<RecentModel>,
    pub attention: Vec<AttentionDataset>,
}

/// A model as the overview lists it (not its card or samples).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentModel {
    pub id: Uuid,
    pub name: String,
    pub base_model: String,
    pub stars: Option<u8>,
    pub created_at: DateTime<Utc>,
}

/// A dataset that is not ready to train, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionDataset {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub training_ready: bool,
}

#[server(prefix = "/rpc", endpoint = "overview_data")]
pub async fn overview_data() -> Result<Overview, AppError> {
    let crate::server_context::SignedIn {
        user, db, catalog, ..
    } = crate::server_context::signed_in().await?;
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    let budget = engine::costs::limits::read_spending(&mut tx, user.id, &catalog.limits)
        .await
        .map_err(AppError::internal)?
        .view(&catalog.limits);
    let active_jobs = engine::jobs::store::active_views(&mut tx, user.id, 20)
        .await
        .map_err(AppError::internal)?;
    let (models, _) = engine::models::store::list(
        &mut tx,
        user.id,
        engine::models::ModelSort::CreatedAt,
        SHOWN,
        0,
    )
    .await
    .map_err(AppError::internal)?;
    let attention = engine::datasets::needing_attention(&mut tx, user.id, SHOWN)
        .await
        .map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(Overview {
        budget,
        active_jobs,
        recent_models: models
            .into_iter()
            .map(|m| RecentModel {
                id: m.id,
                stars: m.quality_metrics.as_ref().map(|q| q.overall_score),
                name: m.name,
                base_model: m.base_model,
                created_at: m.created_at,
            })
            .collect(),
        attention: attention
            .into_iter()
            .map(|d| AttentionDataset {
                id: d.id,
                name: d.name,
                status: d.status,
                training_ready: d.training_ready,
            })
            .collect(),
    })
}

#[component]
pub fn OverviewPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| overview_data());
    view! {
        <PageHeader title="Overview" description="This month's spend, what is training now, your latest models and datasets that need a look.">
            <a class="btn btn-primary" href="/train">"New training job"</a>
        </PageHeader>
        <Transition fallback=|| view! { <Skeleton rows=6/> }>
            {move || data.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(o) => view! { <OverviewBody overview=o/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn OverviewBody(overview: Overview) -> impl IntoView {
    let Overview {
        budget,
        active_jobs,
        recent_models,
        attention,
    } = overview;
    // The month is the account's: in the browser, the browser's zone becomes the account's.
    let zone = budget.time_zone.clone();
    view! {
        <crate::settings::FollowBrowserZone shown=zone/>
        <div class="overview-grid">
            <SpendCard budget/>
            <ActiveJobs jobs=active_jobs/>
            <section class="card panel" aria-labelledby="models-heading">
                <h2 id="models-heading">"Latest models"</h2>
                {if recent_models.is_empty() {
                    view! { <p class="muted">"No models yet: a job that completes becomes a model, rated from its metrics. " <a href="/train">"Train one"</a></p> }.into_any()
                } else {
                    view! {
                        <ul class="list overview-models">
                            {recent_models.into_iter().map(|m| view! {
                                <li>
                                    <a href=format!("/models/{}", m.id)>{m.name.clone()}</a>
                                    " "{m.stars.map(|s| view! { <crate::models::Stars score=s/> })}
                                    <span class="muted small">{format!(" {} · {}", m.base_model, m.created_at.format("%Y-%m-%d"))}</span>
                                </li>
                            }).collect_view()}
                        </ul>
                        <a class="small" href="/models">"All models"</a>
                    }.into_any()
                }}
            </section>
            <section class="card panel" aria-labelledby="attention-heading">
                <h2 id="attention-heading">"Datasets that need a look"</h2>
                {if attention.is_empty() {
                    view! { <p class="muted">"Every dataset is validated and ready to train. " <a href="/datasets/new">"Upload another"</a></p> }.into_any()
                } else {
                    view! {
                        <ul class="list">
                            {attention.into_iter().map(|d| {
                                let why = match d.status.as_str() {
                                    "invalid" => "has problems to fix",
                                    "uploading" => "upload not finished",
                                    "validating" => "being validated",
                                    _ if !d.training_ready => "valid, but not trainable yet",
                                    _ => "",
                                };
                                view! {
                                    <li>
                                        <a href=format!("/datasets/{}", d.id)>{d.name.clone()}</a>
                                        " "<StatusBadge status=d.status.clone()/>
                                        <span class="muted small">{format!(" {why}")}</span>
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                    }.into_any()
                }}
            </section>
        </div>
    }
}

#[component]
fn SpendCard(budget: BudgetView) -> impl IntoView {
    let share = budget.spent_share();
    let level = if share >= 1.0 {
        "over"
    } else if share >= engine::costs::WARN_SHARE {
        "warn"
    } else {
        "ok"
    };
    view! {
        <section class="card panel" aria-labelledby="spend-heading">
            <h2 id="spend-heading">"This month"</h2>
            <p class="stat-value spend-total">{money(budget.spent_this_month)}</p>
            <p class="small">{format!(
                "of {} budget ({:.0}%) since {} ({}).",
                money(budget.monthly_budget),
                share * 100.0,
                budget.month_start.format("%B %-d"),
                budget.time_zone
            )}</p>
            <progress class=format!("budget-bar budget-{level}") max="100" value=format!("{:.1}", (share * 100.0).min(100.0)) aria-label="Share of the monthly budget spent"></progress>
            <p class="muted small">{format!(
                "{} held by {} active job(s) of {} allowed.",
                money(budget.reserved_by_active_jobs),
                budget.active_jobs,
                budget.max_active_jobs
            )}</p>
            <p class="small"><a href="/costs">"Costs"</a>" · "<a href="/settings">"Change the budget"</a></p>
        </section>
    }
}

/// The active jobs, following the page's live stream: progress and cost move as the workers
/// report, a job that ends shows how, and a new job reloads the list. An island.
#[cfg_attr(any(feature = "ssr", feature = "bundle-core"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-core")), component)]
fn ActiveJobs(jobs: Vec<JobView>) -> impl IntoView {
    let rows = RwSignal::new(jobs);
    let refresh = move || {
        leptos::task::spawn_local(async move {
            if let Ok(fresh) = overview_data().await {
                rows.set(fresh.active_jobs);
            }
        });
    };
    {
        let bus = crate::live::LiveBus::get();
        bus.on(move |message| match message {
            message if message.asks_reload() => refresh(),
            UserMessage::Job(record)
                if matches!(record.event, JobEvent::Status(_) | JobEvent::Metrics(_)) =>
            {
                let known = rows.with_untracked(|list| list.iter().any(|j| j.id == record.job_id));
                if known {
                    rows.update(|list| {
                        if let Some(job) = list.iter_mut().find(|j| j.id == record.job_id) {
                            job.follow(record);
                        }
                    });
                } else if matches!(record.event, JobEvent::Status(_)) {
                    refresh();
                }
            }
            _ => {}
        });
    }
    view! {
        <section class="card panel overview-jobs" aria-labelledby="active-heading">
            <h2 id="active-heading">"Training now"</h2>
            {move || rows.with(|list| list.is_empty()).then(|| view! {
                <p class="muted">"Nothing is queued or running. " <a href="/train">"Start a training job"</a></p>
            })}
            <ul class="list">
                <For each=move || rows.get() key=|j| (j.id, j.status, j.current_stage, j.progress.to_bits(), j.current_cost.to_bits()) let:j>
                    <li class="overview-job">
                        <a href=format!("/jobs/{}", j.id)>{j.dataset_name.clone().unwrap_or_else(|| "dataset".into())}</a>
                        " "<span class=format!("badge badge-{}", j.status)>{j.status.as_str()}</span>
                        " "<span class="muted small">{if j.status.is_terminal() { String::new() } else { j.current_stage.label().to_owned() }}</span>
                        <div class="row">
                            <progress max="100" value=j.progress.to_string() aria-label=format!("progress of {}", j.dataset_name.clone().unwrap_or_default())></progress>
                            <span class="small job-progress">{format!("{:.0}%", j.progress)}</span>
                            <span class="small muted">{format!(
                                "{} so far of ~{}",
                                money(j.final_cost.unwrap_or(j.current_cost)),
                                j.estimated_total_cost.map(money).unwrap_or_else(|| "—".into())
                            )}</span>
                        </div>
                    </li>
                </For>
            </ul>
            <a class="small" href="/jobs">"All jobs"</a>
        </section>
    }
}
