//! Station's Discord bot.
//!
//! Discord sends interactions (slash commands, button presses, select
//! choices, modal submissions, context-menu commands) to an HTTP endpoint
//! served by `station serve` ([`INTERACTIONS_PATH`]). Every request's
//! Ed25519 signature is checked against the application's public key (bad
//! ones get 401). The endpoint answers at once — a deferred response for
//! anything that takes time, a modal when a button asks for text — and hands
//! the input to the flow engine; the engine's stored messages come back
//! through [`Platform::deliver`], which edits the deferred response, sends
//! follow-ups while the interaction token is valid (15 minutes) and ordinary
//! channel messages afterwards.
//!
//! - [`config`]: the `[discord]` settings ([`DiscordConfig`]), registered
//!   with the core's configuration loader by the binary.
//! - [`rest`]: the REST client (per-route and global rate limits).
//! - [`render`]: views as embeds, files and components.
//! - [`commands`]: the command registration payload.

pub mod alerts;
pub mod commands;
pub mod config;
pub mod doctor;
mod interactions;
pub mod render;
pub mod rest;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use reqwest::Method;
use serde_json::Value;
use station_core::Station;
use station_core::media::{DeliveryLimits, MAX_OUTPUT_SIDE};
use station_flows::{Conversation, Flows, Outcome, Outgoing, Platform};

use crate::render::Modals;
use crate::rest::{Body, Rest, RestError};

pub use alerts::DiscordAlerts;
pub use config::DiscordConfig;

/// Where `station serve` mounts the interactions endpoint.
pub const INTERACTIONS_PATH: &str = "/discord/interactions";

/// Discord's interaction token lifetime.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Discord's attachment limit without boosts: 10 MiB; pictures over it are
/// fitted before they are sent.
pub const ATTACHMENT_LIMITS: DeliveryLimits =
    DeliveryLimits { max_bytes: 10 * 1024 * 1024, max_side: MAX_OUTPUT_SIDE, max_side_sum: None };

/// The group scope of a server (guild): conversations there name it as
/// their group, and its tool switches are kept under it
/// ([`Station::group_tools`]).
pub fn guild_scope(guild_id: &str) -> String {
    format!("discord-guild:{guild_id}")
}

/// A configuration problem, naming the setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    /// A setting is missing or malformed.
    #[error("discord.{field} ({env}): {reason}")]
    Config {
        /// The key under `[discord]`.
        field: &'static str,
        /// Its environment variable.
        env: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("discord: {0}")]
    Client(String),
}

/// How often the public spells offered as commands are checked for a
/// change of the registered commands.
const SPELL_MENU_CHECK: Duration = Duration::from_secs(60);

/// What the adapter needs to run.
#[derive(Debug, Clone)]
pub struct DiscordOptions {
    /// Bot token.
    pub token: String,
    /// Application id.
    pub application_id: String,
    /// Application public key.
    pub public_key: VerifyingKey,
    /// REST base URL (`https://discord.com/api/v10`).
    pub api_url: String,
    /// Register commands in this server only.
    pub guild_id: Option<String>,
    /// How long an interaction token is used before falling back to channel
    /// messages (Discord's 15 minutes, less a margin).
    pub token_lifetime: Duration,
}

impl DiscordOptions {
    /// Options from configuration; `Ok(None)` when Discord is not configured
    /// (no token, application id or public key given).
    pub fn from_config(c: &DiscordConfig) -> Result<Option<DiscordOptions>, DiscordError> {
        let (token, app, key) = (&c.token, &c.application_id, &c.public_key);
        if token.is_none() && app.is_none() && key.is_none() {
            return Ok(None);
        }
        let missing = |field: &'static str, env: &'static str| DiscordError::Config {
            field,
            env,
            reason: "is required when any Discord setting is given; copy it from the Discord developer portal \
                     (Applications → your app)"
                .into(),
        };
        let token = token.clone().ok_or_else(|| missing("token", "STATION_DISCORD_TOKEN"))?;
        let application_id = app.clone().ok_or_else(|| missing("application_id", "STATION_DISCORD_APPLICATION_ID"))?;
        let key_hex = key.clone().ok_or_else(|| missing("public_key", "STATION_DISCORD_PUBLIC_KEY"))?;
        let public_key = parse_public_key(&key_hex)?;
        if !application_id.chars().all(|c| c.is_ascii_digit()) || application_id.is_empty() {
            return Err(DiscordError::Config {
                field: "application_id",
                env: "STATION_DISCORD_APPLICATION_ID",
                reason: format!("{application_id:?} is not a Discord id (digits only)"),
            });
        }
        Ok(Some(DiscordOptions {
            token,
            application_id,
            public_key,
            api_url: c.api_url.clone(),
            guild_id: c.guild_id.clone().filter(|g| !g.is_empty()),
            token_lifetime: TOKEN_LIFETIME - Duration::from_secs(30),
        }))
    }
}

