//! Feature flags as stored: a name, its rule (JSON the core reads) and who
//! last set it. The core owns what a rule means (see `station_core::flags`).

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::db::{Store, StoreError, with_pool};

/// One stored flag.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct FlagRow {
    /// The flag's name, e.g. `tool.txt2img` or `training`.
    pub name: String,
    /// The rule, as JSON.
    pub rule: String,
    /// What the flag is for, as the operator described it.
    pub description: String,
    /// When it was last set (Unix ms).
    pub updated_at: i64,
    /// Who set it (`operator:<name>` or `account:<id>`).
    pub updated_by: String,
}

impl Store {
    /// Every stored flag, by name.
    pub async fn flags(&self) -> Result<Vec<FlagRow>, StoreError> {
        let sql = "SELECT name, rule, description, updated_at, updated_by FROM feature_flags ORDER BY name";
        with_pool!(self, p => Ok(sqlx::query_as(sql).fetch_all(p).await?))
    }

    /// Creates or replaces a flag; returns the row it replaced, if any (in
    /// the same transaction, so the audit can say what changed).
    pub async fn put_flag(&self, row: &FlagRow) -> Result<Option<FlagRow>, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let old: Option<FlagRow> = sqlx::query_as(
                "SELECT name, rule, description, updated_at, updated_by FROM feature_flags WHERE name = $1",
            )
            .bind(&row.name)
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO feature_flags (name, rule, description, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET rule = excluded.rule, description = excluded.description, \
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            )
            .bind(&row.name).bind(&row.rule).bind(&row.description).bind(row.updated_at).bind(&row.updated_by)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(old)
        })
    }

    /// Removes a flag (the feature is then on for everyone); the removed row, if there was one.
    pub async fn delete_flag(&self, name: &str) -> Result<Option<FlagRow>, StoreError> {
        with_pool!(self, p => {
            let old: Option<FlagRow> = sqlx::query_as(
                "DELETE FROM feature_flags WHERE name = $1 RETURNING name, rule, description, updated_at, updated_by",
            )
            .bind(name)
            .fetch_optional(p)
            .await?;
            Ok(old)
        })
    }
}
