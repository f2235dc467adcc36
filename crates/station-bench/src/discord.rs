//! The Discord half of `station bench chat`: signed `/balance` interactions
//! POSTed by the in-repo fake Discord to the real interactions endpoint
//! (served as `station serve` serves it), open-loop at `--discord-rate` per
//! second. What is timed is the deferral answer — the HTTP response Discord
//! must have within 3 seconds — while the flows run behind it and edit each
//! deferred answer into the reply through the fake's REST API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use station_core::{Config, Station};
use station_discord::{Discord, DiscordConfig, DiscordOptions, INTERACTIONS_PATH};
use station_discord_fake::{APP_ID, Actor, BOT_TOKEN, FakeDiscord};
use station_flows::{FlowSettings, Flows};

use crate::chat::ChatBenchArgs;

/// One database's Discord figures.
#[derive(Debug, Clone)]
pub struct DiscordResult {
    /// Which database.
    pub database: String,
    /// Interactions sent in the measured run.
    pub interactions: usize,
    /// Interactions per second actually offered (the sender's own pace).
    pub offered_per_s: f64,
    /// Deferral answer, median.
    pub p50: Duration,
    /// Deferral answer, 99th percentile.
    pub p99: Duration,
    /// Longest.
    pub max: Duration,
    /// Answers that were not a 200 deferral (or no answer: the connection
    /// was refused or reset).
    pub refused: usize,
    /// Deferred answers never edited into a reply (the adapter answers a
    /// chat through its latest interaction, so an earlier one still in
    /// flight keeps showing "thinking…").
    pub unanswered: usize,
}

/// One database: a Station, the flows and the Discord endpoint over the fake.
pub async fn bench(args: &ChatBenchArgs, url: Option<&str>) -> Result<DiscordResult, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = Arc::new(FakeDiscord::start().await);
    // The fake's per-route REST limits are lifted: the bot's side is measured.
    fake.set_bucket_limit(u32::MAX / 2, Duration::from_secs(1));
    let dir = std::env::temp_dir().join(format!("station-bench-discord-{}", uuid::Uuid::new_v4().simple()));
    let mut config = Config { data_dir: dir.clone(), ..Config::default() };
    config.limits.requests_per_minute = 0;
    DiscordConfig {
        token: Some(BOT_TOKEN.into()),
        application_id: Some(APP_ID.into()),
        public_key: Some(fake.public_key_hex()),
        api_url: fake.api_url(),
        guild_id: None,
    }
    .apply_to(&mut config);
    std::fs::create_dir_all(config.tools_dir()).map_err(|e| e.to_string())?;
    let db = crate::BenchDb::open(url, "discord", &mut config).await?;
    let database = db.name.to_string();
    let (mut station, _) = Station::with_store(config, db.store.clone()).map_err(|e| e.to_string())?;
    station.join_processes().await.map_err(|e| e.to_string())?;
    let flows = Flows::with_settings(station.clone(), FlowSettings::from_config(&station.config));
    let discord_config = DiscordConfig::from_config(&station.config).map_err(|e| e.to_string())?;
    let options =
        DiscordOptions::from_config(&discord_config).map_err(|e| e.to_string())?.ok_or("Discord is not configured")?;
    let discord = Discord::new(station.clone(), flows.clone(), options).map_err(|e| e.to_string())?;
    flows.add_platform(Arc::new(discord.clone()));
    let runner = flows.start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let endpoint = format!("http://{}{INTERACTIONS_PATH}", listener.local_addr().map_err(|e| e.to_string())?);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(station_http::serve(listener, station.clone(), discord.router(), {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    let result = measure(args, &fake, &endpoint, database).await;
    stop.cancel();
    let _ = server.await;
    runner.shutdown().await;
    station.shutdown().await;
    db.remove().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(
    args: &ChatBenchArgs,
    fake: &Arc<FakeDiscord>,
    endpoint: &str,
    database: String,
) -> Result<DiscordResult, String> {
    // Each person in a DM channel of their own.
    let actors: Vec<Actor> = (0..args.chats.max(1))
        .map(|i| Actor::dm(&(2_000_000 + i).to_string(), &format!("person{i}"), &(3_000_000 + i).to_string()))
        .collect();
    // Warm-up: every account exists and has been answered once.
    let mut ids = vec![];
    for chunk in actors.chunks(50) {
        let sends = chunk.iter().map(|a| fake.send(endpoint, fake.slash(a, "balance", serde_json::json!([]), &[])));
        ids.extend(futures::future::join_all(sends).await.into_iter().map(|s| s.id));
    }
    wait_answered(fake, &ids, Duration::from_secs(120))
        .await
        .map_err(|n| format!("{n} warm-up interactions never answered"))?;
    // Open loop: a tick every 10 ms starts its share of the rate, each
    // interaction on its own task (a slow answer never delays the next send).
    let total = usize::try_from(args.discord_rate.saturating_mul(args.seconds)).unwrap_or(usize::MAX);
    let per_tick = (args.discord_rate as f64 / 100.0).max(1.0);
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut n, mut due) = (0usize, 0.0f64);
    let start = Instant::now();
    while n < total {
        tick.tick().await;
        due += per_tick;
        while (n as f64) < due && n < total {
            let (fake, endpoint) = (fake.clone(), endpoint.to_string());
            let interaction = fake.slash(&actors[n % actors.len()], "balance", serde_json::json!([]), &[]);
            tasks.spawn(async move { fake.send(&endpoint, interaction).await });
            n += 1;
        }
    }
    let offered = total as f64 / start.elapsed().as_secs_f64().max(1e-9);
    let mut latencies = vec![];
    let mut refused = 0;
    let mut ids = vec![];
    while let Some(sent) = tasks.join_next().await {
        // The fake panics when the endpoint cannot be reached (a connection
        // refused or reset under load): counted as refused.
        let Ok(sent) = sent else {
            refused += 1;
            continue;
        };
        if sent.status != 200 || sent.body["type"] != 5 {
            refused += 1;
        }
        latencies.push(sent.elapsed);
        ids.push(sent.id);
    }
    let unanswered = match wait_answered(fake, &ids, Duration::from_secs(300)).await {
        Ok(()) => 0,
        Err(left) => left,
    };
    latencies.sort();
    let pick = |q: f64| crate::percentile(&latencies, q);
    Ok(DiscordResult {
        database,
        interactions: total,
        offered_per_s: offered,
        p50: pick(0.5),
        p99: pick(0.99),
        max: pick(1.0),
        refused,
        unanswered,
    })
}

/// Waits until every interaction's deferred answer was edited into a reply;
/// `Err(n)` with how many were not by `timeout`.
async fn wait_answered(fake: &FakeDiscord, ids: &[String], timeout: Duration) -> Result<(), usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = ids.iter().filter(|id| fake.original(id).is_none_or(|m| m.deferred)).count();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
