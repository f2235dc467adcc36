//! The watcher of one chain: reads new blocks over JSON-RPC, records the
//! deposits in them, notices reorganisations and credits what is confirmed.
//!
//! - **Native transfers** are found in the blocks' transactions: a
//!   successful transaction (its receipt's status) whose `to` is the deposit
//!   address and whose value is not zero. Value moved by a contract's
//!   internal call is not seen (send from an account, not a contract).
//! - **ERC-20 transfers** are `Transfer` logs of the configured tokens whose
//!   `to` topic is the deposit address (`eth_getLogs` over the range read).
//! - **Reorganisations**: every block read is stored with its hash; before
//!   reading on, the last stored block's hash is compared with the chain's,
//!   and each new block's parent with the block before it. On a mismatch the
//!   watcher walks back to the newest block that still matches and rewinds
//!   there (unconfirmed deposits above become `removed`). Nothing is credited
//!   before its confirmations, so a reorganisation shallower than them never
//!   touches a credit.
//! - **Errors** back off: the poll interval doubled per failure, at most a
//!   minute; the error is kept on the chain's cursor row for `/readyz`.

use std::time::Duration;

use alloy_primitives::{B256, U256};
use alloy_sol_types::SolEvent;
use station_store::{WalletBlockRow, WalletDepositRow, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::rpc::{Block, Rpc};
use super::{Chain, Transfer, WalletError, lower};
use crate::Station;

/// Follows `chain` until `stop`: started with the workers, one per chain.
pub(crate) async fn watch_loop(station: Station, chain: Chain, stop: CancellationToken) {
    let rpc = Rpc::new(&chain.rpc_url, Duration::from_secs(10));
    let mut failures = 0u32;
    loop {
        let wait = match station.watch_step(&chain, &rpc).await {
            Ok(more) => {
                if failures > 0 {
                    info!(chain = chain.id, "chain node answers again");
                }
                failures = 0;
                if more { Duration::ZERO } else { chain.poll }
            }
            Err(e) => {
                failures += 1;
                let text = e.to_string();
                if failures == 1 {
                    warn!(chain = chain.id, error = %text, "cannot follow the chain; retrying with backoff");
                }
                let _ = station.store.note_wallet_head(chain.id as i64, None, Some(&text), now_ms()).await;
                (chain.poll * 2u32.saturating_pow(failures.min(6))).min(Duration::from_secs(60))
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn hex(h: &B256) -> String {
    format!("{h:#x}")
}

impl Station {
    /// One step of a chain's watcher: check for a reorganisation, read up to
    /// `max_blocks_per_poll` new blocks, credit what is confirmed. True when
    /// more blocks are waiting. The watcher loop calls it; tests and
    /// `station deposits rescan` may too.
    pub async fn wallet_poll(&self, chain_id: u64) -> Result<bool, WalletError> {
        let chain = self.chain(chain_id)?.clone();
        let rpc = Rpc::new(&chain.rpc_url, Duration::from_secs(10));
        self.watch_step(&chain, &rpc).await
    }

    async fn watch_step(&self, chain: &Chain, rpc: &Rpc) -> Result<bool, WalletError> {
        let id = chain.id as i64;
        let head = rpc.block_number().await.map_err(WalletError::Rpc)?;
        let now = now_ms();
        let cursor = match self.store.wallet_cursor(id).await? {
            Some(c) => c,
            None => {
                let start = chain.start_block.unwrap_or(head);
                self.store.init_wallet_cursor(id, start as i64, head as i64, now).await?
            }
        };
        self.store.note_wallet_head(id, Some(head as i64), None, now).await?;
        let next = cursor.next_block.max(0) as u64;
        // The last block read must still be the chain's.
        if next > 0
            && let Some(stored) = self.store.wallet_block(id, next as i64 - 1).await?
        {
            let current = rpc.block_hash(next - 1).await.map_err(WalletError::Rpc)?;
            if current.as_ref().map(hex) != Some(stored.hash.clone()) {
                self.rewind(chain, rpc, next - 1).await?;
                return Ok(true);
            }
        }
        if next > head {
            self.settle_confirmed(chain, head).await?;
            return Ok(false);
        }
        let to = head.min(next + chain.batch - 1);
        let mut blocks: Vec<Block> = vec![];
        for n in next..=to {
            let Some(b) = rpc.block(n).await.map_err(WalletError::Rpc)? else { break };
            let parent_ok = match blocks.last() {
                Some(prev) => prev.hash == b.parent_hash,
                None => match self.store.wallet_block(id, n as i64 - 1).await? {
                    Some(stored) => stored.hash == hex(&b.parent_hash),
                    None => true,
                },
            };
            if !parent_ok {
                // The chain changed under us: the next step's check rewinds.
                if blocks.is_empty() {
                    self.rewind(chain, rpc, n.saturating_sub(1)).await?;
                }
                return Ok(true);
            }
            blocks.push(b);
        }
        let Some(last) = blocks.last() else { return Ok(false) };
        let to = last.number.to::<u64>();
        let mut deposits = vec![];
        let native = chain.native();
        for b in &blocks {
            for tx in &b.transactions {
                if tx.to != Some(chain.deposit_address) || tx.value.is_zero() {
                    continue;
                }
                if rpc.succeeded(tx.hash).await.map_err(WalletError::Rpc)? != Some(true) {
                    continue;
                }
                deposits.push(deposit_row(
                    chain,
                    b,
                    hex(&tx.hash),
                    -1,
                    lower(&tx.from),
                    "native".into(),
                    tx.value,
                    native.map_or(0, |a| a.points(tx.value)),
                ));
            }
        }
        let tokens: Vec<_> = chain.assets.iter().filter_map(|a| a.token).collect();
        if !tokens.is_empty() {
            let to_topic = B256::left_padding_from(chain.deposit_address.as_slice());
            let topics = serde_json::json!([Transfer::SIGNATURE_HASH, null, to_topic]);
            for log in rpc.logs(next, to, &tokens, topics).await.map_err(WalletError::Rpc)? {
                if log.removed {
                    continue;
                }
                let n = log.block_number.to::<u64>();
                let Some(b) = blocks.iter().find(|b| b.number.to::<u64>() == n) else { continue };
                if b.hash != log.block_hash {
                    // Logs from another version of the block: read again.
                    return Ok(true);
                }
                let Ok(t) = Transfer::decode_raw_log(log.topics.iter().copied(), &log.data) else { continue };
                if t.to != chain.deposit_address || t.value.is_zero() {
                    continue;
                }
                let Some(asset) = chain.assets.iter().find(|a| a.token == Some(log.address)) else { continue };
                deposits.push(deposit_row(
                    chain,
                    b,
                    hex(&log.transaction_hash),
                    log.log_index.to::<u64>() as i64,
                    lower(&t.from),
                    asset.key(),
                    t.value,
                    asset.points(t.value),
                ));
            }
        }
        let rows: Vec<WalletBlockRow> = blocks
            .iter()
            .map(|b| WalletBlockRow {
                number: b.number.to::<u64>() as i64,
                hash: hex(&b.hash),
                parent_hash: hex(&b.parent_hash),
            })
            .collect();
        let moved = self.store.record_wallet_scan(id, next as i64, to as i64 + 1, &rows, &deposits, now_ms()).await?;
        if moved && !deposits.is_empty() {
            info!(chain = chain.id, from = next, to, deposits = deposits.len(), "deposits seen");
        }
        self.settle_confirmed(chain, head).await?;
        Ok(to < head)
    }

    /// Walks back from `from` to the newest stored block that is still the
    /// chain's and rewinds to the block after it.
    async fn rewind(&self, chain: &Chain, rpc: &Rpc, from: u64) -> Result<(), WalletError> {
        let id = chain.id as i64;
        let mut n = from;
        while n > 0 {
            let Some(stored) = self.store.wallet_block(id, n as i64).await? else { break };
            let current = rpc.block_hash(n).await.map_err(WalletError::Rpc)?;
            if current.as_ref().map(hex) == Some(stored.hash) {
                break;
            }
            n -= 1;
        }
        let back_to = if n == from { from } else { n + 1 };
        let removed = self.store.rewind_wallet_chain(id, back_to as i64, now_ms()).await?;
        warn!(chain = chain.id, block = back_to, removed, "chain reorganised; read again from this block");
        Ok(())
    }

    /// Settles the pending deposits with enough confirmations at `head`.
    async fn settle_confirmed(&self, chain: &Chain, head: u64) -> Result<(), WalletError> {
        let Some(max_block) = (head + 1).checked_sub(chain.confirmations) else { return Ok(()) };
        for d in self.store.confirmed_wallet_deposits(chain.id as i64, max_block as i64).await? {
            self.settle_deposit(chain, &d).await?;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn deposit_row(
    chain: &Chain,
    b: &Block,
    tx_hash: String,
    log_index: i64,
    from_address: String,
    asset: String,
    amount: U256,
    points: i64,
) -> WalletDepositRow {
    WalletDepositRow {
        chain_id: chain.id as i64,
        tx_hash,
        log_index,
        block_number: b.number.to::<u64>() as i64,
        block_hash: hex(&b.hash),
        block_time: b.timestamp.to::<u64>() as i64 * 1000,
        from_address,
        asset,
        amount: amount.to_string(),
        points,
        state: "pending".into(),
        account_id: None,
        seen_at: 0,
        settled_at: None,
    }
}
