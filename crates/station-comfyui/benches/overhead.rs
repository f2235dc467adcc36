//! What Station adds per job over talking to ComfyUI directly, and how job
//! throughput grows with the number of backends.
//!
//! Everything runs in one process against the in-repo fake ComfyUI
//! (`station-comfyui-fake`, output cache off so every prompt really runs):
//!
//! 1. **Direct**: the built-in `invert` workflow (LoadImage → ImageInvert →
//!    SaveImage on a 4×4 PNG) driven by hand through [`ComfyClient`] and
//!    [`run_prompt`]: upload, submit + follow on the websocket, download.
//! 2. **Station**: the same tool as a Station job — submit through the core,
//!    claimed by the workers, run by [`ComfyExecutor`], output stored in the
//!    media store of a SQLite-backed Station in a temporary folder — timed
//!    until the `succeeded` event (published after the outcome is committed).
//! 3. **Throughput**: with a fixed per-node delay in the fakes so the backend
//!    is the bottleneck, a burst of jobs drained by 1 backend and by 4
//!    (each `max_concurrent = 1`), next to the same prompts driven directly.
//! 4. **SQL per job**: the statements Station runs for one job and the time
//!    spent inside them, from sqlx's own per-statement tracing events.
//! 5. **End to end through the REST API** ([`e2e`]): the real HTTP server,
//!    driven as a client drives it (create, SSE until the result, download),
//!    against a direct ComfyUI client, alternating job by job; prints the ratio.
//!
//! Run with `cargo bench -p station-comfyui --bench overhead`. Knobs (env):
//! `BENCH_N` (jobs per latency series, default 200), `BENCH_JOBS` (jobs per
//! throughput burst, default 200), `BENCH_STEP_MS` (fake per-node delay for
//! the throughput part, default 20), `BENCH_ONLY` (`e2e`, `latency` or
//! `throughput`: run that part alone), `BENCH_COMFYUI_URL` (run the end-to-end
//! part against that ComfyUI server, e.g. a real one, instead of the fake).

#[path = "overhead/e2e.rs"]
mod e2e;

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Map, Value, json};
use station_comfyui::{BackendSocket, BackendSpec, ComfyClient, ComfyExecutor, RunOptions, run_prompt};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::{AccountRow, JobStatus};
use station_core::{Config, JobEvent, Station, SubmitRequest, Workers};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber, span};

/// Jobs not counted at the start of every latency series (connection set-up,
/// SQLite page cache, allocator warm-up).
const WARMUP: usize = 10;

/// Accounts the throughput burst is spread over. With the default
/// `per_user_running = 2`, 8 accounts allow 16 jobs in flight, more than the
/// 4 backend slots, so the per-user cap is never what limits the drain.
const ACCOUNTS: usize = 8;

/// Untimed pause between a direct run and a Station job in the latency series.
const SETTLE: Duration = Duration::from_millis(5);

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|e| panic!("environment variable {name}={v:?}: {e}")),
        Err(_) => default,
    }
}

/// The test picture every job inverts.
fn test_png() -> Vec<u8> {
    let img = RgbImage::from_fn(4, 4, |x, y| Rgb([(60 * x) as u8, (60 * y) as u8, 200]));
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).expect("encode test PNG");
    buf
}

/// The built-in `invert` tool's workflow, bound to an uploaded image name.
fn invert_graph(image: &str) -> Map<String, Value> {
    let graph = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "station-invert"}}
    });
    graph.as_object().expect("graph is an object").clone()
}

/// Latency samples in milliseconds.
#[derive(Default)]
struct Series(Vec<f64>);

impl Series {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len() as f64
    }

    fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.pct(50.0),
            self.pct(99.0),
            self.mean(),
            self.pct(100.0)
        )
    }
}

