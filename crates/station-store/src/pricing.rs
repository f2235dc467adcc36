//! Paying for a job: who pays (a group's sponsor, the free daily allowance,
//! the account's balance), the queued-jobs quota, and the stored pricing
//! preferences behind them.
//!
//! [`Store::insert_job_paid`] decides and writes in one transaction. It first
//! locks the balance rows of the member and (if any) the group's sponsor, in
//! account-id order so two submissions can never wait on each other; every
//! count and balance it then reads stays true until it commits. That is what
//! makes the quota exact under concurrency (100 simultaneous submissions
//! against a quota of 20 queue exactly 20) and keeps a sponsor's per-member
//! cap and the free allowance from being overspent. [`Store::plan_payment`]
//! runs the same reads and the same decision without writing, for quotes.
//!
//! Days are UTC days counted from 1970-01-01 ([`utc_day`]); a hold counts
//! against the allowance and sponsorship cap of the day it was placed, and a
//! release returns its points to that same day.

use crate::db::BeginWrite as _;
use serde::Serialize;
use serde_json::Value;

use crate::db::{Store, StoreError, safe, with_pool};
use crate::jobs::{JobRow, NewJob, insert_job_in_tx, job_insert_sql};
use crate::ledger::{Balance, EntryKind, FREE_POOL, LedgerEntry, LedgerError, insert_entry_sql};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since 1970-01-01) of a Unix-ms timestamp.
pub fn utc_day(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

/// The `daily_usage` pool counting a member's sponsored spending in a group.
fn sponsor_pool(scope: &str) -> String {
    format!("sponsor:{scope}")
}

/// What [`Store::insert_job_paid_keyed`] did.
#[derive(Debug, Clone)]
pub enum Placed {
    /// Queued now, paid as said.
    New(JobRow, PaidBy),
    /// The key was used before: this is the job it queued (nothing written).
    Existing(JobRow),
}

/// How a job is to be paid for; see [`Store::insert_job_paid`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PayTerms<'a> {
    /// The job's price in points (0: a free tool).
    pub price: i64,
    /// Points per UTC day the account may spend without touching its balance (0: none).
    pub free_daily: i64,
    /// A group (`telegram:-100123`) whose sponsor pays, if it has an active
    /// one with room under the member's daily cap and the points to cover it.
    pub sponsor_scope: Option<&'a str>,
    /// Most jobs the account may have queued; at this many a new one is
    /// refused (None: no limit).
    pub max_queued: Option<i64>,
}

/// Who pays for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PaidBy {
    /// Nobody: the tool is free.
    Free,
    /// The account itself: `allowance` points from today's free allowance
    /// (used first), `balance` from its balance.
    Own {
        /// Points drawn from today's free allowance.
        allowance: i64,
        /// Points held from the balance.
        balance: i64,
    },
    /// The sponsor of a group, for the whole price.
    Sponsor {
        /// The group.
        scope: String,
        /// The sponsor's account.
        account_id: String,
    },
}

/// What [`Store::plan_payment`] found: who would pay, and what the account has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    /// Who would pay.
    pub paid_by: PaidBy,
    /// Whether the payer can cover the price now.
    pub affordable: bool,
    /// The account's own spendable points: available balance plus the free
    /// allowance left today.
    pub available: i64,
    /// Free allowance left today.
    pub allowance_left: i64,
    /// Jobs the account has queued.
    pub queued: i64,
}

/// A group's sponsor.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct SponsorRow {
    /// The group, e.g. `telegram:-100123`.
    pub scope: String,
    /// The paying account.
    pub account_id: String,
    /// Points the sponsor pays per member per UTC day.
    pub per_member_daily_cap: i64,
    /// Who set it.
    pub created_by: String,
    /// When first set.
    pub created_at: i64,
    /// When last changed.
    pub updated_at: i64,
}

/// An active sponsor as read under lock.
struct SponsorFunds {
    scope: String,
    account_id: String,
    cap: i64,
    /// The member's sponsored spending in this group today.
    used: i64,
    /// The sponsor's available points.
    available: i64,
}

/// Everything the decision needs, read under the account locks.
struct Funds {
    queued: i64,
    own: Balance,
    free_used: i64,
    sponsor: Option<SponsorFunds>,
}

