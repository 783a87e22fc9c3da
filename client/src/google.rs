//! Google's endpoints and scopes as the touchgate binaries default to them: the agent's
//! `[google]` defaults and `touchgate login`'s OAuth endpoints name the same hosts, so they
//! are written once, here.
//!
//! Invariant: these are defaults only; every one can be replaced in the config (`[google]`,
//! `[login]`), which is how the emulator in `tests/` and other universes stand in for Google.

/// The scope a token carries when nothing narrower is asked for.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The universe Google's default endpoints live in.
pub const DEFAULT_UNIVERSE_DOMAIN: &str = "googleapis.com";
/// Google's OAuth token endpoint (the default universe's `https://oauth2.UNIVERSE/token`).
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Google's OAuth authorization endpoint (installed-app flow).
pub const DEFAULT_AUTH_URI: &str = "https://accounts.google.com/o/oauth2/auth";
/// Google's OAuth device-authorization endpoint (device flow).
pub const DEFAULT_DEVICE_AUTH_URI: &str = "https://oauth2.googleapis.com/device/code";
/// gcloud's own OAuth client id. gcloud asks the metadata server for an ID token
/// with this audience at every access-token refresh (for its own bookkeeping, and
/// it does without one); the shim answers that ask "not found", as it did before
/// it served ID tokens, so it costs no touch and no mint.
pub const GCLOUD_CLIENT_ID: &str = "32555940559.apps.googleusercontent.com";
/// The scopes `touchgate login` asks for unless `[login] scopes` says otherwise.
pub const DEFAULT_LOGIN_SCOPES: &[&str] = &[
    CLOUD_PLATFORM,
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
];
