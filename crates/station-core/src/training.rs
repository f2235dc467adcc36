//! LoRA training: datasets (images with captions and a trigger word),
//! training definitions (data: a ComfyUI workflow per base model with its
//! defaults and price), quotes, and trainings — each one job on the ComfyUI
//! pool, so leases, retries, reconcile, progress and cancel all apply. A
//! training's job is paid like any job (hold at submit, capture of the quote
//! on success, release on failure or cancel); its result, the trained file,
//! is stored by content hash and becomes a private catalog LoRA of the owner.

use std::sync::{Arc, LazyLock};

use crate::config::TrainingPerSecond;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use station_store::{AccountRow, AddedImage, DatasetImageRow, DatasetRow, JobRow, JobStatus, StoreError, TrainingRow};
use station_tools::{FieldError, ToolDef, resolve_params_with_defaults};

use crate::Station;
use crate::audit::{Actor, Via};
use crate::events::JobEvent;
use crate::executor::DatasetFile;
use crate::jobs::SubmitError;
use crate::loras::{LoraEdit, LoraError, LoraRecord, Visibility};
use crate::media::MediaServiceError;

/// Job params key holding the dataset a training job uploads:
/// `[{"media": id, "caption": text}]`, in slot order.
pub const DATASET_PARAM: &str = "_dataset";
/// Job params key holding the training's id.
pub const TRAINING_PARAM: &str = "_training";
/// Job params key holding a per-second training's effective points per
/// second (with every multiplier), agreed at submit: its capture is this ×
/// the measured seconds, never more than the hold.
pub const RATE_PARAM: &str = "_points_per_second";

/// The per-second rate a training job was submitted with, if it is one.
pub(crate) fn per_second_rate(job: &JobRow) -> Option<f64> {
    definition_for_tool(&job.tool_id)?;
    let params: Value = serde_json::from_str(&job.params).ok()?;
    params.get(RATE_PARAM)?.as_f64().filter(|r| r.is_finite() && *r >= 0.0)
}

/// One training definition: how a LoRA is trained for one base model.
#[derive(Debug, Clone)]
pub struct TrainingDef {
    /// Stable id (`lora-sd15`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The base model trained LoRAs are for (`SD1.5`).
    pub base_model: String,
    /// How it is priced, unless `training.per_second` names it (see
    /// [`Station::training_price`]).
    pub price: TrainingPrice,
    /// Longest a training may run on its backend.
    pub timeout_seconds: u64,
    /// The job's tool: inputs with defaults and ranges, and the ComfyUI
    /// workflow (`comfyui.dataset`, `comfyui.saved_file`).
    pub tool: Arc<ToolDef>,
    /// How sample images of a trained LoRA are made (`training.samples`).
    pub samples: Option<SamplesSpec>,
}

/// How a training is priced.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingPrice {
    /// Points per training step: the price is steps × this × the operator's
    /// multiplier, rounded up, and is what is captured.
    PerStep(f64),
    /// Points per second of backend time: the quote is an estimate learnt
    /// from past runs, the capture the measured time (never above the hold).
    PerSecond(TrainingPerSecond),
}

/// Where a per-second quote's run time comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum EstimateBasis {
    /// The median seconds per step of this many recent successful trainings
    /// of the definition.
    History {
        /// How many runs the median is of.
        runs: usize,
    },
    /// No training of the definition has succeeded yet: the operator's
    /// `default_seconds_per_step`.
    Default,
}

/// A per-second training's estimated run time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEstimate {
    /// Seconds a step is expected to take.
    pub seconds_per_step: f64,
    /// The margin the estimate was multiplied by.
    pub margin: f64,
    /// The run time held for: steps × seconds per step × margin, rounded up.
    pub seconds: u64,
    /// Effective points per second (with the operator's and the checkpoint's multipliers).
    pub points_per_second: f64,
    /// Where the seconds per step come from.
    #[serde(flatten)]
    pub basis: EstimateBasis,
}

/// The median of the seconds per step of past runs, given as
/// `(run_ms, steps)`; runs with no steps or no time are left out.
pub fn median_seconds_per_step(runs: &[(i64, u64)]) -> Option<f64> {
    let mut per_step: Vec<f64> = runs
        .iter()
        .filter(|(ms, steps)| *ms > 0 && *steps > 0)
        .map(|(ms, steps)| *ms as f64 / 1000.0 / *steps as f64)
        .collect();
    if per_step.is_empty() {
        return None;
    }
    per_step.sort_by(f64::total_cmp);
    let n = per_step.len();
    Some(if n % 2 == 1 { per_step[n / 2] } else { (per_step[n / 2 - 1] + per_step[n / 2]) / 2.0 })
}

/// The seconds of a run of `steps` steps at `seconds_per_step`, times the
/// margin, rounded up (at least 1).
pub fn estimated_seconds(steps: u64, seconds_per_step: f64, margin: f64) -> u64 {
    let s = (steps as f64 * seconds_per_step * margin).ceil();
    if s.is_finite() && s >= 1.0 { s.min(u64::MAX as f64) as u64 } else { 1 }
}

/// A number for a sentence: up to two decimals, trailing zeros dropped.
fn short_number(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// "point" for a rate of at most one ("0.1 point a step"), else "points".
fn point_unit(rate: f64) -> &'static str {
    if rate <= 1.0 { "point" } else { "points" }
}

/// "about 12 minutes", "about 40 seconds", "about 2 hours 5 minutes".
fn about(seconds: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if seconds < 90 {
        return format!("about {}", plural(seconds, "second"));
    }
    let minutes = seconds.div_ceil(60);
    if minutes < 120 {
        return format!("about {}", plural(minutes, "minute"));
    }
    let (h, m) = (minutes / 60, minutes % 60);
    if m == 0 {
        format!("about {}", plural(h, "hour"))
    } else {
        format!("about {} {}", plural(h, "hour"), plural(m, "minute"))
    }
}

impl RunEstimate {
    /// The quote in words: "about 12 minutes at 2 points a second (1000
    /// steps at 0.58 s a step, the median of the last 5 runs, plus 25 %);
    /// you pay the time it takes, at most this".
    pub fn explain(&self, steps: u64, price: i64) -> String {
        let basis = match &self.basis {
            EstimateBasis::History { runs: 1 } => "as the last run took".to_owned(),
            EstimateBasis::History { runs } => format!("the median of the last {runs} runs"),
            EstimateBasis::Default => "the operator's estimate until a run has been measured".to_owned(),
        };
        let margin = ((self.margin - 1.0) * 100.0).round();
        let margin = if margin > 0.0 { format!(", plus {margin} %") } else { String::new() };
        let rate = short_number(self.points_per_second);
        let unit = point_unit(self.points_per_second);
        format!(
            "{} at {rate} {unit} a second ({steps} steps at {} s a step, {basis}{margin}); you pay for the time it \
             takes, at most {}",
            about(self.seconds),
            short_number(self.seconds_per_step),
            crate::points::plural_points(price)
        )
    }
}