/// The pure decision shared by quoting and paying.
fn decide(price: i64, free_daily: i64, f: &Funds) -> Payment {
    let allowance_left = (free_daily - f.free_used).max(0);
    let available = f.own.available() + allowance_left;
    let base = Payment { paid_by: PaidBy::Free, affordable: true, available, allowance_left, queued: f.queued };
    if price == 0 {
        return base;
    }
    if let Some(s) = &f.sponsor
        && s.used + price <= s.cap
        && s.available >= price
    {
        return Payment {
            paid_by: PaidBy::Sponsor { scope: s.scope.clone(), account_id: s.account_id.clone() },
            ..base
        };
    }
    let allowance = price.min(allowance_left);
    let balance = price - allowance;
    Payment { paid_by: PaidBy::Own { allowance, balance }, affordable: f.own.available() >= balance, ..base }
}

const ENSURE_BALANCE: &str = "INSERT INTO balances (account_id, balance, held, updated_at) VALUES ($1, 0, 0, $2) ON CONFLICT (account_id) DO NOTHING";
const ACTIVE_SPONSOR: &str = "SELECT s.account_id, s.per_member_daily_cap FROM sponsors s \
     JOIN accounts a ON a.id = s.account_id WHERE s.scope = $1 AND a.suspended = $2";
const USAGE: &str = "SELECT used FROM daily_usage WHERE pool = $1 AND account_id = $2 AND day = $3";
const ADD_USAGE: &str = "INSERT INTO daily_usage (pool, account_id, day, used) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (pool, account_id, day) DO UPDATE SET used = daily_usage.used + excluded.used";

/// Reads [`Funds`] on one connection (`$c` a transaction or pooled connection).
macro_rules! read_funds {
    ($c:ident, $member:expr, $sponsor:expr, $day:expr) => {{
        let member: &str = $member;
        let sponsor: Option<(String, String, i64)> = $sponsor;
        let day: i64 = $day;
        let (queued,): (i64,) = sqlx::query_as(
            // Parked steps of a cast wait for the step before them; they are not in the queue yet.
            "SELECT COUNT(*) FROM jobs WHERE account_id = $1 AND status = 'queued' AND run_after < 9223372036854775807",
        )
        .bind(member)
        .fetch_one(&mut *$c)
        .await?;
        let own: Option<(i64, i64)> = sqlx::query_as("SELECT balance, held FROM balances WHERE account_id = $1")
            .bind(member)
            .fetch_optional(&mut *$c)
            .await?;
        let own = own.map(|(balance, held)| Balance { balance, held }).unwrap_or_default();
        let free_used: Option<(i64,)> =
            sqlx::query_as(USAGE).bind(FREE_POOL).bind(member).bind(day).fetch_optional(&mut *$c).await?;
        let sponsor = match sponsor {
            None => None,
            Some((scope, account_id, cap)) => {
                let used: Option<(i64,)> = sqlx::query_as(USAGE)
                    .bind(sponsor_pool(&scope))
                    .bind(member)
                    .bind(day)
                    .fetch_optional(&mut *$c)
                    .await?;
                let bal: Option<(i64, i64)> =
                    sqlx::query_as("SELECT balance, held FROM balances WHERE account_id = $1")
                        .bind(&account_id)
                        .fetch_optional(&mut *$c)
                        .await?;
                let available = bal.map(|(b, h)| b - h).unwrap_or(0);
                Some(SponsorFunds { scope, account_id, cap, used: used.map(|u| u.0).unwrap_or(0), available })
            }
        };
        Funds { queued, own, free_used: free_used.map(|u| u.0).unwrap_or(0), sponsor }
    }};
}

fn check_terms(t: &PayTerms<'_>) -> Result<(), LedgerError> {
    if t.price < 0 {
        return Err(LedgerError::Invalid { field: "price", reason: format!("must not be negative, got {}", t.price) });
    }
    if t.free_daily < 0 {
        return Err(LedgerError::Invalid {
            field: "free_daily",
            reason: format!("must not be negative, got {}", t.free_daily),
        });
    }
    Ok(())
}

