//! The web app in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver with fantoccini, against the real
//! `station serve` binary and a fake ComfyUI — on SQLite and (when configured)
//! PostgreSQL.
//!
//! The operator's first sign-in link comes from `station users create --admin`;
//! the admin opens a tool, fills the generated form, uploads an image, watches
//! progress reach 100 %, sees the result, reruns it and sees the balance drop,
//! creates and revokes an API key, opens the admin dashboard and signs out; a
//! second user signs in and is refused the dashboard. Screenshots of the main
//! pages are saved under `target/screenshots/`.
//!
//! Without chromium and chromedriver the test is skipped with a message —
//! unless `CI=true`, where their absence fails it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use station_comfyui_fake::{FakeComfy, FakeOptions};

const BIN: &str = env!("CARGO_BIN_EXE_station");
const CHROMIUM: &str = "/usr/bin/chromium";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `chromedriver` on PATH and the chromium binary, or why not.
fn browser_available() -> Result<PathBuf, String> {
    let driver = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
        .ok_or("chromedriver is not on PATH")?;
    if !Path::new(CHROMIUM).is_file() {
        return Err(format!("{CHROMIUM} is missing"));
    }
    Ok(driver)
}

/// Kills a child process when dropped (also when an assertion fails).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where screenshots go: `target/screenshots` beside the test binary's profile folder.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/browser-… → target
    let target = exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    // Let transitions (the progress bar's, the toast's) settle.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Evaluates `js` (a function body returning a value) until it returns true.
async fn until(c: &Client, what: &str, js: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = c.execute(js, vec![]).await.unwrap_or(Value::Null);
        if v == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let body = c.execute("return document.body ? document.body.innerText : ''", vec![]).await;
            let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            panic!("timed out waiting for {what} at {url}; page text: {body:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

async fn click(c: &Client, css: &str) {
    let e = c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(css)).await.unwrap();
    // Into the middle of the window: the form's sticky Generate bar covers its bottom edge.
    let arg = serde_json::to_value(&e).unwrap();
    c.execute("arguments[0].scrollIntoView({ block: 'center' })", vec![arg]).await.unwrap();
    e.click().await.unwrap();
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let e = c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// The header's available points once loaded.
async fn balance(c: &Client) -> i64 {
    until(c, "the balance", "return !!document.querySelector('#balance[data-available]')").await;
    let v = c.execute("return document.getElementById('balance').dataset.available", vec![]).await.unwrap();
    v.as_str().unwrap().parse().unwrap()
}

/// Waits for the job page to finish, recording the progress bar on the way.
/// Returns the distinct progress values seen and whether a preview was shown.
async fn watch_job(c: &Client) -> (Vec<i64>, bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = vec![];
    let mut previewed = false;
    loop {
        let v = c
            .execute(
                "const p = document.querySelector('.progress');
                 const pre = document.querySelector('.live-preview');
                 const img = document.querySelector('.result-image');
                 return {
                   pct: p ? parseInt(p.getAttribute('aria-valuenow'), 10) : null,
                   preview: !!(pre && !pre.hidden && pre.src.startsWith('data:image/')),
                   done: !!(img && img.complete && img.naturalWidth > 0),
                   status: (document.getElementById('job-status') || {}).textContent,
                 };",
                vec![],
            )
            .await
            .unwrap();
        if let Some(p) = v["pct"].as_i64()
            && seen.last() != Some(&p)
        {
            seen.push(p);
        }
        previewed |= v["preview"] == true;
        if v["done"] == true {
            return (seen, previewed);
        }
        assert!(Instant::now() < deadline, "job did not finish: {v}; progress seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// An operator tool for the scenario: an image input, a slider, an enum, a
/// seed and advanced inputs; StationSteps makes progress and preview frames.
fn install_tool(tools_dir: &Path) {
    std::fs::create_dir_all(tools_dir).unwrap();
    let tool = json!({
        "id": "sketch", "name": "Sketch", "category": "image-to-image", "service": "comfyui",
        "description": "Enlarges a picture step by step (a test tool).",
        "inputs": {
            "image": {"type": "image", "required": true, "primary": true, "description": "The picture to enlarge."},
            "scale_by": {"type": "number", "default": 2, "min": 1, "max": 4, "step": 1, "description": "How many times larger."},
            "upscale_method": {"type": "enum", "choices": ["nearest-exact", "lanczos"], "default": "nearest-exact"},
            "name": {"type": "text", "default": "sketch", "max_length": 40, "description": "Saved file name prefix."},
            "seed": {"type": "seed", "default": -1, "advanced": true},
            "steps": {"type": "integer", "default": 4, "min": 1, "max": 50, "advanced": true},
            "step_ms": {"type": "integer", "default": 20, "min": 0, "max": 1000, "advanced": true}
        },
        "cost": {"per_run": 3},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
                "2": {"class_type": "StationSteps", "inputs": {"image": ["1", 0], "steps": 4, "step_ms": 20, "seed": 0}},
                "3": {"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact", "scale_by": 2.0}},
                "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "station-sketch"}}
            },
            "bindings": {
                "image": ["1.inputs.image"],
                "scale_by": ["3.inputs.scale_by"],
                "upscale_method": ["3.inputs.upscale_method"],
                "name": ["4.inputs.filename_prefix"],
                "seed": ["2.inputs.seed"],
                "steps": ["2.inputs.steps"],
                "step_ms": ["2.inputs.step_ms"]
            },
            "outputs": ["4"]
        }
    });
    std::fs::write(tools_dir.join("sketch.json"), serde_json::to_vec_pretty(&tool).unwrap()).unwrap();
}

/// A 32×24 PNG to upload.
fn input_png(dir: &Path) -> PathBuf {
    let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 200]));
    let path = dir.join("upload.png");
    img.save(&path).unwrap();
    path
}

/// One Station process with its data folder, for one database.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
    vars: Vec<(String, String)>,
    child: Option<Reaped>,
}

