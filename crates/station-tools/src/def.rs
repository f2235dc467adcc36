//! The tool definition types and their JSON shape.

use std::collections::BTreeSet;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One tool: a generator users can run, as defined by one JSON file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolDef {
    /// Stable identifier (`[a-z0-9][a-z0-9_-]*`, at most 64 characters).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Chat command (`[a-z0-9_]{1,32}`); defaults to the id with `-` replaced by `_`.
    pub command: String,
    /// What the tool does, shown to users.
    pub description: String,
    /// What kind of generator this is.
    pub category: Category,
    /// Who may see and run the tool.
    pub visibility: Visibility,
    /// Which backend runs the tool.
    pub service: Service,
    /// Model family the tool targets (e.g. `SD1.5`, `SDXL`, `FLUX`), if any.
    pub base_model: Option<String>,
    /// Definition version, bumped by the author when the tool changes meaningfully.
    pub version: u32,
    /// The tool's inputs, in display order.
    pub inputs: IndexMap<String, InputDef>,
    /// What a run costs in points.
    pub cost: Cost,
    /// The ComfyUI workflow (present iff `service` is `comfyui`).
    pub comfyui: Option<ComfyUiSpec>,
    /// The native media operation (present iff `service` is `media`).
    pub media: Option<MediaSpec>,
    /// The hosted deployment and its input binding (present iff `service` is `comfydeploy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comfydeploy: Option<DeploymentSpec>,
    /// Rules between inputs, checked when a job is submitted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Defaults per base model of the chosen model (`{"SDXL": {"width": 1024}}`):
    /// they replace the tool's defaults when the job's model input names a
    /// model of that base model (explicit values and saved settings still win).
    #[serde(skip_serializing_if = "indexmap::IndexMap::is_empty")]
    pub base_model_defaults: IndexMap<String, Map<String, Value>>,
    /// Where the definition came from: a file path, or `<builtin>/NAME.json`.
    #[serde(skip)]
    pub source: PathBuf,
}

/// The JSON shape of a tool file; `command` is optional here and filled in from the id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawToolDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub description: String,
    pub category: Category,
    #[serde(default)]
    pub visibility: Visibility,
    pub service: Service,
    #[serde(default)]
    pub base_model: Option<String>,
    #[serde(default = "default_version")]
    pub version: u32,
    #[serde(default)]
    pub inputs: IndexMap<String, InputDef>,
    pub cost: Cost,
    #[serde(default)]
    pub comfyui: Option<ComfyUiSpec>,
    #[serde(default)]
    pub media: Option<MediaSpec>,
    #[serde(default)]
    pub comfydeploy: Option<DeploymentSpec>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub base_model_defaults: IndexMap<String, Map<String, Value>>,
}

/// A rule between inputs of a tool (`rules` in a tool file). An input is
/// *given* when a value for it resolved (from the request, the user's saved
/// settings or its default) and is not empty text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// At least one of these inputs must be given (`{"one_of": ["width", "height", "scale"]}`).
    OneOf(Vec<String>),
    /// When the key input is given, the inputs it names must be given too
    /// (`{"requires": {"anchor": "aspect"}}`, or a list of names).
    Requires(std::collections::BTreeMap<String, Names>),
    /// When the key input is given, none of the inputs it names may be
    /// (`{"excludes": {"scale": ["width", "height"]}}`).
    Excludes(std::collections::BTreeMap<String, Names>),
}

/// One input name or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Names {
    /// A single input name.
    One(String),
    /// Several input names.
    Many(Vec<String>),
}

impl Names {
    /// The names, as a slice.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Names::One(n) => std::slice::from_ref(n),
            Names::Many(v) => v,
        }
    }
}

impl Rule {
    /// Every input name the rule mentions, with the JSON path of where.
    pub(crate) fn names(&self, at: &str) -> Vec<(String, String)> {
        let mut out = vec![];
        match self {
            Rule::OneOf(list) => {
                for (i, n) in list.iter().enumerate() {
                    out.push((format!("{at}.one_of[{i}]"), n.clone()));
                }
            }
            Rule::Requires(map) | Rule::Excludes(map) => {
                let kind = if matches!(self, Rule::Requires(_)) { "requires" } else { "excludes" };
                for (key, names) in map {
                    out.push((format!("{at}.{kind}"), key.clone()));
                    for n in names.as_slice() {
                        out.push((format!("{at}.{kind}.{key}"), n.clone()));
                    }
                }
            }
        }
        out
    }
}

