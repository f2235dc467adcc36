//! The command line through the real binary (issue 22): `station run` next
//! to a server on other data, outputs by `jobs get`, job id prefixes, the
//! price and its confirmation, refusals before anything is queued, exit
//! codes, Ctrl-C on a job run in-process, and the operator commands' text
//! (`tools list`, `users show`, `config init|show|env`, `--help`) — on SQLite
//! and, where the database matters, PostgreSQL.

mod common;

use common::{free_port, input_png, station_vars, wait_http, wait_job};

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::JobStatus;
use station_testkit::Store;

const BIN: &str = env!("CARGO_BIN_EXE_station");

/// One data folder (and database) with its environment; `STATION_LISTEN` is
/// a free port so no other test's server is taken for this one's.
struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    port: u16,
}

impl Env {
    fn new(backends: &str, database_url: Option<&str>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut vars = station_vars(&dir, backends, database_url);
        vars.push(("STATION_LISTEN".into(), format!("127.0.0.1:{port}")));
        vars.retain(|(k, _)| k != "RUST_LOG");
        Env { dir, vars, port }
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn set(&mut self, key: &str, value: &str) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.into(), value.into()));
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects exit 0; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(0), "station {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn serve(&self) -> Reaped {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        Reaped(self.command(&["serve"]).stdout(Stdio::null()).stderr(log).spawn().unwrap())
    }

    async fn store(&self) -> Store {
        let url = self
            .vars
            .iter()
            .find(|(k, _)| k == "STATION_DATABASE_URL")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("sqlite://{}/station.db", self.data_dir().display()));
        Store::connect(&url).await.unwrap()
    }

    fn jobs(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["jobs", "list", "--json"])).unwrap()
    }
}

/// Kills a child process when dropped (also when an assertion fails).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// SQLite, and PostgreSQL when configured.
async fn databases() -> Vec<(&'static str, Option<String>)> {
    let mut dbs = vec![("sqlite", None)];
    if let Some(pg) = station_testkit::testing::postgres().await {
        dbs.push(("postgres", Some(pg.url.clone())));
    }
    dbs
}

/// A ComfyUI tool that takes its time: StationSteps runs `steps` × `step_ms`.
fn install_slow_tool(tools_dir: &Path) {
    std::fs::create_dir_all(tools_dir).unwrap();
    let tool = json!({
        "id": "slow", "name": "Slow", "category": "image-to-image", "service": "comfyui",
        "description": "Steps slowly over a picture (a test tool).",
        "inputs": {
            "image": {"type": "image", "required": true, "primary": true},
            "steps": {"type": "integer", "default": 4, "min": 1, "max": 1000},
            "step_ms": {"type": "integer", "default": 20, "min": 0, "max": 5000}
        },
        "cost": {"per_run": 2},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
                "2": {"class_type": "StationSteps", "inputs": {"image": ["1", 0], "steps": 4, "step_ms": 20, "seed": 0}},
                "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "slow"}}
            },
            "bindings": {"image": ["1.inputs.image"], "steps": ["2.inputs.steps"], "step_ms": ["2.inputs.step_ms"]},
            "outputs": ["3"]
        }
    });
    std::fs::write(tools_dir.join("slow.json"), serde_json::to_vec_pretty(&tool).unwrap()).unwrap();
}

/// Item 12: a server on the address that serves another database is named
/// and refused before anything is queued; one on the same data runs the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_server_on_the_address_that_serves_other_data() {
    init();
    for (kind, url) in databases().await {
        let server = Env::new("", url.as_deref());
        let _child = server.serve();
        let health: Value = wait_http(server.port, "/healthz").await.json().await.unwrap();
        let theirs = std::fs::canonicalize(server.data_dir()).unwrap().display().to_string();
        assert_eq!(health["data_dir"], json!(theirs), "{kind}: {health}");
        assert_eq!(health["database"].as_str().map(str::len), Some(16), "{kind}: {health}");

        // Another data folder, same address: refused, both folders named.
        let mut other = Env::new("", None);
        other.set("STATION_LISTEN", &format!("127.0.0.1:{}", server.port));
        let png = input_png(other.dir.path());
        let out = other.run(&["run", "resize", "-i", png.to_str().unwrap(), "-p", "width=2"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kind}: {err}");
        assert!(err.contains(&theirs), "{kind}: the server's folder is named: {err}");
        let ours = std::fs::canonicalize(other.data_dir()).unwrap().display().to_string();
        assert!(err.contains(&ours), "{kind}: this command's folder is named: {err}");
        assert_eq!(other.jobs(), Vec::<Value>::new(), "{kind}: nothing was queued");

        // The same data: the server runs it and the CLI saves the output.
        let png = input_png(server.dir.path());
        let saved = server.ok(&["run", "resize", "-i", png.to_str().unwrap(), "-p", "width=2", "--out", "outs"]);
        let file = Path::new(saved.trim());
        let bytes = std::fs::read(server.dir.path().join(file)).unwrap();
        assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 2, "{kind}");
        assert_eq!(server.jobs().len(), 1, "{kind}");
    }
}

