//! Typed configuration: defaults, then `station.toml`, then `STATION_*` environment.
//!
//! Environment names follow one rule: `STATION_` followed by the key's path in
//! upper case with `.` written as `_` — `listen` → `STATION_LISTEN`,
//! `telegram.token` → `STATION_TELEGRAM_TOKEN`, `queue.lease_seconds` →
//! `STATION_QUEUE_LEASE_SECONDS`. Lists take JSON or comma-separated values;
//! `STATION_COMFYUI_BACKENDS=http://gpu1:8188,http://gpu2:8188` is a shorthand
//! for backends named after their position.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Job queue behaviour.
    pub queue: QueueConfig,
    /// ComfyUI backends.
    pub comfyui: ComfyUiConfig,
    /// Native media workers.
    pub media: MediaConfig,
    /// Prices.
    pub points: PointsConfig,
    /// Per-account limits.
    pub limits: LimitsConfig,
    /// Chat conversations.
    pub flows: FlowsConfig,
    /// Telegram bot.
    pub telegram: TelegramConfig,
    /// Discord bot.
    pub discord: DiscordConfig,
    /// Web app: public address and sign-in sessions.
    pub web: WebConfig,
    /// Operator's choice of tool for a chat command, overriding the tools'
    /// own `command` (e.g. `upscale = "resize"` sends `/upscale` to the native
    /// resize tool instead of the ComfyUI one).
    pub commands: std::collections::BTreeMap<String, String>,
}

/// Job queue settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// A worker's claim on a job lapses after this long without a heartbeat.
    pub lease_seconds: u64,
    /// Jobs one account may have dispatched or running at once, per service.
    pub per_user_running: u64,
    /// Default per-job execution limit.
    pub job_timeout_seconds: u64,
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
}

/// Native media settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Parallel media jobs; 0 means one per CPU.
    pub workers: u64,
    /// Largest accepted upload or input, in bytes.
    pub max_bytes: u64,
    /// Largest accepted image, in pixels.
    pub max_pixels: u64,
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
}

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
    /// Default: `telegram.public_url`, else `http://` + `listen`.
    pub public_url: Option<String>,
    /// How long a web sign-in lasts, in hours.
    pub session_hours: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { public_url: None, session_hours: 24 * 7 }
    }
}

/// Telegram settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// Bot token from @BotFather (secret).
    pub token: Option<String>,
    /// Bot API base URL (a self-hosted Bot API server, or a test fake).
    pub api_url: String,
    /// Secret expected in `X-Telegram-Bot-Api-Secret-Token` (webhook mode).
    pub webhook_secret: Option<String>,
    /// Public base URL; when set, webhook mode is used instead of long polling.
    pub public_url: Option<String>,
    /// Days processed updates are kept in the inbox before the bot's hourly
    /// housekeeping deletes them (unprocessed ones are never deleted).
    pub keep_updates_days: u64,
}

/// Discord settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    /// Bot token (secret).
    pub token: Option<String>,
    /// Application id.
    pub application_id: Option<String>,
    /// Application public key (hex), to verify interaction signatures.
    pub public_key: Option<String>,
    /// REST API base URL.
    pub api_url: String,
    /// Register commands in this server only (instant updates while testing);
    /// unset: global commands.
    pub guild_id: Option<String>,
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
            queue: QueueConfig::default(),
            comfyui: ComfyUiConfig::default(),
            media: MediaConfig::default(),
            points: PointsConfig::default(),
            limits: LimitsConfig::default(),
            flows: FlowsConfig::default(),
            telegram: TelegramConfig::default(),
            discord: DiscordConfig::default(),
            web: WebConfig::default(),
            commands: Default::default(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease_seconds: 30,
            per_user_running: 2,
            job_timeout_seconds: 600,
            max_attempts: 3,
            retry_base_ms: 1_000,
            poll_ms: 500,
        }
    }
}

