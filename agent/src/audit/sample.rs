//! A real log for tests and the fuzz seeds, made by a real software key.

use std::path::{Path, PathBuf};

use super::{Approved, AuditCaller, AuditLog, ChallengeInputs, Record, TouchEvidence};

/// A log at `dir/audit.jsonl`: an enrolment (whose public key is the one to
/// trust: take it from the first line) and two touches (profiles
/// "inference" and "train", asked by `caller` at `time`) by a new software key
/// at `dir/k.json`. For tests and the fuzz seeds; panics on any failure.
#[doc(hidden)]
pub fn sample_log(dir: &Path, caller: &str, time: u64) -> PathBuf {
    use crate::fido::key::{GetAssertionRequest, SecurityKey, RP_ID};

    let (key, att) = sample_key(dir);
    let path = dir.join("audit.jsonl");
    let log = AuditLog::open(&path).expect("the sample log opens");
    // Each record durable before the next touch reads the head (waited for on a
    // thread of its own: the caller may be inside a runtime).
    let append = |r: Record| {
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a runtime for the sample")
                    .block_on(log.commit(r))
            })
            .join()
        })
        .expect("the sample writer thread")
        .expect("the sample record is written")
    };
    append(Record {
        time,
        event: "enrolled".into(),
        credential: Some(hex::encode(&att.credential_id)),
        public_key: Some(hex::encode(&att.public_key_sec1)),
        ..Default::default()
    });
    for profile in ["inference", "train"] {
        let approved = Approved {
            caller: Some(AuditCaller {
                uid: 1000,
                pid: Some(1),
                exe: Some(caller.to_owned()),
                on_behalf_of: None,
            }),
            profile: Some(profile.into()),
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            lifetime: Some(600),
            ..Default::default()
        };
        let c = ChallengeInputs::bound("get-token", log.head(), time);
        let a = key
            .get_assertion(&GetAssertionRequest {
                rp_id: RP_ID.into(),
                challenge: c.challenge_for(&approved),
                allow: vec![att.credential_id.clone()],
                hmac_salt: None,
                uv: false,
                pin: None,
                up: true,
            })
            .expect("the software key signs");
        append(Record {
            time,
            event: "issued".into(),
            token: Some("sha256:0011223344556677".into()),
            touch: Some(TouchEvidence::new(&a, c)),
            ..approved.record()
        });
    }
    path
}

/// A new software key at `dir/k.json` and its credential (for the sample and tests).
pub(crate) fn sample_key(
    dir: &Path,
) -> (
    crate::fido::key::soft::SoftKey,
    crate::fido::key::Attestation,
) {
    use crate::fido::key::soft::{self, AutoTouch};
    use crate::fido::key::{MakeCredentialRequest, SecurityKey, RP_ID};
    let key = soft::open(&dir.join("k.json"), std::sync::Arc::new(AutoTouch))
        .expect("a software key in the sample dir");
    let att = key
        .make_credential(&MakeCredentialRequest {
            rp_id: RP_ID.into(),
            challenge: [1; 32],
            user_id: vec![1],
            user_name: "u".into(),
            hmac_secret: true,
            uv: false,
            pin: None,
            exclude: vec![],
        })
        .expect("the software key enrols");
    (key, att)
}
