//! Daily rollups of the usage figures (issue 27 item 3) on SQLite and
//! PostgreSQL: a report read from the rollups equals, field by field, the
//! report aggregated from the raw jobs and ledger — over a few hundred jobs
//! and entries across ten days, every status, several tools, platforms and
//! models, jobs created one day and finished the next, a day still holding
//! a queued job, aligned and unaligned ranges. Rolling up is idempotent
//! (twice, and from two processes at once, counts nothing twice); a day
//! that still holds an unfinished job is read raw until it ends; rows
//! written into a rolled-up day are picked up by a rebuild.

use station_core::stats::{ROLLUP_GRACE_MS, StatsRange};
use station_core::{Config, Station};
use station_store::{HistoryEntry, HistoryJob, Store, testing};

const DAY: i64 = 86_400_000;
const MIN: i64 = 60_000;

fn station(store: Store, dir: &std::path::Path) -> Station {
    Station::with_store(Config { data_dir: dir.to_path_buf(), ..Config::default() }, store).unwrap().0
}

/// A small deterministic generator (no clock, no OS randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Jobs and ledger entries over `days` days before today (and today, up
/// to `now`), with every shape the report distinguishes.
fn history(now: i64, days: i64, seed: u64) -> (Vec<(String, String)>, Vec<HistoryJob>, Vec<HistoryEntry>) {
    let mut r = Lcg(seed);
    let today = now.div_euclid(DAY);
    // Fewer than ten accounts, so all are listed; the last has no accounts row (listed with no name).
    let accounts: Vec<(String, String)> = (0..7).map(|i| (format!("acct-{i:02}"), format!("Person {i}"))).collect();
    let ids: Vec<String> = (0..8).map(|i| format!("acct-{i:02}")).collect();
    let tools = ["resize", "invert", "txt2img", "upscale"];
    let sources = [
        None,
        Some(r#"{"platform":"cli"}"#),
        Some(r#"{"conversation":{"platform":"telegram","chat":"1"}}"#),
        Some(r#"{"conversation":{"platform":"discord","chat":"2"}}"#),
    ];
    let models = [None, Some("sdxl.safetensors"), Some("flux.safetensors"), Some("")];
    let codes = [None, Some("backend_error"), Some("timeout"), Some("bad_input")];
    let messages = [None, Some("the backend went away"), Some("Zebra crossing"), Some("ärger")];
    let (mut jobs, mut entries) = (Vec::new(), Vec::new());
    for n in 0..400u64 {
        let day = today - days + r.next(days as u64 + 1) as i64;
        let mut created = day * DAY + r.next(DAY as u64) as i64;
        // Some jobs start late in the evening and end after midnight.
        if n % 9 == 0 {
            created = day * DAY + DAY - 10 * MIN;
        }
        if created > now - 5 * MIN {
            created = now - 5 * MIN - r.next(3_600_000) as i64;
        }
        let account = ids[r.next(ids.len() as u64) as usize].clone();
        let tool = tools[r.next(tools.len() as u64) as usize];
        let mut params = serde_json::json!({"width": 8});
        if tool == "txt2img"
            && let Some(m) = models[r.next(models.len() as u64) as usize]
        {
            params["model"] = serde_json::json!(m);
        }
        let status = match r.next(20) {
            0..=13 => "succeeded",
            14..=16 => "failed",
            _ => "cancelled",
        };
        let started = (status != "cancelled" || r.next(2) == 0).then(|| created + 1_000 + r.next(120_000) as i64);
        let finished = match started {
            Some(s) => Some(s + 20 * MIN + r.next(40_000) as i64),
            None => Some(created + 30_000),
        };
        let (error_code, error) = if status == "failed" {
            (codes[r.next(4) as usize].map(str::to_string), messages[r.next(4) as usize].map(str::to_string))
        } else {
            (None, None)
        };
        let id = format!("job-{seed}-{n:04}");
        jobs.push(HistoryJob {
            id: id.clone(),
            account_id: account.clone(),
            tool_id: tool.into(),
            params: params.to_string(),
            source: sources[r.next(sources.len() as u64) as usize].map(str::to_string),
            status: status.into(),
            error_code,
            error,
            created_at: created,
            started_at: started,
            finished_at: finished.map(|f| f.min(now)),
        });
        // The hold when it was made, then capture or release (and sometimes a refund) when it ended.
        let price = 1 + r.next(5) as i64;
        let end = finished.unwrap().min(now);
        let mut entry = |kind: &str, amount: i64, at: i64| {
            entries.push(HistoryEntry {
                idem_key: format!("{kind}:{id}"),
                account_id: account.clone(),
                kind: kind.into(),
                amount,
                job_id: Some(id.clone()),
                created_at: at,
            });
        };
        entry("hold", 0, created);
        if status == "succeeded" {
            entry("capture", -price, end);
            if r.next(10) == 0 {
                entry("refund", price, end);
            }
        } else {
            entry("release", 0, end);
        }
    }
    // Grants, rewards, deposits and adjustments, some on days the account ran nothing.
    for n in 0..150u64 {
        let at = (now - r.next((days * DAY) as u64) as i64).max(0);
        let kind = ["grant", "reward", "deposit", "adjust", "capture"][r.next(5) as usize];
        let amount = if kind == "capture" { -(1 + r.next(3) as i64) } else { 1 + r.next(50) as i64 };
        entries.push(HistoryEntry {
            idem_key: format!("extra:{seed}:{n}"),
            account_id: ids[r.next(ids.len() as u64) as usize].clone(),
            kind: kind.into(),
            amount,
            job_id: None,
            created_at: at,
        });
    }
    (accounts, jobs, entries)
}

async fn same(s: &Station, range: StatsRange, what: &str) {
    let raw = s.stats_from_raw(range).await.unwrap();
    let rolled = s.stats(range).await.unwrap();
    assert_eq!(rolled, raw, "{what}: the report from rollups differs from the raw one");
    // And in the shape the API and `--json` give.
    assert_eq!(serde_json::to_value(&rolled).unwrap(), serde_json::to_value(&raw).unwrap(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_rollups_equal_reports_from_raw_rows() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let s = station(db.store.clone(), dir.path());
        let now = station_core::now_ms();
        let today = now.div_euclid(DAY);
        let (accounts, jobs, entries) = history(now, 9, 7);
        db.store.insert_history(&accounts, &jobs, &entries).await.unwrap();
        // A job still queued four days ago keeps that day open.
        let open_day = today - 4;
        let queued = HistoryJob {
            id: "queued-1".into(),
            account_id: "acct-01".into(),
            tool_id: "resize".into(),
            params: "{}".into(),
            source: None,
            status: "queued".into(),
            error_code: None,
            error: None,
            created_at: open_day * DAY + 3_600_000,
            started_at: None,
            finished_at: None,
        };
        db.store.insert_history(&[], std::slice::from_ref(&queued), &[]).await.unwrap();
        assert!(db.store.stats_rolled_days(0, today + 1).await.unwrap().is_empty(), "{k}: nothing rolled yet");

        // The first report rolls up the days it needs, and equals the raw one.
        let month = StatsRange::last_days(30, now);
        same(&s, month, &format!("{k}: 30 days, first read")).await;
        let rolled = db.store.stats_rolled_days(0, today + 1).await.unwrap();
        assert!(rolled.len() >= 7, "{k}: the closed days were rolled up: {rolled:?}");
        assert!(!rolled.contains(&today), "{k}: today is read raw");
        assert!(!rolled.contains(&open_day), "{k}: a day holding a queued job is read raw");
        assert!(rolled.contains(&(today - 2)) && rolled.contains(&(today - 9)), "{k}: {rolled:?}");
        let raw = s.stats_from_raw(month).await.unwrap();
        assert_eq!(raw.total.jobs, 401, "{k}: every job counted");
        assert!(raw.total.failed > 0 && raw.total.cancelled > 0 && raw.by_model.len() >= 2, "{k}: {raw:?}");
        assert!(raw.top_accounts.iter().any(|a| a.name.is_empty()), "{k}: the account without a row: {raw:?}");

        // Read again from the rollups; then other ranges, aligned or not.
        same(&s, month, &format!("{k}: 30 days")).await;
        for days in [1, 2, 7, 10] {
            same(&s, StatsRange::last_days(days, now), &format!("{k}: {days} days")).await;
        }
        let odd = StatsRange { since: (today - 8) * DAY + 5 * 3_600_000, until: (today - 2) * DAY + 7 * MIN };
        same(&s, odd, &format!("{k}: a range starting and ending mid-day")).await;
        let past = StatsRange { since: (today - 7) * DAY, until: (today - 3) * DAY };
        same(&s, past, &format!("{k}: a range of past days only")).await;

        // Rolling up again changes nothing; two processes at once count nothing twice.
        let mut quiet = |_: usize, _: usize, _: &str| {};
        let again = s.roll_up_stats(None, true, &mut quiet).await.unwrap();
        assert_eq!(again.unfinished, 1, "{k}: {again:?}");
        assert!(again.rolled >= 7, "{k}: {again:?}");
        let other = station(Store::connect(&db.url).await.unwrap(), tempfile::tempdir().unwrap().path());
        let (a, b) = tokio::join!(
            async {
                let mut p = |_: usize, _: usize, _: &str| {};
                s.roll_up_stats(None, true, &mut p).await
            },
            async {
                let mut p = |_: usize, _: usize, _: &str| {};
                other.roll_up_stats(None, true, &mut p).await
            }
        );
        assert_eq!(a.unwrap().rolled, b.unwrap().rolled, "{k}");
        same(&s, month, &format!("{k}: after two processes rolled up at once")).await;

        // The queued job ends: its day is rolled up by the next pass.
        db.store.cancel_job("queued-1", now).await.unwrap();
        let pass = s.roll_up_stats(None, false, &mut quiet).await.unwrap();
        assert_eq!((pass.rolled, pass.unfinished), (1, 0), "{k}: {pass:?}");
        assert!(db.store.stats_rolled_days(open_day, open_day + 1).await.unwrap() == [open_day], "{k}");
        same(&s, month, &format!("{k}: after the open day ended")).await;

        // Rows imported into a rolled-up day are seen after a rebuild.
        let (_, more, more_entries) = history(now, 6, 99);
        let more: Vec<HistoryJob> = more.into_iter().filter(|j| j.created_at < (today - 1) * DAY).collect();
        db.store.insert_history(&[], &more, &more_entries).await.unwrap();
        let stale = s.stats(month).await.unwrap();
        assert_ne!(stale, s.stats_from_raw(month).await.unwrap(), "{k}: rollups are not recomputed by themselves");
        let mut seen = Vec::new();
        let mut progress = |done: usize, total: usize, day: &str| seen.push((done, total, day.to_string()));
        s.roll_up_stats(Some(today - 6), true, &mut progress).await.unwrap();
        // Six days up to yesterday (five while yesterday is within the grace hour), one line each.
        let expected = if now - today * DAY >= ROLLUP_GRACE_MS { 6 } else { 5 };
        assert_eq!(seen.len(), expected, "{k}: {seen:?}");
        assert_eq!(seen.last().map(|s| (s.0, s.1)), Some((expected, expected)), "{k}");
        same(&s, month, &format!("{k}: after a rebuild")).await;
    }
}
