//! The fake Bot API answers like the real one: shapes, errors, limits,
//! long polling, webhooks and flood control — exercised over real HTTP.

use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use station_telegram_fake::{FakeChat, FakeConfig, FakeTelegram, FakeUser, RateLimits};

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(w, h, image::Rgb([200, 10, 10])).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(fake: &FakeTelegram) -> Api {
        Api { base: format!("{}/bot{}", fake.api_url(), fake.token()), http: reqwest::Client::new() }
    }

    async fn call(&self, method: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}/{method}", self.base)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn ok(&self, method: &str, body: Value) -> Value {
        let (status, v) = self.call(method, body).await;
        assert_eq!(status, 200, "{method}: {v}");
        assert_eq!(v["ok"], json!(true));
        v["result"].clone()
    }

    async fn err(&self, method: &str, body: Value) -> (u16, String) {
        let (status, v) = self.call(method, body).await;
        assert_eq!(v["ok"], json!(false), "{method} should fail: {v}");
        assert_eq!(v["error_code"].as_u64(), Some(status as u64));
        (status, v["description"].as_str().unwrap().to_string())
    }

    async fn multipart(&self, method: &str, form: Form) -> (u16, Value) {
        let r = self.http.post(format!("{}/{method}", self.base)).multipart(form).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn relaxed() -> FakeConfig {
    FakeConfig {
        limits: RateLimits {
            chat_per_second: 1000.0,
            chat_burst: 1000.0,
            group_per_minute: 1000,
            global_per_second: 1000,
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn auth_method_names_and_get_me() {
    let fake = FakeTelegram::start().await;
    let api = Api::new(&fake);
    let me = api.ok("GetMe", json!({})).await;
    assert_eq!(me["username"], json!("station_test_bot"));
    assert_eq!(me["is_bot"], json!(true));
    api.ok("getme", json!({})).await;
    let (status, d) = api.err("noSuchMethod", json!({})).await;
    assert_eq!((status, d.as_str()), (404, "Not Found"));
    let wrong = reqwest::get(format!("{}/bot1:wrong/getMe", fake.api_url())).await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let v: Value = wrong.json().await.unwrap();
    assert_eq!(v["description"], json!("Unauthorized"));
}

#[tokio::test]
async fn long_polling_waits_wakes_and_acknowledges_by_offset() {
    let fake = FakeTelegram::start().await;
    let api = Api::new(&fake);
    let t0 = Instant::now();
    assert_eq!(api.ok("getUpdates", json!({"timeout": 1})).await, json!([]));
    assert!(t0.elapsed() >= Duration::from_millis(900), "long poll returned early");
    let ann = FakeUser::new(42, "Ann");
    let chat = FakeChat::private(&ann);
    let poll = {
        let api = Api::new(&fake);
        tokio::spawn(async move { api.ok("getUpdates", json!({"timeout": 10})).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t1 = Instant::now();
    fake.send_text(&chat, &ann, "/start");
    let got = poll.await.unwrap();
    assert!(t1.elapsed() < Duration::from_secs(2), "an update must wake a waiting poll");
    let u = &got[0];
    assert_eq!(u["message"]["text"], json!("/start"));
    assert_eq!(u["message"]["entities"][0]["type"], json!("bot_command"));
    assert_eq!(u["message"]["from"]["id"], json!(42));
    let id = u["update_id"].as_i64().unwrap();
    // Not acknowledged yet: delivered again.
    let again = api.ok("getUpdates", json!({"timeout": 0})).await;
    assert_eq!(again[0]["update_id"].as_i64(), Some(id));
    // Offset acknowledges.
    assert_eq!(api.ok("getUpdates", json!({"offset": id + 1, "timeout": 0})).await, json!([]));
    assert_eq!(fake.pending_updates(), 0);
}

#[tokio::test]
async fn a_second_poller_terminates_the_first() {
    let fake = FakeTelegram::start().await;
    let first = {
        let api = Api::new(&fake);
        tokio::spawn(async move { api.err("getUpdates", json!({"timeout": 5})).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let api = Api::new(&fake);
    api.ok("getUpdates", json!({"timeout": 0})).await;
    let (status, d) = first.await.unwrap();
    assert_eq!(status, 409);
    assert!(d.starts_with("Conflict: terminated by other getUpdates request"), "{d}");
}

#[tokio::test]
async fn webhook_delivery_with_secret_and_retries() {
    use axum::http::HeaderMap;
    let fake = FakeTelegram::start().await;
    let api = Api::new(&fake);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Option<String>, Value)>();
    let refuse_first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            let refuse = refuse_first.clone();
            async move {
                let secret = headers.get("x-telegram-bot-api-secret-token").map(|v| v.to_str().unwrap().to_string());
                tx.send((secret, body)).unwrap();
                if refuse.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (_, d) = api.err("setWebhook", json!({"url": url, "secret_token": "bad secret!"})).await;
    assert!(d.contains("secret token contains unallowed characters"), "{d}");
    api.ok("setWebhook", json!({"url": url, "secret_token": "s3cr3t_-x"})).await;
    let (status, d) = api.err("getUpdates", json!({})).await;
    assert_eq!(status, 409);
    assert!(d.contains("webhook is active"), "{d}");
    let ann = FakeUser::new(7, "Ann");
    fake.send_text(&FakeChat::private(&ann), &ann, "hello");
    let (s1, b1) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let (s2, b2) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(s1.as_deref(), Some("s3cr3t_-x"));
    assert_eq!(s2.as_deref(), Some("s3cr3t_-x"));
    assert_eq!(b1, b2, "a refused update is delivered again");
    assert_eq!(b2["message"]["text"], json!("hello"));
    fake.wait_for(Duration::from_secs(2), |f| (f.pending_updates() == 0).then_some(())).await.expect("acknowledged");
    let stats = fake.stats();
    assert_eq!((stats.webhook_attempts, stats.webhook_refused), (2, 1));
    api.ok("deleteWebhook", json!({})).await;
    assert!(fake.webhook().is_none());
}

#[tokio::test]
async fn text_limits_keyboards_and_html() {
    let fake = FakeTelegram::start_with(relaxed()).await;
    let api = Api::new(&fake);
    let ann = FakeUser::new(5, "Ann");
    let chat = FakeChat::private(&ann);
    fake.send_text(&chat, &ann, "hi");
    let (status, d) = api.err("sendMessage", json!({"chat_id": 999, "text": "x"})).await;
    assert_eq!((status, d.as_str()), (400, "Bad Request: chat not found"));
    api.ok("sendMessage", json!({"chat_id": 5, "text": "é".repeat(4096)})).await;
    let (status, d) = api.err("sendMessage", json!({"chat_id": 5, "text": "x".repeat(4097)})).await;
    assert_eq!((status, d.as_str()), (400, "Bad Request: message is too long"));
    // Telegram counts UTF-16 units: 2049 emoji are 4098 units.
    let (_, d) = api.err("sendMessage", json!({"chat_id": 5, "text": "😀".repeat(2049)})).await;
    assert_eq!(d, "Bad Request: message is too long");
    // Markup does not count towards the limit.
    let marked = format!("<b>{}</b>", "y".repeat(4096));
    api.ok("sendMessage", json!({"chat_id": 5, "text": marked, "parse_mode": "HTML"})).await;
    let (_, d) = api.err("sendMessage", json!({"chat_id": 5, "text": "<b>open", "parse_mode": "HTML"})).await;
    assert!(d.starts_with("Bad Request: can't parse entities"), "{d}");
    let (_, d) = api.err("sendMessage", json!({"chat_id": 5, "text": ""})).await;
    assert_eq!(d, "Bad Request: message text is empty");
    let kb = |data: String| json!({"inline_keyboard": [[{"text": "Go", "callback_data": data}]]});
    api.ok("sendMessage", json!({"chat_id": 5, "text": "ok", "reply_markup": kb("d".repeat(64))})).await;
    let (status, d) =
        api.err("sendMessage", json!({"chat_id": 5, "text": "ok", "reply_markup": kb("d".repeat(65))})).await;
    assert_eq!((status, d.as_str()), (400, "Bad Request: BUTTON_DATA_INVALID"));
    // reply_markup as a JSON string, the way form bodies carry it.
    let r = api
        .ok("sendMessage", json!({"chat_id": "5", "text": "ok", "reply_markup": kb("abc".into()).to_string()}))
        .await;
    assert_eq!(r["reply_markup"]["inline_keyboard"][0][0]["callback_data"], json!("abc"));
    let shown = fake.bot_messages(5);
    assert_eq!(shown.last().unwrap().content.buttons(), vec![("Go".to_string(), Some("abc".to_string()))]);
}

#[tokio::test]
async fn edits_not_modified_not_found_and_history() {
    let fake = FakeTelegram::start_with(relaxed()).await;
    let api = Api::new(&fake);
    let ann = FakeUser::new(5, "Ann");
    fake.send_text(&FakeChat::private(&ann), &ann, "hi");
    let m = api.ok("sendMessage", json!({"chat_id": 5, "text": "step 1"})).await;
    let id = m["message_id"].as_i64().unwrap();
    api.ok("editMessageText", json!({"chat_id": 5, "message_id": id, "text": "step 2"})).await;
    let (status, d) = api.err("editMessageText", json!({"chat_id": 5, "message_id": id, "text": "step 2"})).await;
    assert_eq!(status, 400);
    assert!(d.starts_with("Bad Request: message is not modified: "), "{d}");
    // Same text, new keyboard: modified.
    let kb = json!({"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]});
    api.ok("editMessageReplyMarkup", json!({"chat_id": 5, "message_id": id, "reply_markup": kb})).await;
    let (_, d) = api.err("editMessageText", json!({"chat_id": 5, "message_id": 9999, "text": "x"})).await;
    assert_eq!(d, "Bad Request: message to edit not found");
    // A user's message is not the bot's to edit.
    let (_, d) = api.err("editMessageText", json!({"chat_id": 5, "message_id": 1, "text": "x"})).await;
    assert_eq!(d, "Bad Request: message to edit not found");
    let msgs = fake.bot_messages(5);
    let msg = msgs.iter().find(|m| m.message_id == id).unwrap();
    assert_eq!(msg.content.text.as_deref(), Some("step 2"));
    assert_eq!(msg.history.iter().map(|c| c.text.clone().unwrap()).collect::<Vec<_>>(), vec!["step 1", "step 2"]);
    api.ok("deleteMessage", json!({"chat_id": 5, "message_id": id})).await;
    let (_, d) = api.err("deleteMessage", json!({"chat_id": 5, "message_id": id})).await;
    assert_eq!(d, "Bad Request: message to delete not found");
    assert!(fake.bot_messages(5).is_empty());
}

#[tokio::test]
async fn photos_documents_albums_files_and_captions() {
    let fake = FakeTelegram::start_with(relaxed()).await;
    let api = Api::new(&fake);
    let ann = FakeUser::new(5, "Ann");
    fake.send_text(&FakeChat::private(&ann), &ann, "hi");
    let img = png(64, 48);
    let form = Form::new()
        .text("chat_id", "5")
        .text("caption", "<b>result</b>")
        .text("parse_mode", "HTML")
        .part("photo", Part::bytes(img.clone()).file_name("a.png"));
    let (status, v) = api.multipart("sendPhoto", form).await;
    assert_eq!(status, 200, "{v}");
    let sizes = v["result"]["photo"].as_array().unwrap();
    let big = sizes.last().unwrap();
    assert_eq!((big["width"].as_u64(), big["height"].as_u64()), (Some(64), Some(48)));
    assert_eq!(v["result"]["caption"], json!("result"));
    let file_id = big["file_id"].as_str().unwrap().to_string();
    // Reuse by file id, no upload.
    let again = api.ok("sendPhoto", json!({"chat_id": 5, "photo": file_id})).await;
    assert_eq!(again["photo"].as_array().unwrap().last().unwrap()["file_unique_id"], big["file_unique_id"]);
    let (_, d) = api.err("sendPhoto", json!({"chat_id": 5, "photo": "nonsense"})).await;
    assert_eq!(d, "Bad Request: wrong file identifier/HTTP URL specified");
    // getFile + download gives the same bytes.
    let f = api.ok("getFile", json!({"file_id": file_id})).await;
    let url = format!("{}/file/bot{}/{}", fake.api_url(), fake.token(), f["file_path"].as_str().unwrap());
    assert_eq!(reqwest::get(url).await.unwrap().bytes().await.unwrap().to_vec(), img);
    // Caption limit.
    let form = Form::new()
        .text("chat_id", "5")
        .text("caption", "c".repeat(1025))
        .part("photo", Part::bytes(img.clone()).file_name("a.png"));
    let (status, v) = api.multipart("sendPhoto", form).await;
    assert_eq!((status, v["description"].as_str()), (400, Some("Bad Request: message caption is too long")));
    // Photo dimension limits: width + height over 10000, or a ratio over 20.
    let form = Form::new().text("chat_id", "5").part("photo", Part::bytes(png(2100, 100)).file_name("w.png"));
    let (_, v) = api.multipart("sendPhoto", form).await;
    assert_eq!(v["description"], json!("Bad Request: PHOTO_INVALID_DIMENSIONS"));
    let form = Form::new().text("chat_id", "5").part("photo", Part::bytes(b"not an image".to_vec()).file_name("x.png"));
    let (_, v) = api.multipart("sendPhoto", form).await;
    assert_eq!(v["description"], json!("Bad Request: IMAGE_PROCESS_FAILED"));
    // The same picture is fine as a document.
    let form = Form::new().text("chat_id", "5").part("document", Part::bytes(png(2100, 100)).file_name("w.png"));
    let (status, v) = api.multipart("sendDocument", form).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["document"]["mime_type"], json!("image/png"));
    // An album of uploads, one caption.
    let media = json!([
        {"type": "photo", "media": "attach://p0", "caption": "two results"},
        {"type": "photo", "media": "attach://p1"}
    ]);
    let form = Form::new()
        .text("chat_id", "5")
        .text("media", media.to_string())
        .part("p0", Part::bytes(png(8, 8)).file_name("p0.png"))
        .part("p1", Part::bytes(png(9, 9)).file_name("p1.png"));
    let (status, v) = api.multipart("sendMediaGroup", form).await;
    assert_eq!(status, 200, "{v}");
    let items = v["result"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["media_group_id"], items[1]["media_group_id"]);
    let (_, d) = api.err("sendMediaGroup", json!({"chat_id": 5, "media": [{"type": "photo", "media": file_id}]})).await;
    assert!(d.contains("wrong number of media"), "{d}");
    // Edit the media of a photo message in place; the same file again is "not modified".
    let id = again["message_id"].as_i64().unwrap();
    let form = Form::new()
        .text("chat_id", "5")
        .text("message_id", id.to_string())
        .text("media", json!({"type": "photo", "media": "attach://n", "caption": "v2"}).to_string())
        .part("n", Part::bytes(png(10, 10)).file_name("n.png"));
    let (status, v) = api.multipart("editMessageMedia", form).await;
    assert_eq!(status, 200, "{v}");
    let new_id = v["result"]["photo"].as_array().unwrap().last().unwrap()["file_id"].clone();
    let (_, d) = api
        .err(
            "editMessageMedia",
            json!({"chat_id": 5, "message_id": id, "media": {"type": "photo", "media": new_id, "caption": "v2"}}),
        )
        .await;
    assert!(d.starts_with("Bad Request: message is not modified"), "{d}");
    api.ok("editMessageCaption", json!({"chat_id": 5, "message_id": id, "caption": "v3"})).await;
    let msg = fake.bot_messages(5).into_iter().find(|m| m.message_id == id).unwrap();
    assert_eq!(msg.content.caption.as_deref(), Some("v3"));
    assert_eq!(msg.history.len(), 2);
    // A user's photo can be fetched by the bot.
    let pid = fake.send_photo(&FakeChat::private(&ann), &ann, png(20, 30), Some("/upscale"));
    let u = api.ok("getUpdates", json!({})).await;
    let last = u.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["message"]["message_id"].as_i64(), Some(pid));
    assert_eq!(last["message"]["caption_entities"][0]["type"], json!("bot_command"));
    let fid = last["message"]["photo"].as_array().unwrap().last().unwrap()["file_id"].as_str().unwrap().to_string();
    let f = api.ok("getFile", json!({"file_id": fid})).await;
    assert!(f["file_path"].as_str().unwrap().starts_with("photos/"));
}

#[tokio::test]
async fn blocked_callbacks_and_commands() {
    let fake = FakeTelegram::start_with(relaxed()).await;
    let api = Api::new(&fake);
    let ann = FakeUser::new(5, "Ann");
    let chat = FakeChat::private(&ann);
    fake.send_text(&chat, &ann, "hi");
    let kb = json!({"inline_keyboard": [[{"text": "Rerun", "callback_data": "tok1"}]]});
    let m = api.ok("sendMessage", json!({"chat_id": 5, "text": "done", "reply_markup": kb})).await;
    let qid = fake.press(&chat, &ann, m["message_id"].as_i64().unwrap(), "Rerun");
    let u = api.ok("getUpdates", json!({})).await;
    let cb = &u.as_array().unwrap().last().unwrap()["callback_query"];
    assert_eq!(cb["data"], json!("tok1"));
    assert_eq!(cb["message"]["message_id"], m["message_id"]);
    api.ok("answerCallbackQuery", json!({"callback_query_id": qid, "text": "Queued"})).await;
    let (_, d) = api.err("answerCallbackQuery", json!({"callback_query_id": qid})).await;
    assert_eq!(d, "Bad Request: query is too old and response timeout expired or query ID is invalid");
    assert_eq!(fake.callbacks()[0].answer.as_deref(), Some("Queued"));
    fake.block(5);
    let (status, d) = api.err("sendMessage", json!({"chat_id": 5, "text": "x"})).await;
    assert_eq!((status, d.as_str()), (403, "Forbidden: bot was blocked by the user"));
    fake.unblock(5);
    api.ok("sendMessage", json!({"chat_id": 5, "text": "x"})).await;
    let (_, d) = api.err("setMyCommands", json!({"commands": [{"command": "Bad-Name", "description": "x"}]})).await;
    assert_eq!(d, "Bad Request: BOT_COMMAND_INVALID");
    api.ok("setMyCommands", json!({"commands": [{"command": "upscale", "description": "Upscale a photo"}]})).await;
    assert_eq!(fake.commands(), vec![("upscale".to_string(), "Upscale a photo".to_string())]);
    let got = api.ok("getMyCommands", json!({})).await;
    assert_eq!(got[0]["command"], json!("upscale"));
}

#[tokio::test]
async fn flood_control_per_chat_group_and_global() {
    let fake = FakeTelegram::start_with(FakeConfig {
        limits: RateLimits { chat_per_second: 1.0, chat_burst: 3.0, group_per_minute: 5, global_per_second: 8 },
        ..Default::default()
    })
    .await;
    let api = Api::new(&fake);
    let ann = FakeUser::new(5, "Ann");
    fake.send_text(&FakeChat::private(&ann), &ann, "hi");
    for _ in 0..3 {
        api.ok("sendMessage", json!({"chat_id": 5, "text": "x"})).await;
    }
    let (status, v) = api.call("sendMessage", json!({"chat_id": 5, "text": "x"})).await;
    assert_eq!(status, 429);
    assert_eq!(v["description"], json!("Too Many Requests: retry after 1"));
    assert_eq!(v["parameters"]["retry_after"], json!(1));
    assert_eq!(fake.stats().violations, 0);
    // Ignoring retry_after is a violation.
    let (status, _) = api.call("sendMessage", json!({"chat_id": 5, "text": "x"})).await;
    assert_eq!(status, 429);
    assert_eq!(fake.stats().violations, 1);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    api.ok("sendMessage", json!({"chat_id": 5, "text": "x"})).await;
    // Group: 5 a minute here.
    let g = FakeChat::group(-1001, "Team");
    fake.send_text(&g, &ann, "hi");
    let mut sent = 0;
    for _ in 0..6 {
        let (s, _) = api.call("sendMessage", json!({"chat_id": -1001, "text": "x"})).await;
        if s == 200 {
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1001)).await;
    }
    assert_eq!(sent, 5);
    let (s, v) = api.call("sendMessage", json!({"chat_id": -1001, "text": "x"})).await;
    assert_eq!(s, 429);
    assert!(v["parameters"]["retry_after"].as_u64().unwrap() > 50, "{v}");
    // Global: 8 a second across chats.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut codes = vec![];
    for i in 0..9 {
        let u = FakeUser::new(1000 + i, "U");
        fake.send_text(&FakeChat::private(&u), &u, "hi");
        codes.push(api.call("sendMessage", json!({"chat_id": 1000 + i, "text": "x"})).await.0);
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 8, "{codes:?}");
    assert_eq!(codes[8], 429);
    assert!(fake.stats().served_429 >= 4);
}

/// Someone the bot saw only in a group cannot be written to privately until
/// they start a private chat (the real API's 403).
#[tokio::test]
async fn private_chats_exist_only_once_the_user_starts_one() {
    let fake = FakeTelegram::start_with(relaxed()).await;
    let api = Api::new(&fake);
    let ann = FakeUser::new(5, "Ann");
    let group = FakeChat::group(-1005, "Friends");
    fake.send_text(&group, &ann, "hello all");
    let (status, d) = api.err("sendMessage", json!({"chat_id": 5, "text": "secret"})).await;
    assert_eq!((status, d.as_str()), (403, "Forbidden: bot can't initiate conversation with a user"));
    assert!(fake.bot_messages(5).is_empty());
    fake.send_text(&FakeChat::private(&ann), &ann, "/start");
    api.ok("sendMessage", json!({"chat_id": 5, "text": "secret"})).await;
    assert_eq!(fake.bot_messages(5).len(), 1);
}
