//! Media: upload an image (checked, decoded within limits, and typed from its
//! content before anything is stored), download it, and thumbnails.

use crate::extract::{Path, Query};
use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use station_core::media::MediaBody;
use station_core::tools::InputDef;
use station_core::{AccountRow, CheckedImage, DecodeSlot, ImageProblem, MediaRow, MediaServiceError, Station};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody, FieldIssue};
use crate::Caller;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new().routes(routes!(upload_media)).routes(routes!(download_media)).routes(routes!(media_thumbnail))
}

/// A stored image.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MediaInfo {
    /// Media id (unguessable).
    pub id: String,
    /// The reference to pass as an image parameter.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Type detected from the content.
    pub mime: String,
    /// Bytes.
    pub size: i64,
    /// Pixels.
    pub width: i64,
    /// Pixels.
    pub height: i64,
    /// `input` (uploaded) or `output` (a result).
    pub kind: String,
    /// The generation that made it, for results.
    #[schema(required = true)]
    pub generation: Option<String>,
    /// Download URL.
    pub url: String,
    /// Thumbnail URL.
    pub thumbnail_url: String,
    /// Stored (Unix ms).
    pub created_at: i64,
}

impl MediaInfo {
    /// The API view of a media row.
    pub fn from_row(m: &MediaRow) -> MediaInfo {
        MediaInfo {
            id: m.id.clone(),
            reference: format!("media:{}", m.id),
            mime: m.mime.clone(),
            size: m.size,
            width: m.width,
            height: m.height,
            kind: m.kind.clone(),
            generation: m.job_id.clone(),
            url: format!("/api/v1/media/{}", m.id),
            thumbnail_url: format!("/api/v1/media/{}/thumbnail", m.id),
            created_at: m.created_at,
        }
    }
}

/// The upload form: one file part named `file`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documents the form
pub struct UploadForm {
    /// A PNG, JPEG, WebP or GIF image.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Thumbnail size.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThumbnailQuery {
    /// Longest side in pixels, 16–1024 (default 256).
    pub size: Option<u32>,
}

/// 413 `too_large` for an upload part over `max` bytes.
pub fn too_big(field: &str, max: u64) -> ApiError {
    let reason = format!("the file is over the {max}-byte limit (media.max_bytes); send a smaller image");
    ApiError {
        fields: vec![FieldIssue { field: field.into(), reason: reason.clone() }],
        ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("{field}: {reason}"))
    }
}

/// Checks an upload's header (type from content, size, dimensions) before
/// any decoding, then stores it as the caller's input media (which decodes
/// it fully within the same limits first). `field` names the part in errors.
pub async fn store_upload(
    station: &Station,
    caller: &AccountRow,
    field: &str,
    bytes: Vec<u8>,
    slot: &DecodeSlot,
) -> ApiResult<MediaRow> {
    let image = check_upload(station, field, bytes, slot, None).await?;
    Ok(station.media.put_checked(image, Some(&caller.id), None, "input").await?)
}

/// The checks of [`store_upload`] without storing
/// ([`station_core::MediaService::check_image_in`]), in the decoding `slot`
/// the request took before reading its body, for tool input `input` when
/// known (its frame limit). Errors name `field`: 415 for a type Station does
/// not take, 413 over the limits (bytes, pixels, frames), 400 for an empty
/// or broken image.
pub async fn check_upload(
    station: &Station,
    field: &str,
    bytes: Vec<u8>,
    slot: &DecodeSlot,
    input: Option<&InputDef>,
) -> ApiResult<CheckedImage> {
    station.media.check_image_in(bytes, slot, input).await.map_err(|e| upload_error(field, e))
}

/// 400 `invalid_multipart` for a body that is not a multipart form, naming
/// the `Content-Type` header; `hint` says what to send.
pub fn not_multipart(e: &axum::extract::multipart::MultipartRejection, hint: &str) -> ApiError {
    let reason = format!("expected multipart/form-data with a boundary: {}", e.body_text());
    ApiError {
        fields: vec![FieldIssue { field: "Content-Type".into(), reason }],
        ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_multipart", format!("{}; {hint}", e.body_text()))
    }
}

/// `invalid_multipart` (with the error's status) for a form that breaks
/// off or is malformed while it is read, naming the form.
pub fn bad_form(e: axum::extract::multipart::MultipartError) -> ApiError {
    let reason = format!("could not read the form: {}", e.body_text());
    ApiError {
        fields: vec![FieldIssue { field: "(form)".into(), reason: reason.clone() }],
        ..ApiError::new(e.status(), "invalid_multipart", reason)
    }
}

