//! The fake's HTTP side: routes, rate limits and Discord's error shapes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

use crate::validate::{self, FieldError};
use crate::{APP_ID, BOT_TOKEN, File, Message, Source, State};

type Shared = Arc<Mutex<State>>;

/// A Discord error answer: status, JSON error code and message.
#[derive(Debug, Clone)]
pub struct FakeError {
    /// HTTP status.
    pub status: StatusCode,
    /// Discord's JSON error code.
    pub code: u32,
    /// Message.
    pub message: String,
    /// Field errors (50035).
    pub fields: Vec<FieldError>,
}

impl FakeError {
    fn new(status: StatusCode, code: u32, message: &str) -> FakeError {
        FakeError { status, code, message: message.into(), fields: vec![] }
    }

    fn invalid(fields: Vec<FieldError>) -> FakeError {
        FakeError { status: StatusCode::BAD_REQUEST, code: 50035, message: "Invalid Form Body".into(), fields }
    }

    fn unknown_interaction() -> FakeError {
        FakeError::new(StatusCode::NOT_FOUND, 10062, "Unknown interaction")
    }
}

impl IntoResponse for FakeError {
    fn into_response(self) -> Response {
        let mut errors = serde_json::Map::new();
        for f in &self.fields {
            errors.insert(f.path.clone(), json!({"_errors": [{"code": "INVALID", "message": f.reason}]}));
        }
        let mut body = json!({"code": self.code, "message": self.message});
        if !errors.is_empty() {
            body["errors"] = Value::Object(errors);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

type Res = Result<Response, FakeError>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) async fn serve(state: Shared, listener: tokio::net::TcpListener) {
    let api = Router::new()
        .route("/interactions/{id}/{token}/callback", post(callback))
        .route("/webhooks/{app}/{token}", post(followup))
        .route("/webhooks/{app}/{token}/messages/{mid}", get(webhook_get).patch(webhook_edit).delete(webhook_delete))
        .route("/applications/@me", get(current_application))
        .route("/applications/{app}/commands", get(get_global).put(put_global))
        .route("/applications/{app}/guilds/{guild}/commands", get(get_guild).put(put_guild))
        .route("/channels/{cid}/messages", post(channel_post))
        .route("/channels/{cid}/messages/{mid}", patch(channel_edit))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    let app = Router::new()
        .nest("/api/v10", api)
        .route("/attachments/{id}/{name}", get(cdn))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(state);
    let _ = axum::serve(listener, app).await;
}

/// Groups a path the way Discord's buckets do: major parameters (channel,
/// webhook, interaction) stay, message ids collapse.
fn bucket_key(method: &Method, path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches("/api/v10").split('/').collect();
    let mut out = vec![];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 && parts[i - 1] == "messages" && *p != "@original" {
            out.push("{id}");
        } else {
            out.push(p);
        }
    }
    format!("{method} {}", out.join("/"))
}

fn rate_headers(h: &mut HeaderMap, limit: u32, remaining: u32, reset_after: f64, bucket: &str) {
    let hv = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("0"));
    h.insert("x-ratelimit-limit", hv(limit.to_string()));
    h.insert("x-ratelimit-remaining", hv(remaining.to_string()));
    h.insert("x-ratelimit-reset-after", hv(format!("{reset_after:.3}")));
    h.insert("x-ratelimit-bucket", hv(format!("{:016x}", fxhash(bucket))));
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

fn too_many(retry_after: f64, global: bool, bucket: &str, limit: u32) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": global})),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert("retry-after", HeaderValue::from_str(&format!("{}", retry_after.ceil() as u64)).expect("digits"));
    if global {
        h.insert("x-ratelimit-global", HeaderValue::from_static("true"));
        h.insert("x-ratelimit-scope", HeaderValue::from_static("global"));
    } else {
        rate_headers(h, limit, 0, retry_after, bucket);
        h.insert("x-ratelimit-scope", HeaderValue::from_static("user"));
    }
    r
}

