//! `touchgate-shim kubectl-credential`: a kubectl exec credential plugin.
//!
//! Prints a `client.authentication.k8s.io/v1` (or `v1beta1`, when kubectl asks
//! for it in `KUBERNETES_EXEC_INFO`) ExecCredential whose token comes from the
//! agent and whose `expirationTimestamp` is the token's real expiry, so kubectl
//! caches it until then and runs the plugin (and so asks for a touch) again after.

use std::process::ExitCode;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use touchgate::text::{one_line, UNCUT};

use crate::oneshot::{self, Prompt};

const WHO: &str = "touchgate-shim kubectl-credential";
pub const V1: &str = "client.authentication.k8s.io/v1";
pub const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// The apiVersion to answer with, from `KUBERNETES_EXEC_INFO` (absent: v1).
pub fn api_version(exec_info: Option<&str>) -> Result<&'static str, String> {
    let Some(info) = exec_info.filter(|s| !s.trim().is_empty()) else {
        return Ok(V1);
    };
    let v: serde_json::Value =
        serde_json::from_str(info).map_err(|e| format!("KUBERNETES_EXEC_INFO is not JSON: {e}"))?;
    match v.get("apiVersion").and_then(|a| a.as_str()) {
        None => Ok(V1),
        Some(V1) => Ok(V1),
        Some(V1BETA1) => Ok(V1BETA1),
        Some(other) => Err(format!(
            "kubectl asked for ExecCredential {}; this plugin speaks {V1} and {V1BETA1}: set that apiVersion in the kubeconfig's user.exec",
            one_line(other, UNCUT)
        )),
    }
}

/// The ExecCredential JSON for `token` expiring at `expires_at` (Unix seconds).
pub fn exec_credential(
    api_version: &str,
    token: &str,
    expires_at: u64,
) -> Result<serde_json::Value, String> {
    let ts = i64::try_from(expires_at)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| format!("the agent gave an unusable expiry {expires_at}"))?;
    Ok(serde_json::json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": { "token": token, "expirationTimestamp": ts },
    }))
}

pub fn main(profile: Option<String>) -> ExitCode {
    let info = std::env::var("KUBERNETES_EXEC_INFO").ok();
    let version = match api_version(info.as_deref()) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let t = match oneshot::fetch(profile.as_deref(), Prompt::Stderr, "touchgate-shim") {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    match exec_credential(version, t.access_token.expose(), t.expires_at) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("{WHO}: {}", one_line(msg, UNCUT));
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_follows_exec_info() {
        assert_eq!(api_version(None).unwrap(), V1);
        let info = |v: &str| {
            format!(
                r#"{{"kind":"ExecCredential","apiVersion":"{v}","spec":{{"interactive":false}}}}"#
            )
        };
        assert_eq!(api_version(Some(&info(V1))).unwrap(), V1);
        assert_eq!(api_version(Some(&info(V1BETA1))).unwrap(), V1BETA1);
        assert!(api_version(Some(&info("client.authentication.k8s.io/v1alpha1"))).is_err());
        assert!(api_version(Some("{")).is_err());
    }

    #[test]
    fn credential_has_rfc3339_utc_expiry() {
        let v = exec_credential(V1, "tok", 1_700_000_000).unwrap();
        assert_eq!(v["kind"], "ExecCredential");
        assert_eq!(v["apiVersion"], V1);
        assert_eq!(v["status"]["token"], "tok");
        assert_eq!(v["status"]["expirationTimestamp"], "2023-11-14T22:13:20Z");
    }
}
