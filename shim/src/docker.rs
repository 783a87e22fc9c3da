//! `docker-credential-touchgate`: the docker credential-helper protocol
//! (github.com/docker/docker-credential-helpers) for Artifact Registry
//! (`LOCATION-docker.pkg.dev`) and Container Registry (`gcr.io`, `*.gcr.io`).
//!
//! - `get`: the server URL on stdin; `{"ServerURL","Username":"oauth2accesstoken","Secret"}`
//!   on stdout, the secret a fresh touch-gated token from the agent. Other hosts:
//!   `credentials not found in native keychain`, exit 1 (docker then goes anonymous).
//! - `store` / `erase`: succeed and keep nothing (tokens come from the agent).
//! - `list`: `{}`, since nothing is stored, so `docker build` with `credsStore`
//!   does not ask for a token per host.
//! - `version`.
//!
//! As the protocol's own helpers do, errors go to stdout (docker shows that
//! text) and also to stderr; the touch prompt goes to the terminal, since docker
//! captures its helpers' stderr.

use std::io::Read;
use std::process::ExitCode;

use touchgate::text::{one_line, UNCUT};

use crate::oneshot::{self, Prompt};

const WHO: &str = "docker-credential-touchgate";
/// The username Google registries accept with an OAuth access token as password.
pub const USERNAME: &str = "oauth2accesstoken";
/// The text docker recognises as "no credentials for this host".
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// Artifact Registry multi-regions and regions (`LOCATION-docker.pkg.dev`).
const AR_LOCATIONS: &[&str] = &[
    "africa-south1",
    "asia",
    "asia-east1",
    "asia-east2",
    "asia-northeast1",
    "asia-northeast2",
    "asia-northeast3",
    "asia-south1",
    "asia-south2",
    "asia-southeast1",
    "asia-southeast2",
    "australia-southeast1",
    "australia-southeast2",
    "europe",
    "europe-central2",
    "europe-north1",
    "europe-north2",
    "europe-southwest1",
    "europe-west1",
    "europe-west10",
    "europe-west12",
    "europe-west2",
    "europe-west3",
    "europe-west4",
    "europe-west6",
    "europe-west8",
    "europe-west9",
    "me-central1",
    "me-central2",
    "me-west1",
    "northamerica-northeast1",
    "northamerica-northeast2",
    "northamerica-south1",
    "southamerica-east1",
    "southamerica-west1",
    "us",
    "us-central1",
    "us-east1",
    "us-east4",
    "us-east5",
    "us-south1",
    "us-west1",
    "us-west2",
    "us-west3",
    "us-west4",
];

const GCR_HOSTS: &[&str] = &[
    "gcr.io",
    "us.gcr.io",
    "eu.gcr.io",
    "asia.gcr.io",
    "marketplace.gcr.io",
];

/// The hosts `docker-config` wires to this helper.
pub fn standard_hosts() -> Vec<String> {
    GCR_HOSTS
        .iter()
        .map(|h| h.to_string())
        .chain(AR_LOCATIONS.iter().map(|l| format!("{l}-docker.pkg.dev")))
        .collect()
}

/// The registry host of a server URL as docker passes it: `host`,
/// `host:port`, `https://host/path`…; lowercased, without port.
pub fn registry_host(server_url: &str) -> String {
    let s = server_url.trim();
    let s = s.split_once("://").map(|(_, rest)| rest).unwrap_or(s);
    let authority = s.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether tokens from the agent are the credentials for `host`.
pub fn is_google_registry(host: &str) -> bool {
    let label = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if host == "gcr.io" {
        return true;
    }
    if let Some(sub) = host.strip_suffix(".gcr.io") {
        return label(sub);
    }
    if let Some(loc) = host.strip_suffix("-docker.pkg.dev") {
        return label(loc);
    }
    false
}

/// The `{"credHelpers": …}` snippet for docker's config.json.
pub fn config_snippet(helper: &str) -> serde_json::Value {
    let helpers: serde_json::Map<String, serde_json::Value> = standard_hosts()
        .into_iter()
        .map(|h| (h, serde_json::Value::String(helper.to_owned())))
        .collect();
    serde_json::json!({ "credHelpers": helpers })
}

/// Run one helper action; `args` are the arguments after the program name.
pub fn main(args: &[String]) -> ExitCode {
    let action = match args {
        [a] => a.as_str(),
        _ => {
            eprintln!("usage: {WHO} <get|store|erase|list|version>");
            return ExitCode::FAILURE;
        }
    };
    match action {
        "get" => get(),
        "store" => {
            // Read (and drop) the credentials docker hands over, so it never sees a broken pipe.
            let _ = read_stdin();
            ExitCode::SUCCESS
        }
        "erase" => {
            let _ = read_stdin();
            ExitCode::SUCCESS
        }
        "list" => {
            println!("{{}}");
            ExitCode::SUCCESS
        }
        "version" => {
            println!("{WHO} (touchgate-shim) {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        other => fail(&format!(
            "unknown action {:?}: expected get, store, erase, list or version",
            one_line(other, UNCUT)
        )),
    }
}

fn read_stdin() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(s)
}

fn get() -> ExitCode {
    let input = match read_stdin() {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let server_url = input.trim();
    if server_url.is_empty() {
        return fail("no credentials server URL");
    }
    if !is_google_registry(&registry_host(server_url)) {
        println!("{NOT_FOUND}");
        return ExitCode::FAILURE;
    }
    let profile = std::env::var("TOUCHGATE_DOCKER_PROFILE")
        .ok()
        .filter(|p| !p.is_empty());
    match oneshot::fetch(profile.as_deref(), Prompt::Tty, WHO) {
        Ok(t) => {
            let reply = serde_json::json!({
                "ServerURL": server_url,
                "Username": USERNAME,
                "Secret": t.access_token.expose(),
            });
            println!("{reply}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    let msg = one_line(msg, UNCUT);
    println!("{WHO}: {msg}");
    eprintln!("{WHO}: {msg}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_and_without_scheme_and_path() {
        for (url, host) in [
            ("us-central1-docker.pkg.dev", "us-central1-docker.pkg.dev"),
            ("https://gcr.io", "gcr.io"),
            ("https://EU.gcr.io/v2/", "eu.gcr.io"),
            ("gcr.io:443/proj/img", "gcr.io"),
            (
                "http://user@europe-docker.pkg.dev:443/x",
                "europe-docker.pkg.dev",
            ),
            ("  registry.example.com\n", "registry.example.com"),
        ] {
            assert_eq!(registry_host(url), host, "{url}");
        }
    }

    #[test]
    fn only_google_registries() {
        for ok in [
            "gcr.io",
            "us.gcr.io",
            "marketplace.gcr.io",
            "us-central1-docker.pkg.dev",
            "europe-docker.pkg.dev",
        ] {
            assert!(is_google_registry(ok), "{ok}");
        }
        for no in [
            "registry.example.com",
            "docker.pkg.dev",
            "-docker.pkg.dev",
            "evil.com-docker.pkg.dev",
            "x.y.gcr.io",
            "gcr.io.evil.com",
            "notgcr.io",
            "index.docker.io",
            "",
        ] {
            assert!(!is_google_registry(no), "{no}");
        }
    }

    #[test]
    fn snippet_names_the_helper_for_every_standard_host() {
        let v = config_snippet("touchgate");
        let m = v["credHelpers"].as_object().unwrap();
        assert_eq!(m["gcr.io"], "touchgate");
        assert_eq!(m["us-central1-docker.pkg.dev"], "touchgate");
        assert!(m.keys().all(|h| is_google_registry(h)));
    }
}
