//! Paying for jobs through the core, on SQLite and (when configured)
//! PostgreSQL: quotes and the confirmation threshold, the queued-jobs quota,
//! the free daily allowance and group sponsorship — with the points audit
//! clean after each.

use station_core::Role;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use station_core::points::PaidBy;
use station_core::{
    Config, ExecContext, ExecError, ExecJob, Executor, OutputFile, Station, SubmitError, SubmitRequest, Workers,
};
use station_store::{JobRow, testing, utc_day};

const DAY: i64 = 86_400_000;

/// Runs "comfyui" jobs without ComfyUI: succeeds at once unless the prompt is `fail`.
struct Scripted;

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

/// txt2img-sd15 costs 20 points (1 a second, 20 s estimated).
fn txt2img(prompt: &str) -> SubmitRequest {
    SubmitRequest { tool: "txt2img-sd15".into(), params: params(json!({"prompt": prompt})), ..Default::default() }
}

fn confirmed(mut r: SubmitRequest) -> SubmitRequest {
    r.confirmed = true;
    r
}

fn sponsored(mut r: SubmitRequest, scope: &str) -> SubmitRequest {
    r.sponsor_scope = Some(scope.into());
    r.confirmed = true;
    r
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
    st.register_executor(Arc::new(Scripted));
    st
}

async fn assert_clean(st: &Station, kind: &str) {
    let problems = st.audit_points().await.unwrap();
    assert!(problems.is_empty(), "{kind}: audit found {problems:#?}");
}

async fn wait_settled(st: &Station, id: &str) -> Vec<String> {
    for _ in 0..200 {
        let kinds: Vec<String> = st.job_ledger(id).await.unwrap().into_iter().map(|e| e.kind).collect();
        if kinds.len() >= 2 {
            return kinds;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} was never settled");
}

#[tokio::test]
async fn a_quote_matches_the_hold_and_pricey_jobs_need_confirming() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Config::default().points.confirm_above, 50, "the default");
        let st = station(&db, dir.path(), |c| c.points.confirm_above = 10);
        let ann = st.account("local", "ann", "Ann").await.unwrap();
        let q = st.quote(&ann, &txt2img("a cat")).await.unwrap();
        assert_eq!((q.tool_id.as_str(), q.price, q.available), ("txt2img-sd15", 20, 100), "{}", db.kind);
        assert_eq!(q.paid_by, PaidBy::Own { allowance: 0, balance: 20 });
        assert_eq!((q.threshold, q.needs_confirmation, q.affordable), (Some(10), true, true), "{}", db.kind);
        // The quote wrote nothing but the starting grant.
        assert!(db.store.list_jobs(&Default::default()).await.unwrap().is_empty());
        assert_eq!(st.points(&ann.id).await.unwrap().held, 0);

        // Above the default threshold of 10 an unconfirmed request is refused.
        let err = st.submit(&ann, txt2img("a cat")).await.unwrap_err();
        assert!(matches!(err, SubmitError::ConfirmationRequired { price: 20, threshold: 10 }), "{}: {err}", db.kind);
        assert!(err.to_string().contains("costs 20 points") && err.to_string().contains("confirm"), "{err}");
        assert!(db.store.list_jobs(&Default::default()).await.unwrap().is_empty(), "{}", db.kind);
        // Confirmed, it is queued and holds exactly the quoted price.
        let job = st.submit(&ann, confirmed(txt2img("a cat"))).await.unwrap();
        let hold = db.store.hold_for_job(&job.id).await.unwrap().unwrap();
        assert_eq!((hold.amount, hold.allowance, hold.account_id.as_str()), (q.price, 0, ann.id.as_str()));
        assert_eq!(st.points(&ann.id).await.unwrap().available(), q.available - q.price, "{}", db.kind);

        // The user's own threshold wins over the operator's default.
        st.set_quote_threshold(&ann, Some(50)).await.unwrap();
        let q = st.quote(&ann, &txt2img("a dog")).await.unwrap();
        assert_eq!((q.threshold, q.needs_confirmation), (Some(50), false), "{}", db.kind);
        st.submit(&ann, txt2img("a dog")).await.unwrap();
        st.set_quote_threshold(&ann, Some(0)).await.unwrap();
        assert!(matches!(
            st.submit(&ann, txt2img("a fox")).await.unwrap_err(),
            SubmitError::ConfirmationRequired { price: 20, threshold: 0 }
        ));
        st.set_quote_threshold(&ann, None).await.unwrap();
        let q = st.quote(&ann, &txt2img("a fox")).await.unwrap();
        assert_eq!((q.threshold, q.needs_confirmation), (None, false), "{}", db.kind);
        let err = st.set_quote_threshold(&ann, Some(-1)).await.unwrap_err().to_string();
        assert!(err.contains("threshold") && err.contains("-1"), "{err}");
        // A quote the account cannot afford says so rather than failing.
        st.submit(&ann, txt2img("a fox")).await.unwrap();
        let q = st.quote(&ann, &txt2img("an owl")).await.unwrap();
        assert_eq!((q.available, q.affordable), (40, true), "{}", db.kind);
        st.submit(&ann, txt2img("an owl")).await.unwrap();
        st.submit(&ann, txt2img("a bat")).await.unwrap();
        let q = st.quote(&ann, &txt2img("a rat")).await.unwrap();
        assert_eq!((q.available, q.affordable), (0, false), "{}", db.kind);
        // Validation is submit's: a bad request is refused the same way.
        let err = st.quote(&ann, &SubmitRequest { tool: "nope".into(), ..Default::default() }).await.unwrap_err();
        assert!(matches!(err, SubmitError::UnknownTool(_)), "{err}");
        assert_clean(&st, db.kind).await;
    }
}

