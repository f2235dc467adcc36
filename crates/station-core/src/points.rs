//! The points economy: prices, the starting grant, operator grants and
//! adjustments, and settling a finished job's hold.
//!
//! The ledger itself (idempotency, overdraft safety, audit) lives in
//! `station_store`; this module decides amounts. A job's price is its tool's
//! [`Cost`] times `points.multiplier`, rounded up. It is held when the job is
//! queued ([`Station::submit`]) and settled once the job ends: a success
//! captures the price (per-second tools: measured run time × rate, never more
//! than the hold), anything else releases the hold in full.
//!
//! Who pays is decided at submit ([`station_store::Store::insert_job_paid`]):
//! a group's sponsor (within its per-member daily cap), else the account —
//! today's free allowance (`points.free_daily`) first, then its balance.
//! Jobs priced above the account's quote threshold (its own, or
//! `points.confirm_above`) are quoted (`Station::quote`) and need confirming.

use station_store::{AccountRow, EntryKind, JobRow, JobStatus, NewEntry, PayTerms, Settlement, StoreError};
pub use station_store::{AuditProblem, Balance, LedgerEntry, LedgerError, PaidBy, Posted, SponsorRow};
use station_tools::Cost;

use crate::Station;
use crate::audit::Actor;

/// The most characters a sponsorship scope may have.
const MAX_SCOPE_LEN: usize = 200;

/// Checks a group scope such as `telegram:-100123` or `discord-guild:987`.
pub fn check_scope(scope: &str) -> Result<(), LedgerError> {
    let bad = |reason: String| Err(LedgerError::Invalid { field: "scope", reason });
    match scope.split_once(':') {
        _ if scope.len() > MAX_SCOPE_LEN => bad(format!("longer than {MAX_SCOPE_LEN} characters")),
        _ if scope.chars().any(char::is_whitespace) => bad(format!("{scope:?} contains spaces")),
        Some((kind, id)) if !kind.is_empty() && !id.is_empty() => Ok(()),
        _ => bad(format!("{scope:?} is not KIND:ID, e.g. telegram:-100123 or discord-guild:987")),
    }
}

/// Points to hold for one run of a tool costing `cost` (0 means free).
pub fn price(cost: &Cost, multiplier: f64) -> i64 {
    scaled(cost.estimate() as f64, multiplier)
}

/// Points to charge for a successful run that took `run_ms` of backend time,
/// given that `held` points were reserved: per-run tools cost their price,
/// per-second tools their rate × the measured seconds (rounded up), and
/// neither ever costs more than was held.
pub fn charge(cost: &Cost, multiplier: f64, run_ms: i64, held: i64) -> i64 {
    let full = match *cost {
        Cost::PerRun(_) => price(cost, multiplier),
        Cost::PerSecond { points, .. } => scaled(points as f64 * run_ms.max(0) as f64 / 1000.0, multiplier),
    };
    full.clamp(0, held.max(0))
}

/// Points to charge for a per-second training that ran `run_ms` at `rate`
/// points a second (every multiplier applied): rounded up, never more than
/// the `held` quote.
pub fn training_charge(rate: f64, run_ms: i64, held: i64) -> i64 {
    scaled(rate * run_ms.max(0) as f64 / 1000.0, 1.0).clamp(0, held.max(0))
}

fn scaled(points: f64, multiplier: f64) -> i64 {
    let v = (points * multiplier).ceil();
    // NaN and negative multipliers make a tool free rather than paying users.
    if v.is_finite() && v > 0.0 { v.min(i64::MAX as f64) as i64 } else { 0 }
}

/// "1 point", "2 points": an amount of points in a sentence.
pub fn plural_points(n: i64) -> String {
    if n.abs() == 1 { format!("{n} point") } else { format!("{n} points") }
}

/// Who made a ledger entry from the command line or an operator tool.
pub fn operator_actor(name: &str) -> String {
    format!("operator:{name}")
}

