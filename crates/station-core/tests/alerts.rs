//! Alert evaluation through the real core and store, on both databases:
//! a queue-age rule and a failure-rate rule fire once per subject (one
//! message row per sink), stay quiet while they keep firing, resolve once;
//! one failed job of one does not page; a rule that keeps firing is
//! repeated only as a reminder when `alerts.reminder_minutes` is set; the
//! evaluator's lease is held by one process at a time. (Sending to real sinks: `station/tests/alerts_cli.rs`.)

use station_core::config::{AlertRuleConfig, AlertSinkConfig};
use station_core::{Config, JobStatus, Station};
use station_store::testing::TestDb;
use station_store::{ClaimRequest, JobFinish, NewJob, Store, on_every_db};

fn station(db: &TestDb, dir: &std::path::Path) -> Station {
    station_with(db, dir, 0)
}

fn station_with(db: &TestDb, dir: &std::path::Path, reminder_minutes: u64) -> Station {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.alerts.reminder_minutes = reminder_minutes;
    config.alerts.rules = vec![
        AlertRuleConfig { kind: "queue_age".into(), minutes: Some(5.0), ..Default::default() },
        AlertRuleConfig {
            kind: "failure_rate".into(),
            percent: Some(50.0),
            minutes: Some(10.0),
            min_jobs: Some(3),
            ..Default::default()
        },
    ];
    let sink = |name: &str| AlertSinkConfig {
        name: Some(name.into()),
        kind: "webhook".into(),
        target: format!("http://127.0.0.1:9/{name}"),
        ..Default::default()
    };
    config.alerts.sinks = vec![sink("a"), sink("b")];
    Station::with_store(config, db.store.clone()).unwrap().0
}

async fn job(store: &Store, account: &str, service: &str, created: i64) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let new = NewJob {
        id: id.clone(),
        account_id: account.into(),
        tool_id: "t".into(),
        service: service.into(),
        params: Default::default(),
        priority: 0,
        max_attempts: 1,
        timeout_ms: 60_000,
        source: None,
    };
    store.insert_job(&new, created).await.unwrap();
    id
}

/// Claims every queued job of `service` and ends it: the first `failed` fail.
async fn end_jobs(store: &Store, service: &str, failed: usize) {
    let now = station_core::now_ms();
    let req = ClaimRequest { service, owner: "w", limit: 100, lease_ms: 60_000, per_account_running_cap: 100, now };
    let claimed = store.claim_jobs(&req).await.unwrap();
    let batch: Vec<JobFinish> = claimed
        .iter()
        .enumerate()
        .map(|(i, j)| JobFinish {
            settle: None,
            job_id: j.id.clone(),
            owner: "w".into(),
            status: if i < failed { JobStatus::Failed } else { JobStatus::Succeeded },
            outputs: None,
            error: (i < failed).then(|| ("execution".to_string(), "boom".to_string())),
            now,
            media: vec![],
            cancel_remote: false,
        })
        .collect();
    store.finish_jobs(&batch).await.unwrap();
}

type Owed = Vec<(String, String, String, String)>;

/// (kind, rule, subject, sink) of every message, sorted.
async fn messages(s: &Station) -> Owed {
    let mut m: Owed =
        s.alerts_overview(100).await.unwrap().recent.into_iter().map(|m| (m.kind, m.rule, m.subject, m.sink)).collect();
    m.sort();
    m
}

fn owed(kind: &str, rule: &str, subject: &str) -> Owed {
    ["a", "b"].iter().map(|s| (kind.into(), rule.into(), subject.into(), s.to_string())).collect()
}

