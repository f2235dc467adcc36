//! Front ends' storage — the inbox, adapter state and per-group tool
//! switches — and the upgrade that moved the Telegram and Discord tables
//! into them, on SQLite and PostgreSQL.

use station_store::{GroupToolRow, InboxRow, Store, testing};

#[tokio::test]
async fn inbox_events_are_stored_once_claimed_once_and_requeued_after_a_stop() {
    for db in testing::all().await {
        let s = &db.store;
        let k = db.kind;
        assert_eq!(s.inbox_max_seq("tg:1").await.unwrap(), None, "{k}");
        assert!(s.inbox_insert("tg:1", 10, "c:5", "{\"a\":1}", 100).await.unwrap(), "{k}");
        // A redelivered event is a no-op.
        assert!(!s.inbox_insert("tg:1", 10, "c:5", "{\"a\":2}", 101).await.unwrap(), "{k}");
        assert!(s.inbox_insert("tg:1", 11, "c:5", "{}", 102).await.unwrap(), "{k}");
        assert!(s.inbox_insert("tg:1", 12, "c:6", "{}", 103).await.unwrap(), "{k}");
        // Another source's events are separate.
        assert!(s.inbox_insert("tg:2", 10, "c:5", "{}", 103).await.unwrap(), "{k}");
        assert_eq!(s.inbox_max_seq("tg:1").await.unwrap(), Some(12), "{k}");
        let pending = s.inbox_pending("tg:1", 10).await.unwrap();
        assert_eq!(pending.iter().map(|u| u.seq).collect::<Vec<_>>(), vec![10, 11, 12], "{k}");
        assert_eq!(pending[0].payload, "{\"a\":1}", "{k}");
        let next = s.inbox_next("tg:1", "c:5").await.unwrap().unwrap();
        assert_eq!(next.seq, 10, "{k}");
        assert!(s.inbox_claim("tg:1", 10, "me").await.unwrap(), "{k}");
        assert!(!s.inbox_claim("tg:1", 10, "other").await.unwrap(), "{k}: claimed twice");
        // Still the lane's next: processing blocks the ones behind it.
        assert_eq!(s.inbox_next("tg:1", "c:5").await.unwrap().unwrap().seq, 10, "{k}");
        // A stop mid-processing: back to pending at the next start.
        assert_eq!(s.inbox_requeue("tg:1").await.unwrap(), 1, "{k}");
        assert!(s.inbox_claim("tg:1", 10, "me2").await.unwrap(), "{k}");
        s.inbox_finish("tg:1", 10, None, 200).await.unwrap();
        assert_eq!(s.inbox_next("tg:1", "c:5").await.unwrap().unwrap().seq, 11, "{k}");
        assert!(s.inbox_claim("tg:1", 11, "me2").await.unwrap(), "{k}");
        s.inbox_finish("tg:1", 11, Some("boom"), 200).await.unwrap();
        assert!(s.inbox_next("tg:1", "c:5").await.unwrap().is_none(), "{k}");
        let all = s.inbox_list("tg:1").await.unwrap();
        assert_eq!(all.iter().map(|u| u.state.as_str()).collect::<Vec<_>>(), vec!["done", "failed", "pending"], "{k}");
        assert_eq!(all[0].attempts, 2, "{k}");
        assert_eq!(all[0].claimed_by.as_deref(), Some("me2"), "{k}");
        assert_eq!((all[1].error.as_deref(), all[1].done_at), (Some("boom"), Some(200)), "{k}");
        // Pruning keeps unfinished rows and the newest row.
        assert_eq!(s.inbox_prune("tg:1", 1_000).await.unwrap(), 2, "{k}");
        assert_eq!(s.inbox_max_seq("tg:1").await.unwrap(), Some(12), "{k}");
        assert_eq!(s.inbox_list("tg:2").await.unwrap().len(), 1, "{k}");
    }
}

