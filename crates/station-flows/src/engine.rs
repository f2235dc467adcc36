//! The flow engine: routes input to flow instances, applies transitions one
//! at a time per conversation, and stores each transition (state, minted
//! buttons, outgoing messages) in one transaction before anything is sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Value, json};
use station_core::Station;
use station_core::conversations::{CardRetire, DeliveryRow, FlowInstanceRow, Transition};
use station_core::{AccountRow, now_ms};

use crate::flow::{CardOffer, Cx, Flow, FlowError, Next, Out, Start, StepInput};
use crate::input::InputKey;
use crate::outbox::{DELIVERY_REF, mint_view, new_delivery};
use crate::platform::{Conversation, DeliveryKind, Input, Platform};
use crate::view::{Rich, View};

/// What an adapter may tell the person at once (Telegram's callback answer,
/// Discord's ephemeral note) besides the messages that follow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// Short text.
    pub toast: Option<String>,
}

impl Reply {
    fn toast(s: impl Into<String>) -> Reply {
        Reply { toast: Some(s.into()) }
    }
}

/// Handles buttons that belong to no flow step: they act on a job or start
/// a flow, so they keep working after the flow that showed them moved on.
/// The engine dispatches to it; [`crate::results`] implements it.
#[async_trait::async_trait]
pub trait StandaloneActions: Send + Sync {
    /// Runs action `name` with `args` for `account` in `conv`, on behalf of the input named by `key`.
    async fn run(
        &self,
        flows: &Flows,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        name: &str,
        args: Value,
    ) -> Result<Reply, FlowError>;
}

/// An entry of a platform's command menu.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    /// Command name without the slash.
    pub name: String,
    /// One line.
    pub description: String,
    /// The tool behind it, for tool commands (platforms build typed options from its inputs).
    pub tool: Option<Arc<station_core::tools::ToolDef>>,
    /// The spell behind it (its slug), for a public spell offered as a
    /// command of its own (`spells.commands`): it takes a prompt.
    pub spell: Option<String>,
}

/// The public spells offered as commands, as last read
/// ([`Flows::refresh_spell_commands`]).
#[derive(Debug, Default)]
pub(crate) struct SpellMenu {
    commands: Vec<CommandInfo>,
    /// Slugs left out because their command was taken, as last logged.
    skipped: Vec<String>,
}

/// The conversation engine shared by every platform adapter. Cheap to clone.
#[derive(Clone)]
pub struct Flows {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) station: Station,
    pub(crate) flows: HashMap<&'static str, Arc<dyn Flow>>,
    /// Buttons that belong to no flow step (result actions, menu shortcuts).
    pub(crate) actions: Arc<dyn StandaloneActions>,
    pub(crate) platforms: RwLock<HashMap<String, Arc<dyn Platform>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Wakes the delivery service when something was written.
    pub(crate) outbox: tokio::sync::Notify,
    /// This process's name for delivery leases.
    pub(crate) owner: String,
    pub(crate) settings: FlowSettings,
    pub(crate) spell_menu: RwLock<SpellMenu>,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct FlowSettings {
    /// Instances with no input for this long are closed with a message.
    pub idle_ms: i64,
    /// Minimum time between two progress edits of one message.
    pub progress_every_ms: i64,
    /// Base URL of the web app, for `/web` login links.
    pub public_url: String,
}

impl FlowSettings {
    /// Settings from Station's configuration (`[flows]`, the public URL).
    pub fn from_config(config: &station_core::Config) -> FlowSettings {
        FlowSettings {
            idle_ms: (config.flows.idle_minutes.max(1) * 60_000).min(i64::MAX as u64) as i64,
            progress_every_ms: config.flows.progress_every_ms.min(i64::MAX as u64) as i64,
            public_url: config.public_url(),
        }
    }
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings { idle_ms: 30 * 60 * 1000, progress_every_ms: 2000, public_url: "http://127.0.0.1:8480".into() }
    }
}

/// Built-in commands that are not tools.
const BUILTIN_COMMANDS: &[&str] = &[
    "start",
    "help",
    "make",
    "settings",
    "status",
    "history",
    "balance",
    "loras",
    "train",
    "spells",
    "cast",
    "collections",
    "cook",
    "link",
    "web",
];

/// Built-in commands of a feature behind a flag (`station flags`): listed
/// only for accounts the feature is on for.
const FEATURE_COMMANDS: &[(&str, &str)] = &[
    ("train", "training"),
    ("spells", "spells"),
    ("cast", "spells"),
    ("collections", "collections"),
    ("cook", "cook"),
    ("wallet", "wallets"),
    ("deposit", "wallets"),
];
/// Operator commands, listed only for admins (their flows are `admin_only`).
const ADMIN_COMMANDS: &[&str] = &["queue", "grant", "flags"];

impl Flows {
    /// An engine with these flows (by name) and standalone action handler.
    /// `station_flows::Flows::new` and friends (in [`crate::flows`]) give it
    /// the built-in flows and result actions.
    pub(crate) fn assemble(
        station: Station,
        settings: FlowSettings,
        flows: Vec<Arc<dyn Flow>>,
        actions: Arc<dyn StandaloneActions>,
    ) -> Flows {
        let flows = flows.into_iter().map(|f| (f.name(), f)).collect();
        Flows {
            inner: Arc::new(Inner {
                station,
                flows,
                actions,
                platforms: Default::default(),
                locks: Default::default(),
                outbox: tokio::sync::Notify::new(),
                owner: format!("flows-{}", uuid::Uuid::new_v4().simple()),
                settings,
                spell_menu: Default::default(),
            }),
        }
    }

