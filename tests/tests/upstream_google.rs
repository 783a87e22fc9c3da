//! The agent's real Google upstream against the emulator on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use touchgate_agent::clock::{unix, Clock, TestClock};
use touchgate_agent::upstream::google::GoogleUpstream;
use touchgate_agent::upstream::{
    Endpoints, MintRequest, Upstream, UpstreamCredential, UpstreamError, CLOUD_PLATFORM,
};
use touchgate_tests::{CallKind, Emulator, EmulatorHandle, EmulatorState};

const SA: &str = "runner@proj-1.iam.gserviceaccount.com";
const TARGET: &str = "trainer@proj-1.iam.gserviceaccount.com";
const USER: &str = "ada@example.com";

struct Env {
    emu: EmulatorHandle,
    state: Arc<EmulatorState>,
    upstream: GoogleUpstream,
}

async fn env() -> Env {
    let emu = Emulator::start("127.0.0.1:0").await.unwrap();
    let state = emu.state();
    let upstream = GoogleUpstream::new(endpoints(&emu), state.clock());
    Env {
        emu,
        state,
        upstream,
    }
}

/// IAM Credentials at the emulator; the token endpoint comes from the key files.
fn endpoints(emu: &EmulatorHandle) -> Endpoints {
    Endpoints {
        token_uri: None,
        iam_credentials: emu.base_url(),
    }
}

fn plain(scopes: &[&str]) -> MintRequest {
    MintRequest {
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        impersonate: None,
        lifetime: Duration::from_secs(3600),
        delegates: vec![],
    }
}

fn impersonating(target: &str, lifetime: u64) -> MintRequest {
    MintRequest {
        impersonate: Some(target.into()),
        lifetime: Duration::from_secs(lifetime),
        ..plain(&[CLOUD_PLATFORM])
    }
}

fn secs_between(a: SystemTime, b: SystemTime) -> i64 {
    unix(a) as i64 - unix(b) as i64
}

