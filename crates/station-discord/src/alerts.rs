//! Alert messages to a Discord channel: the core's
//! [`AlertSender`](station_core::alerts::AlertSender) for `discord` sinks.
//! The core keeps the messages as rows and retries them; this only sends
//! one and says how it went.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::json;
use station_core::alerts::{AlertSender, SendOutcome};

use crate::rest::{Body, Rest, RestError};

/// Sends alert texts as the bot.
pub struct DiscordAlerts {
    rest: Rest,
}

impl DiscordAlerts {
    /// A sender through the REST API at `api_url` with the bot `token`.
    pub fn new(api_url: &str, token: &str) -> Result<DiscordAlerts, String> {
        Ok(DiscordAlerts { rest: Rest::new(api_url, Some(token.to_string()))? })
    }
}

#[async_trait]
impl AlertSender for DiscordAlerts {
    async fn send(&self, target: &str, text: &str) -> SendOutcome {
        if target.is_empty() || !target.bytes().all(|b| b.is_ascii_digit()) {
            return SendOutcome::Permanent(format!("{target:?} is not a Discord channel id (digits only)"));
        }
        // Mentions in an alert never ping anyone.
        let body = json!({"content": text, "allowed_mentions": {"parse": []}});
        match self.rest.call(Method::POST, &format!("/channels/{target}/messages"), Body::Json(body)).await {
            Ok(_) => SendOutcome::Sent,
            Err(RestError::RateLimited(wait)) => SendOutcome::RetryAfter(wait),
            Err(RestError::Transport(e)) => SendOutcome::Transient(e),
            Err(e @ RestError::Api { status, .. }) if status >= 500 => SendOutcome::Transient(e.to_string()),
            Err(e) => {
                SendOutcome::Permanent(format!("{e} (can the bot see channel {target} and send messages there?)"))
            }
        }
    }
}
