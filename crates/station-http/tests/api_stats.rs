//! `GET /api/v1/admin/stats` over real HTTP on SQLite and PostgreSQL
//! (issue 27 item 3): after known work — two resizes that ran, a job
//! cancelled while it waited, a grant — the report counts them by day,
//! tool and platform, sums the points spent and granted, ranks the
//! accounts, and exports the same as CSV; bad periods are refused naming
//! the field; members may not read it.

mod common;

use common::serve;
use reqwest::{Method, StatusCode};
use serde_json::json;
use station_testkit::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_known_work() {
    for db in testing::all().await {
        let s = serve(&db, true, |_| {}).await;
        let k = s.kind;
        let media = s.upload(&s.alice_key, common::png(16, 16), "a.png").await.body["id"].as_str().unwrap().to_string();
        let media = format!("media:{media}");
        for width in [8, 4] {
            let c = s
                .post(
                    "/api/v1/generations",
                    &s.alice_key,
                    json!({"tool": "resize", "params": {"image": media, "width": width}}),
                )
                .await;
            assert_eq!(c.status, StatusCode::CREATED, "{k}: {}", c.body);
            let done = s.wait(&s.alice_key, c.body["id"].as_str().unwrap()).await;
            assert_eq!(done["status"], "succeeded", "{k}: {done}");
        }
        // No ComfyUI backend: Bob's invert waits, and he cancels it.
        let bob_media =
            format!("media:{}", s.upload(&s.bob_key, common::png(8, 8), "b.png").await.body["id"].as_str().unwrap());
        let c =
            s.post("/api/v1/generations", &s.bob_key, json!({"tool": "invert", "params": {"image": bob_media}})).await;
        assert_eq!(c.status, StatusCode::CREATED, "{k}: {}", c.body);
        let id = c.body["id"].as_str().unwrap().to_string();
        let cancel = s.call(Method::POST, &format!("/api/v1/generations/{id}/cancel"), Some(&s.bob_key), None).await;
        assert_eq!(cancel.status, StatusCode::OK, "{k}: {}", cancel.body);
        let g = s
            .post(
                &format!("/api/v1/admin/users/{}/grant", s.bob.id),
                &s.admin_key,
                json!({"amount": 30, "reason": "sorry"}),
            )
            .await;
        assert_eq!(g.status, StatusCode::OK, "{k}: {}", g.body);

        let r = s.get("/api/v1/admin/stats?days=7", &s.admin_key).await;
        assert_eq!(r.status, StatusCode::OK, "{k}: {}", r.body);
        let b = &r.body;
        assert_eq!(b["total"]["jobs"], 3, "{k}: {b}");
        assert_eq!(b["total"]["succeeded"], 2, "{k}: {b}");
        assert_eq!(b["total"]["cancelled"], 1, "{k}: {b}");
        assert_eq!(b["total"]["failed"], 0, "{k}: {b}");
        assert!(b["total"]["avg_run_ms"].is_i64(), "{k}: two jobs ran: {b}");
        assert_eq!(b["points_spent"], 2, "{k}: two resizes at 1 point: {b}");
        // The starting grants of the three test accounts, then the admin's grant.
        let starting = s.station.config.points.starting_grant as i64;
        assert_eq!(b["points_granted"], 3 * starting + 30, "{k}: {b}");
        let days = b["days"].as_array().unwrap();
        assert_eq!(days.len(), 7, "{k}: today and the six days before");
        assert_eq!(days[6]["jobs"], 3, "{k}: today holds the work: {b}");
        assert_eq!(days[6]["points_spent"], 2, "{k}");
        assert_eq!(days[0]["jobs"], 0, "{k}: an empty day is still listed");
        let tools: Vec<(&str, &str, i64)> = b["by_tool"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["key"].as_str().unwrap(), t["label"].as_str().unwrap(), t["jobs"].as_i64().unwrap()))
            .collect();
        assert_eq!(tools, [("resize", "Resize", 2), ("invert", "Invert colours", 1)], "{k}");
        assert_eq!(b["by_platform"][0]["key"], "api", "{k}: jobs made through the API: {b}");
        let top = &b["top_accounts"][0];
        assert_eq!(
            (top["name"].as_str(), top["jobs"].as_i64(), top["points_spent"].as_i64()),
            (Some("alice"), Some(2), Some(2)),
            "{k}: {b}"
        );
        assert!(b["failures"].as_array().unwrap().is_empty(), "{k}");

        let csv =
            s.http.get(s.url("/api/v1/admin/stats?days=2&format=csv")).bearer_auth(&s.admin_key).send().await.unwrap();
        assert_eq!(csv.status(), StatusCode::OK, "{k}");
        assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8", "{k}");
        assert!(
            csv.headers()["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"station-stats-"),
            "{k}"
        );
        let text = csv.text().await.unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "section,key,label,jobs,succeeded,failed,cancelled,avg_wait_ms,avg_run_ms,points_spent,points_granted",
            "{k}"
        );
        assert!(lines[2].starts_with("day,") && lines[2].contains(",3,2,0,1,"), "{k}: {text}");
        assert!(lines.iter().any(|l| l.starts_with("tool,resize,Resize,2,2,0,0,")), "{k}: {text}");
        assert!(lines.iter().any(|l| l.starts_with("platform,api,api,3,")), "{k}: {text}");

        for (q, field) in [
            ("days=0", "days"),
            ("days=7&since=1", "since"),
            ("format=xml", "format"),
            ("since=99999999999999", "since"),
        ] {
            let bad = s.get(&format!("/api/v1/admin/stats?{q}"), &s.admin_key).await;
            assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{k} {q}: {}", bad.body);
            assert_eq!(bad.fields(), [field], "{k} {q}: {}", bad.body);
        }
        let member = s.get("/api/v1/admin/stats", &s.alice_key).await;
        assert_eq!(member.status, StatusCode::FORBIDDEN, "{k}");
        s.stop().await;
    }
}
