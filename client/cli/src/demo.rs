//! `touchgate demo`: the whole flow on this machine, with nothing outside a
//! temp dir touched — a Google emulator, an agent with a software key, enrol,
//! import, a touch-gated token, and a real client (curl) calling the Vertex AI
//! REST API with it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};
use touchgate::{CallerHint, Client, Secret};

const PROJECT: &str = "touchgate-demo";
const RUNNER: &str = "demo-runner@touchgate-demo.iam.gserviceaccount.com";
const INFERENCE: &str = "vertex-inference@touchgate-demo.iam.gserviceaccount.com";

/// Kills (SIGTERM, then waits) a child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

fn step(n: u32, text: &str) {
    println!("\n[{n}/7] {text}");
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the touchgate executable")?;
    let p = exe.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} is missing: build everything first with `cargo build --workspace`",
            p.display()
        );
    }
    Ok(p)
}

pub async fn run(auto_touch: bool) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("touchgate-demo-")
        .tempdir()
        .context("cannot create a temp dir")?;
    println!(
        "touchgate demo — everything lives in {} and is removed at the end",
        dir.path().display()
    );

    step(
        1,
        "start the Google emulator (OAuth, IAM Credentials, Vertex AI REST) on 127.0.0.1",
    );
    let (emulator, base) = start_emulator(dir.path())?;
    println!("      emulator at {base}");
    let key_json = curl_json(
        &format!("{base}/__emulator/service-accounts"),
        &format!("{{\"email\":\"{RUNNER}\"}}"),
    )?;
    curl_json(
        &format!("{base}/__emulator/service-accounts"),
        &format!("{{\"email\":\"{INFERENCE}\"}}"),
    )?;
    curl_json(
        &format!("{base}/__emulator/grants"),
        &format!("{{\"principal\":\"{RUNNER}\",\"service_account\":\"{INFERENCE}\"}}"),
    )?;
    curl_json(
        &format!("{base}/__emulator/vertex-grants"),
        &format!("{{\"principal\":\"{INFERENCE}\",\"role\":\"inference\"}}"),
    )?;
    println!("      service account {RUNNER} may impersonate {INFERENCE}, which may use Vertex AI models");

    step(
        2,
        &format!(
            "start touchgate-agent with a software security key (touch: {})",
            if auto_touch {
                "automatic"
            } else {
                "press Enter in this terminal"
            }
        ),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, demo_config(&base, auto_touch))?;
    // In a directory of its own: the agent makes it 0700, as clients require.
    let sock = dir.path().join("run").join("agent.sock");
    let agent = start_agent(dir.path(), &config, &sock, auto_touch)?;
    println!("      TOUCHGATE_SOCK={}", sock.display());

    let mut client = Client::connect(&sock).await?;
    client.on_touch_needed(|p| println!("      >>> {p}"));

    step(3, "touchgate enroll — create a credential on the key");
    let e = client.enroll(false, false, CallerHint::from_env()).await?;
    println!("      enrolled {} credential {}", e.key_name, e.credential);

    step(
        4,
        "touchgate import — seal the service-account key under the key, then delete the plaintext",
    );
    let key_file = dir.path().join("runner-key.json");
    std::fs::write(&key_file, key_json.as_bytes())?;
    let kind = client
        .import(
            "default",
            Secret::new(key_json.as_str()),
            CallerHint::from_env(),
        )
        .await?;
    std::fs::remove_file(&key_file)?;
    println!(
        "      sealed {kind} as \"default\"; {} deleted",
        key_file.display()
    );

    step(5, "touchgate token --profile vertex — a touch, then a 15-minute token for the inference service account");
    let tok = client
        .get_token(
            Some("vertex"),
            &[],
            CallerHint {
                program: Some("touchgate demo".into()),
                ..CallerHint::from_env()
            },
        )
        .await?;
    let left = tok.expires_at.saturating_sub(unix_now());
    println!(
        "      got token {} ({}s left, from cache: {})",
        tok.access_token.fingerprint(),
        left,
        tok.from_cache
    );

    step(6, "curl the Vertex AI REST API with the token");
    let url = format!("{base}/v1/projects/{PROJECT}/locations/us-central1/models");
    let status = curl_with_token(&url, &tok.access_token)?;
    println!("      GET {url} -> HTTP {status}");

    step(
        7,
        "ask again inside the 10-minute approval window: no touch needed",
    );
    let again = client
        .get_token(Some("vertex"), &[], CallerHint::default())
        .await?;
    println!(
        "      same token: {}, from cache: {}",
        again.access_token == tok.access_token,
        again.from_cache
    );

    let calls = curl_get(&format!("{base}/__emulator/calls"))?;
    let logged = vertex_call_logged(&calls, &tok.access_token.fingerprint())?;
    drop(client);
    drop(agent);
    drop(emulator);
    if status != 200 || !logged {
        bail!("the Vertex call was not accepted (HTTP {status}, logged by the emulator: {logged})");
    }
    println!("\ndemo passed: the emulator logged a Vertex call carrying the agent's token, accepted with HTTP 200");
    Ok(())
}

