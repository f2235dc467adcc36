//! Hosted ComfyUI (ComfyDeploy) through the real `station serve`: a tool
//! with `"service": "comfydeploy"` submitted over REST runs on the fake
//! ComfyDeploy API (`station-comfydeploy-fake`) — result pixels, progress
//! events, per-second cost, the provider's failure message, a refused
//! input, cancel, a SIGKILLed server whose run is resumed or collected
//! without queuing it again, and forged webhooks that change no outcome.
//! Each case runs on SQLite and, when `STATION_TEST_POSTGRES_URL` is set,
//! on PostgreSQL.

#[allow(dead_code)]
mod common;

use common::{free_port, station_vars, wait_http, wait_job};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use station_comfydeploy_fake::{Behaviour, Deployment, FakeComfyDeploy, FakeOptions, InputKind};
use station_testkit::{Store, testing};

const BIN: &str = env!("CARGO_BIN_EXE_station");
const KEY: &str = "cd-test-key";

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn databases() -> Vec<Option<String>> {
    let mut out = vec![None];
    if let Some(pg) = testing::postgres().await {
        out.push(Some(pg.url.clone()));
    }
    out
}

/// The hosted text-to-image tool: every input mapped to an external input
/// of deployment `dep-txt`; 1 point per second, 20 s reserved.
fn hosted_tool() -> Value {
    json!({
        "id": "hosted-dream", "name": "Hosted dream", "category": "text-to-image",
        "visibility": "public", "service": "comfydeploy",
        "inputs": {
            "prompt": {"type": "text", "required": true, "primary": true},
            "width": {"type": "integer", "default": 8, "min": 1, "max": 64},
            "height": {"type": "integer", "default": 8, "min": 1, "max": 64},
            "seed": {"type": "seed", "default": -1}
        },
        "cost": {"per_second": 1, "estimate_seconds": 20},
        "comfydeploy": {
            "deployment_id": "dep-txt",
            "inputs": {"prompt": "positive_prompt", "width": "width", "height": "height", "seed": "seed"}
        }
    })
}

/// A tool whose `style` goes to an external input the deployment lacks.
fn mismatched_tool() -> Value {
    let mut t = hosted_tool();
    t["id"] = json!("hosted-styled");
    t["name"] = json!("Hosted styled");
    t["inputs"]["style"] = json!({"type": "text", "default": "ink"});
    t["comfydeploy"]["inputs"]["style"] = json!("style_text");
    t
}

async fn fake() -> FakeComfyDeploy {
    FakeComfyDeploy::start(FakeOptions {
        api_key: KEY.into(),
        deployments: vec![Deployment::new(
            "dep-txt",
            &[
                ("positive_prompt", InputKind::Text),
                ("width", InputKind::Number),
                ("height", InputKind::Number),
                ("seed", InputKind::Number),
            ],
        )],
        behaviour: Behaviour::default(),
    })
    .await
}

struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    port: u16,
    kind: &'static str,
    key: String,
    http: reqwest::Client,
}

