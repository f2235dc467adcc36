//! `train`: name the LoRA → add images (at least `training.min_images`) →
//! optional captions → settings and price → train. The training's job
//! carries this conversation as its source, so its progress edits one
//! message in place and its result says the LoRA is ready. Every rule
//! (slots, duplicates, captions, prices, the feature flag) is the core's.

use serde_json::{Map, Value, json};
use station_core::training::{Dataset, TrainingError, TrainingQuote, TrainingRequest, definitions, slugify};

use crate::flow::{Accepts, Cx, Flow, FlowError, Next, Out, Start, StepInput, StepSpec, get_str, with};
use crate::outbox::JobSource;
use crate::platform::DeliveryKind;
use crate::view::{Block, Button, Field, ImageRef, InputKind, Rich, View, points};

/// The train flow.
pub struct Train;

const STEPS: &[StepSpec] = &[
    StepSpec { id: "pick", accepts: &[Accepts::Text] },
    StepSpec { id: "name", accepts: &[Accepts::Text, Accepts::Image] },
    StepSpec { id: "images", accepts: &[Accepts::Image, Accepts::Text] },
    StepSpec { id: "caption", accepts: &[Accepts::Text] },
    StepSpec { id: "autocaption", accepts: &[Accepts::Text] },
    StepSpec { id: "settings", accepts: &[Accepts::Text] },
];

/// Step presets offered as buttons (any value in the definition's range can be typed).
const STEP_PRESETS: &[u64] = &[500, 1000, 2000];

/// A refusal of the core in words, or the error the engine apologises for.
fn words(e: TrainingError) -> Result<String, FlowError> {
    match e {
        TrainingError::Storage(e) => Err(e.into()),
        TrainingError::Submit(s) => Ok(crate::results::refusal_text(&s)),
        TrainingError::Invalid { field, reason } => Ok(match field.as_str() {
            "name" => format!("That name does not work: {reason}."),
            "image" => format!("That image was not added: {reason}."),
            "caption" => format!("That caption is too long: {reason}."),
            "captions" => capitalised(&reason),
            "feature" => reason,
            _ => format!("{field}: {reason}."),
        }),
        other => Ok(other.to_string()),
    }
}

/// `text` with its first letter in capitals and a full stop.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
    format!("{first}{}.", chars.as_str().trim_end_matches('.'))
}

fn dataset_key(state: &Value) -> &str {
    get_str(state, "dataset").unwrap_or("")
}

fn settings_of(state: &Value) -> Map<String, Value> {
    state.get("settings").and_then(Value::as_object).cloned().unwrap_or_default()
}