impl Server {
    fn new(backend: &str, database_url: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut vars = vec![
            ("STATION_DATA_DIR".to_string(), dir.path().join("data").display().to_string()),
            ("STATION_COMFYUI_BACKENDS".into(), backend.into()),
            ("STATION_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("STATION_WEB_PUBLIC_URL".into(), format!("http://127.0.0.1:{port}")),
            ("STATION_QUEUE_POLL_MS".into(), "100".into()),
            ("STATION_COMFYUI_HEALTH_INTERVAL_SECONDS".into(), "1".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        if let Some(url) = database_url {
            vars.push(("STATION_DATABASE_URL".into(), url.into()));
        }
        install_tool(&dir.path().join("data").join("tools"));
        Server { dir, port, vars, child: None }
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

    /// Runs a CLI command; its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(out.status.success(), "station {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    async fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let child = self.command(&["serve"]).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(Reaped(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(self.url("/healthz")).await.is_err() {
            assert!(Instant::now() < deadline, "station serve never answered:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

/// The link line of `station users create --admin` / `login-link` output.
fn link_in(out: &str) -> String {
    out.lines().find(|l| l.starts_with("http")).unwrap_or_else(|| panic!("no link in {out:?}")).trim().to_string()
}

async fn chromedriver(driver: &Path) -> (Reaped, Client) {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let child = Reaped(child);
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--lang=en-US"],
        },
    });
    let caps = caps.as_object().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (child, c),
            Err(e) => {
                assert!(Instant::now() < deadline, "chromedriver did not start a session: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A browser session for one test: `None` (the test is skipped, saying
/// why) when Chromium and its driver are not installed — except under CI,
/// where that fails the test.
async fn browser() -> Option<(Reaped, Client)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let driver = match browser_available() {
        Ok(d) => d,
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "skipped: {why}; install Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver) to run the browser tests"
            );
            return None;
        }
        Err(why) => {
            panic!("CI=true but the browser tests cannot run: {why} (.ci/run installs chromium and chromium-driver)")
        }
    };
    Some(chromedriver(&driver).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_generate_rerun_keys_and_admin_in_chromium() {
    let Some((_driver, c)) = browser().await else { return };
    let mut dbs = vec![("sqlite", None)];
    let pg = station_testkit::testing::postgres().await;
    if let Some(pg) = &pg {
        dbs.push(("postgres", Some(pg.url.clone())));
    }
    for (kind, url) in dbs {
        c.delete_all_cookies().await.unwrap();
        c.set_window_size(1280, 900).await.unwrap();
        // A fresh backend per run: ComfyUI's cache would answer the same prompt at once.
        let fake = FakeComfy::start(FakeOptions::default()).await;
        scenario(&c, &fake, kind, url.as_deref()).await;
    }
    c.close().await.unwrap();
}

async fn scenario(c: &Client, fake: &FakeComfy, kind: &str, database_url: Option<&str>) {
    let mut server = Server::new(&fake.url(), database_url);
    // The first operator: an administrator and a sign-in link, printed by the CLI.
    let admin_link = link_in(&server.run(&["users", "create", "--admin", "root"]));
    assert!(admin_link.starts_with(&server.url("/login?token=")), "{admin_link}");
    server.run(&["users", "create", "bob"]);
    let bob_link = link_in(&server.run(&["users", "login-link", "bob"]));
    server.start().await;
    let shots = |name: &str| format!("{kind}-{name}");
    let upload = input_png(server.dir.path());

    // Signing in through the link lands on the tool gallery.
    c.goto(&admin_link).await.unwrap();
    until(c, "the gallery", "return !!document.querySelector('.card[data-tool=\"sketch\"]')").await;
    assert!(c.current_url().await.unwrap().path().ends_with("/tools"));
    assert_eq!(text_of(c, ".who .name").await, "root");
    let start_balance = balance(c).await;
    assert_eq!(start_balance, 100, "{kind}: the starting grant");
    screenshot(c, &shots("tools")).await;

    // The tool page: a form generated from the tool's inputs.
    click(c, ".card[data-tool=\"sketch\"] a").await;
    until(c, "the form", "return !!document.querySelector('form.tool-form .field[data-input=\"scale_by\"]')").await;
    let kinds = c
        .execute(
            "return [...document.querySelectorAll('.tool-form .field')].map(f => f.dataset.input + ':' + f.dataset.type +
               (f.closest('details.advanced') ? ':advanced' : '') +
               (f.querySelector('input[type=range]') ? ':slider' : '') + (f.querySelector('select') ? ':select' : ''))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        kinds,
        json!([
            "image:image",
            "scale_by:number:slider",
            "upscale_method:enum:select",
            "name:text",
            "seed:seed:advanced",
            "steps:integer:advanced:slider",
            "step_ms:integer:advanced:slider"
        ]),
        "{kind}"
    );
    // Every control has a label or an accessible name.
    let unlabeled = c
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
               .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
               .map(e => e.outerHTML)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabeled, json!([]), "{kind}: controls without a label");
    let form_text = text_of(c, "form.tool-form").await;
    assert!(!form_text.contains("null") && !form_text.contains("undefined"), "{kind}: {form_text}");

    // Fill it: upload an image (preview shown), move the slider, open the advanced inputs.
    let file = c.find(Locator::Css("#in-image")).await.unwrap();
    file.send_keys(upload.to_str().unwrap()).await.unwrap();
    until(c, "the upload", "return !!document.querySelector('.drop[data-uploaded]')").await;
    until(
        c,
        "the preview",
        "const i = document.querySelector('.drop .preview'); return !i.hidden && i.complete && i.naturalWidth === 32",
    )
    .await;
    type_into(c, ".field[data-input=\"scale_by\"] .range-value", "3").await;
    let slider = c
        .execute("return document.querySelector('.field[data-input=\"scale_by\"] input[type=range]').value", vec![])
        .await
        .unwrap();
    assert_eq!(slider, json!("3"), "typing the number moves the slider");
    click(c, "details.advanced summary").await;
    type_into(c, "#in-name", "lighthouse").await;
    click(c, ".field[data-input=\"seed\"] button.dice").await;
    let seed = c.execute("return document.getElementById('in-seed').value", vec![]).await.unwrap();
    let seed: u64 = seed.as_str().unwrap().parse().expect("the dice fills in a seed");
    assert!(seed <= u64::from(u32::MAX));
    type_into(c, ".field[data-input=\"steps\"] .range-value", "10").await;
    type_into(c, ".field[data-input=\"step_ms\"] .range-value", "150").await;
    screenshot(c, &shots("tool-form")).await;
    click(c, "form.tool-form button[type=submit]").await;

    // Live progress up to 100 %, then the result image (32×24 enlarged 3×),
    // beside the form: the page stays.
    until(c, "the result beside the form", "return !!document.querySelector('#current[data-job] .progress')").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/tools/sketch", "{kind}: no other page");
    let first_job = current_job(c).await;
    let (seen, previewed) = watch_job(c).await;
    assert_eq!(seen.last(), Some(&100), "{kind}: progress ends at 100 %: {seen:?}");
    assert!(seen.iter().any(|p| *p > 0 && *p < 100), "{kind}: progress was seen on the way: {seen:?}");
    assert!(previewed, "{kind}: a live preview was shown");
    let width = c.execute("return document.querySelector('.result-image').naturalWidth", vec![]).await.unwrap();
    assert_eq!(width, json!(96), "{kind}: the slider's value reached the backend");
    assert_eq!(text_of(c, "#progress-label").await, "100 %");
    let sent = fake.last_prompt().unwrap();
    assert_eq!(sent["prompt"]["2"]["inputs"]["seed"], json!(seed), "{kind}: the rolled seed was used");
    assert_eq!(sent["prompt"]["4"]["inputs"]["filename_prefix"], json!("lighthouse"));
    let cancel_shown = c.execute("return document.querySelector('.live .actions').offsetParent !== null", vec![]).await;
    assert_eq!(cancel_shown.unwrap(), json!(false), "{kind}: no Cancel button on a finished generation");
    screenshot(c, &shots("result")).await;
    until(
        c,
        "the balance to drop",
        &format!("return document.getElementById('balance').dataset.available == {}", start_balance - 3),
    )
    .await;

    let beside = c
        .execute(
            "const f = document.querySelector('form.tool-form').getBoundingClientRect();
             const r = document.getElementById('current').getBoundingClientRect();
             return r.left >= f.right && r.top < f.bottom",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(beside, json!(true), "{kind}: the result is beside the form on a wide screen");

    // Rerun: a new generation, paid again, shown in its place; the first
    // moves to the session strip below it.
    click(c, "#rerun").await;
    until(
        c,
        "the rerun beside the form",
        &format!("return document.getElementById('current').dataset.job !== '{first_job}' && !!document.querySelector('#current .progress')"),
    )
    .await;
    let (seen, _) = watch_job(c).await;
    assert_eq!(seen.last(), Some(&100), "{kind}: rerun progress {seen:?}");
    let rerun_job = current_job(c).await;
    until(
        c,
        "the first result in the session strip",
        &format!("const i = document.querySelector('#session-strip li[data-job=\"{first_job}\"] img'); return !!i && i.complete && i.naturalWidth > 0"),
    )
    .await;
    screenshot(c, &shots("tool-session")).await;
    // A strip item becomes the current result again.
    click(c, &format!("#session-strip li[data-job=\"{first_job}\"] .thumb")).await;
    until(
        c,
        "the first one current again",
        &format!("return document.getElementById('current').dataset.job === '{first_job}' && !!document.querySelector('#current .result-image') && !!document.querySelector('#session-strip li[data-job=\"{rerun_job}\"]')"),
    )
    .await;
    // A generation still has a page of its own (the queue panel links there).
    c.goto(&server.url(&format!("/jobs/{rerun_job}"))).await.unwrap();
    until(
        c,
        "the job page",
        "const i = document.querySelector('.result-image'); return !!i && i.complete && i.naturalWidth === 96",
    )
    .await;
    until(
        c,
        "the balance to drop again",
        &format!("return document.getElementById('balance').dataset.available == {}", start_balance - 6),
    )
    .await;

    // History shows both; points show the ledger.
    c.goto(&server.url("/history")).await.unwrap();
    until(c, "two generations", "return document.querySelectorAll('.gallery li img').length === 2").await;
    screenshot(c, &shots("history")).await;
    c.goto(&server.url("/points")).await.unwrap();
    until(c, "the ledger", "return document.querySelectorAll('table.ledger tbody tr').length >= 3").await;
    assert_eq!(text_of(c, "#points-balance").await, (start_balance - 6).to_string());
    screenshot(c, &shots("points")).await;
    c.goto(&server.url("/settings")).await.unwrap();
    until(c, "the settings form", "return !!document.querySelector('.settings-form form')").await;
    screenshot(c, &shots("settings")).await;

    // API keys: created (shown once, and it works), then revoked (and it stops working).
    c.goto(&server.url("/keys")).await.unwrap();
    type_into(c, "#key-name", "ci script").await;
    click(c, "form.key-form button[type=submit]").await;
    let key = text_of(c, "#new-key-text").await;
    assert!(key.starts_with("st_"), "{kind}: {key}");
    until(c, "the key in the list", "return document.querySelectorAll('#keys tr[data-state=active]').length === 1")
        .await;
    let http = reqwest::Client::new();
    let me = http.get(server.url("/api/v1/account")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(me.status(), 200, "{kind}: the new key works");
    screenshot(c, &shots("keys")).await;
    click(c, "#keys tr[data-state=active] button.danger").await;
    c.accept_alert().await.unwrap();
    until(c, "the key to be revoked", "return document.querySelectorAll('#keys tr[data-state=revoked]').length === 1")
        .await;
    let me = http.get(server.url("/api/v1/account")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(me.status(), 401, "{kind}: the revoked key is refused");

    // The admin dashboard: backends, queue, users.
    click(c, "nav a[href=\"/admin\"]").await;
    until(c, "the dashboard", "return !!document.querySelector('#admin-backends td.ok') && !!document.getElementById('queue-depth') && document.querySelectorAll('#admin-users tbody tr').length === 2").await;
    screenshot(c, &shots("admin")).await;

    // On a phone: no sideways scrolling; after a reload the session's
    // latest result of this tool is shown again, below the form.
    c.goto(&server.url("/tools/sketch")).await.unwrap();
    c.set_window_size(390, 844).await.unwrap();
    until(
        c,
        "the form on a phone",
        "return !!document.querySelector('form.tool-form') && !!document.querySelector('#current .result-image')",
    )
    .await;
    let fits = c.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(fits, json!(true), "{kind}: the tool page fits a phone");
    let below = c
        .execute(
            "const f = document.querySelector('form.tool-form').getBoundingClientRect();
             return document.getElementById('current').getBoundingClientRect().top >= f.bottom
               && document.querySelectorAll('#session-strip li').length === 1",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(below, json!(true), "{kind}: on a phone the result is below the form, the earlier one under it");
    screenshot(c, &shots("tool-phone")).await;
    c.execute("document.getElementById('current').scrollIntoView()", vec![]).await.unwrap();
    screenshot(c, &shots("tool-result-phone")).await;
    c.set_window_size(1280, 900).await.unwrap();

    // Sign out; the pages then ask to sign in.
    click(c, ".signout button").await;
    until(c, "the sign-in page", "return location.pathname === '/signin' && location.search.includes('signed-out')")
        .await;
    c.goto(&server.url("/tools")).await.unwrap();
    until(
        c,
        "the sign-in help",
        "return location.pathname === '/signin' && document.body.innerText.includes('station users login-link')",
    )
    .await;
    screenshot(c, &shots("signin")).await;

    // A user: no admin link, and the dashboard is refused.
    c.goto(&bob_link).await.unwrap();
    until(c, "bob's gallery", "return !!document.querySelector('.card')").await;
    assert_eq!(text_of(c, ".who .name").await, "bob");
    assert!(c.find(Locator::Css("nav a[href=\"/admin\"]")).await.is_err(), "{kind}: no admin link for a user");
    c.goto(&server.url("/admin")).await.unwrap();
    until(c, "the refusal", "return document.body.innerText.includes('administrators only')").await;
    let forbidden = http.get(server.url("/api/v1/admin/users")).send().await.unwrap();
    assert_eq!(forbidden.status(), 401);
    screenshot(c, &shots("admin-refused")).await;
    drop(server);
}

/// Issue 20: a fresh `station serve` pointed at a ComfyUI with one checkpoint
/// (whose name says nothing; its safetensors metadata says SD1.5): a member
/// signs in, the gallery's first card is Text to image, its model dropdown
/// shows the model by label and base model, and a prompt generates with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_generates_text_to_image_with_the_model_dropdown() {
    let Some((_driver, c)) = browser().await else { return };
    let mut dbs = vec![("sqlite", None)];
    let pg = station_testkit::testing::postgres().await;
    if let Some(pg) = &pg {
        dbs.push(("postgres", Some(pg.url.clone())));
    }
    for (kind, url) in dbs {
        c.delete_all_cookies().await.unwrap();
        let fake = FakeComfy::start(FakeOptions {
            checkpoints: vec!["my-first-model.safetensors".into()],
            loras: vec![],
            upscale_models: vec![],
            ..Default::default()
        })
        .await;
        let meta = json!({"modelspec.architecture": "stable-diffusion-v1", "modelspec.title": "My first model"});
        fake.set_model_metadata("checkpoints", "my-first-model.safetensors", Some(&meta));
        first_run_scenario(&c, &fake, kind, url.as_deref()).await;
    }
    c.close().await.unwrap();
}

async fn first_run_scenario(c: &Client, fake: &FakeComfy, kind: &str, database_url: Option<&str>) {
    let mut server = Server::new(&fake.url(), database_url);
    server.run(&["users", "create", "ann"]);
    let link = link_in(&server.run(&["users", "login-link", "ann"]));
    server.start().await;

    // Signing in lands on the gallery; Text to image comes first once the
    // first health check stored the model (the page is loaded again until then).
    c.goto(&link).await.unwrap();
    until(c, "the gallery", "return !!document.querySelector('.card[data-tool]')").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let first = c
            .execute(
                "const card = document.querySelector('.card[data-tool]'); return card ? card.dataset.tool : null",
                vec![],
            )
            .await
            .unwrap();
        if first == json!("txt2img") {
            break;
        }
        assert!(Instant::now() < deadline, "{kind}: the first card is {first}, not Text to image:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.goto(&server.url("/tools")).await.unwrap();
        until(c, "the gallery", "return !!document.querySelector('.card[data-tool]')").await;
    }
    assert_eq!(text_of(c, ".card[data-tool] h3").await, "Text to image", "{kind}");
    assert!(
        c.find(Locator::Css(".card[data-tool=\"upscale-model\"]")).await.is_err(),
        "{kind}: no upscale model on the backend, no model-upscale tool"
    );
    screenshot(c, &format!("{kind}-first-run-gallery")).await;

    // The form: a model dropdown with the model by label and base model, and
    // the other inputs at its base model's defaults.
    click(c, ".card[data-tool=\"txt2img\"] a").await;
    until(c, "the model dropdown", "return !!document.querySelector('.field[data-input=\"model\"] select option')")
        .await;
    let options = c
        .execute(
            "return [...document.querySelectorAll('.field[data-input=\"model\"] select option')].map(o => [o.value, o.textContent, o.selected])",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(options, json!([["my-first-model.safetensors", "my-first-model (SD1.5)", true]]), "{kind}");
    let width = c.execute("return document.getElementById('in-width').value", vec![]).await.unwrap();
    assert_eq!(width, json!("512"), "{kind}: SD1.5's size");
    type_into(c, "#in-prompt", "a lighthouse at dusk").await;
    screenshot(c, &format!("{kind}-first-run-form")).await;
    click(c, "form.tool-form button[type=submit]").await;

    // The result, beside the form: drawn with the chosen model at SD1.5's size.
    until(c, "the result beside the form", "return !!document.querySelector('#current[data-job]')").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/tools/txt2img", "{kind}: no other page");
    let (seen, _) = watch_job(c).await;
    assert_eq!(seen.last(), Some(&100), "{kind}: progress ends at 100 %: {seen:?}");
    let size = c
        .execute("const i = document.querySelector('.result-image'); return [i.naturalWidth, i.naturalHeight]", vec![])
        .await
        .unwrap();
    assert_eq!(size, json!([512, 512]), "{kind}");
    let sent = fake.last_prompt().unwrap();
    assert_eq!(sent["prompt"]["4"]["inputs"]["ckpt_name"], "my-first-model.safetensors", "{kind}");
    assert!(fake.metadata_requests() >= 1, "{kind}: the base model came from the file's metadata");
    screenshot(c, &format!("{kind}-first-run-result")).await;
    drop(server);
}

/// Records what the page sends to `POST /api/v1/generations` in
/// `sessionStorage.sent` (it survives the move to the job page).
const CAPTURE_SUBMIT: &str = "const f = window.fetch;
  window.fetch = function (u, o) {
    if (o && o.method === 'POST' && String(u) === '/api/v1/generations') sessionStorage.setItem('sent', o.body);
    return f.apply(this, arguments);
  };
  sessionStorage.removeItem('sent');
  return true;";

/// Records, on the job page, each read of the job's row and each change of
/// the progress bar, in order, in `window.timeline`.
const RECORD_TIMELINE: &str = "window.timeline = [];
  const f = window.fetch;
  window.fetch = function (u, o) {
    const path = String(u).split('?')[0];
    if (path.startsWith('/api/v1/generations/') && path.split('/').length === 5) window.timeline.push({ read: true });
    return f.apply(this, arguments);
  };
  const p = document.querySelector('.progress');
  new MutationObserver(() => window.timeline.push({ pct: parseInt(p.getAttribute('aria-valuenow'), 10) }))
    .observe(p, { attributes: true, attributeFilter: ['aria-valuenow'] });
  return true;";

/// The generation shown beside the tool form.
async fn current_job(c: &Client) -> String {
    let v = c.execute("return document.getElementById('current').dataset.job", vec![]).await.unwrap();
    v.as_str().expect("a current generation").to_string()
}

async fn sent_params(c: &Client) -> Value {
    until(c, "the submission", "return !!sessionStorage.getItem('sent')").await;
    let sent = c.execute("return JSON.parse(sessionStorage.getItem('sent'))", vec![]).await.unwrap();
    sent["params"].clone()
}

async fn upload_into(c: &Client, css: &str, file: &Path) {
    let input = c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(css)).await.unwrap();
    input.send_keys(file.to_str().unwrap()).await.unwrap();
    until(c, "the upload", "return !!document.querySelector('.drop[data-uploaded]')").await;
}

/// Web defects 1–3 of issue 22: optional number inputs without a default
/// have no slider and send nothing when empty (the native Resize form works
/// with one field, on a phone); the tool form starts from the saved settings
/// and sends only what the user changed (the saved values still apply); the
/// job page reads the row only while the event stream is down, and its
/// progress never goes backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_send_only_what_changed_and_progress_never_goes_back() {
    let Some((_driver, c)) = browser().await else { return };
    let mut dbs = vec![("sqlite", None)];
    let pg = station_testkit::testing::postgres().await;
    if let Some(pg) = &pg {
        dbs.push(("postgres", Some(pg.url.clone())));
    }
    for (kind, url) in dbs {
        c.delete_all_cookies().await.unwrap();
        let fake = FakeComfy::start(FakeOptions::default()).await;
        forms_scenario(&c, &fake, kind, url.as_deref()).await;
    }
    c.close().await.unwrap();
}

async fn forms_scenario(c: &Client, fake: &FakeComfy, kind: &str, database_url: Option<&str>) {
    let mut server = Server::new(&fake.url(), database_url);
    let link = link_in(&server.run(&["users", "create", "--admin", "ada"]));
    server.start().await;
    let shots = |name: &str| format!("{kind}-forms-{name}");
    let upload = input_png(server.dir.path());

    // 1. On a phone: Resize with a width only. Its optional numbers have no
    // default, so no slider, and an emptied box sends nothing.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&link).await.unwrap();
    until(c, "the gallery", "return !!document.querySelector('.card')").await;
    c.goto(&server.url("/tools/resize")).await.unwrap();
    until(c, "the resize form", "return !!document.querySelector('form.tool-form .field[data-input=\"scale\"]')").await;
    let sliders = c.execute("return document.querySelectorAll('form.tool-form input[type=range]').length", vec![]);
    assert_eq!(sliders.await.unwrap(), json!(0), "{kind}: no slider without a default");
    let empty =
        c.execute("return ['width','height','scale'].map(n => document.querySelector(`[name=${n}]`).value)", vec![]);
    assert_eq!(empty.await.unwrap(), json!(["", "", ""]), "{kind}: optional numbers start empty");
    c.execute(CAPTURE_SUBMIT, vec![]).await.unwrap();
    upload_into(c, "#in-image", &upload).await;
    type_into(c, "#in-width", "16").await;
    type_into(c, "#in-height", "9").await;
    c.find(Locator::Css("#in-height")).await.unwrap().clear().await.unwrap();
    // Out of range: said next to the field, not clamped.
    type_into(c, "#in-scale", "30").await;
    until(c, "the range note", "const n = document.querySelector('.field[data-input=\"scale\"] .field-note'); return !n.hidden && n.textContent.includes('8')").await;
    c.find(Locator::Css("#in-scale")).await.unwrap().clear().await.unwrap();
    let fits = c.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(fits, json!(true), "{kind}: the resize form fits a phone");
    screenshot(c, &shots("resize-phone")).await;
    click(c, "form.tool-form button[type=submit]").await;
    let sent = sent_params(c).await;
    let keys: Vec<&str> = sent.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["image", "width"], "{kind}: only the filled fields are sent: {sent}");
    assert_eq!(sent["width"], json!(16));
    until(
        c,
        "the resized result",
        "const i = document.querySelector('.result-image'); return !!i && i.complete && i.naturalWidth === 16",
    )
    .await;
    screenshot(c, &shots("resize-result-phone")).await;
    c.set_window_size(1280, 900).await.unwrap();

    // 2. Saved settings: the form starts from them and leaves them out.
    let saved = c
        .execute(
            "return fetch('/api/v1/settings/sketch', { method: 'PUT', credentials: 'same-origin',
               headers: { 'Content-Type': 'application/json',
                          'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content },
               body: JSON.stringify({ params: { scale_by: 3, steps: 16, step_ms: 350 } }) }).then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(saved, json!(200), "{kind}: settings saved");
    c.goto(&server.url("/tools/sketch")).await.unwrap();
    until(c, "the sketch form", "return !!document.querySelector('form.tool-form #in-steps')").await;
    let shown = c.execute(
        "return ['scale_by','steps','step_ms','name'].map(n => document.querySelector(`[name=${n}]`).value)",
        vec![],
    );
    assert_eq!(
        shown.await.unwrap(),
        json!(["3", "16", "350", "sketch"]),
        "{kind}: the form starts from the saved settings"
    );
    c.execute(CAPTURE_SUBMIT, vec![]).await.unwrap();
    upload_into(c, "#in-image", &upload).await;
    type_into(c, "#in-name", "harbor").await;
    screenshot(c, &shots("sketch-saved")).await;
    click(c, "form.tool-form button[type=submit]").await;
    let sent = sent_params(c).await;
    let keys: Vec<&str> = sent.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["image", "name"], "{kind}: only the changed fields are sent: {sent}");

    // 3. The job page: no reads of the row while the stream is live, and the
    // bar never moves back.
    until(c, "the result beside the form", "return !!document.querySelector('#current[data-job] .progress')").await;
    c.execute(RECORD_TIMELINE, vec![]).await.unwrap();
    let (seen, _) = watch_job(c).await;
    assert_eq!(seen.last(), Some(&100), "{kind}: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{kind}: progress went backwards: {seen:?}");
    assert!(seen.iter().filter(|p| **p > 0 && **p < 100).count() >= 3, "{kind}: progress on the way: {seen:?}");
    let width = c.execute("return document.querySelector('.result-image').naturalWidth", vec![]).await.unwrap();
    assert_eq!(width, json!(96), "{kind}: the saved scale (3) applied to an untouched field");
    let sent = fake.last_prompt().unwrap();
    assert_eq!(sent["prompt"]["2"]["inputs"]["steps"], json!(16), "{kind}: the saved steps applied");
    assert_eq!(sent["prompt"]["4"]["inputs"]["filename_prefix"], json!("harbor"));
    let timeline = c.execute("return window.timeline", vec![]).await.unwrap();
    let events = timeline.as_array().unwrap();
    let first_progress = events.iter().position(|e| e["pct"].is_i64()).expect("progress was recorded");
    for (i, e) in events.iter().enumerate().skip(first_progress) {
        if e["read"] == true {
            let later = events[i..].iter().filter_map(|e| e["pct"].as_i64()).find(|p| *p < 100);
            assert!(later.is_none(), "{kind}: the row was read while the stream was live: {timeline}");
        }
    }
    let monotonic = events.iter().filter_map(|e| e["pct"].as_i64()).collect::<Vec<_>>();
    assert!(monotonic.windows(2).all(|w| w[0] <= w[1]), "{kind}: {monotonic:?}");
    screenshot(c, &shots("sketch-result")).await;

    // Item 8, the history browser: search, filters, lightbox, copy to form, hide.
    c.goto(&server.url("/history")).await.unwrap();
    let items = "return document.querySelectorAll('.gallery li').length";
    until(c, "both generations", &format!("{items} === 2")).await;
    type_into(c, "#h-search", "HARBOR").await;
    until(c, "the search", &format!("{items} === 1")).await;
    let caption = text_of(c, ".gallery li .caption").await;
    assert!(caption.contains("sketch"), "{kind}: {caption}");
    c.find(Locator::Css("#h-search")).await.unwrap().clear().await.unwrap();
    c.execute("document.getElementById('h-search').dispatchEvent(new Event('input'))", vec![]).await.unwrap();
    until(c, "both again", &format!("{items} === 2")).await;
    c.execute(
        "const s = document.getElementById('h-tool'); s.value = 'resize'; s.dispatchEvent(new Event('change'))",
        vec![],
    )
    .await
    .unwrap();
    until(
        c,
        "the tool filter",
        &format!("{items} === 1 && document.querySelector('.gallery li img').alt.startsWith('resize')"),
    )
    .await;
    c.execute(
        "const s = document.getElementById('h-status'); s.value = 'failed'; s.dispatchEvent(new Event('change'))",
        vec![],
    )
    .await
    .unwrap();
    until(c, "no failures", &format!("{items} === 0 && document.body.innerText.includes('Nothing matches')")).await;
    c.execute(
        "for (const id of ['h-tool', 'h-status']) { const s = document.getElementById(id); s.value = ''; s.dispatchEvent(new Event('change')); }",
        vec![],
    )
    .await
    .unwrap();
    until(c, "both again", &format!("{items} === 2")).await;
    // The lightbox: image, parameters as a table, copy to form.
    click(c, ".gallery li:first-child .thumb").await;
    until(c, "the lightbox", "const d = document.getElementById('lightbox'); return d.open && d.querySelector('table.params').innerText.includes('harbor')").await;
    screenshot(c, &shots("lightbox")).await;
    click(c, "#lightbox a.primary").await;
    until(c, "the form from the generation", "return location.search.includes('from=') && document.getElementById('in-name') && document.getElementById('in-name').value === 'harbor'").await;
    // Select both and download them as one ZIP (two images and metadata.json).
    c.goto(&server.url("/history")).await.unwrap();
    until(c, "both generations", &format!("{items} === 2")).await;
    click(c, ".gallery li:first-child input.pick").await;
    click(c, ".gallery li:last-child input.pick").await;
    until(c, "the download link", "const a = document.getElementById('download-selected'); return !a.hidden && a.offsetParent !== null && document.getElementById('selected-count').textContent === '2 selected'").await;
    screenshot(c, &shots("history-selected")).await;
    let zip = c
        .execute(
            "return fetch(document.getElementById('download-selected').href).then(async r => ({
               status: r.status, type: r.headers.get('content-type'), name: r.headers.get('content-disposition'),
               bytes: Array.from(new Uint8Array(await r.arrayBuffer())) }))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!((&zip["status"], &zip["type"]), (&json!(200), &json!("application/zip")), "{kind}");
    assert_eq!(zip["name"], json!("attachment; filename=\"station-2-images.zip\""), "{kind}");
    let bytes: Vec<u8> = serde_json::from_value(zip["bytes"].clone()).unwrap();
    assert_eq!(&bytes[..4], b"PK\x03\x04", "{kind}: a ZIP");
    let entries = bytes.windows(4).filter(|w| *w == b"PK\x01\x02").count();
    assert_eq!(entries, 3, "{kind}: two images and metadata.json");
    click(c, ".selection button:not(.danger)").await;
    until(c, "no selection", "return document.querySelector('.selection').hidden").await;
    // Select the resize and hide it.
    c.set_window_size(390, 844).await.unwrap();
    click(c, ".gallery li:last-child input.pick").await;
    until(c, "the selection bar", "return !document.querySelector('.selection').hidden && document.getElementById('selected-count').textContent === '1 selected'").await;
    let fits = c.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(fits, json!(true), "{kind}: history fits a phone");
    screenshot(c, &shots("history-phone")).await;
    click(c, "#hide-selected").await;
    c.accept_alert().await.unwrap();
    until(c, "one left", &format!("{items} === 1")).await;
    c.refresh().await.unwrap();
    until(
        c,
        "still one after a reload",
        &format!("{items} === 1 && document.body.innerText.includes('That is everything')"),
    )
    .await;
    c.set_window_size(1280, 900).await.unwrap();
    drop(server);
}

/// Web items 9 and 10 of issue 22: a batch of two queued with Ctrl+Enter
/// (two jobs, each paid); "My queue" shows them with position, progress and
/// Cancel on every page, after a refresh too, and at phone width; cancelling
/// the queued one from the panel cancels it; the panel empties when done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_panel_follows_a_batch_across_pages() {
    let Some((_driver, c)) = browser().await else { return };
    let mut dbs = vec![("sqlite", None)];
    let pg = station_testkit::testing::postgres().await;
    if let Some(pg) = &pg {
        dbs.push(("postgres", Some(pg.url.clone())));
    }
    for (kind, url) in dbs {
        c.delete_all_cookies().await.unwrap();
        c.set_window_size(1280, 900).await.unwrap();
        let fake = FakeComfy::start(FakeOptions::default()).await;
        queue_scenario(&c, &fake, kind, url.as_deref()).await;
    }
    c.close().await.unwrap();
}

