//! `station bench fleet`: a fleet simulation. Several real `station serve`
//! child processes share one PostgreSQL queue; this process plays everyone
//! else: `--backends` fake ComfyUI servers (each a simulated GPU with its own
//! run-time distribution and failure rate, speaking the real protocol) and
//! `--accounts` accounts whose jobs arrive as a Poisson process, each
//! arrival's account drawn by a Zipf law, sent as `POST /api/v1/generations`
//! to the processes in turn. One run per entry of `--processes`, each on a
//! fresh database, side by side in one table:
//!
//! - throughput: jobs ended per second during the load window;
//! - dispatch latency: queued → handed to a worker that sends it to a backend
//!   (`created_at` → `dispatched_at` of the jobs table), and the wait until the
//!   backend started it (`started_at`);
//! - fairness: Jain's index of the jobs dispatched within the window over
//!   accounts with equal demand (see [`fairness`]);
//! - backend utilisation: the fakes' busy time over the window;
//! - the CPU each side used and the database's own load
//!   (`pg_stat_statements` when the server preloads it, else
//!   `pg_stat_database` / `pg_stat_user_tables`).
//!
//! Figures only mean something from a release build:
//! `cargo run --release -p station -- bench fleet`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use station_comfyui_fake::{FakeComfy, FakeOptions, Profile, Usage};
use station_core::audit::Actor;
use station_core::{Config, Station};
use station_store::{DatabaseCounters, JobTiming, StatementCost, Store, TableCounters, now_ms};

use crate::Outcome;

/// The tool every simulated job runs.
const TOOL: &str = "bench-fleet";
/// Points each account is granted (one point per job).
const GRANT: i64 = 1_000_000;
/// Accounts created per call, so the progress bar moves.
const ACCOUNT_CHUNK: usize = 5_000;

/// `station bench fleet`.
#[derive(Debug, Args, Clone)]
pub struct FleetBenchArgs {
    /// Station processes per run, comma-separated: one run per entry.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub processes: Vec<usize>,
    /// Fake ComfyUI backends (simulated GPUs), all in this process.
    #[arg(long, default_value_t = 100)]
    pub backends: usize,
    /// Simulated accounts, created in bulk with points to pay.
    #[arg(long, default_value_t = 100_000)]
    pub accounts: usize,
    /// Seconds of load per run (jobs still running afterwards are drained).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Offered load as a share of the backends' capacity (0.8: 80 %).
    #[arg(long, default_value_t = 0.8)]
    pub utilisation: f64,
    /// Offered load in jobs per second (instead of `--utilisation`).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Exponent of the Zipf law choosing each job's account (1: the k-th
    /// busiest account submits 1/k as often as the busiest).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Typical GPU run time, ms: each backend's median is drawn between half
    /// and twice this.
    #[arg(long, default_value_t = 1000)]
    pub median_ms: u64,
    /// Highest failure rate of a backend: each one's is drawn in [0, this].
    #[arg(long, default_value_t = 0.02)]
    pub failure_rate: f64,
    /// Jobs an account may have running at once (`queue.per_user_running`;
    /// default: lifted, so the dispatch latency measures the queue, not the cap).
    #[arg(long)]
    pub per_account_running: Option<u64>,
    /// PostgreSQL server (default: STATION_TEST_POSTGRES_URL, else
    /// postgres://postgres@127.0.0.1:5432/test). Each run creates its own
    /// database there (or a schema when it may not) and drops it afterwards.
    #[arg(long = "database-url")]
    pub database_url: Option<String>,
    /// Most seconds to wait for the last jobs after the load window.
    #[arg(long, default_value_t = 60)]
    pub drain_seconds: u64,
    /// Seed of the backends' profiles and of the arrivals.
    #[arg(long, default_value_t = 28)]
    pub seed: u64,
    /// The `station` binary to run as `station serve` (default: this one).
    #[arg(long, hide = true)]
    pub station_bin: Option<PathBuf>,
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Station processes.
    pub processes: usize,
    /// Offered jobs per second.
    pub offered_per_s: f64,
    /// Creates answered 201.
    pub accepted: u64,
    /// Creates refused or failed.
    pub refused: u64,
    /// Job rows in the database.
    pub rows: usize,
    /// Jobs that ended during the load window, per second.
    pub throughput: f64,
    /// Jobs that succeeded / failed (the simulated GPU failures), after the drain.
    pub succeeded: usize,
    /// See `succeeded`.
    pub failed: usize,
    /// Jobs not ended after the drain (must be 0).
    pub unfinished: usize,
    /// Queued → dispatched, p50 / p99 / max.
    pub dispatch: [Duration; 3],
    /// Queued → running on the backend, p50 / p99.
    pub start_wait: [Duration; 2],
    /// Jain's index over accounts with equal demand, and how many accounts it covers.
    pub fairness: Option<(f64, usize)>,
    /// Backends' busy share of the window.
    pub utilisation: f64,
    /// Prompts the backends ran vs claims the jobs recorded (ran ≤ claims:
    /// no job ran twice).
    pub backend_runs: u64,
    /// See `backend_runs`.
    pub attempts: u64,
    /// CPU seconds per second of window: Station processes, this process,
    /// PostgreSQL (every postgres process on the machine), the whole machine (in cores).
    pub cpu: Cpu,
    /// Accounts created per second (bulk).
    pub accounts_per_s: f64,
    /// The database's own load over the window.
    pub db: DbLoad,
}

