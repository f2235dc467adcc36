//! Station's HTTP surface: liveness and readiness, LoRA resolution, and the
//! account API with API-key authentication ([`Caller`]) and rate limits; the
//! REST API and web app build on the same router.

use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use station_core::Station;
use station_core::loras::LoraError;

pub mod account;

pub use account::Caller;

/// The router with every route Station serves.
pub fn router(station: Station) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/loras/resolve", post(resolve_loras))
        .merge(account::routes())
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
/// prompt's trigger words resolved for that existing account (id or
/// `provider:subject`; anonymous when absent) as `{prompt, applied, warnings}`,
/// the same JSON `station loras resolve` prints.
async fn resolve_loras(State(station): State<Station>, body: Result<Json<Value>, JsonRejection>) -> Response {
    let body = match body {
        Ok(Json(v)) => v,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "invalid_json", e.body_text(), vec![]),
    };
    let Some(obj) = body.as_object() else {
        return invalid("(body)", "expected a JSON object {prompt, base_model?, account?}");
    };
    if let Some(unknown) = obj.keys().find(|k| !matches!(k.as_str(), "prompt" | "base_model" | "account")) {
        return invalid(unknown, "unknown field; known: prompt, base_model, account");
    }
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
        None => None,
        Some(a) => match loras.find_account("account", &a).await {
            Ok(a) => Some(a),
            Err(e) => return lora_error(e),
        },
    };
    match loras.resolve(&prompt, account.as_ref(), base_model.as_deref()).await {
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
    axum::serve(listener, router(station).merge(extra)).with_graceful_shutdown(shutdown).await
}
