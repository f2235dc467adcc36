//! A durable inbox for front ends that receive events from outside (a chat
//! platform's updates): every event is a row before it is acknowledged, a
//! redelivered one is a no-op, and events of one lane (a chat) are processed
//! one at a time, in order.
//!
//! Rows are kept per `source` (e.g. `telegram:<bot>`), numbered by the
//! source's own sequence (`seq`, e.g. Telegram's update id).

use crate::db::BeginWrite as _;
use crate::db::{Store, StoreError, with_pool};

/// One stored event.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq)]
pub struct InboxRow {
    /// Who it came from, e.g. `telegram:<bot>`.
    pub source: String,
    /// The source's sequence number (unique per source).
    pub seq: i64,
    /// Ordering key: events with the same lane are processed in order.
    pub lane: String,
    /// The event as the source sent it (JSON text).
    pub payload: String,
    /// `pending`, `processing`, `done` or `failed`.
    pub state: String,
    /// Times processing started.
    pub attempts: i32,
    /// The process that claimed it last.
    pub claimed_by: Option<String>,
    /// Why processing failed (state `failed`).
    pub error: Option<String>,
    /// When it was stored.
    pub received_at: i64,
    /// When processing ended.
    pub done_at: Option<i64>,
}

const COLUMNS: &str = "source, seq, lane, payload, state, attempts, claimed_by, error, received_at, done_at";

