//! The ComfyUI executor: a pool of backends that runs Station jobs.
//!
//! Routing: only healthy backends whose `/object_info` has every node type the
//! tool's workflow uses (and the chosen checkpoint among the loader's
//! choices); among those the least loaded, preferring the one that last ran
//! the same checkpoint (model affinity), and avoiding the backend an earlier
//! attempt failed on when another exists.
//!
//! Crash safety: the prompt id is chosen here and recorded in the job row
//! before `POST /prompt`. A job claimed with a recorded prompt id is first
//! reconciled with its backend (history, then queue): finished → collect the
//! outputs, queued/running → follow it, unknown (backend restarted) →
//! resubmit. A finished run is never repeated. A transient failure keeps the
//! prompt id in the row too: the retry asks the old backend first, and when
//! that backend cannot be reached and the job runs elsewhere, the old prompt
//! is recorded (a `remote_cancels` row, with the new submission) and
//! deleted/interrupted there by whichever process next sees the backend
//! answer a health check, so it never runs as well, even across a restart.
//!
//! Health checks use their own client with short timeouts and run in the
//! background: a backend that accepts connections and never answers is
//! marked down in seconds and holds nothing else up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use station_core::JobRow;
use station_core::faults::FaultPoint;
use station_core::{ExecContext, ExecError, ExecJob, Executor, OutputFile};
use station_tools::ToolDef;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::ComfyClient;
use crate::error::ComfyError;
use crate::inventory::Inventory;
use crate::progress::ProgressTracker;
use crate::protocol::{Graph, ImageRef, ObjectInfo};
use crate::run::{RemoteState, RunOptions, reconcile, run_prompt_then};
use crate::socket::{BackendSocket, PromptEvent};

/// How a backend is configured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendSpec {
    /// Unique name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Prompts it may hold at once.
    pub max_concurrent: usize,
    /// Free-form tags.
    pub tags: Vec<String>,
}

/// Per tool id: `None` when a backend can run the tool, else why it cannot.
pub type ToolSupport = Vec<(String, Option<String>)>;

/// A backend's live state, for `station backends` and readiness.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// Configuration.
    #[serde(flatten)]
    pub spec: BackendSpec,
    /// Passed its last health check.
    pub healthy: bool,
    /// Jobs it is running for this process.
    pub inflight: usize,
    /// Prompts in its queue (running or pending) that this process did not
    /// send — other clients, other Station processes — at the last look.
    pub foreign: usize,
    /// Last health problem.
    pub last_error: Option<String>,
    /// Node types it offers (empty until first checked).
    pub node_count: usize,
}

struct Backend {
    spec: BackendSpec,
    client: ComfyClient,
    /// For health checks only: short timeouts, so a backend that accepts
    /// connections and never answers is found out in seconds.
    health: ComfyClient,
    socket: BackendSocket,
    healthy: AtomicBool,
    inflight: AtomicUsize,
    /// Prompts in its `/queue` that this process is not following, at the
    /// last look (health check or a waiting job's poll).
    foreign: AtomicUsize,
    /// Prompt ids this process sent (or resumed) there and still follows.
    mine: Mutex<std::collections::HashSet<String>>,
    object_info: RwLock<Option<Arc<ObjectInfo>>>,
    /// Model files it offers (`(kind, name)`), from its last good health check.
    models: RwLock<Option<Arc<Inventory>>>,
    /// The base models its files' metadata named (asked once per file while it is listed).
    metadata: Mutex<crate::inventory::MetadataAnswers>,
    last_checkpoint: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    /// When its current inventory was last found stored (after a write or a
    /// comparison that found the rows equal; cleared when it goes down).
    recorded: Mutex<Option<std::time::Instant>>,
    /// Health checks started, and the newest one whose lists are stored: an
    /// older check finishing late never overwrites a newer one's (a file
    /// that appeared in between would vanish again until the next check).
    checks_started: std::sync::atomic::AtomicU64,
    newest_stored: std::sync::atomic::AtomicU64,
}

impl Backend {
    /// Slots left: `max_concurrent` less this process's jobs and the prompts
    /// others queued there (no overcommit: a job waits in Station's fair
    /// queue, not in the backend's FIFO).
    fn free(&self) -> usize {
        self.spec
            .max_concurrent
            .saturating_sub(self.inflight.load(Ordering::SeqCst))
            .saturating_sub(self.foreign.load(Ordering::SeqCst))
    }

    /// Counts the prompts of `queue` this process does not follow.
    fn note_queue(&self, queue: &crate::protocol::QueueState) {
        let mine = self.mine.lock().expect("mine lock");
        let foreign = queue.running.iter().chain(&queue.pending).filter(|p| !mine.contains(*p)).count();
        self.foreign.store(foreign, Ordering::SeqCst);
    }

    /// Why this backend cannot run the tool with these models (`(kind, file)`
    /// of its model inputs) and LoRA files, or None if it can.
    fn cannot_run(
        &self,
        tool: &ToolDef,
        checkpoint: Option<&str>,
        models: &[(String, String)],
        loras: &[LoraFile],
    ) -> Option<String> {
        let info = self.object_info.read().expect("object_info lock").clone();
        let Some(info) = info else {
            return Some("not checked yet".into());
        };
        let missing: Vec<String> = tool.node_types().into_iter().filter(|n| !info.has_node(n)).collect();
        if !missing.is_empty() {
            return Some(format!("missing nodes: {}", missing.join(", ")));
        }
        // Exact: the backend must list the very file (its inventory is what it can load).
        let inventory = self.models.read().expect("models lock").clone().unwrap_or_default();
        for (kind, name) in models {
            if !inventory.contains(&(kind.clone(), name.clone())) {
                return Some(format!("has no {} file {name}", kind.replace('_', " ")));
            }
        }
        if let (Some(ckpt), Some(comfy)) = (checkpoint, &tool.comfyui) {
            // The checkpoint must be among the choices of the node input it is bound to.
            for (input, targets) in &comfy.bindings {
                if tool.inputs.get(input).map(|i| i.kind) != Some(station_tools::InputType::Checkpoint) {
                    continue;
                }
                for t in targets {
                    let Some(t) = station_tools::BindingTarget::parse(t) else {
                        continue;
                    };
                    let class = comfy.workflow[t.node]["class_type"].as_str().unwrap_or_default();
                    if let Some(choices) = info.choices(class, t.field)
                        && !choices.iter().any(|c| c == ckpt)
                    {
                        return Some(format!("has no model file {ckpt} for {class}.{}", t.field));
                    }
                }
            }
        }
        if !loras.is_empty() {
            if !info.has_node("LoraLoader") {
                return Some("missing nodes: LoraLoader".into());
            }
            // A server that does not list its LoRA files is given the benefit of the doubt.
            if let Some(choices) = info.choices("LoraLoader", "lora_name") {
                let missing: Vec<&str> =
                    loras.iter().map(|l| l.filename.as_str()).filter(|f| !choices.iter().any(|c| c == f)).collect();
                if !missing.is_empty() {
                    return Some(format!("has no LoRA file {}", missing.join(", ")));
                }
            }
        }
        None
    }

