//! Generations: create (JSON, or multipart with the images in the same
//! request), list with filters and paging, read one with its queue position
//! and outputs, cancel, rerun with a new seed, rate, and hide.

use crate::extract::{Path, Query};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use station_core::tools::InputType;
use station_core::{AccountRow, GenerationFilter, JobRow, JobStatus, Station, SubmitRequest};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::media::{MediaInfo, check_upload};
use super::{ApiError, ApiResult, ErrorBody, Paging, object, optional_bool, optional_object, required_str};
use crate::Caller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(list_generations, create_generation))
        .routes(routes!(show_generation, hide_generation))
        .routes(routes!(cancel_generation))
        .routes(routes!(rerun_generation))
        .routes(routes!(rate_generation))
        .routes(routes!(download_generations))
}

/// A result image of a generation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutputRef {
    /// Media id.
    pub id: String,
    /// The reference to pass as an image parameter (`media:<id>`): "use as input".
    #[serde(rename = "ref")]
    pub reference: String,
    /// Download URL.
    pub url: String,
    /// Thumbnail URL (add `?size=N` for another size).
    pub thumbnail_url: String,
    /// Details (in single-generation answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaInfo>,
}

impl OutputRef {
    /// The reference for media `id`.
    pub fn new(id: &str) -> OutputRef {
        OutputRef {
            id: id.into(),
            reference: format!("media:{id}"),
            url: format!("/api/v1/media/{id}"),
            thumbnail_url: format!("/api/v1/media/{id}/thumbnail"),
            media: None,
        }
    }
}

/// Why a generation failed or was cancelled.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobErrorInfo {
    /// Stable code (`execution`, `timeout`, `cancelled`, …).
    #[schema(required = true)]
    pub code: Option<String>,
    /// What happened.
    #[schema(required = true)]
    pub message: Option<String>,
}

/// A generation (a job) as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Generation {
    /// Generation id (time-ordered).
    pub id: String,
    /// Tool id.
    pub tool: String,
    /// `queued`, `dispatched`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// The parameters it runs with (after defaults and saved settings; seeds resolved).
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// 0–1.
    pub progress: f64,
    /// Queued generations that start before this one (queued only).
    #[schema(required = true)]
    pub queue_position: Option<i64>,
    /// Estimated milliseconds until it finishes (queued or running; from recent runs).
    #[schema(required = true)]
    pub eta_ms: Option<i64>,
    /// Prompts ahead of it in the GPU backend's own queue while it waits
    /// there (status `dispatched`: sent to a backend that has not started
    /// it yet); null otherwise or when not known yet.
    #[schema(required = true)]
    pub backend_ahead: Option<i64>,
    /// Where it stands, in words for a person: "queued, 2 ahead", "waiting
    /// for a GPU (3 ahead)", "running 45 %", "done", "failed", "cancelled".
    pub status_text: String,
    /// Result images (succeeded only).
    pub outputs: Vec<OutputRef>,
    /// Failure or cancellation details.
    #[schema(required = true)]
    pub error: Option<JobErrorInfo>,
    /// A cancellation was asked for while it ran.
    pub cancel_requested: bool,
    /// Backend submissions so far.
    pub attempts: i64,
    /// Your rating, 1–5.
    #[schema(required = true)]
    pub rating: Option<i64>,
    /// Hidden from your history (DELETE).
    pub hidden: bool,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Started executing (Unix ms).
    #[schema(required = true)]
    pub started_at: Option<i64>,
    /// Finished (Unix ms).
    #[schema(required = true)]
    pub finished_at: Option<i64>,
    /// Live events of this generation (Server-Sent Events).
    pub events_url: String,
}

