//! One websocket per backend, shared by all of that backend's prompts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use indexmap::IndexMap;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::error::ComfyError;
use crate::protocol::{BinaryFrame, ImageRef, NodeProgress, WsMessage};

/// Something that happened to one prompt, as seen on the websocket.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptEvent {
    /// `execution_start`.
    Started,
    /// `execution_cached`: these nodes will not run.
    Cached {
        /// Cached node ids.
        nodes: Vec<String>,
    },
    /// `executing` with a node.
    Executing {
        /// Node id.
        node: String,
    },
    /// `progress` of a node.
    Progress {
        /// Node id (the running one when the server omits it).
        node: Option<String>,
        /// Steps done.
        value: f64,
        /// Steps in total.
        max: f64,
    },
    /// `progress_state`: state of every node run so far.
    ProgressState {
        /// Node id → progress.
        nodes: IndexMap<String, NodeProgress>,
    },
    /// `executed`: an output node wrote images.
    Executed {
        /// Node id.
        node: String,
        /// Images written.
        images: Vec<ImageRef>,
    },
    /// A binary preview frame.
    Preview {
        /// `image/jpeg` or `image/png`.
        mime: String,
        /// Encoded image.
        bytes: Bytes,
    },
    /// `execution_success`.
    Success,
    /// `execution_error`.
    Error {
        /// Failing node.
        node_id: String,
        /// Its class.
        node_type: String,
        /// Exception text, trimmed.
        exception_message: String,
        /// Python exception type.
        exception_type: String,
    },
    /// `execution_interrupted`.
    Interrupted {
        /// Node running when interrupted.
        node_id: String,
    },
    /// `executing` with `node: null`: the server is done with the prompt.
    Finished,
    /// The websocket closed; events may be missed until [`PromptEvent::Reconnected`].
    Disconnected,
    /// The websocket is back after a gap; reconcile through history.
    Reconnected,
}

struct Inner {
    client_id: String,
    subs: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<PromptEvent>>>>,
    /// Prompt currently executing on the backend, for messages that do not name one.
    current: Mutex<Option<String>>,
    connected: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn dispatch(&self, prompt_id: &str, event: PromptEvent) {
        let mut subs = lock(&self.subs);
        if let Some(list) = subs.get_mut(prompt_id) {
            list.retain(|tx| tx.send(event.clone()).is_ok());
            if list.is_empty() {
                subs.remove(prompt_id);
            }
        }
    }

    fn broadcast(&self, event: PromptEvent) {
        let mut subs = lock(&self.subs);
        for list in subs.values_mut() {
            list.retain(|tx| tx.send(event.clone()).is_ok());
        }
        subs.retain(|_, l| !l.is_empty());
    }

