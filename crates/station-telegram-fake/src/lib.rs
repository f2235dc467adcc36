//! A fake Telegram Bot API server for tests.
//!
//! It serves `/bot{token}/{method}` (method names case-insensitive, JSON,
//! form and multipart bodies) and `/file/bot{token}/{path}` on 127.0.0.1,
//! answering with the real API's shapes: `{ok:true,result}` or
//! `{ok:false,error_code,description,parameters:{retry_after}}` with the
//! real descriptions (`Bad Request: message is not modified: …`,
//! `Forbidden: bot was blocked by the user`, `Forbidden: bot can't initiate
//! conversation with a user` for someone seen only in groups who never
//! started a private chat, `Too Many Requests: retry after N`).
//! `getUpdates` long-polls and acknowledges by offset; `setWebhook` switches
//! to delivering updates by POST with `X-Telegram-Bot-Api-Secret-Token`.
//! Limits checked: 64-byte callback data, 4096-character text, 1024-character
//! captions, photo size and dimensions, per-chat / per-group / global flood
//! control (see [`RateLimits`]).
//!
//! Tests drive it through plain methods on [`FakeTelegram`]: users send text,
//! commands, photos, albums and replies, press buttons, block the bot; the
//! test reads what the bot sent per chat (current content, edit history,
//! media, keyboards) and counters of 429s served and limits the bot broke.

mod html;
mod limits;
mod server;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use html::{parse as parse_html, utf16_len};
pub use limits::RateLimits;

/// How a [`FakeTelegram`] starts.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The bot token the server accepts.
    pub token: String,
    /// The bot's username (without `@`).
    pub bot_username: String,
    /// Flood-control limits.
    pub limits: RateLimits,
    /// How long a callback query may wait for `answerCallbackQuery`.
    pub callback_timeout: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            token: "123456:TEST-token_abc".into(),
            bot_username: "station_test_bot".into(),
            limits: RateLimits::default(),
            callback_timeout: Duration::from_secs(15),
        }
    }
}

/// A Telegram user (a person) in the fake.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeUser {
    /// User id (also their private chat's id).
    pub id: i64,
    /// First name.
    pub first_name: String,
    /// Username, if any.
    pub username: Option<String>,
}

impl FakeUser {
    /// A user with an id and a name.
    pub fn new(id: i64, first_name: &str) -> FakeUser {
        FakeUser { id, first_name: first_name.into(), username: Some(first_name.to_lowercase()) }
    }

    fn json(&self) -> Value {
        let mut v = json!({"id": self.id, "is_bot": false, "first_name": self.first_name, "language_code": "en"});
        if let Some(u) = &self.username {
            v["username"] = json!(u);
        }
        v
    }
}

/// A chat in the fake.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeChat {
    /// Chat id (negative for groups).
    pub id: i64,
    /// `private`, `group` or `supergroup`.
    pub kind: String,
    /// Group title.
    pub title: Option<String>,
}

impl FakeChat {
    /// The private chat with a user.
    pub fn private(user: &FakeUser) -> FakeChat {
        FakeChat { id: user.id, kind: "private".into(), title: None }
    }

    /// A supergroup.
    pub fn group(id: i64, title: &str) -> FakeChat {
        assert!(id < 0, "group chat ids are negative");
        FakeChat { id, kind: "supergroup".into(), title: Some(title.into()) }
    }

    fn is_group(&self) -> bool {
        self.kind != "private"
    }
}

/// A file the server holds (uploaded by the bot or sent by a user).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeFile {
    /// The id to reuse or `getFile`.
    pub file_id: String,
    /// Stable unique id.
    pub file_unique_id: String,
    /// Path for `/file/bot{token}/{path}`.
    pub file_path: String,
    /// The bytes.
    pub bytes: Arc<Vec<u8>>,
    /// Pixels (photos).
    pub width: u32,
    /// Pixels (photos).
    pub height: u32,
    /// File name (documents).
    pub file_name: Option<String>,
    /// MIME type (documents).
    pub mime_type: Option<String>,
}

