//! Spells, casts and webhooks through the real server, with the fake
//! ComfyUI and the native tools, on SQLite and PostgreSQL: a two-step spell
//! (text to image on ComfyUI → resize) saved and cast over REST, its
//! validation errors, and a webhook subscription receiving the cast's and
//! the generations' events signed, retried after a 500, with one event id.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use common::{Server, serve};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_testkit::testing;

/// What the test receiver saw: (event id, signature header, body).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A webhook receiver on 127.0.0.1 that answers 500 to the first request
/// of each event id and 200 afterwards.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Default::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let s = s.clone();
            async move {
                let id = headers["x-station-event-id"].to_str().unwrap().to_string();
                let sig = headers["x-station-signature"].to_str().unwrap().to_string();
                let mut seen = s.lock().unwrap();
                let first = !seen.iter().any(|(e, _, _)| *e == id);
                seen.push((id, sig, body));
                if first { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// HMAC-SHA256, written here independently of Station's.
fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let inner = Sha256::new().chain_update(k.map(|b| b ^ 0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(k.map(|b| b ^ 0x5c)).chain_update(inner).finalize().to_vec()
}

/// Verifies `t=…,v1=…` over `body` with `secret`, as a Stripe-style verifier does.
fn verify(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    hex::encode(hmac(secret.as_bytes(), format!("{t}.{body}").as_bytes())) == v1
}

async fn with_comfy(s: &Server) -> (FakeComfy, station_core::Workers) {
    let fake = FakeComfy::start(FakeOptions {
        checkpoints: vec!["v1-5-pruned-emaonly.safetensors".into()],
        ..Default::default()
    })
    .await;
    let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 2, tags: vec![] };
    let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
    comfy.start_health_checks(Duration::from_millis(200), s.station.wake.clone()).await;
    s.station.register_executor(comfy);
    (fake, station_core::Workers::start(&s.station))
}

async fn wait_cast(s: &Server, key: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a = s.get(&format!("/api/v1/casts/{id}"), key).await;
        assert_eq!(a.status, StatusCode::OK, "{}: {}", s.kind, a.body);
        if a.body["status"] != "running" {
            return a.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}: cast stuck: {}", s.kind, a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_step_spell_is_saved_and_cast_over_rest_with_signed_webhooks() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| {
            station_testkit::install_dream(&c.tools_dir());
            c.webhooks.allow_private = true;
            c.webhooks.retry_base_ms = 50;
        })
        .await;
        let k = s.kind;
        let (_fake, workers) = with_comfy(&s).await;
        // The dream tool is listed once the backend's models are known.
        wait_for("the dream tool", async || s.station.find_tool("dream", &s.alice).map(|_| ())).await;

        // Bad spells are refused with every problem named.
        let bad = json!({"slug": "x y", "name": "Bad", "steps": [
            {"tool": "dream"},
            {"tool": "resize", "params": {"scale": 0.5}, "inputs_from": {"image": "step2.output[0]"}},
        ]});
        let a = s.post("/api/v1/spells", &s.alice_key, bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert_eq!(a.fields(), ["slug", "step1.prompt", "step2.inputs_from.image"], "{k}: {}", a.body);

        let spell = json!({
            "slug": "small-dream", "name": "Small dream", "visibility": "public",
            "steps": [
                {"tool": "dream", "inputs_from": {"prompt": "input.prompt"}},
                {"tool": "resize", "params": {"scale": 0.5}, "inputs_from": {"image": "step1.output[0]"}},
            ],
            "inputs": {"prompt": {"default": "a lighthouse"}},
        });
        let a = s.post("/api/v1/spells", &s.alice_key, spell).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        assert_eq!(a.body["inputs"][0]["name"], "prompt");
        assert_eq!(a.body["inputs"][0]["type"], "text");
        let listed = s.get("/api/v1/spells", &s.bob_key).await;
        assert_eq!(listed.body["spells"][0]["slug"], "small-dream", "{k}: public spells are listed for others");

        // Bob subscribes to every generation and cast event.
        let (url, seen) = receiver().await;
        let a = s
            .post("/api/v1/account/webhooks", &s.bob_key, json!({"url": url, "events": ["generation.*", "cast.*"]}))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let secret = a.body["secret"].as_str().unwrap().to_string();
        let listed = s.get("/api/v1/account/webhooks", &s.bob_key).await;
        assert!(listed.body["webhooks"][0]["secret"].is_null(), "{k}: the secret is shown once");

        // Bob casts Alice's public spell: bound outputs, quote = holds, his points.
        let before = s.get("/api/v1/points", &s.bob_key).await.body;
        let a = s
            .post("/api/v1/casts", &s.bob_key, json!({"spell": "small-dream", "inputs": {"prompt": "a red fox"}}))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let price = a.body["price"].as_i64().unwrap();
        assert_eq!(a.body["steps_total"], 2);
        let held = s.get("/api/v1/points", &s.bob_key).await.body;
        assert_eq!(held["held"].as_i64().unwrap() - before["held"].as_i64().unwrap(), price, "{k}: {held}");
        let id = a.body["id"].as_str().unwrap().to_string();
        let done = wait_cast(&s, &s.bob_key, &id).await;
        assert_eq!(done["status"], "succeeded", "{k}: {done}");
        assert_eq!(done["progress_text"], "done: 2 of 2 steps");
        let out = done["outputs"][0].as_str().unwrap();
        let m = s.station.media.get(out, None).await.unwrap().0;
        assert_eq!((m.width, m.height), (32, 32), "{k}: 64×64 from the dream, halved");
        let step2 =
            s.get(&format!("/api/v1/generations/{}", done["steps"][1]["job_id"].as_str().unwrap()), &s.bob_key).await;
        assert_eq!(
            step2.body["params"]["image"],
            json!(format!("media:{}", done["steps"][0]["outputs"][0].as_str().unwrap())),
            "{k}: {}",
            step2.body
        );
        let alice = s.get("/api/v1/spells/small-dream", &s.alice_key).await;
        assert_eq!(alice.body["casts"], 1);
        assert!(s.get(&format!("/api/v1/casts/{id}"), &s.alice_key).await.status == StatusCode::NOT_FOUND);

        // Three events (two generations, one cast), each delivered after one 500, signed, with one id.
        let log = wait_for("three delivered events", async || {
            let log = s.get("/api/v1/account/webhooks/deliveries", &s.bob_key).await.body;
            let list = log["deliveries"].as_array()?.clone();
            (list.len() == 3 && list.iter().all(|d| d["state"] == "delivered")).then_some(list)
        })
        .await;
        let mut events: Vec<&str> = log.iter().map(|d| d["event"].as_str().unwrap()).collect();
        events.sort();
        assert_eq!(events, ["cast.succeeded", "generation.succeeded", "generation.succeeded"], "{k}");
        assert!(log.iter().all(|d| d["attempts"] == 2 && d["last_status"] == 200), "{k}: {log:?}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 6, "{k}: each event twice (a 500, then 200)");
        for (event_id, sig, body) in &seen {
            assert!(verify(&secret, sig, body), "{k}: signature of {event_id} verifies");
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["id"], json!(event_id));
        }
        let cast_event = seen.iter().find(|(e, _, _)| e.starts_with("cast.")).unwrap();
        assert_eq!(cast_event.0, format!("cast.succeeded:{id}"));
        let body: Value = serde_json::from_str(&cast_event.2).unwrap();
        assert_eq!(body["data"]["outputs"][0], json!(out));
        assert!(!verify("whsec_wrong", &cast_event.1, &cast_event.2));

        // The same Idempotency-Key twice: one cast, one charge, the first answer.
        let send = || async {
            let r = s
                .http
                .post(s.url("/api/v1/casts"))
                .bearer_auth(&s.bob_key)
                .header("Idempotency-Key", "cast-once-1")
                .json(&json!({"spell": "small-dream", "inputs": {"prompt": "a grey heron"}}))
                .send()
                .await
                .unwrap();
            Server::answer(r).await
        };
        let before = s.get("/api/v1/points", &s.bob_key).await.body;
        let (a, b) = (send().await, send().await);
        assert_eq!((a.status, b.status), (StatusCode::CREATED, StatusCode::CREATED), "{k}: {} {}", a.body, b.body);
        assert_eq!(a.body["id"], b.body["id"], "{k}: the repeat answers the first cast");
        let held = s.get("/api/v1/points", &s.bob_key).await.body;
        let price = a.body["price"].as_i64().unwrap();
        let spent = (before["available"].as_i64().unwrap()) - held["available"].as_i64().unwrap();
        assert_eq!(spent, price, "{k}: held once: {before} → {held}");
        let casts = s.get("/api/v1/casts", &s.bob_key).await.body;
        assert_eq!(casts["casts"].as_array().unwrap().len(), 2, "{k}: {casts}");
        wait_cast(&s, &s.bob_key, a.body["id"].as_str().unwrap()).await;

        // A cast refused for its inputs names them; nothing is held.
        let a =
            s.post("/api/v1/casts", &s.bob_key, json!({"spell": "small-dream", "inputs": {"prompt": 5, "x": 1}})).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert_eq!(a.fields(), ["inputs.x", "inputs.prompt"], "{k}: {}", a.body);
        workers.shutdown().await;
        s.stop().await;

        // Without allow_private, a private destination is refused.
        let db2 = match k {
            "sqlite" => testing::sqlite().await,
            _ => testing::postgres().await.unwrap(),
        };
        let s2 = serve(&db2, false, |_| {}).await;
        let a = s2
            .post(
                "/api/v1/account/webhooks",
                &s2.bob_key,
                json!({"url": "http://127.0.0.1:9/hook", "events": ["cast.*"]}),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert_eq!(a.fields(), ["url"]);
        s2.stop().await;
    }
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

/// resize → flip, native tools: the image is an exposed input.
fn resize_flip(slug: &str) -> Value {
    json!({
        "slug": slug, "name": "Shrink and mirror", "visibility": "public",
        "steps": [
            {"tool": "resize", "params": {"scale": 0.5}, "inputs_from": {"image": "input.image"}},
            {"tool": "flip", "params": {"direction": "horizontal"}, "inputs_from": {"image": "step1.output[0]"}},
        ],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cast_is_followed_live_over_server_sent_events_until_its_result() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let a = s.post("/api/v1/spells", &s.alice_key, resize_flip("shrink-mirror")).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let up = s.upload(&s.bob_key, common::png(64, 32), "in.png").await;
        let image = format!("media:{}", up.body["id"].as_str().unwrap());
        // No workers yet: the cast waits queued while the stream opens.
        let a =
            s.post("/api/v1/casts", &s.bob_key, json!({"spell": "shrink-mirror", "inputs": {"image": image}})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let id = a.body["id"].as_str().unwrap().to_string();

        // Another account cannot follow it.
        let other = s.http.get(s.url(&format!("/api/v1/casts/{id}/events"))).bearer_auth(&s.alice_key).send().await;
        assert_eq!(other.unwrap().status(), StatusCode::NOT_FOUND, "{k}");

        let resp =
            s.http.get(s.url(&format!("/api/v1/casts/{id}/events"))).bearer_auth(&s.bob_key).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{k}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let (first, first_in) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(read_events(resp, first));
        first_in.await.unwrap();
        let workers = station_core::Workers::start(&s.station);
        let events = reader.await.unwrap();
        workers.shutdown().await;

        let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        let statuses: Vec<(&str, i64)> = events
            .iter()
            .filter(|(e, _)| e == "status")
            .map(|(_, d)| (d["status"].as_str().unwrap(), d["step"].as_i64().unwrap()))
            .collect();
        assert_eq!(statuses.first(), Some(&("running", 1)), "{k}: {events:?}");
        assert!(statuses.contains(&("running", 2)), "{k}: the second step is announced: {events:?}");
        assert_eq!(statuses.last(), Some(&("succeeded", 2)), "{k}: {events:?}");
        let first = &events[0].1;
        assert_eq!(first["steps_total"], 2);
        assert_eq!(first["tool"], "Resize");
        assert!(first["progress_text"].as_str().unwrap().starts_with("step 1 of 2: Resize"), "{k}: {first}");
        let texts: Vec<&str> =
            events.iter().filter(|(e, _)| e == "progress").map(|(_, d)| d["progress_text"].as_str().unwrap()).collect();
        assert!(texts.iter().any(|t| t.starts_with("step 2 of 2: Flip")), "{k}: {texts:?}");
        let fractions: Vec<f64> =
            events.iter().filter(|(e, _)| e == "progress").map(|(_, d)| d["fraction"].as_f64().unwrap()).collect();
        assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{k}: progress never goes back: {fractions:?}");
        assert_eq!(fractions.last(), Some(&1.0), "{k}: {fractions:?}");
        assert_eq!(kinds.last(), Some(&"result"), "{k}: {kinds:?}");
        let done = s.get(&format!("/api/v1/casts/{id}"), &s.bob_key).await.body;
        assert_eq!(events.last().unwrap().1["outputs"][0]["id"], done["outputs"][0], "{k}: {done}");

        // A stream opened on an ended cast answers its end state and closes.
        let resp =
            s.http.get(s.url(&format!("/api/v1/casts/{id}/events"))).bearer_auth(&s.bob_key).send().await.unwrap();
        let (first, _) = tokio::sync::oneshot::channel();
        let again = read_events(resp, first).await;
        let kinds: Vec<&str> = again.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(kinds, ["status", "progress", "result"], "{k}: {again:?}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_of_a_generation_and_a_cast_get_their_signed_end_events() {
    for db in testing::all().await {
        let s = serve(&db, true, |c| {
            c.webhooks.allow_private = true;
            c.webhooks.retry_base_ms = 50;
        })
        .await;
        let k = s.kind;
        let (url, seen) = receiver().await;
        let a = s.post("/api/v1/spells", &s.alice_key, resize_flip("mirror-cb")).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let up = s.upload(&s.bob_key, common::png(64, 32), "in.png").await;
        let image = format!("media:{}", up.body["id"].as_str().unwrap());

        // A bad callback_url is refused by name, nothing queued.
        let a = s
            .post(
                "/api/v1/generations",
                &s.bob_key,
                json!({"tool": "flip", "params": {"image": image}, "callback_url": "ftp://example.com/x"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert_eq!(a.fields(), ["callback_url"], "{k}: {}", a.body);

        let a = s
            .post(
                "/api/v1/generations",
                &s.bob_key,
                json!({"tool": "flip", "params": {"image": image}, "callback_url": url}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let job = a.body["id"].as_str().unwrap().to_string();
        let a = s
            .post(
                "/api/v1/casts",
                &s.bob_key,
                json!({"spell": "mirror-cb", "inputs": {"image": image}, "callback_url": url}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let cast = a.body["id"].as_str().unwrap().to_string();
        assert_eq!(wait_cast(&s, &s.bob_key, &cast).await["status"], "succeeded");
        assert_eq!(s.wait(&s.bob_key, &job).await["status"], "succeeded");

        // Exactly the two requested ends (not the cast's steps), each retried after a 500.
        let log = wait_for("two delivered callbacks", async || {
            let log = s.get("/api/v1/account/webhooks/deliveries", &s.bob_key).await.body;
            let list = log["deliveries"].as_array()?.clone();
            (list.len() == 2 && list.iter().all(|d| d["state"] == "delivered")).then_some(list)
        })
        .await;
        let mut ids: Vec<String> = log.iter().map(|d| d["event_id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        assert_eq!(ids, [format!("cast.succeeded:{cast}"), format!("generation.succeeded:{job}")], "{k}");
        let secret = s.get("/api/v1/account/webhooks/callback-secret", &s.bob_key).await.body["secret"]
            .as_str()
            .unwrap()
            .to_string();
        let again = s.get("/api/v1/account/webhooks/callback-secret", &s.bob_key).await.body;
        assert_eq!(again["secret"], json!(secret), "{k}: one secret per account");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 4, "{k}: each event twice (a 500, then 200): {seen:?}");
        for (event_id, sig, body) in &seen {
            assert!(verify(&secret, sig, body), "{k}: signature of {event_id} verifies");
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["id"], json!(event_id));
        }
        let gen_event = seen.iter().find(|(e, _, _)| e.starts_with("generation.")).unwrap();
        let body: Value = serde_json::from_str(&gen_event.2).unwrap();
        assert_eq!(body["type"], "generation.succeeded");
        assert_eq!(body["data"]["id"], json!(job));
        // The rows are written once: another sweep enqueues nothing.
        assert_eq!(s.station.enqueue_webhook_events().await.unwrap(), 0, "{k}");
        s.stop().await;

        // Without allow_private, a private callback_url is refused everywhere.
        let db2 = match k {
            "sqlite" => testing::sqlite().await,
            _ => testing::postgres().await.unwrap(),
        };
        let s2 = serve(&db2, false, |_| {}).await;
        let a = s2.post("/api/v1/spells", &s2.alice_key, resize_flip("mirror-private")).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let up = s2.upload(&s2.bob_key, common::png(8, 8), "in.png").await;
        let image = format!("media:{}", up.body["id"].as_str().unwrap());
        let private = "http://127.0.0.1:9/hook";
        for (path, body) in [
            ("/api/v1/generations", json!({"tool": "flip", "params": {"image": image}, "callback_url": private})),
            ("/api/v1/casts", json!({"spell": "mirror-private", "inputs": {"image": image}, "callback_url": private})),
            ("/api/v1/trainings", json!({"dataset": "none", "callback_url": private})),
        ] {
            let a = s2.post(path, &s2.bob_key, body).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k} {path}: {}", a.body);
            assert_eq!(a.fields(), ["callback_url"], "{k} {path}: {}", a.body);
        }
        // The same as a form with the image uploaded in it: refused before the upload is stored.
        let form = reqwest::multipart::Form::new()
            .text("tool", "flip")
            .text("callback_url", private)
            .part("image", reqwest::multipart::Part::bytes(common::png(8, 8)).file_name("in.png"));
        let r = s2.http.post(s2.url("/api/v1/generations")).bearer_auth(&s2.bob_key).multipart(form).send().await;
        let a = Server::answer(r.unwrap()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k} form: {}", a.body);
        assert_eq!(a.fields(), ["callback_url"], "{k} form: {}", a.body);
        let jobs = s2.get("/api/v1/generations", &s2.bob_key).await.body;
        assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{k}: nothing was queued: {jobs}");
        s2.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_share_moves_from_caster_to_owner_with_each_capture() {
    for db in testing::all().await {
        let s = serve(&db, true, |c| {
            // Each native step costs 55 points; 10 % of 55 is 5 (rounded down).
            c.points.multiplier = 55.0;
            c.points.free_daily = 0;
            c.points.starting_grant = 1000;
            c.spells.creator_share_percent = 10;
        })
        .await;
        let k = s.kind;
        let a = s.post("/api/v1/spells", &s.alice_key, resize_flip("shared-mirror")).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        let up = s.upload(&s.bob_key, common::png(64, 32), "in.png").await;
        let image = format!("media:{}", up.body["id"].as_str().unwrap());
        let bob_before = s.get("/api/v1/points", &s.bob_key).await.body;
        let alice_before = s.get("/api/v1/points", &s.alice_key).await.body;
        let a = s
            .post(
                "/api/v1/casts",
                &s.bob_key,
                json!({"spell": "shared-mirror", "inputs": {"image": image}, "confirmed": true}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        assert_eq!(a.body["price"], 110, "{k}: {}", a.body);
        let done = wait_cast(&s, &s.bob_key, a.body["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{k}: {done}");
        let bal = |v: &Value, f: &str| v[f].as_i64().unwrap();
        let bob = wait_for("both steps settled", async || {
            let b = s.get("/api/v1/points", &s.bob_key).await.body;
            (bal(&b, "held") == bal(&bob_before, "held")).then_some(b)
        })
        .await;
        let alice = s.get("/api/v1/points", &s.alice_key).await.body;
        assert_eq!(bal(&bob_before, "balance") - bal(&bob, "balance"), 110, "{k}: the caster pays the price: {bob}");
        assert_eq!(bal(&alice, "balance") - bal(&alice_before, "balance"), 10, "{k}: 5 + 5 to the owner: {alice}");

        // Each step: the caster's capture and the owner's reward, one of each.
        for step in done["steps"].as_array().unwrap() {
            let job = step["job_id"].as_str().unwrap();
            let entries = s.store.ledger_for_job(job).await.unwrap();
            let kinds: Vec<(&str, &str, i64)> =
                entries.iter().map(|e| (e.kind.as_str(), e.account_id.as_str(), e.amount)).collect();
            assert!(kinds.contains(&("capture", s.bob.id.as_str(), -55)), "{k}: {kinds:?}");
            assert!(kinds.contains(&("reward", s.alice.id.as_str(), 5)), "{k}: {kinds:?}");
            assert_eq!(kinds.iter().filter(|e| e.0 == "reward").count(), 1, "{k}: {kinds:?}");
            // Settling again moves nothing.
            s.station.settle_job(job, "test").await.unwrap();
            assert_eq!(s.store.ledger_for_job(job).await.unwrap().len(), entries.len(), "{k}");
        }
        assert_eq!(s.station.audit_points().await.unwrap(), vec![], "{k}");

        // The owner casting their own spell pays no share to themselves.
        let up = s.upload(&s.alice_key, common::png(64, 32), "in.png").await;
        let image = format!("media:{}", up.body["id"].as_str().unwrap());
        let a = s
            .post(
                "/api/v1/casts",
                &s.alice_key,
                json!({"spell": "shared-mirror", "inputs": {"image": image}, "confirmed": true}),
            )
            .await;
        let done = wait_cast(&s, &s.alice_key, a.body["id"].as_str().unwrap()).await;
        for step in done["steps"].as_array().unwrap() {
            let entries = s.store.ledger_for_job(step["job_id"].as_str().unwrap()).await.unwrap();
            assert!(entries.iter().all(|e| e.kind != "reward"), "{k}: {entries:?}");
        }
        s.stop().await;
    }
}

/// `POST /api/v1/spells/preview`: a draft's cast inputs (typed by the tool
/// inputs they feed) and every problem a save would answer, nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_spell_is_previewed_without_being_saved() {
    for db in testing::all().await {
        let s = serve(&db, true, |_| {}).await;
        let k = s.kind;
        let mut draft = resize_flip("preview-me");
        draft["steps"][0]["inputs_from"]["width"] = json!("input.width");
        let a = s.post("/api/v1/spells/preview", &s.alice_key, draft.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        let names: Vec<&str> =
            a.body["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["image", "width"], "{k}: {}", a.body);
        assert_eq!(
            (a.body["inputs"][1]["type"].as_str(), a.body["inputs"][1]["max"].as_f64()),
            (Some("integer"), Some(16384.0))
        );
        assert_eq!(a.body["problems"], json!([]), "{k}: {}", a.body);
        assert_eq!(
            s.get("/api/v1/spells/preview-me", &s.alice_key).await.status,
            StatusCode::NOT_FOUND,
            "{k}: nothing stored"
        );

        // Problems are listed, and the inputs that could be derived still shown.
        draft["steps"][1]["inputs_from"]["image"] = json!("step3.output[0]");
        let a = s.post("/api/v1/spells/preview", &s.alice_key, draft.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        let fields: Vec<&str> =
            a.body["problems"].as_array().unwrap().iter().map(|p| p["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["step2.inputs_from.image"], "{k}: {}", a.body);
        assert_eq!(a.body["inputs"].as_array().unwrap().len(), 2, "{k}: {}", a.body);

        // A taken slug is a problem too.
        assert_eq!(s.post("/api/v1/spells", &s.alice_key, resize_flip("taken")).await.status, StatusCode::CREATED);
        let a = s.post("/api/v1/spells/preview", &s.bob_key, resize_flip("taken")).await;
        assert_eq!(a.body["problems"][0]["field"], "slug", "{k}: {}", a.body);
        s.stop().await;
    }
}
