//! The points ledger.
//!
//! Every change to an account's points is one append-only ledger entry with a
//! unique idempotency key, so posting the same event twice (a retried request,
//! a duplicate completion) is a no-op. The `balances` row caches the ledger's
//! sums and is updated by one conditional `UPDATE` in the same transaction as
//! the entry: the row lock (PostgreSQL) or the single writer (SQLite) makes
//! "check available, then take" atomic, so no number of concurrent spends can
//! overdraw an account.
//!
//! Jobs reserve their price with a hold when they are queued
//! ([`Store::insert_job_with_hold`]) and settle it exactly once when they end:
//! a capture charges what was used (the rest returns to the account in the
//! same entry) or a release returns it all.

use crate::db::BeginWrite as _;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::db::{Store, StoreError, safe, with_pool};
use crate::jobs::JobRow;

/// The daily-usage pool of the free allowance (`daily_usage.pool`); a
/// sponsorship's pool is `sponsor:<scope>`.
pub(crate) const FREE_POOL: &str = "free";

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Points given by an operator or the starting grant.
    Grant,
    /// Points bought or paid in.
    Deposit,
    /// Points reserved for a queued job.
    Hold,
    /// A job's hold settled by charging what it used.
    Capture,
    /// A job's hold returned in full (failed, cancelled, timed out).
    Release,
    /// Points given back for a job that was charged.
    Refund,
    /// An operator's correction, up or down.
    Adjustment,
    /// Points earned (sponsorship, referrals).
    Reward,
    /// Points moved from one account to another when two accounts are
    /// linked into one (a pair of entries: out of one, into the other).
    Transfer,
}

impl EntryKind {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Deposit => "deposit",
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Release => "release",
            EntryKind::Refund => "refund",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Reward => "reward",
            EntryKind::Transfer => "transfer",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<EntryKind> {
        Some(match s {
            "grant" => EntryKind::Grant,
            "deposit" => EntryKind::Deposit,
            "hold" => EntryKind::Hold,
            "capture" => EntryKind::Capture,
            "release" => EntryKind::Release,
            "refund" => EntryKind::Refund,
            "adjustment" => EntryKind::Adjustment,
            "reward" => EntryKind::Reward,
            "transfer" => EntryKind::Transfer,
            _ => return None,
        })
    }

    /// Kinds that move points in or out directly; holds and their settlement
    /// go through the job methods so a hold can never be settled twice.
    fn is_direct(self) -> bool {
        !matches!(self, EntryKind::Hold | EntryKind::Capture | EntryKind::Release)
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct LedgerEntry {
    /// Position in the ledger (increasing).
    pub seq: i64,
    /// Unique key; a second entry with the same key is never written.
    pub idem_key: String,
    /// Account whose points changed.
    pub account_id: String,
    /// Kind text; see [`LedgerEntry::kind`].
    pub kind: String,
    /// Change to the balance (negative for captures and downward adjustments).
    pub amount: i64,
    /// Change to the points on hold.
    pub held: i64,
    /// Job the entry belongs to, if any.
    pub job_id: Option<String>,
    /// Why (operator's words, or the event).
    pub reason: Option<String>,
    /// Who made it: `system`, `worker:<id>`, `cli:<user>`, an account id.
    pub actor: String,
    /// When (Unix ms).
    pub created_at: i64,
    /// Change to the free daily allowance in use (a hold draws, a release or
    /// a capture of less than the hold returns).
    pub allowance: i64,
    /// For a sponsored job: the member the sponsor paid for.
    pub beneficiary: Option<String>,
}

impl LedgerEntry {
    /// Parsed kind (None for text written by a newer version).
    pub fn kind(&self) -> Option<EntryKind> {
        EntryKind::parse(&self.kind)
    }
}

/// An account's points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Points owned (sum of the ledger's amounts).
    pub balance: i64,
    /// Points reserved by active holds.
    pub held: i64,
}

impl Balance {
    /// Points that can be spent now.
    pub fn available(&self) -> i64 {
        self.balance - self.held
    }
}

/// A direct entry to post (grant, deposit, refund, adjustment, reward).
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Unique key; reposting it changes nothing.
    pub idem_key: &'a str,
    /// Account.
    pub account_id: &'a str,
    /// Kind (not hold, capture or release).
    pub kind: EntryKind,
    /// Change to the balance.
    pub amount: i64,
    /// Related job, if any.
    pub job_id: Option<&'a str>,
    /// Why.
    pub reason: Option<&'a str>,
    /// Who.
    pub actor: &'a str,
}

