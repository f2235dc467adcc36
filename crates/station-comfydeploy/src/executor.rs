//! The ComfyDeploy executor: runs `comfydeploy` tools on hosted deployments.
//!
//! Durable first: the provider chooses the run id, so it is recorded as the
//! job's `remote_id` (fenced, with the backend's name) right after the queue
//! request answers and before anything waits on it; a worker that lost its
//! lease cancels the run it just queued. A job claimed with a `remote_id`
//! (a restart, a lapsed lease, a transient failure) is reconciled first:
//! the run is followed or its outputs collected; only a run the provider
//! answers 404 for is queued again (the old id becomes a `remote_cancels`
//! row in the same transaction, cancelled by [`DeployExecutor::start`]'s sweep).
//!
//! Outcomes come only from `GET /api/run/{id}`: a webhook wakes the waiter
//! ([`ExecContext::wait_for_hints`]), which then asks the provider; without
//! webhooks it polls, from `poll_min_ms` doubling to `poll_max_ms` while
//! nothing changes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Map, Value};
use station_core::{Config, ExecContext, ExecError, ExecJob, Executor, JobRow, OutputFile, WeakStation};
use station_tools::InputType;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::SERVICE;
use crate::client::{ApiError, DeployClient, RunState};
use crate::config::{ComfyDeployConfig, DeployBackendConfig};

/// Webhook hints closer together than this for one run cost no extra request.
const MIN_GAP: Duration = Duration::from_millis(100);

struct Backend {
    spec: DeployBackendConfig,
    /// None: its key variable is not set.
    client: Option<DeployClient>,
    inflight: AtomicUsize,
    /// False after the provider refused its key.
    ok: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Backend {
    fn serves(&self, deployment: &str) -> bool {
        self.spec.deployments.is_empty() || self.spec.deployments.iter().any(|d| d == deployment)
    }

    fn usable(&self) -> bool {
        self.client.is_some() && self.ok.load(Ordering::SeqCst)
    }

    fn note(&self, r: Result<(), &ApiError>) {
        match r {
            Ok(()) => {
                self.ok.store(true, Ordering::SeqCst);
                *self.last_error.lock().expect("error lock") = None;
            }
            Err(e @ ApiError::Unauthorized(_)) => {
                // Takes no more jobs: a refused key needs the operator.
                self.ok.store(false, Ordering::SeqCst);
                *self.last_error.lock().expect("error lock") = Some(e.to_string());
            }
            Err(e @ ApiError::Transient(_)) => {
                // Still takes jobs (they retry with backoff); readiness shows why.
                *self.last_error.lock().expect("error lock") = Some(e.to_string());
            }
            Err(_) => {}
        }
    }
}

/// Counts a job on its backend while it lives.
struct Slot(Arc<Backend>);

impl Slot {
    fn take(b: &Arc<Backend>) -> Slot {
        b.inflight.fetch_add(1, Ordering::SeqCst);
        Slot(b.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `comfydeploy` jobs on the configured ComfyDeploy backends.
pub struct DeployExecutor {
    backends: Vec<Arc<Backend>>,
    webhook: Option<String>,
    poll_min: Duration,
    poll_max: Duration,
    grace: Duration,
    max_output_bytes: u64,
    station: OnceLock<WeakStation>,
    stop: CancellationToken,
}

impl std::fmt::Debug for DeployExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.backends.iter().map(|b| b.spec.name.as_str()).collect();
        f.debug_struct("DeployExecutor").field("backends", &names).finish_non_exhaustive()
    }
}

impl DeployExecutor {
    /// The executor for `config`'s `[comfydeploy]` section, reading each
    /// backend's key from the variable it names in `env` (the process
    /// environment in `station serve`). A backend whose variable is unset
    /// takes no jobs and says so in readiness. Err: the section is invalid.
    pub fn from_config(config: &Config, env: impl Fn(&str) -> Option<String>) -> Result<Arc<DeployExecutor>, String> {
        let c = ComfyDeployConfig::from_config(config).map_err(|e| e.to_string())?;
        c.check()?;
        let timeout = Duration::from_secs(c.request_timeout_seconds.max(1));
        let mut backends = vec![];
        for spec in c.backends {
            let client = match env(&spec.api_key_env).filter(|k| !k.trim().is_empty()) {
                Some(key) => Some(DeployClient::new(&spec.api_url, key.trim(), timeout)?),
                None => None,
            };
            let last_error = client.is_none().then(|| format!("{} is not set: no API key", spec.api_key_env));
            backends.push(Arc::new(Backend {
                spec,
                client,
                inflight: AtomicUsize::new(0),
                ok: AtomicBool::new(true),
                last_error: Mutex::new(last_error),
            }));
        }
        let webhook = match (c.webhooks, &c.webhook_url, config.configured_public_url()) {
            (false, _, _) => None,
            (true, Some(u), _) => Some(u.clone()),
            (true, None, Some(public)) => Some(format!("{}/hooks/{SERVICE}", public.trim_end_matches('/'))),
            (true, None, None) => None,
        };
        Ok(Arc::new(DeployExecutor {
            backends,
            webhook,
            poll_min: Duration::from_millis(c.poll_min_ms.max(1)),
            poll_max: Duration::from_millis(c.poll_max_ms.max(c.poll_min_ms).max(1)),
            grace: Duration::from_secs(c.unreachable_grace_seconds),
            max_output_bytes: config.media.max_bytes,
            station: OnceLock::new(),
            stop: CancellationToken::new(),
        }))
    }

