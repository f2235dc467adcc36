//! A real Station (database, media workers) behind the real router on
//! 127.0.0.1:0, and a small client for the API tests.
#![allow(dead_code)] // each test binary uses part of this

use station_core::Role;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use station_core::AccountRow;
use station_core::{Config, MediaExecutor, Station, Workers};
use station_media::image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use station_testkit::TestDb;

/// A served Station with two users (alice, bob) and an admin.
pub struct Server {
    pub base: String,
    pub station: Station,
    /// The database behind `station`, for assertions on rows.
    pub store: station_testkit::Store,
    pub http: Client,
    pub alice: AccountRow,
    pub alice_key: String,
    pub bob: AccountRow,
    pub bob_key: String,
    pub admin: AccountRow,
    pub admin_key: String,
    pub kind: &'static str,
    workers: Option<Workers>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a server; `tweak` adjusts the configuration first.
pub async fn serve(db: &TestDb, workers: bool, tweak: impl FnOnce(&mut Config)) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.queue.poll_ms = 50;
    config.limits.requests_per_minute = 100_000;
    tweak(&mut config);
    let station = Station::with_store(config.clone(), db.store.clone()).unwrap().0;
    station.register_executor(Arc::new(MediaExecutor::new(&config)));
    let workers = workers.then(|| Workers::start(&station));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(station_http::serve(listener, station.clone(), axum::Router::new(), async move {
        let _ = stopped.await;
    }));
    let mk = |subject: &'static str| {
        let station = station.clone();
        async move {
            let a = station.account("test", subject, subject).await.unwrap();
            station.ensure_starting_grant(&a.id).await.unwrap();
            let (_, key) = station.create_api_key(&a, "test", None).await.unwrap();
            (a, key)
        }
    };
    let (alice, alice_key) = mk("alice").await;
    let (bob, bob_key) = mk("bob").await;
    let (admin, admin_key) = mk("admin").await;
    station.set_account_role(&admin.id, Role::Admin, &station_core::audit::Actor::operator("test")).await.unwrap();
    let admin = db.store.get_account(&admin.id).await.unwrap().unwrap();
    Server {
        base,
        station,
        store: db.store.clone(),
        http: Client::new(),
        alice,
        alice_key,
        bob,
        bob_key,
        admin,
        admin_key,
        kind: db.kind,
        workers,
        _dir: dir,
        _stop: stop,
    }
}

/// A JSON answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The error code of an API error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an API error ({}): {}", self.status, self.body))
    }

    /// The fields named by an API error answer.
    pub fn fields(&self) -> Vec<String> {
        self.body["error"]["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("no fields: {}", self.body))
            .iter()
            .map(|f| f["field"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Server {
    /// This server's own data folder (its local media folder is `media` in it).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `body` as JSON with `key` as a bearer key.
    pub async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> Answer {
        let mut r = self.http.request(method, self.url(path));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        Self::answer(r.send().await.unwrap()).await
    }

    pub async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Answer { status, headers, body }
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.call(Method::GET, path, Some(key), None).await
    }

    /// The bytes of a GET with `key` (asserting 200).
    pub async fn get_bytes(&self, path: &str, key: &str) -> Vec<u8> {
        let r = self.http.get(self.url(path)).bearer_auth(key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.bytes().await.unwrap().to_vec()
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// Uploads `bytes` as `file` through the API.
    pub async fn upload(&self, key: &str, bytes: Vec<u8>, name: &str) -> Answer {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("file", part);
        Self::answer(self.http.post(self.url("/api/v1/media")).bearer_auth(key).multipart(form).send().await.unwrap())
            .await
    }

    /// Polls a generation until it is terminal.
    pub async fn wait(&self, key: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let a = self.get(&format!("/api/v1/generations/{id}"), key).await;
            assert_eq!(a.status, StatusCode::OK, "{}: {}", self.kind, a.body);
            if matches!(a.body["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return a.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: generation {id} never finished: {}",
                self.kind,
                a.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
    }
}

/// A PNG of `w`×`h`: left half red, right half blue.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, _| {
        if x < w / 2 { Rgba([255, 0, 0, 255]) } else { Rgba([0, 0, 255, 255]) }
    }));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}
