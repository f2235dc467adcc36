//! Alerts: rules over the system's health, watched in the background, and
//! messages for the operator when one fires and when it resolves.
//!
//! Rules (`[[alerts.rules]]`): a backend down for N minutes, the oldest
//! queued job of a service older than N minutes, the failure rate of a
//! service's jobs over X % in the last M minutes (with at least a minimum
//! number of ended jobs), free disk space below N % where `data_dir` is (the
//! doctor's measurement), and a wallet chain watcher lagging behind its
//! chain ([`Station::chain_lags`]).
//!
//! One evaluator at a time across processes: the process holding the
//! `alerts` row of `process_leases` evaluates; another takes over once that
//! lease lapses. Each rule and subject (a backend, a service, a chain) has
//! a state row: `pending` while the condition holds but not for long enough,
//! `firing` once it has, `resolved` once it stopped. A transition and the
//! messages it owes (one per sink) are written in one transaction,
//! conditional on the state being what the evaluator read, and a message's
//! `(event id, sink)` is unique — so a firing is announced once, a rule
//! that keeps firing is not announced again (unless
//! `alerts.reminder_minutes`), and its resolution is announced once.
//!
//! Durable first: messages are rows before anything is sent. Every process
//! that runs [`start`] sends the due messages of the sink kinds it can
//! reach — `webhook` always, chat kinds when a front end registered an
//! [`AlertSender`] for them (the binary registers Telegram and Discord when
//! their bots are configured; the core knows no platform) — claiming each
//! with a lease and retrying with exponential backoff until
//! `alerts.give_up_hours`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::json;
use station_store::{AlertMessageRow, AlertStateRow, StoreError};
use station_tools::FieldError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Station;
use crate::config::AlertsConfig;

/// Every rule kind.
pub const RULE_KINDS: [&str; 5] = ["backend_down", "queue_age", "failure_rate", "disk_free", "chain_lag"];
/// The sink kind the core sends itself.
pub const WEBHOOK: &str = "webhook";
/// The process lease of the evaluator.
const LEASE: &str = "alerts";

/// What a rule watches, with its thresholds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// A backend failing its health checks for `minutes`.
    BackendDown {
        /// How long.
        minutes: f64,
    },
    /// The oldest queued job of a service waited more than `minutes`.
    QueueAge {
        /// How long.
        minutes: f64,
        /// Only this service.
        service: Option<String>,
    },
    /// More than `percent` of a service's jobs that ended in the last
    /// `minutes` failed, and at least `min_jobs` ended.
    FailureRate {
        /// Failure share.
        percent: f64,
        /// Window.
        minutes: f64,
        /// Fewer ended jobs never fire.
        min_jobs: u64,
        /// Only this service.
        service: Option<String>,
    },
    /// Less than `percent` of the disk holding `data_dir` is free.
    DiskFree {
        /// Free share.
        percent: f64,
    },
    /// A chain watcher more than `blocks` blocks or `minutes` behind.
    ChainLag {
        /// Blocks behind.
        blocks: Option<u64>,
        /// Minutes behind.
        minutes: Option<f64>,
        /// Only this chain.
        chain: Option<String>,
    },
}

/// One rule, checked ([`rules`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// What it watches.
    pub condition: Condition,
}

/// One sink, checked ([`sinks`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sink {
    /// Its name.
    pub name: String,
    /// `webhook`, or a kind a front end sends (`telegram`, `discord`).
    pub kind: String,
    /// Chat, channel or URL.
    pub target: String,
    /// Webhook signing secret.
    #[serde(skip)]
    pub secret: Option<String>,
}

/// How far behind a wallet chain watcher is (see [`Station::chain_lags`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainLag {
    /// The chain's name.
    pub chain: String,
    /// Blocks between the chain's head and the last block the watcher read.
    pub blocks_behind: u64,
    /// Seconds since the watcher last advanced while behind.
    pub seconds_behind: u64,
}

/// What a send through an [`AlertSender`] came to.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Delivered.
    Sent,
    /// The platform asked to wait.
    RetryAfter(Duration),
    /// Try again later (network, 5xx).
    Transient(String),
    /// Will not succeed as configured (chat not found, no access).
    Permanent(String),
}

/// Sends a text to a chat or channel of one platform. Front ends implement
/// it and register it with [`Station::register_alert_sender`], so the core
/// sends alert messages without knowing the platform.
#[async_trait]
pub trait AlertSender: Send + Sync {
    /// Sends `text` to `target` (a chat id, a channel id).
    async fn send(&self, target: &str, text: &str) -> SendOutcome;
}

/// The registered senders by sink kind.
pub type AlertSenders = Arc<std::sync::RwLock<BTreeMap<String, Arc<dyn AlertSender>>>>;

/// Why alerts cannot be used as configured, or a failure.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// Bad rules or sinks; every problem listed by key.
    #[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

fn field(field: String, reason: impl Into<String>) -> FieldError {
    FieldError { field, reason: reason.into() }
}

