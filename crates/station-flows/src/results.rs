//! Results and the actions on them: rerun, tweak, use as input, info, rate,
//! hide, cancel — the same everywhere a result is shown.

use serde_json::{Map, Value, json};
use station_core::{AccountRow, JobRow, JobStatus, RatingError};
use station_core::{SubmitError, SubmitRequest};

use crate::engine::{Flows, Reply, StandaloneActions};
use crate::flow::{FlowError, Out, Start};
use crate::input::InputKey;
use crate::outbox::{JobSource, string_list};
use crate::platform::{Conversation, DeliveryKind};
use crate::view::{Block, Button, Field, ImageRef, Rich, View};

/// The message showing a finished job.
pub async fn result_view(flows: &Flows, job: &JobRow) -> Result<View, FlowError> {
    let station = flows.station();
    let tool = station.tools.get(&job.tool_id);
    let tool_name = tool.as_ref().map(|t| t.name.clone()).unwrap_or(job.tool_id.clone());
    let args = json!({"job": job.id});
    if station_core::training::definition_for_tool(&job.tool_id).is_some() {
        return training_result_view(flows, job).await;
    }
    match job.status() {
        JobStatus::Succeeded => {
            let mut images = vec![];
            for m in station.job_outputs(job).await? {
                let mut r = ImageRef::media(&m.id, &m.mime);
                r.width = Some(m.width as u32);
                r.height = Some(m.height as u32);
                images.push(r);
            }
            let caption = caption(job, &tool_name);
            let mut view = View::default();
            match images.len() {
                0 => view = view.with_text(format!("{tool_name} finished but produced no images.")),
                1 => {
                    let mut img = images.remove(0);
                    img.caption = Some(caption);
                    view = view.block(Block::Image { image: img });
                }
                _ => {
                    if let Some(first) = images.first_mut() {
                        first.caption = Some(caption);
                    }
                    view = view.block(Block::Gallery { images });
                }
            }
            Ok(view
                .row(vec![
                    Button::action("🔁 Rerun", "rerun", args.clone()).primary(),
                    Button::action("✏️ Tweak", "tweak", args.clone()),
                    Button::action("➡️ Use as input", "use", args.clone()),
                ])
                .row(vec![
                    Button::action("ℹ️ Info", "info", args.clone()),
                    Button::action("⭐ Rate", "rate", args.clone()),
                    Button::action("🙈 Hide", "hide", args.clone()),
                    Button::action("➕ Collection", "start", json!({"flow": "collect", "args": args})),
                ]))
        }
        JobStatus::Failed => {
            Ok(View::text(Rich::plain("⚠ ").bold(tool_name).text(format!(" failed: {}.", failure_words(job))))
                .with_text("Your points for this run were returned.")
                .row(vec![Button::action("🔁 Try again", "rerun", args)]))
        }
        JobStatus::Cancelled => Ok(View::text(format!("{tool_name} was cancelled; your points were returned."))),
        _ => Ok(flows.progress_view(job, None).await),
    }
}

