//! `station alerts`: the alert rules with their current state, and a test
//! message to every sink (see `station_core::alerts`).

use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use station_core::Station;
use station_core::alerts::{AlertsError, words_ms, words_time};

use crate::exit;

/// `station alerts …`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Every rule with its threshold and what fires now, the sinks, and the
    /// newest messages.
    List {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Send a test message to every sink now and say which received it.
    Test,
}

/// Lets this process send alert messages to the chat sinks whose bots are
/// configured (`[telegram]`, `[discord]`). An unreadable section is an error.
pub fn register_senders(station: &Station) -> Result<(), String> {
    let telegram = station_telegram::TelegramConfig::from_config(&station.config).map_err(|e| e.to_string())?;
    if let Some(token) = telegram.token.as_deref().filter(|t| !t.is_empty()) {
        station.register_alert_sender(
            "telegram",
            Arc::new(station_telegram::TelegramAlerts::new(&telegram.api_url, token)),
        );
    }
    let discord = station_discord::DiscordConfig::from_config(&station.config).map_err(|e| e.to_string())?;
    if let Some(token) = discord.token.as_deref().filter(|t| !t.is_empty()) {
        station
            .register_alert_sender("discord", Arc::new(station_discord::DiscordAlerts::new(&discord.api_url, token)?));
    }
    Ok(())
}

/// Runs `station alerts …` and returns the exit code.
pub async fn run(station: &Station, c: AlertsCommand) -> u8 {
    if let Err(e) = register_senders(station) {
        eprintln!("error: {e}");
        return exit::USAGE;
    }
    match c {
        AlertsCommand::List { json } => list(station, json).await,
        AlertsCommand::Test => test(station).await,
    }
}

fn refused(e: AlertsError) -> u8 {
    match e {
        AlertsError::Invalid(errors) => {
            for e in errors {
                eprintln!("error: {}: {}", e.field, e.reason);
            }
            exit::USAGE
        }
        AlertsError::Storage(e) => {
            eprintln!("error: {e}");
            exit::UNAVAILABLE
        }
    }
}

/// A sink's target as printed: a webhook's scheme and host only (its path
/// and query often carry a secret), a chat or channel id as it is.
fn shown(kind: &str, target: &str) -> String {
    if kind != station_core::alerts::WEBHOOK {
        return target.to_string();
    }
    match reqwest::Url::parse(target) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "(not a URL)".into(),
    }
}

async fn list(station: &Station, json: bool) -> u8 {
    let overview = match station.alerts_overview(10).await {
        Ok(o) => o,
        Err(e) => return refused(e),
    };
    if json {
        println!("{}", serde_json::to_string(&overview).unwrap_or_default());
        return exit::OK;
    }
    let now = station_core::now_ms();
    if overview.rules.is_empty() {
        println!("No alert rules; add [[alerts.rules]] to station.toml (`station config init` shows examples).");
    }
    for r in &overview.rules {
        let firing = r.states.iter().filter(|s| s.state == "firing").count();
        println!("{:<24} {}  ({})", r.rule.name, if firing > 0 { "FIRING" } else { "ok" }, r.threshold);
        for s in &r.states {
            let subject = if s.subject.is_empty() { "-" } else { &s.subject };
            match s.state.as_str() {
                "firing" => println!(
                    "    {subject}: firing since {} ({}), {}",
                    words_time(s.since),
                    words_ms(now - s.since),
                    s.value
                ),
                "pending" => println!("    {subject}: holds since {}, not long enough yet", words_time(s.since)),
                _ => println!(
                    "    {subject}: resolved at {} after {}",
                    words_time(s.resolved_at.unwrap_or(s.updated_at)),
                    words_ms(s.resolved_at.unwrap_or(s.updated_at) - s.since)
                ),
            }
        }
    }
    if overview.sinks.is_empty() {
        println!("No sinks: alerts go nowhere; add [[alerts.sinks]] (telegram, discord or webhook).");
    } else {
        println!("Sinks:");
        for s in &overview.sinks {
            println!("    {:<20} {} {}", s.name, s.kind, shown(&s.kind, &s.target));
        }
    }
    if !overview.recent.is_empty() {
        println!("Recent messages:");
        for m in &overview.recent {
            let what = if m.kind == "test" { "test".to_string() } else { format!("{} {}", m.kind, m.rule) };
            let subject = if m.subject.is_empty() { String::new() } else { format!(" ({})", m.subject) };
            println!("    {}  {what}{subject} → {}: {}", words_time(m.created_at), m.sink, m.state);
        }
    }
    exit::OK
}

async fn test(station: &Station) -> u8 {
    let event = match station.enqueue_test_alert().await {
        Ok(e) => e,
        Err(e) => return refused(e),
    };
    // Send now; a running server may send some of them first, which is as good.
    let client = station_core::alerts::client(station);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let messages = loop {
        if let Err(e) = station.send_due_alerts(&client).await {
            eprintln!("error: {e}");
            return exit::UNAVAILABLE;
        }
        let messages = match station.alert_messages(&event).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::UNAVAILABLE;
            }
        };
        if messages.iter().all(|m| m.state != "pending") || tokio::time::Instant::now() >= deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut failed = 0;
    for m in &messages {
        match m.state.as_str() {
            "delivered" => println!("ok    {} ({} {})", m.sink, m.sink_kind, shown(&m.sink_kind, &m.target)),
            state => {
                failed += 1;
                let why = m.last_error.clone().unwrap_or_default();
                let retry = if state == "pending" { "; retried by `station serve`" } else { "" };
                println!("FAIL  {} ({} {}): {why}{retry}", m.sink, m.sink_kind, shown(&m.sink_kind, &m.target));
            }
        }
    }
    if failed == 0 {
        println!("a test message reached every sink ({})", messages.len());
        exit::OK
    } else {
        println!("{failed} of {} sinks did not receive the test message", messages.len());
        exit::FAILED
    }
}
