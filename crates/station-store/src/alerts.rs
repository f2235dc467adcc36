//! Alerts as stored: the evaluator's state per rule and subject, the
//! messages owed to sinks (durable, retried like webhook deliveries), the
//! named process leases that keep one evaluator at a time, and the two
//! measurements only SQL can make (queue age per service, failures per
//! service over a window). The core decides what a rule means.

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::db::{Store, StoreError, safe, with_pool};

/// The evaluator's record of one rule and subject.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct AlertStateRow {
    /// The rule's name.
    pub rule: String,
    /// What it is about (a backend, a service, a chain; empty for the whole).
    pub subject: String,
    /// `pending` (holds, not long enough yet), `firing` or `resolved`.
    pub state: String,
    /// Since when the condition holds (Unix ms).
    pub since: i64,
    /// When the firing was announced.
    pub fired_at: Option<i64>,
    /// When it stopped.
    pub resolved_at: Option<i64>,
    /// When a reminder was last written.
    pub reminded_at: Option<i64>,
    /// The measured value, as words.
    pub value: String,
    /// Last change.
    pub updated_at: i64,
}

/// One message to one sink.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct AlertMessageRow {
    /// Id.
    pub id: String,
    /// `<rule>/<subject>/<kind>/<time>`: the same announcement to every sink.
    pub event_id: String,
    /// The rule.
    pub rule: String,
    /// The subject.
    pub subject: String,
    /// `firing`, `resolved`, `reminder` or `test`.
    pub kind: String,
    /// The sink's name.
    pub sink: String,
    /// The sink's kind (`webhook`, or a kind a front end registered).
    pub sink_kind: String,
    /// Chat, channel or URL.
    pub target: String,
    /// The message for a person.
    pub text: String,
    /// The JSON body (webhooks).
    pub body: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// Not sent before (Unix ms).
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When written.
    pub created_at: i64,
    /// When delivered.
    pub delivered_at: Option<i64>,
}

/// Failures of one service over a window ([`Store::failures_by_service`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ServiceFailures {
    /// The service.
    pub service: String,
    /// Jobs that ended succeeded or failed.
    pub ended: i64,
    /// Of which failed.
    pub failed: i64,
}

const STATE_COLUMNS: &str = "rule, subject, state, since, fired_at, resolved_at, reminded_at, value, updated_at";
const MESSAGE_COLUMNS: &str = "id, event_id, rule, subject, kind, sink, sink_kind, target, text, body, state, \
     attempts, next_attempt_at, last_error, created_at, delivered_at";

/// Inserts one message (nothing when its event was enqueued for that sink before).
macro_rules! insert_message {
    ($m:expr, $exec:expr) => {
        sqlx::query(
            "INSERT INTO alert_messages (id, event_id, rule, subject, kind, sink, sink_kind, target, text, body, \
             state, attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             'pending', 0, $11, $11) ON CONFLICT (event_id, sink) DO NOTHING",
        )
        .bind(&$m.id)
        .bind(&$m.event_id)
        .bind(&$m.rule)
        .bind(&$m.subject)
        .bind(&$m.kind)
        .bind(&$m.sink)
        .bind(&$m.sink_kind)
        .bind(&$m.target)
        .bind(&$m.text)
        .bind(&$m.body)
        .bind($m.created_at)
        .execute($exec)
        .await?;
    };
}