/// The message showing an ended cast: the last step's images (with the
/// actions of that result), or which step failed and why.
pub async fn cast_result_view(flows: &Flows, cast: &station_core::spells::CastView) -> Result<View, FlowError> {
    let station = flows.station();
    let again = Button::action(
        "🔁 Cast again",
        "start",
        json!({"flow": "cast", "args": {"spell": cast.spell, "inputs": cast.inputs}}),
    );
    match cast.status.as_str() {
        "succeeded" => {
            let mut images = vec![];
            for id in &cast.outputs {
                if let Ok(m) = station.media.row(id, None).await {
                    let mut r = ImageRef::media(&m.id, &m.mime);
                    r.width = Some(m.width as u32);
                    r.height = Some(m.height as u32);
                    images.push(r);
                }
            }
            let caption = format!("{} · {} steps", cast.spell_name, cast.steps_total);
            let mut view = View::default();
            match images.len() {
                0 => view = view.with_text(format!("{} finished but produced no images.", cast.spell_name)),
                1 => {
                    let mut img = images.remove(0);
                    img.caption = Some(caption);
                    view = view.block(Block::Image { image: img });
                }
                _ => {
                    if let Some(first) = images.first_mut() {
                        first.caption = Some(caption);
                    }
                    view = view.block(Block::Gallery { images });
                }
            }
            let mut row = vec![again.primary()];
            if let Some(last) = cast.steps.last() {
                let args = json!({"job": last.job_id});
                row.push(Button::action("➡️ Use as input", "use", args.clone()));
                row.push(Button::action("ℹ️ Info", "info", args.clone()));
                row.push(Button::action("➕ Collection", "start", json!({"flow": "collect", "args": args})));
            }
            Ok(view.row(row))
        }
        "cancelled" => Ok(View::text(format!(
            "{} was cancelled; the points for the steps that had not finished were returned.",
            cast.spell_name
        ))),
        _ => {
            let failed = cast.steps.iter().find(|s| s.status == "failed" || s.status == "cancelled");
            let why = match failed {
                Some(step) => match station.job(&step.job_id).await? {
                    Some(job) => format!("step {} of {} ({}) {}", step.step, cast.steps_total, step.tool_name, {
                        let words = failure_words(&job);
                        format!("failed: {words}")
                    }),
                    None => format!("step {} of {} failed", step.step, cast.steps_total),
                },
                None => "it could not go on".to_string(),
            };
            Ok(View::text(Rich::plain("⚠ ").bold(cast.spell_name.clone()).text(format!(": {why}.")))
                .with_text("Your points for the steps that did not run were returned.")
                .row(vec![again]))
        }
    }
}

/// The end of a training: the LoRA is ready (with its trigger word), or why not.
async fn training_result_view(flows: &Flows, job: &JobRow) -> Result<View, FlowError> {
    let station = flows.station();
    let Some(owner) = station.account_by_id(&job.account_id).await? else {
        return Ok(View::text("This training's account is gone."));
    };
    let training = match station.training_for_job(&owner, &job.id).await {
        Ok(t) => t,
        Err(station_core::training::TrainingError::Storage(e)) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(job = %job.id, error = %e, "could not complete a training for its result message");
            None
        }
    };
    let make = Button::action("🎨 Try it", "start", json!({"flow": "make"})).primary();
    let again = Button::action("🧪 Train again", "start", json!({"flow": "train"}));
    match (job.status(), training) {
        (JobStatus::Succeeded, Some(t)) if t.lora.is_some() => {
            let lora = t.lora.expect("checked");
            let trigger = lora.trigger_words.first().cloned().unwrap_or_else(|| lora.slug.clone());
            Ok(View::text(
                Rich::plain("✅ Your LoRA ")
                    .bold(lora.name.clone())
                    .text(" is ready. Put ")
                    .code(trigger.clone())
                    .text(format!(
                        " in a prompt to use it (for example: {trigger}, portrait in a garden). Only you can use it; \
                         /loras lists it."
                    )),
            )
            .row(vec![make]))
        }
        (JobStatus::Succeeded, t) => {
            let why = t.and_then(|t| t.row.error).unwrap_or_else(|| "it is still being stored".into());
            Ok(View::text(format!("⚠ The training finished but the LoRA is not ready: {why}.")).row(vec![again]))
        }
        (JobStatus::Failed, _) => Ok(View::text(
            Rich::plain("⚠ ").bold("Training").text(format!(" failed: {}.", training_failure_words(job))),
        )
        .with_text("Your points for it were returned; your photos are kept, so you can try again.")
        .row(vec![again])),
        (JobStatus::Cancelled, _) => {
            Ok(View::text("The training was cancelled; your points were returned and your photos are kept."))
        }
        _ => Ok(flows.progress_view(job, None).await),
    }
}

