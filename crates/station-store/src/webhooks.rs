//! Webhooks: per-account subscriptions and durable deliveries.
//!
//! An event (a generation or cast that ended) becomes one
//! `webhook_deliveries` row per destination URL before anything is sent;
//! `(event_id, url)` is unique, so finding the same event again (a second
//! sweep, a second process, a restart) enqueues nothing. Event ids are
//! `<event>:<subject id>` (`generation.succeeded:<job id>`), computable in
//! SQL so the sweep can tell which events have rows. A delivery is claimed
//! by moving its `next_attempt_at` past the claim (a lease) and counting the
//! attempt; its outcome is recorded only by the claim that made it.

use serde::Serialize;

use crate::db::{Store, StoreError, safe, with_pool};

/// One subscription.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct WebhookRow {
    /// Id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// Destination.
    pub url: String,
    /// Events, as `,generation.succeeded,cast.failed,` (commas around each).
    pub events: String,
    /// Signing secret.
    pub secret: String,
    /// When created (Unix ms).
    pub created_at: i64,
    /// When removed.
    pub disabled_at: Option<i64>,
}

/// One delivery of an event to a URL.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct WebhookDeliveryRow {
    /// Id.
    pub id: String,
    /// `<event>:<subject id>`; the receiver's deduplication key.
    pub event_id: String,
    /// `generation.succeeded`, `cast.failed`, …
    pub event: String,
    /// Whose event.
    pub account_id: String,
    /// The subscription, or None for a request's own callback URL.
    pub subscription_id: Option<String>,
    /// Destination.
    pub url: String,
    /// Signing secret.
    pub secret: String,
    /// The JSON body sent.
    pub body: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub state: String,
    /// Attempts made (claims).
    pub attempts: i64,
    /// Not sent before this time (Unix ms).
    pub next_attempt_at: i64,
    /// The receiver's last HTTP status.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When enqueued.
    pub created_at: i64,
    /// When delivered.
    pub delivered_at: Option<i64>,
}

/// A delivery to enqueue.
#[derive(Debug, Clone)]
pub struct NewWebhookDelivery<'a> {
    /// Id.
    pub id: String,
    /// Event id.
    pub event_id: &'a str,
    /// Event name.
    pub event: &'a str,
    /// Owner.
    pub account_id: &'a str,
    /// Subscription.
    pub subscription_id: Option<&'a str>,
    /// URL.
    pub url: &'a str,
    /// Secret.
    pub secret: &'a str,
    /// Body.
    pub body: &'a str,
}

/// A generation or cast that ended and is owed to a destination.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingEvent {
    /// The job or cast id.
    pub subject_id: String,
    /// Its account.
    pub account_id: String,
    /// Its terminal status.
    pub status: String,
    /// The subscription.
    pub subscription_id: Option<String>,
    /// Destination.
    pub url: String,
    /// The subscription's signing secret.
    pub secret: String,
}

const HOOK_COLUMNS: &str = "id, account_id, url, events, secret, created_at, disabled_at";
const DELIVERY_COLUMNS: &str = "id, event_id, event, account_id, subscription_id, url, secret, body, state, attempts, \
     next_attempt_at, last_status, last_error, created_at, delivered_at";

