//! What a front end asks of the core to run a tool, and every way the core
//! can refuse it.

use std::sync::Arc;

use serde_json::{Map, Value};
use station_store::{LedgerError, NewJob, StoreError};
use station_tools::{FieldError, ToolDef};

use crate::loras::LoraError;
use crate::media::MediaServiceError;

/// A request to run a tool.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    /// Tool id or chat command.
    pub tool: String,
    /// Explicit parameters (highest precedence).
    pub params: Map<String, Value>,
    /// Scheduling priority (0 normal; only admins may raise it).
    pub priority: i64,
    /// Where the request came from, for delivery.
    pub source: Option<Value>,
    /// The user has seen the price and agreed: jobs priced above the
    /// account's quote threshold are refused with
    /// [`SubmitError::ConfirmationRequired`] unless this is set.
    pub confirmed: bool,
    /// The group the request was made in (`telegram:-100123`,
    /// `discord-guild:987`); its sponsor, if any, pays within the per-member cap.
    pub sponsor_scope: Option<String>,
    /// Names this submission: a second submit with the same key (an input
    /// processed again after a crash) queues and charges nothing and returns
    /// the job the first one queued. Keys are global; one used by another
    /// account is refused as an invalid `idempotency_key`.
    pub idempotency_key: Option<String>,
    /// An http(s) URL sent the generation's end (`generation.succeeded`, …)
    /// as a signed webhook event (checked like a subscription's URL; signed
    /// with the account's callback secret, [`crate::Station::callback_secret`]).
    pub callback_url: Option<String>,
}

/// Why a submission was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// No such tool, or not visible to the caller.
    #[error("unknown tool {0:?}; `station tools list` shows the available ones")]
    UnknownTool(String),
    /// Parameters failed validation; every bad field is listed.
    #[error("invalid parameters: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The account may not run jobs.
    #[error("account is suspended")]
    Suspended,
    /// The account cannot afford the job's price.
    #[error("not enough points: this costs {needed}, you have {available} available")]
    InsufficientPoints {
        /// The job's price (points to hold).
        needed: i64,
        /// Points the account had available.
        available: i64,
    },
    /// The job costs more than the account's quote threshold and the
    /// request was not confirmed; show the quote ([`Station::quote`]) and
    /// submit again with `confirmed`.
    #[error(
        "this job costs {price} points, more than your confirmation threshold of {threshold}; \
         confirm to queue it, or raise your threshold"
    )]
    ConfirmationRequired {
        /// The job's price.
        price: i64,
        /// The threshold it exceeds.
        threshold: i64,
    },
    /// The account is at one of its limits.
    #[error("you have {limit} {what}, the most allowed; wait for one to finish, then try again")]
    QuotaExceeded {
        /// The limit reached.
        limit: u64,
        /// What is limited, e.g. `jobs queued`.
        what: &'static str,
        /// A rough wait before a retry can succeed, when known.
        retry_after_secs: Option<u64>,
    },
    /// An image uploaded with the request could not be stored; nothing was queued.
    #[error("upload: {0}")]
    Upload(#[source] MediaServiceError),
    /// The database failed; nothing was queued. Worth retrying later.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

impl From<LedgerError> for SubmitError {
    fn from(e: LedgerError) -> SubmitError {
        match e {
            LedgerError::Store(e) => SubmitError::Storage(e),
            LedgerError::Insufficient { needed, available } => SubmitError::InsufficientPoints { needed, available },
            LedgerError::QuotaExceeded { limit, .. } => {
                SubmitError::QuotaExceeded { limit: limit as u64, what: "jobs queued", retry_after_secs: None }
            }
            LedgerError::Invalid { field, reason } => {
                SubmitError::Invalid(vec![FieldError { field: field.to_string(), reason }])
            }
        }
    }
}

impl From<LoraError> for SubmitError {
    fn from(e: LoraError) -> SubmitError {
        match e {
            LoraError::Storage(e) => SubmitError::Storage(e),
            other => SubmitError::Invalid(vec![FieldError {
                field: other.field().unwrap_or("prompt").to_string(),
                reason: other.to_string(),
            }]),
        }
    }
}

/// A submission checked and priced, not yet written.
pub(crate) struct Prepared {
    pub(crate) tool: Arc<ToolDef>,
    pub(crate) job: NewJob,
    pub(crate) price: i64,
}
