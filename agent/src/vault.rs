//! The sealed vault and the enrolment records (`vault.json`).
//!
//! # Design
//!
//! One random 32-byte data key (DEK) per vault encrypts every entry (an
//! upstream credential: an ADC refresh token, a service-account key, …).
//! Each enrolled security key has a **slot** that wraps the DEK under its own
//! key-encryption key:
//!
//! ```text
//! KEK  = HKDF-SHA256(ikm  = hmac-secret output of the key for enrolment.hmac_salt,
//!                    salt = enrolment.hmac_salt,
//!                    info = "touchgate vault slot v1" ‖ credential_id)
//! slot = XChaCha20-Poly1305(KEK, random 24-byte nonce, DEK,
//!                           aad = "touchgate-vault-v1/slot/" ‖ credential_id)
//! entry = XChaCha20-Poly1305(DEK, random 24-byte nonce, plaintext,
//!                            aad = "touchgate-vault-v1/entry/" ‖ name ‖ "/" ‖ kind)
//! ```
//!
//! So any one enrolled key opens the vault (a backup key is a second slot),
//! the file alone opens nothing, and the AAD binds each ciphertext to where it
//! sits: a slot cannot be moved to another credential, nor an entry renamed,
//! swapped with another or relabelled with another kind. Entry names may not
//! contain `/`, which keeps `name "/" kind` unambiguous.
//!
//! The hmac-secret output differs with and without user verification (CTAP2),
//! so a key must unlock the way it enrolled (`Enrolment::uv`).
//!
//! The file is JSON with binary fields in hex. It holds no secret in the
//! clear: the salts, credential ids and public keys in it are not secret.
//! Saving is atomic (temp file in the same directory, fsync, rename, fsync of
//! the directory), mode 0600 in a 0700 directory.
//!
//! A touch's new signature counter goes to a file of its own, appended to
//! ([`counters`]); the vault holds each key's counter as of its last save.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

pub mod counters;
pub use counters::CounterLog;

/// The vault file format this agent reads and writes.
pub const VAULT_VERSION: u32 = 1;

const SLOT_INFO: &[u8] = b"touchgate vault slot v1";
const SLOT_AAD: &[u8] = b"touchgate-vault-v1/slot/";
const ENTRY_AAD: &[u8] = b"touchgate-vault-v1/entry/";
const MAX_NAME_LEN: usize = 200;

/// One enrolled security key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    #[serde(with = "hex_bytes")]
    pub credential_id: Vec<u8>,
    /// Uncompressed SEC1 P-256 point (65 bytes).
    #[serde(with = "hex_bytes")]
    pub public_key_sec1: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub aaguid: [u8; 16],
    /// The last signature counter seen from this key (in the file: as of its
    /// last save; [`CounterLog::open`] raises it to the newest).
    pub sign_count: u32,
    /// The key's name at enrolment, for messages.
    pub key_name: String,
    /// The hmac-secret salt sent on every unlock (not secret; random per key).
    #[serde(with = "hex_bytes")]
    pub hmac_salt: [u8; 32],
    /// Whether the key enrolled (and so must unlock) with user verification.
    pub uv: bool,
    /// `packed`, `none`, …
    pub attestation_format: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The attestation certificate (DER), when the key sent one.
    #[serde(default, with = "hex_bytes")]
    pub attestation_cert: Vec<u8>,
    /// Why the key is not trusted any more (e.g. its counter went back: a possible clone).
    /// A suspect key unseals nothing until `touchgate keys trust`.
    #[serde(default)]
    pub suspect: Option<String>,
}

/// A key no longer enrolled (removed, or replaced by a new enrolment): only its
/// public key stays, so the audit records it signed still verify. It unlocks nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredKey {
    #[serde(with = "hex_bytes")]
    pub credential_id: Vec<u8>,
    /// Uncompressed SEC1 P-256 point (65 bytes).
    #[serde(with = "hex_bytes")]
    pub public_key_sec1: Vec<u8>,
    pub key_name: String,
}