/// Parses the application's public key (64 hex characters).
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, DiscordError> {
    let bad = |reason: String| DiscordError::Config { field: "public_key", env: "STATION_DISCORD_PUBLIC_KEY", reason };
    let bytes = hex::decode(hex_key.trim())
        .map_err(|e| bad(format!("is not hex ({e}); copy the Public Key from the portal")))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| bad("must be 32 bytes (64 hex characters); copy the Public Key from the portal".into()))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| bad(format!("is not a valid Ed25519 key: {e}")))
}

/// The interaction a conversation is currently answering through.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) token: String,
    pub(crate) started: Instant,
    /// The deferred response is still showing "thinking…" and may take the next message.
    pub(crate) original_free: bool,
    /// The deferred response is ephemeral (only the asker sees it).
    pub(crate) ephemeral: bool,
    /// The message whose button or select made this interaction (or whose
    /// button opened the form sent): answered with a deferred update (type
    /// 6), its `@original` is that message, edited in place.
    pub(crate) message: Option<String>,
}

/// The live interactions of each chat, oldest first. A new message takes
/// the oldest deferred response still showing "thinking…": the engine
/// answers a chat's inputs in the order they came, so each command's first
/// answer lands under that command, not under a later one sent meanwhile.
#[derive(Default)]
pub(crate) struct Sessions {
    pub(crate) by_chat: HashMap<String, Vec<String>>,
    pub(crate) by_id: HashMap<String, Session>,
}

impl Sessions {
    /// Records interaction `iid` of `chat` (forgetting expired ones).
    pub(crate) fn begin(&mut self, chat: String, iid: String, session: Session, lifetime: Duration) {
        self.by_id.retain(|_, x| x.started.elapsed() < lifetime);
        let live: std::collections::HashSet<String> = self.by_id.keys().cloned().collect();
        self.by_chat.retain(|_, ids| {
            ids.retain(|i| live.contains(i));
            !ids.is_empty()
        });
        self.by_id.insert(iid.clone(), session);
        self.by_chat.entry(chat).or_default().push(iid);
    }

    /// The interaction a new message of `chat` goes through: the oldest live
    /// one whose deferred response is free (taken now: `true`), else the
    /// newest live one (a follow-up: `false`).
    pub(crate) fn claim(&mut self, chat: &str, lifetime: Duration) -> Option<(String, Session, bool)> {
        let ids = self.by_chat.get(chat)?;
        let live = |id: &String| self.by_id.get(id).is_some_and(|x| x.started.elapsed() < lifetime);
        let free = ids.iter().find(|id| live(id) && self.by_id[*id].original_free).cloned();
        if let Some(iid) = free {
            let sess = self.by_id.get_mut(&iid).expect("live");
            sess.original_free = false;
            return Some((iid, sess.clone(), true));
        }
        let iid = ids.iter().rev().find(|id| live(id))?.clone();
        Some((iid.clone(), self.by_id[&iid].clone(), false))
    }

    /// The newest live interaction of `chat` made on `message` (see
    /// [`Session::message`]).
    pub(crate) fn on_message(&self, chat: &str, message: &str, lifetime: Duration) -> Option<(String, Session)> {
        let ids = self.by_chat.get(chat)?;
        ids.iter().rev().find_map(|id| {
            let s = self.by_id.get(id)?;
            (s.started.elapsed() < lifetime && s.message.as_deref() == Some(message)).then(|| (id.clone(), s.clone()))
        })
    }

    /// Gives a claimed deferred response back after a send that failed
    /// (and will be retried), so the retry lands there too.
    pub(crate) fn release(&mut self, iid: &str) {
        if let Some(x) = self.by_id.get_mut(iid) {
            x.original_free = true;
        }
    }
}

