//! `settings`: per tool, view and change saved defaults (validated against
//! the tool's inputs), reset one or all.

use serde_json::{Value, json};
use station_core::SettingsError;
use station_core::tools::InputType;

use super::inputs::{ask_kind, ask_text, interactions_only, pickable_tools, settings_form};
use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Start, StepInput, StepSpec, get_str, with, without};
use crate::view::{Block, Button, Field, InputKind, Rich, View};

/// The settings flow.
pub struct Settings;

const STEPS: &[StepSpec] = &[
    StepSpec { id: "tool", accepts: &[Accepts::Text] },
    StepSpec { id: "threshold", accepts: &[Accepts::Text] },
    StepSpec { id: "edit", accepts: &[Accepts::Text, Accepts::Form] },
    StepSpec { id: "set", accepts: &[Accepts::Text] },
];

#[async_trait::async_trait]
impl Flow for Settings {
    fn name(&self) -> &'static str {
        "settings"
    }

    fn description(&self) -> &'static str {
        "Your default settings per tool"
    }

    fn personal(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        STEPS
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        let named = start.args.get("tool").and_then(Value::as_str).map(str::to_owned).or_else(|| {
            let t = start.text.trim();
            (!t.is_empty()).then(|| t.to_string())
        });
        match named.and_then(|n| cx.station.find_tool(&n, cx.account)) {
            Some(tool) => Ok(Next::Goto("edit".into(), json!({"tool": tool.id}))),
            None => Ok(Next::Goto("tool".into(), json!({}))),
        }
    }

    async fn view(&self, cx: &Cx<'_>, step: &str, state: &Value) -> Result<View, FlowError> {
        match step {
            "tool" => {
                let tools = pickable_tools(cx, false);
                // Paged like `/make`'s picker: 25 in a Discord select menu, 8 buttons elsewhere.
                let per_page = super::inputs::picker_page(cx);
                let pages = tools.len().div_ceil(per_page).max(1);
                let page = (state.get("page").and_then(Value::as_u64).unwrap_or(0) as usize).min(pages - 1);
                let options = tools
                    .iter()
                    .zip(super::inputs::tool_labels(&tools))
                    .skip(page * per_page)
                    .take(per_page)
                    .map(|(t, label)| Button::action(label, "choose", json!({"tool": t.id})))
                    .collect();
                let mut nav = vec![];
                if page > 0 {
                    nav.push(Button::action("◀ Previous", "page", json!({"page": page - 1})));
                }
                if page + 1 < pages {
                    nav.push(Button::action("Next ▶", "page", json!({"page": page + 1})));
                }
                let threshold = cx.station.quote_threshold(cx.account).await?;
                let ask = match threshold {
                    Some(t) => format!("I ask before runs that cost more than {}.", crate::view::points(t)),
                    None => "I never ask before a run.".to_string(),
                };
                let mut view = View::text(Rich::plain("Settings for which tool?\n\n").text(ask));
                if pages > 1 {
                    view = view.with_text(format!("Page {} of {pages}", page + 1));
                }
                let mut view = view.row(nav).row(vec![Button::action("Change when I ask", "threshold", Value::Null)]);
                let media = &cx.station.config.media;
                if media.auto_watermark.is_some() && media.watermark_opt_out {
                    let off = cx.station.watermark_opt_out(&cx.account.id).await?;
                    let label = if off { "Watermark: off (turn on)" } else { "Watermark: on (turn off)" };
                    view = view.row(vec![Button::action(label, "watermark", json!({"off": !off}))]);
                }
                // Chat platforms send results as photos (re-compressed by some); this asks for the
                // files. A terminal saves files anyway: nothing to choose there.
                if cx.flows.style_of(cx.conversation) != crate::platform::ChatStyle::Terminal {
                    let originals = cx.station.sends_originals(&cx.account.id).await?;
                    let label = if originals {
                        "Results as original files: on (send photos)"
                    } else {
                        "Results as photos (send original files)"
                    };
                    view = view.row(vec![Button::action(label, "originals", json!({"on": !originals}))]);
                }
                Ok(view
                    .row(vec![Button::action("Close", "cancel", Value::Null)])
                    .ask("Tool", InputKind::Choice { options }))
            }
            "threshold" => Ok(View::text(
                "Send the price in points above which I should ask you first (0 asks every time), or \"never\".",
            )
            .row(vec![Button::action("◀ Back", "back", Value::Null)])
            .ask("Threshold", InputKind::Number { min: Some(0.0), max: None, step: Some(1.0), integer: true })),
            "edit" => {
                let tool = tool(cx, state)?;
                let saved = cx.station.settings().get(cx.account, &tool).await?;
                let mut fields = vec![];
                let mut buttons = vec![];
                for (name, def) in tool.inputs.iter().filter(|(_, d)| d.kind != InputType::Image) {
                    let value = match (saved.get(name), &def.default) {
                        (Some(v), _) => format!("{} (yours)", show(v)),
                        (None, Some(v)) => format!("{} (default)", show(v)),
                        (None, None) => "not set".to_string(),
                    };
                    fields.push(Field { name: name.clone(), value, inline: true });
                    buttons.push(Button::action(format!("Change {name}"), "change", json!({"input": name})));
                }
                let mut view = View::default().block(Block::Card {
                    title: format!("{} settings", tool.name),
                    body: Some(Rich::plain(
                        "Your defaults are used whenever you run this tool without saying otherwise.",
                    )),
                    image: None,
                    fields,
                });
                if interactions_only(cx) {
                    // One modal with the current values changes the typed
                    // settings (two interactions); a choice is a button away
                    // from its select menu.
                    let current = |name: &str| current_value(&tool, &saved, name);
                    let (fields, _) = settings_form(&tool, &current, 5);
                    buttons.retain(|b| !fields.iter().any(|f| b.label == format!("Change {}", f.name)));
                    for chunk in buttons.chunks(5).take(3) {
                        view = view.row(chunk.to_vec());
                    }
                    if !fields.is_empty() {
                        view = view.ask("Settings", InputKind::Form { fields });
                    }
                } else {
                    for chunk in buttons.chunks(2) {
                        view = view.row(chunk.to_vec());
                    }
                }
                Ok(view.row(vec![
                    Button::action("Reset all", "reset_all", Value::Null).danger(),
                    Button::action("Done", "done", Value::Null).primary(),
                ]))
            }
            "set" => {
                let tool = tool(cx, state)?;
                let name = get_str(state, "input").unwrap_or("");
                let Some(def) = tool.inputs.get(name) else { return Ok(View::text("That setting is gone.")) };
                Ok(View::text(ask_text(name, def))
                    .row(vec![
                        Button::action("Reset to default", "reset", Value::Null),
                        Button::action("◀ Back", "back", Value::Null),
                    ])
                    .ask(name, ask_kind(cx.station, def)))
            }
            other => Ok(View::text(format!("(unknown step {other})"))),
        }
    }

    async fn input(&self, cx: &Cx<'_>, step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        match step {
            "threshold" => {
                let StepInput::Text(t) = input else {
                    return Ok(Next::Invalid("Send a number of points, or \"never\".".into()));
                };
                let value = match t.trim().to_lowercase().as_str() {
                    "never" | "off" => None,
                    n => match n.parse::<i64>() {
                        Ok(v) if v >= 0 => Some(v),
                        _ => return Ok(Next::Invalid("the threshold is a whole number of points, 0 or more".into())),
                    },
                };
                cx.station.set_quote_threshold(cx.account, value).await?;
                Ok(Next::Back)
            }
            "tool" => {
                let name = match input {
                    StepInput::Action { name, .. } if name == "threshold" => {
                        return Ok(Next::Goto("threshold".into(), state.clone()));
                    }
                    StepInput::Action { name, args } if name == "watermark" => {
                        let off = args.get("off").and_then(Value::as_bool).unwrap_or(false);
                        return match cx.station.set_watermark_opt_out(cx.account, off).await {
                            Ok(()) => Ok(Next::Stay(state.clone())),
                            Err(e) => Ok(Next::Invalid(e.to_string())),
                        };
                    }
                    StepInput::Action { name, args } if name == "page" => {
                        let page = args.get("page").and_then(Value::as_u64).unwrap_or(0);
                        return Ok(Next::Stay(with(state, "page", page)));
                    }
                    StepInput::Action { name, args } if name == "originals" => {
                        let on = args.get("on").and_then(Value::as_bool).unwrap_or(false);
                        cx.station.set_send_originals(cx.account, on).await?;
                        return Ok(Next::Stay(state.clone()));
                    }
                    StepInput::Action { args, .. } => get_str(&args, "tool").map(str::to_owned),
                    StepInput::Text(t) => Some(t.trim().to_string()),
                    _ => None,
                };
                match name.and_then(|n| cx.station.find_tool(&n, cx.account)) {
                    Some(t) => Ok(Next::Goto("edit".into(), with(state, "tool", t.id.clone()))),
                    None => Ok(Next::Invalid("I don't know that tool. Choose one of the buttons.".into())),
                }
            }
            "edit" => {
                let tool = tool(cx, state)?;
                match input {
                    StepInput::Action { name, args } if name == "change" => {
                        let input = get_str(&args, "input").unwrap_or("").to_string();
                        Ok(Next::Goto("set".into(), with(state, "input", input)))
                    }
                    StepInput::Action { name, .. } if name == "reset_all" => {
                        cx.station.settings().clear(cx.account, &tool).await?;
                        Ok(Next::Stay(state.clone()))
                    }
                    StepInput::Action { name, .. } if name == "done" => {
                        Ok(Next::Finish(vec![crate::flow::Out::message(View::text(format!(
                            "Saved. Your next {} run uses these settings.",
                            tool.name
                        )))]))
                    }
                    StepInput::Text(t) => match t.split_once('=') {
                        Some((k, v)) => save(cx, &tool, state, k.trim(), &Value::String(v.trim().to_string())).await,
                        None => Ok(Next::Invalid("Send name=value, or use the buttons.".into())),
                    },
                    StepInput::Form(values) => {
                        // Only what was changed becomes yours: a value left as
                        // shown (a default) stays the tool's.
                        let saved = cx.station.settings().get(cx.account, &tool).await?;
                        for (name, value) in values {
                            let shown = current_value(&tool, &saved, &name);
                            if shown.as_ref().map(show) == Some(show(&value)) {
                                continue;
                            }
                            match save(cx, &tool, state, &name, &value).await? {
                                Next::Invalid(why) => return Ok(Next::Invalid(why)),
                                _ => continue,
                            }
                        }
                        Ok(Next::Stay(state.clone()))
                    }
                    _ => Ok(Next::Invalid("Use the buttons, or send name=value.".into())),
                }
            }
            "set" => {
                let tool = tool(cx, state)?;
                let name = get_str(state, "input").unwrap_or("").to_string();
                match input {
                    StepInput::Action { name: a, .. } if a == "reset" => {
                        cx.station.settings().unset(cx.account, &tool, &name).await?;
                        Ok(Next::Goto("edit".into(), without(state, "input")))
                    }
                    StepInput::Action { name: a, args } if a == "choose" => {
                        save(cx, &tool, state, &name, &args.get("value").cloned().unwrap_or(Value::Null)).await
                    }
                    StepInput::Text(t) => save(cx, &tool, state, &name, &Value::String(t)).await,
                    _ => Ok(Next::Invalid("Send the new value, or press Back.".into())),
                }
            }
            _ => Ok(Next::Invalid("This step takes no input.".into())),
        }
    }
}

