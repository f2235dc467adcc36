//! What each command does. Business logic stays in the core; this file turns
//! arguments into core calls and prints the answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use station_core::tools::InputType;
use station_core::{Config, JobEvent, Station, SubmitError, SubmitRequest, Workers};
use station_core::{JobFilter, JobRow, JobStatus};
use tracing::{info, warn};

use crate::cli::{BackendsCommand, Cli, Command, ConfigCommand, JobsCommand, RunArgs, ToolsCommand};
use crate::exit;

pub(crate) mod audit;
mod chat;
mod doctor;
pub(crate) mod keys;
pub(crate) mod loras;
pub(crate) mod models;
pub(crate) mod points;
pub(crate) mod users;
mod wire;

/// The front ends' configuration sections (`[telegram]`, `[discord]`,
/// `[metrics]`): the
/// core loads, checks, shows and documents them with its own keys, and each
/// adapter reads its settings back from the loaded configuration.
pub fn config_sections() -> Vec<station_core::config::Section> {
    vec![
        station_telegram::TelegramConfig::section(),
        station_discord::DiscordConfig::section(),
        station_http::metrics::MetricsConfig::section(),
    ]
}

/// Runs one parsed command line and returns the process exit code.
pub async fn dispatch(cli: Cli) -> u8 {
    let config = match Config::load(cli.config.as_deref(), &config_sections()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    init_logging(&config, cli.verbose, matches!(cli.command, Command::Serve));
    match cli.command {
        Command::Config(c) => config_cmd(&config, c),
        Command::Tools(ToolsCommand::Check { dir }) => {
            tools_check(dir.unwrap_or_else(|| config.tools_dir()), config.tools.load_options())
        }
        Command::Bench(args) => match station_bench::run(args).await {
            station_bench::Outcome::Done => exit::OK,
            station_bench::Outcome::BadUsage => exit::USAGE,
            station_bench::Outcome::Failed => exit::FAILED,
            station_bench::Outcome::Unavailable => exit::UNAVAILABLE,
        },
        command => {
            let (station, tool_errors) = match Station::open(config).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::UNAVAILABLE;
                }
            };
            // The registry logged each tool problem once while loading.
            let code = match command {
                Command::Serve => serve(station.clone()).await,
                Command::Run(args) => run(&station, args).await,
                Command::Chat(args) => chat::run(&station, args).await,
                Command::Jobs(c) => jobs(&station, c).await,
                Command::Tools(c) => tools(&station, c, &tool_errors),
                Command::Backends(c) => backends(&station, c).await,
                Command::Migrate(a) => migrate(&station, a.status).await,
                Command::Loras(c) => loras::run(&station, c).await,
                Command::Models(c) => models::run(&station, c).await,
                Command::Points(c) => points::run(&station, c).await,
                Command::Users(c) => users::run(&station, c).await,
                Command::Keys(c) => keys::run(&station, c).await,
                Command::Audit(a) => audit::run(&station, a).await,
                Command::Doctor => {
                    let problems: Vec<String> = tool_errors.iter().map(ToString::to_string).collect();
                    doctor::run(&station, &problems).await
                }
                Command::Config(_) | Command::Bench(_) => unreachable!("handled above"),
            };
            station.shutdown().await;
            code
        }
    }
}

fn init_logging(config: &Config, verbose: u8, serving: bool) {
    let default = match (verbose, serving) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},sqlx=warn,hyper=warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn config_cmd(config: &Config, c: ConfigCommand) -> u8 {
    match c {
        ConfigCommand::Show => {
            print!("{}", config.show());
            exit::OK
        }
        ConfigCommand::Init { path, force } => {
            if path.exists() && !force {
                eprintln!("error: {} already exists; pass --force to overwrite it", path.display());
                return exit::USAGE;
            }
            match std::fs::write(&path, config.example()) {
                Ok(()) => {
                    println!("wrote {}; every key is optional and shows its default", path.display());
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    exit::USAGE
                }
            }
        }
        ConfigCommand::Env => {
            for (key, env) in config.env_names() {
                println!("{env:<44} {key}");
            }
            println!("{:<44} comma-separated backend URLs (shorthand)", "STATION_COMFYUI_BACKENDS");
            println!("{:<44} path of the configuration file", "STATION_CONFIG");
            exit::OK
        }
    }
}

