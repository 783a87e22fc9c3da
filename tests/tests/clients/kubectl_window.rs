//! The kubectl window (`kubectl_window` on an `every-token` profile), driven by
//! the real kubectl against an emulated HTTPS API server: separate kubectl
//! commands inside the window cost one touch, a command after it a touch; and
//! the attacks on it — another program of the user running the plugin itself
//! (directly, or under kubectl through a wrapper that reads its output),
//! kubectl sending the token to another cluster, a window surviving a lock —
//! each cost a touch. Also `touchgate setup kubectl` runs no plugin.

use crate::common;
use crate::shim_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use shim_common::*;

use crate::shim_helpers::{kubeconfig, kubectl, kubectl_version, TlsServer};

/// An agent whose `inference` profile is `every-token` with `kubectl_window`,
/// the soft key touching by itself, enrolled and with the runner key imported.
fn agent_with_kubectl_window(emu_url: &str, key_json: &str, window: &str) -> AgentProc {
    // The profile is the config's last table: the line joins it.
    let config = format!(
        "{}kubectl_window = \"{window}\"\n",
        config_text(emu_url, "auto", "every-token", "")
    );
    let agent = AgentProc::start(&config);
    agent.ok(&["enroll"]);
    agent.import(key_json);
    agent
}

/// The touches the agent has asked for so far.
fn touches(agent: &AgentProc) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&agent.ok(&["status", "--json"])).unwrap();
    v["touches"].as_u64().unwrap()
}

/// The kubeconfig user's exec entry running `command` (the shim, or a script
/// around it) with the profile, cluster info on, and the agent's socket.
fn exec_user(command: &Path, agent: &AgentProc) -> String {
    format!(
        r#"    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: {command}
      args: [kubectl-credential, --profile, inference]
      interactiveMode: Never
      provideClusterInfo: true
      env:
      - name: TOUCHGATE_SOCK
        value: {sock}"#,
        command = command.display(),
        sock = agent.socket.display(),
    )
}

