//! `lora`: one of your own LoRAs (a `/loras` button) — whom it is shared
//! with and whether it is public, and what you can do with it: share it with
//! someone or stop sharing it, make it public (at once, or after an
//! administrator's approval), delete it. Every rule is the core's (`station_core::own_loras`).

use serde_json::{Value, json};
use station_core::audit::Via;
use station_core::own_loras::{OwnLora, Publication};
use station_core::training::TrainingError;

use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str};
use crate::view::{Block, Button, Field, InputKind, Rich, View};

/// The own-LoRA flow (started by a `/loras` button, not a command).
pub struct Lora;

const STEPS: &[StepSpec] = &[
    StepSpec { id: "menu", accepts: &[] },
    StepSpec { id: "share", accepts: &[Accepts::Text] },
    StepSpec { id: "unshare", accepts: &[] },
    StepSpec { id: "delete", accepts: &[] },
];

/// A refusal in words (a storage failure stays an error).
fn words(e: TrainingError) -> Result<String, FlowError> {
    match e {
        TrainingError::Storage(s) => Err(s.into()),
        TrainingError::Invalid { field, reason } if field == "account" => Ok(format!("That account: {reason}.")),
        TrainingError::Invalid { reason, .. } => Ok(format!("{reason}.")),
        TrainingError::NotFound(_) => Ok("That LoRA is no longer yours or was deleted.".into()),
        other => Ok(other.to_string()),
    }
}

fn done(view: View) -> Next {
    Next::Finish(vec![Out::message(view.personal())])
}

fn via(cx: &Cx<'_>) -> Via {
    Via::Chat(cx.conversation.platform.clone())
}

/// What the person reads about their LoRA.
fn card(o: &OwnLora) -> View {
    let trigger = o.lora.trigger_words.first().cloned().unwrap_or_else(|| o.lora.slug.clone());
    let publication = match o.publication.as_str() {
        "public" => "everyone can use it",
        "pending" => "waiting for an administrator to make it public",
        "refused" => "private (an administrator did not make it public)",
        _ => "private",
    };
    let shared = if o.shared_with.is_empty() { "nobody yet".to_owned() } else { o.shared_with.join(", ") };
    let fields = vec![
        Field { name: "Trigger word".into(), value: trigger, inline: true },
        Field { name: "Base model".into(), value: o.lora.checkpoint.clone(), inline: true },
        Field { name: "Who can use it".into(), value: publication.into(), inline: false },
        Field { name: "Shared with".into(), value: shared, inline: false },
    ];
    View::default().block(Block::Card { title: o.lora.name.clone(), body: None, image: None, fields })
}

