//! `GET /api/v1/tools` and `GET /api/v1/tools/{id}`: what a caller may run,
//! with each tool's inputs as a form description and as JSON Schema.

use std::sync::Arc;

use crate::extract::Path;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use station_core::AccountRow;
use station_core::Station;
use station_core::tools::{InputDef, InputType, ToolDef};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody};
use crate::Caller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new().routes(routes!(list_tools)).routes(routes!(show_tool))
}

/// A tool in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolSummary {
    /// Stable id, used in `POST /api/v1/generations`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Chat command.
    pub command: String,
    /// What it does.
    pub description: String,
    /// `text-to-image`, `image-to-image`, `upscale`, …
    pub category: String,
    /// Which backend runs it (`comfyui`, `media`).
    pub service: String,
    /// Model family, if any.
    #[schema(required = true)]
    pub base_model: Option<String>,
    /// Points a run holds (after the operator's multiplier).
    pub price: i64,
    /// Whether the price is per second of run time (the hold is an estimate).
    pub per_second: bool,
    /// Names of the image inputs (uploads).
    pub image_inputs: Vec<String>,
}

/// The tool list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolList {
    /// Tools the caller may run, by name.
    pub tools: Vec<ToolSummary>,
}

/// One input of a tool, as a form field.
#[derive(Debug, Serialize, ToSchema)]
pub struct InputField {
    /// Parameter name.
    pub name: String,
    /// `text`, `integer`, `number`, `boolean`, `enum`, `seed`, `image`, `checkpoint`, `model`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Model inputs: the kind of model (`checkpoint`, `lora`, `upscale_model`, …).
    #[schema(required = true)]
    pub model_kind: Option<String>,
    /// Whether a run needs a value (a default counts).
    pub required: bool,
    /// Value used when none is given: a string, number or boolean, or null.
    #[schema(schema_with = scalar_or_null, required = true)]
    pub default: Option<Value>,
    /// Help text.
    pub description: String,
    /// Smallest value (numbers).
    #[schema(required = true)]
    pub min: Option<f64>,
    /// Largest value (numbers).
    #[schema(required = true)]
    pub max: Option<f64>,
    /// Step between values (numbers).
    #[schema(required = true)]
    pub step: Option<f64>,
    /// Allowed values (enums, checkpoints; for model inputs the models the
    /// backends offer now, the default first).
    #[schema(required = true)]
    pub choices: Option<Vec<String>>,
    /// What to show for each of `choices` (model inputs: `Label (SDXL)`).
    #[schema(required = true)]
    pub choice_labels: Option<Vec<String>>,
    /// Model inputs: the base model of each of `choices` (null when unknown),
    /// which picks the tool's `base_model_defaults`.
    #[schema(required = true)]
    pub choice_base_models: Option<Vec<Option<String>>>,
    /// Folded under "advanced" in forms.
    pub advanced: bool,
    /// The input a chat message's text or photo fills.
    pub primary: bool,
    /// Longest text, in characters.
    #[schema(required = true)]
    pub max_length: Option<usize>,
}

/// One tool with its inputs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolDetail {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: ToolSummary,
    /// Definition version.
    pub version: u32,
    /// Inputs in display order.
    pub inputs: Vec<InputField>,
    /// The parameters as a JSON Schema object (`media:<id>` strings for images).
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// Defaults per base model of the chosen model (`{"SDXL": {"width": 1024}}`),
    /// used instead of the inputs' defaults when a model of that base model is chosen.
    #[schema(value_type = Object)]
    pub base_model_defaults: Value,
}

/// Tools `account` may see in lists: public ones, and admin ones for admins.
pub fn listed(station: &Station, account: &AccountRow) -> Vec<Arc<ToolDef>> {
    station.listed_tools_for(account)
}

fn listed_for(station: &Station, admin: bool) -> Vec<Arc<ToolDef>> {
    station.listed_tools(admin)
}

fn text<T: Serialize>(v: T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The summary of a tool.
pub fn summary(station: &Station, t: &ToolDef) -> ToolSummary {
    ToolSummary {
        id: t.id.clone(),
        name: t.name.clone(),
        command: t.command.clone(),
        description: t.description.clone(),
        category: text(t.category),
        service: station_core::service_name(t.service).into(),
        base_model: t.base_model.clone(),
        price: station_core::points::price(&t.cost, station.config.points.multiplier),
        per_second: matches!(t.cost, station_core::tools::Cost::PerSecond { .. }),
        image_inputs: t.inputs.iter().filter(|(_, i)| i.kind == InputType::Image).map(|(n, _)| n.clone()).collect(),
    }
}

fn field(station: &Station, name: &str, i: &InputDef) -> InputField {
    let models = (i.kind == InputType::Model).then(|| station.model_choices(i));
    InputField {
        name: name.into(),
        kind: i.kind.as_str().into(),
        model_kind: i.model_kind.clone(),
        required: i.required,
        default: match &models {
            Some(m) => m.first().map(|m| Value::String(m.name.clone())),
            None => i.default.clone(),
        },
        description: i.description.clone(),
        min: i.min,
        max: i.max,
        step: i.step,
        choices: match &models {
            Some(m) => Some(m.iter().map(|m| m.name.clone()).collect()),
            None => i.choices.clone(),
        },
        choice_labels: models.as_ref().map(|m| m.iter().map(station_core::models::ModelInfo::display).collect()),
        choice_base_models: models.as_ref().map(|m| m.iter().map(|m| m.base_model.clone()).collect()),
        advanced: i.advanced,
        primary: i.primary,
        max_length: i.max_length,
    }
}

/// The schema of an input's default: a scalar (string, number, boolean) or null.
fn scalar_or_null() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    [Type::String, Type::Number, Type::Boolean, Type::Null]
        .into_iter()
        .fold(OneOfBuilder::new(), |b, t| b.item(ObjectBuilder::new().schema_type(t)))
        .build()
        .into()
}

