//! Security headers on every response. Pages carry their own Content-Security-Policy with the
//! request's nonce (set while rendering, `app::content_security_policy`); everything else that
//! is not a page gets a policy that allows nothing, and downloads are sandboxed.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// What a response that is not a page may do: nothing (JSON, CSV, files).
const NOTHING: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// Whether to send HSTS (the public URL is https).
#[derive(Clone, Copy)]
pub struct Hsts(pub bool);

pub async fn security_headers(
    State(Hsts(hsts)): State<Hsts>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    set_default(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set_default(headers, header::REFERRER_POLICY, "same-origin");
    set_default(headers, header::X_FRAME_OPTIONS, "DENY");
    if hsts {
        set_default(
            headers,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    let attachment = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|d| d.starts_with("attachment"));
    if attachment {
        // A downloaded file never runs as a page of ours, whatever it contains.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    } else if !html {
        set_default(headers, header::CONTENT_SECURITY_POLICY, NOTHING);
    }
    // API answers and server-function results can carry secrets (tokens, signed links) and
    // per-user data: never stored by a cache. Pages are per user too.
    if path.starts_with("/api/") || path.starts_with("/rpc/") {
        set_default(headers, header::CACHE_CONTROL, "no-store");
    } else if html {
        set_default(headers, header::CACHE_CONTROL, "private, no-cache");
    }
    response
}

fn set_default(headers: &mut HeaderMap, name: header::HeaderName, value: &'static str) {
    if !headers.contains_key(&name) {
        headers.insert(name, HeaderValue::from_static(value));
    }
}
