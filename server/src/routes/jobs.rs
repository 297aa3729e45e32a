//! `/api/jobs`: create (validated and estimated on the server), list, detail.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use engine::jobs::service;
use engine::jobs::{Adjustment, JobRequest, JobStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiJson, IdempotencyHeader};
use crate::auth::CurrentUser;
use crate::error::{ApiError, ok};
use crate::state::AppState;

/// `/api/jobs`.
pub fn router() -> super::Api {
    use axum::routing::{get, post};
    super::Api::new()
        .route("/api/jobs", post(create).get(list))
        .route("/api/jobs/{id}", get(detail))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/jobs/{id}/retry", post(retry))
        .route("/api/jobs/{id}/metrics", get(metrics))
}

/// `POST /api/jobs`: a preset plus any hyperparameters (merged over it), the original's names
/// accepted; with an `Idempotency-Key`, sending it again answers with the first job.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    idempotency: IdempotencyHeader,
    ApiJson(request): ApiJson<JobRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let catalog = state.catalog.current();
    let resolved = request.resolve(&catalog).map_err(ApiError::Validation)?;
    let key = idempotency.bind("jobs.create", &request)?;
    let job = service::create(&state.db, &catalog, user.id, &resolved.job, key.as_ref()).await?;
    Ok((
        StatusCode::CREATED,
        ok(CreatedJob {
            job,
            adjustments: resolved.adjustments,
        }),
    ))
}

/// `POST /api/jobs`: the job, and what the merge chose or adapted that the request did not say.
#[derive(Serialize)]
struct CreatedJob {
    job: engine::jobs::JobView,
    adjustments: Vec<Adjustment>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<u32>,
    limit: Option<u32>,
    status: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(query): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let status = query.status.as_deref().filter(|s| !s.is_empty());
    let mut fields = engine::validation::FieldErrors::new();
    let status = match status.map(|s| (s, JobStatus::parse(s))) {
        None => None,
        Some((_, Some(status))) => Some(status),
        Some((_, None)) => {
            let names = JobStatus::names(JobStatus::ALL);
            fields.add("status", format!("Use one of: {}.", names.join(", ")));
            None
        }
    };
    let (page, limit) = super::paging(query.page, query.limit, &mut fields);
    fields.into_result().map_err(ApiError::Validation)?;
    let (jobs, total) = service::list(&state.db, user.id, status, page, limit).await?;
    Ok(ok(JobList {
        jobs,
        pagination: json!({ "page": page, "limit": limit, "total": total }),
    }))
}

/// `GET /api/jobs`: written straight from the views (`json!` would copy every job into a tree).
#[derive(Serialize)]
struct JobList {
    jobs: Vec<engine::jobs::JobView>,
    pagination: serde_json::Value,
}

pub async fn detail(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(ok(service::detail(&state.db, user.id, job_id(&id)?).await?))
}

fn job_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// `POST /api/jobs/{id}/cancel`: 202 while the backend stops it, with the job as it is now.
pub async fn cancel(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job = service::cancel(
        &state.db,
        &state.catalog.current().limits,
        user.id,
        job_id(&id)?,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, ok(json!({ "job": job }))))
}

/// `POST /api/jobs/{id}/retry`: a failed or cancelled job runs again as a new attempt.
pub async fn retry(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    idempotency: IdempotencyHeader,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = job_id(&id)?;
    let key = idempotency.bind(&format!("jobs.retry:{id}"), &())?;
    let catalog = state.catalog.current();
    let job = service::retry(&state.db, &catalog, user.id, id, key.as_ref()).await?;
    Ok((StatusCode::ACCEPTED, ok(json!({ "job": job }))))
}

/// `GET /api/jobs/{id}/metrics`: the whole training curve.
pub async fn metrics(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let points = service::metrics(&state.db, user.id, job_id(&id)?).await?;
    Ok(ok(json!({ "metrics": points })))
}