/// What posting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// The entry was written and the balance changed.
    Applied(LedgerEntry),
    /// An entry with this key already existed; nothing changed. Holds the earlier entry.
    Duplicate(LedgerEntry),
}

impl Posted {
    /// The new or earlier entry.
    pub fn entry(&self) -> &LedgerEntry {
        match self {
            Posted::Applied(e) | Posted::Duplicate(e) => e,
        }
    }
}

/// How a job's hold ended up after a settle call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Settlement {
    /// This call charged `charged` of the `held` points and returned the rest.
    Captured {
        /// Points charged.
        charged: i64,
        /// Points that had been held.
        held: i64,
    },
    /// This call returned all `held` points.
    Released {
        /// Points that had been held.
        held: i64,
    },
    /// The hold had been settled before; nothing changed.
    AlreadySettled,
    /// The job never had a hold (free tool, or queued before points existed).
    NoHold,
}

/// A job's hold.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct HoldRow {
    /// The job.
    pub job_id: String,
    /// Whose points.
    pub account_id: String,
    /// The job's whole price: points reserved from the balance plus `allowance`.
    pub amount: i64,
    /// `active`, `captured` or `released`.
    pub state: String,
    /// Points charged, once captured.
    pub charged: Option<i64>,
    /// When placed.
    pub created_at: i64,
    /// When captured or released.
    pub settled_at: Option<i64>,
    /// Part of `amount` drawn from the free daily allowance instead of the balance.
    pub allowance: i64,
    /// For a sponsored job (`account_id` is the sponsor): the member.
    pub beneficiary: Option<String>,
    /// For a sponsored job: the group whose sponsor pays.
    pub sponsor_scope: Option<String>,
    /// UTC day (since 1970-01-01) whose allowance or sponsorship cap the hold counts against.
    pub day: Option<i64>,
}

impl HoldRow {
    /// Points reserved from the payer's balance (the rest is free allowance).
    pub fn from_balance(&self) -> i64 {
        self.amount - self.allowance
    }
}

/// Why a ledger operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The account has fewer available points than the operation needs.
    #[error("not enough points: {needed} needed, {available} available")]
    Insufficient {
        /// Points the operation needed.
        needed: i64,
        /// Points the account had available.
        available: i64,
    },
    /// The account already has as many queued jobs as it may.
    #[error("{queued} jobs queued, the most allowed is {limit}")]
    QuotaExceeded {
        /// The most queued jobs allowed.
        limit: i64,
        /// Jobs the account has queued.
        queued: i64,
    },
    /// The request itself is wrong (kind, amount).
    #[error("ledger entry refused: {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        LedgerError::Store(StoreError::Sql(e))
    }
}

/// One inconsistency found by [`Store::audit_points`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    /// The account concerned, if one.
    pub account_id: Option<String>,
    /// The job concerned, if one.
    pub job_id: Option<String>,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(a) = &self.account_id {
            write!(f, "account {a}: ")?;
        }
        if let Some(j) = &self.job_id {
            write!(f, "job {j}: ")?;
        }
        f.write_str(&self.problem)
    }
}

const ENTRY_COLUMNS: &str =
    "seq, idem_key, account_id, kind, amount, held, job_id, reason, actor, created_at, allowance, beneficiary";

const HOLD_COLUMNS: &str =
    "job_id, account_id, amount, state, charged, created_at, settled_at, allowance, beneficiary, sponsor_scope, day";

/// The statement that appends one entry (nothing on a duplicate key),
/// returning it. Binds: key, account, kind, amount, held, job, reason, actor,
/// time, allowance, beneficiary.
pub(crate) fn insert_entry_sql() -> String {
    format!(
        "INSERT INTO ledger (idem_key, account_id, kind, amount, held, job_id, reason, actor, created_at, allowance, \
         beneficiary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (idem_key) DO NOTHING \
         RETURNING {ENTRY_COLUMNS}"
    )
}

