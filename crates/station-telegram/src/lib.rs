//! Station's Telegram bot.
//!
//! - [`client`]: a thin Bot API client (JSON and multipart calls, downloads,
//!   errors classified by what the adapter does about them).
//! - [`config`]: the `[telegram]` settings ([`TelegramConfig`]), registered
//!   with the core's configuration loader by the binary.
//! - receiving: long polling by default, or a webhook ([`TelegramBot::webhook_router`])
//!   when `telegram.public_url` is set. Every update is stored in the core's
//!   inbox ([`Station::inbox`]) before it is acknowledged and processed in
//!   order within its chat, concurrently across chats; see `inbound.rs`.
//! - [`render`]: views as HTML messages, captions, albums and inline keyboards.
//! - sending: [`TelegramBot`] is the flows engine's [`Platform`] for
//!   `telegram` conversations, paced by [`pace::Pacer`].

pub mod alerts;
pub mod client;
pub mod config;
pub mod doctor;
mod inbound;
mod outbound;
pub mod pace;
pub mod render;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::json;
use station_core::Station;
use station_core::media::DeliveryLimits;
use station_flows::Flows;
use tokio_util::sync::CancellationToken;

pub use alerts::TelegramAlerts;
pub use client::{ApiError, BotApi};
pub use config::TelegramConfig;
pub use pace::{PaceLimits, Pacer};

/// Where `station serve` mounts the webhook.
pub const WEBHOOK_PATH: &str = "/telegram/webhook";

/// How long an album's command caption is remembered for its later photos.
pub const ALBUM_MEMORY: Duration = Duration::from_secs(86_400);

/// The adapter-state key prefix of remembered album captions.
const ALBUM_KEY_PREFIX: &str = "album:";

/// Telegram's `sendPhoto` limits: 10 MB, width + height ≤ 10000. Pictures
/// over them are fitted by `Station::deliverable` before they go as photos.
pub const PHOTO_LIMITS: DeliveryLimits =
    DeliveryLimits { max_bytes: 10_000_000, max_side: 10_000, max_side_sum: Some(10_000) };

/// The scope a bot keeps its rows under in the core — its inbox
/// ([`Station::inbox`]) and its adapter state ([`Station::adapter_state`]):
/// `telegram:<bot id>`.
pub fn scope(bot_id: &str) -> String {
    format!("telegram:{bot_id}")
}

/// Tuning for tests and unusual deployments.
#[derive(Debug, Clone)]
pub struct TelegramOptions {
    /// Outgoing limits.
    pub pace: PaceLimits,
    /// `getUpdates` long-poll timeout.
    pub poll_timeout: Duration,
    /// Process stored updates (turning this off only stores them: tests of
    /// crash recovery use it to stop between receiving and processing).
    pub process: bool,
    /// Live progress edits only use spare capacity: one is skipped when the
    /// chat's queue reaches further than one send interval plus this.
    pub progress_skip_backlog: Duration,
    /// Tests of crash recovery: after handling an update, stop that chat's
    /// processing without recording the update done, as a process killed at
    /// that moment would (the next start processes it again).
    pub crash_after_handling: bool,
    /// First wait before trying the Bot API again when it cannot be reached
    /// at start (doubling up to a minute).
    pub start_retry: Duration,
    /// How often processed updates older than `telegram.keep_updates_days`
    /// are deleted from the inbox.
    pub housekeeping_every: Duration,
    /// A send that would wait longer than this for its slot is handed back
    /// to the delivery service to retry later (its lease must not lapse).
    pub max_wait: Duration,
    /// How often the command menus are compared with the admins (roles are
    /// changed by other processes, e.g. `station users`); tool changes
    /// update them at once.
    pub menu_refresh: Duration,
    /// Long polling: how long the one process that polls keeps the right to
    /// after its last renewal (before each `getUpdates`); another process
    /// takes over this long after the poller died. Longer than a poll
    /// (`poll_timeout`).
    pub poller_lease: Duration,
}

