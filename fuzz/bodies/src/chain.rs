//! The body of the `chain` fuzz target, shared with its
//! regression test (`tests/agent_seeds.rs` of this package).
//!
//! The input is an attestation object with roots and a time (see
//! attestation_object.rs), through
//! `touchgate_agent::attestation::verify_packed_chain` as enrolment runs it
//! when `key.attestation_roots` is set. An error is one line; an accepted
//! chain is `packed` with `x5c`, as long as `x5c`, and its root is one given.

use touchgate_agent::attestation::{verify_packed_chain, AttestationError, ChainInfo};

/// `None`: not an attestation object (the harness's format).
pub fn run(data: &[u8]) -> Option<Result<ChainInfo, AttestationError>> {
    let input = crate::attestation_object::decode(data)?;
    let att = &input.att;
    let res = verify_packed_chain(att, &input.cdh, &input.roots, input.now);
    match &res {
        Err(e) => crate::attestation_object::assert_one_line(e),
        Ok(info) => {
            assert_eq!(att.format, "packed");
            assert!(!att.x5c.is_empty() && !input.roots.is_empty());
            assert_eq!(info.chain_len, att.x5c.len());
            crate::attestation_object::assert_one_line(&info.leaf_subject);
            crate::attestation_object::assert_one_line(&info.root_subject);
        }
    }
    Some(res)
}
