//! HTTP and websocket endpoints, answering in the recorded shapes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use serde_json::{Map, Number, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::state::{QueueItem, Shared, SocketConn, now_ms, status_data};
use crate::validate::{Validation, validate_prompt};

/// `execution.SENSITIVE_EXTRA_DATA_KEYS`: taken out of `extra_data` before the prompt is queued,
/// so `/queue` and history never show them.
const SENSITIVE_EXTRA_DATA_KEYS: [&str; 2] = ["auth_token_comfy_org", "api_key_comfy_org"];

type S = State<Arc<Shared>>;

/// Serves the API on `listener` until [`Shared::stop_listening`] is called.
pub(crate) fn serve(shared: &Arc<Shared>, listener: TcpListener) {
    let app = Router::new()
        .route("/prompt", post(post_prompt).get(get_prompt))
        .route("/queue", get(get_queue).post(post_queue))
        .route("/interrupt", post(post_interrupt))
        .route("/history", get(get_history_all))
        .route("/history/{id}", get(get_history))
        .route("/view", get(get_view))
        .route("/upload/image", post(upload_image))
        .route("/object_info", get(get_object_info))
        .route("/object_info/{class}", get(get_object_info_one))
        .route("/system_stats", get(system_stats))
        .route("/models", get(get_model_folders))
        .route("/models/{folder}", get(get_models))
        .route("/view_metadata/{folder}", get(get_view_metadata))
        .route("/embeddings", get(get_embeddings))
        .route("/ws", get(ws_upgrade))
        .layer(middleware::from_fn_with_state(shared.clone(), hold_while_frozen))
        .with_state(shared.clone());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    shared.set_listener_stop(stop_tx);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await;
    });
}

fn error_body(kind: &str, message: &str, details: &str, node_errors: Value) -> Value {
    json!({
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": node_errors
    })
}

/// A frozen (SIGSTOPped) server reads nothing and answers nothing; requests wait for the thaw.
async fn hold_while_frozen(State(shared): S, request: Request, next: Next) -> Response {
    shared.thawed().await;
    next.run(request).await
}

async fn post_prompt(State(shared): S, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, "invalid JSON").into_response(),
    };
    // Like server.py: the number is taken (and the counter moves) before validation.
    let number = {
        let mut st = shared.lock();
        st.prompts_received += 1;
        st.last_prompt = Some(body.clone());
        match body.get("number") {
            Some(n) => {
                Number::from_f64(n.as_f64().or_else(|| n.as_str().and_then(|s| s.trim().parse().ok())).unwrap_or(0.0))
                    .unwrap_or_else(|| Number::from(0))
            }
            None => {
                let n = st.number;
                st.number += 1;
                let front = body.get("front").is_some_and(|f| f.as_bool().unwrap_or(!f.is_null()));
                Number::from(if front { -n } else { n })
            }
        }
    };
    let Some(graph) = body.get("prompt").and_then(Value::as_object).cloned() else {
        let err = error_body("no_prompt", "No prompt provided", "No prompt provided", json!({}));
        return (StatusCode::BAD_REQUEST, Json(err)).into_response();
    };
    let prompt_id = match body.get("prompt_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => uuid::Uuid::new_v4().to_string(),
        Some(other) => other.to_string(),
    };
    let mut extra_data = body.get("extra_data").and_then(Value::as_object).cloned().unwrap_or_default();
    if let Some(client_id) = body.get("client_id") {
        extra_data.insert("client_id".into(), client_id.clone());
    }
    match enqueue(&shared, number, prompt_id, graph, extra_data) {
        Ok(accepted) => Json(accepted).into_response(),
        Err(rejected) => (StatusCode::BAD_REQUEST, Json(rejected)).into_response(),
    }
}

/// Validates and queues a prompt; answers the `/prompt` body for success (200) or failure (400).
fn enqueue(
    shared: &Arc<Shared>,
    number: Number,
    prompt_id: String,
    graph: Map<String, Value>,
    mut extra_data: Map<String, Value>,
) -> Result<Value, Value> {
    let info = shared.object_info();
    let inputs: Vec<String> = {
        let st = shared.lock();
        st.files
            .keys()
            .filter(|(kind, _, _)| kind == "input")
            .map(|(_, sub, name)| if sub.is_empty() { name.clone() } else { format!("{sub}/{name}") })
            .collect()
    };
    let (outputs, node_errors) = match validate_prompt(&graph, &info, &inputs) {
        Validation::Invalid { error, node_errors } => return Err(json!({"error": error, "node_errors": node_errors})),
        Validation::Valid { outputs, node_errors } => (outputs, node_errors),
    };
    for key in SENSITIVE_EXTRA_DATA_KEYS {
        extra_data.remove(key);
    }
    push_queued(shared, QueueItem { number: number.clone(), prompt_id: prompt_id.clone(), graph, extra_data, outputs });
    Ok(json!({"prompt_id": prompt_id, "number": number, "node_errors": node_errors}))
}

