//! Auto-captions over the REST API against a fake ComfyUI, on SQLite and
//! PostgreSQL: a caption tool (LoadImage → StationCaption → PreviewAny, a
//! text output) writes the empty captions of a dataset, one paid job per
//! image, keeps the caption someone wrote, overwrites all when asked; a
//! failing caption tool writes nothing and returns the points; without a
//! caption tool the refusal says so.

mod common;

use std::time::Duration;

use common::serve;
use reqwest::StatusCode;
use serde_json::{Value, json};
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_media::image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use station_testkit::testing;

/// A 16×16 image of one colour.
fn image(rgb: [u8; 3]) -> Vec<u8> {
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, Rgb(rgb)));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

const COLOURS: [([u8; 3], &str); 4] =
    [([210, 25, 20], "red"), ([20, 200, 30], "green"), ([20, 30, 210], "blue"), ([230, 220, 20], "yellow")];

/// A caption tool; `fail` puts a failing node before the captioner.
fn install_caption_tool(dir: &std::path::Path, id: &str, fail: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut workflow = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "StationCaption", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
    });
    if fail {
        workflow["4"] = json!({"class_type": "StationFail", "inputs": {"image": ["1", 0], "message": "the captioner is out of memory"}});
        workflow["2"]["inputs"]["image"] = json!(["4", 0]);
    }
    let tool = json!({
        "id": id, "name": "Caption", "category": "caption", "visibility": "hidden", "service": "comfyui",
        "inputs": {"image": {"type": "image", "required": true}},
        "cost": {"per_run": 1},
        "comfyui": {"workflow": workflow, "bindings": {"image": ["1.inputs.image"]}, "outputs": ["3"]}
    });
    std::fs::write(dir.join(format!("{id}.json")), serde_json::to_vec_pretty(&tool).unwrap()).unwrap();
}

async fn add_image(s: &common::Server, slug: &str, bytes: Vec<u8>, caption: &str) -> common::Answer {
    let part = reqwest::multipart::Part::bytes(bytes).file_name("img.png");
    let form = reqwest::multipart::Form::new().part("file", part).text("caption", caption.to_owned());
    let url = s.url(&format!("/api/v1/datasets/{slug}/images"));
    common::Server::answer(s.http.post(url).bearer_auth(&s.alice_key).multipart(form).send().await.unwrap()).await
}

