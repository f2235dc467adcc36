//! Points through the core: prices held at submit, captured on success,
//! released on failure or cancellation, exactly once even when a worker
//! dies mid-job — on SQLite and (when configured) PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use station_core::points::LedgerError;
use station_core::{
    Config, ExecContext, ExecError, ExecJob, Executor, OutputFile, Station, SubmitError, SubmitRequest, Workers,
};
use station_store::{ClaimRequest, JobRow, JobStatus, Settlement, testing};

/// Runs "comfyui" jobs without ComfyUI: sleeps, then succeeds, unless the
/// prompt is `fail`.
struct Scripted {
    run_ms: u64,
}

#[async_trait]
impl Executor for Scripted {
    fn service(&self) -> &'static str {
        "comfyui"
    }
    fn capacity(&self) -> usize {
        4
    }
    async fn execute(&self, job: ExecJob, ctx: ExecContext) -> Result<Vec<OutputFile>, ExecError> {
        ctx.running().await;
        tokio::time::sleep(Duration::from_millis(self.run_ms)).await;
        match job.params.get("prompt").and_then(Value::as_str) {
            Some("fail") => Err(ExecError::Failed("scripted failure".into())),
            _ => Ok(vec![]),
        }
    }
    async fn cancel_remote(&self, _job: &JobRow) {}
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// Confirmed: these tests are about holds, not the confirmation threshold.
fn txt2img(prompt: &str) -> SubmitRequest {
    SubmitRequest {
        tool: "txt2img-sd15".into(),
        params: params(json!({"prompt": prompt})),
        confirmed: true,
        ..Default::default()
    }
}

/// Templates (`txt2img-sd15`, …) are hidden: only administrators may run
/// them. The test's accounts run a public copy from the tools folder.
fn publish_builtin(config: &Config, id: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../station-tools/builtin/{id}.json"));
    let mut tool: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    tool["visibility"] = serde_json::json!("public");
    std::fs::create_dir_all(config.tools_dir()).unwrap();
    std::fs::write(config.tools_dir().join(format!("{id}.json")), tool.to_string()).unwrap();
}

