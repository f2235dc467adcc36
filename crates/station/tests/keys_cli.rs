//! `station keys …` and `station users link-code` through the real binary: a
//! key made on the command line authenticates in the core, is listed without
//! its text, and stops working once revoked. Runs on SQLite, and on
//! PostgreSQL when `STATION_TEST_POSTGRES_URL` is set.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::cli::expect;
use serde_json::Value;
use station_core::identity::AuthError;
use station_core::{Config, Station};
use station_testkit::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_list_revoke_and_link_code() {
    for db in testing::all().await {
        let kind = db.kind;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        expect(dir, &db, &["users", "create", "alice"], 0);

        let (key, note) = expect(dir, &db, &["keys", "create", "--user", "alice", "--name", "laptop"], 0);
        let key = key.trim().to_string();
        assert!(key.starts_with("st_") && key.len() == 46, "{kind}: stdout is the key alone: {key:?}");
        assert!(note.contains("not shown again"), "{kind}: {note}");
        let (expiring, _) =
            expect(dir, &db, &["keys", "create", "--user", "local:alice", "--name", "ci", "--expires-days", "7"], 0);

        // The key works in the core (same database), which records its use.
        let config = Config { data_dir: dir.join("data"), ..Default::default() };
        let st = Station::with_store(config, db.store.clone()).unwrap().0;
        let alice = st.authenticate_api_key(&key).await.unwrap();
        assert_eq!(alice.name, "alice", "{kind}");

        let (listed, _) = expect(dir, &db, &["keys", "list", "--user", "alice", "--json"], 0);
        let listed: Value = serde_json::from_str(&listed).unwrap();
        let keys = listed.as_array().unwrap();
        assert_eq!(keys.len(), 2, "{kind}: {listed}");
        assert_eq!((keys[0]["name"].as_str(), keys[1]["name"].as_str()), (Some("laptop"), Some("ci")));
        assert!(keys[0]["last_used_at"].is_i64() && keys[1]["last_used_at"].is_null(), "{kind}: {listed}");
        assert!(keys[1]["expires_at"].as_i64().unwrap() > station_core::now_ms() + 6 * 86_400_000, "{kind}");
        assert!(!listed.to_string().contains(&key[3..]) && !listed.to_string().contains(&expiring.trim()[3..]));
        let (table, _) = expect(dir, &db, &["keys", "list", "--user", "alice"], 0);
        assert!(table.contains("laptop") && table.contains(&key[..11]) && table.contains("active"), "{table}");

        let id = keys[0]["id"].as_str().unwrap();
        let (out, _) = expect(dir, &db, &["keys", "revoke", "--user", "alice", id], 0);
        assert!(out.contains("revoked"), "{kind}: {out}");
        // This core checked the key a moment ago and trusts that answer for
        // `limits.auth_cache_ms`; the revocation came from another process
        // (announced over NOTIFY on PostgreSQL, nothing to hear on SQLite), so
        // the TTL is the bound: refused within it, never later.
        let ttl = std::time::Duration::from_millis(st.config.limits.auth_cache_ms);
        let deadline = std::time::Instant::now() + ttl + std::time::Duration::from_secs(2);
        loop {
            match st.authenticate_api_key(&key).await {
                Err(AuthError::Revoked(_)) => break,
                other => assert!(std::time::Instant::now() < deadline, "{kind}: still {other:?} after the TTL"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (table, _) = expect(dir, &db, &["keys", "list", "--user", "alice"], 0);
        assert!(table.contains("revoked"), "{kind}: {table}");

        // Mistakes are usage errors that say what to do.
        let (_, err) = expect(dir, &db, &["keys", "revoke", "--user", "alice", "nope"], 2);
        assert!(err.contains("station keys list"), "{kind}: {err}");
        let (_, err) = expect(dir, &db, &["keys", "create", "--user", "alice", "--name", " "], 2);
        assert!(err.contains("--name"), "{kind}: {err}");
        let (_, err) = expect(dir, &db, &["keys", "list", "--user", "nobody"], 2);
        assert!(err.contains("no account"), "{kind}: {err}");

        // A link code from the command line joins another platform's account into alice's.
        let (code, note) = expect(dir, &db, &["users", "link-code", "--user", "alice"], 0);
        assert!(note.contains("10 minutes"), "{kind}: {note}");
        let tg = st.account("telegram", "5", "alice-tg").await.unwrap();
        let joined = st.redeem_link_code(&tg, code.trim()).await.unwrap();
        assert_eq!(joined.id, alice.id, "{kind}");
        let (shown, _) = expect(dir, &db, &["users", "show", "telegram:5"], 0);
        assert!(shown.contains(&alice.id) && shown.contains("local:alice"), "{kind}: {shown}");
    }
}