impl From<&Enrolment> for RetiredKey {
    fn from(e: &Enrolment) -> RetiredKey {
        RetiredKey {
            credential_id: e.credential_id.clone(),
            public_key_sec1: e.public_key_sec1.clone(),
            key_name: e.key_name.clone(),
        }
    }
}

/// The vault's data key, wrapped for one enrolled credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    #[serde(with = "hex_bytes")]
    pub credential_id: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub nonce: [u8; 24],
    /// The encrypted DEK with its 16-byte tag.
    #[serde(with = "hex_bytes")]
    pub wrapped_dek: Vec<u8>,
}

/// One sealed upstream credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What the plaintext is, e.g. `authorized_user` or `service_account`.
    pub kind: String,
    #[serde(with = "hex_bytes")]
    pub nonce: [u8; 24],
    #[serde(with = "hex_bytes")]
    pub ciphertext: Vec<u8>,
}

/// The whole vault file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultFile {
    pub version: u32,
    #[serde(default)]
    pub enrolments: Vec<Enrolment>,
    #[serde(default)]
    pub slots: Vec<Slot>,
    #[serde(default)]
    pub entries: BTreeMap<String, Entry>,
    /// Keys enrolled once (public keys only), for verifying old audit records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredKey>,
}

impl Default for VaultFile {
    fn default() -> Self {
        VaultFile {
            version: VAULT_VERSION,
            enrolments: Vec::new(),
            slots: Vec::new(),
            entries: BTreeMap::new(),
            retired: Vec::new(),
        }
    }
}

/// The vault's data key, unwrapped. Zeroed on drop; Debug shows nothing.
#[derive(Clone)]
pub struct Dek(Zeroizing<[u8; 32]>);

impl Dek {
    fn generate() -> Dek {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut k[..]);
        Dek(k)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0[..]))
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek([REDACTED])")
    }
}

/// What can go wrong with the vault. Messages are one line and never carry
/// secret bytes.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot {op} {}: {err}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    #[error("{} is not a valid touchgate vault ({reason}); it was left untouched", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{} is a version {found} vault but this agent reads version {VAULT_VERSION}; it was left untouched",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error("the vault has no slot for this security key's credential: enrol the key first")]
    NoSlot,
    #[error("the vault has no enrolment for this security key's credential")]
    NotEnrolled,
    #[error(
        "the security key could not open the vault (a different key or a different \
         user-verification setting than at enrol)"
    )]
    WrongKey,
    #[error(
        "the vault already has key slots: unlock it with an enrolled key and add this one as a further slot"
    )]
    SlotsExist,
    #[error("the given vault key does not open the vault's entries")]
    WrongDek,
    #[error("the vault has no entry named \"{name}\"")]
    NoEntry { name: String },
    #[error(
        "vault entry \"{name}\" could not be opened: it was changed, moved or sealed under another vault key"
    )]
    EntryCorrupt { name: String },
    #[error("invalid vault entry {what}: {why}")]
    BadName {
        what: &'static str,
        why: &'static str,
    },
}

