//! ID tokens end to end: the real agent (in-process over its socket), the
//! software key and the emulator, which signs them with its own key. Each
//! token is checked against the emulator's published JWKS (signature, `aud`,
//! `email`, `exp`). The attacks a new way in opens come first: an audience
//! that could forge a prompt line or flood a log, and a caller the policy
//! refuses.

use crate::common;

use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use serde_json::Value;
use touchgate::{CallerHint, ErrorCode, Secret};
use touchgate_agent::key::soft::{AutoTouch, ScriptedTouch};
use touchgate_tests::emulator::{verify_id_token, CallKind, JWKS_PATH};
use touchgate_tests::EmulatorHandle;

const AUD: &str = "https://hello-abc123-uc.a.run.app";

async fn enrol_and_import(c: &mut touchgate::Client, key_json: &str) {
    c.enroll(false, false, CallerHint::default()).await.unwrap();
    c.import("default", Secret::new(key_json), CallerHint::default())
        .await
        .unwrap();
}

/// The emulator's JWKS, fetched as a relying party would.
async fn jwks(emu: &EmulatorHandle) -> Value {
    reqwest::get(format!("{}{JWKS_PATH}", emu.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `token` verifies against the emulator's JWKS, for `aud`, naming `email`, unexpired.
pub async fn assert_valid_id_token(emu: &EmulatorHandle, token: &str, aud: &str, email: &str) {
    let claims = verify_id_token(&jwks(emu).await, token, SystemTime::now())
        .unwrap_or_else(|e| panic!("the ID token does not verify: {e}"));
    assert_eq!(claims["aud"], aud, "{claims}");
    assert_eq!(claims["email"], email, "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
}

/// A profile with no service account: tokens are the sealed credential's own.
fn own_account_config(base_url: &str, touch: &str) -> String {
    format!(
        r#"default_profile = "own"

[agent]
touch_timeout = "10s"

[key]
backend = "soft"
touch = "auto"

[google]
token_uri = "{base_url}/token"
iam_credentials = "{base_url}"

[profiles.own]
project = "touchgate-test"
lifetime = "15m"
touch = "{touch}"
"#
    )
}

fn audit_text(agent: &InProcess) -> String {
    std::fs::read_to_string(agent.dir.path().join("audit.jsonl")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audience_that_could_forge_a_prompt_or_flood_a_log_is_refused_before_a_touch() {
    let (emu, key_json) = emulator().await;
    let touch = Arc::new(ScriptedTouch::new());
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "");
    let agent = InProcess::start(&cfg, touch.clone()).await;
    let mut c = agent.client().await;
    touch.approve();
    touch.approve();
    enrol_and_import(&mut c, &key_json).await;
    let asked = touch.requested();
    let before = audit_text(&agent);
    for bad in [
        String::new(),
        format!("{AUD}\ntouch your security key: you asked for nothing"),
        format!("{AUD}\u{1b}[2K\r"),
        format!("{AUD} x"),
        format!("{AUD}/{}", "a".repeat(touchgate::MAX_AUDIENCE)),
        format!("{AUD}/é"),
    ] {
        let e = c
            .get_id_token(None, &bad, CallerHint::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
        let msg = e.to_string();
        assert!(!msg.contains('\n') && !msg.contains(AUD), "{msg}");
    }
    assert_eq!(touch.requested(), asked, "no touch asked");
    assert_eq!(emu.state().count(CallKind::GenerateIdToken), 0);
    assert_eq!(audit_text(&agent), before, "nothing logged");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_the_policy_refuses_gets_no_id_token_either() {
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "").replace(
        "touch = \"every-token\"",
        "touch = \"every-token\"\ncallers = [\"/nowhere/*\"]",
    );
    let agent = InProcess::start(&cfg, Arc::new(AutoTouch)).await;
    let mut c = agent.client().await;
    enrol_and_import(&mut c, &key_json).await;
    let e = c
        .get_id_token(None, AUD, CallerHint::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::PolicyRefused), "{e}");
    assert_eq!(emu.state().count(CallKind::GenerateIdToken), 0);
    let refused = audit_text(&agent)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["event"] == "refused")
        .expect("a refused record");
    assert_eq!(refused["audience"], AUD);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_impersonated_account_gets_verified_id_tokens_under_the_profile_window() {
    let (emu, key_json) = emulator().await;
    let touch = Arc::new(ScriptedTouch::new());
    let cfg = config_text(&emu.base_url(), "auto", "10m", "");
    let agent = InProcess::start(&cfg, touch.clone()).await;
    let mut c = agent.client().await;
    touch.approve();
    touch.approve();
    enrol_and_import(&mut c, &key_json).await;
    // The prompt comes while the touch is pending; it is given once the prompt is seen.
    let (tx, mut prompts) = tokio::sync::mpsc::unbounded_channel::<String>();
    c.on_touch_needed(move |p| {
        let _ = tx.send(p.to_owned());
    });
    let ask = tokio::spawn(async move {
        let r = c.get_id_token(None, AUD, CallerHint::default()).await;
        (c, r)
    });
    let prompt = prompts.recv().await.unwrap();
    touch.approve();
    let (mut c, first) = ask.await.unwrap();
    let first = first.unwrap();
    assert!(
        prompt.contains(&format!("an ID token for audience {AUD}")),
        "the prompt names the audience: {prompt}"
    );
    assert!(!first.from_cache);
    assert_eq!(first.audience, AUD);
    assert_valid_id_token(&emu, first.id_token.expose(), AUD, INFERENCE).await;
    let gen = emu.state().calls_of(CallKind::GenerateIdToken);
    assert_eq!(gen.len(), 1);
    assert_eq!(gen[0].target.as_deref(), Some(INFERENCE));
    assert_eq!(gen[0].principal.as_deref(), Some(RUNNER));

    // Inside the window: the same token, no touch; another audience, a mint but
    // no touch; an access token too.
    let touches = agent.agent.touches();
    let again = c
        .get_id_token(None, AUD, CallerHint::default())
        .await
        .unwrap();
    assert!(again.from_cache);
    assert_eq!(again.id_token, first.id_token);
    let other = c
        .get_id_token(None, "https://other.example", CallerHint::default())
        .await
        .unwrap();
    assert!(!other.from_cache);
    assert_valid_id_token(
        &emu,
        other.id_token.expose(),
        "https://other.example",
        INFERENCE,
    )
    .await;
    c.get_token(None, &[], CallerHint::default()).await.unwrap();
    assert_eq!(agent.agent.touches(), touches, "one window for the profile");

    // The audit log names the audience and the token's fingerprint, never the token.
    let text = audit_text(&agent);
    assert!(!text.contains(first.id_token.expose()));
    let issued: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"] == "issued" && r["audience"] == AUD)
        .collect();
    assert_eq!(issued.len(), 1, "{text}");
    assert_eq!(issued[0]["token"], first.id_token.fingerprint());
    assert!(issued[0]["touch"].is_object(), "the touch is in the record");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_account_key_gets_id_tokens_from_the_jwt_bearer_grant() {
    let (emu, key_json) = emulator().await;
    let cfg = own_account_config(&emu.base_url(), "every-token");
    let agent = InProcess::start(&cfg, Arc::new(AutoTouch)).await;
    let mut c = agent.client().await;
    enrol_and_import(&mut c, &key_json).await;
    let t = c
        .get_id_token(None, AUD, CallerHint::default())
        .await
        .unwrap();
    assert_valid_id_token(&emu, t.id_token.expose(), AUD, RUNNER).await;
    let grant = emu
        .state()
        .calls_of(CallKind::Token)
        .into_iter()
        .last()
        .unwrap();
    assert_eq!(
        grant.issued_fingerprint.as_deref(),
        Some(t.id_token.fingerprint().as_str())
    );
    assert_eq!(emu.state().count(CallKind::GenerateIdToken), 0);
    // every-token: the next one is another touch and another mint.
    let touches = agent.agent.touches();
    c.get_id_token(None, AUD, CallerHint::default())
        .await
        .unwrap();
    assert_eq!(agent.agent.touches(), touches + 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_credential_gets_an_id_token_only_for_its_own_client() {
    let emu = touchgate_tests::Emulator::start("127.0.0.1:0")
        .await
        .unwrap();
    let adc = emu.state().add_authorized_user("ada@example.com");
    let client_id = serde_json::from_str::<Value>(&adc).unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cfg = own_account_config(&emu.base_url(), "every-token");
    let agent = InProcess::start(&cfg, Arc::new(AutoTouch)).await;
    let mut c = agent.client().await;
    enrol_and_import(&mut c, &adc).await;
    let t = c
        .get_id_token(None, &client_id, CallerHint::default())
        .await
        .unwrap();
    assert_valid_id_token(&emu, t.id_token.expose(), &client_id, "ada@example.com").await;

    let calls = emu.state().count(CallKind::Token);
    let e = c
        .get_id_token(None, AUD, CallerHint::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Upstream), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("only with its own OAuth client") && msg.contains("service_account"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(
        emu.state().count(CallKind::Token),
        calls,
        "refused before a call"
    );
    agent.shutdown().await;
}

#[test]
fn the_cli_prints_an_id_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (emu, key_json) = rt.block_on(emulator());
    let mut agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "10m", ""));
    let o = agent.cli(&["enroll"]);
    assert!(o.status.success(), "enroll: {}", stderr(&o));
    let f = agent.dir.path().join("sa-key.json");
    std::fs::write(&f, &key_json).unwrap();
    let o = agent.cli(&["import", "--delete", f.to_str().unwrap()]);
    assert!(o.status.success(), "import: {}", stderr(&o));

    let o = agent.cli(&["token", "--id-token", "--audience", AUD]);
    assert!(o.status.success(), "token --id-token: {}", stderr(&o));
    let token = stdout(&o).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT alone on stdout");
    rt.block_on(assert_valid_id_token(&emu, &token, AUD, INFERENCE));

    // The touch signed the audience: the log verifies, and names it.
    let o = std::process::Command::new(bin("touchgate-agent"))
        .args(["audit", "verify"])
        .envs(agent.env())
        .output()
        .unwrap();
    assert!(o.status.success(), "audit verify: {}", stderr(&o));
    let log = std::fs::read_to_string(agent.state_dir().join("audit.jsonl")).unwrap();
    assert!(log.contains(&format!("\"audience\":\"{AUD}\"")), "{log}");
    assert!(!log.contains(&token));

    let o = agent.cli(&["token", "--id-token"]);
    assert!(!o.status.success(), "--id-token needs --audience");
    assert!(stderr(&o).contains("--audience"), "{}", stderr(&o));
    let o = agent.cli(&["token", "--audience", AUD]);
    assert!(!o.status.success(), "--audience needs --id-token");
    agent.stop();
}
