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
//! scenario; machine load (`/proc/loadavg`) is printed with the table. With
//! `--load wrk` the load comes from `wrk`, a separate process (Debian's
//! `wrk` package), as the issue suggests: its client costs are a fraction of
//! reqwest's, so the server's own costs weigh more in every ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Args;
use serde_json::json;
use station_core::{Config, Station};
use station_store::{JobStatus, NewJob, Store};

use crate::Outcome;

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
    /// What sends the requests: `in-process` (reqwest, in this process) or
    /// `wrk` (the `wrk` program, a separate process; it must be on PATH).
    #[arg(long, value_enum, default_value_t = LoadGenerator::InProcess)]
    pub load: LoadGenerator,
    /// Threads `wrk` uses (with `--load wrk`).
    #[arg(long = "wrk-threads", default_value_t = 1)]
    pub wrk_threads: usize,
    /// CPUs `wrk` runs on (a `taskset -c` list, e.g. `1`). With the
    /// benchmark itself started under `taskset -c 0`, server and load
    /// generator each get their own CPU and the server's cost per request
    /// sets the rate, with far less noise than when they compete.
    #[arg(long = "wrk-cpus")]
    pub wrk_cpus: Option<String>,
    /// Run only the scenarios whose name contains this text (with their
    /// bare baselines and `bare axum: static JSON`), e.g. `tools`.
    #[arg(long)]
    pub only: Option<String>,
}

/// What sends the benchmark's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadGenerator {
    /// reqwest clients on this process's runtime, beside the server.
    InProcess,
    /// The `wrk` program, a separate process.
    Wrk,
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
    /// With `--load wrk`: this process's CPU time per answered request —
    /// the server's cost alone, as the load comes from another process.
    pub cpu_per_request: Option<Duration>,
    /// This scenario's rate over its baseline's, round by round (each pair
    /// run one after the other): the median, lowest and highest.
    pub vs_baseline: Option<(f64, f64, f64)>,
    /// With `--load wrk`: CPUs this process kept busy (1.0 = one CPU); a
    /// server pinned to one CPU below about 0.95 was not the bottleneck.
    pub busy: Option<f64>,
}

impl Scenario {
    /// One round's figures, before rounds are combined and baselines known.
    fn round(name: String, per_s: f64, p50: Duration, p99: Duration, errors: u64) -> Scenario {
        let range = (per_s, per_s);
        Scenario {
            name,
            per_s,
            p50,
            p99,
            errors,
            range,
            baseline: None,
            cpu_per_request: None,
            busy: None,
            vs_baseline: None,
        }
    }
}

const BARE_STATIC: &str = "bare axum: static JSON";
const BARE_TOOLS: &str = "bare axum: the tool list's bytes (constant)";
const BARE_TOOLS_KEYED: &str = "bare axum: the tool list's bytes, request with the API key (ignored)";
const BARE_JOB: &str = "bare axum: job row read";

