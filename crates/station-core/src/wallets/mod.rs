//! Wallets and on-chain deposits (issue 26).
//!
//! - **Chains are configuration** (`[[wallets.chains]]`, [`crate::config::WalletsConfig`]),
//!   checked once when Station opens ([`chains_from_config`]): addresses
//!   parsed, the minimum turned into smallest units, confirmations defaulted.
//! - **Linking by signature**: [`Station::wallet_challenge`] issues an
//!   EIP-4361 message with a one-time nonce (stored with the exact text);
//!   [`Station::verify_wallet`] recovers the signer (EIP-191 `personal_sign`)
//!   or, when the address holds code, asks the contract (`isValidSignature`,
//!   EIP-1271) over the chain's RPC.
//! - **Linking by magic deposit**: [`Station::magic_quote`] stores a unique
//!   native amount for an address the user typed; the link happens when a
//!   confirmed native transfer of exactly that amount comes **from that
//!   address** (an equal amount from any other sender links nothing).
//! - **Deposits**: [`watcher`] follows each chain; a deposit is credited to
//!   the sender's linked account once confirmed, with the ledger key
//!   `deposit:<chain>:<tx>:<log index>`, or held as unclaimed and credited
//!   when the address is linked later.
//!
//! One account per `(chain, address)`: linking an address another account
//! holds is refused (that account unlinks it first), never a silent move.

mod notices;
pub mod rpc;
mod sign_in;
mod watcher;

use std::time::Duration;

use alloy_primitives::{Address, Signature, U256, eip191_hash_message};
use alloy_sol_types::{SolCall, sol};
use rand::Rng;
use serde::Serialize;
use station_store::{
    AccountRow, EntryKind, LedgerError, NewEntry, StoreError, WalletChallengeRow, WalletDepositRow, WalletLinkRow,
    WalletQuoteRow, now_ms,
};
use station_tools::FieldError;

pub use notices::DepositNotice;
pub use sign_in::SignInError;
pub(crate) use watcher::watch_loop;

use crate::Station;
use crate::audit::Actor;
use crate::config::{ChainConfig, WalletsConfig};

sol! {
    /// ERC-20's transfer event.
    event Transfer(address indexed from, address indexed to, uint256 value);
    /// EIP-1271: whether a contract accepts a signature over a hash.
    function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4 magicValue);
}

/// EIP-1271's answer for a valid signature.
const EIP1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

/// Chain ids of development chains (anvil/hardhat, ganache/geth --dev):
/// one confirmation by default.
pub const DEV_CHAINS: [u64; 2] = [31337, 1337];

/// The longest a challenge or quote may be valid.
pub const MAX_MINUTES: u64 = 15;

/// One accepted asset, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    /// Symbol shown to people.
    pub symbol: String,
    /// The ERC-20 contract; None for the native coin.
    pub token: Option<Address>,
    /// Decimals.
    pub decimals: u32,
    /// Points for one whole unit.
    pub points_per_unit: u64,
    /// Smallest credited deposit, in smallest units.
    pub minimum: U256,
}

impl Asset {
    /// Points `amount` smallest units are worth: `floor(amount × rate /
    /// 10^decimals)` in 256-bit integers; `i64::MAX` if that does not fit.
    pub fn points(&self, amount: U256) -> i64 {
        let scale = U256::from(10u64).pow(U256::from(self.decimals));
        match amount.checked_mul(U256::from(self.points_per_unit)) {
            Some(v) => i64::try_from(v / scale).unwrap_or(i64::MAX),
            None => i64::MAX,
        }
    }

    /// The stored name of the asset: `native` or the token's lower-case address.
    pub fn key(&self) -> String {
        self.token.map_or_else(|| "native".to_string(), |t| lower(&t))
    }
}

/// One chain, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// EIP-155 id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// Where deposits go.
    pub deposit_address: Address,
    /// Blocks a deposit needs, its own included.
    pub confirmations: u64,
    /// First block read when the chain has no cursor yet (None: the head).
    pub start_block: Option<u64>,
    /// Time between looks.
    pub poll: Duration,
    /// Most blocks per step.
    pub batch: u64,
    /// Largest magic amount.
    pub magic_cap: u64,
    /// Accepted assets.
    pub assets: Vec<Asset>,
}

impl Chain {
    /// The asset stored as `key` (`native` or a token address).
    pub fn asset(&self, key: &str) -> Option<&Asset> {
        self.assets.iter().find(|a| a.key() == key)
    }

