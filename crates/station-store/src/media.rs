//! Media records: uploads, results and previews, each pointing at a blob by
//! content hash (the blobs themselves live in `station-media`).

use serde::Serialize;

use crate::db::{Store, StoreError, with_pool};

/// One stored media item (input, output, preview or thumbnail).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct MediaRow {
    /// Unguessable id handed to clients.
    pub id: String,
    /// Content hash in the blob store.
    pub hash: String,
    /// Detected MIME type.
    pub mime: String,
    /// Bytes.
    pub size: i64,
    /// Pixels.
    pub width: i64,
    /// Pixels.
    pub height: i64,
    /// Owner, if any.
    pub account_id: Option<String>,
    /// Job that produced (or consumed) it.
    pub job_id: Option<String>,
    /// `input`, `output`, `preview`.
    pub kind: String,
    /// Creation time.
    pub created_at: i64,
}

pub(crate) const INSERT_MEDIA_SQL: &str = "INSERT INTO media (id, hash, mime, size, width, height, account_id, job_id, kind, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

impl Store {
    /// Records a media item.
    pub async fn insert_media(&self, m: &MediaRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(INSERT_MEDIA_SQL)
            .bind(&m.id).bind(&m.hash).bind(&m.mime).bind(m.size).bind(m.width).bind(m.height)
            .bind(&m.account_id).bind(&m.job_id).bind(&m.kind).bind(m.created_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// One media item by id.
    pub async fn get_media(&self, id: &str) -> Result<Option<MediaRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT id, hash, mime, size, width, height, account_id, job_id, kind, created_at FROM media WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Media attached to a job of a given kind, oldest first.
    pub async fn media_for_job(&self, job_id: &str, kind: &str) -> Result<Vec<MediaRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT id, hash, mime, size, width, height, account_id, job_id, kind, created_at FROM media \
                 WHERE job_id = $1 AND kind = $2 ORDER BY created_at, id",
            )
            .bind(job_id)
            .bind(kind)
            .fetch_all(p)
            .await?)
        })
    }

    /// How many media rows an account owns (uploads and results).
    pub async fn count_account_media(&self, account_id: &str) -> Result<i64, StoreError> {
        let n: i64 = with_pool!(self, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM media WHERE account_id = $1").bind(account_id).fetch_one(p).await?
        });
        Ok(n)
    }

    /// Deletes one media row (an upload whose request was refused after it
    /// was stored); true if it existed. The blob stays: content is shared by
    /// hash and may back other rows.
    pub async fn delete_media(&self, id: &str) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query("DELETE FROM media WHERE id = $1").bind(id).execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }
}
