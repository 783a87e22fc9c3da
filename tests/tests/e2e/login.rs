//! `touchgate login` (installed-app flow with PKCE and loopback redirect, and
//! the device flow) and `touchgate import` of gcloud's ADC file, end to end: the
//! real `touchgate` CLI and `touchgate-agent`, the Google emulator on 127.0.0.1
//! playing the authorization server. The test is the browser: it reads the URL
//! the CLI prints, visits it without following the redirect, then follows the
//! redirect to the CLI's loopback listener. Afterwards no secret may be on disk.
//!
//! The CLI reads `[login]` from its own `TOUCHGATE_CONFIG`; the tests give it a
//! file of its own (under the test's HOME) while the agent keeps its config.

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{all_files, bin, config_text, contains, AgentProc};
use reqwest::header::LOCATION;
use reqwest::redirect::Policy;
use serde_json::Value;
use tempfile::TempDir;
use touchgate_tests::emulator::{CallKind, DEVICE_CODE_EXPIRES_IN};
use touchgate_tests::{Emulator, EmulatorHandle, EmulatorState};

const USER: &str = "ada@example.com";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long a test waits for a line or an exit before it gives up (never a sleep).
const PATIENCE: Duration = Duration::from_secs(60);

struct Env {
    emu: EmulatorHandle,
    state: std::sync::Arc<EmulatorState>,
    agent: AgentProc,
    /// The CLI's HOME (scanned for secrets).
    home: TempDir,
    /// Files the user brought (client secret downloads): not scanned.
    outside: TempDir,
}

/// An emulator, an agent with the soft key enrolled and a profile `user` for the
/// credential `user` (no service account), an empty HOME.
async fn env() -> Env {
    env_with(true).await
}

async fn env_with(enrol: bool) -> Env {
    let emu = Emulator::start("127.0.0.1:0").await.unwrap();
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "")
        + "\n[profiles.user]\ncredential = \"user\"\ntouch = \"every-token\"\n";
    let agent = AgentProc::start(&cfg);
    if enrol {
        let o = agent.cli(&["enroll"]);
        assert!(o.status.success(), "enroll: {}", common::stderr(&o));
    }
    let env = Env {
        state: emu.state(),
        emu,
        agent,
        home: tempfile::tempdir().unwrap(),
        outside: tempfile::tempdir().unwrap(),
    };
    std::fs::create_dir_all(env.cli_config().parent().unwrap()).unwrap();
    env
}

impl Env {
    /// The CLI's config file (`[login]` lives here).
    fn cli_config(&self) -> PathBuf {
        self.home.path().join(".config/touchgate/config.toml")
    }

    fn write_login_config(&self, text: &str) {
        std::fs::write(self.cli_config(), text).unwrap();
    }

    /// The `touchgate` CLI with HOME, its config and no browser or proxies.
    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("touchgate"));
        c.args(args)
            .envs(self.agent.env())
            .env("TOUCHGATE_CONFIG", self.cli_config())
            .env("HOME", self.home.path())
            .env("TOUCHGATE_NO_BROWSER_OPEN", "1")
            .env_remove("CLOUDSDK_CONFIG")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        for p in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            c.env_remove(p);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, args: &[&str], extra_env: &[(&str, &Path)]) -> std::process::Output {
        let mut c = self.cli(args);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// A Desktop-app OAuth client at the emulator, its JSON download written
    /// outside the scanned dirs; returns (client_id, client_secret, file).
    fn oauth_client(&self) -> (String, String, PathBuf) {
        let (id, secret) = self.state.add_oauth_client();
        let f = self.outside.path().join("client_secret_emu.json");
        std::fs::write(&f, self.state.client_secret_json(&id, &secret)).unwrap();
        (id, secret, f)
    }

    /// `touchgate token --profile user`, checked at the emulator: the principal.
    fn user_token(&self) -> (String, String) {
        let o = self.agent.cli(&["token", "--profile", "user"]);
        assert!(o.status.success(), "token: {}", common::stderr(&o));
        let token = common::stdout(&o).trim().to_owned();
        let issued = self
            .state
            .valid_access_token(&token)
            .expect("a token the emulator issued");
        assert!(issued.scopes.iter().any(|s| s == CLOUD_PLATFORM));
        (token, issued.principal)
    }

    /// No file under the agent's dirs (state, config, socket dir, its log) or the
    /// CLI's HOME holds any of `needles` or anything shaped like an emulator
    /// refresh token, access token or client secret (`except` files are the
    /// user's own, there before).
    fn assert_no_secrets_on_disk(&self, needles: &[&str], except: &[PathBuf]) {
        let mut files = all_files(self.agent.dir.path());
        files.extend(all_files(self.home.path()));
        assert!(
            files
                .iter()
                .any(|(p, _)| p.starts_with(self.agent.state_dir())),
            "the agent's state dir has files"
        );
        let shapes = ["1//emu.", "ya29.emu.", "GOCSPX-", "4/0Aemu", "AH-1Ng"];
        for (path, bytes) in &files {
            if except.contains(path) {
                continue;
            }
            for needle in needles.iter().chain(shapes.iter()) {
                assert!(
                    !contains(bytes, needle),
                    "{} holds a secret ({})",
                    path.display(),
                    &needle[..needle.len().min(8)]
                );
            }
        }
    }
}