    /// The native coin's asset, when accepted.
    pub fn native(&self) -> Option<&Asset> {
        self.assets.iter().find(|a| a.token.is_none())
    }
}

/// Lower-case 0x text of an address (how addresses are stored).
pub fn lower(a: &Address) -> String {
    format!("{a:#x}")
}

/// Parses `0x` + 40 hex digits; mixed case must be a valid EIP-55 checksum.
pub fn parse_address(field: &str, text: &str) -> Result<Address, FieldError> {
    let t = text.trim();
    let bad = |reason: &str| FieldError { field: field.into(), reason: reason.into() };
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).ok_or_else(|| bad("must start with 0x"))?;
    if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("must be 0x followed by 40 hexadecimal digits"));
    }
    let mixed = hex.chars().any(|c| c.is_ascii_uppercase()) && hex.chars().any(|c| c.is_ascii_lowercase());
    if mixed {
        Address::parse_checksummed(format!("0x{hex}"), None)
            .map_err(|_| bad("has a wrong checksum (mixed case); check it for a typo"))
    } else {
        t.parse().map_err(|_| bad("is not an address"))
    }
}

/// `"1.5"` whole units → smallest units, exactly (no floats); more fractional
/// digits than `decimals` is an error.
pub fn parse_units(text: &str, decimals: u32) -> Result<U256, String> {
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!("{t:?} is not a decimal number such as \"0.01\""));
    }
    if frac.len() > decimals as usize {
        return Err(format!("{t:?} has more than {decimals} decimals"));
    }
    let digits = format!("{whole}{frac:0<width$}", width = decimals as usize);
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(U256::ZERO);
    }
    U256::from_str_radix(digits, 10).map_err(|_| format!("{t:?} is too large"))
}

/// Smallest units → whole units as text (`1500000` with 6 decimals → `1.5`).
pub fn format_units(amount: U256, decimals: u32) -> String {
    let s = amount.to_string();
    let d = decimals as usize;
    if d == 0 {
        return s;
    }
    let padded = format!("{s:0>width$}", width = d + 1);
    let (whole, frac) = padded.split_at(padded.len() - d);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { whole.to_string() } else { format!("{whole}.{frac}") }
}

/// Checks the `[wallets]` section; each error names the chain and key.
pub fn chains_from_config(c: &WalletsConfig) -> Result<Vec<Chain>, String> {
    if c.challenge_minutes == 0 || c.challenge_minutes > MAX_MINUTES {
        return Err(format!("wallets.challenge_minutes must be 1 to {MAX_MINUTES}, got {}", c.challenge_minutes));
    }
    if c.quote_minutes == 0 || c.quote_minutes > MAX_MINUTES {
        return Err(format!("wallets.quote_minutes must be 1 to {MAX_MINUTES}, got {}", c.quote_minutes));
    }
    let mut out: Vec<Chain> = vec![];
    for (i, ch) in c.chains.iter().enumerate() {
        let at = format!("wallets.chains[{i}]");
        out.push(chain_from_config(ch, &at)?);
        if out[..i].iter().any(|o| o.id == ch.id) {
            return Err(format!("{at}.id: chain {} is configured twice", ch.id));
        }
    }
    Ok(out)
}

fn chain_from_config(ch: &ChainConfig, at: &str) -> Result<Chain, String> {
    if ch.name.trim().is_empty() {
        return Err(format!("{at}.name must not be empty"));
    }
    if !(ch.rpc_url.starts_with("http://") || ch.rpc_url.starts_with("https://")) {
        return Err(format!("{at}.rpc_url must be an http:// or https:// URL"));
    }
    let deposit_address =
        parse_address("deposit_address", &ch.deposit_address).map_err(|e| format!("{at}.{}: {}", e.field, e.reason))?;
    let confirmations = ch.confirmations.unwrap_or(if DEV_CHAINS.contains(&ch.id) { 1 } else { 12 });
    if confirmations == 0 {
        return Err(format!("{at}.confirmations must be at least 1"));
    }
    let mut assets: Vec<Asset> = vec![];
    for (j, a) in ch.assets.iter().enumerate() {
        let at = format!("{at}.assets[{j}]");
        let token = match &a.token {
            Some(t) => Some(parse_address("token", t).map_err(|e| format!("{at}.token: {}", e.reason))?),
            None => None,
        };
        if a.decimals > 36 {
            return Err(format!("{at}.decimals must be at most 36, got {}", a.decimals));
        }
        let minimum = match &a.minimum {
            Some(m) => parse_units(m, a.decimals).map_err(|e| format!("{at}.minimum: {e}"))?,
            None => U256::ZERO,
        };
        let asset = Asset {
            symbol: a.symbol.clone(),
            token,
            decimals: a.decimals,
            points_per_unit: a.points_per_unit,
            minimum,
        };
        if assets.iter().any(|b| b.key() == asset.key()) {
            return Err(format!("{at}: the same asset is listed twice"));
        }
        assets.push(asset);
    }
    Ok(Chain {
        id: ch.id,
        name: ch.name.clone(),
        rpc_url: ch.rpc_url.clone(),
        deposit_address,
        confirmations,
        start_block: ch.start_block,
        poll: Duration::from_millis(ch.poll_ms.max(10)),
        batch: ch.max_blocks_per_poll.clamp(1, 10_000),
        magic_cap: ch.magic_cap.max(1000),
        assets,
    })
}

