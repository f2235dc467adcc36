//! Discord's documented limits for messages, modals and application commands.
//!
//! Every check returns the JSON path of the offending field and the reason,
//! the way Discord's `50035 Invalid Form Body` errors do.

use std::collections::HashSet;

use serde_json::Value;

/// One rejected field: its path (`embeds.0.description`) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path into the request body.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

fn err(path: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError { path: path.into(), reason: reason.into() }
}

fn chars(v: &Value) -> usize {
    v.as_str().map(|s| s.chars().count()).unwrap_or(0)
}

fn max_len(out: &mut Vec<FieldError>, body: &Value, key: &str, path: &str, max: usize) {
    if let Some(v) = body.get(key)
        && chars(v) > max
    {
        out.push(err(format!("{path}{key}"), format!("must be {max} or fewer in length (got {})", chars(v))));
    }
}

/// Checks a message body (create or edit) against Discord's limits.
/// `files` is the number of uploaded files that come with it.
pub fn message(body: &Value, files: usize) -> Vec<FieldError> {
    let mut out = vec![];
    max_len(&mut out, body, "content", "", 2000);
    if let Some(embeds) = body.get("embeds").and_then(Value::as_array) {
        if embeds.len() > 10 {
            out.push(err("embeds", format!("must be 10 or fewer in length (got {})", embeds.len())));
        }
        let mut total = 0;
        for (i, e) in embeds.iter().enumerate() {
            let p = format!("embeds.{i}.");
            max_len(&mut out, e, "title", &p, 256);
            max_len(&mut out, e, "description", &p, 4096);
            total += chars(&e["title"]) + chars(&e["description"]) + chars(&e["footer"]["text"]);
            if let Some(footer) = e.get("footer") {
                max_len(&mut out, footer, "text", &format!("{p}footer."), 2048);
            }
            if let Some(fields) = e.get("fields").and_then(Value::as_array) {
                if fields.len() > 25 {
                    out.push(err(format!("{p}fields"), "must be 25 or fewer in length"));
                }
                for (j, f) in fields.iter().enumerate() {
                    let fp = format!("{p}fields.{j}.");
                    for key in ["name", "value"] {
                        if chars(&f[key]) == 0 {
                            out.push(err(format!("{fp}{key}"), "must not be empty"));
                        }
                    }
                    max_len(&mut out, f, "name", &fp, 256);
                    max_len(&mut out, f, "value", &fp, 1024);
                    total += chars(&f["name"]) + chars(&f["value"]);
                }
            }
        }
        if total > 6000 {
            out.push(err("embeds", format!("embed text must total 6000 or fewer characters (got {total})")));
        }
    }
    if let Some(rows) = body.get("components").and_then(Value::as_array) {
        out.extend(components(rows));
    }
    let listed = body.get("attachments").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
    if files > 10 || listed > 10 {
        out.push(err("attachments", format!("must be 10 or fewer in length (got {})", files.max(listed))));
    }
    out
}

