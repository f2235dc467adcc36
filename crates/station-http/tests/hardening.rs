//! Issue 17 (security and input hardening), the HTTP server's part, over
//! real HTTP: bounded request bodies (item 2), every extractor refusal in
//! the API's error shape (item 6), duplicate multipart fields (item 8) and
//! HSTS behind an https public URL (item 13).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{png, serve};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use station_testkit::testing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status line and body of a raw HTTP/1.1 answer.
fn parse_answer(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    // The body may be chunked: take the JSON object inside.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, json)
}

/// Streams an endless chunked body of `chunk` bytes to `method path` as
/// `key`, stopping as soon as the server answers or `cap` bytes are written.
/// Returns the answer and how many body bytes were written before it came.
async fn stream_until_answered(
    base: &str,
    method: &str,
    path: &str,
    key: &str,
    content_type: &str,
    cap: u64,
) -> ((u16, Value), u64) {
    let conn = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        // A JSON string that never ends: `{"tool": "aaaa…`.
        let mut first = true;
        let filler = vec![b'a'; 64 * 1024];
        while counter.load(Ordering::SeqCst) < cap {
            let data: Vec<u8> = if first {
                first = false;
                let mut d = br#"{"tool": ""#.to_vec();
                d.extend_from_slice(&filler);
                d
            } else {
                filler.clone()
            };
            let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
            frame.extend_from_slice(&data);
            frame.extend_from_slice(b"\r\n");
            if wr.write_all(&frame).await.is_err() {
                return;
            }
            counter.fetch_add(data.len() as u64, Ordering::SeqCst);
        }
        // Everything sent: end the body (the server got it all).
        let _ = wr.write_all(b"\"}").await;
        let _ = wr.write_all(b"0\r\n\r\n").await;
        std::future::pending::<()>().await;
    });
    let mut raw = vec![];
    let mut buf = [0u8; 4096];
    // Read until the answer's head and its JSON body have arrived.
    loop {
        let n = rd.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let (_, body) = parse_answer(&raw);
        if body.is_object() {
            break;
        }
    }
    let at_answer = written.load(Ordering::SeqCst);
    writer.abort();
    (parse_answer(&raw), at_answer)
}

/// Item 2: JSON bodies are limited to 1 MiB on every route, including
/// `POST /api/v1/generations` (whose multipart form may be larger): a
/// declared length over it is refused at once, and a chunked body of
/// unknown length is refused after at most about 1 MiB is read — the server
/// never buffers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item2_json_bodies_are_limited_to_1_mib_on_every_route_without_buffering_the_rest() {
    let db = testing::sqlite().await;
    // Uploads may be large (4 × 64 MiB): only the JSON limit may stop a JSON body.
    let s = serve(&db, false, |c| c.media.max_bytes = 64 * 1024 * 1024).await;
    let routes: [(Method, &str); 5] = [
        (Method::POST, "/api/v1/generations"),
        (Method::PUT, "/api/v1/settings/resize"),
        (Method::POST, "/api/v1/points/quote"),
        (Method::POST, "/api/v1/account/keys"),
        (Method::POST, "/api/v1/loras/resolve"),
    ];
    let big = json!({"tool": "resize", "params": {"x": "a".repeat(1_100_000)}});
    for (method, path) in &routes {
        // A declared body over 1 MiB: 413 in the error shape.
        let a = s.call(method.clone(), path, Some(&s.alice_key), Some(big.clone())).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{method} {path}: {}", a.body);
        assert_eq!(a.code(), "too_large", "{method} {path}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains("1024 KiB"), "{path}: {}", a.body);
    }
    // A body just under the limit is read (and refused for what it says, not its size).
    let fits = json!({"tool": "resize", "params": {"x": "a".repeat(1_000_000)}});
    let a = s.post("/api/v1/generations", &s.alice_key, fits).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);

    // A chunked body that never ends: answered 413 once about 1 MiB is read.
    // Socket buffers on loopback hold a few MiB more than the server read;
    // without the limit the server would read all 96 MiB before answering.
    let cap = 96 * 1024 * 1024;
    for (method, path) in &routes {
        let ((status, body), written) =
            stream_until_answered(&s.base, method.as_str(), path, &s.alice_key, "application/json", cap).await;
        assert_eq!(status, 413, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "too_large", "{method} {path}: {body}");
        assert!(written < 24 * 1024 * 1024, "{method} {path}: {written} bytes were sent before the answer");
    }
    s.stop().await;
}

