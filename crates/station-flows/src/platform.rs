//! The seam between the core's conversations and a chat platform.
//!
//! An adapter (Telegram, Discord, web, terminal, the in-memory test
//! platform) turns platform updates into [`Input`] for a [`Conversation`]
//! and implements [`Platform`] to send the engine's [`Outgoing`] messages.
//! Adapters render; they decide nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::view::View;

/// Where a conversation happens: a chat, DM, channel or web tab.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conversation {
    /// Platform name (`telegram`, `discord`, `web`, `terminal`, `test`).
    pub platform: String,
    /// The platform's id for the chat/channel/tab.
    pub chat: String,
    /// A group scope that may sponsor its members' jobs (`telegram:-100…`,
    /// `discord-guild:…`), when the conversation is in a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A platform's name for people: `Telegram`, `Discord`, `the terminal`.
pub fn platform_title(platform: &str) -> String {
    match platform {
        "telegram" => "Telegram".into(),
        "discord" => "Discord".into(),
        "terminal" => "the terminal".into(),
        "web" => "the web app".into(),
        other => other.to_string(),
    }
}

impl Conversation {
    /// A private conversation.
    pub fn new(platform: &str, chat: &str) -> Conversation {
        Conversation { platform: platform.to_string(), chat: chat.to_string(), group: None }
    }

    /// The conversation's stored key (`platform:chat`).
    pub fn key(&self) -> String {
        format!("{}:{}", self.platform, self.chat)
    }
}

/// What a person sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// A command (`/upscale 2x`, `/make`), with its inline text and any images
    /// that came with it (a photo caption, the photo replied to, an album).
    Command {
        /// Command name without the slash (and without `@botname`).
        name: String,
        /// Text after the command.
        #[serde(default)]
        text: String,
        /// Media ids of images attached or replied to (already stored and checked).
        #[serde(default)]
        images: Vec<String>,
        /// Explicit typed parameters (Discord slash options, web forms).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        params: Map<String, Value>,
    },
    /// Free text.
    Text {
        /// The text.
        text: String,
    },
    /// Images (already stored and checked by the adapter).
    Images {
        /// Media ids.
        media: Vec<String>,
    },
    /// A button press or a menu choice.
    Action {
        /// The action token from the button.
        token: String,
    },
    /// A submitted form (web form, Discord modal).
    Form {
        /// Field values by name.
        values: Map<String, Value>,
        /// The token of the action that opened the form, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
}

/// Why an outgoing message was kept back.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Sent. `message_ref` identifies the platform message (for later edits).
    Sent {
        /// Platform message reference, if the platform has one.
        message_ref: Option<String>,
    },
    /// The platform asked to wait (HTTP 429 `retry_after`); try again later.
    RetryAfter(Duration),
    /// A transient failure (network, 5xx); try again with backoff.
    Transient(String),
    /// Will never succeed (bot blocked, chat gone): stop delivering to it.
    Permanent(String),
}

/// What the engine asks an adapter to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Delivery record id (stable across retries: adapters may use it to
    /// avoid duplicates when the platform supports idempotency).
    pub delivery_id: String,
    /// What kind of message this is.
    pub kind: DeliveryKind,
    /// The view to render (buttons carry minted tokens).
    pub view: View,
    /// Edit this earlier platform message instead of sending a new one
    /// (progress updates, or a step replacing its own message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
    /// The account the message is for (in groups, only they may press its buttons).
    pub account_id: String,
}

/// Kinds of deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// A flow step's view.
    Message,
    /// A job's progress (edited in place, throttled).
    Progress,
    /// A job's result.
    Result,
    /// A notice (expired flow, errors).
    Notice,
}

impl DeliveryKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Message => "message",
            DeliveryKind::Progress => "progress",
            DeliveryKind::Result => "result",
            DeliveryKind::Notice => "notice",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> DeliveryKind {
        match s {
            "progress" => DeliveryKind::Progress,
            "result" => DeliveryKind::Result,
            "notice" => DeliveryKind::Notice,
            _ => DeliveryKind::Message,
        }
    }
}

/// How a platform's people give input (see [`Platform::style`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChatStyle {
    /// Typed messages, commands with inline text, photos with captions
    /// or replied to (Telegram, the test platform).
    #[default]
    Messages,
    /// Interactions only: slash commands with typed options, buttons,
    /// select menus and modals; typed text never reaches the bot (Discord).
    Interactions,
    /// Lines typed in a terminal; images are file paths (`@photo.png`).
    Terminal,
}

/// A chat platform as the delivery service sees it.
#[async_trait::async_trait]
pub trait Platform: Send + Sync {
    /// The platform name used in [`Conversation::platform`].
    fn name(&self) -> &str;

    /// Whether the adapter can show a view to its account alone, wherever
    /// the conversation is (a private chat, an ephemeral message, a terminal
    /// only its user reads). A [`View::private`](crate::View::private) view
    /// is never handed to an adapter that answers false: the delivery
    /// service fails it instead. An adapter that answers true must deliver
    /// such views only to their account, or refuse them
    /// ([`Outcome::Permanent`]) — never post them where others read.
    fn delivers_privately(&self) -> bool;

    /// How people talk to the bot here, so flows word their hints in the
    /// platform's own vocabulary (captions and typed text, slash-command
    /// options, a terminal's lines).
    fn style(&self) -> ChatStyle {
        ChatStyle::Messages
    }

    /// Renders and sends (or edits) one message.
    async fn deliver(&self, conversation: &Conversation, out: &Outgoing) -> Outcome;
}
