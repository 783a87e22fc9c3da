//! The agent: its socket, the hello, and what `status` says.

use super::*;

/// The socket, its directory, and the hello; the connected client if it answered.
pub(super) async fn socket_and_hello(r: &mut Report) -> Option<Client> {
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
        Ok(Err(ClientError::ForeignDir { .. } | ClientError::LooseDir { .. })) => {
            r.fail(
                &what,
                "not asked: its directory is not yours alone (above)",
                "fix the directory as said above",
            );
            None
        }
        Ok(Err(ClientError::ForeignPeer { owner, me, .. })) => {
            r.fail(
                &what,
                format!("not asked: uid {owner} listens on it, not you (uid {me})"),
                "set TOUCHGATE_SOCK to your own agent's socket",
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

pub(super) fn state(r: &mut Report, s: &StatusReply, profile: Option<&str>) {
    let mut soft = false;
    for w in &s.warnings {
        match w {
            SecurityWarning::SoftKey { state_file } => {
                soft = true;
                r.fail(
                    "key backend soft",
                    format!("the software key's secret lies in plain text in {state_file}: a copy of the state dir mints tokens without a touch"),
                    format!(
                        "set backend = \"hid\" in [key] of {}, restart the agent, touchgate enroll",
                        paths::config_path().display()
                    ),
                );
            }
            SecurityWarning::UnattestedAaguids => r.warn(
                "key.allowed_aaguids",
                "set without key.attestation_roots: a key's model is only what the key says of itself",
                "add the vendor's attestation root to key.attestation_roots",
            ),
            SecurityWarning::AuditFailOpen => r.warn(
                "audit.on_failure",
                "\"allow\": tokens are issued even when the audit log cannot record them",
                "remove on_failure from [audit] (the default refuses)",
            ),
        }
    }
    if !soft {
        r.ok(format!(
            "key backend {}: the secret never leaves the key",
            s.key_backend
        ));
    }
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
