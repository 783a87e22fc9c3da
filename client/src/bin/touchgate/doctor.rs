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
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use touchgate::{paths, Client, ClientError, StatusReply, PROTOCOL_VERSION};

use crate::exec::SHIM_ADDR_ENV;
use crate::setup;

const TIMEOUT: Duration = Duration::from_secs(2);
const START_AGENT: &str =
    "start the agent: eval \"$(touchgate-agent)\" or systemctl --user start touchgate-agent.socket";
const START_SHIM: &str = "start it: touchgate-shim serve";
const METADATA_VARS: [&str; 3] = ["GCE_METADATA_ROOT", "GCE_METADATA_HOST", "GCE_METADATA_IP"];

/// Prints the report; returns whether every check passed (warnings allowed).
pub async fn run(profile: Option<&str>) -> bool {
    let mut r = Report::default();
    if let Some(mut client) = agent(&mut r).await {
        match tokio::time::timeout(TIMEOUT, client.status()).await {
            Ok(Ok(s)) => agent_state(&mut r, &s, profile),
            Ok(Err(e)) => r.fail("agent status", e, START_AGENT),
            Err(_) => r.fail(
                "agent status",
                "no answer within 2 s",
                "restart the agent (systemctl --user restart touchgate-agent, or kill it and eval \"$(touchgate-agent)\")",
            ),
        }
    }
    // The wiring decides whether a missing shim is a failure; it is printed after the shim.
    let shim = shim_addr();
    let mut w = Report {
        held: Some(vec![]),
        ..Report::default()
    };
    let uses_shim = wiring(&mut w, shim.as_ref().ok().copied());
    shim_check(&mut r, shim, uses_shim);
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

/// The socket, its directory, and the hello; the connected client if it answered.
async fn agent(r: &mut Report) -> Option<Client> {
    let path = paths::socket_path();
    let from = if std::env::var_os("TOUCHGATE_SOCK").is_some_and(|v| !v.is_empty()) {
        "TOUCHGATE_SOCK"
    } else {
        "default"
    };
    let what = format!("agent socket {} ({from})", path.display());
    let me = paths::current_uid();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut perms_ok = true;
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.fail(
                &what,
                "no such file or directory: no agent is running",
                START_AGENT,
            );
            return None;
        }
        Err(e) => {
            r.fail(
                &what,
                format!("cannot read {}: {e}", dir.display()),
                START_AGENT,
            );
            return None;
        }
        Ok(m) => {
            let dwhat = format!("agent socket directory {}", dir.display());
            if m.uid() != me {
                perms_ok = false;
                r.fail(
                    &dwhat,
                    format!("owned by uid {}, not by you (uid {me})", m.uid()),
                    "set TOUCHGATE_SOCK to a path in a directory of your own and restart the agent",
                );
            } else if m.mode() & 0o077 != 0 {
                perms_ok = false;
                r.fail(
                    &dwhat,
                    format!(
                        "mode {:04o}, should be 0700 (other users can reach the socket)",
                        m.mode() & 0o7777
                    ),
                    format!("chmod 700 {}", dir.display()),
                );
            }
        }
    }
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.fail(&what, "no such file: no agent is running", START_AGENT);
            return None;
        }
        Err(e) => {
            r.fail(&what, format!("cannot read it: {e}"), START_AGENT);
            return None;
        }
        Ok(m) if !m.file_type().is_socket() => {
            r.fail(
                &what,
                "not a socket",
                format!("remove {}, then {START_AGENT}", path.display()),
            );
            return None;
        }
        Ok(m) if m.uid() != me => {
            perms_ok = false;
            r.fail(
                &what,
                format!("owned by uid {}, not by you (uid {me})", m.uid()),
                "set TOUCHGATE_SOCK to your own agent's socket",
            );
        }
        Ok(m) if m.mode() & 0o077 != 0 => {
            perms_ok = false;
            r.fail(
                &what,
                format!("mode {:04o}, should be 0600", m.mode() & 0o7777),
                format!("chmod 600 {}", path.display()),
            );
        }
        Ok(_) => {}
    }
    if perms_ok {
        r.ok(format!("{what}: directory 0700, socket 0600, both yours"));
    }
    let what = format!("agent at {}", path.display());
    match tokio::time::timeout(TIMEOUT, Client::connect(&path)).await {
        Ok(Ok(c)) => {
            r.ok(format!(
                "agent answers: {}, protocol {PROTOCOL_VERSION}",
                c.agent_software
            ));
            Some(c)
        }
        Ok(Err(ClientError::NotRunning { .. })) => {
            r.fail(
                &what,
                "nothing listens on the socket (a stale file of an agent that stopped)",
                START_AGENT,
            );
            None
        }
        Ok(Err(ClientError::VersionMismatch { agent, client })) => {
            r.fail(
                &what,
                format!("it speaks protocol {agent}, this touchgate speaks {client}"),
                "install touchgate and touchgate-agent of the same release, then restart the agent",
            );
            None
        }
        Ok(Err(e @ ClientError::Connect { .. })) => {
            r.fail(
                &what,
                e,
                format!("point TOUCHGATE_SOCK at your own agent's socket, or {START_AGENT}"),
            );
            None
        }
        Ok(Err(e)) => {
            r.fail(&what, e, START_AGENT);
            None
        }
        Err(_) => {
            r.fail(
                &what,
                "no hello within 2 s (the agent hangs)",
                "restart the agent (systemctl --user restart touchgate-agent, or kill it and eval \"$(touchgate-agent)\")",
            );
            None
        }
    }
}

