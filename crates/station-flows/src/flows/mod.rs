//! The built-in flows: start, help, make, settings, status, history,
//! balance, link, web, and the operators' queue, grant and flags.

pub mod admin;
pub mod cast;
pub mod collect;
pub mod collections;
pub mod cook;
pub mod inputs;
pub mod lora;
pub mod make;
mod settings;
pub mod spell_new;
pub mod train;
pub mod wallet;

use std::sync::Arc;

use serde_json::{Value, json};
use station_core::{JobRow, JobStatus};

use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec};
use crate::view::{Block, Button, Field, GridCell, ImageRef, Rich, View, points};

impl crate::Flows {
    /// An engine with the built-in flows and result actions.
    pub fn new(station: station_core::Station) -> crate::Flows {
        crate::Flows::with_settings(station, crate::FlowSettings::default())
    }

    /// An engine with explicit settings.
    pub fn with_settings(station: station_core::Station, settings: crate::FlowSettings) -> crate::Flows {
        crate::Flows::with_flows(station, settings, vec![])
    }

    /// An engine with extra flows beside the built-ins (a flow with a
    /// built-in's name replaces it). Extra flows start by their name as a command.
    pub fn with_flows(
        station: station_core::Station,
        settings: crate::FlowSettings,
        extra: Vec<Arc<dyn Flow>>,
    ) -> crate::Flows {
        let flows = builtin().into_iter().chain(extra).collect();
        crate::Flows::assemble(station, settings, flows, Arc::new(crate::results::ResultActions))
    }
}

/// Every built-in flow.
pub fn builtin() -> Vec<Arc<dyn Flow>> {
    vec![
        Arc::new(make::Make),
        Arc::new(settings::Settings),
        Arc::new(Welcome),
        Arc::new(Help),
        Arc::new(Status),
        Arc::new(History),
        Arc::new(BalanceFlow),
        Arc::new(Link),
        Arc::new(Web),
        Arc::new(admin::Queue),
        Arc::new(admin::Grant),
        Arc::new(admin::Flags),
        Arc::new(train::Train),
        Arc::new(Loras),
        Arc::new(lora::Lora),
        Arc::new(cast::Cast),
        Arc::new(Spells),
        Arc::new(spell_new::NewSpell),
        Arc::new(collect::Collect),
        Arc::new(collections::Collections),
        Arc::new(cook::Cook),
        Arc::new(wallet::Wallet),
        Arc::new(DepositFlow),
    ]
}

fn finish(view: View) -> Next {
    Next::Finish(vec![Out::message(view)])
}

fn menu_row() -> Vec<Button> {
    vec![
        Button::action("🎨 Make", "start", json!({"flow": "make"})).primary(),
        Button::action("📋 Status", "start", json!({"flow": "status"})),
        Button::action("🖼 History", "start", json!({"flow": "history"})),
    ]
}

/// Steps of flows that finish at once.
const NO_STEPS: &[StepSpec] = &[];

macro_rules! one_shot {
    ($ty:ident, $name:literal, $desc:literal) => {
        one_shot!($ty, $name, $desc, false, false);
    };
    ($ty:ident, $name:literal, $desc:literal, $private:literal, $personal:literal) => {
        /// A flow that answers at once.
        pub struct $ty;
        #[async_trait::async_trait]
        impl Flow for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn description(&self) -> &'static str {
                $desc
            }
            fn private(&self) -> bool {
                $private
            }
            fn personal(&self) -> bool {
                $personal
            }
            fn steps(&self) -> &'static [StepSpec] {
                NO_STEPS
            }
            async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
                self.answer(cx, start).await
            }
            async fn view(&self, _cx: &Cx<'_>, _step: &str, _state: &Value) -> Result<View, FlowError> {
                Ok(View::default())
            }
            async fn input(&self, _cx: &Cx<'_>, _s: &str, _st: &Value, _i: StepInput) -> Result<Next, FlowError> {
                Ok(Next::Cancel)
            }
        }
    };
}