/// Why a wallet request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Bad input; every problem named by field.
    #[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The chain's RPC did not answer (try again later).
    #[error("the chain's node did not answer: {0}")]
    Rpc(String),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
    /// The ledger refused the credit.
    #[error("points: {0}")]
    Ledger(#[from] LedgerError),
}

fn invalid(field: &str, reason: impl Into<String>) -> WalletError {
    WalletError::Invalid(vec![FieldError { field: field.into(), reason: reason.into() }])
}

/// A linked address.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WalletLink {
    /// Chain id.
    pub chain_id: u64,
    /// Chain name.
    pub chain: String,
    /// Address (EIP-55 checksummed).
    pub address: String,
    /// `signature`, `contract` or `deposit`.
    pub method: String,
    /// When linked (Unix ms).
    pub linked_at: i64,
}

/// A challenge to sign.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WalletChallenge {
    /// The one-time nonce (send it back with the signature).
    pub nonce: String,
    /// The EIP-4361 message to sign with `personal_sign`, exactly.
    pub message: String,
    /// Chain id.
    pub chain_id: u64,
    /// Address (checksummed).
    pub address: String,
    /// When it expires (Unix ms).
    pub expires_at: i64,
}

/// A magic-deposit quote.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MagicQuote {
    /// Id.
    pub id: String,
    /// Chain id.
    pub chain_id: u64,
    /// Chain name.
    pub chain: String,
    /// The address the deposit must come from (checksummed).
    pub from_address: String,
    /// Where to send it (checksummed).
    pub deposit_address: String,
    /// The exact amount in the native coin's smallest unit (decimal text).
    pub amount: String,
    /// The same in whole units with the symbol (`0.000000000123456789 ETH`).
    pub amount_text: String,
    /// When it expires (Unix ms).
    pub expires_at: i64,
}

/// A deposit as its sender sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Deposit {
    /// Chain id.
    pub chain_id: u64,
    /// Chain name.
    pub chain: String,
    /// Transaction hash.
    pub tx_hash: String,
    /// Log index (-1: native transfer).
    pub log_index: i64,
    /// Block number.
    pub block_number: i64,
    /// Sender (checksummed).
    pub from_address: String,
    /// Asset symbol (or the token address when no longer configured).
    pub asset: String,
    /// Amount in smallest units.
    pub amount: String,
    /// Amount in whole units with the symbol.
    pub amount_text: String,
    /// Points it is worth.
    pub points: i64,
    /// Confirmations so far (its own block counts one).
    pub confirmations: u64,
    /// Confirmations it needs.
    pub confirmations_needed: u64,
    /// `pending`, `credited`, `unclaimed`, `linked`, `below_minimum` or `removed`.
    pub state: String,
    /// When first seen (Unix ms).
    pub seen_at: i64,
}

/// A chain watcher's state, for `/readyz` and operators.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChainStatus {
    /// Chain id.
    pub chain_id: u64,
    /// Name.
    pub name: String,
    /// The chain's newest block when last asked (None: never reached).
    pub head: Option<u64>,
    /// The next block to read.
    pub cursor: Option<u64>,
    /// Blocks not read yet.
    pub lag: Option<u64>,
    /// The last RPC error, cleared by the next success.
    pub last_error: Option<String>,
}

/// A chain as shown to depositors.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChainInfo {
    /// Chain id.
    pub chain_id: u64,
    /// Name.
    pub name: String,
    /// Where to send deposits (checksummed).
    pub deposit_address: String,
    /// Confirmations before crediting.
    pub confirmations: u64,
    /// Accepted assets.
    pub assets: Vec<AssetInfo>,
}

