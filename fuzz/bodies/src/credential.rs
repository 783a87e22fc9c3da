//! The body of the `credential` fuzz target, shared with its
//! regression test (`tests/agent_seeds.rs` of this package).
//!
//! The input is a Google credential file (service-account key,
//! `authorized_user` or `impersonated_service_account` ADC file) through
//! `touchgate_agent::upstream::UpstreamCredential::parse`, as `touchgate
//! import` reads it. An error is one line and quotes no secret of the file (a
//! `private_key`, `client_secret` or `refresh_token` value, at any depth); a
//! credential that parses has a known kind, and its Debug output holds no
//! secret either.

use touchgate_agent::upstream::{CredentialError, UpstreamCredential};

const SECRET_FIELDS: [&str; 3] = ["private_key", "client_secret", "refresh_token"];

/// The secret values in `v` (at any depth) into `secret`, every other string
/// (keys too) into `plain`.
fn strings(v: &serde_json::Value, secret: &mut Vec<String>, plain: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                plain.push(k.clone());
                match v {
                    serde_json::Value::String(s) if SECRET_FIELDS.contains(&k.as_str()) => {
                        secret.push(s.clone())
                    }
                    _ => strings(v, secret, plain),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, secret, plain)),
        serde_json::Value::String(s) => plain.push(s.clone()),
        _ => {}
    }
}

/// The secrets an error or Debug output must not show: those of 17
/// characters or more with a digit and without whitespace (no such run is in
/// the fixed wording of a message), and not also part of a plain value the
/// message may name (a fuzzed `client_email` can hold a copy of a secret).
fn secrets(text: &str) -> Vec<String> {
    let (mut secret, mut plain) = (Vec::new(), Vec::new());
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        strings(&v, &mut secret, &mut plain);
    }
    secret.retain(|s| {
        s.chars().count() >= 17
            && !s.chars().any(char::is_whitespace)
            && s.chars().any(|c| c.is_ascii_digit())
            && !plain.iter().any(|p| p.contains(s.as_str()))
    });
    secret
}

pub fn run(text: &str) -> Result<UpstreamCredential, CredentialError> {
    let res = UpstreamCredential::parse(text);
    let secret = secrets(text);
    let shown = match &res {
        Err(CredentialError(msg)) => {
            assert!(!msg.contains('\n'), "error is not one line: {msg:?}");
            assert!(!msg.is_empty());
            msg.clone()
        }
        Ok(c) => {
            assert!(matches!(
                c.kind(),
                "service_account" | "authorized_user" | "impersonated_service_account"
            ));
            let _ = (c.principal(), c.project(), c.token_uri());
            format!("{c:?}")
        }
    };
    for s in &secret {
        assert!(!shown.contains(s.as_str()), "a secret is shown: {shown:?}");
    }
    res
}
