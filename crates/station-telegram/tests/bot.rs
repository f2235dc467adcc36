//! The Telegram bot end to end: the fake Bot API, the real core, flows,
//! workers and the fake ComfyUI — on SQLite and PostgreSQL.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::{Config, Station, Workers};
use station_flows::{FlowSettings, Flows, FlowsRunner};
use station_telegram::{PaceLimits, TelegramBot, TelegramConfig, TelegramOptions, TelegramRunner};
use station_telegram_fake::{FakeChat, FakeConfig, FakeMessage, FakeTelegram, FakeUser, RateLimits};
use station_testkit::testing::{self, TestDb};

const WAIT: Duration = Duration::from_secs(40);

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::RgbImage::from_pixel(w, h, image::Rgb([30, 140, 200])).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

struct Env {
    station: Station,
    flows: Flows,
    tg: FakeTelegram,
    bot: Option<(TelegramBot, TelegramRunner)>,
    runner: Option<FlowsRunner>,
    workers: Option<Workers>,
    comfy: Arc<ComfyExecutor>,
    comfy_fake: FakeComfy,
    db: TestDb,
    _dir: tempfile::TempDir,
}

fn fast_options() -> TelegramOptions {
    TelegramOptions {
        pace: PaceLimits {
            chat_interval: Duration::from_millis(60),
            group_max: 20,
            group_window: Duration::from_secs(60),
            global_per_second: 30,
        },
        poll_timeout: Duration::from_secs(2),
        // A process killed by a test hands polling over within seconds.
        poller_lease: Duration::from_secs(4),
        ..Default::default()
    }
}

fn fast_fake() -> FakeConfig {
    FakeConfig {
        limits: RateLimits {
            chat_per_second: 1000.0 / 60.0,
            chat_burst: 3.0,
            group_per_minute: 20,
            global_per_second: 30,
        },
        ..Default::default()
    }
}

async fn setup(db: TestDb, tg: FakeTelegram) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    config.queue.lease_seconds = 2;
    config.queue.retry_base_ms = 50;
    config.queue.poll_ms = 50;
    config.queue.per_user_running = 16;
    // The flood test sends 100 commands at once; the anti-abuse limits are not under test here.
    config.limits.requests_per_minute = 10_000;
    config.limits.max_queued = 10_000;
    config.points.starting_grant = 100_000;
    TelegramConfig { token: Some(tg.token()), api_url: tg.api_url(), ..Default::default() }.apply_to(&mut config);
    station_testkit::install_dream(&config.tools_dir());
    let (station, errors) = Station::with_store(config, db.store.clone()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let fake = FakeComfy::start(FakeOptions {
        checkpoints: vec!["v1-5-pruned-emaonly.safetensors".into()],
        ..Default::default()
    })
    .await;
    let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 8, tags: vec![] };
    let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
    comfy.start_health_checks(Duration::from_millis(200), station.wake.clone()).await;
    station.register_executor(comfy.clone());
    station.register_executor(Arc::new(station_core::MediaExecutor::new(&station.config)));
    let workers = Some(Workers::start(&station));
    let flows = Flows::with_settings(station.clone(), FlowSettings { progress_every_ms: 50, ..Default::default() });
    let runner = Some(flows.start());
    Env { station, flows, tg, bot: None, runner, workers, comfy, comfy_fake: fake, db, _dir: dir }
}

impl Env {
    async fn start_bot(&mut self, options: TelegramOptions) {
        let config = TelegramConfig::from_config(&self.station.config).unwrap();
        let bot = TelegramBot::new(self.station.clone(), self.flows.clone(), &config, options).unwrap();
        let runner = bot.start().await.unwrap();
        self.bot = Some((bot, runner));
    }

    async fn stop(mut self) {
        if let Some((_, r)) = self.bot.take() {
            r.shutdown().await;
        }
        if let Some(r) = self.runner.take() {
            r.shutdown().await;
        }
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        self.comfy.shutdown();
    }

