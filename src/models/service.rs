//! The request side of models: list, read, rename and describe, soft delete, signed downloads.
//! Every function runs in the caller's tenant transaction: another user's model is not found.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{DownloadLinks, ModelSort, ModelUpdate, ModelView, store};
use crate::db::Db;
use crate::storage::{Bucket, Storage, StorageError};
use crate::validation::FieldErrors;

/// How long a download link works.
pub const LINK_LIFETIME_S: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid input: {0}")]
    Invalid(FieldErrors),
    #[error("not found")]
    NotFound,
    #[error("database error on models: {0}")]
    Db(#[from] sqlx::Error),
    #[error("storage error on models: {0}")]
    Storage(#[from] StorageError),
}

impl crate::error::Classify for ModelError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Invalid(fields) => ErrorKind::Invalid(fields.clone()),
            Self::NotFound => ErrorKind::NotFound,
            Self::Db(_) | Self::Storage(_) => ErrorKind::Internal,
        }
    }
}

/// A page of models and the total.
pub async fn list(
    db: &Db,
    user: Uuid,
    sort: ModelSort,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ModelView>, i64), ModelError> {
    let mut tx = db.tenant(user).await?;
    let page = store::list(&mut tx, user, sort, limit.clamp(1, 100), offset.max(0)).await?;
    tx.commit().await?;
    Ok(page)
}

pub async fn get(db: &Db, user: Uuid, id: Uuid) -> Result<ModelView, ModelError> {
    let mut tx = db.tenant(user).await?;
    let model = store::find(&mut tx, user, id).await?;
    tx.commit().await?;
    model.ok_or(ModelError::NotFound)
}

/// Checks an update: a name of 1–200 characters, a description of at most 2,000.
pub fn check_update(update: &ModelUpdate) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::new();
    if let Some(name) = &update.name {
        let n = name.trim().chars().count();
        if n == 0 || n > 200 {
            errors.add("name", "Give the model a name of 1 to 200 characters.");
        }
    }
    if let Some(description) = &update.description
        && description.chars().count() > 2000
    {
        errors.add(
            "description",
            "Keep the description under 2,000 characters.",
        );
    }
    if update.name.is_none() && update.description.is_none() {
        errors.add("name", "Send a name or a description to change.");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

pub async fn update(
    db: &Db,
    user: Uuid,
    id: Uuid,
    update: &ModelUpdate,
) -> Result<ModelView, ModelError> {
    check_update(update).map_err(ModelError::Invalid)?;
    let name = update.name.as_deref().map(str::trim);
    let description = update
        .description
        .as_deref()
        .map(|d| Some(d.trim()).filter(|d| !d.is_empty()));
    let mut tx = db.tenant(user).await?;
    if !store::update(&mut tx, user, id, name, description).await? {
        return Err(ModelError::NotFound);
    }
    let model = store::find(&mut tx, user, id)
        .await?
        .ok_or(ModelError::NotFound)?;
    tx.commit().await?;
    Ok(model)
}

pub async fn delete(db: &Db, user: Uuid, id: Uuid) -> Result<(), ModelError> {
    let mut tx = db.tenant(user).await?;
    if !store::soft_delete(&mut tx, user, id).await? {
        return Err(ModelError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// Signed, expiring links to the model's files (all, or those named).
pub async fn download_links(
    db: &Db,
    storage: &Storage,
    user: Uuid,
    id: Uuid,
    only: Option<&[String]>,
) -> Result<DownloadLinks, ModelError> {
    let model = get(db, user, id).await?;
    let keys = file_keys(db, user, id).await?;
    if let Some(names) = only {
        let unknown: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !keys.contains_key(*n))
            .collect();
        if !unknown.is_empty() {
            let mut errors = FieldErrors::new();
            errors.add(
                "files",
                format!(
                    "This model has no file named {}. Its files: {}.",
                    unknown.join(", "),
                    keys.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
            return Err(ModelError::Invalid(errors));
        }
    }
    let mut download_urls = BTreeMap::new();
    for (name, key) in &keys {
        if only.is_some_and(|names| !names.iter().any(|n| n == name)) {
            continue;
        }
        let signed = storage
            .presign_get(
                Bucket::Models,
                key,
                chrono::Duration::seconds(LINK_LIFETIME_S),
            )
            .await?;
        download_urls.insert(name.clone(), signed.url);
    }
    Ok(DownloadLinks {
        model_id: model.id,
        model_name: model.name,
        download_urls,
        expires_in_seconds: LINK_LIFETIME_S,
    })
}

/// The model's files: name → storage key, in the tenant's transaction.
pub async fn file_keys(
    db: &Db,
    user: Uuid,
    id: Uuid,
) -> Result<BTreeMap<String, String>, ModelError> {
    let mut tx = db.tenant(user).await?;
    let files = sqlx::query_scalar!(
        "SELECT files FROM model_artifacts WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        id,
        user
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ModelError::NotFound)?;
    tx.commit().await?;
    #[derive(serde::Deserialize)]
    struct Stored {
        name: String,
        key: String,
    }
    let stored: Vec<Stored> = serde_json::from_value(files).unwrap_or_default();
    Ok(stored.into_iter().map(|f| (f.name, f.key)).collect())
}
