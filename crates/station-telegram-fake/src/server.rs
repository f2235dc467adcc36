//! The HTTP side: request parsing and one function per Bot API method.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::html::{parse as parse_html, utf16_len};
use crate::{Content, FakeChat, FakeFile, FakeMessage, Inner, Shared, image_dims, now_secs};

const NOT_MODIFIED: &str = "Bad Request: message is not modified: specified new message content and reply markup are \
                            exactly the same as a current content and reply markup of the message";
const QUERY_INVALID: &str = "Bad Request: query is too old and response timeout expired or query ID is invalid";
const PHOTO_MAX_BYTES: usize = 10_000_000;
const DOCUMENT_MAX_BYTES: usize = 50_000_000;
const DOWNLOAD_MAX_BYTES: usize = 20_000_000;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).layer(DefaultBodyLimit::max(64 * 1024 * 1024)).with_state(shared)
}

/// A Bot API error answer.
pub(crate) struct ApiError {
    code: u16,
    description: String,
    retry_after: Option<u64>,
}

fn bad(description: impl Into<String>) -> ApiError {
    let d = description.into();
    ApiError {
        code: 400,
        description: if d.starts_with("Bad Request") { d } else { format!("Bad Request: {d}") },
        retry_after: None,
    }
}

fn too_many(secs: u64) -> ApiError {
    ApiError { code: 429, description: format!("Too Many Requests: retry after {secs}"), retry_after: Some(secs) }
}

type ApiResult = Result<Value, ApiError>;

/// Parameters of one call: fields (JSON values, or strings from forms) and
/// uploaded files by part name.
#[derive(Default)]
struct Params {
    fields: Map<String, Value>,
    files: HashMap<String, (Option<String>, Vec<u8>)>,
}

impl Params {
    fn str(&self, k: &str) -> Option<String> {
        match self.fields.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            v => Some(v.to_string()),
        }
    }

    fn req_str(&self, k: &str) -> Result<String, ApiError> {
        self.str(k).ok_or_else(|| bad(format!("Bad Request: {k} is empty")))
    }

    fn int(&self, k: &str) -> Option<i64> {
        match self.fields.get(k)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn bool(&self, k: &str) -> bool {
        match self.fields.get(k) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true" || s == "1",
            _ => false,
        }
    }

    /// A JSON-valued parameter (an object in JSON bodies, a JSON string in forms).
    fn json(&self, k: &str) -> Result<Option<Value>, ApiError> {
        match self.fields.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                serde_json::from_str(s).map(Some).map_err(|_| bad(format!("Bad Request: can't parse {k} JSON object")))
            }
            Some(v) => Ok(Some(v.clone())),
        }
    }
}

async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let token = shared.lock().config.token.clone();
    if let Some(rest) = path.strip_prefix("/file/bot") {
        return download(&shared, &token, rest);
    }
    let Some(rest) = path.strip_prefix("/bot") else {
        return error_response(&shared, "", ApiError { code: 404, description: "Not Found".into(), retry_after: None });
    };
    let Some((tok, method)) = rest.split_once('/') else {
        return error_response(&shared, "", ApiError { code: 404, description: "Not Found".into(), retry_after: None });
    };
    if tok != token {
        return error_response(
            &shared,
            method,
            ApiError { code: 401, description: "Unauthorized".into(), retry_after: None },
        );
    }
    let method = method.to_ascii_lowercase();
    *shared.lock().stats.requests.entry(method.clone()).or_default() += 1;
    let injected = shared.lock().failures.get_mut(&method).and_then(std::collections::VecDeque::pop_front);
    if let Some(code) = injected {
        let description = match code {
            401 => "Unauthorized",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Injected failure",
        };
        return error_response(&shared, &method, ApiError { code, description: description.into(), retry_after: None });
    }
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(e) => return error_response(&shared, &method, e),
    };
    let result = match method.as_str() {
        "getme" => get_me(&shared),
        "getupdates" => get_updates(&shared, &params).await,
        "setwebhook" => set_webhook(&shared, &params),
        "deletewebhook" => delete_webhook(&shared, &params),
        "getwebhookinfo" => webhook_info(&shared),
        "sendmessage" => send_message(&shared, &params),
        "sendphoto" => send_media(&shared, &params, "photo"),
        "senddocument" => send_media(&shared, &params, "document"),
        "sendmediagroup" => send_media_group(&shared, &params),
        "editmessagetext" => edit(&shared, &params, EditKind::Text),
        "editmessagecaption" => edit(&shared, &params, EditKind::Caption),
        "editmessagemedia" => edit(&shared, &params, EditKind::Media),
        "editmessagereplymarkup" => edit(&shared, &params, EditKind::Markup),
        "deletemessage" => delete_message(&shared, &params),
        "answercallbackquery" => answer_callback(&shared, &params),
        "getfile" => get_file(&shared, &params),
        "setmycommands" => set_commands(&shared, &params),
        "getmycommands" => get_commands(&shared, &params),
        "deletemycommands" => delete_commands(&shared, &params),
        _ => Err(ApiError { code: 404, description: "Not Found".into(), retry_after: None }),
    };
    match result {
        Ok(v) => (StatusCode::OK, axum::Json(json!({"ok": true, "result": v}))).into_response(),
        Err(e) => error_response(&shared, &method, e),
    }
}

