//! The durable work queue: background work as rows in `work_queue`, leased with
//! `FOR UPDATE SKIP LOCKED`, so several server replicas never take the same task and a crash
//! loses nothing (an expired lease is taken over and the task runs again).

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::db::{Db, Tx};

/// How long a lease lasts without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct LeasedTask {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    pub user_id: Option<Uuid>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    /// This lease's own token (`<worker>:<uuid>`): renewing, completing and failing match it,
    /// so a run never touches the successor it queued, even on the same replica.
    pub lease: String,
}

/// Queues a task inside the caller's transaction (so it exists exactly when the state change
/// that needs it commits). A task with the same `dedupe_key` is reset to run again.
pub async fn enqueue(
    tx: &mut Tx,
    kind: &str,
    payload: Value,
    user_id: Option<Uuid>,
    dedupe_key: &str,
) -> Result<i64, sqlx::Error> {
    enqueue_after(tx, kind, payload, user_id, dedupe_key, Duration::ZERO).await
}

/// Like [`enqueue`], due after `delay`. Re-queueing the key of the task that is running now
/// turns it into its own successor (a poll scheduling the next poll): the running lease is
/// cleared, so completing the current run leaves the successor alone.
pub async fn enqueue_after(
    tx: &mut Tx,
    kind: &str,
    payload: Value,
    user_id: Option<Uuid>,
    dedupe_key: &str,
    delay: Duration,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO work_queue (kind, payload, user_id, dedupe_key, run_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
         ON CONFLICT (dedupe_key) DO UPDATE
            SET kind = EXCLUDED.kind, payload = EXCLUDED.payload, status = 'pending', attempts = 0,
                run_at = EXCLUDED.run_at, leased_by = NULL, leased_until = NULL, last_error = NULL
         RETURNING id",
        kind,
        payload,
        user_id,
        dedupe_key,
        delay.as_secs_f64()
    )
    .fetch_one(&mut **tx)
    .await
}

/// Queues a task due now unless its `dedupe_key` has a live (pending or running) task already;
/// a done or failed one is brought back. Returns whether it queued.
pub async fn enqueue_if_idle(
    tx: &mut Tx,
    kind: &str,
    payload: Value,
    dedupe_key: &str,
) -> Result<bool, sqlx::Error> {
    let queued = sqlx::query!(
        "INSERT INTO work_queue (kind, payload, dedupe_key)
         VALUES ($1, $2, $3)
         ON CONFLICT (dedupe_key) DO UPDATE
            SET kind = EXCLUDED.kind, payload = EXCLUDED.payload, status = 'pending', attempts = 0,
                run_at = now(), leased_by = NULL, leased_until = NULL, last_error = NULL
          WHERE work_queue.status IN ('done', 'failed')",
        kind,
        payload,
        dedupe_key
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(queued == 1)
}

/// Takes up to `limit` due tasks (or ones whose lease expired) of the given kinds in one
/// statement. Within a kind, accounts with no task of it running come first, so one user's
/// ten uploads do not keep everyone else's waiting.
pub async fn lease(
    db: &Db,
    worker: &str,
    kinds: &[&str],
    limit: usize,
) -> Result<Vec<LeasedTask>, sqlx::Error> {
    if limit == 0 || kinds.is_empty() {
        return Ok(Vec::new());
    }
    let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    let mut tx = db.system().await?;
    let tasks = sqlx::query_as!(
        LeasedTask,
        r#"UPDATE work_queue SET status = 'running', attempts = attempts + 1,
                  leased_by = $1 || ':' || gen_random_uuid(),
                  leased_until = now() + make_interval(secs => $2)
            WHERE id IN (
                  SELECT w.id FROM work_queue w
                   WHERE w.kind = ANY($4)
                     AND ((w.status = 'pending' AND w.run_at <= now())
                          OR (w.status = 'running' AND w.leased_until < now()))
                   ORDER BY EXISTS (SELECT 1 FROM work_queue r
                                     WHERE r.kind = w.kind AND r.user_id = w.user_id
                                       AND r.status = 'running' AND r.leased_until >= now()),
                            w.run_at
                   LIMIT $3
                     FOR UPDATE OF w SKIP LOCKED)
        RETURNING id, kind, payload, user_id, attempts, max_attempts, created_at, leased_by AS "lease!""#,
        worker,
        LEASE.as_secs_f64(),
        limit as i64,
        &kinds
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(tasks)
}

/// Extends the lease of a long task; `false` when the lease was lost to another worker.
pub async fn heartbeat(db: &Db, task: i64, worker: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.system().await?;
    let changed = sqlx::query!(
        "UPDATE work_queue SET leased_until = now() + make_interval(secs => $3)
          WHERE id = $1 AND leased_by = $2 AND status = 'running'",
        task,
        worker,
        LEASE.as_secs_f64()
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(changed == 1)
}

pub async fn complete(db: &Db, task: i64, worker: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.system().await?;
    sqlx::query!(
        "UPDATE work_queue SET status = 'done', leased_by = NULL, leased_until = NULL
          WHERE id = $1 AND leased_by = $2",
        task,
        worker
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Records a failure: a `retryable` one runs again after a backoff, until `max_attempts`; then,
/// or at once when it is not retryable, the task is marked failed for good. Returns whether it
/// will run again (or is no longer this lease's to judge).
pub async fn fail(
    db: &Db,
    task: &LeasedTask,
    error: &str,
    retryable: bool,
) -> Result<bool, sqlx::Error> {
    let retry = retryable && task.attempts < task.max_attempts;
    let backoff = 2f64.powi(task.attempts.clamp(1, 10)).min(300.0);
    let mut tx = db.system().await?;
    let changed = sqlx::query!(
        "UPDATE work_queue
            SET status = CASE WHEN $3 THEN 'pending' ELSE 'failed' END,
                run_at = now() + make_interval(secs => $4), last_error = $5,
                leased_by = NULL, leased_until = NULL
          WHERE id = $1 AND leased_by = $2",
        task.id,
        &task.lease,
        retry,
        backoff,
        error.chars().take(2000).collect::<String>()
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    // A lost lease (the task was taken over, or re-queued as its successor) is not ours to
    // give up on.
    Ok(retry || changed == 0)
}

/// Runs `work` while renewing the lease every third of its length.
pub async fn with_heartbeat<F: Future>(db: &Db, task: i64, worker: &str, work: F) -> F::Output {
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            () = tokio::time::sleep(LEASE / 3) => match heartbeat(db, task, worker).await {
                Ok(true) => {}
                // Also when the task re-queued itself as its successor: nothing to renew.
                Ok(false) => tracing::debug!(task, "lease no longer held"),
                Err(e) => tracing::warn!(task, error = %e, "heartbeat failed"),
            },
        }
    }
}
