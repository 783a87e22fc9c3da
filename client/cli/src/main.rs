//! `touchgate`: talk to the agent — status, enrol, login, import, token, lock — and
//! `touchgate demo`, the whole flow on a software key and a Google emulator.
//!
//! # Layout
//!
//! - `main.rs`: the command line (clap), the fast path of `touchgate token`,
//!   and the commands that are one request to the agent (status, lock, token,
//!   enrol, import, keys, audit, policy).
//! - `init`, `login` (`login/`: flows, loopback redirect, settings), `adc`
//!   (gcloud's ADC file and `import`), `setup` (`setup/`: the agent's units,
//!   docker's link, backups of what it edits), `exec`, `doctor` (`doctor/`:
//!   agent, shim, wiring), `demo`, `json_out` (`--json`).
//!
//! What the three binaries share lives in the `touchgate` library, never here.
#![deny(rustdoc::broken_intra_doc_links)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use touchgate::text::{one_line, UNCUT};
use touchgate::{CallerHint, Client, ClientError, Exit, Secret};

mod adc;
mod demo;
mod doctor;
mod exec;
mod init;
mod json_out;
mod login;
mod setup;

#[derive(Parser, Debug)]
#[command(
    name = "touchgate",
    version,
    about = "Touch-gated Google Cloud tokens from your security key",
    after_long_help = touchgate::exit::TABLE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the agent, the enrolled key, sealed credentials and profiles.
    Status {
        #[command(flatten)]
        out: Output,
    },
    /// Create a credential on the security key (touch it when asked).
    Enroll {
        /// Start over with a new vault: touch an enrolled key first; the old vault (and the
        /// credentials sealed in it) is kept as a backup file.
        #[arg(long)]
        force: bool,
        /// Require user verification (the key's PIN or fingerprint) on every later touch too.
        #[arg(long)]
        uv: bool,
    },
    /// Manage enrolled security keys: list, add a backup key, remove one, trust a suspect one.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Log in to Google in a browser (or, with --no-browser, with a code entered on any
    /// device) and seal the refresh token under the key; it never touches the disk.
    Login {
        /// Device flow: print a URL and a code to enter on any device with a browser.
        #[arg(long)]
        no_browser: bool,
        /// Name to seal it under (profiles refer to it as `credential`).
        #[arg(long, default_value = "default")]
        name: String,
        /// The OAuth client: a "Desktop app" client's client_secret_….json (default:
        /// [login] in the config file, else the client of gcloud's ADC file).
        #[arg(long, value_name = "FILE")]
        client_secret_file: Option<PathBuf>,
    },
    /// Seal a Google credential (service-account key JSON, authorized_user or
    /// impersonated_service_account ADC file) under the key.
    Import {
        /// The file to import; `-` reads standard input (default: gcloud's ADC file,
        /// $CLOUDSDK_CONFIG or ~/.config/gcloud/application_default_credentials.json).
        file: Option<PathBuf>,
        /// Name to seal it under (profiles refer to it as `credential`).
        #[arg(long, default_value = "default")]
        name: String,
        /// Delete FILE after sealing it, without asking.
        #[arg(long, conflicts_with = "keep")]
        delete: bool,
        /// Keep FILE, without asking.
        #[arg(long)]
        keep: bool,
    },
    /// Print an access token for a profile on stdout (nothing else); with `--id-token
    /// --audience AUD`, an ID token for AUD (e.g. a Cloud Run URL).
    Token {
        #[arg(long, short)]
        profile: Option<String>,
        /// Scopes, comma separated (default: the profile's).
        #[arg(long, value_delimiter = ',', conflicts_with = "id_token")]
        scopes: Vec<String>,
        /// Print a Google-signed ID token instead (needs --audience).
        #[arg(long, requires = "audience")]
        id_token: bool,
        /// The ID token's audience: the URL (or OAuth client id) of the service to call.
        #[arg(long, value_name = "AUD", requires = "id_token")]
        audience: Option<String>,
    },
    /// List the configured profiles.
    Profiles {
        #[command(flatten)]
        out: Output,
    },
    /// Lock the agent: drop every cached token and unsealed credential, refuse tokens until unlock.
    Lock,
    /// Unlock the agent (touch your key).
    Unlock,
    /// Make the running agent re-read its config file (like SIGHUP); a bad file keeps the old config.
    Reload,
    /// Read the audit log: `verify` re-checks it, `show` prints it (runs touchgate-agent audit).
    #[command(disable_help_flag = true)]
    Audit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Ask the policy what it would decide: `check --profile P --exe PATH [--script S]` or `--pid PID`
    /// (runs touchgate-agent policy).
    #[command(disable_help_flag = true)]
    Policy {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run CMD with GCE_METADATA_ROOT/HOST/IP pointed at a touchgate shim (the running one, else a
    /// private one) and the project set; passes its exit code on.
    Exec {
        #[arg(long, short)]
        profile: Option<String>,
        /// Project for GOOGLE_CLOUD_PROJECT / CLOUDSDK_CORE_PROJECT (default: the profile's).
        #[arg(long)]
        project: Option<String>,
        /// The command and its arguments (after --).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required = true,
            value_name = "CMD"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Point gcloud, ADC, docker or kubectl at touchgate, or run the agent as a service (backed up; --undo restores exactly).
    Setup {
        target: setup::Target,
        /// Restore what an earlier `touchgate setup TARGET` changed and delete its backup.
        #[arg(long)]
        undo: bool,
        #[arg(long, short, conflicts_with = "undo")]
        profile: Option<String>,
        /// gcloud: core/project of the configuration (default: the profile's).
        #[arg(long, conflicts_with = "undo")]
        project: Option<String>,
        /// docker: another registry host to hand to docker-credential-touchgate (repeatable).
        #[arg(long = "host", value_name = "HOST", conflicts_with = "undo")]
        hosts: Vec<String>,
    },
    /// Check the agent, the shim and what `touchgate setup` wired up; one line per check,
    /// exit status 10 when one failed.
    Doctor {
        /// The profile to check (default: the agent's default).
        #[arg(long, short)]
        profile: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// From nothing to working: find the key, write a starter config, start the agent (a
    /// systemd user service where there is one), enrol, seal a credential, wire clients, run
    /// doctor. Every question has a flag; running it again is safe.
    Init(init::InitArgs),
    /// Run the whole flow on a software key and a local Google emulator, in a temp dir.
    Demo {
        /// Approve touches automatically (non-interactive run).
        #[arg(long)]
        auto_touch: bool,
    },
}

/// `--json`: one JSON document on stdout instead of text (shapes in the README).
#[derive(clap::Args, Debug, Clone, Copy, Default)]
struct Output {
    /// Print one JSON document on stdout (on failure: {"error": {...}}); see the exit codes below.
    #[arg(long)]
    json: bool,
}

impl Command {
    /// Whether this command was asked for JSON (then its errors are JSON too).
    fn json(&self) -> bool {
        match self {
            Command::Status { out }
            | Command::Profiles { out }
            | Command::Doctor { out, .. }
            | Command::Keys {
                command: KeysCommand::List { out },
            } => out.json,
            _ => false,
        }
    }
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// List the enrolled keys.
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Enrol another key (a backup): touch an enrolled key, then the new one twice.
    Add,
    /// Forget an enrolled key after a touch on an enrolled key (the last one cannot be removed).
    Remove {
        /// The key's credential id, or a unique prefix of it (see `touchgate keys list`).
        credential: String,
    },
    /// Trust a key that was marked suspect (for example after its counter went back), after a
    /// touch on another, trusted enrolled key.
    Trust { credential: String },
    /// Write the public keys (enrolled and retired) as JSON, for `touchgate audit verify
    /// --keys FILE` where this user cannot change them: `export [--out FILE]` (no agent needed).
    #[command(disable_help_flag = true)]
    Export {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `touchgate token [--profile P]` without building clap's whole command tree
/// (the common call, made once per token by scripts and helpers). Only forms
/// clap parses the same way; anything else is `None` and goes to clap, so
/// messages and flags stay clap's (a test checks the two agree).
fn fast_token(args: &[std::ffi::OsString]) -> Option<Command> {
    let args: Vec<&str> = args.iter().map(|a| a.to_str()).collect::<Option<_>>()?;
    let plain = |p: &str| !p.is_empty() && !p.starts_with('-');
    let profile = match args.as_slice() {
        ["token"] => None,
        ["token", "--profile" | "-p", p] if plain(p) => Some(*p),
        ["token", a] => Some(a.strip_prefix("--profile=").filter(|p| plain(p))?),
        _ => return None,
    };
    Some(Command::Token {
        profile: profile.map(str::to_owned),
        scopes: Vec::new(),
        id_token: false,
        audience: None,
    })
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let command = match fast_token(&args) {
        Some(c) => c,
        None => {
            if let Some(code) = touchgate_generate::if_requested(Cli::command) {
                return code;
            }
            Cli::parse().command
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("touchgate: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = command.json();
    match rt.block_on(run(command)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            let message = one_line(&format!("{e:#}"), UNCUT);
            let exit = Exit::of_error(e.as_ref());
            eprintln!("touchgate: {message}");
            if json {
                let code = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<ClientError>())
                    .and_then(ClientError::code);
                print_json(&json_out::ErrorDoc::new(exit, code, message));
            }
            exit.into()
        }
    }
}

use json_out::print_json;

/// A connection for the commands that each ask the agent one thing: the
/// hello's answer comes with the first request's (a refused hello is that
/// request's error).
async fn connect() -> Result<Client, ClientError> {
    let mut c = Client::connect_default_pipelined().await?;
    c.on_touch_needed(|p| eprintln!("touchgate: {p}"));
    Ok(c)
}

/// A connection whose hello the agent has answered: for a caller that says
/// "an agent is running" on the strength of the connection alone.
async fn connect_answered() -> Result<Client, ClientError> {
    let mut c = Client::connect_default().await?;
    c.on_touch_needed(|p| eprintln!("touchgate: {p}"));
    Ok(c)
}

async fn run(cmd: Command) -> anyhow::Result<Exit> {
    match cmd {
        Command::Status { out } => {
            let s = connect().await?.status().await?;
            if out.json {
                print_json(&s);
                return Ok(Exit::Ok);
            }
            println!(
                "agent: touchgate-agent {} (pid {}), key backend: {}",
                s.agent_version, s.pid, s.key_backend
            );
            match &s.enrolled {
                Some(e) => println!(
                    "enrolled: {} credential {} (aaguid {})",
                    e.key_name, e.credential, e.aaguid
                ),
                None => println!("enrolled: no key (run touchgate enroll)"),
            }
            if s.credentials.is_empty() {
                println!("sealed credentials: none (run touchgate import FILE)");
            } else {
                println!("sealed credentials: {}", s.credentials.join(", "));
            }
            println!(
                "cached tokens: {}, touches: {}, mints: {}",
                s.cached_tokens, s.touches, s.mints
            );
            if let Some(why) = &s.locked {
                println!("locked: {why} (run touchgate unlock)");
            }
            for w in &s.warnings {
                println!("WARNING: {w}");
            }
            print_profiles(&s.profiles);
        }
        // Reads the vault itself: no agent needed.
        Command::Keys {
            command: KeysCommand::Export { args },
        } => {
            let args: Vec<String> = std::iter::once("export".to_owned()).chain(args).collect();
            run_agent_tool("keys", &args)?
        }
        Command::Keys { command } => keys(command).await?,
        Command::Enroll { force, uv } => {
            let e = connect()
                .await?
                .enroll(force, uv, CallerHint::from_env())
                .await?;
            println!(
                "enrolled {} credential {} (aaguid {})",
                e.key_name, e.credential, e.aaguid
            );
            if let Some(backup) = &e.backup {
                println!("the vault it replaced is kept in {backup}");
            }
        }
        Command::Login {
            no_browser,
            name,
            client_secret_file,
        } => {
            login::run(login::LoginArgs {
                no_browser,
                name,
                client_secret_file,
            })
            .await?
        }
        Command::Import {
            file,
            name,
            delete,
            keep,
        } => {
            let after = match (delete, keep) {
                (true, _) => adc::AfterImport::Delete,
                (_, true) => adc::AfterImport::Keep,
                _ => adc::AfterImport::Ask,
            };
            adc::import(file, &name, after).await?
        }
        Command::Token {
            profile,
            audience: Some(audience),
            ..
        } => {
            let t = connect()
                .await?
                .get_id_token(profile.as_deref(), &audience, CallerHint::from_env())
                .await?;
            println!("{}", t.id_token.expose());
        }
        Command::Token {
            profile, scopes, ..
        } => {
            let t = connect()
                .await?
                .get_token(profile.as_deref(), &scopes, CallerHint::from_env())
                .await?;
            println!("{}", t.access_token.expose());
        }
        Command::Profiles { out } => {
            let p = connect().await?.list_profiles().await?;
            if out.json {
                print_json(&p);
            } else {
                print_profiles(&p);
            }
        }
        Command::Lock => {
            let n = connect().await?.lock().await?;
            println!("locked: dropped {n} cached token(s); touchgate unlock opens it again");
        }
        Command::Unlock => {
            connect().await?.unlock(CallerHint::from_env()).await?;
            println!("unlocked");
        }
        Command::Reload => {
            let profiles = connect().await?.reload().await?;
            println!("reloaded the config: profiles {}", profiles.join(", "));
        }
        Command::Audit { args } => run_agent_tool("audit", &args)?,
        Command::Policy { args } => run_agent_tool("policy", &args)?,
        Command::Demo { auto_touch } => demo::run(auto_touch).await?,
        Command::Init(args) => return init::run(args).await,
        Command::Doctor { profile, out } => {
            if !doctor::run(profile.as_deref(), out.json).await {
                return Ok(Exit::DoctorFailed);
            }
        }
        Command::Exec {
            profile,
            project,
            command,
        } => {
            exec::run(exec::ExecArgs {
                profile,
                project,
                command,
            })
            .await?
        }
        Command::Setup {
            target,
            undo,
            profile,
            project,
            hosts,
        } => {
            setup::run(setup::SetupArgs {
                target,
                undo,
                profile,
                project,
                hosts,
            })
            .await?
        }
    }
    Ok(Exit::Ok)
}

async fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    let mut c = connect().await?;
    match cmd {
        KeysCommand::List { out } if out.json => print_json(&c.list_keys().await?),
        KeysCommand::List { .. } => {
            for k in c.list_keys().await? {
                println!(
                    "{}  {}  aaguid {}  counter {}  {}{}",
                    k.credential,
                    k.key_name,
                    k.aaguid,
                    k.sign_count,
                    if k.uv { "uv, " } else { "" },
                    match &k.suspect {
                        Some(why) => format!("SUSPECT: {why}"),
                        None => "trusted".into(),
                    }
                );
            }
        }
        KeysCommand::Add => {
            let e = c.add_key(CallerHint::from_env()).await?;
            println!(
                "added {} credential {} (aaguid {})",
                e.key_name, e.credential, e.aaguid
            );
        }
        KeysCommand::Remove { credential } => {
            let id = c.remove_key(&credential, CallerHint::from_env()).await?;
            println!("removed key {id}");
        }
        KeysCommand::Trust { credential } => {
            let id = c.trust_key(&credential, CallerHint::from_env()).await?;
            println!("key {id} is trusted again");
        }
        KeysCommand::Export { .. } => anyhow::bail!("touchgate keys export runs without an agent"),
    }
    Ok(())
}

/// Run `touchgate-agent <tool> <args>` (it reads the config and state itself) and
/// pass its exit status on.
fn run_agent_tool(tool: &str, args: &[String]) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?.with_file_name("touchgate-agent");
    let status = std::process::Command::new(&exe)
        .arg(tool)
        .args(args)
        .status()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {}: {e}; install touchgate-agent next to touchgate",
                exe.display()
            )
        })?;
    if status.success() {
        Ok(())
    } else {
        std::process::exit(status.code().unwrap_or(1))
    }
}

fn read_credential(file: &PathBuf) -> anyhow::Result<Secret> {
    let mut text = zeroize::Zeroizing::new(String::new());
    let res = if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text).map(|_| ()))
    };
    res.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    Ok(Secret::new(text.as_str()))
}