impl Store {
    /// Stores a subscription.
    pub async fn insert_webhook(&self, w: &WebhookRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO webhook_subscriptions (id, account_id, url, events, secret, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&w.id)
            .bind(&w.account_id)
            .bind(&w.url)
            .bind(&w.events)
            .bind(&w.secret)
            .bind(w.created_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// An account's active subscriptions, oldest first.
    pub async fn webhooks(&self, account_id: &str) -> Result<Vec<WebhookRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {HOOK_COLUMNS} FROM webhook_subscriptions WHERE account_id = $1 AND disabled_at IS NULL \
                 ORDER BY created_at, id"
            )))
            .bind(account_id)
            .fetch_all(p)
            .await?)
        })
    }

    /// Ends a subscription of `account_id`. False when it has none by that id.
    pub async fn disable_webhook(&self, account_id: &str, id: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE webhook_subscriptions SET disabled_at = $1 WHERE id = $2 AND account_id = $3 \
                 AND disabled_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .bind(account_id)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Generations, casts and trainings that ended since `since` and are
    /// owed to a subscription of their account (subscribed to that event,
    /// created before the end), and generations, casts and trainings that ended and
    /// were asked with a `callback_url` (see [`Store::insert_callback`]),
    /// with no delivery row yet for that URL: `("generation" | "cast" |
    /// "training", event)`. At most `limit` of each kind of source.
    pub async fn pending_events(&self, since: i64, limit: i64) -> Result<Vec<(String, PendingEvent)>, StoreError> {
        let jobs = "SELECT j.id AS subject_id, j.account_id, j.status, s.id AS subscription_id, s.url, s.secret \
             FROM jobs j JOIN webhook_subscriptions s ON s.account_id = j.account_id AND s.disabled_at IS NULL \
             WHERE j.status IN ('succeeded','failed','cancelled') AND j.finished_at >= $1 \
             AND j.finished_at >= s.created_at AND s.events LIKE '%,generation.' || j.status || ',%' \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.url = s.url \
                AND d.event_id = 'generation.' || j.status || ':' || j.id) LIMIT $2";
        let casts = "SELECT c.id AS subject_id, c.account_id, c.status, s.id AS subscription_id, s.url, s.secret \
             FROM casts c JOIN webhook_subscriptions s ON s.account_id = c.account_id AND s.disabled_at IS NULL \
             WHERE c.status IN ('succeeded','failed','cancelled') AND c.finished_at >= $1 \
             AND c.finished_at >= s.created_at AND s.events LIKE '%,cast.' || c.status || ',%' \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.url = s.url \
                AND d.event_id = 'cast.' || c.status || ':' || c.id) LIMIT $2";
        let trainings = "SELECT t.id AS subject_id, t.account_id, t.status, s.id AS subscription_id, s.url, s.secret \
             FROM trainings t JOIN webhook_subscriptions s ON s.account_id = t.account_id AND s.disabled_at IS NULL \
             WHERE t.status IN ('succeeded','failed','cancelled') AND t.finished_at >= $1 \
             AND t.finished_at >= s.created_at AND s.events LIKE '%,training.' || t.status || ',%' \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.url = s.url \
                AND d.event_id = 'training.' || t.status || ':' || t.id) LIMIT $2";
        // A request's own callback_url, signed with the account's callback secret.
        let job_callbacks = "SELECT j.id AS subject_id, j.account_id, j.status, CAST(NULL AS TEXT) AS subscription_id, \
             cb.url, k.secret FROM callbacks cb JOIN jobs j ON j.id = cb.subject_id \
             JOIN callback_secrets k ON k.account_id = j.account_id \
             WHERE cb.kind = 'generation' AND j.status IN ('succeeded','failed','cancelled') AND j.finished_at >= $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.url = cb.url \
                AND d.event_id = 'generation.' || j.status || ':' || j.id) LIMIT $2";
        let cast_callbacks = "SELECT c.id AS subject_id, c.account_id, c.status, CAST(NULL AS TEXT) AS subscription_id, \
             c.callback_url AS url, k.secret FROM casts c JOIN callback_secrets k ON k.account_id = c.account_id \
             WHERE c.callback_url IS NOT NULL AND c.status IN ('succeeded','failed','cancelled') \
             AND c.finished_at >= $1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.url = c.callback_url \
                AND d.event_id = 'cast.' || c.status || ':' || c.id) LIMIT $2";
        let training_callbacks = "SELECT t.id AS subject_id, t.account_id, t.status, \
             CAST(NULL AS TEXT) AS subscription_id, cb.url, k.secret FROM callbacks cb \
             JOIN trainings t ON t.id = cb.subject_id JOIN callback_secrets k ON k.account_id = t.account_id \
             WHERE cb.kind = 'training' AND t.status IN ('succeeded','failed','cancelled') AND t.finished_at >= $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.url = cb.url \
                AND d.event_id = 'training.' || t.status || ':' || t.id) LIMIT $2";
        let mut out = vec![];
        with_pool!(self, p => {
            for (kind, sql) in [
                ("generation", jobs),
                ("cast", casts),
                ("training", trainings),
                ("generation", job_callbacks),
                ("cast", cast_callbacks),
                ("training", training_callbacks),
            ] {
                let rows: Vec<PendingEvent> = sqlx::query_as(sql).bind(since).bind(limit).fetch_all(p).await?;
                out.extend(rows.into_iter().map(|r| (kind.to_string(), r)));
            }
        });
        Ok(out)
    }

    /// Enqueues a delivery; nothing when the event was enqueued for that URL
    /// before. True when written.
    pub async fn insert_webhook_delivery(&self, d: &NewWebhookDelivery<'_>, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "INSERT INTO webhook_deliveries (id, event_id, event, account_id, subscription_id, url, secret, body, \
                 state, attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, \
                 $9, $9) ON CONFLICT (event_id, url) DO NOTHING",
            )
            .bind(&d.id)
            .bind(d.event_id)
            .bind(d.event)
            .bind(d.account_id)
            .bind(d.subscription_id)
            .bind(d.url)
            .bind(d.secret)
            .bind(d.body)
            .bind(now)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Claims up to `limit` deliveries that are due: each gets its attempt
    /// counted and `next_attempt_at` moved `lease_ms` on (so a process that
    /// dies while sending leaves it to be sent again then).
    pub async fn claim_webhook_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<WebhookDeliveryRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $2 \
                 WHERE id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
                   ORDER BY next_attempt_at LIMIT $3) AND state = 'pending' AND next_attempt_at <= $1 \
                 RETURNING {DELIVERY_COLUMNS}"
            )))
            .bind(now)
            .bind(now + lease_ms)
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// Records the outcome of attempt `attempt` of a delivery: `state`
    /// (`pending` to retry at `next_attempt_at`, `delivered`, `failed`).
    /// Ignored when a later claim took the delivery over.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_webhook_delivery(
        &self,
        id: &str,
        attempt: i64,
        state: &str,
        status: Option<i64>,
        error: Option<&str>,
        next_attempt_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE webhook_deliveries SET state = $1, last_status = $2, last_error = $3, next_attempt_at = $4, \
                 delivered_at = CASE WHEN $1 = 'delivered' THEN $5 ELSE delivered_at END \
                 WHERE id = $6 AND attempts = $7 AND state = 'pending'",
            )
            .bind(state)
            .bind(status)
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

    /// An account's deliveries, newest first.
    pub async fn webhook_deliveries(
        &self,
        account_id: &str,
        limit: i64,
    ) -> Result<Vec<WebhookDeliveryRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE account_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            )))
            .bind(account_id)
            .bind(limit.clamp(1, 1000))
            .fetch_all(p)
            .await?)
        })
    }

    /// Sends a delivery of `account_id` again now (its event id unchanged).
    /// False when it has none by that id.
    pub async fn replay_webhook_delivery(&self, account_id: &str, id: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1 WHERE id = $2 \
                 AND account_id = $3",
            )
            .bind(now)
            .bind(id)
            .bind(account_id)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Records that the end of `kind` (`generation` or `training`)
    /// `subject_id` is owed to `url`. Written before the job or training is,
    /// so its end is never missed; a row whose subject was never written (a
    /// refused request) matches nothing.
    pub async fn insert_callback(
        &self,
        kind: &str,
        subject_id: &str,
        account_id: &str,
        url: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO callbacks (kind, subject_id, account_id, url, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (kind, subject_id) DO NOTHING",
            )
            .bind(kind)
            .bind(subject_id)
            .bind(account_id)
            .bind(url)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// The callback URL stored for `kind` `subject_id`, if any.
    pub async fn callback(&self, kind: &str, subject_id: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            let r: Option<(String,)> = sqlx::query_as("SELECT url FROM callbacks WHERE kind = $1 AND subject_id = $2")
                .bind(kind)
                .bind(subject_id)
                .fetch_optional(p)
                .await?;
            Ok(r.map(|(u,)| u))
        })
    }

    /// The account's callback signing secret: `fresh` stored if it has none
    /// yet (two racing callers read the same one).
    pub async fn callback_secret(&self, account_id: &str, fresh: &str, now: i64) -> Result<String, StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO callback_secrets (account_id, secret, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (account_id) DO NOTHING",
            )
            .bind(account_id)
            .bind(fresh)
            .bind(now)
            .execute(p)
            .await?;
            let (secret,): (String,) = sqlx::query_as("SELECT secret FROM callback_secrets WHERE account_id = $1")
                .bind(account_id)
                .fetch_one(p)
                .await?;
            Ok(secret)
        })
    }
}
