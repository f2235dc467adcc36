//! Conversations: flow instances, action records, the delivery outbox and
//! per-job marks (rating, hidden).
//!
//! A flow transition (new state, the buttons it minted, the messages it
//! sends) is one transaction, fenced by the instance's revision so two
//! inputs racing for one instance can never both apply.

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::db::{Store, StoreError, with_pool};
use crate::jobs::{JOB_COLUMNS, JobRow};

/// One conversation flow instance.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct FlowInstanceRow {
    /// Instance id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// `platform:chat`.
    pub conversation: String,
    /// The conversation as JSON (platform, chat, group).
    pub conv_json: String,
    /// Flow name.
    pub flow: String,
    /// Version of the flow that wrote the state.
    pub flow_version: i64,
    /// Current step.
    pub step: String,
    /// Current state (JSON).
    pub state: String,
    /// Earlier `(step, state)` frames (JSON array), newest last.
    pub history: String,
    /// Bumped by every transition.
    pub rev: i64,
    /// `active`, `finished`, `cancelled`, `expired`, `replaced`.
    pub status: String,
    /// Created.
    pub created_at: i64,
    /// Last input.
    pub updated_at: i64,
}

/// A button's server-side record.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ActionRow {
    /// The opaque token in the platform's callback data.
    pub token: String,
    /// Only this account may press it.
    pub account_id: String,
    /// The flow instance it belongs to (none: a standalone action such as a
    /// result's rerun button).
    pub instance_id: Option<String>,
    /// The instance revision that showed it.
    pub rev: Option<i64>,
    /// Action name.
    pub name: String,
    /// Arguments (JSON).
    pub args: String,
    /// Minted.
    pub created_at: i64,
}

/// One message to send (or edit), written before it is sent.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct DeliveryRow {
    /// Delivery id (UUIDv7: time-ordered, so id order is send order).
    pub id: String,
    /// `platform:chat`.
    pub conversation: String,
    /// The conversation as JSON.
    pub conv_json: String,
    /// Platform name.
    pub platform: String,
    /// Recipient account.
    pub account_id: String,
    /// `message`, `progress`, `result`, `notice`.
    pub kind: String,
    /// `progress:<job>`, `result:<job>`…: at most one row per key.
    pub dedupe_key: Option<String>,
    /// The view (JSON).
    pub view: String,
    /// Bumped whenever the view changes (progress updates).
    pub version: i64,
    /// Platform message to edit instead of sending a new one.
    pub replace_ref: Option<String>,
    /// Platform message this delivery produced.
    pub message_ref: Option<String>,
    /// `pending`, `sending`, `sent`, `failed`.
    pub status: String,
    /// Send attempts.
    pub attempts: i64,
    /// Not before this time (retry backoff, progress throttling).
    pub next_attempt_at: i64,
    /// Process sending it.
    pub lease_owner: Option<String>,
    /// Lease end.
    pub lease_until: Option<i64>,
    /// Last error.
    pub error: Option<String>,
    /// Written.
    pub created_at: i64,
    /// Last sent.
    pub sent_at: Option<i64>,
}

/// A delivery to write.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Id (UUIDv7).
    pub id: String,
    /// `platform:chat`.
    pub conversation: String,
    /// Conversation JSON.
    pub conv_json: String,
    /// Platform.
    pub platform: String,
    /// Recipient.
    pub account_id: String,
    /// Kind name.
    pub kind: String,
    /// Unique key; a second write with the same key updates the view
    /// (`upsert`) or is ignored (`insert_once`).
    pub dedupe_key: Option<String>,
    /// View JSON.
    pub view: String,
    /// Message to edit.
    pub replace_ref: Option<String>,
}

