//! The real `station` binary under faults: a crash at the exact point
//! between recording a prompt id and `POST /prompt` (the core's crash hook,
//! compiled in for tests only), a backend that accepts connections and never
//! answers at start, SIGTERM with event streams open, clean exits on
//! PostgreSQL, and PostgreSQL dropping every connection for a few seconds
//! during load. On SQLite, and on PostgreSQL when `STATION_TEST_POSTGRES_URL`
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
        // The one expected warning is about the missing backend, at start;
        // sqlx's "slow statement" notes say how busy the machine is (the
        // migration lock took over a second under the suite's load), not
        // how the server ended.
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") && !l.contains("no ComfyUI backend configured"))
            .filter(|l| !l.contains("slow statement"))
            .collect();
        assert!(warnings.is_empty(), "{kind}: a clean exit logs no warning:\n{log}");
    }
}

/// A TCP proxy between Station and PostgreSQL that can drop every
/// connection at once and refuse new ones (accepting and closing them at
/// once, as a restarting server does), like a PostgreSQL restart.
struct DbProxy {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    async fn start(target: String) -> DbProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (c, list) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(client); // closed at once: "the server went away"
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut l = list.lock().unwrap();
                l.retain(|h| !h.is_finished());
                l.push(task.abort_handle());
            }
        });
        DbProxy { addr, cut, conns, accept }
    }

    /// Drops every open connection and refuses new ones until [`DbProxy::restore`].
    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// One REST submission with an idempotency key, as a client does it: on
/// 503 `database_unavailable` (with `Retry-After: 5`) it tries again with
/// the same key. Returns the generation id and how many 503s it saw.
async fn submit_until_accepted(http: &reqwest::Client, port: u16, key: &str, image: &str, ikey: &str) -> (String, u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut refused = 0;
    loop {
        let r = http
            .post(format!("http://127.0.0.1:{port}/api/v1/generations"))
            .bearer_auth(key)
            .header("Idempotency-Key", ikey)
            .json(&serde_json::json!({"tool": "upscale", "params": {"image": image}}))
            .send()
            .await;
        if let Ok(r) = r {
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            match status {
                200 | 201 => return (body["id"].as_str().unwrap().to_string(), refused),
                503 => {
                    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
                    assert_eq!(retry_after.as_deref(), Some("5"), "{body}");
                    let message = body["error"]["message"].as_str().unwrap();
                    assert!(message.contains("database") && message.contains("Try again"), "{message}");
                    refused += 1;
                }
                other => panic!("submission {ikey}: unexpected {other}: {body}"),
            }
        }
        assert!(Instant::now() < deadline, "submission {ikey} never accepted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// PostgreSQL drops every connection for a few seconds while jobs are being
/// submitted and run (a proxy in between plays the restart): submissions
/// answer 503 `database_unavailable` with `Retry-After: 5`, `/readyz` says
/// the database is unreachable, workers back off and resume. Afterwards
/// every accepted submission is exactly one job, every job ran once on the
/// backend and succeeded, and the points audit is clean. (PostgreSQL only:
/// an embedded SQLite file cannot become unreachable.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_during_load_loses_and_doubles_nothing() {
    init();
    let Some(pg) = testing::postgres().await else {
        eprintln!("STATION_TEST_POSTGRES_URL is not set: the database outage test needs PostgreSQL");
        return;
    };
    // postgres://user@HOST:PORT/db?options=… → the proxy's address instead.
    let after_at = pg.url.split_once('@').unwrap().1;
    let target = after_at.split('/').next().unwrap().to_string();
    let proxy = DbProxy::start(target.clone()).await;
    let via_proxy = pg.url.replacen(&format!("@{target}/"), &format!("@{}/", proxy.addr), 1);
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let env = Env::new(&fake.url(), Some(&via_proxy));
    env.ok(&["users", "create", "alice"]);
    let key = env.ok(&["keys", "create", "--user", "alice", "--name", "t"]);
    let (mut server, port) = env.serve("serve", &[]);
    wait_http(port, "/healthz").await;
    let http = reqwest::Client::new();
    let png = std::fs::read(input_png(env.dir.path())).unwrap();
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(png).file_name("in.png").mime_str("image/png").unwrap());
    let up: serde_json::Value = http
        .post(format!("http://127.0.0.1:{port}/api/v1/media"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let image = format!("media:{}", up["id"].as_str().unwrap_or_else(|| panic!("{up}")));

    // The load: 12 submissions, one after another, while jobs run.
    const N: usize = 12;
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (http, key, image, accepted) = (http.clone(), key.clone(), image.clone(), accepted.clone());
        tokio::spawn(async move {
            let mut ids = vec![];
            for i in 0..N {
                let (id, _) = submit_until_accepted(&http, port, &key, &image, &format!("load-{i}")).await;
                ids.push(id);
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            ids
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the first submissions were never accepted\n{}", env.log("serve"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // PostgreSQL goes away.
    proxy.cut();
    let cut_at = Instant::now();
    // /readyz says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        if status == 503 {
            let problems = body["problems"].to_string();
            assert!(problems.contains("the database is unreachable"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never noticed the database was gone: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A submission now is refused with 503 and Retry-After, nothing queued.
    let r = http
        .post(format!("http://127.0.0.1:{port}/api/v1/generations"))
        .bearer_auth(&key)
        .header("Idempotency-Key", "probe")
        .json(&serde_json::json!({"tool": "upscale", "params": {"image": image}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").unwrap(), "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    // The outage lasts a few seconds (part of the scenario, not an assertion).
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(cut_at.elapsed())).await;
    proxy.restore();

    // The probe is accepted once the database is back; the load finishes.
    let (probe, _) = submit_until_accepted(&http, port, &key, &image, "probe").await;
    let mut ids = tokio::time::timeout(Duration::from_secs(180), load).await.expect("the load finished").unwrap();
    ids.push(probe);
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), N + 1, "one job per submission: {ids:?}");

    // Read directly, not through the proxy.
    let store = Store::connect(&pg.url).await.unwrap();
    for id in &ids {
        let done = wait_job(&store, id, "finished", |j| j.status().is_terminal()).await;
        assert_eq!(done.status(), JobStatus::Succeeded, "{id}: {:?}\n{}", done.error, env.log("serve"));
        assert_eq!(done.output_ids().len(), 1);
    }
    // No other job was created (a refused submission wrote nothing).
    let all = store
        .list_jobs(&station_core::JobFilter { tool_id: Some("upscale".into()), limit: 1000, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(all.len(), N + 1, "jobs in the database: {:?}", all.iter().map(|j| &j.id).collect::<Vec<_>>());
    assert_eq!(fake.prompts_received(), (N + 1) as u64, "every job ran exactly once on the backend");

    // The points audit is clean once the load settled (the sweeper settles
    // any hold whose worker could not).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = env.command(&["points", "audit"]).output().unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "points audit not clean: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = env.log("serve");
    assert!(log.contains("claim failed") || log.contains("database"), "workers noticed the outage:\n{log}");
    let term = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(wait_exit(&mut server, Duration::from_secs(60)).is_some_and(|s| s.success()), "{log}");
}
