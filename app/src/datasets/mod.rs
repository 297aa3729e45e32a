//! Datasets: the list (search, filters, pagination), the upload page and the detail page, and
//! the server functions behind them (bodies call `engine::datasets::service`).

mod detail;
mod upload;

pub use detail::DatasetDetailPage;
pub use upload::UploadPage;

use chrono::{DateTime, Utc};
use engine::datasets::{DatasetFormat, DatasetView};
use leptos::prelude::*;
use leptos_router::components::{A, Form};
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRowView {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub format: Option<String>,
    pub file_size: i64,
    pub examples: Option<i64>,
    pub tokens: Option<i64>,
    pub training_ready: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetPage {
    pub items: Vec<DatasetRowView>,
    pub total: i64,
    pub page: u32,
    pub limit: u32,
}

pub const PAGE_SIZE: u32 = 20;

/// What the upload page needs to send the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadTicket {
    pub id: Uuid,
    pub upload_url: String,
}

#[server(prefix = "/rpc", endpoint = "list_datasets")]
pub async fn list_datasets(
    search: Option<String>,
    status: Option<String>,
    format: Option<String>,
    page: Option<u32>,
) -> Result<DatasetPage, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let filter = engine::datasets::ListFilter {
        search,
        status: status
            .as_deref()
            .and_then(engine::datasets::DatasetStatus::parse),
        format: format.as_deref().and_then(DatasetFormat::parse),
        page: page.unwrap_or(1).max(1),
        limit: PAGE_SIZE,
    };
    let (rows, total) = engine::datasets::service::list(&db, user.id, &filter)
        .await
        .map_err(AppError::from)?;
    Ok(DatasetPage {
        items: rows
            .into_iter()
            .map(|d| DatasetRowView {
                id: d.id,
                name: d.name,
                status: d.status,
                format: d.format,
                file_size: d.file_size,
                examples: d.total_training_pairs.map(i64::from),
                tokens: d.total_tokens,
                training_ready: d.training_ready,
                created_at: d.created_at,
            })
            .collect(),
        total,
        page: filter.page,
        limit: filter.limit,
    })
}

#[server(prefix = "/rpc", endpoint = "get_dataset")]
pub async fn get_dataset(id: Uuid) -> Result<DatasetView, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    engine::datasets::service::get(&db, user.id, id)
        .await
        .map_err(AppError::from)
}

#[server(prefix = "/rpc", endpoint = "create_dataset")]
pub async fn create_dataset(
    name: String,
    description: Option<String>,
    file_name: String,
    file_size: u64,
) -> Result<UploadTicket, AppError> {
    let crate::server_context::SignedIn {
        user,
        db,
        storage,
        catalog,
    } = crate::server_context::signed_in().await?;
    let new = engine::datasets::NewDataset {
        name,
        description,
        file_name,
        file_size,
    };
    let created =
        engine::datasets::service::create(&db, &storage, &catalog.limits, user.id, &new, None)
            .await
            .map_err(AppError::from)?;
    Ok(UploadTicket {
        id: created.dataset.id,
        upload_url: created.upload.url,
    })
}

#[server(prefix = "/rpc", endpoint = "confirm_dataset")]
pub async fn confirm_dataset(id: Uuid) -> Result<(), AppError> {
    let crate::server_context::SignedIn {
        user, db, storage, ..
    } = crate::server_context::signed_in().await?;
    engine::datasets::service::confirm(&db, &storage, user.id, id)
        .await
        .map(|_| ())
        .map_err(AppError::from)
}

/// Deletes a dataset; `redirect_to` (a path of ours) is where a plain form post lands after.
#[server(prefix = "/rpc", endpoint = "delete_dataset")]
pub async fn delete_dataset(id: Uuid, redirect_to: Option<String>) -> Result<(), AppError> {
    let crate::server_context::SignedIn {
        user, db, storage, ..
    } = crate::server_context::signed_in().await?;
    engine::datasets::service::delete(&db, &storage, user.id, id)
        .await
        .map_err(AppError::from)?;
    if let Some(path) = redirect_to {
        leptos_axum::redirect(&crate::accounts::safe_next(Some(&path)));
    }
    Ok(())
}

/// A status as a badge with its word (colour is never the only signal).
#[component]
pub fn StatusBadge(#[prop(into)] status: String) -> impl IntoView {
    let label = match status.as_str() {
        "uploading" => "Uploading",
        "validating" => "Validating",
        "ready" => "Ready",
        "invalid" => "Invalid",
        other => other,
    }
    .to_owned();
    view! { <span class=format!("badge badge-{status}")>{label}</span> }
}

pub fn format_label(format: Option<&str>) -> String {
    format
        .and_then(DatasetFormat::parse)
        .map(|f| f.label().to_owned())
        .unwrap_or_else(|| "—".to_owned())
}

pub fn thousands(n: i64) -> String {
    engine::format::thousands(n)
}

