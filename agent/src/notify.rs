//! Desktop notifications: "Touch your security key — python3 (pid 4242) asks
//! for `train` in project P", then whether a token was issued, the touch
//! refused or timed out.
//!
//! A notification never holds up a token: [`Notifier::notify`] only queues it.
//! The [`Desktop`] notifier shows it from its own thread, each one time-boxed
//! (a notification server that never answers costs that thread the time box,
//! nothing else). No session bus: logged once, then carry on. A notification
//! carries names only — never a token or a secret.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
#[cfg(any(test, feature = "testing"))]
use std::sync::Mutex;
use std::time::Duration;

#[cfg(any(test, feature = "testing"))]
use touchgate::sync::MutexExt;

use crate::caller::Caller;
use crate::policy::Approval;

use crate::config::NotifySettings;
/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TouchNeeded,
    Issued,
    Denied,
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub kind: Kind,
    pub summary: String,
    pub body: String,
}

impl Notification {
    /// The key waits for a touch: who asks, for which profile and project, and
    /// what the touch approves (service account, scopes, lifetime, window).
    pub fn touch_needed(
        caller: &Caller,
        approval: &Approval,
        project: Option<&str>,
    ) -> Notification {
        Notification {
            kind: Kind::TouchNeeded,
            summary: "Touch your security key".into(),
            body: format!(
                "{caller} asks for `{}`{}: {approval}",
                approval.profile,
                in_project(project)
            ),
        }
    }

    /// How a touch ended: `kind` is Issued, Denied or TimedOut.
    pub fn outcome(
        kind: Kind,
        caller: &Caller,
        profile: &str,
        project: Option<&str>,
    ) -> Notification {
        let summary = match kind {
            Kind::Issued => "Token issued",
            Kind::Denied => "Touch refused",
            Kind::TimedOut => "Touch timed out",
            Kind::TouchNeeded => "Touch your security key",
        };
        let body = match kind {
            Kind::Issued => format!("for {caller}: `{profile}`{}", in_project(project)),
            _ => format!(
                "{caller} asked for `{profile}`{}; nothing was issued",
                in_project(project)
            ),
        };
        Notification {
            kind,
            summary: summary.into(),
            body,
        }
    }
}

fn in_project(project: Option<&str>) -> String {
    project
        .map(|p| format!(" in project {p}"))
        .unwrap_or_default()
}

/// Shows notifications. `notify` must return at once: it is called on the issuance path.
pub trait Notifier: Send + Sync {
    fn notify(&self, n: &Notification);
}

/// Notifications switched off (`[notify] enabled = false`).
pub struct Off;

impl Notifier for Off {
    fn notify(&self, _: &Notification) {}
}

#[cfg(any(test, feature = "testing"))]
/// Keeps every notification (tests).
#[derive(Default)]
pub struct Recording(pub Mutex<Vec<Notification>>);

#[cfg(any(test, feature = "testing"))]
impl Recording {
    pub fn taken(&self) -> Vec<Notification> {
        self.0.locked().clone()
    }
}

#[cfg(any(test, feature = "testing"))]
impl Notifier for Recording {
    fn notify(&self, n: &Notification) {
        self.0.locked().push(n.clone());
    }
}

/// The notifier the config asks for.
pub fn from_settings(s: &NotifySettings) -> std::sync::Arc<dyn Notifier> {
    if s.enabled {
        std::sync::Arc::new(Desktop::start(s.timeout))
    } else {
        std::sync::Arc::new(Off)
    }
}

/// How many notifications may wait for the notification thread; more are dropped.
const QUEUE: usize = 16;

/// Desktop notifications over the D-Bus session bus (notify-rust, zbus), from
/// a dedicated thread, each time-boxed.
pub struct Desktop {
    tx: SyncSender<Notification>,
}

