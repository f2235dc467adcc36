//! Authenticated callers and the account endpoints: who am I, API keys, and
//! linking platform accounts with a `/link` code.

// Helpers return `Result<_, Response>` as axum's extractors do; the error
// variant's size does not matter on these once-per-request paths.
#![allow(clippy::result_large_err)]

use crate::extract::Path;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use station_core::AccountRow;
use station_core::Station;
use station_core::identity::LinkError;
use station_core::identity::{AuthError, IdentityError, RateLimited};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ErrorBody;
use crate::api_error;

/// The account making a request, authenticated by `Authorization: Bearer
/// <key>` or `X-API-Key: <key>`, or by the web session cookie
/// `station_session`, and counted against its rate limit. Handlers take it
/// as an argument; a request without a valid credential never reaches them.
///
/// A request authenticated by the session cookie with a state-changing
/// method (POST, PUT, PATCH, DELETE) must also carry the session's CSRF
/// token in `X-CSRF-Token`; API-key requests need none (a browser never
/// sends an API key on its own).
///
/// Refusals use the API's error shape: 401 `unauthorized` (with
/// `WWW-Authenticate: Bearer`), 403 `suspended`, 403 `csrf`, 429
/// `rate_limited` (with `Retry-After` in seconds).
#[derive(Debug, Clone)]
pub struct Caller(pub AccountRow);

/// The web session cookie's name.
pub const SESSION_COOKIE: &str = "station_session";
/// The header carrying a session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl FromRequestParts<Station> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, station: &Station) -> Result<Self, Self::Rejection> {
        let mut platform = "api";
        let account = match (api_key(parts), session_cookie(&parts.headers)) {
            (Err(AuthError::Missing), Some(session)) => {
                platform = "web";
                let (account, info) = station.session_account(&session).await.map_err(auth_error)?;
                let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
                let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
                if !safe && !station_core::identity::same_secret(sent.as_bytes(), info.csrf_token.as_bytes()) {
                    let why = if sent.is_empty() { "is missing" } else { "does not match this session" };
                    return Err(api_error(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        format!(
                            "the X-CSRF-Token header {why}: requests that change something with a session cookie \
                             must send the session's CSRF token (reload the page to get it)"
                        ),
                        vec![],
                    ));
                }
                account
            }
            (key, _) => station.authenticate_api_key(key.map_err(auth_error)?).await.map_err(auth_error)?,
        };
        station.check_rate(&account).map_err(rate_limited)?;
        if !station.platform_on(platform, &account, None).await {
            let what = if platform == "web" { "The web app" } else { "The API" };
            return Err(api_error(
                StatusCode::FORBIDDEN,
                "platform_off",
                format!("{what} is switched off for your account right now; please try again later"),
                vec![],
            ));
        }
        Ok(Caller(account))
    }
}

/// An authenticated [`Caller`] with the `admin` role; anyone else gets 403
/// `forbidden` (after the usual 401/429 refusals).
#[derive(Debug, Clone)]
pub struct AdminCaller(pub AccountRow);

impl FromRequestParts<Station> for AdminCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, station: &Station) -> Result<Self, Self::Rejection> {
        let Caller(account) = Caller::from_request_parts(parts, station).await?;
        if !account.is_admin() {
            return Err(api_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this endpoint is for administrators; ask an operator (`station users` on the server)".into(),
                vec![],
            ));
        }
        Ok(AdminCaller(account))
    }
}

/// The `station_session` cookie's value, if sent (API and web pages alike).
pub(crate) fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    crate::web::cookie(headers, SESSION_COOKIE)
}

/// The key from `Authorization: Bearer …` or `X-API-Key` (borrowed: a
/// request's key is hashed, never kept).
fn api_key(parts: &Parts) -> Result<&str, AuthError> {
    let text = |name| parts.headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap_or_default().trim());
    if let Some(auth) = text(header::AUTHORIZATION.as_str()) {
        return match auth.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() => Ok(key.trim()),
            _ => Err(AuthError::Missing),
        };
    }
    match text("x-api-key") {
        Some(key) if !key.is_empty() => Ok(key),
        _ => Err(AuthError::Missing),
    }
}

/// The HTTP answer for a refused credential.
pub fn auth_error(e: AuthError) -> Response {
    match e {
        AuthError::Suspended(_) => api_error(StatusCode::FORBIDDEN, "suspended", e.to_string(), vec![]),
        AuthError::Store(e) if e.is_unavailable() => {
            crate::api::error::ApiError::database_unavailable().into_response()
        }
        AuthError::Store(e) => internal(e),
        e => {
            let challenge = match e {
                AuthError::Missing => "Bearer",
                _ => "Bearer error=\"invalid_token\"",
            };
            let mut r = api_error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string(), vec![]);
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            r
        }
    }
}

/// The HTTP answer for a request over the rate limit.
pub fn rate_limited(e: RateLimited) -> Response {
    let secs = e.retry_after_secs();
    let message = format!("too many requests for this account; try again in {secs} s");
    let mut r = api_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message, vec![]);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "account request failed");
    api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "storage error; try again later".into(), vec![])
}

fn invalid(field: &str, reason: impl Into<String>) -> Response {
    let reason = reason.into();
    api_error(StatusCode::BAD_REQUEST, "invalid_input", format!("{field}: {reason}"), vec![(field.into(), reason)])
}

/// The body as a JSON object with only `known` fields ([`crate::api::object`]).
fn object(body: Result<Json<Value>, JsonRejection>, known: &[&str]) -> Result<Map<String, Value>, Response> {
    crate::api::object(body, known).map_err(IntoResponse::into_response)
}

