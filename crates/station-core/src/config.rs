//! Typed configuration: defaults, then `station.toml`, then `STATION_*` environment.
//!
//! Environment names follow one rule: `STATION_` followed by the key's path in
//! upper case with `.` written as `_` — `listen` → `STATION_LISTEN`,
//! `web.public_url` → `STATION_WEB_PUBLIC_URL`, `queue.lease_seconds` →
//! `STATION_QUEUE_LEASE_SECONDS`. Lists take JSON or comma-separated values;
//! `STATION_COMFYUI_BACKENDS=http://gpu1:8188,http://gpu2:8188` is a shorthand
//! for backends named after their position.
//!
//! Front ends own their settings: the binary registers each one's
//! [`Section`] (its table name, its typed defaults, how to check it) when it
//! loads the configuration. The core keeps those tables opaque in
//! [`Config::sections`], fills in their defaults, applies the environment to
//! them by the same rule, reports their bad keys like its own, and shows,
//! lists and documents them; the front end reads its typed settings back
//! with [`Config::section_as`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything Station can be configured with. Every field has a default, so
/// `station serve` runs with no file at all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder for the database, media and tools (created if missing).
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default: `station.db` in `data_dir`.
    pub database_url: Option<String>,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Folder of tool JSON files; default: `tools` in `data_dir`.
    pub tools_dir: Option<PathBuf>,
    /// Folder of stored media; default: `media` in `data_dir`.
    pub media_dir: Option<PathBuf>,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// On SIGTERM/Ctrl-C, how long `serve` waits for in-flight work (HTTP
    /// requests, chat deliveries, job outcomes) before it exits anyway.
    pub shutdown_grace_seconds: u64,
    /// Job queue behaviour.
    pub queue: QueueConfig,
    /// ComfyUI backends.
    pub comfyui: ComfyUiConfig,
    /// Tool files.
    pub tools: ToolsConfig,
    /// Native media workers.
    pub media: MediaConfig,
    /// Prices.
    pub points: PointsConfig,
    /// Per-account limits.
    pub limits: LimitsConfig,
    /// Chat conversations.
    pub flows: FlowsConfig,
    /// Web app: public address and sign-in sessions.
    pub web: WebConfig,
    /// Collections: exports and limits.
    pub collections: CollectionsConfig,
    /// Webhooks: where events may be sent, timeouts and retries.
    pub webhooks: WebhooksConfig,
    /// Spells: the creator's share of casts.
    pub spells: SpellsConfig,
    /// LoRA training: dataset sizes and where trained files are published.
    pub training: TrainingConfig,
    /// Alerts: rules watched in the background and the sinks told when one
    /// fires and when it resolves (see `station_core::alerts`).
    pub alerts: AlertsConfig,
    /// Wallets: EVM chains watched for deposits, linking by signature or
    /// magic deposit.
    pub wallets: WalletsConfig,
    /// Operator's choice of tool for a chat command, overriding the tools'
    /// own `command` (e.g. `upscale = "resize"` sends `/upscale` to the native
    /// resize tool instead of the ComfyUI one).
    pub commands: std::collections::BTreeMap<String, String>,
    /// The front ends' own sections (see [`Section`]), kept as tables the
    /// core does not read. Not part of the core's serde form: loading,
    /// [`Config::with_env`] and [`Config::show`] handle them.
    #[serde(skip)]
    pub sections: Sections,
}

/// Job queue settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// A worker's claim on a job lapses after this long without a heartbeat.
    pub lease_seconds: u64,
    /// Jobs one account may have dispatched or running at once, per service.
    pub per_user_running: u64,
    /// Default per-job execution limit: time running on a backend, not time
    /// waiting in a backend's own queue (see `backend_wait_seconds`).
    pub job_timeout_seconds: u64,
    /// How long a job's prompt may wait in a backend's own queue before it
    /// starts: after that it is deleted there and the job goes back to
    /// Station's queue (another backend, or the same one once it has room).
    pub backend_wait_seconds: u64,
    /// Backend submissions before a transient failure becomes final.
    pub max_attempts: u64,
    /// First retry delay; doubles each attempt.
    pub retry_base_ms: u64,
    /// How often idle workers look for new jobs (they are also woken on submit).
    pub poll_ms: u64,
}

/// One ComfyUI server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique name.
    pub name: String,
    /// Base URL, e.g. `http://127.0.0.1:8188`.
    pub url: String,
    /// Prompts it may run at once (ComfyUI runs one at a time; more lets the
    /// next be queued on the server already).
    #[serde(default = "one")]
    pub max_concurrent: u64,
    /// Free-form tags such as `gpu=24gb`.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn one() -> u64 {
    1
}

/// ComfyUI settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ComfyUiConfig {
    /// Backends known from configuration (more can be added at run time).
    pub backends: Vec<BackendConfig>,
    /// `extra_data.preview_method` sent with each prompt (`auto`, `latent2rgb`, `taesd`, `none`).
    pub preview_method: String,
    /// Seconds between health checks.
    pub health_interval_seconds: u64,
    /// A health check gives up connecting to a backend after this long.
    pub health_connect_timeout_seconds: u64,
    /// A health check gives up waiting for a backend's answer after this
    /// long (a frozen backend accepts the connection and never answers).
    pub health_timeout_seconds: u64,
}

/// Tool file settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// Largest tool file read from the tools folder, in bytes; a larger one
    /// is not loaded (`station tools check` names it and the limit).
    pub max_file_bytes: u64,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig { max_file_bytes: station_tools::DEFAULT_MAX_FILE_BYTES }
    }
}

impl ToolsConfig {
    /// How the registry and `tools check` read tool files.
    pub fn load_options(&self) -> station_tools::LoadOptions {
        station_tools::LoadOptions { max_file_bytes: self.max_file_bytes }
    }
}

