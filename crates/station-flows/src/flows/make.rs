//! `make`: choose a tool → fill only the missing required inputs → optional
//! settings → cost (confirmed when over the user's threshold) → queued.
//! Works for every tool in the registry with no per-tool code.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use station_core::tools::{InputType, ToolDef, coerce_text, coerce_value};

use super::inputs::{ask_kind, ask_text, check_one, interactions_only, pickable_tools, picker_page, settings_form};
use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Start, StepInput, StepSpec, get_str, with, without};
use crate::results::{Refused, submit_for};
use crate::view::{Block, Button, Field, InputKind, Rich, View, points};

/// The make flow.
pub struct Make;

const STEPS: &[StepSpec] = &[
    StepSpec { id: "tool", accepts: &[Accepts::Text] },
    StepSpec { id: "ask", accepts: &[Accepts::Text, Accepts::Image, Accepts::Form] },
    StepSpec { id: "options", accepts: &[Accepts::Text, Accepts::Form] },
    StepSpec { id: "pick_setting", accepts: &[Accepts::Text] },
    StepSpec { id: "set", accepts: &[Accepts::Text, Accepts::Image] },
    StepSpec { id: "confirm", accepts: &[] },
];

fn params_of(state: &Value) -> Map<String, Value> {
    state.get("params").and_then(Value::as_object).cloned().unwrap_or_default()
}

fn tool_of(cx: &Cx<'_>, state: &Value) -> Result<Arc<ToolDef>, FlowError> {
    let id = get_str(state, "tool").unwrap_or("");
    cx.station.find_tool(id, cx.account).ok_or_else(|| FlowError::ToolGone(id.to_string()))
}

impl Make {
    /// Puts the command's text and images into the tool's inputs:
    /// `name=value` words set those inputs, the rest is the tool's text
    /// input (its prompt). Nothing typed is dropped: an unknown name, a bad
    /// value, or text for a tool that takes none is refused in words that
    /// list the tool's inputs.
    fn place_inputs(tool: &ToolDef, state: Value, text: &str, images: &[String]) -> Result<Value, String> {
        let mut params = params_of(&state);
        let (free, pairs) = split_assignments(text);
        for (k, v) in pairs {
            let Some(def) = tool.inputs.get(&k) else {
                return Err(format!("{} has no input called {k}. {}", tool.name, inputs_list(tool)));
            };
            if def.kind == InputType::Image {
                return Err(format!("{k} takes a picture, not text. {}", inputs_list(tool)));
            }
            let value = coerce_text(def, &v);
            check_one(tool, &k, &value)?;
            params.insert(k, value);
        }
        let free = free.trim();
        if !free.is_empty() {
            let target = tool
                .primary_input()
                .filter(|(_, d)| d.kind == InputType::Text)
                .map(|(n, _)| n.to_string())
                .or_else(|| tool.inputs.iter().find(|(_, d)| d.kind == InputType::Text).map(|(n, _)| n.clone()));
            match target {
                Some(name) => {
                    params.insert(name, Value::String(free.to_string()));
                }
                None => {
                    return Err(format!(
                        "{} takes no text, so I did not know what to do with \"{}\". {}",
                        tool.name,
                        crate::view::excerpt(free, 40),
                        inputs_list(tool)
                    ));
                }
            }
        }
        // Images fill image inputs, the primary one first.
        let mut slots: Vec<&String> =
            tool.inputs.iter().filter(|(_, d)| d.kind == InputType::Image).map(|(n, _)| n).collect();
        slots.sort_by_key(|n| !tool.inputs[*n].primary);
        for (slot, media) in slots.into_iter().zip(images) {
            if !params.contains_key(slot) {
                params.insert(slot.clone(), Value::String(format!("media:{media}")));
            }
        }
        Ok(with(&state, "params", params))
    }