/// A CLI child whose stdout the test reads line by line as it comes.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Running {
            child,
            lines,
            seen: vec![],
            stderr: Some(stderr),
        }
    }

    /// The first stdout line (from now) that `pred` accepts.
    fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        tokio::task::block_in_place(|| loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let err = self.stderr.take().unwrap().join().unwrap();
                    panic!("no such line ({e:?}); stdout {:?}, stderr {err}", self.seen);
                }
            }
        })
    }

    /// Waits for the exit; (status, whole stdout, stderr).
    fn finish(mut self) -> (ExitStatus, String, String) {
        tokio::task::block_in_place(|| {
            let (tx, rx) = mpsc::channel();
            let mut child = self.child;
            let waiter = std::thread::spawn(move || {
                let status = child.wait().unwrap();
                let _ = tx.send(());
                status
            });
            rx.recv_timeout(PATIENCE)
                .expect("the CLI exits (it did not within the patience)");
            let status = waiter.join().unwrap();
            self.seen.extend(self.lines.iter());
            let err = self.stderr.take().unwrap().join().unwrap();
            (status, self.seen.join("\n"), err)
        })
    }
}

/// A failure with exactly one error line on stderr (touch prompts aside)
/// containing `needle`; returns the line.
fn assert_one_line_error(status: ExitStatus, stderr: &str, needle: &str) -> String {
    assert!(!status.success(), "expected a failure; stderr {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("touch your security key"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line, got {stderr:?}");
    assert!(lines[0].starts_with("touchgate: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "error {:?} should contain {needle:?}",
        lines[0]
    );
    lines[0].to_owned()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn query(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// The URL the installed-app flow prints.
fn auth_url(run: &mut Running) -> String {
    run.wait_line(|l| l.trim_start().starts_with("http") && l.contains("client_id="))
        .trim()
        .to_owned()
}

/// The device flow's `Visit URL and enter code CODE` → (URL, CODE).
fn device_prompt(run: &mut Running) -> (String, String) {
    let line = run.wait_line(|l| l.contains("enter code"));
    let rest = line
        .strip_prefix("Visit ")
        .expect("Visit URL and enter code CODE");
    let (url, code) = rest.split_once(" and enter code ").unwrap();
    (url.to_owned(), code.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installed_app_login_drives_the_redirect_and_seals_the_refresh_token() {
    let t = env().await;
    let (client_id, client_secret, secret_file) = t.oauth_client();
    t.state.set_login_user(USER);
    // No [login] table: the endpoints come from the client_secret file.
    let mut run = Running::spawn(t.cli(&[
        "login",
        "--client-secret-file",
        secret_file.to_str().unwrap(),
        "--name",
        "user",
    ]));
    let url = auth_url(&mut run);
    assert!(url.starts_with(&format!("{}/o/oauth2/auth?", t.emu.base_url())));
    let q = query(&url);
    assert_eq!(q["client_id"], client_id);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert!(q["state"].len() >= 22, "an unguessable state");
    assert!(q["scope"].split(' ').any(|s| s == CLOUD_PLATFORM));
    let redirect_uri = q["redirect_uri"].clone();
    assert!(
        redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with('/'),
        "{redirect_uri}"
    );

    let http = http();
    // Strays at the loopback listener are answered and ignored.
    let r = http
        .get(format!("{redirect_uri}favicon.ico"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("{redirect_uri}?state=forged&code=4%2Fforged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a redirect of another login");

    // The browser: the authorization endpoint answers 302 to the loopback.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with(&redirect_uri), "{location}");
    let back = query(&location);
    assert_eq!(back["state"], q["state"]);
    let code = back["code"].clone();
    let r = http.get(&location).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("return to the terminal"));

    let (status, out, err) = run.finish();
    assert!(status.success(), "login failed: {err}");
    assert!(
        out.contains(&format!(
            "logged in as {USER}; refresh token sealed as \"user\" under the enrolled key"
        )),
        "{out}"
    );
    assert!(
        err.contains("wrong state"),
        "the forged redirect is reported: {err}"
    );

    // The sealed credential mints for the user who logged in.
    let (token, principal) = t.user_token();
    assert_eq!(principal, USER);
    let calls = t.state.calls();
    let auth = calls
        .iter()
        .find(|c| c.kind == CallKind::Authorize && c.status == 302)
        .expect("the authorization call");
    assert!(auth
        .query
        .as_deref()
        .unwrap()
        .contains("code_challenge_method=S256"));
    assert!(calls
        .iter()
        .any(|c| c.grant_type.as_deref() == Some("authorization_code")
            && c.status == 200
            && c.principal.as_deref() == Some(USER)));
    assert!(calls
        .iter()
        .any(|c| c.grant_type.as_deref() == Some("refresh_token")
            && c.status == 200
            && c.principal.as_deref() == Some(USER)));

    let refresh = t.state.login_refresh_tokens(USER);
    assert_eq!(refresh.len(), 1, "one login, one refresh token");
    for secret in [&refresh[0], &client_secret, &code] {
        assert!(!out.contains(secret.as_str()) && !err.contains(secret.as_str()));
    }
    t.assert_no_secrets_on_disk(&[&refresh[0], &client_secret, &token, &code], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installed_app_login_declined_in_the_browser() {
    let t = env().await;
    let (_, _, secret_file) = t.oauth_client();
    t.state.deny_login();
    let mut run = Running::spawn(t.cli(&[
        "login",
        "--client-secret-file",
        secret_file.to_str().unwrap(),
    ]));
    let url = auth_url(&mut run);
    let http = http();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(query(&location)["error"], "access_denied");
    assert_eq!(http.get(&location).send().await.unwrap().status(), 200);
    let (status, _, err) = run.finish();
    assert_one_line_error(
        status,
        &err,
        "access was declined in the browser: run touchgate login again and allow access",
    );
    assert!(t.state.login_refresh_tokens(USER).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn device_flow_with_gclouds_client_from_the_adc_file() {
    let t = env().await;
    // The user's gcloud ADC file: its OAuth client (and token_uri) are used.
    let adc = t.state.add_authorized_user("old-login@example.com");
    let adc_file = t
        .home
        .path()
        .join(".config/gcloud/application_default_credentials.json");
    std::fs::create_dir_all(adc_file.parent().unwrap()).unwrap();
    std::fs::write(&adc_file, &adc).unwrap();
    let adc: Value = serde_json::from_str(&adc).unwrap();
    t.write_login_config(&format!(
        "[login]\ndevice_auth_uri = \"{}/device/code\"\n",
        t.emu.base_url()
    ));
    t.state.set_device_interval(1);

    let mut run = Running::spawn(t.cli(&["login", "--no-browser", "--name", "user"]));
    let (url, code) = device_prompt(&mut run);
    assert_eq!(url, format!("{}/device", t.emu.base_url()));
    assert_eq!(t.state.pending_user_codes(), vec![code.clone()]);
    assert!(t.state.approve_device(&code, USER));
    let (status, out, err) = run.finish();
    assert!(status.success(), "login failed: {err}");
    assert!(
        out.contains(&format!(
            "logged in as {USER}; refresh token sealed as \"user\" under the enrolled key"
        )),
        "{out}"
    );
    let (token, principal) = t.user_token();
    assert_eq!(principal, USER);
    let calls = t.state.calls();
    let device_grant = "urn:ietf:params:oauth:grant-type:device_code";
    assert!(calls
        .iter()
        .any(|c| c.kind == CallKind::DeviceCode && c.status == 200));
    assert!(calls
        .iter()
        .any(|c| c.grant_type.as_deref() == Some(device_grant) && c.status == 200));
    assert!(
        !calls
            .iter()
            .any(|c| c.grant_type.as_deref() == Some(device_grant) && c.status == 403),
        "the CLI honours the interval: no slow_down"
    );

    let refresh = t.state.login_refresh_tokens(USER);
    assert_eq!(refresh.len(), 1);
    let client_secret = adc["client_secret"].as_str().unwrap();
    assert!(!out.contains(&refresh[0]) && !err.contains(&refresh[0]));
    assert!(!out.contains(client_secret) && !err.contains(client_secret));
    t.assert_no_secrets_on_disk(&[&refresh[0], client_secret, &token], &[adc_file]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn device_flow_denied_expired_and_refused() {
    let t = env().await;
    let (client_id, _, secret_file) = t.oauth_client();
    let secret_file = secret_file.to_str().unwrap().to_owned();
    t.write_login_config(&format!(
        "[login]\ndevice_auth_uri = \"{}/device/code\"\n",
        t.emu.base_url()
    ));
    t.state.set_device_interval(1);
    let login = [
        "login",
        "--no-browser",
        "--client-secret-file",
        secret_file.as_str(),
    ];

    // Declined on the verification page.
    let mut run = Running::spawn(t.cli(&login));
    let (_, code) = device_prompt(&mut run);
    assert!(t.state.deny_device(&code));
    let (status, _, err) = run.finish();
    assert_one_line_error(
        status,
        &err,
        &format!(
            "access was declined for code {code}: run touchgate login --no-browser again and \
             allow access"
        ),
    );

    // Nobody acts before the code expires (by the emulator's clock).
    let mut run = Running::spawn(t.cli(&login));
    let (_, code) = device_prompt(&mut run);
    t.state
        .advance(Duration::from_secs(DEVICE_CODE_EXPIRES_IN + 1));
    let (status, _, err) = run.finish();
    assert_one_line_error(
        status,
        &err,
        &format!(
            "code {code} expired before it was approved: run touchgate login --no-browser again"
        ),
    );

    // A client the server does not know.
    let unknown = t.outside.path().join("client_secret_unknown.json");
    std::fs::write(
        &unknown,
        t.state
            .client_secret_json("404-unknown.apps.googleusercontent.com", "GOCSPX-nope"),
    )
    .unwrap();
    let o = t.run(
        &[
            "login",
            "--no-browser",
            "--client-secret-file",
            unknown.to_str().unwrap(),
        ],
        &[],
    );
    assert_one_line_error(
        o.status,
        &common::stderr(&o),
        &format!(
            "the device endpoint refused OAuth client 404-unknown.apps.googleusercontent.com: \
             invalid_client (The OAuth client was not found.); check the client_id in {}",
            unknown.display()
        ),
    );
    assert!(!common::stderr(&o).contains("GOCSPX"));

    // A wrong client secret: refused when polling.
    let wrong = t.outside.path().join("client_secret_wrong.json");
    std::fs::write(
        &wrong,
        t.state.client_secret_json(&client_id, "GOCSPX-wrong"),
    )
    .unwrap();
    let mut run = Running::spawn(t.cli(&[
        "login",
        "--no-browser",
        "--client-secret-file",
        wrong.to_str().unwrap(),
    ]));
    let (_, code) = device_prompt(&mut run);
    assert!(t.state.approve_device(&code, USER));
    let (status, _, err) = run.finish();
    assert_one_line_error(
        status,
        &err,
        &format!("the token endpoint refused OAuth client {client_id}: invalid_client"),
    );

    // No client anywhere: no file, no [login], no ADC file.
    t.write_login_config("");
    let o = t.run(&["login"], &[]);
    assert_one_line_error(
        o.status,
        &common::stderr(&o),
        "no OAuth client to log in with: pass --client-secret-file",
    );
    assert!(t.state.login_refresh_tokens(USER).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_needs_an_enrolled_key_and_sane_endpoints() {
    let t = env_with(false).await;
    let (_, _, secret_file) = t.oauth_client();
    let f = secret_file.to_str().unwrap();
    let o = t.run(&["login", "--client-secret-file", f], &[]);
    assert_one_line_error(
        o.status,
        &common::stderr(&o),
        "no security key is enrolled: run touchgate enroll first, then touchgate login",
    );
    assert!(
        !t.state
            .calls()
            .iter()
            .any(|c| c.kind == CallKind::Authorize),
        "nothing asked of Google before the agent can take the token"
    );

    t.write_login_config("[login]\ntoken_uri = \"http://example.com/token\"\n");
    let o = t.run(&["login", "--client-secret-file", f], &[]);
    assert_one_line_error(
        o.status,
        &common::stderr(&o),
        "login token_uri http://example.com/token would carry the client secret and tokens in \
         clear",
    );
    t.write_login_config("[login]\nclient_idd = \"x\"\n");
    let o = t.run(&["login", "--client-secret-file", f], &[]);
    assert_one_line_error(o.status, &common::stderr(&o), "[login]: unknown field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_without_file_takes_gclouds_adc_file_and_deletes_or_keeps_it() {
    let t = env().await;
    let gcloud = t.home.path().join("gcloud-config");
    std::fs::create_dir_all(&gcloud).unwrap();
    let adc_file = gcloud.join("application_default_credentials.json");
    let cloudsdk: &[(&str, &Path)] = &[("CLOUDSDK_CONFIG", &gcloud)];
    let adc = t.state.add_authorized_user(USER);
    let v: Value = serde_json::from_str(&adc).unwrap();
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    let client_secret = v["client_secret"].as_str().unwrap().to_owned();

    // Nothing there yet.
    let o = t.run(&["import", "--name", "user"], cloudsdk);
    assert_one_line_error(
        o.status,
        &common::stderr(&o),
        &format!(
            "no FILE given and no gcloud ADC file at {}: run `gcloud auth application-default \
             login` first",
            adc_file.display()
        ),
    );

    // --delete: sealed, then gone.
    std::fs::write(&adc_file, &adc).unwrap();
    let o = t.run(&["import", "--delete", "--name", "user"], cloudsdk);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = common::stdout(&o);
    assert!(
        out.contains("sealed authorized_user credential as \"user\" under the enrolled key"),
        "{out}"
    );
    assert!(
        out.contains(&format!("deleted {}", adc_file.display())),
        "{out}"
    );
    assert!(!adc_file.exists());
    let (token, principal) = t.user_token();
    assert_eq!(principal, USER);
    t.assert_no_secrets_on_disk(&[&refresh, &client_secret, &token], &[]);

    // --keep: sealed, kept, nothing asked.
    std::fs::write(&adc_file, &adc).unwrap();
    let o = t.run(&["import", "--keep", "--name", "kept"], cloudsdk);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(common::stdout(&o).contains(&format!("kept {}", adc_file.display())));
    assert!(adc_file.exists());

    // No terminal, no flag: kept, with a note.
    let o = t.run(&["import", "--name", "noted"], cloudsdk);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(
        common::stdout(&o).contains(&format!(
            "kept {}: the agent no longer needs it",
            adc_file.display()
        )),
        "{}",
        common::stdout(&o)
    );
    assert!(adc_file.exists());
    std::fs::remove_file(&adc_file).unwrap();

    // Without CLOUDSDK_CONFIG: ~/.config/gcloud.
    let home_adc = t
        .home
        .path()
        .join(".config/gcloud/application_default_credentials.json");
    std::fs::create_dir_all(home_adc.parent().unwrap()).unwrap();
    std::fs::write(&home_adc, &adc).unwrap();
    let o = t.run(&["import", "--delete", "--name", "home"], &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(!home_adc.exists());

    // An unknown type is refused by the agent, and the file stays.
    std::fs::write(&home_adc, r#"{"type":"external_account"}"#).unwrap();
    let o = t.run(&["import", "--delete", "--name", "ext"], &[]);
    assert_one_line_error(
        o.status,
        &common::stderr(&o),
        "unsupported credential type \"external_account\"",
    );
    assert!(home_adc.exists());
    std::fs::remove_file(&home_adc).unwrap();

    let o = t.run(&["import", "-", "--delete"], &[]);
    assert_one_line_error(
        o.status,
        &common::stderr(&o),
        "--delete and --keep need a FILE, not standard input",
    );

    t.assert_no_secrets_on_disk(&[&refresh, &client_secret, &token], &[]);
}

// ---- the emulator's login endpoints, over plain HTTP ----

async fn form(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http.post(url).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn pkce() -> (String, String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::Digest;
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[tokio::test]
async fn emulator_authorization_endpoint_and_code_exchange_check_what_google_checks() {
    let emu = Emulator::start("127.0.0.1:0").await.unwrap();
    let state = emu.state();
    let base = emu.base_url();
    let http = http();
    let (id, secret) = state.add_oauth_client();
    let redirect = "http://127.0.0.1:5555/";
    let (verifier, challenge) = pkce();
    let auth = |client: &str, redirect: &str, scope: &str, offline: bool| {
        let mut u = reqwest::Url::parse(&format!("{base}/o/oauth2/auth")).unwrap();
        u.query_pairs_mut()
            .append_pair("client_id", client)
            .append_pair("redirect_uri", redirect)
            .append_pair("response_type", "code")
            .append_pair("scope", scope)
            .append_pair("state", "st")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if offline {
            u.query_pairs_mut().append_pair("access_type", "offline");
        }
        u.to_string()
    };
    let scope = format!("openid email {CLOUD_PLATFORM}");
    let page = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.text().await.unwrap())
        }
    };

    // Refusals come as Google's error page, not as a redirect.
    let (s, body) = page(auth("nope", redirect, &scope, true)).await;
    assert_eq!(s, 401);
    assert!(body.contains("Error 401: invalid_client"), "{body}");
    let (s, body) = page(auth(&id, "https://attacker.example/cb", &scope, true)).await;
    assert_eq!(s, 400);
    assert!(body.contains("redirect_uri_mismatch"), "{body}");
    let (s, body) = page(auth(&id, redirect, "https://nope/scope", true)).await;
    assert_eq!(s, 400);
    assert!(body.contains("invalid_scope"), "{body}");
    // Nobody signed in: a sign-in page.
    let (s, body) = page(auth(&id, redirect, &scope, true)).await;
    assert_eq!(s, 200);
    assert!(body.contains("Sign in"));

    state.set_login_user(USER);
    let get_code = |offline: bool| {
        let http = http.clone();
        let url = auth(&id, redirect, &scope, offline);
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 302);
            let loc = r.headers()[LOCATION].to_str().unwrap().to_owned();
            assert!(loc.starts_with(redirect));
            let q = query(&loc);
            assert_eq!(q["state"], "st");
            q["code"].clone()
        }
    };
    let token_url = format!("{base}/token");
    let exchange = |code: String, verifier: String, redirect: &'static str, secret: String| {
        let (http, token_url, id) = (http.clone(), token_url.clone(), id.clone());
        async move {
            form(
                &http,
                &token_url,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("client_id", &id),
                    ("client_secret", &secret),
                    ("redirect_uri", redirect),
                    ("code_verifier", &verifier),
                ],
            )
            .await
        }
    };
    let bad = |(s, v): (u16, Value), status: u16, error: &str, description: &str| {
        assert_eq!((s, v["error"].as_str()), (status, Some(error)), "{v}");
        assert_eq!(v["error_description"], description);
    };

    let code = get_code(true).await;
    bad(
        exchange(code, "x".repeat(43), redirect, secret.clone()).await,
        400,
        "invalid_grant",
        "Invalid code verifier.",
    );
    let code = get_code(true).await;
    bad(
        exchange(
            code,
            verifier.clone(),
            "http://127.0.0.1:1/",
            secret.clone(),
        )
        .await,
        400,
        "redirect_uri_mismatch",
        "Bad Request",
    );
    let code = get_code(true).await;
    bad(
        exchange(
            code.clone(),
            verifier.clone(),
            redirect,
            "GOCSPX-wrong".into(),
        )
        .await,
        401,
        "invalid_client",
        "Unauthorized",
    );
    // The code survived a wrong client secret (the client was not authenticated).
    let (s, v) = exchange(code.clone(), verifier.clone(), redirect, secret.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["scope"], scope);
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    let access = v["access_token"].as_str().unwrap();
    assert_eq!(state.valid_access_token(access).unwrap().principal, USER);
    let id_token = v["id_token"].as_str().unwrap();
    let claims = id_token.split('.').nth(1).unwrap();
    let claims: Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        (claims["email"].as_str(), claims["aud"].as_str()),
        (Some(USER), Some(id.as_str()))
    );
    assert_eq!(state.login_refresh_tokens(USER), vec![refresh.clone()]);
    // Codes are single use.
    bad(
        exchange(code, verifier.clone(), redirect, secret.clone()).await,
        400,
        "invalid_grant",
        "Bad Request",
    );
    // The refresh token works with the refresh_token grant.
    let (s, v) = form(
        &http,
        &token_url,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Without access_type=offline: no refresh token.
    let code = get_code(false).await;
    let (s, v) = exchange(code, verifier.clone(), redirect, secret.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("refresh_token").is_none());
    // Expired codes.
    let code = get_code(true).await;
    state.advance(touchgate_tests::emulator::AUTH_CODE_LIFETIME + Duration::from_secs(1));
    bad(
        exchange(code, verifier, redirect, secret.clone()).await,
        400,
        "invalid_grant",
        "Bad Request",
    );
    // Declined: the redirect carries error=access_denied.
    state.deny_login();
    let r = http
        .get(auth(&id, redirect, &scope, true))
        .send()
        .await
        .unwrap();
    let q = query(r.headers()[LOCATION].to_str().unwrap());
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "st")
    );
    // The records never hold the code or the verifier.
    let records = serde_json::to_string(&state.calls()).unwrap();
    assert!(!records.contains("4/0Aemu") && !records.contains(&refresh));
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn emulator_device_flow_pending_slow_down_approval_denial_expiry() {
    let emu = Emulator::start("127.0.0.1:0").await.unwrap();
    let state = emu.state();
    let base = emu.base_url();
    let http = http();
    let (id, secret) = state.add_oauth_client();
    let start = |client: &str| {
        let (http, url, client) = (
            http.clone(),
            format!("{base}/device/code"),
            client.to_owned(),
        );
        async move {
            form(
                &http,
                &url,
                &[
                    ("client_id", &client),
                    ("scope", &format!("openid {CLOUD_PLATFORM}")),
                ],
            )
            .await
        }
    };
    let poll = |device_code: String| {
        let (http, url, id, secret) = (
            http.clone(),
            format!("{base}/token"),
            id.clone(),
            secret.clone(),
        );
        async move {
            let (s, v) = form(
                &http,
                &url,
                &[
                    ("client_id", &id),
                    ("client_secret", &secret),
                    ("device_code", &device_code),
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ],
            )
            .await;
            (s, v["error"].as_str().map(str::to_owned), v)
        }
    };

    let (s, v) = start("unknown-client").await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));

    let (s, d) = start(&id).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["interval"], 5);
    assert_eq!(d["expires_in"], DEVICE_CODE_EXPIRES_IN);
    assert_eq!(d["verification_url"], format!("{base}/device"));
    let device_code = d["device_code"].as_str().unwrap().to_owned();
    let user_code = d["user_code"].as_str().unwrap().to_owned();

    let (s, e, _) = poll(device_code.clone()).await;
    assert_eq!((s, e.as_deref()), (428, Some("authorization_pending")));
    let (s, e, _) = poll(device_code.clone()).await;
    assert_eq!(
        (s, e.as_deref()),
        (403, Some("slow_down")),
        "polled at once"
    );
    // Now the interval is 10 s; 6 s later is still too fast.
    state.advance(Duration::from_secs(6));
    let (_, e, _) = poll(device_code.clone()).await;
    assert_eq!(e.as_deref(), Some("slow_down"));
    assert!(
        state.approve_device(&user_code.to_lowercase(), USER),
        "any case"
    );
    assert!(!state.approve_device(&user_code, USER), "decided already");
    state.advance(Duration::from_secs(16));
    let (s, e, v) = poll(device_code.clone()).await;
    assert_eq!((s, e), (200, None), "{v}");
    let refresh = v["refresh_token"].as_str().unwrap();
    assert_eq!(state.login_refresh_tokens(USER), vec![refresh.to_owned()]);
    assert_eq!(
        state
            .valid_access_token(v["access_token"].as_str().unwrap())
            .unwrap()
            .principal,
        USER
    );
    state.advance(Duration::from_secs(20));
    let (s, e, _) = poll(device_code).await;
    assert_eq!((s, e.as_deref()), (400, Some("invalid_grant")), "used up");

    // Denied.
    let (_, d) = start(&id).await;
    assert!(state.deny_device(d["user_code"].as_str().unwrap()));
    let (s, e, _) = poll(d["device_code"].as_str().unwrap().to_owned()).await;
    assert_eq!((s, e.as_deref()), (403, Some("access_denied")));

    // Expired.
    let (_, d) = start(&id).await;
    state.advance(Duration::from_secs(DEVICE_CODE_EXPIRES_IN));
    let (s, e, _) = poll(d["device_code"].as_str().unwrap().to_owned()).await;
    assert_eq!((s, e.as_deref()), (400, Some("expired_token")));
    assert!(!state.approve_device(d["user_code"].as_str().unwrap(), USER));

    // The admin routes do the same from another process.
    let admin = emu.client();
    admin.set_device_interval(2).await.unwrap();
    let (_, d) = start(&id).await;
    assert_eq!(d["interval"], 2);
    assert!(admin
        .approve_device(d["user_code"].as_str().unwrap(), USER)
        .await
        .unwrap());
    let (_, d) = start(&id).await;
    assert!(admin
        .deny_device(d["user_code"].as_str().unwrap())
        .await
        .unwrap());
    let client_json: Value =
        serde_json::from_str(&admin.add_oauth_client().await.unwrap()).unwrap();
    assert_eq!(
        client_json["installed"]["token_uri"],
        format!("{base}/token")
    );
    admin.set_login_user(USER).await.unwrap();
    assert_eq!(
        state.login_decision(),
        touchgate_tests::emulator::LoginDecision::Approve(USER.into())
    );
    admin.deny_login().await.unwrap();
    assert_eq!(
        state.login_decision(),
        touchgate_tests::emulator::LoginDecision::Deny
    );
    emu.shutdown().await.unwrap();
}

/// `touchgate import` on a terminal (a pty from util-linux `script`) asks
/// before deleting: "y" deletes, Enter keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_asks_before_deleting_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` (for a pty) is not installed");
        return;
    }
    let t = env().await;
    let gcloud = t.home.path().join("gcloud-config");
    std::fs::create_dir_all(&gcloud).unwrap();
    let adc_file = gcloud.join("application_default_credentials.json");
    let adc = t.state.add_authorized_user(USER);
    let on_tty = |name: &str, answer: &str| {
        use std::io::Write;
        let cli = t.cli(&[]);
        let mut c = Command::new("script");
        for (k, v) in cli.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let cmd = format!("{} import --name {name}", bin("touchgate").display());
        let mut child = c
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .env("CLOUDSDK_CONFIG", &gcloud)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(answer.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        drop(stdin);
        (o.status, String::from_utf8_lossy(&o.stdout).into_owned())
    };

    std::fs::write(&adc_file, &adc).unwrap();
    let (status, out) = on_tty("asked-no", "\n");
    assert!(status.success(), "{out}");
    assert!(
        out.contains(&format!("delete {} now? [y/N]", adc_file.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("kept {}", adc_file.display())),
        "{out}"
    );
    assert!(adc_file.exists());

    let (status, out) = on_tty("asked-yes", "y\n");
    assert!(status.success(), "{out}");
    assert!(
        out.contains(&format!("deleted {}", adc_file.display())),
        "{out}"
    );
    assert!(!adc_file.exists());
}
