//! Collections (issue 24): an owner's curated, ordered set of generation
//! outputs and LoRAs, with a visibility (`private`, `unlisted`, `public`),
//! share links and ZIP exports. Every rule is here, once for every front
//! end:
//!
//! - Only the owner (or an administrator) renames, reorders, removes,
//!   shares, deletes; an account named in a live "can add" link may add
//!   its own results; anyone else is told "not found", exactly as for an
//!   id that does not exist.
//! - Items are the adder's own generation outputs (`media` of kind
//!   `output`) and LoRAs they own.
//! - Share links are 256-bit random tokens (`sc_…`) that Station mints and
//!   keeps only as their SHA-256, like every other secret; each expires
//!   (`expires_in`, default 7 days) and can be revoked at once. An expired
//!   or revoked link answers [`CollectionError::LinkGone`], which front
//!   ends render as a clear "not found".
//! - An export is a durable row claimed with a lease by a worker of any
//!   process ([`export_loop`]); the ZIP holds every image's original bytes
//!   and `metadata.json`; its download ends after
//!   `collections.export_ttl_hours`.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde::Serialize;
use serde_json::{Map, Value, json};
use station_store::{
    AccountRow, CollectionExportRow, CollectionItemRow, CollectionRow, CollectionShareRow, MediaRow, StoreError, now_ms,
};
use station_tools::{FieldError, InputType};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Station;
use crate::secrets::hash_secret;

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// A share link's life when `expires_in` is not given: 7 days.
pub const DEFAULT_SHARE_SECS: i64 = 7 * 24 * 3600;
/// The longest a share link may live: 365 days.
pub const MAX_SHARE_SECS: i64 = 365 * 24 * 3600;
/// What every share token starts with.
pub const TOKEN_PREFIX: &str = "sc_";
/// How long an export builder's lease lasts without progress.
pub(crate) const EXPORT_LEASE: Duration = Duration::from_secs(60);

/// Who may see a collection without an account: nobody, whoever has its
/// address, or everyone (also listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Only its owner (and share links).
    Private,
    /// Whoever has its address.
    Unlisted,
    /// Everyone; listed on the public list.
    Public,
}

impl Visibility {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Unlisted => "unlisted",
            Visibility::Public => "public",
        }
    }

    /// Parses the stored word.
    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "private" => Some(Visibility::Private),
            "unlisted" => Some(Visibility::Unlisted),
            "public" => Some(Visibility::Public),
            _ => None,
        }
    }
}

/// Why a collection operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    /// No such collection (item, share, export), or the caller may not see
    /// or change it (deliberately one answer).
    #[error("no {what} {id}")]
    NotFound {
        /// `collection`, `item`, `share link`, `export`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A share link that expired or was revoked, or an export whose
    /// download ended: gone for good.
    #[error("{0}")]
    Gone(String),
    /// Bad input: every bad field with its reason; nothing was written.
    #[error("invalid input: {}", .0.iter().map(|f| format!("{}: {}", f.field, f.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
    /// Reading images or writing the ZIP failed.
    #[error("export failed: {0}")]
    Io(String),
}

impl CollectionError {
    fn invalid(field: &str, reason: impl Into<String>) -> CollectionError {
        CollectionError::Invalid(vec![FieldError { field: field.into(), reason: reason.into() }])
    }

    fn not_found(what: &'static str, id: &str) -> CollectionError {
        CollectionError::NotFound { what, id: id.into() }
    }
}

/// What a new collection is, or what an edit changes (None: unchanged).
#[derive(Debug, Clone, Default)]
pub struct CollectionEdit {
    /// Name (required when creating).
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// `private` (default), `unlisted` or `public`.
    pub visibility: Option<String>,
    /// The item to show as the cover; `Some("")` unsets it.
    pub cover_item: Option<String>,
}

/// What to add to a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemRef {
    /// One result image (`media:<id>` or the id).
    Media(String),
    /// Every result image of a generation.
    Generation(String),
    /// A LoRA the adder owns, by slug.
    Lora(String),
}

/// One item as people see it: the image or LoRA behind it.
#[derive(Debug, Clone)]
pub struct ItemView {
    /// The stored item.
    pub item: CollectionItemRow,
    /// The image, for `media` items that still exist.
    pub media: Option<MediaRow>,
    /// The generation's prompt, for images.
    pub prompt: Option<String>,
    /// The tool that made the image.
    pub tool: Option<String>,
    /// The LoRA's name, for `lora` items.
    pub lora_name: Option<String>,
}

/// A collection with its items in order.
#[derive(Debug, Clone)]
pub struct CollectionView {
    /// The collection.
    pub collection: CollectionRow,
    /// Its owner's display name.
    pub owner_name: String,
    /// Items in order.
    pub items: Vec<ItemView>,
    /// Whether the caller may change it (owner or administrator).
    pub can_edit: bool,
    /// Whether the caller may add to it (the owner, or named in a live
    /// "can add" link).
    pub can_add: bool,
}

