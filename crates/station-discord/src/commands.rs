//! Application commands: one slash command per public tool with typed
//! options from its inputs, the built-in commands, `/admin`, and the
//! "Use in Station…" message command — all within Discord's limits.

use std::collections::HashSet;

use serde_json::{Value, json};
use station_core::tools::{InputDef, InputType, ToolDef};
use station_flows::CommandInfo;

/// Name of the message context-menu command.
pub const USE_IN_STATION: &str = "Use in Station…";
/// Name of the server administration command.
pub const ADMIN: &str = "admin";

/// Chat-input commands Discord accepts per application.
const MAX_CHAT_COMMANDS: usize = 100;

/// Cuts text to `max` characters (adding `…` when cut); empty text becomes `fallback`.
pub fn cut(text: &str, max: usize, fallback: &str) -> String {
    let t = text.trim();
    let t = if t.is_empty() { fallback } else { t };
    if t.chars().count() <= max {
        return t.to_string();
    }
    let mut s: String = t.chars().take(max - 1).collect();
    s.push('…');
    s
}

/// A name Discord accepts for a command or option: lower case, `-`, `_`,
/// letters and digits, 1–32 characters; `None` if nothing usable is left.
pub fn discord_name(name: &str) -> Option<String> {
    let s: String = name
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == '-' || c == '_' || c.is_alphanumeric() { c } else { '_' })
        .take(32)
        .collect();
    (!s.is_empty()).then_some(s)
}

fn option_for(name: &str, def: &InputDef) -> Option<Value> {
    let name = discord_name(name)?;
    let description = cut(&def.description, 100, &name);
    let required = def.required && def.default.is_none();
    let mut o = json!({"name": name, "description": description, "required": required});
    match def.kind {
        InputType::Text => {
            o["type"] = json!(3);
            if let Some(n) = def.max_length {
                o["max_length"] = json!(n.min(6000));
            }
        }
        InputType::Integer | InputType::Seed => {
            o["type"] = json!(4);
            let lo = if def.kind == InputType::Seed { Some(-1.0) } else { def.min };
            let hi = if def.kind == InputType::Seed { Some(4_294_967_295.0) } else { def.max };
            if let Some(m) = lo {
                o["min_value"] = json!(m.ceil() as i64);
            }
            if let Some(m) = hi {
                o["max_value"] = json!(m.floor() as i64);
            }
        }
        InputType::Number => {
            o["type"] = json!(10);
            if let Some(m) = def.min {
                o["min_value"] = json!(m);
            }
            if let Some(m) = def.max {
                o["max_value"] = json!(m);
            }
        }
        InputType::Boolean => o["type"] = json!(5),
        // The models the backends offer change at run time: the option is
        // autocompleted from the inventory (the core still checks the value).
        InputType::Model => {
            o["type"] = json!(3);
            o["autocomplete"] = json!(true);
        }
        InputType::Enum | InputType::Checkpoint => {
            o["type"] = json!(3);
            let choices = def.choices();
            // More than 25 choices cannot be offered as a list: the option takes free text
            // (the core validates it against the tool's choices).
            if !choices.is_empty() && choices.len() <= 25 && choices.iter().all(|c| c.chars().count() <= 100) {
                o["choices"] = choices.iter().map(|c| json!({"name": c, "value": c})).collect();
            }
        }
        InputType::Image => o["type"] = json!(11),
    }
    Some(o)
}

/// The options of a tool's command: required ones first (Discord's rule),
/// primary inputs before the rest, advanced ones last, at most 25.
pub fn tool_options(tool: &ToolDef) -> Vec<Value> {
    let mut entries: Vec<(u8, Value)> = vec![];
    let mut names = HashSet::new();
    for (name, def) in &tool.inputs {
        let Some(o) = option_for(name, def) else { continue };
        if !names.insert(o["name"].as_str().unwrap_or("").to_string()) {
            continue;
        }
        let rank = if o["required"] == true {
            0
        } else if def.primary {
            1
        } else if def.advanced {
            3
        } else {
            2
        };
        entries.push((rank, o));
    }
    entries.sort_by_key(|(r, _)| *r);
    entries.into_iter().take(25).map(|(_, o)| o).collect()
}

