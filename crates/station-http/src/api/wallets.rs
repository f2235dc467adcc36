//! Wallets of the caller's account and their deposits: translation only;
//! challenges, signature checks, quotes and crediting are the core's
//! (`station_core::wallets`).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};
use station_core::Station;
use station_core::wallets::{ChainInfo, Deposit, MagicQuote, WalletChallenge, WalletError, WalletLink};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody, FieldIssue, object, required_str};
use crate::Caller;
use crate::extract::Path;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<Station> {
    OpenApiRouter::new()
        .routes(routes!(list_wallets))
        .routes(routes!(create_challenge))
        .routes(routes!(verify))
        .routes(routes!(create_quote))
        .routes(routes!(unlink))
        .routes(routes!(list_deposits))
}

/// `POST /api/v1/wallets/challenges` and `/quotes`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    /// EIP-155 chain id of one of the configured chains.
    chain_id: u64,
    /// The address (0x + 40 hex digits; mixed case must be its EIP-55 checksum).
    address: String,
}

/// `POST /api/v1/wallets/verify`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The challenge's nonce.
    nonce: String,
    /// The `personal_sign` signature of the challenge's message, 0x hex.
    signature: String,
}

/// A linked address.
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletBody {
    /// Chain id.
    pub chain_id: u64,
    /// Chain name.
    pub chain: String,
    /// Address (EIP-55).
    pub address: String,
    /// `signature`, `contract` (EIP-1271) or `deposit` (magic amount).
    pub method: String,
    /// When linked (Unix ms).
    pub linked_at: i64,
}

impl From<WalletLink> for WalletBody {
    fn from(l: WalletLink) -> WalletBody {
        WalletBody {
            chain_id: l.chain_id,
            chain: l.chain,
            address: l.address,
            method: l.method,
            linked_at: l.linked_at,
        }
    }
}

/// An accepted asset.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetBody {
    /// Symbol.
    pub symbol: String,
    /// ERC-20 contract; null for the chain's native coin.
    pub token: Option<String>,
    /// Points for one whole unit.
    pub points_per_unit: u64,
    /// Smallest credited deposit, in whole units.
    pub minimum: String,
}

/// A chain deposits are accepted on.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainBody {
    /// Chain id.
    pub chain_id: u64,
    /// Name.
    pub name: String,
    /// Where to send deposits.
    pub deposit_address: String,
    /// Confirmations before points are credited.
    pub confirmations: u64,
    /// Accepted assets and their rates.
    pub assets: Vec<AssetBody>,
}

impl From<ChainInfo> for ChainBody {
    fn from(c: ChainInfo) -> ChainBody {
        ChainBody {
            chain_id: c.chain_id,
            name: c.name,
            deposit_address: c.deposit_address,
            confirmations: c.confirmations,
            assets: c
                .assets
                .into_iter()
                .map(|a| AssetBody {
                    symbol: a.symbol,
                    token: a.token,
                    points_per_unit: a.points_per_unit,
                    minimum: a.minimum,
                })
                .collect(),
        }
    }
}

/// Your linked addresses and where deposits go.
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletList {
    /// Linked addresses, oldest first.
    pub wallets: Vec<WalletBody>,
    /// The chains deposits are accepted on.
    pub chains: Vec<ChainBody>,
}

/// A message to sign.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengeBody {
    /// Send it back with the signature.
    pub nonce: String,
    /// The EIP-4361 message: sign exactly this text with `personal_sign`.
    pub message: String,
    /// Chain id.
    pub chain_id: u64,
    /// Address (EIP-55).
    pub address: String,
    /// When it expires (Unix ms; at most 15 minutes).
    pub expires_at: i64,
}

impl From<WalletChallenge> for ChallengeBody {
    fn from(c: WalletChallenge) -> ChallengeBody {
        ChallengeBody {
            nonce: c.nonce,
            message: c.message,
            chain_id: c.chain_id,
            address: c.address,
            expires_at: c.expires_at,
        }
    }
}

/// A magic deposit to make.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteBody {
    /// Id.
    pub id: String,
    /// Chain id.
    pub chain_id: u64,
    /// Chain name.
    pub chain: String,
    /// Send from this address only: the same amount from any other address links nothing.
    pub from_address: String,
    /// Send to this address.
    pub deposit_address: String,
    /// The exact amount, in the native coin's smallest unit.
    pub amount: String,
    /// The same in whole units with the symbol.
    pub amount_text: String,
    /// When it expires (Unix ms; at most 15 minutes).
    pub expires_at: i64,
}

impl From<MagicQuote> for QuoteBody {
    fn from(q: MagicQuote) -> QuoteBody {
        QuoteBody {
            id: q.id,
            chain_id: q.chain_id,
            chain: q.chain,
            from_address: q.from_address,
            deposit_address: q.deposit_address,
            amount: q.amount,
            amount_text: q.amount_text,
            expires_at: q.expires_at,
        }
    }
}

/// A deposit.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepositBody {
    /// Chain id.
    pub chain_id: u64,
    /// Chain name.
    pub chain: String,
    /// Transaction hash.
    pub tx_hash: String,
    /// Log index of the token transfer; -1 for a native transfer.
    pub log_index: i64,
    /// Block number.
    pub block_number: i64,
    /// Sender.
    pub from_address: String,
    /// Asset symbol.
    pub asset: String,
    /// Amount in smallest units.
    pub amount: String,
    /// Amount in whole units with the symbol.
    pub amount_text: String,
    /// Points it is worth.
    pub points: i64,
    /// Confirmations so far.
    pub confirmations: u64,
    /// Confirmations needed before crediting.
    pub confirmations_needed: u64,
    /// `pending`, `credited`, `unclaimed`, `linked`, `below_minimum` or `removed`.
    pub state: String,
    /// When first seen (Unix ms).
    pub seen_at: i64,
}

