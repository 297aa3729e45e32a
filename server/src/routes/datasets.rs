//! `/api/datasets`: create (with a signed upload URL), confirm, list, detail, delete.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use engine::datasets::service;
use engine::datasets::{
    DatasetFormat, DatasetStatus, DatasetSummaryRow, DatasetView, ListFilter, NewDataset,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{ApiJson, IdempotencyHeader, Pagination};
use crate::auth::CurrentUser;
use crate::error::{ApiError, Envelope, ErrorBody, ok};
use crate::state::AppState;

/// `/api/datasets`.
pub fn router() -> super::Api {
    use axum::routing::{get, post};
    super::Api::new()
        .route("/api/datasets", post(create).get(list))
        .route("/api/datasets/{id}", get(detail).delete(delete))
        .route("/api/datasets/{id}/confirm", post(confirm))
}

/// Ids that are not UUIDs are simply not found (never a 400 that tells ids apart).
fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound)
}

/// `POST /api/datasets`: the dataset and its signed upload (the original's camelCase keys).
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedDataset {
    pub dataset: DatasetView,
    /// PUT the file here (body = the file, with `uploadHeaders`) before `uploadExpiresAt`.
    pub upload_url: String,
    pub upload_method: String,
    pub upload_headers: std::collections::BTreeMap<String, String>,
    pub upload_expires_at: chrono::DateTime<chrono::Utc>,
    pub storage_path: String,
}

/// Creates a dataset and a signed upload URL for its file (≤ 500 MB). Then PUT the file to
/// `uploadUrl` and confirm. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/api/datasets", tag = "datasets", request_body = NewDataset,
    params(("Idempotency-Key" = Option<String>, Header, description = "Sending the same request again with this key answers with the first response and creates nothing (24 h).")),
    responses((status = 201, body = Envelope<CreatedDataset>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody, description = "Over a quota, or the key was used with another request."),
        (status = 413, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    idempotency: IdempotencyHeader,
    ApiJson(new): ApiJson<NewDataset>,
) -> Result<impl IntoResponse, ApiError> {
    let limits = state.catalog.current().limits;
    let key = idempotency.bind("datasets.create", &new)?;
    let created = service::create(
        &state.db,
        &state.storage,
        &limits,
        user.id,
        &new,
        key.as_ref(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        ok(CreatedDataset {
            dataset: created.dataset,
            upload_url: created.upload.url,
            upload_method: created.upload.method.into_owned(),
            upload_headers: created.upload.headers,
            upload_expires_at: created.upload.expires_at,
            storage_path: created.storage_path,
        }),
    ))
}

#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DatasetAnswer {
    pub dataset: DatasetView,
}

/// The upload is complete: validation is queued (202). 409 if the file is incomplete.
#[utoipa::path(post, path = "/api/datasets/{id}/confirm", tag = "datasets", params(("id" = Uuid, Path)),
    responses((status = 202, body = Envelope<DatasetAnswer>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn confirm(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let dataset = service::confirm(&state.db, &state.storage, user.id, parse_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, ok(DatasetAnswer { dataset })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// From 1.
    page: Option<u32>,
    /// 1–100, default 20.
    limit: Option<u32>,
    /// uploading, validating, ready or invalid.
    status: Option<String>,
    /// brightrun_v4_json, brightrun_v4_jsonl, openai_chat, alpaca or sharegpt.
    format: Option<String>,
    /// Part of the name.
    search: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetSummaryRow>,
    pub pagination: Pagination,
}

/// The account's datasets, newest first.
#[utoipa::path(get, path = "/api/datasets", tag = "datasets", params(ListQuery),
    responses((status = 200, body = Envelope<DatasetList>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(query): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let mut fields = engine::validation::FieldErrors::new();
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let parsed = DatasetStatus::parse(s);
            if parsed.is_none() {
                fields.add("status", "Use uploading, validating, ready or invalid.");
            }
            parsed
        }
    };
    let format = match query.format.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(f) => {
            let parsed = DatasetFormat::parse(f);
            if parsed.is_none() {
                fields.add(
                    "format",
                    "Use brightrun_v4_json, brightrun_v4_jsonl, openai_chat, alpaca or sharegpt.",
                );
            }
            parsed
        }
    };
    let (page, limit) = super::paging(query.page, query.limit, &mut fields);
    fields.into_result().map_err(ApiError::Validation)?;
    let filter = ListFilter {
        search: query.search,
        status,
        format,
        page,
        limit,
    };
    let (rows, total) = service::list(&state.db, user.id, &filter).await?;
    Ok(ok(DatasetList {
        datasets: rows,
        pagination: Pagination {
            page: filter.page,
            limit: filter.limit,
            total,
        },
    }))
}

/// A dataset: status, statistics, `validation_errors` with line numbers, `error_counts`, a
/// sample.
#[utoipa::path(get, path = "/api/datasets/{id}", tag = "datasets", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<DatasetView>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(ok(service::get(&state.db, user.id, parse_id(&id)?).await?))
}

#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Deleted {
    pub deleted: Uuid,
}

/// Soft-deletes a dataset (its files go); 409 naming the job while a job uses it.
#[utoipa::path(delete, path = "/api/datasets/{id}", tag = "datasets", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<Deleted>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    service::delete(&state.db, &state.storage, user.id, id).await?;
    Ok(ok(Deleted { deleted: id }))
}