async fn queue_scenario(c: &Client, fake: &FakeComfy, kind: &str, database_url: Option<&str>) {
    let mut server = Server::new(&fake.url(), database_url);
    let link = link_in(&server.run(&["users", "create", "--admin", "quinn"]));
    server.start().await;
    let shots = |name: &str| format!("{kind}-queue-{name}");
    let upload = input_png(server.dir.path());
    c.goto(&link).await.unwrap();
    until(c, "the gallery", "return !!document.querySelector('.card')").await;
    let start = balance(c).await;
    assert!(c.find(Locator::Css("#queue-panel:not([hidden])")).await.is_err(), "{kind}: no panel with nothing queued");

    c.goto(&server.url("/tools/sketch")).await.unwrap();
    until(c, "the form", "return !!document.querySelector('form.tool-form #in-steps')").await;
    upload_into(c, "#in-image", &upload).await;
    click(c, "details.advanced summary").await;
    type_into(c, "#in-steps", "50").await;
    type_into(c, "#in-step_ms", "400").await;
    type_into(c, "#batch-count", "2").await;
    let sticky = c
        .execute("return getComputedStyle(document.querySelector('.tool-form > .actions')).position", vec![])
        .await
        .unwrap();
    assert_eq!(sticky, json!("sticky"), "{kind}: Generate stays in view");
    // Ctrl+Enter in a text box submits the form.
    let name = c.find(Locator::Css("#in-name")).await.unwrap();
    name.send_keys("\u{E009}\u{E007}\u{E000}").await.unwrap();
    until(c, "the first beside the form", "return !!document.querySelector('#current[data-job]')").await;
    until(c, "the second in the session strip", "return document.querySelectorAll('#session-strip li').length === 1")
        .await;
    until(
        c,
        "two jobs in the queue",
        "return document.querySelectorAll('#queue-panel:not([hidden]) .queue-item').length === 2",
    )
    .await;
    until(
        c,
        "one running with progress, one queued with its position",
        "const r = document.querySelector('.queue-item[data-status=running] .queue-progress');
         const q = document.querySelector('.queue-item[data-status=queued] .queue-state');
         return !!r && parseInt(r.getAttribute('aria-valuenow'), 10) > 0 && !!q && q.textContent.includes('next in line')",
    )
    .await;
    screenshot(c, &shots("job-page")).await;

    // Another page, then a refresh: the panel is back with both.
    c.goto(&server.url("/history")).await.unwrap();
    until(c, "the panel on history", "return document.querySelectorAll('#queue-panel .queue-item').length === 2").await;
    c.refresh().await.unwrap();
    until(c, "the panel after a refresh", "return document.querySelectorAll('#queue-panel .queue-item').length === 2")
        .await;
    c.set_window_size(390, 844).await.unwrap();
    let fits = c.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(fits, json!(true), "{kind}: the queue panel fits a phone");
    screenshot(c, &shots("history-phone")).await;
    c.set_window_size(1280, 900).await.unwrap();

    // Cancel the queued one from the panel.
    let queued = c
        .execute("return document.querySelector('.queue-item[data-status=queued]').dataset.job", vec![])
        .await
        .unwrap();
    let queued = queued.as_str().unwrap().to_string();
    click(c, ".queue-item[data-status=queued] button").await;
    until(c, "one left in the queue", "return document.querySelectorAll('#queue-panel .queue-item').length === 1")
        .await;
    let http = reqwest::Client::new();
    let created = server.run(&["keys", "create", "--user", "quinn", "--name", "check", "--json"]);
    let key = serde_json::from_str::<Value>(&created).unwrap()["key"].as_str().unwrap().to_string();
    let row: Value = http
        .get(server.url(&format!("/api/v1/generations/{queued}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(row["status"], json!("cancelled"), "{kind}: {row}");

    // The running one: cancelled too from the panel, after which it empties.
    click(c, ".queue-item button").await;
    until(c, "an empty queue", "return document.getElementById('queue-panel').hidden").await;
    // Both holds come back (the running one once its backend has stopped).
    let deadline = Instant::now() + Duration::from_secs(30);
    while balance(c).await != start {
        assert!(Instant::now() < deadline, "{kind}: the points held for the cancelled jobs did not come back");
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.refresh().await.unwrap();
    }

    // Item 6: the admin page fits a phone; a grant updates the users table
    // and the picker keeps the account.
    server.run(&["users", "create", "zed"]);
    c.goto(&server.url("/admin")).await.unwrap();
    c.set_window_size(390, 844).await.unwrap();
    until(c, "the dashboard", "return document.querySelectorAll('#admin-users tbody tr').length === 2 && !!document.getElementById('grant-account')").await;
    let fits = c.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(fits, json!(true), "{kind}: the admin page fits a phone");
    let headings = c
        .execute(
            "return [...document.querySelectorAll('h2, h3, caption:not(.visually-hidden)')].map(h => h.textContent)",
            vec![],
        )
        .await
        .unwrap();
    let headings: Vec<String> = serde_json::from_value(headings).unwrap();
    let mut unique = headings.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), headings.len(), "{kind}: no heading twice: {headings:?}");
    screenshot(c, &shots("admin-phone")).await;
    let zed = c
        .execute("return [...document.querySelectorAll('#grant-account option')].find(o => o.textContent.startsWith('zed')).value", vec![])
        .await
        .unwrap();
    let zed = zed.as_str().unwrap().to_string();
    c.execute(&format!("document.getElementById('grant-account').value = '{zed}'"), vec![]).await.unwrap();
    type_into(c, "#grant-amount", "25").await;
    type_into(c, "#grant-reason", "welcome").await;
    click(c, "#admin-grants button[type=submit]").await;
    until(
        c,
        "the new balance in the table",
        &format!("return document.querySelector('#admin-users tr[data-account=\"{zed}\"] td:nth-child(4)').textContent === '125'"),
    )
    .await;
    let picked = c.execute("return document.getElementById('grant-account').value", vec![]).await.unwrap();
    assert_eq!(picked, json!(zed), "{kind}: the picker keeps the account");

    // The API reference: linked from the keys page, Markdown drawn, fits a phone.
    c.goto(&server.url("/keys")).await.unwrap();
    click(c, "#api-docs-link").await;
    until(
        c,
        "the API reference",
        "return document.querySelectorAll('details.op').length > 10 && !!document.querySelector('.md code')",
    )
    .await;
    let raw = c.execute("return [...document.body.innerText].filter(ch => ch === '`').length", vec![]).await.unwrap();
    assert_eq!(raw, json!(0), "{kind}: no Markdown shown raw");
    let repeats = c
        .execute("return [...document.querySelectorAll('.op summary .summary')].filter(s => /^(GET|POST|PUT|PATCH|DELETE) [/]/.test(s.textContent)).length", vec![])
        .await
        .unwrap();
    assert_eq!(repeats, json!(0), "{kind}: summaries do not repeat the method and path");
    let fits = c.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(fits, json!(true), "{kind}: the API reference fits a phone");
    screenshot(c, &shots("api-docs-phone")).await;
    c.set_window_size(1280, 900).await.unwrap();
    drop(server);
}

/// Issue 23 on the web: name a LoRA, add four photos at once (one input,
/// several files), see the price follow the steps, train, and watch the run
/// until the page says the LoRA is ready with its trigger word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_a_lora_on_the_web() {
    let Some((_driver, c)) = browser().await else { return };
    let mut dbs = vec![("sqlite", None)];
    let pg = station_testkit::testing::postgres().await;
    if let Some(pg) = &pg {
        dbs.push(("postgres", Some(pg.url.clone())));
    }
    for (kind, url) in dbs {
        c.delete_all_cookies().await.unwrap();
        let fake = FakeComfy::start(FakeOptions {
            checkpoints: vec!["v1-5-pruned-emaonly.safetensors".into()],
            ..FakeOptions::default()
        })
        .await;
        training_scenario(&c, kind, &fake, url.as_deref()).await;
    }
    c.close().await.unwrap();
}