    fn status(&self) -> BackendStatus {
        BackendStatus {
            spec: self.spec.clone(),
            healthy: self.healthy.load(Ordering::SeqCst),
            inflight: self.inflight.load(Ordering::SeqCst),
            foreign: self.foreign.load(Ordering::SeqCst),
            last_error: self.last_error.lock().expect("lock").clone(),
            node_count: self.object_info.read().expect("lock").as_ref().map(|i| i.0.len()).unwrap_or(0),
        }
    }
}

/// Runs `comfyui` tools on a pool of ComfyUI servers.
pub struct ComfyExecutor {
    backends: RwLock<Vec<Arc<Backend>>>,
    preview_method: Option<String>,
    client_id: String,
    stop: CancellationToken,
    /// Job id → (backend, prompt id) of prompts this process sent and is still
    /// following. The worker's row predates the submission, so
    /// [`Executor::cancel_remote`] (on timeout) looks here first.
    submitted: Mutex<HashMap<String, (String, String)>>,
    /// The Station whose prompts to cancel (rows, so a restart forgets
    /// none) this pool works off whenever a backend answers a health check.
    station: std::sync::OnceLock<station_core::WeakStation>,
    /// How long a backend may stay unreachable mid-prompt before the job is
    /// retried (it may come back with the result), in milliseconds.
    unreachable_grace_ms: AtomicU64,
    /// Health checks' (connect, request) timeouts.
    health_timeouts: (Duration, Duration),
}

/// Default health-check timeouts: (connect, whole request).
pub const DEFAULT_HEALTH_TIMEOUTS: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(5));

/// How long a backend's unchanged inventory goes without being compared
/// with the stored rows (another process may have marked it down).
pub const INVENTORY_RECHECK: Duration = Duration::from_secs(60);

/// Default for [`ComfyExecutor::set_unreachable_grace`].
pub const DEFAULT_UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

/// How many backends a submission tries when the database says the
/// preferred one is full (other processes filled it).
const SLOT_TRIES: usize = 3;