/// The Discord adapter. Cheap to clone.
#[derive(Clone)]
pub struct Discord {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) station: Station,
    pub(crate) flows: Flows,
    pub(crate) rest: Rest,
    pub(crate) fetch: reqwest::Client,
    pub(crate) options: DiscordOptions,
    pub(crate) sessions: Mutex<Sessions>,
    pub(crate) modals: Modals,
    /// Channels where a post failed for missing permissions, to tell the next person who interacts there.
    pub(crate) denied: Mutex<HashSet<String>>,
}

/// Where a delivered message lives: `i:<interaction>:<channel>:<message>` for
/// interaction responses, `c:<channel>:<message>` for channel messages.
#[derive(Debug, Clone, PartialEq)]
enum MessageRef {
    Interaction { interaction: String, channel: String, message: String },
    Channel { channel: String, message: String },
}

impl MessageRef {
    fn parse(s: &str) -> Option<MessageRef> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["i", i, c, m] => Some(MessageRef::Interaction {
                interaction: i.to_string(),
                channel: c.to_string(),
                message: m.to_string(),
            }),
            ["c", c, m] => Some(MessageRef::Channel { channel: c.to_string(), message: m.to_string() }),
            _ => None,
        }
    }

    fn render(&self) -> String {
        match self {
            MessageRef::Interaction { interaction, channel, message } => format!("i:{interaction}:{channel}:{message}"),
            MessageRef::Channel { channel, message } => format!("c:{channel}:{message}"),
        }
    }
}

async fn rendered_again(station: &Station, out: &Outgoing, modals: &Modals) -> render::Rendered {
    render::render(station, &out.view, modals).await
}

/// The channel id of a conversation's chat (`CHANNEL` in DMs, `CHANNEL:USER` in servers).
pub fn channel_of(chat: &str) -> &str {
    chat.split(':').next().unwrap_or(chat)
}

fn outcome_of(e: &RestError) -> Outcome {
    match e {
        RestError::RateLimited(d) => Outcome::RetryAfter(*d),
        RestError::Transport(m) => Outcome::Transient(m.clone()),
        RestError::Api { status, .. } if *status >= 500 => Outcome::Transient(e.to_string()),
        other => Outcome::Permanent(other.to_string()),
    }
}

fn token_gone(e: &RestError) -> bool {
    // 50027 Invalid Webhook Token; 10015 Unknown Webhook; 10008 Unknown Message (not this token's).
    matches!(e, RestError::Api { code: 50027 | 10015 | 10008, .. } | RestError::Api { status: 401, .. })
}

