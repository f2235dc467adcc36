//! What a flow is: steps that show views, accept input, validate it and
//! choose what comes next.

use serde_json::{Map, Value};
use station_core::AccountRow;
use station_core::Station;

use crate::platform::{Conversation, DeliveryKind};
use crate::view::View;

/// Kinds of input a step accepts. Input of another kind is refused with a
/// message naming what the step expects, and the step is asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// Free text.
    Text,
    /// Images.
    Image,
    /// Button presses (always accepted for the step's own buttons).
    Action,
    /// A form (several fields at once).
    Form,
}

/// A step's declaration.
#[derive(Debug, Clone, Copy)]
pub struct StepSpec {
    /// Step id, unique within the flow.
    pub id: &'static str,
    /// What it accepts besides its own buttons.
    pub accepts: &'static [Accepts],
}

/// Input as a step sees it (tokens already resolved to actions).
#[derive(Debug, Clone, PartialEq)]
pub enum StepInput {
    /// Text.
    Text(String),
    /// Stored image media ids.
    Images(Vec<String>),
    /// A button of this step's view.
    Action {
        /// Action name.
        name: String,
        /// Its arguments.
        args: Value,
    },
    /// A submitted form.
    Form(Map<String, Value>),
}

impl StepInput {
    /// The kind, for the accepts check.
    pub fn kind(&self) -> Accepts {
        match self {
            StepInput::Text(_) => Accepts::Text,
            StepInput::Images(_) => Accepts::Image,
            StepInput::Action { .. } => Accepts::Action,
            StepInput::Form(_) => Accepts::Form,
        }
    }
}

/// How a flow starts: the command's inline text, attached images, explicit
/// parameters and, when started by a button, its arguments.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// Text after the command.
    pub text: String,
    /// Images that came with the command.
    pub images: Vec<String>,
    /// Explicit parameters.
    pub params: Map<String, Value>,
    /// Flow-specific arguments (tool id, job id …).
    pub args: Value,
}

/// A message a flow sends as it moves or ends.
#[derive(Debug, Clone)]
pub struct Out {
    /// The view.
    pub view: View,
    /// Kind of delivery.
    pub kind: DeliveryKind,
    /// At most one delivery per key (`progress:<job>` lets job progress edit this message).
    pub dedupe_key: Option<String>,
}

impl Out {
    /// An ordinary message.
    pub fn message(view: View) -> Out {
        Out { view, kind: DeliveryKind::Message, dedupe_key: None }
    }
}

/// What happens after an input.
#[derive(Debug, Clone)]
pub enum Next {
    /// Go to a step with a new state (the old frame goes on the history, so
    /// `Back` returns to it). Used for fixed successors, branches, loops and jumps.
    Goto(String, Value),
    /// Stay on this step with a new state, showing its view again (paging,
    /// "add another image").
    Stay(Value),
    /// The input was refused: the message says why and the step is asked again.
    Invalid(String),
    /// Return to the previous step and state.
    Back,
    /// End the flow, saying it was cancelled.
    Cancel,
    /// End the flow, sending these messages.
    Finish(Vec<Out>),
}

/// Everything a flow may use while handling one input.
pub struct Cx<'a> {
    /// The core.
    pub station: &'a Station,
    /// Who is talking.
    pub account: &'a AccountRow,
    /// Where.
    pub conversation: &'a Conversation,
    /// The flow instance id (known before the first step is stored).
    pub instance_id: &'a str,
    /// The engine (for submitting jobs with their progress messages).
    pub flows: &'a crate::Flows,
    /// The name of the input being handled: writes and jobs it causes are
    /// keyed by it, so a replayed input does nothing twice.
    pub input: &'a crate::input::InputKey,
    /// The flow's card, when a job this input submits takes it over.
    pub card: CardOffer,
}

/// The flow's card (its step message) offered to the job a press on it
/// submits: the job's progress, then its result, are shown on that message
/// instead of a new one. The job that takes it names it in its stored
/// source ([`crate::JobSource::card`]), written with the job: whichever
/// writes the job's first message — the step's transition or the job's own
/// events, when it ran before the step was stored — takes the card over.
#[derive(Debug, Default)]
pub struct CardOffer {
    /// The card's delivery id; none when nothing is offered (typed input,
    /// a card not shown, a private or personal one).
    id: Option<String>,
    taken: std::sync::atomic::AtomicBool,
}