/// The configured rules, checked: every problem named by its key.
pub fn rules(config: &AlertsConfig) -> Result<Vec<Rule>, Vec<FieldError>> {
    let mut errors = vec![];
    let mut out: Vec<Rule> = vec![];
    for (i, r) in config.rules.iter().enumerate() {
        let key = |k: &str| format!("alerts.rules[{i}].{k}");
        let mut minutes = |required: bool| match r.minutes {
            Some(m) if m.is_finite() && m >= 0.0 => Some(m),
            Some(_) => {
                errors.push(field(key("minutes"), "must be a number of minutes, 0 or more"));
                None
            }
            None if required => {
                errors.push(field(key("minutes"), format!("{} needs minutes", r.kind)));
                None
            }
            None => None,
        };
        let minutes = minutes(matches!(r.kind.as_str(), "backend_down" | "queue_age" | "failure_rate"));
        let percent = match r.percent {
            Some(p) if p.is_finite() && (0.0..=100.0).contains(&p) => Some(p),
            Some(_) => {
                errors.push(field(key("percent"), "must be between 0 and 100"));
                None
            }
            None if matches!(r.kind.as_str(), "failure_rate" | "disk_free") => {
                errors.push(field(key("percent"), format!("{} needs percent", r.kind)));
                None
            }
            None => None,
        };
        let allowed: &[&str] = match r.kind.as_str() {
            "backend_down" => &["minutes"],
            "queue_age" => &["minutes", "service"],
            "failure_rate" => &["minutes", "percent", "min_jobs", "service"],
            "disk_free" => &["percent"],
            "chain_lag" => &["blocks", "minutes", "chain"],
            other => {
                errors
                    .push(field(key("kind"), format!("unknown rule kind {other:?}; known: {}", RULE_KINDS.join(", "))));
                continue;
            }
        };
        for (k, given) in [
            ("minutes", r.minutes.is_some()),
            ("percent", r.percent.is_some()),
            ("min_jobs", r.min_jobs.is_some()),
            ("service", r.service.is_some()),
            ("blocks", r.blocks.is_some()),
            ("chain", r.chain.is_some()),
        ] {
            if given && !allowed.contains(&k) {
                errors.push(field(key(k), format!("{} does not take {k}", r.kind)));
            }
        }
        let condition = match r.kind.as_str() {
            "backend_down" => Condition::BackendDown { minutes: minutes.unwrap_or(0.0) },
            "queue_age" => Condition::QueueAge { minutes: minutes.unwrap_or(0.0), service: r.service.clone() },
            "failure_rate" => Condition::FailureRate {
                percent: percent.unwrap_or(0.0),
                minutes: minutes.unwrap_or(0.0).max(1.0 / 60.0),
                min_jobs: r.min_jobs.unwrap_or(10).max(1),
                service: r.service.clone(),
            },
            "disk_free" => Condition::DiskFree { percent: percent.unwrap_or(0.0) },
            _ => {
                if r.blocks.is_none() && r.minutes.is_none() {
                    errors.push(field(key("blocks"), "chain_lag needs blocks, minutes or both"));
                }
                Condition::ChainLag { blocks: r.blocks, minutes, chain: r.chain.clone() }
            }
        };
        let name = match &r.name {
            Some(n) if n.trim().is_empty() || n.contains('/') || n.len() > 64 => {
                errors.push(field(key("name"), "a name of 1 to 64 characters without /"));
                continue;
            }
            Some(n) => n.trim().to_string(),
            None => match r.service.as_deref().or(r.chain.as_deref()) {
                Some(s) => format!("{}:{s}", r.kind),
                None => r.kind.clone(),
            },
        };
        if out.iter().any(|o| o.name == name) {
            errors.push(field(key("name"), format!("two rules are named {name:?}; give each its own name")));
            continue;
        }
        out.push(Rule { name, condition });
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// The configured sinks, checked; `kinds` are the chat kinds that can be
/// sent to (besides `webhook`), or None to accept any.
pub fn sinks(config: &AlertsConfig, kinds: Option<&[String]>) -> Result<Vec<Sink>, Vec<FieldError>> {
    let mut errors = vec![];
    let mut out: Vec<Sink> = vec![];
    for (i, s) in config.sinks.iter().enumerate() {
        let key = |k: &str| format!("alerts.sinks[{i}].{k}");
        let kind = s.kind.trim().to_string();
        let target = s.target.trim().to_string();
        if kind.is_empty() {
            errors.push(field(key("kind"), "name the kind: telegram, discord or webhook"));
            continue;
        }
        if target.is_empty() {
            errors.push(field(key("target"), "name the chat id, channel id or URL"));
            continue;
        }
        if kind == WEBHOOK {
            match reqwest::Url::parse(&target) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => errors.push(field(key("target"), format!("{target:?} is not an http(s) URL"))),
            }
        } else if let Some(kinds) = kinds
            && !kinds.contains(&kind)
        {
            let mut known = vec![WEBHOOK.to_string()];
            known.extend(kinds.iter().cloned());
            errors.push(field(
                key("kind"),
                format!(
                    "no {kind} bot is configured to send {kind} sinks ([{kind}] token); this process can send to: {}",
                    known.join(", ")
                ),
            ));
            continue;
        }
        if s.secret.is_some() && kind != WEBHOOK {
            errors.push(field(key("secret"), "only webhook sinks are signed"));
        }
        let name = match &s.name {
            Some(n) if n.trim().is_empty() || n.len() > 64 => {
                errors.push(field(key("name"), "a name of 1 to 64 characters"));
                continue;
            }
            Some(n) => n.trim().to_string(),
            None => {
                let n = out.iter().filter(|o| o.kind == kind).count();
                if n == 0 { kind.clone() } else { format!("{kind}-{}", n + 1) }
            }
        };
        if out.iter().any(|o| o.name == name) {
            errors.push(field(key("name"), format!("two sinks are named {name:?}; give each its own name")));
            continue;
        }
        out.push(Sink { name, kind, target, secret: s.secret.clone() });
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// What a rule measured about one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// A backend, a service, a chain, a folder.
    pub subject: String,
    /// Whether the condition holds.
    pub holds: bool,
    /// The value now, in words.
    pub value: String,
}

/// Queue age findings: `oldest` is (service, creation time of its oldest queued job).
pub fn queue_findings(minutes: f64, service: Option<&str>, oldest: &[(String, i64)], now: i64) -> Vec<Finding> {
    oldest
        .iter()
        .filter(|(s, _)| service.is_none_or(|want| want == s))
        .map(|(s, created)| {
            let age = (now - created).max(0);
            Finding {
                subject: s.clone(),
                holds: age as f64 > minutes * 60_000.0,
                value: format!("the oldest queued job has waited {}", words_ms(age)),
            }
        })
        .collect()
}

/// Failure rate findings from (service, ended, failed).
pub fn failure_findings(
    percent: f64,
    min_jobs: u64,
    service: Option<&str>,
    counts: &[(String, i64, i64)],
) -> Vec<Finding> {
    counts
        .iter()
        .filter(|(s, _, _)| service.is_none_or(|want| want == s))
        .map(|(s, ended, failed)| {
            let share = if *ended > 0 { *failed as f64 * 100.0 / *ended as f64 } else { 0.0 };
            Finding {
                subject: s.clone(),
                holds: *ended >= min_jobs as i64 && share > percent,
                value: format!("{share:.0} % failed ({failed} of {ended} jobs)"),
            }
        })
        .collect()
}

/// Chain lag findings.
pub fn chain_findings(
    blocks: Option<u64>,
    minutes: Option<f64>,
    chain: Option<&str>,
    lags: &[ChainLag],
) -> Vec<Finding> {
    lags.iter()
        .filter(|l| chain.is_none_or(|want| want == l.chain))
        .map(|l| Finding {
            subject: l.chain.clone(),
            holds: blocks.is_some_and(|b| l.blocks_behind > b)
                || minutes.is_some_and(|m| l.seconds_behind as f64 > m * 60.0),
            value: format!("{} blocks behind, for {}", l.blocks_behind, words_ms(l.seconds_behind as i64 * 1000)),
        })
        .collect()
}

/// A duration for people: `40 s`, `6 min`, `2 h 5 min`, `3 d 4 h`.
pub fn words_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 if (s % 3600) / 60 == 0 => format!("{} h", s / 3600),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A Unix ms time for people: `2026-12-07 14:02 UTC` (the audit log's format).
pub fn words_time(ms: i64) -> String {
    crate::audit::utc_text(ms)
}

fn minutes_words(m: f64) -> String {
    words_ms((m * 60_000.0) as i64)
}

impl Rule {
    /// How long the condition must hold before the rule fires (ms).
    fn hold_ms(&self) -> i64 {
        match self.condition {
            Condition::BackendDown { minutes } => (minutes * 60_000.0) as i64,
            _ => 0,
        }
    }

    /// The threshold, in words.
    pub fn threshold(&self) -> String {
        match &self.condition {
            Condition::BackendDown { minutes } => format!("a backend down for {}", minutes_words(*minutes)),
            Condition::QueueAge { minutes, service } => format!(
                "the oldest queued job of {} waiting over {}",
                service.as_deref().unwrap_or("a service"),
                minutes_words(*minutes)
            ),
            Condition::FailureRate { percent, minutes, min_jobs, service } => format!(
                "over {percent} % of {} jobs failing in {} (at least {min_jobs} ended)",
                service.as_deref().unwrap_or("a service's"),
                minutes_words(*minutes)
            ),
            Condition::DiskFree { percent } => format!("under {percent} % of the disk free"),
            Condition::ChainLag { blocks, minutes, chain } => {
                let mut parts = vec![];
                if let Some(b) = blocks {
                    parts.push(format!("{b} blocks"));
                }
                if let Some(m) = minutes {
                    parts.push(minutes_words(*m));
                }
                format!("the {} watcher over {} behind", chain.as_deref().unwrap_or("chain"), parts.join(" or "))
            }
        }
    }

    /// What is wrong, about `subject`.
    fn title(&self, subject: &str) -> String {
        match &self.condition {
            Condition::BackendDown { .. } => format!("backend {subject} is down"),
            Condition::QueueAge { .. } => format!("{subject} jobs are waiting too long in the queue"),
            Condition::FailureRate { .. } => format!("many {subject} jobs are failing"),
            Condition::DiskFree { .. } => format!("disk space is low where {subject} is"),
            Condition::ChainLag { .. } => format!("the {subject} chain watcher is lagging"),
        }
    }

    /// What to look at.
    fn hint(&self) -> &'static str {
        match self.condition {
            Condition::BackendDown { .. } => {
                "Is ComfyUI running there and reachable from Station? `station doctor` checks every backend."
            }
            Condition::QueueAge { .. } => {
                "Are the service's backends up and not full? `station doctor` checks them; the admin page shows \
                 the queue and what runs."
            }
            Condition::FailureRate { .. } => {
                "`station stats` lists the failure reasons; the backends' own logs say more."
            }
            Condition::DiskFree { .. } => {
                "Free space or move data_dir: media, the database and uploads all live there."
            }
            Condition::ChainLag { .. } => {
                "Is the chain's RPC endpoint answering? The watcher resumes where it stopped."
            }
        }
    }
}

/// One rule with its states, for `station alerts list` and the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    /// The rule.
    pub rule: Rule,
    /// Its threshold in words.
    pub threshold: String,
    /// Its subjects that are pending, firing or resolved.
    pub states: Vec<AlertStateRow>,
}

/// Alerts at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsOverview {
    /// Every rule and its states.
    pub rules: Vec<RuleStatus>,
    /// The sinks.
    pub sinks: Vec<Sink>,
    /// The newest messages.
    pub recent: Vec<AlertMessageRow>,
}

