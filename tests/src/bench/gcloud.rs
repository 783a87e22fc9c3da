//! `gcloud auth print-access-token`, the real gcloud, each set-up in its own
//! CLOUDSDK_CONFIG against the same emulator.
//!
//! gcloud keeps access tokens in `$CLOUDSDK_CONFIG/access_tokens.db` and
//! reuses one until under 300 s of it are left, whatever the credential (a
//! key, a refresh token, the metadata server, an `external_account` file).
//! So before each timed run (outside the timing) that file is removed: every
//! run asks its credential afresh, and the fresh-token rows check that no two
//! runs got the same token. One row keeps the cache, for the floor: gcloud
//! starting and printing a token it already holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;
use tempfile::TempDir;
use touchgate_tests::emulator::EmulatorHandle;

use super::stats::{Row, Table};
use super::world::{self, Accounts, Touchgate, RUNNER, TARGET, USER};

/// gcloud: `$TOUCHGATE_GCLOUD`/--gcloud, else /usr/bin/gcloud, else the first on PATH.
pub fn find(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return match p.is_file() {
            true => Ok(p.to_owned()),
            false => Err(format!("gcloud not found at {}", p.display())),
        };
    }
    let usual = Path::new("/usr/bin/gcloud");
    if usual.is_file() {
        return Ok(usual.to_owned());
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("gcloud"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) or pass --gcloud".to_owned()
        })
}

/// One gcloud set-up: a private config dir and the environment it runs with.
struct Setup {
    config: TempDir,
    /// `GCE_METADATA_ROOT`: the shim for the metadata route, else a dead port
    /// (never the real metadata server).
    metadata_root: String,
}

impl Setup {
    fn new() -> anyhow::Result<Setup> {
        Ok(Setup {
            config: tempfile::tempdir()?,
            metadata_root: "127.0.0.1:9".into(),
        })
    }

