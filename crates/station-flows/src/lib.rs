//! Station's conversations, once for every platform.
//!
//! - [`view`]: the platform-agnostic component tree flows show.
//! - [`platform`]: the seam adapters implement ([`Platform`]) and the
//!   [`Input`] they feed back.
//! - [`flow`]: what a flow is (steps, validation, transitions, hooks).
//! - [`engine`]: [`Flows`], which routes input to flow instances and stores
//!   every transition with its outgoing messages before anything is sent.
//! - [`delivery`]: the service that sends stored messages through the
//!   adapters and turns job events into progress edits and results.
//! - [`input`]: the durable name of the input being handled ([`InputKey`]).
//! - [`outbox`]: minted buttons, deliveries and job sources a transition writes.
//! - [`flows`]: the built-in flows (make, settings, status, history, …) and
//!   the constructors of an engine with them.
//! - [`results`]: result messages and their actions (rerun, tweak, …).
//! - [`testing`]: an in-memory platform that records what it was sent.

pub mod delivery;
mod deposits;
pub mod engine;
pub mod flow;
pub mod flows;
pub mod input;
pub mod outbox;
pub mod platform;
pub mod results;
pub mod testing;
pub mod view;

pub use delivery::FlowsRunner;
pub use engine::{CommandInfo, FlowSettings, Flows, Reply, StandaloneActions};
pub use flow::{Flow, FlowError};
pub use input::{InputKey, job_key};
pub use outbox::JobSource;
pub use platform::{ChatStyle, Conversation, DeliveryKind, Input, Outcome, Outgoing, Platform};
pub use view::{Block, Button, ButtonAction, ImageRef, InputKind, InputRequest, Rich, View};
