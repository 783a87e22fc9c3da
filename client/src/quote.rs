//! Quoting client input in errors. An error may quote what a client sent (a
//! profile or credential name, a scope) so the user sees what was wrong, but
//! only its first [`QUOTE_MAX`] characters, escaped onto one line, with `…`
//! when cut: an echo must never grow a reply past the frame cap (the client
//! would get no answer at all) nor spill a terminal.

/// How many characters of client input an error quotes.
pub const QUOTE_MAX: usize = 64;

/// `s` in double quotes: its first [`QUOTE_MAX`] characters, escaped
/// (`escape_default`: quotes, backslashes, controls and non-ASCII), then `…` if cut.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars().take(QUOTE_MAX) {
        out.extend(c.escape_default());
    }
    if s.chars().nth(QUOTE_MAX).is_some() {
        out.push('…');
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_quoted_whole_and_escaped() {
        assert_eq!(quote("inference"), "\"inference\"");
        assert_eq!(quote("a\"b\nc"), "\"a\\\"b\\nc\"");
    }

    #[test]
    fn long_input_is_cut_with_an_ellipsis() {
        let q = quote(&"\"".repeat(100_000));
        assert!(q.ends_with("…\""), "{q}");
        assert_eq!(q.matches("\\\"").count(), QUOTE_MAX);
        assert!(q.len() < 4 * QUOTE_MAX);
        assert_eq!(
            quote(&"x".repeat(QUOTE_MAX)),
            format!("\"{}\"", "x".repeat(QUOTE_MAX))
        );
    }
}
