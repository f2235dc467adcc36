//! `station points …`: balances, history, operator grants and adjustments,
//! and the ledger audit.

use clap::Subcommand;
use station_core::AccountRow;
use station_core::Station;
use station_core::audit::Actor;
use station_core::points::{LedgerError, Posted};

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
    /// A group's sponsor: an account that pays for its members' jobs up to a
    /// daily cap per member.
    #[command(subcommand)]
    Sponsor(SponsorCommand),
}

/// `station points sponsor …`.
#[derive(Debug, Subcommand)]
pub enum SponsorCommand {
    /// Make an account the sponsor of a group (replacing any earlier one).
    Set {
        /// The group: telegram:CHAT_ID or discord-guild:GUILD_ID.
        scope: String,
        /// The paying account: id or provider:subject.
        #[arg(long)]
        user: String,
        /// Points the sponsor pays per member per UTC day.
        #[arg(long)]
        daily_cap: i64,
    },
    /// Show a group's sponsor.
    Show {
        /// The group.
        scope: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a group's sponsorship (jobs already paid for stay paid).
    Remove {
        /// The group.
        scope: String,
    },
}

/// Finds the account named on the command line: an account id, a
/// `provider:subject` identity, or a bare local user name.
pub(crate) async fn find_account(station: &Station, spec: &str) -> Result<AccountRow, u8> {
    match station.find_account(spec).await {
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
    let actor = Actor::operator(&super::local_user(None));
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
            let entries = match station.ledger_history(&account.id, None, limit).await {
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
        PointsCommand::Sponsor(c) => sponsor(station, c, &actor).await,
    }
}

async fn sponsor(station: &Station, c: SponsorCommand, actor: &Actor) -> u8 {
    match c {
        SponsorCommand::Set { scope, user, daily_cap } => {
            let account = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.set_sponsor(&scope, &account, daily_cap, actor).await {
                Ok(s) => {
                    let available = station.points(&account.id).await.map(|b| b.available()).unwrap_or(0);
                    println!(
                        "{} ({}) now pays for members of {} up to {} points each per day; {available} points available",
                        account.name, account.id, s.scope, s.per_member_daily_cap
                    );
                    exit::OK
                }
                Err(LedgerError::Store(e)) => {
                    eprintln!("error: {e}");
                    exit::UNAVAILABLE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::USAGE
                }
            }
        }
        SponsorCommand::Show { scope, json } => match station.sponsor(&scope).await {
            Ok(Some(s)) => {
                let account = station.account_by_id(&s.account_id).await.ok().flatten();
                let name = account.as_ref().map(|a| a.name.as_str()).unwrap_or("?");
                let b = station.points(&s.account_id).await.unwrap_or_default();
                if json {
                    let v = serde_json::json!({
                        "scope": s.scope, "account_id": s.account_id, "name": name,
                        "per_member_daily_cap": s.per_member_daily_cap, "available": b.available(),
                        "suspended": account.as_ref().is_some_and(|a| a.suspended),
                        "created_by": s.created_by, "updated_at": s.updated_at,
                    });
                    println!("{v}");
                } else {
                    let state =
                        if account.as_ref().is_some_and(|a| a.suspended) { " (suspended: not paying)" } else { "" };
                    println!(
                        "{}: sponsored by {name} ({}){state}, up to {} points per member per day; {} points available; set by {}",
                        s.scope,
                        s.account_id,
                        s.per_member_daily_cap,
                        b.available(),
                        s.created_by
                    );
                }
                exit::OK
            }
            Ok(None) => {
                eprintln!(
                    "{scope} has no sponsor; add one with `station points sponsor set {scope} --user REF --daily-cap N`"
                );
                exit::FAILED
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::UNAVAILABLE
            }
        },
        SponsorCommand::Remove { scope } => match station.remove_sponsor(&scope, actor).await {
            Ok(true) => {
                println!("{scope} is no longer sponsored; its members pay for their own jobs");
                exit::OK
            }
            Ok(false) => {
                eprintln!("{scope} had no sponsor; nothing changed");
                exit::FAILED
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
