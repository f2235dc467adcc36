//! `cast`: choose a spell → fill its missing inputs → cast. `spells` lists
//! what the account can cast. A cast is followed in the conversation by one
//! progress message ("step 2 of 3: Upscale 40 %") that becomes its result
//! (see `Flows::on_cast_event`). Inputs are checked, priced and held by the
//! core's `Station::cast`; this flow only gathers them.

use serde_json::{Map, Value, json};
use station_core::spells::{CastError, CastRequest, ExposedInput, Spell};
use station_core::tools::{InputType, coerce_text, coerce_value};

use super::inputs::{ask_kind, ask_text};
use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str, with, without};
use crate::outbox::JobSource;
use crate::platform::DeliveryKind;
use crate::view::{Block, Button, Field, InputKind, Rich, View, points};

/// The cast flow.
pub struct Cast;

const STEPS: &[StepSpec] = &[
    StepSpec { id: "spell", accepts: &[Accepts::Text] },
    StepSpec { id: "ask", accepts: &[Accepts::Text, Accepts::Image, Accepts::Form] },
    StepSpec { id: "confirm", accepts: &[] },
];

fn inputs_of(state: &Value) -> Map<String, Value> {
    state.get("inputs").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// The spells `account` can cast now (its own and public ones, not broken).
async fn castable(cx: &Cx<'_>) -> Result<Vec<Spell>, FlowError> {
    Ok(cx.station.spells(cx.account).await?.into_iter().filter(|s| s.broken.is_none()).collect())
}

/// A spell by slug, or by name among the castable ones.
async fn find(cx: &Cx<'_>, word: &str) -> Result<Option<Spell>, FlowError> {
    let word = word.trim();
    if word.is_empty() {
        return Ok(None);
    }
    if let Some(s) = cx.station.spell(cx.account, word).await? {
        return Ok(Some(s));
    }
    Ok(castable(cx).await?.into_iter().find(|s| s.name.eq_ignore_ascii_case(word)))
}

/// "Dream → Upscale → Watermark".
fn chain(spell: &Spell) -> String {
    spell.steps.iter().map(|s| s.tool_name.clone()).collect::<Vec<_>>().join(" → ")
}

/// Puts the command's text and images into the spell's inputs: `name=value`
/// words set those inputs, the rest is its first text input, images fill
/// its image inputs in order.
fn place(
    spell: &Spell,
    mut inputs: Map<String, Value>,
    text: &str,
    images: &[String],
) -> Result<Map<String, Value>, String> {
    let (free, pairs) = super::make::split_assignments(text);
    let names = || spell.inputs.iter().map(|i| i.name.clone()).collect::<Vec<_>>().join(", ");
    for (k, v) in pairs {
        let Some(input) = spell.inputs.iter().find(|i| i.name == k) else {
            return Err(format!("{} has no input called {k}; it takes: {}.", spell.name, names()));
        };
        inputs.insert(k, coerce_text(&input.def, &v));
    }
    let free = free.trim();
    if !free.is_empty() {
        let target = spell
            .inputs
            .iter()
            .filter(|i| i.def.kind == InputType::Text && !inputs.contains_key(&i.name))
            .find(|i| i.def.primary)
            .or_else(|| spell.inputs.iter().find(|i| i.def.kind == InputType::Text && !inputs.contains_key(&i.name)));
        match target {
            Some(i) => {
                inputs.insert(i.name.clone(), Value::String(free.to_string()));
            }
            None => {
                return Err(format!(
                    "{} takes no text, so I did not know what to do with \"{}\". It takes: {}.",
                    spell.name,
                    crate::view::excerpt(free, 40),
                    names()
                ));
            }
        }
    }
    let mut media = images.iter();
    for i in spell.inputs.iter().filter(|i| i.def.kind == InputType::Image) {
        if inputs.contains_key(&i.name) {
            continue;
        }
        match media.next() {
            Some(m) => {
                inputs.insert(i.name.clone(), Value::String(format!("media:{m}")));
            }
            None => break,
        }
    }
    Ok(inputs)
}

/// The first required input with no value and no default.
fn missing<'s>(spell: &'s Spell, inputs: &Map<String, Value>) -> Option<&'s ExposedInput> {
    spell.inputs.iter().find(|i| i.def.required && i.def.default.is_none() && !inputs.contains_key(&i.name))
}

impl Cast {
    async fn spell_of(cx: &Cx<'_>, state: &Value) -> Result<Option<Spell>, FlowError> {
        find(cx, get_str(state, "spell").unwrap_or("")).await
    }

