//! Spells: saved, linear chains of tools with some inputs exposed, cast as
//! one unit ([`cast`]).
//!
//! A spell is written as a [`SpellSpec`]: steps, each a tool with fixed
//! parameters and mappings (`inputs_from`: a parameter filled from an
//! earlier step's output, `"step1.output[0]"`, or from an exposed input,
//! `"input.NAME"`), and optional declarations of the exposed inputs
//! (defaults, descriptions). [`Station::check_spell`] validates it against
//! the tools the owner may use and reports every problem at once, each
//! naming the step and field (`step2.inputs_from.image`); the exposed
//! inputs' types and constraints are derived from the tool inputs they feed.
//! A spell whose tool changed incompatibly since it was saved is marked
//! broken with the reason when it is next read or cast, never run.

pub mod cast;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use station_store::{AccountRow, NewSpell, SpellRow, StoreError};
use station_tools::{FieldError, InputDef, InputType, check_input, coerce_value, resolve_params};

use crate::Station;

pub use cast::{CastError, CastRequest, CastStepView, CastView};

/// The most steps a spell may have.
pub const MAX_STEPS: usize = 10;

/// Who may see and cast a spell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpellVisibility {
    /// Only its owner (and administrators).
    #[default]
    Private,
    /// Anyone who knows its slug; not listed.
    Unlisted,
    /// Anyone; listed in the gallery.
    Public,
}

impl SpellVisibility {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            SpellVisibility::Private => "private",
            SpellVisibility::Unlisted => "unlisted",
            SpellVisibility::Public => "public",
        }
    }

    fn parse(s: &str) -> SpellVisibility {
        match s {
            "public" => SpellVisibility::Public,
            "unlisted" => SpellVisibility::Unlisted,
            _ => SpellVisibility::Private,
        }
    }
}

/// A spell as written (a file for `station spells create`, a request body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpellSpec {
    /// Unique short name, what people cast it by: 2–48 of `a-z`, `0-9`, `-`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Who may see and cast it (default private).
    #[serde(default)]
    pub visibility: SpellVisibility,
    /// The tools, run in order.
    pub steps: Vec<StepSpec>,
    /// Declarations of exposed inputs (defaults, descriptions); every
    /// `input.NAME` a step maps is exposed whether declared or not.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub inputs: IndexMap<String, ExposedSpec>,
}

/// One step of a spell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Tool id or command.
    pub tool: String,
    /// Fixed parameter values.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// Parameters filled when cast: `"stepN.output[i]"` (the i-th output of
    /// step N, counted from 1 and 0) or `"input.NAME"` (an exposed input).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub inputs_from: IndexMap<String, String>,
}

/// The declaration of an exposed input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposedSpec {
    /// Value used when the caster gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Help text (default: the first input it feeds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Where a mapped parameter's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Output `index` of step `step` (both 0-based).
    Step {
        /// The step.
        step: usize,
        /// The output.
        index: usize,
    },
    /// The exposed input of that name.
    Input(String),
}

impl Source {
    /// Parses `"step1.output[0]"` or `"input.NAME"`.
    pub fn parse(s: &str) -> Result<Source, String> {
        let bad = || {
            format!("{s:?} is not a mapping; write \"step1.output[0]\" (an earlier step's output) or \"input.NAME\"")
        };
        if let Some(name) = s.strip_prefix("input.") {
            return if valid_name(name) { Ok(Source::Input(name.to_string())) } else { Err(bad()) };
        }
        let rest = s.strip_prefix("step").ok_or_else(bad)?;
        let (n, rest) = rest.split_once(".output[").ok_or_else(bad)?;
        let i = rest.strip_suffix(']').ok_or_else(bad)?;
        let step: usize = n.parse().ok().filter(|n| *n >= 1).ok_or_else(bad)?;
        let index: usize = i.parse().map_err(|_| bad())?;
        Ok(Source::Step { step: step - 1, index })
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
}

fn valid_slug(s: &str) -> bool {
    (2..=48).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An exposed input as casting forms draw it: the tool input it feeds
/// (type, constraints) with the spell's default and description.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExposedInput {
    /// Its name (what `--param NAME=…` and forms use).
    pub name: String,
    /// Type, constraints, default and whether required, derived from the
    /// tool inputs it feeds.
    #[serde(flatten)]
    pub def: InputDef,
    /// The steps and parameters it feeds, as `step1.prompt`.
    pub feeds: Vec<String>,
}

/// One step as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    /// 1-based position.
    pub step: usize,
    /// The tool's id.
    pub tool: String,
    /// The tool's name ("Upscale"), as progress shows it.
    pub tool_name: String,
    /// Fixed values.
    pub params: Map<String, Value>,
    /// Mapped parameters.
    pub inputs_from: IndexMap<String, String>,
}

