//! `station bench chat`: Telegram updates per second through the real
//! adapter, the flow engine and the database, and the time from an update
//! reaching the Bot API to the bot's reply being there.
//!
//! The in-repo fake Bot API (`station-telegram-fake`) answers at once with
//! its flood limits lifted, and the adapter's own pacing (which keeps a real
//! bot inside Telegram's 30 messages/s) is lifted too: what is measured is
//! Station's side — long polling, the durable inbox, per-chat ordering, the
//! flow engine, the durable outbox and the send. Every update is `/balance`
//! (no backend time counts). The load is open-loop: updates arrive at
//! `--rate` per second, spread over `--chats` private chats, whatever the
//! bot's pace; after the run every chat must hold exactly one reply per
//! update it sent (nothing lost, nothing handled twice).

use std::time::{Duration, Instant};

use clap::Args;
use station_core::{Config, Station};
use station_flows::{FlowSettings, Flows};
use station_telegram::{PaceLimits, TelegramBot, TelegramConfig, TelegramOptions};
use station_telegram_fake::{FakeChat, FakeConfig, FakeTelegram, FakeUser, RateLimits};

use crate::Outcome;

/// `station bench chat`.
#[derive(Debug, Args, Clone)]
pub struct ChatBenchArgs {
    /// Seconds updates are sent for.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Updates per second offered.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Private chats the updates are spread over (each one person).
    #[arg(long, default_value_t = 500)]
    pub chats: usize,
    /// Discord `/balance` interactions per second offered after the Telegram
    /// run (0: no Discord run); the deferral answer is timed.
    #[arg(long, default_value_t = 500)]
    pub discord_rate: u64,
    /// Database URL (default: a temporary SQLite file). Repeat for several;
    /// a PostgreSQL URL gets a throwaway schema, dropped afterwards.
    #[arg(long = "database-url")]
    pub database_urls: Vec<String>,
}

/// One database's figures.
#[derive(Debug, Clone)]
pub struct ChatResult {
    /// Which database.
    pub database: String,
    /// Updates sent.
    pub updates: usize,
    /// Replies per second from the first update to the last reply.
    pub per_s: f64,
    /// Update to reply, median.
    pub p50: Duration,
    /// Update to reply, 99th percentile.
    pub p99: Duration,
    /// Longest.
    pub max: Duration,
    /// Chats whose replies did not match their updates one for one.
    pub mismatched_chats: usize,
}

/// Runs `station bench chat`.
pub async fn run(args: ChatBenchArgs) -> Outcome {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; for real figures run `cargo run --release -p station -- bench chat`"
        );
    }
    let mut results = vec![];
    let mut discord = vec![];
    for url in &crate::database_urls(&args.database_urls) {
        match bench(&args, url.as_deref()).await {
            Ok(r) => {
                print!("{}", table(&args, std::slice::from_ref(&r)));
                results.push(r);
            }
            Err(e) => {
                eprintln!("error: chat benchmark failed: {e}");
                return Outcome::Failed;
            }
        }
        if args.discord_rate > 0 {
            match crate::discord::bench(&args, url.as_deref()).await {
                Ok(r) => discord.push(r),
                Err(e) => {
                    eprintln!("error: Discord benchmark failed: {e}");
                    return Outcome::Failed;
                }
            }
        }
    }
    if results.len() > 1 {
        print!("{}", table(&args, &results));
    }
    if !discord.is_empty() {
        print!("{}", discord_table(&args, &discord));
    }
    if results.iter().any(|r| r.mismatched_chats > 0) {
        eprintln!("error: some chats did not get exactly one reply per update");
        return Outcome::Failed;
    }
    if discord.iter().any(|r| r.refused > 0) {
        eprintln!("error: some Discord interactions were refused");
        return Outcome::Failed;
    }
    if discord.iter().any(|r| r.unanswered > 0) {
        // The adapter answers a chat through its latest interaction: an
        // earlier one still in flight keeps showing "thinking…".
        eprintln!(
            "note: some deferred Discord answers were never edited (a later interaction of the chat took the reply)"
        );
    }
    Outcome::Done
}