/// Stamps `create_time`, queues the item and tells everyone (`status`) and the worker.
fn push_queued(shared: &Arc<Shared>, mut item: QueueItem) {
    item.extra_data.insert("create_time".into(), json!(now_ms()));
    {
        let mut st = shared.lock();
        st.queue.push(item);
        // Prompts held at once: the one running (if any) and those pending.
        let held = st.queue.len() + usize::from(st.running.is_some());
        st.most_held = st.most_held.max(held);
    }
    shared.broadcast_status();
    shared.wake.notify_one();
}

/// Queues the `index`th prompt of another client: the recorded busy-queue graph
/// (`EmptyImage → StationSteps → SaveImage`), one colour per prompt. Returns its id.
pub(crate) fn enqueue_external(shared: &Arc<Shared>, client_id: &str, index: usize, step_ms: u64) -> String {
    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 99037 + index}},
        "2": {"class_type": "StationSteps", "inputs": {"image": ["1", 0], "steps": 4, "step_ms": step_ms}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "external"}}
    });
    let graph = graph.as_object().cloned().unwrap_or_default();
    let number = {
        let mut st = shared.lock();
        st.number += 1;
        Number::from(st.number - 1)
    };
    let prompt_id = uuid::Uuid::new_v4().to_string();
    let mut extra_data = Map::new();
    extra_data.insert("client_id".into(), json!(client_id));
    // The graph is fixed and valid, so it skips validation (it queues even with hidden nodes).
    let outputs = vec!["3".to_owned()];
    push_queued(shared, QueueItem { number, prompt_id: prompt_id.clone(), graph, extra_data, outputs });
    prompt_id
}

async fn get_prompt(State(shared): S) -> Json<Value> {
    let remaining = shared.lock().remaining();
    Json(json!({"exec_info": {"queue_remaining": remaining}}))
}

async fn get_queue(State(shared): S) -> Json<Value> {
    let st = shared.lock();
    let running: Vec<Value> = st.running.iter().map(QueueItem::to_json).collect();
    let pending: Vec<Value> = st.queue.iter().map(QueueItem::to_json).collect();
    Json(json!({"queue_running": running, "queue_pending": pending}))
}

async fn post_queue(State(shared): S, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // server.py reports the queue once per change it makes: a wipe once, a deleted item once
    // (twice when it was the last one: that delete wipes, then reports), nothing for unknown ids.
    let mut updates = 0;
    {
        let mut st = shared.lock();
        if body.get("clear").and_then(Value::as_bool) == Some(true) {
            st.queue.clear();
            updates += 1;
        }
        if let Some(ids) = body.get("delete").and_then(Value::as_array) {
            for id in ids.iter().filter_map(Value::as_str) {
                updates += st.queue.delete(id);
            }
        }
    }
    for _ in 0..updates {
        shared.broadcast_status();
    }
    StatusCode::OK.into_response()
}

async fn post_interrupt(State(shared): S, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let target = body.get("prompt_id").and_then(Value::as_str);
    let mut st = shared.lock();
    let matches = match (target, &st.running) {
        (None, _) => true,
        (Some(id), Some(running)) => running.prompt_id == id,
        (Some(_), None) => false,
    };
    if matches {
        st.interrupt = true;
    }
    StatusCode::OK.into_response()
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    max_items: Option<usize>,
}

async fn get_history_all(State(shared): S, Query(q): Query<HistoryQuery>) -> Json<Value> {
    let st = shared.lock();
    let skip = q.max_items.map(|m| st.history.len().saturating_sub(m)).unwrap_or(0);
    let map: Map<String, Value> = st.history.iter().skip(skip).map(|(k, v)| (k.clone(), v.clone())).collect();
    Json(Value::Object(map))
}

async fn get_history(State(shared): S, Path(id): Path<String>) -> Json<Value> {
    let st = shared.lock();
    let mut map = Map::new();
    if let Some(entry) = st.history.get(&id) {
        map.insert(id, entry.clone());
    }
    Json(Value::Object(map))
}

