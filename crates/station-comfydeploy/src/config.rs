//! `[comfydeploy]`: hosted ComfyDeploy backends (`[[comfydeploy.backends]]`)
//! and how runs are followed. The binary registers [`ComfyDeployConfig::section`];
//! environment names follow the core's rule (`STATION_COMFYDEPLOY_BACKENDS`
//! as a JSON array, `STATION_COMFYDEPLOY_POLL_MAX_MS`, …). API keys are never
//! written in the file: each backend names the environment variable that
//! holds its key (`api_key_env`).

use serde::{Deserialize, Serialize};
use station_core::Config;
use station_core::config::{ConfigError, Section};

/// The table's name: `[comfydeploy]`, `STATION_COMFYDEPLOY_*`.
pub const SECTION: &str = "comfydeploy";

/// One ComfyDeploy account (API key) and the deployments it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeployBackendConfig {
    /// Unique name (recorded in jobs as their backend).
    pub name: String,
    /// API base URL.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The environment variable holding the API key (sent as a bearer token).
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// Deployment ids this backend runs; empty: any deployment a tool names.
    #[serde(default)]
    pub deployments: Vec<String>,
    /// Runs it may have at once.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u64,
}

fn default_api_url() -> String {
    "https://api.comfydeploy.com".into()
}

fn default_key_env() -> String {
    "COMFYDEPLOY_API_KEY".into()
}

fn default_max_concurrent() -> u64 {
    4
}

/// ComfyDeploy settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ComfyDeployConfig {
    /// The accounts runs are sent to.
    pub backends: Vec<DeployBackendConfig>,
    /// Ask the provider for webhooks at `<public url>/hooks/comfydeploy`
    /// (`web.public_url`, or `webhook_url` when set). They only wake the
    /// waiting job early; it polls either way.
    pub webhooks: bool,
    /// Where the provider sends webhooks, when not `<public url>/hooks/comfydeploy`.
    pub webhook_url: Option<String>,
    /// First delay between status requests while a run waits or runs; it
    /// doubles while nothing changes, up to `poll_max_ms`.
    pub poll_min_ms: u64,
    /// Longest delay between status requests.
    pub poll_max_ms: u64,
    /// A request to the provider gives up after this long.
    pub request_timeout_seconds: u64,
    /// For how long a run's status may be unreadable (provider unreachable,
    /// 5xx) before the attempt is given up and retried (the retry asks about
    /// the same run first).
    pub unreachable_grace_seconds: u64,
}

impl Default for ComfyDeployConfig {
    fn default() -> Self {
        ComfyDeployConfig {
            backends: vec![],
            webhooks: true,
            webhook_url: None,
            poll_min_ms: 500,
            poll_max_ms: 5000,
            request_timeout_seconds: 30,
            unreachable_grace_seconds: 60,
        }
    }
}

/// The commented `[comfydeploy]` table `station config init` writes.
pub const EXAMPLE: &str = "\
[comfydeploy]
# Hosted ComfyUI (docs/HOSTED.md). Tools with \"service\": \"comfydeploy\" run here.
webhooks = true                # ask for webhooks at <web.public_url>/hooks/comfydeploy (hints only)
# webhook_url = \"https://station.example/hooks/comfydeploy\"
poll_min_ms = 500
poll_max_ms = 5000
request_timeout_seconds = 30
unreachable_grace_seconds = 60

# [[comfydeploy.backends]]
# name = \"cd\"
# api_url = \"https://api.comfydeploy.com\"
# api_key_env = \"COMFYDEPLOY_API_KEY\"   # the variable holding the key, never the key
# deployments = []                      # deployment ids it runs; empty: any
# max_concurrent = 4
";

impl ComfyDeployConfig {
    /// The `[comfydeploy]` section for [`Config::load`].
    pub fn section() -> Section {
        Section::new::<ComfyDeployConfig>(SECTION).note("ComfyDeploy webhook path: /hooks/comfydeploy").example(EXAMPLE)
    }

    /// The settings in `config` (the defaults without a `[comfydeploy]` table).
    pub fn from_config(config: &Config) -> Result<ComfyDeployConfig, ConfigError> {
        config.section_as(SECTION)
    }

