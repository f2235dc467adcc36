//! A fake Discord for tests.
//!
//! It serves the slice of Discord's REST API (`/api/v10`) a bot that answers
//! over the HTTP interactions endpoint uses — interaction callbacks, the
//! interaction webhook (original response, follow-ups), channel messages,
//! bulk command registration and a CDN for attachments — with Discord's
//! limits (message and component sizes, command names and options), the
//! 3-second callback window, the 15-minute interaction token lifetime,
//! per-route rate limits with `X-RateLimit-*` headers and 429 answers, and
//! missing-permission errors. It also plays Discord's side of interactions:
//! it signs them with its own Ed25519 key and POSTs them to the bot's
//! interactions endpoint, recording what the bot answered.
//!
//! Control methods on [`FakeDiscord`] read what the bot sent, expire tokens,
//! deny channel permissions and force 429s.

mod server;
pub mod validate;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

pub use server::FakeError;

/// A running fake Discord. Dropping it stops the server.
pub struct FakeDiscord {
    /// Base URL (`http://127.0.0.1:PORT`); the REST API is under `/api/v10`.
    pub url: String,
    state: Arc<Mutex<State>>,
    signing: SigningKey,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The application the fake serves.
pub const APP_ID: &str = "1100000000000000001";
/// The bot token the fake accepts (`Authorization: Bot …`).
pub const BOT_TOKEN: &str = "fake-bot-token";

/// A message as the fake stores it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Snowflake.
    pub id: String,
    /// Channel it is in.
    pub channel_id: String,
    /// How it was created.
    pub source: Source,
    /// Interaction token, for interaction responses and follow-ups.
    pub interaction_token: Option<String>,
    /// Flags (64 = ephemeral).
    pub flags: u64,
    /// Text.
    pub content: String,
    /// Embeds as sent.
    pub embeds: Vec<Value>,
    /// Component rows as sent.
    pub components: Vec<Value>,
    /// Attached files.
    pub files: Vec<File>,
    /// True while a deferred response still shows "thinking…".
    pub deferred: bool,
    /// Number of edits.
    pub edits: u32,
    /// Each version of the message body, oldest first (creation, then every edit).
    pub history: Vec<Value>,
}

impl Message {
    /// Ephemeral (only the invoking user sees it).
    pub fn ephemeral(&self) -> bool {
        self.flags & 64 != 0
    }

    /// Every button's `custom_id` (or url) and label, row by row.
    pub fn buttons(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        for row in &self.components {
            for c in row["components"].as_array().into_iter().flatten() {
                if c["type"] == 2 {
                    let id = c["custom_id"].as_str().or(c["url"].as_str()).unwrap_or("").to_string();
                    out.push((id, c["label"].as_str().unwrap_or("").to_string()));
                }
            }
        }
        out
    }

    /// All text: content, embed titles, descriptions and fields.
    pub fn text(&self) -> String {
        let mut parts = vec![self.content.clone()];
        for e in &self.embeds {
            for key in ["title", "description"] {
                if let Some(s) = e[key].as_str() {
                    parts.push(s.to_string());
                }
            }
            for f in e["fields"].as_array().into_iter().flatten() {
                parts.push(format!("{}: {}", f["name"].as_str().unwrap_or(""), f["value"].as_str().unwrap_or("")));
            }
        }
        parts.join("\n")
    }

