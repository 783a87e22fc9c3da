//! The `soft` backend: the software authenticator of `touchgate-softkey`
//! behind [`SecurityKey`], the test and demo security key.
//!
//! **This is not a security key.** Its master secret sits in a JSON file on
//! disk (mode 0600), so anyone who can read that file as you can make every
//! credential it ever made answer without a touch. It exists so touchgate can
//! be developed, tested and demonstrated on machines without FIDO2 hardware,
//! and is used only when named (`[key] backend = "soft"`).
//!
//! The key itself (credentials, authenticator data, packed self-attestation,
//! hmac-secret, the signature counter, built-in UV, touches) lives in
//! `touchgate-softkey`; this module adapts its requests and answers to the
//! agent's, maps its errors to [`KeyError`], and writes its state file as the
//! agent writes its own files (atomically, mode 0600, in a 0700 directory:
//! [`crate::vault`]'s writer). A PIN passed in a request is ignored: the key
//! has built-in user verification and no clientPIN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(any(test, feature = "testing"))]
pub use touchgate_softkey::ScriptedTouch;
pub use touchgate_softkey::{
    touch_source, AutoTouch, CancelFlag, DenyTouch, NeverTouch, PromptTouch, SoftKey, TouchMode,
    TouchOutcome, TouchSource, CREDENTIAL_ID_LEN, SOFT_AAGUID,
};

use touchgate_softkey::{Authentication, Registration};

use super::{
    Assertion, Attestation, GetAssertionRequest, KeyError, MakeCredentialRequest, SecurityKey,
};

/// COSE ES256: the packed self-attestation's `alg`.
const ALG_ES256: i64 = -7;

/// Load the soft key's state from `state_path`, or create a new key there
/// (parent directory created 0700, file written atomically with mode 0600).
pub fn open(state_path: &Path, touch: Arc<dyn TouchSource>) -> Result<SoftKey, KeyError> {
    SoftKey::open(state_path, touch, crate::vault::write_private_atomic).map_err(key_error)
}

/// The agent's error for the soft key's.
fn key_error(e: touchgate_softkey::Error) -> KeyError {
    use touchgate_softkey::Error;
    match e {
        Error::TouchDenied => KeyError::TouchDenied,
        Error::Cancelled => KeyError::Cancelled,
        Error::NoCredentials => KeyError::NoCredentials,
        Error::Excluded => KeyError::Excluded,
        Error::State(msg) => KeyError::Device(msg),
    }
}

impl SecurityKey for SoftKey {
    fn name(&self) -> String {
        format!("soft key ({})", self.path().display())
    }

    fn backend(&self) -> &'static str {
        "soft"
    }

    fn plaintext_secret(&self) -> Option<PathBuf> {
        Some(self.path().to_path_buf())
    }

    /// makeCredential with packed self-attestation. Always needs a touch.
    fn make_credential(&self, req: &MakeCredentialRequest) -> Result<Attestation, KeyError> {
        let made = self
            .register(&Registration {
                rp_id: &req.rp_id,
                client_data_hash: req.client_data_hash(),
                exclude: &req.exclude,
                uv: req.uv,
                hmac_secret: req.hmac_secret,
            })
            .map_err(key_error)?;
        Ok(Attestation {
            credential_id: made.credential_id,
            public_key_sec1: made.public_key_sec1,
            aaguid: made.aaguid,
            auth_data: made.auth_data,
            sign_count: made.sign_count,
            format: "packed".into(),
            attestation_signature: made.signature,
            statement_alg: Some(ALG_ES256),
            x5c: Vec::new(),
            hmac_secret: req.hmac_secret,
        })
    }

    /// getAssertion with the first credential in `allow` that this key made
    /// for `rp_id`. The authenticator data carries no extension bytes: the
    /// hmac-secret output comes back already decrypted in
    /// [`Assertion::hmac_secret`], as ctap-hid-fido2 hands it over, so the
    /// agent sees the same shape from either backend.
    fn get_assertion(&self, req: &GetAssertionRequest) -> Result<Assertion, KeyError> {
        let got = self
            .authenticate(&Authentication {
                rp_id: &req.rp_id,
                client_data_hash: req.client_data_hash(),
                allow: &req.allow,
                hmac_salt: req.hmac_salt.as_ref(),
                up: req.up,
                uv: req.uv,
            })
            .map_err(key_error)?;
        Ok(Assertion {
            credential_id: got.credential_id,
            auth_data: got.auth_data,
            signature: got.signature,
            hmac_secret: got.hmac_secret,
        })
    }

    fn cancel(&self) {
        SoftKey::cancel(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fido::key::{flags, RP_ID};
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{Signature, VerifyingKey};
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    /// CBOR `{"hmac-secret": true}`.
    const HMAC_SECRET_EXTENSION: &[u8] = b"\xA1\x6Bhmac-secret\xF5";

    fn sha256(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    fn open_in(dir: &tempfile::TempDir, touch: Arc<dyn TouchSource>) -> SoftKey {
        open(&dir.path().join("state/soft-key.json"), touch).unwrap()
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
        let key = open_in(&dir, Arc::new(AutoTouch));
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
        let key = open_in(&dir, Arc::new(AutoTouch));
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
        let key = open_in(&dir, Arc::new(AutoTouch));
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
        let key = open_in(&dir, Arc::new(AutoTouch));
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
        let key = open_in(&dir, Arc::new(AutoTouch));
        let att = key.make_credential(&mc_req(false)).unwrap();
        let key = open(key.path(), Arc::new(DenyTouch)).unwrap();
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
        let key = open_in(&dir, Arc::new(AutoTouch));
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
        let key = open_in(&dir, Arc::new(AutoTouch));
        let dir2 = tempfile::tempdir().unwrap();
        let other_key = open_in(&dir2, Arc::new(AutoTouch));
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
        let key = open_in(&dir, Arc::new(AutoTouch));
        let att = key.make_credential(&mc_req(false)).unwrap();
        let key = open(key.path(), Arc::new(DenyTouch)).unwrap();
        let count = key.sign_count();
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
        let att = open_in(&dir, Arc::new(AutoTouch))
            .make_credential(&mc_req(false))
            .unwrap();
        let key = Arc::new(
            open(
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
        let key = Arc::new(open_in(&dir, touch.clone()));

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
    fn state_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/soft-key.json");
        let key = open(&path, Arc::new(AutoTouch)).unwrap();
        let att = key.make_credential(&mc_req(false)).unwrap();
        let first = key
            .get_assertion(&ga_req(&att.credential_id, Some([9; 32]), false))
            .unwrap();
        let count = key.sign_count();
        drop(key);

        let key = open(&path, Arc::new(AutoTouch)).unwrap();
        // Reopened above the block of counters the file reserved: never a used one.
        let reopened = key.sign_count();
        assert_eq!(reopened, touchgate_softkey::COUNTER_BLOCK);
        assert!(reopened >= count);
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
        assert_eq!(key.sign_count(), reopened + 1);
    }

    #[test]
    fn state_file_is_private_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/soft-key.json");
        let key = open(&path, Arc::new(AutoTouch)).unwrap();
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
        // One signature so far; the file reserves a block of counters.
        assert_eq!(v["sign_count"], touchgate_softkey::COUNTER_BLOCK);
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
        let err = open(&path, Arc::new(AutoTouch)).unwrap_err();
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
        assert!(open(&path, Arc::new(AutoTouch)).is_err());
    }
}
