//! Sending: the flows engine's deliveries as Telegram messages, paced per
//! chat, group and bot, with 429s, vanished messages and blocked users
//! turned into the engine's outcomes.
//!
//! A message reference is the message id prefixed by what it is: `t` text,
//! `p` photo, `d` document — edits need to know which edit method applies.
//!
//! Pictures: a result goes as a document with the original bytes and a file
//! name with its extension when its account asked for originals (`/settings`).
//! Otherwise a picture is a photo: as stored when it fits Telegram's photo
//! limits, else the variant `Station::deliverable` fits to them (scaled or
//! re-encoded, cached). It goes as a document (original bytes) only when no
//! photo can show it: a format Telegram does not take as a photo (GIF, which
//! a photo would freeze), a side ratio over 20 (scaling keeps the ratio), or
//! an image that cannot be fitted.
//!
//! In groups, new messages for someone reply to the last message they sent
//! in the chat, so it is clear whose request they answer.

use std::time::Duration;

use serde_json::{Value, json};
use station_flows::{DeliveryKind, ImageRef, Outcome, Outgoing, Platform};

use crate::TelegramBot;
use crate::client::{ApiError, Upload};
use crate::render::{ALBUM_LIMIT, CAPTION_LIMIT, Rendered, TEXT_LIMIT, render};
use station_core::MediaRow;
use station_flows::Conversation;

/// Telegram's photo limits: 10 MB, width + height ≤ 10000, ratio ≤ 20.
fn fits_photo(mime: &str, size: i64, w: i64, h: i64) -> bool {
    photo_shape(mime, w, h) && size <= 10_000_000 && w + h <= 10_000
}

/// Whether some photo can show the image: a format `sendPhoto` takes and a
/// side ratio of at most 20 (size and dimensions can be fitted; the ratio cannot).
fn photo_shape(mime: &str, w: i64, h: i64) -> bool {
    let ratio = w.max(h) as f64 / w.min(h).max(1) as f64;
    matches!(mime, "image/png" | "image/jpeg" | "image/webp") && ratio <= 20.0
}

/// The adapter-state key of the Telegram file id of media `media_id`
/// uploaded as `kind` (`photo` or `document`), reused instead of uploading
/// the bytes again.
fn file_key(kind: &str, media_id: &str) -> String {
    format!("file:{kind}:{media_id}")
}

/// The adapter-state key of the last message `account` sent in group `chat`.
pub(crate) fn asker_key(chat: i64, account: &str) -> String {
    format!("asker:{chat}:{account}")
}

/// How one delivery is sent.
#[derive(Clone, Copy)]
struct Target {
    chat: i64,
    group: bool,
    /// Pictures as documents with their original bytes.
    as_file: bool,
    /// The message new messages reply to (in groups: the asker's).
    reply_to: Option<i64>,
}

enum Media {
    FileId(String),
    Bytes { name: String, bytes: Vec<u8> },
}

struct Resolved {
    /// `photo` or `document`.
    kind: &'static str,
    media: Media,
    media_id: Option<String>,
}

/// One Bot API call.
enum Call<'a> {
    Json(&'static str, &'a Value),
    Upload(&'static str, &'a Value, Vec<Upload>),
}

/// A failed step of a delivery.
enum Fail {
    Api(ApiError),
    /// Our side (media missing, unreadable view).
    Local(String),
    /// The pace asks to come back later.
    Later(Duration),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Fail {
        Fail::Api(e)
    }
}

/// The id and kind of a sent message.
fn message_ref(msg: &Value) -> Option<String> {
    let id = msg["message_id"].as_i64()?;
    let kind = if msg.get("photo").is_some() {
        'p'
    } else if msg.get("document").is_some() {
        'd'
    } else {
        't'
    };
    Some(format!("{kind}{id}"))
}

fn parse_ref(r: &str) -> Option<(char, i64)> {
    let mut chars = r.chars();
    let kind = chars.next()?;
    let id = chars.as_str().parse().ok()?;
    matches!(kind, 't' | 'p' | 'd').then_some((kind, id))
}

#[async_trait::async_trait]
impl Platform for TelegramBot {
    fn name(&self) -> &str {
        "telegram"
    }

    /// Private views asked for in a group go to the asker's private chat.
    fn delivers_privately(&self) -> bool {
        true
    }

