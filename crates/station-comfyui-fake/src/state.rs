//! Shared server state: queue, history, sockets, files and injected faults.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::Message;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::FakeOptions;
use crate::exec::CachedOutputs;

static OBJECT_INFO: &str = include_str!("../data/object_info.json");
static OBJECT_INFO_EXTRA: &str = include_str!("../data/object_info_extra.json");

/// One queued prompt, as the real server keeps it.
#[derive(Debug, Clone)]
pub(crate) struct QueueItem {
    pub number: i64,
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
}

/// One open websocket.
pub(crate) struct SocketConn {
    pub conn_id: u64,
    pub sid: String,
    pub tx: mpsc::UnboundedSender<Message>,
}

/// Mutable state behind one lock; never held across an await.
pub(crate) struct State {
    pub queue: VecDeque<QueueItem>,
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
    pub failures: HashMap<String, String>,
    pub missing: HashSet<String>,
    pub prompts_received: u64,
    pub last_prompt: Option<Value>,
    pub uploads: Vec<String>,
    pub cache: HashMap<String, CachedOutputs>,
}

pub(crate) struct Shared {
    pub options: FakeOptions,
    state: Mutex<State>,
    pub wake: Notify,
    executor: Mutex<Option<JoinHandle<()>>>,
    listener_stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Shared {
    pub fn new(options: FakeOptions) -> Arc<Shared> {
        Arc::new(Shared {
            options,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: None,
                interrupt: false,
                last_node: None,
                history: Map::new(),
                number: 0,
                sockets: Vec::new(),
                next_conn: 0,
                files: HashMap::new(),
                step_delay_ms: 0,
                failures: HashMap::new(),
                missing: HashSet::new(),
                prompts_received: 0,
                last_prompt: None,
                uploads: Vec::new(),
                cache: HashMap::new(),
            }),
            wake: Notify::new(),
            executor: Mutex::new(None),
            listener_stop: Mutex::new(None),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn start_executor(self: &Arc<Self>) {
        let handle = tokio::spawn(crate::exec::run_worker(self.clone()));
        if let Some(old) = self.executor.lock().unwrap_or_else(|e| e.into_inner()).replace(handle) {
            old.abort();
        }
    }

    pub fn set_listener_stop(&self, stop: oneshot::Sender<()>) {
        *self.listener_stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop);
    }

    pub fn stop_listening(&self) {
        if let Some(stop) = self.listener_stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
    }

    pub fn is_listening(&self) -> bool {
        self.listener_stop.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    pub fn restart(self: &Arc<Self>) {
        if let Some(old) = self.executor.lock().unwrap_or_else(|e| e.into_inner()).take() {
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
        self.stop_listening();
        if let Some(old) = self.executor.lock().unwrap_or_else(|e| e.into_inner()).take() {
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
        let remaining = {
            let st = self.lock();
            st.queue.len() + usize::from(st.running.is_some())
        };
        self.send_json("status", status_data(remaining, None), None);
    }

    /// `/object_info` as it stands now: recorded entries + extras, with live model lists.
    pub fn object_info(&self) -> Map<String, Value> {
        let mut info: Map<String, Value> =
            serde_json::from_str(OBJECT_INFO).expect("embedded object_info.json is valid JSON");
        let extra: Map<String, Value> =
            serde_json::from_str(OBJECT_INFO_EXTRA).expect("embedded object_info_extra.json is valid JSON");
        info.extend(extra);
        let (inputs, missing) = {
            let st = self.lock();
            let mut inputs: Vec<String> = st
                .files
                .keys()
                .filter(|(kind, _, _)| kind == "input")
                .map(|(_, sub, name)| if sub.is_empty() { name.clone() } else { format!("{sub}/{name}") })
                .collect();
            inputs.sort();
            (inputs, st.missing.clone())
        };
        set_choices(&mut info, "LoadImage", "image", &inputs);
        set_choices(&mut info, "CheckpointLoaderSimple", "ckpt_name", &self.options.checkpoints);
        set_choices(&mut info, "LoraLoader", "lora_name", &self.options.loras);
        set_choices(&mut info, "UpscaleModelLoader", "model_name", &self.options.upscale_models);
        info.retain(|name, _| !missing.contains(name));
        info
    }
}

fn set_choices(info: &mut Map<String, Value>, node: &str, input: &str, choices: &[String]) {
    if let Some(spec) = info.get_mut(node).and_then(|n| n.pointer_mut(&format!("/input/required/{input}/0"))) {
        *spec = json!(choices);
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