    /// Whether any backend is configured.
    pub fn is_configured(&self) -> bool {
        !self.backends.is_empty()
    }

    /// The URL runs ask the provider to send webhooks to (None: polling only).
    pub fn webhook_url(&self) -> Option<&str> {
        self.webhook.as_deref()
    }

    /// Starts the background sweep: every `every`, the runs recorded to
    /// cancel on these backends (a job that timed out, waited too long or
    /// moved on) are cancelled there and forgotten. Ends at [`DeployExecutor::shutdown`].
    pub fn start(self: &Arc<Self>, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.cancel_orphans().await;
                tokio::select! {
                    () = me.stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// Stops the sweep.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    async fn cancel_orphans(&self) {
        let Some(station) = self.station.get().and_then(WeakStation::upgrade) else { return };
        for b in &self.backends {
            let Some(client) = &b.client else { continue };
            let Ok(runs) = station.prompts_to_cancel(Some(&b.spec.name)).await else { continue };
            for (_, run_id) in runs {
                match client.cancel(&run_id).await {
                    Ok(()) | Err(ApiError::NotFound(_)) => {
                        info!(backend = %b.spec.name, run = %run_id, "cancelled a run whose job moved on");
                        let _ = station.prompt_cancelled(&b.spec.name, &run_id).await;
                    }
                    Err(e) => {
                        warn!(backend = %b.spec.name, run = %run_id, error = %e, "cannot cancel a run yet; will retry");
                        break;
                    }
                }
            }
        }
    }

    fn by_name(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.spec.name == name)
    }

    /// The least loaded usable backend serving `deployment` with a free slot.
    fn route(&self, deployment: &str) -> Result<Arc<Backend>, ExecError> {
        let serving: Vec<&Arc<Backend>> = self.backends.iter().filter(|b| b.serves(deployment)).collect();
        if serving.is_empty() {
            return Err(ExecError::Unroutable(format!(
                "no ComfyDeploy backend runs deployment {deployment} (add it to a backend's deployments)"
            )));
        }
        let usable: Vec<&&Arc<Backend>> = serving.iter().filter(|b| b.usable()).collect();
        if usable.is_empty() {
            let why: Vec<String> = serving
                .iter()
                .map(|b| {
                    let e = b.last_error.lock().expect("error lock").clone().unwrap_or_else(|| "unavailable".into());
                    format!("{}: {e}", b.spec.name)
                })
                .collect();
            return Err(ExecError::Transient(format!("no ComfyDeploy backend is available ({})", why.join("; "))));
        }
        usable
            .into_iter()
            .filter(|b| b.inflight.load(Ordering::SeqCst) < b.spec.max_concurrent as usize)
            .min_by_key(|b| b.inflight.load(Ordering::SeqCst))
            .map(|b| (*b).clone())
            .ok_or_else(|| ExecError::Busy(format!("every ComfyDeploy backend running {deployment} is full")))
    }

