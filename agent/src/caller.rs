//! Who is on the other end of the socket.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use touchgate::{process, CallerHint};

use crate::policy::subject::Subject;

/// The peer of a connection, from the socket's peer credentials and the
/// kernel's process table (`touchgate::process`), plus what a front end
/// (the shim) says about the program it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    pub uid: u32,
    pub pid: Option<u32>,
    /// The peer's executable (`/proc/PID/exe` on Linux, `proc_pidpath` on macOS).
    pub exe: Option<PathBuf>,
    /// The program on whose behalf the peer asks, as the shim reports it. Only
    /// accepted from `touchgate-shim`: any other peer cannot claim to be someone else.
    pub on_behalf_of: Option<CallerHint>,
    /// Where the peer's user sits (display, terminal), for a PIN dialog.
    pub display: CallerHint,
    /// The program that started the peer, e.g. `bash (pid 77)`, for the prompt.
    pub parent: Option<String>,
}

/// A peer and what one request says about it, before any copy: the
/// [`Caller`] that [`Caller::with_hint`] makes is made only when needed, so a
/// window hit does not copy the caller.
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    peer: &'a Caller,
    hint: Option<&'a CallerHint>,
}

impl<'a> Asking<'a> {
    /// The peer's `on_behalf_of` once the hint is applied.
    pub fn on_behalf_of(&self) -> Option<&'a CallerHint> {
        match self.hint {
            Some(h) if h.names_a_program() && self.peer.is_trusted_shim() => Some(h),
            _ => self.peer.on_behalf_of.as_ref(),
        }
    }

    /// The peer itself (uid, pid, executable: what no hint changes).
    pub fn peer(&self) -> &'a Caller {
        self.peer
    }

    /// The caller with the hint applied, copied only if there is a hint.
    pub fn caller(&self) -> Cow<'a, Caller> {
        match self.hint {
            Some(h) => Cow::Owned(self.peer.with_hint(h)),
            None => Cow::Borrowed(self.peer),
        }
    }
}

impl<'a> From<&'a Caller> for Asking<'a> {
    fn from(peer: &'a Caller) -> Self {
        Asking { peer, hint: None }
    }
}

/// The executable name whose identity claims are believed.
pub const SHIM_EXE: &str = "touchgate-shim";

/// The one shim whose claims are believed: `touchgate-shim` installed beside
/// this agent. A file of any other path that is merely named so (anyone can
/// build one) speaks only for itself.
pub fn trusted_shim() -> Option<&'static Path> {
    static SHIM: OnceLock<Option<PathBuf>> = OnceLock::new();
    SHIM.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        let shim = exe.parent()?.join(SHIM_EXE);
        Some(std::fs::canonicalize(&shim).unwrap_or(shim))
    })
    .as_deref()
}

impl Caller {
    pub fn from_peer(uid: u32, pid: Option<i32>) -> Caller {
        let pid = pid.and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0);
        let exe = pid.and_then(process::exe_of);
        Caller {
            uid,
            pid,
            exe,
            on_behalf_of: None,
            display: CallerHint::default(),
            parent: pid.and_then(parent_of),
        }
    }

    /// This caller with what its request says: the display always, the program it
    /// asks for only when the peer is the shim.
    pub fn with_hint(&self, hint: &CallerHint) -> Caller {
        let mut c = self.clone();
        c.display = CallerHint {
            program: None,
            pid: None,
            ..hint.clone()
        };
        if hint.names_a_program() && self.is_trusted_shim() {
            c.on_behalf_of = Some(hint.clone());
        }
        c
    }

    /// This caller with `hint`, not yet copied (see [`Asking`]).
    pub fn asking<'a>(&'a self, hint: &'a CallerHint) -> Asking<'a> {
        Asking {
            peer: self,
            hint: Some(hint),
        }
    }

    /// The program whose policy applies: the program the shim asks for (when it
    /// could tell), else the peer itself — each with the script it runs, if it
    /// is an interpreter.
    pub fn policy_subject(&self) -> Subject {
        if let Some(pid) = self.on_behalf_of.as_ref().and_then(|h| h.pid) {
            let s = Subject::of_process(pid);
            if s.exe.is_some() {
                return s;
            }
        }
        Subject {
            exe: self.exe.clone(),
            script: self.pid.and_then(process::script_of),
        }
    }

    /// The kubectl that started this peer, when the peer is the trusted shim
    /// (its kubectl plugin) and its parent — as the kernel says, not as the
    /// request says — is an executable named `kubectl` or `kubectl.VERSION`
    /// (gcloud's versioned copies). A kubectl window belongs to that path: a
    /// program elsewhere, a wrapper script or a shell that runs the plugin and
    /// reads its output is not it.
    pub fn kubectl_parent(&self) -> Option<PathBuf> {
        if !self.is_trusted_shim() {
            return None;
        }
        let exe = process::exe_of(process::parent_of(self.pid?)?)?;
        let name = exe.file_name()?.to_str()?;
        (name == "kubectl" || name.starts_with("kubectl.")).then_some(exe)
    }

    /// Whether the peer is the shim installed beside this agent.
    fn is_trusted_shim(&self) -> bool {
        matches!((&self.exe, trusted_shim()), (Some(exe), Some(shim)) if exe == shim)
    }

    /// Short program name of the peer, e.g. `touchgate`.
    pub fn program(&self) -> String {
        self.exe
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown program".into())
    }
}