/// CPU cores busy on average over the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// All Station processes together.
    pub station: f64,
    /// This process: the fake backends and the simulated users.
    pub bench: f64,
    /// Every `postgres` process.
    pub postgres: f64,
    /// The whole machine, and its cores.
    pub machine: f64,
    /// Cores of the machine.
    pub cores: usize,
}

/// The database's load over the window.
#[derive(Debug, Clone)]
pub struct DbLoad {
    /// Transactions committed per second (each read outside a transaction counts).
    pub commits_per_s: f64,
    /// Rows inserted + updated + deleted per second.
    pub rows_written_per_s: f64,
    /// Rows read (returned by scans) per second.
    pub rows_read_per_s: f64,
    /// Top statements by total time, or why they are unavailable.
    pub statements: Result<Vec<StatementCost>, String>,
    /// Tables by rows written over the window (with their scans).
    pub tables: Vec<TableCounters>,
}

impl RunResult {
    /// Every accepted job has one row, ended, and none ran on a backend more
    /// often than it was claimed.
    pub fn exactly_once(&self) -> bool {
        self.rows as u64 == self.accepted && self.unfinished == 0 && self.backend_runs <= self.attempts
    }
}

/// Runs `station bench fleet`.
pub async fn run(args: FleetBenchArgs) -> Outcome {
    if let Err(e) = check(&args) {
        eprintln!("error: {e}");
        return Outcome::BadUsage;
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; for real figures run `cargo run --release -p station -- bench fleet`"
        );
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = args.database_url.clone().unwrap_or_else(|| {
        std::env::var("STATION_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
    });
    let bin = match args.station_bin.clone().map(Ok).unwrap_or_else(std::env::current_exe) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot find the station binary to start: {e}");
            return Outcome::Failed;
        }
    };
    let backends = Backends::start(&args).await;
    let offered = args.rate.unwrap_or(args.utilisation * backends.capacity_per_s());
    eprintln!(
        "{} backends (median run times {}–{} ms, failure rates 0–{:.1} %), capacity ≈ {:.1} jobs/s; offering {:.1} jobs/s",
        args.backends,
        args.median_ms / 2,
        args.median_ms * 2,
        args.failure_rate * 100.0,
        backends.capacity_per_s(),
        offered
    );
    let mut results = vec![];
    for &n in &args.processes {
        eprintln!("\n— {n} Station process{} —", if n == 1 { "" } else { "es" });
        match run_once(&args, &url, &bin, &backends, n, offered).await {
            Ok(r) => results.push(r),
            Err(RunError::Unavailable(e)) => {
                eprintln!("error: {e}");
                return Outcome::Unavailable;
            }
            Err(RunError::Failed(e)) => {
                eprintln!("error: the run with {n} processes failed: {e}");
                return Outcome::Failed;
            }
        }
    }
    print!("{}", report(&args, &backends, &results));
    if results.iter().any(|r| !r.exactly_once() || r.refused > 0) {
        eprintln!("error: some jobs were refused, lost, left unfinished or ran twice (see the table)");
        return Outcome::Failed;
    }
    Outcome::Done
}

fn check(args: &FleetBenchArgs) -> Result<(), String> {
    if args.processes.is_empty() || args.processes.contains(&0) {
        return Err("--processes: give one or more counts of at least 1, like 1,2,3".into());
    }
    if args.backends == 0 || args.accounts == 0 || args.seconds == 0 {
        return Err("--backends, --accounts and --seconds must all be at least 1".into());
    }
    if !(args.utilisation > 0.0 && args.utilisation <= 2.0) {
        return Err(format!("--utilisation: between 0 and 2 (0.8 is 80 %), got {}", args.utilisation));
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate: jobs per second, more than 0".into());
    }
    if !(args.zipf >= 0.0 && args.zipf.is_finite()) {
        return Err(format!("--zipf: an exponent of 0 or more, got {}", args.zipf));
    }
    if !(0.0..=1.0).contains(&args.failure_rate) {
        return Err(format!("--failure-rate: between 0 and 1, got {}", args.failure_rate));
    }
    if args.median_ms < 2 {
        return Err("--median-ms: at least 2".into());
    }
    Ok(())
}

enum RunError {
    /// The database could not be used.
    Unavailable(String),
    /// Something else went wrong.
    Failed(String),
}

impl From<String> for RunError {
    fn from(e: String) -> Self {
        RunError::Failed(e)
    }
}

/// The simulated GPUs.
pub struct Backends {
    fakes: Vec<FakeComfy>,
    profiles: Vec<Profile>,
}