    /// Asks the next missing input, or casts.
    async fn proceed(cx: &Cx<'_>, spell: &Spell, state: Value) -> Result<Next, FlowError> {
        if let Some(input) = missing(spell, &inputs_of(&state)) {
            return Ok(Next::Goto("ask".into(), with(&state, "asking", input.name.clone())));
        }
        Self::run(cx, spell, state).await
    }

    async fn run(cx: &Cx<'_>, spell: &Spell, state: Value) -> Result<Next, FlowError> {
        let source = JobSource {
            conversation: cx.conversation.clone(),
            instance: Some(cx.instance_id.to_owned()),
            card: cx.card.take(),
        };
        let req = CastRequest {
            spell: spell.slug.clone(),
            inputs: inputs_of(&state),
            confirmed: state.get("confirmed").and_then(Value::as_bool).unwrap_or(false),
            source: Some(serde_json::to_value(&source).expect("source serialises")),
            // Under Flows::handle_once: a replayed input finds its cast.
            idempotency_key: cx.input.next_job(),
            callback_url: None,
        };
        match cx.station.cast(cx.account, req).await {
            Ok(cast) => {
                let view = cx.flows.cast_progress_view(&cast, None);
                Ok(Next::Finish(vec![Out {
                    view,
                    kind: DeliveryKind::Progress,
                    dedupe_key: Some(format!("progress:cast-{}", cast.id)),
                }]))
            }
            Err(CastError::Submit(station_core::SubmitError::Storage(e))) => Err(e.into()),
            Err(CastError::Submit(station_core::SubmitError::ConfirmationRequired { price, .. })) => {
                Ok(Next::Goto("confirm".into(), with(&state, "price", price)))
            }
            Err(CastError::Submit(e)) => Ok(Next::Invalid(crate::results::refusal_text(&e).replace("inputs.", ""))),
            Err(e @ (CastError::UnknownSpell(_) | CastError::Broken { .. })) => {
                Ok(Next::Finish(vec![Out::message(View::text(match e {
                    CastError::Broken { .. } => {
                        format!("{} cannot run right now: one of its tools is missing.", spell.name)
                    }
                    _ => format!("{} is not available any more. /spells lists the ones you can cast.", spell.name),
                }))]))
            }
        }
    }
}

