//! `GET /metrics`: what Station counts ([`station_core::telemetry`]), in
//! Prometheus' text format, and the layer that counts HTTP requests.
//!
//! Served on Station's own address by default, or on its own address
//! (`metrics.listen`, e.g. a private interface), and behind a bearer token
//! when `metrics.token` is set.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use station_core::config::{Config, ConfigError, Section};
use station_core::{Station, telemetry};

/// The `[metrics]` table's name.
pub const SECTION: &str = "metrics";
/// The path the metrics are served at.
pub const PATH: &str = "/metrics";

/// `[metrics]`: whether and where `GET /metrics` is served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` at all.
    pub enabled: bool,
    /// Serve it on this address only (e.g. `127.0.0.1:9480`) instead of
    /// Station's own: keeps it off a public address.
    pub listen: Option<SocketAddr>,
    /// When set, a scrape must send `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: None, token: None }
    }
}

/// The commented `[metrics]` table `station config init` writes.
pub const EXAMPLE: &str = "\
[metrics]
enabled = true
# listen = \"127.0.0.1:9480\"   # serve /metrics only on this address
# token = \"...\"               # scrapers send Authorization: Bearer <token>
";

impl MetricsConfig {
    /// The `[metrics]` section for [`Config::load`].
    pub fn section() -> Section {
        Section::new::<MetricsConfig>(SECTION).note(format!("Prometheus metrics path: {PATH}")).example(EXAMPLE)
    }

    /// The settings in `config` (the defaults when it has no `[metrics]` table).
    pub fn from_config(config: &Config) -> Result<MetricsConfig, ConfigError> {
        config.section_as(SECTION)
    }

    /// Puts these settings into `config` (configurations built in code).
    pub fn apply_to(&self, config: &mut Config) {
        config.set_section(SECTION, self);
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the
/// same handle). Until it is installed, every count is a no-op.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(telemetry::SECONDS_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder (a test harness's) wins; ours then renders nothing.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            telemetry::describe();
            handle
        })
        .clone()
}

/// Whether [`install`] has run in this process.
pub fn installed() -> bool {
    HANDLE.get().is_some()
}

#[derive(Clone)]
struct Scrape {
    station: Station,
    handle: PrometheusHandle,
    token: Option<String>,
}

/// The `GET /metrics` route, installing the recorder if needed.
pub fn router(station: Station, config: &MetricsConfig) -> Router {
    let state = Scrape { station, handle: install(), token: config.token.clone().filter(|t| !t.is_empty()) };
    Router::new().route(PATH, get(scrape)).with_state(state)
}

async fn scrape(State(s): State<Scrape>, headers: HeaderMap) -> Response {
    if let Some(token) = &s.token {
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| station_core::secrets::same_secret(g.as_bytes(), token.as_bytes())) {
            let mut r =
                (StatusCode::UNAUTHORIZED, "send the metrics token as Authorization: Bearer <token>\n").into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    // The read gauges are best effort: counters still render when the
    // database is down (and the scrape says so in its own gauge).
    if let Err(e) = s.station.record_gauges().await {
        tracing::debug!(error = %e, "could not read the queue gauges for /metrics");
    }
    let body = s.handle.render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
}

/// The route label of a request path: bounded however many paths are
/// asked for. A segment that looks like an id (has a digit, other than a
/// `v1`-style version, or is long) becomes `{id}`; at most six segments
/// are kept. Answers that matched no route are labelled `unmatched` by the
/// layer instead.
pub fn route_label(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(64));
    for (i, segment) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        if i == 6 {
            out.push_str("/…");
            break;
        }
        out.push('/');
        let version =
            segment.len() <= 3 && segment.starts_with('v') && segment[1..].bytes().all(|b| b.is_ascii_digit());
        if !version && (segment.len() > 24 || segment.bytes().any(|b| b.is_ascii_digit())) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Counts every request [`crate::service`] answers (method, route label,
/// status, time to the response head) when the recorder is installed.
#[derive(Debug, Clone, Copy)]
pub struct ObserveLayer;

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Nothing is measured (not even the label built) without a recorder.
        let seen =
            installed().then(|| (req.method().as_str().to_owned(), route_label(req.uri().path()), Instant::now()));
        ObserveFuture { inner: self.inner.call(req), seen }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Observe`]: the inner answer, counted when it is ready.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        seen: Option<(String, String, Instant)>,
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.inner.poll(cx) else { return Poll::Pending };
        if let Some((method, route, start)) = this.seen.take() {
            let status = response.status();
            let route = if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
                "unmatched".to_owned()
            } else {
                route
            };
            telemetry::http_request(&method, &route, status.as_u16(), start.elapsed());
        }
        Poll::Ready(Ok(response))
    }
}

/// Serves only `GET /metrics` on `addr` until `shutdown` (for `metrics.listen`).
pub async fn serve_alone(
    addr: SocketAddr,
    station: Station,
    config: &MetricsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(station, config)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn route_labels_are_templates() {
        assert_eq!(route_label("/"), "/");
        assert_eq!(route_label("/api/v1/generations"), "/api/v1/generations");
        assert_eq!(
            route_label("/api/v1/generations/0192f3a4-aaaa-7bbb-8ccc-123456789abc/events"),
            "/api/v1/generations/{id}/events"
        );
        assert_eq!(route_label("/media/5f2c9e0b8d7a6f5e4d3c2b1a09f8e7d6c5b4a3f2"), "/media/{id}");
        assert_eq!(route_label("/tools/resize"), "/tools/resize");
        assert_eq!(route_label("/a/b/c/d/e/f/g/h"), "/a/b/c/d/e/f/…");
    }
}
