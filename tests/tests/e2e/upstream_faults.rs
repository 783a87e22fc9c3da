//! The Google upstream when Google misbehaves: faults injected at the emulator
//! (5xx, 429 with Retry-After, resets, slow answers), retries counted where they
//! land. The waits between attempts go to a recording sleeper: asked for, seen,
//! never spent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use touchgate_agent::upstream::google::GoogleUpstream;
use touchgate_agent::upstream::{
    Endpoints, MintRequest, RecordingSleeper, Retry, Upstream, UpstreamCredential, UpstreamError,
};
use touchgate_tests::emulator::{Fault, FaultRule};
use touchgate_tests::{CallKind, Emulator, EmulatorHandle, EmulatorState};

const SA: &str = "runner@proj-1.iam.gserviceaccount.com";
const TARGET: &str = "inference@proj-1.iam.gserviceaccount.com";
const USER: &str = "ada@example.com";

struct Env {
    emu: EmulatorHandle,
    state: Arc<EmulatorState>,
    sleeper: RecordingSleeper,
    upstream: GoogleUpstream,
    /// The runner's key, and the user's ADC file.
    sa: UpstreamCredential,
    user: UpstreamCredential,
    user_secrets: [String; 2],
}

async fn env_with(tune: impl FnOnce(&mut Endpoints)) -> Env {
    let emu = Emulator::start("127.0.0.1:0").await.unwrap();
    let state = emu.state();
    let sa = UpstreamCredential::parse(&state.add_service_account(SA)).unwrap();
    let adc = state.add_authorized_user(USER);
    let v: serde_json::Value = serde_json::from_str(&adc).unwrap();
    let user_secrets = [
        v["client_secret"].as_str().unwrap().to_owned(),
        v["refresh_token"].as_str().unwrap().to_owned(),
    ];
    let user = UpstreamCredential::parse(&adc).unwrap();
    state.add_service_account(TARGET);
    state.grant_token_creator(SA, TARGET);
    state.grant_token_creator(USER, TARGET);
    let mut endpoints = Endpoints {
        iam_credentials: Some(emu.base_url()),
        ..Endpoints::default()
    };
    tune(&mut endpoints);
    let sleeper = RecordingSleeper::new();
    let upstream =
        GoogleUpstream::new(endpoints, state.clock()).with_sleeper(Arc::new(sleeper.clone()));
    Env {
        emu,
        state,
        sleeper,
        upstream,
        sa,
        user,
        user_secrets,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

fn plain() -> MintRequest {
    MintRequest::default()
}

fn impersonating() -> MintRequest {
    MintRequest {
        impersonate: Some(TARGET.into()),
        lifetime: Duration::from_secs(600),
        ..MintRequest::default()
    }
}

fn fault(endpoint: CallKind, fault: Fault, times: u32) -> FaultRule {
    FaultRule {
        endpoint,
        fault,
        times,
    }
}

/// One line, no token, no secret.
fn assert_clean(err: &UpstreamError, secrets: &[String]) {
    let text = err.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    for marker in ["ya29.", "1//", "GOCSPX-", "PRIVATE KEY", "eyJ"] {
        assert!(!text.contains(marker), "{marker} in {text}");
    }
    for s in secrets {
        assert!(!text.contains(s.as_str()), "secret in {text}");
    }
}

impl Env {
    fn token_url(&self) -> String {
        self.state.token_url()
    }

    fn generate_url(&self) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken",
            self.emu.base_url()
        )
    }

    /// Statuses of the calls of `kind`, in order (0: reset without an answer).
    fn statuses(&self, kind: CallKind) -> Vec<u16> {
        self.state
            .calls()
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.status)
            .collect()
    }
}

