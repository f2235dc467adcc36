//! Models from the backends: what each ComfyUI backend offers (recorded by
//! the executor at every health check), the operator's catalog (base model,
//! label, hidden, default, price multiplier), and what a tool's `model` input
//! may choose from.
//!
//! A model is offered when it is not hidden and at least one backend that
//! passed its last health check lists it. A tool with a `model` input is
//! listed only while it has something to offer ([`Station::listed_tools`]),
//! and a submission naming a model nobody offers is refused before anything
//! is queued, with the list of what exists.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
pub use station_store::BackendFile;
use station_store::{AccountRow, ModelCatalogRow, StoreError};
use station_tools::{FieldError, InputDef, ToolDef, Visibility};

use crate::Station;

/// The job parameter that records the chosen model's price multiplier (when
/// not 1), so the charge at the end uses the multiplier the quote used.
pub const MULTIPLIER_PARAM: &str = "_model_multiplier";

/// How long a process trusts its copy of the inventory and catalog before
/// reading them again (other processes record health checks too).
pub const MODELS_CACHE_TTL: Duration = Duration::from_secs(2);

/// Base models Station knows defaults for (others may be set all the same).
pub const KNOWN_BASE_MODELS: [&str; 4] = ["SD1.5", "SDXL", "FLUX", "SD3"];

/// Where a model's base model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseModelSource {
    /// The operator set it (`station models set NAME --base-model …`).
    Catalog,
    /// Named by the file's own metadata, as its backend reported it
    /// (ComfyUI's `GET /view_metadata`; see [`base_model_from_metadata`]).
    Metadata,
    /// Guessed from the file name (see [`infer_base_model`]).
    Name,
    /// Not known: the operator should set it.
    Unknown,
}

/// One model as Station knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// File name as the backends list it.
    pub name: String,
    /// `checkpoint`, `lora`, `upscale_model`, `vae`, `diffusion_model`.
    pub kind: String,
    /// Base model (`SD1.5`, `SDXL`, `FLUX`, …) when known.
    pub base_model: Option<String>,
    /// Where [`ModelInfo::base_model`] comes from.
    pub base_model_source: BaseModelSource,
    /// What to show people: the operator's label, else the file name without its extension.
    pub label: String,
    /// Not offered to members.
    pub hidden: bool,
    /// The default model of its base model.
    pub default: bool,
    /// Multiplies the price of jobs run with it.
    pub price_multiplier: f64,
    /// Backends that have it and passed their last health check.
    pub backends: Vec<String>,
    /// Backends that have it but are down now.
    pub offline_backends: Vec<String>,
}

impl ModelInfo {
    /// Offered to members: not hidden and on a backend that is up.
    pub fn offered(&self) -> bool {
        !self.hidden && !self.backends.is_empty()
    }

    /// Whether a model input of `def` may choose it (kind and base models).
    pub fn fits(&self, def: &InputDef) -> bool {
        def.model_kind.as_deref() == Some(self.kind.as_str())
            && def.base_models.as_ref().is_none_or(|list| {
                self.base_model.as_deref().is_some_and(|b| list.iter().any(|l| l.eq_ignore_ascii_case(b)))
            })
    }

    /// What a person reads: `Label (SDXL)`.
    pub fn display(&self) -> String {
        match &self.base_model {
            Some(b) => format!("{} ({b})", self.label),
            None => self.label.clone(),
        }
    }
}

/// What the operator changes about a model (`None`: keep as is).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSettings {
    /// Base model; `Some("")` clears it (back to the inferred one).
    pub base_model: Option<String>,
    /// Label; `Some("")` clears it.
    pub label: Option<String>,
    /// Make it the default of its base model (and kind).
    pub default: Option<bool>,
    /// Hide it (`Some(false)`: show it).
    pub hidden: Option<bool>,
    /// Price multiplier (positive, at most 100).
    pub price_multiplier: Option<f64>,
}

/// Why a catalog change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No backend has offered a model of this name.
    #[error("no backend has a model named {name:?}; known: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A value is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The option.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

/// This process's copy of the inventory and catalog (see [`MODELS_CACHE_TTL`]).
#[derive(Clone, Default)]
pub struct ModelCache(Arc<Mutex<Option<CachedModels>>>);

/// When the models were read, and what they were.
type CachedModels = (Instant, Arc<Vec<ModelInfo>>);

