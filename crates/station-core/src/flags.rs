//! Feature flags: named switches the operator flips at run time, for gradual
//! rollout and for turning something off without a restart.
//!
//! A flag is **on**, **off**, or on for **some**: a stable percentage of
//! accounts (the account id hashed with the flag's name, so one account is
//! in or out of a rollout for good and two flags pick different accounts),
//! listed accounts, listed groups (chat groups and servers, named by scope
//! as group tool switches name them), listed platforms, and/or
//! administrators. A name with no flag stored is on: flags take things away,
//! so an install without any behaves as before.
//!
//! What flags gate, by name:
//! - `tool.<id>`: a tool; off means unknown for that account everywhere
//!   ([`Station::find_tool`], lists) — administrators included, so an
//!   operator can try a rollout as a member would see it;
//! - `platform.<name>` (`telegram`, `discord`, `terminal`, `web`, `api`):
//!   a front end for that account;
//! - the features in [`FEATURES`].
//!
//! Reads come from a per-process copy refreshed when older than
//! `limits.auth_cache_ms` (2 s) and at once when a flag changes: this
//! process reloads after its own write, and on PostgreSQL the change is
//! announced to every other process with the credential invalidations
//! ([`crate::auth_cache::Invalidation::Flags`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use station_store::{AccountRow, FlagRow, StoreError, now_ms};

use crate::Station;
use crate::audit::Actor;
use crate::auth_cache::Invalidation;

/// Features that can be switched by a flag of the same name, with what each
/// is, for lists and the admin page.
pub const FEATURES: &[(&str, &str)] = &[
    ("training", "LoRA training from a user's dataset"),
    ("collections", "collections of images and LoRAs, share links and exports"),
    ("cook", "generative collections from trait trees"),
    ("spells", "saved chains of tools"),
    ("webhooks", "webhooks when work finishes"),
    ("wallets", "wallets and on-chain deposits"),
];

/// Platforms a `platform.<name>` flag can switch.
pub const PLATFORMS: &[&str] = &["telegram", "discord", "terminal", "web", "api"];

/// Whether a flag is on, off, or on for some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagState {
    /// On for everyone.
    On,
    /// Off for everyone.
    Off,
    /// On for the accounts the rule's lists and percentage name.
    Some,
}

/// Who a flag is on for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagRule {
    /// On, off, or on for some.
    pub state: FlagState,
    /// With `some`: this share of accounts (0–100), chosen by a stable hash.
    #[serde(default)]
    pub percent: u8,
    /// With `some`: these accounts (ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// With `some`: anyone in these groups (e.g. `telegram-chat:-100…`, `discord-guild:…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// With `some`: anyone on these platforms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// With `some`: administrators.
    #[serde(default)]
    pub admins: bool,
}

impl FlagRule {
    /// On for everyone.
    pub fn on() -> FlagRule {
        FlagRule::with_state(FlagState::On)
    }

    /// Off for everyone.
    pub fn off() -> FlagRule {
        FlagRule::with_state(FlagState::Off)
    }

    fn with_state(state: FlagState) -> FlagRule {
        FlagRule { state, percent: 0, accounts: vec![], groups: vec![], platforms: vec![], admins: false }
    }

    /// Whether the flag named `name` with this rule is on for `who`.
    pub fn allows(&self, name: &str, who: &FlagSubject<'_>) -> bool {
        match self.state {
            FlagState::On => true,
            FlagState::Off => false,
            FlagState::Some => {
                let account = who.account;
                (self.admins && account.is_some_and(AccountRow::is_admin))
                    || account.is_some_and(|a| self.accounts.contains(&a.id))
                    || who.group.is_some_and(|g| self.groups.iter().any(|x| x == g))
                    || who.platform.is_some_and(|p| self.platforms.iter().any(|x| x == p))
                    || (self.percent > 0 && account.is_some_and(|a| rollout_bucket(name, &a.id) < self.percent))
            }
        }
    }

