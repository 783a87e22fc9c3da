//! Locking: by command, when idle, when the key is pulled out, on SIGUSR1.
//! A locked agent drops its tokens, fails waiting callers with "agent locked",
//! and opens again only after a touch.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::hid::{enrolled_hid_agent, EmuKey};
use common::*;
use touchgate::{CallerHint, ErrorCode, Secret};
use touchgate_agent::clock::TestClock;
use touchgate_agent::key::soft::{AutoTouch, ScriptedTouch};
use touchgate_tests::ctap::authenticator::AuthenticatorOptions;

async fn ready(agent: &InProcess, key_json: &str) -> touchgate::Client {
    let mut c = agent.client().await;
    c.enroll(false, false, CallerHint::default()).await.unwrap();
    c.import("default", Secret::new(key_json), CallerHint::default())
        .await
        .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_lock_drops_tokens_and_unlock_needs_a_touch() {
    let (emu, key_json) = emulator().await;
    let clock = Arc::new(TestClock::new(SystemTime::now()));
    let cfg = config_text(&emu.base_url(), "auto", "10m", "idle_lock = \"30m\"");
    let agent = InProcess::start_with_clock(&cfg, Arc::new(AutoTouch), clock.clone()).await;
    let mut c = ready(&agent, &key_json).await;
    c.get_token(None, &[], CallerHint::default()).await.unwrap();
    assert_eq!(agent.agent.status().await.cached_tokens, 1);

    clock.advance(Duration::from_secs(31 * 60));
    agent.agent.check_idle();
    let st = c.status().await.unwrap();
    assert_eq!(st.locked.as_deref(), Some("idle for 30m"));
    assert_eq!(st.cached_tokens, 0, "the lock dropped the cached token");
    let err = c
        .get_token(None, &[], CallerHint::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Locked));
    assert!(err.to_string().contains("run touchgate unlock"), "{err}");

    // Back to the wall clock, which the emulator's tokens are dated by.
    clock.set(SystemTime::now());
    let touches = agent.agent.touches();
    c.unlock(CallerHint::default()).await.unwrap();
    assert_eq!(agent.agent.touches(), touches + 1, "unlock takes a touch");
    assert!(c.status().await.unwrap().locked.is_none());
    assert!(c.get_token(None, &[], CallerHint::default()).await.is_ok());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_waiting_for_a_touch_is_told_the_agent_locked() {
    let (emu, key_json) = emulator().await;
    let touch = Arc::new(ScriptedTouch::new());
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "");
    let agent = InProcess::start(&cfg, touch.clone()).await;
    touch.approve();
    touch.approve();
    let mut c = ready(&agent, &key_json).await;
    let asked = touch.requested();
    let waiting = tokio::spawn(async move { c.get_token(None, &[], CallerHint::default()).await });
    let t = touch.clone();
    tokio::task::spawn_blocking(move || {
        assert!(t.wait_requested(asked + 1, Duration::from_secs(10)))
    })
    .await
    .unwrap();
    agent.client().await.lock().await.unwrap();
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Locked), "{err}");
    assert_eq!(agent.agent.mints(), 0);
    agent.shutdown().await;
}

/// A lock while Google is still minting: the caller is told the agent locked,
/// the token is neither handed out nor cached, and the window the touch opened
/// is gone (the next token after unlock needs its own touch).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_during_the_upstream_mint_delivers_nothing() {
    use touchgate_tests::emulator::{CallKind, Fault, FaultRule};
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "10m", "");
    let agent = InProcess::start(&cfg, Arc::new(AutoTouch)).await;
    let _ = ready(&agent, &key_json).await;
    emu.state().inject(FaultRule {
        endpoint: CallKind::GenerateAccessToken,
        // Within the mint's 20 s deadline: without the lock, the token would come.
        fault: Fault::Slow(Duration::from_secs(5)),
        times: 1,
    });
    let mut c = agent.client().await;
    let waiting = tokio::spawn(async move { c.get_token(None, &[], CallerHint::default()).await });
    // The slow call is in once its fault is used up.
    while !emu.state().pending_faults().is_empty() {
        tokio::task::yield_now().await;
    }
    let touches = agent.agent.touches();
    agent.client().await.lock().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the lock did not end the pending mint")
        .unwrap();
    let err = r.expect_err("a token minted across a lock was handed out");
    assert_eq!(err.code(), Some(ErrorCode::Locked), "{err}");
    assert_eq!(agent.agent.status().await.cached_tokens, 0);

    let mut c = agent.client().await;
    c.unlock(CallerHint::default()).await.unwrap();
    assert_eq!(agent.agent.touches(), touches + 1, "unlock takes a touch");
    let t = c.get_token(None, &[], CallerHint::default()).await.unwrap();
    assert!(!t.from_cache);
    assert_eq!(
        agent.agent.touches(),
        touches + 2,
        "no window survived the lock: the token needs its own touch"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulling_the_key_out_locks_and_plugging_it_back_unlocks_with_a_touch() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (key, agent) = enrolled_hid_agent(&emu.base_url(), &key_json, dir.path(), "10m");
    assert!(agent.cli(&["token"]).status.success());
    assert!(!stdout(&agent.cli(&["status"])).contains("locked:"));

    key.device.unplug();
    drop(key);
    let st = stdout(&agent.cli(&["status"]));
    assert!(st.contains("locked: security key removed"), "{st}");
    assert_one_line_error(
        &agent.cli(&["token"]),
        "the agent is locked (security key removed)",
    );

    let key = EmuKey::start(
        dir.path(),
        "k1",
        Arc::new(AutoTouch),
        AuthenticatorOptions::default(),
    );
    let before = key.auth.touches_requested();
    let o = agent.cli(&["unlock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(key.auth.touches_requested(), before + 1);
    assert!(agent.cli(&["token"]).status.success());
}

#[test]
fn sigusr1_locks_like_ssh_agent() {
    let agent = AgentProc::start(&config_text(
        "http://127.0.0.1:9",
        "auto",
        "every-token",
        "",
    ));
    let pid = agent.child.as_ref().unwrap().id();
    std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    // The signal is handled asynchronously: ask until the agent says it is locked.
    let locked = (0..200).any(|_| stdout(&agent.cli(&["status"])).contains("locked: SIGUSR1"));
    assert!(locked, "{}", agent.stderr());
    assert_one_line_error(&agent.cli(&["token"]), "the agent is locked (SIGUSR1)");
}
