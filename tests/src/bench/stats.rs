//! Timings per run, their median and p90, and the tables the bench prints.

use std::time::Duration;

/// Median and p90 (nearest rank) of `times`; `None` when empty.
pub fn summary(times: &[Duration]) -> Option<(Duration, Duration)> {
    if times.is_empty() {
        return None;
    }
    let mut t = times.to_vec();
    t.sort();
    let rank = |q: f64| t[((q * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1];
    Some((rank(0.5), rank(0.9)))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// One measured set-up: its timings and how many upstream (emulator) token
/// calls it made per run.
pub struct Row {
    pub label: String,
    pub times: Vec<Duration>,
    pub upstream_per_run: f64,
}

/// A section of the report: rows, the first `peer` row being the base of the ratios,
/// and notes (what was not run and why, what was defeated).
pub struct Table {
    pub title: String,
    pub rows: Vec<Row>,
    pub peer: Option<usize>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>) -> Table {
        Table {
            title: title.into(),
            rows: vec![],
            peer: None,
            notes: vec![],
        }
    }

    /// Add a row; the first added with `is_peer` is the base of the ratios.
    pub fn push(&mut self, row: Row, is_peer: bool) {
        if is_peer && self.peer.is_none() {
            self.peer = Some(self.rows.len());
        }
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print(&self) {
        println!("\n{}", self.title);
        let base = self
            .peer
            .and_then(|i| summary(&self.rows[i].times))
            .map(|(m, _)| m);
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
        println!(
            "  {:width$}  {:>4}  {:>11}  {:>11}  {:>9}  {:>13}",
            "", "n", "median", "p90", "vs peer", "upstream/run"
        );
        for (i, r) in self.rows.iter().enumerate() {
            let Some((median, p90)) = summary(&r.times) else {
                continue;
            };
            let ratio = match base {
                Some(_) if Some(i) == self.peer => "peer".to_owned(),
                Some(b) => format!("{:.2}x", median.as_secs_f64() / b.as_secs_f64()),
                None => "-".to_owned(),
            };
            println!(
                "  {:width$}  {:>4}  {:>11}  {:>11}  {:>9}  {:>13.1}",
                r.label,
                r.times.len(),
                ms(median),
                ms(p90),
                ratio,
                r.upstream_per_run
            );
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_by_nearest_rank() {
        let t: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        assert_eq!(
            summary(&t),
            Some((Duration::from_millis(5), Duration::from_millis(9)))
        );
        assert_eq!(
            summary(&[Duration::from_millis(3)]),
            Some((Duration::from_millis(3), Duration::from_millis(3)))
        );
        assert_eq!(summary(&[]), None);
    }
}