/// `name (pid N)` of the process that started `pid`, if readable.
fn parent_of(pid: u32) -> Option<String> {
    let ppid = process::parent_of(pid)?;
    let exe = process::exe_of(ppid)?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    Some(format!("{name} (pid {ppid})"))
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.on_behalf_of {
            let prog = h.program.as_deref().unwrap_or("unknown program");
            match h.pid {
                Some(p) => write!(f, "{prog} (pid {p}) via ")?,
                None => write!(f, "{prog} via ")?,
            }
        }
        match self.pid {
            Some(p) => write!(f, "{} (pid {p})", self.program())?,
            None => write!(f, "{} (uid {})", self.program(), self.uid)?,
        }
        match (&self.parent, &self.on_behalf_of) {
            (Some(parent), None) => write!(f, " started by {parent}"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_itself_from_proc() {
        let me = Caller::from_peer(0, Some(std::process::id() as i32));
        assert!(me.exe.is_some());
        let parent = me.parent.clone().expect("the test runner has a parent");
        assert!(
            me.to_string().contains(&format!("started by {parent}")),
            "{me}"
        );
        let s = me.to_string();
        assert!(s.contains(&format!("(pid {})", std::process::id())), "{s}");
    }

    #[test]
    fn only_the_shim_may_speak_for_another_program() {
        let c = Caller {
            uid: 1000,
            pid: Some(10),
            exe: Some("/usr/bin/python3".into()),
            ..Default::default()
        }
        .with_hint(&CallerHint {
            program: Some("gcloud".into()),
            pid: Some(4242),
            display: Some(":1".into()),
            ..Default::default()
        });
        assert_eq!(c.to_string(), "python3 (pid 10)");
        assert_eq!(
            c.display.display.as_deref(),
            Some(":1"),
            "the display is still used"
        );
    }

    #[test]
    fn names_the_program_a_shim_asks_for() {
        let c = Caller {
            uid: 1000,
            pid: Some(10),
            exe: trusted_shim().map(Path::to_path_buf),
            ..Default::default()
        }
        .with_hint(&CallerHint {
            program: Some("gcloud".into()),
            pid: Some(4242),
            ..Default::default()
        });
        assert_eq!(
            c.to_string(),
            "gcloud (pid 4242) via touchgate-shim (pid 10)"
        );
    }

    #[test]
    fn a_program_merely_named_touchgate_shim_speaks_for_itself() {
        let elsewhere = Path::new("/tmp/not-the-installed-one/touchgate-shim");
        assert_ne!(trusted_shim(), Some(elsewhere));
        let c = Caller {
            uid: 1000,
            pid: Some(10),
            exe: Some(elsewhere.into()),
            ..Default::default()
        }
        .with_hint(&CallerHint {
            program: Some("gcloud".into()),
            pid: Some(4242),
            ..Default::default()
        });
        assert_eq!(c.on_behalf_of, None);
        assert_eq!(c.to_string(), "touchgate-shim (pid 10)");
    }
}
