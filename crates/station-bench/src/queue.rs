//! `station bench`: how fast the durable job queue moves jobs with an instant
//! backend, on a temporary SQLite file and on every PostgreSQL URL given.
//!
//! Three figures per database:
//! - enqueue: `insert_job` from `workers` concurrent submitters, jobs/s;
//! - drain: `workers` tasks looping `claim_jobs(batch)` → one finish per job,
//!   each in its own task (as the core runs each claimed job in its own task),
//!   all through one [`FinishBatcher`] per process as in the core's workers
//!   (outcomes that arrive while a commit is in flight share the next one),
//!   until the queue is empty, jobs/s;
//! - added latency: on a lightly loaded queue (one worker, batch 1), the
//!   claim round trip plus the finish round trip each job pays, p50/p99.
//!
//! Figures only mean something from a release build:
//! `cargo run --release -p station -- bench --database-url $STATION_TEST_POSTGRES_URL`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use station_store::{Backend, ClaimRequest, FinishBatcher, JobFinish, JobStatus, NewJob, Store, StoreError, now_ms};

use crate::{BenchArgs, BenchCommand, Outcome};

/// Service name the benchmark's jobs use, so they never mix with real ones.
const SERVICE: &str = "bench";
/// Jobs are spread over this many accounts, like a busy multi-user queue.
const ACCOUNTS: usize = 10;
/// Jobs timed one by one for the latency figures.
const LATENCY_JOBS: usize = 2_000;
/// A cap no account reaches: the drain measures throughput, not the cap.
const NO_CAP: i64 = i64::MAX / 2;

/// What one database scored.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// `SQLite` or `PostgreSQL`.
    pub database: &'static str,
    /// Jobs enqueued and drained.
    pub jobs: usize,
    /// Concurrent submitters and claimers.
    pub workers: usize,
    /// Jobs per claim.
    pub batch: i64,
    /// Most outcomes per commit (0: one commit per job).
    pub finish_batch: usize,
    /// Enqueue rate.
    pub enqueue_per_s: f64,
    /// Claim → finish rate.
    pub drain_per_s: f64,
    /// Claim + finish time per job on a lightly loaded queue.
    pub latency: Latency,
}

/// Percentiles of the per-job queue overhead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// Runs the benchmark on SQLite and every `--database-url`, prints a
/// markdown table and says how it went.
pub async fn run(args: BenchArgs) -> Outcome {
    if let Some(BenchCommand::Http(http)) = args.command {
        return crate::http::run(http).await;
    }
    if args.jobs == 0 || args.workers == 0 || args.batch < 1 {
        eprintln!(
            "error: --jobs ({}), --workers ({}) and --batch ({}) must all be at least 1",
            args.jobs, args.workers, args.batch
        );
        return Outcome::BadUsage;
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; for real figures run \
             `cargo run --release -p station -- bench --database-url $STATION_TEST_POSTGRES_URL`"
        );
    }
    let mut results = vec![];
    let sqlite = bench_sqlite(&args).await;
    match sqlite {
        Ok(r) => results.push(r),
        Err(e) => {
            eprintln!("error: SQLite benchmark failed: {e}");
            return Outcome::Failed;
        }
    }
    for url in &args.database_urls {
        match bench_url(&args, url).await {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("error: benchmark on {} failed: {e}", host_part(url));
                return Outcome::Unavailable;
            }
        }
    }
    print!("{}", table(&results));
    Outcome::Done
}

async fn bench_sqlite(args: &BenchArgs) -> Result<BenchResult, String> {
    let dir = std::env::temp_dir().join(format!("station_bench_{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        let store = Store::connect_sqlite(&dir.join("bench.db")).await.map_err(|e| e.to_string())?;
        let r = bench_store(&store, args).await;
        store.close().await;
        r
    }
    .await;
    remove_dir(&dir);
    result
}

/// The part of a URL after any credentials, safe to print.
fn host_part(url: &str) -> &str {
    url.rsplit_once('@').map_or(url, |(_, host)| host)
}

fn remove_dir(dir: &PathBuf) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("warning: could not remove {}: {e}", dir.display());
    }
}

async fn bench_url(args: &BenchArgs, url: &str) -> Result<BenchResult, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // A throwaway schema: the benchmark never touches a real queue.
        let schema = format!("station_bench_{}", uuid::Uuid::new_v4().simple());
        let store = Store::connect_postgres_fresh_schema(url, &schema).await.map_err(|e| e.to_string())?;
        let r = bench_store(&store, args).await;
        store.close().await;
        if let Err(e) = Store::drop_postgres_schema(url, &schema).await {
            eprintln!("warning: could not drop schema {schema}: {e}");
        }
        r
    } else if let Some(path) = url.strip_prefix("sqlite:") {
        let path = PathBuf::from(path.trim_start_matches("//"));
        if path.exists() {
            return Err(format!("{} already exists; the benchmark only writes to a new SQLite file", path.display()));
        }
        let store = Store::connect_sqlite(&path).await.map_err(|e| e.to_string())?;
        let r = bench_store(&store, args).await;
        store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        r
    } else {
        Err("unknown scheme (use postgres://… or sqlite://PATH)".into())
    }
}

