//! Small facts a front end keeps per scope (e.g. `telegram:<bot>`): caches
//! such as a platform's id for a file already uploaded, and facts such as
//! the command menu last set. Values are text the front end chooses; the
//! core does not read them.
//!
//! `station.adapter_state("telegram:<bot>")`; see [`AdapterState`].

use station_store::{StoreError, now_ms};

use crate::Station;

/// One scope's key–value state, from [`Station::adapter_state`].
pub struct AdapterState<'a> {
    station: &'a Station,
    scope: &'a str,
}

impl Station {
    /// The key–value state of `scope` (a front end names its own, e.g.
    /// `telegram:<bot>`).
    pub fn adapter_state<'a>(&'a self, scope: &'a str) -> AdapterState<'a> {
        AdapterState { station: self, scope }
    }
}

impl AdapterState<'_> {
    /// The scope this state belongs to.
    pub fn scope(&self) -> &str {
        self.scope
    }

    /// The value of `key`, if set.
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.station.store.adapter_state(self.scope, key).await
    }

    /// Sets `key` (replacing any value).
    pub async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.set_at(key, value, now_ms()).await
    }

    /// [`AdapterState::set`] as of `now` (tests of pruning).
    pub async fn set_at(&self, key: &str, value: &str, now: i64) -> Result<(), StoreError> {
        self.station.store.set_adapter_state(self.scope, key, value, now).await
    }

    /// Deletes the keys starting with `prefix` (a plain prefix: `_` and `%`
    /// mean themselves) last set before `before` (Unix ms). Returns how many.
    pub async fn prune(&self, prefix: &str, before: i64) -> Result<u64, StoreError> {
        self.station.store.prune_adapter_state(self.scope, prefix, before).await
    }
}
