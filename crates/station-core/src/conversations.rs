//! Durable conversation state for the flow engine (`station-flows`): flow
//! instances and their transitions, minted action tokens, the once-only
//! record of handled inputs, and the outbox of messages to deliver.
//!
//! The rules live in the engine (a transition is one transaction fenced by
//! the instance's revision; an input key is written with the first write it
//! causes; deliveries are leased per process); this service is the engine's
//! only way to the database, so no front end touches the store.

pub use station_store::{
    ActionRow, CardRetire, DeliveryMark, DeliveryResult, DeliveryRow, FlowInstanceRow, NewDelivery, Transition,
};
use station_store::{JobRow, StoreError};

use crate::Station;

/// The conversation state of a [`Station`] ([`Station::conversations`]).
pub struct Conversations<'a> {
    station: &'a Station,
}

impl Station {
    /// Durable conversation state (flow instances, actions, the outbox).
    pub fn conversations(&self) -> Conversations<'_> {
        Conversations { station: self }
    }
}

impl Conversations<'_> {
    fn store(&self) -> &station_store::Store {
        &self.station.store
    }

    /// The open flow instance of `account` in `conversation`, if any.
    pub async fn active(&self, conversation: &str, account_id: &str) -> Result<Option<FlowInstanceRow>, StoreError> {
        self.store().active_flow(conversation, account_id).await
    }

    /// One flow instance by id.
    pub async fn get(&self, id: &str) -> Result<Option<FlowInstanceRow>, StoreError> {
        self.store().get_flow(id).await
    }

    /// Stores a transition (new state and history, minted actions, outgoing
    /// messages, the input key) in one transaction, only if the instance's
    /// revision is unchanged. False: another input moved it first.
    pub async fn save_transition(&self, t: &Transition, now: i64) -> Result<bool, StoreError> {
        self.store().save_transition(t, now).await
    }

    /// Stores actions and messages outside a transition; with `input_key`,
    /// only if that key was not recorded yet (false then: a replay).
    /// `upsert` replaces a delivery with the same dedupe key that was not sent yet.
    pub async fn save_outbox(
        &self,
        actions: &[ActionRow],
        deliveries: &[NewDelivery],
        upsert: bool,
        input_key: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        match input_key {
            Some(_) => self.store().save_outbox_keyed(actions, deliveries, upsert, input_key, now).await,
            None => self.store().save_outbox(actions, deliveries, upsert, now).await.map(|()| true),
        }
    }

    /// Ends an instance with `status` and final messages, only if its
    /// revision is still `rev` (and `input_key`, if given, is new); its
    /// cards are moved aside first (`retire`).
    #[allow(clippy::too_many_arguments)]
    pub async fn end(
        &self,
        id: &str,
        rev: i64,
        status: &str,
        deliveries: &[NewDelivery],
        retire: &[CardRetire],
        input_key: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.store().end_flow_keyed(id, rev, status, deliveries, retire, input_key, now).await
    }

    /// Whether an input with this key was handled already.
    pub async fn input_handled(&self, input_key: &str) -> Result<bool, StoreError> {
        self.store().input_handled(input_key).await
    }

    /// Forgets handled-input keys recorded before `before` (Unix ms).
    pub async fn prune_inputs(&self, before: i64) -> Result<u64, StoreError> {
        self.store().prune_flow_inputs(before).await
    }

    /// Open instances with no input since `before`, at most `limit`.
    pub async fn idle(&self, before: i64, limit: i64) -> Result<Vec<FlowInstanceRow>, StoreError> {
        self.store().idle_flows(before, limit).await
    }

    /// The action behind a button's token.
    pub async fn action(&self, token: &str) -> Result<Option<ActionRow>, StoreError> {
        self.store().get_action(token).await
    }

    /// Returns deliveries whose lease lapsed (their process died) to the queue.
    pub async fn requeue_deliveries(&self, now: i64) -> Result<u64, StoreError> {
        self.store().requeue_deliveries(now).await
    }

    /// Leases up to `limit` deliveries for `platforms`, the oldest of each
    /// conversation first (one at a time per conversation).
    pub async fn claim_deliveries(
        &self,
        platforms: &[String],
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        self.store().claim_deliveries(platforms, owner, now, lease_ms, limit).await
    }

    /// Records how sending a delivery went (fenced by its lease and version).
    pub async fn finish_delivery(
        &self,
        id: &str,
        owner: &str,
        version_sent: i64,
        result: &DeliveryResult,
        now: i64,
    ) -> Result<(), StoreError> {
        self.store().finish_delivery(id, owner, version_sent, result, now).await
    }

    /// Records how several sends went in one transaction, each as
    /// [`Conversations::finish_delivery`] (after holding back its
    /// conversation's progress edits when the mark asks for it).
    pub async fn finish_deliveries(&self, marks: &[DeliveryMark], now: i64) -> Result<(), StoreError> {
        self.store().finish_deliveries(marks, now).await
    }

    /// Holds the conversation's pending progress edits until `until`.
    pub async fn delay_progress(&self, conversation: &str, until: i64) -> Result<(), StoreError> {
        self.store().delay_progress(conversation, until).await
    }

    /// The delivery with this dedupe key, if any.
    pub async fn delivery_by_key(&self, key: &str) -> Result<Option<DeliveryRow>, StoreError> {
        self.store().delivery_by_key(key).await
    }

    /// One delivery, by id.
    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        self.store().get_delivery(id).await
    }

    /// Every delivery of a conversation, oldest first.
    pub async fn deliveries(&self, conversation: &str) -> Result<Vec<DeliveryRow>, StoreError> {
        self.store().conversation_deliveries(conversation).await
    }

    /// Jobs from conversations that ended since `since` without a result message.
    pub async fn undelivered_results(&self, since: i64, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        self.store().undelivered_results(since, limit).await
    }

    /// Ended casts asked from a conversation whose result message was never written.
    pub async fn undelivered_cast_results(&self, since: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        self.store().undelivered_cast_results(since, limit).await
    }
}