/// A fake ComfyUI server with its output cache off, so identical prompts run
/// every time as they do on a real server whose inputs change.
async fn fake(step_ms: u64) -> FakeComfy {
    let f = FakeComfy::start(FakeOptions { cache: false, ..Default::default() }).await;
    f.set_step_delay(step_ms);
    f
}

/// One hand-driven client per backend, set up the way the executor sets
/// up its own: one HTTP client and one websocket kept open.
struct Direct {
    client: ComfyClient,
    socket: BackendSocket,
    png: Vec<u8>,
    options: RunOptions,
}

/// Time spent in each step of one direct run.
struct DirectTimes {
    upload: Duration,
    run: Duration,
    view: Duration,
}

impl Direct {
    async fn connect(fake: &FakeComfy) -> Direct {
        let client = ComfyClient::new(&fake.url()).expect("client");
        let client_id = uuid::Uuid::new_v4().to_string();
        let socket = BackendSocket::connect(&fake.url(), &client_id).expect("socket");
        assert!(socket.wait_connected(Duration::from_secs(5)).await, "websocket to {} did not connect", fake.url());
        Direct {
            client,
            socket,
            png: test_png(),
            // What the executor passes (preview method "auto", same poll safety net).
            options: RunOptions {
                preview_method: Some("auto".into()),
                poll_interval: Duration::from_secs(2),
                unreachable_timeout: Duration::from_secs(30),
            },
        }
    }

    /// Upload, run and download one invert prompt; checks the output is the
    /// inverted picture so a broken run cannot pass as a fast one.
    async fn run_once(&self) -> DirectTimes {
        let t0 = Instant::now();
        let up = self.client.upload_image(self.png.clone(), "station_bench.png").await.expect("upload");
        let t1 = Instant::now();
        let prompt_id = uuid::Uuid::new_v4().to_string();
        let outcome = run_prompt(
            &self.client,
            &self.socket,
            &invert_graph(&up.load_image_name()),
            &prompt_id,
            &self.options,
            |_| {},
        )
        .await
        .expect("prompt");
        let t2 = Instant::now();
        let images = outcome.images();
        assert_eq!(images.len(), 1, "one output image: {images:?}");
        let bytes = self.client.view(&images[0]).await.expect("view");
        let t3 = Instant::now();
        let px = image::load_from_memory(&bytes).expect("output decodes").to_rgb8();
        // ComfyUI inverts in float32 and truncates when saving: 200 → 54.
        assert_eq!(px.get_pixel(0, 0).0, [255, 255, 54], "inverted pixel");
        DirectTimes { upload: t1 - t0, run: t2 - t1, view: t3 - t2 }
    }
}

/// A Station over SQLite in a temporary folder, with the ComfyUI executor
/// over `fakes` (one slot each) and its workers running.
struct Env {
    station: Station,
    comfy: Arc<ComfyExecutor>,
    workers: Option<Workers>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(fakes: &[FakeComfy], poll_ms: u64) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.queue.poll_ms = poll_ms;
        // Bursts queue more jobs per account than the default quota allows.
        config.limits.max_queued = 0;
        std::fs::create_dir_all(config.tools_dir()).expect("tools dir");
        let (station, errors) = Station::open(config).await.expect("open Station");
        assert!(errors.is_empty(), "tool files failed to load: {errors:?}");
        let specs = fakes
            .iter()
            .enumerate()
            .map(|(i, f)| BackendSpec { name: format!("b{i}"), url: f.url(), max_concurrent: 1, tags: vec![] })
            .collect();
        let comfy = ComfyExecutor::new(specs, "auto").expect("executor");
        // The default health interval: checks are not part of the per-job path.
        comfy.start_health_checks(Duration::from_secs(10), station.wake.clone()).await;
        assert!(comfy.statuses().iter().all(|b| b.healthy), "backends healthy: {:?}", comfy.statuses());
        station.register_executor(comfy.clone());
        let workers = Some(Workers::start(&station));
        Env { station, comfy, workers, _dir: dir }
    }

    async fn stop(mut self) {
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        self.comfy.shutdown();
    }

    /// An account with points for every job and the test picture uploaded;
    /// returns the account and its `media:` reference.
    async fn account(&self, n: usize) -> (AccountRow, String) {
        let account = self.station.account("bench", &format!("u{n}"), &format!("User {n}")).await.expect("account");
        // Every job holds and then captures its price, as in production; the
        // starting grant would not cover a whole series.
        self.station
            .grant_points(&account, 1_000_000, "benchmark jobs", &station_core::audit::Actor::operator("bench"), None)
            .await
            .expect("grant points");
        let media = self
            .station
            .media
            .put_image(test_png(), Some(&account.id), None, "input")
            .await
            .expect("upload to Station");
        (account, format!("media:{}", media.id))
    }

    async fn submit(&self, account: &AccountRow, image: &str) -> String {
        let mut params = Map::new();
        params.insert("image".into(), json!(image));
        self.station
            .submit(account, SubmitRequest { tool: "invert".into(), params, ..Default::default() })
            .await
            .expect("submit")
            .id
    }
}

