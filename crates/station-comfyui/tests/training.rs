//! LoRA training end to end: a dataset through the real core (store,
//! workers, points, catalog) to the fake ComfyUI's training nodes, as the
//! recording `train_lora_sd15.json` shows real ComfyUI 0.8 runs them. Every
//! case runs on SQLite, and again on PostgreSQL when
//! `STATION_TEST_POSTGRES_URL` is set.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Map, Value, json};
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::config::TrainingPerSecond;
use station_core::training::{EstimateBasis, TrainingError, TrainingRequest, TrainingView};
use station_core::{Config, JobEvent, Station, SubmitError, SubmitRequest, Workers};
use station_store::{AccountRow, JobRow, JobStatus};
use station_testkit::testing::{self, TestDb};

const CKPT: &str = "v1-5-pruned-emaonly.safetensors";

struct Env {
    station: Station,
    comfy: Arc<ComfyExecutor>,
    workers: Option<Workers>,
    account: AccountRow,
    fake: FakeComfy,
    db: TestDb,
    publish: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

async fn setup(db: TestDb, publish: bool) -> Env {
    setup_with(db, publish, |_| {}).await
}

async fn setup_with(db: TestDb, publish: bool, tweak: impl FnOnce(&mut Config)) -> Env {
    let fake = FakeComfy::start(FakeOptions { checkpoints: vec![CKPT.into()], ..FakeOptions::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let publish_dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    config.queue.lease_seconds = 2;
    config.queue.retry_base_ms = 50;
    config.queue.poll_ms = 50;
    // Callback receivers run on 127.0.0.1.
    config.webhooks.allow_private = true;
    if publish {
        config.training.publish_dir = Some(publish_dir.path().join("loras"));
    }
    tweak(&mut config);
    // The SD 1.5 template is hidden (administrators only): the member runs a public copy.
    station_testkit::install_tools(&config.tools_dir(), &[station_testkit::public_builtin("txt2img-sd15")]);
    let (station, errors) = Station::with_store(config, db.store.clone()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let spec = BackendSpec { name: "b0".into(), url: fake.url(), max_concurrent: 2, tags: vec![] };
    let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
    station.register_executor(comfy.clone());
    comfy.start_health_checks(Duration::from_millis(200), station.wake.clone()).await;
    let workers = Some(Workers::start(&station));
    let account = station.account("local", "trainer", "Trainer").await.unwrap();
    station.ensure_starting_grant(&account.id).await.unwrap();
    Env { station, comfy, workers, account, fake, db, publish: publish_dir, _dir: dir }
}

impl Env {
    async fn stop(mut self) {
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        self.comfy.shutdown();
    }

    async fn job(&self, id: &str) -> JobRow {
        self.db.store.get_job(id).await.unwrap().unwrap()
    }

    async fn wait_job(&self, id: &str, what: &str, done: impl Fn(&JobRow) -> bool) -> JobRow {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let row = self.job(id).await;
            if done(&row) {
                return row;
            }
            assert!(Instant::now() < deadline, "job {id} not {what}: status {} error {:?}", row.status, row.error);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_training(&self, id: &str) -> TrainingView {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view = self.station.training(&self.account, id).await.unwrap();
            if view.row.status != "running" {
                return view;
            }
            assert!(Instant::now() < deadline, "training {id} still running: {:?}", view.job.map(|j| j.status));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn available(&self) -> i64 {
        self.station.points(&self.account.id).await.unwrap().available()
    }

    /// A dataset `name` with `n` distinct images, captioned `a photo number i`.
    async fn dataset(&self, name: &str, n: u8) {
        self.station.create_dataset(&self.account, name, None).await.unwrap();
        for i in 0..n {
            let slug = station_core::training::slugify(name);
            let caption = format!("a photo number {i}");
            self.station.add_dataset_image(&self.account, &slug, png(i), &caption).await.unwrap();
        }
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

/// Dataset → quote → hold → progress per step → the LoRA in the catalog,
/// private to its owner, with the trained file; then a generation with its
/// trigger word gets a LoraLoader with that file.
async fn happy_path(db: TestDb) {
    let kind = db.kind;
    let env = setup(db, false).await;
    env.dataset("Tom Cat", 4).await;
    let ds = env.station.dataset(&env.account, "tom-cat").await.unwrap();
    assert_eq!(ds.row.trigger_word, "tom-cat");
    assert_eq!(ds.row.status, "ready", "{kind}: 4 images make it ready");
    assert_eq!(ds.images[0].caption, "tom-cat, a photo number 0", "{kind}: trigger word put in front");
    let caption = env.station.set_dataset_caption(&env.account, "tom-cat", 2, "Tom-Cat asleep").await.unwrap();
    assert_eq!(caption, "Tom-Cat asleep", "{kind}: has the trigger word already");

    let req = TrainingRequest {
        dataset: "tom-cat".into(),
        base_model: Some("SD1.5".into()),
        settings: settings(json!({"steps": 20, "learning_rate": 0.0002, "rank": 8, "seed": 7})),
        ..Default::default()
    };
    let before = env.available().await;
    let quote = env.station.quote_training(&env.account, &req).await.unwrap();
    assert_eq!(quote.price, 2, "{kind}: 20 steps × 0.1 point");
    assert_eq!(quote.steps, 20);
    assert_eq!(quote.settings["checkpoint"], CKPT, "{kind}: the SD1.5 checkpoint the backend has");
    assert_eq!(quote.settings["batch_size"], 1, "{kind}: defaults for what was not set");
    assert_eq!(quote.lora_slug, "tom-cat");
    assert_eq!(env.available().await, before, "{kind}: a quote holds nothing");

    let mut rx = env.station.bus.subscribe();
    let started = env.station.start_training(&env.account, &req).await.unwrap();
    let job_id = started.row.job_id.clone();
    assert_eq!(env.available().await, before - 2, "{kind}: the quote is held");
    let locked = env.station.dataset(&env.account, "tom-cat").await.unwrap();
    assert_eq!(locked.row.status, "locked", "{kind}");
    let err = env.station.add_dataset_image(&env.account, "tom-cat", png(9), "").await.unwrap_err();
    assert!(matches!(&err, TrainingError::Invalid { field, .. } if field == "dataset"), "{kind}: {err}");

    let done = env.wait_training(&started.row.id).await;
    assert_eq!(done.row.status, "succeeded", "{kind}: {:?} / {:?}", done.row.error, done.job.map(|j| j.error));
    let job = env.job(&job_id).await;
    assert_eq!(job.status(), JobStatus::Succeeded);

    // What ComfyUI was sent and trained on: the recorded workflow's shape.
    let sent = env.fake.last_prompt().unwrap()["prompt"].clone();
    let folder = sent["2"]["inputs"]["folder"].as_str().unwrap().to_owned();
    assert!(folder.starts_with("station_ds_"), "{kind}: {folder}");
    assert_eq!(sent["5"]["inputs"]["steps"], 20);
    assert_eq!(sent["5"]["inputs"]["learning_rate"], 0.0002);
    assert_eq!(sent["5"]["inputs"]["rank"], 8);
    assert_eq!(sent["5"]["inputs"]["seed"], 7);
    assert_eq!(sent["5"]["inputs"]["training_dtype"], "fp32");
    assert_eq!(sent["1"]["inputs"]["ckpt_name"], CKPT);
    let run = env.fake.trainings().pop().unwrap();
    assert_eq!(run.folder.as_deref(), Some(folder.as_str()));
    assert_eq!(run.images.len(), 4, "{kind}: {:?}", run.images);
    assert_eq!(run.steps_done, 20);
    assert_eq!(
        run.captions,
        ["tom-cat, a photo number 0", "Tom-Cat asleep", "tom-cat, a photo number 2", "tom-cat, a photo number 3"],
        "{kind}: the captions uploaded as .txt files beside the images"
    );
    let saved = run.saved_file.clone().unwrap();
    let file_name = saved.strip_prefix("loras/").unwrap().to_owned();
    assert!(file_name.ends_with("_20_steps_00001_.safetensors"), "{kind}: {file_name}");

    // One progress event per training step, on the training node.
    let mut steps = vec![];
    while let Ok(ev) = rx.try_recv() {
        if let JobEvent::Progress { job_id: j, step: Some(s), of: Some(20), .. } = ev
            && j == job_id
        {
            steps.push(s);
        }
    }
    assert_eq!(steps, (1..=20).collect::<Vec<u64>>(), "{kind}");

    // Paid exactly the quote; the hold is gone.
    assert_eq!(env.available().await, before - 2, "{kind}");
    assert_eq!(env.station.points(&env.account.id).await.unwrap().held, 0, "{kind}");
    assert_eq!(env.station.job_charge(&job_id).await.unwrap(), 2);

    // The LoRA: private, the owner's, with its trigger word and the file the backend saved.
    let lora = done.lora.clone().unwrap();
    assert_eq!(lora.slug, "tom-cat");
    assert_eq!(lora.owner.as_deref(), Some(env.account.id.as_str()));
    assert_eq!(lora.visibility.as_str(), "private");
    assert_eq!(lora.trigger_words, ["tom-cat"]);
    assert_eq!(lora.checkpoint, "SD1.5");
    assert_eq!(lora.filename, file_name);
    let (name, bytes) = env.station.lora_file(&env.account, "tom-cat").await.unwrap();
    assert_eq!(name, "tom-cat.safetensors");
    assert_eq!(Some(bytes), env.fake.file("output", "loras", &file_name), "{kind}: the file, byte for byte");
    let other = env.station.account("local", "other", "Other").await.unwrap();
    assert!(env.station.lora_file(&other, "tom-cat").await.is_err(), "{kind}: not someone else's");
    assert_eq!(env.station.dataset(&env.account, "tom-cat").await.unwrap().row.status, "ready", "{kind}: unlocked");

    // A generation with the trigger word right away loads the trained file:
    // the backends were read again before the LoRA became usable (ComfyUI
    // registers output/loras as a LoRA folder), so routing knows the file.
    assert!(
        env.comfy.inventory("b0").is_some_and(|inv| inv.contains(&("lora".to_owned(), file_name.clone()))),
        "{kind}: the backend lists {file_name} once the LoRA is ready"
    );
    let params = settings(json!({"prompt": "tom-cat on a roof", "steps": 2, "width": 64, "height": 64}));
    let row = env
        .station
        .submit(&env.account, SubmitRequest { tool: "txt2img-sd15".into(), params, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(row.params_json()["_loras"][0]["filename"], json!(file_name), "{kind}");
    let row = env.wait_job(&row.id, "finished", |r| r.status() != JobStatus::Queued && r.finished_at.is_some()).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "{kind}: {:?}", row.error);
    let sent = env.fake.last_prompt().unwrap()["prompt"].clone();
    let loaders: Vec<&Value> = sent.as_object().unwrap().values().filter(|n| n["class_type"] == "LoraLoader").collect();
    assert_eq!(loaders.len(), 1, "{kind}: {sent}");
    assert_eq!(loaders[0]["inputs"]["lora_name"], json!(file_name), "{kind}");

    // Someone else's prompt with the trigger word does not get it.
    let params = settings(json!({"prompt": "tom-cat on a roof", "steps": 2}));
    let theirs = env
        .station
        .submit(&other, SubmitRequest { tool: "txt2img-sd15".into(), params, ..Default::default() })
        .await
        .unwrap();
    assert!(theirs.params_json().get("_loras").is_none_or(|l| l.as_array().is_none_or(Vec::is_empty)), "{kind}");
    env.stop().await;
}

/// Cancelling mid-run interrupts the backend and releases the whole hold;
/// the dataset is unlocked and no LoRA appears.
async fn cancel_mid_run_releases(db: TestDb) {
    let kind = db.kind;
    let env = setup(db, false).await;
    env.dataset("Slow One", 4).await;
    env.fake.set_step_delay(30);
    let before = env.available().await;
    let req =
        TrainingRequest { dataset: "slow-one".into(), settings: settings(json!({"steps": 500})), ..Default::default() };
    let started = env.station.start_training(&env.account, &req).await.unwrap();
    assert_eq!(started.row.price, 50, "{kind}");
    assert_eq!(env.available().await, before - 50, "{kind}");
    env.wait_job(&started.row.job_id, "training", |r| r.status() == JobStatus::Running && r.progress > 0.0).await;
    let view = env.station.cancel_training(&env.account, &started.row.id).await.unwrap();
    let done = if view.row.status == "running" { env.wait_training(&view.row.id).await } else { view };
    assert_eq!(done.row.status, "cancelled", "{kind}: {:?}", done.row.error);
    assert!(done.lora.is_none());
    let job = env.job(&started.row.job_id).await;
    assert_eq!(job.status(), JobStatus::Cancelled, "{kind}");
    assert_eq!(env.available().await, before, "{kind}: all released");
    assert_eq!(env.station.job_charge(&started.row.job_id).await.unwrap(), 0);
    let run = env.fake.trainings().pop().unwrap();
    assert!(run.steps_done < 500 && run.saved_file.is_none(), "{kind}: interrupted on the backend: {run:?}");
    assert_eq!(env.station.dataset(&env.account, "slow-one").await.unwrap().row.status, "ready", "{kind}");
    assert!(env.station.loras().show("slow-one").await.is_err(), "{kind}");
    env.stop().await;
}

/// Refusals before anything is stored or held: too few images, a duplicate
/// image, a setting out of range or unknown, a second dataset of one name.
async fn refusals(db: TestDb) {
    let kind = db.kind;
    let env = setup(db, false).await;
    env.dataset("Few", 3).await;
    let before = env.available().await;
    let req = TrainingRequest { dataset: "few".into(), ..Default::default() };
    let err = env.station.start_training(&env.account, &req).await.unwrap_err();
    match &err {
        TrainingError::Invalid { field, reason } => {
            assert_eq!(field, "images", "{kind}");
            assert!(reason.contains("3 images") && reason.contains("at least 4"), "{kind}: {reason}");
        }
        e => panic!("{kind}: {e}"),
    }
    assert_eq!(env.station.dataset(&env.account, "few").await.unwrap().row.status, "draft", "{kind}");

    let err = env.station.add_dataset_image(&env.account, "few", png(1), "again").await.unwrap_err();
    match &err {
        TrainingError::Invalid { field, reason } => {
            assert_eq!(field, "image");
            assert!(reason.contains("already in slot 2"), "{kind}: {reason}");
        }
        e => panic!("{kind}: {e}"),
    }
    assert_eq!(env.station.dataset(&env.account, "few").await.unwrap().images.len(), 3, "{kind}");
    let err = env.station.add_dataset_image(&env.account, "few", b"not an image".to_vec(), "").await.unwrap_err();
    assert!(matches!(&err, TrainingError::Invalid { field, .. } if field == "image"), "{kind}: {err}");

    env.station.add_dataset_image(&env.account, "few", png(3), "").await.unwrap();
    let req = TrainingRequest {
        dataset: "few".into(),
        settings: settings(json!({"steps": 0, "rank": 500, "colour": "blue"})),
        ..Default::default()
    };
    let err = env.station.quote_training(&env.account, &req).await.unwrap_err();
    let TrainingError::Submit(SubmitError::Invalid(fields)) = &err else { panic!("{kind}: {err}") };
    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    for f in ["steps", "rank", "colour"] {
        assert!(names.contains(&f), "{kind}: {names:?}");
    }
    let err = env.station.create_dataset(&env.account, "few", None).await.unwrap_err();
    assert!(matches!(&err, TrainingError::Invalid { field, .. } if field == "name"), "{kind}: {err}");
    assert_eq!(env.available().await, before, "{kind}: nothing held");
    assert_eq!(env.fake.prompts_received(), 0, "{kind}");
    env.stop().await;
}

/// A receiver on 127.0.0.1 that records (event id, signature, body) and answers 200.
async fn receiver() -> (String, Arc<std::sync::Mutex<Vec<(String, String, String)>>>) {
    let seen: Arc<std::sync::Mutex<Vec<(String, String, String)>>> = Default::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let s = s.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                s.lock().unwrap().push((h("x-station-event-id"), h("x-station-signature"), body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// With `training.publish_dir` the trained file is written there as
/// `<slug>.safetensors` and the catalog names that file; the training's
/// `callback_url` is sent `training.succeeded`, signed with the callback
/// secret, and so is an account subscription to `training.*`, with its own.
async fn publish_dir_gets_the_file(db: TestDb) {
    let kind = db.kind;
    let env = setup(db, true).await;
    env.dataset("Ink Style", 4).await;
    let (url, seen) = receiver().await;
    // An account subscription to training.* gets the same end, signed with its own secret.
    let (sub_url, sub_seen) = receiver().await;
    let (_, sub_secret) = env.station.add_webhook(&env.account, &sub_url, &["training.*".to_string()]).await.unwrap();
    let req = TrainingRequest {
        dataset: "ink-style".into(),
        settings: settings(json!({"steps": 3})),
        callback_url: Some(url),
        ..Default::default()
    };
    let started = env.station.start_training(&env.account, &req).await.unwrap();
    let done = env.wait_training(&started.row.id).await;
    assert_eq!(done.row.status, "succeeded", "{kind}: {:?}", done.row.error);
    let lora = done.lora.unwrap();
    assert_eq!(lora.filename, "ink-style.safetensors");
    let published = std::fs::read(env.publish.path().join("loras/ink-style.safetensors")).unwrap();
    let saved = env.fake.trainings().pop().unwrap().saved_file.unwrap();
    let on_backend = env.fake.file("output", "", &saved).or_else(|| {
        let (sub, name) = saved.rsplit_once('/').unwrap();
        env.fake.file("output", sub, name)
    });
    assert_eq!(Some(published), on_backend, "{kind}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{kind}: the callback never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (event_id, sig, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(event_id, format!("training.succeeded:{}", started.row.id), "{kind}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((body["type"].as_str(), body["data"]["lora"].as_str()), (Some("training.succeeded"), Some("ink-style")));
    let secret = env.station.callback_secret(&env.account).await.unwrap();
    let t: i64 = sig.split(',').next().unwrap().trim_start_matches("t=").parse().unwrap();
    assert_eq!(sig, station_core::webhooks::signature(&secret, t, &seen.lock().unwrap()[0].2), "{kind}");
    while sub_seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{kind}: the subscription's event never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (event_id, sig, raw) = sub_seen.lock().unwrap()[0].clone();
    assert_eq!(event_id, format!("training.succeeded:{}", started.row.id), "{kind}");
    let t: i64 = sig.split(',').next().unwrap().trim_start_matches("t=").parse().unwrap();
    assert_eq!(sig, station_core::webhooks::signature(&sub_secret, t, &raw), "{kind}");
    let deliveries = env.station.webhook_deliveries(&env.account, 10).await.unwrap();
    assert_eq!(deliveries.len(), 2, "{kind}: one per URL: {deliveries:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_happy_path() {
    for db in testing::all().await {
        happy_path(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_cancel_mid_run_releases() {
    for db in testing::all().await {
        cancel_mid_run_releases(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_refusals() {
    for db in testing::all().await {
        refusals(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_publish_dir() {
    for db in testing::all().await {
        publish_dir_gets_the_file(db).await;
    }
}

/// With only an SDXL checkpoint on the backends, a training asked without a
/// base model is quoted on the SDXL definition (its own price per step), and
/// asking for SD1.5 names the missing checkpoint.
async fn sdxl_when_the_backends_have_sdxl(db: TestDb) {
    let env = setup(db, false).await;
    let kind = env.db.kind;
    env.fake.set_models("checkpoints", &["sd_xl_base_1.0.safetensors"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.station.trainable_base_models().await != ["SDXL"] {
        assert!(Instant::now() < deadline, "{kind}: the backend's SDXL checkpoint never showed");
        env.station.reload_models().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.station.create_dataset(&env.account, "Ink style", None).await.unwrap();
    for i in 0..4 {
        env.station.add_dataset_image(&env.account, "ink-style", png(i), "").await.unwrap();
    }
    let req =
        TrainingRequest { dataset: "ink-style".into(), settings: settings(json!({"steps": 8})), ..Default::default() };
    let quote = env.station.quote_training(&env.account, &req).await.unwrap();
    assert_eq!((quote.definition.as_str(), quote.base_model.as_str()), ("lora-sdxl", "SDXL"), "{kind}");
    assert_eq!(quote.price, 2, "{kind}: 8 steps × 0.25 point");
    assert_eq!(quote.settings["checkpoint"], "sd_xl_base_1.0.safetensors", "{kind}");
    let sd15 = TrainingRequest { base_model: Some("SD1.5".into()), ..req };
    let err = env.station.quote_training(&env.account, &sd15).await.unwrap_err();
    assert!(err.to_string().contains("checkpoint"), "{kind}: {err}");
    env.stop().await;
}

/// With `training.samples = 2`, a LoRA just trained draws two sample
/// images: ordinary paid jobs of the definition's sample tool, prompted with
/// the dataset's captions (so the trigger word brings in a LoraLoader with
/// the trained file), on the checkpoint trained on; listed with the training.
async fn samples_after_training(db: TestDb) {
    let env = setup_with(db, false, |c| c.training.samples = 2).await;
    let kind = env.db.kind;
    env.dataset("Tom Cat", 4).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.station.trainable_base_models().await.is_empty() {
        assert!(Instant::now() < deadline, "{kind}: the backend's checkpoint never showed");
        env.station.reload_models().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let req =
        TrainingRequest { dataset: "tom-cat".into(), settings: settings(json!({"steps": 4})), ..Default::default() };
    let started = env.station.start_training(&env.account, &req).await.unwrap();
    let before = env.available().await + started.row.price;
    let done = env.wait_training(&started.row.id).await;
    assert_eq!(done.row.status, "succeeded", "{kind}: {:?}", done.row.error);
    let file_name = done.lora.clone().unwrap().filename;
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let v = env.station.training(&env.account, &started.row.id).await.unwrap();
        if v.samples.len() == 2 && v.samples.iter().all(|j| j.finished_at.is_some()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "{kind}: samples {:?}",
            v.samples.iter().map(|j| &j.status).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (i, sample) in view.samples.iter().enumerate() {
        assert_eq!(sample.status(), JobStatus::Succeeded, "{kind}: {:?}", sample.error);
        assert_eq!(sample.tool_id, "txt2img", "{kind}");
        let params = sample.params_json();
        // A caption as the prompt; its trigger word resolved into the LoRA's tag.
        let prompt = params["prompt"].as_str().unwrap();
        assert!(prompt.ends_with(&format!("tom-cat, a photo number {i}")), "{kind}: {prompt}");
        assert!(prompt.contains("<lora:tom-cat:"), "{kind}: {prompt}");
        assert_eq!(params["model"], CKPT, "{kind}: the checkpoint trained on");
        assert_eq!(params["_loras"][0]["filename"], json!(file_name), "{kind}: the new LoRA");
        assert_eq!(sample.output_ids().len(), 1, "{kind}");
    }
    // Each sample is paid like any generation, after the training's price
    // (read once every hold is settled: a finished job is captured just after).
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.station.points(&env.account.id).await.unwrap().held != 0 {
        assert!(Instant::now() < deadline, "{kind}: holds never settled");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let samples: i64 = {
        let mut n = 0;
        for j in &view.samples {
            n += env.station.job_charge(&j.id).await.unwrap();
        }
        n
    };
    assert!(samples > 0, "{kind}: samples are charged");
    assert_eq!(env.available().await, before - started.row.price - samples, "{kind}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_samples() {
    for db in testing::all().await {
        samples_after_training(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_sdxl_definition() {
    for db in testing::all().await {
        sdxl_when_the_backends_have_sdxl(db).await;
    }
}

/// `training.per_second` for SD1.5: 2 points a second, 0.5 s a step until a
/// run is measured, a 50 % margin.
fn per_second(c: &mut Config, default_seconds_per_step: f64, margin: f64) {
    let price = TrainingPerSecond { points: 2.0, default_seconds_per_step, margin, runs: 5 };
    c.training.per_second.insert("lora-sd15".into(), price);
}

/// A per-second training is quoted from the operator's default before any
/// run, holds the quote, captures the measured seconds × the rate (never
/// more than the hold) and releases the rest; the next quote is learnt from
/// that run's seconds per step, and says so.
async fn per_second_quote_learns_from_past_runs(db: TestDb) {
    let env = setup_with(db, false, |c| per_second(c, 0.5, 1.5)).await;
    let kind = env.db.kind;
    env.dataset("Tom Cat", 4).await;
    env.fake.set_step_delay(20);
    let req = |steps: u64| TrainingRequest {
        dataset: "tom-cat".into(),
        base_model: Some("SD1.5".into()),
        settings: settings(json!({ "steps": steps })),
        ..Default::default()
    };
    // No run yet: 10 steps × 0.5 s × 1.5 = 7.5 → 8 s, × 2 points = 16.
    let quote = env.station.quote_training(&env.account, &req(10)).await.unwrap();
    let estimate = quote.estimate.clone().expect("priced per second");
    assert_eq!((estimate.seconds, estimate.basis.clone()), (8, EstimateBasis::Default), "{kind}");
    assert_eq!(quote.price, 16, "{kind}");
    assert_eq!(
        quote.explanation,
        "about 8 seconds at 2 points a second (10 steps at 0.5 s a step, the operator's estimate until a run has \
         been measured, plus 50 %); you pay for the time it takes, at most 16 points",
        "{kind}"
    );

    let before = env.available().await;
    let started = env.station.start_training(&env.account, &req(10)).await.unwrap();
    assert_eq!(started.row.price, 16, "{kind}");
    assert_eq!(env.available().await, before - 16, "{kind}: the quote is held");
    let done = env.wait_training(&started.row.id).await;
    assert_eq!(done.row.status, "succeeded", "{kind}: {:?}", done.row.error);
    let job = env.job(&started.row.job_id).await;
    let run_ms = job.finished_at.unwrap() - job.started_at.or(job.dispatched_at).unwrap();
    assert!(run_ms >= 200, "{kind}: 10 steps of 20 ms took {run_ms} ms");
    // Captured: the measured seconds × 2, rounded up, at most the hold; the rest released.
    let expected = ((2.0 * run_ms as f64 / 1000.0).ceil() as i64).min(16);
    assert_eq!(env.station.job_charge(&job.id).await.unwrap(), expected, "{kind}: ran {run_ms} ms");
    assert_eq!(env.available().await, before - expected, "{kind}: the rest of the hold is back");
    assert_eq!(env.station.points(&env.account.id).await.unwrap().held, 0, "{kind}");

    // Learnt: that run's seconds per step × 100 steps × 1.5.
    let quote = env.station.quote_training(&env.account, &req(100)).await.unwrap();
    let estimate = quote.estimate.clone().unwrap();
    let per_step = run_ms as f64 / 1000.0 / 10.0;
    assert_eq!(estimate.basis, EstimateBasis::History { runs: 1 }, "{kind}");
    assert_eq!(estimate.seconds, (100.0 * per_step * 1.5).ceil() as u64, "{kind}: ran {run_ms} ms");
    assert_eq!(quote.price, (2.0 * estimate.seconds as f64).ceil() as i64, "{kind}");
    assert!(quote.explanation.contains("as the last run took, plus 50 %"), "{kind}: {}", quote.explanation);
    assert!(quote.explanation.contains("at 2 points a second (100 steps"), "{kind}: {}", quote.explanation);
    env.stop().await;
}

/// A run slower than its estimate is charged the hold, not more.
async fn per_second_capture_never_above_the_hold(db: TestDb) {
    let env = setup_with(db, false, |c| per_second(c, 0.001, 1.0)).await;
    let kind = env.db.kind;
    env.dataset("Slow Cat", 4).await;
    env.fake.set_step_delay(100);
    let req = TrainingRequest {
        dataset: "slow-cat".into(),
        base_model: Some("SD1.5".into()),
        settings: settings(json!({"steps": 20})),
        ..Default::default()
    };
    let before = env.available().await;
    let started = env.station.start_training(&env.account, &req).await.unwrap();
    assert_eq!(started.row.price, 2, "{kind}: 20 × 0.001 s rounds up to 1 s, × 2 points");
    let done = env.wait_training(&started.row.id).await;
    assert_eq!(done.row.status, "succeeded", "{kind}: {:?}", done.row.error);
    let job = env.job(&started.row.job_id).await;
    let run_ms = job.finished_at.unwrap() - job.started_at.or(job.dispatched_at).unwrap();
    assert!(run_ms >= 2000, "{kind}: 20 steps of 100 ms took {run_ms} ms");
    assert_eq!(env.station.job_charge(&job.id).await.unwrap(), 2, "{kind}: never more than the hold");
    assert_eq!(env.available().await, before - 2, "{kind}");
    assert_eq!(env.station.points(&env.account.id).await.unwrap().held, 0, "{kind}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_per_second_quote_learns_from_past_runs() {
    for db in testing::all().await {
        per_second_quote_learns_from_past_runs(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_per_second_capture_never_above_the_hold() {
    for db in testing::all().await {
        per_second_capture_never_above_the_hold(db).await;
    }
}

const FLUX: &str = "flux1-dev.safetensors";

/// A FLUX training: the FLUX diffusion model (UNETLoader), its two text
/// encoders (DualCLIPLoader, type flux) and its VAE (VAELoader) feed the
/// training nodes; priced per second by the definition (no run yet: its
/// default seconds per step); the result is a private FLUX LoRA.
async fn flux_training(db: TestDb) {
    let env = setup(db, false).await;
    let kind = env.db.kind;
    env.fake.set_models("diffusion_models", &[FLUX]);
    env.fake.set_models("text_encoders", &["clip_l.safetensors", "t5xxl_fp16.safetensors"]);
    env.fake.set_models("vae", &["ae.safetensors"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !env.station.trainable_base_models().await.contains(&"FLUX".to_owned()) {
        assert!(Instant::now() < deadline, "{kind}: the backend's FLUX model never showed");
        env.station.reload_models().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.dataset("Flux Cat", 4).await;
    let req = TrainingRequest {
        dataset: "flux-cat".into(),
        base_model: Some("FLUX".into()),
        settings: settings(json!({"steps": 4, "rank": 8})),
        ..Default::default()
    };
    let quote = env.station.quote_training(&env.account, &req).await.unwrap();
    assert_eq!((quote.definition.as_str(), quote.base_model.as_str()), ("lora-flux", "FLUX"), "{kind}");
    assert_eq!(quote.settings["checkpoint"], FLUX, "{kind}");
    assert_eq!(quote.settings["precision"], "bf16", "{kind}: FLUX trains in bf16 by default");
    // 4 steps × 2 s (the definition's default) × 1.25 = 10 s at 1 point a second.
    assert_eq!(quote.estimate.as_ref().map(|e| e.seconds), Some(10), "{kind}");
    assert_eq!(quote.price, 10, "{kind}");
    let before = env.available().await;
    let started = env.station.start_training(&env.account, &req).await.unwrap();
    let done = env.wait_training(&started.row.id).await;
    assert_eq!(done.row.status, "succeeded", "{kind}: {:?} / {:?}", done.row.error, done.job.map(|j| j.error));

    // The graph ComfyUI got: FLUX's loaders into the training nodes.
    let sent = env.fake.last_prompt().unwrap()["prompt"].clone();
    assert_eq!(sent["1"]["class_type"], "UNETLoader", "{kind}");
    assert_eq!(sent["1"]["inputs"]["unet_name"], FLUX, "{kind}");
    assert_eq!(sent["1"]["inputs"]["weight_dtype"], "default", "{kind}");
    assert_eq!(sent["2"]["class_type"], "DualCLIPLoader", "{kind}");
    assert_eq!(sent["2"]["inputs"]["type"], "flux", "{kind}");
    assert_eq!(sent["3"]["inputs"]["vae_name"], "ae.safetensors", "{kind}");
    assert_eq!(sent["7"]["inputs"]["steps"], 4, "{kind}");
    assert_eq!(sent["7"]["inputs"]["rank"], 8, "{kind}");
    assert_eq!(sent["7"]["inputs"]["training_dtype"], "bf16", "{kind}");
    let run = env.fake.trainings().pop().unwrap();
    assert_eq!(run.model, FLUX, "{kind}");
    assert_eq!(run.clips, ["clip_l.safetensors+t5xxl_fp16.safetensors:flux"], "{kind}");
    assert_eq!(run.steps_done, 4, "{kind}");
    assert_eq!(run.captions.len(), 4, "{kind}");

    // A private FLUX LoRA of its owner, paid at most the hold.
    let lora = done.lora.clone().unwrap();
    assert_eq!(lora.checkpoint, "FLUX", "{kind}");
    assert_eq!(lora.owner.as_deref(), Some(env.account.id.as_str()), "{kind}");
    assert_eq!(lora.visibility.as_str(), "private", "{kind}");
    assert_eq!(lora.trigger_words, ["flux-cat"], "{kind}");
    let charged = env.station.job_charge(&started.row.job_id).await.unwrap();
    assert!((1..=10).contains(&charged), "{kind}: charged {charged}");
    assert_eq!(env.available().await, before - charged, "{kind}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_flux_definition() {
    for db in testing::all().await {
        flux_training(db).await;
    }
}