impl Station {
    /// Gives `account` the configured starting grant unless it already had it
    /// (the idempotency key `grant:start:<account>` makes this safe to call
    /// on every contact).
    pub async fn ensure_starting_grant(&self, account_id: &str) -> Result<(), LedgerError> {
        let n = self.config.points.starting_grant.min(i64::MAX as u64) as i64;
        if n == 0 || self.starting_granted.lock().expect("grant memo").contains(account_id) {
            return Ok(());
        }
        let key = format!("grant:start:{account_id}");
        let entry = NewEntry {
            idem_key: &key,
            account_id,
            kind: EntryKind::Grant,
            amount: n,
            job_id: None,
            reason: Some("starting grant"),
            actor: "system",
        };
        if let Posted::Applied(_) = self.store.post_entry(&entry, station_store::now_ms()).await? {
            crate::telemetry::points("granted", n);
        }
        self.starting_granted.lock().expect("grant memo").insert(account_id.to_string());
        Ok(())
    }

    /// An account's balance, held and available points.
    pub async fn points(&self, account_id: &str) -> Result<Balance, StoreError> {
        self.store.balance(account_id).await
    }

    /// `account_id`'s ledger, newest first: entries with `seq` below
    /// `before` (all when None), at most `limit`.
    pub async fn ledger_history(
        &self,
        account_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.store.ledger_history(account_id, before, limit).await
    }

    /// The ledger entries of one job (its hold, and the capture or release), oldest first.
    pub async fn job_ledger(&self, job_id: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        self.store.ledger_for_job(job_id).await
    }

    /// The points a job was charged (what its capture kept; 0 while it runs
    /// or when it was released).
    pub async fn job_charge(&self, job_id: &str) -> Result<i64, StoreError> {
        let entries = self.job_ledger(job_id).await?;
        Ok(entries.iter().filter(|e| e.kind == EntryKind::Capture.as_str()).map(|e| e.amount.abs()).sum())
    }

    /// Gives `amount` (> 0) points to an account. `idem_key` makes a retried
    /// request a no-op; without one every call is a new grant. Audited
    /// (`points.grant`) when applied.
    pub async fn grant_points(
        &self,
        account: &AccountRow,
        amount: i64,
        reason: &str,
        by: &Actor,
        idem_key: Option<&str>,
    ) -> Result<Posted, LedgerError> {
        if amount <= 0 {
            return Err(LedgerError::Invalid {
                field: "amount",
                reason: format!("a grant must be positive, got {amount}; use an adjustment to take points away"),
            });
        }
        let posted = self.post_operator_entry(account, EntryKind::Grant, amount, reason, &by.who, idem_key).await?;
        if let Posted::Applied(_) = posted {
            crate::telemetry::points("granted", amount);
            let detail = format!("{} to {}: {reason}", plural_points(amount), account.name);
            self.audit(by, "points.grant", &account.id, detail).await;
        }
        Ok(posted)
    }

    /// Creates many new accounts at once, each with identity
    /// `provider:subject` and `grant` points granted (a ledger entry per
    /// account, so balances and `audit_points` agree), in chunked multi-row
    /// transactions — for simulations and imports where one transaction per
    /// account would take minutes. Every identity must be new. One audit
    /// entry (`points.grant`) records the whole batch. Refused before
    /// anything is stored when `grant` is not positive, `provider` is empty,
    /// or a subject or name is empty.
    pub async fn create_accounts_with_grant(
        &self,
        provider: &str,
        accounts: &[(String, String)],
        grant: i64,
        reason: &str,
        by: &Actor,
    ) -> Result<Vec<AccountRow>, LedgerError> {
        if grant <= 0 {
            return Err(LedgerError::Invalid { field: "grant", reason: format!("must be positive, got {grant}") });
        }
        if provider.is_empty() {
            return Err(LedgerError::Invalid { field: "provider", reason: "must not be empty".into() });
        }
        if let Some((subject, _)) = accounts.iter().find(|(s, n)| s.is_empty() || n.is_empty()) {
            return Err(LedgerError::Invalid {
                field: "accounts",
                reason: format!("every account needs a subject and a name (subject {subject:?})"),
            });
        }
        let new: Vec<station_store::NewBulkAccount> = accounts
            .iter()
            .map(|(subject, name)| station_store::NewBulkAccount {
                provider: provider.to_owned(),
                subject: subject.clone(),
                name: name.clone(),
            })
            .collect();
        let rows =
            self.store.create_accounts_bulk(&new, Some((grant, reason, &by.who)), station_store::now_ms()).await?;
        let total = grant.checked_mul(rows.len() as i64).unwrap_or(i64::MAX);
        crate::telemetry::points("granted", total);
        let detail = format!("{} to each of {} new {provider} accounts: {reason}", plural_points(grant), rows.len());
        self.audit(by, "points.grant", provider, detail).await;
        Ok(rows)
    }

