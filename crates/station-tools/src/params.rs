//! Merging a request's parameters with saved preferences and defaults, and checking them.

use std::fmt;

use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::def::{InputDef, InputType, Rule, ToolDef};

/// Tolerance for `step` checks: float steps such as 0.1 are not exact in binary.
const STEP_TOLERANCE: f64 = 1e-9;

/// One parameter that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The input name.
    pub field: String,
    /// Why the value was refused.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every bad parameter of a request, reported together so users can fix all at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ParamErrors(pub Vec<FieldError>);

impl fmt::Display for ParamErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Parameters ready to bind into a workflow.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ResolvedParams {
    /// Every input that has a value, in the tool's input order.
    pub values: Map<String, Value>,
    /// Seed inputs whose value was picked at random (the job stores it for reproduction).
    pub random_seeds: Vec<String>,
}

/// Merges `explicit` (this request) over `saved` (the user's preferences for this tool) over
/// the tool's defaults, checks every value, and picks random seeds where asked.
///
/// Unknown keys in `explicit` are errors; unknown keys in `saved` are dropped, and a saved value
/// the tool no longer accepts falls back to the default, because tools change under saved
/// preferences and that must not lock a user out.
pub fn resolve_params<R: Rng + ?Sized>(
    tool: &ToolDef,
    explicit: &Map<String, Value>,
    saved: &Map<String, Value>,
    rng: &mut R,
) -> Result<ResolvedParams, ParamErrors> {
    resolve_params_with_defaults(tool, explicit, saved, &Map::new(), rng)
}

/// [`resolve_params`] with `defaults` in place of the tool's own defaults for
/// the inputs it names (a tool's `base_model_defaults` for the chosen model).
pub fn resolve_params_with_defaults<R: Rng + ?Sized>(
    tool: &ToolDef,
    explicit: &Map<String, Value>,
    saved: &Map<String, Value>,
    defaults: &Map<String, Value>,
    rng: &mut R,
) -> Result<ResolvedParams, ParamErrors> {
    let mut errors = Vec::new();
    for key in explicit.keys() {
        if !tool.inputs.contains_key(key) {
            let known: Vec<&str> = tool.inputs.keys().map(String::as_str).collect();
            errors
                .push(FieldError { field: key.clone(), reason: format!("unknown input; known: {}", known.join(", ")) });
        }
    }

    let mut out = ResolvedParams::default();
    for (name, def) in &tool.inputs {
        let chosen = match explicit.get(name).filter(|v| !v.is_null()) {
            Some(v) => Some(check_value(def, v, true)),
            None => saved
                .get(name)
                .filter(|v| !v.is_null())
                .and_then(|v| match check_value(def, v, true) {
                    Ok(ok) => Some(Ok(ok)),
                    Err(reason) => {
                        tracing::debug!(tool = %tool.id, input = %name, %reason, "ignoring saved preference");
                        None
                    }
                })
                .or_else(|| defaults.get(name).or(def.default.as_ref()).map(|v| check_value(def, v, false))),
        };
        match chosen {
            Some(Ok(Checked::Value(v))) => {
                if def.required && v.as_str() == Some("") {
                    errors.push(FieldError { field: name.clone(), reason: "required; must not be empty".into() });
                } else {
                    out.values.insert(name.clone(), v);
                }
            }
            Some(Ok(Checked::RandomSeed)) => {
                out.values.insert(name.clone(), random_seed(rng));
                out.random_seeds.push(name.clone());
            }
            Some(Err(reason)) => errors.push(FieldError { field: name.clone(), reason }),
            None if def.kind == InputType::Seed => {
                out.values.insert(name.clone(), random_seed(rng));
                out.random_seeds.push(name.clone());
            }
            None if def.required => errors.push(FieldError { field: name.clone(), reason: "required".into() }),
            None => {}
        }
    }

    check_rules(tool, &out.values, &mut errors);
    if errors.is_empty() { Ok(out) } else { Err(ParamErrors(errors)) }
}

