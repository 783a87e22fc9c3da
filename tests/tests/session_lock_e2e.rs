//! Locking on systemd-logind's word: the machine going to sleep and a session
//! of this user locking. A private `dbus-daemon` stands in for the system bus
//! (`DBUS_SYSTEM_BUS_ADDRESS`), and a small fake logind (zbus) owns
//! `org.freedesktop.login1` on it, answers whose session is whose and emits
//! the signals.

mod common;

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use common::bus::Bus;
use common::*;
use zbus::export::futures_core::Stream;
use zbus::{ObjectPath, Variant};

const DEADLINE: Duration = Duration::from_secs(15);
/// A session of the user running the tests, and one of another user.
const OURS: &str = "/org/freedesktop/login1/session/_31";
const THEIRS: &str = "/org/freedesktop/login1/session/_32";
const MANAGER_PATH: &str = "/org/freedesktop/login1";
const SUBSCRIBED: &str = "watching logind for session locks and sleep";

/// A fake systemd-logind: owns org.freedesktop.login1, answers
/// `Properties.Get(Session, "User")` for its sessions, emits signals.
struct Logind {
    conn: zbus::Connection,
}

impl Logind {
    async fn start(address: &str, sessions: HashMap<&'static str, u32>) -> Logind {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .unwrap();
        let mut stream = zbus::MessageStream::from(&conn);
        conn.request_name("org.freedesktop.login1").await.unwrap();
        let server = conn.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) =
                std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
            {
                let header = msg.header();
                if msg.message_type() != zbus::message::Type::MethodCall {
                    continue;
                }
                let path = header.path().map(|p| p.to_string()).unwrap_or_default();
                let member = header.member().map(|m| m.to_string()).unwrap_or_default();
                let args: Option<(String, String)> = msg.body().deserialize().ok();
                let asks_user = member == "Get"
                    && args.as_ref().map(|(i, p)| (i.as_str(), p.as_str()))
                        == Some(("org.freedesktop.login1.Session", "User"));
                let _ = match sessions.get(path.as_str()) {
                    Some(&uid) if asks_user => {
                        let user =
                            ObjectPath::try_from(format!("/org/freedesktop/login1/user/_{uid}"))
                                .unwrap();
                        server.reply(&header, &Variant::from((uid, user))).await
                    }
                    _ => {
                        server
                            .reply_error(
                                &header,
                                "org.freedesktop.DBus.Error.UnknownMethod",
                                &("not served by the fake logind",),
                            )
                            .await
                    }
                };
            }
        });
        Logind { conn }
    }

    async fn emit<B>(&self, path: &str, interface: &str, member: &str, body: &B)
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        self.conn
            .emit_signal(None::<&str>, path, interface, member, body)
            .await
            .unwrap();
    }

    async fn prepare_for_sleep(&self, start: bool) {
        self.emit(
            MANAGER_PATH,
            "org.freedesktop.login1.Manager",
            "PrepareForSleep",
            &(start,),
        )
        .await;
    }

    async fn lock(&self, session: &str) {
        self.emit(session, "org.freedesktop.login1.Session", "Lock", &())
            .await;
    }

    async fn locked_hint(&self, session: &str) {
        let changed: HashMap<&str, Variant<'_>> =
            HashMap::from([("LockedHint", Variant::from(true))]);
        self.emit(
            session,
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
            &(
                "org.freedesktop.login1.Session",
                changed,
                Vec::<String>::new(),
            ),
        )
        .await;
    }
}

fn config(base_url: &str, extra_agent: &str) -> String {
    config_text(base_url, "auto", "10m", extra_agent) + "\n[notify]\nenabled = false\n"
}

fn on_bus(address: &str) -> Vec<(String, std::ffi::OsString)> {
    vec![(
        "DBUS_SYSTEM_BUS_ADDRESS".to_string(),
        std::ffi::OsString::from(address),
    )]
}

/// Wait until the agent's log has `n` lines containing `needle`.
fn wait_log(agent: &AgentProc, needle: &str, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    while agent.stderr().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (x{n}) in the agent log: {}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ask `touchgate status` until it says the agent is locked; returns that status.
fn wait_locked(agent: &AgentProc, why: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let st = agent.ok(&["status"]);
        if st.contains(&format!("locked: {why}")) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "not locked ({why}) in time: {st}\nagent log:\n{}",
            agent.stderr()
        );
    }
}

/// `touches: N` of `touchgate status`.
fn touches(agent: &AgentProc) -> u64 {
    let st = agent.ok(&["status"]);
    st.split("touches: ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no touch count in {st}"))
}

