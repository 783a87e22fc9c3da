//! The parts of the config file (`~/.config/touchgate/config.toml`, see
//! [`crate::paths::config_path`]) that more than one binary reads, as serde types: the
//! agent's schema (touchgate-agent's `config` module) embeds them, the CLI reads them on
//! their own. Reading TOML is the binaries' job; this library stays free of a TOML parser.
//!
//! Invariant: unknown keys are refused (`deny_unknown_fields`), so a misspelt setting is an
//! error where it is written, not a silent default; secrets are [`Secret`]s.

use serde::Deserialize;

use crate::Secret;

/// `[login]`: settings of `touchgate login`. The CLI reads them; the agent only accepts the table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginSettings {
    /// The user's own "Desktop app" OAuth client (default: gcloud's, from the ADC file).
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub auth_uri: Option<String>,
    pub token_uri: Option<String>,
    pub device_auth_uri: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// Written as quota_project_id into the sealed authorized_user credential.
    pub quota_project: Option<String>,
}