impl Default for TelegramOptions {
    fn default() -> Self {
        TelegramOptions {
            pace: PaceLimits::default(),
            poll_timeout: Duration::from_secs(25),
            process: true,
            progress_skip_backlog: Duration::ZERO,
            max_wait: Duration::from_secs(10),
            crash_after_handling: false,
            start_retry: Duration::from_secs(1),
            housekeeping_every: Duration::from_secs(3600),
            menu_refresh: Duration::from_secs(60),
            poller_lease: Duration::from_secs(60),
        }
    }
}

/// Why the bot could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// No token configured.
    #[error("telegram.token is not set (set STATION_TELEGRAM_TOKEN to the token from @BotFather)")]
    NoToken,
    /// The token does not look like `123456:ABC…`.
    #[error("telegram.token does not look like a bot token (expected digits, a colon, then letters)")]
    BadToken,
    /// The Bot API refused the token: nothing will work until it is replaced.
    #[error(
        "the Telegram Bot API refused the bot token ({0}); set STATION_TELEGRAM_TOKEN (telegram.token) to the \
         token @BotFather gave you"
    )]
    Unauthorized(ApiError),
    /// The Bot API refused a start-up call.
    #[error("{0} (check telegram.token and telegram.api_url)")]
    Api(#[from] ApiError),
}

pub(crate) struct Inner {
    pub station: Station,
    pub flows: Flows,
    pub api: BotApi,
    /// The numeric bot id from the token.
    pub bot_id: String,
    /// Where the bot's inbox and state are kept: [`scope`] of `bot_id`.
    pub scope: String,
    pub username: RwLock<String>,
    pub pacer: Pacer,
    pub options: TelegramOptions,
    pub secret: String,
    pub public_url: Option<String>,
    /// Processed updates older than this are pruned.
    pub keep_updates: Duration,
    /// Wakes the dispatcher when an update was stored or a chat finished.
    pub stored: tokio::sync::Notify,
    /// Chats being processed now.
    pub busy: Mutex<HashSet<String>>,
    /// Chats this process stored updates for since the dispatcher last looked.
    pub fresh: Mutex<HashSet<String>>,
    pub owner: String,
}

/// The Telegram adapter. Cheap to clone.
#[derive(Clone)]
pub struct TelegramBot {
    pub(crate) inner: Arc<Inner>,
}

/// The running bot; stop it with [`TelegramRunner::shutdown`].
pub struct TelegramRunner {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TelegramRunner {
    /// Stops receiving; updates being processed finish first.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Whether it still runs (or still tries to reach the Bot API): false
    /// once stopped, or after the API refused the token for good.
    pub fn is_running(&self) -> bool {
        self.tasks.iter().any(|t| !t.is_finished())
    }

    /// Stops at once, as a crash would (tests of recovery).
    pub fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Worth trying again at start: the API unreachable, 5xx, or 429.
fn retryable(e: &ApiError) -> bool {
    e.is_transient() || e.retry_after().is_some()
}

/// A start-up failure that will not go away by waiting, named for the operator.
fn start_error(e: ApiError) -> TelegramError {
    match e {
        ApiError::Api { code: 401 | 404, .. } => TelegramError::Unauthorized(e),
        e => TelegramError::Api(e),
    }
}

fn derive_secret(token: &str) -> String {
    // Stable across restarts and processes, and not the token itself.
    use std::hash::{Hash, Hasher};
    let mut a = std::collections::hash_map::DefaultHasher::new();
    ("station-telegram-webhook", token).hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    (token, "secret", a.finish()).hash(&mut b);
    format!("st{:016x}{:016x}", a.finish(), b.finish())
}

impl TelegramBot {
    /// A bot for the configured token and API URL, feeding `flows`.
    pub fn new(
        station: Station,
        flows: Flows,
        config: &TelegramConfig,
        options: TelegramOptions,
    ) -> Result<TelegramBot, TelegramError> {
        let token = config.token.clone().filter(|t| !t.is_empty()).ok_or(TelegramError::NoToken)?;
        let bot_id = token.split_once(':').map(|(id, _)| id).filter(|id| id.chars().all(|c| c.is_ascii_digit()));
        let bot_id = bot_id.filter(|id| !id.is_empty()).ok_or(TelegramError::BadToken)?.to_string();
        let secret = config.webhook_secret.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| derive_secret(&token));
        Ok(TelegramBot {
            inner: Arc::new(Inner {
                api: BotApi::new(&config.api_url, &token),
                station,
                flows,
                scope: scope(&bot_id),
                bot_id,
                username: RwLock::new(String::new()),
                pacer: Pacer::new(options.pace.clone()),
                options,
                secret,
                public_url: config.public_url.clone().filter(|u| !u.is_empty()),
                keep_updates: Duration::from_secs(config.keep_updates_days.saturating_mul(86_400)),
                stored: tokio::sync::Notify::new(),
                busy: Mutex::new(HashSet::new()),
                fresh: Mutex::new(HashSet::new()),
                owner: format!("telegram-{}", uuid::Uuid::new_v4().simple()),
            }),
        })
    }

