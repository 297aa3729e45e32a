//! Jobs: the caller's training runs — the list (filter by status, pages, live status and
//! progress) and one job's live monitor.

#[cfg(feature = "hydrate")]
mod live;
mod monitor;

pub use monitor::{JobBadge, JobPage};

use engine::jobs::{JobView, stage_label};
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;

/// Rows per page of the Jobs list.
const PAGE_SIZE: u32 = 25;
const FILTERS: [(&str, &str); 7] = [
    ("", "All"),
    ("running", "Running"),
    ("initializing", "Starting"),
    ("queued", "Queued"),
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPageData {
    pub jobs: Vec<JobView>,
    pub total: i64,
    pub page: u32,
}

#[server(prefix = "/rpc", endpoint = "list_jobs")]
pub async fn list_jobs(status: Option<String>, page: u32) -> Result<JobPageData, AppError> {
    let user = crate::accounts::server::require_user().await?;
    let db = use_context::<engine::db::Db>().ok_or(AppError::Internal)?;
    let status = status.filter(|s| FILTERS.iter().any(|(k, _)| !k.is_empty() && k == s));
    let page = page.max(1);
    engine::jobs::service::list(&db, user.id, status.as_deref(), page, PAGE_SIZE)
        .await
        .map(|(jobs, total)| JobPageData { jobs, total, page })
        .map_err(AppError::internal)
}

#[component]
pub fn JobsPage() -> impl IntoView {
    let query = use_query_map();
    let status = move || query.with(|q| q.get("status").filter(|s| !s.is_empty()));
    let page = move || {
        query.with(|q| {
            q.get("page")
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(1)
        })
    };
    let jobs = Resource::new(
        move || (status(), page()),
        |(status, page)| list_jobs(status, page),
    );
    view! {
        <PageHeader title="Jobs" description="Your training runs: status, progress and cost so far, live.">
            <a class="btn btn-primary" href="/train">"New training job"</a>
        </PageHeader>
        <nav class="filters" aria-label="Filter by status">
            {FILTERS.iter().map(|(key, label)| {
                let href = if key.is_empty() { "/jobs".to_owned() } else { format!("/jobs?status={key}") };
                let current = move || status().unwrap_or_default() == *key;
                view! {
                    <a href=href class="chip" class:active=current aria-current=move || current().then_some("page")>{*label}</a>
                }
            }).collect_view()}
        </nav>
        <Transition fallback=|| view! { <Skeleton rows=4/> }>
            {move || jobs.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string() retry=Callback::new(move |_| jobs.refetch())/> }.into_any(),
                Ok(data) if data.jobs.is_empty() && status().is_some() => view! {
                    <EmptyState icon="◷" title="No jobs with this status">
                        <p><a href="/jobs">"Show all jobs"</a></p>
                    </EmptyState>
                }.into_any(),
                Ok(data) if data.jobs.is_empty() => view! {
                    <EmptyState icon="◷" title="No training jobs yet">
                        <p>"Jobs you start appear here, with their progress and the cost so far against the estimate."</p>
                        <p><a href="/train">"Configure a training job"</a></p>
                    </EmptyState>
                }.into_any(),
                Ok(data) => view! { <JobsTable data=data status=status() refresh=Callback::new(move |_| jobs.refetch())/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn JobsTable(data: JobPageData, status: Option<String>, refresh: Callback<()>) -> impl IntoView {
    let pages = ((data.total.max(0) as u32).div_ceil(PAGE_SIZE)).max(1);
    let page = data.page;
    let rows = RwSignal::new(data.jobs);
    let live = RwSignal::new(false);
    // Only the browser follows the stream.
    #[cfg(not(feature = "hydrate"))]
    let _ = refresh;
    // Status changes and progress of the listed jobs, live.
    #[cfg(feature = "hydrate")]
    live::follow("/api/events", live, move |event| {
        if event.kind == "resync" {
            refresh.run(());
            return true;
        }
        rows.update(|list| {
            if let Some(job) = list.iter_mut().find(|j| j.id == event.job_id) {
                let p = &event.payload;
                let num = |k: &str| p.get(k).and_then(serde_json::Value::as_f64);
                if event.kind == "status" {
                    if let Some(s) = p.get("status").and_then(|v| v.as_str()) {
                        job.status = s.to_owned();
                    }
                    if let Some(s) = p.get("current_stage").and_then(|v| v.as_str()) {
                        job.current_stage = s.to_owned();
                    }
                } else if job.status == "initializing" {
                    job.status = "running".into();
                    job.current_stage = "training".into();
                }
                job.progress = num("progress").unwrap_or(job.progress).max(job.progress);
                job.current_cost = num("current_cost").unwrap_or(job.current_cost);
            }
        });
        true
    });
    let link = move |target: u32| match &status {
        Some(s) => format!("/jobs?status={s}&page={target}"),
        None => format!("/jobs?page={target}"),
    };
    view! {
        <div class="table-wrap card">
            <table class="table jobs-table">
                <thead><tr>
                    <th>"Status"</th><th>"Dataset"</th><th>"Model"</th><th>"Preset"</th><th>"GPU"</th>
                    <th class="num">"Progress"</th><th class="num">"Cost so far / estimate"</th><th>"Created"</th>
                </tr></thead>
                <tbody>
                    <For each=move || rows.get() key=|j| (j.id, j.status.clone(), j.progress.to_bits(), j.current_cost.to_bits()) let:j>
                        <tr>
                            <td>
                                <span class=format!("badge badge-{}", j.status)>{j.status.clone()}</span>
                                // The stage says more than the badge only while the job runs.
                                {(!engine::jobs::is_terminal(&j.status)).then(|| view! {
                                    " "<span class="muted small">{stage_label(&j.current_stage)}</span>
                                })}
                            </td>
                            <td><a href=format!("/jobs/{}", j.id)>{j.dataset_name.clone().unwrap_or_else(|| "dataset".into())}</a></td>
                            <td>{j.base_model.clone()}</td>
                            <td>{j.preset.clone()}</td>
                            <td>{format!("{} × {}", j.gpu_count, j.gpu_type)}</td>
                            <td class="num">
                                <progress max="100" value=j.progress.to_string() aria-label="progress"></progress>
                                " "{format!("{:.0}%", j.progress)}
                            </td>
                            <td class="num">{format!(
                                "{} / {}",
                                engine::format::money(j.final_cost.unwrap_or(j.current_cost)),
                                j.estimated_total_cost.map(engine::format::money).unwrap_or_else(|| "—".into())
                            )}</td>
                            <td><time datetime=j.created_at.to_rfc3339() title=j.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()>{j.created_at.format("%Y-%m-%d %H:%M").to_string()}</time></td>
                        </tr>
                    </For>
                </tbody>
            </table>
        </div>
        <nav class="pager" aria-label="Pages">
            <span class="muted small">{format!("Page {page} of {pages} · {} jobs", data.total)}</span>
            {(page > 1).then(|| view! { <a class="btn" href=link(page - 1)>"← Newer"</a> })}
            {(page < pages).then(|| view! { <a class="btn" href=link(page + 1)>"Older →"</a> })}
            <span class="muted small live-dot" class:on=move || live.get()>{move || if live.get() { "live" } else { "" }}</span>
        </nav>
    }
}