#[tokio::test]
async fn one_hundred_concurrent_submits_queue_exactly_max_queued() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |c| c.points.starting_grant = 1_000);
        assert_eq!(st.config.limits.max_queued, 20, "the default");
        let ann = st.account("local", "ann", "Ann").await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let (st, ann) = (st.clone(), ann.clone());
            tasks.spawn(async move { st.submit(&ann, confirmed(txt2img(&format!("cat {i}")))).await });
        }
        let (mut ok, mut refused) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(e @ SubmitError::QuotaExceeded { limit: 20, what: "jobs queued", .. }) => {
                    assert!(e.to_string().contains("you have 20 jobs queued, the most allowed"), "{e}");
                    refused += 1;
                }
                Err(e) => panic!("{}: unexpected {e}", db.kind),
            }
        }
        assert_eq!((ok, refused), (20, 80), "{}", db.kind);
        let b = st.points(&ann.id).await.unwrap();
        assert_eq!((b.balance, b.held), (1_000, 400), "{}: refused jobs hold nothing", db.kind);
        // The quote refuses the same way.
        let err = st.quote(&ann, &txt2img("one more")).await.unwrap_err();
        assert!(matches!(err, SubmitError::QuotaExceeded { limit: 20, .. }), "{err}");
        // Administrators are not limited; other accounts have their own quota.
        let admin = st.account("local", "root", "Root").await.unwrap();
        db.store.set_account_role(&admin.id, Role::Admin).await.unwrap();
        let admin = db.store.get_account(&admin.id).await.unwrap().unwrap();
        for i in 0..21 {
            st.submit(&admin, confirmed(txt2img(&format!("admin {i}")))).await.unwrap();
        }
        let bob = st.account("local", "bob", "Bob").await.unwrap();
        st.submit(&bob, confirmed(txt2img("bob's"))).await.unwrap();
        assert_clean(&st, db.kind).await;
    }
}

