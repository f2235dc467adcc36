//! Operator commands: `/queue` (queue depth, oldest queued job, running jobs,
//! backends with health and load) and `/grant <user> <points> [reason]`
//! (points through the ledger, after a confirmation button). Only accounts
//! with the admin role see or run them; for anyone else they are unknown
//! commands (the engine checks [`Flow::admin_only`]).

use serde_json::{Value, json};

use crate::flow::{Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str};
use crate::view::{Block, Button, Field, Rich, View};

/// `12 s`, `3 min 10 s`, `2 h 5 min`.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// `/queue`: the queue and the backends at a glance.
pub struct Queue;

/// Running jobs listed at most.
const RUNNING_SHOWN: i64 = 10;

#[async_trait::async_trait]
impl Flow for Queue {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn description(&self) -> &'static str {
        "Operators: queue depth, running jobs and backends"
    }

    fn admin_only(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        &[]
    }

    async fn start(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        let station = cx.station;
        let q = station.queue_overview(RUNNING_SHOWN).await?;
        let now = station_core::now_ms();
        let mut text = Rich::plain("Queue: ").bold(format!("{} waiting", q.depth));
        if let Some(a) = q.oldest_queued_age_ms {
            text = text.text(format!(", the oldest for {}", age(a)));
        }
        let counts: Vec<String> = q.by_status.iter().map(|(s, n)| format!("{s} {n}")).collect();
        if !counts.is_empty() {
            text = text.text(format!("\nAll jobs: {}", counts.join(" · ")));
        }
        let mut view = View::text(text);
        let mut running = vec![];
        for job in &q.running {
            let tool = station.tools.get(&job.tool_id).map(|t| t.name.clone()).unwrap_or(job.tool_id.clone());
            let owner = station.account_by_id(&job.account_id).await?.map(|a| a.name).unwrap_or_default();
            let since = job.started_at.or(job.dispatched_at).unwrap_or(job.created_at);
            running.push(Field {
                name: format!("{tool} for {owner}"),
                value: format!(
                    "{} {:.0}% on {} for {} (job {})",
                    job.status,
                    job.progress * 100.0,
                    job.backend.as_deref().unwrap_or("?"),
                    age(now - since),
                    &job.id[job.id.len().saturating_sub(8)..]
                ),
                inline: false,
            });
        }
        let title =
            if running.is_empty() { "Running: none".to_string() } else { format!("Running: {}", running.len()) };
        view = view.block(Block::Card { title, body: None, image: None, fields: running });
        let mut services = vec![];
        for s in station.service_health().await? {
            let mut lines = vec![format!("{} of {} slots busy", s.active, s.capacity)];
            for b in &s.backends {
                let mark = if b.healthy { "✅" } else { "❌" };
                lines.push(format!("{mark} {} — {} active — {}", b.name, b.active, b.detail));
            }
            services.push(Field { name: s.service, value: lines.join("\n"), inline: false });
        }
        view = view.block(Block::Card { title: "Backends".into(), body: None, image: None, fields: services });
        Ok(Next::Finish(vec![Out::message(view.row(vec![Button::action(
            "🔄 Refresh",
            "start",
            json!({"flow": "queue"}),
        )]))]))
    }

    async fn view(&self, _cx: &Cx<'_>, _step: &str, _state: &Value) -> Result<View, FlowError> {
        Ok(View::default())
    }

    async fn input(&self, _cx: &Cx<'_>, _s: &str, _st: &Value, _i: StepInput) -> Result<Next, FlowError> {
        Ok(Next::Cancel)
    }
}

/// `/grant <user> <points> [reason]`: gives points after a confirmation.
pub struct Grant;

const GRANT_STEPS: &[StepSpec] = &[StepSpec { id: "confirm", accepts: &[] }];

const GRANT_USAGE: &str = "Usage: /grant <user> <points> [reason]. The user is a platform identity such as \
                           telegram:123456 or an account id; points a whole number above 0.";

fn refuse(why: String) -> Next {
    Next::Finish(vec![Out::message(View::text(format!("⚠ /grant: {why}\n{GRANT_USAGE}")))])
}