impl Discord {
    /// An adapter for the engine; register it with `flows.add_platform(Arc::new(discord.clone()))`.
    pub fn new(station: Station, flows: Flows, options: DiscordOptions) -> Result<Discord, DiscordError> {
        let rest = Rest::new(&options.api_url, Some(options.token.clone())).map_err(DiscordError::Client)?;
        let fetch = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| DiscordError::Client(e.to_string()))?;
        Ok(Discord {
            inner: Arc::new(Inner {
                station,
                flows,
                rest,
                fetch,
                options,
                sessions: Default::default(),
                modals: Modals::default(),
                denied: Default::default(),
            }),
        })
    }

    /// The interactions endpoint, to mount at [`INTERACTIONS_PATH`].
    pub fn router(&self) -> axum::Router {
        interactions::router(self.clone())
    }

    /// The command list registered for the current tools.
    pub fn command_payload(&self) -> Vec<Value> {
        commands::build(&self.inner.flows.commands(None))
    }

    /// Registers the commands (bulk overwrite; in the configured server, or globally).
    pub async fn register_commands(&self) -> Result<usize, RestError> {
        // Public spells offered as commands (`spells.commands`), as they are now.
        if let Err(e) = self.inner.flows.refresh_spell_commands().await {
            tracing::warn!(error = %e, "could not read the spells offered as commands");
        }
        let list = self.command_payload();
        let app = &self.inner.options.application_id;
        let path = match &self.inner.options.guild_id {
            Some(g) => format!("/applications/{app}/guilds/{g}/commands"),
            None => format!("/applications/{app}/commands"),
        };
        self.inner.rest.call(Method::PUT, &path, Body::Json(Value::Array(list.clone()))).await?;
        tracing::info!(commands = list.len(), guild = ?self.inner.options.guild_id, "Discord commands registered");
        Ok(list.len())
    }

    /// Registers the commands now and again whenever the tools change or,
    /// checked every minute, the public spells offered as commands do
    /// (retrying failed registrations with backoff). Stops when the task is aborted.
    pub fn keep_commands_registered(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let mut changes = self.inner.station.tools.subscribe();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                match me.register_commands().await {
                    Ok(_) => {
                        backoff = Duration::from_secs(1);
                        let registered = me.command_payload();
                        loop {
                            tokio::select! {
                                r = changes.changed() => {
                                    if r.is_err() {
                                        return;
                                    }
                                    // Let a burst of file saves settle into one registration.
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                    changes.mark_unchanged();
                                    break;
                                }
                                _ = tokio::time::sleep(SPELL_MENU_CHECK) => {
                                    if let Err(e) = me.inner.flows.refresh_spell_commands().await {
                                        tracing::warn!(error = %e, "could not read the spells offered as commands");
                                    }
                                    if me.command_payload() != registered {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let wait = match &e {
                            RestError::RateLimited(d) => *d,
                            _ => backoff,
                        };
                        tracing::warn!(error = %e, ?wait, "Discord command registration failed; retrying");
                        tokio::time::sleep(wait).await;
                        backoff = (backoff * 2).min(Duration::from_secs(300));
                    }
                }
            }
        })
    }

    pub(crate) fn session(&self, interaction: &str) -> Option<Session> {
        let s = self.inner.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.by_id.get(interaction).filter(|s| s.started.elapsed() < self.inner.options.token_lifetime).cloned()
    }

    /// Takes the deferred response for a new message, if it is still free.
    fn claim_original(&self, chat: &str) -> Option<(String, Session, bool)> {
        let mut s = self.inner.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.claim(chat, self.inner.options.token_lifetime)
    }

    /// Edits `message` (of `channel`) through the newest interaction made on
    /// it — the answer to its deferred update — while that token is valid.
    /// `None` when there is none (or its token is gone): the caller edits
    /// another way.
    async fn edit_through_component(
        &self,
        chat: &str,
        channel: &str,
        message: &str,
        rendered: &render::Rendered,
    ) -> Option<Outcome> {
        let found = {
            let s = self.inner.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.on_message(chat, message, self.inner.options.token_lifetime)
        };
        let (iid, sess) = found?;
        let path = format!("{}/messages/@original", self.webhook_path(&sess.token));
        match self.webhook_call(Method::PATCH, &path, rendered, sess.started).await {
            Ok(_) => {
                let r = MessageRef::Interaction { interaction: iid, channel: channel.into(), message: message.into() };
                Some(Outcome::Sent { message_ref: Some(r.render()) })
            }
            Err(e) if token_gone(&e) => None,
            Err(e) => Some(outcome_of(&e)),
        }
    }

    /// See [`Sessions::release`].
    fn release_original(&self, iid: &str) {
        self.inner.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).release(iid);
    }

    pub(crate) fn webhook_path(&self, token: &str) -> String {
        format!("/webhooks/{}/{token}", self.inner.options.application_id)
    }

    async fn send_rendered(&self, method: Method, path: &str, r: &render::Rendered) -> Result<Value, RestError> {
        let body = if r.files.is_empty() {
            Body::Json(r.payload.clone())
        } else {
            Body::Multipart(r.payload.clone(), r.files.clone())
        };
        self.inner.rest.call(method, path, body).await
    }

    /// A webhook call right after answering an interaction can reach Discord
    /// before it has processed the answer: retry "Unknown Webhook" briefly.
    pub(crate) async fn webhook_call(
        &self,
        method: Method,
        path: &str,
        r: &render::Rendered,
        started: Instant,
    ) -> Result<Value, RestError> {
        let mut tries = 0;
        loop {
            match self.send_rendered(method.clone(), path, r).await {
                Err(RestError::Api { code: 10015, .. }) if started.elapsed() < Duration::from_secs(3) && tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn channel_post(&self, channel: &str, r: &render::Rendered) -> Outcome {
        match self.send_rendered(Method::POST, &format!("/channels/{channel}/messages"), r).await {
            Ok(m) => Outcome::Sent {
                message_ref: Some(
                    MessageRef::Channel { channel: channel.into(), message: m["id"].as_str().unwrap_or("").into() }
                        .render(),
                ),
            },
            Err(e @ RestError::Api { code: 50013 | 50001, .. }) => {
                self.inner.denied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(channel.to_string());
                Outcome::Permanent(format!(
                    "missing permissions in Discord channel {channel} ({e}): the server must let the bot view the \
                     channel, send messages, embed links and attach files"
                ))
            }
            Err(e) => outcome_of(&e),
        }
    }

    /// Sends a note through an interaction (toasts, errors): into the
    /// deferred response while it is unused (unless `ephemeral`), else as an
    /// ephemeral follow-up.
    /// Returns whether Discord took it.
    pub(crate) async fn note(&self, interaction: &str, text: &str, ephemeral: bool) -> bool {
        let Some(sess) = self.session(interaction) else { return false };
        let claimed = !ephemeral && {
            let mut s = self.inner.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match s.by_id.get_mut(interaction) {
                Some(x) if x.original_free => {
                    x.original_free = false;
                    true
                }
                _ => false,
            }
        };
        let r = render::Rendered { payload: render::note(text, !claimed), files: vec![] };
        let res = if claimed {
            let path = format!("{}/messages/@original", self.webhook_path(&sess.token));
            self.webhook_call(Method::PATCH, &path, &r, sess.started).await
        } else {
            self.webhook_call(Method::POST, &format!("{}?wait=true", self.webhook_path(&sess.token)), &r, sess.started)
                .await
        };
        match res {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "Discord note not delivered");
                false
            }
        }
    }
}

