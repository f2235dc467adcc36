//! The real `station` binary as child processes: serve, run, SIGKILL in the
//! middle of a job and restart, and two servers sharing one PostgreSQL queue.

mod common;

use common::{free_port, input_png, station_vars, wait_http, wait_job};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::JobStatus;
use station_testkit::Store;

const BIN: &str = env!("CARGO_BIN_EXE_station");

struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(backends: &str, database_url: Option<&str>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let vars = station_vars(&dir, backends, database_url);
        Env { dir, vars }
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

    fn serve(&self, name: &str) -> (Child, u16) {
        let port = free_port();
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = self
            .command(&["serve"])
            .env("STATION_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        (child, port)
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
}

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_defaults_answers_health_and_readiness_without_comfyui() {
    init();
    let env = Env::new("", None);
    let (mut child, port) = env.serve("serve");
    let health = wait_http(port, "/healthz").await;
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = wait_http(port, "/readyz").await.json().await.unwrap();
    assert_eq!(ready["database"]["ok"], true, "{ready}");
    assert!(ready["services"]["media"].is_object(), "{ready}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.log("serve").contains("no ComfyUI backend configured"), "{}", env.log("serve"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_upscales_through_a_comfyui_backend_and_saves_the_output() {
    init();
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let env = Env::new(&fake.url(), None);
    let input = input_png(env.dir.path());
    let out = env.dir.path().join("out");
    let output = env
        .command(&[
            "run",
            "upscale",
            "--image",
            input.to_str().unwrap(),
            "--param",
            "scale_by=2",
            "--param",
            "upscale_method=nearest-exact",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "station run failed: {stderr}");
    let saved = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let img = image::open(&saved).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (8, 8));
    assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(img.get_pixel(7, 7).0, [0, 0, 255]);
    assert_eq!(fake.prompts_received(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_all_reported_and_nothing_is_queued() {
    init();
    let env = Env::new("", None);
    let output = env.command(&["run", "upscale", "--param", "scale_by=9", "--param", "colour=red"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("scale_by") && stderr.contains("colour") && stderr.contains("image"), "{stderr}");
    let store = env.store().await;
    assert!(store.list_jobs(&Default::default()).await.unwrap().is_empty());
}

/// A slow upscale job sent to a fake ComfyUI by a `station serve` that is then
/// SIGKILLed (no chance to clean up) while the prompt runs on the backend.
async fn job_submitted_then_server_killed() -> (FakeComfy, Env, Store, String) {
    init();
    let fake = FakeComfy::start(FakeOptions::default()).await;
    fake.set_step_delay(700);
    let env = Env::new(&fake.url(), None);
    let input = input_png(env.dir.path());
    let (mut first, port) = env.serve("first");
    wait_http(port, "/healthz").await;
    let queued = env.command(&["run", "upscale", "--no-wait", "--image", input.to_str().unwrap()]).output().unwrap();
    assert!(queued.status.success(), "{}", String::from_utf8_lossy(&queued.stderr));
    let id = String::from_utf8_lossy(&queued.stdout).trim().to_string();
    let store = env.store().await;
    wait_job(&store, &id, "submission", |j| j.remote_id.is_some()).await;
    first.kill().unwrap();
    first.wait().unwrap();
    (fake, env, store, id)
}

/// SIGKILL the server while its job runs on the backend; a new server finds the
/// finished prompt in the backend's history and does not run it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_job_the_restarted_server_collects_the_result_without_rerunning() {
    let (fake, env, store, id) = job_submitted_then_server_killed().await;
    // The backend finishes the prompt on its own meanwhile.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (mut second, _) = env.serve("second");
    let done = wait_job(&store, &id, "success", |j| j.status().is_terminal()).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(done.status(), JobStatus::Succeeded, "{:?}\n{}", done.error, env.log("second"));
    assert_eq!(fake.prompts_received(), 1, "the finished prompt was run again");
    assert_eq!(done.attempts, 1);
    assert_eq!(done.output_ids().len(), 1);
}

/// SIGKILL the server, and the backend restarts too (forgetting its queue):
/// the new server finds the prompt unknown and resubmits it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_job_with_a_restarted_backend_resubmits_once() {
    let (fake, env, store, id) = job_submitted_then_server_killed().await;
    fake.restart();
    fake.set_step_delay(10);
    let (mut second, _) = env.serve("second");
    let done = wait_job(&store, &id, "success", |j| j.status().is_terminal()).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(done.status(), JobStatus::Succeeded, "{:?}\n{}", done.error, env.log("second"));
    assert_eq!(fake.prompts_received(), 2, "expected exactly one resubmission");
    assert_eq!(done.attempts, 2);
}

/// Two servers on one PostgreSQL database drain one queue without ever running a job twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_never_run_the_same_job() {
    init();
    let Some(pg) = station_testkit::testing::postgres().await else {
        eprintln!("skipped: STATION_TEST_POSTGRES_URL is not set");
        return;
    };
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let env = Env::new(&fake.url(), Some(&pg.url));
    let input = input_png(env.dir.path());
    let mut ids = vec![];
    for _ in 0..12 {
        let q = env.command(&["run", "invert", "--no-wait", "--image", input.to_str().unwrap()]).output().unwrap();
        assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
        ids.push(String::from_utf8_lossy(&q.stdout).trim().to_string());
    }
    let (mut a, _) = env.serve("a");
    let (mut b, _) = env.serve("b");
    let store = &pg.store;
    for id in &ids {
        let j = wait_job(store, id, "success", |j| j.status().is_terminal()).await;
        assert_eq!(j.status(), JobStatus::Succeeded, "{:?}\n{}\n{}", j.error, env.log("a"), env.log("b"));
        assert_eq!(j.attempts, 1);
    }
    a.kill().unwrap();
    b.kill().unwrap();
    a.wait().unwrap();
    b.wait().unwrap();
    assert_eq!(fake.prompts_received(), 12, "some job ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_runs_natively_with_no_comfyui_configured() {
    init();
    let env = Env::new("", None);
    let input = input_png(env.dir.path());
    let out = env.dir.path().join("out");
    let output = env
        .command(&[
            "run",
            "resize",
            "--image",
            input.to_str().unwrap(),
            "--param",
            "width=2",
            "--param",
            "filter=nearest",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let saved = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let img = image::open(&saved).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (2, 2));
    assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(img.get_pixel(1, 1).0, [0, 0, 255]);
}

#[test]
fn config_show_masks_secrets_and_names_endpoints() {
    let env = Env::new("", None);
    let out = env
        .command(&["config", "show"])
        .env("STATION_TELEGRAM_TOKEN", "123456:SECRET")
        .env("STATION_DATABASE_URL", "postgres://station:hunter2@db/station")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("SECRET") && !text.contains("hunter2"), "{text}");
    assert!(text.contains("/telegram/webhook") && text.contains("/discord/interactions"), "{text}");
    assert!(text.contains("postgres://station:****@db/station"), "{text}");
}

#[test]
fn config_init_writes_an_example_that_loads_and_a_bad_file_is_named() {
    let env = Env::new("", None);
    assert!(env.command(&["config", "init"]).output().unwrap().status.success());
    let file = env.dir.path().join("station.toml");
    assert!(file.exists());
    assert!(env.command(&["--config", file.to_str().unwrap(), "config", "show"]).output().unwrap().status.success());
    // Refuses to overwrite.
    assert_eq!(env.command(&["config", "init"]).output().unwrap().status.code(), Some(2));
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\n[queue]\nlease = 3\n").unwrap();
    let out = env.command(&["--config", file.to_str().unwrap(), "config", "show"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("station.toml") && err.contains("line 3") && err.contains("lease"), "{err}");
}

#[test]
fn tools_check_names_file_field_and_reason() {
    let env = Env::new("", None);
    let dir = env.dir.path().join("tools");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.json"),
        r#"{"id":"bad","name":"Bad","category":"utility","service":"media","media":{"operation":"invert"},
            "cost":{"per_run":1},"inputs":{"image":{"type":"image","primary":true},"amount":{"type":"integer","min":5,"max":1,"default":3}}}"#,
    )
    .unwrap();
    let out = env.command(&["tools", "check", dir.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.json") && text.contains("inputs.amount"), "{text}");
    // The listing still works and shows built-ins.
    let list = env.command(&["tools", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("upscale") && text.contains("thumbnail"), "{text}");
}

/// A backend added with `station backends add` while a server runs is used
/// without a restart, and removing it takes it out of the pool again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_added_at_run_time_are_used_without_restart() {
    init();
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let env = Env::new("", None);
    let input = input_png(env.dir.path());
    let (mut server, port) = env.serve("serve");
    wait_http(port, "/healthz").await;
    let queued = env.command(&["run", "invert", "--no-wait", "--image", input.to_str().unwrap()]).output().unwrap();
    let id = String::from_utf8_lossy(&queued.stdout).trim().to_string();
    let store = env.store().await;
    // No backend yet: the job waits in the queue.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(store.get_job(&id).await.unwrap().unwrap().status(), JobStatus::Queued);
    let added = env.command(&["backends", "add", "gpu1", &fake.url()]).output().unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let done = wait_job(&store, &id, "success", |j| j.status().is_terminal()).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{:?}\n{}", done.error, env.log("serve"));
    assert_eq!(done.backend.as_deref(), Some("gpu1"));
    let ready: serde_json::Value = wait_http(port, "/readyz").await.json().await.unwrap();
    assert_eq!(ready["services"]["comfyui"]["backends"][0]["name"], "gpu1", "{ready}");
    assert!(env.command(&["backends", "remove", "gpu1"]).output().unwrap().status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready: serde_json::Value = wait_http(port, "/readyz").await.json().await.unwrap();
        if ready["services"]["comfyui"]["backends"].as_array().is_some_and(std::vec::Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "backend never removed: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
}
