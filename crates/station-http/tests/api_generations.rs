//! Generations over real HTTP with real media workers, on SQLite and
//! PostgreSQL: create (JSON and multipart), validation with per-field
//! details, list with filters and paging, get, cancel, rerun, rating, hide,
//! ownership (another user's job is 404), every bad field in one answer
//! (another user's image is "not found"), refused multipart creations that
//! store nothing, and the live event stream.

mod common;

use station_core::Role;
use std::time::Duration;

use common::{png, serve};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use station_testkit::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_run_list_rerun_rate_hide_and_ownership() {
    for db in testing::all().await {
        let s = serve(&db, true, |_| {}).await;
        let k = s.kind;
        let up = s.upload(&s.alice_key, png(64, 32), "in.png").await;
        assert_eq!(up.status, StatusCode::CREATED, "{k}: {}", up.body);
        let image = up.body["ref"].as_str().unwrap().to_string();

        // Create with JSON: 201, Location, queued with the resolved params.
        let a = s
            .post(
                "/api/v1/generations",
                &s.alice_key,
                json!({"tool": "resize", "params": {"image": image, "width": 16}}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let id = a.body["id"].as_str().unwrap().to_string();
        assert_eq!(a.headers["location"], format!("/api/v1/generations/{id}").as_str());
        assert_eq!(a.body["tool"], "resize");
        assert_eq!(a.body["params"]["fit"], "contain", "{k}: defaults resolved: {}", a.body);
        let done = s.wait(&s.alice_key, &id).await;
        assert_eq!(done["status"], "succeeded", "{k}: {done}");
        assert_eq!(done["progress"], 1.0);
        let out = &done["outputs"][0];
        assert_eq!(
            (out["media"]["width"].as_i64(), out["media"]["height"].as_i64()),
            (Some(16), Some(8)),
            "{k}: {done}"
        );
        assert!(out["ref"].as_str().unwrap().starts_with("media:"));

        // The result downloads as a PNG for its owner; bob gets 404.
        let url = out["url"].as_str().unwrap();
        let r = s.http.get(s.url(url)).bearer_auth(&s.alice_key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}");
        assert_eq!(r.headers()["content-type"], "image/png");
        let bytes = r.bytes().await.unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert_eq!(s.get(url, &s.bob_key).await.status, StatusCode::NOT_FOUND, "{k}");

        // The points went: starting grant 100, resize costs 1.
        let p = s.get("/api/v1/points", &s.alice_key).await;
        assert_eq!((p.body["balance"].as_i64(), p.body["held"].as_i64()), (Some(99), Some(0)), "{k}: {}", p.body);

        // Ownership: bob cannot see, cancel, rerun, rate, hide or follow alice's job.
        for (m, path) in [
            (Method::GET, format!("/api/v1/generations/{id}")),
            (Method::POST, format!("/api/v1/generations/{id}/cancel")),
            (Method::POST, format!("/api/v1/generations/{id}/rerun")),
            (Method::DELETE, format!("/api/v1/generations/{id}")),
            (Method::GET, format!("/api/v1/generations/{id}/events")),
        ] {
            let a = s.call(m.clone(), &path, Some(&s.bob_key), None).await;
            assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"), "{k}: bob {m} {path}");
        }
        let a = s.post(&format!("/api/v1/generations/{id}/rating"), &s.bob_key, json!({"stars": 5})).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");
        assert_eq!(s.get("/api/v1/generations", &s.bob_key).await.body["items"], json!([]), "{k}");
        // Bob cannot use alice's upload as an input either.
        let a = s
            .post("/api/v1/generations", &s.bob_key, json!({"tool": "resize", "params": {"image": image, "width": 8}}))
            .await;
        assert_eq!((a.status, a.fields()), (StatusCode::BAD_REQUEST, vec!["image".to_string()]), "{k}: {}", a.body);

        // Rerun: a new generation with the same parameters.
        let a = s.call(Method::POST, &format!("/api/v1/generations/{id}/rerun"), Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let rerun = a.body["id"].as_str().unwrap().to_string();
        assert_ne!(rerun, id);
        assert_eq!(a.body["params"]["width"], 16);
        assert_eq!(s.wait(&s.alice_key, &rerun).await["status"], "succeeded", "{k}");
        // Rerun with a change.
        let a = s.post(&format!("/api/v1/generations/{id}/rerun"), &s.alice_key, json!({"params": {"width": 4}})).await;
        assert_eq!((a.status, &a.body["params"]["width"]), (StatusCode::CREATED, &json!(4)), "{k}: {}", a.body);
        let third = a.body["id"].as_str().unwrap().to_string();
        let third_done = s.wait(&s.alice_key, &third).await;
        assert_eq!(third_done["outputs"].as_array().unwrap().len(), 1, "{k}");

        // Rating: 1–5 only.
        let a = s.post(&format!("/api/v1/generations/{id}/rating"), &s.alice_key, json!({"stars": 4})).await;
        assert_eq!((a.status, &a.body["rating"]), (StatusCode::OK, &json!(4)), "{k}: {}", a.body);
        for bad in [json!({"stars": 0}), json!({"stars": 6}), json!({}), json!({"stars": 3, "x": 1})] {
            let a = s.post(&format!("/api/v1/generations/{id}/rating"), &s.alice_key, bad).await;
            assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_input"), "{k}: {}", a.body);
        }

        // List, newest first, paged with `before`/`next`, filtered.
        let a = s.get("/api/v1/generations?limit=2", &s.alice_key).await;
        let ids: Vec<_> = a.body["items"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [third.as_str(), rerun.as_str()], "{k}: {}", a.body);
        let next = a.body["next"].as_str().unwrap();
        let a = s.get(&format!("/api/v1/generations?limit=2&before={next}"), &s.alice_key).await;
        let ids: Vec<_> = a.body["items"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [id.as_str()], "{k}: {}", a.body);
        assert!(a.body["next"].is_null(), "{k}: last page: {}", a.body);
        assert_eq!(a.body["items"][0]["rating"], 4);
        let a = s.get("/api/v1/generations?status=failed", &s.alice_key).await;
        assert_eq!(a.body["items"], json!([]), "{k}");
        let a = s.get("/api/v1/generations?tool=resize&status=succeeded", &s.alice_key).await;
        assert_eq!(a.body["items"].as_array().unwrap().len(), 3, "{k}");
        // Search in the parameters (case-insensitive, wildcards are plain text) and by time.
        let far = chrono_free_future();
        for (q, n) in [("q=CONTAIN", 3), ("q=zzz", 0), ("q=%25", 0), ("q=_", 0), ("q=%20", 3), ("since=0", 3)] {
            let a = s.get(&format!("/api/v1/generations?{q}"), &s.alice_key).await;
            assert_eq!(a.body["items"].as_array().map(Vec::len), Some(n), "{k}: {q}: {}", a.body);
        }
        let a = s.get(&format!("/api/v1/generations?since={far}&q=contain"), &s.alice_key).await;
        assert_eq!(a.body["items"], json!([]), "{k}");
        for (q, field) in [("status=done", "status"), ("limit=0", "limit"), ("limit=201", "limit")] {
            let a = s.get(&format!("/api/v1/generations?{q}"), &s.alice_key).await;
            assert_eq!((a.status, a.fields()), (StatusCode::BAD_REQUEST, vec![field.to_string()]), "{k}: {q}");
        }
        let a = s.get("/api/v1/generations?limit=abc", &s.alice_key).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}");

        // Hide: gone from the list, still readable by id.
        let a = s.call(Method::DELETE, &format!("/api/v1/generations/{rerun}"), Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}: {}", a.body);
        let a = s.get("/api/v1/generations", &s.alice_key).await;
        assert_eq!(a.body["items"].as_array().unwrap().len(), 2, "{k}");
        assert_eq!(
            s.get("/api/v1/generations?include_hidden=true", &s.alice_key).await.body["items"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let a = s.get(&format!("/api/v1/generations/{rerun}"), &s.alice_key).await;
        assert_eq!((a.status, &a.body["hidden"]), (StatusCode::OK, &json!(true)), "{k}");

        // Cancel a finished job: 409.
        let a = s.call(Method::POST, &format!("/api/v1/generations/{id}/cancel"), Some(&s.alice_key), None).await;
        assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "already_finished"), "{k}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_names_every_field_and_refusals_have_codes() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| c.points.confirm_above = 2).await;
        let k = s.kind;
        for (body, fields) in [
            (json!({}), vec!["tool"]),
            (json!({"tool": ""}), vec!["tool"]),
            (json!({"tool": "resize", "colour": 1}), vec!["colour"]),
            (json!({"tool": "resize", "params": []}), vec!["params"]),
            (
                json!({"tool": "resize", "params": {"image": "media:0123", "width": 0, "fit": "squash", "zoom": 2}}),
                vec!["zoom", "width", "fit", "image"],
            ),
            (json!({"tool": "resize", "confirmed": "yes"}), vec!["confirmed"]),
            (json!([1]), vec!["(body)"]),
        ] {
            let a = s.post("/api/v1/generations", &s.alice_key, body.clone()).await;
            assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_input"), "{k}: {body}: {}", a.body);
            let mut got = a.fields();
            let mut want: Vec<String> = fields.iter().map(std::string::ToString::to_string).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{k}: {body}: {}", a.body);
            assert!(a.body["error"]["message"].as_str().unwrap().len() > 10);
        }
        // A tool that does not exist is not bad input but a missing thing: 404 naming `tool`.
        let a = s.post("/api/v1/generations", &s.alice_key, json!({"tool": "nope"})).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "unknown_tool"), "{k}: {}", a.body);
        assert_eq!(a.fields(), vec!["tool".to_string()], "{k}: {}", a.body);
        // Not JSON at all.
        let r = s
            .http
            .post(s.url("/api/v1/generations"))
            .bearer_auth(&s.alice_key)
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
        let a = common::Server::answer(r).await;
        assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_json"), "{k}");

        // No credentials: 401 with a challenge; a wrong key: 401.
        let a = s.call(Method::POST, "/api/v1/generations", None, Some(json!({"tool": "resize"}))).await;
        assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{k}");
        assert!(a.headers.contains_key("www-authenticate"));
        let a = s.call(Method::GET, "/api/v1/generations", Some("st_wrong"), None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{k}");

        let up = s.upload(&s.alice_key, png(8, 8), "a.png").await;
        let image = up.body["ref"].as_str().unwrap().to_string();
        let params = json!({"image": image, "width": 4});
        // A quote writes nothing and reports the price; bad parameters are named.
        let q = s.post("/api/v1/points/quote", &s.alice_key, json!({"tool": "resize", "params": params})).await;
        assert_eq!(q.status, StatusCode::OK, "{k}: {}", q.body);
        assert_eq!(q.body["price"], 1);
        assert_eq!(q.body["needs_confirmation"], false);
        let q = s.post("/api/v1/points/quote", &s.alice_key, json!({"tool": "resize", "params": {"width": "x"}})).await;
        assert_eq!(q.status, StatusCode::BAD_REQUEST, "{k}: {}", q.body);

        // Suspended: 403.
        s.station.set_account_suspended(&s.bob.id, true, &station_core::audit::Actor::operator("test")).await.unwrap();
        let a = s.post("/api/v1/generations", &s.bob_key, json!({"tool": "resize"})).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "suspended"), "{k}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_points_and_quota_refusals() {
    for db in testing::all().await {
        // Price 3 (multiplier) above a threshold of 2; at most 2 queued jobs; no workers so jobs stay queued.
        let s = serve(&db, false, |c| {
            c.points.multiplier = 3.0;
            c.points.confirm_above = 2;
            c.limits.max_queued = 2;
        })
        .await;
        let k = s.kind;
        let image = s.upload(&s.alice_key, png(8, 8), "a.png").await.body["ref"].as_str().unwrap().to_string();
        let body = json!({"tool": "resize", "params": {"image": image, "width": 4}});
        let a = s.post("/api/v1/generations", &s.alice_key, body.clone()).await;
        assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "confirmation_required"), "{k}: {}", a.body);
        assert_eq!(a.body["error"]["details"], json!({"price": 3, "threshold": 2}));
        let mut confirmed = body.clone();
        confirmed["confirmed"] = json!(true);
        let first = s.post("/api/v1/generations", &s.alice_key, confirmed.clone()).await;
        assert_eq!(first.status, StatusCode::CREATED, "{k}: {}", first.body);
        assert_eq!(first.body["queue_position"], 0, "{k}: {}", first.body);
        assert_eq!(first.body["status_text"], "queued, starting soon", "{k}: {}", first.body);
        assert_eq!(first.body["backend_ahead"], Value::Null, "{k}: only while waiting on a backend");
        let second = s.post("/api/v1/generations", &s.alice_key, confirmed.clone()).await;
        assert_eq!(second.body["queue_position"], 1, "{k}: {}", second.body);
        assert_eq!(second.body["status_text"], "queued, 1 ahead", "{k}: {}", second.body);
        let a = s.post("/api/v1/generations", &s.alice_key, confirmed.clone()).await;
        assert_eq!((a.status, a.code()), (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"), "{k}: {}", a.body);

        // Cancel a queued job: cancelled at once, points released.
        let id = first.body["id"].as_str().unwrap();
        let a = s.call(Method::POST, &format!("/api/v1/generations/{id}/cancel"), Some(&s.alice_key), None).await;
        assert_eq!((a.status, &a.body["status"]), (StatusCode::OK, &json!("cancelled")), "{k}: {}", a.body);
        assert_eq!(a.body["error"]["code"], "cancelled");
        let p = s.get("/api/v1/points", &s.alice_key).await;
        assert_eq!((p.body["balance"].as_i64(), p.body["held"].as_i64()), (Some(100), Some(3)), "{k}: {}", p.body);

        // Not enough points: 402 with what is needed.
        s.station.set_account_role(&s.bob.id, Role::User, &station_core::audit::Actor::operator("test")).await.unwrap();
        let bob_image = s.upload(&s.bob_key, png(8, 8), "b.png").await.body["ref"].as_str().unwrap().to_string();
        s.station
            .adjust_points(&s.bob, -99, "test", &station_core::audit::Actor::operator("test"), None)
            .await
            .unwrap();
        let a = s
            .post(
                "/api/v1/generations",
                &s.bob_key,
                json!({"tool": "resize", "confirmed": true, "params": {"image": bob_image, "width": 4}}),
            )
            .await;
        assert_eq!((a.status, a.code()), (StatusCode::PAYMENT_REQUIRED, "insufficient_points"), "{k}: {}", a.body);
        assert_eq!(a.body["error"]["details"]["needed"], 3);

        // Points history pages by `before`.
        let h = s.get("/api/v1/points/history?limit=2", &s.alice_key).await;
        assert_eq!(h.status, StatusCode::OK, "{k}: {}", h.body);
        let items = h.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{k}: {}", h.body);
        assert_eq!(items[0]["kind"], "release", "{k}: newest first: {}", h.body);
        let next = h.body["next"].as_str().unwrap();
        let h2 = s.get(&format!("/api/v1/points/history?limit=50&before={next}"), &s.alice_key).await;
        let older = h2.body["items"].as_array().unwrap();
        assert!(older.iter().all(|e| e["seq"].as_i64() < items[1]["seq"].as_i64()), "{k}");
        assert!(older.iter().any(|e| e["kind"] == "grant"), "{k}: {}", h2.body);
        assert!(h2.body["next"].is_null());
        let bad = s.get("/api/v1/points/history?before=abc", &s.alice_key).await;
        assert_eq!(bad.fields(), vec!["before".to_string()], "{k}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_creation_uploads_images_in_the_same_request() {
    for db in testing::all().await {
        let s = serve(&db, true, |_| {}).await;
        let k = s.kind;
        let form = reqwest::multipart::Form::new()
            .text("tool", "resize")
            .text("params", r#"{"fit": "fill"}"#)
            .text("width", "10")
            .text("height", "6")
            .part("image", reqwest::multipart::Part::bytes(png(40, 40)).file_name("x.png"));
        let r =
            s.http.post(s.url("/api/v1/generations")).bearer_auth(&s.alice_key).multipart(form).send().await.unwrap();
        let a = common::Server::answer(r).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        assert!(a.body["params"]["image"].as_str().unwrap().starts_with("media:"), "{k}: {}", a.body);
        let done = s.wait(&s.alice_key, a.body["id"].as_str().unwrap()).await;
        assert_eq!(done["outputs"][0]["media"]["width"], 10, "{k}: {done}");
        assert_eq!(done["outputs"][0]["media"]["height"], 6, "{k}: {done}");

        // A file for a non-image input, and a file that is not an image.
        let form = reqwest::multipart::Form::new()
            .text("tool", "resize")
            .part("width", reqwest::multipart::Part::bytes(png(4, 4)).file_name("w.png"));
        let r =
            s.http.post(s.url("/api/v1/generations")).bearer_auth(&s.alice_key).multipart(form).send().await.unwrap();
        let a = common::Server::answer(r).await;
        // Both problems at once: the file is in the wrong part and the image is missing.
        assert_eq!(
            (a.status, a.fields()),
            (StatusCode::BAD_REQUEST, vec!["width".to_string(), "image".to_string()]),
            "{k}: {}",
            a.body
        );
        let form = reqwest::multipart::Form::new()
            .text("tool", "resize")
            .text("width", "4")
            .part("image", reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("x.png"));
        let r =
            s.http.post(s.url("/api/v1/generations")).bearer_auth(&s.alice_key).multipart(form).send().await.unwrap();
        let a = common::Server::answer(r).await;
        assert_eq!((a.status, a.code()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media"), "{k}: {}", a.body);
        assert_eq!(a.fields(), vec!["image".to_string()]);
        s.stop().await;
    }
}

/// Reads an SSE stream into `(event, data)` pairs until it ends.
async fn read_events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = tokio::time::timeout(Duration::from_secs(30), resp.text()).await.expect("the stream ends").unwrap();
    let mut out = vec![];
    for block in text.split("\n\n") {
        let mut event = String::new();
        let mut data = String::new();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_follows_a_generation_to_its_result() {
    for db in testing::all().await {
        // No workers yet: the stream starts while the job is queued.
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let image = s.upload(&s.alice_key, png(64, 64), "a.png").await.body["ref"].as_str().unwrap().to_string();
        let a = s
            .post(
                "/api/v1/generations",
                &s.alice_key,
                json!({"tool": "resize", "params": {"image": image, "width": 32}}),
            )
            .await;
        let id = a.body["id"].as_str().unwrap().to_string();
        let resp = s
            .http
            .get(s.url(&format!("/api/v1/generations/{id}/events")))
            .bearer_auth(&s.alice_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{k}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let reader = tokio::spawn(read_events(resp));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let workers = station_core::Workers::start(&s.station);
        let events = reader.await.unwrap();
        workers.shutdown().await;
        let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(events[0].0, "status", "{k}: {kinds:?}");
        assert_eq!(events[0].1["status"], "queued", "{k}: {events:?}");
        assert_eq!(events[0].1["queue_position"], 0);
        let last_status = events.iter().rev().find(|(e, _)| e == "status").unwrap();
        assert_eq!(last_status.1["status"], "succeeded", "{k}: {events:?}");
        let top = events
            .iter()
            .filter(|(e, _)| e == "progress")
            .map(|(_, d)| d["fraction"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert_eq!(top, 1.0, "{k}: progress reaches 100 %: {events:?}");
        let (last, data) = events.last().unwrap();
        assert_eq!(last, "result", "{k}: {kinds:?}");
        let out = data["outputs"][0]["url"].as_str().unwrap();
        assert_eq!(s.http.get(s.url(out)).bearer_auth(&s.alice_key).send().await.unwrap().status(), StatusCode::OK);

        // A finished job's stream answers at once with its end state.
        let resp = s
            .http
            .get(s.url(&format!("/api/v1/generations/{id}/events")))
            .bearer_auth(&s.alice_key)
            .send()
            .await
            .unwrap();
        let events = read_events(resp).await;
        let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(kinds, ["status", "result"], "{k}: {events:?}");
        s.stop().await;
    }
}

/// Sends a multipart creation as `key`.
async fn create_multipart(s: &common::Server, key: &str, form: reqwest::multipart::Form) -> common::Answer {
    let r = s.http.post(s.url("/api/v1/generations")).bearer_auth(key).multipart(form).send().await.unwrap();
    common::Server::answer(r).await
}

/// An account's media rows (read from the database) and the files in the media folder.
async fn stored(s: &common::Server, account: &str) -> (i64, usize) {
    fn walk(dir: &std::path::Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
    }
    (s.store.count_account_media(account).await.unwrap(), walk(&s.station.config.media_dir()))
}

fn image_part(bytes: Vec<u8>) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes).file_name("in.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_multipart_creations_store_no_uploads() {
    for db in testing::all().await {
        // resize costs 1 × 3 = 3, above a threshold of 2; one queued job at most; no workers.
        let s = serve(&db, false, |c| {
            c.points.multiplier = 3.0;
            c.points.confirm_above = 2;
            c.limits.max_queued = 1;
        })
        .await;
        let k = s.kind;
        let form = |extra: &[(&str, &str)]| {
            let mut f = reqwest::multipart::Form::new().part("image", image_part(png(24, 16)));
            for (name, value) in extra {
                f = f.text(name.to_string(), value.to_string());
            }
            f
        };
        let before = stored(&s, &s.alice.id).await;
        assert_eq!(before.0, 0, "{k}");
        type Case<'a> = (&'a str, reqwest::multipart::Form, StatusCode, &'a str, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "bad parameters",
                form(&[("tool", "resize"), ("width", "0"), ("fit", "squash"), ("confirmed", "true")]),
                StatusCode::BAD_REQUEST,
                "invalid_input",
                vec!["width", "fit"],
            ),
            (
                "a file for a number input and a bad parameter",
                form(&[("tool", "resize"), ("fit", "squash"), ("confirmed", "true")])
                    .part("width", image_part(png(4, 4))),
                StatusCode::BAD_REQUEST,
                "invalid_input",
                vec!["width", "fit"],
            ),
            (
                "a file that is no image, and a bad parameter",
                reqwest::multipart::Form::new()
                    .text("tool", "resize")
                    .text("fit", "squash")
                    .text("width", "4")
                    .part("image", image_part(b"not an image".to_vec())),
                StatusCode::BAD_REQUEST,
                "invalid_input",
                vec!["image", "fit"],
            ),
            ("unknown tool", form(&[("tool", "nope")]), StatusCode::NOT_FOUND, "unknown_tool", vec!["tool"]),
            ("no tool", form(&[]), StatusCode::BAD_REQUEST, "invalid_input", vec!["tool"]),
            (
                "price above the threshold, unconfirmed",
                form(&[("tool", "resize"), ("width", "8")]),
                StatusCode::CONFLICT,
                "confirmation_required",
                vec![],
            ),
        ];
        for (what, f, status, code, fields) in cases {
            let a = create_multipart(&s, &s.alice_key, f).await;
            assert_eq!((a.status, a.code()), (status, code), "{k}: {what}: {}", a.body);
            let mut got = a.fields();
            got.sort();
            let mut want: Vec<String> = fields.iter().map(std::string::ToString::to_string).collect();
            want.sort();
            assert_eq!(got, want, "{k}: {what}: {}", a.body);
            assert_eq!(stored(&s, &s.alice.id).await, before, "{k}: {what}: nothing stored");
        }

        // At the queued-jobs quota: 429, and the upload is not kept.
        let a = create_multipart(&s, &s.alice_key, form(&[("tool", "resize"), ("width", "8"), ("confirmed", "true")]))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let after_one = stored(&s, &s.alice.id).await;
        assert_eq!(after_one.0, before.0 + 1, "{k}: an accepted creation keeps its upload");
        let a = create_multipart(&s, &s.alice_key, form(&[("tool", "resize"), ("width", "8"), ("confirmed", "true")]))
            .await;
        assert_eq!((a.status, a.code()), (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"), "{k}: {}", a.body);
        assert_eq!(stored(&s, &s.alice.id).await, after_one, "{k}: quota: nothing stored");

        // Not enough points: 402, nothing stored.
        s.station
            .adjust_points(&s.bob, -99, "test", &station_core::audit::Actor::operator("test"), None)
            .await
            .unwrap();
        let bob_before = stored(&s, &s.bob.id).await;
        let a =
            create_multipart(&s, &s.bob_key, form(&[("tool", "resize"), ("width", "8"), ("confirmed", "true")])).await;
        assert_eq!((a.status, a.code()), (StatusCode::PAYMENT_REQUIRED, "insufficient_points"), "{k}: {}", a.body);
        assert_eq!(stored(&s, &s.bob.id).await, bob_before, "{k}: points: nothing stored");

        // Suspended: 403, nothing stored.
        let carol = s.station.account("test", "carol", "carol").await.unwrap();
        let (_, carol_key) = s.station.create_api_key(&carol, "test", None).await.unwrap();
        s.station.set_account_suspended(&carol.id, true, &station_core::audit::Actor::operator("test")).await.unwrap();
        let a = create_multipart(&s, &carol_key, form(&[("tool", "resize"), ("width", "8")])).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "suspended"), "{k}: {}", a.body);
        assert_eq!(stored(&s, &carol.id).await.0, 0, "{k}: suspended: nothing stored");
        assert_eq!(stored(&s, &s.bob.id).await.1, bob_before.1, "{k}: suspended: no file");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_at_once_and_other_peoples_images_are_not_found() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let bobs = s.upload(&s.bob_key, png(8, 8), "b.png").await.body["ref"].as_str().unwrap().to_string();
        let missing = "media:00000000000000000000000000000000";
        let reason_for = |a: &common::Answer, field: &str| -> String {
            a.body["error"]["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["field"] == field)
                .unwrap_or_else(|| panic!("no {field} in {}", a.body))["reason"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let mut reasons = vec![];
        for image in [bobs.as_str(), missing] {
            // JSON: the image, two bad values and an unknown name in one answer.
            let a = s
                .post(
                    "/api/v1/generations",
                    &s.alice_key,
                    json!({"tool": "resize", "params": {"image": image, "width": -1, "fit": "squash", "zoom": 2}}),
                )
                .await;
            assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_input"), "{k}: {}", a.body);
            let mut fields = a.fields();
            fields.sort();
            assert_eq!(fields, ["fit", "image", "width", "zoom"], "{k}: {}", a.body);
            let reason = reason_for(&a, "image");
            assert!(reason.contains("not found") && reason.contains(image), "{k}: {reason}");
            assert!(!a.body.to_string().contains(&s.bob.id), "{k}: the owner is not revealed: {}", a.body);
            reasons.push(reason.replace(image, "X"));

            // Multipart with the reference in `params`: the same fields.
            let f = reqwest::multipart::Form::new()
                .text("tool", "resize")
                .text("params", json!({"image": image, "fit": "squash"}).to_string())
                .text("width", "0");
            let a = create_multipart(&s, &s.alice_key, f).await;
            assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_input"), "{k}: {}", a.body);
            let mut fields = a.fields();
            fields.sort();
            assert_eq!(fields, ["fit", "image", "width"], "{k}: {}", a.body);
        }
        // Someone else's image reads exactly like one that does not exist.
        assert_eq!(reasons[0], reasons[1], "{k}");

        // Only the image wrong: still named, still 400.
        let a = s
            .post("/api/v1/generations", &s.alice_key, json!({"tool": "resize", "params": {"image": bobs, "width": 4}}))
            .await;
        assert_eq!((a.status, a.fields()), (StatusCode::BAD_REQUEST, vec!["image".to_string()]), "{k}: {}", a.body);
        // Bob may use his own.
        let a = s
            .post("/api/v1/generations", &s.bob_key, json!({"tool": "resize", "params": {"image": bobs, "width": 4}}))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        s.stop().await;
    }
}

/// Sends `body` (JSON) or `form` (multipart) to `path` as `key` with an
/// `Idempotency-Key` header.
async fn keyed(
    s: &common::Server,
    path: &str,
    key: &str,
    idem: &str,
    body: Option<Value>,
    form: Option<reqwest::multipart::Form>,
) -> common::Answer {
    let mut r = s.http.post(s.url(path)).bearer_auth(key).header("Idempotency-Key", idem);
    if let Some(b) = body {
        r = r.json(&b);
    }
    if let Some(f) = form {
        r = r.multipart(f);
    }
    common::Server::answer(r.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_create_with_the_same_idempotency_key_queues_and_charges_once() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let image = s.upload(&s.alice_key, png(8, 8), "a.png").await.body["ref"].as_str().unwrap().to_string();
        let body = json!({"tool": "resize", "params": {"image": image, "width": 4}});
        let before = available(&s).await;

        // JSON: the retry gets the first generation; one job, one charge.
        let first = keyed(&s, "/api/v1/generations", &s.alice_key, "order-1", Some(body.clone()), None).await;
        assert_eq!(first.status, StatusCode::CREATED, "{k}: {}", first.body);
        let again = keyed(&s, "/api/v1/generations", &s.alice_key, "order-1", Some(body.clone()), None).await;
        assert_eq!((again.status, &again.body["id"]), (StatusCode::CREATED, &first.body["id"]), "{k}: {}", again.body);
        assert_eq!(
            again.headers.get("location").unwrap(),
            &format!("/api/v1/generations/{}", first.body["id"].as_str().unwrap()),
            "{k}"
        );
        assert_eq!(available(&s).await, before - 1, "{k}: charged once");
        let list = s.get("/api/v1/generations", &s.alice_key).await;
        assert_eq!(list.body["items"].as_array().unwrap().len(), 1, "{k}: {}", list.body);

        // Keys belong to their account: bob's "order-1" is his own request.
        let bob_image = s.upload(&s.bob_key, png(8, 8), "b.png").await.body["ref"].as_str().unwrap().to_string();
        let bobs = keyed(
            &s,
            "/api/v1/generations",
            &s.bob_key,
            "order-1",
            Some(json!({"tool": "resize", "params": {"image": bob_image, "width": 4}})),
            None,
        )
        .await;
        assert_eq!(bobs.status, StatusCode::CREATED, "{k}: {}", bobs.body);
        assert_ne!(bobs.body["id"], first.body["id"], "{k}");

        // Multipart: a repeat is answered before its upload is read or stored.
        let form = || {
            reqwest::multipart::Form::new()
                .text("tool", "resize")
                .text("width", "4")
                .part("image", image_part(png(24, 16)))
        };
        let m1 = keyed(&s, "/api/v1/generations", &s.alice_key, "upload-1", None, Some(form())).await;
        assert_eq!(m1.status, StatusCode::CREATED, "{k}: {}", m1.body);
        let media = stored(&s, &s.alice.id).await;
        let m2 = keyed(&s, "/api/v1/generations", &s.alice_key, "upload-1", None, Some(form())).await;
        assert_eq!((m2.status, &m2.body["id"]), (StatusCode::CREATED, &m1.body["id"]), "{k}: {}", m2.body);
        assert_eq!(stored(&s, &s.alice.id).await, media, "{k}: the repeat stored nothing");

        // Rerun: the same.
        let path = format!("/api/v1/generations/{}/rerun", first.body["id"].as_str().unwrap());
        let r1 = keyed(&s, &path, &s.alice_key, "again-1", None, None).await;
        let r2 = keyed(&s, &path, &s.alice_key, "again-1", None, None).await;
        assert_eq!(r1.status, StatusCode::CREATED, "{k}: {}", r1.body);
        assert_eq!(r2.body["id"], r1.body["id"], "{k}");
        assert_eq!(available(&s).await, before - 3, "{k}: create, upload create and one rerun");

        // A key that is not one: named in the error, nothing queued.
        for bad in ["", "two words", &"x".repeat(201)] {
            let a = keyed(&s, "/api/v1/generations", &s.alice_key, bad, Some(body.clone()), None).await;
            assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_input"), "{k} {bad:?}: {}", a.body);
            assert_eq!(a.fields(), vec!["Idempotency-Key".to_string()], "{k}");
        }
        assert_eq!(available(&s).await, before - 3, "{k}");
        s.stop().await;
    }
}

/// Alice's points available now.
async fn available(s: &common::Server) -> i64 {
    s.get("/api/v1/points", &s.alice_key).await.body["available"].as_i64().unwrap()
}

/// Issue 17, item 9: problems that involve several fields, or the native
/// operation's own rules, are refused at submit with every field named —
/// and no generation is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_field_problems_are_refused_before_queuing() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| c.media.max_pixels = 10_000).await;
        let k = s.kind;
        let up = s.upload(&s.alice_key, png(80, 80), "a.png").await;
        let image = up.body["ref"].as_str().unwrap().to_string();
        let count = |a: common::Answer| a.body["items"].as_array().map_or(0, Vec::len);
        let before = count(s.get("/api/v1/generations", &s.alice_key).await);
        for (body, fields) in [
            (json!({"tool": "resize", "params": {"image": image}}), vec!["width"]),
            (json!({"tool": "resize", "params": {"image": image, "scale": 0.5, "width": 4}}), vec!["scale"]),
            (json!({"tool": "resize", "params": {"image": image, "scale": 2}}), vec!["scale"]),
            (
                json!({"tool": "crop", "params": {"image": image, "width": 4, "height": 4, "anchor": "top"}}),
                vec!["anchor"],
            ),
            (json!({"tool": "crop", "params": {"image": image, "anchor": "top"}}), vec!["width", "anchor"]),
            (json!({"tool": "watermark", "params": {"image": image, "text": "x", "color": "red"}}), vec!["color"]),
            (json!({"tool": "watermark", "params": {"image": image, "logo": "acme"}}), vec!["logo"]),
        ] {
            let a = s.post("/api/v1/generations", &s.alice_key, body.clone()).await;
            assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_input"), "{k}: {body}: {}", a.body);
            assert_eq!(a.fields(), fields, "{k}: {body}: {}", a.body);
        }
        assert_eq!(count(s.get("/api/v1/generations", &s.alice_key).await), before, "{k}: nothing queued");
        s.stop().await;
    }
}

/// A time (Unix ms) well after any job of a test.
fn chrono_free_future() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    now + 86_400_000
}

/// Issue 22, item 8: a selection of one's generations downloads as one ZIP
/// (streamed): each image as TOOL-SHORTID-N.EXT in the order asked, and
/// metadata.json describing each; another person's generation is 404 (an
/// administrator's too), and an empty, too long or imageless selection is
/// refused with the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_of_generations_downloads_as_one_zip() {
    use std::io::Read as _;
    for db in testing::all().await {
        let s = serve(&db, true, |_| {}).await;
        let k = s.kind;
        let up = s.upload(&s.alice_key, png(64, 32), "in.png").await;
        let image = up.body["ref"].as_str().unwrap().to_string();
        let mut ids = vec![];
        for (width, prompt) in [(16, "first"), (8, "second")] {
            let a = s
                .post(
                    "/api/v1/generations",
                    &s.alice_key,
                    json!({"tool": "resize", "params": {"image": image, "width": width}}),
                )
                .await;
            assert_eq!(a.status, StatusCode::CREATED, "{k}: {prompt}: {}", a.body);
            let id = a.body["id"].as_str().unwrap().to_string();
            assert_eq!(s.wait(&s.alice_key, &id).await["status"], "succeeded", "{k}");
            ids.push(id);
        }
        // Newest first, as the history lists them; a repeat is ignored.
        let path = format!("/api/v1/generations/download?ids={},{},{}", ids[1], ids[0], ids[1]);
        let r = s.http.get(s.url(&path)).bearer_auth(&s.alice_key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}");
        assert_eq!(r.headers()["content-type"], "application/zip");
        assert_eq!(r.headers()["content-disposition"], "attachment; filename=\"station-2-images.zip\"");
        let bytes = r.bytes().await.unwrap().to_vec();
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
        assert_eq!(names.len(), 3, "{k}: {names:?}");
        for (name, id) in names.iter().zip([&ids[1], &ids[0]]) {
            assert!(name.starts_with(&format!("resize-{}", &id[..13])) && name.ends_with("-1.png"), "{k}: {name}");
        }
        let mut first = vec![];
        zip.by_name(&names[0]).unwrap().read_to_end(&mut first).unwrap();
        // The PNG header's width and height (IHDR).
        let size = |at: usize| u32::from_be_bytes(first[at..at + 4].try_into().unwrap());
        assert_eq!((&first[1..4], size(16), size(20)), (&b"PNG"[..], 8, 4), "{k}: the newest (width 8) first");
        let mut text = String::new();
        zip.by_name("metadata.json").unwrap().read_to_string(&mut text).unwrap();
        let meta: Value = serde_json::from_str(&text).unwrap();
        let images = meta["images"].as_array().unwrap();
        assert_eq!(images.len(), 2, "{k}: {meta}");
        assert_eq!((&images[0]["generation"], &images[0]["file"]), (&json!(ids[1]), &json!(names[0])), "{k}");
        assert_eq!(images[0]["parameters"]["width"], json!(8), "{k}: {meta}");
        assert_eq!(images[1]["tool"], json!("resize"), "{k}");

        // The history's model filter: a parameter whose whole value is the
        // name (resize's `fit` stands in for a model here).
        let listed = |a: common::Answer| a.body["items"].as_array().map_or(0, Vec::len);
        assert_eq!(listed(s.get("/api/v1/generations?model=contain", &s.alice_key).await), 2, "{k}");
        assert_eq!(listed(s.get("/api/v1/generations?model=CONTAIN", &s.alice_key).await), 2, "{k}");
        for partial in ["cont", "ontain", "fit", "%25"] {
            let a = s.get(&format!("/api/v1/generations?model={partial}"), &s.alice_key).await;
            assert_eq!(listed(a), 0, "{k}: {partial} is not a whole value");
        }

        // Bob, and even an administrator, get 404 for alice's generation.
        for key in [&s.bob_key, &s.admin_key] {
            let a = s.get(&format!("/api/v1/generations/download?ids={}", ids[0]), key).await;
            assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"), "{k}: {}", a.body);
        }
        // Nothing, or too much, is refused naming the field.
        let many = std::iter::once(ids[0].clone()).chain((0..101).map(|n| format!("{n:04}"))).collect::<Vec<_>>();
        for path in
            ["/api/v1/generations/download".to_string(), format!("/api/v1/generations/download?ids={}", many.join(","))]
        {
            let a = s.get(&path, &s.alice_key).await;
            assert_eq!((a.status, a.fields()), (StatusCode::BAD_REQUEST, vec!["ids".to_string()]), "{k}: {}", a.body);
        }
        s.stop().await;

        // A generation that has no image yet (no workers: it stays queued).
        let s = serve(&db, false, |_| {}).await;
        let up = s.upload(&s.alice_key, png(64, 32), "in.png").await;
        let image = up.body["ref"].as_str().unwrap().to_string();
        let a = s
            .post(
                "/api/v1/generations",
                &s.alice_key,
                json!({"tool": "resize", "params": {"image": image, "width": 4}}),
            )
            .await;
        let id = a.body["id"].as_str().unwrap();
        let a = s.get(&format!("/api/v1/generations/download?ids={id}"), &s.alice_key).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains("finished image"), "{k}: {}", a.body);
        s.stop().await;
    }
}
