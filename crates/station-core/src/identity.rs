//! Identity: API keys, `/link` codes that join a person's platform accounts
//! into one, one-time login tokens and web sessions for the web app, and the
//! per-account request rate limit.
//!
//! Every secret a person holds (API key, link code, login token, session id)
//! is stored only as its SHA-256. The long ones are 256 random bits from a
//! CSPRNG, so a fast unsalted hash is the right tool: nobody can guess or
//! brute-force a 256-bit preimage, and a slow password hash (argon2, bcrypt)
//! would only add milliseconds to every API request. Link codes are short
//! (40 bits) and their hash alone would not stop an offline search, so what
//! protects them is that they live 10 minutes, work once, and guessing them
//! online is rate-limited; they are hashed anyway so that no secret is ever
//! stored in the clear.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use station_store::{AccountRow, OneTimeState, SessionRow, StoreError};

use crate::Station;
pub use crate::auth_cache::SessionInfo;
use crate::auth_cache::{CachedKey, CachedSession, Invalidation};
use crate::secrets::digest_secret;
pub use crate::secrets::{hash_secret, same_secret};

pub use station_store::{ApiKeyRow as ApiKeyInfo, LinkError};

/// Every API key starts with this, so people (and secret scanners) can tell what it is.
pub const API_KEY_PREFIX: &str = "st_";
/// Random characters after the prefix: 43 × log2(62) ≈ 256 bits.
const API_KEY_RANDOM_CHARS: usize = 43;
/// Characters of the key kept in the clear for display (`st_` + 8).
const API_KEY_SHOWN_CHARS: usize = 8;
/// Longest key name.
pub const API_KEY_NAME_MAX: usize = 64;
/// `last_used_at` is written at most this often per key.
const TOUCH_GAP_MS: i64 = 60_000;

/// Link code characters: no 0/O, 1/I, so codes survive being read aloud or retyped.
const LINK_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Link code length (32^8 = 2^40 codes).
pub const LINK_CODE_LEN: usize = 8;
/// How long a link code works.
pub const LINK_CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a login token works.
pub const LOGIN_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// A freshly made `/link` code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkCode {
    /// The code to enter on the other platform (8 characters).
    pub code: String,
    /// When it stops working (Unix ms).
    pub expires_at: i64,
}

/// Which kind of credential an [`AuthError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// An API key.
    ApiKey,
    /// A one-time login token (a sign-in link).
    LoginToken,
    /// A web session.
    Session,
}

impl Credential {
    fn noun(self) -> &'static str {
        match self {
            Credential::ApiKey => "API key",
            Credential::LoginToken => "sign-in link",
            Credential::Session => "session",
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            Credential::ApiKey => "create a new key with `station keys create` or in the web app",
            Credential::LoginToken => "ask the bot for a new sign-in link",
            Credential::Session => "sign in again",
        }
    }
}

