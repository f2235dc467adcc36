//! `station doctor` through the real binary (issue 27 item 6): with a fake
//! ComfyUI, the fake Bot API and the fake Discord all answering, every check
//! passes and the exit code is 0; a backend that does not answer and a bot
//! token Telegram refuses are each named with what to do, exit 1.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use std::process::Command;

use station_comfyui_fake::{FakeComfy, FakeOptions};

const BIN: &str = env!("CARGO_BIN_EXE_station");

fn doctor(vars: &[(String, String)]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("doctor")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_setup_and_names_each_problem_with_its_fix() {
    let comfy = FakeComfy::start(FakeOptions::default()).await;
    let telegram = station_telegram_fake::FakeTelegram::start().await;
    let discord = station_discord_fake::FakeDiscord::start().await;
    let tg_token = station_telegram_fake::FakeConfig::default().token;
    let dir = tempfile::tempdir().unwrap();
    // The embedded database: the checks read it the same way on PostgreSQL.
    let mut vars = common::station_vars(&dir, &comfy.url(), None);
    vars.extend([
        ("STATION_TELEGRAM_TOKEN".to_string(), tg_token.clone()),
        ("STATION_TELEGRAM_API_URL".to_string(), telegram.api_url()),
        ("STATION_DISCORD_TOKEN".to_string(), station_discord_fake::BOT_TOKEN.to_string()),
        ("STATION_DISCORD_APPLICATION_ID".to_string(), station_discord_fake::APP_ID.to_string()),
        ("STATION_DISCORD_PUBLIC_KEY".to_string(), "00".repeat(32)),
        ("STATION_DISCORD_API_URL".to_string(), discord.api_url()),
    ]);
    // `migrate` first: the doctor reports pending migrations, it does not apply them.
    let migrated = Command::new(BIN)
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));

    let (code, text) = doctor(&vars);
    assert_eq!(code, 0, "{text}");
    for expected in [
        "ok    data folder:",
        "ok    database:",
        "ok    migrations: all",
        "ok    tools:",
        "ok    media store: files in",
        "ok    backend backend1:",
        "node types",
        "ok    Telegram bot: the token is accepted: @",
        "ok    Telegram webhook: none: the bot uses long polling",
        "ok    Discord bot: the token is accepted for application",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.contains("disk:"), "{text}");
    assert!(!text.contains(&tg_token), "the token is never printed:\n{text}");

    // A backend that does not answer, and a token Telegram refuses.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    for (k, v) in &mut vars {
        match k.as_str() {
            "STATION_COMFYUI_BACKENDS" => *v = format!("{},{dead}", comfy.url()),
            "STATION_TELEGRAM_TOKEN" => *v = "999:not-the-token".into(),
            _ => {}
        }
    }
    let (code, text) = doctor(&vars);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL  backend backend2:") && text.contains("does not answer"), "{text}");
    assert!(text.contains("→ start ComfyUI there"), "{text}");
    assert!(text.contains("FAIL  Telegram bot: Telegram refuses the token"), "{text}");
    assert!(text.contains("→ set telegram.token (STATION_TELEGRAM_TOKEN)"), "{text}");
    assert!(text.contains("ok    backend backend1:"), "the healthy one is still fine:\n{text}");
    assert!(text.contains("2 problems to fix"), "{text}");
}