impl Generation {
    /// The API view of a job row.
    pub fn from_row(row: &JobRow, rating: Option<i64>, hidden: bool) -> Generation {
        let status = row.status();
        Generation {
            id: row.id.clone(),
            tool: row.tool_id.clone(),
            status: row.status.clone(),
            params: row.params_json(),
            progress: row.progress,
            queue_position: None,
            eta_ms: None,
            backend_ahead: (status == JobStatus::Dispatched).then_some(row.backend_ahead).flatten(),
            status_text: station_core::jobs::status_text(row, None),
            outputs: row.output_ids().iter().map(|id| OutputRef::new(id)).collect(),
            error: matches!(status, JobStatus::Failed | JobStatus::Cancelled)
                .then(|| JobErrorInfo { code: row.error_code.clone(), message: row.error.clone() }),
            cancel_requested: row.cancel_requested,
            attempts: row.attempts,
            rating,
            hidden,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            events_url: format!("/api/v1/generations/{}/events", row.id),
        }
    }
}

/// A page of generations.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationPage {
    /// Newest first.
    pub items: Vec<Generation>,
    /// Pass as `before` for the next page; absent on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// Filters for the generation list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GenerationQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Only this tool id.
    pub tool: Option<String>,
    /// Include hidden generations.
    pub include_hidden: Option<bool>,
    /// Only generations whose parameters contain this text, such as words
    /// of the prompt (case-insensitive; at most 200 characters are used).
    pub q: Option<String>,
    /// Only generations created at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only generations run with this model (its file name, as `GET /api/v1/models` lists it).
    pub model: Option<String>,
}

/// Which generations to download.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// Generation ids separated by commas (at most 100), all yours.
    pub ids: Option<String>,
}

/// `POST /api/v1/generations` as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documents the body; parsed field by field for precise errors
#[serde(deny_unknown_fields)] // as `object` refuses them
#[schema(example = json!({"tool": "resize", "params": {"image": "media:0123456789abcdef0123456789abcdef", "width": 512}}))]
pub struct CreateGeneration {
    /// Tool id or chat command.
    tool: String,
    /// Parameter values by input name; images as `media:<id>` of your uploads.
    #[schema(value_type = Option<Object>)]
    params: Option<Map<String, Value>>,
    /// You saw the price and agree (needed above your confirmation threshold).
    confirmed: Option<bool>,
    /// Scheduling priority (administrators only; others are capped at 0).
    priority: Option<i64>,
    /// An http(s) URL that is sent the generation's end (`generation.succeeded`,
    /// `generation.failed`, `generation.cancelled`) as a signed webhook event;
    /// signed with your callback secret (GET /api/v1/account/webhooks/callback-secret).
    #[schema(max_length = 2000)]
    callback_url: Option<String>,
}

/// `POST /api/v1/generations` as `multipart/form-data`: text parts `tool`,
/// `params` (a JSON object) and `confirmed`, plus one file part per image
/// input, named after the input.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documents the form
pub struct CreateGenerationForm {
    /// Tool id or chat command.
    tool: String,
    /// A JSON object of parameters.
    params: Option<String>,
    /// `true` to accept a price above your confirmation threshold.
    confirmed: Option<String>,
    /// An http(s) URL sent the generation's end as a signed webhook event.
    callback_url: Option<String>,
    /// An image file for the input named like the part (e.g. `image`).
    #[schema(value_type = String, format = Binary)]
    image: Option<Vec<u8>>,
}

/// `POST /api/v1/generations/{id}/rerun`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)] // as `object` refuses them
#[schema(example = json!({"params": {"width": 256}, "confirmed": true}))]
pub struct RerunRequest {
    /// Parameters to change from the original run (the seed is new unless given).
    #[schema(value_type = Option<Object>)]
    params: Option<Map<String, Value>>,
    /// Accept a price above your confirmation threshold.
    confirmed: Option<bool>,
}

/// `POST /api/v1/generations/{id}/rating`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)] // as `object` refuses them
#[schema(example = json!({"stars": 5}))]
pub struct RatingRequest {
    /// 1 to 5 stars.
    #[schema(minimum = 1, maximum = 5)]
    stars: i64,
}

/// The full view of one job: queue position, ETA, marks and output details.
pub async fn full_view(station: &Station, job_id: &str) -> ApiResult<Generation> {
    let status = station.job_status(job_id).await?.ok_or_else(|| not_found(job_id))?;
    view_of(station, status).await
}

