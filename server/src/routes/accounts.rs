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
pub fn router() -> super::Api {
    use axum::routing::{get, post};
    super::Api::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/logout-all", post(logout_all))
        .route("/api/invites", post(invite))
        .route("/api/auth/me", get(me))
        .route("/api/account/budget", get(budget).put(set_budget))
}

/// `GET /api/account/budget`: the month's budget, spend, what active jobs hold, and the
/// account's time zone (which days and month these are).
pub async fn budget(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    let limits = state.catalog.current().limits;
    let mut tx = state.db.tenant(user.id).await.map_err(ApiError::internal)?;
    let s = engine::costs::limits::read_spending(&mut tx, user.id, &limits)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(ok(s.view(&limits)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetChange {
    /// Dollars per calendar month; `null` returns to the server's default; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    monthly_budget: Option<Option<f64>>,
    /// An IANA time zone (`Europe/Paris`): the account's days and month.
    time_zone: Option<String>,
}

/// A field that is present, `null` included (`Some(None)`), apart from an absent one (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    <Option<f64> as serde::Deserialize>::deserialize(d).map(Some)
}

/// `PUT /api/account/budget {monthly_budget?, time_zone?}`.
pub async fn set_budget(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(change): ApiJson<BudgetChange>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(budget) = change.monthly_budget {
        engine::costs::limits::check_budget(budget).map_err(ApiError::Validation)?;
    }
    let mut tx = state.db.tenant(user.id).await.map_err(ApiError::internal)?;
    if let Some(budget) = change.monthly_budget {
        engine::costs::limits::set_budget(&mut tx, user.id, budget)
            .await
            .map_err(ApiError::internal)?;
    }
    if let Some(tz) = change.time_zone.as_deref()
        && engine::costs::limits::set_time_zone(&mut tx, user.id, tz)
            .await
            .map_err(ApiError::internal)?
            .is_none()
    {
        return Err(ApiError::Validation(
            engine::validation::FieldErrors::single(
                "time_zone",
                engine::costs::limits::zone_error(tz),
            ),
        ));
    }
    tx.commit().await.map_err(ApiError::internal)?;
    budget(State(state), CurrentUser(user)).await
}

/// `POST /api/auth/register {email, password, invite?}`.
#[derive(serde::Deserialize)]
pub struct Registration {
    email: String,
    password: String,
    /// The token of an invite link (`/register?invite=…`), where registration needs one.
    invite: Option<String>,
}

pub async fn register(
    State(state): State<AppState>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Registration>,
) -> Result<impl IntoResponse, ApiError> {
    let credentials = Credentials {
        email: body.email,
        password: body.password,
    };
    let user = store::register(
        &state.db,
        &credentials,
        state.settings.registration,
        body.invite.as_deref(),
        Some(&client),
    )
    .await?;
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

/// `POST /api/auth/logout-all`: ends every session of the caller ("sign out everywhere");
/// from a session only (a token cannot sign its owner out).
pub async fn logout_all(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Extension(method): Extension<engine::accounts::web::AuthMethod>,
) -> Result<impl IntoResponse, ApiError> {
    if method == engine::accounts::web::AuthMethod::Bearer {
        return Err(ApiError::Forbidden(
            "sessions are ended from a signed-in session, not with a token".into(),
        ));
    }
    let ended = store::delete_user_sessions(&state.db, user.id).await?;
    Ok((
        AppendHeaders([(header::SET_COOKIE, state.cookie.clear())]),
        ok(serde_json::json!({ "sessions_ended": ended })),
    ))
}

/// `POST /api/invites`: an administrator's single-use invite link (7 days).
pub async fn invite(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    if !store::is_admin(&state.db, user.id).await? {
        return Err(ApiError::Forbidden(
            "only an administrator invites; the first account of the server is one".into(),
        ));
    }
    let token = store::create_invite(&state.db, Some(user.id)).await?;
    let url = format!("{}/register?invite={token}", state.settings.public_origin());
    Ok((
        StatusCode::CREATED,
        ok(
            serde_json::json!({ "invite_url": url, "expires_in_days": store::INVITE_TTL.num_days() }),
        ),
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
