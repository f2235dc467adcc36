//! Cook over real HTTP on SQLite and PostgreSQL (issue 24, items 4–7): a
//! recipe refused field by field, then saved; a cook started, paused,
//! resumed and finished by the server's workers; review claims that two
//! reviewers never share; decisions, cull, trait statistics and the NFT
//! export's ZIP.

mod common;

use std::collections::HashSet;
use std::io::Read as _;
use std::time::Duration;

use common::{Server, png, serve};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use station_testkit::testing;

async fn wait_cook(s: &Server, key: &str, cid: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a = s.get(&format!("/api/v1/collections/{cid}/cook"), key).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        if a.body["status"] == status {
            return a.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "cook never {status}: {}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cook_review_cull_and_export_over_http() {
    for db in testing::all().await {
        let s = serve(&db, true, |_| {}).await;
        let k = s.kind;
        let up = s.upload(&s.alice_key, png(32, 24), "base.png").await;
        assert_eq!(up.status, StatusCode::CREATED, "{}", up.body);
        let image = up.body["ref"].as_str().unwrap().to_owned();
        let a = s.post("/api/v1/collections", &s.alice_key, json!({"name": "Marks"})).await;
        let cid = a.body["id"].as_str().unwrap().to_owned();
        let recipe_path = format!("/api/v1/collections/{cid}/recipe");

        // Refused, every field named; nothing stored.
        let bad = json!({
            "tool": "watermark", "supply": 0,
            "params": {"image": image, "text": "[[Mood]]"},
            "categories": [{"name": "Tone", "traits": [{"name": "Warm", "weight": -2}]}],
        });
        let a = s.call(Method::PUT, &recipe_path, Some(&s.alice_key), Some(bad)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert_eq!(a.fields(), ["supply", "categories[0].traits[0].weight", "params.text"], "{k}");
        assert_eq!(s.get(&recipe_path, &s.alice_key).await.status, StatusCode::NOT_FOUND, "{k}");

        let recipe = json!({
            "tool": "watermark", "supply": 6,
            "params": {"image": image, "text": "[[Tone]] [[N]]"},
            "categories": [
                {"name": "Tone", "traits": [{"name": "Warm", "value": "warm", "weight": 2}, {"name": "Cold", "value": "cold"}]},
                {"name": "N", "type": "range", "start": 10, "end": 15, "unique": true},
            ],
            "name_template": "{{collection}} no. {{number}}",
            "reviewers": [s.bob.id],
        });
        let a = s.call(Method::PUT, &recipe_path, Some(&s.alice_key), Some(recipe)).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!(a.body["categories"][1]["type"], "range", "{k}");
        // Bob (a reviewer) reads it; nobody else may change it.
        assert_eq!(s.get(&recipe_path, &s.bob_key).await.status, StatusCode::OK, "{k}");
        let a = s.call(Method::PUT, &recipe_path, Some(&s.bob_key), Some(json!({"tool": "x", "supply": 1}))).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");

        let cook = format!("/api/v1/collections/{cid}/cook");
        let a = s.post(&cook, &s.alice_key, json!({"seed": 11})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        assert_eq!((a.body["total"].as_i64(), a.body["seed"].as_i64()), (Some(6), Some(11)), "{k}");
        let a = s.post(&format!("{cook}/pause"), &s.alice_key, json!({})).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        let a = s.post(&format!("{cook}/simmer"), &s.alice_key, json!({})).await;
        assert_eq!(a.fields(), ["action"], "{k}");
        let a = s.post(&format!("{cook}/resume"), &s.bob_key, json!({})).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}: only the owner controls the cook");
        s.post(&format!("{cook}/resume"), &s.alice_key, json!({})).await;
        let done = wait_cook(&s, &s.alice_key, &cid, "done").await;
        assert_eq!((done["done"].as_i64(), done["failed"].as_i64()), (Some(6), Some(0)), "{k}: {done}");
        assert_eq!(done["progress_text"], "done: 6 of 6 made", "{k}");
        // The price quote (one point per watermark), the list of cooks, and
        // a done cook with nothing unmade is not cooked again.
        let a = s.get(&format!("/api/v1/collections/{cid}/recipe/quote"), &s.alice_key).await;
        assert_eq!(
            (a.status, &a.body["per_piece"], &a.body["total"]),
            (StatusCode::OK, &json!(1), &json!(6)),
            "{k}: {}",
            a.body
        );
        assert!(a.body["text"].as_str().unwrap().starts_with("6 pieces × 1 points = 6 points"), "{k}: {}", a.body);
        assert_eq!(
            s.get(&format!("/api/v1/collections/{cid}/recipe/quote"), &s.bob_key).await.status,
            StatusCode::NOT_FOUND,
            "{k}"
        );
        let a = s.get("/api/v1/cooks", &s.alice_key).await;
        assert_eq!(
            (&a.body["items"][0]["id"], &a.body["items"][0]["cook"]["done"]),
            (&json!(cid), &json!(6)),
            "{k}: {}",
            a.body
        );
        let a = s.post(&format!("{cook}/recook"), &s.alice_key, json!({})).await;
        assert_eq!(a.fields(), ["action"], "{k}: {}", a.body);
        // A named reviewer sees the pieces' thumbnails (the owner's images).
        let pieces = s.get(&format!("/api/v1/collections/{cid}/pieces"), &s.bob_key).await;
        let thumb = pieces.body["items"][0]["thumbnail_url"].as_str().unwrap().to_owned();
        let r = s.http.get(s.url(&thumb)).bearer_auth(&s.bob_key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}: {thumb}");
        assert_eq!(&r.bytes().await.unwrap()[..2], &[0xFF, 0xD8], "{k}: a JPEG");
        let r = s.http.get(s.url(&thumb)).bearer_auth(&s.admin_key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}: administrators see everything");

        // Two reviewers claim at once: disjoint.
        let claims = format!("/api/v1/collections/{cid}/review/claims");
        let (x, y) = tokio::join!(
            s.post(&claims, &s.alice_key, json!({"count": 3})),
            s.post(&claims, &s.bob_key, json!({"count": 3}))
        );
        let ids = |a: &common::Answer| -> HashSet<String> {
            a.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
        };
        let (mine, his) = (ids(&x), ids(&y));
        assert!(mine.is_disjoint(&his), "{k}: one piece, two reviewers");
        assert_eq!(mine.len() + his.len(), 6, "{k}");
        let a = s.post(&claims, &s.admin_key, json!({"count": 100})).await;
        assert_eq!(a.fields(), ["count"], "{k}");

        for id in &his {
            let a = s
                .post(
                    &format!("/api/v1/collections/{cid}/pieces/{id}/decision"),
                    &s.bob_key,
                    json!({"decision": "accept"}),
                )
                .await;
            assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
            assert_eq!(a.body["review"], "accepted", "{k}");
        }
        let some_of_mine = mine.iter().next().unwrap();
        let a = s
            .post(
                &format!("/api/v1/collections/{cid}/pieces/{some_of_mine}/decision"),
                &s.bob_key,
                json!({"decision": "accept"}),
            )
            .await;
        assert_eq!(a.fields(), ["piece"], "{k}: held by Alice");
        for id in &mine {
            s.post(
                &format!("/api/v1/collections/{cid}/pieces/{id}/decision"),
                &s.alice_key,
                json!({"decision": "accept"}),
            )
            .await;
        }
        let a = s.post(&format!("/api/v1/collections/{cid}/cull"), &s.alice_key, json!({"target": 4})).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!((a.body["accepted"].as_i64(), a.body["kept"].as_i64()), (Some(6), Some(4)), "{k}");
        let a = s.get(&format!("/api/v1/collections/{cid}/stats?kept=true"), &s.bob_key).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!(a.body["pieces"], 4, "{k}");
        assert_eq!(a.body["items"][0]["name"], "Warm", "{k}");

        // The NFT export.
        let a = s
            .post(&format!("/api/v1/collections/{cid}/exports"), &s.alice_key, json!({"nft": true, "shuffle": true}))
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{k}: {}", a.body);
        assert_eq!(a.body["total"], 4, "{k}");
        let eid = a.body["id"].as_str().unwrap().to_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let e = s.get(&format!("/api/v1/exports/{eid}"), &s.alice_key).await;
            if e.body["status"] == "succeeded" {
                break;
            }
            assert_ne!(e.body["status"], "failed", "{k}: {}", e.body);
            assert!(tokio::time::Instant::now() < deadline, "{k}: export stuck");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let bytes = s.get_bytes(&format!("/api/v1/exports/{eid}/download"), &s.alice_key).await;
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut text = String::new();
        zip.by_name("metadata/2.json").unwrap().read_to_string(&mut text).unwrap();
        let two: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(two["name"], "Marks no. 2", "{k}");
        assert_eq!(two["image"], "images/2.png", "{k}");
        assert_eq!(two["attributes"][0]["trait_type"], "Tone", "{k}");
        assert!(zip.by_name("images/4.png").is_ok(), "{k}");
        assert!(zip.by_name("metadata.json").is_ok(), "{k}");

        // Stop: a done cook cannot be stopped.
        let a = s.post(&format!("{cook}/stop"), &s.alice_key, json!({})).await;
        assert_eq!(a.fields(), ["action"], "{k}");
        s.stop().await;
    }
}
