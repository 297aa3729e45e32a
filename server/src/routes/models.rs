//! `/api/models`: list, detail, rename and describe, soft delete, signed download links, and
//! the whole model as one `.tar.gz` streamed in constant memory.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::models::{DownloadLinks, ModelSort, ModelUpdate, ModelView, service};
use engine::storage::Bucket;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::{ApiJson, Pagination};
use crate::auth::CurrentUser;
use crate::error::{ApiError, Envelope, ErrorBody, ok};
use crate::state::AppState;

/// `/api/models`.
pub fn router() -> super::Api {
    use axum::routing::{get, post};
    super::Api::new()
        .route("/api/models", get(list))
        .route("/api/models/{id}", get(detail).patch(update).delete(delete))
        .route("/api/models/{id}/download", post(download))
        .route("/api/models/{id}/bundle", get(bundle))
        .route("/api/models/{id}/files/{name}", get(file))
}

fn model_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// From 1.
    page: Option<u32>,
    /// 1–100, default 20.
    limit: Option<u32>,
    /// created_at (newest first, the default) or quality (best first).
    sort: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelView>,
    pub pagination: Pagination,
}

#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ModelAnswer {
    pub model: ModelView,
}

/// The account's models (adapters of completed jobs).
#[utoipa::path(get, path = "/api/models", tag = "models", params(ListQuery),
    responses((status = 200, body = Envelope<ModelList>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(query): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let mut fields = engine::validation::FieldErrors::new();
    let sort = match query.sort.as_deref().filter(|s| !s.is_empty()) {
        None | Some("created_at") => ModelSort::CreatedAt,
        Some("quality") => ModelSort::Quality,
        Some(_) => {
            fields.add("sort", "Use created_at or quality.");
            ModelSort::CreatedAt
        }
    };
    let (page, limit) = super::paging(query.page, query.limit, &mut fields);
    fields.into_result().map_err(ApiError::Validation)?;
    let offset = i64::from(page - 1) * i64::from(limit);
    let (models, total) = service::list(&state.db, user.id, sort, i64::from(limit), offset).await?;
    Ok(ok(ModelList {
        models,
        pagination: Pagination { page, limit, total },
    }))
}

/// A model: `quality_metrics` (`overall_score` 1–5 and why), training summary, configuration,
/// files with sizes and sha256, before/after samples, model card.
#[utoipa::path(get, path = "/api/models/{id}", tag = "models", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<ModelAnswer>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let model = service::get(&state.db, user.id, model_id(&id)?).await?;
    Ok(ok(ModelAnswer { model }))
}

/// `PATCH /api/models/{id}` `{name?, description?}`.
#[utoipa::path(patch, path = "/api/models/{id}", tag = "models", params(("id" = Uuid, Path)),
    request_body = ModelUpdate,
    responses((status = 200, body = Envelope<ModelAnswer>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    ApiJson(update): ApiJson<ModelUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let model = service::update(&state.db, user.id, model_id(&id)?, &update).await?;
    Ok(ok(ModelAnswer { model }))
}

/// `DELETE /api/models/{id}`: hidden from lists and downloads (soft delete).
#[utoipa::path(delete, path = "/api/models/{id}", tag = "models", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted."), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    service::delete(&state.db, user.id, model_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadRequest {
    /// File names; absent: every file.
    #[serde(default)]
    files: Option<Vec<String>>,
}

/// `POST /api/models/{id}/download` `{files?}`: signed, expiring links (the original's shape:
/// `{model_id, model_name, download_urls, expires_in_seconds}`). An empty body means every file.
#[utoipa::path(post, path = "/api/models/{id}/download", tag = "models", params(("id" = Uuid, Path)),
    request_body(content = Option<DownloadRequest>, description = "May be empty: every file."),
    responses((status = 200, body = Envelope<DownloadLinks>), (status = 400, body = ErrorBody, description = "An unknown file name."),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: DownloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DownloadRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?
    };
    let links = service::download_links(
        &state.db,
        &state.storage,
        user.id,
        model_id(&id)?,
        request.files.as_deref(),
    )
    .await?;
    Ok(ok(links))
}

