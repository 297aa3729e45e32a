//! The account's webhook and its deliveries in Postgres (tenant-scoped, RLS-enforced).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use rand::rngs::OsRng;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{DeliveryStatus, DeliveryView, WebhookChange, WebhookEvent, WebhookView, check_url};
use crate::db::{Db, Tx};
use crate::error::{Classify, ErrorKind};
use crate::tasks::Task;

/// Why a webhook operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook: {0}")]
    Invalid(crate::validation::FieldErrors),
    #[error("no webhook is set")]
    NotFound,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Classify for WebhookError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(fields) => ErrorKind::Invalid(fields.clone()),
            Self::NotFound => ErrorKind::NotFound,
            Self::Database(_) => ErrorKind::Internal,
        }
    }
}

/// Deliveries listed on Settings and by `GET /api/webhook`.
pub const RECENT_DELIVERIES: i64 = 20;

/// When each retry happens, after the attempt before it: about 22 hours in all, like the
/// platforms receivers are used to (OpenAI, Stripe retry for a day or more).
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(3600),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(18 * 3600),
];

fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

pub async fn get(db: &Db, user: Uuid) -> Result<Option<WebhookView>, WebhookError> {
    let mut tx = db.tenant(user).await?;
    let webhook = find(&mut tx, user).await?;
    tx.commit().await?;
    Ok(webhook)
}