    async fn deliver(&self, conversation: &Conversation, out: &Outgoing) -> Outcome {
        let Ok(chat) = conversation.chat.parse::<i64>() else {
            return Outcome::Permanent(format!("{:?} is not a Telegram chat id", conversation.chat));
        };
        let group = conversation.group.is_some() || chat < 0;
        let rendered = render(&out.view);
        let inner = &self.inner;
        // A live progress edit can wait for the next one when the chat is busy
        // (its last state, without buttons, is always sent).
        if out.kind == DeliveryKind::Progress
            && out.replace.is_some()
            && !out.view.buttons.is_empty()
            && inner.pacer.backlog(chat) > inner.pacer.limits().chat_interval + inner.options.progress_skip_backlog
        {
            return Outcome::Sent { message_ref: out.replace.clone() };
        }
        let as_file = out.kind == DeliveryKind::Result
            && !rendered.images.is_empty()
            && match inner.station.sends_originals(&out.account_id).await {
                Ok(v) => v,
                Err(e) => return Outcome::Transient(format!("cannot read the account's settings: {e}")),
            };
        // Also for edits: one that must become a new message (text ↔ photo) replies too.
        let reply_to = if group {
            let key = asker_key(chat, &out.account_id);
            let state = inner.station.adapter_state(&inner.scope);
            state.get(&key).await.ok().flatten().and_then(|v| v.parse().ok())
        } else {
            None
        };
        let t = Target { chat, group, as_file, reply_to };
        let result = if out.view.private && group {
            // A secret for the asker: never in the group.
            self.send_privately(t, &rendered, out).await
        } else {
            match out.replace.as_deref().and_then(parse_ref) {
                Some((kind, id)) => self.edit(t, kind, id, &rendered, out).await,
                None => self.send(t, &rendered).await,
            }
        };
        match result {
            Ok(r) => Outcome::Sent { message_ref: r },
            Err(Fail::Later(d)) => Outcome::RetryAfter(d),
            Err(Fail::Local(e)) => Outcome::Permanent(e),
            Err(Fail::Api(e)) => {
                if let Some(s) = e.retry_after() {
                    inner.pacer.penalize(chat, s);
                    Outcome::RetryAfter(Duration::from_secs(s))
                } else if e.is_transient() {
                    Outcome::Transient(e.to_string())
                } else {
                    if !e.is_permanent_for_chat() {
                        tracing::warn!(error = %e, delivery = %out.delivery_id, "Telegram refused a message");
                    }
                    Outcome::Permanent(e.to_string())
                }
            }
        }
    }
}

impl TelegramBot {
    /// A private view asked for in a group ([`station_flows::View::private`]):
    /// sent to the account's private chat with the bot (a Telegram user's
    /// private chat has their user id), and the group is told so. When the
    /// bot cannot write to them privately (they never started it: 403 "bot
    /// can't initiate conversation with a user", or blocked it), the group is
    /// told to open a private chat first; the view itself never goes there.
    async fn send_privately(&self, t: Target, rendered: &Rendered, out: &Outgoing) -> Result<Option<String>, Fail> {
        let identities = self
            .inner
            .station
            .account_identities(&out.account_id)
            .await
            .map_err(|e| Fail::Api(ApiError::Network { method: "identities".into(), reason: e.to_string() }))?;
        let users: Vec<i64> = identities
            .iter()
            .filter(|(provider, _)| provider == "telegram")
            .filter_map(|(_, subject)| subject.parse::<i64>().ok())
            .filter(|id| *id > 0)
            .collect();
        let mut reached = false;
        for user in users {
            let dm = Target { chat: user, group: false, as_file: t.as_file, reply_to: None };
            match self.send(dm, rendered).await {
                Ok(_) => {
                    reached = true;
                    break;
                }
                Err(Fail::Api(e)) if e.is_permanent_for_chat() => {
                    tracing::info!(error = %e, "cannot write to a user privately; telling them in the group");
                }
                Err(e) => return Err(e),
            }
        }
        let username = self.username();
        let note = if reached {
            station_flows::View::text("🔒 I sent it to you in a private chat.")
        } else {
            station_flows::View::text(format!(
                "🔒 That is only for you, so I send it in a private chat, but I can't write to you privately yet.                  Open a private chat with @{username}, press Start, then send the command again."
            ))
            .row(vec![station_flows::Button::url("Open a private chat", format!("https://t.me/{username}"))])
        };
        self.send(t, &render(&note)).await
    }

    /// Waits for the chat's slot, unless that would be long (then the
    /// delivery comes back later).
    async fn slot(&self, chat: i64, group: bool) -> Result<(), Fail> {
        let backlog = self.inner.pacer.backlog(chat);
        if backlog > self.inner.options.max_wait {
            return Err(Fail::Later(backlog));
        }
        self.inner.pacer.acquire(chat, group).await;
        Ok(())
    }

