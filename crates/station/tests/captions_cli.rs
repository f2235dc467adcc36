//! `station datasets auto-caption` through the real binary against a fake
//! ComfyUI: a dataset made from a folder, its empty captions written by the
//! caption tool (jobs run by the command's own workers), the written one
//! kept; without a caption tool the refusal says so. Runs on SQLite, and on
//! PostgreSQL when `STATION_TEST_POSTGRES_URL` is set.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_testkit::testing;

const BIN: &str = env!("CARGO_BIN_EXE_station");

fn station(dir: &Path, url: &str, backend: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STATION_DATA_DIR", dir.join("data"))
        .env("STATION_DATABASE_URL", url)
        .env("STATION_COMFYUI_BACKENDS", backend)
        .env("STATION_QUEUE_POLL_MS", "50")
        .current_dir(dir)
        .output()
        .unwrap()
}

fn install_caption_tool(tools: &Path) {
    std::fs::create_dir_all(tools).unwrap();
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
    std::fs::write(tools.join("caption.json"), serde_json::to_vec_pretty(&tool).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_caption_writes_the_empty_captions() {
    for db in testing::all().await {
        let kind = db.kind;
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let photos = dir.join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for (i, rgb) in [[210u8, 25, 20], [20, 30, 210], [20, 200, 30], [230, 220, 20]].iter().enumerate() {
            image::RgbImage::from_pixel(16, 16, image::Rgb(*rgb)).save(photos.join(format!("p{i}.png"))).unwrap();
        }
        std::fs::write(photos.join("p3.txt"), "my own words").unwrap();
        let run = |args: &[&str]| station(dir, &db.url, &fake.url(), args);

        let out = run(&["datasets", "create", "Red Fox", "--images", photos.to_str().unwrap(), "--user", "ada"]);
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));

        // No caption tool yet: refused in words.
        let out = run(&["datasets", "auto-caption", "red-fox", "--user", "ada"]);
        assert_eq!(out.status.code(), Some(2), "{kind}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no caption tool is configured"), "{kind}: {err}");

        install_caption_tool(&dir.join("data").join("tools"));
        let out = run(&["datasets", "auto-caption", "red-fox", "--user", "ada"]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{kind}: {stdout}\n{stderr}");
        assert!(stderr.contains("Writing 3 captions"), "{kind}: {stderr}");
        assert!(stderr.contains("Captions done: 3 written"), "{kind}: {stderr}");
        for colour in ["red", "blue", "green"] {
            assert!(
                stdout.contains(&format!("red-fox, a photo of a mostly {colour} square, 16x16")),
                "{kind}: {stdout}"
            );
        }
        let shown = run(&["datasets", "show", "red-fox", "--user", "ada"]);
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.contains("slot 4: red-fox, my own words"), "{kind}: the written caption kept: {shown}");
    }
}

/// `station train` prints the quote with how it was reached: for a
/// definition priced per second, the estimated time, the rate and where the
/// estimate comes from (no run yet: the operator's default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_prints_a_per_second_quote_with_its_explanation() {
    for db in testing::all().await {
        let kind = db.kind;
        let fake = FakeComfy::start(FakeOptions::default()).await;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let photos = dir.join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        for (i, rgb) in [[210u8, 25, 20], [20, 30, 210], [20, 200, 30], [230, 220, 20]].iter().enumerate() {
            image::RgbImage::from_pixel(16, 16, image::Rgb(*rgb)).save(photos.join(format!("p{i}.png"))).unwrap();
        }
        let config = dir.join("station.toml");
        std::fs::write(
            &config,
            "[training.per_second.lora-sd15]\npoints = 2\ndefault_seconds_per_step = 0.5\nmargin = 1.5\n",
        )
        .unwrap();
        let config = config.to_str().unwrap().to_owned();
        let run = |args: &[&str]| {
            let mut all = vec!["--config", config.as_str()];
            all.extend_from_slice(args);
            station(dir, &db.url, &fake.url(), &all)
        };
        let out = run(&["datasets", "create", "Red Fox", "--images", photos.to_str().unwrap(), "--user", "ada"]);
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
        // The backend's checkpoints, stored (a running server reads them at every health check).
        let out = run(&["backends", "refresh"]);
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
        // Not confirmed (no terminal, no --yes): the quote is printed, nothing starts.
        let out = run(&["train", "red-fox", "--user", "ada", "--base-model", "SD1.5", "--steps", "10"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kind}: {stderr}");
        assert!(
            stderr.contains(
                "available): about 8 seconds at 2 points a second (10 steps at 0.5 s a step, \
                 the operator's estimate until a run has been measured, plus 50 %); you pay for the time it takes, \
                 at most 16 points."
            ),
            "{kind}: {stderr}"
        );
        assert!(stderr.contains("Price: 16 points ("), "{kind}: {stderr}");
        assert!(stderr.contains("not started"), "{kind}: {stderr}");
    }
}
