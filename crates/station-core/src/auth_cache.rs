//! Resolved credentials kept in process memory for a short time, so an API
//! request costs no database round trip for its key or session.
//!
//! Entries are keyed by the credential's SHA-256 (what the database stores),
//! never by the secret, and live `limits.auth_cache_ms` (2 s by default).
//! Anything that makes a credential stop working — key revoked, session
//! signed out, account suspended, role changed, account merged — goes
//! through [`Station::invalidate_credentials`]: it drops the entries in this
//! process at once and, on PostgreSQL, sends the invalidation to every other
//! Station process on the same schema with `NOTIFY` (see
//! [`crate::events::PgBus`]), which drop theirs as soon as it arrives. The
//! TTL only bounds what nothing announced (a process whose listener was
//! reconnecting, a second process on one SQLite file, a row edited by hand).
//! Expiry times are checked on every hit, so expiry needs no announcement.
//!
//! A lookup that misses reads the database; its result is stored only if no
//! invalidation happened since the read began (a generation counter), so a
//! read racing a revocation cannot put the old answer back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use station_store::AccountRow;

use crate::Station;

/// Something that stopped being a valid credential, announced to every process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Invalidation {
    /// An API key (by its id, not its secret) was revoked.
    ApiKey {
        /// Key id.
        id: String,
    },
    /// A web session (by the SHA-256 of its id, as stored) was signed out.
    Session {
        /// Hex SHA-256 of the session id.
        id_hash: String,
    },
    /// Every credential of an account: it was suspended, its role changed,
    /// or it was merged into another.
    Account {
        /// Account id.
        id: String,
    },
    /// The feature flags changed (see [`crate::flags`]): not a credential,
    /// but announced the same way so every process rereads them at once.
    Flags,
    /// Everything (notifications may have been missed).
    All,
}

/// An API key as resolved from the database.
#[derive(Debug, Clone)]
pub(crate) struct CachedKey {
    /// Shared, so a hit copies no string for it.
    pub key_id: std::sync::Arc<str>,
    pub expires_at: Option<i64>,
    /// Last `last_used_at` written (or read), so the minute gap holds without a read.
    pub last_used_at: Option<i64>,
    pub account: AccountRow,
}

/// A web session's details.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    /// The token forms must send back.
    pub csrf_token: String,
    /// When the session began (Unix ms).
    pub created_at: i64,
    /// When it ends (Unix ms).
    pub expires_at: i64,
}

/// A web session as resolved from the database.
#[derive(Debug, Clone)]
pub(crate) struct CachedSession {
    pub info: SessionInfo,
    pub account: AccountRow,
}

/// Carries this process's invalidations to the other processes
/// (PostgreSQL's event channel: [`crate::events::PgBus`]).
#[async_trait::async_trait]
pub(crate) trait Announcer: Send + Sync {
    /// Sends `inv`; awaited, so a short-lived process (the CLI) has sent it
    /// before it exits. Failures are logged, not returned: the TTL still
    /// bounds how long other processes trust the credential.
    async fn announce(&self, inv: &Invalidation);
}

/// The per-process credential cache (see the module documentation).
pub struct AuthCache {
    ttl: Duration,
    inner: Mutex<Inner>,
    remote: OnceLock<Arc<dyn Announcer>>,
    /// Goes up when the feature flags change ([`Invalidation::Flags`] or
    /// [`Invalidation::All`]); the flag cache rereads when it moved.
    flags_epoch: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("AuthCache")
            .field("ttl", &self.ttl)
            .field("keys", &inner.keys.len())
            .field("sessions", &inner.sessions.len())
            .field("shared", &self.remote.get().is_some())
            .finish()
    }
}

/// An API key's SHA-256 as raw bytes: the cache's key, so a request needs
/// no hex string to look its key up (the database stores the hex form).
pub(crate) type KeyDigest = [u8; 32];

#[derive(Default)]
struct Inner {
    keys: HashMap<KeyDigest, (Instant, CachedKey)>,
    sessions: HashMap<String, (Instant, CachedSession)>,
    /// Goes up on every invalidation.
    generation: u64,
    /// Size at which stale entries are next swept out.
    sweep_at: usize,
}

