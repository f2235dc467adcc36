//! Identity rows: API keys, link codes, login tokens, web sessions, and the
//! merge of two accounts into one.
//!
//! This module only stores and looks up *hashes*; making secrets, hashing
//! them and deciding what an error means to a person is the core's job
//! (`station_core::identity`).

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::accounts::{AccountRow, Role};
use crate::db::{Store, StoreError, with_pool};

/// One API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct ApiKeyRow {
    /// Key id (for listing and revoking; not secret).
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// The owner's label.
    pub name: String,
    /// The first characters of the key, for telling keys apart.
    pub prefix: String,
    /// When created (Unix ms).
    pub created_at: i64,
    /// Last successful authentication, to the minute.
    pub last_used_at: Option<i64>,
    /// When it stops working, if ever.
    pub expires_at: Option<i64>,
    /// When revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// One web session, without its id.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct SessionRow {
    /// Owner.
    pub account_id: String,
    /// The token forms must echo back (not a credential on its own).
    pub csrf_token: String,
    /// When created.
    pub created_at: i64,
    /// When it stops working.
    pub expires_at: i64,
    /// When signed out, if it was.
    pub ended_at: Option<i64>,
}

/// A one-time secret's state, for explaining why it was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneTimeState {
    /// No such secret.
    Unknown,
    /// It was used already.
    Used,
    /// It expired at this time (Unix ms).
    Expired(i64),
}

/// Why linking two accounts was refused. The messages are shown to people.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The code is not one Station made.
    #[error("link code not recognised: check the 8 characters, or ask for a new code with /link")]
    UnknownCode,
    /// The code was redeemed before.
    #[error("this link code was used already; ask for a new one with /link")]
    UsedCode,
    /// The code is too old.
    #[error("this link code expired (codes last 10 minutes); ask for a new one with /link")]
    ExpiredCode,
    /// Both sides are the same account.
    #[error("these identities already share one account; nothing to link")]
    SameAccount,
    /// The caller's account was itself merged meanwhile.
    #[error("your account was linked into account {0} meanwhile; sign in again and retry")]
    Merged(String),
    /// One side is suspended.
    #[error("account {0} is suspended, so it cannot be linked; ask an administrator")]
    Suspended(String),
    /// The caller is an administrator: their account must survive the link.
    #[error(
        "your account is an administrator account; link the other way round: \
         create a code here with /link and enter it on the other platform"
    )]
    AdminMustSurvive,
    /// The caller still has jobs in the queue or running.
    #[error("you have {0} job(s) queued or running; wait for them to finish, then link again")]
    JobsActive(i64),
    /// The caller still has points on hold.
    #[error("{0} of your points are on hold for jobs; wait for them to settle, then link again")]
    PointsHeld(i64),
    /// The caller's points changed while linking.
    #[error("your points changed while linking; please try again")]
    Changed,
    /// Together the two balances would pass the most points an account can hold.
    #[error("together the two accounts would hold more points than an account can; ask an administrator")]
    TooManyPoints,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LinkError {
    fn from(e: sqlx::Error) -> Self {
        LinkError::Store(StoreError::Sql(e))
    }
}

const KEY_COLUMNS: &str = "id, account_id, name, prefix, created_at, last_used_at, expires_at, revoked_at";

/// Rows that ended more than a day ago are deleted when new ones are made.
const KEEP_EXPIRED_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(sqlx::FromRow)]
struct KeyWithAccount {
    id: String,
    account_id: String,
    name: String,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    a_name: String,
    #[sqlx(try_from = "String")]
    a_role: Role,
    a_suspended: bool,
    a_created_at: i64,
}

/// A login token's `(used_at, expires_at)`.
type TokenState = (Option<i64>, i64);

/// The caller's grant of a LoRA `(lora, expires_at, revoked)` beside the
/// survivor's `(revoked, expires_at)`, if it has one.
type GrantPair = (String, Option<i64>, bool, Option<bool>, Option<i64>);

#[derive(sqlx::FromRow)]
struct AccountState {
    id: String,
    #[sqlx(try_from = "String")]
    role: Role,
    suspended: bool,
    merged_into: Option<String>,
}