#[async_trait::async_trait]
impl Flow for Cast {
    fn name(&self) -> &'static str {
        "cast"
    }

    fn description(&self) -> &'static str {
        "Cast a spell: several tools in one go"
    }

    fn steps(&self) -> &'static [StepSpec] {
        STEPS
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        if let Some(off) = cx.station.feature_refusal("spells", cx.account).await {
            return Ok(Next::Finish(vec![Out::message(View::text(off.reason).personal())]));
        }
        // "Cast again" carries the spell and the inputs it ran with.
        let given_spell = get_str(&start.args, "spell").map(str::to_owned);
        let mut inputs = start.args.get("inputs").and_then(Value::as_object).cloned().unwrap_or_default();
        inputs.extend(start.params.clone());
        let (word, rest) = match &given_spell {
            Some(s) => (s.clone(), start.text.clone()),
            None => {
                let t = start.text.trim_start();
                let first = t.split_whitespace().next().unwrap_or("").to_string();
                let rest = t[first.len()..].to_string();
                (first, rest)
            }
        };
        let state = json!({"inputs": inputs, "images": start.images});
        let Some(spell) = find(cx, &word).await? else {
            // An unknown name is said above the list to choose from.
            return Ok(Next::Goto("spell".into(), with(&state, "unknown", word)));
        };
        match place(&spell, inputs, &rest, &start.images) {
            Ok(inputs) => {
                let s = with(&with(&state, "spell", spell.slug.clone()), "inputs", inputs);
                Self::proceed(cx, &spell, s).await
            }
            Err(why) => Ok(Next::Invalid(why)),
        }
    }

    async fn view(&self, cx: &Cx<'_>, step: &str, state: &Value) -> Result<View, FlowError> {
        match step {
            "spell" => {
                let spells = castable(cx).await?;
                if spells.is_empty() {
                    return Ok(View::text(
                        "There are no spells to cast yet. A spell chains tools (for example a picture, then an \
                         upscale) into one command.",
                    )
                    .row(vec![
                        Button::action("➕ New spell", "start", json!({"flow": "newspell"})),
                        Button::action("Close", "cancel", Value::Null),
                    ]));
                }
                let options: Vec<Button> = spells
                    .iter()
                    .take(20)
                    .map(|s| Button::action(s.name.clone(), "choose", json!({"spell": s.slug})))
                    .collect();
                let mut text = match get_str(state, "unknown").filter(|w| !w.is_empty()) {
                    Some(w) => Rich::plain(format!("There is no spell called “{w}”. ")),
                    None => Rich::plain(""),
                };
                text = text.text("Which spell? Each runs several tools in a row.");
                for s in spells.iter().take(20) {
                    text = text.text("\n• ").bold(s.name.clone()).text(format!(" — {}", chain(s)));
                }
                Ok(View::text(text)
                    .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()])
                    .ask("Spell", InputKind::Choice { options }))
            }
            "ask" => {
                let Some(spell) = Self::spell_of(cx, state).await? else {
                    return Ok(View::text("That spell is gone."));
                };
                let name = get_str(state, "asking").unwrap_or("");
                let Some(input) = spell.inputs.iter().find(|i| i.name == name) else {
                    return Ok(View::text(format!("{} has no input {name:?}.", spell.name)));
                };
                let intro = Rich::plain("").bold(spell.name.clone()).text(format!(" ({}). ", chain(&spell)));
                Ok(View::text(intro)
                    .with_text(ask_text(name, &input.def))
                    .ask(name, ask_kind(cx.station, &input.def))
                    .row(vec![
                        Button::action("◀ Back", "back", Value::Null),
                        Button::action("Cancel", "cancel", Value::Null).danger(),
                    ]))
            }
            "confirm" => {
                let Some(spell) = Self::spell_of(cx, state).await? else {
                    return Ok(View::text("That spell is gone."));
                };
                let price = state.get("price").and_then(Value::as_i64).unwrap_or(0);
                let balance = cx.station.points(&cx.account.id).await?;
                let fields = spell
                    .steps
                    .iter()
                    .map(|s| Field { name: format!("Step {}", s.step), value: s.tool_name.clone(), inline: true })
                    .collect();
                Ok(View::default()
                    .block(Block::Card { title: spell.name.clone(), body: None, image: None, fields })
                    .with_text(
                        Rich::plain("All its steps cost ")
                            .bold(points(price))
                            .text(format!(" together (you have {} available). Cast it?", balance.available())),
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
            "spell" => {
                let word = match &input {
                    StepInput::Action { name, args } if name == "choose" => {
                        get_str(args, "spell").or_else(|| get_str(args, "value")).unwrap_or("").to_string()
                    }
                    StepInput::Text(t) => t.trim().to_string(),
                    _ => String::new(),
                };
                let Some(spell) = find(cx, &word).await? else {
                    return Ok(Next::Invalid("I don't know that spell. Choose one of the buttons.".into()));
                };
                let images: Vec<String> = state
                    .get("images")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                match place(&spell, inputs_of(state), "", &images) {
                    Ok(inputs) => {
                        let s = with(&with(state, "spell", spell.slug.clone()), "inputs", inputs);
                        Self::proceed(cx, &spell, s).await
                    }
                    Err(why) => Ok(Next::Invalid(why)),
                }
            }
            "ask" => {
                let Some(spell) = Self::spell_of(cx, state).await? else { return Ok(Next::Cancel) };
                let name = get_str(state, "asking").unwrap_or("").to_string();
                let Some(def) = spell.inputs.iter().find(|i| i.name == name).map(|i| i.def.clone()) else {
                    return Ok(Next::Back);
                };
                let value = match input {
                    StepInput::Action { name: a, args } if a == "choose" => {
                        args.get("value").cloned().unwrap_or(Value::Null)
                    }
                    StepInput::Text(_) if def.kind == InputType::Image => {
                        return Ok(Next::Invalid(format!("{name} needs an image: send a photo.")));
                    }
                    StepInput::Text(t) => coerce_text(&def, &t),
                    StepInput::Images(m) if def.kind == InputType::Image => {
                        Value::String(format!("media:{}", m.first().cloned().unwrap_or_default()))
                    }
                    StepInput::Images(_) => return Ok(Next::Invalid(format!("{name} needs text, not an image."))),
                    StepInput::Form(f) => match f.get(&name) {
                        Some(v) => coerce_value(&def, v),
                        None => return Ok(Next::Invalid(format!("the form has no {name} field"))),
                    },
                    StepInput::Action { .. } => return Ok(Next::Invalid("Use the buttons of this step.".into())),
                };
                let mut inputs = inputs_of(state);
                inputs.insert(name, value);
                let s = without(&with(state, "inputs", inputs), "asking");
                Self::proceed(cx, &spell, s).await
            }
            "confirm" => match input {
                StepInput::Action { name, .. } if name == "confirm" => {
                    let Some(spell) = Self::spell_of(cx, state).await? else { return Ok(Next::Cancel) };
                    Self::run(cx, &spell, with(state, "confirmed", true)).await
                }
                _ => Ok(Next::Invalid("Press Yes to cast it, or Cancel.".into())),
            },
            _ => Ok(Next::Invalid("This step takes no input.".into())),
        }
    }
}
