//! Where the soft key's touches come from: a [`TouchSource`] waits for the
//! user's touch (or refusal) and is woken by a [`CancelFlag`].
//!
//! User presence is an explicit event: Enter on the terminal
//! ([`PromptTouch`]), always ([`AutoTouch`]), never ([`DenyTouch`],
//! [`NeverTouch`]), or a test's call (`ScriptedTouch`, feature `testing`). A
//! pending touch can be cancelled from another thread; every waiter sleeps on
//! the flag's condition variable or looks at it at least every 20 ms.

use std::fmt;
use std::io::{BufRead, Write};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[cfg(any(test, feature = "testing"))]
use std::collections::VecDeque;

/// How often touch sources that wait on something other than the cancel flag
/// look at the flag. Cancel latency is at most this.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// What became of a request for a touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchOutcome {
    /// The user touched the key: user presence.
    Touched,
    /// The user refused (on a real key: a timeout or a long press).
    Denied,
    /// The operation was cancelled while waiting ([`crate::SoftKey::cancel`]).
    Cancelled,
}

/// A cancel signal for one pending operation: a flag plus a condition
/// variable, so a waiter sleeps until cancelled instead of spinning.
#[derive(Debug, Default)]
pub struct CancelFlag {
    cancelled: Mutex<bool>,
    cond: Condvar,
}

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancel, and wake everyone waiting in [`CancelFlag::wait_timeout`].
    pub fn cancel(&self) {
        *self.lock() = true;
        self.cond.notify_all();
    }

    pub fn is_cancelled(&self) -> bool {
        *self.lock()
    }

    /// Sleep until cancelled or until `d` has passed. Returns whether the
    /// flag is set.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut cancelled = self.lock();
        while !*cancelled {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            cancelled = self
                .cond
                .wait_timeout(cancelled, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *cancelled
    }

    /// Clear the flag (at the start of each operation).
    pub fn reset(&self) {
        *self.lock() = false;
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        // A poisoned bool is still a bool.
        self.cancelled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the soft key's "touches" come from.
pub trait TouchSource: Send + Sync {
    /// Wait for the user to touch (or refuse), or for `cancel`. `prompt` says
    /// what the touch is for, e.g. "create a touchgate credential".
    fn wait(&self, prompt: &str, cancel: &CancelFlag) -> TouchOutcome;
}

/// Touches at once, every time (unless already cancelled). For tests and
/// unattended demos.
#[derive(Debug, Default, Clone, Copy)]
pub struct AutoTouch;

impl TouchSource for AutoTouch {
    fn wait(&self, _prompt: &str, cancel: &CancelFlag) -> TouchOutcome {
        if cancel.is_cancelled() {
            TouchOutcome::Cancelled
        } else {
            TouchOutcome::Touched
        }
    }
}

/// Refuses every touch at once (unless already cancelled).
#[derive(Debug, Default, Clone, Copy)]
pub struct DenyTouch;

impl TouchSource for DenyTouch {
    fn wait(&self, _prompt: &str, cancel: &CancelFlag) -> TouchOutcome {
        if cancel.is_cancelled() {
            TouchOutcome::Cancelled
        } else {
            TouchOutcome::Denied
        }
    }
}

/// A touch that never comes: blocks (asleep, not spinning) until cancelled.
/// For testing timeouts and cancellation.
#[derive(Debug, Default, Clone, Copy)]
pub struct NeverTouch;

impl TouchSource for NeverTouch {
    fn wait(&self, _prompt: &str, cancel: &CancelFlag) -> TouchOutcome {
        while !cancel.wait_timeout(Duration::from_secs(3600)) {}
        TouchOutcome::Cancelled
    }
}

/// One line (or the end) of the prompt's input.
enum InputEvent {
    Line(String),
    Eof,
}

/// Asks on the terminal: prints a prompt to stderr and takes a line from
/// stdin as the touch (`n` or `no` refuses; end of input refuses).
///
/// stdin is read on a helper thread, so a cancel returns at once even while
/// nobody types. Lines typed before a prompt appears are ignored: a touch
/// only counts for the request it was asked for.
pub struct PromptTouch {
    input: Mutex<PromptInput>,
    out: Mutex<Box<dyn Write + Send>>,
}

struct PromptInput {
    /// The reader, until the helper thread takes it.
    reader: Option<Box<dyn BufRead + Send>>,
    rx: Option<mpsc::Receiver<InputEvent>>,
    eof: bool,
}

impl PromptTouch {
    /// Prompt on stderr, read stdin.
    pub fn new() -> Self {
        Self::with_io(
            Box::new(std::io::BufReader::new(std::io::stdin())),
            Box::new(std::io::stderr()),
        )
    }

    /// Prompt on `out`, read lines from `input` (for tests).
    pub fn with_io(input: Box<dyn BufRead + Send>, out: Box<dyn Write + Send>) -> Self {
        PromptTouch {
            input: Mutex::new(PromptInput {
                reader: Some(input),
                rx: None,
                eof: false,
            }),
            out: Mutex::new(out),
        }
    }
}

impl Default for PromptTouch {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PromptTouch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PromptTouch")
    }
}

impl PromptInput {
    /// The channel from the reader thread, starting the thread on first use.
    fn receiver(&mut self) -> &mpsc::Receiver<InputEvent> {
        if let Some(mut reader) = self.reader.take() {
            let (tx, rx) = mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("touchgate-soft-touch-prompt".into())
                .spawn(move || loop {
                    let mut line = String::new();
                    let event = match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => InputEvent::Eof,
                        Ok(_) => InputEvent::Line(line),
                    };
                    let eof = matches!(event, InputEvent::Eof);
                    if tx.send(event).is_err() || eof {
                        return;
                    }
                });
            if spawned.is_err() {
                // No thread, no input: behave as at end of input.
                self.eof = true;
            }
            self.rx = Some(rx);
        }
        self.rx.as_ref().expect("receiver set above")
    }
}

