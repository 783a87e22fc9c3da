//! The `docker-credential-touchgate` link `touchgate setup docker` makes: a
//! symlink, in the user's own bin directory (`$XDG_BIN_HOME`, else
//! `~/.local/bin`, created if needed), to the `touchgate-shim` installed beside
//! `touchgate`. Invariants: the directory is the user's and nobody else can
//! write to it (else another user could swap the helper docker hands
//! registry tokens to); nothing already at the link's path is ever replaced;
//! the link is recorded in the backup so `--undo` removes exactly it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

use super::backup::Backup;
use super::DOCKER_HELPER;

/// Make (or find) the helper link; a line saying where, and a one-line
/// warning on stderr when its directory is not on PATH.
pub fn ensure(backup: &mut Backup) -> anyhow::Result<()> {
    let target = super::installed_shim()?;
    let dir = super::xdg("XDG_BIN_HOME", ".local/bin")?;
    let dir = super::absolute(&dir)?;
    let link = dir.join(format!("docker-credential-{DOCKER_HELPER}"));
    check_dir(&dir)?;
    match std::fs::symlink_metadata(&link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            backup.link(&link, &target)?;
            println!("linked {} -> {}", link.display(), target.display());
        }
        Err(e) => bail!("cannot read {}: {e}", link.display()),
        Ok(_) => match std::fs::read_link(&link) {
            Ok(t) if t == target => {
                println!("{} -> {}: already there", link.display(), target.display());
            }
            _ if backup.made_link(&link) => bail!(
                "{} was changed since touchgate setup docker made it; run touchgate setup --undo docker, then setup again",
                link.display()
            ),
            _ => bail!(
                "{} exists, not made by touchgate setup: remove it (or point it at {}) and run setup again",
                link.display(),
                target.display()
            ),
        },
    }
    if !on_path(&dir) {
        eprintln!(
            "touchgate: warning: {} is not on PATH: docker will not find docker-credential-{DOCKER_HELPER}; add it to PATH in your shell profile",
            dir.display()
        );
    }
    Ok(())
}

/// The directory (or its nearest existing ancestor, when setup will create
/// it) must be the user's and writable by nobody else.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .ok_or_else(|| anyhow!("no directory of {} exists", dir.display()))?;
    let meta = std::fs::metadata(existing)
        .map_err(|e| anyhow!("cannot read {}: {e}", existing.display()))?;
    let me = touchgate::paths::current_uid();
    if meta.uid() != me {
        bail!(
            "{} belongs to uid {}, not you (uid {me}): refusing to put docker's credential helper there; set XDG_BIN_HOME to a directory of yours",
            existing.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} is writable by other users (mode {:o}): refusing to put docker's credential helper there; chmod go-w it",
            existing.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

fn on_path(dir: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let want = canon(dir);
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .filter(|d| d.is_absolute())
            .any(|d: PathBuf| canon(&d) == want)
    })
}
