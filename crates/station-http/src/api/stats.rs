//! `GET /api/v1/admin/stats`: usage and revenue for operators, as JSON or CSV.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use station_core::Station;
use station_core::stats::{StatsRange, stats_csv};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody};
use crate::AdminCaller;
use crate::extract::Query;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new().routes(routes!(admin_stats))
}

/// The period and format of a report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Whole UTC days up to now, today included (1–3660, default 7).
    #[param(minimum = 1, maximum = 3660)]
    pub days: Option<u32>,
    /// Instead of `days`: from this time (Unix ms) to now.
    pub since: Option<i64>,
    /// `json` (default) or `csv` (one line per day, tool, model and platform).
    pub format: Option<String>,
}

/// Usage and revenue: jobs per UTC day and by tool, model and platform
/// (counts by outcome, average wait and run time), points spent, granted
/// and refunded, the accounts that spent the most, and why jobs failed.
#[utoipa::path(get, path = "/api/v1/admin/stats", tag = "admin", params(StatsParams),
    responses((status = 200, description = "The report: `since`, `until`, `total`, `points_spent`, \
        `points_granted`, `points_refunded`, `days`, `by_tool`, `by_model`, `by_platform`, `top_accounts`, \
        `failures` (JSON), or CSV with `format=csv`", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn admin_stats(
    State(station): State<Station>,
    _: AdminCaller,
    Query(q): Query<StatsParams>,
) -> ApiResult<Response> {
    let now = station_core::now_ms();
    let range = match (q.days, q.since) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("since", "give days or since, not both")),
        (_, Some(since)) if since > now || since < 0 => {
            return Err(ApiError::invalid("since", "must be a time in the past (Unix ms)"));
        }
        (_, Some(since)) => StatsRange { since, until: now + 1 },
        (Some(d), None) if !(1..=3660).contains(&d) => {
            return Err(ApiError::invalid("days", "must be from 1 to 3660"));
        }
        (d, None) => StatsRange::last_days(d.unwrap_or(7), now),
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid("format", "expected json or csv")),
    };
    let stats = station.stats(range).await?;
    if csv {
        let name = format!(
            "attachment; filename=\"station-stats-{}.csv\"",
            stats.days.last().map(|d| d.date.as_str()).unwrap_or("report")
        );
        Ok((
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
                (header::CONTENT_DISPOSITION, HeaderValue::from_str(&name).map_err(ApiError::internal)?),
            ],
            stats_csv(&stats),
        )
            .into_response())
    } else {
        Ok(axum::Json(stats).into_response())
    }
}
