//! The LoRA catalog: records, grants and the catalog version.
//!
//! Catalogs hold thousands of records at most, so readers load everything and
//! filter in memory; [`Store::lora_catalog_version`] tells a cache whether that
//! load is needed again.

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::accounts::AccountRow;
use crate::db::{Store, StoreError, with_pool};

/// One stored LoRA. List-valued fields are decoded from their JSON text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoraRow {
    /// Stable internal id.
    pub id: String,
    /// Unique slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Trigger words, canonical first.
    pub trigger_words: Vec<String>,
    /// Alternative words.
    pub cognates: Vec<String>,
    /// Weight when the prompt gives none.
    pub default_weight: Option<f64>,
    /// Base model family.
    pub checkpoint: String,
    /// File name on the ComfyUI servers.
    pub filename: String,
    /// Browsing tags.
    pub tags: Vec<String>,
    /// Owning account id, `None` for the operator's LoRAs.
    pub owner_id: Option<String>,
    /// `public` or `private`.
    pub visibility: String,
    /// Average rating.
    pub rating: Option<f64>,
    /// Preview image URLs or keys.
    pub preview_images: Vec<String>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// Permission for one account to use one LoRA.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct LoraGrantRow {
    /// The LoRA's id.
    pub lora_id: String,
    /// The grantee's account id.
    pub account_id: String,
    /// No longer counts from this time on; `None` never expires.
    pub expires_at: Option<i64>,
    /// Revoked grants never count.
    pub revoked: bool,
    /// When granted (first granted, for a grant renewed later).
    pub created_at: i64,
}

/// Narrows [`Store::list_loras`]; every field set must match.
#[derive(Debug, Clone, Default)]
pub struct LoraFilter {
    /// Base model family, case-insensitive.
    pub checkpoint: Option<String>,
    /// One tag, case-insensitive.
    pub tag: Option<String>,
    /// Text found (case-insensitively) in the slug, name, description or a trigger word.
    pub search: Option<String>,
}

impl LoraFilter {
    fn matches(&self, r: &LoraRow) -> bool {
        let eq = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
        if let Some(c) = &self.checkpoint
            && !eq(c, &r.checkpoint)
        {
            return false;
        }
        if let Some(t) = &self.tag
            && !r.tags.iter().any(|x| eq(x, t))
        {
            return false;
        }
        if let Some(s) = &self.search {
            let s = s.to_lowercase();
            let hit = [&r.slug, &r.name, &r.description]
                .into_iter()
                .chain(&r.trigger_words)
                .chain(&r.cognates)
                .any(|f| f.to_lowercase().contains(&s));
            if !hit {
                return false;
            }
        }
        true
    }
}

/// How the row is read: JSON columns arrive as text.
#[derive(sqlx::FromRow)]
struct RawLora {
    id: String,
    slug: String,
    name: String,
    description: String,
    trigger_words: String,
    cognates: String,
    default_weight: Option<f64>,
    checkpoint: String,
    filename: String,
    tags: String,
    owner_id: Option<String>,
    visibility: String,
    rating: Option<f64>,
    preview_images: String,
    created_at: i64,
    updated_at: i64,
}

impl RawLora {
    fn decode(self) -> Result<LoraRow, StoreError> {
        let list = |field: &str, text: &str| -> Result<Vec<String>, StoreError> {
            serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(format!("loras.{field} of LoRA {}: {e}", self.slug)))
        };
        Ok(LoraRow {
            trigger_words: list("trigger_words", &self.trigger_words)?,
            cognates: list("cognates", &self.cognates)?,
            tags: list("tags", &self.tags)?,
            preview_images: list("preview_images", &self.preview_images)?,
            id: self.id,
            slug: self.slug,
            name: self.name,
            description: self.description,
            default_weight: self.default_weight,
            checkpoint: self.checkpoint,
            filename: self.filename,
            owner_id: self.owner_id,
            visibility: self.visibility,
            rating: self.rating,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const LORA_COLUMNS: &str = "id, slug, name, description, trigger_words, cognates, default_weight, checkpoint, \
    filename, tags, owner_id, visibility, rating, preview_images, created_at, updated_at";

const GRANT_COLUMNS: &str = "lora_id, account_id, expires_at, revoked, created_at";

const BUMP: &str = "UPDATE lora_catalog SET version = version + 1 WHERE id = 1";

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).expect("a list of strings always serialises")
}

/// What [`Store::upsert_lora`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// No LoRA had the slug; a new one was written.
    Created,
    /// The LoRA with the slug was replaced (keeping its id and creation time).
    Updated,
}

