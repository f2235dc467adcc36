//! The seam between the queue and whatever runs a job (ComfyUI, native media).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use station_store::{JobRow, Store};
use station_tools::ToolDef;
use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, JobEvent};

/// An image input handed to an executor.
#[derive(Debug, Clone)]
pub struct InputImage {
    /// Media id it came from.
    pub media_id: String,
    /// Encoded bytes.
    pub bytes: Arc<Vec<u8>>,
    /// Detected MIME type.
    pub mime: String,
    /// A file name suitable for uploading (`<hash-prefix>.png`).
    pub filename: String,
}

/// One image of a training dataset, with its caption, handed to an executor
/// (a job whose tool declares `comfyui.dataset`).
#[derive(Debug, Clone)]
pub struct DatasetFile {
    /// Encoded bytes.
    pub bytes: Arc<Vec<u8>>,
    /// File extension for its MIME type (`png`).
    pub extension: String,
    /// The caption the trainer reads for it.
    pub caption: String,
}

/// Everything an executor needs to run one job.
#[derive(Debug, Clone)]
pub struct ExecJob {
    /// The job row as claimed. `remote_id` set means an earlier attempt was
    /// submitted and the executor must ask the backend about it first.
    pub row: JobRow,
    /// The tool definition.
    pub tool: Arc<ToolDef>,
    /// Validated parameters.
    pub params: Map<String, Value>,
    /// Image inputs by input name.
    pub images: HashMap<String, InputImage>,
    /// The training dataset, in order (empty for other jobs).
    pub dataset: Vec<DatasetFile>,
}

/// One output file an executor produced.
#[derive(Debug, Clone)]
pub struct OutputFile {
    /// Encoded bytes.
    pub bytes: Vec<u8>,
    /// The backend's name for it (kept for info views).
    pub filename: String,
}

/// Why a job did not produce outputs.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Worth retrying, possibly elsewhere: backend unreachable, 5xx, dropped
    /// socket, backend restarted and forgot the job.
    #[error("{0}")]
    Transient(String),
    /// The request itself is wrong (the backend refused it); retrying cannot help.
    #[error("{message}")]
    Invalid {
        /// User-facing message naming the tool input where known.
        message: String,
        /// The tool input behind the problem, if known.
        field: Option<String>,
    },
    /// The backend ran the job and it failed.
    #[error("{0}")]
    Failed(String),
    /// No backend can run this tool (missing nodes or models everywhere).
    #[error("{0}")]
    Unroutable(String),
    /// Cancelled on request.
    #[error("cancelled")]
    Cancelled,
    /// This worker no longer holds the job; another one took over.
    #[error("lease lost")]
    LeaseLost,
    /// Every backend able to run the job is healthy but full right now
    /// (counting prompts other clients queued there): the job goes back to
    /// Station's queue without counting an attempt.
    #[error("{0}")]
    Busy(String),
    /// The job's prompt waited in its backend's own queue past
    /// `queue.backend_wait_seconds` without starting: the worker moves the
    /// job back to Station's queue (fenced, with the prompt recorded as one
    /// to delete there) and only then deletes the prompt on the backend.
    #[error("{0}")]
    WaitedTooLong(String),
}

/// The jobs of this process that wait on a remote run (a hosted provider's
/// run id), each with the [`tokio::sync::Notify`] that wakes its waiter.
/// A provider's webhook is a hint, never an outcome: it only makes the
/// waiter ask the provider now instead of at its next poll.
#[derive(Clone, Default)]
pub struct RemoteHints(Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Notify>>>>);

impl RemoteHints {
    fn key(service: &str, remote_id: &str) -> String {
        format!("{service}\u{1f}{remote_id}")
    }