/// Why a credential was refused. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error(
        "no API key given: send `Authorization: Bearer <key>` or `X-API-Key: <key>` \
         (create a key with `station keys create` or in the web app)"
    )]
    Missing,
    /// Not a credential Station made (or malformed).
    #[error("{} not recognised: check it was copied whole, or {}", .0.noun(), .0.remedy())]
    Unknown(Credential),
    /// Revoked by its owner or an administrator.
    #[error("this {} was revoked; {}", .0.noun(), .0.remedy())]
    Revoked(Credential),
    /// Past its expiry.
    #[error("this {} expired; {}", .0.noun(), .0.remedy())]
    Expired(Credential),
    /// A one-time credential used before.
    #[error("this {} was used already (each works once); {}", .0.noun(), .0.remedy())]
    Used(Credential),
    /// The account is suspended.
    #[error("account {0} is suspended; ask an administrator")]
    Suspended(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why creating or changing an identity item was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A field is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why, and what is accepted.
        reason: String,
    },
    /// The account is suspended.
    #[error("account {0} is suspended; ask an administrator")]
    Suspended(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request refused by the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests; try again in {} s", retry_after_secs(.retry_after))]
pub struct RateLimited {
    /// How long until one more request is allowed.
    pub retry_after: Duration,
}

impl RateLimited {
    /// [`RateLimited::retry_after`] in whole seconds, rounded up (at least 1),
    /// as HTTP's `Retry-After` wants.
    pub fn retry_after_secs(&self) -> u64 {
        retry_after_secs(&self.retry_after)
    }
}

fn retry_after_secs(d: &Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// `n` characters drawn uniformly from `alphabet` with the thread-local
/// CSPRNG (ChaCha, seeded from the OS).
fn random_string(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn now_ms() -> i64 {
    station_store::now_ms()
}

fn ttl_ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A link code as people type it: case and separators do not matter.
fn normalise_code(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_uppercase).collect()
}

impl Station {
    /// Makes an API key for `account`. Returns its listing and the key text,
    /// which is shown to the person once and never stored.
    pub async fn create_api_key(
        &self,
        account: &AccountRow,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<(ApiKeyInfo, String), IdentityError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(IdentityError::Invalid {
                field: "name",
                reason: "is required: say what the key is for, e.g. \"laptop script\"".into(),
            });
        }
        if name.chars().count() > API_KEY_NAME_MAX {
            return Err(IdentityError::Invalid {
                field: "name",
                reason: format!("is {} characters long; the most is {API_KEY_NAME_MAX}", name.chars().count()),
            });
        }
        if name.chars().any(char::is_control) {
            return Err(IdentityError::Invalid { field: "name", reason: "must not contain control characters".into() });
        }
        let now = now_ms();
        if let Some(at) = expires_at
            && at <= now
        {
            return Err(IdentityError::Invalid {
                field: "expires_at",
                reason: "is in the past; give a future time or none for a key that does not expire".into(),
            });
        }
        if account.suspended {
            return Err(IdentityError::Suspended(account.id.clone()));
        }
        let secret = format!("{API_KEY_PREFIX}{}", random_string(BASE62, API_KEY_RANDOM_CHARS));
        let info = ApiKeyInfo {
            id: uuid::Uuid::new_v4().simple().to_string(),
            account_id: account.id.clone(),
            name: name.to_string(),
            prefix: secret[..API_KEY_PREFIX.len() + API_KEY_SHOWN_CHARS].to_string(),
            created_at: now,
            last_used_at: None,
            expires_at,
            revoked_at: None,
        };
        self.store.insert_api_key(&info, &hash_secret(&secret)).await?;
        Ok((info, secret))
    }

    /// An account's API keys, oldest first (revoked and expired ones included).
    pub async fn list_api_keys(&self, account: &AccountRow) -> Result<Vec<ApiKeyInfo>, StoreError> {
        self.store.list_api_keys(&account.id).await
    }

    /// Revokes one of `account`'s keys (an administrator may revoke anyone's).
    /// False when there is no such key (or it is someone else's).
    /// Its next use is refused in this process and, on PostgreSQL, in every
    /// other one as soon as the announcement arrives.
    pub async fn revoke_api_key(&self, account: &AccountRow, key_id: &str) -> Result<bool, StoreError> {
        let only = (!account.is_admin()).then_some(account.id.as_str());
        let revoked = self.store.revoke_api_key(key_id, only, now_ms()).await?;
        if revoked {
            self.invalidate_credentials(Invalidation::ApiKey { id: key_id.to_string() }).await;
        }
        Ok(revoked)
    }

    /// The account an API key belongs to. Records the use (at most once a
    /// minute per key, so busy clients do not cause a write per request).
    /// A key checked in the last `limits.auth_cache_ms` is not read again
    /// (see [`crate::auth_cache`]).
    pub async fn authenticate_api_key(&self, key: &str) -> Result<AccountRow, AuthError> {
        let key = key.trim();
        let unknown = AuthError::Unknown(Credential::ApiKey);
        if !key.starts_with(API_KEY_PREFIX) || key.len() != API_KEY_PREFIX.len() + API_KEY_RANDOM_CHARS {
            return Err(unknown);
        }
        let digest = digest_secret(key);
        let now = now_ms();
        let cached = match self.auth_cache.key(&digest) {
            Some(k) => k,
            None => {
                let generation = self.auth_cache.generation();
                let Some((info, account)) = self.store.api_key_by_hash(&hex::encode(digest)).await? else {
                    return Err(unknown);
                };
                if info.revoked_at.is_some() {
                    return Err(AuthError::Revoked(Credential::ApiKey));
                }
                if account.suspended {
                    return Err(AuthError::Suspended(account.id));
                }
                let k = CachedKey {
                    key_id: info.id.into(),
                    expires_at: info.expires_at,
                    last_used_at: info.last_used_at,
                    account,
                };
                self.auth_cache.put_key(generation, &digest, k.clone());
                k
            }
        };
        if cached.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Expired(Credential::ApiKey));
        }
        if cached.last_used_at.is_none_or(|t| now - t >= TOUCH_GAP_MS) {
            self.store.touch_api_key(&cached.key_id, now, TOUCH_GAP_MS).await?;
            self.auth_cache.touched_key(&digest, now);
        }
        Ok(cached.account)
    }

    /// Makes a `/link` code for `account`: entered on another platform within
    /// 10 minutes, it joins that platform's account into this one.
    pub async fn create_link_code(&self, account: &AccountRow) -> Result<LinkCode, StoreError> {
        let code = random_string(LINK_ALPHABET, LINK_CODE_LEN);
        let now = now_ms();
        let expires_at = now + ttl_ms(LINK_CODE_TTL);
        self.store.insert_link_code(&hash_secret(&code), &account.id, now, expires_at).await?;
        Ok(LinkCode { code, expires_at })
    }

    /// Redeems a link code made on another platform: `caller`'s account (its
    /// identities, points, jobs, media, settings and keys) is joined into the
    /// code owner's, which is returned. All in one transaction; see
    /// [`station_store::Store::redeem_link_code`].
    pub async fn redeem_link_code(&self, caller: &AccountRow, code: &str) -> Result<AccountRow, LinkError> {
        let code = normalise_code(code);
        if code.len() != LINK_CODE_LEN || !code.bytes().all(|b| LINK_ALPHABET.contains(&b)) {
            return Err(LinkError::UnknownCode);
        }
        let survivor = self.store.redeem_link_code(&hash_secret(&code), &caller.id, now_ms()).await?;
        // The merged account's bucket is dropped; its requests count against the survivor from now on.
        self.rate_limits.forget(&caller.id);
        // Its keys and sessions now belong to the survivor: resolve them afresh.
        self.invalidate_credentials(Invalidation::Account { id: caller.id.clone() }).await;
        self.invalidate_credentials(Invalidation::Account { id: survivor.id.clone() }).await;
        Ok(survivor)
    }

    /// Makes a one-time sign-in token for the web app (valid 15 minutes).
    /// Returns the token and its expiry (Unix ms).
    pub async fn create_login_token(&self, account: &AccountRow) -> Result<(String, i64), StoreError> {
        let token = random_string(BASE62, API_KEY_RANDOM_CHARS);
        let now = now_ms();
        let expires_at = now + ttl_ms(LOGIN_TOKEN_TTL);
        self.store.insert_login_token(&hash_secret(&token), &account.id, now, expires_at).await?;
        Ok((token, expires_at))
    }

    /// Uses a sign-in token. It works once: of concurrent redeemers exactly one succeeds.
    pub async fn redeem_login_token(&self, token: &str) -> Result<AccountRow, AuthError> {
        let what = Credential::LoginToken;
        let account_id = match self.store.redeem_login_token(&hash_secret(token.trim()), now_ms()).await? {
            Ok(id) => id,
            Err(OneTimeState::Unknown) => return Err(AuthError::Unknown(what)),
            Err(OneTimeState::Used) => return Err(AuthError::Used(what)),
            Err(OneTimeState::Expired(_)) => return Err(AuthError::Expired(what)),
        };
        self.live_account(&account_id).await
    }

    /// Starts a web session lasting `ttl`. Returns the session id (for the
    /// cookie; only its hash is stored), the CSRF token and the expiry.
    pub async fn create_session(
        &self,
        account: &AccountRow,
        ttl: Duration,
    ) -> Result<(String, String, i64), StoreError> {
        let id = random_string(BASE62, API_KEY_RANDOM_CHARS);
        let csrf = random_string(BASE62, API_KEY_RANDOM_CHARS);
        let now = now_ms();
        let row = SessionRow {
            account_id: account.id.clone(),
            csrf_token: csrf.clone(),
            created_at: now,
            expires_at: now.saturating_add(ttl_ms(ttl)),
            ended_at: None,
        };
        self.store.insert_session(&hash_secret(&id), &row, now).await?;
        Ok((id, csrf, row.expires_at))
    }

    /// The account and details of an open session (cached like API keys,
    /// see [`crate::auth_cache`]).
    pub async fn session_account(&self, session_id: &str) -> Result<(AccountRow, SessionInfo), AuthError> {
        let what = Credential::Session;
        let hash = hash_secret(session_id);
        let cached = match self.auth_cache.session(&hash) {
            Some(s) => s,
            None => {
                let generation = self.auth_cache.generation();
                let Some(row) = self.store.get_session(&hash).await? else {
                    return Err(AuthError::Unknown(what));
                };
                if row.ended_at.is_some() {
                    return Err(AuthError::Revoked(what));
                }
                if row.expires_at <= now_ms() {
                    return Err(AuthError::Expired(what));
                }
                let account = self.live_account(&row.account_id).await?;
                let info =
                    SessionInfo { csrf_token: row.csrf_token, created_at: row.created_at, expires_at: row.expires_at };
                let s = CachedSession { info, account };
                self.auth_cache.put_session(generation, &hash, s.clone());
                s
            }
        };
        if cached.info.expires_at <= now_ms() {
            return Err(AuthError::Expired(what));
        }
        Ok((cached.account, cached.info))
    }

    /// Signs a session out (at once in every process, like a key revocation).
    /// False if it was not open.
    pub async fn end_session(&self, session_id: &str) -> Result<bool, StoreError> {
        let id_hash = hash_secret(session_id);
        let ended = self.store.end_session(&id_hash, now_ms()).await?;
        self.invalidate_credentials(Invalidation::Session { id_hash }).await;
        Ok(ended)
    }

    async fn live_account(&self, account_id: &str) -> Result<AccountRow, AuthError> {
        let account = self
            .store
            .get_account(account_id)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "account", id: account_id.to_string() })?;
        if account.suspended {
            return Err(AuthError::Suspended(account.id));
        }
        Ok(account)
    }

    /// Takes one request from `account`'s allowance (`limits.requests_per_minute`).
    /// Administrators are not limited: they operate the service and can
    /// change the limit anyway.
    pub fn check_rate(&self, account: &AccountRow) -> Result<(), RateLimited> {
        if account.is_admin() {
            return Ok(());
        }
        self.rate_limits.check(&account.id, Instant::now())
    }
}

