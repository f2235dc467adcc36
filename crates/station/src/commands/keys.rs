//! `station keys …`: create, list and revoke an account's API keys.

use clap::Subcommand;
use serde_json::json;
use station_core::Station;
use station_core::identity::IdentityError;

use super::points::find_account;
use crate::exit;

/// `station keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make an API key for an account; the key is printed once and never again.
    Create {
        /// Account id, provider:subject or local user name.
        #[arg(long)]
        user: String,
        /// What the key is for (up to 64 characters), e.g. "laptop script".
        #[arg(long)]
        name: String,
        /// Days until the key stops working (default: never).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3650))]
        expires_days: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An account's keys (never their text): name, prefix, created, last used, state.
    List {
        /// Account id, provider:subject or local user name.
        #[arg(long)]
        user: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; requests with it are refused from now on.
    Revoke {
        /// Account id, provider:subject or local user name (the key's owner).
        #[arg(long)]
        user: String,
        /// Key id, as `station keys list` shows it.
        key_id: String,
    },
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Runs a `station keys` command.
pub async fn run(station: &Station, c: KeysCommand) -> u8 {
    match c {
        KeysCommand::Create { user, name, expires_days, json } => {
            let account = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let expires_at = expires_days.map(|d| station_core::now_ms() + d as i64 * 86_400_000);
            match station.create_api_key(&account, &name, expires_at).await {
                Ok((info, key)) => {
                    if json {
                        println!("{}", json!({"key": key, "api_key": info}));
                    } else {
                        println!("{key}");
                        eprintln!(
                            "created API key {} ({:?}) for {} ({}); expires {}.\n\
                             Copy it now: it is not shown again (Station keeps only its hash).\n\
                             Use it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
                            info.id,
                            info.name,
                            account.name,
                            account.id,
                            if expires_at.is_some() { time(expires_at) } else { "never".into() },
                        );
                    }
                    exit::OK
                }
                Err(IdentityError::Store(e)) => {
                    eprintln!("error: {e}");
                    exit::UNAVAILABLE
                }
                Err(IdentityError::Invalid { field: "name", reason }) => {
                    eprintln!("error: --name: {reason}");
                    exit::USAGE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::USAGE
                }
            }
        }
        KeysCommand::List { user, json } => {
            let account = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let keys = match station.list_api_keys(&account).await {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::UNAVAILABLE;
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&keys).unwrap_or_default());
                return exit::OK;
            }
            let now = station_core::now_ms();
            println!(
                "{:<32} {:<20} {:<12} {:<16} {:<16} {:<16} STATE",
                "ID", "NAME", "PREFIX", "CREATED", "LAST USED", "EXPIRES"
            );
            for k in keys {
                let state = match (k.revoked_at, k.expires_at) {
                    (Some(_), _) => "revoked",
                    (None, Some(at)) if at <= now => "expired",
                    _ => "active",
                };
                println!(
                    "{:<32} {:<20} {:<12} {:<16} {:<16} {:<16} {state}",
                    k.id,
                    k.name,
                    k.prefix,
                    time(Some(k.created_at)),
                    time(k.last_used_at),
                    time(k.expires_at)
                );
            }
            exit::OK
        }
        KeysCommand::Revoke { user, key_id } => {
            let account = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.revoke_api_key(&account, &key_id).await {
                Ok(true) => {
                    println!("revoked API key {key_id} of {} ({})", account.name, account.id);
                    exit::OK
                }
                Ok(false) => {
                    eprintln!(
                        "error: {} has no API key {key_id}; `station keys list --user {user}` shows its keys",
                        account.name
                    );
                    exit::USAGE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::UNAVAILABLE
                }
            }
        }
    }
}
