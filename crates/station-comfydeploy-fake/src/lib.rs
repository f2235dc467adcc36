//! A fake ComfyDeploy API for tests, written from the provider's public API
//! description:
//!
//! - `POST /api/run/deployment/queue` with `Authorization: Bearer <key>` and
//!   `{deployment_id, inputs: {name: value}, webhook?}` → `{run_id}`;
//!   401 without the key, 404 for an unknown deployment, 422 for inputs the
//!   deployment does not have or of the wrong kind.
//! - `GET /api/run/{run_id}` → `{id, status, progress, live_status, outputs:
//!   [{data: {images: [{url, filename, type}]}}], created_at, started_at,
//!   ended_at}`; status `not-started|queued|started|running|uploading|
//!   success|failed|cancelled|timeout`.
//! - `POST /api/run/{run_id}/cancel`.
//! - Webhooks: a POST to the run's `webhook` with `{run_id, status,
//!   progress, live_status, outputs?}` at each of queued, started, running
//!   (every step), uploading, success and failed.
//!
//! Outputs are PNGs served from the fake's own `/files/{run}/{name}`
//! (without auth, like the provider's storage links). Their size is the
//! run's `width`/`height` inputs (8×8 without them) and their colour follows
//! its `seed`. [`Behaviour`] sets how long runs wait and take, whether they
//! fail, and whether webhooks are sent; counters let tests check what
//! Station asked for.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The kind of value an external input of a deployment takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `ComfyUIDeployExternalText`: a string.
    Text,
    /// `ComfyUIDeployExternalNumber` / `…NumberInt`: a number.
    Number,
    /// `ComfyUIDeployExternalImage`: an `http(s)` URL or a `data:image/…` URL.
    Image,
}

/// A deployment the fake knows: its id and external inputs.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The id runs are queued with.
    pub id: String,
    /// External input names and kinds.
    pub inputs: BTreeMap<String, InputKind>,
}

impl Deployment {
    /// A deployment `id` with these external inputs.
    pub fn new(id: &str, inputs: &[(&str, InputKind)]) -> Deployment {
        Deployment { id: id.into(), inputs: inputs.iter().map(|(n, k)| (n.to_string(), *k)).collect() }
    }
}

/// How runs behave; changeable while the fake runs ([`FakeComfyDeploy::set_behaviour`]).
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Time a run stays `queued` before it starts.
    pub queue_ms: u64,
    /// Steps a run reports while `running`.
    pub steps: u32,
    /// Time per step.
    pub step_ms: u64,
    /// When set, runs fail halfway with this message (in `live_status`).
    pub fail_with: Option<String>,
    /// Send webhooks to the run's `webhook` URL.
    pub webhooks: bool,
    /// Output images per run.
    pub images: u32,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour { queue_ms: 50, steps: 4, step_ms: 50, fail_with: None, webhooks: true, images: 1 }
    }
}

/// How the fake starts.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The API key requests must carry as a bearer token.
    pub api_key: String,
    /// The deployments it runs.
    pub deployments: Vec<Deployment>,
    /// How runs behave at first.
    pub behaviour: Behaviour,
}

struct Run {
    id: String,
    deployment_id: String,
    inputs: serde_json::Map<String, Value>,
    webhook: Option<String>,
    status: &'static str,
    progress: f64,
    live_status: Option<String>,
    outputs: Vec<Value>,
    created_at: String,
    started_at: Option<String>,
    ended_at: Option<String>,
}

impl Run {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "deployment_id": self.deployment_id,
            "status": self.status,
            "progress": self.progress,
            "live_status": self.live_status,
            "outputs": self.outputs,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        })
    }

    fn ended(&self) -> bool {
        matches!(self.status, "success" | "failed" | "cancelled" | "timeout")
    }
}

struct Inner {
    options: FakeOptions,
    base: String,
    behaviour: Mutex<Behaviour>,
    runs: Mutex<HashMap<String, Run>>,
    files: Mutex<HashMap<String, Vec<u8>>>,
    created: AtomicUsize,
    cancels: AtomicUsize,
    status_reads: AtomicUsize,
    webhooks_sent: AtomicUsize,
    http: reqwest::Client,
}

/// A running fake ComfyDeploy API on 127.0.0.1.
#[derive(Clone)]
pub struct FakeComfyDeploy(Arc<Inner>);