fn agent_state(r: &mut Report, s: &StatusReply, profile: Option<&str>) {
    match &s.enrolled {
        Some(e) => r.ok(format!(
            "key enrolled: {} credential {}",
            e.key_name, e.credential
        )),
        None => r.fail(
            "key enrolled",
            "no security key is enrolled",
            "touchgate enroll",
        ),
    }
    if s.credentials.is_empty() {
        r.fail(
            "sealed credentials",
            "none",
            "touchgate import FILE (a service-account key or ADC file) or touchgate login",
        );
    } else {
        r.ok(format!("sealed credentials: {}", s.credentials.join(", ")));
    }
    match &s.locked {
        Some(why) => r.warn("agent locked", why, "touchgate unlock"),
        None => r.ok("agent unlocked"),
    }
    let found = s
        .profiles
        .iter()
        .find(|p| profile.map_or(p.is_default, |n| p.name == n));
    match (found, profile) {
        (Some(p), _) => {
            let what = format!(
                "profile {}{}",
                p.name,
                if p.is_default { " (default)" } else { "" }
            );
            if s.credentials.contains(&p.credential) {
                r.ok(format!(
                    "{what}: credential {}{}",
                    p.credential,
                    p.project
                        .as_deref()
                        .map(|p| format!(", project {p}"))
                        .unwrap_or_default()
                ));
            } else {
                r.fail(
                    what,
                    format!("its credential {} is not sealed", p.credential),
                    format!("touchgate import FILE --name {}", p.credential),
                );
            }
        }
        (None, Some(n)) => r.fail(
            format!("profile {n}"),
            "the agent has no such profile",
            format!(
                "add [profiles.{n}] to {} and touchgate reload (see touchgate profiles)",
                paths::config_path().display()
            ),
        ),
        (None, None) => r.warn(
            "default profile",
            "the agent has none",
            format!(
                "set default_profile in {}, or pass --profile",
                paths::config_path().display()
            ),
        ),
    }
}

/// Where the shim is expected: `$TOUCHGATE_SHIM_ADDR` or 127.0.0.1:8946.
fn shim_addr() -> Result<SocketAddr, String> {
    crate::exec::shared_shim_addr().ok_or_else(|| {
        format!(
            "{SHIM_ADDR_ENV}={} is not a loopback address",
            std::env::var(SHIM_ADDR_ENV).unwrap_or_default()
        )
    })
}

fn shim_check(r: &mut Report, addr: Result<SocketAddr, String>, used: bool) {
    let addr = match addr {
        Ok(a) => a,
        Err(why) => {
            r.fail(
                "shim address",
                why,
                format!("export {SHIM_ADDR_ENV}=127.0.0.1:8946 (or unset it)"),
            );
            return;
        }
    };
    let from = if std::env::var_os(SHIM_ADDR_ENV).is_some_and(|v| !v.is_empty()) {
        SHIM_ADDR_ENV
    } else {
        "default"
    };
    let what = format!("shim at {addr} ({from})");
    let bad = |r: &mut Report, why: String| {
        if used {
            r.fail(&what, why, START_SHIM);
        } else {
            r.warn(
                &what,
                format!("{why}; nothing set up here uses it (touchgate exec starts its own)"),
                START_SHIM,
            );
        }
    };
    match metadata_get(addr, "/computeMetadata/v1/project/project-id") {
        Ok((200, true, body)) => r.ok(format!("{what} answers: project {}", printable(&body))),
        Ok((404, true, _)) => r.warn(
            &what,
            "answers, but serves no project",
            "set project in the profile, or touchgate-shim serve --project ID",
        ),
        Ok((status, true, _)) => bad(r, format!("answers the project-id with HTTP {status}")),
        Ok((status, false, _)) => bad(
            r,
            format!("something else answers there (HTTP {status}, no Metadata-Flavor: Google)"),
        ),
        Err(e) => bad(r, e),
    }
}

