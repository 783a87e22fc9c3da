//! Durations in touchgate's config: the text form (`90s`, `15m`, `1h30m`, `500ms`), and the
//! range each duration setting may take.
//!
//! Invariants: every duration setting is read through its [`DurationRange`], so a value
//! outside it is refused where it is written (the caller adds file:line:col) and no later
//! `now + duration` can overflow; errors are one line naming the setting and the range.

use std::time::Duration;

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
    pub const fn new(setting: &'static str, min: Duration, max: Duration) -> DurationRange {
        DurationRange { setting, min, max }
    }

    /// `d` (written as `text`), or a one-line error naming the setting and its range.
    pub fn check(&self, text: &str, d: Duration) -> Result<Duration, String> {
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

    /// `text` parsed ([`parse_duration`]) and range-checked.
    pub fn parse(&self, text: &str) -> Result<Duration, String> {
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
/// A kubectl window reuses one token, so it never outlives a token's longest lifetime.
pub const KUBECTL_WINDOW: DurationRange =
    DurationRange::new("kubectl_window", Duration::from_secs(1), hours(12));

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

/// The shortest of `Nd`, `Nh`, `Nm`, `Ns`, `Nms` that says `d` exactly.
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

/// `[google] deadline` in config: `"20s"`, `"1m30s"`, `"500ms"` or plain seconds as a
/// number, within [`GOOGLE_DEADLINE`]; written back as `"20s"` / `"500ms"`.
pub mod google_deadline {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_millis() == 0 {
            s.serialize_str(&format!("{}s", d.as_secs()))
        } else {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Secs(u64),
        Str(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let (text, d) = match Text::deserialize(d)? {
            Text::Secs(n) => (n.to_string(), Duration::from_secs(n)),
            Text::Str(s) => {
                let t = s.trim();
                let parsed = match t.strip_suffix("ms") {
                    Some(ms) => ms
                        .parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| String::new()),
                    None => super::parse_duration(t),
                };
                let d = parsed.map_err(|_| {
                    serde::de::Error::custom(format!(
                        "\"{}\" is not a duration: write it like \"20s\", \"500ms\" or \"1m\"",
                        t.chars().take(40).collect::<String>()
                    ))
                })?;
                (t.chars().take(40).collect(), d)
            }
        };
        super::GOOGLE_DEADLINE
            .check(&text, d)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