impl Desktop {
    /// Start the notification thread; it ends when the notifier is dropped.
    pub fn start(timeout: Duration) -> Desktop {
        let (tx, rx) = sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("touchgate-notify".into())
            .spawn(move || show_all(rx, timeout));
        if let Err(e) = spawned {
            tracing::warn!("desktop notifications are off: cannot start their thread: {e}");
        }
        Desktop { tx }
    }
}

impl Notifier for Desktop {
    fn notify(&self, n: &Notification) {
        match self.tx.try_send(n.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!(summary = %n.summary, "notification dropped: the notification server is not keeping up")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn show_all(rx: Receiver<Notification>, timeout: Duration) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("desktop notifications are off: cannot start their runtime: {e}");
            return;
        }
    };
    let mut warned = false;
    for n in rx {
        let problem = match no_session_bus() {
            Some(why) => format!("no desktop notification ({}): {why}", n.summary),
            None => match shown(&rt, &n, timeout) {
                Some(problem) => problem,
                None => continue,
            },
        };
        if warned {
            tracing::debug!("{problem}");
        } else {
            tracing::warn!("{problem} (further failures are logged at debug level; set [notify] enabled = false to silence)");
            warned = true;
        }
    }
}

/// Show `n`, time-boxed; what went wrong, if anything.
fn shown(rt: &tokio::runtime::Runtime, n: &Notification, timeout: Duration) -> Option<String> {
    // The timer is made inside the runtime (it needs its context).
    let shown = rt.block_on(async { tokio::time::timeout(timeout, show(n)).await });
    let problem = match shown {
        Ok(Ok(())) => {
            tracing::debug!(summary = %n.summary, "notification shown");
            return None;
        }
        Ok(Err(e)) => format!(
            "no desktop notification ({}): {}",
            n.summary,
            e.to_string().replace('\n', " ")
        ),
        Err(_) => format!(
            "no desktop notification ({}): the notification server did not answer within {} ms",
            n.summary,
            timeout.as_millis()
        ),
    };
    Some(problem)
}

/// Why no notification can be shown, when that is plain without trying:
/// the session bus address names only socket files, and none exists (no
/// desktop session: an SSH login, a CI runner). Trying costs a connection
/// attempt on every touch (about 0.15 ms of CPU each issuance on a 2-core
/// machine, next to the mint); looking costs a `stat`. Looked at for every
/// notification, so a bus that appears later is used.
#[cfg(not(target_os = "macos"))]
fn no_session_bus() -> Option<String> {
    let address = std::env::var("DBUS_SESSION_BUS_ADDRESS").ok();
    let runtime_dir = std::env::var("XDG_RUNTIME_DIR").ok();
    let sockets = bus_sockets(
        address.as_deref(),
        runtime_dir.as_deref(),
        touchgate::paths::current_uid(),
    )?;
    if sockets.iter().any(|p| std::path::Path::new(p).exists()) {
        return None;
    }
    Some(format!(
        "no D-Bus session bus (nothing at {})",
        sockets.join(", ")
    ))
}

/// macOS shows notifications without D-Bus.
#[cfg(target_os = "macos")]
fn no_session_bus() -> Option<String> {
    None
}

/// The socket files a D-Bus client would try for the session bus (as zbus
/// finds it: `DBUS_SESSION_BUS_ADDRESS`, else `$XDG_RUNTIME_DIR/bus`, else
/// `/run/user/UID/bus`); `None` when the address names anything else (an
/// abstract socket, TCP, an escaped path), which only trying can tell.
#[cfg_attr(target_os = "macos", allow(dead_code))]
fn bus_sockets(address: Option<&str>, runtime_dir: Option<&str>, uid: u32) -> Option<Vec<String>> {
    let Some(address) = address else {
        let dir = runtime_dir.map_or_else(|| format!("/run/user/{uid}"), str::to_owned);
        return Some(vec![format!("{dir}/bus")]);
    };
    let mut paths = Vec::new();
    for one in address.split(';').filter(|a| !a.is_empty()) {
        let params = one.strip_prefix("unix:")?;
        let path = params
            .split(',')
            .find_map(|kv| kv.strip_prefix("path="))
            .filter(|p| !p.contains('%'))?;
        paths.push(path.to_owned());
    }
    (!paths.is_empty()).then_some(paths)
}

