//! `touchgate init`: from nothing to a working set-up in one command — find the
//! security key (or say why none is visible), write a starter config, start the
//! agent (as a systemd user service when there is one), enrol, seal a Google
//! credential, wire the chosen clients (`touchgate setup`), run `doctor`.
//!
//! Invariants: every question has a flag, and `--yes` never blocks on a
//! terminal; re-running is safe — an existing config is kept, an enrolled key
//! and a sealed credential are not redone, `touchgate setup` keeps its first
//! backup. Nothing here prints a secret: credentials go from the file straight
//! to the agent (`touchgate import`'s code) and the plaintext is deleted only
//! when asked.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};
use touchgate::hidraw::UDEV_RULE_FIX as UDEV_RULE;
use touchgate::{paths, CallerHint, Client, ClientError, Exit};

use crate::{adc, doctor, login, setup};

/// The credential name the starter profiles use.
const CREDENTIAL: &str = "default";

/// `touchgate init`'s flags: one per question, for a run without a terminal.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Take the default answer to every question (no backup key, keep plaintext files,
    /// wire nothing not named by --setup); never wait for the terminal.
    #[arg(long, short)]
    pub yes: bool,
    /// A security key's hidraw device for the starter config (repeatable; default: every
    /// FIDO device found).
    #[arg(long = "device", value_name = "PATH")]
    pub devices: Vec<PathBuf>,
    /// Google's endpoints at URL in the starter config (an emulator or a private endpoint).
    #[arg(long, value_name = "URL")]
    pub endpoints: Option<String>,
    /// The starter profiles' project.
    #[arg(long)]
    pub project: Option<String>,
    /// The service account the starter profiles impersonate (default: the credential itself).
    #[arg(long, value_name = "EMAIL")]
    pub service_account: Option<String>,
    /// Seal this credential file (service-account key or ADC file); default: gcloud's ADC
    /// file when there is one, else `touchgate login`.
    #[arg(long, value_name = "FILE", conflicts_with = "login")]
    pub import: Option<PathBuf>,
    /// Log in to Google in a browser instead of importing a file.
    #[arg(long)]
    pub login: bool,
    /// Delete the imported plaintext file once it is sealed (the default keeps it).
    #[arg(long)]
    pub delete_plaintext: bool,
    /// Enrol a backup key right after the first one.
    #[arg(long)]
    pub backup_key: bool,
    /// The clients to wire, comma separated: gcloud, adc, docker, kubectl (empty: none).
    // Spelt `std::vec::Vec` so clap takes the parser's whole list as one value
    // (a bare `Vec` would make it a repeated flag of single targets).
    #[arg(long, value_name = "LIST", value_parser = parse_targets)]
    pub setup: Option<std::vec::Vec<setup::Target>>,
    /// With gcloud in --setup: make `touchgate` gcloud's active configuration.
    #[arg(long)]
    pub activate_gcloud: bool,
    /// Do not install the agent as a systemd user service; start it in the background.
    #[arg(long)]
    pub no_service: bool,
}