/// One version of a message's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// Text as shown (entities parsed), for text messages.
    pub text: Option<String>,
    /// Text as sent (with markup), for text messages and captions.
    pub raw: Option<String>,
    /// Caption as shown, for media messages.
    pub caption: Option<String>,
    /// Photo.
    pub photo: Option<FakeFile>,
    /// Document.
    pub document: Option<FakeFile>,
    /// Inline keyboard (`reply_markup`) as sent.
    pub reply_markup: Option<Value>,
}

impl Content {
    /// The `callback_data` of every inline button, row by row, with labels.
    pub fn buttons(&self) -> Vec<(String, Option<String>)> {
        let mut out = vec![];
        if let Some(rows) = self.reply_markup.as_ref().and_then(|m| m["inline_keyboard"].as_array()) {
            for row in rows {
                for b in row.as_array().into_iter().flatten() {
                    out.push((
                        b["text"].as_str().unwrap_or_default().to_string(),
                        b["callback_data"].as_str().map(str::to_string),
                    ));
                }
            }
        }
        out
    }
}

/// A message in a chat.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeMessage {
    /// Id within the chat.
    pub message_id: i64,
    /// The chat.
    pub chat_id: i64,
    /// Sent by the bot (else by `from`).
    pub from_bot: bool,
    /// The user who sent it.
    pub from: Option<FakeUser>,
    /// Unix seconds.
    pub date: i64,
    /// Current content.
    pub content: Content,
    /// Earlier versions, oldest first (each edit pushes the previous content).
    pub history: Vec<Content>,
    /// Album id.
    pub media_group_id: Option<String>,
    /// The message this replies to.
    pub reply_to: Option<i64>,
    /// Deleted by the bot.
    pub deleted: bool,
    /// When the fake stored it (benchmarks time replies from it).
    pub sent_at: std::time::Instant,
}

/// An answered (or pending) button press.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRecord {
    /// Query id.
    pub id: String,
    /// Who pressed.
    pub user: i64,
    /// Chat and message of the button.
    pub chat_id: i64,
    /// Message id.
    pub message_id: i64,
    /// The callback data.
    pub data: String,
    /// The `text` of `answerCallbackQuery`, once answered (`Some("")` without text).
    pub answer: Option<String>,
}