// Answers about the asker alone: ephemeral where a platform has that.
one_shot!(Welcome, "start", "Welcome and your starting points", false, true);
one_shot!(Help, "help", "What I can do", false, true);
one_shot!(Status, "status", "Your balance, running jobs and recent results", false, true);
one_shot!(BalanceFlow, "balance", "Your points and their history", false, true);
one_shot!(Loras, "loras", "LoRAs you can use and their trigger words", false, true);
one_shot!(DepositFlow, "deposit", "Pay in points with crypto: where to send, and your deposits", false, true);
one_shot!(Spells, "spells", "Spells you can cast: several tools in one go", false, true);
// Their answers hold secrets that grant the account: only the asker sees them.
one_shot!(Link, "link", "Link this account with another platform", true, true);
one_shot!(Web, "web", "A sign-in link for the web app", true, true);

/// Example commands made from the tools this account can run: a prompt
/// example only for a tool that takes a prompt, an image example only for
/// one that takes an image; never a hidden tool. Worded for the platform.
fn examples(cx: &Cx<'_>) -> String {
    use crate::platform::ChatStyle;
    use station_core::tools::InputType;
    let tools = inputs::pickable_tools(cx, false);
    let style = cx.flows.style_of(cx.conversation);
    let takes_image = |t: &station_core::tools::ToolDef| t.inputs.values().any(|d| d.kind == InputType::Image);
    let prompt = tools.iter().filter(|t| !takes_image(t)).find_map(|t| {
        let (name, _) = t.primary_input().filter(|(_, d)| d.kind == InputType::Text)?;
        Some((t.command.clone(), name.to_string()))
    });
    let image = tools
        .iter()
        .find(|t| t.inputs.values().any(|d| d.kind == InputType::Image && d.required && d.default.is_none()))
        .or_else(|| tools.iter().find(|t| takes_image(t)))
        .map(|t| t.command.clone());
    let mut out = vec![];
    out.push(match (style, &prompt) {
        (ChatStyle::Interactions, Some((cmd, input))) => {
            format!("Use /make to choose a tool, or a tool's own command with its {input} (for example /{cmd} {input}: a lighthouse at dusk).")
        }
        (ChatStyle::Interactions, None) => "Use /make to choose a tool, or a tool's own command.".to_string(),
        (ChatStyle::Terminal, Some((cmd, _))) => {
            format!("Type /make to choose a tool, or a tool's command with a prompt (for example /{cmd} a lighthouse at dusk).")
        }
        (ChatStyle::Terminal, None) => "Type /make to choose a tool, or a tool's command.".to_string(),
        (ChatStyle::Messages, Some((cmd, _))) => {
            format!("Send /make to choose a tool, or a tool's command with a prompt (for example /{cmd} a lighthouse at dusk).")
        }
        (ChatStyle::Messages, None) => "Send /make to choose a tool, or a tool's command.".to_string(),
    });
    if let Some(cmd) = image {
        out.push(match style {
            ChatStyle::Interactions => {
                format!("Tools that use a picture have an image option to attach it (for example /{cmd}).")
            }
            ChatStyle::Terminal => format!("To use a picture, add its file path after the command (for example /{cmd} @photo.png)."),
            ChatStyle::Messages => format!(
                "To use a photo, send it with a command as its caption (for example /{cmd}), or reply to it with the command."
            ),
        });
    }
    out.join(" ")
}

impl Welcome {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        cx.station.ensure_starting_grant(&cx.account.id).await?;
        let balance = cx.station.points(&cx.account.id).await?;
        let tools = inputs::pickable_tools(cx, false);
        let mut text = Rich::plain("Welcome to Station, ").bold(cx.account.name.clone()).text("!\n\n");
        text = text.text("I make images with AI tools. You have ").bold(points(balance.available()));
        text = text.text(format!(
            ". Every run costs points; the price is shown before anything is spent.\n\nThere {} {} to try. {}",
            if tools.len() == 1 { "is" } else { "are" },
            if tools.len() == 1 { "1 tool".to_string() } else { format!("{} tools", tools.len()) },
            examples(cx)
        ));
        Ok(finish(View::text(text).row(menu_row()).row(vec![Button::action(
            "❓ Help",
            "start",
            json!({"flow": "help"}),
        )])))
    }
}

