//! Every SQL statement about models. Rows are separate from [`ModelView`]; functions take the
//! caller's transaction (tenant transactions for requests, system ones for the finaliser).

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{ModelSort, ModelView};
use crate::db::Tx;
use crate::jobs::JobStatus;

type Result<T> = std::result::Result<T, sqlx::Error>;

/// What finalising a job needs to know of it.
#[derive(Debug, Clone)]
pub struct FinalizeRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: JobStatus,
    pub retry_count: i32,
    pub worker_result: Option<Value>,
    pub base_model: String,
    pub preset: String,
    pub hyperparameters: Value,
    pub gpu_type: String,
    pub gpu_count: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub current_cost: f64,
    pub estimated_total_cost: Option<f64>,
    pub dataset_id: Uuid,
    pub dataset_name: String,
    pub dataset_sha256: Option<String>,
    pub dataset_examples: Option<i32>,
    pub dataset_tokens: Option<i64>,
}

pub async fn finalize_input(tx: &mut Tx, job: Uuid) -> Result<Option<FinalizeRow>> {
    sqlx::query_as!(
        FinalizeRow,
        r#"SELECT j.id, j.user_id, j.status AS "status: JobStatus", j.retry_count, j.worker_result,
                  j.base_model, j.preset, j.hyperparameters, j.gpu_type, j.gpu_count, j.started_at,
                  j.current_cost::float8 AS "current_cost!",
                  j.estimated_total_cost::float8 AS estimated_total_cost,
                  d.id AS dataset_id, d.name AS dataset_name, d.sha256 AS dataset_sha256,
                  d.total_training_pairs AS dataset_examples, d.total_tokens AS dataset_tokens
             FROM training_jobs j JOIN datasets d ON d.id = j.dataset_id
            WHERE j.id = $1"#,
        job
    )
    .fetch_optional(&mut **tx)
    .await
}

/// A verified model, ready to insert.
pub struct NewModel<'a> {
    pub user_id: Uuid,
    pub job_id: Uuid,
    pub dataset_id: Uuid,
    pub attempt: i32,
    pub name: &'a str,
    pub base_model: &'a str,
    pub files: Value,
    pub quality_metrics: Option<Value>,
    pub training_summary: Value,
    pub configuration: Value,
    pub model_card: &'a str,
    pub samples: Value,
}

/// Inserts the job's model once; `None` when the job already has one (a finaliser that ran
/// twice).
pub async fn insert(tx: &mut Tx, m: NewModel<'_>) -> Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "INSERT INTO model_artifacts (user_id, job_id, dataset_id, attempt, name, status, base_model, files,
                                      quality_metrics, training_summary, configuration, model_card, samples)
         VALUES ($1, $2, $3, $4, $5, 'ready', $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (job_id) DO NOTHING
         RETURNING id",
        m.user_id,
        m.job_id,
        m.dataset_id,
        m.attempt,
        m.name,
        m.base_model,
        m.files,
        m.quality_metrics,
        m.training_summary,
        m.configuration,
        m.model_card,
        m.samples
    )
    .fetch_optional(&mut **tx)
    .await
}

struct ModelRow {
    id: Uuid,
    job_id: Uuid,
    dataset_id: Uuid,
    name: String,
    description: Option<String>,
    version: i32,
    status: String,
    base_model: String,
    files: Value,
    quality_metrics: Option<Value>,
    training_summary: Option<Value>,
    configuration: Option<Value>,
    model_card: Option<String>,
    samples: Option<Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ModelRow> for ModelView {
    fn from(r: ModelRow) -> Self {
        // Stored JSON is ours; a hand-edited value that no longer reads is dropped, not fatal.
        Self {
            id: r.id,
            job_id: r.job_id,
            dataset_id: r.dataset_id,
            name: r.name,
            description: r.description,
            version: r.version,
            status: r.status,
            base_model: r.base_model,
            files: serde_json::from_value(r.files).unwrap_or_default(),
            quality_metrics: r
                .quality_metrics
                .and_then(|v| serde_json::from_value(v).ok()),
            training_summary: r
                .training_summary
                .and_then(|v| serde_json::from_value(v).ok()),
            configuration: r.configuration,
            model_card: r.model_card,
            samples: r
                .samples
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// One query for a model and for a page of models: `id` picks one.
async fn views(
    tx: &mut Tx,
    user: Uuid,
    id: Option<Uuid>,
    sort: ModelSort,
    limit: i64,
    offset: i64,
) -> Result<Vec<ModelView>> {
    let rows = sqlx::query_as!(
        ModelRow,
        r#"SELECT id, job_id, dataset_id, name, description, version, status, base_model, files,
                  quality_metrics, training_summary, configuration, model_card, samples, created_at, updated_at
             FROM model_artifacts
            WHERE user_id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR id = $2)
            ORDER BY CASE WHEN $3 THEN (quality_metrics->>'overall_score')::int END DESC NULLS LAST,
                     created_at DESC, id
            LIMIT $4 OFFSET $5"#,
        user,
        id,
        sort == ModelSort::Quality,
        limit,
        offset
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn find(tx: &mut Tx, user: Uuid, id: Uuid) -> Result<Option<ModelView>> {
    Ok(views(tx, user, Some(id), ModelSort::CreatedAt, 1, 0)
        .await?
        .pop())
}

/// A page of `user`'s models and how many there are.
pub async fn list(
    tx: &mut Tx,
    user: Uuid,
    sort: ModelSort,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ModelView>, i64)> {
    let models = views(tx, user, None, sort, limit, offset).await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM model_artifacts WHERE user_id = $1 AND deleted_at IS NULL"#,
        user
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok((models, total))
}

/// Renames and/or describes a model; `false` when it is not the user's (or deleted).
pub async fn update(
    tx: &mut Tx,
    user: Uuid,
    id: Uuid,
    name: Option<&str>,
    description: Option<Option<&str>>,
) -> Result<bool> {
    let changed = sqlx::query!(
        "UPDATE model_artifacts
            SET name = COALESCE($3, name),
                description = CASE WHEN $4 THEN $5 ELSE description END
          WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        id,
        user,
        name,
        description.is_some(),
        description.flatten()
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Hides a model (its files stay until retention removes them); `false` when not the user's.
pub async fn soft_delete(tx: &mut Tx, user: Uuid, id: Uuid) -> Result<bool> {
    let changed = sqlx::query!(
        "UPDATE model_artifacts SET deleted_at = now() WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        id,
        user
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}
