//! Paying for jobs in the store, on SQLite and (when configured) PostgreSQL:
//! the queued-jobs quota under concurrency, the free daily allowance (used
//! before the balance, returned on release, reset each UTC day), group
//! sponsorship within its per-member cap, and the audit of all of it.

use station_store::testing::{self, TestDb};
use station_store::{
    EntryKind, JobStatus, LedgerError, NewEntry, NewJob, PaidBy, PayTerms, Settlement, Store, utc_day,
};

const DAY: i64 = 86_400_000;
/// Noon on some UTC day.
const T0: i64 = 20_000 * DAY + DAY / 2;

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

async fn grant(s: &Store, account: &str, amount: i64) {
    let key = format!("grant:{account}:{}", uuid::Uuid::new_v4());
    let e = NewEntry {
        idem_key: &key,
        account_id: account,
        kind: EntryKind::Grant,
        amount,
        job_id: None,
        reason: Some("test"),
        actor: "test",
    };
    s.post_entry(&e, 1).await.unwrap();
}

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

async fn account(s: &Store, name: &str) -> String {
    s.account_for_identity("local", name, name, 1).await.unwrap().id
}

#[tokio::test]
async fn one_hundred_concurrent_submits_queue_exactly_the_quota() {
    for db in testing::all().await {
        let s = &db.store;
        let a = account(s, "ann").await;
        grant(s, &a, 1_000).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let (s, a) = (s.clone(), a.clone());
            // Half free, half paid: the quota counts jobs, whatever they cost.
            let terms = PayTerms { price: i % 2, max_queued: Some(20), ..Default::default() };
            tasks.spawn(async move { s.insert_job_paid(&job(&a), &terms, "test", T0).await });
        }
        let (mut ok, mut refused) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(LedgerError::QuotaExceeded { limit: 20, queued: 20 }) => refused += 1,
                Err(e) => panic!("{}: unexpected {e}", db.kind),
            }
        }
        assert_eq!((ok, refused), (20, 80), "{}", db.kind);
        let queued = s.list_jobs(&station_store::JobFilter { limit: 1000, ..Default::default() }).await.unwrap();
        assert_eq!(queued.len(), 20, "{}", db.kind);
        // A job leaving the queue makes room for exactly one more.
        set_status(s, &queued[0].id, JobStatus::Cancelled).await;
        s.release_hold(&queued[0].id, "test", None, T0).await.unwrap();
        let terms = PayTerms { price: 1, max_queued: Some(20), ..Default::default() };
        s.insert_job_paid(&job(&a), &terms, "test", T0).await.unwrap();
        let err = s.insert_job_paid(&job(&a), &terms, "test", T0).await.unwrap_err();
        assert!(matches!(err, LedgerError::QuotaExceeded { .. }), "{}: {err}", db.kind);
        // Another account has its own quota.
        let b = account(s, "bob").await;
        s.insert_job_paid(&job(&b), &PayTerms { max_queued: Some(20), ..Default::default() }, "test", T0)
            .await
            .unwrap();
        assert_clean(&db).await;
    }
}

