//! Execution under faults, through the real core against the fake ComfyUI:
//! a worker paused past its lease (the core's fault-injection hooks stall
//! every loop of one `Workers`, as SIGSTOP would) must not touch what its
//! successor did — no media row, no remote cancel. On SQLite, and on
//! PostgreSQL when `STATION_TEST_POSTGRES_URL` is set.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Map, Value, json};
use station_comfyui::{BackendSpec, ComfyClient, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::faults::FaultPoint;
use station_core::{Config, Station, SubmitRequest, Workers};
use station_store::{AccountRow, JobRow, JobStatus};
use station_testkit::on_every_db;
use station_testkit::testing::TestDb;
use tokio::sync::{Notify, watch};

/// Plays a paused process: once worker `owner` reaches `arm_at`, it stalls at
/// every point of `stall` until [`Script::release`]. Every point any worker
/// reaches is recorded, so a test can wait for it.
struct Script {
    owner: Mutex<Option<String>>,
    arm_at: FaultPoint,
    stall: Vec<FaultPoint>,
    armed: AtomicBool,
    hits: Mutex<Vec<(FaultPoint, String, String)>>,
    changed: Notify,
    released: watch::Sender<bool>,
}

impl Script {
    fn install(station: &Station, arm_at: FaultPoint, stall: &[FaultPoint]) -> Arc<Script> {
        let script = Arc::new(Script {
            owner: Mutex::new(None),
            arm_at,
            stall: stall.to_vec(),
            armed: AtomicBool::new(false),
            hits: Mutex::new(vec![]),
            changed: Notify::new(),
            released: watch::channel(false).0,
        });
        let s = script.clone();
        station.faults.set_hook(Arc::new(move |point, owner, job| {
            let s = s.clone();
            let (owner, job) = (owner.to_string(), job.to_string());
            Box::pin(async move {
                let paused = s.owner.lock().unwrap().as_deref() == Some(owner.as_str());
                if paused && point == s.arm_at {
                    s.armed.store(true, Ordering::SeqCst);
                }
                s.hits.lock().unwrap().push((point, owner, job));
                s.changed.notify_waiters();
                if paused && s.armed.load(Ordering::SeqCst) && s.stall.contains(&point) {
                    let mut rx = s.released.subscribe();
                    let _ = rx.wait_for(|r| *r).await;
                }
            })
        }));
        script
    }

    fn pause(&self, owner: &str) {
        *self.owner.lock().unwrap() = Some(owner.to_string());
    }

    fn release(&self) {
        self.released.send_replace(true);
    }

    /// Waits until worker `owner` reached `point` for `job`.
    async fn reached(&self, point: FaultPoint, owner: &str, job: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let changed = self.changed.notified();
            if self.hits.lock().unwrap().iter().any(|(p, o, j)| *p == point && o == owner && j == job) {
                return;
            }
            assert!(Instant::now() < deadline, "worker {owner} never reached {point:?} for {job}");
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
        }
    }
}

struct Env {
    station: Station,
    comfy: Arc<ComfyExecutor>,
    account: AccountRow,
    fake: FakeComfy,
    others: Vec<FakeComfy>,
    db: TestDb,
    _dir: tempfile::TempDir,
    config: Config,
}

async fn setup(db: TestDb, job_timeout_s: u64) -> Env {
    setup_with(db, job_timeout_s, &[2]).await
}

/// A Station over one fake per entry of `slots` (its `max_concurrent`),
/// named `b0`, `b1`, …
async fn setup_with(db: TestDb, job_timeout_s: u64, slots: &[usize]) -> Env {
    setup_cfg(db, slots, |c| c.queue.job_timeout_seconds = job_timeout_s).await
}