    fn handle_text(&self, text: &str) {
        let msg = match WsMessage::parse(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring unparsable ComfyUI websocket message");
                return;
            }
        };
        let current = lock(&self.current).clone();
        let pid = msg.prompt_id().map(str::to_owned).or(current);
        let Some(pid) = pid else { return };
        let event = match msg {
            WsMessage::Status { .. } | WsMessage::Other { .. } => return,
            WsMessage::ExecutionStart { .. } => {
                *lock(&self.current) = Some(pid.clone());
                PromptEvent::Started
            }
            WsMessage::ExecutionCached { nodes, .. } => PromptEvent::Cached { nodes },
            WsMessage::Executing { node: Some(node), .. } => {
                *lock(&self.current) = Some(pid.clone());
                PromptEvent::Executing { node }
            }
            WsMessage::Executing { node: None, .. } => {
                let mut cur = lock(&self.current);
                if cur.as_deref() == Some(pid.as_str()) {
                    *cur = None;
                }
                PromptEvent::Finished
            }
            WsMessage::Progress { node, value, max, .. } => PromptEvent::Progress { node, value, max },
            WsMessage::ProgressState { nodes, .. } => PromptEvent::ProgressState { nodes },
            WsMessage::Executed { node, output, .. } => PromptEvent::Executed { node, images: output.images },
            WsMessage::ExecutionSuccess { .. } => PromptEvent::Success,
            WsMessage::ExecutionError(e) => PromptEvent::Error {
                node_id: e.node_id,
                node_type: e.node_type,
                exception_message: e.exception_message.trim_end().to_owned(),
                exception_type: e.exception_type,
            },
            WsMessage::ExecutionInterrupted(e) => PromptEvent::Interrupted { node_id: e.node_id },
        };
        self.dispatch(&pid, event);
    }

    fn handle_binary(&self, data: &[u8]) {
        let frame = match BinaryFrame::parse(data) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring unparsable ComfyUI binary frame");
                return;
            }
        };
        let current = lock(&self.current).clone();
        let (pid, event) = match frame {
            BinaryFrame::Preview { mime, bytes } => (current, PromptEvent::Preview { mime: mime.to_owned(), bytes }),
            BinaryFrame::PreviewWithMetadata { metadata, mime, bytes } => {
                (metadata.prompt_id.or(current), PromptEvent::Preview { mime, bytes })
            }
            BinaryFrame::Other { .. } => return,
        };
        if let Some(pid) = pid {
            self.dispatch(&pid, event);
        }
    }
}

/// The websocket of one backend (`/ws?clientId=<client id>`), demultiplexed by prompt id.
/// Reconnects by itself with exponential backoff (capped at 5 s). Dropping it closes the socket.
pub struct BackendSocket {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl BackendSocket {
    /// Starts connecting to `base_url`'s websocket as `client_id`; returns at once.
    pub fn connect(base_url: &str, client_id: &str) -> Result<BackendSocket, ComfyError> {
        let bad = |reason: String| ComfyError::BadUrl { url: base_url.to_owned(), reason };
        let mut url = Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        let scheme = match url.scheme() {
            "http" => "ws",
            "https" => "wss",
            other => return Err(bad(format!("scheme {other} is not http or https"))),
        };
        url.set_scheme(scheme).map_err(|_| bad("cannot switch to a websocket scheme".into()))?;
        let path = format!("{}/ws", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.query_pairs_mut().clear().append_pair("clientId", client_id);
        let (connected, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            client_id: client_id.to_owned(),
            subs: Mutex::new(HashMap::new()),
            current: Mutex::new(None),
            connected,
        });
        let task = tokio::spawn(run(inner.clone(), url.to_string()));
        Ok(BackendSocket { inner, task })
    }

    /// The client id prompts must be submitted with to be seen on this socket.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// Whether the websocket is open right now.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits until the websocket is open; false if `timeout` passes first.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await.is_ok_and(|r| r.is_ok())
    }

    /// Receives the events of `prompt_id` (subscribe before submitting so none are missed).
    /// Dropping the receiver unsubscribes.
    pub fn subscribe(&self, prompt_id: &str) -> mpsc::UnboundedReceiver<PromptEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.subs).entry(prompt_id.to_owned()).or_default().push(tx);
        rx
    }
}

impl Drop for BackendSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(inner: Arc<Inner>, url: String) {
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = MIN_BACKOFF;
    loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut ws, _)) => {
                backoff = MIN_BACKOFF;
                inner.connected.send_replace(true);
                // Every (re)connect follows a gap in which subscribers may have missed events,
                // including the first one for subscribers made before it.
                inner.broadcast(PromptEvent::Reconnected);
                while let Some(msg) = ws.next().await {
                    match msg {
                        Ok(Message::Text(t)) => inner.handle_text(t.as_str()),
                        Ok(Message::Binary(b)) => inner.handle_binary(&b),
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                inner.connected.send_replace(false);
                *lock(&inner.current) = None;
                inner.broadcast(PromptEvent::Disconnected);
            }
            Err(e) => {
                tracing::debug!(%url, error = %e, "ComfyUI websocket connect failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