impl CollectionView {
    /// The cover's item: the one chosen, else the first image.
    pub fn cover(&self) -> Option<&ItemView> {
        let chosen = self.collection.cover_item_id.as_deref();
        chosen
            .and_then(|c| self.items.iter().find(|i| i.item.id == c && i.media.is_some()))
            .or_else(|| self.items.iter().find(|i| i.media.is_some()))
    }
}

/// A collection in a list: its row, how many items, and the cover image.
#[derive(Debug, Clone)]
pub struct CollectionSummary {
    /// The collection.
    pub collection: CollectionRow,
    /// Items it holds.
    pub items: usize,
    /// The cover's media id.
    pub cover_media: Option<String>,
    /// The cover's item id (its image through a public address).
    pub cover_item: Option<String>,
}

/// What a new share link allows.
#[derive(Debug, Clone, Default)]
pub struct ShareRequest {
    /// Seconds until it expires (default 7 days; 1 s to 365 days).
    pub expires_in: Option<i64>,
    /// The named accounts (ids or identities like `telegram:123`) may also
    /// add their own results; without any, the link is view-only.
    pub can_add: Vec<String>,
}

/// A share link just made: the row and the token, shown this once.
#[derive(Debug, Clone)]
pub struct NewShare {
    /// The stored link.
    pub share: CollectionShareRow,
    /// The secret token (`sc_…`): the link's last path segment.
    pub token: String,
}

fn random_token() -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let body: String = (0..43).map(|_| BASE62[rng.random_range(0..BASE62.len())] as char).collect();
    format!("{TOKEN_PREFIX}{body}")
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn checked_text(field: &str, value: &str, max: usize, required: bool, bad: &mut Vec<FieldError>) -> String {
    let v = value.trim().to_string();
    if required && v.is_empty() {
        bad.push(FieldError { field: field.into(), reason: "must not be empty".into() });
    } else if v.chars().count() > max {
        bad.push(FieldError { field: field.into(), reason: format!("is over {max} characters") });
    } else if v.chars().any(|c| c.is_control() && c != '\n') {
        bad.push(FieldError { field: field.into(), reason: "must not hold control characters".into() });
    }
    v
}

fn checked_visibility(v: &str, bad: &mut Vec<FieldError>) -> Visibility {
    Visibility::parse(v.trim()).unwrap_or_else(|| {
        bad.push(FieldError {
            field: "visibility".into(),
            reason: format!("{v:?} is not one of private, unlisted, public"),
        });
        Visibility::Private
    })
}

