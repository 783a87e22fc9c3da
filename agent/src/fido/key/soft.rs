//! A software CTAP2 authenticator: the test and demo security key.
//!
//! **This is not a security key.** Its master secret sits in a JSON file on
//! disk (mode 0600), so anyone who can read that file as you can make every
//! credential it ever made answer without a touch. It exists so touchgate can
//! be developed, tested and demonstrated on machines without FIDO2 hardware.
//! Never use it to protect real credentials.
//!
//! What it does follow from CTAP2, so the rest of the agent sees exactly what
//! a hardware key would give it:
//!
//! * **Stateless credentials**, like real keys: a credential id is
//!   `seed(32) ‖ HMAC-SHA256(master, "cred-mac" ‖ seed ‖ rpIdHash)[..16]`;
//!   the credential's P-256 private scalar is re-derived from the master
//!   secret and the seed on every use (HKDF-SHA256), so the state file holds
//!   only the master secret and the global signature counter.
//! * **Real authenticator data** (rpIdHash ‖ flags ‖ counter ‖ attested
//!   credential data with a COSE key ‖ extensions) and **packed
//!   self-attestation**: ECDSA-SHA256 by the credential key over
//!   `authData ‖ clientDataHash`, DER-encoded, no certificate chain.
//! * **hmac-secret** with two CredRandom values per credential, one used with
//!   user verification and one without, as the spec requires: the same salt
//!   gives different outputs with and without UV.
//! * **One global signature counter**, incremented and persisted (atomically)
//!   on every makeCredential and getAssertion.
//! * **credProtect `userVerificationRequired`** (for the CTAP2 front end):
//!   such a credential's id carries a MAC under another label, so the key
//!   still stores nothing, and it answers only when UV is asked for.
//! * **Built-in user verification**, like a fingerprint key: when a request
//!   asks for UV the key sets the UV flag after the touch, without a PIN. It
//!   has no clientPIN; a PIN passed in a request is ignored.
//! * **User presence is an explicit event** from a [`TouchSource`]: a test
//!   call ([`ScriptedTouch`]), Enter on the terminal ([`PromptTouch`]), always
//!   ([`AutoTouch`]), never ([`DenyTouch`], [`NeverTouch`]). A pending touch
//!   can be cancelled from another thread with [`SecurityKey::cancel`].
//!
//! Besides [`SecurityKey`], the key offers its building blocks through a
//! [`KeySession`] ([`SoftKey::session`]), so a CTAP2 CBOR front end (the
//! emulated USB key of the test suite) derives, counts and signs exactly as
//! this key does.

#[cfg(any(test, feature = "testing"))]
use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::{
    flags, Assertion, Attestation, GetAssertionRequest, KeyError, MakeCredentialRequest,
    SecurityKey,
};

type HmacSha256 = Hmac<Sha256>;

/// The AAGUID a new soft key gets: "touchgate soft key" (not a registered
/// model, so an AAGUID allow-list can recognise, and refuse, the soft key).
pub const SOFT_AAGUID: [u8; 16] = *b"touchgate-soft\x00\x01";

/// Version of the soft key's state file.
const STATE_VERSION: u32 = 1;
/// Length of the random part of a credential id.
const SEED_LEN: usize = 32;
/// Length of the truncated MAC that ends a credential id.
const CRED_MAC_LEN: usize = 16;
/// Length of a credential id made by this key.
pub const CREDENTIAL_ID_LEN: usize = SEED_LEN + CRED_MAC_LEN;

const INFO_CRED_MAC: &[u8] = b"cred-mac";
/// The MAC label of credentials made with credProtect userVerificationRequired.
const INFO_CRED_MAC_UV_REQUIRED: &[u8] = b"cred-mac-uvreq";
const INFO_CRED_KEY: &[u8] = b"touchgate-soft-cred";
const INFO_CRED_RANDOM_UV: &[u8] = b"touchgate-soft-credrandom-uv";
const INFO_CRED_RANDOM_NO_UV: &[u8] = b"touchgate-soft-credrandom-nouv";

/// How often touch sources that wait on something other than the cancel flag
/// look at the flag. Cancel latency is at most this.
const CANCEL_POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// Touch
// ---------------------------------------------------------------------------

/// What became of a request for a touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchOutcome {
    /// The user touched the key: user presence.
    Touched,
    /// The user refused (on a real key: a timeout or a long press).
    Denied,
    /// The operation was cancelled while waiting ([`SecurityKey::cancel`]).
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

// ---------------------------------------------------------------------------
// State file
// ---------------------------------------------------------------------------

/// The state file as stored (`soft-key.json`).
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// hex, 16 bytes
    aaguid: String,
    /// hex, 32 bytes
    master_secret: String,
    sign_count: u32,
}

impl Drop for StateFile {
    fn drop(&mut self) {
        self.master_secret.zeroize();
    }
}

/// The state in memory. Held under the key's mutex for a whole operation,
/// which serialises operations like a real device does.
struct State {
    aaguid: [u8; 16],
    master: Zeroizing<[u8; 32]>,
    sign_count: u32,
}

