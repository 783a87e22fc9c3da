//! Upstream credentials (being written).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);
pub enum UpstreamCredential {}