/// How a send attempt ended, as recorded.
#[derive(Debug, Clone)]
pub enum DeliveryResult {
    /// Sent; next edit not before `next_at` (throttling).
    Sent {
        /// Platform message reference.
        message_ref: Option<String>,
        /// Earliest next send of this row.
        next_at: i64,
    },
    /// Try again at `at`.
    Retry {
        /// When.
        at: i64,
        /// Why.
        error: String,
    },
    /// Never: marks this and every pending delivery of the conversation failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// How one claimed send ended, for [`Store::finish_deliveries`].
#[derive(Debug, Clone)]
pub struct DeliveryMark {
    /// The delivery.
    pub id: String,
    /// The process that claimed it (the mark applies only under its lease).
    pub owner: String,
    /// The view version that was sent.
    pub version_sent: i64,
    /// The outcome.
    pub result: DeliveryResult,
    /// Hold back the conversation's progress edits until this time first
    /// (a progress edit was sent): `(conversation, until)`.
    pub delay_progress: Option<(String, i64)>,
}

/// Holds back a conversation's progress edits that already went once.
const DELAY_PROGRESS: &str = "UPDATE deliveries SET next_attempt_at = CASE WHEN next_attempt_at < $2 THEN $2 ELSE next_attempt_at END \
     WHERE conversation = $1 AND kind = 'progress' AND status IN ('pending', 'sent') AND message_ref IS NOT NULL";

/// A state transition to store atomically.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The instance after the transition (its `rev` is the new revision).
    pub instance: FlowInstanceRow,
    /// The revision the caller read (`None`: a new instance).
    pub expected_rev: Option<i64>,
    /// Buttons minted for the views sent.
    pub actions: Vec<ActionRow>,
    /// Messages to send.
    pub deliveries: Vec<NewDelivery>,
    /// The input that caused it (see [`Store::input_handled`]); recorded in
    /// the same transaction, and a key recorded before makes the whole
    /// transition a no-op.
    pub input_key: Option<String>,
    /// Earlier step messages (cards) moved aside in the same transaction,
    /// before the deliveries are written.
    pub retire: Vec<CardRetire>,
}

/// A flow's step message (its card, a delivery under a stable key) moved
/// aside: renamed so the key is free for a new message, and shown with
/// `view` instead (its buttons gone) — an edit of the message when it was
/// sent already. With no `view` only the key moves (another delivery takes
/// the message over, or it never reached the chat).
#[derive(Debug, Clone)]
pub struct CardRetire {
    /// The card's key now.
    pub key: String,
    /// The key it keeps from now on.
    pub new_key: String,
    /// What it shows from now on (view JSON), if it changes.
    pub view: Option<String>,
}

/// Moves one card aside in a transaction (see [`CardRetire`]).
macro_rules! retire_card {
    ($tx:expr, $r:expr) => {{
        let r: &CardRetire = $r;
        match &r.view {
            Some(view) => {
                sqlx::query(
                    "UPDATE deliveries SET dedupe_key = $2, view = $3, version = version + 1, \
                 status = CASE WHEN status = 'sent' THEN 'pending' ELSE status END WHERE dedupe_key = $1",
                )
                .bind(&r.key)
                .bind(&r.new_key)
                .bind(view)
                .execute($tx)
                .await?
            }
            None => {
                sqlx::query("UPDATE deliveries SET dedupe_key = $2 WHERE dedupe_key = $1")
                    .bind(&r.key)
                    .bind(&r.new_key)
                    .execute($tx)
                    .await?
            }
        }
    }};
}

const INSTANCE_COLUMNS: &str = "id, account_id, conversation, conv_json, flow, flow_version, step, state, history, rev, \
                                status, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "id, conversation, conv_json, platform, account_id, kind, dedupe_key, view, version, \
                                replace_ref, message_ref, status, attempts, next_attempt_at, lease_owner, lease_until, \
                                error, created_at, sent_at";