/// Does the emulator's Vertex API take this token?
async fn vertex_accepts(emu: &EmulatorHandle, token: &str) -> bool {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!(
            "{}/v1/projects/proj-1/locations/us-central1/models",
            emu.base_url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    r.status().is_success()
}

/// No error text may carry a token, an assertion, a secret or a key.
fn assert_clean(err: &UpstreamError, secrets: &[&str]) {
    let text = err.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    for marker in ["ya29.", "1//", "GOCSPX-", "PRIVATE KEY", "eyJ"] {
        assert!(!text.contains(marker), "{marker} in {text}");
    }
    for s in secrets {
        assert!(!text.contains(s), "secret in {text}");
    }
}

fn adc_secrets(adc: &str) -> [String; 2] {
    let v: serde_json::Value = serde_json::from_str(adc).unwrap();
    [
        v["client_secret"].as_str().unwrap().to_owned(),
        v["refresh_token"].as_str().unwrap().to_owned(),
    ]
}

#[tokio::test]
async fn service_account_key_mints_a_token() {
    let e = env().await;
    let cred = UpstreamCredential::parse(&e.state.add_service_account(SA)).unwrap();
    let now = e.state.now();
    let t = e
        .upstream
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap();
    assert_eq!(t.principal, SA);
    let left = secs_between(t.expires_at, now);
    assert!((3598..=3600).contains(&left), "{left}");
    assert!(vertex_accepts(&e.emu, t.access_token.expose()).await);
    let calls = e.state.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].kind, CallKind::Vertex);
    assert_eq!(calls[1].principal.as_deref(), Some(SA));
    assert_eq!(
        calls[0].grant_type.as_deref(),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    assert_eq!(calls[0].principal.as_deref(), Some(SA));
    assert_eq!(
        calls[0].issued_fingerprint,
        Some(t.access_token.fingerprint())
    );
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn service_account_impersonates_with_the_asked_lifetime() {
    let e = env().await;
    let cred = UpstreamCredential::parse(&e.state.add_service_account(SA)).unwrap();
    e.state.add_service_account(TARGET);
    e.state.grant_token_creator(SA, TARGET);

    // The asked scope is narrow; the base token still needs cloud-platform for IAM.
    let mut request = impersonating(TARGET, 300);
    request.scopes = vec!["https://www.googleapis.com/auth/devstorage.read_only".into()];
    let before = e.state.now();
    let t = e.upstream.mint(&cred, &request).await.unwrap();
    let after = e.state.now();
    assert_eq!(t.principal, TARGET);
    assert!(
        secs_between(t.expires_at, before) >= 299,
        "expires too soon"
    );
    assert!(secs_between(t.expires_at, after) <= 300, "expires too late");
    let issued = e.state.valid_access_token(t.access_token.expose()).unwrap();
    assert_eq!(issued.principal, TARGET);
    assert_eq!(issued.scopes, request.scopes);

    let calls = e.state.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].kind, CallKind::Token);
    assert_eq!(calls[1].kind, CallKind::GenerateAccessToken);
    assert_eq!(calls[1].lifetime_secs, Some(300));
    assert_eq!(calls[1].principal.as_deref(), Some(SA));
    // The base token is what was presented to IAM, and it is not what came back.
    assert_eq!(calls[1].bearer_fingerprint, calls[0].issued_fingerprint);
    assert_eq!(
        calls[1].issued_fingerprint,
        Some(t.access_token.fingerprint())
    );

    // A delegation chain.
    let middle = "middle@proj-1.iam.gserviceaccount.com";
    e.state.add_service_account(middle);
    e.state.grant_token_creator(SA, middle);
    e.state.grant_token_creator(middle, TARGET);
    e.state.revoke_token_creator(SA, TARGET);
    let mut chained = impersonating(TARGET, 600);
    chained.delegates = vec![middle.into()];
    let t = e.upstream.mint(&cred, &chained).await.unwrap();
    assert_eq!(t.principal, TARGET);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn authorized_user_refreshes_and_impersonates() {
    let e = env().await;
    let adc = e.state.add_authorized_user(USER);
    let cred = UpstreamCredential::parse(&adc).unwrap();
    let t = e
        .upstream
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap();
    assert!(t.principal.starts_with("user (client "), "{}", t.principal);
    assert!(vertex_accepts(&e.emu, t.access_token.expose()).await);
    assert_eq!(e.state.calls()[0].principal.as_deref(), Some(USER));

    e.state.add_service_account(TARGET);
    let err = e
        .upstream
        .mint(&cred, &impersonating(TARGET, 900))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("grant your Google user account roles/iam.serviceAccountTokenCreator"),
        "{err}"
    );
    e.state.grant_token_creator(USER, TARGET);
    let t = e
        .upstream
        .mint(&cred, &impersonating(TARGET, 900))
        .await
        .unwrap();
    assert_eq!(t.principal, TARGET);
    let left = secs_between(t.expires_at, e.state.now());
    assert!((898..=900).contains(&left), "{left}");
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn revoked_refresh_token_says_import_a_fresh_one() {
    let e = env().await;
    let adc = e.state.add_authorized_user(USER);
    let cred = UpstreamCredential::parse(&adc).unwrap();
    let [secret, refresh] = adc_secrets(&adc);
    assert!(e.state.revoke_refresh_token(&refresh));
    let err = e
        .upstream
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        UpstreamError::Rejected(
            "Google refused the refresh token (invalid_grant: Token has been expired or \
             revoked.): import a fresh credential with touchgate import"
                .into()
        )
    );
    assert_clean(&err, &[&secret, &refresh]);

    // A wrong client secret.
    let wrong = adc.replace(&secret, "GOCSPX-wrong");
    let cred = UpstreamCredential::parse(&wrong).unwrap();
    let err = e
        .upstream
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert_clean(&err, &[&secret, &refresh]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn service_account_invalid_grant_names_key_and_clock() {
    let e = env().await;
    let key = e.state.add_service_account(SA);
    let cred = UpstreamCredential::parse(&key).unwrap();
    let v: serde_json::Value = serde_json::from_str(&key).unwrap();
    let kid = v["private_key_id"].as_str().unwrap();

    // This machine's clock two hours behind the emulator's.
    let skewed: Arc<dyn Clock> =
        Arc::new(TestClock::new(e.state.now() - Duration::from_secs(7200)));
    let upstream = GoogleUpstream::new(endpoints(&e.emu), skewed);
    let err = upstream
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
        "Google refused the signed assertion of service account {SA} (key {kid}) (invalid_grant: "
    )),
        "{text}"
    );
    assert!(
        text.contains("deleted or disabled") && text.contains("clock"),
        "{text}"
    );
    assert_clean(&err, &[]);

    // The key deleted at Google.
    assert!(e.state.delete_service_account_key(SA, kid));
    let err = e
        .upstream
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Invalid JWT Signature."), "{err}");
    assert_clean(&err, &[]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn impersonation_refusals_say_what_to_grant() {
    let e = env().await;
    let cred = UpstreamCredential::parse(&e.state.add_service_account(SA)).unwrap();
    e.state.add_service_account(TARGET);
    let err = e
        .upstream
        .mint(&cred, &impersonating(TARGET, 300))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "impersonating {TARGET} was refused (403 PERMISSION_DENIED: Permission \
             'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).): \
             grant {SA} roles/iam.serviceAccountTokenCreator on {TARGET}"
        )
    );
    assert_clean(&err, &[]);

    e.state.grant_token_creator(SA, TARGET);
    let err = e
        .upstream
        .mint(&cred, &impersonating(TARGET, 7200))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400 INVALID_ARGUMENT"), "{err}");
    assert!(err.to_string().contains("3600s or less"), "{err}");
    assert_clean(&err, &[]);

    let ghost = "ghost@proj-1.iam.gserviceaccount.com";
    let err = e
        .upstream
        .mint(&cred, &impersonating(ghost, 300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such service account"), "{err}");
    assert_clean(&err, &[]);

    let err = e
        .upstream
        .mint(&cred, &impersonating("evil/../x", 300))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol(_)), "{err}");
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn configured_token_uri_wins_over_the_key_file() {
    let e = env().await;
    // The file points at a closed port; the config at the emulator.
    let closed = closed_port_url().await;
    let adc = e.state.add_authorized_user(USER);
    let v: serde_json::Value = serde_json::from_str(&adc).unwrap();
    let adc = adc.replace(v["token_uri"].as_str().unwrap(), &closed);
    let cred = UpstreamCredential::parse(&adc).unwrap();
    assert!(e
        .upstream
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .is_err());
    let configured = GoogleUpstream::new(
        Endpoints {
            token_uri: Some(e.state.token_url()),
            iam_credentials: e.emu.base_url(),
        },
        e.state.clock(),
    );
    configured
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap();
    e.emu.shutdown().await.unwrap();
}

