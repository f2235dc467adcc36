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

pub(crate) mod alerts;
pub(crate) mod audit;
mod chat;
pub(crate) mod collections;
pub(crate) mod cook;
mod doctor;
pub(crate) mod flags;
pub(crate) mod keys;
pub(crate) mod loras;
pub(crate) mod media;
pub(crate) mod models;
pub(crate) mod points;
pub(crate) mod spells;
pub(crate) mod stats;
pub mod training;
pub(crate) mod users;
pub(crate) mod wallets;
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
        station_comfydeploy::ComfyDeployConfig::section(),
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
        Command::Media(c) => media::run(&config, c).await,
        Command::Bench(args) => match station_bench::run(args).await {
            station_bench::Outcome::Done => exit::OK,
            station_bench::Outcome::BadUsage => exit::USAGE,
            station_bench::Outcome::Failed => exit::FAILED,
            station_bench::Outcome::Unavailable => exit::UNAVAILABLE,
        },
        command => {
            // The doctor reports an unreachable media store as one of its
            // findings instead of refusing to start.
            let opened = if matches!(command, Command::Doctor) {
                Station::open_without_media_check(config).await
            } else {
                Station::open(config).await
            };
            let (station, tool_errors) = match opened {
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
                Command::Datasets(c) => training::datasets(&station, c).await,
                Command::Train(a) => training::train(&station, a).await,
                Command::Trainings(c) => training::trainings(&station, c).await,
                Command::Points(c) => points::run(&station, c).await,
                Command::Spells(c) => spells::run(&station, c).await,
                Command::Users(c) => users::run(&station, c).await,
                Command::Keys(c) => keys::run(&station, c).await,
                Command::Collections(c) => collections::run(&station, c).await,
                Command::Wallets(c) => wallets::run(&station, c).await,
                Command::Deposits(c) => wallets::deposits(&station, c).await,
                Command::Audit(a) => audit::run(&station, a).await,
                Command::Flags(c) => flags::run(&station, c).await,
                Command::Alerts(c) => alerts::run(&station, c).await,
                Command::Stats(a) => stats::run(&station, a).await,
                Command::Doctor => {
                    let problems: Vec<String> = tool_errors.iter().map(ToString::to_string).collect();
                    doctor::run(&station, &problems).await
                }
                Command::Config(_) | Command::Bench(_) | Command::Media(_) => unreachable!("handled above"),
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
    // Colours only for a person at a terminal, never in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
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
            // Each variable once: the backends' shorthand is also a key.
            for (key, env) in config.env_names() {
                if env == "STATION_COMFYUI_BACKENDS" {
                    println!("{env:<44} {key}: comma-separated URLs, or a JSON array of tables");
                } else {
                    println!("{env:<44} {key}");
                }
            }
            println!("{:<44} path of the configuration file (as --config)", "STATION_CONFIG");
            println!("{:<44} log filter, e.g. info or station_core=debug (overrides -v)", "RUST_LOG");
            println!("{:<44} the local user `station run` and `station chat` act as (as --user)", "USER");
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
    let background = wire::register_executors(&station, true).await;
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
    // Alerts: chat sinks are sent through the configured bots' clients.
    if let Err(e) = alerts::register_senders(&station) {
        eprintln!("error: {e}");
        return exit::USAGE;
    }
    if let Err(e) = station.check_alerts() {
        eprintln!("error: {e}");
        return exit::USAGE;
    }
    let alerting = station_core::alerts::start(&station);
    // Usage figures of each day that is over are rolled up for fast reports.
    let rollups = station_core::stats::start_rollups(&station);
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
    if tokio::time::timeout_at(deadline, alerting.shutdown()).await.is_err() {
        warn!("alert messages were still being sent at the shutdown grace; they are sent at the next start");
    }
    rollups.shutdown().await;
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

/// What answers on the configured address.
pub(crate) enum ServerOnAddress {
    /// Nothing, or not a Station: this process runs the job itself.
    Nobody,
    /// A Station serving this command's database: it runs the job.
    Same,
    /// A Station serving another database (its data folder when it says).
    Other(Option<String>),
}

/// Asks `/healthz` on the configured address which database the server
/// there serves, and compares it with this command's.
pub(crate) async fn server_on_address(station: &Station) -> ServerOnAddress {
    let url = format!("http://{}/healthz", station.config.listen);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build() else {
        return ServerOnAddress::Nobody;
    };
    let Ok(r) = client.get(url).send().await else { return ServerOnAddress::Nobody };
    if !r.status().is_success() {
        return ServerOnAddress::Nobody;
    }
    let body: Value = r.json().await.unwrap_or(Value::Null);
    match body["database"].as_str() {
        None => ServerOnAddress::Nobody,
        Some(fp) if fp == station.database_fingerprint() => ServerOnAddress::Same,
        Some(_) => ServerOnAddress::Other(body["data_dir"].as_str().map(str::to_string)),
    }
}

pub(crate) fn local_user(args_user: Option<String>) -> String {
    args_user.or_else(|| std::env::var("USER").ok()).filter(|u| !u.is_empty()).unwrap_or_else(|| "operator".into())
}

/// Refuses to work next to a server on other data (exit 2): its jobs would
/// wait in a database nobody serves.
pub(crate) fn other_server(station: &Station, theirs: Option<&str>) -> u8 {
    eprintln!(
        "error: a Station server answers on {} but uses another database{}; this command uses {}. \
         Run it with the server's configuration (--config, or STATION_DATA_DIR / STATION_DATABASE_URL), \
         or stop that server (or give this one another `listen` address) to run jobs here.",
        station.config.listen,
        theirs.map(|d| format!(" (data folder {d})")).unwrap_or_default(),
        own_data_dir(station),
    );
    exit::USAGE
}

/// This command's data folder, absolute when it exists.
fn own_data_dir(station: &Station) -> String {
    let dir = &station.config.data_dir;
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()).display().to_string()
}

/// Asks "y/N" on the terminal; false when stdin is not one.
pub(crate) fn confirm_on_terminal(question: &str) -> bool {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
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
        let known: Vec<String> = station.listed_tools_for(&account).iter().map(|t| t.id.clone()).collect();
        eprintln!("error: unknown tool {:?}; available: {}", args.tool, known.join(", "));
        return exit::USAGE;
    };
    // Everything that can be refused is refused before anything is queued.
    if args.out.exists() && !args.out.is_dir() {
        eprintln!("error: --out {} is a file; give a folder to save the outputs in", args.out.display());
        return exit::USAGE;
    }
    let server = if args.no_wait { ServerOnAddress::Nobody } else { server_on_address(station).await };
    if let ServerOnAddress::Other(theirs) = &server {
        return other_server(station, theirs.as_deref());
    }
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
    let mut req = SubmitRequest {
        tool: tool.id.clone(),
        params,
        priority: 0,
        source: Some(serde_json::json!({"platform": "cli"})),
        ..Default::default()
    };
    // The price first, checked exactly as the submission will be.
    let quote = match station.quote(&account, &req).await {
        Ok(q) => q,
        Err(e) => return submit_refused(e),
    };
    eprintln!(
        "{}: {} point{} ({} available to {user})",
        tool.id,
        quote.price,
        if quote.price == 1 { "" } else { "s" },
        quote.available
    );
    if quote.needs_confirmation && !args.yes {
        let threshold = quote.threshold.unwrap_or_default();
        let question = format!("It costs more than your confirmation threshold of {threshold} points. Run it?");
        if !confirm_on_terminal(&question) {
            eprintln!(
                "not started: {} points is above the confirmation threshold of {threshold} (points.confirm_above); \
                 pass --yes to run it",
                quote.price
            );
            return exit::USAGE;
        }
    }
    req.confirmed = true;
    let mut interrupt = Interrupt::listen();
    let job = match station.submit(&account, req).await {
        Ok(j) => j,
        Err(e) => return submit_refused(e),
    };
    let short = station.short_job_id(&job.id).await.unwrap_or_else(|_| job.id.clone());
    if args.no_wait {
        println!("{}", job.id);
        eprintln!(
            "queued; follow it with `station jobs show {short}` and save its outputs with `station jobs get {short}`"
        );
        return exit::OK;
    }
    // Without a server, this process runs the job itself.
    let embedded = match server {
        ServerOnAddress::Same => None,
        _ => {
            let comfy_job = station_core::service_name(tool.service) == "comfyui";
            let background = wire::register_executors(station, comfy_job).await;
            Some((Workers::start(station), background))
        }
    };
    let code = follow(station, &job, &short, Some(&args.out), embedded.as_ref().map(|(w, _)| w), &mut interrupt).await;
    if let Some((workers, background)) = embedded {
        workers.shutdown().await;
        background.shutdown().await;
    }
    code
}

