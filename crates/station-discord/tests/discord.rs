//! The Discord adapter end to end: signed interactions from the fake Discord
//! to the real endpoint, the real flow engine, core, workers and the fake
//! ComfyUI, and everything the bot sends read back from the fake — on
//! SQLite and PostgreSQL.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use station_comfyui::{BackendSpec, ComfyExecutor};
use station_comfyui_fake::{FakeComfy, FakeOptions};
use station_core::{Config, Station, Workers};
use station_discord::{Discord, DiscordConfig, DiscordOptions, INTERACTIONS_PATH};
use station_discord_fake::{APP_ID, Actor, BOT_TOKEN, FakeDiscord, Message, Source};
use station_flows::{FlowSettings, Flows, FlowsRunner};
use station_media::image::{ImageFormat, Rgb, RgbImage};
use station_testkit::TestDb;

const WAIT: Duration = Duration::from_secs(30);
const GUILD: &str = "5000";
const CHANNEL: &str = "6000";

struct Env {
    station: Station,
    discord: Discord,
    fake: FakeDiscord,
    comfy_fake: FakeComfy,
    endpoint: String,
    actor: Actor,
    runner: Option<FlowsRunner>,
    workers: Option<Workers>,
    comfy: Arc<ComfyExecutor>,
    server: tokio::task::JoinHandle<()>,
    db: TestDb,
    _dir: tempfile::TempDir,
}

async fn setup(db: TestDb) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await;
    let mut config =
        Config { data_dir: dir.path().to_path_buf(), media_dir: Some(dir.path().join("media")), ..Default::default() };
    config.queue.lease_seconds = 2;
    config.queue.retry_base_ms = 50;
    config.queue.poll_ms = 50;
    config.points.starting_grant = 1000;
    DiscordConfig {
        token: Some(BOT_TOKEN.into()),
        application_id: Some(APP_ID.into()),
        public_key: Some(fake.public_key_hex()),
        api_url: fake.api_url(),
        guild_id: Some(GUILD.into()),
    }
    .apply_to(&mut config);
    let mut dream = station_testkit::dream_tool("dream");
    dream["description"] = json!("Dreams up a picture from your words. ".repeat(10));
    station_testkit::install_tools(&config.tools_dir(), &[dream]);
    let (station, errors) = Station::with_store(config, db.store.clone()).unwrap();
    assert!(errors.is_empty(), "tool files failed to load: {errors:?}");
    let comfy_fake = FakeComfy::start(FakeOptions {
        checkpoints: vec!["v1-5-pruned-emaonly.safetensors".into()],
        ..Default::default()
    })
    .await;
    let spec = BackendSpec { name: "b0".into(), url: comfy_fake.url(), max_concurrent: 2, tags: vec![] };
    let comfy = ComfyExecutor::new(vec![spec], "auto").unwrap();
    comfy.start_health_checks(Duration::from_millis(200), station.wake.clone()).await;
    station.register_executor(comfy.clone());
    station.register_executor(Arc::new(station_core::MediaExecutor::new(&station.config)));
    let workers = Some(Workers::start(&station));
    let flows = Flows::with_settings(station.clone(), FlowSettings { progress_every_ms: 50, ..Default::default() });
    let discord_config = DiscordConfig::from_config(&station.config).unwrap();
    let options = DiscordOptions::from_config(&discord_config).unwrap().expect("configured");
    let discord = Discord::new(station.clone(), flows.clone(), options).unwrap();
    flows.add_platform(Arc::new(discord.clone()));
    let runner = Some(flows.start());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}{INTERACTIONS_PATH}", listener.local_addr().unwrap());
    let router = discord.router();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let actor = Actor::member("7001", "ada", GUILD, CHANNEL);
    Env { station, discord, fake, comfy_fake, endpoint, actor, runner, workers, comfy, server, db, _dir: dir }
}

impl Env {
    async fn stop(mut self) {
        if let Some(r) = self.runner.take() {
            r.shutdown().await;
        }
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
        self.comfy.shutdown();
        self.server.abort();
    }

    async fn send(&self, interaction: Value) -> station_discord_fake::Sent {
        let sent = self.fake.send(&self.endpoint, interaction).await;
        assert_eq!(sent.status, 200, "endpoint answered {}: {}", sent.status, sent.body);
        assert!(sent.elapsed < Duration::from_secs(3), "answered within Discord's 3 s: {:?}", sent.elapsed);
        sent
    }

    async fn slash(&self, name: &str, options: Value) -> station_discord_fake::Sent {
        self.send(self.fake.slash(&self.actor, name, options, &[])).await
    }

    /// Presses the button whose label contains `label` on `msg`.
    async fn press(&self, msg: &Message, label: &str) -> station_discord_fake::Sent {
        let id = custom_id(msg, label);
        self.send(self.fake.component(&self.actor, &msg.id, &id, None)).await
    }

    /// Bot messages in the test channel matching `f`, waiting for at least `n`.
    async fn wait_n(&self, n: usize, what: &str, f: impl Fn(&Message) -> bool) -> Vec<Message> {
        self.fake
            .wait_for(WAIT, what, |all| {
                let found: Vec<Message> = all
                    .iter()
                    .filter(|m| m.channel_id == CHANNEL && m.source != Source::User && f(m))
                    .cloned()
                    .collect();
                (found.len() >= n).then_some(found)
            })
            .await
    }

    async fn results(&self, n: usize) -> Vec<Message> {
        self.wait_n(n, &format!("{n} result(s)"), is_result).await
    }
}