/// Item 2: a multipart form is limited by `media.max_bytes` per file and by
/// `media.max_upload_files` files in all (the request at most their product
/// plus 64 KiB of text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item2_multipart_forms_are_limited_per_file_and_in_total() {
    let db = testing::sqlite().await;
    let s = serve(&db, false, |c| {
        c.media.max_bytes = 100_000;
        c.media.max_upload_files = 2;
    })
    .await;
    // The declared length over 2 × 100 000 + 64 KiB: 413 at once.
    let total = 2 * 100_000 + 64 * 1024;
    for path in ["/api/v1/generations", "/api/v1/media"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            s.alice_key,
            total + 1
        );
        let mut conn = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        // No body follows: a server that waits for it sees the end at once (and answers 400).
        conn.shutdown().await.unwrap();
        let mut raw = vec![];
        conn.read_to_end(&mut raw).await.unwrap();
        let (status, body) = parse_answer(&raw);
        assert_eq!((status, body["error"]["code"].as_str()), (413, Some("too_large")), "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("media.max_upload_files"), "{body}");
    }
    // One file over media.max_bytes: 413 naming it.
    let noise: Vec<u8> = (0..150_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let form = reqwest::multipart::Form::new()
        .text("tool", "resize")
        .part("image", reqwest::multipart::Part::bytes(noise).file_name("n.png"));
    let r = s.http.post(s.url("/api/v1/generations")).bearer_auth(&s.alice_key).multipart(form).send().await.unwrap();
    let a = common::Server::answer(r).await;
    assert_eq!((a.status, a.code(), a.fields()), (StatusCode::PAYLOAD_TOO_LARGE, "too_large", vec!["image".into()]));
    // More files than media.max_upload_files: 413 naming the first one too many.
    let part = |n: &str| reqwest::multipart::Part::bytes(png(4, 4)).file_name(n.to_string());
    let form = reqwest::multipart::Form::new()
        .text("tool", "resize")
        .part("a", part("a.png"))
        .part("b", part("b.png"))
        .part("c", part("c.png"));
    let r = s.http.post(s.url("/api/v1/generations")).bearer_auth(&s.alice_key).multipart(form).send().await.unwrap();
    let a = common::Server::answer(r).await;
    assert_eq!((a.status, a.code(), a.fields()), (StatusCode::PAYLOAD_TOO_LARGE, "too_large", vec!["c".into()]));
    assert_eq!(s.store.count_account_media(&s.alice.id).await.unwrap(), 0, "nothing stored");
    s.stop().await;
}

/// The account's job rows, read from the database.
async fn job_rows(s: &common::Server, account: &str) -> usize {
    let filter =
        station_testkit::store::JobFilter { account_id: Some(account.into()), limit: 1000, ..Default::default() };
    s.store.list_jobs(&filter).await.unwrap().len()
}

/// Item 8: a multipart creation naming a part twice (two `image` files, or
/// two `tool` texts) is refused with 400 naming the part before anything is
/// stored: no job row, no media row.
async fn item8_duplicate_multipart_fields_are_refused_before_storing(db: station_testkit::TestDb) {
    let s = serve(&db, false, |_| {}).await;
    let k = s.kind;
    let image = || reqwest::multipart::Part::bytes(png(24, 16)).file_name("in.png");
    let forms = [
        (
            "image",
            reqwest::multipart::Form::new()
                .text("tool", "resize")
                .text("width", "8")
                .text("confirmed", "true")
                .part("image", image())
                .part("image", image()),
        ),
        (
            "tool",
            reqwest::multipart::Form::new()
                .text("tool", "resize")
                .text("tool", "crop")
                .text("width", "8")
                .part("image", image()),
        ),
        ("width", reqwest::multipart::Form::new().text("tool", "resize").text("width", "8").text("width", "9")),
    ];
    for (field, form) in forms {
        let r =
            s.http.post(s.url("/api/v1/generations")).bearer_auth(&s.alice_key).multipart(form).send().await.unwrap();
        let a = common::Server::answer(r).await;
        assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_input"), "{k}: {field}: {}", a.body);
        assert_eq!(a.fields(), vec![field.to_string()], "{k}: {}", a.body);
        assert_eq!(job_rows(&s, &s.alice.id).await, 0, "{k}: {field}: no job row");
        assert_eq!(s.store.count_account_media(&s.alice.id).await.unwrap(), 0, "{k}: {field}: no media row");
    }
    // The same form with one image is accepted (and stores one upload, one job).
    let form = reqwest::multipart::Form::new()
        .text("tool", "resize")
        .text("width", "8")
        .text("confirmed", "true")
        .part("image", image());
    let r = s.http.post(s.url("/api/v1/generations")).bearer_auth(&s.alice_key).multipart(form).send().await.unwrap();
    let a = common::Server::answer(r).await;
    assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
    assert_eq!((job_rows(&s, &s.alice.id).await, s.store.count_account_media(&s.alice.id).await.unwrap()), (1, 1));
    s.stop().await;
}

