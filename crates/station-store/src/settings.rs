//! Per-account saved parameters for each tool.

use crate::db::{Store, StoreError, with_pool};

impl Store {
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
}