impl Station {
    /// Lets alert messages to sinks of `kind` (`telegram`, `discord`) be
    /// sent by this process through `sender`.
    pub fn register_alert_sender(&self, kind: &str, sender: Arc<dyn AlertSender>) {
        self.alert_senders.write().expect("alert senders lock").insert(kind.to_string(), sender);
    }

    /// The sink kinds this process can send to: `webhook` and the registered ones.
    pub fn alert_sink_kinds(&self) -> Vec<String> {
        let mut kinds = vec![WEBHOOK.to_string()];
        kinds.extend(self.alert_senders.read().expect("alert senders lock").keys().cloned());
        kinds
    }

    /// Checks the configured rules and sinks, the sinks against the kinds
    /// this process can send to.
    pub fn check_alerts(&self) -> Result<(Vec<Rule>, Vec<Sink>), AlertsError> {
        let kinds = self.alert_sink_kinds();
        let r = rules(&self.config.alerts);
        let s = sinks(&self.config.alerts, Some(&kinds));
        match (r, s) {
            (Ok(r), Ok(s)) => Ok((r, s)),
            (r, s) => {
                Err(AlertsError::Invalid(r.err().into_iter().flatten().chain(s.err().into_iter().flatten()).collect()))
            }
        }
    }

    /// How far behind each wallet chain watcher is. No chain is watched in
    /// this build, so the list is empty; the wallets' watcher answers it
    /// (the `chain_lag` rule reads this).
    pub async fn chain_lags(&self) -> Result<Vec<ChainLag>, StoreError> {
        let now = crate::now_ms();
        let mut out = vec![];
        for c in self.wallet_chains.iter() {
            // A watcher that never reached its chain has no cursor yet: nothing to measure.
            let Some(cursor) = self.store.wallet_cursor(c.id as i64).await? else { continue };
            let blocks_behind = (cursor.head.max(0) as u64 + 1).saturating_sub(cursor.next_block.max(0) as u64);
            // Behind, or failing to read: for as long as its cursor row has not moved.
            let stuck = blocks_behind > 0 || cursor.last_error.is_some();
            let seconds_behind = if stuck { ((now - cursor.updated_at).max(0) / 1000) as u64 } else { 0 };
            out.push(ChainLag { chain: c.name.clone(), blocks_behind, seconds_behind });
        }
        Ok(out)
    }

