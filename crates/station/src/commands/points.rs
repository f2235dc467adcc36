//! `station points …`: balances, history, operator grants and adjustments,
//! and the ledger audit.

use clap::Subcommand;
use station_core::Station;
use station_core::points::operator_actor;
use station_store::{AccountRow, LedgerError, Posted};

use crate::exit;

/// `station points …`.
#[derive(Debug, Subcommand)]
pub enum PointsCommand {
    /// An account's balance, points on hold and available points.
    Balance {
        /// Account id or provider:subject (default: local:$USER).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An account's ledger entries, newest first.
    History {
        /// Account id or provider:subject (default: local:$USER).
        #[arg(long)]
        user: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give points to an account.
    Grant {
        /// Account id or provider:subject.
        user: String,
        /// Points (positive).
        amount: i64,
        /// Why (kept in the ledger).
        #[arg(long)]
        reason: String,
        /// Makes a repeated command a no-op (e.g. an order number).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Correct an account's points up or down (e.g. `adjust alice -5 --reason typo`).
    Adjust {
        /// Account id or provider:subject.
        user: String,
        /// Points, signed.
        #[arg(allow_hyphen_values = true)]
        amount: i64,
        /// Why (kept in the ledger).
        #[arg(long)]
        reason: String,
        /// Makes a repeated command a no-op.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Check the ledger: cached balances equal its sums, no negative balance,
    /// every ended job's hold settled exactly once. Exits 1 listing problems.
    Audit {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Finds the account named on the command line: an account id, a
/// `provider:subject` identity, or a bare local user name.
pub(crate) async fn find_account(station: &Station, spec: &str) -> Result<AccountRow, u8> {
    let found = match spec.split_once(':') {
        Some((provider, subject)) => station.store.find_account_by_identity(provider, subject).await,
        None => match station.store.get_account(spec).await {
            Ok(None) => station.store.find_account_by_identity("local", spec).await,
            other => other,
        },
    };
    match found {
        Ok(Some(a)) => Ok(a),
        Ok(None) => {
            eprintln!(
                "error: no account {spec:?}; give an account id, a provider:subject such as local:alice, \
                 or a local user name (`station users list` shows them)"
            );
            Err(exit::USAGE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::UNAVAILABLE)
        }
    }
}

fn default_user(user: Option<String>) -> String {
    user.unwrap_or_else(|| format!("local:{}", super::local_user(None)))
}

/// Runs a `station points` command.
pub async fn run(station: &Station, c: PointsCommand) -> u8 {
    let actor = operator_actor(&super::local_user(None));
    match c {
        PointsCommand::Balance { user, json } => {
            let account = match find_account(station, &default_user(user)).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.points(&account.id).await {
                Ok(b) if json => {
                    let v = serde_json::json!({
                        "account_id": account.id, "name": account.name,
                        "balance": b.balance, "held": b.held, "available": b.available(),
                    });
                    println!("{v}");
                    exit::OK
                }
                Ok(b) => {
                    println!(
                        "{} ({}): balance {}, held {}, available {}",
                        account.name,
                        account.id,
                        b.balance,
                        b.held,
                        b.available()
                    );
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::UNAVAILABLE
                }
            }
        }
        PointsCommand::History { user, limit, json } => {
            let account = match find_account(station, &default_user(user)).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let entries = match station.store.ledger_history(&account.id, None, limit).await {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::UNAVAILABLE;
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&entries).unwrap_or_default());
                return exit::OK;
            }
            for e in entries {
                let when = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(e.created_at)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let what = e.job_id.as_deref().map(|j| format!("job {j}")).or(e.reason.clone()).unwrap_or_default();
                println!("{when}  {:<10} {:>+7} held {:>+6}  {what}  by {}", e.kind, e.amount, e.held, e.actor);
            }
            exit::OK
        }
        PointsCommand::Grant { user, amount, reason, idempotency_key } => {
            let account = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let r = station.grant_points(&account, amount, &reason, &actor, idempotency_key.as_deref()).await;
            report(station, &account, r).await
        }
        PointsCommand::Adjust { user, amount, reason, idempotency_key } => {
            let account = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let r = station.adjust_points(&account, amount, &reason, &actor, idempotency_key.as_deref()).await;
            report(station, &account, r).await
        }
        PointsCommand::Audit { json } => match station.audit_points().await {
            Ok(problems) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&problems).unwrap_or_default());
                } else if problems.is_empty() {
                    println!("points ledger is consistent");
                } else {
                    for p in &problems {
                        println!("{p}");
                    }
                    eprintln!("{} problem(s) found", problems.len());
                }
                if problems.is_empty() { exit::OK } else { exit::FAILED }
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::UNAVAILABLE
            }
        },
    }
}

async fn report(station: &Station, account: &AccountRow, r: Result<Posted, LedgerError>) -> u8 {
    let verb = match r {
        Ok(Posted::Applied(_)) => "recorded",
        Ok(Posted::Duplicate(_)) => "already recorded (same idempotency key); nothing changed",
        Err(LedgerError::Store(e)) => {
            eprintln!("error: {e}");
            return exit::UNAVAILABLE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    match station.points(&account.id).await {
        Ok(b) => {
            println!("{verb}; {} now has {} points ({} available)", account.name, b.balance, b.available());
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::UNAVAILABLE
        }
    }
}
