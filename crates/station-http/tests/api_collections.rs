//! Collections over real HTTP on SQLite and PostgreSQL (issue 24): create,
//! add results, reorder, rename; another user can neither see nor change a
//! private collection; share links work without an account, then answer
//! 404 once revoked or expired; "can add" links let a named account add its
//! own results; a ZIP export built in the background holds every image's
//! original bytes and metadata.json, and its download link expires.

mod common;

use std::io::Read as _;
use std::time::Duration;

use common::{Server, png, serve};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use station_testkit::testing;

/// A finished `resize` generation of `key`'s: (generation id, output media id).
async fn result_of(s: &Server, key: &str, width: u32) -> (String, String) {
    let up = s.upload(key, png(16, 16), "a.png").await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.body);
    let image = up.body["ref"].as_str().unwrap();
    let g =
        s.post("/api/v1/generations", key, json!({"tool": "resize", "params": {"image": image, "width": width}})).await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.body);
    let id = g.body["id"].as_str().unwrap().to_owned();
    let done = s.wait(key, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    (id, done["outputs"][0]["id"].as_str().unwrap().to_owned())
}

fn item_ids(c: &Value) -> Vec<String> {
    c["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

fn media_ids(c: &Value) -> Vec<String> {
    c["items"].as_array().unwrap().iter().map(|i| i["media"].as_str().unwrap_or("").to_owned()).collect()
}

/// GET without any credentials.
async fn anonymous(s: &Server, path: &str) -> (StatusCode, Vec<u8>) {
    let r = s.http.get(s.url(path)).send().await.unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

async fn wait_export(s: &Server, key: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = s.get(&format!("/api/v1/exports/{id}"), key).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        if matches!(a.body["status"].as_str(), Some("succeeded" | "failed")) {
            return a.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "export never finished: {}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curate_reorder_and_only_the_owner_changes_a_collection() {
    for db in testing::all().await {
        let s = serve(&db, true, |_| {}).await;
        let k = s.kind;
        let (g1, m1) = result_of(&s, &s.alice_key, 8).await;
        let (_g2, m2) = result_of(&s, &s.alice_key, 6).await;

        // Bad input names the field; nothing is made.
        let a = s.post("/api/v1/collections", &s.alice_key, json!({"name": " ", "visibility": "secret"})).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);
        assert_eq!(a.fields(), ["name", "visibility"], "{k}");
        let a = s.post("/api/v1/collections", &s.alice_key, json!({"name": "x", "colour": "red"})).await;
        assert_eq!(a.fields(), ["colour"], "{k}");

        let a = s.post("/api/v1/collections", &s.alice_key, json!({"name": "Best of June"})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{k}: {}", a.body);
        assert_eq!((&a.body["visibility"], &a.body["can_edit"]), (&json!("private"), &json!(true)), "{k}");
        let cid = a.body["id"].as_str().unwrap().to_owned();
        let items = format!("/api/v1/collections/{cid}/items");

        // Add a whole generation, then one image; the same image twice is skipped.
        let a = s.post(&items, &s.alice_key, json!({"generation": g1})).await;
        assert_eq!((a.status, a.body["added"].as_array().unwrap().len()), (StatusCode::OK, 1), "{k}: {}", a.body);
        let a = s.post(&items, &s.alice_key, json!({"media": format!("media:{m2}")})).await;
        assert_eq!(a.body["added"].as_array().unwrap().len(), 1, "{k}: {}", a.body);
        let a = s.post(&items, &s.alice_key, json!({"media": m2})).await;
        assert_eq!((a.status, a.body["added"].as_array().unwrap().len()), (StatusCode::OK, 0), "{k}: {}", a.body);
        assert_eq!(media_ids(&a.body["collection"]), [m1.clone(), m2.clone()], "{k}");
        // Uploads are not results; two things at once is refused.
        let up = s.upload(&s.alice_key, png(8, 8), "u.png").await;
        let a = s.post(&items, &s.alice_key, json!({"media": up.body["id"]})).await;
        assert_eq!((a.status, a.fields()), (StatusCode::BAD_REQUEST, vec!["media".to_string()]), "{k}: {}", a.body);
        let a = s.post(&items, &s.alice_key, json!({"media": m1, "generation": g1})).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{k}: {}", a.body);

        // Reorder: every item once, else the field is named.
        let c = s.get(&format!("/api/v1/collections/{cid}"), &s.alice_key).await.body;
        let mut order = item_ids(&c);
        order.reverse();
        let path = format!("/api/v1/collections/{cid}/order");
        let a = s.call(Method::PUT, &path, Some(&s.alice_key), Some(json!({"items": order}))).await;
        assert_eq!(a.status, StatusCode::OK, "{k}: {}", a.body);
        assert_eq!(media_ids(&a.body), [m2.clone(), m1.clone()], "{k}: reversed");
        let a = s.call(Method::PUT, &path, Some(&s.alice_key), Some(json!({"items": [order[0]]}))).await;
        assert_eq!((a.status, a.fields()), (StatusCode::BAD_REQUEST, vec!["items".to_string()]), "{k}: {}", a.body);

        // Rename.
        let coll = format!("/api/v1/collections/{cid}");
        let a = s.call(Method::PATCH, &coll, Some(&s.alice_key), Some(json!({"name": "June, curated"}))).await;
        assert_eq!((a.status, &a.body["name"]), (StatusCode::OK, &json!("June, curated")), "{k}: {}", a.body);
        let list = s.get("/api/v1/collections", &s.alice_key).await.body;
        assert_eq!(list["items"][0]["items"], 2, "{k}: {list}");

        // Bob: the private collection does not exist for him, and he can change nothing.
        let (bob_g, _) = result_of(&s, &s.bob_key, 4).await;
        assert_eq!(s.get(&coll, &s.bob_key).await.status, StatusCode::NOT_FOUND, "{k}");
        let a = s.post(&items, &s.bob_key, json!({"generation": bob_g})).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}: {}", a.body);
        let a = s.call(Method::PATCH, &coll, Some(&s.bob_key), Some(json!({"name": "mine"}))).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");
        let a = s.call(Method::PUT, &path, Some(&s.bob_key), Some(json!({"items": order}))).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");
        let a = s.call(Method::DELETE, &format!("{items}/{}", order[0]), Some(&s.bob_key), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");
        let a = s.post(&format!("{coll}/shares"), &s.bob_key, json!({})).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");
        let a = s.call(Method::POST, &format!("{coll}/exports"), Some(&s.bob_key), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");
        let a = s.call(Method::DELETE, &coll, Some(&s.bob_key), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");
        // Nor may he put Alice's results in his own collection.
        let b = s.post("/api/v1/collections", &s.bob_key, json!({"name": "Bob's"})).await.body;
        let a = s
            .post(
                &format!("/api/v1/collections/{}/items", b["id"].as_str().unwrap()),
                &s.bob_key,
                json!({"generation": g1}),
            )
            .await;
        assert_eq!(
            (a.status, a.fields()),
            (StatusCode::BAD_REQUEST, vec!["generation".to_string()]),
            "{k}: {}",
            a.body
        );
        let c = s.get(&coll, &s.alice_key).await.body;
        assert_eq!(
            (media_ids(&c), &c["name"]),
            (vec![m2.clone(), m1.clone()], &json!("June, curated")),
            "{k}: unchanged"
        );

        // A "can add" link naming Bob lets him add his own result (and only that).
        let a = s.post(&format!("{coll}/shares"), &s.alice_key, json!({"can_add": [s.bob.id]})).await;
        assert_eq!((a.status, &a.body["permission"]), (StatusCode::CREATED, &json!("add")), "{k}: {}", a.body);
        let a = s.get(&coll, &s.bob_key).await;
        assert_eq!(
            (a.status, &a.body["can_add"], &a.body["can_edit"]),
            (StatusCode::OK, &json!(true), &json!(false)),
            "{k}"
        );
        let a = s.post(&items, &s.bob_key, json!({"generation": bob_g})).await;
        assert_eq!((a.status, a.body["added"].as_array().unwrap().len()), (StatusCode::OK, 1), "{k}: {}", a.body);
        let a = s.call(Method::PATCH, &coll, Some(&s.bob_key), Some(json!({"name": "mine"}))).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}: adding is not editing");

        // The owner removes an item; an unknown item is 404.
        let a = s.call(Method::DELETE, &format!("{items}/{}", order[0]), Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}");
        let a = s.call(Method::DELETE, &format!("{items}/{}", order[0]), Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}");
        let a = s.call(Method::DELETE, &coll, Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}");
        assert_eq!(s.get(&coll, &s.alice_key).await.status, StatusCode::NOT_FOUND, "{k}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_open_without_an_account_until_revoked_or_expired() {
    for db in testing::all().await {
        let s = serve(&db, true, |_| {}).await;
        let k = s.kind;
        let (g1, m1) = result_of(&s, &s.alice_key, 8).await;
        let cid = s.post("/api/v1/collections", &s.alice_key, json!({"name": "Night cities"})).await.body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let coll = format!("/api/v1/collections/{cid}");
        s.post(&format!("{coll}/items"), &s.alice_key, json!({"generation": g1})).await;

        // A private collection's address opens nothing without a link.
        assert_eq!(anonymous(&s, &format!("/api/v1/shared/{cid}")).await.0, StatusCode::NOT_FOUND, "{k}");
        assert_eq!(anonymous(&s, &format!("/c/{cid}")).await.0, StatusCode::NOT_FOUND, "{k}");

        // A view-only link: the collection, its images (original bytes) and the page, with no account.
        let a = s.post(&format!("{coll}/shares"), &s.alice_key, json!({})).await;
        assert_eq!((a.status, &a.body["permission"]), (StatusCode::CREATED, &json!("view")), "{k}: {}", a.body);
        let week = a.body["expires_at"].as_i64().unwrap() - a.body["created_at"].as_i64().unwrap();
        assert_eq!(week, 7 * 24 * 3600 * 1000, "{k}: 7 days by default");
        let token = a.body["token"].as_str().unwrap().to_owned();
        let share_id = a.body["id"].as_str().unwrap().to_owned();
        assert_eq!(a.body["url"], json!(format!("/c/{token}")), "{k}");
        let (status, body) = anonymous(&s, &format!("/api/v1/shared/{token}")).await;
        assert_eq!(status, StatusCode::OK, "{k}");
        let shared: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((media_ids(&shared), &shared["owner"]), (vec![m1.clone()], &json!("alice")), "{k}: {shared}");
        let original = s.get_bytes(&format!("/api/v1/media/{m1}"), &s.alice_key).await;
        let (status, image) = anonymous(&s, shared["items"][0]["image_url"].as_str().unwrap()).await;
        assert_eq!((status, image == original), (StatusCode::OK, true), "{k}: the original bytes");
        let (status, _) = anonymous(&s, shared["items"][0]["thumbnail_url"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{k}");
        let (status, page) = anonymous(&s, &format!("/c/{token}")).await;
        assert_eq!(status, StatusCode::OK, "{k}");
        assert!(String::from_utf8_lossy(&page).contains(r#"data-page="shared""#), "{k}");
        // The list of links never shows the token again.
        let list = s.get(&format!("{coll}/shares"), &s.alice_key).await.body;
        assert_eq!((&list["items"][0]["state"], list["items"][0].get("token")), (&json!("live"), None), "{k}: {list}");

        // Revoked: 404 at once, saying so, on the API and the page.
        let a = s.call(Method::DELETE, &format!("{coll}/shares/{share_id}"), Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{k}");
        let a = s.call(Method::GET, &format!("/api/v1/shared/{token}"), None, None).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "gone"), "{k}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains("revoked"), "{k}: {}", a.body);
        let (status, page) = anonymous(&s, &format!("/c/{token}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{k}");
        assert!(String::from_utf8_lossy(&page).contains("revoked"), "{k}");
        let (status, _) = anonymous(&s, shared["items"][0]["image_url"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{k}: its images too");
        let a = s.call(Method::DELETE, &format!("{coll}/shares/{share_id}"), Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{k}: revoked once");

        // Expired: a link of one second works, then answers 404 saying it expired.
        let a = s.post(&format!("{coll}/shares"), &s.alice_key, json!({"expires_in": 1})).await;
        let token = a.body["token"].as_str().unwrap().to_owned();
        assert_eq!(anonymous(&s, &format!("/api/v1/shared/{token}")).await.0, StatusCode::OK, "{k}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let a = s.call(Method::GET, &format!("/api/v1/shared/{token}"), None, None).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "gone"), "{k}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains("expired"), "{k}: {}", a.body);
        let list = s.get(&format!("{coll}/shares"), &s.alice_key).await.body;
        assert_eq!(list["items"][0]["state"], "expired", "{k}: {list}");
        // Out of range expiry names the field; an unknown token is plain 404.
        let a = s.post(&format!("{coll}/shares"), &s.alice_key, json!({"expires_in": 0})).await;
        assert_eq!(a.fields(), ["expires_in"], "{k}");
        let a = s.call(Method::GET, "/api/v1/shared/sc_nope", None, None).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"), "{k}");

        // Unlisted: its own address opens it; public: a view-only link adds nothing and is refused.
        let a = s.call(Method::PATCH, &coll, Some(&s.alice_key), Some(json!({"visibility": "unlisted"}))).await;
        assert_eq!(a.body["public_url"], json!(format!("/c/{cid}")), "{k}: {}", a.body);
        assert_eq!(anonymous(&s, &format!("/api/v1/shared/{cid}")).await.0, StatusCode::OK, "{k}");
        assert_eq!(anonymous(&s, &format!("/c/{cid}")).await.0, StatusCode::OK, "{k}");
        s.call(Method::PATCH, &coll, Some(&s.alice_key), Some(json!({"visibility": "public"}))).await;
        let a = s.post(&format!("{coll}/shares"), &s.alice_key, json!({})).await;
        assert_eq!((a.status, a.fields()), (StatusCode::BAD_REQUEST, vec!["can_add".to_string()]), "{k}: {}", a.body);
        let (status, body) = anonymous(&s, "/api/v1/collections/public").await;
        let public: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, &public["items"][0]["id"]), (StatusCode::OK, &json!(cid)), "{k}: {public}");
        // Its cover thumbnail answers anyone, at the collection's public address.
        let cover = public["items"][0]["cover_thumbnail_url"].as_str().unwrap_or_else(|| panic!("{k}: {public}"));
        assert!(cover.starts_with(&format!("/api/v1/shared/{cid}/items/")), "{k}: {cover}");
        let (status, jpeg) = anonymous(&s, cover).await;
        assert_eq!((status, &jpeg[..2]), (StatusCode::OK, &[0xFF, 0xD8][..]), "{k}: a JPEG thumbnail");
        // Another signed-in user sees a public collection, read-only.
        let a = s.get(&coll, &s.bob_key).await;
        assert_eq!((a.status, &a.body["can_edit"]), (StatusCode::OK, &json!(false)), "{k}: {}", a.body);
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_a_zip_of_the_originals_and_metadata_and_its_link_expires() {
    for db in testing::all().await {
        let s = serve(&db, true, |_| {}).await;
        let k = s.kind;
        let (g1, m1) = result_of(&s, &s.alice_key, 8).await;
        let (g2, m2) = result_of(&s, &s.alice_key, 6).await;
        let cid = s
            .post("/api/v1/collections", &s.alice_key, json!({"name": "Export me", "description": "two results"}))
            .await
            .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let coll = format!("/api/v1/collections/{cid}");
        for g in [&g2, &g1] {
            s.post(&format!("{coll}/items"), &s.alice_key, json!({"generation": g})).await;
        }

        let a = s.call(Method::POST, &format!("{coll}/exports"), Some(&s.alice_key), None).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{k}: {}", a.body);
        assert_eq!(a.body["total"], 2, "{k}: {}", a.body);
        let export_id = a.body["id"].as_str().unwrap().to_owned();
        let e = wait_export(&s, &s.alice_key, &export_id).await;
        assert_eq!(
            (&e["status"], &e["done"], &e["progress"]),
            (&json!("succeeded"), &json!(2), &json!(1.0)),
            "{k}: {e}"
        );
        // Only its owner sees it.
        assert_eq!(s.get(&format!("/api/v1/exports/{export_id}"), &s.bob_key).await.status, StatusCode::NOT_FOUND);
        let url = e["download_url"].as_str().unwrap();
        let r = s.http.get(s.url(url)).bearer_auth(&s.bob_key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{k}");
        let r = s.http.get(s.url(url)).bearer_auth(&s.alice_key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}");
        assert_eq!(r.headers()["content-type"], "application/zip", "{k}");
        let bytes = r.bytes().await.unwrap().to_vec();
        assert_eq!(Some(bytes.len() as i64), e["size"].as_i64(), "{k}");

        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
        assert_eq!(names.len(), 3, "{k}: {names:?}");
        let mut text = String::new();
        zip.by_name("metadata.json").unwrap().read_to_string(&mut text).unwrap();
        let meta: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((&meta["collection"]["name"], &meta["collection"]["owner"]), (&json!("Export me"), &json!("alice")));
        let items = meta["items"].as_array().unwrap();
        // In the collection's order (g2 first), each with its generation's details and its file.
        for (item, (g, m, width)) in items.iter().zip([(&g2, &m2, 6), (&g1, &m1, 8)]) {
            assert_eq!((&item["generation"], &item["media"]), (&json!(g), &json!(m)), "{k}: {item}");
            assert_eq!((&item["tool"], &item["creator"]), (&json!("resize"), &json!("alice")), "{k}: {item}");
            assert_eq!(item["parameters"]["width"], width, "{k}: {item}");
            for key in ["prompt", "model", "loras", "seed"] {
                assert!(item.get(key).is_some(), "{k}: {key} is in every item: {item}");
            }
            assert!(item["parameters"].as_object().unwrap().keys().all(|p| !p.starts_with('_')), "{k}: {item}");
            let mut inside = vec![];
            zip.by_name(item["file"].as_str().unwrap()).unwrap().read_to_end(&mut inside).unwrap();
            let original = s.get_bytes(&format!("/api/v1/media/{m}"), &s.alice_key).await;
            assert!(inside == original, "{k}: {} holds the original bytes", item["file"]);
        }
        s.stop().await;

        // An export made with `collections.export_ttl_hours = 0` expires as soon as it is built.
        let s = serve(&db, true, |c| c.collections.export_ttl_hours = 0).await;
        let (g3, _) = result_of(&s, &s.alice_key, 4).await;
        let cid = s.post("/api/v1/collections", &s.alice_key, json!({"name": "Brief"})).await.body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let coll = format!("/api/v1/collections/{cid}");
        s.post(&format!("{coll}/items"), &s.alice_key, json!({"generation": g3})).await;
        let a = s.call(Method::POST, &format!("{coll}/exports"), Some(&s.alice_key), None).await;
        let export_id = a.body["id"].as_str().unwrap().to_owned();
        let e = wait_export(&s, &s.alice_key, &export_id).await;
        assert_eq!((&e["status"], &e["download_url"]), (&json!("succeeded"), &Value::Null), "{k}: {e}");
        let a = s.get(&format!("/api/v1/exports/{export_id}/download"), &s.alice_key).await;
        assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "gone"), "{k}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains("expired"), "{k}: {}", a.body);
        s.stop().await;
    }
}
