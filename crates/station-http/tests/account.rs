//! The account API over real HTTP: API-key authentication (Bearer and
//! X-API-Key), refusals in the API's error shape, keys, linking, and the
//! rate limit's 429 with Retry-After — on SQLite and (when configured) PostgreSQL.

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use station_core::Role;
use station_core::{Config, Station};
use station_testkit::testing::{self, TestDb};

struct Server {
    base: String,
    station: Station,
    http: Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(db: &TestDb, requests_per_minute: u64) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.limits.requests_per_minute = requests_per_minute;
    let station = Station::with_store(config, db.store.clone()).unwrap().0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(station_http::serve(listener, station.clone(), axum::Router::new(), async move {
        let _ = stopped.await;
    }));
    Server { base, station, http: Client::new(), _dir: dir, _stop: stop }
}

impl Server {
    /// Sends a request with `auth` as a bearer key; returns status, headers and JSON body (Null when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = auth {
            r = r.bearer_auth(key);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        (status, headers, v)
    }
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("not an API error: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_authenticate_list_revoke_and_refuse_clearly() {
    for db in testing::all().await {
        let kind = db.kind;
        let s = serve(&db, 1_000).await;
        let alice = s.station.account("telegram", "42", "alice").await.unwrap();
        s.station.ensure_starting_grant(&alice.id).await.unwrap();
        let (_, key) = s.station.create_api_key(&alice, "first", None).await.unwrap();

        // No key, a wrong key, a wrong scheme: 401 with a Bearer challenge and the error shape.
        for auth in [None, Some("st_nope")] {
            let (status, headers, body) = s.call(Method::GET, "/api/v1/account", auth, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind} {auth:?}");
            assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{kind}");
            assert_eq!(error_code(&body), "unauthorized");
            assert!(body["error"]["fields"].is_array());
        }
        let basic = s.http.get(format!("{}/api/v1/account", s.base)).basic_auth("u", Some("p")).send().await.unwrap();
        assert_eq!(basic.status(), StatusCode::UNAUTHORIZED, "{kind}");

        // Who am I, with Bearer and with X-API-Key.
        let (status, _, me) = s.call(Method::GET, "/api/v1/account", Some(&key), None).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {me}");
        assert_eq!(me["id"], json!(alice.id));
        assert_eq!(me["role"], "user");
        assert_eq!(me["identities"], json!([{"provider": "telegram", "subject": "42"}]));
        assert_eq!(me["points"], json!({"balance": 100, "held": 0, "available": 100}));
        let via_header =
            s.http.get(format!("{}/api/v1/account", s.base)).header("X-API-Key", &key).send().await.unwrap();
        assert_eq!(via_header.status(), StatusCode::OK, "{kind}");

        // Create a key over HTTP: shown once, listed without its text, with last use.
        let (status, _, made) = s
            .call(Method::POST, "/api/v1/account/keys", Some(&key), Some(json!({"name": "ci", "expires_in_days": 30})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {made}");
        let second = made["key"].as_str().unwrap().to_string();
        let second_id = made["api_key"]["id"].as_str().unwrap().to_string();
        assert!(made["api_key"]["expires_at"].as_i64().unwrap() > station_core::now_ms() + 29 * 86_400_000);
        let (_, _, listed) = s.call(Method::GET, "/api/v1/account/keys", Some(&second), None).await;
        let keys = listed["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2, "{kind}: {listed}");
        assert!(!listed.to_string().contains(&second[3..]), "{kind}: a key's text was listed");
        assert!(keys.iter().all(|k| k["last_used_at"].is_i64()), "{kind}: both keys were used: {listed}");

        // Bad input names the field.
        for (body, field) in [
            (json!({}), "name"),
            (json!({"name": ""}), "name"),
            (json!({"name": "x".repeat(65)}), "name"),
            (json!({"name": "x", "expires_in_days": 0}), "expires_in_days"),
            (json!({"name": "x", "colour": "red"}), "colour"),
        ] {
            let (status, _, e) = s.call(Method::POST, "/api/v1/account/keys", Some(&key), Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {e}");
            assert_eq!((error_code(&e), e["error"]["fields"][0]["field"].as_str()), ("invalid_input", Some(field)));
        }

        // Revoke: 204, then the key answers 401 saying it was revoked; unknown ids are 404.
        let path = format!("/api/v1/account/keys/{second_id}");
        let (status, _, _) = s.call(Method::DELETE, &path, Some(&key), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}");
        let (status, _, e) = s.call(Method::GET, "/api/v1/account", Some(&second), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        assert!(e["error"]["message"].as_str().unwrap().contains("revoked"), "{kind}: {e}");
        let (status, _, e) = s.call(Method::DELETE, "/api/v1/account/keys/nope", Some(&key), None).await;
        assert_eq!((status, error_code(&e)), (StatusCode::NOT_FOUND, "not_found"), "{kind}");

        // Another account cannot revoke alice's key.
        let bob = s.station.account("telegram", "43", "bob").await.unwrap();
        let (_, bobs) = s.station.create_api_key(&bob, "b", None).await.unwrap();
        let alices_id = s.station.list_api_keys(&alice).await.unwrap()[0].id.clone();
        let (status, _, _) =
            s.call(Method::DELETE, &format!("/api/v1/account/keys/{alices_id}"), Some(&bobs), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");

        // Suspended: 403 `suspended`.
        s.station.set_account_suspended(&bob.id, true, &station_core::audit::Actor::operator("test")).await.unwrap();
        let (status, _, e) = s.call(Method::GET, "/api/v1/account", Some(&bobs), None).await;
        assert_eq!((status, error_code(&e)), (StatusCode::FORBIDDEN, "suspended"), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_over_http_joins_accounts() {
    for db in testing::all().await {
        let kind = db.kind;
        let s = serve(&db, 1_000).await;
        let tg = s.station.account("telegram", "1", "alice").await.unwrap();
        let web = s.station.account("web", "alice@example.org", "alice").await.unwrap();
        s.station.ensure_starting_grant(&tg.id).await.unwrap();
        s.station.ensure_starting_grant(&web.id).await.unwrap();
        let (_, tg_key) = s.station.create_api_key(&tg, "t", None).await.unwrap();
        let (_, web_key) = s.station.create_api_key(&web, "w", None).await.unwrap();

        let (status, _, code) = s.call(Method::POST, "/api/v1/account/link-code", Some(&tg_key), None).await;
        assert_eq!(status, StatusCode::CREATED, "{kind}: {code}");
        let code = code["code"].as_str().unwrap().to_string();

        for (body, field) in [(json!({}), "code"), (json!({"code": 5}), "code"), (json!({"code": "ZZZZZZZZ"}), "code")]
        {
            let (status, _, e) = s.call(Method::POST, "/api/v1/account/link", Some(&web_key), Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {e}");
            assert_eq!(e["error"]["fields"][0]["field"], json!(field));
        }
        let (status, _, e) =
            s.call(Method::POST, "/api/v1/account/link", Some(&tg_key), Some(json!({"code": code}))).await;
        assert_eq!((status, error_code(&e)), (StatusCode::CONFLICT, "cannot_link"), "{kind}: {e}");

        let (status, _, joined) =
            s.call(Method::POST, "/api/v1/account/link", Some(&web_key), Some(json!({"code": code}))).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {joined}");
        assert_eq!(joined["account"]["id"], json!(tg.id));
        assert_eq!(joined["account"]["points"]["balance"], json!(200), "{kind}: one balance, both grants");
        assert_eq!(joined["account"]["identities"].as_array().unwrap().len(), 2);
        // The web key now acts for the joined account.
        let (_, _, me) = s.call(Method::GET, "/api/v1/account", Some(&web_key), None).await;
        assert_eq!(me["id"], json!(tg.id), "{kind}");
        let (status, _, e) =
            s.call(Method::POST, "/api/v1/account/link", Some(&web_key), Some(json!({"code": code}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("used already"), "{e}");
        assert_eq!(s.station.audit_points().await.unwrap(), vec![], "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    for db in testing::all().await {
        let kind = db.kind;
        let s = serve(&db, 6).await; // a burst of 6, then one every 10 s
        let a = s.station.account("telegram", "9", "a").await.unwrap();
        let (_, key) = s.station.create_api_key(&a, "k", None).await.unwrap();
        for i in 0..6 {
            let (status, _, body) = s.call(Method::GET, "/api/v1/account", Some(&key), None).await;
            assert_eq!(status, StatusCode::OK, "{kind}: request {i}: {body}");
        }
        let (status, headers, e) = s.call(Method::GET, "/api/v1/account/keys", Some(&key), None).await;
        assert_eq!((status, error_code(&e)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"), "{kind}");
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((9..=10).contains(&retry), "{kind}: Retry-After {retry}");
        assert!(e["error"]["message"].as_str().unwrap().contains(&format!("{retry} s")), "{e}");
        // Another account is not affected; an administrator is never limited.
        let b = s.station.account("telegram", "10", "b").await.unwrap();
        let (_, bkey) = s.station.create_api_key(&b, "k", None).await.unwrap();
        assert_eq!(s.call(Method::GET, "/api/v1/account", Some(&bkey), None).await.0, StatusCode::OK);
        s.station.set_account_role(&a.id, Role::Admin, &station_core::audit::Actor::operator("test")).await.unwrap();
        for _ in 0..10 {
            assert_eq!(s.call(Method::GET, "/api/v1/account", Some(&key), None).await.0, StatusCode::OK, "{kind}");
        }
    }
}