/// A spell as front ends show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spell {
    /// Id.
    pub id: String,
    /// Slug.
    pub slug: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Owner's account id.
    pub owner_id: String,
    /// Visibility.
    pub visibility: SpellVisibility,
    /// Steps, in order.
    pub steps: Vec<StepView>,
    /// What a caster fills in.
    pub inputs: Vec<ExposedInput>,
    /// Why it cannot run now, if it cannot.
    pub broken: Option<String>,
    /// Times it was cast.
    pub casts: i64,
    /// When created (Unix ms).
    pub created_at: i64,
}

/// Why a spell was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SpellError {
    /// The definition is wrong; every problem is listed.
    #[error("invalid spell: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

/// A spell checked against the tools: its steps and the derived inputs.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) steps: Vec<(std::sync::Arc<station_tools::ToolDef>, StepSpec)>,
    pub(crate) inputs: Vec<ExposedInput>,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), reason: reason.into() }
}

impl Station {
    /// Checks a spell as `owner` would save it: slug and name; every tool
    /// exists and `owner` may use it; fixed values are valid for their
    /// inputs; every mapping names an earlier step's output for an image
    /// input, or an exposed input whose uses agree on a type; no required
    /// input is left unset. Every problem is returned at once, each naming
    /// its field: `slug`, `step2.tool`, `step2.params.width`,
    /// `step2.inputs_from.image`, `inputs.prompt`.
    pub(crate) fn check_spell(&self, owner: &AccountRow, spec: &SpellSpec) -> Result<Checked, Vec<FieldError>> {
        let (checked, errors) = self.check_spell_all(owner, spec);
        if errors.is_empty() { Ok(checked) } else { Err(errors) }
    }

