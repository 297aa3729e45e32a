//! Who is calling, and may they do this: resolves the session cookie or Bearer token into a
//! [`SessionUser`] request extension, refuses cross-site state-changing requests, and guards the
//! pages that need a login.

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use engine::accounts::UserView;
use engine::accounts::store;
use engine::accounts::web::{AuthMethod, ClientAddr, SessionUser, session_secret};
use std::net::SocketAddr;

use crate::error::ApiError;
use crate::state::AppState;

/// Resolves the caller and enforces the origin check. Runs on every request.
pub async fn resolve_caller(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| {
            let forwarded = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            crate::client_addr::client_key(addr.ip(), forwarded, &state.settings.trusted_proxies)
        })
        .unwrap_or_else(|| "unknown".into());
    request.extensions_mut().insert(ClientAddr(client));
    // The operator's endpoints check their own bearer token (METRICS_TOKEN), never an account's.
    if matches!(request.uri().path(), "/metrics" | "/readyz") {
        return next.run(request).await;
    }

    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").map(str::trim));
    let resolved: Result<Option<(UserView, AuthMethod)>, ApiError> = match bearer {
        // An Authorization header that is not a valid Bearer token is an error, never anonymous.
        Some(None) => Err(ApiError::Unauthorized),
        Some(Some(token)) => match store::token_user(&state.db, token).await {
            Ok(Some(user)) => Ok(Some((user, AuthMethod::Bearer))),
            Ok(None) => Err(ApiError::Unauthorized),
            Err(e) => Err(e.into()),
        },
        None => match headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session_secret)
        {
            Some(secret) => store::session_user(&state.db, secret)
                .await
                .map(|user| user.map(|u| (u, AuthMethod::Cookie)))
                .map_err(Into::into),
            None => Ok(None),
        },
    };
    let caller = match resolved {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };

    let bearer_authenticated = matches!(caller, Some((_, AuthMethod::Bearer)));
    // Signed storage URLs carry their own authorisation (GPU workers send no Origin).
    let signed_storage = request.uri().path().starts_with("/storage/");
    if !bearer_authenticated
        && !signed_storage
        && !is_safe(request.method())
        && let Err(e) = check_origin(request.headers(), &state.allowed_origins)
    {
        return e.into_response();
    }
    if let Some((user, method)) = caller {
        request.extensions_mut().insert(SessionUser(user));
        request.extensions_mut().insert(method);
    }
    next.run(request).await
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A cookie-authenticated (or anonymous) state-changing request must come from one of our own
/// pages: its `Origin` (or, failing that, `Referer`) must be an allowed origin.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v != "null")
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| url::Url::parse(r).ok())
                .map(|u| u.origin().ascii_serialization())
        });
    match origin {
        None => Err(ApiError::Forbidden(
            "cross-site request refused: the request has no Origin header. Browsers send one \
             automatically; scripts should authenticate with an API token (Authorization: Bearer …)"
                .into(),
        )),
        Some(origin) if allowed.contains(&origin) => Ok(()),
        Some(origin) => Err(ApiError::Forbidden(format!(
            "cross-site request refused: origin {origin} is not this site's origin"
        ))),
    }
}

/// Extractor for handlers that need a signed-in caller; answers 401 otherwise.
pub struct CurrentUser(pub UserView);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SessionUser>()
            .map(|SessionUser(user)| CurrentUser(user.clone()))
            .ok_or(ApiError::Unauthorized)
    }
}

/// Pages under the app shell need a login: anonymous visitors go to /login (and come back
/// after), signed-in visitors skip the login and register pages.
pub async fn guard_pages(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let signed_in = request.extensions().get::<SessionUser>().is_some();
    if request.method() == Method::GET {
        let public = matches!(path, "/login" | "/register");
        if public && signed_in {
            return Redirect::to("/").into_response();
        }
        if is_app_page(path) && !signed_in {
            let next = url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
            return Redirect::to(&format!("/login?next={next}")).into_response();
        }
    }
    next.run(request).await
}

fn is_app_page(path: &str) -> bool {
    path == "/"
        || [
            "/datasets",
            "/train",
            "/jobs",
            "/models",
            "/costs",
            "/notifications",
            "/settings",
        ]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}