impl Default for ComfyUiConfig {
    fn default() -> Self {
        ComfyUiConfig { backends: vec![], preview_method: "auto".into(), health_interval_seconds: 10 }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            workers: 0,
            max_bytes: 50 * 1024 * 1024,
            max_pixels: 64_000_000,
            watermarks: Default::default(),
            watermark_opt_out: true,
            auto_watermark: None,
            auto_watermark_position: station_media::ops::Position::BottomRight,
            auto_watermark_opacity: 0.5,
            auto_watermark_scale: 0.2,
            auto_watermark_margin: 16,
        }
    }
}

impl Default for PointsConfig {
    fn default() -> Self {
        PointsConfig { multiplier: 1.0, starting_grant: 100, free_daily: 0, confirm_above: 50 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { requests_per_minute: 60, max_queued: 20, auth_cache_ms: 2_000 }
    }
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            token: None,
            api_url: "https://api.telegram.org".into(),
            webhook_secret: None,
            public_url: None,
            keep_updates_days: 7,
        }
    }
}

impl Default for DiscordConfig {
    fn default() -> Self {
        DiscordConfig {
            token: None,
            application_id: None,
            public_key: None,
            api_url: "https://discord.com/api/v10".into(),
            guild_id: None,
        }
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
}

impl Config {
    /// Loads configuration: defaults, then the file (if given, or if
    /// `station.toml` exists in the working folder), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment (tests).
    pub fn load_with_env(
        path: Option<&Path>,
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
                toml::from_str::<Config>(&text)
                    .map_err(|e| ConfigError::Parse { path: p.to_path_buf(), message: e.to_string() })?
            }
            None => Config::default(),
        };
        base.with_env(env)
    }

    /// Applies `STATION_*` overrides.
    pub fn with_env(self, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut tree = serde_json::to_value(&self).expect("config serialises");
        let leaves = leaf_paths(&serde_json::to_value(Config::default()).expect("config serialises"));
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
            // for ids such as STATION_DISCORD_APPLICATION_ID, text. Keep the text
            // when the number does not fit the key.
            let fallback = (template.is_null() && !value.is_string()).then(|| Value::String(raw.clone()));
            set_path(&mut tree, path, value);
            if let Some(text) = fallback
                && serde_json::from_value::<Config>(tree.clone()).is_err()
            {
                set_path(&mut tree, path, text);
            }
            touched = true;
        }
        if !touched {
            return Ok(self);
        }
        serde_json::from_value(tree).map_err(|e| ConfigError::Env { name: "STATION_*".into(), reason: e.to_string() })
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("station.db").display()))
    }

    /// The tools folder in effect.
    pub fn tools_dir(&self) -> PathBuf {
        self.tools_dir.clone().unwrap_or_else(|| self.data_dir.join("tools"))
    }

    /// The media folder in effect.
    pub fn media_dir(&self) -> PathBuf {
        self.media_dir.clone().unwrap_or_else(|| self.data_dir.join("media"))
    }

    /// The public base URL without a trailing `/`: `web.public_url`, else
    /// `telegram.public_url`, else `http://` + `listen`.
    pub fn public_url(&self) -> String {
        let url = self.web.public_url.clone().or_else(|| self.telegram.public_url.clone());
        url.unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_string()
    }

    /// Worker count for native media jobs.
    pub fn media_workers(&self) -> usize {
        match self.media.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            n => n as usize,
        }
    }

    /// The effective configuration as TOML with secrets masked, plus derived
    /// values (resolved paths, webhook and interaction endpoints).
    pub fn show(&self) -> String {
        let mut tree = serde_json::to_value(self).expect("config serialises");
        tree["database_url"] = Value::String(mask_url(&self.database_url()));
        tree["tools_dir"] = Value::String(self.tools_dir().display().to_string());
        tree["media_dir"] = Value::String(self.media_dir().display().to_string());
        mask_secrets(&mut tree);
        strip_nulls(&mut tree);
        let body = toml::to_string_pretty(&tree).unwrap_or_else(|e| format!("# cannot render: {e}"));
        format!(
            "# Effective configuration (defaults < file < STATION_* environment). Secrets are masked.\n\
             # Telegram webhook path: /telegram/webhook\n\
             # Discord interactions endpoint path: /discord/interactions\n{body}"
        )
    }
}

