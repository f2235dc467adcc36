//! Spells (saved chains of tools) and casts (runs of them): translation
//! only; validation, visibility, pricing and advancing are the core's
//! (`station_core::spells`).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};
use station_core::Station;
use station_core::spells::{CastError, CastRequest, CastView, Spell, SpellError, SpellSpec};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody, FieldIssue, object, optional_bool, optional_object, required_str};
use crate::Caller;
use crate::extract::Path;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(list_spells, create_spell))
        .routes(routes!(preview_spell))
        .routes(routes!(show_spell))
        .routes(routes!(list_casts, create_cast))
        .routes(routes!(show_cast))
        .routes(routes!(cancel_cast))
}

/// `POST /api/v1/spells`: a spell as written.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "slug": "big-dream", "name": "Big dream", "visibility": "public",
    "steps": [
        {"tool": "dream", "inputs_from": {"prompt": "input.prompt"}},
        {"tool": "resize", "params": {"scale": 2}, "inputs_from": {"image": "step1.output[0]"}}
    ],
    "inputs": {"prompt": {"default": "a lighthouse at dusk"}}
}))]
pub struct CreateSpell {
    /// Unique short name, what people cast it by: 2–48 of a-z, 0-9 and -.
    slug: String,
    /// Display name.
    name: String,
    /// What it does.
    description: Option<String>,
    /// `private` (default), `unlisted` (anyone with the slug) or `public` (listed).
    #[schema(value_type = Option<String>)]
    visibility: Option<String>,
    /// The tools, run in order.
    steps: Vec<CreateStep>,
    /// Exposed inputs' defaults and descriptions by name; every `input.NAME`
    /// a step maps is exposed whether declared here or not.
    #[schema(value_type = Option<Object>)]
    inputs: Option<Map<String, Value>>,
}

/// One step of a spell to save.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct CreateStep {
    /// Tool id or command.
    tool: String,
    /// Fixed parameter values.
    #[schema(value_type = Option<Object>)]
    params: Option<Map<String, Value>>,
    /// Parameters filled when cast: `"step1.output[0]"` (an earlier step's
    /// output, steps counted from 1) or `"input.NAME"` (an exposed input).
    #[schema(value_type = Option<Object>)]
    inputs_from: Option<Map<String, Value>>,
}

/// One step of a spell.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepBody {
    /// Tool id or command.
    pub tool: String,
    /// Fixed parameter values.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// Parameters filled when cast: `"step1.output[0]"` (an earlier step's
    /// output, steps counted from 1) or `"input.NAME"` (an exposed input).
    #[schema(value_type = Object)]
    pub inputs_from: Map<String, Value>,
}

/// An input a caster fills in, derived from the tool inputs it feeds.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpellInput {
    /// Name (a key of `inputs` when casting).
    pub name: String,
    /// Type: text, integer, number, boolean, enum, seed, image, checkpoint, model.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether a cast must give it.
    pub required: bool,
    /// Used when a cast does not give it.
    #[schema(value_type = Option<Object>)]
    pub default: Option<Value>,
    /// Help text.
    pub description: String,
    /// Smallest value (numbers).
    pub min: Option<f64>,
    /// Largest value (numbers).
    pub max: Option<f64>,
    /// Allowed values (enums).
    pub choices: Option<Vec<String>>,
    /// The steps and parameters it feeds (`step1.prompt`).
    pub feeds: Vec<String>,
}

impl From<station_core::spells::ExposedInput> for SpellInput {
    fn from(i: station_core::spells::ExposedInput) -> SpellInput {
        SpellInput {
            name: i.name,
            kind: i.def.kind.as_str().into(),
            required: i.def.required,
            default: i.def.default,
            description: i.def.description,
            min: i.def.min,
            max: i.def.max,
            choices: i.def.choices,
            feeds: i.feeds,
        }
    }
}

/// `POST /api/v1/spells/preview`: what a cast of a draft would ask for.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpellPreview {
    /// The inputs a cast would take, in the order the form shows them (as
    /// far as they can be derived while the draft has problems).
    pub inputs: Vec<SpellInput>,
    /// Every problem a save would answer now, each naming its step and field.
    pub problems: Vec<FieldIssue>,
}

/// A spell.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpellBody {
    /// Id.
    pub id: String,
    /// Slug.
    pub slug: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The owner's account id.
    pub owner_id: String,
    /// `private`, `unlisted` or `public`.
    pub visibility: String,
    /// Steps in order.
    pub steps: Vec<StepBody>,
    /// What a caster fills in.
    pub inputs: Vec<SpellInput>,
    /// Why it cannot be cast now (a tool changed incompatibly), if so.
    pub broken: Option<String>,
    /// Times it was cast.
    pub casts: i64,
    /// When created (Unix ms).
    pub created_at: i64,
}