/// A caption tool (LoadImage → StationCaption → PreviewAny: a text output).
fn install_caption_tool(tools_dir: &Path) {
    let tool = json!({
        "id": "caption", "name": "Caption", "category": "caption", "visibility": "hidden", "service": "comfyui",
        "inputs": {"image": {"type": "image", "required": true}},
        "cost": {"per_run": 1},
        "comfyui": {
            "workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
                "2": {"class_type": "StationCaption", "inputs": {"image": ["1", 0]}},
                "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
            },
            "bindings": {"image": ["1.inputs.image"]},
            "outputs": ["3"]
        }
    });
    std::fs::write(tools_dir.join("caption.json"), serde_json::to_vec_pretty(&tool).unwrap()).unwrap();
}

async fn training_scenario(c: &Client, kind: &str, fake: &FakeComfy, database_url: Option<&str>) {
    let mut server = Server::new(&fake.url(), database_url);
    install_caption_tool(&server.dir.path().join("data").join("tools"));
    // A trainer silent for 6 seconds is stopped (the second training below).
    server.vars.push(("STATION_TRAINING_STALL_MINUTES".into(), "0.1".into()));
    let link = link_in(&server.run(&["users", "create", "--admin", "ada"]));
    server.start().await;
    let shots = |name: &str| format!("{kind}-training-{name}");
    c.goto(&link).await.unwrap();
    until(c, "the gallery", "return !!document.querySelector('.card')").await;
    c.goto(&server.url("/training")).await.unwrap();
    until(c, "the training page", "return !!document.querySelector('#new-dataset')").await;
    type_into(c, "#d-name", "Tom Cat").await;
    click(c, "#new-dataset button[type=submit]").await;
    until(
        c,
        "the dataset page",
        "return location.pathname === '/training/tom-cat' && !!document.querySelector('#files')",
    )
    .await;
    let photos: Vec<String> = (0..4u32)
        .map(|i| {
            let img =
                image::RgbImage::from_fn(24 + i, 24, |x, y| image::Rgb([(x * 9) as u8, (y * 9) as u8, 60 * i as u8]));
            let path = server.dir.path().join(format!("photo{i}.png"));
            img.save(&path).unwrap();
            path.display().to_string()
        })
        .collect();
    let input = c.find(Locator::Css("#files")).await.unwrap();
    input.send_keys(&photos.join("\n")).await.unwrap();
    click(c, "#add-images button[type=submit]").await;
    until(c, "four photos", "return document.getElementById('dataset-status').textContent.includes('4 of 20')").await;
    let captions = c.execute("return document.querySelectorAll('#images input[name=caption]').length", vec![]);
    assert_eq!(captions.await.unwrap(), json!(4), "{kind}: one caption box per photo");
    // Captions written by the caption tool, one paid job per photo.
    click(c, "#auto-captions").await;
    until(
        c,
        "the captions written",
        "return document.getElementById('caption-status').textContent.includes('Captions done: 4 written')",
    )
    .await;
    until(
        c,
        "the written captions in the grid",
        "return [...document.querySelectorAll('#images input[name=caption]')].every((i) => i.value.startsWith('tom-cat, a photo of a mostly'))",
    )
    .await;
    screenshot(c, &shots("captions")).await;
    // Fewer steps, a lower price: the server's quote follows the field.
    type_into(c, "#t-steps", "4").await;
    c.execute("document.getElementById('t-steps').dispatchEvent(new Event('change'))", vec![]).await.unwrap();
    until(c, "the new price", "return document.getElementById('price').textContent.startsWith('4 steps')").await;
    screenshot(c, &shots("dataset")).await;
    click(c, "#train").await;
    until(c, "the LoRA ready", "return document.body.innerText.includes('Your LoRA tom-cat is ready')").await;
    // The run's notes as chat gets them: its start and its end.
    let notes = text_of(c, ".training-notes").await;
    assert!(notes.contains("Started") && notes.contains("Done: your LoRA is ready."), "{kind}: {notes}");
    screenshot(c, &shots("ready")).await;
    c.goto(&server.url("/training")).await.unwrap();
    until(c, "the training list", "return !!document.querySelector('#training-list') && document.getElementById('training-list').textContent.includes('ready')").await;
    let out = server.run(&["trainings", "list", "--user", "ada"]);
    assert!(out.contains("tom-cat") && out.contains("succeeded"), "{kind}: {out}");

    // A wedged trainer: the page shows its notes, then the stall and the refund.
    fake.stall_training_after(Some(2));
    c.goto(&server.url("/training/tom-cat")).await.unwrap();
    until(c, "the dataset page again", "return document.getElementById('price').textContent.includes('steps')").await;
    type_into(c, "#t-steps", "8").await;
    c.execute("document.getElementById('t-steps').dispatchEvent(new Event('change'))", vec![]).await.unwrap();
    until(c, "the price of 8 steps", "return document.getElementById('price').textContent.startsWith('8 steps')").await;
    click(c, "#train").await;
    until(
        c,
        "the start note",
        "return (document.querySelector('.training-notes') || {}).textContent?.includes('Started')",
    )
    .await;
    until(
        c,
        "the stall shown",
        "return document.body.innerText.includes('made no progress for 6 seconds') && document.body.innerText.includes('points were returned')",
    )
    .await;
    let notes = text_of(c, ".training-notes").await;
    assert!(notes.contains("Failed: made no progress for 6 seconds. Your points were returned."), "{kind}: {notes}");
    screenshot(c, &shots("stalled")).await;
    fake.stall_training_after(None);
}