/// Item 13: outputs by `jobs get`, listed by `jobs show`, named with a
/// prefix of the job id that every `jobs` command accepts; item 16: nested
/// JSON, and cancelling a finished job is not "job failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_get_saves_outputs_and_ids_take_any_unique_prefix() {
    init();
    for (kind, url) in databases().await {
        let env = Env::new("", url.as_deref());
        let png = input_png(env.dir.path());
        let first = env.ok(&["run", "resize", "-i", png.to_str().unwrap(), "-p", "width=2", "--out", "a"]);
        env.ok(&["run", "resize", "-i", png.to_str().unwrap(), "-p", "width=3", "--out", "a"]);
        let jobs = env.jobs();
        assert_eq!(jobs.len(), 2, "{kind}");
        let id = jobs[1]["id"].as_str().unwrap().to_string(); // oldest last
        assert_eq!(jobs[1]["params"]["width"], json!(2), "{kind}: params are JSON, not text: {}", jobs[1]);
        assert!(jobs[1]["outputs"].is_array(), "{kind}: {}", jobs[1]);

        // The file name carries a prefix of the id, and that prefix is accepted.
        let name = Path::new(first.trim()).file_name().unwrap().to_str().unwrap().to_string();
        let short = name.strip_prefix("resize-").and_then(|n| n.strip_suffix("-1.png")).unwrap();
        assert!(short.len() >= 8 && id.starts_with(short), "{kind}: {name} vs {id}");
        let show = env.ok(&["jobs", "show", short]);
        assert!(show.contains(&format!("job       {id}")), "{kind}: {show}");
        assert!(show.contains("/api/v1/media/"), "{kind}: outputs listed: {show}");
        assert!(show.contains(&format!("station jobs get {short}")), "{kind}: {show}");

        let got = env.ok(&["jobs", "get", short, "--out", "b"]);
        let got = env.dir.path().join(got.trim());
        assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(env.dir.path().join(first.trim())).unwrap(), "{kind}");

        let json: Value = serde_json::from_str(&env.ok(&["jobs", "show", &id[..13], "--json"])).unwrap();
        assert_eq!(json["id"], json!(id), "{kind}");
        assert_eq!(json["params"]["width"], json!(2), "{kind}: {json}");
        assert!(json["outputs"].is_array() && json["source"].is_object(), "{kind}: {json}");
        assert_eq!(json["output_urls"].as_array().map(Vec::len), Some(1), "{kind}: {json}");

        // Two jobs share their first characters (uuid v7: the time): ambiguous.
        let out = env.run(&["jobs", "show", &id[..4]]);
        assert_eq!(out.status.code(), Some(2), "{kind}");
        assert!(text(&out.stderr).contains("more than one job"), "{kind}: {}", text(&out.stderr));
        for bad in ["ffffffff", "not-an-id!"] {
            let out = env.run(&["jobs", "get", bad]);
            assert_eq!(out.status.code(), Some(2), "{kind}: {bad}: {}", text(&out.stderr));
        }
        // Cancelling a finished job: nothing to cancel (bad input), not "job failed".
        let out = env.run(&["jobs", "cancel", short]);
        assert_eq!(out.status.code(), Some(2), "{kind}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("nothing to cancel"), "{kind}: {}", text(&out.stderr));
    }
}

