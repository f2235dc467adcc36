//! End to end through the REST API, the way a client sees it, against a
//! direct ComfyUI client doing the same work — alternating job by job.
//!
//! The workflow is the issue's: 64×64 `EmptyImage` → `ImageInvert` →
//! `SaveImage`, a different colour each time so nothing could be cached.
//!
//! - **direct**: `POST /prompt`, the websocket until the prompt is done,
//!   `/history`, `/view` (what [`run_prompt`] and [`ComfyClient::view`] do).
//! - **through Station**: the real HTTP server (`station_http::serve`, as
//!   `station serve` runs it) on 127.0.0.1 with the ComfyUI executor and
//!   workers: `POST /api/v1/generations` with an API key, `GET
//!   …/events` (SSE) until the `result` event, `GET` the output media.
//!
//! A third series runs the same service with Nagle's algorithm left on (as
//! `serve` did before `TCP_NODELAY`), so before and after share the run.
//!
//! Every output is decoded and its pixel checked, so a broken run cannot
//! pass as a fast one.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use station_comfyui::{BackendSocket, BackendSpec, ComfyClient, ComfyExecutor, RunOptions, run_prompt};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::{Config, Station, Workers};

use crate::{SETTLE, Series, WARMUP};

/// The tool Station runs: the same graph, its colour bound to an input.
fn tiny_tool() -> Value {
    json!({
        "id": "tiny",
        "name": "Tiny",
        "description": "A 64×64 plain picture, inverted (benchmark).",
        "category": "text-to-image",
        "service": "comfyui",
        "visibility": "public",
        "inputs": {"color": {"type": "integer", "required": true, "min": 0, "max": 16_777_215,
            "description": "Colour as 0xRRGGBB."}},
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": tiny_graph(0),
            "bindings": {"color": ["1.inputs.color"]},
            "outputs": ["3"]
        }
    })
}

fn tiny_graph(color: u32) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "tiny"}}
    })
}

/// A colour per job, never repeating within a run.
fn colour(i: usize) -> u32 {
    (i as u32).wrapping_mul(2_654_435_761) & 0x00FF_FFFF
}

/// The inverted first pixel of job `i`'s picture, as ComfyUI saves it: in
/// float32 `1 - c / 255`, truncated to `u8` (often one below `255 - c`).
fn expected_pixel(i: usize) -> [u8; 3] {
    let c = colour(i);
    let inv = |v: u32| (255.0f32 * (1.0f32 - v as f32 / 255.0)) as u8;
    [inv(c >> 16), inv(c >> 8 & 0xFF), inv(c & 0xFF)]
}

fn check_pixel(bytes: &[u8], i: usize, what: &str) {
    let px = image::load_from_memory(bytes).unwrap_or_else(|e| panic!("{what}: output does not decode: {e}")).to_rgb8();
    assert_eq!(px.dimensions(), (64, 64), "{what}: output size");
    assert_eq!(px.get_pixel(0, 0).0, expected_pixel(i), "{what}: inverted colour of job {i}");
}

