use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Tx;

#[derive(Debug, Clone)]
pub struct NotificationRow {
    pub id: Uuid,
    pub kind: String,
    pub title: String,
    pub message: String,
    pub priority: String,
    pub action_url: Option<String>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub async fn unread_count(tx: &mut Tx, user_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM notifications WHERE user_id = $1 AND read_at IS NULL"#,
        user_id
    )
    .fetch_one(&mut **tx)
    .await
}

pub async fn recent(
    tx: &mut Tx,
    user_id: Uuid,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as!(
        NotificationRow,
        r#"SELECT id, type AS "kind", title, message, priority, action_url, read_at, created_at
             FROM notifications WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2"#,
        user_id,
        limit
    )
    .fetch_all(&mut **tx)
    .await
}

/// A new notification for `user_id` (inside the transaction of the event it reports).
pub struct NewNotification<'a> {
    pub kind: &'a str,
    pub title: &'a str,
    pub message: &'a str,
    pub priority: &'a str,
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
        new.kind,
        new.title,
        new.message,
        new.priority,
        new.action_url,
        new.metadata
    )
    .fetch_one(&mut **tx)
    .await?;
    let unread = unread_count(tx, user_id).await?;
    crate::live::announce(
        tx,
        &crate::live::Announcement::Notification(crate::live::NotificationChange {
            user_id,
            unread,
            notification_id: Some(id),
            title: Some(new.title.to_owned()),
        }),
    )
    .await?;
    Ok(id)
}
