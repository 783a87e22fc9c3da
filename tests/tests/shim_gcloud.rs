//! The real gcloud (528) gets touch-gated tokens from the shim, by the
//! metadata route and by the ADC-file route, and calls (emulated) Vertex AI.

mod common;
mod shim_common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use shim_common::*;
use touchgate_tests::EmulatorHandle;

const GCLOUD: &str = "/usr/bin/gcloud";

/// A gcloud with a private config dir, Vertex pointed at the emulator, no prompts.
fn gcloud(config: &Path, args: &[&str]) -> Command {
    let path = if Path::new(GCLOUD).exists() {
        GCLOUD.to_owned()
    } else {
        which("gcloud").unwrap_or_else(|| {
            panic!("gcloud is missing: install the Google Cloud CLI (gcloud 528 was measured; https://cloud.google.com/sdk/docs/install)")
        })
    };
    let mut c = Command::new(path);
    touchgate_tests::gcloud::isolate(c.args(args)).env("CLOUDSDK_CONFIG", config);
    c
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
}

async fn configure(config: &Path, emu_url: &str) {
    config_set(
        config,
        "api_endpoint_overrides/aiplatform",
        &format!("{emu_url}/"),
    )
    .await;
    // That run found no metadata server and cached "not on GCE" for 10 minutes.
    let _ = std::fs::remove_file(config.join("gce"));
}

/// A fresh gcloud config dir, configured by [`configure`].
async fn configured(emu: &EmulatorHandle) -> tempfile::TempDir {
    let config = tempfile::tempdir().unwrap();
    configure(config.path(), &emu.base_url()).await;
    config
}

/// `gcloud config set auth/credential_file_override ADC`: no login needed.
async fn override_credential_file(config: &Path, adc: &Path) {
    config_set(
        config,
        "auth/credential_file_override",
        adc.to_str().unwrap(),
    )
    .await;
}

/// `gcloud config set KEY VALUE` in `config`.
async fn config_set(config: &Path, key: &str, value: &str) {
    let o = run(gcloud(config, &["config", "set", key, value])).await;
    assert!(
        o.status.success(),
        "gcloud config set {key}: {}",
        stderr(&o)
    );
}

fn models_list(config: &Path) -> Command {
    gcloud(
        config,
        &[
            "ai",
            "models",
            "list",
            "--region=us-central1",
            &format!("--project={PROJECT}"),
        ],
    )
}

/// [`models_list`] with the metadata server at `shim`.
fn models_list_via_metadata(config: &Path, shim: &ShimProc) -> Command {
    let mut cmd = models_list(config);
    cmd.env("GCE_METADATA_ROOT", &shim.addr);
    cmd
}

/// gcloud failed, and said why in our words.
fn assert_touch_refused(o: &Output) {
    assert!(!o.status.success(), "gcloud must fail");
    assert!(
        stderr(o).contains("the touch was refused on the security key"),
        "our message in gcloud's stderr: {}",
        stderr(o)
    );
}

fn assert_ok(o: &Output, what: &str, shim: &ShimProc) {
    assert!(
        o.status.success(),
        "{what} failed: {}\nshim stderr: {}",
        stderr(o),
        shim.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcloud_lists_models_via_the_metadata_route() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let config = configured(&emu).await;

    let o = run(models_list_via_metadata(config.path(), &shim)).await;
    assert_ok(&o, "gcloud ai models list (metadata)", &shim);
    let calls = vertex_calls_with_agent_token(&emu);
    assert!(
        calls
            .iter()
            .any(|c| c.path == format!("/v1/projects/{PROJECT}/locations/us-central1/models")),
        "Vertex saw the agent's token: {}",
        calls_summary(&emu)
    );
    // gcloud's account is the profile's service account.
    let mut cmd = gcloud(config.path(), &["auth", "list", "--format=value(account)"]);
    cmd.env("GCE_METADATA_ROOT", &shim.addr);
    let o = run(cmd).await;
    assert!(stdout(&o).contains(INFERENCE), "{}", stdout(&o));
    assert!(
        agent.stderr().contains("via touchgate-shim (pid"),
        "the agent knows gcloud asked through the shim: {}\nshim: {}",
        agent.stderr(),
        shim.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcloud_lists_models_via_the_adc_file_route() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let config = configured(&emu).await;
    let adc = shim.adc_file(config.path(), Some("inference"));

    let o = run(gcloud(
        config.path(),
        &["auth", "login", &format!("--cred-file={}", adc.display())],
    ))
    .await;
    assert_ok(&o, "gcloud auth login --cred-file", &shim);
    let o = run(models_list(config.path())).await;
    assert_ok(&o, "gcloud ai models list (ADC file)", &shim);
    assert!(
        !vertex_calls_with_agent_token(&emu).is_empty(),
        "Vertex saw the agent's token: {}",
        calls_summary(&emu)
    );

    // The same file as auth/credential_file_override, without a login: gcloud
    // exchanges at the shim's STS on the command itself.
    emu.state().clear_calls();
    let config = configured(&emu).await;
    override_credential_file(config.path(), &adc).await;
    let sts_before = shim.stderr().matches("POST /sts/token -> 200").count();
    let o = run(models_list(config.path())).await;
    assert_ok(
        &o,
        "gcloud ai models list (credential_file_override)",
        &shim,
    );
    assert!(
        shim.stderr().matches("POST /sts/token -> 200").count() > sts_before,
        "gcloud exchanged at the shim: {}",
        shim.stderr()
    );
    assert!(
        !vertex_calls_with_agent_token(&emu).is_empty(),
        "Vertex saw the agent's token: {}",
        calls_summary(&emu)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_denied_touch_fails_gcloud_with_our_message() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "deny", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);

    // Metadata route.
    let config = configured(&emu).await;
    let o = run(models_list_via_metadata(config.path(), &shim)).await;
    assert_touch_refused(&o);

    // ADC-file route (credential_file_override: no login, which would need a touch itself).
    let config = configured(&emu).await;
    let adc = shim.adc_file(config.path(), None);
    override_credential_file(config.path(), &adc).await;
    let o = run(models_list(config.path())).await;
    assert_touch_refused(&o);
    assert!(vertex_calls_with_agent_token(&emu).is_empty());
}
