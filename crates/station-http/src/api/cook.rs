//! Cook (issue 24, items 4–7): a collection's recipe, its cook (start,
//! status, pause, resume, stop), its pieces, review claims and decisions,
//! the cull and trait statistics. Every rule is the core's
//! ([`station_core::cook`]); this module translates.

use crate::extract::{Path, Query};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use station_core::Station;
use station_core::cook::{CookView, Decision, PieceView, TraitStats};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody, object};
use crate::Caller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(show_recipe, save_recipe))
        .routes(routes!(show_cook, start_cook))
        .routes(routes!(control_cook))
        .routes(routes!(list_pieces))
        .routes(routes!(claim_pieces))
        .routes(routes!(decide_piece))
        .routes(routes!(keep_piece))
        .routes(routes!(cull_cook))
        .routes(routes!(trait_stats))
        .routes(routes!(cook_quote))
        .routes(routes!(list_cooks))
        .routes(routes!(piece_thumbnail))
}

/// A recipe: the tool (or spell) every piece runs, its fixed parameters
/// (`[[Category]]` in any string is replaced by the piece's trait), the
/// supply, the trait tree, the NFT name and description templates and the
/// named reviewers. See docs/COLLECTIONS.md.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "tool": "txt2img",
    "params": {"prompt": "a cat wearing [[Hat]] under a [[Sky]] sky"},
    "supply": 100,
    "categories": [
        {"name": "Hat", "traits": [{"name": "Crown", "value": "a golden crown", "weight": 1},
                                   {"name": "Cap", "value": "a red cap", "weight": 4}]},
        {"name": "Sky", "traits": [{"name": "Night", "value": "starry night", "weight": 1}]},
        {"name": "Serial", "type": "range", "start": 1, "end": 100, "step": 1, "zero_pad": 3, "unique": true}
    ],
    "name_template": "{{collection}} #{{number}}",
    "description": "A cat in a {{Hat}}",
    "reviewers": []
}))]
pub struct RecipeBody {
    /// The tool every piece runs (or `spell`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The spell every piece casts (or `tool`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spell: Option<String>,
    /// Fixed parameters; `[[Category]]` in strings is replaced.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// How many pieces a cook makes (at most `collections.max_supply`).
    pub supply: i64,
    /// The trait tree: `{name, traits: [{name, value, weight}]}` or
    /// `{name, type: "range", start, end, step, zero_pad, unique}`.
    #[schema(value_type = Vec<Object>)]
    pub categories: Vec<Value>,
    /// Each piece's NFT name: `{{collection}}`, `{{number}}`, `{{Category}}`.
    pub name_template: String,
    /// Each piece's NFT description (same placeholders).
    pub description: String,
    /// Accounts who may review besides the owner (ids or identities like
    /// `telegram:123`; answered as account ids).
    pub reviewers: Vec<String>,
}

/// Where a cook stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cook {
    /// The collection.
    pub collection: String,
    /// `running`, `paused`, `stopped` or `done`.
    pub status: String,
    /// Why it paused or stopped by itself (not enough points, …).
    #[schema(required = true)]
    pub reason: Option<String>,
    /// The cook seed: with the recipe it reproduces every piece.
    pub seed: i64,
    /// Pieces to make.
    pub total: i64,
    /// Pieces made.
    pub done: i64,
    /// Pieces whose job failed.
    pub failed: i64,
    /// Pieces whose job is queued or running.
    pub in_flight: i64,
    /// Pieces not yet submitted.
    pub pending: i64,
    /// Pieces never made (stopped).
    pub stopped: i64,
    /// Accepted by review.
    pub accepted: i64,
    /// Rejected by review.
    pub rejected: i64,
    /// Accepted and kept by the cull.
    pub kept: i64,
    /// done / total, 0..1.
    pub progress: f64,
    /// For people: "cooking: 120 of 200 made, 4 in progress".
    pub progress_text: String,
    /// Started (Unix ms).
    pub created_at: i64,
}

