//! Per-group tool switches: the operators of a group (a chat group, a
//! server) turn tools off or on again there. Groups are named by their
//! scope, as conversations name their group (e.g. `discord-guild:<id>`).
//! A tool nobody switched is enabled.

pub use station_store::GroupToolRow;
use station_store::{StoreError, now_ms};

use crate::Station;
use crate::audit::Actor;

impl Station {
    /// A group's tool switches, by tool id: one for every tool someone
    /// switched there; tools without one are enabled.
    pub async fn group_tools(&self, scope: &str) -> Result<Vec<GroupToolRow>, StoreError> {
        self.store.group_tools(scope).await
    }

    /// Whether `tool_id` may be used in the group: true unless it was switched off there.
    pub async fn group_tool_enabled(&self, scope: &str, tool_id: &str) -> Result<bool, StoreError> {
        Ok(!self.group_tools(scope).await?.iter().any(|t| t.tool_id == tool_id && !t.enabled))
    }

    /// Switches a tool on or off in a group. Audited (`tool.group`).
    pub async fn set_group_tool(
        &self,
        scope: &str,
        tool_id: &str,
        enabled: bool,
        by: &Actor,
    ) -> Result<(), StoreError> {
        self.store.set_group_tool(scope, tool_id, enabled, &by.who, now_ms()).await?;
        self.audit_group_tool(scope, tool_id, enabled, by).await;
        Ok(())
    }

    async fn audit_group_tool(&self, scope: &str, tool_id: &str, enabled: bool, by: &Actor) {
        let detail = format!("{tool_id} turned {} in {scope}", if enabled { "on" } else { "off" });
        self.audit(by, "tool.group", tool_id, detail).await;
    }

    /// [`Station::set_group_tool`] once per input key, like every chat input
    /// (the key joins the flows' input keys in the same transaction): an
    /// input replayed later (a re-sent interaction) changes nothing and
    /// returns false.
    pub async fn set_group_tool_once(
        &self,
        input_key: &str,
        scope: &str,
        tool_id: &str,
        enabled: bool,
        by: &Actor,
    ) -> Result<bool, StoreError> {
        let fresh =
            self.store.set_group_tool_keyed(scope, tool_id, enabled, &by.who, Some(input_key), now_ms()).await?;
        if fresh {
            self.audit_group_tool(scope, tool_id, enabled, by).await;
        }
        Ok(fresh)
    }
}
