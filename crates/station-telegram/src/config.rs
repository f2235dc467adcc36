//! The bot's settings: the `[telegram]` table of `station.toml` and its
//! `STATION_TELEGRAM_*` environment variables. The binary registers
//! [`TelegramConfig::section`] when it loads the configuration; the core
//! keeps the table without reading it, and the bot reads it back with
//! [`TelegramConfig::from_config`].

use serde::{Deserialize, Serialize};
use station_core::Config;
use station_core::config::{ConfigError, Section};

use crate::WEBHOOK_PATH;

/// The table's name: `[telegram]`, `STATION_TELEGRAM_*`.
pub const SECTION: &str = "telegram";

/// Telegram settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// Bot token from @BotFather (secret).
    pub token: Option<String>,
    /// Bot API base URL (a self-hosted Bot API server, or a test fake).
    pub api_url: String,
    /// Secret expected in `X-Telegram-Bot-Api-Secret-Token` (webhook mode).
    pub webhook_secret: Option<String>,
    /// Public base URL; when set, webhook mode is used instead of long
    /// polling. It is also Station's public address when `web.public_url`
    /// is not set.
    pub public_url: Option<String>,
    /// Days processed updates are kept in the inbox before the bot's hourly
    /// housekeeping deletes them (unprocessed ones are never deleted).
    pub keep_updates_days: u64,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            token: None,
            api_url: "https://api.telegram.org".into(),
            webhook_secret: None,
            public_url: None,
            keep_updates_days: 7,
        }
    }
}

/// The commented `[telegram]` table `station config init` writes.
pub const EXAMPLE: &str = include_str!("../telegram.example.toml");

impl TelegramConfig {
    /// The `[telegram]` section for [`Config::load`]: these settings with
    /// their defaults, `public_url` as Station's public address, the
    /// webhook path noted in `station config show`, and the example.
    pub fn section() -> Section {
        Section::new::<TelegramConfig>(SECTION)
            .public_url_key("public_url")
            .note(format!("Telegram webhook path: {WEBHOOK_PATH}"))
            .example(EXAMPLE)
    }

    /// The settings in `config` (the defaults when it has no `[telegram]` table).
    pub fn from_config(config: &Config) -> Result<TelegramConfig, ConfigError> {
        config.section_as(SECTION)
    }

    /// Puts these settings into `config` as its `[telegram]` table
    /// (configurations built in code, such as tests').
    pub fn apply_to(&self, config: &mut Config) {
        config.set_section(SECTION, self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_holds_the_defaults() {
        let c = Config::load_with_env(None, &[TelegramConfig::section()], Vec::new()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("station.toml");
        std::fs::write(&f, c.example()).unwrap();
        let loaded = Config::load_with_env(Some(&f), &[TelegramConfig::section()], Vec::new()).unwrap();
        assert_eq!(TelegramConfig::from_config(&loaded).unwrap(), TelegramConfig::default());
        assert!(c.example().contains("[telegram]"));
    }

    #[test]
    fn environment_names_follow_the_rule_and_secrets_are_masked() {
        let env = vec![
            ("STATION_TELEGRAM_TOKEN".to_string(), "123:abc".to_string()),
            ("STATION_TELEGRAM_PUBLIC_URL".to_string(), "https://bot.example/".to_string()),
            ("STATION_TELEGRAM_KEEP_UPDATES_DAYS".to_string(), "2".to_string()),
        ];
        let c = Config::load_with_env(None, &[TelegramConfig::section()], env).unwrap();
        let t = TelegramConfig::from_config(&c).unwrap();
        assert_eq!((t.token.as_deref(), t.keep_updates_days), (Some("123:abc"), 2));
        assert_eq!(c.public_url(), "https://bot.example", "the bot's address is Station's");
        let shown = c.show();
        assert!(!shown.contains("123:abc") && shown.contains("/telegram/webhook"), "{shown}");
        let names = c.env_names();
        for key in ["token", "api_url", "webhook_secret", "public_url", "keep_updates_days"] {
            let var = format!("STATION_TELEGRAM_{}", key.to_uppercase());
            assert!(names.contains(&(format!("telegram.{key}"), var)), "{key}: {names:?}");
        }
    }
}
