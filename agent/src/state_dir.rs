//! The agent's state directory (vault, signature counters, soft key, audit
//! log, agent.log, vault backups) is private whatever the umask: made at
//! start before anything is written to it.
//!
//! Invariants after [`prepare`]: the directory exists with mode 0700; each of
//! the agent's files in it ([`OWN_FILES`], vault backups) has mode 0600 (a
//! looser one is tightened and the change is reported, so the log says a copy
//! may have been readable); temp files left by an interrupted atomic write
//! (`.NAME.tmp-PID-HEX`, see `vault::write_private_atomic`) whose writer is
//! gone are removed. Other files are not ours to change (the state directory
//! may be set to a shared one); symlinks are never followed, and files of
//! other owners are left alone (reported).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Mode of the state directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub const FILE_MODE: u32 = 0o600;
/// The agent's files in the state directory (besides `vault.json.bak-*`).
pub const OWN_FILES: &[&str] = &[
    "vault.json",
    "sign-counters",
    "soft-key.json",
    "audit.jsonl",
    "agent.log",
];
/// A temp file this old is stale even where the writer's pid cannot be checked.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// What [`prepare`] changed, one line each, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    pub notes: Vec<String>,
}

/// Make `dir` private (see the module docs); what was changed comes back for the log.
pub fn prepare(dir: &Path) -> io::Result<Prepared> {
    let mut out = Prepared::default();
    create(dir)?;
    let meta = fs::metadata(dir).map_err(|e| with_path(e, dir))?;
    // `create` applied the umask to the parents only; the directory itself may predate us.
    let mode = meta.permissions().mode() & 0o777;
    if mode != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| with_path(e, dir))?;
        out.notes.push(format!(
            "state directory {} was mode {mode:03o}: tightened to {DIR_MODE:03o}",
            dir.display()
        ));
    }
    let me = meta.uid();
    for entry in fs::read_dir(dir).map_err(|e| with_path(e, dir))? {
        let entry = entry?;
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_stale_temp(&name, &meta) {
            match fs::remove_file(&path) {
                Ok(()) => out.notes.push(format!(
                    "removed {}, left by an interrupted write",
                    path.display()
                )),
                Err(e) => out
                    .notes
                    .push(format!("cannot remove stale {}: {e}", path.display())),
            }
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & !FILE_MODE == 0 || !is_own(&name) {
            continue;
        }
        if meta.uid() != me {
            out.notes.push(format!(
                "{} (mode {mode:03o}) belongs to uid {}, not to the state directory's owner: \
                 move it out of the state directory",
                path.display(),
                meta.uid()
            ));
            continue;
        }
        match fs::set_permissions(&path, fs::Permissions::from_mode(FILE_MODE)) {
            Ok(()) => out.notes.push(format!(
                "{} was mode {mode:03o}: tightened to {FILE_MODE:03o}",
                path.display()
            )),
            Err(e) => out
                .notes
                .push(format!("cannot tighten {}: {e}", path.display())),
        }
    }
    Ok(out)
}

/// Create `dir` (and missing parents) with mode 0700 whatever the umask, if it
/// is missing; an existing one is left to [`prepare`], which reports what it changes.
pub fn create(dir: &Path) -> io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| with_path(e, dir))
}

/// Open `path` (in the state directory) for appending; a new file is 0600
/// whatever the umask (an existing looser one is left to [`prepare`]).
pub fn open_private_append(path: &Path) -> io::Result<fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| with_path(e, path))
}

fn is_own(name: &str) -> bool {
    OWN_FILES.contains(&name) || name.starts_with("vault.json.bak-")
}

/// `.NAME.tmp-PID-HEX` whose writer is gone (or, where that cannot be told, old).
fn is_stale_temp(name: &str, meta: &fs::Metadata) -> bool {
    let Some(pid) = temp_writer(name) else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    let proc_root = Path::new("/proc/self");
    if proc_root.exists() {
        return !PathBuf::from(format!("/proc/{pid}")).exists();
    }
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= STALE_AFTER)
}

/// The writer's pid in a temp file name of `write_private_atomic`.
fn temp_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, tag) = tail.split_once('-')?;
    let hex_tag = !tag.is_empty() && tag.chars().all(|c| c.is_ascii_hexdigit());
    if !hex_tag {
        return None;
    }
    pid.parse().ok()
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn temp_names_are_recognised() {
        assert_eq!(temp_writer(".vault.json.tmp-123-00ff"), Some(123));
        assert_eq!(temp_writer(".soft-key.json.tmp-9-ab"), Some(9));
        assert_eq!(temp_writer("vault.json"), None);
        assert_eq!(temp_writer(".vault.json.tmp-x-00"), None);
        assert_eq!(temp_writer(".vault.json.tmp-12-"), None);
        assert_eq!(temp_writer(".vault.json.tmp-12-zz"), None);
    }

    #[test]
    fn loose_modes_are_tightened_and_stale_temps_removed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let made = prepare(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        assert!(made.notes.is_empty(), "{:?}", made.notes);

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let log = dir.join("agent.log");
        fs::write(&log, "x").unwrap();
        fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
        // A pid that cannot be running (beyond the kernel's pid_max).
        let stale = dir.join(".vault.json.tmp-4294967295-0011");
        fs::write(&stale, "{").unwrap();
        let ours = dir.join(format!(".vault.json.tmp-{}-0011", std::process::id()));
        fs::write(&ours, "{").unwrap();
        fs::set_permissions(&ours, fs::Permissions::from_mode(0o600)).unwrap();

        let backup = dir.join("vault.json.bak-1800000000");
        fs::write(&backup, "{}").unwrap();
        fs::set_permissions(&backup, fs::Permissions::from_mode(0o640)).unwrap();
        let script = dir.join("notes.sh");
        fs::write(&script, "").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

        let p = prepare(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&log), FILE_MODE);
        assert_eq!(mode(&backup), FILE_MODE);
        assert_eq!(mode(&script), 0o755, "not ours: left alone");
        assert!(!stale.exists());
        assert!(ours.exists(), "a live writer's temp file stays");
        let text = p.notes.join("\n");
        assert!(text.contains("was mode 755: tightened to 700"), "{text}");
        assert!(text.contains("agent.log was mode 644"), "{text}");
        assert!(text.contains("interrupted write"), "{text}");
    }

    #[test]
    fn new_files_are_private() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("agent.log");
        open_private_append(&p).unwrap();
        assert_eq!(mode(&p), FILE_MODE);
    }
}
