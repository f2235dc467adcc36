//! A small Discord REST client that honours rate limits.
//!
//! Every answer's `X-RateLimit-Bucket`/`Remaining`/`Reset-After` headers are
//! remembered per route; a request to a bucket with nothing remaining waits
//! for its reset, and a 429 blocks its bucket (or, when `global`, every
//! request) for `retry_after`. Short waits happen inline; longer ones are
//! returned as [`RestError::RateLimited`] so the delivery service can retry
//! the durable delivery later instead of holding a task.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

/// Waits up to this long inside a call; longer limits are handed back to the caller.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(5);

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// JSON.
    Json(Value),
    /// `payload_json` plus `files[n]` (name, MIME type, bytes).
    Multipart(Value, Vec<FilePart>),
}

/// One uploaded file.
#[derive(Debug, Clone)]
pub struct FilePart {
    /// File name (`attachment://NAME` refers to it).
    pub name: String,
    /// MIME type.
    pub mime: String,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Rate limited for longer than the client waits inline.
    #[error("rate limited by Discord for {0:?}")]
    RateLimited(Duration),
    /// Discord refused the request.
    #[error("Discord answered {status} (code {code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Discord's JSON error code (0 when absent).
        code: u64,
        /// Discord's message, with field errors appended.
        message: String,
    },
    /// Discord could not be reached.
    #[error("cannot reach Discord: {0}")]
    Transport(String),
}

impl RestError {
    /// Discord's JSON error code, if it answered.
    pub fn code(&self) -> Option<u64> {
        match self {
            RestError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Limits {
    /// Route key → Discord's bucket id.
    route_bucket: HashMap<String, String>,
    /// Bucket id (or route key before one is known) → remaining and reset.
    buckets: HashMap<String, (u32, Instant)>,
    global_until: Option<Instant>,
}

/// The REST client.
pub struct Rest {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    limits: Mutex<Limits>,
}

/// The rate-limit route of a path: message ids collapse, major parameters
/// (channel, webhook token, interaction) stay.
pub fn route_key(method: &Method, path: &str) -> String {
    let parts: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 && parts[i - 1] == "messages" && *p != "@original" {
            out.push("{id}");
        } else {
            out.push(p);
        }
    }
    format!("{method} {}", out.join("/"))
}

impl Rest {
    /// A client for `base` (`https://discord.com/api/v10`), authenticating with the bot token when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Rest, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent("DiscordBot (https://example.invalid/station, 0.1) station")
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Rest { http, base: base.trim_end_matches('/').to_string(), token, limits: Mutex::new(Limits::default()) })
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long a request on `route` must wait now, taking one from its bucket if it may go.
    fn reserve(&self, route: &str) -> Option<Duration> {
        let mut l = self.limits();
        let now = Instant::now();
        if let Some(until) = l.global_until.filter(|u| *u > now) {
            return Some(until - now);
        }
        let key = l.route_bucket.get(route).cloned().unwrap_or_else(|| route.to_string());
        match l.buckets.get_mut(&key) {
            Some((remaining, reset)) if *reset > now => {
                if *remaining == 0 {
                    return Some(*reset - now);
                }
                *remaining -= 1;
                None
            }
            _ => None,
        }
    }

    fn learn(&self, route: &str, headers: &reqwest::header::HeaderMap) {
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut l = self.limits();
        let key = match h("x-ratelimit-bucket") {
            Some(b) => {
                l.route_bucket.insert(route.to_string(), b.clone());
                b
            }
            None => route.to_string(),
        };
        if let (Some(rem), Some(reset)) = (
            h("x-ratelimit-remaining").and_then(|v| v.parse::<u32>().ok()),
            h("x-ratelimit-reset-after").and_then(|v| v.parse::<f64>().ok()),
        ) {
            l.buckets.insert(key, (rem, Instant::now() + Duration::from_secs_f64(reset.max(0.0))));
        }
    }

    fn block(&self, route: &str, retry_after: Duration, global: bool) {
        let mut l = self.limits();
        let until = Instant::now() + retry_after;
        if global {
            l.global_until = Some(until);
        } else {
            let key = l.route_bucket.get(route).cloned().unwrap_or_else(|| route.to_string());
            l.buckets.insert(key, (0, until));
        }
    }

    /// Sends one request (`path` below the base, starting with `/`), waiting
    /// out short rate limits. `Ok(Value::Null)` for 204 answers.
    pub async fn call(&self, method: Method, path: &str, body: Body) -> Result<Value, RestError> {
        let route = route_key(&method, path);
        let mut rate_limited = 0;
        loop {
            if let Some(wait) = self.reserve(&route) {
                if wait > MAX_INLINE_WAIT {
                    return Err(RestError::RateLimited(wait));
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
            if let Some(t) = &self.token {
                req = req.header("authorization", format!("Bot {t}"));
            }
            req = match &body {
                Body::Empty => req,
                Body::Json(v) => req.json(v),
                Body::Multipart(payload, files) => {
                    let mut form = reqwest::multipart::Form::new().text("payload_json", payload.to_string());
                    for (i, f) in files.iter().enumerate() {
                        let part = reqwest::multipart::Part::bytes(f.bytes.clone())
                            .file_name(f.name.clone())
                            .mime_str(&f.mime)
                            .map_err(|e| RestError::Transport(format!("bad MIME type {}: {e}", f.mime)))?;
                        form = form.part(format!("files[{i}]"), part);
                    }
                    req.multipart(form)
                }
            };
            let res = req.send().await.map_err(|e| RestError::Transport(e.to_string()))?;
            let status = res.status().as_u16();
            self.learn(&route, res.headers());
            let global_header = res.headers().get("x-ratelimit-global").is_some();
            let text = res.text().await.map_err(|e| RestError::Transport(e.to_string()))?;
            let json: Value =
                if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
            if status == 429 {
                let retry = Duration::from_secs_f64(json["retry_after"].as_f64().unwrap_or(1.0).max(0.0));
                let global = global_header || json["global"].as_bool().unwrap_or(false);
                tracing::debug!(route, ?retry, global, "discord rate limit");
                self.block(&route, retry, global);
                rate_limited += 1;
                if retry > MAX_INLINE_WAIT || rate_limited > 3 {
                    return Err(RestError::RateLimited(retry));
                }
                continue;
            }
            if (200..300).contains(&status) {
                return Ok(json);
            }
            let mut message = json["message"].as_str().unwrap_or(&text).to_string();
            if let Some(errors) = json.get("errors") {
                message.push_str(&format!(" {errors}"));
            }
            return Err(RestError::Api { status, code: json["code"].as_u64().unwrap_or(0), message });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_collapse_message_ids_only() {
        assert_eq!(route_key(&Method::PATCH, "/channels/1/messages/99"), "PATCH /channels/1/messages/{id}");
        assert_eq!(
            route_key(&Method::PATCH, "/webhooks/a/t/messages/@original"),
            "PATCH /webhooks/a/t/messages/@original"
        );
        assert_eq!(route_key(&Method::POST, "/webhooks/a/t?wait=true"), "POST /webhooks/a/t");
    }
}
