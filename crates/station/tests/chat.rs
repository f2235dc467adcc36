//! `station chat` driven through a real pseudo-terminal: the make flow with
//! missing inputs asked for, settings changed with name=value, a native
//! media tool run, a result rerun, and a restart that resumes the
//! conversation where it was.

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use image::{ImageFormat, Rgb, RgbImage};
use rexpect::session::{PtySession, spawn_command};

const BIN: &str = env!("CARGO_BIN_EXE_station");

fn chat(data: &Path, out: &Path) -> PtySession {
    chat_with(data, out, None)
}

fn chat_with(data: &Path, out: &Path, comfyui: Option<&str>) -> PtySession {
    // A port nothing listens on, so the chat runs jobs in its own process.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(BIN);
    cmd.args(["chat", "--user", "tester", "--out"])
        .arg(out)
        .env("STATION_DATA_DIR", data)
        .env("STATION_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("STATION_DATABASE_URL")
        .env_remove("STATION_COMFYUI_BACKENDS")
        .env("NO_COLOR", "1");
    if let Some(url) = comfyui {
        cmd.env("STATION_COMFYUI_BACKENDS", url);
    }
    let mut p = spawn_command(cmd, Some(30_000)).expect("station chat starts in a pty");
    p.exp_string("Station chat as tester").expect("greeting");
    p
}

/// Waits for a button labelled `label` (shown `[#3] label`) and returns
/// what presses it (`#3`).
fn button(p: &mut PtySession, label: &str) -> String {
    let (_, m) = p
        .exp_regex(&format!(r"\[#\d+\] [^\[\n]*{}", regex_escape(label)))
        .unwrap_or_else(|e| panic!("button {label}: {e}"));
    m.trim_start_matches('[').split(']').next().unwrap().to_string()
}

fn regex_escape(s: &str) -> String {
    s.chars().map(|c| if "[](){}.*+?^$|\\".contains(c) { format!("\\{c}") } else { c.to_string() }).collect()
}

#[test]
fn make_settings_rerun_and_resume_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let photo = dir.path().join("in.png");
    let img = RgbImage::from_fn(16, 12, |x, y| Rgb([(x * 15) as u8, (y * 20) as u8, 90]));
    let mut buf = vec![];
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).unwrap();
    std::fs::write(&photo, buf).unwrap();

    let mut p = chat(&data, &out);
    p.send_line("/make").unwrap();
    p.exp_string("What would you like to make?").unwrap();
    // Typing the tool's name picks it; only the missing image is asked for.
    p.send_line("resize").unwrap();
    p.exp_string("Send an image for image").unwrap();
    p.send_line("not a picture").unwrap();
    p.exp_string("image needs an image").unwrap();
    p.send_line(&format!("@{}", photo.display())).unwrap();
    p.exp_string("Price:").unwrap();
    p.send_line("width=abc").unwrap();
    p.exp_string("width: ").unwrap();
    p.send_line("width=8").unwrap();
    p.exp_string("width: 8").unwrap();
    let run = button(&mut p, "Run");
    p.send_line(&run).unwrap();
    // The result is saved to a file and its path shown, with numbered actions.
    // (rexpect reads bytes one by one, so only ASCII is matched here.)
    let (_, shown) = p.exp_regex(r"/\S+\.png 8\S+6").unwrap();
    let path = shown.split(' ').next().unwrap().to_string();
    assert!(Path::new(&path).exists(), "result saved at {path}");
    let rerun = button(&mut p, "Rerun");
    p.send_line(&rerun).unwrap();
    p.exp_string("Queued").unwrap();
    p.exp_regex(r"/\S+\.png 8\S+6").unwrap();

    // Leave in the middle of a flow …
    p.send_line("/settings").unwrap();
    p.exp_string("Settings for which tool?").unwrap();
    p.send_line("/quit").unwrap();
    p.exp_eof().unwrap();

    // … and a new process resumes it at the same step.
    let mut p = chat(&data, &out);
    p.send_line("resize").unwrap();
    p.exp_string("Resize settings").unwrap();
    p.send_line("width=10").unwrap();
    p.exp_string("10 (yours)").unwrap();
    p.send_line("/status").unwrap();
    p.exp_string("Recent results").unwrap();
    p.send_line("/quit").unwrap();
    p.exp_eof().unwrap();
}