    /// Corrects an account's points up or down (never below what is held).
    /// Audited (`points.adjust`) when applied.
    pub async fn adjust_points(
        &self,
        account: &AccountRow,
        amount: i64,
        reason: &str,
        by: &Actor,
        idem_key: Option<&str>,
    ) -> Result<Posted, LedgerError> {
        let posted =
            self.post_operator_entry(account, EntryKind::Adjustment, amount, reason, &by.who, idem_key).await?;
        if let Posted::Applied(_) = posted {
            let detail = format!("{amount:+} points for {}: {reason}", account.name);
            self.audit(by, "points.adjust", &account.id, detail).await;
        }
        Ok(posted)
    }

    async fn post_operator_entry(
        &self,
        account: &AccountRow,
        kind: EntryKind,
        amount: i64,
        reason: &str,
        actor: &str,
        idem_key: Option<&str>,
    ) -> Result<Posted, LedgerError> {
        if reason.trim().is_empty() {
            return Err(LedgerError::Invalid { field: "reason", reason: "say why (it is kept in the ledger)".into() });
        }
        let max = i64::try_from(self.config.points.max_amount).unwrap_or(i64::MAX);
        if amount.checked_abs().is_none_or(|a| a > max) {
            return Err(LedgerError::Invalid {
                field: "amount",
                reason: format!("{amount} is more than the {max} points one entry may move (points.max_amount)"),
            });
        }
        let generated = format!("{kind}:{}", uuid::Uuid::now_v7().simple());
        let entry = NewEntry {
            idem_key: idem_key.unwrap_or(&generated),
            account_id: &account.id,
            kind,
            amount,
            job_id: None,
            reason: Some(reason),
            actor,
        };
        self.store.post_entry(&entry, station_store::now_ms()).await
    }

    /// Settles the hold of a job that has ended: captures the price of a
    /// success, releases the hold of anything else. Returns None while the job
    /// is still queued or running (or does not exist). Safe to call any number
    /// of times; only the first call after the job ended changes anything.
    pub async fn settle_job(&self, job_id: &str, actor: &str) -> Result<Option<Settlement>, StoreError> {
        let Some(job) = self.store.get_job(job_id).await? else { return Ok(None) };
        self.settle_row(&job, actor).await
    }

    /// The owner of the spell `job` is a step of, when a creator share is
    /// configured and the spell is someone else's.
    async fn creator_share_owner(&self, job: &JobRow) -> Result<Option<String>, StoreError> {
        if self.config.spells.creator_share_percent == 0 {
            return Ok(None);
        }
        let Some(cast) = self.store.cast_of_job(&job.id).await? else { return Ok(None) };
        let Some(cast) = self.store.cast(&cast).await? else { return Ok(None) };
        let Some(spell) = self.store.spell(&cast.spell_id).await? else { return Ok(None) };
        Ok(Some(spell.owner_id).filter(|o| *o != job.account_id))
    }

    async fn settle_row(&self, job: &JobRow, actor: &str) -> Result<Option<Settlement>, StoreError> {
        let now = station_store::now_ms();
        match job.status() {
            JobStatus::Succeeded => {
                let Some(hold) = self.store.hold_for_job(&job.id).await? else { return Ok(Some(Settlement::NoHold)) };
                let run_ms = job.finished_at.unwrap_or(now) - job.started_at.or(job.dispatched_at).unwrap_or(now);
                // A tool deleted since submission is charged the hold: the
                // price agreed when the job was accepted.
                let amount = match (crate::training::per_second_rate(job), self.tools.get(&job.tool_id)) {
                    // A per-second training: the rate agreed at submit × the measured seconds.
                    (Some(rate), _) => training_charge(rate, run_ms, hold.amount),
                    (None, Some(tool)) => {
                        let model: f64 = serde_json::from_str::<serde_json::Value>(&job.params)
                            .ok()
                            .and_then(|p| p.get(crate::models::MULTIPLIER_PARAM)?.as_f64())
                            .unwrap_or(1.0);
                        charge(&tool.cost, self.config.points.multiplier * model, run_ms, hold.amount)
                    }
                    (None, None) => hold.amount,
                };
                let owner = self.creator_share_owner(job).await?;
                let share = owner.as_deref().map(|o| (o, self.config.spells.creator_share_percent));
                let settled = self.store.capture_hold_with_share(&job.id, amount, actor, share, now).await?;
                if let Settlement::Captured { charged, held } = settled {
                    crate::telemetry::points("captured", charged);
                    crate::telemetry::points("released", held - charged);
                }
                Ok(Some(settled))
            }
            JobStatus::Failed | JobStatus::Cancelled => {
                let reason = job.error_code.clone().unwrap_or_else(|| job.status.clone());
                let settled = self.store.release_hold(&job.id, actor, Some(&reason), now).await?;
                if let Settlement::Released { held } = settled {
                    crate::telemetry::points("released", held);
                }
                Ok(Some(settled))
            }
            JobStatus::Queued | JobStatus::Dispatched | JobStatus::Running => Ok(None),
        }
    }

