//! Every built-in flow end to end through the in-memory test platform, the
//! real core, real workers and the fake ComfyUI — on SQLite and PostgreSQL.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::{AccountRow, JobFilter, JobRow};
use station_core::{Config, Station, Workers};
use station_flows::testing::{Shown, TestPlatform};
use station_flows::view::{Block, InputKind};
use station_flows::{Conversation, DeliveryKind, FlowSettings, Flows, FlowsRunner, Input, Outcome};
use station_media::image::{ImageFormat, Rgb, RgbImage};
use station_testkit::TestDb;

const WAIT: Duration = Duration::from_secs(30);

struct Env {
    station: Station,
    flows: Flows,
    runner: Option<FlowsRunner>,
    workers: Option<Workers>,
    comfy: Arc<ComfyExecutor>,
    platform: TestPlatform,
    account: AccountRow,
    conv: Conversation,
    fake: FakeComfy,
    db: TestDb,
    _dir: tempfile::TempDir,
}

fn settings() -> FlowSettings {
    FlowSettings { progress_every_ms: 50, ..Default::default() }
}

async fn setup(db: TestDb) -> Env {
    setup_with(db, |_| {}).await
}

async fn setup_with(db: TestDb, tweak: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    tweak(&mut config);
    config.queue.lease_seconds = 2;
    config.queue.retry_base_ms = 50;
    config.queue.poll_ms = 50;
    config.points.starting_grant = 1000;
    station_testkit::install_dream(&config.tools_dir());
    let (station, errors) = Station::with_store(config, db.store.clone()).unwrap();
    assert!(errors.is_empty(), "tool files failed to load: {errors:?}");
    let fake = FakeComfy::start(FakeOptions {
        checkpoints: vec!["v1-5-pruned-emaonly.safetensors".into()],
        ..Default::default()
    })
    .await;
    let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 2, tags: vec![] };
    let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
    comfy.start_health_checks(Duration::from_millis(200), station.wake.clone()).await;
    station.register_executor(comfy.clone());
    station.register_executor(Arc::new(station_core::MediaExecutor::new(&station.config)));
    let workers = Some(Workers::start(&station));
    let flows = Flows::with_settings(station.clone(), settings());
    let platform = TestPlatform::new("test");
    flows.add_platform(Arc::new(platform.clone()));
    let runner = Some(flows.start());
    let account = station.account("test", "u1", "Ada").await.unwrap();
    station.ensure_starting_grant(&account.id).await.unwrap();
    let conv = Conversation::new("test", "chat1");
    Env { station, flows, runner, workers, comfy, platform, account, conv, fake, db, _dir: dir }
}

impl Env {
    async fn stop(mut self) {
        if let Some(r) = self.runner.take() {
            r.shutdown().await;
        }
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        self.comfy.shutdown();
    }

    async fn send(&self, input: Input) -> station_flows::Reply {
        self.flows.handle(&self.account, &self.conv, input).await.unwrap()
    }

    async fn command(&self, name: &str, text: &str) {
        self.send(Input::Command { name: name.into(), text: text.into(), images: vec![], params: Map::new() }).await;
    }

    async fn text(&self, text: &str) {
        self.send(Input::Text { text: text.into() }).await;
    }

    /// Presses the button whose label contains `label` on message `msg`.
    async fn press(&self, msg: &Shown, label: &str) -> station_flows::Reply {
        let token = token_of(msg, label);
        self.send(Input::Action { token }).await
    }

    async fn wait(&self, what: &str, pred: impl Fn(&[Shown]) -> bool) -> Vec<Shown> {
        self.platform.wait_for(&self.conv.chat, WAIT, what, pred).await
    }

    async fn wait_results(&self, n: usize) -> Vec<Shown> {
        let msgs = self.wait(&format!("{n} result(s)"), |m| results(m).len() >= n).await;
        results(&msgs)
    }

    /// Waits until every delivery stored for the conversation was sent.
    async fn settled(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let rows = self.db.store.conversation_deliveries(&self.conv.key()).await.unwrap();
            if rows.iter().all(|r| r.status == "sent") {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "deliveries never settled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn jobs(&self) -> Vec<JobRow> {
        let f = JobFilter { account_id: Some(self.account.id.clone()), limit: 100, ..Default::default() };
        let mut jobs = self.db.store.list_jobs(&f).await.unwrap();
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        jobs
    }

    async fn upload(&self, w: u32, h: u32) -> String {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 40) as u8, (y * 40) as u8, 100]));
        let mut buf = vec![];
        img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).unwrap();
        self.station.media.put_image(buf, Some(&self.account.id), None, "input").await.unwrap().id
    }
}

fn results(msgs: &[Shown]) -> Vec<Shown> {
    msgs.iter().filter(|m| m.kind == DeliveryKind::Result).cloned().collect()
}

fn labels(msg: &Shown) -> Vec<String> {
    msg.view.all_buttons().iter().map(|b| b.label.clone()).collect()
}

fn token_of(msg: &Shown, label: &str) -> String {
    let b = msg
        .view
        .all_buttons()
        .into_iter()
        .find(|b| b.label.contains(label))
        .unwrap_or_else(|| panic!("no button {label:?} in {:?} (has {:?})", msg.view.plain_text(), labels(msg)));
    let t = b.token().expect("button has a minted token").to_string();
    assert!(t.len() <= 16 && t.is_ascii(), "tokens fit callback data: {t}");
    t
}

fn result_image(msg: &Shown) -> String {
    msg.view.media_ids().first().cloned().unwrap_or_else(|| panic!("result has an image: {}", msg.view.plain_text()))
}

fn job_params(job: &JobRow) -> Map<String, Value> {
    serde_json::from_str(&job.params).unwrap()
}

async fn make_with_prompt_inline(db: TestDb) {
    let env = setup(db).await;
    env.fake.set_step_delay(40);
    env.command("dream", "a red fox in the snow").await;
    let msgs = env.wait("a progress message", |m| m.iter().any(|m| m.kind == DeliveryKind::Progress)).await;
    let progress = msgs.iter().find(|m| m.kind == DeliveryKind::Progress).unwrap().clone();
    assert!(progress.view.plain_text().contains("Dream"), "{}", progress.view.plain_text());
    let result = env.wait_results(1).await.remove(0);
    // Issue 21, item 6: one message for the job — the progress message,
    // edited in place as it ran, became the result.
    let msgs = env.platform.messages(&env.conv.chat);
    assert_eq!(msgs.len(), 1, "a finished job leaves exactly one message: {msgs:?}");
    assert_eq!(result.message_ref, progress.message_ref, "the progress message became the result");
    assert!(
        result.edits.iter().all(|v| v.blocks.iter().any(|b| matches!(b, Block::Progress { .. }))),
        "every earlier version was progress"
    );
    // Late progress never overwrites the result.
    env.settled().await;
    assert_eq!(env.platform.messages(&env.conv.chat)[0].kind, DeliveryKind::Result);
    for label in ["Rerun", "Tweak", "Use as input", "Info", "Rate", "Hide"] {
        assert!(labels(&result).iter().any(|l| l.contains(label)), "result offers {label}: {:?}", labels(&result));
    }
    let media = env.db.store.get_media(&result_image(&result)).await.unwrap().unwrap();
    assert_eq!((media.width, media.height), (64, 64));
    let jobs = env.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(job_params(&jobs[0])["prompt"], "a red fox in the snow");
    assert!(env.platform.send_counts().values().all(|&n| n == 1), "nothing sent twice");
    env.stop().await;
}

async fn progress_edits_are_throttled_per_conversation(db: TestDb) {
    let mut env = setup(db).await;
    // A slower throttle than the other tests, on a fresh engine.
    env.runner.take().unwrap().shutdown().await;
    env.flows =
        Flows::with_settings(env.station.clone(), FlowSettings { progress_every_ms: 300, ..Default::default() });
    env.flows.add_platform(Arc::new(env.platform.clone()));
    env.runner = Some(env.flows.start());
    env.fake.set_step_delay(200);
    env.command("dream", "first").await;
    env.command("dream", "second").await;
    env.wait_results(2).await;
    // Progress edits only: the last edit of each message turned it into its result.
    let mut edits: Vec<std::time::Instant> = env
        .platform
        .messages(&env.conv.chat)
        .iter()
        .filter(|m| m.kind == DeliveryKind::Result)
        .flat_map(|m| m.edited_at[..m.edited_at.len().saturating_sub(1)].to_vec())
        .collect();
    edits.sort();
    assert!(edits.len() >= 3, "progress was edited: {} edits", edits.len());
    for pair in edits.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(250), "two progress edits {gap:?} apart in one conversation");
    }
    env.stop().await;
}

async fn make_asks_only_for_missing_inputs(db: TestDb) {
    let env = setup(db).await;
    env.command("make", "").await;
    let msgs = env.wait("tool choice", |m| m.last().is_some_and(|m| m.view.input.is_some())).await;
    let choose = msgs.last().unwrap().clone();
    assert!(matches!(&choose.view.input.as_ref().unwrap().kind, InputKind::Choice { .. }));
    env.press(&choose, "Dream").await;
    // Only the prompt is missing (everything else has defaults) …
    let msgs = env.wait("prompt question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("prompt"))).await;
    assert_eq!(msgs.last().unwrap().view.input.as_ref().unwrap().label, "prompt");
    // … an empty prompt is refused and asked again …
    env.text("   ").await;
    let msgs = env.wait("refusal", |m| m.iter().any(|m| m.view.plain_text().contains("⚠"))).await;
    assert!(msgs.last().unwrap().view.plain_text().contains("prompt"), "asked again");
    env.text("a lighthouse at dusk").await;
    // … then the options step shows the price with a Run button.
    let msgs = env.wait("options", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("Run")))).await;
    let options = msgs.last().unwrap().clone();
    assert!(options.view.plain_text().contains("points"), "{}", options.view.plain_text());
    env.press(&options, "Run").await;
    env.wait_results(1).await;
    assert_eq!(job_params(&env.jobs().await[0])["prompt"], "a lighthouse at dusk");
    env.stop().await;
}