/// The generation tool a definition's sample images are made with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplesSpec {
    /// A text-to-image tool with a `prompt` input; its model input (or a
    /// `checkpoint` input) gets the checkpoint trained on.
    pub tool: String,
    /// Parameters of every sample besides the prompt and checkpoint.
    #[serde(default)]
    pub params: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDef {
    id: String,
    name: String,
    base_model: String,
    #[serde(default)]
    points_per_step: Option<f64>,
    #[serde(default)]
    per_second: Option<TrainingPerSecond>,
    timeout_seconds: u64,
    tool: Value,
    #[serde(default)]
    samples: Option<SamplesSpec>,
}

/// The built-in training definitions (`station-core/training/*.json`).
const BUILTIN: &[(&str, &str)] = &[
    ("lora-sd15.json", include_str!("../training/lora-sd15.json")),
    ("lora-sdxl.json", include_str!("../training/lora-sdxl.json")),
    ("lora-flux.json", include_str!("../training/lora-flux.json")),
];

fn parse_def(name: &str, text: &str) -> Result<TrainingDef, String> {
    let raw: RawDef = serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    let price = match (raw.points_per_step, raw.per_second) {
        (Some(p), None) if p.is_finite() && p >= 0.0 => TrainingPrice::PerStep(p),
        (Some(_), None) => return Err(format!("{name}: points_per_step must be a number of 0 or more")),
        (None, Some(s)) => TrainingPrice::PerSecond(s),
        (Some(_), Some(_)) => return Err(format!("{name}: give either points_per_step or per_second, not both")),
        (None, None) => return Err(format!("{name}: needs points_per_step or per_second")),
    };
    let source = std::path::Path::new("<builtin>/training").join(name);
    let tool = station_tools::parse_tool(&raw.tool.to_string(), &source).map_err(|errors| {
        errors.iter().map(|e| format!("{name}: tool.{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; ")
    })?;
    let comfy = tool.comfyui.as_ref().ok_or_else(|| format!("{name}: tool: needs a comfyui section"))?;
    if comfy.dataset.is_none() || comfy.saved_file.is_none() {
        return Err(format!("{name}: tool.comfyui: a training needs `dataset` and `saved_file`"));
    }
    if !tool.inputs.contains_key("steps") {
        return Err(format!("{name}: tool.inputs: a training needs a `steps` input (its price is per step)"));
    }
    Ok(TrainingDef {
        id: raw.id,
        name: raw.name,
        base_model: raw.base_model,
        price,
        timeout_seconds: raw.timeout_seconds.max(60),
        tool: Arc::new(tool),
        samples: raw.samples,
    })
}

static DEFINITIONS: LazyLock<Vec<TrainingDef>> = LazyLock::new(|| {
    BUILTIN
        .iter()
        .map(|(name, text)| parse_def(name, text).unwrap_or_else(|e| panic!("built-in training definition: {e}")))
        .collect()
});

/// Every training definition.
pub fn definitions() -> &'static [TrainingDef] {
    &DEFINITIONS
}

/// The definition whose job tool is `tool_id`, if it is a training tool.
pub fn definition_for_tool(tool_id: &str) -> Option<&'static TrainingDef> {
    definitions().iter().find(|d| d.tool.id == tool_id)
}

/// The definition with this id or for this base model (case-insensitive).
pub fn find_definition(name: &str) -> Option<&'static TrainingDef> {
    definitions().iter().find(|d| d.id == name || d.base_model.eq_ignore_ascii_case(name))
}

