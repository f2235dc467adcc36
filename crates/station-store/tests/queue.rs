//! The job queue's guarantees, on SQLite and (when configured) PostgreSQL.

use std::collections::HashSet;

use station_store::testing;
use station_store::{ClaimRequest, JobStatus, NewJob, Store};

fn job(account: &str, service: &str) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        account_id: account.into(),
        tool_id: "upscale".into(),
        service: service.into(),
        params: serde_json::Map::new(),
        priority: 0,
        max_attempts: 3,
        timeout_ms: 60_000,
        source: None,
    }
}

fn claim<'a>(owner: &'a str, limit: i64, cap: i64, now: i64) -> ClaimRequest<'a> {
    ClaimRequest { service: "comfyui", owner, limit, lease_ms: 30_000, per_account_running_cap: cap, now }
}

async fn finish(store: &Store, id: &str, owner: &str) {
    assert!(store.finish_job(id, owner, JobStatus::Succeeded, Some(&[]), None, 1).await.unwrap());
}

#[tokio::test]
async fn one_users_hundred_jobs_do_not_starve_anothers_one() {
    for db in testing::all().await {
        let s = &db.store;
        for _ in 0..100 {
            s.insert_job(&job("alice", "comfyui"), 1).await.unwrap();
        }
        // Alice's first few run, then Bob arrives.
        let first = s.claim_jobs(&claim("w", 3, 10, 2)).await.unwrap();
        assert_eq!(first.len(), 3, "{}", db.kind);
        for j in &first {
            finish(s, &j.id, "w").await;
        }
        let bob = s.insert_job(&job("bob", "comfyui"), 3).await.unwrap();
        let next = s.claim_jobs(&claim("w", 2, 10, 4)).await.unwrap();
        let ids: Vec<_> = next.iter().map(|j| j.account_id.as_str()).collect();
        assert!(ids.contains(&"bob"), "{}: bob must be among the next two claims, got {ids:?}", db.kind);
        assert_eq!(next.iter().find(|j| j.account_id == "bob").unwrap().id, bob.id);
    }
}

#[tokio::test]
async fn fair_order_alternates_between_waiting_users() {
    for db in testing::all().await {
        let s = &db.store;
        for _ in 0..5 {
            s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        }
        for _ in 0..5 {
            s.insert_job(&job("b", "comfyui"), 2).await.unwrap();
        }
        let mut order = vec![];
        for t in 0..10 {
            let got = s.claim_jobs(&claim("w", 1, 10, 10 + t)).await.unwrap();
            assert_eq!(got.len(), 1);
            order.push(got[0].account_id.clone());
            finish(s, &got[0].id, "w").await;
        }
        assert_eq!(order.join(""), "ababababab", "{}", db.kind);
    }
}

#[tokio::test]
async fn per_account_running_cap_is_respected_within_one_batch() {
    for db in testing::all().await {
        let s = &db.store;
        for _ in 0..10 {
            s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        }
        s.insert_job(&job("b", "comfyui"), 1).await.unwrap();
        let got = s.claim_jobs(&claim("w", 10, 2, 5)).await.unwrap();
        let a = got.iter().filter(|j| j.account_id == "a").count();
        let b = got.iter().filter(|j| j.account_id == "b").count();
        assert_eq!((a, b), (2, 1), "{}", db.kind);
        // Still capped on the next claim while those two run.
        assert!(s.claim_jobs(&claim("w", 10, 2, 6)).await.unwrap().is_empty(), "{}", db.kind);
    }
}

#[tokio::test]
async fn priority_wins_over_fair_order() {
    for db in testing::all().await {
        let s = &db.store;
        s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        let mut urgent = job("a", "comfyui");
        urgent.priority = 5;
        let urgent = s.insert_job(&urgent, 2).await.unwrap();
        let got = s.claim_jobs(&claim("w", 1, 10, 3)).await.unwrap();
        assert_eq!(got[0].id, urgent.id, "{}", db.kind);
    }
}