fn is_result(m: &Message) -> bool {
    !m.files.is_empty() && m.buttons().iter().any(|(_, l)| l.contains("Rerun"))
}

fn custom_id(msg: &Message, label: &str) -> String {
    msg.buttons()
        .into_iter()
        .find(|(_, l)| l.contains(label))
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("no button {label:?} on {:?}: {:?}", msg.text(), msg.buttons()))
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 40) as u8, (y * 40) as u8, 100]));
    let mut buf = vec![];
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png).unwrap();
    buf
}

fn dims(bytes: &[u8]) -> (u32, u32) {
    let i = station_media::probe(bytes).unwrap();
    (i.width, i.height)
}

async fn bad_signatures_are_refused_and_ping_is_answered(db: TestDb) {
    let env = setup(db).await;
    let body = serde_json::to_vec(&env.fake.ping()).unwrap();
    // A current timestamp: these requests are refused for their signatures alone.
    let now = now_secs().to_string();
    let ts = now.as_str();
    let forged = FakeDiscord::forge_signature(&body, ts);
    assert_eq!(env.fake.send_raw(&env.endpoint, body.clone(), &forged, ts).await.status, 401, "forged signature");
    assert_eq!(env.fake.send_raw(&env.endpoint, body.clone(), "zz", ts).await.status, 401, "malformed signature");
    assert_eq!(env.fake.send_raw(&env.endpoint, body.clone(), &"00".repeat(64), ts).await.status, 401);
    // A signed PING gets a PONG.
    let sent = env.fake.send(&env.endpoint, env.fake.ping()).await;
    assert_eq!(sent.status, 200);
    assert_eq!(sent.body, json!({"type": 1}));
    // A correctly signed body that was tampered with after signing is refused.
    let tampered = env.fake.slash(&env.actor, "balance", json!([]), &[]);
    let good_body = serde_json::to_vec(&tampered).unwrap();
    let sig = FakeDiscord::forge_signature(&good_body, ts);
    assert_eq!(env.fake.send_raw(&env.endpoint, good_body, &sig, ts).await.status, 401);
    env.stop().await;
}

async fn registration_fits_discords_limits_and_follows_tool_changes(db: TestDb) {
    let env = setup(db).await;
    let task = env.discord.keep_commands_registered();
    let first = env.fake.wait_for(WAIT, "registration", |_| env.fake.registrations().first().cloned()).await;
    assert_eq!(first.0.as_deref(), Some(GUILD), "guild-scoped when configured");
    let cmds = env.fake.guild_commands(GUILD);
    let by_name = |n: &str| cmds.iter().find(|c| c["name"] == n).cloned().unwrap_or_else(|| panic!("no /{n}"));
    for n in ["make", "settings", "status", "history", "balance", "link", "web", "cancel", "admin", "upscale"] {
        by_name(n);
    }
    assert_eq!(by_name("Use in Station…")["type"], 3, "message context-menu command");
    let dream = by_name("dream");
    assert!(dream["description"].as_str().unwrap().chars().count() <= 100, "description cut to 100");
    let opt = |c: &Value, n: &str| c["options"].as_array().unwrap().iter().find(|o| o["name"] == n).cloned().unwrap();
    assert_eq!(opt(&dream, "prompt")["type"], 3);
    assert_eq!(opt(&dream, "prompt")["required"], true);
    assert_eq!(opt(&dream, "steps")["type"], 4, "integers are integer options");
    assert!(opt(&dream, "steps")["max_value"].is_number(), "with min/max");
    let upscale = by_name("upscale");
    assert_eq!(opt(&upscale, "image")["type"], 11, "images are attachment options");
    assert!(opt(&upscale, "upscale_method")["choices"].as_array().is_some_and(|c| !c.is_empty() && c.len() <= 25));
    // A new tool with 30 choices and 30 inputs is registered within limits at the next change.
    let mut tool: Value =
        serde_json::from_str(&std::fs::read_to_string(env.station.config.tools_dir().join("dream.json")).unwrap())
            .unwrap();
    tool["id"] = json!("many-things");
    tool["command"] = json!("many_things");
    tool["inputs"]["sampler"] = json!({"type": "enum", "choices": (0..30).map(|i| format!("s{i}")).collect::<Vec<_>>(),
                                       "default": "s0", "description": "x".repeat(300)});
    for i in 0..30 {
        tool["inputs"][format!("extra{i}")] = json!({"type": "integer", "default": 64, "advanced": true});
        let node = format!("{}", 100 + i);
        tool["comfyui"]["workflow"][&node] = tool["comfyui"]["workflow"]["5"].clone();
        tool["comfyui"]["bindings"][format!("extra{i}")] = json!([format!("{node}.inputs.width")]);
    }
    std::fs::write(env.station.config.tools_dir().join("many.json"), tool.to_string()).unwrap();
    let errors = env.station.tools.reload();
    assert!(errors.is_empty(), "{errors:?}");
    let cmds = env
        .fake
        .wait_for(WAIT, "re-registration", |_| {
            let c = env.fake.guild_commands(GUILD);
            c.iter().any(|c| c["name"] == "many_things").then_some(c)
        })
        .await;
    let many = cmds.iter().find(|c| c["name"] == "many_things").unwrap();
    let opts = many["options"].as_array().unwrap();
    assert_eq!(opts.len(), 25, "at most 25 options");
    assert_eq!(opts[0]["name"], "prompt", "required first");
    let sampler = opts.iter().find(|o| o["name"] == "sampler").expect("non-advanced inputs kept");
    assert!(sampler.get("choices").is_none(), "more than 25 choices become free text");
    assert!(sampler["description"].as_str().unwrap().chars().count() <= 100);
    task.abort();
    env.stop().await;
}