#[async_trait::async_trait]
impl Flow for Grant {
    fn name(&self) -> &'static str {
        "grant"
    }

    fn description(&self) -> &'static str {
        "Operators: give points to a user"
    }

    fn admin_only(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        GRANT_STEPS
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        let text = start.text.trim();
        let mut parts = text.splitn(3, char::is_whitespace);
        let (who, points) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").trim());
        let reason = parts.next().unwrap_or("").trim();
        if who.is_empty() {
            return Ok(refuse("user is missing".into()));
        }
        let amount = match points.parse::<i64>() {
            Ok(n) if n > 0 => n,
            _ if points.is_empty() => return Ok(refuse("points are missing".into())),
            _ => return Ok(refuse(format!("points must be a whole number above 0, got {points:?}"))),
        };
        let Some(target) = cx.station.find_account(who).await? else {
            return Ok(refuse(format!(
                "user: no account is known as {who:?} (people get one when they first talk to Station)"
            )));
        };
        let reason = if reason.is_empty() { format!("granted by {} in chat", cx.account.name) } else { reason.into() };
        Ok(Next::Goto(
            "confirm".into(),
            json!({
                "account": target.id,
                "name": target.name,
                "amount": amount,
                "reason": reason,
                // One grant per /grant, however often the confirmation arrives.
                "key": format!("chat-grant:{}", cx.instance_id),
            }),
        ))
    }

    async fn view(&self, cx: &Cx<'_>, _step: &str, state: &Value) -> Result<View, FlowError> {
        let id = get_str(state, "account").unwrap_or("");
        let amount = state.get("amount").and_then(Value::as_i64).unwrap_or(0);
        let balance = cx.station.points(id).await?;
        let identities = cx.station.account_identities(id).await?;
        let ids: Vec<String> = identities.into_iter().map(|(p, s)| format!("{p}:{s}")).collect();
        let fields = vec![
            Field { name: "Account".into(), value: id.to_string(), inline: false },
            Field { name: "Identities".into(), value: ids.join(", "), inline: false },
            Field { name: "Balance now".into(), value: format!("{} points", balance.balance), inline: true },
            Field { name: "Reason".into(), value: get_str(state, "reason").unwrap_or("").to_string(), inline: false },
        ];
        Ok(View::default()
            .block(Block::Card {
                title: format!("Grant {amount} points to {}?", get_str(state, "name").unwrap_or("")),
                body: None,
                image: None,
                fields,
            })
            .row(vec![
                Button::action(format!("✅ Grant {amount} points"), "confirm", Value::Null).primary(),
                Button::action("Cancel", "cancel", Value::Null),
            ]))
    }

    async fn input(&self, cx: &Cx<'_>, _step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        let StepInput::Action { name, .. } = input else {
            return Ok(Next::Invalid("Press the button to grant, or Cancel.".into()));
        };
        if name != "confirm" {
            return Ok(Next::Invalid("Press the button to grant, or Cancel.".into()));
        }
        // The role is read again: an operator demoted since /grant cannot confirm.
        if !cx.account.is_admin() {
            return Ok(Next::Finish(vec![Out::message(View::text("Only operators can grant points."))]));
        }
        let id = get_str(state, "account").unwrap_or("");
        let Some(target) = cx.station.account_by_id(id).await? else {
            return Ok(Next::Finish(vec![Out::message(View::text(format!("⚠ Not granted: account {id} is gone.")))]));
        };
        let amount = state.get("amount").and_then(Value::as_i64).unwrap_or(0);
        let reason = get_str(state, "reason").unwrap_or("");
        let actor = station_core::audit::Actor::account(
            cx.account,
            station_core::audit::Via::Chat(cx.conversation.platform.clone()),
        );
        let key = get_str(state, "key");
        let text = match cx.station.grant_points(&target, amount, reason, &actor, key).await {
            Ok(station_core::points::Posted::Applied(_)) => {
                let b = cx.station.points(&target.id).await?;
                Rich::plain("Granted ")
                    .bold(format!("{amount} points"))
                    .text(format!(" to {}. Their balance: {} points.", target.name, b.balance))
            }
            Ok(_) => {
                let b = cx.station.points(&target.id).await?;
                Rich::plain(format!(
                    "This grant was already made; nothing changed. {}'s balance: {} points.",
                    target.name, b.balance
                ))
            }
            Err(e) => Rich::plain(format!("⚠ Not granted: {e}")),
        };
        Ok(Next::Finish(vec![Out::message(View::text(text))]))
    }
}