/// Why a training failed, in words for a person: a stalled run says for how
/// long it made no progress (Station's own words, kept in the job's error).
pub fn training_failure_words(job: &JobRow) -> String {
    match (job.error_code.as_deref(), job.error.as_deref()) {
        (Some("stalled"), Some(why)) => format!("it {why}, so it was stopped"),
        _ => failure_words(job).to_owned(),
    }
}

/// What a training's owner is told, as a message of its own, about its run:
/// `milestone` None for its start, else the percent reached (`step` of `of`
/// when the trainer reports steps). ComfyUI's trainer reports no loss while
/// it runs (only a loss map output at the end), so none is shown.
pub fn training_note_view(name: &str, milestone: Option<u8>, step: Option<u64>, of: Option<u64>) -> View {
    let steps = match (step, of) {
        (Some(s), Some(o)) if o > 0 => format!(" (step {s} of {o})"),
        _ => String::new(),
    };
    match milestone {
        None => View::text(Rich::plain("🧪 Training of ").bold(name.to_owned()).text(format!(
            " has started{}. I will tell you at 25, 50 and 75 % and when it is done.",
            of.map(|o| format!(": {o} steps")).unwrap_or_default()
        ))),
        Some(m) => {
            View::text(Rich::plain(format!("🧪 {m} % of ")).bold(name.to_owned()).text(format!(" trained{steps}.")))
        }
    }
}

/// The message of its own telling a training's owner it ended (done or
/// failed); None for a cancelled one (its owner or an operator stopped it).
pub fn training_end_note(name: &str, job: &JobRow) -> Option<View> {
    match job.status() {
        JobStatus::Succeeded => {
            Some(View::text(Rich::plain("🔔 ").bold(name.to_owned()).text(" is trained: your LoRA is ready to use.")))
        }
        JobStatus::Failed => Some(View::text(
            Rich::plain("🔔 Training of ")
                .bold(name.to_owned())
                .text(format!(" failed: {}. Your points were returned.", training_failure_words(job))),
        )),
        _ => None,
    }
}

/// Why a job failed, in words for a person: never the stored code
/// (`timeout`, `no_backend`) or a backend's raw message.
pub fn failure_words(job: &JobRow) -> &'static str {
    match job.error_code.as_deref() {
        Some("timeout") => "it took too long and was stopped",
        Some("no_backend") => "no image server can run this tool right now",
        Some("backend_unavailable") => "the image servers could not be reached",
        Some("invalid_input") => "the image server did not accept these settings",
        Some("execution_error") => "the image server ran into an error",
        _ => "something went wrong",
    }
}

/// What a job was, in a few words: its tool, the start of its prompt (or
/// other text input) and how long ago it was made — "Dream: a red fox… · 5 min ago".
pub fn job_label(flows: &Flows, job: &JobRow, now_ms: i64) -> String {
    let tool = flows.station().tools.get(&job.tool_id);
    let name = tool.as_ref().map(|t| t.name.clone()).unwrap_or_else(|| job.tool_id.clone());
    let params: Map<String, Value> = serde_json::from_str(&job.params).unwrap_or_default();
    let text = tool
        .as_ref()
        .and_then(|t| {
            let mut text_inputs = t.inputs.iter().filter(|(_, d)| d.kind == station_core::tools::InputType::Text);
            let (n, _) = t
                .primary_input()
                .filter(|(_, d)| d.kind == station_core::tools::InputType::Text)
                .or_else(|| text_inputs.next().map(|(n, d)| (n.as_str(), d)))?;
            params.get(n).and_then(Value::as_str).map(str::to_owned)
        })
        .filter(|t| !t.trim().is_empty());
    let ago = ago(now_ms - job.created_at);
    match text {
        Some(t) => format!("{name}: {} · {ago}", crate::view::excerpt(&t, 24)),
        None => format!("{name} · {ago}"),
    }
}

