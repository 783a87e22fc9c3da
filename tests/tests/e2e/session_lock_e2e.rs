//! Locking on systemd-logind's word: the machine going to sleep and a session
//! of this user locking. A private `dbus-daemon` stands in for the system bus
//! (`DBUS_SYSTEM_BUS_ADDRESS`), and a small fake logind (zbus) owns
//! `org.freedesktop.login1` on it, answers whose session is whose, hands out
//! sleep inhibitors (one end of a socket pair; the test keeps the other and
//! sees the agent close its end) and emits the signals.

use crate::common;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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

/// The arguments of `Manager.Inhibit`: what, who, why, mode.
type InhibitArgs = (String, String, String, String);

/// An inhibitor handed out: its arguments and the fake logind's end of the
/// socket pair (the agent holds the other end).
struct Inhibitor {
    args: InhibitArgs,
    end: UnixStream,
}

/// A fake systemd-logind: owns org.freedesktop.login1, answers
/// `Properties.Get(Session, "User")` for its sessions, `Manager.Inhibit` (when
/// `grant_inhibit`), emits signals.
struct Logind {
    conn: zbus::Connection,
    inhibitors: Arc<Mutex<Vec<Inhibitor>>>,
}

impl Logind {
    async fn start(address: &str, sessions: HashMap<&'static str, u32>) -> Logind {
        Logind::start_with(address, sessions, true).await
    }

    async fn start_with(
        address: &str,
        sessions: HashMap<&'static str, u32>,
        grant_inhibit: bool,
    ) -> Logind {
        let inhibitors = Arc::new(Mutex::new(Vec::new()));
        let record = inhibitors.clone();
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
                let interface = header
                    .interface()
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                if grant_inhibit
                    && path == MANAGER_PATH
                    && interface == "org.freedesktop.login1.Manager"
                    && member == "Inhibit"
                {
                    let args: InhibitArgs = msg.body().deserialize().unwrap();
                    let (ours, theirs) = UnixStream::pair().unwrap();
                    server
                        .reply(&header, &(zbus::Fd::from(&theirs),))
                        .await
                        .unwrap();
                    // Only the agent's copy of `theirs` is left open now.
                    drop(theirs);
                    record.lock().unwrap().push(Inhibitor { args, end: ours });
                    continue;
                }
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
        Logind { conn, inhibitors }
    }

    fn inhibitor_count(&self) -> usize {
        self.inhibitors.lock().unwrap().len()
    }

    /// Wait until `n` inhibitors were taken; returns the arguments of each.
    fn wait_inhibitors(&self, n: usize) -> Vec<InhibitArgs> {
        let deadline = Instant::now() + DEADLINE;
        while self.inhibitor_count() < n {
            assert!(
                Instant::now() < deadline,
                "no {n} inhibitor(s) taken in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let all = self.inhibitors.lock().unwrap();
        all.iter().map(|i| i.args.clone()).collect()
    }

    /// Whether the agent still holds inhibitor `i` open (no EOF on our end).
    fn held(&self, i: usize) -> bool {
        let all = self.inhibitors.lock().unwrap();
        let mut end = &all[i].end;
        end.set_nonblocking(true).unwrap();
        let r = end.read(&mut [0u8; 1]);
        end.set_nonblocking(false).unwrap();
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Ok(0) => false,
            other => panic!("unexpected read on inhibitor {i}: {other:?}"),
        }
    }

    /// Wait (up to the deadline) for the agent to close inhibitor `i`: EOF on our end.
    fn wait_released(&self, i: usize) {
        let all = self.inhibitors.lock().unwrap();
        let mut end = &all[i].end;
        end.set_read_timeout(Some(DEADLINE)).unwrap();
        match end.read(&mut [0u8; 1]) {
            Ok(0) => {}
            other => panic!("inhibitor {i} not released in time: {other:?}"),
        }
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

    // At start the agent takes a delay inhibitor on sleep, and holds it.
    let sleep_delay: InhibitArgs = (
        "sleep".into(),
        "touchgate".into(),
        "lock the agent before sleep".into(),
        "delay".into(),
    );
    assert_eq!(logind.wait_inhibitors(1), vec![sleep_delay.clone()]);
    assert!(logind.held(0), "the inhibitor is held until sleep");

    // Another user's session locking, and waking up, change nothing.
    logind.prepare_for_sleep(false).await;
    logind.lock(THEIRS).await;
    wait_log(&agent, "another user's session locked: not locking", 1);
    assert!(!agent.ok(&["status"]).contains("locked:"));
    token_without_touch(&agent);

    assert!(logind.held(0));

    // Going to sleep: the agent locks, then releases the inhibitor; so at the
    // release the lock is already in place and on record.
    logind.prepare_for_sleep(true).await;
    logind.wait_released(0);
    assert_eq!(
        lock_records(&agent),
        vec!["going to sleep; 1 cached token(s) dropped"],
        "locked before the inhibitor was released"
    );
    assert!(agent.ok(&["status"]).contains("locked: going to sleep"));
    assert_locked_then_unlock(&agent, "going to sleep");

    // Resumed: a new inhibitor, held for the next sleep.
    logind.prepare_for_sleep(false).await;
    assert_eq!(
        logind.wait_inhibitors(2),
        vec![sleep_delay.clone(), sleep_delay]
    );
    assert!(logind.held(1));

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
    // The wake-up while an inhibitor was held took no second one.
    assert_eq!(logind.inhibitor_count(), 2);
    assert!(logind.held(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_inhibitor_and_sleep_still_locks() {
    let bus = Bus::start();
    let uid = touchgate::paths::current_uid();
    let logind = Logind::start_with(&bus.address, HashMap::from([(OURS, uid)]), false).await;
    let (emu, key_json) = emulator().await;
    let agent = AgentProc::start_with_env(&config(&emu.base_url(), ""), on_bus(&bus.address));
    agent.enrol_and_import(&key_json);
    assert!(agent.ok(&["token"]).starts_with("ya29."));
    wait_log(&agent, "no sleep delay inhibitor", 1);

    logind.prepare_for_sleep(true).await;
    assert_locked_then_unlock(&agent, "going to sleep");
    // Resumed: it asks again, is refused again, and carries on.
    logind.prepare_for_sleep(false).await;
    wait_log(&agent, "no sleep delay inhibitor", 2);
    assert_eq!(logind.inhibitor_count(), 0);
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

    // A wake-up, then a sleep: handled in order, so once the sleep is logged
    // the wake-up was handled too; neither, nor the start, took an inhibitor.
    logind.prepare_for_sleep(false).await;
    logind.prepare_for_sleep(true).await;
    wait_log(&agent, "not locking (agent.lock_on_sleep = false)", 1);
    assert_eq!(
        logind.inhibitor_count(),
        0,
        "no inhibitor without lock_on_sleep"
    );
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