/// [`setup_with`], with the configuration adjusted by `tweak`.
async fn setup_cfg(db: TestDb, slots: &[usize], tweak: impl FnOnce(&mut Config)) -> Env {
    let mut fakes = vec![];
    for _ in slots {
        fakes.push(FakeComfy::start(FakeOptions::default()).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    config.queue.lease_seconds = 2;
    config.queue.retry_base_ms = 50;
    config.queue.poll_ms = 50;
    tweak(&mut config);
    install_slow_upscale(&config.tools_dir());
    let specs: Vec<BackendSpec> = fakes
        .iter()
        .zip(slots)
        .enumerate()
        .map(|(i, (f, n))| BackendSpec { name: format!("b{i}"), url: f.url(), max_concurrent: *n, tags: vec![] })
        .collect();
    let (station, comfy) = open(&db, &config, specs).await;
    let account = station.account("local", "t", "T").await.unwrap();
    let fake = fakes.remove(0);
    Env { station, comfy, account, fake, others: fakes, db, _dir: dir, config }
}

/// A Station process on `db`: the core and the ComfyUI pool (no workers).
async fn open(db: &TestDb, config: &Config, specs: Vec<BackendSpec>) -> (Station, Arc<ComfyExecutor>) {
    let (station, errors) = Station::with_store(config.clone(), db.store.clone()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let comfy = ComfyExecutor::new(specs, "none").unwrap();
    comfy.start_health_checks(Duration::from_millis(200), station.wake.clone()).await;
    station.register_executor(comfy.clone());
    (station, comfy)
}

fn install_slow_upscale(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let tool = json!({
        "id": "slow-upscale", "name": "Slow upscale", "category": "upscale", "service": "comfyui",
        "inputs": {
            "image": {"type": "image", "required": true, "primary": true},
            "steps": {"type": "integer", "default": 4, "min": 1, "max": 1000}
        },
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
                "2": {"class_type": "StationSteps", "inputs": {"image": ["1", 0], "steps": 4, "step_ms": 0}},
                "3": {"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact", "scale_by": 2.0}},
                "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "station-slow"}}
            },
            "bindings": {"image": ["1.inputs.image"], "steps": ["2.inputs.steps"]},
            "outputs": ["4"]
        }
    });
    std::fs::write(dir.join("slow-upscale.json"), tool.to_string()).unwrap();
}

fn test_png() -> Vec<u8> {
    let img = RgbImage::from_fn(4, 4, |x, y| Rgb([(60 * x) as u8, (60 * y) as u8, 200]));
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).unwrap();
    buf
}

