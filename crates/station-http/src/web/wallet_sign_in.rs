//! Signing in with a linked wallet (`web.wallet_sign_in`): the sign-in
//! page's script asks for a "Sign in with Ethereum" message
//! (`POST /signin/wallet/challenge`), has the browser wallet sign it, and
//! sends the signature (`POST /signin/wallet/verify`); a verified signature
//! of a linked address opens a session exactly as a sign-in link does. The
//! rules (which addresses, one use per message, expiry) are the core's
//! ([`Station::wallet_sign_in`]).
//!
//! Both endpoints take JSON only, and refuse requests a browser marks as
//! cross-site, so another site cannot sign a visitor in to an account of
//! its choosing.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use station_core::Station;
use station_core::wallets::SignInError;

use super::{NEXT_COOKIE, cookie, decode, safe_next, session_cookie_header};
use crate::api::ApiError;
use crate::api::error::FieldIssue;

/// `POST /signin/wallet/challenge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChallengeRequest {
    chain_id: u64,
    address: String,
}

/// `POST /signin/wallet/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyRequest {
    nonce: String,
    signature: String,
    #[serde(default)]
    next: Option<String>,
}

fn refusal(e: SignInError) -> Response {
    match e {
        SignInError::Off => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "signing in with a wallet is not enabled here")
                .into_response()
        }
        SignInError::Invalid(fields) => ApiError::invalid_fields(
            fields.into_iter().map(|f| FieldIssue { field: f.field, reason: f.reason }).collect(),
        )
        .into_response(),
        SignInError::RateLimited(r) => {
            let secs = r.retry_after_secs();
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many sign-in attempts for this wallet; try again in {secs} s"),
            )
            .into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
        SignInError::Suspended => {
            ApiError::new(StatusCode::FORBIDDEN, "suspended", "this account is suspended; ask the operator")
                .into_response()
        }
        SignInError::Rpc(m) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "chain_unavailable",
            format!("the chain's node did not answer ({m}); please try again shortly"),
        )
        .into_response(),
        SignInError::Storage(e) => ApiError::storage(e).into_response(),
    }
}

/// A browser says `Sec-Fetch-Site: cross-site` for a request another site
/// made; such a request never signs anyone in.
fn cross_site(headers: &HeaderMap) -> Option<Response> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())?;
    (site == "cross-site").then(|| {
        ApiError::new(StatusCode::FORBIDDEN, "cross_site", "sign in from Station's own sign-in page").into_response()
    })
}

fn body_error(e: JsonRejection) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("invalid request body: {}", e.body_text()))
        .into_response()
}

/// `POST /signin/wallet/challenge` `{chain_id, address}` → `{nonce, message, expires_at}`.
pub(super) async fn challenge(
    State(station): State<Station>,
    headers: HeaderMap,
    body: Result<Json<ChallengeRequest>, JsonRejection>,
) -> Response {
    if let Some(r) = cross_site(&headers) {
        return r;
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    match station.wallet_sign_in_challenge(req.chain_id, &req.address).await {
        Ok(c) => {
            let body = serde_json::json!({
                "nonce": c.nonce,
                "message": c.message,
                "address": c.address,
                "chain_id": c.chain_id,
                "expires_at": c.expires_at,
            });
            let mut r = Json(body).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => refusal(e),
    }
}

/// `POST /signin/wallet/verify` `{nonce, signature[, next]}` → sets the
/// session cookie and answers `{next}`, the page to open.
pub(super) async fn verify(
    State(station): State<Station>,
    headers: HeaderMap,
    body: Result<Json<VerifyRequest>, JsonRejection>,
) -> Response {
    if let Some(r) = cross_site(&headers) {
        return r;
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let account = match station.wallet_sign_in(&req.nonce, &req.signature).await {
        Ok(a) => a,
        Err(e) => return refusal(e),
    };
    let ttl = Duration::from_secs(station.config.web.session_hours.max(1) * 3600);
    let (id, _csrf, _expires) = match station.create_session(&account, ttl).await {
        Ok(s) => s,
        Err(e) => return ApiError::storage(e).into_response(),
    };
    let remembered = cookie(&headers, NEXT_COOKIE).and_then(|c| decode(&c));
    let next =
        req.next.as_deref().and_then(safe_next).or(remembered.as_deref().and_then(safe_next)).unwrap_or("/tools");
    let mut r = Json(serde_json::json!({ "next": next })).into_response();
    r.headers_mut().insert(header::SET_COOKIE, session_cookie_header(&station, &id, ttl.as_secs() as i64));
    if remembered.is_some() {
        r.headers_mut().append(header::SET_COOKIE, super::next_cookie_header(&station, None));
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