async fn bench_store(store: &Store, args: &BenchArgs) -> Result<BenchResult, String> {
    store.migrate().await.map_err(|e| e.to_string())?;
    let database = match store.backend() {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    eprintln!("{database}: enqueueing {} jobs…", args.jobs);
    let enqueue_time = enqueue(store, args.jobs, args.workers).await.map_err(|e| format!("enqueue: {e}"))?;
    eprintln!("{database}: draining with {} workers, batch {}…", args.workers, args.batch);
    let (drained, drain_time) =
        drain(store, args.workers, args.batch, args.finish_batch).await.map_err(|e| format!("drain: {e}"))?;
    if drained != args.jobs {
        return Err(format!("drained {drained} jobs but enqueued {}", args.jobs));
    }
    eprintln!("{database}: timing {LATENCY_JOBS} jobs one at a time…");
    enqueue(store, LATENCY_JOBS, 1).await.map_err(|e| format!("enqueue: {e}"))?;
    let latency = latency(store, args.finish_batch).await.map_err(|e| format!("latency: {e}"))?;
    Ok(BenchResult {
        database,
        jobs: args.jobs,
        workers: args.workers,
        batch: args.batch,
        finish_batch: args.finish_batch,
        enqueue_per_s: args.jobs as f64 / enqueue_time.as_secs_f64(),
        drain_per_s: drained as f64 / drain_time.as_secs_f64(),
        latency,
    })
}

fn new_job(n: usize) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        account_id: format!("bench-account-{}", n % ACCOUNTS),
        tool_id: "noop".into(),
        service: SERVICE.into(),
        params: serde_json::Map::new(),
        priority: 0,
        max_attempts: 1,
        timeout_ms: 60_000,
        source: None,
    }
}

/// Inserts `jobs` jobs from `submitters` concurrent tasks; returns the wall time.
async fn enqueue(store: &Store, jobs: usize, submitters: usize) -> Result<Duration, StoreError> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..submitters)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= jobs {
                        return Ok::<_, StoreError>(());
                    }
                    store.insert_job(&new_job(n), now_ms()).await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("enqueue task panicked")?;
    }
    Ok(start.elapsed())
}