#[tokio::test]
async fn the_free_allowance_pays_first_comes_back_when_released_and_resets_daily() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |c| c.points.free_daily = 30);
        let ann = st.account("local", "ann", "Ann").await.unwrap();
        // Noon, three days ago (jobs may run: their time has come).
        let t0 = (station_store::now_ms() / DAY - 3) * DAY + DAY / 2;
        let day = utc_day(t0);

        let q = st.quote_at(&ann, &txt2img("one"), t0).await.unwrap();
        assert_eq!(
            (q.paid_by.clone(), q.available, q.allowance_left),
            (PaidBy::Own { allowance: 20, balance: 0 }, 130, 30)
        );
        let first = st.submit_at(&ann, confirmed(txt2img("one")), t0).await.unwrap();
        let b = st.points(&ann.id).await.unwrap();
        assert_eq!((b.balance, b.held), (100, 0), "{}: the balance is untouched", db.kind);
        let second = st.submit_at(&ann, confirmed(txt2img("two")), t0 + 1_000).await.unwrap();
        let hold = db.store.hold_for_job(&second.id).await.unwrap().unwrap();
        assert_eq!(
            (hold.amount, hold.allowance),
            (20, 10),
            "{}: 10 left of the allowance, 10 from the balance",
            db.kind
        );
        assert_eq!(st.points(&ann.id).await.unwrap().held, 10);
        assert_eq!(db.store.daily_usage(None, &ann.id, day).await.unwrap(), 30);
        assert_clean(&st, db.kind).await;

        // Cancelling the first returns its 20 to that day's allowance.
        st.cancel(&ann, &first.id).await.unwrap();
        assert_eq!(db.store.daily_usage(None, &ann.id, day).await.unwrap(), 10, "{}", db.kind);
        let q = st.quote_at(&ann, &txt2img("three"), t0 + 2_000).await.unwrap();
        assert_eq!(q.paid_by, PaidBy::Own { allowance: 20, balance: 0 }, "{}", db.kind);
        assert_clean(&st, db.kind).await;

        // The next day starts with the whole allowance again.
        let third = st.submit_at(&ann, confirmed(txt2img("three")), t0 + DAY).await.unwrap();
        let hold = db.store.hold_for_job(&third.id).await.unwrap().unwrap();
        assert_eq!((hold.allowance, hold.day), (20, Some(day + 1)), "{}", db.kind);
        let q = st.quote_at(&ann, &txt2img("four"), t0 + DAY).await.unwrap();
        assert_eq!(q.allowance_left, 10, "{}", db.kind);
        // Yesterday's 20 unused points did not carry over.
        let q = st.quote_at(&ann, &txt2img("four"), t0 + 2 * DAY).await.unwrap();
        assert_eq!(q.allowance_left, 30, "{}", db.kind);
        assert_clean(&st, db.kind).await;

        // Jobs run and are charged: allowance first, then balance.
        let workers = Workers::start(&st);
        assert_eq!(wait_settled(&st, &second.id).await, ["hold", "capture"], "{}", db.kind);
        assert_eq!(wait_settled(&st, &third.id).await, ["hold", "capture"], "{}", db.kind);
        workers.shutdown().await;
        for id in [&second.id, &third.id] {
            let h = db.store.hold_for_job(id).await.unwrap().unwrap();
            assert!(h.charged.unwrap() <= 10, "{}: {h:?}", db.kind);
        }
        // The scripted run takes well under 10 s, so both captures fit in their
        // allowance part: the balance paid nothing.
        let b = st.points(&ann.id).await.unwrap();
        assert_eq!((b.balance, b.held), (100, 0), "{}", db.kind);
        assert_clean(&st, db.kind).await;
    }
}