/// A refused upload as the API answers it, naming the form `field`.
pub fn upload_error(field: &str, e: MediaServiceError) -> ApiError {
    let MediaServiceError::Rejected { problem, reason } = e else { return e.into() };
    let (status, code) = match problem {
        ImageProblem::Unsupported => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media"),
        ImageProblem::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ImageProblem::Empty => return ApiError::invalid(field, reason),
        ImageProblem::Invalid => (StatusCode::BAD_REQUEST, "invalid_image"),
    };
    ApiError {
        fields: vec![FieldIssue { field: field.into(), reason: reason.clone() }],
        ..ApiError::new(status, code, format!("{field}: {reason}"))
    }
}

/// Uploads an image for use as a generation input (`ref`). The type comes
/// from the content; size, dimensions and a full decode are checked before
/// anything is stored.
#[utoipa::path(post, path = "/api/v1/media", tag = "media",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, body = MediaInfo), (status = 400, body = ErrorBody, description = "Not a valid image"),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody, description = "Too many bytes or pixels"),
        (status = 415, body = ErrorBody, description = "Not an image type Station accepts"),
        (status = 503, body = ErrorBody, description = "Busy decoding other images (media.decode_concurrency); see Retry-After")))]
async fn upload_media(
    State(station): State<Station>,
    Caller(a): Caller,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    let mut form = form.map_err(|e| not_multipart(&e, "send multipart/form-data with a `file` part"))?;
    let max = station.config.media.max_bytes;
    // A decoding slot before the body is read: uploads beyond
    // media.decode_concurrency wait without holding image bytes (503 busy
    // if none frees up in time).
    let slot = station.media.upload_slot().await?;
    let bad = bad_form;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        if field.name() != Some("file") {
            continue;
        }
        let mut bytes = vec![];
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            if (bytes.len() + chunk.len()) as u64 > max {
                return Err(too_big("file", max));
            }
            bytes.extend_from_slice(&chunk);
        }
        let row = store_upload(&station, &a, "file", bytes, &slot).await?;
        let location = format!("/api/v1/media/{}", row.id);
        return Ok(
            (StatusCode::CREATED, [(header::LOCATION, location)], Json(MediaInfo::from_row(&row))).into_response()
        );
    }
    Err(ApiError::invalid("file", "is required: a multipart part named `file` holding the image"))
}

fn image_response(bytes: Vec<u8>, mime: &str, filename: &str) -> Response {
    stream_response(Body::from(bytes), mime, filename)
}

fn stream_response(body: Body, mime: &str, filename: &str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    // Ids never change content: cache for a year, privately (ownership is checked).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// Downloads an image you own, with its content type.
#[utoipa::path(get, path = "/api/v1/media/{id}", tag = "media",
    params(("id" = String, Path, description = "Media id")),
    responses((status = 200, description = "The image", content_type = "image/*"),
        (status = 307, description = "With media on object storage and `media.presign_seconds` set: the image at a presigned URL (Location)"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn download_media(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (row, body) = station.media.download(&id, Some(&a)).await?;
    match body {
        // Object storage with `media.presign_seconds`: the client fetches
        // the bytes from the bucket. The URL expires, so the redirect itself
        // is never cached.
        MediaBody::Redirect(url) => {
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
            Ok(r)
        }
        MediaBody::Stream { len, chunks } => {
            let name = format!("{}.{}", row.id, station_core::media::extension_for_mime(&row.mime));
            let mut r = stream_response(Body::from_stream(chunks), &row.mime, &name);
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            Ok(r)
        }
    }
}

/// A JPEG thumbnail of an image you own (made once per size, then cached).
#[utoipa::path(get, path = "/api/v1/media/{id}/thumbnail", tag = "media",
    params(("id" = String, Path, description = "Media id"), ThumbnailQuery),
    responses((status = 200, description = "JPEG thumbnail", content_type = "image/jpeg"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn media_thumbnail(
    State(station): State<Station>,
    Caller(a): Caller,
    Path(id): Path<String>,
    Query(q): Query<ThumbnailQuery>,
) -> ApiResult<Response> {
    let size = q.size.unwrap_or(256);
    if !(16..=1024).contains(&size) {
        return Err(ApiError::invalid("size", format!("{size} is out of range; use 16 to 1024 pixels")));
    }
    let bytes = station.media.thumbnail(&id, Some(&a), size).await?;
    Ok(image_response(bytes, "image/jpeg", &format!("{id}-{size}.jpg")))
}
