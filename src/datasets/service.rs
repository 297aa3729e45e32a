//! The dataset flow: create (with a signed upload URL) → the client uploads → confirm (queues
//! validation) → the validation task streams the file through the validator, stores the
//! normalised training file and records the verdict.

use std::path::{Path, PathBuf};

use tokio_util::io::SyncIoBridge;
use uuid::Uuid;

use super::validate::{self, Options};
use super::{
    DatasetStatus, DatasetView, ListFilter, NewDataset, NewDatasetError, NewDatasetRow, Verdict,
    check_new_dataset,
};
use crate::db::Db;
use crate::idempotency::{self, Claim, ClaimError, IdempotencyKey};
use crate::notifications::{self, NewNotification, NotificationKind};
use crate::storage::{Bucket, SignedRequest, Storage, StorageError};
use crate::tasks::Task;
use crate::validation::FieldErrors;

impl crate::error::Classify for DatasetError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Invalid(fields) => ErrorKind::Invalid(fields.clone()),
            Self::TooLarge { .. } => ErrorKind::TooLarge {
                field: "file",
                message: self.to_string(),
            },
            Self::NotFound => ErrorKind::NotFound,
            Self::Conflict(message) => ErrorKind::conflict(message.clone()),
            Self::Storage(_) | Self::Db(_) => ErrorKind::Internal,
        }
    }
}

/// How long an upload URL stays valid.
pub const UPLOAD_URL_TTL: chrono::Duration = chrono::Duration::hours(2);
/// After its link ran out, how long an upload may still be confirmed (a PUT that started just
/// before may still be streaming); then it is expired and its file removed.
pub const UPLOAD_GRACE: chrono::Duration = chrono::Duration::hours(1);

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("invalid dataset: {0}")]
    Invalid(FieldErrors),
    #[error("the file is {size} bytes; the limit is {limit} bytes (500 MB)")]
    TooLarge { size: u64, limit: u64 },
    #[error("dataset not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database error on datasets: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<ClaimError> for DatasetError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Mismatch => Self::Conflict(e.to_string()),
            ClaimError::Db(e) => Self::Db(e),
        }
    }
}

/// A new dataset and where to upload its file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Created {
    pub dataset: DatasetView,
    pub upload: SignedRequest,
    pub storage_path: String,
}

fn extension(file_name: &str) -> &'static str {
    if file_name.to_lowercase().ends_with(".jsonl") {
        "jsonl"
    } else {
        "json"
    }
}

/// Where the client uploads (the signed URL's key), until the dataset is confirmed.
/// Every key a dataset's files may have: its stored file, the upload key (a PUT in flight at
/// confirmation may have landed there after) and the normalised training file.
pub fn file_keys(
    user: Uuid,
    dataset: Uuid,
    file_name: &str,
    storage_key: &str,
    normalized_key: Option<&str>,
) -> Vec<String> {
    [storage_key.to_owned(), upload_key(user, dataset, file_name)]
        .into_iter()
        .chain(normalized_key.map(str::to_owned))
        .collect()
}

fn upload_key(user: Uuid, dataset: Uuid, file_name: &str) -> String {
    format!("{user}/{dataset}/upload.{}", extension(file_name))
}

/// Where the accepted file is kept from confirmation on: no upload link points here.
fn original_key(user: Uuid, dataset: Uuid, file_name: &str) -> String {
    format!("{user}/{dataset}/original.{}", extension(file_name))
}

fn normalized_key(user: Uuid, dataset: Uuid) -> String {
    format!("{user}/{dataset}/normalized.jsonl")
}