/// A metadata GET on loopback with 2 s time-outs: (status, Metadata-Flavor: Google, body).
fn metadata_get(addr: SocketAddr, path: &str) -> Result<(u16, bool, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "nothing listens there".to_owned(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            "no answer within 2 s".to_owned()
        }
        _ => format!("cannot connect: {e}"),
    })?;
    let io = |e: std::io::Error| format!("no usable answer: {e}");
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf).map_err(io)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP answer".to_owned())?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "not an HTTP answer".to_owned())?;
    let flavored = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("metadata-flavor") && v.trim() == "Google"
        })
    });
    Ok((status, flavored, body.to_owned()))
}

/// At most 100 characters, control characters dropped (for text read from elsewhere).
fn printable(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

/// What a credential file is, from its `type` alone.
enum Cred {
    /// The shim's `external_account` file: the shim address and profile it names.
    Touchgate {
        shim: Option<SocketAddr>,
        profile: String,
    },
    /// A long-lived secret in plain text (service-account key, refresh token).
    Plaintext(String),
    /// Another kind (another external_account, …): named by its type.
    Other(String),
    Unreadable(String),
}

fn classify(path: &Path) -> Cred {
    let bytes = match std::fs::read(path) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) => return Cred::Unreadable(format!("cannot read it: {}", e.kind())),
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Cred::Unreadable("not a JSON credential file".into());
    };
    let ty = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let ty = match ty {
        "service_account"
        | "authorized_user"
        | "impersonated_service_account"
        | "external_account"
        | "external_account_authorized_user"
        | "gdch_service_account" => ty.to_owned(),
        "" => return Cred::Unreadable("it has no type".into()),
        _ => "an unknown type".to_owned(),
    };
    let audience = v.get("audience").and_then(|a| a.as_str()).unwrap_or("");
    if ty == "external_account" && audience.starts_with("//touchgate.local/") {
        let profile = audience
            .strip_prefix("//touchgate.local/profile/")
            .map(printable)
            .unwrap_or_else(|| "(the shim's default)".into());
        let shim = v
            .get("token_url")
            .and_then(|u| u.as_str())
            .and_then(|u| u.strip_prefix("http://"))
            .and_then(|u| u.split('/').next())
            .and_then(|a| a.parse::<SocketAddr>().ok());
        return Cred::Touchgate { shim, profile };
    }
    match ty.as_str() {
        "service_account"
        | "authorized_user"
        | "impersonated_service_account"
        | "external_account_authorized_user"
        | "gdch_service_account" => Cred::Plaintext(ty),
        _ => Cred::Other(ty),
    }
}

/// Report on the credential file `path` (`what` names it); returns whether it is the shim's.
fn credential_file(r: &mut Report, what: &str, path: &Path, shim: Option<SocketAddr>) -> bool {
    let what = format!("{what} {}", path.display());
    match classify(path) {
        Cred::Touchgate {
            shim: named,
            profile,
        } => {
            match (named, shim) {
                (Some(n), Some(s)) if n == s => r.ok(format!(
                    "{what}: the shim's external_account credential (profile {profile}, shim {n})"
                )),
                (Some(n), Some(s)) => r.fail(
                    &what,
                    format!("names the shim at {n}, but the shim is expected at {s}"),
                    format!(
                        "run touchgate-shim serve --listen {n}, or export {SHIM_ADDR_ENV}={n}, or redo touchgate setup with the right {SHIM_ADDR_ENV}"
                    ),
                ),
                _ => r.fail(
                    &what,
                    "names no usable shim address",
                    "redo touchgate setup adc (or touchgate setup gcloud)",
                ),
            }
            true
        }
        Cred::Plaintext(ty) => {
            r.warn(
                &what,
                format!("a {ty} credential: a long-lived secret in plain text"),
                format!(
                    "touchgate import {}, then touchgate setup adc",
                    path.display()
                ),
            );
            false
        }
        Cred::Other(ty) => {
            r.warn(
                &what,
                format!("a {ty} credential, not touchgate's"),
                "touchgate setup adc",
            );
            false
        }
        Cred::Unreadable(why) => {
            r.fail(&what, why, "touchgate setup adc (or remove the file)");
            false
        }
    }
}