/// Station served over HTTP, with the executor and workers running.
struct Served {
    base: String,
    /// The same service served with Nagle's algorithm left on (what `serve`
    /// did before), for the before/after comparison in the same run.
    base_nagle: String,
    key: String,
    http: reqwest::Client,
    workers: Option<Workers>,
    comfy: std::sync::Arc<ComfyExecutor>,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(comfy_url: &str) -> Served {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        // The per-account limits are not what is measured.
        config.limits.requests_per_minute = 0;
        config.limits.max_queued = 0;
        std::fs::create_dir_all(config.tools_dir()).expect("tools dir");
        std::fs::write(config.tools_dir().join("tiny.json"), tiny_tool().to_string()).expect("write tool");
        let (station, errors) = Station::open(config).await.expect("open Station");
        assert!(errors.is_empty(), "tool files failed to load: {errors:?}");
        let spec = BackendSpec { name: "b0".into(), url: comfy_url.to_owned(), max_concurrent: 1, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "auto").expect("executor");
        comfy.start_health_checks(Duration::from_secs(10), station.wake.clone()).await;
        station.register_executor(comfy.clone());
        let workers = Some(Workers::start(&station));
        let account = station.account("bench", "e2e", "E2E").await.expect("account");
        station
            .grant_points(&account, 1_000_000, "benchmark jobs", &station_core::audit::Actor::operator("bench"), None)
            .await
            .expect("grant");
        let (_, key) = station.create_api_key(&account, "e2e bench", None).await.expect("API key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let nagle = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_nagle = format!("http://{}", nagle.local_addr().expect("address"));
        let plain = station_http::service(station.clone(), axum::Router::new());
        tokio::spawn(async move {
            use axum::ServiceExt as _;
            let _ = axum::serve(nagle, plain.into_make_service()).await;
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(station_http::serve(listener, station, axum::Router::new(), async move {
            let _ = stopped.await;
        }));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().pool_max_idle_per_host(4).build().expect("HTTP client");
        Served { base, base_nagle, key, http, workers, comfy, stop, _dir: dir }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.send(());
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        self.comfy.shutdown();
    }

    /// One job through the API; returns its timings.
    async fn run_once(&self, i: usize, nagle: bool) -> ApiTimes {
        let base = if nagle { &self.base_nagle } else { &self.base };
        let t0 = Instant::now();
        let created = self
            .http
            .post(format!("{base}/api/v1/generations"))
            .bearer_auth(&self.key)
            .json(&json!({"tool": "tiny", "params": {"color": colour(i)}}))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), 201, "create: {:?}", created.text().await);
        let body: Value = created.json().await.expect("create body");
        let id = body["id"].as_str().expect("generation id").to_owned();
        let t_created = t0.elapsed();
        let mut events = self
            .http
            .get(format!("{base}/api/v1/generations/{id}/events"))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("events");
        assert_eq!(events.status(), 200);
        let mut first_byte = None;
        let mut buffer = String::new();
        let url = loop {
            let chunk = tokio::time::timeout(Duration::from_secs(30), events.chunk())
                .await
                .unwrap_or_else(|_| panic!("job {id}: no event for 30 s"))
                .expect("event stream")
                .unwrap_or_else(|| panic!("job {id}: stream ended without a result: {buffer}"));
            first_byte.get_or_insert_with(|| t0.elapsed());
            buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
            if let Some(url) = result_url(&buffer) {
                break url;
            }
        };
        drop(events);
        let t_result = t0.elapsed();
        let media = self.http.get(format!("{base}{url}")).bearer_auth(&self.key).send().await.expect("media");
        assert_eq!(media.status(), 200);
        let bytes = media.bytes().await.expect("media body");
        let total = t0.elapsed();
        check_pixel(&bytes, i, "through Station");
        ApiTimes { create: t_created, first_event: first_byte.expect("an event") - t_created, result: t_result, total }
    }
}

/// The first output's URL once the stream holds a complete `result` event.
fn result_url(buffer: &str) -> Option<String> {
    let start = buffer.find("event: result\n")?;
    let rest = &buffer[start..];
    let end = rest.find("\n\n")?;
    let data = rest[..end].lines().find_map(|l| l.strip_prefix("data: "))?;
    let v: Value = serde_json::from_str(data).expect("result data is JSON");
    Some(v["outputs"][0]["url"].as_str().expect("an output URL").to_owned())
}

/// Milestones of one job through the API, from just before the create.
struct ApiTimes {
    create: Duration,
    /// From the create's answer to the first byte of the event stream.
    first_event: Duration,
    result: Duration,
    total: Duration,
}

/// A direct client: one HTTP client and one websocket kept open.
struct Direct {
    client: ComfyClient,
    socket: BackendSocket,
    options: RunOptions,
}

impl Direct {
    async fn connect(comfy_url: &str) -> Direct {
        let client = ComfyClient::new(comfy_url).expect("client");
        let socket = BackendSocket::connect(comfy_url, &uuid::Uuid::new_v4().to_string()).expect("socket");
        assert!(socket.wait_connected(Duration::from_secs(5)).await, "websocket did not connect");
        let options = RunOptions {
            preview_method: Some("auto".into()),
            poll_interval: Duration::from_secs(2),
            unreachable_timeout: Duration::from_secs(30),
        };
        Direct { client, socket, options }
    }