/// [`full_view`] of a job `caller` may see (theirs, or any for an
/// admin), read once: another user's job is 404.
pub async fn owned_view(station: &Station, caller: &AccountRow, job_id: &str) -> ApiResult<Generation> {
    view_of(station, station.job_status_for(caller, job_id).await?).await
}

async fn view_of(station: &Station, status: station_core::JobStatusView) -> ApiResult<Generation> {
    let view = status.view;
    let mut g = Generation::from_row(&view.row, status.rating, status.hidden);
    g.queue_position = view.queue_position;
    g.eta_ms = view.eta_ms;
    g.status_text = view.status_text();
    let media = station.job_outputs(&view.row).await?;
    for out in &mut g.outputs {
        out.media = media.iter().find(|m| m.id == out.id).map(MediaInfo::from_row);
    }
    Ok(g)
}

/// The 404 for a generation the caller cannot see.
pub fn not_found(id: &str) -> ApiError {
    ApiError::not_found("generation", id, "GET /api/v1/generations lists yours")
}

async fn submit(station: &Station, caller: &AccountRow, req: SubmitRequest) -> ApiResult<Response> {
    let row = station.submit(caller, req).await?;
    created(station, &row.id).await
}

/// The 201 answer for generation `id` (also what a repeated key gets).
async fn created(station: &Station, id: &str) -> ApiResult<Response> {
    let g = full_view(station, id).await?;
    let location = format!("/api/v1/generations/{id}");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(g)).into_response())
}

/// The header naming a create or rerun, so a client retrying after a lost
/// answer gets the first generation instead of queuing (and paying) twice.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The caller's `Idempotency-Key` as the core's submission key. Keys are
/// scoped to the account, so two clients can never collide or probe each
/// other's keys.
pub(crate) fn idempotency_key(headers: &HeaderMap, caller: &AccountRow) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = value.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "expected 1 to 200 printable ASCII characters without spaces (a UUID is a good key)",
        ));
    }
    Ok(Some(format!("api:{}:{key}", caller.id)))
}

/// Starts a generation. Send JSON, or `multipart/form-data` with the image
/// files in the same request (each part named after its image input).
/// Answers 201 with the queued generation; prices above your threshold
/// need `confirmed` (409 `confirmation_required` says the price). With an
/// `Idempotency-Key` header, a repeat of the key answers the generation the
/// first request queued (201, nothing queued or charged again, its body not read).
#[utoipa::path(post, path = "/api/v1/generations", tag = "generations",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = r"^[\x21-\x7E]{1,200}$",
        description = "Your name for this request (1–200 printable ASCII characters, e.g. a UUID): a retry with the same key gets the first answer")),
    request_body(content(
        (CreateGeneration = "application/json"),
        (CreateGenerationForm = "multipart/form-data"))),
    responses(
        (status = 201, body = Generation, description = "Queued"),
        (status = 400, body = ErrorBody, description = "Invalid input, with a reason per field"),
        (status = 401, body = ErrorBody), (status = 402, body = ErrorBody, description = "Not enough points"),
        (status = 404, body = ErrorBody, description = "Unknown tool (or one you may not use)"),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "Confirmation required"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Rate limit or queued-jobs quota"),
        (status = 503, body = ErrorBody, description = "`busy`: busy decoding other images (media.decode_concurrency); `database_unavailable`: the database cannot be reached, nothing was queued. Both carry Retry-After")))]
