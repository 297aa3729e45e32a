//! Jobs: the caller's training runs. Creation is in the API now (`POST /api/jobs`); the Train
//! page and live execution come with the next capabilities.

use engine::jobs::JobView;
use leptos::prelude::*;

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;

#[server(prefix = "/rpc", endpoint = "list_jobs")]
pub async fn list_jobs() -> Result<Vec<JobView>, AppError> {
    let user = crate::accounts::server::require_user().await?;
    let db = use_context::<engine::db::Db>().ok_or(AppError::Internal)?;
    engine::jobs::service::list(&db, user.id, None, 1, 100)
        .await
        .map(|(jobs, _)| jobs)
        .map_err(AppError::internal)
}

#[component]
pub fn JobsPage() -> impl IntoView {
    let jobs = Resource::new(|| (), |_| list_jobs());
    view! {
        <PageHeader title="Jobs" description="Your training runs: status, progress and cost so far."/>
        <Suspense fallback=|| view! { <Skeleton rows=4/> }>
            {move || jobs.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string() retry=Callback::new(move |_| jobs.refetch())/> }.into_any(),
                Ok(list) if list.is_empty() => view! {
                    <EmptyState icon="◷" title="No training jobs yet">
                        <p>"Jobs you start appear here, with their progress and the cost so far against the estimate."</p>
                        <p><a href="/train">"Configure a training job"</a></p>
                    </EmptyState>
                }.into_any(),
                Ok(list) => view! {
                    <div class="table-wrap card">
                        <table class="table">
                            <thead><tr>
                                <th>"Status"</th><th>"Dataset"</th><th>"Model"</th><th>"Preset"</th><th>"GPU"</th>
                                <th class="num">"Progress"</th><th class="num">"Cost so far / estimate"</th><th>"Created"</th>
                            </tr></thead>
                            <tbody>
                                {list.into_iter().map(|j| view! {
                                    <tr>
                                        <td><span class=format!("badge badge-{}", j.status)>{j.status.clone()}</span>" "<span class="muted small">{j.current_stage.clone()}</span></td>
                                        <td>{j.dataset_name.clone().unwrap_or_default()}</td>
                                        <td>{j.base_model.clone()}</td>
                                        <td>{j.preset.clone()}</td>
                                        <td>{format!("{} × {}", j.gpu_count, j.gpu_type)}</td>
                                        <td class="num">{format!("{:.0}%", j.progress)}</td>
                                        <td class="num">{format!(
                                            "{} / {}",
                                            engine::format::money(j.current_cost),
                                            j.estimated_total_cost.map(engine::format::money).unwrap_or_else(|| "—".into())
                                        )}</td>
                                        <td><time datetime=j.created_at.to_rfc3339()>{j.created_at.format("%Y-%m-%d %H:%M").to_string()}</time></td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                    <p class="muted small">"Jobs wait in “queued” until the execution engine (RunPod or the local executor) is enabled in a coming release."</p>
                }.into_any(),
            })}
        </Suspense>
    }
}