impl VaultFile {
    /// Read the vault at `path`; a missing file is an empty vault. A file that
    /// does not parse is an error naming it, and the file is not touched.
    pub fn load(path: &Path) -> Result<VaultFile, VaultError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VaultFile::default()),
            Err(err) => {
                return Err(VaultError::Io {
                    op: "read",
                    path: path.to_path_buf(),
                    err,
                })
            }
        };
        // Look at the version first, so a newer format gets the right message.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let corrupt = |e: serde_json::Error| VaultError::Corrupt {
            path: path.to_path_buf(),
            // Only the position: serde_json messages can quote file content.
            reason: format!(
                "{} at line {} column {}",
                match e.classify() {
                    serde_json::error::Category::Io => "read error",
                    serde_json::error::Category::Syntax => "JSON syntax error",
                    serde_json::error::Category::Data => "unexpected content",
                    serde_json::error::Category::Eof => "file ends early",
                },
                e.line(),
                e.column()
            ),
        };
        let v: VersionOnly = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if v.version != VAULT_VERSION {
            return Err(VaultError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: v.version,
            });
        }
        serde_json::from_slice(&bytes).map_err(corrupt)
    }

    /// Write the vault to `path` atomically, mode 0600 (parent created 0700).
    pub fn save(&self, path: &Path) -> Result<(), VaultError> {
        let mut json = serde_json::to_vec_pretty(self).expect("vault serialises");
        json.push(b'\n');
        write_private_atomic(path, &json).map_err(|err| VaultError::Io {
            op: "write",
            path: path.to_path_buf(),
            err,
        })
    }

    /// The first enrolment, if any.
    pub fn enrolment(&self) -> Option<&Enrolment> {
        self.enrolments.first()
    }

    /// The first enrolment, if any, to update (e.g. its counter).
    pub fn enrolment_mut(&mut self) -> Option<&mut Enrolment> {
        self.enrolments.first_mut()
    }

    /// The enrolment of one credential.
    pub fn enrolment_for(&self, credential_id: &[u8]) -> Option<&Enrolment> {
        self.enrolments
            .iter()
            .find(|e| e.credential_id == credential_id)
    }

    /// The enrolment of one credential, to update.
    pub fn enrolment_for_mut(&mut self, credential_id: &[u8]) -> Option<&mut Enrolment> {
        self.enrolments
            .iter_mut()
            .find(|e| e.credential_id == credential_id)
    }

    /// Unwrap the DEK with the hmac-secret output the key gave for this
    /// credential's `hmac_salt`.
    pub fn unlock(&self, credential_id: &[u8], hmac_output: &[u8; 32]) -> Result<Dek, VaultError> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.credential_id == credential_id)
            .ok_or(VaultError::NoSlot)?;
        let kek = self.kek(credential_id, hmac_output)?;
        let dek = kek
            .decrypt(
                XNonce::from_slice(&slot.nonce),
                Payload {
                    msg: &slot.wrapped_dek,
                    aad: &slot_aad(credential_id),
                },
            )
            .map_err(|_| VaultError::WrongKey)?;
        let dek = Zeroizing::new(dek);
        let mut key = Zeroizing::new([0u8; 32]);
        if dek.len() != key.len() {
            return Err(VaultError::WrongKey);
        }
        key.copy_from_slice(&dek);
        Ok(Dek(key))
    }

    /// Create the vault's first slot: a new random DEK, wrapped for this
    /// credential (whose enrolment must already be in the vault). Refused
    /// when the vault already has slots: use [`VaultFile::add_slot`] with the
    /// DEK from [`VaultFile::unlock`] then.
    pub fn create_slot(
        &mut self,
        credential_id: &[u8],
        hmac_output: &[u8; 32],
    ) -> Result<Dek, VaultError> {
        if !self.slots.is_empty() {
            return Err(VaultError::SlotsExist);
        }
        let dek = Dek::generate();
        self.add_slot(credential_id, hmac_output, &dek)?;
        Ok(dek)
    }

    /// Wrap the vault's DEK for one more credential (a backup key), or re-wrap
    /// it for a credential that has a slot already (replacing that slot). The
    /// credential's enrolment must already be in the vault. If the vault has
    /// entries, `dek` must open them.
    pub fn add_slot(
        &mut self,
        credential_id: &[u8],
        hmac_output: &[u8; 32],
        dek: &Dek,
    ) -> Result<(), VaultError> {
        if let Some((name, entry)) = self.entries.iter().next() {
            if entry_decrypt(dek, name, entry).is_err() {
                return Err(VaultError::WrongDek);
            }
        }
        let kek = self.kek(credential_id, hmac_output)?;
        let nonce = random_nonce();
        let wrapped_dek = kek
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &dek.0[..],
                    aad: &slot_aad(credential_id),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts 32 bytes");
        let slot = Slot {
            credential_id: credential_id.to_vec(),
            nonce,
            wrapped_dek,
        };
        match self
            .slots
            .iter_mut()
            .find(|s| s.credential_id == credential_id)
        {
            Some(existing) => *existing = slot,
            None => self.slots.push(slot),
        }
        Ok(())
    }

    /// Seal `plaintext` as entry `name` of `kind` (replacing any entry of that
    /// name). `name` must be non-empty, without `/` or control characters.
    pub fn seal(
        &mut self,
        dek: &Dek,
        name: &str,
        kind: &str,
        plaintext: &[u8],
    ) -> Result<(), VaultError> {
        check_label("name", name, true)?;
        check_label("kind", kind, false)?;
        let nonce = random_nonce();
        let ciphertext = dek
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &entry_aad(name, kind),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any sane length");
        self.entries.insert(
            name.to_string(),
            Entry {
                kind: kind.to_string(),
                nonce,
                ciphertext,
            },
        );
        Ok(())
    }

    /// Open entry `name`: its kind and plaintext.
    pub fn open(&self, dek: &Dek, name: &str) -> Result<(String, Zeroizing<Vec<u8>>), VaultError> {
        let entry = self.entries.get(name).ok_or_else(|| VaultError::NoEntry {
            name: name.to_string(),
        })?;
        let plaintext = entry_decrypt(dek, name, entry)?;
        Ok((entry.kind.clone(), plaintext))
    }

    /// Remove entry `name`; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        self.entries.remove(name).is_some()
    }

    /// Forget an enrolled key and its slot. Returns false if it was not enrolled.
    pub fn remove_key(&mut self, credential_id: &[u8]) -> bool {
        if let Some(e) = self.enrolment_for(credential_id) {
            let retired = RetiredKey::from(e);
            self.retired.push(retired);
        }
        let before = self.enrolments.len();
        self.enrolments.retain(|e| e.credential_id != credential_id);
        self.slots.retain(|s| s.credential_id != credential_id);
        self.enrolments.len() != before
    }

    /// The names of the sealed entries, sorted.
    pub fn entry_names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// The slot's key-encryption key.
    fn kek(
        &self,
        credential_id: &[u8],
        hmac_output: &[u8; 32],
    ) -> Result<XChaCha20Poly1305, VaultError> {
        let enrolment = self
            .enrolment_for(credential_id)
            .ok_or(VaultError::NotEnrolled)?;
        let hk = Hkdf::<Sha256>::new(Some(&enrolment.hmac_salt), hmac_output);
        let mut kek = Zeroizing::new([0u8; 32]);
        hk.expand_multi_info(&[SLOT_INFO, credential_id], &mut kek[..])
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Ok(XChaCha20Poly1305::new(Key::from_slice(&kek[..])))
    }
}