    async fn wait_msgs(&self, chat: i64, what: &str, pred: impl Fn(&[FakeMessage]) -> bool) -> Vec<FakeMessage> {
        match self.tg.wait_for(WAIT, |t| Some(t.bot_messages(chat)).filter(|m| pred(m))).await {
            Some(m) => m,
            None => {
                panic!("[{}] timed out waiting for {what}; bot sent: {:#?}", self.db.kind, self.tg.bot_messages(chat))
            }
        }
    }
}

fn photos(msgs: &[FakeMessage]) -> Vec<FakeMessage> {
    msgs.iter().filter(|m| m.content.photo.is_some() || m.content.document.is_some()).cloned().collect()
}

fn results(msgs: &[FakeMessage]) -> Vec<FakeMessage> {
    photos(msgs).into_iter().filter(|m| m.content.buttons().iter().any(|(l, _)| l.contains("Rerun"))).collect()
}

#[tokio::test]
async fn start_upscale_reply_dream_progress_rerun_and_menu() {
    for db in testing::all().await {
        let k = db.kind;
        let mut env = setup(db, FakeTelegram::start_with(fast_fake()).await).await;
        env.start_bot(fast_options()).await;
        // The command menu lists built-ins and public tools.
        let menu = env.tg.wait_for(WAIT, |t| Some(t.commands()).filter(|c| !c.is_empty())).await.unwrap();
        let names: Vec<&str> = menu.iter().map(|(c, _)| c.as_str()).collect();
        for c in ["start", "help", "make", "settings", "status", "dream", "upscale"] {
            assert!(names.contains(&c), "[{k}] menu lacks /{c}: {names:?}");
        }
        let ann = FakeUser::new(4242, "Ann");
        let chat = FakeChat::private(&ann);
        // Onboarding.
        env.tg.send_text(&chat, &ann, "/start");
        let m = env.wait_msgs(chat.id, "a welcome", |m| !m.is_empty()).await;
        assert!(m[0].content.text.as_deref().is_some_and(|t| !t.is_empty()), "[{k}] {m:?}");
        let account = env.station.account("telegram", "4242", "Ann").await.unwrap();
        assert_eq!(account.name, "Ann");
        // /upscale as a reply to a photo: the photo is the input, the result a photo twice the size.
        let photo = env.tg.send_photo(&chat, &ann, png(8, 6), None);
        env.tg.send_reply(&chat, &ann, photo, "/upscale");
        let msgs = env.wait_msgs(chat.id, "the upscaled photo", |m| !results(m).is_empty()).await;
        let result = &results(&msgs)[0];
        let p = result.content.photo.as_ref().expect("sent as a photo");
        assert_eq!((p.width, p.height), (16, 12), "[{k}] upscaled 2x");
        // A text-to-image command: live progress edited in place, then the result with buttons.
        // Slow sampling steps, so the job runs long enough to report progress.
        env.comfy_fake.set_step_delay(400);
        env.tg.send_text(&chat, &ann, "/dream a red fox in the snow");
        let msgs = env.wait_msgs(chat.id, "the dream result", |m| results(m).len() >= 2).await;
        let dream = results(&msgs)[1].clone();
        env.comfy_fake.set_step_delay(0);
        // Issue 21, item 6: the progress (text, or a photo with the latest
        // preview) was edited in place while the job ran, and the result took
        // its place: a finished job leaves exactly one message.
        let shown = |m: &FakeMessage| m.content.text.clone().or(m.content.caption.clone()).unwrap_or_default();
        let after: Vec<FakeMessage> =
            env.tg.bot_messages(chat.id).into_iter().filter(|m| m.message_id > result.message_id).collect();
        assert_eq!(after.len(), 1, "[{k}] one message for the job: {after:#?}");
        assert_eq!(after[0].message_id, dream.message_id, "[{k}]");
        let progress: Vec<FakeMessage> = env
            .tg
            .messages(chat.id)
            .into_iter()
            .filter(|m| m.from_bot && m.message_id > result.message_id && m.message_id <= dream.message_id)
            .filter(|m| {
                shown(m).starts_with("Dream: ") || m.history.iter().any(|h| format!("{h:?}").contains("Dream: "))
            })
            .collect();
        assert!(!progress.is_empty(), "[{k}] progress was shown");
        assert!(progress.iter().any(|m| !m.history.is_empty()), "[{k}] edited in place, not sent again: {progress:#?}");
        // Rerun: answered, and a new result.
        let q = env.tg.press(&chat, &ann, dream.message_id, "Rerun");
        env.wait_msgs(chat.id, "the rerun result", |m| results(m).len() >= 3).await;
        let answered =
            env.tg.wait_for(WAIT, |t| t.callbacks().into_iter().find(|c| c.id == q && c.answer.is_some())).await;
        assert!(answered.is_some(), "[{k}] button press answered");
        // A stale or forged button is answered too, with a toast.
        let q = env.tg.press_data(&chat, &ann, dream.message_id, "nonsense");
        let a = env.tg.wait_for(WAIT, |t| t.callbacks().into_iter().find(|c| c.id == q && c.answer.is_some())).await;
        assert!(a.unwrap().answer.unwrap().contains("expired"), "[{k}]");
        // Nothing the bot sent broke a limit.
        let stats = env.tg.stats();
        assert_eq!(stats.violations, 0, "[{k}] {:?}", stats.errors);
        let bad: Vec<_> =
            stats.errors.iter().filter(|e| e.code == 400 && !e.description.contains("not modified")).collect();
        assert!(bad.is_empty(), "[{k}] requests refused: {bad:?}");
        env.stop().await;
    }
}

