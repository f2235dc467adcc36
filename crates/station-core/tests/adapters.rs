//! What front ends keep through the core — a source's inbox, a scope's
//! adapter state and a group's tool switches — on SQLite and (when
//! configured) PostgreSQL.

use station_core::{Config, Station};
use station_store::{now_ms, testing};

fn station(db: &testing::TestDb, dir: &std::path::Path) -> Station {
    let config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    Station::with_store(config, db.store.clone()).unwrap().0
}

#[tokio::test]
async fn an_inbox_keeps_events_once_in_lane_order_and_prunes_processed_ones() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        let inbox = st.inbox("bot:1");
        assert_eq!(inbox.source(), "bot:1");
        assert_eq!(inbox.max_seq().await.unwrap(), None, "{k}");
        assert!(inbox.insert(5, "chat:a", "{\"n\":5}").await.unwrap(), "{k}");
        assert!(!inbox.insert(5, "chat:a", "{\"n\":\"again\"}").await.unwrap(), "{k}: a redelivery is a no-op");
        assert!(inbox.insert(6, "chat:a", "{}").await.unwrap(), "{k}");
        assert!(inbox.insert(7, "chat:b", "{}").await.unwrap(), "{k}");
        assert!(st.inbox("bot:2").insert(5, "chat:a", "{}").await.unwrap(), "{k}: sources are separate");
        assert_eq!(inbox.max_seq().await.unwrap(), Some(7), "{k}");
        let pending: Vec<_> = inbox.pending(10).await.unwrap().into_iter().map(|r| (r.seq, r.lane)).collect();
        assert_eq!(pending, vec![(5, "chat:a".into()), (6, "chat:a".into()), (7, "chat:b".into())], "{k}");
        // Lane a: 5 first; while it is processing, 6 waits behind it.
        assert!(inbox.claim(5, "p1").await.unwrap(), "{k}");
        assert!(!inbox.claim(5, "p2").await.unwrap(), "{k}: claimed once");
        assert_eq!(inbox.next("chat:a").await.unwrap().map(|r| (r.seq, r.state)), Some((5, "processing".into())));
        assert_eq!(inbox.next("chat:b").await.unwrap().map(|r| r.seq), Some(7), "{k}: lanes are independent");
        // A stop: the claimed event comes back.
        assert_eq!(inbox.requeue().await.unwrap(), 1, "{k}");
        assert!(inbox.claim(5, "p2").await.unwrap(), "{k}");
        inbox.finish(5, None).await.unwrap();
        assert!(inbox.claim(6, "p2").await.unwrap(), "{k}");
        inbox.finish(6, Some("no such command")).await.unwrap();
        let rows = inbox.list().await.unwrap();
        let states: Vec<_> = rows.iter().map(|r| (r.seq, r.state.as_str(), r.attempts)).collect();
        assert_eq!(states, vec![(5, "done", 2), (6, "failed", 1), (7, "pending", 0)], "{k}");
        assert_eq!(rows[1].error.as_deref(), Some("no such command"), "{k}");
        // Processed before the cut-off goes (the newest event always stays).
        assert_eq!(inbox.prune(now_ms() + 1).await.unwrap(), 2, "{k}");
        assert_eq!(inbox.list().await.unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![7], "{k}");
        assert_eq!(inbox.max_seq().await.unwrap(), Some(7), "{k}");
        // Times can be given (tests of pruning).
        assert!(inbox.insert_at(8, "chat:b", "{}", 100).await.unwrap(), "{k}");
        inbox.finish_at(8, None, 100).await.unwrap();
        assert!(inbox.insert(9, "chat:b", "{}").await.unwrap(), "{k}");
        assert_eq!(inbox.prune(1_000).await.unwrap(), 1, "{k}");
    }
}

