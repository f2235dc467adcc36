//! The ComfyUI executor end to end: jobs go through the real core (store,
//! workers, media, events) to fake ComfyUI servers, with faults injected on
//! the way. Every case runs on SQLite, and again on PostgreSQL when
//! `STATION_TEST_POSTGRES_URL` is set.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{GenericImageView, ImageFormat, Rgb, RgbImage};
use serde_json::{Map, Value, json};
use station_comfyui::{BackendSpec, ComfyClient, ComfyExecutor, SubmitRequest as ComfySubmit};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::{Config, JobEvent, Station, SubmitRequest, Workers};
use station_store::{AccountRow, ClaimRequest, JobRow, JobStatus};
use station_testkit::testing::{self, TestDb};
use tokio::sync::broadcast;

/// A running Station with the ComfyUI executor over some fakes, and one account.
struct Env {
    station: Station,
    comfy: Arc<ComfyExecutor>,
    workers: Option<Workers>,
    account: AccountRow,
    fakes: Vec<FakeComfy>,
    db: TestDb,
    _dir: tempfile::TempDir,
}

/// How a test wants its Station.
struct Setup {
    /// `max_concurrent` per fake, in order; backends are named `b0`, `b1`, …
    slots: Vec<usize>,
    /// Health-check period (long when a test needs the executor alone to notice a dead backend).
    health_every: Duration,
    /// `queue.job_timeout_seconds`.
    job_timeout_s: u64,
    /// Start workers at once (off when a test first plays a crashed process).
    workers: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup { slots: vec![2], health_every: Duration::from_millis(200), job_timeout_s: 600, workers: true }
    }
}

/// 4×4 PNG whose pixel (x, y) is (60x, 60y, 200): every pixel differs, so a
/// wrong resampling shows.
fn test_png() -> Vec<u8> {
    let img = RgbImage::from_fn(4, 4, |x, y| Rgb([(60 * x) as u8, (60 * y) as u8, 200]));
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).unwrap();
    buf
}

/// Operator-written tools the cases need besides the built-ins:
/// `slow-upscale` runs StationSteps (progress and preview frames) before the
/// scale; `wide-upscale` allows factors ComfyUI's ImageScaleBy refuses (> 8).
fn install_tools(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let slow = json!({
        "id": "slow-upscale", "name": "Slow upscale", "category": "upscale", "service": "comfyui",
        "inputs": {
            "image": {"type": "image", "required": true, "primary": true},
            "scale_by": {"type": "number", "default": 2, "min": 1, "max": 4},
            "upscale_method": {"type": "enum", "choices": ["nearest-exact", "lanczos"], "default": "nearest-exact"},
            "steps": {"type": "integer", "default": 4, "min": 1, "max": 1000},
            "step_ms": {"type": "integer", "default": 20, "min": 0, "max": 1000}
        },
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
                "2": {"class_type": "StationSteps", "inputs": {"image": ["1", 0], "steps": 4, "step_ms": 20}},
                "3": {"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact", "scale_by": 2.0}},
                "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "station-slow"}}
            },
            "bindings": {
                "image": ["1.inputs.image"],
                "scale_by": ["3.inputs.scale_by"],
                "upscale_method": ["3.inputs.upscale_method"],
                "steps": ["2.inputs.steps"],
                "step_ms": ["2.inputs.step_ms"]
            },
            "outputs": ["4"]
        }
    });
    // `factor` is bound to ImageScaleBy's `scale_by`: a backend error must be
    // reported under the name users know. upscale_method comes first so that
    // naming the input by node alone would pick the wrong one.
    let wide = json!({
        "id": "wide-upscale", "name": "Wide upscale", "category": "upscale", "service": "comfyui",
        "inputs": {
            "image": {"type": "image", "required": true, "primary": true},
            "upscale_method": {"type": "enum", "choices": ["nearest-exact", "lanczos"], "default": "nearest-exact"},
            "factor": {"type": "number", "default": 2, "min": 1, "max": 16}
        },
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
                "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "scale_by": 2.0}},
                "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "station-wide"}}
            },
            "bindings": {
                "image": ["1.inputs.image"],
                "upscale_method": ["2.inputs.upscale_method"],
                "factor": ["2.inputs.scale_by"]
            },
            "outputs": ["3"]
        }
    });
    // The SD 1.5 template is hidden (administrators only): the test's member runs a public copy.
    let sd15 = station_testkit::public_builtin("txt2img-sd15");
    for (name, tool) in [("slow-upscale", slow), ("wide-upscale", wide), ("txt2img-sd15", sd15)] {
        std::fs::write(dir.join(format!("{name}.json")), tool.to_string()).unwrap();
    }
}

async fn setup(db: TestDb, s: Setup) -> Env {
    let mut fakes = vec![];
    for _ in &s.slots {
        fakes.push(FakeComfy::start(FakeOptions::default()).await);
    }
    setup_with(db, s, fakes).await
}

async fn setup_with(db: TestDb, s: Setup, fakes: Vec<FakeComfy>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    config.queue.lease_seconds = 2;
    config.queue.retry_base_ms = 50;
    config.queue.poll_ms = 50;
    config.queue.job_timeout_seconds = s.job_timeout_s;
    install_tools(&config.tools_dir());
    let (station, errors) = Station::with_store(config, db.store.clone()).unwrap();
    assert!(errors.is_empty(), "tool files failed to load: {errors:?}");
    let specs = fakes
        .iter()
        .zip(&s.slots)
        .enumerate()
        .map(|(i, (f, slots))| BackendSpec {
            name: format!("b{i}"),
            url: f.url(),
            max_concurrent: *slots,
            tags: vec![],
        })
        .collect();
    let comfy = ComfyExecutor::new(specs, "auto").unwrap();
    comfy.start_health_checks(s.health_every, station.wake.clone()).await;
    assert!(
        comfy.statuses().iter().all(|b| b.healthy),
        "backends healthy after the first check: {:?}",
        comfy.statuses()
    );
    station.register_executor(comfy.clone());
    let workers = s.workers.then(|| Workers::start(&station));
    let account = station.account("local", "t", "T").await.unwrap();
    Env { station, comfy, workers, account, fakes, db, _dir: dir }
}

