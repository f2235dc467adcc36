//! Shared server state: queue, history, sockets, files and injected faults.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::Message;
use serde_json::{Map, Number, Value, json};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::FakeOptions;
use crate::exec::CachedOutputs;
use crate::models::ModelFolders;
use crate::queue::PromptHeap;
use crate::train::{TrainingRun, input_subfolders};

/// Node definitions with empty model/file lists, filled per request from the live state:
/// `object_info.json` is the recorded `object_info_subset.json`; `object_info_recorded_more.json`
/// holds the loaders, text and training nodes recorded in `models_queue_text.json` and
/// `object_info_training.json`; `object_info_extra.json` has nodes the recordings use without
/// listing them, the recordings' test nodes (`StationSteps`, `StationFail`) and the fake's own
/// `StationCaption`, plus `LoraLoaderModelOnly` and `CLIPLoader`, written from ComfyUI's
/// `nodes.py` (not recorded).
static BASE_OBJECT_INFO: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let mut info = Map::new();
    for text in [
        include_str!("../data/object_info.json"),
        include_str!("../data/object_info_recorded_more.json"),
        include_str!("../data/object_info_extra.json"),
    ] {
        let part: Map<String, Value> = serde_json::from_str(text).expect("embedded object_info data is valid JSON");
        info.extend(part);
    }
    info
});

/// Image extensions `LoadImage` offers (it filters the input folder by image MIME type).
const IMAGE_EXTENSIONS: [&str; 7] = [".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tiff"];

/// One queued prompt, as the real server keeps it.
#[derive(Debug, Clone)]
pub(crate) struct QueueItem {
    /// An integer from the server's counter, or the float a client sent as `number`.
    pub number: Number,
    pub prompt_id: String,
    pub graph: Map<String, Value>,
    pub extra_data: Map<String, Value>,
    pub outputs: Vec<String>,
}

impl QueueItem {
    /// The 5-element array the real server uses in `/queue` and history.
    pub fn to_json(&self) -> Value {
        json!([self.number, self.prompt_id, self.graph, self.extra_data, self.outputs])
    }

    pub fn client_id(&self) -> Option<&str> {
        self.extra_data.get("client_id").and_then(Value::as_str)
    }

    pub fn number_f64(&self) -> f64 {
        self.number.as_f64().unwrap_or(0.0)
    }
}

/// One open websocket.
pub(crate) struct SocketConn {
    pub conn_id: u64,
    pub sid: String,
    pub tx: mpsc::UnboundedSender<Message>,
}

/// Mutable state behind one lock; never held across an await.
pub(crate) struct State {
    pub queue: PromptHeap,
    pub running: Option<QueueItem>,
    pub interrupt: bool,
    /// Node currently executing, for the "executing" message sent to a reconnecting client.
    pub last_node: Option<String>,
    pub history: Map<String, Value>,
    pub number: i64,
    pub sockets: Vec<SocketConn>,
    pub next_conn: u64,
    /// (type, subfolder, filename) → bytes: the server's input/output/temp folders.
    pub files: HashMap<(String, String, String), Vec<u8>>,
    pub step_delay_ms: u64,
    /// How long `GET /object_info` takes to answer (a busy real server builds it slowly).
    pub object_info_delay_ms: u64,
    pub failures: HashMap<String, String>,
    pub missing: HashSet<String>,
    pub prompts_received: u64,
    /// The most prompts it held at once (running and pending), since start.
    pub most_held: usize,
    pub last_prompt: Option<Value>,
    pub uploads: Vec<String>,
    pub cache: HashMap<String, CachedOutputs>,
    /// Model files per folder, as configured (saved files are found in `files`).
    pub models: ModelFolders,
    /// (folder, file) → the `__metadata__` of configured model files that have one.
    pub model_metadata: HashMap<(String, String), Map<String, Value>>,
    /// `GET /view_metadata/…` requests received.
    pub metadata_requests: u64,
    /// Every `TrainLoraNode` run, oldest first.
    pub trainings: Vec<TrainingRun>,
    /// `TrainLoraNode` stops reporting after this many steps and waits until interrupted.
    pub stall_training_after: Option<u64>,
    /// A simulated GPU's run time and failure rate, applied to every prompt.
    pub profile: Option<crate::Profile>,
    /// Prompts run to their end (success, failure or interruption) and the
    /// milliseconds spent running them.
    pub usage: crate::Usage,
}

