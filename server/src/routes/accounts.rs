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
        .route("/api/account/budget", get(budget).put(set_budget))
}

/// `GET /api/account/budget`: the month's budget, spend and what running jobs hold.
pub async fn budget(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    let limits = state.catalog.current().limits;
    let mut tx = state.db.tenant(user.id).await.map_err(ApiError::internal)?;
    let s = engine::costs::limits::spending(&mut tx, user.id, &limits)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(ok(serde_json::json!({
        "monthly_budget": s.budget,
        "spent_this_month": s.spent,
        "reserved_by_active_jobs": s.reserved,
        "active_jobs": s.active_jobs,
        "max_active_jobs": limits.max_active_jobs,
        "max_job_budget": limits.max_job_budget,
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetChange {
    /// Dollars per calendar month; `null` returns to the server's default.
    monthly_budget: Option<f64>,
}

/// `PUT /api/account/budget {monthly_budget}`.
pub async fn set_budget(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(change): ApiJson<BudgetChange>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(b) = change.monthly_budget
        && !(b.is_finite() && (0.0..=1_000_000.0).contains(&b))
    {
        return Err(ApiError::Validation(
            engine::validation::FieldErrors::single(
                "monthly_budget",
                "Use an amount from $0 to $1,000,000, or null for the server's default.",
            ),
        ));
    }
    let mut tx = state.db.tenant(user.id).await.map_err(ApiError::internal)?;
    engine::costs::limits::set_budget(&mut tx, user.id, change.monthly_budget)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    budget(State(state), CurrentUser(user)).await
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