/// Entries are swept once a map holds this many (then at twice what remained).
const SWEEP_MIN: usize = 4_096;

impl AuthCache {
    /// A cache whose entries live `ttl`; a zero TTL turns caching off.
    pub fn new(ttl: Duration) -> AuthCache {
        AuthCache {
            ttl,
            inner: Mutex::new(Inner { sweep_at: SWEEP_MIN, ..Default::default() }),
            remote: OnceLock::new(),
            flags_epoch: Default::default(),
        }
    }

    /// Moves when the feature flags changed (see [`crate::flags`]).
    pub(crate) fn flags_epoch(&self) -> u64 {
        self.flags_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// How long an entry is trusted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The generation to pass to `put_*` after a database read begun now.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(crate) fn key(&self, digest: &KeyDigest) -> Option<CachedKey> {
        let inner = self.lock();
        inner.keys.get(digest).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, k)| k.clone())
    }

    pub(crate) fn put_key(&self, generation: u64, digest: &KeyDigest, key: CachedKey) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.sweep(self.ttl);
            inner.keys.insert(*digest, (Instant::now(), key));
        }
    }

    /// Records a `last_used_at` write on the cached entry (keeps its age).
    pub(crate) fn touched_key(&self, digest: &KeyDigest, at: i64) {
        if let Some((_, k)) = self.lock().keys.get_mut(digest) {
            k.last_used_at = Some(at);
        }
    }

    pub(crate) fn session(&self, hash: &str) -> Option<CachedSession> {
        let inner = self.lock();
        inner.sessions.get(hash).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, s)| s.clone())
    }

    pub(crate) fn put_session(&self, generation: u64, hash: &str, session: CachedSession) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.sweep(self.ttl);
            inner.sessions.insert(hash.to_string(), (Instant::now(), session));
        }
    }

    /// Drops what `inv` names from this process's cache (and makes reads in
    /// flight not store their answers).
    pub fn apply(&self, inv: &Invalidation) {
        let mut inner = self.lock();
        inner.generation += 1;
        match inv {
            Invalidation::ApiKey { id } => inner.keys.retain(|_, (_, k)| *k.key_id != **id),
            Invalidation::Session { id_hash } => {
                inner.sessions.remove(id_hash);
            }
            Invalidation::Account { id } => {
                inner.keys.retain(|_, (_, k)| k.account.id != *id);
                inner.sessions.retain(|_, (_, s)| s.account.id != *id);
            }
            Invalidation::Flags => {
                self.flags_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            Invalidation::All => {
                inner.keys.clear();
                inner.sessions.clear();
                self.flags_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
    }

    /// Makes [`AuthCache::share`] send to other processes through `remote`.
    pub(crate) fn set_remote(&self, remote: Arc<dyn Announcer>) {
        let _ = self.remote.set(remote);
    }

    /// Whether invalidations reach other processes.
    pub fn is_shared(&self) -> bool {
        self.remote.get().is_some()
    }

    /// Sends `inv` to the other processes (PostgreSQL); awaited, so a short-lived
    /// process (the CLI) has sent it before it exits.
    async fn share(&self, inv: &Invalidation) {
        if let Some(r) = self.remote.get() {
            r.announce(inv).await;
        }
    }
}

impl Inner {
    fn sweep(&mut self, ttl: Duration) {
        if self.keys.len() + self.sessions.len() < self.sweep_at {
            return;
        }
        self.keys.retain(|_, (at, _)| at.elapsed() < ttl);
        self.sessions.retain(|_, (at, _)| at.elapsed() < ttl);
        self.sweep_at = ((self.keys.len() + self.sessions.len()) * 2).max(SWEEP_MIN);
    }
}

impl Station {
    /// Makes credentials stop working at once: drops them from this process's
    /// cache and announces the change to other processes (PostgreSQL). Call
    /// after the database change has committed.
    pub async fn invalidate_credentials(&self, inv: Invalidation) {
        self.auth_cache.apply(&inv);
        self.auth_cache.share(&inv).await;
    }

    /// Suspends or reinstates an account; its keys and sessions are refused
    /// (or accepted) from the next request on. False if there is no such
    /// account. Audited (`account.suspend`, `account.reinstate`).
    pub async fn set_account_suspended(
        &self,
        account_id: &str,
        suspended: bool,
        by: &crate::audit::Actor,
    ) -> Result<bool, station_store::StoreError> {
        let changed = self.store.set_account_suspended(account_id, suspended).await?;
        self.invalidate_credentials(Invalidation::Account { id: account_id.to_string() }).await;
        if changed {
            let (action, detail) =
                if suspended { ("account.suspend", "suspended") } else { ("account.reinstate", "reinstated") };
            self.audit(by, action, account_id, detail).await;
        }
        Ok(changed)
    }

    /// Sets an account's role, effective from the next request. False if
    /// there is no such account. Audited (`account.role`).
    pub async fn set_account_role(
        &self,
        account_id: &str,
        role: station_store::Role,
        by: &crate::audit::Actor,
    ) -> Result<bool, station_store::StoreError> {
        let changed = self.store.set_account_role(account_id, role).await?;
        self.invalidate_credentials(Invalidation::Account { id: account_id.to_string() }).await;
        if changed {
            self.audit(by, "account.role", account_id, format!("role set to {}", role.as_str())).await;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str) -> AccountRow {
        AccountRow { id: id.into(), name: id.into(), role: station_store::Role::User, suspended: false, created_at: 0 }
    }

    fn d(name: &str) -> KeyDigest {
        crate::secrets::digest_secret(name)
    }

    fn key(id: &str, account_id: &str) -> CachedKey {
        CachedKey { key_id: id.into(), expires_at: None, last_used_at: None, account: account(account_id) }
    }

    #[test]
    fn entries_expire_after_the_ttl_and_zero_turns_caching_off() {
        let c = AuthCache::new(Duration::from_millis(30));
        c.put_key(c.generation(), &d("h1"), key("k1", "a"));
        assert!(c.key(&d("h1")).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.key(&d("h1")).is_none(), "older than the TTL is a miss");
        let off = AuthCache::new(Duration::ZERO);
        off.put_key(off.generation(), &d("h1"), key("k1", "a"));
        assert!(off.key(&d("h1")).is_none());
    }

    #[test]
    fn invalidations_drop_what_they_name() {
        let c = AuthCache::new(Duration::from_secs(60));
        let s = |a: &str| CachedSession {
            info: SessionInfo { csrf_token: "t".into(), created_at: 0, expires_at: i64::MAX },
            account: account(a),
        };
        let g = c.generation();
        c.put_key(g, &d("h1"), key("k1", "a"));
        c.put_key(g, &d("h2"), key("k2", "a"));
        c.put_key(g, &d("h3"), key("k3", "b"));
        c.put_session(g, "s1", s("a"));
        c.put_session(g, "s2", s("b"));
        c.apply(&Invalidation::ApiKey { id: "k1".into() });
        assert!(c.key(&d("h1")).is_none() && c.key(&d("h2")).is_some());
        c.apply(&Invalidation::Session { id_hash: "s2".into() });
        assert!(c.session("s2").is_none() && c.session("s1").is_some());
        c.apply(&Invalidation::Account { id: "a".into() });
        assert!(c.key(&d("h2")).is_none() && c.session("s1").is_none());
        assert!(c.key(&d("h3")).is_some(), "other accounts stay");
        c.apply(&Invalidation::All);
        assert!(c.key(&d("h3")).is_none());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_stored() {
        let c = AuthCache::new(Duration::from_secs(60));
        let before = c.generation();
        c.apply(&Invalidation::ApiKey { id: "k1".into() });
        c.put_key(before, &d("h1"), key("k1", "a"));
        assert!(c.key(&d("h1")).is_none(), "the answer read before the revocation is dropped");
        c.put_key(c.generation(), &d("h1"), key("k1", "a"));
        assert!(c.key(&d("h1")).is_some());
    }

    #[test]
    fn invalidations_round_trip_as_json_without_secrets() {
        let inv = Invalidation::Session { id_hash: "ab".repeat(32) };
        let text = serde_json::to_string(&inv).unwrap();
        assert_eq!(serde_json::from_str::<Invalidation>(&text).unwrap(), inv);
        assert!(text.contains("\"kind\":\"session\""), "{text}");
    }
}