    /// The first required input with no value from the request, the saved
    /// settings or the tool's defaults.
    async fn missing(cx: &Cx<'_>, tool: &ToolDef, params: &Map<String, Value>) -> Result<Option<String>, FlowError> {
        let saved = cx.station.settings().get(cx.account, tool).await?;
        Ok(tool
            .inputs
            .iter()
            .find(|(name, d)| {
                d.required && d.default.is_none() && !params.contains_key(*name) && !saved.contains_key(*name)
            })
            .map(|(n, _)| n.clone()))
    }

    /// After an answer: ask the next missing input, or show options, or run.
    async fn proceed(cx: &Cx<'_>, state: Value) -> Result<Next, FlowError> {
        let tool = tool_of(cx, &state)?;
        let params = params_of(&state);
        if let Some(name) = Self::missing(cx, &tool, &params).await? {
            return Ok(Next::Goto("ask".into(), with(&state, "asking", name)));
        }
        let interactive = state.get("interactive").and_then(Value::as_bool).unwrap_or(false);
        // The model picker, once, when there is a choice to make.
        if interactive
            && let Some((name, def)) = tool.model_input()
            && !params.contains_key(name)
            && state.get("model_asked").is_none()
            && cx.station.model_choices(def).len() > 1
        {
            let s = with(&state, "model_asked", true);
            return Ok(Next::Goto("ask".into(), with(&s, "asking", name)));
        }
        if state.get("interactive").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(Next::Goto("options".into(), without(&state, "asking")));
        }
        Self::run(cx, &tool, state).await
    }

    /// Queues the job, or asks for confirmation first when the price is over
    /// the user's threshold.
    async fn run(cx: &Cx<'_>, tool: &ToolDef, state: Value) -> Result<Next, FlowError> {
        let params = params_of(&state);
        let confirmed = state.get("confirmed").and_then(Value::as_bool).unwrap_or(false);
        if !confirmed && let Some(price) = confirmation_needed(cx, tool, &params).await? {
            return Ok(Next::Goto("confirm".into(), with(&state, "price", price)));
        }
        match submit_for(
            cx.flows,
            cx.input,
            cx.account,
            cx.conversation,
            &tool.id,
            params,
            Some((cx.instance_id, &cx.card)),
            confirmed,
        )
        .await?
        {
            Ok((_, out)) => Ok(Next::Finish(vec![out])),
            // The threshold changed between our check and the submit.
            Err(Refused::Confirm(price)) => Ok(Next::Goto("confirm".into(), with(&state, "price", price))),
            Err(Refused::Text(msg)) => Ok(Next::Invalid(msg)),
        }
    }

    fn summary(cx: &Cx<'_>, tool: &ToolDef, state: &Value, saved: &Map<String, Value>) -> View {
        let params = params_of(state);
        // The model the job would use, and the defaults of its base model.
        let model = tool.model_input().and_then(|(name, def)| {
            let choices = cx.station.model_choices(def);
            let wanted = params.get(name).or_else(|| saved.get(name)).and_then(Value::as_str);
            wanted.and_then(|w| choices.iter().find(|m| m.name == w).cloned()).or_else(|| choices.first().cloned())
        });
        let base_defaults =
            model.as_ref().and_then(|m| m.base_model.as_ref()).and_then(|b| tool.base_model_defaults.get(b));
        let mut fields = vec![];
        for (name, def) in &tool.inputs {
            // A model input's default is the model chosen above.
            let default = match (def.kind, &model) {
                (InputType::Model, Some(m)) => Some(Value::String(m.name.clone())),
                _ => base_defaults.and_then(|d| d.get(name)).or(def.default.as_ref()).cloned(),
            };
            let (value, origin) = match (params.get(name), saved.get(name), default.as_ref()) {
                (Some(v), _, _) => (v.clone(), ""),
                (None, Some(v), _) => (v.clone(), " (your default)"),
                (None, None, Some(v)) => (v.clone(), " (default)"),
                _ => continue,
            };
            let shown = match (&def.kind, &value) {
                (InputType::Image, _) => "an image".to_string(),
                (InputType::Seed, Value::Number(n)) if n.as_i64() == Some(-1) => "random".to_string(),
                (_, Value::String(s)) => s.clone(),
                (_, v) => v.to_string(),
            };
            fields.push(Field { name: name.clone(), value: format!("{shown}{origin}"), inline: !def.primary });
        }
        // Where nothing typed reaches the bot, one form (a modal) holds the
        // typed settings with their current values.
        let form = interactions_only(cx).then(|| {
            let current = |name: &str| {
                params.get(name).or_else(|| saved.get(name)).cloned().or_else(|| {
                    base_defaults
                        .and_then(|d| d.get(name))
                        .or(tool.inputs.get(name).and_then(|d| d.default.as_ref()))
                        .cloned()
                })
            };
            settings_form(tool, &current, 5).0
        });
        let model_multiplier = model.as_ref().map_or(1.0, |m| m.price_multiplier);
        let price = station_core::points::price(&tool.cost, cx.station.config.points.multiplier * model_multiplier);
        let view = View::default()
            .block(Block::Card {
                title: tool.name.clone(),
                body: Some(Rich::plain(tool.description.clone())),
                image: None,
                fields,
            })
            .with_text(Rich::plain("Price: ").bold(points(price)).text(match cx.flows.style_of(cx.conversation) {
                crate::platform::ChatStyle::Interactions => ". Change settings with the buttons, or run it.",
                _ => ". Send name=value to change a setting (for example steps=30), or use the buttons.",
            }))
            .row(vec![
                Button::action(format!("▶ Run · {}", points(price)), "run", Value::Null).primary(),
                Button::action("⚙ Change a setting", "settings", Value::Null),
            ])
            .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()]);
        match form {
            Some(fields) if !fields.is_empty() => view.ask("Settings", InputKind::Form { fields }),
            _ => view,
        }
    }
}

