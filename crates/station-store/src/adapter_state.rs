//! Small key–value facts a front end keeps per scope (e.g. `telegram:<bot>`):
//! caches such as the platform's id of a file already uploaded, and facts
//! such as the command menu last set. Values are text; the store does not
//! read them.

use crate::db::{Store, StoreError, with_pool};

impl Store {
    /// The value of `key` in `scope`, if set.
    pub async fn adapter_state(&self, scope: &str, key: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            let r: Option<(String,)> = sqlx::query_as("SELECT value FROM adapter_state WHERE scope = $1 AND key = $2")
                .bind(scope).bind(key)
                .fetch_optional(p)
                .await?;
            Ok(r.map(|r| r.0))
        })
    }

    /// Sets `key` in `scope` (replacing any value) and records when.
    pub async fn set_adapter_state(&self, scope: &str, key: &str, value: &str, now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO adapter_state (scope, key, value, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(scope).bind(key).bind(value).bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Deletes the keys of `scope` that start with `prefix` and were last
    /// set before `before`. Returns how many.
    pub async fn prune_adapter_state(&self, scope: &str, prefix: &str, before: i64) -> Result<u64, StoreError> {
        // A plain prefix comparison, not LIKE: `_` and `%` mean themselves.
        let done = with_pool!(self, p => {
            sqlx::query(
                "DELETE FROM adapter_state WHERE scope = $1 AND substr(key, 1, length($2)) = $2 AND updated_at < $3",
            )
            .bind(scope).bind(prefix).bind(before)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done)
    }
}