/// A duration in the past, roughly: "just now", "5 min ago", "3 h ago", "2 days ago".
pub fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        86_400..172_800 => "yesterday".into(),
        _ => format!("{} days ago", s / 86_400),
    }
}

fn caption(job: &JobRow, tool_name: &str) -> String {
    let params: Map<String, Value> = serde_json::from_str(&job.params).unwrap_or_default();
    let seed = params.iter().find(|(k, _)| k.contains("seed")).map(|(_, v)| v.to_string());
    match seed {
        Some(s) => format!("{tool_name} · seed {s}"),
        None => tool_name.to_string(),
    }
}

/// Submits a job for a conversation and writes its progress message
/// (which later updates edit in place). Refusals become friendly text.
/// `step` is the flow instance submitting it and the card it offers
/// ([`crate::flow::CardOffer`]), taken over by the job when offered.
#[allow(clippy::too_many_arguments)] // one submission's who, where, what and how, each needed
pub async fn submit_for(
    flows: &Flows,
    key: &InputKey,
    account: &AccountRow,
    conv: &Conversation,
    tool: &str,
    params: Map<String, Value>,
    step: Option<(&str, &crate::flow::CardOffer)>,
    confirmed: bool,
) -> Result<Result<(JobRow, Out), Refused>, FlowError> {
    let station = flows.station();
    let source = JobSource {
        conversation: conv.clone(),
        instance: step.map(|(i, _)| i.to_owned()),
        card: step.and_then(|(_, card)| card.take()),
    };
    let req = SubmitRequest {
        tool: tool.to_string(),
        params,
        source: Some(serde_json::to_value(&source).expect("source serialises")),
        confirmed,
        sponsor_scope: conv.group.clone(),
        // Under Flows::handle_once: a replayed input finds its job.
        idempotency_key: key.next_job(),
        ..Default::default()
    };
    match station.submit(account, req).await {
        Ok(job) => {
            let view = flows.progress_view(&job, None).await;
            let out = Out { view, kind: DeliveryKind::Progress, dedupe_key: Some(format!("progress:{}", job.id)) };
            Ok(Ok((job, out)))
        }
        Err(SubmitError::Storage(e)) => Err(e.into()),
        Err(SubmitError::ConfirmationRequired { price, .. }) => Ok(Err(Refused::Confirm(price))),
        Err(e) => Ok(Err(Refused::Text(refusal_text(&e)))),
    }
}

/// Why a conversation's submission did not queue a job.
#[derive(Debug, Clone)]
pub enum Refused {
    /// The price is over the user's threshold: ask first.
    Confirm(i64),
    /// Anything else, in words.
    Text(String),
}

/// A submission refusal as a chat user should read it.
pub fn refusal_text(e: &SubmitError) -> String {
    match e {
        SubmitError::Invalid(fields) => {
            let lines: Vec<String> = fields.iter().map(|f| format!("• {}: {}", f.field, f.reason)).collect();
            format!("Some settings are not right:\n{}", lines.join("\n"))
        }
        SubmitError::InsufficientPoints { needed, available } => format!(
            "Not enough points: this costs {needed} and you have {available}. /balance shows your points and \
             history."
        ),
        other => other.to_string(),
    }
}

async fn own_job(flows: &Flows, account: &AccountRow, args: &Value) -> Result<Option<JobRow>, FlowError> {
    let Some(id) = args.get("job").and_then(Value::as_str) else { return Ok(None) };
    match flows.station().job_for(account, id).await {
        Ok(job) => Ok(Some(job)),
        Err(station_core::JobAccessError::NotFound(_)) => Ok(None),
        Err(station_core::JobAccessError::Storage(e)) => Err(e.into()),
    }
}

/// The result actions and menu shortcuts: buttons that belong to no flow step.
pub struct ResultActions;