/// `STATION_` + upper-cased path joined by `_`.
pub fn env_name(path: &[String]) -> String {
    format!("STATION_{}", path.join("_").to_uppercase())
}

/// Every configurable key with its environment name, for documentation.
pub fn env_names() -> Vec<(String, String)> {
    leaf_paths(&serde_json::to_value(Config::default()).expect("config serialises"))
        .into_iter()
        .map(|(p, _)| (p.join("."), env_name(&p)))
        .collect()
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
    if let Value::Object(m) = v {
        for (k, child) in m.iter_mut() {
            if (k.contains("token") || k.contains("secret") || k.contains("password"))
                && let Value::String(s) = child
            {
                *s = if s.is_empty() { String::new() } else { "****".into() };
            }
            mask_secrets(child);
        }
    }
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, c| !c.is_null());
        m.values_mut().for_each(strip_nulls);
    }
}

pub use station_store::mask_url;

/// A commented example configuration, written by `station config init`.
pub const EXAMPLE: &str = include_str!("../station.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8480");
        assert_eq!(c.database_url(), "sqlite://./station-data/station.db");
        assert_eq!(c.tools_dir(), PathBuf::from("./station-data/tools"));
    }

    #[test]
    fn environment_overrides_file_and_follows_one_rule() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("station.toml");
        std::fs::write(&f, "listen = \"0.0.0.0:9000\"\n[queue]\nlease_seconds = 5\n").unwrap();
        let c = Config::load_with_env(
            Some(&f),
            env(&[
                ("STATION_QUEUE_LEASE_SECONDS", "7"),
                ("STATION_TELEGRAM_TOKEN", "123:abc"),
                ("STATION_DATA_DIR", "/tmp/x"),
                ("STATION_COMFYUI_BACKENDS", "http://a:8188, http://b:8188"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.queue.lease_seconds, 7);
        assert_eq!(c.telegram.token.as_deref(), Some("123:abc"));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.comfyui.backends.len(), 2);
        assert_eq!(c.comfyui.backends[1].url, "http://b:8188");
        let shown = c.show();
        assert!(!shown.contains("123:abc"), "secret leaked: {shown}");
        assert!(shown.contains("/telegram/webhook"));
    }

    #[test]
    fn numeric_ids_in_the_environment_stay_text() {
        let c = Config::load_with_env(
            None,
            env(&[("STATION_DISCORD_APPLICATION_ID", "1100000000000000001"), ("STATION_DISCORD_GUILD_ID", "42")]),
        )
        .unwrap();
        assert_eq!(c.discord.application_id.as_deref(), Some("1100000000000000001"));
        assert_eq!(c.discord.guild_id.as_deref(), Some("42"));
    }

    #[test]
    fn bad_file_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("station.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:1\"\n\n[queue]\nlease_secnds = 5\n").unwrap();
        let err = Config::load_with_env(Some(&f), env(&[])).unwrap_err().to_string();
        assert!(err.contains("station.toml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("lease_secnds"), "{err}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = Config::load_with_env(None, env(&[("STATION_QUEUE_POLL_MS", "soon")])).unwrap_err().to_string();
        assert!(err.contains("STATION_QUEUE_POLL_MS") && err.contains("number"), "{err}");
    }

    #[test]
    fn example_file_parses_and_equals_defaults() {
        let c: Config = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn masks_database_password() {
        assert_eq!(mask_url("postgres://u:pw@h/db"), "postgres://u:****@h/db");
    }
}
