//! The REST API under `/api/v1`: tools, generations, media, live events,
//! points, settings per tool, spells and casts, and the admin endpoints, documented by an
//! OpenAPI 3 document built from the handlers themselves ([`openapi`]).
//!
//! Every handler authenticates with [`crate::Caller`] (API key or web session
//! with CSRF) or [`crate::AdminCaller`]; other people's jobs and media answer
//! 404, exactly like ids that do not exist.

// Handlers and helpers return `Result<_, ApiError>`; the error's size does
// not matter on these once-per-request paths (as in `account`).
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod alerts;
pub mod collections;
pub mod cook;
pub mod error;
pub mod events;
pub mod flags;
pub mod generations;
pub mod media;
pub mod models;
pub mod openapi;
pub mod own_loras;
pub mod points;
pub mod settings;
pub mod spells;
pub mod stats;
pub mod tools;
pub mod training;
pub mod wallets;
pub mod webhooks;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use serde::Deserialize;
use serde_json::{Map, Value};
use station_core::Station;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ApiResult, ErrorBody, FieldIssue};

/// Largest page a list endpoint returns.
pub const MAX_PAGE: u32 = 200;
/// Page size when `limit` is absent.
pub const DEFAULT_PAGE: u32 = 50;

/// Paging for list endpoints: newest first; pass a page's `next` as `before`
/// to get the one after it.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Cursor: the `next` value of the previous page.
    pub before: Option<String>,
}

impl Paging {
    /// The page size, refusing values out of range.
    pub fn limit(&self) -> ApiResult<u32> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::invalid("limit", format!("{n} is out of range; use 1 to {MAX_PAGE}"))),
        }
    }
}

/// Every API route, with its OpenAPI description: the one list both the
/// router and the document are built from.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(tools::routes())
        .merge(models::routes())
        .merge(generations::routes())
        .merge(media::routes())
        .merge(events::routes())
        .merge(points::routes())
        .merge(settings::routes())
        .merge(spells::routes())
        .merge(webhooks::routes())
        .merge(admin::routes())
        .merge(flags::routes())
        .merge(stats::routes())
        .merge(alerts::routes())
        .merge(collections::routes())
        .merge(cook::routes())
        .merge(training::routes())
        .merge(own_loras::routes())
        .merge(wallets::routes())
}

/// The body as a JSON object holding only `known` keys; a missing or
/// malformed body is `invalid_json`, an unknown key `invalid_input` naming it.
pub fn object(body: Result<Json<Value>, JsonRejection>, known: &[&str]) -> ApiResult<Map<String, Value>> {
    let body = match body {
        Ok(Json(v)) => v,
        Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!("the body is over the {} KiB limit for JSON requests", crate::MAX_JSON_BODY / 1024);
            return Err(ApiError::new(e.status(), "too_large", message));
        }
        Err(e) => {
            // Name what was wrong: the header, or the body itself.
            let (field, reason) = match &e {
                JsonRejection::MissingJsonContentType(_) => ("Content-Type", "expected application/json".to_string()),
                e => ("(body)", e.body_text()),
            };
            return Err(ApiError {
                fields: vec![FieldIssue { field: field.into(), reason }],
                ..ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("{}; send a JSON object with Content-Type: application/json", e.body_text()),
                )
            });
        }
    };
    let Value::Object(obj) = body else {
        return Err(ApiError::invalid("(body)", format!("expected a JSON object with {}", known.join(", "))));
    };
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::invalid(k.as_str(), format!("unknown field; known: {}", known.join(", "))));
    }
    Ok(obj)
}

/// A required string field.
pub fn required_str(obj: &Map<String, Value>, field: &str, what: &str) -> ApiResult<String> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        None | Some(Value::Null) => Err(ApiError::invalid(field, format!("is required: {what}"))),
        Some(Value::String(_)) => Err(ApiError::invalid(field, format!("must not be empty: {what}"))),
        Some(_) => Err(ApiError::invalid(field, "expected a string")),
    }
}

/// An optional JSON object field (`params`).
pub fn optional_object(obj: &Map<String, Value>, field: &str) -> ApiResult<Map<String, Value>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::invalid(field, "expected a JSON object of parameter names to values")),
    }
}

/// An optional string field (`None` when absent or null).
pub fn optional_str(obj: &Map<String, Value>, field: &str) -> ApiResult<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(field, "expected a string")),
    }
}

/// An optional boolean field.
pub fn optional_bool(obj: &Map<String, Value>, field: &str) -> ApiResult<bool> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(field, "expected true or false")),
    }
}