impl From<Deposit> for DepositBody {
    fn from(d: Deposit) -> DepositBody {
        DepositBody {
            chain_id: d.chain_id,
            chain: d.chain,
            tx_hash: d.tx_hash,
            log_index: d.log_index,
            block_number: d.block_number,
            from_address: d.from_address,
            asset: d.asset,
            amount: d.amount,
            amount_text: d.amount_text,
            points: d.points,
            confirmations: d.confirmations,
            confirmations_needed: d.confirmations_needed,
            state: d.state,
            seen_at: d.seen_at,
        }
    }
}

/// Your deposits.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepositList {
    /// Newest first (at most 100).
    pub deposits: Vec<DepositBody>,
}

impl From<WalletError> for ApiError {
    fn from(e: WalletError) -> ApiError {
        match e {
            WalletError::Invalid(fields) => ApiError::invalid_fields(
                fields.into_iter().map(|f| FieldIssue { field: f.field, reason: f.reason }).collect(),
            ),
            WalletError::Rpc(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "chain_unavailable",
                format!("the chain's node did not answer ({m}); please try again shortly"),
            ),
            WalletError::Storage(e) => ApiError::storage(e),
            WalletError::Ledger(e) => ApiError::internal(e),
        }
    }
}

fn chain_id(obj: &Map<String, Value>) -> ApiResult<u64> {
    match obj.get("chain_id") {
        Some(v) => v.as_u64().ok_or_else(|| ApiError::invalid("chain_id", "expected a chain id such as 8453")),
        None => Err(ApiError::invalid("chain_id", "is required: the chain's EIP-155 id")),
    }
}

/// Your linked addresses and the chains deposits are accepted on.
#[utoipa::path(get, path = "/api/v1/wallets", tag = "wallets",
    responses((status = 200, body = WalletList), (status = 401, body = ErrorBody)))]
async fn list_wallets(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<WalletList>> {
    let wallets = station.wallets(&a).await?.into_iter().map(WalletBody::from).collect();
    let chains = station.deposit_info().into_iter().map(ChainBody::from).collect();
    Ok(Json(WalletList { wallets, chains }))
}

/// A one-time "Sign in with Ethereum" (EIP-4361) message proving an
/// address; sign it with `personal_sign` and send the signature to
/// `POST /api/v1/wallets/verify`.
#[utoipa::path(post, path = "/api/v1/wallets/challenges", tag = "wallets",
    request_body = AddressRequest,
    responses((status = 201, body = ChallengeBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_challenge(
    State(station): State<Station>,
    Caller(a): Caller,
    payload: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ChallengeBody>)> {
    let obj = object(payload, &["chain_id", "address"])?;
    let chain = chain_id(&obj)?;
    let address = required_str(&obj, "address", "the address to link")?;
    let c = station.wallet_challenge(&a, chain, &address).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

/// Links the challenge's address when the signature is its key's (EIP-191)
/// or its wallet contract accepts it (EIP-1271).
#[utoipa::path(post, path = "/api/v1/wallets/verify", tag = "wallets",
    request_body = VerifyRequest,
    responses((status = 201, body = WalletBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn verify(
    State(station): State<Station>,
    Caller(a): Caller,
    payload: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<WalletBody>)> {
    let obj = object(payload, &["nonce", "signature"])?;
    let nonce = required_str(&obj, "nonce", "the challenge's nonce")?;
    let signature = required_str(&obj, "signature", "the signature of the challenge's message")?;
    let link = station.verify_wallet(&a, &nonce, &signature).await?;
    Ok((StatusCode::CREATED, Json(link.into())))
}

/// A magic deposit for a wallet that cannot sign messages: send exactly
/// `amount` from `from_address` to `deposit_address` before it expires.
#[utoipa::path(post, path = "/api/v1/wallets/quotes", tag = "wallets",
    request_body = AddressRequest,
    responses((status = 201, body = QuoteBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_quote(
    State(station): State<Station>,
    Caller(a): Caller,
    payload: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<QuoteBody>)> {
    let obj = object(payload, &["chain_id", "address"])?;
    let chain = chain_id(&obj)?;
    let address = required_str(&obj, "address", "the address you will send from")?;
    let q = station.magic_quote(&a, chain, &address).await?;
    Ok((StatusCode::CREATED, Json(q.into())))
}

/// Unlinks one of your addresses.
#[utoipa::path(delete, path = "/api/v1/wallets/{chain_id}/{address}", tag = "wallets",
    params(("chain_id" = u64, Path, description = "Chain id"), ("address" = String, Path, description = "Address")),
    responses((status = 204, description = "Unlinked"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn unlink(
    State(station): State<Station>,
    Caller(a): Caller,
    Path((chain, address)): Path<(u64, String)>,
) -> ApiResult<StatusCode> {
    if station.unlink_wallet(&a, chain, &address).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("wallet", &address, "GET /api/v1/wallets lists yours"))
    }
}

/// Deposits from your addresses, newest first, with their confirmations.
#[utoipa::path(get, path = "/api/v1/wallets/deposits", tag = "wallets",
    responses((status = 200, body = DepositList), (status = 401, body = ErrorBody)))]
async fn list_deposits(State(station): State<Station>, Caller(a): Caller) -> ApiResult<Json<DepositList>> {
    let list = station.deposits(&a, 100).await?;
    Ok(Json(DepositList { deposits: list.into_iter().map(DepositBody::from).collect() }))
}