impl From<CookView> for Cook {
    fn from(c: CookView) -> Cook {
        Cook {
            progress: if c.total > 0 { c.done as f64 / c.total as f64 } else { 0.0 },
            collection: c.collection_id,
            status: c.status,
            reason: c.reason,
            seed: c.seed,
            total: c.total,
            done: c.done,
            failed: c.failed,
            in_flight: c.in_flight,
            pending: c.pending,
            stopped: c.stopped,
            accepted: c.accepted,
            rejected: c.rejected,
            kept: c.kept,
            progress_text: c.progress_text,
            created_at: c.created_at,
        }
    }
}

/// One trait a piece drew.
#[derive(Debug, Serialize, ToSchema)]
pub struct PieceTrait {
    /// The category (the NFT attribute's `trait_type`).
    pub category: String,
    /// The trait's name (the attribute's `value`).
    pub name: String,
    /// What replaced `[[category]]`.
    pub value: String,
}

/// One piece of a cook.
#[derive(Debug, Serialize, ToSchema)]
pub struct Piece {
    /// Piece id.
    pub id: String,
    /// 1-based number.
    pub number: i64,
    /// Regenerations so far.
    pub attempt: i64,
    /// Its seed.
    pub seed: i64,
    /// The traits it drew.
    pub traits: Vec<PieceTrait>,
    /// The parameters its job runs with.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// `pending`, `submitted`, `succeeded`, `failed`, `stopped`.
    pub status: String,
    /// Its generation (or cast, for a spell).
    #[schema(required = true)]
    pub generation: Option<String>,
    /// Its image's media id.
    #[schema(required = true)]
    pub media: Option<String>,
    /// A thumbnail of its image.
    #[schema(required = true)]
    pub thumbnail_url: Option<String>,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// `unreviewed`, `accepted`, `rejected`.
    pub review: String,
    /// The reviewer holding it.
    #[schema(required = true)]
    pub claimed_by: Option<String>,
    /// Until then (Unix ms).
    #[schema(required = true)]
    pub claim_expires_at: Option<i64>,
    /// Kept by the cull.
    pub kept: bool,
}

impl From<PieceView> for Piece {
    fn from(p: PieceView) -> Piece {
        Piece {
            thumbnail_url: p
                .media_id
                .as_ref()
                .map(|_| format!("/api/v1/collections/{}/pieces/{}/thumbnail", p.collection_id, p.id)),
            id: p.id,
            number: p.number,
            attempt: p.attempt,
            seed: p.seed,
            traits: p
                .traits
                .into_iter()
                .map(|t| PieceTrait { category: t.category, name: t.name, value: t.value })
                .collect(),
            params: p.params,
            status: p.status,
            generation: p.job_id,
            media: p.media_id,
            error: p.error,
            review: p.review,
            claimed_by: p.claimed_by,
            claim_expires_at: p.claim_expires_at,
            kept: p.kept,
        }
    }
}

/// A list of pieces.
#[derive(Debug, Serialize, ToSchema)]
pub struct PieceList {
    /// By number.
    pub items: Vec<Piece>,
}

/// How often one trait occurs against its weight.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraitStat {
    /// The category.
    pub category: String,
    /// The trait.
    pub name: String,
    /// Its weight.
    pub weight: f64,
    /// The share its weight asks for.
    pub expected: f64,
    /// Pieces that have it.
    pub occurrences: i64,
    /// Their share of the pieces counted.
    pub share: f64,
}

/// Trait statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraitStatList {
    /// `made` (every piece made) or `kept` (accepted and kept).
    pub scope: String,
    /// Pieces counted.
    pub pieces: i64,
    /// Weighted traits in the recipe's order.
    pub items: Vec<TraitStat>,
}

impl From<TraitStats> for TraitStatList {
    fn from(s: TraitStats) -> TraitStatList {
        TraitStatList {
            scope: s.scope,
            pieces: s.pieces,
            items: s
                .traits
                .into_iter()
                .map(|t| TraitStat {
                    category: t.category,
                    name: t.name,
                    weight: t.weight,
                    expected: t.expected,
                    occurrences: t.occurrences,
                    share: t.share,
                })
                .collect(),
        }
    }
}

