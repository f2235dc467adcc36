//! Feature flags across processes (issue 27 item 2): a flag flipped by one
//! Station takes effect in another on the same database within the cache
//! bound (`limits.auth_cache_ms`), and at once on PostgreSQL, where the
//! change is announced; a tool switched off is unknown to submit.

use std::time::{Duration, Instant};

use station_core::audit::Actor;
use station_core::flags::{FlagRule, FlagState, FlagSubject};
use station_core::{Config, Station};
use station_store::{Store, testing};

fn station(store: Store, dir: &std::path::Path, ttl_ms: u64) -> Station {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.limits.auth_cache_ms = ttl_ms;
    Station::with_store(config, store).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_flipped_in_one_process_applies_in_another_within_the_bound() {
    for db in testing::all().await {
        let k = db.kind;
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ttl = 300;
        let a = station(db.store.clone(), dir_a.path(), ttl);
        let b = station(Store::connect(&db.url).await.unwrap(), dir_b.path(), ttl);
        let ann = a.account("test", "ann", "Ann").await.unwrap();
        let who = FlagSubject::account(&ann);
        // B has read the flags (none): training is on.
        assert!(b.feature_on("training", &who).await, "{k}");

        a.set_flag("training", FlagRule::off(), Some("not ready"), &Actor::operator("ops")).await.unwrap();
        assert!(!a.feature_on("training", &who).await, "{k}: the writer sees its change at once");
        // B notices once its copy is older than the bound.
        tokio::time::sleep(Duration::from_millis(ttl + 50)).await;
        assert!(!b.feature_on("training", &who).await, "{k}: B within the cache bound");

        // The feature's entry points refuse, naming the feature.
        let err = b.create_dataset(&ann, "my face", None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "feature: LoRA training from a user's dataset is switched off for your account right now; please try again later",
            "{k}"
        );

        // A tool off for Ann: unknown to her everywhere in B, submit included.
        a.set_flag("tool.resize", FlagRule::off(), None, &Actor::operator("ops")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(ttl + 50)).await;
        let mut params = serde_json::Map::new();
        params.insert("width".into(), serde_json::json!(4));
        let req = station_core::jobs::SubmitRequest { tool: "resize".into(), params, ..Default::default() };
        let err = b.submit(&ann, req).await.unwrap_err();
        assert!(matches!(err, station_core::jobs::SubmitError::UnknownTool(_)), "{k}: {err:?}");
        assert!(b.find_tool("resize", &ann).is_none(), "{k}");
        assert!(!b.listed_tools_for(&ann).iter().any(|t| t.id == "resize"), "{k}");

        // Removed: on again.
        assert!(a.unset_flag("tool.resize", &Actor::operator("ops")).await.unwrap(), "{k}");
        tokio::time::sleep(Duration::from_millis(ttl + 50)).await;
        b.refresh_flags_if_stale().await;
        assert!(b.find_tool("resize", &ann).is_some(), "{k}");
        let audit = a
            .audit_log(&station_core::audit::AuditQuery {
                action: Some("flag.".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let details: Vec<&str> = audit.iter().map(|r| r.detail.as_str()).collect();
        assert_eq!(
            details,
            ["tool.resize removed (was off); on for everyone", "tool.resize: off", "training: off"],
            "{k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_flip_is_announced_to_other_processes_at_once() {
    let Some(db) = testing::postgres().await else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A long cache bound: only the announcement can make B notice quickly.
    let mut a = station(db.store.clone(), dir_a.path(), 600_000);
    let mut b = station(Store::connect(&db.url).await.unwrap(), dir_b.path(), 600_000);
    a.join_processes().await.unwrap();
    b.join_processes().await.unwrap();
    let ann = a.account("test", "ann", "Ann").await.unwrap();
    let who = FlagSubject::account(&ann);
    assert!(b.feature_on("spells", &who).await);

    let rule = FlagRule { state: FlagState::Some, admins: true, ..FlagRule::off() };
    a.set_flag("spells", rule, None, &Actor::operator("ops")).await.unwrap();
    let started = Instant::now();
    while b.feature_on("spells", &who).await {
        assert!(started.elapsed() < Duration::from_secs(10), "B still had spells on 10 s after A switched it off");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("the other process applied the flag after {:?}", started.elapsed());
}