impl State {
    fn generate() -> State {
        let mut master = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut master[..]);
        State {
            aaguid: SOFT_AAGUID,
            master,
            sign_count: 0,
        }
    }

    fn from_json(path: &Path, bytes: &[u8]) -> Result<State, KeyError> {
        let bad = |what: &str| {
            KeyError::Device(format!(
                "soft key state file {} is not valid ({what}); it was left untouched",
                path.display()
            ))
        };
        let file: StateFile = serde_json::from_slice(bytes).map_err(|e| {
            bad(&format!(
                "unreadable JSON at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        if file.version != STATE_VERSION {
            return Err(bad(&format!(
                "version {}, this agent reads version {STATE_VERSION}",
                file.version
            )));
        }
        let aaguid = <[u8; 16]>::try_from(
            hex::decode(&file.aaguid)
                .map_err(|_| bad("aaguid is not hex"))?
                .as_slice(),
        )
        .map_err(|_| bad("aaguid is not 16 bytes"))?;
        let mut master = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(file.master_secret.as_bytes(), &mut master[..])
            .map_err(|_| bad("master_secret is not 32 bytes of hex"))?;
        Ok(State {
            aaguid,
            master,
            sign_count: file.sign_count,
        })
    }

    fn to_json(&self, sign_count: u32) -> Zeroizing<Vec<u8>> {
        let file = StateFile {
            version: STATE_VERSION,
            aaguid: hex::encode(self.aaguid),
            master_secret: hex::encode(&self.master[..]),
            sign_count,
        };
        let mut out = serde_json::to_vec_pretty(&file).expect("state serialises");
        out.push(b'\n');
        Zeroizing::new(out)
    }
}

// ---------------------------------------------------------------------------
// The key
// ---------------------------------------------------------------------------

/// The software authenticator. See the module docs: for tests and demos only.
pub struct SoftKey {
    path: PathBuf,
    touch: Arc<dyn TouchSource>,
    state: Mutex<State>,
    /// Outside the state mutex, so `cancel` never waits for the operation it
    /// cancels.
    cancel: CancelFlag,
    touches: AtomicU64,
}

impl fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SoftKey {
    /// Load the key's state from `state_path`, or create a new key there
    /// (parent directory created 0700, file written atomically with mode 0600).
    pub fn open(state_path: &Path, touch: Arc<dyn TouchSource>) -> Result<SoftKey, KeyError> {
        let state = match std::fs::read(state_path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                State::from_json(state_path, &bytes)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = State::generate();
                write_state(state_path, &state.to_json(state.sign_count))?;
                state
            }
            Err(e) => {
                return Err(KeyError::Device(format!(
                    "cannot read soft key state file {}: {e}",
                    state_path.display()
                )))
            }
        };
        Ok(SoftKey {
            path: state_path.to_path_buf(),
            touch,
            state: Mutex::new(state),
            cancel: CancelFlag::new(),
            touches: AtomicU64::new(0),
        })
    }

    /// The current global signature counter.
    pub fn sign_count(&self) -> u32 {
        self.lock().sign_count
    }

    /// How many touches this key has asked for since it was opened.
    pub fn touches_requested(&self) -> u64 {
        self.touches.load(Ordering::SeqCst)
    }

    /// The key's AAGUID.
    pub fn aaguid(&self) -> [u8; 16] {
        self.lock().aaguid
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask the touch source for a touch; map refusal and cancel to errors.
    fn require_touch(&self, prompt: &str) -> Result<(), KeyError> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        match self.touch.wait(prompt, &self.cancel) {
            TouchOutcome::Touched => Ok(()),
            TouchOutcome::Denied => Err(KeyError::TouchDenied),
            TouchOutcome::Cancelled => Err(KeyError::Cancelled),
        }
    }

    /// Increment the global counter, persist it, and return the new value.
    /// The in-memory counter moves only once the file has it.
    fn bump_counter(&self, state: &mut State) -> Result<u32, KeyError> {
        let next = state.sign_count.checked_add(1).ok_or_else(|| {
            KeyError::Device("the soft key's signature counter is exhausted".into())
        })?;
        write_state(&self.path, &state.to_json(next))?;
        state.sign_count = next;
        Ok(next)
    }
}

fn write_state(path: &Path, json: &[u8]) -> Result<(), KeyError> {
    crate::vault::write_private_atomic(path, json).map_err(|e| {
        KeyError::Device(format!(
            "cannot write soft key state file {}: {e}",
            path.display()
        ))
    })
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac
}

/// The MAC that binds a credential id to this key and this relying party
/// (and, by its label, to its credProtect level).
fn cred_mac(
    master: &[u8; 32],
    seed: &[u8],
    rp_id_hash: &[u8; 32],
    uv_required: bool,
) -> HmacSha256 {
    let label = if uv_required {
        INFO_CRED_MAC_UV_REQUIRED
    } else {
        INFO_CRED_MAC
    };
    hmac_sha256(master, &[label, seed, rp_id_hash])
}

/// The credential behind `cred_id`, if this key made it for this relying
/// party. A credential that requires UV is skipped when `uv` is false, as if
/// it were not there (credProtect level 3).
fn own_credential(
    master: &[u8; 32],
    cred_id: &[u8],
    rp_id_hash: &[u8; 32],
    uv: bool,
) -> Option<Credential> {
    if cred_id.len() != CREDENTIAL_ID_LEN {
        return None;
    }
    let (seed, tag) = cred_id.split_at(SEED_LEN);
    // Constant-time comparison.
    let matches = |uv_required| {
        cred_mac(master, seed, rp_id_hash, uv_required)
            .verify_truncated_left(tag)
            .is_ok()
    };
    let uv_required = if matches(false) {
        false
    } else if matches(true) {
        true
    } else {
        return None;
    };
    if uv_required && !uv {
        return None;
    }
    Some(Credential {
        id: cred_id.to_vec(),
        rp_id_hash: *rp_id_hash,
        uv_required,
    })
}

/// The credential's private key: HKDF-SHA256(master, info "touchgate-soft-cred"
/// ‖ seed ‖ rpIdHash [‖ retry counter]), retried until it is a valid scalar.
fn cred_signing_key(master: &[u8; 32], seed: &[u8], rp_id_hash: &[u8; 32]) -> SigningKey {
    let hk = Hkdf::<Sha256>::new(None, &master[..]);
    for retry in 0u8..=255 {
        let mut okm = Zeroizing::new([0u8; 32]);
        let retry_byte = [retry];
        let mut info: Vec<&[u8]> = vec![INFO_CRED_KEY, seed, rp_id_hash];
        if retry > 0 {
            info.push(&retry_byte);
        }
        hk.expand_multi_info(&info, &mut okm[..])
            .expect("32 bytes is a valid HKDF-SHA256 length");
        if let Ok(key) = SigningKey::from_slice(&okm[..]) {
            return key;
        }
    }
    // Each try fails with probability ~2^-128.
    unreachable!("256 HKDF outputs in a row were not P-256 scalars")
}

/// CredRandom for hmac-secret: one for use with UV, another without.
fn cred_random(master: &[u8; 32], seed: &[u8], uv: bool) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, &master[..]);
    let label = if uv {
        INFO_CRED_RANDOM_UV
    } else {
        INFO_CRED_RANDOM_NO_UV
    };
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[label, seed], &mut out[..])
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The COSE_Key of an ES256 P-256 public key, canonical CBOR:
/// `{1: 2, 3: -7, -1: 1, -2: x, -3: y}`.
fn cose_key(key: &SigningKey) -> Vec<u8> {
    let point = key.verifying_key().to_encoded_point(false);
    let (x, y) = (
        point.x().expect("uncompressed point has x"),
        point.y().expect("uncompressed point has y"),
    );
    let mut out = Vec::with_capacity(77);
    out.extend_from_slice(&[0xA5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20]);
    out.extend_from_slice(x);
    out.extend_from_slice(&[0x22, 0x58, 0x20]);
    out.extend_from_slice(y);
    out
}

