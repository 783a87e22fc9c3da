//! Desktop notifications on a private D-Bus session: a `dbus-daemon` of the
//! test's own and a recording org.freedesktop.Notifications server (zbus).

use crate::common;

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use common::bus::Bus;
use common::*;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use zbus::export::futures_core::Stream;
use zbus::OwnedVariant;

/// The time box of the test configs (`[notify] timeout`).
const TIME_BOX: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_secs(2);

/// One Notify call the server saw.
#[derive(Debug)]
struct Seen {
    app: String,
    summary: String,
    body: String,
}

/// Own org.freedesktop.Notifications on `address` and record every Notify
/// call; with `hang`, accept Notify calls but never answer them.
async fn notification_server(address: &str, hang: bool) -> UnboundedReceiver<Seen> {
    let conn = zbus::connection::Builder::address(address)
        .build()
        .await
        .unwrap();
    let mut stream = zbus::MessageStream::from(&conn);
    conn.request_name("org.freedesktop.Notifications")
        .await
        .unwrap();
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        let mut id = 0u32;
        while let Some(Ok(msg)) =
            std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
        {
            let header = msg.header();
            if msg.message_type() != zbus::message::Type::MethodCall
                || header.interface().map(|i| i.as_str()) != Some("org.freedesktop.Notifications")
            {
                continue;
            }
            let member = header.member().map(|m| m.to_string()).unwrap_or_default();
            let _ = match member.as_str() {
                "Notify" => {
                    id += 1;
                    record(&msg, &tx);
                    if hang {
                        continue;
                    }
                    conn.reply(&header, &(id,)).await
                }
                "GetCapabilities" => conn.reply(&header, &(vec!["body".to_string()],)).await,
                "GetServerInformation" => {
                    conn.reply(&header, &("recorder", "touchgate-tests", "0", "1.2"))
                        .await
                }
                _ => conn.reply(&header, &()).await,
            };
        }
    });
    rx
}

type NotifyArgs = (
    String,
    u32,
    String,
    String,
    String,
    Vec<String>,
    HashMap<String, OwnedVariant>,
    i32,
);

fn record(msg: &zbus::Message, tx: &UnboundedSender<Seen>) {
    let (app, _, _, summary, body, ..): NotifyArgs = msg.body().deserialize().unwrap();
    let _ = tx.send(Seen { app, summary, body });
}

async fn next(rx: &mut UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no notification within 10 s")
        .expect("server stopped")
}

fn config(base_url: &str, touch_mode: &str, touch_timeout: &str) -> String {
    config_text(base_url, touch_mode, "every-token", "").replace(
        "touch_timeout = \"10s\"",
        &format!("touch_timeout = \"{touch_timeout}\""),
    ) + &format!(
        "\n[notify]\nenabled = true\ntimeout = \"{}ms\"\n",
        TIME_BOX.as_millis()
    )
}

/// An enrolled agent with the emulator's credential imported, on `bus`,
/// restarted with the soft key in `touch_mode`.
async fn agent_on(
    bus: &Bus,
    touch_mode: &str,
    touch_timeout: &str,
) -> (AgentProc, touchgate_tests::emulator::EmulatorHandle) {
    let (emu, key_json) = emulator().await;
    let env = vec![(
        "DBUS_SESSION_BUS_ADDRESS".to_string(),
        std::ffi::OsString::from(&bus.address),
    )];
    let mut agent = AgentProc::start_with_env(&config(&emu.base_url(), "auto", "10s"), env);
    assert!(agent.cli(&["enroll"]).status.success());
    let f = agent.dir.path().join("sa-key.json");
    std::fs::write(&f, &key_json).unwrap();
    let o = agent.cli(&["import", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    agent.stop();
    std::fs::write(
        agent.dir.path().join("config.toml"),
        config(&emu.base_url(), touch_mode, touch_timeout),
    )
    .unwrap();
    agent.child = Some(agent.spawn_agent("debug"));
    (agent, emu)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn touch_notification_names_the_caller_and_the_outcome() {
    let bus = Bus::start();
    let mut seen = notification_server(&bus.address, false).await;
    // A touch that never comes: the nudge fires after 300 ms, then the touch times out.
    let (agent, _emu) = agent_on(&bus, "never", "2s").await;
    let o = agent.cli(&["token"]);
    assert_one_line_error(&o, "no touch on the security key within 2s");

    let touch = next(&mut seen).await;
    assert_eq!(touch.app, "touchgate");
    assert_eq!(touch.summary, "Touch your security key");
    assert!(
        touch.body.starts_with("touchgate (pid ")
            && touch.body.ends_with(&format!(
                "asks for `inference` in project touchgate-test: service account {INFERENCE}, \
                 scopes cloud-platform, token lifetime 15m, this token only"
            )),
        "the caller's name, profile and project, and what the touch approves: {}",
        touch.body
    );
    let done = next(&mut seen).await;
    assert_eq!(done.summary, "Touch timed out");
    assert!(done.body.contains("touchgate (pid "), "{}", done.body);
    assert!(
        !agent.stderr().contains("no desktop notification"),
        "shown without trouble: {}",
        agent.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_notification_server_does_not_delay_the_token() {
    let bus = Bus::start();
    let mut seen = notification_server(&bus.address, true).await;
    let (agent, _emu) = agent_on(&bus, "auto", "10s").await;
    // Every token is a touch, and every touch a notification the server never answers.
    for round in 0..3 {
        let t = Instant::now();
        let o = agent.cli(&["token"]);
        let took = t.elapsed();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).starts_with("ya29."));
        assert!(
            took < TIME_BOX + SLACK,
            "round {round}: the token took {took:?} with a hanging notification server"
        );
        let n = next(&mut seen).await;
        assert_eq!(n.summary, "Token issued", "round {round}");
        assert!(!n.body.contains("ya29."), "no token in a notification");
    }
    // The agent says once that the server does not answer, and carries on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.stderr().contains("did not answer within 500 ms") {
        assert!(
            Instant::now() < deadline,
            "no log line about the hanging server: {}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_session_bus_is_logged_and_tokens_still_flow() {
    {
        let (emu, key_json) = emulator().await;
        let env = vec![(
            "DBUS_SESSION_BUS_ADDRESS".to_string(),
            std::ffi::OsString::from("unix:path=/nonexistent/touchgate-test-bus"),
        )];
        let agent = AgentProc::start_with_env(&config(&emu.base_url(), "auto", "10s"), env);
        assert!(agent.cli(&["enroll"]).status.success());
        let f = agent.dir.path().join("sa-key.json");
        std::fs::write(&f, &key_json).unwrap();
        assert!(agent.cli(&["import", f.to_str().unwrap()]).status.success());
        for _ in 0..2 {
            let o = agent.cli(&["token"]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        // Seen without a connection attempt: the bus's socket is not there.
        while !agent
            .stderr()
            .contains("no D-Bus session bus (nothing at /nonexistent/touchgate-test-bus)")
        {
            assert!(Instant::now() < deadline, "{}", agent.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
