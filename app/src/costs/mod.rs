//! Costs: what training cost over a date range — totals by type, a daily chart and a by-GPU
//! chart, the most expensive jobs against their estimates, and a CSV export. The range is a
//! plain GET form (presets are links), so the page works without JavaScript. Days are those of
//! the account's time zone, which follows the browser's once the page has hydrated.

use chrono::NaiveDate;
use engine::costs::report::{CostReport, Period, SeriesPoint};
use engine::format::money;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;

#[server(prefix = "/rpc", endpoint = "costs_page")]
pub async fn costs_page(
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    period: Option<Period>,
) -> Result<CostReport, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    // Dates win over a preset; neither: this month so far. Days are the account's.
    let query = engine::costs::report::CostQuery {
        start_date: start,
        end_date: end,
        period: period.filter(|_| start.is_none() && end.is_none()),
        ..Default::default()
    };
    Ok(engine::costs::report::report(&db, user.id, &query).await?)
}

#[component]
pub fn CostsPage() -> impl IntoView {
    let query = use_query_map();
    let params = move || {
        query.with(|q| {
            let date = |k: &str| q.get(k).and_then(|v| v.parse::<NaiveDate>().ok());
            (
                date("start"),
                date("end"),
                q.get("period").as_deref().and_then(Period::parse),
            )
        })
    };
    let report = Resource::new(params, |(start, end, period)| {
        costs_page(start, end, period)
    });
    let presets = [
        ("?period=week", "7 days"),
        ("?period=month", "30 days"),
        ("?period=quarter", "90 days"),
        ("?period=this_month", "This month"),
        ("?period=last_month", "Last month"),
    ];
    view! {
        <PageHeader title="Costs" description="What training cost, from billed execution time and stored files, by day, GPU type and job."/>
        <nav class="filters" aria-label="Date range presets">
            {presets.into_iter().map(|(href, label)| view! { <a class="chip" href=format!("/costs{href}")>{label}</a> }).collect_view()}
        </nav>
        <Transition fallback=|| view! { <Skeleton rows=5/> }>
            {move || report.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(r) => view! { <Report report=r/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn Report(report: CostReport) -> impl IntoView {
    let csv = format!(
        "/api/costs?start_date={}&end_date={}&format=csv",
        report.start_date, report.end_date
    );
    let zone = report.time_zone.clone();
    let form = view! {
        <form class="row cost-range" method="get" action="/costs">
            <label for="start">"From"</label>
            <input id="start" type="date" name="start" value=report.start_date.to_string() required/>
            <label for="end">"to"</label>
            <input id="end" type="date" name="end" value=report.end_date.to_string() required/>
            <button class="btn" type="submit">"Show"</button>
            <a class="btn" href=csv download>"Export CSV"</a>
        </form>
    };
    if report.records.is_empty() {
        return view! {
            {form}
            <EmptyState icon="$" title="No costs in this range">
                <p>{format!("Nothing was billed from {} to {} (days in {zone}). Each job records its cost once, when it ends, from its measured execution time.", report.start_date, report.end_date)}</p>
                <p><a href="/train">"Start a training job"</a></p>
            </EmptyState>
        }
        .into_any();
    }
    let by_type = report.cost_by_type.clone();
    let accuracy = match report.median_estimate_ratio {
        Some(r) => format!(
            "Jobs cost {:.0}% of their estimate (median of actual ÷ estimate).",
            r * 100.0
        ),
        None => "No job in this range had an estimate above zero to compare with.".into(),
    };
    let labels =
        |points: &[SeriesPoint]| points.iter().map(|p| p.label.clone()).collect::<Vec<_>>();
    let amounts = |points: &[SeriesPoint]| points.iter().map(|p| p.amount).collect::<Vec<_>>();
    view! {
        // Days are the account's: in the browser, the browser's zone becomes the account's.
        <crate::settings::FollowBrowserZone shown=zone.clone()/>
        {form}
        <div class="stats">
            <div class="stat card"><span class="stat-label">"Total"</span><span class="stat-value cost-total">{money(report.total)}</span></div>
            {by_type.into_iter().map(|(t, a)| view! {
                <div class="stat card"><span class="stat-label">{t}</span><span class="stat-value">{money(a)}</span></div>
            }).collect_view()}
        </div>
        <div class="chart-grid">
            <section class="card">
                <h2>"By day"</h2>
                <p class="small">{format!("{} to {} (days in {zone}).", report.start_date, report.end_date)}</p>
                <crate::charts::MoneyBars id="cost-day-chart" x_name="day" labels=labels(&report.by_day) amounts=amounts(&report.by_day)/>
            </section>
            <section class="card">
                <h2>"By GPU type"</h2>
                <p class="small">{report.by_gpu.iter().map(|p| format!("{}: {}", p.label, money(p.amount))).collect::<Vec<_>>().join(" · ")}</p>
                <crate::charts::MoneyBars id="cost-gpu-chart" x_name="GPU type" labels=labels(&report.by_gpu) amounts=amounts(&report.by_gpu)/>
            </section>
        </div>
        <section class="card">
            <h2>"Most expensive jobs"</h2>
            <p class="small">{accuracy}</p>
            <table class="jobs-table cost-jobs">
                <thead><tr><th scope="col">"Job"</th><th scope="col">"GPU"</th><th scope="col">"Cost"</th><th scope="col">"Estimate"</th><th scope="col">"Actual ÷ estimate"</th></tr></thead>
                <tbody>
                    {report.top_jobs.into_iter().map(|j| view! {
                        <tr>
                            <td><a href=format!("/jobs/{}", j.job_id)>{j.dataset_name.clone()}</a></td>
                            <td>{j.gpu_type.clone().unwrap_or_else(|| "—".into())}</td>
                            <td>{money(j.actual)}</td>
                            <td>{j.estimated.map(money).unwrap_or_else(|| "—".into())}</td>
                            <td>{j.ratio.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_else(|| "—".into())}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
    .into_any()
}
