//! The one-shot helpers of `touchgate-shim`, driven by the real clients:
//! the docker credential helper (its protocol, and the docker CLI looking up
//! registry credentials through it) and the kubectl exec plugin against an
//! emulated HTTPS API server that only accepts tokens the Google emulator issued.

use crate::common;
use crate::shim_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::*;
use shim_common::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;
use touchgate_tests::emulator::EmulatorHandle;

const KUBECTL: &str = "/usr/bin/kubectl";
const DOCKER: &str = "/usr/local/bin/docker";

fn tool(path: &str, name: &str, install: &str) -> PathBuf {
    if Path::new(path).exists() {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| panic!("{name} is missing: install {install}"))
}

/// Run a helper child with `stdin` as its whole input (as docker does), off the runtime.
async fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// The shim linked as `DIR/docker-credential-touchgate`, as docker finds it on PATH.
fn docker_helper(dir: &Path) -> PathBuf {
    let p = dir.join("docker-credential-touchgate");
    std::os::unix::fs::symlink(bin("touchgate-shim"), &p).unwrap();
    p
}

/// Whether the emulator issued `token` to the inference account (and it is live).
fn issued_to_inference(emu: &EmulatorHandle, token: &str) -> bool {
    emu.state()
        .valid_access_token(token)
        .is_some_and(|t| t.principal == INFERENCE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_credential_protocol_round_trip() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let dir = tempfile::tempdir().unwrap();
    let helper = docker_helper(dir.path());
    let call = |action: &str| {
        let mut c = Command::new(&helper);
        c.arg(action)
            .env("TOUCHGATE_SOCK", &agent.socket)
            .env_remove("TOUCHGATE_DOCKER_PROFILE");
        c
    };

    // get: Artifact Registry host, bare, as docker passes it.
    let o = run_with_stdin(call("get"), "us-central1-docker.pkg.dev").await;
    assert!(o.status.success(), "get: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ServerURL"], "us-central1-docker.pkg.dev");
    assert_eq!(v["Username"], "oauth2accesstoken");
    let secret = v["Secret"].as_str().unwrap();
    assert!(
        issued_to_inference(&emu, secret),
        "the secret is a token the agent got for the default profile"
    );
    assert!(
        !agent.stderr().contains(secret),
        "the token never appears in the agent's log"
    );

    // get: gcr.io with a scheme.
    let o = run_with_stdin(call("get"), "https://gcr.io").await;
    assert!(o.status.success(), "get gcr.io: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ServerURL"], "https://gcr.io");
    assert!(issued_to_inference(&emu, v["Secret"].as_str().unwrap()));

    // get: another registry → docker's "not found" text, exit 1, no token asked for.
    let before = emu.state().calls().len();
    let o = run_with_stdin(call("get"), "registry.example.com").await;
    assert!(!o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        "credentials not found in native keychain"
    );
    assert_eq!(emu.state().calls().len(), before, "no upstream call");

    // store (docker login hands over JSON), erase, list.
    let o = run_with_stdin(
        call("store"),
        r#"{"ServerURL":"us-central1-docker.pkg.dev","Username":"oauth2accesstoken","Secret":"x"}"#,
    )
    .await;
    assert!(o.status.success(), "store: {}", stdout(&o));
    let o = run_with_stdin(call("erase"), "us-central1-docker.pkg.dev").await;
    assert!(o.status.success(), "erase: {}", stdout(&o));
    let o = run_with_stdin(call("list"), "").await;
    assert!(o.status.success(), "list: {}", stdout(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.is_object(), "list answers a JSON map: {v}");
    let o = run_with_stdin(call("version"), "").await;
    assert!(o.status.success() && stdout(&o).contains("touchgate"));

    // The subcommand form and the profile variable.
    let mut c = Command::new(bin("touchgate-shim"));
    c.args(["docker-credential", "get"])
        .env("TOUCHGATE_SOCK", &agent.socket)
        .env("TOUCHGATE_DOCKER_PROFILE", "inference");
    let o = run_with_stdin(c, "https://eu.gcr.io/v2/").await;
    assert!(o.status.success(), "subcommand get: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(issued_to_inference(&emu, v["Secret"].as_str().unwrap()));

    // An unknown profile: one line on stderr, exit 1.
    let mut c = call("get");
    c.env("TOUCHGATE_DOCKER_PROFILE", "nope");
    let o = run_with_stdin(c, "us-central1-docker.pkg.dev").await;
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));

    // No agent: one line naming what to do, exit 1.
    let mut c = call("get");
    c.env("TOUCHGATE_SOCK", dir.path().join("no-agent.sock"));
    let o = run_with_stdin(c, "us-central1-docker.pkg.dev").await;
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no touchgate agent"), "{err}");

    // docker-config: credHelpers for the standard hosts.
    let o = Command::new(bin("touchgate-shim"))
        .arg("docker-config")
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["credHelpers"]["us-central1-docker.pkg.dev"], "touchgate");
    assert_eq!(v["credHelpers"]["gcr.io"], "touchgate");
}