    /// The core.
    pub fn station(&self) -> &Station {
        &self.inner.station
    }

    /// Engine settings.
    pub fn settings(&self) -> &FlowSettings {
        &self.inner.settings
    }

    /// Registers a platform adapter; its deliveries are sent by the delivery service.
    pub fn add_platform(&self, platform: Arc<dyn Platform>) {
        self.inner.platforms.write().expect("platforms lock").insert(platform.name().to_string(), platform);
        self.inner.outbox.notify_one();
    }

    /// The command menu: built-ins, then every tool the account may see.
    pub fn commands(&self, account: Option<&AccountRow>) -> Vec<CommandInfo> {
        let no_chains = self.inner.station.wallet_chains().is_empty();
        let feature_off = |name: &str| {
            let feature = FEATURE_COMMANDS.iter().find(|(c, _)| *c == name).map(|(_, f)| *f);
            // Wallet commands only where crypto payments are set up.
            if feature == Some("wallets") && no_chains {
                return true;
            }
            match (feature, account) {
                (Some(f), Some(a)) => !self.inner.station.flag_on(f, &station_core::flags::FlagSubject::account(a)),
                _ => false,
            }
        };
        let mut out: Vec<CommandInfo> = BUILTIN_COMMANDS
            .iter()
            .filter(|name| !feature_off(name))
            .map(|name| CommandInfo {
                name: name.to_string(),
                description: self.inner.flows.get(name).map(|f| f.description()).unwrap_or("").to_string(),
                tool: None,
                spell: None,
            })
            .collect();
        out.push(CommandInfo {
            name: "cancel".into(),
            description: "Stop what you are doing".into(),
            tool: None,
            spell: None,
        });
        let admin = account.is_some_and(AccountRow::is_admin);
        if admin {
            out.extend(ADMIN_COMMANDS.iter().filter_map(|name| {
                let f = self.inner.flows.get(name)?;
                Some(CommandInfo {
                    name: name.to_string(),
                    description: f.description().to_string(),
                    tool: None,
                    spell: None,
                })
            }));
        }
        // Listed tools only: a tool with a model input waits for a backend that has one.
        let tools = match account {
            Some(a) => self.inner.station.listed_tools_for(a),
            None => self.inner.station.listed_tools(false),
        };
        for tool in tools {
            let taken = BUILTIN_COMMANDS.contains(&tool.command.as_str())
                || (admin && ADMIN_COMMANDS.contains(&tool.command.as_str()));
            if !taken && tool.command != "cancel" {
                out.push(CommandInfo {
                    name: tool.command.clone(),
                    description: tool.name.clone(),
                    tool: Some(tool),
                    spell: None,
                });
            }
        }
        // Public spells as commands, as last read, where spells are on.
        if !feature_off("cast") {
            let menu = self.inner.spell_menu.read().expect("spell menu lock");
            let spells: Vec<CommandInfo> =
                menu.commands.iter().filter(|c| !out.iter().any(|o| o.name == c.name)).cloned().collect();
            out.extend(spells);
        }
        out
    }

    /// Whether `name` is a command already — a built-in or operator
    /// command, a flow, a tool's id or command, or a configured alias — so
    /// no spell may have it.
    pub fn command_taken(&self, name: &str) -> bool {
        let station = &self.inner.station;
        name == "cancel"
            || BUILTIN_COMMANDS.contains(&name)
            || ADMIN_COMMANDS.contains(&name)
            || FEATURE_COMMANDS.iter().any(|(c, _)| *c == name)
            || self.inner.flows.contains_key(name)
            || station.tools.get(name).is_some()
            || station.tools.by_command(name).is_some()
            || station.config.commands.contains_key(name)
    }

    /// The command a public spell is offered as (`spells.commands`): its
    /// slug with `-` written `_` (Telegram's commands take only `a-z`,
    /// `0-9` and `_`), or why it is not offered (the name is taken).
    pub fn spell_command(&self, slug: &str) -> Result<String, String> {
        let name = slug.replace('-', "_");
        if self.command_taken(&name) { Err(format!("/{name} is already a command")) } else { Ok(name) }
    }

    /// Re-reads the public spells offered as commands (none unless the
    /// operator set `spells.commands`) for [`Flows::commands`]; a spell whose
    /// command is taken is left out and said in the log (once, until the
    /// list changes). Adapters call it before they register their menus.
    pub async fn refresh_spell_commands(&self) -> Result<(), station_core::StoreError> {
        let spells = self.inner.station.spell_commands().await?;
        let mut commands = vec![];
        let mut skipped = vec![];
        for s in spells {
            match self.spell_command(&s.slug) {
                Ok(name) => {
                    let chain = s.steps.iter().map(|x| x.tool_name.clone()).collect::<Vec<_>>().join(" → ");
                    commands.push(CommandInfo {
                        name,
                        description: format!("✨ {} ({chain})", s.name),
                        tool: None,
                        spell: Some(s.slug),
                    });
                }
                Err(why) => skipped.push((s.slug, why)),
            }
        }
        let mut menu = self.inner.spell_menu.write().expect("spell menu lock");
        let names: Vec<String> = skipped.iter().map(|(s, _)| s.clone()).collect();
        if names != menu.skipped {
            for (slug, why) in &skipped {
                tracing::warn!(spell = %slug, "public spell not offered as a chat command: {why}; /cast {slug} still casts it");
            }
        }
        menu.skipped = names;
        menu.commands = commands;
        Ok(())
    }

