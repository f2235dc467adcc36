//! Serde types for ComfyUI's HTTP answers and websocket messages, as recorded from ComfyUI 0.8.0.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A graph in ComfyUI's API format: node id → `{class_type, inputs}`.
pub type Graph = serde_json::Map<String, Value>;

/// Answer of `POST /prompt` when the prompt was queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitAccepted {
    /// The prompt's id (ours when we supplied one).
    pub prompt_id: String,
    /// Queue position number the server assigned.
    pub number: i64,
    /// Errors of output nodes that were dropped while others could run.
    #[serde(default, deserialize_with = "map_or_empty_list")]
    pub node_errors: IndexMap<String, NodeErrorEntry>,
}

/// One `{type, message, details, extra_info}` error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Machine-readable kind, e.g. `required_input_missing`, `invalid_prompt`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// Extra detail, often the input name.
    #[serde(default)]
    pub details: String,
    /// Structured extras such as `input_name`.
    #[serde(default)]
    pub extra_info: Value,
}

/// Errors of one node in a 400 answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeErrorEntry {
    /// The node's errors.
    pub errors: Vec<ErrorInfo>,
    /// Output nodes that depend on this node.
    #[serde(default)]
    pub dependent_outputs: Vec<String>,
    /// The node's class.
    pub class_type: String,
}

/// Body of a 400 answer from `POST /prompt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationErrorBody {
    /// The prompt-level error.
    pub error: ErrorInfo,
    /// Per-node errors (the server sends `[]` instead of `{}` for some errors).
    #[serde(default, deserialize_with = "map_or_empty_list")]
    pub node_errors: IndexMap<String, NodeErrorEntry>,
}

fn map_or_empty_list<'de, D, T>(de: D) -> Result<IndexMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Map(IndexMap<String, T>),
        List(Vec<Value>),
    }
    match Either::<T>::deserialize(de)? {
        Either::Map(m) => Ok(m),
        Either::List(l) if l.is_empty() => Ok(IndexMap::new()),
        Either::List(_) => Err(serde::de::Error::custom("node_errors: expected an object or an empty list")),
    }
}

/// A reference to an image file on the server, fetched with `GET /view`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    /// File name, e.g. `upscaled_00001_.png`.
    pub filename: String,
    /// Sub folder ("" for none).
    #[serde(default)]
    pub subfolder: String,
    /// Folder kind: `output`, `temp` or `input`.
    #[serde(rename = "type", default = "output_kind")]
    pub kind: String,
}

fn output_kind() -> String {
    "output".to_owned()
}

/// What an output node produced (`executed.output` and history `outputs.<node>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeOutput {
    /// Images written by the node.
    #[serde(default)]
    pub images: Vec<ImageRef>,
    /// Anything else the node reported (text, gifs, …).
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// Answer of `POST /upload/image`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadedImage {
    /// Name under which the server stored the file (may differ from the one sent).
    pub name: String,
    /// Sub folder.
    #[serde(default)]
    pub subfolder: String,
    /// Folder kind, normally `input`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl UploadedImage {
    /// The value to put into a `LoadImage` node's `image` input.
    pub fn load_image_name(&self) -> String {
        if self.subfolder.is_empty() { self.name.clone() } else { format!("{}/{}", self.subfolder, self.name) }
    }
}

/// One entry of `GET /history/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// `[number, prompt_id, graph, extra_data, outputs_to_execute, …]`.
    pub prompt: Vec<Value>,
    /// Output node id → what it produced.
    #[serde(default)]
    pub outputs: IndexMap<String, NodeOutput>,
    /// Final status; absent on very old servers.
    #[serde(default)]
    pub status: Option<HistoryStatus>,
    /// Per output node display metadata.
    #[serde(default)]
    pub meta: IndexMap<String, Value>,
}

/// `status` of a history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryStatus {
    /// `success` or `error`.
    pub status_str: String,
    /// Whether the prompt completed.
    pub completed: bool,
    /// `[type, data]` pairs: execution_start, execution_cached, and the final message.
    #[serde(default)]
    pub messages: Vec<(String, Value)>,
}

