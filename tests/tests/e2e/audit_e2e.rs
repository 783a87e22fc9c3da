//! The audit log of a real run: every decision recorded, the chain and every
//! touch signature verify, tampering is found and named, and no secret is in it,
//! not even when a token endpoint quotes back what it was sent.

use crate::common;

use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;

fn audit(agent: &AgentProc, args: &[&str]) -> std::process::Output {
    Command::new(bin("touchgate-agent"))
        .arg("audit")
        .args(args)
        .envs(agent.env())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_run_verifies_and_tampering_is_named() {
    let (emu, key_json) = emulator().await;
    let agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "10m", ""));
    agent.enrol_and_import(&key_json);
    let t1 = stdout(&agent.cli(&["token"])).trim().to_owned();
    let t2 = stdout(&agent.cli(&["token"])).trim().to_owned();
    assert_eq!(t1, t2);
    assert!(agent.cli(&["lock"]).status.success());

    let o = audit(&agent, &["verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("verifies: 5 records"), "{}", stdout(&o));

    let o = audit(&agent, &["show", "--profile", "inference"]);
    let table = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        table.contains("issued") && table.contains("reused"),
        "{table}"
    );
    assert!(
        table.contains(&touchgate::secret::fingerprint(t1.as_bytes())),
        "{table}"
    );

    let path = agent.state_dir().join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let key: serde_json::Value = serde_json::from_str(&key_json).unwrap();
    let pem_line = key["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(3)
        .unwrap()
        .to_owned();
    assert!(!text.contains(&t1), "token in the audit log");
    assert!(!text.contains(&pem_line), "private key in the audit log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5);
    let events = events_of(&lines);
    assert_eq!(
        events,
        ["enrolled", "imported", "issued", "reused", "locked"]
    );

    let tamper = |lines: Vec<String>, want_line: usize, what: &str| {
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let o = audit(&agent, &["verify"]);
        assert!(!o.status.success(), "{what}: tampering not found");
        let e = stderr(&o);
        assert!(e.contains(&format!("line {want_line}:")), "{what}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    };
    let orig: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    // One byte of the issued record's authenticator data.
    let mut edited = orig.clone();
    let pos = edited[2].find("\"auth_data\":\"").unwrap() + 14;
    let mut bytes = edited[2].clone().into_bytes();
    bytes[pos] = if bytes[pos] == b'0' { b'1' } else { b'0' };
    edited[2] = String::from_utf8(bytes).unwrap();
    tamper(edited, 3, "edited byte");
    let mut deleted = orig.clone();
    deleted.remove(1);
    tamper(deleted, 2, "deleted line");
    let mut moved = orig.clone();
    moved.swap(2, 3);
    tamper(moved, 3, "reordered lines");
    std::fs::write(&path, orig.join("\n") + "\n").unwrap();
    assert!(audit(&agent, &["verify"]).status.success());
}

/// The ways a hostile endpoint may quote `secret` back: as sent in a form
/// (URL-encoded), raw, JSON-escaped with `\/`, and its longest run without
/// characters any of those encodings change.
fn encodings(secret: &str) -> Vec<String> {
    let form: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let json = secret.replace('/', "\\/");
    let run = secret
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-._".contains(c)))
        .max_by_key(|s| s.len())
        .unwrap_or("")
        .to_owned();
    assert!(run.len() >= 16, "a secret this short proves nothing: {run}");
    vec![secret.to_owned(), form, json, run]
}

/// No encoding of any of `secrets` in `what`.
fn assert_no_secret(what: &str, text: &str, secrets: &[(&str, &str)]) {
    for (name, s) in secrets {
        for e in encodings(s) {
            assert!(!text.contains(&e), "{name} ({e}) in {what}: {text}");
        }
    }
    for marker in ["eyJ", "PRIVATE KEY", "ya29."] {
        assert!(!text.contains(marker), "{marker} in {what}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_endpoint_that_echoes_the_request_gets_no_secret_into_errors_logs_or_audit() {
    use touchgate_tests::emulator::{Fault, FaultRule};
    use touchgate_tests::CallKind;

    let (emu, key_json) = emulator().await;
    let user_json = emu.state().add_authorized_user("ml-engineer@example.com");
    let user: serde_json::Value = serde_json::from_str(&user_json).unwrap();
    let key: serde_json::Value = serde_json::from_str(&key_json).unwrap();
    let pem_line = key["private_key"].as_str().unwrap().lines().nth(3).unwrap();
    let secrets = [
        ("refresh token", user["refresh_token"].as_str().unwrap()),
        ("client secret", user["client_secret"].as_str().unwrap()),
        ("private key", pem_line),
    ];
    let base = emu.base_url();
    let profiles = "\n[profiles.user]\ncredential = \"user\"\ntouch = \"every-token\"\n";
    // The emulator named in [google]: trusted as Google, its text shown, scrubbed.
    let configured = config_text(&base, "auto", "every-token", "").replace(
        "[google]\n",
        &format!("[google]\ntoken_uri = \"{base}/token\"\n"),
    ) + profiles;
    // Only the credential files name it (as localhost, another origin than the
    // configured iam_credentials): not a Google host, its text never shown.
    let from_files = config_text(&base, "auto", "every-token", "") + profiles;
    let elsewhere = |json: &str| json.replace("http://127.0.0.1:", "http://localhost:");

    for (config, google) in [(configured, true), (from_files, false)] {
        let agent = AgentProc::start(&config);
        let (key_json, user_json) = match google {
            true => (key_json.clone(), user_json.clone()),
            false => (elsewhere(&key_json), elsewhere(&user_json)),
        };
        agent.enrol_and_import(&key_json);
        let o = agent.cli_stdin(&["import", "-", "--name", "user"], Some(&user_json));
        assert!(o.status.success(), "{}", stderr(&o));
        let mut errors = vec![];
        let mut cases = vec![
            (CallKind::Token, "user", true, "token endpoint"),
            (CallKind::Token, "user", false, "token endpoint"),
            (CallKind::Token, "inference", true, "token endpoint"),
        ];
        if google {
            // IAM (the configured one) echoes the base token (ya29.) sent in
            // its Authorization header.
            cases.push((
                CallKind::GenerateAccessToken,
                "inference",
                false,
                "impersonating",
            ));
        }
        let failures = cases.len();
        for (endpoint, profile, json, needle) in cases {
            emu.state().inject(FaultRule {
                endpoint,
                fault: Fault::Echo { status: 400, json },
                times: 1,
            });
            let o = agent.cli(&["token", "--profile", profile]);
            let line = assert_one_line_error(&o, needle);
            assert_no_secret("the client's error", &line, &secrets);
            assert_eq!(
                line.contains("ECHO"),
                google,
                "free text of a Google host (only) is shown: {line}"
            );
            errors.push(line);
        }
        assert_no_secret("the agent's log", &agent.stderr(), &secrets);
        let audit = std::fs::read_to_string(agent.state_dir().join("audit.jsonl")).unwrap();
        assert_no_secret("the audit log", &audit, &secrets);
        assert_eq!(audit.matches("\"failed\"").count(), failures, "{audit}");
        if !google {
            assert!(!audit.contains("ECHO"), "no free text of {base}: {audit}");
            assert!(
                errors[0].contains("not a Google host"),
                "says why the text is not shown: {}",
                errors[0]
            );
        }
    }
}

/// The log's lines with every `seq` and `prev` made good again, as a same-user
/// attacker who edited, deleted or moved lines would leave them.
fn rechain(lines: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut prev = touchgate_agent::audit::GENESIS.to_owned();
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut r: touchgate_agent::audit::Record = serde_json::from_str(l).unwrap();
            r.seq = i as u64;
            r.prev = prev.clone();
            let line = serde_json::to_string(&r).unwrap();
            prev = hex::encode(Sha256::digest(line.as_bytes()));
            line
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_same_user_rewrite_before_a_touch_breaks_a_key_signature() {
    let (emu, key_json) = emulator().await;
    let mut agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "10m", ""));
    agent.enrol_and_import(&key_json);
    agent.ok(&["token"]);
    agent.ok(&["token"]);
    agent.ok(&["lock"]);
    agent.ok(&["unlock"]);
    agent.ok(&["token"]);
    agent.ok(&["token"]);
    // Stopped (SIGTERM writes the last window-hit count), so nothing writes the log under the edits.
    assert!(agent.stop(), "{}", agent.stderr());
    let path = agent.state_dir().join("audit.jsonl");
    let orig: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let events = events_of(&orig);
    assert_eq!(
        events,
        ["enrolled", "imported", "issued", "reused", "locked", "unlocked", "issued", "reused"]
    );
    let o = audit(&agent, &["verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stdout(&o);
    assert!(said.contains("8 records"), "{said}");
    assert!(said.contains("4 touches signed by enrolled keys"), "{said}");
    assert!(
        said.contains("after seq 6"),
        "says what it cannot prove: {said}"
    );
    assert!(said.contains("vault"), "names the key source: {said}");

    let refused = |lines: Vec<String>, want_line: usize, needle: &str, what: &str| {
        std::fs::write(&path, rechain(&lines).join("\n") + "\n").unwrap();
        let o = audit(&agent, &["verify"]);
        assert!(!o.status.success(), "{what}: not found: {}", stdout(&o));
        let e = assert_one_line_error(&o, needle);
        assert!(e.contains(&format!("line {want_line}:")), "{what}: {e}");
    };
    let field = |line: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        f(&mut v);
        v.to_string()
    };
    // A touched record's caller, service account and scopes.
    for (name, edit) in [
        (
            "caller",
            &(|v: &mut serde_json::Value| v["caller"]["exe"] = "/usr/bin/innocent".into())
                as &dyn Fn(&mut serde_json::Value),
        ),
        ("service account", &|v: &mut serde_json::Value| {
            v["service_account"] = "other@p.iam.gserviceaccount.com".into()
        }),
        ("scopes", &|v: &mut serde_json::Value| {
            v["scopes"] = serde_json::json!(["openid"])
        }),
        ("lifetime", &|v: &mut serde_json::Value| {
            v["lifetime"] = 60.into()
        }),
    ] {
        let mut edited = orig.clone();
        edited[2] = field(&edited[2], edit);
        refused(edited, 3, "signature", name);
    }
    // An untouched record before a touch: the later touch signed the history.
    let mut edited = orig.clone();
    edited[3] = field(&edited[3], &|v| {
        v["caller"]["exe"] = "/usr/bin/innocent".into()
    });
    refused(edited, 6, "history", "edited untouched record");
    let mut deleted = orig.clone();
    deleted.remove(3);
    refused(deleted, 5, "history", "deleted record");
    let mut moved = orig.clone();
    moved.swap(3, 4);
    refused(moved, 6, "history", "reordered records");

    // Cutting the tail after the last touch is not provable without the journal: said so.
    std::fs::write(&path, orig[..7].join("\n") + "\n").unwrap();
    let o = audit(&agent, &["verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("--journal"), "{}", stdout(&o));
    std::fs::write(&path, orig.join("\n") + "\n").unwrap();
    assert!(audit(&agent, &["verify"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_log_with_its_own_enrolled_key_is_refused() {
    let (emu, key_json) = emulator().await;
    let agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "10m", ""));
    agent.enrol_and_import(&key_json);
    let forged = tempfile::tempdir().unwrap();
    let log = touchgate_agent::audit::sample_log(forged.path(), "curl (pid 1)", 5);
    let o = audit(&agent, &["verify", "--file", log.to_str().unwrap()]);
    assert!(!o.status.success(), "a forged log verifies: {}", stdout(&o));
    assert_one_line_error(&o, "no enrolled key");
}

/// A real systemd-journald of the test's own: in a private mount namespace
/// with /run on a tmpfs, so the host's /run is untouched. The agent sends to
/// its socket through /proc/PID/root; commands run in its namespace see it
/// as the system journal.
struct Journald {
    child: std::process::Child,
}

impl Journald {
    fn start() -> Journald {
        let journald = std::path::Path::new("/lib/systemd/systemd-journald");
        assert!(
            journald.exists(),
            "this test needs systemd-journald: install the systemd package"
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal /run/log/journal && exec {}",
                journald.display()
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("this test needs unshare and nsenter: install util-linux");
        let j = Journald { child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !j.socket().exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "systemd-journald did not open its socket"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        j
    }

    fn socket(&self) -> std::path::PathBuf {
        format!("/proc/{}/root/run/systemd/journal/socket", self.child.id()).into()
    }

    /// `program` run in the journal's mount namespace.
    fn inside(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.child.id()))
            .arg("--")
            .arg(program);
        c
    }

    /// Wait until the journal holds the audit head `seq` (the agent sends at
    /// most one a second).
    fn wait_head(&self, seq: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let o = self
                .inside(std::path::Path::new("journalctl"))
                .args(["-q", "-o", "json", &format!("TOUCHGATE_AUDIT_SEQ={seq}")])
                .output()
                .unwrap();
            if !o.stdout.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the journal never got head {seq}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_journal_catches_a_cut_or_replaced_tail_after_the_last_touch() {
    let journald = Journald::start();
    let (emu, key_json) = emulator().await;
    let agent = AgentProc::start_with_env(
        &config_text(&emu.base_url(), "auto", "10m", ""),
        vec![(
            touchgate_agent::audit::journal::SOCKET_ENV.into(),
            journald.socket().into(),
        )],
    );
    agent.enrol_and_import(&key_json);
    agent.ok(&["token"]);
    agent.ok(&["token"]);
    agent.ok(&["lock"]);
    journald.wait_head(5);
    let path = agent.state_dir().join("audit.jsonl");
    let verify = |journal: bool| {
        let mut c = journald.inside(&bin("touchgate-agent"));
        c.envs(agent.env())
            .args(["audit", "verify", "--file", path.to_str().unwrap()]);
        if journal {
            c.arg("--journal");
        }
        c.output().unwrap()
    };
    let o = verify(true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("newest: seq 5"), "{}", stdout(&o));

    let orig: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // Cut after the last touch (seq 2): the file alone cannot tell, and says so.
    std::fs::write(&path, orig[..3].join("\n") + "\n").unwrap();
    let o = verify(false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("not detectable without --journal"),
        "{}",
        stdout(&o)
    );
    let e = assert_one_line_error(&verify(true), "truncated");
    assert!(e.contains("3 records") && e.contains("seq 5"), "{e}");

    // The tail rewritten and re-chained: same length, other records.
    let mut replaced = orig.clone();
    replaced[3] = replaced[3].replace("\"reused\"", "\"denied\"");
    std::fs::write(&path, rechain(&replaced).join("\n") + "\n").unwrap();
    assert!(verify(false).status.success());
    assert_one_line_error(&verify(true), "replaced");
}

/// The journal sends at most one head a second: the heads of a burst just
/// before SIGTERM are held back, and shutdown must still send the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_sigterm_the_journal_holds_the_final_head() {
    let journald = Journald::start();
    let (emu, key_json) = emulator().await;
    let mut agent = AgentProc::start_with_env(
        &config_text(&emu.base_url(), "auto", "10m", ""),
        vec![(
            touchgate_agent::audit::journal::SOCKET_ENV.into(),
            journald.socket().into(),
        )],
    );
    agent.enrol_and_import(&key_json);
    agent.ok(&["token"]);
    agent.ok(&["token"]);
    agent.ok(&["lock"]);
    assert!(agent.stop(), "the agent did not stop cleanly on SIGTERM");
    let path = agent.state_dir().join("audit.jsonl");
    let records = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
    assert!(records >= 5, "{records} records");
    journald.wait_head(records);
    let o = journald
        .inside(&bin("touchgate-agent"))
        .envs(agent.env())
        .args([
            "audit",
            "verify",
            "--journal",
            "--file",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("newest: seq {records})")),
        "{}",
        stdout(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_of_a_replaced_key_still_verify_from_the_vault_and_an_exported_key_file() {
    let (emu, key_json) = emulator().await;
    let agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "10m", ""));
    agent.enrol_and_import(&key_json);
    agent.ok(&["token"]);
    let before = agent.ok(&["keys", "export"]);
    agent.ok(&["enroll", "--force"]);
    agent.import(&key_json);
    agent.ok(&["token"]);
    let o = audit(&agent, &["verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("1 enrolled, 1 retired keys"),
        "{}",
        stdout(&o)
    );

    // The export (through the touchgate CLI, no agent needed) names both keys.
    let file = agent.state_dir().join("..").join("keys.json");
    agent.ok(&["keys", "export", "--out", file.to_str().unwrap()]);
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let keys = exported["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{exported}");
    assert_eq!(keys[1]["retired"], true, "{exported}");
    assert!(
        !std::fs::read_to_string(&file).unwrap().contains("hmac"),
        "public keys only"
    );
    let o = audit(&agent, &["verify", "--keys", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("the key file"), "{}", stdout(&o));

    // The key file from before the new enrolment does not know the new key.
    std::fs::write(&file, before).unwrap();
    assert_one_line_error(
        &audit(&agent, &["verify", "--keys", file.to_str().unwrap()]),
        "no enrolled key",
    );
    std::fs::write(&file, "{}").unwrap();
    assert_one_line_error(
        &audit(&agent, &["verify", "--keys", file.to_str().unwrap()]),
        "touchgate keys export",
    );
}

/// The records of the log at `agent`'s state dir, parsed.
/// The `event` of each audit line.
fn events_of(lines: &[impl AsRef<str>]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l.as_ref()).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn records(agent: &AgentProc) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(agent.state_dir().join("audit.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn verifies(agent: &AgentProc) {
    let o = audit(agent, &["verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Restart `agent` (SIGTERM, then a new process on the same dirs).
fn restart(agent: &mut AgentProc) {
    assert!(
        agent.stop(),
        "the agent did not exit cleanly: {}",
        agent.stderr()
    );
    agent.child = Some(agent.spawn_agent("debug"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audit_log_that_cannot_be_written_refuses_tokens_unless_on_failure_is_allow() {
    let (emu, key_json) = emulator().await;
    let config = config_text(&emu.base_url(), "auto", "every-token", "");
    let mut agent = AgentProc::start(&config);
    agent.enrol_and_import(&key_json);
    // A directory where the log should be: nothing can be appended to it.
    let path = agent.state_dir().join("audit.jsonl");
    assert!(agent.stop());
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    agent.child = Some(agent.spawn_agent("debug"));
    let line = assert_one_line_error(&agent.cli(&["token"]), "audit log");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains("Is a directory"), "{line}");
    assert!(
        line.contains("on_failure"),
        "says how to choose otherwise: {line}"
    );

    // Asked for by name: tokens are issued, with a warning.
    std::fs::write(
        agent.dir.path().join("config.toml"),
        config + "\n[audit]\non_failure = \"allow\"\n",
    )
    .unwrap();
    restart(&mut agent);
    assert!(
        agent.stderr().contains("on_failure = \"allow\""),
        "{}",
        agent.stderr()
    );
    let status = agent.ok(&["status"]);
    assert!(
        status.contains("on_failure = \"allow\""),
        "a security warning: {status}"
    );
    let o = agent.cli(&["token"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_tokens_leaves_no_torn_line_and_recovers() {
    let (emu, key_json) = emulator().await;
    let agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "every-token", ""));
    agent.enrol_and_import(&key_json);
    // The limit is on any file the agent writes: the log must outgrow the vault
    // (rewritten at each touch) so that only the log hits it.
    let path = agent.state_dir().join("audit.jsonl");
    let len = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    let mut issued = 0;
    while len(&path) < len(&agent.state_dir().join("vault.json")) + 4096 {
        agent.ok(&["token"]);
        issued += 1;
    }
    let size = len(&path);
    let pid = agent.child.as_ref().unwrap().id().to_string();
    // The soft limit only: raising it back needs no privilege.
    let prlimit = |limit: &str| {
        let o = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={limit}:")])
            .output()
            .expect("prlimit is missing: install util-linux");
        assert!(o.status.success(), "prlimit: {}", stderr(&o));
    };
    // Room for a few bytes only: the next record is cut short by the file system.
    prlimit(&(size + 10).to_string());
    let line = assert_one_line_error(&agent.cli(&["token"]), "audit log");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains("File too large"), "{line}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len() as u64, size, "the cut record was taken back");
    verifies(&agent);

    prlimit("unlimited");
    agent.ok(&["token"]);
    verifies(&agent);
    let issued_records = records(&agent)
        .iter()
        .filter(|r| r["event"] == "issued")
        .count();
    assert_eq!(issued_records, issued + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn window_hits_are_refused_while_their_counts_cannot_be_written() {
    let (emu, key_json) = emulator().await;
    let mut agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "10m", ""));
    agent.enrol_and_import(&key_json);
    agent.ok(&["token"]);
    let path = agent.state_dir().join("audit.jsonl");
    let pid = agent.child.as_ref().unwrap().id().to_string();
    let prlimit = |limit: &str| {
        let o = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={limit}:")])
            .output()
            .expect("prlimit is missing: install util-linux");
        assert!(o.status.success(), "prlimit: {}", stderr(&o));
    };
    prlimit(&std::fs::metadata(&path).unwrap().len().to_string());
    // Hits are answered until their counts fail to reach the file (within a second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut hits = 0;
    let refused = loop {
        let o = agent.cli(&["token"]);
        if !o.status.success() {
            break o;
        }
        hits += 1;
        assert!(std::time::Instant::now() < deadline, "never refused");
    };
    let line = assert_one_line_error(&refused, "audit log");
    assert!(line.contains("File too large"), "{line}");
    assert!(hits >= 1);

    prlimit("unlimited");
    agent.ok(&["token"]);
    assert!(agent.stop(), "{}", agent.stderr());
    let reused: u64 = records(&agent)
        .iter()
        .filter(|r| r["event"] == "reused")
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert!(
        reused >= hits,
        "the counts of the refused flush were kept: {reused} < {hits}"
    );
    agent.child = Some(agent.spawn_agent("debug"));
    verifies(&agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_torn_last_line_is_cut_and_said_so_at_start() {
    let (emu, key_json) = emulator().await;
    let mut agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "every-token", ""));
    agent.enrol_and_import(&key_json);
    assert!(agent.stop());
    let path = agent.state_dir().join("audit.jsonl");
    let torn = b"{\"seq\":2,\"time\":17";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, torn).unwrap();
    drop(f);
    agent.child = Some(agent.spawn_agent("debug"));
    agent.ok(&["token"]);
    verifies(&agent);
    let recs = records(&agent);
    let events: Vec<&str> = recs.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["enrolled", "imported", "repaired", "issued"]);
    let reason = recs[2]["reason"].as_str().unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(torn));
    assert!(
        reason.contains(&format!("{} bytes", torn.len())),
        "{reason}"
    );
    assert!(reason.contains(&sha), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_burst_of_issuances_loses_no_issued_record() {
    let (emu, key_json) = emulator().await;
    let mut agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "every-token", ""));
    agent.enrol_and_import(&key_json);
    // Four clients asking one token after another, each a touch and a mint.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let env = agent.env();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (received, env) = (received.clone(), env.clone());
            std::thread::spawn(move || loop {
                let o = Command::new(bin("touchgate"))
                    .arg("token")
                    .envs(env.clone())
                    .output()
                    .unwrap();
                if !o.status.success() {
                    return; // the agent is gone
                }
                received.lock().unwrap().push(stdout(&o).trim().to_owned());
            })
        })
        .collect();
    // Once some tokens are out, in the middle of the rest.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while received.lock().unwrap().len() < 8 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut child = agent.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let received = received.lock().unwrap().clone();
    assert!(
        !received.is_empty(),
        "no client got a token before the kill"
    );
    agent.child = Some(agent.spawn_agent("debug"));
    verifies(&agent);
    let issued: Vec<String> = records(&agent)
        .iter()
        .filter(|r| r["event"] == "issued")
        .map(|r| r["token"].as_str().unwrap().to_owned())
        .collect();
    for t in &received {
        let fp = touchgate::secret::fingerprint(t.as_bytes());
        assert!(
            issued.contains(&fp),
            "a token handed out has no issued record: {fp}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_window_hits_make_a_handful_of_lines_and_sigterm_keeps_their_count() {
    let (emu, key_json) = emulator().await;
    let mut agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "10m", ""));
    agent.enrol_and_import(&key_json);
    agent.ok(&["token"]);
    let mut c = touchgate::Client::connect(&agent.socket).await.unwrap();
    for _ in 0..1000 {
        let t = c
            .get_token(None, &[], touchgate::CallerHint::default())
            .await
            .unwrap();
        assert!(t.from_cache);
    }
    drop(c);
    // Straight to SIGTERM: the last second's counts are written at shutdown.
    assert!(agent.stop(), "{}", agent.stderr());
    let recs = records(&agent);
    let reused: Vec<_> = recs.iter().filter(|r| r["event"] == "reused").collect();
    assert!(reused.len() <= 10, "{} reuse lines", reused.len());
    let total: u64 = reused
        .iter()
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(total, 1000);
    for r in &reused {
        assert!(r["first"].as_u64() <= r["last"].as_u64(), "{r}");
    }
    agent.child = Some(agent.spawn_agent("debug"));
    verifies(&agent);
    let table = stdout(&audit(&agent, &["show"]));
    assert!(table.contains("reused x"), "shows the count: {table}");
}