/// Starting a cook.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct StartCook {
    /// The cook seed (0 to 4294967295); random when absent. The same seed
    /// and recipe draw the same pieces.
    pub seed: Option<i64>,
}

/// Claiming pieces to review.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ClaimRequest {
    /// How many (1–50, default 10).
    pub count: Option<i64>,
}

/// A review decision.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct DecisionRequest {
    /// `accept`, `reject` or `regenerate`.
    pub decision: String,
}

/// Keeping or excluding an accepted piece.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct KeepRequest {
    /// True to keep, false to exclude.
    pub keep: bool,
}

/// Culling accepted pieces.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CullRequest {
    /// How many accepted pieces to keep.
    pub target: i64,
}

/// Which pieces trait statistics count.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Only accepted pieces the cull keeps (default: every piece made).
    pub kept: Option<bool>,
}

fn body_object(body: Result<Json<Value>, JsonRejection>, known: &[&str]) -> ApiResult<Map<String, Value>> {
    match body {
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(Map::new()),
        body => object(body, known),
    }
}

fn whole(obj: &Map<String, Value>, field: &str) -> ApiResult<Option<i64>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| ApiError::invalid(field, "expected a whole number")),
    }
}

fn recipe_body(r: &station_core::cook::Recipe) -> RecipeBody {
    let v = r.to_json();
    RecipeBody {
        tool: r.tool.clone(),
        spell: r.spell.clone(),
        params: r.params.clone(),
        supply: r.supply,
        categories: v["categories"].as_array().cloned().unwrap_or_default(),
        name_template: r.name_template.clone(),
        description: r.description.clone(),
        reviewers: r.reviewers.clone(),
    }
}

