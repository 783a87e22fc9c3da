//! Policy v0: `~/.config/touchgate/config.toml`.
//!
//! ```toml
//! default_profile = "inference"
//!
//! [agent]
//! touch_timeout = "30s"     # how long a touch may take before every waiter gets an error
//! max_connections = 64      # concurrent client connections (one process: at most half)
//! idle_connection_timeout = "60s" # a connection waiting for its next request is closed after this
//! expiry_margin = "60s"     # never hand out a token with less than this left
//! lock_on_sleep = true      # lock when the machine goes to sleep (logind)
//! lock_on_session_lock = true # lock when a session of this user locks (logind)
//!
//! [key]
//! backend = "hid"           # a USB security key (the default); "soft" only for demos and tests
//! # touch = "prompt"        # soft key only: prompt (Enter), auto, deny, never
//!
//! [notify]                  # desktop notifications over D-Bus (never delay a token)
//! enabled = true
//! timeout = "500ms"         # time box of one notification
//!
//! [audit]
//! on_failure = "refuse"     # a record that cannot be written: refuse to issue; "allow" issues anyway (warned)
//!
//! [google]                  # every endpoint is configurable (emulator, other universes)
//! iam_credentials = "https://iamcredentials.googleapis.com"
//!
//! [profiles.inference]
//! credential = "default"    # name given at `touchgate import`
//! service_account = "vertex-inference@my-proj.iam.gserviceaccount.com"
//! project = "my-proj"
//! lifetime = "15m"
//! touch = "10m"             # or "every-token"
//! ```
//!
//! Every duration has a range ([`DurationRange`]): a value outside it is a
//! config error with file:line:col, so no setting can overflow the clock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::upstream::{Endpoints, CLOUD_PLATFORM};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub agent: AgentSettings,
    #[serde(default)]
    pub key: KeySettings,
    #[serde(default)]
    pub google: Endpoints,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// Read by `touchgate login`; the agent only accepts the table.
    #[serde(default)]
    pub login: LoginSettings,
    #[serde(default)]
    pub notify: NotifySettings,
    #[serde(default)]
    pub audit: AuditSettings,
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

/// `[login]`: settings of `touchgate login`. The CLI reads them; the agent only accepts the table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginSettings {
    /// The user's own "Desktop app" OAuth client (default: gcloud's, from the ADC file).
    pub client_id: Option<String>,
    pub client_secret: Option<touchgate::Secret>,
    pub auth_uri: Option<String>,
    pub token_uri: Option<String>,
    pub device_auth_uri: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// Written as quota_project_id into the sealed authorized_user credential.
    pub quota_project: Option<String>,
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
    /// Lock when logind says the machine goes to sleep (see [`crate::daemon::session_lock`]).
    pub lock_on_sleep: bool,
    /// Lock when a logind session of this user locks (see [`crate::daemon::session_lock`]).
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

/// The range a duration setting may take. Every duration in the config has
/// one: a value past it is refused where it is written (file:line:col), so no
/// later `now + duration` can overflow and no setting can be made meaningless
/// (a touch window of years, a zero touch timeout).
#[derive(Debug, Clone, Copy)]
pub struct DurationRange {
    pub setting: &'static str,
    pub min: Duration,
    pub max: Duration,
}

impl DurationRange {
    const fn new(setting: &'static str, min: Duration, max: Duration) -> DurationRange {
        DurationRange { setting, min, max }
    }

    pub(crate) fn check(&self, text: &str, d: Duration) -> Result<Duration, String> {
        if d < self.min || d > self.max {
            return Err(format!(
                "{} = \"{text}\" is out of range: use {} to {}",
                self.setting,
                format_duration(self.min),
                format_duration(self.max)
            ));
        }
        Ok(d)
    }

    fn parse(&self, text: &str) -> Result<Duration, String> {
        self.check(text, parse_duration(text)?)
    }
}

const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// A touch's time box: long enough to find the key, short enough that a
/// forgotten prompt does not hold the key for long.
pub const TOUCH_TIMEOUT: DurationRange =
    DurationRange::new("agent.touch_timeout", Duration::from_secs(1), mins(10));
pub const EXPIRY_MARGIN: DurationRange =
    DurationRange::new("agent.expiry_margin", Duration::ZERO, hours(1));