impl Store {
    /// Writes a LoRA by slug: a new slug inserts `row` as is, an existing one
    /// keeps its id and `created_at` and takes every other field from `row`.
    /// Each grant in `grants` is then set (made live, with its expiry) for the
    /// stored LoRA; grants not listed are left alone.
    pub async fn upsert_lora(
        &self,
        row: &LoraRow,
        grants: &[(String, Option<i64>)],
        now: i64,
    ) -> Result<(LoraRow, Upserted), StoreError> {
        let sql = format!(
            "INSERT INTO loras ({LORA_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (slug) DO UPDATE SET name = excluded.name, description = excluded.description, \
               trigger_words = excluded.trigger_words, cognates = excluded.cognates, \
               default_weight = excluded.default_weight, checkpoint = excluded.checkpoint, \
               filename = excluded.filename, tags = excluded.tags, owner_id = excluded.owner_id, \
               visibility = excluded.visibility, rating = excluded.rating, \
               preview_images = excluded.preview_images, updated_at = excluded.updated_at \
             RETURNING {LORA_COLUMNS}"
        );
        let grant_sql = "INSERT INTO lora_grants (lora_id, account_id, expires_at, revoked, created_at) \
             VALUES ($1, $2, $3, FALSE, $4) \
             ON CONFLICT (lora_id, account_id) DO UPDATE SET expires_at = excluded.expires_at, revoked = FALSE";
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let existed: Option<(String,)> = sqlx::query_as("SELECT id FROM loras WHERE slug = $1")
                .bind(&row.slug)
                .fetch_optional(&mut *tx)
                .await?;
            let raw: RawLora = sqlx::query_as(crate::db::safe(&sql))
                .bind(&row.id)
                .bind(&row.slug)
                .bind(&row.name)
                .bind(&row.description)
                .bind(json_list(&row.trigger_words))
                .bind(json_list(&row.cognates))
                .bind(row.default_weight)
                .bind(&row.checkpoint)
                .bind(&row.filename)
                .bind(json_list(&row.tags))
                .bind(&row.owner_id)
                .bind(&row.visibility)
                .bind(row.rating)
                .bind(json_list(&row.preview_images))
                .bind(row.created_at)
                .bind(row.updated_at)
                .fetch_one(&mut *tx)
                .await?;
            for (account, expires_at) in grants {
                sqlx::query(grant_sql).bind(&raw.id).bind(account).bind(expires_at).bind(now).execute(&mut *tx).await?;
            }
            sqlx::query(BUMP).execute(&mut *tx).await?;
            tx.commit().await?;
            let how = if existed.is_some() { Upserted::Updated } else { Upserted::Created };
            Ok((raw.decode()?, how))
        })
    }

    /// One LoRA by slug, with all its grants (revoked and expired included).
    pub async fn get_lora(&self, slug: &str) -> Result<Option<(LoraRow, Vec<LoraGrantRow>)>, StoreError> {
        let sql = format!("SELECT {LORA_COLUMNS} FROM loras WHERE slug = $1");
        let grants_sql =
            format!("SELECT {GRANT_COLUMNS} FROM lora_grants WHERE lora_id = $1 ORDER BY created_at, account_id");
        with_pool!(self, p => {
            let raw: Option<RawLora> = sqlx::query_as(crate::db::safe(&sql)).bind(slug).fetch_optional(p).await?;
            let Some(raw) = raw else { return Ok(None) };
            let grants: Vec<LoraGrantRow> =
                sqlx::query_as(crate::db::safe(&grants_sql)).bind(&raw.id).fetch_all(p).await?;
            Ok(Some((raw.decode()?, grants)))
        })
    }

    /// LoRAs matching `filter`, by slug.
    pub async fn list_loras(&self, filter: &LoraFilter) -> Result<Vec<LoraRow>, StoreError> {
        let sql = format!("SELECT {LORA_COLUMNS} FROM loras ORDER BY slug");
        let raws: Vec<RawLora> = with_pool!(self, p => sqlx::query_as(crate::db::safe(&sql)).fetch_all(p).await?);
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let row = raw.decode()?;
            if filter.matches(&row) {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// The whole catalog with every grant, by slug, and the catalog version it
    /// was read at (both read in one transaction, so they agree).
    pub async fn lora_catalog(&self) -> Result<(i64, Vec<(LoraRow, Vec<LoraGrantRow>)>), StoreError> {
        let sql = format!("SELECT {LORA_COLUMNS} FROM loras ORDER BY slug");
        let grants_sql = format!("SELECT {GRANT_COLUMNS} FROM lora_grants ORDER BY created_at, account_id");
        let (version, raws, grants): (i64, Vec<RawLora>, Vec<LoraGrantRow>) = with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let (version,): (i64,) =
                sqlx::query_as("SELECT version FROM lora_catalog WHERE id = 1").fetch_one(&mut *tx).await?;
            let raws = sqlx::query_as(crate::db::safe(&sql)).fetch_all(&mut *tx).await?;
            let grants = sqlx::query_as(crate::db::safe(&grants_sql)).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            (version, raws, grants)
        });
        let mut by_lora: std::collections::HashMap<String, Vec<LoraGrantRow>> = Default::default();
        for g in grants {
            by_lora.entry(g.lora_id.clone()).or_default().push(g);
        }
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let grants = by_lora.remove(&raw.id).unwrap_or_default();
            out.push((raw.decode()?, grants));
        }
        Ok((version, out))
    }

    /// A number that changes whenever any LoRA or grant is written.
    pub async fn lora_catalog_version(&self) -> Result<i64, StoreError> {
        with_pool!(self, p => {
            let (v,): (i64,) = sqlx::query_as("SELECT version FROM lora_catalog WHERE id = 1").fetch_one(p).await?;
            Ok(v)
        })
    }

    /// The account behind a platform identity, without creating one (lookups
    /// by strangers, e.g. over HTTP, must not add accounts).
    pub async fn account_by_identity(&self, provider: &str, subject: &str) -> Result<Option<AccountRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT a.id, a.name, a.role, a.suspended, a.created_at FROM accounts a \
                 JOIN identities i ON i.account_id = a.id WHERE i.provider = $1 AND i.subject = $2",
            )
            .bind(provider)
            .bind(subject)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Deletes a LoRA and its grants; true if it existed.
    pub async fn remove_lora(&self, slug: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // Grants go explicitly rather than by cascade: SQLite only cascades
            // with foreign keys switched on, which a foreign connection may not do.
            sqlx::query("DELETE FROM lora_grants WHERE lora_id IN (SELECT id FROM loras WHERE slug = $1)")
                .bind(slug)
                .execute(&mut *tx)
                .await?;
            let r = sqlx::query("DELETE FROM loras WHERE slug = $1").bind(slug).execute(&mut *tx).await?;
            sqlx::query(BUMP).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Lets `account_id` use the LoRA until `expires_at` (`None`: for good),
    /// replacing any earlier grant to it, revoked or not.
    pub async fn grant_lora(
        &self,
        slug: &str,
        account_id: &str,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<LoraGrantRow, StoreError> {
        let sql = format!(
            "INSERT INTO lora_grants (lora_id, account_id, expires_at, revoked, created_at) \
             SELECT id, $2, $3, FALSE, $4 FROM loras WHERE slug = $1 \
             ON CONFLICT (lora_id, account_id) DO UPDATE SET expires_at = excluded.expires_at, revoked = FALSE \
             RETURNING {GRANT_COLUMNS}"
        );
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let row: Option<LoraGrantRow> = sqlx::query_as(crate::db::safe(&sql))
                .bind(slug)
                .bind(account_id)
                .bind(expires_at)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound { what: "LoRA", id: slug.to_owned() });
            };
            sqlx::query(BUMP).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Revokes `account_id`'s grant on the LoRA; true if there was a live or
    /// expired grant to revoke.
    pub async fn revoke_lora(&self, slug: &str, account_id: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let r = sqlx::query(
                "UPDATE lora_grants SET revoked = TRUE WHERE account_id = $2 AND revoked = FALSE \
                 AND lora_id IN (SELECT id FROM loras WHERE slug = $1)",
            )
            .bind(slug)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(BUMP).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(r.rows_affected() > 0)
        })
    }
}
