//! HTTP side of the ComfyUI API.

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use crate::error::{ComfyError, NodeError};
use crate::protocol::{
    Graph, HistoryEntry, ImageRef, ObjectInfo, QueueResponse, QueueState, SubmitAccepted, SystemStats, UploadedImage,
    ValidationErrorBody,
};

/// What to POST to `/prompt`.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// Our prompt id; the server uses it instead of making one up.
    pub prompt_id: String,
    /// The API-format graph.
    pub graph: Graph,
    /// The websocket client id that must receive the prompt's events.
    pub client_id: String,
    /// `extra_data.preview_method` (`auto`, `latent2rgb`, `taesd`, `none`); None leaves the
    /// server default.
    pub preview_method: Option<String>,
}

/// Client for one ComfyUI server's HTTP API.
#[derive(Debug, Clone)]
pub struct ComfyClient {
    base: Url,
    http: reqwest::Client,
}

impl ComfyClient {
    /// Makes a client for `base_url` (e.g. `http://127.0.0.1:8188`) with a 30 s request timeout.
    pub fn new(base_url: &str) -> Result<ComfyClient, ComfyError> {
        Self::with_timeout(base_url, Duration::from_secs(30))
    }

    /// Makes a client whose requests give up after `timeout`.
    pub fn with_timeout(base_url: &str, timeout: Duration) -> Result<ComfyClient, ComfyError> {
        Self::with_timeouts(base_url, Duration::from_secs(5).min(timeout), timeout)
    }

