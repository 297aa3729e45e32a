//! The job event log: every stage change, metric, evaluation and status change of a job,
//! written to Postgres first (in the transaction of the change it reports) and announced with
//! `pg_notify` — delivered on commit, to every replica — so any replica serves any client and a
//! reconnecting client replays what it missed from the table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::{Db, Tx};

/// The Postgres channel events are announced on.
pub const CHANNEL: &str = "lora_events";
/// Largest payload sent through NOTIFY (Postgres allows 8000 bytes).
const NOTIFY_LIMIT: usize = 7000;

/// One event, as stored and as sent over SSE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct JobEvent {
    /// Ordered per job; the SSE `id` (and so `Last-Event-ID`).
    pub id: i64,
    pub job_id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Records an event unless one with the same `dedupe_key` exists for the job. Returns the new
/// event, or `None` for a duplicate (the caller then skips the side effects too).
pub async fn record(
    tx: &mut Tx,
    user: Uuid,
    job: Uuid,
    kind: &str,
    dedupe_key: &str,
    payload: serde_json::Value,
) -> Result<Option<JobEvent>, sqlx::Error> {
    // The job's row lock orders its events: ids are handed out at INSERT but seen at COMMIT, so
    // without it a later id could commit first and a reader past it would skip the earlier one.
    sqlx::query("SELECT 1 FROM training_jobs WHERE id = $1 FOR UPDATE")
        .bind(job)
        .execute(&mut **tx)
        .await?;
    let event = sqlx::query_as::<_, JobEvent>(
        "INSERT INTO job_events (user_id, job_id, kind, payload, dedupe_key)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (job_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
         RETURNING id, job_id, user_id, kind, payload, created_at",
    )
    .bind(user)
    .bind(job)
    .bind(kind)
    .bind(&payload)
    .bind(dedupe_key)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(event) = &event {
        announce(tx, event).await?;
    }
    Ok(event)
}

/// Sends the event on the channel; it is delivered when the transaction commits.
async fn announce(tx: &mut Tx, event: &JobEvent) -> Result<(), sqlx::Error> {
    let mut text = serde_json::to_string(event).unwrap_or_default();
    if text.len() > NOTIFY_LIMIT {
        // Listeners fetch an oversized event from the table by its id.
        text = serde_json::json!({ "id": event.id, "job_id": event.job_id, "user_id": event.user_id, "oversized": true })
            .to_string();
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(text)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Events of one job after `after` (exclusive), oldest first.
pub async fn since(
    db: &Db,
    user: Uuid,
    job: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<JobEvent>, sqlx::Error> {
    let mut tx = db.tenant(user).await?;
    let events = sqlx::query_as::<_, JobEvent>(
        "SELECT id, job_id, user_id, kind, payload, created_at FROM job_events
          WHERE job_id = $1 AND user_id = $2 AND id > $3 ORDER BY id LIMIT $4",
    )
    .bind(job)
    .bind(user)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(events)
}

/// One event by id (for oversized notifications).
pub async fn by_id(db: &Db, id: i64) -> Result<Option<JobEvent>, sqlx::Error> {
    let mut tx = db.system().await?;
    let event = sqlx::query_as::<_, JobEvent>(
        "SELECT id, job_id, user_id, kind, payload, created_at FROM job_events WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(event)
}

/// The newest `limit` events of a job other than metrics (its event log), oldest first.
pub async fn log(db: &Db, user: Uuid, job: Uuid, limit: i64) -> Result<Vec<JobEvent>, sqlx::Error> {
    let mut tx = db.tenant(user).await?;
    let mut events = sqlx::query_as::<_, JobEvent>(
        "SELECT id, job_id, user_id, kind, payload, created_at FROM job_events
          WHERE job_id = $1 AND user_id = $2 AND kind <> 'metrics' ORDER BY id DESC LIMIT $3",
    )
    .bind(job)
    .bind(user)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    events.reverse();
    Ok(events)
}