    /// The select menus: (custom_id, [(label, value)]).
    pub fn selects(&self) -> Vec<(String, Vec<(String, String)>)> {
        let mut out = vec![];
        for row in &self.components {
            for c in row["components"].as_array().into_iter().flatten() {
                if c["type"] == 3 {
                    let opts = c["options"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|o| {
                            (
                                o["label"].as_str().unwrap_or("").to_string(),
                                o["value"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect();
                    out.push((c["custom_id"].as_str().unwrap_or("").to_string(), opts));
                }
            }
        }
        out
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "channel_id": self.channel_id,
            "type": if self.interaction_token.is_some() { 20 } else { 0 },
            "author": {"id": APP_ID, "username": "station", "bot": true},
            "content": self.content,
            "embeds": self.embeds,
            "components": self.components,
            "flags": self.flags,
            "attachments": self.files.iter().map(|f| json!({
                "id": f.id, "filename": f.filename, "size": f.bytes.len(), "content_type": f.content_type,
                "url": f.url, "proxy_url": f.url,
            })).collect::<Vec<_>>(),
        })
    }
}

/// How a message was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The interaction's original response (callback type 4 or 5).
    Original,
    /// A follow-up through the interaction webhook.
    Followup,
    /// `POST /channels/{id}/messages`.
    Channel,
    /// Put there by the test (a user's message a context-menu command targets).
    User,
}

/// An uploaded file.
#[derive(Debug, Clone)]
pub struct File {
    /// Attachment id.
    pub id: String,
    /// File name.
    pub filename: String,
    /// MIME type as uploaded.
    pub content_type: String,
    /// Bytes.
    pub bytes: Vec<u8>,
    /// CDN URL.
    pub url: String,
}

/// What the bot answered to one interaction.
#[derive(Debug, Clone)]
pub struct Callback {
    /// Response type (1 pong, 4 message, 5 deferred, 6 deferred update, 7 update, 9 modal).
    pub kind: u64,
    /// The response's `data`.
    pub data: Value,
    /// Time from sending the interaction to the answer.
    pub after: Duration,
    /// Whether it came in the HTTP response body (else through the callback endpoint).
    pub in_http_body: bool,
}

/// One request the bot made.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Rate-limit bucket key.
    pub bucket: String,
    /// When it arrived.
    pub at: Instant,
    /// Status answered.
    pub status: u16,
}

/// Who triggers an interaction, and where.
#[derive(Debug, Clone)]
pub struct Actor {
    /// User snowflake.
    pub user_id: String,
    /// Username.
    pub username: String,
    /// Channel snowflake.
    pub channel_id: String,
    /// Server, or `None` in a DM.
    pub guild_id: Option<String>,
    /// The member's permission bits in the channel (guilds only).
    pub permissions: u64,
}

impl Actor {
    /// A member of a server (no special permissions).
    pub fn member(user_id: &str, username: &str, guild_id: &str, channel_id: &str) -> Actor {
        Actor {
            user_id: user_id.into(),
            username: username.into(),
            channel_id: channel_id.into(),
            guild_id: Some(guild_id.into()),
            permissions: 0x800 | 0x400, // send messages, view channel
        }
    }

    /// Someone in a direct message with the bot.
    pub fn dm(user_id: &str, username: &str, channel_id: &str) -> Actor {
        Actor {
            user_id: user_id.into(),
            username: username.into(),
            channel_id: channel_id.into(),
            guild_id: None,
            permissions: 0,
        }
    }

    /// The same actor with the Administrator permission.
    pub fn admin(mut self) -> Actor {
        self.permissions |= 0x8;
        self
    }
}

/// The answer to a sent interaction.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Interaction id.
    pub id: String,
    /// Interaction token (the webhook token).
    pub token: String,
    /// HTTP status of the bot's endpoint.
    pub status: u16,
    /// Body the endpoint answered.
    pub body: Value,
    /// How long the endpoint took.
    pub elapsed: Duration,
}

#[derive(Debug)]
pub(crate) struct Interaction {
    pub token: String,
    pub kind: u64,
    pub sent_at: Instant,
    pub channel_id: String,
    pub callback: Option<Callback>,
    /// The message `@original` refers to (created by the callback, or the component's message).
    pub original: Option<String>,
    pub component_message: Option<String>,
    /// The request as signed and sent: body, signature, timestamp (for replays).
    pub signed: Option<(Vec<u8>, String, String)>,
}

