//! `touchgate-shim kubectl-credential`: a kubectl exec credential plugin.
//!
//! Prints a `client.authentication.k8s.io/v1` (or `v1beta1`, when kubectl asks
//! for it in `KUBERNETES_EXEC_INFO`) ExecCredential whose token comes from the
//! agent and whose `expirationTimestamp` is the token's real expiry, so kubectl
//! caches it until then — inside one kubectl process. Every kubectl command runs
//! the plugin again; it tells the agent the cluster kubectl sends the token to
//! (`KUBERNETES_EXEC_INFO`, with `provideClusterInfo: true`), so an
//! `every-token` profile with `kubectl_window` can hand the touched token to the
//! next kubectl command for that cluster without a touch. The token stays in
//! the agent: nothing is cached on disk.

use std::process::ExitCode;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use touchgate::kube::KubeCluster;
use touchgate::text::{one_line, UNCUT};

use crate::oneshot::{self, Prompt};

const WHO: &str = "touchgate-shim kubectl-credential";
pub const V1: &str = "client.authentication.k8s.io/v1";
pub const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// `KUBERNETES_EXEC_INFO` parsed (absent or blank: None).
pub fn exec_info(text: Option<&str>) -> Result<Option<serde_json::Value>, String> {
    let Some(info) = text.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    serde_json::from_str(info)
        .map(Some)
        .map_err(|e| format!("KUBERNETES_EXEC_INFO is not JSON: {e}"))
}

/// The apiVersion to answer with, from `KUBERNETES_EXEC_INFO` (absent: v1).
pub fn api_version(exec_info: Option<&serde_json::Value>) -> Result<&'static str, String> {
    let Some(v) = exec_info else {
        return Ok(V1);
    };
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
    let info = match exec_info(std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref()) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let version = match api_version(info.as_ref()) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let cluster = info
        .as_ref()
        .and_then(|i| KubeCluster::from_exec_info(i).ok());
    let t = match oneshot::fetch_as(
        profile.as_deref(),
        Some(cluster),
        Prompt::Stderr,
        "touchgate-shim",
    ) {
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
        assert_eq!(exec_info(Some("  ")).unwrap(), None);
        let version = |v: &str| {
            let text = format!(
                r#"{{"kind":"ExecCredential","apiVersion":"{v}","spec":{{"interactive":false}}}}"#
            );
            api_version(exec_info(Some(&text)).unwrap().as_ref())
        };
        assert_eq!(version(V1).unwrap(), V1);
        assert_eq!(version(V1BETA1).unwrap(), V1BETA1);
        assert!(version("client.authentication.k8s.io/v1alpha1").is_err());
        assert!(exec_info(Some("{")).is_err());
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
