//! The audit log (issue 27 item 5): every administrative action made through
//! the core is one row with who, through which door, what and to what; a
//! replayed grant is not recorded twice; the database itself refuses to
//! change or remove a row — on SQLite and (when configured) PostgreSQL.

use station_core::audit::{Actor, AuditQuery, Via};
use station_core::{BackendRow, Config, Role, Station};
use station_store::{Store, testing};

async fn try_sql(store: &Store, sql: &'static str) -> Result<u64, String> {
    let r = match store {
        Store::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        Store::Postgres(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
    };
    r.map_err(|e| e.to_string())
}

/// A Station on `store` with its data folder in `dir`.
fn station(store: &Store, dir: &std::path::Path) -> Station {
    Station::with_store(Config { data_dir: dir.to_path_buf(), ..Config::default() }, store.clone()).unwrap().0
}

fn all(limit: i64) -> AuditQuery {
    AuditQuery { limit, ..Default::default() }
}

#[tokio::test]
async fn every_admin_action_is_one_row_and_rows_cannot_be_changed() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db.store, dir.path());
        let ann = st.account("test", "ann", "Ann").await.unwrap();
        let root = st.account("test", "root", "Root").await.unwrap();
        let ops = Actor::operator("ops");
        let web = Actor::account(&root, Via::Api);
        let chat = Actor::account(&root, Via::Chat("telegram".into()));

        // Nothing yet: reading accounts and balances is not an action.
        st.points(&ann.id).await.unwrap();
        assert!(st.audit_log(&all(10)).await.unwrap().is_empty(), "{k}");

        st.set_account_role(&root.id, Role::Admin, &ops).await.unwrap();
        st.grant_points(&ann, 40, "contest prize", &web, Some("prize-1")).await.unwrap();
        // The same grant retried (same idempotency key): applied once, recorded once.
        st.grant_points(&ann, 40, "contest prize", &web, Some("prize-1")).await.unwrap();
        st.adjust_points(&ann, -5, "refund reversed", &chat, None).await.unwrap();
        st.set_account_suspended(&ann.id, true, &ops).await.unwrap();
        st.set_account_suspended(&ann.id, false, &ops).await.unwrap();
        // No such account: nothing happened, nothing recorded.
        assert!(!st.set_account_suspended("nobody", true, &ops).await.unwrap(), "{k}");
        st.set_group_tool("telegram:-100", "resize", false, &chat).await.unwrap();
        let backend = BackendRow {
            name: "gpu-a".into(),
            url: "http://user:secret@10.0.0.5:8188".into(),
            max_concurrent: 2,
            tags: "[]".into(),
            created_at: 0,
        };
        st.save_runtime_backend(&backend, &ops).await.unwrap();
        assert!(st.remove_runtime_backend("gpu-a", &ops).await.unwrap(), "{k}");
        assert!(!st.remove_runtime_backend("gpu-a", &ops).await.unwrap(), "{k}");

        let rows = st.audit_log(&all(100)).await.unwrap();
        let seen: Vec<(&str, &str, &str, &str)> = rows
            .iter()
            .rev()
            .map(|r| (r.actor.as_str(), r.via.as_str(), r.action.as_str(), r.target.as_str()))
            .collect();
        let root_who = format!("account:{}", root.id);
        assert_eq!(
            seen,
            vec![
                ("operator:ops", "cli", "account.role", root.id.as_str()),
                (root_who.as_str(), "api", "points.grant", ann.id.as_str()),
                (root_who.as_str(), "telegram", "points.adjust", ann.id.as_str()),
                ("operator:ops", "cli", "account.suspend", ann.id.as_str()),
                ("operator:ops", "cli", "account.reinstate", ann.id.as_str()),
                (root_who.as_str(), "telegram", "tool.group", "resize"),
                ("operator:ops", "cli", "backend.add", "gpu-a"),
                ("operator:ops", "cli", "backend.remove", "gpu-a"),
            ],
            "{k}"
        );
        let grant = rows.iter().find(|r| r.action == "points.grant").unwrap();
        assert_eq!(grant.detail, "40 points to Ann: contest prize", "{k}");
        let added = rows.iter().find(|r| r.action == "backend.add").unwrap();
        assert!(!added.detail.contains("secret"), "{k}: a backend's password stays out of the log: {}", added.detail);
        assert!(rows.windows(2).all(|w| w[0].id > w[1].id && w[0].at >= w[1].at), "{k}: newest first");

        // Filters: an action prefix, an exact action, an actor, a target, paging.
        let points = st.audit_log(&AuditQuery { action: Some("points.".into()), ..all(50) }).await.unwrap();
        assert_eq!(
            points.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            ["points.adjust", "points.grant"],
            "{k}"
        );
        let exact = st.audit_log(&AuditQuery { action: Some("account.role".into()), ..all(50) }).await.unwrap();
        assert_eq!(exact.len(), 1, "{k}");
        let by_ops = st.audit_log(&AuditQuery { actor: Some("operator:ops".into()), ..all(50) }).await.unwrap();
        assert_eq!(by_ops.len(), 5, "{k}");
        let about_ann = st.audit_log(&AuditQuery { target: Some(ann.id.clone()), ..all(50) }).await.unwrap();
        assert_eq!(about_ann.len(), 4, "{k}");
        let first = st.audit_log(&all(3)).await.unwrap();
        let next = st.audit_log(&AuditQuery { before_id: Some(first[2].id), ..all(3) }).await.unwrap();
        assert_eq!(next[0].id, rows[3].id, "{k}: the next page starts after the last one shown");
        let future = st.audit_log(&AuditQuery { since: Some(i64::MAX), ..all(50) }).await.unwrap();
        assert!(future.is_empty(), "{k}");

        // Append-only, enforced by the database.
        for sql in ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"] {
            let err = try_sql(&db.store, sql).await.unwrap_err();
            assert!(err.contains("append-only"), "{k}: {sql}: {err}");
        }
        assert_eq!(st.audit_log(&all(100)).await.unwrap(), rows, "{k}: unchanged");
    }
}