/// Issue 26 on the web: the Wallet page links an address through an
/// injected EIP-1193 provider (a test provider whose `personal_sign` is a
/// real local chain's unlocked account signing), shows where to deposit,
/// and a magic deposit quote for a typed address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_a_wallet_on_the_web() {
    let Some(chain) = station_testkit::anvil::Anvil::start().await else { return };
    let Some((_driver, c)) = browser().await else { return };
    let fake = FakeComfy::start(FakeOptions::default()).await;
    let mut server = Server::new(&fake.url(), None);
    let chains = json!([{
        "id": 31337, "name": "Local", "rpc_url": chain.url, "confirmations": 1,
        "deposit_address": "0x000000000000000000000000000000000000dEaD",
        "assets": [{"symbol": "ETH", "points_per_unit": 1000, "minimum": "0.001"}],
    }]);
    server.vars.push(("STATION_WALLETS_CHAINS".into(), chains.to_string()));
    server.vars.push(("STATION_WEB_WALLET_SIGN_IN".into(), "true".into()));
    let link = link_in(&server.run(&["users", "create", "--admin", "ada"]));
    server.start().await;
    c.goto(&link).await.unwrap();
    until(&c, "the gallery", "return !!document.querySelector('.card')").await;
    c.goto(&server.url("/wallet")).await.unwrap();
    until(
        &c,
        "the wallet page",
        "return !!document.querySelector('#w-connect') && !!document.querySelector('#deposit-info')",
    )
    .await;
    let info = text_of(&c, "#deposit-info").await;
    assert!(
        info.contains("0x000000000000000000000000000000000000dEaD") && info.contains("1000 points per ETH"),
        "{info}"
    );
    // The test wallet: an EIP-1193 provider in the page that hands each
    // personal_sign to the test, which signs it with the local chain's
    // unlocked account (the page's CSP keeps it from calling the chain itself,
    // as it would a real extension's background page).
    let account = station_testkit::anvil::ACCOUNTS[1];
    let provider = format!(
        "window.ethereum = {{ request: async ({{ method, params }}) => {{
           if (method === 'eth_requestAccounts') return ['{account}'];
           if (method === 'personal_sign') {{
             window.__signRequest = params;
             while (!window.__signature) await new Promise((r) => setTimeout(r, 20));
             return window.__signature;
           }}
           throw new Error('unsupported ' + method);
         }} }};"
    );
    c.execute(&provider, vec![]).await.unwrap();
    click(&c, "#w-connect").await;
    until(&c, "the signature request", "return !!window.__signRequest").await;
    let params = c.execute("return window.__signRequest", vec![]).await.unwrap();
    assert_eq!(params[1], json!(account), "the address asked to sign");
    let signature = chain.rpc("personal_sign", json!([params[0], account])).await;
    c.execute("window.__signature = arguments[0]", vec![signature]).await.unwrap();
    until(&c, "linked", "return document.getElementById('w-status').textContent.includes('Linked')").await;
    until(
        &c,
        "the wallet listed",
        &format!("return document.getElementById('wallet-list').textContent.includes('{account}')"),
    )
    .await;
    screenshot(&c, "wallet-linked").await;
    let out = server.run(&["wallets", "list", "--user", "ada"]);
    assert!(out.contains(account), "{out}");
    // A magic deposit quote for a typed address.
    type_into(&c, "#w-address", station_testkit::anvil::ACCOUNTS[2]).await;
    click(&c, "#w-magic").await;
    until(&c, "the quote", "return document.getElementById('w-status').textContent.includes('Send exactly')").await;

    // Signed out, the linked wallet signs this browser in again (web.wallet_sign_in).
    c.delete_all_cookies().await.unwrap();
    c.goto(&server.url("/signin?next=/wallet")).await.unwrap();
    until(&c, "the wallet sign-in", "return !!document.querySelector('#ws-connect')").await;
    // An address no account linked is refused in words, before any signing.
    let stranger = station_testkit::anvil::ACCOUNTS[2];
    c.execute(&provider.replace(account, stranger), vec![]).await.unwrap();
    click(&c, "#ws-connect").await;
    until(&c, "the refusal", "return document.getElementById('ws-status').textContent.includes('No Station account')")
        .await;
    let asked = c.execute("return !!window.__signRequest", vec![]).await.unwrap();
    assert_eq!(asked, json!(false), "nothing to sign for an unlinked address");
    c.execute(&provider, vec![]).await.unwrap();
    click(&c, "#ws-connect").await;
    until(&c, "the sign-in request", "return !!window.__signRequest").await;
    let params = c.execute("return window.__signRequest", vec![]).await.unwrap();
    let hex = params[0].as_str().unwrap().trim_start_matches("0x");
    let message = String::from_utf8(hex::decode(hex).unwrap()).unwrap();
    assert!(message.contains("Sign in to Station.") && message.contains(account), "{message}");
    let signature = chain.rpc("personal_sign", json!([params[0], account])).await;
    c.execute("window.__signature = arguments[0]", vec![signature]).await.unwrap();
    until(
        &c,
        "back on the wallet page, signed in",
        "return location.pathname === '/wallet' && !!document.querySelector('#wallet-list')",
    )
    .await;
    let listed = text_of(&c, "#wallet-list").await;
    assert!(listed.contains(account), "{listed}");
    screenshot(&c, "wallet-sign-in").await;
    c.close().await.unwrap();
}