/// A public text-to-image tool (the SD1.5 template, 64 px, 3 steps).
fn install_dream(tools: &Path) {
    std::fs::create_dir_all(tools).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../station-tools/builtin/txt2img-sd15.json"),
    )
    .unwrap();
    let mut tool: serde_json::Value = serde_json::from_str(&text).unwrap();
    tool["id"] = "dream".into();
    tool["name"] = "Dream".into();
    tool["command"] = "dream".into();
    tool["visibility"] = "public".into();
    tool["inputs"]["width"]["default"] = 64.into();
    tool["inputs"]["height"]["default"] = 64.into();
    tool["inputs"]["steps"]["default"] = 3.into();
    std::fs::write(tools.join("dream.json"), tool.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_inline_status_tweak_use_as_input_and_history_in_a_terminal() {
    use station_comfyui_fake::{FakeComfy, FakeOptions};
    let fake = FakeComfy::start(FakeOptions {
        checkpoints: vec!["v1-5-pruned-emaonly.safetensors".into()],
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    install_dream(&data.join("tools"));
    let out = dir.path().join("out");
    let url = fake.url();
    fake.set_step_delay(700);
    tokio::task::spawn_blocking(move || {
        let fake_for_test = &fake;
        let mut p = chat_with(&data, &out, Some(&url));
        // The prompt inline; /status while it runs shows it with its progress.
        p.send_line("/dream a red fox in the snow").unwrap();
        p.exp_string("Dream: ").unwrap();
        p.send_line("/status").unwrap();
        p.exp_string("Balance:").unwrap();
        p.exp_regex(r"Dream: (queued|running)").unwrap();
        p.exp_regex(r"/\S+\.png 64\S+64").unwrap();
        fake_for_test.set_step_delay(0);
        // Tweak: change the width, then run.
        let tweak = button(&mut p, "Tweak");
        p.send_line(&tweak).unwrap();
        p.exp_string("Price:").unwrap();
        p.send_line("width=128").unwrap();
        p.exp_string("width: 128").unwrap();
        let run = button(&mut p, "Run");
        p.send_line(&run).unwrap();
        p.exp_regex(r"/\S+\.png 128\S+64").unwrap();
        // Use as input: the tweaked result goes into upscale.
        let use_it = button(&mut p, "Use as input");
        p.send_line(&use_it).unwrap();
        p.exp_string("Which tool should use this image?").unwrap();
        p.send_line("upscale").unwrap();
        p.exp_regex(r"/\S+\.png 256\S+128").unwrap();
        // Enough results for two history pages.
        for i in 0..4 {
            p.send_line(&format!("/dream picture {i}")).unwrap();
            p.exp_regex(r"/\S+\.png 64\S+64").unwrap();
        }
        p.send_line("/history").unwrap();
        p.exp_string("page 1 of 2").unwrap();
        let older = button(&mut p, "Older");
        p.send_line(&older).unwrap();
        p.exp_string("page 2 of 2").unwrap();
        p.send_line("/quit").unwrap();
        p.exp_eof().unwrap();
    })
    .await
    .unwrap();
}

/// Issue 21, items 15 and 16: a number typed where a value is asked is the
/// value (buttons are pressed as `#N`); a chat started again shows the open
/// question again, and a finished job leaves no stale progress line.
#[test]
fn typed_numbers_are_values_and_a_resumed_chat_asks_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let photo = dir.path().join("in.png");
    let img = RgbImage::from_fn(16, 12, |x, y| Rgb([(x * 15) as u8, (y * 20) as u8, 90]));
    let mut buf = vec![];
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).unwrap();
    std::fs::write(&photo, buf).unwrap();

    let mut p = chat(&data, &out);
    p.send_line(&format!("/flip @{}", photo.display())).unwrap();
    // Buttons were numbered before this; "8" must not press one.
    p.exp_regex(r"\S+\.png 16\S+12").unwrap();
    button(&mut p, "Hide");
    p.send_line("/make resize").unwrap();
    p.exp_string("Send an image for image").unwrap();
    p.send_line(&format!("@{}", photo.display())).unwrap();
    let change = button(&mut p, "Change a setting");
    p.send_line(&change).unwrap();
    p.exp_string("Which setting?").unwrap();
    p.send_line("width").unwrap();
    p.exp_string("(type a number)").unwrap();
    p.send_line("8").unwrap();
    p.exp_string("width: 8").unwrap();
    let change = button(&mut p, "Change a setting");
    p.send_line(&change).unwrap();
    p.send_line("height").unwrap();
    p.exp_string("Send height").unwrap();
    p.send_line("#999").unwrap();
    p.exp_string("there is no button [#999]").unwrap();
    p.send_line("/quit").unwrap();
    p.exp_eof().unwrap();

    // Started again, the open question is asked again and a number answers it.
    let mut p = chat(&data, &out);
    p.exp_string("Send height").unwrap();
    p.send_line("6").unwrap();
    p.exp_string("height: 6").unwrap();
    let run = button(&mut p, "Run");
    p.send_line(&run).unwrap();
    p.exp_regex(r"\S+\.png 8\S+6").unwrap();
    p.send_line("/quit").unwrap();
    let rest = p.exp_eof().unwrap();
    assert!(!rest.contains("100%"), "no stale 100 % line after the result: {rest}");
}