impl Env {
    async fn submit(&self, steps: u64) -> JobRow {
        let m = self.station.media.put_image(test_png(), Some(&self.account.id), None, "input").await.unwrap();
        let params: Map<String, Value> =
            json!({"image": format!("media:{}", m.id), "steps": steps}).as_object().unwrap().clone();
        self.station
            .submit(&self.account, SubmitRequest { tool: "slow-upscale".into(), params, ..Default::default() })
            .await
            .unwrap()
    }

    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&JobRow) -> bool) -> JobRow {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = self.db.store.get_job(id).await.unwrap().unwrap();
            if done(&row) {
                return row;
            }
            assert!(Instant::now() < deadline, "job {id} not {what}: {row:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every output of the job has its media row and its bytes, and the job
    /// has no other output rows.
    async fn assert_outputs_downloadable(&self, row: &JobRow) {
        let ids = row.output_ids();
        assert_eq!(ids.len(), 1, "{row:?}");
        for id in &ids {
            let (media, bytes) = self
                .station
                .media
                .get(id, Some(&self.account))
                .await
                .unwrap_or_else(|e| panic!("output {id} of the finished job cannot be downloaded: {e}"));
            assert_eq!(media.job_id.as_deref(), Some(row.id.as_str()));
            assert_eq!(image::load_from_memory(&bytes).unwrap().to_rgb8().dimensions(), (8, 8));
        }
        let rows = self.db.store.media_for_job(&row.id, "output").await.unwrap();
        let stored: Vec<String> = rows.into_iter().map(|m| m.id).collect();
        assert_eq!(stored, ids, "output media rows of the job are exactly its outputs");
    }
}

on_every_db!(
    a_paused_worker_leaves_its_successors_outputs_alone,
    a_stale_timeout_does_not_interrupt_the_successor,
    an_orphaned_prompt_is_cancelled_by_the_process_that_next_sees_its_backend,
    a_backend_full_of_other_clients_prompts_gets_no_more_than_its_slots,
    a_job_waiting_on_a_busy_backend_moves_to_an_idle_one_and_only_running_time_counts,
);

/// Worker A runs the job, then pauses (between execution and finish, its
/// heartbeat and claims stalled too) past its lease; worker B takes the job
/// over, collects the result from the backend and finishes it. When A wakes
/// it must neither delete B's output rows nor store its own.
async fn a_paused_worker_leaves_its_successors_outputs_alone(db: TestDb) {
    let env = setup(db, 600).await;
    let script = Script::install(
        &env.station,
        FaultPoint::AfterExecute,
        &[FaultPoint::AfterExecute, FaultPoint::Heartbeat, FaultPoint::Claim],
    );
    let a = Workers::start(&env.station);
    script.pause(a.owner());
    let job = env.submit(2).await;
    script.reached(FaultPoint::AfterExecute, a.owner(), &job.id).await;

    let b = Workers::start(&env.station);
    let done = env.wait_for(&job.id, "finished by B", |r| r.status().is_terminal()).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{:?}", done.error);
    assert_eq!(env.fake.prompts_received(), 1, "B collected A's prompt instead of running it again");
    env.assert_outputs_downloadable(&done).await;

    // A wakes up and carries on with its stale result.
    script.release();
    script.reached(FaultPoint::JobDone, a.owner(), &job.id).await;
    let after = env.db.store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(after.outputs, done.outputs, "the outcome stays B's");
    assert_eq!(after.status(), JobStatus::Succeeded);
    env.assert_outputs_downloadable(&after).await;
    let audit = env.station.audit_points().await.unwrap();
    assert!(audit.is_empty(), "{audit:?}");
    b.shutdown().await;
    a.shutdown().await;
    env.comfy.shutdown();
}

/// Worker A's job timer fires after B took the job over and follows the
/// same prompt: A must not cancel it on the backend (B's run would fail
/// "interrupted on the backend"), nor record its timeout.
async fn a_stale_timeout_does_not_interrupt_the_successor(db: TestDb) {
    let env = setup(db, 6).await;
    // 40 steps of 300 ms: still running when A's 6 s timer fires.
    env.fake.set_step_delay(300);
    let script = Script::install(
        &env.station,
        FaultPoint::AfterPost,
        &[FaultPoint::Heartbeat, FaultPoint::Claim, FaultPoint::Timeout],
    );
    let a = Workers::start(&env.station);
    script.pause(a.owner());
    let job = env.submit(40).await;
    script.reached(FaultPoint::AfterPost, a.owner(), &job.id).await;

    let b = Workers::start(&env.station);
    let b_owner = b.owner().to_string();
    env.wait_for(&job.id, "resumed by B", |r| r.lease_owner.as_deref() == Some(b_owner.as_str())).await;
    script.reached(FaultPoint::Timeout, a.owner(), &job.id).await;
    script.release();
    script.reached(FaultPoint::JobDone, a.owner(), &job.id).await;
    // Let B's run end quickly now.
    env.fake.set_step_delay(0);
    let done = env.wait_for(&job.id, "finished", |r| r.status().is_terminal()).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{:?} {:?}", done.error_code, done.error);
    let prompt = done.remote_id.clone().unwrap();
    let client = ComfyClient::with_timeout(&env.fake.url(), Duration::from_secs(5)).unwrap();
    let entry = client.history(&prompt).await.unwrap().expect("the prompt finished on the backend");
    assert!(entry.interrupted().is_none(), "the stale timer interrupted the successor's prompt: {entry:?}");
    assert_eq!(env.fake.prompts_received(), 1);
    env.assert_outputs_downloadable(&done).await;
    b.shutdown().await;
    a.shutdown().await;
    env.comfy.shutdown();
}

/// The job's prompt waits in b0's queue (behind another client's prompt)
/// when b0 stops answering; the job runs on b1 instead. Station restarts
/// before b0 is back: the new process, which never saw the first prompt,
/// must still delete it from b0's queue so the work is not done twice.
async fn an_orphaned_prompt_is_cancelled_by_the_process_that_next_sees_its_backend(db: TestDb) {
    // b0 takes two prompts; b1 cannot run the tool until the job waits on b0.
    let env = setup_with(db, 600, &[2, 1]).await;
    env.others[0].set_missing_nodes(&["StationSteps"]);
    env.comfy.check_all().await;
    env.comfy.set_unreachable_grace(Duration::from_millis(500));
    let b0 = ComfyClient::with_timeout(&env.fake.url(), Duration::from_secs(5)).unwrap();
    // Another client keeps b0 busy for ~8 s.
    let blocker = env.fake.enqueue_external(1, 2_000).remove(0);
    let workers = Workers::start(&env.station);
    let job = env.submit(2).await;
    let first = env.wait_for(&job.id, "sent to b0", |r| r.remote_id.is_some()).await;
    assert_eq!(first.backend.as_deref(), Some("b0"), "the only backend able to run it");
    let orphan = first.remote_id.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b0.queue().await.unwrap().pending.contains(&orphan) {
        assert!(Instant::now() < deadline, "our prompt never waited behind the blocker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // b0 stops answering; after the grace the job runs on b1.
    env.others[0].set_missing_nodes::<&str>(&[]);
    env.fake.refuse_connections(true).await;
    let done = env.wait_for(&job.id, "finished", |r| r.status().is_terminal()).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{:?}", done.error);
    assert_eq!(done.backend.as_deref(), Some("b1"));
    assert_eq!(env.comfy.orphaned_prompts().await, vec![("b0".to_string(), orphan.clone())]);

    // Station restarts (a new process: nothing in memory survives).
    workers.shutdown().await;
    env.comfy.shutdown();
    let specs = vec![
        BackendSpec { name: "b0".into(), url: env.fake.url(), max_concurrent: 2, tags: vec![] },
        BackendSpec { name: "b1".into(), url: env.others[0].url(), max_concurrent: 1, tags: vec![] },
    ];
    let (station, comfy) = open(&env.db, &env.config, specs).await;
    let workers = Workers::start(&station);

    // b0 comes back still holding the prompt: the new process deletes it.
    env.fake.refuse_connections(false).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !comfy.orphaned_prompts().await.is_empty() {
        assert!(Instant::now() < deadline, "the orphaned prompt was never cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queue = b0.queue().await.unwrap();
    assert!(!queue.pending.contains(&orphan), "deleted from b0's queue: {queue:?}");
    // Once the blocker is done, b0 has run nothing else.
    let deadline = Instant::now() + Duration::from_secs(30);
    while b0.history(&blocker).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the blocker never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queue = b0.queue().await.unwrap();
    assert!(queue.pending.is_empty() && queue.running.is_empty(), "{queue:?}");
    assert!(b0.history(&orphan).await.unwrap().is_none(), "the orphaned prompt ran on b0 as well");
    workers.shutdown().await;
    comfy.shutdown();
}

/// Waits until `cond` holds, failing with `what` after a generous deadline.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// No overcommit: b0 may hold two prompts and another client already has
/// one running there, so Station sends one job (which waits behind the
/// other client's prompt, "waiting for a GPU (1 ahead)") and keeps the
/// second in its own fair queue until b0 has room again.
async fn a_backend_full_of_other_clients_prompts_gets_no_more_than_its_slots(db: TestDb) {
    let env = setup_with(db, 600, &[2]).await;
    let b0 = ComfyClient::with_timeout(&env.fake.url(), Duration::from_secs(5)).unwrap();
    // Another client's prompt runs for ~6 s (4 steps of 1.5 s).
    let blocker = env.fake.enqueue_external(1, 1_500).remove(0);
    eventually("the health check saw the other client's prompt", || async { env.comfy.statuses()[0].foreign == 1 })
        .await;
    let workers = Workers::start(&env.station);
    let first = env.submit(2).await;
    let second = env.submit(2).await;
    let waiting = env.wait_for(&first.id, "sent to b0", |r| r.remote_id.is_some()).await;
    let prompt = waiting.remote_id.clone().unwrap();
    // It waits in b0's own queue, behind the other client's prompt, and says so.
    let view = loop {
        let v = env.station.job_view(&first.id).await.unwrap().unwrap();
        if v.backend_ahead() == Some(1) || v.row.status().is_terminal() {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(view.row.status(), JobStatus::Dispatched, "waiting, not running: {:?}", view.row);
    assert_eq!(view.status_text(), "waiting for a GPU (1 ahead)");
    let queue = b0.queue().await.unwrap();
    assert!(queue.pending.contains(&prompt) && queue.running == vec![blocker.clone()], "{queue:?}");
    // While the other client's prompt runs, b0 holds two prompts: the second job stays in Station's queue.
    while b0.history(&blocker).await.unwrap().is_none() {
        let second_row = env.db.store.get_job(&second.id).await.unwrap().unwrap();
        assert_eq!(second_row.status(), JobStatus::Queued, "b0 was sent more than its slots: {second_row:?}");
        assert!(second_row.remote_id.is_none());
        assert_eq!(env.fake.prompts_received(), 1, "only one prompt sent while b0 is full");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in [&first.id, &second.id] {
        let done = env.wait_for(id, "finished", |r| r.status().is_terminal()).await;
        assert_eq!(done.status(), JobStatus::Succeeded, "{:?}", done.error);
        assert_eq!(done.attempts, 1, "{done:?}");
        assert_eq!(done.backend_ahead, None, "cleared once it ran");
        env.assert_outputs_downloadable(&done).await;
    }
    assert_eq!(env.fake.prompts_received(), 2);
    workers.shutdown().await;
    env.comfy.shutdown();
}

/// Two backends, b0 busy with another client's long prompt, b1 unable to
/// run the tool at first: the job is sent to b0 and waits there. Waiting is
/// not running — the 2 s job timeout does not fire while it waits; after
/// `queue.backend_wait_seconds` (4 s) the pending prompt is deleted from
/// b0's queue and the job moves on to b1 (able by then), where it runs.
async fn a_job_waiting_on_a_busy_backend_moves_to_an_idle_one_and_only_running_time_counts(db: TestDb) {
    let env = setup_cfg(db, &[2, 1], |c| {
        c.queue.job_timeout_seconds = 2;
        c.queue.backend_wait_seconds = 4;
    })
    .await;
    env.others[0].set_missing_nodes(&["StationSteps"]);
    env.comfy.check_all().await;
    let b0 = ComfyClient::with_timeout(&env.fake.url(), Duration::from_secs(5)).unwrap();
    // Another client keeps b0 busy for ~20 s.
    let blocker = env.fake.enqueue_external(1, 5_000).remove(0);
    let workers = Workers::start(&env.station);
    let job = env.submit(2).await;
    let sent = env.wait_for(&job.id, "sent to b0", |r| r.remote_id.is_some()).await;
    assert_eq!(sent.backend.as_deref(), Some("b0"));
    let prompt = sent.remote_id.clone().unwrap();
    eventually("the job shows its place on b0", || async {
        env.station.job_view(&job.id).await.unwrap().unwrap().backend_ahead() == Some(1)
    })
    .await;
    // Now b1 can run it too.
    env.others[0].set_missing_nodes::<&str>(&[]);
    let done = env.wait_for(&job.id, "finished", |r| r.status().is_terminal()).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "waiting must not count as running: {:?}", done.error);
    assert_eq!(done.backend.as_deref(), Some("b1"), "{done:?}");
    assert_ne!(done.remote_id.as_deref(), Some(prompt.as_str()));
    assert_eq!(done.attempts, 1, "moving a job that never started is not a failed attempt: {done:?}");
    assert_eq!(env.others[0].prompts_received(), 1);
    env.assert_outputs_downloadable(&done).await;
    // The waiting prompt was deleted from b0's queue (and the record of it removed).
    let queue = b0.queue().await.unwrap();
    assert!(!queue.pending.contains(&prompt) && !queue.running.contains(&prompt), "{queue:?}");
    eventually("the prompt to delete on b0 was processed", || async { env.comfy.orphaned_prompts().await.is_empty() })
        .await;
    assert!(b0.history(&prompt).await.unwrap().is_none(), "the moved prompt never ran on b0");
    assert!(queue.running.contains(&blocker) || b0.history(&blocker).await.unwrap().is_some());
    workers.shutdown().await;
    env.comfy.shutdown();
}