    /// One API call in a chat, paced; a 429 in the middle of a multi-message
    /// view is waited out here (the parts already sent must not repeat).
    async fn paced(&self, t: Target, first: bool, call: Call<'_>) -> Result<Value, Fail> {
        loop {
            self.slot(t.chat, t.group).await?;
            let res = match &call {
                Call::Json(method, body) => self.inner.api.call(method, body).await,
                Call::Upload(method, fields, uploads) => {
                    self.inner.api.call_upload(method, fields, uploads.clone()).await
                }
            };
            match res {
                Err(e)
                    if !first
                        && e.retry_after().is_some_and(|s| Duration::from_secs(s) <= self.inner.options.max_wait) =>
                {
                    self.inner.pacer.penalize(t.chat, e.retry_after().unwrap_or(1));
                }
                other => return Ok(other?),
            }
        }
    }

    /// Sets `reply_parameters` on the first message of a view.
    fn reply(t: Target, first: bool, body: &mut Value) {
        if first && let Some(id) = t.reply_to {
            body["reply_parameters"] = json!({"message_id": id, "allow_sending_without_reply": true});
        }
    }

    async fn resolve(&self, img: &ImageRef, as_file: bool) -> Result<Resolved, Fail> {
        if img.media_id.is_empty() {
            let bytes = img.inline_bytes().ok_or_else(|| Fail::Local("an inline image is not valid base64".into()))?;
            let name = format!("preview.{}", station_core::media::extension_for_mime(&img.mime));
            let kind = if fits_photo(&img.mime, bytes.len() as i64, 1, 1) { "photo" } else { "document" };
            return Ok(Resolved { kind, media: Media::Bytes { name, bytes }, media_id: None });
        }
        let station = &self.inner.station;
        let row = station.media.row(&img.media_id, None).await.map_err(|e| Fail::Local(e.to_string()))?;
        let kind = if !as_file && photo_shape(&row.mime, row.width, row.height) { "photo" } else { "document" };
        let state = station.adapter_state(&self.inner.scope);
        if let Ok(Some(file_id)) = state.get(&file_key(kind, &row.id)).await {
            return Ok(Resolved { kind, media: Media::FileId(file_id), media_id: Some(row.id) });
        }
        self.load(&row, kind).await
    }

    /// The bytes to upload for a stored picture: a photo as stored when it
    /// fits, else fitted by `Station::deliverable`; a document (also a photo
    /// that could not be fitted) with the original bytes.
    async fn load(&self, row: &MediaRow, kind: &'static str) -> Result<Resolved, Fail> {
        let station = &self.inner.station;
        if kind == "photo" && !fits_photo(&row.mime, row.size, row.width, row.height) {
            match station.deliverable(&row.id, crate::PHOTO_LIMITS).await {
                Ok((bytes, mime, _)) => {
                    let name = self.inner.station.download_name(row, &mime).await;
                    return Ok(Resolved { kind, media: Media::Bytes { name, bytes }, media_id: Some(row.id.clone()) });
                }
                Err(e) => {
                    tracing::warn!(media = %row.id, error = %e, "cannot fit a picture as a photo; sent as a file");
                }
            }
        }
        let kind = if kind == "photo" && fits_photo(&row.mime, row.size, row.width, row.height) {
            "photo"
        } else {
            "document"
        };
        let (_, bytes) = station.media.get(&row.id, None).await.map_err(|e| Fail::Local(e.to_string()))?;
        let name = self.inner.station.download_name(row, &row.mime).await;
        Ok(Resolved { kind, media: Media::Bytes { name, bytes }, media_id: Some(row.id.clone()) })
    }

    /// Loads the bytes of a media item whose cached file id Telegram no longer knows.
    async fn reload(&self, r: &Resolved) -> Option<Resolved> {
        let id = r.media_id.as_ref()?;
        let row = self.inner.station.media.row(id, None).await.ok()?;
        self.load(&row, r.kind).await.ok()
    }

    async fn remember(&self, r: &Resolved, msg: &Value) {
        let (Some(media_id), Media::Bytes { .. }) = (&r.media_id, &r.media) else { return };
        let file_id = match r.kind {
            "photo" => msg["photo"].as_array().and_then(|s| s.last()).and_then(|p| p["file_id"].as_str()),
            _ => msg["document"]["file_id"].as_str(),
        };
        if let Some(f) = file_id {
            let state = self.inner.station.adapter_state(&self.inner.scope);
            let _ = state.set(&file_key(r.kind, media_id), f).await;
        }
    }

