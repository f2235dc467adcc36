//! `GET /api/v1/models`: the models the backends offer, for pickers.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use station_core::Station;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody};
use crate::Caller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new().routes(routes!(list_models))
}

/// One model a tool's `model` input may name.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelEntry {
    /// File name: the value to pass as a tool's `model` parameter.
    pub name: String,
    /// `checkpoint`, `lora`, `upscale_model`, `vae`, `diffusion_model`.
    pub kind: String,
    /// What to show people.
    pub label: String,
    /// `SD1.5`, `SDXL`, `FLUX`, …, or null when not known.
    #[schema(required = true)]
    pub base_model: Option<String>,
    /// The default of its base model (offered first).
    pub default: bool,
    /// Multiplies the price of a job run with it.
    pub price_multiplier: f64,
    /// How many backends that are up have it.
    pub backends: usize,
    /// Administrators only: hidden from members (always false for members, who never see hidden models).
    pub hidden: bool,
}

/// The model list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Models offered now (administrators also see hidden ones and ones on no backend that is up), by kind and name.
    pub models: Vec<ModelEntry>,
}

/// The models the backends offer now: what a tool's `model` input takes.
#[utoipa::path(get, path = "/api/v1/models", tag = "tools",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn list_models(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<ModelList>> {
    let all = station.models_cached().await.map_err(ApiError::from)?;
    let admin = a.is_admin();
    let models = all
        .iter()
        .filter(|m| admin || m.offered())
        .map(|m| ModelEntry {
            name: m.name.clone(),
            kind: m.kind.clone(),
            label: m.label.clone(),
            base_model: m.base_model.clone(),
            default: m.default,
            price_multiplier: m.price_multiplier,
            backends: m.backends.len(),
            hidden: m.hidden,
        })
        .collect();
    Ok(Json(ModelList { models }))
}