/// Guesses a base model from hints in a file name (`sd_xl_base_1.0`,
/// `v1-5-pruned`, `flux1-dev`, `…XL_v3`, `pony…`). `None` when there is none.
pub fn infer_base_model(file: &str) -> Option<&'static str> {
    let name = file.rsplit('/').next().unwrap_or(file).to_ascii_lowercase();
    let name = name.rsplit_once('.').map(|(stem, _)| stem).unwrap_or(&name);
    let flat: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
    let tokens: Vec<&str> = name.split(|c: char| !c.is_ascii_alphanumeric()).filter(|t| !t.is_empty()).collect();
    if flat.contains("flux") {
        return Some("FLUX");
    }
    if flat.contains("sd3") {
        return Some("SD3");
    }
    if flat.contains("sdxl")
        || tokens.iter().any(|t| t.ends_with("xl") || t.starts_with("xl"))
        || ["pony", "illustrious", "noobai"].iter().any(|h| flat.contains(h))
    {
        return Some("SDXL");
    }
    if flat.contains("sd15")
        || flat.contains("v15")
        || flat.contains("sd1")
        || tokens.windows(2).any(|w| w == ["1", "5"])
    {
        return Some("SD1.5");
    }
    None
}

/// Kinds of model files whose base model matters (what a checkpoint is
/// built on; what a LoRA was trained for).
pub const BASE_MODEL_KINDS: [&str; 3] = ["checkpoint", "lora", "diffusion_model"];

/// Whether a backend should be asked for the metadata of this file: a
/// safetensors file of a kind with a base model whose name gives no hint.
/// (ComfyUI's `GET /view_metadata` reads only safetensors headers.)
pub fn wants_metadata(kind: &str, name: &str) -> bool {
    BASE_MODEL_KINDS.contains(&kind)
        && name.to_ascii_lowercase().ends_with(".safetensors")
        && infer_base_model(name).is_none()
}

/// The base model a model file's safetensors metadata names, as ComfyUI's
/// `GET /view_metadata/<folder>?filename=…` returns it (the header's
/// `__metadata__`, an object of strings). Read, in this order: the model
/// spec's `modelspec.architecture` (`stable-diffusion-xl-v1-base`,
/// `stable-diffusion-v1/lora`, `flux-1-dev`, …), kohya's
/// `ss_base_model_version` (`sdxl_base_v1-0`, `sd_v1`, `flux1`, …) and
/// `ss_v2`, then the name of the checkpoint a LoRA was trained on
/// (`ss_sd_model_name`, by its file name hints). `None` when none says.
pub fn base_model_from_metadata(meta: &Map<String, Value>) -> Option<&'static str> {
    let get = |key: &str| meta.get(key).and_then(Value::as_str).map(|v| v.trim().to_ascii_lowercase());
    if let Some(arch) = get("modelspec.architecture") {
        // `<architecture>[/<adapter>]`, e.g. `stable-diffusion-xl-v1-base/lora`.
        let arch = arch.split('/').next().unwrap_or_default();
        let flat: String = arch.chars().filter(char::is_ascii_alphanumeric).collect();
        let found = if flat.contains("flux") {
            Some("FLUX")
        } else if flat.starts_with("stablediffusionxl") || flat.starts_with("sdxl") {
            Some("SDXL")
        } else if flat.starts_with("stablediffusionv3")
            || flat.starts_with("stablediffusion3")
            || flat.starts_with("sd3")
        {
            Some("SD3")
        } else if flat.starts_with("stablediffusionv2") || flat.starts_with("sd2") {
            Some("SD2")
        } else if flat.starts_with("stablediffusionv1") || flat.starts_with("sd1") {
            Some("SD1.5")
        } else {
            None
        };
        if found.is_some() {
            return found;
        }
    }
    if let Some(version) = get("ss_base_model_version") {
        let found = if version.starts_with("sdxl") {
            Some("SDXL")
        } else if version.starts_with("flux") {
            Some("FLUX")
        } else if version.starts_with("sd_3") || version.starts_with("sd3") {
            Some("SD3")
        } else if version.starts_with("sd_v2") {
            Some("SD2")
        } else if version.starts_with("sd_v1") {
            Some("SD1.5")
        } else {
            None
        };
        if found.is_some() {
            return found;
        }
    }
    if get("ss_v2").as_deref() == Some("true") {
        return Some("SD2");
    }
    get("ss_sd_model_name").and_then(|trained_on| infer_base_model(&trained_on))
}

fn plain_label(name: &str) -> String {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.rsplit_once('.').map(|(stem, _)| stem).filter(|s| !s.is_empty()).unwrap_or(file).to_owned()
}