impl FakeComfyDeploy {
    /// Starts the fake on a free port.
    pub async fn start(options: FakeOptions) -> FakeComfyDeploy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind the fake");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let inner = Arc::new(Inner {
            behaviour: Mutex::new(options.behaviour.clone()),
            options,
            base,
            runs: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            created: AtomicUsize::new(0),
            cancels: AtomicUsize::new(0),
            status_reads: AtomicUsize::new(0),
            webhooks_sent: AtomicUsize::new(0),
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client"),
        });
        let app = Router::new()
            .route("/api/run/deployment/queue", post(queue))
            .route("/api/run/{id}", get(status))
            .route("/api/run/{id}/cancel", post(cancel))
            .route("/files/{run}/{name}", get(file))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeComfyDeploy(inner)
    }

    /// Its base URL (`http://127.0.0.1:PORT`), the `api_url` Station is given.
    pub fn url(&self) -> String {
        self.0.base.clone()
    }

    /// Changes how runs queued from now on behave (and running ones' remaining steps).
    pub fn set_behaviour(&self, b: Behaviour) {
        *self.0.behaviour.lock().expect("behaviour") = b;
    }

    /// Runs created (successful `POST /api/run/deployment/queue`).
    pub fn runs_created(&self) -> usize {
        self.0.created.load(Ordering::SeqCst)
    }

    /// Accepted `POST /api/run/{id}/cancel` calls.
    pub fn cancels(&self) -> usize {
        self.0.cancels.load(Ordering::SeqCst)
    }

    /// Answered `GET /api/run/{id}` calls.
    pub fn status_reads(&self) -> usize {
        self.0.status_reads.load(Ordering::SeqCst)
    }

    /// Webhook calls that reached their URL (any answer).
    pub fn webhooks_sent(&self) -> usize {
        self.0.webhooks_sent.load(Ordering::SeqCst)
    }

    /// A run as `GET /api/run/{id}` shows it.
    pub fn run(&self, id: &str) -> Option<Value> {
        self.0.runs.lock().expect("runs").get(id).map(Run::json)
    }

    /// The inputs a run was queued with.
    pub fn run_inputs(&self, id: &str) -> Option<serde_json::Map<String, Value>> {
        self.0.runs.lock().expect("runs").get(id).map(|r| r.inputs.clone())
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// The 401 answer unless `headers` carry the API key as a bearer token.
fn unauthorised(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    (given != Some(inner.options.api_key.as_str()))
        .then(|| error(StatusCode::UNAUTHORIZED, "Invalid or missing API key"))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn queue(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Some(r) = unauthorised(&inner, &headers) {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "body is not JSON");
    };
    let Some(deployment_id) = body.get("deployment_id").and_then(Value::as_str) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "deployment_id is required");
    };
    let Some(deployment) = inner.options.deployments.iter().find(|d| d.id == deployment_id) else {
        return error(StatusCode::NOT_FOUND, format!("Deployment {deployment_id} not found"));
    };
    let inputs = match body.get("inputs") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return error(StatusCode::UNPROCESSABLE_ENTITY, "inputs must be an object"),
    };
    for (name, value) in &inputs {
        let Some(kind) = deployment.inputs.get(name) else {
            let known: Vec<&str> = deployment.inputs.keys().map(String::as_str).collect();
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Unknown input \"{name}\"; the deployment's inputs are {}", known.join(", ")),
            );
        };
        let ok = match kind {
            InputKind::Text => value.is_string(),
            InputKind::Number => value.is_number(),
            InputKind::Image => value
                .as_str()
                .is_some_and(|s| s.starts_with("data:image/") || s.starts_with("http://") || s.starts_with("https://")),
        };
        if !ok {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Input \"{name}\" has the wrong type: {kind:?} expected"),
            );
        }
    }
    let webhook = body.get("webhook").and_then(Value::as_str).map(str::to_string);
    let id = uuid::Uuid::new_v4().to_string();
    let run = Run {
        id: id.clone(),
        deployment_id: deployment_id.into(),
        inputs,
        webhook,
        status: "queued",
        progress: 0.0,
        live_status: None,
        outputs: vec![],
        created_at: now(),
        started_at: None,
        ended_at: None,
    };
    inner.runs.lock().expect("runs").insert(id.clone(), run);
    inner.created.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(drive(inner.clone(), id.clone()));
    axum::Json(json!({"run_id": id})).into_response()
}

async fn status(State(inner): State<Arc<Inner>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = unauthorised(&inner, &headers) {
        return r;
    }
    let runs = inner.runs.lock().expect("runs");
    match runs.get(&id) {
        Some(run) => {
            inner.status_reads.fetch_add(1, Ordering::SeqCst);
            axum::Json(run.json()).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("Run {id} not found")),
    }
}

async fn cancel(State(inner): State<Arc<Inner>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = unauthorised(&inner, &headers) {
        return r;
    }
    let mut runs = inner.runs.lock().expect("runs");
    let Some(run) = runs.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, format!("Run {id} not found"));
    };
    inner.cancels.fetch_add(1, Ordering::SeqCst);
    if !run.ended() {
        run.status = "cancelled";
        run.ended_at = Some(now());
    }
    axum::Json(json!({"message": "Run cancelled"})).into_response()
}

