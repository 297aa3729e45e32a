//! One training job, live: status and stage, a progress bar with step/total and ETA, loss and
//! learning-rate charts (train and eval loss), tokens/s, cost so far against the estimate and
//! the cap, the event log, Cancel (confirmed) and Retry. The page renders the whole run so far
//! on the server; once hydrated it follows the job's SSE stream from the last event it showed.

use engine::format::{duration, money, thousands};
use engine::jobs::{JobStatus, JobView, LogLine, MetricPoint};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::components::{ErrorState, PageHeader, PageHeading, Skeleton, use_id_param};
use crate::error::AppError;

/// Everything the page shows, in one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    pub job: JobView,
    pub metrics: Vec<MetricPoint>,
    pub log: Vec<LogLine>,
}

#[server(prefix = "/rpc", endpoint = "job_monitor")]
pub async fn job_monitor(id: Uuid) -> Result<JobSnapshot, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let job = engine::jobs::service::get(&db, user.id, id)
        .await
        .map_err(AppError::from)?;
    let metrics = engine::jobs::service::metrics(&db, user.id, id)
        .await
        .map_err(AppError::from)?;
    let log = engine::jobs::events::log(&db, user.id, id, 300)
        .await
        .map_err(AppError::internal)?
        .into_iter()
        .filter_map(|e| e.log_line())
        .collect();
    Ok(JobSnapshot { job, metrics, log })
}

#[server(prefix = "/rpc", endpoint = "cancel_job")]
pub async fn cancel_job(id: Uuid) -> Result<JobView, AppError> {
    let crate::server_context::SignedIn {
        user, db, catalog, ..
    } = crate::server_context::signed_in().await?;
    engine::jobs::service::cancel(&db, &catalog.limits, user.id, id)
        .await
        .map_err(AppError::from)
}

#[server(prefix = "/rpc", endpoint = "retry_job")]
pub async fn retry_job(id: Uuid) -> Result<JobView, AppError> {
    let crate::server_context::SignedIn {
        user, db, catalog, ..
    } = crate::server_context::signed_in().await?;
    engine::jobs::service::retry(&db, &catalog, user.id, id, None)
        .await
        .map_err(AppError::from)
}

#[component]
pub fn JobPage() -> impl IntoView {
    let id = use_id_param();
    let monitor = Resource::new(
        move || id.get(),
        |id| async move {
            match id {
                Some(id) => job_monitor(id).await,
                None => Err(AppError::NotFound),
            }
        },
    );
    view! {
        <Transition fallback=|| view! { <Skeleton rows=8/> }>
            {move || monitor.get().map(|result| match result {
                Err(AppError::NotFound) => view! {
                    <PageHeader title="Job not found" description="It does not exist, or it is not yours."/>
                    <p><a href="/jobs">"Back to your jobs"</a></p>
                }.into_any(),
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(data) => view! {
                    <leptos_meta::Title text=monitor_title(&data.job)/>
                    <Monitor data=data/>
                }.into_any(),
            })}
        </Transition>
    }
}

/// The status badge with its words.
#[component]
pub fn JobBadge(#[prop(into)] status: Signal<JobStatus>) -> impl IntoView {
    view! { <span class=move || format!("badge badge-{}", status.get())>{move || status.get().as_str()}</span> }
}

fn fmt_number(value: Option<f64>, digits: usize) -> String {
    value
        .filter(|v| v.is_finite())
        .map_or_else(|| "—".into(), |v| format!("{v:.digits$}"))
}

fn monitor_title(job: &JobView) -> String {
    format!(
        "Training on {}",
        job.dataset_name
            .clone()
            .unwrap_or_else(|| "a dataset".into())
    )
}

