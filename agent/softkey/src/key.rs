//! The software authenticator: [`SoftKey`], its state under one mutex (which
//! serialises operations as a device does), the touch it asks for, and the
//! two ceremonies as touchgate's agent uses them ([`SoftKey::register`],
//! [`SoftKey::authenticate`]).
//!
//! * **Packed self-attestation**: ECDSA-SHA256 by the credential key over
//!   `authData ‖ clientDataHash`, DER-encoded, no certificate chain.
//! * **One global signature counter**, incremented and persisted on every
//!   registration and authentication; the in-memory counter moves only once
//!   the file has it.
//! * **Built-in user verification**, like a fingerprint key: when a request
//!   asks for UV the key sets the UV flag after the touch, without a PIN.
//!   (The CTAP2 front end, `ctap`, adds clientPIN.)
//! * **hmac-secret** answered already decrypted, for any credential of the
//!   key, with the CredRandom for UV or without.
//!
//! Writing the state file is the caller's ([`WriteFile`]): the agent writes
//! it atomically and privately, as it writes its own files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ciborium::value::Value;
use zeroize::Zeroizing;

use crate::auth_data::{auth_data, flags, Attested};
use crate::credential::{self, Credential};
use crate::state::{State, COUNTER_BLOCK};

/// Credentials whose public point a key keeps (the agent uses one at a time).
const KEPT_POINTS: usize = 8;
use crate::touch::{CancelFlag, TouchOutcome, TouchSource};

/// Writes the state file: `(path, bytes)`, so that readers see the old file
/// or the new one, with mode 0600 (the agent's is `vault::write_private_atomic`).
pub type WriteFile = fn(&Path, &[u8]) -> std::io::Result<()>;

/// Why the soft key did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The touch was refused.
    TouchDenied,
    /// The operation was cancelled while it waited for a touch.
    Cancelled,
    /// None of the credentials asked for is this key's (for this relying party).
    NoCredentials,
    /// The key holds one of the excluded credentials.
    Excluded,
    /// The state file cannot be read, parsed or written; the message names the file.
    State(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::TouchDenied => "the touch was refused on the soft key",
            Error::Cancelled => "the operation was cancelled on the soft key",
            Error::NoCredentials => "the soft key holds none of the credentials asked for",
            Error::Excluded => "the soft key holds one of the excluded credentials",
            Error::State(msg) => msg,
        })
    }
}

impl std::error::Error for Error {}

/// The software authenticator. See the crate docs: for tests and demos only.
pub struct SoftKey {
    path: PathBuf,
    write: WriteFile,
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

/// A registration (makeCredential) as the agent asks for it.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    pub rp_id: &'a str,
    /// What the attestation signs over, after the authenticator data.
    pub client_data_hash: [u8; 32],
    /// Credentials already enrolled: the key refuses if it holds one.
    pub exclude: &'a [Vec<u8>],
    /// Report user verification (built in: the touch verifies).
    pub uv: bool,
    /// Ask for the hmac-secret extension.
    pub hmac_secret: bool,
}

/// A new credential with its packed self-attestation (`alg` ES256, no `x5c`).
#[derive(Debug, Clone)]
pub struct Registered {
    pub credential_id: Vec<u8>,
    /// Uncompressed SEC1 point of the credential's P-256 public key (65 bytes).
    pub public_key_sec1: Vec<u8>,
    pub aaguid: [u8; 16],
    /// The authenticator data, with attested credential data.
    pub auth_data: Vec<u8>,
    pub sign_count: u32,
    /// DER ECDSA-SHA256 by the credential key over authData ‖ clientDataHash.
    pub signature: Vec<u8>,
}

/// An authentication (getAssertion) as the agent asks for it.
#[derive(Debug, Clone, Copy)]
pub struct Authentication<'a> {
    pub rp_id: &'a str,
    /// What the assertion signs over, after the authenticator data.
    pub client_data_hash: [u8; 32],
    /// Credential ids that may answer; the first of this key's is used.
    pub allow: &'a [Vec<u8>],
    /// hmac-secret salt1.
    pub hmac_salt: Option<&'a [u8; 32]>,
    /// Require user presence (a touch). Only a silent probe sets this false.
    pub up: bool,
    /// Report user verification (a touch, even when `up` is false).
    pub uv: bool,
}

