//! The points ledger's guarantees, on SQLite and (when configured) PostgreSQL:
//! idempotent entries, holds that cannot overdraw even under heavy
//! concurrency, exactly one settlement per job, and an audit that stays clean
//! through random sequences of operations.

use station_store::Role;
use std::collections::HashMap;

use proptest::prelude::*;
use station_store::testing::{self, TestDb};
use station_store::{
    ClaimRequest, EntryKind, FinishSettle, Finished, JobFinish, JobStatus, LedgerError, NewEntry, NewJob, Posted,
    Settlement, Store,
};

fn job(account: &str) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        account_id: account.into(),
        tool_id: "upscale".into(),
        service: "comfyui".into(),
        params: serde_json::Map::new(),
        priority: 0,
        max_attempts: 3,
        timeout_ms: 60_000,
        source: None,
    }
}

fn entry<'a>(key: &'a str, account: &'a str, kind: EntryKind, amount: i64) -> NewEntry<'a> {
    NewEntry { idem_key: key, account_id: account, kind, amount, job_id: None, reason: Some("test"), actor: "test" }
}

/// Marks a job terminal the way a worker's `finish_job` would, without the
/// lease dance (the ledger does not care who finished it).
async fn set_status(store: &Store, id: &str, status: JobStatus) {
    let sql = "UPDATE jobs SET status = $1, finished_at = 1 WHERE id = $2";
    match store {
        Store::Sqlite(p) => sqlx::query(sql).bind(status.as_str()).bind(id).execute(p).await.map(|_| ()),
        Store::Postgres(p) => sqlx::query(sql).bind(status.as_str()).bind(id).execute(p).await.map(|_| ()),
    }
    .unwrap();
}

async fn assert_clean(db: &TestDb) {
    let problems = db.store.audit_points().await.unwrap();
    assert!(problems.is_empty(), "{}: audit found {problems:#?}", db.kind);
}

#[tokio::test]
async fn grants_are_idempotent_and_balance_follows_the_ledger() {
    for db in testing::all().await {
        let s = &db.store;
        let first = s.post_entry(&entry("grant:start:a", "a", EntryKind::Grant, 50), 1).await.unwrap();
        assert!(matches!(first, Posted::Applied(_)), "{}", db.kind);
        let again = s.post_entry(&entry("grant:start:a", "a", EntryKind::Grant, 50), 2).await.unwrap();
        assert_eq!(again, Posted::Duplicate(first.entry().clone()), "{}", db.kind);
        s.post_entry(&entry("adj:1", "a", EntryKind::Adjustment, -20), 3).await.unwrap();
        let b = s.balance("a").await.unwrap();
        assert_eq!((b.balance, b.held, b.available()), (30, 0, 30), "{}", db.kind);
        // Newest first, with who and why.
        let h = s.ledger_history("a", None, 10).await.unwrap();
        assert_eq!(h.iter().map(|e| e.amount).collect::<Vec<_>>(), vec![-20, 50], "{}", db.kind);
        assert_eq!(h[1].kind(), Some(EntryKind::Grant));
        assert_eq!(h[1].actor, "test");
        // An adjustment cannot take more than is there.
        let err = s.post_entry(&entry("adj:2", "a", EntryKind::Adjustment, -31), 4).await.unwrap_err();
        assert!(matches!(err, LedgerError::Insufficient { needed: 31, available: 30 }), "{}: {err}", db.kind);
        assert_eq!(s.balance("a").await.unwrap().balance, 30);
        // Hold kinds cannot be posted directly.
        let err = s.post_entry(&entry("x", "a", EntryKind::Capture, -1), 5).await.unwrap_err();
        assert!(err.to_string().contains("kind"), "{err}");
        assert_clean(&db).await;
    }
}