#[async_trait::async_trait]
impl StandaloneActions for ResultActions {
    async fn run(
        &self,
        flows: &Flows,
        key: &InputKey,
        account: &AccountRow,
        conv: &Conversation,
        name: &str,
        args: Value,
    ) -> Result<Reply, FlowError> {
        standalone(flows, key, account, conv, name, args).await
    }
}

/// Handles a button that belongs to no flow step (result actions, menu shortcuts).
async fn standalone(
    flows: &Flows,
    key: &InputKey,
    account: &AccountRow,
    conv: &Conversation,
    name: &str,
    args: Value,
) -> Result<Reply, FlowError> {
    let station = flows.station();
    if name == "start" {
        let flow = args.get("flow").and_then(Value::as_str).unwrap_or("help").to_string();
        let start = Start { args: args.get("args").cloned().unwrap_or(Value::Null), ..Default::default() };
        return flows.start_flow_keyed(key, account, conv, &flow, start).await;
    }
    if name == "tweak_form" {
        // A form opened by a result's tweak button (Discord modal): run at once.
        let inner = args.get("args").cloned().unwrap_or(Value::Null);
        let Some(job) = own_job(flows, account, &inner).await? else {
            return Ok(Reply { toast: Some("That result is gone.".into()) });
        };
        let mut params = station.reusable_params(&job, true);
        let tool = station.tools.get(&job.tool_id);
        if let (Some(form), Some(tool)) = (args.get("form").and_then(Value::as_object), tool.as_ref()) {
            for (k, v) in form {
                if let Some(input) = tool.inputs.get(k) {
                    params.insert(k.clone(), station_core::tools::coerce_value(input, v));
                }
            }
        }
        return run_again(flows, key, account, conv, &job, params).await;
    }
    let Some(job) = own_job(flows, account, &args).await? else {
        return Ok(Reply { toast: Some("That result is no longer available.".into()) });
    };
    match name {
        "rerun" => {
            let params = station.reusable_params(&job, true);
            run_again(flows, key, account, conv, &job, params).await
        }
        "tweak" => {
            let params = station.reusable_params(&job, true);
            let start = Start { params, args: json!({"tool": job.tool_id, "tweak": true}), ..Default::default() };
            flows.start_flow_keyed(key, account, conv, "make", start).await
        }
        "use" => {
            let images = string_list(job.outputs.as_deref());
            let start = Start { images, args: json!({"use_as_input": true}), ..Default::default() };
            flows.start_flow_keyed(key, account, conv, "make", start).await
        }
        "open" => {
            let view = result_view(flows, &job).await?;
            flows.send_keyed(key, account, conv, Out { view, kind: DeliveryKind::Message, dedupe_key: None }).await?;
            Ok(Reply::default())
        }
        "info" => {
            let view = info_view(flows, &job).await?.personal();
            flows.send_keyed(key, account, conv, Out::message(view)).await?;
            Ok(Reply::default())
        }
        "rate" => {
            let buttons = (1..=5)
                .map(|n| Button::action("★".repeat(n), "rate_set", json!({"job": job.id, "stars": n})))
                .collect();
            let out = Out::message(View::text("How good is this result?").row(buttons).personal());
            flows.send_keyed(key, account, conv, out).await?;
            Ok(Reply::default())
        }
        "rate_set" => {
            let stars = args.get("stars").and_then(Value::as_i64).unwrap_or(0).clamp(1, 5);
            match station.rate_job(account, &job.id, stars).await {
                Ok(_) | Err(RatingError::OutOfRange(_)) => {}
                Err(RatingError::Access(station_core::JobAccessError::NotFound(_))) => {
                    return Ok(Reply { toast: Some("That result is no longer available.".into()) });
                }
                Err(RatingError::Access(station_core::JobAccessError::Storage(e))) => return Err(e.into()),
            }
            Ok(Reply { toast: Some(format!("Rated {}", "★".repeat(stars as usize))) })
        }
        "hide" => {
            if let Err(station_core::JobAccessError::Storage(e)) = station.hide_job(account, &job.id).await {
                return Err(e.into());
            }
            Ok(Reply { toast: Some("Hidden from your /history.".into()) })
        }
        "cancel_job" => match station.cancel(account, &job.id).await? {
            Some(row) if row.status() == JobStatus::Cancelled => Ok(Reply { toast: Some("Cancelled.".into()) }),
            Some(row) if row.status().is_terminal() => {
                Ok(Reply { toast: Some(format!("Too late: it already {}.", row.status)) })
            }
            Some(_) => Ok(Reply { toast: Some("Stopping it…".into()) }),
            None => Ok(Reply { toast: Some("That job is not yours.".into()) }),
        },
        other => Ok(Reply { toast: Some(format!("Unknown action {other:?}.")) }),
    }
}

