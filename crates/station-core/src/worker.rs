//! Workers: claim jobs, run them through their executor, record the outcome.
//!
//! One loop per executor claims as many jobs as the executor has free slots.
//! A heartbeat renews this process's leases and relays cancellation requests;
//! a sweeper requeues jobs whose lease lapsed (their worker died), keeping the
//! backend reference so the next worker reconciles before resubmitting.
//!
//! Outcomes go through one [`FinishBatcher`] per process: what finishes while
//! a commit is in flight shares the next one (group commit). Only after its
//! commit does a job's worker publish its events and settle its points.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use station_store::{
    ClaimRequest, DEFAULT_MAX_BATCH, FinishBatcher, Finished, JobFinish, JobRow, JobStatus, Settlement,
};
use station_tools::InputType;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Station;
use crate::events::JobEvent;
use crate::executor::{ExecContext, ExecError, ExecJob, Executor, InputImage};
use crate::faults::FaultPoint;

/// Running workers; dropping it does not stop them, [`Workers::shutdown`] does.
pub struct Workers {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    owner: Arc<str>,
    station: Station,
    inflight: Inflight,
}

type Inflight = Arc<Mutex<HashMap<String, CancellationToken>>>;

impl Workers {
    /// Starts a claim loop per registered executor, the heartbeat, the sweeper,
    /// the loop that moves casts of spells on as their steps end, the
    /// webhook sender and a watcher per configured chain (`[wallets]`).
    pub fn start(station: &Station) -> Workers {
        let owner: Arc<str> = format!(
            "{}-{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "station".into()),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
        .into();
        let stop = CancellationToken::new();
        let inflight: Inflight = Default::default();
        let mut tasks = JoinSet::new();
        // The finisher's task ends once the claim loops (holding its only
        // senders) and their jobs are gone, after recording what they sent.
        let (finisher, finisher_task) = FinishBatcher::new(station.store.clone(), DEFAULT_MAX_BATCH);
        tasks.spawn(finisher_task);
        let executors: Vec<Arc<dyn Executor>> = station.executors.read().expect("executors lock").clone();
        for ex in executors {
            let ctx = LoopCtx {
                owner: owner.clone(),
                stop: stop.clone(),
                inflight: inflight.clone(),
                finisher: finisher.clone(),
            };
            tasks.spawn(claim_loop(station.clone(), ex, ctx));
        }
        drop(finisher);
        tasks.spawn(heartbeat_loop(station.clone(), owner.clone(), stop.clone(), inflight.clone()));
        tasks.spawn(sweeper_loop(station.clone(), stop.clone()));
        tasks.spawn(crate::collections::export_loop(station.clone(), owner.clone(), stop.clone()));
        tasks.spawn(crate::spells::cast::cast_loop(station.clone(), stop.clone()));
        tasks.spawn(crate::cook::cook_loop(station.clone(), owner.clone(), stop.clone()));
        tasks.spawn(crate::webhooks::webhook_loop(station.clone(), stop.clone()));
        for chain in station.wallet_chains.iter() {
            tasks.spawn(crate::wallets::watch_loop(station.clone(), chain.clone(), stop.clone()));
        }
        info!(%owner, "workers started");
        Workers { stop, tasks, owner, station: station.clone(), inflight }
    }

    /// This process's lease owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Stops job `id` now if this process runs it (its executor interrupts
    /// it on its backend), without waiting for the heartbeat to relay a
    /// cancellation request; `false` if it runs elsewhere or not at all.
    /// Use after [`Station::cancel`], which records the request.
    pub fn cancel_local(&self, id: &str) -> bool {
        match self.inflight.lock().expect("inflight").get(id) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops claiming, lets running jobs go (their leases are released so
    /// another process resumes them at once) and waits for the loops to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        match self.station.store.release_leases(&self.owner).await {
            Ok(n) if n > 0 => info!(jobs = n, "released leases for another process to resume"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not release leases; they will lapse"),
        }
    }
}

/// What a claim loop shares with the rest of the process's workers.
struct LoopCtx {
    owner: Arc<str>,
    stop: CancellationToken,
    inflight: Inflight,
    finisher: FinishBatcher,
}

async fn claim_loop(station: Station, ex: Arc<dyn Executor>, ctx: LoopCtx) {
    let LoopCtx { owner, stop, inflight, finisher } = ctx;
    let q = station.config.queue.clone();
    // Each job's task ends with its account's id.
    let mut running: JoinSet<String> = JoinSet::new();
    // Jobs this loop runs, per account (for the running cap, see below).
    let mut per_account: HashMap<String, u64> = HashMap::new();
    // The last claim left nothing claimable behind (it filled fewer slots
    // than it had): until a submit, a requeue or the poll tick, a job ending
    // frees a slot that no queued job can take.
    let mut drained = false;
    let mut failures = 0u32;
    loop {
        // Listen for submits BEFORE claiming: `notify_waiters` stores nothing,
        // so a submit landing during the claim would otherwise wait a poll tick.
        let wake = station.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        while let Some(r) = running.try_join_next() {
            ended(r.ok(), &mut per_account);
        }
        let free = ex.capacity().saturating_sub(running.len());
        let mut claimed = 0;
        if free > 0 && !stop.is_cancelled() {
            station.faults.hit(FaultPoint::Claim, &owner, "").await;
            let req = ClaimRequest {
                service: ex.service(),
                owner: &owner,
                limit: free as i64,
                lease_ms: (q.lease_seconds * 1000) as i64,
                per_account_running_cap: q.per_user_running as i64,
                now: station_store::now_ms(),
            };
            match station.store.claim_jobs(&req).await {
                Ok(jobs) => {
                    failures = 0;
                    claimed = jobs.len();
                    drained = claimed < free;
                    for job in jobs {
                        *per_account.entry(job.account_id.clone()).or_default() += 1;
                        // Not a child of `stop`: shutting down hands jobs back to the
                        // queue, it must not cancel (interrupt) them on their backend.
                        let token = CancellationToken::new();
                        inflight.lock().expect("inflight").insert(job.id.clone(), token.clone());
                        let (st, ex, ow, inf, fin) =
                            (station.clone(), ex.clone(), owner.clone(), inflight.clone(), finisher.clone());
                        running.spawn(async move {
                            let id = job.id.clone();
                            let account = job.account_id.clone();
                            let w = JobWorker { station: &st, owner: &ow, finisher: &fin };
                            run_job(&w, ex, job, token).await;
                            inf.lock().expect("inflight").remove(&id);
                            st.faults.hit(FaultPoint::JobDone, &ow, &id).await;
                            account
                        });
                    }
                }
                Err(e) => {
                    // Database unreachable (or failing): back off, then resume.
                    failures = (failures + 1).min(6);
                    let backoff = Duration::from_millis(q.poll_ms.max(50) << failures).min(Duration::from_secs(5));
                    warn!(service = ex.service(), error = %e, retry_in_ms = backoff.as_millis() as u64, "claim failed; will retry");
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            }
        }
        if stop.is_cancelled() {
            // Running jobs keep their leases until release_leases in shutdown;
            // abort them here so nothing writes after we let go.
            running.abort_all();
            while running.join_next().await.is_some() {}
            return;
        }
        if claimed > 0 && claimed == free {
            continue; // more may be waiting
        }
        let tick = tokio::time::sleep(Duration::from_millis(q.poll_ms));
        tokio::pin!(tick);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = &mut wake => break,
                _ = &mut tick => break,
                Some(r) = running.join_next(), if !running.is_empty() => {
                    // A job ended. Claiming again finds something only if the
                    // last claim left jobs behind, or if this job's account
                    // was at its running cap (its queued jobs were skipped).
                    // Otherwise the claim would be an empty write: skip it.
                    let before = ended(r.ok(), &mut per_account);
                    if !drained || before >= q.per_user_running {
                        break;
                    }
                }
            }
        }
    }
}

/// Counts a job of `account` as ended in `per_account`; returns how many of
/// the account's jobs ran before (`u64::MAX` when the task gave no account:
/// it panicked or was aborted).
fn ended(account: Option<String>, per_account: &mut HashMap<String, u64>) -> u64 {
    let Some(account) = account else { return u64::MAX };
    let n = per_account.get(&account).copied().unwrap_or(0);
    if n <= 1 {
        per_account.remove(&account);
    } else {
        per_account.insert(account, n - 1);
    }
    n
}

async fn heartbeat_loop(station: Station, owner: Arc<str>, stop: CancellationToken, inflight: Inflight) {
    let lease_ms = (station.config.queue.lease_seconds * 1000) as i64;
    let every = Duration::from_millis((lease_ms / 3).max(100) as u64);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        station.faults.hit(FaultPoint::Heartbeat, &owner, "").await;
        // Only the jobs this process still works on: one whose worker gave up
        // (its outcome could not be written) must lapse to be reconciled.
        let ids: Vec<String> = inflight.lock().expect("inflight").keys().cloned().collect();
        match station.store.heartbeat_jobs(&owner, &ids, station_store::now_ms() + lease_ms).await {
            Ok(cancel_ids) => {
                let map = inflight.lock().expect("inflight");
                for id in cancel_ids {
                    if let Some(t) = map.get(&id) {
                        t.cancel();
                    }
                }
            }
            Err(e) => warn!(error = %e, "heartbeat failed; leases may lapse"),
        }
    }
}