#[component]
pub fn DatasetsPage() -> impl IntoView {
    let query = use_query_map();
    let param = move |name: &str| query.with(|q| q.get(name).filter(|v| !v.is_empty()));
    let list = Resource::new(
        move || {
            (
                param("search"),
                param("status"),
                param("format"),
                param("page").and_then(|p| p.parse::<u32>().ok()),
            )
        },
        |(search, status, format, page)| list_datasets(search, status, format, page),
    );
    let filtered =
        move || param("search").is_some() || param("status").is_some() || param("format").is_some();
    let page_link = move |page: u32| {
        let mut parts = Vec::new();
        for name in ["search", "status", "format"] {
            if let Some(v) = param(name) {
                parts.push(format!("{name}={}", encode(&v)));
            }
        }
        parts.push(format!("page={page}"));
        format!("/datasets?{}", parts.join("&"))
    };
    view! {
        <PageHeader title="Datasets" description="Training data you have uploaded, validated and ready to train on.">
            <A href="/datasets/new" attr:class="btn btn-primary">"Upload dataset"</A>
        </PageHeader>
        <Form method="GET" action="/datasets" attr:class="filters" attr:role="search">
            <label class="visually-hidden" for="search">"Search by name"</label>
            <input id="search" name="search" type="search" placeholder="Search by name" value=move || param("search").unwrap_or_default()/>
            <label class="visually-hidden" for="status">"Status"</label>
            <select id="status" name="status">
                <option value="">"Any status"</option>
                {["uploading", "validating", "ready", "invalid"].into_iter().map(|s| view! {
                    <option value=s selected=move || param("status").as_deref() == Some(s)>{s}</option>
                }).collect_view()}
            </select>
            <label class="visually-hidden" for="format">"Format"</label>
            <select id="format" name="format">
                <option value="">"Any format"</option>
                {[DatasetFormat::OpenaiChat, DatasetFormat::Alpaca, DatasetFormat::Sharegpt, DatasetFormat::BrightrunV4Jsonl, DatasetFormat::BrightrunV4Json]
                    .into_iter()
                    .map(|f| view! {
                        <option value=f.as_str() selected=move || param("format").as_deref() == Some(f.as_str())>{f.label()}</option>
                    })
                    .collect_view()}
            </select>
            <button type="submit" class="btn">"Apply"</button>
        </Form>
        <Suspense fallback=|| view! { <Skeleton rows=5/> }>
            {move || list.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(page) if page.items.is_empty() && filtered() => view! {
                    <EmptyState icon="⌕" title="No datasets match">
                        <p>"Nothing matches these filters. " <a href="/datasets">"Clear the filters"</a></p>
                    </EmptyState>
                }.into_any(),
                Ok(page) if page.items.is_empty() => view! {
                    <EmptyState icon="▤" title="No datasets yet">
                        <p>"Upload a JSON or JSONL file of chat conversations or instruction pairs (OpenAI chat, Alpaca, ShareGPT or brightrun-lora-v4), up to 500 MB. We check every line and show you what to fix."</p>
                        <p><a class="btn btn-primary" href="/datasets/new">"Upload your first dataset"</a></p>
                    </EmptyState>
                }.into_any(),
                Ok(page) => {
                    let pages = ((page.total as u32).div_ceil(page.limit)).max(1);
                    let current = page.page;
                    view! {
                        <div class="table-wrap card">
                            <table class="table">
                                <thead><tr>
                                    <th>"Name"</th><th>"Status"</th><th>"Format"</th>
                                    <th class="num">"Size"</th><th class="num">"Examples"</th><th class="num">"Tokens"</th><th>"Created"</th>
                                </tr></thead>
                                <tbody>
                                    {page.items.into_iter().map(|d| view! {
                                        <tr>
                                            <td><A href=format!("/datasets/{}", d.id)>{d.name.clone()}</A></td>
                                            <td><StatusBadge status=d.status.clone()/></td>
                                            <td>{format_label(d.format.as_deref())}</td>
                                            <td class="num">{engine::format::bytes(d.file_size.max(0) as u64)}</td>
                                            <td class="num">{d.examples.map(thousands).unwrap_or_else(|| "—".into())}</td>
                                            <td class="num">{d.tokens.map(thousands).unwrap_or_else(|| "—".into())}</td>
                                            <td><time datetime=d.created_at.to_rfc3339() title=d.created_at.to_rfc3339()>{d.created_at.format("%Y-%m-%d %H:%M").to_string()}</time></td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                        <nav class="pagination" aria-label="Pages">
                            <span class="muted">{format!("{} datasets · page {current} of {pages}", thousands(page.total))}</span>
                            {(current > 1).then(|| view! { <A href=page_link(current - 1) attr:class="btn btn-small">"← Previous"</A> })}
                            {(current < pages).then(|| view! { <A href=page_link(current + 1) attr:class="btn btn-small">"Next →"</A> })}
                        </nav>
                    }.into_any()
                }
            })}
        </Suspense>
    }
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
