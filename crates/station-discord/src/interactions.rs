//! The HTTP interactions endpoint: signature check, immediate answers, and
//! the hand-off of input to the flow engine.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ed25519_dalek::Signature;
use serde_json::{Map, Value, json};
use station_core::AccountRow;
use station_flows::{Conversation, Input};

use crate::commands::{ADMIN, USE_IN_STATION};
use crate::render;
use crate::{Discord, INTERACTIONS_PATH, Session};

/// Administrator or Manage Server.
const ADMIN_BITS: u64 = 0x8 | 0x20;

pub(crate) fn router(d: Discord) -> Router {
    Router::new().route(INTERACTIONS_PATH, post(endpoint)).with_state(d)
}

/// How far a request's `X-Signature-Timestamp` may be from now: Discord's
/// docs ask endpoints to refuse older (replayed) requests.
pub(crate) const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;

/// Whether `ts` (Unix seconds) is within [`MAX_CLOCK_SKEW_SECS`] of now.
fn fresh(ts: &str) -> bool {
    let Ok(ts) = ts.trim().parse::<i64>() else { return false };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    now.checked_sub(ts).is_some_and(|skew| skew.abs() <= MAX_CLOCK_SKEW_SECS)
}

fn verify(d: &Discord, headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(sig_hex), Some(ts)) = (h("x-signature-ed25519"), h("x-signature-timestamp")) else { return false };
    if !fresh(ts) {
        tracing::warn!(timestamp = ts, "Discord interaction with a timestamp more than 5 minutes from now refused");
        return false;
    }
    let Ok(sig_bytes) = hex::decode(sig_hex) else { return false };
    let Ok(sig) = Signature::from_slice(&sig_bytes) else { return false };
    let mut msg = ts.as_bytes().to_vec();
    msg.extend_from_slice(body);
    d.inner.options.public_key.verify_strict(&msg, &sig).is_ok()
}

fn json_response(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn ephemeral(text: &str) -> Response {
    json_response(json!({"type": 4, "data": render::note(text, true)}))
}

async fn endpoint(State(d): State<Discord>, headers: HeaderMap, body: Bytes) -> Response {
    if !verify(&d, &headers, &body) {
        return (StatusCode::UNAUTHORIZED, "invalid request signature").into_response();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "interaction body is not JSON").into_response();
    };
    match v["type"].as_u64() {
        Some(1) => json_response(json!({"type": 1})),
        Some(2) => command(d, v).await,
        Some(3) => component(d, v).await,
        Some(4) => json_response(autocomplete(&d, &v)),
        Some(5) => modal_submit(d, v).await,
        other => (StatusCode::BAD_REQUEST, format!("unknown interaction type {other:?}")).into_response(),
    }
}

/// Answers an autocomplete interaction (type 4) with up to 25 choices
/// (type 8): for a `tool` option, the public tools whose name or command
/// contains what was typed — the registry can be larger than a fixed list.
fn autocomplete(d: &Discord, v: &Value) -> Value {
    let focused = v["data"]["options"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["focused"].as_bool().unwrap_or(false))
        .cloned()
        .unwrap_or(Value::Null);
    let mut choices = vec![];
    if focused["name"] == "tool" {
        let typed = focused["value"].as_str().unwrap_or("").trim().trim_start_matches('/').to_lowercase();
        for c in d.inner.flows.commands(None) {
            let Some(tool) = &c.tool else { continue };
            let hit =
                typed.is_empty() || tool.name.to_lowercase().contains(&typed) || c.name.to_lowercase().contains(&typed);
            if hit {
                let label = crate::commands::cut(&format!("{} · /{}", tool.name, c.name), 100, &c.name);
                choices.push(json!({"name": label, "value": c.name}));
            }
            if choices.len() == 25 {
                break;
            }
        }
    }
    if focused["name"] != "tool"
        && let Some(def) = model_option(d, v, focused["name"].as_str().unwrap_or(""))
    {
        let typed = focused["value"].as_str().unwrap_or("").trim().to_lowercase();
        for m in d.inner.station.model_choices(&def) {
            if !(typed.is_empty() || m.label.to_lowercase().contains(&typed) || m.name.to_lowercase().contains(&typed))
            {
                continue;
            }
            let label = match &m.base_model {
                Some(b) => format!("{} ({b})", m.label),
                None => m.label.clone(),
            };
            choices.push(json!({"name": crate::commands::cut(&label, 100, &m.name), "value": m.name}));
            if choices.len() == 25 {
                break;
            }
        }
    }
    json!({"type": 8, "data": {"choices": choices}})
}