/// Time from calling submit to each milestone of one Station job, as its
/// events arrive on the bus.
struct StationTimes {
    submit: Duration,
    dispatched: Duration,
    running: Duration,
    result: Duration,
    succeeded: Duration,
}

/// Runs one job to its `succeeded` event.
async fn station_once(
    env: &Env,
    rx: &mut broadcast::Receiver<JobEvent>,
    account: &AccountRow,
    image: &str,
) -> StationTimes {
    let t0 = Instant::now();
    let id = env.submit(account, image).await;
    let submit = t0.elapsed();
    let (mut dispatched, mut running, mut result) = (None, None, None);
    let succeeded = loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("job {id}: no event for 30 s"))
            .expect("event bus");
        if ev.job_id() != id {
            continue;
        }
        let at = t0.elapsed();
        match ev {
            JobEvent::Status { status: JobStatus::Dispatched, .. } => dispatched = Some(at),
            JobEvent::Status { status: JobStatus::Running, .. } => running = Some(at),
            JobEvent::Result { .. } => result = Some(at),
            JobEvent::Status { status: JobStatus::Succeeded, .. } => break at,
            JobEvent::Status { status: s @ (JobStatus::Failed | JobStatus::Cancelled), error, .. } => {
                panic!("job {id} ended {s}: {error:?}")
            }
            _ => {}
        }
    };
    let row = env.station.job(&id).await.expect("read job").expect("job exists");
    assert_eq!(row.status(), JobStatus::Succeeded);
    assert_eq!(row.output_ids().len(), 1, "one stored output");
    StationTimes {
        submit,
        dispatched: dispatched.expect("dispatched event"),
        running: running.expect("running event"),
        result: result.expect("result event"),
        succeeded,
    }
}

