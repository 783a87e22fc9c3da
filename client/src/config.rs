//! The schema of the config file (`~/.config/touchgate/config.toml`, see
//! [`crate::paths::config_path`]) as serde types: its tables and their defaults. The
//! agent's config (touchgate-agent's `config` module) is made of them plus `[google]`, the
//! CLI reads `[login]` on its own. Reading TOML, and the checks across tables, are the
//! binaries' job; this library stays free of a TOML parser.
//!
//! Invariants: unknown keys are refused (`deny_unknown_fields`), so a misspelt setting is
//! an error where it is written, not a silent default; every duration is range-checked as
//! it is read ([`crate::duration`]); defaults are the safe choice (a USB key, audit
//! failures refuse); secrets are [`Secret`]s.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::duration::{
    format_duration, parse_duration, DurationRange, EXPIRY_MARGIN, IDLE_CONNECTION, IDLE_LOCK,
    KUBECTL_WINDOW, LIFETIME, NOTIFY_TIMEOUT, TOUCH_TIMEOUT, WINDOW,
};
use crate::google::CLOUD_PLATFORM;
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

/// `[audit]`: what happens when a record cannot be made durable.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    pub on_failure: OnAuditFailure,
}

/// Whether the agent issues what its audit log cannot record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnAuditFailure {
    /// Refuse (fail closed): nothing is issued that the log does not hold.
    #[default]
    Refuse,
    /// Issue anyway (availability first); warned about at start and in status.
    Allow,
}

impl<'de> Deserialize<'de> for OnAuditFailure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "refuse" => Ok(OnAuditFailure::Refuse),
            "allow" => Ok(OnAuditFailure::Allow),
            other => Err(serde::de::Error::custom(format!(
                "on_failure = \"{other}\" is not a setting: use \"refuse\" (the default) or \"allow\""
            ))),
        }
    }
}

/// `[notify]`: desktop notifications (D-Bus) when a touch is needed and how it ended.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySettings {
    pub enabled: bool,
    /// How long one notification may take to show; a token never waits for it.
    #[serde(deserialize_with = "de_notify_timeout")]
    pub timeout: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            enabled: true,
            timeout: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    #[serde(deserialize_with = "de_touch_timeout")]
    pub touch_timeout: Duration,
    pub max_connections: usize,
    /// A connection with no request in progress is closed after this long.
    #[serde(deserialize_with = "de_idle_connection_timeout")]
    pub idle_connection_timeout: Duration,
    #[serde(deserialize_with = "de_expiry_margin")]
    pub expiry_margin: Duration,
    /// Lock after this long without a token request (unset: never).
    #[serde(deserialize_with = "de_idle_lock")]
    pub idle_lock: Option<Duration>,
    /// Lock when the security key is unplugged (hardware keys).
    pub lock_on_key_removal: bool,
    /// Lock when logind says the machine goes to sleep (touchgate-agent's `session_lock`).
    pub lock_on_sleep: bool,
    /// Lock when a logind session of this user locks (touchgate-agent's `session_lock`).
    pub lock_on_session_lock: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            touch_timeout: Duration::from_secs(30),
            max_connections: 64,
            idle_connection_timeout: Duration::from_secs(60),
            expiry_margin: Duration::from_secs(60),
            idle_lock: None,
            lock_on_key_removal: true,
            lock_on_sleep: true,
            lock_on_session_lock: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    pub backend: KeyBackend,
    /// Soft key only.
    pub touch: String,
    /// Soft key only: its state file (default: the state dir's `soft-key.json`).
    pub soft_key_state: Option<PathBuf>,
    /// Hardware keys: hidraw paths to use (default: every FIDO device found).
    pub devices: Vec<String>,
    /// Hardware keys: CTAP PIN/UV auth protocol, 1 (every CTAP2 key) or 2 (CTAP 2.1).
    pub pin_protocol: u8,
    /// The pinentry program that asks for the key's PIN.
    pub pinentry: PathBuf,
    /// If not empty, only keys whose AAGUID is listed may be enrolled.
    pub allowed_aaguids: Vec<String>,
    /// If not empty, a key must present a packed attestation chain to one of these root certificates (PEM or DER files).
    pub attestation_roots: Vec<PathBuf>,
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            // Safe by default: the software key keeps its secret in plain text.
            backend: KeyBackend::Hid,
            touch: "prompt".into(),
            soft_key_state: None,
            devices: vec![],
            pin_protocol: 1,
            pinentry: PathBuf::from("pinentry"),
            allowed_aaguids: vec![],
            attestation_roots: vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyBackend {
    /// The software key (demo and tests): its secret lies in plain text in the
    /// state dir, so it is used only when asked for by name, with a warning.
    Soft,
    /// USB security keys through ctap-hid-fido2.
    Hid,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default = "default_credential")]
    pub credential: String,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub delegates: Vec<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_lifetime", deserialize_with = "de_lifetime")]
    pub lifetime: Duration,
    #[serde(default)]
    pub touch: TouchRule,
    /// Require user verification (PIN or built-in) on every touch.
    #[serde(default)]
    pub user_verification: UserVerification,
    /// Project billed for IAM Credentials calls (`x-goog-user-project`); default: the
    /// credential's own `quota_project_id`, if any.
    #[serde(default)]
    pub quota_project: Option<String>,
    /// Whose window a touch opens: the whole profile, or only the program that asked.
    #[serde(default)]
    pub per: Per,
    /// Globs on executable paths allowed to use this profile (empty: any program of this user).
    #[serde(default)]
    pub callers: Vec<String>,
    /// If set, requests may only ask for these scopes.
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// At most this many tokens are handed out per approval window; then a new touch.
    #[serde(default)]
    pub max_tokens_per_window: Option<u32>,
    /// `every-token` profiles only: after a touch, the kubectl exec plugin's token is
    /// handed again, without a touch, to the same kubectl executable sending it to
    /// the same cluster, for this long (at most the token's life). Unset: a touch
    /// per kubectl command.
    #[serde(default, deserialize_with = "de_kubectl_window")]
    pub kubectl_window: Option<Duration>,
}