/// Routes for `/api/v1/account…`.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(show_account))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(create_link_code))
        .routes(routes!(link))
}

async fn account_json(station: &Station, a: &AccountRow) -> Result<Value, Response> {
    let ids = station.account_identities(&a.id).await.map_err(internal)?;
    let b = station.points(&a.id).await.map_err(internal)?;
    Ok(json!({
        "id": a.id,
        "name": a.name,
        "role": a.role,
        "suspended": a.suspended,
        "created_at": a.created_at,
        "identities": ids.iter().map(|(p, s)| json!({"provider": p, "subject": s})).collect::<Vec<_>>(),
        "points": {"balance": b.balance, "held": b.held, "available": b.available()},
    }))
}

/// `GET /api/v1/account`: the caller's account, identities and points.
#[utoipa::path(get, path = "/api/v1/account", tag = "account",
    responses((status = 200, description = "`{id, name, role, suspended, created_at, identities, points}`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn show_account(State(station): State<Station>, Caller(a): Caller) -> Response {
    match account_json(&station, &a).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v1/account/keys`: the caller's API keys (never their text).
#[utoipa::path(get, path = "/api/v1/account/keys", tag = "account",
    responses((status = 200, description = "`{keys: [{id, name, created_at, last_used_at, expires_at, revoked_at}]}`"),
        (status = 401, body = ErrorBody)))]
async fn list_keys(State(station): State<Station>, Caller(a): Caller) -> Response {
    match station.list_api_keys(&a).await {
        Ok(keys) => Json(json!({"keys": keys})).into_response(),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/account/keys` with `{name, expires_in_days?}`: a new key,
/// shown in this answer only.
#[utoipa::path(post, path = "/api/v1/account/keys", tag = "account",
    request_body(content = Object, description = "`{name, expires_in_days?}`"),
    responses((status = 201, description = "`{key, api_key, note}`: the key is shown only here"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_key(
    State(station): State<Station>,
    Caller(a): Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let obj = match object(body, &["name", "expires_in_days"]) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return invalid("name", "is required: say what the key is for"),
        Some(_) => return invalid("name", "expected a string"),
    };
    let expires_at = match obj.get("expires_in_days") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|d| (1..=3650).contains(d)) {
            Some(days) => Some(station_core::now_ms() + days as i64 * 86_400_000),
            None => return invalid("expires_in_days", "expected a whole number of days from 1 to 3650"),
        },
    };
    match station.create_api_key(&a, &name, expires_at).await {
        Ok((info, key)) => (
            StatusCode::CREATED,
            Json(json!({
                "key": key,
                "api_key": info,
                "note": "store this key now: it is shown only once (Station keeps only its hash)",
            })),
        )
            .into_response(),
        Err(IdentityError::Invalid { field, reason }) => invalid(field, reason),
        Err(e @ IdentityError::Suspended(_)) => api_error(StatusCode::FORBIDDEN, "suspended", e.to_string(), vec![]),
        Err(IdentityError::Store(e)) => internal(e),
    }
}

/// `DELETE /api/v1/account/keys/{id}`: revokes one of the caller's keys
/// (an administrator's: anyone's).
#[utoipa::path(delete, path = "/api/v1/account/keys/{id}", tag = "account",
    params(("id" = String, Path, description = "API key id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_key(State(station): State<Station>, Caller(a): Caller, Path(id): Path<String>) -> Response {
    match station.revoke_api_key(&a, &id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no API key {id} on this account; GET /api/v1/account/keys lists them"),
            vec![],
        ),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/account/link-code`: a code that, entered on another
/// platform within 10 minutes, joins that platform's account into this one.
#[utoipa::path(post, path = "/api/v1/account/link-code", tag = "account",
    responses((status = 201, description = "`{code, expires_at}`"), (status = 401, body = ErrorBody)))]
async fn create_link_code(State(station): State<Station>, Caller(a): Caller) -> Response {
    match station.create_link_code(&a).await {
        Ok(code) => (StatusCode::CREATED, Json(code)).into_response(),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/account/link` with `{code}`: joins the caller's account
/// into the account that made the code; answers with the joined account.
#[utoipa::path(post, path = "/api/v1/account/link", tag = "account",
    request_body(content = Object, description = "`{code}`"),
    responses((status = 200, description = "`{account}`: the joined account"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn link(State(station): State<Station>, Caller(a): Caller, body: Result<Json<Value>, JsonRejection>) -> Response {
    let obj = match object(body, &["code"]) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let code = match obj.get("code") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return invalid("code", "is required: the 8-character code from /link"),
        Some(_) => return invalid("code", "expected a string"),
    };
    match station.redeem_link_code(&a, &code).await {
        Ok(joined) => match account_json(&station, &joined).await {
            Ok(v) => Json(json!({"account": v})).into_response(),
            Err(r) => r,
        },
        Err(LinkError::Store(e)) => internal(e),
        Err(e) => {
            let (status, code) = match &e {
                LinkError::UnknownCode | LinkError::UsedCode | LinkError::ExpiredCode => {
                    return invalid("code", e.to_string());
                }
                LinkError::Suspended(_) => (StatusCode::FORBIDDEN, "suspended"),
                LinkError::JobsActive(_) | LinkError::PointsHeld(_) | LinkError::Changed => {
                    (StatusCode::CONFLICT, "busy")
                }
                LinkError::SameAccount
                | LinkError::Merged(_)
                | LinkError::AdminMustSurvive
                | LinkError::TooManyPoints
                | LinkError::Store(_) => (StatusCode::CONFLICT, "cannot_link"),
            };
            api_error(status, code, e.to_string(), vec![])
        }
    }
}