impl From<Spell> for SpellBody {
    fn from(s: Spell) -> SpellBody {
        SpellBody {
            id: s.id,
            slug: s.slug,
            name: s.name,
            description: s.description,
            owner_id: s.owner_id,
            visibility: s.visibility.as_str().into(),
            steps: s
                .steps
                .into_iter()
                .map(|st| StepBody {
                    tool: st.tool,
                    params: st.params,
                    inputs_from: st.inputs_from.into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
                })
                .collect(),
            inputs: s.inputs.into_iter().map(SpellInput::from).collect(),
            broken: s.broken,
            casts: s.casts,
            created_at: s.created_at,
        }
    }
}

/// Spells you can cast.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpellList {
    /// Yours and every public one, most cast first.
    pub spells: Vec<SpellBody>,
}

/// `POST /api/v1/casts`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"spell": "big-dream", "inputs": {"prompt": "a red fox in snow"}}))]
pub struct CreateCast {
    /// Spell slug or id.
    spell: String,
    /// Values of the spell's inputs by name.
    #[schema(value_type = Option<Object>)]
    inputs: Option<Map<String, Value>>,
    /// You have seen the total price (GET the spell, or a 409
    /// `confirmation_required`) and agree.
    confirmed: Option<bool>,
    /// An http(s) URL that is sent the cast's end (`cast.succeeded`,
    /// `cast.failed`, `cast.cancelled`) as a signed webhook event; signed
    /// with your callback secret (GET /api/v1/account/webhooks/callback-secret).
    #[schema(max_length = 2000)]
    callback_url: Option<String>,
}

/// One step of a cast.
#[derive(Debug, Serialize, ToSchema)]
pub struct CastStepBody {
    /// 1-based position.
    pub step: usize,
    /// Tool id.
    pub tool_id: String,
    /// Tool name.
    pub tool_name: String,
    /// Its generation (GET /api/v1/generations/{id}).
    pub job_id: String,
    /// `waiting` (for the step before), or the generation's status.
    pub status: String,
    /// 0..1.
    pub progress: f64,
    /// Output media ids, once it succeeded.
    pub outputs: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A cast: one run of a spell.
#[derive(Debug, Serialize, ToSchema)]
pub struct CastBody {
    /// Id.
    pub id: String,
    /// The spell's slug.
    pub spell: String,
    /// The spell's name.
    pub spell_name: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// The step running or last run, 1-based.
    pub step: usize,
    /// Number of steps.
    pub steps_total: usize,
    /// Points held for the whole cast at cast time (each step settles its part).
    pub price: i64,
    /// Where it stands, e.g. "step 2 of 3: Upscale 40 %".
    pub progress_text: String,
    /// Overall progress, 0..1.
    pub progress: f64,
    /// The last step's output media ids, once it succeeded.
    pub outputs: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Each step.
    pub steps: Vec<CastStepBody>,
    /// When cast (Unix ms).
    pub created_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
}

impl From<CastView> for CastBody {
    fn from(c: CastView) -> CastBody {
        CastBody {
            id: c.id,
            spell: c.spell,
            spell_name: c.spell_name,
            status: c.status,
            step: c.step,
            steps_total: c.steps_total,
            price: c.price,
            progress_text: c.progress_text,
            progress: c.progress,
            outputs: c.outputs,
            error: c.error,
            steps: c
                .steps
                .into_iter()
                .map(|s| CastStepBody {
                    step: s.step,
                    tool_id: s.tool_id,
                    tool_name: s.tool_name,
                    job_id: s.job_id,
                    status: s.status,
                    progress: s.progress,
                    outputs: s.outputs,
                    error: s.error,
                })
                .collect(),
            created_at: c.created_at,
            finished_at: c.finished_at,
        }
    }
}

/// Your casts.
#[derive(Debug, Serialize, ToSchema)]
pub struct CastList {
    /// Newest first (at most 50).
    pub casts: Vec<CastBody>,
}

impl From<SpellError> for ApiError {
    fn from(e: SpellError) -> ApiError {
        match e {
            SpellError::Invalid(fields) => ApiError::invalid_fields(
                fields.into_iter().map(|f| FieldIssue { field: f.field, reason: f.reason }).collect(),
            ),
            SpellError::Storage(e) => ApiError::storage(e),
        }
    }
}

impl From<CastError> for ApiError {
    fn from(e: CastError) -> ApiError {
        match e {
            CastError::UnknownSpell(s) => spell_not_found(&s),
            e @ CastError::Broken { .. } => ApiError::new(StatusCode::CONFLICT, "spell_broken", e.to_string()),
            CastError::Submit(e) => e.into(),
        }
    }
}

fn spell_not_found(slug: &str) -> ApiError {
    ApiError::not_found("spell", slug, "GET /api/v1/spells lists the spells you can cast")
}

fn cast_not_found(id: &str) -> ApiError {
    ApiError::not_found("cast", id, "GET /api/v1/casts lists your casts")
}

/// Spells you can cast: yours and every public one, most cast first.
#[utoipa::path(get, path = "/api/v1/spells", tag = "spells",
    responses((status = 200, body = SpellList), (status = 401, body = ErrorBody)))]
