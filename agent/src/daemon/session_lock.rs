//! Lock when the user's session locks or the machine goes to sleep.
//!
//! systemd-logind says both on the *system* bus:
//! - `org.freedesktop.login1.Manager.PrepareForSleep(true)`, just before a
//!   suspend or hibernate: lock with the reason "going to sleep";
//! - `org.freedesktop.login1.Session.Lock` on a session object (`loginctl
//!   lock-session`, `loginctl lock-sessions`, the desktop's idle and lid
//!   policies), and the session's `LockedHint` turning true (what a desktop
//!   sets when its lock screen is up): lock with the reason "session locked".
//!
//! Which session: the agent normally runs as a systemd user service, which is
//! in no logind session (no `XDG_SESSION_ID`; `GetSessionByPID` fails), and one
//! agent serves every session of its user. So the agent listens to `Lock` and
//! `LockedHint` on every session object and acts when that session's `User` is
//! our uid (one time-boxed `Properties.Get` per signal). That is right both
//! inside a session and under the user manager, and needs no bookkeeping of
//! sessions coming and going. Another user's session locking is ignored.
//!
//! Only signals from the owner of `org.freedesktop.login1` are delivered (the
//! match rules name it as sender; on the system bus only logind may own it).
//! Both locks go through [`Agent::lock`], the path of `touchgate lock` and
//! SIGUSR1: the audit record, the dropped tokens and the waiting callers are
//! the same. `[agent] lock_on_sleep` and `lock_on_session_lock` are read at
//! each signal, so `touchgate reload` applies them at once.
//!
//! logind does not wait for a signal's listeners, so on its own the machine
//! could suspend before the lock ran, and right after resume a request could
//! be served from the cache before the queued `PrepareForSleep(true)` is
//! handled. So, with `lock_on_sleep` on, the agent holds a *delay* inhibitor
//! lock: `Manager.Inhibit("sleep", "touchgate", ..., "delay")` returns a file
//! descriptor, and logind holds a suspend back (up to its `InhibitDelayMaxSec`)
//! until every such descriptor is closed. On `PrepareForSleep(true)` the agent
//! locks first, then closes its descriptor; on `PrepareForSleep(false)`
//! (resume) it takes a new one. The inhibitor is taken when the watcher
//! subscribes, and at a resume if none is held: after a reload turns
//! `lock_on_sleep` on, the next sleep locks but is not held back, the ones
//! after are; turned off, the held one is still released at the next sleep and
//! no new one is taken. Inhibit refused or unanswered: one debug line, and the
//! lock still follows the signal, only without holding the sleep back.
//!
//! No system bus or no logind: one debug line and the agent carries on. The
//! watcher runs on its own task and its connection and calls are time-boxed,
//! so start-up and issuance never wait for it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use zbus::export::futures_core::Stream;
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedFd, OwnedVariant};

use crate::caller::Caller;
use crate::service::agent::Agent;

const LOGIND: &str = "org.freedesktop.login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";
const SESSION: &str = "org.freedesktop.login1.Session";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// How long connecting and subscribing to the system bus may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long asking logind whose session locked, or for an inhibitor, may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The `Manager.Inhibit` arguments: what, who, why, mode.
const INHIBIT_WHAT: &str = "sleep";
const INHIBIT_WHO: &str = "touchgate";
const INHIBIT_WHY: &str = "lock the agent before sleep";
const INHIBIT_MODE: &str = "delay";

/// The lock reasons (in `touchgate status` and the audit log).
pub const SLEEP_REASON: &str = "going to sleep";
pub const SESSION_REASON: &str = "session locked";

/// Watch logind for the life of the agent, on the current tokio runtime
/// (none: nothing is watched). Returns at once.
pub fn spawn(agent: &Arc<Agent>) -> Option<tokio::task::JoinHandle<()>> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let weak = Arc::downgrade(agent);
    Some(rt.spawn(async move {
        if let Err(e) = watch(weak).await {
            tracing::debug!("no lock on session lock or sleep: {e}");
        }
    }))
}

struct Streams {
    conn: Connection,
    sleep: MessageStream,
    lock: MessageStream,
    changed: MessageStream,
}

async fn subscribe() -> Result<Streams, String> {
    let conn = zbus::connection::Builder::system()
        .build()
        .await
        .map_err(|e| format!("cannot connect to the system bus: {e}"))?;
    let has_logind: bool = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "NameHasOwner",
            &(LOGIND,),
        )
        .await
        .and_then(|m| m.body().deserialize())
        .map_err(|e| format!("cannot ask the system bus about logind: {e}"))?;
    if !has_logind {
        return Err("systemd-logind is not on the system bus".into());
    }
    let sender = format!("type='signal',sender='{LOGIND}'");
    let rules = [
        format!("{sender},path='/org/freedesktop/login1',interface='{MANAGER}',member='PrepareForSleep'"),
        format!("{sender},interface='{SESSION}',member='Lock'"),
        format!("{sender},interface='{PROPERTIES}',member='PropertiesChanged',arg0='{SESSION}'"),
    ];
    let [sleep, lock, changed] =
        rules.map(|r| MatchRule::try_from(r.as_str()).map(|r| r.to_owned()));
    let (sleep, lock, changed) = match (sleep, lock, changed) {
        (Ok(s), Ok(l), Ok(c)) => (s, l, c),
        _ => return Err("cannot build the logind match rules".into()),
    };
    let sub = |r: MatchRule<'static>| MessageStream::for_match_rule(r, &conn, None);
    let fail = |e: zbus::Error| format!("cannot subscribe to logind signals: {e}");
    let sleep = sub(sleep).await.map_err(fail)?;
    let lock = sub(lock).await.map_err(fail)?;
    let changed = sub(changed).await.map_err(fail)?;
    Ok(Streams {
        conn,
        sleep,
        lock,
        changed,
    })
}