/// Native media settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Parallel media jobs; 0 means one per CPU.
    pub workers: u64,
    /// Largest accepted upload or input, in bytes.
    pub max_bytes: u64,
    /// Files one multipart request may carry; the whole form is at most
    /// `max_upload_files` × `max_bytes` + 64 KiB (its text parts).
    pub max_upload_files: u64,
    /// Largest accepted image, in pixels; for an animation, the sum over
    /// its frames (width × height × frames).
    pub max_pixels: u64,
    /// Most frames an animated image (GIF, APNG, WebP) may have. Image inputs
    /// of tools take still images (one frame) unless the input declares
    /// `"animated": true`; uploads whose input is not known yet (the media
    /// endpoint, chat pictures) and results are held to this number.
    pub max_frames: u64,
    /// Images decoded at once in this process (uploads, chat pictures,
    /// results, native media jobs); more wait for a slot, and an HTTP upload
    /// that cannot get one within 10 seconds is answered 503 with
    /// `Retry-After`. An HTTP upload takes its slot before its body is read,
    /// so waiting uploads hold no image bytes. Bounds decoding memory: see
    /// README "Security" for the formula.
    pub decode_concurrency: u64,
    /// Operator watermark images by name (PNG files with alpha), usable by the
    /// `watermark` tool's `logo` input.
    pub watermarks: std::collections::BTreeMap<String, PathBuf>,
    /// Whether users may opt out of watermarks with a setting.
    pub watermark_opt_out: bool,
    /// Watermark stamped on every image result of a job before it is stored:
    /// the name of one of `watermarks`, or `text:YOUR TEXT`. Unset: none.
    /// Results of the `watermark` tool itself are left alone.
    pub auto_watermark: Option<String>,
    /// Corner of the automatic watermark: `top-left`, `top-right`,
    /// `bottom-left`, `bottom-right` or `center`.
    pub auto_watermark_position: station_media::ops::Position,
    /// Opacity of the automatic watermark, 0..=1.
    pub auto_watermark_opacity: f32,
    /// Width of the automatic watermark as a fraction of the image width, (0, 1].
    pub auto_watermark_scale: f32,
    /// Distance of the automatic watermark from the image edges, in pixels.
    pub auto_watermark_margin: u32,
    /// Where blobs (uploads, results, thumbnails, fitted copies) are kept:
    /// `local` (the `media_dir` folder of this machine) or `s3` (the bucket
    /// of `[media.s3]`, shared by every process pointed at it).
    pub store: MediaStoreKind,
    /// With `store = "s3"`: answer downloads with a redirect to a URL
    /// presigned for this many seconds instead of streaming the bytes
    /// through Station. Unset: streamed.
    pub presign_seconds: Option<u64>,
    /// The bucket for `store = "s3"`.
    pub s3: S3Config,
}

/// Where media blobs are kept ([`MediaConfig::store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaStoreKind {
    /// Files in `media_dir`.
    #[default]
    Local,
    /// An S3-compatible bucket (`[media.s3]`).
    S3,
}

/// An S3-compatible bucket for media (`[media.s3]`, `STATION_MEDIA_S3_*`).
/// Credentials left unset come from the standard `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` variables.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The bucket's name (it must exist).
    pub bucket: String,
    /// Key prefix for Station's objects in the bucket (`""`: its root).
    pub prefix: String,
    /// Endpoint of an S3-compatible service (MinIO, R2, Ceph, ...); unset: AWS.
    pub endpoint: Option<String>,
    /// Region requests are signed for.
    pub region: String,
    /// Access key id; unset: `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Secret access key; unset: `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

impl S3Config {
    /// The media crate's settings for this bucket.
    pub fn settings(&self) -> station_media::ObjectStoreSettings {
        station_media::ObjectStoreSettings {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        }
    }
}

/// `points.max_amount` by default: 10^12 points.
pub const DEFAULT_MAX_AMOUNT: u64 = 1_000_000_000_000;

/// Pricing settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PointsConfig {
    /// Every tool's price is multiplied by this (and rounded up to whole points).
    pub multiplier: f64,
    /// Points every new account is given once, on first contact.
    pub starting_grant: u64,
    /// Points each account may spend per UTC day without touching its
    /// balance; unused points do not carry over. 0: none.
    pub free_daily: u64,
    /// Jobs priced above this many points are quoted and need the user's
    /// confirmation before they are queued, unless the user set their own
    /// threshold. The default lets routine generations through (the built-in
    /// SD 1.5 and SDXL tools cost 20 and 40) and asks before longer ones.
    /// 0: confirm every job that costs anything; a very large number: never ask.
    pub confirm_above: u64,
    /// The most points one grant or adjustment may move (either way); larger
    /// amounts are refused before anything is written. Balances themselves
    /// never pass the largest 64-bit integer: an entry that would take one
    /// there is refused too.
    pub max_amount: u64,
}

/// Chat conversation settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Minutes without input after which a conversation (a /make in
    /// progress, a settings menu) is closed, with a message saying so.
    pub idle_minutes: u64,
    /// Shortest time between two progress edits in one chat, in
    /// milliseconds (chat platforms punish frequent edits).
    pub progress_every_ms: u64,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig { idle_minutes: 30, progress_every_ms: 2000 }
    }
}

/// Webhook deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Allow webhook URLs on private, loopback and link-local addresses
    /// (off: a URL naming or resolving to one is refused, so accounts cannot
    /// make Station call into the operator's network).
    pub allow_private: bool,
    /// How long one delivery attempt may take, connecting included.
    pub timeout_seconds: u64,
    /// First retry delay of a failed delivery; doubles each attempt, at most an hour.
    pub retry_base_ms: u64,
    /// Deliveries are retried for this long after the event, then given up.
    pub give_up_hours: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig { allow_private: false, timeout_seconds: 5, retry_base_ms: 10_000, give_up_hours: 24 }
    }
}

/// Spells.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpellsConfig {
    /// Percent (0–100) of the points captured for each step of a cast of
    /// someone else's spell that goes to the spell's owner, in the same
    /// ledger transaction as the capture (rounded down; only points paid
    /// from the balance, not from the free daily allowance). 0: none.
    #[serde(deserialize_with = "percent")]
    pub creator_share_percent: u64,
    /// Public spells are chat commands of their own: `/<slug> prompt…`
    /// casts the spell, listed in /help and the platforms' command menus
    /// (a slug that is already a command is not). Off by default.
    pub commands: bool,
}

/// A whole percentage, 0 to 100.
fn percent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v > 100 {
        return Err(serde::de::Error::custom(format!("{v} is not a percentage from 0 to 100")));
    }
    Ok(v)
}

/// Alerts: rules, sinks and how messages are sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often the rules are evaluated (one process at a time evaluates).
    pub evaluate_every_ms: u64,
    /// While a rule keeps firing, say so again this often; 0 = never.
    pub reminder_minutes: u64,
    /// First retry of a message a sink did not take; doubles each attempt, at most an hour.
    pub retry_base_ms: u64,
    /// Messages are retried this long, then given up.
    pub give_up_hours: u64,
    /// One webhook attempt, connecting included.
    pub timeout_seconds: u64,
    /// The rules (`[[alerts.rules]]`).
    pub rules: Vec<AlertRuleConfig>,
    /// Where messages go (`[[alerts.sinks]]`).
    pub sinks: Vec<AlertSinkConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluate_every_ms: 30_000,
            reminder_minutes: 0,
            retry_base_ms: 10_000,
            give_up_hours: 24,
            timeout_seconds: 5,
            rules: vec![],
            sinks: vec![],
        }
    }
}