async fn file(State(inner): State<Arc<Inner>>, Path((run, name)): Path<(String, String)>) -> Response {
    match inner.files.lock().expect("files").get(&format!("{run}/{name}")) {
        Some(bytes) => ([(header::CONTENT_TYPE, "image/png")], bytes.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such file"),
    }
}

/// Moves run `id` through its states, unless it is cancelled on the way.
async fn drive(inner: Arc<Inner>, id: String) {
    let b = inner.behaviour.lock().expect("behaviour").clone();
    send_hook(&inner, &id).await;
    tokio::time::sleep(Duration::from_millis(b.queue_ms)).await;
    if !step(&inner, &id, |r| {
        r.status = "started";
        r.started_at = Some(now());
        r.live_status = Some("starting".into());
    }) {
        return;
    }
    send_hook(&inner, &id).await;
    let steps = b.steps.max(1);
    for i in 1..=steps {
        tokio::time::sleep(Duration::from_millis(b.step_ms)).await;
        let fail = inner.behaviour.lock().expect("behaviour").fail_with.clone();
        if let Some(message) = fail.filter(|_| i > steps / 2) {
            if step(&inner, &id, |r| {
                r.status = "failed";
                r.live_status = Some(message.clone());
                r.ended_at = Some(now());
            }) {
                send_hook(&inner, &id).await;
            }
            return;
        }
        if !step(&inner, &id, |r| {
            r.status = "running";
            r.progress = f64::from(i) / f64::from(steps);
            r.live_status = Some(format!("KSampler {i}/{steps}"));
        }) {
            return;
        }
        send_hook(&inner, &id).await;
    }
    if !step(&inner, &id, |r| {
        r.status = "uploading";
        r.live_status = Some("uploading outputs".into());
    }) {
        return;
    }
    send_hook(&inner, &id).await;
    let inputs = inner.run_inputs(&id);
    let mut images = vec![];
    for n in 0..b.images.max(1) {
        let name = format!("ComfyUI_{:05}_.png", n + 1);
        inner.files.lock().expect("files").insert(format!("{id}/{name}"), picture(&inputs, n));
        images.push(json!({"url": format!("{}/files/{id}/{name}", inner.base), "filename": name, "type": "output"}));
    }
    if step(&inner, &id, |r| {
        r.status = "success";
        r.progress = 1.0;
        r.live_status = None;
        r.ended_at = Some(now());
        r.outputs = vec![json!({"data": {"images": images}})];
    }) {
        send_hook(&inner, &id).await;
    }
}

impl Inner {
    fn run_inputs(&self, id: &str) -> serde_json::Map<String, Value> {
        self.runs.lock().expect("runs").get(id).map(|r| r.inputs.clone()).unwrap_or_default()
    }
}

/// Applies `change` to a run that has not ended; false when it has (cancelled).
fn step(inner: &Inner, id: &str, change: impl FnOnce(&mut Run)) -> bool {
    let mut runs = inner.runs.lock().expect("runs");
    match runs.get_mut(id) {
        Some(r) if !r.ended() => {
            change(r);
            true
        }
        _ => false,
    }
}

async fn send_hook(inner: &Inner, id: &str) {
    if !inner.behaviour.lock().expect("behaviour").webhooks {
        return;
    }
    let (url, body) = {
        let runs = inner.runs.lock().expect("runs");
        let Some(r) = runs.get(id) else { return };
        let Some(url) = r.webhook.clone() else { return };
        let mut body = json!({"run_id": r.id, "status": r.status, "progress": r.progress});
        if let Some(l) = &r.live_status {
            body["live_status"] = json!(l);
        }
        if !r.outputs.is_empty() {
            body["outputs"] = json!(r.outputs);
        }
        (url, body)
    };
    if inner.http.post(&url).json(&body).send().await.is_ok() {
        inner.webhooks_sent.fetch_add(1, Ordering::SeqCst);
    }
}

/// A PNG of the run's `width`×`height` (8×8 by default) in a colour from its `seed`.
fn picture(inputs: &serde_json::Map<String, Value>, n: u32) -> Vec<u8> {
    let dim = |k: &str| inputs.get(k).and_then(Value::as_u64).map(|v| v.clamp(1, 512) as u32).unwrap_or(8);
    let seed = inputs.get("seed").and_then(Value::as_u64).unwrap_or(0);
    let colour = [(seed % 251) as u8, ((seed / 251) % 251) as u8, (n * 60 % 256) as u8];
    let img = image::RgbImage::from_pixel(dim("width"), dim("height"), image::Rgb(colour));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encode png");
    out.into_inner()
}
