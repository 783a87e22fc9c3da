//! `--json`: one JSON document on stdout per command, built from serde types
//! (the protocol's replies where they exist), never by hand.
//!
//! Invariants: nothing printed here carries a secret — the protocol's replies
//! that are printed (status, profiles, keys) hold none, and an error document
//! holds only the one-line message every error already prints. A field once
//! documented keeps its name and meaning; new fields may be added.

use serde::Serialize;
use touchgate::{ErrorCode, Exit};

/// Print `v` as one line of JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    match serde_json::to_string(v) {
        Ok(s) => println!("{s}"),
        // Serialising plain structs of strings and numbers does not fail.
        Err(e) => eprintln!("touchgate: cannot write JSON: {e}"),
    }
}

/// `{"error": {...}}`: what a `--json` command prints on stdout when it fails.
#[derive(Serialize)]
pub struct ErrorDoc {
    pub error: ErrorBody,
}

#[derive(Serialize)]
pub struct ErrorBody {
    /// The process's exit code (see `touchgate --help`).
    pub exit: u8,
    /// The exit code's name: `no-agent`, `locked`, `policy-refused`, …
    pub kind: &'static str,
    /// The agent's error code (`ErrorCode::as_str`) when the agent said no.
    pub code: Option<&'static str>,
    /// The same one-line message as on stderr.
    pub message: String,
}

impl ErrorDoc {
    pub fn new(exit: Exit, code: Option<ErrorCode>, message: String) -> ErrorDoc {
        ErrorDoc {
            error: ErrorBody {
                exit: exit.code(),
                kind: exit.name(),
                code: code.map(ErrorCode::as_str),
                message,
            },
        }
    }
}
