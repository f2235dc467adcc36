//! Wiring executors into the core, and the `station backends` commands.

use std::sync::Arc;
use std::time::Duration;

use station_comfyui::{BackendSpec, ComfyClient, ComfyExecutor};
use station_core::BackendRow;
use station_core::{MediaExecutor, Station};
use tracing::{info, warn};

use crate::cli::BackendsCommand;
use crate::exit;

/// Background services started with the executors.
pub struct Background {
    comfy: Arc<ComfyExecutor>,
    stop: tokio_util::sync::CancellationToken,
}

impl Background {
    /// Stops health checks and backend syncing.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.comfy.shutdown();
    }
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
}

/// Every backend: from configuration, then those added at run time.
async fn backend_specs(station: &Station) -> Vec<BackendSpec> {
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
fn health_timeouts(station: &Station) -> (Duration, Duration) {
    let c = &station.config.comfyui;
    (Duration::from_secs(c.health_connect_timeout_seconds.max(1)), Duration::from_secs(c.health_timeout_seconds.max(1)))
}

/// Registers the native media executor and the ComfyUI pool. `warn_without_backends`:
/// say when no ComfyUI backend is configured (not for a native job run from the CLI).
pub async fn register_executors(station: &Station, warn_without_backends: bool) -> Background {
    station.register_executor(Arc::new(MediaExecutor::new(&station.config)));
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
    // In the background: a backend that accepts connections and never
    // answers must not hold up serving, native tools or the other backends.
    comfy.spawn_health_checks(every, station.wake.clone());
    station.register_executor(comfy.clone());
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
    Background { comfy, stop }
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
            match station.save_runtime_backend(&row).await {
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
        BackendsCommand::Remove { name } => match station.remove_runtime_backend(&name).await {
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
        },
        BackendsCommand::Check => {
            let specs = backend_specs(station).await;
            if specs.is_empty() {
                println!("no ComfyUI backend configured");
                return exit::FAILED;
            }
            let pool = match ComfyExecutor::with_health_timeouts(specs, "none", health_timeouts(station)) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::USAGE;
                }
            };
            pool.check_all().await;
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
                    for (tool, why_not) in per_tool {
                        match why_not {
                            None => println!("  can run   {tool}"),
                            Some(r) => println!("  cannot    {tool}: {r}"),
                        }
                    }
                }
            }
            pool.shutdown();
            if all_ok { exit::OK } else { exit::FAILED }
        }
    }
}
