//! `station backends refresh`, `station models list|set` and
//! `station run --param model=…` through the real binary against fake
//! ComfyUI servers with their own model folders. Runs on SQLite, and on
//! PostgreSQL when `STATION_TEST_POSTGRES_URL` is set.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_testkit::testing::{self, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_station");

fn station(dir: &Path, db: &TestDb, backends: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STATION_DATA_DIR", dir.join("data"))
        .env("STATION_DATABASE_URL", &db.url)
        .env("STATION_COMFYUI_BACKENDS", backends)
        .env("STATION_QUEUE_POLL_MS", "100")
        .env("USER", "tester")
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Runs the command, expecting `code`; returns stdout (stderr when it failed).
fn expect(dir: &Path, db: &TestDb, backends: &str, args: &[&str], code: i32) -> String {
    let out = station(dir, db, backends, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{} {args:?}\nstdout: {stdout}\nstderr: {stderr}", db.kind);
    if code != 0 {
        return stderr.into_owned();
    }
    stdout
}

fn line_of<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_list_set_and_run_with_a_model() {
    let a = FakeComfy::start(FakeOptions {
        checkpoints: vec!["sd_xl_base_1.0.safetensors".into(), "dreamshaper_8.safetensors".into()],
        loras: vec!["ink.safetensors".into()],
        ..Default::default()
    })
    .await;
    // What ComfyUI shows of the LoRA's safetensors header (`GET /view_metadata/loras`).
    a.set_model_metadata("loras", "ink.safetensors", Some(&json!({"ss_base_model_version": "sd_v1"})));
    let b = FakeComfy::start(FakeOptions {
        checkpoints: vec!["dreamshaper_8.safetensors".into()],
        loras: vec![],
        ..Default::default()
    })
    .await;
    let backends = format!("{},{}", a.url(), b.url());
    for db in testing::all().await {
        let kind = db.kind;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let empty = expect(dir, &db, &backends, &["models", "list"], 0);
        assert!(empty.contains("no models known yet"), "{kind}: {empty}");

        let refreshed = expect(dir, &db, &backends, &["backends", "refresh"], 0);
        assert!(refreshed.contains("up: 2 checkpoint"), "{kind}: {refreshed}");
        assert!(refreshed.contains("up: 1 checkpoint"), "{kind}: {refreshed}");

        let list = expect(dir, &db, &backends, &["models", "list"], 0);
        let xl = line_of(&list, "sd_xl_base_1.0.safetensors");
        assert!(xl.contains("SDXL     name"), "{kind}: inferred from the name: {xl}");
        let ink = line_of(&list, "ink.safetensors");
        assert!(ink.contains("SD1.5    metadata"), "{kind}: from the file's metadata: {ink}");
        let shaper = line_of(&list, "dreamshaper_8.safetensors");
        assert!(shaper.contains("unknown"), "{kind}: {shaper}");
        // Both backends, by their names (`backend1`, `backend2`, … in URL order).
        assert!(shaper.contains("backend1,backend2"), "{kind}: {shaper}");
        assert!(xl.contains("backend1") && !xl.contains("backend2"), "{kind}: {xl}");
        assert!(list.contains("hint: 1 model(s) have an unknown base model"), "{kind}: {list}");
        assert!(line_of(&list, "4x-station.pth").contains(" -  "), "{kind}: no base model for upscale models: {list}");

        let set = expect(
            dir,
            &db,
            &backends,
            &[
                "models",
                "set",
                "dreamshaper_8.safetensors",
                "--base-model",
                "sd1.5",
                "--label",
                "DreamShaper 8",
                "--default",
                "--price-multiplier",
                "1.5",
            ],
            0,
        );
        assert!(set.contains("base model SD1.5, default"), "{kind}: {set}");
        let json: Value = serde_json::from_str(&expect(dir, &db, &backends, &["models", "list", "--json"], 0)).unwrap();
        let m = json.as_array().unwrap().iter().find(|m| m["name"] == "dreamshaper_8.safetensors").unwrap();
        assert_eq!(m["base_model"], "SD1.5", "{kind}");
        assert_eq!(m["base_model_source"], "catalog", "{kind}");
        let ink = json.as_array().unwrap().iter().find(|m| m["name"] == "ink.safetensors").unwrap();
        assert_eq!((&ink["base_model"], &ink["base_model_source"]), (&json!("SD1.5"), &json!("metadata")), "{kind}");
        let xl = json.as_array().unwrap().iter().find(|m| m["name"] == "sd_xl_base_1.0.safetensors").unwrap();
        assert_eq!(xl["base_model_source"], "name", "{kind}");
        assert_eq!(m["label"], "DreamShaper 8", "{kind}");
        assert_eq!(m["price_multiplier"], 1.5, "{kind}");
        assert_eq!(m["default"], true, "{kind}");

        let hidden = expect(dir, &db, &backends, &["models", "set", "sd_xl_base_1.0.safetensors", "--hidden"], 0);
        assert!(hidden.contains("hidden"), "{kind}: {hidden}");
        let list = expect(dir, &db, &backends, &["models", "list"], 0);
        assert!(line_of(&list, "sd_xl_base_1.0.safetensors").contains("hidden"), "{kind}: {list}");

        let unknown = expect(dir, &db, &backends, &["models", "set", "nope.safetensors", "--hidden"], 2);
        assert!(
            unknown.contains("no backend has a model named") && unknown.contains("dreamshaper_8"),
            "{kind}: {unknown}"
        );
        let bad =
            expect(dir, &db, &backends, &["models", "set", "dreamshaper_8.safetensors", "--price-multiplier=0"], 2);
        assert!(bad.contains("price_multiplier"), "{kind}: {bad}");

        // `backends check` names the models each backend can run the tool with.
        let check = expect(dir, &db, &backends, &["backends", "check"], 0);
        assert!(check.contains("can run   txt2img with dreamshaper_8.safetensors"), "{kind}: {check}");
        assert!(check.contains("model     checkpoint      sd_xl_base_1.0.safetensors"), "{kind}: {check}");

        // A run names its model (as an administrator on the local machine it needs no points).
        let run = expect(
            dir,
            &db,
            &backends,
            &[
                "run",
                "txt2img",
                "--param",
                "prompt=a lighthouse",
                "--param",
                "model=dreamshaper_8.safetensors",
                "--param",
                "width=64",
                "--param",
                "height=64",
                "--param",
                "steps=2",
                "--out",
                dir.join("out").to_str().unwrap(),
            ],
            0,
        );
        assert!(!run.is_empty(), "{kind}");
        let refused = expect(
            dir,
            &db,
            &backends,
            &["run", "txt2img", "--param", "prompt=x", "--param", "model=gone.safetensors"],
            2,
        );
        assert!(refused.contains("model") && refused.contains("dreamshaper_8.safetensors"), "{kind}: {refused}");

        // The model leaves both backends: `backends refresh` stores that, `backends
        // check` says why a backend cannot draw, and a run naming it is refused.
        expect(dir, &db, &backends, &["models", "set", "sd_xl_base_1.0.safetensors", "--visible"], 0);
        a.remove_model("checkpoints", "dreamshaper_8.safetensors");
        b.remove_model("checkpoints", "dreamshaper_8.safetensors");
        let refreshed = expect(dir, &db, &backends, &["backends", "refresh"], 0);
        assert!(
            refreshed.contains("up: 1 checkpoint") && refreshed.contains("up: 1 upscale_model"),
            "{kind}: {refreshed}"
        );
        let list = expect(dir, &db, &backends, &["models", "list"], 0);
        let gone = line_of(&list, "dreamshaper_8.safetensors");
        assert!(!gone.contains("backend1") && !gone.contains("backend2"), "{kind}: on no backend now: {gone}");
        let check = expect(dir, &db, &backends, &["backends", "check"], 0);
        assert!(check.contains("cannot    txt2img: has no checkpoint model"), "{kind}: {check}");
        let refused = expect(
            dir,
            &db,
            &backends,
            &["run", "txt2img", "--param", "prompt=x", "--param", "model=dreamshaper_8.safetensors"],
            2,
        );
        assert!(
            refused.contains("unknown model \"dreamshaper_8.safetensors\"; available: sd_xl_base_1.0.safetensors"),
            "{kind}: {refused}"
        );
        // Back for the next database's run.
        a.add_model("checkpoints", "dreamshaper_8.safetensors");
        b.add_model("checkpoints", "dreamshaper_8.safetensors");
    }
}

/// Kills the server when the test ends, passing or not.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 20 item 6: a fresh `station serve` pointed at a ComfyUI with one
/// checkpoint lists Text to image first and generates with it, no JSON written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_with_one_checkpoint_generates_text_to_image() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake =
        FakeComfy::start(FakeOptions { checkpoints: vec!["my-first-model.safetensors".into()], ..Default::default() })
            .await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The operator makes an account first (one process at a time on a fresh SQLite file).
    let user = Command::new(BIN)
        .args(["users", "create", "alice"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STATION_DATA_DIR", dir.join("data"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(user.status.success(), "{}", String::from_utf8_lossy(&user.stderr));
    let key_out = Command::new(BIN)
        .args(["keys", "create", "--user", "alice", "--name", "first"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STATION_DATA_DIR", dir.join("data"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(key_out.status.success(), "{}", String::from_utf8_lossy(&key_out.stderr));
    let key = String::from_utf8(key_out.stdout).unwrap().trim().to_owned();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let _server = Server(
        Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STATION_DATA_DIR", dir.join("data"))
            .env("STATION_COMFYUI_BACKENDS", fake.url())
            .env("STATION_LISTEN", format!("127.0.0.1:{port}"))
            .env("STATION_QUEUE_POLL_MS", "100")
            .env("USER", "tester")
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let logs = || std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
    // The gallery's list: Text to image first, once the first health check stored the model.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/api/v1/tools")).bearer_auth(&key).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["tools"][0]["id"] == "txt2img"
        {
            assert_eq!(v["tools"][0]["name"], "Text to image");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "Text to image never listed first:\n{}", logs());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let body = serde_json::json!({"tool": "txt2img", "params": {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}});
    let r = http.post(format!("{base}/api/v1/generations")).bearer_auth(&key).json(&body).send().await.unwrap();
    let status = r.status();
    let job: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status}: {job}");
    let id = job["id"].as_str().unwrap().to_owned();
    loop {
        let j: Value = http
            .get(format!("{base}/api/v1/generations/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match j["status"].as_str() {
            Some("succeeded") => {
                assert_eq!(j["params"]["model"], "my-first-model.safetensors", "{j}");
                break;
            }
            Some("failed" | "cancelled") => panic!("{j}\n{}", logs()),
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "never finished: {j}\n{}", logs());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(fake.last_prompt().unwrap()["prompt"]["4"]["inputs"]["ckpt_name"], "my-first-model.safetensors");
}