fn error_response(shared: &Shared, method: &str, e: ApiError) -> Response {
    shared.lock().stats.errors.push(crate::ServedError {
        method: method.to_string(),
        code: e.code,
        description: e.description.clone(),
    });
    let mut body = json!({"ok": false, "error_code": e.code, "description": e.description});
    if let Some(s) = e.retry_after {
        body["parameters"] = json!({"retry_after": s});
    }
    let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(body)).into_response()
}

async fn read_params(req: Request) -> Result<Params, ApiError> {
    let mut p = Params::default();
    if let Some(q) = req.uri().query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            p.fields.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if ctype.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| bad(format!("Bad Request: can't parse multipart body: {e}")))?;
        while let Some(field) = mp.next_field().await.map_err(|e| bad(format!("Bad Request: multipart: {e}")))? {
            let name = field.name().unwrap_or_default().to_string();
            let file_name = field.file_name().map(str::to_string);
            let data = field.bytes().await.map_err(|e| bad(format!("Bad Request: multipart: {e}")))?;
            if file_name.is_some() {
                p.files.insert(name, (file_name, data.to_vec()));
            } else {
                p.fields.insert(name, Value::String(String::from_utf8_lossy(&data).into_owned()));
            }
        }
        return Ok(p);
    }
    let body: Bytes = Bytes::from_request(req, &()).await.map_err(|e| bad(format!("Bad Request: body: {e}")))?;
    if body.is_empty() {
        return Ok(p);
    }
    if ctype.starts_with("application/json") {
        let v: Value =
            serde_json::from_slice(&body).map_err(|_| bad("Bad Request: can't parse JSON-serialized request"))?;
        if let Value::Object(m) = v {
            p.fields.extend(m);
        }
    } else {
        for (k, v) in url::form_urlencoded::parse(&body) {
            p.fields.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    Ok(p)
}

fn download(shared: &Shared, token: &str, rest: &str) -> Response {
    let Some((tok, path)) = rest.split_once('/') else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    if tok != token {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    let inner = shared.lock();
    match inner.files.values().find(|f| f.file_path == path) {
        Some(f) => (StatusCode::OK, f.bytes.as_ref().clone()).into_response(),
        None => {
            (StatusCode::NOT_FOUND, axum::Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})))
                .into_response()
        }
    }
}

