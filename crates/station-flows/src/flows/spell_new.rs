//! `newspell` (the *New spell* button of `/spells`): name the spell → pick
//! its tools in order → for each step, fix values, map an image input from
//! an earlier step's picture, or leave an input to be asked when cast →
//! review (visibility, every problem the core finds) → save → cast it.
//!
//! The draft lives in the flow's state as the steps of a
//! [`SpellSpec`](station_core::spells::SpellSpec), so a restarted process
//! continues where the person was. Every rule is the core's: each change
//! is checked with `Station::spell_problems` and the save is
//! `Station::create_spell`; this flow only gathers and words.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use station_core::spells::{SpellError, SpellSpec, SpellVisibility, StepSpec as SpellStep};
use station_core::tools::{FieldError, InputType, ToolDef, coerce_text, coerce_value};

use super::inputs::{ask_kind, pickable_tools, tool_labels};
use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str, with};
use crate::view::{Block, Button, Field, InputKind, Rich, View};

/// The spell creation flow.
pub struct NewSpell;

const STEPS: &[StepSpec] = &[
    StepSpec { id: "name", accepts: &[Accepts::Text] },
    StepSpec { id: "tool", accepts: &[Accepts::Text] },
    StepSpec { id: "step", accepts: &[Accepts::Text] },
    StepSpec { id: "input", accepts: &[Accepts::Text] },
    StepSpec { id: "review", accepts: &[Accepts::Text] },
];

fn steps_of(state: &Value) -> Vec<SpellStep> {
    state.get("steps").cloned().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default()
}

fn with_steps(state: &Value, steps: &[SpellStep]) -> Value {
    with(state, "steps", serde_json::to_value(steps).expect("steps serialise"))
}

fn editing(state: &Value) -> usize {
    state.get("editing").and_then(Value::as_u64).unwrap_or(0) as usize
}

fn visibility_of(state: &Value) -> SpellVisibility {
    state.get("visibility").cloned().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default()
}

/// The draft as the core reads it.
fn spec_of(state: &Value) -> SpellSpec {
    SpellSpec {
        slug: get_str(state, "slug").unwrap_or("").to_string(),
        name: get_str(state, "name").unwrap_or("").to_string(),
        description: String::new(),
        visibility: visibility_of(state),
        steps: steps_of(state),
        inputs: Default::default(),
    }
}

fn tool_of(cx: &Cx<'_>, step: &SpellStep) -> Result<Arc<ToolDef>, FlowError> {
    cx.station.find_tool(&step.tool, cx.account).ok_or_else(|| FlowError::ToolGone(step.tool.clone()))
}

/// The names of the exposed inputs the steps map.
fn exposed(steps: &[SpellStep]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for s in steps {
        for src in s.inputs_from.values() {
            if let Some(n) = src.strip_prefix("input.")
                && !out.iter().any(|o| o == n)
            {
                out.push(n.to_string());
            }
        }
    }
    out
}

/// An exposed input's name for `param` of step `at` (0-based): the
/// parameter's own name made valid, or with the step's number when an
/// earlier step already asks for one by that name.
fn exposed_name(steps: &[SpellStep], at: usize, param: &str) -> String {
    let mut base: String =
        param.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base = format!("in_{base}");
    }
    base.truncate(56);
    let taken: Vec<String> = steps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .flat_map(|(_, s)| s.inputs_from.values().filter_map(|v| v.strip_prefix("input.").map(str::to_owned)))
        .collect();
    if taken.contains(&base) { format!("{base}_{}", at + 1) } else { base }
}

/// A new step for `tool` at position `at` (0-based), wired sensibly: its
/// first picture comes from the step before (or is asked for when it is the
/// first step); the first step's prompt and every input that needs a value
/// and has no default are asked for when cast; the rest keep the tool's
/// defaults.
fn default_step(steps: &[SpellStep], at: usize, tool: &ToolDef) -> SpellStep {
    let mut step = SpellStep { tool: tool.id.clone(), params: Map::new(), inputs_from: Default::default() };
    let mut picture_mapped = false;
    let prompt = tool.primary_input().filter(|(_, d)| d.kind == InputType::Text).map(|(n, _)| n.to_string());
    for (name, def) in &tool.inputs {
        let needed = def.required && def.default.is_none();
        let source = match def.kind {
            InputType::Image if at > 0 && !picture_mapped => {
                picture_mapped = true;
                Some(format!("step{at}.output[0]"))
            }
            // A model is chosen by the core when none is given.
            InputType::Model => None,
            _ if needed || (at == 0 && prompt.as_deref() == Some(name.as_str())) => {
                let mut all = steps.to_vec();
                all.push(step.clone());
                Some(format!("input.{}", exposed_name(&all, at, name)))
            }
            _ => None,
        };
        if let Some(s) = source {
            step.inputs_from.insert(name.clone(), s);
        }
    }
    step
}