/// Item 15: the price before running, `points.confirm_above` with `--yes`;
/// `--out` onto a file and bad parameters refused before queuing (exit 2);
/// item 17: a native job does not warn about ComfyUI, and logs carry no
/// colours when not written to a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_the_price_and_refuses_before_queuing() {
    init();
    for (kind, url) in databases().await {
        let mut env = Env::new("", url.as_deref());
        env.set("STATION_POINTS_CONFIRM_ABOVE", "0");
        let png = input_png(env.dir.path());
        let png = png.to_str().unwrap();

        let out = env.run(&["run", "resize", "-i", png, "-p", "width=2"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kind}: {err}");
        assert!(err.contains("resize: 1 point (100 available"), "{kind}: the price: {err}");
        assert!(err.contains("--yes"), "{kind}: {err}");
        assert!(env.jobs().is_empty(), "{kind}: not confirmed, not queued");

        std::fs::write(env.dir.path().join("taken"), b"x").unwrap();
        let out = env.run(&["run", "resize", "-i", png, "-p", "width=2", "--yes", "--out", "taken"]);
        assert_eq!(out.status.code(), Some(2), "{kind}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("is a file"), "{kind}: {}", text(&out.stderr));
        let out = env.run(&["run", "resize", "-i", png, "-p", "width=2", "-p", "scale=2", "--yes"]);
        assert_eq!(out.status.code(), Some(2), "{kind}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("scale"), "{kind}: {}", text(&out.stderr));
        assert!(env.jobs().is_empty(), "{kind}: refusals queue nothing");

        let out = env.run(&["-v", "run", "resize", "-i", png, "-p", "width=2", "--yes", "--out", "o"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{kind}: {err}");
        assert!(!err.contains("no ComfyUI backend configured"), "{kind}: a native job: {err}");
        assert!(err.contains("INFO"), "{kind}: -v logs: {err}");
        assert!(!err.contains('\u{1b}'), "{kind}: no colours in a pipe: {err:?}");
        let jobs = env.jobs();
        assert_eq!(jobs.len(), 1, "{kind}");
        assert_eq!(jobs[0]["status"], json!("succeeded"), "{kind}");
        let balance = env.ok(&["users", "show", "tester", "--json"]);
        let balance: Value = serde_json::from_str(&balance).unwrap();
        assert_eq!(balance["points"]["balance"], json!(99), "{kind}: charged once: {balance}");
    }
}

/// Item 14: Ctrl-C on a job `station run` runs itself cancels the job and
/// interrupts its prompt on ComfyUI (the fake records it as the real one
/// does, in the prompt's history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_an_in_process_run_cancels_the_job_and_its_comfyui_prompt() {
    init();
    for (kind, url) in databases().await {
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let env = Env::new(&fake.url(), url.as_deref());
        install_slow_tool(&env.data_dir().join("tools"));
        let png = input_png(env.dir.path());
        let mut child = Reaped(
            env.command(&["run", "slow", "-i", png.to_str().unwrap(), "-p", "steps=1000", "-p", "step_ms=100"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // The job row appears once the CLI has opened the database and queued it.
        let store = env.store().await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let id = loop {
            let filter = station_core::JobFilter { limit: 10, ..Default::default() };
            let jobs = store.list_jobs(&filter).await.unwrap_or_default();
            if let Some(j) = jobs.first() {
                break j.id.clone();
            }
            assert!(Instant::now() < deadline, "{kind}: no job was queued");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let running = wait_job(&store, &id, "its prompt to run", |j| j.remote_id.is_some() && j.progress > 0.0).await;
        let prompt_id = running.remote_id.clone().unwrap();
        let sent = Command::new("kill").args(["-INT", &child.0.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{kind}: station run did not exit after Ctrl-C");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(130), "{kind}: {err}");
        assert!(err.contains("interrupted"), "{kind}: {err}");
        let row = store.get_job(&id).await.unwrap().unwrap();
        assert_eq!(row.status(), JobStatus::Cancelled, "{kind}: {err}");
        // ComfyUI's history says the prompt was interrupted.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let h: Value =
                reqwest::get(format!("{}/history/{prompt_id}", fake.url())).await.unwrap().json().await.unwrap();
            let messages = h[&prompt_id]["status"]["messages"].to_string();
            if messages.contains("execution_interrupted") {
                break;
            }
            assert!(Instant::now() < deadline, "{kind}: the prompt was not interrupted: {h}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let points: Value = serde_json::from_str(&env.ok(&["points", "balance", "--json"])).unwrap();
        assert_eq!(points["held"], json!(0), "{kind}: the hold came back: {points}");
    }
}

/// Items 16–18: `tools list` shows visibility in aligned columns, `users
/// show` prints text (JSON with --json), the configuration template works
/// uncommented and has every section, `config show` prints floats as
/// written, `config env` names each variable once, an unreachable
/// PostgreSQL is named, and `--help` says what Station is and what is required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_print_text_people_can_read() {
    init();
    let env = Env::new("", None);
    let tools = env.ok(&["tools", "list"]);
    let lines: Vec<&str> = tools.lines().collect();
    assert!(lines[0].contains("VISIBILITY"), "{tools}");
    let col = lines[0].find("COMMAND").unwrap();
    let vis = lines[0].find("VISIBILITY").unwrap();
    for l in &lines[1..] {
        assert_eq!(l.find('/'), Some(col), "aligned: {tools}");
        let v = &l[vis..];
        assert!(["public", "hidden", "admin"].iter().any(|w| v.starts_with(w)), "{l}");
    }

    env.ok(&["users", "create", "carol"]);
    let show = env.ok(&["users", "show", "carol"]);
    assert!(!show.trim_start().starts_with('{'), "{show}");
    assert!(show.contains("name        carol") && show.contains("identities  local:carol"), "{show}");
    assert!(show.contains("100 available"), "{show}");
    let json: Value = serde_json::from_str(&env.ok(&["users", "show", "carol", "--json"])).unwrap();
    assert_eq!(json["account"]["name"], json!("carol"));

    // The template: every section, and valid with every commented line uncommented.
    env.ok(&["config", "init", "full.toml"]);
    let template = std::fs::read_to_string(env.dir.path().join("full.toml")).unwrap();
    for section in [
        "[queue]",
        "[comfyui]",
        "[media]",
        "[points]",
        "[limits]",
        "[flows]",
        "[web]",
        "[telegram]",
        "[discord]",
        "[metrics]",
        "[alerts]",
        "[comfydeploy]",
        "[[comfydeploy.backends]]",
    ] {
        assert!(template.contains(section), "{section} missing from the template");
    }
    let uncommented: String = template
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(env.dir.path().join("uncommented.toml"), &uncommented).unwrap();
    let out = env.run(&["--config", "uncommented.toml", "config", "show"]);
    assert_eq!(out.status.code(), Some(0), "the uncommented template loads: {}\n{uncommented}", text(&out.stderr));

    let shown = env.ok(&["config", "show"]);
    assert!(shown.contains("auto_watermark_scale = 0.2\n"), "{shown}");
    assert!(shown.contains("auto_watermark_opacity = 0.5\n"), "{shown}");
    let vars = env.ok(&["config", "env"]);
    let names: Vec<&str> = vars.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "each variable once: {vars}");
    for name in [
        "STATION_COMFYUI_BACKENDS",
        "STATION_CONFIG",
        "STATION_WEB_SESSION_HOURS",
        "STATION_TELEGRAM_TOKEN",
        "STATION_COMFYDEPLOY_BACKENDS",
        "RUST_LOG",
    ] {
        assert!(names.contains(&name), "{name} missing: {vars}");
    }

    // An unreachable PostgreSQL is named with the reason.
    let mut pg = Env::new("", Some(&format!("postgres://postgres@127.0.0.1:{}/none", free_port())));
    pg.set("RUST_LOG", "off");
    let out = pg.run(&["jobs", "list"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot connect to postgres://") && err.contains("(connection refused)"), "{err}");

    let help = env.ok(&["--help"]);
    assert!(help.contains("self-hosted AI image generation"), "{help}");
    assert!(help.contains("130 interrupted"), "{help}");
    let out = env.run(&["loras", "add", "pixel"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for flag in ["--checkpoint", "--filename", "--visibility"] {
        assert!(err.contains(flag), "{flag} marked required: {err}");
    }
}
