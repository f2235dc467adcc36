//! The LoRA catalog service: import/export, editing, grants and prompt resolution.
//!
//! The catalog is cached per process and reloaded only when the database's
//! catalog version moved (any process's write bumps it), so resolving a prompt
//! costs one small read while the catalog is unchanged.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value, json};
pub use station_lora::{Grant, LoraRecord, Resolution, Visibility};
use station_lora::{ImportError, validate_slug};
pub use station_store::LoraFilter;
use station_store::{AccountRow, LoraGrantRow, LoraRow, StoreError, Upserted};
use station_tools::{InputType, ToolDef};

use crate::Station;
use crate::audit::Actor;

/// Params key holding the LoRAs a job applies: `[{slug, filename, weight}]`, in order.
pub const APPLIED_PARAM: &str = "_loras";
/// Params key holding the resolution's warnings (absent when there are none).
pub const WARNINGS_PARAM: &str = "_lora_warnings";

/// A catalog as read at one catalog version.
type Snapshot = (i64, Arc<Vec<LoraRecord>>);

/// The per-process catalog cache shared by clones of a [`Station`].
#[derive(Clone, Default)]
pub struct LoraCache(Arc<Mutex<Option<Snapshot>>>);

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A field of the request is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `slug` or `grants[0].account`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The import file was rejected as a whole (bad JSON, not an array, bad field).
    #[error("{0}")]
    Import(#[from] ImportError),
    /// No LoRA has this slug.
    #[error("no LoRA with slug {0:?}")]
    NotFound(String),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

impl LoraError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        LoraError::Invalid { field: field.into(), reason: reason.into() }
    }

    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            LoraError::Invalid { field, .. } => Some(field),
            LoraError::Import(ImportError::Field { field, .. }) => Some(field),
            _ => None,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ImportReport {
    /// Slugs written for the first time.
    pub created: Vec<String>,
    /// Slugs that existed and were replaced.
    pub updated: Vec<String>,
    /// Records skipped, each naming the record and field: `record 2 (slug "x"): owned_by: …`.
    pub errors: Vec<String>,
}

/// Fields for [`LoraService::add`] and [`LoraService::edit`]; `None` keeps the
/// current value on edit (and is an error for required fields on add).
#[derive(Debug, Clone, Default)]
pub struct LoraEdit {
    /// Display name (add: defaults to the slug).
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Trigger words, canonical first.
    pub trigger_words: Option<Vec<String>>,
    /// Alternative words.
    pub cognates: Option<Vec<String>>,
    /// Default weight in [0, 2]; `Some(None)` clears it (1.0 applies).
    pub default_weight: Option<Option<f64>>,
    /// Base model family (required on add).
    pub checkpoint: Option<String>,
    /// File name on the ComfyUI servers (required on add).
    pub filename: Option<String>,
    /// Browsing tags.
    pub tags: Option<Vec<String>>,
    /// Owner: an account id or `provider:subject`; `Some(None)` makes it the operator's.
    pub owner: Option<Option<String>>,
    /// `public` or `private` (required on add).
    pub visibility: Option<Visibility>,
}

impl LoraEdit {
    /// The fields this edit sets, for the audit log ("name, trigger_words").
    pub fn changed_fields(&self) -> String {
        let fields = [
            ("name", self.name.is_some()),
            ("description", self.description.is_some()),
            ("trigger_words", self.trigger_words.is_some()),
            ("cognates", self.cognates.is_some()),
            ("default_weight", self.default_weight.is_some()),
            ("checkpoint", self.checkpoint.is_some()),
            ("filename", self.filename.is_some()),
            ("tags", self.tags.is_some()),
            ("owner", self.owner.is_some()),
            ("visibility", self.visibility.is_some()),
        ];
        let set: Vec<&str> = fields.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        if set.is_empty() { "nothing".to_string() } else { set.join(", ") }
    }
}

/// The LoRA catalog of one [`Station`]; get it with [`Station::loras`].
pub struct LoraService<'a> {
    station: &'a Station,
}

impl Station {
    /// The LoRA catalog service.
    pub fn loras(&self) -> LoraService<'_> {
        LoraService { station: self }
    }
}

