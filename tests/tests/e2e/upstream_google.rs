//! The agent's real Google upstream against the emulator on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use touchgate_agent::clock::{unix, Clock, TestClock};
use touchgate_agent::upstream::google::GoogleUpstream;
use touchgate_agent::upstream::{
    Endpoints, MintRequest, RecordingSleeper, Upstream, UpstreamCredential, UpstreamError,
    CLOUD_PLATFORM,
};
use touchgate_tests::emulator::VertexRole;
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
    let upstream = no_wait(endpoints(&emu), state.clock());
    Env {
        emu,
        state,
        upstream,
    }
}

/// An upstream that never really waits between attempts.
fn no_wait(endpoints: Endpoints, clock: Arc<dyn Clock>) -> GoogleUpstream {
    GoogleUpstream::new(endpoints, clock).with_sleeper(Arc::new(RecordingSleeper::new()))
}

/// IAM Credentials at the emulator; the token endpoint comes from the key files.
fn endpoints(emu: &EmulatorHandle) -> Endpoints {
    Endpoints {
        iam_credentials: Some(emu.base_url()),
        ..Endpoints::default()
    }
}

fn plain(scopes: &[&str]) -> MintRequest {
    MintRequest {
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        impersonate: None,
        lifetime: Duration::from_secs(3600),
        delegates: vec![],
        quota_project: None,
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

/// Google's 403 for generateAccessToken without the role on `target`, then our advice.
fn denied(target: &str, advice: &str) -> String {
    format!(
        "impersonating {target} was refused (403 PERMISSION_DENIED: Permission \
         'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).): \
         {advice}"
    )
}

/// Our advice: give `who` the token-creator role on `target`.
fn grant_advice(who: &str, target: &str) -> String {
    format!("grant {who} roles/iam.serviceAccountTokenCreator on {target}")
}

/// The refusal `mint` must end in.
async fn mint_err(
    upstream: &GoogleUpstream,
    cred: &UpstreamCredential,
    request: &MintRequest,
) -> UpstreamError {
    upstream.mint(cred, request).await.unwrap_err()
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
    e.state.grant_vertex(SA, VertexRole::Inference);
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
    e.state.grant_vertex(USER, VertexRole::User);
    let t = e
        .upstream
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap();
    assert!(t.principal.starts_with("user (client "), "{}", t.principal);
    assert!(vertex_accepts(&e.emu, t.access_token.expose()).await);
    assert_eq!(e.state.calls()[0].principal.as_deref(), Some(USER));

    e.state.add_service_account(TARGET);
    let err = mint_err(&e.upstream, &cred, &impersonating(TARGET, 900)).await;
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
async fn revoked_refresh_token_says_login_again() {
    let e = env().await;
    let adc = e.state.add_authorized_user(USER);
    let cred = UpstreamCredential::parse(&adc).unwrap();
    let [secret, refresh] = adc_secrets(&adc);
    assert!(e.state.revoke_refresh_token(&refresh));
    let err = mint_err(&e.upstream, &cred, &plain(&[CLOUD_PLATFORM])).await;
    assert_eq!(
        err,
        UpstreamError::Rejected(
            "Google refused the refresh token (invalid_grant: Token has been expired or \
             revoked.): it was revoked or has expired; run touchgate login again, or touchgate \
             import a fresh ADC file"
                .into()
        )
    );
    assert_clean(&err, &[&secret, &refresh]);

    // A wrong client secret.
    let wrong = adc.replace(&secret, "GOCSPX-wrong");
    let cred = UpstreamCredential::parse(&wrong).unwrap();
    let err = mint_err(&e.upstream, &cred, &plain(&[CLOUD_PLATFORM])).await;
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
    let upstream = no_wait(endpoints(&e.emu), skewed);
    let err = mint_err(&upstream, &cred, &plain(&[CLOUD_PLATFORM])).await;
    assert_eq!(
        err.to_string(),
        format!(
            "Google refused the signed assertion of service account {SA} (key {kid}) \
             (invalid_grant: Invalid JWT: Token must be a short-lived token (60 minutes) and in \
             a reasonable timeframe. Check your iat and exp values in the JWT claim.): this \
             machine's clock is off; check the system clock (NTP) and try again"
        )
    );
    assert!(!err.is_transient());
    assert_clean(&err, &[]);

    // The key deleted at Google.
    assert!(e.state.delete_service_account_key(SA, kid));
    let err = mint_err(&e.upstream, &cred, &plain(&[CLOUD_PLATFORM])).await;
    assert_eq!(
        err.to_string(),
        format!(
            "Google refused the signed assertion of service account {SA} (key {kid}) \
             (invalid_grant: Invalid JWT Signature.): the key or the account may be deleted or \
             disabled; create a new key and touchgate import it"
        )
    );
    assert_clean(&err, &[]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn impersonation_refusals_say_what_to_grant() {
    let e = env().await;
    let cred = UpstreamCredential::parse(&e.state.add_service_account(SA)).unwrap();
    e.state.add_service_account(TARGET);
    let err = mint_err(&e.upstream, &cred, &impersonating(TARGET, 300)).await;
    assert_eq!(err.to_string(), denied(TARGET, &grant_advice(SA, TARGET)));
    assert_clean(&err, &[]);

    e.state.grant_token_creator(SA, TARGET);
    let err = mint_err(&e.upstream, &cred, &impersonating(TARGET, 7200)).await;
    assert_eq!(
        err.to_string(),
        format!(
            "impersonating {TARGET} for 7200s was refused (400 INVALID_ARGUMENT: The lifetime \
             must be between 1 and 3600 seconds (longer needs the org policy \
             constraints/iam.allowServiceAccountCredentialLifetimeExtension).): set lifetime ≤ \
             1h or enable extended lifetimes for the service account (org policy \
             constraints/iam.allowServiceAccountCredentialLifetimeExtension)"
        )
    );
    assert_clean(&err, &[]);
    // With the extended-lifetime flag, up to 12 h.
    e.state.allow_extended_lifetime(TARGET);
    let t = e
        .upstream
        .mint(&cred, &impersonating(TARGET, 7200))
        .await
        .unwrap();
    let left = secs_between(t.expires_at, e.state.now());
    assert!((7198..=7200).contains(&left), "{left}");

    let ghost = "ghost@proj-1.iam.gserviceaccount.com";
    let err = mint_err(&e.upstream, &cred, &impersonating(ghost, 300)).await;
    assert_eq!(
        err.to_string(),
        format!(
            "cannot impersonate {ghost}: no such service account (404 NOT_FOUND: Not found; \
             Gaia id not found for email {ghost}): check the service account email in the \
             profile"
        )
    );
    assert_clean(&err, &[]);

    let err = mint_err(&e.upstream, &cred, &impersonating("evil/../x", 300)).await;
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
    let configured = with_token_uri(&e, e.state.token_url());
    configured
        .mint(&cred, &plain(&[CLOUD_PLATFORM]))
        .await
        .unwrap();
    e.emu.shutdown().await.unwrap();
}

/// An upstream with its token endpoint at `token_uri` and IAM at the emulator.
fn with_token_uri(e: &Env, token_uri: String) -> GoogleUpstream {
    no_wait(
        Endpoints {
            token_uri: Some(token_uri),
            ..endpoints(&e.emu)
        },
        e.state.clock(),
    )
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
    let upstream = with_token_uri(&e, url.clone());
    let err = mint_err(&upstream, &cred, &plain(&[CLOUD_PLATFORM])).await;
    let UpstreamError::Network {
        url: got,
        reason,
        attempts,
    } = &err
    else {
        panic!("not a network error: {err:?}");
    };
    assert_eq!(got, &url);
    assert!(reason.contains("Connection refused"), "{reason}");
    assert_eq!(*attempts, 4);
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach {url} ({reason}) after 4 attempts: check the network, proxy settings \
             and the endpoint URL"
        )
    );
    assert_clean(&err, &[&secret, &refresh]);

    // Plain http beyond this machine is refused before anything is sent.
    let remote = with_token_uri(&e, "http://oauth2.googleapis.com/token".into());
    let err = mint_err(&remote, &cred, &plain(&[CLOUD_PLATFORM])).await;
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
        // A lifetime past the end of the clock: an error, not an overflow panic.
        (
            r#"{"access_token":"ya29.leak","expires_in":18446744073709551615,"token_type":"Bearer"}"#,
            "expires_in",
        ),
    ] {
        let (url, task) = fake_token_endpoint(body).await;
        let upstream = with_token_uri(&e, url);
        let err = mint_err(&upstream, &cred, &plain(&[CLOUD_PLATFORM])).await;
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

const INF: &str = "inference@proj-1.iam.gserviceaccount.com";

#[tokio::test]
async fn invalid_scopes_say_to_fix_the_profile() {
    let e = env().await;
    let cred = UpstreamCredential::parse(&e.state.add_service_account(SA)).unwrap();
    // A scope written short: the token endpoint refuses the JWT.
    let err = mint_err(&e.upstream, &cred, &plain(&["cloud-platform"])).await;
    assert_eq!(
        err,
        UpstreamError::Rejected(format!(
            "Google refused the scopes asked for service account {SA} (invalid_scope: Invalid \
             OAuth scope or ID token audience provided.): fix scopes in the profile (full URLs \
             such as https://www.googleapis.com/auth/cloud-platform)"
        ))
    );
    assert_clean(&err, &[]);

    // Impersonating: the base token is cloud-platform; IAM refuses the profile's scope.
    e.state.add_service_account(TARGET);
    e.state.grant_token_creator(SA, TARGET);
    let mut request = impersonating(TARGET, 300);
    request.scopes = vec!["cloud-platform".into()];
    let err = mint_err(&e.upstream, &cred, &request).await;
    assert_eq!(
        err.to_string(),
        format!(
            "impersonating {TARGET} was refused (400 INVALID_ARGUMENT: Invalid value at \
             'scope': \"cloud-platform\" is not a valid OAuth scope.): fix scopes in the profile \
             (full URLs such as https://www.googleapis.com/auth/cloud-platform)"
        )
    );
    assert_clean(&err, &[]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn quota_project_header_from_the_file_or_the_profile() {
    let e = env().await;
    e.state.add_service_account(TARGET);
    e.state.grant_token_creator(USER, TARGET);
    let adc = e.state.add_authorized_user(USER);
    let mut v: serde_json::Value = serde_json::from_str(&adc).unwrap();
    v["quota_project_id"] = "billing-from-adc".into();
    let cred = UpstreamCredential::parse(&v.to_string()).unwrap();

    e.upstream
        .mint(&cred, &impersonating(TARGET, 300))
        .await
        .unwrap();
    let mut request = impersonating(TARGET, 300);
    request.quota_project = Some("billing-from-profile".into());
    e.upstream.mint(&cred, &request).await.unwrap();

    // A service-account key bills its own project: no header.
    let sa = UpstreamCredential::parse(&e.state.add_service_account(SA)).unwrap();
    e.state.grant_token_creator(SA, TARGET);
    e.upstream
        .mint(&sa, &impersonating(TARGET, 300))
        .await
        .unwrap();

    let gen: Vec<_> = e
        .state
        .calls_of(CallKind::GenerateAccessToken)
        .into_iter()
        .map(|c| c.user_project)
        .collect();
    assert_eq!(
        gen,
        vec![
            Some("billing-from-adc".to_owned()),
            Some("billing-from-profile".to_owned()),
            None
        ]
    );
    // The token endpoint never gets it.
    assert!(e
        .state
        .calls_of(CallKind::Token)
        .iter()
        .all(|c| c.user_project.is_none()));

    let mut bad = impersonating(TARGET, 300);
    bad.quota_project = Some("bad project\r\nx: y".into());
    let before = e.state.calls().len();
    let err = mint_err(&e.upstream, &cred, &bad).await;
    assert_eq!(
        err.to_string(),
        "the quota project \"bad project x: y\" is not a project id: fix quota_project in the \
         profile or quota_project_id in the credential file"
    );
    assert!(matches!(err, UpstreamError::Protocol(_)));
    assert_eq!(e.state.calls().len(), before, "nothing sent");
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn universe_domain_derives_the_default_endpoints() {
    let state = Arc::new(EmulatorState::new("http://127.0.0.1:1"));
    let adc = state.add_authorized_user(USER);
    let mut v: serde_json::Value = serde_json::from_str(&adc).unwrap();
    v.as_object_mut().unwrap().remove("token_uri");
    let cred = UpstreamCredential::parse(&v.to_string()).unwrap();
    let endpoints = Endpoints {
        universe_domain: "cloud.example.eu".into(),
        ..Endpoints::default()
    };
    let u = GoogleUpstream::new(endpoints, state.clock());
    assert_eq!(
        u.token_uri_for(&cred),
        "https://oauth2.cloud.example.eu/token"
    );
    assert_eq!(
        u.iam_credentials_for(&cred),
        "https://iamcredentials.cloud.example.eu"
    );
    let google = GoogleUpstream::new(Endpoints::default(), state.clock());
    assert_eq!(
        google.token_uri_for(&cred),
        "https://oauth2.googleapis.com/token"
    );
    // The file's token_uri wins over the universe's default.
    let with_uri = UpstreamCredential::parse(&adc).unwrap();
    assert_eq!(u.token_uri_for(&with_uri), state.token_url());
}

/// An `impersonated_service_account` ADC file whose URL points at the emulator.
fn impersonation_file(e: &Env, source: &str, target: &str, delegates: &[&str]) -> String {
    serde_json::json!({
        "type": "impersonated_service_account",
        "service_account_impersonation_url": format!(
            "{}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
            e.emu.base_url()
        ),
        "delegates": delegates,
        "quota_project_id": "billing-imp",
        "source_credentials": serde_json::from_str::<serde_json::Value>(source).unwrap(),
    })
    .to_string()
}

#[tokio::test]
async fn impersonated_service_account_files_mint_for_their_target() {
    let e = env().await;
    // No iam_credentials configured: the file's URL says where IAM is.
    let upstream = no_wait(Endpoints::default(), e.state.clock());
    e.state.add_service_account(INF);
    e.state.add_service_account(TARGET);
    let adc = e.state.add_authorized_user(USER);
    let [secret, refresh] = adc_secrets(&adc);
    let file = impersonation_file(&e, &adc, INF, &[]);
    let cred = UpstreamCredential::parse(&file).unwrap();
    assert_eq!(cred.principal(), INF);

    let mut request = plain(&[CLOUD_PLATFORM]);
    request.lifetime = Duration::from_secs(900);
    let err = mint_err(&upstream, &cred, &request).await;
    // Only the file names the emulator: not a Google host, so its text is not shown.
    let denied = |target: &str, advice: &str| {
        format!(
            "impersonating {target} was refused (403 PERMISSION_DENIED (the reply's text is not \
             shown: {} is not a Google host)): {advice}",
            e.emu.base_url().trim_start_matches("http://")
        )
    };
    assert_eq!(
        err.to_string(),
        denied(INF, &grant_advice("your Google user account", INF))
    );
    assert_clean(&err, &[&secret, &refresh]);

    e.state.grant_token_creator(USER, INF);
    let t = upstream.mint(&cred, &request).await.unwrap();
    assert_eq!(t.principal, INF);
    let left = secs_between(t.expires_at, e.state.now());
    assert!((898..=900).contains(&left), "{left}");
    let last = e.state.calls().pop().unwrap();
    assert_eq!(last.kind, CallKind::GenerateAccessToken);
    assert_eq!(last.principal.as_deref(), Some(USER));
    assert_eq!(last.target.as_deref(), Some(INF));
    assert_eq!(last.user_project.as_deref(), Some("billing-imp"));

    // A profile's service account: the file's target is a hop on the way.
    let err = mint_err(&upstream, &cred, &impersonating(TARGET, 300)).await;
    assert_eq!(
        err.to_string(),
        denied(
            TARGET,
            &format!(
                "{}, and {INF} the role on {TARGET}",
                grant_advice("your Google user account", INF)
            )
        )
    );
    e.state.grant_token_creator(INF, TARGET);
    let t = upstream
        .mint(&cred, &impersonating(TARGET, 300))
        .await
        .unwrap();
    assert_eq!(t.principal, TARGET);
    let issued = e.state.valid_access_token(t.access_token.expose()).unwrap();
    assert_eq!(issued.principal, TARGET);
    let last = e.state.calls().pop().unwrap();
    assert_eq!(last.target.as_deref(), Some(TARGET));
    assert_eq!(last.lifetime_secs, Some(300));
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn impersonated_file_with_a_service_account_source_names_it_in_errors() {
    let e = env().await;
    let key = e.state.add_service_account(SA);
    e.state.add_service_account(INF);
    let cred = UpstreamCredential::parse(&impersonation_file(&e, &key, INF, &[])).unwrap();
    let err = mint_err(&e.upstream, &cred, &plain(&[])).await;
    assert_eq!(err.to_string(), denied(INF, &grant_advice(SA, INF)));
    assert_clean(&err, &[]);
    e.state.grant_token_creator(SA, INF);
    let t = e.upstream.mint(&cred, &plain(&[])).await.unwrap();
    assert_eq!(t.principal, INF);
    // The file's quota project is sent.
    let last = e.state.calls().pop().unwrap();
    assert_eq!(last.user_project.as_deref(), Some("billing-imp"));
    assert_eq!(last.principal.as_deref(), Some(SA));
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn impersonated_tokens_carry_their_vertex_role() {
    let e = env().await;
    let cred = UpstreamCredential::parse(&e.state.add_service_account(SA)).unwrap();
    e.state.add_service_account(INF);
    e.state.add_service_account(TARGET);
    e.state.grant_token_creator(SA, INF);
    e.state.grant_token_creator(SA, TARGET);
    e.state.grant_vertex(INF, VertexRole::Inference);
    e.state.grant_vertex(TARGET, VertexRole::Training);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!(
        "{}/v1/projects/proj-1/locations/us-central1",
        e.emu.base_url()
    );
    let job = serde_json::json!({"displayName": "train-1", "jobSpec": {"workerPoolSpecs": []}});
    for (sa, can_train) in [(INF, false), (TARGET, true)] {
        let t = e
            .upstream
            .mint(&cred, &impersonating(sa, 900))
            .await
            .unwrap();
        let token = t.access_token.expose();
        let r = http
            .post(format!("{base}/endpoints/42:predict"))
            .bearer_auth(token)
            .json(&serde_json::json!({"instances": [{"x": 1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{sa} predicts");
        let r = http
            .post(format!("{base}/customJobs"))
            .bearer_auth(token)
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16() == 200, can_train, "{sa} trains?");
    }
    // The principal and expiry as configured, checked at the emulator.
    let vertex = e.state.calls_of(CallKind::Vertex);
    assert_eq!(vertex[0].principal.as_deref(), Some(INF));
    assert_eq!(vertex[1].status, 403);
    assert_eq!(
        vertex[1].permission.as_deref(),
        Some("aiplatform.customJobs.create")
    );
    assert_eq!(vertex[3].principal.as_deref(), Some(TARGET));
    assert_eq!(vertex[3].status, 200);
    e.emu.shutdown().await.unwrap();
}
