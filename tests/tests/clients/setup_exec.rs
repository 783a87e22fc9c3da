//! `touchgate setup … / --undo …` leave the user's gcloud, ADC, docker and kube
//! config byte-identical; `touchgate exec` points a command at a shim (a
//! private one when none runs), passes its exit status and signals on.

use crate::common;
use crate::shim_common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;
use shim_common::*;
use touchgate_tests::emulator::CallKind;

/// A HOME with some user configuration in it, and the env pointing there.
struct UserDirs {
    dir: tempfile::TempDir,
}

impl UserDirs {
    fn new() -> UserDirs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let w = |p: &str, text: &str| {
            let p = d.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        std::fs::create_dir_all(d.join("home")).unwrap();
        w(
            "gcloud/configurations/config_default",
            "[core]\naccount = me@example.com\nproject = my-own-project\n",
        );
        w("gcloud/active_config", "default");
        w(
            "gcloud/application_default_credentials.json",
            "{\n  \"type\": \"authorized_user\",\n  \"client_id\": \"x.apps.googleusercontent.com\",\n  \"client_secret\": \"not-a-secret\",\n  \"refresh_token\": \"not-a-token\"\n}\n",
        );
        w(
            "docker/config.json",
            "{\n\t\"auths\": {\n\t\t\"ghcr.io\": {\n\t\t\t\"auth\": \"dXNlcjpwYXNz\"\n\t\t}\n\t},\n\t\"credsStore\": \"desktop\",\n\t\"credHelpers\": {\n\t\t\"gcr.io\": \"gcloud\"\n\t}\n}",
        );
        w(
            "kube/config",
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n  name: mine\ncontexts:\n- context:\n    cluster: mine\n    user: me\n  name: mine\ncurrent-context: mine\nusers:\n- name: me\n  user:\n    token: not-a-token\n",
        );
        UserDirs { dir }
    }

    /// An empty HOME and nothing else.
    fn empty() -> UserDirs {
        let u = UserDirs {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(u.p("home")).unwrap();
        u
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("HOME", self.p("home")),
            ("CLOUDSDK_CONFIG", self.p("gcloud")),
            ("DOCKER_CONFIG", self.p("docker")),
            ("KUBECONFIG", self.p("kube/config")),
        ]
    }

    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = all_files(self.dir.path());
        files.sort();
        files
    }
}

/// The shim beside `touchgate`, as setup names it (symlinks resolved).
fn shim_path() -> PathBuf {
    std::fs::canonicalize(bin("touchgate-shim")).unwrap()
}

/// `touchgate ARGS` against `agent`, with the user dirs of `u`.
fn touchgate(agent: &AgentProc, u: &UserDirs, args: &[&str]) -> Command {
    let mut c = Command::new(bin("touchgate"));
    c.args(args)
        .envs(agent.env())
        .envs(u.env())
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_BIN_HOME")
        // No shared shim here: port 9 (discard) has no listener.
        .env("TOUCHGATE_SHIM_ADDR", "127.0.0.1:9");
    c
}