    /// Rules, their states, sinks and the newest messages.
    pub async fn alerts_overview(&self, recent: i64) -> Result<AlertsOverview, AlertsError> {
        let rules = rules(&self.config.alerts).map_err(AlertsError::Invalid)?;
        let sinks = sinks(&self.config.alerts, None).map_err(AlertsError::Invalid)?;
        let states = self.store.alert_states().await?;
        Ok(AlertsOverview {
            rules: rules
                .into_iter()
                .map(|rule| RuleStatus {
                    threshold: rule.threshold(),
                    states: states.iter().filter(|s| s.rule == rule.name).cloned().collect(),
                    rule,
                })
                .collect(),
            sinks,
            recent: self.store.recent_alert_messages(recent).await?,
        })
    }

    /// Enqueues a test message to every sink (sent by whichever process
    /// can reach each; see [`Station::send_due_alerts`]); returns its event
    /// id for [`Station::alert_messages`].
    pub async fn enqueue_test_alert(&self) -> Result<String, AlertsError> {
        let (rules, sinks) = self.check_alerts()?;
        if sinks.is_empty() {
            return Err(AlertsError::Invalid(vec![field(
                "alerts.sinks".into(),
                "no sink is configured; add [[alerts.sinks]] tables",
            )]));
        }
        let now = station_store::now_ms();
        let event_id = format!("test/{now}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let watched = if names.is_empty() { "no rules yet".to_string() } else { names.join(", ") };
        let rows: Vec<AlertMessageRow> = sinks
            .iter()
            .map(|s| {
                let text = format!(
                    "🔔 Test from Station{}: alerts reach this {} sink ({}). Rules watched: {watched}.",
                    self.where_words(),
                    s.kind,
                    s.name
                );
                let body = json!({"id": event_id, "type": "alert.test", "rule": "", "subject": "", "text": text});
                message_row(&event_id, "", "", "test", s, text, body.to_string(), now)
            })
            .collect();
        self.store.insert_alert_messages(&rows).await?;
        Ok(event_id)
    }

    /// The messages of one event, by sink.
    pub async fn alert_messages(&self, event_id: &str) -> Result<Vec<AlertMessageRow>, StoreError> {
        self.store.alert_messages_of(event_id).await
    }

    fn where_words(&self) -> String {
        self.config.configured_public_url().map(|u| format!(" at {u}")).unwrap_or_default()
    }

    /// Measures `rule` now. None when it cannot be told now (backend
    /// health not checked yet, disk unreadable): its states stay as they are.
    async fn measure(&self, rule: &Rule, now: i64, health_known: bool) -> Result<Option<Vec<Finding>>, StoreError> {
        Ok(Some(match &rule.condition {
            Condition::BackendDown { .. } => {
                if !health_known {
                    return Ok(None);
                }
                let executors = self.executors.read().expect("executors lock").clone();
                let mut out = vec![];
                for ex in executors {
                    for (name, healthy, detail) in ex.health().await {
                        let value = if healthy { "answering".to_string() } else { format!("not answering: {detail}") };
                        out.push(Finding { subject: name, holds: !healthy, value });
                    }
                }
                out
            }
            Condition::QueueAge { minutes, service } => {
                let oldest = self.store.oldest_queued_by_service().await?;
                queue_findings(*minutes, service.as_deref(), &oldest, now)
            }
            Condition::FailureRate { percent, minutes, min_jobs, service } => {
                let since = now - (*minutes * 60_000.0) as i64;
                let counts: Vec<(String, i64, i64)> = self
                    .store
                    .failures_by_service(since)
                    .await?
                    .into_iter()
                    .map(|c| (c.service, c.ended, c.failed))
                    .collect();
                failure_findings(*percent, *min_jobs, service.as_deref(), &counts)
            }
            Condition::DiskFree { percent } => {
                let dir = &self.config.data_dir;
                let Ok((free, total)) = crate::doctor::disk_space(dir) else { return Ok(None) };
                let share = free as f64 * 100.0 / total as f64;
                vec![Finding {
                    subject: dir.display().to_string(),
                    holds: share < *percent,
                    value: format!("{share:.1} % free ({} of {})", crate::doctor::gib(free), crate::doctor::gib(total)),
                }]
            }
            Condition::ChainLag { blocks, minutes, chain } => {
                chain_findings(*blocks, *minutes, chain.as_deref(), &self.chain_lags().await?)
            }
        }))
    }

    /// Evaluates every rule once and writes what changed (with the
    /// messages owed); returns how many transitions were written. Call it
    /// from one process at a time ([`start`] holds a lease for that).
    /// `health_known`: the backends have had their first health check.
    pub async fn evaluate_alerts(&self, health_known: bool) -> Result<usize, AlertsError> {
        self.evaluate_alerts_at(station_store::now_ms(), health_known).await
    }

    /// [`Station::evaluate_alerts`] as if the time were `now` (Unix ms), so
    /// tests can step through hold times and reminders without waiting.
    #[doc(hidden)]
    pub async fn evaluate_alerts_at(&self, now: i64, health_known: bool) -> Result<usize, AlertsError> {
        let (rules, sinks) = {
            let r = rules(&self.config.alerts).map_err(AlertsError::Invalid)?;
            let s = sinks(&self.config.alerts, None).map_err(AlertsError::Invalid)?;
            (r, s)
        };
        let states = self.store.alert_states().await?;
        let mut changed = 0;
        for rule in &rules {
            let Some(mut findings) = self.measure(rule, now, health_known).await? else { continue };
            // A subject no longer measured (a backend removed, a queue emptied) does not hold.
            for s in states.iter().filter(|s| s.rule == rule.name) {
                if !findings.iter().any(|f| f.subject == s.subject) {
                    findings.push(Finding { subject: s.subject.clone(), holds: false, value: "gone".into() });
                }
            }
            for f in findings {
                let current = states.iter().find(|s| s.rule == rule.name && s.subject == f.subject);
                let Some((next, kind)) = self.step(rule, current, &f, now) else { continue };
                let messages = match (&kind, &next) {
                    (Some(kind), Some(st)) => self.messages(rule, st, kind, &sinks, now),
                    _ => vec![],
                };
                if self.store.alert_transition(&rule.name, &f.subject, current, next.as_ref(), &messages).await? {
                    changed += 1;
                    if let Some(kind) = kind {
                        info!(rule = %rule.name, subject = %f.subject, %kind, value = %f.value, "alert");
                    }
                }
            }
        }
        Ok(changed)
    }

    /// The next state of one rule and subject and the message kind it owes;
    /// None when nothing changes.
    #[allow(clippy::type_complexity)]
    fn step(
        &self,
        rule: &Rule,
        current: Option<&AlertStateRow>,
        f: &Finding,
        now: i64,
    ) -> Option<(Option<AlertStateRow>, Option<&'static str>)> {
        let fresh = |state: &str, fired_at: Option<i64>| AlertStateRow {
            rule: rule.name.clone(),
            subject: f.subject.clone(),
            state: state.into(),
            since: now,
            fired_at,
            resolved_at: None,
            reminded_at: None,
            value: f.value.clone(),
            updated_at: now,
        };
        let state = current.map(|c| c.state.as_str()).unwrap_or("none");
        match (state, f.holds) {
            ("none" | "resolved", true) => {
                let mut next = if rule.hold_ms() == 0 { fresh("firing", Some(now)) } else { fresh("pending", None) };
                // The row's version moves on even within one millisecond.
                next.updated_at = current.map_or(now, |c| now.max(c.updated_at + 1));
                let kind = (next.state == "firing").then_some("firing");
                Some((Some(next), kind))
            }
            ("pending", false) => Some((None, None)),
            ("pending", true) => {
                let c = current?;
                (now - c.since >= rule.hold_ms()).then(|| {
                    let mut n = c.clone();
                    n.state = "firing".into();
                    n.fired_at = Some(now);
                    n.value = f.value.clone();
                    n.updated_at = now.max(c.updated_at + 1);
                    (Some(n), Some("firing"))
                })
            }
            ("firing", false) => {
                let c = current?;
                let mut n = c.clone();
                n.state = "resolved".into();
                n.resolved_at = Some(now);
                n.value = f.value.clone();
                n.updated_at = now.max(c.updated_at + 1);
                Some((Some(n), Some("resolved")))
            }
            ("firing", true) => {
                let c = current?;
                let every = self.config.alerts.reminder_minutes as i64 * 60_000;
                let last = c.reminded_at.or(c.fired_at).unwrap_or(c.since);
                (every > 0 && now - last >= every).then(|| {
                    let mut n = c.clone();
                    n.reminded_at = Some(now);
                    n.value = f.value.clone();
                    n.updated_at = now.max(c.updated_at + 1);
                    (Some(n), Some("reminder"))
                })
            }
            _ => None,
        }
    }

    /// The messages a transition owes, one per sink.
    fn messages(&self, rule: &Rule, st: &AlertStateRow, kind: &str, sinks: &[Sink], now: i64) -> Vec<AlertMessageRow> {
        let fired_at = st.fired_at.unwrap_or(st.since);
        let event_id = match kind {
            "reminder" => format!("{}/{}/reminder/{now}", rule.name, st.subject),
            _ => format!("{}/{}/{kind}/{fired_at}", rule.name, st.subject),
        };
        let title = rule.title(&st.subject);
        let text = match kind {
            "resolved" => format!(
                "✅ Resolved: {title}.\nIt lasted from {} to {} ({}). Now: {}.\nRule {}{}.",
                words_time(st.since),
                words_time(now),
                words_ms(now - st.since),
                st.value,
                rule.name,
                self.where_words()
            ),
            _ => format!(
                "🔴 {}: {title}.\nSince {} ({}). Now: {}. Threshold: {}.\nWhat to check: {}\nRule {}{}.",
                if kind == "reminder" { "Still firing" } else { "Alert" },
                words_time(st.since),
                words_ms(now - st.since),
                st.value,
                rule.threshold(),
                rule.hint(),
                rule.name,
                self.where_words()
            ),
        };
        let body = json!({
            "id": event_id,
            "type": format!("alert.{kind}"),
            "rule": rule.name,
            "condition": rule.condition,
            "subject": st.subject,
            "since": st.since,
            "resolved_at": st.resolved_at,
            "value": st.value,
            "threshold": rule.threshold(),
            "text": text,
        })
        .to_string();
        sinks
            .iter()
            .map(|s| message_row(&event_id, &rule.name, &st.subject, kind, s, text.clone(), body.clone(), now))
            .collect()
    }

    /// Sends the due messages of every sink kind this process can reach,
    /// each once per claim; returns how many were delivered.
    pub async fn send_due_alerts(&self, client: &reqwest::Client) -> Result<usize, StoreError> {
        let cfg = &self.config.alerts;
        let lease = (cfg.timeout_seconds.clamp(1, 600) * 1000 + 30_000) as i64;
        let sinks = sinks(cfg, None).unwrap_or_default();
        let mut delivered = 0;
        for kind in self.alert_sink_kinds() {
            let sender = self.alert_senders.read().expect("alert senders lock").get(&kind).cloned();
            let due = self.store.claim_alert_messages(&kind, station_store::now_ms(), lease, 20).await?;
            let sends = due.into_iter().map(|m| {
                let sender = sender.clone();
                let secret = sinks.iter().find(|s| s.name == m.sink).and_then(|s| s.secret.clone());
                async move {
                    let outcome = match &sender {
                        Some(s) => s.send(&m.target, &m.text).await,
                        None => post_webhook(client, &m, secret.as_deref()).await,
                    };
                    self.record_alert_attempt(&m, outcome).await
                }
            });
            delivered += futures::future::join_all(sends).await.into_iter().filter(|ok| *ok).count();
        }
        Ok(delivered)
    }

    async fn record_alert_attempt(&self, m: &AlertMessageRow, outcome: SendOutcome) -> bool {
        let cfg = &self.config.alerts;
        let now = station_store::now_ms();
        let backoff = (cfg.retry_base_ms as i64).saturating_mul(1 << m.attempts.clamp(1, 20).saturating_sub(1));
        let give_up = m.created_at + (cfg.give_up_hours as i64) * 3_600_000;
        let (state, error, next) = match outcome {
            SendOutcome::Sent => ("delivered", None, now),
            SendOutcome::Permanent(e) => ("failed", Some(e), now),
            SendOutcome::RetryAfter(d) => {
                let next = now + d.as_millis().min(3_600_000) as i64;
                (if next > give_up { "failed" } else { "pending" }, Some(format!("asked to wait {d:?}")), next)
            }
            SendOutcome::Transient(e) => {
                let next = now + backoff.min(3_600_000);
                (if next > give_up { "failed" } else { "pending" }, Some(e), next)
            }
        };
        match self.store.record_alert_message(&m.id, m.attempts, state, error.as_deref(), next, now).await {
            Ok(_) if state == "delivered" => info!(event = %m.event_id, sink = %m.sink, "alert message delivered"),
            Ok(_) => warn!(event = %m.event_id, sink = %m.sink, ?error, %state, "alert message not delivered"),
            Err(e) => warn!(message = %m.id, error = %e, "could not record an alert attempt; it is sent again"),
        }
        state == "delivered"
    }
}

#[allow(clippy::too_many_arguments)]
fn message_row(
    event_id: &str,
    rule: &str,
    subject: &str,
    kind: &str,
    sink: &Sink,
    text: String,
    body: String,
    now: i64,
) -> AlertMessageRow {
    AlertMessageRow {
        id: uuid::Uuid::now_v7().to_string(),
        event_id: event_id.to_string(),
        rule: rule.to_string(),
        subject: subject.to_string(),
        kind: kind.to_string(),
        sink: sink.name.clone(),
        sink_kind: sink.kind.clone(),
        target: sink.target.clone(),
        text,
        body,
        state: "pending".into(),
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
        delivered_at: None,
    }
}

/// Posts one message to a webhook sink: the JSON body, its event id, and
/// the account webhooks' signature when the sink has a secret.
async fn post_webhook(client: &reqwest::Client, m: &AlertMessageRow, secret: Option<&str>) -> SendOutcome {
    let mut req = client
        .post(&m.target)
        .header("content-type", "application/json")
        .header("user-agent", concat!("Station-Alerts/", env!("CARGO_PKG_VERSION")))
        .header("x-station-event-id", &m.event_id)
        .header("x-station-event", format!("alert.{}", m.kind));
    if let Some(secret) = secret {
        let t = station_store::now_ms() / 1000;
        req = req.header("x-station-signature", crate::webhooks::signature(secret, t, &m.body));
    }
    match req.body(m.body.clone()).send().await {
        Ok(r) if r.status().is_success() => SendOutcome::Sent,
        Ok(r) if r.status().as_u16() == 429 => {
            let wait = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(30);
            SendOutcome::RetryAfter(Duration::from_secs(wait))
        }
        Ok(r) => SendOutcome::Transient(format!("the receiver answered {}", r.status().as_u16())),
        Err(e) => SendOutcome::Transient(format!("could not reach it: {e}")),
    }
}

/// The HTTP client alert webhooks are sent with.
pub fn client(station: &Station) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = Duration::from_secs(station.config.alerts.timeout_seconds.clamp(1, 600));
    reqwest::Client::builder()
        .timeout(t)
        .connect_timeout(t)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client with rustls")
}

