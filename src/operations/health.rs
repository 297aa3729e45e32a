//! The health figures, read across all accounts (a system transaction) in two statements.

use std::collections::BTreeMap;

use super::{Counts, HealthReport, judge};
use crate::db::Db;

pub async fn report(db: &Db) -> Result<HealthReport, sqlx::Error> {
    let mut tx = db.system().await?;
    let row = sqlx::query!(
        r#"SELECT
            (SELECT count(*) FROM work_queue
              WHERE status = 'running' OR (status = 'pending' AND run_at <= now())) AS "queue_depth!",
            (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(run_at)), 0)::float8 FROM work_queue
              WHERE status = 'pending' AND run_at <= now()) AS "oldest_pending_s!",
            (SELECT count(*) FROM training_jobs WHERE status = 'queued') AS "jobs_queued!",
            (SELECT count(*) FROM training_jobs
              WHERE status IN ('initializing', 'running')) AS "jobs_running!",
            (SELECT count(*) FROM training_jobs
              WHERE status = 'failed' AND completed_at > now() - interval '24 hours') AS "failed_24h!",
            (SELECT count(*) FROM training_jobs
              WHERE status IN ('completed', 'failed')
                AND completed_at > now() - interval '24 hours') AS "ended_24h!",
            (SELECT count(*) FROM datasets
              WHERE status = 'validating' AND deleted_at IS NULL
                AND updated_at < now() - interval '5 minutes') AS "slow_validations!",
            ((SELECT COALESCE(sum(file_size), 0) FROM datasets WHERE deleted_at IS NULL)
              + (SELECT COALESCE(sum((f ->> 'size')::bigint), 0)
                   FROM model_artifacts m, jsonb_array_elements(m.files) f
                  WHERE m.deleted_at IS NULL))::bigint AS "storage_bytes!",
            (SELECT count(*) FROM datasets
              WHERE created_at > now() - interval '24 hours') AS "datasets_24h!",
            (SELECT count(*) FROM model_artifacts
              WHERE created_at > now() - interval '24 hours') AS "models_24h!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    let stages = sqlx::query!(
        r#"SELECT current_stage, count(*) AS "count!" FROM training_jobs
            WHERE status NOT IN ('completed', 'failed', 'cancelled')
            GROUP BY current_stage"#
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let counts = Counts {
        queue_depth: row.queue_depth,
        oldest_pending_s: row.oldest_pending_s,
        jobs_queued: row.jobs_queued,
        jobs_running: row.jobs_running,
        failed_24h: row.failed_24h,
        ended_24h: row.ended_24h,
        slow_validations: row.slow_validations,
        storage_bytes: row.storage_bytes,
        datasets_24h: row.datasets_24h,
        models_24h: row.models_24h,
    };
    let by_stage: BTreeMap<String, i64> = stages
        .into_iter()
        .map(|s| (s.current_stage, s.count))
        .collect();
    Ok(judge(&counts, by_stage, chrono::Utc::now()))
}