impl Station {
    /// Creates a collection owned by `account`.
    pub async fn create_collection(
        &self,
        account: &AccountRow,
        new: CollectionEdit,
    ) -> Result<CollectionRow, CollectionError> {
        if let Some(off) = self.feature_refusal("collections", account).await {
            return Err(CollectionError::Invalid(vec![off]));
        }
        let mut bad = vec![];
        let name = checked_text("name", new.name.as_deref().unwrap_or(""), MAX_NAME_CHARS, true, &mut bad);
        let description = checked_text(
            "description",
            new.description.as_deref().unwrap_or(""),
            MAX_DESCRIPTION_CHARS,
            false,
            &mut bad,
        );
        let visibility = checked_visibility(new.visibility.as_deref().unwrap_or("private"), &mut bad);
        if new.cover_item.as_deref().is_some_and(|c| !c.is_empty()) {
            bad.push(FieldError { field: "cover_item".into(), reason: "a new collection has no items yet".into() });
        }
        if !bad.is_empty() {
            return Err(CollectionError::Invalid(bad));
        }
        let now = now_ms();
        let row = CollectionRow {
            id: new_id(),
            owner_id: account.id.clone(),
            name,
            description,
            visibility: visibility.as_str().into(),
            cover_item_id: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_collection(&row).await?;
        Ok(row)
    }

    /// `account`'s collections, newest first.
    pub async fn collections_of(&self, account: &AccountRow) -> Result<Vec<CollectionSummary>, CollectionError> {
        let rows = self.store.list_collections(Some(&account.id), 500).await?;
        self.summaries(rows).await
    }

    /// Public collections, newest first (anyone may list them).
    pub async fn public_collections(&self, limit: i64) -> Result<Vec<CollectionSummary>, CollectionError> {
        let rows = self.store.list_collections(None, limit.clamp(1, 200)).await?;
        self.summaries(rows).await
    }

    async fn summaries(&self, rows: Vec<CollectionRow>) -> Result<Vec<CollectionSummary>, CollectionError> {
        let mut out = Vec::with_capacity(rows.len());
        for c in rows {
            let items = self.store.collection_items(&c.id).await?;
            let chosen = c.cover_item_id.as_deref();
            let cover = chosen
                .and_then(|id| items.iter().find(|i| i.id == id && i.kind == "media"))
                .or_else(|| items.iter().find(|i| i.kind == "media"));
            out.push(CollectionSummary {
                items: items.len(),
                cover_media: cover.map(|i| i.ref_id.clone()),
                cover_item: cover.map(|i| i.id.clone()),
                collection: c,
            });
        }
        Ok(out)
    }

    /// The collection if `account` may see it: its owner or an
    /// administrator, an account named in a live "can add" link, or anyone
    /// signed in for unlisted and public ones.
    pub async fn collection_for(&self, account: &AccountRow, id: &str) -> Result<CollectionView, CollectionError> {
        let c = self.store.get_collection(id).await?.ok_or_else(|| CollectionError::not_found("collection", id))?;
        let can_edit = account.may_access(Some(&c.owner_id));
        let can_add = can_edit || self.named_in_live_link(&c.id, &account.id).await?;
        let visible = can_add || Visibility::parse(&c.visibility) != Some(Visibility::Private);
        if !visible {
            return Err(CollectionError::not_found("collection", id));
        }
        self.view(c, can_edit, can_add).await
    }

    /// A collection `account` may change (owner or administrator).
    pub(crate) async fn owned(&self, account: &AccountRow, id: &str) -> Result<CollectionRow, CollectionError> {
        match self.store.get_collection(id).await? {
            Some(c) if account.may_access(Some(&c.owner_id)) => Ok(c),
            _ => Err(CollectionError::not_found("collection", id)),
        }
    }

    async fn named_in_live_link(&self, collection_id: &str, account_id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        Ok(self.store.collection_shares(collection_id).await?.iter().any(|s| {
            s.permission == "add"
                && s.revoked_at.is_none()
                && s.expires_at > now
                && serde_json::from_str::<Vec<String>>(&s.accounts).unwrap_or_default().iter().any(|a| a == account_id)
        }))
    }

    async fn view(&self, c: CollectionRow, can_edit: bool, can_add: bool) -> Result<CollectionView, CollectionError> {
        let owner_name = self.store.get_account(&c.owner_id).await?.map(|a| a.name).unwrap_or_default();
        let mut items = vec![];
        for item in self.store.collection_items(&c.id).await? {
            let mut v = ItemView { item, media: None, prompt: None, tool: None, lora_name: None };
            if v.item.kind == "media" {
                v.media = self.store.get_media(&v.item.ref_id).await?;
                if let Some(job) = v.media.as_ref().and_then(|m| m.job_id.clone())
                    && let Some(job) = self.store.get_job(&job).await?
                {
                    v.prompt = self.prompt_of(&job.tool_id, &job.params_json());
                    v.tool = Some(job.tool_id);
                }
            } else if let Some((lora, _)) = self.store.get_lora(&v.item.ref_id).await? {
                v.lora_name = Some(lora.name);
            }
            items.push(v);
        }
        Ok(CollectionView { collection: c, owner_name, items, can_edit, can_add })
    }

    /// A generation's prompt: its `prompt` parameter, else its tool's
    /// primary text input.
    fn prompt_of(&self, tool_id: &str, params: &Map<String, Value>) -> Option<String> {
        if let Some(Value::String(p)) = params.get("prompt") {
            return Some(p.clone());
        }
        let tool = self.tools.get(tool_id)?;
        let (name, input) = tool.primary_input()?;
        (input.kind == InputType::Text).then(|| params.get(name)?.as_str().map(str::to_owned)).flatten()
    }

    /// Renames, describes, changes the visibility or cover of a collection
    /// `account` owns.
    pub async fn edit_collection(
        &self,
        account: &AccountRow,
        id: &str,
        edit: CollectionEdit,
    ) -> Result<CollectionRow, CollectionError> {
        let mut c = self.owned(account, id).await?;
        let mut bad = vec![];
        if let Some(n) = &edit.name {
            c.name = checked_text("name", n, MAX_NAME_CHARS, true, &mut bad);
        }
        if let Some(d) = &edit.description {
            c.description = checked_text("description", d, MAX_DESCRIPTION_CHARS, false, &mut bad);
        }
        if let Some(v) = &edit.visibility {
            c.visibility = checked_visibility(v, &mut bad).as_str().into();
        }
        if let Some(cover) = &edit.cover_item {
            if cover.is_empty() {
                c.cover_item_id = None;
            } else {
                let items = self.store.collection_items(&c.id).await?;
                match items.iter().find(|i| &i.id == cover) {
                    Some(i) if i.kind == "media" => c.cover_item_id = Some(cover.clone()),
                    Some(_) => {
                        bad.push(FieldError { field: "cover_item".into(), reason: "a LoRA has no image".into() });
                    }
                    None => bad.push(FieldError {
                        field: "cover_item".into(),
                        reason: format!("{cover:?} is not an item of this collection"),
                    }),
                }
            }
        }
        if !bad.is_empty() {
            return Err(CollectionError::Invalid(bad));
        }
        c.updated_at = now_ms();
        if !self.store.update_collection(&c).await? {
            return Err(CollectionError::not_found("collection", id));
        }
        Ok(c)
    }

    /// Deletes a collection `account` owns, with its items and links.
    pub async fn delete_collection(&self, account: &AccountRow, id: &str) -> Result<(), CollectionError> {
        let c = self.owned(account, id).await?;
        self.store.delete_collection(&c.id).await?;
        Ok(())
    }

    /// Adds `what` to a collection: the owner, or an account named in a
    /// live "can add" link, adding its own results or LoRAs. Things the
    /// collection holds already are skipped. Returns the items added.
    pub async fn add_to_collection(
        &self,
        account: &AccountRow,
        id: &str,
        what: ItemRef,
    ) -> Result<Vec<CollectionItemRow>, CollectionError> {
        let c = self.store.get_collection(id).await?.ok_or_else(|| CollectionError::not_found("collection", id))?;
        if !account.may_access(Some(&c.owner_id)) && !self.named_in_live_link(&c.id, &account.id).await? {
            return Err(CollectionError::not_found("collection", id));
        }
        let refs: Vec<(&str, String)> = match &what {
            ItemRef::Media(m) => {
                let m = m.strip_prefix("media:").unwrap_or(m);
                let row = self.media.row(m, Some(account)).await.map_err(|_| {
                    CollectionError::invalid(
                        "media",
                        format!("no result {m:?} of yours; add your own generations' images"),
                    )
                })?;
                if row.kind != "output" {
                    return Err(CollectionError::invalid(
                        "media",
                        "is an upload, not a generation's result; collections hold results and LoRAs",
                    ));
                }
                vec![("media", row.id)]
            }
            ItemRef::Generation(g) => {
                let job = self.job_for(account, g).await.map_err(|e| match e {
                    crate::JobAccessError::Storage(e) => CollectionError::Storage(e),
                    crate::JobAccessError::NotFound(_) => {
                        CollectionError::invalid("generation", format!("no generation {g:?} of yours"))
                    }
                })?;
                let outputs = job.output_ids();
                if outputs.is_empty() {
                    return Err(CollectionError::invalid(
                        "generation",
                        format!("generation {g:?} has no result images (it is {})", job.status),
                    ));
                }
                outputs.into_iter().map(|o| ("media", o)).collect()
            }
            ItemRef::Lora(slug) => match self.store.get_lora(slug).await? {
                Some((lora, _)) if account.may_access(lora.owner_id.as_deref()) => vec![("lora", lora.slug)],
                _ => return Err(CollectionError::invalid("lora", format!("no LoRA {slug:?} of yours"))),
            },
        };
        let have = self.store.collection_items(&c.id).await?.len() as u64;
        let max = self.config.collections.max_items;
        if have + refs.len() as u64 > max {
            return Err(CollectionError::invalid(
                "collection",
                format!("holds {have} items; at most {max} are allowed (collections.max_items)"),
            ));
        }
        let mut added = vec![];
        let now = now_ms();
        for (kind, ref_id) in refs {
            if let Some(item) =
                self.store.add_collection_item(&new_id(), &c.id, kind, &ref_id, &account.id, now).await?
            {
                added.push(item);
            }
        }
        Ok(added)
    }

    /// Removes one item from a collection `account` owns.
    pub async fn remove_from_collection(
        &self,
        account: &AccountRow,
        id: &str,
        item_id: &str,
    ) -> Result<(), CollectionError> {
        let c = self.owned(account, id).await?;
        if !self.store.remove_collection_item(&c.id, item_id, now_ms()).await? {
            return Err(CollectionError::not_found("item", item_id));
        }
        Ok(())
    }

    /// Puts a collection's items in the order given: every item exactly once.
    pub async fn reorder_collection(
        &self,
        account: &AccountRow,
        id: &str,
        order: &[String],
    ) -> Result<(), CollectionError> {
        let c = self.owned(account, id).await?;
        let items = self.store.collection_items(&c.id).await?;
        let mut seen = std::collections::HashSet::new();
        for i in order {
            if !items.iter().any(|x| &x.id == i) {
                return Err(CollectionError::invalid("items", format!("{i:?} is not an item of this collection")));
            }
            if !seen.insert(i) {
                return Err(CollectionError::invalid("items", format!("{i:?} is named twice")));
            }
        }
        if order.len() != items.len() {
            return Err(CollectionError::invalid(
                "items",
                format!("names {} of the {} items; list every item once in the new order", order.len(), items.len()),
            ));
        }
        self.store.reorder_collection_items(&c.id, order, now_ms()).await?;
        Ok(())
    }

    /// Makes a share link of a collection `account` owns. A view-only link
    /// of a public collection is refused: its address is open already.
    pub async fn share_collection(
        &self,
        account: &AccountRow,
        id: &str,
        req: ShareRequest,
    ) -> Result<NewShare, CollectionError> {
        if let Some(off) = self.feature_refusal("collections", account).await {
            return Err(CollectionError::Invalid(vec![off]));
        }
        let c = self.owned(account, id).await?;
        let secs = req.expires_in.unwrap_or(DEFAULT_SHARE_SECS);
        if !(1..=MAX_SHARE_SECS).contains(&secs) {
            return Err(CollectionError::invalid(
                "expires_in",
                format!("{secs} is out of range; give seconds from 1 to {MAX_SHARE_SECS} (365 days)"),
            ));
        }
        if req.can_add.is_empty() && c.visibility == Visibility::Public.as_str() {
            return Err(CollectionError::invalid(
                "can_add",
                "this collection is public: its address is open to everyone and never expires, so a view-only link \
                 adds nothing; name accounts that may add to it, or make it unlisted or private first",
            ));
        }
        let mut accounts = vec![];
        for r in &req.can_add {
            let r = r.trim();
            let found = match self.store.get_account(r).await? {
                Some(a) => Some(a),
                None => match r.split_once(':') {
                    Some((p, s)) => self.store.account_by_identity(p.trim(), s.trim()).await?,
                    None => None,
                },
            };
            match found {
                Some(a) => accounts.push(a.id),
                None => {
                    return Err(CollectionError::invalid(
                        "can_add",
                        format!("no account {r:?} (give an account id or an identity like telegram:123)"),
                    ));
                }
            }
        }
        let token = random_token();
        let now = now_ms();
        let share = CollectionShareRow {
            id: new_id(),
            collection_id: c.id.clone(),
            token_hash: hash_secret(&token),
            permission: if accounts.is_empty() { "view" } else { "add" }.into(),
            accounts: serde_json::to_string(&accounts).unwrap_or_else(|_| "[]".into()),
            created_by: account.id.clone(),
            created_at: now,
            expires_at: now.saturating_add(secs.saturating_mul(1000)),
            revoked_at: None,
        };
        self.store.insert_collection_share(&share).await?;
        Ok(NewShare { share, token })
    }

    /// The share links of a collection `account` owns, newest first.
    pub async fn collection_shares(
        &self,
        account: &AccountRow,
        id: &str,
    ) -> Result<Vec<CollectionShareRow>, CollectionError> {
        let c = self.owned(account, id).await?;
        Ok(self.store.collection_shares(&c.id).await?)
    }

    /// Revokes a share link at once.
    pub async fn revoke_collection_share(
        &self,
        account: &AccountRow,
        id: &str,
        share_id: &str,
    ) -> Result<(), CollectionError> {
        let c = self.owned(account, id).await?;
        if !self.store.revoke_collection_share(&c.id, share_id, now_ms()).await? {
            return Err(CollectionError::not_found("share link", share_id));
        }
        Ok(())
    }

    /// A collection as anyone sees it, without an account: `key` is a
    /// share token (`sc_…`: live links only; an expired or revoked one is
    /// [`CollectionError::Gone`]) or the id of an unlisted or public
    /// collection. Anything else is not found.
    pub async fn shared_collection(&self, key: &str) -> Result<CollectionView, CollectionError> {
        let c = if key.starts_with(TOKEN_PREFIX) {
            let share = self
                .store
                .collection_share_by_hash(&hash_secret(key))
                .await?
                .ok_or_else(|| CollectionError::not_found("collection", "(link)"))?;
            if share.revoked_at.is_some() {
                return Err(CollectionError::Gone("this link was revoked by the collection's owner".into()));
            }
            if share.expires_at <= now_ms() {
                return Err(CollectionError::Gone("this link has expired; ask the owner for a new one".into()));
            }
            self.store.get_collection(&share.collection_id).await?
        } else {
            self.store.get_collection(key).await?.filter(|c| c.visibility != Visibility::Private.as_str())
        };
        let c = c.ok_or_else(|| CollectionError::not_found("collection", "(link)"))?;
        self.view(c, false, false).await
    }

    /// The image of item `item_id` of the collection `key` opens
    /// ([`Station::shared_collection`]), with its bytes, or a thumbnail of
    /// at most `thumb` pixels a side.
    pub async fn shared_image(
        &self,
        key: &str,
        item_id: &str,
        thumb: Option<u32>,
    ) -> Result<(MediaRow, Vec<u8>), CollectionError> {
        let view = self.shared_collection(key).await?;
        let media = view
            .items
            .into_iter()
            .find(|i| i.item.id == item_id)
            .and_then(|i| i.media)
            .ok_or_else(|| CollectionError::not_found("item", item_id))?;
        let bytes = match thumb {
            Some(side) => self.media.thumbnail(&media.id, None, side).await,
            None => self.media.get(&media.id, None).await.map(|(_, b)| b),
        }
        .map_err(|e| CollectionError::Io(e.to_string()))?;
        Ok((media, bytes))
    }
}

// ---------------------------------------------------------------- exports

/// Where export ZIPs are written.
pub fn exports_dir(station: &Station) -> PathBuf {
    station.config.data_dir.join("exports")
}

impl Station {
    /// Asks for a ZIP export of a collection `account` owns: a durable row
    /// a worker builds in the background (progress in `done`/`total`).
    pub async fn export_collection(
        &self,
        account: &AccountRow,
        id: &str,
    ) -> Result<CollectionExportRow, CollectionError> {
        if let Some(off) = self.feature_refusal("collections", account).await {
            return Err(CollectionError::Invalid(vec![off]));
        }
        let row = self.store_export_row(account, id).await?;
        self.export_wake.notify_one();
        Ok(row)
    }