/// The model input behind option `option` of the tool command the
/// autocomplete interaction `v` is for.
fn model_option(d: &Discord, v: &Value, option: &str) -> Option<station_core::tools::InputDef> {
    let command = v["data"]["name"].as_str()?;
    let tool = d.inner.station.tools.by_command(command)?;
    tool.inputs
        .iter()
        .find(|(name, def)| {
            def.kind == station_core::tools::InputType::Model
                && crate::commands::discord_name(name).as_deref() == Some(option)
        })
        .map(|(_, def)| def.clone())
}

/// Who and where an interaction comes from.
#[derive(Clone)]
struct Origin {
    id: String,
    token: String,
    user_id: String,
    username: String,
    channel: String,
    guild: Option<String>,
    permissions: u64,
    /// The message a component was on (button, select, or a form it opened).
    message: Option<String>,
}

impl Origin {
    fn of(v: &Value) -> Option<Origin> {
        let user = if v["member"]["user"].is_object() { &v["member"]["user"] } else { &v["user"] };
        let channel = v["channel_id"].as_str().or(v["channel"]["id"].as_str())?;
        Some(Origin {
            id: v["id"].as_str()?.to_string(),
            token: v["token"].as_str()?.to_string(),
            user_id: user["id"].as_str()?.to_string(),
            username: user["global_name"].as_str().or(user["username"].as_str()).unwrap_or("").to_string(),
            channel: channel.to_string(),
            guild: v["guild_id"].as_str().map(str::to_owned),
            permissions: v["member"]["permissions"].as_str().and_then(|p| p.parse().ok()).unwrap_or(0),
            message: v["message"]["id"].as_str().map(str::to_owned),
        })
    }

    /// One conversation per person per server channel; the DM channel itself in DMs.
    fn conversation(&self) -> Conversation {
        match &self.guild {
            Some(g) => Conversation {
                platform: "discord".into(),
                chat: format!("{}:{}", self.channel, self.user_id),
                group: Some(crate::guild_scope(g)),
            },
            None => Conversation::new("discord", &self.channel),
        }
    }
}

fn begin(d: &Discord, o: &Origin, original_free: bool, ephemeral: bool) {
    let mut s = d.inner.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let session = Session {
        token: o.token.clone(),
        started: Instant::now(),
        original_free,
        ephemeral,
        message: o.message.clone(),
    };
    s.begin(o.conversation().chat, o.id.clone(), session, d.inner.options.token_lifetime);
}

/// Runs `input` through the engine after the interaction was answered.
fn spawn_handle(
    d: Discord,
    o: Origin,
    input: impl Future<Output = Result<(AccountRow, Input), String>> + Send + 'static,
) {
    tokio::spawn(async move {
        let conv = o.conversation();
        let (account, input) = match input.await {
            Ok(x) => x,
            Err(msg) => {
                d.note(&o.id, &msg, false).await;
                return;
            }
        };
        // Interaction ids are unique: one delivered twice changes nothing twice.
        let key = format!("discord:{}", o.id);
        match d.inner.flows.handle_once(&key, &account, &conv, input).await {
            Ok(reply) => {
                if let Some(t) = reply.toast {
                    d.note(&o.id, &t, false).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "flow failed for a Discord interaction");
                d.note(&o.id, "Something went wrong on my side; please try again in a moment.", false).await;
            }
        }
        let denied = d.inner.denied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&o.channel);
        if denied {
            let told = d
                .note(
                    &o.id,
                    "I could not post in this channel earlier: I am missing permissions here. Ask a server admin to \
                     let me View Channel, Send Messages, Embed Links and Attach Files.",
                    true,
                )
                .await;
            if told {
                d.inner.denied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&o.channel);
            }
        }
    });
}

async fn account(d: &Discord, o: &Origin) -> Result<AccountRow, String> {
    d.inner
        .station
        .account("discord", &o.user_id, &o.username)
        .await
        .map_err(|e| format!("Your account could not be loaded ({e}); please try again."))
}

