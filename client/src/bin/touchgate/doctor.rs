//! `touchgate doctor [--profile P]`: one line per check of the agent, the shim
//! and what `touchgate setup` wired up — `ok   WHAT`, `warn WHAT: WHY — FIX` or
//! `FAIL WHAT: WHY — FIX` — and exit status 1 when a check failed.
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
use std::io::{Read, Write};
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

/// Prints the report; returns whether every check passed (warnings allowed).
pub async fn run(profile: Option<&str>) -> bool {
    let mut r = Report::default();
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
    // The wiring decides whether a missing shim is a failure; it is printed after the shim.
    let shim = shim::addr();
    let mut w = Report {
        held: Some(vec![]),
        ..Report::default()
    };
    let uses_shim = wiring::check(&mut w, shim.as_ref().ok().copied());
    shim::check(&mut r, shim, uses_shim);
    for line in w.held.take().unwrap_or_default() {
        println!("{line}");
    }
    r.failed |= w.failed;
    !r.failed
}

#[derive(Default)]
struct Report {
    failed: bool,
    /// Lines kept back instead of printed at once.
    held: Option<Vec<String>>,
}

impl Report {
    fn line(&mut self, line: String) {
        match &mut self.held {
            Some(h) => h.push(line),
            None => println!("{line}"),
        }
    }
    fn ok(&mut self, what: impl Display) {
        self.line(format!("ok   {what}"));
    }
    fn warn(&mut self, what: impl Display, why: impl Display, fix: impl Display) {
        self.line(format!("warn {what}: {why} — {fix}"));
    }
    fn fail(&mut self, what: impl Display, why: impl Display, fix: impl Display) {
        self.failed = true;
        self.line(format!("FAIL {what}: {why} — {fix}"));
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