    async fn store_export_row(&self, account: &AccountRow, id: &str) -> Result<CollectionExportRow, CollectionError> {
        let c = self.owned(account, id).await?;
        let total = self.store.collection_items(&c.id).await?.len() as i64;
        let row = queued_export(c.id, account, total, None);
        self.store.insert_collection_export(&row).await?;
        Ok(row)
    }

    /// An export `account` asked for (or any, for an administrator).
    pub async fn collection_export(
        &self,
        account: &AccountRow,
        export_id: &str,
    ) -> Result<CollectionExportRow, CollectionError> {
        match self.store.get_collection_export(export_id).await? {
            Some(e) if account.may_access(Some(&e.account_id)) => Ok(e),
            _ => Err(CollectionError::not_found("export", export_id)),
        }
    }

    /// The path of a built export's ZIP while its download lasts:
    /// [`CollectionError::Gone`] once it expired, `Invalid` while it is
    /// still being built or when it failed.
    pub async fn export_file(
        &self,
        account: &AccountRow,
        export_id: &str,
    ) -> Result<(CollectionExportRow, PathBuf), CollectionError> {
        let e = self.collection_export(account, export_id).await?;
        match (e.status.as_str(), &e.file) {
            ("succeeded", _) if e.expires_at.is_some_and(|t| t <= now_ms()) => Err(CollectionError::Gone(
                "this export's download link has expired (collections.export_ttl_hours); export the collection again"
                    .into(),
            )),
            ("succeeded", Some(f)) => {
                let path = exports_dir(self).join(f);
                Ok((e, path))
            }
            ("succeeded", None) => Err(CollectionError::Gone("this export's file was removed; export again".into())),
            ("failed", _) => Err(CollectionError::invalid(
                "export",
                format!("the export failed: {}", e.error.as_deref().unwrap_or("unknown error")),
            )),
            _ => Err(CollectionError::invalid(
                "export",
                format!(
                    "is still being built ({} of {} items); try again when its status is succeeded",
                    e.done, e.total
                ),
            )),
        }
    }