async fn create_generation(State(station): State<Station>, Caller(a): Caller, req: Request) -> ApiResult<Response> {
    let key = idempotency_key(req.headers(), &a)?;
    if let Some(key) = &key
        && let Some(earlier) = station.job_by_idempotency_key(&a, key).await?
    {
        // Answered before the body is read: a repeated upload is not stored again.
        return created(&station, &earlier.id).await;
    }
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let req = if is_multipart {
        let form = Multipart::from_request(req, &station)
            .await
            .map_err(|e| super::media::not_multipart(&e, "send the form's parts with their boundary"))?;
        return create_from_form(&station, &a, form, key).await;
    } else {
        let body = <Json<Value> as FromRequest<Station>>::from_request(req, &station).await;
        let obj = object(body, &["tool", "params", "confirmed", "priority", "callback_url"])?;
        let priority = match obj.get("priority") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().ok_or_else(|| ApiError::invalid("priority", "expected a whole number"))?,
        };
        SubmitRequest {
            tool: required_str(&obj, "tool", "the tool id (GET /api/v1/tools)")?,
            params: optional_object(&obj, "params")?,
            confirmed: optional_bool(&obj, "confirmed")?,
            priority,
            idempotency_key: key,
            callback_url: super::optional_str(&obj, "callback_url")?,
            ..Default::default()
        }
    };
    submit(&station, &a, req).await
}

/// Creates a generation from a form. Every part is read and checked (images
/// decoded within the limits) and the submission is checked as a whole —
/// parameters, image references, confirmation, quota, points — before any
/// upload is stored, so a refused request stores nothing. Problems with
/// several fields are answered together; one problem keeps its own status
/// (415 for a file that is no image, 409 for an unconfirmed price, …).
async fn create_from_form(
    station: &Station,
    caller: &AccountRow,
    mut form: Multipart,
    key: Option<String>,
) -> ApiResult<Response> {
    let max = station.config.media.max_bytes;
    // A decoding slot before the body is read (see upload_media).
    let slot = station.media.upload_slot().await?;
    let mut tool = None;
    let mut params = Map::new();
    let mut confirmed = false;
    let mut callback_url = None;
    let mut files: Vec<(String, Vec<u8>)> = vec![];
    let bad = super::media::bad_form;
    let mut problems: Vec<ApiError> = vec![];
    let mut seen: Vec<String> = vec![];
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        // A part named twice (two `image` files, two `tool`s) is ambiguous:
        // refused before anything is read further or stored.
        if !name.is_empty() {
            if seen.contains(&name) {
                return Err(ApiError::invalid(name, "sent more than once; send each part once"));
            }
            seen.push(name.clone());
        }
        if field.file_name().is_some() {
            let most = station.config.media.max_upload_files;
            if files.len() as u64 >= most {
                let reason = format!("more than {most} files in one request (media.max_upload_files)");
                return Err(ApiError {
                    fields: vec![super::FieldIssue { field: name.clone(), reason: reason.clone() }],
                    ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("{name}: {reason}"))
                });
            }
            let mut bytes = vec![];
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                if (bytes.len() + chunk.len()) as u64 > max {
                    return Err(super::media::too_big(&name, max));
                }
                bytes.extend_from_slice(&chunk);
            }
            files.push((name, bytes));
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        match name.as_str() {
            "tool" => tool = Some(text.trim().to_string()),
            "params" if !text.trim().is_empty() => match serde_json::from_str(&text) {
                Ok(Value::Object(m)) => params.extend(m),
                _ => problems.push(ApiError::invalid("params", "expected a JSON object of parameter names to values")),
            },
            "params" => {}
            "confirmed" => confirmed = matches!(text.trim(), "true" | "1" | "on" | "yes"),
            "callback_url" => callback_url = Some(text.trim().to_string()),
            // A text part named after a parameter sets it (HTML forms).
            other if !other.is_empty() => {
                params.insert(other.to_string(), Value::String(text));
            }
            _ => problems.push(ApiError::invalid("(form)", "every part needs a name")),
        }
    }
    let def = match tool.filter(|t| !t.is_empty()) {
        None => {
            problems.push(ApiError::invalid("tool", "is required: the tool id (GET /api/v1/tools)"));
            None
        }
        Some(name) => {
            let def = station.find_tool(&name, caller);
            if def.is_none() {
                problems.push(ApiError::unknown_tool(&name));
            }
            def
        }
    };
    // Files: each for an image input of the tool, each a real image.
    let mut checked = vec![];
    for (name, bytes) in files {
        if let Some(def) = &def
            && !def.inputs.get(&name).is_some_and(|i| i.kind == InputType::Image)
        {
            let images: Vec<&str> =
                def.inputs.iter().filter(|(_, i)| i.kind == InputType::Image).map(|(n, _)| n.as_str()).collect();
            problems.push(ApiError::invalid(
                name,
                format!("not an image input of {}; its image inputs are: {}", def.id, images.join(", ")),
            ));
            continue;
        }
        let input = def.as_ref().and_then(|d| d.inputs.get(&name));
        match check_upload(station, &name, bytes, &slot, input).await {
            Ok(image) => checked.push((name, image)),
            Err(e) => problems.push(e),
        }
    }
    let Some(def) = def else { return Err(merge(problems)) };
    // Text parts arrive as strings; give them the input's JSON type.
    for (name, input) in &def.inputs {
        if let Some(Value::String(s)) = params.get(name) {
            let typed = station_core::tools::coerce_text(input, s);
            params.insert(name.clone(), typed);
        }
    }
    let req = SubmitRequest {
        tool: def.id.clone(),
        params,
        confirmed,
        idempotency_key: key,
        callback_url,
        ..Default::default()
    };
    if !problems.is_empty() {
        // Name every bad field at once: the parameters' problems too.
        let names: Vec<String> = checked.iter().map(|(n, _)| n.clone()).collect();
        if let Err(e @ station_core::SubmitError::Invalid(_)) =
            station.check_submit_with_uploads(caller, &req, &names).await
        {
            problems.push(e.into());
        }
        return Err(merge(problems));
    }
    let row = station.submit_with_uploads(caller, req, checked).await?;
    created(station, &row.id).await
}