async fn rate_limit(AxState(state): AxState<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let bucket = bucket_key(&method, &path);
    let now = Instant::now();
    let early: Option<Response> = {
        let mut s = lock(&state);
        let limit = s.bucket_limit;
        let mut answer = None;
        if let Some(until) = s.global_blocked.filter(|u| *u > now) {
            s.violations.push(format!("{bucket}: sent during a global rate limit"));
            answer = Some(too_many((until - now).as_secs_f64(), true, &bucket, limit));
        } else if let Some(until) = s.blocked.get(&bucket).copied().filter(|u| *u > now) {
            s.violations.push(format!("{bucket}: sent during its retry_after"));
            answer = Some(too_many((until - now).as_secs_f64(), false, &bucket, limit));
        } else if let Some(f) = s.forced.iter_mut().find(|f| f.remaining > 0 && path.contains(&f.path_contains)) {
            f.remaining -= 1;
            let (ra, global) = (f.retry_after, f.global);
            let until = now + Duration::from_secs_f64(ra);
            if global {
                s.global_blocked = Some(until);
            } else {
                s.blocked.insert(bucket.clone(), until);
            }
            answer = Some(too_many(ra, global, &bucket, limit));
        } else {
            let window = s.bucket_window;
            let b = s.buckets.entry(bucket.clone()).or_default();
            if b.window_start.is_none_or(|w| now - w >= window) {
                b.window_start = Some(now);
                b.used = 0;
            }
            if b.used >= limit {
                let reset = window.saturating_sub(now - b.window_start.unwrap_or(now)).as_secs_f64();
                s.violations.push(format!("{bucket}: sent with 0 remaining in its bucket"));
                s.blocked.insert(bucket.clone(), now + Duration::from_secs_f64(reset));
                answer = Some(too_many(reset, false, &bucket, limit));
            } else {
                b.used += 1;
            }
        }
        if let Some(r) = &answer {
            s.requests.push(crate::Request {
                method: method.to_string(),
                path: path.clone(),
                bucket: bucket.clone(),
                at: now,
                status: r.status().as_u16(),
            });
        }
        answer
    };
    if let Some(r) = early {
        return r;
    }
    let mut res = next.run(req).await;
    let mut s = lock(&state);
    let (limit, window) = (s.bucket_limit, s.bucket_window);
    let (used, start) = s.buckets.get(&bucket).map(|b| (b.used, b.window_start)).unwrap_or((0, None));
    let reset_after = window.saturating_sub(start.map(|w| now - w).unwrap_or_default()).as_secs_f64();
    rate_headers(res.headers_mut(), limit, limit.saturating_sub(used), reset_after, &bucket);
    s.requests.push(crate::Request {
        method: method.to_string(),
        path,
        bucket,
        at: now,
        status: res.status().as_u16(),
    });
    res
}

