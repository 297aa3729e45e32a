//! What an operator watches: the platform's health as figures with thresholds (issue 16),
//! read by `lora-pipeline health` and `/readyz` from one function, so the two never disagree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
mod health;
#[cfg(feature = "ssr")]
pub use health::report;
#[cfg(feature = "ssr")]
pub mod metrics;
#[cfg(feature = "ssr")]
pub mod verify;

/// How a figure stands against its thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Green,
    Yellow,
    Red,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Green => "green",
            Self::Yellow => "yellow",
            Self::Red => "red",
        }
    }
}

/// Where a figure turns yellow and red (`None`: it is shown, never judged).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Thresholds {
    /// Yellow from this value up.
    pub yellow: f64,
    /// Red above this value.
    pub red: f64,
}

impl Thresholds {
    pub const fn new(yellow: f64, red: f64) -> Self {
        Self { yellow, red }
    }

    pub fn level(self, value: f64) -> Level {
        if value > self.red {
            Level::Red
        } else if value >= self.yellow {
            Level::Yellow
        } else {
            Level::Green
        }
    }
}

/// One figure of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Figure {
    /// A stable key (`queue_depth` …).
    pub key: String,
    /// What it is, for people.
    pub label: String,
    pub value: f64,
    /// `tasks`, `seconds`, `percent`, `bytes`, `jobs` …
    pub unit: String,
    pub thresholds: Option<Thresholds>,
    pub level: Level,
    /// What to look at when it is not green.
    pub hint: Option<String>,
}

impl Figure {
    fn new(key: &str, label: &str, value: f64, unit: &str, thresholds: Option<Thresholds>) -> Self {
        Self {
            key: key.to_owned(),
            label: label.to_owned(),
            value,
            unit: unit.to_owned(),
            level: thresholds.map_or(Level::Green, |t| t.level(value)),
            thresholds,
            hint: None,
        }
    }

    fn hint(mut self, hint: &str) -> Self {
        if self.level != Level::Green {
            self.hint = Some(hint.to_owned());
        }
        self
    }
}

/// The platform's health now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct HealthReport {
    /// The worst level of the figures.
    pub level: Level,
    pub figures: Vec<Figure>,
    /// Jobs not yet ended, by stage.
    pub active_jobs_by_stage: BTreeMap<String, i64>,
    pub checked_at: DateTime<Utc>,
}

/// The thresholds (docs/OPERATIONS.md explains each and what to do).
pub mod thresholds {
    use super::Thresholds;

    /// Tasks due or running: the original's queue thresholds (<10 / 10–50 / >50).
    pub const QUEUE_DEPTH: Thresholds = Thresholds::new(10.0, 50.0);
    /// Seconds the oldest due task has waited.
    pub const OLDEST_PENDING_S: Thresholds = Thresholds::new(60.0, 300.0);
    /// Failed share of the jobs that ended in 24 hours, percent (the alert fires above 20%).
    pub const FAILURE_RATE: Thresholds = Thresholds::new(10.0, 20.0);
    /// Validations running for more than 5 minutes.
    pub const SLOW_VALIDATIONS: Thresholds = Thresholds::new(1.0, 2.0);
    /// Jobs that ended in 24 hours before a failure rate is judged.
    pub const MIN_ENDED_FOR_RATE: i64 = 5;
}

impl HealthReport {
    pub(crate) fn new(
        figures: Vec<Figure>,
        active_jobs_by_stage: BTreeMap<String, i64>,
        checked_at: DateTime<Utc>,
    ) -> Self {
        Self {
            level: figures
                .iter()
                .map(|f| f.level)
                .max()
                .unwrap_or(Level::Green),
            figures,
            active_jobs_by_stage,
            checked_at,
        }
    }
}

/// The raw counts the report judges (read in one statement).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub queue_depth: i64,
    pub oldest_pending_s: f64,
    pub jobs_queued: i64,
    pub jobs_running: i64,
    pub failed_24h: i64,
    pub ended_24h: i64,
    pub slow_validations: i64,
    pub storage_bytes: i64,
    pub datasets_24h: i64,
    pub models_24h: i64,
}

