//! The performance goals of the hot path, each printed next to the figure
//! measured in this run, its peer (measured in the same run) and the ratio,
//! with "meets" or "misses". A report, never a failure: timing on a shared
//! machine is noise, and the lead reads the numbers of a quiet one.

/// How a figure is held against its goal.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// The figure (a ratio or an amount) must be at most this.
    AtMost(f64),
    /// The figure must be at least this.
    AtLeast(f64),
}

impl Bound {
    fn meets(self, v: f64) -> bool {
        match self {
            Bound::AtMost(b) => v <= b,
            Bound::AtLeast(b) => v >= b,
        }
    }
}

/// One goal: what was measured, against what, and the verdict's inputs.
pub struct Goal {
    /// What is measured, e.g. "window hit over the socket, p50".
    pub what: String,
    /// The figure as measured, with its unit.
    pub figure: String,
    /// The peer as measured (or "-" for an absolute goal).
    pub peer: String,
    /// The number held against `bound` (a ratio to the peer, or the figure itself).
    pub value: f64,
    /// The ratio as shown (e.g. "3.10x", "1/420"); none for an absolute goal.
    pub shown: Option<String>,
    /// The goal as the issue states it.
    pub goal: String,
    pub bound: Bound,
    /// What the figure depends on beyond this code (e.g. the audit writer).
    pub note: Option<String>,
}

impl Goal {
    /// A figure held as a ratio to its peer (`figure / peer`).
    pub fn ratio(
        what: &str,
        figure: (f64, String),
        peer: (f64, String),
        goal: &str,
        bound: Bound,
    ) -> Goal {
        let value = figure.0 / peer.0;
        Goal {
            what: what.into(),
            figure: figure.1,
            peer: peer.1,
            value,
            shown: Some(if value < 0.1 {
                format!("1/{:.0}", 1.0 / value)
            } else {
                format!("{value:.2}x")
            }),
            goal: goal.into(),
            bound,
            note: None,
        }
    }

    /// A figure held as it is (the peer, if any, only for context).
    pub fn absolute(
        what: &str,
        value: f64,
        figure: String,
        peer: &str,
        goal: &str,
        bound: Bound,
    ) -> Goal {
        Goal {
            what: what.into(),
            shown: None,
            figure,
            peer: peer.into(),
            value,
            goal: goal.into(),
            bound,
            note: None,
        }
    }

    pub fn note(mut self, n: &str) -> Goal {
        self.note = Some(n.into());
        self
    }

    pub fn meets(&self) -> bool {
        self.value.is_finite() && self.bound.meets(self.value)
    }
}

/// Microseconds, for latency figures.
pub fn us(d: std::time::Duration) -> (f64, String) {
    (d.as_secs_f64(), format!("{:.0} µs", d.as_secs_f64() * 1e6))
}

/// Milliseconds, for process figures.
pub fn ms(d: std::time::Duration) -> (f64, String) {
    (d.as_secs_f64(), format!("{:.2} ms", d.as_secs_f64() * 1e3))
}

/// Print every goal, one block each.
pub fn print(goals: &[Goal]) {
    if goals.is_empty() {
        return;
    }
    println!("\nperformance goals (a report, not a test: timing on a busy machine is noise)");
    for g in goals {
        println!(
            "  {:<7} {}: {} (peer: {}){}; goal {}{}",
            if g.meets() { "meets" } else { "MISSES" },
            g.what,
            g.figure,
            g.peer,
            g.shown
                .as_deref()
                .map(|r| format!(" -> {r}"))
                .unwrap_or_default(),
            g.goal,
            g.note
                .as_deref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_bounds() {
        let g = Goal::ratio(
            "x",
            (3.0, "3".into()),
            (1.0, "1".into()),
            "<= 2x",
            Bound::AtMost(2.0),
        );
        assert_eq!(g.shown.as_deref(), Some("3.00x"));
        assert!(!g.meets());
        let g = Goal::ratio(
            "x",
            (1.0, "1".into()),
            (400.0, "400".into()),
            "<= 1/300",
            Bound::AtMost(1.0 / 300.0),
        );
        assert_eq!(g.shown.as_deref(), Some("1/400"));
        assert!(g.meets());
        assert!(Goal::absolute(
            "x",
            25_000.0,
            "25000/s".into(),
            "-",
            ">= 20000/s",
            Bound::AtLeast(20_000.0)
        )
        .meets());
    }
}