fn station(db: &testing::TestDb, dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Station {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.queue.poll_ms = 50;
    edit(&mut config);
    publish_builtin(&config, "txt2img-sd15");
    let st = Station::with_store(config, db.store.clone()).unwrap().0;
    st.register_executor(Arc::new(Scripted { run_ms: 1_200 }));
    st
}

async fn wait_terminal(st: &Station, id: &str) -> JobRow {
    for _ in 0..300 {
        let j = st.job(id).await.unwrap().unwrap();
        if j.status().is_terminal() {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

/// The settlement happens right after the outcome is recorded; give it a moment.
async fn wait_settled(st: &Station, id: &str) -> Vec<String> {
    for _ in 0..100 {
        let kinds: Vec<String> = st.job_ledger(id).await.unwrap().into_iter().map(|e| e.kind).collect();
        if kinds.len() >= 2 {
            return kinds;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} was never settled");
}

#[tokio::test]
async fn new_accounts_get_the_starting_grant_once_and_prices_are_held() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |c| c.points.multiplier = 1.5);
        let acct = st.account("local", "ann", "Ann").await.unwrap();
        // txt2img-sd15 is 1 point/s with a 20 s estimate: 30 held at ×1.5.
        let j = st.submit(&acct, txt2img("a cat")).await.unwrap();
        let b = st.points(&acct.id).await.unwrap();
        assert_eq!((b.balance, b.held, b.available()), (100, 30, 70), "{}", db.kind);
        assert_eq!(db.store.hold_for_job(&j.id).await.unwrap().unwrap().amount, 30);
        // Submitting again does not grant again.
        st.submit(&acct, txt2img("a dog")).await.unwrap();
        assert_eq!(st.points(&acct.id).await.unwrap().balance, 100, "{}", db.kind);
        let grants = db.store.ledger_history(&acct.id, None, 100).await.unwrap();
        assert_eq!(grants.iter().filter(|e| e.kind == "grant").count(), 1);
        assert!(st.audit_points().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn insufficient_points_queue_nothing_and_say_how_many() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |c| c.points.starting_grant = 25);
        let acct = st.account("local", "ann", "Ann").await.unwrap();
        st.submit(&acct, txt2img("one")).await.unwrap();
        let err = st.submit(&acct, txt2img("two")).await.unwrap_err();
        assert!(matches!(err, SubmitError::InsufficientPoints { needed: 20, available: 5 }), "{}: {err}", db.kind);
        assert!(err.to_string().contains("costs 20") && err.to_string().contains("5 available"), "{err}");
        let jobs = db.store.list_jobs(&station_store::JobFilter { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(jobs.len(), 1, "{}: the refused job must not be queued", db.kind);
    }
}

#[tokio::test]
async fn five_hundred_concurrent_submits_against_exactly_one_hundred_points() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        // No queued-jobs quota here: this is about points alone.
        let st = station(&db, dir.path(), |c| c.limits.max_queued = 0);
        let acct = st.account("local", "ann", "Ann").await.unwrap();
        // The starting grant is 100 and invert costs 1 per run.
        let png = {
            let mut out = std::io::Cursor::new(Vec::new());
            station_media::image::RgbImage::from_pixel(4, 4, station_media::image::Rgb([9, 9, 9]))
                .write_to(&mut out, station_media::image::ImageFormat::Png)
                .unwrap();
            out.into_inner()
        };
        let img = st.media.put_image(png, Some(&acct.id), None, "input").await.unwrap();
        let req = SubmitRequest {
            tool: "invert".into(),
            params: params(json!({"image": format!("media:{}", img.id)})),
            ..Default::default()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..500 {
            let (st, acct, req) = (st.clone(), acct.clone(), req.clone());
            tasks.spawn(async move { st.submit(&acct, req).await });
        }
        let (mut ok, mut refused) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(SubmitError::InsufficientPoints { needed: 1, available: 0 }) => refused += 1,
                Err(e) => panic!("{}: unexpected {e}", db.kind),
            }
        }
        assert_eq!((ok, refused), (100, 400), "{}", db.kind);
        let b = st.points(&acct.id).await.unwrap();
        assert_eq!((b.balance, b.held, b.available()), (100, 100, 0), "{}", db.kind);
        let problems = st.audit_points().await.unwrap();
        assert!(problems.is_empty(), "{}: {problems:#?}", db.kind);
    }
}

#[tokio::test]
async fn success_captures_measured_time_failure_and_cancel_release() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |_| {});
        let acct = st.account("local", "ann", "Ann").await.unwrap();
        let queued_then_cancelled = st.submit(&acct, txt2img("later")).await.unwrap();
        st.cancel(&acct, &queued_then_cancelled.id).await.unwrap();
        assert_eq!(
            st.job_ledger(&queued_then_cancelled.id).await.unwrap().iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["hold", "release"],
            "{}",
            db.kind
        );
        let workers = Workers::start(&st);
        let good = st.submit(&acct, txt2img("a cat")).await.unwrap();
        let bad = st.submit(&acct, txt2img("fail")).await.unwrap();
        assert_eq!(wait_terminal(&st, &good.id).await.status(), JobStatus::Succeeded);
        assert_eq!(wait_terminal(&st, &bad.id).await.status(), JobStatus::Failed);
        assert_eq!(wait_settled(&st, &good.id).await, ["hold", "capture"], "{}", db.kind);
        assert_eq!(wait_settled(&st, &bad.id).await, ["hold", "release"], "{}", db.kind);
        workers.shutdown().await;
        // The scripted run takes 1.2 s at 1 point/s: 2 points (started
        // seconds are charged), far below the 20 held.
        let hold = db.store.hold_for_job(&good.id).await.unwrap().unwrap();
        let charged = hold.charged.unwrap();
        assert!((2..20).contains(&charged), "{}: charged {charged}", db.kind);
        let b = st.points(&acct.id).await.unwrap();
        assert_eq!((b.balance, b.held), (100 - charged, 0), "{}", db.kind);
        // A duplicate completion changes nothing.
        assert_eq!(st.settle_job(&good.id, "again").await.unwrap(), Some(Settlement::AlreadySettled));
        assert_eq!(st.points(&acct.id).await.unwrap().balance, 100 - charged);
        assert!(st.audit_points().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_worker_dying_between_hold_and_capture_ends_with_exactly_one_capture() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |c| c.queue.lease_seconds = 1);
        let acct = st.account("local", "ann", "Ann").await.unwrap();
        let job = st.submit(&acct, txt2img("a cat")).await.unwrap();
        // Worker A claims the job and dies without a word.
        let now = station_store::now_ms();
        let claim = ClaimRequest {
            service: "comfyui",
            owner: "worker-a",
            limit: 1,
            lease_ms: 300,
            per_account_running_cap: 10,
            now,
        };
        assert_eq!(db.store.claim_jobs(&claim).await.unwrap().len(), 1, "{}", db.kind);
        // Worker B's sweeper requeues it once the lease lapses, then runs it.
        let workers = Workers::start(&st);
        let done = wait_terminal(&st, &job.id).await;
        assert_eq!(done.status(), JobStatus::Succeeded, "{}", db.kind);
        assert_eq!(wait_settled(&st, &job.id).await, ["hold", "capture"], "{}", db.kind);
        // A's late report of the same outcome is refused and settles nothing more.
        let late = db.store.finish_job(&job.id, "worker-a", JobStatus::Succeeded, Some(&[]), None, now).await.unwrap();
        assert!(!late, "{}: a lapsed lease must not record an outcome", db.kind);
        assert_eq!(st.settle_job(&job.id, "worker-a").await.unwrap(), Some(Settlement::AlreadySettled));
        workers.shutdown().await;
        let entries = db.store.ledger_for_job(&job.id).await.unwrap();
        assert_eq!(entries.iter().filter(|e| e.kind == "capture").count(), 1, "{}", db.kind);
        assert!(entries.iter().all(|e| e.kind != "release"));
        assert!(st.audit_points().await.unwrap().is_empty(), "{}", db.kind);
    }
}