pub async fn create(
    db: &Db,
    storage: &Storage,
    limits: &crate::costs::Limits,
    user: Uuid,
    new: &NewDataset,
    idempotency: Option<&IdempotencyKey>,
) -> Result<Created, DatasetError> {
    check_new_dataset(new).map_err(|e| match e {
        NewDatasetError::Invalid(fields) => DatasetError::Invalid(fields),
        NewDatasetError::TooLarge { size } => DatasetError::TooLarge {
            size,
            limit: super::MAX_UPLOAD_BYTES,
        },
    })?;
    let id = Uuid::new_v4();
    let key = upload_key(user, id, &new.file_name);
    let upload = storage
        .presign_put(Bucket::Datasets, &key, new.file_size, UPLOAD_URL_TTL)
        .await?;
    let mut tx = db.tenant(user).await?;
    if let Some(key) = idempotency
        && let Claim::Replay(first) = idempotency::claim(&mut tx, user, key).await?
    {
        return Ok(first);
    }
    // The quota, under the account's storage lock: parallel uploads cannot pass it together.
    let (used, datasets) = super::storage_used(&mut tx, user).await?;
    if datasets >= i64::from(limits.max_datasets) {
        return Err(DatasetError::Conflict(format!(
            "you keep {datasets} datasets, the most this server allows; delete some to upload another"
        )));
    }
    let quota = (limits.max_storage_gb * 1e9) as i64;
    if used + new.file_size as i64 > quota {
        return Err(DatasetError::Conflict(format!(
            "your datasets and models use {} of your {}; this file ({}) does not fit — delete some first",
            crate::format::bytes(used.max(0) as u64),
            crate::format::bytes(quota.max(0) as u64),
            crate::format::bytes(new.file_size)
        )));
    }
    let row = super::insert(
        &mut tx,
        NewDatasetRow {
            id,
            user_id: user,
            name: new.name.trim(),
            description: new
                .description
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty()),
            file_name: new.file_name.trim(),
            file_size: new.file_size as i64,
            storage_key: &key,
        },
    )
    .await?;
    let created = Created {
        dataset: row.into(),
        storage_path: format!("{}/{key}", Bucket::Datasets.name()),
        upload,
    };
    if let Some(key) = idempotency {
        idempotency::record(&mut tx, user, key, &created).await?;
    }
    tx.commit().await?;
    Ok(created)
}

/// The upload is complete: check the object, then queue validation (in the same transaction
/// as the status change, so neither happens without the other).
pub async fn confirm(
    db: &Db,
    storage: &Storage,
    user: Uuid,
    id: Uuid,
) -> Result<DatasetView, DatasetError> {
    let mut tx = db.tenant(user).await?;
    let row = super::find(&mut tx, user, id, true)
        .await?
        .ok_or(DatasetError::NotFound)?;
    match DatasetStatus::parse(&row.status) {
        Some(DatasetStatus::Uploading) => {}
        Some(DatasetStatus::Validating) => return Ok(row.into()), // confirming twice is harmless
        _ => {
            return Err(DatasetError::Conflict(format!(
                "the dataset is already {}; upload a new dataset to change its file",
                row.status
            )));
        }
    }
    let incomplete = |size: u64| {
        DatasetError::Conflict(format!(
            "the upload is incomplete: {size} of {} bytes arrived; upload the file again",
            row.file_size
        ))
    };
    let no_file = || {
        DatasetError::Conflict(
            "no file has been uploaded yet: PUT the file to the upload URL first".into(),
        )
    };
    // The file moves to a key no upload link reaches, so the file validated is the one kept.
    let kept = original_key(user, id, &row.file_name);
    if row.storage_key != kept {
        match storage.info(Bucket::Datasets, &row.storage_key).await? {
            // A wrong size stays where the client can upload again.
            Some(info) if info.size != row.file_size as u64 => return Err(incomplete(info.size)),
            Some(_) => {
                storage
                    .seal(Bucket::Datasets, &row.storage_key, &kept)
                    .await?;
            }
            // Sealed by a confirmation that did not commit: carry on with it.
            None => {}
        }
    }
    match storage.info(Bucket::Datasets, &kept).await? {
        Some(info) if info.size == row.file_size as u64 => {}
        Some(info) => return Err(incomplete(info.size)),
        None => return Err(no_file()),
    }
    if !super::mark_validating(&mut tx, user, id, &kept).await? {
        return Err(DatasetError::Conflict(
            "the dataset changed meanwhile; reload it".into(),
        ));
    }
    Task::ValidateDataset { dataset_id: id }
        .enqueue(&mut tx, Some(user), std::time::Duration::ZERO)
        .await?;
    let row = super::find(&mut tx, user, id, false)
        .await?
        .ok_or(DatasetError::NotFound)?;
    tx.commit().await?;
    Ok(row.into())
}