    /// Makes a client that gives up connecting after `connect` and waiting
    /// for a whole answer after `request`.
    pub fn with_timeouts(base_url: &str, connect: Duration, request: Duration) -> Result<ComfyClient, ComfyError> {
        // reqwest is built without a default crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut base =
            Url::parse(base_url).map_err(|e| ComfyError::BadUrl { url: base_url.to_owned(), reason: e.to_string() })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ComfyError::BadUrl { url: base_url.to_owned(), reason: "scheme must be http or https".into() });
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = shared_http(connect.min(request), request).map_err(|e| ComfyError::BadUrl {
            url: base_url.to_owned(),
            reason: format!("cannot build HTTP client: {e}"),
        })?;
        Ok(ComfyClient { base, http })
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("relative API paths always join")
    }

    fn transport_error(url: &Url, e: reqwest::Error) -> ComfyError {
        if e.is_timeout() {
            ComfyError::Timeout { url: url.to_string() }
        } else {
            // Refused, reset, closed mid-answer: all mean the server is (momentarily) unusable.
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason.push_str(": ");
                reason.push_str(&s.to_string());
                source = s.source();
            }
            ComfyError::Connect { url: url.to_string(), reason }
        }
    }

    async fn send(&self, url: &Url, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ComfyError> {
        req.send().await.map_err(|e| Self::transport_error(url, e))
    }

    async fn body(url: &Url, resp: reqwest::Response) -> Result<Bytes, ComfyError> {
        resp.bytes().await.map_err(|e| Self::transport_error(url, e))
    }

    async fn expect_ok(url: &Url, resp: reqwest::Response) -> Result<Bytes, ComfyError> {
        let status = resp.status();
        let body = Self::body(url, resp).await?;
        if !status.is_success() {
            return Err(ComfyError::Http {
                url: url.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(500).collect(),
            });
        }
        Ok(body)
    }

    fn decode<T: DeserializeOwned>(url: &Url, body: &[u8]) -> Result<T, ComfyError> {
        serde_json::from_slice(body)
            .map_err(|e| ComfyError::Protocol { what: url.path().to_owned(), reason: e.to_string() })
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ComfyError> {
        let url = self.url(path);
        let resp = self.send(&url, self.http.get(url.clone())).await?;
        let body = Self::expect_ok(&url, resp).await?;
        Self::decode(&url, &body)
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<Bytes, ComfyError> {
        let url = self.url(path);
        let resp = self.send(&url, self.http.post(url.clone()).json(body)).await?;
        Self::expect_ok(&url, resp).await
    }

    /// Queues a prompt. A 400 becomes [`ComfyError::Validation`] listing every node error.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<SubmitAccepted, ComfyError> {
        let url = self.url("prompt");
        let mut body = json!({
            "prompt": req.graph,
            "client_id": req.client_id,
            "prompt_id": req.prompt_id,
        });
        if let Some(method) = &req.preview_method {
            body["extra_data"] = json!({ "preview_method": method });
        }
        let resp = self.send(&url, self.http.post(url.clone()).json(&body)).await?;
        let status = resp.status();
        let bytes = Self::body(&url, resp).await?;
        if status == reqwest::StatusCode::BAD_REQUEST {
            let parsed: ValidationErrorBody = Self::decode(&url, &bytes)?;
            return Err(validation_error(parsed));
        }
        if !status.is_success() {
            return Err(ComfyError::Http {
                url: url.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        Self::decode(&url, &bytes)
    }

    /// Uploads an input image (overwriting a file of the same name) for `LoadImage`.
    pub async fn upload_image(&self, bytes: impl Into<Bytes>, filename: &str) -> Result<UploadedImage, ComfyError> {
        self.upload_into(bytes, filename, "").await
    }

    /// Uploads a file into `input/<subfolder>/` (`POST /upload/image` with a
    /// `subfolder`), overwriting one of the same name. ComfyUI takes any file
    /// there, so training datasets send their caption `.txt` files this way too.
    pub async fn upload_into(
        &self,
        bytes: impl Into<Bytes>,
        filename: &str,
        subfolder: &str,
    ) -> Result<UploadedImage, ComfyError> {
        let url = self.url("upload/image");
        let bytes: Bytes = bytes.into();
        let part = reqwest::multipart::Part::stream(bytes).file_name(filename.to_owned());
        let mut form =
            reqwest::multipart::Form::new().part("image", part).text("overwrite", "true").text("type", "input");
        if !subfolder.is_empty() {
            form = form.text("subfolder", subfolder.to_owned());
        }
        let resp = self.send(&url, self.http.post(url.clone()).multipart(form)).await?;
        let body = Self::expect_ok(&url, resp).await?;
        Self::decode(&url, &body)
    }

    /// Downloads an image by reference (`GET /view`).
    pub async fn view(&self, image: &ImageRef) -> Result<Bytes, ComfyError> {
        let url = self.url("view");
        let req = self.http.get(url.clone()).query(&[
            ("filename", image.filename.as_str()),
            ("subfolder", image.subfolder.as_str()),
            ("type", image.kind.as_str()),
        ]);
        let resp = self.send(&url, req).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(ComfyError::NotFound {
                what: format!("{}/{}/{}", image.kind, image.subfolder, image.filename),
            });
        }
        Self::expect_ok(&url, resp).await
    }

    /// One read of `GET /history/<id>`; `None` when the server answers `{}`.
    pub async fn history(&self, prompt_id: &str) -> Result<Option<HistoryEntry>, ComfyError> {
        let mut map: indexmap::IndexMap<String, HistoryEntry> = self.get_json(&format!("history/{prompt_id}")).await?;
        Ok(map.shift_remove(prompt_id))
    }

    /// Reads history for a prompt that just finished: the real server can still answer `{}`
    /// right after `execution_success`, so an empty answer is retried a few times (~1 s).
    pub async fn history_after_finish(&self, prompt_id: &str) -> Result<Option<HistoryEntry>, ComfyError> {
        for attempt in 0..8u32 {
            if let Some(entry) = self.history(prompt_id).await? {
                return Ok(Some(entry));
            }
            tokio::time::sleep(Duration::from_millis(25 << attempt.min(3))).await;
        }
        self.history(prompt_id).await
    }

    /// Running and pending prompt ids.
    pub async fn queue(&self) -> Result<QueueState, ComfyError> {
        let q: QueueResponse = self.get_json("queue").await?;
        Ok(q.into())
    }

    /// Removes a pending prompt from the queue (no effect once it runs).
    pub async fn cancel_pending(&self, prompt_id: &str) -> Result<(), ComfyError> {
        self.post_json("queue", &json!({ "delete": [prompt_id] })).await.map(drop)
    }

    /// Interrupts `prompt_id` if it is the one running (no effect otherwise).
    pub async fn interrupt(&self, prompt_id: &str) -> Result<(), ComfyError> {
        self.post_json("interrupt", &json!({ "prompt_id": prompt_id })).await.map(drop)
    }

    /// Node classes and their inputs (with the server's model file lists as choices).
    pub async fn object_info(&self) -> Result<ObjectInfo, ComfyError> {
        self.get_json("object_info").await
    }

    /// `GET /models`: the names of the server's model folders. `None` when the
    /// server does not have the route (older ComfyUI: 404/405).
    pub async fn model_folders(&self) -> Result<Option<Vec<String>>, ComfyError> {
        match self.get_json("models").await {
            Ok(v) => Ok(Some(v)),
            Err(ComfyError::Http { status: 404 | 405, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /models/<folder>`: the files of one model folder, sorted. `None`
    /// when the server has no such folder (404).
    pub async fn model_files(&self, folder: &str) -> Result<Option<Vec<String>>, ComfyError> {
        match self.get_json(&format!("models/{folder}")).await {
            Ok(v) => Ok(Some(v)),
            Err(ComfyError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /view_metadata/<folder>?filename=…`: the `__metadata__` object of
    /// a model file's safetensors header (its values are strings). `None`
    /// when the server answers 404: the folder or file is unknown, the file
    /// is not a `.safetensors` file, or its header has no metadata.
    pub async fn model_metadata(
        &self,
        folder: &str,
        filename: &str,
    ) -> Result<Option<serde_json::Map<String, Value>>, ComfyError> {
        let url = self.url(&format!("view_metadata/{folder}"));
        let resp = self.send(&url, self.http.get(url.clone()).query(&[("filename", filename)])).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = Self::expect_ok(&url, resp).await?;
        Self::decode(&url, &body).map(Some)
    }

    /// Host, version and device facts; doubles as a health check.
    pub async fn system_stats(&self) -> Result<SystemStats, ComfyError> {
        self.get_json("system_stats").await
    }
}

/// Turns a 400 body into [`ComfyError::Validation`].
pub fn validation_error(body: ValidationErrorBody) -> ComfyError {
    let message = if body.error.details.is_empty() {
        body.error.message.clone()
    } else {
        format!("{} ({})", body.error.message, body.error.details)
    };
    let node_errors = body
        .node_errors
        .iter()
        .flat_map(|(node_id, entry)| {
            entry.errors.iter().map(move |e| NodeError {
                node_id: node_id.clone(),
                class_type: entry.class_type.clone(),
                kind: e.kind.clone(),
                message: e.message.clone(),
                details: e.details.clone(),
                input_name: e.extra_info.get("input_name").and_then(Value::as_str).map(str::to_owned),
            })
        })
        .collect();
    ComfyError::Validation { message, node_errors }
}

/// One `reqwest::Client` per pair of timeouts for the whole process, cloned
/// (it is a handle) into every `ComfyClient`. Building one reads and parses
/// the system's CA certificates (rustls-platform-verifier): the fleet
/// profile showed that, at 2 clients per backend, as most of a process's
/// start-up CPU with 100 backends (docs/PERFORMANCE.md). Connection pools
/// are per host inside it, so backends still get their own connections.
fn shared_http(connect: Duration, request: Duration) -> Result<reqwest::Client, reqwest::Error> {
    static CLIENTS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<(Duration, Duration), reqwest::Client>>,
    > = std::sync::OnceLock::new();
    let mut clients = CLIENTS.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(c) = clients.get(&(connect, request)) {
        return Ok(c.clone());
    }
    let client = reqwest::Client::builder().timeout(request).connect_timeout(connect).build()?;
    clients.insert((connect, request), client.clone());
    Ok(client)
}
