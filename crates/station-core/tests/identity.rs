//! Identity through the core: API keys, `/link` codes joining two accounts
//! (points, identities, jobs, media, settings), one-time login tokens and web
//! sessions — on SQLite and (when configured) PostgreSQL.

use station_core::Role;
use std::time::Duration;

use serde_json::{Map, Value, json};
use station_core::identity::{AuthError, Credential, hash_secret};
use station_core::{Config, Station, SubmitRequest};
use station_store::{EntryKind, LinkError, MediaRow, Store, testing};

/// Templates (`txt2img-sd15`, …) are hidden: only administrators may run
/// them. The test's accounts run a public copy from the tools folder.
fn publish_builtin(config: &Config, id: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../station-tools/builtin/{id}.json"));
    let mut tool: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    tool["visibility"] = serde_json::json!("public");
    std::fs::create_dir_all(config.tools_dir()).unwrap();
    std::fs::write(config.tools_dir().join(format!("{id}.json")), tool.to_string()).unwrap();
}

fn station(db: &testing::TestDb, dir: &std::path::Path) -> Station {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    // Cheap jobs (8 points for txt2img), so submitting needs no price confirmation.
    config.points.multiplier = 0.4;
    publish_builtin(&config, "txt2img-sd15");
    Station::with_store(config, db.store.clone()).unwrap().0
}

/// Runs one statement returning rows of one text column, on either engine.
async fn texts(store: &Store, sql: &'static str, bind: &str) -> Vec<String> {
    match store {
        Store::Sqlite(p) => sqlx::query_scalar(sql).bind(bind).fetch_all(p).await.unwrap(),
        Store::Postgres(p) => sqlx::query_scalar(sql).bind(bind).fetch_all(p).await.unwrap(),
    }
}

async fn exec(store: &Store, sql: &'static str) {
    match store {
        Store::Sqlite(p) => assert!(sqlx::query(sql).execute(p).await.unwrap().rows_affected() > 0),
        Store::Postgres(p) => assert!(sqlx::query(sql).execute(p).await.unwrap().rows_affected() > 0),
    }
}