/// Per-account token buckets, in process memory.
///
/// In-process is deliberate: checking costs a mutex and a hash lookup, no
/// database round trip or write per request. Each process enforces the limit
/// on its own, so with N Station processes behind a balancer an account can
/// make at most N × the limit; that still stops a runaway client, which is
/// the point. A shared limiter (PostgreSQL or Redis) can replace this behind
/// [`Station::check_rate`] if exact global limits are ever needed.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    map: HashMap<String, Bucket>,
    /// Size at which idle buckets are next swept out.
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets are swept once the map holds this many (and then at twice what remained).
const SWEEP_MIN: usize = 10_000;

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per minute with a burst of
    /// the same size; 0 allows everything.
    pub fn new(per_minute: u64) -> RateLimiter {
        RateLimiter { per_minute, buckets: Mutex::new(Buckets { map: HashMap::new(), sweep_at: SWEEP_MIN }) }
    }

    /// Takes a token from `key`'s bucket at time `now`, or says how long until one is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), RateLimited> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = self.per_minute as f64;
        let per_sec = capacity / 60.0;
        let mut b = self.buckets.lock().expect("rate limiter lock");
        if b.map.len() >= b.sweep_at {
            // A bucket that has refilled completely is the same as no bucket.
            b.map.retain(|_, k| k.tokens + now.saturating_duration_since(k.at).as_secs_f64() * per_sec < capacity);
            b.sweep_at = (b.map.len() * 2).max(SWEEP_MIN);
        }
        let bucket = b.map.entry(key.to_string()).or_insert(Bucket { tokens: capacity, at: now });
        let refilled = bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * per_sec;
        bucket.tokens = refilled.min(capacity);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(RateLimited { retry_after: Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec) })
        }
    }

    /// Drops `key`'s bucket.
    pub fn forget(&self, key: &str) {
        self.buckets.lock().expect("rate limiter lock").map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_one_per_interval() {
        let l = RateLimiter::new(60);
        let t0 = Instant::now();
        for i in 0..60 {
            assert!(l.check("a", t0).is_ok(), "request {i} of the burst");
        }
        let refused = l.check("a", t0).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 1);
        assert!(l.check("b", t0).is_ok(), "accounts have separate buckets");
        assert!(l.check("a", t0 + Duration::from_millis(500)).is_err());
        assert!(l.check("a", t0 + Duration::from_millis(1_000)).is_ok(), "one token per second comes back");
        assert!(l.check("a", t0 + Duration::from_millis(1_000)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..60 {
            assert!(l.check("a", later).is_ok());
        }
        assert!(l.check("a", later).is_err());
    }

    #[test]
    fn retry_after_is_how_long_until_the_next_token() {
        let l = RateLimiter::new(6); // one per 10 s
        let t0 = Instant::now();
        for _ in 0..6 {
            l.check("a", t0).unwrap();
        }
        assert_eq!(l.check("a", t0).unwrap_err().retry_after_secs(), 10);
        assert_eq!(l.check("a", t0 + Duration::from_millis(2_500)).unwrap_err().retry_after_secs(), 8);
    }

    #[test]
    fn zero_means_unlimited_and_idle_buckets_are_swept() {
        let l = RateLimiter::new(0);
        let t0 = Instant::now();
        for _ in 0..1_000 {
            assert!(l.check("a", t0).is_ok());
        }
        let l = RateLimiter::new(60);
        for i in 0..SWEEP_MIN {
            l.check(&format!("k{i}"), t0).unwrap();
        }
        l.check("late", t0 + Duration::from_secs(120)).unwrap();
        assert_eq!(l.buckets.lock().unwrap().map.len(), 1, "refilled buckets are dropped");
    }

    #[test]
    fn codes_use_the_unambiguous_alphabet_and_normalise() {
        for _ in 0..200 {
            let c = random_string(LINK_ALPHABET, LINK_CODE_LEN);
            assert_eq!(c.len(), 8);
            assert!(!c.contains(['0', 'O', '1', 'I']), "{c}");
        }
        assert_eq!(normalise_code(" abcd-efgh "), "ABCDEFGH");
        assert_eq!(hash_secret("x").len(), 64);
    }
}
