//! An unchanged Python script (google-auth + google-cloud-aiplatform, REST
//! transport) gets touch-gated tokens from the shim, by the metadata route and
//! by the ADC-file route, lists models and predicts on (emulated) Vertex AI;
//! and a touch given 8 s late, after google-auth's 3-s metadata timeout has
//! fired and it retried, still serves it.

use crate::common;
use crate::shim_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use shim_common::*;
use touchgate_tests::emulator::CallKind;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The venv's python: `$TOUCHGATE_TEST_PYTHON`, else `<workspace>/target/pyvenv/bin/python`.
pub(crate) fn python() -> PathBuf {
    let p = std::env::var_os("TOUCHGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/pyvenv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/python-venv.sh (it installs google-auth and google-cloud-aiplatform into target/pyvenv)",
        p.display()
    );
    let o = Command::new(&p)
        .args(["-c", "import google.auth, google.cloud.aiplatform_v1"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} lacks google-auth or google-cloud-aiplatform: run scripts/python-venv.sh ({})",
        p.display(),
        stderr(&o).lines().last().unwrap_or("")
    );
    p
}

/// The user's script, with a clean environment: no ADC file, no gcloud config,
/// no metadata server unless the test points one out.
fn script(home: &Path, emu_url: &str, what: &str) -> Command {
    let mut c = Command::new(python());
    c.arg(workspace().join("tests/python/vertex_client.py"))
        .args([emu_url, PROJECT, what])
        .env("HOME", home)
        .env("CLOUDSDK_CONFIG", home.join("gcloud"))
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .env_remove("GCE_METADATA_HOST")
        .env_remove("GCE_METADATA_ROOT")
        // An unset metadata IP would probe 169.254.169.254: never leave loopback.
        .env("GCE_METADATA_IP", "127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost");
    c
}

fn metadata_env(c: &mut Command, shim: &ShimProc) {
    c.env("GCE_METADATA_HOST", &shim.addr)
        .env("GCE_METADATA_IP", &shim.addr);
}

fn parse_ok(o: &std::process::Output, shim: &ShimProc) -> Value {
    assert!(
        o.status.success(),
        "python failed: {}\nshim: {}",
        stderr(o),
        shim.stderr()
    );
    serde_json::from_str(stdout(o).trim().lines().last().unwrap()).unwrap()
}