fn check_bot(headers: &HeaderMap) -> Result<(), FakeError> {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == format!("Bot {BOT_TOKEN}") => Ok(()),
        _ => Err(FakeError::new(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized")),
    }
}

/// A JSON or multipart (`payload_json` + `files[n]`) body.
async fn read_body(state: &Shared, req: Request) -> Result<(Value, Vec<File>), FakeError> {
    use axum::extract::FromRequest;
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if ct.starts_with("multipart/form-data") {
        let mut mp =
            axum::extract::Multipart::from_request(req, &()).await.map_err(|e| bad(&format!("multipart: {e}")))?;
        let mut payload = Value::Null;
        let mut raw_files = vec![];
        while let Some(field) = mp.next_field().await.map_err(|e| bad(&format!("multipart: {e}")))? {
            let name = field.name().unwrap_or("").to_string();
            let filename = field.file_name().map(str::to_owned);
            let ctype = field.content_type().map(str::to_owned).unwrap_or("application/octet-stream".into());
            let data = field.bytes().await.map_err(|e| bad(&format!("multipart: {e}")))?;
            if name == "payload_json" {
                payload = serde_json::from_slice(&data).map_err(|e| bad(&format!("payload_json: {e}")))?;
            } else if name.starts_with("files[") {
                raw_files.push((filename.unwrap_or(name), ctype, data.to_vec()));
            } else {
                return Err(bad(&format!("unexpected multipart field {name}")));
            }
        }
        let max = lock(state).max_file_bytes;
        if raw_files.iter().any(|(_, _, b)| b.len() > max) {
            return Err(FakeError::new(StatusCode::PAYLOAD_TOO_LARGE, 40005, "Request entity too large"));
        }
        if raw_files.len() > 10 {
            return Err(FakeError::invalid(vec![FieldError {
                path: "files".into(),
                reason: format!("must be 10 or fewer in length (got {})", raw_files.len()),
            }]));
        }
        let mut s = lock(state);
        let files = raw_files.into_iter().map(|(n, c, b)| s.store_file(&n, &c, b)).collect();
        Ok((payload, files))
    } else {
        let body = Bytes::from_request(req, &()).await.map_err(|e| bad(&format!("body: {e}")))?;
        if body.is_empty() {
            return Ok((json!({}), vec![]));
        }
        let v = serde_json::from_slice(&body).map_err(|e| bad(&format!("body is not JSON: {e}")))?;
        Ok((v, vec![]))
    }
}

fn bad(msg: &str) -> FakeError {
    FakeError::new(StatusCode::BAD_REQUEST, 50109, msg)
}

fn check_message(body: &Value, files: usize, creating: bool) -> Result<(), FakeError> {
    let errors = validate::message(body, files);
    if !errors.is_empty() {
        return Err(FakeError::invalid(errors));
    }
    if creating
        && files == 0
        && body["content"].as_str().is_none_or(str::is_empty)
        && body["embeds"].as_array().is_none_or(Vec::is_empty)
        && body["components"].as_array().is_none_or(Vec::is_empty)
    {
        return Err(FakeError::new(StatusCode::BAD_REQUEST, 50006, "Cannot send an empty message"));
    }
    Ok(())
}

fn new_message(
    s: &mut State,
    channel: &str,
    source: Source,
    token: Option<String>,
    body: &Value,
    files: Vec<File>,
) -> String {
    let id = s.snowflake();
    let mut m = Message {
        id: id.clone(),
        channel_id: channel.into(),
        source,
        interaction_token: token,
        flags: body["flags"].as_u64().unwrap_or(0) & 64,
        content: String::new(),
        embeds: vec![],
        components: vec![],
        files: vec![],
        deferred: false,
        edits: 0,
        history: vec![],
    };
    apply_edit(&mut m, body, files);
    m.edits = 0;
    s.messages.push(m);
    id
}

fn apply_edit(m: &mut Message, body: &Value, files: Vec<File>) {
    if let Some(c) = body.get("content") {
        m.content = c.as_str().unwrap_or("").to_string();
    }
    if let Some(e) = body.get("embeds") {
        m.embeds = e.as_array().cloned().unwrap_or_default();
    }
    if let Some(c) = body.get("components") {
        m.components = c.as_array().cloned().unwrap_or_default();
    }
    if let Some(list) = body.get("attachments").and_then(Value::as_array) {
        // Kept: existing attachments listed by id; new files are listed by their upload index.
        let keep: Vec<String> = list.iter().filter_map(|a| a["id"].as_str().map(str::to_owned)).collect();
        m.files.retain(|f| keep.contains(&f.id));
        m.files.extend(files);
    } else if !files.is_empty() {
        m.files = files;
    }
    m.deferred = false;
    m.edits += 1;
    let snapshot = m.to_json();
    m.history.push(snapshot);
}

/// Records an interaction response (from the callback endpoint or the HTTP body).
pub(crate) fn apply_callback(
    s: &mut State,
    id: &str,
    body: &Value,
    files: Vec<File>,
    in_body: bool,
    after: Duration,
) -> Result<(), FakeError> {
    let window = s.callback_window;
    let (kind_in, channel, token, sent_at, component_message, answered) = {
        let i = s.interactions.get(id).ok_or_else(FakeError::unknown_interaction)?;
        (i.kind, i.channel_id.clone(), i.token.clone(), i.sent_at, i.component_message.clone(), i.callback.is_some())
    };
    if sent_at.elapsed() > window {
        return Err(FakeError::unknown_interaction());
    }
    if answered {
        return Err(FakeError::new(StatusCode::BAD_REQUEST, 40060, "Interaction has already been acknowledged."));
    }
    let kind = body["type"].as_u64().unwrap_or(0);
    let data = body.get("data").cloned().unwrap_or(json!({}));
    let mut original = None;
    match kind {
        1 if kind_in == 1 => {}
        4 | 5 if kind_in != 1 => {
            check_message(&data, files.len(), kind == 4)?;
            let mid = new_message(s, &channel, Source::Original, Some(token), &data, files);
            if kind == 5 {
                let m = s.message_mut(&mid).expect("just made");
                m.deferred = true;
                m.content.clear();
            }
            original = Some(mid);
        }
        6 | 7 if kind_in == 3 || kind_in == 5 => {
            if kind == 7 {
                check_message(&data, files.len(), false)?;
                let mid = component_message.clone().ok_or_else(|| bad("no message to update"))?;
                let m = s
                    .message_mut(&mid)
                    .ok_or_else(|| FakeError::new(StatusCode::NOT_FOUND, 10008, "Unknown Message"))?;
                apply_edit(m, &data, files);
            }
        }
        9 if kind_in == 2 || kind_in == 3 => {
            let errors = validate::modal(&json!({"data": data}).get("data").cloned().unwrap_or_default());
            if !errors.is_empty() {
                return Err(FakeError::invalid(errors));
            }
        }
        _ => {
            return Err(FakeError::new(
                StatusCode::BAD_REQUEST,
                40094,
                &format!("interaction response type {kind} is not valid for interaction type {kind_in}"),
            ));
        }
    }
    let i = s.interactions.get_mut(id).expect("checked");
    if original.is_some() {
        i.original = original;
    }
    i.callback = Some(crate::Callback { kind, data, after, in_http_body: in_body });
    Ok(())
}

async fn callback(AxState(state): AxState<Shared>, Path((id, token)): Path<(String, String)>, req: Request) -> Res {
    let (payload, files) = read_body(&state, req).await?;
    let mut s = lock(&state);
    let valid = s.interactions.get(&id).is_some_and(|i| i.token == token);
    if !valid {
        return Err(FakeError::unknown_interaction());
    }
    let after = s.interactions[&id].sent_at.elapsed();
    apply_callback(&mut s, &id, &payload, files, false, after)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The interaction a webhook token belongs to, if the token is still valid.
fn webhook(s: &State, app: &str, token: &str) -> Result<String, FakeError> {
    let unknown = || FakeError::new(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
    if app != APP_ID {
        return Err(unknown());
    }
    let id = s.by_token.get(token).ok_or_else(unknown)?;
    let i = &s.interactions[id];
    if i.sent_at.elapsed() > s.token_lifetime {
        return Err(FakeError::new(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token"));
    }
    if i.callback.is_none() {
        return Err(unknown());
    }
    Ok(id.clone())
}

fn target_message(s: &State, iid: &str, token: &str, mid: &str) -> Result<String, FakeError> {
    let unknown = || FakeError::new(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    if mid == "@original" {
        return s.interactions[iid].original.clone().ok_or_else(unknown);
    }
    s.messages
        .iter()
        .find(|m| m.id == mid && m.interaction_token.as_deref() == Some(token))
        .map(|m| m.id.clone())
        .ok_or_else(unknown)
}

async fn webhook_get(AxState(state): AxState<Shared>, Path((app, token, mid)): Path<(String, String, String)>) -> Res {
    let s = lock(&state);
    let iid = webhook(&s, &app, &token)?;
    let id = target_message(&s, &iid, &token, &mid)?;
    let m = s.messages.iter().find(|m| m.id == id).expect("found");
    Ok(axum::Json(m.to_json()).into_response())
}

async fn webhook_edit(
    AxState(state): AxState<Shared>,
    Path((app, token, mid)): Path<(String, String, String)>,
    req: Request,
) -> Res {
    {
        let s = lock(&state);
        webhook(&s, &app, &token)?;
    }
    let (payload, files) = read_body(&state, req).await?;
    check_message(&payload, files.len(), false)?;
    let mut s = lock(&state);
    let iid = webhook(&s, &app, &token)?;
    let id = target_message(&s, &iid, &token, &mid)?;
    let m = s.message_mut(&id).expect("found");
    apply_edit(m, &payload, files);
    Ok(axum::Json(m.to_json()).into_response())
}

async fn webhook_delete(
    AxState(state): AxState<Shared>,
    Path((app, token, mid)): Path<(String, String, String)>,
) -> Res {
    let mut s = lock(&state);
    let iid = webhook(&s, &app, &token)?;
    let id = target_message(&s, &iid, &token, &mid)?;
    s.messages.retain(|m| m.id != id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(serde::Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait: Option<bool>,
}

async fn followup(
    AxState(state): AxState<Shared>,
    Path((app, token)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    req: Request,
) -> Res {
    {
        let s = lock(&state);
        webhook(&s, &app, &token)?;
    }
    let (payload, files) = read_body(&state, req).await?;
    check_message(&payload, files.len(), true)?;
    let mut s = lock(&state);
    let iid = webhook(&s, &app, &token)?;
    let channel = s.interactions[&iid].channel_id.clone();
    let id = new_message(&mut s, &channel, Source::Followup, Some(token), &payload, files);
    if q.wait == Some(true) {
        let m = s.messages.iter().find(|m| m.id == id).expect("made");
        Ok(axum::Json(m.to_json()).into_response())
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

fn check_commands(list: &Value) -> Result<Vec<Value>, FakeError> {
    let arr = list.as_array().cloned().ok_or_else(|| bad("expected an array of commands"))?;
    let errors = validate::commands(&arr);
    if !errors.is_empty() {
        return Err(FakeError::invalid(errors));
    }
    Ok(arr
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            c["id"] = json!(format!("{}", 1_300_000_000_000_000_000u64 + i as u64));
            c["application_id"] = json!(APP_ID);
            c
        })
        .collect())
}

async fn put_global(AxState(state): AxState<Shared>, Path(app): Path<String>, headers: HeaderMap, body: Bytes) -> Res {
    check_bot(&headers)?;
    if app != APP_ID {
        return Err(FakeError::new(StatusCode::NOT_FOUND, 10002, "Unknown Application"));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad(&format!("body is not JSON: {e}")))?;
    let list = check_commands(&v)?;
    let mut s = lock(&state);
    s.global_commands = list.clone();
    s.registrations.push((None, list.clone()));
    Ok(axum::Json(list).into_response())
}

/// `GET /applications/@me`: the bot token's application (a subset of
/// Discord's application object).
async fn current_application(headers: HeaderMap) -> Res {
    check_bot(&headers)?;
    let bot = json!({"id": APP_ID, "username": "station", "bot": true});
    Ok(axum::Json(json!({"id": APP_ID, "name": "Station", "bot_public": true, "bot": bot})).into_response())
}

async fn get_global(AxState(state): AxState<Shared>, headers: HeaderMap) -> Res {
    check_bot(&headers)?;
    Ok(axum::Json(lock(&state).global_commands.clone()).into_response())
}

async fn put_guild(
    AxState(state): AxState<Shared>,
    Path((app, guild)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Res {
    check_bot(&headers)?;
    if app != APP_ID {
        return Err(FakeError::new(StatusCode::NOT_FOUND, 10002, "Unknown Application"));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad(&format!("body is not JSON: {e}")))?;
    let list = check_commands(&v)?;
    let mut s = lock(&state);
    s.guild_commands.insert(guild.clone(), list.clone());
    s.registrations.push((Some(guild), list.clone()));
    Ok(axum::Json(list).into_response())
}

async fn get_guild(
    AxState(state): AxState<Shared>,
    Path((_app, guild)): Path<(String, String)>,
    headers: HeaderMap,
) -> Res {
    check_bot(&headers)?;
    Ok(axum::Json(lock(&state).guild_commands.get(&guild).cloned().unwrap_or_default()).into_response())
}

fn missing_permissions() -> FakeError {
    FakeError::new(StatusCode::FORBIDDEN, 50013, "Missing Permissions")
}

async fn channel_post(AxState(state): AxState<Shared>, Path(cid): Path<String>, req: Request) -> Res {
    check_bot(req.headers())?;
    if lock(&state).denied.contains(&cid) {
        return Err(missing_permissions());
    }
    let (payload, files) = read_body(&state, req).await?;
    check_message(&payload, files.len(), true)?;
    let mut s = lock(&state);
    let id = new_message(&mut s, &cid, Source::Channel, None, &payload, files);
    let m = s.messages.iter().find(|m| m.id == id).expect("made");
    Ok(axum::Json(m.to_json()).into_response())
}

async fn channel_edit(AxState(state): AxState<Shared>, Path((cid, mid)): Path<(String, String)>, req: Request) -> Res {
    check_bot(req.headers())?;
    if lock(&state).denied.contains(&cid) {
        return Err(missing_permissions());
    }
    let (payload, files) = read_body(&state, req).await?;
    check_message(&payload, files.len(), false)?;
    let mut s = lock(&state);
    let m = s
        .messages
        .iter_mut()
        .find(|m| m.id == mid && m.channel_id == cid && m.source != Source::User && !m.ephemeral())
        .ok_or_else(|| FakeError::new(StatusCode::NOT_FOUND, 10008, "Unknown Message"))?;
    apply_edit(m, &payload, files);
    Ok(axum::Json(m.to_json()).into_response())
}

async fn cdn(AxState(state): AxState<Shared>, Path((id, _name)): Path<(String, String)>) -> Response {
    match lock(&state).cdn.get(&id) {
        Some(f) => ([("content-type", f.content_type.clone())], f.bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
