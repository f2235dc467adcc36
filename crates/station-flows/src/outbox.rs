//! What a transition writes besides its state: action records for the
//! buttons it shows (minted tokens), the deliveries that carry its messages,
//! and where a job came from so its progress and result find their way back.
//! Shared by the engine, the delivery service and the result actions.

use rand::Rng;
use serde_json::Value;
use station_core::JobRow;
use station_core::conversations::{ActionRow, NewDelivery};

use crate::flow::Out;
use crate::platform::Conversation;
use crate::view::{ButtonAction, View};

/// Actions that never belong to a flow step: they act on a job or start a
/// flow, so their buttons keep working after the flow that showed them moved on.
pub const STANDALONE: &[&str] =
    &["open", "rerun", "tweak", "use", "info", "rate", "rate_set", "hide", "cancel_job", "start"];

/// Mints an action token: 12 base62 characters (71 bits), far under every
/// platform's callback-data limit.
pub(crate) fn mint_token() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..12).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Replaces the pending actions of a view's buttons with minted tokens,
/// returning the action records to store.
pub(crate) fn mint_view(view: &mut View, account_id: &str, instance: Option<(&str, i64)>, now: i64) -> Vec<ActionRow> {
    let mut rows = vec![];
    for b in view.buttons_mut() {
        if let ButtonAction::Pending(spec) = &b.action {
            // Result actions work from any message, whatever step its flow is at.
            let instance = if STANDALONE.contains(&spec.name.as_str()) { None } else { instance };
            let token = mint_token();
            rows.push(ActionRow {
                token: token.clone(),
                account_id: account_id.to_string(),
                instance_id: instance.map(|(i, _)| i.to_string()),
                rev: instance.map(|(_, r)| r),
                name: spec.name.clone(),
                args: spec.args.to_string(),
                created_at: now,
            });
            b.action = ButtonAction::Token(token);
        }
    }
    rows
}

/// The delivery row carrying `out` to `conv` for `account_id`.
pub(crate) fn new_delivery(conv: &Conversation, account_id: &str, out: &Out) -> NewDelivery {
    NewDelivery {
        id: uuid::Uuid::now_v7().to_string(),
        conversation: conv.key(),
        conv_json: serde_json::to_string(conv).expect("conversation serialises"),
        platform: conv.platform.clone(),
        account_id: account_id.to_string(),
        kind: out.kind.as_str().to_string(),
        dedupe_key: out.dedupe_key.clone(),
        view: serde_json::to_string(&out.view).expect("view serialises"),
        replace_ref: None,
    }
}

/// Where a job asked from, stored in the job's `source`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobSource {
    /// The conversation to deliver to.
    pub conversation: Conversation,
    /// The flow instance that submitted it.
    #[serde(default)]
    pub instance: Option<String>,
    /// The delivery id of the flow's card the job took over
    /// ([`crate::flow::CardOffer`]): its progress and result edit that
    /// message, whoever writes them first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
}

/// A `replace_ref` naming a delivery (by id) whose message is to be
/// replaced, rather than a platform message: resolved when it is sent, as
/// the card's message may still be on its way when the job's is written.
pub(crate) const DELIVERY_REF: &str = "delivery:";

impl JobSource {
    /// The `replace_ref` of the job's messages: the card it took over, if any.
    pub(crate) fn replace_ref(&self) -> Option<String> {
        self.card.as_ref().map(|id| format!("{DELIVERY_REF}{id}"))
    }

    /// The delivery row carrying one of the job's messages (see [`new_delivery`]).
    pub(crate) fn delivery(&self, account_id: &str, out: &Out) -> NewDelivery {
        NewDelivery { replace_ref: self.replace_ref(), ..new_delivery(&self.conversation, account_id, out) }
    }

    /// Reads a job's source, if it came from a conversation.
    pub fn of(job: &JobRow) -> Option<JobSource> {
        serde_json::from_str(job.source.as_deref()?).ok()
    }
}

/// Reads a JSON array of strings (job outputs).
pub(crate) fn string_list(text: Option<&str>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()))
        .unwrap_or_default()
}