/// Runs the benchmark and prints a markdown table.
pub async fn run(args: HttpBenchArgs) -> Outcome {
    if args.seconds == 0 || args.connections == 0 {
        eprintln!("error: --seconds and --connections must be at least 1");
        return Outcome::BadUsage;
    }
    if args.load == LoadGenerator::Wrk {
        if args.wrk_threads == 0 || args.wrk_threads > args.connections {
            eprintln!("error: --wrk-threads must be between 1 and --connections ({})", args.connections);
            return Outcome::BadUsage;
        }
        if let Err(e) = std::process::Command::new("wrk").arg("--version").output() {
            eprintln!("error: --load wrk needs the `wrk` program on PATH ({e}); on Debian: apt-get install wrk");
            return Outcome::BadUsage;
        }
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
                return Outcome::Failed;
            }
            Outcome::Done
        }
        Err(e) => {
            eprintln!("error: HTTP benchmark failed: {e}");
            Outcome::Failed
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
    let store = match (pg, &schema) {
        // A throwaway schema: the benchmark never touches a real database's rows.
        (Some(url), Some(schema)) => Store::connect_postgres_fresh_schema(url, schema).await,
        _ => {
            config.database_url = args.database_url.clone();
            Store::connect(&config.database_url()).await
        }
    }
    .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let mut station = Station::with_store(config, store.clone()).map_err(|e| e.to_string())?.0;
    station.join_processes().await.map_err(|e| e.to_string())?;
    let results = scenarios(args, &station, &store).await;
    station.shutdown().await;
    if let (Some(url), Some(schema)) = (pg, &schema)
        && let Err(e) = Store::drop_postgres_schema(url, schema).await
    {
        eprintln!("warning: could not drop schema {schema}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Serves the two routers from `station` and runs every scenario.
async fn scenarios(args: &HttpBenchArgs, station: &Station, store: &Store) -> Result<Vec<Scenario>, String> {
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
    store.insert_job(&job, station_store::now_ms()).await.map_err(|e| e.to_string())?;
    // A finished job: no queue position or ETA to compute.
    let done_id = uuid::Uuid::now_v7().to_string();
    let done = NewJob { id: done_id.clone(), service: "bench-http-done".into(), ..job };
    let now = station_store::now_ms();
    store.insert_job(&done, now).await.map_err(|e| e.to_string())?;
    let claim = station_store::ClaimRequest {
        service: "bench-http-done",
        owner: "bench",
        limit: 1,
        lease_ms: 60_000,
        per_account_running_cap: 1,
        now,
    };
    store.claim_jobs(&claim).await.map_err(|e| e.to_string())?;
    store
        .finish_job(&done_id, "bench", JobStatus::Succeeded, Some(&[]), None, now + 1)
        .await
        .map_err(|e| e.to_string())?;

    // What `station serve` serves (not the test wrapper `station_http::router`).
    let api = serve(station_http::service(station.clone(), axum::Router::new())).await?;
    // The real tool list's bytes, for a bare handler answering the same body:
    // the fair baseline for `GET /api/v1/tools` (a constant of the same size).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tools_body = reqwest::Client::new()
        .get(format!("{api}/api/v1/tools"))
        .bearer_auth(&key)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let (rows, statuses) = (store.clone(), store.clone());
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
            get(move |Path(id): Path<String>| {
                let rows = rows.clone();
                async move {
                    match rows.get_job(&id).await {
                        Ok(Some(j)) => Json(json!(j)).into_response(),
                        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        )
        // Decomposition: the real status query alone, and the real
        // authentication alone, each in an otherwise bare handler.
        .route(
            "/bare/status/{id}",
            get(move |Path(id): Path<String>| {
                let statuses = statuses.clone();
                async move {
                    match statuses.job_status(&id).await {
                        Ok(Some(j)) => Json(json!(j.job)).into_response(),
                        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                    }
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
    let traced = serve(
        tower::ServiceBuilder::new()
            .map_response(IntoResponse::into_response)
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .service(constant()),
    )
    .await?;

    let secs = Duration::from_secs(args.seconds);
    let n = args.connections;
    // Each real scenario runs right after its bare baseline, so the pair
    // shares the machine's conditions; the decomposition rows come last.
    let list: [(&str, String, bool, Option<&'static str>); 12] = [
        (BARE_STATIC, format!("{bare}/bare"), false, None),
        ("GET /healthz (router + middleware, no auth)", format!("{api}/healthz"), false, Some(BARE_STATIC)),
        // The same bytes on the wire both ways as the real list: what the
        // credential costs the client and HTTP parsing, apart from checking it.
        (BARE_TOOLS_KEYED, format!("{bare}/bare/tools"), true, None),
        ("GET /api/v1/tools", format!("{api}/api/v1/tools"), true, Some(BARE_TOOLS_KEYED)),
        (BARE_JOB, format!("{bare}/bare/jobs/{job_id}"), false, None),
        ("GET /api/v1/generations/{id} (queued)", format!("{api}/api/v1/generations/{job_id}"), true, Some(BARE_JOB)),
        (
            "GET /api/v1/generations/{id} (succeeded)",
            format!("{api}/api/v1/generations/{done_id}"),
            true,
            Some(BARE_JOB),
        ),
        (BARE_TOOLS, format!("{bare}/bare/tools"), false, None),
        ("bare axum: status query (`Store::job_status`)", format!("{bare}/bare/status/{job_id}"), false, None),
        ("bare axum: API key check (cached) only", format!("{bare}/bare/auth"), true, None),
        ("bare axum: static JSON + security headers", format!("{headed}/bare"), false, None),
        ("bare axum: static JSON + trace layer", format!("{traced}/bare"), false, None),
    ];
    // Rounds in rotation, so a burst of load from elsewhere on the machine
    // lands on every scenario alike; each scenario reports its median round.
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| name.contains(only));
    let baselines: Vec<&str> = list.iter().filter(|s| wanted(s.0)).filter_map(|s| s.3).chain([BARE_STATIC]).collect();
    if !list.iter().any(|s| wanted(s.0)) {
        return Err(format!("no scenario's name contains {:?}", args.only.as_deref().unwrap_or_default()));
    }
    let list: Vec<_> = list.into_iter().filter(|s| wanted(s.0) || baselines.contains(&s.0)).collect();
    let mut rounds: Vec<Vec<Scenario>> = vec![vec![]; list.len()];
    for _ in 0..args.rounds.max(1) {
        for (i, (name, url, auth, baseline)) in list.iter().enumerate() {
            let key = auth.then(|| key.clone());
            let mut one = match args.load {
                LoadGenerator::InProcess => load(name.to_string(), url.clone(), key, n, secs).await,
                LoadGenerator::Wrk => {
                    let cpus = args.wrk_cpus.as_deref();
                    load_wrk(name, url, key.as_deref(), n, args.wrk_threads, cpus, args.seconds).await?
                }
            };
            one.baseline = *baseline;
            rounds[i].push(one);
        }
    }
    let by_name = |name: &str| list.iter().position(|s| s.0 == name).map(|j| &rounds[j]);
    Ok(rounds
        .iter()
        .map(|r| {
            // Paired: each round's rate over its baseline's in the same round.
            let paired = r[0].baseline.and_then(by_name).map(|base| {
                median_and_range(r.iter().zip(base).map(|(x, b)| x.per_s / b.per_s).collect::<Vec<_>>(), |x| *x)
            });
            let (mut median, min, max) = median_and_range(r.clone(), |s| s.per_s);
            median.range = (min, max);
            median.errors = r.iter().map(|x| x.errors).sum();
            median.vs_baseline = paired;
            median
        })
        .collect())
}

/// The middle item by `value` (the upper one of an even count), with the
/// lowest and highest value.
fn median_and_range<T>(mut items: Vec<T>, value: impl Fn(&T) -> f64) -> (T, f64, f64) {
    items.sort_by(|a, b| value(a).total_cmp(&value(b)));
    let (low, high) = (value(&items[0]), value(&items[items.len() - 1]));
    (items.swap_remove(items.len() / 2), low, high)
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

/// Serves `service` on an ephemeral port of 127.0.0.1 (as `station serve`
/// does: no delay on small writes); returns its base URL.
pub(crate) async fn serve(service: impl station_http::HttpService) -> Result<String, String> {
    use axum::ServiceExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let base = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    tokio::spawn(async move {
        let _ = axum::serve(station_http::no_delay(listener), service.into_make_service()).await;
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
    Scenario::round(name, ok as f64 / elapsed.as_secs_f64(), pick(0.5), pick(0.99), errors)
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
        let _ = rustls::crypto::ring::default_provider().install_default();
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

/// Runs `wrk` against `url` (a one-second warm-up, then `seconds`) and
/// reads its report.
async fn load_wrk(
    name: &str,
    url: &str,
    key: Option<&str>,
    connections: usize,
    threads: usize,
    cpus: Option<&str>,
    seconds: u64,
) -> Result<Scenario, String> {
    let run = |secs: u64| {
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = tokio::process::Command::new("taskset");
                c.args(["-c", cpus, "wrk"]);
                c
            }
            None => tokio::process::Command::new("wrk"),
        };
        cmd.args(["--latency", "-t", &threads.to_string(), "-c", &connections.to_string()]);
        cmd.args(["-d", &format!("{secs}s")]);
        // The benchmark's own throwaway key, in its throwaway database.
        if let Some(k) = key {
            cmd.args(["-H", &format!("Authorization: Bearer {k}")]);
        }
        cmd.arg(url).kill_on_drop(true).output()
    };
    run(1).await.map_err(|e| format!("cannot run wrk: {e}"))?;
    let (cpu_before, started) = (process_cpu_time(), Instant::now());
    let out = run(seconds).await.map_err(|e| format!("cannot run wrk: {e}"))?;
    let (cpu, wall) = (process_cpu_time().saturating_sub(cpu_before), started.elapsed());
    let report = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("wrk failed ({}): {}{}", out.status, report, String::from_utf8_lossy(&out.stderr)));
    }
    let (mut one, requests) = parse_wrk(&report).ok_or_else(|| format!("unexpected wrk report:\n{report}"))?;
    one.name = name.to_string();
    if requests > 0 {
        one.cpu_per_request = Some(cpu / u32::try_from(requests).unwrap_or(u32::MAX));
    }
    one.busy = Some(cpu.as_secs_f64() / wall.as_secs_f64());
    Ok(one)
}

/// CPU time (user and system) this process has used so far, all threads:
/// `utime` + `stime` of `/proc/self/stat`, in the kernel's user-visible
/// clock ticks (USER_HZ, fixed at 100 per second by the Linux ABI), so
/// 10 ms resolution, plenty for rounds of seconds. Zero where there is no
/// `/proc` (the figure is then left out of the table).
fn process_cpu_time() -> Duration {
    const USER_HZ: u64 = 100;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // The command name (field 2) may hold spaces: count from its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 1000 / USER_HZ)
}

/// The figures in a `wrk --latency` report: requests per second, the 50 %
/// and 99 % latencies, and non-2xx answers plus socket errors as errors;
/// with the number of requests made.
fn parse_wrk(report: &str) -> Option<(Scenario, u64)> {
    let field = |label: &str| {
        report.lines().map(str::trim).find_map(|l| l.strip_prefix(label)).map(str::trim).map(str::to_string)
    };
    let per_s: f64 = field("Requests/sec:")?.parse().ok()?;
    let latency = |q: &str| field(q).and_then(|v| wrk_duration(&v));
    let mut errors: u64 = field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0);
    if let Some(socket) = field("Socket errors:") {
        // "connect 0, read 0, write 0, timeout 0"
        errors += socket.split(',').filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok()).sum::<u64>();
    }
    // "180000 requests in 3.00s, 30.00MB read"
    let requests = report.lines().find(|l| l.contains(" requests in "))?.split_whitespace().next()?.parse().ok()?;
    Some((Scenario::round(String::new(), per_s, latency("50%")?, latency("99%")?, errors), requests))
}

/// A `wrk` duration such as `812.00us`, `1.25ms` or `2.00s`.
fn wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.trim().parse().ok()?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

fn table(args: &HttpBenchArgs, results: &[Scenario]) -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(0);
    let generator = match args.load {
        LoadGenerator::InProcess => "in-process reqwest".to_string(),
        LoadGenerator::Wrk => match &args.wrk_cpus {
            Some(cpus) => format!("wrk ({} thread(s), on CPUs {cpus})", args.wrk_threads),
            None => format!("wrk ({} thread(s))", args.wrk_threads),
        },
    };
    let mut out = format!(
        "{} round(s) of {} s per scenario (median round shown), {} keep-alive connections from {}, {} CPUs, load average {}\n\n",
        args.rounds.max(1),
        args.seconds,
        args.connections,
        generator,
        cpus,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let cpu = results.iter().any(|r| r.cpu_per_request.is_some());
    out += "| scenario | requests/s | rounds' range | p50 | p99 | errors |";
    out += if cpu { " server CPU/request | server busy |" } else { "" };
    out += " vs bare static | vs its bare baseline, round by round: median (range) |\n";
    out += "| --- | ---: | ---: | ---: | ---: | ---: |";
    out += if cpu { " ---: | ---: |" } else { "" };
    out += " ---: | ---: |\n";
    let rate = |name: &str| results.iter().find(|r| r.name == name).map(|r| r.per_s);
    let base = rate(BARE_STATIC).unwrap_or(1.0);
    for r in results {
        let vs_baseline = match (r.baseline, r.vs_baseline) {
            (Some(b), Some((median, low, high))) => format!(
                "{:.0} % ({:.0}–{:.0}) of {}",
                100.0 * median,
                100.0 * low,
                100.0 * high,
                b.trim_start_matches("bare axum: ")
            ),
            _ => "—".into(),
        };
        out += &format!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.2} ms | {:.2} ms | {} |",
            r.name,
            r.per_s,
            r.range.0,
            r.range.1,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.errors,
        );
        if cpu {
            let per = r.cpu_per_request.map_or("—".into(), |d| format!("{:.1} µs", d.as_secs_f64() * 1e6));
            let busy = r.busy.map_or("—".into(), |b| format!("{b:.2} CPU"));
            out += &format!(" {per} | {busy} |");
        }
        out += &format!(" {:.0} % | {} |\n", 100.0 * r.per_s / base, vs_baseline);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_measures_every_scenario_without_errors() {
        let args = HttpBenchArgs {
            seconds: 1,
            rounds: 1,
            connections: 4,
            database_url: None,
            load: LoadGenerator::InProcess,
            wrk_threads: 1,
            wrk_cpus: None,
            only: None,
        };
        let results = bench(&args).await.expect("bench");
        assert_eq!(results.len(), 12);
        for r in &results {
            assert_eq!(r.errors, 0, "{r:?}");
            assert!(r.per_s > 0.0 && r.p50 <= r.p99, "{r:?}");
        }
        let t = table(&args, &results);
        assert!(
            t.contains("| GET /api/v1/tools |")
                && t.contains("of the tool list's bytes, request with the API key (ignored) |"),
            "{t}"
        );
    }

    #[test]
    fn a_wrk_report_is_read() {
        let report = "Running 3s test @ http://127.0.0.1:4000/bare
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.34us  100.00us   5.00ms   90.00%
    Req/Sec    60.00k     1.00k   65.00k    80.00%
  Latency Distribution
     50%  498.00us
     75%  600.00us
     90%  700.00us
     99%    1.25ms
  180000 requests in 3.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  60012.34
Transfer/sec:     10.00MB
";
        let (s, requests) = parse_wrk(report).expect("parsed");
        assert_eq!(requests, 180000);
        assert_eq!(s.per_s, 60012.34);
        assert_eq!(s.p50, Duration::from_micros(498));
        assert_eq!(s.p99, Duration::from_micros(1250));
        assert_eq!(s.errors, 8);
        assert!(parse_wrk("wrk: unable to connect").is_none());
        assert_eq!(wrk_duration("2.00s"), Some(Duration::from_secs(2)));
        assert_eq!(wrk_duration("1.5x"), None);
    }
}
