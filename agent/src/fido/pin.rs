//! Asking the user for the security key's PIN, through pinentry on the
//! caller's display or terminal. The PIN lives as a secret only for the one
//! operation and is zeroized after.

use std::path::PathBuf;

use secrecy::SecretString;
#[cfg(any(test, feature = "testing"))]
use touchgate::sync::MutexExt;
use touchgate::CallerHint;

/// Where the dialog should appear: the caller's display and terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinContext {
    pub x11_display: Option<String>,
    pub wayland_display: Option<String>,
    pub tty: Option<String>,
    pub term: Option<String>,
}

impl PinContext {
    pub fn from_hint(h: &CallerHint) -> PinContext {
        PinContext {
            x11_display: h.display.clone(),
            wayland_display: h.wayland_display.clone(),
            tty: h.tty.clone(),
            term: h.term.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("PIN entry was cancelled: nothing was issued")]
    Cancelled,
    #[error("PIN entry timed out: run the command again and enter the key's PIN")]
    Timeout,
    #[error("cannot ask for the security key's PIN: {0}")]
    Unavailable(String),
}

/// Asks for a PIN. Blocking.
pub trait PinEntry: Send + Sync {
    /// `description` says which key and why; `error` is shown above the field (e.g. tries left).
    fn ask(
        &self,
        description: &str,
        error: Option<&str>,
        ctx: &PinContext,
    ) -> Result<SecretString, PinError>;
}

/// The real pinentry program (`pinentry`, `pinentry-gnome3`, `pinentry-curses`, …).
#[derive(Debug, Clone)]
pub struct Pinentry {
    pub program: PathBuf,
}

impl Default for Pinentry {
    fn default() -> Self {
        Pinentry {
            program: PathBuf::from("pinentry"),
        }
    }
}

impl PinEntry for Pinentry {
    fn ask(
        &self,
        description: &str,
        error: Option<&str>,
        ctx: &PinContext,
    ) -> Result<SecretString, PinError> {
        let mut input = pinentry::PassphraseInput::with_binary(&self.program).ok_or_else(|| {
            PinError::Unavailable(format!(
                "the pinentry program {} was not found: install pinentry (apt-get install pinentry-curses) or set key.pinentry in the config",
                self.program.display()
            ))
        })?;
        let mut opts = pinentry::unix::Options::builder();
        if let Some(t) = &ctx.tty {
            opts = opts.tty_name(t);
        }
        if let Some(t) = &ctx.term {
            opts = opts.tty_type(t);
        }
        if let Some(d) = &ctx.x11_display {
            opts = opts.x11_display(d);
        }
        if let Some(d) = &ctx.wayland_display {
            opts = opts.wayland_display(d);
        }
        input
            .with_title("touchgate")
            .with_description(description)
            .with_prompt("PIN")
            .required("The PIN cannot be empty")
            .with_timeout(60)
            .with_unix_options(opts.build());
        if let Some(e) = error {
            input.with_error(e);
        }
        input.interact().map_err(|e| match e {
            pinentry::Error::Cancelled => PinError::Cancelled,
            pinentry::Error::Timeout => PinError::Timeout,
            other => PinError::Unavailable(format!(
                "pinentry {} failed: {other}",
                self.program.display()
            )),
        })
    }
}

#[cfg(any(test, feature = "testing"))]
/// A PinEntry for tests: answers from a fixed list, counting the asks.
#[derive(Debug, Default)]
pub struct FixedPins {
    answers: std::sync::Mutex<std::collections::VecDeque<Option<String>>>,
    asked: std::sync::atomic::AtomicUsize,
}

#[cfg(any(test, feature = "testing"))]
impl FixedPins {
    /// `None` in the list means "the user cancelled".
    pub fn new(answers: Vec<Option<&str>>) -> FixedPins {
        FixedPins {
            answers: std::sync::Mutex::new(
                answers.into_iter().map(|a| a.map(str::to_owned)).collect(),
            ),
            asked: Default::default(),
        }
    }

    pub fn asked(&self) -> usize {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(any(test, feature = "testing"))]
impl PinEntry for FixedPins {
    fn ask(&self, _: &str, _: Option<&str>, _: &PinContext) -> Result<SecretString, PinError> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.answers.locked().pop_front() {
            Some(Some(p)) => Ok(SecretString::from(p)),
            _ => Err(PinError::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_missing_program_says_what_to_install() {
        let p = Pinentry {
            program: "/nonexistent/pinentry-xyz".into(),
        };
        let e = p.ask("d", None, &PinContext::default()).unwrap_err();
        assert!(e.to_string().contains("apt-get install pinentry"), "{e}");
    }

    #[test]
    fn a_scripted_pinentry_program_is_spoken_to_over_assuan() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("pinentry-test");
        std::fs::write(
            &prog,
            "#!/bin/sh\necho 'OK ready'\nwhile read -r cmd rest; do\n  case \"$cmd\" in\n    GETPIN) echo 'D 123456'; echo OK;;\n    BYE) echo OK; exit 0;;\n    *) echo OK;;\n  esac\ndone\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pin = Pinentry { program: prog }
            .ask(
                "Enter the PIN",
                Some("2 tries left"),
                &PinContext::default(),
            )
            .unwrap();
        assert_eq!(pin.expose_secret(), "123456");
    }

    #[test]
    fn fixed_pins_answer_in_order_then_cancel() {
        let f = FixedPins::new(vec![Some("1"), None]);
        let ctx = PinContext::default();
        assert_eq!(f.ask("", None, &ctx).unwrap().expose_secret(), "1");
        assert_eq!(f.ask("", None, &ctx).unwrap_err(), PinError::Cancelled);
        assert_eq!(f.asked(), 2);
    }
}