impl Backends {
    /// Starts `args.backends` fakes, each with a profile drawn from the seed.
    pub async fn start(args: &FleetBenchArgs) -> Backends {
        let mut rng = StdRng::seed_from_u64(args.seed);
        let mut fakes = vec![];
        let mut profiles = vec![];
        for _ in 0..args.backends {
            let fake =
                FakeComfy::start(FakeOptions { previews_by_default: false, cache: false, ..FakeOptions::default() })
                    .await;
            let profile = Profile {
                median: Duration::from_millis(args.median_ms).mul_f64(2f64.powf(rng.random_range(-1.0..=1.0))),
                sigma: rng.random_range(0.1..=0.5),
                failure_rate: rng.random_range(0.0..=args.failure_rate),
            };
            fake.set_profile(Some(profile));
            fakes.push(fake);
            profiles.push(profile);
        }
        Backends { fakes, profiles }
    }

    /// Jobs per second the backends finish when always busy.
    pub fn capacity_per_s(&self) -> f64 {
        self.profiles.iter().map(|p| 1.0 / p.mean().as_secs_f64()).sum()
    }

    fn urls(&self) -> String {
        self.fakes.iter().map(FakeComfy::url).collect::<Vec<_>>().join(",")
    }

    /// Sum of every backend's usage since the last call.
    fn take_usage(&self) -> Usage {
        self.fakes.iter().map(FakeComfy::take_usage).fold(Usage::default(), |a, u| Usage {
            prompts: a.prompts + u.prompts,
            failed: a.failed + u.failed,
            busy_ms: a.busy_ms + u.busy_ms,
        })
    }
}

/// A fresh database (or, when the server refuses `CREATE DATABASE`, a schema)
/// for one run.
struct FleetDb {
    store: Store,
    /// URL the Station processes use.
    url: String,
    /// How to drop it: the server URL and the database or schema name.
    drop: (String, String, bool),
}

impl FleetDb {
    async fn create(server: &str) -> Result<FleetDb, String> {
        let name = format!("station_bench_fleet_{}", uuid::Uuid::new_v4().simple());
        let mut db_url = reqwest::Url::parse(server).map_err(|e| format!("--database-url: {e}"))?;
        match Store::create_postgres_database(server, &name).await {
            Ok(()) => {
                db_url.set_path(&format!("/{name}"));
                let url = db_url.to_string();
                let store = Store::connect(&url).await.map_err(|e| e.to_string())?;
                Ok(FleetDb { store, url, drop: (server.to_owned(), name, true) })
            }
            Err(e) => {
                eprintln!("note: could not create a database ({e}); using a schema of the given one");
                let store = Store::connect_postgres_fresh_schema(server, &name).await.map_err(|e| e.to_string())?;
                db_url.query_pairs_mut().append_pair("options", &format!("-c search_path={name}"));
                Ok(FleetDb { store, url: db_url.to_string(), drop: (server.to_owned(), name, false) })
            }
        }
    }

    async fn remove(self) {
        self.store.close().await;
        let (server, name, database) = &self.drop;
        let r = if *database {
            Store::drop_postgres_database(server, name).await
        } else {
            Store::drop_postgres_schema(server, name).await
        };
        if let Err(e) = r {
            eprintln!("warning: could not drop {name}: {e}");
        }
    }
}

/// The benchmark's tool: an 8×8 image saved by the backend, with a prompt
/// (the backend's profile decides how long it takes).
fn tool() -> Value {
    json!({
        "id": TOOL,
        "name": "Fleet simulation",
        "description": "A tiny text-to-image job for the fleet simulation (benchmark).",
        "category": "text-to-image",
        "service": "comfyui",
        "visibility": "public",
        "inputs": {"prompt": {"type": "text", "required": true, "description": "What to draw."}},
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "fleet"}},
                "3": {"class_type": "PrimitiveString", "inputs": {"value": ""}}
            },
            "bindings": {"prompt": ["3.inputs.value"]},
            "outputs": ["2"]
        }
    })
}

/// One job arriving: when (from the window's start) and whose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Time from the start of the window.
    pub at: Duration,
    /// Account index (0 is the busiest).
    pub account: usize,
}

/// Poisson arrivals at `rate` per second over `seconds`, each account drawn
/// by a Zipf law of exponent `s` over `accounts`.
pub fn arrivals(rate: f64, seconds: u64, accounts: usize, s: f64, rng: &mut impl Rng) -> Vec<Arrival> {
    let mut cdf = Vec::with_capacity(accounts);
    let mut sum = 0.0;
    for k in 1..=accounts {
        sum += 1.0 / (k as f64).powf(s);
        cdf.push(sum);
    }
    let end = seconds as f64;
    let mut t = 0.0;
    let mut out = vec![];
    loop {
        t += -rng.random_range(f64::EPSILON..1.0).ln() / rate;
        if t >= end {
            return out;
        }
        let u = rng.random_range(0.0..sum);
        let account = cdf.partition_point(|c| *c <= u).min(accounts - 1);
        out.push(Arrival { at: Duration::from_secs_f64(t), account });
    }
}

/// Jain's fairness index of `x`: 1 when all equal, 1/n when one gets everything.
pub fn jain(x: &[f64]) -> Option<f64> {
    let sum: f64 = x.iter().sum();
    let squares: f64 = x.iter().map(|v| v * v).sum();
    (squares > 0.0).then(|| sum * sum / (x.len() as f64 * squares))
}

