//! Jobs: the caller's training runs — the list (filter by status, pages, live status and
//! progress) and one job's live monitor.

#[cfg(feature = "hydrate")]
mod live;
mod monitor;

pub use monitor::{JobBadge, JobPage};

use engine::jobs::{JobEvent, JobRow, JobStatus};
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;
use crate::live::UserMessage;

/// Rows per page of the Jobs list: the choices, the first the default.
const PAGE_SIZES: [u32; 3] = [25, 50, 100];

/// `?per_page=`, one of [`PAGE_SIZES`] (anything else: the default).
fn page_size(asked: Option<u32>) -> u32 {
    asked
        .filter(|n| PAGE_SIZES.contains(n))
        .unwrap_or(PAGE_SIZES[0])
}
/// The status filters, in the order the chips show them (after "All").
const FILTERS: [JobStatus; 6] = [
    JobStatus::Running,
    JobStatus::Initializing,
    JobStatus::Queued,
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPageData {
    pub jobs: Vec<JobRow>,
    pub total: i64,
    pub page: u32,
    pub per_page: u32,
}

#[server(prefix = "/rpc", endpoint = "list_jobs")]
pub async fn list_jobs(
    status: Option<String>,
    page: u32,
    per_page: Option<u32>,
) -> Result<JobPageData, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let status = status.as_deref().and_then(JobStatus::parse);
    let page = page.max(1);
    let per_page = page_size(per_page);
    engine::jobs::service::list_rows(&db, user.id, status, page, per_page)
        .await
        .map(|(jobs, total)| JobPageData {
            jobs,
            total,
            page,
            per_page,
        })
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
    let per_page =
        move || query.with(|q| page_size(q.get("per_page").and_then(|n| n.parse().ok())));
    let jobs = Resource::new(
        move || (status(), page(), per_page()),
        |(status, page, per_page)| list_jobs(status, page, Some(per_page)),
    );
    view! {
        <PageHeader title="Jobs" description="Your training runs: status, progress and cost so far, live.">
            <a class="btn btn-primary" href="/train">"New training job"</a>
        </PageHeader>
        <nav class="filters" aria-label="Filter by status">
            {std::iter::once(("", "All")).chain(FILTERS.iter().map(|s| (s.as_str(), s.label()))).map(|(key, label)| {
                let href = if key.is_empty() { "/jobs".to_owned() } else { format!("/jobs?status={key}") };
                let current = move || status().unwrap_or_default() == key;
                view! {
                    <a href=href class="chip" class:active=current aria-current=move || current().then_some("page")>{label}</a>
                }
            }).collect_view()}
        </nav>
        <Transition fallback=|| view! { <Skeleton rows=4/> }>
            {move || jobs.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
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
                Ok(data) => view! { <JobsTable data=data status=status()/> }.into_any(),
            })}
        </Transition>
    }
}

/// The list, an island: rows follow the page's live stream.
#[cfg_attr(any(feature = "ssr", feature = "bundle-core"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-core")), component)]
fn JobsTable(data: JobPageData, status: Option<String>) -> impl IntoView {
    let per_page = data.per_page;
    let pages = ((data.total.max(0) as u32).div_ceil(per_page)).max(1);
    let page = data.page;
    let rows = RwSignal::new(data.jobs);
    // After a gap in the stream, the rows are read again from the server.
    let refresh = {
        let status = status.clone();
        move || {
            let status = status.clone();
            leptos::task::spawn_local(async move {
                if let Ok(fresh) = list_jobs(status, page, Some(per_page)).await {
                    rows.set(fresh.jobs);
                }
            });
        }
    };
    // Status changes and progress of the listed jobs, live, from the page's shared stream.
    let bus = crate::live::LiveBus::get();
    let live = bus.connected;
    {
        bus.on(move |message| match message {
            message if message.asks_reload() => refresh(),
            // The list shows status, stage, progress and cost: status and metrics carry them.
            UserMessage::Job(record)
                if matches!(record.event, JobEvent::Status(_) | JobEvent::Metrics(_)) =>
            {
                rows.update(|list| {
                    if let Some(job) = list.iter_mut().find(|j| j.id == record.job_id) {
                        job.follow(record);
                    }
                });
            }
            _ => {}
        });
    }
    // Plain links: paging and the page size work without JavaScript.
    let link = move |target: u32, size: u32| {
        let size = if size == PAGE_SIZES[0] {
            String::new()
        } else {
            format!("&per_page={size}")
        };
        match &status {
            Some(s) => format!("/jobs?status={s}&page={target}{size}"),
            None => format!("/jobs?page={target}{size}"),
        }
    };
    view! {
        <div class="table-wrap card">
            <table class="table jobs-table">
                <thead><tr>
                    <th>"Status"</th><th>"Dataset"</th><th>"Model"</th><th>"Preset"</th><th>"GPU"</th>
                    <th class="num">"Progress"</th><th class="num">"Cost so far / estimate"</th><th>"Created"</th>
                </tr></thead>
                <tbody>
                    <For each=move || rows.get() key=|j| (j.id, j.status, j.current_stage, j.progress.to_bits(), j.current_cost.to_bits()) let:j>
                        <tr>
                            <td>
                                <span class=format!("badge badge-{}", j.status)>{j.status.as_str()}</span>
                                // The stage says more than the badge only while the job runs.
                                {(!j.status.is_terminal()).then(|| view! {
                                    " "<span class="muted small">{j.current_stage.label()}</span>
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
            {(page > 1).then(|| view! { <a class="btn" href=link(page - 1, per_page)>"← Newer"</a> })}
            {(page < pages).then(|| view! { <a class="btn" href=link(page + 1, per_page)>"Older →"</a> })}
            <span class="muted small page-sizes">"Rows: "
                {PAGE_SIZES.into_iter().map(|size| view! {
                    <a href=link(1, size) class="chip" class:active=size == per_page
                        aria-current=(size == per_page).then_some("page")
                        aria-label=format!("{size} rows per page")>{size}</a>
                }).collect_view()}
            </span>
            <span class="muted small live-dot" class:on=move || live.get()>{move || if live.get() { "live" } else { "" }}</span>
        </nav>
    }
}