#[tokio::test]
async fn a_batch_is_stored_at_once_and_a_lane_advances_one_event_at_a_time() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        let inbox = st.inbox("bot:1");
        let ev = |seq: i64, lane: &str| (seq, lane.to_string(), "{}".to_string());
        let batch = vec![ev(1, "chat:a"), ev(2, "chat:b"), ev(3, "chat:a")];
        assert_eq!(inbox.insert_many(&batch).await.unwrap(), 3, "{k}");
        assert_eq!(inbox.insert_many(&[ev(3, "chat:a"), ev(4, "chat:a")]).await.unwrap(), 1, "{k}: redelivery skipped");
        assert_eq!(inbox.pending_lanes(10).await.unwrap(), vec!["chat:a".to_string(), "chat:b".into()], "{k}");
        // The lane's oldest first; held by its owner, another gets nothing.
        let first = inbox.advance("chat:a", "p1", None).await.unwrap().expect("claimed");
        assert_eq!((first.seq, first.state.as_str(), first.attempts), (1, "processing", 1), "{k}");
        assert!(inbox.advance("chat:a", "p2", None).await.unwrap().is_none(), "{k}: one at a time per lane");
        assert_eq!(inbox.advance("chat:b", "p2", None).await.unwrap().map(|r| r.seq), Some(2), "{k}");
        // Done and the next claimed in one step, in order; a failure is recorded too.
        let next = inbox.advance("chat:a", "p1", Some((1, None))).await.unwrap().expect("next");
        assert_eq!(next.seq, 3, "{k}");
        let last = inbox.advance("chat:a", "p1", Some((3, Some("refused")))).await.unwrap().expect("last");
        assert_eq!(last.seq, 4, "{k}");
        assert!(inbox.advance("chat:a", "p1", Some((4, None))).await.unwrap().is_none(), "{k}: lane empty");
        let states: Vec<(i64, String)> = inbox.list().await.unwrap().into_iter().map(|r| (r.seq, r.state)).collect();
        let want = [(1, "done"), (2, "processing"), (3, "failed"), (4, "done")];
        assert_eq!(states, want.map(|(s, t)| (s, t.to_string())).to_vec(), "{k}");
        assert!(inbox.pending_lanes(10).await.unwrap().is_empty(), "{k}");
    }
}

#[tokio::test]
async fn adapter_state_is_kept_per_scope_and_pruned_by_prefix() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        let state = st.adapter_state("bot:1");
        assert_eq!(state.scope(), "bot:1");
        assert_eq!(state.get("menu").await.unwrap(), None, "{k}");
        state.set("menu", "a").await.unwrap();
        state.set("menu", "b").await.unwrap();
        assert_eq!(state.get("menu").await.unwrap().as_deref(), Some("b"), "{k}");
        assert_eq!(st.adapter_state("bot:2").get("menu").await.unwrap(), None, "{k}: scopes are separate");
        state.set_at("album:1", "{}", 10).await.unwrap();
        state.set("album:2", "{}").await.unwrap();
        state.set_at("album_3", "{}", 10).await.unwrap();
        assert_eq!(state.prune("album:", 1_000).await.unwrap(), 1, "{k}");
        assert_eq!(state.get("album:1").await.unwrap(), None, "{k}");
        assert!(state.get("album:2").await.unwrap().is_some() && state.get("album_3").await.unwrap().is_some());
    }
}

#[tokio::test]
async fn group_tool_switches_default_to_enabled() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path());
        let group = "chat-group:9";
        assert!(st.group_tools(group).await.unwrap().is_empty(), "{k}");
        assert!(st.group_tool_enabled(group, "dream").await.unwrap(), "{k}: nobody switched it");
        st.set_group_tool(group, "dream", false, &station_core::audit::Actor::operator("acc-1")).await.unwrap();
        assert!(!st.group_tool_enabled(group, "dream").await.unwrap(), "{k}");
        assert!(st.group_tool_enabled("chat-group:10", "dream").await.unwrap(), "{k}: other groups unaffected");
        assert!(st.group_tool_enabled(group, "blur").await.unwrap(), "{k}");
        st.set_group_tool(group, "dream", true, &station_core::audit::Actor::operator("acc-2")).await.unwrap();
        let switches = st.group_tools(group).await.unwrap();
        assert_eq!(switches.len(), 1, "{k}");
        assert!(switches[0].enabled && switches[0].updated_by == "operator:acc-2", "{k}: {switches:?}");
        assert!(st.group_tool_enabled(group, "dream").await.unwrap(), "{k}");
    }
}
