//! A cook recipe and its trait tree: parsing with every error named by
//! field, and drawing pieces — deterministic from the cook seed and the
//! piece number, so every piece can be drawn again exactly.
//!
//! Randomness is SplitMix64 written out here (not a library generator whose
//! stream may change between versions): a piece drawn today is the same
//! piece drawn after an upgrade.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use station_tools::FieldError;

/// The most values a range category may hold.
pub const MAX_RANGE_VALUES: i64 = 10_000_000;
/// The most categories in a trait tree.
pub const MAX_CATEGORIES: usize = 50;
/// The most traits in one category.
pub const MAX_TRAITS: usize = 500;
/// The name template when the recipe gives none.
pub const DEFAULT_NAME_TEMPLATE: &str = "{{collection}} #{{number}}";

/// One trait of a category: what it is called (the NFT attribute's value),
/// what it puts in the parameters (`[[Category]]` becomes `value`) and how
/// often it is drawn relative to the others (`weight` > 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trait {
    /// Name (shown, and the attribute's value).
    pub name: String,
    /// Prompt fragment replacing `[[Category]]` (the name when not given).
    pub value: String,
    /// Rarity weight, > 0.
    pub weight: f64,
}

/// Generated values `start, start+step, … ≤ end`, written with `zero_pad`
/// digits; `unique` ones are never drawn twice in one cook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// First value.
    pub start: i64,
    /// Last value (inclusive, if on a step).
    pub end: i64,
    /// Distance between values, > 0.
    pub step: i64,
    /// Minimum digits (leading zeros), 0 for none.
    pub zero_pad: u32,
    /// Never repeat a value within one cook.
    pub unique: bool,
}

impl Range {
    /// How many values it holds.
    pub fn count(&self) -> i64 {
        (self.end - self.start) / self.step + 1
    }

    /// The `index`th value, written.
    pub fn value(&self, index: i64) -> String {
        let v = self.start + index * self.step;
        let width = self.zero_pad as usize;
        if v < 0 { format!("-{:0width$}", v.unsigned_abs()) } else { format!("{v:0width$}") }
    }
}

/// What a category draws from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CategoryKind {
    /// Weighted traits.
    Traits {
        /// The traits.
        traits: Vec<Trait>,
    },
    /// A generated range.
    Range(RangeSpec),
}

/// A range as written in a recipe (`{"type": "range", …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSpec {
    /// Always `range`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The range.
    #[serde(flatten)]
    pub range: Range,
}

/// One category of the trait tree: its name (the attribute's `trait_type`
/// and the placeholder `[[name]]`) and what it draws from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    /// Name.
    pub name: String,
    /// Traits or a range.
    #[serde(flatten)]
    pub kind: CategoryKind,
}

/// A cook recipe: what makes each piece and the trait tree it is drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The tool every piece runs (exactly one of `tool` and `spell`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The spell every piece casts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spell: Option<String>,
    /// Fixed parameters; `[[Category]]` in any string is replaced.
    pub params: Map<String, Value>,
    /// How many pieces a cook makes.
    pub supply: i64,
    /// The trait tree, in order.
    pub categories: Vec<Category>,
    /// Each piece's NFT name: `{{collection}}`, `{{number}}` and
    /// `{{Category}}` are replaced.
    pub name_template: String,
    /// Each piece's NFT description (same placeholders).
    pub description: String,
    /// Accounts (ids) who may review besides the owner.
    pub reviewers: Vec<String>,
}

/// One trait chosen for a piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chosen {
    /// The category.
    pub category: String,
    /// The trait's name (for a range: the written value).
    pub name: String,
    /// What replaced `[[category]]`.
    pub value: String,
}

fn bad(errs: &mut Vec<FieldError>, field: impl Into<String>, reason: impl Into<String>) {
    errs.push(FieldError { field: field.into(), reason: reason.into() });
}

fn text(v: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(_) => {
            bad(errs, field, "must be text");
            None
        }
    }
}

fn int(v: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) -> Option<i64> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(n),
            None => {
                bad(errs, field, "must be a whole number");
                None
            }
        },
    }
}

