//! The audit log of administrative actions: who did what to what, when and
//! through which door. Every core method that makes such a change takes an
//! [`Actor`] and appends the row itself once the change has committed, so no
//! front end can forget it; the rows can be read, never changed (the
//! database refuses updates and deletes).

use station_store::{AuditFilter, AuditRow, NewAuditEntry, StoreError, now_ms};

use crate::AccountRow;
use crate::Station;

/// The door an administrative action came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The `station` command line on the server.
    Cli,
    /// The REST API (an API key or a web session's request).
    Api,
    /// A chat platform (`telegram`, `discord`, `terminal`).
    Chat(String),
}

impl Via {
    /// The stored name: `cli`, `api`, or the platform's name.
    pub fn as_str(&self) -> &str {
        match self {
            Via::Cli => "cli",
            Via::Api => "api",
            Via::Chat(p) => p,
        }
    }
}

/// Who makes an administrative change, and through which door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `operator:<name>` for the command line, `account:<id>` for an account;
    /// also the ledger's `actor` of points the action moves.
    pub who: String,
    /// The door.
    pub via: Via,
}

impl Actor {
    /// An operator at the server's command line (`name`: the login name, or
    /// what `--actor` says).
    pub fn operator(name: &str) -> Actor {
        Actor { who: crate::points::operator_actor(name), via: Via::Cli }
    }

    /// An account acting through `via`.
    pub fn account(account: &AccountRow, via: Via) -> Actor {
        Actor { who: format!("account:{}", account.id), via }
    }
}

/// One audited action, as front ends show it.
pub type AuditEntry = AuditRow;

/// Which audited actions to read; [`Station::audit_log`] pages newest first.
pub type AuditQuery = AuditFilter;

impl Station {
    /// Appends the audit row of an action that has just been made. A failure
    /// to write it is logged, not returned: the action itself is done and
    /// committed, and the caller must learn that it was.
    pub(crate) async fn audit(&self, by: &Actor, action: &str, target: &str, detail: impl AsRef<str>) {
        let entry = NewAuditEntry { actor: &by.who, via: by.via.as_str(), action, target, detail: detail.as_ref() };
        if let Err(e) = self.store.append_audit(&entry, now_ms()).await {
            tracing::error!(action, target, actor = %by.who, error = %e, "could not record an administrative action in the audit log");
        }
    }

    /// Audited actions matching `query`, newest first (at most 1000).
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.audit_log(query).await
    }
}

/// A time as `2026-12-07 11:30 UTC`.
pub fn utc_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A person's reading of an action name (`points.grant` → "granted points").
pub fn describe_action(action: &str) -> &str {
    match action {
        "points.grant" => "granted points",
        "points.adjust" => "adjusted points",
        "account.suspend" => "suspended an account",
        "account.reinstate" => "reinstated an account",
        "account.role" => "changed a role",
        "tool.group" => "switched a tool in a group",
        "sponsor.set" => "set a sponsor",
        "sponsor.remove" => "removed a sponsor",
        "backend.add" => "added a backend",
        "backend.remove" => "removed a backend",
        "lora.add" => "added a LoRA",
        "lora.edit" => "edited a LoRA",
        "lora.remove" => "removed a LoRA",
        "lora.grant" => "granted a LoRA",
        "lora.revoke" => "revoked a LoRA",
        "lora.import" => "imported the LoRA catalog",
        "lora.publish" => "made a LoRA public",
        "lora.publish.request" => "asked to make a LoRA public",
        "lora.publish.approve" => "approved making a LoRA public",
        "lora.publish.refuse" => "refused making a LoRA public",
        "model.set" => "changed a model's catalog entry",
        "flag.set" => "set a feature flag",
        "flag.unset" => "removed a feature flag",
        "wallets.rescan" => "rescanned a chain for deposits",
        other => other,
    }
}