/// The running evaluator and sender; stop it with [`AlertsRunner::shutdown`].
pub struct AlertsRunner {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AlertsRunner {
    /// Stops evaluating and sending (a send in flight finishes first) and
    /// gives the evaluator's lease up.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts evaluating the rules (while this process holds the evaluator's
/// lease) and sending due messages. Register the chat senders first.
pub fn start(station: &Station) -> AlertsRunner {
    let stop = CancellationToken::new();
    let task = tokio::spawn(alert_loop(station.clone(), stop.clone()));
    AlertsRunner { stop, task }
}

async fn alert_loop(station: Station, stop: CancellationToken) {
    let owner = format!(
        "{}-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "station".into()),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let client = client(&station);
    let cfg = &station.config.alerts;
    let every = Duration::from_millis(cfg.evaluate_every_ms.clamp(100, 3_600_000));
    let tick = every.min(Duration::from_secs(1));
    let ttl = (every.as_millis() as i64 * 3).max(15_000);
    // Backends are "not checked yet" until their first health check ends.
    let health = &station.config.comfyui;
    let health_grace = Duration::from_secs(health.health_interval_seconds + health.health_timeout_seconds + 1);
    let started = tokio::time::Instant::now();
    let evaluates = !cfg.rules.is_empty();
    let mut next_evaluation = started;
    let mut holding = false;
    loop {
        if evaluates && tokio::time::Instant::now() >= next_evaluation {
            next_evaluation += every;
            match station.store.hold_lease(LEASE, &owner, station_store::now_ms(), ttl).await {
                Ok(held) => {
                    if held && !holding {
                        info!(%owner, "this process evaluates the alert rules");
                    }
                    holding = held;
                    if held && let Err(e) = station.evaluate_alerts(started.elapsed() >= health_grace).await {
                        warn!(error = %e, "could not evaluate the alert rules");
                    }
                }
                Err(e) => warn!(error = %e, "could not take the alert evaluator's lease"),
            }
        }
        if let Err(e) = station.send_due_alerts(&client).await {
            warn!(error = %e, "could not send alert messages");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    if holding && let Err(e) = station.store.release_lease(LEASE, &owner).await {
        warn!(error = %e, "could not give the alert evaluator's lease up; it lapses");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AlertRuleConfig, AlertSinkConfig};

    fn rule(kind: &str) -> AlertRuleConfig {
        AlertRuleConfig { kind: kind.into(), ..Default::default() }
    }

    #[test]
    fn rules_are_checked_field_by_field() {
        let mut c = AlertsConfig {
            rules: vec![
                AlertRuleConfig { minutes: Some(5.0), ..rule("backend_down") },
                AlertRuleConfig { percent: Some(150.0), minutes: Some(10.0), ..rule("failure_rate") },
                AlertRuleConfig { percent: Some(10.0), ..rule("backend_down") },
                rule("disk_space"),
                rule("chain_lag"),
                AlertRuleConfig { minutes: Some(5.0), ..rule("backend_down") },
            ],
            ..Default::default()
        };
        let errors = rules(&c).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect();
        let text = text.join("\n");
        assert!(text.contains("alerts.rules[1].percent: must be between 0 and 100"), "{text}");
        assert!(text.contains("alerts.rules[2].minutes: backend_down needs minutes"), "{text}");
        assert!(text.contains("alerts.rules[2].percent: backend_down does not take percent"), "{text}");
        assert!(text.contains("alerts.rules[3].kind: unknown rule kind \"disk_space\""), "{text}");
        assert!(text.contains("alerts.rules[4].blocks: chain_lag needs blocks, minutes or both"), "{text}");
        assert!(text.contains("alerts.rules[5].name: two rules are named \"backend_down\""), "{text}");
        c.rules = vec![
            AlertRuleConfig { minutes: Some(10.0), service: Some("comfyui".into()), ..rule("queue_age") },
            AlertRuleConfig { minutes: Some(10.0), ..rule("queue_age") },
        ];
        let names: Vec<String> = rules(&c).unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["queue_age:comfyui", "queue_age"]);
    }

    #[test]
    fn sinks_are_checked_against_the_kinds_that_can_be_sent() {
        let sink = |kind: &str, target: &str| AlertSinkConfig {
            kind: kind.into(),
            target: target.into(),
            ..Default::default()
        };
        let mut c = AlertsConfig {
            sinks: vec![sink("webhook", "http://a.example/x"), sink("webhook", "ftp://x"), sink("telegram", "-100")],
            ..Default::default()
        };
        let errors = sinks(&c, Some(&[])).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].field == "alerts.sinks[1].target");
        assert!(errors[1].reason.contains("no telegram bot is configured to send telegram sinks"), "{errors:?}");
        c.sinks =
            vec![sink("webhook", "http://a.example/x"), sink("webhook", "http://b.example/"), sink("telegram", "-1")];
        let names: Vec<String> = sinks(&c, Some(&["telegram".into()])).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["webhook", "webhook-2", "telegram"]);
    }