/// The built-in commands' options.
fn builtin_options(name: &str) -> Vec<Value> {
    match name {
        "make" => vec![
            json!({"type": 3, "name": "tool", "description": "Tool to run (leave empty to pick from a list)", "required": false, "autocomplete": true}),
            json!({"type": 3, "name": "prompt", "description": "What to make", "required": false}),
            json!({"type": 11, "name": "image", "description": "An input image, for tools that take one", "required": false}),
        ],
        "settings" => {
            vec![
                json!({"type": 3, "name": "tool", "description": "Tool whose defaults to change", "required": false, "autocomplete": true}),
            ]
        }
        "train" => vec![
            json!({"type": 3, "name": "name", "description": "Your LoRA's name (leave empty to continue one)", "required": false, "max_length": 80}),
            json!({"type": 11, "name": "image", "description": "A photo to add to it", "required": false}),
        ],
        "cast" => vec![
            json!({"type": 3, "name": "spell", "description": "The spell (leave empty to pick from a list)", "required": false}),
            json!({"type": 3, "name": "prompt", "description": "Its prompt, and name=value for other inputs", "required": false}),
            json!({"type": 11, "name": "image", "description": "An input image, for spells that take one", "required": false}),
        ],
        "link" => vec![
            json!({"type": 3, "name": "code", "description": "A link code from another platform", "required": false}),
        ],
        _ => vec![],
    }
}

/// `/admin`: server administrators switch tools on and off for their server.
fn admin_command() -> Value {
    let tool = json!({"type": 3, "name": "tool", "description": "Tool id or command", "required": true});
    json!({
        "type": 1,
        "name": ADMIN,
        "description": "Server settings for Station (administrators)",
        "default_member_permissions": "32", // Manage Server
        "dm_permission": false,
        "options": [
            {"type": 1, "name": "tools", "description": "List the tools and whether this server has them on"},
            {"type": 1, "name": "enable-tool", "description": "Switch a tool on in this server", "options": [tool.clone()]},
            {"type": 1, "name": "disable-tool", "description": "Switch a tool off in this server", "options": [tool]},
        ],
    })
}

/// The full bulk-overwrite payload for the menu the engine reports.
pub fn build(menu: &[CommandInfo]) -> Vec<Value> {
    let mut out = vec![];
    let mut seen = HashSet::new();
    seen.insert(ADMIN.to_string());
    for c in menu {
        let Some(name) = discord_name(&c.name) else { continue };
        // Discord shows the app's commands itself; there is no first message to answer.
        if c.name == "start" && c.tool.is_none() {
            continue;
        }
        if !seen.insert(name.clone()) || out.len() >= MAX_CHAT_COMMANDS - 1 {
            if out.len() >= MAX_CHAT_COMMANDS - 1 {
                tracing::warn!(command = %name, "Discord allows 100 commands; this one is left out");
            }
            continue;
        }
        let (description, options) = match &c.tool {
            Some(tool) => {
                let d = if tool.description.trim().is_empty() { &tool.name } else { &tool.description };
                (cut(d, 100, &tool.name), tool_options(tool))
            }
            // A public spell as a command of its own: a prompt and an image, like /cast's.
            None if c.spell.is_some() => (cut(&c.description, 100, &name), builtin_options("cast")[1..].to_vec()),
            None => (cut(&c.description, 100, &name), builtin_options(&name)),
        };
        out.push(json!({"type": 1, "name": name, "description": description, "options": options}));
    }
    out.push(admin_command());
    out.push(json!({"type": 3, "name": USE_IN_STATION}));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_descriptions_fit() {
        assert_eq!(discord_name("Upscale 4x").as_deref(), Some("upscale_4x"));
        assert_eq!(discord_name(&"a".repeat(40)).map(|s| s.len()), Some(32));
        assert_eq!(cut(&"x".repeat(150), 100, "f").chars().count(), 100);
        assert_eq!(cut("  ", 100, "fallback"), "fallback");
    }
}
