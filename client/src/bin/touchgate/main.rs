//! `touchgate`: talk to the agent — status, enrol, import, token, lock — and
//! `touchgate demo`, the whole flow on a software key and a Google emulator.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use touchgate::{CallerHint, Client, ClientError, Secret};

mod demo;

#[derive(Parser, Debug)]
#[command(
    name = "touchgate",
    version,
    about = "Touch-gated Google Cloud tokens from your security key"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the agent, the enrolled key, sealed credentials and profiles.
    Status,
    /// Create a credential on the security key (touch it when asked).
    Enroll {
        /// Replace an existing enrolment (credentials sealed under it become unreadable).
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
    /// Seal a Google credential (service-account key JSON or authorized_user ADC file) under the key.
    Import {
        /// The file to import; `-` reads standard input.
        file: PathBuf,
        /// Name to seal it under (profiles refer to it as `credential`).
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Print an access token for a profile on stdout (nothing else).
    Token {
        #[arg(long, short)]
        profile: Option<String>,
        /// Scopes, comma separated (default: the profile's).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// List the configured profiles.
    Profiles,
    /// Drop every cached token and unsealed credential in the agent.
    Lock,
    /// Run the whole flow on a software key and a local Google emulator, in a temp dir.
    Demo {
        /// Approve touches automatically (non-interactive run).
        #[arg(long)]
        auto_touch: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// List the enrolled keys.
    List,
    /// Enrol another key (a backup): touch an enrolled key, then the new one twice.
    Add,
    /// Forget an enrolled key (the last one cannot be removed).
    Remove {
        /// The key's credential id, or a unique prefix of it (see `touchgate keys list`).
        credential: String,
    },
    /// Trust a key that was marked suspect (for example after its counter went back).
    Trust { credential: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("touchgate: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join("; ")
}

async fn connect() -> Result<Client, ClientError> {
    let mut c = Client::connect_default().await?;
    c.on_touch_needed(|p| eprintln!("touchgate: {p}"));
    Ok(c)
}

async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Status => {
            let s = connect().await?.status().await?;
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
            print_profiles(&s.profiles);
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
        }
        Command::Import { file, name } => {
            let text = read_credential(&file)?;
            let kind = connect()
                .await?
                .import(&name, text, CallerHint::from_env())
                .await?;
            println!("sealed {kind} credential as \"{name}\" under the enrolled key");
            if file.as_os_str() != "-" {
                println!(
                    "the agent no longer needs {}: delete it (shred -u) once you have a backup",
                    file.display()
                );
            }
        }
        Command::Token { profile, scopes } => {
            let t = connect()
                .await?
                .get_token(profile.as_deref(), &scopes, CallerHint::from_env())
                .await?;
            println!("{}", t.access_token.expose());
        }
        Command::Profiles => print_profiles(&connect().await?.list_profiles().await?),
        Command::Lock => {
            let n = connect().await?.lock().await?;
            println!("locked: dropped {n} cached token(s)");
        }
        Command::Demo { auto_touch } => demo::run(auto_touch).await?,
    }
    Ok(())
}

async fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    let mut c = connect().await?;
    match cmd {
        KeysCommand::List => {
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
            let id = c.remove_key(&credential).await?;
            println!("removed key {id}");
        }
        KeysCommand::Trust { credential } => {
            let id = c.trust_key(&credential).await?;
            println!("key {id} is trusted again");
        }
    }
    Ok(())
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
            "profile {}{}: credential {}, {}touch {}, lifetime {}s{}",
            p.name,
            if p.is_default { " (default)" } else { "" },
            p.credential,
            p.service_account
                .as_ref()
                .map(|s| format!("as {s}, "))
                .unwrap_or_default(),
            p.touch,
            p.lifetime_secs,
            p.project
                .as_ref()
                .map(|s| format!(", project {s}"))
                .unwrap_or_default(),
        );
    }
}
