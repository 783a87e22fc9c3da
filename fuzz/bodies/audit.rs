// The body of the `audit` fuzz target, shared (by `include!`) with the
// regression test agent/tests/fuzz_seeds.rs.
//
// The input is an audit log file, checked by the real verifier (the chain and
// every touch signature) with no keys known beforehand: keys enrolled in the
// log itself are the only ones.

use std::collections::HashMap;

use touchgate_agent::audit::{verify_reader, AuditError};

pub fn run(data: &[u8]) -> Result<usize, AuditError> {
    let res = verify_reader(data, "fuzz.jsonl", &HashMap::new());
    if let Err(e) = &res {
        assert_eq!(e.path, "fuzz.jsonl");
        assert!(e.line >= 1, "a log in memory cannot fail to open: {e}");
        assert!(!e.to_string().contains('\n'), "error is not one line: {e}");
    }
    res
}
