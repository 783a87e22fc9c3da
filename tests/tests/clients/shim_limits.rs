//! What one caller may hold of the shim: another user's connections are
//! closed at accept; our own user's are capped and must send their headers in
//! time; and many processes asking at once during one touch all get a token
//! through the agent's limited connections.

use crate::common;
use crate::shim_common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::other_uid::{Holder, Mode, Target};
use common::*;
use shim_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use touchgate_tests::emulator::CallKind;

const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
/// A request whose headers never end.
const HALF_SENT: &[u8] =
    b"GET /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: 127.0.0.1\r\n";

/// Read `s` to its end (the server closed it) within `within`; what it sent.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration, what: &str) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {within:?}"))
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_half_sent_requests_do_not_starve_the_owner() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    assert!(
        Command::new("prlimit").arg("--version").output().is_ok(),
        "prlimit is missing: install util-linux"
    );
    // A desktop's usual limit on open files: 1,100 held connections would use them all.
    let shim =
        ShimProc::start_wrapped(&["prlimit", "--nofile=1024:1024", "--"], &agent.socket, &[]);
    let holder = Holder::start_as_nobody(Target::Tcp(&shim.addr), 1100, HALF_SENT, Mode::Hold);
    holder.wait_open(1100);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let r = http
        .get(format!("{}{TOKEN_PATH}", shim.url))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the owner gets no answer while another user holds 1,100 half-sent requests: {e}; shim: {}",
                shim.stderr()
            )
        });
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));

    // The shim closed every one of the other user's connections, unread.
    holder.wait_line(
        "all closed",
        Duration::from_secs(30),
        "the shim closes another user's connections at accept",
    );
    assert!(
        shim.stderr().contains("from uid 65534"),
        "the refusal is logged: {}",
        shim.stderr()
    );
    assert_eq!(emu.state().count(CallKind::GenerateAccessToken), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn our_own_half_sent_and_idle_connections_are_closed_after_the_header_timeout() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &["--header-timeout", "1"]);

    let mut half_sent = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(&shim.addr).await.unwrap();
        s.write_all(HALF_SENT).await.unwrap();
        half_sent.push(s);
    }
    // A kept-alive connection left idle after a complete request.
    let mut idle = tokio::net::TcpStream::connect(&shim.addr).await.unwrap();
    idle.write_all(
        b"GET /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata-Flavor: Google\r\n\r\n",
    )
    .await
    .unwrap();

    let started = Instant::now();
    for s in &mut half_sent {
        closed_within(s, Duration::from_secs(15), "a half-sent request").await;
    }
    let answer = closed_within(&mut idle, Duration::from_secs(15), "an idle connection").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with(shim_common::PROJECT), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after the timeout, not at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn our_own_connections_beyond_the_cap_are_refused_at_once() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &["--max-connections", "4"]);
    // Four kept-alive connections, each answered once (so each holds its place).
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(&shim.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let n = s.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200 "));
        held.push(s);
    }
    let request = "GET /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n";
    let mut fifth = tokio::net::TcpStream::connect(&shim.addr).await.unwrap();
    fifth.write_all(request.as_bytes()).await.unwrap();
    let answer = closed_within(&mut fifth, Duration::from_secs(5), "the fifth connection").await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("--max-connections"), "{answer}");

    // A connection given back makes room (the shim sees it close).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = tokio::net::TcpStream::connect(&shim.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let answer = closed_within(&mut s, Duration::from_secs(5), "a new connection").await;
        if answer.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed: {answer}"
        );
        tokio::task::yield_now().await;
    }
}

/// Client ends of established connections to `port` on 127.0.0.1, from `/proc/net/tcp`.
fn established_to(port: u16) -> usize {
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == remote && f[3] == "01"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_processes_during_one_pending_touch_all_get_the_token() {
    const CALLERS: usize = 100;
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "10m", "")
        .replace("touch_timeout = \"10s\"", "touch_timeout = \"60s\"");
    let (agent, touch) = enrolled_in_process(&cfg, &key_json).await;
    let before = touch.requested();
    let shim = ShimProc::start(&agent.socket, &[]);
    let port: u16 = shim.addr.rsplit_once(':').unwrap().1.parse().unwrap();

    // A hundred processes (each its own caller) ask for a token at once.
    let url = format!("{}{TOKEN_PATH}", shim.url);
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut c = Command::new("curl");
            c.args([
                "-sS",
                "--max-time",
                "90",
                "-H",
                "Metadata-Flavor: Google",
                "-w",
                "\n%{http_code}",
                &url,
            ]);
            tokio::spawn(run(c))
        })
        .collect();
    // The touch is asked for, and stays pending until every caller is waiting.
    let t = touch.clone();
    let asked =
        tokio::task::spawn_blocking(move || t.wait_requested(before + 1, Duration::from_secs(60)))
            .await
            .unwrap();
    assert!(asked, "no touch was asked for; shim: {}", shim.stderr());
    // Nothing announces a new connection to the shim: the kernel's table is polled.
    let deadline = Instant::now() + Duration::from_secs(60);
    while established_to(port) < CALLERS {
        assert!(
            Instant::now() < deadline,
            "only {} of {CALLERS} callers connected",
            established_to(port)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    touch.approve();

    let mut tokens = std::collections::HashSet::new();
    for c in callers {
        let o = c.await.unwrap();
        let out = stdout(&o);
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", &out));
        assert_eq!(code, "200", "{body}{}", stderr(&o));
        let t: serde_json::Value = serde_json::from_str(body).unwrap();
        tokens.insert(t["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(tokens.len(), 1, "one token, from one touch");
    assert_eq!(touch.requested(), before + 1, "one touch for all");
    assert_eq!(emu.state().count(CallKind::GenerateAccessToken), 1);
}
