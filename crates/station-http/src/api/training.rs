//! LoRA training: datasets (images with captions), trainings (quote, start,
//! follow, cancel) and the file of a trained LoRA. Every rule is the core's
//! (`station_core::training`); this module translates.

use std::convert::Infallible;
use std::time::Duration;

use crate::extract::Path;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use station_core::training::{Dataset, TrainingError, TrainingQuote, TrainingRequest, TrainingView};
use station_core::{AccountRow, Station};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::media::{bad_form, check_upload, not_multipart, too_big};
use super::{ApiError, ApiResult, ErrorBody, object, optional_object, required_str};
use crate::Caller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(list_datasets, create_dataset))
        .routes(routes!(get_dataset, delete_dataset))
        .routes(routes!(add_image))
        .routes(routes!(set_caption))
        .routes(routes!(caption_status, start_captions))
        .routes(routes!(quote_training))
        .routes(routes!(list_trainings, create_training))
        .routes(routes!(get_training))
        .routes(routes!(cancel_training))
        .routes(routes!(training_events))
        .routes(routes!(lora_file))
}

impl From<TrainingError> for ApiError {
    fn from(e: TrainingError) -> ApiError {
        match e {
            TrainingError::Invalid { field, reason } => ApiError::invalid(field, reason),
            TrainingError::NotFound(what) => ApiError::new(StatusCode::NOT_FOUND, "not_found", what),
            TrainingError::Submit(e) => e.into(),
            TrainingError::Media(e) => e.into(),
            TrainingError::Lora(e) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            TrainingError::Storage(e) => ApiError::storage(e),
        }
    }
}

/// One image of a dataset.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetImageInfo {
    /// Slot, from 1.
    pub position: i64,
    /// The stored image (`GET /api/v1/media/{id}`).
    pub media: String,
    /// Its caption (with the trigger word).
    pub caption: String,
}

/// A dataset.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetInfo {
    /// Slug: how the dataset is named in URLs.
    pub slug: String,
    /// Name as given.
    pub name: String,
    /// Trigger word the captions and the trained LoRA carry.
    pub trigger_word: String,
    /// `draft` (too few images), `ready`, `locked` (being trained).
    pub status: String,
    /// Images, in slot order (absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<DatasetImageInfo>>,
    /// Fewest images a training needs.
    pub min_images: u64,
    /// Most images a dataset holds.
    pub max_images: u64,
    /// Created (Unix ms).
    pub created_at: i64,
}

impl DatasetInfo {
    fn from_dataset(d: Dataset) -> DatasetInfo {
        DatasetInfo {
            slug: d.row.slug,
            name: d.row.name,
            trigger_word: d.row.trigger_word,
            status: d.row.status,
            images: Some(
                d.images
                    .into_iter()
                    .map(|i| DatasetImageInfo { position: i.position, media: i.media_id, caption: i.caption })
                    .collect(),
            ),
            min_images: d.min_images,
            max_images: d.max_images,
            created_at: d.row.created_at,
        }
    }
}

/// `POST /api/v1/datasets`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Tom Cat"}))]
pub struct CreateDataset {
    /// Name (1–80 characters); its slug names the dataset and the LoRA.
    name: String,
    /// One word; default: the slug of the name.
    trigger_word: Option<String>,
}

/// Your datasets, newest first.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "training",
    responses((status = 200, body = Vec<DatasetInfo>), (status = 401, body = ErrorBody)))]
async fn list_datasets(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<Vec<DatasetInfo>>> {
    let (min, max) = (station.config.training.min_images, station.config.training.max_images);
    let rows = station.datasets(&a).await?;
    Ok(Json(
        rows.into_iter()
            .map(|d| DatasetInfo {
                slug: d.slug,
                name: d.name,
                trigger_word: d.trigger_word,
                status: d.status,
                images: None,
                min_images: min,
                max_images: max,
                created_at: d.created_at,
            })
            .collect(),
    ))
}

/// Creates an empty dataset.
#[utoipa::path(post, path = "/api/v1/datasets", tag = "training", request_body = CreateDataset,
    responses((status = 201, body = DatasetInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_dataset(
    State(station): State<Station>,
    Caller(a): Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<DatasetInfo>)> {
    let obj = object(body, &["name", "trigger_word"])?;
    let name = required_str(&obj, "name", "the dataset's name")?;
    let trigger = match obj.get("trigger_word") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::invalid("trigger_word", "expected a string")),
    };
    let d = station.create_dataset(&a, &name, trigger.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(DatasetInfo::from_dataset(d))))
}