/// What the one transaction in [`Store::apply`] does with the `holds` table.
pub(crate) enum HoldStep {
    /// Nothing (direct entries).
    None,
    /// Settles the job's active hold: `charge` points (capped at the hold) are
    /// taken, the rest returned. Release is a charge of 0.
    Settle { state: &'static str, charge: i64 },
}

pub(crate) struct Op<'a> {
    pub(crate) kind: EntryKind,
    pub(crate) idem_key: String,
    pub(crate) account_id: String,
    pub(crate) amount: i64,
    pub(crate) held: i64,
    pub(crate) job_id: Option<&'a str>,
    pub(crate) reason: Option<&'a str>,
    pub(crate) actor: &'a str,
    pub(crate) hold: HoldStep,
    pub(crate) now: i64,
    /// A capture's creator share: (spell owner, percent) of the points the
    /// capture took from the payer's balance, posted to the owner as a
    /// `reward` in the same transaction.
    pub(crate) share: Option<(&'a str, u64)>,
    /// Change to the free allowance in use (settlements fill it in).
    pub(crate) allowance: i64,
    /// The sponsored member (settlements fill it in).
    pub(crate) beneficiary: Option<String>,
}

pub(crate) enum Applied {
    Posted(Posted),
    /// A hold was settled: `charged` of its `amount` was taken.
    Settled {
        amount: i64,
        charged: i64,
    },
    /// Settle found no active hold.
    NoActiveHold,
}

/// How [`apply_in_tx!`] ended inside its transaction.
pub(crate) enum InTx {
    /// Done: commit (or release the savepoint).
    Done(Applied),
    /// A settlement found no active hold: nothing was changed.
    NoActiveHold,
    /// The entry's idempotency key was used before: roll back.
    Duplicate,
    /// The balance cannot take it (overdraft or overflow): roll back.
    Short,
    /// A creator share would overflow its owner's balance: roll back.
    ShareOverflow { owner: String, share: i64 },
}

/// The statements of one ledger operation inside an open transaction (the
/// body is compiled once per database by `with_pool!`, so this is a macro
/// rather than a generic fn). Evaluates to `Result<InTx, sqlx::Error>`; on
/// anything but [`InTx::Done`] the caller must roll the transaction (or its
/// savepoint) back. `$op` is updated with what the settled hold decided.
macro_rules! apply_in_tx {
    ($tx:ident, $op:ident) => {{
        let insert_entry = $crate::ledger::insert_entry_sql();
        // (charged of amount, and the daily usage to give back: pool, account, day, points)
        let mut settled: Option<(i64, i64)> = None;
        let mut returns: Vec<(String, String, i64, i64)> = vec![];
        let r: Result<$crate::ledger::InTx, sqlx::Error> = async {
            if let $crate::ledger::HoldStep::Settle { state, charge } = $op.hold {
                // Flipping the hold's state first is what makes a capture and
                // a release of the same job mutually exclusive.
                let row: Option<$crate::ledger::SettledHold> = sqlx::query_as(
                    "UPDATE holds SET state = $1, charged = CASE WHEN $2 > amount THEN amount ELSE $2 END, \
                     settled_at = $3 WHERE job_id = $4 AND state = 'active' \
                     RETURNING account_id, amount, charged, allowance, beneficiary, sponsor_scope, day",
                )
                .bind(state)
                .bind(charge)
                .bind($op.now)
                .bind($op.job_id)
                .fetch_optional(&mut *$tx)
                .await?;
                let Some(h) = row else {
                    return Ok($crate::ledger::InTx::NoActiveHold);
                };
                // The charge is taken from the free allowance first; what was
                // not used returns to the balance first.
                let from_allowance = h.charged.min(h.allowance);
                $op.account_id = h.account_id.clone();
                $op.amount = -(h.charged - from_allowance);
                $op.held = -(h.amount - h.allowance);
                $op.allowance = -(h.allowance - from_allowance);
                $op.beneficiary = h.beneficiary.clone();
                settled = Some((h.amount, h.charged));
                if let Some(day) = h.day {
                    if h.allowance > from_allowance {
                        returns.push((
                            $crate::ledger::FREE_POOL.to_string(),
                            h.account_id.clone(),
                            day,
                            h.allowance - from_allowance,
                        ));
                    }
                    if let (Some(scope), Some(member)) = (&h.sponsor_scope, &h.beneficiary)
                        && h.amount > h.charged
                    {
                        returns.push((format!("sponsor:{scope}"), member.clone(), day, h.amount - h.charged));
                    }
                }
            }
            sqlx::query(
                "INSERT INTO balances (account_id, balance, held, updated_at) VALUES ($1, 0, 0, $2) \
                 ON CONFLICT (account_id) DO NOTHING",
            )
            .bind(&$op.account_id)
            .bind($op.now)
            .execute(&mut *$tx)
            .await?;
            let entry: Option<$crate::ledger::LedgerEntry> = sqlx::query_as($crate::db::safe(&insert_entry))
                .bind(&$op.idem_key)
                .bind(&$op.account_id)
                .bind($op.kind.as_str())
                .bind($op.amount)
                .bind($op.held)
                .bind($op.job_id)
                .bind($op.reason)
                .bind($op.actor)
                .bind($op.now)
                .bind($op.allowance)
                .bind(&$op.beneficiary)
                .fetch_optional(&mut *$tx)
                .await?;
            let Some(entry) = entry else {
                return Ok($crate::ledger::InTx::Duplicate);
            };
            // The whole overdraft rule is this WHERE: evaluated on the locked
            // row, so concurrent spends see each other's effect. Its first two
            // terms keep the sums below from overflowing (checked in SQL, so a
            // concurrent entry cannot slip between a check and the write):
            // SQLite would turn an overflowing sum into a float, PostgreSQL
            // would fail the statement.
            let r = sqlx::query(
                "UPDATE balances SET balance = balance + $1, held = held + $2, updated_at = $3 \
                 WHERE account_id = $4 AND balance <= $5 AND held <= $6 \
                 AND held + $2 >= 0 AND balance + $1 >= held + $2",
            )
            .bind($op.amount)
            .bind($op.held)
            .bind($op.now)
            .bind(&$op.account_id)
            .bind(i64::MAX - $op.amount.max(0))
            .bind(i64::MAX - $op.held.max(0))
            .execute(&mut *$tx)
            .await?;
            if r.rows_affected() != 1 {
                return Ok($crate::ledger::InTx::Short);
            }
            // After the balance row: the same lock order as a submission, which
            // locks balances before it touches daily usage.
            for (pool, account, day, points) in &returns {
                sqlx::query("UPDATE daily_usage SET used = used - $1 WHERE pool = $2 AND account_id = $3 AND day = $4")
                    .bind(points)
                    .bind(pool)
                    .bind(account)
                    .bind(day)
                    .execute(&mut *$tx)
                    .await?;
            }
            // A creator's share of what this capture took from the payer's balance.
            if let (Some((owner, percent)), Some(_), Some(job_id)) = ($op.share, settled, $op.job_id) {
                let paid = i128::from((-$op.amount).max(0));
                let share = (paid * i128::from(percent.min(100)) / 100) as i64;
                if share > 0 && owner != $op.account_id {
                    sqlx::query(
                        "INSERT INTO balances (account_id, balance, held, updated_at) VALUES ($1, 0, 0, $2) \
                         ON CONFLICT (account_id) DO NOTHING",
                    )
                    .bind(owner)
                    .bind($op.now)
                    .execute(&mut *$tx)
                    .await?;
                    let key = format!("creator_share:{job_id}");
                    let reason = format!("creator share ({percent} %) of a cast of your spell");
                    let entry: Option<$crate::ledger::LedgerEntry> = sqlx::query_as($crate::db::safe(&insert_entry))
                        .bind(&key)
                        .bind(owner)
                        .bind($crate::ledger::EntryKind::Reward.as_str())
                        .bind(share)
                        .bind(0i64)
                        .bind(Some(job_id))
                        .bind(Some(reason.as_str()))
                        .bind($op.actor)
                        .bind($op.now)
                        .bind(0i64)
                        .bind(None::<String>)
                        .fetch_optional(&mut *$tx)
                        .await?;
                    if entry.is_some() {
                        let r = sqlx::query(
                            "UPDATE balances SET balance = balance + $1, updated_at = $2 \
                             WHERE account_id = $3 AND balance <= $4",
                        )
                        .bind(share)
                        .bind($op.now)
                        .bind(owner)
                        .bind(i64::MAX - share)
                        .execute(&mut *$tx)
                        .await?;
                        if r.rows_affected() != 1 {
                            return Ok($crate::ledger::InTx::ShareOverflow { owner: owner.to_string(), share });
                        }
                    }
                }
            }
            Ok($crate::ledger::InTx::Done(match settled {
                Some((amount, charged)) => $crate::ledger::Applied::Settled { amount, charged },
                None => $crate::ledger::Applied::Posted($crate::ledger::Posted::Applied(entry)),
            }))
        }
        .await;
        r
    }};
}
pub(crate) use apply_in_tx;

/// The ledger operation that settles `job_id`'s hold: `state` "captured"
/// (taking `charge`, capped at the hold) or "released".
pub(crate) fn settle_op<'a>(
    job_id: &'a str,
    state: &'static str,
    charge: i64,
    actor: &'a str,
    reason: Option<&'a str>,
    share: Option<(&'a str, u64)>,
    now: i64,
) -> Op<'a> {
    let kind = if state == "captured" { EntryKind::Capture } else { EntryKind::Release };
    Op {
        kind,
        idem_key: format!("{kind}:{job_id}"),
        account_id: String::new(),
        amount: 0,
        held: 0,
        job_id: Some(job_id),
        reason,
        actor,
        hold: HoldStep::Settle { state, charge },
        now,
        share,
        allowance: 0,
        beneficiary: None,
    }
}

