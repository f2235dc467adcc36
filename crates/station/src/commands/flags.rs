//! `station flags`: feature flags for gradual rollout and switching things
//! off at run time (see `station_core::flags`).

use clap::{Args, Subcommand};
use station_core::Station;
use station_core::audit::Actor;
use station_core::flags::{FEATURES, FlagRule, FlagState, FlagSubject, SetFlagError, flag_target};

use crate::exit;

/// `station flags …`.
#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Every flag, who it is on for, and the features a flag can switch.
    List {
        /// Print JSON lines (one object per flag).
        #[arg(long)]
        json: bool,
    },
    /// Set a flag: on, off, or on for some (a percentage, accounts, groups,
    /// platforms, administrators). Takes effect at once in every process.
    Set(SetArgs),
    /// Remove a flag: what it switched is on for everyone again.
    Unset {
        /// The flag's name.
        name: String,
    },
    /// Whether a flag is on for one account.
    Check {
        /// The flag's name.
        name: String,
        /// The account: an id, provider:subject, or a local user name.
        #[arg(long)]
        user: String,
        /// As if the request came through this platform.
        #[arg(long)]
        platform: Option<String>,
    },
}

/// `station flags set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The flag's name: a feature (training, collections, cook, spells,
    /// webhooks, wallets), `tool.<id>`, or `platform.<telegram|discord|terminal|web|api>`.
    name: String,
    /// On for everyone.
    #[arg(long, conflicts_with_all = ["off", "percent", "accounts", "groups", "platforms", "admins"])]
    on: bool,
    /// Off for everyone.
    #[arg(long, conflicts_with_all = ["percent", "accounts", "groups", "platforms", "admins"])]
    off: bool,
    /// On for this share of accounts (0–100; the same accounts each time).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    percent: Option<u8>,
    /// On for these accounts (ids, provider:subject or local user names; comma-separated).
    #[arg(long, value_delimiter = ',')]
    accounts: Vec<String>,
    /// On for these groups (e.g. discord-guild:123; comma-separated).
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// On for everyone on these platforms (comma-separated).
    #[arg(long, value_delimiter = ',')]
    platforms: Vec<String>,
    /// On for administrators.
    #[arg(long)]
    admins: bool,
    /// What the flag is for (kept; shown in lists).
    #[arg(long)]
    description: Option<String>,
}

/// Runs a `station flags` command and returns the exit code.
pub async fn run(station: &Station, c: FlagsCommand) -> u8 {
    let by = Actor::operator(&super::local_user(None));
    match c {
        FlagsCommand::List { json } => list(station, json).await,
        FlagsCommand::Set(a) => set(station, a, &by).await,
        FlagsCommand::Unset { name } => match station.unset_flag(&name, &by).await {
            Ok(true) => {
                println!("{name} removed: {} is on for everyone", flag_target(station, &name));
                exit::OK
            }
            Ok(false) => {
                eprintln!("error: there is no flag {name:?}; `station flags list` shows them");
                exit::USAGE
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::UNAVAILABLE
            }
        },
        FlagsCommand::Check { name, user, platform } => {
            let account = match super::points::find_account(station, &user).await {
                Ok(a) => a,
                Err(code) => return code,
            };
            station.refresh_flags_if_stale().await;
            let who = FlagSubject { account: Some(&account), platform: platform.as_deref(), group: None };
            let on = station.flag_on(&name, &who);
            println!("{name} is {} for {}", if on { "on" } else { "off" }, account.name);
            exit::OK
        }
    }
}

async fn list(station: &Station, json: bool) -> u8 {
    let flags = match station.flags().await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot read the flags: {e}");
            return exit::UNAVAILABLE;
        }
    };
    if json {
        for f in &flags {
            println!("{}", serde_json::to_string(f).unwrap_or_default());
        }
        return exit::OK;
    }
    if flags.is_empty() {
        println!("no flags set: everything is on for everyone");
    } else {
        let width = flags.iter().map(|f| f.name.len()).max().unwrap_or(0);
        for f in &flags {
            println!("{:width$}  {}", f.name, f.rule.describe());
            println!("{:width$}  switches {}", "", flag_target(station, &f.name));
            if !f.description.is_empty() {
                println!("{:width$}  {}", "", f.description);
            }
            println!("{:width$}  set {} by {}", "", station_core::audit::utc_text(f.updated_at), f.updated_by);
        }
    }
    println!();
    println!("Features a flag of the same name switches:");
    for (name, what) in FEATURES {
        println!("  {name:12} {what}");
    }
    println!("Also tool.<id> for a tool, and platform.<telegram|discord|terminal|web|api> for a front end.");
    exit::OK
}

async fn set(station: &Station, a: SetArgs, by: &Actor) -> u8 {
    let some = a.percent.is_some_and(|p| p > 0)
        || !a.accounts.is_empty()
        || !a.groups.is_empty()
        || !a.platforms.is_empty()
        || a.admins;
    let state = match (a.on, a.off, some) {
        (true, _, _) => FlagState::On,
        (_, true, _) => FlagState::Off,
        (_, _, true) => FlagState::Some,
        // `--percent 0` alone: on for nobody.
        _ if a.percent == Some(0) => FlagState::Off,
        _ => {
            eprintln!(
                "error: say who the flag is on for: --on, --off, or any of --percent N, --accounts, --groups, \
                 --platforms, --admins"
            );
            return exit::USAGE;
        }
    };
    let mut accounts = vec![];
    for spec in a.accounts.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match super::points::find_account(station, spec).await {
            Ok(acc) => accounts.push(acc.id),
            Err(code) => return code,
        }
    }
    let rule = FlagRule {
        state,
        percent: if state == FlagState::Some { a.percent.unwrap_or(0) } else { 0 },
        accounts,
        groups: a.groups,
        platforms: a.platforms,
        admins: a.admins,
    };
    match station.set_flag(&a.name, rule, a.description.as_deref(), by).await {
        Ok(flag) => {
            println!("{} is {}: {}", flag.name, flag.rule.describe(), flag_target(station, &flag.name));
            exit::OK
        }
        Err(SetFlagError::Invalid(errors)) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            exit::USAGE
        }
        Err(SetFlagError::Store(e)) => {
            eprintln!("error: {e}");
            exit::UNAVAILABLE
        }
    }
}