#[tokio::test]
async fn the_sweeper_settles_a_job_that_ended_without_settling() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |_| {});
        let acct = st.account("local", "ann", "Ann").await.unwrap();
        let job = st.submit(&acct, txt2img("a cat")).await.unwrap();
        // A process records the failure and dies before settling.
        let claim = ClaimRequest {
            service: "comfyui",
            owner: "w",
            limit: 1,
            lease_ms: 60_000,
            per_account_running_cap: 10,
            now: station_store::now_ms(),
        };
        db.store.claim_jobs(&claim).await.unwrap();
        assert!(db.store.finish_job(&job.id, "w", JobStatus::Failed, None, Some(("x", "boom")), 2).await.unwrap());
        assert_eq!(st.audit_points().await.unwrap().len(), 1, "{}: the audit sees the stuck hold", db.kind);
        assert_eq!(st.settle_stuck_holds().await.unwrap(), 1, "{}", db.kind);
        assert_eq!(st.settle_stuck_holds().await.unwrap(), 0);
        let b = st.points(&acct.id).await.unwrap();
        assert_eq!((b.balance, b.held), (100, 0), "{}", db.kind);
        assert!(st.audit_points().await.unwrap().is_empty());
    }
}

/// Runs one statement on either engine.
async fn exec_sql(store: &station_store::Store, sql: &str) {
    match store {
        station_store::Store::Sqlite(p) => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(p).await.unwrap();
        }
        station_store::Store::Postgres(p) => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(p).await.unwrap();
        }
    }
}

/// Issue 17, item 5: a grant or adjustment beyond `points.max_amount`, or
/// one that would take a balance past 2^63−1, is refused naming the amount
/// and writes nothing; balances and the audit keep working.
#[tokio::test]
async fn ledger_overflow_is_refused_and_nothing_is_written() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |_| {});
        assert_eq!(st.config.points.max_amount, 1_000_000_000_000, "the documented default");
        let ann = st.account("local", "ann", "Ann").await.unwrap();
        st.ensure_starting_grant(&ann.id).await.unwrap();
        let entries = |st: Station, id: String| async move { st.ledger_history(&id, None, 100).await.unwrap().len() };
        let before = entries(st.clone(), ann.id.clone()).await;
        for amount in [i64::MAX, 1_000_000_000_001] {
            let err = st
                .grant_points(&ann, amount, "overflow", &station_core::audit::Actor::operator("test"), None)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, LedgerError::Invalid { field: "amount", reason } if reason.contains("points.max_amount")),
                "{k}: {err}"
            );
        }
        for amount in [i64::MIN, -i64::MAX, -1_000_000_000_001] {
            let err = st
                .adjust_points(&ann, amount, "underflow", &station_core::audit::Actor::operator("test"), None)
                .await
                .unwrap_err();
            assert!(matches!(&err, LedgerError::Invalid { field: "amount", .. }), "{k}: {err}");
        }
        assert_eq!(entries(st.clone(), ann.id.clone()).await, before, "{k}: nothing written");
        assert_eq!(st.points(&ann.id).await.unwrap().balance, 100, "{k}");
        st.grant_points(&ann, 1_000_000_000_000, "the most", &station_core::audit::Actor::operator("test"), None)
            .await
            .unwrap();

        // With no practical bound, the balance itself is checked: the sum
        // would pass i64::MAX, so the entry is refused and nothing written.
        let dir2 = tempfile::tempdir().unwrap();
        let wide = station(&db, dir2.path(), |c| c.points.max_amount = u64::MAX);
        let before = entries(wide.clone(), ann.id.clone()).await;
        let err = wide
            .grant_points(&ann, i64::MAX, "overflow", &station_core::audit::Actor::operator("test"), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LedgerError::Invalid { field: "amount", reason } if reason.contains("most points")),
            "{k}: {err}"
        );
        assert_eq!(entries(wide.clone(), ann.id.clone()).await, before, "{k}: nothing written");
        let b = wide.points(&ann.id).await.unwrap();
        assert_eq!(b.balance, 1_000_000_000_100, "{k}");
        // Up to the very top is fine; one more is not.
        wide.grant_points(
            &ann,
            i64::MAX - b.balance,
            "to the top",
            &station_core::audit::Actor::operator("test"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(wide.points(&ann.id).await.unwrap().balance, i64::MAX, "{k}");
        let err = wide
            .grant_points(&ann, 1, "one more", &station_core::audit::Actor::operator("test"), None)
            .await
            .unwrap_err();
        assert!(matches!(&err, LedgerError::Invalid { field: "amount", .. }), "{k}: {err}");
        assert!(wide.audit_points().await.unwrap().is_empty(), "{k}: {:?}", wide.audit_points().await);
        assert!(wide.accounts(100).await.is_ok(), "{k}");
    }
}