/// Whose approval window a touch opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// One window for the profile: every program of this user shares it.
    #[default]
    Profile,
    /// One window per program (executable path): gcloud's window does not serve python.
    Caller,
}

fn default_credential() -> String {
    "default".into()
}

fn default_scopes() -> Vec<String> {
    vec![CLOUD_PLATFORM.into()]
}

fn default_lifetime() -> Duration {
    Duration::from_secs(3600)
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            credential: default_credential(),
            service_account: None,
            delegates: vec![],
            project: None,
            scopes: default_scopes(),
            lifetime: default_lifetime(),
            touch: TouchRule::EveryToken,
            user_verification: UserVerification::Preferred,
            quota_project: None,
            per: Per::Profile,
            callers: vec![],
            allowed_scopes: vec![],
            max_tokens_per_window: None,
            kubectl_window: None,
        }
    }
}

/// Whether a profile's touches must also verify the user (PIN or fingerprint).
///
/// The vault's hmac-secret differs with and without UV, so every unseal follows
/// the UV setting chosen at enrolment (`touchgate enroll --uv`): `required`
/// refuses to serve from keys enrolled without it; `preferred` and
/// `discouraged` follow the enrolment (with `discouraged` and a UV enrolment,
/// the key still verifies the user, because the vault cannot be opened otherwise).
/// `true` and `false` are accepted as `required` and `preferred`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserVerification {
    Required,
    #[default]
    Preferred,
    Discouraged,
}

impl<'de> Deserialize<'de> for UserVerification {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(UserVerification::Required),
            Raw::Bool(false) => Ok(UserVerification::Preferred),
            Raw::Text(t) => match t.as_str() {
                "required" => Ok(UserVerification::Required),
                "preferred" => Ok(UserVerification::Preferred),
                "discouraged" => Ok(UserVerification::Discouraged),
                other => Err(serde::de::Error::custom(format!(
                    "user_verification = \"{other}\" is not a setting: use \"required\", \"preferred\" or \"discouraged\""
                ))),
            },
        }
    }
}

/// When a touch is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TouchRule {
    /// Every token needs its own touch; nothing is cached.
    #[default]
    EveryToken,
    /// One touch approves the profile for this long; tokens are reused and re-minted without a touch.
    Window(Duration),
}

impl std::fmt::Display for TouchRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TouchRule::EveryToken => f.write_str("every-token"),
            TouchRule::Window(d) => f.write_str(&format_duration(*d)),
        }
    }
}

impl<'de> Deserialize<'de> for TouchRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "every-token" {
            return Ok(TouchRule::EveryToken);
        }
        match parse_duration(&s) {
            Ok(d) => WINDOW
                .check(&s, d)
                .map(TouchRule::Window)
                .map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom(format!(
                "touch = \"{s}\" is not a touch rule: use \"every-token\" or a window such as \"10m\""
            ))),
        }
    }
}

fn de_in<'de, D: Deserializer<'de>>(d: D, range: DurationRange) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    range.parse(&s).map_err(serde::de::Error::custom)
}

fn de_touch_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_in(d, TOUCH_TIMEOUT)
}

fn de_expiry_margin<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_in(d, EXPIRY_MARGIN)
}

fn de_idle_connection_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_in(d, IDLE_CONNECTION)
}

fn de_idle_lock<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_in(d, IDLE_LOCK).map(Some)
}

fn de_notify_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_in(d, NOTIFY_TIMEOUT)
}

fn de_kubectl_window<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_in(d, KUBECTL_WINDOW).map(Some)
}

fn de_lifetime<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_in(d, LIFETIME)
}
