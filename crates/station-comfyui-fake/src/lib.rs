//! A fake ComfyUI server for tests.
//!
//! It speaks the protocol recorded from a real ComfyUI 0.8.0 (see `shared/comfyui/transcripts`):
//! the same HTTP endpoints, JSON shapes, websocket message order and binary preview frames. Image
//! nodes really compute (on small images) with the `image` crate; model nodes produce cheap,
//! seed-determined pictures so text-to-image graphs can be tested end to end; ComfyUI's own LoRA
//! training nodes "train" in milliseconds and save a small valid safetensors file; text flows
//! through `PrimitiveString`, a test captioning node (`StationCaption`) and `PreviewAny`.
//!
//! Control methods on [`FakeComfy`] change what the server has (model files per folder), load it
//! with other people's prompts, let tests read what a training run saw, and inject faults:
//! slowness, node failures, dropped sockets, restarts, refused connections, missing nodes and a
//! frozen (SIGSTOPped) process. [`FakeComfy::set_profile`] makes it a simulated GPU (a log-normal
//! run time and a failure rate per prompt) and [`FakeComfy::take_usage`] reports its busy time,
//! for `station bench fleet`.

mod exec;
mod graph;
mod models;
mod queue;
mod server;
mod state;
mod train;
mod validate;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

pub use crate::train::TrainingRun;

use crate::state::Shared;

/// How a [`FakeComfy`] starts.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Port to bind on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Files of the `checkpoints` model folder, offered by `CheckpointLoaderSimple` (anything
    /// else fails validation).
    pub checkpoints: Vec<String>,
    /// Files of the `loras` folder, offered by `LoraLoader` and `LoraLoaderModelOnly`.
    pub loras: Vec<String>,
    /// Files of the `upscale_models` folder, offered by `UpscaleModelLoader`.
    pub upscale_models: Vec<String>,
    /// Files of any other model folder, by folder name: `vae` (`VAELoader`), `diffusion_models`
    /// (`UNETLoader`), `text_encoders` (`CLIPLoader`), `embeddings`, … ComfyUI's legacy names
    /// `clip` and `unet` mean `text_encoders` and `diffusion_models`, as on the real server.
    /// Merged with the three fields above; the server lists every folder sorted.
    pub models: BTreeMap<String, Vec<String>>,
    /// Send preview frames when a prompt does not say `extra_data.preview_method`
    /// (the real server's `--preview-method` flag).
    pub previews_by_default: bool,
    /// Reuse outputs of unchanged non-output nodes from earlier prompts, as ComfyUI's cache does.
    pub cache: bool,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            port: 0,
            checkpoints: vec!["station-random-sd15.safetensors".to_owned()],
            loras: vec!["station-test-lora.safetensors".to_owned()],
            upscale_models: vec!["4x-station.pth".to_owned()],
            models: BTreeMap::new(),
            previews_by_default: true,
            cache: true,
        }
    }
}

/// A simulated GPU for [`FakeComfy::set_profile`]: every prompt takes a run
/// time drawn from a log-normal distribution, then fails with probability
/// `failure_rate` (a node error, as an out-of-memory GPU reports it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Median run time of a prompt.
    pub median: Duration,
    /// Spread: the standard deviation of the run time's logarithm (0: every
    /// prompt takes `median`; 0.5: the middle 68 % within ×0.6–×1.65).
    pub sigma: f64,
    /// Share of prompts that fail, 0–1.
    pub failure_rate: f64,
}

impl Profile {
    /// Mean run time (of the log-normal: median × e^(σ²/2)).
    pub fn mean(&self) -> Duration {
        self.median.mul_f64((self.sigma * self.sigma / 2.0).exp())
    }

    /// One prompt's run time and whether it fails.
    pub fn sample(&self, rng: &mut impl rand::Rng) -> (Duration, bool) {
        // Box–Muller: one standard normal from two uniforms.
        let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let run = self.median.mul_f64((self.sigma * z).exp().min(1_000.0));
        (run, rng.random_bool(self.failure_rate.clamp(0.0, 1.0)))
    }
}

/// What a server ran since it started or since [`FakeComfy::take_usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompts run to their end.
    pub prompts: u64,
    /// Of those, the ones that failed or were interrupted.
    pub failed: u64,
    /// Milliseconds spent running them (the server was busy).
    pub busy_ms: u64,
}

/// A running fake ComfyUI server. Dropping it stops the server.
pub struct FakeComfy {
    shared: Arc<Shared>,
    port: u16,
}

/// Failure to start the fake server.
#[derive(Debug)]
pub struct StartError(pub std::io::Error);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fake ComfyUI could not bind its port: {}", self.0)
    }
}

impl std::error::Error for StartError {}