/// One answer for the problems of a request, each field named once (the
/// first reason wins: a file that is no image is not also "required"): a
/// lone problem keeps its own status and code, several become one
/// `invalid_input` listing every field.
fn merge(problems: Vec<ApiError>) -> ApiError {
    let mut seen: Vec<String> = vec![];
    let mut kept: Vec<ApiError> = vec![];
    for mut p in problems {
        p.fields.retain(|f| !seen.contains(&f.field));
        if p.fields.is_empty() {
            continue;
        }
        seen.extend(p.fields.iter().map(|f| f.field.clone()));
        kept.push(p);
    }
    if kept.len() == 1 {
        return kept.remove(0);
    }
    ApiError::invalid_fields(kept.into_iter().flat_map(|p| p.fields).collect())
}

/// Your generations, newest first, filtered by status and tool; hidden ones
/// only with `include_hidden`.
#[utoipa::path(get, path = "/api/v1/generations", tag = "generations",
    params(GenerationQuery, Paging),
    responses((status = 200, body = GenerationPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_generations(
    State(station): State<Station>,
    Caller(a): Caller,
    Query(q): Query<GenerationQuery>,
    Query(page): Query<Paging>,
) -> ApiResult<Json<GenerationPage>> {
    let limit = page.limit()?;
    let status = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::invalid("status", "expected queued, dispatched, running, succeeded, failed or cancelled")
        })?),
    };
    let filter = GenerationFilter {
        status,
        tool_id: q.tool.filter(|t| !t.is_empty()),
        before_id: page.before.filter(|b| !b.is_empty()),
        include_hidden: q.include_hidden.unwrap_or(false),
        text: q.q,
        since: q.since,
        model: q.model.map(|m| m.trim().to_string()).filter(|m| !m.is_empty()),
        limit: i64::from(limit),
        ..Default::default()
    };
    let page = station.generations(&a, filter).await?;
    let items = page.items.iter().map(|r| Generation::from_row(&r.job, r.rating, false)).collect();
    Ok(Json(GenerationPage { items, next: page.next }))
}

