//! Station's benchmarks, run by `station bench …`: how fast the durable
//! queue moves jobs ([`queue`]), what the REST API costs against bare
//! axum handlers in the same process ([`http`]) how many submissions
//! per second it takes ([`submit`]) and how many chat updates ([`chat`]).
//!
//! Figures only mean something from a release build; results and how to
//! reproduce them are in `docs/PERFORMANCE.md`. Benchmarks may read the
//! store directly (they measure it, and their baselines bypass the core);
//! nothing else outside `station-core` does.

pub mod chat;
pub mod http;
pub mod queue;
pub mod submit;

use clap::{Args, Subcommand};

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
}