fn images_of(state: &Value) -> Vec<String> {
    state
        .get("pending")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

impl Train {
    /// The account's dataset called `name`, created when it has none.
    async fn open_or_create(cx: &Cx<'_>, name: &str) -> Result<Result<Dataset, String>, FlowError> {
        let slug = slugify(name);
        if !slug.is_empty()
            && let Ok(d) = cx.station.dataset(cx.account, &slug).await
        {
            return Ok(Ok(d));
        }
        match cx.station.create_dataset(cx.account, name, None).await {
            Ok(d) => Ok(Ok(d)),
            Err(e) => Ok(Err(words(e)?)),
        }
    }

    /// Adds chat images to the dataset; the notes say what was refused.
    async fn add(cx: &Cx<'_>, key: &str, media: &[String]) -> Result<Vec<String>, FlowError> {
        let mut notes = vec![];
        for id in media {
            if let Err(e) = cx.station.add_dataset_media(cx.account, key, id, "").await {
                notes.push(words(e)?);
            }
        }
        Ok(notes)
    }

    /// Goes to the images step of `dataset` after adding `media`.
    async fn to_images(cx: &Cx<'_>, state: &Value, dataset: &Dataset, media: &[String]) -> Result<Next, FlowError> {
        let notes = Self::add(cx, &dataset.row.slug, media).await?;
        let s = with(&with(state, "dataset", dataset.row.slug.clone()), "notes", json!(notes));
        Ok(Next::Goto("images".into(), with(&s, "pending", json!([]))))
    }

    /// The request the state describes; `key` only when it is submitted.
    fn request(state: &Value, cx: &Cx<'_>, key: Option<String>) -> TrainingRequest {
        TrainingRequest {
            dataset: dataset_key(state).to_owned(),
            base_model: get_str(state, "base_model").map(str::to_owned),
            settings: settings_of(state),
            source: Some(
                serde_json::to_value(JobSource {
                    conversation: cx.conversation.clone(),
                    instance: Some(cx.instance_id.to_owned()),
                    // Its first message is the intro; the card shows that.
                    card: None,
                })
                .expect("source serialises"),
            ),
            idempotency_key: key,
            callback_url: None,
        }
    }

    fn quote_view(dataset: &Dataset, quote: &TrainingQuote) -> View {
        let shown = |k: &str| quote.settings.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        let mut fields = vec![
            Field { name: "Images".into(), value: quote.images.to_string(), inline: true },
            Field { name: "Base model".into(), value: quote.base_model.clone(), inline: true },
            Field { name: "Steps".into(), value: quote.steps.to_string(), inline: true },
        ];
        for (key, label) in [("rank", "Rank"), ("learning_rate", "Learning rate"), ("checkpoint", "Checkpoint")] {
            if let Some(v) = shown(key) {
                fields.push(Field { name: label.into(), value: v, inline: true });
            }
        }
        let affordable = quote.available >= quote.price;
        let mut view = View::default()
            .block(Block::Card {
                title: format!("Train “{}”", dataset.row.name),
                body: Some(
                    Rich::plain("Your LoRA will be called ")
                        .bold(quote.lora_slug.clone())
                        .text(". Put ")
                        .code(quote.trigger_word.clone())
                        .text(" in a prompt to use it; only you can until you share it."),
                ),
                image: None,
                fields,
            })
            .with_text(
                Rich::plain("Price: ")
                    .bold(points(quote.price))
                    .text(format!(" (you have {} available).", points(quote.available))),
            );
        if quote.estimate.is_some() {
            // Priced by the time it takes: say how the hold was estimated.
            view = view.with_text(format!("That is {}.", quote.explanation));
        }
        if !affordable {
            view = view.with_text("That is more than you have: fewer steps cost less, or /balance shows your points.");
        }
        view = view.with_text("Send name=value to change a setting (for example steps=1500), or use the buttons.");
        let mut first = vec![];
        if affordable {
            first.push(Button::action(format!("▶ Train · {}", points(quote.price)), "train", Value::Null).primary());
        }
        first.push(Button::action("✍ Captions", "captions", Value::Null));
        first.push(Button::action("✨ Auto-captions", "autocaption", Value::Null));
        let presets = STEP_PRESETS
            .iter()
            .filter(|s| **s != quote.steps)
            .map(|s| Button::action(format!("{s} steps"), "steps", json!({"steps": s})))
            .collect();
        view.row(first).row(presets).row(vec![
            Button::action("◀ Images", "back", Value::Null),
            Button::action("Cancel", "cancel", Value::Null).danger(),
        ])
    }
}

#[async_trait::async_trait]
impl Flow for Train {
    fn name(&self) -> &'static str {
        "train"
    }

    fn description(&self) -> &'static str {
        "Train your own LoRA from your photos"
    }

    fn personal(&self) -> bool {
        true
    }

    fn steps(&self) -> &'static [StepSpec] {
        STEPS
    }

    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError> {
        if let Some(off) = cx.station.feature_refusal("training", cx.account).await {
            return Ok(Next::Finish(vec![Out::message(View::text(off.reason).personal())]));
        }
        let state = json!({"pending": start.images, "settings": {}});
        let name = start.text.trim();
        if !name.is_empty() {
            return match Self::open_or_create(cx, name).await? {
                Ok(d) => Self::to_images(cx, &state, &d, &start.images).await,
                Err(why) => Ok(Next::Invalid(why)),
            };
        }
        let open: Vec<_> = match cx.station.datasets(cx.account).await {
            Ok(list) => list.into_iter().filter(|d| d.status != "locked").collect(),
            Err(e) => return Ok(Next::Finish(vec![Out::message(View::text(words(e)?).personal())])),
        };
        // Images sent with the command go into the newest open dataset.
        if !start.images.is_empty()
            && let Some(d) = open.first()
            && let Ok(d) = cx.station.dataset(cx.account, &d.slug).await
        {
            return Self::to_images(cx, &state, &d, &start.images).await;
        }
        if open.is_empty() { Ok(Next::Goto("name".into(), state)) } else { Ok(Next::Goto("pick".into(), state)) }
    }

    async fn view(&self, cx: &Cx<'_>, step: &str, state: &Value) -> Result<View, FlowError> {
        match step {
            "pick" => {
                let open = cx.station.datasets(cx.account).await.unwrap_or_default();
                let options: Vec<Button> = open
                    .iter()
                    .filter(|d| d.status != "locked")
                    .take(10)
                    .map(|d| Button::action(d.name.clone(), "open", json!({"dataset": d.slug})))
                    .collect();
                Ok(View::text("Continue a LoRA you started, or begin a new one.")
                    .row(vec![Button::action("➕ New LoRA", "new", Value::Null).primary()])
                    .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()])
                    .ask("LoRA", InputKind::Choice { options }))
            }
            "name" => Ok(View::text(match images_of(state).len() {
                0 => "What should your LoRA be called? Its name also gives the trigger word you will put in \
                      prompts (“Tom Cat” → tom-cat)."
                    .to_string(),
                n => format!(
                    "Got {n} photo{}. What should your LoRA be called? Its name also gives the trigger word you \
                     will put in prompts (“Tom Cat” → tom-cat).",
                    if n == 1 { "" } else { "s" }
                ),
            })
            .row(vec![Button::action("Cancel", "cancel", Value::Null).danger()])
            .ask("Name", InputKind::Text { placeholder: Some("Tom Cat".into()), multiline: false, max_len: Some(80) })),
            "images" => {
                let d = match cx.station.dataset(cx.account, dataset_key(state)).await {
                    Ok(d) => d,
                    Err(e) => return Ok(View::text(words(e)?)),
                };
                let n = d.images.len() as u64;
                let mut text = Rich::plain("LoRA ")
                    .bold(d.row.name.clone())
                    .text(format!(": {n} of {} images (at least {}).", d.max_images, d.min_images));
                text = text.text(if n < d.min_images {
                    format!(
                        " Send {} more photo{} of your subject: different poses, backgrounds and light work best.",
                        d.min_images - n,
                        if d.min_images - n == 1 { "" } else { "s" }
                    )
                } else if n < d.max_images {
                    " Send more photos, or continue.".to_string()
                } else {
                    " The dataset is full.".to_string()
                });
                let mut view = View::default();
                for note in state.get("notes").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(t) = note.as_str() {
                        view = view.with_text(format!("⚠ {t}"));
                    }
                }
                view = view.with_text(text);
                let mut row = vec![];
                if n >= d.min_images {
                    row.push(Button::action("▶ Continue", "done", Value::Null).primary());
                }
                row.push(Button::action("Cancel", "cancel", Value::Null).danger());
                view = view.row(row);
                if n < d.max_images {
                    let left = (d.max_images - n) as u32;
                    view = view.ask("Photos", InputKind::Image { min: 1, max: left });
                }
                Ok(view)
            }
            "caption" => {
                let d = match cx.station.dataset(cx.account, dataset_key(state)).await {
                    Ok(d) => d,
                    Err(e) => return Ok(View::text(words(e)?)),
                };
                let slot = state.get("slot").and_then(Value::as_i64).unwrap_or(1);
                let Some(img) = d.images.iter().find(|i| i.position == slot) else {
                    return Ok(View::text("That image is gone.").row(vec![Button::action(
                        "Done",
                        "done",
                        Value::Null,
                    )]));
                };
                let mut image = ImageRef::media(&img.media_id, "image/png");
                if let Ok(row) = cx.station.media.row(&img.media_id, Some(cx.account)).await {
                    image.mime = row.mime;
                }
                image.caption = Some(format!("{slot} of {}: {}", d.images.len(), img.caption));
                Ok(View::default()
                    .block(Block::Image { image })
                    .with_text(
                        Rich::plain("Describe what is in this picture besides your subject (the trigger word ")
                            .code(d.row.trigger_word.clone())
                            .text(" is added for you), or keep the caption."),
                    )
                    .row(vec![
                        Button::action("Keep", "keep", Value::Null).primary(),
                        Button::action("Keep the rest", "done", Value::Null),
                    ])
                    .ask("Caption", InputKind::Text { placeholder: None, multiline: true, max_len: Some(1000) }))
            }
            "autocaption" => {
                let run = match cx.station.caption_run(cx.account, dataset_key(state)).await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        return Ok(View::text("No captions are being written.").row(vec![Button::action(
                            "◀ Back",
                            "back",
                            Value::Null,
                        )]));
                    }
                    Err(e) => return Ok(View::text(words(e)?)),
                };
                let mut view = View::default();
                if let Some(price) = state.get("caption_price").and_then(Value::as_i64) {
                    view = view.with_text(format!("Captions cost {}.", points(price)));
                }
                view = view.with_text(Rich::plain(run.summary()).text(if run.running {
                    " (press Refresh to see how far it is)."
                } else {
                    "."
                }));
                for i in run.items.iter().filter(|i| i.status == "failed") {
                    if let (Some(p), Some(e)) = (i.position, &i.error) {
                        view = view.with_text(format!("⚠ Photo {p}: {e}"));
                    }
                }
                let row = if run.running {
                    vec![Button::action("↻ Refresh", "refresh", Value::Null).primary()]
                } else {
                    vec![
                        Button::action("✍ Review captions", "review", Value::Null).primary(),
                        Button::action("✨ Rewrite all", "rewrite", Value::Null),
                    ]
                };
                Ok(view.row(row).row(vec![Button::action("◀ Settings", "back", Value::Null)]))
            }
            "settings" => {
                let req = Self::request(state, cx, None);
                let dataset = match cx.station.dataset(cx.account, &req.dataset).await {
                    Ok(d) => d,
                    Err(e) => return Ok(View::text(words(e)?)),
                };
                match cx.station.quote_training(cx.account, &req).await {
                    Ok(q) => {
                        let mut view = Self::quote_view(&dataset, &q);
                        // A choice of base model when backends have checkpoints for several.
                        let bases = cx.station.trainable_base_models().await;
                        if bases.len() > 1 {
                            let row = bases
                                .into_iter()
                                .filter(|b| *b != q.base_model)
                                .map(|b| Button::action(format!("Train for {b}"), "base", json!({"base": b})))
                                .collect();
                            view = view.row(row);
                        }
                        Ok(view)
                    }
                    Err(e) => Ok(View::text(words(e)?).row(vec![
                        Button::action("◀ Images", "back", Value::Null),
                        Button::action("Cancel", "cancel", Value::Null).danger(),
                    ])),
                }
            }
            other => Ok(View::text(format!("(unknown step {other})"))),
        }
    }

    async fn input(&self, cx: &Cx<'_>, step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError> {
        match (step, input) {
            ("pick", StepInput::Action { name, .. }) if name == "new" => Ok(Next::Goto("name".into(), state.clone())),
            ("pick", StepInput::Action { name, args }) if name == "choose" || name == "open" => {
                let key = get_str(&args, "dataset").or_else(|| get_str(&args, "value")).unwrap_or("");
                match cx.station.dataset(cx.account, key).await {
                    Ok(d) => Self::to_images(cx, state, &d, &images_of(state)).await,
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            ("pick" | "name", StepInput::Text(t)) => match Self::open_or_create(cx, t.trim()).await? {
                Ok(d) => Self::to_images(cx, state, &d, &images_of(state)).await,
                Err(why) => Ok(Next::Invalid(why)),
            },
            ("name", StepInput::Images(m)) => {
                let mut pending = images_of(state);
                pending.extend(m);
                // The photos wait for the name.
                Ok(Next::Stay(with(state, "pending", json!(pending))))
            }
            ("images", StepInput::Images(m)) => {
                let notes = Self::add(cx, dataset_key(state), &m).await?;
                Ok(Next::Stay(with(state, "notes", json!(notes))))
            }
            ("images", StepInput::Action { name, .. }) if name == "done" => {
                let s = with(state, "notes", json!([]));
                Ok(Next::Goto("settings".into(), s))
            }
            ("images", StepInput::Text(t)) if t.trim().eq_ignore_ascii_case("done") => {
                Ok(Next::Goto("settings".into(), with(state, "notes", json!([]))))
            }
            ("images", _) => {
                Ok(Next::Invalid("Send photos of your subject, or press Continue when you have enough.".into()))
            }
            ("caption", StepInput::Text(t)) => {
                let slot = state.get("slot").and_then(Value::as_i64).unwrap_or(1);
                if let Err(e) = cx.station.set_dataset_caption(cx.account, dataset_key(state), slot, &t).await {
                    return Ok(Next::Invalid(words(e)?));
                }
                next_caption(cx, state, slot).await
            }
            ("caption", StepInput::Action { name, .. }) if name == "keep" => {
                let slot = state.get("slot").and_then(Value::as_i64).unwrap_or(1);
                next_caption(cx, state, slot).await
            }
            ("caption", StepInput::Action { name, .. }) if name == "done" => Ok(Next::Back),
            ("settings" | "autocaption", StepInput::Action { name, .. })
                if name == "autocaption" || name == "rewrite" =>
            {
                match cx.station.caption_dataset(cx.account, dataset_key(state), name == "rewrite").await {
                    Ok(run) => {
                        let s = with(state, "caption_price", json!(run.price.unwrap_or(0)));
                        if step == "autocaption" { Ok(Next::Stay(s)) } else { Ok(Next::Goto("autocaption".into(), s)) }
                    }
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            ("autocaption", StepInput::Action { name, .. }) if name == "refresh" => Ok(Next::Stay(state.clone())),
            ("autocaption", StepInput::Action { name, .. }) if name == "review" => {
                Ok(Next::Goto("caption".into(), with(state, "slot", 1)))
            }
            ("settings", StepInput::Action { name, .. }) if name == "captions" => {
                Ok(Next::Goto("caption".into(), with(state, "slot", 1)))
            }
            ("settings", StepInput::Action { name, args }) if name == "base" => {
                let base = get_str(&args, "base").unwrap_or("").to_string();
                // The checkpoint chosen for the other base model does not carry over.
                let mut settings = settings_of(state);
                settings.remove("checkpoint");
                Ok(Next::Stay(with(&with(state, "base_model", base), "settings", settings)))
            }
            ("settings", StepInput::Action { name, args }) if name == "steps" => {
                let mut settings = settings_of(state);
                settings.insert("steps".into(), args.get("steps").cloned().unwrap_or(json!(1000)));
                Ok(Next::Stay(with(state, "settings", settings)))
            }
            ("settings", StepInput::Text(t)) => {
                let (free, pairs) = super::make::split_assignments(&t);
                let names = definitions().first().map(|d| d.tool.inputs.keys().cloned().collect::<Vec<_>>());
                if !free.trim().is_empty() || pairs.is_empty() {
                    return Ok(Next::Invalid(format!(
                        "Send name=value to change a setting (for example steps=1500); settings: {}.",
                        names.unwrap_or_default().join(", ")
                    )));
                }
                let mut settings = settings_of(state);
                for (k, v) in pairs {
                    let value = v.parse::<i64>().map(Value::from).or_else(|_| v.parse::<f64>().map(Value::from));
                    settings.insert(k, value.unwrap_or(Value::String(v)));
                }
                let s = with(state, "settings", settings);
                // The core checks every field; a refusal keeps the old settings.
                if let Err(e) = cx.station.quote_training(cx.account, &Self::request(&s, cx, None)).await {
                    return Ok(Next::Invalid(words(e)?));
                }
                Ok(Next::Stay(s))
            }
            ("settings", StepInput::Action { name, .. }) if name == "train" => {
                // Under Flows::handle_once: a replayed input finds its training.
                let req = Self::request(state, cx, cx.input.next_job());
                match cx.station.start_training(cx.account, &req).await {
                    Ok(t) => {
                        let Some(job) = t.job else {
                            return Ok(Next::Finish(vec![Out::message(View::text(
                                "Your training has ended already: /status shows it.",
                            ))]));
                        };
                        let view = cx.flows.progress_view(&job, None).await;
                        let intro = View::text(
                            Rich::plain("Training ")
                                .bold(t.row.lora_slug.clone())
                                .text(". This takes a while; this message shows its progress and I will tell you when it is ready."),
                        );
                        Ok(Next::Finish(vec![
                            Out::message(intro),
                            Out {
                                view,
                                kind: DeliveryKind::Progress,
                                dedupe_key: Some(format!("progress:{}", job.id)),
                            },
                        ]))
                    }
                    Err(e) => Ok(Next::Invalid(words(e)?)),
                }
            }
            (_, _) => Ok(Next::Invalid("Use the buttons of this step.".into())),
        }
    }
}

/// The caption step of the next image, or back to the settings after the last.
async fn next_caption(cx: &Cx<'_>, state: &Value, slot: i64) -> Result<Next, FlowError> {
    let count = match cx.station.dataset(cx.account, dataset_key(state)).await {
        Ok(d) => d.images.len() as i64,
        Err(e) => return Ok(Next::Invalid(words(e)?)),
    };
    if slot >= count { Ok(Next::Back) } else { Ok(Next::Stay(with(state, "slot", slot + 1))) }
}
