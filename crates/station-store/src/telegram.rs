//! Telegram's durable inbox (updates persisted before they are acknowledged),
//! the cache of uploaded file ids and small per-bot facts.

use crate::db::{Store, StoreError, with_pool};

/// One stored Telegram update.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct TelegramUpdateRow {
    /// The bot (its numeric id from the token).
    pub bot_id: String,
    /// Telegram's update id.
    pub update_id: i64,
    /// Ordering key: updates with the same key are processed in order.
    pub chat_key: String,
    /// The update as JSON text.
    pub payload: String,
    /// `pending`, `processing`, `done` or `failed`.
    pub state: String,
    /// Times processing started.
    pub attempts: i32,
    /// When it was stored.
    pub received_at: i64,
}

const COLUMNS: &str = "bot_id, update_id, chat_key, payload, state, attempts, received_at";

impl Store {
    /// Stores an update unless it is already stored. Returns whether it was new.
    pub async fn insert_telegram_update(
        &self,
        bot_id: &str,
        update_id: i64,
        chat_key: &str,
        payload: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO telegram_updates (bot_id, update_id, chat_key, payload, state, attempts, received_at) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5) ON CONFLICT (bot_id, update_id) DO NOTHING",
            )
            .bind(bot_id).bind(update_id).bind(chat_key).bind(payload).bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// The highest update id stored for a bot (the next `getUpdates` offset is one more).
    pub async fn max_telegram_update_id(&self, bot_id: &str) -> Result<Option<i64>, StoreError> {
        with_pool!(self, p => {
            let r: (Option<i64>,) = sqlx::query_as("SELECT MAX(update_id) FROM telegram_updates WHERE bot_id = $1")
                .bind(bot_id)
                .fetch_one(p)
                .await?;
            Ok(r.0)
        })
    }

    /// Pending updates, oldest first.
    pub async fn pending_telegram_updates(
        &self,
        bot_id: &str,
        limit: i64,
    ) -> Result<Vec<TelegramUpdateRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM telegram_updates WHERE bot_id = $1 AND state = 'pending' ORDER BY update_id LIMIT $2"
        );
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&sql)).bind(bot_id).bind(limit).fetch_all(p).await?)
        })
    }

    /// The oldest unfinished update of one chat (pending or processing).
    pub async fn next_telegram_update(
        &self,
        bot_id: &str,
        chat_key: &str,
    ) -> Result<Option<TelegramUpdateRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM telegram_updates WHERE bot_id = $1 AND chat_key = $2 \
             AND state IN ('pending', 'processing') ORDER BY update_id LIMIT 1"
        );
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&sql)).bind(bot_id).bind(chat_key).fetch_optional(p).await?)
        })
    }

    /// Marks a pending update as being processed by `owner`. False when
    /// someone else already took it.
    pub async fn claim_telegram_update(&self, bot_id: &str, update_id: i64, owner: &str) -> Result<bool, StoreError> {
        let done = with_pool!(self, p => {
            sqlx::query(
                "UPDATE telegram_updates SET state = 'processing', claimed_by = $3, attempts = attempts + 1 \
                 WHERE bot_id = $1 AND update_id = $2 AND state = 'pending'",
            )
            .bind(bot_id).bind(update_id).bind(owner)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Records the end of processing: `done`, or `failed` with the reason.
    pub async fn finish_telegram_update(
        &self,
        bot_id: &str,
        update_id: i64,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let state = if error.is_some() { "failed" } else { "done" };
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE telegram_updates SET state = $3, error = $4, done_at = $5 WHERE bot_id = $1 AND update_id = $2",
            )
            .bind(bot_id).bind(update_id).bind(state).bind(error).bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Puts updates a stopped process left `processing` back to `pending`
    /// (called at start, before processing begins). Returns how many.
    pub async fn requeue_telegram_updates(&self, bot_id: &str) -> Result<u64, StoreError> {
        let done = with_pool!(self, p => {
            sqlx::query("UPDATE telegram_updates SET state = 'pending' WHERE bot_id = $1 AND state = 'processing'")
                .bind(bot_id)
                .execute(p)
                .await?
            .rows_affected()
        });
        Ok(done)
    }

    /// Every stored update of a bot, oldest first (tests and diagnostics).
    pub async fn telegram_updates(&self, bot_id: &str) -> Result<Vec<TelegramUpdateRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM telegram_updates WHERE bot_id = $1 ORDER BY update_id");
        with_pool!(self, p => { Ok(sqlx::query_as(crate::db::safe(&sql)).bind(bot_id).fetch_all(p).await?) })
    }

    /// Deletes finished updates older than `before` (keeps the newest one, which
    /// carries the offset). Returns how many.
    pub async fn prune_telegram_updates(&self, bot_id: &str, before: i64) -> Result<u64, StoreError> {
        let done = with_pool!(self, p => {
            sqlx::query(
                "DELETE FROM telegram_updates WHERE bot_id = $1 AND state IN ('done', 'failed') AND received_at < $2 \
                 AND update_id < (SELECT MAX(update_id) FROM telegram_updates WHERE bot_id = $1)",
            )
            .bind(bot_id).bind(before)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done)
    }

    /// The Telegram file id of a media item uploaded before as `kind`.
    pub async fn telegram_file_id(
        &self,
        bot_id: &str,
        media_id: &str,
        kind: &str,
    ) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            let r: Option<(String,)> = sqlx::query_as(
                "SELECT file_id FROM telegram_files WHERE bot_id = $1 AND media_id = $2 AND kind = $3",
            )
            .bind(bot_id).bind(media_id).bind(kind)
            .fetch_optional(p)
            .await?;
            Ok(r.map(|r| r.0))
        })
    }

    /// Remembers the Telegram file id of an uploaded media item.
    pub async fn save_telegram_file_id(
        &self,
        bot_id: &str,
        media_id: &str,
        kind: &str,
        file_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO telegram_files (bot_id, media_id, kind, file_id, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (bot_id, media_id, kind) DO UPDATE SET file_id = excluded.file_id",
            )
            .bind(bot_id).bind(media_id).bind(kind).bind(file_id).bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// A per-bot fact.
    pub async fn telegram_meta(&self, bot_id: &str, key: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            let r: Option<(String,)> =
                sqlx::query_as("SELECT value FROM telegram_meta WHERE bot_id = $1 AND key = $2")
                    .bind(bot_id).bind(key)
                    .fetch_optional(p)
                    .await?;
            Ok(r.map(|r| r.0))
        })
    }

    /// Deletes per-bot facts whose key starts with `prefix` and that were
    /// last set before `before`. Returns how many.
    pub async fn prune_telegram_meta(&self, bot_id: &str, prefix: &str, before: i64) -> Result<u64, StoreError> {
        // A plain prefix comparison, not LIKE: `_` and `%` mean themselves.
        let done = with_pool!(self, p => {
            sqlx::query(
                "DELETE FROM telegram_meta WHERE bot_id = $1 AND substr(key, 1, length($2)) = $2 AND updated_at < $3",
            )
            .bind(bot_id).bind(prefix).bind(before)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done)
    }

    /// Sets a per-bot fact.
    pub async fn set_telegram_meta(&self, bot_id: &str, key: &str, value: &str, now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO telegram_meta (bot_id, key, value, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (bot_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(bot_id).bind(key).bind(value).bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }
}
