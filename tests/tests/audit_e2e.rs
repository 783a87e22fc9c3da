//! The audit log of a real run: every decision recorded, the chain and every
//! touch signature verify, tampering is found and named, and no secret is in it,
//! not even when a token endpoint quotes back what it was sent.

mod common;

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
    let events: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
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

/// The records of the log at `agent`'s state dir, parsed.
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