    /// How people talk in a conversation's platform ([`Platform::style`]).
    pub fn style_of(&self, conv: &Conversation) -> crate::platform::ChatStyle {
        self.inner.platforms.read().expect("platforms lock").get(&conv.platform).map(|p| p.style()).unwrap_or_default()
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().expect("locks");
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.to_string()).or_default().clone()
    }

    /// [`Flows::handle`] for an input the adapter can name (`telegram:<bot>:<update>`,
    /// `discord:<interaction>`) and may hand over again after a crash. The
    /// key is stored in the same transaction as the transition or message the
    /// input causes, and jobs it submits are keyed by it ([`job_key`]); an
    /// input whose key is stored already returns at once, changing nothing.
    /// Processed again after a crash between its submit and its transition,
    /// it finds its job instead of queueing (and charging) a second one.
    pub async fn handle_once(
        &self,
        key: &str,
        account: &AccountRow,
        conv: &Conversation,
        input: Input,
    ) -> Result<Reply, FlowError> {
        if self.input_handled(key).await? {
            station_core::telemetry::chat_update(&conv.platform, "duplicate");
            return Ok(Reply::default());
        }
        let reply = self.handle_keyed(&InputKey::new(key), account, conv, input).await;
        station_core::telemetry::chat_update(&conv.platform, if reply.is_ok() { "handled" } else { "error" });
        reply
    }

    /// [`Flows::notice`] once per input key (see [`Flows::handle_once`]): an
    /// adapter's own answer to an input it could not hand to a flow.
    pub async fn notice_once(
        &self,
        key: &str,
        account: &AccountRow,
        conv: &Conversation,
        view: View,
    ) -> Result<(), FlowError> {
        if self.input_handled(key).await? {
            return Ok(());
        }
        self.notice_keyed(&InputKey::new(key), account, conv, view).await
    }

    /// Whether the input with this key already had its effect.
    pub async fn input_handled(&self, key: &str) -> Result<bool, FlowError> {
        Ok(self.inner.station.conversations().input_handled(key).await?)
    }

    /// Handles one input from a person in a conversation. Inputs for one
    /// conversation are applied one after the other; a button from a step
    /// that is already over is answered with a toast and changes nothing.
    pub async fn handle(&self, account: &AccountRow, conv: &Conversation, input: Input) -> Result<Reply, FlowError> {
        self.handle_keyed(&InputKey::none(), account, conv, input).await
    }

    async fn handle_keyed(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        input: Input,
    ) -> Result<Reply, FlowError> {
        // The same per-account token bucket as the API (`limits.requests_per_minute`).
        if let Err(limited) = self.inner.station.check_rate(account) {
            let text = format!("You're going a bit fast. Please wait {} s and try again.", limited.retry_after_secs());
            if !matches!(input, Input::Action { .. }) {
                self.notice_keyed(key, account, conv, View::text(text.clone())).await?;
            }
            return Ok(Reply::toast(text));
        }
        // The operator may switch a platform off (for some or all) with its flag.
        if !self.inner.station.platform_on(&conv.platform, account, conv.group.as_deref()).await {
            let text = format!(
                "Station is switched off on {} for you right now. Please try again later.",
                crate::platform::platform_title(&conv.platform)
            );
            if !matches!(input, Input::Action { .. }) {
                self.notice_keyed(key, account, conv, View::text(text.clone())).await?;
            }
            return Ok(Reply::toast(text));
        }
        // A new account sees its starting points in /status, /balance and
        // the first price before any job (memoised: free after the first input).
        self.inner.station.ensure_starting_grant(&account.id).await?;
        let lock = self.lock_for(&format!("{}|{}", conv.key(), account.id));
        let _guard = lock.lock().await;
        let reply = self.handle_locked(key, account, conv, input).await;
        if let Err(e) = &reply {
            tracing::warn!(conversation = %conv.key(), error = %e, "a chat input failed");
        }
        self.inner.outbox.notify_one();
        reply
    }

    async fn handle_locked(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        input: Input,
    ) -> Result<Reply, FlowError> {
        match input {
            Input::Command { name, text, images, params } => {
                let name = name.trim_start_matches('/').split('@').next().unwrap_or("").to_lowercase();
                let start = Start { text, images, params, args: Value::Null };
                self.run_command(key, account, conv, &name, start).await
            }
            Input::Action { token } => {
                let Some(action) = self.inner.station.conversations().action(&token).await? else {
                    return Ok(Reply::toast("This button has expired."));
                };
                if action.account_id != account.id {
                    return Ok(Reply::toast("This button belongs to someone else's request."));
                }
                let args: Value = serde_json::from_str(&action.args).unwrap_or(Value::Null);
                match action.instance_id {
                    None => self.inner.actions.run(self, key, account, conv, &action.name, args).await,
                    Some(instance_id) => {
                        let current = self.inner.station.conversations().get(&instance_id).await?;
                        match current {
                            Some(inst) if inst.status == "active" && Some(inst.rev) == action.rev => {
                                self.step_input(key, account, conv, inst, StepInput::Action { name: action.name, args })
                                    .await
                            }
                            _ => Ok(Reply::toast("That step is over: the conversation has moved on.")),
                        }
                    }
                }
            }
            Input::Text { text } => self.to_active(key, account, conv, StepInput::Text(text)).await,
            Input::Images { media } => self.to_active(key, account, conv, StepInput::Images(media)).await,
            Input::Form { values, token } => {
                if let Some(token) = token
                    && let Some(action) = self.inner.station.conversations().action(&token).await?
                    && action.instance_id.is_none()
                    && action.account_id == account.id
                {
                    // A form opened by a standalone button (Discord modal for "tweak").
                    let args = json!({"form": values, "args": serde_json::from_str::<Value>(&action.args).ok()});
                    let name = format!("{}_form", action.name);
                    return self.inner.actions.run(self, key, account, conv, &name, args).await;
                }
                self.to_active(key, account, conv, StepInput::Form(values)).await
            }
        }
    }

    async fn to_active(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        input: StepInput,
    ) -> Result<Reply, FlowError> {
        match self.inner.station.conversations().active(&conv.key(), &account.id).await? {
            Some(inst) => self.step_input(key, account, conv, inst, input).await,
            None => {
                let hint = match (input, self.style_of(conv)) {
                    (StepInput::Images(_), crate::platform::ChatStyle::Terminal) => {
                        "To use a picture, put its path after a command (for example /upscale @photo.png)."
                    }
                    (StepInput::Images(_), _) => {
                        "To use a photo, send it with a command as its caption (for example /upscale), or reply to \
                         it with the command."
                    }
                    _ => "Send /make to create something, or /help to see what I can do.",
                };
                self.notice_keyed(key, account, conv, View::text(hint)).await?;
                Ok(Reply::default())
            }
        }
    }

    /// Starts the flow behind a command (built-in flows and tool commands).
    pub(crate) async fn run_command(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        name: &str,
        mut start: Start,
    ) -> Result<Reply, FlowError> {
        if name == "cancel" {
            return self.cancel_active(key, account, conv).await;
        }
        // Operator flows do not exist for anyone else (a tool may use the name).
        let runnable = self.inner.flows.get(name).is_some_and(|f| !f.admin_only() || account.is_admin());
        let flow_name = if runnable && name != "make" {
            name.to_string()
        } else if name == "make" {
            "make".to_string()
        } else if let Some(tool) = self.inner.station.find_tool(name, account) {
            start.args = json!({"tool": tool.id});
            "make".to_string()
        } else if let Some(slug) = self.public_spell_command(account, name).await? {
            // `/<slug> prompt…`: the cast flow with the spell chosen.
            start.args = json!({"spell": slug});
            "cast".to_string()
        } else {
            return self.unknown_command(key, account, conv, name).await;
        };
        self.start_flow_keyed(key, account, conv, &flow_name, start).await
    }

    /// The public spell `name` casts as a command of its own, when the
    /// operator offers spells as commands and the name is no other command
    /// (`big_dream` and `big-dream` both name `big-dream`).
    async fn public_spell_command(&self, account: &AccountRow, name: &str) -> Result<Option<String>, FlowError> {
        let station = &self.inner.station;
        if !station.config.spells.commands
            || !station.flag_on("spells", &station_core::flags::FlagSubject::account(account))
        {
            return Ok(None);
        }
        let slug = name.replace('_', "-");
        let Some(spell) = station.spell(account, &slug).await? else { return Ok(None) };
        let offered = spell.visibility == station_core::spells::SpellVisibility::Public
            && self.spell_command(&spell.slug).is_ok_and(|n| n == name.replace('-', "_"));
        Ok(offered.then_some(spell.slug))
    }

    /// Starts a flow by name (replacing the conversation's active flow).
    pub async fn start_flow(
        &self,
        account: &AccountRow,
        conv: &Conversation,
        flow_name: &str,
        start: Start,
    ) -> Result<Reply, FlowError> {
        self.start_flow_keyed(&InputKey::none(), account, conv, flow_name, start).await
    }

    /// [`Flows::start_flow`] on behalf of the input named by `key`.
    pub(crate) async fn start_flow_keyed(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        flow_name: &str,
        start: Start,
    ) -> Result<Reply, FlowError> {
        let flow = self.flow(flow_name)?;
        if flow.admin_only() && !account.is_admin() {
            // A button or stale menu reaching an operator flow: as unknown as the command.
            return self.unknown_command(key, account, conv, flow_name).await;
        }
        let instance_id = uuid::Uuid::now_v7().to_string();
        let cx = Cx {
            station: &self.inner.station,
            account,
            conversation: conv,
            instance_id: &instance_id,
            flows: self,
            input: key,
            card: CardOffer::default(),
        };
        let next = flow.start(&cx, start).await?;
        let now = now_ms();
        let fresh = FlowInstanceRow {
            id: instance_id.clone(),
            account_id: account.id.clone(),
            conversation: conv.key(),
            conv_json: serde_json::to_string(conv).expect("conversation serialises"),
            flow: flow_name.to_string(),
            flow_version: flow.version(),
            step: String::new(),
            state: "{}".into(),
            history: "[]".into(),
            rev: 0,
            status: "active".into(),
            created_at: now,
            updated_at: now,
        };
        self.apply(&cx, flow.as_ref(), fresh, None, next, false).await
    }

    async fn unknown_command(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        name: &str,
    ) -> Result<Reply, FlowError> {
        let text = Rich::plain("Unknown command ").code(format!("/{name}")).text(". Send /help for the list.");
        self.notice_keyed(key, account, conv, View::text(text)).await?;
        Ok(Reply::default())
    }

    /// Whether the command's answer is private to its asker ([`Flow::private`]):
    /// adapters that answer before the flow runs (Discord's deferred
    /// response) make that first answer private too.
    pub fn answers_privately(&self, command: &str) -> bool {
        let name = command.trim_start_matches('/').split('@').next().unwrap_or("").to_lowercase();
        self.inner.flows.get(name.as_str()).is_some_and(|f| f.private())
    }

    /// Whether the command's answer is only for its asker
    /// ([`Flow::personal`] or [`Flow::private`]): adapters with ephemeral
    /// messages defer it ephemerally.
    pub fn answers_personally(&self, command: &str) -> bool {
        let name = command.trim_start_matches('/').split('@').next().unwrap_or("").to_lowercase();
        self.inner.flows.get(name.as_str()).is_some_and(|f| f.private() || f.personal())
    }

    fn flow(&self, name: &str) -> Result<Arc<dyn Flow>, FlowError> {
        self.inner.flows.get(name).cloned().ok_or_else(|| FlowError::UnknownFlow(name.to_string()))
    }

    async fn cancel_active(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
    ) -> Result<Reply, FlowError> {
        let store = self.inner.station.conversations();
        match store.active(&conv.key(), &account.id).await? {
            Some(inst) => {
                let out =
                    Out { view: View::text("Cancelled.").personal(), kind: DeliveryKind::Notice, dedupe_key: None };
                let d = new_delivery(conv, &account.id, &out);
                let retire = self.retire_card(conv, &inst.id).await?;
                store
                    .end(&inst.id, inst.rev, "cancelled", &[d], &retire, key.next_write().as_deref(), now_ms())
                    .await?;
                Ok(Reply::toast("Cancelled"))
            }
            None => {
                let text = "Nothing to cancel here. To stop a running job, open /status and press Cancel.";
                self.notice_keyed(key, account, conv, View::text(text)).await?;
                Ok(Reply::default())
            }
        }
    }

    async fn step_input(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        inst: FlowInstanceRow,
        input: StepInput,
    ) -> Result<Reply, FlowError> {
        let flow = self.flow(&inst.flow)?;
        let instance_id = inst.id.clone();
        let kind = input.kind();
        // A button on the card was pressed (or, where people answer only
        // through interactions, a form it opened was sent): the card changes
        // in place. Something written into the chat gets a new card below it.
        let in_place =
            kind == crate::flow::Accepts::Action || self.style_of(conv) == crate::platform::ChatStyle::Interactions;
        let card = if in_place { self.card_offer(flow.as_ref(), &inst.id).await? } else { None };
        let cx = Cx {
            station: &self.inner.station,
            account,
            conversation: conv,
            instance_id: &instance_id,
            flows: self,
            input: key,
            card: CardOffer::new(card),
        };
        let mut inst = inst;
        if inst.flow_version != flow.version() {
            let state: Value = serde_json::from_str(&inst.state).unwrap_or(Value::Null);
            match flow.upgrade(inst.flow_version, &inst.step, state) {
                Some((step, state)) => {
                    inst.step = step;
                    inst.state = state.to_string();
                    inst.flow_version = flow.version();
                }
                None => {
                    let view = View::text(format!(
                        "Station was updated and this /{} conversation cannot continue. Please start again with /{}.",
                        inst.flow, inst.flow
                    ));
                    let out = Out { view, kind: DeliveryKind::Notice, dedupe_key: None };
                    let d = new_delivery(conv, &account.id, &out);
                    let write = key.next_write();
                    let retire = self.retire_card(conv, &inst.id).await?;
                    self.inner
                        .station
                        .conversations()
                        .end(&inst.id, inst.rev, "ended", &[d], &retire, write.as_deref(), now_ms())
                        .await?;
                    return Ok(Reply::default());
                }
            }
        }
        let state: Value = serde_json::from_str(&inst.state).unwrap_or(Value::Null);
        let spec = flow.steps().iter().find(|s| s.id == inst.step);
        if kind != crate::flow::Accepts::Action
            && let Some(spec) = spec
            && !spec.accepts.contains(&kind)
        {
            let expects = describe_accepts(spec.accepts);
            let next = Next::Invalid(format!("This step expects {expects}."));
            return self.apply(&cx, flow.as_ref(), inst.clone(), Some(inst.rev), next, in_place).await;
        }
        let next = match input {
            StepInput::Action { name, .. } if name == "back" => Next::Back,
            StepInput::Action { name, .. } if name == "cancel" => Next::Cancel,
            input => flow.input(&cx, &inst.step, &state, input).await?,
        };
        let rev = inst.rev;
        self.apply(&cx, flow.as_ref(), inst, Some(rev), next, in_place).await
    }

    /// Applies a transition and stores it with the messages it sends. Loops
    /// while `before_step` hooks redirect. The step's view is the flow's
    /// card (one message, [`card_key`]): edited `in_place`, else sent anew
    /// below while the old card loses its buttons.
    async fn apply(
        &self,
        cx: &Cx<'_>,
        flow: &dyn Flow,
        mut inst: FlowInstanceRow,
        expected_rev: Option<i64>,
        mut next: Next,
        in_place: bool,
    ) -> Result<Reply, FlowError> {
        let store = self.inner.station.conversations();
        let now = now_ms();
        let from = inst.step.clone();
        let mut history: Vec<(String, Value)> = serde_json::from_str(&inst.history).unwrap_or_default();
        let mut notes: Vec<Out> = vec![];
        let mut hops = 0;
        loop {
            hops += 1;
            if hops > 32 {
                return Err(FlowError::Redirects(flow.name()));
            }
            let state_now: Value = serde_json::from_str(&inst.state).unwrap_or(Value::Null);
            match next {
                Next::Goto(step, state) => {
                    if !inst.step.is_empty() {
                        history.push((inst.step.clone(), state_now));
                    }
                    inst.step = step;
                    inst.state = state.to_string();
                }
                Next::Stay(state) => inst.state = state.to_string(),
                Next::Invalid(msg) => {
                    tracing::debug!(flow = flow.name(), step = %inst.step, reason = %msg, "input refused");
                    notes.push(Out {
                        view: View::text(format!("⚠ {msg}")).personal(),
                        kind: DeliveryKind::Notice,
                        dedupe_key: None,
                    });
                    if inst.step.is_empty() {
                        // Refused while starting (an over-long prompt after a
                        // tool command): there is no step to stay in, so the
                        // flow ends with the reason instead of waiting in none.
                        return self.finish(cx, flow, inst, expected_rev, "ended", notes, now, in_place).await;
                    }
                }
                Next::Back => match history.pop() {
                    Some((step, state)) => {
                        inst.step = step;
                        inst.state = state.to_string();
                    }
                    None => notes.push(Out {
                        view: View::text("⚠ This is the first step; there is nothing to go back to."),
                        kind: DeliveryKind::Notice,
                        dedupe_key: None,
                    }),
                },
                Next::Cancel => {
                    notes.push(Out {
                        view: View::text("Cancelled.").personal(),
                        kind: DeliveryKind::Notice,
                        dedupe_key: None,
                    });
                    return self.finish(cx, flow, inst, expected_rev, "cancelled", notes, now, in_place).await;
                }
                Next::Finish(outs) => {
                    notes.extend(outs);
                    if flow.private() {
                        notes.iter_mut().for_each(|n| n.view.private = true);
                    }
                    if flow.personal() {
                        notes.iter_mut().for_each(|n| n.view.personal = true);
                    }
                    return self.finish(cx, flow, inst, expected_rev, "finished", notes, now, in_place).await;
                }
            }
            let state: Value = serde_json::from_str(&inst.state).unwrap_or(Value::Null);
            match flow.before_step(cx, &inst.step, &state).await? {
                Some(redirect) => next = redirect,
                None => break,
            }
        }
        if !flow.steps().iter().any(|s| s.id == inst.step) {
            // Nothing is stored: the conversation stays where it was.
            return Err(FlowError::UnknownStep(flow.name(), inst.step.clone()));
        }
        let state: Value = serde_json::from_str(&inst.state).unwrap_or(Value::Null);
        let mut view = flow.view(cx, &inst.step, &state).await?;
        if flow.private() {
            // Everything a private flow says is for its asker alone.
            view.private = true;
            notes.iter_mut().for_each(|n| n.view.private = true);
        }
        if flow.personal() {
            view.personal = true;
        }
        // Refusals and notes are for the asker.
        notes.iter_mut().filter(|n| n.kind == DeliveryKind::Notice).for_each(|n| n.view.personal = true);
        inst.rev += 1;
        inst.history = serde_json::to_string(&history).expect("history serialises");
        inst.updated_at = now;
        let mut actions = mint_view(&mut view, &cx.account.id, Some((&inst.id, inst.rev)), now);
        let mut deliveries = vec![];
        for mut note in notes {
            actions.extend(mint_view(&mut note.view, &cx.account.id, None, now));
            deliveries.push(new_delivery(cx.conversation, &cx.account.id, &note));
        }
        let mut retire = vec![];
        let card = (!flow.private()).then(|| card_key(&inst.id));
        match expected_rev {
            // A new flow replaces the conversation's open one: that card's buttons go.
            None => {
                if let Some(old) = store.active(&cx.conversation.key(), &cx.account.id).await? {
                    retire.extend(self.retire_card(cx.conversation, &old.id).await?);
                }
            }
            Some(_) if card.is_some() => {
                if let Some(row) = store.delivery_by_key(&card_key(&inst.id)).await? {
                    if row.status == "failed" || cx.card.taken().is_some() {
                        // It never reached the chat, or a job submitted here
                        // took it over: the next card is a new message.
                        retire.push(card_moved_aside(&inst.id, &row));
                    } else if !in_place && card_shown(&row) {
                        retire.extend(self.retire_card(cx.conversation, &inst.id).await?);
                    }
                }
            }
            Some(_) => {}
        }
        deliveries.push(new_delivery(
            cx.conversation,
            &cx.account.id,
            &Out { view, kind: DeliveryKind::Message, dedupe_key: card },
        ));
        let t = Transition {
            instance: inst.clone(),
            expected_rev,
            actions,
            deliveries,
            input_key: cx.input.next_write(),
            retire,
        };
        if !store.save_transition(&t, now).await? {
            return Ok(Reply::toast("That arrived after the conversation moved on; nothing changed."));
        }
        flow.after_step(cx, &from, &inst.step, &state).await;
        Ok(Reply::default())
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        cx: &Cx<'_>,
        flow: &dyn Flow,
        inst: FlowInstanceRow,
        expected_rev: Option<i64>,
        status: &str,
        mut notes: Vec<Out>,
        now: i64,
        in_place: bool,
    ) -> Result<Reply, FlowError> {
        let store = self.inner.station.conversations();
        // The flow's card: taken over by the job this press submitted (its
        // progress message, then its result), or pressed to an end it shows
        // the first thing the end says; otherwise it stays as it was,
        // without buttons.
        let mut retire = vec![];
        let mut takeover = None;
        if expected_rev.is_some()
            && !flow.private()
            && let Some(row) = store.delivery_by_key(&card_key(&inst.id)).await?
        {
            let card: Option<View> = serde_json::from_str(&row.view).ok();
            let card_personal = card.as_ref().is_some_and(|v| v.personal || v.private);
            // Shown, or being sent now (its message is known by the time
            // anything written here is sent: a conversation's deliveries go
            // one at a time).
            let sent = card_shown(&row);
            match (cx.card.taken(), notes.first_mut()) {
                (Some(id), first) => {
                    // The job's source names the card since it was submitted,
                    // so its events may have shown its progress there already
                    // (see `Flows::card_offer`); the card's key moves aside.
                    if first.is_some_and(|f| f.kind == DeliveryKind::Progress && f.dedupe_key.is_some()) {
                        takeover = Some(format!("{DELIVERY_REF}{id}"));
                    }
                    retire.push(card_moved_aside(&inst.id, &row));
                }
                (None, Some(first))
                    if in_place
                        && sent
                        && matches!(first.kind, DeliveryKind::Message | DeliveryKind::Notice)
                        && first.dedupe_key.is_none()
                        && !first.view.private
                        && (first.view.personal == card_personal || cx.conversation.group.is_none()) =>
                {
                    first.dedupe_key = Some(card_key(&inst.id));
                }
                _ => retire.extend(self.retire_card(cx.conversation, &inst.id).await?),
            }
        }
        let mut actions = vec![];
        let mut deliveries = vec![];
        for mut note in notes {
            actions.extend(mint_view(&mut note.view, &cx.account.id, None, now));
            deliveries.push(new_delivery(cx.conversation, &cx.account.id, &note));
        }
        if let (Some(r), Some(first)) = (takeover, deliveries.first_mut()) {
            first.replace_ref = Some(r);
        }
        match expected_rev {
            // A flow that finished in its first step never needs an instance row.
            None => {
                store.save_outbox(&actions, &deliveries, true, cx.input.next_write().as_deref(), now).await?;
            }
            Some(rev) => {
                // Button records alone send nothing; the input is recorded with the flow's end.
                store.save_outbox(&actions, &[], false, None, now).await?;
                if !store
                    .end(&inst.id, rev, status, &deliveries, &retire, cx.input.next_write().as_deref(), now)
                    .await?
                {
                    return Ok(Reply::toast("That arrived after the conversation moved on; nothing changed."));
                }
            }
        }
        Ok(Reply::default())
    }

    /// Shows the conversation's open question again (a terminal chat
    /// started anew): the active step's view, sent as a new message with
    /// buttons for the same step. False when no flow is open.
    pub async fn show_open_step(&self, account: &AccountRow, conv: &Conversation) -> Result<bool, FlowError> {
        let store = self.inner.station.conversations();
        let Some(inst) = store.active(&conv.key(), &account.id).await? else { return Ok(false) };
        let flow = self.flow(&inst.flow)?;
        if inst.flow_version != flow.version() || !flow.steps().iter().any(|s| s.id == inst.step) {
            // The next input ends or upgrades it; there is no question to repeat.
            return Ok(false);
        }
        let key = InputKey::none();
        let cx = Cx {
            station: &self.inner.station,
            account,
            conversation: conv,
            instance_id: &inst.id,
            flows: self,
            input: &key,
            card: CardOffer::default(),
        };
        let state: Value = serde_json::from_str(&inst.state).unwrap_or(Value::Null);
        let mut view = flow.view(&cx, &inst.step, &state).await?;
        view.private |= flow.private();
        view.personal |= flow.personal();
        let now = now_ms();
        let actions = mint_view(&mut view, &account.id, Some((&inst.id, inst.rev)), now);
        let d = new_delivery(conv, &account.id, &Out::message(view));
        store.save_outbox(&actions, &[d], true, None, now).await?;
        self.inner.outbox.notify_one();
        Ok(true)
    }

    /// Sends a standalone message (no flow state changes).
    pub async fn notice(&self, account: &AccountRow, conv: &Conversation, view: View) -> Result<(), FlowError> {
        self.notice_keyed(&InputKey::none(), account, conv, view).await
    }

    /// [`Flows::notice`] on behalf of the input named by `key`.
    pub(crate) async fn notice_keyed(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        view: View,
    ) -> Result<(), FlowError> {
        let view = view.personal();
        self.send_keyed(key, account, conv, Out { view, kind: DeliveryKind::Notice, dedupe_key: None }).await
    }

    /// Stores a standalone outgoing message (minting its buttons) for delivery.
    pub async fn send(&self, account: &AccountRow, conv: &Conversation, out: Out) -> Result<(), FlowError> {
        self.send_keyed(&InputKey::none(), account, conv, out).await
    }

    /// [`Flows::send`] on behalf of the input named by `key`.
    pub(crate) async fn send_keyed(
        &self,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        mut out: Out,
    ) -> Result<(), FlowError> {
        let now = now_ms();
        let actions = mint_view(&mut out.view, &account.id, None, now);
        let d = new_delivery(conv, &account.id, &out);
        let write = key.next_write();
        self.inner.station.conversations().save_outbox(&actions, &[d], true, write.as_deref(), now).await?;
        self.inner.outbox.notify_one();
        Ok(())
    }

    /// Closes instances idle for longer than the configured time, telling
    /// each conversation. Returns how many were closed.
    pub async fn expire_idle(&self) -> Result<usize, FlowError> {
        let store = self.inner.station.conversations();
        let now = now_ms();
        let idle = store.idle(now - self.inner.settings.idle_ms, 100).await?;
        let mut n = 0;
        for inst in idle {
            let conv: Conversation = match serde_json::from_str(&inst.conv_json) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let minutes = self.inner.settings.idle_ms / 60_000;
            let view = View::text(format!(
                "Your /{} conversation was closed after {} without a reply. Send /{} to start again.",
                inst.flow,
                if minutes >= 1 { format!("{minutes} minutes") } else { "a while".to_string() },
                inst.flow
            ));
            let out = Out { view, kind: DeliveryKind::Notice, dedupe_key: None };
            let d = new_delivery(&conv, &inst.account_id, &out);
            let retire = self.retire_card(&conv, &inst.id).await?;
            if store.end(&inst.id, inst.rev, "expired", &[d], &retire, None, now).await? {
                n += 1;
            }
        }
        if n > 0 {
            self.inner.outbox.notify_one();
        }
        Ok(n)
    }
}

