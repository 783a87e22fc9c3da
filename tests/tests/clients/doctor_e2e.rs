//! `touchgate doctor`: one line per check, exit status 10 on a failure, a fix on
//! every line that is not ok, and never a secret in its output.

use crate::common;
use crate::shim_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use shim_common::*;

const START: &str =
    "start the agent: eval \"$(touchgate-agent)\" or systemctl --user start touchgate-agent.socket";

/// A private HOME and gcloud config dir.
struct UserDirs {
    dir: tempfile::TempDir,
}

impl UserDirs {
    fn new() -> UserDirs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("gcloud")).unwrap();
        UserDirs { dir }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn adc(&self) -> PathBuf {
        self.p("gcloud/application_default_credentials.json")
    }
}

/// `touchgate ARGS` with the user dirs of `u`, the agent socket `env` and the
/// shim address `shim`; nothing of the caller's environment leaks in.
fn touchgate(env: &[(&'static str, PathBuf)], u: &UserDirs, shim: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin("touchgate"));
    c.args(args)
        .envs(env.iter().cloned())
        .env("HOME", u.p("home"))
        .env("CLOUDSDK_CONFIG", u.p("gcloud"))
        .env("TOUCHGATE_SHIM_ADDR", shim);
    for k in [
        "XDG_STATE_HOME",
        "XDG_CONFIG_HOME",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GCE_METADATA_ROOT",
        "GCE_METADATA_HOST",
        "GCE_METADATA_IP",
        "CLOUDSDK_ACTIVE_CONFIG_NAME",
    ] {
        c.env_remove(k);
    }
    c
}

fn lines(o: &Output) -> Vec<String> {
    stdout(o).lines().map(str::to_owned).collect()
}

fn assert_line(o: &Output, want: &str) {
    assert!(
        lines(o).iter().any(|l| l == want),
        "no line {want:?} in:\n{}{}",
        stdout(o),
        stderr(o)
    );
}

/// An agent over an emulated USB security key (doctor FAILs on the software
/// key), enrolled and holding `key` as "default".
struct KeyedAgent {
    agent: AgentProc,
    _key: hid::EmuKey,
    _key_dir: tempfile::TempDir,
}

impl std::ops::Deref for KeyedAgent {
    type Target = AgentProc;
    fn deref(&self) -> &AgentProc {
        &self.agent
    }
}

fn agent_with_key(emu_url: &str, key: &str) -> KeyedAgent {
    let key_dir = tempfile::tempdir().unwrap();
    let (emu_key, agent) = hid::enrolled_hid_agent(emu_url, key, key_dir.path(), "every-token");
    KeyedAgent {
        agent,
        _key: emu_key,
        _key_dir: key_dir,
    }
}

/// The `ok` lines of an agent that answers, is enrolled, holds "default" and is unlocked.
fn agent_ok_lines(agent: &AgentProc, out: &[String]) {
    let sock = agent.socket.display();
    let want = [
        format!(
            "ok   agent socket {sock} (TOUCHGATE_SOCK): directory 0700, socket 0600, both yours"
        ),
        format!(
            "ok   agent answers: touchgate-agent {}, protocol {}",
            env!("CARGO_PKG_VERSION"),
            touchgate::PROTOCOL_VERSION
        ),
    ];
    assert_eq!(out[..2], want, "{out:#?}");
    assert_eq!(
        out[2], "ok   key backend hid: the secret never leaves the key",
        "{out:#?}"
    );
    assert!(out[3].starts_with("ok   key enrolled: "), "{out:#?}");
    assert_eq!(out[4], "ok   sealed credentials: default");
}

/// A 0700 `run/` directory in `u`; the socket path in it.
fn private_run_dir(u: &UserDirs) -> PathBuf {
    std::fs::create_dir(u.p("run")).unwrap();
    std::fs::set_permissions(u.p("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
    u.p("run/agent.sock")
}

/// `touchgate doctor` against the socket path `sock`, no shim.
fn doctor_without_agent(u: &UserDirs, sock: &Path) -> Output {
    touchgate(
        &[("TOUCHGATE_SOCK", sock.to_owned())],
        u,
        "127.0.0.1:9",
        &["doctor"],
    )
    .output()
    .unwrap()
}

#[test]
fn no_agent_fails_the_socket_line_with_the_start_hint() {
    let u = UserDirs::new();
    let sock = private_run_dir(&u);
    let o = doctor_without_agent(&u, &sock);
    assert_eq!(
        o.status.code(),
        Some(touchgate::Exit::DoctorFailed.code() as i32),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(
        lines(&o)[0],
        format!(
            "FAIL agent socket {} (TOUCHGATE_SOCK): no such file: no agent is running — {START}",
            sock.display()
        )
    );
    // Nothing points at the shim here: its absence is only a warning.
    assert_line(
        &o,
        "warn shim at 127.0.0.1:9 (TOUCHGATE_SHIM_ADDR): nothing listens there; nothing set up here uses it (touchgate exec starts its own) — start it: touchgate-shim serve",
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_complete_setup_is_all_ok() {
    let (emu, key) = emulator().await;
    let agent = agent_with_key(&emu.base_url(), &key);
    let shim = ShimProc::start(&agent.socket, &[]);
    let u = UserDirs::new();
    let env = agent.env();
    for target in ["gcloud", "adc"] {
        let o = run(touchgate(
            &env,
            &u,
            &shim.addr,
            &["setup", target, "--profile", "inference"],
        ))
        .await;
        assert!(o.status.success(), "setup {target}: {}", stderr(&o));
    }
    // What `gcloud config configurations activate touchgate` writes.
    std::fs::write(u.p("gcloud/active_config"), "touchgate").unwrap();

    let o = run(touchgate(&env, &u, &shim.addr, &["doctor"])).await;
    let out = lines(&o);
    println!("{}", stdout(&o));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    agent_ok_lines(&agent, &out);
    let addr = &shim.addr.clone();
    let cred = u.p("home/.config/touchgate/adc-inference.json");
    let want = [
        "ok   agent unlocked".to_owned(),
        "ok   profile inference (default): credential default, project touchgate-test".to_owned(),
        format!("ok   shim at {addr} (TOUCHGATE_SHIM_ADDR) answers: project touchgate-test"),
        format!(
            "ok   gcloud configuration credential file {}: the shim's external_account credential (profile inference, shim {addr})",
            cred.display()
        ),
        format!(
            "ok   gcloud configuration touchgate ({}): active",
            u.p("gcloud/configurations/config_touchgate").display()
        ),
        format!(
            "ok   ADC file {}: the shim's external_account credential (profile inference, shim {addr})",
            u.adc().display()
        ),
        "ok   GOOGLE_APPLICATION_CREDENTIALS not set (the ADC file is used)".to_owned(),
        "ok   GCE_METADATA_ROOT/HOST/IP not set (metadata route unused; touchgate exec sets them per command)".to_owned(),
    ];
    assert_eq!(out[5..], want, "{out:#?}");

    // The metadata route for gcloud, and gcloud's remembered "not on GCE".
    let gce = u.p("gcloud/gce");
    for cached in [None, Some("False")] {
        if let Some(text) = cached {
            std::fs::write(&gce, text).unwrap();
        }
        let mut cmd = touchgate(&env, &u, &shim.addr, &["doctor"]);
        cmd.env("GCE_METADATA_ROOT", &shim.addr);
        let o = run(cmd).await;
        assert_line(
            &o,
            &format!("ok   GCE_METADATA_ROOT={addr} points at the shim"),
        );
        let warned = format!(
            "warn gcloud's on-GCE cache {}: it says \"not on GCE\", so gcloud skips the metadata server for up to 10 minutes — rm {}",
            gce.display(),
            gce.display()
        );
        assert_eq!(
            lines(&o).contains(&warned),
            cached.is_some(),
            "{}",
            stdout(&o)
        );
    }
    std::fs::remove_file(&gce).unwrap();

    // A stored account in the active configuration wins over the metadata server.
    let default = u.p("gcloud/configurations/config_default");
    std::fs::write(&default, "[core]\naccount = someone@example.com\n").unwrap();
    let mut cmd = touchgate(&env, &u, &shim.addr, &["doctor"]);
    cmd.env("GCE_METADATA_ROOT", &shim.addr)
        .env("CLOUDSDK_ACTIVE_CONFIG_NAME", "default");
    let o = run(cmd).await;
    assert_line(
        &o,
        &format!(
            "warn gcloud configuration default ({}): its stored account someone@example.com is used before the metadata server — use the touchgate configuration (touchgate setup gcloud), or another CLOUDSDK_CONFIG for the metadata route",
            default.display()
        ),
    );
    let mut cmd = touchgate(&env, &u, &shim.addr, &["doctor"]);
    cmd.env("GCE_METADATA_ROOT", &shim.addr);
    let o = run(cmd).await;
    assert!(
        !stdout(&o).contains("stored account"),
        "the active touchgate configuration has none: {}",
        stdout(&o)
    );

    // The same files with the shim stopped: they rely on it, so that is a failure.
    drop(shim);
    let o = run(touchgate(&env, &u, addr, &["doctor"])).await;
    assert_eq!(
        o.status.code(),
        Some(touchgate::Exit::DoctorFailed.code() as i32),
        "{}",
        stdout(&o)
    );
    assert_line(
        &o,
        &format!(
            "FAIL shim at {addr} (TOUCHGATE_SHIM_ADDR): nothing listens there — start it: touchgate-shim serve"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plaintext_key_is_named_and_never_printed() {
    let (emu, key) = emulator().await;
    let agent = agent_with_key(&emu.base_url(), &key);
    let u = UserDirs::new();
    std::fs::write(u.adc(), &key).unwrap();
    let other = u.p("home/sa-key.json");
    std::fs::write(&other, &key).unwrap();
    let private_key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let private_key = private_key["private_key"].as_str().unwrap().to_owned();

    let mut cmd = touchgate(&agent.env(), &u, "127.0.0.1:9", &["doctor"]);
    cmd.env("GOOGLE_APPLICATION_CREDENTIALS", &other);
    let o = run(cmd).await;
    println!("{}", stdout(&o));
    for (what, file) in [
        ("ADC file", u.adc()),
        ("GOOGLE_APPLICATION_CREDENTIALS", other.clone()),
    ] {
        assert_line(
            &o,
            &format!(
                "warn {what} {f}: a service_account credential: a long-lived secret in plain text — touchgate import {f}, then touchgate setup adc",
                f = file.display()
            ),
        );
    }
    let all = format!("{}{}", stdout(&o), stderr(&o));
    for secret in private_key.lines().filter(|l| l.len() > 20) {
        assert!(!all.contains(secret), "the private key leaked:\n{all}");
    }
    assert!(!all.contains("PRIVATE KEY"), "{all}");
    // Warnings and a shim nobody relies on: no failure.
    assert_eq!(o.status.code(), Some(0), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_software_key_fails_and_an_unattested_aaguid_list_warns() {
    let (emu, key) = emulator().await;
    let agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "every-token", ""));
    agent.enrol_and_import(&key);
    let u = UserDirs::new();
    let o = run(touchgate(&agent.env(), &u, "127.0.0.1:9", &["doctor"])).await;
    let soft_key = agent.dir.path().join("state/soft-key.json");
    let fix = format!(
        "set backend = \"hid\" in [key] of {}, restart the agent, touchgate enroll",
        agent.dir.path().join("config.toml").display()
    );
    assert_eq!(
        lines(&o)[2],
        format!(
            "FAIL key backend soft: the software key's secret lies in plain text in {}: a copy of the state dir mints tokens without a touch — {fix}",
            soft_key.display()
        ),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        o.status.code(),
        Some(touchgate::Exit::DoctorFailed.code() as i32),
        "{}",
        stdout(&o)
    );

    // An AAGUID allow-list without attestation roots trusts what the key says of itself.
    let key_dir = tempfile::tempdir().unwrap();
    let emu_key = hid::EmuKey::start(
        key_dir.path(),
        "k1",
        std::sync::Arc::new(touchgate_agent::key::soft::AutoTouch),
        Default::default(),
    );
    let agent = hid::start_hid_agent(&hid::hid_config(
        &emu.base_url(),
        &[emu_key.path()],
        "every-token",
        "10s",
        "allowed_aaguids = [\"00000000-0000-0000-0000-000000000000\"]",
    ));
    let o = run(touchgate(&agent.env(), &u, "127.0.0.1:9", &["doctor"])).await;
    assert_line(
        &o,
        "warn key.allowed_aaguids: set without key.attestation_roots: a key's model is only what the key says of itself — add the vendor's attestation root to key.attestation_roots",
    );
    assert_line(&o, "ok   key backend hid: the secret never leaves the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_agent_is_a_warning_with_the_unlock_hint() {
    let (emu, key) = emulator().await;
    let agent = agent_with_key(&emu.base_url(), &key);
    agent.ok(&["lock"]);
    let u = UserDirs::new();
    let o = run(touchgate(&agent.env(), &u, "127.0.0.1:9", &["doctor"])).await;
    agent_ok_lines(&agent, &lines(&o));
    assert_eq!(
        lines(&o)[5],
        "warn agent locked: locked by touchgate lock — touchgate unlock"
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_socket_directory_others_can_enter_fails_with_chmod() {
    let (emu, key) = emulator().await;
    let agent = agent_with_key(&emu.base_url(), &key);
    let dir: &Path = agent.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let u = UserDirs::new();
    let o = run(touchgate(&agent.env(), &u, "127.0.0.1:9", &["doctor"])).await;
    assert_eq!(
        o.status.code(),
        Some(touchgate::Exit::DoctorFailed.code() as i32),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        lines(&o)[0],
        format!(
            "FAIL agent socket directory {d}: mode 0755, should be 0700 (other users can reach the socket) — chmod 700 {d}",
            d = dir.display()
        )
    );
    // Nothing is sent to a socket others could have put there.
    assert_eq!(
        lines(&o)[1],
        format!(
            "FAIL agent at {}: not asked: its directory is not yours alone (above) — fix the directory as said above",
            agent.socket.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_profile_fails() {
    let (emu, key) = emulator().await;
    let agent = agent_with_key(&emu.base_url(), &key);
    let u = UserDirs::new();
    let o = run(touchgate(
        &agent.env(),
        &u,
        "127.0.0.1:9",
        &["doctor", "--profile", "nope"],
    ))
    .await;
    assert_eq!(
        o.status.code(),
        Some(touchgate::Exit::DoctorFailed.code() as i32),
        "{}",
        stdout(&o)
    );
    assert!(
        lines(&o)[6].starts_with(
            "FAIL profile nope: the agent has no such profile — add [profiles.nope] to "
        ),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_stale_socket_file_gets_its_own_line() {
    let u = UserDirs::new();
    let sock = private_run_dir(&u);
    // A socket file nobody listens on any more (an agent that was killed).
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = doctor_without_agent(&u, &sock);
    assert_eq!(
        o.status.code(),
        Some(touchgate::Exit::DoctorFailed.code() as i32),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        lines(&o)[..2],
        [
            format!(
                "ok   agent socket {} (TOUCHGATE_SOCK): directory 0700, socket 0600, both yours",
                sock.display()
            ),
            format!(
                "FAIL agent at {}: nothing listens on the socket (a stale file of an agent that stopped) — {START}",
                sock.display()
            ),
        ]
    );
}

/// An agent of another protocol version, and one that never says hello: each
/// gets its own FAIL line with its fix, and doctor never hangs (2 s time box).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_of_another_version_or_a_silent_one_is_named() {
    use touchgate::frame::{read_frame, write_frame};
    use touchgate::{Hello, HelloReply, PROTOCOL_VERSION};

    for newer in [true, false] {
        let u = UserDirs::new();
        let sock = private_run_dir(&u);
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        let fake = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let _hello: Hello = read_frame(&mut s).await.unwrap();
            if newer {
                let reply = HelloReply::Hello(Hello {
                    protocol: PROTOCOL_VERSION + 1,
                    software: "touchgate-agent 9.9.9".into(),
                });
                write_frame(&mut s, &reply).await.unwrap();
            }
            // Silent: keep the connection open, answer nothing, until doctor is done.
            let _ = read_frame::<_, Hello>(&mut s).await;
        });
        let o = run(touchgate(
            &[("TOUCHGATE_SOCK", sock.clone())],
            &u,
            "127.0.0.1:9",
            &["doctor"],
        ))
        .await;
        assert_eq!(
            o.status.code(),
            Some(touchgate::Exit::DoctorFailed.code() as i32),
            "{}",
            stdout(&o)
        );
        let want = if newer {
            format!(
                "FAIL agent at {}: it speaks protocol {}, this touchgate speaks {PROTOCOL_VERSION} — install touchgate and touchgate-agent of the same release, then restart the agent",
                sock.display(),
                PROTOCOL_VERSION + 1
            )
        } else {
            format!(
                "FAIL agent at {}: no hello within 2 s (the agent hangs) — restart the agent (systemctl --user restart touchgate-agent, or kill it and eval \"$(touchgate-agent)\")",
                sock.display()
            )
        };
        assert_line(&o, &want);
        fake.await.unwrap();
    }
}

/// A socket and its directory owned by someone else (root chowns them to 65534):
/// both named first, each with its fix.
#[test]
fn a_socket_of_another_user_is_named() {
    assert_eq!(
        touchgate::paths::current_uid(),
        0,
        "this test chowns files to uid 65534 and must run as root (as CI does)"
    );
    let u = UserDirs::new();
    let sock = private_run_dir(&u);
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    for p in [sock.as_path(), sock.parent().unwrap()] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    let o = doctor_without_agent(&u, &sock);
    assert_eq!(
        o.status.code(),
        Some(touchgate::Exit::DoctorFailed.code() as i32),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        lines(&o)[..2],
        [
            format!(
                "FAIL agent socket directory {}: owned by uid 65534, not by you (uid 0) — set TOUCHGATE_SOCK to a path in a directory of your own and restart the agent",
                sock.parent().unwrap().display()
            ),
            format!(
                "FAIL agent socket {} (TOUCHGATE_SOCK): owned by uid 65534, not by you (uid 0) — set TOUCHGATE_SOCK to your own agent's socket",
                sock.display()
            ),
        ]
    );
    drop(listener);
}

/// Kills a process the test did not spawn itself (init's background agent) on drop.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            sigterm(pid);
        }
    }
}

/// A fresh user for `touchgate init`: a temp HOME, an emulated HID key, the
/// emulator, a shim (which init's `setup` targets rely on) and a service-account key file.
struct InitWorld {
    emu: touchgate_tests::emulator::EmulatorHandle,
    key: hid::EmuKey,
    _key_dir: tempfile::TempDir,
    u: UserDirs,
    sock: PathBuf,
    shim: ShimProc,
}

impl InitWorld {
    async fn new() -> InitWorld {
        let (emu, key_json) = emulator().await;
        let key_dir = tempfile::tempdir().unwrap();
        let key = hid::EmuKey::start(
            key_dir.path(),
            "k1",
            std::sync::Arc::new(touchgate_agent::key::soft::AutoTouch),
            touchgate_tests::ctap::authenticator::AuthenticatorOptions::default(),
        );
        let u = UserDirs::new();
        let sock = private_run_dir(&u);
        let shim = ShimProc::start(&sock, &[]);
        std::fs::write(u.p("sa.json"), &key_json).unwrap();
        InitWorld {
            emu,
            key,
            _key_dir: key_dir,
            u,
            sock,
            shim,
        }
    }

    fn env(&self) -> [(&'static str, PathBuf); 1] {
        [("TOUCHGATE_SOCK", self.sock.clone())]
    }

    /// `touchgate ARGS` for this user; the emulated key is reached through the
    /// hidraw interposer, which the agent init starts inherits.
    fn touchgate(&self, args: &[&str]) -> Command {
        let mut c = touchgate(&self.env(), &self.u, &self.shim.addr, args);
        c.env("LD_PRELOAD", touchgate_tests::ctap::preload::preload_env());
        c
    }

    /// The agent init started in the background, stopped when this drops.
    fn agent(&self) -> KillOnDrop {
        KillOnDrop(
            touchgate(&self.env(), &self.u, &self.shim.addr, &["status", "--json"])
                .output()
                .ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .and_then(|v| v["pid"].as_u64())
                .map(|p| p as u32),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_goes_from_nothing_to_doctor_ok_and_a_token_through_gcloud() {
    let w = InitWorld::new().await;
    let (emu, u, shim) = (&w.emu, &w.u, &w.shim);
    let sa_file = u.p("sa.json");
    let device = w.key.path().display().to_string();
    let init = |extra: &[&str]| {
        let mut args = vec![
            "init",
            "--yes",
            "--no-service",
            "--device",
            &device,
            "--project",
            "touchgate-test",
            "--setup",
            "gcloud,adc",
        ];
        args.extend_from_slice(extra);
        w.touchgate(&args)
    };
    let emu_url = emu.base_url();
    let sa = sa_file.display().to_string();
    let o = run(init(&[
        "--endpoints",
        &emu_url,
        "--import",
        &sa,
        "--activate-gcloud",
    ]))
    .await;
    let _agent = w.agent();
    assert_eq!(
        o.status.code(),
        Some(0),
        "init: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let out = stdout(&o);
    println!("{out}");
    let config = u.p("home/.config/touchgate/config.toml");
    for want in [
        format!("init: security key {device}"),
        format!("init: wrote the starter config {}", config.display()),
        "init: enrolled ".to_owned(),
        "sealed service_account credential as \"default\"".to_owned(),
        "init: touchgate setup gcloud".to_owned(),
        "init: touchgate setup adc".to_owned(),
        "init: gcloud's active configuration is now touchgate (was default".to_owned(),
        "init: done".to_owned(),
    ] {
        assert!(out.contains(&want), "{want:?} in {out}");
    }
    let doctor = &out[out.find("init: touchgate doctor").unwrap()..];
    assert!(
        doctor
            .lines()
            .skip(1)
            .all(|l| l.starts_with("ok   ") || l == "init: done"),
        "doctor all ok: {doctor}"
    );
    assert!(sa_file.exists(), "the plaintext is kept unless asked");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("[profiles.inference]") && text.contains("[profiles.train]"));
    assert!(text.contains("backend = \"hid\""), "{text}");

    // A token through gcloud, from the configuration `touchgate setup gcloud` wrote (now active).
    let o = run({
        let mut c = Command::new("gcloud");
        touchgate_tests::gcloud::isolate(&mut c)
            .args(["auth", "print-access-token"])
            .env("CLOUDSDK_CONFIG", u.p("gcloud"))
            .env("HOME", u.p("home"));
        c
    })
    .await;
    assert!(
        o.status.success(),
        "gcloud: {}\nshim: {}",
        stderr(&o),
        shim.stderr()
    );
    let token = stdout(&o).trim().to_owned();
    println!("gcloud printed a token of {} bytes", token.len());
    assert!(
        emu.state().valid_access_token(&token).is_some(),
        "gcloud's token is one the emulator issued: {token:?}"
    );

    // Again: nothing is redone, doctor is still all ok.
    let o = run(init(&[])).await;
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for want in [
        "init: keeping the config",
        "init: an agent is running",
        "init: already enrolled",
        "init: credential \"default\" is already sealed",
        "init: done",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    assert!(!out.contains("init: enrolled "), "{out}");
}

#[test]
fn init_says_why_a_key_cannot_be_opened_and_changes_nothing() {
    let u = UserDirs::new();
    let sock = u.p("run/agent.sock");
    let env = [("TOUCHGATE_SOCK", sock)];
    let missing = u.p("hidraw9");
    let o = touchgate(
        &env,
        &u,
        "127.0.0.1:9",
        &["init", "--yes", "--device", missing.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_one_line_error(
        &o,
        &format!(
            "cannot open the security key {}: No such file or directory",
            missing.display()
        ),
    );

    // A device this user may not open: the udev rule is the fix.
    require_root_and_setpriv();
    let dev = u.p("hidraw7");
    std::fs::write(&dev, b"").unwrap();
    std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(u.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = as_nobody(&bin("touchgate"))
        .args(["init", "--yes", "--device", dev.to_str().unwrap()])
        .env("HOME", u.p("home"))
        .env("TOUCHGATE_SOCK", u.p("run/agent.sock"))
        .env_remove("TOUCHGATE_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert_one_line_error(
        &o,
        &format!(
            "your user may not open the security key {}: add the udev rule from the README (KERNEL==\"hidraw*\", TAG+=\"uaccess\")",
            dev.display()
        ),
    );
    assert!(
        !u.p("home/.config").exists(),
        "nothing was written before the key was found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_on_a_terminal_asks_and_deletes_the_plaintext_when_told() {
    let w = InitWorld::new().await;
    let sa_file = w.u.p("sa.json");
    let line = [
        bin("touchgate").display().to_string(),
        "init".into(),
        "--no-service".into(),
        "--device".into(),
        w.key.path().display().to_string(),
        "--endpoints".into(),
        w.emu.base_url(),
        "--import".into(),
        sa_file.display().to_string(),
    ]
    .iter()
    .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
    .collect::<Vec<_>>()
    .join(" ");
    // `script` gives init a terminal; the answers: no backup key, delete the
    // plaintext, wire gcloud, leave gcloud's active configuration alone.
    let base = w.touchgate(&[]);
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) is installed");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"n\ny\ngcloud\nn\n").unwrap();
    }
    let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let _agent = w.agent();
    let out = stdout(&o);
    println!("{out}");
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    for want in [
        "enrol a backup key now (touch this key, then the new one twice)? [y/N]",
        &format!("delete {} now? [y/N]", sa_file.display()),
        &format!("deleted {}", sa_file.display()),
        "wire which clients to touchgate (gcloud,adc,docker,kubectl; empty: none)?",
        "init: touchgate setup gcloud",
        "init: done",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    assert!(!out.contains("init: added backup key"), "{out}");
    assert!(
        out.contains("make touchgate gcloud's active configuration")
            && !out.contains("active configuration is now"),
        "{out}"
    );
    assert!(!out.contains("init: touchgate setup adc"), "{out}");
    assert!(
        !sa_file.exists(),
        "the plaintext key file was deleted when asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_does_not_enrol_a_running_soft_key_agent_for_its_new_hid_config() {
    let (emu, _) = emulator().await;
    let agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "10m", ""));
    let u = UserDirs::new();
    let device = u.p("hidraw1");
    std::fs::write(&device, b"").unwrap();
    let env = [("TOUCHGATE_SOCK", agent.socket.clone())];
    let o = run(touchgate(
        &env,
        &u,
        "127.0.0.1:9",
        &["init", "--yes", "--device", device.to_str().unwrap()],
    ))
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the running agent uses the soft key backend, and [key] of the new config"),
        "{err}"
    );
    let status = agent.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(v["enrolled"].is_null(), "nothing was enrolled: {v}");
}