#[async_trait::async_trait]
impl Platform for Discord {
    fn name(&self) -> &str {
        "discord"
    }

    /// Slash commands, buttons, select menus and modals: typed text never reaches the bot.
    fn style(&self) -> station_flows::ChatStyle {
        station_flows::ChatStyle::Interactions
    }

    /// Private views are ephemeral messages of their interaction.
    fn delivers_privately(&self) -> bool {
        true
    }

    async fn deliver(&self, conversation: &Conversation, out: &Outgoing) -> Outcome {
        let outcome = self.deliver_inner(conversation, out).await;
        if let Outcome::Permanent(why) = &outcome {
            tracing::warn!(conversation = %conversation.key(), delivery = %out.delivery_id, %why, "Discord message not delivered");
        }
        outcome
    }
}

impl Discord {
    /// A private view ([`station_flows::View::private`]): always an ephemeral
    /// message of the interaction that asked (in DMs and servers alike) —
    /// the ephemeral deferred response, else an ephemeral follow-up (a public
    /// "thinking…" left by the deferral is told where the answer went). With
    /// no live interaction it is refused, never posted in the channel.
    async fn deliver_private(
        &self,
        conversation: &Conversation,
        out: &Outgoing,
        rendered: render::Rendered,
    ) -> Outcome {
        // A personal view (no secret) with no interaction to carry it is an
        // ordinary message; a private one is refused.
        let personal_only = !out.view.private;
        let channel = channel_of(&conversation.chat).to_string();
        let mut rendered = rendered;
        rendered.payload["flags"] = serde_json::json!(64);
        // A card changed by a button on it: the press's own answer edits it.
        if let Some(MessageRef::Interaction { channel: ch, message, .. }) =
            out.replace.as_deref().and_then(MessageRef::parse)
            && let Some(outcome) = self.edit_through_component(&conversation.chat, &ch, &message, &rendered).await
        {
            return outcome;
        }
        if let Some(MessageRef::Interaction { interaction, message, .. }) =
            out.replace.as_deref().and_then(MessageRef::parse)
            && let Some(sess) = self.session(&interaction)
        {
            let path = format!("{}/messages/{message}", self.webhook_path(&sess.token));
            return match self.webhook_call(Method::PATCH, &path, &rendered, sess.started).await {
                Ok(_) => Outcome::Sent { message_ref: out.replace.clone() },
                Err(e) => outcome_of(&e),
            };
        }
        if out.kind == station_flows::DeliveryKind::Message
            && matches!(out.replace.as_deref().and_then(MessageRef::parse), Some(MessageRef::Interaction { .. }))
        {
            // An ephemeral card no live interaction reaches (its buttons
            // taken away after 15 minutes): it stays as it is rather than
            // coming back as a new message.
            tracing::debug!(delivery = %out.delivery_id, "ephemeral card out of reach; left as it is");
            return Outcome::Sent { message_ref: out.replace.clone() };
        }
        let Some((iid, sess, original_free)) = self.claim_original(&conversation.chat) else {
            if personal_only {
                let mut public = rendered;
                public.payload.as_object_mut().map(|p| p.remove("flags"));
                return self.channel_post(&channel, &public).await;
            }
            return Outcome::Permanent(
                "a private message can only be sent through the interaction that asked for it, and it has \
                 expired; not posted in the channel"
                    .into(),
            );
        };
        let res = if original_free && sess.ephemeral {
            let path = format!("{}/messages/@original", self.webhook_path(&sess.token));
            self.webhook_call(Method::PATCH, &path, &rendered, sess.started).await
        } else {
            if original_free && personal_only {
                // The public "thinking…" of a command refused or answered
                // privately goes away rather than pointing at the answer.
                let path = format!("{}/messages/@original", self.webhook_path(&sess.token));
                if let Err(e) = self.inner.rest.call(Method::DELETE, &path, Body::Empty).await {
                    tracing::debug!(error = %e, "could not remove the public deferred response");
                }
            } else if original_free {
                let note = render::Rendered {
                    payload: render::note("🔒 I sent you the answer privately: only you can see it.", false),
                    files: vec![],
                };
                let path = format!("{}/messages/@original", self.webhook_path(&sess.token));
                if let Err(e) = self.webhook_call(Method::PATCH, &path, &note, sess.started).await {
                    tracing::debug!(error = %e, "could not replace the public deferred response");
                }
            }
            let path = format!("{}?wait=true", self.webhook_path(&sess.token));
            self.webhook_call(Method::POST, &path, &rendered, sess.started).await
        };
        match res {
            Ok(m) => {
                let message = m["id"].as_str().unwrap_or("").to_string();
                Outcome::Sent {
                    message_ref: Some(MessageRef::Interaction { interaction: iid, channel, message }.render()),
                }
            }
            Err(e) if token_gone(&e) && personal_only => {
                let mut public = rendered_again(&self.inner.station, out, &self.inner.modals).await;
                public.payload.as_object_mut().map(|p| p.remove("flags"));
                self.channel_post(&channel, &public).await
            }
            Err(e) if token_gone(&e) => Outcome::Permanent(format!(
                "a private message can only be sent through its interaction, whose token is no longer valid ({e}); \
                 not posted in the channel"
            )),
            Err(e) => {
                if original_free && sess.ephemeral {
                    self.release_original(&iid);
                }
                outcome_of(&e)
            }
        }
    }