async fn get_view(State(shared): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(filename) = q.get("filename") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let kind = q.get("type").cloned().unwrap_or_else(|| "output".into());
    let subfolder = q.get("subfolder").cloned().unwrap_or_default();
    if filename.contains("..") || subfolder.contains("..") {
        return StatusCode::FORBIDDEN.into_response();
    }
    let file = shared.lock().files.get(&(kind, subfolder, filename.clone())).cloned();
    match file {
        Some(bytes) => {
            let mime = mime_for(filename);
            (
                [
                    (header::CONTENT_TYPE, mime.to_owned()),
                    (header::CONTENT_DISPOSITION, format!("filename=\"{filename}\"")),
                ],
                bytes,
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn mime_for(filename: &str) -> &'static str {
    let lower = filename.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
        "image/jpeg"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else {
        "application/octet-stream"
    }
}

async fn upload_image(State(shared): S, mut multipart: Multipart) -> Response {
    let mut image: Option<(String, Vec<u8>)> = None;
    let mut overwrite = false;
    let mut subfolder = String::new();
    let mut kind = "input".to_owned();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let Ok(data) = field.bytes().await else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let text = || String::from_utf8_lossy(&data).into_owned();
        match name.as_str() {
            "image" => image = Some((file_name.unwrap_or_default(), data.to_vec())),
            "overwrite" => overwrite = matches!(text().as_str(), "true" | "1"),
            "subfolder" => subfolder = text(),
            "type" => kind = text(),
            _ => {}
        }
    }
    let Some((filename, data)) = image else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if filename.is_empty()
        || filename.contains("..")
        || filename.contains('/')
        || subfolder.contains("..")
        || !matches!(kind.as_str(), "input" | "temp" | "output")
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let mut st = shared.lock();
    let mut name = filename.clone();
    if !overwrite {
        // The real server renames clashing uploads to "name (1).ext", "name (2).ext", ...
        let (stem, ext) = match filename.rsplit_once('.') {
            Some((s, e)) => (s.to_owned(), format!(".{e}")),
            None => (filename.clone(), String::new()),
        };
        let mut i = 1;
        while st.files.contains_key(&(kind.clone(), subfolder.clone(), name.clone())) {
            name = format!("{stem} ({i}){ext}");
            i += 1;
        }
    }
    st.files.insert((kind.clone(), subfolder.clone(), name.clone()), data);
    st.uploads.push(if subfolder.is_empty() { name.clone() } else { format!("{subfolder}/{name}") });
    Json(json!({"name": name, "subfolder": subfolder, "type": kind})).into_response()
}

async fn get_model_folders(State(shared): S) -> Json<Value> {
    Json(json!(shared.lock().models.names()))
}

/// The sorted files of one model folder; a folder the server does not register (including the
/// legacy names `clip` and `unet`) is a bare 404, as `server.py` answers.
async fn get_models(State(shared): S, Path(folder): Path<String>) -> Response {
    match shared.lock().model_list(&folder) {
        Some(files) => Json(json!(files)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /view_metadata/{folder}?filename=NAME`: the `__metadata__` object of a model file's
/// safetensors header, as `server.py` answers it — a bare 404 without `filename`, for a name not
/// ending in `.safetensors`, a folder or file the server does not have (legacy folder names are
/// mapped, as `folder_paths.get_full_path` does), or a header without `__metadata__`. The metadata
/// of configured files is what [`crate::FakeComfy::set_model_metadata`] gave (none by default);
/// files saved under `output/<folder>` have their real header read.
async fn get_view_metadata(
    State(shared): S,
    Path(folder): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = shared.lock();
    st.metadata_requests += 1;
    let Some(filename) = q.get("filename") else { return StatusCode::NOT_FOUND.into_response() };
    if !filename.ends_with(".safetensors") || !st.has_model(&folder, filename) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let folder = crate::models::canonical(&folder);
    let meta = st.model_metadata.get(&(folder.to_owned(), filename.clone())).cloned().or_else(|| {
        let on_disk = if folder == "text_encoders" { "clip" } else { folder };
        let (sub, name) = match filename.rsplit_once('/') {
            Some((dir, name)) => (format!("{on_disk}/{dir}"), name.to_owned()),
            None => (on_disk.to_owned(), filename.clone()),
        };
        st.files.get(&("output".to_owned(), sub, name)).and_then(|bytes| safetensors_metadata(bytes))
    });
    match meta {
        Some(m) => Json(Value::Object(m)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The `__metadata__` object of a safetensors file's header (8-byte little-endian length, JSON).
fn safetensors_metadata(bytes: &[u8]) -> Option<Map<String, Value>> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(len).ok()?)?)?;
    let mut header: Map<String, Value> = serde_json::from_slice(header).ok()?;
    match header.remove("__metadata__")? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Embedding names without their extension (what `embedding:name` in a prompt refers to).
async fn get_embeddings(State(shared): S) -> Json<Value> {
    let files = shared.lock().model_list("embeddings").unwrap_or_default();
    let names: Vec<String> =
        files.into_iter().map(|f| f.rsplit_once('.').map(|(stem, _)| stem.to_owned()).unwrap_or(f)).collect();
    Json(json!(names))
}

/// Waits as long as a busy server takes to build its node list ([`crate::FakeComfy::set_object_info_delay`]).
async fn object_info_delay(shared: &Shared) {
    let ms = shared.lock().object_info_delay_ms;
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

async fn get_object_info(State(shared): S) -> Json<Value> {
    object_info_delay(&shared).await;
    Json(Value::Object(shared.object_info()))
}

async fn get_object_info_one(State(shared): S, Path(class): Path<String>) -> Json<Value> {
    object_info_delay(&shared).await;
    let info = shared.object_info();
    let mut map = Map::new();
    if let Some(entry) = info.get(&class) {
        map.insert(class, entry.clone());
    }
    Json(Value::Object(map))
}

async fn system_stats() -> Json<Value> {
    Json(json!({
        "system": {
            // `sys.platform` on 0.8 (older servers sent `os.name`, "posix").
            "os": "linux",
            "ram_total": 8_000_000_000u64,
            "ram_free": 6_000_000_000u64,
            "comfyui_version": "0.8.0",
            "required_frontend_version": "1.35.9",
            "installed_templates_version": "0.7.67",
            "required_templates_version": "0.7.67",
            "python_version": "3.12.3 (main, Nov  6 2025, 13:44:16) [GCC 13.3.0]",
            "pytorch_version": "2.9.1+cpu",
            "embedded_python": false,
            "argv": ["main.py", "--cpu", "--preview-method", "auto"]
        },
        "devices": [{
            "name": "cpu",
            "type": "cpu",
            "index": null,
            "vram_total": 8_000_000_000u64,
            "vram_free": 6_000_000_000u64,
            "torch_vram_total": 8_000_000_000u64,
            "torch_vram_free": 6_000_000_000u64
        }]
    }))
}

#[derive(serde::Deserialize)]
struct WsQuery {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
}

async fn ws_upgrade(State(shared): S, Query(q): Query<WsQuery>, ws: WebSocketUpgrade) -> Response {
    let sid = q.client_id.filter(|s| !s.is_empty()).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    ws.on_upgrade(move |socket| handle_socket(shared, socket, sid))
}

async fn handle_socket(shared: Arc<Shared>, socket: WebSocket, sid: String) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let conn_id = {
        let mut st = shared.lock();
        let remaining = st.remaining();
        let hello = json!({"type": "status", "data": status_data(remaining, Some(&sid))});
        let _ = tx.send(Message::Text(hello.to_string().into()));
        // Like the real server: a client reconnecting during its own prompt learns the node.
        let running_for_sid = st.running.as_ref().is_some_and(|r| r.client_id() == Some(sid.as_str()));
        if running_for_sid && let Some(node) = &st.last_node {
            let msg = json!({"type": "executing", "data": {"node": node}});
            let _ = tx.send(Message::Text(msg.to_string().into()));
        }
        st.next_conn += 1;
        let conn_id = st.next_conn;
        st.sockets.push(SocketConn { conn_id, sid: sid.clone(), tx });
        conn_id
    };
    let (mut sink, mut stream) = socket.split();
    let mut frozen = shared.frozen_watch();
    loop {
        // Frozen: neither read (no pong to pings) nor write until thawed.
        if frozen.wait_for(|f| !*f).await.is_err() {
            break;
        }
        tokio::select! {
            _ = frozen.changed() => {}
            out = rx.recv() => match out {
                Some(msg) => if sink.send(msg).await.is_err() { break },
                None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    shared.lock().sockets.retain(|s| s.conn_id != conn_id);
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
}