    /// Registers a waiter for `remote_id` on `service` (replacing an earlier one).
    pub(crate) fn register(&self, service: &str, remote_id: &str) -> HintWaiter {
        let key = RemoteHints::key(service, remote_id);
        let notify = Arc::new(tokio::sync::Notify::new());
        self.0.lock().expect("hints lock").insert(key.clone(), notify.clone());
        HintWaiter { hints: self.clone(), key, notify }
    }

    /// Wakes the waiter of `remote_id` on `service`, if this process has
    /// one; false otherwise.
    pub fn wake(&self, service: &str, remote_id: &str) -> bool {
        let waiter = self.0.lock().expect("hints lock").get(&Self::key(service, remote_id)).cloned();
        match waiter {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A registration in [`RemoteHints`], removed when dropped.
pub struct HintWaiter {
    hints: RemoteHints,
    key: String,
    notify: Arc<tokio::sync::Notify>,
}

impl HintWaiter {
    /// Resolves at the next hint (one that came since the last call counts).
    pub async fn hinted(&self) {
        self.notify.notified().await;
    }
}

impl Drop for HintWaiter {
    fn drop(&mut self) {
        let mut map = self.hints.0.lock().expect("hints lock");
        if map.get(&self.key).is_some_and(|n| Arc::ptr_eq(n, &self.notify)) {
            map.remove(&self.key);
        }
    }
}

/// Handed to an executor for one job: durable bookkeeping and progress.
#[derive(Clone)]
pub struct ExecContext {
    pub(crate) store: Store,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) owner: Arc<str>,
    pub(crate) job_id: Arc<str>,
    pub(crate) cancel: CancellationToken,
    pub(crate) last_progress: Arc<std::sync::Mutex<(f64, i64)>>,
    pub(crate) media: crate::media::MediaService,
    pub(crate) faults: crate::faults::Faults,
    /// Set once the backend started executing the job: the job timeout
    /// counts from then (waiting in a backend's queue is not running).
    pub(crate) started: Arc<tokio::sync::watch::Sender<bool>>,
    /// Counts progress reports: the worker's stall timer restarts at each.
    pub(crate) progressed: Arc<tokio::sync::watch::Sender<u64>>,
    /// The last `backend_ahead` written (None: none yet or unknown).
    pub(crate) last_ahead: Arc<std::sync::Mutex<Option<Option<i64>>>>,
    pub(crate) backend_wait: Option<std::time::Duration>,
    pub(crate) hints: RemoteHints,
}

impl ExecContext {
    /// Builds a context for a claimed job (the worker; executor tests use
    /// [`crate::Station::exec_context`]).
    pub(crate) fn new(station: &crate::Station, owner: &str, job_id: &str, cancel: CancellationToken) -> Self {
        ExecContext {
            store: station.store.clone(),
            bus: station.bus.clone(),
            owner: owner.into(),
            job_id: job_id.into(),
            cancel,
            last_progress: Arc::new(std::sync::Mutex::new((0.0, 0))),
            media: station.media.clone(),
            faults: station.faults.clone(),
            started: Arc::new(tokio::sync::watch::channel(false).0),
            progressed: Arc::new(tokio::sync::watch::channel(0).0),
            last_ahead: Arc::new(std::sync::Mutex::new(None)),
            backend_wait: match station.config.queue.backend_wait_seconds {
                0 => None,
                s => Some(std::time::Duration::from_secs(s)),
            },
            hints: station.remote_hints.clone(),
        }
    }

    /// How long a prompt may wait in a backend's own queue before the job
    /// is moved back to Station's (`queue.backend_wait_seconds`; None: no limit).
    pub fn backend_wait(&self) -> Option<std::time::Duration> {
        self.backend_wait
    }

    /// Whether the backend started executing the job ([`ExecContext::running`] was called).
    pub fn is_running(&self) -> bool {
        *self.started.borrow()
    }

    /// Resolves once [`ExecContext::running`] was called (the worker's job
    /// timer starts there).
    pub(crate) fn started(&self) -> tokio::sync::watch::Receiver<bool> {
        self.started.subscribe()
    }

    /// Changes at every progress report (the worker's stall timer).
    pub(crate) fn progressed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progressed.subscribe()
    }

    /// The job's prompt waits in its backend's own queue with `ahead`
    /// prompts before it (None: unknown). Written (fenced: the lease holder,
    /// while the job is `dispatched`) only when it changed, and published as
    /// a `dispatched` status so front ends show the new position.
    pub async fn waiting(&self, ahead: Option<usize>) {
        if self.is_running() {
            return;
        }
        let ahead = ahead.map(|a| a.min(i64::MAX as usize) as i64);
        {
            let mut last = self.last_ahead.lock().expect("ahead lock");
            if *last == Some(ahead) {
                return;
            }
            *last = Some(ahead);
        }
        if let Ok(true) = self.store.set_backend_ahead(&self.job_id, &self.owner, ahead).await {
            self.bus.publish(JobEvent::Status {
                job_id: self.job_id.to_string(),
                status: station_store::JobStatus::Dispatched,
                error: None,
            });
        }
    }

    /// One of the process's decoding slots (`media.decode_concurrency`),
    /// waited for until it frees or the job is cancelled: an executor that
    /// decodes images in this process holds one while it does.
    pub async fn decode_slot(&self) -> Result<crate::media::DecodeSlot, ExecError> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(ExecError::Cancelled),
            slot = self.media.decode_slot() => Ok(slot),
        }
    }

    /// Test-only fault injection: stalls or crashes here when a test asks.
    #[doc(hidden)]
    pub async fn fault_point(&self, point: crate::faults::FaultPoint) {
        self.faults.hit(point, &self.owner, &self.job_id).await;
    }

    /// Must be called BEFORE sending the job to `backend` under `remote_id`,
    /// so that after a crash the job can be looked up there instead of run twice.
    pub async fn record_submission(&self, backend: &str, remote_id: &str) -> Result<(), ExecError> {
        match self.store.record_submission(&self.job_id, &self.owner, backend, remote_id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ExecError::LeaseLost),
            Err(e) => Err(ExecError::Transient(format!("database: {e}"))),
        }
    }

    /// [`ExecContext::record_submission`] on a backend that runs at most
    /// `capacity` jobs at once, counted over every process sharing the
    /// database: when it has that many dispatched or running already,
    /// nothing is recorded and the answer is [`ExecError::Busy`] (the job
    /// goes back to Station's queue without counting an attempt).
    pub async fn record_submission_within(
        &self,
        backend: &str,
        remote_id: &str,
        capacity: usize,
    ) -> Result<(), ExecError> {
        let capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
        match self.store.record_submission_within(&self.job_id, &self.owner, backend, remote_id, Some(capacity)).await {
            Ok(station_store::Submission::Recorded) => Ok(()),
            Ok(station_store::Submission::LeaseLost) => Err(ExecError::LeaseLost),
            Ok(station_store::Submission::Full) => Err(ExecError::Busy(format!(
                "{backend} is running as many jobs as it may ({capacity}), counting every Station process"
            ))),
            Err(e) => Err(ExecError::Transient(format!("database: {e}"))),
        }
    }

    /// The backend started executing the job (from here the job timeout
    /// runs). Only the first call writes.
    pub async fn running(&self) {
        if self.started.send_replace(true) {
            return;
        }
        if let Ok(true) = self.store.mark_running(&self.job_id, &self.owner, station_store::now_ms()).await {
            self.bus.publish(JobEvent::Status {
                job_id: self.job_id.to_string(),
                status: station_store::JobStatus::Running,
                error: None,
            });
        }
    }

    /// Reports progress. Published at once; written to the database at most
    /// every 500 ms so status reads stay fresh without a write per step.
    pub async fn progress(&self, fraction: f64, step: Option<u64>, of: Option<u64>, label: Option<String>) {
        let fraction = fraction.clamp(0.0, 1.0);
        let now = station_store::now_ms();
        let write = {
            let mut last = self.last_progress.lock().expect("progress lock");
            if fraction < last.0 {
                return; // never go backwards within an attempt
            }
            let due = now - last.1 >= 500;
            last.0 = fraction;
            if due {
                last.1 = now;
            }
            due
        };
        self.progressed.send_modify(|n| *n = n.wrapping_add(1));
        self.bus.publish(JobEvent::Progress { job_id: self.job_id.to_string(), fraction, step, of, label });
        if write {
            let _ = self.store.set_progress(&self.job_id, &self.owner, fraction).await;
        }
    }

    /// Registers this job as waiting on `remote_id` at `service` (a hosted
    /// provider's run): [`crate::Station::hint_remote`] wakes the returned
    /// waiter while it lives. The waiter must confirm with the provider
    /// before recording anything: a hint proves nothing.
    pub fn wait_for_hints(&self, service: &str, remote_id: &str) -> HintWaiter {
        self.hints.register(service, remote_id)
    }

    /// Publishes a preview image.
    pub fn preview(&self, mime: &str, data: Vec<u8>) {
        self.bus.publish(JobEvent::Preview {
            job_id: self.job_id.to_string(),
            mime: mime.into(),
            data: Arc::new(data),
        });
    }

    /// Fires when the job's cancellation was requested.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }
}