/// A script (run by kubectl as the plugin) that saves what kubectl told it in
/// `saved` and then becomes the shim (`exec`): the shim's parent is still kubectl.
fn exec_shim_script(dir: &Path, saved: &Path) -> std::path::PathBuf {
    let p = dir.join("exec-shim.sh");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nprintf '%s' \"$KUBERNETES_EXEC_INFO\" > '{}'\nexec '{}' \"$@\"\n",
            saved.display(),
            bin("touchgate-shim").display()
        ),
    )
    .unwrap();
    make_executable(&p);
    p
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_kubectl_commands_inside_the_kubectl_window_cost_one_touch() {
    const WINDOW: Duration = Duration::from_secs(4);
    let (emu, key_json) = emulator().await;
    let agent = agent_with_kubectl_window(&emu.base_url(), &key_json, "4s");
    let server = TlsServer::start(&emu).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(
        dir.path(),
        &server,
        &exec_user(&bin("touchgate-shim"), &agent),
    );
    let base = touches(&agent);

    let opened = Instant::now();
    for _ in 0..3 {
        kubectl_version(&kc, dir.path(), &server, &agent).await;
    }
    let spent = opened.elapsed();
    assert_eq!(
        touches(&agent),
        base + 1,
        "three kubectl commands, one touch (they took {spent:?} of the {WINDOW:?} window)\nagent: {}",
        agent.stderr()
    );
    assert!(
        agent.stderr().contains("kubectl"),
        "the prompt named kubectl's window: {}",
        agent.stderr()
    );

    // The window closes on the clock, which nothing else signals: wait it out.
    tokio::time::sleep_until((opened + WINDOW + Duration::from_millis(200)).into()).await;
    kubectl_version(&kc, dir.path(), &server, &agent).await;
    assert_eq!(touches(&agent), base + 2, "after the window, a touch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_kubectl_for_the_same_cluster_reuses_the_kubectl_window_and_a_lock_ends_it() {
    let (emu, key_json) = emulator().await;
    let agent = agent_with_kubectl_window(&emu.base_url(), &key_json, "10m");
    let server = TlsServer::start(&emu).await;
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("exec-info.json");
    let kc = kubeconfig(
        dir.path(),
        &server,
        &exec_user(&exec_shim_script(dir.path(), &saved), &agent),
    );
    let base = touches(&agent);

    // kubectl opens the window (a touch) and reuses it (none).
    kubectl_version(&kc, dir.path(), &server, &agent).await;
    kubectl_version(&kc, dir.path(), &server, &agent).await;
    assert_eq!(touches(&agent), base + 1, "agent: {}", agent.stderr());
    let info = std::fs::read_to_string(&saved).unwrap();
    assert!(
        info.contains(&format!("https://{}", server.addr)),
        "kubectl told the plugin its cluster: {info}"
    );

    // Attack 1: another program runs the plugin itself with exactly what
    // kubectl told it, and reads the token from its output: a touch each
    // time (it is not kubectl, so it gets no window of its own either).
    for n in 2..=3 {
        let o = run({
            let mut c = Command::new(bin("touchgate-shim"));
            c.args(["kubectl-credential", "--profile", "inference"])
                .env("TOUCHGATE_SOCK", &agent.socket)
                .env("KUBERNETES_EXEC_INFO", &info);
            c
        })
        .await;
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            touches(&agent),
            base + n,
            "the plugin run by another program costs a touch"
        );
    }

    // Attack 2: kubectl runs a wrapper that runs the plugin as its child and
    // keeps a copy of its output: the plugin's parent is not kubectl, a touch.
    let copy = dir.path().join("stolen.json");
    let wrapper = dir.path().join("wrapper.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n'{}' \"$@\" | tee '{}'\n",
            bin("touchgate-shim").display(),
            copy.display()
        ),
    )
    .unwrap();
    make_executable(&wrapper);
    let wdir = tempfile::tempdir().unwrap();
    let kc_wrapped = kubeconfig(wdir.path(), &server, &exec_user(&wrapper, &agent));
    kubectl_version(&kc_wrapped, wdir.path(), &server, &agent).await;
    assert_eq!(
        touches(&agent),
        base + 4,
        "a wrapper between kubectl and the plugin costs a touch"
    );

    // Attack 3: kubectl sending the token to another cluster (another server
    // and CA, as a kubeconfig of the attacker's would): a touch.
    let other = TlsServer::start(&emu).await;
    let odir = tempfile::tempdir().unwrap();
    let osaved = odir.path().join("exec-info.json");
    let kc_other = kubeconfig(
        odir.path(),
        &other,
        &exec_user(&exec_shim_script(odir.path(), &osaved), &agent),
    );
    kubectl_version(&kc_other, odir.path(), &other, &agent).await;
    assert_eq!(touches(&agent), base + 5, "another cluster costs a touch");

    // The window itself is still there for kubectl and its cluster: the
    // refusals above were for who asked, not a window gone.
    kubectl_version(&kc, dir.path(), &server, &agent).await;
    assert_eq!(touches(&agent), base + 5, "agent: {}", agent.stderr());

    // Attack 4: a window surviving a lock. After lock and unlock (its own
    // touch), kubectl needs a touch again.
    agent.ok(&["lock"]);
    agent.ok(&["unlock"]);
    assert_eq!(touches(&agent), base + 6, "unlock is a touch");
    kubectl_version(&kc, dir.path(), &server, &agent).await;
    assert_eq!(
        touches(&agent),
        base + 7,
        "the lock dropped the kubectl window"
    );
}

/// `touchgate setup kubectl` runs kubectl, and gcloud's kubectl dispatcher asks
/// the current context's server for its version even for `version --client`:
/// with the current context on touchgate's plugin, that would be a touch.
/// Setup runs none; the user it writes sends kubectl's cluster info.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setup_kubectl_costs_no_touch_and_asks_for_cluster_info() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let server = TlsServer::start(&emu).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(
        dir.path(),
        &server,
        &exec_user(&bin("touchgate-shim"), &agent),
    );
    // The plugin as the current context's user really costs a touch.
    let base = touches(&agent);
    kubectl_version(&kc, dir.path(), &server, &agent).await;
    assert_eq!(touches(&agent), base + 1);

    for round in ["setup kubectl", "setup kubectl again"] {
        let o = run({
            let mut c = Command::new(bin("touchgate"));
            c.args(["setup", "kubectl", "--profile", "inference"])
                .envs(agent.env())
                .env("HOME", dir.path())
                .env("KUBECONFIG", &kc)
                .env_remove("XDG_STATE_HOME")
                .env_remove("XDG_CONFIG_HOME");
            c
        })
        .await;
        assert!(o.status.success(), "{round}: {}", stderr(&o));
        assert_eq!(
            touches(&agent),
            base + 1,
            "{round} ran no plugin\nagent: {}",
            agent.stderr()
        );
    }
    let o = run(kubectl(
        &kc,
        dir.path(),
        &[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.users[?(@.name==\"touchgate-inference\")].user.exec.provideClusterInfo}",
        ],
    ))
    .await;
    assert_eq!(stdout(&o).trim(), "true", "{}", stderr(&o));
}
