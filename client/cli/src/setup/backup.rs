//! The backup of one setup target: `manifest.json` lists every file setup
//! changed — its original bytes copied to `files/N` with its mode, or the fact
//! that it did not exist — the symlinks setup made (where a file did not
//! exist), and the directories setup created. The first record of a path
//! wins, so a second setup keeps the original. Undo removes a link only while
//! it still points where setup pointed it: whatever the user put there since is kept.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};

pub const MANIFEST: &str = "manifest.json";

#[derive(Serialize, Deserialize, Default)]
struct Manifest {
    files: Vec<Entry>,
    /// Directories setup created (outermost first), removed again if empty.
    created_dirs: Vec<PathBuf>,
    /// Symlinks setup made where nothing was.
    #[serde(default)]
    links: Vec<Link>,
}

#[derive(Serialize, Deserialize)]
struct Link {
    path: PathBuf,
    target: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    /// `files/N` in the backup dir, or None: the file did not exist.
    copy: Option<String>,
    mode: Option<u32>,
}

pub struct Backup {
    dir: PathBuf,
    manifest: Manifest,
}

impl Backup {
    pub fn open(dir: &Path) -> anyhow::Result<Backup> {
        let manifest = match std::fs::read(dir.join(MANIFEST)) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow!("broken backup manifest in {}: {e}", dir.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(anyhow!("cannot read the backup in {}: {e}", dir.display())),
        };
        Ok(Backup {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Record `path` (and the directories its creation needs) before its first change.
    pub fn before_change(&mut self, path: &Path) -> anyhow::Result<()> {
        if self.manifest.files.iter().any(|e| e.path == path) {
            return Ok(());
        }
        self.record_missing_dirs(path);
        let files = self.dir.join("files");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&files)
            .with_context(|| format!("cannot create {}", files.display()))?;
        let entry = match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .ok();
                let name = format!("files/{}", self.manifest.files.len());
                write_new(&self.dir.join(&name), &bytes, 0o600)?;
                Entry {
                    path: path.to_path_buf(),
                    copy: Some(name),
                    mode,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Entry {
                path: path.to_path_buf(),
                copy: None,
                mode: None,
            },
            Err(e) => return Err(anyhow!("cannot back up {}: {e}", path.display())),
        };
        self.manifest.files.push(entry);
        self.save()
    }

    /// Make `path` a symlink to `target` where nothing is (creating its
    /// directory), recorded so undo removes exactly that link.
    pub fn link(&mut self, path: &Path, target: &Path) -> anyhow::Result<()> {
        // Recorded first: an undo after a failure below finds no link and skips it.
        self.record_missing_dirs(path);
        if !self.manifest.links.iter().any(|l| l.path == path) {
            self.manifest.links.push(Link {
                path: path.to_path_buf(),
                target: target.to_path_buf(),
            });
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        self.save()?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::os::unix::fs::symlink(target, path)
            .with_context(|| format!("cannot create the link {}", path.display()))
    }

    /// Whether setup made the link at `path`.
    pub fn made_link(&self, path: &Path) -> bool {
        self.manifest.links.iter().any(|l| l.path == path)
    }

    fn record_missing_dirs(&mut self, path: &Path) {
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .take_while(|a| !a.exists())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for d in missing {
            if !self.manifest.created_dirs.contains(&d) {
                self.manifest.created_dirs.push(d);
            }
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(&self.manifest)?;
        write_new(&self.dir.join(MANIFEST), &text, 0o600)
    }

    /// Back `path` up, then replace its contents with `bytes` (keeping its mode; new files 0600).
    pub fn write(&mut self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        self.before_change(path)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        write_new(path, bytes, mode)
    }

    /// Put every recorded file back, remove the ones that did not exist and the
    /// directories setup created (when empty), then delete the backup.
    pub fn restore(self) -> anyhow::Result<Vec<String>> {
        let mut done = vec![];
        for e in self.manifest.files.iter().rev() {
            match &e.copy {
                Some(name) => {
                    let bytes = std::fs::read(self.dir.join(name))
                        .with_context(|| format!("backup of {} is missing", e.path.display()))?;
                    if let Some(parent) = e.path.parent() {
                        std::fs::create_dir_all(parent)
                            .with_context(|| format!("cannot create {}", parent.display()))?;
                    }
                    write_new(&e.path, &bytes, e.mode.unwrap_or(0o600))?;
                    done.push(format!("restored {}", e.path.display()));
                }
                None => match std::fs::remove_file(&e.path) {
                    Ok(()) => done.push(format!(
                        "removed {} (it did not exist before)",
                        e.path.display()
                    )),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(anyhow!("cannot remove {}: {err}", e.path.display())),
                },
            }
        }
        for l in &self.manifest.links {
            match std::fs::read_link(&l.path) {
                Ok(t) if t == l.target => {
                    std::fs::remove_file(&l.path)
                        .with_context(|| format!("cannot remove {}", l.path.display()))?;
                    done.push(format!("removed link {}", l.path.display()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                _ => done.push(format!(
                    "kept {}: it is no longer the link setup made",
                    l.path.display()
                )),
            }
        }
        // Directories setup created that are not empty yet (another target's
        // files are in them) are removed by a later undo, once empty.
        let pending_file = self
            .dir
            .parent()
            .map(|p| p.join(PENDING_DIRS))
            .unwrap_or_else(|| PathBuf::from(PENDING_DIRS));
        let mut dirs: Vec<PathBuf> = std::fs::read(&pending_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for d in &self.manifest.created_dirs {
            if !dirs.contains(d) {
                dirs.push(d.clone());
            }
        }
        // Deepest first.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs.retain(|d| {
            if !d.exists() {
                return false;
            }
            if std::fs::remove_dir(d).is_ok() {
                done.push(format!("removed directory {}", d.display()));
                return false;
            }
            true
        });
        if dirs.is_empty() {
            let _ = std::fs::remove_file(&pending_file);
        } else {
            write_new(&pending_file, &serde_json::to_vec_pretty(&dirs)?, 0o600)?;
        }
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove the backup {}", self.dir.display()))?;
        Ok(done)
    }
}

/// Next to the targets' backups: directories setup created that an undo could not remove yet.
const PENDING_DIRS: &str = "pending-dirs.json";

/// Replace `path`'s contents in place (a symlink stays a symlink) with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}
