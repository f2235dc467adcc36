//! Running one prompt to the end, surviving dropped sockets and noticing restarted servers.

use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::client::{ComfyClient, SubmitRequest};
use crate::error::ComfyError;
use crate::protocol::{Graph, HistoryEntry, ImageRef};
use crate::socket::{BackendSocket, PromptEvent};

/// Knobs of [`run_prompt`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `extra_data.preview_method`; None leaves the server default.
    pub preview_method: Option<String>,
    /// Check history and queue when no event arrived for this long (safety net for lost events).
    pub poll_interval: Duration,
    /// Give up with the transient error when the server stays unreachable this long.
    pub unreachable_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            preview_method: None,
            poll_interval: Duration::from_secs(2),
            unreachable_timeout: Duration::from_secs(60),
        }
    }
}

/// A finished prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptOutcome {
    /// Prompt id.
    pub prompt_id: String,
    /// Images per output node, in the server's order.
    pub outputs: IndexMap<String, Vec<ImageRef>>,
}

impl PromptOutcome {
    /// All output images, in order.
    pub fn images(&self) -> Vec<ImageRef> {
        self.outputs.values().flatten().cloned().collect()
    }
}

/// Where a prompt stands on the server.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteState {
    /// Finished successfully with these outputs.
    Done(IndexMap<String, Vec<ImageRef>>),
    /// Finished with an error or interruption; the message says which.
    Failed(String),
    /// Waiting in the queue.
    Pending,
    /// Executing.
    Running,
    /// The server does not know it (never received, or restarted since).
    Unknown,
}

/// What a history entry says about the prompt.
fn entry_outcome(entry: &HistoryEntry, prompt_id: &str) -> Result<PromptOutcome, ComfyError> {
    if let Some(e) = entry.execution_error() {
        return Err(ComfyError::Execution {
            node_id: e.node_id,
            node_type: e.node_type,
            exception_type: e.exception_type,
            exception_message: e.exception_message.trim_end().to_owned(),
        });
    }
    if entry.interrupted().is_some() {
        return Err(ComfyError::Interrupted { prompt_id: prompt_id.to_owned() });
    }
    if let Some(status) = &entry.status
        && status.status_str != "success"
    {
        return Err(ComfyError::Protocol {
            what: format!("history of {prompt_id}"),
            reason: format!("status_str is {:?} without an error message", status.status_str),
        });
    }
    Ok(PromptOutcome { prompt_id: prompt_id.to_owned(), outputs: entry.output_images() })
}

/// Finds out where `prompt_id` stands: history first, then the queue, then history again (it
/// may have finished between the two reads). Usable after a Station restart.
pub async fn reconcile(client: &ComfyClient, prompt_id: &str) -> Result<RemoteState, ComfyError> {
    let classify = |entry: HistoryEntry| match entry_outcome(&entry, prompt_id) {
        Ok(o) => RemoteState::Done(o.outputs),
        Err(e) => RemoteState::Failed(e.to_string()),
    };
    if let Some(entry) = client.history(prompt_id).await? {
        return Ok(classify(entry));
    }
    let queue = client.queue().await?;
    if queue.running.iter().any(|p| p == prompt_id) {
        return Ok(RemoteState::Running);
    }
    if queue.pending.iter().any(|p| p == prompt_id) {
        return Ok(RemoteState::Pending);
    }
    match client.history(prompt_id).await? {
        Some(entry) => Ok(classify(entry)),
        None => Ok(RemoteState::Unknown),
    }
}

enum Step {
    Done(Result<PromptOutcome, ComfyError>),
    Wait,
}

/// Like [`reconcile`] but keeps the detailed error of a failed prompt.
async fn check(client: &ComfyClient, prompt_id: &str) -> Result<Step, ComfyError> {
    if let Some(entry) = client.history(prompt_id).await? {
        return Ok(Step::Done(entry_outcome(&entry, prompt_id)));
    }
    let queue = client.queue().await?;
    if queue.running.iter().chain(&queue.pending).any(|p| p == prompt_id) {
        return Ok(Step::Wait);
    }
    match client.history(prompt_id).await? {
        Some(entry) => Ok(Step::Done(entry_outcome(&entry, prompt_id))),
        None => Ok(Step::Done(Err(ComfyError::Lost { prompt_id: prompt_id.to_owned() }))),
    }
}