#[tokio::test]
async fn updates_survive_a_stop_between_receiving_and_processing() {
    for db in testing::all().await {
        let k = db.kind;
        let mut env = setup(db, FakeTelegram::start_with(fast_fake()).await).await;
        // Receive only: updates are stored and acknowledged, not processed.
        env.start_bot(TelegramOptions { process: false, ..fast_options() }).await;
        let users: Vec<FakeUser> = (0..3).map(|i| FakeUser::new(500 + i, "U")).collect();
        for u in &users {
            env.tg.send_text(&FakeChat::private(u), u, "/help");
            env.tg.send_text(&FakeChat::private(u), u, "/balance");
        }
        let bot_id = env.bot.as_ref().unwrap().0.bot_id().to_string();
        let source = station_telegram::scope(&bot_id);
        let inbox = env.station.inbox(&source);
        let mut stored = 0;
        for _ in 0..200 {
            stored = inbox.list().await.unwrap().len();
            if stored == 6 && env.tg.pending_updates() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(stored, 6, "[{k}] stored");
        let (_, runner) = env.bot.take().unwrap();
        runner.abort();
        assert_eq!(env.tg.pending_updates(), 0, "[{k}] acknowledged once stored");
        assert!(users.iter().all(|u| env.tg.bot_messages(u.id).is_empty()), "[{k}] nothing processed yet");
        // A new process picks them up: each processed exactly once, in order.
        env.start_bot(fast_options()).await;
        for u in &users {
            env.wait_msgs(u.id, "two answers", |m| m.len() >= 2).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for u in &users {
            assert_eq!(env.tg.bot_messages(u.id).len(), 2, "[{k}] exactly one answer per update");
        }
        let rows = env.station.inbox(&source).list().await.unwrap();
        assert!(rows.iter().all(|r| r.state == "done" && r.attempts == 1), "[{k}] {rows:?}");
        env.stop().await;
    }
}

#[tokio::test]
async fn webhook_mode_checks_the_secret() {
    let db = testing::sqlite().await;
    let tg = FakeTelegram::start_with(fast_fake()).await;
    let mut env = setup(db, tg).await;
    // Serve the webhook route on a local port, as `station serve` mounts it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = TelegramConfig {
        public_url: Some(base.clone()),
        webhook_secret: Some("hook_secret-1".into()),
        ..TelegramConfig::from_config(&env.station.config).unwrap()
    };
    let bot = TelegramBot::new(env.station.clone(), env.flows.clone(), &config, fast_options()).unwrap();
    let router = bot.webhook_router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let runner = bot.start().await.unwrap();
    assert_eq!(env.tg.webhook(), Some((format!("{base}/telegram/webhook"), Some("hook_secret-1".into()))));
    let http = reqwest::Client::new();
    let update = json!({"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 9, "type": "private"},
        "from": {"id": 9, "is_bot": false, "first_name": "Eve"}, "text": "/help"}});
    for secret in [None, Some("wrong")] {
        let mut req = http.post(format!("{base}/telegram/webhook")).json(&update);
        if let Some(s) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), 401);
    }
    assert!(env.station.inbox(&station_telegram::scope(bot.bot_id())).list().await.unwrap().is_empty());
    // Real deliveries from the fake carry the secret and are processed.
    let bob = FakeUser::new(77, "Bob");
    env.tg.send_text(&FakeChat::private(&bob), &bob, "/help");
    env.wait_msgs(77, "help over the webhook", |m| !m.is_empty()).await;
    assert_eq!(env.tg.stats().webhook_refused, 0);
    runner.shutdown().await;
    env.bot = None;
    env.stop().await;
}