fn entry_decrypt(dek: &Dek, name: &str, entry: &Entry) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    dek.cipher()
        .decrypt(
            XNonce::from_slice(&entry.nonce),
            Payload {
                msg: &entry.ciphertext,
                aad: &entry_aad(name, &entry.kind),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| VaultError::EntryCorrupt {
            name: name.to_string(),
        })
}

fn slot_aad(credential_id: &[u8]) -> Vec<u8> {
    [SLOT_AAD, credential_id].concat()
}

fn entry_aad(name: &str, kind: &str) -> Vec<u8> {
    [ENTRY_AAD, name.as_bytes(), b"/", kind.as_bytes()].concat()
}

fn random_nonce() -> [u8; 24] {
    let mut n = [0u8; 24];
    OsRng.fill_bytes(&mut n);
    n
}

fn check_label(what: &'static str, s: &str, is_name: bool) -> Result<(), VaultError> {
    let bad = |why| Err(VaultError::BadName { what, why });
    if s.is_empty() {
        return bad("it is empty");
    }
    if s.len() > MAX_NAME_LEN {
        return bad("it is longer than 200 bytes");
    }
    if s.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if is_name && s.contains('/') {
        return bad("it contains '/'");
    }
    Ok(())
}

/// Write `bytes` to `path` so that readers see the old file or the new one,
/// never a mix, and a crash leaves one of the two: a temp file in the same
/// directory (mode 0600, created exclusively), written and fsynced, renamed
/// over `path`, then the directory fsynced. A missing parent directory is
/// created with mode 0700. Shared with the soft key's state file.
pub(crate) fn write_private_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tag = [0u8; 8];
    OsRng.fill_bytes(&mut tag);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        hex::encode(tag)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable.
    File::open(dir)?.sync_all()
}

