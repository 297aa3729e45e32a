//! The orphan sweep: objects in the buckets that no row owns (a deletion whose file removal
//! failed, a crash between writing a file and its row). It reports before it deletes: a sweep
//! records what it finds in `orphan_objects` and logs it; only a later sweep deletes the ones
//! that are still orphans once they were reported more than the grace period ago — and none
//! with `ORPHAN_SWEEP=report`.
//!
//! Keys say their owner: `{user}/{dataset}/…` in the datasets bucket (owned while the dataset
//! exists and is not deleted), `{user}/jobs/{job}/…` in the models bucket (owned while the job
//! exists). Objects younger than an hour are left alone: their row may not be committed yet.

use std::collections::HashSet;

use chrono::Utc;
use uuid::Uuid;

use super::chores::MaintenanceError;
use super::{Outcome, Retention};
use crate::db::Db;
use crate::storage::{Bucket, ListedObject, Storage};

/// Objects younger than this are never judged.
const YOUNGEST: chrono::Duration = chrono::Duration::hours(1);

/// The owner a key names, if it follows the bucket's scheme.
fn owner(bucket: Bucket, key: &str) -> Option<(Uuid, Uuid)> {
    let mut parts = key.split('/');
    let user = parts.next()?.parse().ok()?;
    let subject = match bucket {
        Bucket::Datasets => parts.next()?,
        Bucket::Models => {
            if parts.next()? != "jobs" {
                return None;
            }
            parts.next()?
        }
    };
    // Something must follow: a file under the owner's folder.
    parts.next()?;
    Some((user, subject.parse().ok()?))
}

pub async fn sweep(
    db: &Db,
    storage: &Storage,
    retention: &Retention,
) -> Result<Outcome, MaintenanceError> {
    let mut outcome = Outcome::default();
    for bucket in [Bucket::Datasets, Bucket::Models] {
        let objects = storage.list(bucket).await?;
        let cutoff = Utc::now() - YOUNGEST;
        let judged: Vec<&ListedObject> = objects
            .iter()
            .filter(|o| o.modified.is_none_or(|m| m < cutoff))
            .collect();
        let (with_owner, foreign): (Vec<_>, Vec<_>) = judged
            .iter()
            .map(|o| (*o, owner(bucket, &o.key)))
            .partition(|(_, owner)| owner.is_some());
        if !foreign.is_empty() {
            // Not ours to delete (an operator's file in our bucket?): reported every sweep.
            tracing::warn!(
                bucket = bucket.name(),
                objects = foreign.len(),
                first = %foreign[0].0.key,
                "objects whose keys follow no scheme of ours; left alone"
            );
        }
        let owners: Vec<(Uuid, Uuid)> = with_owner.iter().filter_map(|(_, o)| *o).collect();
        let owned = owned(db, bucket, &owners).await?;
        let orphans: Vec<&ListedObject> = with_owner
            .iter()
            .filter(|(_, o)| o.is_some_and(|o| !owned.contains(&o)))
            .map(|(object, _)| *object)
            .collect();

        let mut tx = db.system().await?;
        let keys: Vec<String> = orphans.iter().map(|o| o.key.clone()).collect();
        let sizes: Vec<i64> = orphans
            .iter()
            .map(|o| i64::try_from(o.size).unwrap_or(i64::MAX))
            .collect();
        // Forget what is no longer an orphan (owned again, or gone); record the new ones.
        sqlx::query!(
            "DELETE FROM orphan_objects WHERE bucket = $1 AND NOT (key = ANY($2))",
            bucket.name(),
            &keys
        )
        .execute(&mut *tx)
        .await?;
        let new: Vec<String> = sqlx::query_scalar!(
            r#"INSERT INTO orphan_objects (bucket, key, size)
               SELECT $1, k, s FROM unnest($2::text[], $3::bigint[]) AS t(k, s)
               ON CONFLICT (bucket, key) DO NOTHING
               RETURNING key"#,
            bucket.name(),
            &keys,
            &sizes
        )
        .fetch_all(&mut *tx)
        .await?;
        let due: Vec<(String, i64)> = if retention.delete_orphans {
            sqlx::query!(
                "SELECT key, size FROM orphan_objects
                  WHERE bucket = $1 AND found_at < now() - make_interval(secs => $2)",
                bucket.name(),
                retention.orphan_grace.as_secs_f64()
            )
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| (r.key, r.size))
            .collect()
        } else {
            Vec::new()
        };
        tx.commit().await?;
        for key in new.iter().take(20) {
            tracing::info!(bucket = bucket.name(), %key, "orphaned object found; deleted after the grace period unless a row claims it");
        }
        outcome.reported += new.len() as u64;

        for (key, size) in due {
            storage.delete(bucket, &key).await?;
            let mut tx = db.system().await?;
            sqlx::query!(
                "DELETE FROM orphan_objects WHERE bucket = $1 AND key = $2",
                bucket.name(),
                &key
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(bucket = bucket.name(), %key, size, "orphaned object deleted");
            outcome.removed += 1;
            outcome.bytes += size.max(0) as u64;
        }
    }
    Ok(outcome)
}

/// Which of `owners` (user, subject) exist: live datasets, or jobs.
async fn owned(
    db: &Db,
    bucket: Bucket,
    owners: &[(Uuid, Uuid)],
) -> Result<HashSet<(Uuid, Uuid)>, sqlx::Error> {
    let users: Vec<Uuid> = owners.iter().map(|o| o.0).collect();
    let subjects: Vec<Uuid> = owners.iter().map(|o| o.1).collect();
    let mut tx = db.system().await?;
    let rows: Vec<(Uuid, Uuid)> = match bucket {
        Bucket::Datasets => sqlx::query!(
            r#"SELECT DISTINCT k.user_id AS "user_id!", k.id AS "id!"
                 FROM unnest($1::uuid[], $2::uuid[]) AS k(user_id, id)
                WHERE EXISTS (SELECT 1 FROM datasets d
                               WHERE d.id = k.id AND d.user_id = k.user_id
                                 AND d.deleted_at IS NULL)"#,
            &users,
            &subjects
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.user_id, r.id))
        .collect(),
        Bucket::Models => sqlx::query!(
            r#"SELECT DISTINCT k.user_id AS "user_id!", k.id AS "id!"
                 FROM unnest($1::uuid[], $2::uuid[]) AS k(user_id, id)
                WHERE EXISTS (SELECT 1 FROM training_jobs j
                               WHERE j.id = k.id AND j.user_id = k.user_id)"#,
            &users,
            &subjects
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.user_id, r.id))
        .collect(),
    };
    tx.commit().await?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_owner_by_the_buckets_scheme() {
        let (u, d) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            owner(Bucket::Datasets, &format!("{u}/{d}/original.jsonl")),
            Some((u, d))
        );
        assert_eq!(
            owner(
                Bucket::Models,
                &format!("{u}/jobs/{d}/a1/adapter_model.safetensors")
            ),
            Some((u, d))
        );
        // Not our schemes: never judged an orphan of ours.
        assert_eq!(owner(Bucket::Datasets, "verify/abc.txt"), None);
        assert_eq!(owner(Bucket::Datasets, &format!("{u}/{d}")), None);
        assert_eq!(owner(Bucket::Models, &format!("{u}/{d}/a1/x")), None);
        assert_eq!(
            owner(Bucket::Models, &format!("{u}/jobs/not-a-uuid/a1/x")),
            None
        );
    }
}