#[tokio::test]
async fn a_hold_without_points_writes_nothing() {
    for db in testing::all().await {
        let s = &db.store;
        s.post_entry(&entry("g", "a", EntryKind::Grant, 5), 1).await.unwrap();
        let j = job("a");
        let err = s.insert_job_with_hold(&j, 6, "test", 2).await.unwrap_err();
        assert!(matches!(err, LedgerError::Insufficient { needed: 6, available: 5 }), "{}: {err}", db.kind);
        assert!(s.get_job(&j.id).await.unwrap().is_none(), "{}: job must not be queued", db.kind);
        assert!(s.hold_for_job(&j.id).await.unwrap().is_none());
        assert!(s.ledger_for_job(&j.id).await.unwrap().is_empty());
        // Exactly enough works, and the job reads back like a plain insert.
        let row = s.insert_job_with_hold(&j, 5, "test", 3).await.unwrap();
        let plain = s.insert_job(&job("a"), 3).await.unwrap();
        assert_eq!(row.status(), JobStatus::Queued);
        assert_eq!((row.tool_id.as_str(), row.service.as_str()), (plain.tool_id.as_str(), plain.service.as_str()));
        assert_eq!(plain.fair_key, row.fair_key + 1, "{}: fair keys continue across both paths", db.kind);
        let b = s.balance("a").await.unwrap();
        assert_eq!((b.balance, b.held, b.available()), (5, 5, 0), "{}", db.kind);
        // A free job needs no points at all.
        s.insert_job_with_hold(&job("nobody"), 0, "test", 4).await.unwrap();
        assert_clean(&db).await;
    }
}

fn settled_finish(id: &str, owner: &str, status: JobStatus, account: &str, charge: Option<i64>) -> JobFinish {
    JobFinish {
        job_id: id.into(),
        owner: owner.into(),
        status,
        outputs: (status == JobStatus::Succeeded).then(Vec::new),
        error: (status != JobStatus::Succeeded).then(|| ("execution_error".to_string(), "boom".to_string())),
        now: 10,
        media: vec![],
        cancel_remote: false,
        settle: Some(FinishSettle {
            account_id: account.into(),
            charge,
            reason: charge.is_none().then(|| "execution_error".to_string()),
            actor: format!("worker:{owner}"),
        }),
    }
}

#[tokio::test]
async fn a_finish_settles_its_jobs_holds_in_its_own_transaction_once() {
    for db in testing::all().await {
        let s = &db.store;
        s.post_entry(&entry("g:a", "a", EntryKind::Grant, 100), 1).await.unwrap();
        s.post_entry(&entry("g:b", "b", EntryKind::Grant, 100), 1).await.unwrap();
        let won = s.insert_job_with_hold(&job("b"), 30, "test", 2).await.unwrap();
        let lost = s.insert_job_with_hold(&job("a"), 20, "test", 2).await.unwrap();
        let free = s.insert_job_with_hold(&job("a"), 0, "test", 2).await.unwrap();
        let claim = |now| ClaimRequest {
            service: "comfyui",
            owner: "w1",
            limit: 10,
            lease_ms: 30_000,
            per_account_running_cap: 10,
            now,
        };
        let claimed = s.claim_jobs(&claim(3)).await.unwrap();
        assert_eq!(claimed.len(), 3, "{}", db.kind);
        // `lost`'s lease passes to another worker before w1 finishes it.
        let sql = "UPDATE jobs SET lease_owner = 'w2' WHERE id = $1";
        match s {
            Store::Sqlite(p) => sqlx::query(sql).bind(&lost.id).execute(p).await.map(|_| ()),
            Store::Postgres(p) => sqlx::query(sql).bind(&lost.id).execute(p).await.map(|_| ()),
        }
        .unwrap();
        let failed = s.insert_job_with_hold(&job("a"), 15, "test", 4).await.unwrap();
        let second = s.claim_jobs(&claim(5)).await.unwrap();
        assert_eq!(second.len(), 1, "{}", db.kind);

        let got = s
            .finish_jobs_settling(&[
                settled_finish(&won.id, "w1", JobStatus::Succeeded, "b", Some(25)),
                settled_finish(&lost.id, "w1", JobStatus::Succeeded, "a", Some(20)),
                settled_finish(&free.id, "w1", JobStatus::Succeeded, "a", Some(0)),
                settled_finish(&failed.id, "w1", JobStatus::Failed, "a", None),
            ])
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                Finished { recorded: true, settled: Some(Settlement::Captured { charged: 25, held: 30 }) },
                Finished { recorded: false, settled: None },
                Finished { recorded: true, settled: Some(Settlement::NoHold) },
                Finished { recorded: true, settled: Some(Settlement::Released { held: 15 }) },
            ],
            "{}",
            db.kind
        );
        // The stale worker's outcome and settlement left `lost` untouched.
        assert_eq!(s.hold_for_job(&lost.id).await.unwrap().unwrap().state, "active", "{}", db.kind);
        assert!(!s.get_job(&lost.id).await.unwrap().unwrap().status().is_terminal(), "{}", db.kind);
        let (a, b) = (s.balance("a").await.unwrap(), s.balance("b").await.unwrap());
        assert_eq!((a.balance, a.held, b.balance, b.held), (100, 20, 75, 0), "{}", db.kind);
        // Settling again on its own finds nothing left to do: charged once.
        assert_eq!(s.capture_hold(&won.id, 30, "sweeper", 11).await.unwrap(), Settlement::AlreadySettled);
        assert_eq!(s.release_hold(&failed.id, "sweeper", None, 11).await.unwrap(), Settlement::AlreadySettled);
        let kinds: Vec<_> = s.ledger_for_job(&won.id).await.unwrap().iter().map(|e| e.kind.clone()).collect();
        assert_eq!(kinds, ["hold", "capture"], "{}", db.kind);
        assert_clean(&db).await;
    }
}

