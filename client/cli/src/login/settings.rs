//! Where `touchgate login` gets its OAuth client and endpoints: the
//! `--client-secret-file`, else `[login]` in the config file, else the user's
//! gcloud ADC file; endpoints from `[login]`, else the client file, else Google's.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use touchgate::config::LoginSettings as LoginConfig;
use touchgate::google::{
    DEFAULT_AUTH_URI, DEFAULT_DEVICE_AUTH_URI, DEFAULT_LOGIN_SCOPES, DEFAULT_TOKEN_URI,
};
use touchgate::Secret;
use zeroize::Zeroizing;

/// The OAuth client the login runs as.
#[derive(Debug)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: Secret,
    /// Where it came from, for error messages.
    pub source: String,
}

/// Everything a login needs.
#[derive(Debug)]
pub struct LoginSettings {
    pub client: OAuthClient,
    pub auth_uri: String,
    pub token_uri: String,
    pub device_auth_uri: String,
    pub scopes: Vec<String>,
    pub quota_project: Option<String>,
}

/// A Google `client_secret_….json` download.
#[derive(Deserialize)]
struct ClientSecretFile {
    installed: Option<InstalledClient>,
    web: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct InstalledClient {
    client_id: String,
    client_secret: Secret,
    auth_uri: Option<String>,
    token_uri: Option<String>,
}

/// The client of an `authorized_user` ADC file (gcloud's own client).
#[derive(Deserialize)]
struct AdcFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    token_uri: Option<String>,
}

impl LoginSettings {
    /// Resolves the client and endpoints (see the module docs).
    pub fn resolve(client_secret_file: Option<&Path>) -> anyhow::Result<LoginSettings> {
        let config_path = touchgate::paths::config_path();
        let cfg = read_login_config(&config_path)?;
        let in_config = format!("[login] in {}", config_path.display());

        let (client, file_auth_uri, file_token_uri) = if let Some(f) = client_secret_file {
            let c = read_client_secret_file(f)?;
            let client = OAuthClient {
                client_id: c.client_id,
                client_secret: c.client_secret,
                source: f.display().to_string(),
            };
            (client, c.auth_uri, c.token_uri)
        } else if let Some(client_id) = cfg.client_id.clone() {
            let Some(client_secret) = cfg.client_secret.clone() else {
                anyhow::bail!(
                    "{in_config} has client_id but no client_secret: add the client_secret of \
                     that OAuth client (from its client_secret_….json)"
                );
            };
            let client = OAuthClient {
                client_id,
                client_secret,
                source: in_config.clone(),
            };
            (client, None, None)
        } else if let Some((client, token_uri)) = adc_client()? {
            (client, None, token_uri)
        } else {
            anyhow::bail!(
                "no OAuth client to log in with: pass --client-secret-file client_secret_….json \
                 (a \"Desktop app\" OAuth client: Google Cloud console → APIs & Services → \
                 Credentials), set client_id and client_secret under {in_config}, or run \
                 `gcloud auth application-default login` once so touchgate can use gcloud's client"
            );
        };
        if client.client_id.trim().is_empty() {
            anyhow::bail!(
                "the OAuth client from {} has an empty client_id",
                client.source
            );
        }

        let auth_uri = pick(&cfg.auth_uri, file_auth_uri, DEFAULT_AUTH_URI);
        let token_uri = pick(&cfg.token_uri, file_token_uri, DEFAULT_TOKEN_URI);
        let device_auth_uri = pick(&cfg.device_auth_uri, None, DEFAULT_DEVICE_AUTH_URI);
        for (key, uri) in [
            ("auth_uri", &auth_uri),
            ("token_uri", &token_uri),
            ("device_auth_uri", &device_auth_uri),
        ] {
            check_endpoint(key, uri, &in_config)?;
        }
        let scopes = match &cfg.scopes {
            Some(s) if !s.is_empty() => s.clone(),
            _ => DEFAULT_LOGIN_SCOPES.iter().map(|s| s.to_string()).collect(),
        };
        Ok(LoginSettings {
            client,
            auth_uri,
            token_uri,
            device_auth_uri,
            scopes,
            quota_project: cfg.quota_project.clone(),
        })
    }
}

