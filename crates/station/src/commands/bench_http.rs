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
//! - two bare handlers that each do one part of a real status read: the
//!   status query (`Store::job_status`) alone, the API-key check alone;
//! - `GET /healthz`: the real router's constant answer, so the cost of its
//!   middleware (tracing, JSON errors, body limits, security headers) shows
//!   on its own;
//! - `GET /api/v1/tools`: the real endpoint with an API key;
//! - `GET /api/v1/generations/{id}`: the real job status read with an API
//!   key, of a queued job (authentication, ownership, queue position, ETA)
//!   and of a finished one.
//!
//! On PostgreSQL the run uses a throwaway schema (dropped afterwards) and
//! the cross-process bus, as `station serve` does.
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
use station_store::{JobStatus, NewJob, Store};

use crate::exit;

/// `station bench http`.
#[derive(Debug, Args, Clone)]
pub struct HttpBenchArgs {
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds: every scenario runs once per round, in rotation; the median round is shown.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
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
    /// Slowest and fastest round's requests per second.
    pub range: (f64, f64),
    /// The bare scenario answering the same body with no middleware, no
    /// authentication and (for reads) one plain query: the fair comparison.
    pub baseline: Option<&'static str>,
}

const BARE_STATIC: &str = "bare axum: static JSON";
const BARE_TOOLS: &str = "bare axum: the tool list's bytes (constant)";
const BARE_TOOLS_KEYED: &str = "bare axum: the tool list's bytes, request with the API key (ignored)";
const BARE_JOB: &str = "bare axum: job row read";

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
    // The limit would otherwise stop the run: it is not what is measured.
    config.limits.requests_per_minute = u64::MAX / 2;
    let pg = args.database_url.as_deref().filter(|u| u.starts_with("postgres"));
    let schema = pg.map(|_| format!("station_bench_http_{}", uuid::Uuid::new_v4().simple()));
    let station = match (pg, &schema) {
        (Some(url), Some(schema)) => {
            // A throwaway schema: the benchmark never touches a real database's rows.
            let store = Store::connect_postgres_fresh_schema(url, schema).await.map_err(|e| e.to_string())?;
            store.migrate().await.map_err(|e| e.to_string())?;
            let mut station = Station::with_store(config, store).map_err(|e| e.to_string())?.0;
            station.join_processes().await.map_err(|e| e.to_string())?;
            station
        }
        _ => {
            config.database_url = args.database_url.clone();
            Station::open(config).await.map_err(|e| e.to_string())?.0
        }
    };
    let results = scenarios(args, &station).await;
    station.store.close().await;
    if let (Some(url), Some(schema)) = (pg, &schema)
        && let Err(e) = Store::drop_postgres_schema(url, schema).await
    {
        eprintln!("warning: could not drop schema {schema}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Serves the two routers from `station` and runs every scenario.
async fn scenarios(args: &HttpBenchArgs, station: &Station) -> Result<Vec<Scenario>, String> {
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
    // A finished job: no queue position or ETA to compute.
    let done_id = uuid::Uuid::now_v7().to_string();
    let done = NewJob { id: done_id.clone(), service: "bench-http-done".into(), ..job };
    let now = station_store::now_ms();
    station.store.insert_job(&done, now).await.map_err(|e| e.to_string())?;
    let claim = station_store::ClaimRequest {
        service: "bench-http-done",
        owner: "bench",
        limit: 1,
        lease_ms: 60_000,
        per_account_running_cap: 1,
        now,
    };
    station.store.claim_jobs(&claim).await.map_err(|e| e.to_string())?;
    station
        .store
        .finish_job(&done_id, "bench", JobStatus::Succeeded, Some(&[]), None, now + 1)
        .await
        .map_err(|e| e.to_string())?;

    let api = serve(station_http::router(station.clone())).await?;
    // The real tool list's bytes, for a bare handler answering the same body:
    // the fair baseline for `GET /api/v1/tools` (a constant of the same size).
    let tools_body = reqwest::Client::new()
        .get(format!("{api}/api/v1/tools"))
        .bearer_auth(&key)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let bare_router = axum::Router::new()
        .route("/bare", get(static_json))
        .route(
            "/bare/tools",
            get(move || {
                let body = tools_body.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/bare/jobs/{id}",
            get(|State(s): State<Station>, Path(id): Path<String>| async move {
                match s.store.get_job(&id).await {
                    Ok(Some(j)) => Json(json!(j)).into_response(),
                    _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        // Decomposition: the real status query alone, and the real
        // authentication alone, each in an otherwise bare handler.
        .route(
            "/bare/status/{id}",
            get(|State(s): State<Station>, Path(id): Path<String>| async move {
                match s.store.job_status(&id).await {
                    Ok(Some(j)) => Json(json!(j.job)).into_response(),
                    _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .route(
            "/bare/auth",
            get(|station_http::Caller(a): station_http::Caller| async move { Json(json!({"account": a.id})) }),
        )
        .with_state(station.clone());
    let bare = serve(bare_router).await?;
    // Decomposition of the middleware: the bare constant handler behind the
    // real security headers alone, and behind the real trace layer alone.
    let constant = || axum::Router::new().route("/bare", get(static_json));
    let headed = serve(station_http::secured(constant())).await?;
    let traced = serve(constant().layer(tower_http::trace::TraceLayer::new_for_http())).await?;

    let secs = Duration::from_secs(args.seconds);
    let n = args.connections;
    let list: [(&str, String, bool, Option<&'static str>); 12] = [
        (BARE_STATIC, format!("{bare}/bare"), false, None),
        (BARE_TOOLS, format!("{bare}/bare/tools"), false, None),
        // The same bytes on the wire both ways as the real list: what the
        // credential costs the client and HTTP parsing, apart from checking it.
        (BARE_TOOLS_KEYED, format!("{bare}/bare/tools"), true, None),
        (BARE_JOB, format!("{bare}/bare/jobs/{job_id}"), false, None),
        ("bare axum: status query (`Store::job_status`)", format!("{bare}/bare/status/{job_id}"), false, None),
        ("bare axum: API key check (cached) only", format!("{bare}/bare/auth"), true, None),
        ("bare axum: static JSON + security headers", format!("{headed}/bare"), false, None),
        ("bare axum: static JSON + trace layer", format!("{traced}/bare"), false, None),
        ("GET /healthz (router + middleware, no auth)", format!("{api}/healthz"), false, Some(BARE_STATIC)),
        ("GET /api/v1/tools", format!("{api}/api/v1/tools"), true, Some(BARE_TOOLS_KEYED)),
        ("GET /api/v1/generations/{id} (queued)", format!("{api}/api/v1/generations/{job_id}"), true, Some(BARE_JOB)),
        (
            "GET /api/v1/generations/{id} (succeeded)",
            format!("{api}/api/v1/generations/{done_id}"),
            true,
            Some(BARE_JOB),
        ),
    ];
    // Rounds in rotation, so a burst of load from elsewhere on the machine
    // lands on every scenario alike; each scenario reports its median round.
    let mut rounds: Vec<Vec<Scenario>> = vec![vec![]; list.len()];
    for _ in 0..args.rounds.max(1) {
        for (i, (name, url, auth, baseline)) in list.iter().enumerate() {
            let key = auth.then(|| key.clone());
            let mut one = load(name.to_string(), url.clone(), key, n, secs).await;
            one.baseline = *baseline;
            rounds[i].push(one);
        }
    }
    Ok(rounds
        .into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| a.per_s.total_cmp(&b.per_s));
            let (min, max) = (r[0].per_s, r[r.len() - 1].per_s);
            let mut median = r[r.len() / 2].clone();
            median.range = (min, max);
            median.errors = r.iter().map(|x| x.errors).sum();
            median
        })
        .collect())
}

/// The bare constant answer (the same body as `/healthz`).
async fn static_json() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
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
    let per_s = ok as f64 / elapsed.as_secs_f64();
    Scenario { name, per_s, p50: pick(0.5), p99: pick(0.99), errors, range: (per_s, per_s), baseline: None }
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
        "{} round(s) of {} s per scenario (median round shown), {} keep-alive connections, {} CPUs, load average {}\n\n",
        args.rounds.max(1),
        args.seconds,
        args.connections,
        cpus,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    out += "| scenario | requests/s | rounds' range | p50 | p99 | errors | vs bare static | vs its bare baseline |\n";
    out += "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    let rate = |name: &str| results.iter().find(|r| r.name == name).map(|r| r.per_s);
    let base = rate(BARE_STATIC).unwrap_or(1.0);
    for r in results {
        let vs_baseline = match r.baseline.and_then(|b| rate(b).map(|rate| (b, rate))) {
            Some((b, rate)) => format!("{:.0} % (of {})", 100.0 * r.per_s / rate, b.trim_start_matches("bare axum: ")),
            None => "—".into(),
        };
        out += &format!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.2} ms | {:.2} ms | {} | {:.0} % | {} |\n",
            r.name,
            r.per_s,
            r.range.0,
            r.range.1,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.errors,
            100.0 * r.per_s / base,
            vs_baseline
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_measures_every_scenario_without_errors() {
        let args = HttpBenchArgs { seconds: 1, rounds: 1, connections: 4, database_url: None };
        let results = bench(&args).await.expect("bench");
        assert_eq!(results.len(), 12);
        for r in &results {
            assert_eq!(r.errors, 0, "{r:?}");
            assert!(r.per_s > 0.0 && r.p50 <= r.p99, "{r:?}");
        }
        let t = table(&args, &results);
        assert!(
            t.contains("| GET /api/v1/tools |")
                && t.contains("(of the tool list's bytes, request with the API key (ignored))"),
            "{t}"
        );
    }
}