/// An error the server answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedError {
    /// Method called.
    pub method: String,
    /// HTTP status / `error_code`.
    pub code: u16,
    /// `description`.
    pub description: String,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FakeStats {
    /// 429 answers served.
    pub served_429: u64,
    /// Requests made while an earlier `retry_after` was still running.
    pub violations: u64,
    /// Requests per method (lower-case).
    pub requests: BTreeMap<String, u64>,
    /// Every error answer (including 429s).
    pub errors: Vec<ServedError>,
    /// Webhook deliveries attempted and how many were refused (non-2xx).
    pub webhook_attempts: u64,
    /// Webhook deliveries refused by the bot.
    pub webhook_refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ChatState {
    pub chat: Option<FakeChat>,
    pub messages: BTreeMap<i64, FakeMessage>,
    pub next_id: i64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub config: FakeConfig,
    pub chats: HashMap<i64, ChatState>,
    pub users: HashMap<i64, FakeUser>,
    pub blocked: HashSet<i64>,
    pub updates: VecDeque<(i64, Value)>,
    pub next_update_id: i64,
    pub poll_generation: u64,
    pub webhook: Option<(String, Option<String>)>,
    pub webhook_last_error: Option<String>,
    pub files: HashMap<String, FakeFile>,
    pub next_file: u64,
    pub callbacks: HashMap<String, (CallbackRecord, Instant)>,
    pub callback_order: Vec<String>,
    /// Command menus by scope key (see [`FakeTelegram::menu`]).
    pub commands: BTreeMap<String, Vec<(String, String)>>,
    pub limiter: limits::Limiter,
    pub stats: FakeStats,
    /// Error codes the next calls of a method (lower-case) answer, in order.
    pub failures: HashMap<String, VecDeque<u16>>,
    pub next_group_id: u64,
}

pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    /// Bumped on every new update, webhook change and `getUpdates` start.
    pub changed: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

impl Inner {
    pub fn chat_mut(&mut self, chat: &FakeChat) -> &mut ChatState {
        let c = self.chats.entry(chat.id).or_insert_with(|| ChatState { next_id: 1, ..Default::default() });
        if c.chat.is_none() {
            c.chat = Some(chat.clone());
        }
        c
    }

    pub fn new_file(&mut self, bytes: Vec<u8>, folder: &str, ext: &str) -> FakeFile {
        self.next_file += 1;
        let n = self.next_file;
        let (width, height) = image_dims(&bytes).unwrap_or((0, 0));
        let f = FakeFile {
            file_id: format!("AgAC{n:06}{}", random_suffix()),
            file_unique_id: format!("AQAD{n:06}"),
            file_path: format!("{folder}/file_{n}.{ext}"),
            bytes: Arc::new(bytes),
            width,
            height,
            file_name: None,
            mime_type: None,
        };
        self.files.insert(f.file_id.clone(), f.clone());
        f
    }

    pub fn push_update(&mut self, body: Value) -> i64 {
        let id = self.next_update_id;
        self.next_update_id += 1;
        let mut u = json!({"update_id": id});
        for (k, v) in body.as_object().expect("update body is an object") {
            u[k] = v.clone();
        }
        self.updates.push_back((id, u));
        id
    }

    pub fn message_json(&self, m: &FakeMessage, nested: bool) -> Value {
        let chat = self.chats.get(&m.chat_id).and_then(|c| c.chat.clone()).expect("message in known chat");
        let mut chat_json = json!({"id": chat.id, "type": chat.kind});
        if let Some(t) = &chat.title {
            chat_json["title"] = json!(t);
        } else if let Some(u) = self.users.get(&chat.id) {
            chat_json["first_name"] = json!(u.first_name);
            if let Some(un) = &u.username {
                chat_json["username"] = json!(un);
            }
        }
        let from = if m.from_bot {
            json!({"id": self.bot_id(), "is_bot": true, "first_name": "Station", "username": self.config.bot_username})
        } else {
            m.from.as_ref().map(FakeUser::json).unwrap_or(Value::Null)
        };
        let mut v = json!({"message_id": m.message_id, "date": m.date, "chat": chat_json, "from": from});
        let c = &m.content;
        if let Some(t) = &c.text {
            v["text"] = json!(t);
            if !m.from_bot && t.starts_with('/') {
                let len = t.split_whitespace().next().map(utf16_len).unwrap_or(0);
                v["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
            }
        }
        if let Some(t) = &c.caption {
            v["caption"] = json!(t);
            if !m.from_bot && t.starts_with('/') {
                let len = t.split_whitespace().next().map(utf16_len).unwrap_or(0);
                v["caption_entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
            }
        }
        if let Some(p) = &c.photo {
            // The real server offers several sizes, the largest last.
            let thumb_w = p.width.min(90);
            let thumb_h = if p.width == 0 { 0 } else { (p.height as u64 * thumb_w as u64 / p.width as u64) as u32 };
            v["photo"] = json!([
                {"file_id": format!("{}_t", p.file_id), "file_unique_id": format!("{}_t", p.file_unique_id),
                 "width": thumb_w, "height": thumb_h, "file_size": p.bytes.len().min(2000)},
                {"file_id": p.file_id, "file_unique_id": p.file_unique_id, "width": p.width, "height": p.height,
                 "file_size": p.bytes.len()}
            ]);
        }
        if let Some(d) = &c.document {
            v["document"] = json!({"file_id": d.file_id, "file_unique_id": d.file_unique_id,
                "file_name": d.file_name, "mime_type": d.mime_type, "file_size": d.bytes.len()});
        }
        if let Some(g) = &m.media_group_id {
            v["media_group_id"] = json!(g);
        }
        if let Some(k) = &c.reply_markup {
            v["reply_markup"] = k.clone();
        }
        if !nested
            && let Some(r) = m.reply_to
            && let Some(orig) = self.chats.get(&m.chat_id).and_then(|c| c.messages.get(&r))
        {
            v["reply_to_message"] = self.message_json(orig, true);
        }
        if !m.history.is_empty() {
            v["edit_date"] = json!(m.date);
        }
        v
    }

    pub fn bot_id(&self) -> i64 {
        self.config.token.split(':').next().and_then(|s| s.parse().ok()).unwrap_or(1)
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..12).map(|_| char::from(b'a' + r.random_range(0..26u8))).collect()
}

pub(crate) fn image_dims(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A running fake Bot API server. Dropping it stops the server.
pub struct FakeTelegram {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeTelegram {
    /// Starts a server with default settings on a free port of 127.0.0.1.
    pub async fn start() -> FakeTelegram {
        Self::start_with(FakeConfig::default()).await
    }

    /// Starts a server with `config` on a free port of 127.0.0.1.
    pub async fn start_with(config: FakeConfig) -> FakeTelegram {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake Telegram");
        Self::serve(listener, config)
    }

    /// Starts a server with `config` on `addr` (a test of a bot that found
    /// the API unreachable binds a port, frees it, then starts the fake there).
    pub async fn start_at(addr: SocketAddr, config: FakeConfig) -> std::io::Result<FakeTelegram> {
        Ok(Self::serve(tokio::net::TcpListener::bind(addr).await?, config))
    }

    fn serve(listener: tokio::net::TcpListener, config: FakeConfig) -> FakeTelegram {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let limiter = limits::Limiter::new(config.limits.clone());
        let inner = Inner {
            chats: HashMap::new(),
            users: HashMap::new(),
            blocked: HashSet::new(),
            updates: VecDeque::new(),
            next_update_id: 700_000_001,
            poll_generation: 0,
            webhook: None,
            webhook_last_error: None,
            files: HashMap::new(),
            next_file: 0,
            callbacks: HashMap::new(),
            callback_order: vec![],
            commands: BTreeMap::new(),
            limiter,
            stats: FakeStats::default(),
            failures: HashMap::new(),
            next_group_id: 13_000_000_000_000_000,
            config,
        };
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared { inner: Mutex::new(inner), changed });
        let addr = listener.local_addr().expect("local addr");
        let app = server::router(shared.clone());
        let http = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let hook = tokio::spawn(server::webhook_loop(shared.clone()));
        FakeTelegram { shared, addr, tasks: vec![http, hook] }
    }

    /// The base URL to configure as the Bot API URL (`http://127.0.0.1:PORT`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The accepted token.
    pub fn token(&self) -> String {
        self.shared.lock().config.token.clone()
    }

    /// The bot's username.
    pub fn bot_username(&self) -> String {
        self.shared.lock().config.bot_username.clone()
    }

    fn user_message(
        &self,
        chat: &FakeChat,
        from: &FakeUser,
        content: Content,
        reply_to: Option<i64>,
        group: Option<String>,
    ) -> i64 {
        let mut inner = self.shared.lock();
        inner.users.insert(from.id, from.clone());
        let c = inner.chat_mut(chat);
        let id = c.next_id;
        c.next_id += 1;
        let m = FakeMessage {
            message_id: id,
            chat_id: chat.id,
            from_bot: false,
            from: Some(from.clone()),
            date: now_secs(),
            content,
            history: vec![],
            media_group_id: group,
            reply_to,
            deleted: false,
            sent_at: std::time::Instant::now(),
        };
        c.messages.insert(id, m.clone());
        let json = inner.message_json(&m, false);
        inner.push_update(json!({"message": json}));
        drop(inner);
        self.shared.bump();
        id
    }

    fn text_content(text: &str) -> Content {
        Content {
            text: Some(text.into()),
            raw: Some(text.into()),
            caption: None,
            photo: None,
            document: None,
            reply_markup: None,
        }
    }

    /// A user sends text (a command when it starts with `/`). Returns the message id.
    pub fn send_text(&self, chat: &FakeChat, from: &FakeUser, text: &str) -> i64 {
        self.user_message(chat, from, Self::text_content(text), None, None)
    }

    /// A user replies to message `reply_to` with text.
    pub fn send_reply(&self, chat: &FakeChat, from: &FakeUser, reply_to: i64, text: &str) -> i64 {
        self.user_message(chat, from, Self::text_content(text), Some(reply_to), None)
    }

    fn photo_content(&self, bytes: Vec<u8>, caption: Option<&str>) -> Content {
        let file = self.shared.lock().new_file(bytes, "photos", "jpg");
        Content {
            text: None,
            raw: caption.map(str::to_string),
            caption: caption.map(str::to_string),
            photo: Some(file),
            document: None,
            reply_markup: None,
        }
    }

    /// A user sends a photo (any image bytes) with an optional caption.
    pub fn send_photo(&self, chat: &FakeChat, from: &FakeUser, bytes: Vec<u8>, caption: Option<&str>) -> i64 {
        let content = self.photo_content(bytes, caption);
        self.user_message(chat, from, content, None, None)
    }

    /// A user sends an album; the caption rides on the first photo, as clients do.
    pub fn send_album(
        &self,
        chat: &FakeChat,
        from: &FakeUser,
        photos: Vec<Vec<u8>>,
        caption: Option<&str>,
    ) -> Vec<i64> {
        let group = {
            let mut inner = self.shared.lock();
            inner.next_group_id += 1;
            inner.next_group_id.to_string()
        };
        photos
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| {
                let content = self.photo_content(bytes, if i == 0 { caption } else { None });
                self.user_message(chat, from, content, None, Some(group.clone()))
            })
            .collect()
    }

    /// A user presses the inline button with `callback_data` under message
    /// `message_id` (any data, so stale or forged presses can be tested).
    /// Returns the callback query id.
    pub fn press_data(&self, chat: &FakeChat, from: &FakeUser, message_id: i64, data: &str) -> String {
        let mut inner = self.shared.lock();
        inner.users.insert(from.id, from.clone());
        let msg = inner.chats.get(&chat.id).and_then(|c| c.messages.get(&message_id)).cloned();
        let message = match &msg {
            Some(m) => inner.message_json(m, false),
            None => json!({"message_id": message_id, "date": 0, "chat": {"id": chat.id, "type": chat.kind}}),
        };
        let id = format!("{}{}", from.id, random_suffix());
        let rec = CallbackRecord {
            id: id.clone(),
            user: from.id,
            chat_id: chat.id,
            message_id,
            data: data.into(),
            answer: None,
        };
        inner.callbacks.insert(id.clone(), (rec, Instant::now()));
        inner.callback_order.push(id.clone());
        inner.push_update(json!({"callback_query": {
            "id": id, "from": from.json(), "message": message,
            "chat_instance": format!("ci{}", chat.id.unsigned_abs()), "data": data
        }}));
        drop(inner);
        self.shared.bump();
        id
    }

    /// A user presses the button labelled `label` (first match) under a bot
    /// message. Panics when there is no such button: the test is wrong.
    pub fn press(&self, chat: &FakeChat, from: &FakeUser, message_id: i64, label: &str) -> String {
        let data = {
            let inner = self.shared.lock();
            let m = inner
                .chats
                .get(&chat.id)
                .and_then(|c| c.messages.get(&message_id))
                .unwrap_or_else(|| panic!("no message {message_id} in chat {}", chat.id));
            m.content
                .buttons()
                .into_iter()
                .find(|(l, _)| l.contains(label))
                .and_then(|(_, d)| d)
                .unwrap_or_else(|| panic!("no button {label:?} on message {message_id}: {:?}", m.content.buttons()))
        };
        self.press_data(chat, from, message_id, &data)
    }

    /// The user blocks the bot: sends to their private chat get 403.
    pub fn block(&self, user_id: i64) {
        self.shared.lock().blocked.insert(user_id);
    }

    /// The user unblocks the bot.
    pub fn unblock(&self, user_id: i64) {
        self.shared.lock().blocked.remove(&user_id);
    }

    /// Makes the bot a member of `chat` without any update (an operators'
    /// group it was added to long ago), so it may post there.
    pub fn add_chat(&self, chat: &FakeChat) {
        self.shared.lock().chat_mut(chat);
    }

    /// Every message in a chat (the users' and the bot's), by id.
    pub fn messages(&self, chat_id: i64) -> Vec<FakeMessage> {
        self.shared.lock().chats.get(&chat_id).map(|c| c.messages.values().cloned().collect()).unwrap_or_default()
    }

    /// The bot's messages in a chat that are not deleted, by id.
    pub fn bot_messages(&self, chat_id: i64) -> Vec<FakeMessage> {
        self.messages(chat_id).into_iter().filter(|m| m.from_bot && !m.deleted).collect()
    }

    /// How many messages the bot has in a chat (not deleted), without
    /// copying them: cheap enough to poll for many chats under load.
    pub fn bot_message_count(&self, chat_id: i64) -> usize {
        self.shared
            .lock()
            .chats
            .get(&chat_id)
            .map_or(0, |c| c.messages.values().filter(|m| m.from_bot && !m.deleted).count())
    }

    /// Every button press so far, with its answer once answered.
    pub fn callbacks(&self) -> Vec<CallbackRecord> {
        let inner = self.shared.lock();
        inner.callback_order.iter().filter_map(|id| inner.callbacks.get(id).map(|(r, _)| r.clone())).collect()
    }

    /// The command menu as last set with `setMyCommands` (default scope).
    pub fn commands(&self) -> Vec<(String, String)> {
        self.menu("default").unwrap_or_default()
    }

    /// The menu set for one scope, by its key: `default`,
    /// `all_private_chats`, `all_group_chats`, `all_chat_administrators`,
    /// `chat:<chat_id>`, `chat_administrators:<chat_id>`,
    /// `chat_member:<chat_id>:<user_id>`; with a `language_code`, the key
    /// ends in `|<code>`. `None` when none is set for it.
    pub fn menu(&self, scope: &str) -> Option<Vec<(String, String)>> {
        self.shared.lock().commands.get(scope).cloned()
    }

    /// Every menu set, by scope key.
    pub fn menus(&self) -> BTreeMap<String, Vec<(String, String)>> {
        self.shared.lock().commands.clone()
    }

    /// The menu `user_id` sees in chat `chat_id` (no language), resolved as
    /// Telegram does: the narrowest scope that has one, down to the default
    /// (administrator scopes are not modelled: the fake has no chat admins).
    pub fn menu_seen(&self, chat_id: i64, user_id: i64) -> Vec<(String, String)> {
        let keys = if chat_id > 0 {
            vec![format!("chat:{chat_id}"), "all_private_chats".into(), "default".into()]
        } else {
            vec![
                format!("chat_member:{chat_id}:{user_id}"),
                format!("chat:{chat_id}"),
                "all_group_chats".into(),
                "default".into(),
            ]
        };
        let inner = self.shared.lock();
        keys.iter().find_map(|k| inner.commands.get(k).cloned()).unwrap_or_default()
    }

    /// The next `times` calls of `method` answer with `code` (500, 502, 401 …,
    /// with Telegram's description for it) instead of being served.
    pub fn fail_next(&self, method: &str, times: usize, code: u16) {
        let mut inner = self.shared.lock();
        inner.failures.entry(method.to_ascii_lowercase()).or_default().extend(std::iter::repeat_n(code, times));
    }

    /// Counters and served errors.
    pub fn stats(&self) -> FakeStats {
        let inner = self.shared.lock();
        let mut s = inner.stats.clone();
        s.served_429 = inner.limiter.served_429;
        s.violations = inner.limiter.violations;
        s
    }

    /// The webhook URL and secret, when one is set.
    pub fn webhook(&self) -> Option<(String, Option<String>)> {
        self.shared.lock().webhook.clone()
    }

    /// Updates not yet acknowledged (by `getUpdates` offset or a 2xx webhook answer).
    pub fn pending_updates(&self) -> usize {
        self.shared.lock().updates.len()
    }

    /// A file's bytes by id (bot uploads and user photos).
    pub fn file(&self, file_id: &str) -> Option<FakeFile> {
        self.shared.lock().files.get(file_id).cloned()
    }

    /// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
    pub async fn wait_for<T>(&self, timeout: Duration, mut f: impl FnMut(&FakeTelegram) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
