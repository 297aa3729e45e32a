//! The read side of the jobs store: a job as the API shows it ([`JobView`]), a page of jobs,
//! and a job's training curve.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::types::Json;
use uuid::Uuid;

use super::Result;
use crate::db::Tx;
use crate::jobs::lifecycle::{JobStage, JobStatus};
use crate::jobs::{JobRow, JobView, MetricPoint};

struct ViewRow {
    id: Uuid,
    dataset_id: Uuid,
    dataset_name: Option<String>,
    base_model: String,
    preset: String,
    hyperparameters: Json<Box<RawValue>>,
    gpu_type: String,
    gpu_count: i32,
    backend: String,
    status: JobStatus,
    current_stage: JobStage,
    progress: f64,
    current_step: i32,
    total_steps: Option<i32>,
    current_cost: f64,
    estimated_total_cost: Option<f64>,
    budget_cap: Option<f64>,
    final_cost: Option<f64>,
    estimate: Option<Json<Box<RawValue>>>,
    error_message: Option<String>,
    artifact_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    error_code: Option<String>,
    current_epoch: Option<f64>,
    current_metrics: Option<Json<Box<RawValue>>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    estimated_completion_at: Option<DateTime<Utc>>,
    retry_count: i32,
    execution_ms: Option<i64>,
    cancel_requested_at: Option<DateTime<Utc>>,
    resumed_from_step: Option<i32>,
    checkpoint_step: Option<i32>,
    last_event_id: Option<i64>,
}

impl From<ViewRow> for JobView {
    fn from(r: ViewRow) -> Self {
        Self {
            id: r.id,
            dataset_id: r.dataset_id,
            dataset_name: r.dataset_name,
            base_model: r.base_model,
            preset: r.preset,
            hyperparameters: r.hyperparameters.0.into(),
            gpu_type: r.gpu_type,
            gpu_count: r.gpu_count,
            backend: r.backend,
            status: r.status,
            current_stage: r.current_stage,
            progress: r.progress,
            current_step: r.current_step,
            total_steps: r.total_steps,
            current_cost: r.current_cost,
            estimated_total_cost: r.estimated_total_cost,
            budget_cap: r.budget_cap,
            final_cost: r.final_cost,
            estimate: r.estimate.map(|e| e.0.into()),
            error_message: r.error_message,
            artifact_id: r.artifact_id,
            created_at: r.created_at,
            error_code: r.error_code,
            current_epoch: r.current_epoch,
            // Unreadable (hand-edited) metrics are dropped rather than failing the page.
            current_metrics: r
                .current_metrics
                .and_then(|m| serde_json::from_str(m.0.get()).ok()),
            started_at: r.started_at,
            completed_at: r.completed_at,
            estimated_completion_at: r.estimated_completion_at,
            retry_count: r.retry_count,
            execution_ms: r.execution_ms,
            cancel_requested: r.cancel_requested_at.is_some(),
            resumed_from_step: r.resumed_from_step,
            checkpoint_step: r.checkpoint_step,
            last_event_id: r.last_event_id.unwrap_or(0),
        }
    }
}