/// An assertion: authenticator data without extensions (the hmac-secret
/// output comes back decrypted, as a platform library hands it over).
pub struct Authenticated {
    pub credential_id: Vec<u8>,
    /// rpIdHash(32) ‖ flags(1) ‖ signCount(4, big endian).
    pub auth_data: Vec<u8>,
    /// DER ECDSA-SHA256 by the credential key over authData ‖ clientDataHash.
    pub signature: Vec<u8>,
    /// `HMAC-SHA256(CredRandom, salt)` for the salt asked for.
    pub hmac_secret: Option<Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticated")
            .field("credential_id", &hex::encode(&self.credential_id))
            .field("auth_data_len", &self.auth_data.len())
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

impl SoftKey {
    /// Load the key's state from `state_path`, or create a new key there
    /// (written with `write`, which also moves the counter on later).
    pub fn open(
        state_path: &Path,
        touch: Arc<dyn TouchSource>,
        write: WriteFile,
    ) -> Result<SoftKey, Error> {
        let state = match std::fs::read(state_path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                State::from_json(state_path, &bytes)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = State::generate();
                write_state(write, state_path, &state.to_json(state.sign_count))?;
                state
            }
            Err(e) => {
                return Err(Error::State(format!(
                    "cannot read soft key state file {}: {e}",
                    state_path.display()
                )))
            }
        };
        Ok(SoftKey {
            path: state_path.to_path_buf(),
            write,
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

    /// Cancel the pending operation, if any (it ends with [`Error::Cancelled`]).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// **Test only**: set the signature counter (persisted), e.g. roll it back
    /// to simulate a cloned key.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_sign_count(&self, count: u32) -> Result<(), Error> {
        let mut state = self.lock();
        write_state(self.write, &self.path, &state.to_json(count))?;
        state.sign_count = count;
        state.reserved = count;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is whole between statements: a panic cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Exclusive use of the key for one operation.
    pub(crate) fn session(&self) -> Session<'_> {
        Session {
            key: self,
            state: self.lock(),
        }
    }

    /// Ask the touch source for a touch; map refusal and cancel to errors.
    fn require_touch(&self, prompt: &str) -> Result<(), Error> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        match self.touch.wait(prompt, &self.cancel) {
            TouchOutcome::Touched => Ok(()),
            TouchOutcome::Denied => Err(Error::TouchDenied),
            TouchOutcome::Cancelled => Err(Error::Cancelled),
        }
    }

    /// makeCredential with packed self-attestation. Always needs a touch; a
    /// key holding an excluded credential refuses after the touch, as CTAP2 says.
    pub fn register(&self, req: &Registration<'_>) -> Result<Registered, Error> {
        let mut session = self.session();
        self.cancel.reset();
        let excluded = session
            .find_credential(req.rp_id, req.exclude.iter().map(Vec::as_slice), true)
            .is_some();
        self.require_touch("create a touchgate credential")?;
        if excluded {
            return Err(Error::Excluded);
        }

        let cred = session.create_credential(req.rp_id, false);
        let public_key_sec1 = session.public_key_sec1(&cred).to_vec();
        let sign_count = session.next_sign_count()?;
        let mut user = flags::UP;
        if req.uv {
            user |= flags::UV;
        }
        let mut extensions = Vec::new();
        if req.hmac_secret {
            extensions.push(("hmac-secret", Value::Bool(true)));
        }
        let aaguid = session.aaguid();
        let auth_data = session.auth_data(&cred, user, sign_count, Some(&aaguid), extensions);
        let signature = session.sign(&cred, &auth_data, &req.client_data_hash);
        Ok(Registered {
            credential_id: cred.id().to_vec(),
            public_key_sec1,
            aaguid,
            auth_data,
            sign_count,
            signature,
        })
    }

    /// getAssertion with the first credential in `allow` that this key made
    /// for `rp_id`.
    ///
    /// A touch is needed when `up` is asked for, and also when only `uv` is
    /// (built-in verification means a finger on the key; the UP flag is then
    /// still left clear, as on a bio key). hmac-secret works for any
    /// credential of this key, whether or not it was created with the
    /// extension.
    pub fn authenticate(&self, req: &Authentication<'_>) -> Result<Authenticated, Error> {
        let mut session = self.session();
        self.cancel.reset();
        let cred = session
            .find_credential(req.rp_id, req.allow.iter().map(Vec::as_slice), req.uv)
            .ok_or(Error::NoCredentials)?;
        if req.up || req.uv {
            self.require_touch("approve a touchgate request")?;
        }
        let sign_count = session.next_sign_count()?;
        let mut user = 0;
        if req.up {
            user |= flags::UP;
        }
        if req.uv {
            user |= flags::UV;
        }
        let auth_data = session.auth_data(&cred, user, sign_count, None, Vec::new());
        let signature = session.sign(&cred, &auth_data, &req.client_data_hash);
        let hmac_secret = req
            .hmac_salt
            .map(|salt| session.hmac_secret(&cred, salt, req.uv));
        Ok(Authenticated {
            credential_id: cred.id().to_vec(),
            auth_data,
            signature,
            hmac_secret,
        })
    }
}

fn write_state(write: WriteFile, path: &Path, json: &[u8]) -> Result<(), Error> {
    write(path, json).map_err(|e| {
        Error::State(format!(
            "cannot write soft key state file {}: {e}",
            path.display()
        ))
    })
}

/// Exclusive use of the key for one CTAP2 operation: credential derivation,
/// the signature counter, authenticator data and signing, the same for both
/// front ends. Touches, PINs and flags are the caller's business.
pub(crate) struct Session<'a> {
    key: &'a SoftKey,
    state: MutexGuard<'a, State>,
}