fn get_me(shared: &Shared) -> ApiResult {
    let inner = shared.lock();
    Ok(json!({"id": inner.bot_id(), "is_bot": true, "first_name": "Station", "username": inner.config.bot_username,
        "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false}))
}

async fn get_updates(shared: &Shared, p: &Params) -> ApiResult {
    let offset = p.int("offset");
    let limit = p.int("limit").unwrap_or(100).clamp(1, 100) as usize;
    let timeout = Duration::from_secs(p.int("timeout").unwrap_or(0).clamp(0, 50) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = shared.changed.subscribe();
    let generation = {
        let mut inner = shared.lock();
        if inner.webhook.is_some() {
            return Err(ApiError {
                code: 409,
                description: "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to \
                              delete the webhook first"
                    .into(),
                retry_after: None,
            });
        }
        inner.poll_generation += 1;
        if let Some(o) = offset {
            inner.updates.retain(|(id, _)| *id >= o);
        }
        inner.poll_generation
    };
    shared.bump();
    rx.borrow_and_update();
    loop {
        {
            let inner = shared.lock();
            if inner.poll_generation != generation {
                return Err(ApiError {
                    code: 409,
                    description: "Conflict: terminated by other getUpdates request; make sure that only one bot \
                                  instance is running"
                        .into(),
                    retry_after: None,
                });
            }
            let out: Vec<Value> = inner.updates.iter().take(limit).map(|(_, u)| u.clone()).collect();
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Value::Array(out));
            }
        }
        if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
            continue;
        }
    }
}

fn set_webhook(shared: &Shared, p: &Params) -> ApiResult {
    let url = p.str("url").unwrap_or_default();
    let secret = p.str("secret_token").filter(|s| !s.is_empty());
    if let Some(s) = &secret
        && (s.len() > 256 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(bad("Bad Request: secret token contains unallowed characters"));
    }
    {
        let mut inner = shared.lock();
        if p.bool("drop_pending_updates") {
            inner.updates.clear();
        }
        if url.is_empty() {
            inner.webhook = None;
        } else {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad("Bad Request: bad webhook: An HTTPS URL must be provided for webhook"));
            }
            inner.webhook = Some((url, secret));
        }
        inner.poll_generation += 1;
    }
    shared.bump();
    Ok(json!(true))
}

fn delete_webhook(shared: &Shared, p: &Params) -> ApiResult {
    {
        let mut inner = shared.lock();
        inner.webhook = None;
        if p.bool("drop_pending_updates") {
            inner.updates.clear();
        }
    }
    shared.bump();
    Ok(json!(true))
}

fn webhook_info(shared: &Shared) -> ApiResult {
    let inner = shared.lock();
    let mut v = json!({
        "url": inner.webhook.as_ref().map(|w| w.0.clone()).unwrap_or_default(),
        "has_custom_certificate": false,
        "pending_update_count": inner.updates.len(),
    });
    if let Some(e) = &inner.webhook_last_error {
        v["last_error_message"] = json!(e);
        v["last_error_date"] = json!(now_secs());
    }
    Ok(v)
}

