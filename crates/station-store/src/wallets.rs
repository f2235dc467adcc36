//! Wallets: linked addresses, sign-in challenges, magic-deposit quotes,
//! deposits seen on chain, and each chain watcher's cursor and recent blocks.
//!
//! A deposit is a row keyed by `(chain, tx hash, log index)` before anything
//! is credited; the credit itself is a ledger entry with the idempotency key
//! `deposit:<chain>:<tx>:<log>`, so a second process, a restart or a rescan
//! finding the same transfer again changes nothing. A scan of blocks is
//! recorded in one transaction that also moves the cursor, and only when
//! the cursor is still where the scan began (two processes watching one
//! chain: one of them wins, the other reads again).

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::db::{Store, StoreError, safe, with_pool};

/// An address linked to an account on one chain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct WalletLinkRow {
    /// EIP-155 chain id.
    pub chain_id: i64,
    /// Lower-case 0x address.
    pub address: String,
    /// Owner.
    pub account_id: String,
    /// `signature`, `contract` (EIP-1271) or `deposit` (magic amount).
    pub method: String,
    /// When linked (Unix ms).
    pub created_at: i64,
}

/// A sign-in-with-Ethereum challenge.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct WalletChallengeRow {
    /// One-time nonce (the key).
    pub nonce: String,
    /// Who asked.
    pub account_id: String,
    /// Chain.
    pub chain_id: i64,
    /// Lower-case address to prove.
    pub address: String,
    /// The exact EIP-4361 message to sign.
    pub message: String,
    /// Issued (Unix ms).
    pub created_at: i64,
    /// Expires (Unix ms).
    pub expires_at: i64,
    /// When used; a challenge is good once.
    pub used_at: Option<i64>,
}

/// A magic-deposit quote.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct WalletQuoteRow {
    /// Id.
    pub id: String,
    /// Who asked.
    pub account_id: String,
    /// Chain.
    pub chain_id: i64,
    /// The address the deposit must come from (lower-case).
    pub address: String,
    /// Exact amount in the native coin's smallest unit (decimal text).
    pub amount: String,
    /// Issued (Unix ms).
    pub created_at: i64,
    /// Expires (Unix ms).
    pub expires_at: i64,
    /// When a deposit used it.
    pub used_at: Option<i64>,
}

/// A deposit seen on chain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct WalletDepositRow {
    /// Chain.
    pub chain_id: i64,
    /// Transaction hash (lower-case 0x).
    pub tx_hash: String,
    /// Log index of the ERC-20 `Transfer`; -1 for a native transfer.
    pub log_index: i64,
    /// Block number.
    pub block_number: i64,
    /// Block hash.
    pub block_hash: String,
    /// Block timestamp (Unix ms).
    pub block_time: i64,
    /// Sender (lower-case).
    pub from_address: String,
    /// `native` or the token's lower-case address.
    pub asset: String,
    /// Amount in smallest units (decimal text).
    pub amount: String,
    /// Points it is worth.
    pub points: i64,
    /// `pending`, `credited`, `unclaimed`, `below_minimum` or `removed`.
    pub state: String,
    /// The account credited.
    pub account_id: Option<String>,
    /// When first seen (Unix ms).
    pub seen_at: i64,
    /// When credited, held as unclaimed or refused (Unix ms).
    pub settled_at: Option<i64>,
}

/// A settled deposit to announce in the chat its account chose.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct WalletNoticeRow {
    /// The deposit.
    #[sqlx(flatten)]
    pub deposit: WalletDepositRow,
    /// The conversation to announce it in (the flows' JSON, opaque here).
    pub conv_json: String,
}

/// A chain watcher's cursor.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct WalletCursorRow {
    /// Chain.
    pub chain_id: i64,
    /// The next block to read.
    pub next_block: i64,
    /// The chain's head when last asked.
    pub head: i64,
    /// The last RPC error, cleared by the next success.
    pub last_error: Option<String>,
    /// When last updated (Unix ms).
    pub updated_at: i64,
}

/// A block read by a watcher.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WalletBlockRow {
    /// Number.
    pub number: i64,
    /// Hash.
    pub hash: String,
    /// Parent's hash.
    pub parent_hash: String,
}

const LINK_COLUMNS: &str = "chain_id, address, account_id, method, created_at";
const CHALLENGE_COLUMNS: &str = "nonce, account_id, chain_id, address, message, created_at, expires_at, used_at";
const QUOTE_COLUMNS: &str = "id, account_id, chain_id, address, amount, created_at, expires_at, used_at";
const DEPOSIT_COLUMNS: &str = "chain_id, tx_hash, log_index, block_number, block_hash, block_time, from_address, \
     asset, amount, points, state, account_id, seen_at, settled_at";
