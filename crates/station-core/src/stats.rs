//! Usage and revenue figures for operators: jobs per day and per tool,
//! model and platform, points spent and granted, the busiest accounts,
//! why jobs failed, and how long jobs waited and ran — computed from the
//! jobs and the ledger Station keeps anyway.
//!
//! **Daily rollups** (migration 0028) make long ranges cheap: a UTC day
//! that is over (an hour past its end) and holds no job that has not
//! ended is aggregated once, in one transaction, into per-day rows (jobs by
//! tool/platform/model/status, the ledger by kind, per account, failures
//! by code). A report reads rolled-up days from those rows and everything
//! else — today, a partial first day, a day still holding a queued job —
//! from the raw rows, in the same statements, so it always equals the raw
//! aggregation ([`Station::stats_from_raw`]). The job finish path does not
//! touch the rollups at all. Days are rolled up by a background task in
//! `serve` ([`start_rollups`]), lazily by the first report that needs them,
//! and on demand by `station stats rebuild` ([`Station::roll_up_stats`]).

use std::collections::BTreeMap;

use std::time::Duration;

use serde::Serialize;
use station_store::{AccountUsageRow, FailureRow, JobUsageRow, PointsUsageRow, StatsSources, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Station;

const DAY_MS: i64 = 86_400_000;

/// How long after a UTC day's end it may be rolled up: entries stamped
/// just before midnight by a transaction that commits after it still land.
pub const ROLLUP_GRACE_MS: i64 = 3_600_000;

/// How often `serve` looks for days to roll up.
const ROLLUP_EVERY: Duration = Duration::from_secs(600);

/// The range of a report: `[since, until)` in Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsRange {
    /// From (inclusive).
    pub since: i64,
    /// To (exclusive).
    pub until: i64,
}

impl StatsRange {
    /// The last `days` days up to `now`, starting at the beginning of a UTC day
    /// (so "7 days" is today and the six days before, whole).
    pub fn last_days(days: u32, now: i64) -> StatsRange {
        let today = now.div_euclid(DAY_MS);
        StatsRange { since: (today - i64::from(days.max(1)) + 1) * DAY_MS, until: now + 1 }
    }
}

/// Counts and times of a set of jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Jobs submitted.
    pub jobs: i64,
    /// Of them, succeeded.
    pub succeeded: i64,
    /// Failed.
    pub failed: i64,
    /// Cancelled (by the user, or timed out before they started).
    pub cancelled: i64,
    /// Average wait from submitted to started on a backend (ms), of those that started.
    pub avg_wait_ms: Option<i64>,
    /// Average run time from started to finished (ms), of those that ran.
    pub avg_run_ms: Option<i64>,
    #[serde(skip)]
    started: i64,
    #[serde(skip)]
    wait_ms: i64,
    #[serde(skip)]
    ran: i64,
    #[serde(skip)]
    run_ms: i64,
}

impl Usage {
    fn add(&mut self, r: &JobUsageRow) {
        self.jobs += r.jobs;
        match r.status.as_str() {
            "succeeded" => self.succeeded += r.jobs,
            "failed" => self.failed += r.jobs,
            "cancelled" => self.cancelled += r.jobs,
            _ => {}
        }
        self.started += r.started;
        self.wait_ms += r.wait_ms;
        self.ran += r.ran;
        self.run_ms += r.run_ms;
    }

    fn finish(&mut self) {
        self.avg_wait_ms = (self.started > 0).then(|| self.wait_ms / self.started);
        self.avg_run_ms = (self.ran > 0).then(|| self.run_ms / self.ran);
    }

    /// Failed jobs as a share of those that ended (0–1), if any ended.
    pub fn failure_rate(&self) -> Option<f64> {
        let ended = self.succeeded + self.failed;
        (ended > 0).then(|| self.failed as f64 / ended as f64)
    }
}

/// One row of a breakdown: a tool, a model or a platform, with its use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageBy {
    /// The tool id, model file or platform name.
    pub key: String,
    /// What people call it (a tool's name; else the key).
    pub label: String,
    /// Its use.
    #[serde(flatten)]
    pub usage: Usage,
}

/// One UTC day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// `2026-12-07`.
    pub date: String,
    /// Jobs of the day.
    #[serde(flatten)]
    pub usage: Usage,
    /// Points charged for jobs.
    pub points_spent: i64,
    /// Points given (grants, rewards) and paid in (deposits).
    pub points_granted: i64,
}

/// An account among the busiest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopAccount {
    /// Account id.
    pub account_id: String,
    /// Its name.
    pub name: String,
    /// Jobs it submitted.
    pub jobs: i64,
    /// Points charged to it.
    pub points_spent: i64,
}