async fn slash_command_defers_then_progress_and_result_then_rerun(db: TestDb) {
    let env = setup(db).await;
    env.comfy_fake.set_step_delay(150);
    let sent = env.slash("dream", json!([{"name": "prompt", "type": 3, "value": "a red fox in the snow"}])).await;
    assert_eq!(sent.body["type"], 5, "deferred at once: {}", sent.body);
    let cb = env.fake.callback(&sent.id).expect("callback recorded");
    assert!(cb.after < Duration::from_secs(3));
    // The deferred response becomes the progress message, edited in place.
    let progress = env
        .fake
        .wait_for(WAIT, "progress in the original", |_| {
            env.fake.original(&sent.id).filter(|m| !m.deferred && m.text().contains('%'))
        })
        .await;
    assert!(progress.text().contains("Dream") || progress.text().contains("dream"), "{}", progress.text());
    let result = env.results(1).await.remove(0);
    let original = env.fake.original(&sent.id).unwrap();
    assert!(original.edits >= 2, "progress edited several times: {}", original.edits);
    assert_eq!(result.files.len(), 1);
    assert_eq!(dims(&result.files[0].bytes), (64, 64));
    for label in ["Rerun", "Tweak", "Use as input", "Info", "Hide"] {
        custom_id(&result, label);
    }
    assert!(result.components.len() <= 5 && result.buttons().iter().all(|(id, _)| id.len() <= 100));
    // Rerun: a deferred update at once, then a second result.
    let pressed = env.press(&result, "Rerun").await;
    assert_eq!(pressed.body["type"], 6, "{}", pressed.body);
    env.results(2).await;
    assert!(env.fake.violations().is_empty(), "{:?}", env.fake.violations());
    env.stop().await;
}