/// An accepted asset as shown to depositors.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AssetInfo {
    /// Symbol.
    pub symbol: String,
    /// Token contract (checksummed); None for the native coin.
    pub token: Option<String>,
    /// Points for one whole unit.
    pub points_per_unit: u64,
    /// Smallest credited deposit in whole units.
    pub minimum: String,
}

fn checksum(a: &str) -> String {
    a.parse::<Address>().map_or_else(|_| a.to_string(), |a| a.to_checksum(None))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A fresh one-time nonce (EIP-4361 asks for at least 8 alphanumerics).
pub(crate) fn new_nonce() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(16).map(char::from).collect()
}

/// Checks a `personal_sign` signature (0x hex) of `message` by `address`:
/// recovered (EIP-191) for an ordinary account, else accepted by the
/// contract at the address (EIP-1271 `isValidSignature`, asked over the
/// chain's RPC). Returns how it was proven: `signature` or `contract`.
pub(crate) async fn check_signature(
    chain: &Chain,
    address: Address,
    message: &str,
    signature: &str,
) -> Result<&'static str, WalletError> {
    let sig_text = signature.trim();
    let sig_bytes = hex::decode(sig_text.strip_prefix("0x").unwrap_or(sig_text))
        .map_err(|_| invalid("signature", "must be 0x followed by hexadecimal digits"))?;
    if sig_bytes.is_empty() {
        return Err(invalid("signature", "must not be empty"));
    }
    let recovered = Signature::from_raw(&sig_bytes).ok().and_then(|s| s.recover_address_from_msg(message).ok());
    if recovered == Some(address) {
        return Ok("signature");
    }
    let rpc = rpc::Rpc::new(&chain.rpc_url, Duration::from_secs(10));
    let code = rpc.code(address).await.map_err(WalletError::Rpc)?;
    if code.is_empty() {
        return Err(invalid("signature", "was not made by this address's key; sign the message with it"));
    }
    let call = isValidSignatureCall { hash: eip191_hash_message(message), signature: sig_bytes.into() };
    let ok = match rpc.call_contract(address, call.abi_encode()).await {
        Ok(out) => isValidSignatureCall::abi_decode_returns(&out).is_ok_and(|v| v.0 == EIP1271_MAGIC),
        // A contract without the function reverts: not a valid signature.
        Err(e) if e.contains("revert") => false,
        Err(e) => return Err(WalletError::Rpc(e)),
    };
    if !ok {
        return Err(invalid("signature", "the wallet contract at this address does not accept it (EIP-1271)"));
    }
    Ok("contract")
}

/// The deposit's ledger idempotency key.
pub fn deposit_key(d: &WalletDepositRow) -> String {
    format!("deposit:{}:{}:{}", d.chain_id, d.tx_hash, d.log_index)
}

impl Station {
    /// The configured chains.
    pub fn wallet_chains(&self) -> &[Chain] {
        &self.0.wallet_chains
    }

    fn chain(&self, chain_id: u64) -> Result<&Chain, WalletError> {
        self.wallet_chains.iter().find(|c| c.id == chain_id).ok_or_else(|| {
            let known: Vec<String> = self.wallet_chains.iter().map(|c| format!("{} ({})", c.id, c.name)).collect();
            if known.is_empty() {
                invalid("chain_id", "no chains are configured on this Station")
            } else {
                invalid("chain_id", format!("unknown chain {chain_id}; choose one of {}", known.join(", ")))
            }
        })
    }

    /// The chains as shown to depositors: where to send, what is accepted and at which rate.
    pub fn deposit_info(&self) -> Vec<ChainInfo> {
        self.wallet_chains
            .iter()
            .map(|c| ChainInfo {
                chain_id: c.id,
                name: c.name.clone(),
                deposit_address: c.deposit_address.to_checksum(None),
                confirmations: c.confirmations,
                assets: c
                    .assets
                    .iter()
                    .map(|a| AssetInfo {
                        symbol: a.symbol.clone(),
                        token: a.token.map(|t| t.to_checksum(None)),
                        points_per_unit: a.points_per_unit,
                        minimum: format_units(a.minimum, a.decimals),
                    })
                    .collect(),
            })
            .collect()
    }

    /// An account's linked addresses.
    pub async fn wallets(&self, account: &AccountRow) -> Result<Vec<WalletLink>, WalletError> {
        Ok(self.store.wallet_links(&account.id).await?.into_iter().map(|l| self.link_view(l)).collect())
    }

