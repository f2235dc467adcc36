//! The real `station` binary under faults: a crash at the exact point
//! between recording a prompt id and `POST /prompt` (the core's crash hook,
//! compiled in for tests only), a backend that accepts connections and never
//! answers at start, SIGTERM with event streams open, and clean exits on
//! PostgreSQL. On SQLite, and on PostgreSQL when `STATION_TEST_POSTGRES_URL`
//! is set.

mod common;

use common::{free_port, input_png, station_vars, wait_http, wait_job};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::JobStatus;
use station_testkit::{Store, testing};

const BIN: &str = env!("CARGO_BIN_EXE_station");

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The databases to run on: SQLite (a file in the test's folder: `None`)
/// and PostgreSQL (a fresh schema's URL) when configured.
async fn databases() -> Vec<Option<String>> {
    let mut out = vec![None];
    if let Some(pg) = testing::postgres().await {
        out.push(Some(pg.url.clone()));
    }
    out
}

struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    kind: &'static str,
}

impl Env {
    fn new(backends: &str, database_url: Option<&str>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let vars = station_vars(&dir, backends, database_url);
        Env { dir, vars, kind: if database_url.is_some() { "postgres" } else { "sqlite" } }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.current_dir(self.dir.path());
        c
    }

    fn serve(&self, name: &str, extra: &[(&str, &str)]) -> (Child, u16) {
        let port = free_port();
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let mut c = self.command(&["serve"]);
        c.env("STATION_LISTEN", format!("127.0.0.1:{port}")).stdout(Stdio::null()).stderr(log);
        for (k, v) in extra {
            c.env(k, v);
        }
        (c.spawn().unwrap(), port)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    async fn store(&self) -> Store {
        let url = self
            .vars
            .iter()
            .find(|(k, _)| k == "STATION_DATABASE_URL")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("sqlite://{}/data/station.db", self.dir.path().display()));
        Store::connect(&url).await.unwrap()
    }