    async fn submit(&self, job: &ExecJob, ctx: &ExecContext) -> Result<Vec<OutputFile>, ExecError> {
        let spec = job.tool.comfydeploy.as_ref().ok_or_else(|| ExecError::Invalid {
            message: format!("tool {} has no comfydeploy section", job.tool.id),
            field: None,
        })?;
        let backend = self.route(&spec.deployment_id)?;
        let _slot = Slot::take(&backend);
        let client = backend.client.as_ref().expect("routed backends have a key");
        let inputs = deployment_inputs(job)?;
        let run_id = match client.queue(&spec.deployment_id, &inputs, self.webhook.as_deref()).await {
            Ok(id) => {
                backend.note(Ok(()));
                id
            }
            Err(e) => {
                backend.note(Err(&e));
                return Err(match e {
                    ApiError::Invalid(m) => {
                        ExecError::Invalid { message: format!("the deployment refused the inputs: {m}"), field: None }
                    }
                    ApiError::NotFound(m) => ExecError::Failed(format!(
                        "deployment {} is not known to ComfyDeploy backend {}: {m}",
                        spec.deployment_id, backend.spec.name
                    )),
                    ApiError::Unauthorized(m) => ExecError::Failed(format!(
                        "ComfyDeploy backend {} refused its API key ({}): {m}",
                        backend.spec.name, backend.spec.api_key_env
                    )),
                    ApiError::Transient(m) => ExecError::Transient(m),
                });
            }
        };
        if let Err(e) = ctx.record_submission(&backend.spec.name, &run_id).await {
            // Another worker owns the job now (or the database is down): the run
            // just queued is nobody's, so it must not run on.
            let _ = client.cancel(&run_id).await;
            return Err(e);
        }
        info!(job = %job.row.id, backend = %backend.spec.name, run = %run_id, "queued on ComfyDeploy");
        self.follow(&backend, ctx, job, &run_id).await
    }