/// One of your generations with its queue position, ETA and outputs.
#[utoipa::path(get, path = "/api/v1/generations/{id}", tag = "generations",
    params(("id" = String, Path, description = "Generation id")),
    responses((status = 200, body = Generation), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show_generation(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Generation>> {
    Ok(Json(owned_view(&station, &a, &id).await?))
}

/// Cancels a generation: a queued one at once (points returned), a running
/// one as soon as its backend stops (`cancel_requested`). 409 when it has
/// already finished.
#[utoipa::path(post, path = "/api/v1/generations/{id}/cancel", tag = "generations",
    params(("id" = String, Path, description = "Generation id")),
    responses((status = 200, body = Generation), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already finished")))]
async fn cancel_generation(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Generation>> {
    let job = station.job_for(&a, &id).await?;
    if job.status().is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_finished",
            format!("generation {id} already {}; nothing to cancel", job.status),
        ));
    }
    station.cancel(&a, &id).await?;
    Ok(Json(full_view(&station, &id).await?))
}

/// Runs a generation again with the same parameters and a new seed
/// (`params` overrides some). Answers 201 with the new generation; a
/// repeated `Idempotency-Key` answers the first rerun made with it.
#[utoipa::path(post, path = "/api/v1/generations/{id}/rerun", tag = "generations",
    params(("id" = String, Path, description = "Generation id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = r"^[\x21-\x7E]{1,200}$",
            description = "Your name for this request (1–200 printable ASCII characters): a retry with the same key gets the first answer")),
    request_body(content = Option<RerunRequest>, content_type = "application/json"),
    responses((status = 201, body = Generation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 402, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rerun_generation(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers, &a)?;
    let obj = match body {
        Err(JsonRejection::MissingJsonContentType(_)) => Map::new(),
        body => object(body, &["params", "confirmed"])?,
    };
    let mut req = station.rerun_request(&a, &id, optional_object(&obj, "params")?).await?;
    req.confirmed = optional_bool(&obj, "confirmed")?;
    req.idempotency_key = key;
    submit(&station, &a, req).await
}

/// Rates a generation 1–5 stars.
#[utoipa::path(post, path = "/api/v1/generations/{id}/rating", tag = "generations",
    params(("id" = String, Path, description = "Generation id")),
    request_body = RatingRequest,
    responses((status = 200, body = Generation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn rate_generation(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Generation>> {
    let obj = object(body, &["stars"])?;
    let stars = obj
        .get("stars")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::invalid("stars", "is required: a whole number from 1 to 5"))?;
    station.rate_job(&a, &id, stars).await?;
    Ok(Json(owned_view(&station, &a, &id).await?))
}

/// Hides a generation from your history (its images stay downloadable by id).
#[utoipa::path(delete, path = "/api/v1/generations/{id}", tag = "generations",
    params(("id" = String, Path, description = "Generation id")),
    responses((status = 204, description = "Hidden"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn hide_generation(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    station.hide_job(&a, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The images of some of your generations as one ZIP, streamed as it is
/// written: `TOOL-SHORTID-N.EXT` per image, in the order given, and
/// `metadata.json` with each image's prompt, parameters, model, LoRAs and
/// seed. At most 100 generations; any one that is not yours is 404.
#[utoipa::path(get, path = "/api/v1/generations/download", tag = "generations",
    params(DownloadQuery),
    responses((status = 200, description = "The ZIP", content_type = "application/zip"),
        (status = 400, body = ErrorBody, description = "No ids, more than 100, or nothing finished to download"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn download_generations(
    State(station): State<Station>,
    Caller(a): Caller,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    let ids: Vec<String> = q.ids.unwrap_or_default().split(',').map(str::to_string).collect();
    let zip = station.download_generations(&a, &ids).await.map_err(|e| match e {
        station_core::DownloadError::Invalid(reason) => ApiError::invalid("ids", reason),
        station_core::DownloadError::Access(e) => e.into(),
    })?;
    let chunks = futures::stream::unfold(zip.chunks, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut r = axum::body::Body::from_stream(chunks).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/zip"));
    h.insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("private, no-store"));
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{}\"", zip.file_name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}