#[async_trait::async_trait]
impl Flow for Lora {
    fn name(&self) -> &'static str {
        "lora"
    }

    fn description(&self) -> &'static str {
        "Share, publish or delete one of your LoRAs"
    }

    fn personal(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        STEPS
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        let Some(slug) = get_str(&start.args, "lora") else {
            return Ok(done(View::text("Send /loras and press one of your LoRAs.")));
        };
        match cx.station.own_lora(cx.account, slug).await {
            Ok(_) => Ok(Next::Goto("menu".into(), json!({"lora": slug}))),
            Err(e) => Ok(done(View::text(words(e)?))),
        }
    }

    async fn view(&self, cx: &Cx<'_>, step: &str, state: &Value) -> Result<View, FlowError> {
        let slug = get_str(state, "lora").unwrap_or("");
        let own = match cx.station.own_lora(cx.account, slug).await {
            Ok(o) => o,
            Err(e) => return Ok(View::text(words(e)?).personal()),
        };
        let view = match step {
            "share" => View::text(Rich::plain("Who should be able to use ").bold(own.lora.name.clone()).text(
                "? Send their account: an identity such as telegram:123456 or discord:987654 (they must have used \
                 Station once), or their account id.",
            ))
            .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()])
            .ask(
                "Account",
                InputKind::Text { placeholder: Some("telegram:123456".into()), multiline: false, max_len: Some(200) },
            ),
            "unshare" => {
                let buttons: Vec<Button> = own
                    .shared_with
                    .iter()
                    .zip(&own.shared_ids)
                    .take(10)
                    .map(|(name, id)| Button::action(name.clone(), "unshare", json!({"account": id})))
                    .collect();
                View::text(Rich::plain("Who should no longer be able to use ").bold(own.lora.name.clone()).text("?"))
                    .row(buttons)
                    .row(vec![Button::action("Cancel", "cancel", Value::Null)])
            }
            "delete" => View::text(
                Rich::plain("Delete ")
                    .bold(own.lora.name.clone())
                    .text("? Nobody can use it afterwards, and its trigger word stops working. Your photos stay."),
            )
            .row(vec![
                Button::action("🗑 Delete", "delete", Value::Null).danger(),
                Button::action("Keep it", "cancel", Value::Null),
            ]),
            _ => {
                let mut row = vec![Button::action("👥 Share", "share", Value::Null)];
                if !own.shared_ids.is_empty() {
                    row.push(Button::action("🚫 Stop sharing", "unshare", Value::Null));
                }
                if own.publication != "public" && own.publication != "pending" {
                    row.push(Button::action("🌍 Make public", "publish", Value::Null));
                }
                row.push(Button::action("🗑 Delete", "delete", Value::Null).danger());
                row.push(Button::action("Done", "cancel", Value::Null));
                card(&own).row(row)
            }
        };
        Ok(view.personal())
    }

    async fn input(&self, cx: &Cx<'_>, step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        let slug = get_str(state, "lora").unwrap_or("").to_owned();
        match (step, input) {
            ("menu", StepInput::Action { name, .. }) if name == "share" => {
                Ok(Next::Goto("share".into(), state.clone()))
            }
            ("menu", StepInput::Action { name, .. }) if name == "unshare" => {
                Ok(Next::Goto("unshare".into(), state.clone()))
            }
            ("unshare", StepInput::Action { name, args }) if name == "unshare" => {
                let who = get_str(&args, "account").unwrap_or("").to_owned();
                let name = match cx.station.own_lora(cx.account, &slug).await {
                    Ok(o) => o.shared_ids.iter().position(|i| *i == who).map(|p| o.shared_with[p].clone()),
                    Err(e) => return Ok(Next::Invalid(words(e)?)),
                };
                match cx.station.unshare_lora(cx.account, &slug, &who, via(cx)).await {
                    Ok(_) => Ok(done(View::text(
                        Rich::plain("🚫 ")
                            .bold(name.unwrap_or_else(|| "They".into()))
                            .text(" can no longer use ")
                            .code(slug)
                            .text("."),
                    ))),
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            ("menu", StepInput::Action { name, .. }) if name == "delete" => {
                Ok(Next::Goto("delete".into(), state.clone()))
            }
            ("menu", StepInput::Action { name, .. }) if name == "publish" => {
                match cx.station.publish_lora(cx.account, &slug, via(cx)).await {
                    Ok(Publication::Public) => {
                        Ok(done(View::text(Rich::plain("🌍 ").code(slug).text(" is public: everyone can use it now."))))
                    }
                    Ok(Publication::Pending) => Ok(done(View::text(
                        Rich::plain("🌍 Asked an administrator to make ")
                            .code(slug)
                            .text(" public. Until then only you and those you shared it with can use it."),
                    ))),
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            ("share", StepInput::Text(who)) => match cx.station.share_lora(cx.account, &slug, &who, via(cx)).await {
                Ok(other) => Ok(done(View::text(
                    Rich::plain("👥 ").bold(other.name).text(" can now use ").code(slug).text(" by its trigger word."),
                ))),
                Err(e) => Ok(Next::Invalid(words(e)?)),
            },
            ("delete", StepInput::Action { name, .. }) if name == "delete" => {
                match cx.station.delete_lora(cx.account, &slug, via(cx)).await {
                    Ok(()) => Ok(done(View::text(Rich::plain("🗑 Deleted ").code(slug).text(".")))),
                    // Deleted already (a replayed press): say so, once more.
                    Err(TrainingError::NotFound(_)) => {
                        Ok(done(View::text(Rich::plain("🗑 Deleted ").code(slug).text("."))))
                    }
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            _ => Ok(Next::Invalid("Use the buttons of this step.".into())),
        }
    }
}