async fn tweak_through_a_modal(db: TestDb) {
    let env = setup(db).await;
    env.slash("dream", json!([{"name": "prompt", "type": 3, "value": "a lighthouse"}])).await;
    let result = env.results(1).await.remove(0);
    env.press(&result, "Tweak").await;
    let options =
        env.wait_n(1, "tweak options", |m| m.buttons().iter().any(|(_, l)| l.contains("Change a setting"))).await;
    env.press(&options[0], "Change a setting").await;
    // Which setting: a select menu whose values are the engine's action tokens.
    let pick = env.wait_n(1, "setting choice", |m| !m.selects().is_empty()).await.remove(0);
    let (select_id, opts) = pick.selects().remove(0);
    let steps = opts.iter().find(|(l, _)| l.starts_with("steps")).expect("steps offered").1.clone();
    env.send(env.fake.component(&env.actor, &pick.id, &select_id, Some(vec![steps]))).await;
    // The number is asked through a modal opened by a button.
    let (msg, modal_button) = env
        .fake
        .wait_for(WAIT, "a modal button", |all| {
            all.iter().rev().find_map(|m| {
                m.buttons()
                    .into_iter()
                    .find(|(id, l)| id.starts_with("m:") && l.contains("steps"))
                    .map(|(id, _)| (m.clone(), id))
            })
        })
        .await;
    let opened = env.send(env.fake.component(&env.actor, &msg.id, &modal_button, None)).await;
    assert_eq!(opened.body["type"], 9, "a modal: {}", opened.body);
    assert!(env.fake.callback(&opened.id).is_some(), "the fake accepted the modal");
    let form_id = opened.body["data"]["custom_id"].as_str().unwrap().to_string();
    let field = opened.body["data"]["components"][0]["components"][0]["custom_id"].as_str().unwrap().to_string();
    let before = env.fake.channel_messages(CHANNEL).len();
    let submitted = env.send(env.fake.modal_submit(&env.actor, &form_id, &[(&field, "4")])).await;
    assert_eq!(submitted.body["type"], 6);
    let run = env
        .wait_n(1, "options after the tweak", |m| {
            m.text().contains("steps: 4") && m.buttons().iter().any(|(_, l)| l.contains("Run"))
        })
        .await;
    assert!(env.fake.channel_messages(CHANNEL).len() > before || run.iter().any(|m| m.edits > 0));
    env.press(run.last().unwrap(), "Run").await;
    env.results(2).await;
    let jobs = env.db.store.list_jobs(&station_core::JobFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert!(
        jobs.iter().any(|j| serde_json::from_str::<Value>(&j.params).unwrap()["steps"] == 4),
        "the tweaked job ran with steps=4"
    );
    env.stop().await;
}

async fn image_tool_with_an_attachment_option(db: TestDb) {
    let env = setup(db).await;
    let att = env.fake.upload("photo.png", "image/png", png(4, 3));
    let options =
        json!([{"name": "image", "type": 11, "value": att["id"]}, {"name": "scale_by", "type": 10, "value": 2}]);
    let sent = env.send(env.fake.slash(&env.actor, "upscale", options, std::slice::from_ref(&att))).await;
    assert_eq!(sent.body["type"], 5);
    let result = env.results(1).await.remove(0);
    assert_eq!(dims(&result.files[0].bytes), (8, 6), "upscaled 2×");
    // Not an image: refused with a clear note, nothing submitted.
    let junk = env.fake.upload("notes.png", "image/png", b"definitely not a png".to_vec());
    let options = json!([{"name": "image", "type": 11, "value": junk["id"]}]);
    let sent = env.send(env.fake.slash(&env.actor, "upscale", options, std::slice::from_ref(&junk))).await;
    let note = env
        .fake
        .wait_for(WAIT, "refusal", |_| env.fake.original(&sent.id).filter(|m| m.text().contains("not an image")))
        .await;
    assert!(note.text().contains("notes.png"), "{}", note.text());
    // "Use in Station…" on a message with an image offers the image tools.
    let photo = env.fake.upload("cat.png", "image/png", png(5, 3));
    let msg = env.fake.user_message(&env.actor, "look", vec![photo]);
    let sent = env.send(env.fake.message_command(&env.actor, "Use in Station…", &msg)).await;
    assert_eq!(sent.body["type"], 5);
    let choice = env
        .fake
        .wait_for(WAIT, "a tool choice", |_| env.fake.original(&sent.id).filter(|m| !m.selects().is_empty()))
        .await;
    let (select_id, options) = choice.selects().remove(0);
    assert!(options.iter().all(|(l, _)| l != "Dream"), "only tools that take an image: {options:?}");
    let flip = options.iter().find(|(l, _)| l.contains("Flip")).unwrap_or_else(|| panic!("Flip offered: {options:?}"));
    env.send(env.fake.component(&env.actor, &choice.id, &select_id, Some(vec![flip.1.clone()]))).await;
    let options = env
        .wait_n(1, "Flip's options", |m| {
            m.text().contains("Flip") && m.buttons().iter().any(|(_, l)| l.contains("Run"))
        })
        .await;
    env.press(&options[0], "Run").await;
    let results = env.results(2).await;
    assert_eq!(dims(&results[1].files[0].bytes), (5, 3), "the flipped picture");
    env.stop().await;
}

async fn settings_change_through_a_modal(db: TestDb) {
    let env = setup(db).await;
    env.slash("settings", json!([{"name": "tool", "type": 3, "value": "dream"}])).await;
    // One modal holds the typed settings with their current values: a
    // change is two interactions (open it, send it), on the same card.
    let card = env
        .wait_n(1, "settings card", |m| {
            m.buttons().iter().any(|(id, l)| id.starts_with("m:") && l.contains("Settings"))
        })
        .await
        .remove(0);
    assert!(card.ephemeral(), "settings are the asker's own");
    assert!(!card.buttons().iter().any(|(_, l)| l == "Change width"), "{:?}", card.buttons());
    let (button, _) = card.buttons().into_iter().find(|(id, _)| id.starts_with("m:")).unwrap();
    let opened = env.send(env.fake.component(&env.actor, &card.id, &button, None)).await;
    assert_eq!(opened.body["type"], 9);
    let form = opened.body["data"]["custom_id"].as_str().unwrap().to_string();
    let fields: Vec<Value> =
        opened.body["data"]["components"].as_array().unwrap().iter().map(|r| r["components"][0].clone()).collect();
    let width = fields.iter().find(|f| f["label"] == "width").expect("width in the modal");
    assert_eq!(width["value"], "64", "the current value: {width}");
    let field = width["custom_id"].as_str().unwrap().to_string();
    // The adapter checks numbers before the engine sees them.
    let refused = env.send(env.fake.modal_submit_on(&env.actor, &card.id, &form, &[(&field, "abc")])).await;
    assert_eq!(refused.body["type"], 4);
    assert_eq!(refused.body["data"]["flags"], 64, "ephemeral");
    assert!(refused.body["data"]["content"].as_str().unwrap().contains("not a number"));
    // Every field comes back; only the changed one becomes yours.
    let all: Vec<(String, String)> = fields
        .iter()
        .map(|f| {
            let id = f["custom_id"].as_str().unwrap().to_string();
            let v =
                if f["label"] == "width" { "96".to_string() } else { f["value"].as_str().unwrap_or("").to_string() };
            (id, v)
        })
        .collect();
    let pairs: Vec<(&str, &str)> = all.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    env.send(env.fake.modal_submit_on(&env.actor, &card.id, &form, &pairs)).await;
    let edited = env
        .fake
        .wait_for(WAIT, "the card with the new width", |_| {
            env.fake.message(&card.id).filter(|m| m.text().contains("96 (yours)"))
        })
        .await;
    assert_eq!(edited.text().matches("(yours)").count(), 1, "{}", edited.text());
    env.stop().await;
}

async fn rate_limits_are_honoured(db: TestDb) {
    let env = setup(db).await;
    // The next edit of an interaction response gets a 429 for its route; a later one a global 429.
    env.fake.force_429("/messages/@original", 1, 0.6, false);
    env.fake.force_429("/webhooks/", 1, 0.4, true);
    env.slash("dream", json!([{"name": "prompt", "type": 3, "value": "a fox"}])).await;
    env.results(1).await;
    assert!(env.fake.violations().is_empty(), "requests during a limit: {:?}", env.fake.violations());
    let reqs = env.fake.requests();
    let limited: Vec<_> = reqs.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "the fake did limit");
    for l in &limited {
        let next = reqs.iter().find(|r| r.at > l.at && r.bucket == l.bucket).expect("retried");
        assert!(next.at - l.at >= Duration::from_millis(350), "waited out retry_after: {:?}", next.at - l.at);
    }
    // Bucket exhaustion announced by headers is waited out too.
    env.fake.set_bucket_limit(2, Duration::from_millis(700));
    let started = Instant::now();
    env.slash("dream", json!([{"name": "prompt", "type": 3, "value": "an owl"}])).await;
    env.results(2).await;
    assert!(env.fake.violations().is_empty(), "{:?}", env.fake.violations());
    assert!(started.elapsed() < WAIT);
    env.stop().await;
}

