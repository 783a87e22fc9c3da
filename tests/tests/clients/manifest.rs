//! The workspace manifest tells the truth: its `rust-version` is at least what every locked
//! dependency needs, there is a LICENSE for its `license`, and each published crate carries the
//! metadata and versioned path dependencies that `cargo package` / `cargo install` need; the
//! `touchgate` library, which every binary and the fuzz targets link, pulls in none of the crates
//! only a command needs (argument parsing, HTTP, TOML, ad-hoc errors).
//!
//! Invariant: the locked dependencies are those cargo resolves from Cargo.lock (`--locked`) for
//! the platforms touchgate supports (Linux and macOS); each one's `rust-version` is read from its
//! own Cargo.toml in the cargo registry. Nothing is skipped: when a source is not in the registry
//! the test fails and says to run `cargo fetch`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The targets touchgate is built for (scripts/check-macos.sh covers the macOS ones).
const SUPPORTED_TARGETS: &[&str] = &[
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
];

/// The crates users install; the tests crate is `publish = false`.
const PUBLISHED: &[&str] = &[
    "touchgate",
    "touchgate-cli",
    "touchgate-generate",
    "touchgate-agent",
    "touchgate-softkey",
    "touchgate-shim",
];

/// Crates the binaries use and the `touchgate` library must not depend on, directly or not.
const NOT_IN_THE_LIBRARY: &[&str] = &["clap", "reqwest", "toml", "anyhow"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `cargo metadata` for one target, from Cargo.lock as it is and without the network.
fn metadata(target: Option<&str>) -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--offline",
    ]);
    match target {
        Some(t) => cmd.args(["--filter-platform", t]),
        None => cmd.arg("--no-deps"),
    };
    let out = cmd.output().expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata ({}) failed; the dependency sources must be in the cargo registry: \
         run `cargo fetch` and try again:\n{}",
        target.unwrap_or("workspace"),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// "1.89" / "1.89.0" as a comparable (major, minor, patch).
fn parse_version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| {
        p.parse::<u64>()
            .unwrap_or_else(|_| panic!("rust-version {v:?} is not a version"))
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn packages(meta: &Value) -> &Vec<Value> {
    meta["packages"]
        .as_array()
        .expect("metadata lists packages")
}

fn str_field<'a>(pkg: &'a Value, field: &str) -> Option<&'a str> {
    pkg[field].as_str()
}

/// The workspace's `rust-version`, the same on every member (they inherit it).
fn workspace_rust_version(meta: &Value) -> String {
    let members: Vec<(String, Option<String>)> = packages(meta)
        .iter()
        .filter(|p| p["source"].is_null())
        .map(|p| {
            (
                str_field(p, "name").unwrap_or("?").to_string(),
                str_field(p, "rust_version").map(str::to_string),
            )
        })
        .collect();
    assert!(
        !members.is_empty(),
        "no workspace members in cargo metadata"
    );
    let first = members[0].1.clone();
    for (name, rv) in &members {
        assert!(rv.is_some(), "{name} declares no rust-version");
        assert_eq!(rv, &first, "{name} has a different rust-version");
    }
    first.expect("checked above")
}

#[test]
fn rust_version_covers_every_locked_dependency() {
    let workspace = metadata(None);
    let ours = workspace_rust_version(&workspace);
    let ours_v = parse_version(&ours);
    let mut too_new = std::collections::BTreeSet::new();
    let mut checked = 0;
    for target in SUPPORTED_TARGETS {
        let meta = metadata(Some(target));
        for pkg in packages(&meta) {
            let source = str_field(pkg, "source").unwrap_or("");
            if !source.starts_with("registry+") {
                continue; // a workspace member: its rust-version is the workspace's
            }
            let name = str_field(pkg, "name").unwrap_or("?");
            let version = str_field(pkg, "version").unwrap_or("?");
            let manifest = str_field(pkg, "manifest_path").unwrap_or("");
            let text = std::fs::read_to_string(manifest).unwrap_or_else(|e| {
                panic!(
                    "{name} {version}: cannot read {manifest} ({e}): run `cargo fetch` to put \
                     the locked dependency sources in the cargo registry"
                )
            });
            let toml: Value = toml::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} {version}: {manifest} is not TOML: {e}"));
            checked += 1;
            if let Some(needs) = toml["package"]["rust-version"].as_str() {
                if parse_version(needs) > ours_v {
                    too_new.insert(format!("{name} {version} needs Rust {needs}"));
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} locked dependencies found");
    assert!(
        too_new.is_empty(),
        "the workspace says rust-version = \"{ours}\" but locked dependencies need more; raise \
         rust-version in Cargo.toml (or lock older versions):\n{}",
        Vec::from_iter(too_new).join("\n")
    );
}

#[test]
fn license_file_matches_the_declared_license() {
    let workspace = metadata(None);
    for pkg in packages(&workspace) {
        let name = str_field(pkg, "name").unwrap_or("?");
        assert_eq!(
            str_field(pkg, "license"),
            Some("Apache-2.0"),
            "{name}: license"
        );
    }
    let path = workspace_root().join("LICENSE");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e})", path.display()));
    assert!(
        text.contains("Apache License")
            && text.contains("Version 2.0, January 2004")
            && text.contains("END OF TERMS AND CONDITIONS"),
        "{} is not the Apache License 2.0 text",
        path.display()
    );
}