/// A collection's recipe (the owner and its reviewers).
#[utoipa::path(get, path = "/api/v1/collections/{id}/recipe", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    responses((status = 200, body = RecipeBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such collection, or it has no recipe")))]
async fn show_recipe(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RecipeBody>> {
    match station.recipe_of(&a, &id).await? {
        Some(r) => Ok(Json(recipe_body(&r))),
        None => Err(ApiError::not_found("recipe", &id, "PUT /api/v1/collections/{id}/recipe saves one")),
    }
}

/// Saves a collection's recipe (the owner): checked whole, every problem
/// named by field (`categories[1].traits[0].weight`, `params.prompt`,
/// `supply`, `tool`) before anything is stored.
#[utoipa::path(put, path = "/api/v1/collections/{id}/recipe", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body(content = RecipeBody, content_type = "application/json"),
    responses((status = 200, body = RecipeBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn save_recipe(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<RecipeBody>> {
    let obj = object(
        body,
        &["tool", "spell", "params", "supply", "categories", "name_template", "description", "reviewers"],
    )?;
    let r = station.save_recipe(&a, &id, &Value::Object(obj)).await?;
    Ok(Json(recipe_body(&r)))
}

/// Where the collection's cook stands (the owner and its reviewers).
#[utoipa::path(get, path = "/api/v1/collections/{id}/cook", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    responses((status = 200, body = Cook), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such collection, or it was never cooked")))]
async fn show_cook(State(station): State<Station>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult<Json<Cook>> {
    match station.cook_status(&a, &id).await? {
        Some(c) => Ok(Json(c.into())),
        None => Err(ApiError::not_found("cook", &id, "POST /api/v1/collections/{id}/cook starts one")),
    }
}

/// Starts cooking from the saved recipe (answers 201): every piece is drawn
/// and stored, then the workers make them, at most
/// `collections.max_in_flight` at a time, each charged once.
#[utoipa::path(post, path = "/api/v1/collections/{id}/cook", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body(content = Option<StartCook>, content_type = "application/json"),
    responses((status = 201, body = Cook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn start_cook(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Response> {
    let obj = body_object(body, &["seed"])?;
    let seed = whole(&obj, "seed")?;
    let c = station.start_cook(&a, &id, seed).await?;
    Ok((StatusCode::CREATED, Json(Cook::from(c))).into_response())
}

/// Pauses, resumes, stops or re-cooks the cook (the owner). Stopping
/// cancels the queued pieces' jobs (their points come back); made pieces
/// stay. Re-cooking a stopped (or finished) cook makes the pieces it left
/// unmade — stopped or failed — and keeps the rest.
#[utoipa::path(post, path = "/api/v1/collections/{id}/cook/{action}", tag = "collections",
    params(("id" = String, Path, description = "Collection id"),
        ("action" = String, Path, description = "`pause`, `resume`, `stop` or `recook` (a stopped or finished cook makes the pieces it left unmade)")),
    responses((status = 200, body = Cook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn control_cook(
    State(station): State<Station>,
    Caller(a): Caller,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Cook>> {
    Ok(Json(station.control_cook(&a, &id, &action).await?.into()))
}

/// Every piece of the cook, by number (the owner and its reviewers).
#[utoipa::path(get, path = "/api/v1/collections/{id}/pieces", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    responses((status = 200, body = PieceList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_pieces(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PieceList>> {
    let items = station.cook_pieces(&a, &id).await?.into_iter().map(Piece::from).collect();
    Ok(Json(PieceList { items }))
}

/// Claims made, unreviewed pieces to review for 5 minutes: no other
/// reviewer is given them meanwhile; the ones you hold come back too.
#[utoipa::path(post, path = "/api/v1/collections/{id}/review/claims", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body(content = Option<ClaimRequest>, content_type = "application/json"),
    responses((status = 200, body = PieceList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn claim_pieces(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<PieceList>> {
    let obj = body_object(body, &["count"])?;
    let count = whole(&obj, "count")?.unwrap_or(10);
    let items = station.claim_pieces(&a, &id, count).await?.into_iter().map(Piece::from).collect();
    Ok(Json(PieceList { items }))
}

/// Accepts, rejects or regenerates a piece (a reviewer holding its claim,
/// or the owner when no other reviewer holds it).
#[utoipa::path(post, path = "/api/v1/collections/{id}/pieces/{piece}/decision", tag = "collections",
    params(("id" = String, Path, description = "Collection id"), ("piece" = String, Path, description = "Piece id")),
    request_body(content = DecisionRequest, content_type = "application/json"),
    responses((status = 200, body = Piece), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn decide_piece(
    State(station): State<Station>,
    Caller(a): Caller,
    Path((id, piece)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Piece>> {
    let obj = object(body, &["decision"])?;
    let word = obj.get("decision").and_then(Value::as_str).unwrap_or("");
    let decision =
        Decision::parse(word).ok_or_else(|| ApiError::invalid("decision", "expected accept, reject or regenerate"))?;
    Ok(Json(station.review_piece(&a, &id, &piece, decision).await?.into()))
}

/// Keeps or excludes one accepted piece (the owner).
#[utoipa::path(post, path = "/api/v1/collections/{id}/pieces/{piece}/keep", tag = "collections",
    params(("id" = String, Path, description = "Collection id"), ("piece" = String, Path, description = "Piece id")),
    request_body(content = KeepRequest, content_type = "application/json"),
    responses((status = 200, body = Piece), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn keep_piece(
    State(station): State<Station>,
    Caller(a): Caller,
    Path((id, piece)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Piece>> {
    let obj = object(body, &["keep"])?;
    let keep =
        obj.get("keep").and_then(Value::as_bool).ok_or_else(|| ApiError::invalid("keep", "expected true or false"))?;
    Ok(Json(station.keep_piece(&a, &id, &piece, keep).await?.into()))
}

/// Culls the accepted pieces down to `target` (the owner): a sample drawn
/// from the cook seed is kept, the rest excluded from the export.
#[utoipa::path(post, path = "/api/v1/collections/{id}/cull", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body(content = CullRequest, content_type = "application/json"),
    responses((status = 200, body = Cook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn cull_cook(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Cook>> {
    let obj = object(body, &["target"])?;
    let target = whole(&obj, "target")?.ok_or_else(|| ApiError::invalid("target", "give how many pieces to keep"))?;
    Ok(Json(station.cull_cook(&a, &id, target).await?.into()))
}

/// How often each weighted trait occurs against its weight.
#[utoipa::path(get, path = "/api/v1/collections/{id}/stats", tag = "collections",
    params(("id" = String, Path, description = "Collection id"), StatsQuery),
    responses((status = 200, body = TraitStatList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn trait_stats(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Json<TraitStatList>> {
    Ok(Json(station.trait_stats(&a, &id, q.kept.unwrap_or(false)).await?.into()))
}

/// What cooking the saved recipe would cost.
#[derive(Debug, Serialize, ToSchema)]
pub struct CookQuoteBody {
    /// Pieces the recipe makes.
    pub supply: i64,
    /// Points per piece (`null` for a spell: each piece costs one cast).
    #[schema(required = true)]
    pub per_piece: Option<i64>,
    /// Points for the whole supply (`null` for a spell).
    #[schema(required = true)]
    pub total: Option<i64>,
    /// Points you can spend now.
    pub available: i64,
    /// For people: "100 pieces × 3 points = 300 points; you have 250 points …".
    pub text: String,
}

/// What cooking the collection's saved recipe would cost (the owner).
#[utoipa::path(get, path = "/api/v1/collections/{id}/recipe/quote", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    responses((status = 200, body = CookQuoteBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn cook_quote(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CookQuoteBody>> {
    let q = station.cook_quote(&a, &id).await?;
    Ok(Json(CookQuoteBody {
        supply: q.supply,
        per_piece: q.per_piece,
        total: q.total,
        available: q.available,
        text: q.text,
    }))
}

/// One of your cooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct CookSummary {
    /// The collection's id.
    pub id: String,
    /// The collection's name.
    pub name: String,
    /// Where its cook stands.
    pub cook: Cook,
}

/// Your cooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct CookList {
    /// Newest collection first.
    pub items: Vec<CookSummary>,
}

/// Your cooked collections with where each cook stands.
#[utoipa::path(get, path = "/api/v1/cooks", tag = "collections",
    responses((status = 200, body = CookList), (status = 401, body = ErrorBody)))]
async fn list_cooks(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<CookList>> {
    let items = station
        .cooks_of(&a)
        .await?
        .into_iter()
        .map(|(c, cook)| CookSummary {
            id: c.collection.id.clone(),
            name: c.collection.name.clone(),
            cook: cook.into(),
        })
        .collect();
    Ok(Json(CookList { items }))
}

/// Thumbnail size.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PieceThumbQuery {
    /// Longest side in pixels, 16–1024 (default 256).
    pub size: Option<u32>,
}

/// A JPEG thumbnail of a made piece (the owner and the named reviewers).
#[utoipa::path(get, path = "/api/v1/collections/{id}/pieces/{piece}/thumbnail", tag = "collections",
    params(("id" = String, Path, description = "Collection id"), ("piece" = String, Path, description = "Piece id"),
        PieceThumbQuery),
    responses((status = 200, description = "JPEG thumbnail", content_type = "image/jpeg"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn piece_thumbnail(
    State(station): State<Station>,
    Caller(a): Caller,
    Path((id, piece)): Path<(String, String)>,
    Query(q): Query<PieceThumbQuery>,
) -> ApiResult<Response> {
    let size = q.size.unwrap_or(256);
    if !(16..=1024).contains(&size) {
        return Err(ApiError::invalid("size", format!("{size} is out of range; use 16 to 1024 pixels")));
    }
    let (mime, bytes) = station.piece_image(&a, &id, &piece, Some(size)).await?;
    let mut r = bytes.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&mime) {
        r.headers_mut().insert(axum::http::header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("private, no-cache"));
    Ok(r)
}
