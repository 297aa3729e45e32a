//! `/api/tokens`: API tokens for scripts (`Authorization: Bearer …`).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use engine::accounts::web::AuthMethod;
use engine::accounts::{ApiTokenView, CreatedApiToken, store};
use serde::Deserialize;
use uuid::Uuid;

use super::ApiJson;
use crate::auth::CurrentUser;
use crate::error::{ApiError, Envelope, ErrorBody, ok};
use crate::state::AppState;

/// `/api/tokens`.
pub fn router() -> super::Api {
    use axum::routing::{delete, post};
    super::Api::new()
        .route("/api/tokens", post(create).get(list))
        .route("/api/tokens/{id}", delete(revoke))
}

/// `POST /api/tokens {name, expires_in_days?}` (no `expires_in_days`: until revoked).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    /// 1–366; absent: until revoked.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// Tokens are made and revoked in a signed-in session only: a leaked token cannot mint others
/// or revoke the owner's.
fn session_only(method: AuthMethod) -> Result<(), ApiError> {
    match method {
        AuthMethod::Bearer => Err(ApiError::Forbidden(
            "API tokens are created and revoked from a signed-in session (Settings), not with a token".into(),
        )),
        _ => Ok(()),
    }
}

/// Creates an API token; the secret is in this answer only (stored hashed). From a signed-in
/// session only.
#[utoipa::path(post, path = "/api/tokens", tag = "account", request_body = NewToken,
    responses((status = 201, body = Envelope<CreatedApiToken>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Called with a token.")))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Extension(method): Extension<AuthMethod>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<impl IntoResponse, ApiError> {
    session_only(method)?;
    let created = store::create_token(&state.db, user.id, &body.name, body.expires_in_days).await?;
    Ok((StatusCode::CREATED, ok(created)))
}

/// The account's tokens (never their secrets).
#[utoipa::path(get, path = "/api/tokens", tag = "account",
    responses((status = 200, body = Envelope<Vec<ApiTokenView>>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    Ok(ok(store::list_tokens(&state.db, user.id).await?))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Revoked {
    revoked: Uuid,
}

/// Revokes a token. Another user's token id answers 404, exactly like a token that never
/// existed.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "account", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<Revoked>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Extension(method): Extension<AuthMethod>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    session_only(method)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    if store::revoke_token(&state.db, user.id, id).await? {
        Ok(ok(Revoked { revoked: id }))
    } else {
        Err(ApiError::NotFound)
    }
}
