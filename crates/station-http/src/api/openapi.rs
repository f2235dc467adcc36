//! The OpenAPI 3 document (`/api/v1/openapi.json`), built by utoipa from the
//! handlers' `#[utoipa::path]` annotations as the router is assembled, and a
//! reference page (`/api/v1/docs`) rendered in the browser by a small script
//! served from the binary (no CDN, no inline script: the CSP forbids it).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use station_core::Station;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, Tag};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The rendered document. It is a function of the code alone (the
/// handlers' annotations), so one copy serves every router in the process.
static SPEC_JSON: OnceLock<String> = OnceLock::new();

/// The document as served, rendered on first use.
pub fn spec_json() -> &'static str {
    SPEC_JSON.get_or_init(|| crate::openapi().to_pretty_json().expect("the OpenAPI document serialises"))
}

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(docs_script))
        .routes(routes!(docs_style))
}

/// The document's title, version, tags and security schemes; paths are
/// added by the routers.
pub fn base() -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Station API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Run image tools, follow their progress and fetch results. Authenticate with an API key \
                     (`Authorization: Bearer st_…` or `X-API-Key`) or the web session cookie (state-changing \
                     requests then need `X-CSRF-Token`). Errors are `{\"error\": {\"code\", \"message\", \
                     \"fields\": [{\"field\", \"reason\"}]}}`. Lists are newest first: pass a page's `next` as \
                     `before` (users: `cursor`).",
                ))
                .build(),
        )
        .tags(Some(
            [
                ("tools", "What can be run"),
                ("generations", "Jobs: create, follow, cancel, rerun"),
                ("media", "Uploads, downloads, thumbnails"),
                ("points", "Balance, history, quotes"),
                ("settings", "Saved parameters per tool"),
                ("collections", "Curated sets of results and LoRAs: share links, ZIP exports"),
                ("spells", "Saved chains of tools, and casting them"),
                ("training", "Datasets, LoRA trainings and trained LoRA files"),
                ("wallets", "EVM wallets linked by signature or magic deposit, on-chain deposits"),
                ("account", "Who am I, API keys, linking accounts"),
                ("admin", "Backends, queue, users (administrators)"),
                ("service", "Health, readiness, documentation"),
            ]
            .map(|(name, d)| {
                let mut t = Tag::new(name);
                t.description = Some(d.into());
                t
            }),
        ))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("st_…").build()),
    );
    components.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::account::SESSION_COOKIE))),
    );
    doc.security = Some(
        ["bearer", "api_key", "session"]
            .map(|s| utoipa::openapi::security::SecurityRequirement::new::<_, [&str; 0], &str>(s, []))
            .to_vec(),
    );
    doc
}

/// This document (OpenAPI 3.1, JSON).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "service", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], axum::body::Bytes::from_static(spec_json().as_bytes()))
}

/// The API reference, rendered from this document in the browser.
#[utoipa::path(get, path = "/api/v1/docs", tag = "service", security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
async fn docs_page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("docs/index.html"))
}

/// The reference page's script.
#[utoipa::path(get, path = "/api/v1/docs/docs.js", tag = "service", security(()),
    responses((status = 200, description = "JavaScript", content_type = "text/javascript")))]
async fn docs_script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("docs/docs.js"))
}

/// The reference page's style sheet.
#[utoipa::path(get, path = "/api/v1/docs/docs.css", tag = "service", security(()),
    responses((status = 200, description = "CSS", content_type = "text/css")))]
async fn docs_style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("docs/docs.css"))
}
