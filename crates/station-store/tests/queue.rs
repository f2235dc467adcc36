//! The job queue's guarantees, on SQLite and (when configured) PostgreSQL.

use std::collections::HashSet;

use station_store::testing;
use station_store::{ClaimRequest, DEFAULT_MAX_BATCH, FinishBatcher, JobFinish, JobStatus, NewJob, Store};

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

fn done(id: &str, owner: &str, status: JobStatus, outputs: Option<Vec<String>>, now: i64) -> JobFinish {
    let error = (status != JobStatus::Succeeded).then(|| ("execution_error".to_string(), "boom".to_string()));
    JobFinish {
        settle: None,
        job_id: id.into(),
        owner: owner.into(),
        status,
        outputs,
        error,
        now,
        media: vec![],
        cancel_remote: false,
    }
}

#[tokio::test]
async fn finish_jobs_fences_each_job_by_its_own_lease() {
    for db in testing::all().await {
        let s = &db.store;
        let mut ids = vec![];
        for a in ["a", "b", "c", "d"] {
            ids.push(s.insert_job(&job(a, "comfyui"), 1).await.unwrap().id);
        }
        // The old worker claims job 0 first, the other three later (longer leases).
        let first = s.claim_jobs(&claim("old", 1, 10, 2)).await.unwrap();
        let rest = s.claim_jobs(&claim("old", 3, 10, 20_000)).await.unwrap();
        assert_eq!((first.len(), rest.len()), (1, 3), "{}", db.kind);
        let stolen = first[0].id.clone();
        // Job 0's lease lapses; the sweeper requeues it and another worker takes it.
        assert_eq!(s.requeue_expired(30_003).await.unwrap(), 1, "{}", db.kind);
        let again = s.claim_jobs(&claim("new", 4, 10, 30_004)).await.unwrap();
        assert_eq!(again.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![stolen.clone()], "{}", db.kind);
        ids.retain(|i| *i != stolen);
        ids.insert(1, stolen.clone());
        let stolen = &stolen;
        // The old worker's batch: job 1 must not be applied, the rest must.
        let batch = vec![
            done(&ids[0], "old", JobStatus::Succeeded, Some(vec!["m0".into()]), 50),
            done(stolen, "old", JobStatus::Succeeded, Some(vec!["bad".into()]), 50),
            done(&ids[2], "old", JobStatus::Failed, None, 51),
            done(&ids[3], "old", JobStatus::Cancelled, None, 52),
        ];
        assert_eq!(s.finish_jobs(&batch).await.unwrap(), vec![true, false, true, true], "{}", db.kind);
        let row = |i: usize| {
            let id = ids[i].clone();
            async move { s.get_job(&id).await.unwrap().unwrap() }
        };
        let r0 = row(0).await;
        assert_eq!((r0.status(), r0.output_ids(), r0.finished_at), (JobStatus::Succeeded, vec!["m0".into()], Some(50)));
        assert_eq!(r0.progress, 1.0);
        assert_eq!(r0.lease_owner, None);
        let r1 = row(1).await;
        assert_eq!(r1.status(), JobStatus::Dispatched, "{}: the successor still owns it", db.kind);
        assert_eq!(r1.lease_owner.as_deref(), Some("new"));
        assert_eq!(r1.outputs, None);
        let r2 = row(2).await;
        assert_eq!(
            (r2.status(), r2.error_code.as_deref(), r2.error.as_deref()),
            (JobStatus::Failed, Some("execution_error"), Some("boom"))
        );
        assert_eq!(row(3).await.status(), JobStatus::Cancelled);
        // A second delivery of the same batch changes nothing (already terminal).
        assert_eq!(s.finish_jobs(&batch).await.unwrap(), vec![false; 4]);
        // The successor decides job 1; an empty batch is a no-op.
        assert_eq!(
            s.finish_jobs(&[done(stolen, "new", JobStatus::Succeeded, Some(vec![]), 60)]).await.unwrap(),
            vec![true]
        );
        assert_eq!(s.finish_jobs(&[]).await.unwrap(), Vec::<bool>::new());
        assert_eq!(row(1).await.status(), JobStatus::Succeeded);
    }
}