#[tokio::test]
async fn api_keys_authenticate_record_use_and_revoke() {
    for db in testing::all().await {
        let kind = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        let alice = st.account("local", "alice", "alice").await.unwrap();
        let bob = st.account("local", "bob", "bob").await.unwrap();

        let (info, key) = st.create_api_key(&alice, "  laptop script ", None).await.unwrap();
        assert!(key.starts_with("st_") && key.len() == 46, "{kind}: {key}");
        assert_eq!(info.name, "laptop script");
        assert!(key.starts_with(&info.prefix) && info.prefix.len() == 11, "{kind}");
        assert_eq!(info.last_used_at, None);

        // Only the hash is stored: no column of the row holds the key.
        let hashes = texts(&db.store, "SELECT key_hash FROM api_keys WHERE id = $1", &info.id).await;
        assert_eq!(hashes, vec![hash_secret(&key)], "{kind}");
        let row = texts(
            &db.store,
            "SELECT id || '|' || account_id || '|' || name || '|' || prefix || '|' || key_hash FROM api_keys WHERE id = $1",
            &info.id,
        )
        .await;
        assert!(!row[0].contains(&key) && !row[0].contains(&key[11..]), "{kind}: key stored in the clear: {row:?}");

        let who = st.authenticate_api_key(&key).await.unwrap();
        assert_eq!(who.id, alice.id, "{kind}");
        let listed = st.list_api_keys(&alice).await.unwrap();
        assert_eq!(listed.len(), 1, "{kind}");
        let first_use = listed[0].last_used_at.expect("last use recorded");
        // A second use within the minute does not write again.
        tokio::time::sleep(Duration::from_millis(5)).await;
        st.authenticate_api_key(&key).await.unwrap();
        assert_eq!(st.list_api_keys(&alice).await.unwrap()[0].last_used_at, Some(first_use), "{kind}");
        assert!(st.list_api_keys(&bob).await.unwrap().is_empty(), "{kind}");

        // Unknown and malformed keys; someone else cannot revoke it.
        let mut wrong = key.clone();
        wrong.replace_range(20..21, if &key[20..21] == "a" { "b" } else { "a" });
        assert!(matches!(st.authenticate_api_key(&wrong).await, Err(AuthError::Unknown(Credential::ApiKey))));
        assert!(matches!(st.authenticate_api_key("hunter2").await, Err(AuthError::Unknown(_))));
        assert!(!st.revoke_api_key(&bob, &info.id).await.unwrap(), "{kind}: bob revoked alice's key");
        assert!(st.authenticate_api_key(&key).await.is_ok());

        assert!(st.revoke_api_key(&alice, &info.id).await.unwrap(), "{kind}");
        let err = st.authenticate_api_key(&key).await.unwrap_err();
        assert!(matches!(err, AuthError::Revoked(Credential::ApiKey)), "{kind}: {err}");
        assert!(err.to_string().contains("revoked") && err.to_string().contains("station keys create"), "{err}");
        assert!(st.list_api_keys(&alice).await.unwrap()[0].revoked_at.is_some());
        assert!(!st.revoke_api_key(&alice, "no-such-key").await.unwrap());

        // An administrator may revoke anyone's key.
        let (other, other_key) = st.create_api_key(&bob, "ci", None).await.unwrap();
        st.set_account_role(&alice.id, Role::Admin, &station_core::audit::Actor::operator("test")).await.unwrap();
        let admin = db.store.get_account(&alice.id).await.unwrap().unwrap();
        assert!(st.revoke_api_key(&admin, &other.id).await.unwrap(), "{kind}");
        assert!(matches!(st.authenticate_api_key(&other_key).await, Err(AuthError::Revoked(_))));

        // Expired keys and suspended accounts are refused, each saying so.
        let soon = station_store::now_ms() + 150;
        let (_, short) = st.create_api_key(&bob, "short-lived", Some(soon)).await.unwrap();
        assert!(st.authenticate_api_key(&short).await.is_ok());
        tokio::time::sleep(Duration::from_millis(250)).await;
        let err = st.authenticate_api_key(&short).await.unwrap_err();
        assert!(matches!(err, AuthError::Expired(Credential::ApiKey)), "{kind}: {err}");
        let (_, bobs) = st.create_api_key(&bob, "phone", None).await.unwrap();
        st.set_account_suspended(&bob.id, true, &station_core::audit::Actor::operator("test")).await.unwrap();
        let err = st.authenticate_api_key(&bobs).await.unwrap_err();
        assert!(matches!(&err, AuthError::Suspended(id) if *id == bob.id), "{kind}: {err}");

        // Names are validated with the field named.
        for (name, expires) in [("", None), ("   ", None), (&*"x".repeat(65), None), ("ok", Some(1))] {
            let err = st.create_api_key(&alice, name, expires).await.unwrap_err().to_string();
            let field = if expires.is_some() { "expires_at" } else { "name" };
            assert!(err.starts_with(field), "{kind}: {name:?} → {err}");
        }
        assert!(st.create_api_key(&alice, &"é".repeat(64), None).await.is_ok(), "64 characters are fine");
    }
}

fn txt2img() -> SubmitRequest {
    let params: Map<String, Value> = json!({"prompt": "a lighthouse"}).as_object().cloned().unwrap();
    SubmitRequest { tool: "txt2img-sd15".into(), params, ..Default::default() }
}