impl Station {
    /// Records what `backend` offers now (`(kind, file)` pairs), replacing
    /// what it offered before ([`Station::record_backend_inventory`] without
    /// metadata). True when it wrote.
    pub async fn record_backend_models(&self, backend: &str, models: &[(String, String)]) -> Result<bool, StoreError> {
        let files: Vec<BackendFile> = models.iter().map(|(kind, name)| (kind.clone(), name.clone(), None)).collect();
        self.record_backend_inventory(backend, &files).await
    }

    /// Records what `backend` offers now — `(kind, file, base model its
    /// metadata names)` — replacing what it offered before. A file listed
    /// again without a metadata base model keeps the one recorded for it.
    /// Called by the ComfyUI executor after health checks that passed.
    /// Writes (and re-reads the inventory) only when the stored list differs
    /// or was offline; true when it wrote.
    pub async fn record_backend_inventory(&self, backend: &str, files: &[BackendFile]) -> Result<bool, StoreError> {
        let changed = self.store.replace_backend_models(backend, files, station_store::now_ms()).await?;
        if changed {
            self.reload_models().await?;
        }
        Ok(changed)
    }

    /// `backend` failed its health check: its models are not offered until
    /// it is back. True when that changed a row (it was online).
    pub async fn backend_models_offline(&self, backend: &str) -> Result<bool, StoreError> {
        let changed = self.store.set_backend_models_online(backend, false).await?;
        if changed {
            self.reload_models().await?;
        }
        Ok(changed)
    }

    /// Forgets the models of every backend but `keep` (the ones configured
    /// or added now): a removed backend offers nothing.
    pub async fn forget_models_except(&self, keep: &[String]) -> Result<(), StoreError> {
        self.store.forget_backend_models_except(keep).await?;
        self.reload_models().await.map(|_| ())
    }

    /// Every model any backend has listed, and every catalog entry, with
    /// which backends have it (read afresh).
    pub async fn models(&self) -> Result<Arc<Vec<ModelInfo>>, StoreError> {
        self.reload_models().await
    }

    /// [`Station::models`], from this process's copy when it is younger than
    /// [`MODELS_CACHE_TTL`].
    pub async fn models_cached(&self) -> Result<Arc<Vec<ModelInfo>>, StoreError> {
        if let Some((at, list)) = self.model_cache.0.lock().expect("model cache").clone()
            && at.elapsed() < MODELS_CACHE_TTL
        {
            return Ok(list);
        }
        self.reload_models().await
    }