impl FakeComfy {
    /// Starts a fake server on 127.0.0.1; panics if it cannot bind (tests want a loud failure).
    pub async fn start(options: FakeOptions) -> FakeComfy {
        Self::try_start(options).await.expect("fake ComfyUI failed to start")
    }

    /// Starts a fake server on 127.0.0.1, reporting a bind failure.
    pub async fn try_start(options: FakeOptions) -> Result<FakeComfy, StartError> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port))).await.map_err(StartError)?;
        let port = listener.local_addr().map_err(StartError)?.port();
        let shared = Shared::new(options);
        shared.start_executor();
        server::serve(&shared, listener);
        Ok(FakeComfy { shared, port })
    }

    /// Base URL, e.g. `http://127.0.0.1:8188`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Adds `ms` milliseconds to every progress step (KSampler, StationSteps, each TrainLoraNode
    /// training step) and to every other node's run, so prompts take long enough to be
    /// cancelled or interrupted. 0 restores. StationSteps reads it at every step, so a change
    /// applies to a prompt already running.
    pub fn set_step_delay(&self, ms: u64) {
        self.shared.lock().step_delay_ms = ms;
    }

    /// Makes `GET /object_info` (and `/object_info/{class}`) answer only after
    /// `ms` milliseconds while every other route answers at once: what a real
    /// ComfyUI does while it is busy (a model loading, a training on CPU):
    /// it builds its large node list in Python, seen taking longer than a
    /// 5 s health timeout while `/system_stats` answered. 0 restores.
    pub fn set_object_info_delay(&self, ms: u64) {
        self.shared.lock().object_info_delay_ms = ms;
    }

    /// Makes the server behave like a GPU with `profile` (None: prompts run
    /// as fast as their nodes compute). Applies to prompts started afterwards.
    pub fn set_profile(&self, profile: Option<Profile>) {
        self.shared.lock().profile = profile;
    }

    /// What the server ran since it started or the last call, and resets it.
    pub fn take_usage(&self) -> Usage {
        std::mem::take(&mut self.shared.lock().usage)
    }

    /// Makes every node of `class_type` raise `message` (a RuntimeError) when it runs.
    pub fn fail_node(&self, class_type: &str, message: &str) {
        self.shared.lock().failures.insert(class_type.to_owned(), message.to_owned());
    }

    /// Removes all failures injected with [`FakeComfy::fail_node`].
    pub fn clear_failures(&self) {
        self.shared.lock().failures.clear();
    }

    /// Closes every open websocket now; clients may reconnect.
    pub fn drop_websockets(&self) {
        self.shared.lock().sockets.clear();
    }

    /// Behaves like a restarted ComfyUI process on the same port: queue, history, cache and the
    /// running prompt are forgotten and sockets dropped; files on "disk" (inputs, outputs, model
    /// folders) stay. A frozen server is thawed.
    pub fn restart(&self) {
        self.shared.restart();
    }

    /// While `true`, the port is closed so clients get "connection refused"; `false` reopens it.
    pub async fn refuse_connections(&self, refuse: bool) {
        if refuse {
            self.shared.stop_listening();
            self.shared.lock().sockets.clear();
        } else if !self.shared.is_listening() {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], self.port)))
                .await
                .expect("fake ComfyUI could not re-bind its port");
            server::serve(&self.shared, listener);
        }
    }

    /// Hides these node classes from `/object_info` and rejects prompts using them as unknown.
    pub fn set_missing_nodes<S: AsRef<str>>(&self, class_types: &[S]) {
        self.shared.lock().missing = class_types.iter().map(|s| s.as_ref().to_owned()).collect::<HashSet<_>>();
    }

    /// The most prompts it held at once — the one running and those
    /// pending — since it started (a client that respects a capacity of 1
    /// never makes it more than 1).
    pub fn most_held(&self) -> usize {
        self.shared.lock().most_held
    }

    /// How many `POST /prompt` requests arrived (valid or not).
    pub fn prompts_received(&self) -> u64 {
        self.shared.lock().prompts_received
    }

    /// The body of the last `POST /prompt`, as sent.
    pub fn last_prompt(&self) -> Option<Value> {
        self.shared.lock().last_prompt.clone()
    }

    /// Names (`subfolder/name` or `name`) of files received by `POST /upload/image`, in order.
    pub fn uploads(&self) -> Vec<String> {
        self.shared.lock().uploads.clone()
    }

    /// Number of websockets currently open.
    pub fn open_websockets(&self) -> usize {
        self.shared.lock().sockets.len()
    }

    /// Replaces the files of a model folder (`checkpoints`, `loras`, `vae`, `diffusion_models`,
    /// `text_encoders` or its legacy name `clip`, `embeddings`, …; an unknown name becomes a new
    /// folder). `GET /models/{folder}`, the loaders' option lists and validation follow at once.
    /// LoRAs saved by training stay listed: they are files in `output/loras`.
    pub fn set_models<S: AsRef<str>>(&self, folder: &str, files: &[S]) {
        self.shared.lock().models.set(folder, files.iter().map(|f| f.as_ref().to_owned()));
    }

    /// Puts one file into a model folder.
    pub fn add_model(&self, folder: &str, file: &str) {
        self.shared.lock().models.add(folder, file);
    }

    /// Takes one file out of a model folder, including a file saved under `output/<folder>`
    /// (e.g. a trained LoRA), as if it was deleted from disk.
    pub fn remove_model(&self, folder: &str, file: &str) {
        let mut st = self.shared.lock();
        st.models.remove(folder, file);
        let folder = models::canonical(folder);
        let on_disk = if folder == "text_encoders" { "clip" } else { folder };
        let (sub, name) = match file.rsplit_once('/') {
            Some((dir, name)) => (format!("{on_disk}/{dir}"), name.to_owned()),
            None => (on_disk.to_owned(), file.to_owned()),
        };
        st.files.remove(&("output".to_owned(), sub, name));
    }

    /// Gives a configured model file the safetensors `__metadata__` that `GET /view_metadata`
    /// returns for it (string values, as in a real header: `modelspec.architecture`,
    /// `ss_base_model_version`, …); `None` takes it away (the server then answers 404).
    pub fn set_model_metadata(&self, folder: &str, file: &str, metadata: Option<&Value>) {
        let key = (models::canonical(folder).to_owned(), file.to_owned());
        let mut st = self.shared.lock();
        match metadata.and_then(Value::as_object) {
            Some(m) => st.model_metadata.insert(key, m.clone()),
            None => st.model_metadata.remove(&key),
        };
    }

    /// How many `GET /view_metadata/…` requests arrived.
    pub fn metadata_requests(&self) -> u64 {
        self.shared.lock().metadata_requests
    }

    /// The files of a model folder as `GET /models/{folder}` lists them now (legacy names
    /// allowed here); empty for an unknown folder.
    pub fn models(&self, folder: &str) -> Vec<String> {
        self.shared.lock().model_list(models::canonical(folder)).unwrap_or_default()
    }

    /// Makes `TrainLoraNode` hang after `steps` steps (a wedged GPU): no more progress, no end,
    /// until the prompt is interrupted (`POST /interrupt`), which the run records. `None` restores.
    pub fn stall_training_after(&self, steps: Option<u64>) {
        self.shared.lock().stall_training_after = steps;
    }

    /// Every `TrainLoraNode` run so far, oldest first: the dataset folder, image files and
    /// captions it trained on, its settings and the file `SaveLoRA` wrote.
    pub fn trainings(&self) -> Vec<TrainingRun> {
        self.shared.lock().trainings.clone()
    }

    /// A file on the server's "disk": `kind` is `input`, `output` or `temp`; `subfolder` may be
    /// empty (`file("output", "loras", "x_3_steps_00001_.safetensors")`).
    pub fn file(&self, kind: &str, subfolder: &str, filename: &str) -> Option<Vec<u8>> {
        self.shared.lock().files.get(&(kind.to_owned(), subfolder.to_owned(), filename.to_owned())).cloned()
    }

    /// Queues `count` prompts from another client (a client id no Station socket uses), each
    /// `EmptyImage → StationSteps (4 steps of step_ms) → SaveImage`, like the recorded busy
    /// queue: the backend is busy with other people's work, in FIFO order with Station's
    /// prompts. Returns their prompt ids. (The step delay of [`FakeComfy::set_step_delay`],
    /// when set, replaces `step_ms`.)
    pub fn enqueue_external(&self, count: usize, step_ms: u64) -> Vec<String> {
        let client_id = uuid::Uuid::new_v4().to_string();
        (0..count).map(|i| server::enqueue_external(&self.shared, &client_id, i, step_ms)).collect()
    }

    /// Freezes the process like SIGSTOP: connections are still accepted (the kernel does that),
    /// but no HTTP request is answered and no websocket frame sent or read until
    /// [`FakeComfy::thaw`]; the running prompt stops advancing. Held requests are answered after
    /// the thaw, as a continued process would.
    pub fn freeze(&self) {
        self.shared.set_frozen(true);
    }

    /// Ends [`FakeComfy::freeze`] (SIGCONT): held requests are answered and prompts continue.
    pub fn thaw(&self) {
        self.shared.set_frozen(false);
    }

    /// Whether the server is frozen.
    pub fn is_frozen(&self) -> bool {
        self.shared.is_frozen()
    }

    /// Stops the server now (also done on drop).
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }
}

impl Drop for FakeComfy {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}
