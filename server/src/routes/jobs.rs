//! `/api/jobs`: create (validated and estimated on the server), list, detail.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use engine::jobs::service;
use engine::jobs::service::JobDetail;
use engine::jobs::{Adjustment, JobRequest, JobStatus, JobView, MetricPoint};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiJson, IdempotencyHeader, Pagination};
use crate::auth::CurrentUser;
use crate::error::{ApiError, Envelope, ErrorBody, ok};
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
///
/// The job is re-validated, its estimate snapshotted and it is queued in one transaction.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = JobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Sending the same request again with this key answers with the first job and starts nothing (24 h).")),
    responses((status = 201, body = Envelope<CreatedJob>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "No such dataset."),
        (status = 409, body = ErrorBody, description = "The dataset is not ready, a limit is reached, or the key was used with another request.")))]
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
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedJob {
    pub job: engine::jobs::JobView,
    pub adjustments: Vec<Adjustment>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// From 1.
    page: Option<u32>,
    /// 1–100, default 20.
    limit: Option<u32>,
    /// queued, initializing, running, completed, failed or cancelled.
    status: Option<String>,
}

/// The account's jobs, newest first.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = Envelope<JobList>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
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
        pagination: Pagination { page, limit, total },
    }))
}

/// `GET /api/jobs`: written straight from the views (`json!` would copy every job into a tree).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<engine::jobs::JobView>,
    pub pagination: Pagination,
}

/// A job with its training curve (`metrics`) and `cost_records`.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<JobDetail>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(ok(service::detail(&state.db, user.id, job_id(&id)?).await?))
}

fn job_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// `{job}`.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobAnswer {
    pub job: JobView,
}

/// `POST /api/jobs/{id}/cancel`: 202 while the backend stops it, with the job as it is now. A
/// queued job ends at once; a running one is cancelled on its backend.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 202, body = Envelope<JobAnswer>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The job has ended.")))]
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
    Ok((StatusCode::ACCEPTED, ok(JobAnswer { job })))
}

/// `POST /api/jobs/{id}/retry`: a failed or cancelled job runs again as a new attempt, from
/// its latest checkpoint when it has one.
#[utoipa::path(post, path = "/api/jobs/{id}/retry", tag = "jobs",
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Sending the retry again with this key answers with the first answer and starts nothing (24 h).")),
    responses((status = 202, body = Envelope<JobAnswer>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Only failed or cancelled jobs are retried; or a limit is reached.")))]
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
    Ok((StatusCode::ACCEPTED, ok(JobAnswer { job })))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Metrics {
    metrics: Vec<MetricPoint>,
}

/// `GET /api/jobs/{id}/metrics`: the whole training curve.
#[utoipa::path(get, path = "/api/jobs/{id}/metrics", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<Metrics>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn metrics(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let points = service::metrics(&state.db, user.id, job_id(&id)?).await?;
    Ok(ok(Metrics { metrics: points }))
}
