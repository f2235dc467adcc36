//! Receiving: updates are stored in the core's inbox (one row each, keyed by
//! update id, laned by chat) before Telegram is told they arrived — the next `getUpdates` offset, or the
//! webhook's 200 — then processed in update order within a chat and
//! concurrently across chats.

use std::collections::HashSet;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use station_core::AccountRow;
use station_flows::{Conversation, Input};
use tokio_util::sync::CancellationToken;

use crate::{TelegramBot, WEBHOOK_PATH};

/// The ordering key of an update: its chat (or its sender, without a chat).
fn chat_key(update: &Value) -> String {
    let chat = update["message"]["chat"]["id"]
        .as_i64()
        .or_else(|| update["edited_message"]["chat"]["id"].as_i64())
        .or_else(|| update["callback_query"]["message"]["chat"]["id"].as_i64());
    match chat {
        Some(c) => format!("chat:{c}"),
        None => {
            let from = update["callback_query"]["from"]["id"].as_i64().unwrap_or(0);
            format!("user:{from}")
        }
    }
}

async fn webhook(State(bot): State<TelegramBot>, headers: HeaderMap, body: axum::body::Bytes) -> impl IntoResponse {
    let given = headers.get("x-telegram-bot-api-secret-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !station_core::identity::same_secret(given.as_bytes(), bot.inner.secret.as_bytes()) {
        tracing::warn!("Telegram webhook call without the right secret token refused");
        return (StatusCode::UNAUTHORIZED, "wrong or missing X-Telegram-Bot-Api-Secret-Token").into_response();
    }
    let Ok(update) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not a JSON update").into_response();
    };
    match bot.store_update(&update).await {
        Ok(()) => StatusCode::OK.into_response(),
        // Not an update Telegram sends: a 5xx would make it deliver it forever.
        Err(UpdateError::Malformed) => {
            tracing::warn!("Telegram webhook body without update_id acknowledged and dropped");
            StatusCode::OK.into_response()
        }
        // Telegram delivers it again later.
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Why an update could not be stored or processed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpdateError {
    /// Not an update as Telegram sends them (no `update_id`): nothing to store.
    #[error("update without update_id")]
    Malformed,
    /// A message or button press without a sender.
    #[error("update without a sender")]
    NoSender,
    /// The database failed; the update is tried again.
    #[error("storage error: {0}")]
    Storage(#[from] station_core::StoreError),
    /// The conversation engine failed.
    #[error(transparent)]
    Flow(#[from] station_flows::FlowError),
}

impl TelegramBot {
    /// The webhook route (`POST /telegram/webhook`), for `station serve` to
    /// mount. Calls without the secret token are refused with 401.
    pub fn webhook_router(&self) -> Router {
        Router::new().route(WEBHOOK_PATH, axum::routing::post(webhook)).with_state(self.clone())
    }

    /// Stores one update (a no-op when it is already stored) and wakes the dispatcher.
    pub(crate) async fn store_update(&self, update: &Value) -> Result<(), UpdateError> {
        let Some(id) = update["update_id"].as_i64() else {
            return Err(UpdateError::Malformed);
        };
        let inner = &self.inner;
        let lane = chat_key(update);
        inner.station.inbox(&inner.scope).insert(id, &lane, &update.to_string()).await?;
        self.news(std::iter::once(lane));
        Ok(())
    }

    /// Stores a `getUpdates` batch in one transaction (all or none) and
    /// wakes the dispatcher. Returns the highest update id stored.
    async fn store_batch(&self, list: &[Value]) -> Result<Option<i64>, UpdateError> {
        let events: Vec<(i64, String, String)> =
            list.iter().filter_map(|u| Some((u["update_id"].as_i64()?, chat_key(u), u.to_string()))).collect();
        let inner = &self.inner;
        inner.station.inbox(&inner.scope).insert_many(&events).await?;
        let last = events.iter().map(|e| e.0).max();
        self.news(events.into_iter().map(|e| e.1));
        Ok(last)
    }

    /// Tells the dispatcher which chats have new updates.
    fn news(&self, lanes: impl Iterator<Item = String>) {
        self.inner.fresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(lanes);
        self.inner.stored.notify_one();
    }

    /// Long polling, by one process at a time: Telegram allows a single
    /// `getUpdates` caller per bot (a second is answered 409 and the first
    /// cut off), so every process sharing the database competes for the
    /// bot's receiver lease ([`station_core::inbox::InboxService::hold_receiver`]),
    /// renewed before each call. The others stand by (their dispatchers
    /// still process what the holder stored) and one of them takes over
    /// once the holder stops renewing — it died — or gives the lease up.
    pub(crate) async fn poll_loop(&self, stop: CancellationToken) {
        self.poll_while_holding(&stop).await;
        let inner = &self.inner;
        if let Err(e) = inner.station.inbox(&inner.scope).release_receiver(&inner.owner).await {
            tracing::warn!(error = %e, "could not give up the Telegram polling lease; another process takes over when it lapses");
        }
    }

    async fn poll_while_holding(&self, stop: &CancellationToken) {
        let inner = &self.inner;
        let mut offset: Option<i64> = None;
        let mut backoff = Duration::from_millis(500);
        let lease = inner.options.poller_lease;
        let mut holding = false;
        loop {
            match inner.station.inbox(&inner.scope).hold_receiver(&inner.owner, lease).await {
                Ok(true) => {
                    if !holding {
                        holding = true;
                        // Another process may have moved the offset on meanwhile.
                        offset = None;
                        tracing::info!("this process receives the Telegram updates (long polling)");
                    }
                }
                Ok(false) => {
                    if holding {
                        holding = false;
                        tracing::warn!("another process took the Telegram polling over");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep((lease / 4).max(Duration::from_millis(100))) => continue,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the Telegram polling lease; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => continue,
                    }
                }
            }
            if offset.is_none() {
                match inner.station.inbox(&inner.scope).max_seq().await {
                    Ok(max) => offset = Some(max.map(|m| m + 1).unwrap_or(0)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the Telegram offset; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => continue,
                        }
                    }
                }
            }
            let mut body = json!({
                "timeout": inner.options.poll_timeout.as_secs(),
                "allowed_updates": ["message", "callback_query"],
            });
            if let Some(o) = offset.filter(|o| *o > 0) {
                body["offset"] = json!(o);
            }
            let call =
                inner.api.call_timeout("getUpdates", &body, inner.options.poll_timeout + Duration::from_secs(15));
            let res = tokio::select! {
                _ = stop.cancelled() => return,
                r = call => r,
            };
            match res {
                Ok(list) => {
                    backoff = Duration::from_millis(500);
                    let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
                    // Stored (one transaction for the batch) before the next
                    // getUpdates acknowledges them.
                    match self.store_batch(list).await {
                        Ok(Some(last)) => offset = Some(offset.unwrap_or(0).max(last + 1)),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "updates not stored; they will be fetched again");
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                        }
                    }
                }
                Err(e) => {
                    if let Some(s) = e.retry_after() {
                        backoff = Duration::from_secs(s);
                    }
                    tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "getUpdates failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Starts a task per chat with updates to process (one at a time per
    /// chat, concurrently across chats). Which chats have news comes from
    /// what this process stored; the database is scanned at start and every
    /// second (updates another process stored, or requeued after a stop).
    pub(crate) async fn dispatch_loop(&self, stop: CancellationToken) {
        let inner = &self.inner;
        let mut chats = tokio::task::JoinSet::new();
        // Chats with news that were busy: looked at again when a chat ends.
        let mut deferred: HashSet<String> = HashSet::new();
        let mut scan_at = tokio::time::Instant::now();
        loop {
            if stop.is_cancelled() {
                while chats.join_next().await.is_some() {}
                return;
            }
            let mut lanes: Vec<String> = deferred.drain().collect();
            lanes.extend(inner.fresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain());
            if tokio::time::Instant::now() >= scan_at {
                scan_at = tokio::time::Instant::now() + Duration::from_secs(1);
                match inner.station.inbox(&inner.scope).pending_lanes(500).await {
                    Ok(found) => lanes.extend(found),
                    Err(e) => tracing::warn!(error = %e, "cannot read stored Telegram updates"),
                }
            }
            for lane in lanes {
                let fresh = inner.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(lane.clone());
                if !fresh {
                    deferred.insert(lane);
                    continue;
                }
                let me = self.clone();
                let s = stop.clone();
                chats.spawn(async move {
                    me.run_chat(&lane, s).await;
                    me.inner.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&lane);
                    me.inner.stored.notify_one();
                });
            }
            while chats.try_join_next().is_some() {}
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = inner.stored.notified() => {}
                _ = tokio::time::sleep_until(scan_at) => {}
            }
        }
    }

    /// Processes one chat's stored updates in order until none is left. The
    /// end of one update and the claim of the next are one transaction.
    async fn run_chat(&self, key: &str, stop: CancellationToken) {
        let inner = &self.inner;
        let inbox = inner.station.inbox(&inner.scope);
        let mut done: Option<(i64, Option<String>)> = None;
        loop {
            if stop.is_cancelled() {
                if let Some((seq, error)) = &done
                    && let Err(e) = inbox.finish(*seq, error.as_deref()).await
                {
                    tracing::warn!(error = %e, "could not record a processed Telegram update");
                }
                return;
            }
            let step = done.as_ref().map(|(seq, error)| (*seq, error.as_deref()));
            let row = match inbox.advance(key, &inner.owner, step).await {
                Ok(Some(r)) => r,
                // The chat is done, or another process holds its next update.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "could not record a processed Telegram update or claim the next");
                    return;
                }
            };
            let update: Value = serde_json::from_str(&row.payload).unwrap_or(Value::Null);
            let outcome = self.process(&update).await;
            if inner.options.crash_after_handling {
                return;
            }
            if let Err(e) = &outcome {
                tracing::warn!(update = row.seq, error = %e, "Telegram update failed");
            }
            done = Some((row.seq, outcome.err().map(|e| e.to_string())));
        }
    }

    fn conversation(&self, chat: &Value) -> Conversation {
        let id = chat["id"].as_i64().unwrap_or(0);
        let mut conv = Conversation::new("telegram", &id.to_string());
        if chat["type"].as_str().unwrap_or("private") != "private" {
            conv.group = Some(format!("telegram:{id}"));
        }
        conv
    }

    async fn account(&self, user: &Value) -> Result<AccountRow, UpdateError> {
        let id = user["id"].as_i64().ok_or(UpdateError::NoSender)?;
        let mut name = user["first_name"].as_str().unwrap_or("").to_string();
        if let Some(last) = user["last_name"].as_str() {
            name = format!("{name} {last}");
        }
        if name.trim().is_empty() {
            name = user["username"].as_str().map(str::to_string).unwrap_or_else(|| format!("telegram {id}"));
        }
        Ok(self.inner.station.account("telegram", &id.to_string(), &name).await?)
    }

    /// Turns one update into engine input.
    pub(crate) async fn process(&self, update: &Value) -> Result<(), UpdateError> {
        // The engine records this key with what the update causes, so an
        // update processed again after a crash (stored, handled, not yet
        // marked done) changes nothing: no second transition, job or charge.
        let key = format!("telegram:{}:{}", self.inner.bot_id, update["update_id"].as_i64().unwrap_or(0));
        if self.inner.flows.input_handled(&key).await? {
            tracing::info!(%key, "Telegram update was handled before a stop; not again");
            return Ok(());
        }
        if let Some(cq) = update.get("callback_query") {
            return self.process_callback(&key, cq).await;
        }
        let Some(msg) = update.get("message") else { return Ok(()) };
        if msg["from"]["is_bot"].as_bool().unwrap_or(true) {
            return Ok(());
        }
        if !self.for_us(msg).await {
            // Group chatter: no account is made and no picture downloaded
            // for someone who never spoke to the bot.
            return Ok(());
        }
        let account = self.account(&msg["from"]).await?;
        let conv = self.conversation(&msg["chat"]);
        let inputs = match self.inputs(&account, msg).await {
            Ok(i) => i,
            Err(notice) => {
                // Durable like every other answer (sent by the delivery service), and once.
                let view = station_flows::View::text(notice);
                return Ok(self.inner.flows.notice_once(&key, &account, &conv, view).await?);
            }
        };
        if conv.group.is_some()
            && !inputs.is_empty()
            && let Some(id) = msg["message_id"].as_i64()
        {
            // Replies to this person in the group answer their latest message.
            let key = crate::outbound::asker_key(msg["chat"]["id"].as_i64().unwrap_or(0), &account.id);
            let inner = &self.inner;
            if let Err(e) = inner.station.adapter_state(&inner.scope).set(&key, &id.to_string()).await {
                tracing::warn!(error = %e, "could not remember the asker's message");
            }
        }
        for (i, input) in inputs.into_iter().enumerate() {
            let key = if i == 0 { key.clone() } else { format!("{key}.{i}") };
            if let Err(e) = self.inner.flows.handle_once(&key, &account, &conv, input).await {
                self.notice(&conv, msg, "Something went wrong on our side; please try again in a moment.").await;
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn process_callback(&self, key: &str, cq: &Value) -> Result<(), UpdateError> {
        let id = cq["id"].as_str().unwrap_or_default().to_string();
        let answer = |text: Option<String>| {
            let mut body = json!({"callback_query_id": id});
            if let Some(t) = text {
                body["text"] = json!(t.chars().take(200).collect::<String>());
            }
            body
        };
        let (Some(data), Some(chat)) = (cq["data"].as_str(), cq["message"].get("chat")) else {
            let _ = self.inner.api.call("answerCallbackQuery", &answer(None)).await;
            return Ok(());
        };
        let account = self.account(&cq["from"]).await?;
        let conv = self.conversation(chat);
        let result =
            self.inner.flows.handle_once(key, &account, &conv, Input::Action { token: data.to_string() }).await;
        let (toast, outcome) = match result {
            Ok(reply) => (reply.toast, Ok(())),
            Err(e) => (Some("Something went wrong; please try again.".into()), Err(e.into())),
        };
        // Stops the client's spinner; a stale query (after a restart) is fine to miss.
        if let Err(e) = self.inner.api.call("answerCallbackQuery", &answer(toast)).await {
            tracing::debug!(error = %e, "callback answer not accepted");
        }
        outcome
    }

    async fn notice(&self, conv: &Conversation, msg: &Value, text: &str) {
        let chat: i64 = conv.chat.parse().unwrap_or(0);
        self.inner.pacer.acquire(chat, conv.group.is_some()).await;
        let mut body = json!({"chat_id": chat, "text": text});
        if let Some(id) = msg["message_id"].as_i64() {
            body["reply_parameters"] = json!({"message_id": id, "allow_sending_without_reply": true});
        }
        if let Err(e) = self.inner.api.call("sendMessage", &body).await {
            tracing::warn!(error = %e, "could not send a notice");
        }
    }

    /// Parses `/name@bot rest` into the name and the rest, or None when the
    /// command is addressed to another bot.
    fn command(&self, text: &str) -> Option<(String, String)> {
        let text = text.trim_start();
        let rest = text.strip_prefix('/')?;
        let (head, tail) = match rest.find(char::is_whitespace) {
            Some(i) => (&rest[..i], rest[i..].trim()),
            None => (rest, ""),
        };
        let (name, target) = match head.split_once('@') {
            Some((n, t)) => (n, Some(t)),
            None => (head, None),
        };
        if let Some(t) = target
            && !t.eq_ignore_ascii_case(&self.username())
        {
            return None;
        }
        if name.is_empty() {
            return None;
        }
        Some((name.to_lowercase(), tail.to_string()))
    }

    /// Whether a message may be for the bot: anything in a private chat; in
    /// a group, one of its commands (or a photo of an album captioned with
    /// one), a reply to it, or a message starting with its @name. A cheap
    /// first look, before any account or download; [`Self::inputs`] decides.
    async fn for_us(&self, msg: &Value) -> bool {
        if msg["chat"]["type"].as_str() == Some("private") {
            return true;
        }
        let text = msg["text"].as_str().or_else(|| msg["caption"].as_str()).unwrap_or("");
        let me = self.username();
        let mentioned = !me.is_empty() && text.trim_start().starts_with(&format!("@{me}"));
        if self.command(text).is_some() || self.replies_to_me(msg) || mentioned {
            return true;
        }
        match msg["media_group_id"].as_str() {
            Some(g) if !text.trim_start().starts_with('/') => {
                let inner = &self.inner;
                inner.station.adapter_state(&inner.scope).get(&album_key(g)).await.ok().flatten().is_some()
            }
            _ => false,
        }
    }

    /// Whether a message answers one of the bot's own.
    fn replies_to_me(&self, msg: &Value) -> bool {
        msg["reply_to_message"]["from"]["username"].as_str().is_some_and(|u| u.eq_ignore_ascii_case(&self.username()))
    }

    /// The stored media id of a message's picture (photo, or an image sent as a file).
    async fn image_of(&self, account: &AccountRow, msg: &Value) -> Result<Option<String>, String> {
        let file_id = if let Some(sizes) = msg["photo"].as_array() {
            sizes.last().and_then(|p| p["file_id"].as_str()).map(str::to_string)
        } else if msg["document"]["mime_type"].as_str().is_some_and(|m| m.starts_with("image/")) {
            msg["document"]["file_id"].as_str().map(str::to_string)
        } else {
            None
        };
        let Some(file_id) = file_id else { return Ok(None) };
        let max = self.inner.station.config.media.max_bytes;
        let bytes = self.inner.api.download(&file_id, max).await.map_err(|e| match e {
            crate::ApiError::Api { code: 413, .. } => {
                format!("That picture is too large (the limit is {} MB).", max / 1_000_000)
            }
            e => format!("That picture could not be downloaded from Telegram ({e}); please send it again."),
        })?;
        let row = self
            .inner
            .station
            .media
            .put_image(bytes, Some(&account.id), None, "input")
            .await
            .map_err(|e| format!("That picture cannot be used: {e}"))?;
        Ok(Some(row.id))
    }

    /// The engine input(s) of a message, or a notice for the person.
    async fn inputs(&self, account: &AccountRow, msg: &Value) -> Result<Vec<Input>, String> {
        let private = msg["chat"]["type"].as_str() == Some("private");
        let text = msg["text"].as_str().or_else(|| msg["caption"].as_str()).unwrap_or("").to_string();
        let album = msg["media_group_id"].as_str().map(str::to_string);
        let state = self.inner.station.adapter_state(&self.inner.scope);
        // `@bot /flip` (a group's way of addressing one bot) is the command.
        let mention = format!("@{}", self.username());
        let unmentioned = match text.trim_start().strip_prefix(&mention) {
            Some(rest) if !self.username().is_empty() && rest.trim_start().starts_with('/') => rest.trim_start(),
            _ => text.as_str(),
        };
        let mut command = self.command(unmentioned);
        let text = if command.is_some() { unmentioned.to_string() } else { text.clone() };
        if text.trim_start().starts_with('/') && command.is_none() {
            // Addressed to another bot.
            return Ok(vec![]);
        }
        // An album's caption rides on its first photo: remember the command
        // for the photos that follow (stored, so a restart keeps it).
        if let Some(g) = &album {
            let key = album_key(g);
            match &command {
                Some((n, t)) => {
                    let v = json!({"name": n, "text": t}).to_string();
                    let _ = state.set(&key, &v).await;
                }
                None => match state.get(&key).await.ok().flatten() {
                    Some(v) => {
                        let v = serde_json::from_str::<Value>(&v).unwrap_or(Value::Null);
                        match v["name"].as_str() {
                            Some(name) => {
                                command = Some((name.to_string(), v["text"].as_str().unwrap_or_default().to_string()));
                            }
                            // An album without a command: its first photo was answered
                            // (one hint, or one input to the open step); the rest add nothing.
                            None => return Ok(vec![]),
                        }
                    }
                    None => {
                        let _ = state.set(&key, &json!({"answered": true}).to_string()).await;
                    }
                },
            }
        }
        let own = self.image_of(account, msg).await?;
        if let Some((name, rest)) = command {
            let mut images: Vec<String> = own.into_iter().collect();
            if images.is_empty()
                && let Some(reply) = msg.get("reply_to_message")
                && let Some(id) = self.image_of(account, reply).await?
            {
                images.push(id);
            }
            return Ok(vec![Input::Command { name, text: rest, images, params: Map::new() }]);
        }
        // Outside private chats, only what is addressed to the bot.
        let to_bot = self.replies_to_me(msg);
        let (addressed, text) = match text.trim_start().strip_prefix(&mention) {
            Some(rest) if !self.username().is_empty() => (true, rest.trim().to_string()),
            _ => (private || to_bot, text),
        };
        if !addressed {
            return Ok(vec![]);
        }
        if let Some(id) = own {
            return Ok(vec![Input::Images { media: vec![id] }]);
        }
        if text.trim().is_empty() {
            return Ok(vec![]);
        }
        Ok(vec![Input::Text { text }])
    }
}

/// Where an album's command caption is remembered for its later photos.
pub(crate) fn album_key(media_group_id: &str) -> String {
    format!("{}{media_group_id}", crate::ALBUM_KEY_PREFIX)
}
