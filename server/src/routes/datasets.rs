//! `/api/datasets`: create (with a signed upload URL), confirm, list, detail, delete.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use engine::datasets::service;
use engine::datasets::{DatasetFormat, DatasetStatus, ListFilter, NewDataset};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{ApiJson, IdempotencyHeader};
use crate::auth::CurrentUser;
use crate::error::{ApiError, ok};
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
        ok(json!({
            "dataset": created.dataset,
            "uploadUrl": created.upload.url,
            "uploadMethod": created.upload.method,
            "uploadHeaders": created.upload.headers,
            "uploadExpiresAt": created.upload.expires_at,
            "storagePath": created.storage_path,
        })),
    ))
}

pub async fn confirm(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let dataset = service::confirm(&state.db, &state.storage, user.id, parse_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, ok(json!({ "dataset": dataset }))))
}

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<u32>,
    limit: Option<u32>,
    status: Option<String>,
    format: Option<String>,
    search: Option<String>,
}

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
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "status": r.status,
                "format": r.format,
                "file_size": r.file_size,
                "total_training_pairs": r.total_training_pairs,
                "total_tokens": r.total_tokens,
                "training_ready": r.training_ready,
                "created_at": r.created_at,
            })
        })
        .collect();
    Ok(ok(json!({
        "datasets": items,
        "pagination": { "page": filter.page, "limit": filter.limit, "total": total },
    })))
}

pub async fn detail(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(ok(service::get(&state.db, user.id, parse_id(&id)?).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    service::delete(&state.db, &state.storage, user.id, id).await?;
    Ok(ok(json!({ "deleted": id })))
}
