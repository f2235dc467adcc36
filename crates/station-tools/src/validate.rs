//! Checks on a parsed tool definition beyond what its JSON shape enforces.

use std::collections::HashMap;

use serde_json::Value;

use crate::def::{BindingTarget, InputType, Service, ToolDef};
use crate::params::check_value;

/// A problem at one field path of a tool definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub field: String,
    pub reason: String,
}

fn problem(field: impl Into<String>, reason: impl Into<String>) -> Problem {
    Problem { field: field.into(), reason: reason.into() }
}

/// Whether `id` is a valid tool id: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
pub fn is_valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Whether `cmd` is a valid chat command: `[a-z0-9_]{1,32}` (Telegram's rule).
pub fn is_valid_command(cmd: &str) -> bool {
    (1..=32).contains(&cmd.len()) && cmd.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Whether `name` is a valid input name: `[a-z][a-z0-9_]*`.
pub fn is_valid_input_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Every problem in `tool`, in field order.
pub(crate) fn validate(tool: &ToolDef) -> Vec<Problem> {
    let mut out = Vec::new();
    if !is_valid_id(&tool.id) {
        out.push(problem(
            "id",
            format!(
                "\"{}\" is not a valid id: use 1-64 of a-z, 0-9, _ and -, starting with a letter or digit",
                tool.id
            ),
        ));
    }
    if tool.name.trim().is_empty() {
        out.push(problem("name", "must not be empty"));
    }
    if !is_valid_command(&tool.command) {
        out.push(problem(
            "command",
            format!("\"{}\" is not a valid command: use 1-32 of a-z, 0-9 and _ (Telegram's rule)", tool.command),
        ));
    }
    if tool.version == 0 {
        out.push(problem("version", "must be at least 1"));
    }
    validate_inputs(tool, &mut out);
    validate_rules(tool, &mut out);
    validate_base_model_defaults(tool, &mut out);
    let sections = [
        ("comfyui", tool.comfyui.is_some(), Service::Comfyui),
        ("media", tool.media.is_some(), Service::Media),
        ("comfydeploy", tool.comfydeploy.is_some(), Service::Comfydeploy),
    ];
    let own = match tool.service {
        Service::Comfyui => "comfyui",
        Service::Media => "media",
        Service::Comfydeploy => "comfydeploy",
    };
    for (name, present, service) in sections {
        if present && service != tool.service {
            out.push(problem(name, format!("only allowed with service \"{name}\"; this tool has service \"{own}\"")));
        }
        if !present && service == tool.service {
            let needs = match service {
                Service::Comfyui => "a comfyui section with workflow, bindings and outputs",
                Service::Media => "a media section with an operation",
                Service::Comfydeploy => "a comfydeploy section with deployment_id and inputs",
            };
            out.push(problem(name, format!("missing: service \"{name}\" needs {needs}")));
        }
    }
    match tool.service {
        Service::Comfyui => validate_comfyui(tool, &mut out),
        Service::Comfydeploy => validate_comfydeploy(tool, &mut out),
        Service::Media => {}
    }
    out
}

fn validate_base_model_defaults(tool: &ToolDef, out: &mut Vec<Problem>) {
    if !tool.base_model_defaults.is_empty() && tool.model_input().is_none() {
        out.push(problem("base_model_defaults", "only a tool with a model input takes base_model_defaults"));
    }
    for (base, values) in &tool.base_model_defaults {
        for (name, v) in values {
            let at = format!("base_model_defaults.{base}.{name}");
            match tool.inputs.get(name) {
                None => out.push(problem(at, "no such input")),
                Some(def) => {
                    if let Err(reason) = check_value(def, v, false) {
                        out.push(problem(at, reason));
                    }
                }
            }
        }
    }
}

fn validate_rules(tool: &ToolDef, out: &mut Vec<Problem>) {
    for (i, rule) in tool.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        let empty = match rule {
            crate::def::Rule::OneOf(list) => list.is_empty(),
            crate::def::Rule::Requires(m) | crate::def::Rule::Excludes(m) => {
                m.is_empty() || m.values().any(|n| n.as_slice().is_empty())
            }
        };
        if empty {
            out.push(problem(at.clone(), "names no inputs; remove the rule or list the inputs it relates"));
        }
        for (field, name) in rule.names(&at) {
            if !tool.inputs.contains_key(&name) {
                let known: Vec<&str> = tool.inputs.keys().map(String::as_str).collect();
                out.push(problem(field, format!("no input named \"{name}\"; inputs: {}", known.join(", "))));
            }
        }
    }
}

fn validate_inputs(tool: &ToolDef, out: &mut Vec<Problem>) {
    let mut primary: Option<&str> = None;
    for (name, def) in &tool.inputs {
        let at = |f: &str| {
            if f.is_empty() { format!("inputs.{name}") } else { format!("inputs.{name}.{f}") }
        };
        if !is_valid_input_name(name) {
            out.push(problem(
                at(""),
                format!("\"{name}\" is not a valid input name: use a-z, 0-9 and _, starting with a letter"),
            ));
        }
        if def.animated && def.kind != InputType::Image {
            out.push(problem(
                at("animated"),
                format!("only image inputs take animated; this input is {}", def.kind.as_str()),
            ));
        }
        let numeric = matches!(def.kind, InputType::Integer | InputType::Number);
        for (key, v) in [("min", def.min), ("max", def.max), ("step", def.step)] {
            let Some(v) = v else { continue };
            if !numeric {
                out.push(problem(
                    at(key),
                    format!("only integer and number inputs take {key}; this input is {}", def.kind.as_str()),
                ));
            } else if def.kind == InputType::Integer && v.fract() != 0.0 {
                out.push(problem(at(key), format!("{v} is not a whole number, but the input is an integer")));
            }
        }
        if let (Some(min), Some(max)) = (def.min, def.max)
            && min > max
        {
            out.push(problem(at("min"), format!("min {min} is greater than max {max}")));
        }
        if let Some(step) = def.step
            && step <= 0.0
        {
            out.push(problem(at("step"), format!("step must be positive, got {step}")));
        }
        match def.kind {
            InputType::Enum => match &def.choices {
                None => out.push(problem(at("choices"), "an enum input needs choices")),
                Some(c) if c.is_empty() => out.push(problem(at("choices"), "an enum input needs at least one choice")),
                Some(_) => {}
            },
            InputType::Checkpoint => {}
            InputType::Model if def.choices.is_some() => out
                .push(problem(at("choices"), "a model input takes no choices: they are the models the backends have")),
            _ if def.choices.is_some() => out.push(problem(
                at("choices"),
                format!("only enum and checkpoint inputs take choices; this input is {}", def.kind.as_str()),
            )),
            _ => {}
        }
        if let Some(c) = &def.choices {
            let mut seen = std::collections::HashSet::new();
            for choice in c {
                if !seen.insert(choice) {
                    out.push(problem(at("choices"), format!("\"{choice}\" is listed twice")));
                }
            }
        }
        match (def.kind, &def.model_kind) {
            (InputType::Model, None) => out.push(problem(
                at("kind"),
                "a model input needs a kind: checkpoint, lora, upscale_model, vae or diffusion_model",
            )),
            (InputType::Model, Some(k)) if !MODEL_KINDS.contains(&k.as_str()) => {
                out.push(problem(at("kind"), format!("unknown model kind \"{k}\"; known: {}", MODEL_KINDS.join(", "))));
            }
            (InputType::Model, _) => {}
            (_, Some(_)) => out
                .push(problem(at("kind"), format!("only model inputs take kind; this input is {}", def.kind.as_str()))),
            (_, None) => {}
        }
        if def.base_models.is_some() && def.kind != InputType::Model {
            out.push(problem(
                at("base_models"),
                format!("only model inputs take base_models; this input is {}", def.kind.as_str()),
            ));
        }
        if let Some(n) = def.max_length {
            if def.kind != InputType::Text {
                out.push(problem(
                    at("max_length"),
                    format!("only text inputs take max_length; this input is {}", def.kind.as_str()),
                ));
            } else if n == 0 {
                out.push(problem(at("max_length"), "must be at least 1"));
            }
        }
        if def.primary {
            if !matches!(def.kind, InputType::Text | InputType::Image) {
                out.push(problem(
                    at("primary"),
                    format!("a primary input must be text or image; this input is {}", def.kind.as_str()),
                ));
            }
            match primary {
                Some(first) => out.push(problem(
                    at("primary"),
                    format!("a tool has at most one primary input, and \"{first}\" already is"),
                )),
                None => primary = Some(name),
            }
        }
        if let Some(default) = &def.default {
            if def.kind == InputType::Image {
                out.push(problem(
                    at("default"),
                    "image inputs cannot have a default: images are the user's own uploads",
                ));
            } else if def.kind == InputType::Seed && !default.is_number() {
                out.push(problem(at("default"), "a seed default must be a number (-1 for random)"));
            } else if let Err(reason) = check_value(def, default, false) {
                out.push(problem(at("default"), reason));
            }
        }
    }
}

fn validate_comfyui(tool: &ToolDef, out: &mut Vec<Problem>) {
    let Some(comfy) = &tool.comfyui else { return };
    let Some(nodes) = comfy.workflow.as_object() else {
        out.push(problem(
            "comfyui.workflow",
            "must be an API-format graph: an object of node id -> {class_type, inputs}",
        ));
        return;
    };
    if nodes.is_empty() {
        out.push(problem("comfyui.workflow", "the graph has no nodes"));
    }
    for (id, node) in nodes {
        let at = format!("comfyui.workflow.{id}");
        let Some(node) = node.as_object() else {
            out.push(problem(at, "a node must be an object with class_type and inputs"));
            continue;
        };
        match node.get("class_type") {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => out.push(problem(format!("{at}.class_type"), "must be a non-empty string")),
            None => out.push(problem(format!("{at}.class_type"), "missing")),
        }
        match node.get("inputs") {
            Some(Value::Object(inputs)) => {
                for (key, v) in inputs {
                    if let Some((target, _)) = as_link(v)
                        && !nodes.contains_key(target)
                    {
                        out.push(problem(
                            format!("{at}.inputs.{key}"),
                            format!("links to node \"{target}\", which is not in the workflow"),
                        ));
                    }
                }
            }
            Some(_) => out.push(problem(format!("{at}.inputs"), "must be an object")),
            None => out.push(problem(format!("{at}.inputs"), "missing")),
        }
    }

    let mut taken: HashMap<&str, &str> = HashMap::new();
    for (input, targets) in &comfy.bindings {
        let at = format!("comfyui.bindings.{input}");
        if !tool.inputs.contains_key(input) {
            let known: Vec<&str> = tool.inputs.keys().map(String::as_str).collect();
            out.push(problem(
                &at,
                format!("binds \"{input}\", which is not an input of this tool; inputs: {}", known.join(", ")),
            ));
        }
        if targets.is_empty() {
            out.push(problem(
                &at,
                "an empty binding list is not allowed: bind the input to at least one node_id.inputs.field, or remove the input",
            ));
        }
        for (i, target) in targets.iter().enumerate() {
            let at = format!("{at}[{i}]");
            let Some(t) = BindingTarget::parse(target) else {
                out.push(problem(at, format!("\"{target}\" is not of the form node_id.inputs.field")));
                continue;
            };
            let Some(node) = nodes.get(t.node) else {
                out.push(problem(at, format!("binds to node \"{}\", which is not in the workflow", t.node)));
                continue;
            };
            let Some(node_inputs) = node.get("inputs").and_then(Value::as_object) else {
                continue; // already reported on the node itself
            };
            match node_inputs.get(t.field) {
                None => {
                    let class = node.get("class_type").and_then(Value::as_str).unwrap_or("?");
                    let keys: Vec<&str> = node_inputs.keys().map(String::as_str).collect();
                    out.push(problem(
                        at,
                        format!(
                            "node \"{}\" ({class}) has no input \"{}\"; it has: {}",
                            t.node,
                            t.field,
                            keys.join(", ")
                        ),
                    ));
                    continue;
                }
                Some(v) if as_link(v).is_some() => out.push(problem(
                    &at,
                    format!("\"{target}\" is a link between nodes; writing a value there would cut the graph"),
                )),
                Some(_) => {}
            }
            if let Some(other) = taken.insert(target.as_str(), input.as_str())
                && other != input
            {
                out.push(problem(at, format!("\"{target}\" is already bound to input \"{other}\"")));
            }
        }
    }
    for name in tool.inputs.keys() {
        if !comfy.bindings.contains_key(name) {
            out.push(problem(
                format!("inputs.{name}"),
                format!("not bound into the workflow: add \"{name}\": [\"node_id.inputs.field\"] to comfyui.bindings"),
            ));
        }
    }

    if comfy.outputs.is_empty() && comfy.saved_file.is_none() {
        out.push(problem("comfyui.outputs", "needs at least one output node (usually the SaveImage node)"));
    }
    for (i, id) in comfy.outputs.iter().enumerate() {
        if !nodes.contains_key(id) {
            out.push(problem(format!("comfyui.outputs[{i}]"), format!("node \"{id}\" is not in the workflow")));
        }
    }
    if let Some(loras) = &comfy.loras
        && !nodes.contains_key(&loras.node)
    {
        out.push(problem("comfyui.loras.node", format!("node \"{}\" is not in the workflow", loras.node)));
    }
    let in_workflow = |target: &str| {
        BindingTarget::parse(target)
            .is_some_and(|t| nodes.get(t.node).and_then(|n| n.get("inputs")?.get(t.field)).is_some())
    };
    if let Some(target) = &comfy.dataset
        && !in_workflow(target)
    {
        out.push(problem("comfyui.dataset", format!("\"{target}\" is not a node input in the workflow")));
    }
    if let Some(saved) = &comfy.saved_file {
        if !in_workflow(&saved.prefix) {
            out.push(problem(
                "comfyui.saved_file.prefix",
                format!("\"{}\" is not a node input in the workflow", saved.prefix),
            ));
        }
        if saved.folder.is_empty() || saved.folder.contains("..") || saved.folder.starts_with('/') {
            out.push(problem("comfyui.saved_file.folder", "must be a relative folder name such as \"loras\""));
        }
        if let Some(input) = &saved.steps_input
            && !tool.inputs.contains_key(input)
        {
            out.push(problem("comfyui.saved_file.steps_input", format!("\"{input}\" is not an input of the tool")));
        }
        if saved.extension.is_empty() || !saved.extension.bytes().all(|b| b.is_ascii_alphanumeric()) {
            out.push(problem("comfyui.saved_file.extension", "must be letters and digits, without the dot"));
        }
    }
}

fn validate_comfydeploy(tool: &ToolDef, out: &mut Vec<Problem>) {
    let Some(spec) = &tool.comfydeploy else { return };
    let id = spec.deployment_id.trim();
    if id.is_empty() {
        out.push(problem("comfydeploy.deployment_id", "must not be empty: the deployment's id at the provider"));
    } else if id.len() > 200 || id.chars().any(|c| c.is_whitespace() || c == '/') {
        out.push(problem(
            "comfydeploy.deployment_id",
            format!("\"{id}\" is not a deployment id: at most 200 characters, no spaces or /"),
        ));
    }
    let mut external: HashMap<&str, &str> = HashMap::new();
    for (input, name) in &spec.inputs {
        let at = format!("comfydeploy.inputs.{input}");
        if !tool.inputs.contains_key(input) {
            let known: Vec<&str> = tool.inputs.keys().map(String::as_str).collect();
            out.push(problem(
                &at,
                format!("maps \"{input}\", which is not an input of this tool; inputs: {}", known.join(", ")),
            ));
        }
        if name.trim().is_empty() {
            out.push(problem(&at, "the deployment's external input name must not be empty"));
        } else if let Some(other) = external.insert(name.as_str(), input.as_str()) {
            out.push(problem(&at, format!("external input \"{name}\" is already filled by input \"{other}\"")));
        }
    }
    for (name, def) in &tool.inputs {
        if !spec.inputs.contains_key(name) {
            out.push(problem(
                format!("inputs.{name}"),
                format!("not sent to the deployment: add \"{name}\": \"EXTERNAL_INPUT_NAME\" to comfydeploy.inputs"),
            ));
        }
        if def.kind == InputType::Model {
            out.push(problem(
                format!("inputs.{name}.type"),
                "a hosted deployment has its models built in: use an enum or checkpoint input with choices instead of a model input",
            ));
        }
    }
}

/// `["node_id", output_index]` is how API-format graphs link nodes.
pub(crate) fn as_link(v: &Value) -> Option<(&str, u64)> {
    match v.as_array()?.as_slice() {
        [Value::String(node), Value::Number(idx)] => Some((node.as_str(), idx.as_u64()?)),
        _ => None,
    }
}

/// The model kinds a `model` input may name (`"kind"`), as the backends'
/// inventory files them.
pub const MODEL_KINDS: [&str; 5] = ["checkpoint", "lora", "upscale_model", "vae", "diffusion_model"];