/// Claims and finishes every queued job with `workers` concurrent tasks;
/// returns how many were finished and the wall time.
async fn drain(
    store: &Store,
    workers: usize,
    batch: i64,
    finish_batch: usize,
) -> Result<(usize, Duration), StoreError> {
    let (finisher, finisher_task) = Finisher::new(store, finish_batch);
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let store = store.clone();
            let finisher = finisher.clone();
            tokio::spawn(async move {
                let owner = format!("bench-worker-{w}");
                let mut done = 0usize;
                loop {
                    let claimed = store.claim_jobs(&claim(&owner, batch)).await?;
                    if claimed.is_empty() {
                        return Ok::<_, StoreError>(done);
                    }
                    // Like the core's claim loop, every claimed job runs (and
                    // finishes) in its own task, so finishes overlap.
                    let finishes: Vec<_> = claimed
                        .iter()
                        .map(|job| {
                            let (f, id, owner) = (finisher.clone(), job.id.clone(), owner.clone());
                            tokio::spawn(async move { finish(&f, &id, &owner).await })
                        })
                        .collect();
                    for f in finishes {
                        f.await.expect("finish task panicked")?;
                        done += 1;
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("drain task panicked")?;
    }
    let elapsed = start.elapsed();
    drop(finisher);
    if let Some(t) = finisher_task {
        t.await.expect("finisher task panicked");
    }
    Ok((total, elapsed))
}

/// Records an instant backend's success; a lost lease would mean two
/// claimers shared a job, which the benchmark treats as a failure.
async fn finish(finisher: &Finisher, job_id: &str, owner: &str) -> Result<(), StoreError> {
    let applied = match finisher {
        Finisher::Single(store) => store.finish_job(job_id, owner, JobStatus::Succeeded, None, None, now_ms()).await?,
        Finisher::Batched(b) => {
            let f = JobFinish {
                settle: None,
                job_id: job_id.into(),
                owner: owner.into(),
                status: JobStatus::Succeeded,
                outputs: None,
                error: None,
                now: now_ms(),
                media: vec![],
                cancel_remote: false,
            };
            b.finish(f).await?
        }
    };
    if applied { Ok(()) } else { Err(StoreError::Corrupt(format!("job {job_id} lost its lease mid-benchmark"))) }
}

/// How finished jobs are recorded: each with its own commit (the behaviour
/// before batching), or through the core's batching finisher.
#[derive(Clone)]
enum Finisher {
    Single(Store),
    Batched(FinishBatcher),
}

impl Finisher {
    /// `max_batch` 0 means one commit per job; the batcher's task is spawned.
    fn new(store: &Store, max_batch: usize) -> (Finisher, Option<tokio::task::JoinHandle<()>>) {
        if max_batch == 0 {
            return (Finisher::Single(store.clone()), None);
        }
        let (b, task) = FinishBatcher::new(store.clone(), max_batch);
        (Finisher::Batched(b), Some(tokio::spawn(task)))
    }
}

fn claim(owner: &str, limit: i64) -> ClaimRequest<'_> {
    ClaimRequest { service: SERVICE, owner, limit, lease_ms: 60_000, per_account_running_cap: NO_CAP, now: now_ms() }
}

/// One worker, batch 1: times claim + finish of every queued job.
async fn latency(store: &Store, finish_batch: usize) -> Result<Latency, StoreError> {
    let owner = "bench-latency";
    let (finisher, finisher_task) = Finisher::new(store, finish_batch);
    let mut samples = Vec::with_capacity(LATENCY_JOBS);
    loop {
        let start = Instant::now();
        let Some(job) = store.claim_jobs(&claim(owner, 1)).await?.pop() else { break };
        finish(&finisher, &job.id, owner).await?;
        samples.push(start.elapsed());
    }
    drop(finisher);
    if let Some(t) = finisher_task {
        t.await.expect("finisher task panicked");
    }
    if samples.is_empty() {
        return Err(StoreError::Corrupt("no job was claimable for the latency run".into()));
    }
    Ok(percentiles(samples))
}

/// Nearest-rank p50 and p99 of a non-empty sample.
fn percentiles(mut samples: Vec<Duration>) -> Latency {
    samples.sort_unstable();
    let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    Latency { p50: rank(0.50), p99: rank(0.99) }
}

fn table(results: &[BenchResult]) -> String {
    let mut out = String::from(
        "| queue | database | jobs | workers | batch | enqueue jobs/s | drain jobs/s | added latency p50 | p99 |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        out += &format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} |\n",
            if r.finish_batch == 0 { "Station, commit per job" } else { "Station" },
            r.database,
            r.jobs,
            r.workers,
            r.batch,
            r.enqueue_per_s,
            r.drain_per_s,
            ms(r.latency.p50),
            ms(r.latency.p99)
        );
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<_> = (1..=200).rev().map(Duration::from_micros).collect();
        let l = percentiles(samples);
        assert_eq!(l.p50, Duration::from_micros(100));
        assert_eq!(l.p99, Duration::from_micros(198));
        let one = percentiles(vec![Duration::from_millis(3)]);
        assert_eq!((one.p50, one.p99), (Duration::from_millis(3), Duration::from_millis(3)));
    }

    #[tokio::test]
    async fn a_small_run_drains_every_job_on_sqlite() {
        let args = BenchArgs {
            command: None,
            jobs: 300,
            database_urls: vec![],
            workers: 3,
            batch: 7,
            finish_batch: station_store::DEFAULT_MAX_BATCH,
        };
        let r = bench_sqlite(&args).await.expect("bench");
        assert_eq!((r.database, r.jobs), ("SQLite", 300));
        assert!(r.drain_per_s > 0.0 && r.enqueue_per_s > 0.0);
        assert!(r.latency.p50 <= r.latency.p99 && r.latency.p50 > Duration::ZERO);
        let t = table(&[r]);
        assert!(t.lines().nth(2).unwrap().starts_with("| Station | SQLite | 300 | 3 | 7 |"), "{t}");
    }

    #[tokio::test]
    async fn drain_reports_exactly_the_jobs_it_finished() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect_sqlite(&dir.path().join("q.db")).await.unwrap();
        store.migrate().await.unwrap();
        for (finish_batch, jobs) in [(station_store::DEFAULT_MAX_BATCH, 57), (0, 23)] {
            enqueue(&store, jobs, 2).await.unwrap();
            let (n, _) = drain(&store, 4, 5, finish_batch).await.unwrap();
            assert_eq!(n, jobs, "finish_batch {finish_batch}");
            // Nothing left: a second drain finds no work.
            assert_eq!(drain(&store, 2, 5, finish_batch).await.unwrap().0, 0);
        }
        let stats = store.queue_stats().await.unwrap();
        assert_eq!(stats.by_status, vec![("succeeded".to_string(), 80)]);
    }
}