    fn link_view(&self, l: WalletLinkRow) -> WalletLink {
        let chain = self
            .wallet_chains
            .iter()
            .find(|c| c.id as i64 == l.chain_id)
            .map_or_else(|| format!("chain {}", l.chain_id), |c| c.name.clone());
        WalletLink {
            chain_id: l.chain_id as u64,
            chain,
            address: checksum(&l.address),
            method: l.method,
            linked_at: l.created_at,
        }
    }

    /// An EIP-4361 ("Sign in with Ethereum") message for `addr` on `chain`.
    pub(crate) fn siwe_message(
        &self,
        chain: &Chain,
        addr: &Address,
        statement: &str,
        nonce: &str,
        now: i64,
        expires_at: i64,
    ) -> String {
        let uri = self.config.public_url();
        let domain = uri.split_once("://").map_or(uri.as_str(), |(_, r)| r).split('/').next().unwrap_or("").to_string();
        format!(
            "{domain} wants you to sign in with your Ethereum account:\n{address}\n\n{statement}\n\n\
             URI: {uri}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {issued}\nExpiration Time: {expires}",
            address = addr.to_checksum(None),
            chain_id = chain.id,
            issued = rfc3339(now),
            expires = rfc3339(expires_at),
        )
    }

    /// Issues a one-time EIP-4361 challenge proving `address` on `chain_id`
    /// for `account`, valid `wallets.challenge_minutes`.
    pub async fn wallet_challenge(
        &self,
        account: &AccountRow,
        chain_id: u64,
        address: &str,
    ) -> Result<WalletChallenge, WalletError> {
        if let Some(off) = self.feature_refusal("wallets", account).await {
            return Err(WalletError::Invalid(vec![off]));
        }
        let chain = self.chain(chain_id)?;
        let addr = parse_address("address", address).map_err(|e| WalletError::Invalid(vec![e]))?;
        let nonce = new_nonce();
        let now = now_ms();
        let expires_at = now + self.config.wallets.challenge_minutes.min(MAX_MINUTES) as i64 * 60_000;
        let statement = format!("Link this wallet to your Station account on {}.", chain.name);
        let message = self.siwe_message(chain, &addr, &statement, &nonce, now, expires_at);
        let row = WalletChallengeRow {
            nonce: nonce.clone(),
            account_id: account.id.clone(),
            chain_id: chain_id as i64,
            address: lower(&addr),
            message: message.clone(),
            created_at: now,
            expires_at,
            used_at: None,
        };
        self.store.insert_wallet_challenge(&row).await?;
        Ok(WalletChallenge { nonce, message, chain_id, address: addr.to_checksum(None), expires_at })
    }

    /// Checks `signature` (0x hex, 65 bytes from `personal_sign`) over the
    /// challenge `nonce` and links its address to `account`: recovered
    /// (EIP-191) for an ordinary account, or accepted by the contract at the
    /// address (EIP-1271 `isValidSignature`). A challenge is good once, for
    /// the account that asked, until it expires.
    pub async fn verify_wallet(
        &self,
        account: &AccountRow,
        nonce: &str,
        signature: &str,
    ) -> Result<WalletLink, WalletError> {
        if let Some(off) = self.feature_refusal("wallets", account).await {
            return Err(WalletError::Invalid(vec![off]));
        }
        let stale = || invalid("nonce", "unknown, used or expired challenge; ask for a new message to sign");
        let Some(ch) = self.store.wallet_challenge(nonce.trim()).await? else { return Err(stale()) };
        let now = now_ms();
        if ch.account_id != account.id || ch.used_at.is_some() || ch.expires_at <= now {
            return Err(stale());
        }
        let chain = self.chain(ch.chain_id as u64)?.clone();
        let address: Address = ch.address.parse().map_err(|_| stale())?;
        let method = check_signature(&chain, address, &ch.message, signature).await?;
        if !self.store.use_wallet_challenge(&ch.nonce, now_ms()).await? {
            return Err(stale());
        }
        self.link_address(account, &chain, &ch.address, method).await
    }

    /// Links `address` (lower-case) to `account` and credits the deposits
    /// it made while unlinked; refused when another account holds it.
    async fn link_address(
        &self,
        account: &AccountRow,
        chain: &Chain,
        address: &str,
        method: &str,
    ) -> Result<WalletLink, WalletError> {
        let row = WalletLinkRow {
            chain_id: chain.id as i64,
            address: address.to_string(),
            account_id: account.id.clone(),
            method: method.to_string(),
            created_at: now_ms(),
        };
        let owner = self.store.link_wallet(&row).await?;
        if owner != account.id {
            return Err(invalid(
                "address",
                "is linked to another account; it must be unlinked there before it can be linked here",
            ));
        }
        self.credit_unclaimed(chain, address).await?;
        let link = self.store.wallet_link(chain.id as i64, address).await?.unwrap_or(row);
        Ok(self.link_view(link))
    }

