//! The only place a job ends — completed, failed or cancelled — whoever ends it (the
//! processor, a user's cancel, a task the queue gave up on). Ending a job is one transaction:
//! the row (only from a status that may end), its `status` event and the owner's notification.
//! Cost records are written here too; a completed job's model row is inserted by the finaliser
//! in the same transaction, just before.

use uuid::Uuid;

use super::event::{JobEvent, StageChange};
use super::events;
use super::lifecycle::{JobStage, JobStatus};
use super::store::{self, EndRow};
use crate::db::Tx;
use crate::notifications::{self, NewNotification, NotificationKind};

/// How a job ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The worker succeeded; `cost` is the billed cost when the backend reported its time.
    Completed {
        cost: Option<f64>,
    },
    Failed {
        code: String,
        message: String,
    },
    Cancelled {
        code: String,
        message: String,
        /// The owner asked for it.
        requested: bool,
    },
}

impl Ending {
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Failed {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn cancelled(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Cancelled {
            code: code.into(),
            message: message.into(),
            requested: false,
        }
    }

    /// The owner's own cancel.
    pub fn cancelled_by_owner(message: impl Into<String>) -> Self {
        Self::Cancelled {
            code: "cancelled".into(),
            message: message.into(),
            requested: true,
        }
    }

    pub fn status(&self) -> JobStatus {
        match self {
            Self::Completed { .. } => JobStatus::Completed,
            Self::Failed { .. } => JobStatus::Failed,
            Self::Cancelled { .. } => JobStatus::Cancelled,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Completed { .. } => None,
            Self::Failed { code, .. } | Self::Cancelled { code, .. } => Some(code),
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Completed { .. } => None,
            Self::Failed { message, .. } | Self::Cancelled { message, .. } => Some(message),
        }
    }
}

/// The job being ended, as far as ending it needs.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    pub id: Uuid,
    pub user_id: Uuid,
    pub attempt: i32,
}

/// Ends the job in the caller's transaction if it may still end (a completion only from the
/// backend's statuses; with `only_unsubmitted`, only before it was sent); records its costs and
/// checks them against the owner's monthly budget (`limits`: the operator's default). Returns whether it
/// ended here: `false` leaves everything as it was.
pub async fn finish(
    tx: &mut Tx,
    job: Subject,
    ending: &Ending,
    only_unsubmitted: bool,
    limits: &crate::costs::Limits,
) -> Result<bool, sqlx::Error> {
    let status = ending.status();
    if status == JobStatus::Completed {
        let finalizing = JobEvent::Stage(StageChange {
            stage: JobStage::Finalizing,
            message: "Recording the result.".into(),
            elapsed_s: None,
            total_steps: None,
            train_examples: None,
            eval_examples: None,
            resumed_from_step: None,
        });
        let key = format!("a{}:stage:{}", job.attempt, JobStage::Finalizing);
        if events::record(tx, job.user_id, job.id, &key, &finalizing)
            .await?
            .is_some()
        {
            store::set_stage(tx, job.id, JobStage::Finalizing).await?;
        }
    }
    let ended = store::end(
        tx,
        job.id,
        EndRow {
            status,
            error_code: ending.code(),
            message: ending.message(),
            cost: match ending {
                Ending::Completed { cost } => *cost,
                _ => None,
            },
            only_unsubmitted,
            requested: matches!(
                ending,
                Ending::Cancelled {
                    requested: true,
                    ..
                }
            ),
        },
    )
    .await?;
    let Some(ended) = ended else {
        return Ok(false);
    };
    let dataset_name = ended.dataset_name;
    // Counted when the ending is written; a transaction rolled back after it (rare: the
    // caller's commit failing) over-counts by one, which a rate alert tolerates.
    metrics::counter!(crate::operations::metrics::JOBS_ENDED, "status" => status.as_str())
        .increment(1);
    if let Some(ran_s) = ended.ran_s {
        metrics::histogram!(crate::operations::metrics::TRAINING_DURATION, "status" => status.as_str())
            .record(ran_s);
    }
    let stage = JobStage::ending(status).unwrap_or(JobStage::Failed);
    events::record_status(
        tx,
        job.user_id,
        job.id,
        job.attempt,
        status,
        stage,
        ending.message(),
    )
    .await?;
    notify(tx, job, ending, &dataset_name).await?;
    // What the attempt cost, in the transaction that ended it: once per ending.
    crate::costs::store::record_ending(tx, job.id).await?;
    crate::costs::limits::alert_thresholds(tx, job.user_id, limits).await?;
    Ok(true)
}

/// Tells the owner how the job ended.
async fn notify(
    tx: &mut Tx,
    job: Subject,
    ending: &Ending,
    dataset_name: &str,
) -> Result<(), sqlx::Error> {
    let (kind, title, priority) = match ending {
        Ending::Completed { .. } => (
            NotificationKind::JobCompleted,
            format!("Training finished on \"{dataset_name}\""),
            crate::notifications::Priority::Medium,
        ),
        Ending::Cancelled { .. } => (
            NotificationKind::JobCancelled,
            format!("Training cancelled on \"{dataset_name}\""),
            crate::notifications::Priority::Medium,
        ),
        Ending::Failed { .. } => (
            NotificationKind::JobFailed,
            format!("Training failed on \"{dataset_name}\""),
            crate::notifications::Priority::High,
        ),
    };
    notifications::create(
        tx,
        job.user_id,
        NewNotification {
            kind,
            title: &title,
            message: ending
                .message()
                .unwrap_or("The adapter was trained and uploaded."),
            priority,
            action_url: Some(&format!("/jobs/{}", job.id)),
            metadata: serde_json::json!({ "job_id": job.id }),
        },
    )
    .await?;
    Ok(())
}