/// Why jobs failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The error code.
    pub code: String,
    /// How many jobs.
    pub jobs: i64,
    /// One of the messages, as the user saw it.
    pub example: Option<String>,
}

/// A usage report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// From (Unix ms, inclusive).
    pub since: i64,
    /// To (Unix ms, exclusive).
    pub until: i64,
    /// Everything in the range.
    pub total: Usage,
    /// Points charged for jobs in the range.
    pub points_spent: i64,
    /// Points granted, rewarded or deposited in the range.
    pub points_granted: i64,
    /// Points given back for charged jobs.
    pub points_refunded: i64,
    /// Every UTC day of the range, oldest first (days without jobs included).
    pub days: Vec<Day>,
    /// By tool, most used first.
    pub by_tool: Vec<UsageBy>,
    /// By model (jobs of tools that take one), most used first.
    pub by_model: Vec<UsageBy>,
    /// By platform (`telegram`, `discord`, `terminal`, `cli`, `api`), most used first.
    pub by_platform: Vec<UsageBy>,
    /// The accounts that spent the most.
    pub top_accounts: Vec<TopAccount>,
    /// Why jobs failed, most frequent first.
    pub failures: Vec<Failure>,
}

/// Accounts and failure reasons listed at most.
const TOP: i64 = 10;

fn date(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| day.to_string())
}

fn ranked(map: BTreeMap<String, Usage>, label: impl Fn(&str) -> String) -> Vec<UsageBy> {
    let mut v: Vec<UsageBy> = map
        .into_iter()
        .map(|(key, mut usage)| {
            usage.finish();
            UsageBy { label: label(&key), key, usage }
        })
        .collect();
    v.sort_by(|a, b| b.usage.jobs.cmp(&a.usage.jobs).then(a.key.cmp(&b.key)));
    v
}

/// What a rollup pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupSummary {
    /// Days looked at.
    pub days: usize,
    /// Days (re)computed into rollups.
    pub rolled: usize,
    /// Days left to be read raw because they still hold jobs that have not ended.
    pub unfinished: usize,
}

/// The first day (days since 1970-01-01, UTC) that is not yet over at `now`.
fn open_from(now: i64) -> i64 {
    (now - ROLLUP_GRACE_MS).div_euclid(DAY_MS)
}

/// Splits `[since, until)` into rolled-up day runs (from `rolled`, sorted)
/// and raw ranges; only whole days inside the range are read from rollups.
fn plan(since: i64, until: i64, rolled: &[i64]) -> StatsSources {
    fn raw(a: i64, b: i64, src: &mut StatsSources) {
        if a >= b {
            return;
        }
        match src.raw.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => src.raw.push((a, b)),
        }
    }
    let mut src = StatsSources::default();
    let first_full = since.div_euclid(DAY_MS) + i64::from(since.rem_euclid(DAY_MS) != 0);
    let end_full = until.div_euclid(DAY_MS);
    if first_full >= end_full {
        raw(since, until, &mut src);
        return src;
    }
    raw(since, first_full * DAY_MS, &mut src);
    let mut day = first_full;
    let mut rolled = rolled.iter().copied().filter(|d| (first_full..end_full).contains(d)).peekable();
    while day < end_full {
        if rolled.peek() == Some(&day) {
            let start = day;
            while rolled.peek() == Some(&day) {
                rolled.next();
                day += 1;
            }
            src.rolled.push((start, day));
        } else {
            let next = rolled.peek().copied().unwrap_or(end_full);
            raw(day * DAY_MS, next * DAY_MS, &mut src);
            day = next;
        }
    }
    raw(end_full * DAY_MS, until, &mut src);
    src
}

impl Station {
    /// The usage report for `range`: whole days already over are read from
    /// the daily rollups (rolling up any missing ones first), the rest from
    /// the raw rows. Always equal to [`Station::stats_from_raw`].
    pub async fn stats(&self, range: StatsRange) -> Result<Stats, StoreError> {
        let StatsRange { since, until } = range;
        let now = crate::now_ms();
        let first_full = since.div_euclid(DAY_MS) + i64::from(since.rem_euclid(DAY_MS) != 0);
        let end_full = until.div_euclid(DAY_MS).min(open_from(now));
        let mut rolled = Vec::new();
        if first_full < end_full {
            let missing = self.missing_rollup_days(first_full, end_full).await?;
            if !missing.is_empty() {
                info!(days = missing.len(), "rolling up the days this report needs");
                for day in missing {
                    self.store.roll_up_stats_day(day, now).await?;
                }
            }
            rolled = self.store.stats_rolled_days(first_full, end_full).await?;
        }
        let src = plan(since, until, &rolled);
        let jobs = self.store.job_usage_from(&src).await?;
        let points = self.store.points_usage_from(&src).await?;
        let top = self.store.top_accounts_from(&src, TOP).await?;
        let failures = self.store.failure_reasons_from(&src, TOP).await?;
        Ok(self.shape(range, &jobs, &points, top, failures))
    }

