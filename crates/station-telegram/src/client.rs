//! A thin Bot API client over reqwest: JSON calls, multipart uploads, file
//! downloads, and errors classified the way the adapter acts on them.

use std::time::Duration;

use serde_json::{Value, json};

/// A failed Bot API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The API answered `ok: false`.
    #[error("Telegram {method}: {code} {description}")]
    Api {
        /// Method called.
        method: String,
        /// `error_code`.
        code: u16,
        /// `description`.
        description: String,
        /// `parameters.retry_after`, on 429.
        retry_after: Option<u64>,
    },
    /// The request did not get an answer (connection, timeout, unreadable body).
    #[error("Telegram {method}: {reason}")]
    Network {
        /// Method called.
        method: String,
        /// What went wrong.
        reason: String,
    },
}

impl ApiError {
    fn description(&self) -> &str {
        match self {
            ApiError::Api { description, .. } => description,
            ApiError::Network { .. } => "",
        }
    }

    /// `message is not modified`: the edit changed nothing (harmless).
    pub fn is_not_modified(&self) -> bool {
        self.description().contains("message is not modified")
    }

    /// `message to edit not found` (the user deleted it).
    pub fn is_edit_target_gone(&self) -> bool {
        let d = self.description();
        d.contains("message to edit not found") || d.contains("message to delete not found")
    }

    /// The file id is not (or no longer) valid for this bot.
    pub fn is_bad_file_id(&self) -> bool {
        let d = self.description();
        d.contains("wrong file identifier") || d.contains("invalid file_id") || d.contains("FILE_REFERENCE")
    }

    /// `retry_after` of a 429.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Api { code: 429, retry_after, .. } => Some(retry_after.unwrap_or(1)),
            _ => None,
        }
    }

    /// Will never succeed for this chat: blocked, kicked, chat gone, deactivated user.
    pub fn is_permanent_for_chat(&self) -> bool {
        match self {
            ApiError::Api { code: 403, .. } => true,
            ApiError::Api { code: 400, description, .. } => {
                description.contains("chat not found") || description.contains("user is deactivated")
            }
            _ => false,
        }
    }

    /// Worth retrying later (network trouble, server errors).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Network { .. } => true,
            ApiError::Api { code, .. } => *code >= 500,
        }
    }
}

/// A file to upload in a multipart call.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Part name (`photo`, or the name used in `attach://name`).
    pub part: String,
    /// File name sent.
    pub file_name: String,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// The Bot API at one base URL with one token.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    base: String,
    files: String,
}

impl BotApi {
    /// A client for `api_url` (e.g. `https://api.telegram.org`) and `token`.
    pub fn new(api_url: &str, token: &str) -> BotApi {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = api_url.trim_end_matches('/');
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client builds with the ring provider installed");
        BotApi { http, base: format!("{api}/bot{token}"), files: format!("{api}/file/bot{token}") }
    }

    /// Calls `method` with a JSON body; `timeout` bounds the whole request.
    pub async fn call_timeout(&self, method: &str, body: &Value, timeout: Duration) -> Result<Value, ApiError> {
        let res = self.http.post(format!("{}/{method}", self.base)).json(body).timeout(timeout).send().await;
        Self::answer(method, res).await
    }

    /// Calls `method` with a JSON body (30 s limit).
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, ApiError> {
        self.call_timeout(method, body, Duration::from_secs(30)).await
    }

    /// Calls `method` as multipart: `fields` (objects and arrays are sent as
    /// JSON text) plus uploaded files.
    pub async fn call_upload(&self, method: &str, fields: &Value, uploads: Vec<Upload>) -> Result<Value, ApiError> {
        let mut form = reqwest::multipart::Form::new();
        if let Some(map) = fields.as_object() {
            for (k, v) in map {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                form = form.text(k.clone(), text);
            }
        }
        for u in uploads {
            form = form.part(u.part, reqwest::multipart::Part::bytes(u.bytes).file_name(u.file_name));
        }
        let res = self
            .http
            .post(format!("{}/{method}", self.base))
            .multipart(form)
            .timeout(Duration::from_secs(120))
            .send()
            .await;
        Self::answer(method, res).await
    }

    async fn answer(method: &str, res: Result<reqwest::Response, reqwest::Error>) -> Result<Value, ApiError> {
        let net = |reason: String| ApiError::Network { method: method.to_string(), reason };
        let res = res.map_err(|e| net(e.without_url().to_string()))?;
        let status = res.status().as_u16();
        let body: Value = match res.json().await {
            Ok(v) => v,
            Err(e) if status >= 500 => {
                return Err(ApiError::Api {
                    method: method.into(),
                    code: status,
                    description: format!("server error: {}", e.without_url()),
                    retry_after: None,
                });
            }
            Err(e) => return Err(net(format!("unreadable answer (HTTP {status}): {}", e.without_url()))),
        };
        if body["ok"] == json!(true) {
            return Ok(body["result"].clone());
        }
        Err(ApiError::Api {
            method: method.to_string(),
            code: body["error_code"].as_u64().map(|c| c as u16).unwrap_or(status),
            description: body["description"].as_str().unwrap_or("no description").to_string(),
            retry_after: body["parameters"]["retry_after"].as_u64(),
        })
    }

    /// Downloads a file by id, refusing files over `max_bytes` (checked from
    /// `getFile`'s size and again while reading).
    pub async fn download(&self, file_id: &str, max_bytes: u64) -> Result<Vec<u8>, ApiError> {
        let f = self.call("getFile", &json!({"file_id": file_id})).await?;
        let too_big = |size: u64| ApiError::Api {
            method: "getFile".into(),
            code: 413,
            description: format!("the file is {size} bytes; the limit is {max_bytes} (media.max_bytes)"),
            retry_after: None,
        };
        if let Some(size) = f["file_size"].as_u64()
            && size > max_bytes
        {
            return Err(too_big(size));
        }
        let path = f["file_path"].as_str().ok_or_else(|| ApiError::Api {
            method: "getFile".into(),
            code: 400,
            description: "no file_path in the answer".into(),
            retry_after: None,
        })?;
        let net = |reason: String| ApiError::Network { method: "download".into(), reason };
        let mut res = self
            .http
            .get(format!("{}/{path}", self.files))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| net(e.without_url().to_string()))?;
        if !res.status().is_success() {
            return Err(ApiError::Api {
                method: "download".into(),
                code: res.status().as_u16(),
                description: format!("file download failed: HTTP {}", res.status()),
                retry_after: None,
            });
        }
        let mut out = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| net(e.without_url().to_string()))? {
            out.extend_from_slice(&chunk);
            if out.len() as u64 > max_bytes {
                return Err(too_big(out.len() as u64));
            }
        }
        Ok(out)
    }
}
