//! Station's HTTP surface: liveness and readiness, LoRA resolution, the
//! account API with API-key or session authentication ([`Caller`]) and rate
//! limits, and the REST API ([`api`]) with its OpenAPI document; the web app
//! builds on the same router.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Value, json};
use station_core::Station;
use station_core::loras::LoraError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod account;
pub mod api;
pub mod extract;
pub mod hooks;
pub mod metrics;
pub mod web;

pub use account::{AdminCaller, Caller};

/// Largest JSON (or other non-multipart) request body accepted, on every
/// route: 1 MiB.
pub const MAX_JSON_BODY: usize = 1024 * 1024;
/// Room for a multipart form's text parts and part headers, on top of its
/// files.
pub const MULTIPART_TEXT_BYTES: u64 = 64 * 1024;

/// Every documented route (health, account, REST API, documentation): the
/// single list both the router and the OpenAPI document come from.
pub fn documented_routes() -> OpenApiRouter<Station> {
    api::routes()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(resolve_loras))
        .merge(account::routes())
        .merge(api::openapi::routes())
}

/// The OpenAPI document of [`documented_routes`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes().split_for_parts().1
}

/// The largest multipart request body for `station`'s configuration:
/// `media.max_upload_files` files of at most `media.max_bytes` each, plus
/// [`MULTIPART_TEXT_BYTES`] for the text parts.
pub fn max_multipart_body(station: &Station) -> usize {
    let media = &station.config.media;
    let files = media.max_bytes.saturating_mul(media.max_upload_files);
    usize::try_from(files.saturating_add(MULTIPART_TEXT_BYTES)).unwrap_or(usize::MAX)
}

/// The router with every route Station serves, behind its layers (for
/// tests and embedding; [`serve`] serves [`service`] directly, one boxed
/// call less per request).
pub fn router(station: Station) -> Router {
    Router::new().fallback_service(service(station, Router::new()))
}

/// A complete HTTP service, as `axum::serve` takes it (through
/// `axum::ServiceExt::into_make_service`): what [`service`] returns.
pub trait HttpService:
    tower::Service<axum::extract::Request, Response = Response, Error = std::convert::Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> HttpService for S where
    S: tower::Service<axum::extract::Request, Response = Response, Error = std::convert::Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// What [`serve`] serves: every route Station serves plus `extra`, behind
/// the per-request layers. Serve it with `axum::ServiceExt::into_make_service`.
pub fn service(station: Station, extra: Router) -> impl HttpService {
    let limits = BodyLimits { json: MAX_JSON_BODY, multipart: max_multipart_body(&station) };
    let hsts = station.config.public_url().starts_with("https://");
    layered(app_routes(station).merge(extra), limits, hsts)
}

/// Every route, without the per-request layers ([`layered`] adds them once
/// around whatever is merged in). Errors raised below the handlers get the
/// API's shape without a per-request copy of the path: unknown paths by the
/// fallback, wrong methods by the method fallback.
fn app_routes(station: Station) -> Router {
    let (routes, _) = documented_routes().split_for_parts();
    routes
        .merge(web::routes())
        .merge(hooks::routes())
        .fallback(not_found)
        // After every route is registered: it applies to those present.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(station)
}

/// `routes` behind Station's per-request layers: security headers (HSTS
/// when `hsts`, the public URL being https) and the API-shaped 413
/// ([`finish`]), the trace span, and the body limits.
///
/// The layers form one tower stack around the whole router rather than
/// `Router::layer` calls: axum wraps every route's endpoint in each such
/// layer, and on every request clones each wrapped level (an allocation per
/// level) and boxes its future and response body. Around the router, the
/// stack is built once and monomorphised; a request pays one boxed body at
/// the top (docs/PERFORMANCE.md has the measurements).
fn layered(routes: Router, limits: BodyLimits, hsts: bool) -> impl HttpService {
    tower::ServiceBuilder::new()
        .map_response(move |r| {
            let mut r = finish(r);
            if hsts {
                r.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
            }
            r
        })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(metrics::ObserveLayer)
        .layer(limits)
        // Every limit is [`BodyLimits`]'s: the extractors' own 2 MB default is off.
        .layer(DefaultBodyLimit::disable())
        .service(routes)
}

