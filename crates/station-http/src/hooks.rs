//! `POST /hooks/{service}`: status callbacks from hosted providers
//! (ComfyDeploy's run webhooks). They are not signed, so they are hints:
//! the body's run id (`run_id`, or `id` as other providers name it) wakes
//! the job of this process that waits on that run, which asks the provider
//! itself before recording anything ([`Station::hint_remote`]). Every
//! well-formed call is answered 204, whether or not a job waits on it, so
//! the answer tells a caller nothing.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use station_core::Station;

/// The path hosted providers' webhooks are sent to (`{service}` is the
/// tools' service name, e.g. `comfydeploy`).
pub const PATH: &str = "/hooks/{service}";

/// The route.
pub fn routes() -> Router<Station> {
    Router::new().route(PATH, post(hint))
}

async fn hint(State(station): State<Station>, Path(service): Path<String>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return crate::api_error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "body: must be a JSON object".into(),
            vec![("body".into(), "must be a JSON object".into())],
        );
    };
    let run = body.get("run_id").or_else(|| body.get("id")).and_then(Value::as_str);
    let Some(run) = run else {
        return crate::api_error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "run_id: missing".into(),
            vec![("run_id".into(), "missing".into())],
        );
    };
    let woken = station.hint_remote(&service, run);
    tracing::debug!(%service, run, woken, status = ?body.get("status"), "hosted provider hint");
    StatusCode::NO_CONTENT.into_response()
}
