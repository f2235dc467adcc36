//! `station users …`: list, inspect, create, promote and suspend accounts.

use clap::Subcommand;
use serde_json::json;
use station_core::Role;
use station_core::Station;

use super::points::find_account;
use crate::exit;

/// `station users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Every account with its role, state and points.
    List {
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One account: identities, role, state and points.
    Show {
        /// Account id, provider:subject or local user name.
        user: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an account (it gets the starting grant). With --admin it is an
    /// administrator and a one-time web sign-in link is printed.
    Create {
        /// Display name; also the local identity unless --identity is given.
        name: String,
        /// Identity to link, provider:subject (default: local:NAME).
        #[arg(long)]
        identity: Option<String>,
        /// Make the account an administrator and print a sign-in link for the
        /// web app (the usual way to set up the first operator).
        #[arg(long)]
        admin: bool,
    },
    /// Print a one-time sign-in link for the web app (works once, for 15
    /// minutes). The link is the only thing on stdout.
    LoginLink {
        /// Account id, provider:subject or local user name.
        user: String,
    },
    /// Make an account an administrator.
    GrantAdmin {
        /// Account id, provider:subject or local user name.
        user: String,
    },
    /// Make a `/link` code for an account: entered on another platform within
    /// 10 minutes (`/link CODE`, or POST /api/v1/account/link), it joins that
    /// platform's account into this one.
    LinkCode {
        /// Account id, provider:subject or local user name.
        #[arg(long)]
        user: String,
    },
    /// Suspend an account (it can no longer start jobs), or reinstate it.
    Suspend {
        /// Account id, provider:subject or local user name.
        user: String,
        /// Reinstate instead.
        #[arg(long)]
        undo: bool,
    },
}

/// Runs a `station users` command.
pub async fn run(station: &Station, c: UsersCommand) -> u8 {
    match c {
        UsersCommand::List { limit, json } => {
            let accounts = match station.accounts(limit).await {
                Ok(a) => a,
                Err(e) => return fail(e),
            };
            let mut rows = vec![];
            for a in accounts {
                let b = match station.points(&a.id).await {
                    Ok(b) => b,
                    Err(e) => return fail(e),
                };
                rows.push((a, b));
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(a, b)| json!({"account": a, "balance": b.balance, "held": b.held, "available": b.available()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{:<34} {:<20} {:<6} {:<10} {:>8} {:>8}", "ID", "NAME", "ROLE", "STATE", "BALANCE", "HELD");
                for (a, b) in rows {
                    let state = if a.suspended { "suspended" } else { "active" };
                    println!("{:<34} {:<20} {:<6} {:<10} {:>8} {:>8}", a.id, a.name, a.role, state, b.balance, b.held);
                }
            }
            exit::OK
        }
        UsersCommand::Show { user, json } => {
            let a = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            let (ids, b) = match (station.account_identities(&a.id).await, station.points(&a.id).await) {
                (Ok(i), Ok(b)) => (i, b),
                (Err(e), _) | (_, Err(e)) => return fail(e),
            };
            let v = json!({
                "account": a,
                "identities": ids.iter().map(|(p, s)| format!("{p}:{s}")).collect::<Vec<_>>(),
                "points": {"balance": b.balance, "held": b.held, "available": b.available()},
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return exit::OK;
            }
            let created = chrono::DateTime::from_timestamp_millis(a.created_at)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            println!("account     {}\nname        {}\nrole        {}", a.id, a.name, a.role);
            println!("state       {}", if a.suspended { "suspended" } else { "active" });
            println!("created     {created}");
            let ids: Vec<String> = ids.iter().map(|(p, s)| format!("{p}:{s}")).collect();
            println!("identities  {}", if ids.is_empty() { "none".to_string() } else { ids.join(", ") });
            println!("points      {} available ({} balance, {} held)", b.available(), b.balance, b.held);
            exit::OK
        }
        UsersCommand::Create { name, identity, admin } => {
            let identity = identity.unwrap_or_else(|| format!("local:{name}"));
            let Some((provider, subject)) = identity.split_once(':').filter(|(p, s)| !p.is_empty() && !s.is_empty())
            else {
                eprintln!("error: --identity {identity:?} must look like provider:subject, e.g. telegram:12345");
                return exit::USAGE;
            };
            match station.find_account(&identity).await {
                Ok(Some(a)) => {
                    eprintln!("error: {identity} already belongs to account {} ({})", a.id, a.name);
                    return exit::USAGE;
                }
                Ok(None) => {}
                Err(e) => return fail(e),
            }
            let a = match station.account(provider, subject, &name).await {
                Ok(a) => a,
                Err(e) => return fail(e),
            };
            if let Err(e) = station.ensure_starting_grant(&a.id).await {
                return fail(e);
            }
            if !admin {
                println!("created account {} ({name}) linked to {identity}", a.id);
                return exit::OK;
            }
            let a = match station.set_account_role(&a.id, Role::Admin, &operator()).await {
                Ok(_) => match find_account(station, &a.id).await {
                    Ok(a) => a,
                    Err(code) => return code,
                },
                Err(e) => return fail(e),
            };
            println!("created administrator {} ({name}) linked to {identity}", a.id);
            print_login_link(station, &a).await
        }
        UsersCommand::LoginLink { user } => {
            let a = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            print_login_link(station, &a).await
        }
        UsersCommand::GrantAdmin { user } => {
            let a = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.set_account_role(&a.id, Role::Admin, &operator()).await {
                Ok(_) => {
                    println!("{} ({}) is now an administrator", a.name, a.id);
                    exit::OK
                }
                Err(e) => fail(e),
            }
        }
        UsersCommand::LinkCode { user } => {
            let a = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.create_link_code(&a).await {
                Ok(code) => {
                    println!("{}", code.code);
                    let minutes = (code.expires_at - station_core::now_ms() + 59_999) / 60_000;
                    eprintln!(
                        "link code for {} ({}); enter it on the other platform within {minutes} minutes \
                         (it works once). That platform's account, points included, joins this one.",
                        a.name, a.id
                    );
                    exit::OK
                }
                Err(e) => fail(e),
            }
        }
        UsersCommand::Suspend { user, undo } => {
            let a = match find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            match station.set_account_suspended(&a.id, !undo, &operator()).await {
                Ok(_) => {
                    println!("{} ({}) is {}", a.name, a.id, if undo { "active again" } else { "suspended" });
                    exit::OK
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// Prints `public URL/login?token=…` for `a` on stdout (how long it works on stderr).
async fn print_login_link(station: &Station, a: &station_core::AccountRow) -> u8 {
    match station.create_login_token(a).await {
        Ok((token, expires_at)) => {
            println!("{}/login?token={token}", station.config.public_url());
            let minutes = (expires_at - station_core::now_ms() + 59_999) / 60_000;
            eprintln!(
                "sign-in link for {} ({}): open it in a browser within {minutes} minutes; it works once. \
                 Another link: station users login-link {}",
                a.name, a.id, a.id
            );
            exit::OK
        }
        Err(e) => fail(e),
    }
}

/// The operator at this command line, for the audit log.
fn operator() -> station_core::audit::Actor {
    station_core::audit::Actor::operator(&super::local_user(None))
}

fn fail(e: impl std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    exit::UNAVAILABLE
}