    #[test]
    fn failure_rate_needs_enough_jobs_and_queue_age_exceeds_its_minutes() {
        // One failure of one job does not page.
        let f = failure_findings(20.0, 10, None, &[("comfyui".into(), 1, 1)]);
        assert!(!f[0].holds);
        let f = failure_findings(20.0, 10, None, &[("comfyui".into(), 10, 3), ("media".into(), 10, 2)]);
        assert_eq!((f[0].holds, f[1].holds), (true, false), "30 % fires, exactly 20 % does not");
        assert_eq!(f[0].value, "30 % failed (3 of 10 jobs)");
        let f = failure_findings(20.0, 10, Some("media"), &[("comfyui".into(), 10, 3), ("media".into(), 10, 5)]);
        assert_eq!(f.len(), 1);
        let now = 10 * 60_000;
        let q = queue_findings(5.0, None, &[("comfyui".into(), 0), ("media".into(), now - 60_000)], now);
        assert_eq!((q[0].holds, q[1].holds), (true, false));
        assert_eq!(q[0].value, "the oldest queued job has waited 10 min");
    }

    #[test]
    fn chain_lag_fires_on_blocks_or_time() {
        let lags = [
            ChainLag { chain: "base".into(), blocks_behind: 60, seconds_behind: 30 },
            ChainLag { chain: "eth".into(), blocks_behind: 2, seconds_behind: 900 },
            ChainLag { chain: "op".into(), blocks_behind: 2, seconds_behind: 30 },
        ];
        let f = chain_findings(Some(50), Some(10.0), None, &lags);
        assert_eq!(f.iter().map(|f| f.holds).collect::<Vec<_>>(), [true, true, false]);
        let f = chain_findings(Some(50), None, Some("eth"), &lags);
        assert_eq!((f.len(), f[0].holds), (1, false));
    }

