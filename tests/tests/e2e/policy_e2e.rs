//! Caller rules through the real agent: per-caller windows, a caller list, and
//! `touchgate-agent policy check` agreeing with what the agent does — one test
//! table drives both.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A copy of the `touchgate` CLI under another name: /proc/PID/exe then names it.
fn program(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join("bin").join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    copy_program(&bin("touchgate"), &p);
    p
}

fn run(agent: &AgentProc, exe: &Path, args: &[&str]) -> std::process::Output {
    Command::new(exe)
        .args(args)
        .envs(agent.env())
        .output()
        .unwrap()
}

fn touches(agent: &AgentProc) -> u64 {
    let s = stdout(&agent.cli(&["status"]));
    s.split("touches: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no touch count in {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caller_rules_and_policy_check_agree() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let gcloud = program(dir.path(), "gcloud");
    let python = program(dir.path(), "python3");
    let cfg = config_text(&emu.base_url(), "auto", "10m", "").replace(
        "touch = \"10m\"",
        "touch = \"10m\"\nper = \"caller\"",
    ) + &format!(
        "\n[profiles.train]\nservice_account = \"{INFERENCE}\"\ntouch = \"every-token\"\ncallers = [\"*/bin/gcloud\"]\n"
    );
    let agent = AgentProc::start(&cfg);
    agent.enrol_and_import(&key_json);

    // (profile, program, allowed?, the rule or reason the refusal names)
    let table: [(&str, &PathBuf, bool, &str); 4] = [
        ("train", &gcloud, true, ""),
        ("train", &python, false, "profiles.train.callers"),
        ("inference", &gcloud, true, ""),
        ("inference", &python, true, ""),
    ];
    for (profile, exe, allowed, rule) in table {
        let check = Command::new(bin("touchgate-agent"))
            .args(["policy", "check", "--profile", profile, "--exe"])
            .arg(exe)
            .envs(agent.env())
            .output()
            .unwrap();
        let asked = run(&agent, exe, &["token", "--profile", profile]);
        let what = format!("{profile} from {}", exe.display());
        assert_eq!(
            check.status.success(),
            allowed,
            "policy check for {what}: {}",
            stdout(&check)
        );
        assert_eq!(
            asked.status.success(),
            allowed,
            "agent for {what}: {}",
            stderr(&asked)
        );
        if !allowed {
            assert!(stdout(&check).contains(rule), "{}", stdout(&check));
            let line = assert_one_line_error(&asked, "may not use profile \"train\"");
            assert!(line.contains("profiles.train.callers"), "{line}");
        }
    }

    // Per-caller windows: gcloud's window serves gcloud again without a touch, not python.
    assert!(agent.cli(&["lock"]).status.success());
    assert!(agent.cli(&["unlock"]).status.success());
    let t0 = touches(&agent);
    let g1 = run(&agent, &gcloud, &["token", "--profile", "inference"]);
    assert_eq!(
        touches(&agent),
        t0 + 1,
        "gcloud opens its window with a touch"
    );
    let p1 = run(&agent, &python, &["token", "--profile", "inference"]);
    assert_eq!(
        touches(&agent),
        t0 + 2,
        "gcloud's window does not serve python"
    );
    let g2 = run(&agent, &gcloud, &["token", "--profile", "inference"]);
    assert_eq!(touches(&agent), t0 + 2, "gcloud is still inside its window");
    assert_eq!(stdout(&g1), stdout(&g2));
    assert_ne!(
        stdout(&g1),
        stdout(&p1),
        "each program has its own window and token"
    );
    let o = Command::new(bin("touchgate-agent"))
        .args(["policy", "check", "--profile", "inference", "--exe"])
        .arg(&python)
        .envs(agent.env())
        .output()
        .unwrap();
    assert!(stdout(&o).contains("per = \"caller\""), "{}", stdout(&o));
}

/// The shim speaks for the program that runs it — but only the shim installed
/// beside the agent. A copy anywhere else (anyone can build a program named
/// `touchgate-shim`) speaks only for itself and is held to the caller list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_installed_shim_may_speak_for_another_program() {
    let (emu, key_json) = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    // A shell named gcloud runs the shim as its child.
    let gcloud = dir.path().join("bin").join("gcloud");
    std::fs::create_dir_all(gcloud.parent().unwrap()).unwrap();
    copy_program(Path::new("/bin/sh"), &gcloud);
    let fake = dir.path().join("elsewhere").join("touchgate-shim");
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    copy_program(&bin("touchgate-shim"), &fake);
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "")
        + &format!(
            "\n[profiles.train]\nservice_account = \"{INFERENCE}\"\ntouch = \"every-token\"\ncallers = [\"*/bin/gcloud\"]\n"
        );
    let agent = AgentProc::start(&cfg);
    agent.enrol_and_import(&key_json);

    for (shim, believed) in [(bin("touchgate-shim"), true), (fake, false)] {
        // `; exit $?` keeps the shell from replacing itself with the shim.
        let o = Command::new(&gcloud)
            .args([
                "-c",
                &format!("'{}' token --profile train; exit $?", shim.display()),
            ])
            .envs(agent.env())
            .output()
            .unwrap();
        if believed {
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(stdout(&o).trim().starts_with("ya29."), "{}", stdout(&o));
            assert!(
                agent.stderr().contains("gcloud (pid"),
                "the installed shim named its parent: {}",
                agent.stderr()
            );
        } else {
            assert!(!o.status.success(), "a copy of the shim was believed");
            assert!(stdout(&o).trim().is_empty());
            assert!(
                stderr(&o).contains("profiles.train.callers"),
                "{}",
                stderr(&o)
            );
        }
    }
}