    /// Puts these settings into `config` (configurations built in code).
    pub fn apply_to(&self, config: &mut Config) {
        config.set_section(SECTION, self);
    }

    /// Every problem, naming the key: duplicate or empty names, bad URLs,
    /// an empty key variable, bad poll bounds.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = vec![];
        let mut names = std::collections::HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let at = format!("comfydeploy.backends[{i}]");
            if b.name.trim().is_empty() {
                problems.push(format!("{at}.name: must not be empty"));
            } else if !names.insert(b.name.as_str()) {
                problems.push(format!("{at}.name: \"{}\" is used twice", b.name));
            }
            match url::Url::parse(&b.api_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => problems.push(format!("{at}.api_url: \"{}\" is not an http(s) URL", b.api_url)),
            }
            if b.api_key_env.trim().is_empty() {
                problems.push(format!("{at}.api_key_env: must name the environment variable holding the API key"));
            }
            if b.max_concurrent == 0 {
                problems.push(format!("{at}.max_concurrent: must be at least 1"));
            }
        }
        if let Some(u) = &self.webhook_url
            && !matches!(url::Url::parse(u).map(|u| u.scheme().to_string()).as_deref(), Ok("http" | "https"))
        {
            problems.push(format!("comfydeploy.webhook_url: \"{u}\" is not an http(s) URL"));
        }
        if self.poll_min_ms == 0 || self.poll_min_ms > self.poll_max_ms {
            problems.push(format!(
                "comfydeploy.poll_min_ms: must be at least 1 and at most poll_max_ms ({})",
                self.poll_max_ms
            ));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_holds_the_defaults_and_env_names_follow_the_rule() {
        let c = Config::load_with_env(None, &[ComfyDeployConfig::section()], Vec::new()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("station.toml");
        std::fs::write(&f, c.example()).unwrap();
        let loaded = Config::load_with_env(Some(&f), &[ComfyDeployConfig::section()], Vec::new()).unwrap();
        assert_eq!(ComfyDeployConfig::from_config(&loaded).unwrap(), ComfyDeployConfig::default());

        let env = vec![
            (
                "STATION_COMFYDEPLOY_BACKENDS".to_string(),
                r#"[{"name": "cd", "api_url": "http://127.0.0.1:9", "deployments": ["d1"]}]"#.to_string(),
            ),
            ("STATION_COMFYDEPLOY_POLL_MAX_MS".to_string(), "800".to_string()),
        ];
        let c = Config::load_with_env(None, &[ComfyDeployConfig::section()], env).unwrap();
        let d = ComfyDeployConfig::from_config(&c).unwrap();
        assert_eq!(d.poll_max_ms, 800);
        assert_eq!(d.backends[0].api_key_env, "COMFYDEPLOY_API_KEY", "default variable");
        assert_eq!(d.backends[0].max_concurrent, 4);
        assert!(c.env_names().contains(&("comfydeploy.poll_max_ms".into(), "STATION_COMFYDEPLOY_POLL_MAX_MS".into())));
    }

    #[test]
    fn a_bad_key_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("station.toml");
        std::fs::write(&f, "[[comfydeploy.backends]]\nname = \"cd\"\napi_key = \"secret\"\n").unwrap();
        let e = Config::load_with_env(Some(&f), &[ComfyDeployConfig::section()], Vec::new()).unwrap_err();
        assert!(e.to_string().contains("api_key"), "{e}");
    }

    #[test]
    fn check_names_each_problem() {
        let backends = vec![
            DeployBackendConfig {
                name: "a".into(),
                api_url: "ftp://x".into(),
                api_key_env: "".into(),
                deployments: vec![],
                max_concurrent: 0,
            },
            DeployBackendConfig {
                name: "a".into(),
                api_url: default_api_url(),
                api_key_env: default_key_env(),
                deployments: vec![],
                max_concurrent: 1,
            },
        ];
        let c = ComfyDeployConfig { backends, poll_min_ms: 10_000, ..ComfyDeployConfig::default() };
        let e = c.check().unwrap_err();
        for part in [
            "backends[0].api_url",
            "backends[0].api_key_env",
            "backends[0].max_concurrent",
            "backends[1].name",
            "poll_min_ms",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
    }
}
