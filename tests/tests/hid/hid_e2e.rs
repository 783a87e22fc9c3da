//! The agent with `backend = "hid"`: the shipped agent binary drives the
//! unmodified ctap-hid-fido2 over an emulated CTAPHID key (a SOCK_SEQPACKET
//! socket opened as a hidraw node through the LD_PRELOAD interposer).

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hid::{enrolled_hid_agent, hid_config, start_hid_agent as start_agent, EmuKey};
use common::*;
use touchgate_agent::key::soft::ScriptedTouch;
use touchgate_tests::ctap::authenticator::AuthenticatorOptions;

fn emu_key(
    dir: &std::path::Path,
    name: &str,
    touch: Arc<dyn touchgate_agent::key::soft::TouchSource>,
    options: AuthenticatorOptions,
) -> EmuKey {
    EmuKey::start(dir, name, touch, options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrol_import_token_and_window_reuse_over_hid() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (key, agent) = enrolled_hid_agent(&emu.base_url(), &key_json, dir.path(), "10m");
    let touches = key.auth.touches_requested();

    let first = agent.cli(&["token"]);
    assert!(
        first.status.success(),
        "{}\n{}",
        stderr(&first),
        agent.stderr()
    );
    let second = agent.cli(&["token"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        stdout(&first),
        stdout(&second),
        "the window reuses the token"
    );
    assert_eq!(
        key.auth.touches_requested(),
        touches + 1,
        "one touch for two tokens"
    );

    let token = stdout(&first).trim().to_owned();
    let url = format!(
        "{}/v1/projects/touchgate-test/locations/us-central1/models",
        emu.base_url()
    );
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let status = stdout(&agent.cli(&["status"]));
    assert!(status.contains("key backend: hid"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_touch_times_out_cancels_on_the_device_and_the_agent_lives() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let touch = Arc::new(ScriptedTouch::new());
    let key = emu_key(
        dir.path(),
        "k1",
        touch.clone(),
        AuthenticatorOptions::default(),
    );
    let agent = start_agent(&hid_config(
        &emu.base_url(),
        &[key.path()],
        "every-token",
        "2s",
        "",
    ));
    touch.approve();
    touch.approve();
    agent.enrol_and_import(&key_json);
    let cancels = key.device.stats().cancels;

    let started = Instant::now();
    let o = agent.cli(&["token"]);
    let took = started.elapsed();
    assert_one_line_error(&o, "no touch on the security key within 2s");
    assert!(
        took < Duration::from_secs(4),
        "timeout + 2 s at most, took {took:?}"
    );
    assert!(
        key.device.stats().cancels > cancels,
        "the agent cancelled on the device"
    );
    assert!(
        agent.cli(&["status"]).status.success(),
        "the agent is alive"
    );

    // The next touch works: nothing was left pending on the key.
    touch.approve();
    let o = agent.cli(&["token"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), agent.stderr());
}

/// Enrolment goes over the agent's own CTAPHID channel: a touch that never
/// comes is cancelled there too, and the key is free for the next enrolment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_touch_at_enrolment_times_out_and_cancels_on_the_device() {
    let (emu, _key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let touch = Arc::new(ScriptedTouch::new());
    let key = emu_key(
        dir.path(),
        "k1",
        touch.clone(),
        AuthenticatorOptions::default(),
    );
    let agent = start_agent(&hid_config(
        &emu.base_url(),
        &[key.path()],
        "every-token",
        "2s",
        "",
    ));
    let cancels = key.device.stats().cancels;
    let o = agent.cli(&["enroll"]);
    assert_one_line_error(&o, "no touch on the security key within 2s");
    assert!(
        key.device.stats().cancels > cancels,
        "the agent cancelled on the device"
    );
    touch.approve();
    let o = agent.cli(&["enroll"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), agent.stderr());
}

/// ctap-hid-fido2 decodes getAssertion itself: an authData written twice
/// shows as two hmac-secret outputs, and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_assertion_with_authdata_twice_is_refused() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let touch = Arc::new(ScriptedTouch::new());
    let key = emu_key(
        dir.path(),
        "k1",
        touch.clone(),
        AuthenticatorOptions {
            duplicate_assertion_auth_data: true,
            ..Default::default()
        },
    );
    let agent = start_agent(&hid_config(
        &emu.base_url(),
        &[key.path()],
        "every-token",
        "10s",
        "",
    ));
    touch.approve();
    touch.approve();
    // makeCredential is well formed; the first hmac-secret assertion seals the vault.
    agent.ok(&["enroll"]);
    assert_one_line_error(
        &agent.cli_stdin(&["import", "-"], Some(&key_json)),
        "the security key's getAssertion response carries 2 hmac-secret outputs",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_pulled_out_mid_touch_is_a_clear_error_and_the_agent_lives() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let touch = Arc::new(ScriptedTouch::new());
    let key = emu_key(
        dir.path(),
        "k1",
        touch.clone(),
        AuthenticatorOptions::default(),
    );
    let agent = start_agent(&hid_config(
        &emu.base_url(),
        &[key.path()],
        "every-token",
        "20s",
        "",
    ));
    touch.approve();
    touch.approve();
    agent.enrol_and_import(&key_json);
    let asked = touch.requested();

    let agent = Arc::new(agent);
    let a = agent.clone();
    let ask = std::thread::spawn(move || a.cli(&["token"]));
    assert!(
        touch.wait_requested(asked + 1, Duration::from_secs(10)),
        "the key waits for a touch"
    );
    key.device.unplug();
    let o = ask.join().unwrap();
    assert_one_line_error(&o, "stopped answering");
    assert!(
        agent.cli(&["status"]).status.success(),
        "the agent is alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cloned_key_whose_counter_goes_back_is_refused_and_alerted() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (key, agent) = enrolled_hid_agent(&emu.base_url(), &key_json, dir.path(), "every-token");
    assert!(agent.cli(&["token"]).status.success());

    // A clone made earlier answers with an older counter.
    key.auth.set_sign_count(1).unwrap();
    let o = agent.cli(&["token"]);
    assert_one_line_error(&o, "cloned");
    assert!(agent.stderr().contains("ALERT"), "{}", agent.stderr());
}
