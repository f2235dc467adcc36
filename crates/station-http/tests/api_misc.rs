//! The rest of the API over real HTTP on SQLite and PostgreSQL: tools,
//! settings per tool, admin endpoints, web-session authentication with CSRF,
//! security headers, and the OpenAPI document (valid, and complete: every
//! route the router serves is in it and every documented operation answers).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{png, serve};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use station_testkit::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_settings() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let a = s.get("/api/v1/tools", &s.alice_key).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        let tools = a.body["tools"].as_array().unwrap();
        let ids: Vec<&str> = tools.iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert!(ids.contains(&"resize") && ids.contains(&"crop"), "{k}: {ids:?}");
        assert!(!ids.contains(&"txt2img-sdxl"), "{k}: hidden tools are not listed: {ids:?}");
        let resize = tools.iter().find(|t| t["id"] == "resize").unwrap();
        assert_eq!((&resize["price"], &resize["image_inputs"]), (&json!(1), &json!(["image"])), "{k}");

        let a = s.get("/api/v1/tools/resize", &s.alice_key).await;
        assert_eq!(a.status, StatusCode::OK, "{k}");
        let inputs = a.body["inputs"].as_array().unwrap();
        assert_eq!(inputs[0]["name"], "image");
        let fit = inputs.iter().find(|i| i["name"] == "fit").unwrap();
        assert_eq!((&fit["type"], &fit["choices"]), (&json!("enum"), &json!(["contain", "cover", "fill"])));
        let schema = &a.body["input_schema"];
        assert_eq!(schema["required"], json!(["image"]), "{k}: {schema}");
        assert_eq!(schema["properties"]["width"]["minimum"], 1.0);
        assert_eq!(schema["properties"]["fit"]["enum"], json!(["contain", "cover", "fill"]));
        let a = s.get("/api/v1/tools/nope", &s.alice_key).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"), "{k}");
        // Refusals made by the router, not a handler, keep the error shape
        // (and the security headers): an unknown path, a method a path does not take.
        let a = s.get("/api/v1/nothing-here", &s.alice_key).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"), "{k}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains("/api/v1/nothing-here"), "{k}: {}", a.body);
        let a = s.call(Method::DELETE, "/api/v1/tools", Some(&s.alice_key), None).await;
        assert_eq!((a.status, a.code()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"), "{k}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains("does not accept DELETE"), "{k}: {}", a.body);
        assert!(a.headers.get("allow").is_some_and(|v| v.to_str().unwrap().contains("GET")), "{k}: {:?}", a.headers);
        assert_eq!(
            a.headers.get("x-content-type-options").map(reqwest::header::HeaderValue::as_bytes),
            Some(&b"nosniff"[..]),
            "{k}"
        );

        // Settings: empty, saved (checked), used by a generation, cleared.
        let a = s.get("/api/v1/settings/resize", &s.alice_key).await;
        assert_eq!(a.body, json!({"tool": "resize", "params": {}}), "{k}");
        let a = s
            .call(
                Method::PUT,
                "/api/v1/settings/resize",
                Some(&s.alice_key),
                Some(json!({"params": {"width": 0, "fit": "x", "zoom": 1}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert_eq!(a.fields(), vec!["zoom".to_string()], "{k}: unknown inputs first: {}", a.body);
        let a = s
            .call(
                Method::PUT,
                "/api/v1/settings/resize",
                Some(&s.alice_key),
                Some(json!({"params": {"width": 0, "fit": "x"}})),
            )
            .await;
        let mut f = a.fields();
        f.sort();
        assert_eq!(f, ["fit", "width"], "{k}: {}", a.body);
        let a = s
            .call(
                Method::PUT,
                "/api/v1/settings/resize",
                Some(&s.alice_key),
                Some(json!({"params": {"image": "media:x"}})),
            )
            .await;
        assert_eq!(a.fields(), vec!["image".to_string()], "{k}");
        let a = s.call(Method::PUT, "/api/v1/settings/resize", Some(&s.alice_key), Some(json!({}))).await;
        assert_eq!(a.fields(), vec!["params".to_string()], "{k}");
        let a = s
            .call(
                Method::PUT,
                "/api/v1/settings/resize",
                Some(&s.alice_key),
                Some(json!({"params": {"width": 7, "fit": "fill"}})),
            )
            .await;
        assert_eq!(
            (a.status, &a.body["params"]),
            (StatusCode::OK, &json!({"width": 7, "fit": "fill"})),
            "{k}: {}",
            a.body
        );
        assert_eq!(s.get("/api/v1/settings/resize", &s.alice_key).await.body["params"]["width"], 7);
        assert_eq!(s.get("/api/v1/settings/resize", &s.bob_key).await.body["params"], json!({}), "{k}: per account");
        let image = s.upload(&s.alice_key, png(8, 8), "a.png").await.body["ref"].as_str().unwrap().to_string();
        let g =
            s.post("/api/v1/generations", &s.alice_key, json!({"tool": "resize", "params": {"image": image}})).await;
        assert_eq!(
            (&g.body["params"]["width"], &g.body["params"]["fit"]),
            (&json!(7), &json!("fill")),
            "{k}: {}",
            g.body
        );
        let a = s.call(Method::DELETE, "/api/v1/settings/resize", Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}");
        assert_eq!(s.get("/api/v1/settings/resize", &s.alice_key).await.body["params"], json!({}));
        assert_eq!(s.get("/api/v1/settings/nope", &s.alice_key).await.status, StatusCode::NOT_FOUND);
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_are_for_admins() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        for path in ["/api/v1/admin/backends", "/api/v1/admin/queue", "/api/v1/admin/users", "/api/v1/admin/alerts"] {
            let a = s.get(path, &s.alice_key).await;
            assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "forbidden"), "{k}: {path}");
            let a = s.call(Method::GET, path, None, None).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{k}: {path}");
        }
        let a = s
            .post(
                &format!("/api/v1/admin/users/{}/grant", s.alice.id),
                &s.alice_key,
                json!({"amount": 5, "reason": "x"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{k}");

        // Queue: two queued jobs (no workers), one failed job.
        let image = s.upload(&s.alice_key, png(8, 8), "a.png").await.body["ref"].as_str().unwrap().to_string();
        for _ in 0..2 {
            let g = s
                .post(
                    "/api/v1/generations",
                    &s.alice_key,
                    json!({"tool": "resize", "params": {"image": image, "width": 2}}),
                )
                .await;
            assert_eq!(g.status, StatusCode::CREATED, "{k}: {}", g.body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let a = s.get("/api/v1/admin/queue", &s.admin_key).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!(a.body["depth"], 2, "{k}: {}", a.body);
        assert!(a.body["oldest_queued_age_ms"].as_i64().unwrap() >= 20, "{k}: {}", a.body);
        assert_eq!(a.body["recent_failures"], json!([]));
        assert_eq!(a.body["running"], json!([]), "{k}: both wait, nothing runs: {}", a.body);

        let a = s.get("/api/v1/admin/backends", &s.admin_key).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!(a.body["services"][0]["service"], "media", "{k}: {}", a.body);
        assert!(a.body["services"][0]["capacity"].as_u64().unwrap() >= 1);

        // Users, paged by cursor; three accounts exist.
        let a = s.get("/api/v1/admin/users?limit=2", &s.admin_key).await;
        assert_eq!(a.body["items"].as_array().unwrap().len(), 2, "{k}: {}", a.body);
        let next = a.body["next"].as_str().unwrap().to_string();
        let b = s.get(&format!("/api/v1/admin/users?limit=2&cursor={next}"), &s.admin_key).await;
        assert_eq!(b.body["items"].as_array().unwrap().len(), 1, "{k}: {}", b.body);
        assert!(b.body["next"].is_null());
        let all: BTreeSet<String> = a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .chain(b.body["items"].as_array().unwrap())
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(all, [s.alice.id.clone(), s.bob.id.clone(), s.admin.id.clone()].into_iter().collect(), "{k}");
        let alice = a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .chain(b.body["items"].as_array().unwrap())
            .find(|u| u["id"] == json!(s.alice.id))
            .unwrap()
            .clone();
        assert_eq!(
            (&alice["balance"], &alice["held"], &alice["identities"]),
            (&json!(100), &json!(2), &json!(["test:alice"])),
            "{k}"
        );

        // Grants: validated, idempotent with a key.
        let path = format!("/api/v1/admin/users/{}/grant", s.alice.id);
        for (body, field) in [
            (json!({"amount": 0, "reason": "x"}), "amount"),
            (json!({"amount": 5}), "reason"),
            (json!({"amount": 5, "reason": "x", "why": 1}), "why"),
        ] {
            let a = s.post(&path, &s.admin_key, body).await;
            assert_eq!((a.status, a.fields()), (StatusCode::BAD_REQUEST, vec![field.to_string()]), "{k}: {}", a.body);
        }
        let body = json!({"amount": 25, "reason": "welcome", "idempotency_key": "k1"});
        let a = s.post(&path, &s.admin_key, body.clone()).await;
        assert_eq!(
            (a.status, &a.body),
            (StatusCode::OK, &json!({"applied": true, "balance": 125, "held": 2})),
            "{k}: {}",
            a.body
        );
        let a = s.post(&path, &s.admin_key, body).await;
        assert_eq!(a.body["applied"], false, "{k}: {}", a.body);
        assert_eq!(s.get("/api/v1/points", &s.alice_key).await.body["balance"], 125, "{k}");
        let a = s.post("/api/v1/admin/users/nope/grant", &s.admin_key, json!({"amount": 1, "reason": "x"})).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_needs_csrf_for_changes_and_every_answer_has_security_headers() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let (session, csrf, _) = s.station.create_session(&s.alice, Duration::from_secs(3600)).await.unwrap();
        let cookie = format!("station_session={session}");
        // Reads need no token.
        let r = s.http.get(s.url("/api/v1/points")).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}");
        // Changes need the right token.
        let put = |token: Option<&str>| {
            let mut r = s
                .http
                .put(s.url("/api/v1/settings/resize"))
                .header("cookie", &cookie)
                // A refusal answered before its body is read ends the
                // connection (HTTP/1.1); the client must not reuse it for the
                // next request, which would then race the close (broken pipe).
                .header("connection", "close")
                .json(&json!({"params": {"width": 3}}));
            if let Some(t) = token {
                r = r.header("x-csrf-token", t);
            }
            r.send()
        };
        for token in [None, Some("wrong")] {
            let a = common::Server::answer(put(token).await.unwrap()).await;
            assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "csrf"), "{k}: {token:?}");
        }
        assert_eq!(
            s.get("/api/v1/settings/resize", &s.alice_key).await.body["params"],
            json!({}),
            "{k}: nothing saved"
        );
        let a = common::Server::answer(put(Some(&csrf)).await.unwrap()).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        // API keys need no token; an ended session is refused.
        let a = s.call(Method::DELETE, "/api/v1/settings/resize", Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}");
        s.station.end_session(&session).await.unwrap();
        let r = s.http.get(s.url("/api/v1/points")).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{k}");

        // Security headers on answers of every kind, and JSON errors for unknown API paths.
        for (m, path, key) in [
            (Method::GET, "/api/v1/tools", Some(s.alice_key.as_str())),
            (Method::GET, "/api/v1/tools", None),
            (Method::GET, "/api/v1/nothing-here", Some(s.alice_key.as_str())),
            (Method::DELETE, "/api/v1/tools", Some(s.alice_key.as_str())),
            (Method::GET, "/healthz", None),
            (Method::GET, "/api/v1/docs", None),
        ] {
            let a = s.call(m.clone(), path, key, None).await;
            let h = &a.headers;
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"), "{k}: {csp}");
            if h["content-type"].to_str().unwrap().starts_with("text/html") {
                // A page: its own scripts and styles, images also from data:/blob: URLs.
                assert!(csp.contains("default-src 'self'") && csp.contains("img-src 'self' data: blob:"), "{k}: {csp}");
                assert!(h.contains_key("referrer-policy"), "{k}: {m} {path}");
            } else {
                // Anything else opened as a document may load nothing at all.
                assert_eq!(csp, "default-src 'none'; frame-ancestors 'none'", "{k}: {m} {path}");
            }
            assert_eq!(h["x-content-type-options"], "nosniff", "{k}: {m} {path}");
            assert_eq!(h["x-frame-options"], "DENY", "{k}: {m} {path}");
            if a.status.is_client_error() {
                assert!(a.body["error"]["code"].is_string(), "{k}: {m} {path}: JSON error: {:?}", a.body);
            }
        }
        // A JSON body over the 1 MiB limit is refused.
        // The refusal comes before the body is read and ends the connection,
        // so the client may still be writing when it closes (broken pipe)
        // and never read the answer: ask again until it does.
        let big = json!({"params": {"x": "a".repeat(1_100_000)}});
        let mut answered = None;
        for _ in 0..5 {
            let sent = s
                .http
                .put(s.url("/api/v1/settings/resize"))
                .bearer_auth(&s.alice_key)
                .header("connection", "close")
                .json(&big)
                .send()
                .await;
            match sent {
                Ok(r) => {
                    answered = Some(common::Server::answer(r).await);
                    break;
                }
                Err(e) if e.is_request() => continue,
                Err(e) => panic!("{k}: {e}"),
            }
        }
        let a = answered.unwrap_or_else(|| panic!("{k}: the connection was cut before an answer five times"));
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{k}: {}", a.body);
        s.stop().await;
    }
}

/// `.route("…")` paths in the crate's sources: routes added outside the
/// documented list. Pages of the web app (not under /api) are not API routes.
fn undocumented_route_calls() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices(".route(\"") {
                    let rest = &text[i + 8..];
                    out.push(rest[..rest.find('"').unwrap()].to_string());
                }
            }
        }
    }
    let mut all = vec![];
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut all);
    all.into_iter().filter(|p| p.starts_with("/api") || p == "/healthz" || p == "/readyz").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_valid_and_lists_every_route() {
    let db = testing::sqlite().await;
    let s = serve(&db, false, |_| {}).await;
    let r = s.http.get(s.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let text = r.text().await.unwrap();
    // Parses as OpenAPI 3 with a typed parser.
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert_eq!(spec.validate_version().unwrap().major, 3);
    let doc: Value = serde_json::from_str(&text).unwrap();

    // Every $ref points at a defined schema.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = vec![];
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {r}");
    }

    // Every operation has a summary, responses and a tag; path parameters are declared.
    let ops: Vec<(String, Method)> = spec.operations().map(|(p, m, _)| (p, m)).collect();
    for (path, method, op) in spec.operations() {
        assert!(op.summary.is_some() || op.description.is_some(), "{method} {path}: undocumented");
        assert!(!op.tags.is_empty(), "{method} {path}: no tag");
        let declared = op.parameters.len();
        assert!(path.matches('{').count() <= declared, "{method} {path}: path parameters not declared");
    }
    let documented: BTreeSet<String> = ops.iter().map(|(p, _)| p.clone()).collect();

    // The issue's endpoint list, and everything routed in source, is documented.
    for must in [
        "/api/v1/tools",
        "/api/v1/tools/{id}",
        "/api/v1/generations",
        "/api/v1/generations/{id}",
        "/api/v1/generations/{id}/cancel",
        "/api/v1/generations/{id}/rerun",
        "/api/v1/generations/{id}/rating",
        "/api/v1/generations/{id}/events",
        "/api/v1/media",
        "/api/v1/media/{id}",
        "/api/v1/media/{id}/thumbnail",
        "/api/v1/points",
        "/api/v1/points/history",
        "/api/v1/points/quote",
        "/api/v1/settings/{tool}",
        "/api/v1/account",
        "/api/v1/account/keys",
        "/api/v1/account/keys/{id}",
        "/api/v1/account/link-code",
        "/api/v1/account/link",
        "/api/v1/admin/backends",
        "/api/v1/admin/queue",
        "/api/v1/admin/users",
        "/api/v1/admin/users/{id}/grant",
        "/api/v1/admin/audit",
        "/api/v1/spells",
        "/api/v1/spells/preview",
        "/api/v1/spells/{slug}",
        "/api/v1/casts",
        "/api/v1/casts/{id}",
        "/api/v1/casts/{id}/cancel",
        "/api/v1/account/webhooks",
        "/api/v1/account/webhooks/{id}",
        "/api/v1/account/webhooks/deliveries",
        "/api/v1/account/webhooks/deliveries/{id}/replay",
        "/api/v1/openapi.json",
        "/api/v1/docs",
        "/healthz",
        "/readyz",
    ] {
        assert!(documented.contains(must), "{must} is not in the OpenAPI document");
    }
    for p in undocumented_route_calls() {
        assert!(documented.contains(&p), "route {p} is added with .route() and missing from the OpenAPI document");
    }
    // The document is what the router serves: every documented operation is
    // routed (an authenticated call never gets the router's 404 or 405).
    for (path, method) in &ops {
        let concrete = path.replace("{id}", "x").replace("{tool}", "resize");
        let a = s.call(method.clone(), &concrete, Some(&s.admin_key), None).await;
        let unrouted = a.body["error"]["message"].as_str().is_some_and(|m| m.starts_with("no API endpoint"));
        assert!(
            a.status != StatusCode::METHOD_NOT_ALLOWED && !unrouted,
            "{method} {path} is documented but not routed: {} {}",
            a.status,
            a.body
        );
    }
    // The same document from the library.
    let lib: Value = serde_json::to_value(station_http::openapi()).unwrap();
    assert_eq!(lib["paths"].as_object().unwrap().len(), doc["paths"].as_object().unwrap().len());

    // The reference page: HTML that loads its script and styles from files (no inline script).
    let r = s.http.get(s.url("/api/v1/docs")).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<script src="/api/v1/docs/docs.js""#), "{html}");
    assert!(!html.contains("<script>") && !html.contains("<style>") && !html.contains("cdn"), "{html}");
    let js = s.http.get(s.url("/api/v1/docs/docs.js")).send().await.unwrap();
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(js.text().await.unwrap().contains("/api/v1/openapi.json"));
    let css = s.http.get(s.url("/api/v1/docs/docs.css")).send().await.unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    s.stop().await;
}
