//! `station bench submit`: how many `POST /api/v1/generations` creates per
//! second the real HTTP server takes, each its own transaction with its
//! points hold, from concurrent keep-alive clients — on SQLite and on
//! PostgreSQL in one run.
//!
//! Nothing claims the jobs (no executor is registered), so the queue only
//! grows, as it does in front of busy backends; the quota and rate limit are
//! set out of reach and the account holds enough points for every job: they
//! are not what is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};
use station_core::{Config, Station};
use station_store::Store;

use crate::Outcome;

/// `station bench submit`.
#[derive(Debug, Args, Clone)]
pub struct SubmitBenchArgs {
    /// Seconds each database is loaded.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Database URL (default: a temporary SQLite file). Repeat for several;
    /// a PostgreSQL URL gets a throwaway schema, dropped afterwards.
    #[arg(long = "database-url")]
    pub database_urls: Vec<String>,
    /// Send a fresh `Idempotency-Key` with every create (one more lookup and
    /// one more column written per create).
    #[arg(long)]
    pub idempotency_keys: bool,
    /// Every client creates for the same account (default: one account per client).
    #[arg(long)]
    pub one_account: bool,
}

/// One database's figures.
#[derive(Debug, Clone)]
pub struct SubmitResult {
    /// Which database.
    pub database: String,
    /// Creates answered 201 per second.
    pub per_s: f64,
    /// Median time of one create.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Answers other than 201 (must be 0).
    pub errors: u64,
    /// Jobs in the database afterwards (must equal the creates answered).
    pub jobs_stored: u64,
    /// Creates answered 201.
    pub created: u64,
}

/// Runs `station bench submit`.
pub async fn run(args: SubmitBenchArgs) -> Outcome {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; for real figures run `cargo run --release -p station -- bench submit`"
        );
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut results = vec![];
    for url in &crate::database_urls(&args.database_urls) {
        match bench(&args, url.as_deref()).await {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("error: submissions benchmark failed: {e}");
                return Outcome::Failed;
            }
        }
    }
    print!("{}", table(&args, &results));
    if results.iter().any(|r| r.errors > 0 || r.jobs_stored != r.created) {
        eprintln!("error: some creates failed, or the stored jobs do not match the creates answered");
        return Outcome::Failed;
    }
    Outcome::Done
}

/// The table, with the machine's load.
fn table(args: &SubmitBenchArgs, results: &[SubmitResult]) -> String {
    let mut out = format!(
        "\nPOST /api/v1/generations (JSON, API key, points hold), {} clients ({}), {} s each; load average {}\n\n",
        args.clients,
        if args.one_account { "one account" } else { "one account each" },
        args.seconds,
        crate::load_average()
    );
    out += "| database | creates/s | p50 ms | p99 ms | errors | jobs stored |\n|---|---:|---:|---:|---:|---:|\n";
    for r in results {
        out += &format!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} |\n",
            r.database,
            r.per_s,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.errors,
            r.jobs_stored
        );
    }
    out
}

/// The benchmark's tool: a ComfyUI text-to-image tool with one prompt input
/// (nothing runs it: only the submission is measured).
fn tool() -> Value {
    json!({
        "id": "bench-submit",
        "name": "Submit bench",
        "description": "A tool whose jobs only queue (benchmark).",
        "category": "text-to-image",
        "service": "comfyui",
        "visibility": "public",
        "inputs": {"prompt": {"type": "text", "required": true, "description": "What to draw."}},
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
                "3": {"class_type": "PrimitiveString", "inputs": {"value": ""}}
            },
            "bindings": {"prompt": ["3.inputs.value"]},
            "outputs": ["2"]
        }
    })
}