/// One alert rule as configured. Which keys a kind takes:
/// `backend_down` (`minutes` down), `queue_age` (`minutes` waited, optional
/// `service`), `failure_rate` (`percent` over `minutes`, at least
/// `min_jobs` ended, optional `service`), `disk_free` (`percent` free
/// below), `chain_lag` (`blocks` and/or `minutes` behind, optional `chain`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRuleConfig {
    /// The rule's name in messages and `station alerts list` (default: its kind).
    pub name: Option<String>,
    /// `backend_down`, `queue_age`, `failure_rate`, `disk_free` or `chain_lag`.
    pub kind: String,
    /// Minutes (see the kinds).
    pub minutes: Option<f64>,
    /// Percent (see the kinds).
    pub percent: Option<f64>,
    /// `failure_rate`: fewer ended jobs in the window never fire (default 10).
    pub min_jobs: Option<u64>,
    /// `queue_age`, `failure_rate`: only this service (default: each service).
    pub service: Option<String>,
    /// `chain_lag`: blocks behind the chain's head.
    pub blocks: Option<u64>,
    /// `chain_lag`: only this chain (default: each chain watched).
    pub chain: Option<String>,
}

/// One place alert messages go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSinkConfig {
    /// The sink's name (default: its kind, numbered when repeated).
    pub name: Option<String>,
    /// `telegram` (a chat id or @channel), `discord` (a channel id) or
    /// `webhook` (a URL); chat kinds need that bot configured.
    pub kind: String,
    /// The chat, channel or URL.
    pub target: String,
    /// `webhook`: sign bodies with this secret (`X-Station-Signature`, as account webhooks).
    pub secret: Option<String>,
}

/// Per-account limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// API requests one account may make per minute (a token bucket whose
    /// burst is the same number); 0 turns the limit off. Administrators are
    /// not limited.
    pub requests_per_minute: u64,
    /// Jobs one account may have queued (waiting for a worker) at once; a
    /// submission beyond it is refused until one starts. 0 turns the limit
    /// off. Running jobs are limited by `queue.per_user_running`.
    pub max_queued: u64,
    /// How long a process trusts an API key or session it has checked, in
    /// milliseconds, before reading it again; 0 reads it on every request.
    /// Revocation, sign-out, suspension, role changes and merges apply at
    /// once regardless (they are announced to every process on PostgreSQL);
    /// this only bounds changes nothing announced.
    pub auth_cache_ms: u64,
}

/// Web app settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// The address people reach Station at (e.g. `https://station.example.com`),
    /// used in sign-in links; `https` also marks the session cookie `Secure`.
    /// Default: the public URL a front end's section gives (see
    /// [`Section::public_url_key`]), else `http://` + `listen`.
    pub public_url: Option<String>,
    /// How long a web sign-in lasts, in hours.
    pub session_hours: u64,
    /// Whether a signature by a linked wallet opens a web session (the
    /// sign-in page then offers "Sign in with your wallet"). Off by default.
    pub wallet_sign_in: bool,
}

/// Collection settings (issue 24).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectionsConfig {
    /// How long an export's download link lives once built, in hours.
    pub export_ttl_hours: u64,
    /// The most items one collection holds.
    pub max_items: u64,
    /// The most pieces one cook makes (a recipe's `supply`).
    pub max_supply: u64,
    /// The most jobs one cook has queued or running at once (the rest wait
    /// their turn, so a cook never floods the queue).
    pub max_in_flight: u64,
}

impl Default for CollectionsConfig {
    fn default() -> Self {
        CollectionsConfig { export_ttl_hours: 24, max_items: 1000, max_supply: 10_000, max_in_flight: 4 }
    }
}

/// Wallets and on-chain deposits (`[wallets]`, chains as `[[wallets.chains]]`;
/// in the environment `STATION_WALLETS_CHAINS` takes the chains as a JSON
/// array). Checked when Station opens: every error names its chain and key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WalletsConfig {
    /// How long a sign-in-with-Ethereum challenge may be signed, in minutes (at most 15).
    pub challenge_minutes: u64,
    /// How long a magic-deposit quote is valid, in minutes (at most 15).
    pub quote_minutes: u64,
    /// The chains deposits are accepted on.
    pub chains: Vec<ChainConfig>,
}

impl Default for WalletsConfig {
    fn default() -> Self {
        WalletsConfig { challenge_minutes: 10, quote_minutes: 15, chains: vec![] }
    }
}

/// One EVM chain (`[[wallets.chains]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// EIP-155 chain id (1 Ethereum, 8453 Base, 31337 a local anvil, …).
    pub id: u64,
    /// Name shown to people.
    pub name: String,
    /// JSON-RPC endpoint (`https://…` or `http://127.0.0.1:8545`).
    pub rpc_url: String,
    /// The operator's address (or vault contract) deposits are sent to.
    pub deposit_address: String,
    /// Blocks a deposit needs (its own included) before it is credited;
    /// default 12, or 1 on development chains (31337, 1337).
    #[serde(default)]
    pub confirmations: Option<u64>,
    /// Block the watcher starts at the first time; default: the chain's head then.
    #[serde(default)]
    pub start_block: Option<u64>,
    /// Time between two looks at the chain, in milliseconds.
    #[serde(default = "default_chain_poll_ms")]
    pub poll_ms: u64,
    /// Most blocks read in one step.
    #[serde(default = "default_chain_batch")]
    pub max_blocks_per_poll: u64,
    /// Largest magic amount quoted, in the native coin's smallest unit
    /// (default 10^9: at most 1 gwei on an 18-decimal coin).
    #[serde(default = "default_magic_cap")]
    pub magic_cap: u64,
    /// Accepted assets: the native coin (no `token`) and ERC-20 tokens.
    #[serde(default)]
    pub assets: Vec<AssetConfig>,
}

fn default_chain_poll_ms() -> u64 {
    2000
}

fn default_chain_batch() -> u64 {
    100
}

fn default_magic_cap() -> u64 {
    1_000_000_000
}

/// One accepted asset of a chain (`[[wallets.chains.assets]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Symbol shown to people (`ETH`, `USDC`).
    pub symbol: String,
    /// The ERC-20 contract's address; unset for the chain's native coin.
    #[serde(default)]
    pub token: Option<String>,
    /// Decimals of the asset (18 for ETH, 6 for USDC): one whole unit is
    /// 10^decimals smallest units.
    #[serde(default = "default_decimals")]
    pub decimals: u32,
    /// Points credited for one whole unit; a deposit of `n` smallest units
    /// gives `floor(n × points_per_unit / 10^decimals)` points (integers only).
    pub points_per_unit: u64,
    /// Smallest deposit credited, in whole units as decimal text (`"0.01"`);
    /// smaller deposits are recorded and not credited.
    #[serde(default)]
    pub minimum: Option<String>,
}

fn default_decimals() -> u32 {
    18
}