    /// The usage report for `range` aggregated from the raw jobs and
    /// ledger alone, ignoring the rollups: the reference [`Station::stats`]
    /// must equal (tested), and the "before" of `station bench stats`.
    pub async fn stats_from_raw(&self, range: StatsRange) -> Result<Stats, StoreError> {
        let StatsRange { since, until } = range;
        let jobs = self.store.job_usage(since, until).await?;
        let points = self.store.points_usage(since, until).await?;
        let top = self.store.top_accounts(since, until, TOP).await?;
        let failures = self.store.failure_reasons(since, until, TOP).await?;
        Ok(self.shape(range, &jobs, &points, top, failures))
    }

    /// Days in `[first, end)` that are over but not rolled up and hold no
    /// unfinished job, from the first day with any activity.
    async fn missing_rollup_days(&self, first: i64, end: i64) -> Result<Vec<i64>, StoreError> {
        let Some(active) = self.store.stats_first_day().await? else { return Ok(Vec::new()) };
        let first = first.max(active);
        if first >= end {
            return Ok(Vec::new());
        }
        let rolled = self.store.stats_rolled_days(first, end).await?;
        let unfinished = self.store.stats_unfinished_days(first, end).await?;
        Ok((first..end).filter(|d| rolled.binary_search(d).is_err() && unfinished.binary_search(d).is_err()).collect())
    }

    /// Rolls up the days that are over from `since_day` (default: the first
    /// day with any job or ledger entry) to yesterday. Without `rebuild`
    /// only days missing a rollup are computed; with it every such day is
    /// recomputed from the raw rows (after an import or a repair).
    /// `progress` is told each day done: `(done, total, "2026-12-07")`.
    /// Safe to run in several processes at once.
    pub async fn roll_up_stats(
        &self,
        since_day: Option<i64>,
        rebuild: bool,
        progress: &mut (dyn FnMut(usize, usize, &str) + Send),
    ) -> Result<RollupSummary, StoreError> {
        let now = crate::now_ms();
        let end = open_from(now);
        let Some(active) = self.store.stats_first_day().await? else { return Ok(RollupSummary::default()) };
        let first = since_day.unwrap_or(active).max(active);
        if first >= end {
            return Ok(RollupSummary::default());
        }
        let days: Vec<i64> =
            if rebuild { (first..end).collect() } else { self.missing_rollup_days(first, end).await? };
        let mut summary = RollupSummary { days: days.len(), ..RollupSummary::default() };
        for (i, &day) in days.iter().enumerate() {
            if self.store.roll_up_stats_day(day, now).await? {
                summary.rolled += 1;
            } else {
                summary.unfinished += 1;
            }
            progress(i + 1, days.len(), &date(day));
        }
        Ok(summary)
    }

    fn shape(
        &self,
        range: StatsRange,
        jobs: &[JobUsageRow],
        points: &[PointsUsageRow],
        top: Vec<AccountUsageRow>,
        failures: Vec<FailureRow>,
    ) -> Stats {
        let StatsRange { since, until } = range;
        let first_day = since.div_euclid(DAY_MS);
        let last_day = (until - 1).div_euclid(DAY_MS);
        let mut days: BTreeMap<i64, Day> = (first_day..=last_day)
            .map(|d| (d, Day { date: date(d), usage: Usage::default(), points_spent: 0, points_granted: 0 }))
            .collect();
        let mut total = Usage::default();
        let (mut by_tool, mut by_model, mut by_platform) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for r in jobs {
            total.add(r);
            if let Some(d) = days.get_mut(&r.day) {
                d.usage.add(r);
            }
            by_tool.entry(r.tool_id.clone()).or_insert_with(Usage::default).add(r);
            by_platform.entry(r.platform.clone()).or_insert_with(Usage::default).add(r);
            if let Some(m) = r.model.as_deref().filter(|m| !m.is_empty()) {
                by_model.entry(m.to_string()).or_insert_with(Usage::default).add(r);
            }
        }
        total.finish();
        let (mut spent, mut granted, mut refunded) = (0i64, 0i64, 0i64);
        for p in points {
            let day = days.get_mut(&p.day);
            match p.kind.as_str() {
                "capture" => {
                    spent = spent.saturating_add(-p.amount);
                    if let Some(d) = day {
                        d.points_spent = d.points_spent.saturating_add(-p.amount);
                    }
                }
                "grant" | "reward" | "deposit" => {
                    granted = granted.saturating_add(p.amount);
                    if let Some(d) = day {
                        d.points_granted = d.points_granted.saturating_add(p.amount);
                    }
                }
                "refund" => refunded = refunded.saturating_add(p.amount),
                _ => {}
            }
        }
        let days = days
            .into_values()
            .map(|mut d| {
                d.usage.finish();
                d
            })
            .collect();
        let tool_label = |id: &str| self.tools.get(id).map(|t| t.name.clone()).unwrap_or_else(|| id.to_string());
        let model_label = |file: &str| {
            self.models_snapshot()
                .iter()
                .find(|m| m.name == file)
                .map(|m| m.label.clone())
                .unwrap_or_else(|| file.to_string())
        };
        Stats {
            since,
            until,
            total,
            points_spent: spent,
            points_granted: granted,
            points_refunded: refunded,
            days,
            by_tool: ranked(by_tool, tool_label),
            by_model: ranked(by_model, model_label),
            by_platform: ranked(by_platform, str::to_string),
            top_accounts: top
                .into_iter()
                .map(|a| TopAccount {
                    account_id: a.account_id,
                    name: a.name,
                    jobs: a.jobs,
                    points_spent: a.points_spent,
                })
                .collect(),
            failures: failures
                .into_iter()
                .map(|f| Failure { code: f.code, jobs: f.jobs, example: f.example })
                .collect(),
        }
    }
}

