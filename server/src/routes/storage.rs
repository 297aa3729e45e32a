//! The local store's signed-URL endpoints: `PUT` streams an upload to disk in constant memory,
//! enforcing the signed size (413 beyond it); `GET`/`HEAD` serve the object with Range support.
//! The signature is the authorisation: these routes need no session and no Origin.

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::storage::{Bucket, SignatureError, UploadError};
use serde::Deserialize;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The local store's signed URLs.
pub fn router() -> super::Api {
    super::Api::new().route("/storage/{bucket}/{*key}", axum::routing::get(get).put(put))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Signed {
    /// Unix seconds.
    expires: i64,
    signature: String,
    /// The exact size an upload link is for.
    size: Option<u64>,
    /// An "up to N bytes" link (worker outputs) instead of an exact size.
    max: Option<u64>,
}

fn signature_error(e: SignatureError) -> ApiError {
    ApiError::Forbidden(e.to_string())
}

/// The local store and the bucket a signed URL names (404 when either does not exist).
fn target<'a>(
    state: &'a AppState,
    bucket: &str,
) -> Result<(&'a engine::storage::LocalStore, Bucket), ApiError> {
    let store = state.storage.local_store().ok_or(ApiError::NotFound)?;
    let bucket = Bucket::parse(bucket).ok_or(ApiError::NotFound)?;
    Ok((store, bucket))
}

/// A signed upload (from `POST /api/datasets`'s `uploadUrl`, or a worker's output link): the
/// body is the file, streamed to storage. The signature is the authorisation.
#[utoipa::path(put, path = "/storage/{bucket}/{key}", tag = "storage", security(()),
    params(("bucket" = String, Path), ("key" = String, Path, description = "The object key; may contain `/`."), Signed),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "Stored."), (status = 403, body = ErrorBody, description = "A bad, expired or reused signature."),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody, description = "Larger than the link allows.")))]
pub async fn put(
    State(state): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(signed): Query<Signed>,
    request: Request,
) -> Result<Response, ApiError> {
    let (store, bucket) = target(&state, &bucket)?;
    let (method, declared, exact) = match (signed.size, signed.max) {
        (Some(size), _) => ("PUT", size, true),
        (None, Some(max)) => (engine::storage::UPTO_METHOD, max, false),
        (None, None) => return Err(ApiError::Forbidden("the upload link has no size".into())),
    };
    store
        .verify(
            method,
            bucket,
            &key,
            signed.expires,
            Some(declared),
            &signed.signature,
        )
        .map_err(signature_error)?;
    // A dataset's upload link works until the dataset is confirmed: the file that is validated
    // is the file that stays.
    if bucket == Bucket::Datasets {
        let mut tx = state.db.system().await.map_err(ApiError::internal)?;
        let open = engine::datasets::accepts_upload(&mut tx, &key)
            .await
            .map_err(ApiError::internal)?;
        tx.commit().await.map_err(ApiError::internal)?;
        if !open {
            return Err(ApiError::Conflict {
                message: "this dataset's file was already confirmed, so its upload link no longer works; create a new dataset to upload another file".into(),
                fields: Default::default(),
            });
        }
    }
    // Refuse early when the client announces a different size.
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > declared {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body is {length} bytes but this link accepts exactly {declared}"
            )));
        }
        if exact && length < declared {
            return Err(ApiError::BadRequest(format!(
                "the body is {length} bytes but this link expects exactly {declared}"
            )));
        }
    }
    let stream = request.into_body().into_data_stream();
    match store
        .write_stream(bucket, &key, declared, exact, stream)
        .await
    {
        Ok(outcome) => Ok((
            StatusCode::OK,
            [(header::ETAG, format!("\"{}\"", outcome.sha256))],
            axum::Json(serde_json::json!({ "size": outcome.size, "sha256": outcome.sha256 })),
        )
            .into_response()),
        Err(UploadError::TooLarge { declared }) => Err(ApiError::PayloadTooLarge(format!(
            "the upload is larger than the declared {declared} bytes"
        ))),
        Err(e @ (UploadError::Incomplete { .. } | UploadError::Stream(_))) => {
            Err(ApiError::BadRequest(e.to_string()))
        }
        Err(UploadError::Storage(e)) => Err(ApiError::internal(e)),
    }
}

/// A signed download (a model's `download_urls`), with Range support; HEAD too.
#[utoipa::path(get, path = "/storage/{bucket}/{key}", tag = "storage", security(()),
    params(("bucket" = String, Path), ("key" = String, Path, description = "The object key; may contain `/`."), Signed),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range."),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(signed): Query<Signed>,
    request: Request,
) -> Result<Response, ApiError> {
    let (store, bucket) = target(&state, &bucket)?;
    // HEAD is allowed with a GET link.
    let method = if request.method() == Method::HEAD {
        "GET"
    } else {
        request.method().as_str()
    };
    store
        .verify(
            method,
            bucket,
            &key,
            signed.expires,
            None,
            &signed.signature,
        )
        .map_err(signature_error)?;
    let path = store.path(bucket, &key).map_err(|_| ApiError::NotFound)?;
    if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Err(ApiError::NotFound);
    }
    let mut response = ServeFile::new(path)
        .oneshot(request)
        .await
        .map_err(ApiError::internal)?
        .map(Body::new);
    // A download, never a page: saved under its own name, and never sniffed into HTML.
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    if bucket == Bucket::Models {
        let name = key.rsplit('/').next().unwrap_or("download");
        if let Ok(value) =
            header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    Ok(response)
}
