//! Spells (saved chains of tools) and casts (one run of a spell).
//!
//! A cast is written in one transaction with every step's job and hold
//! ([`Store::insert_cast`]): the first step queued, the others *parked* —
//! queued with `run_after` [`PARKED`], so no claim takes them and the
//! queued-jobs quota does not count them. When a step succeeds the core binds
//! its outputs into the next step's parameters and unparks it
//! ([`Store::advance_cast`]) in one conditional transaction that also moves
//! the cast's `current_step`, so the advance happens once however often (or
//! by however many processes) it is attempted.

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::db::{Store, StoreError, safe, with_pool};
use crate::jobs::{JobRow, NewJob, job_insert_sql};

/// `run_after` of a parked job: a step of a cast waiting for the step before it.
pub const PARKED: i64 = i64::MAX;

/// One stored spell.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct SpellRow {
    /// Id (UUIDv7 text).
    pub id: String,
    /// Unique short name (`[a-z0-9-]`), what people cast it by.
    pub slug: String,
    /// The account that made it.
    pub owner_id: String,
    /// Display name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// `private`, `unlisted` or `public`.
    pub visibility: String,
    /// The validated definition (JSON text: steps and exposed inputs).
    pub definition: String,
    /// Why it can no longer run, when a tool changed incompatibly.
    pub broken: Option<String>,
    /// Times it was cast.
    pub casts: i64,
    /// When created (Unix ms).
    pub created_at: i64,
    /// When last changed.
    pub updated_at: i64,
}

/// A spell to store.
#[derive(Debug, Clone)]
pub struct NewSpell<'a> {
    /// Id.
    pub id: &'a str,
    /// Unique slug.
    pub slug: &'a str,
    /// Owner account.
    pub owner_id: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Description.
    pub description: &'a str,
    /// Visibility text.
    pub visibility: &'a str,
    /// Definition JSON text.
    pub definition: &'a str,
}

/// One stored cast.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CastRow {
    /// Id (UUIDv7 text).
    pub id: String,
    /// The spell cast.
    pub spell_id: String,
    /// Who cast it (and pays).
    pub account_id: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Number of steps.
    pub steps: i64,
    /// The step running or last run (0-based).
    pub current_step: i64,
    /// The caster's inputs (JSON object text).
    pub inputs: String,
    /// Sum of the steps' prices, held when cast.
    pub price: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// Where to post its outcome, if asked.
    pub callback_url: Option<String>,
    /// When cast (Unix ms).
    pub created_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
}

/// One step of a cast.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CastStepRow {
    /// The cast.
    pub cast_id: String,
    /// 0-based position.
    pub step: i64,
    /// Its job.
    pub job_id: String,
    /// Its tool.
    pub tool_id: String,
    /// Inputs filled from earlier outputs when unparked: JSON `{param: [step, index]}`.
    pub bindings: String,
}

/// A cast to write: the row's fields and each step's job, price and bindings.
#[derive(Debug, Clone)]
pub struct NewCast<'a> {
    /// Id.
    pub id: &'a str,
    /// Spell.
    pub spell_id: &'a str,
    /// Caster (each step's job belongs to it).
    pub account_id: &'a str,
    /// Caster's inputs (JSON text).
    pub inputs: &'a str,
    /// Where to post the outcome.
    pub callback_url: Option<&'a str>,
    /// Idempotency key, recorded for the first step's job in the same
    /// transaction: a repeat writes nothing and gets the first cast.
    pub idem_key: Option<&'a str>,
    /// Steps in order: the job, its price, its bindings JSON text.
    pub steps: Vec<(NewJob, i64, String)>,
    /// Free daily allowance per account (0: none).
    pub free_daily: i64,
    /// Queued-jobs quota the first step counts against (None: none).
    pub max_queued: Option<i64>,
}

const SPELL_COLUMNS: &str =
    "id, slug, owner_id, name, description, visibility, definition, broken, casts, created_at, updated_at";
const CAST_COLUMNS: &str = "id, spell_id, account_id, status, steps, current_step, inputs, price, error, \
     callback_url, created_at, finished_at";