impl HistoryEntry {
    /// The prompt id recorded in the entry.
    pub fn prompt_id(&self) -> Option<&str> {
        self.prompt.get(1).and_then(Value::as_str)
    }

    /// True when the status says `success`.
    pub fn succeeded(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.status_str == "success")
    }

    /// The recorded `execution_error` data, if the prompt failed with one.
    pub fn execution_error(&self) -> Option<ExecutionError> {
        self.final_message("execution_error")
    }

    /// The recorded `execution_interrupted` data, if the prompt was interrupted.
    pub fn interrupted(&self) -> Option<ExecutionInterrupted> {
        self.final_message("execution_interrupted")
    }

    fn final_message<T: for<'de> Deserialize<'de>>(&self, kind: &str) -> Option<T> {
        let status = self.status.as_ref()?;
        status.messages.iter().find(|(k, _)| k == kind).and_then(|(_, data)| serde_json::from_value(data.clone()).ok())
    }

    /// Images per output node, in the entry's order.
    pub fn output_images(&self) -> IndexMap<String, Vec<ImageRef>> {
        self.outputs.iter().map(|(node, out)| (node.clone(), out.images.clone())).collect()
    }
}

/// `GET /queue`: running and pending prompts as `[number, prompt_id, graph, extra, outputs]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueResponse {
    /// The running prompt(s).
    pub queue_running: Vec<Vec<Value>>,
    /// The waiting prompts.
    pub queue_pending: Vec<Vec<Value>>,
}

/// Prompt ids in the server's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Prompts being executed.
    pub running: Vec<String>,
    /// Prompts waiting.
    pub pending: Vec<String>,
}

impl From<QueueResponse> for QueueState {
    /// Pending prompts come in the order the server will run them: by their
    /// queue number (`GET /queue` lists the heap's array, which is that order
    /// only for plain FIFO use).
    fn from(q: QueueResponse) -> Self {
        let ids = |items: Vec<Vec<Value>>| {
            items.into_iter().filter_map(|i| i.get(1).and_then(Value::as_str).map(str::to_owned)).collect()
        };
        let mut pending: Vec<(f64, String)> = q
            .queue_pending
            .into_iter()
            .filter_map(|i| {
                let id = i.get(1).and_then(Value::as_str)?.to_owned();
                Some((i.first().and_then(Value::as_f64).unwrap_or(f64::MAX), id))
            })
            .collect();
        pending.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        QueueState { running: ids(q.queue_running), pending: pending.into_iter().map(|p| p.1).collect() }
    }
}

impl QueueState {
    /// Prompts the server will run before `prompt_id` (all running ones and
    /// the pending ones before it), or None when it is not pending.
    pub fn ahead_of(&self, prompt_id: &str) -> Option<usize> {
        self.pending.iter().position(|p| p == prompt_id).map(|i| self.running.len() + i)
    }
}

/// `GET /object_info`: node class → description.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectInfo(pub IndexMap<String, NodeInfo>);

/// One node class in `/object_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Input specs by section (`required`, `optional`, `hidden`).
    #[serde(default)]
    pub input: IndexMap<String, IndexMap<String, Value>>,
    /// Output types.
    #[serde(default)]
    pub output: Vec<String>,
    /// Whether the node is an output node (SaveImage, PreviewImage…).
    #[serde(default)]
    pub output_node: bool,
    /// Class name.
    #[serde(default)]
    pub name: String,
    /// Human-readable name (may be null).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Menu category.
    #[serde(default)]
    pub category: String,
}

impl ObjectInfo {
    /// Whether the server knows the node class.
    pub fn has_node(&self, class_type: &str) -> bool {
        self.0.contains_key(class_type)
    }

    /// The choices of a combo input (e.g. checkpoint or LoRA file names), or `None` when the node
    /// or input is unknown or not a combo. Understands both `[[choices], {…}]` and the newer
    /// `["COMBO", {"options": [choices]}]`.
    pub fn choices(&self, class_type: &str, input: &str) -> Option<Vec<String>> {
        let node = self.0.get(class_type)?;
        let spec = node.input.values().find_map(|section| section.get(input))?;
        let list = match spec.get(0)? {
            Value::Array(list) => list,
            Value::String(s) if s == "COMBO" => spec.get(1)?.get("options")?.as_array()?,
            _ => return None,
        };
        Some(list.iter().map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())).collect())
    }
}

