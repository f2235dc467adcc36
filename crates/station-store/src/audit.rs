//! The audit log: one append-only row per administrative action. The
//! database itself refuses updates and deletes (triggers in migration 0018).

use serde::Serialize;

use crate::db::{Store, StoreError, with_pool};

/// An administrative action to record.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    /// Who did it: `operator:<name>` (the command line) or `account:<id>`.
    pub actor: &'a str,
    /// Through which door: `cli`, `api`, `web`, or a chat platform's name.
    pub via: &'a str,
    /// What was done, a dotted name such as `points.grant`.
    pub action: &'a str,
    /// To what: an account id, a tool id, a backend name, a LoRA slug.
    pub target: &'a str,
    /// The particulars, as a sentence (amounts, reasons, old and new values).
    pub detail: &'a str,
}

/// One recorded administrative action.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct AuditRow {
    /// Increasing with time; the paging cursor.
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// Who did it.
    pub actor: String,
    /// Through which door.
    pub via: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// The particulars.
    pub detail: String,
}

/// Which audit rows to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only rows at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only rows by this actor.
    pub actor: Option<String>,
    /// Only this action, or actions under this prefix when it ends in `.`.
    pub action: Option<String>,
    /// Only rows about this target.
    pub target: Option<String>,
    /// Only rows older than this id (the next page).
    pub before_id: Option<i64>,
    /// At most this many rows.
    pub limit: i64,
}

impl Store {
    /// Appends one row to the audit log.
    pub async fn append_audit(&self, e: &NewAuditEntry<'_>, now: i64) -> Result<i64, StoreError> {
        with_pool!(self, p => {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO audit_log (at, actor, via, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(now).bind(e.actor).bind(e.via).bind(e.action).bind(e.target).bind(e.detail)
            .fetch_one(p)
            .await?;
            Ok(id)
        })
    }

    /// Audit rows matching `f`, newest first.
    pub async fn audit_log(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        // Every condition is always present and switched off by a NULL, so
        // the statement is one prepared text for both databases.
        let (action_exact, action_prefix) = match f.action.as_deref() {
            Some(a) if a.ends_with('.') => (None, Some(format!("{}%", a.replace(['%', '_'], "")))),
            Some(a) => (Some(a.to_string()), None),
            None => (None, None),
        };
        let sql = "SELECT id, at, actor, via, action, target, detail FROM audit_log \
                   WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR actor = $2) \
                   AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR action LIKE $4) \
                   AND ($5 IS NULL OR target = $5) AND ($6 IS NULL OR id < $6) \
                   ORDER BY id DESC LIMIT $7";
        with_pool!(self, p => {
            Ok(sqlx::query_as(sql)
                .bind(f.since)
                .bind(f.actor.as_deref())
                .bind(action_exact.as_deref())
                .bind(action_prefix.as_deref())
                .bind(f.target.as_deref())
                .bind(f.before_id)
                .bind(f.limit.clamp(1, 1000))
                .fetch_all(p)
                .await?)
        })
    }
}