/// The monitor, an island: it follows the job's own stream from the last event it rendered.
#[cfg_attr(any(feature = "ssr", feature = "bundle-charts"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-charts")), component)]
fn Monitor(data: JobSnapshot) -> impl IntoView {
    let id = data.job.id;
    let title = monitor_title(&data.job);
    let description = format!(
        "{} · {} × {} · preset {} · job {}",
        data.job.base_model,
        data.job.gpu_count,
        data.job.gpu_type,
        data.job.preset,
        &id.to_string()[..8]
    );
    let job = RwSignal::new(data.job);
    let metrics = RwSignal::new(data.metrics);
    let log = RwSignal::new(data.log);
    let connected = RwSignal::new(false);

    #[cfg(feature = "hydrate")]
    {
        let (status, after) = job.with_untracked(|j| (j.status, j.last_event_id));
        if !status.is_terminal() {
            super::live::follow(id, after, connected, job, metrics, log);
        }
        Effect::new(move || {
            let points = metrics.get();
            crate::charts::with_echarts(move || draw_charts(&points));
        });
    }

    let status = Signal::derive(move || job.with(|j| j.status));
    let running = move || !status.get().is_terminal();
    // Seconds left at the last step's pace, while running.
    let eta = move || job.with(|j| j.current_metrics.as_ref().map(|m| m.eta_s));
    let cancel = Action::new(move |_: &()| cancel_job(id));
    let retry = Action::new(move |_: &()| retry_job(id));
    Effect::new(move || {
        if let Some(Ok(updated)) = cancel.value().get() {
            job.update(|j| j.take_answer(&updated));
        }
    });
    Effect::new(move || {
        // The retried run is a new page of events: read it from the server.
        if let Some(Ok(_)) = retry.value().get() {
            crate::components::reload();
        }
    });
    let on_cancel = move |_| {
        if crate::components::confirm(
            "Cancel this training job? The GPU stops now and the cost so far is kept; you can retry later.",
        ) {
            cancel.dispatch(());
        }
    };
    let action_error = move || {
        cancel
            .value()
            .get()
            .and_then(Result::err)
            .or_else(|| retry.value().get().and_then(Result::err))
            .map(|e| e.to_string())
    };

    let progress = move || job.with(|j| j.progress);
    let step_text = move || {
        job.with(|j| match j.total_steps {
            Some(total) => format!(
                "step {} of {}",
                thousands(i64::from(j.current_step)),
                thousands(i64::from(total))
            ),
            None => "steps not known yet".into(),
        })
    };
    let eta_text = move || match (running(), eta()) {
        (true, Some(seconds)) if seconds >= 0.0 => {
            format!("about {} left", duration(seconds.round() as u64))
        }
        (true, _) => "time left: after the first steps".into(),
        (false, _) => String::new(),
    };
    let metric = move |read: fn(&engine::jobs::MetricsUpdate) -> Option<f64>| {
        move || job.with(|j| j.current_metrics.as_ref().and_then(read))
    };
    let cost_text = move || {
        job.with(|j| {
            let spent = j.final_cost.unwrap_or(j.current_cost);
            let estimate = j
                .estimated_total_cost
                .map(money)
                .unwrap_or_else(|| "—".into());
            match j.budget_cap {
                Some(cap) => format!(
                    "{} of {} estimated · cap {}",
                    money(spent),
                    estimate,
                    money(cap)
                ),
                None => format!("{} of {} estimated", money(spent), estimate),
            }
        })
    };
    let summary = move || {
        metrics.with(|points| {
            let losses: Vec<f64> = points.iter().filter_map(|p| p.train_loss).collect();
            let eval = points.iter().rev().find_map(|p| p.eval_loss);
            match (losses.first(), losses.last()) {
                (Some(first), Some(last)) => format!(
                    "Training loss {first:.4} → {last:.4} over {} logged steps{}.",
                    losses.len(),
                    eval.map(|e| format!("; latest eval loss {e:.4}"))
                        .unwrap_or_default()
                ),
                _ => "No training steps yet: the curves appear with the first metrics.".into(),
            }
        })
    };
    let lr_summary = move || {
        metrics.with(|points| {
            let rates: Vec<f64> = points.iter().filter_map(|p| p.learning_rate).collect();
            match (rates.iter().cloned().reduce(f64::max), rates.last()) {
                (Some(peak), Some(last)) => {
                    format!("Learning rate peaked at {peak:.2e}; now {last:.2e}.")
                }
                _ => "The learning-rate schedule appears with the first metrics.".into(),
            }
        })
    };

    view! {
        <PageHeading title=title description=description>
            <Show when=move || running() && !job.with(|j| j.cancel_requested)>
                <button class="btn btn-danger" on:click=on_cancel disabled=move || cancel.pending().get()>
                    {move || if cancel.pending().get() { "Cancelling…" } else { "Cancel job" }}
                </button>
            </Show>
            <Show when=move || status.get().can_retry()>
                <button class="btn btn-primary" on:click=move |_| { retry.dispatch(()); } disabled=move || retry.pending().get()>
                    {move || if retry.pending().get() { "Retrying…" } else { "Retry" }}
                </button>
            </Show>
        </PageHeading>
        {move || action_error().map(|e| view! { <p class="callout callout-danger" role="alert">{e}</p> })}
        <section class="card job-status" aria-live="polite">
            <div class="job-status-line">
                <JobBadge status=status/>
                <strong>{move || job.with(|j| j.current_stage.label())}</strong>
                <span class="muted small live-dot" class:on=move || connected.get()>
                    {move || if connected.get() { "live" } else if running() { "connecting…" } else { "" }}
                </span>
            </div>
            <progress max="100" value=move || progress().to_string() aria-label="Training progress"></progress>
            <p class="small">
                <span>{move || format!("{:.0}%", progress())}</span>" · "
                <span class="job-steps">{step_text}</span>
                {move || { let t = eta_text(); (!t.is_empty()).then(|| view! { " · " <span>{t}</span> }) }}
                {move || job.with(|j| j.checkpoint_step).filter(|_| running()).map(|step| view! {
                    " · " <span class="job-checkpoint" title="A retry, or a run the GPU backend loses, continues from here">
                        {format!("checkpoint at step {}", thousands(i64::from(step)))}
                    </span>
                })}
            </p>
            {move || job.with(|j| j.checkpoint_step).filter(|_| status.get().can_retry()).map(|step| view! {
                <p class="small job-retry-from">{format!("Retry continues from the checkpoint at step {}.", thousands(i64::from(step)))}</p>
            })}
            {move || job.with(|j| j.artifact_id).map(|model| view! {
                <p class="job-model"><a class="btn btn-primary" href=format!("/models/{model}")>"Open the model"</a>
                " — its rating, before/after samples and downloads."</p>
            })}
            {move || job.with(|j| j.resumed_from_step).map(|step| view! {
                <p class="small job-resumed">
                    {format!("Resumed from step {}: ", thousands(i64::from(step)))}
                    "the steps before it were kept from the checkpoint, not trained or paid for again."
                </p>
            })}
            {move || job.with(|j| j.error_message.clone()).filter(|_| matches!(status.get(), JobStatus::Failed | JobStatus::Cancelled)).map(|m| view! {
                <p class="callout callout-danger" role="alert">{m}</p>
            })}
        </section>
        <div class="stats">
            <div class="stat card"><span class="stat-label">"Training loss"</span><span class="stat-value job-loss">{move || fmt_number(metric(|m| Some(m.metrics.train_loss))(), 4)}</span></div>
            <div class="stat card"><span class="stat-label">"Learning rate"</span><span class="stat-value">{move || metric(|m| Some(m.metrics.learning_rate))().map(|v| format!("{v:.2e}")).unwrap_or_else(|| "—".into())}</span></div>
            <div class="stat card"><span class="stat-label">"Tokens/s"</span><span class="stat-value">{move || metric(|m| Some(m.metrics.tokens_per_sec))().map(|v| thousands(v.round() as i64)).unwrap_or_else(|| "—".into())}</span></div>
            <div class="stat card"><span class="stat-label">"Grad norm"</span><span class="stat-value job-grad-norm">{move || fmt_number(metric(|m| Some(m.metrics.grad_norm))(), 3)}</span></div>
            <div class="stat card"><span class="stat-label">"GPU use"</span><span class="stat-value job-gpu-util">{move || metric(|m| m.metrics.gpu_util)().map(|v| format!("{v:.0}%")).unwrap_or_else(|| "—".into())}</span></div>
            <div class="stat card"><span class="stat-label">"Epoch"</span><span class="stat-value">{move || fmt_number(job.with(|j| j.current_epoch), 2)}</span></div>
            <div class="stat card"><span class="stat-label">{move || if running() { "Cost so far" } else { "Cost" }}</span><span class="stat-value small-value">{cost_text}</span></div>
        </div>
        <div class="chart-grid">
            <section class="card">
                <h2>"Loss"</h2>
                <p class="small">{summary}</p>
                <div id="loss-chart" class="chart" aria-hidden="true"></div>
            </section>
            <section class="card">
                <h2>"Learning rate"</h2>
                <p class="small">{lr_summary}</p>
                <div id="lr-chart" class="chart" aria-hidden="true"></div>
            </section>
        </div>
        <section class="card log-card">
            <h2>"Event log"</h2>
            <p class="muted small">"Newest first."</p>
            <ol class="event-log" reversed>
                {move || log.get().into_iter().rev().map(|line| view! {
                    <li class=format!("log-{}", line.level)>
                        <time datetime=line.at.to_rfc3339() title=line.at.format("%Y-%m-%d %H:%M:%S UTC").to_string()>
                            {line.at.format("%H:%M:%S").to_string()}
                        </time>
                        " "<span>{line.text}</span>
                    </li>
                }).collect_view()}
            </ol>
        </section>
        <p class="small"><a href="/jobs">"← All jobs"</a></p>
    }
}

#[cfg(feature = "hydrate")]
fn draw_charts(points: &[MetricPoint]) {
    use crate::charts::{LineSeries, draw_lines, draw_loss_curve, series};
    draw_loss_curve("loss-chart", points);
    draw_lines(
        "lr-chart",
        "step",
        "learning rate",
        vec![LineSeries {
            name: "learning rate",
            color: "#10b981",
            points: series(points, |p| p.learning_rate),
            dashed: false,
        }],
        false,
    );
}
