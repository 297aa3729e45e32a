//! Retention and maintenance (issue 16 item 5): chores that keep the database and the buckets
//! from growing without bound. Each is a durable task (`Task::Maintenance`) that queues its own
//! next run when it finishes — or when the queue gives up on it — so a crash or a restart never
//! loses the schedule, and several replicas run each chore once (its dedupe key).

use std::time::Duration;

use serde::{Deserialize, Serialize};

mod chores;
mod orphans;

pub use chores::{MaintenanceError, run, schedule};

/// One maintenance chore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chore {
    /// Work-queue rows done or failed longer ago than [`Retention::finished_tasks`].
    FinishedTasks,
    /// Live-event rows of jobs that ended longer ago than [`Retention::job_events`] (their
    /// metric points, the charts, stay).
    JobEvents,
    /// Expired sessions, invites and idempotency keys; login and registration attempts older
    /// than a day.
    Sessions,
    /// Datasets whose upload was never confirmed in time, with their files.
    ExpiredUploads,
    /// Files of datasets and models deleted longer ago than [`Retention::deleted_files`] (their
    /// deletion tries at once; this makes sure).
    DeletedFiles,
    /// Objects no row owns: reported (logged, and kept in `orphan_objects`), deleted by a later
    /// sweep only if still orphaned after [`Retention::orphan_grace`].
    Orphans,
}

impl Chore {
    pub const ALL: [Chore; 6] = [
        Chore::FinishedTasks,
        Chore::JobEvents,
        Chore::Sessions,
        Chore::ExpiredUploads,
        Chore::DeletedFiles,
        Chore::Orphans,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FinishedTasks => "finished_tasks",
            Self::JobEvents => "job_events",
            Self::Sessions => "sessions",
            Self::ExpiredUploads => "expired_uploads",
            Self::DeletedFiles => "deleted_files",
            Self::Orphans => "orphans",
        }
    }

    /// How often it runs.
    pub fn every(self) -> Duration {
        const HOUR: u64 = 3600;
        Duration::from_secs(match self {
            // Unconfirmed uploads hold their owner's quota: freed within minutes.
            Self::ExpiredUploads => 300,
            Self::Sessions => HOUR,
            Self::FinishedTasks | Self::JobEvents | Self::DeletedFiles => 24 * HOUR,
            // Lists both buckets: weekly.
            Self::Orphans => 7 * 24 * HOUR,
        })
    }
}

/// How long things are kept (`RETAIN_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub finished_tasks: Duration,
    pub job_events: Duration,
    pub deleted_files: Duration,
    pub orphan_grace: Duration,
    /// `false` (`ORPHAN_SWEEP=report`): orphans are only reported, never deleted.
    pub delete_orphans: bool,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            finished_tasks: Duration::from_secs(7 * DAY),
            job_events: Duration::from_secs(90 * DAY),
            deleted_files: Duration::from_secs(DAY),
            orphan_grace: Duration::from_secs(DAY),
            delete_orphans: true,
        }
    }
}

/// What one run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Rows or objects removed.
    pub removed: u64,
    /// Bytes of objects removed.
    pub bytes: u64,
    /// Orphans newly reported (the sweep only).
    pub reported: u64,
}