/// Issue 25 on the web: build a two-step spell (resize → flip, native tools)
/// in the builder — a refused save lists every problem first — then cast it
/// from the gallery through its generated form and follow it live to the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_and_cast_a_spell_on_the_web() {
    let Some((_driver, c)) = browser().await else { return };
    let mut dbs = vec![("sqlite", None)];
    let pg = station_testkit::testing::postgres().await;
    if let Some(pg) = &pg {
        dbs.push(("postgres", Some(pg.url.clone())));
    }
    for (kind, url) in dbs {
        c.delete_all_cookies().await.unwrap();
        let fake = FakeComfy::start(FakeOptions::default()).await;
        spells_scenario(&c, kind, &fake, url.as_deref()).await;
    }
    c.close().await.unwrap();
}

/// Sets a select or input by CSS and fires its change event.
async fn set_value(c: &Client, css: &str, value: &str) {
    until(c, css, &format!("return !!document.querySelector({})", json!(css))).await;
    let js = "const e = document.querySelector(arguments[0]); e.value = arguments[1]; \
              e.dispatchEvent(new Event('input', { bubbles: true })); e.dispatchEvent(new Event('change', { bubbles: true }));";
    c.execute(js, vec![json!(css), json!(value)]).await.unwrap();
}

async fn spells_scenario(c: &Client, kind: &str, fake: &FakeComfy, database_url: Option<&str>) {
    let mut server = Server::new(&fake.url(), database_url);
    let link = link_in(&server.run(&["users", "create", "--admin", "ada"]));
    server.start().await;
    let upload = input_png(server.dir.path());
    c.goto(&link).await.unwrap();
    until(c, "the gallery", "return !!document.querySelector('.card')").await;
    c.goto(&server.url("/spells")).await.unwrap();
    until(c, "the spell builder", "return !!document.querySelector('#new-spell')").await;
    let current = c.execute("return document.querySelector('nav a[aria-current=page]').textContent", vec![]);
    assert_eq!(current.await.unwrap(), json!("Spells"), "{kind}");

    // A step without a tool: the save is refused with every problem listed.
    type_into(c, "#s-name", "Shrink and mirror").await;
    click(c, "#add-step").await;
    click(c, "#new-spell button[type=submit]").await;
    until(c, "the problems", "return document.querySelectorAll('#spell-errors li').length > 0").await;
    let fields =
        c.execute("return [...document.querySelectorAll('#spell-errors li')].map((l) => l.dataset.field)", vec![]);
    let fields = fields.await.unwrap();
    assert!(fields.as_array().unwrap().iter().any(|f| f.as_str().unwrap().starts_with("step1")), "{kind}: {fields}");

    // Step 1: resize by half, its image an exposed input; step 2: flip step 1's output.
    set_value(c, "#step1-tool", "resize").await;
    set_value(c, "[data-step='1'] [name='mode-scale']", "fixed").await;
    set_value(c, "[data-step='1'] [name='value-scale']", "0.5").await;
    // The preview draws the form a cast would show, with the cast form's
    // code, and follows the builder live.
    let preview =
        "return [...document.querySelectorAll('#spell-preview [data-input]')].map((n) => n.dataset.input).join(',')";
    until(c, "the preview of step 1", &format!("{preview} === 'image'")).await;
    set_value(c, "[data-step='1'] [name='mode-width']", "input").await;
    until(c, "width in the preview", &format!("{preview} === 'image,width'")).await;
    let kind_of =
        c.execute("return document.querySelector(\"#spell-preview [data-input='width']\").dataset.type", vec![]);
    assert_eq!(kind_of.await.unwrap(), json!("integer"), "{kind}: typed as the tool input it feeds");
    let cast_button = c.execute("return document.querySelector('#spell-preview button[type=submit]').disabled", vec![]);
    assert_eq!(cast_button.await.unwrap(), json!(true), "{kind}: a preview does not cast");
    set_value(c, "[data-step='1'] [name='mode-width']", "default").await;
    until(c, "width gone from the preview", &format!("{preview} === 'image'")).await;
    click(c, "#add-step").await;
    set_value(c, "#step2-tool", "flip").await;
    until(c, "flip's inputs", "return !!document.querySelector(\"[data-step='2'] [name='mode-image']\")").await;
    let mapped = c.execute("return document.querySelector(\"[data-step='2'] [name='mode-image']\").value", vec![]);
    assert_eq!(mapped.await.unwrap(), json!("step1"), "{kind}: an image input takes the step before's output");
    set_value(c, "#s-visibility", "public").await;
    screenshot(c, &format!("{kind}-spell-builder")).await;
    click(c, "#new-spell button[type=submit]").await;
    until(c, "the saved spell", "return !!document.querySelector('#spell-list [data-spell=\"shrink-and-mirror\"]')")
        .await;
    let card = text_of(c, "#spell-list [data-spell='shrink-and-mirror']").await;
    assert!(card.contains("resize → flip") && card.contains("cast 0 times"), "{kind}: {card}");

    // Cast it: the form of its exposed inputs, then live progress to the result.
    click(c, "[data-cast='shrink-and-mirror']").await;
    upload_into(c, "#in-image", &upload).await;
    click(c, "#cast form button[type=submit]").await;
    until(
        c,
        "the cast's result",
        "const s = document.getElementById('cast-status'); const img = document.querySelector('#cast-result img'); \
         return !!s && s.textContent === 'done: 2 of 2 steps' && !!img && img.complete && img.naturalWidth > 0",
    )
    .await;
    let pct = c.execute("return document.querySelector('.cast-run .progress').getAttribute('aria-valuenow')", vec![]);
    assert_eq!(pct.await.unwrap(), json!("100"), "{kind}");
    screenshot(c, &format!("{kind}-spell-cast")).await;
    let out = server.run(&["spells", "list", "--user", "ada"]);
    assert!(out.contains("shrink-and-mirror"), "{kind}: {out}");
}