impl Store {
    /// Takes or renews the lease `name` for `owner` until `now + ttl_ms`;
    /// true when `owner` holds it (it held it, or it was free or expired).
    pub async fn hold_lease(&self, name: &str, owner: &str, now: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "INSERT INTO process_leases (name, owner, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE process_leases.owner = excluded.owner OR process_leases.expires_at < $4",
            )
            .bind(name)
            .bind(owner)
            .bind(now + ttl_ms)
            .bind(now)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Gives the lease `name` up if `owner` holds it.
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM process_leases WHERE name = $1 AND owner = $2")
                .bind(name)
                .bind(owner)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Every alert state, by rule and subject.
    pub async fn alert_states(&self) -> Result<Vec<AlertStateRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {STATE_COLUMNS} FROM alert_states ORDER BY rule, subject"
            )))
            .fetch_all(p)
            .await?)
        })
    }

    /// Moves one rule and subject from `expected` (its state now, or None
    /// when it has no row) to `next` (None deletes the row), and enqueues
    /// `messages` in the same transaction. Nothing is written when the
    /// state is no longer `expected` (another evaluator moved it); false then.
    pub async fn alert_transition(
        &self,
        rule: &str,
        subject: &str,
        expected: Option<&AlertStateRow>,
        next: Option<&AlertStateRow>,
        messages: &[AlertMessageRow],
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let applied = match expected {
                None => {
                    match next {
                        Some(n) => sqlx::query(
                            "INSERT INTO alert_states (rule, subject, state, since, fired_at, resolved_at, \
                             reminded_at, value, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                             ON CONFLICT (rule, subject) DO NOTHING",
                        )
                        .bind(&n.rule).bind(&n.subject).bind(&n.state).bind(n.since).bind(n.fired_at)
                        .bind(n.resolved_at).bind(n.reminded_at).bind(&n.value).bind(n.updated_at)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected() == 1,
                        None => true,
                    }
                }
                Some(e) => match next {
                    Some(n) => sqlx::query(
                        "UPDATE alert_states SET state = $1, since = $2, fired_at = $3, resolved_at = $4, \
                         reminded_at = $5, value = $6, updated_at = $7 \
                         WHERE rule = $8 AND subject = $9 AND state = $10 AND updated_at = $11",
                    )
                    .bind(&n.state).bind(n.since).bind(n.fired_at).bind(n.resolved_at).bind(n.reminded_at)
                    .bind(&n.value).bind(n.updated_at).bind(rule).bind(subject).bind(&e.state).bind(e.updated_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() == 1,
                    None => sqlx::query(
                        "DELETE FROM alert_states WHERE rule = $1 AND subject = $2 AND state = $3 AND updated_at = $4",
                    )
                    .bind(rule).bind(subject).bind(&e.state).bind(e.updated_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() == 1,
                },
            };
            if !applied {
                return Ok(false);
            }
            for m in messages {
                insert_message!(m, &mut *tx);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Enqueues messages outside any transition (test messages); each at
    /// most once per event and sink.
    pub async fn insert_alert_messages(&self, messages: &[AlertMessageRow]) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for m in messages {
                insert_message!(m, &mut *tx);
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Claims up to `limit` due messages of sink kind `sink_kind`: each gets
    /// its attempt counted and `next_attempt_at` moved `lease_ms` on, so a
    /// process that dies while sending leaves it to be sent again then.
    pub async fn claim_alert_messages(
        &self,
        sink_kind: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<AlertMessageRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "UPDATE alert_messages SET attempts = attempts + 1, next_attempt_at = $2 \
                 WHERE id IN (SELECT id FROM alert_messages WHERE state = 'pending' AND sink_kind = $4 \
                   AND next_attempt_at <= $1 ORDER BY next_attempt_at, created_at LIMIT $3) \
                 AND state = 'pending' AND next_attempt_at <= $1 \
                 RETURNING {MESSAGE_COLUMNS}"
            )))
            .bind(now)
            .bind(now + lease_ms)
            .bind(limit)
            .bind(sink_kind)
            .fetch_all(p)
            .await?)
        })
    }

    /// Records attempt `attempt` of a message: `state` `pending` (retry at
    /// `next_attempt_at`), `delivered` or `failed`. Ignored when a later
    /// claim took the message over.
    pub async fn record_alert_message(
        &self,
        id: &str,
        attempt: i64,
        state: &str,
        error: Option<&str>,
        next_attempt_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE alert_messages SET state = $1, last_error = $2, next_attempt_at = $3, \
                 delivered_at = CASE WHEN $1 = 'delivered' THEN $4 ELSE delivered_at END \
                 WHERE id = $5 AND attempts = $6 AND state = 'pending'",
            )
            .bind(state)
            .bind(error)
            .bind(next_attempt_at)
            .bind(now)
            .bind(id)
            .bind(attempt)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Messages of one event (every sink), by sink.
    pub async fn alert_messages_of(&self, event_id: &str) -> Result<Vec<AlertMessageRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM alert_messages WHERE event_id = $1 ORDER BY sink"
            )))
            .bind(event_id)
            .fetch_all(p)
            .await?)
        })
    }

    /// The newest messages, newest first.
    pub async fn recent_alert_messages(&self, limit: i64) -> Result<Vec<AlertMessageRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM alert_messages ORDER BY created_at DESC, id DESC LIMIT $1"
            )))
            .bind(limit.clamp(1, 1000))
            .fetch_all(p)
            .await?)
        })
    }

    /// Per service: the oldest job waiting for a worker (parked steps of a
    /// cast, which wait for their previous step, do not count).
    pub async fn oldest_queued_by_service(&self) -> Result<Vec<(String, i64)>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT service, MIN(created_at) FROM jobs WHERE status = 'queued' AND run_after < $1 \
                 GROUP BY service ORDER BY service",
            )
            .bind(crate::spells::PARKED)
            .fetch_all(p)
            .await?)
        })
    }

    /// Per service: jobs that ended succeeded or failed since `since`, and
    /// how many of them failed (cancelled jobs count neither way).
    pub async fn failures_by_service(&self, since: i64) -> Result<Vec<ServiceFailures>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT service, COUNT(*) AS ended, \
                 CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed FROM jobs \
                 WHERE finished_at >= $1 AND status IN ('succeeded', 'failed') GROUP BY service ORDER BY service",
            )
            .bind(since)
            .fetch_all(p)
            .await?)
        })
    }
}