#[tokio::test]
async fn retry_keeps_the_submission_for_the_next_attempt_to_reconcile() {
    for db in testing::all().await {
        let s = &db.store;
        let j = s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        s.claim_jobs(&claim("w", 1, 10, 2)).await.unwrap();
        assert!(s.record_submission(&j.id, "w", "gpu1", "prompt-1").await.unwrap());
        assert!(s.retry_job(&j.id, "w", 10, "gpu1 unreachable for 30 s").await.unwrap());
        let again = s.claim_jobs(&claim("w2", 1, 10, 10)).await.unwrap();
        assert_eq!(again.len(), 1, "{}", db.kind);
        assert_eq!(again[0].backend.as_deref(), Some("gpu1"), "{}", db.kind);
        assert_eq!(again[0].remote_id.as_deref(), Some("prompt-1"), "{}: the prompt may still be there", db.kind);
        assert_eq!(again[0].attempts, 1);
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
async fn a_status_read_is_the_row_its_mark_and_a_queued_jobs_position_in_one_query() {
    for db in testing::all().await {
        let (s, k) = (&db.store, db.kind);
        assert!(s.job_status("no-such-job").await.unwrap().is_none(), "{k}");
        for _ in 0..3 {
            s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        }
        let b = s.insert_job(&job("b", "comfyui"), 2).await.unwrap();
        let running = s.claim_jobs(&claim("w", 1, 10, 3)).await.unwrap();
        assert_eq!(running.len(), 1, "{k}");
        let st = s.job_status(&b.id).await.unwrap().unwrap();
        let pos = s.queue_position(&b).await.unwrap();
        assert_eq!((st.queue_ahead, st.queue_running), (Some(pos.ahead), Some(pos.running)), "{k}: same counts");
        assert_eq!((pos.ahead, pos.running), (0, 1), "{k}: a's first runs; b is next in fair order");
        assert_eq!((st.job.id.as_str(), st.mark_rating, st.mark_hidden), (b.id.as_str(), None, false), "{k}");
        s.mark_job(&b.id, "b", Some(4), Some(true), 5).await.unwrap();
        let st = s.job_status(&b.id).await.unwrap().unwrap();
        assert_eq!((st.mark_rating, st.mark_hidden), (Some(4), true), "{k}");
        // Positions are only computed for queued jobs.
        let st = s.job_status(&running[0].id).await.unwrap().unwrap();
        assert_eq!((st.job.status(), st.queue_position().is_none()), (JobStatus::Dispatched, true), "{k}");
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

#[tokio::test]
async fn finish_batcher_groups_concurrent_outcomes_into_few_commits() {
    for db in testing::all().await {
        let s = &db.store;
        for i in 0..100 {
            s.insert_job(&job(&format!("acct{}", i % 7), "comfyui"), 1).await.unwrap();
        }
        let claimed = s.claim_jobs(&claim("w", 100, 100, 2)).await.unwrap();
        assert_eq!(claimed.len(), 100, "{}", db.kind);
        let (batcher, task) = FinishBatcher::new(s.clone(), DEFAULT_MAX_BATCH);
        let task = tokio::spawn(task);
        let finishes: Vec<_> = claimed
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let b = batcher.clone();
                // One outcome under the wrong owner: refused, the rest recorded.
                let owner = if i == 42 { "someone-else" } else { "w" };
                let f = done(&j.id, owner, JobStatus::Succeeded, Some(vec![format!("m{i}")]), 10);
                tokio::spawn(async move { b.finish(f).await.unwrap() })
            })
            .collect();
        let mut applied = vec![];
        for f in finishes {
            applied.push(f.await.unwrap());
        }
        assert_eq!(applied.iter().filter(|a| **a).count(), 99, "{}", db.kind);
        assert!(!applied[42]);
        assert_eq!(batcher.outcomes(), 100);
        assert!(batcher.commits() <= 10, "{}: {} commits for 100 concurrent outcomes", db.kind, batcher.commits());
        let stats = s.queue_stats().await.unwrap();
        assert!(stats.by_status.contains(&("succeeded".to_string(), 99)), "{}: {:?}", db.kind, stats.by_status);
        assert_eq!(s.get_job(&claimed[42].id).await.unwrap().unwrap().status(), JobStatus::Dispatched);
        // The task keeps serving while any clone lives and ends once all are gone.
        let late = batcher.clone();
        drop(batcher);
        let f = done(&claimed[42].id, "w", JobStatus::Succeeded, None, 11);
        assert!(late.finish(f).await.unwrap(), "{}: served while a clone lives", db.kind);
        drop(late);
        tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("finisher ends").unwrap();
    }
}

/// A job whose prompt waited too long on its backend goes back to the queue
/// only for the lease holder and only while it waits (`dispatched`): its
/// prompt becomes a prompt to cancel in the same transaction, the prompt id
/// is cleared, `backend` stays (routing avoids it) and the submission that
/// never started is not counted. `backend_ahead` is written only by the
/// lease holder while the job waits, and cleared when it runs.
#[tokio::test]
async fn a_waiting_job_is_requeued_fenced_with_its_prompt_to_cancel() {
    for db in testing::all().await {
        let (s, k) = (&db.store, db.kind);
        let j = s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        s.claim_jobs(&claim("w", 1, 10, 2)).await.unwrap();
        assert!(s.record_submission(&j.id, "w", "gpu1", "p-1").await.unwrap());
        assert!(!s.set_backend_ahead(&j.id, "stale", Some(3)).await.unwrap(), "{k}: fenced");
        assert!(s.set_backend_ahead(&j.id, "w", Some(3)).await.unwrap(), "{k}");
        assert_eq!(s.get_job(&j.id).await.unwrap().unwrap().backend_ahead, Some(3), "{k}");
        // A stale worker moves nothing and records nothing.
        assert!(!s.requeue_waiting(&j.id, "stale", "waited", 5).await.unwrap(), "{k}");
        assert!(s.remote_cancels(None).await.unwrap().is_empty(), "{k}");
        assert!(s.requeue_waiting(&j.id, "w", "waited too long", 5).await.unwrap(), "{k}");
        let row = s.get_job(&j.id).await.unwrap().unwrap();
        assert_eq!(row.status(), JobStatus::Queued, "{k}");
        assert_eq!((row.backend.as_deref(), row.remote_id.as_deref()), (Some("gpu1"), None), "{k}");
        assert_eq!((row.attempts, row.backend_ahead, row.lease_owner.as_deref()), (0, None, None), "{k}");
        let cancels = s.remote_cancels(None).await.unwrap();
        assert_eq!(cancels.len(), 1, "{k}");
        assert_eq!((cancels[0].backend.as_str(), cancels[0].remote_id.as_str()), ("gpu1", "p-1"), "{k}");
        // Claimed again and running: no longer waiting, so neither write applies.
        s.claim_jobs(&claim("w2", 1, 10, 6)).await.unwrap();
        assert!(s.record_submission(&j.id, "w2", "gpu2", "p-2").await.unwrap());
        assert!(s.mark_running(&j.id, "w2", 7).await.unwrap());
        assert!(!s.set_backend_ahead(&j.id, "w2", Some(1)).await.unwrap(), "{k}");
        assert!(!s.requeue_waiting(&j.id, "w2", "waited", 8).await.unwrap(), "{k}: it runs");
        assert_eq!(s.get_job(&j.id).await.unwrap().unwrap().status(), JobStatus::Running, "{k}");
    }
}

/// The heartbeat renews only the jobs a worker still works on: one its
/// worker gave up on lapses and is requeued for another to reconcile.
#[tokio::test]
async fn heartbeat_renews_only_the_jobs_still_worked_on() {
    for db in testing::all().await {
        let (s, k) = (&db.store, db.kind);
        let a = s.insert_job(&job("a", "comfyui"), 1).await.unwrap();
        let b = s.insert_job(&job("b", "comfyui"), 1).await.unwrap();
        let claimed = s.claim_jobs(&claim("w", 2, 10, 2)).await.unwrap();
        assert_eq!(claimed.len(), 2, "{k}");
        s.cancel_job(&a.id, 3).await.unwrap();
        assert_eq!(
            s.heartbeat_jobs("w", std::slice::from_ref(&a.id), 100_000).await.unwrap(),
            vec![a.id.clone()],
            "{k}"
        );
        assert!(s.heartbeat_jobs("other", std::slice::from_ref(&b.id), 100_000).await.unwrap().is_empty(), "{k}");
        assert!(s.heartbeat_jobs("w", &[], 100_000).await.unwrap().is_empty(), "{k}");
        // b's lease (30 s from the claim) lapses; a's was renewed.
        assert_eq!(s.requeue_expired(50_000).await.unwrap(), 1, "{k}");
        assert_eq!(s.get_job(&b.id).await.unwrap().unwrap().status(), JobStatus::Queued, "{k}");
        assert_eq!(s.get_job(&a.id).await.unwrap().unwrap().status(), JobStatus::Dispatched, "{k}");
    }
}
