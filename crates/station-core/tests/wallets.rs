//! Wallets and deposits (issue 26) against a real local chain: anvil, from
//! the npm package `@foundry-rs/anvil` (`.ci/run` installs it and sets
//! `STATION_TEST_ANVIL`; otherwise `anvil` on the PATH). Without anvil the
//! tests say so and pass, except under CI (`CI` set), where they fail.
//!
//! The ERC-20 and the EIP-1271 wallet are `tests/contracts/*.sol`, compiled
//! once with solc 0.8.37 (`solcjs --bin --optimize`) into the `.bin` files.
//! Signatures are made by anvil's unlocked development accounts
//! (`personal_sign`), as a browser wallet would.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use station_core::config::{AssetConfig, ChainConfig};
use station_core::{Config, Station};
use station_store::{Store, testing};

const TOKEN_BIN: &str = include_str!("contracts/TestToken.bin");
const WALLET_BIN: &str = include_str!("contracts/TestWallet.bin");

/// Anvil's development accounts (its default mnemonic).
const ACCOUNTS: [&str; 6] = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
];
/// The operator's deposit address in these tests.
const DEPOSIT: &str = "0x000000000000000000000000000000000000dEaD";
const ETH: u128 = 1_000_000_000_000_000_000;

fn anvil_path() -> Option<String> {
    if let Ok(p) = std::env::var("STATION_TEST_ANVIL")
        && !p.is_empty()
    {
        return Some(p);
    }
    let found = Command::new("anvil").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    found.is_ok_and(|s| s.success()).then(|| "anvil".to_string())
}

