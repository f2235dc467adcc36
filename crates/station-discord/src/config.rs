//! The bot's settings: the `[discord]` table of `station.toml` and its
//! `STATION_DISCORD_*` environment variables. The binary registers
//! [`DiscordConfig::section`] when it loads the configuration; the core
//! keeps the table without reading it, and the bot reads it back with
//! [`DiscordConfig::from_config`] (then [`crate::DiscordOptions::from_config`]
//! checks it is complete).

use serde::{Deserialize, Serialize};
use station_core::Config;
use station_core::config::{ConfigError, Section};

use crate::INTERACTIONS_PATH;

/// The table's name: `[discord]`, `STATION_DISCORD_*`.
pub const SECTION: &str = "discord";

/// Discord settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    /// Bot token (secret).
    pub token: Option<String>,
    /// Application id.
    pub application_id: Option<String>,
    /// Application public key (hex), to verify interaction signatures.
    pub public_key: Option<String>,
    /// REST API base URL.
    pub api_url: String,
    /// Register commands in this server only (instant updates while testing);
    /// unset: global commands.
    pub guild_id: Option<String>,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        DiscordConfig {
            token: None,
            application_id: None,
            public_key: None,
            api_url: "https://discord.com/api/v10".into(),
            guild_id: None,
        }
    }
}

/// The commented `[discord]` table `station config init` writes.
pub const EXAMPLE: &str = include_str!("../discord.example.toml");

impl DiscordConfig {
    /// The `[discord]` section for [`Config::load`]: these settings with
    /// their defaults, the interactions endpoint noted in `station config
    /// show`, and the example.
    pub fn section() -> Section {
        Section::new::<DiscordConfig>(SECTION)
            .note(format!("Discord interactions endpoint path: {INTERACTIONS_PATH}"))
            .example(EXAMPLE)
    }

    /// The settings in `config` (the defaults when it has no `[discord]` table).
    pub fn from_config(config: &Config) -> Result<DiscordConfig, ConfigError> {
        config.section_as(SECTION)
    }

    /// Puts these settings into `config` as its `[discord]` table
    /// (configurations built in code, such as tests').
    pub fn apply_to(&self, config: &mut Config) {
        config.set_section(SECTION, self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_example_holds_the_defaults() {
        let c = Config::load_with_env(None, &[DiscordConfig::section()], env(&[])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("station.toml");
        std::fs::write(&f, c.example()).unwrap();
        let loaded = Config::load_with_env(Some(&f), &[DiscordConfig::section()], env(&[])).unwrap();
        assert_eq!(DiscordConfig::from_config(&loaded).unwrap(), DiscordConfig::default());
        assert!(c.example().contains("[discord]"));
    }

    #[test]
    fn numeric_ids_in_the_environment_stay_text() {
        let c = Config::load_with_env(
            None,
            &[DiscordConfig::section()],
            env(&[("STATION_DISCORD_APPLICATION_ID", "1100000000000000001"), ("STATION_DISCORD_GUILD_ID", "42")]),
        )
        .unwrap();
        let d = DiscordConfig::from_config(&c).unwrap();
        assert_eq!(d.application_id.as_deref(), Some("1100000000000000001"));
        assert_eq!(d.guild_id.as_deref(), Some("42"));
        assert!(c.show().contains("/discord/interactions"));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("station.toml");
        std::fs::write(&f, "[discord]\napi_url = \"http://x\"\nguild = \"1\"\n").unwrap();
        let err = Config::load_with_env(Some(&f), &[DiscordConfig::section()], env(&[])).unwrap_err().to_string();
        assert!(err.contains("station.toml") && err.contains("line 3") && err.contains("guild"), "{err}");
    }
}