/// Runs jobs of one service.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// The service name tools declare (`comfyui`, `media`).
    fn service(&self) -> &'static str;

    /// How many jobs this process may run at once right now (for ComfyUI: the
    /// slots of the healthy backends). The worker subtracts its running jobs.
    fn capacity(&self) -> usize;

    /// Runs (or, when `job.row.remote_id` is set, reconciles and resumes) a job.
    async fn execute(&self, job: ExecJob, ctx: ExecContext) -> Result<Vec<OutputFile>, ExecError>;

    /// Whether this executor tells waiting (in a backend's own queue) from
    /// running by calling [`ExecContext::running`] when execution starts:
    /// then the job timeout counts from there. Otherwise (the default) it
    /// counts from the claim.
    fn reports_start(&self) -> bool {
        false
    }

    /// Best-effort cancellation of a submitted job on its backend.
    async fn cancel_remote(&self, job: &JobRow);

    /// Called once by [`crate::Station::register_executor`]: an executor
    /// that keeps durable bookkeeping (prompts to cancel) holds on to the
    /// Station weakly here.
    fn attach(&self, _station: &crate::Station) {}

    /// Health summary for readiness checks: `(name, healthy, detail)` per backend.
    async fn health(&self) -> Vec<(String, bool, String)> {
        vec![]
    }

    /// Reads what the backends have now (their nodes and model files) at
    /// once instead of at the next health check: called when Station knows
    /// a file just appeared (a trained LoRA), so the next job using it is
    /// routed by a fresh list.
    async fn refresh(&self) {}
}

#[cfg(test)]
mod tests {
    use super::RemoteHints;
    use std::time::Duration;

    #[tokio::test]
    async fn a_hint_wakes_only_its_registered_waiter_until_it_is_dropped() {
        let hints = RemoteHints::default();
        assert!(!hints.wake("comfydeploy", "run-1"), "nobody waits yet");
        let waiter = hints.register("comfydeploy", "run-1");
        assert!(!hints.wake("other", "run-1"), "another service's run of that id");
        assert!(hints.wake("comfydeploy", "run-1"));
        // The hint that came before the wait is kept for it.
        tokio::time::timeout(Duration::from_secs(5), waiter.hinted()).await.expect("woken");
        // A newer waiter for the run is not removed by the older one's drop.
        let newer = hints.register("comfydeploy", "run-1");
        drop(waiter);
        assert!(hints.wake("comfydeploy", "run-1"));
        drop(newer);
        assert!(!hints.wake("comfydeploy", "run-1"), "forgotten with its waiter");
    }
}
