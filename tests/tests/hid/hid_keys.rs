//! Real-key features over the emulated CTAPHID key and the unmodified
//! ctap-hid-fido2: several keys, PIN through a scripted pinentry, built-in UV,
//! credProtect for --uv enrolments, suspect keys, key operations that need an
//! enrolled key's touch, key-model allow-list, keys without hmac-secret.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::hid::{start_hid_agent as start_agent, EmuKey};
use common::*;
use touchgate_agent::key::soft::{AutoTouch, ScriptedTouch};
use touchgate_tests::ctap::authenticator::AuthenticatorOptions;

fn emu_key(dir: &Path, name: &str, options: AuthenticatorOptions) -> EmuKey {
    EmuKey::start(dir, name, Arc::new(AutoTouch), options)
}

/// A key that verifies its user itself (a fingerprint reader): no pinentry.
fn built_in_uv() -> AuthenticatorOptions {
    AuthenticatorOptions {
        built_in_uv: true,
        ..Default::default()
    }
}

fn hid_config(base_url: &str, devices: &[PathBuf], extra_key: &str) -> String {
    common::hid::hid_config(base_url, devices, "every-token", "10s", extra_key)
}

/// A pinentry program that answers with the PIN in `pin_file` (Assuan, as pinentry speaks it).
fn scripted_pinentry(dir: &Path, pin_file: &Path) -> PathBuf {
    let prog = dir.join("pinentry-scripted");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\necho 'OK ready'\nwhile read -r cmd rest; do\n  case \"$cmd\" in\n    GETPIN) echo \"D $(cat '{}')\"; echo OK;;\n    BYE) echo OK; exit 0;;\n    *) echo OK;;\n  esac\ndone\n",
            pin_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    prog
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_keys_either_unseals_and_the_last_cannot_be_removed() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (dir.path().join("k1.hidraw"), dir.path().join("k2.hidraw"));
    let k1 = emu_key(dir.path(), "k1", AuthenticatorOptions::default());
    let agent = start_agent(&hid_config(&emu.base_url(), &[p1.clone(), p2.clone()], ""));
    agent.enrol_and_import(&key_json);

    // Plug in the backup key and add it: a touch on k1, two on k2.
    let k2 = emu_key(dir.path(), "k2", AuthenticatorOptions::default());
    let (t1, t2) = (k1.auth.touches_requested(), k2.auth.touches_requested());
    agent.ok(&["keys", "add"]);
    assert_eq!(
        k1.auth.touches_requested(),
        t1 + 1,
        "approved on the enrolled key"
    );
    assert_eq!(
        k2.auth.touches_requested(),
        t2 + 2,
        "created and wrapped on the new key"
    );
    let list = agent.ok(&["keys", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    let ids: Vec<String> = list
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();

    // Unplug k1: k2 alone unseals.
    k1.device.unplug();
    let before = k2.auth.touches_requested();
    let token = agent.ok(&["token"]);
    assert!(token.starts_with("ya29."));
    assert_eq!(k2.auth.touches_requested(), before + 1);

    agent.ok(&["keys", "remove", &ids[0]]);
    let o = agent.cli(&["keys", "remove", &ids[1]]);
    assert_one_line_error(&o, "last enrolled key");
    assert_eq!(agent.ok(&["keys", "list"]).lines().count(), 1);
    drop(k2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pin_from_a_scripted_pinentry_and_wrong_pin_reports_tries_left() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let key = emu_key(
        dir.path(),
        "k1",
        AuthenticatorOptions {
            pin: Some("4321".into()),
            ..Default::default()
        },
    );
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "4321").unwrap();
    let prog = scripted_pinentry(dir.path(), &pin_file);
    let cfg = hid_config(
        &emu.base_url(),
        &[key.device.path().to_path_buf()],
        &format!("pinentry = \"{}\"", prog.display()),
    )
    .replace(
        "touch = \"every-token\"",
        "touch = \"every-token\"\nuser_verification = true",
    );
    let agent = start_agent(&cfg);
    agent.ok(&["enroll", "--uv"]);
    agent.import(&key_json);
    assert!(agent.ok(&["token"]).starts_with("ya29."));
    assert_eq!(key.auth.pin_retries(), 8);

    std::fs::write(&pin_file, "0000").unwrap();
    let o = agent.cli(&["token"]);
    assert_one_line_error(&o, "wrong PIN for the security key (7 tries left)");
    assert_eq!(key.auth.pin_retries(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn built_in_user_verification_needs_no_pinentry() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let key = emu_key(dir.path(), "k1", built_in_uv());
    let cfg = hid_config(
        &emu.base_url(),
        &[key.device.path().to_path_buf()],
        "pinentry = \"/nonexistent/pinentry\"",
    );
    let agent = start_agent(&cfg);
    agent.ok(&["enroll", "--uv"]);
    agent.import(&key_json);
    assert!(agent.ok(&["token"]).starts_with("ya29."));
}

/// The credential ids enrolled in the agent's vault.
fn enrolled_ids(agent: &AgentProc) -> Vec<Vec<u8>> {
    let vault =
        touchgate_agent::vault::VaultFile::load(&agent.state_dir().join("vault.json")).unwrap();
    vault
        .enrolments
        .iter()
        .map(|e| e.credential_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_uv_enrolment_makes_a_credential_the_key_opens_only_with_uv() {
    use touchgate_agent::key::{GetAssertionRequest, KeyError, SecurityKey, RP_ID};
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let key = emu_key(dir.path(), "k1", built_in_uv());
    let agent = start_agent(&hid_config(&emu.base_url(), &[key.path()], ""));
    agent.ok(&["enroll", "--uv"]);
    agent.import(&key_json);
    assert!(agent.ok(&["token"]).starts_with("ya29."));

    // Another process of this user that can open the key asks for the
    // hmac-secret with our credential id, without user verification.
    let ids = enrolled_ids(&agent);
    let ask = |uv: bool| {
        key.auth.key().get_assertion(&GetAssertionRequest {
            rp_id: RP_ID.into(),
            challenge: [7; 32],
            allow: ids.clone(),
            hmac_salt: Some([9; 32]),
            uv,
            pin: None,
            up: true,
        })
    };
    assert_eq!(
        ask(false).map(|_| ()),
        Err(KeyError::NoCredentials),
        "credProtect userVerificationRequired: no answer without UV"
    );
    assert!(ask(true).is_ok(), "with UV the key answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspect_key_stays_refused_and_cannot_vouch_for_itself() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let key = emu_key(dir.path(), "k1", AuthenticatorOptions::default());
    let agent = start_agent(&hid_config(
        &emu.base_url(),
        &[key.device.path().to_path_buf()],
        "",
    ));
    agent.enrol_and_import(&key_json);
    agent.ok(&["token"]);
    key.auth.set_sign_count(1).unwrap();
    assert_one_line_error(&agent.cli(&["token"]), "marked suspect");
    let list = agent.ok(&["keys", "list"]);
    assert!(list.contains("SUSPECT"), "{list}");
    let id = list.split_whitespace().next().unwrap().to_owned();
    // Even a key whose counter is fine again is refused while suspect.
    key.auth.set_sign_count(1000).unwrap();
    assert_one_line_error(
        &agent.cli(&["token"]),
        "every enrolled key is marked suspect",
    );
    // Nor can it vouch for itself: trusting needs another, trusted key.
    let o = agent.cli(&["keys", "trust", &id]);
    assert_one_line_error(&o, "so none can approve anything");
    assert_one_line_error(&o, "vault.json aside");
    assert!(agent.ok(&["keys", "list"]).contains("SUSPECT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_models_outside_the_allow_list_and_keys_without_hmac_secret_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = emu_key(dir.path(), "k1", AuthenticatorOptions::default());
    let cfg = hid_config(
        "http://127.0.0.1:9",
        &[key.device.path().to_path_buf()],
        "allowed_aaguids = [\"00000000-0000-0000-0000-000000000001\"]",
    );
    let agent = start_agent(&cfg);
    assert_one_line_error(&agent.cli(&["enroll"]), "is not in key.allowed_aaguids");

    let plain = emu_key(
        dir.path(),
        "plain",
        AuthenticatorOptions {
            hmac_secret: false,
            ..Default::default()
        },
    );
    let agent = start_agent(&hid_config(
        "http://127.0.0.1:9",
        &[plain.device.path().to_path_buf()],
        "",
    ));
    let o = agent.cli(&["enroll"]);
    let line = assert_one_line_error(&o, "does not support the hmac-secret extension");
    assert!(
        line.contains(&plain.device.path().display().to_string()),
        "names the key: {line}"
    );
}

/// An emulated key "name" in `dir` whose touches the test gives (or refuses).
fn scripted_key(dir: &Path, name: &str) -> (EmuKey, Arc<ScriptedTouch>) {
    let touch = Arc::new(ScriptedTouch::new());
    let key = EmuKey::start(dir, name, touch.clone(), AuthenticatorOptions::default());
    (key, touch)
}

/// The credential ids `touchgate keys list` shows, and whether each is suspect.
fn listed(agent: &AgentProc) -> Vec<(String, bool)> {
    agent
        .ok(&["keys", "list"])
        .lines()
        .map(|l| {
            let id = l.split_whitespace().next().unwrap().to_owned();
            (id, l.contains("SUSPECT"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trusting_and_removing_a_key_need_a_touch_on_a_trusted_enrolled_key() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (dir.path().join("k1.hidraw"), dir.path().join("k2.hidraw"));
    let (k1, t1) = scripted_key(dir.path(), "k1");
    let agent = start_agent(&hid_config(&emu.base_url(), &[p1, p2], ""));
    t1.approve();
    t1.approve();
    agent.enrol_and_import(&key_json);
    let (_k2, t2) = scripted_key(dir.path(), "k2");
    t1.approve();
    t2.approve();
    t2.approve();
    agent.ok(&["keys", "add"]);

    // k1's counter goes back: marked suspect.
    k1.auth.set_sign_count(1).unwrap();
    t1.approve();
    assert_one_line_error(&agent.cli(&["token"]), "marked suspect");
    let keys = listed(&agent);
    assert_eq!(keys.iter().filter(|(_, s)| *s).count(), 1, "{keys:?}");
    let (suspect, trusted) = (keys[0].0.clone(), keys[1].0.clone());
    k1.auth.set_sign_count(1000).unwrap();

    // A process of this user clears the mark: it needs a touch on the trusted key.
    let asked = t2.requested();
    t2.deny();
    assert_one_line_error(
        &agent.cli(&["keys", "trust", &suspect]),
        "the touch was refused",
    );
    assert_eq!(t2.requested(), asked + 1, "the trusted key was asked");
    assert!(listed(&agent)[0].1, "still suspect");
    t2.approve();
    agent.ok(&["keys", "trust", &suspect]);
    assert!(listed(&agent).iter().all(|(_, s)| !s), "trusted again");

    // Removing a key: refused without the touch, done with it.
    let asked = t1.requested();
    t1.deny();
    assert_one_line_error(
        &agent.cli(&["keys", "remove", &trusted]),
        "the touch was refused",
    );
    assert_eq!(t1.requested(), asked + 1, "an enrolled key was asked");
    assert_eq!(listed(&agent).len(), 2, "nothing removed");
    t1.approve();
    agent.ok(&["keys", "remove", &trusted]);
    assert_eq!(listed(&agent).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrol_force_needs_the_enrolled_key_and_keeps_the_old_vault() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p3) = (dir.path().join("k1.hidraw"), dir.path().join("k3.hidraw"));
    let (k1, t1) = scripted_key(dir.path(), "k1");
    let agent = start_agent(&hid_config(&emu.base_url(), &[p1, p3], ""));
    t1.approve();
    t1.approve();
    agent.enrol_and_import(&key_json);
    let vault = agent.state_dir().join("vault.json");
    let before = std::fs::read(&vault).unwrap();

    // Someone else's key (or a process of this user with any key) starts over.
    k1.device.unplug();
    drop(k1);
    let (k3, t3) = scripted_key(dir.path(), "k3");
    t3.approve();
    t3.approve();
    // Only the enrolled key may approve, and it is not plugged in.
    assert_one_line_error(
        &agent.cli(&["enroll", "--force"]),
        "cannot open the security key",
    );
    assert_eq!(t3.requested(), 0, "no credential made on the other key");
    assert_eq!(
        std::fs::read(&vault).unwrap(),
        before,
        "the vault is untouched"
    );

    // With the enrolled key: a new vault, the old one kept beside it.
    k3.device.unplug();
    let (_k1, t1) = scripted_key(dir.path(), "k1");
    t1.approve();
    t1.approve();
    let out = agent.ok(&["enroll", "--force"]);
    let backup = out
        .split_whitespace()
        .find(|w| w.contains("vault.json.") && w.contains("bak"))
        .map(|w| PathBuf::from(w.trim_end_matches([',', '.', ')', ';'])))
        .unwrap_or_else(|| panic!("the output names the backup: {out}"));
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        before,
        "{}",
        backup.display()
    );
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{mode:o}"), "600");
    assert_ne!(std::fs::read(&vault).unwrap(), before, "a new vault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_uv_vault_takes_a_backup_key_though_its_credentials_hide_from_the_probe() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let uv = built_in_uv();
    let (p1, p2) = (dir.path().join("k1.hidraw"), dir.path().join("k2.hidraw"));
    let k1 = emu_key(dir.path(), "k1", uv.clone());
    let mut agent = start_agent(&hid_config(&emu.base_url(), &[p1, p2], ""));
    agent.ok(&["enroll", "--uv"]);
    agent.import(&key_json);
    // Both plugged in: the agent knows which one it enrolled.
    let k2 = emu_key(dir.path(), "k2", uv);
    agent.ok(&["keys", "add"]);
    assert_eq!(listed(&agent).len(), 2);
    assert!(agent.ok(&["token"]).starts_with("ya29."));

    // A new agent has not seen either answer: with both in, it cannot tell.
    agent.stop();
    agent.child = Some(agent.spawn_agent("debug"));
    assert_one_line_error(
        &agent.cli(&["token"]),
        "leave only the enrolled key plugged in",
    );
    k1.device.unplug();
    assert!(
        agent.ok(&["token"]).starts_with("ya29."),
        "the backup alone"
    );
    drop(k2);
}
