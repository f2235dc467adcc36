//! Feature flags over real HTTP on SQLite and PostgreSQL (issue 27 item 2):
//! an administrator switches a tool off for everyone but one account, and a
//! platform off for members; members see the tool vanish from lists and
//! lookups and get a clear refusal on the switched-off door; bad rules are
//! refused naming each field; only administrators manage flags; every
//! change is in the audit log.

mod common;

use common::serve;
use reqwest::{Method, StatusCode};
use serde_json::json;
use station_testkit::testing;

fn tool_ids(body: &serde_json::Value) -> Vec<String> {
    body["tools"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_switch_tools_and_platforms_per_account() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        assert!(tool_ids(&s.get("/api/v1/tools", &s.alice_key).await.body).contains(&"resize".to_string()), "{k}");

        // Off for everyone but Bob.
        let set = s
            .call(
                Method::PUT,
                "/api/v1/admin/flags/tool.resize",
                Some(&s.admin_key),
                Some(
                    json!({"state": "some", "accounts": [s.bob.id], "description": "new resizer, Bob tries it first"}),
                ),
            )
            .await;
        assert_eq!(set.status, StatusCode::OK, "{k}: {}", set.body);
        assert_eq!(set.body["summary"], "on for 1 listed account", "{k}");
        assert_eq!(set.body["switches"], "the tool Resize", "{k}");

        let alice = tool_ids(&s.get("/api/v1/tools", &s.alice_key).await.body);
        assert!(!alice.contains(&"resize".to_string()), "{k}: {alice:?}");
        let bob = tool_ids(&s.get("/api/v1/tools", &s.bob_key).await.body);
        assert!(bob.contains(&"resize".to_string()), "{k}: {bob:?}");
        // Administrators are not exempt: they see what the flag says (they are not listed).
        let admin = tool_ids(&s.get("/api/v1/tools", &s.admin_key).await.body);
        assert!(!admin.contains(&"resize".to_string()), "{k}: {admin:?}");
        let one = s.get("/api/v1/tools/resize", &s.alice_key).await;
        assert_eq!(one.status, StatusCode::NOT_FOUND, "{k}: {}", one.body);
        // Submitting it is refused as an unknown tool, before anything is stored.
        let png = common::png(8, 8);
        let up = s.upload(&s.alice_key, png, "a.png").await;
        let media = format!("media:{}", up.body["id"].as_str().unwrap());
        let sub = s
            .post(
                "/api/v1/generations",
                &s.alice_key,
                json!({"tool": "resize", "params": {"image": media, "width": 4}}),
            )
            .await;
        assert_eq!((sub.status, sub.code()), (StatusCode::NOT_FOUND, "unknown_tool"), "{k}: {}", sub.body);

        // The API switched off for members; administrators keep it.
        let off = s
            .call(
                Method::PUT,
                "/api/v1/admin/flags/platform.api",
                Some(&s.admin_key),
                Some(json!({"state": "some", "admins": true})),
            )
            .await;
        assert_eq!(off.status, StatusCode::OK, "{k}: {}", off.body);
        let refused = s.get("/api/v1/tools", &s.alice_key).await;
        assert_eq!((refused.status, refused.code()), (StatusCode::FORBIDDEN, "platform_off"), "{k}: {}", refused.body);
        assert!(
            refused.body["error"]["message"].as_str().unwrap_or_default().contains("The API is switched off"),
            "{k}: {}",
            refused.body
        );
        assert_eq!(s.get("/api/v1/admin/flags", &s.admin_key).await.status, StatusCode::OK, "{k}");

        // Bad rules: every field named at once; members may not manage flags.
        let bad = s
            .call(
                Method::PUT,
                "/api/v1/admin/flags/Bad%20Name",
                Some(&s.admin_key),
                Some(json!({"state": "some", "percent": 150, "platforms": "telegram"})),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{k}: {}", bad.body);
        assert_eq!(bad.fields(), ["percent", "platforms"], "{k}: {}", bad.body);
        let bad = s
            .call(Method::PUT, "/api/v1/admin/flags/Bad%20Name", Some(&s.admin_key), Some(json!({"state": "some"})))
            .await;
        assert_eq!(bad.fields(), ["name", "state"], "{k}: {}", bad.body);
        let unknown_account = s
            .call(
                Method::PUT,
                "/api/v1/admin/flags/training",
                Some(&s.admin_key),
                Some(json!({"state": "some", "accounts": ["nobody"]})),
            )
            .await;
        assert_eq!(unknown_account.fields(), ["accounts"], "{k}: {}", unknown_account.body);

        // Removing the API flag opens the door again; the tool flag stays.
        let del = s.call(Method::DELETE, "/api/v1/admin/flags/platform.api", Some(&s.admin_key), None).await;
        assert_eq!(del.status, StatusCode::NO_CONTENT, "{k}: {}", del.body);
        let again = s.call(Method::DELETE, "/api/v1/admin/flags/platform.api", Some(&s.admin_key), None).await;
        assert_eq!(again.status, StatusCode::NOT_FOUND, "{k}");
        let member = s
            .call(Method::PUT, "/api/v1/admin/flags/training", Some(&s.alice_key), Some(json!({"state": "off"})))
            .await;
        assert_eq!(member.status, StatusCode::FORBIDDEN, "{k}");

        // A feature off for everyone shows in the caller's own view.
        s.call(Method::PUT, "/api/v1/admin/flags/training", Some(&s.admin_key), Some(json!({"state": "off"}))).await;
        let mine = s.get("/api/v1/flags", &s.alice_key).await;
        assert_eq!(mine.status, StatusCode::OK, "{k}: {}", mine.body);
        let training =
            mine.body["features"].as_array().unwrap().iter().find(|f| f["name"] == "training").unwrap().clone();
        assert_eq!(training["on"], false, "{k}: {}", mine.body);
        let spells = mine.body["features"].as_array().unwrap().iter().find(|f| f["name"] == "spells").unwrap().clone();
        assert_eq!(spells["on"], true, "{k}: a feature without a flag is on");

        let list = s.get("/api/v1/admin/flags", &s.admin_key).await;
        let names: Vec<&str> =
            list.body["flags"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["tool.resize", "training"], "{k}");

        let audit = s.get("/api/v1/admin/audit?action=flag.", &s.admin_key).await;
        let actions: Vec<(&str, &str)> = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["action"].as_str().unwrap(), i["target"].as_str().unwrap()))
            .collect();
        assert_eq!(
            actions,
            [
                ("flag.set", "training"),
                ("flag.unset", "platform.api"),
                ("flag.set", "platform.api"),
                ("flag.set", "tool.resize")
            ],
            "{k}"
        );
        s.stop().await;
    }
}