/// Delivers pending updates to the webhook one at a time, in order, removing
/// each when the bot answers 2xx (retrying otherwise).
pub(crate) async fn webhook_loop(shared: Arc<Shared>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("webhook client");
    let mut rx = shared.changed.subscribe();
    loop {
        let next = {
            let inner = shared.lock();
            inner.webhook.clone().and_then(|w| inner.updates.front().map(|(id, u)| (w, *id, u.clone())))
        };
        let Some(((url, secret), id, update)) = next else {
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
            continue;
        };
        let mut req = client.post(&url).json(&update);
        if let Some(s) = &secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        let outcome = req.send().await;
        let failed = {
            let mut inner = shared.lock();
            inner.stats.webhook_attempts += 1;
            let error = match outcome {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("Wrong response from the webhook: {}", r.status())),
                Err(e) => Some(format!("Connection failed: {e}")),
            };
            match &error {
                None => {
                    if inner.updates.front().is_some_and(|(u, _)| *u == id) {
                        inner.updates.pop_front();
                    }
                }
                Some(_) => inner.stats.webhook_refused += 1,
            }
            inner.webhook_last_error = error;
            inner.webhook_last_error.is_some()
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The chat a send goes to: must be known and not blocked. A user the bot
/// knows (from a group) who never started a private chat with it cannot be
/// written to first: 403, as the real API answers.
fn target_chat(inner: &Inner, p: &Params) -> Result<FakeChat, ApiError> {
    let id = p.int("chat_id").ok_or_else(|| bad("Bad Request: chat_id is empty"))?;
    if id > 0 && !inner.chats.contains_key(&id) && inner.users.contains_key(&id) {
        return Err(ApiError {
            code: 403,
            description: "Forbidden: bot can't initiate conversation with a user".into(),
            retry_after: None,
        });
    }
    let chat = inner.chats.get(&id).and_then(|c| c.chat.clone()).ok_or_else(|| bad("Bad Request: chat not found"))?;
    if chat.kind == "private" && inner.blocked.contains(&chat.id) {
        return Err(ApiError {
            code: 403,
            description: "Forbidden: bot was blocked by the user".into(),
            retry_after: None,
        });
    }
    Ok(chat)
}

fn take_slot(inner: &mut Inner, chat: &FakeChat) -> Result<(), ApiError> {
    inner.limiter.take(chat.id, chat.is_group(), Instant::now()).map_err(too_many)
}

/// Checks an inline keyboard as the API does.
fn check_markup(markup: &Option<Value>) -> Result<(), ApiError> {
    let Some(m) = markup else { return Ok(()) };
    let Some(rows) = m.get("inline_keyboard") else {
        return Ok(());
    };
    let rows = rows.as_array().ok_or_else(|| bad("Bad Request: field \"inline_keyboard\" must be an Array"))?;
    for row in rows {
        let row = row.as_array().ok_or_else(|| bad("Bad Request: inline keyboard row must be an Array"))?;
        for b in row {
            let text = b["text"].as_str().unwrap_or_default();
            if text.is_empty() {
                return Err(bad("Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the \
                               inline keyboard"));
            }
            match (b.get("callback_data").and_then(Value::as_str), b.get("url").and_then(Value::as_str)) {
                (Some(d), None) => {
                    if d.is_empty() || d.len() > 64 {
                        return Err(bad("Bad Request: BUTTON_DATA_INVALID"));
                    }
                }
                (None, Some(u)) => {
                    if !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("tg://")) {
                        return Err(bad("Bad Request: BUTTON_URL_INVALID"));
                    }
                }
                _ => {
                    return Err(bad(
                        "Bad Request: can't parse inline keyboard button: InlineKeyboardButton must have \
                                   exactly one optional field",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Shown text of `raw` under `parse_mode`.
fn shown(raw: &str, parse_mode: Option<&str>) -> Result<String, ApiError> {
    match parse_mode.map(str::to_ascii_lowercase).as_deref() {
        Some("html") => parse_html(raw).map_err(bad),
        None | Some("") => Ok(raw.to_string()),
        Some("markdownv2" | "markdown") => Ok(raw.to_string()),
        Some(other) => Err(bad(format!("Bad Request: unsupported parse_mode \"{other}\""))),
    }
}

fn check_text(raw: &str, parse_mode: Option<&str>) -> Result<String, ApiError> {
    let text = shown(raw, parse_mode)?;
    if text.trim().is_empty() {
        return Err(bad("Bad Request: message text is empty"));
    }
    if utf16_len(&text) > 4096 {
        return Err(bad("Bad Request: message is too long"));
    }
    Ok(text)
}

fn check_caption(raw: Option<&str>, parse_mode: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = shown(raw, parse_mode)?;
    if utf16_len(&text) > 1024 {
        return Err(bad("Bad Request: message caption is too long"));
    }
    Ok(Some(text))
}

/// The message a send replies to: must exist in the chat, unless
/// `allow_sending_without_reply` says to send without the reply then.
fn reply_to(inner: &Inner, chat: &FakeChat, p: &Params) -> Result<Option<i64>, ApiError> {
    let (id, allow) = match p.int("reply_to_message_id") {
        Some(id) => (Some(id), p.bool("allow_sending_without_reply")),
        None => match p.json("reply_parameters")? {
            Some(r) => (r["message_id"].as_i64(), r["allow_sending_without_reply"].as_bool().unwrap_or(false)),
            None => (None, false),
        },
    };
    let Some(id) = id else { return Ok(None) };
    let exists = inner.chats.get(&chat.id).and_then(|c| c.messages.get(&id)).is_some_and(|m| !m.deleted);
    match (exists, allow) {
        (true, _) => Ok(Some(id)),
        (false, true) => Ok(None),
        (false, false) => Err(bad("Bad Request: message to be replied not found")),
    }
}

fn store_bot_message(
    inner: &mut Inner,
    chat: &FakeChat,
    content: Content,
    reply: Option<i64>,
    group: Option<String>,
) -> Value {
    let c = inner.chat_mut(chat);
    let id = c.next_id;
    c.next_id += 1;
    let m = FakeMessage {
        message_id: id,
        chat_id: chat.id,
        from_bot: true,
        from: None,
        date: now_secs(),
        content,
        history: vec![],
        media_group_id: group,
        reply_to: reply,
        deleted: false,
        sent_at: std::time::Instant::now(),
    };
    c.messages.insert(id, m.clone());
    inner.message_json(&m, false)
}

fn send_message(shared: &Shared, p: &Params) -> ApiResult {
    let mut inner = shared.lock();
    let chat = target_chat(&inner, p)?;
    let raw = p.req_str("text").map_err(|_| bad("Bad Request: message text is empty"))?;
    let parse_mode = p.str("parse_mode");
    let text = check_text(&raw, parse_mode.as_deref())?;
    let markup = p.json("reply_markup")?;
    check_markup(&markup)?;
    let reply = reply_to(&inner, &chat, p)?;
    take_slot(&mut inner, &chat)?;
    let content =
        Content { text: Some(text), raw: Some(raw), caption: None, photo: None, document: None, reply_markup: markup };
    Ok(store_bot_message(&mut inner, &chat, content, reply, None))
}

/// Resolves a media argument: an uploaded part (`attach://name` or the
/// field itself), or an existing file id.
fn media_file(
    inner: &mut Inner,
    p: &Params,
    field: &str,
    value: Option<&str>,
    kind: &str,
) -> Result<FakeFile, ApiError> {
    let upload = match value {
        Some(v) if v.starts_with("attach://") => {
            let name = &v["attach://".len()..];
            Some(p.files.get(name).cloned().ok_or_else(|| {
                bad(format!("Bad Request: file must be uploaded as multipart/form-data: attach://{name} not found"))
            })?)
        }
        Some(_) => None,
        None => Some(
            p.files
                .get(field)
                .cloned()
                .ok_or_else(|| bad(format!("Bad Request: there is no {kind} in the request")))?,
        ),
    };
    match upload {
        Some((name, bytes)) => {
            if kind == "photo" {
                if bytes.len() > PHOTO_MAX_BYTES {
                    return Err(bad("Bad Request: file is too big"));
                }
                let (w, h) = image_dims(&bytes).ok_or_else(|| bad("Bad Request: IMAGE_PROCESS_FAILED"))?;
                let ratio = f64::from(w.max(h)) / f64::from(w.min(h).max(1));
                if u64::from(w) + u64::from(h) > 10_000 || ratio > 20.0 {
                    return Err(bad("Bad Request: PHOTO_INVALID_DIMENSIONS"));
                }
                Ok(inner.new_file(bytes, "photos", "jpg"))
            } else {
                if bytes.len() > DOCUMENT_MAX_BYTES {
                    return Err(ApiError {
                        code: 413,
                        description: "Request Entity Too Large".into(),
                        retry_after: None,
                    });
                }
                let ext = name
                    .as_deref()
                    .and_then(|n| n.rsplit_once('.'))
                    .map(|(_, e)| e.to_string())
                    .unwrap_or_else(|| "bin".into());
                let mut f = inner.new_file(bytes, "documents", &ext);
                f.mime_type = Some(match ext.as_str() {
                    "png" => "image/png".into(),
                    "jpg" | "jpeg" => "image/jpeg".into(),
                    "webp" => "image/webp".into(),
                    "gif" => "image/gif".into(),
                    _ => "application/octet-stream".into(),
                });
                f.file_name = name;
                inner.files.insert(f.file_id.clone(), f.clone());
                Ok(f)
            }
        }
        None => {
            let id = value.unwrap_or_default();
            if id.starts_with("http://") || id.starts_with("https://") {
                return Err(bad("Bad Request: wrong file identifier/HTTP URL specified"));
            }
            inner.files.get(id).cloned().ok_or_else(|| bad("Bad Request: wrong file identifier/HTTP URL specified"))
        }
    }
}

fn send_media(shared: &Shared, p: &Params, kind: &str) -> ApiResult {
    let mut inner = shared.lock();
    let chat = target_chat(&inner, p)?;
    let parse_mode = p.str("parse_mode");
    let raw = p.str("caption");
    let caption = check_caption(raw.as_deref(), parse_mode.as_deref())?;
    let markup = p.json("reply_markup")?;
    check_markup(&markup)?;
    let reply = reply_to(&inner, &chat, p)?;
    let value = p.str(kind);
    let file = media_file(&mut inner, p, kind, value.as_deref(), kind)?;
    take_slot(&mut inner, &chat)?;
    let (photo, document) = if kind == "photo" { (Some(file), None) } else { (None, Some(file)) };
    let content = Content { text: None, raw, caption, photo, document, reply_markup: markup };
    Ok(store_bot_message(&mut inner, &chat, content, reply, None))
}

fn send_media_group(shared: &Shared, p: &Params) -> ApiResult {
    let mut inner = shared.lock();
    let chat = target_chat(&inner, p)?;
    let media =
        p.json("media")?.and_then(|m| m.as_array().cloned()).ok_or_else(|| bad("Bad Request: media is empty"))?;
    if !(2..=10).contains(&media.len()) {
        return Err(bad("Bad Request: wrong number of media specified; must be 2-10"));
    }
    let mut items = vec![];
    for (i, m) in media.iter().enumerate() {
        let kind = m["type"].as_str().unwrap_or_default();
        if kind != "photo" && kind != "document" {
            return Err(bad(format!("Bad Request: unsupported media type \"{kind}\" in item {i}")));
        }
        let raw = m["caption"].as_str().map(str::to_string);
        let caption = check_caption(raw.as_deref(), m["parse_mode"].as_str())?;
        let file = media_file(&mut inner, p, "", m["media"].as_str(), kind)?;
        items.push((kind.to_string(), raw, caption, file));
    }
    let reply = reply_to(&inner, &chat, p)?;
    take_slot(&mut inner, &chat)?;
    inner.next_group_id += 1;
    let group = inner.next_group_id.to_string();
    let mut out = vec![];
    for (kind, raw, caption, file) in items {
        let (photo, document) = if kind == "photo" { (Some(file), None) } else { (None, Some(file)) };
        let content = Content { text: None, raw, caption, photo, document, reply_markup: None };
        out.push(store_bot_message(&mut inner, &chat, content, reply, Some(group.clone())));
    }
    Ok(Value::Array(out))
}

#[derive(Clone, Copy, PartialEq)]
enum EditKind {
    Text,
    Caption,
    Media,
    Markup,
}

fn edit(shared: &Shared, p: &Params, kind: EditKind) -> ApiResult {
    let mut inner = shared.lock();
    if p.str("inline_message_id").is_some() {
        return Err(bad("Bad Request: inline messages are not supported by this fake"));
    }
    let chat = target_chat(&inner, p)?;
    let id = p.int("message_id").ok_or_else(|| bad("Bad Request: message identifier is not specified"))?;
    let current = inner
        .chats
        .get(&chat.id)
        .and_then(|c| c.messages.get(&id))
        .filter(|m| m.from_bot && !m.deleted)
        .cloned()
        .ok_or_else(|| bad("Bad Request: message to edit not found"))?;
    let markup = p.json("reply_markup")?;
    check_markup(&markup)?;
    let parse_mode = p.str("parse_mode");
    let mut next = current.content.clone();
    next.reply_markup = markup;
    match kind {
        EditKind::Text => {
            if current.content.text.is_none() {
                return Err(bad("Bad Request: there is no text in the message to edit"));
            }
            let raw = p.req_str("text").map_err(|_| bad("Bad Request: message text is empty"))?;
            next.text = Some(check_text(&raw, parse_mode.as_deref())?);
            next.raw = Some(raw);
        }
        EditKind::Caption => {
            if current.content.photo.is_none() && current.content.document.is_none() {
                return Err(bad("Bad Request: there is no caption in the message to edit"));
            }
            let raw = p.str("caption");
            next.caption = check_caption(raw.as_deref(), parse_mode.as_deref())?;
            next.raw = raw;
        }
        EditKind::Media => {
            if current.content.text.is_some() {
                return Err(bad("Bad Request: there is no media in the message to edit"));
            }
            let media = p.json("media")?.ok_or_else(|| bad("Bad Request: media is empty"))?;
            let mkind = media["type"].as_str().unwrap_or_default().to_string();
            if mkind != "photo" && mkind != "document" {
                return Err(bad(format!("Bad Request: unsupported media type \"{mkind}\"")));
            }
            let raw = media["caption"].as_str().map(str::to_string);
            next.caption = check_caption(raw.as_deref(), media["parse_mode"].as_str())?;
            next.raw = raw;
            let file = media_file(&mut inner, p, "", media["media"].as_str(), &mkind)?;
            if mkind == "photo" {
                next.photo = Some(file);
                next.document = None;
            } else {
                next.document = Some(file);
                next.photo = None;
            }
        }
        EditKind::Markup => {}
    }
    let same_file = |a: &Option<FakeFile>, b: &Option<FakeFile>| {
        a.as_ref().map(|f| &f.file_unique_id) == b.as_ref().map(|f| &f.file_unique_id)
    };
    let c = &current.content;
    if c.text == next.text
        && c.caption == next.caption
        && c.raw == next.raw
        && c.reply_markup == next.reply_markup
        && same_file(&c.photo, &next.photo)
        && same_file(&c.document, &next.document)
    {
        return Err(bad(NOT_MODIFIED));
    }
    take_slot(&mut inner, &chat)?;
    let chat_state = inner.chats.get_mut(&chat.id).expect("chat exists");
    let m = chat_state.messages.get_mut(&id).expect("message exists");
    let old = std::mem::replace(&mut m.content, next);
    m.history.push(old);
    let m = m.clone();
    Ok(inner.message_json(&m, false))
}

fn delete_message(shared: &Shared, p: &Params) -> ApiResult {
    let mut inner = shared.lock();
    let chat = target_chat(&inner, p)?;
    let id = p.int("message_id").ok_or_else(|| bad("Bad Request: message identifier is not specified"))?;
    let m = inner
        .chats
        .get_mut(&chat.id)
        .and_then(|c| c.messages.get_mut(&id))
        .filter(|m| !m.deleted)
        .ok_or_else(|| bad("Bad Request: message to delete not found"))?;
    m.deleted = true;
    Ok(json!(true))
}

fn answer_callback(shared: &Shared, p: &Params) -> ApiResult {
    let mut inner = shared.lock();
    let id = p.req_str("callback_query_id").map_err(|_| bad(QUERY_INVALID))?;
    let timeout = inner.config.callback_timeout;
    let text = p.str("text").unwrap_or_default();
    if utf16_len(&text) > 200 {
        return Err(bad("Bad Request: MESSAGE_TOO_LONG"));
    }
    let (rec, at) = inner.callbacks.get_mut(&id).ok_or_else(|| bad(QUERY_INVALID))?;
    if rec.answer.is_some() || at.elapsed() > timeout {
        return Err(bad(QUERY_INVALID));
    }
    rec.answer = Some(text);
    Ok(json!(true))
}

fn get_file(shared: &Shared, p: &Params) -> ApiResult {
    let inner = shared.lock();
    let id = p.req_str("file_id").map_err(|_| bad("Bad Request: file_id is empty"))?;
    // Thumbnails (`…_t`) resolve to the same stored file.
    let key = id.strip_suffix("_t").unwrap_or(&id);
    let f = inner.files.get(key).ok_or_else(|| bad("Bad Request: invalid file_id"))?;
    if f.bytes.len() > DOWNLOAD_MAX_BYTES {
        return Err(bad("Bad Request: file is too big"));
    }
    Ok(json!({"file_id": id, "file_unique_id": f.file_unique_id, "file_size": f.bytes.len(), "file_path": f.file_path}))
}

fn set_commands(shared: &Shared, p: &Params) -> ApiResult {
    let list =
        p.json("commands")?.and_then(|c| c.as_array().cloned()).ok_or_else(|| bad("Bad Request: commands is empty"))?;
    if list.len() > 100 {
        return Err(bad("Bad Request: too many commands specified"));
    }
    let mut out = vec![];
    for c in list {
        let name = c["command"].as_str().unwrap_or_default().to_string();
        let desc = c["description"].as_str().unwrap_or_default().to_string();
        if name.is_empty()
            || name.len() > 32
            || !name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        {
            return Err(bad("Bad Request: BOT_COMMAND_INVALID"));
        }
        if desc.is_empty() || desc.chars().count() > 256 {
            return Err(bad("Bad Request: command description must be 1-256 characters"));
        }
        out.push((name, desc));
    }
    let mut inner = shared.lock();
    let key = scope_key(&inner, p)?;
    inner.commands.insert(key, out);
    Ok(json!(true))
}

/// The stored key of a call's `scope` and `language_code` (see `FakeTelegram::menu`).
fn scope_key(inner: &Inner, p: &Params) -> Result<String, ApiError> {
    let scope = p.json("scope")?.unwrap_or_else(|| json!({"type": "default"}));
    let chat = |inner: &Inner| -> Result<i64, ApiError> {
        let id = match &scope["chat_id"] {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            Value::Null => return Err(bad("Bad Request: chat_id is empty")),
            _ => None,
        };
        // Only chats the bot has seen exist for it.
        id.filter(|id| inner.chats.get(id).is_some_and(|c| c.chat.is_some()))
            .ok_or_else(|| bad("Bad Request: chat not found"))
    };
    let key = match scope["type"].as_str().unwrap_or_default() {
        t @ ("default" | "all_private_chats" | "all_group_chats" | "all_chat_administrators") => t.to_string(),
        "chat" => format!("chat:{}", chat(inner)?),
        "chat_administrators" => {
            let id = chat(inner)?;
            if id > 0 {
                return Err(bad("Bad Request: can't use chat_administrators scope in private chats"));
            }
            format!("chat_administrators:{id}")
        }
        "chat_member" => {
            let id = chat(inner)?;
            let user = scope["user_id"].as_i64().ok_or_else(|| bad("Bad Request: user_id is empty"))?;
            if id > 0 {
                return Err(bad("Bad Request: can't use chat_member scope in private chats"));
            }
            format!("chat_member:{id}:{user}")
        }
        _ => return Err(bad("Bad Request: can't parse BotCommandScope JSON object")),
    };
    Ok(match p.str("language_code").filter(|l| !l.is_empty()) {
        Some(lang) => format!("{key}|{lang}"),
        None => key,
    })
}

fn get_commands(shared: &Shared, p: &Params) -> ApiResult {
    let inner = shared.lock();
    let key = scope_key(&inner, p)?;
    let list = inner.commands.get(&key).cloned().unwrap_or_default();
    Ok(json!(list.iter().map(|(c, d)| json!({"command": c, "description": d})).collect::<Vec<_>>()))
}

fn delete_commands(shared: &Shared, p: &Params) -> ApiResult {
    let mut inner = shared.lock();
    let key = scope_key(&inner, p)?;
    inner.commands.remove(&key);
    Ok(json!(true))
}
