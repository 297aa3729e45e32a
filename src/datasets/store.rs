//! Datasets in Postgres. Every function takes a tenant transaction and filters by `user_id` as
//! well (row-level security is the second fence).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    DatasetFormat, DatasetStatistics, DatasetStatus, DatasetView, SampleMessage, ValidationIssue,
};
use crate::db::Tx;

/// A row of the dataset list, as stored and as `GET /api/datasets` sends it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DatasetSummaryRow {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub format: Option<String>,
    pub file_size: i64,
    pub total_training_pairs: Option<i32>,
    pub total_tokens: Option<i64>,
    pub training_ready: bool,
    pub created_at: DateTime<Utc>,
}

/// A row as stored; converted to [`DatasetView`] for clients.
#[derive(Debug, Clone)]
pub struct DatasetRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub file_name: String,
    pub file_size: i64,
    pub format: Option<String>,
    pub status: String,
    pub storage_key: String,
    pub normalized_key: Option<String>,
    pub sha256: Option<String>,
    pub total_training_pairs: Option<i32>,
    pub total_tokens: Option<i64>,
    pub statistics: Option<Value>,
    pub error_counts: Value,
    pub validation_errors: Value,
    pub sample: Option<Value>,
    pub training_ready: bool,
    pub status_message: Option<String>,
    pub validated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<DatasetRow> for DatasetView {
    fn from(row: DatasetRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            description: row.description,
            file_name: row.file_name,
            file_size: row.file_size,
            status: DatasetStatus::parse(&row.status).unwrap_or(DatasetStatus::Invalid),
            format: row.format.as_deref().and_then(DatasetFormat::parse),
            training_ready: row.training_ready,
            total_training_pairs: row.total_training_pairs.map(i64::from),
            total_tokens: row.total_tokens,
            statistics: row
                .statistics
                .and_then(|v| serde_json::from_value::<DatasetStatistics>(v).ok()),
            validation_errors: serde_json::from_value::<Vec<ValidationIssue>>(
                row.validation_errors,
            )
            .unwrap_or_default(),
            error_counts: serde_json::from_value::<BTreeMap<String, u64>>(row.error_counts)
                .unwrap_or_default(),
            sample: row
                .sample
                .and_then(|v| serde_json::from_value::<Vec<Vec<SampleMessage>>>(v).ok())
                .unwrap_or_default(),
            status_message: row.status_message,
            sha256: row.sha256,
            created_at: row.created_at,
            updated_at: row.updated_at,
            validated_at: row.validated_at,
        }
    }
}

pub struct NewDatasetRow<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub file_name: &'a str,
    pub file_size: i64,
    pub storage_key: &'a str,
}

pub async fn insert(tx: &mut Tx, new: NewDatasetRow<'_>) -> Result<DatasetRow, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO datasets (id, user_id, name, description, file_name, file_size, storage_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        new.id,
        new.user_id,
        new.name,
        new.description,
        new.file_name,
        new.file_size,
        new.storage_key
    )
    .execute(&mut **tx)
    .await?;
    select(tx, new.id, Some(new.user_id))
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// A dataset (not deleted) by id, of `user` when given (else in the system scope).
async fn select(
    tx: &mut Tx,
    id: Uuid,
    user: Option<Uuid>,
) -> Result<Option<DatasetRow>, sqlx::Error> {
    sqlx::query_as!(
        DatasetRow,
        "SELECT id, user_id, name, description, file_name, file_size, format, status, storage_key,
                normalized_key, sha256, total_training_pairs, total_tokens, statistics, error_counts,
                validation_errors, sample, training_ready, status_message, validated_at, created_at,
                updated_at
           FROM datasets WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2) AND deleted_at IS NULL",
        id,
        user
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Locks a dataset's row for a state change; whether it exists (and is `user`'s, when given).
async fn lock(tx: &mut Tx, id: Uuid, user: Option<Uuid>) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "SELECT id FROM datasets
          WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2) AND deleted_at IS NULL FOR UPDATE",
        id,
        user
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(found.is_some())
}

/// One dataset of the caller's (not deleted); `lock` takes a row lock for a state change.
pub async fn find(
    tx: &mut Tx,
    user_id: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<DatasetRow>, sqlx::Error> {
    if lock && !self::lock(tx, id, Some(user_id)).await? {
        return Ok(None);
    }
    select(tx, id, Some(user_id)).await
}

/// For the validation task (system scope: the task carries the owner).
pub async fn find_for_validation(tx: &mut Tx, id: Uuid) -> Result<Option<DatasetRow>, sqlx::Error> {
    if !lock(tx, id, None).await? {
        return Ok(None);
    }
    select(tx, id, None).await
}

/// Filters for the list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub search: Option<String>,
    pub status: Option<DatasetStatus>,
    pub format: Option<DatasetFormat>,
    pub page: u32,
    pub limit: u32,
}