impl Help {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        use crate::platform::ChatStyle;
        let style = cx.flows.style_of(cx.conversation);
        // Public spells offered as commands, as they are now.
        cx.flows.refresh_spell_commands().await?;
        let mut lines = vec![];
        for c in cx.flows.commands(Some(cx.account)) {
            // An interactions-only platform registers no /start: the app's menu is its welcome.
            if style == ChatStyle::Interactions && c.name == "start" && c.tool.is_none() {
                continue;
            }
            lines.push(format!("/{} — {}", c.name, c.description));
        }
        let settings = match style {
            ChatStyle::Interactions => "A tool command takes its prompt and settings as options.",
            _ => "Settings can follow the command as name=value (for example steps=30).",
        };
        let text = Rich::plain("Commands\n").text(lines.join("\n")).text(format!(
            "\n\n{} {settings} Results come with buttons to rerun, tweak, use as input, see info, rate or hide.",
            examples(cx)
        ));
        Ok(finish(View::text(text).row(menu_row())))
    }
}

impl Status {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        let station = cx.station;
        let balance = station.points(&cx.account.id).await?;
        let mut view =
            View::text(Rich::plain("Balance: ").bold(points(balance.available())).text(if balance.held > 0 {
                format!(" ({} on hold for running jobs)", balance.held)
            } else {
                String::new()
            }));
        let active = station.active_jobs(cx.account, 10).await?;
        if active.is_empty() {
            view = view.with_text("Nothing running or queued.");
        }
        for job in active.iter().take(10) {
            let v = station.job_view(&job.id).await?;
            let tool = station.tools.get(&job.tool_id).map(|t| t.name.clone()).unwrap_or(job.tool_id.clone());
            // The core's wording: "queued, 2 ahead", "waiting for a GPU (3 ahead)", "running 45 %".
            let text = v
                .as_ref()
                .map_or_else(|| station_core::jobs::status_text(job, None), station_core::JobView::status_text);
            let fraction = (job.status() == JobStatus::Running).then_some(job.progress);
            let label = format!("{tool}: {text}");
            view = view.block(Block::Progress { fraction, label, preview: None });
            view =
                view.row(vec![Button::action(format!("Cancel {tool}"), "cancel_job", json!({"job": job.id})).danger()]);
        }
        let (recent, _) = station.history_page(cx.account, 0, 3).await?;
        if !recent.is_empty() {
            let cells = recent_cells(cx, &recent).await?;
            view = view.with_text("Recent results").block(Block::Grid { columns: 3, cells });
        }
        Ok(finish(view.row(vec![Button::action("🔄 Refresh", "start", json!({"flow": "status"}))])))
    }
}

async fn recent_cells(cx: &Cx<'_>, jobs: &[JobRow]) -> Result<Vec<GridCell>, FlowError> {
    let mut cells = vec![];
    let now = station_core::now_ms();
    for job in jobs {
        let image = cx.station.job_outputs(job).await?.first().map(|m| ImageRef::media(&m.id, &m.mime));
        // Buttons say what each job was, so three runs of one tool differ.
        let label = crate::results::job_label(cx.flows, job, now);
        cells.push(GridCell {
            image,
            label: label.clone(),
            button: Some(Button::action(label, "open", json!({"job": job.id}))),
        });
    }
    Ok(cells)
}

impl BalanceFlow {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        let b = cx.station.points(&cx.account.id).await?;
        let entries = cx.station.ledger_history(&cx.account.id, None, 30).await?;
        let now = station_core::now_ms();
        let mut fields = vec![];
        // Holds and releases move nothing a person spent: only changes of the balance are listed.
        for e in entries.iter().filter(|e| e.amount != 0).take(10) {
            let job = match &e.job_id {
                Some(id) => cx.station.job_for(cx.account, id).await.ok(),
                None => None,
            };
            let what = match (&job, e.kind.as_str()) {
                (Some(job), _) => crate::results::job_label(cx.flows, job, now),
                (None, "grant") if e.reason.as_deref() == Some("starting grant") => "Starting points".to_string(),
                (None, "grant") => "Points from an operator".to_string(),
                (None, "deposit") => "Points paid in".to_string(),
                (None, "refund") => "Refund".to_string(),
                (None, "adjustment") => "Correction by an operator".to_string(),
                (None, "reward") => "Reward".to_string(),
                (None, "transfer") => "Moved when accounts were linked".to_string(),
                (None, _) => "A run".to_string(),
            };
            let sign = if e.amount > 0 { "+" } else { "" };
            fields.push(Field {
                name: format!("{sign}{}", points(e.amount)),
                value: format!("{what} · {}", crate::results::ago(now - e.created_at)),
                inline: false,
            });
        }
        Ok(finish(
            View::text(Rich::plain("You have ").bold(points(b.available())).text(if b.held > 0 {
                format!(" available ({} on hold)", b.held)
            } else {
                String::new()
            }))
            .block(Block::Card { title: "Recent entries".into(), body: None, image: None, fields }),
        ))
    }
}