/// `/flags` lists the feature flags; `/flags NAME on|off|25%|admins|remove`
/// sets or removes one (effective at once, audited).
pub struct Flags;

const FLAGS_USAGE: &str = "Set one: /flags NAME on · off · 25% · admins · remove. \
                           NAME is a feature (training, spells, …), tool.<id> or platform.<name>.";

#[async_trait::async_trait]
impl Flow for Flags {
    fn name(&self) -> &'static str {
        "flags"
    }

    fn description(&self) -> &'static str {
        "Operators: feature flags"
    }

    fn admin_only(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        &[]
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        use station_core::flags::{FlagRule, FlagState, SetFlagError, flag_target};
        let station = cx.station;
        let mut words = start.text.split_whitespace();
        let (name, how) = (words.next(), words.next());
        let reply = |text: String| Ok(Next::Finish(vec![Out::message(View::text(text))]));
        let Some(name) = name else {
            let flags = station.flags().await?;
            let fields = flags
                .iter()
                .map(|f| Field {
                    name: f.name.clone(),
                    value: format!("{} — {}", f.rule.describe(), flag_target(station, &f.name)),
                    inline: false,
                })
                .collect::<Vec<_>>();
            let title = if fields.is_empty() {
                "Feature flags: none set, everything is on".to_string()
            } else {
                format!("Feature flags: {}", fields.len())
            };
            let view =
                View::default().block(Block::Card { title, body: Some(FLAGS_USAGE.into()), image: None, fields });
            return Ok(Next::Finish(vec![Out::message(view)]));
        };
        let name = name.to_lowercase();
        let by = station_core::audit::Actor::account(
            cx.account,
            station_core::audit::Via::Chat(cx.conversation.platform.clone()),
        );
        let rule = match how.map(str::to_lowercase).as_deref() {
            Some("on") => FlagRule::on(),
            Some("off") => FlagRule::off(),
            Some("admins") => FlagRule { state: FlagState::Some, admins: true, ..FlagRule::off() },
            Some("remove") => {
                return match station.unset_flag(&name, &by).await? {
                    true => reply(format!("{name} removed: {} is on for everyone.", flag_target(station, &name))),
                    false => reply(format!("There is no flag {name}.")),
                };
            }
            Some(p) if p.ends_with('%') => match p.trim_end_matches('%').parse::<u8>() {
                Ok(percent) if percent <= 100 => FlagRule { state: FlagState::Some, percent, ..FlagRule::off() },
                _ => return reply(format!("⚠ {p} is not a share from 0% to 100%.\n{FLAGS_USAGE}")),
            },
            _ => return reply(format!("⚠ Say how to set {name}.\n{FLAGS_USAGE}")),
        };
        match station.set_flag(&name, rule, None, &by).await {
            Ok(f) => reply(format!("{} is now {}: {}.", f.name, f.rule.describe(), flag_target(station, &f.name))),
            Err(SetFlagError::Invalid(errors)) => {
                let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
                reply(format!("⚠ Not set: {}\n{FLAGS_USAGE}", why.join("; ")))
            }
            Err(SetFlagError::Store(e)) => Err(e.into()),
        }
    }

    async fn view(&self, _cx: &Cx<'_>, _step: &str, _state: &Value) -> Result<View, FlowError> {
        Ok(View::default())
    }

    async fn input(&self, _cx: &Cx<'_>, _s: &str, _st: &Value, _i: StepInput) -> Result<Next, FlowError> {
        Ok(Next::Cancel)
    }
}
