//! The few Ethereum JSON-RPC calls the wallets need, over the reqwest client
//! already in the tree; values are alloy's primitive types (their serde form
//! is the RPC's hex).

use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U64, U256};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A chain's JSON-RPC endpoint.
#[derive(Clone)]
pub struct Rpc {
    url: String,
    client: reqwest::Client,
}

/// A block with its transactions.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    /// Number.
    pub number: U64,
    /// Hash.
    pub hash: B256,
    /// Parent's hash.
    pub parent_hash: B256,
    /// Seconds since the epoch.
    pub timestamp: U64,
    /// Its transactions.
    #[serde(default)]
    pub transactions: Vec<Tx>,
}

/// A transaction's fields the watcher reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Tx {
    /// Hash.
    pub hash: B256,
    /// Sender.
    pub from: Address,
    /// Recipient (None: contract creation).
    pub to: Option<Address>,
    /// Native value.
    pub value: U256,
}

/// A log entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    /// Emitting contract.
    pub address: Address,
    /// Topics.
    pub topics: Vec<B256>,
    /// Data.
    pub data: Bytes,
    /// Block number.
    pub block_number: U64,
    /// Block hash.
    pub block_hash: B256,
    /// Transaction.
    pub transaction_hash: B256,
    /// Index in the block.
    pub log_index: U64,
    /// Set on logs of a block that left the chain.
    #[serde(default)]
    pub removed: bool,
}

#[derive(Deserialize)]
struct Header {
    hash: B256,
}

#[derive(Deserialize)]
struct Receipt {
    status: Option<U64>,
}

impl Rpc {
    /// A client for `url`, each call bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Rpc {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .expect("an HTTP client with rustls");
        Rpc { url: url.to_string(), client }
    }

    async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self.client.post(&self.url).json(&body).send().await.map_err(|e| {
            let e = e.without_url();
            format!("{method}: {e}")
        })?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| format!("{method}: HTTP {status}: {}", e.without_url()))?;
        if let Some(err) = v.get("error") {
            let msg = err.get("message").and_then(Value::as_str).unwrap_or("error");
            return Err(format!("{method}: {msg}"));
        }
        serde_json::from_value(v.get("result").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("{method}: unexpected answer: {e}"))
    }

    /// The chain id the endpoint serves.
    pub async fn chain_id(&self) -> Result<u64, String> {
        Ok(self.call::<U64>("eth_chainId", json!([])).await?.to())
    }

    /// The newest block's number.
    pub async fn block_number(&self) -> Result<u64, String> {
        Ok(self.call::<U64>("eth_blockNumber", json!([])).await?.to())
    }

    /// Block `n` with its transactions; None when the chain has no such block (yet).
    pub async fn block(&self, n: u64) -> Result<Option<Block>, String> {
        self.call("eth_getBlockByNumber", json!([format!("0x{n:x}"), true])).await
    }

    /// The hash of block `n`; None when the chain has no such block (yet).
    pub async fn block_hash(&self, n: u64) -> Result<Option<B256>, String> {
        let h: Option<Header> = self.call("eth_getBlockByNumber", json!([format!("0x{n:x}"), false])).await?;
        Ok(h.map(|h| h.hash))
    }

    /// Logs of `addresses` in `from..=to` matching `topics`.
    pub async fn logs(&self, from: u64, to: u64, addresses: &[Address], topics: Value) -> Result<Vec<Log>, String> {
        let filter = json!({
            "fromBlock": format!("0x{from:x}"),
            "toBlock": format!("0x{to:x}"),
            "address": addresses,
            "topics": topics,
        });
        self.call("eth_getLogs", json!([filter])).await
    }

    /// Whether a mined transaction succeeded (None: no receipt).
    pub async fn succeeded(&self, tx: B256) -> Result<Option<bool>, String> {
        let r: Option<Receipt> = self.call("eth_getTransactionReceipt", json!([tx])).await?;
        Ok(r.map(|r| r.status.is_none_or(|s| s == U64::from(1))))
    }

    /// The code at an address (empty for an ordinary account).
    pub async fn code(&self, address: Address) -> Result<Bytes, String> {
        self.call("eth_getCode", json!([address, "latest"])).await
    }

    /// `eth_call` of `data` on `to` at the latest block.
    pub async fn call_contract(&self, to: Address, data: Vec<u8>) -> Result<Bytes, String> {
        self.call("eth_call", json!([{"to": to, "data": Bytes::from(data)}, "latest"])).await
    }
}