/// `GET /api/models/{id}/files/{name}`: a redirect to a fresh signed link of one file (the
/// model page's download links, which never expire on an open page).
#[utoipa::path(get, path = "/api/models/{id}/files/{name}", tag = "models",
    params(("id" = Uuid, Path), ("name" = String, Path, description = "A file name from the model's `files`.")),
    responses((status = 303, description = "To a signed link of the file, valid for an hour."),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn file(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let links = service::download_links(
        &state.db,
        &state.storage,
        user.id,
        model_id(&id)?,
        Some(std::slice::from_ref(&name)),
    )
    .await
    .map_err(|e| match e {
        service::ModelError::Invalid(_) => ApiError::NotFound,
        e => e.into(),
    })?;
    let url = links.download_urls.get(&name).ok_or(ApiError::NotFound)?;
    Ok(axum::response::Redirect::to(url).into_response())
}

/// `GET /api/models/{id}/bundle`: every file in one `.tar.gz`, read from storage and compressed
/// as it is sent (constant memory, whatever the adapter's size).
#[utoipa::path(get, path = "/api/models/{id}/bundle", tag = "models", params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>, description = "`<model name>.tar.gz`, as an attachment."),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn bundle(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = model_id(&id)?;
    let model = service::get(&state.db, user.id, id).await?;
    let keys = service::file_keys(&state.db, user.id, id).await?;
    let folder = folder_name(&model.name);
    let mut archive: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(tokio::io::empty());
    for file in &model.files {
        let Some(key) = keys.get(&file.name) else {
            continue;
        };
        let reader = state
            .storage
            .open(Bucket::Models, key)
            .await
            .map_err(ApiError::internal)?;
        let header = tar_header(&format!("{folder}/{}", file.name), file.size);
        let padding = vec![0u8; ((512 - file.size % 512) % 512) as usize];
        archive = Box::new(
            archive
                .chain(std::io::Cursor::new(header))
                .chain(reader.take(file.size))
                .chain(std::io::Cursor::new(padding)),
        );
    }
    // A tar ends with two empty blocks.
    let archive = archive.chain(std::io::Cursor::new(vec![0u8; 1024]));
    let gzip =
        async_compression::tokio::bufread::GzipEncoder::new(tokio::io::BufReader::new(archive));
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(gzip));
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{folder}.tar.gz\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        body,
    )
        .into_response())
}

/// A folder name from the model's name: ASCII letters, digits, `-`, `_` and `.`, at most 60.
fn folder_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches(|c| c == '-' || c == '.').to_owned();
    let out: String = out.chars().take(60).collect();
    if out.is_empty() { "model".into() } else { out }
}

/// A POSIX ustar header for a regular file (mode 0644, owner 0, mtime 0). `path` must fit in
/// the 100-byte name field; folder names are at most 60 and file names are ours.
fn tar_header(path: &str, size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    let name = path.as_bytes();
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let checksum = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(checksum.as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_are_safe() {
        assert_eq!(
            folder_name("coach · tiny-random-llama"),
            "coach-tiny-random-llama"
        );
        assert_eq!(folder_name("../../etc"), "etc");
        assert_eq!(folder_name("★"), "model");
        assert_eq!(folder_name(&"a".repeat(300)).len(), 60);
    }

    #[test]
    fn tar_headers_checksum() {
        let h = tar_header("m/adapter_config.json", 912);
        assert_eq!(&h[124..136], b"00000001620\0");
        let stored = std::str::from_utf8(&h[148..154]).unwrap();
        let mut blank = h.clone();
        blank[148..156].copy_from_slice(b"        ");
        let sum: u64 = blank.iter().map(|b| u64::from(*b)).sum();
        assert_eq!(u64::from_str_radix(stored, 8).unwrap(), sum);
    }
}
