//! What the shim says about the project. Where it listens is the library's
//! contract (`touchgate::shim`), since the CLI looks for it there too.

pub use touchgate::shim::listen_addr;

/// A stable 12-digit project number for a project id (GCE's `numeric-project-id`
/// must be digits; clients only check its shape). FNV-1a, so it never changes.
pub fn derived_project_number(project: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    100_000_000_000 + h % 900_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_numbers_are_stable_twelve_digits() {
        let n = derived_project_number("touchgate-test");
        assert_eq!(n, derived_project_number("touchgate-test"));
        assert_ne!(n, derived_project_number("other"));
        assert_eq!(n.to_string().len(), 12);
    }
}