/// The price when it needs the user's confirmation, else `None`.
async fn confirmation_needed(
    cx: &Cx<'_>,
    tool: &ToolDef,
    _params: &Map<String, Value>,
) -> Result<Option<i64>, FlowError> {
    let price = station_core::points::price(&tool.cost, cx.station.config.points.multiplier);
    let threshold = cx.station.quote_threshold(cx.account).await?;
    Ok(match threshold {
        Some(t) if price > t => Some(price),
        _ => None,
    })
}

/// Parses text made only of `name=value` words (or lines); `None` when
/// anything else is in it.
fn parse_assignments(text: &str) -> Option<Vec<(String, String)>> {
    let (free, pairs) = split_assignments(text);
    (free.trim().is_empty() && !pairs.is_empty()).then_some(pairs)
}

/// Splits text into free words and `name=value` words (a name is a word of
/// letters, digits, `_` and `-`; a value in double quotes may hold spaces).
/// Text with no assignment comes back unchanged.
pub(crate) fn split_assignments(text: &str) -> (String, Vec<(String, String)>) {
    let is_name = |k: &str| {
        k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut free = vec![];
    let mut pairs = vec![];
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        i += 1;
        match w.split_once('=') {
            Some((k, v)) if is_name(k) => {
                let mut value = v.to_string();
                if let Some(rest) = value.strip_prefix('"') {
                    let mut quoted = rest.to_string();
                    while !quoted.ends_with('"') && i < words.len() {
                        quoted.push(' ');
                        quoted.push_str(words[i]);
                        i += 1;
                    }
                    value = quoted.strip_suffix('"').unwrap_or(&quoted).to_string();
                }
                pairs.push((k.to_string(), value));
            }
            _ => free.push(w),
        }
    }
    if pairs.is_empty() { (text.to_string(), pairs) } else { (free.join(" "), pairs) }
}

/// "Inputs of Resize: width, height. Set one as name=value, for example width=512."
fn inputs_list(tool: &ToolDef) -> String {
    let names: Vec<String> = tool
        .inputs
        .iter()
        .map(|(n, d)| match d.kind {
            InputType::Image => format!("{n} (a picture)"),
            _ => n.clone(),
        })
        .collect();
    let example = tool
        .inputs
        .iter()
        .find(|(_, d)| matches!(d.kind, InputType::Integer | InputType::Number))
        .map(|(n, d)| format!("{n}={}", d.default.as_ref().map(Value::to_string).unwrap_or_else(|| "1".into())))
        .or_else(|| tool.inputs.iter().find(|(_, d)| d.kind != InputType::Image).map(|(n, _)| format!("{n}=…")));
    match example {
        Some(e) => format!("Inputs of {}: {}. Set one as name=value, for example {e}.", tool.name, names.join(", ")),
        None => format!("Inputs of {}: {}.", tool.name, names.join(", ")),
    }
}

