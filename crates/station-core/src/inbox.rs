//! The durable inbox front ends keep what they receive in: every event is
//! stored before the sender is told it arrived, processed once, and in order
//! within its lane (a chat), concurrently across lanes.
//!
//! `station.inbox("telegram:<bot>")` is the inbox of one source; see
//! [`InboxService`].

pub use station_store::InboxRow;
use station_store::{StoreError, now_ms};

use crate::Station;

/// One source's inbox (e.g. `telegram:<bot>`), from [`Station::inbox`].
pub struct InboxService<'a> {
    station: &'a Station,
    source: &'a str,
}

impl Station {
    /// The inbox of events from `source` (a front end names its own, e.g.
    /// `telegram:<bot>`).
    pub fn inbox<'a>(&'a self, source: &'a str) -> InboxService<'a> {
        InboxService { station: self, source }
    }
}

impl InboxService<'_> {
    /// The source this inbox holds.
    pub fn source(&self) -> &str {
        self.source
    }

    /// Stores event `seq` of lane `lane` unless it is stored already (a
    /// redelivery). Returns whether it was new.
    pub async fn insert(&self, seq: i64, lane: &str, payload: &str) -> Result<bool, StoreError> {
        self.insert_at(seq, lane, payload, now_ms()).await
    }

    /// [`InboxService::insert`] received at `now` (tests of pruning).
    pub async fn insert_at(&self, seq: i64, lane: &str, payload: &str, now: i64) -> Result<bool, StoreError> {
        self.station.store.inbox_insert(self.source, seq, lane, payload, now).await
    }

    /// Stores a batch of events `(seq, lane, payload)` the source delivered
    /// together in one transaction, skipping redeliveries: all or none.
    /// Returns how many were new.
    pub async fn insert_many(&self, events: &[(i64, String, String)]) -> Result<u64, StoreError> {
        self.station.store.inbox_insert_many(self.source, events, now_ms()).await
    }

    /// Takes or renews, for `owner` and `ttl`, the one right to fetch this
    /// source's events (a source that allows a single receiver, such as
    /// Telegram's `getUpdates`, when several processes share the database).
    /// True while `owner` holds it; another owner gets it once the holder
    /// stops renewing (it died) or gives it up. A named `process_leases` row.
    pub async fn hold_receiver(&self, owner: &str, ttl: std::time::Duration) -> Result<bool, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.station.store.hold_lease(&self.receiver_lease(), owner, now_ms(), ttl_ms).await
    }

    /// Gives the receiver right up, if `owner` holds it (a process stopping).
    pub async fn release_receiver(&self, owner: &str) -> Result<(), StoreError> {
        self.station.store.release_lease(&self.receiver_lease(), owner).await
    }

    fn receiver_lease(&self) -> String {
        format!("receiver:{}", self.source)
    }

    /// The highest sequence number stored (the next one to ask for is one more).
    pub async fn max_seq(&self) -> Result<Option<i64>, StoreError> {
        self.station.store.inbox_max_seq(self.source).await
    }

    /// Up to `limit` pending events, lowest `seq` first.
    pub async fn pending(&self, limit: i64) -> Result<Vec<InboxRow>, StoreError> {
        self.station.store.inbox_pending(self.source, limit).await
    }

    /// Up to `limit` lanes with a pending event, the lane of the oldest first.
    pub async fn pending_lanes(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        self.station.store.inbox_pending_lanes(self.source, limit).await
    }

    /// One step through a lane, in one transaction: records event `done`
    /// processed (`(seq, None)`) or failed (`(seq, Some(reason))`) when
    /// given, then claims the lane's next event for `owner` when the lane's
    /// oldest unfinished event is pending. None: nothing for this caller
    /// now (the lane is empty, or another process holds it).
    pub async fn advance(
        &self,
        lane: &str,
        owner: &str,
        done: Option<(i64, Option<&str>)>,
    ) -> Result<Option<InboxRow>, StoreError> {
        self.station.store.inbox_advance(self.source, lane, owner, done, now_ms()).await
    }

    /// The oldest unfinished event of a lane (pending, or processing by
    /// someone); the lane's later events wait for it.
    pub async fn next(&self, lane: &str) -> Result<Option<InboxRow>, StoreError> {
        self.station.store.inbox_next(self.source, lane).await
    }

    /// Takes a pending event for processing by `owner`. False when someone
    /// else took it first.
    pub async fn claim(&self, seq: i64, owner: &str) -> Result<bool, StoreError> {
        self.station.store.inbox_claim(self.source, seq, owner).await
    }

    /// Records an event processed: `done`, or `failed` with the reason.
    pub async fn finish(&self, seq: i64, error: Option<&str>) -> Result<(), StoreError> {
        self.finish_at(seq, error, now_ms()).await
    }

    /// [`InboxService::finish`] at `now` (tests of pruning).
    pub async fn finish_at(&self, seq: i64, error: Option<&str>, now: i64) -> Result<(), StoreError> {
        self.station.store.inbox_finish(self.source, seq, error, now).await
    }

    /// Puts events a stopped process left processing back to pending; call
    /// at start, before processing begins. Returns how many.
    pub async fn requeue(&self) -> Result<u64, StoreError> {
        self.station.store.inbox_requeue(self.source).await
    }

    /// Every stored event, lowest `seq` first (tests and diagnostics).
    pub async fn list(&self) -> Result<Vec<InboxRow>, StoreError> {
        self.station.store.inbox_list(self.source).await
    }

    /// Deletes processed events (done or failed) received before `before`
    /// (Unix ms), keeping the newest event, which carries the sequence.
    /// Unprocessed events stay whatever their age. Returns how many.
    pub async fn prune(&self, before: i64) -> Result<u64, StoreError> {
        self.station.store.inbox_prune(self.source, before).await
    }
}