/// Inside an open transaction `$tx` whose first statement was a write:
/// locks the balance rows of the member and the group's sponsor (id order),
/// reads what they have, decides who pays `$terms.price` for `$job`, writes
/// its hold and the job. Refused (rolled back, returning from the enclosing
/// function) at the quota or when short. Evaluates to who pays. Shared by
/// one job ([`Store::insert_job_paid_keyed`]) and the steps of a cast.
macro_rules! place_paid_job {
    ($tx:ident, $job:expr, $terms:expr, $day:expr, $actor:expr, $now:expr, $key_sql:expr, $job_sql:expr, $insert_entry:expr) => {{
        let job: &NewJob = $job;
        let terms: &PayTerms<'_> = $terms;
        let (day, actor, now): (i64, &str, i64) = ($day, $actor, $now);
        let member = job.account_id.as_str();
        let sponsor = match terms.sponsor_scope {
            Some(scope) if terms.price > 0 => {
                let row: Option<(String, i64)> =
                    sqlx::query_as(ACTIVE_SPONSOR).bind(scope).bind(false).fetch_optional(&mut *$tx).await?;
                row.map(|(id, cap)| (scope.to_string(), id, cap))
            }
            _ => None,
        };
        let mut locks = vec![member];
        if let Some((_, id, _)) = &sponsor
            && id != member
        {
            sqlx::query(ENSURE_BALANCE).bind(id).bind(now).execute(&mut *$tx).await?;
            locks.push(id.as_str());
        }
        // On PostgreSQL these row locks serialise every submission that
        // involves the same accounts; the fixed order rules out deadlock.
        locks.sort_unstable();
        for id in locks {
            sqlx::query("UPDATE balances SET updated_at = updated_at WHERE account_id = $1")
                .bind(id)
                .execute(&mut *$tx)
                .await?;
        }
        let funds = read_funds!($tx, member, sponsor, day);
        if let Some(limit) = terms.max_queued
            && funds.queued >= limit
        {
            $tx.rollback().await?;
            return Err(LedgerError::QuotaExceeded { limit, queued: funds.queued });
        }
        let plan = decide(terms.price, terms.free_daily, &funds);
        if !plan.affordable {
            $tx.rollback().await?;
            return Err(LedgerError::Insufficient { needed: terms.price, available: plan.available });
        }
        // (payer, allowance part, balance part, beneficiary, scope)
        let hold = match &plan.paid_by {
            PaidBy::Free => None,
            PaidBy::Own { allowance, balance } => Some((member, *allowance, *balance, None, None)),
            PaidBy::Sponsor { scope, account_id } => {
                Some((account_id.as_str(), 0, terms.price, Some(member), Some(scope.as_str())))
            }
        };
        if let Some((payer, allowance, balance, beneficiary, scope)) = hold {
            if allowance > 0 {
                sqlx::query(ADD_USAGE)
                    .bind(FREE_POOL)
                    .bind(member)
                    .bind(day)
                    .bind(allowance)
                    .execute(&mut *$tx)
                    .await?;
            }
            if let Some(scope) = scope {
                sqlx::query(ADD_USAGE)
                    .bind(sponsor_pool(scope))
                    .bind(member)
                    .bind(day)
                    .bind(terms.price)
                    .execute(&mut *$tx)
                    .await?;
            }
            let counted_day = (allowance > 0 || scope.is_some()).then_some(day);
            sqlx::query(
                "INSERT INTO holds (job_id, account_id, amount, state, created_at, allowance, beneficiary, \
                 sponsor_scope, day) VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8)",
            )
            .bind(&job.id)
            .bind(payer)
            .bind(terms.price)
            .bind(now)
            .bind(allowance)
            .bind(beneficiary)
            .bind(scope)
            .bind(counted_day)
            .execute(&mut *$tx)
            .await?;
            let written: Option<LedgerEntry> = sqlx::query_as(safe(&$insert_entry))
                .bind(format!("hold:{}", job.id))
                .bind(payer)
                .bind(EntryKind::Hold.as_str())
                .bind(0i64)
                .bind(balance)
                .bind(&job.id)
                .bind(&job.tool_id)
                .bind(actor)
                .bind(now)
                .bind(allowance)
                .bind(beneficiary)
                .fetch_optional(&mut *$tx)
                .await?;
            if written.is_none() {
                $tx.rollback().await?;
                return Err(LedgerError::Invalid { field: "id", reason: format!("job {} already has a hold", job.id) });
            }
            let r = sqlx::query(
                "UPDATE balances SET held = held + $1, updated_at = $2 WHERE account_id = $3 AND balance >= held + $1",
            )
            .bind(balance)
            .bind(now)
            .bind(payer)
            .execute(&mut *$tx)
            .await?;
            if r.rows_affected() != 1 {
                // Checked above under the lock; only a corrupt cache gets here.
                $tx.rollback().await?;
                return Err(LedgerError::Insufficient { needed: terms.price, available: plan.available });
            }
        }
        insert_job_in_tx!($tx, job, now, $key_sql, $job_sql);
        plan.paid_by
    }};
}
impl Store {
    /// Writes a queued job and, in the same transaction, holds `hold` points
    /// of its owner for it. If the account lacks the points nothing is
    /// written. A hold of 0 (a free tool) just inserts the job. No quota,
    /// allowance or sponsor: see [`Store::insert_job_paid`] for those.
    pub async fn insert_job_with_hold(
        &self,
        job: &NewJob,
        hold: i64,
        actor: &str,
        now: i64,
    ) -> Result<JobRow, LedgerError> {
        if hold < 0 {
            return Err(LedgerError::Invalid { field: "hold", reason: format!("must not be negative, got {hold}") });
        }
        if hold == 0 {
            return Ok(self.insert_job(job, now).await?);
        }
        let terms = PayTerms { price: hold, ..Default::default() };
        Ok(self.insert_job_paid(job, &terms, actor, now).await?.0)
    }