/// Checks `[training]` against the definitions: every
/// `training.per_second.<id>` must name one.
pub fn check_config(config: &crate::config::TrainingConfig) -> Result<(), String> {
    for id in config.per_second.keys() {
        if !definitions().iter().any(|d| &d.id == id) {
            let known: Vec<&str> = definitions().iter().map(|d| d.id.as_str()).collect();
            return Err(format!(
                "training.per_second.{id}: no training definition {id:?}; definitions: {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// Why a dataset or training request was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// A field of the request is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (`name`, `images`, `steps`, …).
        field: String,
        /// Why.
        reason: String,
    },
    /// No such dataset, training or LoRA among the account's.
    #[error("{0}")]
    NotFound(String),
    /// The training's job was refused (parameters, points, quota).
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// An image could not be read or stored.
    #[error("{0}")]
    Media(#[from] MediaServiceError),
    /// The catalog refused the LoRA.
    #[error("{0}")]
    Lora(#[from] LoraError),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

fn invalid(field: &str, reason: impl Into<String>) -> TrainingError {
    TrainingError::Invalid { field: field.into(), reason: reason.into() }
}

/// A dataset with its images.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    /// The dataset.
    #[serde(flatten)]
    pub row: DatasetRow,
    /// Its images in slot order.
    pub images: Vec<DatasetImageRow>,
    /// Fewest images it needs to be trained.
    pub min_images: u64,
    /// Most images it may hold.
    pub max_images: u64,
}

/// What a training would cost and run with.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingQuote {
    /// The definition used.
    pub definition: String,
    /// Base model of the LoRA.
    pub base_model: String,
    /// Every setting the job runs with (the user's values, else the defaults).
    pub settings: Map<String, Value>,
    /// Training steps.
    pub steps: u64,
    /// Points held at submit; captured on success (per-second pricing: the
    /// measured time's price, never more than this).
    pub price: i64,
    /// How the price was reached, in words for a person ("1000 steps at
    /// 0.1 point a step", "about 12 minutes at 2 points a second (…)").
    pub explanation: String,
    /// Per-second pricing: the estimated run time the price holds for.
    pub estimate: Option<RunEstimate>,
    /// Points the account can spend now.
    pub available: i64,
    /// Images trained on.
    pub images: usize,
    /// Slug the LoRA will get.
    pub lora_slug: String,
    /// Its trigger word.
    pub trigger_word: String,
}

/// What a person asks to train.
#[derive(Debug, Clone, Default)]
pub struct TrainingRequest {
    /// The dataset: its slug or id.
    pub dataset: String,
    /// A definition id or base model (`SD1.5`, `SDXL`); default: the first
    /// definition a backend has a checkpoint for.
    pub base_model: Option<String>,
    /// Settings by the definition's input names (`steps`, `learning_rate`,
    /// `rank`, `batch_size`, `seed`, `checkpoint`, …); missing ones take the
    /// definition's defaults.
    pub settings: Map<String, Value>,
    /// Where it was asked from (a chat conversation gets the job's progress
    /// and result messages), stored in the job's `source`.
    pub source: Option<Value>,
    /// A submission repeated with the same key (a chat input handled again
    /// after a crash) returns the first one's training instead of a refusal.
    pub idempotency_key: Option<String>,
    /// An http(s) URL sent the training's end (`training.succeeded`, …) as
    /// a signed webhook event, as a generation's `callback_url`.
    pub callback_url: Option<String>,
}

/// A training as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingView {
    /// The training.
    #[serde(flatten)]
    pub row: TrainingRow,
    /// Its job (status, progress), when it still exists.
    pub job: Option<JobRow>,
    /// The LoRA it made.
    pub lora: Option<LoraRecord>,
    /// Its sample images' jobs (`training.samples`), in order.
    pub samples: Vec<JobRow>,
}

impl TrainingView {
    /// Progress of the run in [0, 1].
    pub fn progress(&self) -> f64 {
        match self.row.status.as_str() {
            "succeeded" => 1.0,
            _ => self.job.as_ref().map(|j| j.progress).unwrap_or(0.0),
        }
    }
}

/// `name` as a slug: lowercase letters and digits, other runs become `-`.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    out.chars().take(48).collect::<String>().trim_end_matches('-').to_owned()
}

/// `caption` with the trigger word in front when it lacks it (as a word,
/// any case); an empty caption becomes the trigger word.
pub fn with_trigger(caption: &str, trigger: &str) -> String {
    let caption = caption.trim();
    let has = caption
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .any(|w| w.eq_ignore_ascii_case(trigger));
    match (caption.is_empty(), has) {
        (true, _) => trigger.to_owned(),
        (false, true) => caption.to_owned(),
        (false, false) => format!("{trigger}, {caption}"),
    }
}

const MAX_CAPTION: usize = 1000;

/// A caption is text of at most [`MAX_CAPTION`] characters: line breaks and
/// tabs are fine, other control characters (a NUL byte) are refused.
fn check_caption(caption: &str) -> Result<(), TrainingError> {
    if caption.chars().count() > MAX_CAPTION {
        return Err(invalid("caption", format!("at most {MAX_CAPTION} characters")));
    }
    if caption.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(invalid("caption", "must be text, without control characters"));
    }
    Ok(())
}

/// The points of a run (in percent) its owner is told about, besides its
/// start and its end.
pub const MILESTONES: [u8; 3] = [25, 50, 75];

/// The highest of [`MILESTONES`] a run at `fraction` (0..1) has reached.
pub fn milestone(fraction: f64) -> Option<u8> {
    MILESTONES.iter().rev().copied().find(|m| fraction * 100.0 >= f64::from(*m))
}

/// A duration for a person: "30 minutes", "1 minute", "5 seconds".
pub fn duration_words(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64();
    let (n, unit) = if secs >= 60.0 && (secs / 60.0).fract() < 1e-9 {
        (secs / 60.0, "minute")
    } else {
        (secs.round().max(1.0), "second")
    };
    let n = n as u64;
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A training without a job this long after it was recorded was never queued.
pub(crate) const ORPHAN_AFTER_MS: i64 = 60_000;

impl Station {
    /// Creates an empty dataset owned by `account`. The trigger word
    /// defaults to the slug of the name.
    pub async fn create_dataset(
        &self,
        account: &AccountRow,
        name: &str,
        trigger_word: Option<&str>,
    ) -> Result<Dataset, TrainingError> {
        if let Some(off) = self.feature_refusal("training", account).await {
            return Err(TrainingError::Invalid { field: off.field, reason: off.reason });
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 80 {
            return Err(invalid("name", "must be 1 to 80 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("name", "must be one line of text, without control characters"));
        }
        let slug = slugify(name);
        if slug.is_empty() {
            return Err(invalid("name", "needs at least one letter or digit"));
        }
        let trigger = match trigger_word.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) if t.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_') && t.chars().count() <= 48 => {
                t.to_owned()
            }
            Some(_) => return Err(invalid("trigger_word", "must be one word of letters, digits, - or _")),
            None => slug.clone(),
        };
        let now = station_store::now_ms();
        let row = DatasetRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            account_id: account.id.clone(),
            name: name.to_owned(),
            slug: slug.clone(),
            trigger_word: trigger,
            status: "draft".into(),
            created_at: now,
            updated_at: now,
        };
        if !self.store.insert_dataset(&row).await? {
            return Err(invalid("name", format!("you already have a dataset called {slug:?}")));
        }
        Ok(Dataset { row, images: vec![], min_images: self.min_images(), max_images: self.max_images() })
    }

    fn min_images(&self) -> u64 {
        self.config.training.min_images.max(1)
    }

    fn max_images(&self) -> u64 {
        self.config.training.max_images.max(self.min_images())
    }

    /// The account's dataset by slug or id (admins: anyone's by id).
    async fn dataset_row(&self, account: &AccountRow, key: &str) -> Result<DatasetRow, TrainingError> {
        // No slug or id has control characters (PostgreSQL refuses a NUL in a query).
        if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
            return Err(TrainingError::NotFound(format!("no dataset {key:?}")));
        }
        let found = match self.store.dataset_by_slug(&account.id, key).await? {
            Some(row) => Some(row),
            None => self.store.get_dataset(key).await?.filter(|d| account.may_access(Some(&d.account_id))),
        };
        found.filter(|d| d.status != "archived").ok_or_else(|| TrainingError::NotFound(format!("no dataset {key:?}")))
    }

    /// A dataset with its images.
    pub async fn dataset(&self, account: &AccountRow, key: &str) -> Result<Dataset, TrainingError> {
        let row = self.dataset_row(account, key).await?;
        let images = self.store.dataset_images(&row.id).await?;
        Ok(Dataset { row, images, min_images: self.min_images(), max_images: self.max_images() })
    }

    /// The account's datasets, newest first (archived ones left out).
    pub async fn datasets(&self, account: &AccountRow) -> Result<Vec<DatasetRow>, TrainingError> {
        let mut rows = self.store.list_datasets(&account.id).await?;
        rows.retain(|d| d.status != "archived");
        Ok(rows)
    }

    /// Adds an image with its caption (the trigger word is put in front when
    /// the caption lacks it) into the dataset's next slot. The image is
    /// checked like every upload; a second copy of an image already in the
    /// dataset, a full dataset, or one being trained is refused, and then
    /// nothing is stored.
    pub async fn add_dataset_image(
        &self,
        account: &AccountRow,
        key: &str,
        bytes: Vec<u8>,
        caption: &str,
    ) -> Result<DatasetImageRow, TrainingError> {
        let checked = self.media.check_image(bytes).await.map_err(|e| invalid("image", e.to_string()))?;
        self.add_dataset_image_checked(account, key, checked, caption).await
    }

    /// [`Station::add_dataset_image`] for an image checked already (an HTTP
    /// upload checked in the decoding slot its request holds).
    pub async fn add_dataset_image_checked(
        &self,
        account: &AccountRow,
        key: &str,
        checked: crate::media::CheckedImage,
        caption: &str,
    ) -> Result<DatasetImageRow, TrainingError> {
        let dataset = self.dataset_row(account, key).await?;
        check_caption(caption)?;
        if dataset.status == "locked" {
            return Err(invalid("dataset", "is being trained; add images when the training has ended"));
        }
        let hash = station_media::store::content_hash(checked.bytes());
        let existing = self.store.dataset_images(&dataset.id).await?;
        if let Some(dup) = existing.iter().find(|i| i.hash == hash) {
            return Err(invalid("image", format!("the same image is already in slot {}", dup.position)));
        }
        if existing.len() as u64 >= self.max_images() {
            return Err(invalid("image", format!("the dataset is full ({} images at most)", self.max_images())));
        }
        let media = self.media.put_checked(checked, Some(&account.id), None, "input").await?;
        let caption = with_trigger(caption, &dataset.trigger_word);
        let added = self
            .store
            .add_dataset_image(
                &dataset.id,
                (&media.id, &media.hash, &caption),
                (self.max_images() as i64, self.min_images() as i64),
                station_store::now_ms(),
            )
            .await?;
        let refusal = match added {
            AddedImage::Added(position) => {
                return Ok(DatasetImageRow {
                    dataset_id: dataset.id,
                    position,
                    media_id: media.id,
                    hash: media.hash,
                    caption,
                });
            }
            AddedImage::Duplicate(p) => invalid("image", format!("the same image is already in slot {p}")),
            AddedImage::Full => invalid("image", format!("the dataset is full ({} images at most)", self.max_images())),
            AddedImage::NotEditable => invalid("dataset", "is being trained; add images when the training has ended"),
        };
        // Lost a race with another add: the stored copy goes again.
        let _ = self.store.delete_media(&media.id).await;
        Err(refusal)
    }

    /// Changes the caption of slot `position` (the trigger word is put in
    /// front when it lacks it).
    pub async fn set_dataset_caption(
        &self,
        account: &AccountRow,
        key: &str,
        position: i64,
        caption: &str,
    ) -> Result<String, TrainingError> {
        let dataset = self.dataset_row(account, key).await?;
        check_caption(caption)?;
        let caption = with_trigger(caption, &dataset.trigger_word);
        if !self.store.set_dataset_caption(&dataset.id, position, &caption, station_store::now_ms()).await? {
            return Err(invalid("position", format!("no image in slot {position}, or the dataset is being trained")));
        }
        Ok(caption)
    }

    /// Archives a dataset (it disappears from lists); refused while it is trained.
    pub async fn delete_dataset(&self, account: &AccountRow, key: &str) -> Result<(), TrainingError> {
        let dataset = self.dataset_row(account, key).await?;
        if !self.store.archive_dataset(&dataset.id, station_store::now_ms()).await? {
            return Err(invalid("dataset", "is being trained; cancel the training first"));
        }
        Ok(())
    }

    /// Everything a training of `req` would run with and cost, and what the
    /// account can spend, without writing anything. Refused with every bad
    /// field named.
    pub async fn quote_training(
        &self,
        account: &AccountRow,
        req: &TrainingRequest,
    ) -> Result<TrainingQuote, TrainingError> {
        let (quote, _, _) = self.assess_training(account, req).await?;
        Ok(quote)
    }

    async fn assess_training(
        &self,
        account: &AccountRow,
        req: &TrainingRequest,
    ) -> Result<(TrainingQuote, Dataset, &'static TrainingDef), TrainingError> {
        if account.suspended {
            return Err(SubmitError::Suspended.into());
        }
        let dataset = self.dataset(account, &req.dataset).await?;
        let def = match req.base_model.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
            Some(b) => find_definition(b).ok_or_else(|| {
                let known: Vec<&str> = definitions().iter().map(|d| d.base_model.as_str()).collect();
                invalid("base_model", format!("no training for {b:?}; available: {}", known.join(", ")))
            })?,
            // The first definition a backend has a checkpoint for, else the first.
            None => {
                let none = Map::new();
                let mut usable = None;
                for d in definitions() {
                    if matches!(self.choose_model(&d.tool, &req.settings, &none).await, Ok(Some(_))) {
                        usable = Some(d);
                        break;
                    }
                }
                match usable {
                    Some(d) => d,
                    None => definitions().first().ok_or_else(|| invalid("base_model", "no training is defined"))?,
                }
            }
        };
        let count = dataset.images.len() as u64;
        if count < dataset.min_images {
            return Err(invalid(
                "images",
                format!("the dataset has {count} images; a training needs at least {}", dataset.min_images),
            ));
        }
        let tool = &def.tool;
        let unknown: Vec<FieldError> = req
            .settings
            .keys()
            .filter(|k| !tool.inputs.contains_key(*k))
            .map(|k| FieldError {
                field: k.clone(),
                reason: format!(
                    "not a training setting; settings: {}",
                    tool.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
            .collect();
        let none = Map::new();
        let (model, model_error) = match self.choose_model(tool, &req.settings, &none).await {
            Ok(m) => (m, None),
            Err(e) => (None, Some(e)),
        };
        let mut explicit = req.settings.clone();
        explicit.retain(|k, _| tool.inputs.contains_key(k));
        if let Some((input, m)) = &model {
            explicit.insert(input.clone(), Value::String(m.name.clone()));
        }
        let resolved = resolve_params_with_defaults(tool, &explicit, &none, &Map::new(), &mut rand::rng());
        let mut errors = unknown;
        if let Err(e) = &resolved {
            errors.extend(e.0.iter().cloned());
        }
        if let Some(e) = model_error {
            errors.retain(|x| x.field != e.field);
            errors.push(e);
        }
        let settings = match resolved {
            Ok(r) if errors.is_empty() => r.values,
            _ => return Err(SubmitError::Invalid(errors).into()),
        };
        let steps = settings.get("steps").and_then(Value::as_u64).unwrap_or(0);
        let mut multiplier = self.config.points.multiplier;
        if let Some((_, m)) = &model {
            multiplier *= m.price_multiplier;
        }
        let (price, explanation, estimate) = match self.training_price(def) {
            TrainingPrice::PerStep(per_step) => {
                let price =
                    crate::points::price(&station_tools::Cost::PerRun(1), (steps as f64) * per_step * multiplier);
                let rate = short_number(per_step * multiplier);
                let unit = point_unit(per_step * multiplier);
                (price, format!("{steps} steps at {rate} {unit} a step"), None)
            }
            TrainingPrice::PerSecond(per_second) => {
                let estimate = self.estimate_run(def, &per_second, steps, multiplier).await?;
                let price = crate::points::price(
                    &station_tools::Cost::PerRun(1),
                    estimate.seconds as f64 * estimate.points_per_second,
                );
                let explanation = estimate.explain(steps, price);
                (price, explanation, Some(estimate))
            }
        };
        self.ensure_starting_grant(&account.id).await.map_err(SubmitError::from)?;
        let terms = self.pay_terms(account, price, None);
        let plan =
            self.store.plan_payment(&account.id, &terms, station_store::now_ms()).await.map_err(SubmitError::from)?;
        let quote = TrainingQuote {
            definition: def.id.clone(),
            base_model: def.base_model.clone(),
            settings,
            steps,
            price,
            explanation,
            estimate,
            available: plan.available,
            images: dataset.images.len(),
            lora_slug: self.free_lora_slug(&dataset.row.slug).await?,
            trigger_word: dataset.row.trigger_word.clone(),
        };
        Ok((quote, dataset, def))
    }

    /// How `def` is priced: `training.per_second.<id>` when the operator set
    /// it, else the definition's own price.
    pub fn training_price(&self, def: &TrainingDef) -> TrainingPrice {
        match self.config.training.per_second.get(&def.id) {
            Some(p) => TrainingPrice::PerSecond(p.clone()),
            None => def.price.clone(),
        }
    }

    /// The run time a per-second training of `steps` steps is quoted for:
    /// the median seconds per step of the definition's latest `runs`
    /// successful trainings (measured as their capture is: the backend time
    /// of their job), else the operator's `default_seconds_per_step`; times
    /// the steps and the margin.
    pub async fn estimate_run(
        &self,
        def: &TrainingDef,
        price: &TrainingPerSecond,
        steps: u64,
        multiplier: f64,
    ) -> Result<RunEstimate, TrainingError> {
        let past = self.store.training_runs(&def.id, i64::from(price.runs)).await?;
        let runs: Vec<(i64, u64)> = past
            .iter()
            .map(|r| {
                let settings: Map<String, Value> = serde_json::from_str(&r.settings).unwrap_or_default();
                (r.run_ms, settings.get("steps").and_then(Value::as_u64).unwrap_or(0))
            })
            .filter(|(ms, steps)| *ms > 0 && *steps > 0)
            .collect();
        let (seconds_per_step, basis) = match median_seconds_per_step(&runs) {
            Some(s) => (s, EstimateBasis::History { runs: runs.len() }),
            None => (price.default_seconds_per_step, EstimateBasis::Default),
        };
        Ok(RunEstimate {
            seconds_per_step,
            margin: price.margin,
            seconds: estimated_seconds(steps, seconds_per_step, price.margin),
            points_per_second: price.points * multiplier,
            basis,
        })
    }

    /// The base models LoRAs can be trained for now: those of the
    /// definitions some backend that is up has a checkpoint for.
    pub async fn trainable_base_models(&self) -> Vec<String> {
        let none = Map::new();
        let mut out = vec![];
        for d in definitions() {
            if matches!(self.choose_model(&d.tool, &none, &none).await, Ok(Some(_))) {
                out.push(d.base_model.clone());
            }
        }
        out
    }

    /// `base`, or `base-2`, `base-3`, … : the first slug no catalog LoRA has.
    async fn free_lora_slug(&self, base: &str) -> Result<String, TrainingError> {
        let catalog = self.loras().catalog().await?;
        let taken = |s: &str| catalog.iter().any(|l| l.slug == s);
        if !taken(base) {
            return Ok(base.to_owned());
        }
        let mut n = 2;
        loop {
            let candidate = format!("{base}-{n}");
            if !taken(&candidate) {
                return Ok(candidate);
            }
            n += 1;
        }
    }

    /// Starts a training: the dataset is locked, the quoted price held and
    /// the job queued on the ComfyUI pool (a refused payment writes nothing).
    pub async fn start_training(
        &self,
        account: &AccountRow,
        req: &TrainingRequest,
    ) -> Result<TrainingView, TrainingError> {
        if let Some(off) = self.feature_refusal("training", account).await {
            return Err(TrainingError::Invalid { field: off.field, reason: off.reason });
        }
        if let Some(key) = &req.idempotency_key
            && let Some(job) = self.store.job_by_idem_key(key).await?
            && job.account_id == account.id
            && let Some(row) = self.store.training_by_job(&job.id).await?
        {
            return self.training_view(row).await;
        }
        let callback = self.check_callback_url(req.callback_url.as_deref()).await.map_err(|e| match e {
            SubmitError::Invalid(mut f) if !f.is_empty() => {
                let f = f.remove(0);
                TrainingError::Invalid { field: f.field, reason: f.reason }
            }
            e => e.into(),
        })?;
        let (quote, dataset, def) = self.assess_training(account, req).await?;
        if quote.available < quote.price {
            return Err(SubmitError::InsufficientPoints { needed: quote.price, available: quote.available }.into());
        }
        let now = station_store::now_ms();
        let training_id = uuid::Uuid::now_v7().simple().to_string();
        let job_id = uuid::Uuid::now_v7().to_string();
        let row = TrainingRow {
            id: training_id.clone(),
            account_id: account.id.clone(),
            dataset_id: dataset.row.id.clone(),
            definition: def.id.clone(),
            job_id: job_id.clone(),
            lora_slug: quote.lora_slug.clone(),
            settings: Value::Object(quote.settings.clone()).to_string(),
            price: quote.price,
            status: "running".into(),
            error: None,
            file_hash: None,
            file_name: None,
            created_at: now,
            finished_at: None,
        };
        if let Some(url) = &callback {
            // Before the training: once it exists, its end is owed to the URL.
            self.callback_secret(account).await?;
            self.store.insert_callback("training", &training_id, &account.id, url, now).await?;
        }
        // The training first (durable, dataset locked), then its paid job.
        if !self.store.insert_training(&row).await? {
            return Err(invalid("dataset", "is being trained already, or not ready"));
        }
        let mut params = quote.settings.clone();
        let files: Vec<Value> =
            dataset.images.iter().map(|i| json!({"media": i.media_id, "caption": i.caption})).collect();
        params.insert(DATASET_PARAM.into(), Value::Array(files));
        params.insert(TRAINING_PARAM.into(), Value::String(training_id.clone()));
        if let Some(e) = &quote.estimate {
            // The rate agreed at submit settles the run, whatever the config says by then.
            params.insert(RATE_PARAM.into(), json!(e.points_per_second));
        }
        let q = &self.config.queue;
        let job = station_store::NewJob {
            id: job_id,
            account_id: account.id.clone(),
            tool_id: def.tool.id.clone(),
            service: crate::jobs::service_name(def.tool.service).to_string(),
            params,
            priority: 0,
            max_attempts: q.max_attempts as i64,
            timeout_ms: (def.timeout_seconds * 1000) as i64,
            source: req.source.clone(),
        };
        let terms = self.pay_terms(account, quote.price, None);
        let actor = format!("account:{}", account.id);
        let placed = self.store.insert_job_paid_keyed(&job, &terms, &actor, req.idempotency_key.as_deref(), now).await;
        let job_row = match placed {
            Ok(station_store::Placed::New(row, _) | station_store::Placed::Existing(row)) => row,
            Err(e) => {
                if let Err(d) = self.store.delete_unqueued_training(&training_id, now).await {
                    tracing::warn!(training = %training_id, error = %d, "could not remove a training whose job was refused");
                }
                return Err(SubmitError::from(e).into());
            }
        };
        crate::telemetry::job_submitted(&job_row.tool_id, &job_row.service);
        self.bus.publish(JobEvent::Status { job_id: job_row.id.clone(), status: JobStatus::Queued, error: None });
        self.wake.notify_waiters();
        Ok(TrainingView { row, job: Some(job_row), lora: None, samples: vec![] })
    }

    /// One of the account's trainings (admins: anyone's). A training whose
    /// job ended is completed by the job's worker (or, after a crash, the
    /// sweeper), not by readers.
    pub async fn training(&self, account: &AccountRow, id: &str) -> Result<TrainingView, TrainingError> {
        let row = self
            .store
            .get_training(id)
            .await?
            .filter(|t| account.may_access(Some(&t.account_id)))
            .ok_or_else(|| TrainingError::NotFound(format!("no training {id:?}")))?;
        self.training_view(row).await
    }

    /// The training a job runs, completed first when the job has ended (so a
    /// result message can name the LoRA it made); `None` for other jobs.
    pub async fn training_for_job(
        &self,
        account: &AccountRow,
        job_id: &str,
    ) -> Result<Option<TrainingView>, TrainingError> {
        let Some(row) = self.store.training_by_job(job_id).await? else { return Ok(None) };
        if !account.may_access(Some(&row.account_id)) {
            return Ok(None);
        }
        if row.status == "running" {
            self.complete_training_for_job(job_id).await?;
            return self.training(account, &row.id).await.map(Some);
        }
        self.training_view(row).await.map(Some)
    }

    /// The name a training is told by (its dataset's, else its LoRA's slug)
    /// and its steps, for the training job `job_id`; `None` for other jobs
    /// and jobs the account may not see. Reads only.
    pub async fn training_summary_for_job(
        &self,
        account: &AccountRow,
        job_id: &str,
    ) -> Result<Option<(String, Option<u64>)>, TrainingError> {
        let Some(row) = self.store.training_by_job(job_id).await? else { return Ok(None) };
        if !account.may_access(Some(&row.account_id)) {
            return Ok(None);
        }
        let name = match self.store.get_dataset(&row.dataset_id).await? {
            Some(d) => d.name,
            None => row.lora_slug.clone(),
        };
        let settings: Map<String, Value> = serde_json::from_str(&row.settings).unwrap_or_default();
        Ok(Some((name, settings.get("steps").and_then(Value::as_u64))))
    }

    /// Adds an image the account already stored (a chat upload) to the
    /// dataset's next slot, as [`Station::add_dataset_image`] does.
    pub async fn add_dataset_media(
        &self,
        account: &AccountRow,
        key: &str,
        media_id: &str,
        caption: &str,
    ) -> Result<DatasetImageRow, TrainingError> {
        let (_, bytes) = self.media.get(media_id, Some(account)).await?;
        self.add_dataset_image(account, key, bytes, caption).await
    }

    async fn training_view(&self, row: TrainingRow) -> Result<TrainingView, TrainingError> {
        let job = self.store.get_job(&row.job_id).await?;
        let lora = match row.status.as_str() {
            "succeeded" => self.loras().show(&row.lora_slug).await.ok(),
            _ => None,
        };
        let mut samples = vec![];
        if row.status == "succeeded" {
            for id in self.store.training_samples(&row.id).await? {
                if let Some(j) = self.store.get_job(&id).await? {
                    samples.push(j);
                }
            }
        }
        Ok(TrainingView { row, job, lora, samples })
    }

    /// The account's trainings, newest first.
    pub async fn trainings(&self, account: &AccountRow) -> Result<Vec<TrainingView>, TrainingError> {
        let rows = self.store.list_trainings(&account.id).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.training_view(row).await?);
        }
        Ok(out)
    }

    /// Cancels a training: a queued one at once, a running one as soon as its
    /// backend stops; its points are released and its dataset unlocked.
    pub async fn cancel_training(&self, account: &AccountRow, id: &str) -> Result<TrainingView, TrainingError> {
        let view = self.training(account, id).await?;
        if view.row.status == "running" {
            self.cancel(account, &view.row.job_id).await?;
            self.complete_training_for_job(&view.row.job_id).await?;
        }
        self.training(account, id).await
    }

    /// Completes the training job `job_id` runs once the job has ended: on
    /// success the trained file (stored by content hash with the job's
    /// outputs) becomes a private catalog LoRA of the owner — and, with
    /// `training.publish_dir`, is written there as `<slug>.safetensors`; on
    /// failure or cancel the training ends so. Its dataset is unlocked.
    /// Idempotent: safe from the worker, the sweeper and readers at once.
    pub async fn complete_training_for_job(&self, job_id: &str) -> Result<(), TrainingError> {
        let Some(training) = self.store.training_by_job(job_id).await? else { return Ok(()) };
        if training.status != "running" {
            return Ok(());
        }
        let now = station_store::now_ms();
        let Some(job) = self.store.get_job(job_id).await? else {
            // A process died between recording the training and queuing its
            // job (nothing was held): it ends, and its dataset is unlocked.
            if training.created_at < now - ORPHAN_AFTER_MS {
                let why = "its job was never queued (Station stopped while starting it); nothing was charged";
                self.store.finish_training(&training.id, "failed", Some(why), None, now).await?;
            }
            return Ok(());
        };
        match job.status() {
            JobStatus::Queued | JobStatus::Dispatched | JobStatus::Running => Ok(()),
            JobStatus::Failed | JobStatus::Cancelled => {
                let status = if job.status() == JobStatus::Cancelled { "cancelled" } else { "failed" };
                self.store.finish_training(&training.id, status, job.error.as_deref(), None, now).await?;
                Ok(())
            }
            JobStatus::Succeeded => self.make_lora(&training, &job, now).await,
        }
    }

    async fn make_lora(&self, training: &TrainingRow, job: &JobRow, now: i64) -> Result<(), TrainingError> {
        let output = job.output_ids().into_iter().next();
        let Some(media_id) = output else {
            self.store.finish_training(&training.id, "failed", Some("the training saved no file"), None, now).await?;
            return Ok(());
        };
        let (media, bytes) = self.media.get(&media_id, None).await?;
        let def = definitions().iter().find(|d| d.id == training.definition);
        let base_model = def.map(|d| d.base_model.clone()).unwrap_or_else(|| "SD1.5".into());
        let dataset = self.store.get_dataset(&training.dataset_id).await?;
        let filename = match &self.config.training.publish_dir {
            Some(dir) => {
                let name = format!("{}.safetensors", training.lora_slug);
                publish(dir, &name, bytes).await.map_err(|e| {
                    invalid("training.publish_dir", format!("cannot write {name} into {}: {e}", dir.display()))
                })?;
                name
            }
            None => match &training.file_name {
                Some(n) => n.clone(),
                None => {
                    self.store
                        .finish_training(
                            &training.id,
                            "failed",
                            Some("the trained file's name was not recorded"),
                            None,
                            now,
                        )
                        .await?;
                    return Ok(());
                }
            },
        };
        let (name, trigger) = match &dataset {
            Some(d) => (d.name.clone(), d.trigger_word.clone()),
            None => (training.lora_slug.clone(), training.lora_slug.clone()),
        };
        let edit = LoraEdit {
            name: Some(name.clone()),
            description: Some(format!("Trained on the dataset {name:?} ({}).", training_summary(training))),
            trigger_words: Some(vec![trigger]),
            checkpoint: Some(base_model),
            filename: Some(filename.clone()),
            tags: Some(vec!["trained".into()]),
            owner: Some(Some(training.account_id.clone())),
            visibility: Some(Visibility::Private),
            ..Default::default()
        };
        // The backends list the new file before the LoRA is usable: a job
        // with it right after is routed by a fresh list, not refused by a stale one.
        let executors: Vec<_> = self.executors.read().expect("executors lock").clone();
        for ex in executors {
            ex.refresh().await;
        }
        let by = Actor { who: format!("account:{}", training.account_id), via: Via::Chat("training".into()) };
        match self.loras().add(&training.lora_slug, edit, &by).await {
            Ok(_) => {}
            // Another process completed it first: same owner and file.
            Err(LoraError::Invalid { field, .. }) if field == "slug" => {
                let existing = self.loras().show(&training.lora_slug).await?;
                if existing.owner.as_deref() != Some(training.account_id.as_str()) || existing.filename != filename {
                    let msg = format!("the LoRA name {:?} was taken meanwhile", training.lora_slug);
                    self.store.finish_training(&training.id, "failed", Some(&msg), Some(&media.hash), now).await?;
                    return Ok(());
                }
            }
            Err(e) => return Err(e.into()),
        }
        if self.store.finish_training(&training.id, "succeeded", None, Some(&media.hash), now).await? {
            // Only the completion that recorded the success queues samples.
            self.queue_samples(training, job).await;
        }
        Ok(())
    }

    /// Queues `training.samples` sample images of a LoRA just trained: one
    /// ordinary paid job each with the definition's sample tool, the
    /// checkpoint trained on and the dataset's captions as prompts (their
    /// trigger word brings the LoRA in); delivered where the training was
    /// asked from. A sample that cannot be queued (too few points, no
    /// sample tool) is logged and left out: the LoRA is ready regardless.
    async fn queue_samples(&self, training: &TrainingRow, job: &JobRow) {
        let count = self.config.training.samples.min(8);
        if count == 0 {
            return;
        }
        let Some(spec) = definitions().iter().find(|d| d.id == training.definition).and_then(|d| d.samples.as_ref())
        else {
            tracing::info!(training = %training.id, "no sample tool in its definition; no samples");
            return;
        };
        let Some(tool) = self.tools.get(&spec.tool) else {
            tracing::warn!(training = %training.id, tool = %spec.tool, "the sample tool is not loaded; no samples");
            return;
        };
        let Ok(Some(account)) = self.store.get_account(&training.account_id).await else { return };
        let captions: Vec<String> = match self.store.dataset_images(&training.dataset_id).await {
            Ok(images) => images.into_iter().map(|i| i.caption).collect(),
            Err(e) => {
                tracing::warn!(training = %training.id, error = %e, "cannot read the captions; no samples");
                return;
            }
        };
        if captions.is_empty() {
            return;
        }
        let settings: Map<String, Value> = serde_json::from_str(&training.settings).unwrap_or_default();
        let source = job.source.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok());
        let actor = format!("account:{}", account.id);
        for i in 0..count as usize {
            let mut params = spec.params.clone();
            params.insert("prompt".into(), Value::String(captions[i % captions.len()].clone()));
            // The checkpoint trained on goes into the tool's model input.
            let model_input = tool
                .model_input()
                .map(|(n, _)| n.to_owned())
                .or_else(|| tool.inputs.contains_key("checkpoint").then(|| "checkpoint".to_owned()));
            if let (Some(input), Some(c)) = (model_input, settings.get("checkpoint")) {
                params.insert(input, c.clone());
            }
            let req = crate::jobs::SubmitRequest {
                tool: tool.id.clone(),
                params,
                source: source.clone(),
                confirmed: true,
                ..Default::default()
            };
            let key = format!("sample:{}:{i}", training.id);
            let p = match self.prepare_tool(&account, tool.clone(), &req, &[]).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(training = %training.id, error = %e, "a sample was refused; no more samples");
                    return;
                }
            };
            let now = station_store::now_ms();
            if let Err(e) = self.store.insert_training_sample(&p.job.id, &training.id, i as i64, now).await {
                tracing::warn!(training = %training.id, error = %e, "cannot record a sample");
                return;
            }
            let terms = self.pay_terms(&account, p.price, None);
            match self.store.insert_job_paid_keyed(&p.job, &terms, &actor, Some(&key), now).await {
                Ok(station_store::Placed::New(row, _)) => {
                    crate::telemetry::job_submitted(&row.tool_id, &row.service);
                    self.bus.publish(JobEvent::Status { job_id: row.id, status: JobStatus::Queued, error: None });
                }
                Ok(station_store::Placed::Existing(_)) => {
                    let _ = self.store.delete_training_sample(&p.job.id).await;
                }
                Err(e) => {
                    let _ = self.store.delete_training_sample(&p.job.id).await;
                    tracing::warn!(training = %training.id, error = %e, "a sample was not queued; no more samples");
                    return;
                }
            }
        }
        self.wake.notify_waiters();
    }

    /// Completes every training whose job ended without it (a process died
    /// in between). Returns how many it completed.
    pub async fn complete_trainings(&self) -> Result<usize, TrainingError> {
        let open = self.store.trainings_to_complete(station_store::now_ms() - ORPHAN_AFTER_MS).await?;
        let n = open.len();
        for t in open {
            self.complete_training_for_job(&t.job_id).await?;
        }
        Ok(n)
    }

    /// The trained file of a LoRA the account owns (or may use; admins: any),
    /// as `(file name, bytes)`.
    pub async fn lora_file(&self, account: &AccountRow, slug: &str) -> Result<(String, Vec<u8>), TrainingError> {
        let not_found = || TrainingError::NotFound(format!("no trained LoRA {slug:?}"));
        let lora = self.loras().show(slug).await.map_err(|_| not_found())?;
        let allowed = account.is_admin()
            || lora.owner.as_deref() == Some(account.id.as_str())
            || lora.grants.iter().any(|g| {
                g.account == account.id && !g.revoked && g.expires_at.is_none_or(|t| t > station_store::now_ms())
            });
        if !allowed {
            return Err(not_found());
        }
        let training = self.store.training_by_lora(slug).await?.ok_or_else(not_found)?;
        let job = self.store.get_job(&training.job_id).await?.ok_or_else(not_found)?;
        let media_id = job.output_ids().into_iter().next().ok_or_else(not_found)?;
        let (_, bytes) = self.media.get(&media_id, None).await?;
        Ok((format!("{slug}.safetensors"), bytes))
    }
}