/// Fairness over accounts with equal demand: an account's demand is its jobs
/// queued before `cutoff`, its service how many of those were dispatched by
/// `window_end`. Accounts are grouped by demand (groups of at least two);
/// the result is Jain's index of each group, weighted by the group's size,
/// and the number of accounts covered. 1 means equal demand got equal
/// service; it falls when some accounts' jobs waited past the window while
/// others' with the same demand did not.
pub fn fairness(jobs: &[JobTiming], cutoff: i64, window_end: i64) -> Option<(f64, usize)> {
    let mut per_account: HashMap<&str, (u64, u64)> = HashMap::new();
    for j in jobs.iter().filter(|j| j.created_at < cutoff) {
        let e = per_account.entry(&j.account_id).or_default();
        e.0 += 1;
        e.1 += u64::from(j.dispatched_at.is_some_and(|d| d <= window_end));
    }
    let mut groups: HashMap<u64, Vec<f64>> = HashMap::new();
    for (demand, served) in per_account.into_values() {
        groups.entry(demand).or_default().push(served as f64);
    }
    let (mut weighted, mut covered) = (0.0, 0usize);
    for served in groups.into_values().filter(|g| g.len() >= 2) {
        // Nobody served at all is equal, if not good.
        weighted += jain(&served).unwrap_or(1.0) * served.len() as f64;
        covered += served.len();
    }
    (covered > 0).then(|| (weighted / covered as f64, covered))
}

