//! A fake ComfyUI server for tests.
//!
//! It speaks the protocol recorded from a real ComfyUI 0.8.0 (see `shared/comfyui/transcripts`):
//! the same HTTP endpoints, JSON shapes, websocket message order and binary preview frames. Image
//! nodes really compute (on small images) with the `image` crate; model nodes produce cheap,
//! seed-determined pictures so text-to-image graphs can be tested end to end. Control methods on
//! [`FakeComfy`] inject faults: slowness, node failures, dropped sockets, restarts, refused
//! connections and missing nodes.

mod exec;
mod server;
mod state;
mod validate;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio::net::TcpListener;

use crate::state::Shared;

/// How a [`FakeComfy`] starts.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Port to bind on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Checkpoint names offered by `CheckpointLoaderSimple` (anything else fails validation).
    pub checkpoints: Vec<String>,
    /// LoRA names offered by `LoraLoader`.
    pub loras: Vec<String>,
    /// Upscale model names offered by `UpscaleModelLoader`.
    pub upscale_models: Vec<String>,
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
            previews_by_default: true,
            cache: true,
        }
    }
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

    /// Adds `ms` milliseconds to every progress step (KSampler, StationSteps) and to every
    /// other node's run, so prompts take long enough to be cancelled or interrupted. 0 restores.
    pub fn set_step_delay(&self, ms: u64) {
        self.shared.lock().step_delay_ms = ms;
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
    /// running prompt are forgotten and sockets dropped; files on "disk" (inputs, outputs) stay.
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
