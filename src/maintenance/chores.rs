//! The chores themselves: each deletes by age in bounded batches (no statement holds locks on
//! a large table for long), in system transactions, and is safe to run twice or on two
//! replicas at once.

use uuid::Uuid;

use super::{Chore, Outcome, Retention};
use crate::db::Db;
use crate::storage::{Bucket, Storage, StorageError};

/// Rows one statement deletes at most.
const BATCH: i64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("expiring uploads: {0}")]
    Uploads(#[from] crate::datasets::service::DatasetError),
}

/// Runs one chore; what it removed is logged and counted by the caller.
pub async fn run(
    db: &Db,
    storage: &Storage,
    retention: &Retention,
    chore: Chore,
) -> Result<Outcome, MaintenanceError> {
    match chore {
        Chore::FinishedTasks => finished_tasks(db, retention).await,
        Chore::JobEvents => job_events(db, retention).await,
        Chore::Sessions => sessions(db).await,
        Chore::ExpiredUploads => Ok(Outcome {
            removed: crate::datasets::service::expire_uploads(db, storage).await? as u64,
            ..Outcome::default()
        }),
        Chore::DeletedFiles => deleted_files(db, storage, retention).await,
        Chore::Orphans => super::orphans::sweep(db, storage, retention).await,
    }
}

/// Queues every chore that has no live task: on a fresh database, and for a chore the queue
/// gave up on (it is never left unscheduled for longer than until the next start).
pub async fn schedule(db: &Db) -> Result<u64, sqlx::Error> {
    let mut tx = db.system().await?;
    let mut queued = 0;
    for chore in Chore::ALL {
        let task = crate::tasks::Task::Maintenance { chore };
        if crate::queue::enqueue_if_idle(&mut tx, task.kind(), task.payload(), &task.dedupe_key())
            .await?
        {
            queued += 1;
        }
    }
    tx.commit().await?;
    Ok(queued)
}

fn seconds(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs `batch` (one statement in its own transaction, which it commits) until a batch removes
/// fewer than [`BATCH`] rows.
async fn in_batches<F, Fut>(db: &Db, mut batch: F) -> Result<Outcome, MaintenanceError>
where
    F: FnMut(crate::db::Tx) -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut removed = 0;
    loop {
        let n = batch(db.system().await?).await?;
        removed += n;
        if n < BATCH as u64 {
            return Ok(Outcome {
                removed,
                ..Outcome::default()
            });
        }
    }
}

async fn finished_tasks(db: &Db, retention: &Retention) -> Result<Outcome, MaintenanceError> {
    let older = seconds(retention.finished_tasks);
    in_batches(db, |mut tx| async move {
        let n = sqlx::query!(
            "DELETE FROM work_queue WHERE id IN (
                SELECT id FROM work_queue
                 WHERE status IN ('done', 'failed')
                   AND updated_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            older,
            BATCH
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    })
    .await
}

async fn job_events(db: &Db, retention: &Retention) -> Result<Outcome, MaintenanceError> {
    let older = seconds(retention.job_events);
    in_batches(db, |mut tx| async move {
        let n = sqlx::query!(
            "DELETE FROM job_events WHERE id IN (
                SELECT e.id FROM job_events e JOIN training_jobs j ON j.id = e.job_id
                 WHERE j.status IN ('completed', 'failed', 'cancelled')
                   AND j.completed_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
            older,
            BATCH
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    })
    .await
}

async fn sessions(db: &Db) -> Result<Outcome, MaintenanceError> {
    let mut tx = db.system().await?;
    let mut removed = 0;
    removed += sqlx::query!("DELETE FROM sessions WHERE expires_at <= now()")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    removed +=
        sqlx::query!("DELETE FROM login_attempts WHERE attempted_at < now() - interval '1 day'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
    removed += sqlx::query!(
        "DELETE FROM registration_attempts WHERE attempted_at < now() - interval '1 day'"
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    removed += sqlx::query!("DELETE FROM invites WHERE expires_at < now() - interval '30 days'")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    removed += sqlx::query!(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
        crate::idempotency::KEY_LIFETIME_HOURS
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Outcome {
        removed,
        ..Outcome::default()
    })
}

/// Files of datasets and models deleted more than `retention.deleted_files` ago, removed (a
/// missing file is fine: their deletion usually removed them already), then marked purged.
async fn deleted_files(
    db: &Db,
    storage: &Storage,
    retention: &Retention,
) -> Result<Outcome, MaintenanceError> {
    let mut outcome = Outcome::default();
    loop {
        let mut tx = db.system().await?;
        let datasets = sqlx::query!(
            "SELECT id, user_id, file_name, storage_key, normalized_key FROM datasets
              WHERE deleted_at < now() - make_interval(secs => $1) AND files_purged_at IS NULL
              LIMIT 200",
            seconds(retention.deleted_files)
        )
        .fetch_all(&mut *tx)
        .await?;
        let models = sqlx::query!(
            r#"SELECT id, ARRAY(SELECT f ->> 'key' FROM jsonb_array_elements(files) f
                                WHERE f ->> 'key' IS NOT NULL) AS "keys!"
                 FROM model_artifacts
                WHERE deleted_at < now() - make_interval(secs => $1) AND files_purged_at IS NULL
                LIMIT 200"#,
            seconds(retention.deleted_files)
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if datasets.is_empty() && models.is_empty() {
            return Ok(outcome);
        }
        let mut purged_datasets: Vec<Uuid> = Vec::new();
        for d in &datasets {
            let keys = crate::datasets::service::file_keys(
                d.user_id,
                d.id,
                &d.file_name,
                &d.storage_key,
                d.normalized_key.as_deref(),
            );
            remove_all(storage, Bucket::Datasets, &keys, &mut outcome).await?;
            purged_datasets.push(d.id);
        }
        let mut purged_models: Vec<Uuid> = Vec::new();
        for m in &models {
            remove_all(storage, Bucket::Models, &m.keys, &mut outcome).await?;
            purged_models.push(m.id);
        }
        let mut tx = db.system().await?;
        sqlx::query!(
            "UPDATE datasets SET files_purged_at = now() WHERE id = ANY($1)",
            &purged_datasets
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE model_artifacts SET files_purged_at = now() WHERE id = ANY($1)",
            &purged_models
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
}

/// Deletes every key that still exists, counting what it removed.
async fn remove_all(
    storage: &Storage,
    bucket: Bucket,
    keys: &[String],
    outcome: &mut Outcome,
) -> Result<(), MaintenanceError> {
    for key in keys {
        if let Some(info) = storage.info(bucket, key).await? {
            storage.delete(bucket, key).await?;
            outcome.removed += 1;
            outcome.bytes += info.size;
        }
    }
    Ok(())
}