async fn photo_tool_rerun_tweak_and_use_as_input(db: TestDb) {
    let env = setup(db).await;
    let photo = env.upload(4, 3).await;
    env.send(Input::Command { name: "upscale".into(), text: String::new(), images: vec![photo], params: Map::new() })
        .await;
    let first = env.wait_results(1).await.remove(0);
    let out = env.db.store.get_media(&result_image(&first)).await.unwrap().unwrap();
    assert_eq!((out.width, out.height), (8, 6), "upscaled 2×");

    // Rerun: same parameters, a new job.
    let reply = env.press(&first, "Rerun").await;
    assert_eq!(reply.toast.as_deref(), Some("Queued"));
    env.wait_results(2).await;
    assert_eq!(env.jobs().await.len(), 2);

    // Tweak: change a parameter, then run.
    env.press(&first, "Tweak").await;
    let msgs =
        env.wait("tweak options", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("Run")))).await;
    env.text("scale_by=3").await;
    let msgs2 = env
        .wait("updated options", |m| m.len() > msgs.len() && m.last().unwrap().view.plain_text().contains("3"))
        .await;
    env.press(msgs2.last().unwrap(), "Run").await;
    let third = env.wait_results(3).await.remove(2);
    let out = env.db.store.get_media(&result_image(&third)).await.unwrap().unwrap();
    assert_eq!((out.width, out.height), (12, 9), "tweaked to 3×");

    // Use as input: the result goes into another image tool.
    env.press(&third, "Use as input").await;
    let msgs = env.wait("image tool choice", |m| m.last().is_some_and(|m| m.view.plain_text().contains("image"))).await;
    let choice = msgs.last().unwrap().clone();
    let names = labels(&choice);
    assert!(!names.iter().any(|n| n == "Dream"), "text-only tools are not offered for an image: {names:?}");
    // Typing the tool's command works as well as its button.
    env.text("upscale").await;
    let fourth = env.wait_results(4).await.remove(3);
    let out = env.db.store.get_media(&result_image(&fourth)).await.unwrap().unwrap();
    assert_eq!((out.width, out.height), (24, 18), "the tweaked result upscaled again");
    env.stop().await;
}

async fn settings_change_is_used_by_next_make(db: TestDb) {
    let env = setup(db).await;
    env.command("settings", "dream").await;
    let msgs =
        env.wait("settings card", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l == "Change width"))).await;
    env.press(msgs.last().unwrap(), "Change width").await;
    env.wait("width question", |m| m.last().is_some_and(|m| m.view.input.as_ref().is_some_and(|i| i.label == "width")))
        .await;
    env.text("abc").await;
    // The refusal, then the same question again.
    env.wait("type refusal", |m| {
        m.iter().any(|m| m.view.plain_text().contains("⚠ width"))
            && m.last().unwrap().view.input.as_ref().is_some_and(|i| i.label == "width")
    })
    .await;
    env.text("100000").await;
    env.wait("range refusal", |m| m.iter().filter(|m| m.view.plain_text().contains("⚠ width")).count() >= 2).await;
    env.text("96").await;
    let msgs =
        env.wait("card with new width", |m| m.last().is_some_and(|m| m.view.plain_text().contains("96 (yours)"))).await;
    env.press(msgs.last().unwrap(), "Done").await;
    env.command("dream", "a cat").await;
    env.wait_results(1).await;
    assert_eq!(job_params(&env.jobs().await[0])["width"], 96);
    env.stop().await;
}

/// `/settings` without a tool pages its tool picker like `/make` (8 buttons
/// a page in a chat, 25 in a Discord select menu): every tool the person
/// can use is reachable, and one from a later page opens its settings.
async fn settings_picker_pages_through_every_tool(db: TestDb) {
    let env = setup(db).await;
    env.command("settings", "").await;
    let msgs = env.wait("settings menu", |m| m.last().is_some_and(|m| m.view.input.is_some())).await;
    let first = msgs.last().unwrap().clone();
    let choices = |m: &Shown| match &m.view.input.as_ref().unwrap().kind {
        station_flows::InputKind::Choice { options } => options.iter().map(|b| b.label.clone()).collect::<Vec<_>>(),
        other => panic!("a tool choice, not {other:?}"),
    };
    let page_one = choices(&first);
    assert_eq!(page_one.len(), 8, "one page of buttons: {page_one:?}");
    assert!(labels(&first).iter().any(|l| l == "Next ▶"), "{:?}", labels(&first));
    assert!(first.view.plain_text().contains("Page 1 of"), "{}", first.view.plain_text());
    env.press(&first, "Next ▶").await;
    let msgs = env.wait("page two", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Page 2 of"))).await;
    let second = msgs.last().unwrap().clone();
    let page_two = choices(&second);
    assert!(!page_two.is_empty() && page_two.iter().all(|l| !page_one.contains(l)), "{page_one:?} / {page_two:?}");
    assert!(labels(&second).iter().any(|l| l == "◀ Previous"), "{:?}", labels(&second));
    let pick = page_two[0].clone();
    env.press(&second, &pick).await;
    env.wait("that tool's settings", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.starts_with("Change "))))
        .await;
    env.stop().await;
}

async fn runs_over_the_threshold_are_confirmed_first(db: TestDb) {
    let env = setup(db).await;
    env.command("settings", "").await;
    let msgs = env
        .wait("settings menu", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("when I ask"))))
        .await;
    env.press(msgs.last().unwrap(), "when I ask").await;
    env.wait("threshold question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("above which"))).await;
    env.text("-3").await;
    env.wait("refusal", |m| m.iter().any(|m| m.view.plain_text().contains("⚠ the threshold"))).await;
    env.text("0").await;
    env.wait("menu again", |m| m.last().is_some_and(|m| m.view.plain_text().contains("more than 0 points"))).await;
    env.command("dream", "a costly picture").await;
    let msgs =
        env.wait("price question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("This run costs"))).await;
    assert!(env.jobs().await.is_empty(), "nothing queued before confirming");
    env.press(msgs.last().unwrap(), "Yes, spend").await;
    let result = env.wait_results(1).await.remove(0);
    // Rerunning asks again, then runs.
    env.press(&result, "Rerun").await;
    let msgs = env
        .wait("price question for the rerun", |m| {
            m.last().is_some_and(|m| m.view.plain_text().contains("This run costs"))
        })
        .await;
    env.press(msgs.last().unwrap(), "Yes, spend").await;
    env.wait_results(2).await;
    assert_eq!(env.jobs().await.len(), 2);
    env.stop().await;
}

async fn status_during_a_running_job(db: TestDb) {
    let env = setup(db).await;
    env.fake.set_step_delay(400);
    env.command("dream", "slow").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !env.jobs().await.iter().any(|j| j.status == "running") {
        assert!(tokio::time::Instant::now() < deadline, "job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.command("status", "").await;
    let msgs = env.wait("status", |m| m.iter().any(|m| m.view.plain_text().contains("Balance"))).await;
    let status = msgs.iter().find(|m| m.view.plain_text().contains("Balance")).unwrap();
    assert!(status.view.blocks.iter().any(|b| matches!(b, Block::Progress { .. })), "{}", status.view.plain_text());
    assert!(labels(status).iter().any(|l| l.contains("Cancel")));
    // Cancel from the status message.
    env.press(status, "Cancel").await;
    let msgs = env.wait("cancelled result", |m| results(m).len() == 1).await;
    assert!(results(&msgs)[0].view.plain_text().contains("cancelled"));
    env.stop().await;
}

async fn history_is_paginated(db: TestDb) {
    let env = setup(db).await;
    for i in 0..8 {
        env.command("dream", &format!("picture {i}")).await;
    }
    env.wait_results(8).await;
    env.command("history", "").await;
    let msgs =
        env.wait("history page 1", |m| m.last().is_some_and(|m| m.view.plain_text().contains("page 1 of 2"))).await;
    let page1 = msgs.last().unwrap().clone();
    let cells = |m: &Shown| match m.view.blocks.iter().find(|b| matches!(b, Block::Grid { .. })) {
        Some(Block::Grid { cells, .. }) => cells.len(),
        _ => 0,
    };
    assert_eq!(cells(&page1), 6);
    // Issue 21, item 13: each button says which job it opens (tool, prompt start, time).
    let opens: Vec<String> = labels(&page1).into_iter().filter(|l| l.starts_with("Dream: picture")).collect();
    assert_eq!(opens.len(), 6, "{:?}", labels(&page1));
    assert_eq!(opens.iter().collect::<std::collections::HashSet<_>>().len(), 6, "distinct: {opens:?}");
    assert!(opens.iter().all(|l| l.ends_with("just now")), "{opens:?}");
    env.press(&page1, "Older").await;
    let msgs =
        env.wait("history page 2", |m| m.last().is_some_and(|m| m.view.plain_text().contains("page 2 of 2"))).await;
    assert_eq!(cells(msgs.last().unwrap()), 2);
    // Opening a result from the gallery shows it again with its actions.
    env.press(msgs.last().unwrap(), "Dream: picture 0").await;
    env.wait("reopened result", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("Rerun")))).await;
    // The page-1 buttons belong to an earlier step now.
    let reply = env.press(&page1, "Older").await;
    assert!(reply.toast.unwrap().contains("moved on"));
    env.stop().await;
}

async fn concurrent_inputs_never_corrupt_a_flow(db: TestDb) {
    let env = setup(db).await;
    env.command("make", "").await;
    let msgs = env.wait("tool choice", |m| m.last().is_some_and(|m| m.view.input.is_some())).await;
    let choose = msgs.last().unwrap().clone();
    let token = token_of(&choose, "Dream");
    let (a, b) = tokio::join!(
        env.flows.handle(&env.account, &env.conv, Input::Action { token: token.clone() }),
        env.flows.handle(&env.account, &env.conv, Input::Action { token: token.clone() }),
    );
    let toasts: Vec<Option<String>> = vec![a.unwrap().toast, b.unwrap().toast];
    assert_eq!(toasts.iter().filter(|t| t.is_none()).count(), 1, "exactly one press applied: {toasts:?}");
    assert!(toasts.iter().flatten().any(|t| t.contains("moved on")));
    let inst = env.db.store.active_flow(&env.conv.key(), &env.account.id).await.unwrap().unwrap();
    assert_eq!(inst.step, "ask");
    let history: Vec<(String, Value)> = serde_json::from_str(&inst.history).unwrap();
    assert_eq!(history.len(), 1, "one transition recorded");
    // A second engine (another process) racing on the same instance: only one wins.
    let other = Flows::with_settings(env.station.clone(), settings());
    let (a, b) = tokio::join!(
        env.flows.handle(&env.account, &env.conv, Input::Text { text: "one".into() }),
        other.handle(&env.account, &env.conv, Input::Text { text: "two".into() }),
    );
    let toasts = [a.unwrap().toast, b.unwrap().toast];
    // Both inputs may apply one after the other (the second then lands on the
    // options step): wait until everything stored was shown, then press Run.
    env.settled().await;
    let msgs = env.wait("options", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("Run")))).await;
    env.press(msgs.last().unwrap(), "Run").await;
    env.wait_results(1).await;
    let jobs = env.jobs().await;
    assert_eq!(jobs.len(), 1, "one job, whichever input won: {toasts:?}");
    env.stop().await;
}

