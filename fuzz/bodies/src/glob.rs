//! The body of the `glob` fuzz target, shared with its
//! regression test (`tests/agent_seeds.rs` of this package).
//!
//! The input is `pattern\ntext` (without a newline, the input is both). The
//! policy's `glob_match` must agree with a plain dynamic-programming matcher of
//! the same syntax (`*` any run, `?` one character), and a pattern must match
//! itself.

use touchgate_agent::policy::glob_match;

pub fn run(data: &[u8]) -> bool {
    let input = String::from_utf8_lossy(data);
    let (pattern, text) = input.split_once('\n').unwrap_or((&input, &input));
    let got = glob_match(pattern, text);
    assert_eq!(
        got,
        reference(pattern, text),
        "glob_match({pattern:?}, {text:?}) disagrees with the reference matcher"
    );
    assert!(
        glob_match(pattern, pattern),
        "{pattern:?} does not match itself"
    );
    got
}

/// O(|pattern|·|text|) reference: `m[j]` says whether the pattern read so far
/// matches the first `j` characters of the text.
pub fn reference(pattern: &str, text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let mut m = vec![false; t.len() + 1];
    m[0] = true;
    for p in pattern.chars() {
        let mut next = vec![false; t.len() + 1];
        match p {
            '*' => {
                let mut any = false;
                for j in 0..=t.len() {
                    any |= m[j];
                    next[j] = any;
                }
            }
            _ => {
                for j in 1..=t.len() {
                    next[j] = m[j - 1] && (p == '?' || p == t[j - 1]);
                }
            }
        }
        m = next;
    }
    m[t.len()]
}
