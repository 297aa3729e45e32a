//! The site assets (WASM, JS, CSS, public files) compiled into the binary, so the release binary
//! runs from any directory. Pages link the bundle under its content hash, `/pkg/<version>/…`:
//! those answers are cached for good (`immutable`), and a new build has new URLs. Any other
//! path is served with an ETag and revalidated (cheap 304s).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "$CARGO_MANIFEST_DIR/../target/site"]
struct Site;

/// The hydrate bundle's content hash: 16 hex digits over the JS, WASM and CSS (and whatever
/// else is in `pkg/`), fixed for this binary.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        let mut names: Vec<_> = Site::iter().filter(|n| n.starts_with("pkg/")).collect();
        names.sort();
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        for name in names {
            if let Some(file) = Site::get(&name) {
                sha2::Digest::update(&mut hasher, name.as_bytes());
                sha2::Digest::update(&mut hasher, file.metadata.sha256_hash());
            }
        }
        hex::encode(&sha2::Digest::finalize(hasher)[..8])
    })
}

/// The embedded file at `uri`, or `None`. A precompressed `.br`/`.gz` copy is sent when the
/// client accepts it.
pub fn file(uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    let mut path = uri.path().trim_start_matches('/');
    if path.is_empty() || path.ends_with(".br") || path.ends_with(".gz") {
        return None;
    }
    // `pkg/<version>/x` is `pkg/x`; kept for good when the version is this build's.
    let mut immutable = false;
    let unversioned;
    if let Some((version, rest)) = path
        .strip_prefix("pkg/")
        .and_then(|p| p.split_once('/'))
        .filter(|(v, _)| v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        immutable = version == self::version();
        unversioned = format!("pkg/{rest}");
        path = &unversioned;
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
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
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
