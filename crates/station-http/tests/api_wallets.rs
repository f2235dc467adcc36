//! Wallets over real HTTP against a real local chain (anvil; see
//! `station-core/tests/wallets.rs` for where it comes from), on SQLite and
//! PostgreSQL: the chains and rates listed, a challenge signed by the
//! wallet's key and verified, a deposit followed to credited with the
//! watcher the workers run, unlinking, `/readyz` showing the chain, and the
//! `wallets` flag refusing by name.

mod common;

use std::time::{Duration, Instant};

use common::serve;
use reqwest::{Method, StatusCode};
use serde_json::json;
use station_core::config::{AssetConfig, ChainConfig};
use station_testkit::anvil::Anvil;
use station_testkit::testing;

const OWNER: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
const DEPOSIT: &str = "0x000000000000000000000000000000000000dEaD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_is_linked_and_its_deposit_credited_over_http() {
    for db in testing::all().await {
        let Some(a) = Anvil::start().await else { return };
        let url = a.url.clone();
        let s = serve(&db, true, move |c| c.wallets.chains = vec![local_chain(url, 2)]).await;
        let k = s.kind;
        let list = s.get("/api/v1/wallets", &s.alice_key).await;
        assert_eq!(list.status, StatusCode::OK, "{k}: {}", list.body);
        assert_eq!(list.body["wallets"], json!([]), "{k}");
        let chain = &list.body["chains"][0];
        assert_eq!(
            (chain["deposit_address"].as_str(), chain["confirmations"].as_u64()),
            (Some(DEPOSIT), Some(2)),
            "{k}"
        );
        assert_eq!(
            chain["assets"][0],
            json!({"symbol": "ETH", "token": null, "points_per_unit": 1000, "minimum": "0.01"}),
            "{k}"
        );

        // Bad input is named.
        let bad =
            s.post("/api/v1/wallets/challenges", &s.alice_key, json!({"chain_id": 31337, "address": "0x12"})).await;
        assert_eq!((bad.status, bad.fields()), (StatusCode::BAD_REQUEST, vec!["address".to_string()]), "{k}");
        let bad = s.post("/api/v1/wallets/challenges", &s.alice_key, json!({"chain_id": 5, "address": OWNER})).await;
        assert_eq!(bad.fields(), vec!["chain_id".to_string()], "{k}: {}", bad.body);

        // Challenge → personal_sign by the wallet → verify.
        let ch = s.post("/api/v1/wallets/challenges", &s.alice_key, json!({"chain_id": 31337, "address": OWNER})).await;
        assert_eq!(ch.status, StatusCode::CREATED, "{k}: {}", ch.body);
        let message = ch.body["message"].as_str().unwrap();
        let sig = a.rpc("personal_sign", json!([format!("0x{}", hex::encode(message)), OWNER])).await;
        let v =
            s.post("/api/v1/wallets/verify", &s.alice_key, json!({"nonce": ch.body["nonce"], "signature": sig})).await;
        assert_eq!(v.status, StatusCode::CREATED, "{k}: {}", v.body);
        assert_eq!((v.body["address"].as_str(), v.body["method"].as_str()), (Some(OWNER), Some("signature")), "{k}");
        let again =
            s.post("/api/v1/wallets/verify", &s.alice_key, json!({"nonce": ch.body["nonce"], "signature": sig})).await;
        assert_eq!(again.fields(), vec!["nonce".to_string()], "{k}");

        // 0.5 ETH from the linked address: credited after two blocks by the watcher.
        let before = s.get("/api/v1/points", &s.alice_key).await.body["balance"].as_i64().unwrap();
        let tx = json!({"from": OWNER, "to": DEPOSIT, "value": format!("0x{:x}", 500_000_000_000_000_000u128)});
        a.rpc("eth_sendTransaction", json!([tx])).await;
        a.rpc("anvil_mine", json!(["0x2"])).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let d = loop {
            let d = s.get("/api/v1/wallets/deposits", &s.alice_key).await.body["deposits"][0].clone();
            if d["state"] == "credited" {
                break d;
            }
            assert!(Instant::now() < deadline, "{k}: not credited: {d}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!((d["amount_text"].as_str(), d["points"].as_i64()), (Some("0.5 ETH"), Some(500)), "{k}");
        assert!(d["confirmations"].as_u64().unwrap() >= 2, "{k}: {d}");
        let after = s.get("/api/v1/points", &s.alice_key).await.body["balance"].as_i64().unwrap();
        assert_eq!(after - before, 500, "{k}");

        // /readyz shows the chain caught up.
        let ready = s.call(Method::GET, "/readyz", None, None).await;
        let c = &ready.body["chains"][0];
        assert_eq!((c["chain_id"].as_u64(), c["last_error"].is_null()), (Some(31337), true), "{k}: {}", ready.body);
        assert!(c["head"].as_u64().is_some() && c["lag"].as_u64().is_some(), "{k}: {}", ready.body);

        // Bob cannot unlink Alice's address; Alice can, once.
        let path = format!("/api/v1/wallets/31337/{OWNER}");
        assert_eq!(s.call(Method::DELETE, &path, Some(&s.bob_key), None).await.status, StatusCode::NOT_FOUND, "{k}");
        assert_eq!(s.call(Method::DELETE, &path, Some(&s.alice_key), None).await.status, StatusCode::NO_CONTENT, "{k}");
        assert_eq!(s.call(Method::DELETE, &path, Some(&s.alice_key), None).await.status, StatusCode::NOT_FOUND, "{k}");

        // Magic quote for a typed address.
        let q = s.post("/api/v1/wallets/quotes", &s.bob_key, json!({"chain_id": 31337, "address": OWNER})).await;
        assert_eq!(q.status, StatusCode::CREATED, "{k}: {}", q.body);
        assert_eq!(
            (q.body["from_address"].as_str(), q.body["deposit_address"].as_str()),
            (Some(OWNER), Some(DEPOSIT)),
            "{k}"
        );

        // Switched off: refused naming the feature.
        let off =
            s.call(Method::PUT, "/api/v1/admin/flags/wallets", Some(&s.admin_key), Some(json!({"state": "off"}))).await;
        assert_eq!(off.status, StatusCode::OK, "{k}: {}", off.body);
        let r = s.post("/api/v1/wallets/challenges", &s.alice_key, json!({"chain_id": 31337, "address": OWNER})).await;
        assert_eq!((r.status, r.fields()), (StatusCode::BAD_REQUEST, vec!["feature".to_string()]), "{k}: {}", r.body);
        s.stop().await;
    }
}

fn local_chain(url: String, confirmations: u64) -> ChainConfig {
    ChainConfig {
        id: 31337,
        name: "Local".into(),
        rpc_url: url,
        deposit_address: DEPOSIT.into(),
        confirmations: Some(confirmations),
        start_block: Some(0),
        poll_ms: 50,
        max_blocks_per_poll: 100,
        magic_cap: 1_000_000_000,
        assets: vec![AssetConfig {
            symbol: "ETH".into(),
            token: None,
            decimals: 18,
            points_per_unit: 1000,
            minimum: Some("0.01".into()),
        }],
    }
}

/// Issue 26 item 6: with `web.wallet_sign_in` on, a signature by a linked
/// wallet opens a web session for its account, once per message; an
/// unlinked address gets no message to sign; linking and sign-in messages
/// are not interchangeable; cross-site requests and the switched-off
/// feature are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_wallet_signs_in_to_the_web() {
    const STRANGER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    for db in testing::all().await {
        let Some(a) = Anvil::start().await else { return };
        // Off by default: the endpoints do not exist and the page offers nothing.
        let url = a.url.clone();
        let off = serve(&db, false, move |c| c.wallets.chains = vec![local_chain(url, 1)]).await;
        let k = off.kind;
        let r = off
            .call(Method::POST, "/signin/wallet/challenge", None, Some(json!({"chain_id": 31337, "address": OWNER})))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{k}: {}", r.body);
        let page = off.http.get(off.url("/signin")).send().await.unwrap().text().await.unwrap();
        assert!(!page.contains("ws-connect"), "{k}: no wallet sign-in offered when off");
        off.stop().await;

        let url = a.url.clone();
        let s = serve(&db, false, move |c| {
            c.wallets.chains = vec![local_chain(url, 1)];
            c.web.wallet_sign_in = true;
        })
        .await;
        let page = s.http.get(s.url("/signin")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("ws-connect") && page.contains("Sign in with your wallet"), "{k}: {page}");

        // Alice links OWNER the usual way.
        let ch = s.post("/api/v1/wallets/challenges", &s.alice_key, json!({"chain_id": 31337, "address": OWNER})).await;
        let link_message = ch.body["message"].as_str().unwrap().to_string();
        let link_nonce = ch.body["nonce"].clone();
        let sig = a.rpc("personal_sign", json!([format!("0x{}", hex::encode(&link_message)), OWNER])).await;
        // A linking message is no sign-in message.
        let r = s
            .call(Method::POST, "/signin/wallet/verify", None, Some(json!({"nonce": link_nonce, "signature": sig})))
            .await;
        assert_eq!((r.status, r.fields()), (StatusCode::BAD_REQUEST, vec!["nonce".to_string()]), "{k}: {}", r.body);
        let v = s.post("/api/v1/wallets/verify", &s.alice_key, json!({"nonce": link_nonce, "signature": sig})).await;
        assert_eq!(v.status, StatusCode::CREATED, "{k}: {}", v.body);

        // No message for an address nobody linked; bad input named.
        let r = s
            .call(Method::POST, "/signin/wallet/challenge", None, Some(json!({"chain_id": 31337, "address": STRANGER})))
            .await;
        assert_eq!((r.status, r.fields()), (StatusCode::BAD_REQUEST, vec!["address".to_string()]), "{k}: {}", r.body);
        let r = s
            .call(Method::POST, "/signin/wallet/challenge", None, Some(json!({"chain_id": 5, "address": OWNER})))
            .await;
        assert_eq!(r.fields(), vec!["chain_id".to_string()], "{k}: {}", r.body);
        // Asked from another site: refused before anything is stored.
        let r = s
            .http
            .post(s.url("/signin/wallet/challenge"))
            .header("sec-fetch-site", "cross-site")
            .json(&json!({"chain_id": 31337, "address": OWNER}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{k}");

        let ch = s
            .call(Method::POST, "/signin/wallet/challenge", None, Some(json!({"chain_id": 31337, "address": OWNER})))
            .await;
        assert_eq!(ch.status, StatusCode::OK, "{k}: {}", ch.body);
        let message = ch.body["message"].as_str().unwrap().to_string();
        assert!(message.contains("Sign in to Station.") && message.contains(OWNER), "{k}: {message}");
        let nonce = ch.body["nonce"].clone();
        // A sign-in message does not link.
        let good = a.rpc("personal_sign", json!([format!("0x{}", hex::encode(&message)), OWNER])).await;
        let r = s.post("/api/v1/wallets/verify", &s.bob_key, json!({"nonce": nonce, "signature": good})).await;
        assert_eq!(r.fields(), vec!["nonce".to_string()], "{k}: {}", r.body);
        // Signed by another key: refused, naming the signature.
        let wrong = a.rpc("personal_sign", json!([format!("0x{}", hex::encode(&message)), STRANGER])).await;
        let r = s
            .call(Method::POST, "/signin/wallet/verify", None, Some(json!({"nonce": nonce, "signature": wrong})))
            .await;
        assert_eq!(r.fields(), vec!["signature".to_string()], "{k}: {}", r.body);

        let resp = s
            .http
            .post(s.url("/signin/wallet/verify"))
            .json(&json!({"nonce": nonce, "signature": good, "next": "/wallet"}))
            .send()
            .await
            .unwrap();
        let r = common::Server::answer(resp).await;
        assert_eq!(r.status, StatusCode::OK, "{k}: {}", r.body);
        assert_eq!(r.body["next"], "/wallet", "{k}");
        let cookie = r.headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
        assert!(cookie.starts_with("station_session=") && cookie.contains("HttpOnly"), "{k}: {cookie}");
        let session = cookie.split(';').next().unwrap().to_string();
        // The session is Alice's.
        let me = s.http.get(s.url("/api/v1/account")).header("cookie", &session).send().await.unwrap();
        let me = common::Server::answer(me).await;
        assert_eq!(me.status, StatusCode::OK, "{k}: {}", me.body);
        assert_eq!(me.body["id"].as_str(), Some(s.alice.id.as_str()), "{k}: {}", me.body);
        // Each message works once.
        let r =
            s.call(Method::POST, "/signin/wallet/verify", None, Some(json!({"nonce": nonce, "signature": good}))).await;
        assert_eq!(r.fields(), vec!["nonce".to_string()], "{k}: {}", r.body);
        s.stop().await;
    }
}