async fn find(tx: &mut Tx, user: Uuid) -> Result<Option<WebhookView>, sqlx::Error> {
    sqlx::query_as!(
        WebhookView,
        "SELECT id, url, secret, created_at, updated_at FROM webhooks WHERE user_id = $1",
        user
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Sets the account's webhook URL; a new webhook gets a new secret, a changed URL keeps it.
/// A host that resolves to an internal address is refused now, with the reason (and checked
/// again at every delivery: DNS answers change); one that does not resolve yet is accepted.
pub async fn set(
    db: &Db,
    user: Uuid,
    change: &WebhookChange,
    settings: super::WebhookSettings,
) -> Result<WebhookView, WebhookError> {
    check_url(&change.url).map_err(WebhookError::Invalid)?;
    let url = change.url.trim();
    match super::check_target(url, settings).await {
        Err(e @ (super::TargetError::Internal { .. } | super::TargetError::BadUrl)) => {
            return Err(WebhookError::Invalid(
                crate::validation::FieldErrors::single("url", e.to_string()),
            ));
        }
        Ok(_) | Err(super::TargetError::Unresolved { .. }) => {}
    }
    let mut tx = db.tenant(user).await?;
    let webhook = sqlx::query_as!(
        WebhookView,
        "INSERT INTO webhooks (user_id, url, secret) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET url = EXCLUDED.url, updated_at = now()
         RETURNING id, url, secret, created_at, updated_at",
        user,
        url,
        new_secret()
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(webhook)
}

/// Removes the webhook; its pending deliveries go with it.
pub async fn remove(db: &Db, user: Uuid) -> Result<(), WebhookError> {
    let mut tx = db.tenant(user).await?;
    let removed = sqlx::query!("DELETE FROM webhooks WHERE user_id = $1", user)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if removed == 0 {
        return Err(WebhookError::NotFound);
    }
    Ok(())
}

pub async fn deliveries(db: &Db, user: Uuid) -> Result<Vec<DeliveryView>, WebhookError> {
    let mut tx = db.tenant(user).await?;
    let rows = sqlx::query_as!(
        DeliveryView,
        r#"SELECT id, event AS "event: WebhookEvent", status AS "status: DeliveryStatus", attempts,
                  last_status_code, last_error, next_attempt_at, created_at, delivered_at, payload
             FROM webhook_deliveries WHERE user_id = $1
            ORDER BY created_at DESC LIMIT $2"#,
        user,
        RECENT_DELIVERIES
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Stores a delivery of `event` for the account's webhook and queues its sending, in the
/// caller's transaction (the event and its delivery commit together). None without a webhook.
pub async fn enqueue(
    tx: &mut Tx,
    user: Uuid,
    event: WebhookEvent,
    data: Value,
) -> Result<Option<Uuid>, sqlx::Error> {
    let Some(webhook) = sqlx::query_scalar!("SELECT id FROM webhooks WHERE user_id = $1", user)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    let id = Uuid::new_v4();
    let created_at = Utc::now();
    // The body is fixed here: every attempt sends (and signs) the same bytes' content.
    let payload = json!({
        "id": id,
        "object": "event",
        "type": event.as_str(),
        "created_at": created_at.timestamp(),
        "data": data,
    });
    sqlx::query!(
        "INSERT INTO webhook_deliveries (id, user_id, webhook_id, event, payload, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
        id,
        user,
        webhook,
        event.as_str(),
        payload,
        created_at
    )
    .execute(&mut **tx)
    .await?;
    Task::DeliverWebhook { delivery_id: id }
        .enqueue(tx, Some(user), Duration::ZERO)
        .await?;
    Ok(Some(id))
}

/// Queues a `ping` to the account's webhook (Settings' "Send a test event").
pub async fn ping(db: &Db, user: Uuid) -> Result<Uuid, WebhookError> {
    let mut tx = db.tenant(user).await?;
    let id = enqueue(
        &mut tx,
        user,
        WebhookEvent::Ping,
        json!({ "message": "A test event from lora-pipeline." }),
    )
    .await?
    .ok_or(WebhookError::NotFound)?;
    tx.commit().await?;
    Ok(id)
}

/// A delivery as the sender needs it.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub id: Uuid,
    pub user_id: Uuid,
    pub event: WebhookEvent,
    pub url: String,
    pub secret: String,
    pub payload: Value,
    pub attempts: i32,
}

/// The delivery if it still waits to be sent (not delivered, not given up, webhook not removed).
pub async fn pending(db: &Db, id: Uuid) -> Result<Option<PendingDelivery>, sqlx::Error> {
    let mut tx = db.system().await?;
    let row = sqlx::query_as!(
        PendingDelivery,
        r#"SELECT d.id, d.user_id, d.event AS "event: WebhookEvent", w.url AS "url!", w.secret AS "secret!", d.payload,
                  d.attempts
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
            WHERE d.id = $1 AND d.status = 'pending'"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// 2xx.
    Delivered { status: u16 },
    /// Another status, or no answer; `retry` unless the target is refused outright.
    Failed {
        status: Option<u16>,
        error: String,
        retry: bool,
    },
}

/// Records an attempt; queues the next one on the backoff schedule while attempts remain.
/// Returns the delivery's status after it.
pub async fn record(
    db: &Db,
    delivery: &PendingDelivery,
    attempt: &Attempt,
) -> Result<DeliveryStatus, sqlx::Error> {
    let attempts = delivery.attempts + 1;
    let mut tx = db.system().await?;
    let (status, code, error, next): (DeliveryStatus, Option<i32>, Option<&str>, Option<Duration>) =
        match attempt {
            Attempt::Delivered { status } => (
                DeliveryStatus::Delivered,
                Some(i32::from(*status)),
                None,
                None,
            ),
            Attempt::Failed {
                status,
                error,
                retry,
            } => {
                let next = usize::try_from(attempts - 1)
                    .ok()
                    .and_then(|i| RETRY_DELAYS.get(i))
                    .filter(|_| *retry)
                    .copied();
                let status_after = if next.is_some() {
                    DeliveryStatus::Pending
                } else {
                    DeliveryStatus::Failed
                };
                (
                    status_after,
                    status.map(i32::from),
                    Some(error.as_str()),
                    next,
                )
            }
        };
    let next_at: Option<DateTime<Utc>> =
        next.and_then(|d| chrono::Duration::from_std(d).ok().map(|d| Utc::now() + d));
    sqlx::query!(
        "UPDATE webhook_deliveries
            SET attempts = $2, status = $3, last_status_code = $4, last_error = $5,
                next_attempt_at = $6,
                delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END
          WHERE id = $1",
        delivery.id,
        attempts,
        status.as_str(),
        code,
        error.map(|e| e.chars().take(500).collect::<String>()),
        next_at
    )
    .execute(&mut *tx)
    .await?;
    if let Some(delay) = next {
        Task::DeliverWebhook {
            delivery_id: delivery.id,
        }
        .enqueue(&mut tx, Some(delivery.user_id), delay)
        .await?;
    }
    tx.commit().await?;
    Ok(status)
}

/// The queue gave up on the task itself (it kept failing before an attempt was recorded).
pub async fn give_up(db: &Db, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.system().await?;
    sqlx::query!(
        "UPDATE webhook_deliveries SET status = 'failed', last_error = $2, next_attempt_at = NULL
          WHERE id = $1 AND status = 'pending'",
        id,
        error.chars().take(500).collect::<String>()
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