impl Env {
    async fn stop(mut self) {
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        self.comfy.shutdown();
    }

    async fn upload(&self) -> String {
        let m = self.station.media.put_image(test_png(), Some(&self.account.id), None, "input").await.unwrap();
        format!("media:{}", m.id)
    }

    async fn submit(&self, tool: &str, params: Value) -> JobRow {
        let params: Map<String, Value> = params.as_object().unwrap().clone();
        self.station
            .submit(&self.account, SubmitRequest { tool: tool.into(), params, ..Default::default() })
            .await
            .unwrap()
    }

    async fn job(&self, id: &str) -> JobRow {
        self.db.store.get_job(id).await.unwrap().unwrap()
    }

    /// Polls the job until `done` holds for it, failing after `secs`.
    async fn wait_for(&self, id: &str, secs: u64, what: &str, done: impl Fn(&JobRow) -> bool) -> JobRow {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let row = self.job(id).await;
            if done(&row) {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not {what} after {secs} s: status {} error {:?} attempts {} backend {:?}",
                row.status,
                row.error,
                row.attempts,
                row.backend
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_terminal(&self, id: &str, secs: u64) -> JobRow {
        self.wait_for(id, secs, "finished", |r| {
            matches!(r.status(), JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
        })
        .await
    }

    /// The job's only output, decoded, after checking it belongs to the job's owner.
    async fn output(&self, row: &JobRow) -> image::DynamicImage {
        let ids = row.output_ids();
        assert_eq!(ids.len(), 1, "one output expected: {ids:?}");
        let (media, bytes) = self.station.media.get(&ids[0], Some(&self.account)).await.unwrap();
        assert_eq!(media.kind, "output");
        assert_eq!(media.job_id.as_deref(), Some(row.id.as_str()));
        assert_eq!((media.width, media.height), (8, 8), "stored dimensions");
        image::load_from_memory(&bytes).unwrap()
    }

    /// Plays a Station process that claimed the job, recorded and sent its
    /// prompt to b0, then died: its lease lapses and the sweeper requeues the
    /// job with the prompt id for the next worker to reconcile. Returns the
    /// prompt id.
    async fn crashed_submission(&self, job: &JobRow) -> String {
        let store = &self.db.store;
        let claimed = store
            .claim_jobs(&ClaimRequest {
                service: "comfyui",
                owner: "crashed",
                limit: 1,
                lease_ms: 300,
                per_account_running_cap: 10,
                now: station_store::now_ms(),
            })
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, job.id);
        let prompt_id = uuid::Uuid::new_v4().to_string();
        assert!(store.record_submission(&job.id, "crashed", "b0", &prompt_id).await.unwrap());
        let tool = self.station.tools.get(&job.tool_id).unwrap();
        let params = claimed[0].params_json();
        let media_id = params["image"].as_str().unwrap().trim_start_matches("media:");
        let (_, bytes) = self.station.media.get(media_id, None).await.unwrap();
        let client = inspect(self.fake(0));
        let up = client.upload_image(bytes, "crashed.png").await.unwrap();
        let uploaded = HashMap::from([("image".to_string(), up.load_image_name())]);
        let graph = station_tools::bind_workflow(&tool, &params, &uploaded).unwrap();
        client
            .submit(&ComfySubmit {
                prompt_id: prompt_id.clone(),
                graph: graph.as_object().unwrap().clone(),
                // The dead process's websocket id: nobody listens on it any more.
                client_id: "crashed-process".into(),
                preview_method: None,
            })
            .await
            .unwrap();
        prompt_id
    }

    /// Waits until the backend has finished `prompt` (history written).
    async fn wait_backend_done(&self, prompt: &str) -> station_comfyui::HistoryEntry {
        let client = inspect(self.fake(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = client.history(prompt).await.unwrap() {
                return e;
            }
            assert!(Instant::now() < deadline, "prompt {prompt} never ended on the backend");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn fake(&self, i: usize) -> &FakeComfy {
        &self.fakes[i]
    }
}

/// The output must be the 4×4 test picture enlarged 2× by nearest neighbour:
/// every 2×2 block repeats one source pixel.
fn assert_doubled(img: &image::DynamicImage) {
    assert_eq!(img.dimensions(), (8, 8));
    let rgb = img.to_rgb8();
    for (x, y, px) in rgb.enumerate_pixels() {
        let (sx, sy) = (x / 2, y / 2);
        assert_eq!(px.0, [(60 * sx) as u8, (60 * sy) as u8, 200], "pixel ({x}, {y}) should repeat source ({sx}, {sy})");
    }
}

/// Every event published so far for `job_id`.
fn drain(rx: &mut broadcast::Receiver<JobEvent>, job_id: &str) -> Vec<JobEvent> {
    let mut out = vec![];
    loop {
        match rx.try_recv() {
            Ok(e) if e.job_id() == job_id => out.push(e),
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Lagged(n)) => panic!("event bus lagged by {n}"),
            Err(_) => return out,
        }
    }
}

fn progress_of(events: &[JobEvent]) -> Vec<f64> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress { fraction, .. } => Some(*fraction),
            _ => None,
        })
        .collect()
}

fn statuses_of(events: &[JobEvent]) -> Vec<JobStatus> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Status { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

/// A client of our own to look at what a fake holds (history, queue).
fn inspect(fake: &FakeComfy) -> ComfyClient {
    ComfyClient::with_timeout(&fake.url(), Duration::from_secs(5)).unwrap()
}

use station_testkit::on_every_db;

on_every_db!(
    success_with_pixels_progress_and_previews,
    builtin_upscale_succeeds,
    validation_error_names_the_tool_input,
    execution_error_fails_without_retry,
    cancel_job_waiting_in_station_queue,
    cancel_job_pending_on_backend,
    cancel_running_job_interrupts_backend,
    dropped_websocket_is_reconciled,
    restarted_backend_gets_exactly_one_resubmission,
    dead_backend_fails_over_to_another,
    resumed_job_still_running_is_followed_not_resubmitted,
    resumed_job_finished_meanwhile_is_collected,
    resumed_job_failed_meanwhile_reports_the_node_error,
    job_timeout_interrupts_the_backend,
    backend_without_node_gets_no_jobs,
    no_capable_backend_fails_with_no_backend,
    two_processes_share_one_backends_capacity,
);

async fn success_with_pixels_progress_and_previews(db: TestDb) {
    let env = setup(db, Setup::default()).await;
    let mut rx = env.station.bus.subscribe();
    let image = env.upload().await;
    let row = env.submit("slow-upscale", json!({"image": image, "scale_by": 2, "steps": 5, "step_ms": 20})).await;
    let row = env.wait_terminal(&row.id, 20).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
    assert_eq!(row.backend.as_deref(), Some("b0"));
    assert!(row.remote_id.is_some(), "prompt id recorded");
    assert_eq!(row.attempts, 1);
    assert_doubled(&env.output(&row).await);

    // The workflow the fake received carries the bound parameters.
    assert_eq!(env.fake(0).prompts_received(), 1);
    let sent = env.fake(0).last_prompt().unwrap();
    assert_eq!(sent["prompt_id"], json!(row.remote_id.clone().unwrap()));
    assert_eq!(sent["prompt"]["2"]["inputs"]["steps"], json!(5));
    assert_eq!(sent["prompt"]["3"]["inputs"]["upscale_method"], json!("nearest-exact"));

    // Result and final status are published right after the database write.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = drain(&mut rx, &row.id);
    let statuses = statuses_of(&events);
    assert_eq!(
        statuses,
        [JobStatus::Queued, JobStatus::Dispatched, JobStatus::Running, JobStatus::Succeeded],
        "status sequence"
    );
    let progress = progress_of(&events);
    assert!(progress.len() >= 5, "a progress event per step at least: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {progress:?}");
    assert_eq!(progress.last().copied(), Some(1.0));
    assert!(progress.iter().any(|p| *p > 0.0 && *p < 1.0), "intermediate progress: {progress:?}");
    let steps: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress { step: Some(s), of: Some(o), label, .. } => {
                assert_eq!(label.as_deref(), Some("StationSteps"));
                Some((*s, *o))
            }
            _ => None,
        })
        .collect();
    assert_eq!(steps, (1..=5).map(|s| (s, 5)).collect::<Vec<_>>(), "steps reported");
    let previews: Vec<&JobEvent> = events.iter().filter(|e| matches!(e, JobEvent::Preview { .. })).collect();
    assert!(!previews.is_empty(), "previews delivered");
    for p in previews {
        let JobEvent::Preview { mime, data, .. } = p else { unreachable!() };
        assert_eq!(mime, "image/jpeg");
        image::load_from_memory_with_format(data, ImageFormat::Jpeg).expect("preview decodes as JPEG");
    }
    // Result comes before the terminal status, naming the stored output.
    let result_at = events.iter().position(|e| matches!(e, JobEvent::Result { .. })).expect("result event");
    let JobEvent::Result { outputs, .. } = &events[result_at] else { unreachable!() };
    assert_eq!(outputs, &row.output_ids());
    assert!(matches!(events.last(), Some(JobEvent::Status { status: JobStatus::Succeeded, .. })));
    env.stop().await;
}