fn to_record(row: LoraRow, grants: Vec<LoraGrantRow>) -> LoraRecord {
    LoraRecord {
        id: row.id,
        slug: row.slug,
        name: row.name,
        description: row.description,
        trigger_words: row.trigger_words,
        cognates: row.cognates,
        default_weight: row.default_weight,
        checkpoint: row.checkpoint,
        filename: row.filename,
        tags: row.tags,
        owner: row.owner_id,
        // Unknown text reads as private: failing closed never publishes a LoRA.
        visibility: Visibility::parse(&row.visibility).unwrap_or(Visibility::Private),
        updated_at: row.updated_at,
        grants: grants
            .into_iter()
            .map(|g| Grant { account: g.account_id, expires_at: g.expires_at, revoked: g.revoked })
            .collect(),
        rating: row.rating,
        preview_images: row.preview_images,
        created_at: row.created_at,
    }
}

fn to_row(r: &LoraRecord) -> LoraRow {
    LoraRow {
        id: r.id.clone(),
        slug: r.slug.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        trigger_words: r.trigger_words.clone(),
        cognates: r.cognates.clone(),
        default_weight: r.default_weight,
        checkpoint: r.checkpoint.clone(),
        filename: r.filename.clone(),
        tags: r.tags.clone(),
        owner_id: r.owner.clone(),
        visibility: r.visibility.as_str().to_owned(),
        rating: r.rating,
        preview_images: r.preview_images.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Trimmed, non-empty words; names the offending `field[i]`.
fn clean_words(field: &str, words: Vec<String>) -> Result<Vec<String>, LoraError> {
    words
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let w = w.trim().to_owned();
            if w.is_empty() { Err(LoraError::invalid(format!("{field}[{i}]"), "is empty")) } else { Ok(w) }
        })
        .collect()
}

fn non_empty(field: &str, v: String) -> Result<String, LoraError> {
    let v = v.trim().to_owned();
    if v.is_empty() { Err(LoraError::invalid(field, "is empty")) } else { Ok(v) }
}