    async fn deliver_inner(&self, conversation: &Conversation, out: &Outgoing) -> Outcome {
        let channel = channel_of(&conversation.chat).to_string();
        let rendered = render::render(&self.inner.station, &out.view, &self.inner.modals).await;
        // Secrets always, and the asker's own things in a server channel, go
        // as ephemeral messages; in a DM everything is just a message.
        if out.view.private || (out.view.personal && conversation.group.is_some()) {
            return self.deliver_private(conversation, out, rendered).await;
        }
        // Edits of an earlier message.
        if let Some(r) = out.replace.as_deref().and_then(MessageRef::parse) {
            // A card changed by a button on it (a page, a choice, a setting):
            // the press was answered with a deferred update, and its own
            // `@original` — the card — takes the new view.
            let (ch, mid) = match &r {
                MessageRef::Interaction { channel, message, .. } | MessageRef::Channel { channel, message } => {
                    (channel.clone(), message.clone())
                }
            };
            if let Some(outcome) = self.edit_through_component(&conversation.chat, &ch, &mid, &rendered).await {
                return outcome;
            }
            if let MessageRef::Interaction { interaction, message, .. } = &r
                && let Some(sess) = self.session(interaction)
            {
                let path = format!("{}/messages/{message}", self.webhook_path(&sess.token));
                match self.webhook_call(Method::PATCH, &path, &rendered, sess.started).await {
                    Ok(_) => return Outcome::Sent { message_ref: Some(r.render()) },
                    // A result that cannot take its progress message's place
                    // (the token expired) is posted in the channel instead.
                    Err(e) if token_gone(&e) && out.kind == station_flows::DeliveryKind::Result => {
                        return self.channel_post(&channel, &rendered).await;
                    }
                    Err(e) if token_gone(&e) => {}
                    Err(e) => return outcome_of(&e),
                }
            }
            let (ch, mid) = match &r {
                MessageRef::Interaction { channel, message, .. } | MessageRef::Channel { channel, message } => {
                    (channel.clone(), message.clone())
                }
            };
            match self.send_rendered(Method::PATCH, &format!("/channels/{ch}/messages/{mid}"), &rendered).await {
                Ok(_) => return Outcome::Sent { message_ref: Some(r.render()) },
                // The message is gone or not editable this way (ephemeral): send a new one.
                Err(RestError::Api { code: 10008, .. }) => {}
                Err(e @ RestError::Api { code: 50013 | 50001, .. }) => {
                    self.inner.denied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(ch.clone());
                    return Outcome::Permanent(format!("missing permissions in Discord channel {ch}: {e}"));
                }
                Err(e) => return outcome_of(&e),
            }
        }
        // A new message: through the interaction while its token is valid.
        if let Some((iid, sess, original_free)) = self.claim_original(&conversation.chat) {
            let res = if original_free {
                let path = format!("{}/messages/@original", self.webhook_path(&sess.token));
                self.webhook_call(Method::PATCH, &path, &rendered, sess.started).await
            } else {
                let path = format!("{}?wait=true", self.webhook_path(&sess.token));
                self.webhook_call(Method::POST, &path, &rendered, sess.started).await
            };
            match res {
                Ok(m) => {
                    let message = m["id"].as_str().unwrap_or("").to_string();
                    let r = MessageRef::Interaction { interaction: iid, channel: channel.clone(), message };
                    return Outcome::Sent { message_ref: Some(r.render()) };
                }
                Err(e) if token_gone(&e) => {
                    tracing::debug!(error = %e, "interaction token no longer valid; posting in the channel");
                }
                Err(e) => {
                    if original_free {
                        self.release_original(&iid);
                    }
                    return outcome_of(&e);
                }
            }
        }
        self.channel_post(&channel, &rendered).await
    }
}