/// The request body limits of every route, chosen by the body's type: a
/// `multipart/form-data` body (uploads) may be `multipart` bytes, any other
/// body `json` bytes. A declared `Content-Length` over the limit is refused
/// at once without reading the body; any other body is read through a
/// counter that fails at the limit, so no more than the limit is ever
/// buffered, whatever the handler does with it (the refusal is 413
/// `too_large` in the API's error shape).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest non-multipart body (JSON, forms).
    pub json: usize,
    /// Largest `multipart/form-data` body.
    pub multipart: usize,
}

impl<S> tower::Layer<S> for BodyLimits {
    type Service = BodyLimited<S>;

    fn layer(&self, inner: S) -> BodyLimited<S> {
        BodyLimited { inner, limits: *self }
    }
}

/// A service behind [`BodyLimits`].
#[derive(Debug, Clone)]
pub struct BodyLimited<S> {
    inner: S,
    limits: BodyLimits,
}

/// Bodies declared this small are read in full before the request is
/// routed. A refusal made from the headers alone (401, 403 `csrf`, 429)
/// then still leaves the connection clean: otherwise the server answers
/// while the client is still writing, closes the connection, and the client
/// sees a broken pipe instead of the answer. Every handler reads such small
/// bodies whole anyway, so this buffers nothing extra.
const READ_FIRST_BELOW: u64 = 64 * 1024;

type Answered = futures::future::BoxFuture<'static, Result<Response, std::convert::Infallible>>;

impl<S> tower::Service<axum::extract::Request> for BodyLimited<S>
where
    S: tower::Service<axum::extract::Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Either<std::future::Ready<Result<Response, std::convert::Infallible>>, Answered>,
    >;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        use axum::body::HttpBody as _;
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
        let limit = if multipart { self.limits.multipart } else { self.limits.json };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            let refused = std::future::ready(Ok(body_too_large(multipart, limit)));
            return futures::future::Either::Right(futures::future::Either::Left(refused));
        }
        if !multipart && declared.is_some_and(|n| n > 0 && n <= READ_FIRST_BELOW) {
            // The ready service answers this request; a clone waits for the next.
            let clone = self.inner.clone();
            let mut ready = std::mem::replace(&mut self.inner, clone);
            let (parts, body) = req.into_parts();
            return futures::future::Either::Right(futures::future::Either::Right(Box::pin(async move {
                let body = match axum::body::to_bytes(body, READ_FIRST_BELOW as usize).await {
                    Ok(bytes) => axum::body::Body::from(bytes),
                    // A body shorter or longer than declared, or a client gone:
                    // hyper refuses such a body itself; pass the failure on
                    // as an empty body the handler's extractor rejects.
                    Err(_) => axum::body::Body::empty(),
                };
                ready.call(axum::extract::Request::from_parts(parts, body)).await
            })));
        }
        let req = if req.body().size_hint().exact() == Some(0) {
            req
        } else {
            req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, limit)))
        };
        futures::future::Either::Left(self.inner.call(req))
    }
}

/// 413 `too_large` for a body over [`BodyLimits`].
fn body_too_large(multipart: bool, limit: usize) -> Response {
    let message = if multipart {
        format!(
            "the form is over the {limit}-byte limit for uploads (media.max_upload_files files of at most \
             media.max_bytes bytes each); send fewer or smaller images"
        )
    } else {
        format!("the body is over the {} KiB limit for JSON requests", limit / 1024)
    };
    let mut r = api_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message, vec![]);
    // The body is not read: the connection cannot be reused.
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// `router` with the security headers on every response, and no other
/// layer: what [`service`] adds with its other layers (the HTTP benchmark
/// measures it alone).
pub fn secured(router: Router) -> impl HttpService {
    tower::ServiceBuilder::new().map_response(polish).service(router)
}

/// The last step of every answer: the body limit's plain-text 413 in the
/// API's error shape (the only refusal made below the handlers that has no
/// fallback of its own), then the security headers.
fn finish<B>(r: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let plain_413 = r.status() == StatusCode::PAYLOAD_TOO_LARGE
        && !r.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !plain_413 {
        return polish(r.map(axum::body::Body::new));
    }
    let (mut parts, _) = r.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let message = "the request body is over the limit; send smaller images (media.max_bytes)".to_string();
    let fresh = api_error(parts.status, "too_large", message, vec![]);
    let mut out = Response::from_parts(parts, fresh.into_body());
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    polish(out)
}