#[tokio::test]
async fn adapter_state_is_kept_per_scope_and_pruned_by_prefix() {
    for db in testing::all().await {
        let s = &db.store;
        let k = db.kind;
        assert_eq!(s.adapter_state("tg:1", "commands").await.unwrap(), None, "{k}");
        s.set_adapter_state("tg:1", "commands", "abc", 1).await.unwrap();
        s.set_adapter_state("tg:1", "commands", "def", 2).await.unwrap();
        assert_eq!(s.adapter_state("tg:1", "commands").await.unwrap().as_deref(), Some("def"), "{k}");
        assert_eq!(s.adapter_state("tg:2", "commands").await.unwrap(), None, "{k}");
        s.set_adapter_state("tg:1", "album:old", "{}", 10).await.unwrap();
        s.set_adapter_state("tg:1", "album:new", "{}", 1_000).await.unwrap();
        s.set_adapter_state("tg:1", "album_x", "{}", 10).await.unwrap();
        s.set_adapter_state("tg:2", "album:old", "{}", 10).await.unwrap();
        // A plain prefix: `_` is not a wildcard, and other scopes are left alone.
        assert_eq!(s.prune_adapter_state("tg:1", "album:", 500).await.unwrap(), 1, "{k}");
        assert_eq!(s.adapter_state("tg:1", "album:old").await.unwrap(), None, "{k}");
        assert!(s.adapter_state("tg:1", "album:new").await.unwrap().is_some(), "{k}");
        assert!(s.adapter_state("tg:1", "album_x").await.unwrap().is_some(), "{k}");
        assert!(s.adapter_state("tg:2", "album:old").await.unwrap().is_some(), "{k}");
    }
}

#[tokio::test]
async fn group_tool_switches_are_kept_per_group() {
    for db in testing::all().await {
        let s = &db.store;
        let k = db.kind;
        assert!(s.group_tools("discord-guild:1").await.unwrap().is_empty(), "{k}");
        s.set_group_tool("discord-guild:1", "dream", false, "acc1", 5).await.unwrap();
        s.set_group_tool("discord-guild:1", "blur", false, "acc1", 6).await.unwrap();
        s.set_group_tool("discord-guild:1", "blur", true, "acc2", 7).await.unwrap();
        s.set_group_tool("discord-guild:2", "dream", false, "acc1", 8).await.unwrap();
        let row = |tool_id: &str, enabled, by: &str, at| GroupToolRow {
            tool_id: tool_id.into(),
            enabled,
            updated_by: by.into(),
            updated_at: at,
        };
        assert_eq!(
            s.group_tools("discord-guild:1").await.unwrap(),
            vec![row("blur", true, "acc2", 7), row("dream", false, "acc1", 5)],
            "{k}"
        );
        assert_eq!(s.group_tools("discord-guild:2").await.unwrap().len(), 1, "{k}");
    }
}

/// Rows as the Telegram and Discord adapters wrote them before migration 12.
const OLD_ROWS: &str = "
INSERT INTO telegram_updates (bot_id, update_id, chat_key, payload, state, attempts, claimed_by, error, received_at, done_at)
VALUES ('123', 7, 'chat:5', '{\"update_id\":7}', 'done', 1, 'telegram-a', NULL, 1000, 1100),
       ('123', 8, 'chat:5', '{\"update_id\":8}', 'failed', 2, 'telegram-a', 'boom', 1200, 1300),
       ('123', 9, 'chat:-100', '{\"update_id\":9}', 'pending', 0, NULL, NULL, 1400, NULL),
       ('456', 9, 'user:3', '{}', 'processing', 1, 'telegram-b', NULL, 1500, NULL);
INSERT INTO telegram_files (bot_id, media_id, kind, file_id, created_at)
VALUES ('123', 'm1', 'photo', 'AgA-photo', 2000), ('123', 'm1', 'document', 'BQA-doc', 2001);
INSERT INTO telegram_meta (bot_id, key, value, updated_at)
VALUES ('123', 'commands', '{\"commands\":[]}', 3000), ('123', 'album:g1', '{\"name\":\"make\"}', 3001),
       ('456', 'admin_menus', '[1,2]', 3002);
