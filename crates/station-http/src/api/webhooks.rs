//! Webhook subscriptions of the caller's account and their delivery log:
//! translation only; checking, enqueuing, signing and retrying are the
//! core's (`station_core::webhooks`).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use station_core::Station;
use station_core::webhooks::{Delivery, Webhook, WebhookError};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody, FieldIssue, object, required_str};
use crate::Caller;
use crate::extract::Path;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(replay_delivery))
        .routes(routes!(callback_secret))
}

/// The secret `callback_url` events are signed with.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackSecret {
    /// Verify `X-Station-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
    /// of events sent to a generation's, cast's or training's `callback_url` with it.
    pub secret: String,
}

/// Your callback secret: what events sent to a `callback_url` (given with
/// a generation, a cast or a training) are signed with. Made the first time
/// it is needed or asked for; subscriptions have their own secrets.
#[utoipa::path(get, path = "/api/v1/account/webhooks/callback-secret", tag = "account",
    responses((status = 200, body = CallbackSecret), (status = 401, body = ErrorBody)))]
async fn callback_secret(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<CallbackSecret>> {
    Ok(Json(CallbackSecret { secret: station.callback_secret(&a).await.map_err(ApiError::storage)? }))
}

/// `POST /api/v1/account/webhooks`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/station-hook", "events": ["generation.succeeded", "cast.*"]}))]
pub struct CreateWebhook {
    /// Where to POST events: http(s), not a private or loopback address.
    url: String,
    /// `generation.succeeded`, `generation.failed`, `generation.cancelled`,
    /// `cast.succeeded`, `cast.failed`, `cast.cancelled`, `training.succeeded`,
    /// `training.failed`, `training.cancelled`; `generation.*`, `cast.*` and
    /// `training.*` for all three.
    events: Vec<String>,
}

/// A webhook subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBody {
    /// Id.
    pub id: String,
    /// Destination.
    pub url: String,
    /// Events sent there.
    pub events: Vec<String>,
    /// When created (Unix ms).
    pub created_at: i64,
    /// The signing secret, only in the answer that created it: verify
    /// `X-Station-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    pub secret: Option<String>,
}

fn body(w: Webhook, secret: Option<String>) -> WebhookBody {
    WebhookBody { id: w.id, url: w.url, events: w.events, created_at: w.created_at, secret }
}

/// Your webhook subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub webhooks: Vec<WebhookBody>,
}

/// One delivery of an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    /// Id (to replay it).
    pub id: String,
    /// The event's id, sent as `X-Station-Event-Id` with every attempt.
    pub event_id: String,
    /// The event.
    pub event: String,
    /// Destination.
    pub url: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The receiver's last HTTP status.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When enqueued (Unix ms).
    pub created_at: i64,
    /// When delivered.
    pub delivered_at: Option<i64>,
    /// The JSON body sent: `{id, type, created, data}`.
    #[schema(value_type = Object)]
    pub body: Value,
}

impl From<Delivery> for DeliveryBody {
    fn from(d: Delivery) -> DeliveryBody {
        DeliveryBody {
            id: d.id,
            event_id: d.event_id,
            event: d.event,
            url: d.url,
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            body: d.body,
        }
    }
}

/// Your delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first (at most 100).
    pub deliveries: Vec<DeliveryBody>,
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> ApiError {
        match e {
            WebhookError::Invalid(fields) => ApiError::invalid_fields(
                fields.into_iter().map(|f| FieldIssue { field: f.field, reason: f.reason }).collect(),
            ),
            WebhookError::Storage(e) => ApiError::storage(e),
        }
    }
}

/// Your webhook subscriptions (secrets are not shown again).
#[utoipa::path(get, path = "/api/v1/account/webhooks", tag = "account",
    responses((status = 200, body = WebhookList), (status = 401, body = ErrorBody)))]
async fn list_webhooks(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<WebhookList>> {
    let hooks = station.webhooks(&a).await?;
    Ok(Json(WebhookList { webhooks: hooks.into_iter().map(|w| body(w, None)).collect() }))
}

/// Subscribes a URL to events. The answer holds the signing secret, shown
/// only this once.
#[utoipa::path(post, path = "/api/v1/account/webhooks", tag = "account",
    request_body = CreateWebhook,
    responses((status = 201, body = WebhookBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_webhook(
    State(station): State<Station>,
    Caller(a): Caller,
    payload: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<WebhookBody>)> {
    let obj = object(payload, &["url", "events"])?;
    let url = required_str(&obj, "url", "where to POST events")?;
    let events: Vec<String> = match obj.get("events") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::invalid("events", "expected event names")))
            .collect::<ApiResult<_>>()?,
        None | Some(Value::Null) => return Err(ApiError::invalid("events", "is required: a list of event names")),
        Some(_) => return Err(ApiError::invalid("events", "expected a list of event names")),
    };
    let (hook, secret) = station.add_webhook(&a, &url, &events).await?;
    Ok((StatusCode::CREATED, Json(body(hook, Some(secret)))))
}

/// Ends a webhook subscription.
#[utoipa::path(delete, path = "/api/v1/account/webhooks/{id}", tag = "account",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if station.remove_webhook(&a, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook", &id, "GET /api/v1/account/webhooks lists yours"))
    }
}

/// Your webhook deliveries, newest first: each event, its attempts and the
/// receiver's last answer.
#[utoipa::path(get, path = "/api/v1/account/webhooks/deliveries", tag = "account",
    responses((status = 200, body = DeliveryList), (status = 401, body = ErrorBody)))]
async fn list_deliveries(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<DeliveryList>> {
    let list = station.webhook_deliveries(&a, 100).await?;
    Ok(Json(DeliveryList { deliveries: list.into_iter().map(DeliveryBody::from).collect() }))
}

/// Sends a delivery again now, with the same event id.
#[utoipa::path(post, path = "/api/v1/account/webhooks/deliveries/{id}/replay", tag = "account",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 202, description = "Queued to be sent again"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn replay_delivery(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if station.replay_webhook_delivery(&a, &id).await? {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::not_found("delivery", &id, "GET /api/v1/account/webhooks/deliveries lists yours"))
    }
}