    /// [`Station::check_spell`]'s work: what could be derived (the steps
    /// whose tools exist, the exposed inputs) and every problem.
    fn check_spell_all(&self, owner: &AccountRow, spec: &SpellSpec) -> (Checked, Vec<FieldError>) {
        let mut errors = vec![];
        if !valid_slug(&spec.slug) {
            errors.push(err(
                "slug",
                format!("{:?} must be 2–48 of a-z, 0-9 and -, not starting or ending with -", spec.slug),
            ));
        }
        if spec.name.trim().is_empty() || spec.name.chars().count() > 100 {
            errors.push(err("name", "give a name of 1–100 characters"));
        }
        if spec.description.chars().count() > 1000 {
            errors.push(err("description", "at most 1000 characters"));
        }
        if spec.steps.is_empty() || spec.steps.len() > MAX_STEPS {
            errors.push(err("steps", format!("a spell has 1 to {MAX_STEPS} steps, this one {}", spec.steps.len())));
        }
        let mut steps = vec![];
        // Exposed input name → (first def, feeds).
        let mut exposed: IndexMap<String, (InputDef, Vec<String>)> = IndexMap::new();
        for (i, step) in spec.steps.iter().enumerate() {
            let at = format!("step{}", i + 1);
            let Some(tool) = self.find_tool(&step.tool, owner) else {
                errors.push(err(
                    format!("{at}.tool"),
                    format!("unknown tool {:?} (or not one you may use); `station tools list` shows them", step.tool),
                ));
                continue;
            };
            // Fixed values are checked together, so rules between them
            // (width requires height) see both; errors about inputs that are
            // not fixed (mapped, or left to their defaults) are not theirs.
            let mut fixed = Map::new();
            for (name, value) in &step.params {
                match tool.inputs.get(name) {
                    None => {
                        errors.push(err(format!("{at}.params.{name}"), format!("{} has no input {name}", tool.name)));
                    }
                    Some(def) if def.kind == InputType::Image => errors.push(err(
                        format!("{at}.params.{name}"),
                        "an image input is mapped (inputs_from), not fixed".to_string(),
                    )),
                    Some(def) => {
                        fixed.insert(name.clone(), coerce_value(def, value));
                    }
                }
            }
            if let Err(problems) = resolve_params(&tool, &fixed, &Map::new(), &mut rand::rng()) {
                for e in problems.0.into_iter().filter(|e| fixed.contains_key(&e.field)) {
                    errors.push(err(format!("{at}.params.{}", e.field), e.reason));
                }
            }
            for (name, src) in &step.inputs_from {
                let field = format!("{at}.inputs_from.{name}");
                let Some(def) = tool.inputs.get(name) else {
                    errors.push(err(field, format!("{} has no input {name}", tool.name)));
                    continue;
                };
                if step.params.contains_key(name) {
                    errors.push(err(field, "is both fixed (params) and mapped; keep one"));
                    continue;
                }
                match Source::parse(src) {
                    Err(reason) => errors.push(err(field, reason)),
                    Ok(Source::Step { step: from, index: _ }) => {
                        if from >= i {
                            errors.push(err(
                                field,
                                format!("{src:?} is not an earlier step; step {} can use steps 1 to {}", i + 1, i),
                            ));
                        } else if def.kind != InputType::Image {
                            errors.push(err(
                                field,
                                format!(
                                    "{src:?} is an image but {} input {name} takes {}",
                                    tool.name,
                                    def.kind.as_str()
                                ),
                            ));
                        }
                    }
                    Ok(Source::Input(input)) => {
                        let feed = format!("{at}.{name}");
                        match exposed.get_mut(&input) {
                            Some((first, feeds)) => {
                                if first.kind != def.kind {
                                    errors.push(err(
                                        field,
                                        format!(
                                            "input {input} is {} where it feeds {} but {} here",
                                            first.kind.as_str(),
                                            feeds[0],
                                            def.kind.as_str()
                                        ),
                                    ));
                                } else {
                                    // Required when any use needs a value.
                                    first.required |= def.required && def.default.is_none();
                                    feeds.push(feed);
                                }
                            }
                            None => {
                                exposed.insert(input, (def.clone(), vec![feed]));
                            }
                        }
                    }
                }
            }
            for (name, def) in &tool.inputs {
                let set = step.params.contains_key(name) || step.inputs_from.contains_key(name);
                // A model input is chosen by the core when none is given.
                if !set && def.required && def.default.is_none() && def.kind != InputType::Model {
                    errors.push(err(
                        format!("{at}.{name}"),
                        format!("{} needs {name}; fix a value in params or map it in inputs_from", tool.name),
                    ));
                }
            }
            steps.push((tool, step.clone()));
        }
        for name in spec.inputs.keys() {
            if !exposed.contains_key(name) {
                errors.push(err(format!("inputs.{name}"), "declared but no step maps it (input.NAME)"));
            }
        }
        let mut inputs = vec![];
        for (name, (mut def, feeds)) in exposed {
            let decl = spec.inputs.get(&name).cloned().unwrap_or_default();
            if let Some(d) = &decl.default {
                let (step, param) = feeds[0].split_once('.').unwrap_or_default();
                let tool =
                    step.strip_prefix("step").and_then(|n| n.parse::<usize>().ok()).and_then(|n| steps.get(n - 1));
                let value = coerce_value(&def, d);
                if let Some((tool, _)) = tool
                    && let Err(e) = check_input(tool, param, &value)
                {
                    errors.push(err(format!("inputs.{name}.default"), e.reason));
                }
                def.default = Some(value);
            }
            if let Some(d) = decl.description {
                def.description = d;
            }
            def.required = def.required && def.default.is_none();
            def.primary = false;
            inputs.push(ExposedInput { name, def, feeds });
        }
        if let Some(p) = inputs.iter().position(|i| i.def.kind == InputType::Text) {
            inputs[p].def.primary = true;
        } else if let Some(p) = inputs.iter().position(|i| i.def.kind == InputType::Image) {
            inputs[p].def.primary = true;
        }
        (Checked { steps, inputs }, errors)
    }

