//! Your own LoRAs over the REST API, on SQLite and PostgreSQL: a LoRA trained
//! against the fake ComfyUI, downloaded by its owner only, shared with
//! another account (who may then download it) and unshared, made public
//! through an administrator's approval (written to the audit log), a
//! request refused, and deleted — with refusals naming their field.

mod common;

use std::time::Duration;

use common::serve;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::audit::Actor;
use station_core::loras::{LoraEdit, Visibility};
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

/// Alice's LoRA "red-fox", trained over the API.
async fn train(s: &common::Server) {
    let k = s.kind;
    let a = s.post("/api/v1/datasets", &s.alice_key, json!({"name": "Red Fox"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
    for i in 0..4 {
        let part = reqwest::multipart::Part::bytes(image(i)).file_name("img.png");
        let form = reqwest::multipart::Form::new().part("file", part).text("caption", "a fox");
        let url = s.url("/api/v1/datasets/red-fox/images");
        let r = s.http.post(url).bearer_auth(&s.alice_key).multipart(form).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{k}");
    }
    let t = s.post("/api/v1/trainings", &s.alice_key, json!({"dataset": "red-fox", "settings": {"steps": 5}})).await;
    assert_eq!(t.status, StatusCode::CREATED, "{k}: {}", t.body);
    let id = t.body["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a = s.get(&format!("/api/v1/trainings/{id}"), &s.alice_key).await;
        if a.body["status"] != "running" {
            assert_eq!(a.body["status"], "succeeded", "{k}: {}", a.body);
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{k}: {}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn file_status(s: &common::Server, key: &str) -> StatusCode {
    s.http.get(s.url("/api/v1/loras/red-fox/file")).bearer_auth(key).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_publish_with_approval_and_delete_your_lora() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 1, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
        s.station.register_executor(comfy.clone());
        comfy.start_health_checks(Duration::from_millis(200), s.station.wake.clone()).await;
        let workers = station_core::Workers::start(&s.station);
        train(&s).await;

        let mine = s.get("/api/v1/loras", &s.alice_key).await;
        assert_eq!(mine.status, StatusCode::OK, "{k}: {}", mine.body);
        assert_eq!(mine.body.as_array().unwrap().len(), 1, "{k}: {}", mine.body);
        assert_eq!(mine.body[0]["slug"], "red-fox");
        assert_eq!(mine.body[0]["trigger_words"], json!(["red-fox"]));
        assert_eq!(mine.body[0]["publication"], "private");
        assert_eq!(mine.body[0]["shared_with"], json!([]));
        assert_eq!(s.get("/api/v1/loras", &s.bob_key).await.body, json!([]), "{k}: bob owns none");

        // The owner downloads the file; nobody else does, until it is shared.
        assert_eq!(file_status(&s, &s.alice_key).await, StatusCode::OK, "{k}");
        assert_eq!(file_status(&s, &s.bob_key).await, StatusCode::NOT_FOUND, "{k}");
        let a = s.post("/api/v1/loras/red-fox/share", &s.alice_key, json!({"account": "test:nobody"})).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert_eq!(a.fields(), ["account"], "{k}");
        let a = s.post("/api/v1/loras/red-fox/share", &s.alice_key, json!({"account": "test:alice"})).await;
        assert_eq!(a.fields(), ["account"], "{k}: not with its owner");
        let a = s.post("/api/v1/loras/red-fox/share", &s.alice_key, json!({})).await;
        assert_eq!(a.fields(), ["account"], "{k}: required");
        let a = s.post("/api/v1/loras/red-fox/share", &s.bob_key, json!({"account": "test:bob"})).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}: not bob's to share");
        let a = s.post("/api/v1/loras/red-fox/share", &s.alice_key, json!({"account": "test:bob"})).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!(a.body["shared_with"], json!(["bob"]), "{k}");
        assert_eq!(file_status(&s, &s.bob_key).await, StatusCode::OK, "{k}: shared");
        let a = s.post("/api/v1/loras/red-fox/unshare", &s.alice_key, json!({"account": "test:bob"})).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!(a.body["shared_with"], json!([]), "{k}");
        assert_eq!(file_status(&s, &s.bob_key).await, StatusCode::NOT_FOUND, "{k}: unshared");

        // Publishing waits for an administrator (training.publish_needs_approval).
        let a = s.call(Method::POST, "/api/v1/loras/red-fox/publish", Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{k}: {}", a.body);
        assert_eq!(a.body["publication"], "pending", "{k}");
        assert_eq!(s.station.loras().show("red-fox").await.unwrap().visibility, Visibility::Private, "{k}");
        let forbidden = s.get("/api/v1/admin/lora-publications", &s.alice_key).await;
        assert_eq!(forbidden.status, StatusCode::FORBIDDEN, "{k}");
        let list = s.get("/api/v1/admin/lora-publications", &s.admin_key).await;
        assert_eq!(list.status, StatusCode::OK, "{k}: {}", list.body);
        assert_eq!(list.body.as_array().unwrap().len(), 1, "{k}: {}", list.body);
        assert_eq!(list.body[0]["slug"], "red-fox");
        assert_eq!(list.body[0]["account"], "alice");
        let a = s.call(Method::POST, "/api/v1/admin/lora-publications/red-fox/approve", Some(&s.bob_key), None).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{k}");
        let a = s.call(Method::POST, "/api/v1/admin/lora-publications/red-fox/approve", Some(&s.admin_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}: {}", a.body);
        assert_eq!(s.station.loras().show("red-fox").await.unwrap().visibility, Visibility::Public, "{k}");
        assert_eq!(s.get("/api/v1/loras", &s.alice_key).await.body[0]["publication"], "public", "{k}");
        assert_eq!(s.get("/api/v1/admin/lora-publications", &s.admin_key).await.body, json!([]), "{k}");
        let a = s.call(Method::POST, "/api/v1/admin/lora-publications/red-fox/approve", Some(&s.admin_key), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}: decided already");
        let audit = s.get("/api/v1/admin/audit?action=lora.publish.", &s.admin_key).await;
        let actions: Vec<&str> =
            audit.body["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["lora.publish.approve", "lora.publish.request"], "{k}: {}", audit.body);
        assert_eq!(audit.body["items"][0]["actor"], format!("account:{}", s.admin.id), "{k}");
        assert_eq!(audit.body["items"][0]["summary"], "approved making a LoRA public", "{k}");

        // A second LoRA of alice's: its request refused, then it is deleted.
        let edit = LoraEdit {
            checkpoint: Some("SD1.5".into()),
            filename: Some("blue.safetensors".into()),
            owner: Some(Some(s.alice.id.clone())),
            visibility: Some(Visibility::Private),
            ..Default::default()
        };
        s.station.loras().add("blue", edit, &Actor::operator("test")).await.unwrap();
        let a = s.call(Method::POST, "/api/v1/loras/blue/publish", Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{k}: {}", a.body);
        let a = s.call(Method::POST, "/api/v1/admin/lora-publications/blue/refuse", Some(&s.admin_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}: {}", a.body);
        let mine = s.get("/api/v1/loras", &s.alice_key).await.body;
        let blue = mine.as_array().unwrap().iter().find(|l| l["slug"] == "blue").unwrap().clone();
        assert_eq!(blue["publication"], "refused", "{k}: {blue}");
        assert_eq!(s.station.loras().show("blue").await.unwrap().visibility, Visibility::Private, "{k}");
        let a = s.call(Method::DELETE, "/api/v1/loras/blue", Some(&s.bob_key), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}: not bob's");
        let a = s.call(Method::DELETE, "/api/v1/loras/blue", Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}: {}", a.body);
        let a = s.call(Method::DELETE, "/api/v1/loras/blue", Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}: gone");
        let slugs: Vec<Value> = s
            .get("/api/v1/loras", &s.alice_key)
            .await
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["slug"].clone())
            .collect();
        assert_eq!(slugs, [json!("red-fox")], "{k}");

        workers.shutdown().await;
        comfy.shutdown();
        s.stop().await;
    }
}

/// Without `training.publish_needs_approval`, publishing is immediate (and audited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_approval() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| c.training.publish_needs_approval = false).await;
        let k = s.kind;
        let edit = LoraEdit {
            checkpoint: Some("SD1.5".into()),
            filename: Some("green.safetensors".into()),
            owner: Some(Some(s.alice.id.clone())),
            visibility: Some(Visibility::Private),
            ..Default::default()
        };
        s.station.loras().add("green", edit, &Actor::operator("test")).await.unwrap();
        let a = s.call(Method::POST, "/api/v1/loras/green/publish", Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!(a.body["publication"], "public", "{k}");
        assert_eq!(s.station.loras().show("green").await.unwrap().visibility, Visibility::Public, "{k}");
        let audit = s.get("/api/v1/admin/audit?action=lora.publish", &s.admin_key).await;
        assert_eq!(audit.body["items"].as_array().unwrap().len(), 1, "{k}: {}", audit.body);
        s.stop().await;
    }
}