/// `GET /system_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemStats {
    /// Host and version facts.
    pub system: SystemInfo,
    /// Compute devices.
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// `system` part of `/system_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// `sys.platform` on ComfyUI 0.8 (`linux`, `win32`, `darwin`); `os.name`
    /// (`posix`, `nt`) on older servers.
    #[serde(default)]
    pub os: String,
    /// Python version string.
    #[serde(default)]
    pub python_version: String,
    /// ComfyUI version (absent on old servers).
    #[serde(default)]
    pub comfyui_version: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// One device in `/system_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Device name.
    pub name: String,
    /// `cuda`, `cpu`, `mps`…
    #[serde(rename = "type")]
    pub kind: String,
    /// Total VRAM in bytes.
    #[serde(default)]
    pub vram_total: Option<u64>,
    /// Free VRAM in bytes.
    #[serde(default)]
    pub vram_free: Option<u64>,
    /// Everything else.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// Per-node entry of `progress_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeProgress {
    /// Current value (float or int on the wire).
    pub value: f64,
    /// Maximum value.
    pub max: f64,
    /// `running` or `finished`.
    pub state: String,
    /// Node id.
    #[serde(default)]
    pub node_id: String,
}

/// `execution_error` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionError {
    /// Prompt id.
    pub prompt_id: String,
    /// Failing node.
    pub node_id: String,
    /// Failing node's class.
    pub node_type: String,
    /// Nodes executed before the failure.
    #[serde(default)]
    pub executed: Vec<String>,
    /// The exception text (ends with a newline on the real server).
    pub exception_message: String,
    /// Python exception type, e.g. `RuntimeError`.
    pub exception_type: String,
    /// Python traceback lines.
    #[serde(default)]
    pub traceback: Vec<String>,
    /// Input values as Python reprs.
    #[serde(default)]
    pub current_inputs: Value,
    /// Output ids the prompt was computing.
    #[serde(default)]
    pub current_outputs: Value,
}

/// `execution_interrupted` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionInterrupted {
    /// Prompt id.
    pub prompt_id: String,
    /// Node running when interrupted.
    pub node_id: String,
    /// Its class.
    pub node_type: String,
    /// Nodes executed before.
    #[serde(default)]
    pub executed: Vec<String>,
}

/// A text websocket message, decoded by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum WsMessage {
    /// Queue size; `sid` is set on the first message after connecting.
    Status {
        /// `exec_info.queue_remaining`.
        queue_remaining: u64,
        /// The socket's client id (only on connect).
        sid: Option<String>,
    },
    /// A prompt started.
    ExecutionStart {
        /// Prompt id.
        prompt_id: String,
    },
    /// Nodes reused from the cache.
    ExecutionCached {
        /// Prompt id.
        prompt_id: String,
        /// Cached node ids.
        nodes: Vec<String>,
    },
    /// A node started; `node: None` means the prompt is finished.
    Executing {
        /// Prompt id (absent in the message sent to a reconnecting client).
        prompt_id: Option<String>,
        /// Node id, or None when done.
        node: Option<String>,
    },
    /// Step progress of a node.
    Progress {
        /// Prompt id (absent on old servers).
        prompt_id: Option<String>,
        /// Node id.
        node: Option<String>,
        /// Steps done.
        value: f64,
        /// Steps in total.
        max: f64,
    },
    /// State of every node run so far.
    ProgressState {
        /// Prompt id.
        prompt_id: String,
        /// Node id → progress.
        nodes: IndexMap<String, NodeProgress>,
    },
    /// An output node produced files.
    Executed {
        /// Prompt id.
        prompt_id: String,
        /// Node id.
        node: String,
        /// What it produced.
        output: NodeOutput,
    },
    /// The prompt succeeded.
    ExecutionSuccess {
        /// Prompt id.
        prompt_id: String,
    },
    /// A node raised.
    ExecutionError(ExecutionError),
    /// The prompt was interrupted.
    ExecutionInterrupted(ExecutionInterrupted),
    /// A message type this client does not interpret (kept for logging).
    Other {
        /// The `type` field.
        kind: String,
        /// The `data` field.
        data: Value,
    },
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

