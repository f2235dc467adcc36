//! The web app's static files, compiled into the binary.
//!
//! Assets are served with `Cache-Control: no-cache` and an ETag of their
//! content: browsers revalidate (a 304 costs a header) and never mix scripts
//! from two builds. The entry script's URL also carries the version.

use std::sync::OnceLock;

use crate::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Added to the entry script's URL.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every asset: name, MIME type, contents.
pub const FILES: &[(&str, &str, &[u8])] = &[
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../web/app.css")),
    ("main.js", "text/javascript; charset=utf-8", include_bytes!("../../web/main.js")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/app.js")),
    ("form.js", "text/javascript; charset=utf-8", include_bytes!("../../web/form.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_bytes!("../../web/pages.js")),
    ("admin.js", "text/javascript; charset=utf-8", include_bytes!("../../web/admin.js")),
    ("queue.js", "text/javascript; charset=utf-8", include_bytes!("../../web/queue.js")),
    ("collections.js", "text/javascript; charset=utf-8", include_bytes!("../../web/collections.js")),
    ("cook.js", "text/javascript; charset=utf-8", include_bytes!("../../web/cook.js")),
    ("wallet.js", "text/javascript; charset=utf-8", include_bytes!("../../web/wallet.js")),
    ("training.js", "text/javascript; charset=utf-8", include_bytes!("../../web/training.js")),
    ("spells.js", "text/javascript; charset=utf-8", include_bytes!("../../web/spells.js")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../web/icon.svg")),
];

/// 64-bit FNV-1a: enough to tell two versions of a file apart.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| FILES.iter().map(|(_, _, body)| format!("\"{:016x}\"", fnv(body))).collect())
}

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(name, ..)| *name == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let (_, mime, body) = FILES[i];
    let etag = &etags()[i];
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    let mut r = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { body.into_response() };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex ETag"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// `GET /favicon.ico`: the icon (browsers that ignore `<link rel="icon">` ask here).
pub async fn favicon(headers: HeaderMap) -> Response {
    serve(Path("icon.svg".to_string()), headers).await
}