fn unknown_keys(obj: &Map<String, Value>, known: &[&str], prefix: &str, errs: &mut Vec<FieldError>) {
    for k in obj.keys() {
        if !known.contains(&k.as_str()) {
            bad(errs, format!("{prefix}{k}"), format!("is not a recipe field (known: {})", known.join(", ")));
        }
    }
}

/// Every `[[Name]]` placeholder in `s`.
pub fn placeholders(s: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(a) = rest.find("[[") {
        let after = &rest[a + 2..];
        let Some(b) = after.find("]]") else { break };
        out.push(after[..b].trim());
        rest = &after[b + 2..];
    }
    out
}

/// Every string in a JSON value with its field path (`params.prompt`).
fn strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| strings(v, format!("{path}[{i}]"), out)),
        Value::Object(o) => o.iter().for_each(|(k, v)| strings(v, format!("{path}.{k}"), out)),
        _ => {}
    }
}

impl Recipe {
    /// Parses and checks a recipe: every problem with its field
    /// (`categories[1].traits[0].weight`), all at once. `max_supply` is
    /// `collections.max_supply`. Tools and reviewers are checked by the core.
    pub fn parse(v: &Value, max_supply: u64) -> Result<Recipe, Vec<FieldError>> {
        let mut errs = vec![];
        let Some(obj) = v.as_object() else {
            return Err(vec![FieldError { field: "recipe".into(), reason: "must be a JSON object".into() }]);
        };
        unknown_keys(
            obj,
            &["tool", "spell", "params", "supply", "categories", "name_template", "description", "reviewers"],
            "",
            &mut errs,
        );
        let tool = text(obj.get("tool"), "tool", &mut errs).filter(|s| !s.is_empty());
        let spell = text(obj.get("spell"), "spell", &mut errs).filter(|s| !s.is_empty());
        match (&tool, &spell) {
            (None, None) => bad(&mut errs, "tool", "give the tool (or the spell) every piece runs"),
            (Some(_), Some(_)) => bad(&mut errs, "spell", "give a tool or a spell, not both"),
            _ => {}
        }
        let params = match obj.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => {
                bad(&mut errs, "params", "must be an object of parameter names and values");
                Map::new()
            }
        };
        let supply = match int(obj.get("supply"), "supply", &mut errs) {
            None => {
                if !errs.iter().any(|e| e.field == "supply") {
                    bad(&mut errs, "supply", "give how many pieces to make");
                }
                0
            }
            Some(n) if n < 1 => {
                bad(&mut errs, "supply", format!("{n} is not a number of pieces (at least 1)"));
                0
            }
            Some(n) if n as u64 > max_supply => {
                bad(&mut errs, "supply", format!("{n} is over the limit of {max_supply} (collections.max_supply)"));
                0
            }
            Some(n) => n,
        };
        let name_template = text(obj.get("name_template"), "name_template", &mut errs)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_NAME_TEMPLATE.into());
        let description = text(obj.get("description"), "description", &mut errs).unwrap_or_default();
        if name_template.chars().count() > 200 {
            bad(&mut errs, "name_template", "is over 200 characters");
        }
        if description.chars().count() > 2000 {
            bad(&mut errs, "description", "is over 2000 characters");
        }
        let reviewers = match obj.get("reviewers") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, r)| match r.as_str() {
                    Some(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                    _ => {
                        bad(
                            &mut errs,
                            format!("reviewers[{i}]"),
                            "must be an account id or an identity like telegram:123",
                        );
                        None
                    }
                })
                .collect(),
            Some(_) => {
                bad(&mut errs, "reviewers", "must be a list of accounts");
                vec![]
            }
        };
        let categories = parse_categories(obj.get("categories"), supply, &mut errs);
        // Every placeholder names a category.
        let names: Vec<&str> = categories.iter().map(|c| c.name.as_str()).collect();
        let mut found = vec![];
        for (k, v) in &params {
            strings(v, format!("params.{k}"), &mut found);
        }
        for (field, s) in found {
            for p in placeholders(s) {
                if !names.contains(&p) {
                    let known = if names.is_empty() {
                        "there are no categories".into()
                    } else {
                        format!("categories: {}", names.join(", "))
                    };
                    bad(&mut errs, field.clone(), format!("[[{p}]] names no category ({known})"));
                }
            }
        }
        for (field, s) in [("name_template", &name_template), ("description", &description)] {
            for p in template_names(s) {
                if p != "collection" && p != "number" && !names.contains(&p) {
                    bad(&mut errs, field, format!("{{{{{p}}}}} is neither collection, number nor a category"));
                }
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Recipe { tool, spell, params, supply, categories, name_template, description, reviewers })
    }

    /// The recipe as stored and shown.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Every `{{name}}` in a template.
