//! The site assets (WASM, JS, CSS, public files) compiled into the binary, so the release binary
//! runs from any directory. Served with an ETag; the hydrate bundle is revalidated on each load
//! (cheap 304s) because its file names carry no content hash.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "$CARGO_MANIFEST_DIR/../target/site"]
struct Site;

/// The embedded file at `uri`, or `None`. A precompressed `.br`/`.gz` copy is sent when the
/// client accepts it.
pub fn file(uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    let path = uri.path().trim_start_matches('/');
    if path.is_empty() || path.ends_with(".br") || path.ends_with(".gz") {
        return None;
    }
    let accepts = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (file, encoding) = [("br", ".br"), ("gzip", ".gz")]
        .into_iter()
        .filter(|(name, _)| {
            accepts
                .split(',')
                .any(|e| e.trim().split(';').next() == Some(*name))
        })
        .find_map(|(name, suffix)| Site::get(&format!("{path}{suffix}")).map(|f| (f, Some(name))))
        .or_else(|| Site::get(path).map(|f| (f, None)))?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return Some(StatusCode::NOT_MODIFIED.into_response());
    }
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut response = Response::new(Body::from(file.data.into_owned()));
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(encoding) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    Some(response)
}

/// Sizes of the embedded files, for `--version`-style diagnostics and tests.
pub fn embedded_files() -> Vec<(String, usize)> {
    Site::iter()
        .filter_map(|name| Site::get(&name).map(|f| (name.to_string(), f.data.len())))
        .collect()
}