#[tokio::test]
async fn two_503s_then_success() {
    let e = env().await;
    e.state
        .inject(fault(CallKind::Token, Fault::Status(503), 2));
    let t = e.upstream.mint(&e.sa, &plain()).await.unwrap();
    assert_eq!(t.principal, SA);
    assert_eq!(
        e.state.count(CallKind::Token),
        3,
        "attempts at the emulator"
    );
    assert_eq!(e.statuses(CallKind::Token), vec![503, 503, 200]);
    // Two waits, jittered under a doubling ceiling (200 ms, then 400 ms).
    let delays = e.sleeper.delays();
    assert_eq!(delays.len(), 2, "{delays:?}");
    assert!(delays[0] <= Duration::from_millis(200), "{delays:?}");
    assert!(delays[1] <= Duration::from_millis(400), "{delays:?}");
    assert!(e.state.pending_faults().is_empty());
    let faults: Vec<_> = e
        .state
        .calls()
        .into_iter()
        .filter_map(|c| c.fault)
        .collect();
    assert_eq!(faults, vec!["HTTP 503", "HTTP 503"]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn persistent_503_gives_up_after_max_attempts() {
    let e = env().await;
    e.state
        .inject(fault(CallKind::Token, Fault::Status(503), 5));
    let err = e.upstream.mint(&e.user, &plain()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Google's token endpoint {} kept failing (HTTP 503 after 4 attempts): try again later",
            e.token_url()
        )
    );
    assert_eq!(
        err,
        UpstreamError::Unavailable {
            message: err.to_string(),
            attempts: 4
        }
    );
    assert!(err.is_transient());
    assert_clean(&err, &e.user_secrets);
    assert_eq!(e.state.count(CallKind::Token), 4, "exactly max_attempts");
    assert_eq!(e.sleeper.delays().len(), 3);
    // The fifth fault is still waiting: the next mint uses it up, then succeeds.
    assert_eq!(e.state.pending_faults()[0].times, 1);
    e.upstream.mint(&e.user, &plain()).await.unwrap();
    assert_eq!(e.state.count(CallKind::Token), 6);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_attempts_is_configurable() {
    let e = env_with(|g| g.max_attempts = 2).await;
    assert_eq!(e.upstream.retry().max_attempts, 2);
    e.state
        .inject(fault(CallKind::GenerateAccessToken, Fault::Status(500), 5));
    let err = e.upstream.mint(&e.sa, &impersonating()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Google's IAM Credentials API {} kept failing (HTTP 500 after 2 attempts): try again \
             later",
            e.generate_url()
        )
    );
    assert_eq!(
        e.state.count(CallKind::Token),
        1,
        "the base token is not minted again"
    );
    assert_eq!(e.state.count(CallKind::GenerateAccessToken), 2);
    assert_clean(&err, &[]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let e = env().await;
    e.state.inject(fault(
        CallKind::GenerateAccessToken,
        Fault::RateLimited {
            retry_after: Duration::from_secs(7),
        },
        1,
    ));
    let t = e.upstream.mint(&e.sa, &impersonating()).await.unwrap();
    assert_eq!(t.principal, TARGET);
    // Exactly what Google asked for, not a jittered backoff.
    assert_eq!(e.sleeper.delays(), vec![Duration::from_secs(7)]);
    assert_eq!(e.statuses(CallKind::GenerateAccessToken), vec![429, 200]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_gives_up_at_once() {
    let e = env_with(|g| g.deadline = Duration::from_secs(5)).await;
    e.state.inject(fault(
        CallKind::Token,
        Fault::RateLimited {
            retry_after: Duration::from_secs(60),
        },
        1,
    ));
    let err = e.upstream.mint(&e.sa, &plain()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Google's token endpoint {} kept failing (HTTP 429 after 1 attempt; it asked to \
             wait 60s, beyond the 5s deadline): try again later",
            e.token_url()
        )
    );
    assert!(err.is_transient());
    assert!(e.sleeper.delays().is_empty(), "no pointless wait");
    assert_eq!(e.state.count(CallKind::Token), 1);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reset_connection_is_retried() {
    let e = env().await;
    e.state.inject(fault(CallKind::Token, Fault::Reset, 1));
    e.state
        .inject(fault(CallKind::GenerateAccessToken, Fault::Reset, 1));
    let t = e.upstream.mint(&e.user, &impersonating()).await.unwrap();
    assert_eq!(t.principal, TARGET);
    assert_eq!(e.statuses(CallKind::Token), vec![0, 200]);
    assert_eq!(e.statuses(CallKind::GenerateAccessToken), vec![0, 200]);
    assert_eq!(e.sleeper.delays().len(), 2);

    // Reset every time: a network error naming the endpoint and the attempts.
    e.state.inject(fault(CallKind::Token, Fault::Reset, 4));
    let err = e.upstream.mint(&e.user, &plain()).await.unwrap_err();
    let UpstreamError::Network {
        url,
        reason,
        attempts,
    } = &err
    else {
        panic!("not a network error: {err:?}");
    };
    assert_eq!(url, &e.token_url());
    assert_eq!(*attempts, 4);
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach {url} ({reason}) after 4 attempts: check the network, proxy settings \
             and the endpoint URL"
        )
    );
    assert!(err.is_transient());
    assert_clean(&err, &e.user_secrets);
    assert_eq!(e.statuses(CallKind::Token), vec![0, 200, 0, 0, 0, 0]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_beyond_the_deadline_is_a_deadline_error() {
    let e = env_with(|g| g.deadline = Duration::from_millis(300)).await;
    e.state.inject(fault(
        CallKind::Token,
        Fault::Slow(Duration::from_secs(60)),
        1,
    ));
    let started = Instant::now();
    let err = e.upstream.mint(&e.sa, &plain()).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the deadline held: {took:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "Google's token endpoint {} did not answer within the 0.3s deadline (1 attempt): \
             try again later, or raise deadline in the [google] config",
            e.token_url()
        )
    );
    assert!(err.is_transient());
    assert_clean(&err, &[]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_within_the_deadline_is_just_slow() {
    let e = env().await;
    e.state.inject(fault(
        CallKind::GenerateAccessToken,
        Fault::Slow(Duration::from_millis(50)),
        1,
    ));
    let t = e.upstream.mint(&e.sa, &impersonating()).await.unwrap();
    assert_eq!(t.principal, TARGET);
    assert_eq!(e.state.count(CallKind::GenerateAccessToken), 1);
    assert!(e.sleeper.delays().is_empty());
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_deadline_covers_every_attempt_of_a_mint() {
    // Waits really spent: each backoff is up to 200 ms; the deadline is 150 ms in all.
    let emu = Emulator::start("127.0.0.1:0").await.unwrap();
    let state = emu.state();
    let sa = UpstreamCredential::parse(&state.add_service_account(SA)).unwrap();
    state.inject(fault(CallKind::Token, Fault::Status(503), 100));
    let upstream = GoogleUpstream::new(Endpoints::default(), state.clock()).with_retry(Retry {
        max_attempts: 100,
        deadline: Duration::from_millis(150),
        base: Duration::from_millis(40),
        cap: Duration::from_millis(40),
    });
    let started = Instant::now();
    let err = upstream.mint(&sa, &plain()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    let UpstreamError::Unavailable { attempts, message } = &err else {
        panic!("{err:?}");
    };
    assert!(*attempts < 100, "{attempts}");
    assert_eq!(state.count(CallKind::Token) as u32, *attempts);
    assert!(
        message.contains("kept failing (HTTP 503 after") || message.contains("deadline"),
        "{message}"
    );
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let e = env().await;
    // 400 from the token endpoint.
    e.state
        .inject(fault(CallKind::Token, Fault::Status(400), 3));
    let err = e.upstream.mint(&e.sa, &plain()).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Rejected(_)), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(e.state.count(CallKind::Token), 1);
    e.state.clear_faults();

    // 403 from IAM Credentials.
    e.state
        .inject(fault(CallKind::GenerateAccessToken, Fault::Status(403), 3));
    let err = e.upstream.mint(&e.sa, &impersonating()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "impersonating {TARGET} was refused (403 PERMISSION_DENIED: The caller does not \
             have permission): grant {SA} roles/iam.serviceAccountTokenCreator on {TARGET}"
        )
    );
    assert_eq!(e.state.count(CallKind::GenerateAccessToken), 1);
    e.state.clear_faults();

    // A real refusal: a revoked refresh token.
    assert!(e.state.revoke_refresh_token(&e.user_secrets[1]));
    let before = e.state.count(CallKind::Token);
    let err = e.upstream.mint(&e.user, &plain()).await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with("run touchgate login again, or touchgate import a fresh ADC file"),
        "{err}"
    );
    assert_eq!(e.state.count(CallKind::Token), before + 1);
    assert_clean(&err, &e.user_secrets);
    assert!(e.sleeper.delays().is_empty(), "never waited");
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_endpoint_is_retried_then_named() {
    let e = env().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}/token", l.local_addr().unwrap());
    drop(l);
    let upstream = GoogleUpstream::new(
        Endpoints {
            token_uri: Some(closed.clone()),
            ..Endpoints::default()
        },
        e.state.clock(),
    )
    .with_sleeper(Arc::new(e.sleeper.clone()));
    let err = upstream.mint(&e.user, &plain()).await.unwrap_err();
    let UpstreamError::Network { url, attempts, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(url, &closed);
    assert_eq!(*attempts, 4);
    assert_eq!(e.sleeper.delays().len(), 3);
    assert_clean(&err, &e.user_secrets);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn faults_can_be_injected_over_http() {
    let e = env().await;
    let admin = e.emu.client();
    admin
        .inject(&fault(CallKind::Token, Fault::Status(502), 1))
        .await
        .unwrap();
    e.upstream.mint(&e.sa, &plain()).await.unwrap();
    assert_eq!(e.statuses(CallKind::Token), vec![502, 200]);
    e.emu.shutdown().await.unwrap();
}