fn template_names(s: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(a) = rest.find("{{") {
        let after = &rest[a + 2..];
        let Some(b) = after.find("}}") else { break };
        out.push(after[..b].trim());
        rest = &after[b + 2..];
    }
    out
}

fn parse_categories(v: Option<&Value>, supply: i64, errs: &mut Vec<FieldError>) -> Vec<Category> {
    let list = match v {
        None | Some(Value::Null) => return vec![],
        Some(Value::Array(a)) => a,
        Some(_) => {
            bad(errs, "categories", "must be a list of categories");
            return vec![];
        }
    };
    if list.len() > MAX_CATEGORIES {
        bad(errs, "categories", format!("has {} categories; at most {MAX_CATEGORIES}", list.len()));
    }
    let mut out: Vec<Category> = vec![];
    for (i, c) in list.iter().enumerate() {
        let at = format!("categories[{i}]");
        let Some(o) = c.as_object() else {
            bad(errs, &at, "must be an object with a name and traits (or a range)");
            continue;
        };
        let name = text(o.get("name"), &format!("{at}.name"), errs).unwrap_or_default();
        if name.is_empty() {
            bad(errs, format!("{at}.name"), "must not be empty");
        } else if name.contains("[[") || name.contains("]]") || name.contains("{{") || name.contains("}}") {
            bad(errs, format!("{at}.name"), "must not hold [[, ]], {{ or }}");
        } else if out.iter().any(|c| c.name == name) {
            bad(errs, format!("{at}.name"), format!("{name:?} is used by another category"));
        }
        let is_range = o.get("type").and_then(Value::as_str) == Some("range");
        if let Some(t) = o.get("type")
            && !is_range
        {
            bad(errs, format!("{at}.type"), format!("{t} is not a category type (only \"range\")"));
            continue;
        }
        if is_range {
            unknown_keys(o, &["name", "type", "start", "end", "step", "zero_pad", "unique"], &format!("{at}."), errs);
            let start = int(o.get("start"), &format!("{at}.start"), errs).unwrap_or(1);
            let end = int(o.get("end"), &format!("{at}.end"), errs);
            let step = int(o.get("step"), &format!("{at}.step"), errs).unwrap_or(1);
            let zero_pad = int(o.get("zero_pad"), &format!("{at}.zero_pad"), errs).unwrap_or(0);
            let unique = match o.get("unique") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    bad(errs, format!("{at}.unique"), "must be true or false");
                    false
                }
            };
            let Some(end) = end else {
                if !errs.iter().any(|e| e.field == format!("{at}.end")) {
                    bad(errs, format!("{at}.end"), "give the range's last value");
                }
                continue;
            };
            if step < 1 {
                bad(errs, format!("{at}.step"), format!("{step} must be at least 1"));
                continue;
            }
            if !(0..=20).contains(&zero_pad) {
                bad(errs, format!("{at}.zero_pad"), format!("{zero_pad} is not a number of digits from 0 to 20"));
                continue;
            }
            if end < start {
                bad(errs, format!("{at}.end"), format!("{end} is before the start {start}"));
                continue;
            }
            let range = Range { start, end, step, zero_pad: zero_pad as u32, unique };
            let count = end.checked_sub(start).map(|d| d / step + 1).unwrap_or(i64::MAX);
            if count > MAX_RANGE_VALUES {
                bad(errs, format!("{at}.end"), format!("the range holds {count} values; at most {MAX_RANGE_VALUES}"));
                continue;
            }
            if unique && supply > count {
                bad(
                    errs,
                    format!("{at}.unique"),
                    format!(
                        "the range holds {count} values, fewer than the supply of {supply}, so they cannot all differ"
                    ),
                );
            }
            out.push(Category { name, kind: CategoryKind::Range(RangeSpec { kind: "range".into(), range }) });
            continue;
        }
        unknown_keys(o, &["name", "traits"], &format!("{at}."), errs);
        let traits = match o.get("traits") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            Some(Value::Array(_) | Value::Null) | None => {
                bad(errs, format!("{at}.traits"), "give at least one trait (or make it a range)");
                continue;
            }
            Some(_) => {
                bad(errs, format!("{at}.traits"), "must be a list of traits");
                continue;
            }
        };
        if traits.len() > MAX_TRAITS {
            bad(errs, format!("{at}.traits"), format!("has {} traits; at most {MAX_TRAITS}", traits.len()));
        }
        let mut list: Vec<Trait> = vec![];
        for (j, t) in traits.iter().enumerate() {
            let tat = format!("{at}.traits[{j}]");
            let Some(t) = t.as_object() else {
                bad(errs, &tat, "must be an object {name, value, weight}");
                continue;
            };
            unknown_keys(t, &["name", "value", "weight"], &format!("{tat}."), errs);
            let tname = text(t.get("name"), &format!("{tat}.name"), errs).unwrap_or_default();
            if tname.is_empty() {
                bad(errs, format!("{tat}.name"), "must not be empty");
            } else if list.iter().any(|x| x.name == tname) {
                bad(errs, format!("{tat}.name"), format!("{tname:?} is in this category already"));
            }
            let value = match t.get("value") {
                None | Some(Value::Null) => tname.clone(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    bad(errs, format!("{tat}.value"), "must be text (the prompt fragment)");
                    String::new()
                }
            };
            if value.contains("[[") {
                bad(errs, format!("{tat}.value"), "must not hold a [[placeholder]]");
            }
            let weight = match t.get("weight") {
                None | Some(Value::Null) => 1.0,
                Some(w) => match w.as_f64() {
                    Some(w) if w.is_finite() && w > 0.0 => w,
                    _ => {
                        bad(errs, format!("{tat}.weight"), format!("{w} must be a number above 0"));
                        1.0
                    }
                },
            };
            list.push(Trait { name: tname, value, weight });
        }
        out.push(Category { name, kind: CategoryKind::Traits { traits: list } });
    }
    out
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64: a small, fixed, reproducible generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0.wrapping_sub(0x9E37_79B9_7F4A_7C15))
    }

    /// A number in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A piece's seed: from the cook seed, its number and its attempt (a