/// Issue 17, item 5: the audit reports rows no 64-bit integer can hold (a
/// ledger whose sum overflows, a float SQLite stored for an overflowing
/// balance) instead of failing.
#[tokio::test]
async fn the_audit_reports_a_bad_row_instead_of_failing() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |_| {});
        let ann = st.account("local", "ann", "Ann").await.unwrap();
        let bob = st.account("local", "bob", "Bob").await.unwrap();
        st.ensure_starting_grant(&ann.id).await.unwrap();
        st.ensure_starting_grant(&bob.id).await.unwrap();
        // What the unchecked ledger wrote: two entries whose sum passes i64::MAX.
        for n in 0..2 {
            exec_sql(
                &db.store,
                &format!(
                    "INSERT INTO ledger (idem_key, account_id, kind, amount, held, job_id, reason, actor, created_at) \
                     VALUES ('bad:{n}', '{}', 'grant', {}, 0, NULL, 'overflow', 'test', 1)",
                    ann.id,
                    i64::MAX
                ),
            )
            .await;
        }
        if k == "sqlite" {
            // SQLite turned the overflowing balance into a float.
            exec_sql(&db.store, &format!("UPDATE balances SET balance = 9.3e18 WHERE account_id = '{}'", ann.id)).await;
        }
        let problems = st.audit_points().await.expect("the audit reports, it does not fail");
        let about_ann: Vec<_> = problems.iter().filter(|p| p.account_id.as_deref() == Some(ann.id.as_str())).collect();
        assert!(about_ann.iter().any(|p| p.problem.contains("not a whole number of points")), "{k}: {problems:?}");
        assert!(problems.iter().all(|p| p.account_id.as_deref() != Some(bob.id.as_str())), "{k}: {problems:?}");
        assert_eq!(st.points(&bob.id).await.unwrap().balance, 100, "{k}: others' balances still read");
    }
}

#[tokio::test]
async fn accounts_created_in_bulk_have_their_identity_and_grant_and_can_pay() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |c| c.points.starting_grant = 0);
        let by = station_core::audit::Actor::operator("bench");
        // More than one chunk of the store's multi-row inserts.
        let wanted: Vec<(String, String)> = (0..1_203).map(|i| (format!("sim-{i}"), format!("Sim {i}"))).collect();
        let rows = st.create_accounts_with_grant("bench", &wanted, 40, "simulation", &by).await.unwrap();
        assert_eq!(rows.len(), wanted.len(), "{}", db.kind);
        let last = st.account("bench", "sim-1202", "ignored").await.unwrap();
        assert_eq!((last.id.as_str(), last.name.as_str()), (rows[1202].id.as_str(), "Sim 1202"), "{}", db.kind);
        let b = st.points(&rows[7].id).await.unwrap();
        assert_eq!((b.balance, b.held), (40, 0), "{}", db.kind);
        st.submit(&rows[7], txt2img("paid from the bulk grant")).await.unwrap();
        assert_eq!(st.points(&rows[7].id).await.unwrap().held, 20, "{}", db.kind);
        assert!(st.audit_points().await.unwrap().is_empty(), "{}", db.kind);
        // Bad input is refused before anything is stored; a taken identity fails its chunk.
        let err = st.create_accounts_with_grant("bench", &wanted[..1], 0, "x", &by).await.unwrap_err();
        assert!(err.to_string().contains("grant"), "{err}");
        let empty = vec![(String::new(), "Nobody".to_string())];
        let err = st.create_accounts_with_grant("bench", &empty, 5, "x", &by).await.unwrap_err();
        assert!(err.to_string().contains("accounts"), "{err}");
        let again = vec![("new-one".to_string(), "New".to_string()), ("sim-3".to_string(), "Dup".to_string())];
        assert!(st.create_accounts_with_grant("bench", &again, 5, "x", &by).await.is_err(), "{}", db.kind);
        assert!(db.store.find_account_by_identity("bench", "new-one").await.unwrap().is_none(), "{}", db.kind);
    }
}
