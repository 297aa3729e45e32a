//! Notifications: the unread badge and the list. Events that create them arrive with later
//! capabilities (jobs, models); the table and the reads are real now.

use leptos::prelude::*;
use uuid::Uuid;

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;

pub use engine::notifications::NotificationView;

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

/// Rows per page of the Notifications page.
const PAGE_SIZE: u32 = 30;

#[server(prefix = "/rpc", endpoint = "list_notifications")]
pub async fn list_notifications(
    unread_only: bool,
    page: u32,
) -> Result<Vec<NotificationView>, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let page = page.max(1);
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    let rows = engine::notifications::list(
        &mut tx,
        user.id,
        unread_only,
        None,
        i64::from(PAGE_SIZE) + 1,
        i64::from(page - 1) * i64::from(PAGE_SIZE),
    )
    .await
    .map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[server(prefix = "/rpc", endpoint = "mark_notification_read")]
pub async fn mark_notification_read(id: Option<Uuid>) -> Result<(), AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    match id {
        Some(id) => {
            if !engine::notifications::mark_read(&mut tx, user.id, id)
                .await
                .map_err(AppError::internal)?
            {
                return Err(AppError::NotFound);
            }
        }
        None => {
            engine::notifications::mark_all_read(&mut tx, user.id)
                .await
                .map_err(AppError::internal)?;
        }
    }
    tx.commit().await.map_err(AppError::internal)?;
    Ok(())
}

#[component]
pub fn NotificationsPage() -> impl IntoView {
    let query = leptos_router::hooks::use_query_map();
    let unread_only = move || query.with(|q| q.get("unread").is_some_and(|v| v == "true"));
    let page = move || {
        query.with(|q| {
            q.get("page")
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(1)
        })
    };
    let list = Resource::new(
        move || (unread_only(), page()),
        |(unread, page)| list_notifications(unread, page),
    );
    let mark = Action::new(|id: &Option<Uuid>| mark_notification_read(*id));
    Effect::new(move || {
        if let Some(Ok(())) = mark.value().get() {
            list.refetch();
        }
    });
    let link = move |unread: bool, page: u32| {
        let mut href = format!("/notifications?page={page}");
        if unread {
            href.push_str("&unread=true");
        }
        href
    };
    view! {
        <PageHeader title="Notifications" description="What happened to your datasets, jobs and models.">
            <button class="btn" on:click=move |_| { mark.dispatch(None); } disabled=move || mark.pending().get()>"Mark all read"</button>
        </PageHeader>
        <nav class="filters" aria-label="Filter">
            <a class="chip" class:active=move || !unread_only() href="/notifications">"All"</a>
            <a class="chip" class:active=unread_only href="/notifications?unread=true">"Unread"</a>
        </nav>
        {move || mark.value().get().and_then(Result::err).map(|e| view! { <p class="callout callout-danger" role="alert">{e.to_string()}</p> })}
        <Suspense fallback=|| view! { <Skeleton/> }>
            {move || list.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string() retry=Callback::new(move |_| list.refetch())/> }.into_any(),
                Ok(items) if items.is_empty() => view! {
                    <EmptyState icon="✉" title=if unread_only() { "Nothing unread" } else { "No notifications yet" }>
                        <p>"You will be told here when a dataset is validated, a job starts, finishes or fails, and a model is ready."</p>
                    </EmptyState>
                }.into_any(),
                Ok(mut items) => {
                    let more = items.len() > PAGE_SIZE as usize;
                    items.truncate(PAGE_SIZE as usize);
                    let (unread, page) = (unread_only(), page());
                    view! {
                        <ul class="list card notifications">
                            {items.into_iter().map(|n| {
                                let id = n.id;
                                view! {
                                    <li class:unread=!n.read class=format!("priority-{}", n.priority)>
                                        <strong>{match n.action_url.clone() {
                                            Some(url) => view! { <a href=url>{n.title.clone()}</a> }.into_any(),
                                            None => view! { <span>{n.title.clone()}</span> }.into_any(),
                                        }}</strong>
                                        <p>{n.message.clone()}</p>
                                        <time datetime=n.created_at.to_rfc3339()>{n.created_at.format("%Y-%m-%d %H:%M UTC").to_string()}</time>
                                        {(!n.read).then(|| view! {
                                            " " <button class="btn btn-small mark-read" on:click=move |_| { mark.dispatch(Some(id)); }>"Mark read"</button>
                                        })}
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                        <nav class="pager" aria-label="Pages">
                            {(page > 1).then(|| view! { <a href=link(unread, page - 1)>"← Newer"</a> })}
                            <span class="muted small">{format!("Page {page}")}</span>
                            {more.then(|| view! { <a href=link(unread, page + 1)>"Older →"</a> })}
                        </nav>
                    }.into_any()
                }
            })}
        </Suspense>
    }
}