/// A running anvil, killed when dropped.
struct Anvil {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts anvil, or None (with a message) when it is not installed and CI is not set.
async fn anvil() -> Option<Anvil> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(path) = anvil_path() else {
        assert!(
            std::env::var("CI").is_err(),
            "anvil is not installed: .ci/run installs @foundry-rs/anvil and sets STATION_TEST_ANVIL"
        );
        eprintln!("SKIPPED: anvil not found (set STATION_TEST_ANVIL or put anvil on the PATH)");
        return None;
    };
    let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(path)
        .args(["--port", &port.to_string(), "--host", "127.0.0.1", "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start anvil");
    let a = Anvil { child, url: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok =
            a.http.post(&a.url).json(&json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]})).send().await;
        if ok.is_ok() {
            return Some(a);
        }
        assert!(Instant::now() < deadline, "anvil did not start on {}", a.url);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Anvil {
    async fn rpc(&self, method: &str, params: Value) -> Value {
        let v: Value = self
            .http
            .post(&self.url)
            .json(&json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    /// Sends a transaction from an unlocked account (mined at once); returns its receipt.
    async fn send(&self, from: &str, to: Option<&str>, value: u128, data: &str) -> Value {
        let mut tx = json!({"from": from, "value": format!("0x{value:x}"), "data": data});
        if let Some(to) = to {
            tx["to"] = json!(to);
        }
        let hash = self.rpc("eth_sendTransaction", json!([tx])).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let receipt = loop {
            let r = self.rpc("eth_getTransactionReceipt", json!([hash])).await;
            if !r.is_null() {
                break r;
            }
            assert!(Instant::now() < deadline, "no receipt for {hash}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(receipt["status"], "0x1", "{receipt}");
        receipt
    }

    async fn deploy(&self, bin: &str, args: &str) -> String {
        let r = self.send(ACCOUNTS[0], None, 0, &format!("0x{}{args}", bin.trim())).await;
        r["contractAddress"].as_str().unwrap().to_string()
    }

    async fn mine(&self, n: u64) {
        self.rpc("anvil_mine", json!([format!("0x{n:x}")])).await;
    }

    async fn sign(&self, account: &str, message: &str) -> String {
        let data = format!("0x{}", hex::encode(message));
        self.rpc("personal_sign", json!([data, account])).await.as_str().unwrap().to_string()
    }
}

fn word(hex_text: &str) -> String {
    format!("{:0>64}", hex_text.trim_start_matches("0x").to_lowercase())
}

fn chain(url: &str, token: Option<&str>) -> ChainConfig {
    let mut assets = vec![AssetConfig {
        symbol: "ETH".into(),
        token: None,
        decimals: 18,
        points_per_unit: 1000,
        minimum: Some("0.001".into()),
    }];
    if let Some(t) = token {
        assets.push(AssetConfig {
            symbol: "TST".into(),
            token: Some(t.into()),
            decimals: 18,
            points_per_unit: 10,
            minimum: None,
        });
    }
    ChainConfig {
        id: 31337,
        name: "Local".into(),
        rpc_url: url.into(),
        deposit_address: DEPOSIT.into(),
        confirmations: Some(3),
        start_block: Some(0),
        poll_ms: 50,
        max_blocks_per_poll: 100,
        magic_cap: 1_000_000_000,
        assets,
    }
}

fn station(store: Store, dir: &std::path::Path, c: ChainConfig) -> Station {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.points.starting_grant = 0;
    config.wallets.chains = vec![c];
    Station::with_store(config, store).unwrap().0
}

async fn balance(s: &Station, account: &station_core::AccountRow) -> i64 {
    s.points(&account.id).await.unwrap().balance
}

/// Links `address` (an anvil account) to `account` by signature.
async fn link(s: &Station, a: &Anvil, account: &station_core::AccountRow, address: &str) {
    let ch = s.wallet_challenge(account, 31337, address).await.unwrap();
    let sig = a.sign(address, &ch.message).await;
    s.verify_wallet(account, &ch.nonce, &sig).await.unwrap();
}

async fn poll_all(s: &Station) {
    while s.wallet_poll(31337).await.unwrap() {}
}

async fn states(s: &Station) -> Vec<(String, String, i64)> {
    let mut v: Vec<_> =
        s.all_deposits(None, 100).await.unwrap().into_iter().map(|d| (d.from_address, d.state, d.points)).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_link_ordinary_and_contract_wallets_once_to_one_account() {
    for db in testing::all().await {
        let k = db.kind;
        let Some(a) = anvil().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let s = station(db.store.clone(), dir.path(), chain(&a.url, None));
        let ann = s.account("test", "ann", "Ann").await.unwrap();
        let bob = s.account("test", "bob", "Bob").await.unwrap();

        // The EIP-4361 message names the address, chain, nonce and expiry.
        let ch = s.wallet_challenge(&ann, 31337, &ACCOUNTS[2].to_lowercase()).await.unwrap();
        assert!(
            ch.message.contains(
                "wants you to sign in with your Ethereum account:\n0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC\n"
            ),
            "{k}: {}",
            ch.message
        );
        assert!(ch.message.contains("Chain ID: 31337") && ch.message.contains(&format!("Nonce: {}", ch.nonce)), "{k}");
        assert!(ch.message.contains("Expiration Time: "), "{k}");
        assert!(ch.expires_at - station_store::now_ms() <= 15 * 60_000, "{k}");

        // Signed by another key: refused, naming the signature; the challenge still stands.
        let wrong = a.sign(ACCOUNTS[3], &ch.message).await;
        let err = s.verify_wallet(&ann, &ch.nonce, &wrong).await.unwrap_err().to_string();
        assert!(err.starts_with("signature: "), "{k}: {err}");
        // Another account cannot use Ann's challenge.
        let good = a.sign(ACCOUNTS[2], &ch.message).await;
        let err = s.verify_wallet(&bob, &ch.nonce, &good).await.unwrap_err().to_string();
        assert!(err.starts_with("nonce: "), "{k}: {err}");
        let link = s.verify_wallet(&ann, &ch.nonce, &good).await.unwrap();
        assert_eq!((link.address.as_str(), link.method.as_str()), (ACCOUNTS[2], "signature"), "{k}");
        // Once only.
        let err = s.verify_wallet(&ann, &ch.nonce, &good).await.unwrap_err().to_string();
        assert!(err.starts_with("nonce: "), "{k}: {err}");

        // Bob proves the same address: it stays Ann's.
        let ch = s.wallet_challenge(&bob, 31337, ACCOUNTS[2]).await.unwrap();
        let sig = a.sign(ACCOUNTS[2], &ch.message).await;
        let err = s.verify_wallet(&bob, &ch.nonce, &sig).await.unwrap_err().to_string();
        assert!(err.contains("linked to another account"), "{k}: {err}");
        assert_eq!(s.wallets(&ann).await.unwrap().len(), 1, "{k}");
        assert!(s.wallets(&bob).await.unwrap().is_empty(), "{k}");

        // A contract wallet (EIP-1271) whose owner is account 3.
        let wallet = a.deploy(WALLET_BIN, &word(ACCOUNTS[3])).await;
        let ch = s.wallet_challenge(&bob, 31337, &wallet).await.unwrap();
        let by_stranger = a.sign(ACCOUNTS[4], &ch.message).await;
        let err = s.verify_wallet(&bob, &ch.nonce, &by_stranger).await.unwrap_err().to_string();
        assert!(err.contains("EIP-1271"), "{k}: {err}");
        let by_owner = a.sign(ACCOUNTS[3], &ch.message).await;
        let link = s.verify_wallet(&bob, &ch.nonce, &by_owner).await.unwrap();
        assert_eq!(link.method, "contract", "{k}");
        assert_eq!(link.address.to_lowercase(), wallet.to_lowercase(), "{k}");

        // Unlinked by its owner, the address can be linked by another account.
        assert!(s.unlink_wallet(&ann, 31337, ACCOUNTS[2]).await.unwrap(), "{k}");
        link_by(&s, &a, &bob, ACCOUNTS[2]).await;
        assert_eq!(s.wallets(&bob).await.unwrap().len(), 2, "{k}");

        // Bad input is named.
        let err = s.wallet_challenge(&ann, 1, ACCOUNTS[2]).await.unwrap_err().to_string();
        assert!(err.starts_with("chain_id: unknown chain 1"), "{k}: {err}");
        let err = s.wallet_challenge(&ann, 31337, "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293Bc").await.unwrap_err();
        assert!(err.to_string().starts_with("address: has a wrong checksum"), "{k}: {err}");
    }
}

async fn link_by(s: &Station, a: &Anvil, account: &station_core::AccountRow, address: &str) {
    link(s, a, account, address).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_token_deposits_are_credited_once_after_their_confirmations() {
    for db in testing::all().await {
        let k = db.kind;
        let Some(a) = anvil().await else { return };
        let token = a.deploy(TOKEN_BIN, &word(&format!("{:x}", 1_000_000 * ETH))).await;
        let dir = tempfile::tempdir().unwrap();
        let s = station(db.store.clone(), dir.path(), chain(&a.url, Some(&token)));
        let ann = s.account("test", "ann", "Ann").await.unwrap();
        let bob = s.account("test", "bob", "Bob").await.unwrap();
        link(&s, &a, &ann, ACCOUNTS[2]).await;
        poll_all(&s).await;

        // 1 ETH from Ann's address: seen at once, credited after 3 blocks.
        a.send(ACCOUNTS[2], Some(DEPOSIT), ETH, "0x").await;
        poll_all(&s).await;
        let d = &s.deposits(&ann, 10).await.unwrap()[0];
        assert_eq!((d.state.as_str(), d.confirmations, d.confirmations_needed), ("pending", 1, 3), "{k}");
        assert_eq!((d.amount_text.as_str(), d.points), ("1 ETH", 1000), "{k}");
        a.mine(1).await;
        poll_all(&s).await;
        assert_eq!(balance(&s, &ann).await, 0, "{k}: two confirmations are not enough");
        a.mine(1).await;
        poll_all(&s).await;
        assert_eq!(balance(&s, &ann).await, 1000, "{k}");

        // 5 TST by ERC-20 transfer, from a funded address that Ann links.
        let transfer = |to: &str, v: u128| format!("0xa9059cbb{}{}", word(to), word(&format!("{v:x}")));
        a.send(ACCOUNTS[0], Some(&token), 0, &transfer(ACCOUNTS[2], 100 * ETH)).await;
        a.send(ACCOUNTS[2], Some(&token), 0, &transfer(DEPOSIT, 5 * ETH)).await;
        // A transfer elsewhere is not a deposit.
        a.send(ACCOUNTS[2], Some(&token), 0, &transfer(ACCOUNTS[5], ETH)).await;
        a.mine(2).await;
        poll_all(&s).await;
        assert_eq!(balance(&s, &ann).await, 1050, "{k}");

        // Below the minimum: recorded, not credited.
        a.send(ACCOUNTS[2], Some(DEPOSIT), ETH / 10_000, "0x").await;
        // From an address nobody linked yet: held, then credited to whoever links it.
        a.send(ACCOUNTS[4], Some(DEPOSIT), ETH / 2, "0x").await;
        a.mine(3).await;
        poll_all(&s).await;
        let st = states(&s).await;
        assert!(st.contains(&(ACCOUNTS[4].to_string(), "unclaimed".into(), 500)), "{k}: {st:?}");
        assert!(st.contains(&(ACCOUNTS[2].to_string(), "below_minimum".into(), 0)), "{k}: {st:?}");
        assert_eq!(balance(&s, &ann).await, 1050, "{k}");
        link(&s, &a, &bob, ACCOUNTS[4]).await;
        assert_eq!(balance(&s, &bob).await, 500, "{k}");

        // A restarted process and a second one on the same database read
        // the whole chain again: nothing is credited twice.
        s.rescan_chain(31337, 0, &station_core::audit::Actor::operator("ops")).await.unwrap();
        poll_all(&s).await;
        let dir2 = tempfile::tempdir().unwrap();
        let other = station(Store::connect(&db.url).await.unwrap(), dir2.path(), chain(&a.url, Some(&token)));
        poll_all(&other).await;
        assert_eq!((balance(&s, &ann).await, balance(&s, &bob).await), (1050, 500), "{k}");
        // Two processes following the chain at once: one credit.
        a.send(ACCOUNTS[2], Some(DEPOSIT), ETH / 100, "0x").await;
        a.mine(3).await;
        tokio::join!(poll_all(&s), poll_all(&other));
        assert_eq!(balance(&s, &ann).await, 1060, "{k}");
        let ledger = s.ledger_history(&ann.id, None, 100).await.unwrap();
        assert_eq!(ledger.iter().filter(|e| e.kind == "deposit").count(), 3, "{k}: {ledger:?}");
        let st = s.wallet_chain_status().await;
        assert_eq!(st[0].lag, Some(0), "{k}: {st:?}");
        assert_eq!(st[0].last_error, None, "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magic_amount_links_only_when_it_comes_from_the_typed_address() {
    for db in testing::all().await {
        let k = db.kind;
        let Some(a) = anvil().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let s = station(db.store.clone(), dir.path(), chain(&a.url, None));
        let ann = s.account("test", "ann", "Ann").await.unwrap();
        poll_all(&s).await;

        let q = s.magic_quote(&ann, 31337, ACCOUNTS[5]).await.unwrap();
        assert_eq!(q.deposit_address, DEPOSIT, "{k}");
        assert!(q.expires_at - station_store::now_ms() <= 15 * 60_000, "{k}");
        let amount: u128 = q.amount.parse().unwrap();
        assert!((1..=1_000_000_000).contains(&amount), "{k}: {amount}");

        // The exact amount from someone else: nothing is linked.
        a.send(ACCOUNTS[3], Some(DEPOSIT), amount, "0x").await;
        a.mine(3).await;
        poll_all(&s).await;
        assert!(s.wallets(&ann).await.unwrap().is_empty(), "{k}: an amount from another sender must not link");

        // From the typed address: linked.
        a.send(ACCOUNTS[5], Some(DEPOSIT), amount, "0x").await;
        a.mine(3).await;
        poll_all(&s).await;
        let links = s.wallets(&ann).await.unwrap();
        assert_eq!(links.len(), 1, "{k}");
        assert_eq!((links[0].address.as_str(), links[0].method.as_str()), (ACCOUNTS[5], "deposit"), "{k}");
        let st = states(&s).await;
        assert!(st.contains(&(ACCOUNTS[5].to_string(), "linked".into(), 0)), "{k}: {st:?}");
        assert!(st.contains(&(ACCOUNTS[3].to_string(), "unclaimed".into(), 0)), "{k}: {st:?}");

        // The quote is used: the same amount again links nothing new, and
        // a quote for a linked address is refused.
        let err = s.magic_quote(&ann, 31337, ACCOUNTS[5]).await.unwrap_err().to_string();
        assert!(err.starts_with("address: is linked to your account already"), "{k}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorganisation_removes_an_unconfirmed_deposit() {
    for db in testing::all().await {
        let k = db.kind;
        let Some(a) = anvil().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let s = station(db.store.clone(), dir.path(), chain(&a.url, None));
        let ann = s.account("test", "ann", "Ann").await.unwrap();
        link(&s, &a, &ann, ACCOUNTS[2]).await;
        a.mine(2).await;
        poll_all(&s).await;

        let snapshot = a.rpc("evm_snapshot", json!([])).await;
        a.send(ACCOUNTS[2], Some(DEPOSIT), ETH, "0x").await;
        a.mine(1).await;
        poll_all(&s).await;
        assert_eq!(states(&s).await, vec![(ACCOUNTS[2].to_string(), "pending".to_string(), 1000)], "{k}");

        // The blocks with the deposit disappear; the chain grows past them.
        a.rpc("evm_revert", json!([snapshot])).await;
        a.mine(5).await;
        poll_all(&s).await;
        assert_eq!(states(&s).await, vec![(ACCOUNTS[2].to_string(), "removed".to_string(), 1000)], "{k}");
        a.mine(5).await;
        poll_all(&s).await;
        assert_eq!(balance(&s, &ann).await, 0, "{k}");

        // The same transfer sent again on the new chain is credited once.
        a.send(ACCOUNTS[2], Some(DEPOSIT), ETH, "0x").await;
        a.mine(3).await;
        poll_all(&s).await;
        assert_eq!(balance(&s, &ann).await, 1000, "{k}");
    }
}

/// A TCP relay to anvil that can be taken down and brought back on its port.
struct Relay {
    port: u16,
    tasks: tokio::task::JoinSet<()>,
}

impl Relay {
    async fn up(port: u16, target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Relay { port, tasks }
    }

    fn down(mut self) -> u16 {
        self.tasks.abort_all();
        self.port
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reports_a_node_that_is_down_and_catches_up_when_it_is_back() {
    for db in testing::all().await {
        let k = db.kind;
        let Some(a) = anvil().await else { return };
        let target = a.url.trim_start_matches("http://").to_string();
        let relay = Relay::up(0, target.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let s = station(db.store.clone(), dir.path(), chain(&format!("http://127.0.0.1:{}", relay.port), None));
        let ann = s.account("test", "ann", "Ann").await.unwrap();
        link(&s, &a, &ann, ACCOUNTS[2]).await;
        let workers = station_core::Workers::start(&s);

        let wait_for = |what: &'static str| {
            let s = s.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let st = s.wallet_chain_status().await.remove(0);
                    let done = match what {
                        "error" => st.last_error.is_some(),
                        _ => st.last_error.is_none() && st.lag == Some(0),
                    };
                    if done {
                        return st;
                    }
                    assert!(Instant::now() < deadline, "{what}: {st:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        wait_for("caught up").await;
        let port = relay.down();
        let st = wait_for("error").await;
        // Which call fails first depends on where the poll was when the node
        // went away (the head, or a block being read).
        assert!(st.last_error.as_deref().unwrap().contains("the chain's node did not answer"), "{k}: {st:?}");

        // A deposit while Station cannot see the chain is credited once it can.
        a.send(ACCOUNTS[2], Some(DEPOSIT), ETH, "0x").await;
        a.mine(3).await;
        let _relay = Relay::up(port, target).await;
        wait_for("caught up").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while balance(&s, &ann).await != 1000 {
            assert!(Instant::now() < deadline, "{k}: not credited");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        workers.shutdown().await;
        assert_eq!(balance(&s, &ann).await, 1000, "{k}");
    }
}
