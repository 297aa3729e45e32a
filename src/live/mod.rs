//! The platform's live bus: job events, dataset status changes and notification counts, each
//! announced with `pg_notify` in the transaction that writes the change (so it is delivered on
//! commit, to every replica, exactly when the change exists), received by one `LISTEN` per
//! replica ([`Hub`]) and fanned out to the SSE streams of the job's page and of its owner
//! (`GET /api/events`).
//!
//! The message types are pure (the browser reads them too); announcing and the hub are `ssr`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::datasets::DatasetStatus;

#[cfg(feature = "ssr")]
mod hub;
#[cfg(feature = "ssr")]
pub use hub::{Hub, HubMessage, Subscription};

/// SSE event name of a [`DatasetChange`] on `GET /api/events`.
pub const DATASET_EVENT: &str = "dataset";
/// SSE event name of a [`NotificationChange`] on `GET /api/events`.
pub const NOTIFICATION_EVENT: &str = "notification";
/// SSE event name that tells a page it may have missed messages: reload what it shows.
pub const RESYNC_EVENT: &str = "resync";

/// A dataset's status changed (validation started, or reached its verdict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct DatasetChange {
    pub dataset_id: Uuid,
    pub user_id: Uuid,
    pub status: DatasetStatus,
    pub training_ready: bool,
}

/// The owner's notifications changed; `unread` is the count now (what the bell shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct NotificationChange {
    pub user_id: Uuid,
    pub unread: i64,
    /// The notification just created, if one was.
    #[serde(default)]
    pub notification_id: Option<Uuid>,
    #[serde(default)]
    pub title: Option<String>,
}

/// What travels on the bus's Postgres channel.
#[cfg(feature = "ssr")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(tag = "topic", content = "message", rename_all = "snake_case")]
pub enum Announcement {
    Job(crate::jobs::JobEventRecord),
    /// A job event too large for NOTIFY: listeners read it from the table by id.
    JobOversized {
        id: i64,
    },
    Dataset(DatasetChange),
    Notification(NotificationChange),
}

/// The Postgres channel of the bus.
#[cfg(feature = "ssr")]
pub const CHANNEL: &str = "lora_events";
/// Largest payload sent through NOTIFY (Postgres allows 8000 bytes).
#[cfg(feature = "ssr")]
const NOTIFY_LIMIT: usize = 7000;

/// Sends `announcement` on the bus; delivered when the transaction commits.
#[cfg(feature = "ssr")]
pub async fn announce(
    tx: &mut crate::db::Tx,
    announcement: &Announcement,
) -> Result<(), sqlx::Error> {
    let mut text = serde_json::to_string(announcement).unwrap_or_default();
    if text.len() > NOTIFY_LIMIT
        && let Announcement::Job(record) = announcement
    {
        text = serde_json::to_string(&Announcement::JobOversized { id: record.id })
            .unwrap_or_default();
    }
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, text)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip() {
        let change = Announcement::Dataset(DatasetChange {
            dataset_id: Uuid::nil(),
            user_id: Uuid::nil(),
            status: DatasetStatus::Ready,
            training_ready: true,
        });
        let text = serde_json::to_string(&change).unwrap();
        assert!(text.contains(r#""topic":"dataset""#), "{text}");
        assert_eq!(serde_json::from_str::<Announcement>(&text).unwrap(), change);
        let oversized = Announcement::JobOversized { id: 7 };
        let text = serde_json::to_string(&oversized).unwrap();
        assert_eq!(
            serde_json::from_str::<Announcement>(&text).unwrap(),
            oversized
        );
    }
}
