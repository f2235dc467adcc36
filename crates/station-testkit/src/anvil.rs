//! A real local EVM chain for wallet tests: anvil, from the npm package
//! `@foundry-rs/anvil` (`.ci/run` installs it and sets `STATION_TEST_ANVIL`;
//! otherwise `anvil` on the PATH). Without anvil, [`Anvil::start`] says so
//! and returns `None` (the test passes), except under CI, where it fails.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// anvil's first development accounts (unlocked: `personal_sign` and
/// `eth_sendTransaction` work for them without keys).
pub const ACCOUNTS: [&str; 3] = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
];

/// A running anvil on a free port of 127.0.0.1 (chain id 31337), killed on drop.
pub struct Anvil {
    child: Child,
    /// Its JSON-RPC URL.
    pub url: String,
    http: reqwest::Client,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn anvil_path() -> Option<String> {
    if let Ok(p) = std::env::var("STATION_TEST_ANVIL")
        && !p.is_empty()
    {
        return Some(p);
    }
    let found = Command::new("anvil").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    found.is_ok_and(|s| s.success()).then(|| "anvil".to_string())
}

impl Anvil {
    /// Starts anvil and waits until it answers; `None` when it is not installed (outside CI).
    pub async fn start() -> Option<Anvil> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let Some(path) = anvil_path() else {
            assert!(
                std::env::var("CI").is_err(),
                "anvil is not installed: .ci/run installs @foundry-rs/anvil and sets STATION_TEST_ANVIL"
            );
            eprintln!("SKIPPED: anvil not found (set STATION_TEST_ANVIL or put anvil on the PATH)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(path)
            .args(["--port", &port.to_string(), "--host", "127.0.0.1", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start anvil");
        let a = Anvil { child, url: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []});
            if a.http.post(&a.url).json(&body).send().await.is_ok() {
                return Some(a);
            }
            assert!(Instant::now() < deadline, "anvil did not start on {}", a.url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One JSON-RPC call; its `result` (an error answer fails the test).
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let v: Value = self.http.post(&self.url).json(&body).send().await.unwrap().json().await.unwrap();
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    /// `personal_sign` of `message` by the unlocked `account`, as a browser wallet signs.
    pub async fn sign(&self, account: &str, message: &str) -> String {
        let data = format!("0x{}", message.bytes().map(|b| format!("{b:02x}")).collect::<String>());
        self.rpc("personal_sign", json!([data, account])).await.as_str().unwrap().to_string()
    }
}
