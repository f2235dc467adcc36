//! Quotes: what a request would cost and who would pay, validated exactly
//! as a submission would be, before anything is written.

use serde::Serialize;
use station_store::AccountRow;

use crate::Station;
use crate::jobs::{SubmitError, SubmitRequest, quota_check};
use crate::points::PaidBy;

/// What a job would cost and who would pay, shown before queueing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quote {
    /// The tool the request resolved to.
    pub tool_id: String,
    /// Points the job costs (held when queued; per-second tools may be
    /// charged less when they finish).
    pub price: i64,
    /// The account's own spendable points: available balance plus the free
    /// allowance left today.
    pub available: i64,
    /// Free allowance left today.
    pub allowance_left: i64,
    /// Who would pay.
    pub paid_by: PaidBy,
    /// Whether the payer can cover it now.
    pub affordable: bool,
    /// The account's quote threshold (None: never asks).
    pub threshold: Option<i64>,
    /// Whether submitting needs `confirmed` (the price exceeds the threshold).
    pub needs_confirmation: bool,
}

impl Station {
    /// What `req` would cost `account` now and who would pay, validated
    /// exactly like [`Station::submit`] (every refusal it would give except
    /// a short balance, which the quote shows, and an unconfirmed price). It
    /// writes nothing but the account's starting grant if that is still due,
    /// so a new account's first quote shows the points its first job will have.
    pub async fn quote(&self, account: &AccountRow, req: &SubmitRequest) -> Result<Quote, SubmitError> {
        self.quote_at(account, req, station_store::now_ms()).await
    }

    /// [`Station::quote`] at a given time (Unix ms).
    pub async fn quote_at(&self, account: &AccountRow, req: &SubmitRequest, now: i64) -> Result<Quote, SubmitError> {
        let a = self.assess(account, req, &[], now).await?;
        quota_check(&a)?;
        let price = a.prepared.price;
        Ok(Quote {
            tool_id: a.prepared.tool.id.clone(),
            price,
            available: a.plan.available,
            allowance_left: a.plan.allowance_left,
            paid_by: a.plan.paid_by,
            affordable: a.plan.affordable,
            threshold: a.threshold,
            needs_confirmation: a.threshold.is_some_and(|t| price > t),
        })
    }
}