async fn restart_mid_flow_and_mid_job(db: TestDb) {
    let mut env = setup(db).await;
    // Mid-flow: the conversation is at the prompt question when the process stops.
    env.command("make", "").await;
    let msgs = env.wait("tool choice", |m| m.last().is_some_and(|m| m.view.input.is_some())).await;
    env.press(msgs.last().unwrap(), "Dream").await;
    env.wait("prompt question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("prompt"))).await;
    env.runner.take().unwrap().shutdown().await;
    // A new engine (a restarted process) continues at the same step.
    env.flows = Flows::with_settings(env.station.clone(), settings());
    env.flows.add_platform(Arc::new(env.platform.clone()));
    env.runner = Some(env.flows.start());
    env.text("after restart").await;
    let msgs = env.wait("options", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("Run")))).await;
    assert!(msgs.last().unwrap().view.plain_text().contains("after restart"));
    // Mid-job: nobody is delivering while the job runs and finishes.
    env.runner.take().unwrap().shutdown().await;
    env.press(msgs.last().unwrap(), "Run").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let jobs = env.jobs().await;
        if jobs.first().is_some_and(|j| j.status == "succeeded") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "job never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(results(&env.platform.messages(&env.conv.chat)).is_empty(), "nothing delivered while stopped");
    // The options/progress message written before the stop, and the result, arrive once.
    env.runner = Some(env.flows.start());
    env.wait_results(1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(results(&env.platform.messages(&env.conv.chat)).len(), 1, "result delivered once");
    assert!(env.platform.send_counts().values().all(|&n| n == 1));
    env.stop().await;
}

