//! Station's HTTP surface. For now: liveness and readiness; the REST API and
//! web app build on the same router.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use station_core::Station;

/// The router with every route Station serves.
pub fn router(station: Station) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(station)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Liveness: the process answers.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Readiness: the database answers; backends are reported (a Station with no
/// healthy backend is still ready: jobs wait in the durable queue).
async fn readyz(State(station): State<Station>) -> impl IntoResponse {
    let db = match tokio::time::timeout(Duration::from_secs(2), station.store.ping()).await {
        Ok(Ok(())) => json!({"ok": true}),
        Ok(Err(e)) => json!({"ok": false, "error": e.to_string()}),
        Err(_) => json!({"ok": false, "error": "timed out after 2 s"}),
    };
    let executors = station.executors.read().expect("executors lock").clone();
    let mut services = serde_json::Map::new();
    for ex in executors {
        let backends: Vec<_> = ex
            .health()
            .await
            .into_iter()
            .map(|(name, healthy, detail)| json!({"name": name, "healthy": healthy, "detail": detail}))
            .collect();
        services.insert(ex.service().into(), json!({"capacity": ex.capacity(), "backends": backends}));
    }
    let comfy_configured = services.get("comfyui").is_some();
    let ok = db["ok"] == true;
    let body = json!({
        "status": if ok { "ready" } else { "not ready" },
        "database": db,
        "services": services,
        "notes": if comfy_configured { vec![] } else {
            vec!["no ComfyUI backend configured: ComfyUI tools wait in the queue until one is added"]
        },
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// Serves the router on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    station: Station,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(station)).with_graceful_shutdown(shutdown).await
}