/// Issue 24 on the web: a cook from the Cook menu — a recipe refused with
/// each problem at its field, saved, priced, cooked with live progress —
/// then the review grid (keyboard and click), and the public page of an
/// unlisted collection (grid and lightbox) with no sign-in, whose cover
/// thumbnail the public list shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cook_review_and_the_public_page_on_the_web() {
    let Some((_driver, c)) = browser().await else { return };
    let mut dbs = vec![("sqlite", None)];
    let pg = station_testkit::testing::postgres().await;
    if let Some(pg) = &pg {
        dbs.push(("postgres", Some(pg.url.clone())));
    }
    for (kind, url) in dbs {
        c.delete_all_cookies().await.unwrap();
        c.set_window_size(1280, 900).await.unwrap();
        let fake = FakeComfy::start(FakeOptions::default()).await;
        cook_scenario(&c, kind, &fake, url.as_deref()).await;
    }
    c.close().await.unwrap();
}

/// Runs `fetch` in the page (with its session and CSRF token); the JSON answer.
async fn fetch_json(c: &Client, method: &str, path: &str, body: Value) -> Value {
    let js = "const [method, path, body, done] = arguments;
              const csrf = (document.querySelector('meta[name=csrf-token]') || {}).content || '';
              const init = { method, credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf, Accept: 'application/json' } };
              if (body !== null) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
              fetch(path, init).then((r) => r.json()).then(done, (e) => done({ failed: String(e) }));";
    c.execute_async(js, vec![json!(method), json!(path), body]).await.unwrap()
}

