//! Datasets: the list of the caller's datasets. Upload and validation arrive with the datasets
//! capability; the list reads the real table now.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRowView {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub file_size: i64,
    pub created_at: DateTime<Utc>,
}

#[server(prefix = "/rpc", endpoint = "list_datasets")]
pub async fn list_datasets() -> Result<Vec<DatasetRowView>, AppError> {
    let user = crate::accounts::server::require_user().await?;
    let db = use_context::<engine::db::Db>().ok_or(AppError::Internal)?;
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    let rows = engine::datasets::list(&mut tx, user.id)
        .await
        .map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(rows
        .into_iter()
        .map(|d| DatasetRowView {
            id: d.id,
            name: d.name,
            status: d.status,
            file_size: d.file_size,
            created_at: d.created_at,
        })
        .collect())
}

#[component]
pub fn DatasetsPage() -> impl IntoView {
    let list = Resource::new(|| (), |_| list_datasets());
    view! {
        <PageHeader title="Datasets" description="Training data you have uploaded, validated and ready to train on."/>
        <Suspense fallback=|| view! { <Skeleton/> }>
            {move || list.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string() retry=Callback::new(move |_| list.refetch())/> }.into_any(),
                Ok(rows) if rows.is_empty() => view! {
                    <EmptyState icon="▤" title="No datasets yet">
                        <p>"A dataset is a JSON or JSONL file of chat conversations or instruction pairs (OpenAI chat, Alpaca, ShareGPT or brightrun-lora-v4), up to 500 MB."</p>
                        <p>"Uploading is not available in this build yet: it arrives with the next release."</p>
                    </EmptyState>
                }.into_any(),
                Ok(rows) => view! {
                    <table class="table card">
                        <thead><tr><th>"Name"</th><th>"Status"</th><th class="num">"Size"</th><th>"Created"</th></tr></thead>
                        <tbody>
                            {rows.into_iter().map(|d| view! {
                                <tr>
                                    <td>{d.name}</td>
                                    <td><span class=format!("badge badge-{}", d.status)>{d.status.clone()}</span></td>
                                    <td class="num">{engine::format::bytes(d.file_size.max(0) as u64)}</td>
                                    <td><time datetime=d.created_at.to_rfc3339()>{d.created_at.format("%Y-%m-%d %H:%M UTC").to_string()}</time></td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Suspense>
    }
}
