//! Telegram scenarios end to end through the fake Bot API, the real core,
//! flows, workers and the fake ComfyUI, on SQLite and PostgreSQL: operator
//! commands and their menus, groups, albums, /settings and /status, results
//! as original files and photos fitted to Telegram's limits.

use station_core::Role;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::{Config, Station, Workers};
use station_core::{JobFilter, JobStatus};
use station_flows::{FlowSettings, Flows, FlowsRunner};
use station_telegram::{PaceLimits, TelegramBot, TelegramConfig, TelegramOptions, TelegramRunner};
use station_telegram_fake::{FakeChat, FakeConfig, FakeMessage, FakeTelegram, FakeUser, RateLimits};
use station_testkit::TestDb;
use station_testkit::on_every_db;

const WAIT: Duration = Duration::from_secs(40);

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::RgbImage::from_pixel(w, h, image::Rgb([30, 140, 200])).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn dims(bytes: &[u8]) -> (u32, u32) {
    image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().unwrap().into_dimensions().unwrap()
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
    kind: &'static str,
    db: TestDb,
    _dir: tempfile::TempDir,
}

fn options() -> TelegramOptions {
    TelegramOptions {
        pace: PaceLimits {
            chat_interval: Duration::from_millis(60),
            group_max: 200,
            group_window: Duration::from_secs(60),
            global_per_second: 30,
        },
        poll_timeout: Duration::from_secs(2),
        // A process killed by a test hands polling over within seconds.
        poller_lease: Duration::from_secs(4),
        menu_refresh: Duration::from_millis(150),
        ..Default::default()
    }
}

async fn start(db: TestDb) -> Env {
    start_with(db, |_| {}).await
}

