//! One token from the agent for a one-shot helper (docker, kubectl).

use std::io::Write;

use touchgate::kube::KubeCluster;
use touchgate::protocol::TokenReply;
use touchgate::text::{one_line, UNCUT};
use touchgate::Client;

/// Where the "touch your key" prompt goes while a helper waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// The helper's stderr (kubectl shows its plugins' stderr).
    Stderr,
    /// The controlling terminal when there is one, else stderr (docker
    /// captures its helpers' stderr, so a prompt there would never be seen).
    Tty,
}

/// Ask the agent for a token for `profile` (None: the agent's default),
/// naming the parent process as the caller. Errors are one line, token-free.
pub fn fetch(
    profile: Option<&str>,
    prompt: Prompt,
    who: &'static str,
) -> Result<TokenReply, String> {
    fetch_as(profile, None, prompt, who)
}

/// [`fetch`] for the kubectl plugin: `Some(cluster)` asks as the plugin, for
/// the cluster kubectl sends the token to (`None` in it: kubectl named none
/// that may have a window), so a kubectl window may answer.
pub fn fetch_as(
    profile: Option<&str>,
    kubectl: Option<Option<KubeCluster>>,
    prompt: Prompt,
    who: &'static str,
) -> Result<TokenReply, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    rt.block_on(async {
        let mut c = Client::connect_default_pipelined().await?;
        c.on_touch_needed(move |p| say(prompt, who, p));
        match kubectl {
            Some(cluster) => {
                c.get_kubectl_token(profile, cluster, crate::parent_hint())
                    .await
            }
            None => c.get_token(profile, &[], crate::parent_hint()).await,
        }
    })
    .map_err(|e| one_line(&e.to_string(), UNCUT))
}

fn say(prompt: Prompt, who: &str, msg: &str) {
    if prompt == Prompt::Tty {
        if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
            if writeln!(tty, "{who}: {msg}").is_ok() {
                return;
            }
        }
    }
    eprintln!("{who}: {msg}");
}