fn pick(configured: &Option<String>, from_file: Option<String>, default: &str) -> String {
    configured
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or(from_file.filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

/// Endpoints get the client secret, codes and tokens: https, or plain http to
/// a loopback address only (an emulator, a local proxy).
fn check_endpoint(key: &str, uri: &str, in_config: &str) -> anyhow::Result<()> {
    let Ok(u) = reqwest::Url::parse(uri) else {
        anyhow::bail!("login {key} {uri:?} is not a URL: fix it in {in_config}");
    };
    let loopback = match u.host_str() {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => anyhow::bail!(
            "login {key} {uri} would carry the client secret and tokens in clear: use https \
             (plain http only to 127.0.0.1), fix it in {in_config}"
        ),
    }
}

/// The `[login]` table of `path`; a missing file or table is the default.
pub fn read_login_config(path: &Path) -> anyhow::Result<LoginConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LoginConfig::default()),
        Err(e) => anyhow::bail!("cannot read config {}: {e}", path.display()),
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
        anyhow::anyhow!(
            "config {}:{line}:{col}: {}; fix the file",
            path.display(),
            e.message().trim().replace('\n', " ")
        )
    })?;
    let Some(login) = table.remove("login") else {
        return Ok(LoginConfig::default());
    };
    login.try_into().map_err(|e: toml::de::Error| {
        anyhow::anyhow!(
            "config {}: [login]: {}; the keys are client_id, client_secret, auth_uri, \
             token_uri, device_auth_uri, scopes, quota_project",
            path.display(),
            e.message().trim().replace('\n', " ")
        )
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

fn read_secret_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

/// Where in the JSON it went wrong, never what (serde_json may quote values).
fn json_position(e: &serde_json::Error) -> String {
    format!("line {}, column {}", e.line(), e.column())
}

fn read_client_secret_file(path: &Path) -> anyhow::Result<InstalledClient> {
    let text = read_secret_file(path)?;
    let file: ClientSecretFile = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a Google OAuth client file (client_secret_….json) ({}): download the \
             JSON of a \"Desktop app\" OAuth client again",
            path.display(),
            json_position(&e)
        )
    })?;
    match (file.installed, file.web) {
        (Some(c), _) => Ok(c),
        (None, Some(_)) => anyhow::bail!(
            "{} is a \"Web application\" OAuth client; touchgate needs a \"Desktop app\" client \
             (Google Cloud console → APIs & Services → Credentials → Create OAuth client ID → \
             Desktop app)",
            path.display()
        ),
        (None, None) => anyhow::bail!(
            "{} has no \"installed\" client: download the JSON of a \"Desktop app\" OAuth client",
            path.display()
        ),
    }
}

/// gcloud's OAuth client from the user's `authorized_user` ADC file, if there is one.
fn adc_client() -> anyhow::Result<Option<(OAuthClient, Option<String>)>> {
    let Some(path) = crate::adc::well_known_file() else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    read_adc_client(&path)
}

fn read_adc_client(path: &Path) -> anyhow::Result<Option<(OAuthClient, Option<String>)>> {
    let text = read_secret_file(path)?;
    let file: AdcFile = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "gcloud ADC file {} is not valid JSON ({}): run `gcloud auth application-default \
             login` again, or pass --client-secret-file",
            path.display(),
            json_position(&e)
        )
    })?;
    match (file.kind.as_deref(), file.client_id, file.client_secret) {
        (Some("authorized_user"), Some(client_id), Some(client_secret)) => Ok(Some((
            OAuthClient {
                client_id,
                client_secret,
                source: format!("gcloud ADC file {}", path.display()),
            },
            file.token_uri,
        ))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_or_loopback() {
        assert!(check_endpoint("token_uri", DEFAULT_TOKEN_URI, "c").is_ok());
        assert!(check_endpoint("token_uri", "http://127.0.0.1:9/token", "c").is_ok());
        assert!(check_endpoint("token_uri", "http://[::1]:9/token", "c").is_ok());
        let e = check_endpoint("token_uri", "http://example.com/token", "c").unwrap_err();
        assert!(e.to_string().contains("in clear"), "{e}");
        assert!(check_endpoint("token_uri", "nope", "c").is_err());
    }

    #[test]
    fn login_table_is_read_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            "default_profile = \"x\"\n[profiles.x]\ncredential = \"d\"\n\n[login]\n\
             client_id = \"id\"\nclient_secret = \"s3cret\"\nscopes = [\"openid\"]\n",
        )
        .unwrap();
        let c = read_login_config(&p).unwrap();
        assert_eq!(c.client_id.as_deref(), Some("id"));
        assert_eq!(c.client_secret.unwrap().expose(), "s3cret");
        assert_eq!(c.scopes.unwrap(), vec!["openid".to_owned()]);
        std::fs::write(&p, "[login]\nclient_idd = \"x\"\n").unwrap();
        let e = read_login_config(&p).unwrap_err().to_string();
        assert!(e.contains("client_idd") && !e.contains('\n'), "{e}");
        assert!(read_login_config(&dir.path().join("missing.toml")).is_ok());
    }

    #[test]
    fn client_secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(
            &p,
            r#"{"installed":{"client_id":"i","client_secret":"GOCSPX-x","token_uri":"https://t"}}"#,
        )
        .unwrap();
        let c = read_client_secret_file(&p).unwrap();
        assert_eq!(c.client_id, "i");
        assert_eq!(c.token_uri.as_deref(), Some("https://t"));
        std::fs::write(
            &p,
            r#"{"web":{"client_id":"i","client_secret":"GOCSPX-x"}}"#,
        )
        .unwrap();
        let e = read_client_secret_file(&p).unwrap_err().to_string();
        assert!(e.contains("Desktop app"), "{e}");
        std::fs::write(&p, r#"{"installed": "GOCSPX-secret"}"#).unwrap();
        let e = read_client_secret_file(&p).unwrap_err().to_string();
        assert!(!e.contains("GOCSPX"), "{e}");
    }
}