/// One database: open it, serve the API, load it, count the rows.
pub async fn bench(args: &SubmitBenchArgs, url: Option<&str>) -> Result<SubmitResult, String> {
    let dir = std::env::temp_dir().join(format!("station-bench-submit-{}", uuid::Uuid::new_v4().simple()));
    let mut config = Config { data_dir: dir.clone(), ..Config::default() };
    config.limits.requests_per_minute = 0;
    config.limits.max_queued = 0;
    config.points.starting_grant = 0;
    std::fs::create_dir_all(config.tools_dir()).map_err(|e| e.to_string())?;
    std::fs::write(config.tools_dir().join("bench-submit.json"), tool().to_string()).map_err(|e| e.to_string())?;
    let db = crate::BenchDb::open(url, "submit", &mut config).await?;
    let database = db.name.to_string();
    let (mut station, errors) = Station::with_store(config, db.store.clone()).map_err(|e| e.to_string())?;
    if !errors.is_empty() {
        return Err(format!("the benchmark tool failed to load: {errors:?}"));
    }
    station.join_processes().await.map_err(|e| e.to_string())?;
    let result = load(args, &station, &db.store, database).await;
    station.shutdown().await;
    db.remove().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn load(
    args: &SubmitBenchArgs,
    station: &Station,
    store: &Store,
    database: String,
) -> Result<SubmitResult, String> {
    // One account (and key) per client, as from many users; with
    // `--one-account` every client shares one, so every hold contends for
    // the same balance row.
    let mut keys = vec![];
    for c in 0..if args.one_account { 1 } else { args.clients.max(1) } {
        let account = station.account("bench", &format!("submit-{c}"), "bench").await.map_err(|e| e.to_string())?;
        station
            .grant_points(
                &account,
                1_000_000_000,
                "benchmark jobs",
                &station_core::audit::Actor::operator("bench"),
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        keys.push(station.create_api_key(&account, "bench", None).await.map_err(|e| e.to_string())?.1);
    }
    let base = crate::http::serve(station_http::service(station.clone(), axum::Router::new())).await?;
    let url = format!("{base}/api/v1/generations");
    // Warm-up (connections, statement caches), then the measured run.
    let _ = clients(args, &url, &keys, Duration::from_millis(500)).await;
    let before = count_jobs(store).await?;
    let (created, errors, mut latencies, elapsed) = clients(args, &url, &keys, Duration::from_secs(args.seconds)).await;
    let jobs_stored = count_jobs(store).await? - before;
    latencies.sort();
    let pick = |q: f64| crate::percentile(&latencies, q);
    Ok(SubmitResult {
        database,
        per_s: created as f64 / elapsed.as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
        errors,
        jobs_stored,
        created,
    })
}

/// Every job row, whatever its status.
async fn count_jobs(store: &Store) -> Result<u64, String> {
    let stats = store.queue_stats().await.map_err(|e| e.to_string())?;
    Ok(stats.by_status.iter().map(|(_, n)| u64::try_from(*n).unwrap_or(0)).sum())
}

/// `args.clients` clients create for `duration`; returns creates, errors,
/// latencies and the time taken (until the last answer).
async fn clients(
    args: &SubmitBenchArgs,
    url: &str,
    keys: &[String],
    duration: Duration,
) -> (u64, u64, Vec<Duration>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let mut tasks = vec![];
    for c in 0..args.clients {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
        let (url, key, with_keys) = (url.to_owned(), keys[c % keys.len()].clone(), args.idempotency_keys);
        let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = Instant::now();
                let mut req = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"tool": "bench-submit", "params": {"prompt": format!("client {c} job {n}")}}));
                if with_keys {
                    req = req.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
                }
                match req.send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed());
                    }
                    Ok(r) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            let status = r.status();
                            eprintln!("first refused create: {status} {}", r.text().await.unwrap_or_default());
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first failed create: {e}");
                        }
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = vec![];
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    let elapsed = start.elapsed();
    (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed), latencies, elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_stores_every_create_it_counts() {
        let args = SubmitBenchArgs {
            seconds: 1,
            clients: 4,
            database_urls: vec![],
            idempotency_keys: true,
            one_account: false,
        };
        let r = bench(&args, None).await.expect("bench");
        assert_eq!(r.errors, 0, "{r:?}");
        assert!(r.created > 0, "{r:?}");
        assert_eq!(r.jobs_stored, r.created, "every create answered 201 is a stored job");
        assert!(table(&args, &[r]).contains("| SQLite |"));
    }
}