/// One of your datasets with its images and captions.
#[utoipa::path(get, path = "/api/v1/datasets/{dataset}", tag = "training",
    params(("dataset" = String, Path, description = "Dataset slug")),
    responses((status = 200, body = DatasetInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_dataset(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
) -> ApiResult<Json<DatasetInfo>> {
    Ok(Json(DatasetInfo::from_dataset(station.dataset(&a, &slug).await?)))
}

/// Deletes (archives) a dataset that is not being trained.
#[utoipa::path(delete, path = "/api/v1/datasets/{dataset}", tag = "training",
    params(("dataset" = String, Path, description = "Dataset slug")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn delete_dataset(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
) -> ApiResult<StatusCode> {
    station.delete_dataset(&a, &slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The image form: a `file` part and an optional `caption` part.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ImageForm {
    /// A PNG, JPEG, WebP or GIF image.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Its caption; the trigger word is put in front when it lacks it.
    caption: Option<String>,
}

/// Adds an image (checked like every upload) with its caption into the
/// dataset's next slot. A second copy of an image already in the dataset is refused.
#[utoipa::path(post, path = "/api/v1/datasets/{dataset}/images", tag = "training",
    params(("dataset" = String, Path, description = "Dataset slug")),
    request_body(content = ImageForm, content_type = "multipart/form-data"),
    responses((status = 201, body = DatasetImageInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn add_image(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<(StatusCode, Json<DatasetImageInfo>)> {
    let mut form = form.map_err(|e| not_multipart(&e, "send multipart/form-data with `file` and `caption` parts"))?;
    let max = station.config.media.max_bytes;
    let slot = station.media.upload_slot().await?;
    let mut file = None;
    let mut caption = String::new();
    while let Some(mut field) = form.next_field().await.map_err(bad_form)? {
        match field.name() {
            Some("file") => {
                let mut bytes = vec![];
                while let Some(chunk) = field.chunk().await.map_err(bad_form)? {
                    if (bytes.len() + chunk.len()) as u64 > max {
                        return Err(too_big("file", max));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                file = Some(bytes);
            }
            Some("caption") => caption = field.text().await.map_err(bad_form)?,
            _ => {}
        }
    }
    let bytes =
        file.ok_or_else(|| ApiError::invalid("file", "is required: a multipart part named `file` holding the image"))?;
    let checked = check_upload(&station, "file", bytes, &slot, None).await?;
    drop(slot);
    let row = station.add_dataset_image_checked(&a, &slug, checked, &caption).await?;
    Ok((
        StatusCode::CREATED,
        Json(DatasetImageInfo { position: row.position, media: row.media_id, caption: row.caption }),
    ))
}

/// `PUT /api/v1/datasets/{dataset}/images/{position}`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"caption": "tom-cat asleep on a sofa"}))]
pub struct SetCaption {
    /// The caption; the trigger word is put in front when it lacks it.
    caption: String,
}

/// Changes one image's caption.
#[utoipa::path(put, path = "/api/v1/datasets/{dataset}/images/{position}", tag = "training",
    params(("dataset" = String, Path, description = "Dataset slug"), ("position" = i64, Path, description = "Slot")),
    request_body = SetCaption,
    responses((status = 200, body = DatasetImageInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn set_caption(
    State(station): State<Station>,
    Caller(a): Caller,
    Path((slug, position)): Path<(String, i64)>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<DatasetImageInfo>> {
    let obj = object(body, &["caption"])?;
    let caption = match obj.get("caption") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ApiError::invalid("caption", "is required: the caption text")),
    };
    let caption = station.set_dataset_caption(&a, &slug, position, &caption).await?;
    let d = station.dataset(&a, &slug).await?;
    let media = d.images.iter().find(|i| i.position == position).map(|i| i.media_id.clone()).unwrap_or_default();
    Ok(Json(DatasetImageInfo { position, media, caption }))
}

/// One image of a captioning run.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaptionItemInfo {
    /// The image's slot (null when it left the dataset since).
    #[schema(required = true)]
    pub position: Option<i64>,
    /// `pending`, `applied`, `kept` (a caption was there, or was written
    /// meanwhile), `failed` or `cancelled`.
    pub status: String,
    /// The caption the tool wrote, once it did.
    #[schema(required = true)]
    pub caption: Option<String>,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// Progress of its job, 0–1.
    pub progress: f64,
}

/// A dataset's captioning run (automatic captions by the caption tool).
#[derive(Debug, Serialize, ToSchema)]
pub struct CaptionRunInfo {
    /// Images the run captions.
    pub images: usize,
    /// Of those, how many have ended.
    pub done: usize,
    /// Captions written.
    pub applied: usize,
    /// Captions kept as they were.
    pub kept: usize,
    /// Images whose caption job failed or was cancelled.
    pub failed: usize,
    /// Some caption jobs are still queued or running.
    pub running: bool,
    /// Progress of the run, 0–1.
    pub progress: f64,
    /// Points held for the run (only in the answer that starts it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<i64>,
    /// The run in words.
    pub summary: String,
    /// Every image of the run.
    pub items: Vec<CaptionItemInfo>,
}

impl CaptionRunInfo {
    fn from_run(r: station_core::captions::CaptionRun) -> CaptionRunInfo {
        CaptionRunInfo {
            summary: r.summary(),
            images: r.images,
            done: r.done,
            applied: r.applied,
            kept: r.kept,
            failed: r.failed,
            running: r.running,
            progress: r.progress,
            price: r.price,
            items: r
                .items
                .into_iter()
                .map(|i| CaptionItemInfo {
                    position: i.position,
                    status: i.status,
                    caption: i.caption,
                    error: i.error,
                    progress: i.progress,
                })
                .collect(),
        }
    }
}

/// `POST /api/v1/datasets/{dataset}/captions`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"overwrite": false}))]
pub struct StartCaptions {
    /// Write every image's caption again (default: only empty ones — those
    /// that are no more than the trigger word).
    overwrite: Option<bool>,
}

/// The dataset's latest captioning run: progress and what each image got.
#[utoipa::path(get, path = "/api/v1/datasets/{dataset}/captions", tag = "training",
    params(("dataset" = String, Path, description = "Dataset slug")),
    responses((status = 200, body = CaptionRunInfo), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such dataset, or its captions were never written by the tool")))]
async fn caption_status(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
) -> ApiResult<Json<CaptionRunInfo>> {
    match station.caption_run(&a, &slug).await? {
        Some(run) => Ok(Json(CaptionRunInfo::from_run(run))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the captions of {slug:?} were never written by the caption tool"),
        )),
    }
}

/// Writes the dataset's captions with the operator's caption tool: one job
/// per image whose caption is empty (all with `overwrite`), each paid like a
/// generation. Follow it with `GET` on the same path.
#[utoipa::path(post, path = "/api/v1/datasets/{dataset}/captions", tag = "training",
    params(("dataset" = String, Path, description = "Dataset slug")),
    request_body(content = StartCaptions, description = "Optional"),
    responses((status = 202, body = CaptionRunInfo), (status = 400, body = ErrorBody,
        description = "No caption tool is configured, no caption is left to write, the dataset is being trained or captioned"),
        (status = 401, body = ErrorBody), (status = 402, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn start_captions(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(slug): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CaptionRunInfo>)> {
    let obj = match body {
        Err(JsonRejection::MissingJsonContentType(_)) => Map::new(),
        body => object(body, &["overwrite"])?,
    };
    let overwrite = super::optional_bool(&obj, "overwrite")?;
    let run = station.caption_dataset(&a, &slug, overwrite).await?;
    Ok((StatusCode::ACCEPTED, Json(CaptionRunInfo::from_run(run))))
}

/// `POST /api/v1/trainings` and `/api/v1/trainings/quote`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"dataset": "tom-cat", "base_model": "SD1.5", "settings": {"steps": 1000}}))]
pub struct CreateTraining {
    /// The dataset's slug.
    dataset: String,
    /// `SD1.5`, … (default: the first training definition).
    base_model: Option<String>,
    /// `steps`, `learning_rate`, `rank`, `batch_size`, `seed`, `checkpoint`, `precision`;
    /// missing ones take the definition's defaults.
    #[schema(value_type = Object)]
    settings: Option<Map<String, Value>>,
    /// An http(s) URL that is sent the training's end (`training.succeeded`,
    /// `training.failed`, `training.cancelled`) as a signed webhook event;
    /// signed with your callback secret (GET /api/v1/account/webhooks/callback-secret).
    #[schema(max_length = 2000)]
    callback_url: Option<String>,
}

fn training_request(body: Result<Json<Value>, JsonRejection>) -> ApiResult<TrainingRequest> {
    let obj = object(body, &["dataset", "base_model", "settings", "callback_url"])?;
    let base_model = match obj.get("base_model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::invalid("base_model", "expected a string")),
    };
    Ok(TrainingRequest {
        dataset: required_str(&obj, "dataset", "the dataset's slug")?,
        base_model,
        settings: optional_object(&obj, "settings")?,
        callback_url: super::optional_str(&obj, "callback_url")?,
        ..Default::default()
    })
}

/// What a training would run with and cost.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteInfo {
    /// The training definition (`lora-sd15`).
    pub definition: String,
    /// Base model of the LoRA.
    pub base_model: String,
    /// Every setting the run would use (yours, else the defaults).
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// Training steps.
    pub steps: u64,
    /// Points held when it starts, captured when it succeeds (priced per
    /// second: the measured time's price, never more than this).
    pub price: i64,
    /// How the price was reached, for a person: "1000 steps at 0.1 point a
    /// step", or for per-second pricing "about 12 minutes at 2 points a
    /// second (1000 steps at 0.58 s a step, the median of the last 5 runs,
    /// plus 25 %); you pay for the time it takes, at most 1440 points".
    pub explanation: String,
    /// Priced per second: the run time the price holds for, in seconds.
    pub estimate_seconds: Option<u64>,
    /// Points you can spend now.
    pub available: i64,
    /// Images trained on.
    pub images: usize,
    /// Slug the LoRA will get.
    pub lora: String,
    /// Its trigger word.
    pub trigger_word: String,
}

impl From<TrainingQuote> for QuoteInfo {
    fn from(q: TrainingQuote) -> QuoteInfo {
        QuoteInfo {
            definition: q.definition,
            base_model: q.base_model,
            settings: q.settings,
            steps: q.steps,
            price: q.price,
            explanation: q.explanation,
            estimate_seconds: q.estimate.map(|e| e.seconds),
            available: q.available,
            images: q.images,
            lora: q.lora_slug,
            trigger_word: q.trigger_word,
        }
    }
}

/// What a training would run with and cost, and what you can spend; nothing is held.
#[utoipa::path(post, path = "/api/v1/trainings/quote", tag = "training", request_body = CreateTraining,
    responses((status = 200, body = QuoteInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn quote_training(
    State(station): State<Station>,
    Caller(a): Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<QuoteInfo>> {
    let req = training_request(body)?;
    Ok(Json(station.quote_training(&a, &req).await?.into()))
}

/// A training.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrainingInfo {
    /// Training id.
    pub id: String,
    /// `running` (its generation queued or running), `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// The generation running it (`GET /api/v1/generations/{id}`).
    pub generation: String,
    /// Its state in words ("queued", "running 45 %", …).
    pub status_text: String,
    /// 0 to 1.
    pub progress: f64,
    /// Points held, captured on success.
    pub price: i64,
    /// The settings used.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The LoRA's slug (once it succeeded, in the catalog).
    pub lora: String,
    /// The LoRA's file name on the backends, once it exists.
    #[schema(required = true)]
    pub lora_file: Option<String>,
    /// Started (Unix ms).
    pub created_at: i64,
    /// The percentages of a run its owner is told about (besides its start
    /// and end; the web app's live view lists them as they are reached).
    pub milestones: Vec<u8>,
    /// Sample images made with the LoRA once it is ready
    /// (`training.samples`): one generation each, with its images once done.
    pub samples: Vec<SampleInfo>,
}

/// One sample image generation of a trained LoRA.
#[derive(Debug, Serialize, ToSchema)]
pub struct SampleInfo {
    /// The generation (`GET /api/v1/generations/{id}`).
    pub generation: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// The prompt it drew (a caption of the dataset, with the trigger word).
    pub prompt: String,
    /// Its images (`GET /api/v1/media/{id}`), once it succeeded.
    pub images: Vec<String>,
}

impl TrainingInfo {
    fn from_view(v: TrainingView) -> TrainingInfo {
        let progress = v.progress();
        let status_text = match (v.row.status.as_str(), &v.job) {
            ("running", Some(j)) => station_core::jobs::status_text(j, None),
            (s, _) => s.to_owned(),
        };
        TrainingInfo {
            id: v.row.id,
            status: v.row.status,
            generation: v.row.job_id,
            status_text,
            progress,
            price: v.row.price,
            settings: serde_json::from_str(&v.row.settings).unwrap_or(Value::Null),
            error: v.row.error,
            lora: v.row.lora_slug,
            lora_file: v.lora.map(|l| l.filename),
            created_at: v.row.created_at,
            milestones: station_core::training::MILESTONES.to_vec(),
            samples: v
                .samples
                .iter()
                .map(|j| SampleInfo {
                    generation: j.id.clone(),
                    status: j.status.clone(),
                    prompt: serde_json::from_str::<Value>(&j.params)
                        .ok()
                        .and_then(|p| p["prompt"].as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    images: j.output_ids(),
                })
                .collect(),
        }
    }
}

/// Your trainings, newest first.
#[utoipa::path(get, path = "/api/v1/trainings", tag = "training",
    responses((status = 200, body = Vec<TrainingInfo>), (status = 401, body = ErrorBody)))]
async fn list_trainings(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<Vec<TrainingInfo>>> {
    Ok(Json(station.trainings(&a).await?.into_iter().map(TrainingInfo::from_view).collect()))
}

/// Starts a training: the quote is held and the dataset locked until it ends.
#[utoipa::path(post, path = "/api/v1/trainings", tag = "training", request_body = CreateTraining,
    responses((status = 201, body = TrainingInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 402, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn create_training(
    State(station): State<Station>,
    Caller(a): Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<TrainingInfo>)> {
    let req = training_request(body)?;
    let view = station.start_training(&a, &req).await?;
    Ok((StatusCode::CREATED, Json(TrainingInfo::from_view(view))))
}

async fn training_for(station: &Station, a: &AccountRow, id: &str) -> ApiResult<TrainingView> {
    Ok(station.training(a, id).await?)
}

/// One of your trainings.
#[utoipa::path(get, path = "/api/v1/trainings/{id}", tag = "training",
    params(("id" = String, Path, description = "Training id")),
    responses((status = 200, body = TrainingInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_training(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TrainingInfo>> {
    Ok(Json(TrainingInfo::from_view(training_for(&station, &a, &id).await?)))
}

/// Cancels a training: what was held is released.
#[utoipa::path(post, path = "/api/v1/trainings/{id}/cancel", tag = "training",
    params(("id" = String, Path, description = "Training id")),
    responses((status = 200, body = TrainingInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn cancel_training(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TrainingInfo>> {
    Ok(Json(TrainingInfo::from_view(station.cancel_training(&a, &id).await?)))
}

/// Live events of a training's generation (Server-Sent Events, as
/// `GET /api/v1/generations/{id}/events`: `status`, `progress` with the step,
/// `result`); the stream ends when the training's run does.
#[utoipa::path(get, path = "/api/v1/trainings/{id}/events", tag = "training",
    params(("id" = String, Path, description = "Training id")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn training_events(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let bus = station.bus.subscribe();
    let view = training_for(&station, &a, &id).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    // The stream starts from the training's job as read now (its owner's, as the training is).
    let first = station.job_status_for(&a, &view.row.job_id).await?.view;
    tokio::spawn(super::events::follow(station, view.row.job_id, bus, tx, first));
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Downloads the file of a LoRA you trained (or were granted).
#[utoipa::path(get, path = "/api/v1/loras/{slug}/file", tag = "training",
    params(("slug" = String, Path, description = "LoRA slug")),
    responses((status = 200, description = "The safetensors file", content_type = "application/octet-stream"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn lora_file(State(station): State<Station>, Caller(a): Caller, Path(slug): Path<String>) -> ApiResult<Response> {
    let (name, bytes) = station.lora_file(&a, &slug).await?;
    let mut r = Body::from(bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}
