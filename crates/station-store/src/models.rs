//! The model files each backend offers, and the operator's catalog of them.

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::db::{Store, StoreError, with_pool};

/// One model file on one backend.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, PartialEq)]
pub struct BackendModelRow {
    /// Backend name.
    pub backend: String,
    /// `checkpoint`, `lora`, `upscale_model`, `vae`, `diffusion_model`.
    pub kind: String,
    /// File name as the backend lists it.
    pub name: String,
    /// Whether the backend passed its last health check.
    pub online: bool,
    /// When the backend's list last changed to this one (Unix ms): an
    /// unchanged list is not written again.
    pub seen_at: i64,
    /// The base model the file's own metadata names, as the backend reported
    /// it (`None`: not asked, or nothing said).
    pub metadata_base_model: Option<String>,
}

/// One model file a backend lists: kind, file name, and the base model its
/// metadata names when the backend was asked and said.
pub type BackendFile = (String, String, Option<String>);

/// What the operator set for one model.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, PartialEq, Default)]
pub struct ModelCatalogRow {
    /// File name.
    pub name: String,
    /// Base model (`SD1.5`, `SDXL`, `FLUX`, …), when the operator set it.
    pub base_model: Option<String>,
    /// Display label.
    pub label: Option<String>,
    /// Not offered to members.
    pub hidden: bool,
    /// The default model of its base model (and kind).
    pub is_default: bool,
    /// Multiplies the price of jobs run with it.
    pub price_multiplier: f64,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

impl Store {
    /// Replaces what `backend` offers with `models`, marking it online, in
    /// one transaction — only when that changes something: the stored rows
    /// are read first, and a list equal to them (all online, no new metadata
    /// answer) writes nothing, so many processes checking many backends do
    /// not rewrite the inventory every few seconds. A file listed again
    /// without a metadata base model keeps the one stored for it (it was
    /// asked before; the file stayed). True when it wrote.
    pub async fn replace_backend_models(
        &self,
        backend: &str,
        models: &[BackendFile],
        now: i64,
    ) -> Result<bool, StoreError> {
        // Read before any transaction: on SQLite a transaction that reads
        // first cannot always upgrade to a writer (another backend's health
        // check may be writing), and fails instead of waiting.
        let stored: Vec<(String, String, bool, Option<String>)> = with_pool!(self, p => {
            sqlx::query_as("SELECT kind, name, online, metadata_base_model FROM backend_models WHERE backend = $1")
                .bind(backend)
                .fetch_all(p)
                .await?
        });
        let known = |kind: &str, name: &str| {
            stored.iter().find(|(k, n, _, _)| k == kind && n == name).and_then(|(_, _, _, m)| m.clone())
        };
        let wanted: std::collections::BTreeSet<(&str, &str)> =
            models.iter().map(|(k, n, _)| (k.as_str(), n.as_str())).collect();
        let have: std::collections::BTreeSet<(&str, &str)> =
            stored.iter().map(|(k, n, _, _)| (k.as_str(), n.as_str())).collect();
        let new_answer = models.iter().any(|(k, n, m)| m.is_some() && *m != known(k, n));
        if wanted == have && !new_answer {
            if stored.iter().all(|(_, _, online, _)| *online) {
                return Ok(false);
            }
            // Back up with the same files: only the flag changes.
            with_pool!(self, p => {
                sqlx::query("UPDATE backend_models SET online = TRUE, seen_at = $2 WHERE backend = $1 AND online = FALSE")
                    .bind(backend).bind(now)
                    .execute(p)
                    .await?;
            });
            return Ok(true);
        }
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("DELETE FROM backend_models WHERE backend = $1").bind(backend).execute(&mut *tx).await?;
            for (kind, name, meta) in models {
                let meta = meta.clone().or_else(|| known(kind, name));
                sqlx::query(
                    "INSERT INTO backend_models (backend, kind, name, online, seen_at, metadata_base_model) \
                     VALUES ($1, $2, $3, TRUE, $4, $5) ON CONFLICT (backend, kind, name) DO NOTHING",
                )
                .bind(backend).bind(kind).bind(name).bind(now).bind(meta)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Marks what `backend` offers as online or offline (it failed a health
    /// check). True when a row changed.
    pub async fn set_backend_models_online(&self, backend: &str, online: bool) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("UPDATE backend_models SET online = $2 WHERE backend = $1 AND online <> $2")
                .bind(backend).bind(online)
                .execute(p)
                .await?;
            Ok(r.rows_affected() > 0)
        })
    }

    /// Forgets every backend's files but those named in `keep` (backends removed).
    pub async fn forget_backend_models_except(&self, keep: &[String]) -> Result<(), StoreError> {
        let rows = self.backend_models().await?;
        let mut gone: Vec<&str> =
            rows.iter().map(|r| r.backend.as_str()).filter(|b| !keep.iter().any(|k| k == b)).collect();
        gone.dedup();
        for b in gone {
            with_pool!(self, p => {
                sqlx::query("DELETE FROM backend_models WHERE backend = $1").bind(b).execute(p).await?;
            });
        }
        Ok(())
    }

    /// Every backend's files, by kind, name and backend.
    pub async fn backend_models(&self) -> Result<Vec<BackendModelRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT backend, kind, name, online, seen_at, metadata_base_model FROM backend_models \
                 ORDER BY kind, name, backend",
            )
            .fetch_all(p)
            .await?)
        })
    }

    /// The operator's catalog.
    pub async fn model_catalog(&self) -> Result<Vec<ModelCatalogRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT name, base_model, label, hidden, is_default, price_multiplier, updated_at \
                 FROM model_catalog ORDER BY name",
            )
            .fetch_all(p)
            .await?)
        })
    }

    /// Writes one catalog entry. When it is a default, `others_of_base`
    /// (the other models of its base model and kind) stop being one, in the
    /// same transaction.
    pub async fn upsert_model_catalog(
        &self,
        row: &ModelCatalogRow,
        others_of_base: &[String],
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if row.is_default {
                for other in others_of_base.iter().filter(|o| **o != row.name) {
                    sqlx::query("UPDATE model_catalog SET is_default = FALSE, updated_at = $2 WHERE name = $1")
                        .bind(other).bind(row.updated_at)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            sqlx::query(
                "INSERT INTO model_catalog (name, base_model, label, hidden, is_default, price_multiplier, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET base_model = excluded.base_model, \
                 label = excluded.label, hidden = excluded.hidden, is_default = excluded.is_default, \
                 price_multiplier = excluded.price_multiplier, updated_at = excluded.updated_at",
            )
            .bind(&row.name).bind(&row.base_model).bind(&row.label).bind(row.hidden).bind(row.is_default)
            .bind(row.price_multiplier).bind(row.updated_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }
}
