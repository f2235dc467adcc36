//! Saved parameters per tool: the middle layer of parameter precedence
//! (explicit > saved > tool default).

use crate::extract::Path;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};
use station_core::tools::ToolDef;
use station_core::{AccountRow, Station};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody, object};
use crate::Caller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new().routes(routes!(get_settings, put_settings, delete_settings))
}

/// Your saved parameters for one tool.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolSettings {
    /// Tool id.
    pub tool: String,
    /// Saved values by input name (used when a request does not give them).
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

/// `PUT /api/v1/settings/{tool}`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)] // as `object` refuses them
#[schema(example = json!({"params": {"width": 512}}))]
pub struct PutSettings {
    /// Values by input name; replaces what was saved. Images cannot be saved.
    #[schema(value_type = Object)]
    params: Map<String, Value>,
}

fn tool(station: &Station, a: &AccountRow, id: &str) -> ApiResult<std::sync::Arc<ToolDef>> {
    station.find_tool(id, a).ok_or_else(|| ApiError::not_found("tool", id, "GET /api/v1/tools lists the tools"))
}

/// Your saved parameters for a tool (an empty object when none).
#[utoipa::path(get, path = "/api/v1/settings/{tool}", tag = "settings",
    params(("tool" = String, Path, description = "Tool id or command")),
    responses((status = 200, body = ToolSettings), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_settings(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ToolSettings>> {
    let t = tool(&station, &a, &id)?;
    let params = station.settings().get(&a, &t).await?;
    Ok(Json(ToolSettings { tool: t.id.clone(), params }))
}

/// Replaces your saved parameters for a tool; every value is checked
/// against the tool's inputs.
#[utoipa::path(put, path = "/api/v1/settings/{tool}", tag = "settings",
    params(("tool" = String, Path, description = "Tool id or command")),
    request_body = PutSettings,
    responses((status = 200, body = ToolSettings), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn put_settings(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<ToolSettings>> {
    let t = tool(&station, &a, &id)?;
    let obj = object(body, &["params"])?;
    let params = match obj.get("params") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => return Err(ApiError::invalid("params", "is required: an object of input values")),
        Some(_) => return Err(ApiError::invalid("params", "expected an object of input names to values")),
    };
    let params = station.settings().replace(&a, &t, params).await?;
    Ok(Json(ToolSettings { tool: t.id.clone(), params }))
}

/// Forgets your saved parameters for a tool.
#[utoipa::path(delete, path = "/api/v1/settings/{tool}", tag = "settings",
    params(("tool" = String, Path, description = "Tool id or command")),
    responses((status = 204, description = "Cleared"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_settings(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let t = tool(&station, &a, &id)?;
    station.settings().clear(&a, &t).await?;
    Ok(StatusCode::NO_CONTENT)
}
