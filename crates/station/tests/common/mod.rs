//! Helpers shared by the tests that run the real `station` binary
//! (`processes.rs`, `faults.rs`, …): their environment, a test picture, a
//! free port, waiting for a server and for a job row, and ([`cli`]) one
//! command run against a test database.

pub mod cli;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use station_testkit::Store;

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A 4×4 PNG in `dir`: left half red, right half blue.
pub fn input_png(dir: &Path) -> PathBuf {
    let img =
        image::RgbImage::from_fn(4, 4, |x, _| if x < 2 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) });
    let path = dir.join("in.png");
    img.save(&path).unwrap();
    path
}

/// The environment of a `station` process under test: its data folder in
/// `dir`, `backends`, short leases and polls, and `database_url` if given.
pub fn station_vars(dir: &tempfile::TempDir, backends: &str, database_url: Option<&str>) -> Vec<(String, String)> {
    let mut vars = vec![
        ("STATION_DATA_DIR".to_string(), dir.path().join("data").display().to_string()),
        ("STATION_COMFYUI_BACKENDS".into(), backends.into()),
        ("STATION_QUEUE_LEASE_SECONDS".into(), "2".into()),
        ("STATION_QUEUE_POLL_MS".into(), "100".into()),
        ("STATION_QUEUE_RETRY_BASE_MS".into(), "100".into()),
        ("STATION_COMFYUI_HEALTH_INTERVAL_SECONDS".into(), "1".into()),
        ("RUST_LOG".into(), "info".into()),
        ("USER".into(), "tester".into()),
    ];
    if let Some(url) = database_url {
        vars.push(("STATION_DATABASE_URL".into(), url.into()));
    }
    vars
}

/// The first answer of the server on `port` to `path`, trying for 30 s.
pub async fn wait_http(port: u16, path: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
            return r;
        }
        assert!(Instant::now() < deadline, "server on {port} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Job `id` once `pred` holds for its row, waiting up to 60 s for `what`.
pub async fn wait_job(
    store: &Store,
    id: &str,
    what: &str,
    pred: impl Fn(&station_core::JobRow) -> bool,
) -> station_core::JobRow {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(j) = store.get_job(id).await.unwrap()
            && pred(&j)
        {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id}: timed out waiting for {what}: {:?}", store.get_job(id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
