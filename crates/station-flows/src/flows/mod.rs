//! The built-in flows: start, help, make, settings, status, history,
//! balance, link, web, and the operators' queue and grant.

pub mod admin;
pub mod inputs;
pub mod make;
mod settings;

use std::sync::Arc;

use serde_json::{Value, json};
use station_core::{JobRow, JobStatus};

use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec};
use crate::view::{Block, Button, Field, GridCell, ImageRef, Rich, View};

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
        one_shot!($ty, $name, $desc, false);
    };
    ($ty:ident, $name:literal, $desc:literal, $private:literal) => {
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

one_shot!(Welcome, "start", "Welcome and your starting points");
one_shot!(Help, "help", "What I can do");
one_shot!(Status, "status", "Your balance, running jobs and recent results");
one_shot!(BalanceFlow, "balance", "Your points and their history");
// Their answers hold secrets that grant the account: only the asker sees them.
one_shot!(Link, "link", "Link this account with another platform", true);
one_shot!(Web, "web", "A sign-in link for the web app", true);

impl Welcome {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        cx.station.ensure_starting_grant(&cx.account.id).await?;
        let balance = cx.station.points(&cx.account.id).await?;
        let tools = inputs::pickable_tools(cx, false);
        let mut text = Rich::plain("Welcome to Station, ").bold(cx.account.name.clone()).text("!\n\n");
        text = text.text("I make images with AI tools. You have ").bold(format!("{} points", balance.available()));
        text = text.text(format!(
            ". Every run costs points; the price is shown before anything is spent.\n\nTry one of the {} tools: \
             send /make, or a tool's command with a prompt (for example /{} a lighthouse at dusk). Send a photo \
             with a command as its caption to use it as input.",
            tools.len(),
            tools.iter().find(|t| t.primary_input().is_some()).map(|t| t.command.as_str()).unwrap_or("make")
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
        let mut lines = vec![];
        for c in cx.flows.commands(Some(cx.account)) {
            lines.push(format!("/{} — {}", c.name, c.description));
        }
        let text = Rich::plain("Commands\n").text(lines.join("\n")).text(
            "\n\nA tool command takes its prompt inline (/sdxl a red fox), a photo as caption, or a reply to a \
             photo. Results come with buttons to rerun, tweak, use as input, see info, rate or hide.",
        );
        Ok(finish(View::text(text).row(menu_row())))
    }
}

impl Status {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        let station = cx.station;
        let balance = station.points(&cx.account.id).await?;
        let mut view = View::text(Rich::plain("Balance: ").bold(format!("{} points", balance.available())).text(
            if balance.held > 0 { format!(" ({} on hold for running jobs)", balance.held) } else { String::new() },
        ));
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
    for job in jobs {
        let image = cx.station.job_outputs(job).await?.first().map(|m| ImageRef::media(&m.id, &m.mime));
        let tool = cx.station.tools.get(&job.tool_id).map(|t| t.name.clone()).unwrap_or(job.tool_id.clone());
        cells.push(GridCell {
            image,
            label: tool,
            button: Some(Button::action("Open", "open", json!({"job": job.id}))),
        });
    }
    Ok(cells)
}

impl BalanceFlow {
    async fn answer(&self, cx: &Cx<'_>, _start: Start) -> Result<Next, FlowError> {
        let b = cx.station.points(&cx.account.id).await?;
        let entries = cx.station.ledger_history(&cx.account.id, None, 10).await?;
        let fields = entries
            .iter()
            .map(|e| Field {
                name: format!("{} {:+}", e.kind, e.amount),
                value: e.reason.clone().or(e.job_id.clone()).unwrap_or_default(),
                inline: false,
            })
            .collect();
        Ok(finish(
            View::text(Rich::plain("You have ").bold(format!("{} points", b.available())).text(if b.held > 0 {
                format!(" available ({} on hold)", b.held)
            } else {
                String::new()
            }))
            .block(Block::Card { title: "Recent entries".into(), body: None, image: None, fields }),
        ))
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
