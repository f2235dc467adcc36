//! `station bench http`: requests per second of the REST API under load,
//! against bare axum handlers served by the same process in the same run.
//!
//! One Station (temporary SQLite file, or `--database-url`) is served twice
//! on 127.0.0.1: the real router, and a bare axum router with the
//! comparison handlers. An in-process load generator (reqwest, one
//! keep-alive connection per concurrent client) runs each scenario for a
//! fixed time, one after the other:
//!
//! - `bare static`: a bare axum handler returning a fixed JSON body;
//! - `bare job read`: a bare handler reading the job row and serialising it
//!   (no authentication, no ownership check, no queue position);
//! - `GET /api/v1/tools`: the real endpoint with an API key;
//! - `GET /api/v1/generations/{id}`: the real job status read with an API
//!   key (authentication, ownership, queue position and ETA).
//!
//! The load generator shares the CPU with the server, equally for every
//! scenario; machine load (`/proc/loadavg`) is printed with the table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Args;
use serde_json::json;
use station_core::{Config, Station};
use station_store::NewJob;

use crate::exit;

/// `station bench http`.
#[derive(Debug, Args, Clone)]
pub struct HttpBenchArgs {
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Database URL (default: a temporary SQLite file).
    #[arg(long = "database-url")]
    pub database_url: Option<String>,
}

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// What was requested.
    pub name: String,
    /// Successful requests per second.
    pub per_s: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Answers other than 200 (must be 0).
    pub errors: u64,
}

/// Runs the benchmark and prints a markdown table.
pub async fn run(args: HttpBenchArgs) -> u8 {
    if args.seconds == 0 || args.connections == 0 {
        eprintln!("error: --seconds and --connections must be at least 1");
        return exit::USAGE;
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; for real figures run `cargo run --release -p station -- bench http`"
        );
    }
    match bench(&args).await {
        Ok(results) => {
            print!("{}", table(&args, &results));
            if results.iter().any(|r| r.errors > 0) {
                eprintln!("error: some requests failed (see the errors column)");
                return exit::FAILED;
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: HTTP benchmark failed: {e}");
            exit::FAILED
        }
    }
}

/// Serves the two routers and runs every scenario.
pub async fn bench(args: &HttpBenchArgs) -> Result<Vec<Scenario>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile_dir()?;
    let mut config = Config { data_dir: dir.clone(), ..Config::default() };
    config.database_url = args.database_url.clone();
    // The limit would otherwise stop the run: it is not what is measured.
    config.limits.requests_per_minute = u64::MAX / 2;
    let (station, _) = Station::open(config).await.map_err(|e| e.to_string())?;
    let account = station.account("bench", "http", "bench").await.map_err(|e| e.to_string())?;
    let (_, key) = station.create_api_key(&account, "bench", None).await.map_err(|e| e.to_string())?;
    let job_id = uuid::Uuid::now_v7().to_string();
    let job = NewJob {
        id: job_id.clone(),
        account_id: account.id.clone(),
        tool_id: "resize".into(),
        service: "bench-http".into(),
        params: serde_json::Map::new(),
        priority: 0,
        max_attempts: 1,
        timeout_ms: 60_000,
        source: None,
    };
    station.store.insert_job(&job, station_store::now_ms()).await.map_err(|e| e.to_string())?;

    let api = serve(station_http::router(station.clone())).await?;
    let bare_router = axum::Router::new()
        .route("/bare", get(|| async { Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})) }))
        .route(
            "/bare/jobs/{id}",
            get(|State(s): State<Station>, Path(id): Path<String>| async move {
                match s.store.get_job(&id).await {
                    Ok(Some(j)) => Json(json!(j)).into_response(),
                    _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .with_state(station.clone());
    let bare = serve(bare_router).await?;

    let secs = Duration::from_secs(args.seconds);
    let n = args.connections;
    let mut results = vec![];
    for (name, url, auth) in [
        ("bare axum: static JSON".to_string(), format!("{bare}/bare"), false),
        ("bare axum: job row read".to_string(), format!("{bare}/bare/jobs/{job_id}"), false),
        ("GET /api/v1/tools".to_string(), format!("{api}/api/v1/tools"), true),
        ("GET /api/v1/generations/{id}".to_string(), format!("{api}/api/v1/generations/{job_id}"), true),
    ] {
        let key = auth.then(|| key.clone());
        results.push(load(name, url, key, n, secs).await);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(results)
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("station-bench-http-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

async fn serve(router: axum::Router) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let base = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(base)
}

/// `connections` clients, each with its own keep-alive connection, request
/// `url` in a loop for `duration`.
async fn load(name: String, url: String, key: Option<String>, connections: usize, duration: Duration) -> Scenario {
    // Warm-up: connections open, caches filled.
    let warm = Duration::from_millis(300).min(duration / 4);
    let _ = run_clients(&url, key.as_deref(), connections, warm).await;
    let (ok, errors, mut latencies, elapsed) = run_clients(&url, key.as_deref(), connections, duration).await;
    latencies.sort();
    let pick = |q: f64| {
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
        }
    };
    Scenario { name, per_s: ok as f64 / elapsed.as_secs_f64(), p50: pick(0.5), p99: pick(0.99), errors }
}

async fn run_clients(
    url: &str,
    key: Option<&str>,
    connections: usize,
    duration: Duration,
) -> (u64, u64, Vec<Duration>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..connections {
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
        let (url, key) = (url.to_string(), key.map(str::to_owned));
        let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut req = client.get(&url);
                if let Some(k) = &key {
                    req = req.bearer_auth(k);
                }
                match req.send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut latencies = vec![];
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed), latencies, elapsed)
}

fn table(args: &HttpBenchArgs, results: &[Scenario]) -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut out = format!(
        "{} s per scenario, {} keep-alive connections, {} CPUs, load average {}\n\n",
        args.seconds,
        args.connections,
        cpus,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    out += "| scenario | requests/s | p50 | p99 | errors | vs bare static | vs bare job read |\n";
    out += "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    let base = results.first().map(|r| r.per_s).unwrap_or(1.0);
    let job = results.get(1).map(|r| r.per_s).unwrap_or(1.0);
    for r in results {
        out += &format!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.0} % | {:.0} % |\n",
            r.name,
            r.per_s,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.errors,
            100.0 * r.per_s / base,
            100.0 * r.per_s / job
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_measures_every_scenario_without_errors() {
        let args = HttpBenchArgs { seconds: 1, connections: 4, database_url: None };
        let results = bench(&args).await.expect("bench");
        assert_eq!(results.len(), 4);
        for r in &results {
            assert_eq!(r.errors, 0, "{r:?}");
            assert!(r.per_s > 0.0 && r.p50 <= r.p99, "{r:?}");
        }
        let t = table(&args, &results);
        assert!(t.contains("| GET /api/v1/tools |"), "{t}");
    }
}