#[tokio::test]
async fn free_allowance_is_spent_first_returned_on_release_and_renewed_each_day() {
    for db in testing::all().await {
        let s = &db.store;
        let a = account(s, "ann").await;
        grant(s, &a, 10).await;
        let terms = |price| PayTerms { price, free_daily: 5, ..Default::default() };
        let today = utc_day(T0);

        // 3 points: all from the allowance, the balance untouched.
        let (j1, paid) = s.insert_job_paid(&job(&a), &terms(3), "test", T0).await.unwrap();
        assert_eq!(paid, PaidBy::Own { allowance: 3, balance: 0 }, "{}", db.kind);
        let b = s.balance(&a).await.unwrap();
        assert_eq!((b.balance, b.held), (10, 0), "{}", db.kind);
        // 4 points: the 2 left of the allowance, then 2 held from the balance.
        let (j2, paid) = s.insert_job_paid(&job(&a), &terms(4), "test", T0 + 1).await.unwrap();
        assert_eq!(paid, PaidBy::Own { allowance: 2, balance: 2 }, "{}", db.kind);
        assert_eq!(s.daily_usage(None, &a, today).await.unwrap(), 5);
        assert_eq!(s.balance(&a).await.unwrap().held, 2);
        // Short: 9 needed, 8 available and nothing left of the allowance.
        let err = s.insert_job_paid(&job(&a), &terms(9), "test", T0 + 2).await.unwrap_err();
        assert!(matches!(err, LedgerError::Insufficient { needed: 9, available: 8 }), "{}: {err}", db.kind);
        assert_clean(&db).await;

        // The first job fails: its 3 allowance points return to today.
        set_status(s, &j1.id, JobStatus::Failed).await;
        assert_eq!(s.release_hold(&j1.id, "test", None, T0 + 3).await.unwrap(), Settlement::Released { held: 3 });
        assert_eq!(s.daily_usage(None, &a, today).await.unwrap(), 2, "{}", db.kind);
        // The second succeeds but uses only 3 of its 4: the allowance pays
        // first, so the balance pays 1 and the hold's other balance point returns.
        set_status(s, &j2.id, JobStatus::Succeeded).await;
        assert_eq!(
            s.capture_hold(&j2.id, 3, "test", T0 + 4).await.unwrap(),
            Settlement::Captured { charged: 3, held: 4 },
            "{}",
            db.kind
        );
        let b = s.balance(&a).await.unwrap();
        assert_eq!((b.balance, b.held), (9, 0), "{}", db.kind);
        assert_eq!(s.daily_usage(None, &a, today).await.unwrap(), 2, "{}", db.kind);
        let moved: Vec<(String, i64, i64, i64)> = s
            .ledger_for_job(&j2.id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.amount, e.held, e.allowance))
            .collect();
        assert_eq!(moved, [("hold".into(), 0, 2, 2), ("capture".into(), -1, -2, 0)], "{}", db.kind);
        assert_clean(&db).await;

        // Tomorrow the allowance is whole again; what was left today is gone.
        let tomorrow = T0 + DAY;
        let (_, paid) = s.insert_job_paid(&job(&a), &terms(6), "test", tomorrow).await.unwrap();
        assert_eq!(paid, PaidBy::Own { allowance: 5, balance: 1 }, "{}", db.kind);
        assert_eq!(s.daily_usage(None, &a, today + 1).await.unwrap(), 5);
        assert_eq!(s.daily_usage(None, &a, today).await.unwrap(), 2, "yesterday is history");
        assert_clean(&db).await;

        // The audit notices a counter that disagrees with the holds.
        let sql = "UPDATE daily_usage SET used = used + 1 WHERE pool = 'free'";
        match s {
            Store::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Store::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
        .unwrap();
        let problems = s.audit_points().await.unwrap();
        assert_eq!(problems.len(), 2, "{}: {problems:#?}", db.kind);
        assert!(problems.iter().all(|p| p.problem.contains("daily usage free")), "{problems:#?}");
    }
}

