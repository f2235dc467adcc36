//! Durable storage for Station.
//!
//! One [`Store`] type fronts two databases: SQLite in WAL mode (the embedded
//! default) and PostgreSQL (chosen by a `postgres://` URL, so several Station
//! processes can share one queue). Every query is written once where the SQL
//! is portable and twice where it is not (claiming jobs, `GREATEST`/`MAX`);
//! both run the same test suite.
//!
//! All timestamps are Unix milliseconds (`i64`); JSON columns are text.

mod accounts;
mod adapter_state;
mod alerts;
mod audit;
mod backends;
mod collections;
mod cook;
mod db;
mod finisher;
mod flags;
mod flows;
mod group_tools;
mod history;
mod identity;
mod inbox;
mod jobs;
mod ledger;
mod load;
mod lora_publish;
mod loras;
mod media;
mod models;
mod notify;
mod pricing;
mod settings;
mod spells;
mod stats;
mod training;
mod wallets;
mod webhooks;

pub use accounts::{AccountRow, NewBulkAccount, Role};
pub use alerts::{AlertMessageRow, AlertStateRow, ServiceFailures};
pub use audit::{AuditFilter, AuditRow, NewAuditEntry};
pub use backends::{BackendLoad, BackendRow, RemoteCancel};
pub use collections::{CollectionExportRow, CollectionItemRow, CollectionRow, CollectionShareRow};
pub use cook::{CookPieceRow, CookRow, PieceCounts};
pub use db::{Backend, Store, StoreError, mask_url};
pub use finisher::{DEFAULT_MAX_BATCH, FinishBatcher};
pub use flags::FlagRow;
pub use flows::{
    ActionRow, CardRetire, DeliveryMark, DeliveryResult, DeliveryRow, FlowInstanceRow, NewDelivery, Transition,
};
pub use group_tools::GroupToolRow;
pub use history::{GenerationFilter, RatedJob};
pub use identity::{ApiKeyRow, LinkError, OneTimeState, SessionRow};
pub use inbox::InboxRow;
pub use jobs::{
    ClaimRequest, FinishSettle, Finished, JobFilter, JobFinish, JobRow, JobStatus, JobStatusRow, NewJob, QueuePosition,
    QueueStats, ServiceQueued, Submission,
};
pub use ledger::{AuditProblem, Balance, EntryKind, HoldRow, LedgerEntry, LedgerError, NewEntry, Posted, Settlement};
pub use load::{DatabaseCounters, JobTiming, StatementCost, TableCounters};
pub use lora_publish::LoraPublishRow;
pub use loras::{LoraFilter, LoraGrantRow, LoraRow, Upserted};
pub use media::MediaRow;
pub use models::{BackendFile, BackendModelRow, ModelCatalogRow};
pub use notify::{Channel, Notifications};
pub use pricing::{PaidBy, PayTerms, Payment, Placed, SponsorRow, utc_day};
pub use spells::{CastRow, CastStepRow, NewCast, NewSpell, PARKED, SpellRow};
pub use stats::{AccountUsageRow, FailureRow, HistoryEntry, HistoryJob, JobUsageRow, PointsUsageRow, StatsSources};
pub use training::{AddedImage, DatasetCaptionRow, DatasetImageRow, DatasetRow, TrainingRow, TrainingRun};
pub use wallets::{
    WalletBlockRow, WalletChallengeRow, WalletCursorRow, WalletDepositRow, WalletLinkRow, WalletNoticeRow,
    WalletQuoteRow,
};
pub use webhooks::{NewWebhookDelivery, PendingEvent, WebhookDeliveryRow, WebhookRow};

/// Milliseconds since the Unix epoch, the one time unit stored.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub mod testing;