const CURSOR_COLUMNS: &str = "chain_id, next_block, head, last_error, updated_at";

impl Store {
    /// Links `address` on `chain_id` to `account_id` unless it is linked
    /// already; returns the account it is linked to now (another account's
    /// id when it was taken: nothing moves).
    pub async fn link_wallet(&self, l: &WalletLinkRow) -> Result<String, StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO wallet_links (chain_id, address, account_id, method, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (chain_id, address) DO NOTHING",
            )
            .bind(l.chain_id)
            .bind(&l.address)
            .bind(&l.account_id)
            .bind(&l.method)
            .bind(l.created_at)
            .execute(p)
            .await?;
            let owner: (String,) =
                sqlx::query_as("SELECT account_id FROM wallet_links WHERE chain_id = $1 AND address = $2")
                    .bind(l.chain_id)
                    .bind(&l.address)
                    .fetch_one(p)
                    .await?;
            Ok(owner.0)
        })
    }

    /// The link of an address, if any.
    pub async fn wallet_link(&self, chain_id: i64, address: &str) -> Result<Option<WalletLinkRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {LINK_COLUMNS} FROM wallet_links WHERE chain_id = $1 AND address = $2"
            )))
            .bind(chain_id)
            .bind(address)
            .fetch_optional(p)
            .await?)
        })
    }

    /// An account's linked addresses, oldest first.
    pub async fn wallet_links(&self, account_id: &str) -> Result<Vec<WalletLinkRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {LINK_COLUMNS} FROM wallet_links WHERE account_id = $1 ORDER BY created_at, chain_id, address"
            )))
            .bind(account_id)
            .fetch_all(p)
            .await?)
        })
    }

    /// Removes an account's link; true if it existed.
    pub async fn unlink_wallet(&self, account_id: &str, chain_id: i64, address: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("DELETE FROM wallet_links WHERE account_id = $1 AND chain_id = $2 AND address = $3")
                .bind(account_id)
                .bind(chain_id)
                .bind(address)
                .execute(p)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Stores a challenge.
    pub async fn insert_wallet_challenge(&self, c: &WalletChallengeRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO wallet_challenges (nonce, account_id, chain_id, address, message, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&c.nonce)
            .bind(&c.account_id)
            .bind(c.chain_id)
            .bind(&c.address)
            .bind(&c.message)
            .bind(c.created_at)
            .bind(c.expires_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// A challenge by nonce.
    pub async fn wallet_challenge(&self, nonce: &str) -> Result<Option<WalletChallengeRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!("SELECT {CHALLENGE_COLUMNS} FROM wallet_challenges WHERE nonce = $1")))
                .bind(nonce)
                .fetch_optional(p)
                .await?)
        })
    }

    /// Uses a challenge once: true only for the first caller before it expires.
    pub async fn use_wallet_challenge(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE wallet_challenges SET used_at = $2 WHERE nonce = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(nonce)
            .bind(now)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Stores a quote; false when its amount is taken on that chain (the
    /// caller draws another).
    pub async fn insert_wallet_quote(&self, q: &WalletQuoteRow) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "INSERT INTO wallet_quotes (id, account_id, chain_id, address, amount, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (chain_id, amount) DO NOTHING",
            )
            .bind(&q.id)
            .bind(&q.account_id)
            .bind(q.chain_id)
            .bind(&q.address)
            .bind(&q.amount)
            .bind(q.created_at)
            .bind(q.expires_at)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// The unused quote a native deposit of `amount` from `address` in a
    /// block of time `at` answers, if any.
    pub async fn matching_wallet_quote(
        &self,
        chain_id: i64,
        address: &str,
        amount: &str,
        at: i64,
    ) -> Result<Option<WalletQuoteRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {QUOTE_COLUMNS} FROM wallet_quotes WHERE chain_id = $1 AND address = $2 AND amount = $3 \
                 AND used_at IS NULL AND expires_at >= $4 AND created_at <= $4 + 60000"
            )))
            .bind(chain_id)
            .bind(address)
            .bind(amount)
            .bind(at)
            .fetch_optional(p)
            .await?)
        })
    }

    /// Marks a quote used; true for the first caller.
    pub async fn use_wallet_quote(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("UPDATE wallet_quotes SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(p)
                .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// A quote by id.
    pub async fn wallet_quote(&self, id: &str) -> Result<Option<WalletQuoteRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!("SELECT {QUOTE_COLUMNS} FROM wallet_quotes WHERE id = $1")))
                .bind(id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// A chain's cursor.
    pub async fn wallet_cursor(&self, chain_id: i64) -> Result<Option<WalletCursorRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!("SELECT {CURSOR_COLUMNS} FROM wallet_cursors WHERE chain_id = $1")))
                .bind(chain_id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// Creates a chain's cursor at `next_block` unless it exists; returns the cursor.
    pub async fn init_wallet_cursor(
        &self,
        chain_id: i64,
        next_block: i64,
        head: i64,
        now: i64,
    ) -> Result<WalletCursorRow, StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO wallet_cursors (chain_id, next_block, head, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (chain_id) DO NOTHING",
            )
            .bind(chain_id)
            .bind(next_block)
            .bind(head)
            .bind(now)
            .execute(p)
            .await?;
            Ok(sqlx::query_as(safe(&format!("SELECT {CURSOR_COLUMNS} FROM wallet_cursors WHERE chain_id = $1")))
                .bind(chain_id)
                .fetch_one(p)
                .await?)
        })
    }

    /// Records the head last seen and the last error (None: the look succeeded).
    pub async fn note_wallet_head(
        &self,
        chain_id: i64,
        head: Option<i64>,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE wallet_cursors SET head = COALESCE($2, head), last_error = $3, updated_at = $4 \
                 WHERE chain_id = $1",
            )
            .bind(chain_id)
            .bind(head)
            .bind(error)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// A block read earlier.
    pub async fn wallet_block(&self, chain_id: i64, number: i64) -> Result<Option<WalletBlockRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as("SELECT number, hash, parent_hash FROM wallet_blocks WHERE chain_id = $1 AND number = $2")
                .bind(chain_id)
                .bind(number)
                .fetch_optional(p)
                .await?)
        })
    }

    /// Records blocks `from..` and the deposits found in them and moves the
    /// cursor from `from` to `to_next`, in one transaction, only while the
    /// cursor is still at `from`; false (nothing written) when another
    /// process moved it. A deposit seen before is kept as it was, unless it
    /// was removed by a reorganisation: then it is pending again at its new block.
    pub async fn record_wallet_scan(
        &self,
        chain_id: i64,
        from: i64,
        to_next: i64,
        blocks: &[WalletBlockRow],
        deposits: &[WalletDepositRow],
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let moved = sqlx::query(
                "UPDATE wallet_cursors SET next_block = $3, updated_at = $4 WHERE chain_id = $1 AND next_block = $2",
            )
            .bind(chain_id)
            .bind(from)
            .bind(to_next)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            for b in blocks {
                sqlx::query(
                    "INSERT INTO wallet_blocks (chain_id, number, hash, parent_hash) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (chain_id, number) DO UPDATE SET hash = excluded.hash, parent_hash = excluded.parent_hash",
                )
                .bind(chain_id)
                .bind(b.number)
                .bind(&b.hash)
                .bind(&b.parent_hash)
                .execute(&mut *tx)
                .await?;
            }
            for d in deposits {
                sqlx::query(
                    "INSERT INTO wallet_deposits (chain_id, tx_hash, log_index, block_number, block_hash, block_time, \
                     from_address, asset, amount, points, state, seen_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11) \
                     ON CONFLICT (chain_id, tx_hash, log_index) DO UPDATE SET block_number = excluded.block_number, \
                     block_hash = excluded.block_hash, block_time = excluded.block_time, state = 'pending' \
                     WHERE wallet_deposits.state = 'removed'",
                )
                .bind(chain_id)
                .bind(&d.tx_hash)
                .bind(d.log_index)
                .bind(d.block_number)
                .bind(&d.block_hash)
                .bind(d.block_time)
                .bind(&d.from_address)
                .bind(&d.asset)
                .bind(&d.amount)
                .bind(d.points)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            // Hashes older than 256 blocks are not needed to notice a reorganisation.
            sqlx::query("DELETE FROM wallet_blocks WHERE chain_id = $1 AND number < $2")
                .bind(chain_id)
                .bind(to_next - 256)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Rewinds a chain to `block` after a reorganisation: blocks from there
    /// are forgotten, deposits in them not yet confirmed become `removed`,
    /// and the cursor moves back (never forward). Returns the deposits removed.
    pub async fn rewind_wallet_chain(&self, chain_id: i64, block: i64, now: i64) -> Result<u64, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("DELETE FROM wallet_blocks WHERE chain_id = $1 AND number >= $2")
                .bind(chain_id)
                .bind(block)
                .execute(&mut *tx)
                .await?;
            let removed = sqlx::query(
                "UPDATE wallet_deposits SET state = 'removed', settled_at = $3 \
                 WHERE chain_id = $1 AND block_number >= $2 AND state = 'pending'",
            )
            .bind(chain_id)
            .bind(block)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "UPDATE wallet_cursors SET next_block = $2, updated_at = $3 WHERE chain_id = $1 AND next_block > $2",
            )
            .bind(chain_id)
            .bind(block)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(removed)
        })
    }

    /// Pending deposits of a chain in blocks up to `max_block` (confirmed), oldest first.
    pub async fn confirmed_wallet_deposits(
        &self,
        chain_id: i64,
        max_block: i64,
    ) -> Result<Vec<WalletDepositRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {DEPOSIT_COLUMNS} FROM wallet_deposits WHERE chain_id = $1 AND state = 'pending' \
                 AND block_number <= $2 ORDER BY block_number, tx_hash, log_index"
            )))
            .bind(chain_id)
            .bind(max_block)
            .fetch_all(p)
            .await?)
        })
    }

    /// Unclaimed deposits from an address.
    pub async fn unclaimed_wallet_deposits(
        &self,
        chain_id: i64,
        address: &str,
    ) -> Result<Vec<WalletDepositRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {DEPOSIT_COLUMNS} FROM wallet_deposits WHERE chain_id = $1 AND from_address = $2 \
                 AND state = 'unclaimed' ORDER BY block_number, tx_hash, log_index"
            )))
            .bind(chain_id)
            .bind(address)
            .fetch_all(p)
            .await?)
        })
    }

    /// Moves a deposit from `pending` or `unclaimed` to `state` (for
    /// `account_id`); true for the caller that moved it.
    pub async fn settle_wallet_deposit(
        &self,
        d: &WalletDepositRow,
        state: &str,
        account_id: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE wallet_deposits SET state = $4, account_id = $5, settled_at = $6 \
                 WHERE chain_id = $1 AND tx_hash = $2 AND log_index = $3 AND state IN ('pending', 'unclaimed')",
            )
            .bind(d.chain_id)
            .bind(&d.tx_hash)
            .bind(d.log_index)
            .bind(state)
            .bind(account_id)
            .bind(now)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Deposits from any of an account's linked addresses or credited to
    /// it, newest first, at most `limit`.
    pub async fn wallet_deposits_for(&self, account_id: &str, limit: i64) -> Result<Vec<WalletDepositRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {DEPOSIT_COLUMNS} FROM wallet_deposits d WHERE d.account_id = $1 OR EXISTS \
                 (SELECT 1 FROM wallet_links l WHERE l.account_id = $1 AND l.chain_id = d.chain_id \
                 AND l.address = d.from_address) ORDER BY d.block_number DESC, d.tx_hash, d.log_index LIMIT $2"
            )))
            .bind(account_id)
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// Every deposit (of one chain when given), newest first, at most `limit`.
    pub async fn wallet_deposits(
        &self,
        chain_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<WalletDepositRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {DEPOSIT_COLUMNS} FROM wallet_deposits WHERE ($1 IS NULL OR chain_id = $1) \
                 ORDER BY seen_at DESC, block_number DESC, tx_hash, log_index LIMIT $2"
            )))
            .bind(chain_id)
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// Remembers `conversation` as where `account_id`'s deposits are
    /// announced; deposits settled before the first call are not.
    pub async fn remember_wallet_chat(
        &self,
        account_id: &str,
        platform: &str,
        conversation: &str,
        conv_json: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO wallet_notify (account_id, platform, conversation, conv_json, since, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (account_id) DO UPDATE SET platform = excluded.platform, \
                 conversation = excluded.conversation, conv_json = excluded.conv_json, updated_at = excluded.updated_at",
            )
            .bind(account_id)
            .bind(platform)
            .bind(conversation)
            .bind(conv_json)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Deposits credited (or that linked a wallet) since `after` for
    /// accounts with a remembered chat, that no delivery keyed
    /// `deposit:<chain>:<tx>:<log>` announced yet; oldest first.
    pub async fn unannounced_wallet_deposits(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<WalletNoticeRow>, StoreError> {
        let columns: Vec<String> = DEPOSIT_COLUMNS.split(',').map(|c| format!("d.{}", c.trim())).collect();
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {}, n.conv_json FROM wallet_deposits d JOIN wallet_notify n ON n.account_id = d.account_id \
                 WHERE d.settled_at > $1 AND d.settled_at >= n.since AND d.state IN ('credited', 'linked') \
                 AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.dedupe_key = \
                 'deposit:' || d.chain_id || ':' || d.tx_hash || ':' || d.log_index) \
                 ORDER BY d.settled_at, d.chain_id, d.tx_hash, d.log_index LIMIT $2",
                columns.join(", ")
            )))
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }
}