    /// Builds one claimed export: every image's original bytes under
    /// `images/`, then `metadata.json`; progress (and the lease) after each
    /// item, fenced by `owner`. Written to a temporary file renamed into
    /// place, so a crash leaves no half ZIP behind a succeeded row.
    async fn build_export(
        &self,
        export: &CollectionExportRow,
        owner: &str,
        progress: &(dyn Fn(i64, i64) + Send + Sync),
    ) -> Result<(), CollectionError> {
        if export.options.is_some() {
            return self.build_nft_export(export, owner, progress).await;
        }
        let view = match self.store.get_collection(&export.collection_id).await? {
            Some(c) => self.view(c, false, false).await?,
            None => return Err(CollectionError::Io("the collection was deleted".into())),
        };
        let total = view.items.len() as i64;
        let dir = exports_dir(self);
        std::fs::create_dir_all(&dir).map_err(|e| CollectionError::Io(format!("{}: {e}", dir.display())))?;
        let tmp = dir.join(format!("{}.zip.part", export.id));
        // The ZIP is written on the blocking pool; entries arrive by channel
        // (at most two in flight, so memory holds about two images).
        let (tx, rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(1);
        let writer = tokio::task::spawn_blocking({
            let tmp = tmp.clone();
            move || write_zip(&tmp, rx)
        });
        let mut entries = vec![];
        let lease = || now_ms() + EXPORT_LEASE.as_millis() as i64;
        for (n, item) in view.items.iter().enumerate() {
            let position = n + 1;
            let mut meta = Map::new();
            meta.insert("position".into(), json!(position));
            meta.insert("kind".into(), json!(item.item.kind));
            if let Some(m) = &item.media {
                let (_, bytes) = self.media.get(&m.id, None).await.map_err(|e| CollectionError::Io(e.to_string()))?;
                let ext = crate::media::extension_for_mime(&m.mime);
                let name = format!("images/{position:04}-{}.{ext}", &m.id[..m.id.len().min(12)]);
                if tx.send((name.clone(), bytes)).await.is_err() {
                    break;
                }
                meta.insert("file".into(), json!(name));
                meta.extend(self.image_metadata(m).await?);
            } else if item.item.kind == "lora" {
                if let Some((lora, _)) = self.store.get_lora(&item.item.ref_id).await? {
                    let creator = match &lora.owner_id {
                        Some(o) => self.store.get_account(o).await?.map(|a| a.name),
                        None => None,
                    };
                    meta.insert(
                        "lora".into(),
                        json!({
                            "slug": lora.slug, "name": lora.name, "description": lora.description,
                            "trigger_words": lora.trigger_words, "base_model": lora.checkpoint, "file": lora.filename,
                        }),
                    );
                    meta.insert("creator".into(), json!(creator));
                } else {
                    meta.insert("lora".into(), json!({"slug": item.item.ref_id, "removed": true}));
                }
            } else {
                meta.insert("removed".into(), json!(true));
            }
            entries.push(Value::Object(meta));
            if !self.store.collection_export_progress(&export.id, owner, position as i64, total, lease()).await? {
                let _ = std::fs::remove_file(&tmp);
                return Err(CollectionError::Io("another process took this export over".into()));
            }
            progress(position as i64, total);
        }
        let c = &view.collection;
        let metadata = json!({
            "collection": {
                "name": c.name, "description": c.description, "owner": view.owner_name,
                "visibility": c.visibility, "items": total, "exported_at": now_ms(),
            },
            "items": entries,
        });
        let text = serde_json::to_vec_pretty(&metadata).map_err(|e| CollectionError::Io(e.to_string()))?;
        let _ = tx.send(("metadata.json".into(), text)).await;
        drop(tx);
        let size = writer.await.map_err(|e| CollectionError::Io(e.to_string()))?.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CollectionError::Io(format!("writing the ZIP: {e}"))
        })?;
        let name = format!("{}.zip", export.id);
        std::fs::rename(&tmp, dir.join(&name)).map_err(|e| CollectionError::Io(e.to_string()))?;
        let now = now_ms();
        let ttl = (self.config.collections.export_ttl_hours as i64).saturating_mul(3_600_000);
        let expires = now.saturating_add(ttl);
        if !self
            .store
            .finish_collection_export(&export.id, owner, "succeeded", Some(&name), Some(size), None, now, Some(expires))
            .await?
        {
            // Someone else finished it: theirs stands; ours is the same content.
            warn!(export = %export.id, "export finished by another process");
        }
        Ok(())
    }