station_testkit::on_every_db!(item8_duplicate_multipart_fields_are_refused_before_storing);

/// Item 13: `Strict-Transport-Security` on every answer when
/// `web.public_url` is https, and never when it is http.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item13_hsts_when_the_public_url_is_https() {
    let db = testing::sqlite().await;
    for (url, want) in
        [(Some("https://station.example.com"), true), (Some("http://station.example.com"), false), (None, false)]
    {
        let s = serve(&db, false, |c| c.web.public_url = url.map(str::to_string)).await;
        for path in ["/healthz", "/api/v1/tools", "/api/v1/nope", "/web"] {
            let r = s.http.get(s.url(path)).bearer_auth(&s.alice_key).send().await.unwrap();
            let got = r.headers().get("strict-transport-security").map(|v| v.to_str().unwrap().to_string());
            if want {
                assert_eq!(got.as_deref(), Some("max-age=31536000"), "{url:?} {path}");
            } else {
                assert_eq!(got, None, "{url:?} {path}");
            }
        }
        s.stop().await;
    }
}

/// Item 6: every extractor refusal — query, path, JSON body, multipart —
/// answers the API's error shape naming the field, on several routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item6_extractor_refusals_are_in_the_error_shape_naming_the_field() {
    let db = testing::sqlite().await;
    let s = serve(&db, false, |_| {}).await;
    let cases: Vec<(&str, &str, &str)> = vec![
        // Query strings.
        ("/api/v1/generations?limit=abc", "limit", "whole number"),
        ("/api/v1/generations?include_hidden=maybe", "include_hidden", "true or false"),
        ("/api/v1/points/history?limit=-1", "limit", "whole number"),
        ("/api/v1/admin/users?limit=1.5", "limit", "whole number"),
        ("/api/v1/media/x/thumbnail?size=big", "size", "whole number"),
        ("/api/v1/generations?limit=1&limit=2", "limit", "more than once"),
        // Path segments that are not UTF-8 once decoded.
        ("/api/v1/generations/%FF", "id", "UTF-8"),
        ("/api/v1/media/%C3%28", "id", "UTF-8"),
        ("/api/v1/tools/%FF", "id", "UTF-8"),
    ];
    for (path, field, reason) in cases {
        let a = s.get(path, &s.admin_key).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}: {}", a.body);
        assert_eq!(a.headers["content-type"], "application/json", "{path}");
        assert_eq!(a.code(), "invalid_input", "{path}: {}", a.body);
        assert_eq!(a.fields(), vec![field.to_string()], "{path}: {}", a.body);
        let why = a.body["error"]["fields"][0]["reason"].as_str().unwrap();
        assert!(why.contains(reason), "{path}: {why}");
    }
    // JSON bodies: not JSON, or not declared as JSON.
    for path in ["/api/v1/points/quote", "/api/v1/account/keys", "/api/v1/generations"] {
        let r = s
            .http
            .post(s.url(path))
            .bearer_auth(&s.alice_key)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        let a = common::Server::answer(r).await;
        assert_eq!((a.status, a.code(), a.fields()), (StatusCode::BAD_REQUEST, "invalid_json", vec!["(body)".into()]));
        let r = s.http.post(s.url(path)).bearer_auth(&s.alice_key).body("{}").send().await.unwrap();
        let a = common::Server::answer(r).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}: {}", a.body);
        assert_eq!(a.fields(), vec!["Content-Type".to_string()], "{path}: {}", a.body);
    }
    // A multipart body that is not multipart.
    let r = s
        .http
        .post(s.url("/api/v1/media"))
        .bearer_auth(&s.alice_key)
        .header("content-type", "multipart/form-data")
        .body("x")
        .send()
        .await
        .unwrap();
    let a = common::Server::answer(r).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_multipart"), "{}", a.body);
    assert_eq!(a.fields(), vec!["Content-Type".to_string()], "{}", a.body);
    s.stop().await;
}
