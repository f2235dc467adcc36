//! `station wallets` and `station deposits` through the real binary against
//! a real local chain (anvil; see `station-core/tests/wallets.rs`), on
//! SQLite and PostgreSQL: the message to sign, linking with its signature,
//! the list, a rescan crediting a deposit once, and unlinking.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::cli::expect;
use serde_json::json;
use station_testkit::anvil::Anvil;
use station_testkit::testing;

const OWNER: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
const DEPOSIT: &str = "0x000000000000000000000000000000000000dEaD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_link_wallets_and_rescan_deposits_from_the_command_line() {
    for db in testing::all().await {
        let k = db.kind;
        let Some(a) = Anvil::start().await else { return };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(
            dir.join("station.toml"),
            format!(
                "[[wallets.chains]]\nid = 31337\nname = \"Local\"\nrpc_url = \"{}\"\ndeposit_address = \"{DEPOSIT}\"\n\
                 start_block = 0\n[[wallets.chains.assets]]\nsymbol = \"ETH\"\npoints_per_unit = 1000\n",
                a.url
            ),
        )
        .unwrap();
        expect(dir, &db, &["users", "create", "alice"], 0);

        let (out, _) = expect(dir, &db, &["wallets", "link", OWNER, "--chain", "31337", "--user", "alice"], 0);
        // The message: from its first line to its "Expiration Time" line.
        let start = out.find("127.0.0.1").unwrap_or_else(|| panic!("{k}: {out}"));
        let end = start + out[start..].find("Expiration Time: ").unwrap();
        let end = end + out[end..].find('\n').unwrap();
        let message = &out[start..end];
        assert!(
            message.contains("wants you to sign in with your Ethereum account") && message.contains(OWNER),
            "{k}: {out}"
        );
        let nonce = out.split("--nonce ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
        let sig = a
            .rpc(
                "personal_sign",
                json!([format!("0x{}", message.bytes().map(|b| format!("{b:02x}")).collect::<String>()), OWNER]),
            )
            .await;
        let sig = sig.as_str().unwrap();
        let args =
            ["wallets", "link", OWNER, "--chain", "31337", "--nonce", nonce, "--signature", sig, "--user", "alice"];
        let (linked, _) = expect(dir, &db, &args, 0);
        assert!(linked.contains(&format!("Linked {OWNER} on Local to alice")), "{k}: {linked}");
        let (_, err) = expect(dir, &db, &args, 2);
        assert!(err.contains("nonce: unknown, used or expired challenge"), "{k}: {err}");
        let (list, _) = expect(dir, &db, &["wallets", "list", "--user", "alice"], 0);
        assert!(list.contains(OWNER) && list.contains("by signature"), "{k}: {list}");
        assert!(list.contains(&format!("Deposits on Local go to {DEPOSIT} after 1 confirmations")), "{k}: {list}");

        // A deposit, read by a rescan from the first block: credited once, even when rescanned again.
        let tx = json!({"from": OWNER, "to": DEPOSIT, "value": "0x1bc16d674ec80000"});
        a.rpc("eth_sendTransaction", json!([tx])).await;
        a.rpc("anvil_mine", json!(["0x1"])).await;
        for _ in 0..2 {
            let (out, _) = expect(dir, &db, &["deposits", "rescan", "--chain", "31337", "--from-block", "0"], 0);
            assert!(out.contains("Read chain 31337 again from block 0"), "{k}: {out}");
        }
        let (deps, _) = expect(dir, &db, &["deposits", "list", "--user", "alice"], 0);
        assert!(deps.contains("2 ETH") && deps.contains("2000 points") && deps.contains("credited"), "{k}: {deps}");
        let (points, _) = expect(dir, &db, &["points", "history", "--user", "alice"], 0);
        assert_eq!(points.matches("deposit of 2 ETH on Local").count(), 1, "{k}: {points}");

        let (_, err) = expect(dir, &db, &["deposits", "rescan", "--chain", "7", "--from-block", "0"], 2);
        assert!(err.contains("chain_id: unknown chain 7"), "{k}: {err}");
        let (gone, _) = expect(dir, &db, &["wallets", "unlink", OWNER, "--chain", "31337", "--user", "alice"], 0);
        assert!(gone.contains("Unlinked"), "{k}: {gone}");
    }
}