/// The delivery key of a flow instance's card: the one message its steps
/// show, edited as the flow moves.
pub(crate) fn card_key(instance: &str) -> String {
    format!("card:{instance}")
}

/// A flow's card moved aside as it is: its row keeps the message under
/// `card:<instance>@<delivery id>`, freeing the card's key for a new card.
fn card_moved_aside(instance: &str, row: &DeliveryRow) -> CardRetire {
    let key = card_key(instance);
    let new_key = format!("{key}@{}", row.id);
    CardRetire { key, new_key, view: None }
}

/// Whether a card reached the chat, or is being sent now (its message is
/// known by the time anything written after it is sent).
fn card_shown(row: &DeliveryRow) -> bool {
    row.status != "failed" && (row.message_ref.is_some() || row.status == "sending")
}

impl Flows {
    /// The card a press on it offers to the job it may submit
    /// ([`CardOffer`]): the delivery id of the flow's card when it is shown
    /// (or being sent) to everyone in the chat. The job names it in its
    /// source, written with the job before anything runs, so the job's
    /// progress takes the card over even when it is written before this
    /// step is stored; the step's transition then only moves the card's key.
    async fn card_offer(&self, flow: &dyn Flow, instance: &str) -> Result<Option<String>, FlowError> {
        if flow.private() {
            return Ok(None);
        }
        let Some(row) = self.inner.station.conversations().delivery_by_key(&card_key(instance)).await? else {
            return Ok(None);
        };
        let sent = card_shown(&row);
        let personal = serde_json::from_str::<View>(&row.view).ok().is_none_or(|v| v.personal || v.private);
        Ok((sent && !personal).then_some(row.id))
    }