#[cfg(test)]
mod sessions_tests {
    use super::*;

    fn session(token: &str) -> Session {
        Session { token: token.into(), started: Instant::now(), original_free: true, ephemeral: false, message: None }
    }

    #[test]
    fn each_command_gets_its_own_deferred_response_in_order() {
        let life = Duration::from_secs(900);
        let mut s = Sessions::default();
        // Two commands in one chat before either was answered.
        s.begin("c".into(), "first".into(), session("t1"), life);
        s.begin("c".into(), "second".into(), session("t2"), life);
        s.begin("other".into(), "third".into(), session("t3"), life);
        let (a, _, free) = s.claim("c", life).unwrap();
        assert_eq!((a.as_str(), free), ("first", true), "the first answer goes under the first command");
        let (b, _, free) = s.claim("c", life).unwrap();
        assert_eq!((b.as_str(), free), ("second", true));
        // Later messages are follow-ups of the newest interaction.
        let (c, _, free) = s.claim("c", life).unwrap();
        assert_eq!((c.as_str(), free), ("second", false));
        // A failed send gives its response back for the retry.
        s.release("first");
        assert_eq!(s.claim("c", life).unwrap().0, "first");
        assert_eq!(s.claim("other", life).unwrap().0, "third", "chats apart");
    }

    #[test]
    fn expired_interactions_are_skipped_and_forgotten() {
        let life = Duration::from_millis(50);
        let mut s = Sessions::default();
        s.begin("c".into(), "old".into(), session("t1"), life);
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.claim("c", life).is_none(), "an expired token is never used");
        s.begin("c".into(), "new".into(), session("t2"), life);
        assert_eq!(s.by_chat["c"], vec!["new".to_string()], "the expired one is forgotten");
        assert_eq!(s.claim("c", life).unwrap().0, "new");
    }
}