fn training_summary(t: &TrainingRow) -> String {
    let settings: Map<String, Value> = serde_json::from_str(&t.settings).unwrap_or_default();
    let get = |k: &str| settings.get(k).map(ToString::to_string).unwrap_or_else(|| "?".into());
    format!("{} steps, learning rate {}, rank {}", get("steps"), get("learning_rate"), get("rank"))
}

/// Writes `bytes` as `dir/name` atomically (a temporary file renamed).
async fn publish(dir: &std::path::Path, name: &str, bytes: Vec<u8>) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, dir.join(&name))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The dataset a training job uploads, read from its params (`_dataset`).
pub(crate) async fn load_dataset(station: &Station, params: &Map<String, Value>) -> Result<Vec<DatasetFile>, String> {
    let Some(list) = params.get(DATASET_PARAM) else { return Ok(vec![]) };
    let items = list.as_array().ok_or_else(|| format!("{DATASET_PARAM} is not a list"))?;
    let mut files = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item["media"].as_str().ok_or_else(|| format!("{DATASET_PARAM}[{i}]: no media id"))?;
        let (row, bytes) = station.media.get(id, None).await.map_err(|e| format!("dataset image {}: {e}", i + 1))?;
        files.push(DatasetFile {
            bytes: Arc::new(bytes),
            extension: station_media::extension_for_mime(&row.mime).to_owned(),
            caption: item["caption"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_definitions_load() {
        let d = find_definition("sd1.5").expect("SD1.5 training");
        assert_eq!(d.id, "lora-sd15");
        assert_eq!(d.tool.inputs["steps"].default, Some(json!(1000)));
        assert_eq!(d.tool.inputs["rank"].default, Some(json!(16)));
        assert!(definition_for_tool("train-lora-sd15").is_some());
    }

    #[test]
    fn flux_definition_loads_with_its_graph_and_per_second_price() {
        let d = find_definition("flux").expect("FLUX training");
        assert_eq!((d.id.as_str(), d.tool.id.as_str()), ("lora-flux", "train-lora-flux"));
        let TrainingPrice::PerSecond(p) = &d.price else { panic!("{:?}", d.price) };
        assert_eq!((p.points, p.default_seconds_per_step, p.margin, p.runs), (1.0, 2.0, 1.25, 5));
        assert_eq!(d.tool.inputs["precision"].default, Some(json!("bf16")));
        assert_eq!(d.tool.inputs["checkpoint"].model_kind.as_deref(), Some("diffusion_model"));
        let graph = &d.tool.comfyui.as_ref().unwrap().workflow;
        let class = |id: &str| graph[id]["class_type"].as_str().unwrap().to_owned();
        assert_eq!(
            ["1", "2", "3", "4", "5", "6", "7", "8"].map(class),
            [
                "UNETLoader",
                "DualCLIPLoader",
                "VAELoader",
                "LoadImageTextDataSetFromFolder",
                "VAEEncode",
                "CLIPTextEncode",
                "TrainLoraNode",
                "SaveLoRA"
            ]
        );
        assert_eq!(graph["2"]["inputs"]["type"], "flux");
        // Per step for the others.
        assert_eq!(find_definition("SDXL").unwrap().price, TrainingPrice::PerStep(0.25));
    }

    #[test]
    fn a_definition_has_one_price() {
        let sd15 = include_str!("../training/lora-sd15.json");
        let both = sd15.replacen(
            "\"points_per_step\": 0.1,",
            "\"points_per_step\": 0.1, \"per_second\": {\"points\": 1, \"default_seconds_per_step\": 1},",
            1,
        );
        assert!(parse_def("x.json", &both).unwrap_err().contains("not both"));
        let neither = sd15.replacen("\"points_per_step\": 0.1,", "", 1);
        assert!(parse_def("x.json", &neither).unwrap_err().contains("needs points_per_step or per_second"));
        let bad = sd15.replacen(
            "\"points_per_step\": 0.1,",
            "\"per_second\": {\"points\": 1, \"default_seconds_per_step\": 1, \"margin\": 0.5},",
            1,
        );
        assert!(parse_def("x.json", &bad).unwrap_err().contains("margin"));
    }

    #[test]
    fn estimates_from_past_runs() {
        assert_eq!(median_seconds_per_step(&[]), None);
        assert_eq!(median_seconds_per_step(&[(0, 10), (5000, 0)]), None, "no time or no steps: left out");
        assert_eq!(median_seconds_per_step(&[(10_000, 10)]), Some(1.0));
        // 1, 3 and 0.5 s a step: the median is 1; a slow outlier does not move it.
        assert_eq!(median_seconds_per_step(&[(10_000, 10), (300_000, 100), (500, 1)]), Some(1.0));
        assert_eq!(median_seconds_per_step(&[(10_000, 10), (20_000, 10)]), Some(1.5));
        assert_eq!(estimated_seconds(1000, 0.58, 1.25), 725);
        assert_eq!(estimated_seconds(1, 0.001, 1.0), 1, "at least a second");
        let e = RunEstimate {
            seconds_per_step: 0.58,
            margin: 1.25,
            seconds: 725,
            points_per_second: 2.0,
            basis: EstimateBasis::History { runs: 5 },
        };
        assert_eq!(
            e.explain(1000, 1450),
            "about 13 minutes at 2 points a second (1000 steps at 0.58 s a step, the median of the last 5 runs, \
             plus 25 %); you pay for the time it takes, at most 1450 points"
        );
        assert_eq!(about(7200), "about 2 hours");
        assert_eq!(about(7260), "about 2 hours 1 minute");
        assert_eq!(about(60), "about 60 seconds");
    }

    #[test]
    fn per_second_config_is_typed_and_names_a_definition() {
        let c: crate::config::TrainingConfig =
            toml::from_str("[per_second.lora-sdxl]\npoints = 2\ndefault_seconds_per_step = 0.6\n").unwrap();
        let p = &c.per_second["lora-sdxl"];
        assert_eq!((p.points, p.default_seconds_per_step, p.margin, p.runs), (2.0, 0.6, 1.25, 5), "defaults");
        assert!(check_config(&c).is_ok());
        let bad = toml::from_str::<crate::config::TrainingConfig>(
            "[per_second.lora-sdxl]\npoints = 0\ndefault_seconds_per_step = 0.6\n",
        );
        assert!(bad.unwrap_err().to_string().contains("points must be a number above 0"));
        let c: crate::config::TrainingConfig =
            toml::from_str("[per_second.lora-sd16]\npoints = 2\ndefault_seconds_per_step = 0.6\n").unwrap();
        let err = check_config(&c).unwrap_err();
        assert!(err.contains("training.per_second.lora-sd16") && err.contains("lora-sd15"), "{err}");
    }

    #[test]
    fn milestones_and_durations() {
        assert_eq!(milestone(0.1), None);
        assert_eq!(milestone(0.25), Some(25));
        assert_eq!(milestone(0.74), Some(50));
        assert_eq!(milestone(1.0), Some(75));
        assert_eq!(duration_words(std::time::Duration::from_secs(1800)), "30 minutes");
        assert_eq!(duration_words(std::time::Duration::from_secs(60)), "1 minute");
        assert_eq!(duration_words(std::time::Duration::from_millis(3000)), "3 seconds");
        assert_eq!(duration_words(std::time::Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn slugs_and_triggers() {
        assert_eq!(slugify("  My Cat, Tom! "), "my-cat-tom");
        assert_eq!(slugify("!!!"), "");
        assert_eq!(with_trigger("a cat on a sofa", "tomcat"), "tomcat, a cat on a sofa");
        assert_eq!(with_trigger("TomCat sleeping", "tomcat"), "TomCat sleeping");
        assert_eq!(with_trigger("  ", "tomcat"), "tomcat");
    }
}
