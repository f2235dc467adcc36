//! Wiring executors into the core, and the `station backends` commands.

use std::sync::Arc;
use std::time::Duration;

use station_comfydeploy::DeployExecutor;
use station_comfyui::{BackendSpec, ComfyClient, ComfyExecutor};
use station_core::BackendRow;
use station_core::audit::Actor;
use station_core::{MediaExecutor, Station};
use tracing::{info, warn};

use crate::cli::BackendsCommand;
use crate::exit;

/// Background services started with the executors.
pub struct Background {
    comfy: Arc<ComfyExecutor>,
    hosted: Option<Arc<DeployExecutor>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Background {
    /// Stops health checks, backend syncing and the hosted runs' sweep.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.comfy.shutdown();
        if let Some(h) = self.hosted {
            h.shutdown();
        }
    }
}

/// Registers the ComfyDeploy executor when `[[comfydeploy.backends]]` are
/// configured (keys from the variables they name), and starts its sweep of
/// runs to cancel.
async fn register_hosted(station: &Station) -> Option<Arc<DeployExecutor>> {
    let hosted = match DeployExecutor::from_config(&station.config, |name| std::env::var(name).ok()) {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "ComfyDeploy backends ignored");
            return None;
        }
    };
    if !hosted.is_configured() {
        return None;
    }
    for (name, ok, detail) in station_core::Executor::health(&*hosted).await {
        if ok {
            info!(backend = %name, "ComfyDeploy backend: {detail}");
        } else {
            warn!(backend = %name, "ComfyDeploy backend takes no jobs: {detail}");
        }
    }
    match hosted.webhook_url() {
        Some(url) => info!(url, "ComfyDeploy runs send webhooks here (hints; runs are polled too)"),
        None => info!("ComfyDeploy runs are polled (no public URL for webhooks)"),
    }
    station.register_executor(hosted.clone());
    hosted.start(Duration::from_secs(10));
    Some(hosted)
}

/// Makes the pool match configuration plus the backends added or removed with
/// `station backends add|remove` (by any process), so no restart is needed.
async fn sync_backends(station: &Station, comfy: &ComfyExecutor) {
    let wanted = backend_specs(station).await;
    let current: Vec<BackendSpec> = comfy.statuses().into_iter().map(|s| s.spec).collect();
    for spec in &wanted {
        if !current.contains(spec) {
            match comfy.add_backend(spec.clone()) {
                Ok(()) => info!(backend = %spec.name, url = %spec.url, "backend added"),
                Err(e) => warn!(backend = %spec.name, error = %e, "backend ignored"),
            }
        }
    }
    for spec in current {
        if !wanted.iter().any(|w| w.name == spec.name) && comfy.remove_backend(&spec.name) {
            info!(backend = %spec.name, "backend removed; its running jobs finish there");
        }
    }
    // A removed backend offers no models any more (to any process).
    let names: Vec<String> = wanted.iter().map(|w| w.name.clone()).collect();
    if let Err(e) = station.forget_models_except(&names).await {
        warn!(error = %e, "cannot forget the models of removed backends; will retry");
    }
}

/// Every backend: from configuration, then those added at run time.
pub(super) async fn backend_specs(station: &Station) -> Vec<BackendSpec> {
    let mut specs: Vec<BackendSpec> = station
        .config
        .comfyui
        .backends
        .iter()
        .map(|b| BackendSpec {
            name: b.name.clone(),
            url: b.url.clone(),
            max_concurrent: b.max_concurrent.max(1) as usize,
            tags: b.tags.clone(),
        })
        .collect();
    match station.runtime_backends().await {
        Ok(rows) => {
            for r in rows {
                specs.retain(|s| s.name != r.name);
                specs.push(BackendSpec {
                    name: r.name,
                    url: r.url,
                    max_concurrent: r.max_concurrent.max(1) as usize,
                    tags: serde_json::from_str(&r.tags).unwrap_or_default(),
                });
            }
        }
        Err(e) => warn!(error = %e, "cannot read run-time backends"),
    }
    specs
}

/// Health checks' (connect, request) timeouts from configuration.
pub(super) fn health_timeouts(station: &Station) -> (Duration, Duration) {
    let c = &station.config.comfyui;
    (Duration::from_secs(c.health_connect_timeout_seconds.max(1)), Duration::from_secs(c.health_timeout_seconds.max(1)))
}

/// Registers the native media executor and the ComfyUI pool. `warn_without_backends`:
/// say when no ComfyUI backend is configured (not for a native job run from the CLI).
pub async fn register_executors(station: &Station, warn_without_backends: bool) -> Background {
    station.register_executor(Arc::new(MediaExecutor::new(&station.config)));
    let hosted = register_hosted(station).await;
    let specs = backend_specs(station).await;
    if specs.is_empty() && warn_without_backends {
        warn!(
            "no ComfyUI backend configured: ComfyUI tools wait in the queue until one is added \
             (`station backends add NAME URL`, STATION_COMFYUI_BACKENDS, or [[comfyui.backends]] in station.toml)"
        );
    }
    let mut valid = vec![];
    for s in specs {
        match ComfyClient::new(&s.url) {
            Ok(_) => valid.push(s),
            Err(e) => warn!(backend = %s.name, error = %e, "backend ignored"),
        }
    }
    let comfy =
        ComfyExecutor::with_health_timeouts(valid, &station.config.comfyui.preview_method, health_timeouts(station))
            .expect("URLs validated above");
    let every = Duration::from_secs(station.config.comfyui.health_interval_seconds.max(1));
    for s in comfy.statuses() {
        info!(backend = %s.spec.name, url = %s.spec.url, "ComfyUI backend; takes jobs once its health check passes");
    }
    // Attached first, so the first health check already stores each backend's models.
    station.register_executor(comfy.clone());
    // In the background: a backend that accepts connections and never
    // answers must not hold up serving, native tools or the other backends.
    comfy.spawn_health_checks(every, station.wake.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let (station, comfy, stop) = (station.clone(), comfy.clone(), stop.clone());
        async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                sync_backends(&station, &comfy).await;
            }
        }
    });
    Background { comfy, hosted, stop }
}