    /// Checks the rule: every error at once, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<FlagError>> {
        let mut errors = vec![];
        if self.percent > 100 {
            errors.push(FlagError::field("percent", "must be from 0 to 100"));
        }
        let audience = self.percent > 0
            || !self.accounts.is_empty()
            || !self.groups.is_empty()
            || !self.platforms.is_empty()
            || self.admins;
        match self.state {
            FlagState::Some if !audience => errors.push(FlagError::field(
                "state",
                "\"some\" needs someone to be on for: a percentage, accounts, groups, platforms or administrators",
            )),
            FlagState::On | FlagState::Off if audience => errors.push(FlagError::field(
                "state",
                "percentages and lists apply only to \"some\"; \"on\" and \"off\" are for everyone",
            )),
            _ => {}
        }
        for p in &self.platforms {
            if !PLATFORMS.contains(&p.as_str()) {
                errors.push(FlagError::field(
                    "platforms",
                    format!("unknown platform {p:?}; known: {}", PLATFORMS.join(", ")),
                ));
            }
        }
        for (field, list) in [("accounts", &self.accounts), ("groups", &self.groups)] {
            if list.iter().any(|x| x.trim().is_empty()) {
                errors.push(FlagError::field(field, "an entry is empty"));
            }
            if list.len() > MAX_LISTED {
                errors.push(FlagError::field(field, format!("at most {MAX_LISTED} entries")));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The rule in words: `on`, `off`, `on for 25 % of accounts and administrators`.
    pub fn describe(&self) -> String {
        match self.state {
            FlagState::On => "on".into(),
            FlagState::Off => "off".into(),
            FlagState::Some => {
                let mut parts = vec![];
                if self.percent > 0 {
                    parts.push(format!("{} % of accounts", self.percent));
                }
                let count = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
                if !self.accounts.is_empty() {
                    parts.push(count(self.accounts.len(), "listed account", "listed accounts"));
                }
                if !self.groups.is_empty() {
                    parts.push(count(self.groups.len(), "group", "groups"));
                }
                if !self.platforms.is_empty() {
                    parts.push(format!("everyone on {}", self.platforms.join(", ")));
                }
                if self.admins {
                    parts.push("administrators".into());
                }
                let last = parts.pop().unwrap_or_default();
                if parts.is_empty() {
                    format!("on for {last}")
                } else {
                    format!("on for {} and {last}", parts.join(", "))
                }
            }
        }
    }
}

/// Most accounts or groups one flag may list (a rollout to more is a percentage).
pub const MAX_LISTED: usize = 1000;

/// The stable bucket (0–99) of an account in a flag's rollout: the first
/// eight bytes of SHA-256(name, 0, account id). Raising the percentage keeps
/// everyone who was in; a different flag picks different accounts.
pub fn rollout_bucket(name: &str, account_id: &str) -> u8 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(account_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) as u8
}

/// Who a flag is asked about: the account, and where known the platform and group.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlagSubject<'a> {
    /// The account (none: anonymous, e.g. a public page).
    pub account: Option<&'a AccountRow>,
    /// The platform the request came through (`telegram`, `web`, …).
    pub platform: Option<&'a str>,
    /// The group the request came from (a chat group's scope).
    pub group: Option<&'a str>,
}

impl<'a> FlagSubject<'a> {
    /// An account, platform and group unknown.
    pub fn account(account: &'a AccountRow) -> FlagSubject<'a> {
        FlagSubject { account: Some(account), platform: None, group: None }
    }

    /// An account on a platform.
    pub fn on(account: &'a AccountRow, platform: &'a str) -> FlagSubject<'a> {
        FlagSubject { account: Some(account), platform: Some(platform), group: None }
    }
}

/// A stored flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Its name.
    pub name: String,
    /// Who it is on for.
    pub rule: FlagRule,
    /// What it is for.
    pub description: String,
    /// When it was last set (Unix ms).
    pub updated_at: i64,
    /// Who set it.
    pub updated_by: String,
}

impl Flag {
    fn from_row(row: FlagRow) -> Option<Flag> {
        match serde_json::from_str(&row.rule) {
            Ok(rule) => Some(Flag {
                name: row.name,
                rule,
                description: row.description,
                updated_at: row.updated_at,
                updated_by: row.updated_by,
            }),
            Err(e) => {
                // Only a hand edit can do this; the flag then counts as absent (on).
                tracing::error!(flag = %row.name, error = %e, "a stored feature flag is unreadable; it is ignored");
                None
            }
        }
    }
}

/// A refused flag change, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FlagError {
    /// The field at fault (`name`, `state`, `percent`, …).
    pub field: &'static str,
    /// Why, for a person.
    pub reason: String,
}

impl FlagError {
    fn field(field: &'static str, reason: impl Into<String>) -> FlagError {
        FlagError { field, reason: reason.into() }
    }
}

