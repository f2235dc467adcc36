//! LoRA training over the REST API against a fake ComfyUI, on SQLite and
//! PostgreSQL: a dataset from multipart uploads (a duplicate refused), a
//! quote, a training followed on its event stream to the end, the LoRA file
//! for its owner only, and refusals naming their field.

mod common;

use std::time::Duration;

use common::serve;
use reqwest::StatusCode;
use serde_json::{Value, json};
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_media::image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use station_testkit::testing;

fn image(seed: u8) -> Vec<u8> {
    let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(16, 16, |x, y| {
        Rgba([seed.wrapping_mul(50), (x * 10) as u8, (y * 10) as u8, 255])
    }));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn add_image(s: &common::Server, key: &str, slug: &str, bytes: Vec<u8>, caption: &str) -> common::Answer {
    let part = reqwest::multipart::Part::bytes(bytes).file_name("img.png");
    let form = reqwest::multipart::Form::new().part("file", part).text("caption", caption.to_owned());
    let url = s.url(&format!("/api/v1/datasets/{slug}/images"));
    common::Server::answer(s.http.post(url).bearer_auth(key).multipart(form).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_quote_training_events_and_the_lora_file() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 1, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
        s.station.register_executor(comfy.clone());
        comfy.start_health_checks(Duration::from_millis(200), s.station.wake.clone()).await;
        let workers = station_core::Workers::start(&s.station);

        let a = s.post("/api/v1/datasets", &s.alice_key, json!({"name": "Red Fox"})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        assert_eq!(a.body["slug"], "red-fox");
        assert_eq!(a.body["trigger_word"], "red-fox");
        assert_eq!(a.body["status"], "draft");
        let a = s.post("/api/v1/datasets", &s.alice_key, json!({"name": "Red Fox", "colour": 1})).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}");
        assert_eq!(a.fields(), ["colour"]);

        for i in 0..4 {
            let a = add_image(&s, &s.alice_key, "red-fox", image(i), &format!("a fox, picture {i}")).await;
            assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
            assert_eq!(a.body["position"], i as i64 + 1);
            assert_eq!(a.body["caption"], format!("red-fox, a fox, picture {i}"));
        }
        let dup = add_image(&s, &s.alice_key, "red-fox", image(2), "again").await;
        assert_eq!(dup.status, StatusCode::BAD_REQUEST, "{k}: {}", dup.body);
        assert_eq!(dup.fields(), ["image"]);
        assert!(dup.body["error"]["message"].as_str().unwrap().contains("slot 3"), "{k}: {}", dup.body);
        let bob_sees = s.get("/api/v1/datasets/red-fox", &s.bob_key).await;
        assert_eq!(bob_sees.status, StatusCode::NOT_FOUND, "{k}");

        let a = s
            .call(
                reqwest::Method::PUT,
                "/api/v1/datasets/red-fox/images/4",
                Some(&s.alice_key),
                Some(json!({"caption": "a sleeping fox"})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!(a.body["caption"], "red-fox, a sleeping fox");
        let ds = s.get("/api/v1/datasets/red-fox", &s.alice_key).await;
        assert_eq!(ds.body["status"], "ready", "{k}");
        assert_eq!(ds.body["images"].as_array().unwrap().len(), 4);

        let body = json!({"dataset": "red-fox", "settings": {"steps": 30}});
        let q = s.post("/api/v1/trainings/quote", &s.alice_key, body.clone()).await;
        assert_eq!(q.status, StatusCode::OK, "{k}: {}", q.body);
        assert_eq!(q.body["price"], 3, "{k}: 30 steps × 0.1");
        assert_eq!(q.body["explanation"], "30 steps at 0.1 point a step", "{k}");
        assert!(q.body["estimate_seconds"].is_null(), "{k}: priced per step");
        assert_eq!(q.body["settings"]["rank"], 16, "{k}: the SD1.5 default");
        let bad = s
            .post("/api/v1/trainings/quote", &s.alice_key, json!({"dataset": "red-fox", "settings": {"rank": 0}}))
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{k}");
        assert_eq!(bad.fields(), ["rank"]);

        let t = s.post("/api/v1/trainings", &s.alice_key, body).await;
        assert_eq!(t.status, StatusCode::CREATED, "{k}: {}", t.body);
        let id = t.body["id"].as_str().unwrap().to_owned();
        let resp = s
            .http
            .get(s.url(&format!("/api/v1/trainings/{id}/events")))
            .bearer_auth(&s.alice_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{k}");
        let text = tokio::time::timeout(Duration::from_secs(60), resp.text()).await.expect("the stream ends").unwrap();
        assert!(text.contains("event: result"), "{k}: {text}");
        assert!(text.contains("\"of\":30"), "{k}: steps on the stream: {text}");

        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let done = loop {
            let a = s.get(&format!("/api/v1/trainings/{id}"), &s.alice_key).await;
            if a.body["status"] != "running" {
                break a.body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{k}: {}", a.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(done["status"], "succeeded", "{k}: {done}");
        assert_eq!(done["lora"], "red-fox");
        let file = done["lora_file"].as_str().unwrap();
        assert!(file.ends_with("_30_steps_00001_.safetensors"), "{k}: {file}");

        let resp = s.http.get(s.url("/api/v1/loras/red-fox/file")).bearer_auth(&s.alice_key).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{k}");
        assert_eq!(resp.headers()["content-type"], "application/octet-stream");
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(Some(bytes.to_vec()), fake.file("output", "loras", file), "{k}");
        let theirs = s.get("/api/v1/loras/red-fox/file", &s.bob_key).await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{k}");

        let list: Value = s.get("/api/v1/trainings", &s.alice_key).await.body;
        assert_eq!(list.as_array().unwrap().len(), 1, "{k}");
        assert_eq!(s.get("/api/v1/trainings", &s.bob_key).await.body, json!([]), "{k}");
        let a = s.get(&format!("/api/v1/trainings/{id}"), &s.bob_key).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");

        workers.shutdown().await;
        comfy.shutdown();
        s.stop().await;
    }
}

/// A definition priced per second: the quote holds the estimated time and
/// says how it was reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_second_quote_explains_itself() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| {
            let price = station_core::config::TrainingPerSecond {
                points: 2.0,
                default_seconds_per_step: 0.5,
                margin: 1.5,
                runs: 5,
            };
            c.training.per_second.insert("lora-sd15".into(), price);
        })
        .await;
        let k = s.kind;
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 1, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
        s.station.register_executor(comfy.clone());
        comfy.start_health_checks(Duration::from_millis(200), s.station.wake.clone()).await;
        let a = s.post("/api/v1/datasets", &s.alice_key, json!({"name": "Red Fox"})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        for i in 0..4 {
            let a = add_image(&s, &s.alice_key, "red-fox", image(i), "").await;
            assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while s.station.trainable_base_models().await.is_empty() {
            assert!(std::time::Instant::now() < deadline, "{k}: the backend's checkpoint never showed");
            s.station.reload_models().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body = json!({"dataset": "red-fox", "base_model": "SD1.5", "settings": {"steps": 10}});
        let q = s.post("/api/v1/trainings/quote", &s.alice_key, body).await;
        assert_eq!(q.status, StatusCode::OK, "{k}: {}", q.body);
        assert_eq!(q.body["price"], 16, "{k}: 10 steps × 0.5 s × 1.5 = 8 s at 2 points");
        assert_eq!(q.body["estimate_seconds"], 8, "{k}");
        assert_eq!(
            q.body["explanation"],
            "about 8 seconds at 2 points a second (10 steps at 0.5 s a step, the operator's estimate until a run \
             has been measured, plus 50 %); you pay for the time it takes, at most 16 points",
            "{k}"
        );
        comfy.shutdown();
    }
}
