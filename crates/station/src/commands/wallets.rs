//! `station wallets …` (linked addresses) and `station deposits …` (what
//! the chain watchers saw). The rules are the core's (`station_core::wallets`);
//! this prints what it answers.

use clap::Subcommand;
use station_core::audit::Actor;
use station_core::wallets::{Deposit, WalletError};
use station_core::{AccountRow, Station};

use super::points::find_account;
use crate::exit;

/// `station wallets …`.
#[derive(Debug, Subcommand)]
pub enum WalletsCommand {
    /// An account's linked addresses, and the chains deposits are accepted on.
    List {
        /// Account id, provider:subject or local user name (default: you, local:$USER).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Link an address: without --signature, prints the message to sign
    /// (EIP-4361) and its nonce; with --nonce and --signature, checks the
    /// signature and links; with --magic, prints a magic deposit to make
    /// from that address instead.
    Link {
        /// The address.
        address: String,
        /// Chain id.
        #[arg(long)]
        chain: u64,
        /// The nonce printed with the message.
        #[arg(long, requires = "signature")]
        nonce: Option<String>,
        /// The `personal_sign` signature of the message (0x hex).
        #[arg(long, requires = "nonce")]
        signature: Option<String>,
        /// Link by a magic deposit from the address (for wallets that cannot sign).
        #[arg(long, conflicts_with_all = ["nonce", "signature"])]
        magic: bool,
        /// Account id, provider:subject or local user name (default: you).
        #[arg(long)]
        user: Option<String>,
    },
    /// Unlink an address.
    Unlink {
        /// The address.
        address: String,
        /// Chain id.
        #[arg(long)]
        chain: u64,
        /// Account id, provider:subject or local user name (default: you).
        #[arg(long)]
        user: Option<String>,
    },
}

/// `station deposits …`.
#[derive(Debug, Subcommand)]
pub enum DepositsCommand {
    /// Deposits, newest first: an account's (--user) or every one.
    List {
        /// Only this account's (from its linked addresses or credited to it).
        #[arg(long)]
        user: Option<String>,
        /// Only this chain.
        #[arg(long)]
        chain: Option<u64>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read a chain again from a block (after a missed range); credited
    /// deposits stay credited once.
    Rescan {
        /// Chain id.
        #[arg(long)]
        chain: u64,
        /// First block to read again.
        #[arg(long = "from-block")]
        from_block: u64,
    },
}

fn fail(e: WalletError) -> u8 {
    eprintln!("error: {e}");
    match e {
        WalletError::Storage(_) | WalletError::Rpc(_) => exit::UNAVAILABLE,
        _ => exit::USAGE,
    }
}

fn time(ms: i64) -> String {
    station_core::audit::utc_text(ms)
}

async fn who(station: &Station, user: Option<String>) -> Result<AccountRow, u8> {
    let spec = user.unwrap_or_else(|| format!("local:{}", super::local_user(None)));
    find_account(station, &spec).await
}

/// Runs a `station wallets` command.
pub async fn run(station: &Station, c: WalletsCommand) -> u8 {
    match c {
        WalletsCommand::List { user, json } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let list = match station.wallets(&a).await {
                Ok(l) => l,
                Err(e) => return fail(e),
            };
            if json {
                let v = serde_json::json!({"wallets": list, "chains": station.deposit_info()});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return exit::OK;
            }
            if list.is_empty() {
                println!("{} has no linked wallet.", a.name);
            }
            for l in &list {
                println!(
                    "{}  {} (chain {})  by {}  since {}",
                    l.address,
                    l.chain,
                    l.chain_id,
                    l.method,
                    time(l.linked_at)
                );
            }
            for c in station.deposit_info() {
                let assets: Vec<String> =
                    c.assets.iter().map(|a| format!("{} ({} points each)", a.symbol, a.points_per_unit)).collect();
                println!(
                    "Deposits on {} go to {} after {} confirmations: {}",
                    c.name,
                    c.deposit_address,
                    c.confirmations,
                    assets.join(", ")
                );
            }
            exit::OK
        }
        WalletsCommand::Link { address, chain, nonce, signature, magic, user } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            if magic {
                return match station.magic_quote(&a, chain, &address).await {
                    Ok(q) => {
                        println!(
                            "Send exactly {} ({} smallest units) from {} to {} on {} before {}.",
                            q.amount_text,
                            q.amount,
                            q.from_address,
                            q.deposit_address,
                            q.chain,
                            time(q.expires_at)
                        );
                        println!("The same amount from any other address links nothing.");
                        exit::OK
                    }
                    Err(e) => fail(e),
                };
            }
            match (nonce, signature) {
                (Some(n), Some(s)) => match station.verify_wallet(&a, &n, &s).await {
                    Ok(l) => {
                        println!("Linked {} on {} to {}.", l.address, l.chain, a.name);
                        exit::OK
                    }
                    Err(e) => fail(e),
                },
                _ => match station.wallet_challenge(&a, chain, &address).await {
                    Ok(c) => {
                        println!("Sign this message with the wallet (personal_sign), before {}:\n", time(c.expires_at));
                        println!("{}\n", c.message);
                        println!(
                            "Then: station wallets link {} --chain {chain} --nonce {} --signature 0x…",
                            c.address, c.nonce
                        );
                        exit::OK
                    }
                    Err(e) => fail(e),
                },
            }
        }
        WalletsCommand::Unlink { address, chain, user } => {
            let a = match who(station, user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.unlink_wallet(&a, chain, &address).await {
                Ok(true) => {
                    println!("Unlinked {address} from {}.", a.name);
                    exit::OK
                }
                Ok(false) => {
                    eprintln!("error: {} has no wallet {address} on chain {chain}", a.name);
                    exit::USAGE
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn print_deposits(list: &[Deposit]) {
    if list.is_empty() {
        println!("No deposits.");
    }
    for d in list {
        println!(
            "{}  {}  from {}  {}  {} points  {}/{} confirmations  {}  block {} tx {}",
            time(d.seen_at),
            d.chain,
            d.from_address,
            d.amount_text,
            d.points,
            d.confirmations.min(d.confirmations_needed),
            d.confirmations_needed,
            d.state.replace('_', " "),
            d.block_number,
            d.tx_hash
        );
    }
}

/// Runs a `station deposits` command.
pub async fn deposits(station: &Station, c: DepositsCommand) -> u8 {
    match c {
        DepositsCommand::List { user, chain, limit, json } => {
            let list = match user {
                Some(u) => {
                    let a = match find_account(station, &u).await {
                        Ok(a) => a,
                        Err(code) => return code,
                    };
                    station
                        .deposits(&a, limit)
                        .await
                        .map(|l| l.into_iter().filter(|d| chain.is_none_or(|c| c == d.chain_id)).collect::<Vec<_>>())
                }
                None => station.all_deposits(chain, limit).await,
            };
            let list = match list {
                Ok(l) => l,
                Err(e) => return fail(e),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
            } else {
                print_deposits(&list);
            }
            exit::OK
        }
        DepositsCommand::Rescan { chain, from_block } => {
            let by = Actor::operator(&super::local_user(None));
            let forgotten = match station.rescan_chain(chain, from_block, &by).await {
                Ok(n) => n,
                Err(e) => return fail(e),
            };
            // Read up to the head now (a running server's watcher would too).
            loop {
                match station.wallet_poll(chain).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return fail(e),
                }
            }
            let status = station.wallet_chain_status().await;
            let head = status.iter().find(|s| s.chain_id == chain).and_then(|s| s.head).unwrap_or(from_block);
            println!(
                "Read chain {chain} again from block {from_block} to {head} ({forgotten} unconfirmed deposits \
                 were forgotten and looked for again); credited deposits stay credited once."
            );
            exit::OK
        }
    }
}