fn demo_config(base: &str, auto_touch: bool) -> String {
    format!(
        r#"default_profile = "vertex"

[agent]
touch_timeout = "60s"

[key]
backend = "soft"
touch = "{touch}"

[google]
iam_credentials = "{base}"

[profiles.vertex]
credential = "default"
service_account = "{INFERENCE}"
project = "{PROJECT}"
lifetime = "15m"
touch = "10m"
"#,
        touch = if auto_touch { "auto" } else { "prompt" },
    )
}

fn start_emulator(dir: &Path) -> anyhow::Result<(Proc, String)> {
    let log = std::fs::File::create(dir.join("emulator.log"))?;
    let mut child = Command::new(sibling("touchgate-google-emulator")?)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start the Google emulator")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let proc = Proc(child);
    let base = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://127.0.0.1:"))
        .map(str::to_owned);
    match base {
        Some(b) => Ok((proc, b)),
        None => bail!(
            "the Google emulator did not start (see {})",
            dir.join("emulator.log").display()
        ),
    }
}

fn start_agent(dir: &Path, config: &Path, sock: &Path, auto_touch: bool) -> anyhow::Result<Proc> {
    let mut child = Command::new(sibling("touchgate-agent")?)
        .args(["--foreground", "--print-sock"])
        .env("TOUCHGATE_SOCK", sock)
        .env("TOUCHGATE_CONFIG", config)
        .env("TOUCHGATE_STATE_DIR", dir.join("state"))
        .env("TOUCHGATE_LOG", "warn")
        .stdin(if auto_touch {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start touchgate-agent")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let proc = Proc(child);
    if !line.starts_with("TOUCHGATE_SOCK=") {
        bail!("touchgate-agent did not start (its error is above)");
    }
    Ok(proc)
}

fn curl(args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<String> {
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run curl: install it (apt-get install curl)")?;
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(data)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn curl_json(url: &str, body: &str) -> anyhow::Result<String> {
    curl(
        &[
            "--fail",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            url,
        ],
        Some(body.as_bytes()),
    )
}

fn curl_get(url: &str) -> anyhow::Result<String> {
    curl(&["--fail", url], None)
}

/// The token goes to curl on stdin (`-H @-`), never on its command line.
fn curl_with_token(url: &str, token: &Secret) -> anyhow::Result<u16> {
    let header = zeroize::Zeroizing::new(format!("Authorization: Bearer {}\n", token.expose()));
    let out = curl(
        &["-o", "/dev/null", "-w", "%{http_code}", "-H", "@-", url],
        Some(header.as_bytes()),
    )?;
    out.trim().parse().context("curl printed no HTTP status")
}

fn vertex_call_logged(calls_json: &str, fingerprint: &str) -> anyhow::Result<bool> {
    let calls: serde_json::Value =
        serde_json::from_str(calls_json).context("emulator call log is not JSON")?;
    Ok(calls.as_array().into_iter().flatten().any(|c| {
        c["kind"] == "Vertex" && c["status"] == 200 && c["bearer_fingerprint"] == fingerprint
    }))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
