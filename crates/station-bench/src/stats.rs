//! `station bench stats`: the usage report (`station stats`,
//! `/api/v1/admin/stats`) on a large history — by default 1,000,000 jobs
//! over 30 days from 20,000 accounts and 1,000,000 ledger entries — read
//! from the raw rows (how every report was computed before the daily
//! rollups, [`Station::stats_from_raw`]) and from the rollups
//! ([`Station::stats`]), same process, same database. The first rollup
//! report also pays for rolling up the closed days; both reports must be
//! equal, or the run fails.
//!
//! With `--database-url sqlite:///path` the filled database is kept, so
//! `STATION_DATABASE_URL=… station stats --since 30d --json` can be timed
//! on it too.

use std::time::{Duration, Instant};

use clap::Args;
use station_core::stats::StatsRange;
use station_core::{Config, Station};
use station_store::{HistoryEntry, HistoryJob};

use crate::Outcome;

/// `station bench stats`.
#[derive(Debug, Args, Clone)]
pub struct StatsBenchArgs {
    /// Jobs to write, spread over `--days`.
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: usize,
    /// Ledger entries to write over the same days (captures, grants, refunds, holds, releases).
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: usize,
    /// Accounts the jobs and entries belong to.
    #[arg(long, default_value_t = 20_000)]
    pub accounts: usize,
    /// Days of history, up to now.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Database URL (default: a temporary SQLite file). Repeat for several;
    /// a PostgreSQL URL gets a throwaway schema, dropped afterwards.
    #[arg(long = "database-url")]
    pub database_urls: Vec<String>,
}

/// One database's figures.
#[derive(Debug, Clone)]
pub struct StatsResult {
    /// Which database.
    pub database: String,
    /// Time to write the history.
    pub fill: Duration,
    /// Report over the last 7 days from raw rows.
    pub raw_7: Duration,
    /// Report over all the days from raw rows.
    pub raw_all: Duration,
    /// First report over all the days, rolling up the closed days first.
    pub first_all: Duration,
    /// Report over the last 7 days from rollups.
    pub rolled_7: Duration,
    /// Report over all the days from rollups.
    pub rolled_all: Duration,
    /// Jobs in the 7-day range.
    pub jobs_7: i64,
    /// Jobs in the whole range.
    pub jobs_all: i64,
}

/// Runs `station bench stats`.
pub async fn run(args: StatsBenchArgs) -> Outcome {
    if args.days == 0 || args.accounts == 0 {
        eprintln!("error: --days and --accounts must be at least 1");
        return Outcome::BadUsage;
    }
    if cfg!(debug_assertions) {
        eprintln!("note: this is a debug build (its bundled SQLite is not optimised); release is faster");
    }
    let mut results = vec![];
    for url in &crate::database_urls(&args.database_urls) {
        match bench(&args, url.as_deref()).await {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::Failed;
            }
        }
    }
    print!("{}", table(&args, &results));
    Outcome::Done
}

fn table(args: &StatsBenchArgs, results: &[StatsResult]) -> String {
    let mut out = format!(
        "\nUsage report on {} jobs and {} ledger entries over {} days ({} accounts); load average {}\n\n",
        args.jobs,
        args.entries,
        args.days,
        args.accounts,
        crate::load_average()
    );
    out.push_str(
        "| database | report | jobs in range | raw rows (before) | rollups (after) |\n|---|---|---:|---:|---:|\n",
    );
    let s = |d: Duration| format!("{:.3} s", d.as_secs_f64());
    for r in results {
        out.push_str(&format!(
            "| {} | last 7 days | {} | {} | {} |\n| {} | last {} days | {} | {} | {} (first report, rolling up: {}) |\n",
            r.database,
            r.jobs_7,
            s(r.raw_7),
            s(r.rolled_7),
            r.database,
            args.days,
            r.jobs_all,
            s(r.raw_all),
            s(r.rolled_all),
            s(r.first_all)
        ));
    }
    for r in results {
        out.push_str(&format!("\n{}: history written in {}\n", r.database, s(r.fill)));
    }
    out
}

/// A small deterministic generator, so every run writes the same history.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        // The top 53 bits: a month in milliseconds needs more than 31.
        (self.0 >> 11) % n.max(1)
    }
}