impl CardOffer {
    /// Offers the card delivered by delivery `id`.
    pub(crate) fn new(id: Option<String>) -> CardOffer {
        CardOffer { id, taken: Default::default() }
    }

    /// The card's delivery id for the job being submitted, once: one job
    /// takes a card over.
    pub(crate) fn take(&self) -> Option<String> {
        let id = self.id.as_ref()?;
        (!self.taken.swap(true, std::sync::atomic::Ordering::SeqCst)).then(|| id.clone())
    }

    /// The card's delivery id when a job took it over.
    pub(crate) fn taken(&self) -> Option<&str> {
        self.id.as_deref().filter(|_| self.taken.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Errors a flow cannot turn into a friendly "try again": the engine ends
/// the input with an apology and logs them.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Storage failed.
    #[error("storage error: {0}")]
    Storage(#[from] station_core::StoreError),
    /// The points ledger refused or failed.
    #[error("points: {0}")]
    Ledger(#[from] station_core::points::LedgerError),
    /// A stored instance names a flow this build does not have.
    #[error("no flow named {0:?}")]
    UnknownFlow(String),
    /// A flow kept redirecting between steps.
    #[error("flow {0} redirected more than 32 times")]
    Redirects(&'static str),
    /// A flow moved to a step it does not declare (a bug in the flow):
    /// nothing was stored, the conversation stays where it was.
    #[error("flow {0} has no step {1:?}")]
    UnknownStep(&'static str, String),
    /// The tool a flow was working with was removed or hidden meanwhile.
    #[error("the tool {0:?} is gone")]
    ToolGone(String),
}

/// A conversation flow. Flows are data-driven where they can be: the make
/// flow works for every tool in the registry with no per-tool code.
#[async_trait::async_trait]
pub trait Flow: Send + Sync {
    /// Flow name (also its command, for built-ins).
    fn name(&self) -> &'static str;

    /// One line for help and command menus.
    fn description(&self) -> &'static str;

    /// Bump when the steps or state shape change; older stored instances are
    /// passed through [`Flow::upgrade`].
    fn version(&self) -> i64 {
        1
    }

    /// Operator commands: only accounts with the admin role see and start
    /// them; for anyone else they are unknown commands.
    fn admin_only(&self) -> bool {
        false
    }

    /// Flows that hand out secrets granting the account (a sign-in link, a
    /// link code): every message they send is private to the asker
    /// ([`crate::View::private`]), whatever the flow's views say.
    fn private(&self) -> bool {
        false
    }

    /// Flows whose answers concern only the asker (balance, settings,
    /// history, help): their messages are [`crate::View::personal`], so a
    /// platform with ephemeral messages keeps them out of a shared channel.
    fn personal(&self) -> bool {
        false
    }

    /// The steps.
    fn steps(&self) -> &'static [StepSpec];

    /// Starts the flow: the first step (or an immediate finish).
    async fn start(&self, cx: &Cx<'_>, start: Start) -> Result<Next, FlowError>;

    /// What a step shows.
    async fn view(&self, cx: &Cx<'_>, step: &str, state: &Value) -> Result<View, FlowError>;

    /// Handles an input to a step.
    async fn input(&self, cx: &Cx<'_>, step: &str, state: &Value, input: StepInput) -> Result<Next, FlowError>;

    /// Hook run before a step is shown; may redirect (skip a step whose
    /// answer is already known).
    async fn before_step(&self, _cx: &Cx<'_>, _step: &str, _state: &Value) -> Result<Option<Next>, FlowError> {
        Ok(None)
    }

    /// Hook run after a transition is stored.
    async fn after_step(&self, _cx: &Cx<'_>, _from: &str, _to: &str, _state: &Value) {}

    /// Converts an instance stored by an older version; `None` ends it politely.
    fn upgrade(&self, _from_version: i64, _step: &str, _state: Value) -> Option<(String, Value)> {
        None
    }
}

/// Reads a string field of a state object.
pub fn get_str<'v>(state: &'v Value, key: &str) -> Option<&'v str> {
    state.get(key).and_then(Value::as_str)
}

/// A copy of `state` with `key` set.
pub fn with(state: &Value, key: &str, value: impl Into<Value>) -> Value {
    let mut s = state.clone();
    if !s.is_object() {
        s = Value::Object(Map::new());
    }
    s.as_object_mut().expect("object").insert(key.to_string(), value.into());
    s
}

/// A copy of `state` without `key`.
pub fn without(state: &Value, key: &str) -> Value {
    let mut s = state.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove(key);
    }
    s
}