    /// Who would pay `terms.price` for a job of `account_id` now, and what
    /// the account has; the same decision [`Store::insert_job_paid`] makes,
    /// without writing or locking anything.
    pub async fn plan_payment(&self, account_id: &str, terms: &PayTerms<'_>, now: i64) -> Result<Payment, LedgerError> {
        check_terms(terms)?;
        let day = utc_day(now);
        let funds = with_pool!(self, p => {
            let mut c = p.acquire().await?;
            let sponsor = match terms.sponsor_scope {
                Some(scope) => {
                    let row: Option<(String, i64)> =
                        sqlx::query_as(ACTIVE_SPONSOR).bind(scope).bind(false).fetch_optional(&mut *c).await?;
                    row.map(|(id, cap)| (scope.to_string(), id, cap))
                }
                None => None,
            };
            read_funds!(c, account_id, sponsor, day)
        });
        Ok(decide(terms.price, terms.free_daily, &funds))
    }

    /// Writes a queued job and pays for it, in one transaction: refused with
    /// nothing written when the account already has `terms.max_queued` jobs
    /// queued ([`LedgerError::QuotaExceeded`]) or cannot cover the price
    /// ([`LedgerError::Insufficient`]). A group's active sponsor pays the
    /// whole price when the member's sponsored spending today stays within
    /// the sponsor's cap and the sponsor has the points; otherwise the
    /// account pays, from today's free allowance first and then its balance.
    /// Returns the job and who pays.
    pub async fn insert_job_paid(
        &self,
        job: &NewJob,
        terms: &PayTerms<'_>,
        actor: &str,
        now: i64,
    ) -> Result<(JobRow, PaidBy), LedgerError> {
        match self.insert_job_paid_keyed(job, terms, actor, None, now).await? {
            Placed::New(row, paid_by) => Ok((row, paid_by)),
            // Only a keyed insert finds an earlier job.
            Placed::Existing(row) => {
                Err(LedgerError::Invalid { field: "id", reason: format!("job {} already exists", row.id) })
            }
        }
    }

