//! Errors talking to a ComfyUI server, split into transient (retry elsewhere or later) and
//! permanent (the prompt itself is at fault).

/// One node's validation problem from a 400 answer.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeError {
    /// Node id in the graph.
    pub node_id: String,
    /// Node class.
    pub class_type: String,
    /// Error kind, e.g. `required_input_missing`, `value_not_in_list`.
    pub kind: String,
    /// Server message, e.g. "Required input is missing".
    pub message: String,
    /// Server details, e.g. the input name.
    pub details: String,
    /// The input concerned, when the server names one.
    pub input_name: Option<String>,
}

/// Anything that can go wrong with a ComfyUI request or prompt.
#[derive(Debug, thiserror::Error)]
pub enum ComfyError {
    /// Could not reach the server (refused, reset, DNS…).
    #[error("cannot reach ComfyUI at {url}: {reason}")]
    Connect {
        /// URL requested.
        url: String,
        /// Underlying reason.
        reason: String,
    },
    /// The server did not answer in time.
    #[error("ComfyUI at {url} timed out")]
    Timeout {
        /// URL requested.
        url: String,
    },
    /// An unexpected HTTP status.
    #[error("ComfyUI answered {status} for {url}: {body}")]
    Http {
        /// URL requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The server rejected the prompt (HTTP 400).
    #[error("ComfyUI rejected the prompt: {message}{}", fmt_node_errors(node_errors))]
    Validation {
        /// Prompt-level message (with details when given).
        message: String,
        /// Per-node problems.
        node_errors: Vec<NodeError>,
    },
    /// A node raised while executing.
    #[error("node {node_id} ({node_type}) failed: {exception_type}: {exception_message}")]
    Execution {
        /// Failing node.
        node_id: String,
        /// Its class.
        node_type: String,
        /// Python exception type.
        exception_type: String,
        /// Exception text, trimmed.
        exception_message: String,
    },
    /// The prompt was interrupted (by us or someone else).
    #[error("prompt {prompt_id} was interrupted")]
    Interrupted {
        /// Prompt id.
        prompt_id: String,
    },
    /// The server no longer knows the prompt (restarted): resubmit it.
    #[error("prompt {prompt_id} is unknown to the server (lost, probably by a restart)")]
    Lost {
        /// Prompt id.
        prompt_id: String,
    },
    /// The websocket closed and could not be used.
    #[error("websocket to {url} closed: {reason}")]
    SocketClosed {
        /// Websocket URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An answer could not be understood.
    #[error("unexpected answer from ComfyUI for {what}: {reason}")]
    Protocol {
        /// Which request or message.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// A file asked for with `/view` does not exist.
    #[error("ComfyUI has no file {what}")]
    NotFound {
        /// Which file.
        what: String,
    },
    /// The base URL is unusable.
    #[error("invalid ComfyUI base URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
}

fn fmt_node_errors(errors: &[NodeError]) -> String {
    errors
        .iter()
        .map(|e| {
            let input = e.input_name.as_deref().map(|i| format!(" input '{i}'")).unwrap_or_default();
            format!("; node {} ({}){input}: {} ({})", e.node_id, e.class_type, e.message, e.details)
        })
        .collect()
}

impl ComfyError {
    /// True when retrying (later, or on another backend) may succeed: connection problems,
    /// timeouts, 5xx answers, dropped sockets and lost prompts. Validation and execution errors
    /// are the prompt's fault and will fail again.
    pub fn is_transient(&self) -> bool {
        match self {
            ComfyError::Connect { .. }
            | ComfyError::Timeout { .. }
            | ComfyError::SocketClosed { .. }
            | ComfyError::Lost { .. } => true,
            ComfyError::Http { status, .. } => *status >= 500 || *status == 429,
            ComfyError::Validation { .. }
            | ComfyError::Execution { .. }
            | ComfyError::Interrupted { .. }
            | ComfyError::Protocol { .. }
            | ComfyError::NotFound { .. }
            | ComfyError::BadUrl { .. } => false,
        }
    }
}