#[test]
fn published_crates_carry_package_metadata_and_versioned_path_dependencies() {
    let workspace = metadata(None);
    let mut problems = Vec::new();
    for pkg in packages(&workspace) {
        let name = str_field(pkg, "name").unwrap_or("?");
        if !PUBLISHED.contains(&name) {
            assert_eq!(
                pkg["publish"],
                serde_json::json!([]),
                "{name} is not one of {PUBLISHED:?}, so it must say publish = false"
            );
            continue;
        }
        for field in ["description", "license", "readme", "rust_version"] {
            if str_field(pkg, field).is_none() {
                problems.push(format!("{name}: no {field}"));
            }
        }
        if let Some(readme) = str_field(pkg, "readme") {
            let dir = Path::new(str_field(pkg, "manifest_path").unwrap_or(""))
                .parent()
                .expect("a manifest is in a directory")
                .to_path_buf();
            if !dir.join(readme).is_file() {
                problems.push(format!("{name}: readme {readme} does not exist"));
            }
        }
        for dep in pkg["dependencies"].as_array().into_iter().flatten() {
            let dep_name = str_field(dep, "name").unwrap_or("?");
            let is_dev = str_field(dep, "kind") == Some("dev");
            if dep["path"].is_string() && !is_dev && str_field(dep, "req") == Some("*") {
                problems.push(format!(
                    "{name}: path dependency {dep_name} has no version (cargo package refuses it)"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `cargo tree -p touchgate -e normal` on every supported target: none of
/// [`NOT_IN_THE_LIBRARY`], so the agent, the shim and the fuzz targets do not inherit the
/// command's crates through the library.
#[test]
fn the_library_depends_on_no_command_crate() {
    for target in SUPPORTED_TARGETS {
        let meta = metadata(Some(target));
        let nodes = meta["resolve"]["nodes"]
            .as_array()
            .expect("cargo metadata resolves the graph");
        let name_of = |id: &str| {
            packages(&meta)
                .iter()
                .find(|p| str_field(p, "id") == Some(id))
                .and_then(|p| str_field(p, "name"))
                .unwrap_or("?")
                .to_string()
        };
        let root = packages(&meta)
            .iter()
            .find(|p| str_field(p, "name") == Some("touchgate") && p["source"].is_null())
            .and_then(|p| str_field(p, "id"))
            .expect("the touchgate package is a workspace member");
        // Normal (not dev, not build) edges only, from the library outwards.
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![root.to_string()];
        let mut found = Vec::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let node = nodes
                .iter()
                .find(|n| str_field(n, "id") == Some(id.as_str()))
                .expect("every package id has a node");
            for dep in node["deps"].as_array().into_iter().flatten() {
                let normal = dep["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["kind"].is_null());
                let Some(dep_id) = str_field(dep, "pkg").filter(|_| normal) else {
                    continue;
                };
                let name = name_of(dep_id);
                if NOT_IN_THE_LIBRARY.contains(&name.as_str()) {
                    found.push(format!("{} -> {name}", name_of(&id)));
                }
                stack.push(dep_id.to_string());
            }
        }
        assert!(
            found.is_empty(),
            "{target}: the touchgate library depends on {}; move the code that needs it into the \
             binary that does (client/cli, agent, shim) or client/generate",
            found.join(", ")
        );
    }
}

/// The packages that may turn on a `testing` feature (the test doubles): the tests and the fuzz
/// targets and their bodies (fuzz/ is a workspace of its own, outside this check). A crate's dev-dependencies may
/// too (its own tests): they are never part of a build of the crate.
const TESTING_ALLOWED: &[&str] = &["touchgate-tests", "touchgate-fuzz", "touchgate-fuzz-bodies"];

/// No test double in a release build: the `testing` feature of every workspace crate that has
/// one is off by default, no default feature turns it on, and no shipped crate's normal
/// dependencies turn it on (only the tests and fuzz packages do); and each test double the agent
/// and the soft key define sits behind `cfg(any(test, feature = "testing"))`.
#[test]
fn test_doubles_are_left_out_of_a_release_build() {
    let workspace = metadata(None);
    let mut problems = Vec::new();
    let with_testing: Vec<&str> = packages(&workspace)
        .iter()
        .filter(|p| p["features"]["testing"].is_array())
        .filter_map(|p| str_field(p, "name"))
        .collect();
    assert!(
        with_testing.contains(&"touchgate-agent"),
        "touchgate-agent has no `testing` feature: its test doubles would be public in a release build"
    );
    for pkg in packages(&workspace) {
        let name = str_field(pkg, "name").unwrap_or("?");
        if with_testing.contains(&name) {
            for (feature, enables) in pkg["features"].as_object().into_iter().flatten() {
                let turns_on_testing = enables
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(|e| e == "testing" || e.ends_with("/testing"));
                if feature == "default" && turns_on_testing {
                    problems.push(format!("{name}: the default features turn on `testing`"));
                }
            }
        }
        if TESTING_ALLOWED.contains(&name) {
            continue;
        }
        for dep in pkg["dependencies"].as_array().into_iter().flatten() {
            let dep_name = str_field(dep, "name").unwrap_or("?");
            let dev = str_field(dep, "kind") == Some("dev");
            let turns_on_testing = dep["features"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f.as_str() == Some("testing"));
            if turns_on_testing && with_testing.contains(&dep_name) && !dev {
                problems.push(format!(
                    "{name} turns on {dep_name}'s `testing` feature; only {TESTING_ALLOWED:?} may"
                ));
            }
        }
    }
    // Each test double, at its definition, behind the feature.
    let doubles: &[(&str, &str)] = &[
        ("agent/src/clock.rs", "pub struct TestClock"),
        ("agent/src/upstream/retry.rs", "pub struct RecordingSleeper"),
        (
            "agent/src/upstream/mod.rs",
            "pub use retry::RecordingSleeper",
        ),
        ("agent/src/fido/pin.rs", "pub struct FixedPins"),
        ("agent/src/notify.rs", "pub struct Recording("),
        ("agent/src/audit/mod.rs", "pub use sample::sample_log"),
        (
            "agent/src/fido/key/soft.rs",
            "pub use touchgate_softkey::ScriptedTouch",
        ),
        ("agent/softkey/src/lib.rs", "pub use touch::ScriptedTouch"),
        ("agent/softkey/src/touch.rs", "pub struct ScriptedTouch"),
        ("agent/softkey/src/key.rs", "pub fn set_sign_count("),
        ("agent/softkey/src/ctap.rs", "pub fn set_sign_count("),
        ("client/src/lib.rs", "pub mod alloc_count;"),
        ("agent/src/audit/journal.rs", "pub const SOCKET_ENV"),
    ];
    for (file, item) in doubles {
        let text = std::fs::read_to_string(workspace_root().join(file))
            .unwrap_or_else(|e| panic!("read {file}: {e}"));
        let Some(at) = text.find(item) else {
            problems.push(format!("{file}: no `{item}` (update this list)"));
            continue;
        };
        // The attribute is among the lines of attributes and docs right above the item.
        let line_start = text[..at].rfind('\n').unwrap_or(0);
        let above: Vec<&str> = text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
            .collect();
        if !above.contains(&r#"#[cfg(any(test, feature = "testing"))]"#) {
            problems.push(format!(
                "{file}: `{item}` is not behind #[cfg(any(test, feature = \"testing\"))]"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The package a file belongs to: the nearest folder above it with a Cargo.toml.
fn package_of(file: &Path) -> PathBuf {
    file.ancestors()
        .skip(1)
        .find(|d| d.join("Cargo.toml").is_file())
        .unwrap_or_else(|| panic!("{} is in no package", file.display()))
        .to_path_buf()
}

/// Every `.rs` file under `dir`, skipping build output and fuzz corpora.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | "corpus" | "corpus-seed" | "artifacts" | ".git"
            ) {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Code is shared across crates by depending on a crate, never by pulling another package's
/// file in: no `#[path = …]` or `include!(…)` names a file of another package.
#[test]
fn no_file_is_pulled_in_from_another_package() {
    let root = workspace_root();
    let mut files = Vec::new();
    for top in ["agent", "client", "shim", "tests", "fuzz"] {
        rust_files(&root.join(top), &mut files);
    }
    assert!(files.len() > 100, "found only {} .rs files", files.len());
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            let named = if let Some(rest) = line.strip_prefix("#[path = \"") {
                rest.split('"').next()
            } else if let Some(rest) = line.strip_prefix("include!(\"") {
                rest.split('"').next()
            } else {
                None
            };
            let Some(rel) = named else { continue };
            let target = file.parent().unwrap().join(rel);
            let target = target
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}:{}: {rel}: {e}", file.display(), n + 1));
            if package_of(&target) != package_of(&file.canonicalize().unwrap()) {
                problems.push(format!(
                    "{}:{}: pulls in {rel}, a file of another package: depend on that crate instead",
                    file.strip_prefix(&root).unwrap().display(),
                    n + 1
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
