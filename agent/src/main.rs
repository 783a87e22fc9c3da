//! `touchgate-agent`: like ssh-agent, for Google Cloud tokens.
//!
//! Without `--foreground` it starts itself in the background and prints
//! `TOUCHGATE_SOCK=…; export TOUCHGATE_SOCK;` for `eval "$(touchgate-agent)"`.
//!
//! # Layout
//!
//! This file is the command line only: flags, starting in the background, and
//! the hand-over to `touchgate_agent::daemon` (the library's crate root maps
//! the rest).
#![deny(rustdoc::broken_intra_doc_links)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use clap::{CommandFactory, Parser};
use touchgate::Exit;
use touchgate_agent::daemon::activation::{self, Activation};
use touchgate_agent::daemon::run::{build, Settings};
use touchgate_agent::daemon::server;

#[derive(Parser, Debug)]
#[command(
    name = "touchgate-agent",
    version,
    about = "Hands out touch-gated Google Cloud tokens over a Unix socket"
)]
struct Args {
    /// Stay in the foreground and log to stderr (for systemd, tests, debugging).
    #[arg(long, short = 'f')]
    foreground: bool,
    /// In the foreground, still print the TOUCHGATE_SOCK line once the socket is ready.
    #[arg(long)]
    print_sock: bool,
    /// Socket path (default: TOUCHGATE_SOCK, else $XDG_RUNTIME_DIR/touchgate/agent.sock).
    #[arg(long, env = "TOUCHGATE_SOCK")]
    socket: Option<PathBuf>,
    /// Config file (default: TOUCHGATE_CONFIG, else ~/.config/touchgate/config.toml).
    #[arg(long, env = "TOUCHGATE_CONFIG")]
    config: Option<PathBuf>,
    /// State directory (default: TOUCHGATE_STATE_DIR, else ~/.local/state/touchgate).
    #[arg(long, env = "TOUCHGATE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Internal: the background child of a daemonising start.
    #[arg(long, hide = true)]
    daemon_child: bool,
    #[command(subcommand)]
    command: Option<AgentCommand>,
}