pub async fn run(args: InitArgs) -> anyhow::Result<Exit> {
    let q = Questions { yes: args.yes };
    find_keys(&args.devices)?;
    let config = paths::config_path();
    let wrote = write_config(&config, &args)?;
    let mut client = agent(&args, wrote).await?;

    let status = client.status().await?;
    if status.key_backend != "hid" {
        // A reload does not change [key]: enrolling now would enrol the old backend.
        if wrote {
            bail!(
                "the running agent uses the {} key backend, and [key] of the new config {} takes effect only when it restarts: stop it (systemctl --user restart touchgate-agent, or kill {}) and run touchgate init again",
                status.key_backend,
                config.display(),
                status.pid
            );
        }
        println!(
            "init: the running agent uses the {} key backend, as {} says",
            status.key_backend,
            config.display()
        );
    }
    match &status.enrolled {
        Some(e) => println!(
            "init: already enrolled: {} credential {}",
            e.key_name, e.credential
        ),
        None => {
            println!("init: enrolling: touch your security key when it blinks");
            let e = client.enroll(false, false, CallerHint::from_env()).await?;
            println!(
                "init: enrolled {} credential {} (aaguid {})",
                e.key_name, e.credential, e.aaguid
            );
            if args.backup_key
                || q.ask("enrol a backup key now (touch this key, then the new one twice)?")?
            {
                let k = client.add_key(CallerHint::from_env()).await?;
                println!(
                    "init: added backup key {} credential {}",
                    k.key_name, k.credential
                );
            }
        }
    }
    drop(client);

    if status.credentials.iter().any(|c| c == CREDENTIAL) {
        println!("init: credential \"{CREDENTIAL}\" is already sealed (touchgate import FILE replaces it)");
    } else {
        credential(&args, &q).await?;
    }

    let targets = match &args.setup {
        Some(t) => t.clone(),
        None => q.targets()?,
    };
    for &target in &targets {
        println!("init: touchgate setup {}", target_name(target));
        setup::run(setup::SetupArgs {
            target,
            undo: false,
            profile: Some("inference".into()),
            project: None,
            hosts: vec![],
        })
        .await?;
    }

    if targets.contains(&setup::Target::Gcloud)
        && (args.activate_gcloud
            || q.ask("make touchgate gcloud's active configuration (gcloud config configurations activate touchgate)?")?)
    {
        activate_gcloud()?;
    }

    println!("init: touchgate doctor");
    Ok(if doctor::run(None, false).await {
        println!("init: done");
        Exit::Ok
    } else {
        println!("init: doctor found a failure above; fix it and run touchgate init again");
        Exit::DoctorFailed
    })
}

/// Questions on the terminal; `--yes` (or no terminal) takes each default.
struct Questions {
    yes: bool,
}

impl Questions {
    fn interactive(&self) -> bool {
        !self.yes && std::io::stdin().is_terminal()
    }

    /// A yes/no question whose default is no.
    fn ask(&self, question: &str) -> anyhow::Result<bool> {
        if !self.interactive() {
            return Ok(false);
        }
        Ok(matches!(
            self.line(&format!("{question} [y/N] "))?
                .to_ascii_lowercase()
                .as_str(),
            "y" | "yes"
        ))
    }

    fn line(&self, prompt: &str) -> anyhow::Result<String> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|e| anyhow!("cannot read the answer: {e}"))?;
        Ok(answer.trim().to_owned())
    }

    fn targets(&self) -> anyhow::Result<Vec<setup::Target>> {
        if !self.interactive() {
            return Ok(vec![]);
        }
        let answer = self
            .line("wire which clients to touchgate (gcloud,adc,docker,kubectl; empty: none)? ")?;
        parse_targets(&answer).map_err(|e| anyhow!(e))
    }
}

/// `--setup gcloud,adc,docker,kubectl` (the service is `--no-service`'s business).
pub fn parse_targets(s: &str) -> Result<Vec<setup::Target>, String> {
    use clap::ValueEnum;
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match setup::Target::from_str(t, true) {
            Ok(setup::Target::Agent) | Err(_) => Err(format!(
                "\"{t}\" is not a client to wire: use gcloud, adc, docker or kubectl, comma separated"
            )),
            Ok(target) => Ok(target),
        })
        .collect()
}

fn target_name(t: setup::Target) -> &'static str {
    match t {
        setup::Target::Gcloud => "gcloud",
        setup::Target::Adc => "adc",
        setup::Target::Docker => "docker",
        setup::Target::Kubectl => "kubectl",
        setup::Target::Agent => "agent",
    }
}

/// Say which security keys this user can open, or exactly why none.
fn find_keys(devices: &[PathBuf]) -> anyhow::Result<()> {
    let found: Vec<PathBuf> = if devices.is_empty() {
        touchgate::hidraw::fido_devices()
    } else {
        devices.to_vec()
    };
    if found.is_empty() {
        bail!("no security key found: plug in a FIDO2 security key; if one is plugged in, your user may not see it: {UDEV_RULE} (or name it with --device /dev/hidrawN)");
    }
    for d in &found {
        match std::fs::OpenOptions::new().read(true).write(true).open(d) {
            Ok(_) => println!("init: security key {}", d.display()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "your user may not open the security key {}: {UDEV_RULE}, or check `ls -l {}`",
                d.display(),
                d.display()
            ),
            Err(e) => bail!(
                "cannot open the security key {}: {e}; check that it is plugged in",
                d.display()
            ),
        }
    }
    Ok(())
}