    /// What `metadata.json` says of one image: its generation's prompt,
    /// parameters (without internal `_` keys), model, LoRAs and seed, and
    /// its creator.
    pub(crate) async fn image_metadata(&self, m: &MediaRow) -> Result<Map<String, Value>, StoreError> {
        let mut out = Map::new();
        out.insert("media".into(), json!(m.id));
        out.insert("mime".into(), json!(m.mime));
        out.insert("width".into(), json!(m.width));
        out.insert("height".into(), json!(m.height));
        out.insert("created_at".into(), json!(m.created_at));
        let creator = match &m.account_id {
            Some(a) => self.store.get_account(a).await?.map(|a| a.name),
            None => None,
        };
        out.insert("creator".into(), json!(creator));
        let job = match &m.job_id {
            Some(j) => self.store.get_job(j).await?,
            None => None,
        };
        let Some(job) = job else {
            for k in ["generation", "tool", "prompt", "parameters", "model", "loras", "seed"] {
                out.insert(k.into(), Value::Null);
            }
            return Ok(out);
        };
        let params = job.params_json();
        let tool = self.tools.get(&job.tool_id);
        let of_kind = |kinds: &[InputType]| -> Value {
            tool.as_ref()
                .and_then(|t| t.inputs.iter().find(|(_, i)| kinds.contains(&i.kind)))
                .and_then(|(name, _)| params.get(name).cloned())
                .unwrap_or(Value::Null)
        };
        let mut seed = of_kind(&[InputType::Seed]);
        if seed.is_null() {
            seed = params.get("seed").cloned().unwrap_or(Value::Null);
        }
        let mut model = of_kind(&[InputType::Checkpoint, InputType::Model]);
        if model.is_null() {
            model = tool.as_ref().and_then(|t| t.base_model.clone()).map_or(Value::Null, Value::String);
        }
        out.insert("generation".into(), json!(job.id));
        out.insert("tool".into(), json!(job.tool_id));
        out.insert("prompt".into(), json!(self.prompt_of(&job.tool_id, &params)));
        out.insert("model".into(), model);
        out.insert("loras".into(), params.get(crate::loras::APPLIED_PARAM).cloned().unwrap_or_else(|| json!([])));
        out.insert("seed".into(), seed);
        let shown: Map<String, Value> = params.into_iter().filter(|(k, _)| !k.starts_with('_')).collect();
        out.insert("parameters".into(), Value::Object(shown));
        Ok(out)
    }