#[derive(clap::Subcommand, Debug)]
enum AgentCommand {
    /// Read the audit log (works without a running agent).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The enrolled keys (works without a running agent).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask the policy what it would decide (reads the config; no agent needed).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
enum PolicyCommand {
    /// Print the decision for a program asking for a profile, and the rule that made it.
    /// Exits 0 when allowed, 4 when refused, 1 when it cannot decide.
    Check {
        #[arg(long)]
        profile: Option<String>,
        /// The asking program's file. A `#!` script is taken as the kernel runs it:
        /// its interpreter running it.
        #[arg(long, required_unless_present = "pid", conflicts_with = "pid")]
        exe: Option<PathBuf>,
        /// With --exe of an interpreter: the script it runs.
        #[arg(long, requires = "exe")]
        script: Option<PathBuf>,
        /// A running process, seen exactly as the agent sees a caller.
        #[arg(long)]
        pid: Option<u32>,
        /// Scopes, comma separated (default: the profile's).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Print the decision as one JSON document (see the README).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
enum KeysCommand {
    /// Write the public keys (enrolled and retired) as JSON, for `audit verify --keys`
    /// somewhere the vault cannot be changed by this user.
    Export {
        /// Write here instead of to stdout (the file holds public keys only).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Re-check the hash chain and every touch signature; names the first bad line.
    Verify {
        /// The log (default: audit.jsonl in the state dir).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Trust the keys in this file (from `touchgate keys export`) instead of the vault's.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Also compare the log with the heads the agent sent to the systemd journal
        /// (finds a cut or replaced tail).
        #[arg(long)]
        journal: bool,
        /// With --journal: read this journal directory (journalctl -D) instead of the default.
        #[arg(long, requires = "journal")]
        journal_directory: Option<PathBuf>,
    },
    /// Print the log as a table (or, with --json, as JSON lines: one record per line).
    Show {
        #[arg(long)]
        file: Option<PathBuf>,
        /// JSON lines: each record as the log stores it (`{"invalid_line": N}` for a bad line).
        #[arg(long)]
        json: bool,
        /// Only records at or after this time (Unix seconds, or an RFC 3339 date).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        profile: Option<String>,
    },
}

fn main() -> ExitCode {
    // First, while nothing else owns a descriptor: a socket systemd passed us.
    let activation = activation::from_env();
    if let Some(code) = touchgate_generate::if_requested(Args::command) {
        return code;
    }
    let args = Args::parse();
    let mut settings = Settings::from_env();
    if let Some(s) = &args.socket {
        settings.socket = s.clone();
    }
    if let Some(c) = &args.config {
        settings.config_path = c.clone();
    }
    if let Some(d) = &args.state_dir {
        settings.state_dir = d.clone();
    }
    match &args.command {
        Some(AgentCommand::Audit { command }) => return audit_command(&settings, command),
        Some(AgentCommand::Policy { command }) => return policy_command(&settings, command),
        Some(AgentCommand::Keys { command }) => return keys_command(&settings, command),
        None => {}
    }
    let activation = match activation {
        Ok(a) => a,
        Err(e) => return fail(&args, &e.to_string()),
    };
    if let Activation::Socket(p) = &activation {
        settings.socket = p.path.clone();
    }
    // Under socket activation systemd supervises us: never daemonise.
    let activated = matches!(activation, Activation::Socket(_));
    if !args.foreground && !args.daemon_child && !activated {
        return daemonise(&settings);
    }
    init_logging();
    // Before anything is unsealed: no other process of ours may read our memory.
    if let Err(e) = touchgate_agent::daemon::harden::deny_tracing() {
        tracing::warn!("{e}; other processes of this user may be able to read the agent's memory");
    }
    match &activation {
        Activation::Ignored(pid) => tracing::info!(
            "LISTEN_PID={pid} names another process: no socket activation, binding {}",
            settings.socket.display()
        ),
        Activation::Socket(p) if p.extra_closed > 0 => tracing::warn!(
            "socket activation passed {} more sockets than the one this agent serves: closed them",
            p.extra_closed
        ),
        _ => {}
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&args, &format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(async move {
        let agent = match build(&settings) {
            Ok(a) => a,
            Err(e) => return fail(&args, &format!("{e:#}")),
        };
        // Every start says what weakens the set-up (the software key above all);
        // a daemonising start passes it to the terminal that ran us.
        for w in agent.security_warnings() {
            tracing::warn!("{w}");
            if args.daemon_child {
                println!("WARN {w}");
            }
        }
        // The default socket fell back to the shared temp dir: say so.
        if args.socket.is_none() && !activated {
            if let (_, Some(note)) = touchgate::paths::socket_choice() {
                tracing::warn!("{note}");
            }
        }
        let listener = match activation {
            Activation::Socket(passed) => match server::Listener::activated(passed) {
                Ok(l) => {
                    tracing::info!("socket activation: serving the socket systemd passed");
                    l
                }
                Err(e) => {
                    return fail(
                        &args,
                        &format!("socket activation: cannot serve the passed socket: {e}"),
                    )
                }
            },
            _ => match server::bind(&settings.socket).await {
                Ok(l) => l,
                Err(e) => return fail(&args, &e.to_string()),
            },
        };
        // Like ssh-agent: SIGUSR1 locks. Installed before we say we are ready.
        if let Ok(mut usr1) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        {
            let a = agent.clone();
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    a.lock(&touchgate_agent::caller::Caller::default(), "SIGUSR1");
                }
            });
        }
        // SIGHUP re-reads the config (reload() logs either outcome; a bad file
        // keeps the running config). Installed before we say we are ready.
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            let a = agent.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = a.reload();
                }
            });
        }
        // A file size limit (ulimit -f) makes a write fail with EFBIG, which the
        // audit writer answers by refusing; the signal must not kill us first.
        if let Ok(mut xfsz) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
        {
            tokio::spawn(async move { while xfsz.recv().await.is_some() {} });
        }
        // Like SIGUSR1 and SIGHUP: handled before we say we are ready.
        let shutdown = shutdown_signal();
        if args.daemon_child {
            println!("READY");
        } else if args.print_sock {
            println!("{}", export_line(&settings));
        }
        let _ = std::io::stdout().flush();
        server::serve(agent.clone(), listener, shutdown).await;
        // Nothing pending is lost at shutdown (window-hit counts included).
        agent.close_audit();
        ExitCode::SUCCESS
    })
}

fn fail(args: &Args, msg: &str) -> ExitCode {
    if args.daemon_child {
        println!("ERROR {msg}");
    } else {
        eprintln!("touchgate-agent: {msg}");
    }
    ExitCode::FAILURE
}

fn export_line(s: &Settings) -> String {
    let p = s.socket.display().to_string();
    format!("TOUCHGATE_SOCK={p}; export TOUCHGATE_SOCK;")
}

