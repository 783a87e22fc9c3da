//! The body of the `config` fuzz target, shared with its
//! regression test (`tests/agent_seeds.rs` of this package).
//!
//! The input is a config file's text, through the agent's own parse-and-validate
//! entry point. An error must be one line naming the file; a config that parses
//! must satisfy what the rest of the agent relies on.

use std::path::Path;

use touchgate_agent::config::{Config, ConfigError};

pub fn run(text: &str) -> Result<Config, ConfigError> {
    let res = Config::parse(text, Path::new("fuzz.toml"));
    match &res {
        Err(ConfigError(msg)) => {
            assert!(
                msg.starts_with("config fuzz.toml"),
                "error names no file: {msg}"
            );
            assert!(!msg.contains('\n'), "error is not one line: {msg:?}");
        }
        Ok(cfg) => {
            assert!(!cfg.profiles.is_empty(), "no profile");
            if let Some(d) = &cfg.default_profile {
                assert!(
                    cfg.profiles.contains_key(d),
                    "default_profile {d} is not a profile"
                );
            }
            if let Some(d) = cfg.default_profile_name() {
                assert!(
                    cfg.profiles.contains_key(d),
                    "default profile {d} is not a profile"
                );
            }
            assert!(matches!(cfg.key.pin_protocol, 1 | 2));
            assert!(cfg.agent.max_connections >= 1);
        }
    }
    res
}
