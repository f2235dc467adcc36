//! Prompt validation with the real server's error types and shapes (execution.py `validate_prompt`).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

pub(crate) enum Validation {
    /// At least one output node is valid; `outputs` are the ones to run.
    Valid { outputs: Vec<String>, node_errors: Value },
    /// Nothing can run; answered with HTTP 400.
    Invalid { error: Value, node_errors: Value },
}

fn err(kind: &str, message: &str, details: String, extra_info: Value) -> Value {
    json!({"type": kind, "message": message, "details": details, "extra_info": extra_info})
}

/// Returns `Some((node_id, output_index))` when `value` is a link `["id", index]`.
pub(crate) fn as_link(value: &Value) -> Option<(&str, usize)> {
    match value.as_array()?.as_slice() {
        [Value::String(id), idx] => Some((id.as_str(), idx.as_u64()? as usize)),
        _ => None,
    }
}

/// Python's `repr` of a string: single quotes unless the text has one and no double quote.
fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str` of a JSON value as it appears in messages (`True`, `None`, lists with reprs).
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_value(other),
    }
}

/// Python's `repr` of a JSON value.
fn py_value(v: &Value) -> String {
    match v {
        Value::String(s) => py_repr(s),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Null => "None".to_owned(),
        Value::Array(items) => py_list(items),
        other => other.to_string(),
    }
}

/// Python's `str(list)`, as `value_not_in_list` shows the choices.
fn py_list(items: &[Value]) -> String {
    let parts: Vec<String> = items.iter().map(py_value).collect();
    format!("[{}]", parts.join(", "))
}

/// `validate_node_input`: equal types, `*` on either side, or a shared type in
/// comma-separated unions (`IMAGE,MASK`).
fn types_match(received: &Value, wanted: &Value) -> bool {
    if received == wanted {
        return true;
    }
    let (Some(received), Some(wanted)) = (received.as_str(), wanted.as_str()) else {
        return false;
    };
    if received == "*" || wanted == "*" {
        return true;
    }
    let got: Vec<&str> = received.split(',').map(str::trim).collect();
    wanted.split(',').map(str::trim).any(|t| got.contains(&t))
}

pub(crate) fn validate_prompt(
    graph: &Map<String, Value>,
    info: &Map<String, Value>,
    uploaded: &[String],
) -> Validation {
    for (id, node) in graph {
        let Some(class) = node.get("class_type").and_then(Value::as_str) else {
            return Validation::Invalid {
                error: err(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    format!("Node ID '#{id}'"),
                    json!({}),
                ),
                node_errors: json!({}),
            };
        };
        if !info.contains_key(class) {
            return Validation::Invalid {
                error: err(
                    "invalid_prompt",
                    &format!("Cannot execute because node {class} does not exist."),
                    format!("Node ID '#{id}'"),
                    json!({}),
                ),
                node_errors: json!({}),
            };
        }
    }
    let outputs: Vec<String> = graph
        .iter()
        .filter(|(_, node)| {
            let class = node["class_type"].as_str().unwrap_or_default();
            info[class].get("output_node").and_then(Value::as_bool) == Some(true)
        })
        .map(|(id, _)| id.clone())
        .collect();
    if outputs.is_empty() {
        return Validation::Invalid {
            error: err("prompt_no_outputs", "Prompt has no outputs", String::new(), json!({})),
            node_errors: json!({}),
        };
    }
    let mut v = Validator { graph, info, uploaded, results: HashMap::new() };
    let mut node_errors = Map::new();
    let mut good = Vec::new();
    for out in &outputs {
        let mut visited = Vec::new();
        if v.node(out, &mut visited) {
            good.push(out.clone());
        }
        for id in visited {
            let errors = &v.results[&id].1;
            if errors.is_empty() {
                continue;
            }
            let entry = node_errors.entry(id.clone()).or_insert_with(
                || json!({"errors": errors, "dependent_outputs": [], "class_type": graph[&id]["class_type"]}),
            );
            if let Some(deps) = entry["dependent_outputs"].as_array_mut()
                && !deps.contains(&json!(out))
            {
                deps.push(json!(out));
            }
        }
    }
    if good.is_empty() {
        return Validation::Invalid {
            error: err(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                String::new(),
                json!({}),
            ),
            node_errors: Value::Object(node_errors),
        };
    }
    Validation::Valid { outputs: good, node_errors: Value::Object(node_errors) }
}

struct Validator<'a> {
    graph: &'a Map<String, Value>,
    info: &'a Map<String, Value>,
    uploaded: &'a [String],
    results: HashMap<String, (bool, Vec<Value>)>,
}

impl Validator<'_> {
    /// Validates `id` and its ancestors; records every node seen in `visited`.
    fn node(&mut self, id: &str, visited: &mut Vec<String>) -> bool {
        if !visited.iter().any(|v| v == id) {
            visited.push(id.to_owned());
        }
        if let Some((ok, _)) = self.results.get(id) {
            return *ok;
        }
        // Provisional entry guards against cycles.
        self.results.insert(id.to_owned(), (true, Vec::new()));
        let node = &self.graph[id];
        let class = node["class_type"].as_str().unwrap_or_default();
        let inputs = node.get("inputs").and_then(Value::as_object);
        // validate_inputs checks the required and the optional inputs; a missing optional one is fine.
        let mut specs: Vec<(String, Value, bool)> = Vec::new();
        for (section, required) in [("required", true), ("optional", false)] {
            if let Some(map) = self.info[class].pointer(&format!("/input/{section}")).and_then(Value::as_object) {
                specs.extend(map.iter().map(|(name, spec)| (name.clone(), spec.clone(), required)));
            }
        }
        let mut errors = Vec::new();
        let mut ok = true;
        for (name, spec, required) in &specs {
            let Some(value) = inputs.and_then(|i| i.get(name)) else {
                if *required {
                    errors.push(err(
                        "required_input_missing",
                        "Required input is missing",
                        name.clone(),
                        json!({"input_name": name}),
                    ));
                }
                continue;
            };
            let input_type = spec.get(0).cloned().unwrap_or(Value::Null);
            let config = spec.get(1).cloned().unwrap_or(json!({}));
            // `info = (input_type, extra_info)`: what the real errors carry as `input_config`.
            let info = json!([input_type, config]);
            if let Some((src, idx)) = as_link(value) {
                let Some(src_node) = self.graph.get(src) else {
                    errors.push(err(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [string, int]",
                        name.clone(),
                        json!({"input_name": name, "input_config": info, "received_value": value}),
                    ));
                    continue;
                };
                let src_class = src_node["class_type"].as_str().unwrap_or_default();
                let received =
                    self.info[src_class].get("output").and_then(|o| o.get(idx)).cloned().unwrap_or(Value::Null);
                if !types_match(&received, &input_type) {
                    errors.push(err(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        format!(
                            "{name}, received_type({}) mismatch input_type({})",
                            received.as_str().unwrap_or("None"),
                            py_str(&input_type)
                        ),
                        json!({"input_name": name, "input_config": info, "received_type": received, "linked_node": value}),
                    ));
                    continue;
                }
                if !self.node(src, visited) {
                    ok = false;
                }
                continue;
            }
            let extra = json!({"input_name": name, "input_config": info, "received_value": value});
            // Combo choices: `[[choices], {…}]`, or `["COMBO", {"options": [choices]}]` (v3 nodes).
            let choices = match &input_type {
                Value::Array(choices) => Some(choices.clone()),
                Value::String(t) if t == "COMBO" => {
                    Some(config.get("options").and_then(Value::as_array).cloned().unwrap_or_default())
                }
                _ => None,
            };
            match (&input_type, choices) {
                // LoadImage checks the file itself (VALIDATE_INPUTS) instead of the combo list.
                (Value::Array(_), _) if class == "LoadImage" && name == "image" => {
                    let file = value.as_str().unwrap_or_default();
                    if !self.uploaded.iter().any(|u| u == file) {
                        errors.push(err(
                            "custom_validation_failed",
                            "Custom validation failed for node",
                            format!("{name} - Invalid image file: {file}"),
                            json!({"input_name": name}),
                        ));
                    }
                }
                (_, Some(choices)) if !choices.contains(value) => {
                    // Long lists (many model files) are summarised and the config left out.
                    let (list, input_config) = if choices.len() > 20 {
                        (format!("(list of length {})", choices.len()), Value::Null)
                    } else {
                        (py_list(&choices), info.clone())
                    };
                    errors.push(err(
                        "value_not_in_list",
                        "Value not in list",
                        format!("{name}: '{}' not in {list}", py_str(value)),
                        json!({"input_name": name, "input_config": input_config, "received_value": value}),
                    ));
                }
                (Value::String(t), _) if t == "INT" || t == "FLOAT" => {
                    let Some(n) = value.as_f64() else {
                        errors.push(err(
                            "invalid_input_type",
                            &format!("Failed to convert an input value to a {t} value"),
                            format!("{name}, {value}, invalid literal"),
                            extra,
                        ));
                        continue;
                    };
                    if let Some(min) = config.get("min").and_then(Value::as_f64)
                        && n < min
                    {
                        errors.push(err(
                            "value_smaller_than_min",
                            &format!("Value {value} smaller than min of {}", config["min"]),
                            name.clone(),
                            extra,
                        ));
                    } else if let Some(max) = config.get("max").and_then(Value::as_f64)
                        && n > max
                    {
                        errors.push(err(
                            "value_bigger_than_max",
                            &format!("Value {value} bigger than max of {}", config["max"]),
                            name.clone(),
                            extra,
                        ));
                    }
                }
                _ => {}
            }
        }
        let ok = ok && errors.is_empty();
        self.results.insert(id.to_owned(), (ok, errors));
        ok
    }
}
