//! The live event stream of a generation run on a (fake) ComfyUI backend,
//! over real HTTP on SQLite and PostgreSQL: preview images arrive as
//! decodable data URLs while it runs, progress climbs to 100 %, and the
//! stream ends with the result, whose image downloads.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{png, serve};
use reqwest::StatusCode;
use serde_json::{Value, json};
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_testkit::testing;

/// A ComfyUI tool whose `StationSteps` node reports `steps` progress steps,
/// each with a preview frame of the input, then doubles the image.
fn install_tool(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let tool = json!({
        "id": "sketch", "name": "Sketch", "category": "image-to-image", "service": "comfyui",
        "inputs": {
            "image": {"type": "image", "required": true, "primary": true},
            "steps": {"type": "integer", "default": 8, "min": 1, "max": 50}
        },
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
                "2": {"class_type": "StationSteps", "inputs": {"image": ["1", 0], "steps": 8, "step_ms": 80, "seed": 0}},
                "3": {"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact", "scale_by": 2.0}},
                "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "sketch"}}
            },
            "bindings": {"image": ["1.inputs.image"], "steps": ["2.inputs.steps"]},
            "outputs": ["4"]
        }
    });
    std::fs::write(dir.join("sketch.json"), serde_json::to_vec_pretty(&tool).unwrap()).unwrap();
}

/// Parses SSE text into `(event, data)` pairs.
fn parse_events(text: &str) -> Vec<(String, Value)> {
    let mut out = vec![];
    for block in text.split("\n\n") {
        let (mut event, mut data) = (String::new(), String::new());
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data += d.trim_start();
            }
        }
        if !event.is_empty() {
            out.push((event, serde_json::from_str(&data).unwrap()));
        }
    }
    out
}

/// Reads an SSE stream until it ends; `first` fires once the first event is in.
async fn read_events(mut resp: reqwest::Response, first: tokio::sync::oneshot::Sender<()>) -> Vec<(String, Value)> {
    let mut first = Some(first);
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            if text.contains("\n\n")
                && let Some(f) = first.take()
            {
                let _ = f.send(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the stream ends");
    parse_events(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_carries_previews_from_comfyui_then_progress_to_100_and_the_result() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| install_tool(&c.tools_dir())).await;
        let k = s.kind;
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 1, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
        comfy.start_health_checks(Duration::from_millis(200), s.station.wake.clone()).await;
        s.station.register_executor(comfy.clone());

        let image = s.upload(&s.alice_key, png(64, 48), "in.png").await.body["ref"].as_str().unwrap().to_string();
        let a =
            s.post("/api/v1/generations", &s.alice_key, json!({"tool": "sketch", "params": {"image": image}})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let id = a.body["id"].as_str().unwrap().to_string();
        // Follow from before a worker runs it, so the whole run is seen.
        let resp = s
            .http
            .get(s.url(&format!("/api/v1/generations/{id}/events")))
            .bearer_auth(&s.alice_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{k}");
        let (first, got_first) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(read_events(resp, first));
        // The queued state is on the stream before any worker can claim the job.
        got_first.await.unwrap();
        let workers = station_core::Workers::start(&s.station);
        let events = reader.await.unwrap();
        workers.shutdown().await;
        comfy.shutdown();
        let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();

        // Previews: JPEG data URLs that decode to (small) images.
        let previews: Vec<&Value> = events.iter().filter(|(e, _)| e == "preview").map(|(_, d)| d).collect();
        assert!(!previews.is_empty(), "{k}: no preview event: {kinds:?}");
        for p in &previews {
            let url = p["data_url"].as_str().unwrap();
            let mime = p["mime"].as_str().unwrap();
            let b64 = url.strip_prefix(&format!("data:{mime};base64,")).unwrap_or_else(|| panic!("{k}: {url:.40}"));
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
            let img = station_media::image::load_from_memory(&bytes).unwrap();
            assert!(
                img.width() >= 1 && img.width() <= 64 && img.height() >= 1,
                "{k}: preview {}x{}",
                img.width(),
                img.height()
            );
        }
        let first_preview = kinds.iter().position(|e| *e == "preview").unwrap();
        let result_at = kinds.iter().position(|e| *e == "result").expect("a result event");
        assert!(first_preview < result_at, "{k}: previews come while it runs: {kinds:?}");

        // Progress climbs, never falls, and reaches 100 % before the result.
        let fractions: Vec<f64> =
            events.iter().filter(|(e, _)| e == "progress").map(|(_, d)| d["fraction"].as_f64().unwrap()).collect();
        assert!(fractions.windows(2).all(|w| w[0] < w[1]), "{k}: {fractions:?}");
        assert!(fractions.iter().any(|f| *f > 0.0 && *f < 1.0), "{k}: intermediate progress: {fractions:?}");
        assert_eq!(fractions.last(), Some(&1.0), "{k}: {fractions:?}");
        let statuses: Vec<&str> =
            events.iter().filter(|(e, _)| e == "status").map(|(_, d)| d["status"].as_str().unwrap()).collect();
        assert_eq!(statuses.first(), Some(&"queued"), "{k}: {statuses:?}");
        assert!(statuses.contains(&"running"), "{k}: {statuses:?}");
        assert_eq!(statuses.last(), Some(&"succeeded"), "{k}: {statuses:?}");
        assert_eq!(kinds.last(), Some(&"result"), "{k}: the stream ends with the result: {kinds:?}");

        // The result image downloads and is the input doubled.
        let out = events.last().unwrap().1["outputs"][0]["url"].as_str().unwrap().to_string();
        let r = s.http.get(s.url(&out)).bearer_auth(&s.alice_key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}");
        let img = station_media::image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (128, 96), "{k}");
        s.stop().await;
    }
}