    /// How a worker's finish of `job` (ending as `status`, with the error
    /// code `code`) settles its hold in the finish's own transaction — one
    /// commit per job instead of two — when the claimed row decides it: a
    /// release, or the capture of a per-run price. None when the settlement
    /// needs what only the recorded row or other tables know (a per-second
    /// price needs the recorded run time; a creator share the spell's owner):
    /// then [`Station::settle_job`] settles it after the finish.
    pub(crate) fn finish_settlement(
        &self,
        job: &JobRow,
        status: JobStatus,
        code: Option<&str>,
        actor: &str,
    ) -> Option<station_store::FinishSettle> {
        let charge = match status {
            JobStatus::Succeeded => {
                if self.config.spells.creator_share_percent > 0 {
                    return None;
                }
                if crate::training::per_second_rate(job).is_some() {
                    // Measured: needs the recorded run time.
                    return None;
                }
                match self.tools.get(&job.tool_id) {
                    Some(tool) => match tool.cost {
                        Cost::PerRun(_) => {
                            let model: f64 = serde_json::from_str::<serde_json::Value>(&job.params)
                                .ok()
                                .and_then(|p| p.get(crate::models::MULTIPLIER_PARAM)?.as_f64())
                                .unwrap_or(1.0);
                            Some(charge(&tool.cost, self.config.points.multiplier * model, 0, i64::MAX))
                        }
                        Cost::PerSecond { .. } => return None,
                    },
                    // A tool deleted since submission is charged the hold
                    // (the statement caps the charge at the hold).
                    None => Some(i64::MAX),
                }
            }
            JobStatus::Failed | JobStatus::Cancelled => None,
            JobStatus::Queued | JobStatus::Dispatched | JobStatus::Running => return None,
        };
        Some(station_store::FinishSettle {
            account_id: job.account_id.clone(),
            charge,
            reason: charge.is_none().then(|| code.map_or_else(|| status.as_str().to_string(), str::to_string)),
            actor: actor.to_string(),
        })
    }

    /// Settles holds left active on jobs that already ended (the process died
    /// between recording the outcome and settling). Returns how many it settled.
    pub async fn settle_stuck_holds(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for job in self.store.terminal_jobs_with_active_holds(100).await? {
            if matches!(
                self.settle_row(&job, "system:sweeper").await?,
                Some(Settlement::Captured { .. } | Settlement::Released { .. })
            ) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The payment terms for a job of `account` costing `price`: the free
    /// allowance, the group's sponsor and the queued-jobs quota
    /// (administrators have none).
    pub(crate) fn pay_terms<'a>(&self, account: &AccountRow, price: i64, scope: Option<&'a str>) -> PayTerms<'a> {
        let limit = self.config.limits.max_queued;
        PayTerms {
            price,
            free_daily: self.config.points.free_daily.min(i64::MAX as u64) as i64,
            sponsor_scope: scope,
            max_queued: (limit > 0 && !account.is_admin()).then(|| limit.min(i64::MAX as u64) as i64),
        }
    }

    /// The account's quote threshold in effect: its own setting, else
    /// `points.confirm_above`. None: never ask.
    pub async fn quote_threshold(&self, account: &AccountRow) -> Result<Option<i64>, StoreError> {
        Ok(match self.store.quote_threshold(&account.id).await? {
            Some(own) => own,
            None => Some(self.config.points.confirm_above.min(i64::MAX as u64) as i64),
        })
    }

