//! [`AgentError`]: why the agent refuses or fails a request, inside the agent.
//!
//! Every layer below the dispatcher returns it; it becomes the wire type
//! [`ErrorReply`] at exactly one point, the `From` impl here, which
//! [`crate::service::agent::Agent::handle`] and the daemon's own refusals
//! (busy, bad frame) go through. Invariants: the message is one line for
//! people — what is wrong and how to fix it — and never carries a secret
//! (callers format fingerprints, never tokens, PINs or key material); the
//! conversion keeps it byte for byte ([`AgentError::new`] joins lines and caps
//! the length by the wire type's rule, as replies always were).

use touchgate::{ErrorCode, ErrorReply};

/// A refusal or failure with its stable code for programs and its message
/// for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    code: ErrorCode,
    message: String,
}

impl AgentError {
    /// The message is made one line and capped here, by the wire type's own
    /// rule, so the log, the audit record and the reply all say the same.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let ErrorReply { code, message } = ErrorReply::new(code, message);
        AgentError { code, message }
    }

    /// The stable code the client sees.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The one-line message the client sees.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The one place an agent error becomes a wire reply.
impl From<AgentError> for ErrorReply {
    fn from(e: AgentError) -> Self {
        ErrorReply {
            code: e.code,
            message: e.message,
        }
    }
}
