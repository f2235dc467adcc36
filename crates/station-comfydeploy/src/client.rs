//! The ComfyDeploy API as Station uses it: queue a deployment run, read a
//! run, cancel a run, download an output.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Why a request to the provider did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 401/403: the API key is missing or refused.
    #[error("the API key was refused ({0})")]
    Unauthorized(String),
    /// 404: the deployment or run does not exist there.
    #[error("not found: {0}")]
    NotFound(String),
    /// 400/422: the request itself is wrong (an input the deployment lacks,
    /// a value of the wrong type).
    #[error("{0}")]
    Invalid(String),
    /// Unreachable, timed out, 429 or 5xx: worth trying again.
    #[error("{0}")]
    Transient(String),
}

/// A run as `GET /api/run/{id}` describes it (only what Station reads).
#[derive(Debug, Clone, Deserialize)]
pub struct RunState {
    /// `not-started|queued|started|running|uploading|success|failed|cancelled|timeout`.
    pub status: String,
    /// 0..1.
    #[serde(default)]
    pub progress: Option<f64>,
    /// What the run is doing, in the provider's words (the error, for a failed run).
    #[serde(default)]
    pub live_status: Option<String>,
    /// Output groups: `[{data: {images: [{url, filename, type}]}}]`.
    #[serde(default)]
    pub outputs: Option<Vec<Value>>,
}

impl RunState {
    /// The output files' `(url, filename)`, images first then animations, in order.
    pub fn output_files(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        for group in self.outputs.iter().flatten() {
            for kind in ["images", "gifs"] {
                for f in group["data"][kind].as_array().into_iter().flatten() {
                    if let Some(url) = f["url"].as_str() {
                        let name = f["filename"].as_str().unwrap_or("output").to_string();
                        out.push((url.to_string(), name));
                    }
                }
            }
        }
        out
    }
}

/// A client for one API base URL and key.
#[derive(Clone)]
pub struct DeployClient {
    http: reqwest::Client,
    base: url::Url,
    key: String,
}

impl std::fmt::Debug for DeployClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl DeployClient {
    /// A client for `api_url` with `key`; requests give up after `timeout`.
    pub fn new(api_url: &str, key: &str, timeout: Duration) -> Result<DeployClient, String> {
        let mut base = url::Url::parse(api_url).map_err(|e| format!("api_url \"{api_url}\": {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!("api_url \"{api_url}\" is not http(s)"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(DeployClient { http, base, key: key.to_string() })
    }

    fn url(&self, path: &str) -> url::Url {
        self.base.join(path).expect("relative API paths join")
    }

    /// `POST /api/run/deployment/queue`: the new run's id.
    pub async fn queue(
        &self,
        deployment_id: &str,
        inputs: &Map<String, Value>,
        webhook: Option<&str>,
    ) -> Result<String, ApiError> {
        let mut body = json!({"deployment_id": deployment_id, "inputs": inputs});
        if let Some(w) = webhook {
            body["webhook"] = json!(w);
        }
        let r = self.http.post(self.url("api/run/deployment/queue")).bearer_auth(&self.key).json(&body).send().await;
        let v = answer(r).await?;
        v["run_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::Transient(format!("the queue answer has no run_id: {v}")))
    }

    /// `GET /api/run/{id}`.
    pub async fn run(&self, run_id: &str) -> Result<RunState, ApiError> {
        let r = self.http.get(self.url(&format!("api/run/{}", segment(run_id)))).bearer_auth(&self.key).send().await;
        let v = answer(r).await?;
        serde_json::from_value(v).map_err(|e| ApiError::Transient(format!("unreadable run: {e}")))
    }

    /// `POST /api/run/{id}/cancel`.
    pub async fn cancel(&self, run_id: &str) -> Result<(), ApiError> {
        let r = self
            .http
            .post(self.url(&format!("api/run/{}/cancel", segment(run_id))))
            .bearer_auth(&self.key)
            .send()
            .await;
        answer(r).await.map(drop)
    }

    /// Downloads an output file (at most `limit` bytes). Output links are
    /// storage URLs, often on another host: the API key is not sent there.
    pub async fn download(&self, url: &str, limit: u64) -> Result<Vec<u8>, ApiError> {
        let target = self.base.join(url).map_err(|e| ApiError::Invalid(format!("output URL \"{url}\": {e}")))?;
        if !matches!(target.scheme(), "http" | "https") {
            return Err(ApiError::Invalid(format!("output URL \"{url}\" is not http(s)")));
        }
        let mut resp = self.http.get(target).send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(classify(status.as_u16(), format!("output download answered {status}")));
        }
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(ApiError::Invalid(format!("output larger than {limit} bytes")));
        }
        let mut bytes = vec![];
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > limit {
                return Err(ApiError::Invalid(format!("output larger than {limit} bytes")));
            }
        }
        Ok(bytes)
    }
}

/// A run id as one path segment (ids are uuids; anything else is escaped).
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn transport(e: reqwest::Error) -> ApiError {
    ApiError::Transient(if e.is_timeout() {
        "the provider did not answer in time".into()
    } else {
        format!("cannot reach the provider: {e}")
    })
}

fn classify(status: u16, message: String) -> ApiError {
    match status {
        401 | 403 => ApiError::Unauthorized(message),
        404 => ApiError::NotFound(message),
        400 | 422 => ApiError::Invalid(message),
        _ => ApiError::Transient(message),
    }
}

async fn answer(r: Result<reqwest::Response, reqwest::Error>) -> Result<Value, ApiError> {
    let resp = r.map_err(transport)?;
    let status = resp.status();
    let text = resp.text().await.map_err(transport)?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(body);
    }
    let said = body
        .get("error")
        .or_else(|| body.get("message"))
        .or_else(|| body.get("detail"))
        .map(|m| m.as_str().map(str::to_string).unwrap_or_else(|| m.to_string()))
        .or_else(|| body.as_str().filter(|s| !s.is_empty()).map(str::to_string))
        .unwrap_or_else(|| status.to_string());
    Err(classify(status.as_u16(), format!("{said} (HTTP {})", status.as_u16())))
}