/// CBOR `{"hmac-secret": true}`.
const HMAC_SECRET_EXTENSION: &[u8] = b"\xA1\x6Bhmac-secret\xF5";

/// DER ECDSA-SHA256 signature over `auth_data ‖ client_data_hash`.
fn sign(key: &SigningKey, auth_data: &[u8], client_data_hash: &[u8; 32]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(auth_data.len() + 32);
    msg.extend_from_slice(auth_data);
    msg.extend_from_slice(client_data_hash);
    let sig: Signature = key.sign(&msg);
    sig.to_der().as_bytes().to_vec()
}

// ---------------------------------------------------------------------------
// Building blocks for a CTAP2 front end
// ---------------------------------------------------------------------------

/// One of this key's credentials, made or found in a [`KeySession`]. Holds no
/// secret: its private key is re-derived from the master secret on each use.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    id: Vec<u8>,
    rp_id_hash: [u8; 32],
    uv_required: bool,
}

impl Credential {
    /// The credential id (seed ‖ MAC, [`CREDENTIAL_ID_LEN`] bytes).
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// SHA-256 of the relying party id it is bound to.
    pub fn rp_id_hash(&self) -> &[u8; 32] {
        &self.rp_id_hash
    }

    /// Made with credProtect userVerificationRequired (level 3).
    pub fn uv_required(&self) -> bool {
        self.uv_required
    }

    fn seed(&self) -> &[u8] {
        &self.id[..SEED_LEN]
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &hex::encode(&self.id))
            .field("uv_required", &self.uv_required)
            .finish()
    }
}

/// `rpIdHash(32) ‖ flags(1) ‖ signCount(4, big endian)`: the start of all
/// authenticator data.
pub fn auth_data_header(rp_id_hash: &[u8; 32], flags: u8, sign_count: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(37 + 18 + CREDENTIAL_ID_LEN + 77 + 32);
    out.extend_from_slice(rp_id_hash);
    out.push(flags);
    out.extend_from_slice(&sign_count.to_be_bytes());
    out
}