/// Issue 17, item 13: a webhook body without `update_id` is acknowledged
/// with 200 and dropped (stored nowhere, answered nowhere); a 5xx would make
/// Telegram deliver it again forever. Updates after it are processed.
#[tokio::test]
async fn webhook_update_without_update_id_is_acknowledged_and_dropped() {
    let db = testing::sqlite().await;
    let tg = FakeTelegram::start_with(fast_fake()).await;
    let mut env = setup(db, tg).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = TelegramConfig {
        public_url: Some(base.clone()),
        webhook_secret: Some("hook_secret-2".into()),
        ..TelegramConfig::from_config(&env.station.config).unwrap()
    };
    let bot = TelegramBot::new(env.station.clone(), env.flows.clone(), &config, fast_options()).unwrap();
    let router = bot.webhook_router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let runner = bot.start().await.unwrap();
    let http = reqwest::Client::new();
    let no_id = json!({"message": {"message_id": 1, "date": 0, "chat": {"id": 9, "type": "private"},
        "from": {"id": 9, "is_bot": false, "first_name": "Eve"}, "text": "/help"}});
    for body in [no_id, json!({"update_id": "seven"}), json!({})] {
        let res = http
            .post(format!("{base}/telegram/webhook"))
            .header("X-Telegram-Bot-Api-Secret-Token", "hook_secret-2")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{body}");
    }
    assert!(env.station.inbox(&station_telegram::scope(bot.bot_id())).list().await.unwrap().is_empty());
    // Real updates still flow.
    let bob = FakeUser::new(78, "Bob");
    env.tg.send_text(&FakeChat::private(&bob), &bob, "/help");
    env.wait_msgs(78, "help over the webhook", |m| !m.is_empty()).await;
    assert!(env.tg.bot_messages(9).is_empty(), "the dropped update was not answered");
    runner.shutdown().await;
    env.bot = None;
    env.stop().await;
}

