//! How flows ask for tool inputs and which tools a person can pick: shared
//! by the make and settings flows.

use std::sync::Arc;

use serde_json::{Value, json};
use station_core::Station;
use station_core::tools::{InputDef, InputType, ToolDef, check_input};

use crate::flow::Cx;
use crate::platform::ChatStyle;
use crate::view::{Button, FormField, InputKind, Rich};

/// Choices a picker shows at once: a select menu holds 25 (Discord),
/// buttons read well up to 8 (Telegram, the terminal).
pub fn picker_page(cx: &Cx<'_>) -> usize {
    if cx.flows.style_of(cx.conversation) == ChatStyle::Interactions { 25 } else { 8 }
}

/// Whether people here answer through interactions only (select menus,
/// modals, buttons): nothing typed reaches the bot.
pub fn interactions_only(cx: &Cx<'_>) -> bool {
    cx.flows.style_of(cx.conversation) == ChatStyle::Interactions
}

/// A form of a tool's typed settings (text and numbers; no pictures, no
/// choices — those are picked from a menu) holding `current` values, at
/// most `max` fields, everyday settings before advanced ones: one modal
/// changes them all at once.
pub fn settings_form(
    tool: &ToolDef,
    current: &dyn Fn(&str) -> Option<Value>,
    max: usize,
) -> (Vec<FormField>, Vec<String>) {
    let mut typed: Vec<(&String, &InputDef)> = tool
        .inputs
        .iter()
        .filter(|(_, d)| !matches!(d.kind, InputType::Image | InputType::Enum | InputType::Boolean | InputType::Model))
        .collect();
    typed.sort_by_key(|(_, d)| (d.advanced, !d.primary));
    let mut fields = vec![];
    let mut rest = vec![];
    for (name, def) in typed {
        if fields.len() < max {
            let kind = match def.kind {
                InputType::Integer | InputType::Seed => {
                    InputKind::Number { min: def.min, max: def.max, step: def.step, integer: true }
                }
                InputType::Number => InputKind::Number { min: def.min, max: def.max, step: def.step, integer: false },
                _ => InputKind::Text {
                    placeholder: None,
                    multiline: def.primary,
                    max_len: def.max_length.map(|m| m as u32),
                },
            };
            fields.push(FormField {
                name: name.clone(),
                label: name.clone(),
                kind,
                required: false,
                value: current(name),
            });
        } else {
            rest.push(name.clone());
        }
    }
    (fields, rest)
}

/// Tools the account can pick (public, or admin tools for admins); with
/// `needs_image`, only tools that take an image.
pub fn pickable_tools(cx: &Cx<'_>, needs_image: bool) -> Vec<Arc<ToolDef>> {
    // Tools with a model input only while a backend offers a model for them.
    cx.station
        .listed_tools_for(cx.account)
        .into_iter()
        .filter(|t| !needs_image || t.inputs.values().any(|i| i.kind == InputType::Image))
        .collect()
}

/// Picker labels for tools, one per tool, distinct: a name two tools share
/// is followed by the tool's command ("Resize · /resize", "Resize · /resize-fast").
pub fn tool_labels(tools: &[Arc<ToolDef>]) -> Vec<String> {
    tools
        .iter()
        .map(|t| {
            let shared = tools.iter().filter(|o| o.name.eq_ignore_ascii_case(&t.name)).count() > 1;
            if shared { format!("{} · /{}", t.name, t.command) } else { t.name.clone() }
        })
        .collect()
}

/// Checks one input's value against the tool; `Err` says why in words.
pub fn check_one(tool: &ToolDef, name: &str, value: &Value) -> Result<(), String> {
    check_input(tool, name, value).map_err(|e| e.to_string())
}

/// The input request for one tool input (model inputs offer the models
/// the backends have now, by label and base model).
pub fn ask_kind(station: &Station, input: &InputDef) -> InputKind {
    match input.kind {
        InputType::Model => InputKind::Choice {
            options: station
                .model_choices(input)
                .into_iter()
                .map(|m| Button::action(m.display(), "choose", json!({"value": m.name})))
                .collect(),
        },
        InputType::Integer | InputType::Seed => {
            InputKind::Number { min: input.min, max: input.max, step: input.step, integer: true }
        }
        InputType::Number => InputKind::Number { min: input.min, max: input.max, step: input.step, integer: false },
        InputType::Enum => InputKind::Choice {
            options: input.choices().iter().map(|c| Button::action(c.clone(), "choose", json!({"value": c}))).collect(),
        },
        InputType::Boolean => InputKind::Choice {
            options: vec![
                Button::action("Yes", "choose", json!({"value": true})),
                Button::action("No", "choose", json!({"value": false})),
            ],
        },
        InputType::Image => InputKind::Image { min: 1, max: 1 },
        _ => {
            InputKind::Text { placeholder: None, multiline: input.primary, max_len: input.max_length.map(|m| m as u32) }
        }
    }
}

/// How one input should be asked for, in words.
pub fn ask_text(name: &str, input: &InputDef) -> Rich {
    let what = match input.kind {
        InputType::Image => "Send an image for ".to_string(),
        InputType::Enum | InputType::Boolean | InputType::Model => "Choose ".to_string(),
        _ => "Send ".to_string(),
    };
    let mut r = Rich::plain(what).bold(name);
    if !input.description.is_empty() {
        r = r.text(format!(" — {}", input.description));
    }
    match (input.min, input.max) {
        (Some(a), Some(b)) => r.text(format!(" ({a}–{b})")),
        (Some(a), None) => r.text(format!(" (at least {a})")),
        (None, Some(b)) => r.text(format!(" (at most {b})")),
        _ => r,
    }
}