/// Per-job latency, direct and through Station; prints the tables. Direct
/// runs and Station jobs alternate on the same fake so that load from
/// elsewhere on the machine hits both series alike.
async fn latency(n: usize) {
    let f = fake(0).await;
    let direct = Direct::connect(&f).await;
    println!("\n## Per-job latency (N = {n} each, after {WARMUP} warm-up runs), ms\n");
    println!("| path | p50 | p99 | mean | max |");
    println!("|---|---:|---:|---:|---:|");
    let mut overheads = vec![];
    for poll_ms in [10, 500] {
        let env = Env::start(std::slice::from_ref(&f), poll_ms).await;
        let (account, image) = env.account(0).await;
        let mut rx = env.station.bus.subscribe();
        let mut d: [Series; 4] = Default::default();
        let mut s: [Series; 5] = Default::default();
        let mut timer_waits = 0;
        for i in 0..WARMUP + n {
            // The pauses let each side's tail work (the worker's next claim,
            // the fake's history bookkeeping) end before the other is timed.
            let t = direct.run_once().await;
            tokio::time::sleep(SETTLE).await;
            let j = station_once(&env, &mut rx, &account, &image).await;
            tokio::time::sleep(SETTLE).await;
            if i < WARMUP {
                continue;
            }
            d[0].push(t.upload + t.run + t.view);
            d[1].push(t.upload);
            d[2].push(t.run);
            d[3].push(t.view);
            s[0].push(j.succeeded);
            s[1].push(j.submit);
            s[2].push(j.dispatched - j.submit);
            s[3].push(j.running - j.dispatched);
            s[4].push(j.succeeded - j.running);
            // The result event is published right before `succeeded`.
            assert!(j.result <= j.succeeded);
            // A claim that took over half the poll period was not woken by the
            // submit: the worker found the job on its timer.
            if poll_ms >= 100 && j.dispatched - j.submit > Duration::from_millis(poll_ms / 2) {
                timer_waits += 1;
            }
        }
        env.stop().await;
        println!("| **poll_ms = {poll_ms}** | | | | |");
        println!("{}", d[0].row("direct: upload + prompt + view"));
        println!("{}", d[1].row("  direct: upload"));
        println!("{}", d[2].row("  direct: POST /prompt + websocket until done"));
        println!("{}", d[3].row("  direct: GET /view"));
        println!("{}", s[0].row("Station: submit → succeeded"));
        println!("{}", s[1].row("  Station: submit() returns"));
        println!("{}", s[2].row("  Station: → dispatched"));
        println!("{}", s[3].row("  Station: → running"));
        println!("{}", s[4].row("  Station: → succeeded"));
        overheads.push((poll_ms, s[0].pct(50.0) - d[0].pct(50.0), s[0].pct(99.0) - d[0].pct(99.0), timer_waits));
    }
    // Jobs submitted the moment the previous one succeeded, as a busy front
    // end does: the submit then races the worker's claim after that job.
    let env = Env::start(std::slice::from_ref(&f), 500).await;
    let (account, image) = env.account(0).await;
    let mut rx = env.station.bus.subscribe();
    let (mut b2b, mut b2b_waits) = (Series::default(), 0);
    for i in 0..WARMUP + n {
        let j = station_once(&env, &mut rx, &account, &image).await;
        if i >= WARMUP {
            b2b.push(j.succeeded);
            if j.dispatched - j.submit > Duration::from_millis(250) {
                b2b_waits += 1;
            }
        }
    }
    env.stop().await;
    println!("| **back to back, poll_ms = 500** | | | | |");
    println!("{}", b2b.row("Station: submit → succeeded"));
    println!("\nBack to back: {b2b_waits} / {n} jobs were found by the poll timer, not by the submit's wake-up.");

    println!("\n| overhead (Station − direct) | p50 ms | p99 ms | jobs found by the poll timer |");
    println!("|---|---:|---:|---:|");
    for (poll_ms, p50, p99, waits) in overheads {
        let waits = if poll_ms >= 100 { format!("{waits} / {n}") } else { "n/a".into() };
        println!("| poll_ms = {poll_ms} | {p50:.2} | {p99:.2} | {waits} |");
    }
    statements(&f, &direct).await;
}