    #[test]
    fn rules_and_sinks_come_from_the_environment_as_json() {
        let env = [
            ("STATION_ALERTS_RULES", r#"[{"kind": "disk_free", "percent": 5}]"#),
            ("STATION_ALERTS_SINKS", r#"[{"kind": "webhook", "target": "https://ops.example/h"}]"#),
            ("STATION_ALERTS_EVALUATE_EVERY_MS", "1000"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = crate::Config::load_with_env(None, &[], env).unwrap();
        assert_eq!(c.alerts.evaluate_every_ms, 1000);
        assert_eq!(rules(&c.alerts).unwrap()[0].condition, Condition::DiskFree { percent: 5.0 });
        assert_eq!(sinks(&c.alerts, Some(&[])).unwrap()[0].target, "https://ops.example/h");
        let bad = [("STATION_ALERTS_RULES".to_string(), r#"[{"kind": "disk_free", "percnt": 5}]"#.to_string())];
        let err = crate::Config::load_with_env(None, &[], bad).unwrap_err().to_string();
        assert!(err.contains("percnt"), "{err}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(words_ms(40_000), "40 s");
        assert_eq!(words_ms(6 * 60_000 + 5000), "6 min");
        assert_eq!(words_ms(3_600_000), "1 h");
        assert_eq!(words_ms(2 * 3_600_000 + 5 * 60_000), "2 h 5 min");
        assert_eq!(words_ms(3 * 86_400_000 + 4 * 3_600_000), "3 d 4 h");
        assert_eq!(words_time(0), "1970-01-01 00:00 UTC");
    }
}