async fn cook_scenario(c: &Client, kind: &str, fake: &FakeComfy, database_url: Option<&str>) {
    use fantoccini::key::Key;
    let mut server = Server::new(&fake.url(), database_url);
    let link = link_in(&server.run(&["users", "create", "--admin", "ada"]));
    server.start().await;
    c.goto(&link).await.unwrap();
    until(c, "the gallery", "return !!document.querySelector('.card')").await;
    // An image of Ada's for the recipe, uploaded from the page.
    let upload = "const done = arguments[0];
        const cv = document.createElement('canvas'); cv.width = 48; cv.height = 32;
        const g = cv.getContext('2d'); g.fillStyle = '#3366cc'; g.fillRect(0, 0, 48, 32); g.fillStyle = '#ffcc00'; g.fillRect(24, 0, 24, 32);
        cv.toBlob((b) => { const fd = new FormData(); fd.append('file', b, 'base.png');
          fetch('/api/v1/media', { method: 'POST', body: fd, credentials: 'same-origin',
            headers: { 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content } })
            .then((r) => r.json()).then(done); }, 'image/png');";
    let media = c.execute_async(upload, vec![]).await.unwrap();
    let image = media["ref"].as_str().unwrap_or_else(|| panic!("{kind}: upload failed: {media}")).to_string();

    // The Cook menu: a new cooked collection opens its recipe editor.
    click(c, "nav a[href='/cook']").await;
    until(c, "the cooks page", "return !!document.querySelector('#new-cook')").await;
    let current = c.execute("return document.querySelector('nav a[aria-current=page]').textContent", vec![]);
    assert_eq!(current.await.unwrap(), json!("Cook"), "{kind}");
    type_into(c, "#nc-name", "Tones").await;
    click(c, "#new-cook button[type=submit]").await;
    until(c, "the recipe editor", "return !!document.querySelector('#recipe #save-recipe')").await;
    until(
        c,
        "the quote",
        "return (document.getElementById('cook-quote') || {}).textContent === 'Save a recipe to see its price.'",
    )
    .await;

    // A recipe with two mistakes: each shown at its field, and listed.
    set_value(c, "#r-tool", "watermark").await;
    set_value(c, "#r-params", &json!({"image": image, "text": "[[Hat]] and [[Moon]]"}).to_string()).await;
    set_value(c, "#r-supply", "4").await;
    set_value(c, "[name='categories[0].traits[1].weight']", "0").await;
    click(c, "#save-recipe").await;
    until(c, "the problems", "return document.querySelectorAll('#recipe-errors li').length >= 2").await;
    let fields =
        c.execute("return [...document.querySelectorAll('#recipe-errors li')].map((l) => l.dataset.field)", vec![]);
    let fields = fields.await.unwrap();
    assert_eq!(fields, json!(["categories[0].traits[1].weight", "params.text"]), "{kind}");
    let at_field = c.execute(
        "const n = document.querySelector(\".field-error[data-for='categories[0].traits[1].weight']\");
         return !!n && n.previousElementSibling.getAttribute('aria-invalid') === 'true'",
        vec![],
    );
    assert_eq!(at_field.await.unwrap(), json!(true), "{kind}: the weight's reason is beside it");
    let params_note = text_of(c, ".field-error[data-for='params.text']").await;
    assert!(params_note.contains("[[Moon]] names no category"), "{kind}: {params_note}");
    // The JSON view follows the form.
    let shown = c.execute("return JSON.parse(document.getElementById('recipe-json').value).supply", vec![]);
    assert_eq!(shown.await.unwrap(), json!(4), "{kind}");
    screenshot(c, &format!("{kind}-cook-recipe-errors")).await;

    set_value(c, "[name='categories[0].traits[1].weight']", "3").await;
    set_value(c, "#r-params", &json!({"image": image, "text": "[[Hat]]"}).to_string()).await;
    click(c, "#save-recipe").await;
    until(c, "the price", "return (document.getElementById('cook-quote') || {}).textContent.startsWith('Price: 4 pieces × 1 points = 4 points')").await;
    let left = c.execute("return document.querySelectorAll('#recipe-errors li, .field-error').length", vec![]);
    assert_eq!(left.await.unwrap(), json!(0), "{kind}: the problems are gone");

    // Cook: live progress to the end.
    set_value(c, "#cook-seed", "7").await;
    click(c, "#cook-controls button[data-action='startcooking']").await;
    until(
        c,
        "the cook's end",
        "return (document.getElementById('cook-progress') || {}).textContent === 'done: 4 of 4 made'",
    )
    .await;
    let pct =
        c.execute("return document.querySelector('#cook-status .progress').getAttribute('aria-valuenow')", vec![]);
    assert_eq!(pct.await.unwrap(), json!("100"), "{kind}");
    screenshot(c, &format!("{kind}-cook-done")).await;

    // The review grid: a, arrows and r on the keyboard, a click for the last.
    click(c, "#cook-controls a[href$='/review']").await;
    until(
        c,
        "the review grid",
        "const imgs = [...document.querySelectorAll('#review-grid li.piece img')];
         return imgs.length === 4 && imgs.every((i) => i.complete && i.naturalWidth > 0)",
    )
    .await;
    until(c, "focus on the first piece", "return document.activeElement.dataset.number === '1'").await;
    c.active_element().await.unwrap().send_keys("a").await.unwrap();
    until(
        c,
        "piece 1 accepted",
        "return document.querySelector(\"li[data-number='1']\").dataset.review === 'accepted'",
    )
    .await;
    until(c, "focus on piece 2", "return document.activeElement.dataset.number === '2'").await;
    c.active_element().await.unwrap().send_keys(&char::from(Key::Right).to_string()).await.unwrap();
    until(c, "focus on piece 3", "return document.activeElement.dataset.number === '3'").await;
    c.active_element().await.unwrap().send_keys("r").await.unwrap();
    until(
        c,
        "piece 3 rejected",
        "return document.querySelector(\"li[data-number='3']\").dataset.review === 'rejected'",
    )
    .await;
    click(c, "li[data-number='2'] button.accept").await;
    until(
        c,
        "piece 2 accepted",
        "return document.querySelector(\"li[data-number='2']\").dataset.review === 'accepted'",
    )
    .await;
    until(
        c,
        "the review's progress",
        "return document.getElementById('review-progress').textContent === '3 of 4 made pieces reviewed: 2 accepted, 1 rejected.'",
    )
    .await;
    screenshot(c, &format!("{kind}-cook-review")).await;
    let cid = c.execute("return document.body.dataset.collection", vec![]).await.unwrap();
    let cid = cid.as_str().unwrap().to_string();
    let pieces = fetch_json(c, "GET", &format!("/api/v1/collections/{cid}/pieces"), Value::Null).await;
    let reviews: Vec<&str> =
        pieces["items"].as_array().unwrap().iter().map(|p| p["review"].as_str().unwrap()).collect();
    assert_eq!(reviews, ["accepted", "accepted", "rejected", "unreviewed"], "{kind}");

    // The public page: a generation's result in an unlisted collection.
    let job = fetch_json(
        c,
        "POST",
        "/api/v1/generations",
        json!({"tool": "watermark", "params": {"image": image, "text": "shared"}, "confirmed": true}),
    )
    .await;
    let job_id = job["id"].as_str().unwrap_or_else(|| panic!("{kind}: {job}")).to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = fetch_json(c, "GET", &format!("/api/v1/generations/{job_id}"), Value::Null).await;
        if j["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "{kind}: the generation never finished: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let coll =
        fetch_json(c, "POST", "/api/v1/collections", json!({"name": "Open to all", "visibility": "public"})).await;
    let pid = coll["id"].as_str().unwrap().to_string();
    let added = fetch_json(c, "POST", &format!("/api/v1/collections/{pid}/items"), json!({"generation": job_id})).await;
    assert_eq!(added["added"].as_array().map(Vec::len), Some(1), "{kind}: {added}");

    // Signed out: the page, its grid and lightbox; the public list's cover.
    c.delete_all_cookies().await.unwrap();
    c.goto(&server.url(&format!("/c/{pid}"))).await.unwrap();
    until(
        c,
        "the public grid",
        "const i = document.querySelector('#shared-grid button.thumb img'); return !!i && i.complete && i.naturalWidth > 0",
    )
    .await;
    assert_eq!(text_of(c, "main h1").await, "Open to all", "{kind}");
    click(c, "#shared-grid button.thumb").await;
    until(
        c,
        "the lightbox",
        "const d = document.getElementById('lightbox'); const i = d && d.querySelector('.lightbox-image');
         return !!d && d.open && !!i && i.complete && i.naturalWidth > 0",
    )
    .await;
    screenshot(c, &format!("{kind}-public-collection")).await;
    click(c, "#lightbox .close").await;
    until(c, "the lightbox closed", "return !document.getElementById('lightbox').open").await;
    let public = fetch_json(c, "GET", "/api/v1/collections/public", Value::Null).await;
    let cover = public["items"][0]["cover_thumbnail_url"].as_str().unwrap_or_else(|| panic!("{kind}: {public}"));
    let loads = "const [src, done] = arguments; const i = new Image(); i.onload = () => done(i.naturalWidth > 0); i.onerror = () => done(false); i.src = src;";
    assert_eq!(
        c.execute_async(loads, vec![json!(cover)]).await.unwrap(),
        json!(true),
        "{kind}: the cover loads signed out"
    );
}