#[tokio::test]
async fn link_code_joins_accounts_with_one_exact_balance() {
    for db in testing::all().await {
        let kind = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        // Alice on Telegram and on Discord: two accounts until she links them.
        let tg = st.account("telegram", "111", "alice").await.unwrap();
        let dc = st.account("discord", "222", "alice#1").await.unwrap();
        st.ensure_starting_grant(&tg.id).await.unwrap();
        st.ensure_starting_grant(&dc.id).await.unwrap();
        st.grant_points(&dc, 37, "contest prize", &station_core::audit::Actor::operator("test"), None).await.unwrap();
        // History on the Discord side: a job that was queued then cancelled, media, a setting, a key.
        let job = st.submit(&dc, txt2img()).await.unwrap();
        let code = st.create_link_code(&tg).await.unwrap();
        assert_eq!(code.code.len(), 8);
        let left = code.expires_at - station_store::now_ms();
        assert!((590_000..=600_000).contains(&left), "{kind}: expires in {left} ms");
        let err = st.redeem_link_code(&dc, &code.code).await.unwrap_err();
        assert!(matches!(err, LinkError::JobsActive(1)), "{kind}: {err}");
        assert!(err.to_string().contains("wait"), "{err}");
        st.cancel(&dc, &job.id).await.unwrap();
        let mut saved = Map::new();
        saved.insert("steps".into(), json!(12));
        db.store.save_tool_settings(&dc.id, "txt2img-sd15", &saved, 1).await.unwrap();
        let media = MediaRow {
            id: "m-dc".into(),
            hash: "h".into(),
            mime: "image/png".into(),
            size: 1,
            width: 1,
            height: 1,
            account_id: Some(dc.id.clone()),
            job_id: None,
            kind: "input".into(),
            created_at: 1,
        };
        db.store.insert_media(&media).await.unwrap();
        let (_, dc_key) = st.create_api_key(&dc, "bot", None).await.unwrap();
        db.store.set_sponsor("discord-guild:9", &dc.id, 5, "operator:test", 1).await.unwrap();
        // Both set a quote threshold: the survivor's stays.
        db.store.set_quote_threshold(&dc.id, Some(50), 1).await.unwrap();
        db.store.set_quote_threshold(&tg.id, Some(7), 1).await.unwrap();

        let tg_before = st.points(&tg.id).await.unwrap();
        let dc_before = st.points(&dc.id).await.unwrap();
        assert_eq!((tg_before.balance, dc_before.balance, dc_before.held), (100, 137, 0), "{kind}");

        // The code failed above without being used up; a typo-tolerant redeem now succeeds.
        let spaced = format!(" {}-{} ", &code.code[..4], code.code[4..].to_lowercase());
        let joined = st.redeem_link_code(&dc, &spaced).await.unwrap();
        assert_eq!(joined.id, tg.id, "{kind}: the code owner's account survives");

        // One balance, exactly the sum; the old account is empty and says where its points went.
        assert_eq!(st.points(&tg.id).await.unwrap().balance, 237, "{kind}");
        assert_eq!(st.points(&dc.id).await.unwrap().balance, 0, "{kind}");
        let moved_in = db.store.ledger_history(&tg.id, None, 1).await.unwrap();
        assert_eq!(moved_in[0].kind(), Some(EntryKind::Transfer));
        assert_eq!((moved_in[0].amount, moved_in[0].idem_key.as_str()), (137, &*format!("merge:in:{}", dc.id)));
        let moved_out = db.store.ledger_history(&dc.id, None, 1).await.unwrap();
        assert_eq!((moved_out[0].amount, moved_out[0].kind.as_str()), (-137, "transfer"), "{kind}");
        assert_eq!(st.audit_points().await.unwrap(), vec![], "{kind}");

        // Identities, jobs, media, settings and keys all belong to the survivor now.
        let ids = db.store.account_identities(&tg.id).await.unwrap();
        assert_eq!(ids, vec![("discord".into(), "222".into()), ("telegram".into(), "111".into())], "{kind}");
        assert_eq!(st.account("discord", "222", "x").await.unwrap().id, tg.id, "{kind}");
        assert_eq!(db.store.get_job(&job.id).await.unwrap().unwrap().account_id, tg.id);
        assert_eq!(db.store.get_media("m-dc").await.unwrap().unwrap().account_id.as_deref(), Some(&*tg.id));
        assert_eq!(db.store.tool_settings(&tg.id, "txt2img-sd15").await.unwrap(), saved, "{kind}");
        assert_eq!(st.authenticate_api_key(&dc_key).await.unwrap().id, tg.id, "{kind}");
        assert_eq!(db.store.sponsor("discord-guild:9").await.unwrap().unwrap().account_id, tg.id, "{kind}");
        assert_eq!(db.store.quote_threshold(&tg.id).await.unwrap(), Some(Some(7)), "{kind}");
        assert_eq!(db.store.quote_threshold(&dc.id).await.unwrap(), None, "{kind}: the loser's preference is gone");
        // The old id never resurrects: it resolves to the survivor and is not listed.
        assert_eq!(db.store.get_account(&dc.id).await.unwrap().unwrap().id, tg.id, "{kind}");
        assert_eq!(db.store.merged_into(&dc.id).await.unwrap().as_deref(), Some(&*tg.id));
        let listed: Vec<String> = db.store.list_accounts(100).await.unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(listed, vec![tg.id.clone()], "{kind}");
        // A stale copy of the old account can neither link nor be linked again.
        let again = st.create_link_code(&tg).await.unwrap();
        assert!(matches!(st.redeem_link_code(&dc, &again.code).await, Err(LinkError::Merged(id)) if id == tg.id));

        // Used, unknown, same-account and expired codes are refused with their reason.
        let err = st.redeem_link_code(&dc, &code.code).await.unwrap_err();
        assert!(matches!(err, LinkError::UsedCode), "{kind}: {err}");
        assert!(matches!(st.redeem_link_code(&tg, "ABCDEFGH").await, Err(LinkError::UnknownCode)));
        assert!(matches!(st.redeem_link_code(&tg, "0OI1").await, Err(LinkError::UnknownCode)));
        assert!(matches!(st.redeem_link_code(&tg, &again.code).await, Err(LinkError::SameAccount)));
        let web = st.account("web", "alice@example.org", "alice").await.unwrap();
        exec(&db.store, "UPDATE link_codes SET expires_at = 0").await;
        let err = st.redeem_link_code(&web, &again.code).await.unwrap_err();
        assert!(matches!(err, LinkError::ExpiredCode), "{kind}: {err}");
        assert!(err.to_string().contains("10 minutes"), "{err}");
        assert_eq!(st.audit_points().await.unwrap(), vec![], "{kind}");

        // An account without points links cleanly too (no ledger entries needed).
        let fresh = st.create_link_code(&tg).await.unwrap();
        st.redeem_link_code(&web, &fresh.code).await.unwrap();
        assert_eq!(st.points(&tg.id).await.unwrap().balance, 237, "{kind}");
        assert_eq!(db.store.account_identities(&tg.id).await.unwrap().len(), 3, "{kind}");
        assert_eq!(st.audit_points().await.unwrap(), vec![], "{kind}");
    }
}