/// `Strict-Transport-Security` of every answer when `web.public_url` is
/// https: browsers then use only https for this host for a year.
pub const HSTS: &str = "max-age=31536000";

/// The Content-Security-Policy of the web app's pages (HTML): no inline
/// scripts or styles, nothing from other origins, images also from data:
/// and blob: URLs (previews, local upload previews), no framing.
pub const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The Content-Security-Policy of every other answer (JSON, images, scripts,
/// event streams): such a response opened as a document may load and run
/// nothing and be framed by no one — the OWASP advice for APIs, stricter
/// than the page policy and a fifth of its bytes on every API answer.
pub const CSP_NON_PAGE: &str = "default-src 'none'; frame-ancestors 'none'";

/// The security headers of every response: the page set for HTML, the
/// API set (no sniffing, no framing, nothing loaded) for everything else.
fn polish(mut r: Response) -> Response {
    let page = r.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let h = r.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if page {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    } else {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP_NON_PAGE));
    }
    r
}

/// Unknown paths: the API's error shape under `/api/`, a plain 404 elsewhere.
async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        let message = format!("no API endpoint {}; see /api/v1/docs", uri.path());
        return api_error(StatusCode::NOT_FOUND, "not_found", message, vec![]);
    }
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// A known path with a method it does not take (axum adds `Allow`): the
/// API's error shape under `/api/`, a plain 405 elsewhere.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        let message = format!("{} does not accept {method}; see /api/v1/docs", uri.path());
        return api_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message, vec![]);
    }
    (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response()
}

/// Liveness: the process answers, with which data it serves: `database` is
/// a fingerprint of its database (the same for every process sharing it),
/// and `data_dir` its data folder, given only to requests addressed to a
/// loopback or unspecified host (the `station` command on the same machine).
#[utoipa::path(get, path = "/healthz", tag = "service", security(()),
    responses((status = 200, description = "`{status: ok, version, database, data_dir?}`")))]
async fn healthz(State(station): State<Station>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let mut body = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "database": station.database_fingerprint(),
    });
    if headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).is_some_and(local_host) {
        let dir = std::fs::canonicalize(&station.config.data_dir).unwrap_or_else(|_| station.config.data_dir.clone());
        body["data_dir"] = json!(dir.display().to_string());
    }
    Json(body)
}

/// Whether a `Host` header names this machine (loopback or unspecified address).
fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// Readiness: the database answers; backends and chain watchers are
/// reported (a Station with no healthy backend is still ready: jobs wait in
/// the durable queue; deposits wait on chain).
#[utoipa::path(get, path = "/readyz", tag = "service", security(()),
    responses((status = 200, description = "Ready: database and services"), (status = 503, description = "Not ready")))]
