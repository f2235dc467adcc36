//! Cached authentication over real HTTP: a credential the process has just
//! checked is trusted for `limits.auth_cache_ms` without a database read,
//! yet revoking a key, signing out, suspending, changing a role or merging
//! accounts applies to the very next request — on SQLite and PostgreSQL —
//! and, on PostgreSQL, reaches another Station process through
//! LISTEN/NOTIFY. Also: the cached tool list follows tool reloads and roles.

mod common;

use station_core::Role;
use std::time::{Duration, Instant};

use common::serve;
use reqwest::{Method, StatusCode};
use serde_json::json;
use station_core::{Config, Station};
use station_testkit::{Store, testing};

/// Long enough that only an invalidation can explain a refusal within a test.
const LONG_TTL_MS: u64 = 600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_sign_out_suspension_role_and_merge_apply_to_the_next_request() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| c.limits.auth_cache_ms = LONG_TTL_MS).await;
        let k = s.kind;

        // A second key of alice's, used (so cached), then revoked over HTTP with the first.
        let made = s.post("/api/v1/account/keys", &s.alice_key, json!({"name": "second"})).await;
        assert_eq!(made.status, StatusCode::CREATED, "{k}: {}", made.body);
        let second = made.body["key"].as_str().unwrap().to_string();
        let second_id = made.body["api_key"]["id"].as_str().unwrap().to_string();
        assert_eq!(s.get("/api/v1/tools", &second).await.status, StatusCode::OK, "{k}");
        assert_eq!(s.get("/api/v1/tools", &second).await.status, StatusCode::OK, "{k}: from the cache");
        let a = s.call(Method::DELETE, &format!("/api/v1/account/keys/{second_id}"), Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}");
        let a = s.get("/api/v1/tools", &second).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{k}: revoked key refused at once"
        );
        assert!(a.body["error"]["message"].as_str().unwrap().contains("revoked"), "{k}: {}", a.body);
        assert_eq!(s.get("/api/v1/tools", &s.alice_key).await.status, StatusCode::OK, "{k}: other keys still work");

        // A web session, used, then signed out: refused at once.
        let (sid, _, _) = s.station.create_session(&s.alice, Duration::from_secs(3600)).await.unwrap();
        let cookie = format!("station_session={sid}");
        let with_cookie = || s.http.get(s.url("/api/v1/account")).header("cookie", &cookie).send();
        assert_eq!(with_cookie().await.unwrap().status(), StatusCode::OK, "{k}");
        assert!(s.station.end_session(&sid).await.unwrap());
        assert_eq!(with_cookie().await.unwrap().status(), StatusCode::UNAUTHORIZED, "{k}: signed-out session");

        // Suspension: the key and a session are refused at once; reinstating lets them in at once.
        let (bob_sid, _, _) = s.station.create_session(&s.bob, Duration::from_secs(3600)).await.unwrap();
        let bob_cookie = format!("station_session={bob_sid}");
        let bob_session = || s.http.get(s.url("/api/v1/account")).header("cookie", &bob_cookie).send();
        assert_eq!(s.get("/api/v1/account", &s.bob_key).await.status, StatusCode::OK, "{k}");
        assert_eq!(bob_session().await.unwrap().status(), StatusCode::OK, "{k}");
        assert!(
            s.station
                .set_account_suspended(&s.bob.id, true, &station_core::audit::Actor::operator("test"))
                .await
                .unwrap()
        );
        let a = s.get("/api/v1/account", &s.bob_key).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "suspended"), "{k}: suspended key");
        assert_eq!(bob_session().await.unwrap().status(), StatusCode::FORBIDDEN, "{k}: suspended session");
        s.station.set_account_suspended(&s.bob.id, false, &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!(s.get("/api/v1/account", &s.bob_key).await.status, StatusCode::OK, "{k}: reinstated");

        // Role changes: promoted and demoted between two requests.
        assert_eq!(s.get("/api/v1/admin/queue", &s.bob_key).await.status, StatusCode::FORBIDDEN, "{k}");
        s.station
            .set_account_role(&s.bob.id, Role::Admin, &station_core::audit::Actor::operator("test"))
            .await
            .unwrap();
        assert_eq!(s.get("/api/v1/admin/queue", &s.bob_key).await.status, StatusCode::OK, "{k}: promoted");
        s.station.set_account_role(&s.bob.id, Role::User, &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!(s.get("/api/v1/admin/queue", &s.bob_key).await.status, StatusCode::FORBIDDEN, "{k}: demoted");

        // Merge: bob joins alice's account; bob's cached key speaks for alice on the next request.
        assert_eq!(s.get("/api/v1/account", &s.bob_key).await.body["id"], json!(s.bob.id), "{k}");
        let code = s.post("/api/v1/account/link-code", &s.alice_key, json!({})).await;
        assert_eq!(code.status, StatusCode::CREATED, "{k}: {}", code.body);
        let a = s.post("/api/v1/account/link", &s.bob_key, json!({"code": code.body["code"]})).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        let me = s.get("/api/v1/account", &s.bob_key).await;
        assert_eq!((me.status, &me.body["id"]), (StatusCode::OK, &json!(s.alice.id)), "{k}: {}", me.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_announcement_the_ttl_bounds_how_long_a_key_is_trusted() {
    for db in testing::all().await {
        let s = serve(&db, false, |c| c.limits.auth_cache_ms = 300).await;
        let k = s.kind;
        assert_eq!(s.get("/api/v1/tools", &s.alice_key).await.status, StatusCode::OK, "{k}");
        // A change nobody announces (as if made by hand in the database).
        let key_id = s.station.list_api_keys(&s.alice).await.unwrap()[0].id.clone();
        assert!(s.store.revoke_api_key(&key_id, None, station_core::now_ms()).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let a = s.get("/api/v1/tools", &s.alice_key).await;
            if a.status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
            assert!(Instant::now() < deadline, "{k}: the revoked key was still accepted after 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_by_another_process_is_refused_within_a_bounded_wait() {
    let Some(db) = testing::postgres().await else { return };
    // Process A serves HTTP and trusts keys for 10 minutes unless told otherwise.
    let s = serve(&db, false, |c| c.limits.auth_cache_ms = LONG_TTL_MS).await;
    let mut served = s.station.clone();
    served.join_processes().await.unwrap();
    assert!(served.auth_cache.is_shared() && s.station.auth_cache.is_shared(), "the served station listens");

    // Process B: its own pool on the same schema, its own Station.
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    let mut other = Station::with_store(config, Store::connect(&db.url).await.unwrap()).unwrap().0;
    other.join_processes().await.unwrap();

    for (what, key) in [("revoked key", s.alice_key.clone()), ("suspended account", s.bob_key.clone())] {
        assert_eq!(s.get("/api/v1/tools", &key).await.status, StatusCode::OK, "{what}: cached in A");
        match what {
            "revoked key" => {
                let alice = other.account_by_id(&s.alice.id).await.unwrap().unwrap();
                let id = other.list_api_keys(&alice).await.unwrap()[0].id.clone();
                assert!(other.revoke_api_key(&alice, &id).await.unwrap());
            }
            _ => assert!(
                other
                    .set_account_suspended(&s.bob.id, true, &station_core::audit::Actor::operator("test"))
                    .await
                    .unwrap()
            ),
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        loop {
            let a = s.get("/api/v1/tools", &key).await;
            if a.status != StatusCode::OK {
                assert!(matches!(a.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), "{what}: {}", a.body);
                break;
            }
            assert!(Instant::now() < deadline, "{what}: still accepted by process A 10 s after B's change");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("{what}: refused by the other process after {:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cached_tool_list_follows_reloads_and_roles() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let ids = |body: &serde_json::Value| -> Vec<String> {
            body["tools"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
        };
        let before = s.get("/api/v1/tools", &s.alice_key).await;
        assert_eq!(before.headers["content-type"], "application/json", "{k}");
        assert!(!ids(&before.body).contains(&"shrink-admin".to_string()), "{k}");

        // Two tools appear in the folder: one public, one for administrators.
        let dir = s.station.config.tools_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let resize = include_str!("../../station-tools/builtin/resize.json");
        for (id, visibility) in [("shrink-public", "public"), ("shrink-admin", "admin")] {
            let text = resize
                .replacen("\"id\": \"resize\"", &format!("\"id\": \"{id}\""), 1)
                .replacen("\"name\": \"Resize\"", &format!("\"name\": \"{id}\""), 1)
                .replacen("\"visibility\": \"public\"", &format!("\"visibility\": \"{visibility}\""), 1);
            std::fs::write(dir.join(format!("{id}.json")), text).unwrap();
        }
        let generation = s.station.tools.generation();
        assert!(s.station.tools.reload().is_empty(), "{k}: the tool files load");
        assert!(s.station.tools.generation() > generation);

        let user = ids(&s.get("/api/v1/tools", &s.alice_key).await.body);
        assert!(user.contains(&"shrink-public".to_string()), "{k}: {user:?}");
        assert!(!user.contains(&"shrink-admin".to_string()), "{k}: users never see admin tools: {user:?}");
        let admin = ids(&s.get("/api/v1/tools", &s.admin_key).await.body);
        assert!(admin.contains(&"shrink-public".to_string()) && admin.contains(&"shrink-admin".to_string()), "{k}");
        // The user's cached answer did not leak into the admin's or back.
        let user_again = ids(&s.get("/api/v1/tools", &s.alice_key).await.body);
        assert_eq!(user, user_again, "{k}");
    }
}
