// The body of the `credential` fuzz target, shared (by `include!`) with the
// regression test agent/tests/fuzz_seeds.rs.
//
// The input is a Google credential file (service-account key,
// `authorized_user` or `impersonated_service_account` ADC file) through
// `touchgate_agent::upstream::UpstreamCredential::parse`, as `touchgate
// import` reads it. An error is one line and quotes no secret of the file (a
// `private_key`, `client_secret` or `refresh_token` value, at any depth); a
// credential that parses has a known kind, and its Debug output holds no
// secret either.

use touchgate_agent::upstream::{CredentialError, UpstreamCredential};

const SECRET_FIELDS: [&str; 3] = ["private_key", "client_secret", "refresh_token"];

/// The secret values in `v` (at any depth), at least 6 characters long.
fn secrets(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s)
                        if SECRET_FIELDS.contains(&k.as_str()) && s.trim().len() >= 6 =>
                    {
                        out.push(s.clone())
                    }
                    _ => secrets(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| secrets(v, out)),
        _ => {}
    }
}

pub fn run(text: &str) -> Result<UpstreamCredential, CredentialError> {
    let res = UpstreamCredential::parse(text);
    let mut secret = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        secrets(&v, &mut secret);
    }
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