/// The figures of `counts` (read at `checked_at`), judged.
pub fn judge(
    counts: &Counts,
    active_jobs_by_stage: BTreeMap<String, i64>,
    checked_at: DateTime<Utc>,
) -> HealthReport {
    use thresholds::*;
    let failure_rate = if counts.ended_24h > 0 {
        counts.failed_24h as f64 / counts.ended_24h as f64 * 100.0
    } else {
        0.0
    };
    let rate_judged = counts.ended_24h >= MIN_ENDED_FOR_RATE;
    let figures = vec![
        Figure::new("queue_depth", "work queue: tasks due or running", counts.queue_depth as f64, "tasks", Some(QUEUE_DEPTH))
            .hint("tasks wait for a replica: check the servers' logs for failing tasks, or add a replica"),
        Figure::new("oldest_pending_s", "work queue: oldest due task waiting", counts.oldest_pending_s, "seconds", Some(OLDEST_PENDING_S))
            .hint("no replica is taking tasks: is a server running and connected to this database?"),
        Figure::new("jobs_queued", "jobs queued", counts.jobs_queued as f64, "jobs", None),
        Figure::new("jobs_running", "jobs initializing or running", counts.jobs_running as f64, "jobs", None),
        Figure::new("failed_24h", "jobs failed in 24 h", counts.failed_24h as f64, "jobs", None),
        Figure::new(
            "failure_rate_24h",
            "failed share of jobs ended in 24 h",
            failure_rate,
            "percent",
            rate_judged.then_some(FAILURE_RATE),
        )
        .hint("read the failed jobs' error_message (GET /api/jobs?status=failed as their owners, or the server log)"),
        Figure::new("slow_validations", "validations running over 5 minutes", counts.slow_validations as f64, "datasets", Some(SLOW_VALIDATIONS))
            .hint("a validation is stuck or the files are huge: check the validate_dataset tasks in the log"),
        Figure::new("storage_bytes", "stored datasets and models", counts.storage_bytes as f64, "bytes", None),
        Figure::new("datasets_24h", "datasets created in 24 h", counts.datasets_24h as f64, "datasets", None),
        Figure::new("models_24h", "models made in 24 h", counts.models_24h as f64, "models", None),
    ];
    HealthReport::new(figures, active_jobs_by_stage, checked_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_queue_thresholds_hold() {
        let t = thresholds::QUEUE_DEPTH;
        assert_eq!(t.level(9.0), Level::Green);
        assert_eq!(t.level(10.0), Level::Yellow);
        assert_eq!(t.level(50.0), Level::Yellow);
        assert_eq!(t.level(51.0), Level::Red);
    }

    #[test]
    fn the_report_is_as_bad_as_its_worst_figure() {
        let calm = judge(&Counts::default(), BTreeMap::new(), DateTime::UNIX_EPOCH);
        assert_eq!(calm.level, Level::Green);
        assert!(calm.figures.iter().all(|f| f.hint.is_none()));

        let busy = judge(
            &Counts {
                queue_depth: 20,
                ..Counts::default()
            },
            BTreeMap::new(),
            DateTime::UNIX_EPOCH,
        );
        assert_eq!(busy.level, Level::Yellow);

        // 3 of 10 ended jobs failed: 30% is red.
        let failing = judge(
            &Counts {
                failed_24h: 3,
                ended_24h: 10,
                ..Counts::default()
            },
            BTreeMap::new(),
            DateTime::UNIX_EPOCH,
        );
        assert_eq!(failing.level, Level::Red);
        let rate = failing
            .figures
            .iter()
            .find(|f| f.key == "failure_rate_24h")
            .unwrap();
        assert_eq!((rate.value, rate.level), (30.0, Level::Red));
        assert!(rate.hint.is_some());

        // Too few ended jobs to judge a rate.
        let early = judge(
            &Counts {
                failed_24h: 1,
                ended_24h: 1,
                ..Counts::default()
            },
            BTreeMap::new(),
            DateTime::UNIX_EPOCH,
        );
        assert_eq!(early.level, Level::Green);
    }
}