    /// A draft spell as a builder previews it: the inputs a cast of it
    /// would take (as far as they can be derived; the same
    /// [`ExposedInput`]s a saved spell has) and every problem a save would
    /// answer ([`Station::spell_problems`]). Nothing is stored.
    pub async fn preview_spell(
        &self,
        owner: &AccountRow,
        spec: &SpellSpec,
    ) -> Result<(Vec<ExposedInput>, Vec<FieldError>), StoreError> {
        let (checked, _) = self.check_spell_all(owner, spec);
        Ok((checked.inputs, self.spell_problems(owner, spec).await?))
    }

    /// Validates and saves a spell owned by `owner`.
    pub async fn create_spell(&self, owner: &AccountRow, spec: SpellSpec) -> Result<Spell, SpellError> {
        if let Some(off) = self.feature_refusal("spells", owner).await {
            return Err(SpellError::Invalid(vec![off]));
        }
        self.check_spell(owner, &spec).map_err(SpellError::Invalid)?;
        let id = uuid::Uuid::now_v7().to_string();
        let definition = serde_json::to_string(&spec).expect("a spell serialises");
        let row = NewSpell {
            id: &id,
            slug: &spec.slug,
            owner_id: &owner.id,
            name: spec.name.trim(),
            description: spec.description.trim(),
            visibility: spec.visibility.as_str(),
            definition: &definition,
        };
        if !self.store.insert_spell(&row, station_store::now_ms()).await? {
            return Err(SpellError::Invalid(vec![err("slug", format!("{:?} is taken; choose another", spec.slug))]));
        }
        let stored = self.store.spell(&id).await?.ok_or(StoreError::NotFound { what: "spell", id })?;
        Ok(self.spell_view(&stored).await?.0)
    }

    /// Every problem [`Station::create_spell`] would answer for `spec` saved
    /// by `owner`, without saving anything — a slug already taken included;
    /// empty when it would be saved. Builders (the chat's) check a draft as
    /// it grows with it.
    pub async fn spell_problems(&self, owner: &AccountRow, spec: &SpellSpec) -> Result<Vec<FieldError>, StoreError> {
        let mut errors = self.check_spell(owner, spec).err().unwrap_or_default();
        if valid_slug(&spec.slug) && self.store.spell(&spec.slug).await?.is_some() {
            errors.push(err("slug", format!("{:?} is taken; choose another", spec.slug)));
        }
        Ok(errors)
    }

    /// The public spells chat offers as commands of their own (`/<slug>
    /// prompt…`) when the operator enabled `spells.commands`: none
    /// otherwise, and never a broken one. Most cast first. Whether a slug
    /// collides with another command is the chat's business (it knows its
    /// commands).
    pub async fn spell_commands(&self) -> Result<Vec<Spell>, StoreError> {
        if !self.config.spells.commands {
            return Ok(vec![]);
        }
        let mut out = vec![];
        // No account owns "": the public ones alone.
        for row in self.store.list_spells("", true, 200).await? {
            let (spell, _) = self.spell_view(&row).await?;
            if spell.visibility == SpellVisibility::Public && spell.broken.is_none() {
                out.push(spell);
            }
        }
        Ok(out)
    }