fn tool(cx: &Cx<'_>, state: &Value) -> Result<std::sync::Arc<station_core::tools::ToolDef>, FlowError> {
    let id = get_str(state, "tool").unwrap_or("");
    cx.station.find_tool(id, cx.account).ok_or_else(|| FlowError::ToolGone(id.to_string()))
}

/// A setting's value as the person has it now: theirs, else the tool's default.
fn current_value(
    tool: &station_core::tools::ToolDef,
    saved: &serde_json::Map<String, Value>,
    name: &str,
) -> Option<Value> {
    saved.get(name).cloned().or_else(|| tool.inputs.get(name).and_then(|d| d.default.clone()))
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.as_i64() == Some(-1) => "random".into(),
        other => other.to_string(),
    }
}

async fn save(
    cx: &Cx<'_>,
    tool: &station_core::tools::ToolDef,
    state: &Value,
    name: &str,
    raw: &Value,
) -> Result<Next, FlowError> {
    let Some(def) = tool.inputs.get(name) else {
        let known: Vec<&str> = tool.inputs.keys().map(String::as_str).collect();
        return Ok(Next::Invalid(format!("{name}: no such setting; known: {}", known.join(", "))));
    };
    if def.kind == InputType::Image {
        return Ok(Next::Invalid(format!("{name} is an image; it cannot have a saved default.")));
    }
    match cx.station.settings().set(cx.account, tool, name, raw).await {
        Ok(_) => Ok(Next::Goto("edit".into(), without(state, "input"))),
        Err(SettingsError::Invalid(errors)) => {
            let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Ok(Next::Invalid(why.join("; ")))
        }
        Err(SettingsError::Storage(e)) => Err(e.into()),
    }
}
