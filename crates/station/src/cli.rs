//! Command-line syntax.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Station: self-hosted AI image generation for a community. Tools run on
/// ComfyUI servers (and natively for simple edits), paid with points, used
/// from Telegram, Discord, the web app, the REST API and this command.
#[derive(Debug, Parser)]
#[command(name = "station", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Configuration file (default: ./station.toml if present).
    #[arg(long, global = true, env = "STATION_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 done, 1 job failed or check found problems, 2 bad usage/config/input \
(nothing was queued), 3 Station could not start, 130 interrupted with Ctrl-C (a job a running server took \
keeps running there; a job `station run` ran itself is cancelled).";

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Station: workers, HTTP (health at /healthz, readiness at /readyz) and bots.
    Serve,
    /// Run a tool once and save its outputs.
    Run(RunArgs),
    /// Talk to Station in the terminal: the same conversations as the chat bots.
    Chat(ChatArgs),
    /// Inspect and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// List, show and check tool definitions.
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Manage ComfyUI backends.
    #[command(subcommand)]
    Backends(BackendsCommand),
    /// Manage the LoRA catalog and try trigger-word resolution.
    #[command(subcommand)]
    Loras(crate::commands::loras::LorasCommand),
    /// Datasets of images and captions to train LoRAs on.
    #[command(subcommand)]
    Datasets(crate::commands::training::DatasetsCommand),
    /// Train a LoRA on a dataset: prints the quote, then follows the run.
    Train(crate::commands::training::TrainArgs),
    /// List, show and cancel trainings.
    #[command(subcommand)]
    Trainings(crate::commands::training::TrainingsCommand),
    /// Models the backends offer, and the catalog of them.
    #[command(subcommand)]
    Models(crate::commands::models::ModelsCommand),
    /// Balances, history, grants, adjustments and the ledger audit.
    #[command(subcommand)]
    Points(crate::commands::points::PointsCommand),
    /// Spells: saved chains of tools — list, show, create from a file, cast.
    #[command(subcommand)]
    Spells(crate::commands::spells::SpellsCommand),
    /// List, inspect, create, promote and suspend accounts.
    #[command(subcommand)]
    Users(crate::commands::users::UsersCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(crate::commands::keys::KeysCommand),
    /// Collections of results and LoRAs: list, show, share links, ZIP export.
    #[command(subcommand)]
    Collections(crate::commands::collections::CollectionsCommand),
    /// EVM wallets linked to an account: list, link (by signature or magic deposit), unlink.
    #[command(subcommand)]
    Wallets(crate::commands::wallets::WalletsCommand),
    /// On-chain deposits the watchers saw: list, rescan a chain from a block.
    #[command(subcommand)]
    Deposits(crate::commands::wallets::DepositsCommand),
    /// Check configuration, database, migrations, disk, tools, every backend and the bots; print what to fix.
    Doctor,
    /// The audit log: every administrative action, who did it, when and how.
    Audit(crate::commands::audit::AuditArgs),
    /// Usage and revenue: jobs per day, tool, model and platform, points, top accounts, failures.
    Stats(crate::commands::stats::StatsArgs),
    /// Feature flags: switch tools, platforms and features on, off, or on for some accounts.
    #[command(subcommand)]
    Flags(crate::commands::flags::FlagsCommand),
    /// Alerts: the rules and what fires now; a test message to every sink.
    #[command(subcommand)]
    Alerts(crate::commands::alerts::AlertsCommand),
    /// Media storage: copy the local media folder to object storage.
    #[command(subcommand)]
    Media(crate::commands::media::MediaCommand),
    /// Apply database migrations (also done at every start).
    Migrate(MigrateArgs),
    /// Show or create configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure queue throughput (writes figures for docs/PERFORMANCE.md).
    Bench(station_bench::BenchArgs),
}

/// `station run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Tool id or command (e.g. `upscale`).
    pub tool: String,
    /// A parameter, `name=value` (repeatable).
    #[arg(short, long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// An input image: `PATH` for the tool's main image input, or `NAME=PATH`.
    #[arg(short, long = "image", value_name = "[NAME=]PATH")]
    pub images: Vec<String>,
    /// Folder to save outputs in (created if missing; an existing file is refused).
    #[arg(short, long, default_value = ".")]
    pub out: PathBuf,
    /// Queue the job, print its id and return at once.
    #[arg(long)]
    pub no_wait: bool,
    /// Run without asking when the price is above the confirmation
    /// threshold (`points.confirm_above`).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Run as this local user (default: $USER).
    #[arg(long)]
    pub user: Option<String>,
}

/// `station chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Chat as this local user (default: $USER).
    #[arg(long)]
    pub user: Option<String>,
    /// Folder where images shown in the chat are saved.
    #[arg(short, long, default_value = "station-chat")]
    pub out: PathBuf,
}

/// `station jobs …`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Recent jobs, newest first.
    List {
        /// Only this status (queued, dispatched, running, succeeded, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only this tool.
        #[arg(long)]
        tool: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job in full, with queue position, ETA and outputs.
    Show {
        /// Job id, or any unique prefix of it.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Save a finished job's outputs as files.
    Get {
        /// Job id, or any unique prefix of it.
        id: String,
        /// Folder to save them in (created if missing).
        #[arg(short, long, default_value = ".")]
        out: PathBuf,
    },
    /// Cancel a job (queued: at once; running: interrupted on its backend).
    Cancel {
        /// Job id, or any unique prefix of it.
        id: String,
    },
}

/// `station tools …`.
#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Every loaded tool.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One tool with its inputs.
    Show {
        /// Tool id or command.
        id: String,
    },
    /// Validate a folder of tool files without loading them into Station.
    Check {
        /// Folder (default: the configured tools folder).
        dir: Option<PathBuf>,
    },
}

/// `station backends …`.
#[derive(Debug, Subcommand)]
pub enum BackendsCommand {
    /// Configured and added backends.
    List,
    /// Add (or replace) a backend at run time.
    Add {
        /// Unique name.
        name: String,
        /// Base URL, e.g. http://127.0.0.1:8188.
        url: String,
        /// Prompts it may run at once.
        #[arg(long, default_value_t = 1)]
        max_concurrent: u64,
        /// Tags such as gpu=24gb (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Remove a backend added at run time.
    Remove {
        /// Name.
        name: String,
    },
    /// Ask every backend for health and nodes; show which tools each can run and why not.
    Check,
    /// Ask every backend what models it has now and store that (running
    /// servers also do it at every health check).
    Refresh,
}

/// `station migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Only list migrations and whether they are applied.
    #[arg(long)]
    pub status: bool,
}

/// `station config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets masked).
    Show,
    /// Write a commented example configuration.
    Init {
        /// Where to write it.
        #[arg(default_value = "station.toml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// List every environment variable Station reads.
    Env,
}