async fn show(n: &Notification) -> Result<(), notify_rust::error::Error> {
    let mut note = notify_rust::Notification::new();
    note.appname("touchgate")
        .summary(&n.summary)
        .body(&n.body)
        .icon("security-high");
    // Urgency is a freedesktop hint; macOS's notification centre has none.
    #[cfg(not(target_os = "macos"))]
    note.urgency(match n.kind {
        Kind::TouchNeeded => notify_rust::Urgency::Critical,
        _ => notify_rust::Urgency::Normal,
    });
    #[cfg(not(target_os = "macos"))]
    return note.show_async().await.map(|_| ());
    // macOS: the notification centre call blocks; the caller's time box still
    // bounds how long issuance waits for it.
    #[cfg(target_os = "macos")]
    return match tokio::task::spawn_blocking(move || note.show().map(|_| ())).await {
        Ok(r) => r,
        Err(_) => Err("the notification task stopped".into()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn caller() -> Caller {
        Caller {
            pid: Some(4242),
            exe: Some("/usr/bin/python3".into()),
            ..Default::default()
        }
    }

    fn approval(name: &str) -> Approval {
        let profile = crate::config::Profile {
            service_account: Some("trainer@p.iam.gserviceaccount.com".into()),
            lifetime: Duration::from_secs(300),
            ..Default::default()
        };
        Approval::new(name, &profile, &profile.scopes)
    }

    #[test]
    fn the_session_bus_sockets_are_those_a_client_would_try() {
        let sockets = |a, d| bus_sockets(a, d, 1000);
        assert_eq!(sockets(None, None), Some(vec!["/run/user/1000/bus".into()]));
        assert_eq!(
            sockets(None, Some("/run/user/7")),
            Some(vec!["/run/user/7/bus".into()])
        );
        assert_eq!(
            sockets(Some("unix:path=/tmp/a,guid=00ff;unix:path=/tmp/b"), None),
            Some(vec!["/tmp/a".into(), "/tmp/b".into()])
        );
        // Only trying can tell about these.
        assert_eq!(sockets(Some("unix:abstract=/tmp/dbus-x"), None), None);
        assert_eq!(sockets(Some("tcp:host=127.0.0.1,port=1"), None), None);
        assert_eq!(sockets(Some("unix:path=/tmp/a;tcp:host=h"), None), None);
        assert_eq!(sockets(Some("unix:path=/tmp/with%20space"), None), None);
        assert_eq!(sockets(Some(""), None), None);
    }

    #[test]
    fn texts_name_the_caller_profile_and_project() {
        let n = Notification::touch_needed(&caller(), &approval("train"), Some("p"));
        assert_eq!(n.summary, "Touch your security key");
        assert!(
            n.body.contains(
                "python3 (pid 4242) asks for `train` in project p: service account \
                 trainer@p.iam.gserviceaccount.com, scopes cloud-platform, token lifetime 5m, \
                 this token only"
            ),
            "{}",
            n.body
        );
        let n = Notification::outcome(Kind::TimedOut, &caller(), "train", None);
        assert_eq!(n.summary, "Touch timed out");
        assert!(n.body.contains("nothing was issued"), "{}", n.body);
    }

    #[test]
    fn notify_never_blocks_even_when_the_queue_is_full() {
        // A notification thread stuck on a server that never answers: nothing reads the queue.
        let (tx, _stuck) = sync_channel(QUEUE);
        let d = Desktop { tx };
        let n = Notification::touch_needed(&caller(), &approval("p"), None);
        let t = Instant::now();
        for _ in 0..(QUEUE * 4) {
            d.notify(&n);
        }
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
    }
}