/// A connection waiting for its next request (not one waiting for a touch).
pub const IDLE_CONNECTION: DurationRange = DurationRange::new(
    "agent.idle_connection_timeout",
    Duration::from_secs(1),
    hours(24),
);
pub const IDLE_LOCK: DurationRange = DurationRange::new("agent.idle_lock", mins(1), hours(7 * 24));
pub const NOTIFY_TIMEOUT: DurationRange =
    DurationRange::new("notify.timeout", Duration::from_millis(10), mins(1));
/// Google caps access-token lifetimes at 12 h (1 h unless the organisation allows more).
pub const LIFETIME: DurationRange = DurationRange::new("lifetime", mins(1), hours(12));
pub const GOOGLE_DEADLINE: DurationRange =
    DurationRange::new("google.deadline", Duration::from_millis(100), mins(10));
/// An approval window: at most a day, so one touch never approves for longer.
pub const WINDOW: DurationRange = DurationRange::new("touch", Duration::from_secs(1), hours(24));

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

fn de_lifetime<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_in(d, LIFETIME)
}

/// `90s`, `15m`, `1h`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("\"{s}\" is not a duration: write it like \"90s\", \"15m\" or \"1h\"");
    if let Some(ms) = s.trim().strip_suffix("ms") {
        return match ms.parse::<u64>() {
            Ok(n) if !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Duration::from_millis(n))
            }
            _ => Err(bad()),
        };
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(86400) && s > 0 {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A config error: one line with file, line and column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Load from `path`; a missing file is the default config (one `default` profile).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError(format!(
                "cannot read config {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError(format!(
                "config {}:{line}:{col}: {}; fix the file and start the agent again",
                path.display(),
                e.message().trim().replace('\n', " ")
            ))
        })?;
        if cfg.profiles.is_empty() {
            cfg.profiles.insert("default".into(), Profile::default());
        }
        if let Some(d) = &cfg.default_profile {
            if !cfg.profiles.contains_key(d) {
                // Escaped: a name may hold a newline, and the error is one line.
                let d = d.escape_debug();
                return Err(ConfigError(format!(
                    "config {}: default_profile \"{d}\" is not a profile (have: {}); add [profiles.{d}] or fix the name",
                    path.display(),
                    cfg.profile_names().join(", ").escape_debug()
                )));
            }
        }
        for (name, p) in &cfg.profiles {
            // The scopes a request without scopes gets must be within the ceiling
            // (see policy::scope_ceiling), or such requests could never be served.
            let name = name.escape_debug();
            if p.scopes.is_empty() {
                return Err(ConfigError(format!(
                    "config {}: profiles.{name}.scopes is empty: list the scopes its tokens may carry",
                    path.display()
                )));
            }
            if let Some(s) = p
                .scopes
                .iter()
                .find(|s| !p.allowed_scopes.is_empty() && !p.allowed_scopes.contains(s))
            {
                return Err(ConfigError(format!(
                    "config {}: profiles.{name}.scopes has {}, which profiles.{name}.allowed_scopes does not allow: set scopes to some of allowed_scopes",
                    path.display(),
                    s.escape_debug()
                )));
            }
        }
        if !matches!(cfg.key.pin_protocol, 1 | 2) {
            return Err(ConfigError(format!(
                "config {}: key.pin_protocol must be 1 or 2, not {}",
                path.display(),
                cfg.key.pin_protocol
            )));
        }
        if cfg.agent.max_connections == 0 {
            return Err(ConfigError(format!(
                "config {}: agent.max_connections must be at least 1",
                path.display()
            )));
        }
        Ok(cfg)
    }

    pub fn profile_names(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }

    /// The profile used when a client names none: `default_profile`, else `default`, else the only one.
    pub fn default_profile_name(&self) -> Option<&str> {
        if let Some(d) = &self.default_profile {
            return Some(d);
        }
        if self.profiles.contains_key("default") {
            return Some("default");
        }
        if self.profiles.len() == 1 {
            return self.profiles.keys().next().map(String::as_str);
        }
        None
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut profiles = BTreeMap::new();
        profiles.insert("default".into(), Profile::default());
        Config {
            default_profile: None,
            agent: AgentSettings::default(),
            key: KeySettings::default(),
            google: Endpoints::default(),
            profiles,
            login: LoginSettings::default(),
            notify: NotifySettings::default(),
            audit: AuditSettings::default(),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/c/config.toml"))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("ms").is_err() && parse_duration("-5ms").is_err());
        for bad in ["", "10", "m", "5x", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(61)), "61s");
        assert_eq!(format_duration(Duration::from_secs(2 * 86400)), "2d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
default_profile = "inference"
[agent]
touch_timeout = "5s"
max_connections = 8
[key]
backend = "soft"
touch = "auto"
[google]
token_uri = "http://127.0.0.1:1/token"
iam_credentials = "http://127.0.0.1:1"
[profiles.inference]
service_account = "inf@p.iam.gserviceaccount.com"
project = "p"
lifetime = "15m"
touch = "10m"
[profiles.train]
credential = "trainer"
touch = "every-token"
lifetime = "5m"
"#,
        )
        .unwrap();
        assert_eq!(c.agent.touch_timeout, Duration::from_secs(5));
        assert_eq!(c.default_profile_name(), Some("inference"));
        let inf = &c.profiles["inference"];
        assert_eq!(inf.touch, TouchRule::Window(Duration::from_secs(600)));
        assert_eq!(inf.credential, "default");
        assert_eq!(inf.scopes, vec![CLOUD_PLATFORM.to_string()]);
        assert_eq!(c.profiles["train"].touch, TouchRule::EveryToken);
        assert!(c.notify.enabled);
        assert_eq!(c.notify.timeout, Duration::from_millis(500));
        let off = parse("[notify]\nenabled = false\ntimeout = \"2s\"\n").unwrap();
        assert!(!off.notify.enabled);
        assert_eq!(off.notify.timeout, Duration::from_secs(2));
        assert_eq!(
            c.google.token_uri.as_deref(),
            Some("http://127.0.0.1:1/token")
        );
    }

    #[test]
    fn empty_config_has_a_default_profile() {
        let c = parse("").unwrap();
        assert_eq!(c.default_profile_name(), Some("default"));
        assert_eq!(c.profiles["default"].touch, TouchRule::EveryToken);
        assert_eq!(c, Config::default());
    }

    #[test]
    fn errors_name_file_line_and_column_on_one_line() {
        let e = parse("[profiles.x]\ntouch = \"sometimes\"\n")
            .unwrap_err()
            .0;
        assert!(e.starts_with("config /c/config.toml:2:9:"), "{e}");
        assert!(e.contains("every-token"), "{e}");
        assert!(!e.contains('\n'));

        let e = parse("[agent]\ntouch_timout = \"5s\"\n").unwrap_err().0;
        assert!(e.contains(":2:1:") && e.contains("touch_timout"), "{e}");

        let e = parse("[agent]\ntouch_timeout = \"5 seconds\"\n")
            .unwrap_err()
            .0;
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn the_idle_connection_timeout_is_range_checked() {
        assert_eq!(
            parse("").unwrap().agent.idle_connection_timeout,
            Duration::from_secs(60)
        );
        let c = parse("[agent]\nidle_connection_timeout = \"2s\"\n").unwrap();
        assert_eq!(c.agent.idle_connection_timeout, Duration::from_secs(2));
        for bad in ["0s", "500ms", "2d"] {
            let e = parse(&format!("[agent]\nidle_connection_timeout = \"{bad}\"\n"))
                .unwrap_err()
                .0;
            assert!(
                e.contains("agent.idle_connection_timeout = \"") && e.contains("use 1s to 1d"),
                "{e}"
            );
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn audit_on_failure_refuses_unless_allow_is_named() {
        assert_eq!(parse("").unwrap().audit.on_failure, OnAuditFailure::Refuse);
        let c = parse("[audit]\non_failure = \"allow\"\n").unwrap();
        assert_eq!(c.audit.on_failure, OnAuditFailure::Allow);
        let e = parse("[audit]\non_failure = \"ignore\"\n").unwrap_err().0;
        assert!(
            e.contains("on_failure = \"ignore\" is not a setting"),
            "{e}"
        );
        assert!(e.contains("\"refuse\"") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn user_verification_takes_words_and_booleans() {
        let uv = |v: &str| {
            parse(&format!("[profiles.p]\nuser_verification = {v}\n"))
                .map(|c| c.profiles["p"].user_verification)
        };
        assert_eq!(uv("\"required\"").unwrap(), UserVerification::Required);
        assert_eq!(uv("\"preferred\"").unwrap(), UserVerification::Preferred);
        assert_eq!(
            uv("\"discouraged\"").unwrap(),
            UserVerification::Discouraged
        );
        assert_eq!(uv("true").unwrap(), UserVerification::Required);
        assert_eq!(uv("false").unwrap(), UserVerification::Preferred);
        let e = uv("\"always\"").unwrap_err().0;
        assert!(
            e.contains("use \"required\", \"preferred\" or \"discouraged\""),
            "{e}"
        );
        assert_eq!(
            parse("").unwrap().profiles["default"].user_verification,
            UserVerification::Preferred
        );
    }

    #[test]
    fn session_and_sleep_locks_default_on_and_take_only_booleans() {
        let c = parse("").unwrap();
        assert!(c.agent.lock_on_sleep && c.agent.lock_on_session_lock);
        let off = parse("[agent]\nlock_on_sleep = false\nlock_on_session_lock = false\n").unwrap();
        assert!(!off.agent.lock_on_sleep && !off.agent.lock_on_session_lock);
        let e = parse("[agent]\nlock_on_sleep = \"yes\"\n").unwrap_err().0;
        assert!(e.starts_with("config /c/config.toml:2:17:"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn durations_out_of_range_are_refused_with_file_line_col_and_the_range() {
        // Each setting, a value past its longest and one under its shortest.
        let cases = [
            (
                "[agent]\ntouch_timeout = ",
                "agent.touch_timeout",
                "1s to 10m",
            ),
            (
                "[agent]\nexpiry_margin = ",
                "agent.expiry_margin",
                "0s to 1h",
            ),
            ("[agent]\nidle_lock = ", "agent.idle_lock", "1m to 7d"),
            ("[notify]\ntimeout = ", "notify.timeout", "10ms to 1m"),
            ("[profiles.p]\nlifetime = ", "lifetime", "1m to 12h"),
            ("[profiles.p]\ntouch = ", "touch", "1s to 1d"),
            ("[google]\ndeadline = ", "google.deadline", "100ms to 10m"),
        ];
        for (prefix, setting, range) in cases {
            for bad in ["200000000000000d", "8d"] {
                let text = format!("{prefix}\"{bad}\"\n");
                let col = prefix.rsplit('\n').next().unwrap().len() + 1;
                let e = parse(&text).unwrap_err().0;
                assert!(
                    e.starts_with(&format!("config /c/config.toml:2:{col}:")),
                    "{setting}: {e}"
                );
                assert!(e.contains(setting) && e.contains(range), "{e}");
                assert!(!e.contains('\n'), "{e}");
            }
        }
        let e = parse("[agent]\ntouch_timeout = \"500ms\"\n").unwrap_err().0;
        assert!(
            e.contains("agent.touch_timeout") && e.contains("1s to 10m"),
            "{e}"
        );
        let e = parse("[profiles.p]\nlifetime = \"30s\"\n").unwrap_err().0;
        assert!(e.contains("1m to 12h"), "{e}");
        // The bounds themselves are allowed.
        let c = parse(
            "[agent]\ntouch_timeout = \"10m\"\nexpiry_margin = \"0s\"\nidle_lock = \"7d\"\n\
             [notify]\ntimeout = \"10ms\"\n[profiles.p]\nlifetime = \"12h\"\ntouch = \"24h\"\n",
        )
        .unwrap();
        assert_eq!(
            c.profiles["p"].touch,
            TouchRule::Window(Duration::from_secs(86400))
        );
    }

    #[test]
    fn a_profile_scopes_must_fit_its_ceiling() {
        let e = parse("[profiles.p]\nscopes = []\n").unwrap_err().0;
        assert!(e.contains("profiles.p.scopes is empty"), "{e}");
        // The default scope (cloud-platform) is not in allowed_scopes.
        let e = parse("[profiles.p]\nallowed_scopes = [\"ro\"]\n")
            .unwrap_err()
            .0;
        assert!(
            e.contains("profiles.p.scopes has https://www.googleapis.com/auth/cloud-platform"),
            "{e}"
        );
        assert!(
            parse("[profiles.p]\nscopes = [\"ro\"]\nallowed_scopes = [\"ro\", \"rw\"]\n").is_ok()
        );
    }

    #[test]
    fn unknown_default_profile_is_refused() {
        let e = parse("default_profile = \"nope\"\n[profiles.a]\n")
            .unwrap_err()
            .0;
        assert!(e.contains("\"nope\" is not a profile (have: a)"), "{e}");
    }
}