impl State {
    /// `GET /models/{folder}`: `None` for a folder the server does not have.
    pub fn model_list(&self, folder: &str) -> Option<Vec<String>> {
        self.models.list(folder, &self.files)
    }

    /// Whether `folder` (legacy names allowed) lists `name`, as loaders check before loading.
    pub fn has_model(&self, folder: &str, name: &str) -> bool {
        self.model_list(crate::models::canonical(folder)).is_some_and(|l| l.iter().any(|f| f == name))
    }

    /// Queued plus running prompts (`exec_info.queue_remaining`).
    pub fn remaining(&self) -> usize {
        self.queue.len() + usize::from(self.running.is_some())
    }
}

pub(crate) struct Shared {
    pub options: FakeOptions,
    state: Mutex<State>,
    pub wake: Notify,
    /// `true` while frozen (a SIGSTOPped process): nothing is answered and nothing advances.
    frozen: watch::Sender<bool>,
    executor: Mutex<Option<JoinHandle<()>>>,
    listener_stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Shared {
    pub fn new(options: FakeOptions) -> Arc<Shared> {
        let models = ModelFolders::new(&options.checkpoints, &options.loras, &options.upscale_models, &options.models);
        Arc::new(Shared {
            options,
            state: Mutex::new(State {
                queue: PromptHeap::default(),
                running: None,
                interrupt: false,
                last_node: None,
                history: Map::new(),
                number: 0,
                sockets: Vec::new(),
                next_conn: 0,
                files: HashMap::new(),
                step_delay_ms: 0,
                object_info_delay_ms: 0,
                failures: HashMap::new(),
                missing: HashSet::new(),
                prompts_received: 0,
                most_held: 0,
                last_prompt: None,
                uploads: Vec::new(),
                cache: HashMap::new(),
                models,
                model_metadata: HashMap::new(),
                metadata_requests: 0,
                trainings: Vec::new(),
                stall_training_after: None,
                profile: None,
                usage: crate::Usage::default(),
            }),
            wake: Notify::new(),
            frozen: watch::Sender::new(false),
            executor: Mutex::new(None),
            listener_stop: Mutex::new(None),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn start_executor(self: &Arc<Self>) {
        let handle = tokio::spawn(crate::exec::run_worker(self.clone()));
        if let Some(old) = self.executor.lock().unwrap_or_else(std::sync::PoisonError::into_inner).replace(handle) {
            old.abort();
        }
    }

    pub fn set_listener_stop(&self, stop: oneshot::Sender<()>) {
        *self.listener_stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stop);
    }

    pub fn stop_listening(&self) {
        if let Some(stop) = self.listener_stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = stop.send(());
        }
    }

    pub fn is_listening(&self) -> bool {
        self.listener_stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    pub fn is_frozen(&self) -> bool {
        *self.frozen.borrow()
    }

    /// A receiver to watch freezing and thawing.
    pub fn frozen_watch(&self) -> watch::Receiver<bool> {
        self.frozen.subscribe()
    }

    /// Returns at once unless frozen; then waits for the thaw.
    pub async fn thawed(&self) {
        let mut rx = self.frozen.subscribe();
        // The sender lives as long as `self`, so this only ends by thawing.
        let _ = rx.wait_for(|frozen| !*frozen).await;
    }

    pub fn restart(self: &Arc<Self>) {
        // A restarted process is not stopped any more.
        self.set_frozen(false);
        if let Some(old) = self.executor.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            old.abort();
        }
        {
            let mut st = self.lock();
            st.queue.clear();
            st.running = None;
            st.interrupt = false;
            st.last_node = None;
            st.history.clear();
            st.sockets.clear();
            st.cache.clear();
        }
        self.start_executor();
    }

    pub fn shutdown(&self) {
        // Let held requests finish rather than hang a test's runtime forever.
        self.set_frozen(false);
        self.stop_listening();
        if let Some(old) = self.executor.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            old.abort();
        }
        self.lock().sockets.clear();
    }

    /// Sends a JSON message to every socket (sid = None) or to the sockets of one client id.
    pub fn send_json(&self, kind: &str, data: Value, sid: Option<&str>) {
        let text = json!({"type": kind, "data": data}).to_string();
        self.send(Message::Text(text.into()), sid);
    }

    pub fn send(&self, msg: Message, sid: Option<&str>) {
        let mut st = self.lock();
        st.sockets.retain(|s| {
            if sid.is_some_and(|sid| sid != s.sid) {
                return true;
            }
            s.tx.send(msg.clone()).is_ok()
        });
    }

    /// `status` with the queue size, sent to everyone whenever the queue changes.
    pub fn broadcast_status(&self) {
        let remaining = self.lock().remaining();
        self.send_json("status", status_data(remaining, None), None);
    }

    /// `/object_info` as it stands now: the recorded definitions with live model and file lists.
    pub fn object_info(&self) -> Map<String, Value> {
        let mut info = BASE_OBJECT_INFO.clone();
        let st = self.lock();
        let list = |folder: &str| st.model_list(folder).unwrap_or_default();
        // LoadImage offers the images directly in `input/` (subfolder files still validate).
        let mut inputs: Vec<String> = st
            .files
            .keys()
            .filter(|(kind, sub, name)| kind == "input" && sub.is_empty() && is_image_name(name))
            .map(|(_, _, name)| name.clone())
            .collect();
        inputs.sort();
        set_choices(&mut info, "LoadImage", "image", inputs);
        set_choices(&mut info, "CheckpointLoaderSimple", "ckpt_name", list("checkpoints"));
        set_choices(&mut info, "LoraLoader", "lora_name", list("loras"));
        set_choices(&mut info, "LoraLoaderModelOnly", "lora_name", list("loras"));
        set_choices(&mut info, "UpscaleModelLoader", "model_name", list("upscale_models"));
        set_choices(&mut info, "UNETLoader", "unet_name", list("diffusion_models"));
        set_choices(&mut info, "CLIPLoader", "clip_name", list("text_encoders"));
        set_choices(&mut info, "DualCLIPLoader", "clip_name1", list("text_encoders"));
        set_choices(&mut info, "DualCLIPLoader", "clip_name2", list("text_encoders"));
        // VAELoader.vae_list: the vae files, then the latent-free "pixel_space" choice.
        let mut vaes = list("vae");
        vaes.push("pixel_space".to_owned());
        set_choices(&mut info, "VAELoader", "vae_name", vaes);
        let mut existing = list("loras");
        existing.push("[None]".to_owned());
        set_choices(&mut info, "TrainLoraNode", "existing_lora", existing);
        set_choices(&mut info, "LoadImageTextDataSetFromFolder", "folder", input_subfolders(&st.files));
        info.retain(|name, _| !st.missing.contains(name));
        info
    }
}

/// Whether `LoadImage` lists a file of this name.
pub(crate) fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    IMAGE_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

/// Fills a combo's choices: `[[choices], {…}]` (classic nodes) or `["COMBO", {"options": …}]`
/// (nodes written with the v3 schema), whichever the definition uses.
fn set_choices(info: &mut Map<String, Value>, node: &str, input: &str, choices: Vec<String>) {
    let Some(spec) = info.get_mut(node).and_then(|n| n.pointer_mut(&format!("/input/required/{input}"))) else {
        return;
    };
    if spec.get(0).and_then(Value::as_str) == Some("COMBO") {
        if let Some(options) = spec.pointer_mut("/1/options") {
            *options = json!(choices);
        }
    } else if let Some(list) = spec.get_mut(0) {
        *list = json!(choices);
    }
}

pub(crate) fn status_data(remaining: usize, sid: Option<&str>) -> Value {
    let mut data = json!({"status": {"exec_info": {"queue_remaining": remaining}}});
    if let Some(sid) = sid {
        data["sid"] = json!(sid);
    }
    data
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