/// Submits `graph` as `prompt_id` on the socket's client id and follows it to the end, calling
/// `on_event` for every event. After a websocket gap, or when nothing is heard for
/// `poll_interval`, it asks history and queue: finished → outcome from history; queued or
/// running → keep waiting; unknown → [`ComfyError::Lost`] so the caller can resubmit.
pub async fn run_prompt(
    client: &ComfyClient,
    socket: &BackendSocket,
    graph: &Graph,
    prompt_id: &str,
    options: &RunOptions,
    on_event: impl FnMut(&PromptEvent),
) -> Result<PromptOutcome, ComfyError> {
    run_prompt_then(client, socket, graph, prompt_id, options, async {}, on_event).await
}

/// [`run_prompt`], awaiting `after_submit` once `POST /prompt` was accepted
/// and before following the prompt (a fault-injection point for tests).
pub async fn run_prompt_then(
    client: &ComfyClient,
    socket: &BackendSocket,
    graph: &Graph,
    prompt_id: &str,
    options: &RunOptions,
    after_submit: impl Future<Output = ()>,
    mut on_event: impl FnMut(&PromptEvent),
) -> Result<PromptOutcome, ComfyError> {
    let mut rx = socket.subscribe(prompt_id);
    // Events sent before the socket is up would be lost; the poll below covers a slow connect.
    socket.wait_connected(Duration::from_secs(2)).await;
    client
        .submit(&SubmitRequest {
            prompt_id: prompt_id.to_owned(),
            graph: graph.clone(),
            client_id: socket.client_id().to_owned(),
            preview_method: options.preview_method.clone(),
        })
        .await?;
    after_submit.await;
    let mut seen_outputs: IndexMap<String, Vec<ImageRef>> = IndexMap::new();
    let mut succeeded = false;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let event = tokio::time::timeout(options.poll_interval, rx.recv()).await;
        let must_check = match event {
            Ok(Some(event)) => {
                on_event(&event);
                match event {
                    PromptEvent::Executed { node, images } => {
                        seen_outputs.insert(node, images);
                        false
                    }
                    PromptEvent::Success => {
                        succeeded = true;
                        false
                    }
                    PromptEvent::Error { node_id, node_type, exception_message, exception_type } => {
                        return Err(ComfyError::Execution { node_id, node_type, exception_type, exception_message });
                    }
                    PromptEvent::Interrupted { .. } => {
                        return Err(ComfyError::Interrupted { prompt_id: prompt_id.to_owned() });
                    }
                    PromptEvent::Finished => {
                        // History is written before this message; still retry an empty read.
                        return match client.history_after_finish(prompt_id).await {
                            Ok(Some(entry)) => entry_outcome(&entry, prompt_id),
                            Ok(None) | Err(_) if succeeded => {
                                Ok(PromptOutcome { prompt_id: prompt_id.to_owned(), outputs: seen_outputs })
                            }
                            Ok(None) => Err(ComfyError::Lost { prompt_id: prompt_id.to_owned() }),
                            Err(e) => Err(e),
                        };
                    }
                    PromptEvent::Reconnected => true,
                    _ => false,
                }
            }
            Ok(None) => {
                return Err(ComfyError::SocketClosed {
                    url: client.base_url().to_string(),
                    reason: "the backend socket was dropped".into(),
                });
            }
            Err(_) => true,
        };
        if !must_check {
            continue;
        }
        match check(client, prompt_id).await {
            Ok(Step::Done(result)) => return result,
            Ok(Step::Wait) => unreachable_since = None,
            Err(e) if e.is_transient() => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= options.unreachable_timeout {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}