/// Checks message components: ≤ 5 action rows; ≤ 5 buttons or one select per row.
pub fn components(rows: &[Value]) -> Vec<FieldError> {
    let mut out = vec![];
    if rows.len() > 5 {
        out.push(err("components", format!("must be 5 or fewer in length (got {})", rows.len())));
    }
    let mut ids = HashSet::new();
    for (i, row) in rows.iter().enumerate() {
        let p = format!("components.{i}");
        if row["type"] != 1 {
            out.push(err(format!("{p}.type"), "top-level components must be action rows (type 1)"));
            continue;
        }
        let items = row["components"].as_array().cloned().unwrap_or_default();
        if items.is_empty() || items.len() > 5 {
            out.push(err(format!("{p}.components"), format!("must be 1 to 5 in length (got {})", items.len())));
        }
        let selects = items.iter().filter(|c| c["type"] == 3).count();
        if selects > 0 && items.len() > 1 {
            out.push(err(format!("{p}.components"), "a select menu must be alone in its row"));
        }
        for (j, c) in items.iter().enumerate() {
            let cp = format!("{p}.components.{j}.");
            match c["type"].as_u64() {
                Some(2) => {
                    let style = c["style"].as_u64().unwrap_or(0);
                    if !(1..=5).contains(&style) {
                        out.push(err(format!("{cp}style"), "button style must be 1 to 5"));
                    }
                    max_len(&mut out, c, "label", &cp, 80);
                    if style == 5 {
                        if c.get("url").and_then(Value::as_str).is_none() {
                            out.push(err(format!("{cp}url"), "link buttons need a url"));
                        }
                        if c.get("custom_id").is_some() {
                            out.push(err(format!("{cp}custom_id"), "link buttons cannot have a custom_id"));
                        }
                    } else {
                        custom_id(&mut out, c, &cp, &mut ids);
                    }
                }
                Some(3) => {
                    custom_id(&mut out, c, &cp, &mut ids);
                    max_len(&mut out, c, "placeholder", &cp, 150);
                    let opts = c["options"].as_array().cloned().unwrap_or_default();
                    if opts.is_empty() || opts.len() > 25 {
                        out.push(err(
                            format!("{cp}options"),
                            format!("must be 1 to 25 in length (got {})", opts.len()),
                        ));
                    }
                    for (k, o) in opts.iter().enumerate() {
                        let op = format!("{cp}options.{k}.");
                        for key in ["label", "value"] {
                            if chars(&o[key]) == 0 {
                                out.push(err(format!("{op}{key}"), "must not be empty"));
                            }
                            max_len(&mut out, o, key, &op, 100);
                        }
                    }
                }
                other => out.push(err(format!("{cp}type"), format!("unsupported component type {other:?} in a row"))),
            }
        }
    }
    out
}

fn custom_id(out: &mut Vec<FieldError>, c: &Value, path: &str, ids: &mut HashSet<String>) {
    match c.get("custom_id").and_then(Value::as_str) {
        None | Some("") => out.push(err(format!("{path}custom_id"), "is required")),
        Some(id) if id.chars().count() > 100 => {
            out.push(err(format!("{path}custom_id"), "must be 100 or fewer in length"));
        }
        Some(id) => {
            if !ids.insert(id.to_string()) {
                out.push(err(format!("{path}custom_id"), "component custom id cannot be duplicated"));
            }
        }
    }
}

/// Checks a modal (interaction response type 9).
pub fn modal(data: &Value) -> Vec<FieldError> {
    let mut out = vec![];
    match data["custom_id"].as_str() {
        Some(id) if !id.is_empty() && id.chars().count() <= 100 => {}
        _ => out.push(err("data.custom_id", "is required and must be 1 to 100 long")),
    }
    let title = chars(&data["title"]);
    if title == 0 || title > 45 {
        out.push(err("data.title", format!("must be 1 to 45 in length (got {title})")));
    }
    let rows = data["components"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() || rows.len() > 5 {
        out.push(err("data.components", format!("must be 1 to 5 in length (got {})", rows.len())));
    }
    for (i, row) in rows.iter().enumerate() {
        let items = row["components"].as_array().cloned().unwrap_or_default();
        if row["type"] != 1 || items.len() != 1 || items[0]["type"] != 4 {
            out.push(err(format!("data.components.{i}"), "each modal row holds exactly one text input (type 4)"));
            continue;
        }
        let t = &items[0];
        let p = format!("data.components.{i}.components.0.");
        if chars(&t["custom_id"]) == 0 || chars(&t["custom_id"]) > 100 {
            out.push(err(format!("{p}custom_id"), "is required and must be 1 to 100 long"));
        }
        let label = chars(&t["label"]);
        if label == 0 || label > 45 {
            out.push(err(format!("{p}label"), format!("must be 1 to 45 in length (got {label})")));
        }
        if !matches!(t["style"].as_u64(), Some(1 | 2)) {
            out.push(err(format!("{p}style"), "must be 1 (short) or 2 (paragraph)"));
        }
        for key in ["min_length", "max_length"] {
            if let Some(n) = t.get(key).and_then(Value::as_u64)
                && n > 4000
            {
                out.push(err(format!("{p}{key}"), "must be 4000 or less"));
            }
        }
        max_len(&mut out, t, "value", &p, 4000);
        max_len(&mut out, t, "placeholder", &p, 100);
    }
    out
}

/// Discord's rule for chat-input command and option names: 1–32 of `-`, `_`,
/// letters and digits, lower case where the letter has a lower case.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=32).contains(&n)
        && name.chars().all(|c| c == '-' || c == '_' || c.is_alphanumeric())
        && name.chars().all(|c| c.to_lowercase().eq(std::iter::once(c)))
}