#[tokio::test]
async fn a_group_sponsor_pays_up_to_the_cap_and_gets_failed_jobs_back() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let st = station(&db, dir.path(), |_| {});
        let patron = st.account("telegram", "1", "Patron").await.unwrap();
        let ann = st.account("telegram", "2", "Ann").await.unwrap();
        let scope = "telegram:-100123";
        st.grant_points(&patron, 400, "sponsoring the group", &station_core::audit::Actor::operator("test"), None)
            .await
            .unwrap();

        // Bad sponsorships are refused with the field and the reason.
        let err = st
            .set_sponsor("no scope", &patron, 10, &station_core::audit::Actor::operator("test"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("scope"), "{err}");
        let err = st
            .set_sponsor("telegram:-1", &patron, 0, &station_core::audit::Actor::operator("test"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("per_member_daily_cap"), "{err}");
        assert!(st.sponsor(scope).await.unwrap().is_none());
        let row = st.set_sponsor(scope, &patron, 50, &station_core::audit::Actor::operator("test")).await.unwrap();
        assert_eq!((row.account_id.as_str(), row.per_member_daily_cap), (patron.id.as_str(), 50));

        // Sponsored: the hold is on the patron's account for Ann.
        let q = st.quote(&ann, &sponsored(txt2img("one"), scope)).await.unwrap();
        assert_eq!(q.paid_by, PaidBy::Sponsor { scope: scope.into(), account_id: patron.id.clone() }, "{}", db.kind);
        let one = st.submit(&ann, sponsored(txt2img("one"), scope)).await.unwrap();
        let hold = db.store.hold_for_job(&one.id).await.unwrap().unwrap();
        assert_eq!(
            (hold.account_id.as_str(), hold.beneficiary.as_deref()),
            (patron.id.as_str(), Some(ann.id.as_str()))
        );
        let two = st.submit(&ann, sponsored(txt2img("fail"), scope)).await.unwrap();
        // 20 + 20 + 20 is over the cap of 50: Ann pays the third herself.
        let q = st.quote(&ann, &sponsored(txt2img("three"), scope)).await.unwrap();
        assert_eq!(q.paid_by, PaidBy::Own { allowance: 0, balance: 20 }, "{}", db.kind);
        let three = st.submit(&ann, sponsored(txt2img("three"), scope)).await.unwrap();
        assert_eq!(db.store.hold_for_job(&three.id).await.unwrap().unwrap().account_id, ann.id);
        // Without the scope nobody sponsors.
        let q = st.quote(&ann, &confirmed(txt2img("four"))).await.unwrap();
        assert!(matches!(q.paid_by, PaidBy::Own { .. }), "{}", db.kind);
        let (p, a) = (st.points(&patron.id).await.unwrap(), st.points(&ann.id).await.unwrap());
        assert_eq!((p.balance, p.held, a.balance, a.held), (400, 40, 100, 20), "{}", db.kind);
        assert_clean(&st, db.kind).await;

        // The failed sponsored job goes back to the patron, and its 20 back
        // under Ann's cap; the successful one is charged to the patron.
        let workers = Workers::start(&st);
        assert_eq!(wait_settled(&st, &one.id).await, ["hold", "capture"], "{}", db.kind);
        assert_eq!(wait_settled(&st, &two.id).await, ["hold", "release"], "{}", db.kind);
        assert_eq!(wait_settled(&st, &three.id).await, ["hold", "capture"], "{}", db.kind);
        workers.shutdown().await;
        let charged = db.store.hold_for_job(&one.id).await.unwrap().unwrap().charged.unwrap();
        let p = st.points(&patron.id).await.unwrap();
        assert_eq!((p.balance, p.held), (400 - charged, 0), "{}", db.kind);
        let release = db.store.ledger_for_job(&two.id).await.unwrap().pop().unwrap();
        assert_eq!(
            (release.account_id.as_str(), release.beneficiary.as_deref()),
            (patron.id.as_str(), Some(ann.id.as_str()))
        );
        let used = db.store.daily_usage(Some(scope), &ann.id, utc_day(station_store::now_ms())).await.unwrap();
        assert_eq!(used, charged, "{}", db.kind);
        assert_eq!(st.points(&ann.id).await.unwrap().held, 0);
        assert_clean(&st, db.kind).await;

        // Removed, the group no longer pays.
        assert!(st.remove_sponsor(scope, &station_core::audit::Actor::operator("test")).await.unwrap());
        let q = st.quote(&ann, &sponsored(txt2img("five"), scope)).await.unwrap();
        assert!(matches!(q.paid_by, PaidBy::Own { .. }), "{}", db.kind);
    }
}
