//! What kubectl tells its exec credential plugin about the cluster it will send
//! the credential to (`KUBERNETES_EXEC_INFO`, `spec.cluster`, present when the
//! kubeconfig user says `provideClusterInfo: true`), reduced to what the agent
//! needs to keep a kubectl window: the server, for people, and a digest of the
//! whole cluster entry, as the window's key.
//!
//! Invariants: a token kept for one cluster entry is never handed to another —
//! the digest covers every field kubectl gives (server, CA, TLS server name,
//! proxy, extensions), so a kubeconfig that sends the token elsewhere has
//! another digest; a cluster whose server is not `https` or whose TLS is not
//! verified (`insecure-skip-tls-verify`) gets no window at all (a proxy or a
//! squatter could read the token on the way), and the plugin asks as before.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A cluster kubectl will send the plugin's token to, as the plugin tells the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeCluster {
    /// `spec.cluster.server`, e.g. `https://203.0.113.7`; for prompts and logs.
    pub server: String,
    /// Hex SHA-256 of the whole `spec.cluster` object as kubectl sent it (keys sorted).
    pub digest: String,
}

/// Why a cluster gets no kubectl window (the plugin then asks like any client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoWindow {
    /// kubectl sent no cluster: the kubeconfig user lacks `provideClusterInfo: true`.
    NoClusterInfo,
    /// The server is not `https://…`.
    NotHttps,
    /// `insecure-skip-tls-verify: true`.
    TlsNotVerified,
}

impl std::fmt::Display for NoWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoWindow::NoClusterInfo => {
                "kubectl gave no cluster info (set provideClusterInfo: true in the kubeconfig user's exec)"
            }
            NoWindow::NotHttps => "the cluster's server is not https",
            NoWindow::TlsNotVerified => "the cluster skips TLS verification",
        })
    }
}

impl KubeCluster {
    /// The cluster in a parsed `KUBERNETES_EXEC_INFO`, if it may have a window.
    pub fn from_exec_info(info: &serde_json::Value) -> Result<KubeCluster, NoWindow> {
        let cluster = info
            .get("spec")
            .and_then(|s| s.get("cluster"))
            .filter(|c| c.is_object())
            .ok_or(NoWindow::NoClusterInfo)?;
        let server = cluster
            .get("server")
            .and_then(|s| s.as_str())
            .ok_or(NoWindow::NoClusterInfo)?;
        if !server.to_ascii_lowercase().starts_with("https://") {
            return Err(NoWindow::NotHttps);
        }
        if cluster
            .get("insecure-skip-tls-verify")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
        {
            return Err(NoWindow::TlsNotVerified);
        }
        // serde_json's maps are sorted by key: the same entry always hashes the same.
        let canonical = serde_json::to_vec(cluster).map_err(|_| NoWindow::NoClusterInfo)?;
        Ok(KubeCluster {
            server: server.to_owned(),
            digest: hex::encode(Sha256::digest(&canonical)),
        })
    }
}

/// A profile's `kubectl_window` of `length` as `touchgate profiles` and
/// `policy check` show it: `5m (one kubectl binary and cluster)`.
pub fn window_text(length: std::time::Duration) -> String {
    format!(
        "{} (one kubectl binary and cluster)",
        crate::duration::format_duration(length)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(cluster: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "kind": "ExecCredential",
            "apiVersion": "client.authentication.k8s.io/v1",
            "spec": {"interactive": false, "cluster": cluster},
        })
    }

    #[test]
    fn the_digest_covers_every_field_and_not_their_order() {
        let a = KubeCluster::from_exec_info(&info(serde_json::json!({
            "server": "https://10.0.0.1", "certificate-authority-data": "QUJD"
        })))
        .unwrap();
        assert_eq!(a.server, "https://10.0.0.1");
        let same: serde_json::Value = serde_json::from_str(
            r#"{"spec":{"cluster":{"certificate-authority-data":"QUJD","server":"https://10.0.0.1"}}}"#,
        )
        .unwrap();
        assert_eq!(KubeCluster::from_exec_info(&same).unwrap(), a);
        for other in [
            serde_json::json!({"server": "https://10.0.0.2", "certificate-authority-data": "QUJD"}),
            serde_json::json!({"server": "https://10.0.0.1", "certificate-authority-data": "QUJE"}),
            serde_json::json!({"server": "https://10.0.0.1", "certificate-authority-data": "QUJD", "proxy-url": "http://127.0.0.1:3128"}),
            serde_json::json!({"server": "https://10.0.0.1", "certificate-authority-data": "QUJD", "tls-server-name": "evil"}),
        ] {
            assert_ne!(
                KubeCluster::from_exec_info(&info(other.clone()))
                    .unwrap()
                    .digest,
                a.digest,
                "{other}"
            );
        }
    }

    #[test]
    fn no_window_without_cluster_info_https_or_verified_tls() {
        let no_cluster = serde_json::json!({"spec": {"interactive": false}});
        assert_eq!(
            KubeCluster::from_exec_info(&no_cluster),
            Err(NoWindow::NoClusterInfo)
        );
        assert_eq!(
            KubeCluster::from_exec_info(&info(serde_json::json!({"server": "http://10.0.0.1"}))),
            Err(NoWindow::NotHttps)
        );
        assert_eq!(
            KubeCluster::from_exec_info(&info(serde_json::json!({
                "server": "https://10.0.0.1", "insecure-skip-tls-verify": true
            }))),
            Err(NoWindow::TlsNotVerified)
        );
    }
}
