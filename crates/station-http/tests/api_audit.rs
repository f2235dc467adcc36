//! `GET /api/v1/admin/audit` over real HTTP on SQLite and PostgreSQL: a
//! grant made through the API and a suspension made at the command line
//! (the core with an operator actor) are listed newest first with who did
//! them and through which door; filters and paging work; only
//! administrators may read it.

mod common;

use common::serve;
use reqwest::StatusCode;
use serde_json::json;
use station_core::audit::Actor;
use station_testkit::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_read_who_did_what_through_which_door() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let grant = s
            .post(
                &format!("/api/v1/admin/users/{}/grant", s.alice.id),
                &s.admin_key,
                json!({"amount": 15, "reason": "bug report", "idempotency_key": "bug-7"}),
            )
            .await;
        assert_eq!(grant.status, StatusCode::OK, "{k}: {}", grant.body);
        // Retried: applied once, listed once.
        s.post(
            &format!("/api/v1/admin/users/{}/grant", s.alice.id),
            &s.admin_key,
            json!({"amount": 15, "reason": "bug report", "idempotency_key": "bug-7"}),
        )
        .await;
        s.station.set_account_suspended(&s.bob.id, true, &Actor::operator("ops")).await.unwrap();

        let a = s.get("/api/v1/admin/audit", &s.admin_key).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        let items = a.body["items"].as_array().unwrap();
        // The test server made the admin an admin first (operator "test").
        let seen: Vec<(&str, &str, &str, &str)> = items
            .iter()
            .map(|i| {
                (
                    i["action"].as_str().unwrap(),
                    i["via"].as_str().unwrap(),
                    i["actor"].as_str().unwrap(),
                    i["target"].as_str().unwrap(),
                )
            })
            .collect();
        let admin = format!("account:{}", s.admin.id);
        assert_eq!(
            seen,
            vec![
                ("account.suspend", "cli", "operator:ops", s.bob.id.as_str()),
                ("points.grant", "api", admin.as_str(), s.alice.id.as_str()),
                ("account.role", "cli", "operator:test", s.admin.id.as_str()),
            ],
            "{k}"
        );
        assert_eq!(items[1]["summary"], "granted points", "{k}");
        assert_eq!(items[1]["detail"], "15 points to alice: bug report", "{k}");
        assert!(a.body["next"].is_null(), "{k}: one page");

        // Filters and paging.
        let p = s.get("/api/v1/admin/audit?action=points.", &s.admin_key).await;
        assert_eq!(p.body["items"].as_array().unwrap().len(), 1, "{k}: {}", p.body);
        let one = s.get("/api/v1/admin/audit?limit=1", &s.admin_key).await;
        let next = one.body["next"].as_i64().expect("a next page");
        let older = s.get(&format!("/api/v1/admin/audit?limit=5&before={next}"), &s.admin_key).await;
        let older: Vec<&str> =
            older.body["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
        assert_eq!(older, ["points.grant", "account.role"], "{k}");
        let bad = s.get("/api/v1/admin/audit?limit=0", &s.admin_key).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{k}: {}", bad.body);

        // Users may not read it.
        let r = s.get("/api/v1/admin/audit", &s.alice_key).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"), "{k}");
        s.stop().await;
    }
}