fn discord_table(args: &ChatBenchArgs, results: &[crate::discord::DiscordResult]) -> String {
    let mut out = format!(
        "\nDiscord /balance interactions, {} offered per second over {} DM channels for {} s; load average {}\n\n",
        args.discord_rate,
        args.chats,
        args.seconds,
        crate::load_average()
    );
    out += "| database | interactions | sent/s | deferral p50 ms | p99 ms | max ms | refused | left \"thinking…\" |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in results {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        out += &format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            r.database,
            r.interactions,
            r.offered_per_s,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.refused,
            r.unanswered
        );
    }
    out
}

fn table(args: &ChatBenchArgs, results: &[ChatResult]) -> String {
    let mut out = format!(
        "\nTelegram /balance updates, {} offered per second over {} chats for {} s; load average {}\n\n",
        args.rate,
        args.chats,
        args.seconds,
        crate::load_average()
    );
    out += "| database | updates | replies/s | p50 ms | p99 ms | max ms | chats out of step |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|\n";
    for r in results {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        out += &format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |\n",
            r.database,
            r.updates,
            r.per_s,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.mismatched_chats
        );
    }
    out
}

/// One database: a Station, flows and the bot over the fake; warm-up, then
/// the measured run.
pub async fn bench(args: &ChatBenchArgs, url: Option<&str>) -> Result<ChatResult, String> {
    let limits = RateLimits {
        chat_per_second: 1e9,
        chat_burst: 1e9,
        group_per_minute: usize::MAX / 2,
        global_per_second: usize::MAX / 2,
    };
    let tg = FakeTelegram::start_with(FakeConfig { limits, ..Default::default() }).await;
    let dir = std::env::temp_dir().join(format!("station-bench-chat-{}", uuid::Uuid::new_v4().simple()));
    let mut config = Config { data_dir: dir.clone(), ..Config::default() };
    config.limits.requests_per_minute = 0;
    TelegramConfig { token: Some(tg.token()), api_url: tg.api_url(), ..Default::default() }.apply_to(&mut config);
    std::fs::create_dir_all(config.tools_dir()).map_err(|e| e.to_string())?;
    let db = crate::BenchDb::open(url, "chat", &mut config).await?;
    let database = db.name.to_string();
    let (mut station, _) = Station::with_store(config, db.store.clone()).map_err(|e| e.to_string())?;
    station.join_processes().await.map_err(|e| e.to_string())?;
    let flows = Flows::with_settings(station.clone(), FlowSettings::from_config(&station.config));
    let flows_runner = flows.start();
    let options = TelegramOptions {
        pace: PaceLimits {
            chat_interval: Duration::ZERO,
            group_max: usize::MAX / 2,
            group_window: Duration::from_secs(60),
            global_per_second: u32::MAX / 2,
        },
        poll_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let telegram = TelegramConfig::from_config(&station.config).map_err(|e| e.to_string())?;
    let bot = TelegramBot::new(station.clone(), flows.clone(), &telegram, options).map_err(|e| e.to_string())?;
    let bot_runner = bot.start().await.map_err(|e| e.to_string())?;
    let result = measure(args, &tg, database).await;
    bot_runner.shutdown().await;
    flows_runner.shutdown().await;
    station.shutdown().await;
    db.remove().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(args: &ChatBenchArgs, tg: &FakeTelegram, database: String) -> Result<ChatResult, String> {
    let people: Vec<(FakeChat, FakeUser)> = (0..args.chats.max(1))
        .map(|i| {
            let user = FakeUser::new(1_000_000 + i as i64, &format!("Person {i}"));
            (FakeChat::private(&user), user)
        })
        .collect();
    // Warm-up: every account exists and every chat has been answered once.
    for (chat, user) in &people {
        tg.send_text(chat, user, "/balance");
    }
    wait_replies(tg, &people, &vec![1; people.len()], Duration::from_secs(120)).await?;
    // Open loop: a tick every 10 ms sends its share of the rate.
    let total = usize::try_from(args.rate.saturating_mul(args.seconds)).unwrap_or(usize::MAX);
    let per_tick = (args.rate as f64 / 100.0).max(1.0);
    let mut sent: Vec<Vec<Instant>> = vec![vec![]; people.len()];
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut n, mut due) = (0usize, 0.0f64);
    while n < total {
        tick.tick().await;
        due += per_tick;
        while (n as f64) < due && n < total {
            let i = n % people.len();
            let (chat, user) = &people[i];
            sent[i].push(Instant::now());
            tg.send_text(chat, user, "/balance");
            n += 1;
        }
    }
    let want: Vec<usize> = sent.iter().map(|s| s.len() + 1).collect();
    wait_replies(tg, &people, &want, Duration::from_secs(300)).await?;
    // A moment for anything sent twice to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = vec![];
    let mut mismatched = 0;
    let mut last = start;
    for (i, (chat, _)) in people.iter().enumerate() {
        let mut replies = tg.bot_messages(chat.id);
        replies.sort_by_key(|m| m.message_id);
        if replies.len() != want[i]
            || !replies.iter().all(|m| m.content.text.as_deref().is_some_and(|t| t.contains("point")))
        {
            mismatched += 1;
            continue;
        }
        // The k-th measured update of a chat is answered by its (k+1)-th reply.
        for (at, reply) in sent[i].iter().zip(&replies[1..]) {
            latencies.push(reply.sent_at.saturating_duration_since(*at));
            last = last.max(reply.sent_at);
        }
    }
    latencies.sort();
    let pick = |q: f64| crate::percentile(&latencies, q);
    Ok(ChatResult {
        database,
        updates: total,
        per_s: total as f64 / (last - start).as_secs_f64().max(1e-9),
        p50: pick(0.5),
        p99: pick(0.99),
        max: pick(1.0),
        mismatched_chats: mismatched,
    })
}

/// Waits until chat `i` holds `want[i]` bot messages, for every chat.
async fn wait_replies(
    tg: &FakeTelegram,
    people: &[(FakeChat, FakeUser)],
    want: &[usize],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let short: usize =
            people.iter().zip(want).map(|((c, _), w)| w.saturating_sub(tg.bot_message_count(c.id))).sum();
        if short == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{short} replies still missing after {} s", timeout.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `station bench chat` from a test binary, for comparing two builds
    /// without building the whole `station` binary twice:
    /// `STATION_BENCH_CHAT="--rate 2000 --seconds 3" cargo test -p station-bench --release chat_from_env -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a benchmark: run on demand"]
    async fn chat_from_env() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: ChatBenchArgs,
        }
        let line = std::env::var("STATION_BENCH_CHAT").unwrap_or_default();
        let cli = Cli::parse_from(std::iter::once("chat").chain(line.split_whitespace()));
        assert_eq!(run(cli.args).await, Outcome::Done);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_answers_every_update_once() {
        let args = ChatBenchArgs { seconds: 1, rate: 200, chats: 20, discord_rate: 100, database_urls: vec![] };
        let r = bench(&args, None).await.expect("bench");
        assert_eq!(r.updates, 200);
        assert_eq!(r.mismatched_chats, 0, "{r:?}");
        assert!(r.p50 <= r.p99 && r.p99 <= r.max, "{r:?}");
        assert!(table(&args, &[r]).contains("| SQLite | 200 |"));
        let d = crate::discord::bench(&args, None).await.expect("Discord bench");
        assert_eq!((d.interactions, d.refused), (100, 0), "{d:?}");
        assert!(d.p50 <= d.p99 && d.p99 <= d.max, "{d:?}");
    }
}
