//! Notifications: the bell (its unread count follows the live stream; its panel lists the
//! latest) and the Notifications page with its filters and pages. Marking read works with and
//! without JavaScript.

mod bell;
pub use bell::Bell;

use leptos::form::ActionForm;
use leptos::prelude::*;
use uuid::Uuid;

use crate::components::{EmptyState, ErrorState, PageHeader, Skeleton};
use crate::error::AppError;

pub use engine::notifications::{NotificationKind, NotificationView};

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
    kind: Option<NotificationKind>,
) -> Result<Vec<NotificationView>, AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let page = page.max(1);
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    let rows = engine::notifications::list(
        &mut tx,
        user.id,
        unread_only,
        kind,
        i64::from(PAGE_SIZE) + 1,
        i64::from(page - 1) * i64::from(PAGE_SIZE),
    )
    .await
    .map_err(AppError::internal)?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[server(prefix = "/rpc", endpoint = "mark_notification_read")]
pub async fn mark_notification_read(id: Uuid) -> Result<(), AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    if !engine::notifications::mark_read(&mut tx, user.id, id)
        .await
        .map_err(AppError::internal)?
    {
        return Err(AppError::NotFound);
    }
    tx.commit().await.map_err(AppError::internal)?;
    Ok(())
}

#[server(prefix = "/rpc", endpoint = "mark_all_notifications_read")]
pub async fn mark_all_notifications_read() -> Result<(), AppError> {
    let crate::server_context::SignedIn { user, db, .. } =
        crate::server_context::signed_in().await?;
    let mut tx = db.tenant(user.id).await.map_err(AppError::internal)?;
    engine::notifications::mark_all_read(&mut tx, user.id)
        .await
        .map_err(AppError::internal)?;
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
    let kind = move || query.with(|q| q.get("type").as_deref().and_then(NotificationKind::parse));
    let list = Resource::new(
        move || (unread_only(), page(), kind()),
        |(unread, page, kind)| list_notifications(unread, page, kind),
    );
    // Plain forms: the server marks and sends the page back (this page has no island).
    let mark = ServerAction::<MarkNotificationRead>::new();
    let mark_all = ServerAction::<MarkAllNotificationsRead>::new();
    let failed = move || {
        mark.value()
            .get()
            .or_else(|| mark_all.value().get())
            .and_then(Result::err)
    };
    let link = move |unread: bool, page: u32, kind: Option<NotificationKind>| {
        let mut href = format!("/notifications?page={page}");
        if unread {
            href.push_str("&unread=true");
        }
        if let Some(kind) = kind {
            href.push_str("&type=");
            href.push_str(kind.as_str());
        }
        href
    };
    view! {
        <PageHeader title="Notifications" description="What happened to your datasets, jobs and models.">
            <ActionForm action=mark_all>
                <button type="submit" class="btn" disabled=move || mark_all.pending().get()>"Mark all read"</button>
            </ActionForm>
        </PageHeader>
        <nav class="filters" aria-label="Filter">
            <a class="chip" class:active=move || !unread_only() href=move || link(false, 1, kind())>"All"</a>
            <a class="chip" class:active=unread_only href=move || link(true, 1, kind())>"Unread"</a>
            <form method="get" action="/notifications" class="row">
                {move || unread_only().then(|| view! { <input type="hidden" name="unread" value="true"/> })}
                <label for="notification-type" class="visually-hidden">"Type"</label>
                <select id="notification-type" name="type">
                    <option value="" selected=move || kind().is_none()>"Every type"</option>
                    {NotificationKind::ALL.iter().map(|k| {
                        let k = *k;
                        view! { <option value=k.as_str() selected=move || kind() == Some(k)>{kind_label(k)}</option> }
                    }).collect_view()}
                </select>
                <button type="submit" class="btn btn-small">"Filter"</button>
            </form>
        </nav>
        {move || failed().map(|e| view! { <p class="callout callout-danger" role="alert">{e.to_string()}</p> })}
        <Suspense fallback=|| view! { <Skeleton/> }>
            {move || list.get().map(|result| match result {
                Err(e) => view! { <ErrorState message=e.to_string()/> }.into_any(),
                Ok(items) if items.is_empty() => view! {
                    <EmptyState icon="✉" title=if unread_only() { "Nothing unread" } else { "No notifications yet" }>
                        <p>"You will be told here when a dataset is validated, a job starts, finishes or fails, and a model is ready."</p>
                    </EmptyState>
                }.into_any(),
                Ok(mut items) => {
                    let more = items.len() > PAGE_SIZE as usize;
                    items.truncate(PAGE_SIZE as usize);
                    let (unread, page, kind) = (unread_only(), page(), kind());
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
                                            <ActionForm action=mark attr:class="inline-form">
                                                <input type="hidden" name="id" value=id.to_string()/>
                                                <button type="submit" class="btn btn-small mark-read">"Mark read"</button>
                                            </ActionForm>
                                        })}
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                        <nav class="pager" aria-label="Pages">
                            {(page > 1).then(|| view! { <a href=link(unread, page - 1, kind)>"← Newer"</a> })}
                            <span class="muted small">{format!("Page {page}")}</span>
                            {more.then(|| view! { <a href=link(unread, page + 1, kind)>"Older →"</a> })}
                        </nav>
                    }.into_any()
                }
            })}
        </Suspense>
    }
}

/// What the type filter calls each kind.
fn kind_label(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::DatasetReady => "Dataset ready",
        NotificationKind::DatasetInvalid => "Dataset has problems",
        NotificationKind::JobQueued => "Job queued",
        NotificationKind::JobStarted => "Job started",
        NotificationKind::JobCompleted => "Job completed",
        NotificationKind::JobFailed => "Job failed",
        NotificationKind::JobCancelled => "Job cancelled",
        NotificationKind::ArtifactReady => "Model ready",
        NotificationKind::BudgetWarning => "Budget at 80%",
        NotificationKind::BudgetExceeded => "Budget spent",
    }
}
