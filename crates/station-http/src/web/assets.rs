//! The web app's static files, compiled into the binary.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Added to asset URLs so a new build is never served a stale cached file.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every asset: name, MIME type, contents.
pub const FILES: &[(&str, &str, &[u8])] = &[
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../web/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/app.js")),
    ("form.js", "text/javascript; charset=utf-8", include_bytes!("../../web/form.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_bytes!("../../web/pages.js")),
    ("admin.js", "text/javascript; charset=utf-8", include_bytes!("../../web/admin.js")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../web/icon.svg")),
];

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some((_, mime, body)) = FILES.iter().find(|(name, ..)| *name == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut r = (*body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}
