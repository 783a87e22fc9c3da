//! The audit log of a real run: every decision recorded, the chain and every
//! touch signature verify, tampering is found and named, and no secret is in it.

mod common;

use std::process::Command;

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
