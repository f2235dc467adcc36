//! Job events cross process boundaries on PostgreSQL (LISTEN/NOTIFY).

use std::sync::Arc;
use std::time::Duration;

use station_core::{EventBus, JobEvent, PgBus};
use station_store::{JobStatus, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_in_one_process_reach_another() {
    let Some(db) = station_store::testing::postgres().await else { return };
    // Two "processes": two pools on the same schema, each with its bus.
    let other = Store::connect(&db.url).await.unwrap();
    let a: Arc<PgBus> = PgBus::start(db.store.clone()).await.unwrap().expect("a bus on PostgreSQL");
    let b: Arc<PgBus> = PgBus::start(other).await.unwrap().expect("a bus on PostgreSQL");
    // A third bus on another schema must hear nothing.
    let elsewhere = station_store::testing::postgres().await.unwrap();
    let c = PgBus::start(elsewhere.store.clone()).await.unwrap().unwrap();
    let (mut on_a, mut on_b, mut on_c) = (a.subscribe(), b.subscribe(), c.subscribe());
    let status = JobEvent::Status { job_id: "j1".into(), status: JobStatus::Running, error: None };
    let progress = JobEvent::Progress { job_id: "j1".into(), fraction: 0.5, step: Some(5), of: Some(10), label: None };
    let preview = JobEvent::Preview { job_id: "j1".into(), mime: "image/jpeg".into(), data: Arc::new(vec![7; 100]) };
    let huge = JobEvent::Preview { job_id: "j1".into(), mime: "image/jpeg".into(), data: Arc::new(vec![7; 100_000]) };
    for e in [status.clone(), progress.clone(), huge, preview.clone()] {
        a.publish(e);
    }
    let mut got = vec![];
    while got.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(5), on_b.recv()).await.expect("event reaches b").unwrap();
        got.push(e);
    }
    // In order; the preview too large for NOTIFY stays local to its process.
    assert_eq!(got, vec![status.clone(), progress, preview]);
    // The publisher hears its own events once (not again through NOTIFY).
    let mut own = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), on_a.recv()).await {
        own += 1;
    }
    assert_eq!(own, 4);
    assert!(tokio::time::timeout(Duration::from_millis(300), on_c.recv()).await.is_err(), "other schemas hear nothing");
}