/// Downloads a Discord attachment and stores it as an input image (size-checked and decoded).
async fn store_attachment(d: &Discord, a: &AccountRow, att: &Value) -> Result<String, String> {
    let name = att["filename"].as_str().unwrap_or("attachment");
    let max = d.inner.station.config.media.max_bytes;
    if att["size"].as_u64().is_some_and(|s| s > max) {
        return Err(format!("{name} is larger than the {} MB this server accepts.", max / 1_000_000));
    }
    let url = att["url"].as_str().ok_or_else(|| format!("{name} has no download address."))?;
    let mut res = d
        .inner
        .fetch
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("{name} could not be downloaded ({e}); try again."))?;
    let mut bytes = vec![];
    while let Some(chunk) =
        res.chunk().await.map_err(|e| format!("{name} could not be downloaded ({e}); try again."))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > max {
            return Err(format!("{name} is larger than the {} MB this server accepts.", max / 1_000_000));
        }
    }
    let row = d
        .inner
        .station
        .media
        .put_image(bytes, Some(&a.id), None, "input")
        .await
        .map_err(|e| format!("{name} is not an image I can use: {e}"))?;
    Ok(row.id)
}

fn tool_for(d: &Discord, name: &str) -> Option<std::sync::Arc<station_core::tools::ToolDef>> {
    d.inner.flows.commands(None).into_iter().find(|c| c.name == name).and_then(|c| c.tool)
}

async fn tool_disabled(d: &Discord, guild: &Option<String>, tool_id: &str) -> bool {
    let Some(g) = guild else { return false };
    match d.inner.station.group_tool_enabled(&crate::guild_scope(g), tool_id).await {
        Ok(enabled) => !enabled,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the server's tool settings; allowing the tool");
            false
        }
    }
}

async fn command(d: Discord, v: Value) -> Response {
    let Some(o) = Origin::of(&v) else {
        return (StatusCode::BAD_REQUEST, "interaction lacks id, token, user or channel").into_response();
    };
    let data = v["data"].clone();
    let name = data["name"].as_str().unwrap_or("").to_string();
    if data["type"] == 3 && name == USE_IN_STATION {
        let target = data["target_id"].as_str().unwrap_or("");
        let attachments: Vec<Value> =
            data["resolved"]["messages"][target]["attachments"].as_array().cloned().unwrap_or_default();
        let images: Vec<Value> = attachments
            .into_iter()
            .filter(|a| a["content_type"].as_str().is_none_or(|t| t.starts_with("image/")))
            .take(10)
            .collect();
        if images.is_empty() {
            return ephemeral("That message has no image. Use this on a message with an image attached.");
        }
        begin(&d, &o, true, false);
        let dd = d.clone();
        let oo = o.clone();
        spawn_handle(d, o, async move {
            let a = account(&dd, &oo).await?;
            let mut media = vec![];
            for att in &images {
                media.push(store_attachment(&dd, &a, att).await?);
            }
            // `/make` with images offers the tools that take an image.
            Ok((a, Input::Command { name: "make".into(), text: String::new(), images: media, params: Map::new() }))
        });
        return json_response(json!({"type": 5}));
    }
    if name == ADMIN {
        return admin(&d, &o, &data).await;
    }
    let tool = tool_for(&d, &name);
    if let Some(t) = &tool
        && tool_disabled(&d, &o.guild, &t.id).await
    {
        return ephemeral(&format!("/{name} is switched off in this server by its admins."));
    }
    // Commands whose answer is for the asker alone (a secret, their balance,
    // settings, history, help) are deferred ephemerally: the answer then
    // replaces a message only the asker sees.
    // (In a DM everything is just a message; secrets are ephemeral everywhere.)
    let private =
        d.inner.flows.answers_privately(&name) || (o.guild.is_some() && d.inner.flows.answers_personally(&name));
    begin(&d, &o, true, private);
    let dd = d.clone();
    let oo = o.clone();
    spawn_handle(d, o, async move {
        let a = account(&dd, &oo).await?;
        let resolved = &data["resolved"]["attachments"];
        let mut params = Map::new();
        let mut images = vec![];
        let mut words = vec![];
        for opt in data["options"].as_array().into_iter().flatten() {
            let oname = opt["name"].as_str().unwrap_or("").to_string();
            let value = opt["value"].clone();
            if opt["type"] == 11 {
                let id = value.as_str().unwrap_or("");
                let media = store_attachment(&dd, &a, &resolved[id]).await?;
                if tool.is_some() {
                    params.insert(oname, json!(format!("media:{media}")));
                }
                images.push(media);
            } else if tool.is_some() {
                params.insert(oname, value);
            } else if let Some(s) = value.as_str() {
                words.push(s.to_string());
            } else {
                words.push(value.to_string());
            }
        }
        Ok((a, Input::Command { name, text: words.join(" "), images, params }))
    });
    if private { json_response(json!({"type": 5, "data": {"flags": 64}})) } else { json_response(json!({"type": 5})) }
}