/// `touchgate ARGS`, which must succeed; its stdout.
async fn touchgate_ok(agent: &AgentProc, u: &UserDirs, args: &[&str], what: &str) -> String {
    ok(&run(touchgate(agent, u, args)).await, what)
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\nstdout: {}",
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setup_then_undo_leaves_every_file_byte_identical() {
    let (emu, _key) = emulator().await;
    let agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "every-token", ""));
    let u = UserDirs::new();
    let before = u.snapshot();
    let home = u.p("home");

    // gcloud: a named configuration + the credential file; the user's config untouched.
    let out = touchgate_ok(
        &agent,
        &u,
        &["setup", "gcloud", "--profile", "inference"],
        "setup gcloud",
    )
    .await;
    let conf = u.p("gcloud/configurations/config_touchgate");
    let adc_file = home.join(".config/touchgate/adc-inference.json");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("[core]\nproject = touchgate-test\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "[auth]\ncredential_file_override = {}\n",
            adc_file.display()
        )),
        "{text}"
    );
    let adc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&adc_file).unwrap()).unwrap();
    assert_eq!(adc["type"], "external_account");
    assert!(adc["audience"].as_str().unwrap().ends_with("/inference"));
    assert!(adc["token_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:9/"));
    for p in [&conf, &adc_file] {
        assert!(
            out.contains(&p.display().to_string()),
            "says what changed: {out}"
        );
    }
    assert!(
        out.contains("gcloud config configurations activate touchgate"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(u.p("gcloud/active_config")).unwrap(),
        b"default",
        "not activated"
    );

    // adc: gcloud's ADC file replaced (the old one backed up).
    let out = touchgate_ok(
        &agent,
        &u,
        &["setup", "adc", "--profile", "inference"],
        "setup adc",
    )
    .await;
    let adc_path = u.p("gcloud/application_default_credentials.json");
    let adc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&adc_path).unwrap()).unwrap();
    assert_eq!(adc["type"], "external_account");
    assert!(out.contains(&adc_path.display().to_string()), "{out}");
    // The file is the shim's contract from the library, not a shim run: a touchgate with no
    // touchgate-shim beside it writes it too, byte for byte what `touchgate-shim adc-file`
    // prints for the same address and profile.
    let lone = tempfile::tempdir().unwrap();
    copy_program(&bin("touchgate"), &lone.path().join("touchgate"));
    let c = touchgate(&agent, &u, &["setup", "adc", "--profile", "inference"]);
    let mut alone = Command::new(lone.path().join("touchgate"));
    alone.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => alone.env(k, v),
            None => alone.env_remove(k),
        };
    }
    ok(
        &run(alone).await,
        "setup adc without touchgate-shim beside touchgate",
    );
    let printed = Command::new(shim_path())
        .args(["adc-file", "--profile", "inference"])
        .env("TOUCHGATE_SHIM_ADDR", "127.0.0.1:9")
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", stderr(&printed));
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&adc_path).unwrap()),
        String::from_utf8_lossy(&printed.stdout)
    );

    // docker: credHelpers, other keys kept; run twice (the second keeps the original backup).
    let docker = u.p("docker/config.json");
    let o = run(touchgate(&agent, &u, &["setup", "docker"])).await;
    let out = ok(&o, "setup docker");
    // The helper link: beside the user's other programs, to the shim beside touchgate.
    let link = home.join(".local/bin/docker-credential-touchgate");
    assert_eq!(
        std::fs::read_link(&link).ok(),
        Some(shim_path()),
        "{} is a link to the shim",
        link.display()
    );
    assert!(
        out.contains(&link.display().to_string()),
        "says where: {out}"
    );
    let warning = stderr(&o);
    assert_eq!(warning.trim().lines().count(), 1, "one line: {warning}");
    assert!(
        warning.contains(&format!(
            "{} is not on PATH",
            home.join(".local/bin").display()
        )),
        "{warning}"
    );
    // Found on PATH the way docker looks helpers up, and it is the shim.
    let o = run({
        let mut c = Command::new("sh");
        c.args(["-c", "docker-credential-touchgate version"]).env(
            "PATH",
            format!("{}:/usr/bin:/bin", home.join(".local/bin").display()),
        );
        c
    })
    .await;
    assert!(ok(&o, "docker-credential-touchgate version").contains("touchgate"));
    let out = touchgate_ok(
        &agent,
        &u,
        &["setup", "docker", "--host", "me-west1-docker.pkg.dev"],
        "setup docker again",
    )
    .await;
    assert!(
        out.contains("credHelpers[me-west1-docker.pkg.dev] = touchgate"),
        "{out}"
    );
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&docker).unwrap()).unwrap();
    for h in [
        "gcr.io",
        "us-docker.pkg.dev",
        "europe-docker.pkg.dev",
        "asia-docker.pkg.dev",
        "us-central1-docker.pkg.dev",
        "me-west1-docker.pkg.dev",
    ] {
        assert_eq!(d["credHelpers"][h], "touchgate", "{h}: {d}");
    }
    assert_eq!(d["credsStore"], "desktop");
    assert_eq!(d["auths"]["ghcr.io"]["auth"], "dXNlcjpwYXNz");

    // kubectl: a user with the exec plugin; the cluster and the user's own user kept.
    let out = touchgate_ok(
        &agent,
        &u,
        &["setup", "kubectl", "--profile", "inference"],
        "setup kubectl",
    )
    .await;
    assert!(out.contains("touchgate-inference"), "{out}");
    let kube = u.p("kube/config");
    let o = run({
        let mut c = Command::new("kubectl");
        c.args([
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.users[?(@.name==\"touchgate-inference\")].user.exec}",
            &format!("--kubeconfig={}", kube.display()),
        ]);
        c
    })
    .await;
    let exec: serde_json::Value = serde_json::from_str(&ok(&o, "kubectl config view")).unwrap();
    assert_eq!(
        exec["command"],
        shim_path().display().to_string(),
        "an absolute path: GUI apps run kubectl without the user's PATH"
    );
    assert_eq!(
        exec["args"],
        serde_json::json!(["kubectl-credential", "--profile", "inference"])
    );
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(exec["interactiveMode"], "Never");
    let k = std::fs::read_to_string(&kube).unwrap();
    assert!(
        k.contains("https://127.0.0.1:6443") && k.contains("name: me"),
        "{k}"
    );

    // The backups are where promised.
    let backups = home.join(".local/state/touchgate/setup-backups");
    for t in ["gcloud", "adc", "docker", "kubectl"] {
        assert!(backups.join(t).join("manifest.json").exists(), "{t}");
    }

    // Undo everything: byte-identical, and nothing new left behind.
    for t in ["kubectl", "docker", "adc", "gcloud"] {
        let out = touchgate_ok(&agent, &u, &["setup", "--undo", t], "setup --undo").await;
        assert!(
            out.contains("restored") || out.contains("removed"),
            "{t}: {out}"
        );
    }
    let after = u.snapshot();
    assert_eq!(
        after.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        before.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        "the same files exist as before"
    );
    for ((p, a), (_, b)) in after.iter().zip(&before) {
        assert!(a == b, "{} is byte-identical to before", p.display());
    }
    assert!(
        !home.join(".config/touchgate").exists(),
        "created dirs removed"
    );
    assert!(!backups.join("gcloud").exists(), "backup deleted");
    assert!(
        !home.join(".local/bin").exists(),
        "the helper link and the directory setup made for it are gone"
    );

    // A second undo has nothing to do.
    let out = touchgate_ok(&agent, &u, &["setup", "--undo", "docker"], "second undo").await;
    assert!(out.contains("nothing to undo"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setup_on_an_empty_home_is_undone_to_empty() {
    let (emu, _key) = emulator().await;
    let agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "every-token", ""));
    let u = UserDirs::empty();
    let bin_dir = u.p("home/.local/bin");
    for t in ["gcloud", "adc", "docker", "kubectl"] {
        let mut c = touchgate(&agent, &u, &["setup", t]);
        c.env("PATH", format!("/usr/bin:{}:/bin", bin_dir.display()));
        let o = run(c).await;
        ok(&o, t);
        assert_eq!(
            stderr(&o),
            "",
            "{t}: no warning with the link's directory on PATH"
        );
    }
    assert!(bin_dir.join("docker-credential-touchgate").is_symlink());
    assert!(u.p("docker/config.json").exists());
    assert!(u.p("kube/config").exists());
    assert!(u.p("gcloud/configurations/config_touchgate").exists());
    // In setup order: gcloud's undo cannot remove the gcloud dir yet (adc's file
    // is in it); adc's undo does, once it is empty.
    for t in ["gcloud", "adc", "docker", "kubectl"] {
        touchgate_ok(&agent, &u, &["setup", "--undo", t], t).await;
    }
    assert_eq!(u.snapshot(), vec![], "every file setup made is gone");
    let backups = u.p("home/.local/state/touchgate/setup-backups");
    assert!(!backups.join("pending-dirs.json").exists());
    for d in ["gcloud", "docker", "kube", "home/.local/bin"] {
        assert!(!u.p(d).exists(), "{d} (created by setup) is gone");
    }
}

/// A `docker-credential-touchgate` setup did not make is never replaced, nor
/// removed by `--undo`: a file there, or one put in place of setup's link.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setup_docker_leaves_a_helper_it_did_not_make() {
    let (emu, _key) = emulator().await;
    let agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "every-token", ""));
    let u = UserDirs::new();
    let link = u.p("home/.local/bin/docker-credential-touchgate");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::fs::write(&link, "#!/bin/sh\necho mine\n").unwrap();
    let before = u.snapshot();
    let o = run(touchgate(&agent, &u, &["setup", "docker"])).await;
    let line = assert_one_line_error(&o, &link.display().to_string());
    assert!(line.contains("not made by touchgate setup"), "{line}");
    assert_eq!(u.snapshot(), before, "nothing changed");

    // Setup's link, replaced by the user afterwards: undo keeps the user's.
    std::fs::remove_file(&link).unwrap();
    touchgate_ok(&agent, &u, &["setup", "docker"], "setup docker").await;
    std::fs::remove_file(&link).unwrap();
    std::fs::write(&link, "#!/bin/sh\necho mine\n").unwrap();
    let out = touchgate_ok(&agent, &u, &["setup", "--undo", "docker"], "undo").await;
    assert_eq!(std::fs::read(&link).unwrap(), b"#!/bin/sh\necho mine\n");
    assert!(out.contains(&format!("kept {}", link.display())), "{out}");
    assert_eq!(
        std::fs::read(u.p("docker/config.json")).unwrap(),
        before
            .iter()
            .find(|(p, _)| *p == u.p("docker/config.json"))
            .unwrap()
            .1,
        "docker's config restored"
    );

    // A bin directory another user owns, or others may write to: refused
    // (they could swap the helper docker hands registry tokens to).
    let before = u.snapshot();
    let theirs = u.p("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let shared = u.p("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (dir, why) in [
        (theirs.join("bin"), "belongs to uid 65534, not you (uid 0)"),
        (shared.clone(), "is writable by other users (mode 777)"),
    ] {
        let mut c = touchgate(&agent, &u, &["setup", "docker"]);
        c.env("XDG_BIN_HOME", &dir);
        let line = assert_one_line_error(&run(c).await, why);
        assert!(line.contains("refusing"), "{line}");
    }
    assert!(!theirs.join("bin").exists() && std::fs::read_dir(&shared).unwrap().next().is_none());
    assert_eq!(u.snapshot(), before, "nothing changed");

    // A touchgate with no shim beside it names the missing file, links nothing.
    std::fs::remove_file(&link).unwrap();
    let before = u.snapshot();
    let alone = tempfile::tempdir().unwrap();
    let exe = alone.path().join("touchgate");
    copy_program(&bin("touchgate"), &exe);
    for t in ["docker", "kubectl"] {
        let mut c = Command::new(&exe);
        c.args(["setup", t]).envs(agent.env()).envs(u.env());
        let line = assert_one_line_error(
            &run(c).await,
            &format!(
                "{} is missing",
                alone.path().join("touchgate-shim").display()
            ),
        );
        assert!(line.contains("install it there"), "{t}: {line}");
    }
    assert_eq!(u.snapshot(), before, "nothing changed");
}

