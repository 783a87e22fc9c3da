//! `audit show`: the records as a table, or (`--json`) as JSON lines.
//!
//! JSON lines: one record per line, exactly the [`Record`] fields as the log
//! stores them (so a record's token is its `sha256:` fingerprint, never the
//! token), filtered like the table. A line of the log that is not a record is
//! `{"invalid_line": N}` (N counts from 1), where the table prints a `?` row.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use super::{prefix, Record};

/// How `audit show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowFormat {
    Table,
    JsonLines,
}

/// `{"invalid_line": N}`: a line of the log that is not a record.
#[derive(serde::Serialize)]
struct InvalidLine {
    invalid_line: usize,
}

/// Print the records as a table, optionally only those at or after `since` (Unix
/// seconds or RFC 3339) and of one profile.
pub fn show(
    path: &Path,
    since: Option<&str>,
    profile: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), String> {
    show_as(ShowFormat::Table, path, since, profile, out)
}

/// [`show`] in either format.
pub fn show_as(
    format: ShowFormat,
    path: &Path,
    since: Option<&str>,
    profile: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let since = match since {
        None => 0,
        Some(s) => s.parse::<u64>().or_else(|_| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp().max(0) as u64)
                .map_err(|_| format!("--since \"{s}\" is neither Unix seconds nor an RFC 3339 time like 2026-11-28T10:00:00Z"))
        })?,
    };
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot open the audit log {}: {e}", path.display()))?;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(|e| e.to_string());
    if format == ShowFormat::Table {
        w(
            out,
            format!(
                "{:<5} {:<20} {:<11} {:<12} {:<26} {:<24} {}",
                "SEQ", "TIME (UTC)", "EVENT", "PROFILE", "CALLER", "TOKEN", "DETAIL"
            ),
        )?;
    }
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        let Ok(r) = serde_json::from_str::<Record>(&line) else {
            match format {
                ShowFormat::Table => w(
                    out,
                    format!("{:<5} (line {} is not a valid record)", "?", i + 1),
                )?,
                ShowFormat::JsonLines => json_line(
                    out,
                    &InvalidLine {
                        invalid_line: i + 1,
                    },
                )?,
            }
            continue;
        };
        if r.time < since || profile.is_some_and(|p| r.profile.as_deref() != Some(p)) {
            continue;
        }
        if format == ShowFormat::JsonLines {
            json_line(out, &r)?;
            continue;
        }
        let when = time::OffsetDateTime::from_unix_timestamp(r.time as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second]"
                ))
                .ok()
            })
            .unwrap_or_else(|| r.time.to_string());
        let caller = r
            .caller
            .as_ref()
            .map(|c| {
                let exe = c
                    .exe
                    .as_deref()
                    .and_then(|e| e.rsplit('/').next())
                    .unwrap_or("?");
                match (&c.on_behalf_of, c.pid) {
                    (Some(b), _) => format!("{b} via {exe}"),
                    (None, Some(p)) => format!("{exe} ({p})"),
                    (None, None) => exe.to_owned(),
                }
            })
            .unwrap_or_default();
        let as_sa = r.service_account.as_ref().map(|s| format!("as {s}"));
        let detail = r
            .reason
            .clone()
            .or_else(|| {
                r.audience.as_ref().map(|a| match &as_sa {
                    Some(sa) => format!("ID token for {a} {sa}"),
                    None => format!("ID token for {a}"),
                })
            })
            .or(as_sa)
            .or_else(|| {
                r.credential
                    .as_ref()
                    .map(|c| format!("credential {}", prefix(c, 16)))
            })
            .unwrap_or_default();
        let touched = if r.touch.is_some() { "touch" } else { "" };
        // A coalesced line of window hits: how many.
        let event = match r.count {
            Some(n) if n > 1 => format!("{} x{n}", r.event),
            _ => r.event.clone(),
        };
        w(
            out,
            format!(
                "{:<5} {:<20} {:<11} {:<12} {:<26} {:<24} {} {}",
                r.seq,
                when,
                event,
                r.profile.as_deref().unwrap_or("-"),
                caller,
                r.token.as_deref().unwrap_or("-"),
                touched,
                detail
            ),
        )?;
    }
    Ok(())
}

/// `v` as one line of JSON.
fn json_line<T: serde::Serialize>(out: &mut dyn Write, v: &T) -> Result<(), String> {
    let s = serde_json::to_string(v).map_err(|e| e.to_string())?;
    writeln!(out, "{s}").map_err(|e| e.to_string())
}
