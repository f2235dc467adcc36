//! The Telegram bot across crashes and restarts, through the fake Bot API,
//! the real core, flows, workers and the fake ComfyUI — on SQLite and
//! PostgreSQL: an update handled twice changes nothing twice, a job survives
//! a restart of everything with its result delivered once, old updates are
//! pruned, and start-up waits out an unreachable Bot API.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::{Config, Station, SubmitRequest, Workers};
use station_core::{JobFilter, now_ms};
use station_flows::{Conversation, FlowSettings, Flows, FlowsRunner, JobSource};
use station_telegram::{PaceLimits, TelegramBot, TelegramConfig, TelegramOptions, TelegramRunner};
use station_telegram_fake::{FakeChat, FakeConfig, FakeMessage, FakeTelegram, FakeUser, RateLimits};
use station_testkit::TestDb;
use station_testkit::on_every_db;

const WAIT: Duration = Duration::from_secs(40);

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
        start_retry: Duration::from_millis(50),
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

/// One Station process: core, workers, flows (and a bot when started).
struct Process {
    station: Station,
    flows: Flows,
    runner: Option<FlowsRunner>,
    workers: Option<Workers>,
    comfy: Arc<ComfyExecutor>,
    bot: Option<(TelegramBot, TelegramRunner)>,
}