    /// Sets the price above which the account is asked to confirm a job
    /// (None: never ask). Refused for a negative threshold.
    pub async fn set_quote_threshold(&self, account: &AccountRow, threshold: Option<i64>) -> Result<(), LedgerError> {
        if let Some(t) = threshold
            && t < 0
        {
            return Err(LedgerError::Invalid {
                field: "threshold",
                reason: format!("must be 0 or more points, got {t}; use none to never be asked"),
            });
        }
        Ok(self.store.set_quote_threshold(&account.id, threshold, station_store::now_ms()).await?)
    }

    /// Makes `sponsor` pay for jobs its members submit in `scope` (a group,
    /// e.g. `telegram:-100123`), up to `per_member_daily_cap` points per
    /// member per UTC day; past the cap, or when the sponsor runs short,
    /// members pay themselves. Replaces any earlier sponsor of the group.
    pub async fn set_sponsor(
        &self,
        scope: &str,
        sponsor: &AccountRow,
        per_member_daily_cap: i64,
        by: &Actor,
    ) -> Result<SponsorRow, LedgerError> {
        check_scope(scope)?;
        if per_member_daily_cap <= 0 {
            return Err(LedgerError::Invalid {
                field: "per_member_daily_cap",
                reason: format!("must be at least 1 point, got {per_member_daily_cap}; remove the sponsor instead"),
            });
        }
        if sponsor.suspended {
            return Err(LedgerError::Invalid {
                field: "sponsor",
                reason: format!("account {} is suspended; reinstate it first", sponsor.id),
            });
        }
        let row =
            self.store.set_sponsor(scope, &sponsor.id, per_member_daily_cap, &by.who, station_store::now_ms()).await?;
        let detail = format!(
            "{} pays for {scope}, up to {} per member a day",
            sponsor.name,
            plural_points(per_member_daily_cap)
        );
        self.audit(by, "sponsor.set", scope, detail).await;
        Ok(row)
    }

    /// Ends a group's sponsorship; jobs it already paid for stay paid. False
    /// if the group had no sponsor. Audited (`sponsor.remove`) when it had one.
    pub async fn remove_sponsor(&self, scope: &str, by: &Actor) -> Result<bool, StoreError> {
        let removed = self.store.remove_sponsor(scope).await?;
        if removed {
            self.audit(by, "sponsor.remove", scope, format!("{scope} pays for itself again")).await;
        }
        Ok(removed)
    }

    /// A group's sponsor, if it has one.
    pub async fn sponsor(&self, scope: &str) -> Result<Option<SponsorRow>, StoreError> {
        self.store.sponsor(scope).await
    }

    /// Checks the points invariants (see [`station_store::Store::audit_points`]).
    pub async fn audit_points(&self) -> Result<Vec<AuditProblem>, StoreError> {
        self.store.audit_points().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_round_up_and_never_go_negative() {
        assert_eq!(price(&Cost::PerRun(3), 1.0), 3);
        assert_eq!(price(&Cost::PerRun(3), 1.1), 4);
        assert_eq!(price(&Cost::PerSecond { points: 2, estimate_seconds: 15 }, 0.5), 15);
        assert_eq!(price(&Cost::PerRun(3), 0.0), 0);
        assert_eq!(price(&Cost::PerRun(3), -2.0), 0);
        assert_eq!(price(&Cost::PerRun(3), f64::NAN), 0);
    }

    #[test]
    fn per_second_charges_measured_time_capped_at_the_hold() {
        let c = Cost::PerSecond { points: 2, estimate_seconds: 10 };
        assert_eq!(charge(&c, 1.0, 3_500, 20), 7);
        assert_eq!(charge(&c, 1.0, 1, 20), 1, "a started second is charged");
        assert_eq!(charge(&c, 1.0, 60_000, 20), 20, "never more than held");
        assert_eq!(charge(&c, 1.0, -5, 20), 0);
        assert_eq!(charge(&Cost::PerRun(5), 2.0, 99_999, 10), 10);
        assert_eq!(charge(&Cost::PerRun(5), 2.0, 99_999, 4), 4);
    }

    #[test]
    fn training_charge_is_measured_and_capped_at_the_hold() {
        assert_eq!(training_charge(2.0, 3_500, 20), 7);
        assert_eq!(training_charge(0.5, 3_000, 20), 2, "1.5 rounds up");
        assert_eq!(training_charge(2.0, 600_000, 20), 20, "never more than held");
        assert_eq!(training_charge(2.0, -1, 20), 0);
    }
}
