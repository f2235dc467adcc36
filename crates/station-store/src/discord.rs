//! Discord server (guild) settings: which tools a server has switched off.

use crate::db::{Store, StoreError, with_pool};

impl Store {
    /// A server's tool switches: `(tool_id, enabled)` for every tool an admin
    /// changed; tools without a row are enabled.
    pub async fn discord_guild_tools(&self, guild_id: &str) -> Result<Vec<(String, bool)>, StoreError> {
        let rows: Vec<(String, i64)> = with_pool!(self, p => {
            sqlx::query_as("SELECT tool_id, enabled FROM discord_guild_tools WHERE guild_id = $1 ORDER BY tool_id")
                .bind(guild_id)
                .fetch_all(p)
                .await?
        });
        Ok(rows.into_iter().map(|(t, e)| (t, e != 0)).collect())
    }

    /// Switches a tool on or off in a server (`by`: the account that did it).
    pub async fn set_discord_guild_tool(
        &self,
        guild_id: &str,
        tool_id: &str,
        enabled: bool,
        by: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO discord_guild_tools (guild_id, tool_id, enabled, updated_by, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (guild_id, tool_id) DO UPDATE SET \
                 enabled = excluded.enabled, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )
            .bind(guild_id).bind(tool_id).bind(i64::from(enabled)).bind(by).bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }
}
