//! `touchgate-shim serve` over HTTP: the metadata routes and their rules, the
//! local STS, and who may call.

use crate::common;
use crate::shim_common;

use std::process::Command;

use common::*;
use reqwest::header::{CONTENT_TYPE, HOST};
use serde_json::Value;
use shim_common::*;
use touchgate_tests::emulator::CallKind;

const MD: &str = "/computeMetadata/v1";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

fn flavor(r: &reqwest::Response) -> Option<&str> {
    r.headers()
        .get("metadata-flavor")
        .and_then(|v| v.to_str().ok())
}

fn ctype(r: &reqwest::Response) -> String {
    r.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn md_get(http: &reqwest::Client, shim: &ShimProc, path: &str) -> reqwest::Response {
    http.get(format!("{}{MD}/{path}", shim.url))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
}

async fn text_of(http: &reqwest::Client, shim: &ShimProc, path: &str) -> String {
    let r = md_get(http, shim, path).await;
    assert_eq!(r.status(), 200, "{path}");
    assert_eq!(flavor(&r), Some("Google"), "{path}");
    assert!(ctype(&r).starts_with("text/plain"), "{path}: {}", ctype(&r));
    r.text().await.unwrap()
}

async fn json_of(http: &reqwest::Client, shim: &ShimProc, path: &str) -> Value {
    let r = md_get(http, shim, path).await;
    assert_eq!(r.status(), 200, "{path}");
    assert_eq!(flavor(&r), Some("Google"), "{path}");
    assert_eq!(ctype(&r), "application/json", "{path}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_routes_answer_like_gce() {
    let (emu, key_json) = emulator().await;
    let agent = shim_common::enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let http = reqwest::Client::new();

    // The ping needs no header, and says who it is.
    let r = http.get(format!("{}/", shim.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(flavor(&r), Some("Google"));

    assert_eq!(text_of(&http, &shim, "project/project-id").await, PROJECT);
    let num = text_of(&http, &shim, "project/numeric-project-id").await;
    assert!(
        num.len() >= 6 && num.bytes().all(|b| b.is_ascii_digit()),
        "{num}"
    );
    assert_eq!(
        text_of(&http, &shim, "universe/universe-domain").await,
        "googleapis.com"
    );
    let list = text_of(&http, &shim, "instance/service-accounts/").await;
    assert_eq!(list, format!("default/\n{INFERENCE}/\n"));
    assert!(text_of(&http, &shim, "instance/")
        .await
        .contains("service-accounts/"));
    for acct in ["default", INFERENCE] {
        assert_eq!(
            text_of(
                &http,
                &shim,
                &format!("instance/service-accounts/{acct}/email")
            )
            .await,
            INFERENCE
        );
        assert_eq!(
            text_of(
                &http,
                &shim,
                &format!("instance/service-accounts/{acct}/scopes")
            )
            .await,
            format!("{CLOUD_PLATFORM}\n")
        );
        let rec = json_of(
            &http,
            &shim,
            &format!("instance/service-accounts/{acct}/?recursive=true"),
        )
        .await;
        assert_eq!(
            rec,
            serde_json::json!({"aliases": ["default"], "email": INFERENCE, "scopes": [CLOUD_PLATFORM]})
        );
    }
    // gcloud's own ID-token ask is "not found" (see shim_id_tokens.rs); other
    // accounts do not exist.
    let gcloud_own = format!(
        "instance/service-accounts/default/identity?audience={}",
        touchgate::google::GCLOUD_CLIENT_ID
    );
    for p in [
        gcloud_own.as_str(),
        "instance/service-accounts/someone@else.iam.gserviceaccount.com/email",
        "no/such/path",
    ] {
        let r = md_get(&http, &shim, p).await;
        assert_eq!(r.status(), 404, "{p}");
        assert_eq!(flavor(&r), Some("Google"), "{p}");
    }

    // The token: the agent's, with its real remaining life.
    let gat = emu.state().count(CallKind::GenerateAccessToken);
    let t = json_of(&http, &shim, "instance/service-accounts/default/token").await;
    assert_eq!(t["token_type"], "Bearer");
    let token = t["access_token"].as_str().unwrap();
    let issued = emu
        .state()
        .valid_access_token(token)
        .expect("the emulator issued this token");
    assert_eq!(issued.principal, INFERENCE);
    let real_left = issued
        .expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs();
    let expires_in = t["expires_in"].as_u64().unwrap();
    assert!(
        expires_in.abs_diff(real_left) <= 2 && (880..=900).contains(&expires_in),
        "expires_in {expires_in} vs real {real_left}"
    );
    assert_eq!(emu.state().count(CallKind::GenerateAccessToken), gat + 1);

    // Explicit scopes (comma separated, as google-auth sends them) narrow the
    // profile's scopes, like a GCE instance's access scopes: never more.
    let t = json_of(
        &http,
        &shim,
        "instance/service-accounts/default/token?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform,https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fappengine.admin",
    )
    .await;
    let issued = emu
        .state()
        .valid_access_token(t["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(issued.scopes, vec![CLOUD_PLATFORM.to_string()]);

    // The agent's log names the real caller behind the shim.
    let log = agent.stderr();
    assert!(
        log.contains("via touchgate-shim (pid"),
        "caller forwarded to the agent: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_without_the_flavor_header_proxied_or_for_a_foreign_host_are_refused() {
    let (emu, key_json) = emulator().await;
    let agent = shim_common::enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let http = reqwest::Client::new();
    let token_url = format!("{}{MD}/instance/service-accounts/default/token", shim.url);

    let r = http.get(&token_url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        flavor(&r),
        Some("Google"),
        "even a refusal carries the header"
    );
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Metadata-Flavor"));

    let r = http
        .get(&token_url)
        .header("Metadata-Flavor", "google-ish")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let r = http
        .get(&token_url)
        .header("Metadata-Flavor", "Google")
        .header("X-Forwarded-For", "10.0.0.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(flavor(&r), Some("Google"));
    assert!(r.text().await.unwrap().contains("X-Forwarded-For"));

    // DNS rebinding: a browser page on another name resolving to 127.0.0.1.
    let r = http
        .get(&token_url)
        .header("Metadata-Flavor", "Google")
        .header(HOST, "attacker.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    assert_eq!(
        emu.state().count(CallKind::GenerateAccessToken),
        0,
        "nothing was minted for a refused request"
    );
}

/// Send `request` as written on a new connection (it should say
/// `Connection: close`); the answer's status code and body.
async fn raw_request(addr: &str, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// A GET of `target` with `headers` (and the flavor header) on its own connection.
fn get_with(target: &str, headers: &[&str]) -> String {
    let mut req = format!("GET {target} HTTP/1.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req + "Metadata-Flavor: Google\r\nConnection: close\r\n\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxied_ambiguous_or_metadata_named_requests_are_refused() {
    let (emu, key_json) = emulator().await;
    let agent = shim_common::enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let port = shim.addr.rsplit_once(':').unwrap().1.to_owned();
    let project = format!("{MD}/project/project-id");
    let token = format!("{MD}/instance/service-accounts/default/token");
    let ours = format!("Host: {}", shim.addr);

    // What the real clients send with GCE_METADATA_HOST=127.0.0.1:PORT (and the
    // other loopback spellings) is served.
    for host in [
        ours.clone(),
        format!("Host: localhost:{port}"),
        format!("Host: [::1]:{port}"),
        "Host: localhost".to_owned(),
    ] {
        let (status, body) = raw_request(&shim.addr, &get_with(&project, &[&host])).await;
        assert_eq!((status, body.as_str()), (200, PROJECT), "{host}");
    }

    // Proxied, ambiguous, or named as the real metadata server: refused, with
    // a line naming what was wrong, before anything is asked of the agent.
    let refused: &[(&[&str], &str)] = &[
        (&[&ours, "Forwarded: for=10.0.0.7;proto=http"], "Forwarded"),
        (&[&ours, "X-Real-IP: 10.0.0.7"], "X-Real-IP"),
        (
            &[&ours, "X-Forwarded-Host: attacker.example"],
            "X-Forwarded-Host",
        ),
        (&[&ours, "Via: 1.1 proxy.example"], "Via"),
        (&[&ours, "Host: attacker.example"], "two Host headers"),
        (&["Host: attacker.example", &ours], "two Host headers"),
        (
            &["Host: metadata.google.internal"],
            "--allow-metadata-hostnames",
        ),
        (&["Host: metadata"], "--allow-metadata-hostnames"),
        (&["Host: 169.254.169.254"], "--allow-metadata-hostnames"),
        (
            &["Host: metadata.google.internal:80"],
            "--allow-metadata-hostnames",
        ),
    ];
    for (headers, needle) in refused {
        for target in [&project, &token] {
            let (status, body) = raw_request(&shim.addr, &get_with(target, headers)).await;
            assert_eq!(status, 403, "{headers:?} {target}: {body}");
            let e: Value = serde_json::from_str(&body).unwrap();
            let e = e["error"].as_str().unwrap();
            assert!(e.contains(needle), "{headers:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
    // A proxy's absolute-form request line naming another host.
    let (status, body) = raw_request(
        &shim.addr,
        &get_with(&format!("http://attacker.example{token}"), &[&ours]),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("attacker.example"), "{body}");
    assert_eq!(
        emu.state().count(CallKind::GenerateAccessToken),
        0,
        "nothing was minted for a refused request"
    );

    // Asked for by name (for /etc/hosts set-ups), the metadata names are
    // served, with a warning at start.
    let named = ShimProc::start(&agent.socket, &["--allow-metadata-hostnames"]);
    for host in [
        "Host: metadata.google.internal",
        "Host: metadata",
        "Host: 169.254.169.254",
    ] {
        let (status, body) = raw_request(&named.addr, &get_with(&project, &[host])).await;
        assert_eq!((status, body.as_str()), (200, PROJECT), "{host}");
    }
    let (status, _) = raw_request(
        &named.addr,
        &get_with(&project, &["Host: metadata", "Forwarded: for=10.0.0.7"]),
    )
    .await;
    assert_eq!(status, 403, "the flag lets only the names in");
    assert!(
        named
            .stderr()
            .contains("warning: --allow-metadata-hostnames"),
        "{}",
        named.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_uid_is_refused() {
    another_uid_is_refused_when_callers_come_from(&[]).await;
}

/// The macOS way of telling callers apart (`lsof`), run here on Linux: the same
/// refusal of another uid, the same caller name for our own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_uid_is_refused_when_callers_come_from_lsof() {
    assert!(
        Command::new("lsof").arg("-v").output().is_ok(),
        "lsof is missing: apt-get install lsof"
    );
    another_uid_is_refused_when_callers_come_from(&["--callers-from", "lsof"]).await;
}

async fn another_uid_is_refused_when_callers_come_from(extra: &[&str]) {
    let (emu, key_json) = emulator().await;
    let agent = shim_common::enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, extra);
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "setpriv is missing: install util-linux"
    );
    let me = std::fs::metadata("/proc/self").unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&me),
        0,
        "this test switches to uid 65534 with setpriv and must run as root (as CI does)"
    );
    let url = format!("{}{MD}/instance/service-accounts/default/token", shim.url);
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "curl",
        "-sS",
        "-H",
        "Metadata-Flavor: Google",
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    let o = run(cmd).await;
    assert!(
        o.status.success(),
        "curl as uid 65534 failed to connect: {}",
        stderr(&o)
    );
    let out = stdout(&o);
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(code, "403", "{out}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("uid 65534"),
        "{body}"
    );
    assert_eq!(emu.state().count(CallKind::GenerateAccessToken), 0);

    // The same request from our own uid, through the same kind of client, works;
    // twice on one kept-alive connection, both named after the same process
    // (the owner is looked up once per connection).
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-H",
        "Metadata-Flavor: Google",
        "-w",
        "\n%{http_code} %{num_connects}\n",
        &url,
        &url,
    ]);
    let o = run(cmd).await;
    let out = stdout(&o);
    let codes: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("200 ") || l.starts_with("403 "))
        .collect();
    assert_eq!(
        codes,
        ["200 1", "200 0"],
        "two 200s, the second without a new connection: {out}{}",
        stderr(&o)
    );
    let served: Vec<String> = shim
        .stderr()
        .lines()
        .filter(|l| l.contains("/token -> 200 for "))
        .map(|l| l.rsplit_once(" for ").unwrap().1.to_owned())
        .collect();
    assert_eq!(served.len(), 2, "{}", shim.stderr());
    assert!(served[0].starts_with("curl (pid "), "{served:?}");
    assert_eq!(served[0], served[1], "one process on one connection");
    assert!(
        agent.stderr().contains("curl (pid"),
        "the agent was told the caller is curl: {}",
        agent.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sts_subject_and_token_info() {
    let (emu, key_json) = emulator().await;
    let agent = shim_common::enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let dir = tempfile::tempdir().unwrap();
    let adc: Value = serde_json::from_slice(
        &std::fs::read(shim.adc_file(dir.path(), Some("inference"))).unwrap(),
    )
    .unwrap();
    assert_eq!(adc["type"], "external_account");
    assert_eq!(adc["token_url"], format!("{}/sts/token", shim.url));
    assert!(!adc["audience"].as_str().unwrap().contains("/projects/"));
    let http = reqwest::Client::new();

    let r = http
        .get(format!("{}/subject", shim.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "the subject needs the header the file names"
    );
    let r = http
        .get(format!("{}/subject", shim.url))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let subject = r.text().await.unwrap();
    assert!(subject.len() >= 32);

    let exchange = |subject: String, audience: String| {
        let http = http.clone();
        let url = format!("{}/sts/token", shim.url);
        async move {
            http.post(url)
                .form(&[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", subject.as_str()),
                    ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                    ("audience", audience.as_str()),
                    ("scope", CLOUD_PLATFORM),
                    (
                        "requested_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let audience = adc["audience"].as_str().unwrap().to_owned();
    let r = exchange(subject.clone(), audience.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(ctype(&r), "application/json");
    let t: Value = r.json().await.unwrap();
    assert_eq!(
        t["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(t["token_type"], "Bearer");
    let expires_in = t["expires_in"].as_u64().unwrap();
    assert!((880..=900).contains(&expires_in), "{expires_in}");
    let token = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        emu.state().valid_access_token(&token).unwrap().principal,
        INFERENCE
    );

    // Wrong subject, foreign audience: OAuth errors, nothing minted.
    let gat = emu.state().count(CallKind::GenerateAccessToken);
    let r = exchange("forged".into(), audience.clone()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let r = exchange(
        subject.clone(),
        "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p/providers/x"
            .into(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_target");
    assert_eq!(emu.state().count(CallKind::GenerateAccessToken), gat);

    // token_info knows the tokens it issued, and only those.
    let info = |tok: String| {
        let http = http.clone();
        let url = format!("{}/token_info", shim.url);
        async move {
            let r = http.post(url).form(&[("token", tok)]).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let i = info(token.clone()).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["username"], INFERENCE);
    assert_eq!(info("ya29.not-ours".into()).await["active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_denied_touch_is_a_clear_error_on_both_routes() {
    let (emu, key_json) = emulator().await;
    let agent = shim_common::enrolled_agent(&emu, &key_json, "deny", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);
    let http = reqwest::Client::new();

    let r = md_get(&http, &shim, "instance/service-accounts/default/token").await;
    assert_eq!(r.status(), 403, "a refused touch is final: no retries");
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with("touchgate: ")
            && body.contains("refused")
            && body.trim_end().lines().count() == 1,
        "{body}"
    );

    let subject = http
        .get(format!("{}/subject", shim.url))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = http
        .post(format!("{}/sts/token", shim.url))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject.as_str()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("audience", "//touchgate.local/default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "access_denied");
    assert!(
        e["error_description"].as_str().unwrap().contains("refused"),
        "{e}"
    );
}

#[test]
fn an_unknown_way_of_finding_callers_is_refused() {
    let o = Command::new(bin("touchgate-shim"))
        .args(["serve", "--listen", "127.0.0.1:0", "--callers-from", "ps"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        "touchgate-shim: --callers-from \"ps\": expected proc, lsof or auto"
    );
}

#[test]
fn a_non_loopback_listen_address_is_refused() {
    for addr in ["0.0.0.0:8946", "192.0.2.1:80"] {
        let o = Command::new(bin("touchgate-shim"))
            .args(["serve", "--listen", addr])
            .output()
            .unwrap();
        assert_one_line_error(&o, "loopback only");
    }
    let o = Command::new(bin("touchgate-shim"))
        .args(["serve"])
        .env("TOUCHGATE_SHIM_ADDR", "0.0.0.0:1")
        .output()
        .unwrap();
    assert_one_line_error(&o, "TOUCHGATE_SHIM_ADDR");
}