/// What the emulated HTTPS server saw: path and whether its credentials were
/// a live token the emulator issued to the inference account.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    connect: Option<String>,
    pub(crate) path: String,
    pub(crate) auth: Option<&'static str>,
    pub(crate) valid: bool,
}

pub(crate) struct TlsServer {
    pub(crate) addr: String,
    pub(crate) ca: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

/// A self-signed certificate for 127.0.0.1 and the Artifact Registry host, made by openssl.
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = tool(
        "/usr/bin/openssl",
        "openssl",
        "openssl (apt-get install openssl)",
    );
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let o = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "1", "-subj", "/CN=touchgate-test"])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:us-central1-docker.pkg.dev",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl req: {}", stderr(&o));
    (cert, key)
}

impl TlsServer {
    /// Serves on 127.0.0.1: a Kubernetes `/version`, `/api` (Bearer) and a registry
    /// `/v2/` (Basic `oauth2accesstoken:TOKEN`), each only with a token the emulator
    /// issued; a `CONNECT` (a proxy request) is accepted and TLS served inside it.
    pub(crate) async fn start(emu: &EmulatorHandle) -> TlsServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = make_cert(dir.path());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(vec![]));
        let (emu, seen2) = (emu.state().clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, emu, seen) = (acceptor.clone(), emu.clone(), seen2.clone());
                tokio::spawn(async move {
                    let mut tcp = BufReader::new(tcp);
                    // A proxy CONNECT first? (docker through HTTPS_PROXY.)
                    let mut first = [0u8; 1];
                    let n = tcp.get_mut().peek(&mut first).await.unwrap_or(0);
                    let mut connect = None;
                    if n == 1 && first[0] == b'C' {
                        let Some(head) = read_head(&mut tcp).await else {
                            return;
                        };
                        connect = head.first().cloned();
                        if tcp
                            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    let Ok(tls) = acceptor.accept(tcp.into_inner()).await else {
                        return;
                    };
                    serve_http(BufReader::new(tls), connect, &emu, &seen).await;
                });
            }
        });
        TlsServer {
            addr,
            ca: cert,
            seen,
            _dir: dir,
        }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The request line and headers, or None at EOF.
async fn read_head<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<Vec<String>> {
    let mut lines = vec![];
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await.ok()? == 0 {
            return None;
        }
        let l = l.trim_end().to_owned();
        if l.is_empty() {
            return Some(lines);
        }
        lines.push(l);
    }
}

const IMAGE_CONFIG: &str =
    r#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;

fn sha256(s: &str) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(s.as_bytes())))
}