    /// Runs a CLI command to the end; its stdout, checking it succeeded.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: station {args:?} failed: {stderr}", self.kind);
        // A clean exit logs no warning (on PostgreSQL: the event listener is
        // closed before the pool, not reported as having lost it).
        assert!(!stderr.contains("WARN"), "{}: station {args:?} warned: {stderr}", self.kind);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Waits for a child to exit, at most `limit`; None if it is still running
/// (then it is killed).
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `serve` crashes (the test-only crash hook aborts the process) at `point`
/// of its first job; a restarted `serve` must run the job exactly once on
/// the backend: resubmit it when the POST never arrived, follow/collect it
/// when it did.
async fn crash_at(point: &str) {
    init();
    for url in databases().await {
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let env = Env::new(&fake.url(), url.as_deref());
        let kind = env.kind;
        let input = input_png(env.dir.path());
        let (mut first, port) = env.serve("first", &[("STATION_FAULT_CRASH", point)]);
        wait_http(port, "/healthz").await;
        let id = env.ok(&["run", "upscale", "--no-wait", "--image", input.to_str().unwrap()]);
        let status = wait_exit(&mut first, Duration::from_secs(60)).expect("the crash hook ended the process");
        assert!(!status.success(), "{kind}: {status:?}");
        assert!(env.log("first").contains(&format!("crashing at {point}")), "{kind}: {}", env.log("first"));

        let store = env.store().await;
        let crashed = store.get_job(&id).await.unwrap().unwrap();
        let recorded = crashed.remote_id.clone().expect("the prompt id is in the row before the POST");
        assert!(!crashed.status().is_terminal(), "{kind}: {crashed:?}");
        let sent_before_crash = u64::from(point == "after_post");
        assert_eq!(fake.prompts_received(), sent_before_crash, "{kind}: POSTs before the crash");

        let (mut second, _) = env.serve("second", &[]);
        let done = wait_job(&store, &id, "finished", |j| j.status().is_terminal()).await;
        second.kill().unwrap();
        second.wait().unwrap();
        assert_eq!(done.status(), JobStatus::Succeeded, "{kind}: {:?}\n{}", done.error, env.log("second"));
        assert_eq!(fake.prompts_received(), 1, "{kind}: the backend ran the job exactly once");
        if point == "after_post" {
            assert_eq!(done.remote_id.as_deref(), Some(recorded.as_str()), "{kind}: the sent prompt was collected");
            assert_eq!(done.attempts, 1, "{kind}");
        } else {
            assert_ne!(done.remote_id.as_deref(), Some(recorded.as_str()), "{kind}: never sent, so resubmitted");
            assert_eq!(done.attempts, 2, "{kind}");
        }
        let outputs = done.output_ids();
        assert_eq!(outputs.len(), 1, "{kind}");
        assert!(store.get_media(&outputs[0]).await.unwrap().is_some(), "{kind}: the output is stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_recording_the_prompt_before_posting_it_runs_the_job_once() {
    crash_at("before_post").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_right_after_posting_the_prompt_runs_the_job_once() {
    crash_at("after_post").await;
}

/// A backend that accepts TCP connections and never answers (a SIGSTOPped
/// ComfyUI) must not hold up `serve`: /healthz answers at once, native tools
/// run, and /readyz names the backend that is not answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_backend_at_start_holds_nothing_up() {
    init();
    let fake = FakeComfy::start(FakeOptions::default()).await;
    fake.freeze();
    let mut env = Env::new(&fake.url(), None);
    env.vars.push(("STATION_COMFYUI_HEALTH_TIMEOUT_SECONDS".into(), "1".into()));
    let input = input_png(env.dir.path());
    let (mut server, port) = env.serve("serve", &[]);
    // Well under the 30 s the first health check used to block start-up for.
    let quick = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        match quick.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "/healthz did not answer: {e}\n{}", env.log("serve"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(health.status(), 200);
    // A native tool runs through the server's workers while the backend stays frozen.
    let out = env.dir.path().join("out");
    let output = env
        .command(&["run", "resize", "--image", input.to_str().unwrap(), "--param", "width=2", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let saved = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert_eq!(image::open(&saved).unwrap().to_rgb8().dimensions(), (2, 2));
    // Readiness names the backend and says it is not answering.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready: serde_json::Value =
            quick.get(format!("http://127.0.0.1:{port}/readyz")).send().await.unwrap().json().await.unwrap();
        let problems = ready["problems"].to_string();
        if problems.contains("backend backend1 is down") && problems.contains("not answering") {
            assert_eq!(ready["services"]["comfyui"]["backends"][0]["healthy"], false, "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never named the frozen backend: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Thawed, it is used.
    fake.thaw();
    let job = env.ok(&["run", "upscale", "--no-wait", "--image", input.to_str().unwrap()]);
    let store = env.store().await;
    let done = wait_job(&store, &job, "finished", |j| j.status().is_terminal()).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{:?}", done.error);
    server.kill().unwrap();
    server.wait().unwrap();
}

/// SIGTERM while a browser follows a job's event stream: the stream ends,
/// the process exits on its own well within its (long) grace, with no
/// warning about the database on the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_open_event_stream_exits_promptly_and_cleanly() {
    init();
    for url in databases().await {
        // No backend: the ComfyUI job waits in the queue, its stream stays open.
        let mut env = Env::new("", url.as_deref());
        env.vars.push(("STATION_SHUTDOWN_GRACE_SECONDS".into(), "120".into()));
        let kind = env.kind;
        let input = input_png(env.dir.path());
        env.ok(&["users", "create", "alice"]);
        let key = env.ok(&["keys", "create", "--user", "alice", "--name", "t"]);
        let (mut server, port) = env.serve("serve", &[]);
        wait_http(port, "/healthz").await;
        let id = env.ok(&["run", "upscale", "--no-wait", "--user", "alice", "--image", input.to_str().unwrap()]);
        let mut stream = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/api/v1/generations/{id}/events"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200, "{kind}");
        let first = stream.chunk().await.unwrap().expect("a first event");
        assert!(String::from_utf8_lossy(&first).contains("queued"), "{kind}: {first:?}");

        let term = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
        assert!(term.success());
        // The stream ends because the server ends it, not because we hang up.
        let rest =
            tokio::time::timeout(Duration::from_secs(60), async { while let Ok(Some(_)) = stream.chunk().await {} })
                .await;
        assert!(rest.is_ok(), "{kind}: the event stream stayed open after SIGTERM");
        let status = wait_exit(&mut server, Duration::from_secs(60));
        let log = env.log("serve");
        assert!(
            status.is_some_and(|s| s.success()),
            "{kind}: serve did not exit cleanly on SIGTERM: {status:?}\n{log}"
        );
        // The one expected warning is about the missing backend, at start.
        let warnings: Vec<&str> =
            log.lines().filter(|l| l.contains("WARN") && !l.contains("no ComfyUI backend configured")).collect();
        assert!(warnings.is_empty(), "{kind}: a clean exit logs no warning:\n{log}");
    }
}