/// Start a copy of ourselves in the background (own process group, logs to the
/// state dir), wait until its socket is ready, print the export line.
fn daemonise(settings: &Settings) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("touchgate-agent: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    // 0700 and 0600 whatever the umask; the child tightens what predates us and says so.
    if let Err(e) = touchgate_agent::state_dir::create(&settings.state_dir) {
        eprintln!("touchgate-agent: cannot create the state directory {e}");
        return ExitCode::FAILURE;
    }
    let log_path = settings.state_dir.join("agent.log");
    let log = match touchgate_agent::state_dir::open_private_append(&log_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("touchgate-agent: cannot open the log {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--daemon-child")
        .arg("--socket")
        .arg(&settings.socket)
        .arg("--config")
        .arg(&settings.config_path)
        .arg("--state-dir")
        .arg(&settings.state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("touchgate-agent: cannot start the background agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    // Warnings first (to the terminal, never to the eval'd stdout), then READY or ERROR.
    loop {
        line.clear();
        let _ = out.read_line(&mut line);
        match line.trim_end().strip_prefix("WARN ") {
            Some(w) => eprintln!("touchgate-agent: warning: {w}"),
            None => break,
        }
    }
    match line.trim_end() {
        "READY" => {
            println!("{}", export_line(settings));
            println!("echo Agent pid {};", child.id());
            ExitCode::SUCCESS
        }
        other => {
            let msg = other
                .strip_prefix("ERROR ")
                .unwrap_or("the background agent exited during start");
            eprintln!("touchgate-agent: {msg} (log: {})", log_path.display());
            let _ = child.wait();
            ExitCode::FAILURE
        }
    }
}

fn audit_command(settings: &Settings, cmd: &AuditCommand) -> ExitCode {
    use touchgate_agent::audit;
    let default = settings.state_dir.join("audit.jsonl");
    let res = match cmd {
        AuditCommand::Verify {
            file,
            keys,
            journal,
            journal_directory,
        } => {
            let path = file.clone().unwrap_or(default);
            verify_audit(
                &path,
                keys.as_deref(),
                &settings.state_dir.join("vault.json"),
                journal.then(|| audit::journal::Journalctl {
                    directory: journal_directory.clone(),
                }),
            )
            .map(|said| println!("{said}"))
        }
        AuditCommand::Show {
            file,
            since,
            profile,
            json,
        } => {
            let path = file.clone().unwrap_or(default);
            let format = if *json {
                audit::ShowFormat::JsonLines
            } else {
                audit::ShowFormat::Table
            };
            audit::show_as(
                format,
                &path,
                since.as_deref(),
                profile.as_deref(),
                &mut std::io::stdout(),
            )
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("touchgate-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `audit verify`: the log against the trusted keys and, if asked, the journal.
fn verify_audit(
    path: &std::path::Path,
    keys: Option<&std::path::Path>,
    vault: &std::path::Path,
    journal: Option<touchgate_agent::audit::journal::Journalctl>,
) -> Result<String, String> {
    use touchgate_agent::audit::{self, journal::JournalHeads, trust};
    let trusted = match keys {
        Some(k) => trust::from_file(k)?,
        None => trust::from_vault(vault)?,
    };
    let v = audit::verify_file(path, &trusted.keys).map_err(|e| e.to_string())?;
    let mut said = format!(
        "audit log {} verifies: {}. Keys trusted: {}",
        path.display(),
        v.summary(),
        trusted.source
    );
    if let Some(j) = journal {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .uid();
        let name = audit::journal::journal_name(path);
        let heads = j.heads(&name, uid)?;
        said += &format!("; {}", audit::journal::check_against(&v, &heads, &name)?);
    }
    Ok(said)
}

fn keys_command(settings: &Settings, cmd: &KeysCommand) -> ExitCode {
    let KeysCommand::Export { out } = cmd;
    let path = settings.state_dir.join("vault.json");
    let res = touchgate_agent::vault::VaultFile::load(&path)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            if v.enrolments.is_empty() && v.retired.is_empty() {
                return Err(format!(
                    "no key is enrolled in {}: run touchgate enroll first",
                    path.display()
                ));
            }
            let text = touchgate_agent::audit::trust::export(&v);
            match out {
                Some(o) => std::fs::write(o, text)
                    .map_err(|e| format!("cannot write {}: {e}", o.display())),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("touchgate-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn policy_command(settings: &Settings, cmd: &PolicyCommand) -> ExitCode {
    use touchgate_agent::config::Config;
    use touchgate_agent::policy::subject::Subject;
    use touchgate_agent::policy::{decide, Decision};
    let PolicyCommand::Check {
        profile,
        exe,
        script,
        pid,
        scopes,
        json,
    } = cmd;
    let config = match Config::load(&settings.config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("touchgate-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let name = match profile
        .clone()
        .or_else(|| config.default_profile_name().map(str::to_owned))
    {
        Some(n) => n,
        None => {
            eprintln!("touchgate-agent: no default profile: pass --profile");
            return ExitCode::FAILURE;
        }
    };
    let Some(p) = config.profiles.get(&name) else {
        eprintln!(
            "touchgate-agent: unknown profile \"{name}\": use one of {}",
            config.profile_names().join(", ")
        );
        return ExitCode::FAILURE;
    };
    let scopes = if scopes.is_empty() {
        p.scopes.clone()
    } else {
        scopes.clone()
    };
    let (who, launcher) = match (exe, script, pid) {
        (_, _, Some(pid)) => {
            let who = Subject::of_process(*pid);
            if who.exe.is_none() {
                eprintln!("touchgate-agent: cannot read process {pid}: it is gone or another user's; pass the pid of one of your running programs");
                return ExitCode::FAILURE;
            }
            (who, None)
        }
        (Some(exe), Some(script), None) => match Subject::of_exe_and_script(exe, script) {
            Ok(who) => (who, None),
            Err(e) => {
                eprintln!("touchgate-agent: {e}");
                return ExitCode::FAILURE;
            }
        },
        (Some(exe), None, None) => {
            let (who, launcher) = Subject::of_file(exe);
            (who, launcher.map(|l| l.note(exe)))
        }
        (None, _, None) => {
            eprintln!("touchgate-agent: say which program: --exe PATH or --pid PID");
            return ExitCode::FAILURE;
        }
    };
    let decision = decide(&name, p, &who, &scopes);
    let code = if matches!(decision, Decision::Allow(_)) {
        Exit::Ok
    } else {
        Exit::PolicyRefused
    };
    if *json {
        let doc = PolicyCheckJson::new(&name, p, &who, &scopes, decision, launcher);
        match serde_json::to_string(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("touchgate-agent: cannot write JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
        return code.into();
    }
    match decision {
        Decision::Allow(grant) => {
            let (rule, window) = (grant.rule(), &grant.window);
            let kubectl = p
                .kubectl_window
                .map(|w| format!("; kubectl window: {}", touchgate::kube::window_text(w)))
                .unwrap_or_default();
            println!(
                "allow: profile {name} for {who} (rule: {rule}; touch: {}{kubectl}; window: {window})",
                p.touch
            );
        }
        Decision::Refuse { rule, reason } => println!("refuse: {reason} (rule: {rule})"),
    }
    if let Some(note) = launcher {
        eprintln!("{note}");
    }
    code.into()
}

/// `policy check --json`: one document, the decision and what it was about.
/// `window` only when allowed, `reason` only when refused; `note` is the launcher note
/// (a shell script given as --exe) that the text form prints on stderr.
#[derive(serde::Serialize)]
struct PolicyCheckJson {
    /// `allow` or `refuse`.
    decision: &'static str,
    profile: String,
    /// The program as the agent would see it.
    exe: Option<String>,
    script: Option<String>,
    scopes: Vec<String>,
    /// The profile's touch rule (`every-token` or a window such as `10m`).
    touch: String,
    /// The profile's `kubectl_window` (such as `5m`), if it sets one.
    kubectl_window: Option<String>,
    /// The rule that decided.
    rule: String,
    window: Option<String>,
    reason: Option<String>,
    note: Option<String>,
}

impl PolicyCheckJson {
    fn new(
        profile: &str,
        settings: &touchgate_agent::config::Profile,
        who: &touchgate_agent::policy::subject::Subject,
        scopes: &[String],
        decision: touchgate_agent::policy::Decision,
        note: Option<String>,
    ) -> Self {
        use touchgate_agent::policy::Decision;
        let (decision, rule, window, reason) = match decision {
            Decision::Allow(grant) => ("allow", grant.rule(), Some(grant.window.to_string()), None),
            Decision::Refuse { rule, reason } => ("refuse", rule, None, Some(reason)),
        };
        PolicyCheckJson {
            decision,
            profile: profile.to_owned(),
            exe: who.exe.as_ref().map(|p| p.display().to_string()),
            script: who.script.as_ref().map(|p| p.display().to_string()),
            scopes: scopes.to_vec(),
            touch: settings.touch.to_string(),
            kubectl_window: settings
                .kubectl_window
                .map(touchgate::duration::format_duration),
            rule,
            window,
            reason,
            note,
        }
    }
}

/// Logs go to the systemd journal (structured fields) when systemd started us
/// with its journal on stderr (`JOURNAL_STREAM`), else to stderr.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOUCHGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|l| l.with_syslog_identifier("touchgate-agent".into()));
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(j) => registry.with(j).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .init(),
    }
}

/// SIGTERM or SIGINT. The handlers are installed when this is called (not
/// when first polled), so a stop right after start is a clean shutdown too.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    }
}