/// gcloud's configuration, the ADC file, GOOGLE_APPLICATION_CREDENTIALS and the
/// metadata variables; returns whether any of them relies on the shim.
fn wiring(r: &mut Report, shim: Option<SocketAddr>) -> bool {
    let mut uses_shim = false;
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());

    // gcloud configuration `touchgate` (touchgate setup gcloud).
    match setup::gcloud_config_path() {
        Err(e) => r.fail("gcloud configuration", e, "set HOME or CLOUDSDK_CONFIG"),
        Ok(conf) => {
            let name = setup::GCLOUD_CONFIG_NAME;
            let what = format!("gcloud configuration {name} ({})", conf.display());
            match std::fs::read_to_string(&conf) {
                Err(_) => r.warn(&what, "not set up", "touchgate setup gcloud"),
                Ok(text) => {
                    let active = match var("CLOUDSDK_ACTIVE_CONFIG_NAME") {
                        Some(v) => v.to_string_lossy().into_owned(),
                        None => conf
                            .parent()
                            .and_then(Path::parent)
                            .and_then(|d| std::fs::read_to_string(d.join("active_config")).ok())
                            .map(|s| s.trim().to_owned())
                            .unwrap_or_else(|| "default".into()),
                    };
                    let cred = text.lines().find_map(|l| {
                        let (k, v) = l.split_once('=')?;
                        (k.trim() == "credential_file_override").then(|| PathBuf::from(v.trim()))
                    });
                    match cred {
                        None => r.warn(
                            &what,
                            "it sets no auth/credential_file_override",
                            "touchgate setup gcloud",
                        ),
                        Some(f) => {
                            uses_shim |=
                                credential_file(r, "gcloud configuration credential file", &f, shim)
                        }
                    }
                    if active == name {
                        r.ok(format!("{what}: active"));
                    } else {
                        r.warn(
                            &what,
                            format!("present but not active (active: {})", printable(&active)),
                            format!(
                                "gcloud config configurations activate {name}, or per command CLOUDSDK_ACTIVE_CONFIG_NAME={name} gcloud …"
                            ),
                        );
                    }
                }
            }
        }
    }

    // gcloud's application-default credentials file (touchgate setup adc).
    match setup::gcloud_adc_path() {
        Err(e) => r.fail("ADC file", e, "set HOME or CLOUDSDK_CONFIG"),
        Ok(adc) if !adc.exists() => r.warn(
            format!("ADC file {}", adc.display()),
            "none",
            "touchgate setup adc",
        ),
        Ok(adc) => uses_shim |= credential_file(r, "ADC file", &adc, shim),
    }

    // GOOGLE_APPLICATION_CREDENTIALS overrides the ADC file for the client libraries.
    match var("GOOGLE_APPLICATION_CREDENTIALS") {
        None => r.ok("GOOGLE_APPLICATION_CREDENTIALS not set (the ADC file is used)"),
        Some(p) => {
            let p = PathBuf::from(p);
            if p.exists() {
                uses_shim |= credential_file(r, "GOOGLE_APPLICATION_CREDENTIALS", &p, shim);
            } else {
                r.fail(
                    format!("GOOGLE_APPLICATION_CREDENTIALS {}", p.display()),
                    "no such file",
                    "unset GOOGLE_APPLICATION_CREDENTIALS, or point it at a touchgate-shim adc-file credential",
                );
            }
        }
    }

    // The metadata route: GCE_METADATA_* at the shim.
    let set: Vec<(&str, String)> = METADATA_VARS
        .iter()
        .filter_map(|k| var(k).map(|v| (*k, v.to_string_lossy().into_owned())))
        .collect();
    if set.is_empty() {
        r.ok("GCE_METADATA_ROOT/HOST/IP not set (metadata route unused; touchgate exec sets them per command)");
    }
    let shim_text = shim.map(|s| s.to_string());
    for (k, v) in &set {
        let at_shim = v.trim().parse::<SocketAddr>().ok() == shim
            || Some(v.trim().trim_start_matches("http://").trim_end_matches('/'))
                == shim_text.as_deref();
        if at_shim {
            uses_shim = true;
            r.ok(format!("{k}={} points at the shim", printable(v)));
        } else {
            r.warn(
                format!("{k}={}", printable(v)),
                "not the shim's address",
                format!(
                    "export {k}={}, or unset it",
                    shim_text.as_deref().unwrap_or("127.0.0.1:8946")
                ),
            );
        }
    }
    uses_shim
}