/// The caller's datasets, newest first, and the total matching the filter.
pub async fn list_page(
    tx: &mut Tx,
    user_id: Uuid,
    filter: &ListFilter,
) -> Result<(Vec<DatasetSummaryRow>, i64), sqlx::Error> {
    let pattern = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            format!(
                "%{}%",
                s.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        });
    let status = filter.status.map(DatasetStatus::as_str);
    let format = filter.format.map(DatasetFormat::as_str);
    let limit = i64::from(filter.limit.clamp(1, 100));
    let offset = i64::from(filter.page.max(1) - 1) * limit;
    let rows = sqlx::query_as!(DatasetSummaryRow, "SELECT id, name, status, format, file_size, total_training_pairs, total_tokens, training_ready, created_at
           FROM datasets
          WHERE user_id = $1 AND deleted_at IS NULL
            AND ($2::text IS NULL OR name ILIKE $2)
            AND ($3::text IS NULL OR status = $3)
            AND ($4::text IS NULL OR format = $4)
          ORDER BY created_at DESC, id
          LIMIT $5 OFFSET $6", user_id, pattern.as_deref(), status, format, limit, offset)
    .fetch_all(&mut **tx)
    .await?;
    let total: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM datasets
          WHERE user_id = $1 AND deleted_at IS NULL
            AND ($2::text IS NULL OR name ILIKE $2)
            AND ($3::text IS NULL OR status = $3)
            AND ($4::text IS NULL OR format = $4)"#,
        user_id,
        pattern.as_deref(),
        status,
        format
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok((rows, total))
}

/// The caller's datasets, newest first (the first page, unfiltered).
pub async fn list(tx: &mut Tx, user_id: Uuid) -> Result<Vec<DatasetSummaryRow>, sqlx::Error> {
    let filter = ListFilter {
        page: 1,
        limit: 100,
        ..ListFilter::default()
    };
    Ok(list_page(tx, user_id, &filter).await?.0)
}

/// Keeps the dataset from being deleted until the transaction ends (a job is being inserted or
/// restarted on it): a share lock that a delete's row lock waits for. `false` when it is not the
/// user's or was deleted.
pub async fn hold(tx: &mut Tx, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let held = sqlx::query_scalar!(
        "SELECT id FROM datasets WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL FOR SHARE",
        id,
        user_id
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(held.is_some())
}

/// Takes the account's storage lock for this transaction (parallel creations are decided one
/// after another) and returns what it keeps: bytes of dataset files (pending uploads included)
/// and model files, and its number of datasets.
pub async fn storage_used(tx: &mut Tx, user_id: Uuid) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('storage:' || $1, 0))",
        user_id.to_string()
    )
    .fetch_one(&mut **tx)
    .await?;
    let row = sqlx::query!(
        r#"SELECT (SELECT COALESCE(sum(file_size), 0) FROM datasets
                    WHERE user_id = $1 AND deleted_at IS NULL)::bigint
                + (SELECT COALESCE(sum((f->>'size')::bigint), 0)
                     FROM model_artifacts a, jsonb_array_elements(a.files) f
                    WHERE a.user_id = $1 AND a.deleted_at IS NULL)::bigint AS "bytes!",
                  (SELECT count(*) FROM datasets WHERE user_id = $1 AND deleted_at IS NULL) AS "datasets!""#,
        user_id
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.bytes, row.datasets))
}

/// Whether the dataset file at `storage_key` may still be uploaded: its dataset exists and is
/// not confirmed yet. Once confirmed, the upload link stops working, so the file validated
/// (and its recorded sha256) is the one that stays.
pub async fn accepts_upload(tx: &mut Tx, storage_key: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM datasets
                           WHERE storage_key = $1 AND status = 'uploading' AND deleted_at IS NULL) AS "open!""#,
        storage_key
    )
    .fetch_one(&mut **tx)
    .await
}

/// The newest queued or running job on the dataset, and its status.
pub async fn active_job_on(
    tx: &mut Tx,
    id: Uuid,
) -> Result<Option<(Uuid, crate::jobs::JobStatus)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT id, status AS "status: crate::jobs::JobStatus" FROM training_jobs
            WHERE dataset_id = $1 AND status = ANY($2)
            ORDER BY created_at DESC LIMIT 1"#,
        id,
        &crate::jobs::JobStatus::names(crate::jobs::JobStatus::ACTIVE)
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| (r.id, r.status)))
}

/// `user`'s datasets that need a look, newest first: not yet validated, invalid, or valid but
/// not trainable.
pub async fn needing_attention(
    tx: &mut Tx,
    user_id: Uuid,
    limit: i64,
) -> Result<Vec<DatasetSummaryRow>, sqlx::Error> {
    sqlx::query_as!(
        DatasetSummaryRow,
        "SELECT id, name, status, format, file_size, total_training_pairs, total_tokens, training_ready, created_at
           FROM datasets
          WHERE user_id = $1 AND deleted_at IS NULL AND (status <> 'ready' OR NOT training_ready)
          ORDER BY created_at DESC, id
          LIMIT $2",
        user_id,
        limit
    )
    .fetch_all(&mut **tx)
    .await
}

