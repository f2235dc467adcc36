//! Issue 23, a training's run as its owner lives it in chat: notes of their
//! own at its start, at 25/50/75 % and at its end (done or failed), each
//! once — also when the process dies mid-run and another opens the same
//! database; and a stalled run stopped on its backend and refunded. Through
//! the real core, workers, delivery service, the in-memory test platform and
//! the fake ComfyUI's training nodes, on SQLite and PostgreSQL.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::training::TrainingRequest;
use station_core::{AccountRow, Config, Station, Workers};
use station_flows::testing::{Shown, TestPlatform};
use station_flows::{Conversation, DeliveryKind, FlowSettings, Flows, FlowsRunner, JobSource};
use station_media::image::{ImageFormat, Rgb, RgbImage};
use station_testkit::{Store, TestDb};

const WAIT: Duration = Duration::from_secs(60);
const CKPT: &str = "v1-5-pruned-emaonly.safetensors";

/// One Station process: core, workers, the ComfyUI pool and the delivery
/// service, on its own connection to the test database.
struct Proc {
    station: Station,
    workers: Option<Workers>,
    runner: Option<FlowsRunner>,
    comfy: Arc<ComfyExecutor>,
}

impl Proc {
    async fn open(db: &TestDb, dir: &std::path::Path, fake: &FakeComfy, platform: &TestPlatform, stall: f64) -> Proc {
        let mut config =
            Config { data_dir: dir.to_path_buf(), media_dir: Some(dir.join("media")), ..Default::default() };
        config.queue.lease_seconds = 2;
        config.queue.retry_base_ms = 50;
        config.queue.poll_ms = 50;
        config.points.starting_grant = 1000;
        config.training.stall_minutes = stall;
        let store = Store::connect(&db.url).await.unwrap();
        let (station, errors) = Station::with_store(config, store).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 2, tags: vec![] };
        let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
        comfy.start_health_checks(Duration::from_millis(200), station.wake.clone()).await;
        station.register_executor(comfy.clone());
        let workers = Some(Workers::start(&station));
        let flows = Flows::with_settings(station.clone(), FlowSettings { progress_every_ms: 50, ..Default::default() });
        flows.add_platform(Arc::new(platform.clone()));
        let runner = Some(flows.start());
        // The price needs the backend's checkpoint, known after its first health check.
        let deadline = tokio::time::Instant::now() + WAIT;
        while station.reload_models().await.unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the health check never stored the models");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Proc { station, workers, runner, comfy }
    }

    async fn stop(mut self) {
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
    db: TestDb,
    fake: FakeComfy,
    platform: TestPlatform,
    conv: Conversation,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new(db: TestDb) -> Env {
        let fake = FakeComfy::start(FakeOptions { checkpoints: vec![CKPT.into()], ..Default::default() }).await;
        Env {
            db,
            fake,
            platform: TestPlatform::new("test"),
            conv: Conversation::new("test", "chat1"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn open(&self, stall: f64) -> Proc {
        Proc::open(&self.db, self.dir.path(), &self.fake, &self.platform, stall).await
    }

    /// A dataset "Tom Cat" of four photos, and a training of `steps` asked
    /// from this chat.
    async fn start(&self, p: &Proc, steps: u64) -> (AccountRow, String) {
        let account = p.station.account("test", "u1", "Ada").await.unwrap();
        p.station.ensure_starting_grant(&account.id).await.unwrap();
        p.station.create_dataset(&account, "Tom Cat", None).await.unwrap();
        for i in 0..4u8 {
            p.station.add_dataset_image(&account, "tom-cat", png(i), "a cat").await.unwrap();
        }
        let source =
            serde_json::to_value(JobSource { conversation: self.conv.clone(), instance: None, card: None }).unwrap();
        let req = TrainingRequest {
            dataset: "tom-cat".into(),
            settings: settings(json!({"steps": steps})),
            source: Some(source),
            ..Default::default()
        };
        let view = p.station.start_training(&account, &req).await.unwrap();
        (account, view.row.id)
    }

    async fn wait(&self, what: &str, pred: impl Fn(&[Shown]) -> bool) -> Vec<Shown> {
        self.platform.wait_for(&self.conv.chat, WAIT, what, pred).await
    }

    /// Waits until every delivery stored for the conversation was sent.
    async fn settled(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let rows = self.db.store.conversation_deliveries(&self.conv.key()).await.unwrap();
            if !rows.is_empty() && rows.iter().all(|r| r.status == "sent") {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "deliveries never settled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The texts of the notes (messages of their own) in the chat, in order.
    fn notes(&self) -> Vec<String> {
        self.platform
            .messages(&self.conv.chat)
            .iter()
            .filter(|m| m.kind == DeliveryKind::Notice)
            .map(|m| m.view.plain_text())
            .collect()
    }
}

/// An 8×8 PNG that differs for each `seed`.
fn png(seed: u8) -> Vec<u8> {
    let img = RgbImage::from_fn(8, 8, |x, y| Rgb([seed.wrapping_mul(40), (x * 30) as u8, (y * 30) as u8]));
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).unwrap();
    buf
}

fn settings(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn count(notes: &[String], needle: &str) -> usize {
    notes.iter().filter(|n| n.contains(needle)).count()
}

/// A run of 8 steps: its start, 25, 50 and 75 %, and its end are each told
/// once, in order, as messages of their own beside the one progress message
/// that becomes the result; a failed run is told with its reason.
async fn a_training_tells_its_start_milestones_and_end(db: TestDb) {
    let k = db.kind;
    let env = Env::new(db).await;
    let p = env.open(30.0).await;
    // Long enough per step that each milestone is seen before the next
    // step on a loaded machine (a milestone passed unseen is not sent late).
    env.fake.set_step_delay(120);
    let (account, _) = env.start(&p, 8).await;
    env.wait("the end note", |m| m.iter().any(|m| m.view.plain_text().contains("is trained"))).await;
    env.settled().await;
    let notes = env.notes();
    assert_eq!(notes.len(), 5, "[{k}] {notes:#?}");
    assert!(notes[0].contains("Training of Tom Cat has started: 8 steps"), "[{k}] {}", notes[0]);
    assert!(notes[1].contains("25 % of Tom Cat trained (step 2 of 8)"), "[{k}] {}", notes[1]);
    assert!(notes[2].contains("50 %") && notes[2].contains("step 4 of 8"), "[{k}] {}", notes[2]);
    assert!(notes[3].contains("75 %") && notes[3].contains("step 6 of 8"), "[{k}] {}", notes[3]);
    assert!(notes[4].contains("Tom Cat is trained"), "[{k}] {}", notes[4]);
    let msgs = env.platform.messages(&env.conv.chat);
    assert_eq!(msgs.iter().filter(|m| m.kind == DeliveryKind::Result).count(), 1, "[{k}] one result");
    for n in &notes {
        assert!(!n.contains(&account.id) && !n.contains("loss"), "[{k}] no ids, no loss ComfyUI never reports: {n}");
    }

    // A failed run: its end note says why, and that the points came back.
    env.fake.fail_node("TrainLoraNode", "CUDA out of memory");
    let before = p.station.points(&account.id).await.unwrap().available();
    let source =
        serde_json::to_value(JobSource { conversation: env.conv.clone(), instance: None, card: None }).unwrap();
    let req = TrainingRequest {
        dataset: "tom-cat".into(),
        settings: settings(json!({"steps": 4})),
        source: Some(source),
        ..Default::default()
    };
    p.station.start_training(&account, &req).await.unwrap();
    env.wait("the failure note", |m| m.iter().any(|m| m.view.plain_text().contains("failed:"))).await;
    env.settled().await;
    let notes = env.notes();
    let failed = notes.iter().find(|n| n.contains("failed:")).unwrap();
    assert!(failed.contains("Training of Tom Cat failed") && failed.contains("points were returned"), "[{k}] {failed}");
    assert!(!failed.contains("CUDA"), "[{k}] the backend's words stay out: {failed}");
    assert_eq!(p.station.points(&account.id).await.unwrap().available(), before, "[{k}] released");
    p.stop().await;
}

/// A trainer that stops reporting progress is stopped after
/// `training.stall_minutes` (here 3 seconds): the prompt is interrupted on
/// ComfyUI, the hold released, the dataset unlocked, and the person told why.
async fn a_stalled_training_is_stopped_and_refunded(db: TestDb) {
    let k = db.kind;
    let env = Env::new(db).await;
    let p = env.open(0.05).await;
    env.fake.stall_training_after(Some(2));
    let account = p.station.account("test", "u1", "Ada").await.unwrap();
    p.station.ensure_starting_grant(&account.id).await.unwrap();
    let before = p.station.points(&account.id).await.unwrap().available();
    let (_, training) = env.start(&p, 8).await;
    env.wait("the stall note", |m| m.iter().any(|m| m.view.plain_text().contains("no progress"))).await;
    env.settled().await;
    let notes = env.notes();
    let stalled = notes.iter().find(|n| n.contains("no progress")).unwrap();
    assert!(
        stalled.contains("Training of Tom Cat failed: it made no progress for 3 seconds, so it was stopped")
            && stalled.contains("points were returned"),
        "[{k}] {stalled}"
    );
    let result = env.platform.messages(&env.conv.chat).into_iter().find(|m| m.kind == DeliveryKind::Result).unwrap();
    assert!(result.view.plain_text().contains("made no progress for 3 seconds"), "[{k}] {}", result.view.plain_text());
    let view = p.station.training(&account, &training).await.unwrap();
    assert_eq!(view.row.status, "failed", "[{k}]");
    assert_eq!(view.job.as_ref().unwrap().error_code.as_deref(), Some("stalled"), "[{k}]");
    assert_eq!(p.station.points(&account.id).await.unwrap().available(), before, "[{k}] the hold was released");
    assert_eq!(p.station.dataset(&account, "tom-cat").await.unwrap().row.status, "ready", "[{k}] unlocked");
    // The prompt was interrupted on the backend (durably recorded, then sent).
    let deadline = tokio::time::Instant::now() + WAIT;
    while !env.fake.trainings().last().is_some_and(|r| r.interrupted) {
        assert!(tokio::time::Instant::now() < deadline, "[{k}] the stalled prompt was never interrupted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.fake.trainings().last().unwrap().steps_done, 2, "[{k}]");
    p.stop().await;
}

/// The process dies mid-run (its runtime dropped: no lease released, no
/// outcome, no delivery finished) and another opens the same database: the
/// run is collected once — one LoRA, one capture — and every note reaches
/// the chat once.
async fn a_crash_mid_training_makes_one_lora_and_one_charge(db: TestDb) {
    let k = db.kind;
    let env = Env::new(db).await;
    env.fake.set_step_delay(100);
    let crashed = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let first = {
        let db_url = env.db.url.clone();
        let dir = env.dir.path().to_path_buf();
        let platform = env.platform.clone();
        let conv = env.conv.clone();
        let fake_url = env.fake.url();
        crashed
            .spawn(async move {
                let spec = BackendSpec { name: "b0".into(), url: fake_url, max_concurrent: 2, tags: vec![] };
                let mut config =
                    Config { data_dir: dir.clone(), media_dir: Some(dir.join("media")), ..Default::default() };
                config.queue.lease_seconds = 2;
                config.queue.retry_base_ms = 50;
                config.queue.poll_ms = 50;
                config.points.starting_grant = 1000;
                let (station, errors) = Station::with_store(config, Store::connect(&db_url).await.unwrap()).unwrap();
                assert!(errors.is_empty(), "{errors:?}");
                let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
                comfy.start_health_checks(Duration::from_millis(200), station.wake.clone()).await;
                station.register_executor(comfy.clone());
                let workers = Workers::start(&station);
                let flows =
                    Flows::with_settings(station.clone(), FlowSettings { progress_every_ms: 50, ..Default::default() });
                flows.add_platform(Arc::new(platform));
                let runner = flows.start();
                while station.reload_models().await.unwrap().is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let account = station.account("test", "u1", "Ada").await.unwrap();
                station.ensure_starting_grant(&account.id).await.unwrap();
                station.create_dataset(&account, "Tom Cat", None).await.unwrap();
                for i in 0..4u8 {
                    station.add_dataset_image(&account, "tom-cat", png(i), "a cat").await.unwrap();
                }
                let source =
                    serde_json::to_value(JobSource { conversation: conv, instance: None, card: None }).unwrap();
                let req = TrainingRequest {
                    dataset: "tom-cat".into(),
                    settings: settings(json!({"steps": 40})),
                    source: Some(source),
                    ..Default::default()
                };
                let before = station.points(&account.id).await.unwrap().available();
                let view = station.start_training(&account, &req).await.unwrap();
                // Kept alive until the runtime is dropped.
                std::mem::forget((workers, runner, comfy));
                (account, view.row.id, before)
            })
            .await
            .unwrap()
    };
    let (account, training, before) = first;
    env.wait("the 25 % note", |m| m.iter().any(|m| m.view.plain_text().contains("25 %"))).await;
    // The crash: every task of the first process stops where it is.
    crashed.shutdown_background();
    let steps_at_crash = env.fake.trainings().last().unwrap().steps_done;
    assert!(steps_at_crash < 40, "[{k}] the run goes on on the backend: {steps_at_crash}");

    let p = env.open(30.0).await;
    env.wait("the end note", |m| m.iter().any(|m| m.view.plain_text().contains("is trained"))).await;
    env.settled().await;
    let view = p.station.training(&account, &training).await.unwrap();
    assert_eq!(view.row.status, "succeeded", "[{k}] {:?}", view.row.error);
    assert_eq!(env.fake.trainings().len(), 1, "[{k}] trained once, not again");
    let mine: Vec<_> = p
        .station
        .loras()
        .catalog()
        .await
        .unwrap()
        .iter()
        .filter(|l| l.owner.as_deref() == Some(account.id.as_str()))
        .cloned()
        .collect();
    assert_eq!(mine.len(), 1, "[{k}] one LoRA: {:?}", mine.iter().map(|l| &l.slug).collect::<Vec<_>>());
    let ledger = p.station.job_ledger(&view.row.job_id).await.unwrap();
    assert_eq!(ledger.iter().filter(|e| e.kind == "capture").count(), 1, "[{k}] one capture: {ledger:?}");
    assert_eq!(p.station.points(&account.id).await.unwrap().available(), before - view.row.price, "[{k}]");
    let notes = env.notes();
    assert_eq!(count(&notes, "has started"), 1, "[{k}] {notes:#?}");
    assert_eq!(count(&notes, "25 %"), 1, "[{k}] {notes:#?}");
    assert!(count(&notes, "50 %") <= 1 && count(&notes, "75 %") <= 1, "[{k}] {notes:#?}");
    assert_eq!(count(&notes, "is trained"), 1, "[{k}] the end told once: {notes:#?}");
    let results = env.platform.messages(&env.conv.chat).into_iter().filter(|m| m.kind == DeliveryKind::Result).count();
    assert_eq!(results, 1, "[{k}] one result");
    p.stop().await;
}

station_testkit::on_every_db!(
    a_training_tells_its_start_milestones_and_end,
    a_stalled_training_is_stopped_and_refunded,
    a_crash_mid_training_makes_one_lora_and_one_charge,
);