#[tokio::test]
async fn lost_lease_cannot_decide_the_outcome() {
    for db in testing::all().await {
        let s = &db.store;
        let j = s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        let got = s.claim_jobs(&claim("old", 1, 10, 2)).await.unwrap();
        assert_eq!(got[0].id, j.id);
        assert!(s.record_submission(&j.id, "old", "gpu1", "prompt-1").await.unwrap());
        // The lease lapses; the job is requeued keeping where it was sent.
        assert_eq!(s.requeue_expired(2 + 30_001).await.unwrap(), 1, "{}", db.kind);
        let again = s.claim_jobs(&claim("new", 1, 10, 40_000)).await.unwrap();
        assert_eq!(again[0].id, j.id);
        assert_eq!(again[0].remote_id.as_deref(), Some("prompt-1"), "{}", db.kind);
        assert_eq!(again[0].backend.as_deref(), Some("gpu1"));
        // The old worker wakes up and tries to finish: refused.
        assert!(!s.finish_job(&j.id, "old", JobStatus::Failed, None, Some(("x", "y")), 5).await.unwrap());
        assert!(s.finish_job(&j.id, "new", JobStatus::Succeeded, Some(&["m1".into()]), None, 6).await.unwrap());
        let row = s.get_job(&j.id).await.unwrap().unwrap();
        assert_eq!(row.status(), JobStatus::Succeeded);
        assert_eq!(row.output_ids(), vec!["m1".to_string()]);
        assert_eq!(row.attempts, 1);
    }
}

#[tokio::test]
async fn retry_backs_off_and_cancel_works_for_queued_and_running() {
    for db in testing::all().await {
        let s = &db.store;
        let j = s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        s.claim_jobs(&claim("w", 1, 10, 2)).await.unwrap();
        assert!(s.retry_job(&j.id, "w", 1_000, "backend unreachable").await.unwrap());
        assert!(s.claim_jobs(&claim("w", 1, 10, 999)).await.unwrap().is_empty(), "{}: backoff", db.kind);
        assert_eq!(s.claim_jobs(&claim("w", 1, 10, 1_000)).await.unwrap().len(), 1);
        // Running: flagged for the worker, which sees it on its heartbeat.
        let row = s.cancel_job(&j.id, 1_001).await.unwrap();
        assert_eq!(row.status(), JobStatus::Dispatched);
        assert_eq!(s.heartbeat("w", 50_000).await.unwrap(), vec![j.id.clone()]);
        // Queued: cancelled at once.
        let q = s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        assert_eq!(s.cancel_job(&q.id, 2).await.unwrap().status(), JobStatus::Cancelled);
        assert!(s.claim_jobs(&claim("w", 5, 10, 3_000)).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn queue_position_counts_jobs_claimed_earlier() {
    for db in testing::all().await {
        let s = &db.store;
        for _ in 0..3 {
            s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        }
        let b = s.insert_job(&job("b", "comfyui"), 2).await.unwrap();
        let pos = s.queue_position(&b).await.unwrap();
        // Fair order: a1, b1 — one job ahead.
        assert_eq!(pos.ahead, 1, "{}", db.kind);
    }
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_job() {
    for db in testing::all().await {
        let s = db.store.clone();
        for i in 0..200 {
            s.insert_job(&job(&format!("u{}", i % 7), "comfyui"), 1).await.unwrap();
        }
        let mut tasks = vec![];
        for w in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("w{w}");
                let mut mine = vec![];
                loop {
                    let got = s
                        .claim_jobs(&ClaimRequest {
                            service: "comfyui",
                            owner: &owner,
                            limit: 8,
                            lease_ms: 60_000,
                            per_account_running_cap: 1_000,
                            now: 10,
                        })
                        .await
                        .unwrap();
                    if got.is_empty() {
                        break;
                    }
                    for j in got {
                        assert!(s.finish_job(&j.id, &owner, JobStatus::Succeeded, None, None, 11).await.unwrap());
                        mine.push(j.id);
                    }
                }
                mine
            }));
        }
        let mut seen = HashSet::new();
        let mut total = 0;
        for t in tasks {
            for id in t.await.unwrap() {
                total += 1;
                assert!(seen.insert(id), "{}: a job was claimed twice", db.kind);
            }
        }
        assert_eq!(total, 200, "{}", db.kind);
    }
}

#[tokio::test]
async fn identities_map_to_one_account_created_on_first_contact() {
    for db in testing::all().await {
        let s = &db.store;
        let a = s.account_for_identity("telegram", "42", "Ann", 1).await.unwrap();
        let b = s.account_for_identity("telegram", "42", "Ann", 2).await.unwrap();
        assert_eq!(a.id, b.id);
        let c = s.account_for_identity("discord", "42", "Ann", 3).await.unwrap();
        assert_ne!(a.id, c.id);
    }
}