impl LoraService<'_> {
    /// The whole catalog, grants included, from the cache when it is current.
    pub async fn catalog(&self) -> Result<Arc<Vec<LoraRecord>>, LoraError> {
        let store = &self.station.store;
        let version = store.lora_catalog_version().await?;
        if let Some((v, cat)) = self.station.lora_cache.0.lock().expect("lora cache lock").as_ref()
            && *v == version
        {
            return Ok(cat.clone());
        }
        let (version, rows) = store.lora_catalog().await?;
        let cat: Arc<Vec<LoraRecord>> = Arc::new(rows.into_iter().map(|(r, g)| to_record(r, g)).collect());
        *self.station.lora_cache.0.lock().expect("lora cache lock") = Some((version, cat.clone()));
        Ok(cat)
    }

    /// The account an operator's reference names: an account id, or a
    /// platform identity `provider:subject` (created on first mention).
    /// `field` names the reference in errors.
    pub async fn account_ref(&self, field: &str, reference: &str) -> Result<AccountRow, LoraError> {
        let reference = reference.trim();
        if let Some(a) = self.station.store.get_account(reference).await? {
            return Ok(a);
        }
        match reference.split_once(':') {
            Some((provider, subject)) if !provider.trim().is_empty() && !subject.trim().is_empty() => {
                Ok(self.station.account(provider.trim(), subject.trim(), reference).await?)
            }
            _ => Err(LoraError::invalid(
                field,
                format!("{reference:?} is neither an account id nor a platform identity like telegram:123"),
            )),
        }
    }

    /// Like [`LoraService::account_ref`] but never creates an account: an
    /// identity nobody has used yet is an error naming `field`.
    pub async fn find_account(&self, field: &str, reference: &str) -> Result<AccountRow, LoraError> {
        let reference = reference.trim();
        let store = &self.station.store;
        if let Some(a) = store.get_account(reference).await? {
            return Ok(a);
        }
        if let Some((provider, subject)) = reference.split_once(':')
            && let Some(a) = store.account_by_identity(provider.trim(), subject.trim()).await?
        {
            return Ok(a);
        }
        Err(LoraError::invalid(
            field,
            format!("no account {reference:?} (give an account id or an identity like telegram:123)"),
        ))
    }

    /// Rewrites `prompt`'s trigger words for `account` (anonymous: public LoRAs
    /// only) and a tool built on `base_model`, following [`station_lora::resolve`].
    pub async fn resolve(
        &self,
        prompt: &str,
        account: Option<&AccountRow>,
        base_model: Option<&str>,
    ) -> Result<Resolution, LoraError> {
        let catalog = self.catalog().await?;
        let account = account.map(|a| a.id.as_str());
        Ok(station_lora::resolve(prompt, &catalog, account, base_model, station_store::now_ms()))
    }

    /// For a tool that takes LoRAs (`comfyui.loras`), resolves its primary text
    /// input in `params` and records what applies: the rewritten prompt
    /// replaces the text, [`APPLIED_PARAM`] lists `{slug, filename, weight}`
    /// for the executor, [`WARNINGS_PARAM`] keeps the warnings. Other tools
    /// and params without that text are left alone. Returns the resolution
    /// when one was made.
    pub async fn apply_to_params(
        &self,
        tool: &ToolDef,
        account: &AccountRow,
        base_model: Option<&str>,
        params: &mut Map<String, Value>,
    ) -> Result<Option<Resolution>, LoraError> {
        if tool.comfyui.as_ref().and_then(|c| c.loras.as_ref()).is_none() {
            return Ok(None);
        }
        let Some((name, def)) = tool.primary_input() else { return Ok(None) };
        if def.kind != InputType::Text {
            return Ok(None);
        }
        let Some(Value::String(prompt)) = params.get(name) else { return Ok(None) };
        let catalog = self.catalog().await?;
        let r = station_lora::resolve(prompt, &catalog, Some(&account.id), base_model, station_store::now_ms());
        let applied: Vec<Value> = r
            .applied
            .iter()
            .filter_map(|a| {
                let rec = catalog.iter().find(|c| c.slug == a.slug)?;
                Some(json!({"slug": a.slug, "filename": rec.filename, "weight": a.weight}))
            })
            .collect();
        params.insert(name.to_owned(), Value::String(r.prompt.clone()));
        params.insert(APPLIED_PARAM.into(), Value::Array(applied));
        if r.warnings.is_empty() {
            params.remove(WARNINGS_PARAM);
        } else {
            params.insert(WARNINGS_PARAM.into(), json!(r.warnings));
        }
        Ok(Some(r))
    }

    /// Imports a JSON file in the format of [`station_lora::parse_import`].
    ///
    /// A file that fails to parse is refused whole. Account references
    /// (`owned_by`, `grants[].account`) are account ids or `provider:subject`
    /// identities; a record whose reference cannot be used is skipped and
    /// reported in [`ImportReport::errors`]. Existing slugs are replaced but
    /// keep their id, creation time, description, tags, rating and previews
    /// (the file format does not carry them); listed grants are set, others
    /// kept. Owners also get a grant, so sharing survives an owner change.
    /// Audited (`lora.import`) when it changed anything.
    pub async fn import(&self, json: &str, by: &Actor) -> Result<ImportReport, LoraError> {
        let records = station_lora::parse_import(json)?;
        let catalog = self.catalog().await?;
        let now = station_store::now_ms();
        let mut report = ImportReport::default();
        for (index, rec) in records.into_iter().enumerate() {
            let slug = rec.slug.clone();
            let mapped = async {
                let owner = match &rec.owned_by {
                    Some(o) => Some(self.account_ref("owned_by", o).await?.id),
                    None => None,
                };
                let mut grants = Vec::new();
                for (i, g) in rec.grants.iter().enumerate() {
                    let a = self.account_ref(&format!("grants[{i}].account"), &g.account).await?;
                    grants.push((a.id, g.expires_at));
                }
                Ok::<_, LoraError>((owner, grants))
            }
            .await;
            let (owner, mut grants) = match mapped {
                Ok(m) => m,
                Err(e) => {
                    report.errors.push(format!("record {index} (slug {slug:?}): {e}"));
                    continue;
                }
            };
            if let Some(o) = &owner
                && !grants.iter().any(|(a, _)| a == o)
            {
                grants.push((o.clone(), None));
            }
            let existing = catalog.iter().find(|c| c.slug == slug);
            let mut record = rec.into_record(uuid::Uuid::now_v7().simple().to_string(), now);
            record.owner = owner;
            if let Some(old) = existing {
                record.description = old.description.clone();
                record.tags = old.tags.clone();
                record.rating = old.rating;
                record.preview_images = old.preview_images.clone();
            }
            let (_, how) = self.station.store.upsert_lora(&to_row(&record), &grants, now).await?;
            match how {
                Upserted::Created => report.created.push(slug),
                Upserted::Updated => report.updated.push(slug),
            }
        }
        if !report.created.is_empty() || !report.updated.is_empty() {
            let detail = format!(
                "{} created, {} updated, {} skipped",
                report.created.len(),
                report.updated.len(),
                report.errors.len()
            );
            self.station.audit(by, "lora.import", "catalog", detail).await;
        }
        Ok(report)
    }

    /// The catalog in the import format (a JSON array), so that importing it
    /// again changes nothing. Revoked grants are left out; `description` and
    /// `tags` ride along as fields the import ignores.
    pub async fn export(&self) -> Result<Value, LoraError> {
        let catalog = self.catalog().await?;
        let out = catalog
            .iter()
            .map(|r| {
                let grants: Vec<Value> = r
                    .grants
                    .iter()
                    .filter(|g| !g.revoked)
                    .map(|g| json!({"account": g.account, "expires_at": g.expires_at}))
                    .collect();
                let cognates: Vec<Value> = r.cognates.iter().map(|w| json!({"word": w})).collect();
                json!({
                    "slug": r.slug,
                    "name": r.name,
                    "trigger_words": r.trigger_words,
                    "cognates": cognates,
                    "default_weight": r.default_weight,
                    "checkpoint": r.checkpoint,
                    "filename": r.filename,
                    "visibility": r.visibility.as_str(),
                    "owned_by": r.owner,
                    "updated_at": r.updated_at,
                    "grants": grants,
                    "description": r.description,
                    "tags": r.tags,
                })
            })
            .collect();
        Ok(Value::Array(out))
    }

    /// The LoRAs `account` may use now: its own first, then those shared
    /// with it, then public ones, each group by name.
    pub async fn usable(&self, account: &AccountRow) -> Result<Vec<LoraRecord>, LoraError> {
        let now = crate::now_ms();
        let catalog = self.catalog().await?;
        let mut out: Vec<(station_lora::Access, LoraRecord)> =
            catalog.iter().filter_map(|r| r.access(Some(&account.id), now).map(|a| (a, r.clone()))).collect();
        out.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.name.to_lowercase().cmp(&y.name.to_lowercase())));
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }

    /// LoRAs matching `filter`, by slug, with their grants.
    pub async fn list(&self, filter: &LoraFilter) -> Result<Vec<LoraRecord>, LoraError> {
        let wanted: std::collections::HashSet<String> =
            self.station.store.list_loras(filter).await?.into_iter().map(|r| r.slug).collect();
        let catalog = self.catalog().await?;
        Ok(catalog.iter().filter(|r| wanted.contains(&r.slug)).cloned().collect())
    }

    /// One LoRA with its grants.
    pub async fn show(&self, slug: &str) -> Result<LoraRecord, LoraError> {
        match self.station.store.get_lora(slug).await? {
            Some((row, grants)) => Ok(to_record(row, grants)),
            None => Err(LoraError::NotFound(slug.to_owned())),
        }
    }

    /// Adds a new LoRA; the slug must be free. Audited (`lora.add`).
    pub async fn add(&self, slug: &str, edit: LoraEdit, by: &Actor) -> Result<LoraRecord, LoraError> {
        validate_slug(slug).map_err(|e| LoraError::invalid("slug", format!("{slug:?}: {e}")))?;
        if self.station.store.get_lora(slug).await?.is_some() {
            return Err(LoraError::invalid("slug", format!("{slug:?} is taken; use edit to change it")));
        }
        let now = station_store::now_ms();
        let required = |v: Option<String>, field: &str| {
            v.ok_or_else(|| LoraError::invalid(field, "is required")).and_then(|v| non_empty(field, v))
        };
        let record = LoraRecord {
            id: uuid::Uuid::now_v7().simple().to_string(),
            slug: slug.to_owned(),
            name: slug.to_owned(),
            description: String::new(),
            trigger_words: vec![],
            cognates: vec![],
            default_weight: None,
            checkpoint: required(edit.checkpoint.clone(), "checkpoint")?,
            filename: required(edit.filename.clone(), "filename")?,
            tags: vec![],
            owner: None,
            visibility: edit.visibility.ok_or_else(|| LoraError::invalid("visibility", "is required"))?,
            updated_at: now,
            grants: vec![],
            rating: None,
            preview_images: vec![],
            created_at: now,
        };
        let added = self.write(record, edit, now).await?;
        let detail = format!("{} ({}, {})", added.name, added.filename, added.visibility.as_str());
        self.station.audit(by, "lora.add", slug, detail).await;
        Ok(added)
    }

    /// Changes the given fields of an existing LoRA. Audited (`lora.edit`).
    pub async fn edit(&self, slug: &str, edit: LoraEdit, by: &Actor) -> Result<LoraRecord, LoraError> {
        let record = self.show(slug).await?;
        let changed = edit.changed_fields();
        let edited = self.write(record, edit, station_store::now_ms()).await?;
        self.station.audit(by, "lora.edit", slug, format!("changed {changed}")).await;
        Ok(edited)
    }

    async fn write(&self, mut r: LoraRecord, e: LoraEdit, now: i64) -> Result<LoraRecord, LoraError> {
        if let Some(v) = e.name {
            r.name = non_empty("name", v)?;
        }
        if let Some(v) = e.description {
            r.description = v.trim().to_owned();
        }
        if let Some(v) = e.trigger_words {
            r.trigger_words = clean_words("trigger_words", v)?;
        }
        if let Some(v) = e.cognates {
            r.cognates = clean_words("cognates", v)?;
        }
        if let Some(w) = e.default_weight {
            if let Some(w) = w
                && !(0.0..=2.0).contains(&w)
            {
                return Err(LoraError::invalid("default_weight", format!("{w} is outside [0, 2]")));
            }
            r.default_weight = w;
        }
        if let Some(v) = e.checkpoint {
            r.checkpoint = non_empty("checkpoint", v)?;
        }
        if let Some(v) = e.filename {
            r.filename = non_empty("filename", v)?;
        }
        if let Some(v) = e.tags {
            r.tags = clean_words("tags", v)?;
        }
        if let Some(v) = e.visibility {
            r.visibility = v;
        }
        let mut grants = vec![];
        if let Some(owner) = e.owner {
            r.owner = match owner {
                Some(o) => {
                    let id = self.account_ref("owner", &o).await?.id;
                    grants.push((id.clone(), None));
                    Some(id)
                }
                None => None,
            };
        }
        r.updated_at = now;
        self.station.store.upsert_lora(&to_row(&r), &grants, now).await?;
        self.show(&r.slug).await
    }

    /// Deletes a LoRA and its grants. Audited (`lora.remove`).
    pub async fn remove(&self, slug: &str, by: &Actor) -> Result<(), LoraError> {
        if !self.station.store.remove_lora(slug).await? {
            return Err(LoraError::NotFound(slug.to_owned()));
        }
        self.station.audit(by, "lora.remove", slug, "removed with its grants").await;
        Ok(())
    }

    /// Lets the referenced account (id or `provider:subject`) use a LoRA until
    /// `expires_at` (Unix ms; `None` for good). Returns the account's id.
    /// Audited (`lora.grant`).
    pub async fn grant(
        &self,
        slug: &str,
        account: &str,
        expires_at: Option<i64>,
        by: &Actor,
    ) -> Result<String, LoraError> {
        let account = self.account_ref("account", account).await?;
        match self.station.store.grant_lora(slug, &account.id, expires_at, station_store::now_ms()).await {
            Ok(_) => {
                let until = match expires_at {
                    Some(t) => format!("until {}", crate::audit::utc_text(t)),
                    None => "for good".to_string(),
                };
                self.station.audit(by, "lora.grant", slug, format!("{} may use it {until}", account.name)).await;
                Ok(account.id)
            }
            Err(StoreError::NotFound { .. }) => Err(LoraError::NotFound(slug.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes the referenced account's grant on a LoRA; false when it had
    /// none. Audited (`lora.revoke`) when it had one.
    pub async fn revoke(&self, slug: &str, account: &str, by: &Actor) -> Result<bool, LoraError> {
        if self.station.store.get_lora(slug).await?.is_none() {
            return Err(LoraError::NotFound(slug.to_owned()));
        }
        let account = self.account_ref("account", account).await?;
        let revoked = self.station.store.revoke_lora(slug, &account.id).await?;
        if revoked {
            self.station.audit(by, "lora.revoke", slug, format!("{} may no longer use it", account.name)).await;
        }
        Ok(revoked)
    }
}
