//! One dataset: its verdict, statistics, token-length histogram, a sample as chat bubbles, and
//! every problem with its line number and a suggestion. While validation runs, the page
//! follows the status live.

use engine::datasets::{DatasetStatus, DatasetView, TokenDistribution};
use leptos::form::ActionForm;
use leptos::prelude::*;

use super::{DeleteDataset, StatusBadge, format_label, get_dataset, thousands};
use crate::components::{ErrorState, PageHeader, Skeleton, use_id_param};
use crate::error::AppError;
use crate::live::{LiveBus, UserMessage, dataset_pending};
use uuid::Uuid;

#[component]
pub fn DatasetDetailPage() -> impl IntoView {
    let id = use_id_param();
    let dataset = Resource::new(
        move || id.get(),
        |id| async move {
            match id {
                Some(id) => get_dataset(id).await,
                None => Err(AppError::NotFound),
            }
        },
    );
    view! {
        <Transition fallback=|| view! { <Skeleton rows=6/> }>
            {move || dataset.get().map(|result| match result {
                Err(AppError::NotFound) => view! {
                    <PageHeader title="Dataset not found" description="It does not exist, or it is not yours."/>
                    <p><a href="/datasets">"Back to your datasets"</a></p>
                }.into_any(),
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(d) => view! { <Dataset dataset=d/> }.into_any(),
            })}
        </Transition>
    }
}

/// Follows validation live, an island with nothing to show: the page's shared stream says when
/// this dataset's status changes, and the page is loaded again to show the verdict. When the
/// stream (re)opens, a pending dataset's status is read once more, in case it changed between
/// the page's render and the stream's start.
#[cfg_attr(any(feature = "ssr", feature = "bundle-charts"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-charts")), component)]
fn FollowDataset(id: Uuid, pending: bool) -> impl IntoView {
    LiveBus::get().on(move |message| match message {
        UserMessage::Dataset(change) if change.dataset_id == id => crate::components::reload(),
        UserMessage::Connected { .. } | UserMessage::Resync if pending => {
            leptos::task::spawn_local(async move {
                if let Ok(d) = get_dataset(id).await
                    && !dataset_pending(d.status)
                {
                    crate::components::reload();
                }
            });
        }
        _ => {}
    });
}

