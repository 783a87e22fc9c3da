//! `touchgate doctor [--profile P]`: one line per check of the agent, the shim
//! and what `touchgate setup` wired up — `ok   WHAT`, `warn WHAT: WHY — FIX` or
//! `FAIL WHAT: WHY — FIX` (or, with `--json`, one document of the same checks)
//! — and exit status 10 when a check failed.
//!
//! Every check is cheap and time-boxed (2 s per connection). Files are read only
//! for their `type` and the shim address they name: no token, key or secret is
//! ever printed.
//!
//! The shim check is a FAIL when something in the user's setup relies on it (an
//! ADC or gcloud credential file made by `touchgate setup`, or GCE_METADATA_*
//! in the environment), and a warning otherwise (`touchgate exec` starts a
//! private shim when none runs).

use std::fmt::Display;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use touchgate::{paths, Client, ClientError, SecurityWarning, StatusReply, PROTOCOL_VERSION};

use crate::exec::SHIM_ADDR_ENV;
use crate::setup;

mod agent;
mod shim;
mod wiring;

const TIMEOUT: Duration = Duration::from_secs(2);
const START_AGENT: &str =
    "start the agent: eval \"$(touchgate-agent)\" or systemctl --user start touchgate-agent.socket";
const START_SHIM: &str = "start it: touchgate-shim serve";
const METADATA_VARS: [&str; 3] = ["GCE_METADATA_ROOT", "GCE_METADATA_HOST", "GCE_METADATA_IP"];

/// Prints the report (text, or with `json` one [`DoctorReport`] document);
/// returns whether every check passed (warnings allowed).
pub async fn run(profile: Option<&str>, json: bool) -> bool {
    let mut r = Report {
        stream: !json,
        ..Report::default()
    };
    if let Some(mut client) = agent::socket_and_hello(&mut r).await {
        match tokio::time::timeout(TIMEOUT, client.status()).await {
            Ok(Ok(s)) => agent::state(&mut r, &s, profile),
            Ok(Err(e)) => r.fail("agent status", e, START_AGENT),
            Err(_) => r.fail(
                "agent status",
                "no answer within 2 s",
                "restart the agent (systemctl --user restart touchgate-agent, or kill it and eval \"$(touchgate-agent)\")",
            ),
        }
    }
    // The wiring decides whether a missing shim is a failure; it is reported after the shim.
    let shim = shim::addr();
    let mut w = Report::default();
    let uses_shim = wiring::check(&mut w, shim.as_ref().ok().copied());
    shim::check(&mut r, shim, uses_shim);
    for c in w.checks {
        r.push(c);
    }
    let ok = !r.checks.iter().any(|c| c.status == Status::Fail);
    if json {
        crate::json_out::print_json(&DoctorReport {
            ok,
            checks: r.checks,
        });
    }
    ok
}

/// `touchgate doctor --json`: `{"ok": bool, "checks": [{"status", "what", "why", "fix"}]}`.
#[derive(serde::Serialize)]
struct DoctorReport {
    /// No check failed (warnings allowed).
    ok: bool,
    checks: Vec<Check>,
}

/// One check: `ok` has neither `why` nor `fix`.
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
struct Check {
    status: Status,
    what: String,
    why: Option<String>,
    fix: Option<String>,
}

#[derive(serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag} {}", self.what)?;
        if let (Some(why), Some(fix)) = (&self.why, &self.fix) {
            write!(f, ": {why} — {fix}")?;
        }
        Ok(())
    }
}

/// The checks so far; printed as they come when `stream` (text output).
#[derive(Default)]
struct Report {
    checks: Vec<Check>,
    stream: bool,
}

impl Report {
    fn push(&mut self, c: Check) {
        if self.stream {
            println!("{c}");
        }
        self.checks.push(c);
    }
    fn ok(&mut self, what: impl Display) {
        self.push(Check {
            status: Status::Ok,
            what: what.to_string(),
            why: None,
            fix: None,
        });
    }
    fn warn(&mut self, what: impl Display, why: impl Display, fix: impl Display) {
        self.push(Check {
            status: Status::Warn,
            what: what.to_string(),
            why: Some(why.to_string()),
            fix: Some(fix.to_string()),
        });
    }
    fn fail(&mut self, what: impl Display, why: impl Display, fix: impl Display) {
        self.push(Check {
            status: Status::Fail,
            what: what.to_string(),
            why: Some(why.to_string()),
            fix: Some(fix.to_string()),
        });
    }
}

/// At most 100 characters, control characters dropped (for text read from elsewhere).
fn printable(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}