async fn deliveries_retry_and_stop_when_blocked(db: TestDb) {
    let env = setup(db).await;
    env.platform.script(vec![Outcome::RetryAfter(Duration::from_millis(100)), Outcome::Transient("502".into())]);
    env.command("help", "").await;
    let msgs = env.wait("help after retries", |m| m.iter().any(|m| m.view.plain_text().contains("Commands"))).await;
    assert_eq!(msgs.len(), 1);
    // The outcome is recorded just after the platform answers.
    let deadline = tokio::time::Instant::now() + WAIT;
    let d = loop {
        let d = env.db.store.get_delivery(&msgs[0].delivery_id).await.unwrap().unwrap();
        if d.status != "sending" || tokio::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((d.status.as_str(), d.attempts), ("sent", 3));
    // Blocked: this and every later pending delivery of the chat fail for good.
    env.platform.script(vec![Outcome::Permanent("Forbidden: bot was blocked by the user".into())]);
    env.command("help", "").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = env.db.store.conversation_deliveries(&env.conv.key()).await.unwrap();
        if rows.iter().any(|r| r.status == "failed") {
            assert!(rows.last().unwrap().error.as_deref().unwrap().contains("blocked"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "blocked delivery never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.stop().await;
}

async fn idle_flows_expire_with_a_message(db: TestDb) {
    let env = setup(db).await;
    env.command("make", "").await;
    env.wait("tool choice", |m| m.last().is_some_and(|m| m.view.input.is_some())).await;
    let short = Flows::with_settings(env.station.clone(), FlowSettings { idle_ms: 0, ..settings() });
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(short.expire_idle().await.unwrap(), 1);
    env.wait("expiry notice", |m| m.iter().any(|m| m.view.plain_text().contains("closed after"))).await;
    assert!(env.db.store.active_flow(&env.conv.key(), &env.account.id).await.unwrap().is_none());
    env.text("hello?").await;
    env.wait("hint", |m| m.last().is_some_and(|m| m.view.plain_text().contains("/make"))).await;
    env.stop().await;
}

async fn start_help_and_unknown_input(db: TestDb) {
    let env = setup(db).await;
    env.command("start", "").await;
    let msgs = env.wait("welcome", |m| m.iter().any(|m| m.view.plain_text().contains("Welcome"))).await;
    assert!(msgs[0].view.plain_text().contains("1000 points"), "{}", msgs[0].view.plain_text());
    env.press(&msgs[0], "Help").await;
    // A long help may arrive in parts: wait for both commands, in any part.
    env.wait("help", |m| {
        m.iter().any(|m| m.view.plain_text().contains("/dream"))
            && m.iter().any(|m| m.view.plain_text().contains("/upscale "))
    })
    .await;
    env.command("nonsense", "").await;
    env.wait("unknown command", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Unknown command"))).await;
    let menu: Vec<String> = env.flows.commands(Some(&env.account)).into_iter().map(|c| c.name).collect();
    for name in ["start", "help", "make", "settings", "status", "history", "balance", "link", "web", "cancel", "dream"]
    {
        assert!(menu.contains(&name.to_string()), "menu has /{name}: {menu:?}");
    }
    env.stop().await;
}

async fn too_many_inputs_get_a_friendly_refusal(db: TestDb) {
    let env = setup(db).await;
    // Each input takes a token from the account's bucket (shared with the API).
    let limit = env.station.config.limits.requests_per_minute as usize;
    for _ in 0..limit {
        env.send(Input::Text { text: "hello".into() }).await;
    }
    let reply = env.send(Input::Text { text: "hello".into() }).await;
    assert!(reply.toast.unwrap().contains("going a bit fast"));
    env.wait("refusal in the chat", |m| m.iter().any(|m| m.view.plain_text().contains("Please wait"))).await;
    env.stop().await;
}

async fn balance_and_link(db: TestDb) {
    let env = setup(db).await;
    env.command("balance", "").await;
    env.wait("balance", |m| m.iter().any(|m| m.view.plain_text().contains("1000 points"))).await;
    env.command("link", "").await;
    let msgs = env.wait("link code", |m| m.last().is_some_and(|m| m.view.plain_text().contains("link code"))).await;
    let text = msgs.last().unwrap().view.plain_text();
    let code = text.split("/link ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    // The same person on another platform joins with the code.
    let other = env.station.account("discord", "d1", "Ada").await.unwrap();
    let conv2 = Conversation::new("test", "chat2");
    env.flows
        .handle(&other, &conv2, Input::Command { name: "link".into(), text: code, images: vec![], params: Map::new() })
        .await
        .unwrap();
    env.platform.wait_for("chat2", WAIT, "linked", |m| m.iter().any(|m| m.view.plain_text().contains("Linked"))).await;
    let joined = env.station.account("discord", "d1", "Ada").await.unwrap();
    assert_eq!(joined.id, env.account.id);
    env.stop().await;
}

/// Issue 17, item 1: `/web` and `/link` asked in a group reach only the
/// asker (their private views go to the platform's private chat with them,
/// never the group), and a platform that cannot deliver privately is never
/// handed them: the delivery fails, nothing is shown.
async fn secrets_asked_in_a_group_reach_only_the_asker(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let group = Conversation { group: Some("test:-100".into()), ..Conversation::new("test", "-100") };
    for name in ["web", "link"] {
        let input = Input::Command { name: name.into(), text: String::new(), images: vec![], params: Map::new() };
        env.flows.handle(&env.account, &group, input).await.unwrap();
    }
    let private = TestPlatform::private_chat(&env.account.id);
    let msgs = env
        .platform
        .wait_for(&private, WAIT, "both secrets in private", |m| {
            let all = serde_json::to_string(&m.iter().map(|m| &m.view).collect::<Vec<_>>()).unwrap();
            all.contains("login?token=") && all.contains("link code")
        })
        .await;
    assert!(msgs.iter().all(|m| m.view.private), "[{k}] the secrets are private views");
    assert!(
        env.platform.messages(&group.chat).is_empty(),
        "[{k}] the group got: {:?}",
        env.platform.messages(&group.chat)
    );

    // A shared screen: the secret is refused, not shown.
    let shared = TestPlatform::public_only("kiosk");
    env.flows.add_platform(Arc::new(shared.clone()));
    let kiosk = Conversation::new("kiosk", "hall");
    let input = Input::Command { name: "web".into(), text: String::new(), images: vec![], params: Map::new() };
    env.flows.handle(&env.account, &kiosk, input).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = env.db.store.conversation_deliveries(&kiosk.key()).await.unwrap();
        if !rows.is_empty() && rows.iter().all(|r| r.status == "failed") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "[{k}] the kiosk delivery never failed: {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(shared.messages("hall").is_empty(), "[{k}] nothing was shown on the shared screen");
    env.stop().await;
}

/// Issue 17, item 10: tools whose visibility is `hidden` (the built-in
/// templates) do not exist for members in a chat: their commands are
/// unknown, and nothing is queued.
async fn hidden_tools_are_unknown_commands(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    for (name, text) in [("sdxl", "a cat"), ("txt2img-sdxl", "a cat"), ("sd15", "a dog")] {
        env.command(name, text).await;
        env.wait(&format!("/{name} unknown"), |m| {
            m.last().is_some_and(|m| m.view.plain_text().contains(&format!("Unknown command /{name}")))
        })
        .await;
    }
    assert!(env.jobs().await.is_empty(), "[{k}] a hidden tool was queued");
    let menu: Vec<String> = env.flows.commands(Some(&env.account)).into_iter().map(|c| c.name).collect();
    assert!(!menu.contains(&"sdxl".to_string()), "[{k}] {menu:?}");
    env.stop().await;
}

/// Issue 20: `/make` offers Text to image once the backend has checkpoints,
/// asks which model (by label and base model) when there is a choice, and
/// the job runs with the chosen model and its base model's defaults.
async fn make_offers_the_backends_models(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    env.fake.set_models("checkpoints", &["dreamshaper_8_sd15.safetensors", "tiny_xl.safetensors"]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.station.model_choices(env.station.tools.get("txt2img").unwrap().model_input().unwrap().1).len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "[{k}] the health check never stored the models");
        env.station.reload_models().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.command("make", "").await;
    let msgs = env.wait("tool choice", |m| m.last().is_some_and(|m| m.view.input.is_some())).await;
    let choose = msgs.last().unwrap().clone();
    let tools: Vec<String> = labels(&choose).into_iter().filter(|l| !l.contains("Next") && l != "Cancel").collect();
    assert_eq!(tools.first().map(String::as_str), Some("Text to image"), "[{k}] first: {tools:?}");
    env.press(&choose, "Text to image").await;
    env.wait("prompt question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("prompt"))).await;
    env.text("a red fox").await;
    let msgs =
        env.wait("model picker", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("(SDXL)")))).await;
    let picker = msgs.last().unwrap().clone();
    assert!(labels(&picker).contains(&"dreamshaper_8_sd15 (SD1.5)".to_string()), "[{k}] {:?}", labels(&picker));
    env.press(&picker, "tiny_xl (SDXL)").await;
    let msgs = env.wait("options", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("Run")))).await;
    let options = msgs.last().unwrap().clone();
    assert!(options.view.plain_text().contains("tiny_xl.safetensors"), "[{k}] {}", options.view.plain_text());
    // Small enough for the fake to draw quickly.
    assert!(
        options.view.plain_text().contains("width: 1024 (default)"),
        "[{k}] SDXL size: {}",
        options.view.plain_text()
    );
    env.text("width=64\nheight=64\nsteps=2").await;
    let msgs = env.wait("options again", |m| m.last().is_some_and(|m| m.view.plain_text().contains("64"))).await;
    env.press(msgs.last().unwrap(), "Run").await;
    env.wait_results(1).await;
    let p = job_params(&env.jobs().await[0]);
    assert_eq!(
        (p["model"].clone(), p["sampler"].clone()),
        (Value::from("tiny_xl.safetensors"), Value::from("dpmpp_2m")),
        "[{k}] SDXL defaults"
    );
    env.stop().await;
}

/// Issue 21, item 9: an account that never ran a job (and never sent
/// /start, as on Discord) sees its starting points in /status, /balance and
/// the price of its first run.
async fn starting_grant_shows_before_the_first_job(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let fresh = env.station.account("test", "newcomer", "Bea").await.unwrap();
    let conv = Conversation::new("test", "newcomer");
    let cmd =
        |name: &str| Input::Command { name: name.into(), text: String::new(), images: vec![], params: Map::new() };
    env.flows.handle(&fresh, &conv, cmd("status")).await.unwrap();
    env.platform.wait_for("newcomer", WAIT, "status", |m| !m.is_empty()).await;
    let status = env.platform.last("newcomer").unwrap().view.plain_text();
    assert!(status.contains("Balance: 1000 points"), "[{k}] {status}");
    env.flows.handle(&fresh, &conv, cmd("balance")).await.unwrap();
    let msgs = env.platform.wait_for("newcomer", WAIT, "balance", |m| m.len() >= 2).await;
    let balance = msgs[1].view.plain_text();
    assert!(balance.contains("You have 1000 points"), "[{k}] {balance}");
    assert!(balance.contains("+1000 points") && balance.contains("Starting points"), "[{k}] {balance}");
    assert!(!balance.contains("grant"), "[{k}] no ledger kinds: {balance}");
    env.stop().await;
}

/// Issue 21, item 11: `name=value` after a tool command sets that input;
/// an unknown name, or text for a tool that takes none, is answered with
/// the tool's inputs and queues nothing.
async fn inline_parameters_set_inputs(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let photo = env.upload(64, 48).await;
    let with_photo = |text: &str| Input::Command {
        name: "resize".into(),
        text: text.into(),
        images: vec![photo.clone()],
        params: Map::new(),
    };
    env.send(with_photo("widht=32")).await;
    let msgs =
        env.wait("unknown name", |m| m.iter().any(|m| m.view.plain_text().contains("no input called widht"))).await;
    let text = msgs.last().unwrap().view.plain_text();
    assert!(text.contains("Inputs of Resize") && text.contains("width") && text.contains("height"), "[{k}] {text}");
    env.send(with_photo("make it small")).await;
    env.wait("text refused", |m| m.iter().any(|m| m.view.plain_text().contains("takes no text"))).await;
    assert!(env.jobs().await.is_empty(), "[{k}] nothing queued for refused input");
    assert!(env.db.store.active_flow(&env.conv.key(), &env.account.id).await.unwrap().is_none(), "[{k}] ended cleanly");
    env.send(with_photo("width=32")).await;
    let result = env.wait_results(1).await.remove(0);
    let media = env.db.store.get_media(&result_image(&result)).await.unwrap().unwrap();
    assert_eq!(media.width, 32, "[{k}] width set inline");
    // A prompt and a setting together.
    env.command("dream", "a red fox steps=5").await;
    env.wait_results(2).await;
    let jobs = env.jobs().await;
    let p = job_params(jobs.last().unwrap());
    assert_eq!((p["prompt"].as_str(), p["steps"].as_i64()), (Some("a red fox"), Some(5)), "[{k}] {p:?}");
    env.stop().await;
}

/// Issue 21, item 12: /start and /help give examples from tools the account
/// can run (a prompt example from a tool with a prompt, never a hidden
/// one), and two tools with one name get distinct labels in pickers.
async fn examples_and_labels_come_from_runnable_tools(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    // The backend's checkpoints make the model tools public once its health
    // check has stored them; walk the picker after that, so the list does not
    // grow between two pages.
    let def = env.station.tools.get("txt2img").unwrap().model_input().unwrap().1.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.station.model_choices(&def).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "[{k}] the health check never stored the models");
        env.station.reload_models().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.command("start", "").await;
    let msgs = env.wait("welcome", |m| m.iter().any(|m| m.view.plain_text().contains("Welcome"))).await;
    let welcome = msgs.last().unwrap().view.plain_text();
    assert!(
        welcome.contains("/draw a lighthouse at dusk"),
        "[{k}] the first tool with a prompt, text to image: {welcome}"
    );
    assert!(!welcome.contains("/sdxl") && !welcome.contains("/sd15"), "[{k}] hidden tools: {welcome}");
    let image_example = welcome.split("for example /").nth(2).map(|s| s.split(')').next().unwrap_or("").to_string());
    let image_cmd = image_example.expect("an image example");
    let tool = env.station.find_tool(&image_cmd, &env.account).expect("the image example is runnable");
    assert!(tool.inputs.values().any(|d| d.kind == station_core::tools::InputType::Image), "[{k}] {image_cmd}");
    env.command("help", "").await;
    let msgs = env.wait("help", |m| m.iter().any(|m| m.view.plain_text().starts_with("Commands"))).await;
    let help = msgs.last().unwrap().view.plain_text();
    assert!(help.contains("/draw a lighthouse at dusk") && help.contains("name=value"), "[{k}] {help}");

    env.command("make", "").await;
    let mut seen = vec![];
    let mut msgs = env.wait("picker", |m| m.last().is_some_and(|m| m.view.input.is_some())).await;
    loop {
        let picker = msgs.last().unwrap().clone();
        if let Some(InputKind::Choice { options }) = picker.view.input.as_ref().map(|i| &i.kind) {
            seen.extend(options.iter().map(|b| b.label.clone()));
        }
        if !labels(&picker).iter().any(|l| l.contains("Next")) {
            break;
        }
        let first = labels(&picker).first().cloned();
        env.press(&picker, "Next").await;
        // The next page: the same card, edited, whose first option is another one.
        msgs = env
            .wait("next page", |m| {
                m.last().is_some_and(|p| p.view.input.is_some() && labels(p).first().cloned() != first)
            })
            .await;
    }
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "[{k}] labels repeat: {seen:?}");
    assert!(seen.iter().filter(|l| l.starts_with("Resize")).count() >= 2, "[{k}] both resize tools: {seen:?}");
    env.stop().await;
}

/// Issue 21, item 13: what a person reads carries no job ids, `media:`
/// references, ledger kinds or error codes; points are counted in words.
async fn user_text_has_no_internal_data(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let photo = env.upload(8, 8).await;
    env.send(Input::Command {
        name: "flip".into(),
        text: "direction=horizontal".into(),
        images: vec![photo],
        params: Map::new(),
    })
    .await;
    let result = env.wait_results(1).await.remove(0);
    // The charge is captured just after the result is announced.
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.station.points(&env.account.id).await.unwrap().balance != 999 {
        assert!(tokio::time::Instant::now() < deadline, "[{k}] the run was never charged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.press(&result, "Info").await;
    let msgs = env.wait("info", |m| m.iter().any(|m| m.view.plain_text().contains("About this result"))).await;
    let info = msgs.iter().find(|m| m.view.plain_text().contains("About this result")).unwrap().view.plain_text();
    let job = env.jobs().await.remove(0);
    assert!(!info.contains(&job.id) && !info.contains("media:"), "[{k}] {info}");
    assert!(info.contains("1 point") && !info.contains("1 points"), "[{k}] {info}");
    env.command("balance", "").await;
    let msgs = env.wait("balance", |m| m.last().is_some_and(|m| m.view.plain_text().contains("You have"))).await;
    let balance = msgs.last().unwrap().view.plain_text();
    assert!(balance.contains("-1 point:"), "[{k}] {balance}");
    for raw in ["capture", "hold", "grant", "+0", &job.id] {
        assert!(!balance.contains(raw), "[{k}] {raw:?} in {balance}");
    }
    assert!(balance.contains("Flip"), "[{k}] the charge names its tool: {balance}");
    env.stop().await;
}

/// Issue 23: the training journey in chat — name, photos (a copy refused),
/// captions, settings, price, progress, and a result naming the LoRA and its
/// trigger word; `/loras` then lists it as the user's own.
async fn train_a_lora_in_chat(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    env.command("train", "Tom Cat").await;
    env.wait("the photos step", |m| m.last().is_some_and(|m| m.view.plain_text().contains("0 of 20"))).await;
    let mut photos = vec![];
    for i in 0..4 {
        photos.push(env.upload(8 + i, 8).await);
    }
    env.send(Input::Images { media: photos[..3].to_vec() }).await;
    env.wait("3 photos", |m| m.last().is_some_and(|m| m.view.plain_text().contains("3 of 20"))).await;
    // The same photo twice is refused, and said so.
    env.send(Input::Images { media: vec![photos[0].clone()] }).await;
    let msgs = env
        .wait("the copy refused", |m| m.last().is_some_and(|m| m.view.plain_text().contains("already in slot 1")))
        .await;
    assert!(!labels(msgs.last().unwrap()).iter().any(|l| l.contains("Continue")), "[{k}] 3 photos are too few");
    env.send(Input::Images { media: vec![photos[3].clone()] }).await;
    let msgs = env.wait("4 photos", |m| m.last().is_some_and(|m| m.view.plain_text().contains("4 of 20"))).await;
    // The price needs the backend's checkpoint, known after its first health check.
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.station.reload_models().await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "[{k}] the health check never stored the models");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.press(msgs.last().unwrap(), "Continue").await;
    let msgs = env.wait("the price", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Price"))).await;
    let quote = msgs.last().unwrap().view.plain_text();
    assert!(quote.contains("tom-cat") && quote.contains("1000"), "[{k}] slug, trigger and default steps: {quote}");
    // A caption for the first photo; the trigger word is put in front.
    env.press(msgs.last().unwrap(), "✍ Captions").await;
    env.wait("the first caption", |m| m.last().is_some_and(|m| m.view.plain_text().contains("1 of 4"))).await;
    env.text("sitting on a red sofa").await;
    let msgs =
        env.wait("the second caption", |m| m.last().is_some_and(|m| m.view.plain_text().contains("2 of 4"))).await;
    env.press(msgs.last().unwrap(), "Keep the rest").await;
    let ds = env.station.dataset(&env.account, "tom-cat").await.unwrap();
    assert_eq!(ds.images[0].caption, "tom-cat, sitting on a red sofa", "[{k}]");
    // Without a caption tool, automatic captions are refused in words.
    let msgs = env.wait("the price again", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Price"))).await;
    env.press(msgs.last().unwrap(), "Auto-captions").await;
    // The refusal is a notice; the step's card is shown again after it.
    env.wait("auto-captions refused", |m| {
        m.iter().any(|m| m.view.plain_text().contains("no caption tool is configured"))
    })
    .await;
    // A bad setting is refused by the core with its reason; a good one changes the price.
    env.text("steps=0").await;
    env.wait("steps refused", |m| m.last().is_some_and(|m| m.view.plain_text().contains("steps"))).await;
    env.text("steps=4").await;
    let msgs = env
        .wait("the new price", |m| {
            m.last().is_some_and(|m| m.view.plain_text().contains("Price") && m.view.plain_text().contains("Steps: 4"))
        })
        .await;
    let before = env.station.points(&env.account.id).await.unwrap().available();
    env.press(msgs.last().unwrap(), "Train").await;
    let msgs = env.wait("the LoRA ready", |m| m.iter().any(|m| m.view.plain_text().contains("✅"))).await;
    let ready = msgs.iter().find(|m| m.view.plain_text().contains("✅")).unwrap().view.plain_text();
    assert_eq!(msgs.iter().filter(|m| m.kind == DeliveryKind::Result).count(), 1, "[{k}] one result: {msgs:?}");
    assert!(ready.contains("Tom Cat") && ready.contains("tom-cat"), "[{k}] names the LoRA and trigger word: {ready}");
    assert!(!ready.contains(&env.account.id), "[{k}] no internal ids: {ready}");
    let after = env.station.points(&env.account.id).await.unwrap().available();
    assert_eq!(before - after, 1, "[{k}] 4 steps × 0.1 point, rounded up, charged once");
    let lora = env.station.loras().show("tom-cat").await.unwrap();
    assert_eq!(lora.owner.as_deref(), Some(env.account.id.as_str()), "[{k}]");
    env.command("loras", "").await;
    let msgs =
        env.wait("the LoRA list", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Your LoRAs"))).await;
    let list = msgs.last().unwrap().view.plain_text();
    assert!(list.contains("Tom Cat") && list.contains("yours"), "[{k}] {list}");
    env.stop().await;
}

/// Issue 23: an owner's LoRA from `/loras` in chat — share it with
/// someone, stop sharing it, ask to make it public (an administrator
/// approves), delete it — each through the core's rules and audited.
async fn own_lora_actions_in_chat(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let bob = env.station.account("test", "u2", "Bob").await.unwrap();
    let edit = station_core::loras::LoraEdit {
        name: Some("Ink Fox".into()),
        trigger_words: Some(vec!["inkfox".into()]),
        checkpoint: Some("SD1.5".into()),
        filename: Some("ink-fox.safetensors".into()),
        owner: Some(Some(env.account.id.clone())),
        visibility: Some(station_core::loras::Visibility::Private),
        ..Default::default()
    };
    let operator = station_core::audit::Actor::operator("test");
    env.station.loras().add("ink-fox", edit, &operator).await.unwrap();
    let open_menu = || async {
        env.command("loras", "").await;
        let msgs =
            env.wait("the LoRA list", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Your LoRAs"))).await;
        env.press(msgs.last().unwrap(), "⚙ Ink Fox").await;
        let msgs = env
            .wait("the LoRA's card", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Who can use it")))
            .await;
        msgs.last().unwrap().clone()
    };

    // Share it with Bob, named by his identity.
    let card = open_menu().await;
    assert!(card.view.plain_text().contains("nobody yet"), "[{k}] {}", card.view.plain_text());
    assert!(!labels(&card).iter().any(|l| l.contains("Stop sharing")), "[{k}] nothing to unshare yet");
    env.press(&card, "Share").await;
    env.wait("who to share with", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Who should be able")))
        .await;
    env.text("test:nobody-here").await;
    env.wait("an unknown account refused", |m| m.iter().any(|m| m.view.plain_text().contains("That account"))).await;
    env.text("test:u2").await;
    env.wait("shared", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Bob can now use"))).await;
    let bob_sees = env.station.loras().usable(&bob).await.unwrap();
    assert!(bob_sees.iter().any(|l| l.slug == "ink-fox"), "[{k}] Bob can use it");

    // Stop sharing it.
    let card = open_menu().await;
    assert!(card.view.plain_text().contains("Bob"), "[{k}] {}", card.view.plain_text());
    env.press(&card, "Stop sharing").await;
    let msgs = env.wait("whom to stop", |m| m.last().is_some_and(|m| m.view.plain_text().contains("no longer"))).await;
    env.press(msgs.last().unwrap(), "Bob").await;
    env.wait("unshared", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Bob can no longer use"))).await;
    let bob_sees = env.station.loras().usable(&bob).await.unwrap();
    assert!(!bob_sees.iter().any(|l| l.slug == "ink-fox"), "[{k}] Bob can no longer use it");

    // Make it public: an administrator approves the request first.
    let card = open_menu().await;
    env.press(&card, "Make public").await;
    env.wait("asked", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Asked an administrator"))).await;
    let card = open_menu().await;
    let text = card.view.plain_text();
    assert!(text.contains("waiting for an administrator"), "[{k}] {text}");
    assert!(!labels(&card).iter().any(|l| l.contains("Make public")), "[{k}] asked once");
    env.send(station_flows::Input::Action { token: token_of(&card, "Done") }).await;
    env.station.decide_lora_publish("ink-fox", true, &operator).await.unwrap();
    let card = open_menu().await;
    assert!(card.view.plain_text().contains("everyone can use it"), "[{k}] {}", card.view.plain_text());

    // Delete it (asked first); it leaves the catalog.
    env.press(&card, "Delete").await;
    let msgs =
        env.wait("delete asked", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Delete Ink Fox?"))).await;
    env.press(msgs.last().unwrap(), "🗑 Delete").await;
    env.wait("deleted", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Deleted ink-fox"))).await;
    assert!(env.station.loras().show("ink-fox").await.is_err(), "[{k}] deleted");
    let audit =
        env.station.audit_log(&station_core::audit::AuditQuery { limit: 100, ..Default::default() }).await.unwrap();
    for action in ["lora.grant", "lora.revoke", "lora.publish.request", "lora.publish.approve"] {
        assert!(audit.iter().any(|e| e.action == action), "[{k}] {action} audited");
    }
    for m in env.platform.messages(&env.conv.chat) {
        assert!(!m.view.plain_text().contains(&bob.id), "[{k}] no internal ids: {}", m.view.plain_text());
    }
    env.stop().await;
}

/// Issue 23: captions written by the operator's caption tool from the
/// `/train` flow — a paid job per photo, progress on Refresh, then a review
/// of each caption.
async fn auto_captions_in_chat(db: TestDb) {
    let env = setup_with(db, |c| {
        let dir = c.tools_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let tool = serde_json::json!({
            "id": "caption", "name": "Caption", "category": "caption", "visibility": "hidden", "service": "comfyui",
            "inputs": {"image": {"type": "image", "required": true}},
            "cost": {"per_run": 1},
            "comfyui": {
                "workflow": {
                    "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
                    "2": {"class_type": "StationCaption", "inputs": {"image": ["1", 0]}},
                    "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
                },
                "bindings": {"image": ["1.inputs.image"]},
                "outputs": ["3"]
            }
        });
        std::fs::write(dir.join("caption.json"), serde_json::to_vec(&tool).unwrap()).unwrap();
    })
    .await;
    let k = env.db.kind;
    env.command("train", "Tom Cat").await;
    env.wait("the photos step", |m| m.last().is_some_and(|m| m.view.plain_text().contains("0 of 20"))).await;
    let mut photos = vec![];
    for i in 0..4 {
        photos.push(env.upload(8 + i, 8).await);
    }
    env.send(Input::Images { media: photos }).await;
    let msgs = env.wait("4 photos", |m| m.last().is_some_and(|m| m.view.plain_text().contains("4 of 20"))).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.station.reload_models().await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "[{k}] the health check never stored the models");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.press(msgs.last().unwrap(), "Continue").await;
    let msgs = env.wait("the price", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Price"))).await;
    let before = env.station.points(&env.account.id).await.unwrap().available();
    env.press(msgs.last().unwrap(), "Auto-captions").await;
    let msgs =
        env.wait("the run", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Captions cost 4 points"))).await;
    let mut last = msgs.last().unwrap().clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !last.view.plain_text().contains("Captions done: 4 written") {
        assert!(tokio::time::Instant::now() < deadline, "[{k}] {}", last.view.plain_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
        env.press(&last, "Refresh").await;
        last = env.platform.last(&env.conv.chat).unwrap();
    }
    env.press(&last, "Review captions").await;
    let msgs =
        env.wait("the first caption", |m| m.last().is_some_and(|m| m.view.plain_text().contains("1 of 4"))).await;
    let first = msgs.last().unwrap().view.plain_text();
    assert!(first.contains("tom-cat, a photo of a mostly"), "[{k}] the written caption is shown: {first}");
    env.text("on a sofa").await;
    env.wait("the second caption", |m| m.last().is_some_and(|m| m.view.plain_text().contains("2 of 4"))).await;
    let ds = env.station.dataset(&env.account, "tom-cat").await.unwrap();
    assert_eq!(ds.images[0].caption, "tom-cat, on a sofa", "[{k}] edited after");
    assert!(ds.images[1].caption.starts_with("tom-cat, a photo of a mostly"), "[{k}] {:?}", ds.images[1].caption);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let after = env.station.points(&env.account.id).await.unwrap();
        if after.held == 0 {
            assert_eq!(before - after.available(), 4, "[{k}] a point per caption");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "[{k}] holds never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.stop().await;
}

/// Issue 25: a spell cast from chat — `/spells` lists it, `/cast` with a
/// photo and name=value runs every step, followed by ONE message that shows
/// "step n of 2" and becomes the result (the last step's image).
async fn cast_a_spell_in_chat(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let spec: station_core::spells::SpellSpec = serde_json::from_value(serde_json::json!({
        "slug": "mirror", "name": "Shrink and mirror", "visibility": "private",
        "steps": [
            {"tool": "resize", "inputs_from": {"image": "input.image", "width": "input.width"}},
            {"tool": "flip", "params": {"direction": "horizontal"}, "inputs_from": {"image": "step1.output[0]"}},
        ],
        "inputs": {"width": {"default": 16}},
    }))
    .unwrap();
    env.station.create_spell(&env.account, spec).await.unwrap();
    env.command("spells", "").await;
    let msgs = env.wait("the spell list", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Spells"))).await;
    let list = msgs.last().unwrap().clone();
    assert!(list.view.plain_text().contains("Resize → Flip"), "[{k}] {}", list.view.plain_text());
    assert!(labels(&list).iter().any(|l| l.contains("Shrink and mirror")), "[{k}] {:?}", labels(&list));

    // The picker path asks for the photo, the only input without a default.
    env.press(&list, "Shrink and mirror").await;
    env.wait("the photo question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("image"))).await;
    env.send(Input::Images { media: vec![env.upload(32, 16).await] }).await;
    let first = env.wait_results(1).await.remove(0);
    let out = env.db.store.get_media(&result_image(&first)).await.unwrap().unwrap();
    assert_eq!((out.width, out.height), (16, 8), "[{k}] the default width");

    // The command path: photo, name=value, one message for the whole cast.
    let before = env.platform.messages(&env.conv.chat).len();
    let photo = env.upload(40, 20).await;
    env.send(Input::Command {
        name: "cast".into(),
        text: "mirror width=8".into(),
        images: vec![photo],
        params: Map::new(),
    })
    .await;
    let second = env.wait_results(2).await.remove(1);
    let out = env.db.store.get_media(&result_image(&second)).await.unwrap().unwrap();
    assert_eq!((out.width, out.height), (8, 4), "[{k}] width=8 reached step 1");
    assert!(second.view.plain_text().contains("Shrink and mirror"), "[{k}] {}", second.view.plain_text());
    assert!(labels(&second).iter().any(|l| l.contains("Cast again")), "[{k}] {:?}", labels(&second));
    assert!(
        second.edits.iter().all(|v| v.blocks.iter().any(|b| matches!(b, Block::Progress { .. }))),
        "[{k}] every earlier version was the cast's progress"
    );
    let shown: Vec<String> = second.edits.iter().map(station_flows::View::plain_text).collect();
    assert!(shown.iter().any(|t| t.contains("of 2")), "[{k}] progress names the step: {shown:?}");
    env.settled().await;
    let msgs = env.platform.messages(&env.conv.chat);
    assert_eq!(msgs.len(), before + 1, "[{k}] one message for the whole cast: {msgs:?}");
    // Cast again runs the spell with the same inputs.
    env.press(&second, "Cast again").await;
    let third = env.wait_results(3).await.remove(2);
    let out = env.db.store.get_media(&result_image(&third)).await.unwrap().unwrap();
    assert_eq!((out.width, out.height), (8, 4), "[{k}] same inputs");
    env.stop().await;
}

fn last_text(msgs: &[Shown]) -> String {
    msgs.last().map(|m| m.view.plain_text()).unwrap_or_default()
}

/// Presses `label` in a paged tool picker, turning pages until it shows.
async fn pick_paged(env: &Env, label: &str) {
    for _ in 0..10 {
        let msgs = env.wait("a picker", |m| m.last().is_some_and(|m| m.view.input.is_some())).await;
        let last = msgs.last().unwrap().clone();
        // A name two tools share is labelled with the command ("Resize · /resize").
        let own = format!("{label} · /{}", label.to_lowercase());
        if let Some(l) = labels(&last).into_iter().find(|l| *l == label || *l == own) {
            env.press(&last, &l).await;
            return;
        }
        env.press(&last, "Next ▶").await;
        let before = last.message_ref.clone();
        env.wait("the next page", |m| {
            m.last().is_some_and(|m| m.message_ref != before || m.edits.len() > last.edits.len())
        })
        .await;
    }
    panic!("{label} is on no page of the picker");
}

/// Issue 25: a spell made in chat — `/spells` → New spell, a name, Dream
/// then Resize from the paged picker (Resize's picture comes from step 1 by
/// itself, Dream's prompt is asked when cast), values fixed and a bad one
/// refused in words, the process restarted in the middle, saved through the
/// core's validation as public, then cast with the button it offers.
async fn create_a_spell_in_chat(db: TestDb) {
    let mut env = setup(db).await;
    let k = env.db.kind;
    env.command("spells", "").await;
    let msgs = env
        .wait("the spell list", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("New spell"))))
        .await;
    env.press(msgs.last().unwrap(), "New spell").await;
    env.wait("the name question", |m| last_text(m).contains("What should it be called?")).await;
    env.text("x").await;
    env.wait("a refused name", |m| {
        last_text(m).contains("called?") && m.iter().any(|m| m.view.plain_text().contains("two letters"))
    })
    .await;
    env.text("Dream big").await;
    env.wait("the first tool", |m| last_text(m).contains("which tool runs first")).await;
    pick_paged(&env, "Dream").await;
    let msgs = env.wait("step 1", |m| last_text(m).contains("Step 1: Dream")).await;
    let step1 = last_text(&msgs);
    assert!(step1.contains("asked when cast"), "[{k}] the prompt is exposed by default: {step1}");
    env.text("steps=0").await;
    let msgs =
        env.wait("a refused value", |m| m.iter().any(|m| m.view.plain_text().contains("steps cannot be that"))).await;
    let refusal = msgs.iter().map(|m| m.view.plain_text()).find(|t| t.contains("steps cannot be that")).unwrap();
    assert!(!refusal.contains("step1.") && !refusal.contains("params"), "[{k}] words, not field paths: {refusal}");
    env.text("steps=5").await;
    let msgs = env.wait("steps fixed", |m| last_text(m).contains("5 (fixed)")).await;
    env.press(msgs.last().unwrap(), "Add a step").await;
    env.wait("the second tool", |m| last_text(m).contains("Step 2: which tool")).await;
    pick_paged(&env, "Resize").await;
    let msgs = env.wait("step 2", |m| last_text(m).contains("Step 2: Resize")).await;
    assert!(last_text(&msgs).contains("the picture from step 1"), "[{k}] {}", last_text(&msgs));
    env.press(msgs.last().unwrap(), "✏ width").await;
    env.wait("the width question", |m| last_text(m).contains("Send a value")).await;
    env.text("0").await;
    env.wait("a refused width", |m| m.iter().any(|m| m.view.plain_text().contains("width cannot be that"))).await;
    env.text("32").await;
    let msgs = env.wait("width fixed", |m| last_text(m).contains("32 (fixed)")).await;

    // A restarted process continues the same draft.
    env.runner.take().unwrap().shutdown().await;
    env.flows = Flows::with_settings(env.station.clone(), settings());
    env.flows.add_platform(Arc::new(env.platform.clone()));
    env.runner = Some(env.flows.start());
    env.press(msgs.last().unwrap(), "Done").await;
    let msgs = env.wait("the review", |m| last_text(m).contains("Casting it asks for")).await;
    let review = last_text(&msgs);
    assert!(review.contains("Casting it asks for: prompt.") && review.contains("Step 2: Resize"), "[{k}] {review}");
    assert!(!review.contains("Before it can be saved"), "[{k}] {review}");
    env.press(msgs.last().unwrap(), "Who can cast it").await;
    let msgs = env.wait("unlisted", |m| last_text(m).contains("Anyone with its name")).await;
    env.press(msgs.last().unwrap(), "Who can cast it").await;
    let msgs = env.wait("public", |m| last_text(m).contains("Listed for everyone")).await;
    env.press(msgs.last().unwrap(), "Save").await;
    let msgs = env.wait("saved", |m| last_text(m).contains("Saved")).await;
    assert!(last_text(&msgs).contains("/cast dream-big"), "[{k}] {}", last_text(&msgs));

    let spell = env.station.spell(&env.account, "dream-big").await.unwrap().expect("saved");
    assert_eq!(spell.visibility, station_core::spells::SpellVisibility::Public, "[{k}]");
    assert_eq!(spell.steps.len(), 2, "[{k}]");
    assert_eq!(Value::Object(spell.steps[0].params.clone()), serde_json::json!({"steps": 5}), "[{k}]");
    assert_eq!(spell.steps[0].inputs_from.get("prompt").map(String::as_str), Some("input.prompt"), "[{k}]");
    assert_eq!(Value::Object(spell.steps[1].params.clone()), serde_json::json!({"width": 32}), "[{k}]");
    assert_eq!(spell.steps[1].inputs_from.get("image").map(String::as_str), Some("step1.output[0]"), "[{k}]");
    let names: Vec<&str> = spell.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["prompt"], "[{k}]");

    // Cast it from the saved message: the prompt is asked, then both steps run.
    env.press(msgs.last().unwrap(), "Cast it now").await;
    env.wait("the prompt question", |m| last_text(m).contains("prompt")).await;
    env.text("a lighthouse at dusk").await;
    let result = env.wait_results(1).await.remove(0);
    let out = env.db.store.get_media(&result_image(&result)).await.unwrap().unwrap();
    assert_eq!((out.width, out.height), (32, 32), "[{k}] step 1's 64×64 resized to width 32");
    env.stop().await;
}

/// Issue 24: "➕ Collection" under a result — the first time it names a new
/// collection, then it offers the user's collections; a result already in
/// one is not added twice.
async fn a_result_goes_into_a_collection(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    env.command("dream", "a red fox").await;
    let result = env.wait_results(1).await.remove(0);
    env.press(&result, "Collection").await;
    env.wait("the name question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("called"))).await;
    env.text("Foxes").await;
    env.wait("added", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Added to Foxes"))).await;
    let mine = env.station.collections_of(&env.account).await.unwrap();
    assert_eq!(mine.len(), 1, "[{k}]");
    assert_eq!((mine[0].collection.name.as_str(), mine[0].items), ("Foxes", 1), "[{k}]");
    env.press(&result, "Collection").await;
    let msgs = env.wait("the picker", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l == "Foxes (1)"))).await;
    env.press(msgs.last().unwrap(), "Foxes (1)").await;
    env.wait("already there", |m| m.last().is_some_and(|m| m.view.plain_text().contains("already"))).await;
    assert_eq!(env.station.collections_of(&env.account).await.unwrap()[0].items, 1, "[{k}] not added twice");
    env.stop().await;
}

/// Issue 26 in chat: `/deposit` says where to send and at which rate;
/// `/wallet` links an address by a signed message (signed by a real local
/// chain's unlocked account, as a browser wallet would), refuses a signature
/// by another key, and a magic deposit quote names the exact amount.
async fn link_a_wallet_in_chat(db: TestDb) {
    use station_core::config::{AssetConfig, ChainConfig};
    use station_testkit::anvil::{ACCOUNTS, Anvil};
    let Some(chain) = Anvil::start().await else { return };
    let url = chain.url.clone();
    let env = setup_with(db, move |c| {
        c.wallets.chains = vec![ChainConfig {
            id: 31337,
            name: "Local".into(),
            rpc_url: url,
            deposit_address: "0x000000000000000000000000000000000000dEaD".into(),
            confirmations: Some(1),
            start_block: Some(0),
            poll_ms: 50,
            max_blocks_per_poll: 100,
            magic_cap: 1_000_000_000,
            assets: vec![AssetConfig {
                symbol: "ETH".into(),
                token: None,
                decimals: 18,
                points_per_unit: 1000,
                minimum: Some("0.001".into()),
            }],
        }];
    })
    .await;
    let k = env.db.kind;
    env.command("deposit", "").await;
    let msgs =
        env.wait("deposit instructions", |m| m.last().is_some_and(|m| m.view.plain_text().contains("dEaD"))).await;
    let text = msgs.last().unwrap().view.plain_text();
    assert!(text.contains("1000 points per ETH") && text.contains("/wallet"), "[{k}] {text}");

    env.command("wallet", "").await;
    let msgs = env
        .wait("the wallet menu", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("signature"))))
        .await;
    env.press(msgs.last().unwrap(), "signature").await;
    env.wait("the address question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("address"))).await;
    env.text("0x12").await;
    env.wait("a bad address refused", |m| m.iter().any(|m| m.view.plain_text().contains("address:"))).await;
    env.text(ACCOUNTS[1]).await;
    let msgs =
        env.wait("the message to sign", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Nonce:"))).await;
    let shown = msgs.last().unwrap().view.plain_text();
    let message = shown[..].lines().skip_while(|l| !l.contains("wants you to sign in")).collect::<Vec<_>>();
    assert!(!message.is_empty(), "[{k}] the EIP-4361 message is shown whole: {shown}");
    let message =
        message.iter().take_while(|l| !l.starts_with("It is good once")).copied().collect::<Vec<_>>().join("\n");
    // Signed by another key: refused, the step stays.
    let wrong = chain.sign(ACCOUNTS[2], message.trim_end()).await;
    env.text(&wrong).await;
    env.wait("a wrong signer refused", |m| m.iter().any(|m| m.view.plain_text().contains("signature:"))).await;
    let right = chain.sign(ACCOUNTS[1], message.trim_end()).await;
    env.text(&right).await;
    env.wait("linked", |m| m.last().is_some_and(|m| m.view.plain_text().contains("✅ Linked"))).await;
    let linked = env.station.wallets(&env.account).await.unwrap();
    assert_eq!(linked.len(), 1, "[{k}]");
    assert_eq!(linked[0].address, ACCOUNTS[1], "[{k}]");

    // A deposit from the linked wallet is announced here once it is credited:
    // 0.002 ETH at 1000 points per ETH.
    let tx = serde_json::json!({"from": ACCOUNTS[1], "to": "0x000000000000000000000000000000000000dEaD", "value": "0x71afd498d0000"});
    chain.rpc("eth_sendTransaction", serde_json::json!([tx])).await;
    let msgs =
        env.wait("the deposit notice", |m| m.iter().any(|m| m.view.plain_text().contains("arrived on Local"))).await;
    let notice = msgs.iter().find(|m| m.view.plain_text().contains("arrived on Local")).unwrap().view.plain_text();
    assert!(notice.contains("0.002 ETH") && notice.contains("+2") && notice.contains("Balance"), "[{k}] {notice}");
    assert!(!notice.contains("0x71afd498d0000") && !notice.contains("deposit:"), "[{k}] no internal data: {notice}");
    // Later scans find nothing new to announce: once.
    assert_eq!(env.flows.announce_deposits().await.unwrap(), 0, "[{k}]");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let count = env
        .platform
        .messages(&env.conv.chat)
        .iter()
        .filter(|m| m.view.plain_text().contains("arrived on Local"))
        .count();
    assert_eq!(count, 1, "[{k}] one notice per deposit");

    // A magic deposit quote for another address: the exact amount and where.
    env.command("wallet", "").await;
    let msgs =
        env.wait("the menu again", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("deposit")))).await;
    assert!(msgs.last().unwrap().view.plain_text().contains(ACCOUNTS[1]), "[{k}] the linked wallet is listed");
    env.press(msgs.last().unwrap(), "Link by deposit").await;
    env.wait("the address question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("address"))).await;
    env.text(ACCOUNTS[0]).await;
    let msgs = env.wait("the quote", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Send exactly"))).await;
    let quote = msgs.last().unwrap().view.plain_text();
    assert!(quote.contains("ETH") && quote.contains(ACCOUNTS[0]) && quote.contains("dEaD"), "[{k}] {quote}");
    env.stop().await;
}

use station_testkit::on_every_db;

/// Issue 24: `/cook` words each cook's progress and pauses, resumes or stops
/// it with a button; with no cook it says how to make one.
async fn cook_status_in_chat(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    env.command("cook", "").await;
    env.wait("no cooks", |m| m.last().is_some_and(|m| m.view.plain_text().contains("no cooks yet"))).await;
    let edit = station_core::collections::CollectionEdit { name: Some("Marks".into()), ..Default::default() };
    let c = env.station.create_collection(&env.account, edit).await.unwrap();
    let image = env.upload(32, 16).await;
    let recipe = serde_json::json!({
        "tool": "watermark", "supply": 3,
        "params": {"image": format!("media:{image}"), "text": "[[Tone]]"},
        "categories": [{"name": "Tone", "traits": [{"name": "Warm"}, {"name": "Cold"}]}],
    });
    env.station.save_recipe(&env.account, &c.id, &recipe).await.unwrap();
    env.station.start_cook(&env.account, &c.id, Some(1)).await.unwrap();
    env.station.control_cook(&env.account, &c.id, "pause").await.unwrap();
    env.command("cook", "").await;
    let msgs =
        env.wait("the cook list", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Your cooks"))).await;
    let list = msgs.last().unwrap().clone();
    assert!(list.view.plain_text().contains("paused:"), "[{k}] {}", list.view.plain_text());
    env.press(&list, "▶ Resume Marks").await;
    env.wait("resumed", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Done — "))).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cook = env.station.cook_status(&env.account, &c.id).await.unwrap().unwrap();
        if cook.status == "done" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "[{k}] {}", cook.progress_text);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.command("cook", "").await;
    env.wait("done", |m| m.last().is_some_and(|m| m.view.plain_text().contains("done: 3 of 3 made"))).await;
    env.stop().await;
}

/// Issue 24: chat review cards — one piece at a time with ✅ Keep / ❌ Cull,
/// each press editing the same card in place, until nothing is left; the
/// decisions are the core's review. A stopped cook offers a re-cook.
async fn review_cards_in_chat(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let edit = station_core::collections::CollectionEdit { name: Some("Marks".into()), ..Default::default() };
    let c = env.station.create_collection(&env.account, edit).await.unwrap();
    let image = env.upload(32, 16).await;
    let recipe = serde_json::json!({
        "tool": "watermark", "supply": 3,
        "params": {"image": format!("media:{image}"), "text": "[[Tone]]"},
        "categories": [{"name": "Tone", "traits": [{"name": "Warm"}, {"name": "Cold"}]}],
    });
    env.station.save_recipe(&env.account, &c.id, &recipe).await.unwrap();
    env.station.start_cook(&env.account, &c.id, Some(1)).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.station.cook_status(&env.account, &c.id).await.unwrap().unwrap().status != "done" {
        assert!(tokio::time::Instant::now() < deadline, "[{k}] the cook never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.command("cook", "").await;
    let msgs =
        env.wait("the cook list", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("Review")))).await;
    env.press(msgs.last().unwrap(), "🔎 Review Marks").await;
    let is_card = |m: &Shown| m.view.plain_text().contains("Review Marks — piece");
    let msgs = env.wait("the first card", |m| m.iter().any(|m| is_card(m) && m.view.plain_text().contains("#1"))).await;
    let card = msgs.iter().find(|m| is_card(m)).unwrap().clone();
    assert_eq!(card.view.media_ids().len(), 1, "[{k}] the piece's image is on the card");
    let text = card.view.plain_text();
    assert!(text.contains("0 of 3 made reviewed"), "[{k}] {text}");
    for (label, next) in [("✅ Keep", "#2"), ("❌ Cull", "#3"), ("✅ Keep", "Nothing left to review")] {
        let now =
            env.platform.messages(&env.conv.chat).into_iter().find(|m| m.message_ref == card.message_ref).unwrap();
        env.press(&now, label).await;
        env.wait(next, |m| m.iter().any(|m| m.message_ref == card.message_ref && m.view.plain_text().contains(next)))
            .await;
    }
    let msgs = env.platform.messages(&env.conv.chat);
    let cards = msgs.iter().filter(|m| m.edits.iter().chain([&m.view]).any(|v| v.plain_text().contains("— piece #")));
    assert_eq!(cards.count(), 1, "[{k}] one card, edited in place");
    let last = msgs.iter().find(|m| m.message_ref == card.message_ref).unwrap();
    assert!(last.edits.len() >= 3, "[{k}] edited in place: {}", last.edits.len());
    assert!(
        last.view.plain_text().contains("3 of 3 made reviewed: 2 accepted, 1 rejected"),
        "[{k}] {}",
        last.view.plain_text()
    );
    let pieces = env.station.cook_pieces(&env.account, &c.id).await.unwrap();
    let reviews: Vec<&str> = pieces.iter().map(|p| p.review.as_str()).collect();
    assert_eq!(reviews, ["accepted", "rejected", "accepted"], "[{k}]");
    env.stop().await;
}

/// Issue 24 in chat: `/collections` lists your collections with their size
/// and who sees them; one opens with its address, and a share link made
/// there opens the collection for anyone who has it (the core resolves it).
async fn collections_in_chat(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    env.command("collections", "").await;
    env.wait("none yet", |m| m.last().is_some_and(|m| m.view.plain_text().contains("no collections yet"))).await;
    env.command("dream", "a red fox").await;
    let result = env.wait_results(1).await.remove(0);
    env.press(&result, "Collection").await;
    env.wait("the name question", |m| m.last().is_some_and(|m| m.view.plain_text().contains("called"))).await;
    env.text("Foxes").await;
    env.wait("added", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Added to Foxes"))).await;
    env.command("collections", "").await;
    let msgs = env.wait("the list", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l == "📂 Foxes"))).await;
    let list = msgs.last().unwrap().clone();
    let text = list.view.plain_text();
    assert!(text.contains("Foxes") && text.contains("1 image") && text.contains("private"), "[{k}] {text}");
    env.press(&list, "📂 Foxes").await;
    let msgs = env
        .wait("one collection", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.starts_with("🔗 Share link"))))
        .await;
    let one = msgs.last().unwrap().clone();
    assert!(one.view.plain_text().contains("Holds"), "[{k}] {}", one.view.plain_text());
    env.press(&one, "🔗 Share link (7 days)").await;
    let msgs =
        env.wait("the link", |m| m.last().is_some_and(|m| m.view.plain_text().contains("Anyone with this link"))).await;
    let text = msgs.last().unwrap().view.plain_text();
    let token = text
        .split(|c: char| c.is_whitespace())
        .find_map(|w| w.split("/c/").nth(1))
        .unwrap_or_else(|| panic!("[{k}] no link in {text}"))
        .to_string();
    assert!(token.starts_with("sc_"), "[{k}] {token}");
    let shared = env.station.shared_collection(&token).await.unwrap();
    assert_eq!(shared.collection.name, "Foxes", "[{k}]");
    assert!(!text.contains("media:") && !text.contains(&shared.collection.id), "[{k}] no internal ids: {text}");
    env.stop().await;
}

/// A flow is one card (issue 21, item 6): its buttons edit it in place,
/// typed text gets a new card below while the old one loses its buttons, a
/// command replacing the flow takes its card's buttons away, and a press
/// that ends the flow shows the ending on the card itself.
async fn a_flow_is_one_card_edited_in_place(db: TestDb) {
    let env = setup(db).await;
    env.command("make", "").await;
    let card = env.wait("the tool picker", |m| m.len() == 1 && !labels(&m[0]).is_empty()).await.remove(0);
    env.press(&card, "Dream").await;
    env.settled().await;
    let msgs = env.platform.messages(&env.conv.chat);
    assert_eq!(
        msgs.len(),
        1,
        "the press edited the card: {:?}",
        msgs.iter().map(|m| m.view.plain_text()).collect::<Vec<_>>()
    );
    assert_eq!(msgs[0].edits.len(), 1);
    assert!(msgs[0].view.plain_text().contains("prompt"), "{}", msgs[0].view.plain_text());
    // Typed text: a new card below; the old one keeps its words, not its buttons.
    env.text("a lighthouse").await;
    env.settled().await;
    let msgs = env.platform.messages(&env.conv.chat);
    assert_eq!(msgs.len(), 2, "{:?}", msgs.iter().map(|m| m.view.plain_text()).collect::<Vec<_>>());
    assert!(labels(&msgs[0]).is_empty() && msgs[0].view.input.is_none(), "old card: {:?}", labels(&msgs[0]));
    assert!(msgs[0].view.plain_text().contains("prompt"));
    assert!(labels(&msgs[1]).iter().any(|l| l.contains("Run")));
    // Presses move the card through steps, still one message.
    env.press(&msgs[1], "Change a setting").await;
    env.settled().await;
    let msgs = env.platform.messages(&env.conv.chat);
    assert_eq!(msgs.len(), 2, "{:?}", msgs.iter().map(|m| m.view.plain_text()).collect::<Vec<_>>());
    // Cancel on the card: the card says so.
    env.press(&msgs[1], "Back").await;
    env.settled().await;
    let msgs = env.platform.messages(&env.conv.chat);
    env.press(&msgs[1], "Cancel").await;
    env.settled().await;
    let msgs = env.platform.messages(&env.conv.chat);
    assert_eq!(msgs.len(), 2, "{:?}", msgs.iter().map(|m| m.view.plain_text()).collect::<Vec<_>>());
    assert_eq!(msgs[1].view.plain_text(), "Cancelled.");
    // A new command replaces an open flow: the old card's buttons go.
    env.command("settings", "dream").await;
    env.wait("the settings card", |m| m.len() == 3).await;
    env.command("make", "").await;
    env.settled().await;
    let msgs = env.platform.messages(&env.conv.chat);
    assert_eq!(msgs.len(), 4);
    assert!(labels(&msgs[2]).is_empty(), "the replaced flow's card: {:?}", labels(&msgs[2]));
    assert!(!labels(&msgs[3]).is_empty());
    env.stop().await;
}

/// Makes every flow's end fail until [`release_flow_ends`]: the step that
/// submits a job is not stored while the job runs and its messages are
/// written and sent (a process that died between the two, or a database
/// that refused the transition), deterministically.
async fn hold_flow_ends(db: &TestDb) {
    match &db.store {
        station_testkit::Store::Sqlite(p) => {
            sqlx::query(
                "CREATE TRIGGER test_hold_flow_end BEFORE UPDATE ON flow_instances WHEN NEW.status <> 'active' \
                 BEGIN SELECT RAISE(ABORT, 'flow ends held by the test'); END",
            )
            .execute(p)
            .await
            .unwrap();
        }
        station_testkit::Store::Postgres(p) => {
            sqlx::query(
                "CREATE FUNCTION test_hold_flow_end() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'flow ends held by the test'; END $$",
            )
            .execute(p)
            .await
            .unwrap();
            sqlx::query(
                "CREATE TRIGGER test_hold_flow_end BEFORE UPDATE ON flow_instances FOR EACH ROW \
                 WHEN (NEW.status <> 'active') EXECUTE FUNCTION test_hold_flow_end()",
            )
            .execute(p)
            .await
            .unwrap();
        }
    }
}

async fn release_flow_ends(db: &TestDb) {
    match &db.store {
        station_testkit::Store::Sqlite(p) => {
            sqlx::query("DROP TRIGGER test_hold_flow_end").execute(p).await.unwrap();
        }
        station_testkit::Store::Postgres(p) => {
            sqlx::query("DROP TRIGGER test_hold_flow_end ON flow_instances").execute(p).await.unwrap();
        }
    }
}

/// Typed prompt, then the options card with Run: the card a press on Run hands to the job.
async fn options_card(env: &Env) -> Shown {
    env.command("make", "").await;
    let card = env.wait("the tool picker", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l == "Dream"))).await;
    env.press(card.last().unwrap(), "Dream").await;
    env.settled().await;
    env.text("a lighthouse at dusk").await;
    env.wait("the options card", |m| m.last().is_some_and(|m| labels(m).iter().any(|l| l.contains("Run"))))
        .await
        .pop()
        .unwrap()
}

/// The race that once got "one card per flow" reverted: a job that runs
/// (and ends) before the press that submitted it is stored still takes
/// over the card it was pressed on — its progress and result are never
/// messages of their own. Here the press's transition fails until the job
/// has ended and its messages were sent; the press is then handed over
/// again (as an adapter replays an input after a crash), finds its job and
/// stores the step without a second job or a second message.
async fn a_job_that_ends_before_its_press_is_stored_still_takes_over_the_card(db: TestDb) {
    let env = setup(db).await;
    let options = options_card(&env).await;
    let before = env.platform.messages(&env.conv.chat).len();
    let token = token_of(&options, "Run");
    hold_flow_ends(&env.db).await;
    let run = || Input::Action { token: token.clone() };
    let first = env.flows.handle_once("test:run", &env.account, &env.conv, run()).await;
    assert!(first.is_err(), "the held transition fails: {first:?}");
    // The job ran anyway (it was stored before the transition), and its
    // messages went out while the step was not stored.
    let msgs = env.wait_results(1).await;
    env.settled().await;
    let msgs_now = env.platform.messages(&env.conv.chat);
    let texts: Vec<String> = msgs_now.iter().map(|m| format!("[{:?}] {}", m.kind, m.view.plain_text())).collect();
    assert_eq!(msgs_now.len(), before, "the job's messages took over the card: {texts:#?}");
    assert_eq!(msgs[0].message_ref, options.message_ref, "the card became the result: {texts:#?}");
    release_flow_ends(&env.db).await;
    env.flows.handle_once("test:run", &env.account, &env.conv, run()).await.unwrap();
    env.settled().await;
    let msgs = env.platform.messages(&env.conv.chat);
    let texts: Vec<String> = msgs.iter().map(|m| format!("[{:?}] {}", m.kind, m.view.plain_text())).collect();
    assert_eq!(msgs.len(), before, "{texts:#?}");
    let last = msgs.last().unwrap();
    assert_eq!(
        (last.message_ref.as_str(), last.kind),
        (options.message_ref.as_str(), DeliveryKind::Result),
        "{texts:#?}"
    );
    assert!(!msgs.iter().any(|m| m.kind == DeliveryKind::Progress), "no progress left: {texts:#?}");
    assert_eq!(env.jobs().await.len(), 1, "the replayed press found its job");
    assert!(env.db.store.active_flow(&env.conv.key(), &env.account.id).await.unwrap().is_none(), "the flow ended");
    env.stop().await;
}

/// Fast jobs, walk after walk: each Run press leaves one message, the card
/// it was pressed on, showing the result (the job's events and the press's
/// transition race to write its first message; either way it is the card).
async fn fast_jobs_walk_after_walk_each_leave_one_card(db: TestDb) {
    let env = setup(db).await;
    env.fake.set_step_delay(0);
    for walk in 1..=5 {
        let options = options_card(&env).await;
        let before = env.platform.messages(&env.conv.chat).len();
        env.press(&options, "Run").await;
        env.wait_results(walk).await;
        env.settled().await;
        let msgs = env.platform.messages(&env.conv.chat);
        let texts: Vec<String> = msgs.iter().map(|m| format!("[{:?}] {}", m.kind, m.view.plain_text())).collect();
        assert_eq!(msgs.len(), before, "walk {walk}: the options card became the result: {texts:#?}");
        let card = msgs.iter().find(|m| m.message_ref == options.message_ref).unwrap();
        assert_eq!(card.kind, DeliveryKind::Result, "walk {walk}: {texts:#?}");
        assert!(!msgs.iter().any(|m| m.kind == DeliveryKind::Progress), "walk {walk}: {texts:#?}");
    }
    env.stop().await;
}

on_every_db!(
    a_flow_is_one_card_edited_in_place,
    a_job_that_ends_before_its_press_is_stored_still_takes_over_the_card,
    fast_jobs_walk_after_walk_each_leave_one_card,
    collections_in_chat,
    cook_status_in_chat,
    review_cards_in_chat,
    make_offers_the_backends_models,
    secrets_asked_in_a_group_reach_only_the_asker,
    hidden_tools_are_unknown_commands,
    make_with_prompt_inline,
    progress_edits_are_throttled_per_conversation,
    make_asks_only_for_missing_inputs,
    photo_tool_rerun_tweak_and_use_as_input,
    settings_change_is_used_by_next_make,
    settings_picker_pages_through_every_tool,
    status_during_a_running_job,
    runs_over_the_threshold_are_confirmed_first,
    history_is_paginated,
    concurrent_inputs_never_corrupt_a_flow,
    restart_mid_flow_and_mid_job,
    deliveries_retry_and_stop_when_blocked,
    idle_flows_expire_with_a_message,
    start_help_and_unknown_input,
    too_many_inputs_get_a_friendly_refusal,
    balance_and_link,
    starting_grant_shows_before_the_first_job,
    inline_parameters_set_inputs,
    examples_and_labels_come_from_runnable_tools,
    user_text_has_no_internal_data,
    train_a_lora_in_chat,
    own_lora_actions_in_chat,
    auto_captions_in_chat,
    cast_a_spell_in_chat,
    create_a_spell_in_chat,
    a_result_goes_into_a_collection,
    link_a_wallet_in_chat,
);
