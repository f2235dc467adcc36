//! Requests to make an owner's LoRA public, kept until an administrator
//! decides them (`training.publish_needs_approval`).

use crate::db::{Store, StoreError, safe, with_pool};

/// One request to publish a LoRA.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct LoraPublishRow {
    /// The LoRA.
    pub slug: String,
    /// Who asked (its owner).
    pub account_id: String,
    /// `pending`, `approved` or `refused`.
    pub status: String,
    /// Asked, Unix ms.
    pub requested_at: i64,
    /// Decided, Unix ms.
    pub decided_at: Option<i64>,
    /// The administrator who decided (`account:<id>`, `cli`).
    pub decided_by: Option<String>,
}

const COLUMNS: &str = "slug, account_id, status, requested_at, decided_at, decided_by";

impl Store {
    /// Records a pending request to publish `slug` (a decided one is asked
    /// again). False when one is pending already.
    pub async fn request_lora_publish(&self, slug: &str, account_id: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "INSERT INTO lora_publish_requests (slug, account_id, status, requested_at) \
                 VALUES ($1, $2, 'pending', $3) \
                 ON CONFLICT (slug) DO UPDATE SET account_id = $2, status = 'pending', requested_at = $3, \
                 decided_at = NULL, decided_by = NULL WHERE lora_publish_requests.status <> 'pending'",
            )
            .bind(slug).bind(account_id).bind(now)
            .execute(p).await?;
            Ok(r.rows_affected() > 0)
        })
    }

    /// The request about `slug`, if any.
    pub async fn lora_publish_request(&self, slug: &str) -> Result<Option<LoraPublishRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!("SELECT {COLUMNS} FROM lora_publish_requests WHERE slug = $1")))
                .bind(slug).fetch_optional(p).await?)
        })
    }

    /// Pending requests, oldest first.
    pub async fn pending_lora_publish_requests(&self) -> Result<Vec<LoraPublishRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {COLUMNS} FROM lora_publish_requests WHERE status = 'pending' ORDER BY requested_at, slug"
            )))
            .fetch_all(p).await?)
        })
    }

    /// Decides a pending request (`approved` or `refused`); false when none
    /// was pending (decided already, or never asked).
    pub async fn decide_lora_publish(&self, slug: &str, status: &str, by: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE lora_publish_requests SET status = $2, decided_at = $3, decided_by = $4 \
                 WHERE slug = $1 AND status = 'pending'",
            )
            .bind(slug).bind(status).bind(now).bind(by)
            .execute(p).await?;
            Ok(r.rows_affected() > 0)
        })
    }

    /// Forgets the request about `slug` (its LoRA was deleted).
    pub async fn delete_lora_publish_request(&self, slug: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM lora_publish_requests WHERE slug = $1").bind(slug).execute(p).await?;
            Ok(())
        })
    }
}