/// What a settlement of `kind` that took `charged` of `amount` held points did.
pub(crate) fn settlement_of(kind: EntryKind, amount: i64, charged: i64) -> Settlement {
    match kind {
        EntryKind::Capture => Settlement::Captured { charged, held: amount },
        _ => Settlement::Released { held: amount },
    }
}

impl Store {
    /// Posts a direct entry (grant, deposit, refund, adjustment, reward).
    /// Refused with [`LedgerError::Insufficient`] if a negative amount would
    /// take more than the account has available.
    pub async fn post_entry(&self, e: &NewEntry<'_>, now: i64) -> Result<Posted, LedgerError> {
        if !e.kind.is_direct() {
            return Err(LedgerError::Invalid {
                field: "kind",
                reason: format!("{} entries are made by submitting and finishing jobs", e.kind),
            });
        }
        if e.amount == 0 {
            return Err(LedgerError::Invalid { field: "amount", reason: "must not be zero".into() });
        }
        if e.idem_key.is_empty() {
            return Err(LedgerError::Invalid { field: "idem_key", reason: "must not be empty".into() });
        }
        let op = Op {
            kind: e.kind,
            idem_key: e.idem_key.to_string(),
            account_id: e.account_id.to_string(),
            amount: e.amount,
            held: 0,
            job_id: e.job_id,
            reason: e.reason,
            actor: e.actor,
            hold: HoldStep::None,
            now,
            share: None,
            allowance: 0,
            beneficiary: None,
        };
        match self.apply(op).await? {
            Applied::Posted(p) => Ok(p),
            Applied::Settled { .. } | Applied::NoActiveHold => unreachable!("direct entries do not settle holds"),
        }
    }

