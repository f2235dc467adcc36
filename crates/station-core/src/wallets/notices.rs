//! Deposit notices: a chat front end remembers where an account asked about
//! its wallet (`/wallet`, `/deposit`), and announces there each deposit
//! settled for the account from then on. The notices are found by a query
//! (settled deposits no delivery announced yet), so a process that stops
//! between a credit and its notice announces it after the restart; the
//! delivery's dedupe key (the deposit's key) makes it once.

use station_store::{AccountRow, WalletDepositRow, now_ms};

use super::{Deposit, WalletError, deposit_key};
use crate::Station;

/// How far back notices are looked for: a day (older credits are history).
const NOTICE_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// A settled deposit to announce.
#[derive(Debug, Clone)]
pub struct DepositNotice {
    /// The account credited.
    pub account_id: String,
    /// Where to announce it (the front end's conversation, as it gave it).
    pub conv_json: String,
    /// The dedupe key of the announcement: `deposit:<chain>:<tx>:<log>`.
    pub key: String,
    /// The deposit.
    pub deposit: Deposit,
}

impl Station {
    /// Remembers `conversation` (the front end's own JSON, with its
    /// `platform` and key) as where `account`'s deposits are announced.
    pub async fn remember_deposit_chat(
        &self,
        account: &AccountRow,
        platform: &str,
        conversation: &str,
        conv_json: &str,
    ) -> Result<(), WalletError> {
        if self.wallet_chains.is_empty() {
            return Ok(());
        }
        self.store.remember_wallet_chat(&account.id, platform, conversation, conv_json, now_ms()).await?;
        Ok(())
    }

    /// Deposits settled in the last day that were not announced yet, oldest first.
    pub async fn deposit_notices(&self, limit: i64) -> Result<Vec<DepositNotice>, WalletError> {
        if self.wallet_chains.is_empty() {
            return Ok(vec![]);
        }
        let rows = self.store.unannounced_wallet_deposits(now_ms() - NOTICE_WINDOW_MS, limit.clamp(1, 500)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let key = deposit_key(&r.deposit);
            let account_id = r.deposit.account_id.clone().unwrap_or_default();
            let deposit: WalletDepositRow = r.deposit;
            let Some(view) = self.deposit_views(vec![deposit]).await?.pop() else { continue };
            out.push(DepositNotice { account_id, conv_json: r.conv_json, key, deposit: view });
        }
        Ok(out)
    }
}