/// A schema-2 image manifest with no layers and `IMAGE_CONFIG` as its config.
fn manifest() -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{}"}},"layers":[]}}"#,
        IMAGE_CONFIG.len(),
        sha256(IMAGE_CONFIG)
    )
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: BufReader<S>,
    connect: Option<String>,
    emu: &touchgate_tests::emulator::EmulatorState,
    seen: &Mutex<Vec<Seen>>,
) {
    loop {
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        let mut parts = head.first().map(|l| l.split(' ')).into_iter().flatten();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let header = |name: &str| {
            head.iter().skip(1).find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let (auth, token) = match header("authorization") {
            Some(a) if a.starts_with("Bearer ") => (Some("bearer"), Some(a[7..].to_owned())),
            Some(a) if a.starts_with("Basic ") => {
                let up = base64::engine::general_purpose::STANDARD
                    .decode(&a[6..])
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                match up.split_once(':') {
                    Some(("oauth2accesstoken", p)) => (Some("basic"), Some(p.to_owned())),
                    _ => (Some("basic"), None),
                }
            }
            Some(_) => (Some("other"), None),
            None => (None, None),
        };
        let valid = token.as_deref().is_some_and(|t| {
            emu.valid_access_token(t)
                .is_some_and(|i| i.principal == INFERENCE)
        });
        seen.lock().unwrap().push(Seen {
            connect: connect.clone(),
            path: path.clone(),
            auth,
            valid,
        });
        let registry = path.starts_with("/v2/");
        let (status, ctype, extra, body): (&str, &str, String, String) = if !valid {
            if registry {
                (
                    "401 Unauthorized",
                    "application/json",
                    "Docker-Distribution-API-Version: registry/2.0\r\nWWW-Authenticate: Basic realm=\"touchgate-test\"\r\n".into(),
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.into(),
                )
            } else {
                (
                    "401 Unauthorized",
                    "application/json",
                    String::new(),
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#.into(),
                )
            }
        } else if path == "/v2/" {
            (
                "200 OK",
                "application/json",
                "Docker-Distribution-API-Version: registry/2.0\r\n".into(),
                "{}".into(),
            )
        } else if registry && path.contains("/manifests/") {
            let m = manifest();
            (
                "200 OK",
                "application/vnd.docker.distribution.manifest.v2+json",
                format!(
                    "Docker-Distribution-API-Version: registry/2.0\r\nDocker-Content-Digest: {}\r\n",
                    sha256(&m)
                ),
                m,
            )
        } else if registry && path.ends_with(&format!("/blobs/{}", sha256(IMAGE_CONFIG))) {
            (
                "200 OK",
                "application/octet-stream",
                format!("Docker-Content-Digest: {}\r\n", sha256(IMAGE_CONFIG)),
                IMAGE_CONFIG.into(),
            )
        } else if path == "/version" {
            (
                "200 OK",
                "application/json",
                String::new(),
                r#"{"major":"1","minor":"32","gitVersion":"v1.32.0-touchgate-test","platform":"linux/amd64"}"#.into(),
            )
        } else if path.starts_with("/api") {
            (
                "200 OK",
                "application/json",
                String::new(),
                r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]}"#
                    .into(),
            )
        } else {
            (
                "404 Not Found",
                "application/json",
                String::new(),
                "{}".into(),
            )
        };
        let len = body.len();
        let body = if method == "HEAD" { "" } else { body.as_str() };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n{extra}Content-Length: {len}\r\n\r\n{body}"
        );
        if s.write_all(resp.as_bytes()).await.is_err() || s.flush().await.is_err() {
            return;
        }
    }
}

pub(crate) fn kubeconfig(dir: &Path, server: &TlsServer, user: &str) -> PathBuf {
    let f = dir.join("kubeconfig");
    std::fs::write(
        &f,
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: emulated
  cluster:
    server: https://{addr}
    certificate-authority: {ca}
contexts:
- name: emulated
  context:
    cluster: emulated
    user: touchgate
current-context: emulated
users:
- name: touchgate
  user:
{user}
"#,
            addr = server.addr,
            ca = server.ca.display(),
        ),
    )
    .unwrap();
    f
}

pub(crate) fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(tool(
        KUBECTL,
        "kubectl",
        "kubectl (https://kubernetes.io/docs/tasks/tools/; v1.32 was measured)",
    ));
    c.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_get_raw_uses_the_exec_plugin() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let server = TlsServer::start(&emu).await;
    let dir = tempfile::tempdir().unwrap();

    // The server is a real gate: a made-up token is refused.
    let bogus = kubeconfig(dir.path(), &server, "    token: not-a-google-token");
    let o = run(kubectl(&bogus, dir.path(), &["get", "--raw", "/version"])).await;
    assert!(!o.status.success(), "a bogus token is refused");
    assert!(
        server
            .seen()
            .iter()
            .any(|s| s.auth == Some("bearer") && !s.valid),
        "{:?}",
        server.seen()
    );

    let exec = format!(
        r#"    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: {shim}
      args: [kubectl-credential, --profile, inference]
      interactiveMode: Never
      env:
      - name: TOUCHGATE_SOCK
        value: {sock}"#,
        shim = bin("touchgate-shim").display(),
        sock = agent.socket.display(),
    );
    let kc = kubeconfig(dir.path(), &server, &exec);
    let o = kubectl_version(&kc, dir.path(), &server, &agent).await;
    assert!(
        stdout(&o).contains("v1.32.0-touchgate-test"),
        "{}",
        stdout(&o)
    );
    assert!(
        agent.stderr().contains("kubectl"),
        "the agent knows kubectl asked: {}",
        agent.stderr()
    );
}

