//! `/api/tokens`: API tokens for scripts (`Authorization: Bearer …`).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use engine::accounts::store;
use engine::accounts::web::AuthMethod;
use serde::Deserialize;
use uuid::Uuid;

use super::ApiJson;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ok};
use crate::state::AppState;

/// `/api/tokens`.
pub fn router() -> super::Api {
    use axum::routing::{delete, post};
    super::Api::new()
        .route("/api/tokens", post(create).get(list))
        .route("/api/tokens/{id}", delete(revoke))
}

/// `POST /api/tokens {name, expires_in_days?}` (no `expires_in_days`: until revoked).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
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

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    Ok(ok(store::list_tokens(&state.db, user.id).await?))
}

/// Another user's token id answers 404, exactly like a token that never existed.
pub async fn revoke(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Extension(method): Extension<AuthMethod>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    session_only(method)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    if store::revoke_token(&state.db, user.id, id).await? {
        Ok(ok(serde_json::json!({ "revoked": id })))
    } else {
        Err(ApiError::NotFound)
    }
}