async fn run_again(
    flows: &Flows,
    key: &InputKey,
    account: &AccountRow,
    conv: &Conversation,
    job: &JobRow,
    params: Map<String, Value>,
) -> Result<Reply, FlowError> {
    match submit_for(flows, key, account, conv, &job.tool_id, params.clone(), None, false).await? {
        Ok((_, out)) => {
            flows.send_keyed(key, account, conv, out).await?;
            Ok(Reply { toast: Some("Queued".into()) })
        }
        Err(Refused::Confirm(price)) => {
            let start =
                Start { params, args: json!({"tool": job.tool_id, "confirm_price": price}), ..Default::default() };
            flows.start_flow_keyed(key, account, conv, "make", start).await
        }
        Err(Refused::Text(msg)) => {
            flows.notice_keyed(key, account, conv, View::text(format!("⚠ {msg}"))).await?;
            Ok(Reply::default())
        }
    }
}

/// The info card of a job.
pub async fn info_view(flows: &Flows, job: &JobRow) -> Result<View, FlowError> {
    let station = flows.station();
    let tool = station.tools.get(&job.tool_id);
    let params: Map<String, Value> = serde_json::from_str(&job.params).unwrap_or_default();
    let mut fields = vec![
        Field {
            name: "Tool".into(),
            value: tool.as_ref().map(|t| t.name.clone()).unwrap_or(job.tool_id.clone()),
            inline: true,
        },
        Field { name: "Status".into(), value: status_words(job.status()).into(), inline: true },
    ];
    for (k, v) in params.iter().filter(|(k, _)| !k.starts_with('_')) {
        let shown = match v {
            Value::String(s) if s.starts_with("media:") => "an image".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        fields.push(Field { name: k.clone(), value: shown, inline: k != "prompt" });
    }
    if let Some(loras) = params.get("_loras").and_then(Value::as_array).filter(|a| !a.is_empty()) {
        let names: Vec<String> =
            loras.iter().filter_map(|l| l.get("slug").and_then(Value::as_str).map(str::to_owned)).collect();
        fields.push(Field { name: "LoRAs".into(), value: names.join(", "), inline: false });
    }
    let charged = station.job_charge(&job.id).await.unwrap_or(0);
    fields.push(Field { name: "Cost".into(), value: crate::view::points(charged), inline: true });
    if let (Some(s), Some(f)) = (job.started_at, job.finished_at) {
        fields.push(Field { name: "Time".into(), value: format!("{:.1} s", (f - s) as f64 / 1000.0), inline: true });
    }
    let (rating, _) = station.job_marks(job).await?;
    if let Some(r) = rating {
        fields.push(Field { name: "Your rating".into(), value: "★".repeat(r as usize), inline: true });
    }
    Ok(View::default().block(Block::Card { title: "About this result".into(), body: None, image: None, fields }))
}

/// A job's status in words.
pub fn status_words(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "waiting",
        JobStatus::Dispatched => "starting",
        JobStatus::Running => "running",
        JobStatus::Succeeded => "done",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}