/// The plugin's own output, as kubectl reads it (v1, and v1beta1 when asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_credential_prints_an_exec_credential() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    for (info, want) in [
        (None, "client.authentication.k8s.io/v1"),
        (
            Some(
                r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"interactive":false}}"#,
            ),
            "client.authentication.k8s.io/v1beta1",
        ),
    ] {
        let mut c = Command::new(bin("touchgate-shim"));
        c.args(["kubectl-credential", "--profile", "inference"])
            .env("TOUCHGATE_SOCK", &agent.socket);
        match info {
            Some(i) => c.env("KUBERNETES_EXEC_INFO", i),
            None => c.env_remove("KUBERNETES_EXEC_INFO"),
        };
        let o = run(c).await;
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["apiVersion"], want);
        assert_eq!(v["kind"], "ExecCredential");
        let token = v["status"]["token"].as_str().unwrap();
        let issued = emu.state().valid_access_token(token).unwrap();
        let ts = v["status"]["expirationTimestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "UTC: {ts}");
        let exp = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap();
        let issued_exp = time::OffsetDateTime::from(issued.expires_at);
        assert!(
            (exp - issued_exp).whole_seconds().abs() <= 1,
            "expiry {exp} is the token's {issued_exp}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_docker_cli_gets_registry_credentials_from_the_helper() {
    let docker = tool(DOCKER, "docker", "the docker CLI (docker-ce-cli)");
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let server = TlsServer::start(&emu).await;
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    docker_helper(&bin_dir);
    let config = dir.path().join("docker");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        r#"{"credHelpers":{"us-central1-docker.pkg.dev":"touchgate"}}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // No daemon is needed: `docker manifest inspect` talks to the registry from
    // the CLI. The registry host is reached through a proxy on 127.0.0.1 (the
    // emulated registry), so nothing leaves the machine.
    let proxy = format!("http://{}", server.addr);
    let mut c = Command::new(docker);
    c.args([
        "manifest",
        "inspect",
        "--insecure",
        "us-central1-docker.pkg.dev/touchgate-test/repo/image:latest",
    ])
    .env("PATH", &path)
    .env("DOCKER_CONFIG", &config)
    .env("HOME", dir.path())
    .env("HTTPS_PROXY", &proxy)
    .env("HTTP_PROXY", &proxy)
    .env_remove("NO_PROXY")
    .env_remove("no_proxy")
    .env_remove("https_proxy")
    .env_remove("http_proxy")
    .env_remove("DOCKER_HOST")
    .env("TOUCHGATE_SOCK", &agent.socket);
    let o = run(c).await;
    let seen = server.seen();
    assert!(
        o.status.success(),
        "docker manifest inspect: {}\nserver saw: {seen:?}\nagent: {}",
        stderr(&o),
        agent.stderr()
    );
    assert!(stdout(&o).contains("schemaVersion"), "{}", stdout(&o));
    assert!(
        seen.iter().any(|s| s.connect.as_deref()
            == Some("CONNECT us-central1-docker.pkg.dev:443 HTTP/1.1")
            && s.path.contains("/manifests/latest")
            && s.auth == Some("basic")
            && s.valid),
        "the registry saw oauth2accesstoken and the agent's token: {seen:?}"
    );
}

/// `kubectl get --raw /version` with `kc`, which must succeed with the agent's
/// token (the server accepts only tokens the emulator issued); its output.
pub(crate) async fn kubectl_version(
    kc: &Path,
    home: &Path,
    server: &TlsServer,
    agent: &AgentProc,
) -> Output {
    let before = server.seen().len();
    let o = run(kubectl(kc, home, &["get", "--raw", "/version"])).await;
    assert!(
        o.status.success(),
        "kubectl get --raw /version: {}\nagent: {}",
        stderr(&o),
        agent.stderr()
    );
    assert!(
        server.seen()[before..]
            .iter()
            .any(|s| s.path == "/version" && s.auth == Some("bearer") && s.valid),
        "the API server saw the agent's token: {:?}",
        server.seen()
    );
    o
}