/// Exclusive use of the key for one CTAP2 operation: credential derivation,
/// the signature counter and signing, exactly as [`SecurityKey`] on this key
/// does them. Touches, PINs and flags are the caller's business.
///
/// Holding a session blocks every other operation on the key (including the
/// [`SecurityKey`] ones) until it is dropped, as a device does.
pub struct KeySession<'a> {
    key: &'a SoftKey,
    state: MutexGuard<'a, State>,
}

impl fmt::Debug for KeySession<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySession")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SoftKey {
    /// Start a [`KeySession`] (waits for the operation in progress, if any).
    fn lock_session(&self) -> KeySession<'_> {
        KeySession {
            key: self,
            state: self.lock(),
        }
    }
}

impl SoftKey {
    /// **Test only**: a [`KeySession`] for a CTAP2 front end (waits for the
    /// operation in progress, if any).
    #[cfg(any(test, feature = "testing"))]
    pub fn session(&self) -> KeySession<'_> {
        self.lock_session()
    }

    /// **Test only**: set the signature counter (persisted), e.g. roll it back
    /// to simulate a cloned key.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_sign_count(&self, count: u32) -> Result<(), KeyError> {
        self.session().set_sign_count(count)
    }
}

impl KeySession<'_> {
    /// The key's own AAGUID.
    pub fn aaguid(&self) -> [u8; 16] {
        self.state.aaguid
    }

    /// The current global signature counter.
    pub fn sign_count(&self) -> u32 {
        self.state.sign_count
    }

    /// A new credential for `rp_id` (nothing is stored; the counter does not
    /// move: call [`KeySession::next_sign_count`]).
    pub fn create_credential(&self, rp_id: &str, uv_required: bool) -> Credential {
        let rp_id_hash = sha256(rp_id.as_bytes());
        let mut seed = [0u8; SEED_LEN];
        OsRng.fill_bytes(&mut seed);
        let tag = cred_mac(&self.state.master, &seed, &rp_id_hash, uv_required)
            .finalize()
            .into_bytes();
        let mut id = Vec::with_capacity(CREDENTIAL_ID_LEN);
        id.extend_from_slice(&seed);
        id.extend_from_slice(&tag[..CRED_MAC_LEN]);
        Credential {
            id,
            rp_id_hash,
            uv_required,
        }
    }

    /// The first of `ids` that this key made for `rp_id` (skipping
    /// credentials that require UV when `uv` is false).
    pub fn find_credential<'i>(
        &self,
        rp_id: &str,
        ids: impl IntoIterator<Item = &'i [u8]>,
        uv: bool,
    ) -> Option<Credential> {
        let rp_id_hash = sha256(rp_id.as_bytes());
        ids.into_iter()
            .find_map(|id| own_credential(&self.state.master, id, &rp_id_hash, uv))
    }

    /// Increment the global counter, persist it, and return the new value.
    pub fn next_sign_count(&mut self) -> Result<u32, KeyError> {
        self.key.bump_counter(&mut self.state)
    }

    /// **Test only**: set the signature counter (persisted).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_sign_count(&mut self, count: u32) -> Result<(), KeyError> {
        write_state(&self.key.path, &self.state.to_json(count))?;
        self.state.sign_count = count;
        Ok(())
    }

    /// Uncompressed SEC1 point of the credential's public key (65 bytes).
    pub fn public_key_sec1(&self, cred: &Credential) -> Vec<u8> {
        self.signing_key(cred)
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// Attested credential data: `aaguid(16) ‖ credIdLen(2) ‖ credId ‖ COSE_Key`.
    pub fn attested_credential_data(&self, cred: &Credential, aaguid: &[u8; 16]) -> Vec<u8> {
        let cose = cose_key(&self.signing_key(cred));
        let mut out = Vec::with_capacity(18 + cred.id.len() + cose.len());
        out.extend_from_slice(aaguid);
        out.extend_from_slice(&(cred.id.len() as u16).to_be_bytes());
        out.extend_from_slice(&cred.id);
        out.extend_from_slice(&cose);
        out
    }

    /// DER ECDSA-SHA256 signature by the credential over `auth_data ‖ client_data_hash`.
    pub fn sign(
        &self,
        cred: &Credential,
        auth_data: &[u8],
        client_data_hash: &[u8; 32],
    ) -> Vec<u8> {
        sign(&self.signing_key(cred), auth_data, client_data_hash)
    }

    /// hmac-secret output `HMAC-SHA256(CredRandom, salt)`, with the CredRandom
    /// for use with (`uv`) or without user verification.
    pub fn hmac_secret(&self, cred: &Credential, salt: &[u8; 32], uv: bool) -> Zeroizing<[u8; 32]> {
        let cred_random = cred_random(&self.state.master, cred.seed(), uv);
        let out = hmac_sha256(&cred_random[..], &[salt])
            .finalize()
            .into_bytes();
        let mut output = Zeroizing::new([0u8; 32]);
        output.copy_from_slice(&out);
        output
    }

    fn signing_key(&self, cred: &Credential) -> SigningKey {
        cred_signing_key(&self.state.master, cred.seed(), &cred.rp_id_hash)
    }
}