async fn rules_fire_once_and_resolve_once(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let s = station(&db, dir.path());
    let ann = s.account("test", "ann", "Ann").await.unwrap();
    let now = station_core::now_ms();

    // A job waiting 6 minutes on a service nobody runs; another waiting 1 minute elsewhere.
    let old = job(&db.store, &ann.id, "gpu", now - 6 * 60_000).await;
    job(&db.store, &ann.id, "media", now - 60_000).await;
    assert_eq!(s.evaluate_alerts(true).await.unwrap(), 1, "{}", db.kind);
    assert_eq!(messages(&s).await, owed("firing", "queue_age", "gpu"), "{}", db.kind);
    // Still firing: nothing more is written, however often it is evaluated.
    for _ in 0..3 {
        assert_eq!(s.evaluate_alerts(true).await.unwrap(), 0, "{}", db.kind);
    }
    assert_eq!(messages(&s).await.len(), 2, "{}", db.kind);
    let text = s.alerts_overview(10).await.unwrap().recent[0].text.clone();
    assert!(text.contains("gpu jobs are waiting too long") && text.contains("has waited 6 min"), "{text}");

    // The old job ends: resolved once.
    db.store.cancel_job(&old, station_core::now_ms()).await.unwrap();
    assert_eq!(s.evaluate_alerts(true).await.unwrap(), 1, "{}", db.kind);
    assert_eq!(s.evaluate_alerts(true).await.unwrap(), 0, "{}", db.kind);
    let mut want = owed("firing", "queue_age", "gpu");
    want.extend(owed("resolved", "queue_age", "gpu"));
    want.sort();
    assert_eq!(messages(&s).await, want, "{}", db.kind);
    let states = &s.alerts_overview(1).await.unwrap().rules[0].states;
    assert_eq!((states.len(), states[0].state.as_str()), (1, "resolved"), "{}", db.kind);

    // One failed job of one does not page; 2 of 3 failed (67 % > 50 %) does.
    job(&db.store, &ann.id, "fails", now).await;
    end_jobs(&db.store, "fails", 1).await;
    assert_eq!(s.evaluate_alerts(true).await.unwrap(), 0, "{}", db.kind);
    job(&db.store, &ann.id, "fails", now).await;
    job(&db.store, &ann.id, "fails", now).await;
    end_jobs(&db.store, "fails", 1).await;
    assert_eq!(s.evaluate_alerts(true).await.unwrap(), 1, "{}", db.kind);
    assert_eq!(s.evaluate_alerts(true).await.unwrap(), 0, "{}", db.kind);
    want.extend(owed("firing", "failure_rate", "fails"));
    want.sort();
    assert_eq!(messages(&s).await, want, "{}", db.kind);
    let recent = s.alerts_overview(100).await.unwrap().recent;
    let text = recent.iter().find(|m| m.rule == "failure_rate").unwrap().text.clone();
    assert!(text.contains("67 % failed (2 of 3 jobs)"), "{text}");

    // One evaluator at a time: the lease is the holder's until it lapses.
    let t = station_core::now_ms();
    assert!(db.store.hold_lease("alerts", "p1", t, 1_000).await.unwrap());
    assert!(!db.store.hold_lease("alerts", "p2", t, 1_000).await.unwrap(), "{}", db.kind);
    assert!(db.store.hold_lease("alerts", "p1", t + 500, 1_000).await.unwrap(), "renewed");
    assert!(!db.store.hold_lease("alerts", "p2", t + 1_200, 1_000).await.unwrap(), "renewed until t+1500");
    assert!(db.store.hold_lease("alerts", "p2", t + 1_600, 1_000).await.unwrap(), "{}: taken over", db.kind);
    db.store.release_lease("alerts", "p2").await.unwrap();
    assert!(db.store.hold_lease("alerts", "p1", t + 1_700, 1_000).await.unwrap());
}

async fn a_rule_that_keeps_firing_is_repeated_only_as_a_reminder(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let s = station_with(&db, dir.path(), 30);
    let ann = s.account("test", "ann", "Ann").await.unwrap();
    let t0 = station_core::now_ms();
    job(&db.store, &ann.id, "gpu", t0 - 6 * 60_000).await;
    let minute = 60_000;
    assert_eq!(s.evaluate_alerts_at(t0, true).await.unwrap(), 1, "{}", db.kind);
    assert_eq!(s.evaluate_alerts_at(t0 + 29 * minute, true).await.unwrap(), 0, "{}", db.kind);
    assert_eq!(s.evaluate_alerts_at(t0 + 30 * minute, true).await.unwrap(), 1, "{}: a reminder", db.kind);
    assert_eq!(s.evaluate_alerts_at(t0 + 45 * minute, true).await.unwrap(), 0, "{}", db.kind);
    let mut want = owed("firing", "queue_age", "gpu");
    want.extend(owed("reminder", "queue_age", "gpu"));
    want.sort();
    assert_eq!(messages(&s).await, want, "{}", db.kind);
    let recent = s.alerts_overview(100).await.unwrap().recent;
    let reminder = recent.iter().find(|m| m.kind == "reminder").unwrap();
    assert!(reminder.text.starts_with("🔴 Still firing: gpu jobs are waiting too long"), "{}", reminder.text);
    assert!(reminder.text.contains("has waited 36 min"), "{}", reminder.text);
}

on_every_db!(rules_fire_once_and_resolve_once, a_rule_that_keeps_firing_is_repeated_only_as_a_reminder);
