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

fn py_list(items: &[Value]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|v| match v {
            Value::String(s) => format!("'{s}'"),
            other => other.to_string(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
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
        let required =
            self.info[class].pointer("/input/required").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut errors = Vec::new();
        let mut ok = true;
        for (name, spec) in &required {
            let Some(value) = inputs.and_then(|i| i.get(name)) else {
                errors.push(err(
                    "required_input_missing",
                    "Required input is missing",
                    name.clone(),
                    json!({"input_name": name}),
                ));
                continue;
            };
            let input_type = spec.get(0).cloned().unwrap_or(Value::Null);
            let config = spec.get(1).cloned().unwrap_or(json!({}));
            if let Some((src, idx)) = as_link(value) {
                let Some(src_node) = self.graph.get(src) else {
                    errors.push(err(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [string, int]",
                        name.clone(),
                        json!({"input_name": name, "input_config": config, "received_value": value}),
                    ));
                    continue;
                };
                let src_class = src_node["class_type"].as_str().unwrap_or_default();
                let received =
                    self.info[src_class].get("output").and_then(|o| o.get(idx)).cloned().unwrap_or(Value::Null);
                if let Value::String(want) = &input_type
                    && want != "*"
                    && received.as_str() != Some(want.as_str())
                {
                    errors.push(err(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        format!(
                            "{name}, received_type({}) mismatch input_type({want})",
                            received.as_str().unwrap_or("None")
                        ),
                        json!({"input_name": name, "input_config": config, "received_type": received, "linked_node": value}),
                    ));
                    continue;
                }
                if !self.node(src, visited) {
                    ok = false;
                }
                continue;
            }
            let extra = json!({"input_name": name, "input_config": config, "received_value": value});
            match &input_type {
                // LoadImage checks the file itself (VALIDATE_INPUTS) instead of the combo list.
                Value::Array(_) if class == "LoadImage" && name == "image" => {
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
                Value::Array(choices) if !choices.contains(value) => {
                    let list = if choices.len() > 20 {
                        format!("(list of length {})", choices.len())
                    } else {
                        py_list(choices)
                    };
                    let shown = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
                    errors.push(err(
                        "value_not_in_list",
                        "Value not in list",
                        format!("{name}: '{shown}' not in {list}"),
                        extra,
                    ));
                }
                Value::String(t) if t == "INT" || t == "FLOAT" => {
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