impl Session<'_> {
    /// The key's own AAGUID.
    pub fn aaguid(&self) -> [u8; 16] {
        self.state.aaguid
    }

    /// A new credential for `rp_id` (nothing is stored; the counter does not
    /// move: call [`Session::next_sign_count`]).
    pub fn create_credential(&self, rp_id: &str, uv_required: bool) -> Credential {
        credential::new_credential(&self.state.master, rp_id, uv_required)
    }

    /// The first of `ids` that this key made for `rp_id` (skipping
    /// credentials that require UV when `uv` is false).
    pub fn find_credential<'i>(
        &self,
        rp_id: &str,
        ids: impl IntoIterator<Item = &'i [u8]>,
        uv: bool,
    ) -> Option<Credential> {
        let rp_id_hash = credential::sha256(rp_id.as_bytes());
        ids.into_iter()
            .find_map(|id| credential::own_credential(&self.state.master, id, &rp_id_hash, uv))
    }

    /// Increment the global counter and return the new value. The state file
    /// holds a counter at least as high before the value is used: past the
    /// reserved block, the next [`COUNTER_BLOCK`] counters are reserved with
    /// one write, and the in-memory counters move only once the file has them.
    pub fn next_sign_count(&mut self) -> Result<u32, Error> {
        let next =
            self.state.sign_count.checked_add(1).ok_or_else(|| {
                Error::State("the soft key's signature counter is exhausted".into())
            })?;
        if next > self.state.reserved {
            let reserve = next.saturating_add(COUNTER_BLOCK - 1);
            write_state(self.key.write, &self.key.path, &self.state.to_json(reserve))?;
            self.state.reserved = reserve;
        }
        self.state.sign_count = next;
        Ok(next)
    }

    /// Uncompressed SEC1 point of the credential's public key (65 bytes),
    /// kept for the credentials used lately (it is no secret).
    pub fn public_key_sec1(&mut self, cred: &Credential) -> [u8; 65] {
        if let Some((_, point)) = self.state.points.iter().find(|(id, _)| id == cred.id()) {
            return *point;
        }
        let point = credential::public_key_sec1(&self.state.master, cred);
        if self.state.points.len() == KEPT_POINTS {
            self.state.points.pop_front();
        }
        self.state.points.push_back((cred.id().to_vec(), point));
        point
    }

    /// The authenticator data for `cred` (see [`crate::auth_data`]), with
    /// attested credential data under `aaguid` when one is given.
    pub fn auth_data(
        &self,
        cred: &Credential,
        user: u8,
        sign_count: u32,
        aaguid: Option<&[u8; 16]>,
        extensions: Vec<(&str, Value)>,
    ) -> Vec<u8> {
        let cose_key;
        let attested = match aaguid {
            Some(aaguid) => {
                cose_key = credential::cose_key(&credential::signing_key(&self.state.master, cred));
                Some(Attested {
                    aaguid,
                    credential_id: cred.id(),
                    cose_key: &cose_key,
                })
            }
            None => None,
        };
        auth_data(
            cred.rp_id_hash(),
            user,
            sign_count,
            attested.as_ref(),
            extensions,
        )
    }

    /// DER ECDSA-SHA256 signature by the credential over `auth_data ‖ client_data_hash`.
    pub fn sign(
        &mut self,
        cred: &Credential,
        auth_data: &[u8],
        client_data_hash: &[u8; 32],
    ) -> Vec<u8> {
        let point = self.public_key_sec1(cred);
        credential::sign(
            &self.state.master,
            cred,
            &point,
            auth_data,
            client_data_hash,
        )
    }

    /// hmac-secret output `HMAC-SHA256(CredRandom, salt)`, with the CredRandom
    /// for use with (`uv`) or without user verification.
    pub fn hmac_secret(&self, cred: &Credential, salt: &[u8; 32], uv: bool) -> Zeroizing<[u8; 32]> {
        credential::hmac_secret(&self.state.master, cred, salt, uv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::touch::AutoTouch;
    use crate::{CREDENTIAL_ID_LEN, SOFT_AAGUID};
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{Signature, VerifyingKey};

    const RP_ID: &str = "touchgate";

    /// The tests' state writer: not atomic, which they do not need.
    fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::write(path, bytes)
    }

    fn open(dir: &tempfile::TempDir) -> SoftKey {
        SoftKey::open(&dir.path().join("k.json"), Arc::new(AutoTouch), write).unwrap()
    }

    fn verify_sig(pubkey: &[u8], auth_data: &[u8], cdh: &[u8; 32], der: &[u8]) {
        let vk = VerifyingKey::from_sec1_bytes(pubkey).unwrap();
        let sig = Signature::from_der(der).unwrap();
        vk.verify(&[auth_data, cdh].concat(), &sig)
            .expect("signature verifies");
    }

    fn authentication<'a>(
        allow: &'a [Vec<u8>],
        salt: Option<&'a [u8; 32]>,
        uv: bool,
    ) -> Authentication<'a> {
        Authentication {
            rp_id: RP_ID,
            client_data_hash: [7; 32],
            allow,
            hmac_salt: salt,
            up: true,
            uv,
        }
    }

    /// The counter in the state file, as a reopened key would read it.
    fn counter_on_disk(key: &SoftKey) -> u64 {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(key.path()).unwrap()).unwrap();
        v["sign_count"].as_u64().unwrap()
    }

    #[test]
    fn one_write_reserves_a_block_of_counters() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir);
        let block = u64::from(COUNTER_BLOCK);
        assert_eq!(counter_on_disk(&key), 0);
        let mut s = key.session();
        assert_eq!(s.next_sign_count().unwrap(), 1);
        assert_eq!(
            counter_on_disk(&key),
            block,
            "the first signature reserves a block"
        );
        let modified = std::fs::metadata(key.path()).unwrap().modified().unwrap();
        for want in 2..=COUNTER_BLOCK {
            assert_eq!(s.next_sign_count().unwrap(), want);
        }
        assert_eq!(
            counter_on_disk(&key),
            block,
            "inside the block nothing is written"
        );
        assert_eq!(
            std::fs::metadata(key.path()).unwrap().modified().unwrap(),
            modified
        );
        assert_eq!(s.next_sign_count().unwrap(), COUNTER_BLOCK + 1);
        assert_eq!(counter_on_disk(&key), 2 * block, "past it, the next block");
    }

    #[test]
    fn a_key_reopened_mid_block_goes_on_above_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir);
        for want in 1..=3 {
            assert_eq!(key.session().next_sign_count().unwrap(), want);
        }
        // Stopped (or crashed) after three signatures of a reserved block.
        let path = key.path().to_path_buf();
        drop(key);
        let key = SoftKey::open(&path, Arc::new(AutoTouch), write).unwrap();
        let next = key.session().next_sign_count().unwrap();
        assert_eq!(next, COUNTER_BLOCK + 1, "never a counter already used");
        assert_eq!(key.sign_count(), COUNTER_BLOCK + 1);
    }

    #[test]
    fn session_building_blocks_match_the_ceremonies() {
        let dir = tempfile::tempdir().unwrap();
        let key = open(&dir);
        let (cred, strict) = {
            let mut s = key.session();
            let cred = s.create_credential(RP_ID, false);
            let strict = s.create_credential(RP_ID, true);
            assert_eq!(s.next_sign_count().unwrap(), 1);
            let ad = s.auth_data(&cred, flags::UP, 1, None, Vec::new());
            assert_eq!(ad.len(), 37);
            let cdh = credential::sha256(b"c");
            verify_sig(
                &s.public_key_sec1(&cred),
                &ad,
                &cdh,
                &s.sign(&cred, &ad, &cdh),
            );
            let att = s.auth_data(&cred, flags::UP, 1, Some(&SOFT_AAGUID), Vec::new());
            assert_eq!(att[32], flags::UP | flags::AT);
            assert_eq!(&att[37..53], &SOFT_AAGUID);
            assert_eq!(&att[55..55 + CREDENTIAL_ID_LEN], cred.id());
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
        // The agent's ceremony sees the same credentials and hmac outputs.
        let allow = [cred.id().to_vec()];
        let a = key
            .authenticate(&authentication(&allow, Some(&[3; 32]), true))
            .unwrap();
        assert_eq!(
            *a.hmac_secret.unwrap(),
            *key.session().hmac_secret(&cred, &[3; 32], true)
        );
        let allow = [strict.id().to_vec()];
        assert_eq!(
            key.authenticate(&authentication(&allow, None, false))
                .unwrap_err(),
            Error::NoCredentials
        );
        key.authenticate(&authentication(&allow, None, true))
            .unwrap();
        // The test knob rolls the persisted counter back.
        key.set_sign_count(1).unwrap();
        let key = SoftKey::open(key.path(), Arc::new(AutoTouch), write).unwrap();
        assert_eq!(key.sign_count(), 1);
    }
}
