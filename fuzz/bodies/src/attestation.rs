//! The body of the `attestation` fuzz target, shared with its
//! regression test (`tests/agent_seeds.rs` of this package).
//!
//! The input is an attestation object (see attestation_object.rs), through
//! `touchgate_agent::verify::check_attestation` as enrolment runs it, with
//! `x5c` when the object has one. An error is one line; an accepted object is
//! `packed` or `none`, has UP and AT set, and its authData is for "touchgate".

use sha2::{Digest, Sha256};
use touchgate_agent::key::{flags, RP_ID};
use touchgate_agent::verify::{check_attestation, VerifyError};

/// `None`: not an attestation object (the harness's format).
pub fn run(data: &[u8]) -> Option<Result<(), VerifyError>> {
    let input = crate::attestation_object::decode(data)?;
    let att = &input.att;
    let res = check_attestation(att, &input.cdh, RP_ID, false);
    match &res {
        Err(e) => crate::attestation_object::assert_one_line(e),
        Ok(()) => {
            assert!(matches!(att.format.as_str(), "packed" | "none"));
            let fl = att.auth_data[32];
            assert!(fl & flags::UP != 0 && fl & flags::AT != 0, "flags {fl:#x}");
            assert_eq!(att.auth_data[..32], Sha256::digest(RP_ID.as_bytes())[..]);
        }
    }
    Some(res)
}