#[tokio::test]
async fn duplicate_capture_charges_once_and_settlements_exclude_each_other() {
    for db in testing::all().await {
        let s = &db.store;
        s.post_entry(&entry("g", "a", EntryKind::Grant, 100), 1).await.unwrap();
        let j = s.insert_job_with_hold(&job("a"), 40, "test", 2).await.unwrap();
        set_status(s, &j.id, JobStatus::Succeeded).await;
        assert_eq!(
            s.capture_hold(&j.id, 25, "worker:a", 3).await.unwrap(),
            Settlement::Captured { charged: 25, held: 40 },
            "{}",
            db.kind
        );
        assert_eq!(s.capture_hold(&j.id, 25, "worker:b", 4).await.unwrap(), Settlement::AlreadySettled);
        assert_eq!(s.release_hold(&j.id, "worker:b", None, 5).await.unwrap(), Settlement::AlreadySettled);
        let b = s.balance("a").await.unwrap();
        assert_eq!((b.balance, b.held), (75, 0), "{}: charged once, remainder returned", db.kind);
        let kinds: Vec<_> = s.ledger_for_job(&j.id).await.unwrap().iter().map(|e| e.kind.clone()).collect();
        assert_eq!(kinds, ["hold", "capture"], "{}", db.kind);

        // A capture larger than the hold is capped at it.
        let k = s.insert_job_with_hold(&job("a"), 10, "test", 6).await.unwrap();
        set_status(s, &k.id, JobStatus::Succeeded).await;
        assert_eq!(s.capture_hold(&k.id, 999, "w", 7).await.unwrap(), Settlement::Captured { charged: 10, held: 10 });
        // Released jobs cost nothing; a job without a hold says so.
        let r = s.insert_job_with_hold(&job("a"), 30, "test", 8).await.unwrap();
        set_status(s, &r.id, JobStatus::Failed).await;
        assert_eq!(s.release_hold(&r.id, "w", Some("failed"), 9).await.unwrap(), Settlement::Released { held: 30 });
        assert_eq!(s.capture_hold(&r.id, 30, "w", 10).await.unwrap(), Settlement::AlreadySettled);
        assert_eq!(s.release_hold("no-such-job", "w", None, 11).await.unwrap(), Settlement::NoHold);
        assert_eq!(s.balance("a").await.unwrap().balance, 65, "{}", db.kind);
        assert_clean(&db).await;
    }
}

#[tokio::test]
async fn concurrent_captures_and_releases_of_one_job_settle_it_once() {
    for db in testing::all().await {
        let s = &db.store;
        s.post_entry(&entry("g", "a", EntryKind::Grant, 100), 1).await.unwrap();
        let j = s.insert_job_with_hold(&job("a"), 60, "test", 2).await.unwrap();
        set_status(s, &j.id, JobStatus::Succeeded).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let (s, id) = (s.clone(), j.id.clone());
            tasks.spawn(async move {
                if i % 2 == 0 {
                    s.capture_hold(&id, 60, &format!("w{i}"), 3).await.unwrap()
                } else {
                    s.release_hold(&id, &format!("w{i}"), None, 3).await.unwrap()
                }
            });
        }
        let mut settled = 0;
        while let Some(r) = tasks.join_next().await {
            if !matches!(r.unwrap(), Settlement::AlreadySettled) {
                settled += 1;
            }
        }
        assert_eq!(settled, 1, "{}", db.kind);
        let b = s.balance("a").await.unwrap();
        assert!(b.balance == 40 || b.balance == 100, "{}: {b:?}", db.kind);
        assert_eq!(b.held, 0);
        assert_clean(&db).await;
    }
}

