//! `collect`: a result's "➕ Collection" button — choose one of your
//! collections (or name a new one) and the result's images are added.
//! Ownership, duplicates and the feature flag are the core's rules.

use serde_json::{Value, json};
use station_core::collections::{CollectionEdit, CollectionError, ItemRef};

use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str, with};
use crate::view::{Button, InputKind, Rich, View};

/// The collect flow (started by a result's button, not a command).
pub struct Collect;

const STEPS: &[StepSpec] =
    &[StepSpec { id: "pick", accepts: &[Accepts::Text] }, StepSpec { id: "name", accepts: &[Accepts::Text] }];

fn words(e: CollectionError) -> Result<String, FlowError> {
    match e {
        CollectionError::Storage(s) => Err(s.into()),
        CollectionError::Invalid(fields) => {
            Ok(fields.iter().map(|f| format!("{}: {}", f.field, f.reason)).collect::<Vec<_>>().join("; "))
        }
        other => Ok(other.to_string()),
    }
}

impl Collect {
    /// Adds the job's images to the collection `id` and ends with what happened.
    async fn add(cx: &Cx<'_>, state: &Value, id: &str, name: &str) -> Result<Next, FlowError> {
        let job = get_str(state, "job").unwrap_or("").to_string();
        match cx.station.add_to_collection(cx.account, id, ItemRef::Generation(job)).await {
            Ok(added) => {
                let text = match added.len() {
                    0 => Rich::plain("It is in ").bold(name.to_string()).text(" already."),
                    1 => Rich::plain("Added to ").bold(name.to_string()).text("."),
                    n => Rich::plain(format!("Added {n} images to ")).bold(name.to_string()).text("."),
                };
                Ok(Next::Finish(vec![Out::message(View::text(text).personal())]))
            }
            Err(e) => Ok(Next::Invalid(words(e)?)),
        }
    }
}

#[async_trait::async_trait]
impl Flow for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }

    fn description(&self) -> &'static str {
        "Add a result to one of your collections"
    }

    fn personal(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        STEPS
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        if let Some(off) = cx.station.feature_refusal("collections", cx.account).await {
            return Ok(Next::Finish(vec![Out::message(View::text(off.reason).personal())]));
        }
        let Some(job) = get_str(&start.args, "job") else {
            return Ok(Next::Finish(vec![Out::message(
                View::text("Press ➕ Collection under a result to add it to a collection.").personal(),
            )]));
        };
        let state = json!({"job": job});
        let mine = match cx.station.collections_of(cx.account).await {
            Ok(m) => m,
            Err(e) => return Ok(Next::Finish(vec![Out::message(View::text(words(e)?).personal())])),
        };
        if mine.is_empty() { Ok(Next::Goto("name".into(), state)) } else { Ok(Next::Goto("pick".into(), state)) }
    }

    async fn view(&self, cx: &Cx<'_>, step: &str, _state: &Value) -> Result<View, FlowError> {
        match step {
            "pick" => {
                let mine = cx.station.collections_of(cx.account).await.unwrap_or_default();
                let options = mine
                    .iter()
                    .take(20)
                    .map(|c| {
                        Button::action(
                            format!("{} ({})", c.collection.name, c.items),
                            "choose",
                            json!({"value": c.collection.id}),
                        )
                    })
                    .collect();
                Ok(View::text("Which collection should it go into?")
                    .row(vec![
                        Button::action("➕ New collection", "new", Value::Null).primary(),
                        Button::action("Cancel", "cancel", Value::Null).danger(),
                    ])
                    .ask("Collection", InputKind::Choice { options })
                    .personal())
            }
            _ => Ok(View::text("What should the new collection be called? Only you see it until you share it.")
                .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()])
                .ask(
                    "Name",
                    InputKind::Text {
                        placeholder: Some("Autumn portraits".into()),
                        multiline: false,
                        max_len: Some(100),
                    },
                )
                .personal()),
        }
    }

    async fn input(&self, cx: &Cx<'_>, step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        let mine = match cx.station.collections_of(cx.account).await {
            Ok(m) => m,
            Err(e) => return Ok(Next::Invalid(words(e)?)),
        };
        match (step, input) {
            ("pick", StepInput::Action { name, .. }) if name == "new" => Ok(Next::Goto("name".into(), state.clone())),
            ("pick", StepInput::Action { name, args }) if name == "choose" => {
                let id = get_str(&args, "value").unwrap_or("");
                match mine.iter().find(|c| c.collection.id == id) {
                    Some(c) => Self::add(cx, state, &c.collection.id, &c.collection.name).await,
                    None => Ok(Next::Invalid("That collection is gone. Choose another.".into())),
                }
            }
            ("pick", StepInput::Text(t)) => {
                match mine.iter().find(|c| c.collection.name.eq_ignore_ascii_case(t.trim())) {
                    Some(c) => Self::add(cx, state, &c.collection.id, &c.collection.name).await,
                    None => Ok(Next::Invalid("Choose one of your collections, or press New collection.".into())),
                }
            }
            ("name", StepInput::Text(t)) => {
                let name = t.trim();
                // A collection of that name already (or a replayed input): use it.
                if let Some(c) = mine.iter().find(|c| c.collection.name == name) {
                    return Self::add(cx, state, &c.collection.id, &c.collection.name).await;
                }
                let edit = CollectionEdit { name: Some(name.to_string()), ..Default::default() };
                match cx.station.create_collection(cx.account, edit).await {
                    Ok(row) => Self::add(cx, &with(state, "created", true), &row.id, &row.name).await,
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            _ => Ok(Next::Invalid("Use the buttons of this step.".into())),
        }
    }
}
