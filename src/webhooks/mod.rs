//! Webhooks: per account, one URL that receives a signed POST when a job ends (completed,
//! failed, cancelled) and when a dataset's verdict is in (ready, invalid). A delivery is stored
//! in the transaction of the event it reports and sent by the durable queue, with retries on a
//! backoff schedule; receivers get it at least once and tell repeats apart by its id.
//!
//! Signature: `Lora-Pipeline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>` — the scheme Stripe and OpenAI use, so their verification code ports.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::notifications::NotificationKind;

#[cfg(feature = "ssr")]
mod deliver;
#[cfg(feature = "ssr")]
mod store;
#[cfg(feature = "ssr")]
pub use deliver::{TargetError, WebhookSettings, check_target, deliver, sign, verify};
#[cfg(feature = "ssr")]
pub use store::*;

/// What a delivery reports (its `type`, and the `Lora-Pipeline-Event` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub enum WebhookEvent {
    #[serde(rename = "job.completed")]
    JobCompleted,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.cancelled")]
    JobCancelled,
    #[serde(rename = "dataset.ready")]
    DatasetReady,
    #[serde(rename = "dataset.invalid")]
    DatasetInvalid,
    /// Sent by "Send a test event" on Settings (`POST /api/webhook/test`).
    #[serde(rename = "ping")]
    Ping,
}

crate::jobs::lifecycle::text_enum!(WebhookEvent {
    JobCompleted => "job.completed",
    JobFailed => "job.failed",
    JobCancelled => "job.cancelled",
    DatasetReady => "dataset.ready",
    DatasetInvalid => "dataset.invalid",
    Ping => "ping",
});

impl WebhookEvent {
    /// The event a notification's kind is sent as, if it is one webhooks carry.
    pub fn of_notification(kind: NotificationKind) -> Option<Self> {
        match kind {
            NotificationKind::JobCompleted => Some(Self::JobCompleted),
            NotificationKind::JobFailed => Some(Self::JobFailed),
            NotificationKind::JobCancelled => Some(Self::JobCancelled),
            NotificationKind::DatasetReady => Some(Self::DatasetReady),
            NotificationKind::DatasetInvalid => Some(Self::DatasetInvalid),
            NotificationKind::JobQueued
            | NotificationKind::JobStarted
            | NotificationKind::ArtifactReady
            | NotificationKind::BudgetWarning
            | NotificationKind::BudgetExceeded => None,
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; tried again at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed, or the target is refused.
    Failed,
}

crate::jobs::lifecycle::text_enum!(DeliveryStatus {
    Pending => "pending",
    Delivered => "delivered",
    Failed => "failed",
});

/// The account's webhook (the secret is the owner's to copy into the receiver).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    /// The HMAC-SHA256 key of `Lora-Pipeline-Signature` (`whsec_…`).
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One event sent (or being sent) to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// Also the body's `id` and the `Lora-Pipeline-Delivery` header: the same on every attempt.
    pub id: Uuid,
    pub event: WebhookEvent,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// The receiver's last HTTP status, when it answered.
    pub last_status_code: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The JSON body sent.
    pub payload: serde_json::Value,
}

/// `PUT /api/webhook`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookChange {
    /// `https://…` (or `http://`), at most 2,048 characters.
    pub url: String,
}

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// The form's rules: an absolute http(s) URL with a host, no credentials in it.
pub fn check_url(raw: &str) -> Result<(), crate::validation::FieldErrors> {
    let url = raw.trim();
    let problem = if url.is_empty() {
        Some("Enter the URL that should receive events.")
    } else if url.len() > MAX_URL_LEN {
        Some("URLs are at most 2,048 characters.")
    } else if !(url.starts_with("https://") || url.starts_with("http://")) {
        Some("Use an http:// or https:// URL.")
    } else {
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() {
            Some("The URL needs a host, e.g. https://hooks.example.com/lora.")
        } else if authority.contains('@') {
            Some("Leave credentials out of the URL: verify the signature instead.")
        } else if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("The URL contains spaces or control characters.")
        } else {
            None
        }
    };
    match problem {
        Some(message) => Err(crate::validation::FieldErrors::single("url", message)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked_like_the_form_does() {
        assert!(check_url("https://hooks.example.com/lora").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x?y=1").is_ok());
        for bad in [
            "",
            "hooks.example.com",
            "ftp://hooks.example.com",
            "https://",
            "https://user:pw@hooks.example.com",
            "https://hooks.example.com/a b",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
        assert!(check_url(&format!("https://x.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn terminal_notifications_are_webhook_events() {
        assert_eq!(
            WebhookEvent::of_notification(NotificationKind::JobFailed),
            Some(WebhookEvent::JobFailed)
        );
        assert_eq!(
            WebhookEvent::of_notification(NotificationKind::JobStarted),
            None
        );
        assert_eq!(
            serde_json::to_value(WebhookEvent::DatasetReady).unwrap(),
            "dataset.ready"
        );
        for event in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(event.as_str()), Some(*event));
        }
    }
}
