//! Issue 17 over real HTTP, on SQLite and PostgreSQL: hidden tools do not
//! exist for members (item 10), and overflowing grants are refused with
//! nothing written (item 5).

mod common;

use common::serve;
use reqwest::StatusCode;
use serde_json::json;
use station_testkit::testing;

/// Item 10: a tool with visibility `hidden` (the built-in templates) is, for
/// a member, exactly a tool that does not exist — by id or by command, to
/// read, quote or submit — and nothing is queued. Administrators may use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_tools_are_unknown_to_members() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let missing = s.get("/api/v1/tools/no-such-tool", &s.alice_key).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{k}");
        for id in ["txt2img-sdxl", "sdxl", "upscale-model"] {
            let a = s.get(&format!("/api/v1/tools/{id}"), &s.alice_key).await;
            assert_eq!((a.status, a.code()), (missing.status, missing.code()), "{k} {id}: {}", a.body);
            let a = s.get(&format!("/api/v1/settings/{id}"), &s.alice_key).await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{k} {id}: {}", a.body);
        }
        let params = json!({"prompt": "a lighthouse"});
        for (path, extra) in [("/api/v1/generations", json!({"confirmed": true})), ("/api/v1/points/quote", json!({}))]
        {
            let unknown = {
                let mut body = json!({"tool": "no-such-tool", "params": params});
                body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
                s.post(path, &s.alice_key, body).await
            };
            // Item 10: hidden means "404 unknown tool", as for a tool that does not exist.
            assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{k} {path}: {}", unknown.body);
            assert_eq!(unknown.code(), "unknown_tool", "{k} {path}: {}", unknown.body);
            for tool in ["txt2img-sdxl", "sdxl", "/sdxl", "txt2img-sd15", "flux", "img2img"] {
                let mut body = json!({"tool": tool, "params": params});
                body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
                let a = s.post(path, &s.alice_key, body).await;
                assert_eq!(
                    (a.status, a.code(), a.fields()),
                    (unknown.status, unknown.code(), unknown.fields()),
                    "{k} {path} {tool}: answered like a missing tool? {}",
                    a.body
                );
                assert!(a.body["error"]["message"].as_str().unwrap().contains("unknown tool"), "{k}: {}", a.body);
            }
        }
        let jobs = s.store.list_jobs(&station_testkit::store::JobFilter { limit: 10, ..Default::default() }).await;
        assert!(jobs.unwrap().is_empty(), "{k}: nothing was queued");
        // An administrator still sees and prices the template.
        assert_eq!(s.get("/api/v1/tools/txt2img-sdxl", &s.admin_key).await.status, StatusCode::OK, "{k}");
        let q = s.post("/api/v1/points/quote", &s.admin_key, json!({"tool": "sdxl", "params": params})).await;
        assert_eq!(q.status, StatusCode::OK, "{k}: {}", q.body);
        s.stop().await;
    }
}

/// Item 5: an admin grant of 2^63−1 (or anything over `points.max_amount`)
/// is a 400 naming `amount`, with no ledger row; balances, the users list
/// and the audit keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_grants_are_refused_with_nothing_written() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let path = format!("/api/v1/admin/users/{}/grant", s.alice.id);
        let before = s.station.ledger_history(&s.alice.id, None, 100).await.unwrap().len();
        for amount in [i64::MAX, 1_000_000_000_001] {
            let a = s.post(&path, &s.admin_key, json!({"amount": amount, "reason": "overflow"})).await;
            assert_eq!(
                (a.status, a.fields()),
                (StatusCode::BAD_REQUEST, vec!["amount".to_string()]),
                "{k}: {}",
                a.body
            );
            assert!(a.body["error"]["message"].as_str().unwrap().contains("points.max_amount"), "{k}: {}", a.body);
        }
        assert_eq!(s.station.ledger_history(&s.alice.id, None, 100).await.unwrap().len(), before, "{k}");
        assert_eq!(s.get("/api/v1/points", &s.alice_key).await.body["balance"], 100, "{k}");
        assert_eq!(s.get("/api/v1/points", &s.bob_key).await.status, StatusCode::OK, "{k}");
        let users = s.get("/api/v1/admin/users", &s.admin_key).await;
        assert_eq!(users.status, StatusCode::OK, "{k}: {}", users.body);
        assert!(s.station.audit_points().await.unwrap().is_empty(), "{k}");
        let a = s.post(&path, &s.admin_key, json!({"amount": 1_000_000_000_000_i64, "reason": "the most"})).await;
        assert_eq!((a.status, &a.body["balance"]), (StatusCode::OK, &json!(1_000_000_000_100_i64)), "{k}: {}", a.body);
        s.stop().await;
        // With the bound raised to the top, the balance's own limit refuses.
        let s = serve(&db, false, |c| c.points.max_amount = u64::MAX).await;
        let before = s.station.ledger_history(&s.alice.id, None, 100).await.unwrap().len();
        let a = s.post(&path, &s.admin_key, json!({"amount": i64::MAX, "reason": "overflow"})).await;
        assert_eq!((a.status, a.fields()), (StatusCode::BAD_REQUEST, vec!["amount".to_string()]), "{k}: {}", a.body);
        assert_eq!(s.station.ledger_history(&s.alice.id, None, 100).await.unwrap().len(), before, "{k}");
        assert_eq!(s.get("/api/v1/admin/users", &s.admin_key).await.status, StatusCode::OK, "{k}");
        assert!(s.station.audit_points().await.unwrap().is_empty(), "{k}");
        s.stop().await;
    }
}