    /// The Bot API client.
    pub fn api(&self) -> &BotApi {
        &self.inner.api
    }

    /// The bot's username (known after [`TelegramBot::start`]).
    pub fn username(&self) -> String {
        self.inner.username.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The numeric bot id from the token.
    pub fn bot_id(&self) -> &str {
        &self.inner.bot_id
    }

    /// Whether updates arrive by webhook (a public URL is configured).
    pub fn webhook_mode(&self) -> bool {
        self.inner.public_url.is_some()
    }

    /// The webhook's full URL, in webhook mode.
    pub fn webhook_url(&self) -> Option<String> {
        self.inner.public_url.as_ref().map(|u| format!("{}{WEBHOOK_PATH}", u.trim_end_matches('/')))
    }

    /// Registers with the flows engine, sets the command menu, then receives
    /// (long polling, or registers the webhook) and processes updates.
    ///
    /// A token the Bot API refuses (401/404) is an error at once
    /// ([`TelegramError::Unauthorized`]). When the API cannot be reached or
    /// answers 5xx/429, the failure is logged and the runner keeps trying in
    /// the background (from `start_retry`, doubling up to a minute), so
    /// `station serve` goes on serving; the bot starts once the API answers.
    pub async fn start(&self) -> Result<TelegramRunner, TelegramError> {
        let stop = CancellationToken::new();
        match self.connect().await {
            Ok(()) => {
                let tasks = self.launch(&stop);
                Ok(TelegramRunner { stop, tasks })
            }
            Err(e) if !retryable(&e) => Err(start_error(e)),
            Err(e) => {
                let wait = self.inner.options.start_retry;
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "the Telegram Bot API is not reachable; retrying");
                let me = self.clone();
                let s = stop.clone();
                let task = tokio::spawn(async move {
                    if !me.connect_with_retries(e, &s).await {
                        return;
                    }
                    // Owned here, so aborting the runner aborts them too.
                    let mut tasks = tokio::task::JoinSet::new();
                    for t in me.launch(&s) {
                        tasks.spawn(async move {
                            let _ = t.await;
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                });
                Ok(TelegramRunner { stop, tasks: vec![task] })
            }
        }
    }

    /// `getMe`, then the webhook registered (or removed, for long polling).
    async fn connect(&self) -> Result<(), ApiError> {
        let me = self.inner.api.call("getMe", &json!({})).await?;
        let username = me["username"].as_str().unwrap_or_default().to_string();
        *self.inner.username.write().unwrap_or_else(std::sync::PoisonError::into_inner) = username;
        let allowed = json!(["message", "callback_query"]);
        match self.webhook_url() {
            Some(url) => {
                self.inner
                    .api
                    .call(
                        "setWebhook",
                        &json!({"url": url, "secret_token": self.inner.secret, "allowed_updates": allowed}),
                    )
                    .await?;
                tracing::info!(%url, "Telegram webhook registered");
            }
            None => {
                self.inner.api.call("deleteWebhook", &json!({"drop_pending_updates": false})).await?;
            }
        }
        Ok(())
    }

    /// Retries [`TelegramBot::connect`] with backoff after `first` failed.
    /// False when stopped, or when the API refused for good (logged).
    async fn connect_with_retries(&self, first: ApiError, stop: &CancellationToken) -> bool {
        let mut wait = self.inner.options.start_retry;
        let mut last = first;
        loop {
            if let Some(s) = last.retry_after() {
                wait = wait.max(Duration::from_secs(s));
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.connect().await {
                Ok(()) => {
                    tracing::info!(bot = %self.username(), "the Telegram Bot API answers; the bot starts");
                    return true;
                }
                Err(e) if !retryable(&e) => {
                    tracing::error!(error = %start_error(e), "the Telegram bot stops trying to start");
                    return false;
                }
                Err(e) => {
                    wait = (wait * 2).min(Duration::from_secs(60));
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "the Telegram Bot API is still not reachable; retrying");
                    last = e;
                }
            }
        }
    }

    /// After a successful [`TelegramBot::connect`]: registers with the flows
    /// engine, sets the menu, requeues interrupted updates and spawns the loops.
    fn launch(&self, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        self.inner.flows.add_platform(Arc::new(self.clone()));
        let stop = stop.clone();
        let mut tasks = vec![];
        let me = self.clone();
        let s = stop.clone();
        // Before the dispatcher starts: nothing of ours is processing yet.
        let requeue = tokio::spawn(async move {
            if let Err(e) = me.sync_commands().await {
                tracing::warn!(error = %e, "could not set the Telegram command menu; retrying when tools change");
            }
            let requeued = me.inner.station.inbox(&me.inner.scope).requeue().await.unwrap_or(0);
            if requeued > 0 {
                tracing::warn!(requeued, "Telegram updates interrupted by a stop are processed again");
            }
            me.inner.stored.notify_one();
            if me.inner.options.process {
                me.dispatch_loop(s).await;
            }
        });
        tasks.push(requeue);
        let me = self.clone();
        let s = stop.clone();
        tasks.push(tokio::spawn(async move { me.housekeeping_loop(s).await }));
        if !self.webhook_mode() {
            let me = self.clone();
            let s = stop.clone();
            tasks.push(tokio::spawn(async move { me.poll_loop(s).await }));
        }
        let me = self.clone();
        let s = stop.clone();
        tasks.push(tokio::spawn(async move { me.menu_loop(s).await }));
        tasks
    }

    /// Deletes processed updates older than `telegram.keep_updates_days`
    /// and album captions older than [`ALBUM_MEMORY`], every
    /// `housekeeping_every` (unprocessed updates stay, whatever their age).
    async fn housekeeping_loop(&self, stop: CancellationToken) {
        let every = self.inner.options.housekeeping_every.max(Duration::from_millis(10));
        loop {
            let before = station_core::now_ms() - self.inner.keep_updates.as_millis().min(i64::MAX as u128) as i64;
            match self.inner.station.inbox(&self.inner.scope).prune(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "old processed Telegram updates deleted"),
                Err(e) => tracing::warn!(error = %e, "could not prune old Telegram updates"),
            }
            // An album's photos arrive within seconds of its caption; a day
            // later the remembered caption is only clutter.
            let albums_before = station_core::now_ms() - ALBUM_MEMORY.as_millis() as i64;
            if let Err(e) =
                self.inner.station.adapter_state(&self.inner.scope).prune(ALBUM_KEY_PREFIX, albums_before).await
            {
                tracing::warn!(error = %e, "could not prune remembered album captions");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Sets the command menus when they differ from the ones last set: the
    /// public commands for the default scope, and for every admin with a
    /// Telegram identity a `BotCommandScopeChat` menu in their private chat
    /// with the operator commands added. Menus of people who are no longer
    /// admins are deleted, so they fall back to the default. Returns whether
    /// anything was sent.
    pub async fn sync_commands(&self) -> Result<bool, ApiError> {
        let inner = &self.inner;
        // Public spells offered as commands (`spells.commands`), as they are now.
        if let Err(e) = inner.flows.refresh_spell_commands().await {
            tracing::warn!(error = %e, "could not read the spells offered as commands");
        }
        let mut changed = self.set_menu(None, None).await?;
        let admins = match inner.station.admins_on("telegram").await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the admins for their Telegram menus");
                return Ok(changed);
            }
        };
        let state = inner.station.adapter_state(&inner.scope);
        let had: Vec<i64> = state
            .get("admin_menus")
            .await
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default();
        let mut set = vec![];
        for (account, subject) in &admins {
            // A private chat's id is the user's id.
            let Ok(chat) = subject.parse::<i64>() else { continue };
            match self.set_menu(Some(chat), Some(account)).await {
                Ok(c) => {
                    changed |= c;
                    set.push(chat);
                }
                // Telegram knows the chat only once the admin has talked to the bot: next time.
                Err(e) if e.is_permanent_for_chat() => {
                    tracing::debug!(chat, error = %e, "admin menu not set yet");
                }
                Err(e) => return Err(e),
            }
        }
        for chat in had.iter().filter(|c| !set.contains(c)) {
            let body = json!({"scope": {"type": "chat", "chat_id": chat}});
            match inner.api.call("deleteMyCommands", &body).await {
                Ok(_) => changed = true,
                Err(e) if e.is_permanent_for_chat() => {}
                Err(e) => return Err(e),
            }
            let _ = state.set(&format!("commands:chat:{chat}"), "").await;
        }
        if had != set {
            let v = serde_json::to_string(&set).expect("ids serialise");
            if let Err(e) = state.set("admin_menus", &v).await {
                tracing::warn!(error = %e, "could not remember the admins' Telegram menus");
            }
        }
        Ok(changed)
    }

    /// Sets one menu (`chat` None: the default scope, with the commands
    /// everyone has; else that private chat's, with what `account` may use)
    /// unless it is what was last set there.
    async fn set_menu(&self, chat: Option<i64>, account: Option<&station_core::AccountRow>) -> Result<bool, ApiError> {
        let commands: Vec<serde_json::Value> = self
            .inner
            .flows
            .commands(account)
            .into_iter()
            .filter(|c| {
                !c.name.is_empty()
                    && c.name.len() <= 32
                    && c.name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
            })
            .take(100)
            .map(|c| {
                let d: String = c.description.chars().take(256).collect();
                let d = if d.trim().is_empty() { c.name.clone() } else { d };
                json!({"command": c.name, "description": d})
            })
            .collect();
        let mut body = json!({"commands": commands});
        let key = match chat {
            Some(id) => {
                body["scope"] = json!({"type": "chat", "chat_id": id});
                format!("commands:chat:{id}")
            }
            None => "commands".to_string(),
        };
        let text = body.to_string();
        let state = self.inner.station.adapter_state(&self.inner.scope);
        if state.get(&key).await.ok().flatten().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        self.inner.api.call("setMyCommands", &body).await?;
        if let Err(e) = state.set(&key, &text).await {
            tracing::warn!(error = %e, "could not remember the Telegram command menu");
        }
        Ok(true)
    }

    async fn menu_loop(&self, stop: CancellationToken) {
        let mut changes = self.inner.station.tools.subscribe();
        let mut refresh = tokio::time::interval(self.inner.options.menu_refresh.max(Duration::from_millis(10)));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
                // Admins added or removed (by any process) show up here.
                _ = refresh.tick() => {}
            }
            if let Err(e) = self.sync_commands().await {
                tracing::warn!(error = %e, "could not update the Telegram command menus");
            }
        }
    }
}