/// Removes step `at`: later steps' pictures from it come from the step
/// before it instead (or lose their source when it was the first), and
/// later step numbers move down.
fn remove_step(steps: &mut Vec<SpellStep>, at: usize) {
    steps.remove(at);
    for s in steps.iter_mut().skip(at) {
        let names: Vec<String> = s.inputs_from.keys().cloned().collect();
        for name in names {
            let src = s.inputs_from[&name].clone();
            let Some((n, tail)) = src.strip_prefix("step").and_then(|r| r.split_once('.')) else { continue };
            let Some(from) = n.parse::<usize>().ok().and_then(|n| n.checked_sub(1)) else { continue };
            match from.cmp(&at) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal if at == 0 => {
                    s.inputs_from.shift_remove(&name);
                }
                std::cmp::Ordering::Equal => {
                    s.inputs_from.insert(name, format!("step{at}.output[0]"));
                }
                std::cmp::Ordering::Greater => {
                    s.inputs_from.insert(name, format!("step{from}.{tail}"));
                }
            }
        }
    }
}

/// How step `at`'s input `name` is set, in words.
fn setting_words(step: &SpellStep, name: &str, def: &station_core::tools::InputDef) -> String {
    if let Some(v) = step.params.get(name) {
        return match v {
            Value::String(s) => format!("{} (fixed)", crate::view::excerpt(s, 40)),
            other => format!("{other} (fixed)"),
        };
    }
    if let Some(src) = step.inputs_from.get(name) {
        if let Some(n) = src.strip_prefix("input.") {
            return if n == name { "asked when cast".to_string() } else { format!("asked when cast (as {n})") };
        }
        if let Some(k) = src.strip_prefix("step").and_then(|r| r.split_once('.')).map(|(k, _)| k.to_string()) {
            return format!("the picture from step {k}");
        }
    }
    match (&def.default, def.kind) {
        (_, InputType::Model) => "chosen for you".to_string(),
        (Some(Value::String(s)), _) if !s.is_empty() => format!("tool default ({})", crate::view::excerpt(s, 30)),
        (Some(v), _) if !v.is_null() && *v != Value::String(String::new()) => format!("tool default ({v})"),
        _ if def.required => "not set yet: it needs a value".to_string(),
        _ => "tool default".to_string(),
    }
}

/// "Step 2 (Resize), width: …" — a core problem as a person reads it.
fn problem_words(cx: &Cx<'_>, steps: &[SpellStep], e: &FieldError) -> String {
    let mut parts = e.field.splitn(3, '.');
    let head = parts.next().unwrap_or("");
    if let Some(n) = head.strip_prefix("step").and_then(|n| n.parse::<usize>().ok()) {
        let tool = steps
            .get(n.saturating_sub(1))
            .and_then(|s| cx.station.find_tool(&s.tool, cx.account))
            .map(|t| t.name.clone());
        let what = match tool {
            Some(t) => format!("Step {n} ({t})"),
            None => format!("Step {n}"),
        };
        let rest: Vec<&str> = parts.collect();
        // step2.params.width / step2.inputs_from.image / step2.width / step2.tool
        let input = match rest.as_slice() {
            [_, name] => Some(*name),
            ["tool"] => None,
            [name] => Some(*name),
            _ => None,
        };
        return match input {
            Some(i) => format!("{what}, {i}: {}", e.reason),
            None => format!("{what}: {}", e.reason),
        };
    }
    match head {
        "slug" | "name" => format!("The name: {}", e.reason),
        "inputs" => format!("The input {}: {}", e.field.split('.').nth(1).unwrap_or(""), e.reason),
        _ => e.reason.clone(),
    }
}