async fn builtin_upscale_succeeds(db: TestDb) {
    let env = setup(db, Setup::default()).await;
    let image = env.upload().await;
    let row = env.submit("upscale", json!({"image": image, "scale_by": 2, "upscale_method": "nearest-exact"})).await;
    let row = env.wait_terminal(&row.id, 20).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
    assert_doubled(&env.output(&row).await);
    // The input went up under Station's content-derived name and the graph loads it.
    let uploads = env.fake(0).uploads();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    let sent = env.fake(0).last_prompt().unwrap();
    assert_eq!(sent["prompt"]["1"]["inputs"]["image"], json!(uploads[0]));
    assert_eq!(sent["prompt"]["2"]["inputs"]["scale_by"], json!(2.0));
    env.stop().await;
}

async fn validation_error_names_the_tool_input(db: TestDb) {
    let env = setup(db, Setup::default()).await;
    let image = env.upload().await;
    // Station allows 10 for this tool; ComfyUI's ImageScaleBy stops at 8.
    let row = env.submit("wide-upscale", json!({"image": image, "factor": 10})).await;
    let row = env.wait_terminal(&row.id, 20).await;
    assert_eq!(row.status(), JobStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("invalid_input"), "error: {:?}", row.error);
    let error = row.error.clone().unwrap();
    assert!(error.contains("input factor"), "error names the tool input: {error}");
    assert!(error.contains("bigger than max"), "error keeps ComfyUI's reason: {error}");
    assert!(!error.contains("upscale_method"), "error must not blame another input of the same node: {error}");
    // Refused prompts are never retried.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.fake(0).prompts_received(), 1);
    assert_eq!(env.job(&row.id).await.status(), JobStatus::Failed);
    assert!(row.output_ids().is_empty());
    env.stop().await;
}