async fn expired_token_falls_back_to_channel_messages(db: TestDb) {
    let env = setup(db).await;
    env.comfy_fake.set_step_delay(300);
    let sent = env.slash("dream", json!([{"name": "prompt", "type": 3, "value": "a slow fox"}])).await;
    env.fake.wait_for(WAIT, "first progress", |_| env.fake.original(&sent.id).filter(|m| !m.deferred)).await;
    env.fake.expire_tokens();
    let result = env.results(1).await.remove(0);
    assert_eq!(result.source, Source::Channel, "the result went to the channel once the token expired");
    assert!(!result.ephemeral());
    let reqs = env.fake.requests();
    assert!(reqs.iter().any(|r| r.status == 401 && r.path.contains("/webhooks/")), "the token was refused");
    // Missing permissions: the post fails, and the next interaction there gets a clear ephemeral note.
    env.fake.deny_channel(CHANNEL);
    env.press(&result, "Rerun").await;
    env.fake.expire_tokens();
    env.fake
        .wait_for(WAIT, "a refused channel post", |_| env.fake.requests().iter().any(|r| r.status == 403).then_some(()))
        .await;
    let sent = env.slash("balance", json!([])).await;
    let note = env
        .fake
        .wait_for(WAIT, "permission note", |all| {
            all.iter().find(|m| m.ephemeral() && m.text().contains("missing permissions")).cloned()
        })
        .await;
    assert_eq!(note.interaction_token.as_deref(), Some(sent.token.as_str()));
    env.stop().await;
}

