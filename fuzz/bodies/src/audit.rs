//! The body of the `audit` fuzz target, shared with its
//! regression test (`tests/agent_seeds.rs` of this package).
//!
//! The input is an audit log file, checked by the real verifier (the chain and
//! every touch signature). The harness trusts the keys the log's own "enrolled"
//! lines name (the verifier itself never does), so signatures are exercised.

use std::collections::HashMap;

use touchgate_agent::audit::{verify_reader, AuditError, Record};

pub fn run(data: &[u8]) -> Result<usize, AuditError> {
    let keys: HashMap<String, Vec<u8>> = data
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Record>(l).ok())
        .filter_map(|r| Some((r.credential?, hex::decode(r.public_key?).ok()?)))
        .collect();
    let res = verify_reader(data, "fuzz.jsonl", &keys).map(|v| v.records);
    if let Err(e) = &res {
        assert_eq!(e.path, "fuzz.jsonl");
        assert!(e.line >= 1, "a log in memory cannot fail to open: {e}");
        assert!(!e.to_string().contains('\n'), "error is not one line: {e}");
    }
    res
}
