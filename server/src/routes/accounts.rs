//! `/api/auth/*`: register, log in, log out, who am I.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse};
use engine::accounts::web::{ClientAddr, session_secret};
use engine::accounts::{Credentials, UserView, store};
use engine::costs::BudgetView;

use super::ApiJson;
use crate::auth::CurrentUser;
use crate::error::{ApiError, Envelope, ErrorBody, ok};
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
#[utoipa::path(get, path = "/api/account/budget", tag = "account",
    responses((status = 200, body = Envelope<BudgetView>), (status = 401, body = ErrorBody)))]
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

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetChange {
    /// Dollars per calendar month; `null` returns to the server's default; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    monthly_budget: Option<Option<f64>>,
    /// An IANA time zone (`Europe/Paris`): the account's days and month.
    time_zone: Option<String>,
}

/// A field that is present, `null` included (`Some(None)`), apart from an absent one (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    <Option<f64> as serde::Deserialize>::deserialize(d).map(Some)
}

/// `PUT /api/account/budget {monthly_budget?, time_zone?}`.
#[utoipa::path(put, path = "/api/account/budget", tag = "account", request_body = BudgetChange,
    responses((status = 200, body = Envelope<BudgetView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
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
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct Registration {
    email: String,
    password: String,
    /// The token of an invite link (`/register?invite=…`), where registration needs one.
    invite: Option<String>,
}

/// The signed-in account.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserAnswer {
    pub user: UserView,
}

/// Creates an account and signs it in (the session cookie is set). The first account of a server
/// is its administrator; after that, `REGISTRATION` decides (open, invite, closed).
#[utoipa::path(post, path = "/api/auth/register", tag = "account", request_body = Registration,
    security(()),
    responses((status = 201, body = Envelope<UserAnswer>, description = "Registered; `Set-Cookie` holds the session."),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody, description = "Registration is closed or needs an invite."),
        (status = 409, body = ErrorBody, description = "The email is taken."),
        (status = 429, body = ErrorBody)))]
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
        ok(UserAnswer { user }),
    ))
}

/// Signs in: sets the session cookie. Failing addresses are slowed down (429 with `Retry-After`).
#[utoipa::path(post, path = "/api/auth/login", tag = "account", request_body = Credentials,
    security(()),
    responses((status = 200, body = Envelope<UserAnswer>), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
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
        ok(UserAnswer { user }),
    ))
}

/// Ends this session (clears the cookie).
#[utoipa::path(post, path = "/api/auth/logout", tag = "account", security(()),
    responses((status = 200, body = Envelope<LoggedOut>)))]
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
        ok(LoggedOut { logged_out: true }),
    ))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LoggedOut {
    logged_out: bool,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionsEnded {
    sessions_ended: u64,
}

/// `POST /api/auth/logout-all`: ends every session of the caller ("sign out everywhere");
/// from a session only (a token cannot sign its owner out).
#[utoipa::path(post, path = "/api/auth/logout-all", tag = "account",
    responses((status = 200, body = Envelope<SessionsEnded>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "Called with an API token.")))]
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
        ok(SessionsEnded {
            sessions_ended: ended,
        }),
    ))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Invite {
    /// `/register?invite=…` on this server; single use.
    invite_url: String,
    expires_in_days: i64,
}

/// `POST /api/invites`: an administrator's single-use invite link (7 days).
#[utoipa::path(post, path = "/api/invites", tag = "account",
    responses((status = 201, body = Envelope<Invite>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "Not an administrator.")))]
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
        ok(Invite {
            invite_url: url,
            expires_in_days: store::INVITE_TTL.num_days(),
        }),
    ))
}

/// The caller's account.
#[utoipa::path(get, path = "/api/auth/me", tag = "account",
    responses((status = 200, body = Envelope<UserAnswer>), (status = 401, body = ErrorBody)))]
pub async fn me(CurrentUser(user): CurrentUser) -> impl IntoResponse {
    ok(UserAnswer { user })
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}