async fn start_with(db: TestDb, tweak: impl FnOnce(&mut Config)) -> Env {
    let tg = FakeTelegram::start_with(FakeConfig {
        limits: RateLimits {
            chat_per_second: 1000.0 / 60.0,
            chat_burst: 3.0,
            group_per_minute: 200,
            global_per_second: 30,
        },
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    config.queue.lease_seconds = 2;
    config.queue.retry_base_ms = 50;
    config.queue.poll_ms = 50;
    config.limits.requests_per_minute = 10_000;
    config.points.starting_grant = 100_000;
    TelegramConfig { token: Some(tg.token()), api_url: tg.api_url(), ..Default::default() }.apply_to(&mut config);
    tweak(&mut config);
    std::fs::create_dir_all(config.tools_dir()).unwrap();
    std::fs::write(config.tools_dir().join("dream.json"), station_testkit::dream_tool("dream").to_string()).unwrap();
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
    let tg_config = TelegramConfig::from_config(&station.config).unwrap();
    let bot = TelegramBot::new(station.clone(), flows.clone(), &tg_config, options()).unwrap();
    let bot_runner = bot.start().await.unwrap();
    Env {
        station,
        flows,
        tg,
        bot: Some((bot, bot_runner)),
        runner,
        workers,
        comfy,
        comfy_fake: fake,
        kind: db.kind,
        db,
        _dir: dir,
    }
}

fn shown(m: &FakeMessage) -> String {
    m.content.text.clone().or(m.content.caption.clone()).unwrap_or_default()
}

fn results(msgs: &[FakeMessage]) -> Vec<FakeMessage> {
    msgs.iter()
        .filter(|m| m.content.photo.is_some() || m.content.document.is_some())
        .filter(|m| m.content.buttons().iter().any(|(l, _)| l.contains("Rerun")))
        .cloned()
        .collect()
}

impl Env {
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
        let _ = &self.flows;
    }

    async fn wait_msgs(&self, chat: i64, what: &str, pred: impl Fn(&[FakeMessage]) -> bool) -> Vec<FakeMessage> {
        match self.tg.wait_for(WAIT, |t| Some(t.bot_messages(chat)).filter(|m| pred(m))).await {
            Some(m) => m,
            None => panic!("[{}] timed out waiting for {what}; bot sent: {:#?}", self.kind, self.tg.bot_messages(chat)),
        }
    }

    /// The newest bot message in `chat` whose text or caption contains `needle`.
    async fn wait_text(&self, chat: i64, needle: &str) -> FakeMessage {
        let msgs = self.wait_msgs(chat, needle, |m| m.iter().any(|m| shown(m).contains(needle))).await;
        msgs.into_iter().rev().find(|m| shown(m).contains(needle)).unwrap()
    }

    /// The newest bot message in `chat` with a button whose label contains `label`.
    async fn wait_button(&self, chat: i64, label: &str) -> FakeMessage {
        let has = |m: &FakeMessage| m.content.buttons().iter().any(|(l, _)| l.contains(label));
        let msgs = self.wait_msgs(chat, &format!("a {label:?} button"), |m| m.iter().any(has)).await;
        msgs.into_iter().rev().find(has).unwrap()
    }

    /// Waits for the answer to a button press.
    async fn answer(&self, query: &str) -> String {
        let q = query.to_string();
        let found =
            self.tg.wait_for(WAIT, |t| t.callbacks().into_iter().find(|c| c.id == q && c.answer.is_some())).await;
        found.unwrap_or_else(|| panic!("[{}] press {query} was never answered", self.kind)).answer.unwrap()
    }

    /// Whether one of the account's jobs reaches `running` within the wait.
    async fn wait_running(&self, account_id: &str) -> bool {
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if self.jobs_of(account_id).await.iter().any(|j| j.status() == JobStatus::Running) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    async fn jobs_of(&self, account_id: &str) -> Vec<station_core::JobRow> {
        let f = JobFilter { account_id: Some(account_id.into()), limit: 100, ..Default::default() };
        self.db.store.list_jobs(&f).await.unwrap()
    }
}

fn names(menu: &[(String, String)]) -> Vec<String> {
    menu.iter().map(|(c, _)| c.clone()).collect()
}

/// `/queue` and `/grant` exist for admins only, with a menu of their own in
/// their private chat that follows role changes and tool changes.
async fn operator_commands_and_menus(db: TestDb) {
    let env = start(db).await;
    let k = env.kind;
    let ann = FakeUser::new(7101, "Ann");
    let olga = FakeUser::new(7102, "Olga");
    let (ann_chat, olga_chat) = (FakeChat::private(&ann), FakeChat::private(&olga));
    env.tg.send_text(&ann_chat, &ann, "/start");
    env.tg.send_text(&olga_chat, &olga, "/start");
    env.wait_msgs(ann.id, "ann's welcome", |m| !m.is_empty()).await;
    env.wait_msgs(olga.id, "olga's welcome", |m| !m.is_empty()).await;
    let default = env.tg.wait_for(WAIT, |t| Some(t.commands()).filter(|c| !c.is_empty())).await.unwrap();
    assert!(!names(&default).iter().any(|c| c == "queue" || c == "grant"), "[{k}] public menu: {default:?}");

    // Not an admin yet: the commands do not exist.
    env.tg.send_text(&olga_chat, &olga, "/queue");
    env.wait_text(olga.id, "Unknown command /queue").await;
    assert_eq!(env.tg.menu(&format!("chat:{}", olga.id)), None, "[{k}] no admin menu yet");

    // Made an admin by another process (`station users`): the menu follows.
    let olga_acc = env.db.store.find_account_by_identity("telegram", &olga.id.to_string()).await.unwrap().unwrap();
    let ann_acc = env.db.store.find_account_by_identity("telegram", &ann.id.to_string()).await.unwrap().unwrap();
    env.db.store.set_account_role(&olga_acc.id, Role::Admin).await.unwrap();
    let scope = format!("chat:{}", olga.id);
    let admin_menu = env
        .tg
        .wait_for(WAIT, |t| t.menu(&scope).filter(|m| names(m).contains(&"grant".to_string())))
        .await
        .unwrap_or_else(|| panic!("[{k}] admin menu never set: {:?}", env.tg.menus()));
    for c in ["start", "help", "dream", "queue", "grant"] {
        assert!(names(&admin_menu).iter().any(|n| n == c), "[{k}] admin menu lacks /{c}: {admin_menu:?}");
    }
    assert_eq!(names(&env.tg.menu_seen(olga.id, olga.id)), names(&admin_menu), "[{k}] what Olga sees");
    // Ann sees the public menu as it is now (the model tools join it once the
    // backend's health check has stored its checkpoints, which may be after
    // `default` was read above).
    let public = env.tg.commands();
    assert_eq!(names(&env.tg.menu_seen(ann.id, ann.id)), names(&public), "[{k}] what Ann sees");
    assert!(!names(&public).iter().any(|c| c == "queue" || c == "grant"), "[{k}] public menu: {public:?}");

    // A new tool reaches both menus.
    let tools = env.station.config.tools_dir();
    std::fs::write(tools.join("muse.json"), station_testkit::dream_tool("muse").to_string()).unwrap();
    env.station.tools.reload();
    env.tg
        .wait_for(WAIT, |t| {
            let both = names(&t.commands()).contains(&"muse".to_string())
                && t.menu(&scope).is_some_and(|m| names(&m).contains(&"muse".to_string()));
            both.then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("[{k}] menus not updated for the new tool: {:?}", env.tg.menus()));

    // Ann cannot use them.
    env.tg.send_text(&ann_chat, &ann, "/queue");
    env.wait_text(ann.id, "Unknown command /queue").await;
    env.tg.send_text(&ann_chat, &ann, &format!("/grant telegram:{} 1000", ann.id));
    env.wait_text(ann.id, "Unknown command /grant").await;

    // /queue: depth, running jobs, backends with health and load.
    env.tg.send_text(&olga_chat, &olga, "/queue");
    let q = env.wait_text(olga.id, "Queue: ").await;
    let text = shown(&q);
    assert!(text.contains("Queue: 0 waiting"), "[{k}] {text}");
    assert!(text.contains("Running: none"), "[{k}] {text}");
    assert!(text.contains("comfyui") && text.contains("b0") && text.contains("media"), "[{k}] {text}");
    // With a job running on a slowed backend.
    env.comfy_fake.set_step_delay(300);
    env.tg.send_text(&ann_chat, &ann, "/dream a slow lighthouse");
    let running = env.wait_running(&ann_acc.id).await;
    assert!(running, "[{k}] the job started");
    env.tg.send_text(&olga_chat, &olga, "/queue");
    let q = env.wait_text(olga.id, "Running: 1").await;
    let text = shown(&q);
    assert!(text.contains("Dream for Ann") && text.contains("on b0"), "[{k}] {text}");
    assert!(text.contains("1 active"), "[{k}] the backend's load: {text}");
    env.comfy_fake.set_step_delay(0);

    // /grant: refused with the reason, then confirmed once.
    env.tg.send_text(&olga_chat, &olga, "/grant telegram:999999 5");
    env.wait_text(olga.id, "no account is known as \"telegram:999999\"").await;
    env.tg.send_text(&olga_chat, &olga, &format!("/grant telegram:{} lots", ann.id));
    env.wait_text(olga.id, "points must be a whole number above 0, got \"lots\"").await;
    env.tg.send_text(&olga_chat, &olga, &format!("/grant telegram:{} 50 thanks for testing", ann.id));
    let confirm = env.wait_button(olga.id, "Grant 50 points").await;
    assert!(shown(&confirm).contains("Grant 50 points to Ann?"), "[{k}] {}", shown(&confirm));
    assert!(shown(&confirm).contains(&ann_acc.id), "[{k}] names the account");
    let entries = env.db.store.ledger_history(&ann_acc.id, None, 100).await.unwrap();
    assert!(entries.iter().all(|e| e.kind != "grant" || e.actor == "system"), "[{k}] nothing before the press");
    let data =
        confirm.content.buttons().into_iter().find(|(l, _)| l.contains("Grant 50")).and_then(|(_, d)| d).unwrap();
    let q1 = env.tg.press(&olga_chat, &olga, confirm.message_id, "Grant 50 points");
    env.answer(&q1).await;
    let granted = env.wait_text(olga.id, "Granted 50 points to Ann").await;
    assert_eq!(granted.message_id, confirm.message_id, "[{k}] the card shows the outcome, its buttons gone");
    // A second press of the same button (a client that still shows it) changes nothing.
    let q2 = env.tg.press_data(&olga_chat, &olga, confirm.message_id, &data);
    assert!(env.answer(&q2).await.contains("moved on"), "[{k}] the stale press is refused");
    // (Ann's balance also moves with her job's settlement: the ledger tells grants apart.)
    let olga_grants = || async {
        let entries = env.db.store.ledger_history(&ann_acc.id, None, 100).await.unwrap();
        entries.into_iter().filter(|e| e.actor == format!("account:{}", olga_acc.id)).collect::<Vec<_>>()
    };
    let grants = olga_grants().await;
    assert_eq!(grants.len(), 1, "[{k}] granted exactly once: {grants:?}");
    assert_eq!((grants[0].kind.as_str(), grants[0].amount), ("grant", 50), "[{k}]");
    assert_eq!(grants[0].reason.as_deref(), Some("thanks for testing"));
    assert_eq!(grants[0].actor, format!("account:{}", olga_acc.id));
    assert!(grants[0].idem_key.starts_with("chat-grant:"), "[{k}] {}", grants[0].idem_key);
    // Ann, by account id this time; Olga's /help lists the operator commands.
    env.tg.send_text(&olga_chat, &olga, &format!("/grant {} 7", ann_acc.id));
    let confirm = env.wait_button(olga.id, "Grant 7 points").await;
    assert!(shown(&confirm).contains(&format!("telegram:{}", ann.id)), "[{k}] shows the identities");
    env.tg.send_text(&olga_chat, &olga, "/help");
    let help = env.wait_text(olga.id, "/grant — ").await;
    assert!(shown(&help).contains("/queue — "), "[{k}]");

    // Demoted: the confirmation still on screen is refused, the menu goes, the commands with it.
    env.db.store.set_account_role(&olga_acc.id, Role::User).await.unwrap();
    let q3 = env.tg.press(&olga_chat, &olga, confirm.message_id, "Grant 7 points");
    env.answer(&q3).await;
    env.wait_text(olga.id, "Only operators can grant points.").await;
    assert_eq!(olga_grants().await.len(), 1, "[{k}] no grant after demotion");
    env.tg
        .wait_for(WAIT, |t| t.menu(&scope).is_none().then_some(()))
        .await
        .unwrap_or_else(|| panic!("[{k}] admin menu not removed: {:?}", env.tg.menus()));
    assert_eq!(names(&env.tg.menu_seen(olga.id, olga.id)), names(&env.tg.commands()), "[{k}] back to default");
    env.tg.send_text(&olga_chat, &olga, "/queue");
    let n = env.tg.bot_messages(olga.id).iter().filter(|m| shown(m).contains("Unknown command /queue")).count();
    env.wait_msgs(olga.id, "a second unknown /queue", |m| {
        m.iter().filter(|m| shown(m).contains("Unknown command /queue")).count() > n
    })
    .await;
    let stats = env.tg.stats();
    let bad: Vec<_> =
        stats.errors.iter().filter(|e| e.code == 400 && !e.description.contains("not modified")).collect();
    assert!(bad.is_empty(), "[{k}] requests refused: {bad:?}");
    env.stop().await;
}

/// In a group: commands for other bots are ignored, replies answer the
/// asker's message, and someone else's presses are refused politely.
async fn group_commands_replies_and_foreign_buttons(db: TestDb) {
    let env = start(db).await;
    let k = env.kind;
    let group = FakeChat::group(-100_777, "Painters");
    let ann = FakeUser::new(7201, "Ann");
    let bob = FakeUser::new(7202, "Bob");
    let me = env.tg.bot_username();
    env.tg.send_text(&group, &ann, "/dream@some_other_bot a cat");
    env.tg.send_text(&group, &bob, "good morning everyone");
    // Someone who never speaks to the bot: chatter and a photo.
    let cid = FakeUser::new(7203, "Cid");
    env.tg.send_text(&group, &cid, "nice weather");
    env.tg.send_photo(&group, &cid, png(16, 16), None);
    let asked = env.tg.send_text(&group, &ann, &format!("/dream@{me} a red fox"));
    let msgs = env.wait_msgs(group.id, "ann's result", |m| !results(m).is_empty()).await;
    let result = results(&msgs)[0].clone();
    assert_eq!(result.reply_to, Some(asked), "[{k}] the result answers Ann's message");
    assert!(msgs.iter().all(|m| m.reply_to == Some(asked)), "[{k}] every answer replies to the asker: {msgs:#?}");
    let ann_acc = env.db.store.find_account_by_identity("telegram", &ann.id.to_string()).await.unwrap().unwrap();
    let jobs = env.jobs_of(&ann_acc.id).await;
    assert_eq!(jobs.len(), 1, "[{k}] the command for another bot was ignored");
    assert!(jobs[0].params.contains("red fox"), "[{k}] {}", jobs[0].params);
    // Chatter not addressed to the bot got no answer (every answer replies to
    // Ann, above), and (updates of one chat run in order) made no account:
    // so no picture of Cid's was downloaded or stored either.
    let cid_acc = env.db.store.find_account_by_identity("telegram", &cid.id.to_string()).await.unwrap();
    assert!(cid_acc.is_none(), "[{k}] no account for a member who never addressed the bot");
    let bob_acc = env.db.store.find_account_by_identity("telegram", &bob.id.to_string()).await.unwrap();
    assert!(bob_acc.is_none(), "[{k}] nor for Bob's greeting");

    // Bob presses Ann's Rerun: refused with a toast, nothing runs.
    let q = env.tg.press(&group, &bob, result.message_id, "Rerun");
    let answer = env.answer(&q).await;
    assert!(answer.contains("someone else"), "[{k}] {answer}");
    // Ann's own press works, and its result answers her latest message.
    let q = env.tg.press(&group, &ann, result.message_id, "Rerun");
    env.answer(&q).await;
    let msgs = env.wait_msgs(group.id, "the rerun", |m| results(m).len() >= 2).await;
    assert_eq!(results(&msgs)[1].reply_to, Some(asked), "[{k}]");
    assert_eq!(env.jobs_of(&ann_acc.id).await.len(), 2, "[{k}] Bob's press ran nothing");
    // Bob's own command is answered in reply to him.
    let bobs = env.tg.send_text(&group, &bob, "/balance");
    let b = env.wait_text(group.id, "You have").await;
    assert_eq!(b.reply_to, Some(bobs), "[{k}]");
    env.stop().await;
}

/// An album with a command caption runs the tool once per photo.
async fn album_runs_the_tool_per_photo(db: TestDb) {
    let env = start(db).await;
    let k = env.kind;
    let ann = FakeUser::new(7301, "Ann");
    let chat = FakeChat::private(&ann);
    env.tg.send_album(&chat, &ann, vec![png(8, 6), png(10, 4), png(6, 12)], Some("/flip"));
    let msgs = env.wait_msgs(chat.id, "three results", |m| results(m).len() >= 3).await;
    let mut got: Vec<(u32, u32)> = results(&msgs)
        .iter()
        .map(|m| {
            let p = m.content.photo.as_ref().expect("a photo");
            (p.width, p.height)
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![(6, 12), (8, 6), (10, 4)], "[{k}] one result per photo");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(results(&env.tg.bot_messages(chat.id)).len(), 3, "[{k}] and no more");
    let acc = env.db.store.find_account_by_identity("telegram", &ann.id.to_string()).await.unwrap().unwrap();
    assert_eq!(env.jobs_of(&acc.id).await.len(), 3, "[{k}]");
    env.stop().await;
}

/// `/settings` changes a default that the next command uses; `/status`
/// during a running job shows it.
async fn settings_then_status_during_a_job(db: TestDb) {
    let env = start(db).await;
    let k = env.kind;
    let ann = FakeUser::new(7401, "Ann");
    let chat = FakeChat::private(&ann);
    env.tg.send_text(&chat, &ann, "/settings dream");
    let edit = env.wait_button(chat.id, "Change width").await;
    assert!(shown(&edit).contains("width: 64 (default)"), "[{k}] {}", shown(&edit));
    env.tg.press(&chat, &ann, edit.message_id, "Change width");
    env.wait_text(chat.id, "send it as a message").await;
    env.tg.send_text(&chat, &ann, "96");
    let edit = env.wait_msgs(chat.id, "the saved width", |m| m.iter().any(|m| shown(m).contains("96 (yours)"))).await;
    let edit = edit.into_iter().rev().find(|m| shown(m).contains("96 (yours)")).unwrap();
    env.tg.press(&chat, &ann, edit.message_id, "Done");
    env.wait_text(chat.id, "Your next Dream run uses these settings").await;
    // The next run uses it, slowly enough to ask for /status meanwhile.
    env.comfy_fake.set_step_delay(400);
    env.tg.send_text(&chat, &ann, "/dream a quiet harbour");
    let acc = env.db.store.find_account_by_identity("telegram", &ann.id.to_string()).await.unwrap().unwrap();
    let running = env.wait_running(&acc.id).await;
    assert!(running, "[{k}] the job runs");
    env.tg.send_text(&chat, &ann, "/status");
    // The job's own progress message also reads "Dream: running …" (with a
    // plain Cancel): the /status answer is the one that names the job it cancels.
    let is_status = |m: &FakeMessage| {
        shown(m).contains("Dream: running") && m.content.buttons().iter().any(|(l, _)| l == "Cancel Dream")
    };
    let status = env.wait_msgs(chat.id, "the /status answer", |m| m.iter().any(is_status)).await;
    assert!(status.iter().any(is_status), "[{k}]");
    env.comfy_fake.set_step_delay(0);
    let msgs = env.wait_msgs(chat.id, "the result", |m| !results(m).is_empty()).await;
    let p = results(&msgs)[0].content.photo.clone().expect("a photo");
    assert_eq!((p.width, p.height), (96, 64), "[{k}] the saved width was used");
    env.stop().await;
}

/// With "send originals" on, results come as documents with the original
/// bytes and a file name; without it, an oversized picture is a photo
/// fitted to Telegram's limits, and one no photo can show is a document.
async fn originals_as_files_and_fitted_photos(db: TestDb) {
    let env = start(db).await;
    let k = env.kind;
    let ann = FakeUser::new(7501, "Ann");
    let chat = FakeChat::private(&ann);
    env.tg.send_text(&chat, &ann, "/settings");
    let m = env.wait_button(chat.id, "send original files").await;
    env.tg.press(&chat, &ann, m.message_id, "send original files");
    env.wait_button(chat.id, "Results as original files: on").await;
    env.tg.send_photo(&chat, &ann, png(8, 6), Some("/flip"));
    let msgs = env.wait_msgs(chat.id, "the result", |m| !results(m).is_empty()).await;
    let doc = results(&msgs)[0].content.document.clone().expect("sent as a file");
    let name = doc.file_name.clone().unwrap_or_default();
    assert!(name.starts_with("flip-") && name.ends_with(".png"), "[{k}] {name}");
    assert_eq!(doc.mime_type.as_deref(), Some("image/png"));
    let acc = env.db.store.find_account_by_identity("telegram", &ann.id.to_string()).await.unwrap().unwrap();
    let job = env.jobs_of(&acc.id).await.remove(0);
    let output: Vec<String> = serde_json::from_str(job.outputs.as_deref().unwrap()).unwrap();
    let (_, original) = env.station.media.get(&output[0], None).await.unwrap();
    assert_eq!(doc.bytes.as_ref(), &original, "[{k}] the original bytes");

    // Bob keeps photos.
    let bob = FakeUser::new(7502, "Bob");
    let chat = FakeChat::private(&bob);
    // Width + height over 10000: fitted.
    env.tg.send_photo(&chat, &bob, png(5200, 5000), Some("/flip"));
    let msgs = env.wait_msgs(chat.id, "the big result", |m| !results(m).is_empty()).await;
    let photo = results(&msgs)[0].content.photo.clone().expect("still a photo");
    assert!(photo.width + photo.height <= 10_000, "[{k}] fitted: {}x{}", photo.width, photo.height);
    assert!(
        photo.width >= 5000 && photo.height >= 4800,
        "[{k}] only as small as needed: {}x{}",
        photo.width,
        photo.height
    );
    assert_eq!(dims(&photo.bytes), (photo.width, photo.height));
    // A ratio over 20 cannot be a photo at any size: a file.
    env.tg.send_photo(&chat, &bob, png(420, 20), Some("/flip"));
    let msgs = env.wait_msgs(chat.id, "the long result", |m| results(m).len() >= 2).await;
    let doc = results(&msgs)[1].content.document.clone().expect("sent as a file");
    assert_eq!(dims(&doc.bytes), (420, 20), "[{k}]");
    let stats = env.tg.stats();
    let bad: Vec<_> =
        stats.errors.iter().filter(|e| e.code == 400 && !e.description.contains("not modified")).collect();
    assert!(bad.is_empty(), "[{k}] requests refused: {bad:?}");
    env.stop().await;
}

/// Whether `secret` shows anywhere in a message: text, caption, buttons
/// (a link button's URL), or any earlier version of it.
fn shows(m: &FakeMessage, secret: &str) -> bool {
    std::iter::once(&m.content).chain(m.history.iter()).any(|c| {
        [c.text.as_deref(), c.raw.as_deref(), c.caption.as_deref()].into_iter().flatten().any(|t| t.contains(secret))
            || c.reply_markup.as_ref().is_some_and(|k| k.to_string().contains(secret))
    })
}

/// Issue 17, item 1: `/web` and `/link` in a group never post the sign-in
/// link or the link code there. The secret goes to the asker's private chat
/// and the group is told so; someone who never started the bot privately
/// (Telegram answers 403 "bot can't initiate conversation with a user") is
/// told in the group to open a private chat first, and gets the secret only
/// when they ask again after that.
async fn sign_in_secrets_reach_only_their_owner(db: TestDb) {
    let env = start(db).await;
    let k = env.kind;
    let group = FakeChat::group(-100_888, "Lobby");
    let ann = FakeUser::new(7401, "Ann");
    let me = env.tg.bot_username();
    env.tg.send_text(&group, &ann, &format!("/web@{me}"));
    let hint = env.wait_text(group.id, "private chat with").await;
    assert!(shows(&hint, &format!("t.me/{me}")), "[{k}] the hint links to the bot: {hint:#?}");
    assert!(env.tg.bot_messages(ann.id).is_empty(), "[{k}] no private chat could be opened by the bot");
    let refused = env.tg.stats().errors.iter().any(|e| e.code == 403 && e.description.contains("initiate"));
    assert!(refused, "[{k}] the bot tried the private chat first: {:?}", env.tg.stats().errors);

    // Ann opens a private chat, then asks again in the group.
    env.tg.send_text(&FakeChat::private(&ann), &ann, "/start");
    env.wait_text(ann.id, "Welcome").await;
    env.tg.send_text(&group, &ann, &format!("/web@{me}"));
    let link =
        env.wait_msgs(ann.id, "the sign-in link in private", |m| m.iter().any(|m| shows(m, "login?token="))).await;
    let link = link.into_iter().find(|m| shows(m, "login?token=")).unwrap();
    let url = link.content.reply_markup.as_ref().unwrap().to_string();
    let token = url.split("token=").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert!(token.len() >= 20, "[{k}] {url}");
    env.wait_text(group.id, "I sent it to you in a private chat").await;

    env.tg.send_text(&group, &ann, &format!("/link@{me}"));
    let code_msg = env.wait_text(ann.id, "Your link code").await;
    let code = code_msg.content.text.as_deref().unwrap().split("code: ").nth(1).unwrap().split_whitespace().next();
    let code = code.unwrap().to_string();
    assert!(code.len() >= 6, "[{k}] {code}");
    let told = env
        .wait_msgs(group.id, "two private-chat notes", |m| {
            m.iter().filter(|m| shown(m).contains("I sent it to you in a private chat")).count() >= 2
        })
        .await;
    for m in &told {
        assert!(!shows(m, &token), "[{k}] the sign-in token reached the group: {m:#?}");
        assert!(!shows(m, &code), "[{k}] the link code reached the group: {m:#?}");
        assert!(!shows(m, "login?token="), "[{k}] a sign-in link reached the group: {m:#?}");
    }
    env.stop().await;
}

/// Issue 21, items 7 and 8: in a group, `@bot /flip` as a photo's caption is
/// a command, even while a prompt of another flow waits; an album sent
/// without a caption gets one hint, not one per photo.
async fn mentioned_commands_and_uncaptioned_albums(db: TestDb) {
    let env = start(db).await;
    let k = env.kind;
    let me = env.tg.bot_username();
    let group = FakeChat::group(-100_888, "Sketchers");
    let ann = FakeUser::new(7401, "Ann");
    env.tg.send_text(&group, &ann, &format!("/make@{me}"));
    env.wait_text(group.id, "What would you like to make?").await;
    env.tg.send_photo(&group, &ann, png(8, 6), Some(&format!("@{me} /flip")));
    let msgs = env.wait_msgs(group.id, "the flip", |m| !results(m).is_empty()).await;
    let p = results(&msgs)[0].content.photo.clone().expect("a photo");
    assert_eq!((p.width, p.height), (8, 6), "[{k}] flipped, not taken as an answer to /make");
    let acc = env.db.store.find_account_by_identity("telegram", &ann.id.to_string()).await.unwrap().unwrap();
    let jobs = env.jobs_of(&acc.id).await;
    assert_eq!(jobs.len(), 1, "[{k}]");
    assert_eq!(jobs[0].tool_id, "flip", "[{k}]");

    let bob = FakeUser::new(7402, "Bob");
    let chat = FakeChat::private(&bob);
    env.tg.send_album(&chat, &bob, vec![png(8, 6), png(10, 4), png(6, 12)], None);
    // Updates of one chat run in order: once /balance is answered, every
    // photo of the album has been.
    env.tg.send_text(&chat, &bob, "/balance");
    let msgs = env.wait_msgs(chat.id, "the balance", |m| m.iter().any(|m| shown(m).contains("You have"))).await;
    let hints = msgs.iter().filter(|m| shown(m).contains("To use a photo")).count();
    assert_eq!(hints, 1, "[{k}] one hint for the album: {msgs:#?}");
    env.stop().await;
}

/// Issue 25: a spell made with the buttons of `/spells` → New spell
/// (Dream, then Flip with its picture from step 1 by itself), saved as
/// public; with `spells.commands` on it joins the command menu as
/// `/fox_mirror` and casts with a prompt. A public spell whose slug is a
/// built-in command (`help`) is left out of the menu and `/help` stays help.
async fn a_spell_made_in_chat_becomes_a_command(db: TestDb) {
    let env = start_with(db, |c| c.spells.commands = true).await;
    let k = env.kind;
    let ann = FakeUser::new(7301, "Ann");
    let chat = FakeChat::private(&ann);
    env.tg.send_text(&chat, &ann, "/spells");
    let list = env.wait_button(ann.id, "New spell").await;
    env.tg.press(&chat, &ann, list.message_id, "New spell");
    env.wait_text(ann.id, "What should it be called?").await;
    env.tg.send_text(&chat, &ann, "Fox mirror");
    env.wait_text(ann.id, "which tool runs first").await;
    env.tg.send_text(&chat, &ann, "Dream");
    let step1 = env.wait_text(ann.id, "Step 1: Dream").await;
    assert!(shown(&step1).contains("asked when cast"), "[{k}] {}", shown(&step1));
    env.tg.press(&chat, &ann, step1.message_id, "Add a step");
    env.wait_text(ann.id, "Step 2: which tool").await;
    env.tg.send_text(&chat, &ann, "Flip");
    let step2 = env.wait_text(ann.id, "Step 2: Flip").await;
    assert!(shown(&step2).contains("the picture from step 1"), "[{k}] {}", shown(&step2));
    env.tg.press(&chat, &ann, step2.message_id, "Done");
    let review = env.wait_text(ann.id, "Casting it asks for: prompt.").await;
    env.tg.press(&chat, &ann, review.message_id, "Who can cast it");
    let review = env.wait_text(ann.id, "Anyone with its name").await;
    env.tg.press(&chat, &ann, review.message_id, "Who can cast it");
    let review = env.wait_text(ann.id, "Listed for everyone").await;
    env.tg.press(&chat, &ann, review.message_id, "Save");
    let saved = env.wait_text(ann.id, "Saved").await;
    assert!(shown(&saved).contains("/cast fox-mirror"), "[{k}] {}", shown(&saved));

    // Someone's public spell called "help" cannot take /help.
    let ann_acc = env.db.store.find_account_by_identity("telegram", &ann.id.to_string()).await.unwrap().unwrap();
    let spec: station_core::spells::SpellSpec = serde_json::from_value(serde_json::json!({
        "slug": "help", "name": "Helpful", "visibility": "public",
        "steps": [{"tool": "dream", "inputs_from": {"prompt": "input.prompt"}}],
    }))
    .unwrap();
    env.station.create_spell(&ann_acc, spec).await.unwrap();

    let menu = env
        .tg
        .wait_for(WAIT, |t| Some(t.commands()).filter(|c| names(c).contains(&"fox_mirror".to_string())))
        .await
        .unwrap_or_else(|| panic!("[{k}] the spell never joined the menu: {:?}", env.tg.commands()));
    let (_, about) = menu.iter().find(|(c, _)| c == "fox_mirror").unwrap();
    assert!(about.contains("Fox mirror") && about.contains("Dream → Flip"), "[{k}] {about}");
    let helps: Vec<&(String, String)> = menu.iter().filter(|(c, _)| c == "help").collect();
    assert_eq!(helps.len(), 1, "[{k}] one /help: {menu:?}");
    assert!(!helps[0].1.contains("Helpful"), "[{k}] /help is the built-in: {menu:?}");

    env.tg.send_text(&chat, &ann, "/help");
    let help = env.wait_text(ann.id, "/fox_mirror — ").await;
    assert!(!shown(&help).contains("Helpful"), "[{k}] {}", shown(&help));
    env.tg.send_text(&chat, &ann, "/fox_mirror a red fox");
    let done = env.wait_button(ann.id, "Cast again").await;
    assert!(shown(&done).contains("Fox mirror"), "[{k}] {}", shown(&done));
    let casts = env.station.casts(&ann_acc, 10).await.unwrap();
    assert_eq!(casts.len(), 1, "[{k}] one cast");
    assert_eq!(casts[0].inputs.get("prompt").and_then(|v| v.as_str()), Some("a red fox"), "[{k}]");
    env.stop().await;
}

/// One menu message, edited (issue 21, item 6): a `/make` walk of N pages
/// is one message with N edits; what is typed gets a new card below and the
/// old card loses its buttons; Run turns the card into the job's progress
/// message and then its result, so the finished job leaves one photo.
async fn a_make_walk_is_one_card_edited_in_place(db: TestDb) {
    let env = start(db).await;
    let k = env.kind;
    let ann = FakeUser::new(7601, "Ann");
    let chat = FakeChat::private(&ann);
    env.tg.send_text(&chat, &ann, "/make");
    let card = env.wait_button(chat.id, "Next").await;
    let pages = shown(&card).split("Page 1 of ").nth(1).and_then(|t| t.trim().parse::<usize>().ok()).unwrap_or(1);
    assert!(pages >= 2, "[{k}] several pages of tools: {}", shown(&card));
    for page in 2..=pages {
        env.tg.press(&chat, &ann, card.message_id, "Next");
        env.wait_text(chat.id, &format!("Page {page} of {pages}")).await;
    }
    env.tg.press(&chat, &ann, card.message_id, "Previous");
    env.wait_text(chat.id, &format!("Page {} of {pages}", pages - 1)).await;
    let bot = env.tg.bot_messages(chat.id);
    assert_eq!(bot.len(), 1, "[{k}] one menu message: {:#?}", bot.iter().map(shown).collect::<Vec<_>>());
    assert_eq!(bot[0].message_id, card.message_id, "[{k}]");
    assert_eq!(bot[0].history.len(), pages, "[{k}] {pages} pages shown by {pages} edits");
    // Back to the first page and Dream: the card asks for the prompt, still in place.
    for page in (1..pages - 1).rev() {
        env.tg.press(&chat, &ann, card.message_id, "Previous");
        env.wait_text(chat.id, &format!("Page {page} of {pages}")).await;
    }
    let dream = env.wait_button(chat.id, "Dream").await;
    assert_eq!(dream.message_id, card.message_id, "[{k}]");
    env.tg.press(&chat, &ann, card.message_id, "Dream");
    env.wait_text(chat.id, "Send prompt").await;
    assert_eq!(env.tg.bot_messages(chat.id).len(), 1, "[{k}] still one message");
    // Typed text: a new card below it; the old one keeps its text, not its buttons.
    env.tg.send_text(&chat, &ann, "a lighthouse at dusk");
    let options = env.wait_button(chat.id, "Run").await;
    assert_ne!(options.message_id, card.message_id, "[{k}] the answer comes below what was typed");
    let old = env
        .wait_msgs(chat.id, "the old card without buttons", |m| {
            m.iter().any(|m| m.message_id == card.message_id && m.content.buttons().is_empty())
        })
        .await;
    let old = old.into_iter().find(|m| m.message_id == card.message_id).unwrap();
    assert!(shown(&old).contains("Send prompt"), "[{k}] {}", shown(&old));
    // Run: the card becomes the progress message, then the result.
    env.tg.press(&chat, &ann, options.message_id, "Run");
    // A photo cannot be edited into a text message: the result is sent,
    // then the card it replaces is deleted. Wait for both (a card that never
    // became the job's message is never deleted, and this times out).
    let msgs = env
        .wait_msgs(chat.id, "the result in the card's place", |m| {
            !results(m).is_empty() && !m.iter().any(|m| m.message_id == options.message_id)
        })
        .await;
    let left: Vec<String> = msgs.iter().map(shown).collect();
    assert_eq!(msgs.len(), 2, "[{k}] the old card and the result photo only: {left:#?}");
    assert!(
        env.tg.messages(chat.id).iter().any(|m| m.message_id == options.message_id && m.deleted),
        "[{k}] the options card became the progress message, replaced by the photo"
    );
    assert!(!left.iter().any(|t| t.contains('%') || t.contains("queued")), "[{k}] no progress left: {left:#?}");
    env.stop().await;
}

on_every_db!(
    a_make_walk_is_one_card_edited_in_place,
    mentioned_commands_and_uncaptioned_albums,
    sign_in_secrets_reach_only_their_owner,
    operator_commands_and_menus,
    group_commands_replies_and_foreign_buttons,
    album_runs_the_tool_per_photo,
    settings_then_status_during_a_job,
    originals_as_files_and_fitted_photos,
    a_spell_made_in_chat_becomes_a_command,
);
