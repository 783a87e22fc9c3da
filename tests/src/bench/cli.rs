//! Whole processes, as a shell or docker runs them: `touchgate token` (a
//! window hit from the bench's agent) against `gcloud auth print-access-token`
//! printing a static token file, and the docker helper's `get` against
//! `docker-credential-gcloud get` on the same static token file. The peers do
//! no network at all, so each ratio is start-up against start-up.
//!
//! Both peers ship with the Google Cloud CLI; if either is missing the section
//! fails saying what to install.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use touchgate_tests::emulator::EmulatorHandle;

use super::goals::{self, Bound, Goal};
use super::world::{self, Bins, Touchgate, TARGET};

/// The registry the docker helpers are asked about.
const REGISTRY: &str = "https://us-docker.pkg.dev";
/// What the static token file holds (the peers print it back).
const STATIC_TOKEN: &str = "ya29.touchgate-bench-static-token";

/// `docker-credential-gcloud`: next to gcloud, else on PATH; or what to install.
pub fn find_docker_helper(gcloud: &Path) -> anyhow::Result<PathBuf> {
    let name = "docker-credential-gcloud";
    let beside = gcloud.with_file_name(name);
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .context("docker-credential-gcloud not found (the peer of the docker helper figure): install the Google Cloud CLI, which ships it next to gcloud")
}

/// Run `cmd` (stdin `input`) `runs` times after one untimed run; each run's
/// stdout goes to `check`. The median.
fn median_of(
    runs: usize,
    what: &str,
    mut cmd: impl FnMut() -> Command,
    input: &str,
    mut check: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        let t = Instant::now();
        let mut child = cmd()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {what}"))?;
        let mut w = child.stdin.take().expect("piped");
        w.write_all(input.as_bytes())?;
        drop(w);
        let o = child.wait_with_output()?;
        let took = t.elapsed();
        if !o.status.success() {
            bail!(
                "{what} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        check(String::from_utf8_lossy(&o.stdout).trim())?;
        if i > 0 {
            times.push(took);
        }
    }
    times.sort();
    Ok(times[(runs.max(1) - 1) / 2])
}

pub fn run(
    emu: &EmulatorHandle,
    bins: &Bins,
    tg: &Touchgate,
    gcloud: &Path,
    runs: usize,
) -> anyhow::Result<Vec<Goal>> {
    let docker_gcloud = find_docker_helper(gcloud)?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, STATIC_TOKEN)?;
    let config = dir.path().join("gcloud");
    let peer = |prog: &Path| {
        let mut c = Command::new(prog);
        touchgate_tests::gcloud::isolate(&mut c)
            .env("CLOUDSDK_CONFIG", &config)
            .env("CLOUDSDK_AUTH_ACCESS_TOKEN_FILE", &token_file);
        c
    };
    let says_static = |out: &str| -> anyhow::Result<()> {
        if !out.contains(STATIC_TOKEN) {
            bail!("a peer did not print the static token file's token: {out:?}");
        }
        Ok(())
    };
    let window_token = |out: &str, what: &str| world::check_token(emu, out, TARGET, what);

    let gcloud_t = median_of(
        runs,
        "gcloud auth print-access-token",
        || {
            let mut c = peer(gcloud);
            c.args(["auth", "print-access-token"]);
            c
        },
        "",
        says_static,
    )?;
    let token_t = median_of(
        runs,
        "touchgate token",
        || {
            let mut c = Command::new(&bins.cli);
            c.args(["token", "--profile", "window"])
                .envs(tg.env.iter().cloned());
            c
        },
        "",
        |out| window_token(out, "touchgate token"),
    )?;
    let docker_gcloud_t = median_of(
        runs,
        "docker-credential-gcloud get",
        || {
            let mut c = peer(&docker_gcloud);
            c.arg("get");
            c
        },
        REGISTRY,
        says_static,
    )?;
    let helper_t = median_of(
        runs,
        "touchgate-shim docker-credential get",
        || {
            let mut c = Command::new(&bins.shim);
            c.args(["docker-credential", "get"])
                .env("TOUCHGATE_SOCK", &tg.sock)
                .env("TOUCHGATE_DOCKER_PROFILE", "window");
            c
        },
        REGISTRY,
        |out| {
            let v: serde_json::Value =
                serde_json::from_str(out).context("the docker helper's answer is not JSON")?;
            let secret = v["Secret"].as_str().unwrap_or_default();
            window_token(secret, "touchgate-shim docker-credential get")
        },
    )?;
    println!(
        "\nwhole processes (median of {runs}; window hits from the bench's agent; peers print a static token file)\n  touchgate token {:.2} ms, gcloud auth print-access-token {:.2} ms\n  touchgate-shim docker-credential get {:.2} ms, docker-credential-gcloud get {:.2} ms",
        token_t.as_secs_f64() * 1e3,
        gcloud_t.as_secs_f64() * 1e3,
        helper_t.as_secs_f64() * 1e3,
        docker_gcloud_t.as_secs_f64() * 1e3
    );
    Ok(vec![
        Goal::ratio(
            "touchgate token, whole process",
            goals::ms(token_t),
            goals::ms(gcloud_t),
            "<= 1/300 of gcloud auth print-access-token (static token file)",
            Bound::AtMost(1.0 / 300.0),
        ),
        Goal::ratio(
            "docker helper get, whole process",
            goals::ms(helper_t),
            goals::ms(docker_gcloud_t),
            "<= 1/300 of docker-credential-gcloud get (static token file)",
            Bound::AtMost(1.0 / 300.0),
        ),
    ])
}