#[tokio::test]
async fn five_hundred_concurrent_holds_on_one_hundred_points() {
    for db in testing::all().await {
        let s = &db.store;
        s.post_entry(&entry("g", "a", EntryKind::Grant, 100), 1).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..500 {
            let s = s.clone();
            tasks.spawn(async move { s.insert_job_with_hold(&job("a"), 1, "test", 2).await });
        }
        let (mut ok, mut refused) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(LedgerError::Insufficient { needed: 1, available: 0 }) => refused += 1,
                Err(e) => panic!("{}: unexpected error {e}", db.kind),
            }
        }
        assert_eq!((ok, refused), (100, 400), "{}", db.kind);
        let b = s.balance("a").await.unwrap();
        assert_eq!((b.balance, b.held, b.available()), (100, 100, 0), "{}", db.kind);
        let queued = s.list_jobs(&station_store::JobFilter { limit: 1000, ..Default::default() }).await.unwrap();
        assert_eq!(queued.len(), 100, "{}: only accepted jobs are queued", db.kind);
        assert_clean(&db).await;
    }
}

#[tokio::test]
async fn audit_reports_a_terminal_job_with_an_active_hold_and_a_tampered_balance() {
    for db in testing::all().await {
        let s = &db.store;
        s.post_entry(&entry("g", "a", EntryKind::Grant, 10), 1).await.unwrap();
        let j = s.insert_job_with_hold(&job("a"), 4, "test", 2).await.unwrap();
        set_status(s, &j.id, JobStatus::Failed).await;
        let problems = s.audit_points().await.unwrap();
        assert_eq!(problems.len(), 1, "{}: {problems:#?}", db.kind);
        assert_eq!(problems[0].job_id.as_deref(), Some(j.id.as_str()));
        assert!(problems[0].problem.contains("still active"), "{}", problems[0]);
        // The sweep that repairs this finds it.
        let stuck = s.terminal_jobs_with_active_holds(10).await.unwrap();
        assert_eq!(stuck.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [j.id.as_str()]);
        s.release_hold(&j.id, "sweeper", None, 3).await.unwrap();
        assert!(s.terminal_jobs_with_active_holds(10).await.unwrap().is_empty());
        assert_clean(&db).await;

        let sql = "UPDATE balances SET balance = balance + 7 WHERE account_id = 'a'";
        match s {
            Store::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Store::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
        .unwrap();
        let problems = s.audit_points().await.unwrap();
        assert!(
            problems.iter().any(|p| p.account_id.as_deref() == Some("a") && p.problem.contains("ledger sums")),
            "{}: {problems:#?}",
            db.kind
        );
    }
}

/// One step of a random points history.
#[derive(Debug, Clone)]
enum Step {
    Grant(i64),
    Adjust(i64),
    Hold(i64),
    /// Finish the n-th open job successfully and capture this much.
    Capture(usize, i64),
    /// Finish the n-th open job unsuccessfully and release it.
    Release(usize),
    /// Capture an already settled job again.
    Recapture(usize),
    /// Refund the n-th charged job (twice, to prove it is idempotent).
    Refund(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1i64..50).prop_map(Step::Grant),
        (-40i64..40).prop_filter("non-zero", |n| *n != 0).prop_map(Step::Adjust),
        (1i64..30).prop_map(Step::Hold),
        (any::<usize>(), 0i64..40).prop_map(|(i, c)| Step::Capture(i, c)),
        any::<usize>().prop_map(Step::Release),
        any::<usize>().prop_map(Step::Recapture),
        any::<usize>().prop_map(Step::Refund),
    ]
}

#[derive(Default, Debug)]
struct Model {
    balance: i64,
    held: i64,
    open: Vec<(String, i64)>,
    settled: Vec<String>,
    charged: Vec<(String, i64)>,
    refunded: HashMap<String, bool>,
}