pub async fn get(db: &Db, user: Uuid, id: Uuid) -> Result<DatasetView, DatasetError> {
    let mut tx = db.tenant(user).await?;
    let row = super::find(&mut tx, user, id, false)
        .await?
        .ok_or(DatasetError::NotFound)?;
    tx.commit().await?;
    Ok(row.into())
}

pub async fn list(
    db: &Db,
    user: Uuid,
    filter: &ListFilter,
) -> Result<(Vec<super::DatasetSummaryRow>, i64), DatasetError> {
    let mut tx = db.tenant(user).await?;
    let page = super::list_page(&mut tx, user, filter).await?;
    tx.commit().await?;
    Ok(page)
}

/// Soft-deletes the dataset and removes its files.
pub async fn delete(db: &Db, storage: &Storage, user: Uuid, id: Uuid) -> Result<(), DatasetError> {
    let mut tx = db.tenant(user).await?;
    let row = super::find(&mut tx, user, id, true)
        .await?
        .ok_or(DatasetError::NotFound)?;
    // Under the row lock: a job being created on it holds a share lock until it commits, so
    // it is seen here (or sees the deletion and is refused).
    if let Some((job, status)) = super::active_job_on(&mut tx, id).await? {
        return Err(DatasetError::Conflict(format!(
            "job {job} is {status} on this dataset; cancel it or let it end, then delete the dataset"
        )));
    }
    if !super::soft_delete(&mut tx, user, id).await? {
        return Err(DatasetError::NotFound);
    }
    tx.commit().await?;
    // The row is gone for the user; a failure here leaves a file that the deleted-files chore
    // (engine::maintenance) removes later, never a broken row.
    for key in file_keys(
        user,
        id,
        &row.file_name,
        &row.storage_key,
        row.normalized_key.as_deref(),
    ) {
        if let Err(e) = storage.delete(Bucket::Datasets, &key).await {
            tracing::warn!(dataset = %id, error = %e, "could not delete a dataset file");
        }
    }
    Ok(())
}

/// Expires uploads never confirmed within their link's lifetime (and [`UPLOAD_GRACE`]): the
/// dataset goes, its file is removed and its bytes no longer count against the quota.
/// Idempotent and safe on several replicas at once (each row is expired by one statement).
pub async fn expire_uploads(db: &Db, storage: &Storage) -> Result<usize, DatasetError> {
    let mut tx = db.system().await?;
    let expired =
        super::expire_uploads(&mut tx, chrono::Utc::now() - UPLOAD_URL_TTL - UPLOAD_GRACE).await?;
    tx.commit().await?;
    for upload in &expired {
        // A failure leaves an orphan file, never a broken row.
        if let Err(e) = storage.delete(Bucket::Datasets, &upload.storage_key).await {
            tracing::warn!(dataset = %upload.id, error = %e, "could not delete an expired upload");
        }
        tracing::info!(dataset = %upload.id, user = %upload.user_id, "expired an unconfirmed upload");
    }
    Ok(expired.len())
}