impl NewSpell {
    /// The core's problems with the draft.
    async fn problems(cx: &Cx<'_>, state: &Value) -> Result<Vec<FieldError>, FlowError> {
        Ok(cx.station.spell_problems(cx.account, &spec_of(state)).await?)
    }

    /// After the name: the tool picker, or the review when steps exist.
    fn after_name(state: Value) -> Next {
        if steps_of(&state).is_empty() {
            Next::Goto("tool".into(), with(&state, "page", 0))
        } else {
            Next::Goto("review".into(), state)
        }
    }

    /// Sets the name (and the slug made from it) when the core takes them.
    async fn name(cx: &Cx<'_>, state: &Value, text: &str) -> Result<Next, FlowError> {
        let name = text.trim();
        let slug = station_core::training::slugify(name);
        if slug.len() < 2 {
            return Ok(Next::Invalid(
                "A spell's name needs at least two letters or digits (it is also what people type after /cast).".into(),
            ));
        }
        let s = with(&with(state, "name", name.to_string()), "slug", slug.clone());
        let problems = Self::problems(cx, &s).await?;
        let naming: Vec<&FieldError> = problems.iter().filter(|e| e.field == "slug" || e.field == "name").collect();
        if naming.iter().any(|e| e.field == "slug" && e.reason.contains("taken")) {
            return Ok(Next::Invalid(format!(
                "There is already a spell called {slug} (what people type after /cast). Choose another name."
            )));
        }
        if let Some(e) = naming.first() {
            return Ok(Next::Invalid(format!("That name does not work: {}.", e.reason)));
        }
        Ok(Self::after_name(s))
    }