    /// A spell `account` may see, by slug or id: its own, any public or
    /// unlisted one (administrators: any). None otherwise.
    pub async fn spell(&self, account: &AccountRow, slug: &str) -> Result<Option<Spell>, StoreError> {
        // No slug or id has control characters (PostgreSQL refuses a NUL in a query).
        if slug.is_empty() || slug.len() > 200 || slug.chars().any(char::is_control) {
            return Ok(None);
        }
        match self.store.spell(slug).await? {
            Some(row) if visible(account, &row) => Ok(Some(self.spell_view(&row).await?.0)),
            _ => Ok(None),
        }
    }

    /// The spells `account` owns and every public spell, most cast first.
    pub async fn spells(&self, account: &AccountRow) -> Result<Vec<Spell>, StoreError> {
        let mut out = vec![];
        for row in self.store.list_spells(&account.id, true, 200).await? {
            out.push(self.spell_view(&row).await?.0);
        }
        Ok(out)
    }

    /// The view of a stored spell, checked against today's tools (as its
    /// owner): a spell that no longer checks is marked broken with the
    /// reason (and unmarked once it checks again). Also the checked steps,
    /// when it checks.
    pub(crate) async fn spell_view(&self, row: &SpellRow) -> Result<(Spell, Option<Checked>), StoreError> {
        let spec: SpellSpec = serde_json::from_str(&row.definition)
            .map_err(|e| StoreError::Corrupt(format!("spell {}: {e}", row.slug)))?;
        let owner = self.store.get_account(&row.owner_id).await?;
        let checked = match &owner {
            Some(o) => self.check_spell(o, &spec).map_err(|errs| {
                errs.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; ")
            }),
            None => Err("its owner's account no longer exists".to_string()),
        };
        let broken = checked.as_ref().err().cloned();
        if broken != row.broken {
            self.store.set_spell_broken(&row.id, broken.as_deref(), station_store::now_ms()).await?;
        }
        let (inputs, tool_names) = match &checked {
            Ok(c) => (c.inputs.clone(), c.steps.iter().map(|(t, _)| t.name.clone()).collect()),
            Err(_) => (vec![], vec![]),
        };
        let steps = spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| StepView {
                step: i + 1,
                tool: s.tool.clone(),
                tool_name: tool_names.get(i).cloned().unwrap_or_else(|| s.tool.clone()),
                params: s.params.clone(),
                inputs_from: s.inputs_from.clone(),
            })
            .collect();
        let view = Spell {
            id: row.id.clone(),
            slug: row.slug.clone(),
            name: row.name.clone(),
            description: row.description.clone(),
            owner_id: row.owner_id.clone(),
            visibility: SpellVisibility::parse(&row.visibility),
            steps,
            inputs,
            broken,
            casts: row.casts,
            created_at: row.created_at,
        };
        Ok((view, checked.ok()))
    }
}

/// Whether `account` may see and cast the spell.
fn visible(account: &AccountRow, row: &SpellRow) -> bool {
    row.visibility != "private" || account.may_access(Some(&row.owner_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(Source::parse("step1.output[0]"), Ok(Source::Step { step: 0, index: 0 }));
        assert_eq!(Source::parse("step3.output[2]"), Ok(Source::Step { step: 2, index: 2 }));
        assert_eq!(Source::parse("input.prompt"), Ok(Source::Input("prompt".into())));
        for bad in ["step0.output[0]", "step1.output[x]", "step1.output", "input.", "input.Bad Name", "foo"] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs() {
        assert!(valid_slug("dream-big"));
        assert!(!valid_slug("-x"));
        assert!(!valid_slug("A"));
        assert!(!valid_slug("x"));
    }
}