/// Why a flag could not be set or removed.
#[derive(Debug, thiserror::Error)]
pub enum SetFlagError {
    /// The name or rule is unusable.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FlagError>),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a flag's name: lower-case letters, digits, `.`, `_`, `-`; 1–64
/// characters; `tool.` and `platform.` names must name a platform or look
/// like a tool id.
pub fn validate_name(name: &str) -> Result<(), FlagError> {
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with('.') || name.ends_with('.') {
        return Err(FlagError::field(
            "name",
            "use 1–64 lower-case letters, digits, '.', '_' or '-' (e.g. training, tool.txt2img, platform.discord)",
        ));
    }
    if let Some(p) = name.strip_prefix("platform.")
        && !PLATFORMS.contains(&p)
    {
        return Err(FlagError::field("name", format!("unknown platform {p:?}; known: {}", PLATFORMS.join(", "))));
    }
    if name == "tool." || name == "platform." {
        return Err(FlagError::field("name", "name the tool or platform after the dot"));
    }
    Ok(())
}

/// What a flag's name switches, for people: "the tool Text to image",
/// "Telegram", "LoRA training", or "a custom flag".
pub fn flag_target(station: &Station, name: &str) -> String {
    if let Some(id) = name.strip_prefix("tool.") {
        return match station.tools.get(id) {
            Some(t) => format!("the tool {}", t.name),
            None => format!("a tool {id} (not loaded now)"),
        };
    }
    if let Some(p) = name.strip_prefix("platform.") {
        return format!("the {p} front end");
    }
    match FEATURES.iter().find(|(f, _)| *f == name) {
        Some((_, what)) => what.to_string(),
        None => "nothing Station knows: a custom flag".into(),
    }
}

/// This process's copy of the flags (see the module documentation).
#[derive(Default)]
pub struct FlagCache {
    snapshot: RwLock<Snapshot>,
    reloading: AtomicBool,
}

#[derive(Clone, Default)]
struct Snapshot {
    flags: Arc<HashMap<String, Flag>>,
    loaded_at: Option<Instant>,
    /// The invalidation epoch the copy was read at.
    epoch: u64,
}

impl std::fmt::Debug for FlagCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagCache").field("flags", &self.read().flags.len()).finish()
    }
}

impl FlagCache {
    fn read(&self) -> Snapshot {
        self.snapshot.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn store(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
    }
}

impl Station {
    /// Whether the flag `name` is on for `who` (a name without a flag is on).
    /// Reads this process's copy; when the copy is older than the cache bound
    /// or a change was announced, a reload starts and the next read sees it
    /// (call [`Station::refresh_flags_if_stale`] first where a strict bound matters).
    pub fn flag_on(&self, name: &str, who: &FlagSubject<'_>) -> bool {
        self.current_flags().get(name).is_none_or(|f| f.rule.allows(name, who))
    }

    /// This process's copy, starting a reload when it is stale.
    fn current_flags(&self) -> Arc<HashMap<String, Flag>> {
        let snapshot = self.flag_cache.read();
        if self.flags_stale(&snapshot) {
            self.reload_flags_in_background();
        }
        snapshot.flags
    }

    /// The flag `<family>.<id>` for `who`; without any flag stored, no name is built.
    fn family_flag_on(&self, family: &str, id: &str, who: &FlagSubject<'_>) -> bool {
        let flags = self.current_flags();
        if flags.is_empty() {
            return true;
        }
        let name = format!("{family}.{id}");
        flags.get(&name).is_none_or(|f| f.rule.allows(&name, who))
    }

    /// Whether a feature of [`FEATURES`] is on for `who`; refreshes a stale copy first.
    pub async fn feature_on(&self, feature: &str, who: &FlagSubject<'_>) -> bool {
        self.refresh_flags_if_stale().await;
        self.flag_on(feature, who)
    }

    /// `None` when `feature` (one of [`FEATURES`]) is on for `account`, else
    /// the refusal to show: the core's entry points to each feature (saving
    /// a spell, casting, creating a collection, sharing, exporting, creating
    /// a dataset, starting a training, adding a webhook) check it first.
    pub async fn feature_refusal(&self, feature: &str, account: &AccountRow) -> Option<station_tools::FieldError> {
        if self.feature_on(feature, &FlagSubject::account(account)).await {
            return None;
        }
        let what = FEATURES.iter().find(|(f, _)| *f == feature).map_or(feature, |(_, w)| w);
        let mut what = what.to_string();
        if let Some(first) = what.get(..1) {
            what = first.to_uppercase() + &what[1..];
        }
        Some(station_tools::FieldError {
            field: "feature".into(),
            reason: format!("{what} is switched off for your account right now; please try again later"),
        })
    }