fn print_profiles(p: &[touchgate::ProfileInfo]) {
    for p in p {
        println!(
            "profile {}{}: credential {}, {}touch {}, lifetime {}s{}{}",
            p.name,
            if p.is_default { " (default)" } else { "" },
            p.credential,
            p.service_account
                .as_ref()
                .map(|s| format!("as {s}, "))
                .unwrap_or_default(),
            p.touch,
            p.lifetime_secs,
            p.kubectl_window_secs
                .map(|w| format!(
                    ", kubectl window {}",
                    touchgate::kube::window_text(std::time::Duration::from_secs(w))
                ))
                .unwrap_or_default(),
            p.project
                .as_ref()
                .map(|s| format!(", project {s}"))
                .unwrap_or_default(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form the fast path takes, clap parses to the same command; the
    /// rest it leaves to clap.
    #[test]
    fn the_fast_token_path_agrees_with_clap() {
        let cases: &[&[&str]] = &[
            &["token"],
            &["token", "--profile", "window"],
            &["token", "-p", "window"],
            &["token", "--profile=window"],
            &["token", "--profile", "a b=c"],
            &["token", "--profile", "token"],
        ];
        for case in cases {
            let args: Vec<std::ffi::OsString> = case.iter().map(Into::into).collect();
            let fast = fast_token(&args).unwrap_or_else(|| panic!("{case:?}: not fast"));
            let clap =
                Cli::try_parse_from(std::iter::once("touchgate").chain(case.iter().copied()))
                    .unwrap_or_else(|e| panic!("{case:?}: {e}"));
            assert_eq!(
                format!("{fast:?}"),
                format!("{:?}", clap.command),
                "{case:?}"
            );
        }
        let to_clap: &[&[&str]] = &[
            &[],
            &["token", "--profile"],
            &["token", "--profile", ""],
            &["token", "--profile", "-x"],
            &["token", "--profile=-x"],
            &["token", "--profile="],
            &["token", "-pwindow"],
            &["token", "--profile", "a", "--profile", "b"],
            &["token", "--scopes", "x"],
            &["token", "--help"],
            &["token", "extra"],
            &["tokens"],
            &["--version"],
            &["status", "--json"],
        ];
        for case in to_clap {
            let args: Vec<std::ffi::OsString> = case.iter().map(Into::into).collect();
            assert!(fast_token(&args).is_none(), "{case:?} must go to clap");
        }
    }
}