fn default_version() -> u32 {
    1
}

impl RawToolDef {
    pub(crate) fn into_def(self, source: PathBuf) -> ToolDef {
        let command = self.command.unwrap_or_else(|| self.id.replace('-', "_"));
        ToolDef {
            id: self.id,
            name: self.name,
            command,
            description: self.description,
            category: self.category,
            visibility: self.visibility,
            service: self.service,
            base_model: self.base_model,
            version: self.version,
            inputs: self.inputs,
            cost: self.cost,
            comfyui: self.comfyui,
            media: self.media,
            comfydeploy: self.comfydeploy,
            rules: self.rules,
            base_model_defaults: self.base_model_defaults,
            source,
        }
    }
}

/// What kind of generator a tool is; platforms group tools by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Makes an image from a text prompt.
    TextToImage,
    /// Transforms an input image.
    ImageToImage,
    /// Enlarges an image.
    Upscale,
    /// Repaints part of an image.
    Inpaint,
    /// Describes an image in text.
    ImageToText,
    /// Writes a caption for one image: the text a training dataset's
    /// auto-captions use (`training.caption_tool`). Its result is text (the
    /// workflow's output node returns `{"text": [...]}`, e.g. `PreviewAny`).
    Caption,
    /// Produces video.
    Video,
    /// Anything else.
    Utility,
}

/// Who may see and run a tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Visibility {
    /// Listed for everyone.
    #[default]
    Public,
    /// Not listed (templates waiting for configuration); runnable only by id where a platform allows.
    Hidden,
    /// Listed and runnable for admins only.
    Admin,
}

/// Which backend runs a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    /// A ComfyUI server runs the tool's workflow.
    Comfyui,
    /// Station's native media service runs the operation.
    Media,
    /// A hosted ComfyUI deployment on ComfyDeploy runs the tool (`comfydeploy` section).
    Comfydeploy,
}

/// The type of one tool input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputType {
    /// Free text (a prompt).
    Text,
    /// A whole number.
    Integer,
    /// A floating-point number.
    Number,
    /// On or off.
    Boolean,
    /// One of a fixed list of strings (`choices`).
    Enum,
    /// A random seed: `-1`/missing means "pick one at random".
    Seed,
    /// An image, given as a stored media reference `media:<id>`.
    Image,
    /// A model file name on the backend.
    Checkpoint,
    /// A model discovered on the backends (`kind` says which: `checkpoint`,
    /// `lora`, `upscale_model`, …); its choices are the visible inventory,
    /// checked by the core when a job is submitted.
    Model,
}

impl InputType {
    /// The name used in tool files.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::Text => "text",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Enum => "enum",
            InputType::Seed => "seed",
            InputType::Image => "image",
            InputType::Checkpoint => "checkpoint",
            InputType::Model => "model",
        }
    }
}

/// One input of a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// The input's type.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// Whether a run needs a value (a default counts).
    #[serde(default)]
    pub required: bool,
    /// Value used when neither the request nor the user's saved preferences give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Help text shown to users.
    #[serde(default)]
    pub description: String,
    /// Smallest allowed value (integer and number inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed value (integer and number inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Values must be `min + k*step` (or `k*step` without `min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// Allowed values (required for enum, optional for checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// Hidden behind an "advanced" toggle in user interfaces.
    #[serde(default)]
    pub advanced: bool,
    /// The one input a chat message's text or photo fills.
    #[serde(default)]
    pub primary: bool,
    /// Longest allowed text, in characters (text inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Image inputs only: takes animations (GIF, APNG, WebP) of up to
    /// `media.max_frames` frames. Without it an image input takes a still
    /// image (one frame): a consumer such as ComfyUI's LoadImage would load
    /// every frame.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub animated: bool,
    /// Model inputs only: which kind of model (`checkpoint`, `lora`,
    /// `upscale_model`, `vae`, `diffusion_model`).
    #[serde(default, rename = "kind", skip_serializing_if = "Option::is_none")]
    pub model_kind: Option<String>,
    /// Model inputs only: the base models (`SD1.5`, `SDXL`, `FLUX`) whose
    /// models it takes; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_models: Option<Vec<String>>,
}