async fn readyz(State(station): State<Station>) -> impl IntoResponse {
    let db = match station.database_health(Duration::from_secs(2)).await {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let executors = station.executors.read().expect("executors lock").clone();
    let mut services = serde_json::Map::new();
    // What is not working, in words: the database, each backend that is down.
    let mut problems: Vec<String> = vec![];
    if let Some(e) = db["error"].as_str() {
        problems.push(format!("the database is unreachable: {e}"));
    }
    for ex in executors {
        let health = ex.health().await;
        for (name, healthy, detail) in &health {
            if !healthy {
                problems.push(format!("{} backend {name} is down: {detail}", ex.service()));
            }
        }
        let backends: Vec<_> = health
            .into_iter()
            .map(|(name, healthy, detail)| json!({"name": name, "healthy": healthy, "detail": detail}))
            .collect();
        services.insert(ex.service().into(), json!({"capacity": ex.capacity(), "backends": backends}));
    }
    // Each chain's watcher: head, cursor, lag and last error (a chain that
    // cannot be read is a problem, not unreadiness: deposits wait on chain).
    let chains = station.wallet_chain_status().await;
    for c in &chains {
        if let Some(e) = &c.last_error {
            problems.push(format!("chain {} ({}) cannot be read: {e}", c.name, c.chain_id));
        }
    }
    let comfy_configured = services.get("comfyui").is_some();
    let ok = db["ok"] == true;
    let body = json!({
        "status": if ok { "ready" } else { "not ready" },
        "database": db,
        "services": services,
        "chains": chains,
        "problems": problems,
        "notes": if comfy_configured { vec![] } else {
            vec!["no ComfyUI backend configured: ComfyUI tools wait in the queue until one is added"]
        },
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// An API error: `{"error": {"code", "message", "fields": [{"field", "reason"}]}}`.
pub(crate) fn api_error(status: StatusCode, code: &str, message: String, fields: Vec<(String, String)>) -> Response {
    let fields: Vec<Value> =
        fields.into_iter().map(|(field, reason)| json!({"field": field, "reason": reason})).collect();
    (status, Json(json!({"error": {"code": code, "message": message, "fields": fields}}))).into_response()
}

fn invalid(field: &str, reason: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "invalid_input",
        format!("{field}: {reason}"),
        vec![(field.to_owned(), reason.to_owned())],
    )
}

fn lora_error(e: LoraError) -> Response {
    match e {
        LoraError::Storage(e) => {
            tracing::error!(error = %e, "LoRA resolution failed");
            api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "storage error".into(), vec![])
        }
        other => {
            let fields = other
                .field()
                .map(|f| {
                    let reason = match &other {
                        LoraError::Invalid { reason, .. } => reason.clone(),
                        e => e.to_string(),
                    };
                    vec![(f.to_owned(), reason)]
                })
                .unwrap_or_default();
            api_error(StatusCode::BAD_REQUEST, "invalid_input", other.to_string(), fields)
        }
    }
}

/// `POST /api/v1/loras/resolve` with `{prompt, base_model?, account?}`: the
/// prompt's trigger words resolved for the caller, or, for an administrator
/// only, for another existing `account` (id or `provider:subject`), as
/// `{prompt, applied, warnings}` — the same JSON `station loras resolve`
/// prints. A caller is required because the answer shows which private
/// LoRAs an account may use (and whether the account exists).
#[utoipa::path(post, path = "/api/v1/loras/resolve", tag = "service",
    request_body(content = Object, description = "`{prompt, base_model?, account?}`; `account` is for administrators"),
    responses((status = 200, description = "`{prompt, applied, warnings}`"), (status = 400, body = api::ErrorBody),
        (status = 401, body = api::ErrorBody), (status = 403, body = api::ErrorBody)))]
async fn resolve_loras(
    State(station): State<Station>,
    Caller(caller): Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let obj = match api::object(body, &["prompt", "base_model", "account"]) {
        Ok(obj) => obj,
        Err(e) => return e.into_response(),
    };
    let obj = &obj;
    // Err carries the field that is not a string.
    let text = |field: &'static str| match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field),
    };
    let (prompt, base_model, account) = match (text("prompt"), text("base_model"), text("account")) {
        (Ok(Some(p)), Ok(b), Ok(a)) => (p, b, a),
        (Ok(None), ..) => return invalid("prompt", "is required"),
        (Err(f), ..) | (_, Err(f), _) | (.., Err(f)) => return invalid(f, "expected a string"),
    };
    let loras = station.loras();
    let account = match account {
        None => caller,
        // Checked before the lookup, so a user learns nothing about other accounts.
        Some(_) if !caller.is_admin() => {
            return api_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "account: only administrators may resolve for another account; leave it out to resolve for yourself"
                    .into(),
                vec![("account".into(), "only administrators may resolve for another account".into())],
            );
        }
        Some(a) => match loras.find_account("account", &a).await {
            Ok(a) => a,
            Err(e) => return lora_error(e),
        },
    };
    match loras.resolve(&prompt, Some(&account), base_model.as_deref()).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => lora_error(e),
    }
}

/// Serves the router, plus `extra` routes (chat webhooks, interactions
/// endpoints mounted by the binary), on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    station: Station,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::ServiceExt as _;
    axum::serve(no_delay(listener), service(station, extra).into_make_service()).with_graceful_shutdown(shutdown).await
}

/// `listener` with Nagle's algorithm off on every accepted connection.
///
/// Streamed answers (event streams, chunked bodies) are written in small
/// pieces; with Nagle on, a piece written while the previous one is still
/// unacknowledged waits for the client's delayed ACK (about 40 ms on
/// Linux). That delayed the first event of a live job's stream by ~40 ms.
pub fn no_delay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not turn off Nagle's algorithm on a connection");
        }
    })
}