    async fn credit_unclaimed(&self, chain: &Chain, address: &str) -> Result<(), WalletError> {
        for d in self.store.unclaimed_wallet_deposits(chain.id as i64, address).await? {
            self.settle_deposit(chain, &d).await?;
        }
        Ok(())
    }

    /// Quotes a magic deposit linking `address` (typed by the user) on
    /// `chain_id` to `account`: a unique random native amount, valid
    /// `wallets.quote_minutes`, that links only when it arrives from `address`.
    pub async fn magic_quote(
        &self,
        account: &AccountRow,
        chain_id: u64,
        address: &str,
    ) -> Result<MagicQuote, WalletError> {
        if let Some(off) = self.feature_refusal("wallets", account).await {
            return Err(WalletError::Invalid(vec![off]));
        }
        let chain = self.chain(chain_id)?;
        let addr = parse_address("address", address).map_err(|e| WalletError::Invalid(vec![e]))?;
        if let Some(l) = self.store.wallet_link(chain.id as i64, &lower(&addr)).await? {
            let reason = if l.account_id == account.id {
                "is linked to your account already"
            } else {
                "is linked to another account; it must be unlinked there before it can be linked here"
            };
            return Err(invalid("address", reason));
        }
        let now = now_ms();
        let expires_at = now + self.config.wallets.quote_minutes.min(MAX_MINUTES) as i64 * 60_000;
        for _ in 0..16 {
            let amount = rand::rng().random_range(1..=chain.magic_cap).to_string();
            let row = WalletQuoteRow {
                id: uuid::Uuid::new_v4().simple().to_string(),
                account_id: account.id.clone(),
                chain_id: chain.id as i64,
                address: lower(&addr),
                amount: amount.clone(),
                created_at: now,
                expires_at,
                used_at: None,
            };
            if self.store.insert_wallet_quote(&row).await? {
                let (symbol, decimals) =
                    chain.native().map_or(("native units".to_string(), 0), |a| (a.symbol.clone(), a.decimals));
                let units = U256::from_str_radix(&amount, 10).unwrap_or_default();
                return Ok(MagicQuote {
                    id: row.id,
                    chain_id,
                    chain: chain.name.clone(),
                    from_address: addr.to_checksum(None),
                    deposit_address: chain.deposit_address.to_checksum(None),
                    amount_text: format!("{} {symbol}", format_units(units, decimals)),
                    amount,
                    expires_at,
                });
            }
        }
        Err(invalid("amount", "could not find a free amount; please try again"))
    }

    /// Removes one of `account`'s links; false when it had no such link.
    pub async fn unlink_wallet(&self, account: &AccountRow, chain_id: u64, address: &str) -> Result<bool, WalletError> {
        let addr = parse_address("address", address).map_err(|e| WalletError::Invalid(vec![e]))?;
        Ok(self.store.unlink_wallet(&account.id, chain_id as i64, &lower(&addr)).await?)
    }

    /// Deposits from `account`'s addresses or credited to it, newest first.
    pub async fn deposits(&self, account: &AccountRow, limit: i64) -> Result<Vec<Deposit>, WalletError> {
        let rows = self.store.wallet_deposits_for(&account.id, limit.clamp(1, 500)).await?;
        self.deposit_views(rows).await
    }

    /// Every deposit (of one chain when given), newest first: for operators.
    pub async fn all_deposits(&self, chain_id: Option<u64>, limit: i64) -> Result<Vec<Deposit>, WalletError> {
        let rows = self.store.wallet_deposits(chain_id.map(|c| c as i64), limit.clamp(1, 10_000)).await?;
        self.deposit_views(rows).await
    }