#[tokio::test]
async fn a_sponsor_pays_within_its_cap_then_members_pay_themselves() {
    for db in testing::all().await {
        let s = &db.store;
        let sponsor = account(s, "patron").await;
        let member = account(s, "ann").await;
        let other = account(s, "bob").await;
        grant(s, &sponsor, 12).await;
        grant(s, &member, 50).await;
        let scope = "telegram:-100123";
        let row = s.set_sponsor(scope, &sponsor, 10, "operator:test", T0).await.unwrap();
        assert_eq!((row.account_id.as_str(), row.per_member_daily_cap), (sponsor.as_str(), 10));
        let terms = |price| PayTerms { price, sponsor_scope: Some(scope), free_daily: 2, ..Default::default() };
        let today = utc_day(T0);

        // The quote and the payment agree.
        let plan = s.plan_payment(&member, &terms(6), T0).await.unwrap();
        let (j1, paid) = s.insert_job_paid(&job(&member), &terms(6), "test", T0).await.unwrap();
        assert_eq!(plan.paid_by, paid, "{}", db.kind);
        assert_eq!(paid, PaidBy::Sponsor { scope: scope.into(), account_id: sponsor.clone() }, "{}", db.kind);
        let hold = s.hold_for_job(&j1.id).await.unwrap().unwrap();
        assert_eq!(hold.account_id, sponsor);
        assert_eq!(hold.beneficiary.as_deref(), Some(member.as_str()));
        let entry = &s.ledger_for_job(&j1.id).await.unwrap()[0];
        assert_eq!(
            (entry.account_id.as_str(), entry.beneficiary.as_deref()),
            (sponsor.as_str(), Some(member.as_str()))
        );
        assert_eq!(s.balance(&sponsor).await.unwrap().held, 6);
        assert_eq!(s.balance(&member).await.unwrap().held, 0, "{}: the member pays nothing", db.kind);

        // 6 + 5 is over the member's cap of 10: the member pays, allowance first.
        let (_, paid) = s.insert_job_paid(&job(&member), &terms(5), "test", T0).await.unwrap();
        assert_eq!(paid, PaidBy::Own { allowance: 2, balance: 3 }, "{}", db.kind);
        // 6 + 4 fits the cap again.
        let (j3, paid) = s.insert_job_paid(&job(&member), &terms(4), "test", T0).await.unwrap();
        assert!(matches!(paid, PaidBy::Sponsor { .. }), "{}: {paid:?}", db.kind);
        assert_eq!(s.daily_usage(Some(scope), &member, today).await.unwrap(), 10);
        // Another member has their own cap, but the sponsor has only 2 left.
        let (_, paid) = s.insert_job_paid(&job(&other), &terms(2), "test", T0).await.unwrap();
        assert!(matches!(paid, PaidBy::Sponsor { .. }), "{}: {paid:?}", db.kind);
        let err = s.insert_job_paid(&job(&other), &terms(3), "test", T0).await.unwrap_err();
        assert!(matches!(err, LedgerError::Insufficient { needed: 3, available: 2 }), "{}: {err}", db.kind);
        assert_clean(&db).await;

        // A failed sponsored job returns the points to the sponsor and the
        // room to the member's cap for the day.
        set_status(s, &j3.id, JobStatus::Failed).await;
        assert_eq!(s.release_hold(&j3.id, "test", None, T0).await.unwrap(), Settlement::Released { held: 4 });
        let b = s.balance(&sponsor).await.unwrap();
        assert_eq!((b.balance, b.held), (12, 8), "{}", db.kind);
        assert_eq!(s.daily_usage(Some(scope), &member, today).await.unwrap(), 6);
        // A success is charged to the sponsor.
        set_status(s, &j1.id, JobStatus::Succeeded).await;
        s.capture_hold(&j1.id, 5, "test", T0).await.unwrap();
        let b = s.balance(&sponsor).await.unwrap();
        assert_eq!((b.balance, b.held), (7, 2), "{}", db.kind);
        assert_eq!(s.balance(&member).await.unwrap().balance, 50);
        assert_eq!(s.daily_usage(Some(scope), &member, today).await.unwrap(), 5, "{}", db.kind);
        assert_clean(&db).await;

        // Without a sponsor (removed, or suspended) members pay.
        assert!(s.remove_sponsor(scope).await.unwrap());
        assert!(!s.remove_sponsor(scope).await.unwrap());
        assert!(s.sponsor(scope).await.unwrap().is_none());
        let (_, paid) = s.insert_job_paid(&job(&member), &terms(1), "test", T0).await.unwrap();
        assert_eq!(paid, PaidBy::Own { allowance: 0, balance: 1 }, "{}", db.kind);
        s.set_sponsor(scope, &sponsor, 10, "operator:test", T0).await.unwrap();
        s.set_account_suspended(&sponsor, true).await.unwrap();
        let (_, paid) = s.insert_job_paid(&job(&member), &terms(1), "test", T0).await.unwrap();
        assert!(matches!(paid, PaidBy::Own { .. }), "{}: a suspended sponsor pays nothing", db.kind);
        assert_clean(&db).await;
    }
}

#[tokio::test]
async fn concurrent_sponsored_submits_never_exceed_the_cap() {
    for db in testing::all().await {
        let s = &db.store;
        let sponsor = account(s, "patron").await;
        let member = account(s, "ann").await;
        grant(s, &sponsor, 1_000).await;
        grant(s, &member, 1_000).await;
        s.set_sponsor("discord-guild:987", &sponsor, 30, "operator:test", T0).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..60 {
            let (s, m) = (s.clone(), member.clone());
            tasks.spawn(async move {
                let terms = PayTerms { price: 1, sponsor_scope: Some("discord-guild:987"), ..Default::default() };
                s.insert_job_paid(&job(&m), &terms, "test", T0).await.unwrap().1
            });
        }
        let mut sponsored = 0;
        while let Some(r) = tasks.join_next().await {
            if matches!(r.unwrap(), PaidBy::Sponsor { .. }) {
                sponsored += 1;
            }
        }
        assert_eq!(sponsored, 30, "{}", db.kind);
        assert_eq!(s.balance(&sponsor).await.unwrap().held, 30);
        assert_eq!(s.balance(&member).await.unwrap().held, 30);
        assert_clean(&db).await;
    }
}