#[async_trait::async_trait]
impl Flow for Make {
    fn name(&self) -> &'static str {
        "make"
    }

    fn description(&self) -> &'static str {
        "Create something with any tool"
    }

    fn steps(&self) -> &'static [StepSpec] {
        STEPS
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        let mut state = json!({
            "params": start.params,
            "images": start.images,
            "interactive": false,
            "page": 0,
        });
        let tweak = start.args.get("tweak").and_then(Value::as_bool).unwrap_or(false);
        let tool_id = start.args.get("tool").and_then(Value::as_str).map(str::to_owned);
        match tool_id {
            Some(id) => {
                let Some(tool) = cx.station.find_tool(&id, cx.account) else {
                    return Ok(Next::Finish(vec![crate::flow::Out::message(View::text(format!(
                        "The tool {id:?} is not available any more. Send /make to pick another."
                    )))]));
                };
                state = with(&state, "tool", tool.id.clone());
                state = match Self::place_inputs(&tool, state, &start.text, &start.images) {
                    Ok(s) => s,
                    Err(why) => return Ok(Next::Invalid(why)),
                };
                if tweak {
                    state = with(&state, "interactive", true);
                    return Ok(Next::Goto("options".into(), state));
                }
                if let Some(price) = start.args.get("confirm_price").and_then(Value::as_i64) {
                    return Ok(Next::Goto("confirm".into(), with(&state, "price", price)));
                }
                Self::proceed(cx, state).await
            }
            None => {
                // Picking a tool for a result (use as input) runs it at once;
                // `/make` on its own shows the settings before running.
                let use_as_input = start.args.get("use_as_input").and_then(Value::as_bool).unwrap_or(false);
                state = with(&state, "interactive", !use_as_input);
                state = with(&state, "text", start.text.clone());
                if !start.text.trim().is_empty() {
                    // `/make upscale …`: the first word may name the tool.
                    let first = start.text.split_whitespace().next().unwrap_or("");
                    if let Some(tool) = cx.station.find_tool(first, cx.account) {
                        let rest = start.text.trim_start()[first.len()..].to_string();
                        state = with(&state, "tool", tool.id.clone());
                        state = match Self::place_inputs(&tool, state, &rest, &start.images) {
                            Ok(s) => s,
                            Err(why) => return Ok(Next::Invalid(why)),
                        };
                        return Self::proceed(cx, state).await;
                    }
                }
                Ok(Next::Goto("tool".into(), state))
            }
        }
    }

    async fn view(&self, cx: &Cx<'_>, step: &str, state: &Value) -> Result<View, FlowError> {
        match step {
            "tool" => {
                let needs_image = state.get("images").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
                let tools = pickable_tools(cx, needs_image);
                let page = state.get("page").and_then(Value::as_u64).unwrap_or(0) as usize;
                let per_page = picker_page(cx);
                let pages = tools.len().div_ceil(per_page).max(1);
                let page = page.min(pages - 1);
                let labels = super::inputs::tool_labels(&tools);
                let options: Vec<Button> = tools
                    .iter()
                    .zip(labels)
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
                let title =
                    if needs_image { "Which tool should use this image?" } else { "What would you like to make?" };
                let how = if interactions_only(cx) { " Choose a tool." } else { " Choose a tool (or type its name)." };
                let mut view = View::text(Rich::plain(title).text(how));
                if pages > 1 {
                    view = view.with_text(format!("Page {} of {pages}", page + 1));
                }
                Ok(view
                    .row(nav)
                    .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()])
                    .ask("Tool", InputKind::Choice { options }))
            }
            "ask" | "set" => {
                let tool = tool_of(cx, state)?;
                let name = get_str(state, "asking").unwrap_or("");
                let Some(input) = tool.inputs.get(name) else {
                    return Ok(View::text(format!("{} has no input {name:?}.", tool.name)));
                };
                let mut view = View::text(ask_text(name, input)).ask(name, ask_kind(cx.station, input));
                let mut row = vec![Button::action("◀ Back", "back", Value::Null)];
                if step == "set" && !input.required {
                    row.push(Button::action("Clear", "clear", Value::Null));
                }
                row.push(Button::action("Cancel", "cancel", Value::Null).danger());
                view = view.row(row);
                Ok(view)
            }
            "options" => {
                let tool = tool_of(cx, state)?;
                let saved = cx.station.settings().get(cx.account, &tool).await?;
                Ok(Self::summary(cx, &tool, state, &saved))
            }
            "pick_setting" => {
                let tool = tool_of(cx, state)?;
                let options = tool
                    .inputs
                    .iter()
                    .map(|(n, d)| {
                        let label = if d.advanced { format!("{n} (advanced)") } else { n.clone() };
                        Button::action(label, "choose", json!({"input": n}))
                    })
                    .collect();
                Ok(View::text("Which setting?")
                    .row(vec![Button::action("◀ Back", "back", Value::Null)])
                    .ask("Setting", InputKind::Choice { options }))
            }
            "confirm" => {
                let price = state.get("price").and_then(Value::as_i64).unwrap_or(0);
                let balance = cx.station.points(&cx.account.id).await?;
                Ok(View::text(
                    Rich::plain("This run costs ")
                        .bold(points(price))
                        .text(format!(" (you have {} available). Run it?", balance.available())),
                )
                .row(vec![
                    Button::action(format!("Yes, spend {price}"), "confirm", Value::Null).primary(),
                    Button::action("Cancel", "cancel", Value::Null).danger(),
                ]))
            }
            other => Ok(View::text(format!("(unknown step {other})"))),
        }
    }

    async fn input(&self, cx: &Cx<'_>, step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        match step {
            "tool" => {
                let chosen = match &input {
                    StepInput::Action { name, args } if name == "page" => {
                        return Ok(Next::Stay(with(state, "page", args.get("page").cloned().unwrap_or(json!(0)))));
                    }
                    StepInput::Action { name, args } if name == "choose" => {
                        get_str(args, "tool").and_then(|t| cx.station.find_tool(t, cx.account))
                    }
                    StepInput::Text(t) => cx.station.find_tool(t.trim(), cx.account).or_else(|| {
                        pickable_tools(cx, false).into_iter().find(|x| x.name.eq_ignore_ascii_case(t.trim()))
                    }),
                    _ => None,
                };
                let Some(tool) = chosen else {
                    return Ok(Next::Invalid("I don't know that tool. Choose one of the buttons.".into()));
                };
                let images: Vec<String> = state
                    .get("images")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let s = with(state, "tool", tool.id.clone());
                match Self::place_inputs(&tool, s, "", &images) {
                    Ok(s) => Self::proceed(cx, s).await,
                    Err(why) => Ok(Next::Invalid(why)),
                }
            }
            "ask" | "set" => {
                let tool = tool_of(cx, state)?;
                let name = get_str(state, "asking").unwrap_or("").to_string();
                let Some(def) = tool.inputs.get(&name) else { return Ok(Next::Back) };
                let value = match input {
                    StepInput::Action { name: a, .. } if a == "clear" => {
                        let params = params_of(state);
                        let mut p = params.clone();
                        p.remove(&name);
                        return Ok(Next::Goto("options".into(), with(state, "params", p)));
                    }
                    StepInput::Action { name: a, args } if a == "choose" => {
                        args.get("value").cloned().unwrap_or(Value::Null)
                    }
                    StepInput::Text(t) if def.kind == InputType::Image => {
                        let _ = t;
                        return Ok(Next::Invalid(format!("{name} needs an image: send a photo.")));
                    }
                    StepInput::Text(t) => coerce_text(def, &t),
                    StepInput::Images(m) if def.kind == InputType::Image => {
                        Value::String(format!("media:{}", m.first().cloned().unwrap_or_default()))
                    }
                    StepInput::Images(_) => {
                        return Ok(Next::Invalid(format!("{name} needs text, not an image.")));
                    }
                    StepInput::Form(f) => match f.get(&name) {
                        Some(v) => coerce_value(def, v),
                        None => return Ok(Next::Invalid(format!("the form has no {name} field"))),
                    },
                    StepInput::Action { .. } => return Ok(Next::Invalid("Use the buttons of this step.".into())),
                };
                if def.kind != InputType::Image
                    && let Err(why) = check_one(&tool, &name, &value)
                {
                    return Ok(Next::Invalid(why));
                }
                let mut params = params_of(state);
                params.insert(name, value);
                let s = without(&with(state, "params", params), "asking");
                if step == "set" { Ok(Next::Goto("options".into(), s)) } else { Self::proceed(cx, s).await }
            }
            "options" => match input {
                StepInput::Action { name, .. } if name == "run" => {
                    let tool = tool_of(cx, state)?;
                    // Required inputs may still be missing after a "clear".
                    if let Some(missing) = Self::missing(cx, &tool, &params_of(state)).await? {
                        return Ok(Next::Goto("ask".into(), with(state, "asking", missing)));
                    }
                    Self::run(cx, &tool, state.clone()).await
                }
                StepInput::Action { name, .. } if name == "settings" => {
                    Ok(Next::Goto("pick_setting".into(), state.clone()))
                }
                StepInput::Text(t) => {
                    let tool = tool_of(cx, state)?;
                    let Some(pairs) = parse_assignments(&t) else {
                        return Ok(Next::Invalid(
                            "To change a setting send name=value (for example steps=30), or press Run.".into(),
                        ));
                    };
                    let mut params = params_of(state);
                    for (k, v) in pairs {
                        let Some(def) = tool.inputs.get(&k) else {
                            return Ok(Next::Invalid(format!(
                                "{} has no input called {k}. {}",
                                tool.name,
                                inputs_list(&tool)
                            )));
                        };
                        if def.kind == InputType::Image {
                            return Ok(Next::Invalid(format!("{k} takes a picture: use the buttons to change it.")));
                        }
                        let value = coerce_text(def, &v);
                        if let Err(why) = check_one(&tool, &k, &value) {
                            return Ok(Next::Invalid(why));
                        }
                        params.insert(k, value);
                    }
                    Ok(Next::Stay(with(state, "params", params)))
                }
                StepInput::Form(values) => {
                    let tool = tool_of(cx, state)?;
                    let mut params = params_of(state);
                    for (k, v) in values {
                        if let Some(def) = tool.inputs.get(&k) {
                            let value = coerce_value(def, &v);
                            if let Err(why) = check_one(&tool, &k, &value) {
                                return Ok(Next::Invalid(why));
                            }
                            params.insert(k, value);
                        }
                    }
                    Ok(Next::Stay(with(state, "params", params)))
                }
                _ => Ok(Next::Invalid("Press Run, or change a setting.".into())),
            },
            "pick_setting" => {
                let tool = tool_of(cx, state)?;
                let name = match input {
                    StepInput::Action { name, args } if name == "choose" => get_str(&args, "input").map(str::to_owned),
                    StepInput::Text(t) => Some(t.trim().to_string()),
                    _ => None,
                };
                match name.filter(|n| tool.inputs.contains_key(n)) {
                    Some(n) => Ok(Next::Goto("set".into(), with(state, "asking", n))),
                    None => Ok(Next::Invalid("Choose one of the settings listed.".into())),
                }
            }
            "confirm" => match input {
                StepInput::Action { name, .. } if name == "confirm" => {
                    let tool = tool_of(cx, state)?;
                    Self::run(cx, &tool, with(state, "confirmed", true)).await
                }
                _ => Ok(Next::Invalid("Press Yes to run it, or Cancel.".into())),
            },
            _ => Ok(Next::Invalid("This step takes no input.".into())),
        }
    }
}