/// The tool's `rules` over the resolved `values`; a rule involving an input
/// that already has an error is skipped (that error says enough).
fn check_rules(tool: &ToolDef, values: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    let given = |n: &str| values.get(n).is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
    let failed: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
    let clean = |names: &[&String]| names.iter().all(|n| !failed.contains(n));
    for rule in &tool.rules {
        match rule {
            Rule::OneOf(list) => {
                let all: Vec<&String> = list.iter().collect();
                if clean(&all) && !list.iter().any(|n| given(n)) && !list.is_empty() {
                    let names: Vec<&str> = list.iter().map(String::as_str).collect();
                    errors.push(FieldError {
                        field: list[0].clone(),
                        reason: format!("give one of {}", names.join(", ")),
                    });
                }
            }
            Rule::Requires(map) => {
                for (key, needs) in map {
                    let missing: Vec<&str> =
                        needs.as_slice().iter().filter(|n| !given(n)).map(String::as_str).collect();
                    if given(key) && !missing.is_empty() && clean(&[key]) {
                        errors.push(FieldError {
                            field: key.clone(),
                            reason: format!("only applies together with {}; give it too", missing.join(" and ")),
                        });
                    }
                }
            }
            Rule::Excludes(map) => {
                for (key, others) in map {
                    let clash: Vec<&str> = others.as_slice().iter().filter(|n| given(n)).map(String::as_str).collect();
                    if given(key) && !clash.is_empty() && clean(&[key]) {
                        errors.push(FieldError {
                            field: key.clone(),
                            reason: format!("cannot be combined with {}", clash.join(", ")),
                        });
                    }
                }
            }
        }
    }
}

fn random_seed<R: Rng + ?Sized>(rng: &mut R) -> Value {
    Value::from(rng.random::<u32>())
}

/// The outcome of checking one value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Checked {
    /// The value, normalised to its JSON type.
    Value(Value),
    /// A seed input asked for a random seed.
    RandomSeed,
}

/// Checks `value` against `def`. `lenient` accepts numbers and booleans written as strings
/// (chat and CLI send everything as text); tool files are held to real JSON types.
pub(crate) fn check_value(def: &InputDef, value: &Value, lenient: bool) -> Result<Checked, String> {
    let v = match def.kind {
        InputType::Text => {
            let s = value.as_str().ok_or_else(|| format!("expected text, got {}", describe(value)))?;
            if let Some(max) = def.max_length {
                let len = s.chars().count();
                if len > max {
                    return Err(format!("too long: {len} characters, at most {max} allowed"));
                }
            }
            Value::String(s.to_owned())
        }
        InputType::Integer => {
            let n =
                as_integer(value, lenient).ok_or_else(|| format!("expected an integer, got {}", describe(value)))?;
            check_number(def, n as f64)?;
            Value::from(n)
        }
        InputType::Number => {
            let n = as_number(value, lenient).ok_or_else(|| format!("expected a number, got {}", describe(value)))?;
            check_number(def, n)?;
            Value::Number(Number::from_f64(n).ok_or_else(|| "expected a finite number".to_string())?)
        }
        InputType::Boolean => Value::Bool(
            as_bool(value, lenient).ok_or_else(|| format!("expected true or false, got {}", describe(value)))?,
        ),
        InputType::Enum => {
            let s = value.as_str().filter(|s| def.choices().iter().any(|c| c == s));
            match s {
                Some(s) => Value::String(s.to_owned()),
                None => {
                    return Err(format!("{} is not one of: {}", describe(value), def.choices().join(", ")));
                }
            }
        }
        InputType::Seed => {
            if value.is_null() || value.as_str() == Some("") {
                return Ok(Checked::RandomSeed);
            }
            let n = as_integer(value, lenient).ok_or_else(|| {
                format!("expected a seed (0 to {}, or -1 for random), got {}", u32::MAX, describe(value))
            })?;
            if n == -1 {
                return Ok(Checked::RandomSeed);
            }
            if !(0..=i64::from(u32::MAX)).contains(&n) {
                return Err(format!("seed {n} out of range: must be 0 to {}, or -1 for random", u32::MAX));
            }
            Value::from(n)
        }
        InputType::Image => {
            let s = value
                .as_str()
                .filter(|s| is_media_ref(s))
                .ok_or_else(|| format!("expected a stored media reference like media:<id>, got {}", describe(value)))?;
            Value::String(s.to_owned())
        }
        InputType::Checkpoint => {
            let s = value
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("expected a model file name, got {}", describe(value)))?;
            if !def.choices().is_empty() && !def.choices().iter().any(|c| c == s) {
                return Err(format!("\"{s}\" is not one of: {}", def.choices().join(", ")));
            }
            Value::String(s.to_owned())
        }
        // Which models exist is known to the core (the backends' inventory),
        // which checks the name when a job is submitted.
        InputType::Model => {
            let s = value
                .as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("expected a model name, got {}", describe(value)))?;
            Value::String(s.to_owned())
        }
    };
    Ok(Checked::Value(v))
}

