//! `station doctor`'s checks of the Discord bot: the settings it needs are
//! all there, and Discord accepts the token for the configured application
//! (`GET /applications/@me`).

use reqwest::Method;
use station_core::doctor::Check;

use crate::DiscordConfig;
use crate::rest::{Body, Rest, RestError};

const SUBJECT: &str = "Discord bot";

/// The checks; empty when Discord is not configured at all.
pub async fn doctor(config: &DiscordConfig) -> Vec<Check> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    if !set(&config.token) && !set(&config.application_id) && !set(&config.public_key) {
        return vec![];
    }
    let missing: Vec<&str> = [
        ("discord.token", set(&config.token)),
        ("discord.application_id", set(&config.application_id)),
        ("discord.public_key", set(&config.public_key)),
    ]
    .iter()
    .filter(|(_, ok)| !ok)
    .map(|(k, _)| *k)
    .collect();
    if !missing.is_empty() {
        return vec![Check::fail(
            SUBJECT,
            format!("{} not set", missing.join(" and ")),
            "copy them from the Discord developer portal (General Information and Bot pages)",
        )];
    }
    let rest = match Rest::new(&config.api_url, config.token.clone()) {
        Ok(r) => r,
        Err(e) => return vec![Check::fail(SUBJECT, e, "check discord.api_url")],
    };
    let call = rest.call(Method::GET, "/applications/@me", Body::Empty);
    let app = match tokio::time::timeout(std::time::Duration::from_secs(10), call).await {
        Ok(Ok(app)) => app,
        Ok(Err(RestError::Api { status: 401, .. })) => {
            return vec![Check::fail(
                SUBJECT,
                "Discord refuses the token",
                "set discord.token (STATION_DISCORD_TOKEN) to the bot token from the developer portal's Bot page",
            )];
        }
        Ok(Err(e)) => {
            return vec![Check::fail(
                SUBJECT,
                format!("{e}"),
                "check the machine's internet access (or discord.api_url)",
            )];
        }
        Err(_) => {
            return vec![Check::fail(
                SUBJECT,
                format!("{} did not answer within 10 s", config.api_url),
                "check the machine's internet access (or discord.api_url)",
            )];
        }
    };
    let id = app["id"].as_str().unwrap_or_default();
    let configured = config.application_id.as_deref().unwrap_or_default().trim();
    if id != configured {
        return vec![Check::fail(
            SUBJECT,
            format!("the token belongs to application {id}, not the configured {configured}"),
            "set discord.application_id to the application the token belongs to",
        )];
    }
    let name = app["name"].as_str().unwrap_or("?");
    vec![Check::ok(SUBJECT, format!("the token is accepted for application {name} ({id})"))]
}