/// Checks a bulk-overwrite list of application commands.
pub fn commands(list: &[Value]) -> Vec<FieldError> {
    let mut out = vec![];
    let mut seen = HashSet::new();
    let (mut chat, mut user, mut message) = (0, 0, 0);
    for (i, c) in list.iter().enumerate() {
        let p = format!("{i}.");
        let kind = c.get("type").and_then(Value::as_u64).unwrap_or(1);
        let name = c["name"].as_str().unwrap_or("");
        if !seen.insert((kind, name.to_string())) {
            out.push(err(format!("{p}name"), format!("application command names must be unique ({name})")));
        }
        match kind {
            1 => {
                chat += 1;
                if !valid_name(name) {
                    out.push(err(
                        format!("{p}name"),
                        format!("{name:?} does not match ^[-_\\p{{L}}\\p{{N}}]{{1,32}}$ (lower case)"),
                    ));
                }
                let d = chars(&c["description"]);
                if d == 0 || d > 100 {
                    out.push(err(format!("{p}description"), format!("must be 1 to 100 in length (got {d})")));
                }
                let opts = c["options"].as_array().cloned().unwrap_or_default();
                out.extend(options(&opts, &format!("{p}options"), 0));
                let total = command_chars(c);
                if total > 4000 {
                    out.push(err(
                        p.trim_end_matches('.'),
                        format!("command text must total 4000 or fewer characters (got {total})"),
                    ));
                }
            }
            2 | 3 => {
                if kind == 2 {
                    user += 1;
                } else {
                    message += 1;
                }
                let n = name.chars().count();
                if n == 0 || n > 32 {
                    out.push(err(format!("{p}name"), "must be 1 to 32 in length"));
                }
                if chars(&c["description"]) > 0 {
                    out.push(err(format!("{p}description"), "user and message commands have no description"));
                }
                if c.get("options").is_some_and(|o| o.as_array().is_some_and(|a| !a.is_empty())) {
                    out.push(err(format!("{p}options"), "user and message commands have no options"));
                }
            }
            other => out.push(err(format!("{p}type"), format!("unknown command type {other}"))),
        }
    }
    if chat > 100 {
        out.push(err("", format!("at most 100 chat-input commands (got {chat})")));
    }
    if user > 5 || message > 5 {
        out.push(err("", "at most 5 user and 5 message commands"));
    }
    out
}

fn command_chars(c: &Value) -> usize {
    let mut n = chars(&c["name"]) + chars(&c["description"]);
    for o in c["options"].as_array().into_iter().flatten() {
        n += command_chars(o);
        for ch in o["choices"].as_array().into_iter().flatten() {
            n += chars(&ch["name"]) + ch["value"].as_str().map(|s| s.chars().count()).unwrap_or(0);
        }
    }
    n
}