async fn server_admins_switch_tools_off(db: TestDb) {
    let env = setup(db).await;
    let admin = env.actor.clone().admin();
    let off = json!([{"name": "disable-tool", "type": 1, "options": [{"name": "tool", "type": 3, "value": "dream"}]}]);
    // Members without Manage Server are refused.
    let refused = env.send(env.fake.slash(&env.actor, "admin", off.clone(), &[])).await;
    assert!(refused.body["data"]["content"].as_str().unwrap().contains("Manage Server"), "{}", refused.body);
    let done = env.send(env.fake.slash(&admin, "admin", off, &[])).await;
    assert!(done.body["data"]["content"].as_str().unwrap().contains("off"), "{}", done.body);
    // Kept as the server's group switch in the core.
    let scope = station_discord::guild_scope(GUILD);
    let switches = env.station.group_tools(&scope).await.unwrap();
    assert_eq!(switches.iter().map(|s| (s.tool_id.as_str(), s.enabled)).collect::<Vec<_>>(), vec![("dream", false)]);
    assert!(!env.station.group_tool_enabled(&scope, "dream").await.unwrap());
    let blocked = env.slash("dream", json!([{"name": "prompt", "type": 3, "value": "x"}])).await;
    assert_eq!(blocked.body["type"], 4);
    assert_eq!(blocked.body["data"]["flags"], 64);
    // Another server is unaffected.
    let elsewhere = Actor::member("7001", "ada", "5999", "6999");
    let ok =
        env.send(env.fake.slash(&elsewhere, "dream", json!([{"name": "prompt", "type": 3, "value": "x"}]), &[])).await;
    assert_eq!(ok.body["type"], 5);
    let on = json!([{"name": "enable-tool", "type": 1, "options": [{"name": "tool", "type": 3, "value": "/dream"}]}]);
    env.send(env.fake.slash(&admin, "admin", on, &[])).await;
    assert_eq!(env.slash("dream", json!([{"name": "prompt", "type": 3, "value": "x"}])).await.body["type"], 5);
    env.stop().await;
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Issue 17, item 7: a correctly signed request whose timestamp is more than
/// five minutes from now (a replay of a captured request) is refused.
async fn stale_or_future_timestamps_are_refused(db: TestDb) {
    let env = setup(db).await;
    let body = serde_json::to_vec(&env.fake.ping()).unwrap();
    for skew in [-301, 301, -3600, 86_400] {
        let ts = (now_secs() + skew).to_string();
        let sig = env.fake.sign(&body, &ts);
        let sent = env.fake.send_raw(&env.endpoint, body.clone(), &sig, &ts).await;
        assert_eq!(sent.status, 401, "timestamp {skew} s from now: {}", sent.body);
    }
    for ts in ["", "soon", "1e9"] {
        let sig = env.fake.sign(&body, ts);
        assert_eq!(env.fake.send_raw(&env.endpoint, body.clone(), &sig, ts).await.status, 401, "{ts:?}");
    }
    // Within the window, the same request signed the same way is answered.
    let ts = (now_secs() - 60).to_string();
    let sig = env.fake.sign(&body, &ts);
    let sent = env.fake.send_raw(&env.endpoint, body, &sig, &ts).await;
    assert_eq!((sent.status, sent.body), (200, json!({"type": 1})));
    env.stop().await;
}

/// Issue 17, item 7: `/admin disable-tool` replayed (the same interaction,
/// signature and timestamp, after the tool was switched back on) changes
/// nothing: it goes through the same once-only input keys as the flows.
async fn a_replayed_admin_switch_changes_nothing(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let admin = env.actor.clone().admin();
    let scope = station_discord::guild_scope(GUILD);
    let off = json!([{"name": "disable-tool", "type": 1, "options": [{"name": "tool", "type": 3, "value": "dream"}]}]);
    let on = json!([{"name": "enable-tool", "type": 1, "options": [{"name": "tool", "type": 3, "value": "dream"}]}]);
    let first = env.send(env.fake.slash(&admin, "admin", off, &[])).await;
    assert!(!env.station.group_tool_enabled(&scope, "dream").await.unwrap(), "[{k}]");
    env.send(env.fake.slash(&admin, "admin", on, &[])).await;
    assert!(env.station.group_tool_enabled(&scope, "dream").await.unwrap(), "[{k}]");
    let again = env.fake.replay(&env.endpoint, &first.id).await;
    assert_eq!(again.status, 200, "[{k}] {}", again.body);
    assert!(again.body["data"]["content"].as_str().unwrap().contains("handled already"), "[{k}] {}", again.body);
    assert!(env.station.group_tool_enabled(&scope, "dream").await.unwrap(), "[{k}] the replay switched dream off");
    env.stop().await;
}

/// Issue 17, item 1: `/web` and `/link` answer with an ephemeral message
/// (flag 64) only the asker sees — in a server channel and in a DM — and no
/// message others can read carries the sign-in link or the link code.
async fn sign_in_secrets_are_ephemeral(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let dm = Actor::dm("7002", "bob", "6100");
    for actor in [env.actor.clone(), dm] {
        let where_ = if actor.guild_id.is_some() { "server" } else { "DM" };
        let web = env.send(env.fake.slash(&actor, "web", json!([]), &[])).await;
        assert_eq!(web.body, json!({"type": 5, "data": {"flags": 64}}), "[{k}] {where_}: deferred ephemerally");
        let link = env
            .fake
            .wait_for(WAIT, "the sign-in link", |all| {
                all.iter()
                    .find(|m| {
                        m.channel_id == actor.channel_id && m.buttons().iter().any(|(u, _)| u.contains("login?token="))
                    })
                    .cloned()
            })
            .await;
        assert!(link.ephemeral(), "[{k}] {where_}: the sign-in link is ephemeral: {link:?}");
        assert_eq!(link.interaction_token.as_deref(), Some(web.token.as_str()), "[{k}] {where_}");
        let token = link.buttons().into_iter().find_map(|(u, _)| u.split("token=").nth(1).map(str::to_owned)).unwrap();
        let code_sent = env.send(env.fake.slash(&actor, "link", json!([]), &[])).await;
        assert_eq!(code_sent.body["data"]["flags"], 64, "[{k}] {where_}");
        let code_msg = env
            .fake
            .wait_for(WAIT, "the link code", |all| {
                all.iter().find(|m| m.channel_id == actor.channel_id && m.text().contains("Your link code")).cloned()
            })
            .await;
        assert!(code_msg.ephemeral(), "[{k}] {where_}: the link code is ephemeral: {code_msg:?}");
        let code = code_msg
            .text()
            .split("code: ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .trim_matches('`')
            .to_string();
        assert!(code.len() >= 6, "[{k}] {code}");
        for m in env.fake.channel_messages(&actor.channel_id).iter().filter(|m| !m.ephemeral()) {
            let seen = format!("{} {:?} {:?}", m.text(), m.buttons(), m.history);
            assert!(
                !seen.contains(&token) && !seen.contains(&code),
                "[{k}] {where_}: a public message shows a secret: {seen}"
            );
        }
    }
    env.stop().await;
}

/// Issue 21, item 1: in a server channel, what concerns only the asker —
/// /status, /balance, /help, /history, /settings, a refusal — is ephemeral
/// (deferred with flag 64, answered by a message only they see); a tool's
/// progress and result are public. In a DM nothing needs the flag.
async fn personal_answers_are_ephemeral_in_a_server(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    for (name, needle) in
        [("status", "Balance:"), ("balance", "You have"), ("help", "Commands"), ("history", "No results yet")]
    {
        let sent = env.slash(name, json!([])).await;
        assert_eq!(sent.body, json!({"type": 5, "data": {"flags": 64}}), "[{k}] /{name} deferred ephemerally");
        let msg = env
            .fake
            .wait_for(WAIT, needle, |all| {
                all.iter()
                    .find(|m| m.channel_id == CHANNEL && m.interaction_token.as_deref() == Some(sent.token.as_str()))
                    .filter(|m| m.text().contains(needle))
                    .cloned()
            })
            .await;
        assert!(msg.ephemeral(), "[{k}] /{name} answered ephemerally: {msg:?}");
    }
    let help = env.fake.channel_messages(CHANNEL).into_iter().find(|m| m.text().contains("Commands")).unwrap();
    assert!(!help.text().contains("/start"), "[{k}] no /start on Discord: {}", help.text());
    assert!(!help.text().contains("caption") && !help.text().contains("name=value"), "[{k}] {}", help.text());
    // A refused run: the refusal is for the asker; the public "thinking…" goes away.
    let refused = env.slash("dream", json!([{"type": 3, "name": "prompt", "value": "x".repeat(3000)}])).await;
    assert_eq!(refused.body, json!({"type": 5}), "[{k}] a tool command is deferred publicly");
    let note = env
        .fake
        .wait_for(WAIT, "the refusal", |all| {
            all.iter().find(|m| m.channel_id == CHANNEL && m.text().contains("too long")).cloned()
        })
        .await;
    assert!(note.ephemeral(), "[{k}] the refusal is ephemeral: {note:?}");
    // A run: progress and result are public.
    env.slash("dream", json!([{"type": 3, "name": "prompt", "value": "a red fox"}])).await;
    let result = env.results(1).await.remove(0);
    assert!(!result.ephemeral(), "[{k}] the result is public");
    // In a DM the same command is an ordinary deferral.
    let dm = Actor::dm("7009", "dee", "6900");
    let sent = env.send(env.fake.slash(&dm, "status", json!([]), &[])).await;
    assert_eq!(sent.body, json!({"type": 5}), "[{k}] in a DM nothing needs to be ephemeral");
    env.stop().await;
}

/// Issue 21, item 5: `/make`'s tool option is autocompleted: an
/// autocomplete interaction (type 4) is answered with choices (type 8) of
/// the tools matching what was typed, at most 25.
async fn make_tool_option_is_autocompleted(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let registered = env.discord.command_payload();
    let make = registered.iter().find(|c| c["name"] == "make").unwrap();
    assert_eq!(make["options"][0]["autocomplete"], true, "[{k}] {make}");
    let ask = |typed: &str| {
        let mut v = env.fake.slash(
            &env.actor,
            "make",
            json!([{"type": 3, "name": "tool", "value": typed, "focused": true}]),
            &[],
        );
        v["type"] = json!(4);
        v
    };
    let sent = env.send(ask("dre")).await;
    assert_eq!(sent.body["type"], 8, "[{k}] {}", sent.body);
    let choices = sent.body["data"]["choices"].as_array().unwrap().clone();
    assert!(choices.iter().any(|c| c["value"] == "dream"), "[{k}] {choices:?}");
    assert!(choices.iter().all(|c| c["value"] != "sdxl"), "[{k}] no hidden tool: {choices:?}");
    let all = env.send(ask("")).await;
    let n = all.body["data"]["choices"].as_array().unwrap().len();
    assert!(n > 1 && n <= 25, "[{k}] {n} choices");
    let none = env.send(ask("zzzz")).await;
    assert_eq!(none.body["data"]["choices"], json!([]), "[{k}]");
    env.stop().await;
}

/// Issue 21, items 3 and 6: a result lands under its own command — it takes
/// the place of its progress message (the deferred response of /dream), even
/// when another command came in between — and a finished job leaves one
/// message.
async fn a_result_lands_under_its_own_command(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    env.comfy_fake.set_step_delay(300);
    let dream = env.slash("dream", json!([{"name": "prompt", "type": 3, "value": "a patient heron"}])).await;
    env.fake.wait_for(WAIT, "first progress", |_| env.fake.original(&dream.id).filter(|m| !m.deferred)).await;
    let help = env.slash("help", json!([])).await;
    env.comfy_fake.set_step_delay(0);
    let result = env.results(1).await.remove(0);
    assert_eq!(result.interaction_token.as_deref(), Some(dream.token.as_str()), "[{k}] under /dream, not /help");
    assert_ne!(result.interaction_token.as_deref(), Some(help.token.as_str()), "[{k}]");
    let original = env.fake.original(&dream.id).expect("the deferred response");
    assert_eq!(original.id, result.id, "[{k}] the progress message became the result");
    let public: Vec<Message> =
        env.fake.channel_messages(CHANNEL).into_iter().filter(|m| m.source != Source::User && !m.ephemeral()).collect();
    assert_eq!(public.len(), 1, "[{k}] one public message for the job: {public:#?}");
    env.stop().await;
}

/// Issue 20: a tool's `model` option is autocompleted from the models the
/// backends offer now (label and base model shown, the file name sent), and
/// filtered by what was typed.
async fn model_option_is_autocompleted_from_the_backends(db: TestDb) {
    let env = setup(db).await;
    let k = env.db.kind;
    let txt2img = env.station.tools.get("txt2img").unwrap();
    let options = station_discord::commands::tool_options(&txt2img);
    let model = options.iter().find(|o| o["name"] == "model").unwrap_or_else(|| panic!("[{k}] {options:?}"));
    assert_eq!((model["type"].clone(), model["autocomplete"].clone()), (json!(3), json!(true)), "[{k}] {model}");
    assert!(model.get("choices").is_none(), "[{k}] no fixed list: {model}");

    env.comfy_fake.set_models("checkpoints", &["dreamshaper_8_sd15.safetensors", "tiny_xl.safetensors"]);
    let def = txt2img.model_input().unwrap().1.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.station.model_choices(&def).len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "[{k}] the models were never stored");
        env.comfy.check_all().await;
        env.station.reload_models().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let command = txt2img.command.clone();
    let ask = |typed: &str| {
        let mut v = env.fake.slash(
            &env.actor,
            &command,
            json!([{"type": 3, "name": "prompt", "value": "a fox"}, {"type": 3, "name": "model", "value": typed, "focused": true}]),
            &[],
        );
        v["type"] = json!(4);
        v
    };
    let all = env.send(ask("")).await;
    assert_eq!(all.body["type"], 8, "[{k}] {}", all.body);
    let choices = all.body["data"]["choices"].as_array().unwrap().clone();
    let values: Vec<&str> = choices.iter().map(|c| c["value"].as_str().unwrap()).collect();
    assert_eq!(values.len(), 2, "[{k}] {choices:?}");
    assert!(
        values.contains(&"tiny_xl.safetensors") && values.contains(&"dreamshaper_8_sd15.safetensors"),
        "[{k}] {choices:?}"
    );
    let xl = choices.iter().find(|c| c["value"] == "tiny_xl.safetensors").unwrap();
    assert!(xl["name"].as_str().unwrap().ends_with("(SDXL)"), "[{k}] label with base model: {xl}");
    let typed = env.send(ask("xl")).await;
    assert_eq!(typed.body["data"]["choices"].as_array().unwrap().len(), 1, "[{k}] {}", typed.body);
    env.stop().await;
}

/// Components change their own message (issue 21, items 2 and 4): the
/// `/make` card is one message — a select menu of up to 25 tools, the
/// prompt asked on it, its settings changed through one modal holding the
/// current values — edited by every press (a deferred update, then its
/// `@original`), and Run turns it into the job's progress and result.
async fn components_change_their_own_card(db: TestDb) {
    let env = setup(db).await;
    let sent = env.slash("make", json!([])).await;
    let card = env
        .fake
        .wait_for(WAIT, "the tool picker", |_| env.fake.original(&sent.id).filter(|m| !m.selects().is_empty()))
        .await;
    let (select_id, tools) = card.selects().remove(0);
    assert!(tools.len() > 8 && tools.len() <= 25, "one select menu holds more than a page of buttons: {tools:?}");
    assert!(!card.text().contains("type its name"), "{}", card.text());
    let dream = tools.iter().find(|(l, _)| l == "Dream").expect("Dream offered").1.clone();
    let chose = env.send(env.fake.component(&env.actor, &card.id, &select_id, Some(vec![dream]))).await;
    assert_eq!(chose.body["type"], 6, "a deferred update: {}", chose.body);
    let asked = env
        .fake
        .wait_for(WAIT, "the prompt asked on the card", |_| {
            env.fake.message(&card.id).filter(|m| m.buttons().iter().any(|(id, _)| id.starts_with("m:")))
        })
        .await;
    let (modal_button, _) = asked.buttons().into_iter().find(|(id, _)| id.starts_with("m:")).unwrap();
    let opened = env.send(env.fake.component(&env.actor, &card.id, &modal_button, None)).await;
    assert_eq!(opened.body["type"], 9, "{}", opened.body);
    let form = opened.body["data"]["custom_id"].as_str().unwrap().to_string();
    let field = opened.body["data"]["components"][0]["components"][0]["custom_id"].as_str().unwrap().to_string();
    env.send(env.fake.modal_submit_on(&env.actor, &card.id, &form, &[(&field, "a red fox")])).await;
    let options = env
        .fake
        .wait_for(WAIT, "the options on the card", |_| {
            env.fake.message(&card.id).filter(|m| m.buttons().iter().any(|(_, l)| l.contains("Run")))
        })
        .await;
    assert!(options.text().contains("a red fox"), "{}", options.text());
    // One modal holds the typed settings with their current values.
    let (settings_button, _) = options
        .buttons()
        .into_iter()
        .find(|(id, l)| id.starts_with("m:") && l.contains("Settings"))
        .expect("✏️ Settings");
    let opened = env.send(env.fake.component(&env.actor, &card.id, &settings_button, None)).await;
    assert_eq!(opened.body["type"], 9, "the modal opens at once: {}", opened.body);
    let rows = opened.body["data"]["components"].as_array().unwrap().clone();
    let steps = rows
        .iter()
        .map(|r| r["components"][0].clone())
        .find(|c| c["label"] == "steps")
        .unwrap_or_else(|| panic!("steps in the modal: {rows:?}"));
    assert!(steps["value"].as_str().is_some_and(|v| !v.is_empty()), "prefilled with the current value: {steps}");
    let form = opened.body["data"]["custom_id"].as_str().unwrap().to_string();
    let steps_id = steps["custom_id"].as_str().unwrap().to_string();
    env.send(env.fake.modal_submit_on(&env.actor, &card.id, &form, &[(&steps_id, "4")])).await;
    env.fake
        .wait_for(WAIT, "steps 4 on the card", |_| env.fake.message(&card.id).filter(|m| m.text().contains("steps: 4")))
        .await;
    let now = env.fake.message(&card.id).unwrap();
    env.press(&now, "Run").await;
    let result = env.results(1).await.remove(0);
    assert_eq!(result.id, card.id, "the card became the result");
    let public: Vec<Message> = env.fake.channel_messages(CHANNEL).into_iter().filter(|m| !m.ephemeral()).collect();
    assert_eq!(
        public.len(),
        1,
        "one message for the whole walk: {:?}",
        public.iter().map(Message::text).collect::<Vec<_>>()
    );
    assert!(result.edits >= 5, "edited in place at every step: {}", result.edits);
    let jobs = env.db.store.list_jobs(&station_core::JobFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&jobs[0].params).unwrap()["steps"], 4);
    assert!(env.fake.violations().is_empty(), "{:?}", env.fake.violations());
    env.stop().await;
}

use station_testkit::on_every_db;

on_every_db!(
    components_change_their_own_card,
    a_result_lands_under_its_own_command,
    personal_answers_are_ephemeral_in_a_server,
    make_tool_option_is_autocompleted,
    model_option_is_autocompleted_from_the_backends,
    sign_in_secrets_are_ephemeral,
    stale_or_future_timestamps_are_refused,
    a_replayed_admin_switch_changes_nothing,
    bad_signatures_are_refused_and_ping_is_answered,
    registration_fits_discords_limits_and_follows_tool_changes,
    slash_command_defers_then_progress_and_result_then_rerun,
    tweak_through_a_modal,
    image_tool_with_an_attachment_option,
    settings_change_through_a_modal,
    rate_limits_are_honoured,
    expired_token_falls_back_to_channel_messages,
    server_admins_switch_tools_off,
);