const READ_ONLY: &str = "https://www.googleapis.com/auth/cloud-platform.read-only";
const EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";
const WIDE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A profile's scopes are a ceiling at the agent: asking a read-only profile
/// for cloud-platform is refused, naming the rule — before any touch, and also
/// inside the window a touch opened; a subset gets just the subset. The touch
/// prompt and the notification say what the touch approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profile_scopes_are_a_ceiling_and_the_prompt_says_what_a_touch_approves() {
    use std::sync::Arc;
    use touchgate::{CallerHint, ErrorCode, Secret};
    use touchgate_agent::key::soft::ScriptedTouch;
    use touchgate_agent::notify::{Kind, Recording};

    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "10m", "")
        + &format!(
            "\n[profiles.narrow]\nservice_account = \"{INFERENCE}\"\nscopes = [\"{READ_ONLY}\", \"{EMAIL}\"]\nlifetime = \"15m\"\ntouch = \"10m\"\n"
        );
    let touch = Arc::new(ScriptedTouch::new());
    let agent = InProcess::start(&cfg, touch.clone()).await;
    let notes = Arc::new(Recording::default());
    agent.agent.set_notifier(notes.clone());
    let mut c = agent.client().await;
    touch.approve();
    touch.approve();
    c.enroll(false, false, CallerHint::default()).await.unwrap();
    c.import("default", Secret::new(&key_json), CallerHint::default())
        .await
        .unwrap();
    let scopes_of = |token: &Secret| {
        let mut s = emu
            .state()
            .valid_access_token(token.expose())
            .unwrap()
            .scopes;
        s.sort();
        s
    };
    let refused = |r: Result<touchgate::TokenReply, touchgate::ClientError>| {
        let e = r.expect_err("a scope outside the profile's was issued");
        assert_eq!(e.code(), Some(ErrorCode::PolicyRefused), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("profiles.narrow.scopes") && msg.contains(WIDE),
            "{msg}"
        );
    };

    // Cold: refused before any touch.
    let (asked, mints) = (touch.requested(), agent.agent.mints());
    refused(
        c.get_token(Some("narrow"), &[WIDE.into()], CallerHint::default())
            .await,
    );
    assert_eq!((touch.requested(), agent.agent.mints()), (asked, mints));

    // The touch that opens the window: the prompt names what it approves.
    let (tx, mut prompts) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut c2 = agent.client().await;
    c2.on_touch_needed(move |p| {
        let _ = tx.send(p.to_owned());
    });
    let t = tokio::spawn(async move {
        c2.get_token(Some("narrow"), &[], CallerHint::default())
            .await
    });
    let prompt = prompts.recv().await.expect("a touch prompt");
    touch.approve();
    let t = t.await.unwrap().unwrap();
    let mut want = vec![READ_ONLY.to_owned(), EMAIL.to_owned()];
    want.sort();
    assert_eq!(scopes_of(&t.access_token), want);
    let note = notes
        .taken()
        .into_iter()
        .find(|n| n.kind == Kind::TouchNeeded)
        .expect("a touch notification");
    for what in [
        INFERENCE,
        "cloud-platform.read-only",
        "userinfo.email",
        "token lifetime 15m",
        "a 10m window",
    ] {
        assert!(prompt.contains(what), "the prompt names {what}: {prompt}");
        assert!(
            note.body.contains(what),
            "the notification names {what}: {note:?}"
        );
    }

    // Inside the open window: still refused, no mint.
    let (asked, mints) = (touch.requested(), agent.agent.mints());
    refused(
        c.get_token(Some("narrow"), &[WIDE.into()], CallerHint::default())
            .await,
    );
    refused(
        c.get_token(
            Some("narrow"),
            &[READ_ONLY.into(), WIDE.into()],
            CallerHint::default(),
        )
        .await,
    );
    assert_eq!((touch.requested(), agent.agent.mints()), (asked, mints));

    // A subset is issued as asked, from the window (no touch).
    let sub = c
        .get_token(Some("narrow"), &[READ_ONLY.into()], CallerHint::default())
        .await
        .unwrap();
    assert_eq!(scopes_of(&sub.access_token), vec![READ_ONLY.to_owned()]);
    assert_eq!(touch.requested(), asked);
    agent.shutdown().await;
}
