//! Points: balance, history (paged), and a quote for a would-be generation.

use crate::extract::Query;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::Serialize;
use serde_json::Value;
use station_core::{Station, SubmitRequest};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody, Paging, object, optional_object, required_str};
use crate::Caller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new().routes(routes!(show_points)).routes(routes!(points_history)).routes(routes!(quote))
}

/// Your points.
#[derive(Debug, Serialize, ToSchema)]
pub struct PointsView {
    /// Points owned.
    pub balance: i64,
    /// Points reserved by queued and running generations.
    pub held: i64,
    /// Points you can spend now (balance − held).
    pub available: i64,
    /// Free points per day the operator gives everyone (spent before your balance).
    pub free_daily: u64,
    /// Generations priced above this need `confirmed` (none: never asks).
    #[schema(required = true)]
    pub confirm_above: Option<i64>,
}

/// One ledger entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerItem {
    /// Position in the ledger (the paging cursor).
    pub seq: i64,
    /// `grant`, `hold`, `capture`, `release`, `transfer`, `adjust`, …
    pub kind: String,
    /// Change to the balance.
    pub amount: i64,
    /// Change to the points on hold.
    pub held: i64,
    /// Change to today's free allowance in use.
    pub allowance: i64,
    /// The generation it belongs to.
    #[schema(required = true)]
    pub generation: Option<String>,
    /// Why.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// When (Unix ms).
    pub created_at: i64,
}

/// A page of ledger entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    /// Newest first.
    pub items: Vec<LedgerItem>,
    /// Pass as `before` for the next page; absent on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// What a generation would cost.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteView {
    /// The tool the request resolved to.
    pub tool: String,
    /// Points it costs (held when queued).
    pub price: i64,
    /// Your spendable points: available balance plus today's free allowance left.
    pub available: i64,
    /// Free allowance left today.
    pub allowance_left: i64,
    /// Who would pay (`member`, `sponsor`, …).
    #[schema(value_type = Object)]
    pub paid_by: Value,
    /// Whether it can be paid now.
    pub affordable: bool,
    /// Your confirmation threshold.
    #[schema(required = true)]
    pub threshold: Option<i64>,
    /// Whether creating it needs `"confirmed": true`.
    pub needs_confirmation: bool,
}

/// `POST /api/v1/points/quote`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)] // as `object` refuses them
#[schema(example = json!({"tool": "resize", "params": {"image": "media:0123456789abcdef0123456789abcdef", "width": 512}}))]
pub struct QuoteRequest {
    /// Tool id or command.
    tool: String,
    /// Parameters, as for creating a generation.
    #[schema(value_type = Option<Object>)]
    params: Option<serde_json::Map<String, Value>>,
}

/// Your balance.
#[utoipa::path(get, path = "/api/v1/points", tag = "points",
    responses((status = 200, body = PointsView), (status = 401, body = ErrorBody)))]
async fn show_points(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<PointsView>> {
    station.ensure_starting_grant(&a.id).await.map_err(ApiError::internal)?;
    let b = station.points(&a.id).await?;
    let confirm_above = station.quote_threshold(&a).await?;
    Ok(Json(PointsView {
        balance: b.balance,
        held: b.held,
        available: b.available(),
        free_daily: station.config.points.free_daily,
        confirm_above,
    }))
}

/// Your ledger, newest first.
#[utoipa::path(get, path = "/api/v1/points/history", tag = "points", params(Paging),
    responses((status = 200, body = LedgerPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn points_history(
    State(station): State<Station>,
    Caller(a): Caller,
    Query(page): Query<Paging>,
) -> ApiResult<Json<LedgerPage>> {
    let limit = page.limit()?;
    let before = match page.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(b.parse::<i64>().map_err(|_| {
            ApiError::invalid("before", "expected the `next` value of a previous page (a whole number)")
        })?),
    };
    let mut rows = station.ledger_history(&a.id, before, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(|r| r.seq.to_string()) } else { None };
    let items = rows
        .into_iter()
        .map(|e| LedgerItem {
            seq: e.seq,
            kind: e.kind,
            amount: e.amount,
            held: e.held,
            allowance: e.allowance,
            generation: e.job_id,
            reason: e.reason,
            created_at: e.created_at,
        })
        .collect();
    Ok(Json(LedgerPage { items, next }))
}

/// What a generation with these parameters would cost you, and who would
/// pay; nothing is written.
#[utoipa::path(post, path = "/api/v1/points/quote", tag = "points", request_body = QuoteRequest,
    responses((status = 200, body = QuoteView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "Unknown tool (or one you may not use)")))]
async fn quote(
    State(station): State<Station>,
    Caller(a): Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<QuoteView>> {
    let obj = object(body, &["tool", "params"])?;
    let req = SubmitRequest {
        tool: required_str(&obj, "tool", "the tool id (GET /api/v1/tools)")?,
        params: optional_object(&obj, "params")?,
        ..Default::default()
    };
    let q = station.quote(&a, &req).await?;
    Ok(Json(QuoteView {
        tool: q.tool_id,
        price: q.price,
        available: q.available,
        allowance_left: q.allowance_left,
        paid_by: serde_json::to_value(&q.paid_by).unwrap_or(Value::Null),
        affordable: q.affordable,
        threshold: q.threshold,
        needs_confirmation: q.needs_confirmation,
    }))
}
