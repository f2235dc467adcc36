//! Extractors whose refusals are the API's error shape naming the field, in
//! place of axum's plain-text rejections: [`Query`] (`?limit=abc` → 400
//! `invalid_input` naming `limit`) and [`Path`] (a path segment that is not
//! UTF-8 once decoded → 400 naming the parameter). JSON bodies are read by
//! [`crate::api::object`], multipart forms by their handlers, both with the
//! same shape.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::api::ApiError;

/// The query string deserialised into `T`; a value that does not fit is
/// 400 `invalid_input` naming the parameter and what it expects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let inner = e.inner().to_string();
            let path = e.path().to_string();
            // A duplicate or missing parameter is reported at the top level with its name in backticks.
            let field = if path.is_empty() || path == "." {
                inner.split('`').nth(1).unwrap_or("(query)").to_string()
            } else {
                path
            };
            let value = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| *k == field).map(|(_, v)| v);
            ApiError::invalid(field, reason(&inner, value.as_deref()))
        })
    }
}

/// A person's reading of a deserialisation error.
fn reason(inner: &str, value: Option<&str>) -> String {
    let expected = if inner.contains("digit") || inner.contains("integer") || inner.contains("too large") {
        "expected a whole number"
    } else if inner.contains("float") {
        "expected a number"
    } else if inner.contains("`true` or `false`") {
        "expected true or false"
    } else if inner.starts_with("duplicate field") {
        return "given more than once; give it once".into();
    } else if inner.starts_with("missing field") {
        return "is required".into();
    } else {
        return inner.to_string();
    };
    match value {
        Some(v) => format!("{expected}, not {v:?}"),
        None => expected.to_string(),
    }
}

/// The path parameters deserialised into `T`; a segment that does not fit
/// is 400 `invalid_input` naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                // The route's first parameter, for errors that carry no key.
                let first = parts
                    .extensions
                    .get::<MatchedPath>()
                    .and_then(|m| m.as_str().split('{').nth(1)?.split('}').next().map(str::to_string))
                    .unwrap_or_else(|| "(path)".into());
                let (field, why) = match e.kind() {
                    ErrorKind::InvalidUtf8InPathParam { key } => {
                        (key.clone(), "is not valid UTF-8 once percent-decoded".to_string())
                    }
                    ErrorKind::ParseErrorAtKey { key, value, expected_type } => {
                        (key.clone(), format!("expected {expected_type}, not {value:?}"))
                    }
                    ErrorKind::DeserializeError { key, message, .. } => (key.clone(), message.clone()),
                    ErrorKind::ParseError { value, expected_type } => {
                        (first, format!("expected {expected_type}, not {value:?}"))
                    }
                    other => (first, other.to_string()),
                };
                Err(ApiError::invalid(field, why))
            }
            Err(other) => Err(ApiError::internal(other.body_text())),
        }
    }
}