const TOOLS: [&str; 6] = ["txt2img", "img2img", "upscale", "resize", "invert", "remove_background"];
const SOURCES: [Option<&str>; 4] = [
    None,
    Some(r#"{"platform":"cli"}"#),
    Some(r#"{"conversation":{"platform":"telegram","chat":"1"}}"#),
    Some(r#"{"conversation":{"platform":"discord","chat":"2"}}"#),
];
const MODELS: [&str; 3] = ["sdxl.safetensors", "flux-dev.safetensors", "pony.safetensors"];
const BATCH: usize = 10_000;
const DAY: i64 = 86_400_000;

async fn fill(args: &StatsBenchArgs, store: &station_store::Store, now: i64) -> Result<(), String> {
    let span = i64::from(args.days) * DAY - 60_000;
    let start = now - span;
    let mut r = Lcg(27);
    let accounts: Vec<(String, String)> =
        (0..args.accounts).map(|i| (format!("bench-{i:05}"), format!("Person {i}"))).collect();
    store.insert_history(&accounts, &[], &[]).await.map_err(|e| e.to_string())?;
    let mut written = 0;
    while written < args.jobs {
        let n = BATCH.min(args.jobs - written);
        let jobs: Vec<HistoryJob> = (0..n)
            .map(|i| {
                let created = start + r.next(span as u64) as i64;
                let tool = TOOLS[r.next(TOOLS.len() as u64) as usize];
                let params = if tool == "txt2img" || tool == "img2img" {
                    format!(r#"{{"prompt":"a cat","model":"{}"}}"#, MODELS[r.next(3) as usize])
                } else {
                    r#"{"image":"media:x"}"#.to_string()
                };
                let (status, code, error) = match r.next(100) {
                    0..=89 => ("succeeded", None, None),
                    90..=97 => ("failed", Some("backend_error"), Some("The image server stopped answering.")),
                    _ => ("cancelled", Some("cancelled"), Some("cancelled by request")),
                };
                let started = (status != "cancelled").then(|| (created + 500 + r.next(30_000) as i64).min(now));
                let finished = match started {
                    Some(s) => (s + 2_000 + r.next(60_000) as i64).min(now),
                    None => (created + 10_000).min(now),
                };
                HistoryJob {
                    id: format!("bench-job-{:07}", written + i),
                    account_id: accounts[r.next(accounts.len() as u64) as usize].0.clone(),
                    tool_id: tool.into(),
                    params,
                    source: SOURCES[r.next(4) as usize].map(str::to_string),
                    status: status.into(),
                    error_code: code.map(str::to_string),
                    error: error.map(str::to_string),
                    created_at: created,
                    started_at: started,
                    finished_at: Some(finished),
                }
            })
            .collect();
        store.insert_history(&[], &jobs, &[]).await.map_err(|e| e.to_string())?;
        written += n;
        if written % 100_000 == 0 || written == args.jobs {
            eprintln!("{written} of {} jobs written", args.jobs);
        }
    }
    let mut written = 0;
    while written < args.entries {
        let n = BATCH.min(args.entries - written);
        let entries: Vec<HistoryEntry> = (0..n)
            .map(|i| {
                let (kind, amount) = match r.next(10) {
                    0..=5 => ("capture", -(1 + r.next(10) as i64)),
                    6 => ("grant", 10 + r.next(100) as i64),
                    7 => ("refund", 1 + r.next(10) as i64),
                    8 => ("hold", 0),
                    _ => ("release", 0),
                };
                HistoryEntry {
                    idem_key: format!("bench-entry-{:07}", written + i),
                    account_id: accounts[r.next(accounts.len() as u64) as usize].0.clone(),
                    kind: kind.into(),
                    amount,
                    job_id: None,
                    created_at: start + r.next(span as u64) as i64,
                }
            })
            .collect();
        store.insert_history(&[], &[], &entries).await.map_err(|e| e.to_string())?;
        written += n;
        if written % 100_000 == 0 || written == args.entries {
            eprintln!("{written} of {} ledger entries written", args.entries);
        }
    }
    // One job still waiting a day ago: that day is read raw, as in real life.
    let queued = HistoryJob {
        id: "bench-job-queued".into(),
        account_id: accounts[0].0.clone(),
        tool_id: "txt2img".into(),
        params: "{}".into(),
        source: None,
        status: "queued".into(),
        error_code: None,
        error: None,
        created_at: now - DAY - 3_600_000,
        started_at: None,
        finished_at: None,
    };
    store.insert_history(&[], &[queued], &[]).await.map_err(|e| e.to_string())
}

async fn timed<T, F: std::future::Future<Output = Result<T, station_store::StoreError>>>(
    f: F,
) -> Result<(T, Duration), String> {
    let t = Instant::now();
    let v = f.await.map_err(|e| e.to_string())?;
    Ok((v, t.elapsed()))
}

async fn bench(args: &StatsBenchArgs, url: Option<&str>) -> Result<StatsResult, String> {
    let dir = std::env::temp_dir().join(format!("station-bench-stats-{}", uuid::Uuid::new_v4().simple()));
    let mut config = Config { data_dir: dir.clone(), ..Config::default() };
    std::fs::create_dir_all(config.tools_dir()).map_err(|e| e.to_string())?;
    let db = crate::BenchDb::open(url, "stats", &mut config).await?;
    let database = db.name.to_string();
    let (station, _) = Station::with_store(config, db.store.clone()).map_err(|e| e.to_string())?;
    let now = station_core::now_ms();
    eprintln!("{database}: writing the history…");
    let t = Instant::now();
    fill(args, &db.store, now).await?;
    let fill_time = t.elapsed();
    let week = StatsRange::last_days(7, now);
    let all = StatsRange::last_days(args.days, now);
    eprintln!("{database}: reports from raw rows…");
    let (raw_week, raw_7) = timed(station.stats_from_raw(week)).await?;
    let (raw_month, raw_all) = timed(station.stats_from_raw(all)).await?;
    eprintln!("{database}: first report from rollups (rolls up the closed days)…");
    let (first, first_all) = timed(station.stats(all)).await?;
    let (rolled_week, rolled_7) = timed(station.stats(week)).await?;
    let (rolled_month, rolled_all) = timed(station.stats(all)).await?;
    let result = if first != raw_month || rolled_month != raw_month || rolled_week != raw_week {
        Err(format!("{database}: the report from rollups differs from the one from raw rows"))
    } else {
        Ok(StatsResult {
            database,
            fill: fill_time,
            raw_7,
            raw_all,
            first_all,
            rolled_7,
            rolled_all,
            jobs_7: raw_week.total.jobs,
            jobs_all: raw_month.total.jobs,
        })
    };
    drop(station);
    db.remove().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