/// regeneration draws a new one); below 2^32 so every tool's seed input
/// takes it.
pub fn piece_seed(cook_seed: u64, number: i64, attempt: i64) -> i64 {
    let s = mix(cook_seed ^ mix(number as u64) ^ mix((attempt as u64) << 32 | 0xC00C));
    (s & 0xFFFF_FFFF) as i64
}

/// Draws pieces of one cook. Unique ranges are a permutation fixed by the
/// cook seed (a sparse Fisher–Yates shuffle of their first `supply`
/// positions), so piece `n` always takes the same value and no two pieces
/// share one.
pub struct Drawer<'a> {
    recipe: &'a Recipe,
    seed: u64,
    perms: HashMap<usize, Vec<i64>>,
}

impl<'a> Drawer<'a> {
    /// A drawer for a cook of `recipe` with `seed`.
    pub fn new(recipe: &'a Recipe, seed: u64) -> Drawer<'a> {
        let mut perms = HashMap::new();
        let supply = recipe.supply.max(1) as u64;
        for (i, c) in recipe.categories.iter().enumerate() {
            if let CategoryKind::Range(RangeSpec { range, .. }) = &c.kind
                && range.unique
            {
                let count = range.count() as u64;
                let take = supply.min(count);
                let mut rng = SplitMix64::new(mix(seed ^ mix(0x5EED_0000 + i as u64)));
                let mut swapped: HashMap<u64, u64> = HashMap::new();
                let mut out = Vec::with_capacity(take as usize);
                for k in 0..take {
                    let j = k + rng.below(count - k);
                    let vj = *swapped.get(&j).unwrap_or(&j);
                    let vk = *swapped.get(&k).unwrap_or(&k);
                    swapped.insert(j, vk);
                    out.push(vj as i64);
                }
                perms.insert(i, out);
            }
        }
        Drawer { recipe, seed, perms }
    }

    /// The traits of piece `number` (1-based).
    pub fn traits(&self, number: i64) -> Vec<Chosen> {
        let base = piece_seed(self.seed, number, 0) as u64 | ((number as u64) << 32);
        self.recipe
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut rng = SplitMix64::new(mix(base ^ mix(self.seed.rotate_left(17) ^ i as u64)));
                match &c.kind {
                    CategoryKind::Traits { traits } => {
                        let total: f64 = traits.iter().map(|t| t.weight).sum();
                        let mut r = rng.unit() * total;
                        let mut pick = &traits[traits.len() - 1];
                        for t in traits {
                            if r < t.weight {
                                pick = t;
                                break;
                            }
                            r -= t.weight;
                        }
                        Chosen { category: c.name.clone(), name: pick.name.clone(), value: pick.value.clone() }
                    }
                    CategoryKind::Range(RangeSpec { range, .. }) => {
                        let index = match self.perms.get(&i) {
                            Some(p) => p[((number - 1).max(0) as usize) % p.len().max(1)],
                            None => rng.below(range.count() as u64) as i64,
                        };
                        let v = range.value(index);
                        Chosen { category: c.name.clone(), name: v.clone(), value: v }
                    }
                }
            })
            .collect()
    }
}