/// Holds a backend slot for the life of one job.
struct Slot(Arc<Backend>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A prompt this process follows on a backend (not counted as foreign
/// there) for as long as it lives.
struct Following(Arc<Backend>, String);

impl Following {
    fn new(backend: &Arc<Backend>, prompt_id: &str) -> Following {
        backend.mine.lock().expect("mine lock").insert(prompt_id.to_owned());
        Following(backend.clone(), prompt_id.to_owned())
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.0.mine.lock().expect("mine lock").remove(&self.1);
    }
}

impl ComfyExecutor {
    /// A pool with these backends. Health checks start with [`ComfyExecutor::start_health_checks`].
    pub fn new(specs: Vec<BackendSpec>, preview_method: &str) -> Result<Arc<ComfyExecutor>, ComfyError> {
        Self::with_health_timeouts(specs, preview_method, DEFAULT_HEALTH_TIMEOUTS)
    }

    /// [`ComfyExecutor::new`] with health checks that give up connecting
    /// after `timeouts.0` and waiting for an answer after `timeouts.1`.
    pub fn with_health_timeouts(
        specs: Vec<BackendSpec>,
        preview_method: &str,
        timeouts: (Duration, Duration),
    ) -> Result<Arc<ComfyExecutor>, ComfyError> {
        let ex = Arc::new(ComfyExecutor {
            backends: RwLock::new(vec![]),
            preview_method: (preview_method != "none").then(|| preview_method.to_string()),
            // One websocket id per Station process, shared by all its prompts on a backend.
            client_id: uuid::Uuid::new_v4().to_string(),
            stop: CancellationToken::new(),
            submitted: Mutex::new(HashMap::new()),
            station: std::sync::OnceLock::new(),
            unreachable_grace_ms: AtomicU64::new(DEFAULT_UNREACHABLE_GRACE.as_millis() as u64),
            health_timeouts: timeouts,
        });
        for s in specs {
            ex.add_backend(s)?;
        }
        Ok(ex)
    }

    /// Adds (or replaces) a backend at run time. It takes jobs once its first
    /// health check passes.
    pub fn add_backend(&self, spec: BackendSpec) -> Result<(), ComfyError> {
        let backend = Arc::new(Backend {
            client: ComfyClient::with_timeout(&spec.url, Duration::from_secs(30))?,
            health: ComfyClient::with_timeouts(&spec.url, self.health_timeouts.0, self.health_timeouts.1)?,
            socket: BackendSocket::connect(&spec.url, &self.client_id)?,
            spec,
            healthy: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            foreign: AtomicUsize::new(0),
            mine: Mutex::new(std::collections::HashSet::new()),
            object_info: RwLock::new(None),
            models: RwLock::new(None),
            metadata: Mutex::new(Default::default()),
            last_checkpoint: Mutex::new(None),
            last_error: Mutex::new(None),
            recorded: Mutex::new(None),
            checks_started: Default::default(),
            newest_stored: Default::default(),
        });
        let mut list = self.backends.write().expect("backends lock");
        list.retain(|b| b.spec.name != backend.spec.name);
        list.push(backend);
        Ok(())
    }

    /// How long a backend may stay unreachable while it holds a prompt before
    /// the job is retried (default [`DEFAULT_UNREACHABLE_GRACE`]).
    pub fn set_unreachable_grace(&self, grace: Duration) {
        self.unreachable_grace_ms.store(grace.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Prompts waiting to be cancelled on backends, as (backend, prompt id):
    /// earlier prompts of jobs that moved elsewhere while their backend could
    /// not be reached, and prompts of jobs that timed out. Kept as rows.
    pub async fn orphaned_prompts(&self) -> Vec<(String, String)> {
        match self.station.get().and_then(station_core::WeakStation::upgrade) {
            Some(st) => st.prompts_to_cancel(None).await.unwrap_or_default(),
            None => vec![],
        }
    }

    /// Deletes (if queued) and interrupts (if running) the prompts to cancel
    /// on a backend that answers again, whichever process recorded them;
    /// those it cannot reach stay recorded for the next check.
    async fn cancel_orphans(&self, backend: &Backend) {
        let Some(station) = self.station.get().and_then(station_core::WeakStation::upgrade) else { return };
        let prompts = match station.prompts_to_cancel(Some(&backend.spec.name)).await {
            Ok(p) => p,
            Err(e) => {
                warn!(backend = %backend.spec.name, error = %e, "cannot read the prompts to cancel; will retry");
                return;
            }
        };
        for (_, prompt_id) in prompts {
            let r = async {
                backend.health.cancel_pending(&prompt_id).await?;
                backend.health.interrupt(&prompt_id).await
            }
            .await;
            match r {
                Ok(()) => {
                    info!(backend = %backend.spec.name, prompt = %prompt_id,
                        "cancelled a prompt whose job moved on (ran elsewhere or timed out)");
                    if let Err(e) = station.prompt_cancelled(&backend.spec.name, &prompt_id).await {
                        warn!(error = %e, "could not record a cancelled prompt; it is cancelled again next time");
                    }
                }
                Err(e) => {
                    warn!(backend = %backend.spec.name, prompt = %prompt_id, error = %e,
                        "could not cancel an orphaned prompt yet; will retry");
                    return;
                }
            }
        }
    }

    /// Removes a backend; jobs already running on it finish there.
    pub fn remove_backend(&self, name: &str) -> bool {
        let mut list = self.backends.write().expect("backends lock");
        let before = list.len();
        list.retain(|b| b.spec.name != name);
        before != list.len()
    }

    /// Live state of every backend.
    pub fn statuses(&self) -> Vec<BackendStatus> {
        self.backends.read().expect("backends lock").iter().map(|b| b.status()).collect()
    }

    /// For each backend, which of `tools` it can run, or why not. A tool
    /// with a model input needs at least one model of its kind there.
    pub fn capabilities(&self, tools: &[Arc<ToolDef>]) -> Vec<(String, ToolSupport)> {
        self.list()
            .iter()
            .map(|b| {
                let inventory = b.models.read().expect("models lock").clone().unwrap_or_default();
                let per_tool = tools
                    .iter()
                    .filter(|t| t.comfyui.is_some())
                    .map(|t| {
                        let mut why = b.cannot_run(t, None, &[], &[]);
                        if why.is_none()
                            && let Some((_, input)) = t.model_input()
                        {
                            let kind = input.model_kind.clone().unwrap_or_default();
                            if !inventory.iter().any(|(k, _)| *k == kind) {
                                why = Some(format!("has no {} model", kind.replace('_', " ")));
                            }
                        }
                        (t.id.clone(), why)
                    })
                    .collect();
                (b.spec.name.clone(), per_tool)
            })
            .collect()
    }

    /// The model files a backend offered at its last good health check
    /// (`None`: not checked yet, or unknown backend).
    pub fn inventory(&self, backend: &str) -> Option<Arc<Inventory>> {
        self.by_name(backend).and_then(|b| b.models.read().expect("models lock").clone())
    }

    fn list(&self) -> Vec<Arc<Backend>> {
        self.backends.read().expect("backends lock").clone()
    }

    fn by_name(&self, name: &str) -> Option<Arc<Backend>> {
        self.list().into_iter().find(|b| b.spec.name == name)
    }

    /// Checks every backend once: `/system_stats` for health, `/object_info` for nodes.
    pub async fn check_all(&self) {
        let checks = self.list().into_iter().map(|b| async move {
            let b = &b;
            let seq = b.checks_started.fetch_add(1, Ordering::SeqCst) + 1;
            let result = async {
                b.health.system_stats().await?;
                let info = match b.health.object_info().await {
                    Ok(info) => Some(info),
                    // A busy ComfyUI (a model loading, a training on CPU) can
                    // take longer than the health timeout to build its large
                    // /object_info while it answers /system_stats and /queue
                    // at once (seen on a real 0.8 server). It is up: keep the
                    // lists of its last good check instead of taking its
                    // models offline and refusing jobs for them.
                    Err(ComfyError::Timeout { .. }) if b.object_info.read().expect("lock").is_some() => None,
                    Err(e) => return Err(e),
                };
                let queue = b.health.queue().await?;
                Ok::<_, ComfyError>((info, queue))
            }
            .await;
            match result {
                Ok((None, queue)) => {
                    b.note_queue(&queue);
                    *b.last_error.lock().expect("lock") = None;
                    if !b.healthy.swap(true, Ordering::SeqCst) {
                        info!(backend = %b.spec.name, url = %b.spec.url, "backend is up");
                    }
                    tracing::debug!(backend = %b.spec.name, "backend is slow to list its nodes (busy?); keeping its last lists");
                    // Offered again if an earlier failed check took them offline.
                    let models = b.models.read().expect("lock").clone();
                    if let Some(models) = models {
                        let files = crate::inventory::with_metadata(&models, &b.metadata.lock().expect("lock"));
                        self.record_models(b, Some(files), false).await;
                    }
                    self.cancel_orphans(b).await;
                }
                Ok((Some(info), queue)) => {
                    if b.newest_stored.fetch_max(seq, Ordering::SeqCst) > seq {
                        return; // a newer check stored its lists already
                    }
                    b.note_queue(&queue);
                    // The model folders are extra detail: a server without the
                    // route, or one that fails it, still lists its loaders' files.
                    let mut models = crate::inventory::from_object_info(&info);
                    if let Err(e) = crate::inventory::add_folders(&b.health, &mut models).await {
                        warn!(backend = %b.spec.name, error = %e, "cannot list model folders; using the loaders' lists");
                    }
                    let found = self.ask_metadata(b, &models).await;
                    let changed = found || b.models.read().expect("lock").as_deref() != Some(&models);
                    let files = crate::inventory::with_metadata(&models, &b.metadata.lock().expect("lock"));
                    *b.models.write().expect("lock") = Some(Arc::new(models));
                    *b.object_info.write().expect("lock") = Some(Arc::new(info));
                    *b.last_error.lock().expect("lock") = None;
                    if !b.healthy.swap(true, Ordering::SeqCst) {
                        info!(backend = %b.spec.name, url = %b.spec.url, "backend is up");
                    }
                    self.record_models(b, Some(files), changed).await;
                    self.cancel_orphans(b).await;
                }
                Err(e) => {
                    let problem = match &e {
                        ComfyError::Timeout { .. } => {
                            format!("not answering: no reply within {} s ({e})", self.health_timeouts.1.as_secs_f64())
                        }
                        _ => e.to_string(),
                    };
                    *b.last_error.lock().expect("lock") = Some(problem);
                    if b.healthy.swap(false, Ordering::SeqCst) {
                        warn!(backend = %b.spec.name, error = %e, "backend is down; its jobs go elsewhere");
                    }
                    self.record_models(b, None, true).await;
                }
            }
        });
        futures::future::join_all(checks).await;
    }

    /// Asks `b` for the metadata of the files in `models` whose base model
    /// their names do not tell and that it was not asked about yet (a
    /// bounded number per check), keeping the answers; forgets the answers
    /// for files it no longer lists. Whether a base model was found.
    async fn ask_metadata(&self, b: &Backend, models: &Inventory) -> bool {
        let to_ask = {
            let mut answered = b.metadata.lock().expect("metadata lock");
            answered.retain(|file, _| models.contains(file));
            crate::inventory::metadata_to_ask(models, &answered)
        };
        if to_ask.is_empty() {
            return false;
        }
        let (answers, failed) = crate::inventory::ask_metadata(&b.health, &to_ask).await;
        if let Some(e) = failed {
            warn!(backend = %b.spec.name, error = %e, "cannot read a model file's metadata; will ask again at the next check");
        }
        let found = answers.iter().any(|(_, base)| base.is_some());
        b.metadata.lock().expect("metadata lock").extend(answers);
        found
    }

    /// Stores what a backend offers (`None`: it is down, its files are not
    /// offered) through the attached Station, so every process, the catalog
    /// and submit-time validation see it. The core writes only what differs
    /// from the stored rows; this process does not even compare while the
    /// lists are unchanged since it last found them stored, except every
    /// [`INVENTORY_RECHECK`] (another process may have marked the backend
    /// down meanwhile).
    async fn record_models(&self, b: &Backend, models: Option<Vec<station_core::models::BackendFile>>, changed: bool) {
        let Some(station) = self.station.get().and_then(station_core::WeakStation::upgrade) else { return };
        let r = match models {
            Some(list) => {
                let fresh = b.recorded.lock().expect("lock").is_some_and(|at| at.elapsed() < INVENTORY_RECHECK);
                if !changed && fresh {
                    return;
                }
                station.record_backend_inventory(&b.spec.name, &list).await
            }
            None => {
                *b.recorded.lock().expect("lock") = None;
                station.backend_models_offline(&b.spec.name).await.map(|_| false)
            }
        };
        match r {
            Ok(true) => *b.recorded.lock().expect("lock") = Some(std::time::Instant::now()),
            Ok(false) => {}
            Err(e) => {
                warn!(backend = %b.spec.name, error = %e, "cannot record the backend's models; will retry");
                *b.recorded.lock().expect("lock") = None;
            }
        }
    }

    /// Runs [`ComfyExecutor::check_all`] now and then every `every`, until
    /// [`ComfyExecutor::shutdown`]. `on_change` is called after each round (to
    /// wake workers when capacity appears).
    pub async fn start_health_checks(self: &Arc<Self>, every: Duration, on_change: Arc<tokio::sync::Notify>) {
        self.check_all().await;
        self.spawn_health_loop(every, on_change, false);
    }

    /// Runs every health check in the background, the first one at once:
    /// nothing waits for a backend (one that never answers is marked down
    /// after its health timeouts, and the others are used meanwhile).
    pub fn spawn_health_checks(self: &Arc<Self>, every: Duration, on_change: Arc<tokio::sync::Notify>) {
        self.spawn_health_loop(every, on_change, true);
    }

    fn spawn_health_loop(self: &Arc<Self>, every: Duration, on_change: Arc<tokio::sync::Notify>, first_now: bool) {
        let me = self.clone();
        tokio::spawn(async move {
            if first_now {
                tokio::select! {
                    _ = me.stop.cancelled() => return,
                    () = me.check_all() => {}
                }
                on_change.notify_waiters();
            }
            loop {
                tokio::select! {
                    _ = me.stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                tokio::select! {
                    _ = me.stop.cancelled() => return,
                    () = me.check_all() => {}
                }
                on_change.notify_waiters();
            }
        });
    }

    /// Stops health checks.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// The backends a new submission may go to, best first (model affinity,
    /// then least loaded as this process sees it). Taking a slot on one is
    /// [`ComfyExecutor::take_slot`]: the database has the last word, since
    /// other processes send prompts there too.
    fn route(
        &self,
        tool: &ToolDef,
        checkpoint: Option<&str>,
        models: &[(String, String)],
        loras: &[LoraFile],
        avoid: Option<&str>,
    ) -> Result<Vec<Arc<Backend>>, ExecError> {
        let all = self.list();
        if all.is_empty() {
            return Err(ExecError::Transient(
                "no ComfyUI backend is configured; add one with `station backends add`".into(),
            ));
        }
        let able: Vec<&Arc<Backend>> =
            all.iter().filter(|b| b.cannot_run(tool, checkpoint, models, loras).is_none()).collect();
        if able.is_empty() {
            // Only final when every backend has answered and none has what is needed.
            let reasons: Vec<String> = all
                .iter()
                .map(|b| {
                    format!("{}: {}", b.spec.name, b.cannot_run(tool, checkpoint, models, loras).unwrap_or_default())
                })
                .collect();
            let all_known = all.iter().all(|b| b.object_info.read().expect("lock").is_some());
            let msg = format!("no backend can run {}: {}", tool.id, reasons.join("; "));
            return Err(if all_known { ExecError::Unroutable(msg) } else { ExecError::Transient(msg) });
        }
        let healthy: Vec<&Arc<Backend>> = able.iter().copied().filter(|b| b.healthy.load(Ordering::SeqCst)).collect();
        let mut candidates: Vec<&Arc<Backend>> = healthy.iter().copied().filter(|b| b.free() > 0).collect();
        if candidates.is_empty() && !healthy.is_empty() {
            // Full, not broken: back to Station's queue without counting an attempt.
            return Err(ExecError::Busy(format!("every backend able to run {} is busy", tool.id)));
        }
        if candidates.len() > 1
            && let Some(avoid) = avoid
        {
            candidates.retain(|b| b.spec.name != avoid);
        }
        candidates.sort_by_cached_key(|b| {
            let affinity = checkpoint.is_some() && b.last_checkpoint.lock().expect("lock").as_deref() == checkpoint;
            let busy = b.inflight.load(Ordering::SeqCst) + b.foreign.load(Ordering::SeqCst);
            let load = busy * 1000 / b.spec.max_concurrent.max(1);
            (!affinity, load)
        });
        if candidates.is_empty() {
            return Err(ExecError::Transient(format!("every backend able to run {} is down or busy", tool.id)));
        }
        Ok(candidates.into_iter().cloned().collect())
    }

    /// Takes a slot for `job` on the first of `candidates` that has one,
    /// recording the submission of `prompt_id` there before anything is
    /// sent (see [`ExecContext::record_submission_within`]: the backend's
    /// `max_concurrent` counts the jobs of every Station process on this
    /// database). Tries a few candidates; [`ExecError::Busy`] when each was
    /// full.
    async fn take_slot(
        &self,
        candidates: Vec<Arc<Backend>>,
        ctx: &ExecContext,
        prompt_id: &str,
    ) -> Result<Slot, ExecError> {
        let mut busy = None;
        for b in candidates.into_iter().take(SLOT_TRIES) {
            b.inflight.fetch_add(1, Ordering::SeqCst);
            let slot = Slot(b.clone());
            match ctx.record_submission_within(&b.spec.name, prompt_id, b.spec.max_concurrent).await {
                Ok(()) => return Ok(slot),
                Err(ExecError::Busy(m)) => {
                    drop(slot);
                    // Other processes fill it: full for this process's routing
                    // and claiming too, until its next look at the backend's
                    // queue (a health check, or a waiting job's poll) says
                    // otherwise — so jobs are not claimed only to come back.
                    let others = b.spec.max_concurrent.saturating_sub(b.inflight.load(Ordering::SeqCst));
                    b.foreign.fetch_max(others, Ordering::SeqCst);
                    busy = Some(m);
                }
                Err(e) => return Err(e),
            }
        }
        Err(ExecError::Busy(busy.unwrap_or_else(|| "every backend able to run the job is busy".into())))
    }

    /// Submits the job afresh on a routed backend and follows it.
    async fn submit_new(&self, job: &ExecJob, ctx: &ExecContext) -> Result<Vec<OutputFile>, ExecError> {
        let comfy = job.tool.comfyui.as_ref().ok_or_else(|| ExecError::Invalid {
            message: format!("tool {} has no ComfyUI workflow", job.tool.id),
            field: None,
        })?;
        let checkpoint = job.tool.checkpoint_param(&job.params);
        let loras = job_loras(job)?;
        let models = job_models(job);
        let candidates = self.route(&job.tool, checkpoint.as_deref(), &models, &loras, job.row.backend.as_deref())?;
        // Recorded before the uploads: the slot is taken (and the prompt id
        // known for reconciling) before anything is sent to the backend.
        let prompt_id = uuid::Uuid::new_v4().to_string();
        let slot = self.take_slot(candidates, ctx, &prompt_id).await?;
        let backend = slot.0.clone();
        let _following = Following::new(&backend, &prompt_id);
        // Upload image inputs (idempotent: same name, overwrite).
        let mut uploaded = HashMap::new();
        for (name, img) in &job.images {
            let up = match backend.client.upload_image(img.bytes.as_ref().clone(), &img.filename).await {
                Ok(up) => up,
                Err(e) => {
                    // Without this the retry would be routed to the same dead backend
                    // until the next health check, burning the job's attempts.
                    mark_down(&backend, &e);
                    return Err(map_error(e, &job.tool));
                }
            };
            uploaded.insert(name.clone(), up.load_image_name());
        }
        // A training dataset: images and their caption files into input/<folder>/.
        let folder = match &comfy.dataset {
            Some(_) => {
                let folder = dataset_folder(&job.row.id);
                if let Err(e) = upload_dataset(&backend, &folder, &job.dataset, ctx).await {
                    mark_down(&backend, &e);
                    return Err(map_error(e, &job.tool));
                }
                Some(folder)
            }
            None => None,
        };
        let params = prompt_without_lora_tags(job, &loras);
        let mut bound = station_tools::bind_workflow(&job.tool, params.as_ref().unwrap_or(&job.params), &uploaded)
            .map_err(|e| ExecError::Invalid { message: e.to_string(), field: None })?;
        if let (Some(target), Some(folder)) = (&comfy.dataset, folder) {
            set_target(&mut bound, target, folder.into())?;
        }
        if let Some(saved) = &comfy.saved_file {
            let prefix = format!("{}/{}", saved.folder, saved_file_base(&job.row.id));
            set_target(&mut bound, &saved.prefix, prefix.into())?;
        }
        let bound = match &comfy.loras {
            Some(spec) if !loras.is_empty() => {
                let mut graph = bound;
                let inputs: Vec<(&str, f64)> = loras.iter().map(|l| (l.filename.as_str(), l.weight)).collect();
                station_lora::inject_loras(&mut graph, &spec.node, &inputs)
                    .map_err(|e| ExecError::Invalid { message: format!("cannot add LoRAs: {e}"), field: None })?;
                graph
            }
            _ => bound,
        };
        let graph: Graph = match bound {
            serde_json::Value::Object(m) => m,
            _ => {
                return Err(ExecError::Invalid { message: "workflow is not an object".into(), field: None });
            }
        };
        ctx.fault_point(FaultPoint::BeforePost).await;
        *backend.last_checkpoint.lock().expect("lock") = checkpoint;
        self.submitted
            .lock()
            .expect("submitted lock")
            .insert(job.row.id.clone(), (backend.spec.name.clone(), prompt_id.clone()));
        let outputs = &comfy.outputs;
        let result = async {
            let images = self.follow(&backend, ctx, &job.tool, &graph, &prompt_id, true).await?;
            match &comfy.saved_file {
                Some(saved) => fetch_saved_file(&backend, saved, job).await,
                None if returns_text(&job.tool) => fetch_texts(&backend, &prompt_id, outputs, &job.tool).await,
                None => download(&backend, images, outputs, &job.tool).await,
            }
        }
        .await;
        // Left in place when this future is dropped (timeout), for cancel_remote.
        self.submitted.lock().expect("submitted lock").remove(&job.row.id);
        result
    }

    /// Follows a prompt to its end: submits it first when `submit`, else only
    /// listens and polls (a resumed job). Cancellation interrupts it remotely.
    async fn follow(
        &self,
        backend: &Arc<Backend>,
        ctx: &ExecContext,
        tool: &ToolDef,
        graph: &Graph,
        prompt_id: &str,
        submit: bool,
    ) -> Result<Vec<(String, ImageRef)>, ExecError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PromptEvent>();
        let options = RunOptions {
            preview_method: self.preview_method.clone(),
            poll_interval: Duration::from_secs(2),
            unreachable_timeout: Duration::from_millis(self.unreachable_grace_ms.load(Ordering::Relaxed)),
        };
        let run = async move {
            if submit {
                let after_submit = ctx.fault_point(FaultPoint::AfterPost);
                run_prompt_then(&backend.client, &backend.socket, graph, prompt_id, &options, after_submit, |e| {
                    let _ = tx.send(e.clone());
                })
                .await
                .map(|o| {
                    o.outputs.into_iter().flat_map(|(n, imgs)| imgs.into_iter().map(move |i| (n.clone(), i))).collect()
                })
            } else {
                let mut events = backend.socket.subscribe(prompt_id);
                let mut announced = false;
                loop {
                    match reconcile(&backend.client, prompt_id).await? {
                        RemoteState::Done(outputs) => {
                            return Ok(outputs
                                .into_iter()
                                .flat_map(|(n, imgs)| imgs.into_iter().map(move |i| (n.clone(), i)))
                                .collect());
                        }
                        RemoteState::Failed(msg) => {
                            return Err(remote_failure(&backend.client, prompt_id, msg).await);
                        }
                        RemoteState::Unknown => {
                            return Err(ComfyError::Lost { prompt_id: prompt_id.into() });
                        }
                        // The backend sends a prompt's events only to the client id that
                        // submitted it (an earlier process), so say it started ourselves.
                        RemoteState::Running if !announced => {
                            announced = true;
                            let _ = tx.send(PromptEvent::Started);
                        }
                        RemoteState::Pending | RemoteState::Running => {}
                    }
                    let deadline = tokio::time::sleep(Duration::from_millis(500));
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            _ = &mut deadline => break,
                            ev = events.recv() => match ev {
                                Some(e) => { let _ = tx.send(e); }
                                None => break,
                            }
                        }
                    }
                }
            }
        };
        let mut tracker = ProgressTracker::for_graph(graph);
        let mut started = false;
        let progress = async {
            while let Some(ev) = rx.recv().await {
                let fraction = tracker.observe(&ev);
                match &ev {
                    PromptEvent::Started | PromptEvent::Executing { .. } if !started => {
                        started = true;
                        ctx.running().await;
                    }
                    PromptEvent::Preview { mime, bytes } => ctx.preview(mime, bytes.to_vec()),
                    _ => {}
                }
                let (step, of, label) = match &ev {
                    PromptEvent::Progress { value, max, node } => (
                        Some(*value as u64),
                        Some(*max as u64),
                        node.as_ref()
                            .and_then(|n| graph.get(n))
                            .and_then(|n| n["class_type"].as_str())
                            .map(String::from),
                    ),
                    PromptEvent::Executing { node } => {
                        (None, None, graph.get(node).and_then(|n| n["class_type"].as_str()).map(String::from))
                    }
                    _ => (None, None, None),
                };
                ctx.progress(fraction, step, of, label).await;
            }
        };
        // Progress ends when `run` finishes and drops its sender, so every
        // event is relayed before the outcome is returned.
        let result = tokio::select! {
            (r, ()) = async { tokio::join!(run, progress) } => r,
            e = self.watch_waiting(backend, ctx, prompt_id) => return Err(e),
            _ = ctx.cancelled().cancelled() => {
                let _ = backend.client.cancel_pending(prompt_id).await;
                let _ = backend.client.interrupt(prompt_id).await;
                return Err(ExecError::Cancelled);
            }
        };
        result.map_err(|e| {
            mark_down(backend, &e);
            // The 400 for a refused prompt arrives here (from POST /prompt).
            map_error(e, tool)
        })
    }
}

impl ComfyExecutor {
    /// While the prompt waits in the backend's own queue (pending in `GET
    /// /queue`), notes how many prompts are ahead of it (the job shows
    /// "waiting for a GPU (n ahead)") and, past `queue.backend_wait_seconds`,
    /// returns [`ExecError::WaitedTooLong`] so the worker moves the job back
    /// to Station's queue. Seeing it running there marks the job running.
    /// Never returns once the job runs.
    async fn watch_waiting(&self, backend: &Arc<Backend>, ctx: &ExecContext, prompt_id: &str) -> ExecError {
        let since = tokio::time::Instant::now();
        let limit = ctx.backend_wait();
        let every = Duration::from_millis(500);
        loop {
            if ctx.is_running() {
                return std::future::pending().await;
            }
            if let Ok(queue) = backend.client.queue().await {
                backend.note_queue(&queue);
                if queue.running.iter().any(|p| p == prompt_id) {
                    ctx.running().await;
                    continue;
                }
                if let Some(ahead) = queue.ahead_of(prompt_id) {
                    ctx.waiting(Some(ahead)).await;
                    if let Some(limit) = limit
                        && since.elapsed() >= limit
                    {
                        return ExecError::WaitedTooLong(format!(
                            "waited {} s on {} behind {ahead} other prompts without starting; trying again",
                            since.elapsed().as_secs(),
                            backend.spec.name
                        ));
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

trait FromComfy {
    fn from_comfy(e: ComfyError) -> ExecError;
}

impl FromComfy for ExecError {
    fn from_comfy(e: ComfyError) -> ExecError {
        match e {
            ComfyError::Lost { .. } => {
                ExecError::Transient("the backend no longer knows the job (it restarted); resubmitting".into())
            }
            ComfyError::Execution { node_type, exception_message, .. } => {
                ExecError::Failed(format!("{node_type} failed: {exception_message}"))
            }
            ComfyError::Interrupted { .. } => ExecError::Failed("interrupted on the backend".into()),
            e if e.is_transient() => ExecError::Transient(e.to_string()),
            e => ExecError::Failed(e.to_string()),
        }
    }
}

/// Maps a ComfyUI error to the job error, naming the tool input behind a
/// failing node where the tool binds one.
/// One LoRA a job applies, as the core recorded it at submission.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct LoraFile {
    filename: String,
    weight: f64,
}

/// The model files the job's model inputs name, as `(kind, file)`.
fn job_models(job: &ExecJob) -> Vec<(String, String)> {
    job.tool
        .inputs
        .iter()
        .filter(|(_, def)| def.kind == station_tools::InputType::Model)
        .filter_map(|(name, def)| {
            let value = job.params.get(name)?.as_str()?;
            Some((def.model_kind.clone()?, value.to_owned()))
        })
        .collect()
}

/// The LoRAs the core resolved for the job (`_loras` in its params), in order.
fn job_loras(job: &ExecJob) -> Result<Vec<LoraFile>, ExecError> {
    match job.params.get(station_core::loras::APPLIED_PARAM) {
        None | Some(serde_json::Value::Null) => Ok(vec![]),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| ExecError::Invalid {
            message: format!("job parameter {}: {e}", station_core::loras::APPLIED_PARAM),
            field: None,
        }),
    }
}

/// The job's params with `<lora:…>` tags taken out of the primary text, when
/// LoRAs apply. ComfyUI encodes prompt text literally, so the tags would only
/// add noise tokens: the LoraLoader nodes are what applies them.
fn prompt_without_lora_tags(job: &ExecJob, loras: &[LoraFile]) -> Option<serde_json::Map<String, serde_json::Value>> {
    if loras.is_empty() {
        return None;
    }
    let (name, _) = job.tool.primary_input()?;
    let text = strip_lora_tags(job.params.get(name)?.as_str()?);
    let mut params = job.params.clone();
    params.insert(name.to_owned(), serde_json::Value::String(text));
    Some(params)
}

/// `text` without its `<lora:…>` tags (a `<lora:` not closed before the next
/// `<` or the end is ordinary text).
fn strip_lora_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<lora:") {
        let after = start + "<lora:".len();
        match rest[after..].find(['<', '>']) {
            // A whole tag: drop it.
            Some(i) if rest.as_bytes()[after + i] == b'>' => {
                out.push_str(&rest[..start]);
                rest = &rest[after + i + 1..];
            }
            // Not closed before the next `<` or the end: ordinary text.
            _ => {
                out.push_str(&rest[..after]);
                rest = &rest[after..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn map_error(e: ComfyError, tool: &ToolDef) -> ExecError {
    match e {
        ComfyError::Validation { message, node_errors } => {
            let mut field = None;
            let details: Vec<String> = node_errors
                .iter()
                .map(|n| {
                    let input = tool_input_for(tool, &n.node_id, n.input_name.as_deref());
                    if field.is_none() {
                        field = input.clone();
                    }
                    match input {
                        Some(i) => format!("input {i}: {} ({})", n.message, n.details),
                        None => format!("{} ({}): {} {}", n.class_type, n.node_id, n.message, n.details),
                    }
                })
                .collect();
            let message = if details.is_empty() { message } else { details.join("; ") };
            ExecError::Invalid { message, field }
        }
        other => ExecError::from_comfy(other),
    }
}

/// The error of a prompt that failed before it was resumed, as detailed as
/// when it is followed live (so the job reads "ImageScaleBy failed: …").
async fn remote_failure(client: &ComfyClient, prompt_id: &str, summary: String) -> ComfyError {
    let entry = client.history(prompt_id).await.ok().flatten();
    if let Some(e) = entry.as_ref().and_then(super::protocol::HistoryEntry::execution_error) {
        return ComfyError::Execution {
            node_id: e.node_id,
            node_type: e.node_type,
            exception_type: e.exception_type,
            exception_message: e.exception_message.trim_end().to_owned(),
        };
    }
    if entry.as_ref().and_then(super::protocol::HistoryEntry::interrupted).is_some() {
        return ComfyError::Interrupted { prompt_id: prompt_id.into() };
    }
    ComfyError::Protocol { what: format!("history of {prompt_id}"), reason: summary }
}

/// Takes a backend out of service when `e` says it cannot be reached; health
/// checks bring it back. A lost prompt is not such an error: the backend just
/// answered (it restarted), so it stays in service for the resubmission.
fn mark_down(backend: &Backend, e: &ComfyError) {
    if e.is_transient() && !matches!(e, ComfyError::Lost { .. }) {
        *backend.last_error.lock().expect("lock") = Some(e.to_string());
        if backend.healthy.swap(false, Ordering::SeqCst) {
            warn!(backend = %backend.spec.name, error = %e, "backend unreachable; its jobs go elsewhere");
        }
    }
}

/// The tool input bound to `node_id`'s `field` (the one ComfyUI blames), else
/// the first tool input bound anywhere into that node.
fn tool_input_for(tool: &ToolDef, node_id: &str, field: Option<&str>) -> Option<String> {
    let comfy = tool.comfyui.as_ref()?;
    let exact = field.and_then(|field| {
        comfy.bindings.iter().find_map(|(input, targets)| {
            targets
                .iter()
                .filter_map(|t| station_tools::BindingTarget::parse(t))
                .any(|t| t.node == node_id && t.field == field)
                .then(|| input.clone())
        })
    });
    exact.or_else(|| tool.input_for_node(node_id).map(String::from))
}

/// The `input/` subfolder a job's training dataset is uploaded to: one per
/// job, so a retry overwrites its own files and nobody else's.
fn dataset_folder(job_id: &str) -> String {
    format!("station_ds_{}", job_id.replace('-', ""))
}

/// The base name of the file a job's workflow saves (`station_<job>`), so the
/// file is found by name afterwards, also by a process that resumes the job.
fn saved_file_base(job_id: &str) -> String {
    format!("station_{}", job_id.replace('-', ""))
}

/// Uploads a dataset as ComfyUI's `LoadImageTextDataSetFromFolder` reads it:
/// `img000.png` with its caption in `img000.txt`, and so on.
async fn upload_dataset(
    backend: &Backend,
    folder: &str,
    files: &[station_core::DatasetFile],
    ctx: &ExecContext,
) -> Result<(), ComfyError> {
    for (i, f) in files.iter().enumerate() {
        if ctx.cancelled().is_cancelled() {
            break;
        }
        let stem = format!("img{i:03}");
        backend.client.upload_into(f.bytes.as_ref().clone(), &format!("{stem}.{}", f.extension), folder).await?;
        backend.client.upload_into(f.caption.clone().into_bytes(), &format!("{stem}.txt"), folder).await?;
    }
    Ok(())
}

/// Writes `value` at `target` (`node.inputs.field`) of a bound workflow.
fn set_target(graph: &mut serde_json::Value, target: &str, value: serde_json::Value) -> Result<(), ExecError> {
    let slot = station_tools::BindingTarget::parse(target)
        .and_then(|t| graph.get_mut(t.node)?.get_mut("inputs")?.as_object_mut()?.get_mut(t.field))
        .ok_or_else(|| ExecError::Invalid { message: format!("{target} is not in the workflow"), field: None })?;
    *slot = value;
    Ok(())
}

/// Fetches the file a finished job's workflow saved without reporting it
/// (`SaveLoRA`): `output/<folder>/station_<job>_<steps>_steps_<counter:05>_.<ext>`.
/// The counter is the backend's, so the file is looked up in the folder's
/// listing (`GET /models/<folder>`; the newest of the job's names), with
/// counter 1 — what a fresh prefix gets — when the server lists nothing.
async fn fetch_saved_file(
    backend: &Backend,
    spec: &station_tools::SavedFileSpec,
    job: &ExecJob,
) -> Result<Vec<OutputFile>, ExecError> {
    let base = saved_file_base(&job.row.id);
    let steps = spec.steps_input.as_ref().and_then(|i| job.params.get(i)).and_then(serde_json::Value::as_u64);
    let stem = match steps {
        Some(n) => format!("{base}_{n}_steps_"),
        None => format!("{base}_"),
    };
    let tail = format!("_.{}", spec.extension);
    let counter = |name: &str| -> Option<u64> {
        let digits = name.strip_prefix(stem.as_str())?.strip_suffix(tail.as_str())?;
        (digits.len() >= 5 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
    };
    let listed = backend.client.model_files(&spec.folder).await.ok().flatten().unwrap_or_default();
    let filename = listed
        .iter()
        .filter_map(|f| counter(f).map(|c| (c, f)))
        .max_by_key(|(c, _)| *c)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| format!("{stem}00001{tail}"));
    let file = ImageRef { filename: filename.clone(), subfolder: spec.folder.clone(), kind: "output".into() };
    let bytes = backend.client.view(&file).await.map_err(|e| {
        mark_down(backend, &e);
        match e {
            ComfyError::Http { status: 404, .. } => ExecError::Failed(format!(
                "{} finished but its file {filename} is not on {}",
                job.tool.id, backend.spec.name
            )),
            e => ExecError::from_comfy(e),
        }
    })?;
    Ok(vec![OutputFile { bytes: bytes.to_vec(), filename }])
}

/// A tool whose result is text (category `caption`), not images.
fn returns_text(tool: &ToolDef) -> bool {
    tool.category == station_tools::Category::Caption
}

/// The text a finished prompt's output nodes returned (`{"text": [...]}` in
/// its history, as stock `PreviewAny` reports), one UTF-8 file per node.
async fn fetch_texts(
    backend: &Backend,
    prompt_id: &str,
    output_nodes: &[String],
    tool: &ToolDef,
) -> Result<Vec<OutputFile>, ExecError> {
    let entry = backend.client.history_after_finish(prompt_id).await.map_err(|e| map_error(e, tool))?;
    let Some(entry) = entry else {
        return Err(ExecError::Transient(format!("{} finished but its history is gone", tool.id)));
    };
    let mut files = vec![];
    for (node, out) in &entry.outputs {
        if !output_nodes.is_empty() && !output_nodes.contains(node) {
            continue;
        }
        let texts: Vec<&str> = match out.other.get("text") {
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(serde_json::Value::as_str).collect(),
            Some(serde_json::Value::String(t)) => vec![t.as_str()],
            _ => continue,
        };
        if texts.is_empty() {
            continue;
        }
        files.push(OutputFile { bytes: texts.join("\n").into_bytes(), filename: format!("{node}.txt") });
    }
    if files.is_empty() {
        return Err(ExecError::Failed(format!("{} finished without a text output", tool.id)));
    }
    Ok(files)
}

async fn download(
    backend: &Backend,
    images: Vec<(String, ImageRef)>,
    output_nodes: &[String],
    tool: &ToolDef,
) -> Result<Vec<OutputFile>, ExecError> {
    let mut files = vec![];
    for (node, img) in images {
        // Only the tool's declared outputs are results; previews elsewhere are not.
        if !output_nodes.is_empty() && !output_nodes.contains(&node) {
            continue;
        }
        let bytes = backend.client.view(&img).await.map_err(|e| map_error(e, tool))?;
        files.push(OutputFile { bytes: bytes.to_vec(), filename: img.filename });
    }
    if files.is_empty() {
        return Err(ExecError::Failed(format!("{} finished without output images", tool.id)));
    }
    Ok(files)
}

#[async_trait]
impl Executor for ComfyExecutor {
    fn service(&self) -> &'static str {
        "comfyui"
    }

    async fn refresh(&self) {
        self.check_all().await;
    }

    fn capacity(&self) -> usize {
        // Slots of healthy backends less the prompts others queued there:
        // the worker subtracts the jobs it runs.
        self.list()
            .iter()
            .filter(|b| b.healthy.load(Ordering::SeqCst))
            .map(|b| b.spec.max_concurrent.saturating_sub(b.foreign.load(Ordering::SeqCst)))
            .sum()
    }

    fn reports_start(&self) -> bool {
        true
    }

    async fn execute(&self, job: ExecJob, ctx: ExecContext) -> Result<Vec<OutputFile>, ExecError> {
        // A job that was submitted before: ask its backend before anything else.
        if let (Some(prompt_id), Some(name)) = (job.row.remote_id.clone(), job.row.backend.clone())
            && let Some(backend) = self.by_name(&name)
        {
            match reconcile(&backend.client, &prompt_id).await {
                Ok(RemoteState::Unknown) => {
                    info!(job = %job.row.id, backend = %name, "backend forgot the job; resubmitting");
                }
                Ok(_) => {
                    info!(job = %job.row.id, backend = %name, "resuming job already on its backend");
                    backend.inflight.fetch_add(1, Ordering::SeqCst);
                    let _slot = Slot(backend.clone());
                    let _following = Following::new(&backend, &prompt_id);
                    let graph = Graph::new();
                    let outputs = job.tool.comfyui.as_ref().map(|c| c.outputs.clone()).unwrap_or_default();
                    let images = self.follow(&backend, &ctx, &job.tool, &graph, &prompt_id, false).await?;
                    if let Some(saved) = job.tool.comfyui.as_ref().and_then(|c| c.saved_file.as_ref()) {
                        return fetch_saved_file(&backend, saved, &job).await;
                    }
                    if returns_text(&job.tool) {
                        return fetch_texts(&backend, &prompt_id, &outputs, &job.tool).await;
                    }
                    return download(&backend, images, &outputs, &job.tool).await;
                }
                Err(e) => {
                    // Unreachable: run elsewhere. Recording the new submission
                    // records the old prompt as one to cancel on its backend
                    // (same transaction), so it does not run too once the
                    // backend is back, even after a restart.
                    warn!(job = %job.row.id, backend = %name, error = %e, "cannot reconcile; resubmitting");
                }
            }
        }
        if ctx.cancelled().is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        self.submit_new(&job, &ctx).await
    }

    async fn cancel_remote(&self, job: &JobRow) {
        // What this process sent last beats the row, which may be from before the submission.
        let sent = self.submitted.lock().expect("submitted lock").remove(&job.id);
        let from_row = job.backend.clone().zip(job.remote_id.clone());
        if let Some((name, id)) = sent.or(from_row)
            && let Some(b) = self.by_name(&name)
        {
            let _ = b.client.cancel_pending(&id).await;
            let _ = b.client.interrupt(&id).await;
        }
    }

    fn attach(&self, station: &station_core::Station) {
        let _ = self.station.set(station.downgrade());
    }

    async fn health(&self) -> Vec<(String, bool, String)> {
        self.statuses()
            .into_iter()
            .map(|s| {
                let detail = match (&s.last_error, s.healthy) {
                    (Some(e), _) => e.clone(),
                    (None, true) if s.foreign > 0 => format!(
                        "{} node types, {}/{} busy, {} prompts from other clients",
                        s.node_count, s.inflight, s.spec.max_concurrent, s.foreign
                    ),
                    (None, true) => {
                        format!("{} node types, {}/{} busy", s.node_count, s.inflight, s.spec.max_concurrent)
                    }
                    (None, false) => "not checked yet".into(),
                };
                (s.spec.name, s.healthy, detail)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::strip_lora_tags;

    #[test]
    fn lora_tags_are_stripped_and_other_text_kept() {
        assert_eq!(strip_lora_tags("an <lora:ink:0.9>ink sketch"), "an ink sketch");
        assert_eq!(strip_lora_tags("<lora:a:1><lora:b:0.5>x"), "x");
        assert_eq!(strip_lora_tags("<lora:open and <b> <lora:c:1>y"), "<lora:open and <b> y");
        assert_eq!(strip_lora_tags("tail <lora:never closed"), "tail <lora:never closed");
        assert_eq!(strip_lora_tags("no tags at all"), "no tags at all");
    }
}
