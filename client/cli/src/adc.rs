//! gcloud's Application Default Credentials file, and `touchgate import`'s
//! offer to delete a credential file once the agent has sealed it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use touchgate::CallerHint;

const ADC_FILE: &str = "application_default_credentials.json";

/// `$CLOUDSDK_CONFIG/application_default_credentials.json`, else
/// `~/.config/gcloud/application_default_credentials.json` (where
/// `gcloud auth application-default login` writes, on Linux and macOS).
pub fn well_known_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CLOUDSDK_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join(ADC_FILE));
    }
    directories::BaseDirs::new().map(|b| b.home_dir().join(".config").join("gcloud").join(ADC_FILE))
}

/// What to do with the source file after sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterImport {
    Delete,
    Keep,
    /// Ask on the terminal; keep (with a note) without one.
    Ask,
}

pub async fn import(file: Option<PathBuf>, name: &str, after: AfterImport) -> anyhow::Result<()> {
    let file = match file {
        Some(f) => f,
        None => {
            let Some(f) = well_known_file() else {
                anyhow::bail!(
                    "no FILE given and no home directory to find gcloud's ADC file in: run \
                     touchgate import FILE"
                );
            };
            if !f.exists() {
                anyhow::bail!(
                    "no FILE given and no gcloud ADC file at {}: run `gcloud auth \
                     application-default login` first, or touchgate import FILE, or touchgate login",
                    f.display()
                );
            }
            f
        }
    };
    let stdin = file.as_os_str() == "-";
    if stdin && after != AfterImport::Ask {
        anyhow::bail!("--delete and --keep need a FILE, not standard input");
    }
    let text = crate::read_credential(&file)?;
    let kind = crate::connect()
        .await?
        .import(name, text, CallerHint::from_env())
        .await?;
    println!("sealed {kind} credential as \"{name}\" under the enrolled key");
    if stdin {
        return Ok(());
    }
    let delete = match after {
        AfterImport::Delete => true,
        AfterImport::Keep => false,
        AfterImport::Ask if std::io::stdin().is_terminal() => ask(&file)?,
        AfterImport::Ask => {
            println!(
                "kept {}: the agent no longer needs it; delete it once you have a backup \
                 (touchgate import --delete does it after sealing)",
                file.display()
            );
            return Ok(());
        }
    };
    if delete {
        remove(&file).map_err(|e| {
            anyhow::anyhow!(
                "sealed as \"{name}\", but cannot delete {}: {e}; delete it yourself",
                file.display()
            )
        })?;
        println!("deleted {}", file.display());
    } else {
        println!("kept {}", file.display());
    }
    Ok(())
}

fn ask(file: &Path) -> anyhow::Result<bool> {
    eprint!("delete {} now? [y/N] ", file.display());
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| anyhow::anyhow!("cannot read the answer: {e}"))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Overwrites a regular file with zeros, then unlinks it (a symlink: only the
/// link). On SSDs and copy-on-write file systems old blocks may survive; the
/// overwrite is a courtesy, the credential itself stays valid until revoked.
fn remove(file: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(file)?;
    if meta.is_file() {
        let mut f = std::fs::OpenOptions::new().write(true).open(file)?;
        let zeros = vec![0u8; meta.len() as usize];
        f.write_all(&zeros)?;
        f.sync_all()?;
    }
    std::fs::remove_file(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn remove_overwrites_then_unlinks() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("adc.json");
        std::fs::write(&f, "secret").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        remove(&link).unwrap();
        assert_eq!(
            std::fs::read(&f).unwrap(),
            b"secret",
            "a link goes, its target stays"
        );
        remove(&f).unwrap();
        assert!(!f.exists());
    }
}