/// Stores one minted action record (a button's token) in a transaction.
macro_rules! insert_action {
    ($tx:expr, $a:expr) => {{
        let a: &ActionRow = $a;
        sqlx::query(
            "INSERT INTO flow_actions (token, account_id, instance_id, rev, name, args, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.token)
        .bind(&a.account_id)
        .bind(&a.instance_id)
        .bind(a.rev)
        .bind(&a.name)
        .bind(&a.args)
        .bind(a.created_at)
        .execute($tx)
        .await?
    }};
}

/// Records an input key in a transaction; evaluates to false when it was
/// recorded before (the caller rolls back: that input already had its effect).
macro_rules! record_input {
    ($tx:expr, $key:expr, $now:expr) => {{
        match $key {
            None => true,
            Some(key) => sqlx::query(
                "INSERT INTO flow_inputs (input_key, created_at) VALUES ($1, $2) ON CONFLICT (input_key) DO NOTHING",
            )
            .bind(key)
            .bind($now)
            .execute($tx)
            .await?
            .rows_affected()
                == 1,
        }
    }};
}

macro_rules! insert_delivery {
    ($tx:expr, $d:expr, $now:expr, $on_conflict:expr) => {{
        let d: &NewDelivery = $d;
        sqlx::query(crate::db::safe(&format!(
            "INSERT INTO deliveries (id, conversation, conv_json, platform, account_id, kind, dedupe_key, view, \
             replace_ref, status, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $10) {}",
            $on_conflict
        )))
        .bind(&d.id)
        .bind(&d.conversation)
        .bind(&d.conv_json)
        .bind(&d.platform)
        .bind(&d.account_id)
        .bind(&d.kind)
        .bind(&d.dedupe_key)
        .bind(&d.view)
        .bind(&d.replace_ref)
        .bind($now)
        .execute($tx)
        .await?
    }};
}

/// Progress rows take the new view; a row already sent goes back to pending
/// (an edit), keeping its message reference and throttle time. A message to
/// replace given by the later write is kept (a job's progress written by
/// its events before the press that ran it named the card to take over).
const UPSERT_VIEW: &str = "ON CONFLICT (dedupe_key) DO UPDATE SET view = excluded.view, \
     version = deliveries.version + 1, \
     replace_ref = COALESCE(excluded.replace_ref, deliveries.replace_ref), \
     status = CASE WHEN deliveries.status = 'sent' THEN 'pending' ELSE deliveries.status END";

impl Store {
    /// The active flow instance of an account in a conversation.
    pub async fn active_flow(
        &self,
        conversation: &str,
        account_id: &str,
    ) -> Result<Option<FlowInstanceRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM flow_instances \
                 WHERE conversation = $1 AND account_id = $2 AND status = 'active' ORDER BY updated_at DESC LIMIT 1"
            )))
            .bind(conversation)
            .bind(account_id)
            .fetch_optional(p)
            .await?)
        })
    }

    /// One flow instance.
    pub async fn get_flow(&self, id: &str) -> Result<Option<FlowInstanceRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&format!("SELECT {INSTANCE_COLUMNS} FROM flow_instances WHERE id = $1")))
                .bind(id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// Stores a transition: the instance (inserted, or updated only if its
    /// revision is still `expected_rev`), its minted actions and its
    /// deliveries, in one transaction. A new instance replaces any other
    /// active instance of the same account in the same conversation.
    /// Returns `false` (writing nothing) when another input won the race, or
    /// when the transition's input key was recorded before.
    pub async fn save_transition(&self, t: &Transition, now: i64) -> Result<bool, StoreError> {
        let i = &t.instance;
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if !record_input!(&mut *tx, t.input_key.as_deref(), now) {
                tx.rollback().await?;
                return Ok(false);
            }
            match t.expected_rev {
                None => {
                    sqlx::query(
                        "UPDATE flow_instances SET status = 'replaced', updated_at = $3 \
                         WHERE conversation = $1 AND account_id = $2 AND status = 'active'",
                    )
                    .bind(&i.conversation).bind(&i.account_id).bind(now)
                    .execute(&mut *tx).await?;
                    sqlx::query(crate::db::safe(&format!(
                        "INSERT INTO flow_instances ({INSTANCE_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                    )))
                    .bind(&i.id).bind(&i.account_id).bind(&i.conversation).bind(&i.conv_json).bind(&i.flow)
                    .bind(i.flow_version).bind(&i.step).bind(&i.state).bind(&i.history).bind(i.rev)
                    .bind(&i.status).bind(i.created_at).bind(i.updated_at)
                    .execute(&mut *tx).await?;
                }
                Some(expected) => {
                    let done = sqlx::query(
                        "UPDATE flow_instances SET flow_version = $2, step = $3, state = $4, history = $5, rev = $6, \
                         status = $7, updated_at = $8 WHERE id = $1 AND rev = $9 AND status = 'active'",
                    )
                    .bind(&i.id).bind(i.flow_version).bind(&i.step).bind(&i.state).bind(&i.history).bind(i.rev)
                    .bind(&i.status).bind(i.updated_at).bind(expected)
                    .execute(&mut *tx).await?;
                    if done.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                }
            }
            for a in &t.actions {
                insert_action!(&mut *tx, a);
            }
            for r in &t.retire {
                retire_card!(&mut *tx, r);
            }
            for d in &t.deliveries {
                insert_delivery!(&mut *tx, d, now, UPSERT_VIEW);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Stores standalone actions and deliveries (job notifications), with no
    /// flow instance. Deliveries whose dedupe key exists already take the new
    /// view when `upsert`, and are skipped otherwise (results: never twice).
    pub async fn save_outbox(
        &self,
        actions: &[ActionRow],
        deliveries: &[NewDelivery],
        upsert: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        self.save_outbox_keyed(actions, deliveries, upsert, None, now).await.map(|_| ())
    }

    /// [`Store::save_outbox`] on behalf of an input: the key is recorded in
    /// the same transaction. Returns false, writing nothing, when it was
    /// recorded before.
    pub async fn save_outbox_keyed(
        &self,
        actions: &[ActionRow],
        deliveries: &[NewDelivery],
        upsert: bool,
        input_key: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let conflict = if upsert { UPSERT_VIEW } else { "ON CONFLICT (dedupe_key) DO NOTHING" };
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if !record_input!(&mut *tx, input_key, now) {
                tx.rollback().await?;
                return Ok(false);
            }
            for a in actions {
                insert_action!(&mut *tx, a);
            }
            for d in deliveries {
                insert_delivery!(&mut *tx, d, now, conflict);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Ends an instance (`finished`, `cancelled`, `expired`) if it is still at
    /// `rev`, with optional deliveries (the goodbye message). Returns whether it applied.
    pub async fn end_flow(
        &self,
        id: &str,
        rev: i64,
        status: &str,
        deliveries: &[NewDelivery],
        now: i64,
    ) -> Result<bool, StoreError> {
        self.end_flow_keyed(id, rev, status, deliveries, &[], None, now).await
    }

    /// [`Store::end_flow`] on behalf of an input, recording its key in the
    /// same transaction; false (nothing written) when it was recorded before.
    /// `retire` moves the flow's cards aside first ([`CardRetire`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn end_flow_keyed(
        &self,
        id: &str,
        rev: i64,
        status: &str,
        deliveries: &[NewDelivery],
        retire: &[CardRetire],
        input_key: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if !record_input!(&mut *tx, input_key, now) {
                tx.rollback().await?;
                return Ok(false);
            }
            let done = sqlx::query(
                "UPDATE flow_instances SET status = $2, rev = rev + 1, updated_at = $3 \
                 WHERE id = $1 AND rev = $4 AND status = 'active'",
            )
            .bind(id).bind(status).bind(now).bind(rev)
            .execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            for r in retire {
                retire_card!(&mut *tx, r);
            }
            for d in deliveries {
                insert_delivery!(&mut *tx, d, now, UPSERT_VIEW);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Whether an input with this key already had its effect (its transition
    /// or message was stored).
    pub async fn input_handled(&self, input_key: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r: Option<(i64,)> = sqlx::query_as("SELECT created_at FROM flow_inputs WHERE input_key = $1")
                .bind(input_key)
                .fetch_optional(p)
                .await?;
            Ok(r.is_some())
        })
    }

    /// Forgets input keys recorded before `before` (by then their inputs can
    /// no longer be replayed). Returns how many.
    pub async fn prune_flow_inputs(&self, before: i64) -> Result<u64, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query("DELETE FROM flow_inputs WHERE created_at < $1").bind(before).execute(p).await?.rows_affected())
        })
    }

    /// Active instances idle since before `before`.
    pub async fn idle_flows(&self, before: i64, limit: i64) -> Result<Vec<FlowInstanceRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM flow_instances WHERE status = 'active' AND updated_at < $1 \
                 ORDER BY updated_at LIMIT $2"
            )))
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// The record behind an action token.
    pub async fn get_action(&self, token: &str) -> Result<Option<ActionRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT token, account_id, instance_id, rev, name, args, created_at FROM flow_actions WHERE token = $1",
            )
            .bind(token)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Returns deliveries whose sending lease lapsed (a crashed process) to pending.
    pub async fn requeue_deliveries(&self, now: i64) -> Result<u64, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query(
                "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_until = NULL \
                 WHERE status = 'sending' AND lease_until < $1",
            )
            .bind(now)
            .execute(p)
            .await?
            .rows_affected())
        })
    }

    /// Claims due deliveries for `platforms`: per conversation only the oldest
    /// one that may go now (an earlier unsent message holds later ones back,
    /// except throttled progress edits, and nothing goes while another
    /// delivery of the conversation is being sent).
    pub async fn claim_deliveries(
        &self,
        platforms: &[String],
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        if platforms.is_empty() {
            return Ok(vec![]);
        }
        let list = platforms.iter().map(|p| format!("'{}'", p.replace('\'', "''"))).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.status = 'pending' AND d.platform IN ({list}) \
             AND d.next_attempt_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.conversation = d.conversation AND e.id < d.id \
                             AND e.status = 'pending' AND e.kind <> 'progress') \
             AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.conversation = d.conversation \
                             AND e.status = 'sending') \
             ORDER BY d.id LIMIT $2"
        );
        let candidates: Vec<DeliveryRow> = with_pool!(self, p => {
            sqlx::query_as(crate::db::safe(&sql)).bind(now).bind(limit * 4).fetch_all(p).await?
        });
        // The oldest candidate of each conversation, claimed in one statement
        // (RETURNING gives the row as claimed: a progress update that landed
        // after the select is in it).
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<String> = candidates
            .into_iter()
            .filter(|d| seen.insert(d.conversation.clone()))
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|d| d.id)
            .collect();
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let marks = (0..ids.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "UPDATE deliveries SET status = 'sending', lease_owner = $1, lease_until = $2 \
             WHERE status = 'pending' AND id IN ({marks}) RETURNING {DELIVERY_COLUMNS}"
        );
        let mut out: Vec<DeliveryRow> = with_pool!(self, p => {
            let mut q = sqlx::query_as(crate::db::safe(&sql)).bind(owner).bind(now + lease_ms);
            for id in &ids {
                q = q.bind(id);
            }
            q.fetch_all(p).await?
        });
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One delivery.
    pub async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1")))
                .bind(id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// The delivery with a dedupe key.
    pub async fn delivery_by_key(&self, key: &str) -> Result<Option<DeliveryRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE dedupe_key = $1")))
                .bind(key)
                .fetch_optional(p)
                .await?)
        })
    }

    /// A conversation's deliveries, oldest first.
    pub async fn conversation_deliveries(&self, conversation: &str) -> Result<Vec<DeliveryRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE conversation = $1 ORDER BY id"
            )))
            .bind(conversation)
            .fetch_all(p)
            .await?)
        })
    }

    /// Records how a claimed send ended. A progress row whose view changed
    /// while it was being sent goes back to pending (one more edit).
    pub async fn finish_delivery(
        &self,
        id: &str,
        owner: &str,
        version_sent: i64,
        result: &DeliveryResult,
        now: i64,
    ) -> Result<(), StoreError> {
        let mark = DeliveryMark {
            id: id.to_string(),
            owner: owner.to_string(),
            version_sent,
            result: result.clone(),
            delay_progress: None,
        };
        self.finish_deliveries(std::slice::from_ref(&mark), now).await
    }

    /// Records how several claimed sends ended, in one transaction (the
    /// delivery service's marks of one pass). Each mark is applied as
    /// [`Store::finish_delivery`] would, after its conversation's progress
    /// edits were held back when it asks for that ([`Store::delay_progress`]).
    pub async fn finish_deliveries(&self, marks: &[DeliveryMark], now: i64) -> Result<(), StoreError> {
        if marks.is_empty() {
            return Ok(());
        }
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for m in marks {
                if let Some((conversation, until)) = &m.delay_progress {
                    sqlx::query(DELAY_PROGRESS).bind(conversation).bind(until).execute(&mut *tx).await?;
                }
                match &m.result {
                    DeliveryResult::Sent { message_ref, next_at } => {
                        sqlx::query(
                            "UPDATE deliveries SET status = CASE WHEN version = $3 THEN 'sent' ELSE 'pending' END, \
                             message_ref = COALESCE($4, message_ref), attempts = attempts + 1, sent_at = $5, \
                             next_attempt_at = $6, lease_owner = NULL, lease_until = NULL, error = NULL \
                             WHERE id = $1 AND lease_owner = $2",
                        )
                        .bind(&m.id).bind(&m.owner).bind(m.version_sent).bind(message_ref).bind(now).bind(next_at)
                        .execute(&mut *tx).await?;
                    }
                    DeliveryResult::Retry { at, error } => {
                        sqlx::query(
                            "UPDATE deliveries SET status = 'pending', attempts = attempts + 1, next_attempt_at = $3, \
                             error = $4, lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
                        )
                        .bind(&m.id).bind(&m.owner).bind(at).bind(error)
                        .execute(&mut *tx).await?;
                    }
                    DeliveryResult::Failed { error } => {
                        // A write first: on SQLite a transaction that reads
                        // first may not be able to write afterwards.
                        let failed = sqlx::query(
                            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, error = $3, \
                             lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
                        )
                        .bind(&m.id).bind(&m.owner).bind(error)
                        .execute(&mut *tx).await?;
                        let conv: Option<(String,)> = if failed.rows_affected() == 1 {
                            sqlx::query_as("SELECT conversation FROM deliveries WHERE id = $1")
                                .bind(&m.id).fetch_optional(&mut *tx).await?
                        } else {
                            None
                        };
                        if let Some((conv,)) = conv {
                            sqlx::query(
                                "UPDATE deliveries SET status = 'failed', error = $2 \
                                 WHERE conversation = $1 AND status = 'pending'",
                            )
                            .bind(conv).bind(format!("not sent: an earlier delivery failed for good ({error})"))
                            .execute(&mut *tx).await?;
                        }
                    }
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Holds back every progress edit of a conversation until `until`
    /// (chat platforms punish frequent edits, whichever message they touch).
    /// A job's first progress message is not an edit and goes at once.
    pub async fn delay_progress(&self, conversation: &str, until: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(DELAY_PROGRESS).bind(conversation).bind(until).execute(p).await?;
            Ok(())
        })
    }

    /// Ended jobs that came from a conversation but whose result delivery was
    /// never written (the process died between the two): the notifier writes them.
    pub async fn undelivered_results(&self, since: i64, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        let cols = JOB_COLUMNS.split(", ").map(|c| format!("j.{}", c.trim())).collect::<Vec<_>>().join(", ");
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&format!(
                "SELECT {cols} FROM jobs j WHERE j.source IS NOT NULL \
                 AND j.status IN ('succeeded', 'failed', 'cancelled') AND j.finished_at >= $1 \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.dedupe_key = 'result:' || j.id) \
                 AND NOT EXISTS (SELECT 1 FROM cast_steps cs WHERE cs.job_id = j.id) \
                 ORDER BY j.finished_at LIMIT $2"
            )))
            .bind(since)
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// Ended casts asked from a conversation (their steps' jobs carry it)
    /// whose result delivery (`result:cast-<id>`) was never written.
    pub async fn undelivered_cast_results(&self, since: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT c.id FROM casts c WHERE c.status IN ('succeeded', 'failed', 'cancelled') \
                 AND c.finished_at >= $1 \
                 AND EXISTS (SELECT 1 FROM cast_steps cs JOIN jobs j ON j.id = cs.job_id \
                             WHERE cs.cast_id = c.id AND cs.step = 0 AND j.source IS NOT NULL) \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.dedupe_key = 'result:cast-' || c.id) \
                 ORDER BY c.finished_at LIMIT $2",
            )
            .bind(since)
            .bind(limit)
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// An account's succeeded, not hidden jobs, newest first, one page; and the total.
    pub async fn history_page(
        &self,
        account_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<JobRow>, i64), StoreError> {
        let cols = JOB_COLUMNS.split(", ").map(|c| format!("j.{}", c.trim())).collect::<Vec<_>>().join(", ");
        let filter = "j.account_id = $1 AND j.status = 'succeeded' \
                      AND NOT EXISTS (SELECT 1 FROM job_marks m WHERE m.job_id = j.id AND m.hidden)";
        with_pool!(self, p => {
            let rows = sqlx::query_as(crate::db::safe(&format!(
                "SELECT {cols} FROM jobs j WHERE {filter} ORDER BY j.created_at DESC, j.id DESC LIMIT $2 OFFSET $3"
            )))
            .bind(account_id).bind(limit).bind(offset)
            .fetch_all(p).await?;
            let (total,): (i64,) = sqlx::query_as(crate::db::safe(&format!("SELECT COUNT(*) FROM jobs j WHERE {filter}")))
                .bind(account_id)
                .fetch_one(p).await?;
            Ok((rows, total))
        })
    }

    /// Rates a job (1–5) or hides it from history.
    pub async fn mark_job(
        &self,
        job_id: &str,
        account_id: &str,
        rating: Option<i64>,
        hidden: Option<bool>,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO job_marks (job_id, account_id, rating, hidden, updated_at) \
                 VALUES ($1, $2, $3, COALESCE($4, FALSE), $5) \
                 ON CONFLICT (job_id) DO UPDATE SET rating = COALESCE($3, job_marks.rating), \
                 hidden = COALESCE($4, job_marks.hidden), updated_at = $5",
            )
            .bind(job_id).bind(account_id).bind(rating).bind(hidden).bind(now)
            .execute(p).await?;
            Ok(())
        })
    }

    /// A job's rating and hidden flag.
    pub async fn job_mark(&self, job_id: &str) -> Result<(Option<i64>, bool), StoreError> {
        with_pool!(self, p => {
            let row: Option<(Option<i64>, bool)> =
                sqlx::query_as("SELECT rating, hidden FROM job_marks WHERE job_id = $1")
                    .bind(job_id).fetch_optional(p).await?;
            Ok(row.unwrap_or((None, false)))
        })
    }
}