#[tokio::test]
async fn link_refuses_suspended_accounts_and_admin_callers() {
    for db in testing::all().await {
        let kind = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        let user = st.account("telegram", "1", "u").await.unwrap();
        let admin = st.account("discord", "2", "a").await.unwrap();
        st.set_account_role(&admin.id, Role::Admin, &station_core::audit::Actor::operator("test")).await.unwrap();
        let admin = db.store.get_account(&admin.id).await.unwrap().unwrap();

        let code = st.create_link_code(&user).await.unwrap();
        let err = st.redeem_link_code(&admin, &code.code).await.unwrap_err();
        assert!(matches!(err, LinkError::AdminMustSurvive), "{kind}: {err}");
        // The other way round works and keeps the administrator's account.
        let code = st.create_link_code(&admin).await.unwrap();
        assert_eq!(st.redeem_link_code(&user, &code.code).await.unwrap().role, Role::Admin, "{kind}");

        let bad = st.account("telegram", "3", "b").await.unwrap();
        st.set_account_suspended(&bad.id, true, &station_core::audit::Actor::operator("test")).await.unwrap();
        let code = st.create_link_code(&admin).await.unwrap();
        let err = st.redeem_link_code(&bad, &code.code).await.unwrap_err();
        assert!(matches!(&err, LinkError::Suspended(id) if *id == bad.id), "{kind}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_tokens_work_once_even_concurrently_and_sessions_end() {
    for db in testing::all().await {
        let kind = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        let alice = st.account("telegram", "7", "alice").await.unwrap();

        let (token, expires_at) = st.create_login_token(&alice).await.unwrap();
        let left = expires_at - station_store::now_ms();
        assert!((890_000..=900_000).contains(&left), "{kind}: {left}");
        let stored = texts(&db.store, "SELECT token_hash FROM login_tokens WHERE account_id = $1", &alice.id).await;
        assert_eq!(stored, vec![hash_secret(&token)], "{kind}: only the hash is stored");

        let tries: Vec<_> = (0..16)
            .map(|_| {
                let st = st.clone();
                let token = token.clone();
                tokio::spawn(async move { st.redeem_login_token(&token).await })
            })
            .collect();
        let mut won = 0;
        for t in tries {
            match t.await.unwrap() {
                Ok(a) => {
                    assert_eq!(a.id, alice.id);
                    won += 1;
                }
                Err(AuthError::Used(Credential::LoginToken)) => {}
                Err(e) => panic!("{kind}: unexpected {e}"),
            }
        }
        assert_eq!(won, 1, "{kind}: exactly one redeem may succeed");
        assert!(matches!(st.redeem_login_token("nope").await, Err(AuthError::Unknown(Credential::LoginToken))));
        let (old, _) = st.create_login_token(&alice).await.unwrap();
        exec(&db.store, "UPDATE login_tokens SET expires_at = 0 WHERE used_at IS NULL").await;
        assert!(matches!(st.redeem_login_token(&old).await, Err(AuthError::Expired(_))), "{kind}");

        // Sessions: found by id, CSRF token kept, ended on sign-out, expired after their TTL.
        let (sid, csrf, exp) = st.create_session(&alice, Duration::from_secs(3600)).await.unwrap();
        let (who, info) = st.session_account(&sid).await.unwrap();
        assert_eq!((who.id.as_str(), info.csrf_token.as_str(), info.expires_at), (&*alice.id, &*csrf, exp), "{kind}");
        let stored = texts(&db.store, "SELECT id_hash FROM sessions WHERE account_id = $1", &alice.id).await;
        assert_eq!(stored, vec![hash_secret(&sid)], "{kind}");
        assert!(st.end_session(&sid).await.unwrap());
        assert!(!st.end_session(&sid).await.unwrap());
        assert!(matches!(st.session_account(&sid).await, Err(AuthError::Revoked(Credential::Session))));
        let (short, _, _) = st.create_session(&alice, Duration::ZERO).await.unwrap();
        assert!(matches!(st.session_account(&short).await, Err(AuthError::Expired(_))), "{kind}");
        assert!(matches!(st.session_account("forged").await, Err(AuthError::Unknown(_))), "{kind}");
        st.set_account_suspended(&alice.id, true, &station_core::audit::Actor::operator("test")).await.unwrap();
        let (sid, _, _) = st.create_session(&alice, Duration::from_secs(60)).await.unwrap();
        assert!(matches!(st.session_account(&sid).await, Err(AuthError::Suspended(_))), "{kind}");
    }
}

fn lora(slug: &str, owner: Option<&str>) -> station_store::LoraRow {
    station_store::LoraRow {
        id: format!("id-{slug}"),
        slug: slug.into(),
        name: slug.into(),
        description: String::new(),
        trigger_words: vec![slug.into()],
        cognates: vec![],
        default_weight: None,
        checkpoint: "SD1.5".into(),
        filename: format!("{slug}.safetensors"),
        tags: vec![],
        owner_id: owner.map(str::to_string),
        visibility: "private".into(),
        rating: None,
        preview_images: vec![],
        created_at: 1,
        updated_at: 1,
    }
}

#[tokio::test]
async fn link_moves_lora_ownership_and_keeps_the_better_grant() {
    for db in testing::all().await {
        let kind = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        let keep = st.account("telegram", "1", "k").await.unwrap();
        let gone = st.account("discord", "2", "g").await.unwrap();
        let s = &db.store;
        s.upsert_lora(&lora("mine", Some(&gone.id)), &[], 1).await.unwrap();
        s.upsert_lora(&lora("both", None), &[], 1).await.unwrap();
        s.upsert_lora(&lora("only", None), &[], 1).await.unwrap();
        // Both hold a grant to `both`: the survivor's expires, the other's does not.
        s.grant_lora("both", &keep.id, Some(5_000_000_000_000), 1).await.unwrap();
        s.grant_lora("both", &gone.id, None, 1).await.unwrap();
        s.grant_lora("only", &gone.id, Some(6_000_000_000_000), 1).await.unwrap();
        let version = s.lora_catalog_version().await.unwrap();

        let code = st.create_link_code(&keep).await.unwrap();
        st.redeem_link_code(&gone, &code.code).await.unwrap();

        assert_eq!(s.get_lora("mine").await.unwrap().unwrap().0.owner_id.as_deref(), Some(&*keep.id), "{kind}");
        let grants = |slug: &'static str| async move { s.get_lora(slug).await.unwrap().unwrap().1 };
        let both = grants("both").await;
        assert_eq!(both.len(), 1, "{kind}: one grant per account: {both:?}");
        assert_eq!((both[0].account_id.as_str(), both[0].expires_at), (&*keep.id, None), "{kind}: the better grant");
        let only = grants("only").await;
        assert_eq!((only[0].account_id.as_str(), only[0].expires_at), (&*keep.id, Some(6_000_000_000_000)));
        assert!(s.lora_catalog_version().await.unwrap() > version, "{kind}: caches must see the change");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_code_redeemed_concurrently_joins_exactly_one_account() {
    for db in testing::all().await {
        let kind = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        let owner = st.account("telegram", "1", "o").await.unwrap();
        st.ensure_starting_grant(&owner.id).await.unwrap();
        let code = st.create_link_code(&owner).await.unwrap();
        let mut callers = vec![];
        for i in 0..8 {
            let a = st.account("discord", &i.to_string(), "c").await.unwrap();
            st.ensure_starting_grant(&a.id).await.unwrap();
            callers.push(a);
        }
        let tries: Vec<_> = callers
            .into_iter()
            .map(|a| {
                let st = st.clone();
                let code = code.code.clone();
                tokio::spawn(async move { st.redeem_link_code(&a, &code).await })
            })
            .collect();
        let mut joined = 0;
        for t in tries {
            match t.await.unwrap() {
                Ok(a) => {
                    assert_eq!(a.id, owner.id);
                    joined += 1;
                }
                Err(LinkError::UsedCode) => {}
                Err(e) => panic!("{kind}: unexpected {e}"),
            }
        }
        assert_eq!(joined, 1, "{kind}");
        assert_eq!(st.points(&owner.id).await.unwrap().balance, 200, "{kind}: exactly one balance moved");
        assert_eq!(db.store.account_identities(&owner.id).await.unwrap().len(), 2, "{kind}");
        assert_eq!(st.audit_points().await.unwrap(), vec![], "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeeming_each_others_codes_at_once_merges_one_way_only() {
    for db in testing::all().await {
        let kind = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        for round in 0..5 {
            let a = st.account("telegram", &format!("a{round}"), "a").await.unwrap();
            let b = st.account("discord", &format!("b{round}"), "b").await.unwrap();
            st.ensure_starting_grant(&a.id).await.unwrap();
            st.ensure_starting_grant(&b.id).await.unwrap();
            let (ca, cb) = (st.create_link_code(&a).await.unwrap(), st.create_link_code(&b).await.unwrap());
            let (st1, st2) = (st.clone(), st.clone());
            let (a2, b2) = (a.clone(), b.clone());
            let one = tokio::spawn(async move { st1.redeem_link_code(&a2, &cb.code).await });
            let two = tokio::spawn(async move { st2.redeem_link_code(&b2, &ca.code).await });
            let results = [one.await.unwrap(), two.await.unwrap()];
            assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{kind}: {results:?}");
            // The other is told plainly, not failed by a deadlock.
            let told = |r: &Result<_, LinkError>| matches!(r, Err(LinkError::Merged(_) | LinkError::SameAccount));
            assert!(results.iter().any(told), "{kind}: {results:?}");
            let merged = [db.store.merged_into(&a.id).await.unwrap(), db.store.merged_into(&b.id).await.unwrap()];
            assert_eq!(merged.iter().filter(|m| m.is_some()).count(), 1, "{kind}: a cycle: {merged:?}");
            let survivor = if merged[0].is_some() { &b.id } else { &a.id };
            assert_eq!(db.store.account_identities(survivor).await.unwrap().len(), 2, "{kind}");
            assert_eq!(st.points(survivor).await.unwrap().balance, 200, "{kind}");
        }
        assert_eq!(st.audit_points().await.unwrap(), vec![], "{kind}");
    }
}
