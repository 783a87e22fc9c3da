//! The agent's modules import one way: no cycle among its top-level modules.
//!
//! Reads every `agent/src/**/*.rs`, takes each `crate::a::…` path (also
//! inside `use crate::{a::…, b::…}`) as an arrow from the file's top-level
//! module to `a`, and fails naming the cycle and one line of every arrow in
//! it. Comments are skipped (a doc link is not an import) and so is each
//! file's `#[cfg(test)]` tail: unit tests may build fixtures from anywhere.
//! Names the crate root re-exports (`pub use fido::key;`) count as their
//! module. `lib.rs` and `main.rs` sit above every module and are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One arrow `from → to`, with where it was seen (`file:line`).
type Edges = BTreeMap<(String, String), String>;

/// Back-arrows still standing, each with why. The `[google]` config section
/// (`upstream::Endpoints`) is read by `config` and parses its deadline with
/// `config`'s duration rules; it goes once the config schema lives in the
/// `touchgate` library. The test fails when an arrow here is gone, so the
/// list only shrinks.
const KNOWN_BACK_ARROWS: &[(&str, &str)] = &[("config", "upstream")];

#[test]
fn the_agents_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges = edges_of(&src);
    assert!(
        edges.len() > 10,
        "read only {} arrows under {}: the scanner is broken",
        edges.len(),
        src.display()
    );
    for (from, to) in KNOWN_BACK_ARROWS {
        let arrow = (from.to_string(), to.to_string());
        assert!(
            edges.remove(&arrow).is_some(),
            "{from} no longer imports {to}: remove it from KNOWN_BACK_ARROWS"
        );
    }
    if let Some(cycle) = find_cycle(&edges) {
        panic!("{}", describe(&cycle, &edges));
    }
}

#[test]
fn the_checker_finds_a_deliberate_cycle() {
    let mut edges = Edges::new();
    for (from, to) in [
        ("daemon", "service"),
        ("service", "fido"),
        ("fido", "clock"),
        ("fido", "service"),
    ] {
        edges.insert((from.into(), to.into()), format!("{from}.rs:1"));
    }
    let cycle = find_cycle(&edges).expect("service → fido → service is a cycle");
    assert_eq!(cycle, ["service", "fido", "service"]);
    let text = describe(&cycle, &edges);
    assert!(text.contains("service → fido → service"), "{text}");
    assert!(text.contains("fido.rs:1"), "{text}");

    edges.remove(&("fido".into(), "service".into()));
    assert_eq!(find_cycle(&edges), None);
}

#[test]
fn the_scanner_reads_grouped_uses_and_skips_comments_and_tests() {
    let text = "//! see [`crate::daemon`]\n\
                use crate::{clock::Clock, policy::{decide, Grant}};\n\
                fn f() { crate::vault::load(); }\n\
                #[cfg(test)]\nmod tests { use crate::daemon::run; }\n";
    let found: BTreeSet<String> = targets(text).into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        found,
        BTreeSet::from(["clock".into(), "policy".into(), "vault".into()])
    );
}

fn describe(cycle: &[String], edges: &Edges) -> String {
    let mut text = format!(
        "import cycle among the agent's modules: {}; make the arrows point one way \
         (daemon → service → leaves):",
        cycle.join(" → ")
    );
    for pair in cycle.windows(2) {
        let at = &edges[&(pair[0].clone(), pair[1].clone())];
        text.push_str(&format!("\n  {} → {} at {at}", pair[0], pair[1]));
    }
    text
}

/// The first cycle found (starting from the smallest module name), as a path
/// that ends where it starts.
fn find_cycle(edges: &Edges) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut done = BTreeSet::new();
    for start in next.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(start, &next, &mut path, &mut done) {
            return Some(c);
        }
    }
    None
}

fn visit<'a>(
    node: &'a str,
    next: &BTreeMap<&'a str, Vec<&'a str>>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|n| *n == node) {
        let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node);
    for to in next.get(node).into_iter().flatten() {
        if let Some(c) = visit(to, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node);
    None
}

fn edges_of(src: &Path) -> Edges {
    let aliases = aliases(&std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default());
    let mut edges = Edges::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let Some(first) = rel.iter().next().and_then(|c| c.to_str()) else {
            continue;
        };
        if first == "lib.rs" || first == "main.rs" {
            continue;
        }
        let from = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for (to, line) in targets(&text) {
            let to = aliases.get(&to).cloned().unwrap_or(to);
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_insert_with(|| format!("agent/src/{}:{line}", rel.display()));
            }
        }
    }
    edges
}

/// `pub use fido::{key, verify};` in the crate root: `key` and `verify` are `fido`.
fn aliases(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.split("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                out.insert(name.to_string(), module.to_string());
            }
        }
    }
    out
}

/// Each top-level module named after `crate::`, with its 1-based line. A
/// `use crate::{…}` group may span lines.
fn targets(text: &str) -> Vec<(String, usize)> {
    // The code without comments and without the test tail, and where each
    // of its lines starts.
    let mut code = String::new();
    let mut starts = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        starts.push(code.len());
        if !trimmed.starts_with("//") {
            code.push_str(line.split("//").next().unwrap_or(""));
        }
        code.push('\n');
    }
    let line_of = |at: usize| starts.partition_point(|s| *s <= at);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `touchgate_crate::`
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            for (name, offset) in top_level_names(group) {
                out.push((name, line_of(from + 1 + offset)));
            }
        } else {
            out.push((ident(rest), line_of(at)));
        }
    }
    out.retain(|(m, _)| !m.is_empty());
    out
}

/// The first name of each item at depth 0 of `a::x, b::{y, z}}`, with its
/// offset in `group`.
fn top_level_names(group: &str) -> Vec<(String, usize)> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && (c.is_alphanumeric() || c == '_') => {
                names.push((ident(&group[i..]), i));
                start = false;
            }
            _ => {}
        }
    }
    names
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}