    /// Fixes `name` of step `at` to the text `raw`, when the core takes it.
    async fn fix(
        cx: &Cx<'_>,
        state: &Value,
        at: usize,
        name: &str,
        value: Value,
    ) -> Result<Result<Value, String>, FlowError> {
        let mut steps = steps_of(state);
        let Some(step) = steps.get_mut(at) else { return Ok(Err("That step is gone.".into())) };
        let tool = tool_of(cx, step)?;
        let Some(def) = tool.inputs.get(name) else {
            let names: Vec<&String> = tool.inputs.keys().collect();
            return Ok(Err(format!(
                "{} has no input called {name}; it has: {}.",
                tool.name,
                names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        };
        if def.kind == InputType::Image {
            return Ok(Err(format!(
                "{name} is a picture: it comes from an earlier step or is asked for when cast, not fixed."
            )));
        }
        let value = match value {
            Value::String(s) => coerce_text(def, &s),
            v => coerce_value(def, &v),
        };
        step.inputs_from.shift_remove(name);
        step.params.insert(name.to_string(), value);
        let s = with_steps(state, &steps);
        let field = format!("step{}.params.{name}", at + 1);
        if let Some(e) = Self::problems(cx, &s).await?.into_iter().find(|e| e.field == field) {
            return Ok(Err(format!("{name} cannot be that: {}.", e.reason)));
        }
        Ok(Ok(s))
    }

    /// Saves the draft; a refusal lists every problem in words.
    async fn save(cx: &Cx<'_>, state: &Value) -> Result<Next, FlowError> {
        let spec = spec_of(state);
        let saved = match cx.station.create_spell(cx.account, spec.clone()).await {
            Ok(s) => s,
            Err(SpellError::Storage(e)) => return Err(e.into()),
            Err(SpellError::Invalid(errors)) => {
                // A replayed press finds the spell it saved the first time.
                if let Some(s) = cx.station.spell(cx.account, &spec.slug).await?
                    && s.owner_id == cx.account.id
                    && s.name == spec.name.trim()
                    && s.steps.len() == spec.steps.len()
                    && s.steps
                        .iter()
                        .zip(&spec.steps)
                        .all(|(a, b)| a.tool == b.tool && a.params == b.params && a.inputs_from == b.inputs_from)
                {
                    s
                } else if errors.iter().any(|e| e.field == "slug" && e.reason.contains("taken")) {
                    return Ok(Next::Goto(
                        "name".into(),
                        with(state, "note", format!("Meanwhile a spell called {} was made.", spec.slug)),
                    ));
                } else {
                    let steps = steps_of(state);
                    let lines: Vec<String> =
                        errors.iter().map(|e| format!("• {}", problem_words(cx, &steps, e))).collect();
                    return Ok(Next::Invalid(format!("The spell was not saved:\n{}", lines.join("\n"))));
                }
            }
        };
        let takes: Vec<String> = saved.inputs.iter().map(|i| i.name.clone()).collect();
        let chain = saved.steps.iter().map(|s| s.tool_name.clone()).collect::<Vec<_>>().join(" → ");
        let mut text = Rich::plain("Saved ").bold(saved.name.clone()).text(format!(" ({chain}). Cast it with "));
        text = text.code(format!("/cast {}", saved.slug));
        text = text.text(match takes.first() {
            Some(first) if saved.inputs.iter().any(|i| i.name == *first && i.def.kind == InputType::Text) => {
                format!(" followed by the {first}, or with the button.")
            }
            _ => ", or with the button.".to_string(),
        });
        Ok(Next::Finish(vec![Out::message(View::text(text).row(vec![
            Button::action("✨ Cast it now", "start", json!({"flow": "cast", "args": {"spell": saved.slug}})).primary(),
            Button::action("📜 Spells", "start", json!({"flow": "spells"})),
        ]))]))
    }

    /// Adds a step for `tool` and opens it.
    fn add(state: &Value, tool: &ToolDef) -> Next {
        let mut steps = steps_of(state);
        let at = steps.len();
        let step = default_step(&steps, at, tool);
        steps.push(step);
        Next::Goto("step".into(), with(&with_steps(state, &steps), "editing", at))
    }
}

#[async_trait::async_trait]
impl Flow for NewSpell {
    fn name(&self) -> &'static str {
        "newspell"
    }

    fn description(&self) -> &'static str {
        "Make a spell: chain tools into one command"
    }

    fn personal(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        STEPS
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        if let Some(off) = cx.station.feature_refusal("spells", cx.account).await {
            return Ok(Next::Finish(vec![Out::message(View::text(off.reason).personal())]));
        }
        let state = json!({"steps": [], "visibility": "private", "page": 0});
        if !start.text.trim().is_empty() {
            // `/newspell NAME`: a name refused is said above the question.
            return match Self::name(cx, &state, &start.text).await? {
                Next::Invalid(why) => Ok(Next::Goto("name".into(), with(&state, "note", why))),
                next => Ok(next),
            };
        }
        Ok(Next::Goto("name".into(), state))
    }

    async fn view(&self, cx: &Cx<'_>, step: &str, state: &Value) -> Result<View, FlowError> {
        let steps = steps_of(state);
        match step {
            "name" => {
                let mut view = View::default();
                if let Some(note) = get_str(state, "note") {
                    view = view.with_text(format!("⚠ {note}"));
                }
                Ok(view
                    .with_text(
                        "A spell runs several tools in a row as one command (for example a picture, then an \
                         upscale). What should it be called?",
                    )
                    .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()])
                    .ask(
                        "Name",
                        InputKind::Text { placeholder: Some("Big dream".into()), multiline: false, max_len: Some(100) },
                    ))
            }
            "tool" => {
                let tools = pickable_tools(cx, !steps.is_empty());
                let page = state.get("page").and_then(Value::as_u64).unwrap_or(0) as usize;
                // 25 in a Discord select menu, 8 buttons elsewhere.
                let per_page = super::inputs::picker_page(cx);
                let pages = tools.len().div_ceil(per_page).max(1);
                let page = page.min(pages - 1);
                let options: Vec<Button> = tools
                    .iter()
                    .zip(tool_labels(&tools))
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
                // An interactions-only chat (Discord) never sees typed text.
                let how =
                    if super::inputs::interactions_only(cx) { "Choose one." } else { "Choose one (or type its name)." };
                let title = if steps.is_empty() {
                    Rich::plain("Step 1 of ")
                        .bold(get_str(state, "name").unwrap_or("your spell").to_string())
                        .text(format!(": which tool runs first? {how}"))
                } else {
                    Rich::plain(format!(
                        "Step {}: which tool works on the picture from step {}? {how}",
                        steps.len() + 1,
                        steps.len()
                    ))
                };
                let mut view = View::text(title);
                if pages > 1 {
                    view = view.with_text(format!("Page {} of {pages}", page + 1));
                }
                let mut row = vec![];
                if !steps.is_empty() {
                    row.push(Button::action("◀ Back", "review", Value::Null));
                }
                row.push(Button::action("Cancel", "cancel", Value::Null).danger());
                Ok(view.row(nav).row(row).ask("Tool", InputKind::Choice { options }))
            }
            "step" => {
                let at = editing(state);
                let Some(s) = steps.get(at) else { return Ok(View::text("That step is gone.")) };
                let tool = tool_of(cx, s)?;
                let fields = tool
                    .inputs
                    .iter()
                    .map(|(n, d)| Field { name: n.clone(), value: setting_words(s, n, d), inline: false })
                    .collect();
                let example = tool
                    .inputs
                    .iter()
                    .find(|(_, d)| matches!(d.kind, InputType::Integer | InputType::Number))
                    .or_else(|| tool.inputs.iter().find(|(_, d)| d.kind != InputType::Image))
                    .map(|(n, d)| match &d.default {
                        Some(v) if !v.is_null() => format!("{n}={}", v.to_string().trim_matches('"')),
                        _ => format!("{n}=…"),
                    });
                let mut hint = "Tap an input to change how it is set".to_string();
                if let Some(e) = example {
                    hint.push_str(&format!(", or send name=value to fix a value (for example {e})"));
                }
                hint.push('.');
                let inputs: Vec<Button> = tool
                    .inputs
                    .keys()
                    .map(|n| Button::action(format!("✏ {n}"), "input", json!({"input": n})))
                    .collect();
                let mut view = View::default().block(Block::Card {
                    title: format!("Step {}: {}", at + 1, tool.name),
                    body: None,
                    image: None,
                    fields,
                });
                view = view.with_text(hint);
                for row in inputs.chunks(3) {
                    view = view.row(row.to_vec());
                }
                Ok(view
                    .row(vec![
                        Button::action("➕ Add a step", "add", Value::Null),
                        Button::action("✅ Done", "review", Value::Null).primary(),
                    ])
                    .row(vec![
                        Button::action("🗑 Remove this step", "remove", Value::Null),
                        Button::action("Cancel", "cancel", Value::Null).danger(),
                    ]))
            }
            "input" => {
                let at = editing(state);
                let name = get_str(state, "input").unwrap_or("");
                let Some(s) = steps.get(at) else { return Ok(View::text("That step is gone.")) };
                let tool = tool_of(cx, s)?;
                let Some(def) = tool.inputs.get(name) else {
                    return Ok(View::text(format!("{} has no input {name}.", tool.name)));
                };
                let mut text = Rich::plain(format!("Step {} ({}), ", at + 1, tool.name))
                    .bold(name.to_string())
                    .text(format!(": now {}.", setting_words(s, name, def)));
                if !def.description.is_empty() {
                    text = text.text(format!(" {}", def.description));
                }
                let mut choices = vec![];
                if def.kind == InputType::Image {
                    text = text.text(" Where does the picture come from?");
                    for k in 1..=at {
                        choices.push(Button::action(format!("🖼 From step {k}"), "from", json!({"step": k})));
                    }
                } else {
                    text = text.text(" Send a value to fix it, or choose.");
                }
                choices.push(Button::action("🙋 Ask when cast", "expose", Value::Null));
                if !(def.required && def.default.is_none()) || def.kind == InputType::Model {
                    choices.push(Button::action("↩ Tool default", "default", Value::Null));
                }
                let mut view = View::text(text);
                for row in choices.chunks(3) {
                    view = view.row(row.to_vec());
                }
                view = view.row(vec![
                    Button::action("◀ Back", "back", Value::Null),
                    Button::action("Cancel", "cancel", Value::Null).danger(),
                ]);
                if def.kind != InputType::Image {
                    view = view.ask(name, ask_kind(cx.station, def));
                }
                Ok(view)
            }
            "review" => {
                let mut fields = vec![];
                for (i, s) in steps.iter().enumerate() {
                    let tool = tool_of(cx, s)?;
                    let set: Vec<String> = tool
                        .inputs
                        .iter()
                        .filter(|(n, _)| s.params.contains_key(*n) || s.inputs_from.contains_key(*n))
                        .map(|(n, d)| format!("{n}: {}", setting_words(s, n, d)))
                        .collect();
                    let value = if set.is_empty() { "tool defaults".to_string() } else { set.join("; ") };
                    fields.push(Field { name: format!("Step {}: {}", i + 1, tool.name), value, inline: false });
                }
                let name = get_str(state, "name").unwrap_or("").to_string();
                let mut view = View::default().block(Block::Card { title: name, body: None, image: None, fields });
                let asks = exposed(&steps);
                view = view.with_text(if asks.is_empty() {
                    "Casting it asks for nothing.".to_string()
                } else {
                    format!("Casting it asks for: {}.", asks.join(", "))
                });
                let problems = Self::problems(cx, state).await?;
                if !problems.is_empty() {
                    let lines: Vec<String> =
                        problems.iter().map(|e| format!("• {}", problem_words(cx, &steps, e))).collect();
                    view = view.with_text(format!("Before it can be saved:\n{}", lines.join("\n")));
                }
                let vis = match visibility_of(state) {
                    SpellVisibility::Private => "🔒 Only you can cast it",
                    SpellVisibility::Unlisted => "🔗 Anyone with its name can cast it",
                    SpellVisibility::Public => "🌍 Listed for everyone",
                };
                view = view.with_text(format!("{vis}."));
                let edits: Vec<Button> = (1..=steps.len())
                    .map(|k| Button::action(format!("✏ Step {k}"), "edit", json!({"step": k})))
                    .collect();
                for row in edits.chunks(4) {
                    view = view.row(row.to_vec());
                }
                Ok(view
                    .row(vec![
                        Button::action("➕ Add a step", "add", Value::Null),
                        Button::action("👁 Who can cast it", "visibility", Value::Null),
                    ])
                    .row(vec![
                        Button::action("💾 Save", "save", Value::Null).primary(),
                        Button::action("Cancel", "cancel", Value::Null).danger(),
                    ]))
            }
            other => Ok(View::text(format!("(unknown step {other})"))),
        }
    }

    async fn input(&self, cx: &Cx<'_>, step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        // Buttons every step after the name shares.
        if let StepInput::Action { name, .. } = &input {
            match name.as_str() {
                "review" => return Ok(Next::Goto("review".into(), state.clone())),
                "add" if steps_of(state).len() >= station_core::spells::MAX_STEPS => {
                    return Ok(Next::Invalid(format!(
                        "A spell has at most {} steps.",
                        station_core::spells::MAX_STEPS
                    )));
                }
                "add" => return Ok(Next::Goto("tool".into(), with(state, "page", 0))),
                _ => {}
            }
        }
        match (step, input) {
            ("name", StepInput::Text(t)) => Self::name(cx, state, &t).await,
            ("tool", StepInput::Action { name, args }) if name == "page" => {
                Ok(Next::Stay(with(state, "page", args.get("page").cloned().unwrap_or(json!(0)))))
            }
            ("tool", input) => {
                let chosen = match &input {
                    StepInput::Action { name, args } if name == "choose" => {
                        get_str(args, "tool").and_then(|t| cx.station.find_tool(t, cx.account))
                    }
                    StepInput::Text(t) => {
                        let t = t.trim().trim_start_matches('/');
                        cx.station
                            .find_tool(t, cx.account)
                            .or_else(|| pickable_tools(cx, false).into_iter().find(|x| x.name.eq_ignore_ascii_case(t)))
                    }
                    _ => None,
                };
                let Some(tool) = chosen else {
                    return Ok(Next::Invalid("I don't know that tool. Choose one of the buttons.".into()));
                };
                Ok(Self::add(state, &tool))
            }
            ("step", StepInput::Action { name, args }) if name == "input" => {
                let input = get_str(&args, "input").unwrap_or("").to_string();
                Ok(Next::Goto("input".into(), with(state, "input", input)))
            }
            ("step", StepInput::Action { name, .. }) if name == "remove" => {
                let mut steps = steps_of(state);
                let at = editing(state);
                if at < steps.len() {
                    remove_step(&mut steps, at);
                    ask_orphan_pictures(cx, &mut steps);
                }
                let s = with_steps(state, &steps);
                if steps.is_empty() {
                    Ok(Next::Goto("tool".into(), with(&s, "page", 0)))
                } else {
                    Ok(Next::Goto("review".into(), s))
                }
            }
            ("step", StepInput::Text(t)) => {
                let (free, pairs) = super::make::split_assignments(&t);
                if !free.trim().is_empty() || pairs.is_empty() {
                    return Ok(Next::Invalid(
                        "Send name=value to fix a value (for example steps=30), or tap an input.".into(),
                    ));
                }
                let mut s = state.clone();
                for (k, v) in pairs {
                    match Self::fix(cx, &s, editing(state), &k, Value::String(v)).await? {
                        Ok(next) => s = next,
                        Err(why) => return Ok(Next::Invalid(why)),
                    }
                }
                Ok(Next::Stay(s))
            }
            ("input", input) => {
                let at = editing(state);
                let name = get_str(state, "input").unwrap_or("").to_string();
                let mut steps = steps_of(state);
                let Some(s) = steps.get_mut(at) else { return Ok(Next::Back) };
                match input {
                    StepInput::Action { name: a, args } if a == "from" => {
                        let k = args.get("step").and_then(Value::as_u64).unwrap_or(0) as usize;
                        if k == 0 || k > at {
                            return Ok(Next::Invalid("A picture can only come from an earlier step.".into()));
                        }
                        s.params.remove(&name);
                        s.inputs_from.insert(name, format!("step{k}.output[0]"));
                        Ok(Next::Goto("step".into(), with_steps(state, &steps)))
                    }
                    StepInput::Action { name: a, .. } if a == "expose" => {
                        let exposed = exposed_name(&steps, at, &name);
                        let s = &mut steps[at];
                        s.params.remove(&name);
                        s.inputs_from.insert(name, format!("input.{exposed}"));
                        Ok(Next::Goto("step".into(), with_steps(state, &steps)))
                    }
                    StepInput::Action { name: a, .. } if a == "default" => {
                        s.params.remove(&name);
                        s.inputs_from.shift_remove(&name);
                        Ok(Next::Goto("step".into(), with_steps(state, &steps)))
                    }
                    StepInput::Action { name: a, args } if a == "choose" => {
                        let value = args.get("value").cloned().unwrap_or(Value::Null);
                        match Self::fix(cx, state, at, &name, value).await? {
                            Ok(s) => Ok(Next::Goto("step".into(), s)),
                            Err(why) => Ok(Next::Invalid(why)),
                        }
                    }
                    StepInput::Text(t) => match Self::fix(cx, state, at, &name, Value::String(t)).await? {
                        Ok(s) => Ok(Next::Goto("step".into(), s)),
                        Err(why) => Ok(Next::Invalid(why)),
                    },
                    _ => Ok(Next::Invalid("Send a value, or use the buttons.".into())),
                }
            }
            ("review", StepInput::Action { name, args }) if name == "edit" => {
                let k = args.get("step").and_then(Value::as_u64).unwrap_or(1).max(1) as usize;
                Ok(Next::Goto("step".into(), with(state, "editing", k - 1)))
            }
            ("review", StepInput::Action { name, .. }) if name == "visibility" => {
                let next = match visibility_of(state) {
                    SpellVisibility::Private => SpellVisibility::Unlisted,
                    SpellVisibility::Unlisted => SpellVisibility::Public,
                    SpellVisibility::Public => SpellVisibility::Private,
                };
                Ok(Next::Stay(with(state, "visibility", next.as_str())))
            }
            ("review", StepInput::Action { name, .. }) if name == "save" => Self::save(cx, state).await,
            ("review", StepInput::Text(t)) if t.trim().eq_ignore_ascii_case("save") => Self::save(cx, state).await,
            ("review", StepInput::Text(_)) => Ok(Next::Invalid("Press Save, or change a step with its button.".into())),
            (_, _) => Ok(Next::Invalid("Use the buttons of this step.".into())),
        }
    }
}

/// A picture input left with no source after a step was removed (the first
/// step's, which has no step before it) is asked for when cast.
fn ask_orphan_pictures(cx: &Cx<'_>, steps: &mut [SpellStep]) {
    for at in 0..steps.len() {
        let Some(tool) = cx.station.find_tool(&steps[at].tool, cx.account) else { continue };
        for (name, def) in &tool.inputs {
            let s = &steps[at];
            let set = s.params.contains_key(name) || s.inputs_from.contains_key(name);
            if def.kind == InputType::Image && def.required && def.default.is_none() && !set {
                let exposed = exposed_name(steps, at, name);
                steps[at].inputs_from.insert(name.clone(), format!("input.{exposed}"));
            }
        }
    }
}
