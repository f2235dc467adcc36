//! Per-group tool switches: the operators of a group (a chat group or a
//! server, scoped like `discord-guild:<id>`) turn tools on or off there. A
//! tool without a row follows the default (enabled).

use crate::db::BeginWrite as _;
use crate::db::{Store, StoreError, with_pool};

/// One tool switch of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupToolRow {
    /// The tool's id.
    pub tool_id: String,
    /// Whether the tool may be used in the group.
    pub enabled: bool,
    /// The account that set it.
    pub updated_by: String,
    /// When it was set.
    pub updated_at: i64,
}

impl Store {
    /// A group's tool switches, by tool id: one for every tool someone
    /// changed there; tools without one are enabled.
    pub async fn group_tools(&self, scope: &str) -> Result<Vec<GroupToolRow>, StoreError> {
        let rows: Vec<(String, i64, String, i64)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT tool_id, enabled, updated_by, updated_at FROM group_tools WHERE scope = $1 ORDER BY tool_id",
            )
            .bind(scope)
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(tool_id, enabled, updated_by, updated_at)| GroupToolRow {
                tool_id,
                enabled: enabled != 0,
                updated_by,
                updated_at,
            })
            .collect())
    }

    /// Switches a tool on or off in a group (`by`: the account that did it).
    pub async fn set_group_tool(
        &self,
        scope: &str,
        tool_id: &str,
        enabled: bool,
        by: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.set_group_tool_keyed(scope, tool_id, enabled, by, None, now).await.map(|_| ())
    }

    /// [`Store::set_group_tool`] on behalf of a named input (a chat
    /// platform's interaction): the key is recorded in the flows' input keys
    /// in the same transaction. Returns false, changing nothing, when the key
    /// was recorded before (a replayed input).
    pub async fn set_group_tool_keyed(
        &self,
        scope: &str,
        tool_id: &str,
        enabled: bool,
        by: &str,
        input_key: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if let Some(key) = input_key {
                let fresh = sqlx::query(
                    "INSERT INTO flow_inputs (input_key, created_at) VALUES ($1, $2) ON CONFLICT (input_key) DO NOTHING",
                )
                .bind(key)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !fresh {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
            sqlx::query(
                "INSERT INTO group_tools (scope, tool_id, enabled, updated_by, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, tool_id) DO UPDATE SET \
                 enabled = excluded.enabled, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )
            .bind(scope).bind(tool_id).bind(i64::from(enabled)).bind(by).bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