impl InputDef {
    /// The allowed choices, or an empty slice when there are none.
    pub fn choices(&self) -> &[String] {
        self.choices.as_deref().unwrap_or(&[])
    }
}

/// What a run costs, in whole points (before the operator's multiplier from config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCost", into = "RawCost")]
pub enum Cost {
    /// A fixed price per run.
    PerRun(u64),
    /// A price per second of backend time, with the estimate used to reserve points up front.
    PerSecond {
        /// Points per second of run time.
        points: u64,
        /// Expected run time, in seconds.
        estimate_seconds: u64,
    },
}

impl Cost {
    /// The points to reserve before a run starts.
    pub fn estimate(&self) -> u64 {
        match *self {
            Cost::PerRun(n) => n,
            Cost::PerSecond { points, estimate_seconds } => points.saturating_mul(estimate_seconds),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_run: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    estimate_seconds: Option<u64>,
    // Accepted only to explain where it belongs instead of a bare "unknown field".
    #[serde(default, skip_serializing)]
    multiplier: Option<Value>,
}

impl TryFrom<RawCost> for Cost {
    type Error = String;

    fn try_from(raw: RawCost) -> Result<Self, Self::Error> {
        if raw.multiplier.is_some() {
            return Err("`multiplier` does not belong in a tool: the operator multiplier is set in config".into());
        }
        match (raw.per_run, raw.per_second, raw.estimate_seconds) {
            (Some(0), None, None) => Err("per_run must be a positive integer".into()),
            (Some(n), None, None) => Ok(Cost::PerRun(n)),
            (None, Some(0), _) => Err("per_second must be a positive integer".into()),
            (None, Some(_), Some(0)) => Err("estimate_seconds must be a positive integer".into()),
            (None, Some(p), Some(s)) => Ok(Cost::PerSecond { points: p, estimate_seconds: s }),
            (None, Some(_), None) => Err("per_second needs estimate_seconds".into()),
            (Some(_), Some(_), _) => Err("give either per_run or per_second, not both".into()),
            (Some(_), None, Some(_)) => Err("estimate_seconds only goes with per_second, not per_run".into()),
            (None, None, _) => Err("expected {\"per_run\": N} or {\"per_second\": N, \"estimate_seconds\": S}".into()),
        }
    }
}

impl From<Cost> for RawCost {
    fn from(cost: Cost) -> Self {
        match cost {
            Cost::PerRun(n) => RawCost { per_run: Some(n), per_second: None, estimate_seconds: None, multiplier: None },
            Cost::PerSecond { points, estimate_seconds } => RawCost {
                per_run: None,
                per_second: Some(points),
                estimate_seconds: Some(estimate_seconds),
                multiplier: None,
            },
        }
    }
}

/// How a ComfyUI tool runs: the workflow graph and where the inputs go in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComfyUiSpec {
    /// API-format graph: node id → `{class_type, inputs}`.
    pub workflow: Value,
    /// Tool input name → places (`node_id.inputs.field`) its value is written to.
    #[serde(default)]
    pub bindings: IndexMap<String, Vec<String>>,
    /// Node ids whose outputs are the tool's results.
    pub outputs: Vec<String>,
    /// Where LoRAs are chained in, if the tool supports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loras: Option<LoraSpec>,
    /// Training workflows: where the name of the dataset folder the job
    /// uploads (images and caption `.txt` files into `input/<folder>/`) is
    /// written (`node_id.inputs.field`, e.g. `LoadImageTextDataSetFromFolder`'s `folder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// A file the workflow saves without reporting it as an output (ComfyUI's
    /// `SaveLoRA`): the executor names it and fetches it afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_file: Option<SavedFileSpec>,
}

/// A file a workflow writes into the backend's output folder without
/// reporting it (ComfyUI's `SaveLoRA` writes
/// `output/<folder>/<prefix>_<steps>_steps_<counter:05>_.safetensors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedFileSpec {
    /// Where the file name prefix is written (`node_id.inputs.field`); the
    /// executor sets it to `<folder>/station_<job>` so each job's file is its own.
    pub prefix: String,
    /// The output subfolder the file lands in (`loras`).
    pub folder: String,
    /// The tool input whose value is the step count in the file name, if the
    /// name carries one (`steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_input: Option<String>,
    /// The file's extension without the dot (`safetensors`).
    pub extension: String,
}