async fn closed_port_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/token")
}

#[tokio::test]
async fn unreachable_token_endpoint_is_a_network_error() {
    let e = env().await;
    let adc = e.state.add_authorized_user(USER);
    let [secret, refresh] = adc_secrets(&adc);
    let cred = UpstreamCredential::parse(&adc).unwrap();
    let url = closed_port_url().await;
    let upstream = GoogleUpstream::new(
        Endpoints {
            token_uri: Some(url.clone()),
            iam_credentials: e.emu.base_url(),
        },
        e.state.clock(),
    );
    let err = upstream
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap_err();
    let UpstreamError::Network { url: got, reason } = &err else {
        panic!("not a network error: {err:?}");
    };
    assert_eq!(got, &url);
    assert!(reason.contains("Connection refused"), "{reason}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach {url}: ")),
        "{err}"
    );
    assert_clean(&err, &[&secret, &refresh]);

    // Plain http beyond this machine is refused before anything is sent.
    let remote = GoogleUpstream::new(
        Endpoints {
            token_uri: Some("http://oauth2.googleapis.com/token".into()),
            iam_credentials: e.emu.base_url(),
        },
        e.state.clock(),
    );
    let err = remote
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("use an https:// endpoint"),
        "{err}"
    );
    e.emu.shutdown().await.unwrap();
}

/// A token endpoint that answers 200 with `body`.
async fn fake_token_endpoint(body: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    (url, task)
}

#[tokio::test]
async fn malformed_success_replies_name_the_field_not_the_body() {
    let e = env().await;
    let cred = UpstreamCredential::parse(&e.state.add_authorized_user(USER)).unwrap();
    for (body, field) in [
        (
            r#"{"access_token":"ya29.leak","token_type":"Bearer"}"#,
            "expires_in",
        ),
        (
            r#"{"expires_in":3599,"token_type":"Bearer"}"#,
            "access_token",
        ),
        ("<html>ya29.leak</html>", "access_token"),
    ] {
        let (url, task) = fake_token_endpoint(body).await;
        let upstream = GoogleUpstream::new(
            Endpoints {
                token_uri: Some(url),
                iam_credentials: e.emu.base_url(),
            },
            e.state.clock(),
        );
        let err = upstream
            .mint(&cred, &plain(&[CLOUD_PLATFORM]))
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains(field), "{err}");
        assert_clean(&err, &["leak"]);
        task.abort();
    }
    e.emu.shutdown().await.unwrap();
}

#[test]
fn credential_debug_is_redacted() {
    let state = EmulatorState::new("http://127.0.0.1:1");
    let adc = state.add_authorized_user(USER);
    let [secret, refresh] = adc_secrets(&adc);
    let au = UpstreamCredential::parse(&adc).unwrap();
    let sa = UpstreamCredential::parse(&state.add_service_account(SA)).unwrap();
    let dbg = format!("{au:?} {sa:?}");
    assert!(!dbg.contains(&secret) && !dbg.contains(&refresh), "{dbg}");
    assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
    assert_eq!(sa.project(), Some("proj-1"));
    assert_eq!(sa.kind(), "service_account");
    assert_eq!(au.kind(), "authorized_user");
}
