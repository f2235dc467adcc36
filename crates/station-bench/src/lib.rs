//! Station's benchmarks, run by `station bench …`: how fast the durable
//! queue moves jobs ([`queue`]), what the REST API costs against bare
//! axum handlers in the same process ([`http`]) how many submissions
//! per second it takes ([`submit`]), how many chat updates ([`chat`]) and
//! what the usage report costs on a million jobs ([`stats`]).
//! how a fleet of `station serve` processes on one PostgreSQL queue serves
//! many simulated GPUs and accounts ([`fleet`]).
//!
//! Figures only mean something from a release build; results and how to
//! reproduce them are in `docs/PERFORMANCE.md`. Benchmarks may read the
//! store directly (they measure it, and their baselines bypass the core);
//! nothing else outside `station-core` does.

pub mod chat;
pub mod discord;
pub mod fleet;
pub mod http;
pub mod queue;
pub mod stats;
pub mod submit;

use std::time::Duration;

use clap::{Args, Subcommand};
use station_core::Config;
use station_store::Store;

/// How a benchmark run ended; the binary turns it into its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran and printed its table.
    Done,
    /// The arguments make no sense (nothing ran).
    BadUsage,
    /// The run failed (requests failed, a database error).
    Failed,
    /// A database given could not be used.
    Unavailable,
}

/// Runs `station bench …`.
pub async fn run(args: BenchArgs) -> Outcome {
    match args.command {
        Some(BenchCommand::Submit(a)) => submit::run(a).await,
        Some(BenchCommand::Chat(a)) => chat::run(a).await,
        Some(BenchCommand::Stats(a)) => stats::run(a).await,
        Some(BenchCommand::Fleet(a)) => fleet::run(a).await,
        _ => queue::run(args).await,
    }
}

/// `station bench`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Other benchmarks (without one: the queue benchmark).
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Jobs to push through the queue per run.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Database URL (default: a temporary SQLite file). Repeat for several.
    #[arg(long = "database-url")]
    pub database_urls: Vec<String>,
    /// Concurrent workers claiming.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Jobs claimed per round trip.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// Most outcomes recorded per commit by the batching finisher, as in the
    /// core's workers; 0 records each job with its own `finish_job` commit
    /// (the behaviour before batching, for comparison).
    #[arg(long, default_value_t = station_store::DEFAULT_MAX_BATCH)]
    pub finish_batch: usize,
}

/// `station bench <what>`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Requests per second of the REST API against bare axum handlers, same process, same run.
    Http(http::HttpBenchArgs),
    /// `POST /api/v1/generations` creates per second (each with its points hold), SQLite and PostgreSQL.
    Submit(submit::SubmitBenchArgs),
    /// Telegram updates per second through the adapter, the flows and the database, and update-to-reply latency.
    Chat(chat::ChatBenchArgs),
    /// The usage report on a million jobs, from raw rows and from the daily rollups.
    Stats(stats::StatsBenchArgs),
    /// Several `station serve` processes on one PostgreSQL queue against many simulated GPUs and accounts: throughput, dispatch latency, fairness, utilisation.
    Fleet(fleet::FleetBenchArgs),
}

/// A benchmark's own database: a temporary SQLite file in the run's data
/// folder, another URL as given, or a throwaway schema of a PostgreSQL URL
/// (dropped by [`BenchDb::remove`]), migrated.
pub(crate) struct BenchDb {
    /// The migrated store.
    pub store: Store,
    /// "SQLite" or "PostgreSQL", for tables.
    pub name: &'static str,
    /// PostgreSQL URL and schema to drop afterwards.
    schema: Option<(String, String)>,
}

impl BenchDb {
    /// Opens `url` (None: `config`'s default SQLite file) for benchmark `what`.
    pub async fn open(url: Option<&str>, what: &str, config: &mut Config) -> Result<BenchDb, String> {
        let schema = url
            .filter(|u| u.starts_with("postgres"))
            .map(|u| (u.to_owned(), format!("station_bench_{what}_{}", uuid::Uuid::new_v4().simple())));
        let store = match &schema {
            Some((url, schema)) => Store::connect_postgres_fresh_schema(url, schema).await,
            None => {
                config.database_url = url.map(str::to_owned);
                Store::connect(&config.database_url()).await
            }
        }
        .map_err(|e| e.to_string())?;
        store.migrate().await.map_err(|e| e.to_string())?;
        let name = if schema.is_some() { "PostgreSQL" } else { "SQLite" };
        Ok(BenchDb { store, name, schema })
    }

    /// Drops the throwaway schema, if any (a warning when it cannot).
    pub async fn remove(self) {
        if let Some((url, schema)) = &self.schema
            && let Err(e) = Store::drop_postgres_schema(url, schema).await
        {
            eprintln!("warning: could not drop schema {schema}: {e}");
        }
    }
}

/// The databases a benchmark runs on: each `--database-url`, or the default
/// temporary SQLite file when none is given.
pub(crate) fn database_urls(given: &[String]) -> Vec<Option<String>> {
    if given.is_empty() { vec![None] } else { given.iter().cloned().map(Some).collect() }
}

/// Nearest-rank percentile `q` (0–1) of `sorted` latencies; zero when empty.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The first three fields of `/proc/loadavg` (empty where there is none).
pub(crate) fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