    /// Whether `account` may use `platform` (its `platform.<name>` flag),
    /// in `group` when the request comes from one.
    pub async fn platform_on(&self, platform: &str, account: &AccountRow, group: Option<&str>) -> bool {
        self.refresh_flags_if_stale().await;
        let who = FlagSubject { account: Some(account), platform: Some(platform), group };
        self.family_flag_on("platform", platform, &who)
    }

    /// Whether the tool `tool_id` is on for `account` (its `tool.<id>` flag).
    pub fn tool_flag_on(&self, tool_id: &str, account: &AccountRow) -> bool {
        self.family_flag_on("tool", tool_id, &FlagSubject::account(account))
    }

    /// Whether any `tool.` flag exists (lists then differ per account).
    pub fn tool_flags_present(&self) -> bool {
        self.flag_cache.read().flags.keys().any(|n| n.starts_with("tool."))
    }

    /// Reloads the flags when the copy is older than the cache bound or a
    /// change was announced. A failed read keeps the old copy (logged).
    pub async fn refresh_flags_if_stale(&self) {
        if self.flags_stale(&self.flag_cache.read())
            && let Err(e) = self.reload_flags().await
        {
            tracing::warn!(error = %e, "could not read the feature flags; using the copy in memory");
        }
    }

    fn flags_stale(&self, s: &Snapshot) -> bool {
        s.epoch != self.auth_cache.flags_epoch() || s.loaded_at.is_none_or(|at| at.elapsed() >= self.auth_cache.ttl())
    }

    fn reload_flags_in_background(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        if self.flag_cache.reloading.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = self.downgrade();
        handle.spawn(async move {
            if let Some(station) = weak.upgrade() {
                if let Err(e) = station.reload_flags().await {
                    tracing::warn!(error = %e, "could not read the feature flags; using the copy in memory");
                }
                station.flag_cache.reloading.store(false, Ordering::Release);
            }
        });
    }

    /// Reads every flag from the database into this process's copy.
    pub async fn reload_flags(&self) -> Result<(), StoreError> {
        // The epoch is taken before the read: a change announced during the
        // read makes this copy stale at once.
        let epoch = self.auth_cache.flags_epoch();
        let rows = self.store.flags().await?;
        let flags = rows.into_iter().filter_map(Flag::from_row).map(|f| (f.name.clone(), f)).collect();
        self.flag_cache.store(Snapshot { flags: Arc::new(flags), loaded_at: Some(Instant::now()), epoch });
        Ok(())
    }

    /// Every stored flag, by name, read from the database.
    pub async fn flags(&self) -> Result<Vec<Flag>, StoreError> {
        Ok(self.store.flags().await?.into_iter().filter_map(Flag::from_row).collect())
    }

    /// Sets a flag (creating it), effective at once in this process and,
    /// on PostgreSQL, announced to the others. Audited (`flag.set`).
    pub async fn set_flag(
        &self,
        name: &str,
        rule: FlagRule,
        description: Option<&str>,
        by: &Actor,
    ) -> Result<Flag, SetFlagError> {
        let mut errors = vec![];
        if let Err(e) = validate_name(name) {
            errors.push(e);
        }
        if let Err(mut e) = rule.validate() {
            errors.append(&mut e);
        }
        let description = description.map(str::trim).unwrap_or_default();
        if description.chars().count() > 200 {
            errors.push(FlagError::field("description", "at most 200 characters"));
        }
        if !errors.is_empty() {
            return Err(SetFlagError::Invalid(errors));
        }
        let old = self.store.flags().await?.into_iter().find(|f| f.name == name);
        // An omitted description keeps the one there was.
        let description = if description.is_empty() {
            old.as_ref().map(|o| o.description.clone()).unwrap_or_default()
        } else {
            description.to_string()
        };
        let row = FlagRow {
            name: name.to_string(),
            rule: serde_json::to_string(&rule).expect("a rule serialises"),
            description,
            updated_at: now_ms(),
            updated_by: by.who.clone(),
        };
        let replaced = self.store.put_flag(&row).await?;
        self.flags_changed().await;
        let before = replaced.and_then(Flag::from_row).map(|f| f.rule.describe());
        let detail = match before {
            Some(b) => format!("{name}: {b} → {}", rule.describe()),
            None => format!("{name}: {}", rule.describe()),
        };
        self.audit(by, "flag.set", name, detail).await;
        Ok(Flag::from_row(row).expect("the rule just written reads back"))
    }