/// LoRA training settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Fewest images a dataset needs before it can be trained.
    pub min_images: u64,
    /// Most images (slots) a dataset may hold.
    pub max_images: u64,
    /// A models folder every backend loads LoRAs from: each trained LoRA is
    /// also written there as `<slug>.safetensors`, and the catalog names that
    /// file. Unset: the catalog names the file the training backend saved
    /// (in its `output/loras`, which ComfyUI lists as a LoRA folder).
    pub publish_dir: Option<PathBuf>,
    /// A running training that reports no progress for this many minutes is
    /// stopped on its backend and its points are returned (fractions allowed;
    /// 0 turns stall handling off).
    pub stall_minutes: f64,
    /// Making a trained LoRA public waits for an administrator's approval
    /// (administrators' own LoRAs excepted).
    pub publish_needs_approval: bool,
    /// The tool that writes captions for dataset images (auto-captions): a
    /// ComfyUI tool with `category: "caption"` whose workflow ends in a node
    /// that returns text (`PreviewAny`). Unset: the first such tool loaded,
    /// if any.
    pub caption_tool: Option<String>,
    /// Sample images made with each trained LoRA once it is ready (0: none;
    /// at most 8): ordinary generation jobs, paid like any, with the
    /// training definition's sample tool, the LoRA's checkpoint and the
    /// dataset's captions (which carry the trigger word) as prompts.
    pub samples: u64,
    /// Per-second prices by training definition id (`lora-sdxl`, …): a
    /// definition named here is priced by the backend time it takes instead
    /// of its built-in price (see [`TrainingPerSecond`]).
    pub per_second: BTreeMap<String, TrainingPerSecond>,
}

/// A training priced by the seconds it runs on its backend: the quote (and
/// hold) is `points` × an estimate of its run time, learnt from the
/// definition's recent successful trainings; the capture is `points` × the
/// measured time, never more than the hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "RawTrainingPerSecond")]
pub struct TrainingPerSecond {
    /// Points per second of backend time (before `points.multiplier` and the
    /// checkpoint's price multiplier).
    pub points: f64,
    /// Seconds a step is assumed to take until a training of this definition
    /// has succeeded (the operator's estimate for the GPUs at hand).
    pub default_seconds_per_step: f64,
    /// The estimate is multiplied by this (1 or more, default 1.25), so a run
    /// somewhat slower than the recent ones still fits in the hold.
    pub margin: f64,
    /// How many of the latest successful trainings the estimate is the
    /// median of (default 5).
    pub runs: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrainingPerSecond {
    points: f64,
    default_seconds_per_step: f64,
    #[serde(default = "default_margin")]
    margin: f64,
    #[serde(default = "default_runs")]
    runs: u32,
}

fn default_margin() -> f64 {
    1.25
}

fn default_runs() -> u32 {
    5
}

impl TryFrom<RawTrainingPerSecond> for TrainingPerSecond {
    type Error = String;

    fn try_from(r: RawTrainingPerSecond) -> Result<Self, String> {
        if !(r.points.is_finite() && r.points > 0.0) {
            return Err(format!("points must be a number above 0, got {}", r.points));
        }
        if !(r.default_seconds_per_step.is_finite() && r.default_seconds_per_step > 0.0) {
            return Err(format!(
                "default_seconds_per_step must be a number above 0, got {}",
                r.default_seconds_per_step
            ));
        }
        if !(r.margin.is_finite() && (1.0..=10.0).contains(&r.margin)) {
            return Err(format!("margin must be from 1 to 10, got {}", r.margin));
        }
        if !(1..=100).contains(&r.runs) {
            return Err(format!("runs must be from 1 to 100, got {}", r.runs));
        }
        Ok(TrainingPerSecond {
            points: r.points,
            default_seconds_per_step: r.default_seconds_per_step,
            margin: r.margin,
            runs: r.runs,
        })
    }
}

impl TrainingConfig {
    /// How long a running training may go without progress, if limited.
    pub fn stall_after(&self) -> Option<std::time::Duration> {
        (self.stall_minutes.is_finite() && self.stall_minutes > 0.0)
            .then(|| std::time::Duration::from_secs_f64(self.stall_minutes * 60.0))
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            min_images: 4,
            max_images: 20,
            publish_dir: None,
            stall_minutes: 30.0,
            publish_needs_approval: true,
            caption_tool: None,
            samples: 0,
            per_second: BTreeMap::new(),
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { public_url: None, session_hours: 24 * 7, wallet_sign_in: false }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./station-data"),
            database_url: None,
            listen: "127.0.0.1:8480".parse().expect("valid default address"),
            tools_dir: None,
            media_dir: None,
            log_format: "text".into(),
            shutdown_grace_seconds: 10,
            queue: QueueConfig::default(),
            comfyui: ComfyUiConfig::default(),
            tools: ToolsConfig::default(),
            media: MediaConfig::default(),
            points: PointsConfig::default(),
            limits: LimitsConfig::default(),
            flows: FlowsConfig::default(),
            web: WebConfig::default(),
            collections: CollectionsConfig::default(),
            webhooks: WebhooksConfig::default(),
            spells: SpellsConfig::default(),
            training: TrainingConfig::default(),
            alerts: AlertsConfig::default(),
            wallets: WalletsConfig::default(),
            commands: Default::default(),
            sections: Sections::default(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease_seconds: 30,
            per_user_running: 2,
            job_timeout_seconds: 600,
            backend_wait_seconds: 300,
            max_attempts: 3,
            retry_base_ms: 1_000,
            poll_ms: 500,
        }
    }
}

impl Default for ComfyUiConfig {
    fn default() -> Self {
        ComfyUiConfig {
            backends: vec![],
            preview_method: "auto".into(),
            health_interval_seconds: 10,
            health_connect_timeout_seconds: 2,
            health_timeout_seconds: 5,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            workers: 0,
            max_bytes: 50 * 1024 * 1024,
            max_upload_files: 4,
            max_pixels: 64_000_000,
            max_frames: 100,
            decode_concurrency: 2,
            watermarks: Default::default(),
            watermark_opt_out: true,
            auto_watermark: None,
            auto_watermark_position: station_media::ops::Position::BottomRight,
            auto_watermark_opacity: 0.5,
            auto_watermark_scale: 0.2,
            auto_watermark_margin: 16,
            store: MediaStoreKind::Local,
            presign_seconds: None,
            s3: S3Config::default(),
        }
    }
}

impl Default for PointsConfig {
    fn default() -> Self {
        PointsConfig {
            multiplier: 1.0,
            starting_grant: 100,
            free_daily: 0,
            confirm_above: 50,
            max_amount: DEFAULT_MAX_AMOUNT,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { requests_per_minute: 60, max_queued: 20, auth_cache_ms: 2_000 }
    }
}

/// A configuration section owned by a front end (a chat adapter, say):
/// `[name]` in the file, `STATION_NAME_*` in the environment. The binary
/// registers it when loading ([`Config::load`]); the core keeps its table
/// without knowing its keys and checks it by deserialising the front end's
/// own typed settings, so a bad key is reported with the file, line and key
/// (or the variable) as for the core's own sections.
#[derive(Clone)]
pub struct Section {
    name: &'static str,
    defaults: Value,
    check_value: fn(&Value) -> Result<(), String>,
    check_file: for<'i> fn(toml::Deserializer<'i>) -> Result<(), toml::de::Error>,
    public_url_key: Option<&'static str>,
    notes: Vec<String>,
    example: &'static str,
}

impl Section {
    /// The section `name` whose settings are `T`: its defaults are
    /// `T::default()` (every key `T` serialises is a key of the section, so
    /// `T` must serialise all its fields, unset options as null), and a
    /// table is valid when it deserialises as `T` (use
    /// `#[serde(deny_unknown_fields, default)]` to refuse unknown keys and
    /// allow missing ones). `name` must not be one of the core's own keys.
    pub fn new<T: Serialize + DeserializeOwned + Default>(name: &'static str) -> Section {
        Section {
            name,
            defaults: serde_json::to_value(T::default()).expect("section defaults serialise"),
            check_value: check_value::<T>,
            check_file: check_file::<T>,
            public_url_key: None,
            notes: vec![],
            example: "",
        }
    }