#[derive(Debug)]
pub(crate) struct Forced {
    pub path_contains: String,
    pub remaining: u32,
    pub retry_after: f64,
    pub global: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Bucket {
    pub window_start: Option<Instant>,
    pub used: u32,
}

#[derive(Debug)]
pub(crate) struct State {
    pub token_lifetime: Duration,
    pub callback_window: Duration,
    pub max_file_bytes: usize,
    pub interactions: HashMap<String, Interaction>,
    pub by_token: HashMap<String, String>,
    pub messages: Vec<Message>,
    pub next_id: u64,
    pub global_commands: Vec<Value>,
    pub guild_commands: HashMap<String, Vec<Value>>,
    pub registrations: Vec<(Option<String>, Vec<Value>)>,
    pub denied: HashSet<String>,
    pub forced: Vec<Forced>,
    pub bucket_limit: u32,
    pub bucket_window: Duration,
    pub buckets: HashMap<String, Bucket>,
    pub blocked: HashMap<String, Instant>,
    pub global_blocked: Option<Instant>,
    pub violations: Vec<String>,
    pub requests: Vec<Request>,
    pub cdn: HashMap<String, File>,
    pub base_url: String,
}

impl State {
    pub(crate) fn snowflake(&mut self) -> String {
        self.next_id += 1;
        format!("{}", 1_200_000_000_000_000_000u64 + self.next_id)
    }

    pub(crate) fn message_mut(&mut self, id: &str) -> Option<&mut Message> {
        self.messages.iter_mut().find(|m| m.id == id)
    }

