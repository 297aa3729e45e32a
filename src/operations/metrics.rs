//! The Prometheus metrics the platform exposes on `/metrics`: their names (recorded by the engine
//! and the server, alerted on by `deploy/prometheus/alerts.yml`), and the gauges that describe
//! the database, read from it at scrape time so every replica reports the same values.

use crate::db::Db;
use crate::jobs::JobStatus;

/// Counter: HTTP requests answered, by `method`, `route` (the route template) and `status`.
pub const HTTP_REQUESTS: &str = "lora_http_requests_total";
/// Histogram: seconds to answer an HTTP request (to its headers), by `method` and `route`.
pub const HTTP_DURATION: &str = "lora_http_request_duration_seconds";
/// Counter: background tasks run, by `kind` and `outcome` (`ok`, `retry`, `failed`).
pub const TASKS: &str = "lora_tasks_total";
/// Histogram: seconds a background task ran, by `kind`.
pub const TASK_DURATION: &str = "lora_task_duration_seconds";
/// Counter: jobs that ended on this replica, by `status` (`completed`, `failed`, `cancelled`).
pub const JOBS_ENDED: &str = "lora_jobs_ended_total";
/// Histogram: seconds from a job's start to its end, by `status`.
pub const TRAINING_DURATION: &str = "lora_training_duration_seconds";
/// Histogram: seconds one dataset validation took, by `outcome` (`ready`, `invalid`; one that
/// could not finish counts in [`TASKS`] as a failed `validate_dataset`).
pub const VALIDATION_DURATION: &str = "lora_validation_duration_seconds";
/// Counter: bytes of uploaded datasets read by validations.
pub const VALIDATION_BYTES: &str = "lora_validation_bytes_total";
/// Gauge: live event streams (SSE) open on this replica.
pub const SSE_STREAMS_OPEN: &str = "lora_sse_streams_open";
/// Counter: calls to a GPU backend's API, by `backend` (`runpod`, `local`), `endpoint` (`run`,
/// `status`, `stream`, `cancel`, `retry`, `health`) and `outcome` (`ok`, `error`).
pub const GPU_CALLS: &str = "lora_gpu_backend_calls_total";
/// Histogram: seconds one GPU backend call took, by `backend` and `endpoint`.
pub const GPU_CALL_DURATION: &str = "lora_gpu_backend_call_duration_seconds";
/// Counter: refused sign-ins, by `reason` (`invalid_credentials`: a wrong password, an unknown
/// or disabled account; `rate_limited`).
pub const LOGIN_FAILURES: &str = "lora_login_failures_total";
/// Counter: rows and objects the maintenance chores removed, by `chore`.
pub const MAINTENANCE_REMOVED: &str = "lora_maintenance_removed_total";
/// Counter: requests answered 500 because the database failed.
pub const DATABASE_ERRORS: &str = "lora_database_errors_total";

/// Gauge: 1 when the scrape could read the database gauges below, else 0.
pub const DATABASE_UP: &str = "lora_database_up";
/// Gauge: tasks due or running, by `kind`.
pub const QUEUE_DEPTH: &str = "lora_queue_depth";
/// Gauge: seconds the oldest due task has waited (0 when none waits).
pub const QUEUE_OLDEST: &str = "lora_queue_oldest_pending_seconds";
/// Gauge: jobs by `status`, every status present (0 when none).
pub const JOBS: &str = "lora_jobs";
/// Gauge: jobs that failed in the last 24 hours.
pub const JOBS_FAILED_24H: &str = "lora_jobs_failed_24h";
/// Gauge: jobs that completed or failed in the last 24 hours.
pub const JOBS_ENDED_24H: &str = "lora_jobs_ended_24h";
/// Gauge: jobs running whose row has not changed (no step, no stage) for 20 minutes.
pub const JOBS_STALLED: &str = "lora_jobs_stalled";
/// Gauge: validations running for more than 5 minutes.
pub const VALIDATIONS_SLOW: &str = "lora_validations_slow";
/// Gauge: dollars recorded for today (UTC), all accounts.
pub const COST_TODAY: &str = "lora_cost_today_dollars";
/// Gauge: bytes stored, by `bucket` (`datasets`, `models`).
pub const STORAGE_BYTES: &str = "lora_storage_bytes";
/// Gauge: accounts told in the last hour that they passed their monthly budget.
pub const BUDGET_EXCEEDED_1H: &str = "lora_budget_exceeded_last_hour";
/// Gauge: bytes of the file system holding DATA_DIR (`kind`: `size`, `free`).
pub const DATA_DIR_BYTES: &str = "lora_data_dir_bytes";