    /// Declares that this section's `key`, when set, is the address people
    /// reach Station at: [`Config::public_url`] uses it when `web.public_url`
    /// is not set (the first registered section that has one wins).
    pub fn public_url_key(mut self, key: &'static str) -> Section {
        self.public_url_key = Some(key);
        self
    }

    /// Adds a comment line to [`Config::show`] (e.g. the path of an endpoint
    /// the front end serves).
    pub fn note(mut self, line: impl Into<String>) -> Section {
        self.notes.push(line.into());
        self
    }

    /// The commented `[name]` table `station config init` writes (see
    /// [`Config::example`]); its values should be the defaults.
    pub fn example(mut self, toml: &'static str) -> Section {
        self.example = toml;
        self
    }

    /// The table's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Every key with its default, as a serde tree.
    pub fn defaults(&self) -> &Value {
        &self.defaults
    }
}

impl std::fmt::Debug for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Section")
            .field("name", &self.name)
            .field("defaults", &self.defaults)
            .field("public_url_key", &self.public_url_key)
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

/// Sections are told apart by what they declare; their check functions
/// follow from the settings type, whose defaults are compared.
impl PartialEq for Section {
    fn eq(&self, other: &Section) -> bool {
        (self.name, &self.defaults, self.public_url_key, &self.notes, self.example)
            == (other.name, &other.defaults, other.public_url_key, &other.notes, other.example)
    }
}

fn check_value<T: DeserializeOwned>(table: &Value) -> Result<(), String> {
    T::deserialize(table).map(drop).map_err(|e| e.to_string())
}

/// Checks a document holding only this section's table, so toml's error
/// names the table, the key and (with the input set) the line.
fn check_file<T: DeserializeOwned>(document: toml::Deserializer<'_>) -> Result<(), toml::de::Error> {
    BTreeMap::<String, T>::deserialize(document).map(drop)
}

/// The front ends' sections of a [`Config`]: which are registered, and
/// each one's table (defaults, then file, then environment).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sections {
    registered: Vec<Section>,
    tables: BTreeMap<String, Value>,
}

impl Sections {
    /// The registered sections, in registration order.
    pub fn registered(&self) -> &[Section] {
        &self.registered
    }

    fn definition(&self, name: &str) -> Option<&Section> {
        self.registered.iter().find(|s| s.name == name)
    }
}

/// Why configuration could not be loaded. Messages name the file, line and key,
/// or the environment variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a bad key or value.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the line, column and key.
        message: String,
    },
    /// An environment variable has a value of the wrong kind.
    #[error("environment variable {name}: {reason}")]
    Env {
        /// The variable.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A front end's section does not hold its settings (a table set in
    /// code with [`Config::set_section`] that was never checked).
    #[error("config section [{section}]: {reason}")]
    Section {
        /// The section's name.
        section: String,
        /// What is wrong, naming the key.
        reason: String,
    },
}