    fn cmd(&self, gcloud: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(gcloud);
        touchgate_tests::gcloud::isolate(c.args(args))
            .env("CLOUDSDK_CONFIG", self.config.path())
            .env("GCE_METADATA_ROOT", &self.metadata_root)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, gcloud: &Path, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.cmd(gcloud, args).output()?)
    }

    /// `gcloud config set KEY VALUE` (asserted), then forget the "not on GCE"
    /// answer that run cached, so the metadata route probes its shim afresh.
    fn set(&self, gcloud: &Path, key: &str, value: &str) -> anyhow::Result<()> {
        let o = self.run(gcloud, &["config", "set", key, value])?;
        if !o.status.success() {
            bail!("gcloud config set {key}: {}", text(&o.stderr));
        }
        let _ = std::fs::remove_file(self.config.path().join("gce"));
        Ok(())
    }

    /// Time `gcloud auth print-access-token` `runs` times after one untimed
    /// warm-up; every token checked with the emulator as `principal`.
    fn measure(
        &self,
        m: &Measure,
        label: &str,
        principal: &str,
        kind: Kind,
    ) -> anyhow::Result<Row> {
        let cache = self.config.path().join("access_tokens.db");
        let what = format!("gcloud, {label}");
        let once = || -> anyhow::Result<(Duration, String)> {
            if kind != Kind::CacheHit {
                let _ = std::fs::remove_file(&cache);
            }
            let mut cmd = self.cmd(m.gcloud, &["auth", "print-access-token"]);
            let t = Instant::now();
            let o = cmd.output()?;
            let took = t.elapsed();
            if !o.status.success() {
                bail!(
                    "{what}: gcloud auth print-access-token failed: {}",
                    text(&o.stderr)
                );
            }
            let token = text(&o.stdout);
            world::check_token(m.emu, &token, principal, &what)?;
            Ok((took, token))
        };
        once()?;
        let before = world::upstream_calls(m.emu);
        let (mut times, mut tokens) = (vec![], vec![]);
        for _ in 0..m.runs {
            let (t, tok) = once()?;
            times.push(t);
            tokens.push(tok);
        }
        let upstream = world::upstream_calls(m.emu) - before;
        if kind == Kind::Fresh {
            world::check_fresh(&tokens, &what)?;
        }
        Ok(Row {
            label: label.to_owned(),
            times,
            upstream_per_run: upstream as f64 / m.runs.max(1) as f64,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A new token every run (checked).
    Fresh,
    /// Served from an open touchgate approval window (the same token).
    Window,
    /// gcloud's own cache kept.
    CacheHit,
}

struct Measure<'a> {
    gcloud: &'a Path,
    emu: &'a EmulatorHandle,
    runs: usize,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

pub fn run(
    gcloud: &Path,
    emu: &EmulatorHandle,
    acc: &Accounts,
    tg: &Touchgate,
    runs: usize,
) -> anyhow::Result<Table> {
    let m = Measure { gcloud, emu, runs };
    let mut table = Table::new(format!(
        "gcloud auth print-access-token ({}), {runs} runs per set-up, a process each",
        gcloud.display()
    ));

    // Peer: a service-account key, activated the usual way.
    let sa = Setup::new()?;
    let key = sa.config.path().join("sa-key.json");
    std::fs::write(&key, &acc.runner_key)?;
    let o = sa.run(
        gcloud,
        &[
            "auth",
            "activate-service-account",
            &format!("--key-file={}", key.display()),
        ],
    )?;
    if o.status.success() {
        let _ = std::fs::remove_file(sa.config.path().join("gce"));
        table.push(
            sa.measure(&m, "peer: service-account key", RUNNER, Kind::Fresh)?,
            true,
        );
    } else {
        bail!("gcloud auth activate-service-account: {}", text(&o.stderr));
    }

    // Peer: a user's refresh token (what `gcloud auth login` keeps), no touchgate.
    let user = Setup::new()?;
    let file = user.config.path().join("user.json");
    std::fs::write(&file, &acc.user_json)?;
    user.set(gcloud, "auth/token_host", &emu.state().token_url())?;
    user.set(
        gcloud,
        "auth/credential_file_override",
        file.to_str().expect("UTF-8 temp path"),
    )?;
    table.push(
        user.measure(&m, "peer: user login (refresh token)", USER, Kind::Fresh)?,
        true,
    );
    table.push(
        user.measure(&m, "gcloud's own cache hit (floor)", USER, Kind::CacheHit)?,
        false,
    );

    // touchgate, metadata route: GCE_METADATA_ROOT at the shim.
    for (shim, label, kind) in [
        (&tg.window, "touchgate metadata, window hit", Kind::Window),
        (&tg.every, "touchgate metadata, every-token", Kind::Fresh),
    ] {
        let mut s = Setup::new()?;
        s.metadata_root = shim.addr.clone();
        table.push(s.measure(&m, label, TARGET, kind)?, false);
    }

    // touchgate, credential-file route (`touchgate setup gcloud`): the shim's
    // external_account file as auth/credential_file_override.
    for (shim, label, kind) in [
        (
            &tg.window,
            "touchgate setup gcloud, window hit",
            Kind::Window,
        ),
        (
            &tg.every,
            "touchgate setup gcloud, every-token",
            Kind::Fresh,
        ),
    ] {
        let s = Setup::new()?;
        s.set(
            gcloud,
            "auth/credential_file_override",
            shim.adc_file.to_str().expect("UTF-8 temp path"),
        )?;
        table.push(s.measure(&m, label, TARGET, kind)?, false);
    }

    table.note(
        "gcloud reuses a token from $CLOUDSDK_CONFIG/access_tokens.db until <300 s of it are left; \
         every row but the cache hit removes that file before each run (untimed), and the fresh rows \
         checked that no two runs got the same token",
    );
    table.note("every token printed was checked with the emulator (issued by it, unexpired, the right principal)");
    Ok(table)
}