    /// Sends one picture with an optional caption and keyboard.
    async fn send_image(
        &self,
        t: Target,
        first: bool,
        img: &ImageRef,
        caption: Option<&str>,
        keyboard: Option<&Value>,
    ) -> Result<Value, Fail> {
        let mut r = self.resolve(img, t.as_file).await?;
        let mut fields = json!({"chat_id": t.chat});
        if let Some(c) = caption.filter(|c| !c.is_empty()) {
            fields["caption"] = json!(c);
            fields["parse_mode"] = json!("HTML");
        }
        if let Some(k) = keyboard {
            fields["reply_markup"] = k.clone();
        }
        Self::reply(t, first, &mut fields);
        for attempt in 0..2 {
            let method = if r.kind == "photo" { "sendPhoto" } else { "sendDocument" };
            let res = match &r.media {
                Media::FileId(id) => {
                    let mut body = fields.clone();
                    body[r.kind] = json!(id);
                    self.paced(t, first, Call::Json(method, &body)).await
                }
                Media::Bytes { name, bytes } => {
                    let upload = Upload { part: r.kind.to_string(), file_name: name.clone(), bytes: bytes.clone() };
                    self.paced(t, first, Call::Upload(method, &fields, vec![upload.clone()])).await
                }
            };
            match res {
                Err(Fail::Api(e)) if attempt == 0 && e.is_bad_file_id() => {
                    r = self.reload(&r).await.ok_or(Fail::Api(e))?;
                }
                Ok(msg) => {
                    self.remember(&r, &msg).await;
                    return Ok(msg);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Fail::Local("file could not be sent".into()))
    }

    /// Sends several pictures as albums of up to ten.
    async fn send_album(&self, t: Target, first: bool, images: &[ImageRef], caption: Option<&str>) -> Result<(), Fail> {
        let mut resolved = vec![];
        for img in images {
            resolved.push(self.resolve(img, t.as_file).await?);
        }
        // Photos and documents cannot share an album: all go as files then.
        let t = if resolved.iter().any(|r| r.kind == "document") && !t.as_file {
            let t = Target { as_file: true, ..t };
            for (r, img) in resolved.iter_mut().zip(images) {
                if r.kind == "photo" {
                    *r = self.resolve(img, true).await?;
                }
            }
            t
        } else {
            t
        };
        let mut first = first;
        for (n, chunk) in resolved.chunks(ALBUM_LIMIT).enumerate() {
            let cap = if n == 0 { caption } else { None };
            if chunk.len() == 1 {
                self.send_image(t, first, &images[n * ALBUM_LIMIT], cap, None).await?;
            } else {
                let mut media = vec![];
                let mut uploads = vec![];
                for (i, r) in chunk.iter().enumerate() {
                    let mut item = json!({"type": r.kind});
                    match &r.media {
                        Media::FileId(id) => item["media"] = json!(id),
                        Media::Bytes { name, bytes } => {
                            let part = format!("f{i}");
                            item["media"] = json!(format!("attach://{part}"));
                            uploads.push(Upload { part, file_name: name.clone(), bytes: bytes.clone() });
                        }
                    }
                    if i == 0
                        && let Some(c) = cap.filter(|c| !c.is_empty())
                    {
                        item["caption"] = json!(c);
                        item["parse_mode"] = json!("HTML");
                    }
                    media.push(item);
                }
                let mut fields = json!({"chat_id": t.chat, "media": media});
                Self::reply(t, first, &mut fields);
                let sent = self.paced(t, first, Call::Upload("sendMediaGroup", &fields, uploads.clone())).await?;
                for (r, msg) in chunk.iter().zip(sent.as_array().into_iter().flatten()) {
                    self.remember(r, msg).await;
                }
            }
            first = false;
        }
        Ok(())
    }

    async fn send_text(&self, t: Target, first: bool, html: &str, keyboard: Option<&Value>) -> Result<Value, Fail> {
        let mut body = json!({"chat_id": t.chat, "text": html, "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": true}});
        if let Some(k) = keyboard {
            body["reply_markup"] = k.clone();
        }
        Self::reply(t, first, &mut body);
        self.paced(t, first, Call::Json("sendMessage", &body)).await
    }

    /// Sends a view as new messages; returns the reference of the main one
    /// (the one with the keyboard).
    async fn send(&self, t: Target, r: &Rendered) -> Result<Option<String>, Fail> {
        let kb = r.keyboard.as_ref();
        match r.images.len() {
            0 => {
                let texts = if r.texts.is_empty() { vec!["…".to_string()] } else { r.texts.clone() };
                let mut last = None;
                for (i, text) in texts.iter().enumerate() {
                    let keyboard = if i + 1 == texts.len() { kb } else { None };
                    last = Some(self.send_text(t, i == 0, text, keyboard).await?);
                }
                Ok(last.as_ref().and_then(message_ref))
            }
            1 => {
                let caption = r.caption();
                let msg =
                    self.send_image(t, true, &r.images[0], caption, if caption.is_some() { kb } else { None }).await?;
                if caption.is_some() {
                    return Ok(message_ref(&msg));
                }
                let mut last = msg;
                for (i, text) in r.texts.iter().enumerate() {
                    let keyboard = if i + 1 == r.texts.len() { kb } else { None };
                    last = self.send_text(t, false, text, keyboard).await?;
                }
                Ok(message_ref(&last))
            }
            _ => {
                let caption = r.caption().filter(|_| kb.is_none());
                self.send_album(t, true, &r.images, caption).await?;
                // Albums carry no keyboard: the text and buttons follow.
                if caption.is_some() {
                    return Ok(None);
                }
                let texts = if r.texts.is_empty() { vec!["⬆️".to_string()] } else { r.texts.clone() };
                let mut last = None;
                for (i, text) in texts.iter().enumerate() {
                    let keyboard = if i + 1 == texts.len() { kb } else { None };
                    last = Some(self.send_text(t, false, text, keyboard).await?);
                }
                Ok(last.as_ref().and_then(message_ref))
            }
        }
    }

    /// Edits message `id` to show the view, or replaces it when Telegram
    /// cannot turn one kind of message into the other.
    async fn edit(&self, t: Target, kind: char, id: i64, r: &Rendered, out: &Outgoing) -> Result<Option<String>, Fail> {
        let same = Some(format!("{kind}{id}"));
        let mut body = json!({"chat_id": t.chat, "message_id": id});
        if let Some(k) = &r.keyboard {
            body["reply_markup"] = k.clone();
        }
        let res = match (kind, r.images.len()) {
            ('t', 0) => {
                body["text"] = json!(r.truncated(TEXT_LIMIT));
                body["parse_mode"] = json!("HTML");
                body["link_preview_options"] = json!({"is_disabled": true});
                self.paced(t, true, Call::Json("editMessageText", &body)).await
            }
            ('p' | 'd', 0) => {
                body["caption"] = json!(r.truncated(CAPTION_LIMIT));
                body["parse_mode"] = json!("HTML");
                self.paced(t, true, Call::Json("editMessageCaption", &body)).await
            }
            ('p' | 'd', 1) => {
                let m = self.resolve(&r.images[0], t.as_file).await?;
                let mut media = json!({"type": m.kind, "caption": r.truncated(CAPTION_LIMIT), "parse_mode": "HTML"});
                let mut uploads = vec![];
                match &m.media {
                    Media::FileId(f) => media["media"] = json!(f),
                    Media::Bytes { name, bytes } => {
                        media["media"] = json!("attach://f0");
                        uploads.push(Upload { part: "f0".into(), file_name: name.clone(), bytes: bytes.clone() });
                    }
                }
                body["media"] = media;
                let res = self.paced(t, true, Call::Upload("editMessageMedia", &body, uploads.clone())).await;
                if let Ok(msg) = &res {
                    self.remember(&m, msg).await;
                }
                res
            }
            (_, n) if n > 1 && out.kind == DeliveryKind::Message && r.keyboard.is_none() => {
                // A card whose step is over (its buttons taken away) that
                // cannot be edited into its view (an album above a text):
                // only the buttons go, nothing is sent again.
                self.paced(t, true, Call::Json("editMessageReplyMarkup", &body)).await
            }
            _ => {
                // Text ↔ media, or an album: send anew and remove the old message.
                let new = self.send(t, r).await?;
                let _ = self.inner.api.call("deleteMessage", &json!({"chat_id": t.chat, "message_id": id})).await;
                return Ok(new);
            }
        };
        match res {
            Ok(msg) => Ok(message_ref(&msg).or(same)),
            Err(Fail::Api(e)) if e.is_not_modified() => Ok(same),
            Err(Fail::Api(e)) if e.is_edit_target_gone() => {
                if out.kind == DeliveryKind::Progress {
                    Ok(same)
                } else {
                    self.send(t, r).await
                }
            }
            Err(e) => Err(e),
        }
    }
}