/// How long a running job may go without any change before it counts as stalled.
pub const STALLED_AFTER_MINUTES: i32 = 20;

/// Everything the scrape reads from the database.
#[derive(Debug, Clone, Default)]
pub struct DatabaseGauges {
    pub queue_by_kind: Vec<(String, i64)>,
    pub queue_oldest_s: f64,
    /// Every [`JobStatus`], in its order.
    pub jobs_by_status: Vec<(JobStatus, i64)>,
    pub failed_24h: i64,
    pub ended_24h: i64,
    pub stalled: i64,
    pub slow_validations: i64,
    pub cost_today: f64,
    pub dataset_bytes: i64,
    pub model_bytes: i64,
    pub budget_exceeded_1h: i64,
}

/// Reads the gauges across all accounts (a system transaction) in three statements.
pub async fn read(db: &Db) -> Result<DatabaseGauges, sqlx::Error> {
    let mut tx = db.system().await?;
    let row = sqlx::query!(
        r#"SELECT
            (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(run_at)), 0)::float8 FROM work_queue
              WHERE status = 'pending' AND run_at <= now()) AS "queue_oldest_s!",
            (SELECT count(*) FROM training_jobs
              WHERE status = 'failed' AND completed_at > now() - interval '24 hours') AS "failed_24h!",
            (SELECT count(*) FROM training_jobs
              WHERE status IN ('completed', 'failed')
                AND completed_at > now() - interval '24 hours') AS "ended_24h!",
            (SELECT count(*) FROM training_jobs
              WHERE status = 'running'
                AND updated_at < now() - make_interval(mins => $1)) AS "stalled!",
            (SELECT count(*) FROM datasets
              WHERE status = 'validating' AND deleted_at IS NULL
                AND updated_at < now() - interval '5 minutes') AS "slow_validations!",
            (SELECT COALESCE(sum(amount), 0)::float8 FROM cost_records
              WHERE billing_date = (now() AT TIME ZONE 'UTC')::date) AS "cost_today!",
            (SELECT COALESCE(sum(file_size), 0)::bigint FROM datasets
              WHERE deleted_at IS NULL) AS "dataset_bytes!",
            (SELECT COALESCE(sum((f ->> 'size')::bigint), 0)::bigint
               FROM model_artifacts m, jsonb_array_elements(m.files) f
              WHERE m.deleted_at IS NULL) AS "model_bytes!",
            (SELECT count(DISTINCT user_id) FROM notifications
              WHERE type = 'budget_exceeded'
                AND created_at > now() - interval '1 hour') AS "budget_exceeded_1h!""#,
        STALLED_AFTER_MINUTES
    )
    .fetch_one(&mut *tx)
    .await?;
    let queue = sqlx::query!(
        r#"SELECT kind, count(*) AS "count!" FROM work_queue
            WHERE status = 'running' OR (status = 'pending' AND run_at <= now())
            GROUP BY kind ORDER BY kind"#
    )
    .fetch_all(&mut *tx)
    .await?;
    let statuses =
        sqlx::query!(r#"SELECT status, count(*) AS "count!" FROM training_jobs GROUP BY status"#)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let jobs_by_status = JobStatus::ALL
        .iter()
        .map(|&status| {
            let count = statuses
                .iter()
                .find(|r| r.status == status.as_str())
                .map_or(0, |r| r.count);
            (status, count)
        })
        .collect();
    Ok(DatabaseGauges {
        queue_by_kind: queue.into_iter().map(|r| (r.kind, r.count)).collect(),
        queue_oldest_s: row.queue_oldest_s,
        jobs_by_status,
        failed_24h: row.failed_24h,
        ended_24h: row.ended_24h,
        stalled: row.stalled,
        slow_validations: row.slow_validations,
        cost_today: row.cost_today,
        dataset_bytes: row.dataset_bytes,
        model_bytes: row.model_bytes,
        budget_exceeded_1h: row.budget_exceeded_1h,
    })
}
