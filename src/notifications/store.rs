use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{NotificationKind, NotificationView, Priority};
use crate::db::Tx;

#[derive(Debug, Clone)]
pub struct NotificationRow {
    pub id: Uuid,
    pub kind: NotificationKind,
    pub title: String,
    pub message: String,
    pub priority: Priority,
    pub action_url: Option<String>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<NotificationRow> for NotificationView {
    fn from(n: NotificationRow) -> Self {
        Self {
            id: n.id,
            kind: n.kind,
            title: n.title,
            message: n.message,
            priority: n.priority,
            action_url: n.action_url,
            read: n.read_at.is_some(),
            read_at: n.read_at,
            created_at: n.created_at,
        }
    }
}

pub async fn unread_count(tx: &mut Tx, user_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM notifications WHERE user_id = $1 AND read_at IS NULL"#,
        user_id
    )
    .fetch_one(&mut **tx)
    .await
}

/// The newest notifications of `user_id` (only unread ones with `unread_only`), `kind` when
/// given, a page at a time.
pub async fn list(
    tx: &mut Tx,
    user_id: Uuid,
    unread_only: bool,
    kind: Option<NotificationKind>,
    limit: i64,
    offset: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as!(
        NotificationRow,
        r#"SELECT id, type AS "kind: NotificationKind", title, message, priority AS "priority: Priority",
                  action_url, read_at, created_at
             FROM notifications
            WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) AND ($3::text IS NULL OR type = $3)
            ORDER BY created_at DESC, id LIMIT $4 OFFSET $5"#,
        user_id,
        unread_only,
        kind.map(NotificationKind::as_str),
        limit,
        offset
    )
    .fetch_all(&mut **tx)
    .await
}

/// The newest notifications of `user_id`.
pub async fn recent(
    tx: &mut Tx,
    user_id: Uuid,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    list(tx, user_id, false, None, limit, 0).await
}

/// Marks one notification read; `false` when it is not the user's. The new unread count goes
/// to every open page.
pub async fn mark_read(tx: &mut Tx, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "UPDATE notifications SET read_at = COALESCE(read_at, now()) WHERE id = $1 AND user_id = $2 RETURNING id",
        id,
        user_id
    )
    .fetch_optional(&mut **tx)
    .await?
    .is_some();
    if found {
        announce_unread(tx, user_id, None).await?;
    }
    Ok(found)
}

/// Marks every notification of the user read; how many were unread.
pub async fn mark_all_read(tx: &mut Tx, user_id: Uuid) -> Result<u64, sqlx::Error> {
    let changed = sqlx::query!(
        "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL",
        user_id
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    announce_unread(tx, user_id, None).await?;
    Ok(changed)
}

/// Tells every open page of the user its unread count (and the new notification, if any).
async fn announce_unread(
    tx: &mut Tx,
    user_id: Uuid,
    new: Option<(Uuid, &str)>,
) -> Result<(), sqlx::Error> {
    let unread = unread_count(tx, user_id).await?;
    crate::live::announce(
        tx,
        &crate::live::Announcement::Notification(crate::live::NotificationChange {
            user_id,
            unread,
            notification_id: new.map(|(id, _)| id),
            title: new.map(|(_, title)| title.to_owned()),
        }),
    )
    .await
}

/// A new notification for `user_id` (inside the transaction of the event it reports).
pub struct NewNotification<'a> {
    pub kind: NotificationKind,
    pub title: &'a str,
    pub message: &'a str,
    pub priority: Priority,
    pub action_url: Option<&'a str>,
    pub metadata: serde_json::Value,
}

/// Stores the notification and announces the owner's new unread count on the live bus (the
/// bell of every open page updates).
pub async fn create(
    tx: &mut Tx,
    user_id: Uuid,
    new: NewNotification<'_>,
) -> Result<Uuid, sqlx::Error> {
    let id = sqlx::query_scalar!(
        "INSERT INTO notifications (user_id, type, title, message, priority, action_url, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        user_id,
        new.kind.as_str(),
        new.title,
        new.message,
        new.priority.as_str(),
        new.action_url,
        new.metadata
    )
    .fetch_one(&mut **tx)
    .await?;
    announce_unread(tx, user_id, Some((id, new.title))).await?;
    // Job endings and dataset verdicts also go to the account's webhook, in this transaction.
    if let Some(event) = crate::webhooks::WebhookEvent::of_notification(new.kind) {
        let mut data = match new.metadata {
            serde_json::Value::Object(fields) => fields,
            _ => serde_json::Map::new(),
        };
        data.insert("title".into(), new.title.into());
        data.insert("message".into(), new.message.into());
        crate::webhooks::enqueue(tx, user_id, event, serde_json::Value::Object(data)).await?;
    }
    Ok(id)
}