#[derive(Deserialize)]
struct PromptIdData {
    prompt_id: String,
}

#[derive(Deserialize)]
struct CachedData {
    prompt_id: String,
    #[serde(default)]
    nodes: Vec<String>,
}

#[derive(Deserialize)]
struct ExecutingData {
    #[serde(default)]
    prompt_id: Option<String>,
    node: Option<String>,
}

#[derive(Deserialize)]
struct ProgressData {
    #[serde(default)]
    prompt_id: Option<String>,
    #[serde(default)]
    node: Option<String>,
    value: f64,
    max: f64,
}

#[derive(Deserialize)]
struct ProgressStateData {
    prompt_id: String,
    nodes: IndexMap<String, NodeProgress>,
}

#[derive(Deserialize)]
struct ExecutedData {
    prompt_id: String,
    node: String,
    #[serde(default)]
    output: NodeOutput,
}

#[derive(Deserialize)]
struct StatusData {
    status: StatusInner,
    #[serde(default)]
    sid: Option<String>,
}

#[derive(Deserialize)]
struct StatusInner {
    exec_info: ExecInfo,
}

#[derive(Deserialize)]
struct ExecInfo {
    queue_remaining: u64,
}

impl WsMessage {
    /// Parses one text frame. Unknown types become [`WsMessage::Other`]; known types with a
    /// malformed body are an error naming the type.
    pub fn parse(text: &str) -> Result<WsMessage, String> {
        let raw: RawMessage = serde_json::from_str(text).map_err(|e| format!("websocket message: {e}"))?;
        let data = raw.data;
        let bad = |e: serde_json::Error| format!("websocket message '{}': {e}", raw.kind);
        Ok(match raw.kind.as_str() {
            "status" => {
                let d: StatusData = serde_json::from_value(data).map_err(bad)?;
                WsMessage::Status { queue_remaining: d.status.exec_info.queue_remaining, sid: d.sid }
            }
            "execution_start" => {
                let d: PromptIdData = serde_json::from_value(data).map_err(bad)?;
                WsMessage::ExecutionStart { prompt_id: d.prompt_id }
            }
            "execution_cached" => {
                let d: CachedData = serde_json::from_value(data).map_err(bad)?;
                WsMessage::ExecutionCached { prompt_id: d.prompt_id, nodes: d.nodes }
            }
            "executing" => {
                let d: ExecutingData = serde_json::from_value(data).map_err(bad)?;
                WsMessage::Executing { prompt_id: d.prompt_id, node: d.node }
            }
            "progress" => {
                let d: ProgressData = serde_json::from_value(data).map_err(bad)?;
                WsMessage::Progress { prompt_id: d.prompt_id, node: d.node, value: d.value, max: d.max }
            }
            "progress_state" => {
                let d: ProgressStateData = serde_json::from_value(data).map_err(bad)?;
                WsMessage::ProgressState { prompt_id: d.prompt_id, nodes: d.nodes }
            }
            "executed" => {
                let d: ExecutedData = serde_json::from_value(data).map_err(bad)?;
                WsMessage::Executed { prompt_id: d.prompt_id, node: d.node, output: d.output }
            }
            "execution_success" => {
                let d: PromptIdData = serde_json::from_value(data).map_err(bad)?;
                WsMessage::ExecutionSuccess { prompt_id: d.prompt_id }
            }
            "execution_error" => WsMessage::ExecutionError(serde_json::from_value(data).map_err(bad)?),
            "execution_interrupted" => WsMessage::ExecutionInterrupted(serde_json::from_value(data).map_err(bad)?),
            _ => WsMessage::Other { kind: raw.kind, data },
        })
    }

