//! The body of the `auth_data` fuzz target, shared with its
//! regression test (`tests/agent_seeds.rs` of this package).
//!
//! The input is the authData of a makeCredential or getAssertion answer:
//! header, attested credential data, COSE key, extensions. It goes through
//! `touchgate_agent::verify::attested_credential` (the parser enrolment uses)
//! and `verify_assertion` (which checks an assertion's extensions before its
//! signature). Errors are one line. When the attested data parses, a `none`
//! attestation reporting exactly what it says is accepted by
//! `check_attestation` if and only if the authData is for "touchgate" with UP
//! set.

use sha2::{Digest, Sha256};
use touchgate_agent::key::{flags, Assertion, Attestation, RP_ID};
use touchgate_agent::verify::{
    attested_credential, check_attestation, verify_assertion, AttestedCredential, Expected,
    VerifyError,
};

const CDH: [u8; 32] = [0x5A; 32];

fn one_line(e: &VerifyError) {
    let s = e.to_string();
    assert!(
        !s.contains('\n') && !s.contains('\r'),
        "error is not one line: {s:?}"
    );
}

pub fn run(data: &[u8]) -> Result<AttestedCredential, VerifyError> {
    let res = attested_credential(data);
    match &res {
        Err(e) => one_line(e),
        Ok(c) => {
            let a = Attestation {
                credential_id: c.credential_id.clone(),
                public_key_sec1: c.public_key_sec1.to_vec(),
                aaguid: c.aaguid,
                auth_data: data.to_vec(),
                sign_count: c.sign_count,
                format: "none".into(),
                attestation_signature: vec![],
                x5c: vec![],
                hmac_secret: c.hmac_secret,
                statement_alg: None,
            };
            let for_us = data[..32] == Sha256::digest(RP_ID.as_bytes())[..];
            let up = c.flags & flags::UP != 0;
            match check_attestation(&a, &CDH, RP_ID, false) {
                Ok(()) => assert!(for_us && up, "accepted without rp or UP"),
                Err(e) => {
                    one_line(&e);
                    assert!(!(for_us && up), "refused what parses: {e}");
                }
            }
        }
    }
    // The same bytes as an assertion's authData (never a valid signature).
    let pk = res
        .as_ref()
        .map(|c| c.public_key_sec1.to_vec())
        .unwrap_or_default();
    let expected = Expected {
        rp_id: RP_ID,
        credential_id: b"c",
        public_key_sec1: &pk,
        stored_sign_count: 0,
        require_uv: false,
    };
    let assertion = Assertion {
        credential_id: b"c".to_vec(),
        auth_data: data.to_vec(),
        signature: vec![0x30, 0x00],
        hmac_secret: None,
    };
    match verify_assertion(&expected, &CDH, &assertion) {
        Ok(v) => panic!("an unsigned assertion verified: {v:?}"),
        Err(e) => one_line(&e),
    }
    res
}
