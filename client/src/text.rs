//! Text from elsewhere (a server's reply, a parser's error, a certificate field) made fit
//! for a one-line error message.
//!
//! Invariant: [`one_line`]'s result has no line break and no control character, so a
//! message built from it stays one line and cannot move the cursor of the terminal it is
//! printed on. It does not redact: scrub secrets first ([`crate::secret::scrub`]).

/// No cut: [`one_line`] keeps every character.
pub const UNCUT: usize = usize::MAX;

/// `s` as one printable line: each run of whitespace (line breaks, tabs) becomes one space
/// and other control characters go; past `max` characters it is cut and ends with `…`.
pub fn one_line(s: &str, max: usize) -> String {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = collapsed
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect();
    if collapsed.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_cuts_and_flattens() {
        assert_eq!(one_line("a\n  b\tc", 300), "a b c");
        assert_eq!(one_line("a\nb\rc", UNCUT), "a b c");
        assert_eq!(one_line("x\u{1b}[2Jy\u{7}", UNCUT), "x[2Jy");
        let long = "x".repeat(400);
        assert_eq!(one_line(&long, 300).chars().count(), 301);
        assert!(one_line(&long, 300).ends_with('…'));
        assert_eq!(one_line(&long, UNCUT), long);
    }
}