    /// [`Store::insert_job_paid`] with an idempotency key: the key is written
    /// in the same transaction as the job and its hold, so a submission
    /// repeated with the same key (a chat input processed again after a
    /// crash) writes nothing and returns the job the first one queued —
    /// one job, one charge.
    pub async fn insert_job_paid_keyed(
        &self,
        job: &NewJob,
        terms: &PayTerms<'_>,
        actor: &str,
        idem_key: Option<&str>,
        now: i64,
    ) -> Result<Placed, LedgerError> {
        check_terms(terms)?;
        let day = utc_day(now);
        let member = job.account_id.as_str();
        let (key_sql, job_sql) = job_insert_sql(self);
        let insert_entry = insert_entry_sql();
        let paid_by: PaidBy = with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // A write first: on SQLite it takes the database's write lock, so
            // nothing read below can change before the commit.
            sqlx::query(ENSURE_BALANCE).bind(member).bind(now).execute(&mut *tx).await?;
            if let Some(key) = idem_key {
                // On PostgreSQL a concurrent insert of the same key waits for
                // the first transaction and then finds its row.
                let fresh = sqlx::query(
                    "INSERT INTO job_keys (idem_key, job_id, account_id, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (idem_key) DO NOTHING",
                )
                .bind(key).bind(&job.id).bind(member).bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if fresh == 0 {
                    let (id,): (String,) = sqlx::query_as("SELECT job_id FROM job_keys WHERE idem_key = $1")
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.rollback().await?;
                    let row = self.get_job(&id).await?.ok_or(StoreError::NotFound { what: "job", id })?;
                    return Ok(Placed::Existing(row));
                }
            }
            let paid_by = place_paid_job!(tx, job, terms, day, actor, now, key_sql, job_sql, insert_entry);
            tx.commit().await?;
            paid_by
        });
        let row =
            self.get_job(&job.id).await?.ok_or_else(|| StoreError::NotFound { what: "job", id: job.id.clone() })?;
        Ok(Placed::New(row, paid_by))
    }

    /// Writes a cast, its steps, and every step's job with its hold, in one
    /// transaction: the first step queued, the rest parked ([`crate::spells::PARKED`]). The
    /// whole price is held now, step by step, so a cast never stops halfway
    /// for lack of points; refused with nothing written when the caster
    /// cannot cover the sum ([`LedgerError::Insufficient`]) or is at the
    /// queued-jobs quota. Counts the cast on its spell.
    pub async fn insert_cast(
        &self,
        c: &crate::spells::NewCast<'_>,
        actor: &str,
        now: i64,
    ) -> Result<crate::spells::CastRow, LedgerError> {
        let day = utc_day(now);
        let (key_sql, job_sql) = job_insert_sql(self);
        let insert_entry = insert_entry_sql();
        let price: i64 = c.steps.iter().map(|(_, p, _)| *p).sum();
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // A write first: on SQLite it takes the database's write lock.
            sqlx::query(
                "INSERT INTO balances (account_id, balance, held, updated_at) VALUES ($1, 0, 0, $2) \
                 ON CONFLICT (account_id) DO NOTHING",
            )
            .bind(c.account_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if let (Some(key), Some((first, _, _))) = (c.idem_key, c.steps.first()) {
                let fresh = sqlx::query(
                    "INSERT INTO job_keys (idem_key, job_id, account_id, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (idem_key) DO NOTHING",
                )
                .bind(key).bind(&first.id).bind(c.account_id).bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if fresh == 0 {
                    let (job,): (String,) = sqlx::query_as("SELECT job_id FROM job_keys WHERE idem_key = $1")
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.rollback().await?;
                    let cast = self.cast_of_job(&job).await?.ok_or(StoreError::NotFound { what: "cast", id: job })?;
                    return Ok(self.cast(&cast).await?.ok_or(StoreError::NotFound { what: "cast", id: cast })?);
                }
            }
            sqlx::query(
                "INSERT INTO casts (id, spell_id, account_id, status, steps, current_step, inputs, price, \
                 callback_url, created_at) VALUES ($1, $2, $3, 'running', $4, 0, $5, $6, $7, $8)",
            )
            .bind(c.id)
            .bind(c.spell_id)
            .bind(c.account_id)
            .bind(c.steps.len() as i64)
            .bind(c.inputs)
            .bind(price)
            .bind(c.callback_url)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for (n, (job, price, bindings)) in c.steps.iter().enumerate() {
                let terms = PayTerms {
                    price: *price,
                    free_daily: c.free_daily,
                    sponsor_scope: None,
                    max_queued: if n == 0 { c.max_queued } else { None },
                };
                let _: PaidBy = place_paid_job!(tx, job, &terms, day, actor, now, key_sql, job_sql, insert_entry);
                if n > 0 {
                    sqlx::query("UPDATE jobs SET run_after = $1 WHERE id = $2")
                        .bind(crate::spells::PARKED)
                        .bind(&job.id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO cast_steps (cast_id, step, job_id, tool_id, bindings) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(c.id)
                .bind(n as i64)
                .bind(&job.id)
                .bind(&job.tool_id)
                .bind(bindings)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE spells SET casts = casts + 1 WHERE id = $1").bind(c.spell_id).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(self.cast(c.id).await?.ok_or_else(|| StoreError::NotFound { what: "cast", id: c.id.to_string() })?)
    }

    /// The job queued with an idempotency key, if any.
    pub async fn job_by_idem_key(&self, key: &str) -> Result<Option<JobRow>, StoreError> {
        let id: Option<(String,)> = with_pool!(self, p => {
            sqlx::query_as("SELECT job_id FROM job_keys WHERE idem_key = $1").bind(key).fetch_optional(p).await?
        });
        match id {
            Some((id,)) => self.get_job(&id).await,
            None => Ok(None),
        }
    }

    /// Makes `account_id` the sponsor of `scope`, paying up to
    /// `per_member_daily_cap` points per member per UTC day (replacing any
    /// earlier sponsor of the group).
    pub async fn set_sponsor(
        &self,
        scope: &str,
        account_id: &str,
        per_member_daily_cap: i64,
        actor: &str,
        now: i64,
    ) -> Result<SponsorRow, StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO sponsors (scope, account_id, per_member_daily_cap, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (scope) DO UPDATE SET account_id = excluded.account_id, \
                 per_member_daily_cap = excluded.per_member_daily_cap, created_by = excluded.created_by, \
                 updated_at = excluded.updated_at",
            )
            .bind(scope)
            .bind(account_id)
            .bind(per_member_daily_cap)
            .bind(actor)
            .bind(now)
            .execute(p)
            .await?;
        });
        self.sponsor(scope).await?.ok_or_else(|| StoreError::NotFound { what: "sponsor", id: scope.to_string() })
    }

    /// Ends a group's sponsorship (jobs already paid for stay with the
    /// sponsor's hold). False if it had none.
    pub async fn remove_sponsor(&self, scope: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("DELETE FROM sponsors WHERE scope = $1").bind(scope).execute(p).await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// A group's sponsor, if it has one.
    pub async fn sponsor(&self, scope: &str) -> Result<Option<SponsorRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT scope, account_id, per_member_daily_cap, created_by, created_at, updated_at \
                 FROM sponsors WHERE scope = $1",
            )
            .bind(scope)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Points counted against a daily limit for `account_id` on `day`: the
    /// free allowance in use (`scope` None) or its sponsored spending in a group.
    pub async fn daily_usage(&self, scope: Option<&str>, account_id: &str, day: i64) -> Result<i64, StoreError> {
        let pool = scope.map(sponsor_pool).unwrap_or_else(|| FREE_POOL.to_string());
        with_pool!(self, p => {
            let row: Option<(i64,)> =
                sqlx::query_as(USAGE).bind(&pool).bind(account_id).bind(day).fetch_optional(p).await?;
            Ok(row.map(|r| r.0).unwrap_or(0))
        })
    }

    /// The account's own quote threshold: None when it never set one (the
    /// operator's default applies), `Some(None)` when it asked never to be
    /// asked, `Some(Some(n))` to be asked above n points.
    pub async fn quote_threshold(&self, account_id: &str) -> Result<Option<Option<i64>>, StoreError> {
        with_pool!(self, p => {
            let row: Option<(Option<i64>,)> =
                sqlx::query_as("SELECT quote_threshold FROM account_pricing WHERE account_id = $1")
                    .bind(account_id)
                    .fetch_optional(p)
                    .await?;
            Ok(row.map(|r| r.0))
        })
    }

    /// Stores the account's quote threshold (None: never ask).
    pub async fn set_quote_threshold(
        &self,
        account_id: &str,
        threshold: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO account_pricing (account_id, quote_threshold, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (account_id) DO UPDATE SET quote_threshold = excluded.quote_threshold, \
                 updated_at = excluded.updated_at",
            )
            .bind(account_id)
            .bind(threshold)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn funds(own: i64, free_used: i64, sponsor: Option<(i64, i64, i64)>) -> Funds {
        Funds {
            queued: 0,
            own: Balance { balance: own, held: 0 },
            free_used,
            sponsor: sponsor.map(|(cap, used, available)| SponsorFunds {
                scope: "g".into(),
                account_id: "s".into(),
                cap,
                used,
                available,
            }),
        }
    }

    #[test]
    fn sponsor_first_then_allowance_then_balance() {
        let p = decide(5, 3, &funds(10, 0, Some((10, 5, 100))));
        assert!(matches!(p.paid_by, PaidBy::Sponsor { .. }), "{p:?}");
        let p = decide(5, 3, &funds(10, 0, Some((10, 6, 100))));
        assert_eq!(p.paid_by, PaidBy::Own { allowance: 3, balance: 2 }, "over the cap");
        let p = decide(5, 3, &funds(10, 1, Some((10, 0, 4))));
        assert_eq!(p.paid_by, PaidBy::Own { allowance: 2, balance: 3 }, "sponsor short");
        assert_eq!((p.available, p.allowance_left, p.affordable), (12, 2, true));
        let p = decide(5, 3, &funds(1, 3, None));
        assert_eq!((p.paid_by, p.affordable, p.available), (PaidBy::Own { allowance: 0, balance: 5 }, false, 1));
        assert_eq!(decide(0, 0, &funds(0, 0, None)).paid_by, PaidBy::Free);
        assert_eq!(decide(4, 9, &funds(0, 0, None)).paid_by, PaidBy::Own { allowance: 4, balance: 0 });
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(DAY_MS - 1), 0);
        assert_eq!(utc_day(DAY_MS), 1);
        assert_eq!(utc_day(-1), -1);
    }
}