/// The run once its jobs ended, and the points settled.
async fn finished_run(s: &common::Server, slug: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a = s.get(&format!("/api/v1/datasets/{slug}/captions"), &s.alice_key).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let p = s.get("/api/v1/points", &s.alice_key).await;
        if a.body["running"] == false && p.body["held"] == 0 {
            return a.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn captions(s: &common::Server, slug: &str) -> Vec<String> {
    let d = s.get(&format!("/api/v1/datasets/{slug}"), &s.alice_key).await;
    d.body["images"].as_array().unwrap().iter().map(|i| i["caption"].as_str().unwrap().to_owned()).collect()
}

async fn balance(s: &common::Server) -> i64 {
    s.get("/api/v1/points", &s.alice_key).await.body["balance"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caption_tool_writes_the_empty_captions_as_paid_jobs() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| {
            install_caption_tool(&c.tools_dir(), "caption-good", false);
            install_caption_tool(&c.tools_dir(), "caption-broken", true);
            c.training.caption_tool = Some("caption-good".into());
        })
        .await;
        let k = s.kind;
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 2, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
        s.station.register_executor(comfy.clone());
        comfy.start_health_checks(Duration::from_millis(200), s.station.wake.clone()).await;
        let workers = station_core::Workers::start(&s.station);

        let a = s.post("/api/v1/datasets", &s.alice_key, json!({"name": "Red Fox"})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let none = s.get("/api/v1/datasets/red-fox/captions", &s.alice_key).await;
        assert_eq!(none.status, StatusCode::NOT_FOUND, "{k}: never captioned");
        for (i, (rgb, _)) in COLOURS.iter().enumerate() {
            let caption = if i == 3 { "a fox I described myself" } else { "" };
            let a = add_image(&s, "red-fox", image(*rgb), caption).await;
            assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        }
        let before = balance(&s).await;

        // Only the three empty captions are written, one paid job each.
        let run = s.post("/api/v1/datasets/red-fox/captions", &s.alice_key, json!({})).await;
        assert_eq!(run.status, StatusCode::ACCEPTED, "{k}: {}", run.body);
        assert_eq!(run.body["images"], 3, "{k}: {}", run.body);
        assert_eq!(run.body["price"], 3, "{k}: one point per image");
        let again = s.post("/api/v1/datasets/red-fox/captions", &s.alice_key, json!({})).await;
        if again.status == StatusCode::BAD_REQUEST {
            // Still running: a second run is refused in words.
            assert!(again.body["error"]["message"].as_str().unwrap().contains("being written"), "{k}: {}", again.body);
        }
        let done = finished_run(&s, "red-fox").await;
        assert_eq!((done["applied"].as_u64(), done["failed"].as_u64()), (Some(3), Some(0)), "{k}: {done}");
        assert_eq!(done["summary"], "Captions done: 3 written", "{k}");
        let got = captions(&s, "red-fox").await;
        for (i, (_, colour)) in COLOURS.iter().enumerate().take(3) {
            assert_eq!(got[i], format!("red-fox, a photo of a mostly {colour} square, 16x16"), "{k}: {got:?}");
        }
        assert_eq!(got[3], "red-fox, a fox I described myself", "{k}: a written caption is kept");
        assert_eq!(balance(&s).await, before - 3, "{k}: three caption jobs captured");

        // Nothing left to write; with overwrite every caption is written again.
        let empty = s.post("/api/v1/datasets/red-fox/captions", &s.alice_key, json!({})).await;
        assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{k}: {}", empty.body);
        assert_eq!(empty.fields(), ["captions"]);
        assert!(empty.body["error"]["message"].as_str().unwrap().contains("overwrite"), "{k}: {}", empty.body);
        let all = s.post("/api/v1/datasets/red-fox/captions", &s.alice_key, json!({"overwrite": true})).await;
        assert_eq!(all.status, StatusCode::ACCEPTED, "{k}: {}", all.body);
        assert_eq!(all.body["images"], 4, "{k}");
        let done = finished_run(&s, "red-fox").await;
        assert_eq!(done["applied"], 4, "{k}: {done}");
        assert_eq!(captions(&s, "red-fox").await[3], "red-fox, a photo of a mostly yellow square, 16x16", "{k}");
        assert_eq!(balance(&s).await, before - 7, "{k}");

        // Someone else's dataset is not found.
        let theirs = s.post("/api/v1/datasets/red-fox/captions", &s.bob_key, json!({})).await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{k}");
        let theirs = s.get("/api/v1/datasets/red-fox/captions", &s.bob_key).await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{k}");

        workers.shutdown().await;
        comfy.shutdown();
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_caption_tool_writes_nothing_and_returns_the_points() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| {
            install_caption_tool(&c.tools_dir(), "caption-broken", true);
            c.training.caption_tool = Some("caption-broken".into());
        })
        .await;
        let k = s.kind;
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 2, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
        s.station.register_executor(comfy.clone());
        comfy.start_health_checks(Duration::from_millis(200), s.station.wake.clone()).await;
        let workers = station_core::Workers::start(&s.station);

        s.post("/api/v1/datasets", &s.alice_key, json!({"name": "Red Fox"})).await;
        for (rgb, _) in COLOURS.iter().take(2) {
            assert_eq!(add_image(&s, "red-fox", image(*rgb), "").await.status, StatusCode::CREATED, "{k}");
        }
        let before = balance(&s).await;
        let run = s.post("/api/v1/datasets/red-fox/captions", &s.alice_key, json!({})).await;
        assert_eq!(run.status, StatusCode::ACCEPTED, "{k}: {}", run.body);
        let done = finished_run(&s, "red-fox").await;
        assert_eq!((done["applied"].as_u64(), done["failed"].as_u64()), (Some(0), Some(2)), "{k}: {done}");
        let why = done["items"][0]["error"].as_str().unwrap();
        assert!(why.contains("out of memory"), "{k}: the tool's own error: {why}");
        assert_eq!(captions(&s, "red-fox").await, ["red-fox", "red-fox"], "{k}: nothing written");
        assert_eq!(balance(&s).await, before, "{k}: a failed job is not charged");

        workers.shutdown().await;
        comfy.shutdown();
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_caption_tool_the_refusal_says_so() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        s.post("/api/v1/datasets", &s.alice_key, json!({"name": "Red Fox"})).await;
        add_image(&s, "red-fox", image([200, 20, 20]), "").await;
        // No JSON body at all is fine too.
        let url = s.url("/api/v1/datasets/red-fox/captions");
        let a = common::Server::answer(s.http.post(url).bearer_auth(&s.alice_key).send().await.unwrap()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert_eq!(a.fields(), ["captions"]);
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("no caption tool is configured"), "{k}: {msg}");
        s.stop().await;
    }
}