    /// Settles a job's hold by charging `charge` points (capped at the hold);
    /// the rest returns to the account. Idempotent: once a job's hold is
    /// captured or released, further calls return [`Settlement::AlreadySettled`].
    pub async fn capture_hold(
        &self,
        job_id: &str,
        charge: i64,
        actor: &str,
        now: i64,
    ) -> Result<Settlement, StoreError> {
        self.settle(job_id, "captured", charge.max(0), actor, None, None, now).await
    }

    /// [`Store::capture_hold`] that also moves `percent` (0–100, rounded
    /// down) of the points the capture took from the payer's balance to
    /// `owner` (a spell's creator), as a `reward` entry with the key
    /// `creator_share:<job id>` in the same transaction: both happen or
    /// neither, once. Nothing moves to the payer itself.
    pub async fn capture_hold_with_share(
        &self,
        job_id: &str,
        charge: i64,
        actor: &str,
        share: Option<(&str, u64)>,
        now: i64,
    ) -> Result<Settlement, StoreError> {
        self.settle(job_id, "captured", charge.max(0), actor, None, share, now).await
    }

    /// Returns a job's whole hold to its account. Idempotent like [`Store::capture_hold`].
    pub async fn release_hold(
        &self,
        job_id: &str,
        actor: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<Settlement, StoreError> {
        self.settle(job_id, "released", 0, actor, reason, None, now).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        job_id: &str,
        state: &'static str,
        charge: i64,
        actor: &str,
        reason: Option<&str>,
        share: Option<(&str, u64)>,
        now: i64,
    ) -> Result<Settlement, StoreError> {
        let op = settle_op(job_id, state, charge, actor, reason, share, now);
        let kind = op.kind;
        match self.apply(op).await {
            Ok(Applied::Settled { amount, charged }) => Ok(settlement_of(kind, amount, charged)),
            Ok(Applied::Posted(_)) => Ok(Settlement::AlreadySettled),
            Ok(Applied::NoActiveHold) => Ok(if self.hold_for_job(job_id).await?.is_some() {
                Settlement::AlreadySettled
            } else {
                Settlement::NoHold
            }),
            Err(LedgerError::Store(e)) => Err(e),
            // A settlement never lowers available points, so the balance
            // check cannot refuse it; if it does, the cache is corrupt.
            Err(e) => Err(StoreError::Corrupt(format!("settling job {job_id}: {e}"))),
        }
    }

    /// The one transaction behind every direct entry and settlement.
    async fn apply(&self, mut op: Op<'_>) -> Result<Applied, LedgerError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            match apply_in_tx!(tx, op)? {
                InTx::Done(applied) => {
                    tx.commit().await?;
                    Ok(applied)
                }
                InTx::NoActiveHold => {
                    tx.rollback().await?;
                    Ok(Applied::NoActiveHold)
                }
                InTx::Duplicate => {
                    tx.rollback().await?;
                    let earlier: LedgerEntry = sqlx::query_as(safe(&format!(
                        "SELECT {ENTRY_COLUMNS} FROM ledger WHERE idem_key = $1"
                    )))
                    .bind(&op.idem_key)
                    .fetch_one(p)
                    .await?;
                    Ok(Applied::Posted(Posted::Duplicate(earlier)))
                }
                InTx::Short => {
                    tx.rollback().await?;
                    let b = self.balance(&op.account_id).await?;
                    if b.balance.checked_add(op.amount).is_none() || b.held.checked_add(op.held).is_none() {
                        return Err(LedgerError::Invalid {
                            field: "amount",
                            reason: format!(
                                "{} would take the balance of {} past the most points an account can hold ({})",
                                op.amount,
                                b.balance,
                                i64::MAX
                            ),
                        });
                    }
                    let available = b.available();
                    Err(LedgerError::Insufficient { needed: op.held.max(-op.amount).max(0), available })
                }
                InTx::ShareOverflow { owner, share } => {
                    tx.rollback().await?;
                    Err(LedgerError::Invalid {
                        field: "amount",
                        reason: format!("a creator share of {share} would overflow {owner}'s balance"),
                    })
                }
            }
        })
    }

    /// An account's points (zero if it never had any).
    pub async fn balance(&self, account_id: &str) -> Result<Balance, StoreError> {
        with_pool!(self, p => {
            let row: Option<(i64, i64)> = sqlx::query_as("SELECT balance, held FROM balances WHERE account_id = $1")
                .bind(account_id)
                .fetch_optional(p)
                .await?;
            Ok(row.map(|(balance, held)| Balance { balance, held }).unwrap_or_default())
        })
    }

    /// An account's ledger entries, newest first; `before_seq` pages.
    pub async fn ledger_history(
        &self,
        account_id: &str,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {ENTRY_COLUMNS} FROM ledger WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
            )))
            .bind(account_id)
            .bind(before_seq.unwrap_or(i64::MAX))
            .bind(limit.clamp(1, 10_000))
            .fetch_all(p)
            .await?)
        })
    }

    /// Every ledger entry about one job, oldest first.
    pub async fn ledger_for_job(&self, job_id: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!("SELECT {ENTRY_COLUMNS} FROM ledger WHERE job_id = $1 ORDER BY seq")))
                .bind(job_id)
                .fetch_all(p)
                .await?)
        })
    }

    /// A job's hold, if it has one.
    pub async fn hold_for_job(&self, job_id: &str) -> Result<Option<HoldRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!("SELECT {HOLD_COLUMNS} FROM holds WHERE job_id = $1")))
            .bind(job_id)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Jobs that reached a terminal state with their hold still active (the
    /// process died between finishing the job and settling it), oldest first.
    pub async fn terminal_jobs_with_active_holds(&self, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        let ids: Vec<(String,)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT h.job_id FROM holds h JOIN jobs j ON j.id = h.job_id WHERE h.state = 'active' \
                 AND j.status IN ('succeeded','failed','cancelled') ORDER BY h.created_at LIMIT $1",
            )
            .bind(limit)
            .fetch_all(p)
            .await?
        });
        let mut out = Vec::with_capacity(ids.len());
        for (id,) in ids {
            if let Some(j) = self.get_job(&id).await? {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// Checks the points invariants: cached balances equal the ledger's sums,
    /// no balance or hold total is negative or exceeds the balance, active
    /// holds add up to what is cached as held, every terminal job with a hold
    /// has exactly one capture or release, and no active hold belongs to a
    /// terminal job. The free allowance and sponsorship counters must equal
    /// what the holds have in use (active: drawn; captured: charged; released:
    /// nothing), and each job's ledger entries must move the allowance by
    /// exactly that. Returns every problem found (empty when clean).
    pub async fn audit_points(&self) -> Result<Vec<AuditProblem>, StoreError> {
        type Sums = BTreeMap<String, (i64, i64)>;
        type Usage = Vec<(String, String, i64, i64)>;
        type Texts = Vec<(String, String, String)>;
        type Report<'a> = &'a mut dyn FnMut(Option<&str>, Option<&str>, String);
        // Numbers are read as text and parsed here, so a row no 64-bit
        // integer can hold (a float SQLite stored for an overflowing sum, a
        // sum past the range) is reported, never a failed audit.
        let (cached, ledger, rest): (Texts, Texts, Result<_, sqlx::Error>) = with_pool!(self, p => {
            let cached: Texts = sqlx::query_as(
                "SELECT account_id, CAST(balance AS TEXT), CAST(held AS TEXT) FROM balances",
            )
            .fetch_all(p)
            .await?;
            let grouped: Result<Texts, sqlx::Error> = sqlx::query_as(
                "SELECT account_id, CAST(SUM(amount) AS TEXT), CAST(SUM(held) AS TEXT) FROM ledger GROUP BY account_id",
            )
            .fetch_all(p)
            .await;
            let ledger = match grouped {
                Ok(rows) => rows,
                // SQLite's SUM fails on an integer overflow: add up row by row.
                Err(_) => {
                    let rows: Texts = sqlx::query_as(
                        "SELECT account_id, CAST(amount AS TEXT), CAST(held AS TEXT) FROM ledger",
                    )
                    .fetch_all(p)
                    .await?;
                    let mut sums: BTreeMap<String, (Option<i128>, Option<i128>)> = BTreeMap::new();
                    for (account, amount, held) in rows {
                        let e = sums.entry(account).or_insert((Some(0), Some(0)));
                        e.0 = e.0.zip(amount.trim().parse::<i64>().ok()).map(|(s, a)| s + i128::from(a));
                        e.1 = e.1.zip(held.trim().parse::<i64>().ok()).map(|(s, h)| s + i128::from(h));
                    }
                    let text = |v: Option<i128>| v.map_or_else(|| "not a whole number".to_string(), |v| v.to_string());
                    sums.into_iter().map(|(a, (b, h))| (a, text(b), text(h))).collect()
                }
            };
            let rest = async {
                let active: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT account_id, CAST(SUM(amount - allowance) AS BIGINT) FROM holds WHERE state = 'active' \
                     GROUP BY account_id",
                )
                .fetch_all(p)
                .await?;
                let holds: Vec<HoldAudit> = sqlx::query_as(
                    "SELECT h.job_id, h.account_id, h.amount, h.state, j.status, h.charged, h.allowance, h.beneficiary, \
                     h.sponsor_scope, h.day, \
                     (SELECT COUNT(*) FROM ledger l WHERE l.job_id = h.job_id AND l.kind IN ('capture','release')) AS settlements, \
                     (SELECT COUNT(*) FROM ledger l WHERE l.job_id = h.job_id AND l.kind = 'hold' \
                        AND l.held = h.amount - h.allowance AND l.allowance = h.allowance) AS hold_entries, \
                     (SELECT CAST(COALESCE(SUM(l.allowance), 0) AS BIGINT) FROM ledger l WHERE l.job_id = h.job_id) \
                        AS ledger_allowance \
                     FROM holds h LEFT JOIN jobs j ON j.id = h.job_id ORDER BY h.created_at",
                )
                .fetch_all(p)
                .await?;
                let usage: Usage = sqlx::query_as("SELECT pool, account_id, day, used FROM daily_usage WHERE used <> 0")
                    .fetch_all(p)
                    .await?;
                Ok::<_, sqlx::Error>((active, holds, usage))
            }
            .await;
            (cached, ledger, rest)
        });
        let mut problems = vec![];
        let mut push = |account: Option<&str>, job: Option<&str>, problem: String| {
            problems.push(AuditProblem {
                account_id: account.map(str::to_string),
                job_id: job.map(str::to_string),
                problem,
            });
        };
        let (active, holds, usage) = match rest {
            Ok(r) => r,
            Err(e) => {
                push(None, None, format!("holds and daily usage could not be read: {e}"));
                (vec![], vec![], vec![])
            }
        };
        let mut unreadable = std::collections::BTreeSet::new();
        let mut parse = |rows: Texts, what: &str, push: Report<'_>| -> Sums {
            let mut out = Sums::new();
            for (a, b, h) in rows {
                match (b.trim().parse::<i64>(), h.trim().parse::<i64>()) {
                    (Ok(b), Ok(h)) => {
                        out.insert(a, (b, h));
                    }
                    _ => {
                        push(
                            Some(&a),
                            None,
                            format!("{what} balance {b} held {h} is not a whole number of points in the 64-bit range"),
                        );
                        unreadable.insert(a);
                    }
                }
            }
            out
        };
        let cached: Sums = parse(cached, "cached", &mut push);
        let ledger: Sums = parse(ledger, "the ledger's sum of", &mut push);
        let active: BTreeMap<String, i64> = active.into_iter().collect();
        let accounts: std::collections::BTreeSet<&String> = cached.keys().chain(ledger.keys()).collect();
        for a in accounts.into_iter().filter(|a| !unreadable.contains(*a)) {
            let (cb, ch) = cached.get(a).copied().unwrap_or_default();
            let (lb, lh) = ledger.get(a).copied().unwrap_or_default();
            if (cb, ch) != (lb, lh) {
                push(
                    Some(a),
                    None,
                    format!("cached balance {cb} held {ch} but the ledger sums to balance {lb} held {lh}"),
                );
            }
            if cb < 0 || lb < 0 {
                push(Some(a), None, format!("negative balance (cached {cb}, ledger {lb})"));
            }
            if ch < 0 || ch > cb {
                push(Some(a), None, format!("held {ch} is outside 0..=balance {cb}"));
            }
            let ah = active.get(a).copied().unwrap_or(0);
            if ah != ch {
                push(Some(a), None, format!("active holds total {ah} but {ch} is cached as held"));
            }
        }
        // What the holds have in use, per (pool, account, day).
        let mut expected: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
        for h in holds {
            let job = Some(h.job_id.as_str());
            let acct = Some(h.account_id.as_str());
            let (allowance_in_use, sponsored_in_use) = match h.state.as_str() {
                "active" => (h.allowance, h.amount),
                "captured" => {
                    let charged = h.charged.unwrap_or(0);
                    (charged.min(h.allowance), charged)
                }
                _ => (0, 0),
            };
            if h.allowance < 0 || h.allowance > h.amount {
                push(acct, job, format!("free allowance {} is outside 0..=price {}", h.allowance, h.amount));
            }
            if h.ledger_allowance != allowance_in_use {
                push(
                    acct,
                    job,
                    format!(
                        "ledger moves {} of the free allowance for this job but its {} hold has {allowance_in_use} in use",
                        h.ledger_allowance, h.state
                    ),
                );
            }
            match h.day {
                Some(day) => {
                    if h.allowance > 0 {
                        *expected.entry(("free".into(), h.account_id.clone(), day)).or_default() += allowance_in_use;
                    }
                    if let (Some(scope), Some(member)) = (&h.sponsor_scope, &h.beneficiary) {
                        *expected.entry((format!("sponsor:{scope}"), member.clone(), day)).or_default() +=
                            sponsored_in_use;
                    }
                }
                None if h.allowance > 0 || h.sponsor_scope.is_some() => {
                    push(acct, job, "hold draws on an allowance or sponsorship but has no day".into());
                }
                None => {}
            }
            if h.hold_entries != 1 {
                push(
                    acct,
                    job,
                    format!("hold of {} has {} matching hold entries, expected 1", h.amount, h.hold_entries),
                );
            }
            let terminal = match h.status.as_deref() {
                None => {
                    push(acct, job, "hold belongs to a job that does not exist".into());
                    true
                }
                Some(s) => matches!(s, "succeeded" | "failed" | "cancelled"),
            };
            if terminal {
                if h.state == "active" {
                    push(
                        acct,
                        job,
                        format!(
                            "job is {} but its hold of {} is still active",
                            h.status.as_deref().unwrap_or("missing"),
                            h.amount
                        ),
                    );
                } else if h.settlements != 1 {
                    push(
                        acct,
                        job,
                        format!("terminal job has {} captures/releases, expected exactly 1", h.settlements),
                    );
                }
            } else if h.settlements != 0 || h.state != "active" {
                push(
                    acct,
                    job,
                    format!("job is still {} but its hold is {}", h.status.as_deref().unwrap_or("?"), h.state),
                );
            }
        }
        let recorded: BTreeMap<(String, String, i64), i64> =
            usage.into_iter().map(|(pool, account, day, used)| ((pool, account, day), used)).collect();
        let keys: std::collections::BTreeSet<&(String, String, i64)> = expected.keys().chain(recorded.keys()).collect();
        for key @ (pool, account, day) in keys {
            let (want, got) = (expected.get(key).copied().unwrap_or(0), recorded.get(key).copied().unwrap_or(0));
            if want != got {
                push(
                    Some(account),
                    None,
                    format!("daily usage {pool} on day {day} is {got} but its holds have {want} in use"),
                );
            }
        }
        Ok(problems)
    }
}

/// A hold as its settlement left it.
#[derive(sqlx::FromRow)]
pub(crate) struct SettledHold {
    pub(crate) account_id: String,
    pub(crate) amount: i64,
    pub(crate) charged: i64,
    pub(crate) allowance: i64,
    pub(crate) beneficiary: Option<String>,
    pub(crate) sponsor_scope: Option<String>,
    pub(crate) day: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct HoldAudit {
    job_id: String,
    account_id: String,
    amount: i64,
    state: String,
    status: Option<String>,
    charged: Option<i64>,
    allowance: i64,
    beneficiary: Option<String>,
    sponsor_scope: Option<String>,
    day: Option<i64>,
    settlements: i64,
    hold_entries: i64,
    ledger_allowance: i64,
}