fn assert_vertex_saw_agent_tokens(emu: &touchgate_tests::emulator::EmulatorHandle) {
    let calls = vertex_calls_with_agent_token(emu);
    assert!(
        calls.iter().any(|c| c.path.ends_with("/models")),
        "models list with the agent's token: {}",
        calls_summary(emu)
    );
    assert!(
        calls.iter().any(|c| c.path.ends_with(":predict")),
        "predict with the agent's token: {}",
        calls_summary(emu)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_lists_and_predicts_via_the_metadata_route() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let home = tempfile::tempdir().unwrap();
    let mut cmd = script(home.path(), &emu.base_url(), "both");
    metadata_env(&mut cmd, &shim);
    let out = parse_ok(&run(cmd).await, &shim);
    assert_eq!(
        out["credentials"],
        "google.auth.compute_engine.credentials.Credentials"
    );
    assert_eq!(out["models"], 0);
    assert_eq!(out["predictions"][0]["echo"]["x"], 1.0);
    assert_vertex_saw_agent_tokens(&emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_lists_and_predicts_via_the_adc_file_route() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let home = tempfile::tempdir().unwrap();
    let adc = shim.adc_file(home.path(), Some("inference"));
    let mut cmd = script(home.path(), &emu.base_url(), "both");
    cmd.env("GOOGLE_APPLICATION_CREDENTIALS", &adc)
        .env("GOOGLE_CLOUD_PROJECT", PROJECT);
    let out = parse_ok(&run(cmd).await, &shim);
    assert_eq!(out["credentials"], "google.auth.identity_pool.Credentials");
    assert_eq!(out["predictions"][0]["echo"]["x"], 1.0);
    assert_vertex_saw_agent_tokens(&emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_touch_given_8s_late_still_serves_the_metadata_client() {
    let (emu, key_json) = emulator().await;
    // The agent waits 30 s for a touch: the client's patience is under test, not the agent's.
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "")
        .replace("touch_timeout = \"10s\"", "touch_timeout = \"30s\"");
    let (agent, touch) = enrolled_in_process(&cfg, &key_json).await;
    let before = touch.requested();
    let shim = ShimProc::start(&agent.socket, &[]);
    let home = tempfile::tempdir().unwrap();
    let mut cmd = script(home.path(), &emu.base_url(), "list");
    metadata_env(&mut cmd, &shim);
    let client = tokio::spawn(run(cmd));

    // Wait for the agent to ask for the touch (the script's first token read).
    let t = touch.clone();
    let asked =
        tokio::task::spawn_blocking(move || t.wait_requested(before + 1, Duration::from_secs(60)))
            .await
            .unwrap();
    assert!(
        asked,
        "the script never asked for a token; shim: {}",
        shim.stderr()
    );
    let asked_at = Instant::now();
    // THE SCENARIO: the user touches the key 8 s later. google-auth gives up on a
    // metadata read after 3 s and retries with backoff, so by now its first try
    // (and maybe a second) has hung up. This sleep is the test, not a wait for an event.
    tokio::time::sleep(Duration::from_secs(8)).await;
    touch.approve();
    let o = client.await.unwrap();
    let waited = asked_at.elapsed();
    let out = parse_ok(&o, &shim);
    assert_eq!(out["models"], 0);
    assert!(waited >= Duration::from_secs(8));
    assert_eq!(
        touch.requested(),
        before + 1,
        "the retries joined the pending touch: exactly one touch asked for"
    );
    assert_eq!(
        emu.state().count(CallKind::GenerateAccessToken),
        1,
        "one mint for all the tries"
    );
    let token_reads = shim
        .stderr()
        .lines()
        .filter(|l| l.contains("/service-accounts/default/token"))
        .count();
    assert!(
        token_reads >= 2,
        "google-auth timed out and retried while the touch was pending: {}",
        shim.stderr()
    );
    assert!(
        shim.stderr().contains("/token -> client hung up"),
        "a try hung up while the touch was pending: {}",
        shim.stderr()
    );
    assert!(!vertex_calls_with_agent_token(&emu).is_empty());
    drop(shim);
    agent.shutdown().await;
}

/// Issue 5, item 5: after `touchgate setup adc`, an unchanged script finds the
/// credential on its own (no GOOGLE_APPLICATION_CREDENTIALS, no metadata variables).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_works_unchanged_after_touchgate_setup_adc() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let home = tempfile::tempdir().unwrap();
    let setup = |undo: bool| {
        let mut c = Command::new(bin("touchgate"));
        c.arg("setup");
        if undo {
            c.args(["--undo", "adc"]);
        } else {
            c.args(["adc", "--profile", "inference"]);
        }
        let o = c
            .envs(agent.env())
            .env("HOME", home.path())
            .env("CLOUDSDK_CONFIG", home.path().join("gcloud"))
            .env("TOUCHGATE_SHIM_ADDR", &shim.addr)
            .output()
            .unwrap();
        assert!(o.status.success(), "setup: {}", stderr(&o));
    };
    setup(false);
    assert!(home
        .path()
        .join("gcloud/application_default_credentials.json")
        .exists());
    let mut cmd = script(home.path(), &emu.base_url(), "both");
    cmd.env("GOOGLE_CLOUD_PROJECT", PROJECT);
    let out = parse_ok(&run(cmd).await, &shim);
    assert_eq!(out["credentials"], "google.auth.identity_pool.Credentials");
    assert_eq!(out["predictions"][0]["echo"]["x"], 1.0);
    assert_vertex_saw_agent_tokens(&emu);
    setup(true);
    assert!(!home
        .path()
        .join("gcloud/application_default_credentials.json")
        .exists());
}

/// `cmd` in a clean `home` with the gcloud trap (see [`gcloud_trap`]) first on
/// PATH, and none of the variables that name a credential or a project.
pub(crate) fn behind_gcloud_trap<'a>(
    cmd: &'a mut Command,
    home: &Path,
    trap: &Path,
) -> &'a mut Command {
    cmd.env("HOME", home)
        .env("CLOUDSDK_CONFIG", home.join("gcloud"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                trap.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .env_remove("GCLOUD_PROJECT")
        .env_remove("CLOUDSDK_CORE_PROJECT")
}

/// A `gcloud` first on PATH that only records that it ran (and fails): a
/// client that shells out to gcloud for its project is seen doing so.
pub(crate) fn gcloud_trap(dir: &Path) -> (PathBuf, PathBuf) {
    let bin_dir = dir.join("trap-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let ran = dir.join("gcloud-ran");
    let gcloud = bin_dir.join("gcloud");
    std::fs::write(
        &gcloud,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", ran.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gcloud, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin_dir, ran)
}

/// Route 1 as the README documents it, for google-auth with no project
/// variable: the project comes from the shim's `project/project-id`, no gcloud
/// runs, and one token costs one touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_finds_the_project_on_the_metadata_route_without_gcloud() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let home = tempfile::tempdir().unwrap();
    let (trap, ran) = gcloud_trap(home.path());
    let touches = || -> u64 {
        let v: Value = serde_json::from_str(&agent.ok(&["status", "--json"])).unwrap();
        v["touches"].as_u64().unwrap()
    };
    let before = touches();
    let mut cmd = Command::new(python());
    cmd.args([
        "-c",
        "import json, google.auth, google.auth.transport.requests as r\n\
         c, p = google.auth.default()\n\
         c.refresh(r.Request())\n\
         print(json.dumps({'project': p, 'token': bool(c.token)}))",
    ]);
    behind_gcloud_trap(&mut cmd, home.path(), &trap)
        .env("GCE_METADATA_ROOT", &shim.addr)
        .env("NO_PROXY", "127.0.0.1,localhost");
    metadata_env(&mut cmd, &shim);
    let out = parse_ok(&run(cmd).await, &shim);
    assert_eq!(out["project"], PROJECT, "from the metadata route");
    assert_eq!(out["token"], true);
    assert!(
        !ran.exists(),
        "google-auth ran gcloud: {}",
        std::fs::read_to_string(&ran).unwrap_or_default()
    );
    assert_eq!(touches(), before + 1, "one token, one touch");
}