impl Env {
    fn new(fake: &FakeComfyDeploy, database_url: Option<&str>, api_key: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut vars = station_vars(&dir, "", database_url);
        let backends =
            json!([{"name": "cd", "api_url": fake.url(), "api_key_env": "CD_TEST_KEY", "deployments": ["dep-txt"]}]);
        vars.extend([
            ("STATION_COMFYDEPLOY_BACKENDS".to_string(), backends.to_string()),
            ("CD_TEST_KEY".into(), api_key.into()),
            ("STATION_COMFYDEPLOY_POLL_MIN_MS".into(), "50".into()),
            ("STATION_COMFYDEPLOY_POLL_MAX_MS".into(), "400".into()),
            ("STATION_WEB_PUBLIC_URL".into(), format!("http://127.0.0.1:{port}")),
        ]);
        station_testkit::install_tools(&dir.path().join("data/tools"), &[hosted_tool(), mismatched_tool()]);
        let mut env = Env {
            dir,
            vars,
            port,
            kind: if database_url.is_some() { "postgres" } else { "sqlite" },
            key: String::new(),
            http: reqwest::Client::new(),
        };
        let created = env.command(&["users", "create", "alice"]).output().unwrap();
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        let key = env.command(&["keys", "create", "--user", "alice", "--name", "t"]).output().unwrap();
        env.key = String::from_utf8(key.stdout).unwrap().trim().to_string();
        env
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

    /// `station serve` on the environment's port (the same after a restart,
    /// so the webhook URL stays right).
    async fn serve(&self, name: &str) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = self
            .command(&["serve"])
            .env("STATION_LISTEN", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_http(self.port, "/healthz").await;
        child
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
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

    async fn submit(&self, tool: &str, params: Value) -> String {
        let r = self
            .http
            .post(self.url("/api/v1/generations"))
            .bearer_auth(&self.key)
            .json(&json!({"tool": tool, "params": params}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{}: {body}", self.kind);
        body["id"].as_str().unwrap().to_string()
    }

    async fn generation(&self, id: &str) -> Value {
        let r = self.http.get(self.url(&format!("/api/v1/generations/{id}"))).bearer_auth(&self.key).send().await;
        r.unwrap().json().await.unwrap()
    }

    async fn wait_end(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let g = self.generation(id).await;
            if matches!(g["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return g;
            }
            assert!(Instant::now() < deadline, "{}: generation {id} never ended: {g}", self.kind);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first output's pixels.
    async fn output_image(&self, g: &Value) -> image::RgbImage {
        let url = g["outputs"][0]["url"].as_str().unwrap_or_else(|| panic!("no output: {g}"));
        let r = self.http.get(self.url(url)).bearer_auth(&self.key).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        image::load_from_memory(&r.bytes().await.unwrap()).unwrap().to_rgb8()
    }

    /// Every event of a generation's stream until it ends, as (type, data).
    async fn events(&self, id: &str) -> Vec<(String, Value)> {
        let mut r = self
            .http
            .get(self.url(&format!("/api/v1/generations/{id}/events")))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut text = String::new();
        while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(60), r.chunk()).await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let mut out = vec![];
        for block in text.split("\n\n") {
            let kind = block.lines().find_map(|l| l.strip_prefix("event:")).map(|s| s.trim().to_string());
            let data = block.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim);
            if let (Some(kind), Some(data)) = (kind, data) {
                out.push((kind, serde_json::from_str(data).unwrap_or(Value::Null)));
            }
        }
        out
    }

    /// Points the job was charged (its captures) and whether it was released.
    async fn settlement(&self, id: &str) -> (i64, bool) {
        let entries = self.store().await.ledger_for_job(id).await.unwrap();
        let charged = entries.iter().filter(|e| e.kind == "capture").map(|e| e.amount.abs()).sum();
        (charged, entries.iter().any(|e| e.kind == "release"))
    }
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_run_succeeds_with_its_pixels_progress_and_cost_by_the_second() {
    init();
    for db in databases().await {
        let fake = fake().await;
        fake.set_behaviour(Behaviour { steps: 6, step_ms: 120, ..Behaviour::default() });
        let env = Env::new(&fake, db.as_deref(), KEY);
        let k = env.kind;
        let server = env.serve("serve").await;
        let id = env.submit("hosted-dream", json!({"prompt": "a red fox", "width": 12, "height": 10, "seed": 7})).await;
        let events = env.events(&id).await;
        let g = env.wait_end(&id).await;
        assert_eq!(g["status"], "succeeded", "{k}: {g}\n{}", env.log("serve"));

        // The deployment got each input under its external name.
        let row = wait_job(&env.store().await, &id, "its run", |j| j.remote_id.is_some()).await;
        let run_id = row.remote_id.clone().unwrap();
        assert_eq!(row.backend.as_deref(), Some("cd"), "{k}");
        let inputs = fake.run_inputs(&run_id).unwrap();
        assert_eq!(
            Value::Object(inputs),
            json!({"positive_prompt": "a red fox", "width": 12, "height": 10, "seed": 7})
        );
        assert_eq!(fake.runs_created(), 1, "{k}");
        assert!(fake.webhooks_sent() > 0, "{k}: the provider was given Station's hook and called it");

        // The result is the provider's picture, stored in Station's media.
        let img = env.output_image(&g).await;
        assert_eq!(img.dimensions(), (12, 10), "{k}");
        assert_eq!(img.get_pixel(0, 0).0, [7, 0, 0], "{k}: the seed's colour");

        // Progress flowed as events, never backwards, with the provider's words.
        let progress: Vec<&Value> = events.iter().filter(|(t, _)| t == "progress").map(|(_, d)| d).collect();
        assert!(progress.len() >= 2, "{k}: {events:?}");
        let fractions: Vec<f64> = progress.iter().map(|d| d["fraction"].as_f64().unwrap()).collect();
        assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{k}: {fractions:?}");
        assert_eq!(fractions.last(), Some(&1.0), "{k}");
        assert!(
            progress.iter().any(|d| d["label"].as_str().is_some_and(|l| l.starts_with("KSampler"))),
            "{k}: {events:?}"
        );
        assert!(events.iter().any(|(t, _)| t == "result"), "{k}: {events:?}");

        // Charged by the measured seconds (started → finished), never the whole hold.
        let row = env.store().await.get_job(&id).await.unwrap().unwrap();
        let run_ms = row.finished_at.unwrap() - row.started_at.expect("the run was seen starting");
        let (charged, released) = env.settlement(&id).await;
        let expected = station_core::points::charge(
            &station_core::tools::Cost::PerSecond { points: 1, estimate_seconds: 20 },
            1.0,
            run_ms,
            20,
        );
        assert_eq!((charged, released), (expected, false), "{k}: run of {run_ms} ms");
        assert!((1..20).contains(&charged), "{k}: {charged}");
        kill(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_says_the_providers_reason_and_refused_inputs_name_the_input() {
    init();
    for db in databases().await {
        let fake = fake().await;
        fake.set_behaviour(Behaviour { fail_with: Some("CUDA out of memory".into()), ..Behaviour::default() });
        let env = Env::new(&fake, db.as_deref(), KEY);
        let k = env.kind;
        let server = env.serve("serve").await;
        let id = env.submit("hosted-dream", json!({"prompt": "too big"})).await;
        let g = env.wait_end(&id).await;
        assert_eq!(g["status"], "failed", "{k}: {g}");
        assert_eq!(g["error"]["code"], "execution_error", "{k}: {g}");
        assert!(g["error"]["message"].as_str().unwrap().contains("CUDA out of memory"), "{k}: {g}");
        assert_eq!(env.settlement(&id).await, (0, true), "{k}: the hold is released");
        assert_eq!(fake.runs_created(), 1, "{k}: a run that failed is not retried");

        // The deployment has no `style_text`: its 422 fails the job at once, naming it.
        fake.set_behaviour(Behaviour::default());
        let id = env.submit("hosted-styled", json!({"prompt": "x"})).await;
        let g = env.wait_end(&id).await;
        assert_eq!(
            (g["status"].as_str(), g["error"]["code"].as_str()),
            (Some("failed"), Some("invalid_input")),
            "{k}: {g}"
        );
        assert!(g["error"]["message"].as_str().unwrap().contains("style_text"), "{k}: {g}");
        assert_eq!(fake.runs_created(), 1, "{k}: nothing was queued");
        kill(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_fails_the_job_and_readiness_names_the_backend() {
    init();
    let fake = fake().await;
    let env = Env::new(&fake, None, "wrong-key");
    let server = env.serve("serve").await;
    let id = env.submit("hosted-dream", json!({"prompt": "x"})).await;
    let g = env.wait_end(&id).await;
    assert_eq!(g["status"], "failed", "{g}");
    assert!(g["error"]["message"].as_str().unwrap().contains("CD_TEST_KEY"), "{g}");
    let ready: Value = reqwest::get(env.url("/readyz")).await.unwrap().json().await.unwrap();
    let problems = ready["problems"].to_string();
    assert!(problems.contains("comfydeploy backend cd is down") && problems.contains("API key"), "{ready}");
    assert_eq!(ready["services"]["comfydeploy"]["capacity"], 0, "{ready}");
    assert_eq!(fake.runs_created(), 0);
    kill(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_cancels_the_run_at_the_provider() {
    init();
    for db in databases().await {
        let fake = fake().await;
        fake.set_behaviour(Behaviour { steps: 200, step_ms: 200, ..Behaviour::default() });
        let env = Env::new(&fake, db.as_deref(), KEY);
        let k = env.kind;
        let server = env.serve("serve").await;
        let id = env.submit("hosted-dream", json!({"prompt": "slow"})).await;
        let row = wait_job(&env.store().await, &id, "running", |j| j.status == "running").await;
        let r = env
            .http
            .post(env.url(&format!("/api/v1/generations/{id}/cancel")))
            .bearer_auth(&env.key)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{k}: {}", r.status());
        let g = env.wait_end(&id).await;
        assert_eq!(g["status"], "cancelled", "{k}: {g}");
        let run = fake.run(row.remote_id.as_deref().unwrap()).unwrap();
        assert_eq!(run["status"], "cancelled", "{k}: {run}");
        assert!(fake.cancels() >= 1, "{k}");
        assert_eq!(env.settlement(&id).await, (0, true), "{k}");
        kill(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_run_is_collected_or_followed_never_queued_again() {
    init();
    for db in databases().await {
        let fake = fake().await;
        fake.set_behaviour(Behaviour { steps: 10, step_ms: 150, ..Behaviour::default() });
        let env = Env::new(&fake, db.as_deref(), KEY);
        let k = env.kind;
        let store = env.store().await;

        // 1. SIGKILL while the run runs; it finishes while no Station is up.
        let first = env.serve("first").await;
        let id = env.submit("hosted-dream", json!({"prompt": "one", "seed": 3})).await;
        let row = wait_job(&store, &id, "its run id", |j| j.remote_id.is_some()).await;
        let run_id = row.remote_id.clone().unwrap();
        kill(first);
        let deadline = Instant::now() + Duration::from_secs(60);
        while fake.run(&run_id).unwrap()["status"] != "success" {
            assert!(Instant::now() < deadline, "{k}: the fake's run never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let second = env.serve("second").await;
        let g = env.wait_end(&id).await;
        assert_eq!(g["status"], "succeeded", "{k}: {g}\n{}", env.log("second"));
        assert_eq!(env.output_image(&g).await.get_pixel(0, 0).0, [3, 0, 0], "{k}");
        assert_eq!(fake.runs_created(), 1, "{k}: the finished run was collected, not run again");
        assert!(env.log("second").contains("resuming a run already on ComfyDeploy"), "{k}");

        // 2. SIGKILL mid-run and restart at once: the new process follows the same run.
        let id = env.submit("hosted-dream", json!({"prompt": "two", "seed": 4})).await;
        let row = wait_job(&store, &id, "its run id", |j| j.remote_id.is_some()).await;
        kill(second);
        let third = env.serve("third").await;
        let g = env.wait_end(&id).await;
        assert_eq!(g["status"], "succeeded", "{k}: {g}\n{}", env.log("third"));
        assert_eq!(fake.runs_created(), 2, "{k}: one run per job");
        let after = store.get_job(&id).await.unwrap().unwrap();
        assert_eq!(after.remote_id, row.remote_id, "{k}: still the first run");
        assert_eq!(env.output_image(&g).await.get_pixel(0, 0).0, [4, 0, 0], "{k}");
        kill(third);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_webhooks_only_make_station_ask_and_change_no_outcome() {
    init();
    for db in databases().await {
        let fake = fake().await;
        // The provider sends none: every webhook here is forged.
        fake.set_behaviour(Behaviour { steps: 8, step_ms: 150, webhooks: false, ..Behaviour::default() });
        let env = Env::new(&fake, db.as_deref(), KEY);
        let k = env.kind;
        let server = env.serve("serve").await;
        let id = env.submit("hosted-dream", json!({"prompt": "real", "seed": 9})).await;
        let row = wait_job(&env.store().await, &id, "its run id", |j| j.remote_id.is_some()).await;
        let run_id = row.remote_id.unwrap();
        let hook = env.url("/hooks/comfydeploy");
        let forged = [
            json!({"run_id": run_id, "status": "failed", "live_status": "forged failure"}),
            json!({"run_id": run_id, "status": "success", "progress": 1,
                   "outputs": [{"data": {"images": [{"url": "http://127.0.0.1:9/forged.png", "filename": "forged.png", "type": "output"}]}}]}),
            json!({"run_id": "someone-elses-run", "status": "success"}),
        ];
        for body in &forged {
            let r = env.http.post(&hook).json(body).send().await.unwrap();
            assert_eq!(r.status(), 204, "{k}: {body}");
        }
        let r = env.http.post(&hook).body("not json").send().await.unwrap();
        assert_eq!(r.status(), 400, "{k}");
        let g = env.wait_end(&id).await;
        assert_eq!(g["status"], "succeeded", "{k}: {g}");
        assert_eq!(env.output_image(&g).await.get_pixel(0, 0).0, [9, 0, 0], "{k}: the provider's own output");
        assert_eq!(fake.runs_created(), 1, "{k}");
        kill(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_webhooks_wake_the_waiting_job() {
    init();
    let fake = fake().await;
    let mut env = Env::new(&fake, None, KEY);
    // Polls ten minutes apart: only a webhook can make Station ask again in time.
    env.vars.push(("STATION_COMFYDEPLOY_POLL_MIN_MS".into(), "600000".into()));
    env.vars.push(("STATION_COMFYDEPLOY_POLL_MAX_MS".into(), "600000".into()));
    let server = env.serve("serve").await;
    let id = env.submit("hosted-dream", json!({"prompt": "woken", "seed": 5})).await;
    let g = env.wait_end(&id).await;
    assert_eq!(g["status"], "succeeded", "{g}\n{}", env.log("serve"));
    assert_eq!(env.output_image(&g).await.get_pixel(0, 0).0, [5, 0, 0]);
    assert!(fake.status_reads() <= fake.webhooks_sent() + 1, "one read per hint at most");
    kill(server);
}