    /// The last models this process read, without waiting (empty before the
    /// first read); a stale copy is refreshed in the background.
    pub fn models_snapshot(&self) -> Arc<Vec<ModelInfo>> {
        let current = self.model_cache.0.lock().expect("model cache").clone();
        let stale = current.as_ref().is_none_or(|(at, _)| at.elapsed() >= MODELS_CACHE_TTL);
        if stale && let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Marked fresh first, so one read is in flight at a time.
            if let Some((_, list)) = &current {
                *self.model_cache.0.lock().expect("model cache") = Some((Instant::now(), list.clone()));
            }
            let me = self.clone();
            rt.spawn(async move {
                if let Err(e) = me.reload_models().await {
                    tracing::warn!(error = %e, "cannot read the model inventory; keeping the last one");
                }
            });
        }
        current.map(|(_, l)| l).unwrap_or_default()
    }

    /// Reads the inventory and the catalog into this process's copy.
    pub async fn reload_models(&self) -> Result<Arc<Vec<ModelInfo>>, StoreError> {
        let files = self.store.backend_models().await?;
        let catalog = self.store.model_catalog().await?;
        let mut out: Vec<ModelInfo> = vec![];
        // What the files' own metadata says, by (kind, name): the first backend that said.
        let mut from_metadata: Vec<(&str, &str, &str)> = vec![];
        for f in &files {
            if let Some(b) = f.metadata_base_model.as_deref().filter(|b| !b.is_empty())
                && !from_metadata.iter().any(|(k, n, _)| *k == f.kind && *n == f.name)
            {
                from_metadata.push((f.kind.as_str(), f.name.as_str(), b));
            }
            let m = match out.iter_mut().find(|m| m.name == f.name && m.kind == f.kind) {
                Some(m) => m,
                None => {
                    out.push(ModelInfo {
                        name: f.name.clone(),
                        kind: f.kind.clone(),
                        base_model: None,
                        base_model_source: BaseModelSource::Unknown,
                        label: plain_label(&f.name),
                        hidden: false,
                        default: false,
                        price_multiplier: 1.0,
                        backends: vec![],
                        offline_backends: vec![],
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            if f.online {
                m.backends.push(f.backend.clone());
            } else {
                m.offline_backends.push(f.backend.clone());
            }
        }
        for c in &catalog {
            if !out.iter().any(|m| m.name == c.name) {
                // Catalogued, on no backend now.
                out.push(ModelInfo {
                    name: c.name.clone(),
                    kind: "checkpoint".into(),
                    base_model: None,
                    base_model_source: BaseModelSource::Unknown,
                    label: plain_label(&c.name),
                    hidden: false,
                    default: false,
                    price_multiplier: 1.0,
                    backends: vec![],
                    offline_backends: vec![],
                });
            }
        }
        for m in &mut out {
            let entry = catalog.iter().find(|c| c.name == m.name);
            match entry.and_then(|c| c.base_model.clone()).filter(|b| !b.is_empty()) {
                Some(b) => {
                    m.base_model = Some(b);
                    m.base_model_source = BaseModelSource::Catalog;
                }
                None => {
                    let said = from_metadata.iter().find(|(k, n, _)| *k == m.kind && *n == m.name);
                    if let Some((_, _, b)) = said {
                        m.base_model = Some((*b).to_owned());
                        m.base_model_source = BaseModelSource::Metadata;
                    } else if let Some(b) = infer_base_model(&m.name) {
                        m.base_model = Some(b.to_owned());
                        m.base_model_source = BaseModelSource::Name;
                    }
                }
            }
            if let Some(c) = entry {
                if let Some(l) = c.label.clone().filter(|l| !l.trim().is_empty()) {
                    m.label = l;
                }
                m.hidden = c.hidden;
                m.default = c.is_default;
                m.price_multiplier = c.price_multiplier;
            }
        }
        out.sort_by(|a, b| a.kind.cmp(&b.kind).then(a.name.cmp(&b.name)));
        let list = Arc::new(out);
        *self.model_cache.0.lock().expect("model cache") = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Changes the operator's catalog entry for the model `name` (a file a
    /// backend has listed). Making it the default unsets the default of the
    /// other models of its base model and kind.
    /// Audited (`model.set`).
    pub async fn set_model(
        &self,
        name: &str,
        s: &ModelSettings,
        by: &crate::audit::Actor,
    ) -> Result<ModelInfo, ModelError> {
        let all = self.models().await?;
        let Some(model) = all.iter().find(|m| m.name == name).cloned() else {
            let known: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
            return Err(ModelError::Unknown {
                name: name.to_owned(),
                known: if known.is_empty() { "none yet (is a backend up?)".into() } else { known.join(", ") },
            });
        };
        if let Some(x) = s.price_multiplier
            && !(x.is_finite() && x > 0.0 && x <= 100.0)
        {
            return Err(ModelError::Invalid {
                field: "price_multiplier",
                reason: format!("{x} is not a number above 0 and at most 100"),
            });
        }
        let catalog = self.store.model_catalog().await?;
        let mut row = catalog.iter().find(|c| c.name == name).cloned().unwrap_or(ModelCatalogRow {
            name: name.to_owned(),
            price_multiplier: 1.0,
            ..Default::default()
        });
        if let Some(b) = &s.base_model {
            let b = b.trim();
            if b.len() > 32 {
                return Err(ModelError::Invalid { field: "base_model", reason: "at most 32 characters".into() });
            }
            // Known names are written as Station spells them (sdxl → SDXL).
            let known = KNOWN_BASE_MODELS.iter().find(|k| k.eq_ignore_ascii_case(b)).map(ToString::to_string);
            row.base_model = (!b.is_empty()).then(|| known.unwrap_or_else(|| b.to_owned()));
        }
        if let Some(l) = &s.label {
            let l = l.trim();
            if l.chars().count() > 80 {
                return Err(ModelError::Invalid { field: "label", reason: "at most 80 characters".into() });
            }
            row.label = (!l.is_empty()).then(|| l.to_owned());
        }
        if let Some(h) = s.hidden {
            row.hidden = h;
        }
        if let Some(d) = s.default {
            row.is_default = d;
        }
        if let Some(x) = s.price_multiplier {
            row.price_multiplier = x;
        }
        row.updated_at = station_store::now_ms();
        let base = row.base_model.clone().or_else(|| model.base_model.clone());
        let others: Vec<String> = all
            .iter()
            .filter(|m| m.kind == model.kind && m.name != name && m.base_model == base)
            .map(|m| m.name.clone())
            .collect();
        self.store.upsert_model_catalog(&row, &others).await?;
        let mut changed = vec![];
        if let Some(b) = &row.base_model {
            changed.push(format!("base model {b}"));
        }
        if let Some(l) = &row.label {
            changed.push(format!("label {l:?}"));
        }
        if row.hidden {
            changed.push("hidden".to_string());
        }
        if row.is_default {
            changed.push("default".to_string());
        }
        changed.push(format!("price ×{}", row.price_multiplier));
        self.audit(by, "model.set", name, changed.join(", ")).await;
        let all = self.reload_models().await?;
        Ok(all.iter().find(|m| m.name == name).cloned().expect("just written"))
    }

    /// The models a model input may choose from now, best first: offered,
    /// of its kind and base models; the default of each base model first.
    pub fn model_choices_in(all: &[ModelInfo], def: &InputDef) -> Vec<ModelInfo> {
        let mut list: Vec<ModelInfo> = all.iter().filter(|m| m.offered() && m.fits(def)).cloned().collect();
        list.sort_by(|a, b| b.default.cmp(&a.default).then(a.label.to_lowercase().cmp(&b.label.to_lowercase())));
        list
    }

    /// [`Station::model_choices_in`] from this process's copy of the inventory.
    pub fn model_choices(&self, def: &InputDef) -> Vec<ModelInfo> {
        Self::model_choices_in(&self.models_snapshot(), def)
    }

    /// Whether `tool` is offered to members now: public, and — when it has a
    /// model input — some backend that is up offers a model it takes.
    pub fn tool_offered(&self, tool: &ToolDef) -> bool {
        tool.visibility == Visibility::Public
            && tool.model_input().is_none_or(|(_, def)| !self.model_choices(def).is_empty())
    }

    /// The tools an account sees in lists (galleries, menus, the API):
    /// public tools that can run now, and admin tools for administrators
    /// (who also see tools waiting for a model). Text-to-image first, then
    /// by name.
    pub fn listed_tools(&self, admin: bool) -> Vec<Arc<ToolDef>> {
        let mut tools: Vec<Arc<ToolDef>> = self
            .tools
            .list()
            .into_iter()
            .filter(|t| match t.visibility {
                Visibility::Public => self.tool_offered(t),
                Visibility::Admin => admin,
                Visibility::Hidden => false,
            })
            .collect();
        tools.sort_by(|a, b| {
            let rank = |t: &ToolDef| (t.category != station_tools::Category::TextToImage, t.model_input().is_none());
            rank(a).cmp(&rank(b)).then(a.name.to_lowercase().cmp(&b.name.to_lowercase())).then(a.id.cmp(&b.id))
        });
        tools
    }

    /// [`Station::listed_tools`] for one account: without the tools its
    /// feature flags (`tool.<id>`) switch off.
    pub fn listed_tools_for(&self, account: &AccountRow) -> Vec<Arc<ToolDef>> {
        let mut tools = self.listed_tools(account.is_admin());
        tools.retain(|t| self.tool_flag_on(&t.id, account));
        tools
    }

    /// Fills and checks the model input of a request: the explicit or saved
    /// value must be a model offered now that the input takes; without one,
    /// the default of its kind (the operator's, else the first offered).
    /// Returns the chosen model, or the field error listing what exists.
    pub(crate) async fn choose_model(
        &self,
        tool: &ToolDef,
        explicit: &Map<String, Value>,
        saved: &Map<String, Value>,
    ) -> Result<Option<(String, ModelInfo)>, FieldError> {
        let Some((name, def)) = tool.model_input() else { return Ok(None) };
        let all = self.models_cached().await.map_err(|e| FieldError {
            field: name.to_owned(),
            reason: format!("the model list cannot be read now ({e}); try again"),
        })?;
        let choices = Self::model_choices_in(&all, def);
        let kind = def.model_kind.clone().unwrap_or_default().replace('_', " ");
        let listing = || {
            if choices.is_empty() {
                format!("no backend that is up has a {kind} model{} now", base_models_note(def))
            } else {
                let names: Vec<&str> = choices.iter().map(|m| m.name.as_str()).collect();
                format!("available: {}", names.join(", "))
            }
        };
        let asked = explicit.get(name).filter(|v| !v.is_null());
        if asked.is_some_and(|v| !v.is_string()) {
            // Not a name: resolve_params says why.
            return Ok(None);
        }
        match asked.and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => {
                // A name or a label, as a person may type either.
                let found = choices.iter().find(|m| m.name == v).or_else(|| {
                    choices.iter().find(|m| m.label.eq_ignore_ascii_case(v) || m.name.eq_ignore_ascii_case(v))
                });
                match found {
                    Some(m) => Ok(Some((name.to_owned(), m.clone()))),
                    None => Err(FieldError {
                        field: name.to_owned(),
                        reason: format!("unknown model {v:?}; {}", listing()),
                    }),
                }
            }
            None => {
                // A saved choice that is gone falls back to the default, as
                // saved settings the tool no longer accepts do.
                let saved = saved.get(name).and_then(Value::as_str);
                let pick =
                    saved.and_then(|s| choices.iter().find(|m| m.name == s)).or_else(|| choices.first()).cloned();
                match pick {
                    Some(m) => Ok(Some((name.to_owned(), m))),
                    None => Err(FieldError { field: name.to_owned(), reason: listing() }),
                }
            }
        }
    }
}

fn base_models_note(def: &InputDef) -> String {
    match &def.base_models {
        Some(list) if !list.is_empty() => format!(" for {}", list.join(" or ")),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{base_model_from_metadata, infer_base_model, wants_metadata};
    use serde_json::json;

    #[test]
    fn base_models_from_file_metadata() {
        for (meta, base) in [
            (json!({"modelspec.architecture": "stable-diffusion-xl-v1-base"}), Some("SDXL")),
            (json!({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}), Some("SDXL")),
            (json!({"modelspec.architecture": "stable-diffusion-v1"}), Some("SD1.5")),
            (json!({"modelspec.architecture": "stable-diffusion-v1/lora"}), Some("SD1.5")),
            (json!({"modelspec.architecture": "stable-diffusion-v2-768-v"}), Some("SD2")),
            (json!({"modelspec.architecture": "stable-diffusion-v3-medium"}), Some("SD3")),
            (json!({"modelspec.architecture": "flux-1-dev"}), Some("FLUX")),
            (json!({"modelspec.architecture": "Flux.1-schnell/lora"}), Some("FLUX")),
            (json!({"ss_base_model_version": "sdxl_base_v1-0"}), Some("SDXL")),
            (json!({"ss_base_model_version": "sd_v1"}), Some("SD1.5")),
            (json!({"ss_base_model_version": "flux1"}), Some("FLUX")),
            (json!({"ss_v2": "True"}), Some("SD2")),
            (json!({"ss_sd_model_name": "sd_xl_base_1.0.safetensors"}), Some("SDXL")),
            (json!({"ss_sd_model_name": "v1-5-pruned-emaonly.safetensors"}), Some("SD1.5")),
            // An unknown architecture does not hide what kohya's keys say.
            (json!({"modelspec.architecture": "something-new", "ss_base_model_version": "sd_v1"}), Some("SD1.5")),
            (json!({"ss_sd_model_name": "mystery.ckpt", "format": "pt"}), None),
            (json!({}), None),
        ] {
            assert_eq!(base_model_from_metadata(meta.as_object().unwrap()), base, "{meta}");
        }
    }

    #[test]
    fn metadata_is_asked_only_where_the_name_gives_no_hint() {
        assert!(wants_metadata("checkpoint", "dreamshaper_8.safetensors"));
        assert!(wants_metadata("lora", "styles/ink.safetensors"));
        assert!(!wants_metadata("checkpoint", "sd_xl_base_1.0.safetensors"), "the name says");
        assert!(!wants_metadata("checkpoint", "old.ckpt"), "no safetensors header");
        assert!(!wants_metadata("upscale_model", "mystery.safetensors"), "no base model");
    }

    #[test]
    fn base_models_from_file_names() {
        for (file, base) in [
            ("v1-5-pruned-emaonly.safetensors", Some("SD1.5")),
            ("station-random-sd15.safetensors", Some("SD1.5")),
            ("sd_xl_base_1.0.safetensors", Some("SDXL")),
            ("juggernautXL_v9.safetensors", Some("SDXL")),
            ("ponyDiffusionV6.safetensors", Some("SDXL")),
            ("flux1-dev-fp8.safetensors", Some("FLUX")),
            ("sd3.5_large.safetensors", Some("SD3")),
            ("models/dreamshaper_8.safetensors", None),
            ("pixelart.ckpt", None),
        ] {
            assert_eq!(infer_base_model(file), base, "{file}");
        }
    }
}