/// `uploading` → `validating`, with the file now kept at `storage_key` (its digest is taken by
/// the validation, from the file it validates). `false` when the row was not in `uploading`.
pub async fn mark_validating(
    tx: &mut Tx,
    user_id: Uuid,
    id: Uuid,
    storage_key: &str,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query!("UPDATE datasets SET status = 'validating', status_message = NULL, storage_key = $3, sha256 = NULL
          WHERE id = $1 AND user_id = $2 AND status = 'uploading' AND deleted_at IS NULL", id, user_id, storage_key)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 1 {
        announce(tx, user_id, id, DatasetStatus::Validating, false).await?;
    }
    Ok(changed == 1)
}

/// Tells the owner's open pages that a dataset's status changed (delivered on commit).
pub async fn announce(
    tx: &mut Tx,
    user_id: Uuid,
    dataset_id: Uuid,
    status: DatasetStatus,
    training_ready: bool,
) -> Result<(), sqlx::Error> {
    crate::live::announce(
        tx,
        &crate::live::Announcement::Dataset(crate::live::DatasetChange {
            dataset_id,
            user_id,
            status,
            training_ready,
        }),
    )
    .await
}

/// The validator's verdict, written once; `false` when the dataset is no longer validating.
pub struct Verdict<'a> {
    pub status: DatasetStatus,
    pub format: Option<DatasetFormat>,
    pub normalized_key: Option<&'a str>,
    pub sha256: &'a str,
    pub statistics: &'a DatasetStatistics,
    pub issues: &'a [ValidationIssue],
    pub error_counts: &'a BTreeMap<String, u64>,
    pub sample: &'a [Vec<SampleMessage>],
    pub training_ready: bool,
    pub status_message: Option<&'a str>,
}

pub async fn record_verdict(
    tx: &mut Tx,
    id: Uuid,
    verdict: Verdict<'_>,
) -> Result<bool, sqlx::Error> {
    let s = verdict.statistics;
    let owner: Option<Uuid> = sqlx::query_scalar!("UPDATE datasets
            SET status = $2, format = $3, normalized_key = $4, sha256 = coalesce(nullif($5, ''), sha256),
                total_training_pairs = $6, conversations = $7, total_messages = $8, total_tokens = $9,
                assistant_tokens = $10, avg_turns = $11, over_length_count = $12, token_distribution = $13,
                statistics = $14, validation_errors = $15, error_counts = $16, sample = $17,
                training_ready = $18, status_message = $19, validated_at = now()
          WHERE id = $1 AND status = 'validating' AND deleted_at IS NULL
      RETURNING user_id", id, verdict.status.as_str(), verdict.format.map(DatasetFormat::as_str), verdict.normalized_key, verdict.sha256, i32::try_from(s.examples).unwrap_or(i32::MAX), i32::try_from(s.conversations).unwrap_or(i32::MAX), i32::try_from(s.messages).unwrap_or(i32::MAX), i64::try_from(s.total_tokens).unwrap_or(i64::MAX), i64::try_from(s.assistant_tokens).unwrap_or(i64::MAX), s.avg_turns, i32::try_from(s.over_max_seq_len).unwrap_or(i32::MAX), serde_json::to_value(&s.tokens).unwrap_or(Value::Null), serde_json::to_value(s).unwrap_or(Value::Null), serde_json::to_value(verdict.issues).unwrap_or(Value::Null), serde_json::to_value(verdict.error_counts).unwrap_or(Value::Null), serde_json::to_value(verdict.sample).unwrap_or(Value::Null), verdict.training_ready, verdict.status_message)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(owner) = owner {
        announce(tx, owner, id, verdict.status, verdict.training_ready).await?;
    }
    Ok(owner.is_some())
}

/// A dataset whose upload was never confirmed, expired by [`expire_uploads`].
pub struct ExpiredUpload {
    pub id: Uuid,
    pub user_id: Uuid,
    pub storage_key: String,
}

/// Soft-deletes the datasets still `uploading` that were created before `created_before`
/// (a confirmation in progress holds the row, and once it commits the row is no longer
/// `uploading`). System scope: every account's.
pub async fn expire_uploads(
    tx: &mut Tx,
    created_before: DateTime<Utc>,
) -> Result<Vec<ExpiredUpload>, sqlx::Error> {
    sqlx::query_as!(
        ExpiredUpload,
        "UPDATE datasets
            SET deleted_at = now(), status_message = 'the upload was not confirmed in time'
          WHERE status = 'uploading' AND deleted_at IS NULL AND created_at < $1
      RETURNING id, user_id, storage_key",
        created_before
    )
    .fetch_all(&mut **tx)
    .await
}

/// Soft delete; `false` when there was no such dataset of the caller's.
pub async fn soft_delete(tx: &mut Tx, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query!(
        "UPDATE datasets SET deleted_at = now(), training_ready = false
          WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        id,
        user_id
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}