impl Loras {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        let usable = match cx.station.loras().usable(cx.account).await {
            Ok(l) => l,
            Err(station_core::loras::LoraError::Storage(e)) => return Err(e.into()),
            Err(e) => return Ok(finish(View::text(format!("⚠ The LoRA list is not available: {e}")))),
        };
        let training = cx.station.flag_on("training", &station_core::flags::FlagSubject::account(cx.account));
        let mut view = View::default();
        if usable.is_empty() {
            view = view.with_text("No LoRAs yet.");
        } else {
            view = view.with_text(
                "A LoRA adds a style or a subject. Put its trigger word in a prompt to use it (add :0.7 after the \
                 word for a lighter touch).",
            );
        }
        let mut fields = vec![];
        for l in usable.iter().take(25) {
            let trigger = l.trigger_words.first().cloned().unwrap_or_else(|| l.slug.clone());
            let whose = match (&l.owner, l.visibility) {
                (Some(o), _) if *o == cx.account.id => " · yours",
                (_, station_core::loras::Visibility::Private) => " · shared with you",
                _ => "",
            };
            fields.push(Field {
                name: l.name.clone(),
                value: format!("{trigger} · {}{whose}", l.checkpoint),
                inline: false,
            });
        }
        if !fields.is_empty() {
            view = view.block(Block::Card { title: "Your LoRAs".into(), body: None, image: None, fields });
        }
        if usable.len() > 25 {
            view = view.with_text(format!("…and {} more.", usable.len() - 25));
        }
        // One button per LoRA of your own (up to 5): share, publish, delete.
        let own: Vec<_> =
            usable.iter().filter(|l| l.owner.as_deref() == Some(cx.account.id.as_str())).take(5).collect();
        if !own.is_empty() {
            view = view.row(
                own.iter()
                    .map(|l| {
                        Button::action(
                            format!("⚙ {}", l.name),
                            "start",
                            json!({"flow": "lora", "args": {"lora": l.slug}}),
                        )
                    })
                    .collect(),
            );
        }
        let mut row = vec![Button::action("🎨 Make", "start", json!({"flow": "make"})).primary()];
        if training {
            row.push(Button::action("🧪 Train your own", "start", json!({"flow": "train"})));
        }
        Ok(finish(view.row(row)))
    }
}

impl DepositFlow {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        Ok(finish(wallet::deposit_answer(cx).await?))
    }
}

impl Spells {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        if let Some(off) = cx.station.feature_refusal("spells", cx.account).await {
            return Ok(finish(View::text(off.reason)));
        }
        let spells = cx.station.spells(cx.account).await?;
        let new = Button::action("➕ New spell", "start", json!({"flow": "newspell"}));
        if spells.is_empty() {
            return Ok(finish(
                View::text(
                    "There are no spells yet. A spell chains tools (for example a picture, then an upscale) into \
                     one command: make one with New spell.",
                )
                .row(vec![new]),
            ));
        }
        let mut fields = vec![];
        let mut buttons = vec![];
        for s in spells.iter().take(10) {
            let chain = s.steps.iter().map(|x| x.tool_name.clone()).collect::<Vec<_>>().join(" → ");
            let takes = s.inputs.iter().map(|i| i.name.clone()).collect::<Vec<_>>().join(", ");
            let mine = if s.owner_id == cx.account.id { " · yours" } else { "" };
            let value = match (&s.broken, takes.is_empty()) {
                (Some(_), _) => format!("{chain} · cannot run now (a tool is missing){mine}"),
                (None, true) => format!("{chain}{mine}"),
                (None, false) => format!("{chain} · takes {takes}{mine}"),
            };
            fields.push(Field { name: format!("{} (/cast {})", s.name, s.slug), value, inline: false });
            if s.broken.is_none() {
                buttons.push(Button::action(
                    format!("✨ {}", s.name),
                    "start",
                    json!({"flow": "cast", "args": {"spell": s.slug}}),
                ));
            }
        }
        let mut view = View::default().block(Block::Card { title: "Spells".into(), body: None, image: None, fields });
        for row in buttons.chunks(3) {
            view = view.row(row.to_vec());
        }
        Ok(finish(view.row(vec![new]).with_text("Cast one with its button, or /cast NAME followed by a prompt.")))
    }
}