    pub(crate) fn store_file(&mut self, filename: &str, content_type: &str, bytes: Vec<u8>) -> File {
        let id = self.snowflake();
        let url = format!("{}/attachments/{id}/{filename}", self.base_url);
        let f = File { id: id.clone(), filename: filename.into(), content_type: content_type.into(), bytes, url };
        self.cdn.insert(id, f.clone());
        f
    }
}

impl FakeDiscord {
    /// Starts the fake on 127.0.0.1 with a fresh signing key; panics if it cannot bind.
    pub async fn start() -> FakeDiscord {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake discord");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Mutex::new(State {
            token_lifetime: Duration::from_secs(15 * 60),
            callback_window: Duration::from_secs(3),
            max_file_bytes: 10 * 1024 * 1024,
            interactions: HashMap::new(),
            by_token: HashMap::new(),
            messages: vec![],
            next_id: 0,
            global_commands: vec![],
            guild_commands: HashMap::new(),
            registrations: vec![],
            denied: HashSet::new(),
            forced: vec![],
            bucket_limit: 1000,
            bucket_window: Duration::from_secs(1),
            buckets: HashMap::new(),
            blocked: HashMap::new(),
            global_blocked: None,
            violations: vec![],
            requests: vec![],
            cdn: HashMap::new(),
            base_url: url.clone(),
        }));
        let server = tokio::spawn(server::serve(state.clone(), listener));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let secret: [u8; 32] = rand::random();
        FakeDiscord {
            url,
            state,
            signing: SigningKey::from_bytes(&secret),
            http: reqwest::Client::builder().build().expect("http client"),
            server,
        }
    }

    /// The REST base URL a bot is configured with (`…/api/v10`).
    pub fn api_url(&self) -> String {
        format!("{}/api/v10", self.url)
    }

    /// The application's public key, hex (what the bot verifies signatures with).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // -- control ---------------------------------------------------------

    /// How long interaction tokens stay valid (Discord: 15 minutes).
    pub fn set_token_lifetime(&self, d: Duration) {
        self.lock().token_lifetime = d;
    }

    /// Requests per bucket per window before 429s (default 1000 per second).
    pub fn set_bucket_limit(&self, limit: u32, window: Duration) {
        let mut s = self.lock();
        s.bucket_limit = limit;
        s.bucket_window = window;
    }

    /// Largest accepted upload per file (default 10 MiB).
    pub fn set_max_file_bytes(&self, n: usize) {
        self.lock().max_file_bytes = n;
    }

    /// Expires every interaction token issued so far.
    pub fn expire_tokens(&self) {
        let mut s = self.lock();
        let long_ago =
            Instant::now().checked_sub(s.token_lifetime + Duration::from_secs(1)).unwrap_or_else(Instant::now);
        for i in s.interactions.values_mut() {
            i.sent_at = long_ago;
        }
    }

    /// The bot lacks Send Messages in this channel: channel posts and edits get 403 (50013).
    pub fn deny_channel(&self, channel_id: &str) {
        self.lock().denied.insert(channel_id.into());
    }

    /// The next `times` requests whose path contains `path_contains` get a 429
    /// with `retry_after` seconds (global if `global`).
    pub fn force_429(&self, path_contains: &str, times: u32, retry_after: f64, global: bool) {
        self.lock().forced.push(Forced { path_contains: path_contains.into(), remaining: times, retry_after, global });
    }

    /// Requests that arrived while their bucket (or the whole API) was
    /// limited: each would have been a 429 the bot should have waited out.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Every request the bot made, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    // -- reading ---------------------------------------------------------

    /// Global commands as last registered.
    pub fn global_commands(&self) -> Vec<Value> {
        self.lock().global_commands.clone()
    }

    /// A server's commands as last registered.
    pub fn guild_commands(&self, guild_id: &str) -> Vec<Value> {
        self.lock().guild_commands.get(guild_id).cloned().unwrap_or_default()
    }

    /// Every accepted bulk overwrite: (guild, commands).
    pub fn registrations(&self) -> Vec<(Option<String>, Vec<Value>)> {
        self.lock().registrations.clone()
    }

    /// What the bot answered to an interaction.
    pub fn callback(&self, interaction_id: &str) -> Option<Callback> {
        self.lock().interactions.get(interaction_id).and_then(|i| i.callback.clone())
    }

    /// The message `@original` refers to for an interaction.
    pub fn original(&self, interaction_id: &str) -> Option<Message> {
        let s = self.lock();
        let id = s.interactions.get(interaction_id)?.original.clone()?;
        s.messages.iter().find(|m| m.id == id).cloned()
    }

    /// Follow-ups sent with an interaction's token.
    pub fn followups(&self, interaction_id: &str) -> Vec<Message> {
        let s = self.lock();
        let Some(token) = s.interactions.get(interaction_id).map(|i| i.token.clone()) else { return vec![] };
        s.messages
            .iter()
            .filter(|m| m.source == Source::Followup && m.interaction_token.as_deref() == Some(&token))
            .cloned()
            .collect()
    }

    /// Every message in a channel the bot created (responses, follow-ups, posts), oldest first.
    pub fn channel_messages(&self, channel_id: &str) -> Vec<Message> {
        self.lock()
            .messages
            .iter()
            .filter(|m| m.channel_id == channel_id && m.source != Source::User)
            .cloned()
            .collect()
    }

    /// One message by id.
    pub fn message(&self, id: &str) -> Option<Message> {
        self.lock().messages.iter().find(|m| m.id == id).cloned()
    }

    /// Waits until `f` finds something among all messages, or panics after `timeout`.
    /// `f` may call the fake's other methods.
    pub async fn wait_for<T>(&self, timeout: Duration, what: &str, f: impl Fn(&[Message]) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            // Cloned so `f` may call other methods of the fake (which lock it too).
            let messages = self.lock().messages.clone();
            if let Some(t) = f(&messages) {
                return t;
            }
            if Instant::now() > deadline {
                let dump: Vec<String> = self
                    .lock()
                    .messages
                    .iter()
                    .map(|m| format!("{} {:?} {:?}: {}", m.id, m.source, m.deferred, m.text()))
                    .collect();
                panic!("timed out waiting for {what}; messages:\n{}", dump.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    // -- playing Discord's side -----------------------------------------

    /// Puts a file on the CDN (as if a user uploaded it) and returns its attachment object.
    pub fn upload(&self, filename: &str, content_type: &str, bytes: Vec<u8>) -> Value {
        let f = self.lock().store_file(filename, content_type, bytes);
        json!({"id": f.id, "filename": f.filename, "size": f.bytes.len(), "url": f.url, "proxy_url": f.url,
               "content_type": f.content_type})
    }

    /// Puts a user's message with attachments in a channel (for context-menu commands); returns it as JSON.
    pub fn user_message(&self, actor: &Actor, content: &str, attachments: Vec<Value>) -> Value {
        let mut s = self.lock();
        let id = s.snowflake();
        let m = json!({"id": id, "channel_id": actor.channel_id, "content": content, "attachments": attachments,
                       "author": {"id": actor.user_id, "username": actor.username}, "embeds": [], "components": []});
        s.messages.push(Message {
            id,
            channel_id: actor.channel_id.clone(),
            source: Source::User,
            interaction_token: None,
            flags: 0,
            content: content.into(),
            embeds: vec![],
            components: vec![],
            files: vec![],
            deferred: false,
            edits: 0,
            history: vec![m.clone()],
        });
        m
    }

    fn base(&self, actor: &Actor, kind: u64, data: Value) -> Value {
        let mut v = json!({
            "application_id": APP_ID,
            "type": kind,
            "version": 1,
            "channel_id": actor.channel_id,
            "channel": {"id": actor.channel_id, "type": if actor.guild_id.is_some() { 0 } else { 1 }},
            "app_permissions": "2248473465835073",
            "locale": "en-US",
            "data": data,
        });
        let user = json!({"id": actor.user_id, "username": actor.username, "global_name": actor.username});
        match &actor.guild_id {
            Some(g) => {
                v["guild_id"] = json!(g);
                v["member"] = json!({"user": user, "permissions": actor.permissions.to_string(), "roles": []});
            }
            None => v["user"] = user,
        }
        v
    }

    /// A PING (Discord's endpoint check).
    pub fn ping(&self) -> Value {
        json!({"type": 1, "application_id": APP_ID, "version": 1})
    }

    /// A slash command with options (`[{name, type, value}]`) and resolved attachments.
    pub fn slash(&self, actor: &Actor, name: &str, options: Value, attachments: &[Value]) -> Value {
        let mut data = json!({"id": "1", "name": name, "type": 1, "options": options});
        if !attachments.is_empty() {
            let map: serde_json::Map<String, Value> =
                attachments.iter().map(|a| (a["id"].as_str().unwrap_or("").to_string(), a.clone())).collect();
            data["resolved"] = json!({"attachments": map});
        }
        self.base(actor, 2, data)
    }

    /// A message context-menu command on `message` (from [`FakeDiscord::user_message`]).
    pub fn message_command(&self, actor: &Actor, name: &str, message: &Value) -> Value {
        let mid = message["id"].as_str().unwrap_or("").to_string();
        self.base(
            actor,
            2,
            json!({"id": "2", "name": name, "type": 3, "target_id": mid, "resolved": {"messages": {mid.clone(): message}}}),
        )
    }

    /// A button press (or, with `values`, a select-menu choice) on a bot message.
    pub fn component(&self, actor: &Actor, message_id: &str, custom_id: &str, values: Option<Vec<String>>) -> Value {
        let msg = self.message(message_id).map(|m| m.to_json()).unwrap_or(json!({"id": message_id}));
        let data = match values {
            Some(v) => json!({"custom_id": custom_id, "component_type": 3, "values": v}),
            None => json!({"custom_id": custom_id, "component_type": 2}),
        };
        let mut v = self.base(actor, 3, data);
        v["message"] = msg;
        v
    }

    /// A modal submission with text-input values by custom id.
    pub fn modal_submit(&self, actor: &Actor, custom_id: &str, values: &[(&str, &str)]) -> Value {
        let rows: Vec<Value> = values
            .iter()
            .map(|(id, v)| json!({"type": 1, "components": [{"type": 4, "custom_id": id, "value": v}]}))
            .collect();
        self.base(actor, 5, json!({"custom_id": custom_id, "components": rows}))
    }

    /// A modal submission from a modal a button of `message_id` opened: Discord
    /// then names that message, and a deferred update (type 6) of the
    /// submission edits it as `@original`.
    pub fn modal_submit_on(&self, actor: &Actor, message_id: &str, custom_id: &str, values: &[(&str, &str)]) -> Value {
        let mut v = self.modal_submit(actor, custom_id, values);
        v["message"] = self.message(message_id).map(|m| m.to_json()).unwrap_or(json!({"id": message_id}));
        v
    }

    /// Signs and POSTs an interaction to the bot's endpoint, recording an
    /// interaction response in the HTTP body as the callback. Fills in `id` and `token`.
    pub async fn send(&self, endpoint: &str, mut interaction: Value) -> Sent {
        let (id, token) = {
            let mut s = self.lock();
            let id = s.snowflake();
            let token = format!("tok-{id}-{}", hex::encode(rand::random::<[u8; 8]>()));
            let component_message = interaction["message"]["id"].as_str().map(str::to_owned);
            s.interactions.insert(
                id.clone(),
                Interaction {
                    token: token.clone(),
                    kind: interaction["type"].as_u64().unwrap_or(0),
                    sent_at: Instant::now(),
                    channel_id: interaction["channel_id"].as_str().unwrap_or("").to_string(),
                    callback: None,
                    original: component_message.clone(),
                    component_message,
                    signed: None,
                },
            );
            s.by_token.insert(token.clone(), id.clone());
            (id, token)
        };
        interaction["id"] = json!(id);
        interaction["token"] = json!(token);
        let body = serde_json::to_vec(&interaction).expect("json");
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let sig = self.sign(&body, &ts);
        if let Some(i) = self.lock().interactions.get_mut(&id) {
            i.signed = Some((body.clone(), sig.clone(), ts.clone()));
        }
        let mut sent = self.send_raw(endpoint, body, &sig, &ts).await;
        if sent.status == 200 && sent.body.get("type").is_some() {
            let mut s = self.lock();
            let _ = server::apply_callback(&mut s, &id, &sent.body, vec![], true, sent.elapsed);
        }
        sent.id = id;
        sent.token = token;
        sent
    }

    /// POSTs bytes with the given signature headers (bad-signature tests).
    pub async fn send_raw(&self, endpoint: &str, body: Vec<u8>, signature_hex: &str, timestamp: &str) -> Sent {
        let started = Instant::now();
        let res = self
            .http
            .post(endpoint)
            .header("content-type", "application/json")
            .header("x-signature-ed25519", signature_hex)
            .header("x-signature-timestamp", timestamp)
            .body(body)
            .send()
            .await
            .expect("bot endpoint reachable");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let elapsed = started.elapsed();
        Sent {
            id: String::new(),
            token: String::new(),
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            elapsed,
        }
    }

    /// Signs `timestamp` + `body` with the application's real key, as Discord
    /// does (`X-Signature-Ed25519`), for requests built by the test (stale
    /// timestamps).
    pub fn sign(&self, body: &[u8], timestamp: &str) -> String {
        let mut signed = timestamp.as_bytes().to_vec();
        signed.extend_from_slice(body);
        hex::encode(self.signing.sign(&signed).to_bytes())
    }

    /// Sends an earlier interaction again, byte for byte with its original
    /// signature and timestamp, as someone who captured it would (a replay).
    pub async fn replay(&self, endpoint: &str, interaction_id: &str) -> Sent {
        let signed = self.lock().interactions.get(interaction_id).and_then(|i| i.signed.clone());
        let (body, sig, ts) = signed.expect("an interaction sent with FakeDiscord::send");
        let mut sent = self.send_raw(endpoint, body, &sig, &ts).await;
        sent.id = interaction_id.to_string();
        sent
    }

    /// Signs `body` with a different key (a forged request).
    pub fn forge_signature(body: &[u8], timestamp: &str) -> String {
        let other = SigningKey::from_bytes(&rand::random());
        let mut signed = timestamp.as_bytes().to_vec();
        signed.extend_from_slice(body);
        hex::encode(other.sign(&signed).to_bytes())
    }
}