/// Serde as a hex string, for `Vec<u8>` and byte arrays.
mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: hex::FromHex,
    {
        let s = String::deserialize(d)?;
        // Not the hex crate's message: it may quote the offending characters.
        T::from_hex(&s)
            .map_err(|_| D::Error::custom("a binary field is not valid hex of the right length"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;

    const CRED_A: &[u8] = b"credential-a-0123456789";
    const CRED_B: &[u8] = b"credential-b-9876543210";

    #[test]
    fn a_removed_key_keeps_only_its_public_key_for_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let mut v = VaultFile::default();
        v.enrolments.push(enrolment(CRED_A, 1));
        v.enrolments.push(enrolment(CRED_B, 1));
        assert!(v.remove_key(CRED_B));
        v.save(&path).unwrap();
        let v = VaultFile::load(&path).unwrap();
        assert_eq!(v.enrolments.len(), 1);
        assert_eq!(v.retired, vec![RetiredKey::from(&enrolment(CRED_B, 1))]);
        assert!(
            v.enrolment_for(CRED_B).is_none(),
            "a retired key unlocks nothing"
        );
        assert_eq!(crate::audit::keys_of(&v).len(), 2);
    }

    fn enrolment(cred: &[u8], salt: u8) -> Enrolment {
        Enrolment {
            credential_id: cred.to_vec(),
            public_key_sec1: vec![4; 65],
            aaguid: [7; 16],
            sign_count: 1,
            key_name: "soft key (test)".into(),
            hmac_salt: [salt; 32],
            uv: false,
            attestation_format: "packed".into(),
            created_at: 1_800_000_000,
            attestation_cert: vec![],
            suspect: None,
        }
    }

    /// A vault with key A enrolled and a first slot; returns it and the DEK.
    fn vault_a(out_a: &[u8; 32]) -> (VaultFile, Dek) {
        let mut v = VaultFile::default();
        v.enrolments.push(enrolment(CRED_A, 1));
        let dek = v.create_slot(CRED_A, out_a).unwrap();
        (v, dek)
    }

    #[test]
    fn seal_open_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/vault.json");
        let out_a = [0x11; 32];
        let (mut v, dek) = vault_a(&out_a);
        v.seal(
            &dek,
            "default",
            "authorized_user",
            b"{\"refresh_token\":\"r\"}",
        )
        .unwrap();
        v.seal(&dek, "sa:train", "service_account", b"sa json")
            .unwrap();
        v.save(&path).unwrap();

        let loaded = VaultFile::load(&path).unwrap();
        assert_eq!(loaded, v);
        assert_eq!(loaded.entry_names(), vec!["default", "sa:train"]);
        let dek2 = loaded.unlock(CRED_A, &out_a).unwrap();
        let (kind, pt) = loaded.open(&dek2, "default").unwrap();
        assert_eq!(kind, "authorized_user");
        assert_eq!(&pt[..], b"{\"refresh_token\":\"r\"}");
        let (kind, pt) = loaded.open(&dek2, "sa:train").unwrap();
        assert_eq!(
            (kind.as_str(), &pt[..]),
            ("service_account", &b"sa json"[..])
        );
        assert!(matches!(
            loaded.open(&dek2, "nope"),
            Err(VaultError::NoEntry { .. })
        ));
        assert_eq!(loaded.enrolment().unwrap().credential_id, CRED_A);
    }

    #[test]
    fn missing_file_is_an_empty_vault() {
        let dir = tempfile::tempdir().unwrap();
        let v = VaultFile::load(&dir.path().join("vault.json")).unwrap();
        assert_eq!(v, VaultFile::default());
        assert_eq!(v.version, 1);
        assert!(v.enrolment().is_none());
    }

    #[test]
    fn saved_file_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let refresh = "1//0gRECOGNISABLE-refresh-token-abcdefghijklmnop";
        let pkey = "-----BEGIN PRIVATE KEY-----\\nMIIEvRECOGNISABLEPRIVATEKEYxyz\\n-----END PRIVATE KEY-----\\n";
        let secret_json = format!(
            "{{\"type\":\"authorized_user\",\"refresh_token\":\"{refresh}\",\"private_key\":\"{pkey}\"}}"
        );
        let out_a = [0x22; 32];
        let (mut v, dek) = vault_a(&out_a);
        v.seal(&dek, "default", "authorized_user", secret_json.as_bytes())
            .unwrap();
        v.save(&path).unwrap();

        let file = fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&file).to_lowercase();
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut needles: Vec<String> = Vec::new();
        for s in [
            refresh,
            "RECOGNISABLE",
            "MIIEvRECOGNISABLEPRIVATEKEYxyz",
            secret_json.as_str(),
        ] {
            needles.push(s.to_lowercase());
            needles.push(hex::encode(s));
            // base64 of a substring depends on alignment: try all three.
            for skip in 0..3 {
                let enc = b64.encode(&s.as_bytes()[skip..]);
                needles.push(enc[..enc.len().min(16)].to_lowercase());
                let enc = b64url.encode(&s.as_bytes()[skip..]);
                needles.push(enc[..enc.len().min(16)].to_lowercase());
            }
        }
        // The DEK and the hmac output are not in there either.
        needles.push(hex::encode(&dek.0[..]));
        needles.push(hex::encode(out_a));
        for n in needles {
            assert!(!text.contains(&n), "vault file contains {n:?}");
        }
    }

    #[test]
    fn wrong_hmac_output_cannot_unlock() {
        let out_a = [0x33; 32];
        let (mut v, _) = vault_a(&out_a);
        // Another key's output, or the same key with the other UV setting:
        // both are just a different 32-byte output.
        for wrong in [[0x34; 32], [0; 32]] {
            assert!(matches!(
                v.unlock(CRED_A, &wrong),
                Err(VaultError::WrongKey)
            ));
        }
        assert!(matches!(v.unlock(CRED_B, &out_a), Err(VaultError::NoSlot)));
        let msg = VaultError::WrongKey.to_string();
        assert!(msg.contains("different user-verification setting"), "{msg}");

        // A slot moved to another credential id does not open either, even
        // with the right output and salt.
        let mut moved = v.clone();
        moved.slots[0].credential_id = CRED_B.to_vec();
        let mut e = enrolment(CRED_B, 1);
        e.hmac_salt = v.enrolments[0].hmac_salt;
        moved.enrolments.push(e);
        assert!(matches!(
            moved.unlock(CRED_B, &out_a),
            Err(VaultError::WrongKey)
        ));

        // The slot's AAD names its credential: a slot wrapped under B's KEK
        // but with A's AAD does not open as B's.
        let mut crossed = moved.clone();
        let kek_b = crossed.kek(CRED_B, &out_a).unwrap();
        let nonce = random_nonce();
        crossed.slots[0].nonce = nonce;
        crossed.slots[0].wrapped_dek = kek_b
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &[9u8; 32],
                    aad: &slot_aad(CRED_A),
                },
            )
            .unwrap();
        assert!(matches!(
            crossed.unlock(CRED_B, &out_a),
            Err(VaultError::WrongKey)
        ));

        // A changed salt breaks the KEK.
        v.enrolments[0].hmac_salt[0] ^= 1;
        assert!(matches!(
            v.unlock(CRED_A, &out_a),
            Err(VaultError::WrongKey)
        ));
    }

    #[test]
    fn soft_key_uv_and_no_uv_outputs_are_different_keys() {
        use crate::fido::key::soft::{self, AutoTouch};
        use crate::fido::key::{GetAssertionRequest, MakeCredentialRequest, SecurityKey, RP_ID};
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let key = soft::open(&dir.path().join("k.json"), Arc::new(AutoTouch)).unwrap();
        let att = key
            .make_credential(&MakeCredentialRequest {
                rp_id: RP_ID.into(),
                challenge: [0; 32],
                user_id: vec![1],
                user_name: "u".into(),
                hmac_secret: true,
                uv: true,
                pin: None,
                exclude: vec![],
            })
            .unwrap();
        let mut e = enrolment(&att.credential_id, 5);
        e.uv = true;
        let output = |uv: bool| {
            key.get_assertion(&GetAssertionRequest {
                rp_id: RP_ID.into(),
                challenge: [0; 32],
                allow: vec![att.credential_id.clone()],
                hmac_salt: Some(e.hmac_salt),
                uv,
                pin: None,
                up: true,
            })
            .unwrap()
            .hmac_secret
            .unwrap()
        };
        let mut v = VaultFile::default();
        v.enrolments.push(e.clone());
        let dek = v.create_slot(&att.credential_id, &output(true)).unwrap();
        v.seal(&dek, "default", "authorized_user", b"x").unwrap();
        assert!(v.unlock(&att.credential_id, &output(true)).is_ok());
        assert!(matches!(
            v.unlock(&att.credential_id, &output(false)),
            Err(VaultError::WrongKey)
        ));
    }

    #[test]
    fn second_key_gets_its_own_slot() {
        let (out_a, out_b) = ([0x44; 32], [0x55; 32]);
        let (mut v, dek) = vault_a(&out_a);
        v.seal(&dek, "default", "authorized_user", b"secret")
            .unwrap();
        v.enrolments.push(enrolment(CRED_B, 2));
        assert!(matches!(
            v.create_slot(CRED_B, &out_b),
            Err(VaultError::SlotsExist)
        ));
        // add_slot refuses a DEK that is not the vault's.
        assert!(matches!(
            v.add_slot(CRED_B, &out_b, &Dek::generate()),
            Err(VaultError::WrongDek)
        ));
        v.add_slot(CRED_B, &out_b, &dek).unwrap();
        assert_eq!(v.slots.len(), 2);
        let dek_b = v.unlock(CRED_B, &out_b).unwrap();
        assert_eq!(&v.open(&dek_b, "default").unwrap().1[..], b"secret");
        // Re-wrapping for A replaces A's slot.
        let new_out_a = [0x66; 32];
        v.add_slot(CRED_A, &new_out_a, &dek).unwrap();
        assert_eq!(v.slots.len(), 2);
        assert!(v.unlock(CRED_A, &new_out_a).is_ok());
        assert!(matches!(
            v.unlock(CRED_A, &out_a),
            Err(VaultError::WrongKey)
        ));
        // A slot needs an enrolment.
        let mut bare = VaultFile::default();
        assert!(matches!(
            bare.create_slot(CRED_A, &out_a),
            Err(VaultError::NotEnrolled)
        ));
        assert!(bare.slots.is_empty());
    }

    #[test]
    fn swapped_renamed_or_tampered_entries_fail() {
        let out_a = [0x77; 32];
        let (mut v, dek) = vault_a(&out_a);
        v.seal(&dek, "one", "authorized_user", b"first secret")
            .unwrap();
        v.seal(&dek, "two", "authorized_user", b"second secret")
            .unwrap();
        let corrupt = |v: &VaultFile, name: &str| {
            matches!(v.open(&dek, name), Err(VaultError::EntryCorrupt { .. }))
        };

        let mut swapped = v.clone();
        let one = swapped.entries.remove("one").unwrap();
        let two = swapped.entries.remove("two").unwrap();
        swapped.entries.insert("one".into(), two);
        swapped.entries.insert("two".into(), one);
        assert!(corrupt(&swapped, "one") && corrupt(&swapped, "two"));

        let mut renamed = v.clone();
        let one = renamed.entries.remove("one").unwrap();
        renamed.entries.insert("three".into(), one);
        assert!(corrupt(&renamed, "three"));

        let mut relabelled = v.clone();
        relabelled.entries.get_mut("one").unwrap().kind = "service_account".into();
        assert!(corrupt(&relabelled, "one"));

        let mut tampered = v.clone();
        tampered.entries.get_mut("one").unwrap().ciphertext[3] ^= 0x01;
        assert!(corrupt(&tampered, "one"));

        let mut truncated = v.clone();
        truncated
            .entries
            .get_mut("one")
            .unwrap()
            .ciphertext
            .truncate(5);
        assert!(corrupt(&truncated, "one"));

        let mut renonced = v.clone();
        renonced.entries.get_mut("one").unwrap().nonce[0] ^= 0x80;
        assert!(corrupt(&renonced, "one"));

        let mut slot_tampered = v.clone();
        slot_tampered.slots[0].wrapped_dek[0] ^= 1;
        assert!(matches!(
            slot_tampered.unlock(CRED_A, &out_a),
            Err(VaultError::WrongKey)
        ));

        // Another vault's DEK opens nothing here.
        let (_, other_dek) = vault_a(&out_a);
        assert!(matches!(
            v.open(&other_dek, "one"),
            Err(VaultError::EntryCorrupt { .. })
        ));
        // The untouched vault still opens.
        assert_eq!(&v.open(&dek, "one").unwrap().1[..], b"first secret");
    }

    #[test]
    fn names_are_checked() {
        let (mut v, dek) = vault_a(&[1; 32]);
        for (name, kind) in [
            ("", "k"),
            ("a/b", "k"),
            ("a\nb", "k"),
            ("a", ""),
            ("a", "k\0"),
        ] {
            assert!(
                matches!(
                    v.seal(&dek, name, kind, b"x"),
                    Err(VaultError::BadName { .. })
                ),
                "{name:?} {kind:?}"
            );
        }
        v.seal(&dek, "user@example.com", "google/authorized_user", b"x")
            .unwrap();
        assert!(v.remove("user@example.com"));
        assert!(!v.remove("user@example.com"));
    }

    #[test]
    fn saved_file_is_private_and_save_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        let path = state.join("vault.json");
        let (mut v, dek) = vault_a(&[2; 32]);
        v.save(&path).unwrap();
        v.seal(&dek, "default", "authorized_user", b"x").unwrap();
        v.save(&path).unwrap(); // over an existing file
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["vault.json"]);
        assert_eq!(VaultFile::load(&path).unwrap(), v);
    }

    #[test]
    fn failed_save_keeps_the_old_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        let (v, _) = vault_a(&[3; 32]);
        v.save(&path).unwrap();
        let before = fs::read(&path).unwrap();
        // Renaming a file over a directory fails after the temp file is written.
        let as_dir = dir.path().join("dir.json");
        fs::create_dir(&as_dir).unwrap();
        fs::write(as_dir.join("x"), b"x").unwrap();
        let err = v.save(&as_dir).unwrap_err();
        assert!(err.to_string().contains("dir.json"), "{err}");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["dir.json", "vault.json"]);
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn corrupt_file_is_named_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.json");
        for content in [
            &b"{\"version\": 1, \"slots\": [ "[..],
            b"not json at all",
            b"{\"version\":1,\"entries\":{\"x\":{\"kind\":\"k\",\"nonce\":\"zz-secretish\",\"ciphertext\":\"\"}}}",
            b"{\"version\":\"one\"}",
        ] {
            fs::write(&path, content).unwrap();
            let err = VaultFile::load(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, VaultError::Corrupt { .. }), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("left untouched"), "{msg}");
            assert!(!msg.contains("secretish") && !msg.contains('\n'), "{msg}");
            assert_eq!(fs::read(&path).unwrap(), content);
        }
        fs::write(&path, b"{\"version\": 2}").unwrap();
        let err = VaultFile::load(&path).unwrap_err();
        assert!(
            matches!(err, VaultError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("version 2"));
    }

    #[test]
    fn debug_and_errors_carry_no_secrets() {
        let out = [0xAB; 32];
        let (mut v, dek) = vault_a(&out);
        v.seal(&dek, "default", "authorized_user", b"PLAINTEXT-SECRET")
            .unwrap();
        let dbg = format!("{dek:?} {v:?}");
        assert_eq!(format!("{dek:?}"), "Dek([REDACTED])");
        assert!(!dbg.contains(&hex::encode(&dek.0[..])));
        assert!(!dbg.contains("PLAINTEXT-SECRET"));
        assert!(!dbg.contains(&format!("{:?}", &dek.0[..])));
        for e in [
            v.unlock(CRED_A, &[0; 32]).unwrap_err(),
            v.open(&Dek::generate(), "default").unwrap_err(),
        ] {
            let m = e.to_string();
            assert!(
                !m.contains('\n') && !m.contains(&hex::encode(&dek.0[..])),
                "{m}"
            );
        }
    }
}