impl Link {
    async fn answer(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        let code = start.text.trim().replace('-', "");
        if code.is_empty() {
            let c = cx.station.create_link_code(cx.account).await?;
            let text = Rich::plain("Your link code: ").code(c.code.clone()).text(format!(
                "\nIt works once, for 10 minutes. On the other platform (Telegram, Discord or the web), send /link {} \
                 and both will share one account and one balance.",
                c.code
            ));
            return Ok(finish(View::text(text).private()));
        }
        match cx.station.redeem_link_code(cx.account, &code).await {
            Ok(joined) => Ok(finish(View::text(
                Rich::plain("Linked. This identity now belongs to account ")
                    .bold(joined.name.clone())
                    .text("; your points and history are in one place."),
            ))),
            Err(e) => Ok(finish(View::text(format!("⚠ Could not link: {e}")))),
        }
    }
}

impl Web {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        let (token, _) = cx.station.create_login_token(cx.account).await?;
        let base = cx.flows.settings().public_url.trim_end_matches('/').to_string();
        let url = format!("{base}/login?token={token}");
        Ok(finish(
            View::text("Here is your sign-in link for the web app. It works once, for 15 minutes; don't share it.")
                .row(vec![Button::url("Open Station on the web", url)])
                .private(),
        ))
    }
}

/// `history`: a paginated gallery of past results.
pub struct History;

const HISTORY_PAGE: i64 = 6;
const HISTORY_STEPS: &[StepSpec] = &[StepSpec { id: "page", accepts: &[Accepts::Text] }];

#[async_trait::async_trait]
impl Flow for History {
    fn name(&self) -> &'static str {
        "history"
    }

    fn description(&self) -> &'static str {
        "Browse your past results"
    }

    fn personal(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        HISTORY_STEPS
    }

    async fn start(&self, _cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        Ok(Next::Goto("page".into(), json!({"page": 0})))
    }

    async fn view(&self, cx: &Cx<'_>, _step: &str, state: &Value) -> Result<View, FlowError> {
        let page = state.get("page").and_then(Value::as_i64).unwrap_or(0).max(0);
        let (jobs, total) = cx.station.history_page(cx.account, page * HISTORY_PAGE, HISTORY_PAGE).await?;
        if total == 0 {
            return Ok(View::text("No results yet. Send /make to create something.").row(vec![Button::action(
                "Close",
                "cancel",
                Value::Null,
            )]));
        }
        let pages = (total + HISTORY_PAGE - 1) / HISTORY_PAGE;
        let cells = recent_cells(cx, &jobs).await?;
        let mut nav = vec![];
        if page > 0 {
            nav.push(Button::action("◀ Newer", "page", json!({"page": page - 1})));
        }
        if page + 1 < pages {
            nav.push(Button::action("Older ▶", "page", json!({"page": page + 1})));
        }
        Ok(View::text(format!("Your results: page {} of {pages} ({total} in all)", page + 1))
            .block(Block::Grid { columns: 3, cells })
            .row(nav)
            .row(vec![Button::action("Close", "cancel", Value::Null)]))
    }

    async fn input(&self, _cx: &Cx<'_>, _step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        match input {
            StepInput::Action { name, args } if name == "page" => {
                Ok(Next::Stay(crate::flow::with(state, "page", args.get("page").cloned().unwrap_or(json!(0)))))
            }
            StepInput::Text(t) => match t.trim().parse::<i64>() {
                Ok(n) if n >= 1 => Ok(Next::Stay(crate::flow::with(state, "page", n - 1))),
                _ => Ok(Next::Invalid("Send a page number, or use the buttons.".into())),
            },
            _ => Ok(Next::Invalid("Use the buttons to move between pages.".into())),
        }
    }
}
