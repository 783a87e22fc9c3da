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
//!
//! [profiles.deploy]
//! touch = "every-token"
//! kubectl_window = "10m"    # every-token only: the kubectl plugin's token reused by that kubectl for that cluster
//! ```
//!
//! Every duration has a range ([`DurationRange`]): a value outside it is a
//! config error with file:line:col, so no setting can overflow the clock.
//!
//! The tables' types are the library's (`touchgate::config`, `touchgate::duration`,
//! re-exported here), so the CLI reads the same `[login]`; this module adds `[google]`
//! (the upstream's [`Endpoints`]), reads the TOML and checks across tables.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

pub use touchgate::config::{
    AgentSettings, AuditSettings, KeyBackend, KeySettings, LoginSettings, NotifySettings,
    OnAuditFailure, Per, Profile, TouchRule, UserVerification,
};
pub use touchgate::duration::{
    format_duration, parse_duration, DurationRange, EXPIRY_MARGIN, GOOGLE_DEADLINE,
    IDLE_CONNECTION, IDLE_LOCK, LIFETIME, NOTIFY_TIMEOUT, TOUCH_TIMEOUT, WINDOW,
};

use crate::upstream::Endpoints;

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
            if let Some(k) = p.kubectl_window {
                if let TouchRule::Window(w) = p.touch {
                    return Err(ConfigError(format!(
                        "config {}: profiles.{name}.kubectl_window is for every-token profiles: kubectl already shares this profile's {} window; remove kubectl_window",
                        path.display(),
                        format_duration(w)
                    )));
                }
                if k > p.lifetime {
                    return Err(ConfigError(format!(
                        "config {}: profiles.{name}.kubectl_window ({}) is longer than its lifetime ({}): the window reuses one token, so it cannot outlive it; shorten kubectl_window",
                        path.display(),
                        format_duration(k),
                        format_duration(p.lifetime)
                    )));
                }
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
    use std::time::Duration;
    use touchgate::google::CLOUD_PLATFORM;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/c/config.toml"))
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
    fn a_kubectl_window_is_for_every_token_profiles_and_within_the_lifetime() {
        let c = parse("[profiles.p]\nlifetime = \"15m\"\nkubectl_window = \"10m\"\n").unwrap();
        assert_eq!(
            c.profiles["p"].kubectl_window,
            Some(Duration::from_secs(600))
        );
        assert_eq!(parse("").unwrap().profiles["default"].kubectl_window, None);
        let e = parse("[profiles.p]\ntouch = \"10m\"\nkubectl_window = \"5m\"\n")
            .unwrap_err()
            .0;
        assert!(
            e.contains("profiles.p.kubectl_window is for every-token profiles")
                && e.contains("10m window"),
            "{e}"
        );
        let e = parse("[profiles.p]\nlifetime = \"15m\"\nkubectl_window = \"20m\"\n")
            .unwrap_err()
            .0;
        assert!(e.contains("longer than its lifetime (15m)"), "{e}");
        let e = parse("[profiles.p]\nkubectl_window = \"500ms\"\n")
            .unwrap_err()
            .0;
        assert!(
            e.contains("kubectl_window") && e.contains("1s to 12h"),
            "{e}"
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