/// Write the starter config unless one exists; returns whether it wrote one.
fn write_config(path: &Path, args: &InitArgs) -> anyhow::Result<bool> {
    if path.exists() {
        println!("init: keeping the config {}", path.display());
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, starter_config(args))
        .with_context(|| format!("cannot write the config {}", path.display()))?;
    println!("init: wrote the starter config {}", path.display());
    Ok(true)
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn starter_config(args: &InitArgs) -> String {
    let devices = if args.devices.is_empty() {
        "# devices = [\"/dev/hidraw4\"]   # default: every FIDO device found\n".to_owned()
    } else {
        let list: Vec<String> = args
            .devices
            .iter()
            .map(|d| toml_str(&d.display().to_string()))
            .collect();
        format!("devices = [{}]\n", list.join(", "))
    };
    let google = match &args.endpoints {
        Some(url) => format!(
            "[google]\n# Google's endpoints at {url} (an emulator or a private endpoint)\niam_credentials = {u}\ntoken_uri = {t}\n\n",
            u = toml_str(url),
            t = toml_str(&format!("{}/token", url.trim_end_matches('/')))
        ),
        None => String::new(),
    };
    let project = match &args.project {
        Some(p) => format!("project = {}\n", toml_str(p)),
        None => {
            "# project = \"my-project\"   # GOOGLE_CLOUD_PROJECT for touchgate exec and setup\n"
                .into()
        }
    };
    let sa = match &args.service_account {
        Some(s) => format!("service_account = {}\n", toml_str(s)),
        None => "# service_account = \"runner@my-project.iam.gserviceaccount.com\"   # impersonate it (default: the credential itself)\n".into(),
    };
    format!(
        r#"# touchgate config, written by `touchgate init` (see the README for every setting).
default_profile = "inference"

[key]
backend = "hid"            # a USB security key; the secret never leaves it
{devices}
{google}# Everyday use: one touch approves this profile for 10 minutes.
[profiles.inference]
credential = "{CREDENTIAL}"        # the name `touchgate init` / `touchgate import` sealed it under
{sa}{project}touch = "10m"
lifetime = "15m"

# Long jobs and wide rights: a touch for every token, nothing cached.
[profiles.train]
credential = "{CREDENTIAL}"
{sa}{project}touch = "every-token"
# callers = ["*/venv/bin/python3*"]   # only these programs may ask
"#
    )
}

/// A connection to the agent: the running one (told to re-read a new config), else
/// one started as a systemd user service, else one started in the background.
async fn agent(args: &InitArgs, wrote_config: bool) -> anyhow::Result<Client> {
    match crate::connect_answered().await {
        Ok(mut c) => {
            if wrote_config {
                c.reload().await?;
                println!("init: asked the running agent to re-read its config");
            } else {
                println!("init: an agent is running");
            }
            return Ok(c);
        }
        Err(ClientError::NotRunning { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    if !args.no_service && systemd_user() {
        setup::run(setup::SetupArgs {
            target: setup::Target::Agent,
            undo: false,
            profile: None,
            project: None,
            hosts: vec![],
        })
        .await?;
        for a in [
            &["--user", "daemon-reload"][..],
            &["--user", "enable", "--now", "touchgate-agent.socket"],
        ] {
            let ok = Command::new("systemctl")
                .args(a)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                bail!(
                    "systemctl {} failed: see its message above, then run touchgate init again",
                    a.join(" ")
                );
            }
        }
        println!("init: the agent runs as a systemd user service (touchgate-agent.socket)");
    } else {
        start_background()?;
    }
    Ok(crate::connect_answered().await?)
}

/// `gcloud config configurations activate touchgate`, saying how to go back.
fn activate_gcloud() -> anyhow::Result<()> {
    let was = setup::gcloud_dir()
        .ok()
        .and_then(|d| std::fs::read_to_string(d.join("active_config")).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    if was == "touchgate" {
        println!("init: gcloud's active configuration is touchgate");
        return Ok(());
    }
    let o = Command::new("gcloud")
        .args(["config", "configurations", "activate", "touchgate"])
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .output()
        .map_err(|e| anyhow!("cannot run gcloud: {e}; install the Google Cloud CLI, or leave out --activate-gcloud"))?;
    if !o.status.success() {
        bail!(
            "gcloud config configurations activate touchgate failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("no message")
        );
    }
    println!("init: gcloud's active configuration is now touchgate (was {was}: gcloud config configurations activate {was} goes back)");
    Ok(())
}

/// Whether a systemd user manager answers.
fn systemd_user() -> bool {
    Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `touchgate-agent` (it daemonises and returns once its socket is ready).
fn start_background() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?.with_file_name("touchgate-agent");
    let o = Command::new(&exe)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| {
            anyhow!(
                "cannot run {}: {e}; install touchgate-agent next to touchgate",
                exe.display()
            )
        })?;
    if !o.status.success() {
        bail!("the agent did not start (its message is above)");
    }
    println!(
        "init: started touchgate-agent in the background at {}; it stops at logout: start it again with eval \"$(touchgate-agent)\", or let init run it as a service (without --no-service, where systemd --user runs)",
        paths::socket_path().display()
    );
    Ok(())
}

/// Seal a Google credential: `--import FILE`, `--login`, else gcloud's ADC file.
async fn credential(args: &InitArgs, q: &Questions) -> anyhow::Result<()> {
    let after = if args.delete_plaintext {
        adc::AfterImport::Delete
    } else if q.interactive() {
        adc::AfterImport::Ask
    } else {
        adc::AfterImport::Keep
    };
    if let Some(file) = &args.import {
        return adc::import(Some(file.clone()), CREDENTIAL, after).await;
    }
    let gcloud_adc = adc::well_known_file().filter(|f| f.exists());
    let use_adc = match &gcloud_adc {
        Some(f) if !args.login => {
            args.yes
                || q.ask(&format!(
                    "seal gcloud's ADC file {} (else: touchgate login)?",
                    f.display()
                ))?
                || !q.interactive()
        }
        _ => false,
    };
    if use_adc {
        return adc::import(gcloud_adc, CREDENTIAL, after).await;
    }
    if args.login || q.interactive() {
        return login::run(login::LoginArgs {
            no_browser: false,
            name: CREDENTIAL.into(),
            client_secret_file: None,
        })
        .await;
    }
    bail!("no Google credential to seal: pass --import FILE (a service-account key or ADC file) or --login")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_the_service_is_not_one() {
        assert_eq!(
            parse_targets("gcloud, adc").unwrap(),
            [setup::Target::Gcloud, setup::Target::Adc]
        );
        assert!(parse_targets("").unwrap().is_empty());
        assert!(parse_targets("agent").unwrap_err().contains("gcloud, adc"));
        assert!(parse_targets("gcluod").unwrap_err().contains("\"gcluod\""));
    }

    #[test]
    fn the_starter_config_parses_as_toml_with_both_profiles() {
        let args = InitArgs {
            yes: true,
            devices: vec![PathBuf::from("/dev/hidraw\"9")],
            endpoints: Some("http://127.0.0.1:1".into()),
            project: Some("p".into()),
            service_account: None,
            import: None,
            login: false,
            delete_plaintext: false,
            backup_key: false,
            setup: None,
            activate_gcloud: false,
            no_service: true,
        };
        let v: toml::Value = toml::from_str(&starter_config(&args)).unwrap();
        assert_eq!(v["key"]["backend"].as_str(), Some("hid"));
        assert_eq!(v["key"]["devices"][0].as_str(), Some("/dev/hidraw\"9"));
        assert_eq!(
            v["profiles"]["train"]["touch"].as_str(),
            Some("every-token")
        );
        assert_eq!(v["profiles"]["inference"]["project"].as_str(), Some("p"));
    }
}
