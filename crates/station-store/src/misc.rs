//! Accounts, identities, media records, saved tool settings and run-time backends.

use serde::Serialize;

use crate::db::{Store, StoreError, with_pool};

/// One account.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct AccountRow {
    /// Account id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `user` or `admin`.
    pub role: String,
    /// Suspended accounts cannot start jobs.
    pub suspended: bool,
    /// Creation time.
    pub created_at: i64,
}

/// One stored media item (input, output, preview or thumbnail).
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
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

/// A backend added at run time.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct BackendRow {
    /// Unique name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Prompts it may run at once.
    pub max_concurrent: i64,
    /// Tags as JSON array text.
    pub tags: String,
    /// When added.
    pub created_at: i64,
}

impl Store {
    /// The account behind a platform identity, created on first contact.
    pub async fn account_for_identity(
        &self,
        provider: &str,
        subject: &str,
        name: &str,
        now: i64,
    ) -> Result<AccountRow, StoreError> {
        if let Some(a) = self.find_identity(provider, subject).await? {
            return Ok(a);
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("INSERT INTO accounts (id, name, role, suspended, created_at) VALUES ($1, $2, 'user', FALSE, $3)")
                .bind(&id).bind(name).bind(now).execute(&mut *tx).await?;
            let inserted = sqlx::query(
                "INSERT INTO identities (provider, subject, account_id, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (provider, subject) DO NOTHING",
            )
            .bind(provider).bind(subject).bind(&id).bind(now).execute(&mut *tx).await?;
            if inserted.rows_affected() == 1 {
                tx.commit().await?;
            } else {
                // Someone else created it concurrently: use theirs.
                tx.rollback().await?;
            }
        });
        self.find_identity(provider, subject)
            .await?
            .ok_or(StoreError::NotFound { what: "identity", id: format!("{provider}:{subject}") })
    }

    async fn find_identity(&self, provider: &str, subject: &str) -> Result<Option<AccountRow>, StoreError> {
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

    /// One account by id. The id of an account that was linked into another
    /// (see [`Store::redeem_link_code`]) gives the account it was joined into.
    pub async fn get_account(&self, id: &str) -> Result<Option<AccountRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT id, name, role, suspended, created_at FROM accounts \
                 WHERE id = COALESCE((SELECT merged_into FROM accounts WHERE id = $1), $1)",
            )
            .bind(id)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Records a media item.
    pub async fn insert_media(&self, m: &MediaRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO media (id, hash, mime, size, width, height, account_id, job_id, kind, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
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

    /// Deletes a job's media of one kind (a retried job's partial outputs).
    pub async fn delete_job_media(&self, job_id: &str, kind: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM media WHERE job_id = $1 AND kind = $2")
                .bind(job_id)
                .bind(kind)
                .execute(p)
                .await?;
        });
        Ok(())
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

    /// An account's saved parameters for a tool (empty when none).
    pub async fn tool_settings(
        &self,
        account_id: &str,
        tool_id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        let row: Option<(String,)> = with_pool!(self, p => {
            sqlx::query_as("SELECT params FROM tool_settings WHERE account_id = $1 AND tool_id = $2")
                .bind(account_id)
                .bind(tool_id)
                .fetch_optional(p)
                .await?
        });
        match row {
            None => Ok(Default::default()),
            Some((s,)) => serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("tool_settings: {e}"))),
        }
    }

    /// Replaces an account's saved parameters for a tool.
    pub async fn save_tool_settings(
        &self,
        account_id: &str,
        tool_id: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        now: i64,
    ) -> Result<(), StoreError> {
        let text = serde_json::Value::Object(params.clone()).to_string();
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO tool_settings (account_id, tool_id, params, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account_id, tool_id) DO UPDATE SET params = excluded.params, updated_at = excluded.updated_at",
            )
            .bind(account_id).bind(tool_id).bind(text).bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Backends added at run time.
    pub async fn list_backends(&self) -> Result<Vec<BackendRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as("SELECT name, url, max_concurrent, tags, created_at FROM backends ORDER BY name")
                .fetch_all(p)
                .await?)
        })
    }

    /// Adds or replaces a run-time backend.
    pub async fn upsert_backend(&self, b: &BackendRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO backends (name, url, max_concurrent, tags, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET url = excluded.url, max_concurrent = excluded.max_concurrent, tags = excluded.tags",
            )
            .bind(&b.name).bind(&b.url).bind(b.max_concurrent).bind(&b.tags).bind(b.created_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Removes a run-time backend; true if it existed.
    pub async fn remove_backend(&self, name: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("DELETE FROM backends WHERE name = $1").bind(name).execute(p).await?;
            Ok(r.rows_affected() == 1)
        })
    }
}