/// One query for a job and for a page of jobs: `id` picks one, else `statuses` filters.
async fn views(
    tx: &mut Tx,
    user: Uuid,
    id: Option<Uuid>,
    statuses: Option<&[JobStatus]>,
    limit: i64,
    offset: i64,
) -> Result<Vec<JobView>> {
    let statuses = statuses.map(JobStatus::names);
    let rows = sqlx::query_as!(
        ViewRow,
        r#"SELECT j.id, j.dataset_id, d.name AS "dataset_name?", j.base_model, j.preset,
                  j.hyperparameters AS "hyperparameters: Json<Box<RawValue>>",
                  j.gpu_type, j.gpu_count, j.backend, j.status AS "status: JobStatus",
                  j.current_stage AS "current_stage: JobStage", j.progress, j.current_step, j.total_steps,
                  j.current_cost::float8 AS "current_cost!", j.estimated_total_cost::float8 AS estimated_total_cost,
                  j.budget_cap::float8 AS budget_cap, j.final_cost::float8 AS final_cost,
                  j.estimate AS "estimate: Json<Box<RawValue>>",
                  j.error_message, a.id AS "artifact_id?", j.created_at, j.error_code, j.current_epoch,
                  j.current_metrics AS "current_metrics: Json<Box<RawValue>>", j.started_at, j.completed_at, j.estimated_completion_at, j.retry_count,
                  j.execution_ms, j.cancel_requested_at, j.resumed_from_step, j.checkpoint_step,
                  (SELECT max(e.id) FROM job_events e WHERE e.job_id = j.id) AS last_event_id
             FROM training_jobs j
             JOIN datasets d ON d.id = j.dataset_id
             LEFT JOIN model_artifacts a ON a.job_id = j.id
            WHERE j.user_id = $1 AND ($2::uuid IS NULL OR j.id = $2)
              AND ($3::text[] IS NULL OR j.status = ANY($3))
            ORDER BY j.created_at DESC, j.id LIMIT $4 OFFSET $5"#,
        user,
        id,
        statuses.as_deref(),
        limit,
        offset
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// One job of `user`, as the API shows it.
pub async fn find_view(tx: &mut Tx, user: Uuid, id: Uuid) -> Result<Option<JobView>> {
    Ok(views(tx, user, Some(id), None, 1, 0).await?.pop())
}

/// A page of `user`'s jobs, newest first, and the total matching `status`.
pub async fn list_views(
    tx: &mut Tx,
    user: Uuid,
    status: Option<JobStatus>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<JobView>, i64)> {
    let jobs = views(
        tx,
        user,
        None,
        status.as_ref().map(std::slice::from_ref),
        limit,
        offset,
    )
    .await?;
    let total = count(tx, user, status).await?;
    Ok((jobs, total))
}

/// A page of `user`'s jobs as list rows (no JSON columns read), newest first, and the total
/// matching `status`.
pub async fn list_rows(
    tx: &mut Tx,
    user: Uuid,
    status: Option<JobStatus>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<JobRow>, i64)> {
    let rows = sqlx::query_as!(
        JobRow,
        r#"SELECT j.id, d.name AS "dataset_name?", j.base_model, j.preset, j.gpu_type, j.gpu_count,
                  j.status AS "status: JobStatus", j.current_stage AS "current_stage: JobStage",
                  j.progress, j.current_cost::float8 AS "current_cost!",
                  j.estimated_total_cost::float8 AS estimated_total_cost,
                  j.final_cost::float8 AS final_cost, j.created_at
             FROM training_jobs j
             JOIN datasets d ON d.id = j.dataset_id
            WHERE j.user_id = $1 AND ($2::text IS NULL OR j.status = $2)
            ORDER BY j.created_at DESC, j.id LIMIT $3 OFFSET $4"#,
        user,
        status.map(JobStatus::as_str),
        limit,
        offset
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok((rows, count(tx, user, status).await?))
}

async fn count(tx: &mut Tx, user: Uuid, status: Option<JobStatus>) -> Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM training_jobs
            WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)"#,
        user,
        status.map(JobStatus::as_str)
    )
    .fetch_one(&mut **tx)
    .await
}

struct PointRow {
    step: i32,
    epoch: Option<f64>,
    train_loss: Option<f64>,
    eval_loss: Option<f64>,
    learning_rate: Option<f64>,
    grad_norm: Option<f64>,
    tokens_per_sec: Option<f64>,
    gpu_util: Option<f64>,
    elapsed_s: Option<f64>,
}

/// A job's curve, in step order.
pub async fn curve(tx: &mut Tx, user: Uuid, id: Uuid) -> Result<Vec<MetricPoint>> {
    let rows = sqlx::query_as!(
        PointRow,
        "SELECT step, epoch, train_loss, eval_loss, learning_rate, grad_norm, tokens_per_sec, gpu_util, elapsed_s
           FROM metrics_points WHERE job_id = $1 AND user_id = $2 ORDER BY step",
        id,
        user
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| MetricPoint {
            step: r.step,
            epoch: r.epoch,
            train_loss: r.train_loss,
            eval_loss: r.eval_loss,
            learning_rate: r.learning_rate,
            grad_norm: r.grad_norm,
            tokens_per_sec: r.tokens_per_sec,
            gpu_util: r.gpu_util,
            elapsed_s: r.elapsed_s,
        })
        .collect())
}

/// `user`'s queued and running jobs, newest first (the overview follows them live).
pub async fn active_views(tx: &mut Tx, user: Uuid, limit: i64) -> Result<Vec<JobView>> {
    views(tx, user, None, Some(JobStatus::ACTIVE), limit, 0).await
}