async fn next(s: &mut MessageStream) -> Option<zbus::Result<Message>> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

enum Event {
    Sleep,
    Wake,
    SessionLock(String),
}

async fn watch(agent: Weak<Agent>) -> Result<(), String> {
    let mut s = match tokio::time::timeout(CONNECT_TIMEOUT, subscribe()).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(format!(
                "the system bus did not answer within {} ms",
                CONNECT_TIMEOUT.as_millis()
            ))
        }
    };
    tracing::debug!("watching logind for session locks and sleep");
    // Held while lock_on_sleep is on: logind waits for its closing to suspend.
    let mut inhibitor: Option<OwnedFd> = None;
    match agent.upgrade() {
        Some(a) if a.config().agent.lock_on_sleep => inhibitor = inhibit(&s.conn).await,
        Some(_) => {}
        None => return Ok(()),
    }
    loop {
        let msg = tokio::select! {
            m = next(&mut s.sleep) => m,
            m = next(&mut s.lock) => m,
            m = next(&mut s.changed) => m,
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::debug!("bad message from logind: {e}");
                continue;
            }
            None => return Err("the system bus connection closed".into()),
        };
        let Some(event) = event(&msg) else { continue };
        let Some(agent) = agent.upgrade() else {
            return Ok(());
        };
        let settings = agent.config().agent.clone();
        match event {
            Event::Sleep => {
                if settings.lock_on_sleep {
                    agent.lock_recorded(&Caller::default(), SLEEP_REASON).await;
                } else {
                    tracing::debug!("going to sleep: not locking (agent.lock_on_sleep = false)")
                }
                // Only now, after the lock: logind may suspend once this is closed.
                if inhibitor.take().is_some() {
                    tracing::debug!("sleep inhibitor released");
                }
            }
            Event::Wake => {
                if settings.lock_on_sleep && inhibitor.is_none() {
                    inhibitor = inhibit(&s.conn).await;
                }
            }
            Event::SessionLock(path) if settings.lock_on_session_lock => {
                match session_uid(&s.conn, &path).await {
                    Ok(uid) if uid == touchgate::paths::current_uid() => {
                        agent
                            .lock_recorded(&Caller::default(), SESSION_REASON)
                            .await;
                    }
                    Ok(uid) => tracing::debug!(
                        session = %path,
                        uid,
                        "another user's session locked: not locking"
                    ),
                    Err(e) => tracing::debug!(
                        session = %path,
                        "a session locked but logind did not say whose: not locking: {e}"
                    ),
                }
            }
            Event::SessionLock(path) => tracing::debug!(
                session = %path,
                "session locked: not locking (agent.lock_on_session_lock = false)"
            ),
        }
    }
}

/// What a logind signal means to us (None: nothing).
fn event(msg: &Message) -> Option<Event> {
    let header = msg.header();
    let path = header.path()?.to_string();
    match (header.interface()?.as_str(), header.member()?.as_str()) {
        (MANAGER, "PrepareForSleep") => {
            let (start,): (bool,) = msg.body().deserialize().ok()?;
            Some(if start { Event::Sleep } else { Event::Wake })
        }
        (SESSION, "Lock") => Some(Event::SessionLock(path)),
        (PROPERTIES, "PropertiesChanged") => {
            let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                msg.body().deserialize().ok()?;
            let locked = changed
                .get("LockedHint")
                .and_then(|v| bool::try_from(v.clone()).ok())
                .unwrap_or(false);
            (iface == SESSION && locked).then_some(Event::SessionLock(path))
        }
        _ => None,
    }
}

/// A delay inhibitor lock on sleep (None, after a debug line: logind refused
/// or did not answer in time). Closing it lets a pending suspend proceed.
async fn inhibit(conn: &Connection) -> Option<OwnedFd> {
    let call = conn.call_method(
        Some(LOGIND),
        "/org/freedesktop/login1",
        Some(MANAGER),
        "Inhibit",
        &(INHIBIT_WHAT, INHIBIT_WHO, INHIBIT_WHY, INHIBIT_MODE),
    );
    let fd = match tokio::time::timeout(LOOKUP_TIMEOUT, call).await {
        Err(_) => Err(format!(
            "no answer within {} ms",
            LOOKUP_TIMEOUT.as_millis()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(reply)) => reply
            .body()
            .deserialize::<(OwnedFd,)>()
            .map(|(fd,)| fd)
            .map_err(|e| e.to_string()),
    };
    match fd {
        Ok(fd) => {
            tracing::debug!("holding a sleep delay inhibitor: sleep waits for the lock");
            Some(fd)
        }
        Err(e) => {
            tracing::debug!("no sleep delay inhibitor (the lock may come after the suspend): {e}");
            None
        }
    }
}

/// The uid that owns the logind session at `path` (its `User` property, `(uo)`).
async fn session_uid(conn: &Connection, path: &str) -> Result<u32, String> {
    let call = conn.call_method(
        Some(LOGIND),
        path,
        Some(PROPERTIES),
        "Get",
        &(SESSION, "User"),
    );
    let reply = tokio::time::timeout(LOOKUP_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {} ms", LOOKUP_TIMEOUT.as_millis()))?
        .map_err(|e| e.to_string())?;
    let user: OwnedVariant = reply.body().deserialize().map_err(|e| e.to_string())?;
    let (uid, _): (u32, zbus::OwnedObjectPath) =
        user.try_into().map_err(|e: zbus::Error| e.to_string())?;
    Ok(uid)
}
