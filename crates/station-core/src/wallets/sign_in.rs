//! Signing in to the web app with a linked wallet (`web.wallet_sign_in`,
//! off by default): a verified signature by an address linked to an
//! account opens a session for that account, as a sign-in link does.
//!
//! The challenge is an EIP-4361 message like a linking challenge, but it
//! belongs to no account until the signature proves the address: it is
//! stored with an empty account id, which no linking verification accepts
//! (account ids are never empty), and a linking challenge is never accepted
//! here (its account id is not empty). Challenges are only issued for
//! addresses some account has linked, and at most
//! `limits.requests_per_minute` per address, so strangers cannot fill the
//! table by asking for messages.

use std::time::Instant;

use alloy_primitives::Address;
use station_store::{AccountRow, StoreError, WalletChallengeRow, now_ms};
use station_tools::FieldError;

use super::{MAX_MINUTES, WalletChallenge, WalletError, check_signature, invalid, lower, new_nonce, parse_address};
use crate::Station;
use crate::identity::RateLimited;

/// Why a wallet sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// `web.wallet_sign_in` is off.
    #[error("signing in with a wallet is not enabled on this Station")]
    Off,
    /// Bad input or a signature that does not prove the address; every
    /// problem named by field.
    #[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// Too many challenges asked for one address.
    #[error("too many sign-in attempts for this wallet; try again in {} seconds", .0.retry_after.as_secs().max(1))]
    RateLimited(RateLimited),
    /// The account the wallet belongs to is suspended.
    #[error("this account is suspended; ask the operator")]
    Suspended,
    /// The chain's RPC did not answer (contract wallets are asked over it).
    #[error("the chain's node did not answer: {0}")]
    Rpc(String),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

impl From<WalletError> for SignInError {
    fn from(e: WalletError) -> Self {
        match e {
            WalletError::Invalid(f) => SignInError::Invalid(f),
            WalletError::Rpc(m) => SignInError::Rpc(m),
            WalletError::Storage(e) => SignInError::Storage(e),
            // Signing in credits nothing.
            WalletError::Ledger(e) => SignInError::Rpc(e.to_string()),
        }
    }
}

impl Station {
    /// Issues a one-time "Sign in with Ethereum" message for `address` on
    /// `chain_id`, valid `wallets.challenge_minutes`. Refused when wallet
    /// sign-in is off, or when no account has linked the address.
    pub async fn wallet_sign_in_challenge(&self, chain_id: u64, address: &str) -> Result<WalletChallenge, SignInError> {
        if !self.config.web.wallet_sign_in {
            return Err(SignInError::Off);
        }
        let chain = self.chain(chain_id)?.clone();
        let addr = parse_address("address", address).map_err(|e| SignInError::Invalid(vec![e]))?;
        self.rate_limits
            .check(&format!("wallet-sign-in:{}:{}", chain.id, lower(&addr)), Instant::now())
            .map_err(SignInError::RateLimited)?;
        if self.store.wallet_link(chain.id as i64, &lower(&addr)).await?.is_none() {
            return Err(invalid(
                "address",
                format!(
                    "no Station account has this wallet linked on {}; sign in with a link from the bot once and \
                     link the wallet on the Wallet page",
                    chain.name
                ),
            )
            .into());
        }
        let nonce = new_nonce();
        let now = now_ms();
        let expires_at = now + self.config.wallets.challenge_minutes.min(MAX_MINUTES) as i64 * 60_000;
        let message = self.siwe_message(&chain, &addr, "Sign in to Station.", &nonce, now, expires_at);
        let row = WalletChallengeRow {
            nonce: nonce.clone(),
            // Nobody's yet: the signature says whose.
            account_id: String::new(),
            chain_id: chain.id as i64,
            address: lower(&addr),
            message: message.clone(),
            created_at: now,
            expires_at,
            used_at: None,
        };
        self.store.insert_wallet_challenge(&row).await?;
        Ok(WalletChallenge { nonce, message, chain_id: chain.id, address: addr.to_checksum(None), expires_at })
    }

    /// Checks `signature` over the sign-in challenge `nonce` and returns the
    /// account the address is linked to (the caller opens its session). A
    /// challenge works once, until it expires.
    pub async fn wallet_sign_in(&self, nonce: &str, signature: &str) -> Result<AccountRow, SignInError> {
        if !self.config.web.wallet_sign_in {
            return Err(SignInError::Off);
        }
        let stale = || -> SignInError {
            invalid("nonce", "unknown, used or expired sign-in message; ask for a new one to sign").into()
        };
        let Some(ch) = self.store.wallet_challenge(nonce.trim()).await? else { return Err(stale()) };
        let now = now_ms();
        if !ch.account_id.is_empty() || ch.used_at.is_some() || ch.expires_at <= now {
            return Err(stale());
        }
        let chain = self.chain(ch.chain_id as u64)?.clone();
        let address: Address = ch.address.parse().map_err(|_| stale())?;
        let method = check_signature(&chain, address, &ch.message, signature).await?;
        if !self.store.use_wallet_challenge(&ch.nonce, now_ms()).await? {
            return Err(stale());
        }
        let Some(link) = self.store.wallet_link(chain.id as i64, &ch.address).await? else {
            return Err(invalid("address", "is no longer linked to a Station account").into());
        };
        let Some(account) = self.store.get_account(&link.account_id).await? else {
            return Err(invalid("address", "is no longer linked to a Station account").into());
        };
        if account.suspended {
            return Err(SignInError::Suspended);
        }
        if let Some(off) = self.feature_refusal("wallets", &account).await {
            return Err(SignInError::Invalid(vec![off]));
        }
        tracing::info!(account = %account.id, chain = chain.id, method, "signed in with a wallet");
        Ok(account)
    }
}