impl SecurityKey for SoftKey {
    fn name(&self) -> String {
        format!("soft key ({})", self.path.display())
    }

    fn backend(&self) -> &'static str {
        "soft"
    }

    fn plaintext_secret(&self) -> Option<PathBuf> {
        Some(self.path.clone())
    }

    /// makeCredential with packed self-attestation. Always needs a touch.
    fn make_credential(&self, req: &MakeCredentialRequest) -> Result<Attestation, KeyError> {
        let mut session = self.lock_session();
        self.cancel.reset();
        let excluded = session
            .find_credential(&req.rp_id, req.exclude.iter().map(Vec::as_slice), true)
            .is_some();
        self.require_touch("create a touchgate credential")?;
        // As CTAP2 says: a key holding an excluded credential refuses, after the touch.
        if excluded {
            return Err(KeyError::Excluded);
        }

        let cred = session.create_credential(&req.rp_id, false);
        let public_key_sec1 = session.public_key_sec1(&cred);
        let sign_count = session.next_sign_count()?;

        let mut fl = flags::UP | flags::AT;
        if req.uv {
            fl |= flags::UV;
        }
        if req.hmac_secret {
            fl |= flags::ED;
        }
        let aaguid = session.aaguid();
        let mut auth_data = auth_data_header(cred.rp_id_hash(), fl, sign_count);
        auth_data.extend_from_slice(&session.attested_credential_data(&cred, &aaguid));
        if req.hmac_secret {
            auth_data.extend_from_slice(HMAC_SECRET_EXTENSION);
        }
        let attestation_signature = session.sign(&cred, &auth_data, &req.client_data_hash());

        Ok(Attestation {
            credential_id: cred.id,
            public_key_sec1,
            aaguid,
            auth_data,
            sign_count,
            format: "packed".into(),
            attestation_signature,
            statement_alg: Some(-7),
            x5c: Vec::new(),
            hmac_secret: req.hmac_secret,
        })
    }

    /// getAssertion with the first credential in `allow` that this key made
    /// for `rp_id`.
    ///
    /// A touch is needed when `up` is asked for, and also when only `uv` is
    /// (built-in verification means a finger on the key; the UP flag is then
    /// still left clear, as on a bio key).
    ///
    /// The authenticator data carries no extension bytes: the hmac-secret
    /// output comes back already decrypted in [`Assertion::hmac_secret`], as
    /// ctap-hid-fido2 hands it over, so the agent sees the same shape from
    /// either backend. hmac-secret works for any credential of this key,
    /// whether or not it was created with the extension.
    fn get_assertion(&self, req: &GetAssertionRequest) -> Result<Assertion, KeyError> {
        let mut session = self.lock_session();
        self.cancel.reset();

        let cred = session
            .find_credential(&req.rp_id, req.allow.iter().map(Vec::as_slice), req.uv)
            .ok_or(KeyError::NoCredentials)?;

        if req.up || req.uv {
            self.require_touch("approve a touchgate request")?;
        }
        let sign_count = session.next_sign_count()?;

        let mut fl = 0u8;
        if req.up {
            fl |= flags::UP;
        }
        if req.uv {
            fl |= flags::UV;
        }
        let auth_data = auth_data_header(cred.rp_id_hash(), fl, sign_count);
        let signature = session.sign(&cred, &auth_data, &req.client_data_hash());
        let hmac_secret = req
            .hmac_salt
            .as_ref()
            .map(|salt| session.hmac_secret(&cred, salt, req.uv));

        Ok(Assertion {
            credential_id: cred.id,
            auth_data,
            signature,
            hmac_secret,
        })
    }

    fn cancel(&self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fido::key::RP_ID;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::VerifyingKey;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    fn open(dir: &tempfile::TempDir, touch: Arc<dyn TouchSource>) -> SoftKey {
        SoftKey::open(&dir.path().join("state/soft-key.json"), touch).unwrap()
    }

    fn mc_req(uv: bool) -> MakeCredentialRequest {
        MakeCredentialRequest {
            rp_id: RP_ID.into(),
            challenge: sha256(b"enrol challenge"),
            user_id: b"user".to_vec(),
            user_name: "user".into(),
            hmac_secret: true,
            uv,
            pin: None,
            exclude: vec![],
        }
    }

    fn ga_req(cred: &[u8], salt: Option<[u8; 32]>, uv: bool) -> GetAssertionRequest {
        GetAssertionRequest {
            rp_id: RP_ID.into(),
            challenge: sha256(b"assert challenge"),
            allow: vec![cred.to_vec()],
            hmac_salt: salt,
            uv,
            pin: None,
            up: true,
        }
    }

    fn verify_sig(pubkey: &[u8], auth_data: &[u8], cdh: &[u8; 32], der: &[u8]) {
        let vk = VerifyingKey::from_sec1_bytes(pubkey).unwrap();
        let sig = Signature::from_der(der).unwrap();
        let mut msg = auth_data.to_vec();
        msg.extend_from_slice(cdh);
        vk.verify(&msg, &sig).expect("signature verifies");
    }

    #[test]
    fn make_credential_builds_real_auth_data_and_self_attestation() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir, Arc::new(AutoTouch));
        let req = mc_req(true);
        let att = key.make_credential(&req).unwrap();

        assert_eq!(att.format, "packed");
        assert!(att.x5c.is_empty());
        assert!(att.hmac_secret);
        assert_eq!(att.credential_id.len(), CREDENTIAL_ID_LEN);
        assert_eq!(att.public_key_sec1.len(), 65);
        assert_eq!(att.public_key_sec1[0], 0x04);
        assert_eq!(att.aaguid, SOFT_AAGUID);
        assert_eq!(att.sign_count, 1);

        let ad = &att.auth_data;
        assert_eq!(&ad[..32], &sha256(RP_ID.as_bytes()));
        assert_eq!(ad[32], flags::UP | flags::UV | flags::AT | flags::ED);
        assert_eq!(&ad[33..37], &1u32.to_be_bytes());
        assert_eq!(&ad[37..53], &SOFT_AAGUID);
        assert_eq!(&ad[53..55], &(CREDENTIAL_ID_LEN as u16).to_be_bytes());
        let cred_end = 55 + CREDENTIAL_ID_LEN;
        assert_eq!(&ad[55..cred_end], &att.credential_id[..]);
        let cose = &ad[cred_end..cred_end + 77];
        assert_eq!(
            &cose[..10],
            &[0xA5, 1, 2, 3, 0x26, 0x20, 1, 0x21, 0x58, 0x20]
        );
        assert_eq!(&cose[10..42], &att.public_key_sec1[1..33]);
        assert_eq!(&cose[42..45], &[0x22, 0x58, 0x20]);
        assert_eq!(&cose[45..77], &att.public_key_sec1[33..65]);
        assert_eq!(&ad[cred_end + 77..], HMAC_SECRET_EXTENSION);

        verify_sig(
            &att.public_key_sec1,
            &att.auth_data,
            &req.client_data_hash(),
            &att.attestation_signature,
        );
        assert_eq!(key.touches_requested(), 1);
    }

    #[test]
    fn make_credential_flags_without_uv_or_hmac_secret() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir, Arc::new(AutoTouch));
        let mut req = mc_req(false);
        req.hmac_secret = false;
        let att = key.make_credential(&req).unwrap();
        assert_eq!(att.auth_data[32], flags::UP | flags::AT);
        assert_eq!(att.auth_data.len(), 55 + CREDENTIAL_ID_LEN + 77);
        assert!(!att.hmac_secret);
    }

    #[test]
    fn assertion_verifies_and_counter_increases() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir, Arc::new(AutoTouch));
        let att = key.make_credential(&mc_req(false)).unwrap();
        let req = ga_req(&att.credential_id, None, false);

        let a1 = key.get_assertion(&req).unwrap();
        assert_eq!(a1.credential_id, att.credential_id);
        assert_eq!(a1.auth_data.len(), 37);
        assert_eq!(&a1.auth_data[..32], &sha256(RP_ID.as_bytes()));
        assert_eq!(a1.auth_data[32], flags::UP);
        assert!(a1.hmac_secret.is_none());
        verify_sig(
            &att.public_key_sec1,
            &a1.auth_data,
            &req.client_data_hash(),
            &a1.signature,
        );
        let c1 = u32::from_be_bytes(a1.auth_data[33..37].try_into().unwrap());

        let a2 = key.get_assertion(&req).unwrap();
        let c2 = u32::from_be_bytes(a2.auth_data[33..37].try_into().unwrap());
        assert!(
            c2 > c1 && c1 > att.sign_count,
            "{} {} {}",
            att.sign_count,
            c1,
            c2
        );
        assert_eq!(key.sign_count(), c2);
        assert_eq!(key.touches_requested(), 3);
    }

    #[test]
    fn assertion_sets_uv_and_skips_foreign_ids_in_allow_list() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir, Arc::new(AutoTouch));
        let att = key.make_credential(&mc_req(true)).unwrap();
        let mut req = ga_req(&att.credential_id, None, true);
        req.allow.insert(0, vec![7u8; CREDENTIAL_ID_LEN]);
        req.allow.insert(0, vec![1, 2, 3]);
        let a = key.get_assertion(&req).unwrap();
        assert_eq!(a.credential_id, att.credential_id);
        assert_eq!(a.auth_data[32], flags::UP | flags::UV);
        verify_sig(
            &att.public_key_sec1,
            &a.auth_data,
            &req.client_data_hash(),
            &a.signature,
        );
    }

    #[test]
    fn silent_probe_needs_no_touch_and_leaves_up_clear() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir, Arc::new(AutoTouch));
        let att = key.make_credential(&mc_req(false)).unwrap();
        let key = SoftKey::open(key.path(), Arc::new(DenyTouch)).unwrap();
        let mut req = ga_req(&att.credential_id, None, false);
        req.up = false;
        let a = key.get_assertion(&req).unwrap();
        assert_eq!(a.auth_data[32], 0);
        assert_eq!(key.touches_requested(), 0);
        verify_sig(
            &att.public_key_sec1,
            &a.auth_data,
            &req.client_data_hash(),
            &a.signature,
        );
    }

    #[test]
    fn hmac_secret_is_stable_per_salt_and_differs_with_uv() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir, Arc::new(AutoTouch));
        let att = key.make_credential(&mc_req(false)).unwrap();
        let out = |salt: [u8; 32], uv: bool| {
            *key.get_assertion(&ga_req(&att.credential_id, Some(salt), uv))
                .unwrap()
                .hmac_secret
                .expect("hmac output")
        };
        let a = out([1; 32], false);
        assert_eq!(a, out([1; 32], false));
        assert_ne!(a, out([2; 32], false));
        let a_uv = out([1; 32], true);
        assert_ne!(a, a_uv);
        assert_eq!(a_uv, out([1; 32], true));

        // Another credential on the same key gives another output.
        let other = key.make_credential(&mc_req(false)).unwrap();
        let b = *key
            .get_assertion(&ga_req(&other.credential_id, Some([1; 32]), false))
            .unwrap()
            .hmac_secret
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn foreign_or_other_rp_credential_is_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir, Arc::new(AutoTouch));
        let dir2 = tempfile::tempdir().unwrap();
        let other_key = open(&dir2, Arc::new(AutoTouch));
        let att = key.make_credential(&mc_req(false)).unwrap();

        // Made by another soft key.
        let foreign = other_key.make_credential(&mc_req(false)).unwrap();
        let err = key
            .get_assertion(&ga_req(&foreign.credential_id, None, false))
            .unwrap_err();
        assert_eq!(err, KeyError::NoCredentials);

        // Ours, but for another relying party.
        let mut req = ga_req(&att.credential_id, None, false);
        req.rp_id = "example.com".into();
        assert_eq!(
            key.get_assertion(&req).unwrap_err(),
            KeyError::NoCredentials
        );

        // Ours with one bit flipped in the MAC, and an empty allow list.
        let mut tampered = att.credential_id.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            key.get_assertion(&ga_req(&tampered, None, false))
                .unwrap_err(),
            KeyError::NoCredentials
        );
        let mut req = ga_req(&att.credential_id, None, false);
        req.allow.clear();
        assert_eq!(
            key.get_assertion(&req).unwrap_err(),
            KeyError::NoCredentials
        );
        // No touch was asked for an assertion the key cannot answer.
        assert_eq!(key.touches_requested(), 1);
    }

    #[test]
    fn denied_touch_is_touch_denied() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir, Arc::new(AutoTouch));
        let att = key.make_credential(&mc_req(false)).unwrap();
        let count = key.sign_count();
        let key = SoftKey::open(key.path(), Arc::new(DenyTouch)).unwrap();
        assert_eq!(
            key.make_credential(&mc_req(false)).unwrap_err(),
            KeyError::TouchDenied
        );
        assert_eq!(
            key.get_assertion(&ga_req(&att.credential_id, None, false))
                .unwrap_err(),
            KeyError::TouchDenied
        );
        // A refused operation does not move the counter.
        assert_eq!(key.sign_count(), count);
        assert_eq!(key.touches_requested(), 2);
    }

    #[test]
    fn cancel_wakes_a_touch_that_never_comes() {
        let dir = tempfile::tempdir().unwrap();
        let att = open(&dir, Arc::new(AutoTouch))
            .make_credential(&mc_req(false))
            .unwrap();
        let key = Arc::new(
            SoftKey::open(
                &dir.path().join("state/soft-key.json"),
                Arc::new(NeverTouch),
            )
            .unwrap(),
        );
        let k2 = key.clone();
        let cred = att.credential_id.clone();
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            let r = k2.get_assertion(&ga_req(&cred, None, false));
            (r, t.elapsed())
        });
        // Wait until the operation is waiting for the touch.
        let t0 = Instant::now();
        while key.touches_requested() == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        let cancelled_at = Instant::now();
        key.cancel();
        let (r, _) = waiter.join().unwrap();
        assert_eq!(r.unwrap_err(), KeyError::Cancelled);
        assert!(cancelled_at.elapsed() < Duration::from_secs(2));

        // The flag is reset for the next operation: a silent probe works.
        let mut req = ga_req(&att.credential_id, None, false);
        req.up = false;
        key.get_assertion(&req).unwrap();
    }

    #[test]
    fn scripted_touch_approves_denies_and_cancels() {
        let dir = tempfile::tempdir().unwrap();
        let touch = Arc::new(ScriptedTouch::new());
        let key = Arc::new(open(&dir, touch.clone()));

        // An answer given ahead is used by the next request.
        touch.approve();
        let att = key.make_credential(&mc_req(false)).unwrap();
        assert_eq!(touch.requested(), 1);

        // Answer while the request is pending.
        let (k2, cred) = (key.clone(), att.credential_id.clone());
        let h = std::thread::spawn(move || k2.get_assertion(&ga_req(&cred, None, false)));
        assert!(touch.wait_requested(2, Duration::from_secs(10)));
        touch.deny();
        assert_eq!(h.join().unwrap().unwrap_err(), KeyError::TouchDenied);

        let (k2, cred) = (key.clone(), att.credential_id.clone());
        let h = std::thread::spawn(move || k2.get_assertion(&ga_req(&cred, None, false)));
        assert!(touch.wait_requested(3, Duration::from_secs(10)));
        touch.approve();
        assert!(h.join().unwrap().is_ok());

        let (k2, cred) = (key.clone(), att.credential_id.clone());
        let h = std::thread::spawn(move || k2.get_assertion(&ga_req(&cred, None, false)));
        assert!(touch.wait_requested(4, Duration::from_secs(10)));
        key.cancel();
        assert_eq!(h.join().unwrap().unwrap_err(), KeyError::Cancelled);
        assert_eq!(touch.requested(), 4);
        assert_eq!(key.touches_requested(), 4);
    }

    #[test]
    fn session_building_blocks_match_the_security_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir, Arc::new(AutoTouch));
        let (cred, strict) = {
            let mut s = key.session();
            let cred = s.create_credential(RP_ID, false);
            let strict = s.create_credential(RP_ID, true);
            assert_eq!(s.next_sign_count().unwrap(), 1);
            let ad = auth_data_header(cred.rp_id_hash(), flags::UP, 1);
            let cdh = sha256(b"c");
            verify_sig(
                &s.public_key_sec1(&cred),
                &ad,
                &cdh,
                &s.sign(&cred, &ad, &cdh),
            );
            let att = s.attested_credential_data(&cred, &SOFT_AAGUID);
            assert_eq!(&att[..16], &SOFT_AAGUID);
            assert_eq!(&att[18..18 + CREDENTIAL_ID_LEN], cred.id());
            // Found again only for its RP; the strict one only with UV.
            assert_eq!(
                s.find_credential(RP_ID, [cred.id()], false),
                Some(cred.clone())
            );
            assert_eq!(s.find_credential("other", [cred.id()], true), None);
            assert_eq!(s.find_credential(RP_ID, [strict.id()], false), None);
            assert!(s
                .find_credential(RP_ID, [strict.id()], true)
                .unwrap()
                .uv_required());
            (cred, strict)
        };
        // The SecurityKey path sees the same credentials and hmac outputs.
        let a = key
            .get_assertion(&ga_req(cred.id(), Some([3; 32]), true))
            .unwrap();
        assert_eq!(
            *a.hmac_secret.unwrap(),
            *key.session().hmac_secret(&cred, &[3; 32], true)
        );
        assert_eq!(
            key.get_assertion(&ga_req(strict.id(), None, false))
                .unwrap_err(),
            KeyError::NoCredentials
        );
        key.get_assertion(&ga_req(strict.id(), None, true)).unwrap();
        // The test knob rolls the persisted counter back.
        key.set_sign_count(1).unwrap();
        let key = SoftKey::open(key.path(), Arc::new(AutoTouch)).unwrap();
        assert_eq!(key.sign_count(), 1);
    }

    #[test]
    fn state_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/soft-key.json");
        let key = SoftKey::open(&path, Arc::new(AutoTouch)).unwrap();
        let att = key.make_credential(&mc_req(false)).unwrap();
        let first = key
            .get_assertion(&ga_req(&att.credential_id, Some([9; 32]), false))
            .unwrap();
        let count = key.sign_count();
        drop(key);

        let key = SoftKey::open(&path, Arc::new(AutoTouch)).unwrap();
        assert_eq!(key.sign_count(), count);
        let req = ga_req(&att.credential_id, Some([9; 32]), false);
        let again = key.get_assertion(&req).unwrap();
        verify_sig(
            &att.public_key_sec1,
            &again.auth_data,
            &req.client_data_hash(),
            &again.signature,
        );
        assert_eq!(
            *first.hmac_secret.unwrap(),
            *again.hmac_secret.unwrap(),
            "hmac-secret survives a restart"
        );
        assert_eq!(key.sign_count(), count + 1);
    }

    #[test]
    fn state_file_is_private_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/soft-key.json");
        let key = SoftKey::open(&path, Arc::new(AutoTouch)).unwrap();
        key.make_credential(&mc_req(false)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["sign_count"], 1);
        assert_eq!(v["aaguid"], hex::encode(SOFT_AAGUID));
        assert_eq!(v["master_secret"].as_str().unwrap().len(), 64);
        // Only the state file is left in the directory (no temp files).
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("soft-key.json")]);
        // Debug shows no secret.
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(v["master_secret"].as_str().unwrap()));
    }

    #[test]
    fn corrupt_state_file_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soft-key.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = SoftKey::open(&path, Arc::new(AutoTouch)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("soft-key.json") && msg.contains("left untouched"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"{not json");

        std::fs::write(
            &path,
            br#"{"version":1,"aaguid":"00","master_secret":"zz","sign_count":0}"#,
        )
        .unwrap();
        assert!(SoftKey::open(&path, Arc::new(AutoTouch)).is_err());
    }

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
