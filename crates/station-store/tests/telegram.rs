//! Telegram's inbox, file-id cache and per-bot facts — on SQLite and PostgreSQL.

use station_store::testing;

#[tokio::test]
async fn updates_are_stored_once_claimed_once_and_requeued_after_a_stop() {
    for db in testing::all().await {
        let s = &db.store;
        let k = db.kind;
        assert_eq!(s.max_telegram_update_id("1").await.unwrap(), None, "{k}");
        assert!(s.insert_telegram_update("1", 10, "c:5", "{\"a\":1}", 100).await.unwrap(), "{k}");
        // A redelivered update is a no-op.
        assert!(!s.insert_telegram_update("1", 10, "c:5", "{\"a\":2}", 101).await.unwrap(), "{k}");
        assert!(s.insert_telegram_update("1", 11, "c:5", "{}", 102).await.unwrap(), "{k}");
        assert!(s.insert_telegram_update("1", 12, "c:6", "{}", 103).await.unwrap(), "{k}");
        // Another bot's updates are separate.
        assert!(s.insert_telegram_update("2", 10, "c:5", "{}", 103).await.unwrap(), "{k}");
        assert_eq!(s.max_telegram_update_id("1").await.unwrap(), Some(12), "{k}");
        let pending = s.pending_telegram_updates("1", 10).await.unwrap();
        assert_eq!(pending.iter().map(|u| u.update_id).collect::<Vec<_>>(), vec![10, 11, 12], "{k}");
        assert_eq!(pending[0].payload, "{\"a\":1}", "{k}");
        let next = s.next_telegram_update("1", "c:5").await.unwrap().unwrap();
        assert_eq!(next.update_id, 10, "{k}");
        assert!(s.claim_telegram_update("1", 10, "me").await.unwrap(), "{k}");
        assert!(!s.claim_telegram_update("1", 10, "other").await.unwrap(), "{k}: claimed twice");
        // Still the chat's next: processing blocks the ones behind it.
        assert_eq!(s.next_telegram_update("1", "c:5").await.unwrap().unwrap().update_id, 10, "{k}");
        // A stop mid-processing: back to pending at the next start.
        assert_eq!(s.requeue_telegram_updates("1").await.unwrap(), 1, "{k}");
        assert!(s.claim_telegram_update("1", 10, "me2").await.unwrap(), "{k}");
        s.finish_telegram_update("1", 10, None, 200).await.unwrap();
        assert_eq!(s.next_telegram_update("1", "c:5").await.unwrap().unwrap().update_id, 11, "{k}");
        assert!(s.claim_telegram_update("1", 11, "me2").await.unwrap(), "{k}");
        s.finish_telegram_update("1", 11, Some("boom"), 200).await.unwrap();
        assert!(s.next_telegram_update("1", "c:5").await.unwrap().is_none(), "{k}");
        let all = s.telegram_updates("1").await.unwrap();
        assert_eq!(all.iter().map(|u| u.state.as_str()).collect::<Vec<_>>(), vec!["done", "failed", "pending"], "{k}");
        assert_eq!(all[0].attempts, 2, "{k}");
        // Pruning keeps unfinished rows and the newest row.
        assert_eq!(s.prune_telegram_updates("1", 1_000).await.unwrap(), 2, "{k}");
        assert_eq!(s.max_telegram_update_id("1").await.unwrap(), Some(12), "{k}");
    }
}

#[tokio::test]
async fn file_ids_and_meta() {
    for db in testing::all().await {
        let s = &db.store;
        let k = db.kind;
        assert_eq!(s.telegram_file_id("1", "m1", "photo").await.unwrap(), None, "{k}");
        s.save_telegram_file_id("1", "m1", "photo", "AgA1", 1).await.unwrap();
        s.save_telegram_file_id("1", "m1", "photo", "AgA2", 2).await.unwrap();
        assert_eq!(s.telegram_file_id("1", "m1", "photo").await.unwrap().as_deref(), Some("AgA2"), "{k}");
        assert_eq!(s.telegram_file_id("1", "m1", "document").await.unwrap(), None, "{k}");
        assert_eq!(s.telegram_file_id("2", "m1", "photo").await.unwrap(), None, "{k}");
        s.set_telegram_meta("1", "commands", "abc", 1).await.unwrap();
        s.set_telegram_meta("1", "commands", "def", 2).await.unwrap();
        assert_eq!(s.telegram_meta("1", "commands").await.unwrap().as_deref(), Some("def"), "{k}");
        assert_eq!(s.telegram_meta("1", "webhook").await.unwrap(), None, "{k}");
    }
}