    /// Removes a flag: what it switched is on for everyone again. False if
    /// there was no such flag. Audited (`flag.unset`).
    pub async fn unset_flag(&self, name: &str, by: &Actor) -> Result<bool, StoreError> {
        let Some(old) = self.store.delete_flag(name).await? else { return Ok(false) };
        self.flags_changed().await;
        let was = Flag::from_row(old).map(|f| f.rule.describe()).unwrap_or_else(|| "unreadable".into());
        self.audit(by, "flag.unset", name, format!("{name} removed (was {was}); on for everyone")).await;
        Ok(true)
    }

    async fn flags_changed(&self) {
        self.invalidate_credentials(Invalidation::Flags).await;
        if let Err(e) = self.reload_flags().await {
            tracing::warn!(error = %e, "could not reread the feature flags after a change");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, admin: bool) -> AccountRow {
        let role = if admin { station_store::Role::Admin } else { station_store::Role::User };
        AccountRow { id: id.into(), name: id.into(), role, suspended: false, created_at: 0 }
    }

    #[test]
    fn a_rollout_is_stable_and_proportional() {
        let rule = FlagRule { state: FlagState::Some, percent: 25, ..FlagRule::off() };
        let accounts: Vec<AccountRow> = (0..10_000).map(|i| account(&format!("acc-{i}"), false)).collect();
        let on: Vec<bool> = accounts.iter().map(|a| rule.allows("training", &FlagSubject::account(a))).collect();
        let share = on.iter().filter(|x| **x).count();
        assert!((2_300..=2_700).contains(&share), "25 % of 10,000 accounts, got {share}");
        // Asked again: the same answer for each account.
        for (a, was) in accounts.iter().zip(&on) {
            assert_eq!(rule.allows("training", &FlagSubject::account(a)), *was);
        }
        // Raising the percentage keeps everyone who was in.
        let wider = FlagRule { percent: 60, ..rule.clone() };
        for (a, was) in accounts.iter().zip(&on) {
            if *was {
                assert!(wider.allows("training", &FlagSubject::account(a)));
            }
        }
        // Another flag picks other accounts.
        let other: usize = accounts
            .iter()
            .zip(&on)
            .filter(|(a, was)| **was && rule.allows("spells", &FlagSubject::account(a)))
            .count();
        assert!(other < share / 2, "independent rollouts overlap by about a quarter, got {other} of {share}");
    }

    #[test]
    fn lists_and_admins_and_states() {
        let ann = account("ann", false);
        let root = account("root", true);
        let some = FlagRule {
            state: FlagState::Some,
            accounts: vec!["ann".into()],
            platforms: vec!["discord".into()],
            groups: vec!["discord-guild:7".into()],
            admins: true,
            ..FlagRule::off()
        };
        assert!(some.allows("x", &FlagSubject::account(&ann)));
        assert!(some.allows("x", &FlagSubject::account(&root)));
        let bob = account("bob", false);
        assert!(!some.allows("x", &FlagSubject::account(&bob)));
        assert!(some.allows("x", &FlagSubject::on(&bob, "discord")));
        assert!(some.allows("x", &FlagSubject { account: Some(&bob), platform: None, group: Some("discord-guild:7") }));
        assert!(!FlagRule::off().allows("x", &FlagSubject::account(&root)));
        assert!(FlagRule::on().allows("x", &FlagSubject::default()));
        assert_eq!(some.describe(), "on for 1 listed account, 1 group, everyone on discord and administrators");
    }

    #[test]
    fn bad_rules_and_names_name_the_field() {
        let empty_some = FlagRule { state: FlagState::Some, ..FlagRule::off() };
        assert_eq!(empty_some.validate().unwrap_err()[0].field, "state");
        let bad =
            FlagRule { state: FlagState::Some, percent: 101, platforms: vec!["myspace".into()], ..FlagRule::off() };
        let fields: Vec<&str> = bad.validate().unwrap_err().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["percent", "platforms"]);
        let on_with_list = FlagRule { accounts: vec!["a".into()], ..FlagRule::on() };
        assert_eq!(on_with_list.validate().unwrap_err()[0].field, "state");
        for bad in ["", "Training", "tool.", "platform.myspace", "a b", ".x"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["training", "tool.txt2img", "platform.discord", "my-flag_2"] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
    }
}