fn check_number(def: &InputDef, n: f64) -> Result<(), String> {
    if let Some(min) = def.min
        && n < min
    {
        return Err(format!("{} is below the minimum {}", fmt_num(n), fmt_num(min)));
    }
    if let Some(max) = def.max
        && n > max
    {
        return Err(format!("{} is above the maximum {}", fmt_num(n), fmt_num(max)));
    }
    if let Some(step) = def.step
        && step > 0.0
    {
        let base = def.min.unwrap_or(0.0);
        let k = ((n - base) / step).round();
        if (n - (base + k * step)).abs() > STEP_TOLERANCE {
            return Err(match def.min {
                Some(min) => format!(
                    "{} is not on the step: must be {} plus a multiple of {}",
                    fmt_num(n),
                    fmt_num(min),
                    fmt_num(step)
                ),
                None => format!("{} is not on the step: must be a multiple of {}", fmt_num(n), fmt_num(step)),
            });
        }
    }
    Ok(())
}

fn fmt_num(n: f64) -> String {
    // f64's Display already prints 2 rather than 2.0 and 0.1 rather than 0.1000…01.
    format!("{n}")
}

fn as_integer(value: &Value, lenient: bool) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        }),
        Value::String(s) if lenient => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                let f = s.parse::<f64>().ok()?;
                (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
            })
        }
        _ => None,
    }
}

fn as_number(value: &Value, lenient: bool) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if lenient => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn as_bool(value: &Value, lenient: bool) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) if lenient => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) if lenient => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Some(true),
            "false" | "no" | "0" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A value typed as text (a chat message, a form field, a CLI `--param`)
/// turned into the input's JSON type, with one vocabulary for every front
/// end: whole numbers for integers and seeds, decimals for numbers,
/// `true/yes/on/1` and `false/no/off/0` (any case) for booleans, a choice
/// matched without regard to case for enums. Empty text means "not given"
/// (`null`) for every input but text, so an empty optional field falls back
/// to saved settings and defaults; text is trimmed. Text that does not parse is returned as
/// it is, so [`resolve_params`] reports why.
pub fn coerce_text(def: &InputDef, text: &str) -> Value {
    let s = text.trim();
    if s.is_empty() && def.kind != InputType::Text {
        return Value::Null;
    }
    let raw = Value::String(s.to_owned());
    let typed = match def.kind {
        InputType::Integer | InputType::Seed => as_integer(&raw, true).map(Value::from),
        InputType::Number => as_number(&raw, true).and_then(Number::from_f64).map(Value::Number),
        InputType::Boolean => as_bool(&raw, true).map(Value::Bool),
        InputType::Enum => def.choices().iter().find(|c| c.eq_ignore_ascii_case(s)).cloned().map(Value::String),
        InputType::Text => Some(raw.clone()),
        InputType::Image | InputType::Checkpoint | InputType::Model => None,
    };
    typed.unwrap_or(raw)
}

/// [`coerce_text`] for a value that may already be typed: strings are read
/// as text typed by a person, anything else is kept as it is.
pub fn coerce_value(def: &InputDef, value: &Value) -> Value {
    match value {
        Value::String(s) => coerce_text(def, s),
        other => other.clone(),
    }
}

/// Checks one input's value of `tool` on its own (other inputs, required or
/// not, are not this check's business). `Err` names the field and says why.
pub fn check_input(tool: &ToolDef, name: &str, value: &Value) -> Result<(), FieldError> {
    let mut explicit = Map::new();
    explicit.insert(name.to_string(), value.clone());
    match resolve_params(tool, &explicit, &Map::new(), &mut rand::rng()) {
        Ok(_) => Ok(()),
        Err(errs) => match errs.0.into_iter().find(|e| e.field == name) {
            Some(e) => Err(e),
            None => Ok(()),
        },
    }
}

/// Whether `s` is a stored media reference `media:<id>` (id: 1–64 of `[A-Za-z0-9_-]`).
pub fn is_media_ref(s: &str) -> bool {
    s.strip_prefix("media:").is_some_and(|id| {
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// A short rendering of a value for error messages, cut so a pasted essay stays readable.
fn describe(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}