impl Store {
    /// Stores a new spell. `Ok(false)` when the slug is taken (nothing written).
    pub async fn insert_spell(&self, s: &NewSpell<'_>, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "INSERT INTO spells (id, slug, owner_id, name, description, visibility, definition, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (slug) DO NOTHING",
            )
            .bind(s.id)
            .bind(s.slug)
            .bind(s.owner_id)
            .bind(s.name)
            .bind(s.description)
            .bind(s.visibility)
            .bind(s.definition)
            .bind(now)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// A spell by slug or id.
    pub async fn spell(&self, slug_or_id: &str) -> Result<Option<SpellRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {SPELL_COLUMNS} FROM spells WHERE slug = $1 OR id = $1 ORDER BY slug = $1 DESC LIMIT 1"
            )))
            .bind(slug_or_id)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Spells `account_id` owns and, with `public`, every public spell; most
    /// cast first, then by slug.
    pub async fn list_spells(&self, account_id: &str, public: bool, limit: i64) -> Result<Vec<SpellRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {SPELL_COLUMNS} FROM spells WHERE owner_id = $1 OR ($2 AND visibility = 'public') \
                 ORDER BY casts DESC, slug LIMIT $3"
            )))
            .bind(account_id)
            .bind(public)
            .bind(limit.clamp(1, 1000))
            .fetch_all(p)
            .await?)
        })
    }

    /// Marks a spell broken with the reason (None: runnable again).
    pub async fn set_spell_broken(&self, id: &str, reason: Option<&str>, now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("UPDATE spells SET broken = $1, updated_at = $2 WHERE id = $3")
                .bind(reason)
                .bind(now)
                .bind(id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// A cast by id.
    pub async fn cast(&self, id: &str) -> Result<Option<CastRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!("SELECT {CAST_COLUMNS} FROM casts WHERE id = $1")))
                .bind(id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// A cast's steps with their jobs, in order.
    pub async fn cast_steps(&self, cast_id: &str) -> Result<Vec<(CastStepRow, JobRow)>, StoreError> {
        let steps: Vec<CastStepRow> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT cast_id, step, job_id, tool_id, bindings FROM cast_steps WHERE cast_id = $1 ORDER BY step",
            )
            .bind(cast_id)
            .fetch_all(p)
            .await?
        });
        let mut out = Vec::with_capacity(steps.len());
        for s in steps {
            let job = self
                .get_job(&s.job_id)
                .await?
                .ok_or_else(|| StoreError::NotFound { what: "job", id: s.job_id.clone() })?;
            out.push((s, job));
        }
        Ok(out)
    }

    /// The cast a job is a step of, if any.
    pub async fn cast_of_job(&self, job_id: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            let row: Option<(String,)> = sqlx::query_as("SELECT cast_id FROM cast_steps WHERE job_id = $1")
                .bind(job_id)
                .fetch_optional(p)
                .await?;
            Ok(row.map(|r| r.0))
        })
    }

    /// Ids of casts still running whose current step's job has ended: the
    /// ones an advance is due for (after a crash, or a missed event).
    pub async fn casts_due(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        with_pool!(self, p => {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT c.id FROM casts c JOIN cast_steps s ON s.cast_id = c.id AND s.step = c.current_step \
                 JOIN jobs j ON j.id = s.job_id WHERE c.status = 'running' \
                 AND j.status IN ('succeeded','failed','cancelled') ORDER BY c.created_at LIMIT $1",
            )
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        })
    }

    /// An account's casts, newest first.
    pub async fn list_casts(&self, account_id: &str, limit: i64) -> Result<Vec<CastRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {CAST_COLUMNS} FROM casts WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
            )))
            .bind(account_id)
            .bind(limit.clamp(1, 1000))
            .fetch_all(p)
            .await?)
        })
    }

    /// Moves cast `cast_id` from step `from` to the next: `next_job`'s
    /// parameters become `params` (its inputs bound to earlier outputs), it
    /// gets a fresh fair-queuing key and becomes claimable — all only if the
    /// cast is still running at step `from` and the job still parked, in one
    /// transaction. False when it was not (done before, or cancelled).
    pub async fn advance_cast(
        &self,
        cast_id: &str,
        from: i64,
        next_job: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (key_sql, _) = job_insert_sql(self);
        let params = serde_json::Value::Object(params.clone()).to_string();
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let moved = sqlx::query(
                "UPDATE casts SET current_step = current_step + 1 WHERE id = $1 AND status = 'running' \
                 AND current_step = $2",
            )
            .bind(cast_id)
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            let job: Option<(String, String)> =
                sqlx::query_as("SELECT account_id, service FROM jobs WHERE id = $1 AND status = 'queued' AND run_after = $2")
                    .bind(next_job)
                    .bind(PARKED)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((account, service)) = job else {
                tx.rollback().await?;
                return Ok(false);
            };
            // Queued now, behind what others queued meanwhile (fair, like a new job).
            let (fair_key,): (i64,) =
                sqlx::query_as(safe(&key_sql)).bind(&account).bind(&service).fetch_one(&mut *tx).await?;
            sqlx::query("UPDATE jobs SET params = $1, run_after = $2, fair_key = $3 WHERE id = $4")
                .bind(&params)
                .bind(now)
                .bind(fair_key)
                .bind(next_job)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Ends a running cast with `status` (and the error for a failure).
    /// False when it had ended already.
    pub async fn finish_cast(
        &self,
        cast_id: &str,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE casts SET status = $1, error = $2, finished_at = $3 WHERE id = $4 AND status = 'running'",
            )
            .bind(status)
            .bind(error)
            .bind(now)
            .bind(cast_id)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }
}