async fn sweeper_loop(station: Station, stop: CancellationToken) {
    let every = Duration::from_millis((station.config.queue.lease_seconds * 500).max(200));
    loop {
        match station.store.requeue_expired(station_store::now_ms()).await {
            Ok(n) if n > 0 => {
                info!(jobs = n, "requeued jobs whose worker stopped heartbeating");
                station.wake.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "lease sweep failed"),
        }
        match station.settle_stuck_holds().await {
            Ok(n) if n > 0 => info!(jobs = n, "settled points of jobs that ended without settling"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "points sweep failed"),
        }
        match station.complete_captions().await {
            Ok(n) if n > 0 => info!(captions = n, "completed caption jobs that ended without applying their text"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "caption sweep failed"),
        }
        match station.complete_trainings().await {
            Ok(n) if n > 0 => info!(trainings = n, "completed trainings whose job ended without completing them"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "training sweep failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// What one job's task needs to record its outcome.
struct JobWorker<'a> {
    station: &'a Station,
    owner: &'a str,
    finisher: &'a FinishBatcher,
}

async fn run_job(w: &JobWorker<'_>, ex: Arc<dyn Executor>, job: JobRow, cancel: CancellationToken) {
    let station = w.station;
    let ctx = ExecContext::new(station, w.owner, &job.id, cancel.clone());
    if job.remote_id.is_none() {
        station.bus.publish(JobEvent::Status { job_id: job.id.clone(), status: JobStatus::Dispatched, error: None });
    }
    let exec_job = match prepare(station, &job).await {
        Ok(j) => j,
        Err(msg) => {
            finish(w, &job, Outcome::Failed("invalid_input", msg)).await;
            return;
        }
    };
    let timeout = Duration::from_millis(job.timeout_ms.max(1) as u64);
    // The job timeout counts running time: for an executor that reports when
    // the backend starts the job, waiting in the backend's own queue does
    // not count (that wait has its own bound, `queue.backend_wait_seconds`).
    let mut started = ctx.started();
    let from_claim = !ex.reports_start();
    let timer = async move {
        if !from_claim {
            // An error means the context is gone, and with it the execution.
            let _ = started.wait_for(|s| *s).await;
        }
        tokio::time::sleep(timeout).await;
    };
    // A training that reports no progress for `training.stall_minutes`
    // (counted from the backend's start, restarted at every report) is
    // stopped like a timed-out job, and its points are returned.
    let stall_after = crate::training::definition_for_tool(&job.tool_id).and(station.config.training.stall_after());
    let mut progressed = ctx.progressed();
    let mut begun = ctx.started();
    let stall = async move {
        let Some(limit) = stall_after else { return std::future::pending().await };
        if !from_claim && begun.wait_for(|s| *s).await.is_err() {
            return std::future::pending().await;
        }
        loop {
            tokio::select! {
                changed = progressed.changed() => if changed.is_err() {
                    return std::future::pending().await;
                },
                () = tokio::time::sleep(limit) => return limit,
            }
        }
    };
    // A caption tool's result is text, stored as it is (not an image).
    let text_result = exec_job.tool.category == station_tools::Category::Caption;
    let result = tokio::select! {
        r = ex.execute(exec_job, ctx) => r,
        limit = stall => {
            let msg = format!("made no progress for {}", crate::training::duration_words(limit));
            warn!(job = %job.id, "training stalled: {msg}; stopping it");
            if finish(w, &job, Outcome::Failed("stalled", msg)).await {
                let current = station.store.get_job(&job.id).await.ok().flatten();
                ex.cancel_remote(current.as_ref().unwrap_or(&job)).await;
            }
            return;
        }
        () = timer => {
            station.faults.hit(FaultPoint::Timeout, w.owner, &job.id).await;
            // Fenced first: only a worker that still holds the job may end it,
            // and only then may it touch the prompt on the backend. A stale
            // timer (the job moved to another worker meanwhile) does nothing.
            let msg = format!("timed out after {} s", timeout.as_secs());
            if finish(w, &job, Outcome::Failed("timeout", msg)).await {
                let current = station.store.get_job(&job.id).await.ok().flatten();
                ex.cancel_remote(current.as_ref().unwrap_or(&job)).await;
            }
            return;
        }
    };
    station.faults.hit(FaultPoint::AfterExecute, w.owner, &job.id).await;
    let outcome = match result {
        Ok(files) => {
            // The operator's watermark goes on before anything is stored.
            let watermark = match station.watermarks_results(&job.account_id, &job.tool_id).await {
                Ok(w) => w,
                Err(e) => {
                    retry_or_fail(w, &job, format!("could not read the account's watermark setting: {e}")).await;
                    return;
                }
            };
            // Blobs are written now; their media rows only by the fenced finish.
            let mut rows = vec![];
            let saves_file = crate::training::definition_for_tool(&job.tool_id).is_some();
            for f in files {
                if text_result || saves_file {
                    // Text, or a trained file: not an image, stored as it is.
                    if saves_file
                        && !text_result
                        && let Err(e) = station.store.set_training_file_name(&job.id, &f.filename).await
                    {
                        retry_or_fail(w, &job, format!("could not record the trained file's name: {e}")).await;
                        return;
                    }
                    match station.media.stage_file(f.bytes, Some(&job.account_id), Some(&job.id), "output").await {
                        Ok(m) => rows.push(m),
                        Err(e) => {
                            retry_or_fail(w, &job, format!("could not store output {}: {e}", f.filename)).await;
                            return;
                        }
                    }
                    continue;
                }
                let bytes = if watermark {
                    match station.auto_watermark.apply(f.bytes).await {
                        Ok(b) => b,
                        Err(e) => {
                            let msg = format!("output {}: {e}", f.filename);
                            finish(w, &job, Outcome::Failed("execution_error", msg)).await;
                            return;
                        }
                    }
                } else {
                    f.bytes
                };
                match station.media.stage_image(bytes, Some(&job.account_id), Some(&job.id), "output").await {
                    Ok(m) => rows.push(m),
                    Err(e) => {
                        retry_or_fail(w, &job, format!("could not store output {}: {e}", f.filename)).await;
                        return;
                    }
                }
            }
            Outcome::Succeeded(rows)
        }
        Err(ExecError::Transient(msg)) => {
            retry_or_fail(w, &job, msg).await;
            return;
        }
        Err(ExecError::Busy(msg)) => {
            // Not a failure: the job waits in Station's fair queue, not in a
            // backend's FIFO, and is claimed again once a slot frees up.
            let run_after = station_store::now_ms() + station.config.queue.poll_ms as i64;
            if let Ok(true) = station.store.retry_job_counting(&job.id, w.owner, run_after, &msg, false).await {
                station.bus.publish(JobEvent::Status {
                    job_id: job.id.clone(),
                    status: JobStatus::Queued,
                    error: None,
                });
            }
            return;
        }
        Err(ExecError::WaitedTooLong(msg)) => {
            move_waiting(w, &ex, &job, msg).await;
            return;
        }
        Err(ExecError::Cancelled) => Outcome::Cancelled,
        Err(ExecError::LeaseLost) => {
            info!(job = %job.id, "lease lost; another worker owns the job now");
            return;
        }
        Err(ExecError::Invalid { message, .. }) => Outcome::Failed("invalid_input", message),
        Err(ExecError::Failed(m)) => Outcome::Failed("execution_error", m),
        Err(ExecError::Unroutable(m)) => Outcome::Failed("no_backend", m),
    };
    finish(w, &job, outcome).await;
}

/// Moves a job whose prompt waited too long in its backend's own queue back
/// to Station's queue: fenced first (the prompt becomes a `remote_cancels`
/// row in the same transaction), and only if that applied is the prompt
/// deleted on the backend — so a stale worker touches nothing, and a crash
/// in between leaves the deletion to whoever next sees the backend healthy.
async fn move_waiting(w: &JobWorker<'_>, ex: &Arc<dyn Executor>, job: &JobRow, msg: String) {
    let station = w.station;
    let Ok(Some(current)) = station.store.get_job(&job.id).await else {
        warn!(job = %job.id, "cannot read the job to move it; its lease will lapse and it will be reconciled");
        return;
    };
    match station.store.requeue_waiting(&job.id, w.owner, &msg, station_store::now_ms()).await {
        Ok(true) => {
            info!(job = %job.id, backend = ?current.backend, "moved back to the queue: {msg}");
            station.bus.publish(JobEvent::Status { job_id: job.id.clone(), status: JobStatus::Queued, error: None });
            station.wake.notify_waiters();
            ex.cancel_remote(&current).await;
        }
        Ok(false) => info!(job = %job.id, "not moved: it started or another worker owns it now"),
        Err(e) => {
            warn!(job = %job.id, error = %e, "could not move the job; its lease will lapse and it will be reconciled");
        }
    }
}

enum Outcome {
    Succeeded(Vec<station_store::MediaRow>),
    Failed(&'static str, String),
    Cancelled,
}

/// Records the outcome through the process's finisher (a shared commit),
/// then — only once it is committed — publishes the events and settles the
/// job's points (exactly one capture or release, by the worker that recorded it).
/// True when this worker's outcome was recorded (it still held the lease).
async fn finish(w: &JobWorker<'_>, job: &JobRow, outcome: Outcome) -> bool {
    let station = w.station;
    // A timed-out (or stalled) job's prompt is recorded, with the outcome, as one to
    // cancel on its backend: durable even if this process dies next.
    let cancel_remote = matches!(outcome, Outcome::Failed("timeout" | "stalled", _));
    let (status, outputs, error, media) = match outcome {
        Outcome::Succeeded(rows) => {
            (JobStatus::Succeeded, Some(rows.iter().map(|m| m.id.clone()).collect::<Vec<_>>()), None, rows)
        }
        Outcome::Failed(code, msg) => (JobStatus::Failed, None, Some((code.to_string(), msg)), vec![]),
        Outcome::Cancelled => {
            (JobStatus::Cancelled, None, Some(("cancelled".to_string(), "cancelled by request".to_string())), vec![])
        }
    };
    let message = error.as_ref().map(|(_, m)| m.clone());
    let record_error = error.clone();
    let actor = format!("worker:{}", w.owner);
    let settle = station.finish_settlement(job, status, error.as_ref().map(|(c, _)| c.as_str()), &actor);
    let record = JobFinish {
        settle,
        job_id: job.id.clone(),
        owner: w.owner.to_string(),
        status,
        outputs: outputs.clone(),
        error,
        now: station_store::now_ms(),
        media,
        cancel_remote,
    };
    // While the database is unreachable the outcome is retried for a while
    // (the lease may lapse meanwhile: then the fenced finish is refused and
    // the successor reconciles). A worker that gives up stops renewing the
    // lease (the heartbeat renews only jobs still being worked on).
    let give_up = std::time::Instant::now() + Duration::from_secs(station.config.queue.lease_seconds.max(1) * 2);
    let mut delay = Duration::from_millis(200);
    let recorded = loop {
        match w.finisher.finish_settling(record.clone()).await {
            Err(e) if e.is_unavailable() && std::time::Instant::now() < give_up => {
                warn!(job = %job.id, error = %e, "database unreachable; retrying the outcome");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            r => break r,
        }
    };
    match recorded {
        Ok(Finished { recorded: true, settled }) => {
            let outcome = match status {
                JobStatus::Succeeded => "succeeded",
                JobStatus::Cancelled => "cancelled",
                _ => "failed",
            };
            // Timed from the claimed row: no extra read on the hot path.
            crate::telemetry::job_finished(job, outcome, station_store::now_ms());
            if status == JobStatus::Failed {
                let (code, why) = record_error.as_ref().map(|(c, m)| (c.as_str(), m.as_str())).unwrap_or(("", ""));
                warn!(job = %job.id, tool = %job.tool_id, code, error = %why, "job failed");
            }
            if let Some(ids) = outputs {
                station.bus.publish(JobEvent::Result { job_id: job.id.clone(), outputs: ids });
            }
            station.bus.publish(JobEvent::Status { job_id: job.id.clone(), status, error: message });
            // Only the worker that recorded the outcome settles the points:
            // in the finish's transaction when it could, otherwise now; if
            // this fails (or the process dies first) the sweeper settles them.
            match settled {
                Some(Settlement::Captured { charged, held }) => {
                    crate::telemetry::points("captured", charged);
                    crate::telemetry::points("released", held - charged);
                }
                Some(Settlement::Released { held }) => crate::telemetry::points("released", held),
                Some(Settlement::AlreadySettled | Settlement::NoHold) => {}
                None => {
                    if let Err(e) = station.settle_job(&job.id, &actor).await {
                        warn!(job = %job.id, error = %e, "could not settle the job's points; the sweeper will");
                    }
                }
            }
            if station.tools.get(&job.tool_id).is_some_and(|t| t.category == station_tools::Category::Caption) {
                // The caption goes into its dataset image (or the record
                // ends failed); if this fails the sweeper completes it.
                if let Err(e) = station.complete_caption_for_job(&job.id).await {
                    warn!(job = %job.id, error = %e, "could not apply the caption; the sweeper will");
                }
            }
            if crate::training::definition_for_tool(&job.tool_id).is_some() {
                // The trained file becomes a catalog LoRA (or the training
                // ends failed); if this fails the sweeper completes it.
                if let Err(e) = station.complete_training_for_job(&job.id).await {
                    warn!(job = %job.id, error = %e, "could not complete the training; the sweeper will");
                }
            }
            true
        }
        Ok(Finished { recorded: false, .. }) => {
            info!(job = %job.id, "outcome not recorded: lease lost to another worker");
            false
        }
        Err(e) => {
            warn!(job = %job.id, error = %e, "could not record outcome; the lease will lapse and the job will be reconciled");
            false
        }
    }
}

async fn retry_or_fail(w: &JobWorker<'_>, job: &JobRow, msg: String) {
    let station = w.station;
    // `attempts` was bumped by record_submission when this try reached a
    // backend; a try that never did still counts, so a broken backend cannot
    // loop forever.
    let current = station.store.get_job(&job.id).await.ok().flatten();
    let submitted = current.as_ref().is_some_and(|c| c.attempts > job.attempts);
    let attempts = current.as_ref().map(|j| j.attempts).unwrap_or(job.attempts).max(1);
    if attempts >= job.max_attempts {
        let m = format!("gave up after {attempts} attempts: {msg}");
        finish(w, job, Outcome::Failed("backend_unavailable", m)).await;
        return;
    }
    let base = station.config.queue.retry_base_ms as i64;
    let delay = base.saturating_mul(1 << (attempts - 1).min(10));
    warn!(job = %job.id, attempts, delay_ms = delay, error = %msg, "transient failure; retrying");
    // The row keeps the last backend and prompt id: the next attempt asks that
    // backend first, so a prompt it still holds is followed, not run twice.
    // Fenced, and the attempt of a try that never reached a backend is
    // counted in the same statement.
    let run_after = station_store::now_ms() + delay;
    if let Ok(true) = station.store.retry_job_counting(&job.id, w.owner, run_after, &msg, !submitted).await {
        station.bus.publish(JobEvent::Status { job_id: job.id.clone(), status: JobStatus::Queued, error: Some(msg) });
    }
}

async fn prepare(station: &Station, job: &JobRow) -> Result<ExecJob, String> {
    let tool = station
        .tools
        .get(&job.tool_id)
        .or_else(|| crate::training::definition_for_tool(&job.tool_id).map(|d| d.tool.clone()))
        .ok_or_else(|| format!("tool {} no longer exists", job.tool_id))?;
    let params = job.params_json();
    let mut images = HashMap::new();
    for (name, input) in &tool.inputs {
        if input.kind != InputType::Image {
            continue;
        }
        let Some(serde_json::Value::String(r)) = params.get(name) else { continue };
        let id = r.trim_start_matches("media:");
        let (row, bytes) = station.media.get(id, None).await.map_err(|e| format!("{name}: {e}"))?;
        let ext = station_media::extension_for_mime(&row.mime);
        images.insert(
            name.clone(),
            InputImage {
                media_id: row.id.clone(),
                filename: format!("station_{}.{ext}", &row.hash[..16]),
                bytes: Arc::new(bytes),
                mime: row.mime,
            },
        );
    }
    let dataset = crate::training::load_dataset(station, &params).await?;
    Ok(ExecJob { row: job.clone(), tool, params, images, dataset })
}