    /// Builds a claimed export; a failure is recorded on it (fenced).
    async fn run_export(&self, export: &CollectionExportRow, owner: &str, progress: &(dyn Fn(i64, i64) + Send + Sync)) {
        if let Err(e) = self.build_export(export, owner, progress).await {
            warn!(export = %export.id, error = %e, "export failed");
            let _ = std::fs::remove_file(exports_dir(self).join(format!("{}.zip.part", export.id)));
            let msg = e.to_string();
            let _ = self
                .store
                .finish_collection_export(&export.id, owner, "failed", None, None, Some(&msg), now_ms(), None)
                .await;
        }
    }

    /// Exports a collection `account` owns in this process, now (the CLI,
    /// which runs no workers): the same durable row and build as the
    /// background worker's, with `progress(done, total)` after each item.
    pub async fn export_collection_now(
        &self,
        account: &AccountRow,
        id: &str,
        progress: &(dyn Fn(i64, i64) + Send + Sync),
    ) -> Result<CollectionExportRow, CollectionError> {
        let row = self.store_export_row(account, id).await?;
        self.build_export_now(account, row, progress).await
    }

    /// Builds a stored export row in this process now (unless a server's
    /// worker claimed it first: then waits for that one), with progress.
    pub(crate) async fn build_export_now(
        &self,
        account: &AccountRow,
        row: CollectionExportRow,
        progress: &(dyn Fn(i64, i64) + Send + Sync),
    ) -> Result<CollectionExportRow, CollectionError> {
        let owner = format!("cli-{}-{}", std::process::id(), &new_id()[..8]);
        let now = now_ms();
        let lease = now + EXPORT_LEASE.as_millis() as i64;
        // A worker of a running server may have taken it first: then wait for it.
        if let Some(claimed) = self.store.claim_collection_export(&owner, now, lease, Some(&row.id)).await? {
            self.run_export(&claimed, &owner, progress).await;
        }
        loop {
            let e = self.collection_export(account, &row.id).await?;
            if e.status == "succeeded" || e.status == "failed" {
                return Ok(e);
            }
            progress(e.done, e.total);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Deletes the files of exports whose download ended.
    async fn sweep_exports(&self) -> Result<(), StoreError> {
        for e in self.store.expired_collection_exports(now_ms()).await? {
            if let Some(f) = &e.file {
                let _ = std::fs::remove_file(exports_dir(self).join(f));
            }
            self.store.forget_collection_export_file(&e.id).await?;
        }
        Ok(())
    }
}

/// Writes the entries received into a ZIP at `path` (stored, not
/// compressed: images are compressed already), synced to disk; its size.
pub(crate) fn write_zip(
    path: &std::path::Path,
    mut rx: tokio::sync::mpsc::Receiver<(String, Vec<u8>)>,
) -> std::io::Result<i64> {
    let file = std::fs::File::create(path)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    while let Some((name, bytes)) = rx.blocking_recv() {
        zip.start_file(name.as_str(), stored).map_err(std::io::Error::other)?;
        zip.write_all(&bytes)?;
    }
    let mut w = zip.finish().map_err(std::io::Error::other)?;
    w.flush()?;
    let f = w.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    f.sync_all()?;
    Ok(f.metadata()?.len() as i64)
}

/// The export worker of a process: claims queued exports (and those whose
/// builder's lease lapsed) one at a time and builds them; sweeps expired
/// files. Started by [`crate::Workers::start`].
pub(crate) async fn export_loop(station: Station, owner: Arc<str>, stop: CancellationToken) {
    let poll = Duration::from_millis(station.config.queue.poll_ms.max(50));
    let mut last_sweep = 0;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let now = now_ms();
        if now - last_sweep > 60_000 {
            last_sweep = now;
            if let Err(e) = station.sweep_exports().await {
                warn!(error = %e, "could not sweep expired exports");
            }
        }
        let claimed =
            station.store.claim_collection_export(&owner, now, now + EXPORT_LEASE.as_millis() as i64, None).await;
        match claimed {
            Ok(Some(export)) => {
                info!(export = %export.id, collection = %export.collection_id, "building export");
                station.run_export(&export, &owner, &|_, _| {}).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "could not claim an export"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = station.export_wake.notified() => {}
            _ = tokio::time::sleep(poll.max(Duration::from_millis(500))) => {}
        }
    }
}

/// A new export, queued: `total` items to write; `options` as stored (the
/// cook export's `{"nft": true, "shuffle": …}`).
pub(crate) fn queued_export(
    collection_id: String,
    account: &AccountRow,
    total: i64,
    options: Option<String>,
) -> CollectionExportRow {
    CollectionExportRow {
        id: new_id(),
        collection_id,
        account_id: account.id.clone(),
        status: "queued".into(),
        done: 0,
        total,
        error: None,
        file: None,
        size: None,
        lease_owner: None,
        lease_expires_at: None,
        created_at: now_ms(),
        finished_at: None,
        expires_at: None,
        options,
    }
}
