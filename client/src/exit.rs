//! The exit codes of `touchgate` and `touchgate-agent`, and the one mapping from
//! what went wrong to them, so that scripts can branch on why a command failed.
//!
//! Invariants: a code once given keeps its meaning (scripts depend on it); 2 is
//! clap's usage error and is not used for anything else; codes stay below 64 so
//! they never collide with a signal's 128+N or a shell's 126/127. [`TABLE`] is
//! the documentation (the CLI's long help and the README's table are it).

use crate::protocol::ErrorCode;
use crate::ClientError;

/// Why a command ended, as a script sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    Ok,
    /// Anything without a code of its own (bad config, unknown profile, vault or key trouble…).
    Failure,
    /// The command line was wrong (clap exits with this itself).
    Usage,
    /// No agent at the socket, or its socket was refused (another user's, loose permissions,
    /// another protocol version).
    NoAgent,
    /// The profile's policy refuses this caller or these scopes.
    PolicyRefused,
    /// The touch (or the PIN) was refused on the key.
    TouchDenied,
    /// Nobody touched the key in time.
    TouchTimeout,
    /// The agent is locked: `touchgate unlock`.
    Locked,
    /// No key is enrolled, or the named credential is not sealed.
    NotEnrolled,
    /// Google (or the configured endpoint) refused or failed.
    Upstream,
    /// `touchgate doctor` found a failing check.
    DoctorFailed,
}

impl Exit {
    /// Every code, in table order.
    pub const ALL: [Exit; 11] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::NoAgent,
        Exit::PolicyRefused,
        Exit::TouchDenied,
        Exit::TouchTimeout,
        Exit::Locked,
        Exit::NotEnrolled,
        Exit::Upstream,
        Exit::DoctorFailed,
    ];

    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::NoAgent => 3,
            Exit::PolicyRefused => 4,
            Exit::TouchDenied => 5,
            Exit::TouchTimeout => 6,
            Exit::Locked => 7,
            Exit::NotEnrolled => 8,
            Exit::Upstream => 9,
            Exit::DoctorFailed => 10,
        }
    }

    /// One line for the table.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "success (`policy check`: allowed)",
            Exit::Failure => "any other failure (config, unknown profile, vault, key, bad input)",
            Exit::Usage => "usage: a wrong command line",
            Exit::NoAgent => "no agent is running at the socket, or the socket was refused",
            Exit::PolicyRefused => "refused by the profile's policy (`policy check`: refused)",
            Exit::TouchDenied => "the touch or the PIN was refused on the security key",
            Exit::TouchTimeout => "nobody touched the security key in time",
            Exit::Locked => "the agent is locked: run `touchgate unlock`",
            Exit::NotEnrolled => "no key is enrolled, or the profile's credential is not sealed",
            Exit::Upstream => "Google (the token endpoint) refused or failed",
            Exit::DoctorFailed => "`touchgate doctor` found a failing check",
        }
    }

    /// The exit code for an agent's error code.
    pub fn of_code(code: ErrorCode) -> Exit {
        match code {
            ErrorCode::VersionMismatch | ErrorCode::PeerRefused => Exit::NoAgent,
            ErrorCode::PolicyRefused => Exit::PolicyRefused,
            ErrorCode::TouchDenied | ErrorCode::Pin => Exit::TouchDenied,
            ErrorCode::TouchTimeout => Exit::TouchTimeout,
            ErrorCode::Locked => Exit::Locked,
            ErrorCode::NotEnrolled | ErrorCode::UnknownCredential => Exit::NotEnrolled,
            ErrorCode::Upstream => Exit::Upstream,
            ErrorCode::BadFrame
            | ErrorCode::Busy
            | ErrorCode::AlreadyEnrolled
            | ErrorCode::UnknownProfile
            | ErrorCode::BadCredential
            | ErrorCode::KeyVerification
            | ErrorCode::Key
            | ErrorCode::Vault
            | ErrorCode::Config
            | ErrorCode::Internal
            | ErrorCode::BadRequest => Exit::Failure,
        }
    }

    /// The exit code for a client error.
    pub fn of_client_error(e: &ClientError) -> Exit {
        match e {
            ClientError::Agent(reply) => Exit::of_code(reply.code),
            ClientError::NotRunning { .. }
            | ClientError::Connect { .. }
            | ClientError::ForeignDir { .. }
            | ClientError::LooseDir { .. }
            | ClientError::ForeignPeer { .. }
            | ClientError::VersionMismatch { .. } => Exit::NoAgent,
            ClientError::Frame(_)
            | ClientError::RequestTooLarge(_)
            | ClientError::Unexpected { .. } => Exit::Failure,
        }
    }

    /// The exit code for any error: the first [`ClientError`] in its chain decides.
    pub fn of_error(e: &(dyn std::error::Error + 'static)) -> Exit {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(c) = err.downcast_ref::<ClientError>() {
                return Exit::of_client_error(c);
            }
            cur = err.source();
        }
        Exit::Failure
    }

    /// A short stable name, for JSON error documents.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Failure => "failure",
            Exit::Usage => "usage",
            Exit::NoAgent => "no-agent",
            Exit::PolicyRefused => "policy-refused",
            Exit::TouchDenied => "touch-denied",
            Exit::TouchTimeout => "touch-timeout",
            Exit::Locked => "locked",
            Exit::NotEnrolled => "not-enrolled",
            Exit::Upstream => "upstream",
            Exit::DoctorFailed => "doctor-failed",
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// The table, as printed in `touchgate --help` (and so in the man page) and the README.
pub const TABLE: &str = "\
Exit codes:
  0   success (`policy check`: allowed)
  1   any other failure (config, unknown profile, vault, key, bad input)
  2   usage: a wrong command line
  3   no agent is running at the socket, or the socket was refused
  4   refused by the profile's policy (`policy check`: refused)
  5   the touch or the PIN was refused on the security key
  6   nobody touched the security key in time
  7   the agent is locked: run `touchgate unlock`
  8   no key is enrolled, or the profile's credential is not sealed
  9   Google (the token endpoint) refused or failed
  10  `touchgate doctor` found a failing check";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_code_once_with_its_meaning() {
        let rows: Vec<&str> = TABLE.lines().skip(1).collect();
        assert_eq!(rows.len(), Exit::ALL.len());
        for (row, e) in rows.iter().zip(Exit::ALL) {
            assert_eq!(*row, format!("  {:<3} {}", e.code(), e.meaning()));
        }
        let mut codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len(), "codes are distinct");
        assert!(codes.iter().all(|c| *c < 64));
    }

    #[test]
    fn a_client_error_in_a_chain_decides() {
        let e = anyhow::Error::from(ClientError::Agent(crate::ErrorReply::new(
            ErrorCode::Locked,
            "locked",
        )))
        .context("getting a token");
        assert_eq!(Exit::of_error(e.as_ref()), Exit::Locked);
        let plain = anyhow::anyhow!("something else");
        assert_eq!(Exit::of_error(plain.as_ref()), Exit::Failure);
    }
}