impl TouchSource for PromptTouch {
    fn wait(&self, prompt: &str, cancel: &CancelFlag) -> TouchOutcome {
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        // Drop what was typed before this prompt.
        let mut eof = input.eof;
        while let Ok(ev) = input.receiver().try_recv() {
            eof |= matches!(ev, InputEvent::Eof);
        }
        input.eof = eof;
        if cancel.is_cancelled() {
            return TouchOutcome::Cancelled;
        }
        if eof {
            return TouchOutcome::Denied;
        }
        {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            // A prompt that cannot be shown still leaves the key usable.
            let _ = writeln!(
                out,
                "touchgate: touch needed — {prompt}. Press Enter to touch the soft key \
                 (type n and Enter to refuse)."
            );
            let _ = out.flush();
        }
        loop {
            if cancel.is_cancelled() {
                return TouchOutcome::Cancelled;
            }
            match input.receiver().recv_timeout(CANCEL_POLL) {
                Ok(InputEvent::Line(line)) => {
                    let answer = line.trim().to_ascii_lowercase();
                    return if answer == "n" || answer == "no" {
                        TouchOutcome::Denied
                    } else {
                        TouchOutcome::Touched
                    };
                }
                Ok(InputEvent::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    input.eof = true;
                    return TouchOutcome::Denied;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

#[cfg(any(test, feature = "testing"))]
/// A touch source driven by the test: each request waits until the test calls
/// [`ScriptedTouch::approve`] or [`ScriptedTouch::deny`] (answers given ahead
/// of a request are queued and used in order), or until cancelled.
#[derive(Debug, Default)]
pub struct ScriptedTouch {
    state: Mutex<ScriptedState>,
    cond: Condvar,
}

#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
struct ScriptedState {
    answers: VecDeque<TouchOutcome>,
    requested: u64,
}

#[cfg(any(test, feature = "testing"))]
impl ScriptedTouch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Touch the key (for the pending or the next request).
    pub fn approve(&self) {
        self.answer(TouchOutcome::Touched);
    }

    /// Refuse the touch (for the pending or the next request).
    pub fn deny(&self) {
        self.answer(TouchOutcome::Denied);
    }

    /// How many touches have been asked for so far.
    pub fn requested(&self) -> u64 {
        self.lock().requested
    }

    /// Wait until at least `n` touches have been asked for; false on timeout.
    pub fn wait_requested(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while st.requested < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn answer(&self, outcome: TouchOutcome) {
        self.lock().answers.push_back(outcome);
        self.cond.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, ScriptedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(any(test, feature = "testing"))]
impl TouchSource for ScriptedTouch {
    fn wait(&self, _prompt: &str, cancel: &CancelFlag) -> TouchOutcome {
        let mut st = self.lock();
        st.requested += 1;
        self.cond.notify_all();
        loop {
            if cancel.is_cancelled() {
                return TouchOutcome::Cancelled;
            }
            if let Some(outcome) = st.answers.pop_front() {
                return outcome;
            }
            st = self
                .cond
                .wait_timeout(st, CANCEL_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Which [`TouchSource`] the soft key uses, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchMode {
    /// Ask on the terminal ([`PromptTouch`]).
    Prompt,
    /// Always touch ([`AutoTouch`]).
    Auto,
    /// Always refuse ([`DenyTouch`]).
    Deny,
    /// Never touch; wait until cancelled ([`NeverTouch`]).
    Never,
}

impl FromStr for TouchMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prompt" => Ok(TouchMode::Prompt),
            "auto" => Ok(TouchMode::Auto),
            "deny" => Ok(TouchMode::Deny),
            "never" => Ok(TouchMode::Never),
            other => Err(format!(
                "unknown touch mode \"{other}\": use prompt, auto, deny or never"
            )),
        }
    }
}

impl fmt::Display for TouchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TouchMode::Prompt => "prompt",
            TouchMode::Auto => "auto",
            TouchMode::Deny => "deny",
            TouchMode::Never => "never",
        })
    }
}

/// The touch source for a mode.
pub fn touch_source(mode: TouchMode) -> Arc<dyn TouchSource> {
    match mode {
        TouchMode::Prompt => Arc::new(PromptTouch::new()),
        TouchMode::Auto => Arc::new(AutoTouch),
        TouchMode::Deny => Arc::new(DenyTouch),
        TouchMode::Never => Arc::new(NeverTouch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn cancel_flag_wait_timeout() {
        let flag = Arc::new(CancelFlag::new());
        let t = Instant::now();
        assert!(!flag.wait_timeout(Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        let f2 = flag.clone();
        let h = std::thread::spawn(move || f2.wait_timeout(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        flag.cancel();
        assert!(h.join().unwrap());
        assert!(flag.is_cancelled());
        flag.reset();
        assert!(!flag.is_cancelled());
    }

    #[test]
    fn touch_mode_parses_and_prints() {
        for m in [
            TouchMode::Prompt,
            TouchMode::Auto,
            TouchMode::Deny,
            TouchMode::Never,
        ] {
            assert_eq!(m.to_string().parse::<TouchMode>().unwrap(), m);
        }
        assert_eq!(
            "x".parse::<TouchMode>().unwrap_err(),
            "unknown touch mode \"x\": use prompt, auto, deny or never"
        );
        let cancel = CancelFlag::new();
        assert_eq!(
            touch_source(TouchMode::Auto).wait("p", &cancel),
            TouchOutcome::Touched
        );
        assert_eq!(
            touch_source(TouchMode::Deny).wait("p", &cancel),
            TouchOutcome::Denied
        );
        cancel.cancel();
        assert_eq!(
            touch_source(TouchMode::Never).wait("p", &cancel),
            TouchOutcome::Cancelled
        );
        assert_eq!(
            touch_source(TouchMode::Auto).wait("p", &cancel),
            TouchOutcome::Cancelled
        );
    }

    /// A reader fed line by line from the test.
    struct ChannelReader {
        rx: mpsc::Receiver<Vec<u8>>,
        buf: Vec<u8>,
    }

    impl Read for ChannelReader {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.buf.is_empty() {
                match self.rx.recv() {
                    Ok(b) => self.buf = b,
                    Err(_) => return Ok(0),
                }
            }
            let n = out.len().min(self.buf.len());
            out[..n].copy_from_slice(&self.buf[..n]);
            self.buf.drain(..n);
            Ok(n)
        }
    }

    /// Collects what the prompt prints.
    #[derive(Clone, Default)]
    struct SharedOut(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedOut {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn prompt_touch_reads_lines_and_honours_cancel() {
        let (tx, rx) = mpsc::channel();
        let out = SharedOut::default();
        let reader = std::io::BufReader::new(ChannelReader {
            rx,
            buf: Vec::new(),
        });
        let touch = Arc::new(PromptTouch::with_io(
            Box::new(reader),
            Box::new(out.clone()),
        ));
        let cancel = Arc::new(CancelFlag::new());

        let ask = |touch: &Arc<PromptTouch>, cancel: &Arc<CancelFlag>| {
            let (t, c) = (touch.clone(), cancel.clone());
            std::thread::spawn(move || t.wait("create a touchgate credential", &c))
        };
        let prompts = |n: usize| {
            let t0 = Instant::now();
            while out
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                < n
            {
                assert!(t0.elapsed() < Duration::from_secs(10));
                std::thread::sleep(Duration::from_millis(5));
            }
        };

        let h = ask(&touch, &cancel);
        prompts(1);
        tx.send(b"\n".to_vec()).unwrap();
        assert_eq!(h.join().unwrap(), TouchOutcome::Touched);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "touchgate: touch needed — create a touchgate credential. Press Enter to touch \
             the soft key (type n and Enter to refuse).\n"
        );

        let h = ask(&touch, &cancel);
        prompts(2);
        tx.send(b" N \n".to_vec()).unwrap();
        assert_eq!(h.join().unwrap(), TouchOutcome::Denied);

        // Nobody types: a cancel still returns promptly.
        let h = ask(&touch, &cancel);
        prompts(3);
        let t = Instant::now();
        cancel.cancel();
        assert_eq!(h.join().unwrap(), TouchOutcome::Cancelled);
        assert!(t.elapsed() < Duration::from_secs(2));
        cancel.reset();

        // A line typed before the prompt does not count as a touch.
        tx.send(b"\n".to_vec()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let h = ask(&touch, &cancel);
        prompts(4);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!h.is_finished());
        // End of input refuses, now and later.
        drop(tx);
        assert_eq!(h.join().unwrap(), TouchOutcome::Denied);
        assert_eq!(touch.wait("again", &cancel), TouchOutcome::Denied);
    }
}