/// A tool's parameters as JSON Schema (draft 2020-12 vocabulary); model
/// inputs list the models the backends offer now.
pub fn input_schema(station: &Station, t: &ToolDef) -> Value {
    let mut props = Map::new();
    let mut required = vec![];
    for (name, i) in &t.inputs {
        let mut s = match i.kind {
            InputType::Text => json!({"type": "string"}),
            InputType::Integer => json!({"type": "integer"}),
            InputType::Number => json!({"type": "number"}),
            InputType::Boolean => json!({"type": "boolean"}),
            InputType::Enum => json!({"type": "string", "enum": i.choices()}),
            InputType::Seed => json!({"type": "integer", "minimum": -1, "description": "-1 picks a random seed"}),
            InputType::Image => json!({"type": "string", "pattern": "^media:[0-9a-f]{32}$"}),
            InputType::Checkpoint => match &i.choices {
                Some(c) => json!({"type": "string", "enum": c}),
                None => json!({"type": "string"}),
            },
            InputType::Model => {
                let names: Vec<String> = station.model_choices(i).into_iter().map(|m| m.name).collect();
                let mut s = json!({"type": "string", "enum": names});
                if let Some(first) = names.first() {
                    s["default"] = json!(first);
                }
                s
            }
        };
        let o = s.as_object_mut().expect("object");
        if !i.description.is_empty() && !o.contains_key("description") {
            o.insert("description".into(), json!(i.description));
        }
        if let Some(d) = &i.default {
            o.insert("default".into(), d.clone());
        }
        if let Some(m) = i.min {
            o.insert("minimum".into(), json!(m));
        }
        if let Some(m) = i.max {
            o.insert("maximum".into(), json!(m));
        }
        if let (Some(step), InputType::Integer | InputType::Number) = (i.step, i.kind)
            && i.min.is_none_or(|m| m == 0.0)
        {
            o.insert("multipleOf".into(), json!(step));
        }
        if let Some(l) = i.max_length {
            o.insert("maxLength".into(), json!(l));
        }
        if i.required && i.default.is_none() {
            required.push(name.clone());
        }
        props.insert(name.clone(), s);
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// The detail of a tool.
pub fn detail(station: &Station, t: &ToolDef) -> ToolDetail {
    ToolDetail {
        summary: summary(station, t),
        version: t.version,
        inputs: t.inputs.iter().map(|(n, i)| field(station, n, i)).collect(),
        input_schema: input_schema(station, t),
        base_model_defaults: serde_json::to_value(&t.base_model_defaults).unwrap_or_default(),
    }
}

/// `GET /api/v1/tools` answers, serialised once per tool registry
/// generation (kept by [`station_core::tools::ToolRegistry::derived`]). The list
/// depends only on the registry, the caller's role (admin tools) and the
/// price multiplier (fixed for a Station), so there are two answers.
/// Tools with a model input are listed while a backend offers a model for
/// them, so the answers are rendered again when the models change.
struct ToolLists(std::sync::Mutex<Option<RenderedLists>>);

struct RenderedLists {
    models: Arc<Vec<station_core::models::ModelInfo>>,
    users: Bytes,
    admins: Bytes,
}

impl ToolLists {
    fn get(&self, station: &Station, admin: bool) -> Bytes {
        let models = station.models_snapshot();
        let mut slot = self.0.lock().expect("tool lists");
        let fresh = slot.as_ref().is_some_and(|r| Arc::ptr_eq(&r.models, &models) || *r.models == *models);
        if !fresh {
            let bytes = |admin| {
                let list = ToolList { tools: listed_for(station, admin).iter().map(|t| summary(station, t)).collect() };
                Bytes::from(serde_json::to_vec(&list).expect("the tool list serialises"))
            };
            *slot = Some(RenderedLists { models, users: bytes(false), admins: bytes(true) });
        }
        let r = slot.as_ref().expect("rendered");
        if admin { r.admins.clone() } else { r.users.clone() }
    }
}

/// The tools you may run.
#[utoipa::path(get, path = "/api/v1/tools", tag = "tools",
    responses((status = 200, body = ToolList), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn list_tools(State(station): State<Station>, Caller(a): Caller) -> Response {
    station.refresh_flags_if_stale().await;
    let body = if station.tool_flags_present() {
        // Feature flags make the list differ per account: rendered for this one.
        let list = ToolList { tools: listed(&station, &a).iter().map(|t| summary(&station, t)).collect() };
        Bytes::from(serde_json::to_vec(&list).expect("the tool list serialises"))
    } else {
        let lists = station.tools.derived(|| ToolLists(std::sync::Mutex::new(None)));
        lists.get(&station, a.is_admin())
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// One tool by id or chat command, with its inputs and their JSON Schema.
#[utoipa::path(get, path = "/api/v1/tools/{id}", tag = "tools",
    params(("id" = String, Path, description = "Tool id or chat command")),
    responses((status = 200, body = ToolDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show_tool(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ToolDetail>> {
    let t = station
        .find_tool(&id, &a)
        .ok_or_else(|| ApiError::not_found("tool", &id, "GET /api/v1/tools lists the tools you can use"))?;
    Ok(Json(detail(&station, &t)))
}
