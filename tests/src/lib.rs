//! touchgate end-to-end test support.