impl Process {
    async fn start(config: &Config, db: &TestDb, comfy_url: &str) -> Process {
        let (station, errors) = Station::with_store(config.clone(), db.store.clone()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let spec = BackendSpec { name: "b0".into(), url: comfy_url.to_string(), max_concurrent: 8, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
        comfy.start_health_checks(Duration::from_millis(200), station.wake.clone()).await;
        station.register_executor(comfy.clone());
        station.register_executor(Arc::new(station_core::MediaExecutor::new(&station.config)));
        let workers = Some(Workers::start(&station));
        let flows = Flows::with_settings(station.clone(), FlowSettings { progress_every_ms: 50, ..Default::default() });
        let runner = Some(flows.start());
        Process { station, flows, runner, workers, comfy, bot: None }
    }

    async fn start_bot(&mut self, options: TelegramOptions) -> TelegramBot {
        let config = TelegramConfig::from_config(&self.station.config).unwrap();
        let bot = TelegramBot::new(self.station.clone(), self.flows.clone(), &config, options).unwrap();
        let runner = bot.start().await.unwrap();
        self.bot = Some((bot.clone(), runner));
        bot
    }

    /// A clean stop: the bot, deliveries, then workers (running jobs go back to the queue).
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
}

struct Env {
    config: Config,
    /// Reads what the bots stored, as a Station of its own (no workers, no bot).
    observer: Station,
    db: TestDb,
    tg: FakeTelegram,
    comfy_fake: FakeComfy,
    _dir: tempfile::TempDir,
}

async fn env(db: TestDb) -> Env {
    let tg = FakeTelegram::start_with(fast_fake()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    config.queue.lease_seconds = 2;
    config.queue.retry_base_ms = 50;
    config.queue.poll_ms = 50;
    config.points.starting_grant = 100_000;
    TelegramConfig { token: Some(tg.token()), api_url: tg.api_url(), ..Default::default() }.apply_to(&mut config);
    station_testkit::install_dream(&config.tools_dir());
    let (observer, _) = Station::with_store(config.clone(), db.store.clone()).unwrap();
    let comfy_fake = FakeComfy::start(FakeOptions {
        checkpoints: vec!["v1-5-pruned-emaonly.safetensors".into()],
        ..Default::default()
    })
    .await;
    Env { config, observer, db, tg, comfy_fake, _dir: dir }
}

impl Env {
    async fn process(&self) -> Process {
        Process::start(&self.config, &self.db, &self.comfy_fake.url()).await
    }

    async fn wait_msgs(&self, chat: i64, what: &str, pred: impl Fn(&[FakeMessage]) -> bool) -> Vec<FakeMessage> {
        match self.tg.wait_for(WAIT, |t| Some(t.bot_messages(chat)).filter(|m| pred(m))).await {
            Some(m) => m,
            None => {
                panic!("[{}] timed out waiting for {what}; bot sent: {:#?}", self.db.kind, self.tg.bot_messages(chat))
            }
        }
    }

    /// Waits until the bot stored `n` updates and returns them.
    async fn stored(&self, bot_id: &str, n: usize) -> Vec<station_core::inbox::InboxRow> {
        for _ in 0..800 {
            let rows = self.inbox(bot_id).await;
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("[{}] {n} updates were not stored", self.db.kind)
    }

    /// Waits until every delivery of a private chat is sent, and returns them.
    async fn settled(&self, chat: i64) -> Vec<station_core::conversations::DeliveryRow> {
        let conv = format!("telegram:{chat}");
        for _ in 0..1600 {
            let rows = self.db.store.conversation_deliveries(&conv).await.unwrap();
            if !rows.is_empty() && rows.iter().all(|d| d.status == "sent") {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("[{}] deliveries never settled: {:#?}", self.db.kind, self.db.store.conversation_deliveries(&conv).await)
    }

    async fn wait_update_state(&self, bot_id: &str, update_id: i64, state: &str) -> station_core::inbox::InboxRow {
        for _ in 0..1600 {
            let rows = self.inbox(bot_id).await;
            if let Some(r) = rows.into_iter().find(|r| r.seq == update_id && r.state == state) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("[{}] update {update_id} never became {state}", self.db.kind)
    }

    /// Every update a bot stored in its inbox.
    async fn inbox(&self, bot_id: &str) -> Vec<station_core::inbox::InboxRow> {
        self.observer.inbox(&station_telegram::scope(bot_id)).list().await.unwrap()
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

/// How many progress messages the bot sent in a chat (deleted or turned
/// into a result since, included).
fn progress_sent(tg: &FakeTelegram, chat: i64) -> usize {
    tg.messages(chat)
        .iter()
        .filter(|m| m.from_bot)
        .filter(|m| {
            shown(m).starts_with("Dream: ")
                || m.history
                    .iter()
                    .any(|h| h.text.clone().or(h.caption.clone()).is_some_and(|t| t.starts_with("Dream: ")))
        })
        .count()
}

/// Text progress messages the bot sent (as first sent). A live preview is a
/// photo message of its own (Telegram cannot turn a text message into a
/// photo, so the adapter deletes the text and sends the preview), and whether
/// one arrives before the result is a matter of timing; a progress text sent
/// twice is what a replayed update must never do.
fn progress_texts(tg: &FakeTelegram, chat: i64) -> usize {
    tg.messages(chat)
        .iter()
        .filter(|m| m.from_bot)
        .filter(|m| {
            let first = m.history.first().unwrap_or(&m.content);
            first.photo.is_none() && first.text.as_deref().is_some_and(|t| t.starts_with("Dream: "))
        })
        .count()
}

fn progress(msgs: &[FakeMessage]) -> Vec<FakeMessage> {
    msgs.iter().filter(|m| shown(m).starts_with("Dream: ")).cloned().collect()
}

/// Jobs and points holds of an account.
async fn jobs_and_holds(station: &Station, account_id: &str) -> (usize, usize) {
    let jobs = station
        .jobs(&JobFilter { account_id: Some(account_id.to_string()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    let entries = station.ledger_history(account_id, None, 1000).await.unwrap();
    (jobs.len(), entries.iter().filter(|e| e.kind == "hold").count())
}

/// The process dies after an update was handled (job queued and paid,
/// transition and reply stored) but before the update was marked done: the
/// next process handles it again, and that changes nothing.
async fn an_update_handled_before_a_crash_changes_nothing_the_second_time(db: TestDb) {
    let env = env(db).await;
    let k = env.db.kind;
    let mut first = env.process().await;
    let bot = first.start_bot(TelegramOptions { crash_after_handling: true, ..fast_options() }).await;
    let bot_id = bot.bot_id().to_string();
    let ann = FakeUser::new(7001, "Ann");
    let chat = FakeChat::private(&ann);
    env.tg.send_text(&chat, &ann, "/dream a lighthouse at dusk");
    let rows = env.stored(&bot_id, 1).await;
    let update_id = rows[0].seq;
    // Handled: the result arrives; the update stays `processing`, as a kill would leave it.
    env.wait_msgs(chat.id, "the result", |m| results(m).len() == 1).await;
    let row = env.wait_update_state(&bot_id, update_id, "processing").await;
    assert_eq!(row.attempts, 1, "[{k}]");
    let (_, runner) = first.bot.take().unwrap();
    runner.abort();
    first.stop().await;
    // The next process finds it interrupted and processes it again.
    let mut second = env.process().await;
    second.start_bot(fast_options()).await;
    let row = env.wait_update_state(&bot_id, update_id, "done").await;
    assert_eq!(row.attempts, 2, "[{k}] processed a second time");
    let account = second.station.account("telegram", "7001", "Ann").await.unwrap();
    // Whatever the second run wrote is written now (the update is done): wait until it is sent.
    let deliveries = env.settled(chat.id).await;
    let msgs = env.tg.bot_messages(chat.id);
    assert_eq!(results(&msgs).len(), 1, "[{k}] one result: {msgs:#?}");
    // The progress message became the result: one message for the job.
    assert_eq!(msgs.len(), 1, "[{k}] one message: {msgs:#?}");
    assert_eq!(progress_texts(&env.tg, chat.id), 1, "[{k}] one progress message, replaced by the result");
    assert_eq!(jobs_and_holds(&second.station, &account.id).await, (1, 1), "[{k}] one job, one charge");
    assert_eq!(deliveries.len(), 2, "[{k}] a progress and a result row: {deliveries:#?}");
    second.stop().await;
}

/// The process dies between queueing the job and storing the flow's
/// transition: the update is processed again and finds its job.
async fn a_crash_between_submit_and_transition_queues_and_charges_once(db: TestDb) {
    let env = env(db).await;
    let k = env.db.kind;
    // Receive only, so the update waits in the inbox.
    let mut first = env.process().await;
    let bot = first.start_bot(TelegramOptions { process: false, ..fast_options() }).await;
    let bot_id = bot.bot_id().to_string();
    let bob = FakeUser::new(7002, "Bob");
    let chat = FakeChat::private(&bob);
    env.tg.send_text(&chat, &bob, "/dream a paper boat");
    let update_id = env.stored(&bot_id, 1).await[0].seq;
    // What the crashed process got as far as: the job queued and paid for
    // under the update's key, nothing else.
    let account = first.station.account("telegram", "7002", "Bob").await.unwrap();
    let source =
        JobSource { conversation: Conversation::new("telegram", &chat.id.to_string()), instance: None, card: None };
    let key = station_flows::job_key(&format!("telegram:{bot_id}:{update_id}"), 1);
    let mut params = serde_json::Map::new();
    params.insert("prompt".into(), json!("a paper boat"));
    let req = SubmitRequest {
        tool: "dream".into(),
        params,
        source: Some(serde_json::to_value(&source).unwrap()),
        idempotency_key: Some(key.clone()),
        ..Default::default()
    };
    let job = first.station.submit(&account, req.clone()).await.unwrap();
    // The same key again is the same job (the core's own guarantee).
    assert_eq!(first.station.submit(&account, req).await.unwrap().id, job.id, "[{k}]");
    let (_, runner) = first.bot.take().unwrap();
    runner.abort();
    first.stop().await;
    let mut second = env.process().await;
    second.start_bot(fast_options()).await;
    env.wait_update_state(&bot_id, update_id, "done").await;
    let msgs = env.wait_msgs(chat.id, "the result", |m| results(m).len() == 1).await;
    let deliveries = env.settled(chat.id).await;
    assert_eq!(deliveries.len(), 2, "[{k}] a progress and a result row: {deliveries:#?}");
    let msgs_after = env.tg.bot_messages(chat.id);
    assert_eq!(results(&msgs_after).len(), 1, "[{k}] one result: {msgs:#?}");
    assert_eq!(msgs_after.len(), 1, "[{k}] one message: {msgs_after:#?}");
    assert_eq!(progress_sent(&env.tg, chat.id), 1, "[{k}] one progress message, replaced by the result");
    assert_eq!(jobs_and_holds(&second.station, &account.id).await, (1, 1), "[{k}] one job, one charge");
    let jobs = second.station.jobs(&JobFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(jobs[0].id, job.id, "[{k}] the flow found the queued job");
    second.stop().await;
}

/// A job running on ComfyUI when the bot and Station stop is finished by the
/// next process: one result photo, one progress message edited in place.
async fn restart_mid_job_delivers_the_result_once(db: TestDb) {
    let env = env(db).await;
    let k = env.db.kind;
    let mut first = env.process().await;
    first.start_bot(fast_options()).await;
    let cy = FakeUser::new(7003, "Cy");
    let chat = FakeChat::private(&cy);
    // Slow steps: the job is still running when everything stops.
    env.comfy_fake.set_step_delay(600);
    env.tg.send_text(&chat, &cy, "/dream a slow glacier");
    env.wait_msgs(chat.id, "the progress message", |m| progress(m).len() == 1).await;
    let account = first.station.account("telegram", "7003", "Cy").await.unwrap();
    let running = async {
        for _ in 0..800 {
            let jobs = first
                .station
                .jobs(&JobFilter { account_id: Some(account.id.clone()), limit: 5, ..Default::default() })
                .await
                .unwrap();
            if jobs.first().is_some_and(|j| j.status == "running" && j.remote_id.is_some()) {
                return jobs[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("[{k}] the job never ran on ComfyUI")
    }
    .await;
    first.stop().await;
    assert!(results(&env.tg.bot_messages(chat.id)).is_empty(), "[{k}] not finished before the stop");
    env.comfy_fake.set_step_delay(100);
    let mut second = env.process().await;
    second.start_bot(fast_options()).await;
    let msgs = env.wait_msgs(chat.id, "the result after the restart", |m| results(m).len() == 1).await;
    env.settled(chat.id).await;
    let msgs_after = env.tg.bot_messages(chat.id);
    assert_eq!(results(&msgs_after).len(), 1, "[{k}] exactly one result photo: {msgs:#?}");
    assert_eq!(msgs_after.len(), 1, "[{k}] the progress message became the result: {msgs_after:#?}");
    assert_eq!(progress_sent(&env.tg, chat.id), 1, "[{k}] the progress message was edited, not sent again");
    let edited = env.tg.messages(chat.id).into_iter().filter(|m| m.from_bot && !m.history.is_empty()).count();
    assert!(edited >= 1, "[{k}] progress edited in place across the restart");
    let job = second.station.job(&running.id).await.unwrap().unwrap();
    assert_eq!(job.status, "succeeded", "[{k}]");
    assert_eq!(jobs_and_holds(&second.station, &account.id).await, (1, 1), "[{k}] one job, one charge");
    second.stop().await;
}

/// The runner prunes processed updates past the retention, never unprocessed ones.
async fn housekeeping_prunes_old_processed_updates_only(db: TestDb) {
    let env = env(db).await;
    let k = env.db.kind;
    let bot_id = "123456";
    let scope = station_telegram::scope(bot_id);
    let inbox = env.observer.inbox(&scope);
    let state = env.observer.adapter_state(&scope);
    let day = 86_400_000;
    let now = now_ms();
    // (update id, received, processed)
    let rows = [(1, now - 9 * day, true), (2, now - 8 * day, false), (3, now - 9 * day, true), (4, now - day, true)];
    for (id, at, processed) in rows {
        let payload = json!({"update_id": id}).to_string();
        inbox.insert_at(id, &format!("chat:{id}"), &payload, at).await.unwrap();
        if processed {
            inbox.finish_at(id, (id == 3).then_some("failed for a test"), at).await.unwrap();
        }
    }
    // Remembered album captions: a stale one goes, a fresh one and other facts stay.
    state.set_at("album:old", "{}", now - 2 * day).await.unwrap();
    state.set_at("album:new", "{}", now).await.unwrap();
    state.set_at("albumish", "x", now - 2 * day).await.unwrap();
    let mut p = env.process().await;
    // Receive only (the old pending update stays pending), prune often.
    let options = TelegramOptions { process: false, housekeeping_every: Duration::from_millis(50), ..fast_options() };
    let bot = p.start_bot(options).await;
    assert_eq!(bot.bot_id(), bot_id);
    let mut left = vec![];
    for _ in 0..400 {
        left = inbox.list().await.unwrap().into_iter().map(|r| r.seq).collect::<Vec<_>>();
        if left.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(left, vec![2, 4], "[{k}] done and failed updates past 7 days pruned; pending and recent kept");
    let meta = |key: &'static str| state.get(key);
    for _ in 0..400 {
        if meta("album:old").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(meta("album:old").await.unwrap(), None, "[{k}] a day-old album caption is forgotten");
    let kept = (meta("album:new").await.unwrap(), meta("albumish").await.unwrap());
    assert!(kept.0.is_some() && kept.1.is_some(), "[{k}] the rest stays");
    p.stop().await;
}

/// getMe failing with 5xx at start: the runner retries and the bot works.
async fn start_waits_out_server_errors(db: TestDb) {
    let env = env(db).await;
    let k = env.db.kind;
    env.tg.fail_next("getMe", 3, 502);
    let mut p = env.process().await;
    p.start_bot(fast_options()).await;
    let dee = FakeUser::new(7004, "Dee");
    env.tg.send_text(&FakeChat::private(&dee), &dee, "/help");
    env.wait_msgs(dee.id, "help once the API answers", |m| !m.is_empty()).await;
    assert_eq!(env.tg.stats().requests.get("getme"), Some(&4), "[{k}] three failures, then success");
    let failed = env.tg.stats().errors.iter().filter(|e| e.method == "getme" && e.code == 502).count();
    assert_eq!(failed, 3, "[{k}]");
    p.stop().await;
}

/// The Bot API refusing connections at start: the runner keeps trying
/// until a server listens there.
async fn start_waits_out_a_refused_connection(db: TestDb) {
    let env = env(db).await;
    // A port nothing listens on (bound, then freed).
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = env.process().await;
    let config =
        TelegramConfig { api_url: format!("http://{addr}"), ..TelegramConfig::from_config(&p.station.config).unwrap() };
    let bot = TelegramBot::new(p.station.clone(), p.flows.clone(), &config, fast_options()).unwrap();
    let runner = bot.start().await.expect("an unreachable API is not a start error");
    assert!(runner.is_running());
    let tg = FakeTelegram::start_at(addr, fast_fake()).await.unwrap();
    let eve = FakeUser::new(7005, "Eve");
    tg.send_text(&FakeChat::private(&eve), &eve, "/help");
    let got = tg.wait_for(WAIT, |t| Some(t.bot_messages(eve.id)).filter(|m| !m.is_empty())).await;
    assert!(got.is_some(), "[{}] the bot started once the API listened", env.db.kind);
    runner.shutdown().await;
    p.stop().await;
}

/// A refused token is permanent: a clear error naming the variable, and no
/// more attempts.
async fn a_refused_token_is_a_clear_error(db: TestDb) {
    let env = env(db).await;
    let k = env.db.kind;
    let p = env.process().await;
    // At once.
    let configured = TelegramConfig::from_config(&p.station.config).unwrap();
    let config = TelegramConfig { token: Some("123456:not-the-token".into()), ..configured.clone() };
    let bot = TelegramBot::new(p.station.clone(), p.flows.clone(), &config, fast_options()).unwrap();
    let err = bot.start().await.err().expect("a refused token is an error").to_string();
    assert!(err.contains("STATION_TELEGRAM_TOKEN") && err.contains("401"), "[{k}] {err}");
    // After a transient failure: the runner stops trying.
    env.tg.fail_next("getMe", 1, 503);
    env.tg.fail_next("getMe", 1, 401);
    let bot = TelegramBot::new(p.station.clone(), p.flows.clone(), &configured, fast_options()).unwrap();
    let runner = bot.start().await.expect("a 503 is retried");
    let stopped = env.tg.wait_for(WAIT, |_| (!runner.is_running()).then_some(())).await;
    assert!(stopped.is_some(), "[{k}] gave up after the 401");
    // (The fake counts calls with the right token only: the 503, then the 401.)
    assert_eq!(env.tg.stats().requests.get("getme"), Some(&2), "[{k}] no call after the 401");
    p.stop().await;
}

on_every_db!(
    an_update_handled_before_a_crash_changes_nothing_the_second_time,
    a_crash_between_submit_and_transition_queues_and_charges_once,
    restart_mid_job_delivers_the_result_once,
    housekeeping_prunes_old_processed_updates_only,
    start_waits_out_server_errors,
    start_waits_out_a_refused_connection,
    a_refused_token_is_a_clear_error,
    two_processes_poll_one_at_a_time_and_the_survivor_takes_over,
);

/// Two processes run the bot on one database: only one calls `getUpdates`
/// (Telegram would cut the other off with a 409), both answer what it
/// stored, and when the poller dies the other takes polling over.
async fn two_processes_poll_one_at_a_time_and_the_survivor_takes_over(db: TestDb) {
    let env = env(db).await;
    let k = env.db.kind;
    let mut first = env.process().await;
    first.start_bot(fast_options()).await;
    let polled = |n: u64| {
        move |t: &FakeTelegram| (t.stats().requests.get("getupdates").copied().unwrap_or(0) >= n).then_some(())
    };
    assert!(env.tg.wait_for(WAIT, polled(1)).await.is_some(), "[{k}] the first process polls");
    let mut second = env.process().await;
    second.start_bot(fast_options()).await;
    let ann = FakeUser::new(7101, "Ann");
    let chat = FakeChat::private(&ann);
    for _ in 0..3 {
        let had = env.tg.bot_messages(chat.id).len();
        env.tg.send_text(&chat, &ann, "/help");
        env.wait_msgs(chat.id, "the help", move |m| m.len() > had).await;
    }
    // Several polls went by with both processes up, and none was cut off.
    let before = env.tg.stats().requests.get("getupdates").copied().unwrap_or(0);
    assert!(env.tg.wait_for(WAIT, polled(before + 2)).await.is_some(), "[{k}] polling goes on");
    let conflicts = |t: &FakeTelegram| t.stats().errors.iter().filter(|e| e.code == 409).count();
    assert_eq!(conflicts(&env.tg), 0, "[{k}] two processes polled at once: {:?}", env.tg.stats().errors);

    // The poller dies without giving the lease up: the survivor takes over once it lapses.
    let (_, runner) = first.bot.take().unwrap();
    runner.abort();
    first.stop().await;
    let had = env.tg.bot_messages(chat.id).len();
    env.tg.send_text(&chat, &ann, "/help");
    env.wait_msgs(chat.id, "the help after the poller died", move |m| m.len() > had).await;
    second.stop().await;
}
