//! The real gcloud (528) gets touch-gated tokens from the shim, by the
//! metadata route and by the ADC-file route, and calls (emulated) Vertex AI;
//! caller rules name it by its script, and `policy check` agrees with the agent.

use crate::common;
use crate::shim_common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use shim_common::*;
use touchgate_tests::EmulatorHandle;

const GCLOUD: &str = "/usr/bin/gcloud";

/// The gcloud launcher: /usr/bin/gcloud, else the one on PATH.
fn gcloud_path() -> String {
    if Path::new(GCLOUD).exists() {
        GCLOUD.to_owned()
    } else {
        which("gcloud").unwrap_or_else(|| {
            panic!("gcloud is missing: install the Google Cloud CLI (gcloud 528 was measured; https://cloud.google.com/sdk/docs/install)")
        })
    }
}

/// A gcloud with a private config dir, Vertex pointed at the emulator, no prompts.
fn gcloud(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(gcloud_path());
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

/// `touchgate-agent policy check ARGS` against `agent`'s config.
fn policy_check(agent: &AgentProc, args: &[&str]) -> Output {
    Command::new(bin("touchgate-agent"))
        .args(["policy", "check"])
        .args(args)
        .envs(agent.env())
        .output()
        .unwrap()
}

/// Give profile `inference` the caller list `callers` (TOML) and add a profile
/// `train` that allows only "/usr/bin/gcloud"; the running agent reloads it.
fn set_callers(agent: &AgentProc, emu: &EmulatorHandle, touch: &str, callers: &str) {
    let cfg = config_text(&emu.base_url(), touch, "every-token", "")
        + &format!("callers = {callers}\n\n[profiles.train]\nservice_account = \"{INFERENCE}\"\ntouch = \"every-token\"\ncallers = [\"/usr/bin/gcloud\"]\n");
    std::fs::write(agent.dir.path().join("config.toml"), cfg).unwrap();
    agent.ok(&["reload"]);
}

/// The real gcloud is python running `…/google-cloud-sdk/lib/gcloud.py`, started
/// by the shell launcher /usr/bin/gcloud. A rule naming the launcher never
/// matches it: the agent refuses, naming the script and the glob to write, and
/// `policy check --exe /usr/bin/gcloud` says so too instead of "allow". The
/// script glob lets gcloud through, and `policy check --pid` of a running gcloud
/// agrees with the agent both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcloud_is_matched_by_its_script_and_policy_check_agrees() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let config = configured(&emu).await;
    let gcloud_py = "*/google-cloud-sdk/lib/gcloud.py";

    // The README's old example: the launcher's path.
    set_callers(&agent, &emu, "auto", "[\"/usr/bin/gcloud\"]");
    let check = policy_check(&agent, &["--profile", "inference", "--exe", &gcloud_path()]);
    let o = run(models_list_via_metadata(config.path(), &shim)).await;
    assert!(!o.status.success(), "gcloud must be refused");
    assert!(
        !check.status.success(),
        "policy check must agree with the agent and refuse: {}",
        stdout(&check)
    );
    let said = stderr(&o);
    assert!(
        said.contains("lib/gcloud.py may not use profile \"inference\"")
            && said.contains(&format!(
                "add \"{gcloud_py}\" to profiles.inference.callers"
            )),
        "the refusal names gcloud's script and what to write: {said}\nagent: {}",
        agent.stderr()
    );
    let out = stdout(&check) + &stderr(&check);
    assert!(
        out.contains("refuse:") && out.contains(gcloud_py) && out.contains("--pid"),
        "policy check explains the launcher: {out}"
    );
    assert!(vertex_calls_with_agent_token(&emu).is_empty());

    // The script glob: gcloud gets its token.
    set_callers(&agent, &emu, "auto", &format!("[\"{gcloud_py}\"]"));
    let o = run(models_list_via_metadata(config.path(), &shim)).await;
    assert_ok(&o, "gcloud ai models list with a script glob", &shim);
    assert!(!vertex_calls_with_agent_token(&emu).is_empty());

    // A running gcloud, held in the agent by a touch that never comes: `--pid`
    // sees what the agent sees. A fresh gcloud config: no token cached in it.
    let config = configured(&emu).await;
    let agent = enrolled_agent(&emu, &key_json, "never", "every-token");
    set_callers(&agent, &emu, "never", &format!("[\"{gcloud_py}\"]"));
    let shim = ShimProc::start(&agent.socket, &[]);
    let mut held = models_list_via_metadata(config.path(), &shim)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = held.id().to_string();
    agent
        .wait_log(&format!("(pid {pid}) via touchgate-shim"), 1)
        .await;
    let allow = policy_check(&agent, &["--profile", "inference", "--pid", &pid]);
    let refuse = policy_check(&agent, &["--profile", "train", "--pid", &pid]);
    // The same interpreter and script given by hand.
    let python = touchgate::process::exe_of(held.id()).expect("gcloud's interpreter");
    let launcher = std::fs::canonicalize(gcloud_path()).unwrap();
    let script = launcher.parent().unwrap().join("../lib/gcloud.py");
    let script = std::fs::canonicalize(script).unwrap();
    let by_hand = policy_check(
        &agent,
        &[
            "--profile",
            "inference",
            "--exe",
            python.to_str().unwrap(),
            "--script",
            script.to_str().unwrap(),
        ],
    );
    held.kill().unwrap();
    held.wait().unwrap();
    let script = script.display();
    assert!(
        allow.status.success() && stdout(&allow).contains(&format!("running {script}")),
        "{}",
        stdout(&allow) + &stderr(&allow)
    );
    assert!(!refuse.status.success(), "{}", stdout(&refuse));
    assert!(
        stdout(&refuse).contains(&format!("running {script} may not use profile \"train\"")),
        "{}",
        stdout(&refuse)
    );
    assert!(
        by_hand.status.success(),
        "{}",
        stdout(&by_hand) + &stderr(&by_hand)
    );
}