async fn execution_error_fails_without_retry(db: TestDb) {
    let env = setup(db, Setup::default()).await;
    env.fake(0).fail_node("ImageScaleBy", "boom");
    let image = env.upload().await;
    let row = env.submit("upscale", json!({"image": image})).await;
    let row = env.wait_terminal(&row.id, 20).await;
    assert_eq!(row.status(), JobStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("execution_error"), "error: {:?}", row.error);
    let error = row.error.clone().unwrap();
    assert!(error.contains("boom"), "node message kept: {error}");
    assert!(error.contains("ImageScaleBy"), "failing node named: {error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.fake(0).prompts_received(), 1, "no retry of a failed run");
    assert_eq!(row.attempts, 1);
    // The backend stays in service after a job's own failure.
    assert!(env.comfy.statuses()[0].healthy);
    env.stop().await;
}

async fn cancel_job_waiting_in_station_queue(db: TestDb) {
    let env = setup(db, Setup { slots: vec![1], ..Default::default() }).await;
    let image = env.upload().await;
    let first = env.submit("slow-upscale", json!({"image": image, "steps": 20, "step_ms": 50})).await;
    env.wait_for(&first.id, 10, "running", |r| r.status() == JobStatus::Running).await;
    // The only slot is taken, so the second job stays in Station's queue.
    let second = env.submit("upscale", json!({"image": image})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.job(&second.id).await.status(), JobStatus::Queued);
    let cancelled = env.station.cancel(&env.account, &second.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status(), JobStatus::Cancelled, "a queued job is cancelled at once");
    let first = env.wait_terminal(&first.id, 20).await;
    assert_eq!(first.status(), JobStatus::Succeeded, "error: {:?}", first.error);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.fake(0).prompts_received(), 1, "the cancelled job never reached ComfyUI");
    let second = env.job(&second.id).await;
    assert_eq!(second.status(), JobStatus::Cancelled);
    assert_eq!(second.error_code.as_deref(), Some("cancelled"));
    assert!(second.remote_id.is_none());
    env.stop().await;
}