async fn admin(d: &Discord, o: &Origin, data: &Value) -> Response {
    let Some(guild) = &o.guild else { return ephemeral("Server settings can only be changed in a server.") };
    if o.permissions & ADMIN_BITS == 0 {
        return ephemeral("Only members with Manage Server may change Station's server settings.");
    }
    let sub = &data["options"][0];
    let sub_name = sub["name"].as_str().unwrap_or("");
    let station = &d.inner.station;
    let scope = crate::guild_scope(guild);
    let tools = station.tools.list();
    match sub_name {
        "tools" => {
            let switches = station.group_tools(&scope).await.unwrap_or_default();
            let lines: Vec<String> = tools
                .iter()
                .filter(|t| t.visibility == station_core::tools::Visibility::Public)
                .map(|t| {
                    let on = !switches.iter().any(|s| s.tool_id == t.id && !s.enabled);
                    format!("{} `/{}` — {}", if on { "✅" } else { "⛔" }, t.command, t.name)
                })
                .collect();
            ephemeral(&format!("Tools in this server:\n{}", lines.join("\n")))
        }
        "enable-tool" | "disable-tool" => {
            let wanted = sub["options"][0]["value"].as_str().unwrap_or("").trim().trim_start_matches('/');
            let Some(tool) = tools.iter().find(|t| t.id == wanted || t.command == wanted) else {
                return ephemeral(&format!("There is no tool {wanted:?}. `/admin tools` lists them."));
            };
            let enable = sub_name == "enable-tool";
            let by = match account(d, o).await {
                Ok(a) => station_core::audit::Actor::account(&a, station_core::audit::Via::Chat("discord".into())),
                Err(e) => return ephemeral(&e),
            };
            // Once per interaction, as every other input: a replayed one changes nothing.
            match station.set_group_tool_once(&format!("discord:{}", o.id), &scope, &tool.id, enable, &by).await {
                Ok(true) => {}
                Ok(false) => return ephemeral("This request was handled already; nothing changed."),
                Err(e) => return ephemeral(&format!("The setting could not be saved ({e}); please try again.")),
            }
            ephemeral(&format!("/{} is now {} in this server.", tool.command, if enable { "on" } else { "off" }))
        }
        other => ephemeral(&format!("Unknown admin command {other:?}.")),
    }
}

async fn component(d: Discord, v: Value) -> Response {
    let Some(o) = Origin::of(&v) else {
        return (StatusCode::BAD_REQUEST, "interaction lacks id, token, user or channel").into_response();
    };
    let custom_id = v["data"]["custom_id"].as_str().unwrap_or("").to_string();
    if let Some(key) = custom_id.strip_prefix("m:") {
        return match d.inner.modals.get(key) {
            Some(spec) => json_response(render::modal_response(key, &spec)),
            None => ephemeral("This form has expired. Run the command again."),
        };
    }
    let token =
        if custom_id.starts_with("s:") { v["data"]["values"][0].as_str().unwrap_or("").to_string() } else { custom_id };
    if token.is_empty() {
        return ephemeral("Nothing was chosen.");
    }
    begin(&d, &o, false, false);
    let dd = d.clone();
    let oo = o.clone();
    spawn_handle(d, o, async move { Ok((account(&dd, &oo).await?, Input::Action { token })) });
    json_response(json!({"type": 6}))
}

async fn modal_submit(d: Discord, v: Value) -> Response {
    let Some(o) = Origin::of(&v) else {
        return (StatusCode::BAD_REQUEST, "interaction lacks id, token, user or channel").into_response();
    };
    let custom_id = v["data"]["custom_id"].as_str().unwrap_or("");
    let Some(spec) = custom_id.strip_prefix("f:").and_then(|k| d.inner.modals.get(k)) else {
        return ephemeral("This form has expired. Run the command again.");
    };
    let values = match render::modal_values(&spec, &v["data"]) {
        Ok(v) => v,
        Err(msg) => return ephemeral(&msg),
    };
    let input = if spec.single {
        let text = match values.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Input::Text { text }
    } else {
        Input::Form { values, token: None }
    };
    begin(&d, &o, false, false);
    let dd = d.clone();
    let oo = o.clone();
    spawn_handle(d, o, async move { Ok((account(&dd, &oo).await?, input)) });
    json_response(json!({"type": 6}))
}