/// Counts the SQL statements Station runs per job and the time spent inside
/// them, from sqlx's per-statement `sqlx::query` events (only while
/// [`SQL_COUNTING`] is on, so the timed series above pay nothing for it).
async fn statements(f: &FakeComfy, direct: &Direct) {
    const JOBS: usize = 50;
    let env = Env::start(std::slice::from_ref(f), 10).await;
    let (account, image) = env.account(0).await;
    let mut rx = env.station.bus.subscribe();
    // Connections and caches warm, as in the series above.
    for _ in 0..WARMUP {
        direct.run_once().await;
        station_once(&env, &mut rx, &account, &image).await;
    }
    SQL_STATS.lock().expect("stats").clear();
    SQL_COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..JOBS {
        station_once(&env, &mut rx, &account, &image).await;
    }
    SQL_COUNTING.store(false, Ordering::SeqCst);
    env.stop().await;
    let mut rows: Vec<(String, StatementStats)> = SQL_STATS.lock().expect("stats").drain().collect();
    rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    let (count, secs) = rows.iter().fold((0, 0.0), |(c, s), (_, (n, t, _))| (c + n, s + t));
    println!(
        "\n## SQL per Station job (SQLite, mean over {JOBS} sequential jobs, health checks and heartbeats included)\n"
    );
    println!("| statement | per job | ms per job | longest ms |");
    println!("|---|---:|---:|---:|");
    for (summary, (n, t, max)) in &rows {
        let summary = summary.replace('|', "\\|");
        println!(
            "| `{summary}` | {:.2} | {:.3} | {:.2} |",
            *n as f64 / JOBS as f64,
            t * 1000.0 / JOBS as f64,
            max * 1000.0
        );
    }
    println!("| **total** | {:.2} | {:.3} | |", count as f64 / JOBS as f64, secs * 1000.0 / JOBS as f64);
}

/// Whether [`SqlCounter`] records statements now.
static SQL_COUNTING: AtomicBool = AtomicBool::new(false);

/// Statement opening → its [`StatementStats`].
static SQL_STATS: LazyLock<Mutex<HashMap<String, StatementStats>>> = LazyLock::new(Default::default);

/// Count, seconds inside the statement, longest single run in seconds.
type StatementStats = (u64, f64, f64);

/// A tracing subscriber that only listens to sqlx's statement events.
struct SqlCounter;

/// Picks `summary` and `elapsed_secs` out of one sqlx statement event.
#[derive(Default)]
struct StatementFields {
    summary: String,
    statement: String,
    secs: f64,
}

impl Visit for StatementFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.secs = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" && self.summary.is_empty() {
            self.summary = format!("{value:?}").trim_matches('"').to_owned();
        }
    }
}