async fn cancel_job_pending_on_backend(db: TestDb) {
    // Several Station slots on one ComfyUI that runs one prompt at a time: the
    // second prompt waits in ComfyUI's own queue. (4 rather than 2 slots: see
    // `all_backend_slots_are_used` for why 2 would not be enough today.)
    let env = setup(db, Setup { slots: vec![4], ..Default::default() }).await;
    let image = env.upload().await;
    let first = env.submit("slow-upscale", json!({"image": image, "steps": 20, "step_ms": 50})).await;
    env.wait_for(&first.id, 10, "running", |r| r.status() == JobStatus::Running).await;
    let second = env.submit("upscale", json!({"image": image})).await;
    let second = env.wait_for(&second.id, 10, "submitted", |r| r.remote_id.is_some()).await;
    let prompt = second.remote_id.clone().unwrap();
    let client = inspect(env.fake(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.queue().await.unwrap().pending.contains(&prompt) {
        assert!(
            Instant::now() < deadline,
            "second prompt never queued on the backend: {:?} {:?} received {}",
            client.queue().await.unwrap(),
            env.job(&second.id).await,
            env.fake(0).prompts_received()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(second.status(), JobStatus::Running, "not started while pending");
    env.station.cancel(&env.account, &second.id).await.unwrap().unwrap();
    let second = env.wait_terminal(&second.id, 10).await;
    assert_eq!(second.status(), JobStatus::Cancelled);
    let q = client.queue().await.unwrap();
    assert!(!q.pending.contains(&prompt), "deleted from the backend queue: {q:?}");
    // The first job is untouched by the other's cancellation.
    let first = env.wait_terminal(&first.id, 20).await;
    assert_eq!(first.status(), JobStatus::Succeeded, "error: {:?}", first.error);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.history(&prompt).await.unwrap().is_none(), "the cancelled prompt never ran");
    let q = client.queue().await.unwrap();
    assert!(!q.running.contains(&prompt) && !q.pending.contains(&prompt));
    assert_eq!(env.fake(0).prompts_received(), 2);
    env.stop().await;
}

/// A backend configured for two prompts gets two jobs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backend_slots_are_used() {
    let env = setup(testing::sqlite().await, Setup::default()).await;
    let image = env.upload().await;
    let first = env.submit("slow-upscale", json!({"image": image, "steps": 20, "step_ms": 50})).await;
    env.wait_for(&first.id, 10, "running", |r| r.status() == JobStatus::Running).await;
    let second = env.submit("upscale", json!({"image": image})).await;
    // The second slot is free, so it is sent while the first still runs (≈ 1 s).
    let row = env.wait_for(&second.id, 10, "dispatched", |r| r.status() != JobStatus::Queued).await;
    assert_ne!(row.status(), JobStatus::Succeeded);
    assert_eq!(env.job(&first.id).await.status(), JobStatus::Running, "second job waited for the first");
    for id in [&first.id, &second.id] {
        assert_eq!(env.wait_terminal(id, 20).await.status(), JobStatus::Succeeded);
    }
    assert_eq!(env.fake(0).prompts_received(), 2);
    env.stop().await;
}

async fn cancel_running_job_interrupts_backend(db: TestDb) {
    let env = setup(db, Setup::default()).await;
    let mut rx = env.station.bus.subscribe();
    let image = env.upload().await;
    let row = env.submit("slow-upscale", json!({"image": image, "steps": 200, "step_ms": 30})).await;
    let row = env.wait_for(&row.id, 10, "running", |r| r.status() == JobStatus::Running).await;
    let prompt = row.remote_id.clone().unwrap();
    let asked = Instant::now();
    env.station.cancel(&env.account, &row.id).await.unwrap().unwrap();
    let row = env.wait_terminal(&row.id, 10).await;
    assert_eq!(row.status(), JobStatus::Cancelled, "error: {:?}", row.error);
    // The heartbeat relays cancellation every lease/3 (≈ 0.7 s here).
    assert!(asked.elapsed() < Duration::from_secs(5), "cancelled promptly");
    assert!(row.output_ids().is_empty());
    // ComfyUI stopped the prompt: its history records an interruption, long
    // before 200 steps × 30 ms could have completed.
    let client = inspect(env.fake(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    let entry = loop {
        if let Some(e) = client.history(&prompt).await.unwrap() {
            break e;
        }
        assert!(Instant::now() < deadline, "no history for the interrupted prompt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(entry.interrupted().is_some(), "history shows the interruption: {entry:?}");
    assert!(entry.output_images().is_empty(), "no outputs from an interrupted prompt");
    assert_eq!(env.fake(0).prompts_received(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = drain(&mut rx, &row.id);
    assert_eq!(statuses_of(&events).last(), Some(&JobStatus::Cancelled));
    assert!(!events.iter().any(|e| matches!(e, JobEvent::Result { .. })));
    env.stop().await;
}

async fn dropped_websocket_is_reconciled(db: TestDb) {
    let env = setup(db, Setup::default()).await;
    let mut rx = env.station.bus.subscribe();
    let image = env.upload().await;
    let row = env.submit("slow-upscale", json!({"image": image, "steps": 15, "step_ms": 40})).await;
    env.wait_for(&row.id, 10, "running", |r| r.status() == JobStatus::Running).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.fake(0).drop_websockets();
    assert_eq!(env.fake(0).open_websockets(), 0);
    let row = env.wait_terminal(&row.id, 20).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
    assert_doubled(&env.output(&row).await);
    assert_eq!(env.fake(0).prompts_received(), 1, "followed, not resubmitted");
    assert_eq!(row.attempts, 1);
    assert_eq!(env.fake(0).open_websockets(), 1, "the executor reconnected");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let progress = progress_of(&drain(&mut rx, &row.id));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress never goes back across the gap: {progress:?}");
    assert_eq!(progress.last().copied(), Some(1.0));
    env.stop().await;
}

async fn restarted_backend_gets_exactly_one_resubmission(db: TestDb) {
    let env = setup(db, Setup::default()).await;
    let image = env.upload().await;
    let row = env.submit("slow-upscale", json!({"image": image, "steps": 15, "step_ms": 40})).await;
    let first = env.wait_for(&row.id, 10, "running", |r| r.status() == JobStatus::Running).await;
    let first_prompt = first.remote_id.clone().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The counter lives outside what a restart forgets.
    env.fake(0).restart();
    let row = env.wait_terminal(&row.id, 30).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
    assert_doubled(&env.output(&row).await);
    assert_eq!(env.fake(0).prompts_received(), 2, "exactly one resubmission");
    assert_eq!(row.attempts, 2);
    assert_ne!(row.remote_id.as_deref(), Some(first_prompt.as_str()), "a fresh prompt id");
    assert_eq!(row.backend.as_deref(), Some("b0"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.fake(0).prompts_received(), 2, "nothing ran a third time");
    env.stop().await;
}

async fn dead_backend_fails_over_to_another(db: TestDb) {
    // Health checks are far apart: the executor itself must notice the
    // refused connection and move the job.
    let env =
        setup(db, Setup { slots: vec![1, 1], health_every: Duration::from_secs(600), ..Default::default() }).await;
    env.fake(0).refuse_connections(true).await;
    let image = env.upload().await;
    let row = env.submit("upscale", json!({"image": image, "upscale_method": "nearest-exact"})).await;
    let row = env.wait_terminal(&row.id, 20).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
    assert_eq!(row.backend.as_deref(), Some("b1"));
    assert_doubled(&env.output(&row).await);
    assert_eq!(env.fake(1).prompts_received(), 1);
    assert_eq!(env.fake(0).prompts_received(), 0);
    let s = env.comfy.statuses();
    assert!(!s[0].healthy, "the dead backend is out of service: {s:?}");
    assert!(s[0].last_error.is_some());
    env.stop().await;
}

async fn resumed_job_still_running_is_followed_not_resubmitted(db: TestDb) {
    let mut env = setup(db, Setup { workers: false, ..Default::default() }).await;
    let mut rx = env.station.bus.subscribe();
    let image = env.upload().await;
    let job = env.submit("slow-upscale", json!({"image": image, "steps": 60, "step_ms": 40})).await;
    let prompt = env.crashed_submission(&job).await;
    env.workers = Some(Workers::start(&env.station));
    // The new process shows the job as running again, though ComfyUI sends
    // the prompt's events to the dead process's client id.
    let resumed =
        env.wait_for(&job.id, 10, "resumed", |r| matches!(r.status(), JobStatus::Running | JobStatus::Succeeded)).await;
    assert_eq!(resumed.status(), JobStatus::Running);
    let row = env.wait_terminal(&job.id, 20).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
    assert_doubled(&env.output(&row).await);
    assert_eq!(env.fake(0).prompts_received(), 1, "reconciled, not resubmitted");
    assert_eq!(row.attempts, 1);
    assert_eq!(row.remote_id.as_deref(), Some(prompt.as_str()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = drain(&mut rx, &row.id);
    assert_eq!(statuses_of(&events).last(), Some(&JobStatus::Succeeded));
    let results = events.iter().filter(|e| matches!(e, JobEvent::Result { .. })).count();
    assert_eq!(results, 1);
    env.stop().await;
}

async fn resumed_job_finished_meanwhile_is_collected(db: TestDb) {
    let mut env = setup(db, Setup { workers: false, ..Default::default() }).await;
    let image = env.upload().await;
    let job = env.submit("slow-upscale", json!({"image": image, "steps": 2, "step_ms": 10})).await;
    let prompt = env.crashed_submission(&job).await;
    env.wait_backend_done(&prompt).await;
    env.workers = Some(Workers::start(&env.station));
    let row = env.wait_terminal(&job.id, 20).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
    assert_doubled(&env.output(&row).await);
    assert_eq!(env.fake(0).prompts_received(), 1, "outputs collected from history");
    assert_eq!(row.attempts, 1);
    env.stop().await;
}

async fn resumed_job_failed_meanwhile_reports_the_node_error(db: TestDb) {
    let mut env = setup(db, Setup { workers: false, ..Default::default() }).await;
    env.fake(0).fail_node("ImageScaleBy", "boom");
    let image = env.upload().await;
    let job = env.submit("slow-upscale", json!({"image": image, "steps": 2, "step_ms": 10})).await;
    let prompt = env.crashed_submission(&job).await;
    assert!(env.wait_backend_done(&prompt).await.execution_error().is_some());
    env.workers = Some(Workers::start(&env.station));
    let row = env.wait_terminal(&job.id, 20).await;
    assert_eq!(row.status(), JobStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("execution_error"));
    assert_eq!(row.error.as_deref(), Some("ImageScaleBy failed: boom"));
    assert_eq!(env.fake(0).prompts_received(), 1, "a failed run is not repeated");
    env.stop().await;
}

/// Graceful shutdown must leave prompts running for the next process to
/// resume. Racy by nature of the bug, so it tries several jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_running_prompts_alone() {
    let mut env = setup(testing::sqlite().await, Setup::default()).await;
    let image = env.upload().await;
    for round in 0..5 {
        // Different steps each round: ComfyUI's cache would skip a repeat.
        let params = json!({"image": image, "steps": 40 + round, "step_ms": 40});
        let job = env.submit("slow-upscale", params).await;
        let row = env.wait_for(&job.id, 10, "running", |r| r.status() == JobStatus::Running).await;
        let prompt = row.remote_id.clone().unwrap();
        env.workers.take().unwrap().shutdown().await;
        let row = env.job(&job.id).await;
        assert_eq!(row.status(), JobStatus::Queued, "round {round}: left for another process");
        let entry = env.wait_backend_done(&prompt).await;
        assert!(entry.interrupted().is_none(), "round {round}: shutdown interrupted the prompt");
        env.workers = Some(Workers::start(&env.station));
        let row = env.wait_terminal(&job.id, 20).await;
        assert_eq!(row.status(), JobStatus::Succeeded, "round {round}: {:?}", row.error);
    }
    env.stop().await;
}

async fn job_timeout_interrupts_the_backend(db: TestDb) {
    let env = setup(db, Setup { job_timeout_s: 1, ..Default::default() }).await;
    let image = env.upload().await;
    let row = env.submit("slow-upscale", json!({"image": image, "steps": 200, "step_ms": 30})).await;
    let row = env.wait_terminal(&row.id, 10).await;
    assert_eq!(row.status(), JobStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("timeout"), "error: {:?}", row.error);
    let prompt = row.remote_id.clone().unwrap();
    let client = inspect(env.fake(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    let entry = loop {
        if let Some(e) = client.history(&prompt).await.unwrap() {
            break e;
        }
        assert!(Instant::now() < deadline, "the timed-out prompt kept running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(entry.interrupted().is_some(), "{entry:?}");
    // The slot came back: another job runs.
    let next = env.submit("upscale", json!({"image": image, "upscale_method": "nearest-exact"})).await;
    let next = env.wait_terminal(&next.id, 10).await;
    assert_eq!(next.status(), JobStatus::Succeeded, "error: {:?}", next.error);
    env.stop().await;
}

/// A backend that dies mid-job is waited for (it may come back with the
/// result) for the executor's 30 s grace, then the job runs elsewhere. Slow by
/// nature, so SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_job_moves_it_to_another() {
    let env = setup(testing::sqlite().await, Setup { slots: vec![1, 1], ..Default::default() }).await;
    let image = env.upload().await;
    let row = env.submit("slow-upscale", json!({"image": image, "steps": 40, "step_ms": 40})).await;
    let row = env.wait_for(&row.id, 10, "running", |r| r.status() == JobStatus::Running).await;
    assert_eq!(row.backend.as_deref(), Some("b0"), "first of equally loaded backends");
    env.fake(0).refuse_connections(true).await;
    let row = env.wait_terminal(&row.id, 60).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
    assert_eq!(row.backend.as_deref(), Some("b1"));
    assert_eq!(row.attempts, 2);
    assert_doubled(&env.output(&row).await);
    assert_eq!(env.fake(0).prompts_received(), 1);
    assert_eq!(env.fake(1).prompts_received(), 1);
    assert!(!env.comfy.statuses()[0].healthy);
    env.stop().await;
}

async fn backend_without_node_gets_no_jobs(db: TestDb) {
    let lacking = FakeComfy::start(FakeOptions::default()).await;
    lacking.set_missing_nodes(&["ImageScaleBy"]);
    let able = FakeComfy::start(FakeOptions::default()).await;
    let env = setup_with(db, Setup { slots: vec![4, 1], ..Default::default() }, vec![lacking, able]).await;
    // b0 is the least loaded and has more slots, yet cannot run upscale.
    let caps = env.comfy.capabilities(&[env.station.tools.get("upscale").unwrap()]);
    assert_eq!(caps[0].0, "b0");
    let why = caps[0].1[0].1.clone().expect("b0 cannot run upscale");
    assert!(why.contains("ImageScaleBy"), "{why}");
    assert_eq!(caps[1].1[0].1, None, "b1 can");
    let image = env.upload().await;
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(env.submit("upscale", json!({"image": image, "upscale_method": "nearest-exact"})).await.id);
    }
    // A tool b0 can run goes there (least loaded, first on ties): b0 is in
    // service, it was only never chosen for upscale.
    let inv = env.submit("invert", json!({"image": image})).await;
    for id in &ids {
        let row = env.wait_terminal(id, 30).await;
        assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
        assert_eq!(row.backend.as_deref(), Some("b1"));
    }
    let inv = env.wait_terminal(&inv.id, 20).await;
    assert_eq!(inv.status(), JobStatus::Succeeded, "error: {:?}", inv.error);
    assert_eq!(inv.backend.as_deref(), Some("b0"));
    assert_eq!(env.fake(1).prompts_received(), 3);
    assert_eq!(env.fake(0).prompts_received(), 1, "only the invert job");
    let sent = env.fake(0).last_prompt().unwrap();
    assert_eq!(sent["prompt"]["2"]["class_type"], json!("ImageInvert"));
    env.stop().await;
}

async fn no_capable_backend_fails_with_no_backend(db: TestDb) {
    let a = FakeComfy::start(FakeOptions::default()).await;
    let b = FakeComfy::start(FakeOptions::default()).await;
    a.set_missing_nodes(&["ImageScaleBy"]);
    b.set_missing_nodes(&["ImageScaleBy", "SaveImage"]);
    let env = setup_with(db, Setup { slots: vec![1, 1], ..Default::default() }, vec![a, b]).await;
    let image = env.upload().await;
    let row = env.submit("upscale", json!({"image": image})).await;
    let row = env.wait_terminal(&row.id, 20).await;
    assert_eq!(row.status(), JobStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("no_backend"), "error: {:?}", row.error);
    let error = row.error.unwrap();
    assert!(error.contains("upscale"), "names the tool: {error}");
    assert!(error.contains("b0") && error.contains("b1"), "says why per backend: {error}");
    assert!(error.contains("ImageScaleBy"), "names the missing node: {error}");
    assert_eq!(env.fake(0).prompts_received() + env.fake(1).prompts_received(), 0);
    env.stop().await;
}

/// A LoRA tool's prompt is resolved at submission and its LoraLoader nodes are
/// injected after the checkpoint loader; only backends holding the LoRA file get
/// the job, and a file no backend holds fails the job naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_tool_gets_loader_nodes_on_a_backend_with_the_file() {
    for db in testing::all().await {
        let kind = db.kind;
        // The built-in tool only offers its stock checkpoint; the fakes are given that file.
        let ckpt = || vec!["v1-5-pruned-emaonly.safetensors".to_owned()];
        let lacking =
            FakeComfy::start(FakeOptions { loras: vec![], checkpoints: ckpt(), ..FakeOptions::default() }).await;
        let able = FakeComfy::start(FakeOptions { checkpoints: ckpt(), ..FakeOptions::default() }).await;
        let env = setup_with(db, Setup { slots: vec![4, 1], ..Default::default() }, vec![lacking, able]).await;
        let report = env
            .station
            .loras()
            .import(
                r#"[
                  {"slug": "ink", "trigger_words": ["ink sketch"], "default_weight": 0.7, "checkpoint": "SD1.5",
                   "filename": "station-test-lora.safetensors", "visibility": "public"},
                  {"slug": "ghost", "trigger_words": ["ghost"], "checkpoint": "SD1.5",
                   "filename": "ghost.safetensors", "visibility": "public"}
                ]"#,
                &station_core::audit::Actor::operator("test"),
            )
            .await
            .unwrap();
        assert_eq!(report.created.len(), 2, "{kind}: {report:?}");

        let params = json!({"prompt": "an ink sketch! of a cat", "steps": 2, "width": 64, "height": 64});
        let row = env.submit("txt2img-sd15", params).await;
        let row = env.wait_terminal(&row.id, 30).await;
        assert_eq!(row.status(), JobStatus::Succeeded, "{kind}: error {:?}", row.error);
        assert_eq!(row.backend.as_deref(), Some("b1"), "{kind}: b0 lacks the LoRA file");
        assert_eq!(env.fake(0).prompts_received(), 0, "{kind}");
        let stored = row.params_json();
        assert_eq!(stored["prompt"], "an <lora:ink:0.9>ink sketch of a cat", "{kind}");
        assert_eq!(
            stored["_loras"],
            json!([{"slug": "ink", "filename": "station-test-lora.safetensors", "weight": 0.9}])
        );

        let sent = env.fake(1).last_prompt().unwrap()["prompt"].clone();
        let loaders: Vec<(&String, &Value)> =
            sent.as_object().unwrap().iter().filter(|(_, n)| n["class_type"] == "LoraLoader").collect();
        assert_eq!(loaders.len(), 1, "{kind}: {sent}");
        let (id, loader) = loaders[0];
        assert_eq!(loader["inputs"]["lora_name"], "station-test-lora.safetensors");
        assert_eq!(loader["inputs"]["strength_model"], json!(0.9));
        assert_eq!(loader["inputs"]["strength_clip"], json!(0.9));
        assert_eq!(loader["inputs"]["model"], json!(["4", 0]), "{kind}: reads the checkpoint loader");
        assert_eq!(sent["3"]["inputs"]["model"], json!([id, 0]), "{kind}: the sampler uses the LoRA's model");
        assert_eq!(sent["6"]["inputs"]["clip"], json!([id, 1]), "{kind}: the prompt uses the LoRA's CLIP");
        assert_eq!(sent["7"]["inputs"]["clip"], json!([id, 1]));
        assert_eq!(sent["8"]["inputs"]["vae"], json!(["4", 2]), "{kind}: the VAE stays on the checkpoint");
        assert_eq!(sent["4"]["inputs"]["ckpt_name"], "v1-5-pruned-emaonly.safetensors");
        assert_eq!(sent["6"]["inputs"]["text"], "an ink sketch of a cat", "{kind}: tags are not sent as text");

        // No backend has the ghost LoRA's file: the job fails, naming it.
        let params = json!({"prompt": "a ghost", "steps": 2});
        let row = env.submit("txt2img-sd15", params).await;
        let row = env.wait_terminal(&row.id, 30).await;
        assert_eq!(row.status(), JobStatus::Failed, "{kind}");
        assert_eq!(row.error_code.as_deref(), Some("no_backend"), "{kind}: {:?}", row.error);
        assert!(row.error.unwrap().contains("ghost.safetensors"), "{kind}");
        assert_eq!(env.fake(1).prompts_received(), 1, "{kind}");
        env.stop().await;
    }
}

/// A transient failure must not forget the prompt: the job's backend goes
/// away while our prompt waits in its queue, the job is retried on another
/// backend, and when the first backend comes back still holding the prompt
/// the prompt is deleted there instead of also running. SQLite only (the
/// store part is covered on both databases in station-store's queue tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_job_does_not_also_run_on_the_backend_that_came_back() {
    let env = setup(testing::sqlite().await, Setup { slots: vec![1, 1], ..Default::default() }).await;
    env.comfy.set_unreachable_grace(Duration::from_millis(500));
    // Another client keeps b0 busy for ~7 s, so the prompt Station sends there waits in its queue.
    let tool = env.station.tools.get("slow-upscale").unwrap();
    let client = inspect(env.fake(0));
    let up = client.upload_image(test_png(), "other.png").await.unwrap();
    let uploaded = HashMap::from([("image".to_string(), up.load_image_name())]);
    let params = json!({"image": "x", "scale_by": 2, "upscale_method": "nearest-exact", "steps": 150, "step_ms": 50});
    let graph = station_tools::bind_workflow(&tool, params.as_object().unwrap(), &uploaded).unwrap();
    let blocker = uuid::Uuid::new_v4().to_string();
    let submit = ComfySubmit {
        prompt_id: blocker.clone(),
        graph: graph.as_object().unwrap().clone(),
        client_id: "another-client".into(),
        preview_method: None,
    };
    client.submit(&submit).await.unwrap();
    let image = env.upload().await;
    let row = env.submit("upscale", json!({"image": image, "upscale_method": "nearest-exact"})).await;
    let first = env.wait_for(&row.id, 10, "sent to b0", |r| r.remote_id.is_some()).await;
    assert_eq!(first.backend.as_deref(), Some("b0"), "first of two idle backends");
    let orphan = first.remote_id.clone().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queue = client.queue().await.unwrap();
    assert!(queue.pending.contains(&orphan), "our prompt waits behind the blocker: {queue:?}");
    // b0 goes away with our prompt in its queue; after the grace the job is retried on b1.
    env.fake(0).refuse_connections(true).await;
    let row = env.wait_terminal(&row.id, 20).await;
    assert_eq!(row.status(), JobStatus::Succeeded, "error: {:?}", row.error);
    assert_eq!(row.backend.as_deref(), Some("b1"));
    assert_doubled(&env.output(&row).await);
    assert_eq!(env.comfy.orphaned_prompts().await, vec![("b0".to_string(), orphan.clone())]);
    // b0 comes back still holding the prompt: the next health check deletes it.
    env.fake(0).refuse_connections(false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.comfy.orphaned_prompts().await.is_empty() {
        assert!(Instant::now() < deadline, "orphaned prompt never cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queue = client.queue().await.unwrap();
    assert!(!queue.pending.contains(&orphan), "deleted from b0's queue: {queue:?}");
    // Once the blocker is done, b0 has run nothing else.
    env.wait_backend_done(&blocker).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.history(&orphan).await.unwrap().is_none(), "the orphaned prompt ran on b0 as well");
    let queue = client.queue().await.unwrap();
    assert!(queue.pending.is_empty() && queue.running.is_empty(), "{queue:?}");
    assert_eq!(env.fake(0).prompts_received(), 2, "blocker and our first submission");
    assert_eq!(env.fake(1).prompts_received(), 1);
    assert_eq!(row.attempts, 2);
    env.stop().await;
}

/// Two Station processes on one database and one backend configured for one
/// prompt at a time: each process alone would send it one job, together two.
/// The backend's capacity is counted in the database, so the fake never
/// holds two prompts at once, and every job still runs exactly once.
async fn two_processes_share_one_backends_capacity(db: TestDb) {
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let first = setup_with(db, Setup { slots: vec![1], ..Setup::default() }, vec![fake]).await;
    // The second process: its own Station, executor and workers on the same
    // database, the same backend and the same (shared) media folder.
    let dir = tempfile::tempdir().unwrap();
    let kind = first.db.kind;
    let mut config = (*first.station.config).clone();
    config.data_dir = dir.path().to_path_buf();
    install_tools(&config.tools_dir());
    let (second, errors) = Station::with_store(config, first.db.store.clone()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let spec = BackendSpec { name: "b0".into(), url: first.fake(0).url(), max_concurrent: 1, tags: vec![] };
    let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
    comfy.start_health_checks(Duration::from_millis(200), second.wake.clone()).await;
    second.register_executor(comfy.clone());
    let workers = Workers::start(&second);

    let image = first.upload().await;
    let mut jobs = vec![];
    for _ in 0..6 {
        jobs.push(first.submit("slow-upscale", json!({"image": image, "steps": 4, "step_ms": 40})).await);
    }
    let mut ran_on = vec![];
    for job in &jobs {
        let row = first.wait_terminal(&job.id, 60).await;
        assert_eq!(row.status(), JobStatus::Succeeded, "{kind}: {:?}", row.error);
        ran_on.push(row.backend.clone());
    }
    assert!(ran_on.iter().all(|b| b.as_deref() == Some("b0")), "{ran_on:?}");
    assert_eq!(first.fake(0).prompts_received(), 6, "{kind}: every job sent once");
    assert_eq!(first.fake(0).most_held(), 1, "{kind}: the backend held two prompts at once");
    workers.shutdown().await;
    comfy.shutdown();
    first.stop().await;
}