async fn serve(station: Station) -> u8 {
    let listen = station.config.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e} (set STATION_LISTEN or `listen` in station.toml)");
            return exit::UNAVAILABLE;
        }
    };
    let _watcher = match station.tools.watch() {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "tool folder is not watched; restart to pick up tool changes");
            None
        }
    };
    // Metrics: the recorder goes in before any work, so every job counts.
    let metrics_config = match station_http::metrics::MetricsConfig::from_config(&station.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if metrics_config.enabled {
        station_http::metrics::install();
    }
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let background = wire::register_executors(&station).await;
    let workers = Workers::start(&station);
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string());
    // Conversations: chat adapters register with the engine; its delivery
    // service sends what flows and job notifications stored.
    let flows = station_flows::Flows::with_settings(
        station.clone(),
        station_flows::FlowSettings {
            public_url: public_url(&station.config, &addr),
            ..station_flows::FlowSettings::from_config(&station.config)
        },
    );
    // Routes the chat adapters serve (webhooks, interactions) join the HTTP router.
    let mut extra = axum::Router::new();
    // Telegram: long polling, or the webhook route when telegram.public_url is set.
    let telegram_config = match station_telegram::TelegramConfig::from_config(&station.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let telegram = match telegram_config.token.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(_) => {
            let options = station_telegram::TelegramOptions::default();
            let config = &telegram_config;
            match station_telegram::TelegramBot::new(station.clone(), flows.clone(), config, options) {
                Ok(bot) => {
                    extra = extra.merge(bot.webhook_router());
                    Some(bot)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::USAGE;
                }
            }
        }
    };
    // Discord: the signed interactions endpoint, and commands registered (and
    // re-registered whenever the tools change) when the bot is configured.
    let discord_config = match station_discord::DiscordConfig::from_config(&station.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let discord = match station_discord::DiscordOptions::from_config(&discord_config) {
        Ok(None) => None,
        Ok(Some(options)) => match station_discord::Discord::new(station.clone(), flows.clone(), options) {
            Ok(bot) => {
                flows.add_platform(Arc::new(bot.clone()));
                extra = extra.merge(bot.router());
                Some(bot)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let metrics_alone = match (metrics_config.enabled, metrics_config.listen) {
        (false, _) => None,
        (true, None) => {
            if metrics_config.token.is_none() && station.config.public_url().starts_with("https://") {
                warn!("/metrics is served on the public address without a token; set metrics.token or metrics.listen");
            }
            extra = extra.merge(station_http::metrics::router(station.clone(), &metrics_config));
            None
        }
        (true, Some(metrics_addr)) => {
            let (station, config) = (station.clone(), metrics_config.clone());
            let stop = metrics_stop.clone();
            info!(%metrics_addr, "metrics served on their own address");
            Some(tokio::spawn(async move {
                let stopped = async move { stop.cancelled().await };
                if let Err(e) = station_http::metrics::serve_alone(metrics_addr, station, &config, stopped).await {
                    warn!(error = %e, %metrics_addr, "the metrics address could not be served");
                }
            }))
        }
    };
    let deliveries = flows.start();
    info!(%addr, data_dir = %station.config.data_dir.display(), "Station is serving; health at /healthz, readiness at /readyz");
    let stop = tokio_util::sync::CancellationToken::new();
    let http = tokio::spawn(station_http::serve(listener, station.clone(), extra, {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    let telegram = match telegram {
        Some(bot) => match bot.start().await {
            Ok(runner) => {
                info!(bot = %bot.username(), webhook = bot.webhook_mode(), "Telegram bot started");
                Some(runner)
            }
            Err(e) => {
                warn!(error = %e, "the Telegram bot did not start; Station serves without it");
                None
            }
        },
        None => None,
    };
    let discord_commands = discord.map(|bot| {
        info!(endpoint = station_discord::INTERACTIONS_PATH, "Discord interactions endpoint ready");
        bot.keep_commands_registered()
    });
    shutdown_signal().await;
    // Every step below shares one deadline: in-flight work gets at most
    // `shutdown_grace_seconds`, then the process exits anyway.
    let grace = Duration::from_secs(station.config.shutdown_grace_seconds);
    let deadline = tokio::time::Instant::now() + grace;
    // Event streams end now; a browser reconnects to another server.
    station.begin_shutdown();
    if let Some(task) = discord_commands {
        task.abort();
    }
    info!(
        grace_seconds = grace.as_secs(),
        "shutting down: finishing HTTP requests and handing running jobs back to the queue"
    );
    if let Some(t) = telegram
        && tokio::time::timeout_at(deadline, t.shutdown()).await.is_err()
    {
        warn!("the Telegram bot did not stop within the shutdown grace");
    }
    stop.cancel();
    metrics_stop.cancel();
    if let Some(task) = metrics_alone {
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    let mut http = http;
    if tokio::time::timeout_at(deadline, &mut http).await.is_err() {
        warn!("HTTP requests still open after the shutdown grace; closing them");
        http.abort();
    }
    if tokio::time::timeout_at(deadline, deliveries.shutdown()).await.is_err() {
        warn!("chat deliveries did not stop within the shutdown grace; they resume at the next start");
    }
    // Handing jobs back is quick (one UPDATE); past the deadline their
    // leases lapse and another process resumes them all the same.
    let hand_back = deadline.max(tokio::time::Instant::now() + Duration::from_secs(2));
    if tokio::time::timeout_at(hand_back, workers.shutdown()).await.is_err() {
        warn!("running jobs were not handed back in time; their leases will lapse");
    }
    background.shutdown().await;
    exit::OK
}

/// The address people reach this Station at (login links, webhooks).
fn public_url(config: &Config, addr: &str) -> String {
    let configured = config.configured_public_url();
    configured.map(|u| u.trim_end_matches('/').to_string()).unwrap_or_else(|| format!("http://{addr}"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Is a `station serve` answering on the configured address?
async fn server_running(config: &Config) -> bool {
    let url = format!("http://{}/healthz", config.listen);
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build();
    match client {
        Ok(c) => c.get(url).send().await.map(|r| r.status().is_success()).unwrap_or(false),
        Err(_) => false,
    }
}

fn local_user(args_user: Option<String>) -> String {
    args_user.or_else(|| std::env::var("USER").ok()).filter(|u| !u.is_empty()).unwrap_or_else(|| "operator".into())
}

async fn run(station: &Station, args: RunArgs) -> u8 {
    let user = local_user(args.user.clone());
    let account = match station.account("local", &user, &user).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::UNAVAILABLE;
        }
    };
    let Some(tool) = station.find_tool(&args.tool, &account) else {
        let known: Vec<String> = station.tools.list().iter().map(|t| t.id.clone()).collect();
        eprintln!("error: unknown tool {:?}; available: {}", args.tool, known.join(", "));
        return exit::USAGE;
    };
    let mut params = Map::new();
    for p in &args.params {
        let Some((k, v)) = p.split_once('=') else {
            eprintln!("error: --param {p:?}: expected NAME=VALUE");
            return exit::USAGE;
        };
        params.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    for spec in &args.images {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) if tool.inputs.contains_key(n) => (n.to_string(), PathBuf::from(p)),
            _ => match tool
                .inputs
                .iter()
                .find(|(_, i)| i.kind == InputType::Image && i.primary)
                .or_else(|| tool.inputs.iter().find(|(_, i)| i.kind == InputType::Image))
            {
                Some((n, _)) => (n.clone(), PathBuf::from(spec)),
                None => {
                    eprintln!("error: --image: tool {} takes no image input", tool.id);
                    return exit::USAGE;
                }
            },
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: --image {}: {e}", path.display());
                return exit::USAGE;
            }
        };
        match station.media.put_image(bytes, Some(&account.id), None, "input").await {
            Ok(m) => {
                params.insert(name, Value::String(format!("media:{}", m.id)));
            }
            Err(e) => {
                eprintln!("error: --image {}: {e}", path.display());
                return exit::USAGE;
            }
        }
    }
    let req = SubmitRequest {
        tool: tool.id.clone(),
        params,
        priority: 0,
        source: Some(serde_json::json!({"platform": "cli"})),
        // The operator at the terminal asked for this job by name.
        confirmed: true,
        ..Default::default()
    };
    let job = match station.submit(&account, req).await {
        Ok(j) => j,
        Err(SubmitError::Invalid(errors)) => {
            eprintln!("error: the job was not queued:");
            for e in errors {
                eprintln!("  --param {}: {}", e.field, e.reason);
            }
            return exit::USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if args.no_wait {
        println!("{}", job.id);
        eprintln!("queued; follow it with `station jobs show {}`", job.id);
        return exit::OK;
    }
    // Without a server, this process runs the job itself.
    let embedded = if server_running(&station.config).await {
        None
    } else {
        let background = wire::register_executors(station).await;
        Some((Workers::start(station), background))
    };
    let code = follow(station, &job, &args.out, embedded.is_some()).await;
    if let Some((workers, background)) = embedded {
        workers.shutdown().await;
        background.shutdown().await;
    }
    code
}

async fn follow(station: &Station, job: &JobRow, out: &Path, embedded: bool) -> u8 {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {percent:>3}% {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} {}", job.tool_id, &job.id[job.id.len() - 8..]));
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut events = station.bus.subscribe();
    // With a server running the job, its changes reach this process as bus
    // events only on PostgreSQL: poll the row often (one indexed read) so
    // the result shows as soon as in the web app. In-process, events lead.
    let mut poll = tokio::time::interval(Duration::from_millis(if embedded { 1000 } else { 25 }));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let final_row = loop {
        let read_row = tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                bar.abandon_with_message("interrupted");
                if embedded {
                    eprintln!("The job stays queued and resumes when `station serve` runs. Follow it with `station jobs show {}`.", job.id);
                } else {
                    eprintln!("The job keeps running in the server. Follow it with `station jobs show {}`.", job.id);
                }
                return exit::INTERRUPTED;
            }
            ev = events.recv() => match ev {
                Ok(JobEvent::Progress { job_id, fraction, label, .. }) if job_id == job.id => {
                    bar.set_position((fraction * 1000.0) as u64);
                    if let Some(l) = label { bar.set_message(l); }
                    false
                }
                // A status change or the result: read the row now, not at the next tick.
                Ok(ev @ (JobEvent::Status { .. } | JobEvent::Result { .. })) => ev.job_id() == job.id,
                Ok(_) => false,
                Err(_) => true,
            },
            _ = poll.tick() => true,
        };
        if !read_row {
            continue;
        }
        match station.job_view(&job.id).await {
            Ok(Some(v)) => {
                let st = v.row.status();
                if st.is_terminal() {
                    break v.row;
                }
                // The core's wording: "queued, 2 ahead", "waiting for a GPU (3 ahead)", "running 45 %".
                // While running, the node labels of progress events say more.
                if st != JobStatus::Running {
                    bar.set_message(v.status_text());
                } else {
                    bar.set_position((v.row.progress * 1000.0).max(bar.position() as f64) as u64);
                    if bar.message().starts_with("queued") || bar.message().starts_with("waiting") {
                        bar.set_message(v.status_text());
                    }
                }
            }
            Ok(None) => {
                bar.abandon_with_message("job vanished");
                return exit::FAILED;
            }
            Err(e) => warn!(error = %e, "cannot read job status"),
        }
    };
    match final_row.status() {
        JobStatus::Succeeded => {
            bar.set_position(1000);
            bar.finish_with_message("done");
            save_outputs(station, &final_row, out).await
        }
        s => {
            bar.abandon_with_message(s.to_string());
            eprintln!("job {} {}: {}", final_row.id, s, final_row.error.as_deref().unwrap_or("no details"));
            exit::FAILED
        }
    }
}

async fn save_outputs(station: &Station, job: &JobRow, out: &Path) -> u8 {
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return exit::FAILED;
    }
    let short = &job.id[job.id.len() - 8..];
    for (i, id) in job.output_ids().iter().enumerate() {
        match station.media.get(id, None).await {
            Ok((row, bytes)) => {
                let ext = station_core::media::extension_for_mime(&row.mime);
                let path = out.join(format!("{}-{short}-{}.{ext}", job.tool_id, i + 1));
                if let Err(e) = std::fs::write(&path, bytes) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return exit::FAILED;
                }
                println!("{}", path.display());
            }
            Err(e) => {
                eprintln!("error: output {id}: {e}");
                return exit::FAILED;
            }
        }
    }
    exit::OK
}

async fn jobs(station: &Station, c: JobsCommand) -> u8 {
    match c {
        JobsCommand::List { status, tool, limit, json } => {
            let status = match status.as_deref().map(JobStatus::parse) {
                Some(None) => {
                    eprintln!(
                        "error: --status must be one of queued, dispatched, running, succeeded, failed, cancelled"
                    );
                    return exit::USAGE;
                }
                Some(s) => s,
                None => None,
            };
            let f = JobFilter { status, tool_id: tool, limit, ..Default::default() };
            match station.jobs(&f).await {
                Ok(rows) if json => {
                    println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
                    exit::OK
                }
                Ok(rows) => {
                    println!("{:<36}  {:<10}  {:<16}  {:>5}  CREATED", "ID", "STATUS", "TOOL", "DONE");
                    for r in rows {
                        println!(
                            "{:<36}  {:<10}  {:<16}  {:>4}%  {}",
                            r.id,
                            r.status,
                            r.tool_id,
                            (r.progress * 100.0).round(),
                            fmt_time(r.created_at)
                        );
                    }
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::UNAVAILABLE
                }
            }
        }
        JobsCommand::Show { id, json } => match station.job_view(&id).await {
            Ok(Some(v)) if json => {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                exit::OK
            }
            Ok(Some(v)) => {
                let r = &v.row;
                println!(
                    "job       {}\ntool      {}\nstatus    {} ({})\nprogress  {:.0}%",
                    r.id,
                    r.tool_id,
                    r.status,
                    v.status_text(),
                    r.progress * 100.0
                );
                if let Some(p) = v.queue_position {
                    println!("position  {p} ahead");
                }
                if let Some(n) = v.backend_ahead() {
                    println!("on GPU    waiting, {n} ahead on its backend");
                }
                if let Some(eta) = v.eta_ms {
                    println!("eta       ~{} s", (eta + 999) / 1000);
                }
                println!("attempts  {}/{}", r.attempts, r.max_attempts);
                if let Some(b) = &r.backend {
                    println!("backend   {b}");
                }
                println!("params    {}", r.params);
                println!("created   {}", fmt_time(r.created_at));
                if let Some(f) = r.finished_at {
                    println!("finished  {}", fmt_time(f));
                }
                if let Some(e) = &r.error {
                    println!("error     {e}");
                }
                for o in r.output_ids() {
                    println!("output    media:{o}");
                }
                exit::OK
            }
            Ok(None) => {
                eprintln!("error: no job {id}");
                exit::USAGE
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::UNAVAILABLE
            }
        },
        JobsCommand::Cancel { id } => {
            let admin = match station.account("local", "operator", "operator").await {
                Ok(mut a) => {
                    a.role = station_core::Role::Admin; // the local operator owns the data folder
                    a
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::UNAVAILABLE;
                }
            };
            match station.cancel(&admin, &id).await {
                Ok(Some(r)) if r.status() == JobStatus::Cancelled => {
                    println!("cancelled {id}");
                    exit::OK
                }
                Ok(Some(r)) if r.status().is_terminal() => {
                    eprintln!("job {id} already {}", r.status);
                    exit::FAILED
                }
                Ok(Some(_)) => {
                    println!("cancellation requested; the worker running {id} interrupts it on its backend");
                    exit::OK
                }
                Ok(None) => {
                    eprintln!("error: no job {id}");
                    exit::USAGE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::UNAVAILABLE
                }
            }
        }
    }
}

fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn tools(station: &Station, c: ToolsCommand, errors: &[station_core::tools::ToolLoadError]) -> u8 {
    match c {
        ToolsCommand::List { json } => {
            let list = station.tools.list();
            if json {
                println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
            } else {
                println!("{:<18} {:<14} {:<9} {:<16} {:>6}  NAME", "ID", "COMMAND", "SERVICE", "CATEGORY", "COST");
                for t in &list {
                    println!(
                        "{:<18} /{:<13} {:<9} {:<16} {:>6}  {}",
                        t.id,
                        t.command,
                        station_core::service_name(t.service),
                        serde_json::to_value(t.category)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        t.cost.estimate(),
                        t.name
                    );
                }
            }
            for e in errors {
                eprintln!("not loaded: {e}");
            }
            if errors.is_empty() { exit::OK } else { exit::FAILED }
        }
        ToolsCommand::Show { id } => {
            let Some(t) = station.tools.get(&id).or_else(|| station.tools.by_command(&id)) else {
                eprintln!("error: no tool {id:?}");
                return exit::USAGE;
            };
            println!(
                "{} ({}) — {}\ncommand /{}  service {}  cost {}\nsource  {}\ninputs:",
                t.name,
                t.id,
                t.description,
                t.command,
                station_core::service_name(t.service),
                t.cost.estimate(),
                t.source.display()
            );
            for (name, i) in &t.inputs {
                let mut extra = vec![];
                if i.required {
                    extra.push("required".to_string());
                }
                if i.primary {
                    extra.push("primary".into());
                }
                if let Some(d) = &i.default {
                    extra.push(format!("default {d}"));
                }
                if let (Some(a), Some(b)) = (i.min, i.max) {
                    extra.push(format!("{a}..{b}"));
                }
                if !i.choices().is_empty() {
                    extra.push(format!("one of {}", i.choices().join("|")));
                }
                println!("  {name:<16} {:<10} {}  {}", i.kind.as_str(), extra.join(", "), i.description);
            }
            exit::OK
        }
        ToolsCommand::Check { .. } => unreachable!("handled before opening Station"),
    }
}

fn tools_check(dir: PathBuf, options: station_core::tools::LoadOptions) -> u8 {
    if !dir.is_dir() {
        eprintln!("error: {} is not a folder", dir.display());
        return exit::USAGE;
    }
    let (tools, errors) = station_core::tools::check_dir_with(&dir, options);
    for t in &tools {
        println!("ok      {} ({})", t.id, t.source.display());
    }
    for e in &errors {
        println!("error   {e}");
    }
    println!("{} tool(s) valid, {} error(s)", tools.len(), errors.len());
    if errors.is_empty() { exit::OK } else { exit::FAILED }
}

async fn backends(station: &Station, c: BackendsCommand) -> u8 {
    wire::backends_command(station, c).await
}

async fn migrate(station: &Station, status_only: bool) -> u8 {
    // Station::open already applied pending migrations; report what is there.
    match station.migration_status().await {
        Ok(list) => {
            for (v, d, applied) in list {
                println!("{v:>4}  {}  {d}", if applied { "applied" } else { "pending" });
            }
            if !status_only {
                println!("database is up to date");
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::UNAVAILABLE
        }
    }
}

#[allow(dead_code)]
fn _assert_send(s: Arc<Station>) -> impl Send {
    s
}
