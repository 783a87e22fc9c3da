//! A small async client for the emulator's admin routes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::admin::{
    Advance, DeviceDecision, DeviceInterval, ExtendedLifetime, Grant, LoginUser, NewPrincipal,
    Revoke, VertexGrant,
};
use super::{CallRecord, FaultRule, VertexRole};

/// Talks to an emulator (maybe in another process) at `base_url`.
#[derive(Debug, Clone)]
pub struct EmulatorClient {
    base_url: String,
    http: reqwest::Client,
}

impl EmulatorClient {
    pub fn new(base_url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a plain-HTTP reqwest client builds");
        EmulatorClient {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every call the emulator recorded, oldest first.
    pub async fn calls(&self) -> anyhow::Result<Vec<CallRecord>> {
        self.get("/__emulator/calls").await
    }

    /// The emulator's clock.
    pub async fn now(&self) -> anyhow::Result<SystemTime> {
        let v: serde_json::Value = self.get("/__emulator/now").await?;
        let unix = v["unix"].as_u64().context("emulator /now without unix")?;
        Ok(UNIX_EPOCH + Duration::from_secs(unix))
    }

    /// A new key (and the account if new); returns the service-account key JSON.
    pub async fn add_service_account(&self, email: &str) -> anyhow::Result<String> {
        self.post_text(
            "/__emulator/service-accounts",
            &NewPrincipal {
                email: email.into(),
            },
        )
        .await
    }

    /// A user with a fresh OAuth client and refresh token; returns the ADC JSON.
    pub async fn add_authorized_user(&self, email: &str) -> anyhow::Result<String> {
        self.post_text(
            "/__emulator/authorized-users",
            &NewPrincipal {
                email: email.into(),
            },
        )
        .await
    }

    /// `principal` gets roles/iam.serviceAccountTokenCreator on `service_account`.
    pub async fn grant_token_creator(
        &self,
        principal: &str,
        service_account: &str,
    ) -> anyhow::Result<()> {
        self.post_text(
            "/__emulator/grants",
            &Grant {
                principal: principal.into(),
                service_account: service_account.into(),
            },
        )
        .await
        .map(drop)
    }

    /// `principal` gets a Vertex AI role (`POST /__emulator/vertex-grants`).
    pub async fn grant_vertex(&self, principal: &str, role: VertexRole) -> anyhow::Result<()> {
        self.post_text(
            "/__emulator/vertex-grants",
            &VertexGrant {
                principal: principal.into(),
                role: role.name().into(),
            },
        )
        .await
        .map(drop)
    }

    /// Tokens of `service_account` may live up to 12 h.
    pub async fn allow_extended_lifetime(&self, service_account: &str) -> anyhow::Result<()> {
        self.post_text(
            "/__emulator/extended-lifetime",
            &ExtendedLifetime {
                service_account: service_account.into(),
            },
        )
        .await
        .map(drop)
    }

    /// Injects a fault (`POST /__emulator/faults`).
    pub async fn inject(&self, rule: &FaultRule) -> anyhow::Result<()> {
        self.post_text("/__emulator/faults", rule).await.map(drop)
    }

    /// Moves the emulator's clock forward (whole seconds).
    pub async fn advance(&self, by: Duration) -> anyhow::Result<()> {
        self.post_text(
            "/__emulator/advance",
            &Advance {
                seconds: by.as_secs(),
            },
        )
        .await
        .map(drop)
    }

    /// Revokes a refresh token; returns whether it was known and live.
    pub async fn revoke_refresh_token(&self, refresh_token: &str) -> anyhow::Result<bool> {
        let text = self
            .post_text(
                "/__emulator/revoke",
                &Revoke {
                    refresh_token: refresh_token.into(),
                },
            )
            .await?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        Ok(v["revoked"].as_bool().unwrap_or(false))
    }

    /// A new OAuth client; returns its `client_secret_….json` (Desktop app).
    pub async fn add_oauth_client(&self) -> anyhow::Result<String> {
        self.post_text("/__emulator/oauth-clients", &serde_json::json!({}))
            .await
    }

    /// The emulated browser signs in as `email` and approves every consent screen.
    pub async fn set_login_user(&self, email: &str) -> anyhow::Result<()> {
        let body = LoginUser {
            email: Some(email.into()),
            deny: false,
        };
        self.post_text("/__emulator/login", &body).await.map(drop)
    }

    /// The emulated user declines every consent screen.
    pub async fn deny_login(&self) -> anyhow::Result<()> {
        let body = LoginUser {
            email: None,
            deny: true,
        };
        self.post_text("/__emulator/login", &body).await.map(drop)
    }

    /// `email` approves the device flow's `user_code`; returns whether it was pending.
    pub async fn approve_device(&self, user_code: &str, email: &str) -> anyhow::Result<bool> {
        let body = DeviceDecision {
            user_code: user_code.into(),
            email: Some(email.into()),
        };
        let text = self.post_text("/__emulator/devices/approve", &body).await?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        Ok(v["approved"].as_bool().unwrap_or(false))
    }

    /// The device flow's `user_code` is declined; returns whether it was pending.
    pub async fn deny_device(&self, user_code: &str) -> anyhow::Result<bool> {
        let body = DeviceDecision {
            user_code: user_code.into(),
            email: None,
        };
        let text = self.post_text("/__emulator/devices/deny", &body).await?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        Ok(v["denied"].as_bool().unwrap_or(false))
    }

    /// The polling interval later device codes come with.
    pub async fn set_device_interval(&self, seconds: u64) -> anyhow::Result<()> {
        self.post_text("/__emulator/device-interval", &DeviceInterval { seconds })
            .await
            .map(drop)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "GET {url}: HTTP {status}: {text}");
        serde_json::from_str(&text).with_context(|| format!("GET {url}: unexpected reply"))
    }

    async fn post_text<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        // Error replies of admin routes carry no secrets.
        anyhow::ensure!(status.is_success(), "POST {url}: HTTP {status}: {text}");
        Ok(text)
    }
}
