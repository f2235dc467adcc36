//! Helpers shared by the tests that run the real `station` binary
//! (`processes.rs`, `faults.rs`): waiting for a server and for a job row.

use std::time::{Duration, Instant};

use station_testkit::Store;

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