#[tokio::test]
async fn a_flood_of_jobs_from_one_chat_respects_the_limits() {
    let db = testing::sqlite().await;
    let mut env = setup(db, FakeTelegram::start_with(fast_fake()).await).await;
    env.start_bot(fast_options()).await;
    let ann = FakeUser::new(31337, "Ann");
    let chat = FakeChat::private(&ann);
    // A fast native tool, so the backend is not what limits the pace.
    let photo = env.tg.send_photo(&chat, &ann, png(6, 4), None);
    let n = 100;
    for _ in 0..n {
        env.tg.send_reply(&chat, &ann, photo, "/flip");
    }
    let t0 = std::time::Instant::now();
    let msgs = env
        .tg
        .wait_for(Duration::from_secs(240), |t| Some(t.bot_messages(chat.id)).filter(|m| results(m).len() >= n))
        .await;
    let Some(msgs) = msgs else {
        let jobs = env.db.store.list_jobs(&station_core::JobFilter { limit: 500, ..Default::default() }).await.unwrap();
        let mut by_status = std::collections::BTreeMap::new();
        for j in &jobs {
            *by_status.entry(j.status.clone()).or_insert(0) += 1;
        }
        let deliveries = env.db.store.conversation_deliveries(&format!("telegram:{}", chat.id)).await.unwrap();
        let mut by_state = std::collections::BTreeMap::new();
        for d in &deliveries {
            *by_state.entry((d.kind.clone(), d.status.clone())).or_insert(0) += 1;
        }
        panic!(
            "only {} results; requests {:?}; jobs {by_status:?}; deliveries {by_state:?}",
            results(&env.tg.bot_messages(chat.id)).len(),
            env.tg.stats().requests
        );
    };
    let stats = env.tg.stats();
    eprintln!(
        "{n} jobs delivered in {:?}: {} bot messages, {} requests, {} 429s",
        t0.elapsed(),
        msgs.len(),
        stats.requests.values().sum::<u64>(),
        stats.served_429
    );
    assert_eq!(stats.violations, 0, "the bot never ignored a retry_after");
    assert_eq!(stats.served_429, 0, "the pace kept under the per-chat limit");
    assert_eq!(results(&msgs).len(), n, "each result exactly once");
    env.stop().await;
}

#[tokio::test]
async fn blocked_users_get_nothing_more_and_their_deliveries_fail() {
    let db = testing::sqlite().await;
    let mut env = setup(db, FakeTelegram::start_with(fast_fake()).await).await;
    env.start_bot(fast_options()).await;
    let ann = FakeUser::new(555, "Ann");
    let chat = FakeChat::private(&ann);
    env.tg.send_text(&chat, &ann, "/help");
    env.wait_msgs(chat.id, "help", |m| !m.is_empty()).await;
    env.tg.block(ann.id);
    env.tg.send_text(&chat, &ann, "/help");
    let refused = env
        .tg
        .wait_for(WAIT, |t| t.stats().errors.into_iter().find(|e| e.code == 403))
        .await
        .expect("a send was refused with 403");
    assert_eq!(refused.description, "Forbidden: bot was blocked by the user");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count_403 = env.tg.stats().errors.iter().filter(|e| e.code == 403).count();
    assert_eq!(count_403, 1, "a blocked chat is not retried");
    assert_eq!(env.tg.bot_messages(chat.id).len(), 1);
    env.stop().await;
}

/// Issue 17, item 3: a many-frame GIF sent in a chat is refused (over
/// `media.max_frames`) with a message saying why, and nothing is stored.
#[tokio::test]
async fn a_many_frame_gif_from_chat_is_refused_before_storing() {
    for db in testing::all().await {
        let k = db.kind;
        let mut env = setup(db, FakeTelegram::start_with(fast_fake()).await).await;
        env.start_bot(fast_options()).await;
        let ann = FakeUser::new(4343, "Ann");
        let chat = FakeChat::private(&ann);
        env.tg.send_photo(&chat, &ann, station_testkit::animated_gif(10_000, 2, 2), Some("/flip"));
        let msgs = env
            .wait_msgs(chat.id, "the refusal", |m| {
                m.iter().any(|m| m.content.text.as_deref().is_some_and(|t| t.contains("cannot be used")))
            })
            .await;
        let text = msgs.iter().find_map(|m| m.content.text.clone().filter(|t| t.contains("cannot be used"))).unwrap();
        assert!(text.contains("frames"), "[{k}] {text}");
        let account = env.station.account("telegram", "4343", "Ann").await.unwrap();
        assert_eq!(env.db.store.count_account_media(&account.id).await.unwrap(), 0, "[{k}] nothing stored");
        env.stop().await;
    }
}