    /// The prompt the message is about, when it says.
    pub fn prompt_id(&self) -> Option<&str> {
        match self {
            WsMessage::Status { .. } | WsMessage::Other { .. } => None,
            WsMessage::ExecutionStart { prompt_id }
            | WsMessage::ExecutionCached { prompt_id, .. }
            | WsMessage::ProgressState { prompt_id, .. }
            | WsMessage::Executed { prompt_id, .. }
            | WsMessage::ExecutionSuccess { prompt_id } => Some(prompt_id),
            WsMessage::Executing { prompt_id, .. } | WsMessage::Progress { prompt_id, .. } => prompt_id.as_deref(),
            WsMessage::ExecutionError(e) => Some(&e.prompt_id),
            WsMessage::ExecutionInterrupted(e) => Some(&e.prompt_id),
        }
    }
}

/// Metadata header of a type-4 binary frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewMetadata {
    /// Node that produced the preview.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Prompt the preview belongs to.
    #[serde(default)]
    pub prompt_id: Option<String>,
    /// Display node id.
    #[serde(default)]
    pub display_node_id: Option<String>,
    /// Parent node id (subgraphs).
    #[serde(default)]
    pub parent_node_id: Option<String>,
    /// Real node id.
    #[serde(default)]
    pub real_node_id: Option<String>,
    /// MIME type, e.g. `image/jpeg`.
    #[serde(default)]
    pub image_type: Option<String>,
}

/// A binary websocket frame.
#[derive(Debug, Clone, PartialEq)]
pub enum BinaryFrame {
    /// Type 1: a preview image without metadata.
    Preview {
        /// `image/jpeg` or `image/png`.
        mime: &'static str,
        /// The encoded image.
        bytes: bytes::Bytes,
    },
    /// Type 4: a preview image with a JSON metadata header.
    PreviewWithMetadata {
        /// Parsed metadata.
        metadata: PreviewMetadata,
        /// MIME type from the metadata (default `image/jpeg`).
        mime: String,
        /// The encoded image.
        bytes: bytes::Bytes,
    },
    /// Any other event type, unparsed.
    Other {
        /// Event type number.
        event_type: u32,
        /// Bytes after the type.
        payload: bytes::Bytes,
    },
}

impl BinaryFrame {
    /// Parses a binary frame; errors name what is wrong with it.
    pub fn parse(frame: &[u8]) -> Result<BinaryFrame, String> {
        let be_u32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if frame.len() < 4 {
            return Err(format!("binary frame: {} bytes, too short for the event type", frame.len()));
        }
        let event_type = be_u32(&frame[..4]);
        let rest = &frame[4..];
        match event_type {
            1 => {
                if rest.len() < 4 {
                    return Err("binary preview frame: missing image format".into());
                }
                let mime = match be_u32(&rest[..4]) {
                    1 => "image/jpeg",
                    2 => "image/png",
                    other => {
                        return Err(format!("binary preview frame: unknown image format {other}"));
                    }
                };
                Ok(BinaryFrame::Preview { mime, bytes: bytes::Bytes::copy_from_slice(&rest[4..]) })
            }
            4 => {
                if rest.len() < 4 {
                    return Err("binary preview frame (type 4): missing metadata length".into());
                }
                let len = be_u32(&rest[..4]) as usize;
                let body = &rest[4..];
                if body.len() < len {
                    return Err(format!(
                        "binary preview frame (type 4): metadata length {len} exceeds frame ({} bytes)",
                        body.len()
                    ));
                }
                let metadata: PreviewMetadata = serde_json::from_slice(&body[..len])
                    .map_err(|e| format!("binary preview frame (type 4): metadata: {e}"))?;
                let mime = metadata.image_type.clone().unwrap_or_else(|| "image/jpeg".to_owned());
                Ok(BinaryFrame::PreviewWithMetadata {
                    metadata,
                    mime,
                    bytes: bytes::Bytes::copy_from_slice(&body[len..]),
                })
            }
            other => Ok(BinaryFrame::Other { event_type: other, payload: bytes::Bytes::copy_from_slice(rest) }),
        }
    }
}
