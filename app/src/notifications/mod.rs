//! Notifications: the unread badge and the list. Events that create them arrive with later
//! capabilities (jobs, models); the table and the reads are real now.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationView {
    pub id: Uuid,
    pub kind: String,
    pub title: String,
    pub message: String,
    pub priority: String,
    pub action_url: Option<String>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[server(prefix = "/rpc", endpoint = "unread_count")]
pub async fn unread_count() -> Result<i64, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    let count = engine::notifications::unread_count(&mut tx, user.id)
        .await
        .map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(count)
}

#[server(prefix = "/rpc", endpoint = "list_notifications")]
pub async fn list_notifications() -> Result<Vec<NotificationView>, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    let rows = engine::notifications::recent(&mut tx, user.id, 50)
        .await
        .map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(rows
        .into_iter()
        .map(|n| NotificationView {
            id: n.id,
            kind: n.kind,
            title: n.title,
            message: n.message,
            priority: n.priority,
            action_url: n.action_url,
            read_at: n.read_at,
            created_at: n.created_at,
        })
        .collect())
}

#[component]
pub fn NotificationsPage() -> impl IntoView {
    let list = Resource::new(|| (), |_| list_notifications());
    view! {
        <PageHeader title="Notifications" description="What happened to your datasets, jobs and models."/>
        <Suspense fallback=|| view! { <Skeleton/> }>
            {move || list.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string() retry=Callback::new(move |_| list.refetch())/> }.into_any(),
                Ok(items) if items.is_empty() => view! {
                    <EmptyState icon="✉" title="No notifications yet">
                        <p>"You will be told here when a dataset is validated, a job starts, finishes or fails, and a model is ready."</p>
                    </EmptyState>
                }.into_any(),
                Ok(items) => view! {
                    <ul class="list card">
                        {items.into_iter().map(|n| view! {
                            <li class:unread=n.read_at.is_none()>
                                <strong>{n.title}</strong>
                                <p>{n.message}</p>
                                <time datetime=n.created_at.to_rfc3339()>{n.created_at.format("%Y-%m-%d %H:%M UTC").to_string()}</time>
                            </li>
                        }).collect_view()}
                    </ul>
                }.into_any(),
            })}
        </Suspense>
    }
}
