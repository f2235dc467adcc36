//! Alert messages to a Telegram chat: the core's
//! [`AlertSender`](station_core::alerts::AlertSender) for `telegram` sinks.
//! The core keeps the messages as rows and retries them; this only sends
//! one and says how it went.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use station_core::alerts::{AlertSender, SendOutcome};

use crate::client::BotApi;

/// Sends alert texts with the bot's token.
pub struct TelegramAlerts {
    api: BotApi,
}

impl TelegramAlerts {
    /// A sender through the Bot API at `api_url` with `token`.
    pub fn new(api_url: &str, token: &str) -> TelegramAlerts {
        TelegramAlerts { api: BotApi::new(api_url, token) }
    }
}

#[async_trait]
impl AlertSender for TelegramAlerts {
    async fn send(&self, target: &str, text: &str) -> SendOutcome {
        // A numeric chat id, or a public channel's @name.
        let chat: Value = target.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(target));
        let body = json!({"chat_id": chat, "text": text, "link_preview_options": {"is_disabled": true}});
        match self.api.call_timeout("sendMessage", &body, Duration::from_secs(15)).await {
            Ok(_) => SendOutcome::Sent,
            Err(e) => match e.retry_after() {
                Some(s) => SendOutcome::RetryAfter(Duration::from_secs(s)),
                None if e.is_transient() => SendOutcome::Transient(e.to_string()),
                None if e.is_permanent_for_chat() => SendOutcome::Permanent(format!(
                    "{e} (is the bot a member of chat {target}, allowed to post there?)"
                )),
                None => SendOutcome::Permanent(e.to_string()),
            },
        }
    }
}