fn options(opts: &[Value], path: &str, depth: u8) -> Vec<FieldError> {
    let mut out = vec![];
    if opts.len() > 25 {
        out.push(err(path, format!("must be 25 or fewer in length (got {})", opts.len())));
    }
    let mut seen_optional = false;
    let mut names = HashSet::new();
    for (i, o) in opts.iter().enumerate() {
        let p = format!("{path}.{i}.");
        let kind = o["type"].as_u64().unwrap_or(0);
        let name = o["name"].as_str().unwrap_or("");
        if !valid_name(name) {
            out.push(err(
                format!("{p}name"),
                format!("{name:?} does not match ^[-_\\p{{L}}\\p{{N}}]{{1,32}}$ (lower case)"),
            ));
        }
        if !names.insert(name.to_string()) {
            out.push(err(format!("{p}name"), format!("option names must be unique ({name})")));
        }
        let d = chars(&o["description"]);
        if d == 0 || d > 100 {
            out.push(err(format!("{p}description"), format!("must be 1 to 100 in length (got {d})")));
        }
        if !(1..=11).contains(&kind) {
            out.push(err(format!("{p}type"), format!("unknown option type {kind}")));
            continue;
        }
        if kind == 1 || kind == 2 {
            if depth >= 2 || (kind == 2 && depth >= 1) {
                out.push(err(format!("{p}type"), "subcommands nest at most group → subcommand"));
            }
            let sub = o["options"].as_array().cloned().unwrap_or_default();
            out.extend(options(&sub, &format!("{p}options"), depth + 1));
            continue;
        }
        let required = o["required"].as_bool().unwrap_or(false);
        if required && seen_optional {
            out.push(err(format!("{p}required"), "required options must be placed before non-required options"));
        }
        seen_optional |= !required;
        if let Some(choices) = o.get("choices").and_then(Value::as_array) {
            if !matches!(kind, 3 | 4 | 10) {
                out.push(err(format!("{p}choices"), "only string, integer and number options have choices"));
            }
            if choices.len() > 25 {
                out.push(err(format!("{p}choices"), format!("must be 25 or fewer in length (got {})", choices.len())));
            }
            for (j, ch) in choices.iter().enumerate() {
                let n = chars(&ch["name"]);
                if n == 0 || n > 100 {
                    out.push(err(format!("{p}choices.{j}.name"), "must be 1 to 100 in length"));
                }
                if ch["value"].as_str().is_some_and(|v| v.chars().count() > 100) {
                    out.push(err(format!("{p}choices.{j}.value"), "must be 100 or fewer in length"));
                }
            }
        }
        if (o.get("min_value").is_some() || o.get("max_value").is_some()) && !matches!(kind, 4 | 10) {
            out.push(err(format!("{p}min_value"), "only integer and number options have min/max values"));
        }
        for key in ["min_length", "max_length"] {
            if let Some(v) = o.get(key) {
                if kind != 3 {
                    out.push(err(format!("{p}{key}"), "only string options have lengths"));
                } else if v.as_u64().is_none_or(|n| n > 6000) {
                    out.push(err(format!("{p}{key}"), "must be 0 to 6000"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_discords_rule() {
        assert!(valid_name("make"));
        assert!(valid_name("txt2img-v2_x"));
        assert!(valid_name("größe"));
        assert!(!valid_name("Make"));
        assert!(!valid_name("two words"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(33)));
    }

    #[test]
    fn message_limits_are_enforced() {
        let ok = json!({"content": "hi", "components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "A", "custom_id": "a"}]}]});
        assert!(message(&ok, 1).is_empty());
        let bad = json!({
            "content": "x".repeat(2001),
            "embeds": (0..11).map(|_| json!({"description": "d"})).collect::<Vec<_>>(),
            "components": (0..6).map(|_| json!({"type": 1, "components": (0..6).map(|i| json!(
                {"type": 2, "style": 1, "label": "b", "custom_id": format!("{i}{}", "c".repeat(100))})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        });
        let errors = message(&bad, 11);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "content",
            "embeds",
            "components",
            "components.0.components",
            "components.0.components.0.custom_id",
            "attachments",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn command_limits_are_enforced() {
        let ok = json!([{"name": "make", "description": "d", "options": [
            {"type": 3, "name": "prompt", "description": "p", "required": true},
            {"type": 4, "name": "steps", "description": "s", "min_value": 1, "max_value": 50}]},
            {"type": 3, "name": "Use in Station…"}]);
        assert!(commands(ok.as_array().unwrap()).is_empty(), "{:?}", commands(ok.as_array().unwrap()));
        let bad = json!([{"name": "Make", "description": "", "options": [
            {"type": 3, "name": "a", "description": "x"},
            {"type": 5, "name": "b", "description": "y", "required": true, "choices": [{"name": "n", "value": "v"}]}]}]);
        let paths: Vec<_> = commands(bad.as_array().unwrap()).into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["0.name", "0.description", "0.options.1.required", "0.options.1.choices"]);
    }
}
