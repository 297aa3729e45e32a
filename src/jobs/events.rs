//! The job event log: every stage change, metric, evaluation and status change of a job,
//! written to Postgres first (in the transaction of the change it reports) and announced with
//! `pg_notify` on the live bus ([`crate::live`]) — delivered on commit, to every replica — so any replica serves any client and a
//! reconnecting client replays what it missed from the table. Events are typed ([`JobEvent`]);
//! this module is the only one that turns them into rows and back.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::event::{JobEvent, JobEventKind, JobEventRecord, StatusChange};
use super::lifecycle::{JobStage, JobStatus};
use super::store;
use crate::db::{Db, Tx};

/// A stored event as read from `job_events`.
struct EventRow {
    id: i64,
    job_id: Uuid,
    user_id: Uuid,
    kind: String,
    payload: serde_json::Value,
    created_at: DateTime<Utc>,
}

impl EventRow {
    /// The typed record; an unreadable row (written by hand, or by a newer version) is logged
    /// and skipped rather than breaking a whole stream.
    fn typed(self) -> Option<JobEventRecord> {
        match JobEvent::from_parts(&self.kind, self.payload) {
            Ok(event) => Some(JobEventRecord {
                id: self.id,
                job_id: self.job_id,
                user_id: self.user_id,
                event,
                created_at: self.created_at,
            }),
            Err(e) => {
                tracing::warn!(id = self.id, kind = %self.kind, error = %e, "skipping an unreadable job event");
                None
            }
        }
    }
}

/// Records an event unless one with the same `dedupe_key` exists for the job. Returns the new
/// event, or `None` for a duplicate (the caller then skips the side effects too).
pub async fn record(
    tx: &mut Tx,
    user: Uuid,
    job: Uuid,
    dedupe_key: &str,
    event: &JobEvent,
) -> Result<Option<JobEventRecord>, sqlx::Error> {
    // The job's row lock orders its events: ids are handed out at INSERT but seen at COMMIT, so
    // without it a later id could commit first and a reader past it would skip the earlier one.
    store::lock_attempt(tx, job).await?;
    let row = sqlx::query!(
        "INSERT INTO job_events (user_id, job_id, kind, payload, dedupe_key)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (job_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
         RETURNING id, created_at",
        user,
        job,
        event.kind().as_str(),
        event.payload(),
        dedupe_key
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (id, created_at) = (row.id, row.created_at);
    let record = JobEventRecord {
        id,
        job_id: job,
        user_id: user,
        event: event.clone(),
        created_at,
    };
    crate::live::announce(tx, &crate::live::Announcement::Job(record.clone())).await?;
    Ok(Some(record))
}

/// Records a `status` event: the job's new status with its summary as stored now (the Jobs
/// list and the job page need nothing else). Keyed per attempt and status.
pub async fn record_status(
    tx: &mut Tx,
    user: Uuid,
    job: Uuid,
    attempt: i32,
    status: JobStatus,
    stage: JobStage,
    message: Option<&str>,
) -> Result<(), sqlx::Error> {
    let summary = store::summary(tx, job).await?;
    let event = JobEvent::Status(StatusChange {
        status,
        current_stage: stage,
        message: message.map(str::to_owned),
        error_code: summary.as_ref().and_then(|s| s.error_code.clone()),
        progress: summary.as_ref().map_or(0.0, |s| s.progress),
        current_step: summary.as_ref().map_or(0, |s| s.current_step),
        total_steps: summary.as_ref().and_then(|s| s.total_steps),
        current_cost: summary.as_ref().map_or(0.0, |s| s.current_cost),
        final_cost: summary.as_ref().and_then(|s| s.final_cost),
        resumed_from_step: summary.as_ref().and_then(|s| s.resumed_from_step),
        artifact_id: summary.as_ref().and_then(|s| s.artifact_id),
    });
    record(
        tx,
        user,
        job,
        &format!("a{attempt}:status:{status}"),
        &event,
    )
    .await?;
    Ok(())
}

/// A page of the event log, oldest first.
pub struct EventPage {
    pub events: Vec<JobEventRecord>,
    /// The id of the last row read (a reader moves past rows it could not type).
    pub last_read: Option<i64>,
    /// The page was full: there may be more.
    pub full: bool,
}

impl EventPage {
    fn from_rows(rows: Vec<EventRow>, limit: i64) -> Self {
        let full = rows.len() as i64 >= limit;
        let last_read = rows.last().map(|r| r.id);
        Self {
            events: rows.into_iter().filter_map(EventRow::typed).collect(),
            last_read,
            full,
        }
    }
}

/// Events of one job after `after` (exclusive), oldest first.
pub async fn since(
    db: &Db,
    user: Uuid,
    job: Uuid,
    after: i64,
    limit: i64,
) -> Result<EventPage, sqlx::Error> {
    let mut tx = db.tenant(user).await?;
    let rows = sqlx::query_as!(
        EventRow,
        "SELECT id, job_id, user_id, kind, payload, created_at FROM job_events
          WHERE job_id = $1 AND user_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        job,
        user,
        after,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(EventPage::from_rows(rows, limit))
}

/// Events of all of a user's jobs after `after` (exclusive), oldest first.
pub async fn since_for_user(
    db: &Db,
    user: Uuid,
    after: i64,
    limit: i64,
) -> Result<EventPage, sqlx::Error> {
    let mut tx = db.tenant(user).await?;
    let rows = sqlx::query_as!(
        EventRow,
        "SELECT id, job_id, user_id, kind, payload, created_at FROM job_events
          WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        user,
        after,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(EventPage::from_rows(rows, limit))
}

/// The id of a user's newest event (0 when none): where a new live stream starts.
pub async fn latest_for_user(db: &Db, user: Uuid) -> Result<i64, sqlx::Error> {
    let mut tx = db.tenant(user).await?;
    let latest = sqlx::query_scalar!("SELECT max(id) FROM job_events WHERE user_id = $1", user)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(latest.unwrap_or(0))
}

/// One event by id (for oversized notifications).
pub async fn by_id(db: &Db, id: i64) -> Result<Option<JobEventRecord>, sqlx::Error> {
    let mut tx = db.system().await?;
    let row = sqlx::query_as!(
        EventRow,
        "SELECT id, job_id, user_id, kind, payload, created_at FROM job_events WHERE id = $1",
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.and_then(EventRow::typed))
}

/// The newest `limit` events of a job other than metrics (its event log), oldest first.
pub async fn log(
    db: &Db,
    user: Uuid,
    job: Uuid,
    limit: i64,
) -> Result<Vec<JobEventRecord>, sqlx::Error> {
    let mut tx = db.tenant(user).await?;
    let mut rows = sqlx::query_as!(
        EventRow,
        "SELECT id, job_id, user_id, kind, payload, created_at FROM job_events
          WHERE job_id = $1 AND user_id = $2 AND kind <> $3 ORDER BY id DESC LIMIT $4",
        job,
        user,
        JobEventKind::Metrics.as_str(),
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.reverse();
    Ok(rows.into_iter().filter_map(EventRow::typed).collect())
}