    async fn run_once(&self, i: usize) -> Duration {
        let t0 = Instant::now();
        let graph: Map<String, Value> = tiny_graph(colour(i)).as_object().expect("object").clone();
        let prompt_id = uuid::Uuid::new_v4().to_string();
        let outcome =
            run_prompt(&self.client, &self.socket, &graph, &prompt_id, &self.options, |_| {}).await.expect("prompt");
        let images = outcome.images();
        let bytes = self.client.view(&images[0]).await.expect("view");
        let took = t0.elapsed();
        check_pixel(&bytes, i, "direct");
        took
    }
}

/// Runs `n` jobs each way, alternating, and prints the table and ratios:
/// against the in-repo fake (instant nodes), or against the ComfyUI server at
/// `real` (`BENCH_COMFYUI_URL`) when given.
pub async fn run(n: usize, real: Option<String>) {
    let (fake, url) = match real {
        Some(url) => (None, url),
        None => {
            let fake = FakeComfy::start(FakeOptions { cache: false, ..Default::default() }).await;
            fake.set_step_delay(0);
            let url = fake.url();
            (Some(fake), url)
        }
    };
    let direct = Direct::connect(&url).await;
    let served = Served::start(&url).await;
    let (mut d, mut total, mut create, mut first, mut result, mut download, mut nagle, mut nagle_first) = (
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
    );
    for i in 0..WARMUP + n {
        let dt = direct.run_once(3 * i).await;
        tokio::time::sleep(SETTLE).await;
        let s = served.run_once(3 * i + 1, false).await;
        tokio::time::sleep(SETTLE).await;
        let old = served.run_once(3 * i + 2, true).await;
        tokio::time::sleep(SETTLE).await;
        if i < WARMUP {
            continue;
        }
        nagle.push(old.total);
        nagle_first.push(old.first_event);
        d.push(dt);
        total.push(s.total);
        create.push(s.create);
        first.push(s.first_event);
        result.push(s.result);
        download.push(s.total - s.result);
    }
    served.shutdown().await;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let against = if fake.is_some() { "the in-repo fake ComfyUI".to_owned() } else { format!("the ComfyUI at {url}") };
    println!(
        "\n## End to end through the REST API against {against} (N = {n} each, alternating, after {WARMUP} warm-up runs), ms\n"
    );
    println!("Load average at the end: {}\n", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("| path | p50 | p90 | p99 | mean | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |s: &Series, what: &str| {
        format!(
            "| {what} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s.pct(50.0),
            s.pct(90.0),
            s.pct(99.0),
            s.mean(),
            s.pct(100.0)
        )
    };
    println!("{}", row(&d, "direct: POST /prompt, websocket until done, /history, /view"));
    println!("{}", row(&total, "Station: create, events until result, GET media"));
    println!("{}", row(&create, "  Station: POST /api/v1/generations answered"));
    println!("{}", row(&first, "  Station: then first byte of the event stream"));
    println!("{}", row(&result, "  Station: create → result event"));
    println!("{}", row(&download, "  Station: GET the output media"));
    println!("{}", row(&nagle, "Station, Nagle left on (before): create, events until result, GET media"));
    println!("{}", row(&nagle_first, "  Nagle on: first byte of the event stream after the create"));
    println!(
        "\nAdded at p50: {:.2} ms; ratio p50 {:.3}×, p90 {:.3}×, p99 {:.3}× (targets: added p50 ≤ 1.5 ms, p50 ≤ 1.15×, p99 ≤ 1.3×)",
        total.pct(50.0) - d.pct(50.0),
        total.pct(50.0) / d.pct(50.0),
        total.pct(90.0) / d.pct(90.0),
        total.pct(99.0) / d.pct(99.0)
    );
}