impl Store {
    /// Stores an event unless one with the same `(source, seq)` is stored.
    /// Returns whether it was new.
    pub async fn inbox_insert(
        &self,
        source: &str,
        seq: i64,
        lane: &str,
        payload: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO inbox (source, seq, lane, payload, state, attempts, received_at) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5) ON CONFLICT (source, seq) DO NOTHING",
            )
            .bind(source).bind(seq).bind(lane).bind(payload).bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Stores several events of one source in one transaction (a batch the
    /// source delivered together), skipping those already stored. Returns
    /// how many were new. All or none: on an error nothing is stored.
    pub async fn inbox_insert_many(
        &self,
        source: &str,
        events: &[(i64, String, String)],
        now: i64,
    ) -> Result<u64, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut new = 0;
            for (seq, lane, payload) in events {
                new += sqlx::query(
                    "INSERT INTO inbox (source, seq, lane, payload, state, attempts, received_at) \
                     VALUES ($1, $2, $3, $4, 'pending', 0, $5) ON CONFLICT (source, seq) DO NOTHING",
                )
                .bind(source).bind(seq).bind(lane).bind(payload).bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok(new)
        })
    }

    /// Lanes that have a pending event, the lane of the oldest one first.
    pub async fn inbox_pending_lanes(&self, source: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        with_pool!(self, p => {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT lane FROM inbox WHERE source = $1 AND state = 'pending' GROUP BY lane ORDER BY MIN(seq) LIMIT $2",
            )
            .bind(source).bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        })
    }

    /// One step of a lane's processing, in one transaction: records event
    /// `done` processed (`(seq, None)`, or failed with the reason) when
    /// given, then claims the lane's next event for `owner` — only if the
    /// lane's oldest unfinished event is pending (one being processed by
    /// someone else holds the lane). Returns the claimed event, or None
    /// when the lane has nothing for this caller now.
    pub async fn inbox_advance(
        &self,
        source: &str,
        lane: &str,
        owner: &str,
        done: Option<(i64, Option<&str>)>,
        now: i64,
    ) -> Result<Option<InboxRow>, StoreError> {
        let claim = format!(
            "UPDATE inbox SET state = 'processing', claimed_by = $3, attempts = attempts + 1 \
             WHERE source = $1 AND state = 'pending' AND seq = (SELECT seq FROM inbox WHERE source = $1 \
             AND lane = $2 AND state IN ('pending', 'processing') ORDER BY seq LIMIT 1) RETURNING {COLUMNS}"
        );
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if let Some((seq, error)) = done {
                let state = if error.is_some() { "failed" } else { "done" };
                sqlx::query("UPDATE inbox SET state = $3, error = $4, done_at = $5 WHERE source = $1 AND seq = $2")
                    .bind(source).bind(seq).bind(state).bind(error).bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            let row: Option<InboxRow> = sqlx::query_as(crate::db::safe(&claim))
                .bind(source).bind(lane).bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    /// The highest sequence number stored for a source.
    pub async fn inbox_max_seq(&self, source: &str) -> Result<Option<i64>, StoreError> {
        with_pool!(self, p => {
            let r: (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM inbox WHERE source = $1")
                .bind(source)
                .fetch_one(p)
                .await?;
            Ok(r.0)
        })
    }

    /// Pending events of a source, oldest (lowest `seq`) first.
    pub async fn inbox_pending(&self, source: &str, limit: i64) -> Result<Vec<InboxRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM inbox WHERE source = $1 AND state = 'pending' ORDER BY seq LIMIT $2");
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&sql)).bind(source).bind(limit).fetch_all(p).await?)
        })
    }

    /// The oldest unfinished event of one lane (pending or processing).
    pub async fn inbox_next(&self, source: &str, lane: &str) -> Result<Option<InboxRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM inbox WHERE source = $1 AND lane = $2 \
             AND state IN ('pending', 'processing') ORDER BY seq LIMIT 1"
        );
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&sql)).bind(source).bind(lane).fetch_optional(p).await?)
        })
    }

    /// Marks a pending event as being processed by `owner`. False when
    /// someone else already took it.
    pub async fn inbox_claim(&self, source: &str, seq: i64, owner: &str) -> Result<bool, StoreError> {
        let done = with_pool!(self, p => {
            sqlx::query(
                "UPDATE inbox SET state = 'processing', claimed_by = $3, attempts = attempts + 1 \
                 WHERE source = $1 AND seq = $2 AND state = 'pending'",
            )
            .bind(source).bind(seq).bind(owner)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Records the end of processing: `done`, or `failed` with the reason.
    pub async fn inbox_finish(&self, source: &str, seq: i64, error: Option<&str>, now: i64) -> Result<(), StoreError> {
        let state = if error.is_some() { "failed" } else { "done" };
        with_pool!(self, p => {
            sqlx::query("UPDATE inbox SET state = $3, error = $4, done_at = $5 WHERE source = $1 AND seq = $2")
                .bind(source).bind(seq).bind(state).bind(error).bind(now)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Puts events a stopped process left `processing` back to `pending`
    /// (called at start, before processing begins). Returns how many.
    pub async fn inbox_requeue(&self, source: &str) -> Result<u64, StoreError> {
        let done = with_pool!(self, p => {
            sqlx::query("UPDATE inbox SET state = 'pending' WHERE source = $1 AND state = 'processing'")
                .bind(source)
                .execute(p)
                .await?
            .rows_affected()
        });
        Ok(done)
    }

    /// Every stored event of a source, oldest first (tests and diagnostics).
    pub async fn inbox_list(&self, source: &str) -> Result<Vec<InboxRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM inbox WHERE source = $1 ORDER BY seq");
        with_pool!(self, p => { Ok(sqlx::query_as(crate::db::safe(&sql)).bind(source).fetch_all(p).await?) })
    }

    /// Deletes finished events received before `before`, keeping the
    /// newest one of the source (it carries the next sequence number).
    /// Returns how many.
    pub async fn inbox_prune(&self, source: &str, before: i64) -> Result<u64, StoreError> {
        let done = with_pool!(self, p => {
            sqlx::query(
                "DELETE FROM inbox WHERE source = $1 AND state IN ('done', 'failed') AND received_at < $2 \
                 AND seq < (SELECT MAX(seq) FROM inbox WHERE source = $1)",
            )
            .bind(source).bind(before)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done)
    }
}
