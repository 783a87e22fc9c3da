//! The body of the `error_body` fuzz target, shared with its
//! regression test (`tests/agent_seeds.rs` of this package).
//!
//! The input is an HTTP error reply: its first byte picks the status (400 +
//! byte), the rest is the body, through
//! `touchgate_agent::upstream::google::error_reply_detail` as the agent words a
//! refusal, once as from a Google host and once as from another host. The
//! detail is one line of at most 300 characters (and a "…" when cut) and never holds the secret the
//! request sent (even when the body echoes it).

use touchgate_agent::upstream::google::error_reply_detail;

/// The secret the request sent, as Google echoes one back.
pub const SENT: &str = "1//0gSENT-refresh-token";

/// (from Google, from another host).
pub fn run(data: &[u8]) -> (String, String) {
    let (status, body) = match data.split_first() {
        Some((s, body)) => (400 + u16::from(*s), body),
        None => (500, data),
    };
    let google = error_reply_detail(status, body, &[SENT], None);
    let other = error_reply_detail(status, body, &[SENT], Some("127.0.0.1:9"));
    for d in [&google, &other] {
        assert!(
            !d.contains('\n') && !d.contains('\r'),
            "not one line: {d:?}"
        );
        // 300 characters and the "…" that marks a cut.
        assert!(d.chars().count() <= 301, "too long: {d:?}");
        assert!(!d.contains(SENT), "the secret is shown: {d:?}");
    }
    (google, other)
}
