//! `touchgate login`: an OAuth login to Google in this process (the user's
//! session: browser, terminal), ending with a refresh token that goes straight
//! to the agent as an `authorized_user` credential (one touch to seal it). The
//! token exists only in memory here; nothing is written to disk.
//!
//! - installed-app flow (default): PKCE S256, `state`, a loopback redirect to
//!   `http://127.0.0.1:<random port>/` served here, `access_type=offline`,
//!   `prompt=consent`;
//! - device flow (`--no-browser`): a URL and a code to enter on any device.

mod flows;
mod loopback;
mod settings;

use std::path::PathBuf;

use serde::Serialize;
use touchgate::{CallerHint, Secret};
use zeroize::Zeroizing;

use settings::LoginSettings;

pub struct LoginArgs {
    pub no_browser: bool,
    pub name: String,
    pub client_secret_file: Option<PathBuf>,
}

pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let settings = LoginSettings::resolve(args.client_secret_file.as_deref())?;
    // Before the user goes through a consent screen: can the agent take it?
    let status = crate::connect().await?.status().await?;
    if status.enrolled.is_none() {
        anyhow::bail!(
            "no security key is enrolled: run touchgate enroll first, then touchgate login"
        );
    }
    let http = flows::http_client()?;
    let tokens = if args.no_browser {
        flows::device(&http, &settings).await?
    } else {
        flows::installed(&http, &settings).await?
    };
    let credential = authorized_user(&settings, &tokens.refresh_token)?;
    crate::connect()
        .await?
        .import(&args.name, credential, CallerHint::from_env())
        .await?;
    match &tokens.email {
        Some(email) => println!(
            "logged in as {email}; refresh token sealed as \"{}\" under the enrolled key",
            args.name
        ),
        None => println!(
            "logged in; refresh token sealed as \"{}\" under the enrolled key",
            args.name
        ),
    }
    Ok(())
}

/// The `authorized_user` credential JSON the agent parses and seals.
#[derive(Serialize)]
struct AuthorizedUser<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    client_id: &'a str,
    client_secret: &'a str,
    refresh_token: &'a str,
    token_uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_project_id: Option<&'a str>,
}

fn authorized_user(s: &LoginSettings, refresh_token: &Secret) -> anyhow::Result<Secret> {
    let json = AuthorizedUser {
        kind: "authorized_user",
        client_id: &s.client.client_id,
        client_secret: s.client.client_secret.expose(),
        refresh_token: refresh_token.expose(),
        token_uri: &s.token_uri,
        quota_project_id: s.quota_project.as_deref(),
    };
    // Room enough that the buffer never grows (and leaves copies behind).
    let mut buf = Zeroizing::new(Vec::with_capacity(16 * 1024));
    serde_json::to_writer(&mut *buf, &json)
        .map_err(|_| anyhow::anyhow!("cannot encode the credential"))?;
    let text = std::str::from_utf8(&buf).map_err(|_| anyhow::anyhow!("credential is not UTF-8"))?;
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::settings::{LoginSettings, OAuthClient};
    use super::*;

    #[test]
    fn authorized_user_json_is_what_the_agent_parses() {
        let s = LoginSettings {
            client: OAuthClient {
                client_id: "id.apps.googleusercontent.com".into(),
                client_secret: Secret::new("GOCSPX-s"),
                source: "test".into(),
            },
            auth_uri: touchgate::google::DEFAULT_AUTH_URI.into(),
            token_uri: "http://127.0.0.1:9/token".into(),
            device_auth_uri: touchgate::google::DEFAULT_DEVICE_AUTH_URI.into(),
            scopes: vec![],
            quota_project: Some("billing-proj".into()),
        };
        let c = authorized_user(&s, &Secret::new("1//rt")).unwrap();
        let v: serde_json::Value = serde_json::from_str(c.expose()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "authorized_user",
                "client_id": "id.apps.googleusercontent.com",
                "client_secret": "GOCSPX-s",
                "refresh_token": "1//rt",
                "token_uri": "http://127.0.0.1:9/token",
                "quota_project_id": "billing-proj",
            })
        );
        assert!(!format!("{s:?}").contains("GOCSPX"), "Debug is redacted");
    }
}
