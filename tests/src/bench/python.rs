//! Python google-auth: `credentials.refresh()` in a loop inside one process
//! (`refresh.py`), peer credentials against touchgate's metadata route.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tempfile::TempDir;
use touchgate_tests::emulator::EmulatorHandle;

use super::stats::{Row, Table};
use super::world::{self, Accounts, Touchgate, RUNNER, TARGET, USER};

const SCRIPT: &str = include_str!("refresh.py");

/// The venv's python (`--python`, `$TOUCHGATE_TEST_PYTHON`, else
/// `<workspace>/target/pyvenv/bin/python`) if it has google-auth, or why not.
pub fn find(given: Option<&Path>) -> Result<PathBuf, String> {
    let p = given.map(Path::to_owned).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python")
    });
    let make = "make it with scripts/python-venv.sh (google-auth and requests into target/pyvenv)";
    if !p.is_file() {
        return Err(format!("{} is missing: {make}", p.display()));
    }
    match Command::new(&p)
        .args(["-c", "import google.auth, requests"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(p),
        _ => Err(format!(
            "{} lacks google-auth or requests: {make}",
            p.display()
        )),
    }
}

#[derive(Deserialize)]
struct Out {
    seconds: Vec<f64>,
    tokens: Vec<String>,
    google_auth: String,
}

struct Py<'a> {
    python: &'a Path,
    emu: &'a EmulatorHandle,
    refreshes: usize,
    home: TempDir,
}

impl Py<'_> {
    /// Run the loop; `Ok(Err(stderr))` when python failed.
    fn run(
        &self,
        mode: &str,
        file: Option<&Path>,
        metadata: Option<&str>,
    ) -> anyhow::Result<Result<Out, String>> {
        let home = self.home.path();
        let script = home.join("refresh.py");
        std::fs::write(&script, SCRIPT)?;
        let mut c = Command::new(self.python);
        c.arg(&script).args([mode, &self.refreshes.to_string()]);
        if let Some(f) = file {
            c.arg(f);
        }
        c.env("HOME", home)
            .env("CLOUDSDK_CONFIG", home.join("gcloud"))
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("GOOGLE_CLOUD_PROJECT")
            .env_remove("GCE_METADATA_ROOT")
            // Never the real metadata server: an unset IP would probe 169.254.169.254.
            .env("GCE_METADATA_HOST", metadata.unwrap_or("127.0.0.1:9"))
            .env("GCE_METADATA_IP", metadata.unwrap_or("127.0.0.1:9"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null());
        let o = c.output().context("running python")?;
        if !o.status.success() {
            return Ok(Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()));
        }
        let out = String::from_utf8_lossy(&o.stdout);
        let last = out.trim().lines().last().unwrap_or("");
        Ok(Ok(
            serde_json::from_str(last).with_context(|| format!("refresh.py printed {last:?}"))?
        ))
    }

    fn row(
        &self,
        out: Out,
        label: &str,
        principal: &str,
        fresh: bool,
        upstream: usize,
    ) -> anyhow::Result<Row> {
        let what = format!("python google-auth, {label}");
        for t in &out.tokens {
            world::check_token(self.emu, t, principal, &what)?;
        }
        if fresh {
            world::check_fresh(&out.tokens, &what)?;
        }
        Ok(Row {
            label: label.to_owned(),
            times: out
                .seconds
                .iter()
                .map(|s| Duration::from_secs_f64(*s))
                .collect(),
            // The process's calls, its warm-up refresh included.
            upstream_per_run: upstream as f64 / (self.refreshes + 1) as f64,
        })
    }

    /// Run and make the row, or fail with python's stderr.
    fn measure(
        &self,
        mode: &str,
        file: Option<&Path>,
        metadata: Option<&str>,
        label: &str,
        principal: &str,
        fresh: bool,
    ) -> anyhow::Result<(Row, String)> {
        let before = world::upstream_calls(self.emu);
        let out = match self.run(mode, file, metadata)? {
            Ok(out) => out,
            Err(e) => bail!("python google-auth, {label}: {e}"),
        };
        let upstream = world::upstream_calls(self.emu) - before;
        let version = out.google_auth.clone();
        Ok((self.row(out, label, principal, fresh, upstream)?, version))
    }
}

pub fn run(
    python: &Path,
    emu: &EmulatorHandle,
    acc: &Accounts,
    tg: &Touchgate,
    refreshes: usize,
) -> anyhow::Result<Table> {
    let py = Py {
        python,
        emu,
        refreshes,
        home: tempfile::tempdir()?,
    };
    let key = py.home.path().join("sa-key.json");
    std::fs::write(&key, &acc.runner_key)?;
    let user = py.home.path().join("user.json");
    std::fs::write(&user, &acc.user_json)?;

    let mut rows = vec![];
    let before = world::upstream_calls(emu);
    match py.run("sa", Some(&key), None)? {
        Ok(out) => {
            let upstream = world::upstream_calls(emu) - before;
            rows.push((
                py.row(out, "peer: service-account key", RUNNER, true, upstream)?,
                true,
            ));
        }
        Err(e) => bail!("python google-auth, service-account key: {e}"),
    }
    let (r, version) = py.measure(
        "user",
        Some(&user),
        None,
        "peer: user refresh token",
        USER,
        true,
    )?;
    rows.push((r, true));
    let (r, _) = py.measure(
        "metadata",
        None,
        Some(&tg.window.addr),
        "touchgate metadata, window hit",
        TARGET,
        false,
    )?;
    rows.push((r, false));
    let (r, _) = py.measure(
        "metadata",
        None,
        Some(&tg.every.addr),
        "touchgate metadata, every-token",
        TARGET,
        true,
    )?;
    rows.push((r, false));

    let mut table = Table::new(format!(
        "python google-auth {version} credentials.refresh(), {refreshes} refreshes per set-up in one process"
    ));
    for (r, peer) in rows {
        table.push(r, peer);
    }
    table.note("refresh() always asks afresh (google-auth keeps no token cache across refresh calls); fresh rows checked that every token differs");
    table.note(
        "every token was checked with the emulator (issued by it, unexpired, the right principal)",
    );
    Ok(table)
}