impl Config {
    /// Loads configuration: defaults, then the file (if given, or if
    /// `station.toml` exists in the working folder), then the environment.
    /// `sections` are the front ends' own tables (see [`Section`]); a table
    /// in the file that is neither the core's nor one of them is an error.
    pub fn load(path: Option<&Path>, sections: &[Section]) -> Result<Config, ConfigError> {
        Self::load_with_env(path, sections, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        sections: &[Section],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let default_path = Path::new("station.toml");
        let file = match path {
            Some(p) => Some(p),
            None if default_path.exists() => Some(default_path),
            None => None,
        };
        let base = match file {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.to_path_buf(), source })?;
                Self::from_toml(&text, sections)
                    .map_err(|message| ConfigError::Parse { path: p.to_path_buf(), message })?
            }
            None => {
                let mut c = Config::default();
                for s in sections {
                    c.register(s.clone());
                }
                c
            }
        };
        base.with_env(env)
    }

    /// Parses a configuration file's text with `sections` registered; the
    /// error is toml's message with line, column and key.
    fn from_toml(text: &str, sections: &[Section]) -> Result<Config, String> {
        let with_input = |mut e: toml::de::Error| {
            e.set_input(Some(text));
            e.to_string()
        };
        let mut root = toml::de::DeTable::parse(text).map_err(with_input)?;
        let span = root.span();
        // The front ends' tables are taken out, with their spans, before the
        // core's part is read (it refuses keys it does not know).
        let mut found = vec![];
        for s in sections {
            if let Some(entry) = root.get_mut().remove_entry(s.name) {
                found.push((s, entry));
            }
        }
        let mut config = Config::deserialize(toml::Deserializer::from(root)).map_err(with_input)?;
        for s in sections {
            config.register(s.clone());
        }
        for (s, (key, value)) in found {
            let mut only = toml::de::DeTable::new();
            only.insert(key, value);
            let document = || toml::Deserializer::from(toml::Spanned::new(span.clone(), only.clone()));
            (s.check_file)(document()).map_err(with_input)?;
            let mut tree = BTreeMap::<String, Value>::deserialize(document()).map_err(with_input)?;
            let given = tree.remove(s.name).unwrap_or(Value::Null);
            let table = config.sections.tables.entry(s.name.to_string()).or_insert(Value::Null);
            merge(table, given);
        }
        Ok(config)
    }

    /// Registers a front end's section: its table starts as the section's
    /// defaults with any table already set (see [`Config::set_section`])
    /// laid over them. Registering a name again replaces the definition.
    ///
    /// # Panics
    ///
    /// When the name is one of the core's own keys (a programming error).
    pub fn register(&mut self, section: Section) {
        let core = serde_json::to_value(Config::default()).expect("config serialises");
        assert!(core.get(section.name).is_none(), "config section [{}] would hide the core's own key", section.name);
        let mut table = section.defaults.clone();
        if let Some(given) = self.sections.tables.remove(section.name) {
            merge(&mut table, given);
        }
        self.sections.tables.insert(section.name.to_string(), table);
        self.sections.registered.retain(|s| s.name != section.name);
        self.sections.registered.push(section);
    }

    /// A front end's table: defaults, file and environment merged; None when
    /// the section is neither registered nor set.
    pub fn section(&self, name: &str) -> Option<&Value> {
        self.sections.tables.get(name)
    }

    /// A front end's typed settings from its table (`T::default()` when
    /// there is none, e.g. in a configuration built in code).
    pub fn section_as<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        match self.sections.tables.get(name) {
            None => Ok(T::default()),
            Some(table) => T::deserialize(table)
                .map_err(|e| ConfigError::Section { section: name.to_string(), reason: e.to_string() }),
        }
    }

    /// Sets a front end's table from its typed settings (configurations
    /// built in code, such as tests'); replaces any table of that name.
    pub fn set_section<T: Serialize>(&mut self, name: &str, settings: &T) {
        let table = serde_json::to_value(settings).expect("section settings serialise");
        self.sections.tables.insert(name.to_string(), table);
    }

    /// The core's keys and every section's table as one serde tree (the
    /// registered sections in registration order, then any others).
    fn tree(&self) -> Value {
        let mut tree = serde_json::to_value(self).expect("config serialises");
        let registered = self.sections.registered.iter().map(|s| s.name);
        let others = self.sections.tables.keys().map(String::as_str).filter(|n| self.sections.definition(n).is_none());
        for name in registered.chain(others) {
            if let Some(table) = self.sections.tables.get(name) {
                tree[name] = table.clone();
            }
        }
        tree
    }

    /// The defaults of the core and of every registered section as one
    /// serde tree: its leaves are the keys the environment can set.
    fn default_tree(&self) -> Value {
        let mut tree = serde_json::to_value(Config::default()).expect("config serialises");
        for s in &self.sections.registered {
            tree[s.name] = s.defaults.clone();
        }
        tree
    }

    /// Reads a tree made by [`Config::tree`] back, checking every
    /// registered section's table.
    fn read_tree(&self, mut tree: Value) -> Result<Config, String> {
        let mut tables = BTreeMap::new();
        if let Value::Object(m) = &mut tree {
            for name in self.sections.tables.keys() {
                if let Some(t) = m.remove(name) {
                    tables.insert(name.clone(), t);
                }
            }
        }
        let mut config: Config = serde_json::from_value(tree).map_err(|e| e.to_string())?;
        for (name, table) in &tables {
            if let Some(s) = self.sections.definition(name) {
                (s.check_value)(table).map_err(|e| format!("[{name}]: {e}"))?;
            }
        }
        config.sections = Sections { registered: self.sections.registered.clone(), tables };
        Ok(config)
    }

    /// Applies `STATION_*` overrides, to the core's keys and to every
    /// registered section's.
    pub fn with_env(self, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut tree = self.tree();
        let leaves = leaf_paths(&self.default_tree());
        let mut touched = false;
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("STATION_") else { continue };
            if name == "STATION_CONFIG" {
                continue;
            }
            if rest == "COMFYUI_BACKENDS" && !raw.trim_start().starts_with('[') {
                let backends: Vec<Value> = raw
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .enumerate()
                    .map(|(i, url)| serde_json::json!({"name": format!("backend{}", i + 1), "url": url}))
                    .collect();
                tree["comfyui"]["backends"] = Value::Array(backends);
                touched = true;
                continue;
            }
            let Some((path, template)) = leaves.iter().find(|(p, _)| env_name(p) == name) else {
                continue;
            };
            let value = match template {
                Value::String(_) => Value::String(raw.clone()),
                Value::Null => serde_json::from_str::<Value>(&raw)
                    .ok()
                    .filter(|v| !v.is_string())
                    .unwrap_or(Value::String(raw.clone())),
                _ => serde_json::from_str(&raw).map_err(|_| ConfigError::Env {
                    name: name.clone(),
                    reason: format!("expected {}, got {raw:?}", kind_of(template)),
                })?,
            };
            // An unset optional key has no type to go by: `123` may be a number or,
            // for ids such as an application id, text. Keep the text when the
            // number does not fit the key.
            let fallback = (template.is_null() && !value.is_string()).then(|| Value::String(raw.clone()));
            set_path(&mut tree, path, value);
            if let Some(text) = fallback
                && self.read_tree(tree.clone()).is_err()
            {
                set_path(&mut tree, path, text);
            }
            touched = true;
        }
        if !touched {
            return Ok(self);
        }
        self.read_tree(tree).map_err(|reason| ConfigError::Env { name: "STATION_*".into(), reason })
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("station.db").display()))
    }

    /// A short fingerprint of the database in effect: the SQLite file's
    /// absolute path, or the PostgreSQL URL (password masked, so the same
    /// for every process sharing it), hashed. Two processes with one
    /// fingerprint share their data; `/healthz` shows it so the CLI can tell
    /// whether the server on its address uses its data folder.
    pub fn database_fingerprint(&self) -> String {
        use sha2::Digest as _;
        let url = self.database_url();
        let identity = match url.strip_prefix("sqlite:") {
            Some(rest) => {
                let path = Path::new(rest.trim_start_matches("//"));
                let abs = std::fs::canonicalize(path).unwrap_or_else(|_| {
                    std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
                });
                format!("sqlite:{}", abs.display())
            }
            None => mask_url(&url),
        };
        hex::encode(&sha2::Sha256::digest(identity.as_bytes())[..8])
    }

    /// The tools folder in effect.
    pub fn tools_dir(&self) -> PathBuf {
        self.tools_dir.clone().unwrap_or_else(|| self.data_dir.join("tools"))
    }

    /// The media folder in effect.
    pub fn media_dir(&self) -> PathBuf {
        self.media_dir.clone().unwrap_or_else(|| self.data_dir.join("media"))
    }

    /// The public address configured, as given: `web.public_url`, else the
    /// first registered section's public URL key that is set (see
    /// [`Section::public_url_key`]). None: only the listen address is known.
    pub fn configured_public_url(&self) -> Option<String> {
        self.web.public_url.clone().or_else(|| {
            self.sections.registered.iter().find_map(|s| {
                let table = self.sections.tables.get(s.name)?;
                table.get(s.public_url_key?)?.as_str().map(str::to_string)
            })
        })
    }

    /// The public base URL without a trailing `/`: [`Config::configured_public_url`],
    /// else `http://` + `listen`.
    pub fn public_url(&self) -> String {
        let url = self.configured_public_url();
        url.unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_string()
    }

    /// Worker count for native media jobs.
    pub fn media_workers(&self) -> usize {
        match self.media.workers {
            0 => std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(2),
            n => n as usize,
        }
    }

    /// The effective configuration as TOML with secrets masked, plus derived
    /// values (resolved paths) and the registered sections' notes (such as
    /// the endpoints front ends serve).
    pub fn show(&self) -> String {
        let mut tree = self.tree();
        tree["database_url"] = Value::String(mask_url(&self.database_url()));
        tree["tools_dir"] = Value::String(self.tools_dir().display().to_string());
        tree["media_dir"] = Value::String(self.media_dir().display().to_string());
        mask_secrets(&mut tree);
        strip_nulls(&mut tree);
        tidy_floats(&mut tree);
        let body = toml::to_string_pretty(&tree).unwrap_or_else(|e| format!("# cannot render: {e}"));
        let notes: String =
            self.sections.registered.iter().flat_map(|s| &s.notes).map(|n| format!("# {n}\n")).collect();
        format!(
            "# Effective configuration (defaults < file < STATION_* environment). Secrets are masked.\n{notes}{body}"
        )
    }

    /// Every configurable key with its environment name, for documentation:
    /// the core's and every registered section's.
    pub fn env_names(&self) -> Vec<(String, String)> {
        let mut names: Vec<(String, String)> =
            leaf_paths(&self.default_tree()).into_iter().map(|(p, _)| (p.join("."), env_name(&p))).collect();
        let mut seen = std::collections::HashSet::new();
        names.retain(|(_, env)| seen.insert(env.clone()));
        names
    }

    /// A commented example configuration, written by `station config init`:
    /// the core's [`EXAMPLE`], then every registered section's example.
    pub fn example(&self) -> String {
        let mut text = EXAMPLE.to_string();
        for s in self.sections.registered.iter().filter(|s| !s.example.is_empty()) {
            text.push('\n');
            text.push_str(s.example);
        }
        text
    }
}

