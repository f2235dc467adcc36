//! `GET /metrics` of the real `station serve`: after known work (a job
//! through the REST API, a refused request, a page that does not exist) the
//! Prometheus text names what happened, with bounded labels; the token and
//! `metrics.listen` settings keep it private.

#[allow(dead_code)]
mod common;

use common::{free_port, input_png, station_vars, wait_http};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use station_comfyui_fake::{FakeComfy, FakeOptions};

const BIN: &str = env!("CARGO_BIN_EXE_station");

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn station(dir: &tempfile::TempDir, vars: &[(String, String)], args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(dir.path());
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

fn serve(dir: &tempfile::TempDir, vars: &[(String, String)], port: u16) -> Child {
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    station(dir, vars, &["serve"])
        .env("STATION_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The value of the sample of `name` whose labels include every `labels`
/// pair, if the scrape has one.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            return None;
        }
        labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_jobs_points_requests_and_read_queue_and_backends() {
    init();
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let vars = station_vars(&dir, &fake.url(), None);
    assert!(station(&dir, &vars, &["users", "create", "alice"]).output().unwrap().status.success());
    let key = station(&dir, &vars, &["keys", "create", "--user", "alice", "--name", "m"]).output().unwrap();
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    let port = free_port();
    let mut child = serve(&dir, &vars, port);
    wait_http(port, "/healthz").await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");

    // One upscale through the ComfyUI backend, waited for.
    let png = std::fs::read(input_png(dir.path())).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("tool", "upscale")
        .part("image", reqwest::multipart::Part::bytes(png).file_name("in.png"));
    let created = http.post(url("/api/v1/generations")).bearer_auth(&key).multipart(form).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let job: serde_json::Value = created.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j: serde_json::Value = http
            .get(url(&format!("/api/v1/generations/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "the job never finished: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A refused request and a path that matches nothing.
    assert_eq!(http.get(url("/api/v1/points")).send().await.unwrap().status(), 401);
    assert_eq!(http.get(url("/no/such/page/1234")).send().await.unwrap().status(), 404);

    // Counters are recorded after the answer is sent: scrape until the
    // job's settlement shows (it follows the outcome by a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let r = http.get(url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = r.text().await.unwrap();
        if sample(&text, "station_points_total", &[("kind", "captured")]).is_some() {
            break text;
        }
        assert!(Instant::now() < deadline, "no capture counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let has = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    let upscale = [("tool", "upscale"), ("service", "comfyui")];
    assert_eq!(has("station_jobs_submitted_total", &upscale), Some(1.0), "{text}");
    let succeeded = [("tool", "upscale"), ("service", "comfyui"), ("outcome", "succeeded")];
    assert_eq!(has("station_jobs_finished_total", &succeeded), Some(1.0), "{text}");
    assert_eq!(has("station_job_run_seconds_count", &[("tool", "upscale")]), Some(1.0), "{text}");
    // The upscale's price held, then captured (the starting grant counts
    // where it was given: here, if no command gave it before).
    if let Some(granted) = has("station_points_total", &[("kind", "granted")]) {
        assert_eq!(granted, 100.0, "{text}");
    }
    let held = has("station_points_total", &[("kind", "held")]).expect("a hold is counted");
    let captured = has("station_points_total", &[("kind", "captured")]).unwrap();
    assert!(captured > 0.0 && captured <= held, "{text}");
    // Read at scrape time: nothing queued, the backend up and idle, the pool.
    assert_eq!(has("station_queue_depth", &[("service", "comfyui")]), Some(0.0), "{text}");
    assert_eq!(has("station_queue_oldest_age_seconds", &[("service", "comfyui")]), Some(0.0), "{text}");
    assert_eq!(has("station_backend_up", &[("service", "comfyui"), ("backend", "backend1")]), Some(1.0), "{text}");
    assert_eq!(has("station_backend_in_flight", &[("backend", "backend1")]), Some(0.0), "{text}");
    assert!(has("station_db_connections", &[("state", "idle")]).is_some(), "{text}");
    // Requests by route template and status; no id ever becomes a label.
    let created = [("method", "POST"), ("route", "/api/v1/generations"), ("status", "201")];
    assert_eq!(has("station_http_requests_total", &created), Some(1.0), "{text}");
    let polled = [("method", "GET"), ("route", "/api/v1/generations/{id}"), ("status", "200")];
    assert!(has("station_http_requests_total", &polled).unwrap() >= 1.0, "{text}");
    assert_eq!(has("station_http_requests_total", &[("route", "/api/v1/points"), ("status", "401")]), Some(1.0));
    assert_eq!(has("station_http_requests_total", &[("route", "unmatched"), ("status", "404")]), Some(1.0));
    assert!(!text.contains(&id), "a job id is a label:\n{text}");
    assert!(text.contains("# HELP station_jobs_finished_total"), "{text}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_and_own_address() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut vars = station_vars(&dir, "", None);
    let metrics_port = free_port();
    vars.push(("STATION_METRICS_TOKEN".into(), "s3cret".into()));
    vars.push(("STATION_METRICS_LISTEN".into(), format!("127.0.0.1:{metrics_port}")));
    let port = free_port();
    let mut child = serve(&dir, &vars, port);
    wait_http(port, "/healthz").await;
    let http = reqwest::Client::new();
    // Not on Station's own address once it has its own.
    let main = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(main.status(), 404);
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let refused = wait_http(metrics_port, "/metrics").await;
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("Authorization: Bearer"));
    let wrong = http.get(&metrics).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = http.get(&metrics).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let text = ok.text().await.unwrap();
    assert!(sample(&text, "station_queue_depth", &[("service", "media")]).is_some(), "{text}");
    child.kill().unwrap();
    child.wait().unwrap();
}