impl Store {
    /// Stores a new API key (its hash, never its text).
    pub async fn insert_api_key(&self, key: &ApiKeyRow, key_hash: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO api_keys (id, account_id, name, prefix, key_hash, created_at, last_used_at, expires_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&key.id).bind(&key.account_id).bind(&key.name).bind(&key.prefix).bind(key_hash)
            .bind(key.created_at).bind(key.last_used_at).bind(key.expires_at).bind(key.revoked_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// An account's API keys, oldest first (revoked ones included).
    pub async fn list_api_keys(&self, account_id: &str) -> Result<Vec<ApiKeyRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY created_at, id"
            )))
            .bind(account_id)
            .fetch_all(p)
            .await?)
        })
    }

    /// One API key by id.
    pub async fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(crate::db::safe(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1")))
                .bind(key_id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// Revokes a key (of `account_id` only, when given). True when the key
    /// exists (and belongs to that account) and is now revoked; revoking
    /// twice keeps the first time.
    pub async fn revoke_api_key(&self, key_id: &str, account_id: Option<&str>, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
                 WHERE id = $2 AND ($3 IS NULL OR account_id = $3)",
            )
            .bind(now)
            .bind(key_id)
            .bind(account_id)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// The key with this hash and its account, if any.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<(ApiKeyRow, AccountRow)>, StoreError> {
        let row: Option<KeyWithAccount> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT k.id, k.account_id, k.name, k.prefix, k.created_at, k.last_used_at, k.expires_at, k.revoked_at, \
                 a.name AS a_name, a.role AS a_role, a.suspended AS a_suspended, a.created_at AS a_created_at \
                 FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = $1",
            )
            .bind(key_hash)
            .fetch_optional(p)
            .await?
        });
        Ok(row.map(|r| {
            let account = AccountRow {
                id: r.account_id.clone(),
                name: r.a_name,
                role: r.a_role,
                suspended: r.a_suspended,
                created_at: r.a_created_at,
            };
            let key = ApiKeyRow {
                id: r.id,
                account_id: r.account_id,
                name: r.name,
                prefix: r.prefix,
                created_at: r.created_at,
                last_used_at: r.last_used_at,
                expires_at: r.expires_at,
                revoked_at: r.revoked_at,
            };
            (key, account)
        }))
    }

    /// Records that a key was used, unless that was recorded less than
    /// `min_gap_ms` ago (the condition keeps several processes from all writing).
    pub async fn touch_api_key(&self, key_id: &str, now: i64, min_gap_ms: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
            )
            .bind(now)
            .bind(key_id)
            .bind(now - min_gap_ms)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Stores a link code's hash for `account_id` (and forgets codes that
    /// ended more than a day ago).
    pub async fn insert_link_code(
        &self,
        code_hash: &str,
        account_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM link_codes WHERE expires_at < $1").bind(now - KEEP_EXPIRED_MS).execute(p).await?;
            sqlx::query("INSERT INTO link_codes (code_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(code_hash)
                .bind(account_id)
                .bind(now)
                .bind(expires_at)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Stores a login token's hash (and forgets tokens that ended more than a day ago).
    pub async fn insert_login_token(
        &self,
        token_hash: &str,
        account_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM login_tokens WHERE expires_at < $1").bind(now - KEEP_EXPIRED_MS).execute(p).await?;
            sqlx::query("INSERT INTO login_tokens (token_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(token_hash)
                .bind(account_id)
                .bind(now)
                .bind(expires_at)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Uses a login token: one conditional `UPDATE`, so of any number of
    /// concurrent redeemers exactly one gets the account id. `Err` says why
    /// the token was refused.
    pub async fn redeem_login_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Result<String, OneTimeState>, StoreError> {
        let (won, state): (Option<(String,)>, Option<TokenState>) = with_pool!(self, p => {
            let won = sqlx::query_as(
                "UPDATE login_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
                 RETURNING account_id",
            )
            .bind(now)
            .bind(token_hash)
            .fetch_optional(p)
            .await?;
            let state = if won.is_some() {
                None
            } else {
                sqlx::query_as("SELECT used_at, expires_at FROM login_tokens WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(p)
                    .await?
            };
            (won, state)
        });
        Ok(match (won, state) {
            (Some((account,)), _) => Ok(account),
            (None, None) => Err(OneTimeState::Unknown),
            (None, Some((Some(_), _))) => Err(OneTimeState::Used),
            (None, Some((None, expires_at))) => Err(OneTimeState::Expired(expires_at)),
        })
    }

    /// Stores a web session by the hash of its id (and forgets sessions that
    /// ended more than a day ago).
    pub async fn insert_session(&self, id_hash: &str, row: &SessionRow, now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM sessions WHERE expires_at < $1").bind(now - KEEP_EXPIRED_MS).execute(p).await?;
            sqlx::query(
                "INSERT INTO sessions (id_hash, account_id, csrf_token, created_at, expires_at, ended_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id_hash)
            .bind(&row.account_id)
            .bind(&row.csrf_token)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(row.ended_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// A web session by the hash of its id.
    pub async fn get_session(&self, id_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT account_id, csrf_token, created_at, expires_at, ended_at FROM sessions WHERE id_hash = $1",
            )
            .bind(id_hash)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Ends a web session. True if it was open.
    pub async fn end_session(&self, id_hash: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("UPDATE sessions SET ended_at = $1 WHERE id_hash = $2 AND ended_at IS NULL")
                .bind(now)
                .bind(id_hash)
                .execute(p)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// The account a merged account was joined into, if it was.
    pub async fn merged_into(&self, account_id: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            let row: Option<(Option<String>,)> = sqlx::query_as("SELECT merged_into FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(p)
                .await?;
            Ok(row.and_then(|r| r.0))
        })
    }

    /// The owner of a usable link code; `None` when it is the caller's own.
    async fn link_code_owner(&self, code_hash: &str, caller: &str, now: i64) -> Result<Option<String>, LinkError> {
        let row: Option<(String, Option<i64>, i64)> = with_pool!(self, p => {
            sqlx::query_as("SELECT account_id, used_at, expires_at FROM link_codes WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_optional(p)
                .await?
        });
        match row {
            None => Err(LinkError::UnknownCode),
            Some((_, Some(_), _)) => Err(LinkError::UsedCode),
            Some((_, None, expires_at)) if expires_at <= now => Err(LinkError::ExpiredCode),
            Some((owner, None, _)) => Ok((owner != caller).then_some(owner)),
        }
    }

    /// Redeems the link code with hash `code_hash` for the `caller` account:
    /// the caller's account is joined into the code owner's, in one
    /// transaction. Its identities, API keys, sessions, jobs, media, saved
    /// settings, LoRAs, sponsorships and conversations move to the owner's account; its balance moves with
    /// a pair of `transfer` ledger entries (`merge:out:<caller>` and
    /// `merge:in:<caller>`); it is marked merged so its id never comes back.
    /// The ledger's older entries stay where they were (it is append-only).
    /// Returns the surviving account.
    pub async fn redeem_link_code(&self, code_hash: &str, caller: &str, now: i64) -> Result<AccountRow, LinkError> {
        // Who made the code, read before the transaction so that on
        // PostgreSQL both accounts can be locked before anything else.
        let Some(owner) = self.link_code_owner(code_hash, caller, now).await? else {
            return Err(LinkError::SameAccount);
        };
        let postgres = self.backend() == crate::db::Backend::Postgres;
        // Both account rows are locked first (PostgreSQL; in id order, so
        // links never deadlock each other), so two people redeeming each
        // other's codes at once cannot merge each account into the other:
        // the second waits, then finds its code now belongs to itself.
        // SQLite's single writer serialises the whole transaction instead.
        let states_sql = format!(
            "SELECT id, role, suspended, merged_into FROM accounts WHERE id = $1 OR id = $2 ORDER BY id{}",
            if postgres { " FOR UPDATE" } else { "" }
        );
        let survivor: String = with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if postgres {
                sqlx::query(crate::db::safe(&states_sql)).bind(&owner).bind(caller).execute(&mut *tx).await?;
            }
            // Claiming the code is SQLite's first write: from here on this
            // transaction holds the write lock.
            let claimed = sqlx::query(
                "UPDATE link_codes SET used_at = $1, used_by = $2 \
                 WHERE code_hash = $3 AND used_at IS NULL AND expires_at > $1 AND account_id = $4",
            )
            .bind(now)
            .bind(caller)
            .bind(code_hash)
            .bind(&owner)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() != 1 {
                // Used, expired or re-pointed by a merge since it was read: say which.
                drop(tx);
                return Err(match self.link_code_owner(code_hash, caller, now).await? {
                    None => LinkError::SameAccount,
                    Some(_) => LinkError::Changed,
                });
            }
            let states: Vec<AccountState> = sqlx::query_as(crate::db::safe(&states_sql))
                .bind(&owner)
                .bind(caller)
                .fetch_all(&mut *tx)
                .await?;
            let state = |id: &str| states.iter().find(|s| s.id == id);
            let (Some(o), Some(c)) = (state(&owner), state(caller)) else {
                return Err(StoreError::NotFound { what: "account", id: format!("{owner} or {caller}") }.into());
            };
            if let Some(m) = &c.merged_into {
                return Err(LinkError::Merged(m.clone()));
            }
            if let Some(m) = &o.merged_into {
                // Codes are re-pointed at merges, so this means a race; the owner lives on as `m`.
                return Err(LinkError::Merged(m.clone()));
            }
            for s in [o, c] {
                if s.suspended {
                    return Err(LinkError::Suspended(s.id.clone()));
                }
            }
            if c.role == Role::Admin && o.role != Role::Admin {
                return Err(LinkError::AdminMustSurvive);
            }
            for id in [&owner, caller] {
                sqlx::query(
                    "INSERT INTO balances (account_id, balance, held, updated_at) VALUES ($1, 0, 0, $2) \
                     ON CONFLICT (account_id) DO NOTHING",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let (balance, held): (i64, i64) = sqlx::query_as("SELECT balance, held FROM balances WHERE account_id = $1")
                .bind(caller)
                .fetch_one(&mut *tx)
                .await?;
            let active_jobs = "SELECT COUNT(*) FROM jobs WHERE account_id = $1 AND status IN ('queued','dispatched','running')";
            if held != 0 {
                let (active,): (i64,) = sqlx::query_as(active_jobs).bind(caller).fetch_one(&mut *tx).await?;
                return Err(if active > 0 { LinkError::JobsActive(active) } else { LinkError::PointsHeld(held) });
            }
            // Emptying the balance row also locks it (PostgreSQL), so a hold
            // racing this link either committed before (its job is counted
            // below) or waits and then finds nothing to hold.
            let emptied = sqlx::query(
                "UPDATE balances SET balance = 0, updated_at = $1 WHERE account_id = $2 AND balance = $3 AND held = 0",
            )
            .bind(now)
            .bind(caller)
            .bind(balance)
            .execute(&mut *tx)
            .await?;
            if emptied.rows_affected() != 1 {
                return Err(LinkError::Changed);
            }
            let (active,): (i64,) = sqlx::query_as(active_jobs).bind(caller).fetch_one(&mut *tx).await?;
            if active > 0 {
                return Err(LinkError::JobsActive(active));
            }
            if balance > 0 {
                let entry = "INSERT INTO ledger (idem_key, account_id, kind, amount, held, job_id, reason, actor, created_at) \
                             VALUES ($1, $2, 'transfer', $3, 0, NULL, $4, $5, $6)";
                sqlx::query(entry)
                    .bind(format!("merge:out:{caller}"))
                    .bind(caller)
                    .bind(-balance)
                    .bind(format!("linked into account {owner}"))
                    .bind(caller)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(entry)
                    .bind(format!("merge:in:{caller}"))
                    .bind(&owner)
                    .bind(balance)
                    .bind(format!("linked from account {caller}"))
                    .bind(caller)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                // Checked: the sum must stay a 64-bit integer (SQLite would
                // store a float, PostgreSQL would fail the statement).
                let moved = sqlx::query(
                    "UPDATE balances SET balance = balance + $1, updated_at = $2 WHERE account_id = $3 AND balance <= $4",
                )
                .bind(balance)
                .bind(now)
                .bind(&owner)
                .bind(i64::MAX - balance)
                .execute(&mut *tx)
                .await?;
                if moved.rows_affected() != 1 {
                    return Err(LinkError::TooManyPoints);
                }
            }
            // Saved settings and pricing preferences: the surviving account's own win.
            sqlx::query(
                "DELETE FROM tool_settings WHERE account_id = $1 \
                 AND tool_id IN (SELECT tool_id FROM tool_settings WHERE account_id = $2)",
            )
            .bind(caller)
            .bind(&owner)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM account_pricing WHERE account_id = $1 \
                 AND EXISTS (SELECT 1 FROM account_pricing WHERE account_id = $2)",
            )
            .bind(caller)
            .bind(&owner)
            .execute(&mut *tx)
            .await?;
            // LoRA grants: one row per (LoRA, account); where both had one,
            // the survivor keeps the more generous.
            let grants: Vec<GrantPair> = sqlx::query_as(
                "SELECT c.lora_id, c.expires_at, c.revoked, o.revoked, o.expires_at \
                 FROM lora_grants c LEFT JOIN lora_grants o ON o.lora_id = c.lora_id AND o.account_id = $2 \
                 WHERE c.account_id = $1",
            )
            .bind(caller)
            .bind(&owner)
            .fetch_all(&mut *tx)
            .await?;
            for (lora, c_expires, c_revoked, o_revoked, o_expires) in &grants {
                let Some(o_revoked) = o_revoked else { continue };
                // Live beats revoked; among live grants, never-expiring or later wins.
                let caller_better = !c_revoked
                    && (*o_revoked || matches!((c_expires, o_expires), (None, Some(_))) || matches!((c_expires, o_expires), (Some(c), Some(o)) if c > o));
                if caller_better {
                    sqlx::query("UPDATE lora_grants SET revoked = $1, expires_at = $2 WHERE lora_id = $3 AND account_id = $4")
                        .bind(c_revoked)
                        .bind(c_expires)
                        .bind(lora)
                        .bind(&owner)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("DELETE FROM lora_grants WHERE lora_id = $1 AND account_id = $2")
                    .bind(lora)
                    .bind(caller)
                    .execute(&mut *tx)
                    .await?;
            }
            let owned = sqlx::query("UPDATE loras SET owner_id = $1 WHERE owner_id = $2")
                .bind(&owner)
                .bind(caller)
                .execute(&mut *tx)
                .await?;
            if owned.rows_affected() > 0 || !grants.is_empty() {
                sqlx::query("UPDATE lora_catalog SET version = version + 1 WHERE id = 1").execute(&mut *tx).await?;
            }
            // Its fair-queuing keys go: it has nothing queued, and the
            // survivor's own key keeps it fair.
            sqlx::query("DELETE FROM queue_accounts WHERE account_id = $1").bind(caller).execute(&mut *tx).await?;
            for table in REPOINTED {
                sqlx::query(crate::db::safe(&format!("UPDATE {table} SET account_id = $1 WHERE account_id = $2")))
                    .bind(&owner)
                    .bind(caller)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE accounts SET merged_into = $1 WHERE merged_into = $2")
                .bind(&owner)
                .bind(caller)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE accounts SET merged_into = $1, merged_at = $2 WHERE id = $3")
                .bind(&owner)
                .bind(now)
                .bind(caller)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            owner
        });
        self.get_account(&survivor)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "account", id: survivor.clone() }.into())
    }
}

/// Tables whose `account_id` moves to the surviving account of a link.
/// Ledger entries, holds and `daily_usage` stay: they are the old account's
/// history, and the audit checks them against each other.
const REPOINTED: &[&str] = &[
    "identities",
    "api_keys",
    "sessions",
    "login_tokens",
    "link_codes",
    "jobs",
    "media",
    "tool_settings",
    "account_pricing",
    "lora_grants",
    "sponsors",
    "flow_instances",
    "flow_actions",
    "deliveries",
    "job_marks",
];