/// Lays `over` onto `base`: tables key by key (recursively), anything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// `STATION_` + upper-cased path joined by `_`.
pub fn env_name(path: &[String]) -> String {
    format!("STATION_{}", path.join("_").to_uppercase())
}

fn leaf_paths(v: &Value) -> Vec<(Vec<String>, Value)> {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            other => out.push((prefix.clone(), other.clone())),
        }
    }
    let mut out = vec![];
    walk(v, &mut vec![], &mut out);
    out
}

fn set_path(tree: &mut Value, path: &[String], value: Value) {
    let mut cur = tree;
    for key in &path[..path.len() - 1] {
        cur = &mut cur[key.as_str()];
    }
    cur[path[path.len() - 1].as_str()] = value;
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::Array(_) => "a JSON array",
        _ => "a value",
    }
}

fn mask_secrets(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if let Value::String(s) = child {
                    if k.contains("token") || k.contains("secret") || k.contains("password") {
                        *s = if s.is_empty() { String::new() } else { "****".into() };
                    } else if k == "rpc_url" {
                        *s = mask_rpc_url(s);
                    }
                }
                mask_secrets(child);
            }
        }
        // Lists of tables (`[[wallets.chains]]`, alert sinks) hold secrets too.
        Value::Array(a) => a.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

/// A JSON-RPC endpoint with what may be a key masked: providers put the
/// key in the path (`https://mainnet.infura.io/v3/KEY`) or the query, so
/// only the scheme and host are shown (and a password, if any, masked).
fn mask_rpc_url(url: &str) -> String {
    let masked = mask_url(url);
    let Some((scheme, rest)) = masked.split_once("://") else { return masked };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(cut);
    if tail.is_empty() || tail == "/" { masked } else { format!("{scheme}://{host}/****") }
}

/// Writes floats as they were typed: `0.2` read into an `f32` widens to
/// 0.20000000298023224; a value that is exactly an `f32` is printed as the
/// shortest decimal of that `f32`.
fn tidy_floats(v: &mut Value) {
    match v {
        Value::Object(m) => m.values_mut().for_each(tidy_floats),
        Value::Array(a) => a.iter_mut().for_each(tidy_floats),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            let narrow = x as f32;
            if f64::from(narrow) == x
                && let Some(short) = format!("{narrow}").parse::<f64>().ok().and_then(serde_json::Number::from_f64)
            {
                *n = short;
            }
        }
        _ => {}
    }
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        // TOML has no null: a chain without `confirmations` must render too.
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

pub use station_store::mask_url;