/// The background rollup task `serve` runs; stop it with [`RollupRunner::shutdown`].
pub struct RollupRunner {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RollupRunner {
    /// Stops the task after the day it is rolling up, if any.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts rolling up the usage figures of each day once it is over (soon
/// after start, then every ten minutes). Several processes may run it:
/// each day's rollup is one idempotent transaction.
pub fn start_rollups(station: &Station) -> RollupRunner {
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (station, stop) = (station.clone(), stop.clone());
        async move {
            let mut wait = Duration::from_secs(5);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = ROLLUP_EVERY;
                let mut last_logged = std::time::Instant::now();
                let mut progress = |done: usize, total: usize, day: &str| {
                    if last_logged.elapsed() >= Duration::from_secs(10) {
                        last_logged = std::time::Instant::now();
                        info!(done, total, day, "rolling up usage figures");
                    }
                };
                let pass = station.roll_up_stats(None, false, &mut progress);
                let result = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = pass => r,
                };
                match result {
                    Ok(s) if s.rolled > 0 => info!(days = s.rolled, "usage figures rolled up"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "could not roll up the usage figures; reports read raw rows meanwhile"),
                }
            }
        }
    });
    RollupRunner { stop, task }
}

/// The report as CSV: one line per day, then one per tool, model and
/// platform (`section,key,label,jobs,succeeded,failed,cancelled,avg_wait_ms,avg_run_ms,points_spent,points_granted`).
pub fn stats_csv(s: &Stats) -> String {
    fn field(text: &str) -> String {
        // Quoted when needed; a leading formula character is defused for spreadsheets.
        let text = if text.starts_with(['=', '+', '-', '@']) { format!("'{text}") } else { text.to_string() };
        if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
    }
    fn opt(v: Option<i64>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    let mut out = String::from(
        "section,key,label,jobs,succeeded,failed,cancelled,avg_wait_ms,avg_run_ms,points_spent,points_granted\n",
    );
    let mut line = |section: &str, key: &str, label: &str, u: &Usage, spent: String, granted: String| {
        out.push_str(&format!(
            "{section},{},{},{},{},{},{},{},{},{spent},{granted}\n",
            field(key),
            field(label),
            u.jobs,
            u.succeeded,
            u.failed,
            u.cancelled,
            opt(u.avg_wait_ms),
            opt(u.avg_run_ms)
        ));
    };
    for d in &s.days {
        line("day", &d.date, &d.date, &d.usage, d.points_spent.to_string(), d.points_granted.to_string());
    }
    for (section, rows) in [("tool", &s.by_tool), ("model", &s.by_model), ("platform", &s.by_platform)] {
        for r in rows {
            line(section, &r.key, &r.label, &r.usage, String::new(), String::new());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_start_at_a_utc_midnight() {
        let now = 1_765_110_000_000; // 2025-12-07 12:20 UTC
        let r = StatsRange::last_days(7, now);
        assert_eq!(r.since % DAY_MS, 0);
        assert_eq!((now.div_euclid(DAY_MS) - r.since / DAY_MS), 6);
        assert_eq!(r.until, now + 1);
        assert_eq!(date(now.div_euclid(DAY_MS)), "2025-12-07");
    }
}