#[component]
fn Dataset(dataset: DatasetView) -> impl IntoView {
    let d = dataset;
    let status = match d.status {
        DatasetStatus::Uploading => "uploading",
        DatasetStatus::Validating => "validating",
        DatasetStatus::Ready => "ready",
        DatasetStatus::Invalid => "invalid",
    };
    let summary = format!(
        "{} · {} · uploaded {}",
        d.file_name,
        engine::format::bytes(d.file_size.max(0) as u64),
        d.created_at.format("%Y-%m-%d %H:%M UTC")
    );
    let delete = ServerAction::<DeleteDataset>::new();
    let verdict = match d.status {
        DatasetStatus::Uploading => view! {
            <section class="callout" role="status">
                <p><strong>"Waiting for the upload to finish."</strong> " If you closed the upload page, upload the file again as a new dataset."</p>
            </section>
        }.into_any(),
        DatasetStatus::Validating => view! {
            <section class="callout" role="status" aria-live="polite">
                <span class="spinner" aria-hidden="true"></span>
                <p><strong>"Validating…"</strong> " Every line is checked and counted; this page updates by itself."</p>
            </section>
        }.into_any(),
        DatasetStatus::Ready if d.training_ready => view! {
            <section class="callout callout-success" role="status">
                <p><strong>"Ready to train."</strong> {format!(" Detected format: {}.", format_label(d.format.map(|f| f.as_str())))}</p>
                <a class="btn btn-primary" href=format!("/train?dataset={}", d.id)>"Train on this dataset"</a>
            </section>
        }.into_any(),
        DatasetStatus::Ready => view! {
            <section class="callout callout-warning" role="status">
                <p><strong>"Valid, but not trainable yet: "</strong>{d.status_message.clone().unwrap_or_default()}</p>
            </section>
        }.into_any(),
        DatasetStatus::Invalid => view! {
            <section class="callout callout-danger" role="alert">
                <p><strong>"This file has problems. "</strong>{d.status_message.clone().unwrap_or_else(|| "Fix them and upload the file again.".into())}</p>
            </section>
        }.into_any(),
    };
    let stats = d.statistics.clone();
    view! {
        <PageHeader title=d.name.clone() description=summary>
            <StatusBadge status=status/>
            <details class="confirm">
                <summary class="btn btn-small">"Delete"</summary>
                <div class="confirm-box">
                    <p>"Delete this dataset and its files? Jobs already trained on it keep their models."</p>
                    <ActionForm action=delete>
                        <input type="hidden" name="id" value=d.id.to_string()/>
                        <input type="hidden" name="redirect_to" value="/datasets"/>
                        <button type="submit" class="btn btn-small btn-danger">"Yes, delete"</button>
                    </ActionForm>
                </div>
            </details>
        </PageHeader>
        <FollowDataset id=d.id pending=dataset_pending(d.status)/>
        {d.description.clone().map(|text| view! { <p class="muted">{text}</p> })}
        {verdict}
        {stats.map(|s| view! {
            <section class="stats" aria-label="Statistics">
                {view! {
                <Stat label="Examples" value=thousands(s.examples as i64)/>
                <Stat label="Conversations" value=thousands(s.conversations as i64)/>
                <Stat label="Messages" value=thousands(s.messages as i64)/>
                <Stat label="User turns / example" value=format!("{:.1}", s.avg_turns)/>
                <Stat label="Total tokens" value=thousands(s.total_tokens as i64)/>
                <Stat label="Assistant tokens" value=thousands(s.assistant_tokens as i64)/>
                <Stat label=format!("Over {} tokens", s.max_seq_len) value=thousands(s.over_max_seq_len as i64)/>
                }.into_any()}
                {(s.skipped_examples > 0).then(|| view! { <Stat label="Pairs without a target" value=thousands(s.skipped_examples as i64)/> })}
            </section>
            <section class="card panel">
                <h2>"Tokens per example"</h2>
                <p class="muted small">{format!("Counted with {}.", s.tokenizer)}</p>
                <Histogram tokens=s.tokens.clone() max_seq_len=s.max_seq_len/>
            </section>
        }.into_any())}
        {(!d.sample.is_empty()).then(|| view! {
            <section class="card panel">
                <h2>"Sample"</h2>
                {d.sample.iter().enumerate().map(|(i, messages)| view! {
                    <div class="chat" aria-label=format!("Example {}", i + 1)>
                        {messages.iter().map(|m| view! {
                            <div class=format!("bubble bubble-{}", m.role)>
                                <span class="bubble-role">{m.role.clone()}</span>
                                <p>{m.content.clone()}</p>
                            </div>
                        }).collect_view()}
                    </div>
                }).collect_view()}
            </section>
        }.into_any())}
        {(!d.validation_errors.is_empty()).then(|| {
            let total: u64 = d.error_counts.values().sum();
            view! {
                <section class="card panel">
                    <h2>{format!("Problems ({})", thousands(total as i64))}</h2>
                    <p class="muted small">
                        {d.error_counts.iter().map(|(code, n)| format!("{code}: {n}")).collect::<Vec<_>>().join(" · ")}
                        {(total as usize > d.validation_errors.len()).then(|| format!(" — the first {} are listed.", d.validation_errors.len()))}
                    </p>
                    <div class="table-wrap">
                        <table class="table problems">
                            <thead><tr><th class="num">"Line"</th><th>"Problem"</th><th>"What to do"</th></tr></thead>
                            <tbody>
                                {d.validation_errors.iter().map(|issue| view! {
                                    <tr>
                                        <td class="num">
                                            {issue.line.map(|l| l.to_string()).unwrap_or_else(|| "—".into())}
                                            {issue.index.map(|i| view! { <span class="muted small">{format!(" (#{})", i + 1)}</span> })}
                                        </td>
                                        <td><code>{issue.code.clone()}</code>" "{issue.message.clone()}</td>
                                        <td>{issue.suggestion.clone()}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                </section>
            }.into_any()
        })}
    }
    .into_any()
}

#[component]
fn Stat(#[prop(into)] label: String, #[prop(into)] value: String) -> impl IntoView {
    view! {
        <div class="stat card">
            <span class="stat-label">{label}</span>
            <span class="stat-value">{value}</span>
        </div>
    }
}

/// The token-length distribution, an island: a charming (ECharts) bar chart once the page is
/// interactive, CSS bars before that (and without JavaScript), and the numbers in text beside it.
#[cfg_attr(any(feature = "ssr", feature = "bundle-charts"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-charts")), component)]
fn Histogram(tokens: TokenDistribution, max_seq_len: u32) -> impl IntoView {
    let peak = tokens
        .histogram
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(1)
        .max(1);
    let text = format!(
        "min {} · median {} · p95 {} · max {} · mean {:.0}",
        thousands(tokens.min as i64),
        thousands(tokens.p50 as i64),
        thousands(tokens.p95 as i64),
        thousands(tokens.max as i64),
        tokens.mean
    );
    let charted = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    {
        let buckets = tokens.histogram.clone();
        Effect::new(move || {
            let buckets = buckets.clone();
            crate::charts::with_echarts(move || {
                if crate::charts::draw_histogram("token-histogram", &buckets, max_seq_len) {
                    charted.set(true);
                }
            });
        });
    }
    view! {
        <p class="small">{text}</p>
        <div id="token-histogram" class="chart" class:drawn=move || charted.get() aria-hidden="true"></div>
        <div class="histogram" class:hidden=move || charted.get() role="img" aria-label="Histogram of tokens per example">
            {tokens.histogram.iter().map(|b| {
                let height = (b.count as f64 / peak as f64 * 100.0).max(if b.count > 0 { 2.0 } else { 0.0 });
                let over = b.from > u64::from(max_seq_len);
                view! {
                    <div class="bar" class:over=over title=format!("{}–{} tokens: {} examples", b.from, b.to, b.count)>
                        <div class="bar-fill" style=format!("height: {height:.1}%")></div>
                    </div>
                }
            }).collect_view()}
        </div>
        <p class="muted small histogram-axis" class:hidden=move || charted.get()>
            <span>{thousands(tokens.min as i64)}</span>
            <span>{format!("tokens per example (bars past {max_seq_len} are over the context length)")}</span>
            <span>{thousands(tokens.max as i64)}</span>
        </p>
    }
}
