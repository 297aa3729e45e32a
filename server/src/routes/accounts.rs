//! `/api/auth/*`: register, log in, log out, who am I.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse};
use engine::accounts::web::{ClientAddr, session_secret};
use engine::accounts::{Credentials, store};

use super::ApiJson;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ok};
use crate::state::AppState;

/// `/api/auth/*`.
pub fn router() -> axum::Router<crate::state::AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
}

pub async fn register(
    State(state): State<AppState>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    headers: HeaderMap,
    ApiJson(credentials): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let user = store::register(&state.db, &credentials).await?;
    tracing::info!(user_id = %user.id, "account registered");
    let secret = store::create_session(&state.db, user.id, user_agent(&headers), &client).await?;
    Ok((
        StatusCode::CREATED,
        AppendHeaders([(header::SET_COOKIE, state.cookie.set(&secret))]),
        ok(serde_json::json!({ "user": user })),
    ))
}

pub async fn login(
    State(state): State<AppState>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    headers: HeaderMap,
    ApiJson(credentials): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    let user = store::authenticate(
        &state.db,
        &credentials.email,
        &credentials.password,
        &client,
    )
    .await?;
    let secret = store::create_session(&state.db, user.id, user_agent(&headers), &client).await?;
    Ok((
        AppendHeaders([(header::SET_COOKIE, state.cookie.set(&secret))]),
        ok(serde_json::json!({ "user": user })),
    ))
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let secret = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session_secret);
    if let Some(secret) = secret {
        store::delete_session(&state.db, secret).await?;
    }
    Ok((
        AppendHeaders([(header::SET_COOKIE, state.cookie.clear())]),
        ok(serde_json::json!({ "logged_out": true })),
    ))
}

pub async fn me(CurrentUser(user): CurrentUser) -> impl IntoResponse {
    ok(serde_json::json!({ "user": user }))
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}