#[derive(Debug, thiserror::Error)]
pub enum ValidationTaskError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("I/O error while validating: {0}")]
    Io(#[from] std::io::Error),
    #[error("the validator stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("database error while validating: {0}")]
    Db(#[from] sqlx::Error),
}

/// The validation task. Idempotent: run again after a crash, it validates from the start and
/// records the verdict once (only while the dataset is still `validating`).
pub async fn run_validation(
    db: &Db,
    storage: &Storage,
    scratch: &Path,
    id: Uuid,
) -> Result<(), ValidationTaskError> {
    let row = {
        let mut tx = db.system().await?;
        let row = super::find_for_validation(&mut tx, id).await?;
        tx.commit().await?;
        match row {
            Some(row) if row.status == "validating" => row,
            _ => return Ok(()), // deleted or already decided: nothing to do
        }
    };
    let started = std::time::Instant::now();
    let reader = storage.open(Bucket::Datasets, &row.storage_key).await?;
    tokio::fs::create_dir_all(scratch).await?;
    // Users' data passes through here: the server's user only (the worker runs as another).
    tokio::fs::set_permissions(scratch, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .await?;
    let output = scratch.join(format!("{id}.normalized.jsonl"));
    let options = Options {
        hash: row.sha256.is_none(),
        ..Options::default()
    };
    let output_path = output.clone();
    let report = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let input = SyncIoBridge::new(reader);
        let mut out =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&output_path)?);
        let report = validate::validate(input, &options, &mut out)?;
        std::io::Write::flush(&mut out)?;
        Ok(report)
    })
    .await?;
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            let _ = tokio::fs::remove_file(&output).await;
            return Err(e.into());
        }
    };
    let ready = report.training_ready();
    let valid = report.is_valid();
    let normalized = normalized_key(row.user_id, id);
    if valid {
        storage
            .put_file(Bucket::Datasets, &normalized, &output)
            .await?;
    }
    let _ = tokio::fs::remove_file(&output).await;
    let sha = row.sha256.clone().unwrap_or_else(|| report.sha256.clone());
    let message = ready.as_ref().err().cloned();
    let mut tx = db.tenant(row.user_id).await?;
    let recorded = super::record_verdict(
        &mut tx,
        id,
        Verdict {
            status: if valid {
                DatasetStatus::Ready
            } else {
                DatasetStatus::Invalid
            },
            format: report.format,
            normalized_key: valid.then_some(normalized.as_str()),
            sha256: &sha,
            statistics: &report.statistics,
            issues: &report.issues,
            error_counts: &report.error_counts,
            sample: &report.sample,
            training_ready: ready.is_ok(),
            status_message: message.as_deref(),
        },
    )
    .await?;
    if recorded {
        let (kind, title, text, priority) = if valid {
            (
                NotificationKind::DatasetReady,
                format!("Dataset \"{}\" is ready", row.name),
                format!(
                    "{} examples, {} tokens{}.",
                    report.statistics.examples,
                    report.statistics.total_tokens,
                    message
                        .as_deref()
                        .map(|m| format!(" — not trainable yet: {m}"))
                        .unwrap_or_default()
                ),
                crate::notifications::Priority::Medium,
            )
        } else {
            (
                NotificationKind::DatasetInvalid,
                format!("Dataset \"{}\" has problems", row.name),
                format!(
                    "{} problems found; open the dataset to see them with line numbers.",
                    report.error_total()
                ),
                crate::notifications::Priority::High,
            )
        };
        notifications::create(
            &mut tx,
            row.user_id,
            NewNotification {
                kind,
                title: &title,
                message: &text,
                priority,
                action_url: Some(&format!("/datasets/{id}")),
                metadata: serde_json::json!({ "dataset_id": id }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    metrics::histogram!(
        crate::operations::metrics::VALIDATION_DURATION,
        "outcome" => if valid { "ready" } else { "invalid" }
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::operations::metrics::VALIDATION_BYTES)
        .increment(report.statistics.bytes);
    tracing::info!(
        dataset = %id,
        valid,
        examples = report.statistics.examples,
        bytes = report.statistics.bytes,
        seconds = started.elapsed().as_secs_f64(),
        "dataset validated"
    );
    Ok(())
}

/// Marks a dataset whose validation kept failing (the queue gave up) as invalid, with a reason.
pub async fn give_up_validation(db: &Db, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.system().await?;
    let owner: Option<Uuid> = sqlx::query_scalar!(
        "UPDATE datasets SET status = 'invalid', training_ready = false,
                status_message = $2
          WHERE id = $1 AND status = 'validating'
      RETURNING user_id",
        id,
        format!("validation could not finish ({error}); upload the file again")
            .chars()
            .take(2000)
            .collect::<String>(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(owner) = owner {
        super::store::announce(&mut tx, owner, id, DatasetStatus::Invalid, false).await?;
    }
    tx.commit().await
}

/// Where validation writes its temporary files.
pub fn scratch_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tmp")
}
