//! `/cook`: where your cooks stand (generative collections, issue 24) —
//! each cooked collection's progress in words, with buttons to pause,
//! resume, stop or cook again what a stop left unmade — and **review
//! cards**: one piece at a time with ✅ Keep / ❌ Cull (and 🔁 make it
//! again), every press editing the same card in place (its delivery is
//! keyed by the review, so the outbox updates one message). The rules —
//! claims, who may decide, the counts — are the core's
//! ([`station_core::cook`]).

use serde_json::{Value, json};
use station_core::collections::CollectionError;
use station_core::cook::Decision;

use crate::flow::{Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str};
use crate::platform::DeliveryKind;
use crate::view::{Block, Button, Field, ImageRef, View};

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
        if let (Some(id), Some(card)) = (get_str(&start.args, "collection"), get_str(&start.args, "review")) {
            return self.review(cx, id, card, &start.args).await;
        }
        // A button: pause, resume, stop or re-cook one cook, then the list again.
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
                 web (the Cook tab) or with `station collections cook`.",
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
                _ if cook.stopped + cook.failed > 0 => {
                    buttons.push(Button::action(format!("🔁 Re-cook {}", c.collection.name), "start", args("recook")));
                }
                _ => {}
            }
            if cook.done > cook.accepted + cook.rejected {
                // A new review: its card is keyed by this input's flow instance.
                let review = json!({"flow": "cook", "args": {"collection": c.collection.id, "review": cx.instance_id}});
                buttons.push(Button::action(format!("🔎 Review {}", c.collection.name), "start", review));
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

impl Cook {
    /// A review card: applies the pressed decision (if any), then shows the
    /// next piece claimed for this reviewer — or that none is left — in the
    /// card's one message.
    async fn review(&self, cx: &Cx<'_>, collection: &str, card: &str, args: &Value) -> Result<Next, FlowError> {
        let mut said = None;
        let finished = get_str(args, "decide") == Some("finish");
        if let (Some(piece), Some(word)) = (get_str(args, "piece"), get_str(args, "decide"))
            && let Some(decision) = Decision::parse(word)
            && let Err(e) = cx.station.review_piece(cx.account, collection, piece, decision).await
        {
            said = Some(format!("⚠ {}", words(e)?));
        }
        let c = match cx.station.review_card(cx.account, collection).await {
            Ok(c) => c,
            Err(e) => return Ok(finish(View::text(words(e)?))),
        };
        let arg = |piece: &str, what: &str| json!({"flow": "cook", "args": {"collection": collection, "review": card, "piece": piece, "decide": what}});
        let progress = format!("{} · {}", c.review_text, c.cook.progress_text);
        let mut view = match (&c.piece, finished) {
            (Some(p), false) if p.media_id.is_some() => {
                let fields = p
                    .traits
                    .iter()
                    .map(|t| Field { name: t.category.clone(), value: t.name.clone(), inline: true })
                    .collect();
                let mut image = ImageRef::media(
                    p.media_id.as_deref().unwrap_or_default(),
                    c.mime.as_deref().unwrap_or("image/png"),
                );
                image.caption = Some(format!("{} #{}", c.collection_name, p.number));
                View::default()
                    .block(Block::Card {
                        title: format!("Review {} — piece #{}", c.collection_name, p.number),
                        body: Some(progress.into()),
                        image: Some(image),
                        fields,
                    })
                    .row(vec![
                        Button::action("✅ Keep", "start", arg(&p.id, "accept")).primary(),
                        Button::action("❌ Cull", "start", arg(&p.id, "reject")).danger(),
                    ])
                    .row(vec![
                        Button::action("🔁 Make again", "start", arg(&p.id, "regenerate")),
                        Button::action("⏹ Done", "start", arg(&p.id, "finish")),
                    ])
            }
            _ => {
                let head = if c.piece.is_none() {
                    format!("Nothing left to review in {} for now.", c.collection_name)
                } else {
                    format!("Review of {} paused; your claim lapses in a few minutes.", c.collection_name)
                };
                View::text(format!("{head}\n{progress}")).row(vec![Button::action(
                    "🔎 Review again",
                    "start",
                    json!({"flow": "cook", "args": {"collection": collection, "review": card}}),
                )])
            }
        };
        if let Some(s) = said {
            view = view.with_text(s);
        }
        let out =
            Out { view: view.personal(), kind: DeliveryKind::Message, dedupe_key: Some(format!("cook-review:{card}")) };
        Ok(Next::Finish(vec![out]))
    }
}

#[async_trait::async_trait]
impl Flow for Cook {
    fn name(&self) -> &'static str {
        "cook"
    }

    fn description(&self) -> &'static str {
        "Your generative collections: progress, pause, resume, stop, review"
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