impl Subscriber for SqlCounter {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // "sometimes": `enabled` is asked on each event, so counting can be switched.
        if meta.target() == "sqlx::query" { Interest::sometimes() } else { Interest::never() }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.target() == "sqlx::query" && SQL_COUNTING.load(Ordering::Relaxed)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = StatementFields::default();
        event.record(&mut fields);
        // sqlx's summary is only the first words, which several job updates
        // share; the statement's opening tells claim, running and finish apart.
        let key = if fields.statement.trim().is_empty() {
            fields.summary
        } else {
            let words: Vec<&str> = fields.statement.split_whitespace().collect();
            let mut key = words.join(" ");
            if let Some((cut, _)) = key.char_indices().nth(72) {
                key.truncate(cut);
                key.push_str(" …");
            }
            key
        };
        let mut stats = SQL_STATS.lock().expect("stats");
        let e = stats.entry(key).or_default();
        e.0 += 1;
        e.1 += fields.secs;
        e.2 = e.2.max(fields.secs);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// Drains `jobs` jobs submitted at once through Station over `backends` fakes.
/// Returns seconds taken and the jobs each backend ran.
async fn station_burst(backends: usize, jobs: usize, step_ms: u64) -> (f64, Vec<usize>) {
    let mut fakes = vec![];
    for _ in 0..backends {
        fakes.push(fake(step_ms).await);
    }
    let env = Env::start(&fakes, 10).await;
    let mut accounts = vec![];
    for n in 0..ACCOUNTS {
        accounts.push(env.account(n).await);
    }
    let mut rx = env.station.bus.subscribe();
    let t0 = Instant::now();
    let ids: Vec<String> = futures::future::join_all((0..jobs).map(|i| {
        let (account, image) = &accounts[i % ACCOUNTS];
        env.submit(account, image)
    }))
    .await;
    let mut left: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    while !left.is_empty() {
        let ev = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{} jobs still unfinished after 60 s of silence", left.len()))
            .expect("event bus");
        if let JobEvent::Status { job_id, status, error } = ev {
            match status {
                JobStatus::Succeeded => {
                    left.remove(job_id.as_str());
                }
                JobStatus::Failed | JobStatus::Cancelled => {
                    panic!("job {job_id} ended {status}: {error:?}")
                }
                _ => {}
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut per_backend = vec![0; backends];
    for id in &ids {
        let row = env.station.job(id).await.expect("read").expect("job");
        assert_eq!(row.status(), JobStatus::Succeeded);
        assert_eq!(row.output_ids().len(), 1);
        let name = row.backend.expect("backend recorded");
        let i: usize = name[1..].parse().expect("backend name b<i>");
        per_backend[i] += 1;
    }
    let received: u64 = fakes.iter().map(station_comfyui_fake::FakeComfy::prompts_received).sum();
    assert_eq!(received, jobs as u64, "every job ran exactly once");
    env.stop().await;
    (secs, per_backend)
}

/// The same prompts driven directly, one sequential client per backend: what
/// the backends can do with nothing in between.
async fn direct_burst(backends: usize, jobs: usize, step_ms: u64) -> f64 {
    let mut clients = vec![];
    let mut fakes = vec![];
    for _ in 0..backends {
        let f = fake(step_ms).await;
        clients.push(Direct::connect(&f).await);
        fakes.push(f);
    }
    let t0 = Instant::now();
    futures::future::join_all(clients.iter().enumerate().map(|(b, c)| async move {
        // Job i goes to backend i mod backends, as an even split would.
        for _ in (b..jobs).step_by(backends) {
            c.run_once().await;
        }
    }))
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let received: u64 = fakes.iter().map(station_comfyui_fake::FakeComfy::prompts_received).sum();
    assert_eq!(received, jobs as u64);
    secs
}

async fn throughput(jobs: usize, step_ms: u64) {
    println!(
        "\n## Throughput: {jobs} jobs submitted at once, fake per-node delay {step_ms} ms \
         (3 nodes), each backend max_concurrent = 1\n"
    );
    println!("| backends | Station s | Station jobs/s | jobs per backend | direct jobs/s | Station / direct |");
    println!("|---:|---:|---:|---|---:|---:|");
    let mut rates = vec![];
    for backends in [1, 4] {
        let (secs, per_backend) = station_burst(backends, jobs, step_ms).await;
        let direct_secs = direct_burst(backends, jobs, step_ms).await;
        let rate = jobs as f64 / secs;
        let direct_rate = jobs as f64 / direct_secs;
        println!(
            "| {backends} | {secs:.2} | {rate:.1} | {per_backend:?} | {direct_rate:.1} | {:.0} % |",
            100.0 * rate / direct_rate
        );
        rates.push((rate, direct_rate));
    }
    println!(
        "\nSpeed-up 1 → 4 backends: Station {:.2}×, direct {:.2}×",
        rates[1].0 / rates[0].0,
        rates[1].1 / rates[0].1
    );
}

fn main() {
    tracing::subscriber::set_global_default(SqlCounter).expect("no other subscriber");
    let n = env_usize("BENCH_N", 200);
    let jobs = env_usize("BENCH_JOBS", 200);
    let step_ms = env_usize("BENCH_STEP_MS", 20) as u64;
    // The machine this is meant for has 2 cores; match it so results compare.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let runs = |part: &str| only.is_empty() || only == part;
    rt.block_on(async {
        if runs("e2e") {
            e2e::run(n, std::env::var("BENCH_COMFYUI_URL").ok().filter(|u| !u.is_empty())).await;
        }
        if runs("latency") {
            latency(n).await;
        }
        if runs("throughput") {
            throughput(jobs, step_ms).await;
        }
    });
}