    async fn deposit_views(&self, rows: Vec<WalletDepositRow>) -> Result<Vec<Deposit>, WalletError> {
        let mut heads = std::collections::HashMap::new();
        let mut out = vec![];
        for d in rows {
            if let std::collections::hash_map::Entry::Vacant(e) = heads.entry(d.chain_id) {
                e.insert(self.store.wallet_cursor(d.chain_id).await?.map(|c| c.head));
            }
            let head = heads[&d.chain_id];
            let chain = self.wallet_chains.iter().find(|c| c.id as i64 == d.chain_id);
            let asset = chain.and_then(|c| c.asset(&d.asset));
            let needed = chain.map_or(1, |c| c.confirmations);
            let units = U256::from_str_radix(&d.amount, 10).unwrap_or_default();
            let (symbol, decimals) = match (asset, d.asset.as_str()) {
                (Some(a), _) => (a.symbol.clone(), a.decimals),
                (None, "native") => ("native units".to_string(), 0),
                (None, token) => (token.to_string(), 0),
            };
            let confirmations = match d.state.as_str() {
                "removed" => 0,
                "pending" => head.map_or(0, |h| (h + 1 - d.block_number).max(0) as u64),
                _ => head.map_or(needed, |h| ((h + 1 - d.block_number).max(0) as u64).max(needed)),
            };
            out.push(Deposit {
                chain_id: d.chain_id as u64,
                chain: chain.map_or_else(|| format!("chain {}", d.chain_id), |c| c.name.clone()),
                tx_hash: d.tx_hash,
                log_index: d.log_index,
                block_number: d.block_number,
                from_address: checksum(&d.from_address),
                amount_text: format!("{} {symbol}", format_units(units, decimals)),
                asset: symbol,
                amount: d.amount,
                points: d.points,
                confirmations,
                confirmations_needed: needed,
                state: d.state,
                seen_at: d.seen_at,
            });
        }
        Ok(out)
    }

    /// Each configured chain's watcher: head, cursor, lag and last error.
    pub async fn wallet_chain_status(&self) -> Vec<ChainStatus> {
        let mut out = vec![];
        for c in self.wallet_chains.iter() {
            let (head, cursor, last_error) = match self.store.wallet_cursor(c.id as i64).await {
                Ok(Some(r)) => (Some(r.head.max(0) as u64), Some(r.next_block.max(0) as u64), r.last_error),
                Ok(None) => (None, None, None),
                Err(e) => (None, None, Some(format!("storage error: {e}"))),
            };
            let lag = match (head, cursor) {
                (Some(h), Some(c)) => Some((h + 1).saturating_sub(c)),
                _ => None,
            };
            out.push(ChainStatus { chain_id: c.id, name: c.name.clone(), head, cursor, lag, last_error });
        }
        out
    }

    /// Reads `chain_id` again from `from_block` (an operator's repair after
    /// a missed range): the cursor moves back, deposits not yet confirmed
    /// from there are forgotten and found again; credited ones stay credited
    /// once (their ledger keys). Audited. Returns the deposits forgotten.
    pub async fn rescan_chain(&self, chain_id: u64, from_block: u64, by: &Actor) -> Result<u64, WalletError> {
        let chain = self.chain(chain_id)?;
        let now = now_ms();
        let head = self.store.wallet_cursor(chain.id as i64).await?.map_or(0, |c| c.head);
        self.store.init_wallet_cursor(chain.id as i64, from_block as i64, head, now).await?;
        let n = self.store.rewind_wallet_chain(chain.id as i64, from_block as i64, now).await?;
        self.audit(by, "wallets.rescan", &chain_id.to_string(), format!("{} from block {from_block}", chain.name))
            .await;
        Ok(n)
    }