    /// Follows run `run_id` to its end, answering only from what the provider
    /// says in `GET /api/run/{id}`.
    async fn follow(
        &self,
        backend: &Arc<Backend>,
        ctx: &ExecContext,
        job: &ExecJob,
        run_id: &str,
    ) -> Result<Vec<OutputFile>, ExecError> {
        let client = backend.client.as_ref().ok_or_else(|| {
            ExecError::Transient(format!("ComfyDeploy backend {} has no API key now", backend.spec.name))
        })?;
        let hints = ctx.wait_for_hints(SERVICE, run_id);
        let mut delay = self.poll_min;
        let mut seen: Option<(String, u64)> = None;
        let mut unreachable_since: Option<Instant> = None;
        let waiting_since = Instant::now();
        let mut last_ask = Instant::now() - MIN_GAP;
        loop {
            let gap = MIN_GAP.saturating_sub(last_ask.elapsed());
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            last_ask = Instant::now();
            match client.run(run_id).await {
                Ok(run) => {
                    backend.note(Ok(()));
                    unreachable_since = None;
                    let now = (run.status.clone(), run.progress.unwrap_or(0.0).to_bits());
                    let changed = seen.as_ref() != Some(&now);
                    seen = Some(now);
                    if let Some(done) = self.observe(backend, client, ctx, job, &run, changed, waiting_since).await {
                        return done;
                    }
                    delay = if changed { self.poll_min } else { (delay * 2).min(self.poll_max) };
                }
                Err(ApiError::NotFound(m)) => {
                    return Err(ExecError::Transient(format!(
                        "ComfyDeploy no longer knows run {run_id} ({m}); it is queued again"
                    )));
                }
                Err(ApiError::Unauthorized(m)) => {
                    backend.note(Err(&ApiError::Unauthorized(m.clone())));
                    return Err(ExecError::Failed(format!(
                        "ComfyDeploy backend {} refused its API key ({}): {m}",
                        backend.spec.name, backend.spec.api_key_env
                    )));
                }
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.grace {
                        backend.note(Err(&e));
                        return Err(ExecError::Transient(format!("cannot read run {run_id}: {e}")));
                    }
                    delay = (delay * 2).min(self.poll_max);
                }
            }
            tokio::select! {
                biased;
                () = ctx.cancelled().cancelled() => {
                    if let Err(e) = client.cancel(run_id).await {
                        warn!(run = %run_id, error = %e, "could not cancel the run on ComfyDeploy");
                    }
                    return Err(ExecError::Cancelled);
                }
                () = hints.hinted() => delay = self.poll_min,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// What one status read means: Some(outcome) once the run ended.
    #[allow(clippy::too_many_arguments)]
    async fn observe(
        &self,
        backend: &Backend,
        client: &DeployClient,
        ctx: &ExecContext,
        job: &ExecJob,
        run: &RunState,
        changed: bool,
        waiting_since: Instant,
    ) -> Option<Result<Vec<OutputFile>, ExecError>> {
        let said = run.live_status.clone().filter(|s| !s.trim().is_empty());
        match run.status.as_str() {
            "success" => {
                ctx.running().await;
                ctx.progress(1.0, None, None, None).await;
                Some(self.collect(client, job, run).await)
            }
            "failed" => Some(Err(ExecError::Failed(match said {
                Some(s) => format!("the hosted run failed: {s}"),
                None => "the hosted run failed".into(),
            }))),
            "cancelled" if ctx.cancelled().is_cancelled() => Some(Err(ExecError::Cancelled)),
            "cancelled" => Some(Err(ExecError::Failed("the run was cancelled on ComfyDeploy".into()))),
            "timeout" => Some(Err(ExecError::Failed("the run timed out on ComfyDeploy".into()))),
            "started" | "running" | "uploading" => {
                ctx.running().await;
                if changed {
                    ctx.progress(run.progress.unwrap_or(0.0), None, None, said).await;
                }
                None
            }
            // not-started, queued, and anything new: still waiting.
            _ => {
                if ctx.is_running() {
                    return None;
                }
                ctx.waiting(None).await;
                if let Some(limit) = ctx.backend_wait()
                    && waiting_since.elapsed() >= limit
                {
                    return Some(Err(ExecError::WaitedTooLong(format!(
                        "waited {} s on ComfyDeploy backend {} without starting; trying again",
                        waiting_since.elapsed().as_secs(),
                        backend.spec.name
                    ))));
                }
                None
            }
        }
    }

    async fn collect(
        &self,
        client: &DeployClient,
        job: &ExecJob,
        run: &RunState,
    ) -> Result<Vec<OutputFile>, ExecError> {
        let files = run.output_files();
        if files.is_empty() {
            return Err(ExecError::Failed(format!("{} finished without output images", job.tool.name)));
        }
        let mut out = vec![];
        for (url, filename) in files {
            let bytes = client.download(&url, self.max_output_bytes).await.map_err(|e| match e {
                // The run stays done there: the retry reconciles and collects again.
                ApiError::Transient(m) | ApiError::NotFound(m) => {
                    ExecError::Transient(format!("output {filename}: {m}"))
                }
                e => ExecError::Failed(format!("output {filename}: {e}")),
            })?;
            out.push(OutputFile { bytes, filename });
        }
        Ok(out)
    }
}

/// The run's inputs: each tool input's value under the deployment's
/// external input name; images as `data:` URLs.
fn deployment_inputs(job: &ExecJob) -> Result<Map<String, Value>, ExecError> {
    let spec = job.tool.comfydeploy.as_ref().expect("checked by the caller");
    let mut inputs = Map::new();
    for (name, external) in &spec.inputs {
        let Some(def) = job.tool.inputs.get(name) else { continue };
        let value = match def.kind {
            InputType::Image => match job.images.get(name) {
                Some(img) => Value::String(format!(
                    "data:{};base64,{}",
                    img.mime,
                    base64::engine::general_purpose::STANDARD.encode(img.bytes.as_slice())
                )),
                None => continue,
            },
            _ => match job.params.get(name) {
                Some(Value::Null) | None => continue,
                Some(v) => v.clone(),
            },
        };
        inputs.insert(external.clone(), value);
    }
    Ok(inputs)
}

#[async_trait]
impl Executor for DeployExecutor {
    fn service(&self) -> &'static str {
        SERVICE
    }

    fn capacity(&self) -> usize {
        self.backends.iter().filter(|b| b.usable()).map(|b| b.spec.max_concurrent as usize).sum()
    }

    fn reports_start(&self) -> bool {
        true
    }

    async fn execute(&self, job: ExecJob, ctx: ExecContext) -> Result<Vec<OutputFile>, ExecError> {
        if let (Some(run_id), Some(name)) = (job.row.remote_id.clone(), job.row.backend.clone()) {
            let Some(backend) = self.by_name(&name).cloned() else {
                return Err(ExecError::Unroutable(format!(
                    "the job's run is on ComfyDeploy backend {name}, which is no longer configured"
                )));
            };
            let Some(client) = backend.client.as_ref() else {
                return Err(ExecError::Transient(format!("ComfyDeploy backend {name} has no API key now")));
            };
            match client.run(&run_id).await {
                Ok(_) => {
                    info!(job = %job.row.id, backend = %name, run = %run_id, "resuming a run already on ComfyDeploy");
                    let _slot = Slot::take(&backend);
                    return self.follow(&backend, &ctx, &job, &run_id).await;
                }
                Err(ApiError::NotFound(_)) => {
                    info!(job = %job.row.id, backend = %name, run = %run_id, "ComfyDeploy does not know the run; queuing it again");
                }
                Err(e) => {
                    // Never queue a second run while the first may exist: try later.
                    backend.note(Err(&e));
                    return Err(ExecError::Transient(format!("cannot ask ComfyDeploy about run {run_id}: {e}")));
                }
            }
        }
        if ctx.cancelled().is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        self.submit(&job, &ctx).await
    }

    async fn cancel_remote(&self, job: &JobRow) {
        if let (Some(name), Some(run_id)) = (&job.backend, &job.remote_id)
            && let Some(client) = self.by_name(name).and_then(|b| b.client.as_ref())
            && let Err(e) = client.cancel(run_id).await
        {
            warn!(job = %job.id, run = %run_id, error = %e, "could not cancel the run on ComfyDeploy");
        }
    }

    fn attach(&self, station: &station_core::Station) {
        let _ = self.station.set(station.downgrade());
    }

    async fn health(&self) -> Vec<(String, bool, String)> {
        self.backends
            .iter()
            .map(|b| {
                let detail = match b.last_error.lock().expect("error lock").clone() {
                    Some(e) => e,
                    None => format!(
                        "{}/{} runs, {}",
                        b.inflight.load(Ordering::SeqCst),
                        b.spec.max_concurrent,
                        if b.spec.deployments.is_empty() {
                            "any deployment".to_string()
                        } else {
                            format!("deployments {}", b.spec.deployments.join(", "))
                        }
                    ),
                };
                (b.spec.name.clone(), b.usable(), detail)
            })
            .collect()
    }
}
