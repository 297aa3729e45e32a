//! The job lifecycle as types: a job's `status` (where it is in its life) and `current_stage`
//! (what it is doing now). Both are stored as text; these enums are the only place their names
//! are spelled, and every `status` list in SQL is bound from the sets defined here.
//!
//! ```text
//!            create            submit accepted          first worker event
//!   ─────► queued ─────────► initializing ──────────────► running
//!            │  ▲                  │                          │
//!   cancel   │  │ retry            │ backend ended            │ result / backend ended /
//!   (not yet │  │                  ▼                          ▼ cap / stall / cancel
//!    sent)   └──┴──────── failed | cancelled  ◄──────  completed | failed | cancelled
//! ```

use serde::{Deserialize, Serialize};

use super::contract::WorkerStage;

/// Implements `as_str`, `parse`, `Display` and (ssr) the sqlx text encoding for a unit enum,
/// from one table of names: adding a variant is a compile error until it is named here.
macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// Every value, in lifecycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and serialised) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(value: &str) -> Option<Self> {
                match value {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The names of `set`, to bind as a `text[]` (`status = ANY($n)`).
            pub fn names(set: &[Self]) -> Vec<String> {
                set.iter().map(|s| s.as_str().to_owned()).collect()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[cfg(feature = "ssr")]
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        #[cfg(feature = "ssr")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Self::parse(text).ok_or_else(|| {
                    format!(concat!("unknown ", stringify!($name), " {:?}"), text).into()
                })
            }
        }

        #[cfg(feature = "ssr")]
        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }
    };
}
pub(crate) use text_enum;

/// Where a job is in its life (`training_jobs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Stored, waiting to be sent to its GPU backend.
    Queued,
    /// Accepted by the backend, waiting for a worker.
    Initializing,
    /// A worker reported progress.
    Running,
    Completed,
    Failed,
    Cancelled,
}

text_enum!(JobStatus {
    Queued => "queued",
    Initializing => "initializing",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl JobStatus {
    /// Not yet ended: the processor follows these.
    pub const ACTIVE: &'static [JobStatus] = &[Self::Queued, Self::Initializing, Self::Running];
    /// On the GPU backend: worker events and results apply to these.
    pub const ON_BACKEND: &'static [JobStatus] = &[Self::Initializing, Self::Running];
    /// Final: nothing changes them but a retry.
    pub const TERMINAL: &'static [JobStatus] = &[Self::Completed, Self::Failed, Self::Cancelled];
    /// What a retry starts again from.
    pub const RETRYABLE: &'static [JobStatus] = &[Self::Failed, Self::Cancelled];

    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }

    /// A user may ask to stop it.
    pub fn can_cancel(self) -> bool {
        !self.is_terminal()
    }

    /// A user may run it again as a new attempt.
    pub fn can_retry(self) -> bool {
        Self::RETRYABLE.contains(&self)
    }

    /// The word on the badge.
    pub fn label(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Initializing => "Starting",
            Self::Running => "Running",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
}

/// What a job is doing now (`training_jobs.current_stage`): the platform's stages around the
/// worker's own ([`WorkerStage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStage {
    Queued,
    Submitting,
    QueuedOnGpu,
    DownloadingDataset,
    LoadingModel,
    Training,
    Saving,
    Uploading,
    Finalizing,
    Completed,
    Failed,
    Cancelling,
    Cancelled,
}

text_enum!(JobStage {
    Queued => "queued",
    Submitting => "submitting",
    QueuedOnGpu => "queued_on_gpu",
    DownloadingDataset => "downloading_dataset",
    LoadingModel => "loading_model",
    Training => "training",
    Saving => "saving",
    Uploading => "uploading",
    Finalizing => "finalizing",
    Completed => "completed",
    Failed => "failed",
    Cancelling => "cancelling",
    Cancelled => "cancelled",
});

impl JobStage {
    /// What the stage means, in words (the UI shows these, not the raw names).
    pub fn label(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Submitting => "Submitting to the GPU backend",
            Self::QueuedOnGpu => "Waiting for a GPU",
            Self::DownloadingDataset => "Downloading the dataset",
            Self::LoadingModel => "Loading the base model",
            Self::Training => "Training",
            Self::Saving => "Saving the adapter",
            Self::Uploading => "Uploading the adapter",
            Self::Finalizing => "Finalizing",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
            Self::Cancelling => "Cancelling",
            Self::Cancelled => "Cancelled",
        }
    }

    /// The stage a job ends in with `status`.
    pub fn ending(status: JobStatus) -> Option<Self> {
        match status {
            JobStatus::Completed => Some(Self::Completed),
            JobStatus::Failed => Some(Self::Failed),
            JobStatus::Cancelled => Some(Self::Cancelled),
            JobStatus::Queued | JobStatus::Initializing | JobStatus::Running => None,
        }
    }
}

impl From<WorkerStage> for JobStage {
    fn from(stage: WorkerStage) -> Self {
        match stage {
            WorkerStage::DownloadingDataset => Self::DownloadingDataset,
            WorkerStage::LoadingModel => Self::LoadingModel,
            WorkerStage::Training => Self::Training,
            WorkerStage::Saving => Self::Saving,
            WorkerStage::Uploading => Self::Uploading,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        for status in JobStatus::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
            assert_eq!(JobStatus::parse(status.as_str()), Some(*status));
        }
        for stage in JobStage::ALL {
            let json = serde_json::to_value(stage).unwrap();
            assert_eq!(json, stage.as_str());
            assert_eq!(JobStage::parse(stage.as_str()), Some(*stage));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn the_sets_partition_the_statuses() {
        for status in JobStatus::ALL {
            assert_ne!(
                JobStatus::ACTIVE.contains(status),
                status.is_terminal(),
                "{status}"
            );
            assert_eq!(status.can_cancel(), !status.is_terminal());
            if status.can_retry() {
                assert!(status.is_terminal());
            }
            if let Some(stage) = JobStage::ending(*status) {
                assert_eq!(stage.as_str(), status.as_str());
            }
        }
        assert!(!JobStatus::Completed.can_retry());
    }

    #[test]
    fn worker_stages_keep_their_names() {
        for stage in [
            WorkerStage::DownloadingDataset,
            WorkerStage::LoadingModel,
            WorkerStage::Training,
            WorkerStage::Saving,
            WorkerStage::Uploading,
        ] {
            assert_eq!(JobStage::from(stage).as_str(), stage.as_str());
        }
    }
}