/// The `locked` records of the audit log: their reasons.
fn lock_records(agent: &AgentProc) -> Vec<String> {
    let text = std::fs::read_to_string(agent.state_dir().join("audit.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "locked")
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A token is served, and from the cache: no touch.
fn token_without_touch(agent: &AgentProc) {
    let before = touches(agent);
    assert!(agent.ok(&["token"]).starts_with("ya29."));
    assert_eq!(touches(agent), before, "the token came from the cache");
}

/// After a lock: tokens are refused; unlock takes a touch, and so does the
/// next token (the cache and the approval window are gone).
fn assert_locked_then_unlock(agent: &AgentProc, why: &str) {
    let st = wait_locked(agent, why);
    assert!(st.contains("cached tokens: 0"), "{st}");
    assert_one_line_error(
        &agent.cli(&["token"]),
        &format!("the agent is locked ({why})"),
    );
    let before = touches(agent);
    agent.ok(&["unlock"]);
    assert_eq!(touches(agent), before + 1, "unlock takes a touch");
    assert!(agent.ok(&["token"]).starts_with("ya29."));
    assert_eq!(
        touches(agent),
        before + 2,
        "the first token after the lock needs a touch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sleep_and_a_locked_session_lock_the_agent() {
    let bus = Bus::start();
    let uid = touchgate::paths::current_uid();
    let logind = Logind::start(
        &bus.address,
        HashMap::from([(OURS, uid), (THEIRS, uid.wrapping_add(1))]),
    )
    .await;
    let (emu, key_json) = emulator().await;
    let agent = AgentProc::start_with_env(&config(&emu.base_url(), ""), on_bus(&bus.address));
    agent.enrol_and_import(&key_json);
    assert!(agent.ok(&["token"]).starts_with("ya29."));
    token_without_touch(&agent);
    wait_log(&agent, SUBSCRIBED, 1);

    // Another user's session locking, and waking up, change nothing.
    logind.prepare_for_sleep(false).await;
    logind.lock(THEIRS).await;
    wait_log(&agent, "another user's session locked: not locking", 1);
    assert!(!agent.ok(&["status"]).contains("locked:"));
    token_without_touch(&agent);

    logind.prepare_for_sleep(true).await;
    assert_locked_then_unlock(&agent, "going to sleep");

    logind.lock(OURS).await;
    assert_locked_then_unlock(&agent, "session locked");

    // A desktop's lock screen sets the session's LockedHint.
    logind.locked_hint(OURS).await;
    assert_locked_then_unlock(&agent, "session locked");

    let reasons = lock_records(&agent);
    assert_eq!(
        reasons,
        vec![
            "going to sleep; 1 cached token(s) dropped",
            "session locked; 1 cached token(s) dropped",
            "session locked; 1 cached token(s) dropped",
        ],
        "one audit record per lock, with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switched_off_the_signals_are_ignored() {
    let bus = Bus::start();
    let uid = touchgate::paths::current_uid();
    let logind = Logind::start(&bus.address, HashMap::from([(OURS, uid)])).await;
    let (emu, key_json) = emulator().await;
    let agent = AgentProc::start_with_env(
        &config(
            &emu.base_url(),
            "lock_on_sleep = false\nlock_on_session_lock = false",
        ),
        on_bus(&bus.address),
    );
    agent.enrol_and_import(&key_json);
    assert!(agent.ok(&["token"]).starts_with("ya29."));
    wait_log(&agent, SUBSCRIBED, 1);

    logind.prepare_for_sleep(true).await;
    wait_log(&agent, "not locking (agent.lock_on_sleep = false)", 1);
    logind.lock(OURS).await;
    logind.locked_hint(OURS).await;
    wait_log(
        &agent,
        "not locking (agent.lock_on_session_lock = false)",
        2,
    );

    assert!(!agent.ok(&["status"]).contains("locked:"));
    token_without_touch(&agent);
    assert!(lock_records(&agent).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_system_bus_or_no_logind_and_tokens_still_flow() {
    let (emu, key_json) = emulator().await;
    // No system bus at all.
    let agent = AgentProc::start_with_env(
        &config(&emu.base_url(), ""),
        on_bus("unix:path=/nonexistent/touchgate-test-system-bus"),
    );
    agent.enrol_and_import(&key_json);
    assert!(agent.ok(&["token"]).starts_with("ya29."));
    token_without_touch(&agent);
    wait_log(
        &agent,
        "no lock on session lock or sleep: cannot connect to the system bus",
        1,
    );
    drop(agent);

    // A system bus without logind.
    let bus = Bus::start();
    let agent = AgentProc::start_with_env(&config(&emu.base_url(), ""), on_bus(&bus.address));
    agent.enrol_and_import(&key_json);
    assert!(agent.ok(&["token"]).starts_with("ya29."));
    wait_log(&agent, "systemd-logind is not on the system bus", 1);
    assert!(!agent.stderr().contains(SUBSCRIBED));
}