/// `[[Category]]` in every string of `params` replaced by the chosen trait.
pub fn fill(params: &Map<String, Value>, chosen: &[Chosen]) -> Map<String, Value> {
    fn go(v: &Value, chosen: &[Chosen]) -> Value {
        match v {
            Value::String(s) => Value::String(fill_text(s, chosen)),
            Value::Array(a) => Value::Array(a.iter().map(|v| go(v, chosen)).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), go(v, chosen))).collect()),
            other => other.clone(),
        }
    }
    params.iter().map(|(k, v)| (k.clone(), go(v, chosen))).collect()
}

fn fill_text(s: &str, chosen: &[Chosen]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(a) = rest.find("[[") {
        let after = &rest[a + 2..];
        let Some(b) = after.find("]]") else { break };
        out.push_str(&rest[..a]);
        let name = after[..b].trim();
        match chosen.iter().find(|c| c.category == name) {
            Some(c) => out.push_str(&c.value),
            None => out.push_str(&rest[a..a + 2 + b + 2]),
        }
        rest = &after[b + 2..];
    }
    out.push_str(rest);
    out
}

/// A name or description template filled for one piece.
pub fn fill_template(template: &str, collection: &str, number: i64, chosen: &[Chosen]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(a) = rest.find("{{") {
        let after = &rest[a + 2..];
        let Some(b) = after.find("}}") else { break };
        out.push_str(&rest[..a]);
        match after[..b].trim() {
            "collection" => out.push_str(collection),
            "number" => out.push_str(&number.to_string()),
            name => match chosen.iter().find(|c| c.category == name) {
                Some(c) => out.push_str(&c.name),
                None => out.push_str(&rest[a..a + 2 + b + 2]),
            },
        }
        rest = &after[b + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn recipe(v: Value) -> Recipe {
        Recipe::parse(&v, 10_000).unwrap()
    }

    fn tree(supply: i64) -> Recipe {
        recipe(json!({
            "tool": "watermark", "supply": supply,
            "params": {"text": "[[Sky]] #[[Number]] [[Hat]]"},
            "categories": [
                {"name": "Sky", "traits": [
                    {"name": "Red", "value": "red sky", "weight": 1},
                    {"name": "Blue", "value": "blue sky", "weight": 3},
                    {"name": "Gold", "value": "golden sky", "weight": 0.5},
                ]},
                {"name": "Number", "type": "range", "start": 1, "end": 20000, "step": 1, "zero_pad": 5, "unique": true},
                {"name": "Hat", "type": "range", "start": 0, "end": 30, "step": 10},
            ],
        }))
    }

    fn fields(v: Value) -> Vec<String> {
        Recipe::parse(&v, 10_000).unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn every_error_names_its_field() {
        assert_eq!(
            fields(json!({
                "tool": "x", "supply": 20_000, "params": {"prompt": ["a [[Colour]]"]},
                "categories": [
                    {"name": "Sky", "traits": [{"name": "a", "weight": 0}, {"name": "b", "weight": -1}]},
                    {"name": "N", "type": "range", "start": 1, "end": 3, "unique": true},
                    {"name": "Sky", "traits": []},
                ],
            })),
            [
                "supply",
                "categories[0].traits[0].weight",
                "categories[0].traits[1].weight",
                "categories[2].name",
                "categories[2].traits",
                "params.prompt[0]"
            ]
        );
        // The unique range is checked against a valid supply.
        assert_eq!(
            fields(
                json!({"tool": "x", "supply": 5, "categories": [{"name": "N", "type": "range", "start": 1, "end": 3, "unique": true}]})
            ),
            ["categories[0].unique"]
        );
        assert_eq!(fields(json!({"supply": 1})), ["tool"]);
        assert_eq!(fields(json!({"tool": "t", "supply": 1, "name_template": "{{nope}}"})), ["name_template"]);
        assert_eq!(fields(json!({"tool": "t", "supply": 1, "colour": 1})), ["colour"]);
    }

    /// Frequencies converge to weights, over many cook seeds (a seeded
    /// loop in place of a property-testing library).
    #[test]
    fn frequencies_converge_to_weights() {
        let r = tree(10_000);
        let mut rng = SplitMix64::new(42);
        for _ in 0..5 {
            let seed = rng.next_u64();
            let d = Drawer::new(&r, seed);
            let mut counts: HashMap<String, u32> = HashMap::new();
            for n in 1..=10_000 {
                *counts.entry(d.traits(n)[0].name.clone()).or_default() += 1;
            }
            for (name, w) in [("Red", 1.0), ("Blue", 3.0), ("Gold", 0.5)] {
                let expected = w / 4.5;
                let got = f64::from(counts[name]) / 10_000.0;
                assert!((got - expected).abs() < 0.03, "seed {seed}: {name} {got} vs {expected}");
            }
        }
    }

    #[test]
    fn unique_ranges_never_repeat_and_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        for case in 0..30 {
            let supply = 1 + rng.below(300) as i64;
            let end = supply + rng.below(50) as i64;
            let step = 1 + rng.below(3) as i64;
            let r = recipe(json!({
                "tool": "t", "supply": supply,
                "categories": [{"name": "N", "type": "range", "start": 1, "end": 1 + (end - 1) * step, "step": step, "unique": true}],
            }));
            let d = Drawer::new(&r, rng.next_u64());
            let mut seen = std::collections::HashSet::new();
            for n in 1..=supply {
                let v: i64 = d.traits(n)[0].name.parse().unwrap();
                assert!((1..=1 + (end - 1) * step).contains(&v) && (v - 1) % step == 0, "case {case}: {v}");
                assert!(seen.insert(v), "case {case}: {v} drawn twice");
            }
        }
    }

    #[test]
    fn same_seed_same_piece() {
        let r = tree(500);
        let mut rng = SplitMix64::new(99);
        for _ in 0..50 {
            let seed = rng.next_u64();
            let n = 1 + rng.below(500) as i64;
            let a = Drawer::new(&r, seed).traits(n);
            let b = Drawer::new(&r, seed).traits(n);
            assert_eq!(a, b);
            assert_eq!(fill(&r.params, &a), fill(&r.params, &b));
            assert_eq!(piece_seed(seed, n, 0), piece_seed(seed, n, 0));
            assert_ne!(piece_seed(seed, n, 0), piece_seed(seed, n, 1), "a regeneration draws a new seed");
        }
        // Different pieces of one cook differ (the unique number at least).
        let d = Drawer::new(&r, 1);
        assert_ne!(d.traits(1), d.traits(2));
    }

    #[test]
    fn placeholders_are_filled() {
        let r = tree(10);
        let chosen = vec![
            Chosen { category: "Sky".into(), name: "Red".into(), value: "red sky".into() },
            Chosen { category: "Number".into(), name: "0042".into(), value: "0042".into() },
            Chosen { category: "Hat".into(), name: "20".into(), value: "20".into() },
        ];
        assert_eq!(fill(&r.params, &chosen)["text"], json!("red sky #0042 20"));
        assert_eq!(fill_template("{{collection}} #{{number}} ({{Sky}})", "Skies", 7, &chosen), "Skies #7 (Red)");
        assert_eq!(Range { start: -3, end: 3, step: 1, zero_pad: 3, unique: false }.value(0), "-003");
    }
}