INSERT INTO discord_guild_tools (guild_id, tool_id, enabled, updated_by, updated_at)
VALUES ('987', 'dream', 0, 'acc1', 4000), ('987', 'blur', 1, 'acc2', 4001), ('988', 'dream', 0, 'acc3', 4002);
";

async fn exec(store: &Store, sql: &'static str) -> Result<(), sqlx::Error> {
    match store {
        Store::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        Store::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
    }
}

#[tokio::test]
async fn the_upgrade_moves_telegram_and_discord_rows_into_the_neutral_tables() {
    for db in testing::all_at(11).await {
        let s = &db.store;
        let k = db.kind;
        exec(s, OLD_ROWS).await.unwrap_or_else(|e| panic!("{k}: old rows: {e}"));
        s.migrate().await.unwrap();
        let inbox = s.inbox_list("telegram:123").await.unwrap();
        let row =
            |seq, lane: &str, payload: &str, state: &str, attempts, by: Option<&str>, error: Option<&str>, at, done| {
                InboxRow {
                    source: "telegram:123".into(),
                    seq,
                    lane: lane.into(),
                    payload: payload.into(),
                    state: state.into(),
                    attempts,
                    claimed_by: by.map(Into::into),
                    error: error.map(Into::into),
                    received_at: at,
                    done_at: done,
                }
            };
        assert_eq!(
            inbox,
            vec![
                row(7, "chat:5", "{\"update_id\":7}", "done", 1, Some("telegram-a"), None, 1000, Some(1100)),
                row(8, "chat:5", "{\"update_id\":8}", "failed", 2, Some("telegram-a"), Some("boom"), 1200, Some(1300)),
                row(9, "chat:-100", "{\"update_id\":9}", "pending", 0, None, None, 1400, None),
            ],
            "{k}"
        );
        let other = s.inbox_list("telegram:456").await.unwrap();
        assert_eq!((other.len(), other[0].state.as_str(), other[0].lane.as_str()), (1, "processing", "user:3"), "{k}");
        // The inbox carries on where the old table stopped.
        assert_eq!(s.inbox_max_seq("telegram:123").await.unwrap(), Some(9), "{k}");
        assert!(!s.inbox_insert("telegram:123", 9, "chat:-100", "{}", 5000).await.unwrap(), "{k}");
        assert_eq!(s.inbox_requeue("telegram:456").await.unwrap(), 1, "{k}");

        let state = |scope: &'static str, key: &'static str| s.adapter_state(scope, key);
        assert_eq!(state("telegram:123", "commands").await.unwrap().as_deref(), Some("{\"commands\":[]}"), "{k}");
        assert_eq!(state("telegram:123", "album:g1").await.unwrap().as_deref(), Some("{\"name\":\"make\"}"), "{k}");
        assert_eq!(state("telegram:456", "admin_menus").await.unwrap().as_deref(), Some("[1,2]"), "{k}");
        assert_eq!(state("telegram:123", "file:photo:m1").await.unwrap().as_deref(), Some("AgA-photo"), "{k}");
        assert_eq!(state("telegram:123", "file:document:m1").await.unwrap().as_deref(), Some("BQA-doc"), "{k}");
        assert_eq!(s.prune_adapter_state("telegram:123", "album:", 3002).await.unwrap(), 1, "{k}: timestamps kept");

        let tools = s.group_tools("discord-guild:987").await.unwrap();
        let switches: Vec<_> = tools.iter().map(|t| (t.tool_id.as_str(), t.enabled, t.updated_by.as_str())).collect();
        assert_eq!(switches, vec![("blur", true, "acc2"), ("dream", false, "acc1")], "{k}");
        assert_eq!(tools[1].updated_at, 4000, "{k}");
        assert_eq!(s.group_tools("discord-guild:988").await.unwrap().len(), 1, "{k}");

        for gone in [
            "SELECT 1 FROM telegram_updates",
            "SELECT 1 FROM telegram_files",
            "SELECT 1 FROM telegram_meta",
            "SELECT 1 FROM discord_guild_tools",
        ] {
            assert!(exec(s, gone).await.is_err(), "{k}: {gone}: the old table is still there");
        }
    }
}