/// Ctrl-C, heard from the moment this is made: a signal arriving while
/// nobody awaits it (between two polls, or before following starts) is kept.
pub(crate) struct Interrupt {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    pub(crate) fn listen() -> Interrupt {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
            if let Err(e) = &signal {
                warn!(error = %e, "cannot listen for Ctrl-C");
            }
            Interrupt { signal: signal.ok() }
        }
        #[cfg(not(unix))]
        Interrupt {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        match &mut self.signal {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints why a request was not queued (exit 2).
fn submit_refused(e: SubmitError) -> u8 {
    match e {
        SubmitError::Invalid(errors) => {
            eprintln!("error: the job was not queued:");
            for e in errors {
                eprintln!("  --param {}: {}", e.field, e.reason);
            }
        }
        e => eprintln!("error: the job was not queued: {e}"),
    }
    exit::USAGE
}

/// Follows `job` to its end and saves its outputs. `embedded`: the workers
/// of this process, which run it (a Ctrl-C then cancels it and interrupts
/// its prompt on its backend); None when a server runs it.
pub(crate) async fn follow(
    station: &Station,
    job: &JobRow,
    short: &str,
    out: Option<&Path>,
    embedded: Option<&Workers>,
    interrupt: &mut Interrupt,
) -> u8 {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {percent:>3}% {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} {short}", job.tool_id));
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut events = station.bus.subscribe();
    // With a server running the job, its changes reach this process as bus
    // events only on PostgreSQL: poll the row often (one indexed read) so
    // the result shows as soon as in the web app. In-process, events lead.
    let mut poll = tokio::time::interval(Duration::from_millis(if embedded.is_some() { 1000 } else { 25 }));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let final_row = loop {
        let read_row = tokio::select! {
            _ = interrupt.recv() => {
                bar.abandon_with_message("interrupted");
                match embedded {
                    Some(workers) => cancel_on_interrupt(station, workers, job, short).await,
                    None => eprintln!(
                        "The job keeps running in the server. Follow it with `station jobs show {short}` \
                         and save its outputs with `station jobs get {short}`."
                    ),
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
    // This process's worker settles the points right after recording the
    // outcome; exiting now could cut that short, so settle here too (it
    // happens once, whoever comes first).
    if embedded.is_some()
        && let Err(e) = station.settle_job(&final_row.id, "cli").await
    {
        warn!(error = %e, "the job's points are settled at the next start");
    }
    match final_row.status() {
        JobStatus::Succeeded => {
            bar.set_position(1000);
            bar.finish_with_message("done");
            match out {
                Some(out) => save_outputs(station, &final_row, short, out).await,
                None => exit::OK,
            }
        }
        s => {
            bar.abandon_with_message(s.to_string());
            eprintln!("job {short} {}: {}", s, final_row.error.as_deref().unwrap_or("no details"));
            exit::FAILED
        }
    }
}

/// Ctrl-C on a job this process runs: cancel it (its points come back) and
/// let the worker interrupt its prompt on the backend before exiting.
async fn cancel_on_interrupt(station: &Station, workers: &Workers, job: &JobRow, short: &str) {
    let Ok(Some(owner)) = station.account_by_id(&job.account_id).await else {
        eprintln!("The job stays queued; cancel it with `station jobs cancel {short}`.");
        return;
    };
    if let Err(e) = station.cancel(&owner, &job.id).await {
        eprintln!("error: could not cancel the job: {e}; cancel it with `station jobs cancel {short}`.");
        return;
    }
    workers.cancel_local(&job.id);
    // The worker records the cancellation once the backend has stopped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match station.job(&job.id).await {
            Ok(Some(r)) if r.status().is_terminal() => {
                let _ = station.settle_job(&r.id, "cli").await;
                match r.status() {
                    JobStatus::Cancelled if r.remote_id.is_some() => {
                        eprintln!(
                            "Cancelled the job; its prompt on {} was interrupted.",
                            r.backend.as_deref().unwrap_or("the backend")
                        );
                    }
                    JobStatus::Cancelled => eprintln!("Cancelled the job before it started; its points are back."),
                    s => eprintln!("The job ended as {s} before the cancellation reached it."),
                }
                return;
            }
            Ok(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => {
                eprintln!(
                    "The job is marked cancelled; its backend is told to stop at the next start of Station \
                     (`station serve` or `station run`)."
                );
                return;
            }
        }
    }
}

/// Saves `job`'s outputs in `out` as `TOOL-SHORTID-N.EXT`, printing each path.
async fn save_outputs(station: &Station, job: &JobRow, short: &str, out: &Path) -> u8 {
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return exit::FAILED;
    }
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

/// A job as JSON with its JSON columns (params, outputs, source) as values.
fn job_json(v: &impl serde::Serialize) -> Value {
    let mut value = serde_json::to_value(v).unwrap_or(Value::Null);
    for key in ["params", "outputs", "source"] {
        if let Some(Value::String(text)) = value.get(key)
            && let Ok(parsed) = serde_json::from_str::<Value>(text)
        {
            value[key] = parsed;
        }
    }
    value
}

/// The job a typed id or prefix names, or the exit code after saying why.
async fn resolve_job(station: &Station, typed: &str) -> Result<String, u8> {
    match station.resolve_job_id(typed).await {
        Ok(id) => Ok(id),
        Err(station_core::JobIdError::Storage(e)) => {
            eprintln!("error: {e}");
            Err(exit::UNAVAILABLE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::USAGE)
        }
    }
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
                    let rows: Vec<Value> = rows.iter().map(job_json).collect();
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
        JobsCommand::Show { id, json } => {
            let id = match resolve_job(station, &id).await {
                Ok(id) => id,
                Err(code) => return code,
            };
            let (v, outputs) = match station.job_view(&id).await {
                Ok(Some(v)) => match station.job_outputs(&v.row).await {
                    Ok(o) => (v, o),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return exit::UNAVAILABLE;
                    }
                },
                Ok(None) => {
                    eprintln!("error: no job {id}");
                    return exit::USAGE;
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::UNAVAILABLE;
                }
            };
            let base = public_url(&station.config, &station.config.listen.to_string());
            let urls: Vec<String> = outputs.iter().map(|m| format!("{base}/api/v1/media/{}", m.id)).collect();
            if json {
                let mut value = job_json(&v);
                value["output_urls"] = serde_json::json!(urls);
                println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
                return exit::OK;
            }
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
            for (m, url) in outputs.iter().zip(&urls) {
                println!("output    {url}  ({}, {}×{}, {} bytes)", m.mime, m.width, m.height, m.size);
            }
            if !outputs.is_empty() {
                let short = station.short_job_id(&r.id).await.unwrap_or_else(|_| r.id.clone());
                println!("save them with `station jobs get {short}`");
            }
            exit::OK
        }
        JobsCommand::Get { id, out } => {
            let id = match resolve_job(station, &id).await {
                Ok(id) => id,
                Err(code) => return code,
            };
            let row = match station.job(&id).await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    eprintln!("error: no job {id}");
                    return exit::USAGE;
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::UNAVAILABLE;
                }
            };
            let short = station.short_job_id(&row.id).await.unwrap_or_else(|_| row.id.clone());
            match row.status() {
                JobStatus::Succeeded => {}
                s if s.is_terminal() => {
                    eprintln!("job {short} {s}: {}; it has no outputs", row.error.as_deref().unwrap_or("no details"));
                    return exit::FAILED;
                }
                s => {
                    eprintln!("error: job {short} is {s}; wait for it with `station jobs show {short}`");
                    return exit::USAGE;
                }
            }
            if out.exists() && !out.is_dir() {
                eprintln!("error: --out {} is a file; give a folder", out.display());
                return exit::USAGE;
            }
            save_outputs(station, &row, &short, &out).await
        }
        JobsCommand::Cancel { id } => {
            let id = match resolve_job(station, &id).await {
                Ok(id) => id,
                Err(code) => return code,
            };
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
            let before = station.job(&id).await.ok().flatten().map(|r| r.status());
            match station.cancel(&admin, &id).await {
                Ok(Some(r)) if r.status() == JobStatus::Cancelled && before == Some(JobStatus::Cancelled) => {
                    println!("job {id} was already cancelled");
                    exit::OK
                }
                Ok(Some(r)) if r.status() == JobStatus::Cancelled => {
                    println!("cancelled {id}");
                    exit::OK
                }
                Ok(Some(r)) if r.status().is_terminal() => {
                    eprintln!("error: job {id} already {}; there is nothing to cancel", r.status);
                    exit::USAGE
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
                let text = |v: serde_json::Result<Value>| {
                    v.ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                };
                let rows: Vec<[String; 7]> = list
                    .iter()
                    .map(|t| {
                        [
                            t.id.clone(),
                            format!("/{}", t.command),
                            station_core::service_name(t.service).to_string(),
                            text(serde_json::to_value(t.category)),
                            text(serde_json::to_value(t.visibility)),
                            t.cost.estimate().to_string(),
                            t.name.clone(),
                        ]
                    })
                    .collect();
                let header = ["ID", "COMMAND", "SERVICE", "CATEGORY", "VISIBILITY", "COST", "NAME"].map(String::from);
                let mut widths = [0usize; 7];
                for r in std::iter::once(&header).chain(&rows) {
                    for (w, cell) in widths.iter_mut().zip(r) {
                        *w = (*w).max(cell.chars().count());
                    }
                }
                for r in std::iter::once(&header).chain(&rows) {
                    let line: Vec<String> = r
                        .iter()
                        .zip(widths)
                        .enumerate()
                        .map(|(i, (cell, w))| match i {
                            5 => format!("{cell:>w$}"),
                            6 => cell.clone(),
                            _ => format!("{cell:<w$}"),
                        })
                        .collect();
                    println!("{}", line.join("  "));
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