/// The commented example of the core's own keys; `station config init`
/// writes it with the front ends' sections ([`Config::example`]).
pub const EXAMPLE: &str = include_str!("../station.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A front end's settings, as an adapter crate would declare them.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct ChatSettings {
        token: Option<String>,
        api_url: String,
        application_id: Option<String>,
        public_url: Option<String>,
        keep_days: u64,
    }

    impl Default for ChatSettings {
        fn default() -> Self {
            ChatSettings {
                token: None,
                api_url: "https://chat.example".into(),
                application_id: None,
                public_url: None,
                keep_days: 7,
            }
        }
    }

    const CHAT_EXAMPLE: &str = "[chat]\napi_url = \"https://chat.example\"\n# token = \"...\"\nkeep_days = 7\n";

    fn sections() -> Vec<Section> {
        vec![
            Section::new::<ChatSettings>("chat")
                .public_url_key("public_url")
                .note("Chat webhook path: /chat/webhook")
                .example(CHAT_EXAMPLE),
        ]
    }

    fn chat(c: &Config) -> ChatSettings {
        c.section_as("chat").unwrap()
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("station.toml");
        std::fs::write(&f, text).unwrap();
        (dir, f)
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load_with_env(None, &sections(), env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8480");
        assert_eq!(c.database_url(), "sqlite://./station-data/station.db");
        assert_eq!(c.tools_dir(), PathBuf::from("./station-data/tools"));
        assert_eq!(chat(&c), ChatSettings::default());
        assert_eq!(c.section("chat").unwrap()["keep_days"], 7);
    }

    #[test]
    fn environment_overrides_file_and_follows_one_rule() {
        let (_dir, f) = file("listen = \"0.0.0.0:9000\"\n[queue]\nlease_seconds = 5\n[chat]\nkeep_days = 3\n");
        let c = Config::load_with_env(
            Some(&f),
            &sections(),
            env(&[
                ("STATION_QUEUE_LEASE_SECONDS", "7"),
                ("STATION_CHAT_TOKEN", "123:abc"),
                ("STATION_DATA_DIR", "/tmp/x"),
                ("STATION_COMFYUI_BACKENDS", "http://a:8188, http://b:8188"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.queue.lease_seconds, 7);
        assert_eq!(chat(&c).token.as_deref(), Some("123:abc"));
        assert_eq!(chat(&c).keep_days, 3, "the file's value, the rest defaults");
        assert_eq!(chat(&c).api_url, "https://chat.example");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.comfyui.backends.len(), 2);
        assert_eq!(c.comfyui.backends[1].url, "http://b:8188");
        let shown = c.show();
        assert!(!shown.contains("123:abc"), "secret leaked: {shown}");
        assert!(shown.contains("# Chat webhook path: /chat/webhook"), "{shown}");
        assert!(shown.contains("[chat]") && shown.contains("keep_days = 3"), "{shown}");
    }

    #[test]
    fn numeric_ids_in_the_environment_stay_text() {
        let c =
            Config::load_with_env(None, &sections(), env(&[("STATION_CHAT_APPLICATION_ID", "1100000000000000001")]))
                .unwrap();
        assert_eq!(chat(&c).application_id.as_deref(), Some("1100000000000000001"));
        let c = Config::load_with_env(None, &sections(), env(&[("STATION_CHAT_KEEP_DAYS", "2")])).unwrap();
        assert_eq!(chat(&c).keep_days, 2);
    }

    #[test]
    fn bad_file_names_file_line_and_key() {
        let (_dir, f) = file("listen = \"127.0.0.1:1\"\n\n[queue]\nlease_secnds = 5\n");
        let err = Config::load_with_env(Some(&f), &sections(), env(&[])).unwrap_err().to_string();
        assert!(err.contains("station.toml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("lease_secnds"), "{err}");
    }

    #[test]
    fn a_bad_key_in_a_front_end_section_names_file_line_and_key() {
        let (_dir, f) = file("[queue]\nlease_seconds = 5\n\n[chat]\napi_url = \"x\"\ntokn = \"1\"\n");
        let err = Config::load_with_env(Some(&f), &sections(), env(&[])).unwrap_err().to_string();
        assert!(err.contains("station.toml") && err.contains("line 6") && err.contains("tokn"), "{err}");
        let (_dir, f) = file("[chat]\nkeep_days = \"soon\"\n");
        let err = Config::load_with_env(Some(&f), &sections(), env(&[])).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("keep_days"), "{err}");
        // Unregistered, the section is an unknown key of the file.
        let (_dir, f) = file("[chat]\nkeep_days = 1\n");
        let err = Config::load_with_env(Some(&f), &[], env(&[])).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("chat"), "{err}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = Config::load_with_env(None, &sections(), env(&[("STATION_QUEUE_POLL_MS", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("STATION_QUEUE_POLL_MS") && err.contains("number"), "{err}");
        let err = Config::load_with_env(None, &sections(), env(&[("STATION_CHAT_KEEP_DAYS", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("STATION_CHAT_KEEP_DAYS") && err.contains("number"), "{err}");
    }

    #[test]
    fn env_names_cover_the_sections() {
        let c = Config::load_with_env(None, &sections(), env(&[])).unwrap();
        let names = c.env_names();
        for (key, var) in [
            ("queue.lease_seconds", "STATION_QUEUE_LEASE_SECONDS"),
            ("queue.backend_wait_seconds", "STATION_QUEUE_BACKEND_WAIT_SECONDS"),
            ("web.public_url", "STATION_WEB_PUBLIC_URL"),
            ("chat.token", "STATION_CHAT_TOKEN"),
            ("chat.public_url", "STATION_CHAT_PUBLIC_URL"),
        ] {
            assert!(names.contains(&(key.to_string(), var.to_string())), "{key} missing: {names:?}");
        }
        assert!(!Config::default().env_names().iter().any(|(k, _)| k.starts_with("chat.")));
    }

    #[test]
    fn wallet_chains_come_from_the_file_or_the_environment() {
        let (_d, f) = file(
            "[[wallets.chains]]\nid = 31337\nname = \"Local\"\nrpc_url = \"http://127.0.0.1:8545\"\n\
             deposit_address = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\n\
             [[wallets.chains.assets]]\nsymbol = \"ETH\"\npoints_per_unit = 1000\nminimum = \"0.01\"\n",
        );
        let c = Config::load_with_env(Some(&f), &sections(), env(&[])).unwrap();
        let chain = &c.wallets.chains[0];
        assert_eq!((chain.id, chain.confirmations, chain.assets[0].decimals), (31337, None, 18));
        assert_eq!(chain.assets[0].minimum.as_deref(), Some("0.01"));
        let json = r#"[{"id":1,"name":"Ethereum","rpc_url":"https://rpc.example","deposit_address":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","assets":[{"symbol":"USDC","token":"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48","decimals":6,"points_per_unit":100}]}]"#;
        let c = Config::load_with_env(None, &sections(), env(&[("STATION_WALLETS_CHAINS", json)])).unwrap();
        assert_eq!(c.wallets.chains[0].assets[0].token.as_deref(), Some("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"));
        let err = Config::load_with_env(None, &sections(), env(&[("STATION_WALLETS_CHAINS", "[{\"id\":1}]")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `name`"), "{err}");
    }

    #[test]
    fn public_url_falls_back_to_a_section_that_declares_one() {
        let c = Config::load_with_env(None, &sections(), env(&[])).unwrap();
        assert_eq!(c.public_url(), "http://127.0.0.1:8480");
        assert_eq!(c.configured_public_url(), None);
        let c = Config::load_with_env(None, &sections(), env(&[("STATION_CHAT_PUBLIC_URL", "https://bot.example/")]))
            .unwrap();
        assert_eq!(c.public_url(), "https://bot.example");
        let c = Config::load_with_env(
            None,
            &sections(),
            env(&[
                ("STATION_CHAT_PUBLIC_URL", "https://bot.example/"),
                ("STATION_WEB_PUBLIC_URL", "https://web.example"),
            ]),
        )
        .unwrap();
        assert_eq!(c.public_url(), "https://web.example");
    }

    #[test]
    fn sections_set_in_code_are_read_back_typed() {
        let mut c = Config::default();
        assert_eq!(chat(&c), ChatSettings::default(), "absent: the defaults");
        let mine = ChatSettings { token: Some("t".into()), ..Default::default() };
        c.set_section("chat", &mine);
        assert_eq!(chat(&c), mine);
        c.register(sections().remove(0));
        assert_eq!(chat(&c), mine, "registering keeps the table set");
        c.set_section("chat", &serde_json::json!({"keep_days": "soon"}));
        let err = c.section_as::<ChatSettings>("chat").unwrap_err().to_string();
        assert!(err.contains("[chat]") && err.contains("string"), "{err}");
    }

    #[test]
    fn example_file_parses_and_equals_defaults() {
        let c: Config = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(c, Config::default());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("station.toml");
        let with_sections = Config::load_with_env(None, &sections(), env(&[])).unwrap();
        std::fs::write(&f, with_sections.example()).unwrap();
        assert!(with_sections.example().contains(CHAT_EXAMPLE));
        assert_eq!(Config::load_with_env(Some(&f), &sections(), env(&[])).unwrap(), with_sections);
    }

    #[test]
    fn masks_rpc_keys_in_chains() {
        let mut c = Config::default();
        c.wallets.chains = vec![ChainConfig {
            id: 1,
            name: "Ethereum".into(),
            rpc_url: "https://mainnet.infura.io/v3/0123456789abcdef".into(),
            deposit_address: "0x000000000000000000000000000000000000dEaD".into(),
            confirmations: None,
            start_block: None,
            poll_ms: default_chain_poll_ms(),
            max_blocks_per_poll: default_chain_batch(),
            magic_cap: 1_000_000_000,
            assets: vec![],
        }];
        let shown = c.show();
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("https://mainnet.infura.io/****"), "{shown}");
        assert_eq!(mask_rpc_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        assert_eq!(mask_rpc_url("http://127.0.0.1:8545/"), "http://127.0.0.1:8545/");
    }

    #[test]
    fn masks_database_password() {
        assert_eq!(mask_url("postgres://u:pw@h/db"), "postgres://u:****@h/db");
    }
}