/// Nearest-rank percentiles of `d` (sorted here).
fn percentiles<const N: usize>(mut d: Vec<Duration>, qs: [f64; N]) -> [Duration; N] {
    d.sort_unstable();
    qs.map(|q| crate::percentile(&d, q))
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn run_once(
    args: &FleetBenchArgs,
    server: &str,
    bin: &Path,
    backends: &Backends,
    n: usize,
    offered: f64,
) -> Result<RunResult, RunError> {
    let db = FleetDb::create(server).await.map_err(|e| RunError::Unavailable(format!("PostgreSQL: {e}")))?;
    let dir = std::env::temp_dir().join(format!("station-bench-fleet-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        db.store.migrate().await.map_err(|e| e.to_string())?;
        let station = submitter(&dir, &db.store).await?;
        let r = with_station(args, &station, &db, &dir, bin, backends, n, offered).await;
        station.shutdown().await;
        r
    }
    .await;
    db.remove().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result?)
}

/// The Station this process uses to create accounts and keys (no workers).
async fn submitter(dir: &Path, store: &Store) -> Result<Station, String> {
    let mut config = Config { data_dir: dir.join("bench"), ..Config::default() };
    config.points.starting_grant = 0;
    write_tool(&config)?;
    let (mut station, errors) = Station::with_store(config, store.clone()).map_err(|e| e.to_string())?;
    if !errors.is_empty() {
        return Err(format!("the benchmark tool failed to load: {errors:?}"));
    }
    station.join_processes().await.map_err(|e| e.to_string())?;
    Ok(station)
}

fn write_tool(config: &Config) -> Result<(), String> {
    std::fs::create_dir_all(config.tools_dir()).map_err(|e| e.to_string())?;
    std::fs::write(config.tools_dir().join(format!("{TOOL}.json")), tool().to_string()).map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn with_station(
    args: &FleetBenchArgs,
    station: &Station,
    db: &FleetDb,
    dir: &Path,
    bin: &Path,
    backends: &Backends,
    n: usize,
    offered: f64,
) -> Result<RunResult, String> {
    // Accounts, in bulk, each with points to pay.
    let started = Instant::now();
    let bulk = bar(args.accounts as u64, "creating accounts [{bar:30}] {pos}/{len} {per_sec}");
    let mut ids = Vec::with_capacity(args.accounts);
    for first in (0..args.accounts).step_by(ACCOUNT_CHUNK) {
        let chunk: Vec<(String, String)> = (first..(first + ACCOUNT_CHUNK).min(args.accounts))
            .map(|i| (format!("fleet-{i}"), format!("Fleet user {i}")))
            .collect();
        let rows = station
            .create_accounts_with_grant("bench", &chunk, GRANT, "fleet simulation", &Actor::operator("bench"))
            .await
            .map_err(|e| format!("creating accounts: {e}"))?;
        bulk.inc(rows.len() as u64);
        ids.extend(rows);
    }
    bulk.finish_and_clear();
    let accounts_per_s = args.accounts as f64 / started.elapsed().as_secs_f64();
    eprintln!("{} accounts created in {:.1} s", args.accounts, started.elapsed().as_secs_f64());

    // The arrivals (the same for every run), and a key for each account that submits.
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
    let schedule = arrivals(offered, args.seconds, args.accounts, args.zipf, &mut rng);
    let mut submitting: Vec<usize> = schedule.iter().map(|a| a.account).collect();
    submitting.sort_unstable();
    submitting.dedup();
    let keys_bar = bar(submitting.len() as u64, "API keys for submitting accounts [{bar:30}] {pos}/{len}");
    let keys: HashMap<usize, String> = futures::stream::iter(submitting)
        .map(|a| {
            let (station, account, keys_bar) = (station.clone(), ids[a].clone(), keys_bar.clone());
            async move {
                let key = station.create_api_key(&account, "fleet", None).await.map_err(|e| e.to_string())?.1;
                keys_bar.inc(1);
                Ok::<_, String>((a, key))
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    keys_bar.finish_and_clear();

    // The Station processes.
    let mut fleet = Fleet::start(args, bin, dir, &db.url, backends, n)?;
    let ready = fleet.wait_ready(args.backends).await;
    let result = match ready {
        Ok(()) => load(args, db, backends, &fleet, &schedule, &keys, offered).await,
        Err(e) => Err(e),
    };
    fleet.stop();
    match result {
        Ok(mut r) => {
            r.processes = n;
            r.accounts_per_s = accounts_per_s;
            Ok(r)
        }
        Err(e) => Err(format!("{e}{}", fleet.logs_tail())),
    }
}

/// The `station serve` children of one run.
struct Fleet {
    children: Vec<Child>,
    ports: Vec<u16>,
    logs: Vec<PathBuf>,
}

impl Fleet {
    fn start(
        args: &FleetBenchArgs,
        bin: &Path,
        dir: &Path,
        url: &str,
        backends: &Backends,
        n: usize,
    ) -> Result<Fleet, String> {
        let mut fleet = Fleet { children: vec![], ports: vec![], logs: vec![] };
        let running = args.per_account_running.unwrap_or(1_000_000).to_string();
        for i in 0..n {
            let home = dir.join(format!("station-{i}"));
            let config = Config { data_dir: home.join("data"), ..Config::default() };
            write_tool(&config)?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let log_path = home.join("serve.log");
            let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
            let mut cmd = Command::new(bin);
            cmd.arg("serve").current_dir(&home).stdout(Stdio::null()).stderr(log);
            // Only this run's settings: nothing inherited from the caller's STATION_*.
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STATION_")) {
                cmd.env_remove(k);
            }
            cmd.env("STATION_DATA_DIR", &config.data_dir)
                .env("STATION_DATABASE_URL", url)
                .env("STATION_LISTEN", format!("127.0.0.1:{port}"))
                .env("STATION_COMFYUI_BACKENDS", backends.urls())
                .env("STATION_QUEUE_PER_USER_RUNNING", &running)
                .env("STATION_LIMITS_REQUESTS_PER_MINUTE", "0")
                .env("STATION_LIMITS_MAX_QUEUED", "0")
                .env("STATION_POINTS_STARTING_GRANT", "0")
                .env("RUST_LOG", "warn");
            let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            fleet.children.push(child);
            fleet.ports.push(port);
            fleet.logs.push(log_path);
        }
        Ok(fleet)
    }

    /// Waits until every process answers `/readyz` with every backend healthy.
    async fn wait_ready(&mut self, backends: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let spinner = bar(self.ports.len() as u64, "starting Station processes {pos}/{len} {spinner}");
        for (i, port) in self.ports.clone().into_iter().enumerate() {
            loop {
                if let Some(status) = self.children[i].try_wait().map_err(|e| e.to_string())? {
                    return Err(format!("station serve {i} exited ({status}) while starting"));
                }
                let ready = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await;
                if let Ok(r) = ready
                    && let Ok(v) = r.json::<Value>().await
                    && v["services"]["comfyui"]["capacity"].as_u64().is_some_and(|c| c as usize >= backends)
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("station serve {i} did not see its {backends} backends healthy within 90 s"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            spinner.inc(1);
        }
        spinner.finish_and_clear();
        Ok(())
    }

    fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of every process's log, for an error message.
    fn logs_tail(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.logs.iter().enumerate() {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            if !tail.is_empty() {
                out += &format!("\n--- station serve {i} (last lines) ---\n");
                out += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            }
        }
        out
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

#[allow(clippy::too_many_arguments)]
async fn load(
    args: &FleetBenchArgs,
    db: &FleetDb,
    backends: &Backends,
    fleet: &Fleet,
    schedule: &[Arrival],
    keys: &HashMap<usize, String>,
    offered: f64,
) -> Result<RunResult, String> {
    let store = &db.store;
    // Counters before the window.
    let statements_ready = store.reset_statement_costs().await;
    let (db0, tables0) = (db_counters(store).await?, store.table_counters().await.map_err(|e| e.to_string())?);
    let cpu0 = CpuSample::take(&fleet.pids());
    backends.take_usage();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().map_err(|e| e.to_string())?;
    let urls: Vec<String> = fleet.ports.iter().map(|p| format!("http://127.0.0.1:{p}/api/v1/generations")).collect();
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let progress = bar(args.seconds, "load [{bar:30}] {pos}/{len} s · {msg}");
    let start = Instant::now();
    let window_start = now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    for (i, a) in schedule.iter().enumerate() {
        if let Some(wait) = a.at.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        progress.set_position(start.elapsed().as_secs());
        if i % 16 == 0 {
            progress.set_message(format!(
                "{} submitted, {} refused",
                accepted.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed)
            ));
        }
        let permit = limit.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let (client, url, key) = (client.clone(), urls[i % urls.len()].clone(), keys[&a.account].clone());
        let (accepted, refused) = (accepted.clone(), refused.clone());
        tasks.spawn(async move {
            let body = json!({"tool": TOOL, "params": {"prompt": format!("job {i}")}});
            match client.post(&url).bearer_auth(&key).json(&body).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => {
                    if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                        let status = r.status();
                        eprintln!("first refused create: {status} {}", r.text().await.unwrap_or_default());
                    }
                }
                Err(e) => {
                    if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("first failed create: {e}");
                    }
                }
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    if let Some(rest) = Duration::from_secs(args.seconds).checked_sub(start.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let window = start.elapsed();
    let window_end = now_ms();
    progress.finish_and_clear();
    let usage = backends.take_usage();
    let cpu = CpuSample::take(&fleet.pids()).since(&cpu0, window);
    let (db1, tables1) = (db_counters(store).await?, store.table_counters().await.map_err(|e| e.to_string())?);
    let statements = match statements_ready {
        Ok(()) => store.top_statements(8).await.map_err(|e| e.to_string()),
        Err(reason) => Err(reason),
    };
    while tasks.join_next().await.is_some() {}

    // The last jobs.
    let drain = bar(0, "draining {spinner} {msg}");
    let deadline = Instant::now() + Duration::from_secs(args.drain_seconds);
    loop {
        let stats = store.queue_stats().await.map_err(|e| e.to_string())?;
        let open: i64 = stats
            .by_status
            .iter()
            .filter(|(s, _)| !matches!(s.as_str(), "succeeded" | "failed" | "cancelled"))
            .map(|(_, n)| n)
            .sum();
        drain.set_message(format!("{open} jobs not ended"));
        if open == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drain.finish_and_clear();
    let after = backends.take_usage();

    let jobs = store.job_timings().await.map_err(|e| e.to_string())?;
    let ended = |j: &&JobTiming| matches!(j.status.as_str(), "succeeded" | "failed" | "cancelled");
    let dispatch: Vec<Duration> = jobs
        .iter()
        .filter_map(|j| j.dispatched_at.map(|d| Duration::from_millis((d - j.created_at).max(0) as u64)))
        .collect();
    let start_wait: Vec<Duration> = jobs
        .iter()
        .filter_map(|j| j.started_at.map(|s| Duration::from_millis((s - j.created_at).max(0) as u64)))
        .collect();
    let in_window = jobs.iter().filter(|j| j.finished_at.is_some_and(|f| f >= window_start && f <= window_end)).count();
    let grace = (args.seconds as i64 * 250).min(2_000);
    let window_ms = (window_end - window_start).max(1) as f64;
    let tables = table_deltas(&tables0, &tables1);
    let secs = window.as_secs_f64();
    Ok(RunResult {
        processes: 0,
        offered_per_s: offered,
        accepted: accepted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        rows: jobs.len(),
        throughput: in_window as f64 / secs,
        succeeded: jobs.iter().filter(|j| j.status == "succeeded").count(),
        failed: jobs.iter().filter(|j| j.status == "failed").count(),
        unfinished: jobs.iter().filter(|j| !ended(j)).count(),
        dispatch: percentiles(dispatch, [0.5, 0.99, 1.0]),
        start_wait: percentiles(start_wait, [0.5, 0.99]),
        fairness: fairness(&jobs, window_end - grace, window_end),
        utilisation: usage.busy_ms as f64 / (window_ms * backends.fakes.len() as f64),
        backend_runs: usage.prompts + after.prompts,
        attempts: jobs.iter().map(|j| j.attempts.max(0) as u64).sum(),
        cpu,
        accounts_per_s: 0.0,
        db: DbLoad {
            commits_per_s: (db1.xact_commit - db0.xact_commit) as f64 / secs,
            rows_written_per_s: ((db1.tup_inserted + db1.tup_updated + db1.tup_deleted)
                - (db0.tup_inserted + db0.tup_updated + db0.tup_deleted)) as f64
                / secs,
            rows_read_per_s: (db1.tup_returned - db0.tup_returned) as f64 / secs,
            statements,
            tables,
        },
    })
}

async fn db_counters(store: &Store) -> Result<DatabaseCounters, String> {
    Ok(store.database_counters().await.map_err(|e| e.to_string())?.unwrap_or_default())
}

/// Each table's counters over the window, busiest writers first.
fn table_deltas(before: &[TableCounters], after: &[TableCounters]) -> Vec<TableCounters> {
    let mut out: Vec<TableCounters> = after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.table == a.table);
            let d = |f: fn(&TableCounters) -> i64| f(a) - b.map_or(0, f);
            TableCounters {
                table: a.table.clone(),
                seq_scan: d(|t| t.seq_scan),
                idx_scan: d(|t| t.idx_scan),
                inserted: d(|t| t.inserted),
                updated: d(|t| t.updated),
                deleted: d(|t| t.deleted),
            }
        })
        .filter(|t| t.inserted + t.updated + t.deleted + t.seq_scan + t.idx_scan > 0)
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse((t.inserted + t.updated + t.deleted, t.idx_scan + t.seq_scan)));
    out
}

/// CPU time read from `/proc` (Linux; zeros elsewhere), in clock ticks.
struct CpuSample {
    station: u64,
    bench: u64,
    postgres: u64,
    machine_busy: u64,
    at: Instant,
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

impl CpuSample {
    fn take(pids: &[u32]) -> CpuSample {
        let station = pids.iter().map(|p| proc_ticks(&format!("/proc/{p}/stat")).1).sum();
        let bench = proc_ticks("/proc/self/stat").1;
        let postgres = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                    .map(|e| proc_ticks(&format!("{}/stat", e.path().display())))
                    .filter(|(comm, _)| comm == "postgres")
                    .map(|(_, t)| t)
                    .sum()
            })
            .unwrap_or(0);
        let machine_busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let f: Vec<u64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal
                Some(f.iter().take(8).sum::<u64>() - f.get(3).copied().unwrap_or(0) - f.get(4).copied().unwrap_or(0))
            })
            .unwrap_or(0);
        CpuSample { station, bench, postgres, machine_busy, at: Instant::now() }
    }

    /// Cores busy on average between `before` and now.
    fn since(&self, before: &CpuSample, _window: Duration) -> Cpu {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(0.001);
        let cores = |a: u64, b: u64| a.saturating_sub(b) as f64 / TICKS / secs;
        Cpu {
            station: cores(self.station, before.station),
            bench: cores(self.bench, before.bench),
            postgres: cores(self.postgres, before.postgres),
            machine: cores(self.machine_busy, before.machine_busy),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// A process's name and its user + system CPU ticks from a `stat` file.
fn proc_ticks(path: &str) -> (String, u64) {
    let Ok(text) = std::fs::read_to_string(path) else { return (String::new(), 0) };
    let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else { return (String::new(), 0) };
    let comm = text[open + 1..close].to_owned();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (comm, ticks(11) + ticks(12))
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 { format!("{ms:.1}") } else { format!("{ms:.0}") }
}

/// The markdown report: one column per run, then the targets and the
/// database's load per run.
pub fn report(args: &FleetBenchArgs, backends: &Backends, results: &[RunResult]) -> String {
    let mut out = format!(
        "\nFleet simulation: {} backends (capacity ≈ {:.1} jobs/s), {} accounts (Zipf s = {}), {} s of load per run, \
         {} build; load average {}\n\n",
        args.backends,
        backends.capacity_per_s(),
        args.accounts,
        args.zipf,
        args.seconds,
        if cfg!(debug_assertions) { "debug" } else { "release" },
        crate::load_average()
    );
    let one = results.iter().find(|r| r.processes == 1).or(results.first());
    let head: Vec<String> = results
        .iter()
        .map(|r| format!("{} process{}", r.processes, if r.processes == 1 { "" } else { "es" }))
        .collect();
    out += &format!("| | {} |\n|---|{}\n", head.join(" | "), "---:|".repeat(results.len()));
    let row = |name: &str, f: &dyn Fn(&RunResult) -> String| {
        format!("| {name} | {} |\n", results.iter().map(f).collect::<Vec<_>>().join(" | "))
    };
    out += &row("offered, jobs/s", &|r| format!("{:.1}", r.offered_per_s));
    out += &row("jobs submitted (refused)", &|r| format!("{} ({})", r.accepted, r.refused));
    out += &row("throughput, jobs/s", &|r| format!("{:.1}", r.throughput));
    out += &row("throughput vs 1 process", &|r| {
        one.map_or("–".into(), |o| format!("{:.2}×", r.throughput / o.throughput.max(f64::MIN_POSITIVE)))
    });
    out += &row("dispatch p50 / p99 / max, ms", &|r| {
        format!("{} / {} / {}", ms(r.dispatch[0]), ms(r.dispatch[1]), ms(r.dispatch[2]))
    });
    out += &row("queued → running p50 / p99, ms", &|r| format!("{} / {}", ms(r.start_wait[0]), ms(r.start_wait[1])));
    out += &row("fairness (Jain, equal demand)", &|r| {
        r.fairness.map_or("–".into(), |(j, n)| format!("{j:.3} ({n} accounts)"))
    });
    out += &row("backend utilisation", &|r| format!("{:.0} %", r.utilisation * 100.0));
    out += &row("succeeded / failed (simulated GPU failures)", &|r| format!("{} / {}", r.succeeded, r.failed));
    out += &row("every job done exactly once", &|r| {
        format!(
            "{} ({} rows, {} unfinished, {} backend runs for {} claims)",
            if r.exactly_once() { "yes" } else { "NO" },
            r.rows,
            r.unfinished,
            r.backend_runs,
            r.attempts
        )
    });
    out += &row("CPU cores: Station processes", &|r| format!("{:.2}", r.cpu.station));
    out += &row("CPU cores: backends + users (this process)", &|r| format!("{:.2}", r.cpu.bench));
    out += &row("CPU cores: PostgreSQL", &|r| format!("{:.2}", r.cpu.postgres));
    out += &row("CPU cores: machine busy", &|r| format!("{:.2} of {}", r.cpu.machine, r.cpu.cores));
    out += &row("database transactions/s (reads included)", &|r| format!("{:.0}", r.db.commits_per_s));
    out += &row("database rows written / read per s", &|r| {
        format!("{:.0} / {:.0}", r.db.rows_written_per_s, r.db.rows_read_per_s)
    });
    out += &row("accounts created/s (bulk)", &|r| format!("{:.0}", r.accounts_per_s));

    out += "\nTargets:\n";
    for r in results {
        let p99 = r.dispatch[1].as_secs_f64() * 1000.0;
        out += &format!(
            "- {} process{}: p99 dispatch {} 100 ms at {:.0} % utilisation; fairness {}\n",
            r.processes,
            if r.processes == 1 { "" } else { "es" },
            if p99 < 100.0 { format!("{p99:.0} ms <") } else { format!("{p99:.0} ms ≥") },
            r.utilisation * 100.0,
            r.fairness.map_or("not measurable (no two accounts with equal demand)".into(), |(j, _)| {
                format!("{j:.3} {} 0.95", if j >= 0.95 { "≥" } else { "<" })
            })
        );
    }
    if let (Some(o), Some(three)) = (one, results.iter().find(|r| r.processes == 3)) {
        let ratio = three.throughput / o.throughput.max(f64::MIN_POSITIVE);
        out += &format!(
            "- throughput with 3 processes {ratio:.2}× one process ({} 2.5×; with the offered load below one \
             process's ceiling, throughput follows the offered load, not the process count)\n",
            if ratio >= 2.5 { "≥" } else { "<" }
        );
    }

    for r in results {
        out += &format!("\nDatabase load with {} process{}:\n", r.processes, if r.processes == 1 { "" } else { "es" });
        match &r.db.statements {
            Ok(s) if !s.is_empty() => {
                out += "\n| statement (pg_stat_statements) | calls | total ms | mean ms | rows |\n|---|---:|---:|---:|---:|\n";
                for s in s {
                    let q: String = s.query.split_whitespace().collect::<Vec<_>>().join(" ");
                    let q = if q.chars().count() > 110 {
                        format!("{}…", q.chars().take(110).collect::<String>())
                    } else {
                        q
                    };
                    out += &format!(
                        "| `{}` | {} | {:.0} | {:.2} | {} |\n",
                        q.replace('|', "\\|"),
                        s.calls,
                        s.total_ms,
                        s.mean_ms,
                        s.rows
                    );
                }
            }
            Ok(_) => out += "pg_stat_statements recorded nothing.\n",
            Err(reason) => {
                out += &format!(
                    "pg_stat_statements is not available ({reason}); per-table counters from pg_stat_user_tables \
                     instead (the server needs shared_preload_libraries = 'pg_stat_statements' for statements).\n"
                );
            }
        }
        if !r.db.tables.is_empty() {
            out += "\n| table | rows inserted | updated | deleted | index scans | sequential scans |\n|---|---:|---:|---:|---:|---:|\n";
            for t in r.db.tables.iter().take(8) {
                out += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    t.table, t.inserted, t.updated, t.deleted, t.idx_scan, t.seq_scan
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_is_one_for_equal_shares_and_one_over_n_for_one_winner() {
        assert_eq!(jain(&[2.0, 2.0, 2.0]), Some(1.0));
        assert!((jain(&[3.0, 0.0, 0.0]).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(jain(&[0.0, 0.0]), None);
    }

    #[test]
    fn arrivals_follow_the_rate_and_favour_the_first_accounts() {
        let mut rng = StdRng::seed_from_u64(1);
        let a = arrivals(200.0, 20, 1_000, 1.0, &mut rng);
        assert!((3_400..4_600).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        let first = a.iter().filter(|x| x.account == 0).count();
        let tenth = a.iter().filter(|x| x.account == 9).count();
        assert!(first > 4 * tenth, "account 0: {first}, account 9: {tenth}");
        assert!(a.iter().all(|x| x.account < 1_000));
    }

    fn job(account: &str, created: i64, dispatched: Option<i64>) -> JobTiming {
        JobTiming {
            id: format!("{account}-{created}"),
            account_id: account.into(),
            status: "succeeded".into(),
            attempts: 1,
            backend: None,
            created_at: created,
            dispatched_at: dispatched,
            started_at: dispatched,
            finished_at: dispatched,
        }
    }

    #[test]
    fn fairness_compares_accounts_with_equal_demand_only() {
        // a and b each asked twice; a was served twice, b once. c asked once.
        let jobs = vec![
            job("a", 0, Some(10)),
            job("a", 5, Some(20)),
            job("b", 0, Some(10)),
            job("b", 5, None),
            job("c", 1, Some(5)),
            job("late", 999, None),
        ];
        let (j, n) = fairness(&jobs, 100, 100).unwrap();
        assert_eq!(n, 2);
        assert!((j - 0.9).abs() < 1e-12, "{j}"); // (2+1)² / (2·(4+1))
        assert_eq!(fairness(&[job("x", 0, Some(1))], 100, 100), None);
    }
}
