//! `station doctor`'s checks of the Telegram bot: the token is accepted
//! (`getMe`) and the webhook is where `station serve` puts it
//! (`getWebhookInfo`), with Telegram's own last delivery error if any.

use std::time::Duration;

use serde_json::json;
use station_core::doctor::Check;

use crate::{ApiError, BotApi, TelegramConfig, WEBHOOK_PATH};

const SUBJECT: &str = "Telegram bot";
const LIMIT: Duration = Duration::from_secs(10);

/// The checks; empty when no token is configured (the bot is off).
pub async fn doctor(config: &TelegramConfig) -> Vec<Check> {
    let Some(token) = config.token.as_deref().filter(|t| !t.is_empty()) else {
        return vec![];
    };
    let api = BotApi::new(&config.api_url, token);
    let me = match api.call_timeout("getMe", &json!({}), LIMIT).await {
        Ok(me) => me,
        Err(ApiError::Api { code: 401 | 404, .. }) => {
            return vec![Check::fail(
                SUBJECT,
                "Telegram refuses the token",
                "set telegram.token (STATION_TELEGRAM_TOKEN) to the token @BotFather gave for the bot",
            )];
        }
        Err(e) => {
            return vec![Check::fail(
                SUBJECT,
                format!("{} cannot be reached: {e}", config.api_url),
                "check the machine's internet access (or telegram.api_url)",
            )];
        }
    };
    let name = me["username"].as_str().unwrap_or("?");
    let mut out = vec![Check::ok(SUBJECT, format!("the token is accepted: @{name}"))];
    let info = match api.call_timeout("getWebhookInfo", &json!({}), LIMIT).await {
        Ok(i) => i,
        Err(e) => {
            out.push(Check::warn("Telegram webhook", format!("cannot be read: {e}"), "try again later"));
            return out;
        }
    };
    let current = info["url"].as_str().unwrap_or_default();
    let wanted = config.public_url.as_deref().map(|u| format!("{}{WEBHOOK_PATH}", u.trim_end_matches('/')));
    match wanted {
        Some(w) if current == w => out.push(Check::ok("Telegram webhook", format!("set to {w}"))),
        Some(w) if current.is_empty() => out.push(Check::warn(
            "Telegram webhook",
            format!("not set; it should be {w}"),
            "start `station serve`: it registers the webhook when it connects",
        )),
        Some(w) => out.push(Check::warn(
            "Telegram webhook",
            format!("points at {current}, not {w}"),
            "another program uses this bot's token, or telegram.public_url changed: `station serve` sets it again at start",
        )),
        None if current.is_empty() => out.push(Check::ok("Telegram webhook", "none: the bot uses long polling")),
        None => out.push(Check::warn(
            "Telegram webhook",
            format!("set to {current} while this configuration uses long polling"),
            "`station serve` removes it at start; if another program uses this token, give Station its own bot",
        )),
    }
    if let Some(e) = info["last_error_message"].as_str().filter(|e| !e.is_empty()) {
        out.push(Check::warn(
            "Telegram webhook",
            format!("Telegram's last delivery to the webhook failed: {e}"),
            "make sure telegram.public_url reaches this server over HTTPS (reverse proxy, certificate)",
        ));
    }
    out
}