async fn play(db: &TestDb, account: &str, steps: &[Step]) {
    let s = &db.store;
    let mut m = Model::default();
    for (n, st) in steps.iter().enumerate() {
        let key = format!("{account}:{n}");
        match st {
            Step::Grant(a) => {
                s.post_entry(&entry(&key, account, EntryKind::Grant, *a), 1).await.unwrap();
                m.balance += a;
            }
            Step::Adjust(a) => match s.post_entry(&entry(&key, account, EntryKind::Adjustment, *a), 1).await {
                Ok(_) => m.balance += a,
                Err(LedgerError::Insufficient { available, .. }) => {
                    assert!(m.balance - m.held + a < 0, "refused an affordable adjustment {a}");
                    assert_eq!(available, m.balance - m.held);
                }
                Err(e) => panic!("{e}"),
            },
            Step::Hold(a) => {
                let j = job(account);
                match s.insert_job_with_hold(&j, *a, "test", 1).await {
                    Ok(_) => {
                        m.held += a;
                        m.open.push((j.id, *a));
                    }
                    Err(LedgerError::Insufficient { .. }) => {
                        assert!(m.balance - m.held < *a, "refused an affordable hold");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Step::Capture(i, c) if !m.open.is_empty() => {
                let (id, amount) = m.open.remove(i % m.open.len());
                set_status(s, &id, JobStatus::Succeeded).await;
                let charged = (*c).min(amount);
                assert_eq!(
                    s.capture_hold(&id, *c, "test", 1).await.unwrap(),
                    Settlement::Captured { charged, held: amount }
                );
                m.held -= amount;
                m.balance -= charged;
                m.settled.push(id.clone());
                if charged > 0 {
                    m.charged.push((id, charged));
                }
            }
            Step::Release(i) if !m.open.is_empty() => {
                let (id, amount) = m.open.remove(i % m.open.len());
                set_status(s, &id, JobStatus::Cancelled).await;
                assert_eq!(s.release_hold(&id, "test", None, 1).await.unwrap(), Settlement::Released { held: amount });
                m.held -= amount;
                m.settled.push(id);
            }
            Step::Recapture(i) if !m.settled.is_empty() => {
                let id = &m.settled[i % m.settled.len()];
                assert_eq!(s.capture_hold(id, 5, "test", 1).await.unwrap(), Settlement::AlreadySettled);
            }
            Step::Refund(i) if !m.charged.is_empty() => {
                let (id, charged) = m.charged[i % m.charged.len()].clone();
                let key = format!("refund:{id}");
                let e = NewEntry { job_id: Some(&id), ..entry(&key, account, EntryKind::Refund, charged) };
                for _ in 0..2 {
                    s.post_entry(&e, 1).await.unwrap();
                }
                if !m.refunded.insert(id, true).unwrap_or(false) {
                    m.balance += charged;
                }
            }
            _ => {}
        }
        let b = s.balance(account).await.unwrap();
        assert_eq!((b.balance, b.held), (m.balance, m.held), "{}: after {st:?}", db.kind);
        assert!(b.available() >= 0 && b.balance >= 0);
    }
    assert_clean(db).await;
}

#[test]
fn random_histories_keep_every_invariant() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dbs = rt.block_on(testing::all());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 48, ..ProptestConfig::default() });
    runner
        .run(&proptest::collection::vec(step(), 1..40), |steps| {
            // Each case uses a fresh account so cases cannot see each other.
            let account = uuid::Uuid::new_v4().simple().to_string();
            rt.block_on(async {
                for db in &dbs {
                    play(db, &account, &steps).await;
                }
            });
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn account_administration_finds_promotes_and_suspends() {
    for db in testing::all().await {
        let s = &db.store;
        let a = s.account_for_identity("telegram", "42", "Ann", 1).await.unwrap();
        assert!(s.find_account_by_identity("telegram", "43").await.unwrap().is_none(), "{}", db.kind);
        assert_eq!(s.find_account_by_identity("telegram", "42").await.unwrap().unwrap().id, a.id);
        assert_eq!(s.account_identities(&a.id).await.unwrap(), [("telegram".to_string(), "42".to_string())]);
        assert!(s.set_account_role(&a.id, Role::Admin).await.unwrap());
        assert!(s.set_account_suspended(&a.id, true).await.unwrap());
        let got = s.get_account(&a.id).await.unwrap().unwrap();
        assert_eq!((got.role.as_str(), got.suspended), ("admin", true), "{}", db.kind);
        assert!(!s.set_account_suspended("nobody", true).await.unwrap());
        s.account_for_identity("local", "bob", "Bob", 2).await.unwrap();
        let names: Vec<_> = s.list_accounts(10).await.unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["Ann", "Bob"], "{}", db.kind);
    }
}
