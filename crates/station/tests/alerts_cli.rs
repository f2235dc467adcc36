//! Alerts through the real binary (issue 27 item 4), on both databases:
//! `station alerts test` reaches a Telegram chat (the fake Bot API, after
//! one 502 it retries), a Discord channel (the fake Discord) and a local
//! webhook receiver; then `station serve` with a `backend_down` rule sees
//! the fake ComfyUI stop answering and each sink receives the firing
//! message once, and once it answers again the resolved message once.
//! `station alerts list` shows the rule firing, then resolved.

#[allow(dead_code)]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_discord_fake::FakeDiscord;
use station_telegram_fake::{FakeChat, FakeTelegram};
use station_testkit::on_every_db;
use station_testkit::testing::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_station");
const OPS_CHAT: i64 = -1_001_234_567;
const OPS_CHANNEL: &str = "1200000000000000042";

/// What the webhook receiver got: (event id, signature header, body).
type Received = Arc<Mutex<Vec<(String, String, serde_json::Value)>>>;

async fn receiver() -> (String, Received) {
    let got: Received = Default::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/hooks/alerts",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let store = store.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let json = serde_json::from_str(&body).unwrap_or_default();
                store.lock().unwrap().push((h("x-station-event-id"), h("x-station-signature"), json));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn command(dir: &tempfile::TempDir, vars: &[(String, String)], args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(dir.path());
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

fn run(dir: &tempfile::TempDir, vars: &[(String, String)], args: &[&str]) -> (i32, String) {
    let out = command(dir, vars, args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Texts each sink received that contain `needle`.
struct Sinks<'a> {
    telegram: &'a FakeTelegram,
    discord: &'a FakeDiscord,
    webhook: &'a Received,
}

impl Sinks<'_> {
    fn telegram(&self, needle: &str) -> Vec<String> {
        self.telegram
            .bot_messages(OPS_CHAT)
            .into_iter()
            .filter_map(|m| m.content.text)
            .filter(|t| t.contains(needle))
            .collect()
    }

    fn discord(&self, needle: &str) -> Vec<String> {
        self.discord
            .channel_messages(OPS_CHANNEL)
            .into_iter()
            .map(|m| m.text())
            .filter(|t| t.contains(needle))
            .collect()
    }

    fn webhook(&self, needle: &str) -> Vec<(String, String, serde_json::Value)> {
        let got = self.webhook.lock().unwrap();
        got.iter().filter(|(_, _, b)| b["text"].as_str().unwrap_or_default().contains(needle)).cloned().collect()
    }

    /// Waits (up to 60 s) until every sink has at least one message with `needle`.
    async fn wait_all(&self, needle: &str, serve_log: &std::path::Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.telegram(needle).is_empty() || self.discord(needle).is_empty() || self.webhook(needle).is_empty() {
            assert!(
                Instant::now() < deadline,
                "not every sink received {needle:?}: telegram {:?}, discord {:?}, webhook {:?}\nserve log:\n{}",
                self.telegram(""),
                self.discord(""),
                self.webhook("").len(),
                std::fs::read_to_string(serve_log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn alerts_reach_every_sink_once_firing_and_once_resolved(db: TestDb) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let comfy = FakeComfy::start(FakeOptions::default()).await;
    let telegram = FakeTelegram::start().await;
    telegram.add_chat(&FakeChat::group(OPS_CHAT, "Operators"));
    let discord = FakeDiscord::start().await;
    let (hook_url, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("station.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[alerts]
evaluate_every_ms = 200
retry_base_ms = 200

[[alerts.rules]]
kind = "backend_down"
minutes = 0

[[alerts.rules]]
kind = "failure_rate"
percent = 50
minutes = 10
min_jobs = 5

[[alerts.sinks]]
name = "ops-telegram"
kind = "telegram"
target = "{OPS_CHAT}"

[[alerts.sinks]]
kind = "discord"
target = "{OPS_CHANNEL}"

[[alerts.sinks]]
kind = "webhook"
target = "{hook_url}"
secret = "alert-secret"
"#
        ),
    )
    .unwrap();
    let mut vars = common::station_vars(&dir, &comfy.url(), Some(&db.url));
    vars.extend([
        ("STATION_CONFIG".to_string(), config.display().to_string()),
        ("STATION_TELEGRAM_TOKEN".to_string(), station_telegram_fake::FakeConfig::default().token),
        ("STATION_TELEGRAM_API_URL".to_string(), telegram.api_url()),
        ("STATION_DISCORD_TOKEN".to_string(), station_discord_fake::BOT_TOKEN.to_string()),
        ("STATION_DISCORD_APPLICATION_ID".to_string(), station_discord_fake::APP_ID.to_string()),
        ("STATION_DISCORD_PUBLIC_KEY".to_string(), discord.public_key_hex()),
        ("STATION_DISCORD_API_URL".to_string(), discord.api_url()),
    ]);
    let sinks = Sinks { telegram: &telegram, discord: &discord, webhook: &received };

    // A test message reaches every sink; Telegram's first answer is a 502,
    // and the message is sent again.
    telegram.fail_next("sendmessage", 1, 502);
    let (code, text) = run(&dir, &vars, &["alerts", "test"]);
    assert_eq!(code, 0, "{}: {text}", db.kind);
    for line in ["ok    ops-telegram (telegram", "ok    discord (discord", "ok    webhook (webhook http://127.0.0.1/…)"]
    {
        assert!(text.contains(line), "{}: missing {line:?} in {text}", db.kind);
    }
    assert!(!text.contains("/hooks/alerts"), "a webhook's path is never printed: {text}");
    assert_eq!(sinks.telegram("Test from Station").len(), 1, "{}", db.kind);
    assert_eq!(sinks.discord("Test from Station").len(), 1, "{}", db.kind);
    let tests = sinks.webhook("Test from Station");
    assert_eq!(tests.len(), 1, "{}", db.kind);
    assert!(tests[0].0.starts_with("test/") && tests[0].1.starts_with("t="), "{:?}", tests[0]);
    assert_eq!(tests[0].2["type"], "alert.test");

    // An administrator's key for `GET /api/v1/admin/alerts`.
    let (code, text) = run(&dir, &vars, &["users", "create", "--admin", "ops"]);
    assert_eq!(code, 0, "{text}");
    let out = command(&dir, &vars, &["keys", "create", "--user", "ops", "--name", "alerts"]).output().unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // The server evaluates the rules; nothing fires while the backend answers.
    let port = common::free_port();
    let log_path = dir.path().join("serve.log");
    let mut serve: Child = command(&dir, &vars, &["serve"])
        .env("STATION_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    common::wait_http(port, "/healthz").await;
    let down = "backend backend1 is down";
    comfy.refuse_connections(true).await;
    sinks.wait_all(&format!("Alert: {down}"), &log_path).await;
    let firing = sinks.telegram(down);
    assert!(firing[0].contains("Since ") && firing[0].contains("Threshold: a backend down for 0 s"), "{firing:?}");
    assert!(firing[0].contains("What to check: Is ComfyUI running there"), "{firing:?}");
    let (code, list) = run(&dir, &vars, &["alerts", "list"]);
    assert_eq!(code, 0, "{list}");
    assert!(list.contains("backend_down             FIRING"), "{list}");
    assert!(list.contains("    backend1: firing since"), "{list}");
    assert!(list.contains("failure_rate             ok  (over 50 % of a service's jobs failing in 10 min"), "{list}");

    let api: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/admin/alerts"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["rules"][0]["rule"]["name"], "backend_down", "{api}");
    assert_eq!(api["rules"][0]["states"][0]["state"], "firing", "{api}");
    assert_eq!(api["rules"][0]["states"][0]["subject"], "backend1", "{api}");
    assert!(api["sinks"].as_array().unwrap().iter().all(|s| s.get("secret").is_none()), "{api}");

    // Back up: one resolved message each, and the firing one was never repeated.
    comfy.refuse_connections(false).await;
    sinks.wait_all(&format!("Resolved: {down}"), &log_path).await;
    assert_eq!(sinks.telegram(down).len(), 2, "{}: {:?}", db.kind, sinks.telegram(""));
    assert_eq!(sinks.discord(down).len(), 2, "{}: {:?}", db.kind, sinks.discord(""));
    let hooks = sinks.webhook(down);
    let types: Vec<&str> = hooks.iter().map(|(_, _, b)| b["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types, ["alert.firing", "alert.resolved"], "{}", db.kind);
    assert_eq!(hooks[0].2["subject"], "backend1");
    assert_ne!(hooks[0].0, hooks[1].0, "each announcement has its own event id");
    assert!(sinks.telegram("Resolved: ")[0].contains("It lasted from"), "{:?}", sinks.telegram(""));
    let (_, list) = run(&dir, &vars, &["alerts", "list"]);
    assert!(list.contains("    backend1: resolved at"), "{list}");
    assert!(list.contains("resolved backend_down (backend1) → ops-telegram: delivered"), "{list}");

    let _ = Command::new("kill").arg("-TERM").arg(serve.id().to_string()).status();
    let _ = serve.wait();
}

on_every_db!(alerts_reach_every_sink_once_firing_and_once_resolved);

#[test]
fn a_sink_of_a_bot_that_is_not_configured_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("station.toml");
    std::fs::write(&config, "[[alerts.sinks]]\nkind = \"telegram\"\ntarget = \"-100\"\n").unwrap();
    let mut vars = common::station_vars(&dir, "", None);
    vars.push(("STATION_CONFIG".into(), config.display().to_string()));
    let (code, text) = run(&dir, &vars, &["alerts", "test"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(
            "alerts.sinks[0].kind: no telegram bot is configured to send telegram sinks ([telegram] token); \
             this process can send to: webhook"
        ),
        "{text}"
    );
}
