//! Server-side bodies of the account server functions.

use axum::http::HeaderValue;
use axum::http::header::{ACCEPT, SET_COOKIE, USER_AGENT};
use axum::http::request::Parts;
use engine::accounts::store::{self, LoginError, RegisterError};
use engine::accounts::web::{ClientAddr, SessionCookie, SessionUser, session_secret};
use engine::accounts::{Credentials, UserView};
use engine::db::Db;
use leptos::prelude::*;
use leptos_axum::ResponseOptions;

use crate::error::AppError;

fn parts() -> Option<Parts> {
    use_context::<Parts>()
}

fn db() -> Result<Db, AppError> {
    crate::server_context::Services::current().map(|s| s.db)
}

/// The caller resolved by the auth middleware.
pub async fn caller() -> Option<UserView> {
    parts().and_then(|p| {
        p.extensions
            .get::<SessionUser>()
            .map(|SessionUser(u)| u.clone())
    })
}

/// The caller, or `Unauthorized`.
pub async fn require_user() -> Result<UserView, AppError> {
    caller().await.ok_or(AppError::Unauthorized)
}

/// The caller, signed in with a session cookie (not an API token): what managing tokens needs,
/// so a leaked token cannot mint others or revoke its owner's.
pub async fn require_session() -> Result<UserView, AppError> {
    let user = require_user().await?;
    let bearer = parts().is_some_and(|p| {
        p.extensions.get::<engine::accounts::web::AuthMethod>()
            == Some(&engine::accounts::web::AuthMethod::Bearer)
    });
    if bearer {
        return Err(AppError::Forbidden(
            "API tokens are created and revoked from a signed-in session (Settings), not with a token."
                .into(),
        ));
    }
    Ok(user)
}

fn client_addr(parts: &Option<Parts>) -> String {
    parts
        .as_ref()
        .and_then(|p| {
            p.extensions
                .get::<ClientAddr>()
                .map(|ClientAddr(a)| a.clone())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A plain form post (JavaScript off) wants a page back, not JSON: errors then go into the
/// query string of a redirect so the page can show them.
fn plain_form_post(parts: &Option<Parts>) -> bool {
    parts
        .as_ref()
        .and_then(|p| p.headers.get(ACCEPT))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

fn set_cookie(value: String) -> Result<(), AppError> {
    let response = use_context::<ResponseOptions>()
        .ok_or_else(|| AppError::internal("no response options"))?;
    let value = HeaderValue::from_str(&value).map_err(AppError::internal)?;
    response.append_header(SET_COOKIE, value);
    Ok(())
}

fn cookie_policy() -> SessionCookie {
    crate::server_context::Services::current()
        .map(|s| s.cookie)
        .unwrap_or(SessionCookie { secure: false })
}

async fn start_session(db: &Db, user: &UserView, parts: &Option<Parts>) -> Result<(), AppError> {
    let agent = parts
        .as_ref()
        .and_then(|p| p.headers.get(USER_AGENT))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let secret = store::create_session(db, user.id, agent.as_deref(), &client_addr(parts))
        .await
        .map_err(AppError::internal)?;
    set_cookie(cookie_policy().set(&secret))
}

pub async fn login(email: String, password: String, next: Option<String>) -> Result<(), AppError> {
    let db = db()?;
    let parts = parts();
    let next = super::safe_next(next.as_deref());
    match store::authenticate(&db, &email, &password, &client_addr(&parts)).await {
        Ok(user) => {
            start_session(&db, &user, &parts).await?;
            leptos_axum::redirect(&next);
            Ok(())
        }
        Err(e) => {
            let (code, error) = match e {
                LoginError::InvalidCredentials => (
                    "credentials",
                    AppError::Invalid {
                        message: "Invalid email or password.".into(),
                        fields: Default::default(),
                    },
                ),
                LoginError::RateLimited { retry_after_s } => {
                    ("rate", AppError::RateLimited(retry_after_s))
                }
                other => ("internal", AppError::internal(other)),
            };
            if plain_form_post(&parts) {
                let next = url_encode(&next);
                leptos_axum::redirect(&format!("/login?error={code}&next={next}"));
            }
            Err(error)
        }
    }
}

pub async fn register(
    email: String,
    password: String,
    invite: Option<String>,
) -> Result<(), AppError> {
    let services = crate::server_context::Services::current()?;
    let db = services.db;
    let parts = parts();
    let invite = invite.filter(|i| !i.trim().is_empty());
    match store::register(
        &db,
        &Credentials { email, password },
        services.registration,
        invite.as_deref(),
        Some(&client_addr(&parts)),
    )
    .await
    {
        Ok(user) => {
            start_session(&db, &user, &parts).await?;
            leptos_axum::redirect("/");
            Ok(())
        }
        Err(e) => {
            let (code, error) = match e {
                RegisterError::Invalid(fields) => (
                    "invalid",
                    AppError::invalid("Check the highlighted fields.", fields),
                ),
                RegisterError::EmailTaken => (
                    "taken",
                    AppError::invalid(
                        "This email is already registered.",
                        engine::validation::FieldErrors::single(
                            "email",
                            "This email is already registered. Log in instead.",
                        ),
                    ),
                ),
                RegisterError::InviteRequired => (
                    "invite",
                    AppError::from_engine(RegisterError::InviteRequired),
                ),
                RegisterError::Closed => ("closed", AppError::from_engine(RegisterError::Closed)),
                RegisterError::RateLimited { retry_after_s } => {
                    ("rate", AppError::RateLimited(retry_after_s))
                }
                other => ("internal", AppError::internal(other)),
            };
            if plain_form_post(&parts) {
                let keep = invite
                    .map(|i| format!("&invite={}", url_encode(&i)))
                    .unwrap_or_default();
                leptos_axum::redirect(&format!("/register?error={code}{keep}"));
            }
            Err(error)
        }
    }
}

pub async fn logout() -> Result<(), AppError> {
    let db = db()?;
    let parts = parts();
    let secret = parts.as_ref().and_then(|p| {
        p.headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session_secret)
            .map(str::to_owned)
    });
    if let Some(secret) = secret {
        store::delete_session(&db, &secret)
            .await
            .map_err(AppError::internal)?;
    }
    set_cookie(cookie_policy().clear())?;
    leptos_axum::redirect("/login");
    Ok(())
}

/// Ends every session of the caller, this one included, then the login page.
pub async fn logout_everywhere() -> Result<(), AppError> {
    let user = require_session().await?;
    let db = db()?;
    store::delete_user_sessions(&db, user.id)
        .await
        .map_err(AppError::internal)?;
    set_cookie(cookie_policy().clear())?;
    leptos_axum::redirect("/login");
    Ok(())
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