    /// Moves a flow's card aside (its key freed for a new card, or the flow
    /// over) and takes its buttons away: the message stays as it was, with
    /// nothing left to press. A terminal's printed lines cannot change, so
    /// there only the key moves, as for a card that failed to reach the chat.
    async fn retire_card(&self, conv: &Conversation, instance: &str) -> Result<Vec<CardRetire>, FlowError> {
        let key = card_key(instance);
        let Some(row) = self.inner.station.conversations().delivery_by_key(&key).await? else { return Ok(vec![]) };
        let strip = row.status != "failed" && self.style_of(conv) != crate::platform::ChatStyle::Terminal;
        let view = strip
            .then(|| serde_json::from_str::<View>(&row.view).ok())
            .flatten()
            .map(|v| serde_json::to_string(&v.without_buttons()).expect("view serialises"));
        Ok(vec![CardRetire { view, ..card_moved_aside(instance, &row) }])
    }
}

fn describe_accepts(accepts: &[crate::flow::Accepts]) -> String {
    use crate::flow::Accepts::*;
    let words: Vec<&str> = accepts
        .iter()
        .filter_map(|a| match a {
            Text => Some("text"),
            Image => Some("an image"),
            Form => Some("a form"),
            Action => None,
        })
        .collect();
    if words.is_empty() { "a button press".to_string() } else { words.join(" or ") + " (or a button press)" }
}
