//! `/cook`: where your cooks stand (generative collections, issue 24) —
//! each cooked collection's progress in words, with buttons to pause,
//! resume or stop it. The rules are the core's ([`station_core::cook`]).

use serde_json::{Value, json};
use station_core::collections::CollectionError;

use crate::flow::{Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str};
use crate::view::{Block, Button, Field, View};

/// The cook status flow.
pub struct Cook;

const NO_STEPS: &[StepSpec] = &[];

fn words(e: CollectionError) -> Result<String, FlowError> {
    match e {
        CollectionError::Storage(s) => Err(s.into()),
        CollectionError::Invalid(fields) => Ok(fields.iter().map(|f| f.reason.clone()).collect::<Vec<_>>().join("; ")),
        CollectionError::NotFound { .. } => Ok("That collection is gone.".into()),
        other => Ok(other.to_string()),
    }
}

fn finish(view: View) -> Next {
    Next::Finish(vec![Out::message(view.personal())])
}

impl Cook {
    async fn answer(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        if let Some(off) = cx.station.feature_refusal("collections", cx.account).await {
            return Ok(finish(View::text(off.reason)));
        }
        // A button: pause, resume or stop one cook, then the list again.
        let mut said = None;
        if let (Some(id), Some(action)) = (get_str(&start.args, "collection"), get_str(&start.args, "do")) {
            said = Some(match cx.station.control_cook(cx.account, id, action).await {
                Ok(c) => format!("Done — {}.", c.progress_text),
                Err(e) => words(e)?,
            });
        }
        let cooks = match cx.station.cooks_of(cx.account).await {
            Ok(c) => c,
            Err(e) => return Ok(finish(View::text(words(e)?))),
        };
        if cooks.is_empty() {
            return Ok(finish(View::text(
                "You have no cooks yet. A cook makes a whole collection from a recipe of traits; set one up on the \
                 web (a collection's Cook tab) or with `station collections cook`.",
            )));
        }
        let mut fields = vec![];
        let mut buttons = vec![];
        for (c, cook) in cooks.iter().take(10) {
            let mut value = cook.progress_text.clone();
            if cook.accepted + cook.rejected > 0 {
                value.push_str(&format!(" · reviewed: {} accepted, {} rejected", cook.accepted, cook.rejected));
            }
            fields.push(Field { name: c.collection.name.clone(), value, inline: false });
            let args = |what: &str| json!({"flow": "cook", "args": {"collection": c.collection.id, "do": what}});
            match cook.status.as_str() {
                "running" => {
                    buttons.push(Button::action(format!("⏸ Pause {}", c.collection.name), "start", args("pause")));
                    buttons
                        .push(Button::action(format!("⏹ Stop {}", c.collection.name), "start", args("stop")).danger());
                }
                "paused" => {
                    buttons.push(
                        Button::action(format!("▶ Resume {}", c.collection.name), "start", args("resume")).primary(),
                    );
                    buttons
                        .push(Button::action(format!("⏹ Stop {}", c.collection.name), "start", args("stop")).danger());
                }
                _ => {}
            }
        }
        let mut view =
            View::default().block(Block::Card { title: "Your cooks".into(), body: None, image: None, fields });
        for row in buttons.chunks(2) {
            view = view.row(row.to_vec());
        }
        view = view.row(vec![Button::action("🔄 Refresh", "start", json!({"flow": "cook"}))]);
        if let Some(s) = said {
            view = view.with_text(s);
        }
        Ok(finish(view))
    }
}

#[async_trait::async_trait]
impl Flow for Cook {
    fn name(&self) -> &'static str {
        "cook"
    }

    fn description(&self) -> &'static str {
        "Your generative collections: progress, pause, resume, stop"
    }

    fn personal(&self) -> bool {
        true
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