fn exec_cmd(agent: &AgentProc, u: &UserDirs, args: &[&str]) -> Command {
    let mut c = touchgate(agent, u, &["exec"]);
    c.args(args);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_runs_the_command_against_a_private_shim() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let u = UserDirs::new();

    // The metadata token endpoint answers the agent's token.
    let o = run(exec_cmd(
        &agent,
        &u,
        &[
            "--profile",
            "inference",
            "--",
            "sh",
            "-c",
            "curl -sf -H 'Metadata-Flavor: Google' http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/token",
        ],
    ))
    .await;
    let body: serde_json::Value = serde_json::from_str(&ok(&o, "exec curl")).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_minted_by_agent(&emu, &body);

    // The environment; the private shim is gone once exec returns.
    let o = run(exec_cmd(
        &agent,
        &u,
        &[
            "--",
            "sh",
            "-c",
            "echo $GCE_METADATA_ROOT $GCE_METADATA_HOST $GCE_METADATA_IP $GOOGLE_CLOUD_PROJECT $CLOUDSDK_CORE_PROJECT $CLOUDSDK_CONFIG",
        ],
    ))
    .await;
    let out = ok(&o, "exec echo");
    let v: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(v.len(), 6, "{out}");
    assert!(
        v[0].starts_with("127.0.0.1:") && v[0] != "127.0.0.1:9",
        "{out}"
    );
    assert!(v[1] == v[0] && v[2] == v[0], "{out}");
    assert_eq!(&v[3..5], ["touchgate-test", "touchgate-test"]);
    assert_eq!(
        v[5],
        u.p("gcloud").display().to_string(),
        "CLOUDSDK_CONFIG untouched"
    );
    let addr: std::net::SocketAddr = v[0].parse().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the private shim was stopped"
    );

    // --project wins.
    let o = run(exec_cmd(
        &agent,
        &u,
        &[
            "--project",
            "other",
            "--",
            "sh",
            "-c",
            "echo $GOOGLE_CLOUD_PROJECT",
        ],
    ))
    .await;
    assert_eq!(ok(&o, "exec --project").trim(), "other");

    // Exit codes, and 128+N for a signal death.
    let o = run(exec_cmd(&agent, &u, &["--", "sh", "-c", "exit 7"])).await;
    assert_eq!(o.status.code(), Some(7));
    let o = run(exec_cmd(&agent, &u, &["--", "sh", "-c", "kill -TERM $$"])).await;
    assert_eq!(o.status.code(), Some(143));
    let o = run(exec_cmd(&agent, &u, &["--", "/nonexistent/program"])).await;
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("cannot run /nonexistent/program"),
        "{}",
        stderr(&o)
    );

    // An unknown profile: a one-line error, nothing run.
    let o = run(exec_cmd(&agent, &u, &["--profile", "nope", "--", "true"])).await;
    assert_one_line_error(&o, "no profile nope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_forwards_sigterm_to_the_command() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let u = UserDirs::new();
    let mut child = exec_cmd(
        &agent,
        &u,
        &[
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let line = first_line(&mut child);
        assert_eq!(line.trim(), "ready");
        sigterm(child.id());
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        status.code(),
        Some(42),
        "the command got SIGTERM and its code came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_uses_a_running_shim() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let u = UserDirs::new();
    for extra in [&[][..], &["--profile", "inference"][..]] {
        let mut c = exec_cmd(&agent, &u, extra);
        c.args(["--", "sh", "-c", "echo $GCE_METADATA_HOST"])
            .env("TOUCHGATE_SHIM_ADDR", &shim.addr);
        let o = run(c).await;
        assert_eq!(ok(&o, "exec").trim(), shim.addr, "{extra:?}");
    }
}

/// The real gcloud with a private config dir (from `u`), Vertex at the emulator, no prompts.
fn gcloud(agent: &AgentProc, u: &UserDirs, via_exec: bool, args: &[&str]) -> Command {
    let mut c = if via_exec {
        let mut c = exec_cmd(agent, u, &["--profile", "inference", "--", "gcloud"]);
        c.args(args);
        c
    } else {
        let mut c = Command::new("gcloud");
        c.args(args).envs(u.env());
        c
    };
    // Never the real metadata server (exec overrides it with the shim).
    touchgate_tests::gcloud::isolate(&mut c);
    c
}

/// `gcloud config set api_endpoint_overrides/aiplatform ENDPOINT`.
fn point_gcloud_at(agent: &AgentProc, u: &UserDirs, endpoint: &str) -> Command {
    gcloud(
        agent,
        u,
        false,
        &[
            "config",
            "set",
            "api_endpoint_overrides/aiplatform",
            endpoint,
        ],
    )
}

const MODELS_LIST: &[&str] = &[
    "ai",
    "models",
    "list",
    "--region=us-central1",
    "--project=touchgate-test",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcloud_under_exec_and_after_setup_gcloud_calls_vertex_with_the_agents_token() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let u = UserDirs::empty();
    let endpoint = format!("{}/", emu.base_url());

    // 1. `touchgate exec -- gcloud …` (metadata route, private shim).
    let o = run(point_gcloud_at(&agent, &u, &endpoint)).await;
    ok(&o, "gcloud config set");
    // That run cached "not on GCE" for 10 minutes.
    let _ = std::fs::remove_file(u.p("gcloud/gce"));
    let o = run(gcloud(&agent, &u, true, MODELS_LIST)).await;
    ok(&o, "touchgate exec -- gcloud ai models list");
    assert!(
        !vertex_calls_with_agent_token(&emu).is_empty(),
        "Vertex saw the agent's token: {}",
        calls_summary(&emu)
    );

    // 2. `touchgate setup gcloud` + CLOUDSDK_ACTIVE_CONFIG_NAME=touchgate (file route, running shim).
    // A fresh gcloud config dir: gcloud's token cache must not answer for the shim.
    emu.state().clear_calls();
    let u = UserDirs::empty();
    let shim = ShimProc::start(&agent.socket, &[]);
    let mut c = touchgate(&agent, &u, &["setup", "gcloud", "--profile", "inference"]);
    c.env("TOUCHGATE_SHIM_ADDR", &shim.addr);
    ok(&run(c).await, "setup gcloud");
    let mut c = point_gcloud_at(&agent, &u, &endpoint);
    c.env("CLOUDSDK_ACTIVE_CONFIG_NAME", "touchgate");
    ok(&run(c).await, "gcloud config set (touchgate configuration)");
    let mut c = gcloud(
        &agent,
        &u,
        false,
        &["ai", "models", "list", "--region=us-central1"],
    );
    c.env("CLOUDSDK_ACTIVE_CONFIG_NAME", "touchgate");
    let o = run(c).await;
    assert!(
        o.status.success(),
        "gcloud with the touchgate configuration: {}\nshim: {}",
        stderr(&o),
        shim.stderr()
    );
    assert!(
        vertex_calls_with_agent_token(&emu)
            .iter()
            .any(|c| c.path == "/v1/projects/touchgate-test/locations/us-central1/models"),
        "Vertex saw the agent's token, the project came from the configuration: {}",
        calls_summary(&emu)
    );
}

/// Another user listens on the shared shim address first (the default port,
/// here a free one named by TOUCHGATE_SHIM_ADDR): `exec` does not use it but
/// starts a private shim, `setup adc|gcloud` refuse to point files at it, and
/// not a byte reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shim_port_another_user_holds_is_never_used() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let u = UserDirs::new();
    let imp = Impostor::start("shim", "127.0.0.1:0");

    let mut c = exec_cmd(
        &agent,
        &u,
        &[
            "--",
            "sh",
            "-c",
            "echo $GCE_METADATA_HOST; curl -sf -H 'Metadata-Flavor: Google' http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/token",
        ],
    );
    c.env("TOUCHGATE_SHIM_ADDR", &imp.at);
    let o = run(c).await;
    let out = ok(&o, "exec");
    let (host, body) = out.split_once('\n').unwrap();
    assert_ne!(
        host, imp.at,
        "the child was pointed at the other user's port"
    );
    assert!(!body.contains("impostor"), "{body}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_minted_by_agent(&emu, &body);
    assert!(
        stderr(&o).contains(&format!("{} is held by uid 65534", imp.at)),
        "{}",
        stderr(&o)
    );

    let before = u.snapshot();
    for target in ["adc", "gcloud"] {
        let mut c = touchgate(&agent, &u, &["setup", target]);
        c.env("TOUCHGATE_SHIM_ADDR", &imp.at);
        let o = run(c).await;
        let line = assert_one_line_error(&o, &format!("{} is held by uid 65534", imp.at));
        assert!(line.contains("not by you (uid 0)"), "{line}");
    }
    assert_eq!(u.snapshot(), before, "setup wrote nothing");
    let got = imp.finish();
    assert!(
        got.is_empty(),
        "bytes reached the other user's port: {got:?}"
    );
}

/// `body`'s `access_token` is one the agent minted through the emulator.
fn assert_minted_by_agent(
    emu: &touchgate_tests::emulator::EmulatorHandle,
    body: &serde_json::Value,
) {
    let token = body["access_token"].as_str().expect("a token");
    let fp = touchgate::secret::fingerprint(token.as_bytes());
    assert!(
        emu.state()
            .calls()
            .iter()
            .any(|c| c.kind == CallKind::GenerateAccessToken
                && c.issued_fingerprint.as_deref() == Some(fp.as_str())),
        "the token is one the agent minted"
    );
}
