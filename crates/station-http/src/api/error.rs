//! The one error shape of the API: `{"error": {"code", "message", "fields",
//! "details"?}}` with a stable `code`, a message that says what to do, and
//! per-field reasons for invalid input.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use station_core::{JobAccessError, MediaServiceError, RatingError, SettingsError, StoreError, SubmitError};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error's code, message and per-field reasons.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`invalid_input`, `unauthorized`, `not_found`, …).
    pub code: String,
    /// What happened and what to do, for people.
    pub message: String,
    /// Per-field reasons (empty unless the input was invalid).
    pub fields: Vec<FieldIssue>,
    /// Extra data for some codes (`confirmation_required`: price and threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// One bad field.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldIssue {
    /// The field: a body key, a query parameter, a multipart part or a tool parameter name.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

/// An API error, turned into a response with [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message for people.
    pub message: String,
    /// Per-field reasons.
    pub fields: Vec<FieldIssue>,
    /// Extra data.
    pub details: Option<Value>,
    /// Extra headers (`Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error without field details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), fields: vec![], details: None, headers: vec![] }
    }

    /// 400 `invalid_input` for one field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        let (field, reason) = (field.into(), reason.into());
        ApiError {
            message: format!("{field}: {reason}"),
            fields: vec![FieldIssue { field, reason }],
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", "")
        }
    }

    /// 404 `unknown_tool` naming the `tool` field: a tool that does not
    /// exist, or one the caller may not use (hidden and admin-only tools
    /// answer exactly the same to everyone else).
    pub fn unknown_tool(name: &str) -> ApiError {
        let reason = format!("unknown tool {name:?}; GET /api/v1/tools lists the tools you can use");
        ApiError {
            fields: vec![FieldIssue { field: "tool".into(), reason: reason.clone() }],
            ..ApiError::new(StatusCode::NOT_FOUND, "unknown_tool", format!("tool: {reason}"))
        }
    }

    /// 400 `invalid_input` listing every bad field.
    pub fn invalid_fields(fields: Vec<FieldIssue>) -> ApiError {
        let message = format!(
            "invalid input: {}",
            fields.iter().map(|f| format!("{}: {}", f.field, f.reason)).collect::<Vec<_>>().join("; ")
        );
        ApiError { fields, ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message) }
    }

    /// 404 `not_found` for `what` with `id` (also the answer for other people's things).
    pub fn not_found(what: &str, id: &str, hint: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} {id:?}; {hint}"))
    }

    /// 500 `internal`, logged with its cause (which the client does not see).
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "API request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; try again later")
    }

    /// 503 `database_unavailable` with `Retry-After: 5`: the database cannot
    /// be reached right now; nothing was written. Clients retry.
    pub fn database_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "Station cannot reach its database right now; nothing was queued. Try again in a few seconds.",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(DATABASE_RETRY_AFTER_SECS))
    }

    /// A storage failure: [`ApiError::database_unavailable`] when the
    /// database cannot be reached, else 500 `internal`.
    pub fn storage(e: StoreError) -> ApiError {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unreachable; answered 503");
            ApiError::database_unavailable()
        } else {
            ApiError::internal(e)
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }
}

/// `Retry-After` of a [`ApiError::database_unavailable`] answer, in seconds.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
                fields: self.fields,
                details: self.details,
            },
        };
        let mut r = (self.status, Json(body)).into_response();
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::storage(e)
    }
}

impl From<MediaServiceError> for ApiError {
    fn from(e: MediaServiceError) -> ApiError {
        match e {
            MediaServiceError::NotFound(id) => {
                ApiError::not_found("media", &id, "upload images with POST /api/v1/media")
            }
            e @ MediaServiceError::Rejected { .. } => super::media::upload_error("file", e),
            MediaServiceError::Storage(e) => ApiError::storage(e),
            MediaServiceError::Blob(e) => ApiError::internal(e),
            e @ MediaServiceError::Busy { retry_after_secs } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
                    .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
            }
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        let message = e.to_string();
        match e {
            SubmitError::UnknownTool(t) => ApiError::unknown_tool(&t),
            SubmitError::Invalid(fields) => ApiError::invalid_fields(
                fields.into_iter().map(|f| FieldIssue { field: f.field, reason: f.reason }).collect(),
            ),
            SubmitError::Suspended => ApiError::new(StatusCode::FORBIDDEN, "suspended", message),
            SubmitError::InsufficientPoints { needed, available } => ApiError {
                details: Some(serde_json::json!({"needed": needed, "available": available})),
                ..ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "insufficient_points",
                    format!("{message}; GET /api/v1/points shows your balance"),
                )
            },
            SubmitError::ConfirmationRequired { price, threshold } => ApiError {
                details: Some(serde_json::json!({"price": price, "threshold": threshold})),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "confirmation_required",
                    format!("{message} (send \"confirmed\": true to queue it)"),
                )
            },
            SubmitError::QuotaExceeded { retry_after_secs, .. } => {
                let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message);
                if let Some(s) = retry_after_secs {
                    err = err.with_header(header::RETRY_AFTER, HeaderValue::from(s));
                }
                err
            }
            SubmitError::Upload(e) => e.into(),
            SubmitError::Storage(e) => ApiError::storage(e),
        }
    }
}

impl From<JobAccessError> for ApiError {
    fn from(e: JobAccessError) -> ApiError {
        match e {
            JobAccessError::NotFound(id) => super::generations::not_found(&id),
            JobAccessError::Storage(e) => ApiError::storage(e),
        }
    }
}

impl From<RatingError> for ApiError {
    fn from(e: RatingError) -> ApiError {
        match e {
            RatingError::OutOfRange(_) => ApiError::invalid("stars", "is required: a whole number from 1 to 5"),
            RatingError::Access(e) => e.into(),
        }
    }
}

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> ApiError {
        match e {
            SettingsError::Invalid(fields) => ApiError::invalid_fields(
                fields.into_iter().map(|f| FieldIssue { field: f.field, reason: f.reason }).collect(),
            ),
            SettingsError::Storage(e) => ApiError::storage(e),
        }
    }
}

/// The result type of API handlers.
pub type ApiResult<T> = Result<T, ApiError>;