    /// Decides a confirmed (or unclaimed) deposit: a magic quote it answers
    /// links its sender first; then it is credited to the sender's account
    /// (ledger key [`deposit_key`]), held as unclaimed, or left uncredited
    /// below the asset's minimum. Safe to repeat from any process.
    async fn settle_deposit(&self, chain: &Chain, d: &WalletDepositRow) -> Result<(), WalletError> {
        let now = now_ms();
        let mut linked_by_quote = false;
        if d.asset == "native"
            && let Some(q) =
                self.store.matching_wallet_quote(chain.id as i64, &d.from_address, &d.amount, d.block_time).await?
        {
            // The quote's address is the sender: this is the one case a magic amount links.
            let row = WalletLinkRow {
                chain_id: chain.id as i64,
                address: d.from_address.clone(),
                account_id: q.account_id.clone(),
                method: "deposit".into(),
                created_at: now,
            };
            if self.store.link_wallet(&row).await? == q.account_id {
                self.store.use_wallet_quote(&q.id, now).await?;
                linked_by_quote = true;
            }
        }
        let minimum = chain.asset(&d.asset).map_or(U256::MAX, |a| a.minimum);
        let amount = U256::from_str_radix(&d.amount, 10).unwrap_or_default();
        let link = self.store.wallet_link(chain.id as i64, &d.from_address).await?;
        let Some(link) = link else {
            self.store.settle_wallet_deposit(d, "unclaimed", None, now).await?;
            // Linked meanwhile: credit now rather than wait for another link.
            if self.store.wallet_link(chain.id as i64, &d.from_address).await?.is_some() {
                let again = WalletDepositRow { state: "unclaimed".into(), ..d.clone() };
                Box::pin(self.settle_deposit(chain, &again)).await?;
            }
            return Ok(());
        };
        if d.points <= 0 || amount < minimum || chain.asset(&d.asset).is_none() {
            let state = if linked_by_quote { "linked" } else { "below_minimum" };
            self.store.settle_wallet_deposit(d, state, Some(&link.account_id), now).await?;
            return Ok(());
        }
        let key = deposit_key(d);
        let symbol = chain.asset(&d.asset).map_or("", |a| a.symbol.as_str());
        let decimals = chain.asset(&d.asset).map_or(0, |a| a.decimals);
        let reason = format!("deposit of {} {symbol} on {}", format_units(amount, decimals), chain.name);
        let actor = format!("chain:{}", chain.id);
        let entry = NewEntry {
            idem_key: &key,
            account_id: &link.account_id,
            kind: EntryKind::Deposit,
            amount: d.points,
            job_id: None,
            reason: Some(&reason),
            actor: &actor,
        };
        if let station_store::Posted::Applied(_) = self.store.post_entry(&entry, now).await? {
            crate::telemetry::points("deposited", d.points);
        }
        self.store.settle_wallet_deposit(d, "credited", Some(&link.account_id), now).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_exact_integers() {
        assert_eq!(parse_units("1.5", 6).unwrap(), U256::from(1_500_000u64));
        assert_eq!(parse_units("0.000000000000000001", 18).unwrap(), U256::from(1u64));
        assert_eq!(parse_units(".5", 1).unwrap(), U256::from(5u64));
        assert!(parse_units("0.0000001", 6).unwrap_err().contains("more than 6 decimals"));
        assert!(parse_units("1e3", 6).is_err());
        assert!(parse_units("", 6).is_err());
        assert_eq!(format_units(U256::from(1_500_000u64), 6), "1.5");
        assert_eq!(format_units(U256::from(123u64), 18), "0.000000000000000123");
        assert_eq!(format_units(U256::from(7u64), 0), "7");
    }

    #[test]
    fn points_round_down_in_256_bits() {
        let eth = Asset { symbol: "ETH".into(), token: None, decimals: 18, points_per_unit: 1000, minimum: U256::ZERO };
        assert_eq!(eth.points(U256::from(10u64).pow(U256::from(18u64))), 1000);
        assert_eq!(eth.points(U256::from(999_999_999_999_999u64)), 0);
        assert_eq!(eth.points(U256::from(1_999_999_999_999_999u64)), 1);
        assert_eq!(eth.points(U256::MAX), i64::MAX);
    }

    #[test]
    fn config_errors_name_the_chain_and_key() {
        let mut c = WalletsConfig::default();
        c.chains.push(crate::config::ChainConfig {
            id: 1,
            name: "Ethereum".into(),
            rpc_url: "https://rpc.example".into(),
            deposit_address: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            confirmations: None,
            start_block: None,
            poll_ms: 1000,
            max_blocks_per_poll: 10,
            magic_cap: 1_000_000_000,
            assets: vec![],
        });
        assert_eq!(chains_from_config(&c).unwrap()[0].confirmations, 12);
        c.chains[0].id = 31337;
        assert_eq!(chains_from_config(&c).unwrap()[0].confirmations, 1);
        c.chains[0].deposit_address = "0x7099".into();
        let err = chains_from_config(&c).unwrap_err();
        assert!(err.starts_with("wallets.chains[0].deposit_address: "), "{err}");
        c.chains[0].deposit_address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into();
        c.chains[0].assets.push(crate::config::AssetConfig {
            symbol: "USDC".into(),
            token: Some("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48".into()),
            decimals: 6,
            points_per_unit: 100,
            minimum: Some("0.0000001".into()),
        });
        let err = chains_from_config(&c).unwrap_err();
        assert!(err.starts_with("wallets.chains[0].assets[0].minimum: "), "{err}");
        c.challenge_minutes = 16;
        assert!(chains_from_config(&c).unwrap_err().starts_with("wallets.challenge_minutes"));
    }
}