/// `station backends …`.
pub async fn backends_command(station: &Station, c: BackendsCommand) -> u8 {
    match c {
        BackendsCommand::List => {
            println!("{:<16} {:<36} {:>4}  {:<8} SOURCE", "NAME", "URL", "MAX", "TAGS");
            let from_db: Vec<String> =
                station.runtime_backends().await.unwrap_or_default().into_iter().map(|b| b.name).collect();
            for s in backend_specs(station).await {
                let src = if from_db.contains(&s.name) { "added" } else { "config" };
                println!("{:<16} {:<36} {:>4}  {:<8} {src}", s.name, s.url, s.max_concurrent, s.tags.join(","));
            }
            exit::OK
        }
        BackendsCommand::Add { name, url, max_concurrent, tags } => {
            if let Err(e) = ComfyClient::new(&url) {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
            let row = BackendRow {
                name: name.clone(),
                url,
                max_concurrent: max_concurrent.max(1) as i64,
                tags: serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into()),
                created_at: station_core::now_ms(),
            };
            match station.save_runtime_backend(&row, &Actor::operator(&super::local_user(None))).await {
                Ok(()) => {
                    println!("added backend {name}; running servers pick it up at their next health check");
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::UNAVAILABLE
                }
            }
        }
        BackendsCommand::Remove { name } => {
            match station.remove_runtime_backend(&name, &Actor::operator(&super::local_user(None))).await {
                Ok(true) => {
                    println!("removed backend {name}");
                    exit::OK
                }
                Ok(false) => {
                    eprintln!(
                        "error: no backend {name} was added at run time (configured ones are removed from station.toml)"
                    );
                    exit::USAGE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::UNAVAILABLE
                }
            }
        }
        BackendsCommand::Refresh => {
            let Some(pool) = checked_pool(station).await else { return exit::FAILED };
            let mut all_ok = true;
            for status in pool.statuses() {
                let name = &status.spec.name;
                if !status.healthy {
                    all_ok = false;
                    println!("{name} — DOWN: {} (its models are not offered)", status.last_error.unwrap_or_default());
                    continue;
                }
                let inventory = pool.inventory(name).unwrap_or_default();
                let mut kinds: Vec<(String, usize)> = vec![];
                for (kind, _) in inventory.iter() {
                    match kinds.iter_mut().find(|(k, _)| k == kind) {
                        Some((_, n)) => *n += 1,
                        None => kinds.push((kind.clone(), 1)),
                    }
                }
                let summary: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
                println!(
                    "{name} — up: {}",
                    if summary.is_empty() { "no model files".to_string() } else { summary.join(", ") }
                );
            }
            // Backends no longer configured offer nothing.
            let names: Vec<String> = pool.statuses().into_iter().map(|s| s.spec.name).collect();
            if let Err(e) = station.forget_models_except(&names).await {
                eprintln!("error: {e}");
                pool.shutdown();
                return exit::UNAVAILABLE;
            }
            pool.shutdown();
            println!("stored; `station models list` shows every model and which backends have it");
            if all_ok { exit::OK } else { exit::FAILED }
        }
        BackendsCommand::Check => {
            let Some(pool) = checked_pool(station).await else { return exit::FAILED };
            let tools = station.tools.list();
            let caps = pool.capabilities(&tools);
            let mut all_ok = true;
            for (status, (_, per_tool)) in pool.statuses().iter().zip(caps) {
                let state = if status.healthy {
                    "up".to_string()
                } else {
                    format!("DOWN: {}", status.last_error.clone().unwrap_or_default())
                };
                all_ok &= status.healthy;
                println!("{} ({}) — {state}", status.spec.name, status.spec.url);
                if status.healthy {
                    let inventory = pool.inventory(&status.spec.name).unwrap_or_default();
                    for (tool, why_not) in per_tool {
                        let model_kind = station
                            .tools
                            .get(&tool)
                            .and_then(|t| t.model_input().and_then(|(_, d)| d.model_kind.clone()));
                        match (why_not, model_kind) {
                            (None, Some(kind)) => {
                                let files: Vec<&str> =
                                    inventory.iter().filter(|(k, _)| *k == kind).map(|(_, n)| n.as_str()).collect();
                                println!("  can run   {tool} with {}", files.join(", "));
                            }
                            (None, None) => println!("  can run   {tool}"),
                            (Some(r), _) => println!("  cannot    {tool}: {r}"),
                        }
                    }
                    if inventory.is_empty() {
                        println!("  models    none");
                    }
                    for (kind, file) in inventory.iter() {
                        println!("  model     {kind:<15} {file}");
                    }
                }
            }
            pool.shutdown();
            if all_ok { exit::OK } else { exit::FAILED }
        }
    }
}

/// A pool of every configured and added backend, checked once and attached
/// to `station` (so what each offers is stored); `None` (said why) when
/// there is no backend.
async fn checked_pool(station: &Station) -> Option<Arc<ComfyExecutor>> {
    let specs = backend_specs(station).await;
    if specs.is_empty() {
        println!("no ComfyUI backend configured");
        return None;
    }
    let pool = match ComfyExecutor::with_health_timeouts(specs, "none", health_timeouts(station)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    station_core::Executor::attach(&*pool, station);
    pool.check_all().await;
    Some(pool)
}
