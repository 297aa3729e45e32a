//! Notifications: what happened to a user's datasets, jobs and models — stored in the
//! transaction of the event they report, pushed live (the unread count) and read per tenant.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[cfg(feature = "ssr")]
mod store;
#[cfg(feature = "ssr")]
pub use store::*;

/// How much a notification matters (the original's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
}

crate::jobs::lifecycle::text_enum!(Priority {
    Low => "low",
    Medium => "medium",
    High => "high",
});

/// What a notification reports (stored as `type`; the database accepts only these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    DatasetReady,
    DatasetInvalid,
    JobQueued,
    JobStarted,
    JobCompleted,
    JobFailed,
    JobCancelled,
    ArtifactReady,
    BudgetWarning,
    BudgetExceeded,
}

crate::jobs::lifecycle::text_enum!(NotificationKind {
    DatasetReady => "dataset_ready",
    DatasetInvalid => "dataset_invalid",
    JobQueued => "job_queued",
    JobStarted => "job_started",
    JobCompleted => "job_completed",
    JobFailed => "job_failed",
    JobCancelled => "job_cancelled",
    ArtifactReady => "artifact_ready",
    BudgetWarning => "budget_warning",
    BudgetExceeded => "budget_exceeded",
});

/// A notification as the API and the pages show it (`read` as the original's clients expect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct NotificationView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: NotificationKind,
    pub title: String,
    pub message: String,
    pub priority: Priority,
    pub action_url: Option<String>,
    pub read: bool,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}
