//! Fault injection for tests: named points in the worker and executors where
//! a test can stall a worker (to play a paused process) or, with the
//! `fault-injection` feature (enabled for tests only), crash the process.
//!
//! Nothing here does anything unless a test installs a hook
//! ([`Faults::set_hook`]) or, in a binary built with `fault-injection`, sets
//! `STATION_FAULT_CRASH` to a point's name.

use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

/// Where a worker or executor can be stalled or crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// A worker process's claim loop is about to claim jobs.
    Claim,
    /// A worker's execution returned; its outcome is not recorded yet.
    AfterExecute,
    /// A worker's job timer fired; nothing is recorded or cancelled yet.
    Timeout,
    /// A worker process's heartbeat is about to renew its leases.
    Heartbeat,
    /// The prompt id is recorded in the job row; `POST /prompt` is next.
    BeforePost,
    /// `POST /prompt` was answered; the prompt is on the backend.
    AfterPost,
    /// A worker's job task ended (outcome recorded, refused or handed back).
    JobDone,
}

impl FaultPoint {
    /// The name `STATION_FAULT_CRASH` uses.
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::Claim => "claim",
            FaultPoint::AfterExecute => "after_execute",
            FaultPoint::Timeout => "timeout",
            FaultPoint::Heartbeat => "heartbeat",
            FaultPoint::BeforePost => "before_post",
            FaultPoint::AfterPost => "after_post",
            FaultPoint::JobDone => "job_done",
        }
    }
}

/// A test's hook: called with the point, the worker (lease owner) and the
/// job (empty for [`FaultPoint::Heartbeat`] and [`FaultPoint::Claim`]); the worker waits for it.
pub type FaultHook = Arc<dyn Fn(FaultPoint, &str, &str) -> BoxFuture<'static, ()> + Send + Sync>;

/// The fault hooks of one `Station`.
#[derive(Clone, Default)]
pub struct Faults {
    hook: Arc<RwLock<Option<FaultHook>>>,
}

impl Faults {
    /// Installs (replaces) the hook.
    pub fn set_hook(&self, hook: FaultHook) {
        *self.hook.write().expect("faults lock") = Some(hook);
    }

    /// Called at `point` by worker `owner` for `job`.
    pub async fn hit(&self, point: FaultPoint, owner: &str, job: &str) {
        crash_if_asked(point);
        let hook = self.hook.read().expect("faults lock").clone();
        if let Some(h) = hook {
            h(point, owner, job).await;
        }
    }
}

#[cfg(feature = "fault-injection")]
fn crash_if_asked(point: FaultPoint) {
    static CRASH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = CRASH.get_or_init(|| std::env::var("STATION_FAULT_CRASH").ok().filter(|v| !v.is_empty()));
    if at.as_deref() == Some(point.name()) {
        // Like SIGKILL: no destructor, no flush, no lease released.
        eprintln!("fault injection: crashing at {}", point.name());
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
fn crash_if_asked(_point: FaultPoint) {}