async fn list_spells(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<SpellList>> {
    let spells = station.spells(&a).await?;
    Ok(Json(SpellList { spells: spells.into_iter().map(SpellBody::from).collect() }))
}

/// Saves a spell. Every problem is answered at once, each naming its step
/// and field (`step2.inputs_from.image`, `inputs.prompt`); nothing is stored then.
#[utoipa::path(post, path = "/api/v1/spells", tag = "spells",
    request_body = CreateSpell,
    responses((status = 201, body = SpellBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_spell(
    State(station): State<Station>,
    Caller(a): Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<SpellBody>)> {
    let obj = object(body, &["slug", "name", "description", "visibility", "steps", "inputs"])?;
    let spec: SpellSpec =
        serde_json::from_value(Value::Object(obj)).map_err(|e| ApiError::invalid("(body)", e.to_string()))?;
    let spell = station.create_spell(&a, spec).await?;
    Ok((StatusCode::CREATED, Json(spell.into())))
}

/// Previews a draft spell without saving it: the inputs a cast of it would
/// take (the form a caster gets) and every problem a save would answer.
#[utoipa::path(post, path = "/api/v1/spells/preview", tag = "spells",
    request_body = CreateSpell,
    responses((status = 200, body = SpellPreview), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn preview_spell(
    State(station): State<Station>,
    Caller(a): Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<SpellPreview>> {
    let obj = object(body, &["slug", "name", "description", "visibility", "steps", "inputs"])?;
    let spec: SpellSpec =
        serde_json::from_value(Value::Object(obj)).map_err(|e| ApiError::invalid("(body)", e.to_string()))?;
    let (inputs, problems) = station.preview_spell(&a, &spec).await?;
    Ok(Json(SpellPreview {
        inputs: inputs.into_iter().map(SpellInput::from).collect(),
        problems: problems.into_iter().map(|f| FieldIssue { field: f.field, reason: f.reason }).collect(),
    }))
}

/// A spell you may cast, by slug or id.
#[utoipa::path(get, path = "/api/v1/spells/{slug}", tag = "spells",
    params(("slug" = String, Path, description = "Spell slug or id")),
    responses((status = 200, body = SpellBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show_spell(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
) -> ApiResult<Json<SpellBody>> {
    let spell = station.spell(&a, &slug).await?.ok_or_else(|| spell_not_found(&slug))?;
    Ok(Json(spell.into()))
}

/// Casts a spell: every step is checked and priced, the whole price held,
/// and the first step queued; each next step is queued when the one before
/// it succeeded, with its outputs bound. Follow it with GET /api/v1/casts/{id}.
/// With an `Idempotency-Key` header, a repeat of the key answers the cast
/// the first request made (nothing cast or charged again).
#[utoipa::path(post, path = "/api/v1/casts", tag = "spells",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = r"^[\x21-\x7E]{1,200}$",
        description = "Makes a retried request safe: the same key answers the first cast")),
    request_body = CreateCast,
    responses((status = 201, body = CastBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 402, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Confirmation required, or the spell is broken"),
        (status = 429, body = ErrorBody)))]
async fn create_cast(
    State(station): State<Station>,
    Caller(a): Caller,
    headers: axum::http::HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CastBody>)> {
    let obj = object(body, &["spell", "inputs", "confirmed", "callback_url"])?;
    let req = CastRequest {
        spell: required_str(&obj, "spell", "the slug of the spell to cast")?,
        inputs: optional_object(&obj, "inputs")?,
        confirmed: optional_bool(&obj, "confirmed")?,
        idempotency_key: super::generations::idempotency_key(&headers, &a)?,
        callback_url: super::optional_str(&obj, "callback_url")?,
        ..Default::default()
    };
    let cast = station.cast(&a, req).await?;
    Ok((StatusCode::CREATED, Json(cast.into())))
}

/// Your casts, newest first.
#[utoipa::path(get, path = "/api/v1/casts", tag = "spells",
    responses((status = 200, body = CastList), (status = 401, body = ErrorBody)))]
async fn list_casts(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<CastList>> {
    let casts = station.casts(&a, 50).await?;
    Ok(Json(CastList { casts: casts.into_iter().map(CastBody::from).collect() }))
}

/// A cast with its steps and where it stands.
#[utoipa::path(get, path = "/api/v1/casts/{id}", tag = "spells",
    params(("id" = String, Path, description = "Cast id")),
    responses((status = 200, body = CastBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show_cast(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CastBody>> {
    let cast = station.cast_view(&a, &id).await?.ok_or_else(|| cast_not_found(&id))?;
    Ok(Json(cast.into()))
}

/// Cancels a cast: the running step as a generation's cancel does, the
/// waiting ones at once with their points returned.
#[utoipa::path(post, path = "/api/v1/casts/{id}/cancel", tag = "spells",
    params(("id" = String, Path, description = "Cast id")),
    responses((status = 200, body = CastBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn cancel_cast(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CastBody>> {
    let cast = station.cancel_cast(&a, &id).await?.ok_or_else(|| cast_not_found(&id))?;
    Ok(Json(cast.into()))
}