#[tokio::test]
async fn lora_catalog_changes_and_sponsors_are_audited() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db.store, dir.path());
        let ops = Actor::operator("ops");
        let ann = st.account("test", "ann", "Ann").await.unwrap();
        let edit = station_core::loras::LoraEdit {
            checkpoint: Some("SDXL".into()),
            filename: Some("neon.safetensors".into()),
            visibility: Some(station_core::loras::Visibility::Public),
            ..Default::default()
        };
        let loras = st.loras();
        loras.add("neon", edit, &ops).await.unwrap();
        let tweak = station_core::loras::LoraEdit {
            trigger_words: Some(vec!["neon".into()]),
            name: Some("Neon".into()),
            ..Default::default()
        };
        loras.edit("neon", tweak, &ops).await.unwrap();
        loras.grant("neon", &ann.id, None, &ops).await.unwrap();
        assert!(loras.revoke("neon", &ann.id, &ops).await.unwrap(), "{k}");
        assert!(!loras.revoke("neon", &ann.id, &ops).await.unwrap(), "{k}: nothing to revoke, nothing recorded");
        loras.remove("neon", &ops).await.unwrap();
        st.grant_points(&ann, 100, "patron", &ops, None).await.unwrap();
        st.set_sponsor("telegram:-7", &ann, 20, &ops).await.unwrap();
        assert!(st.remove_sponsor("telegram:-7", &ops).await.unwrap(), "{k}");

        let rows = st.audit_log(&all(100)).await.unwrap();
        let seen: Vec<(&str, &str)> = rows.iter().rev().map(|r| (r.action.as_str(), r.detail.as_str())).collect();
        assert_eq!(
            seen,
            vec![
                ("lora.add", "neon (neon.safetensors, public)"),
                ("lora.edit", "changed name, trigger_words"),
                ("lora.grant", "Ann may use it for good"),
                ("lora.revoke", "Ann may no longer use it"),
                ("lora.remove", "removed with its grants"),
                ("points.grant", "100 points to Ann: patron"),
                ("sponsor.set", "Ann pays for telegram:-7, up to 20 points per member a day"),
                ("sponsor.remove", "telegram:-7 pays for itself again"),
            ],
            "{k}"
        );
    }
}