/// Where user-chosen LoRAs are inserted into a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// The node (usually the checkpoint loader) whose MODEL and CLIP outputs LoRAs wrap.
    pub node: String,
}

/// A tool run by a hosted ComfyUI deployment (ComfyDeploy): which
/// deployment, and which of its external inputs each tool input fills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// The deployment's id at the provider (`POST /api/run/deployment/queue`'s `deployment_id`).
    pub deployment_id: String,
    /// Tool input name → the deployment's external input name (the
    /// `input_id` of its `ComfyUIDeployExternal*` node). Every tool input is
    /// sent; image inputs as `data:` URLs.
    #[serde(default)]
    pub inputs: IndexMap<String, String>,
}

/// A tool run natively by Station's media service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSpec {
    /// The operation to run.
    pub operation: MediaOperation,
}

/// Operations the native media service knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaOperation {
    /// Change the pixel size.
    Resize,
    /// Change the file format.
    Convert,
    /// Cut out a rectangle.
    Crop,
    /// Make a small preview.
    Thumbnail,
    /// Stamp a mark on the image.
    Watermark,
    /// Turn the image.
    Rotate,
    /// Mirror the image.
    Flip,
    /// Remove EXIF and other metadata.
    StripMetadata,
    /// Blur the image.
    Blur,
    /// Invert the colours.
    Invert,
}

/// A parsed binding target `node_id.inputs.field`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingTarget<'a> {
    /// The workflow node id.
    pub node: &'a str,
    /// The key under that node's `inputs`.
    pub field: &'a str,
}

impl<'a> BindingTarget<'a> {
    /// Parses `node_id.inputs.field`; node ids may not contain `.`.
    pub fn parse(s: &'a str) -> Option<Self> {
        let (node, rest) = s.split_once('.')?;
        let field = rest.strip_prefix("inputs.")?;
        if node.is_empty() || field.is_empty() {
            return None;
        }
        Some(BindingTarget { node, field })
    }
}

impl ToolDef {
    /// The input a chat message's text or photo fills, if the tool has one.
    pub fn primary_input(&self) -> Option<(&str, &InputDef)> {
        self.inputs.iter().find(|(_, def)| def.primary).map(|(name, def)| (name.as_str(), def))
    }

    /// The ComfyUI `class_type`s the workflow uses (empty for media tools); routing picks
    /// servers that have all of them.
    pub fn node_types(&self) -> BTreeSet<String> {
        let Some(nodes) = self.comfyui.as_ref().and_then(|c| c.workflow.as_object()) else {
            return BTreeSet::new();
        };
        nodes.values().filter_map(|node| node.get("class_type")?.as_str()).map(str::to_owned).collect()
    }

    /// The tool input bound into `node_id` (the first in input order), so a backend error
    /// about that node can name the input the user knows.
    pub fn input_for_node(&self, node_id: &str) -> Option<&str> {
        let comfy = self.comfyui.as_ref()?;
        self.inputs.keys().find_map(|name| {
            let targets = comfy.bindings.get(name)?;
            targets.iter().filter_map(|t| BindingTarget::parse(t)).any(|t| t.node == node_id).then_some(name.as_str())
        })
    }

    /// The first model-type input (`"type": "model"`), whose value picks the
    /// model a job runs with.
    pub fn model_input(&self) -> Option<(&str, &InputDef)> {
        self.inputs.iter().find(|(_, def)| def.kind == InputType::Model).map(|(n, d)| (n.as_str(), d))
    }

    /// The value of the first checkpoint-type input (or model input of kind
    /// `checkpoint`) in `params` (or its default), used to prefer servers that
    /// already have that model loaded.
    pub fn checkpoint_param(&self, params: &Map<String, Value>) -> Option<String> {
        let (name, def) = self.inputs.iter().find(|(_, def)| {
            def.kind == InputType::Checkpoint
                || (def.kind == InputType::Model && def.model_kind.as_deref() == Some("checkpoint"))
        })?;
        params.get(name).or(def.default.as_ref()).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
    }

    /// Whether `source` is a built-in definition compiled into the binary.
    pub fn is_builtin(&self) -> bool {
        self.source.starts_with(crate::load::BUILTIN_PREFIX)
    }
}
