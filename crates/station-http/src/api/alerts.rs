//! `GET /api/v1/admin/alerts`: the alert rules, what fires now, the sinks
//! and the newest messages (see `station_core::alerts`).

use axum::extract::State;
use station_core::Station;
use station_core::alerts::{AlertsError, AlertsOverview};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody};
use crate::AdminCaller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new().routes(routes!(admin_alerts))
}

/// Alert rules with their thresholds and states (`pending`, `firing` since
/// when with the value then, `resolved`), the sinks (secrets left out) and
/// the 20 newest messages with their delivery state.
#[utoipa::path(get, path = "/api/v1/admin/alerts", tag = "admin",
    responses((status = 200, description = "`rules` (each `rule`, `threshold`, `states`), `sinks`, `recent`",
        body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn admin_alerts(State(station): State<Station>, _: AdminCaller) -> ApiResult<axum::Json<AlertsOverview>> {
    match station.alerts_overview(20).await {
        Ok(o) => Ok(axum::Json(o)),
        Err(AlertsError::Storage(e)) => Err(e.into()),
        Err(e @ AlertsError::Invalid(_)) => Err(ApiError::internal(e)),
    }
}
