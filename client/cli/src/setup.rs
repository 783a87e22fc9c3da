//! `touchgate setup gcloud|adc|docker|kubectl|agent` and `touchgate setup --undo …`:
//! point the usual clients at touchgate, or run the agent as a service. Every file is copied byte for byte to
//! `~/.local/state/touchgate/setup-backups/<target>/` before its first change
//! (or recorded as absent); `--undo` puts each back exactly and drops the backup.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context};

mod agent;
mod backup;
mod docker_link;

use backup::Backup;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A gcloud configuration `touchgate` using the shim's credential file (not activated).
    Gcloud,
    /// gcloud's application-default credentials file (the shim's credential file).
    Adc,
    /// docker `credHelpers` entries for gcr.io and Artifact Registry → docker-credential-touchgate,
    /// and that helper: a link to touchgate-shim in ~/.local/bin (or $XDG_BIN_HOME).
    Docker,
    /// A kubeconfig user `touchgate-PROFILE` using the `touchgate-shim kubectl-credential` exec plugin
    /// (the shim's absolute path: apps started without the user's PATH find it too).
    Kubectl,
    /// touchgate-agent as a service: systemd user units (socket activated) or a macOS LaunchAgent.
    Agent,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Gcloud => "gcloud",
            Target::Adc => "adc",
            Target::Docker => "docker",
            Target::Kubectl => "kubectl",
            Target::Agent => "agent",
        }
    }
}

pub struct SetupArgs {
    pub target: Target,
    pub undo: bool,
    pub profile: Option<String>,
    pub project: Option<String>,
    pub hosts: Vec<String>,
}

pub const DOCKER_HOSTS: &[&str] = &[
    "gcr.io",
    "us-docker.pkg.dev",
    "europe-docker.pkg.dev",
    "asia-docker.pkg.dev",
    "us-central1-docker.pkg.dev",
];
pub const DOCKER_HELPER: &str = "touchgate";
pub const KUBE_EXEC_API: &str = "client.authentication.k8s.io/v1";
/// A kubectl context name no kubeconfig has (see [`kubectl`]).
const NO_CONTEXT: &str = "touchgate-setup-asks-no-server";

pub async fn run(args: SetupArgs) -> anyhow::Result<()> {
    let dir = backups_dir()?.join(args.target.name());
    if args.undo {
        return undo(args.target, &dir);
    }
    if matches!(args.target, Target::Gcloud | Target::Adc) {
        check_shim_addr()?;
    }
    let mut backup = Backup::open(&dir)?;
    match args.target {
        Target::Gcloud => gcloud(&args, &mut backup).await,
        Target::Adc => adc(&args, &mut backup),
        Target::Docker => docker(&args, &mut backup),
        Target::Kubectl => kubectl(&args, &mut backup).await,
        Target::Agent => agent::install(&mut backup),
    }?;
    println!(
        "backup in {}; touchgate setup --undo {} restores everything above",
        dir.display(),
        args.target.name()
    );
    Ok(())
}

fn undo(target: Target, dir: &Path) -> anyhow::Result<()> {
    if !dir.join(backup::MANIFEST).exists() {
        println!(
            "nothing to undo for {}: no backup in {}",
            target.name(),
            dir.display()
        );
        return Ok(());
    }
    if target == Target::Agent {
        agent::before_undo()?;
    }
    let b = Backup::open(dir)?;
    for line in b.restore()? {
        println!("{line}");
    }
    println!("removed backup {}", dir.display());
    if target == Target::Agent {
        if let Some(next) = agent::after_undo()? {
            println!("{next}");
        }
    }
    Ok(())
}

fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("HOME is not set"))
}

fn xdg(var: &str, default: &str) -> anyhow::Result<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(v) => Ok(PathBuf::from(v)),
        None => Ok(home()?.join(default)),
    }
}

fn backups_dir() -> anyhow::Result<PathBuf> {
    Ok(xdg("XDG_STATE_HOME", ".local/state")?
        .join("touchgate")
        .join("setup-backups"))
}

/// `$CLOUDSDK_CONFIG`, else ~/.config/gcloud.
pub fn gcloud_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os("CLOUDSDK_CONFIG").filter(|v| !v.is_empty()) {
        Some(v) => Ok(PathBuf::from(v)),
        None => Ok(home()?.join(".config").join("gcloud")),
    }
}

/// gcloud's application-default credentials file, which `touchgate setup adc` writes.
pub fn gcloud_adc_path() -> anyhow::Result<PathBuf> {
    Ok(gcloud_dir()?.join("application_default_credentials.json"))
}

/// The name of the gcloud configuration `touchgate setup gcloud` writes.
pub const GCLOUD_CONFIG_NAME: &str = "touchgate";

/// The file of the gcloud configuration `touchgate setup gcloud` writes.
pub fn gcloud_config_path() -> anyhow::Result<PathBuf> {
    Ok(gcloud_dir()?
        .join("configurations")
        .join(format!("config_{GCLOUD_CONFIG_NAME}")))
}

/// The profile setup configures: its name and project as the agent knows them
/// (a named profile the agent does not know is an error; an unreachable agent is not).
async fn resolve_profile(
    name: Option<&str>,
    want_project: bool,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let list = match crate::connect().await {
        Ok(mut c) => c.list_profiles().await,
        Err(e) => Err(e),
    };
    match list {
        Ok(list) => {
            let p = list
                .into_iter()
                .find(|p| name.map_or(p.is_default, |n| p.name == n));
            match (p, name) {
                (Some(p), _) => Ok((Some(p.name), p.project)),
                (None, Some(n)) => bail!("no profile {n} (see touchgate profiles)"),
                (None, None) => Ok((None, None)),
            }
        }
        Err(e) => {
            if want_project {
                eprintln!(
                    "touchgate: warning: cannot read the profiles ({e}); no project set (use --project)"
                );
            }
            Ok((name.map(str::to_owned), None))
        }
    }
}

/// The `external_account` credential file for the shim at the shared address
/// (`touchgate-shim adc-file` prints the same).
fn adc_file_text(profile: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let addr = touchgate::shim::listen_addr(None).map_err(|e| {
        anyhow!(
            "{e}; export {}=127.0.0.1:{} (or unset it)",
            touchgate::shim::ADDR_ENV,
            touchgate::shim::DEFAULT_PORT
        )
    })?;
    Ok(touchgate::shim::adc_file_text(&format!("http://{addr}"), profile).into_bytes())
}

/// The files `setup gcloud|adc` write send tokens requests to the shared shim
/// address: refuse when another user listens there (nothing listening is fine:
/// the user's own shim may start later).
fn check_shim_addr() -> anyhow::Result<()> {
    use touchgate::tcp_owner::{connect_own, OwnerError};
    let Some(addr) = crate::exec::shared_shim_addr() else {
        return Ok(());
    };
    match connect_own(addr, std::time::Duration::from_secs(2)) {
        Ok(_) | Err(OwnerError::NothingListens { .. }) => Ok(()),
        Err(e) => bail!(
            "{e}: refusing to point credential files at it; stop that listener, or run touchgate-shim serve --listen 127.0.0.1:PORT and export TOUCHGATE_SHIM_ADDR=127.0.0.1:PORT"
        ),
    }
}

fn shim_note() -> String {
    let addr = crate::exec::shared_shim_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "$TOUCHGATE_SHIM_ADDR".into());
    format!("this credential file gets its tokens from `touchgate-shim serve` at {addr}: keep it running")
}

async fn gcloud(args: &SetupArgs, backup: &mut Backup) -> anyhow::Result<()> {
    let (name, profile_project) =
        resolve_profile(args.profile.as_deref(), args.project.is_none()).await?;
    let project = args.project.clone().or(profile_project);
    let adc = adc_file_text(name.as_deref())?;
    let file_name = match &name {
        Some(n) => format!("adc-{n}.json"),
        None => "adc.json".to_owned(),
    };
    let adc_path = xdg("XDG_CONFIG_HOME", ".config")?
        .join("touchgate")
        .join(file_name);
    let adc_path = absolute(&adc_path)?;
    backup.write(&adc_path, &adc)?;
    println!(
        "wrote {}: external_account credential file for profile {}",
        adc_path.display(),
        name.as_deref().unwrap_or("(the agent's default)")
    );

    let mut text = String::from("[core]\n");
    if let Some(p) = &project {
        text.push_str(&format!("project = {p}\n"));
    }
    text.push_str(&format!(
        "\n[auth]\ncredential_file_override = {}\n",
        adc_path.display()
    ));
    let conf = gcloud_config_path()?;
    backup.write(&conf, text.as_bytes())?;
    println!(
        "wrote {}: gcloud configuration touchgate with{} auth/credential_file_override = {}",
        conf.display(),
        project
            .as_deref()
            .map(|p| format!(" core/project = {p},"))
            .unwrap_or_default(),
        adc_path.display()
    );
    println!("{}", shim_note());
    println!(
        "not activated: run `gcloud config configurations activate touchgate`, or per command CLOUDSDK_ACTIVE_CONFIG_NAME=touchgate gcloud …"
    );
    Ok(())
}

fn adc(args: &SetupArgs, backup: &mut Backup) -> anyhow::Result<()> {
    let adc = adc_file_text(args.profile.as_deref())?;
    let path = gcloud_adc_path()?;
    let existed = path.exists();
    backup.write(&path, &adc)?;
    println!(
        "wrote {}: external_account credential file for profile {}{}",
        path.display(),
        args.profile.as_deref().unwrap_or("(the shim's default)"),
        if existed {
            " (the previous file is in the backup)"
        } else {
            ""
        }
    );
    println!("{}", shim_note());
    if let Some(p) = &args.project {
        println!("the file names no project: export GOOGLE_CLOUD_PROJECT={p} for libraries that want one");
    }
    Ok(())
}

fn docker(args: &SetupArgs, backup: &mut Backup) -> anyhow::Result<()> {
    let dir = match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => home()?.join(".docker"),
    };
    let path = dir.join("config.json");
    let mut config = match std::fs::read(&path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => serde_json::json!({}),
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
            .map_err(|e| anyhow!("{} is not valid JSON ({e}); not changed", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    let obj = config
        .as_object_mut()
        .ok_or_else(|| anyhow!("{} is not a JSON object; not changed", path.display()))?;
    let helpers = obj
        .entry("credHelpers")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| {
            anyhow!(
                "credHelpers in {} is not an object; not changed",
                path.display()
            )
        })?;
    let mut hosts: Vec<String> = DOCKER_HOSTS.iter().map(|h| h.to_string()).collect();
    for h in &args.hosts {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    let mut changes = vec![];
    for h in &hosts {
        let old = helpers.insert(h.clone(), serde_json::json!(DOCKER_HELPER));
        match old {
            Some(serde_json::Value::String(o)) if o == DOCKER_HELPER => {}
            Some(o) => changes.push(format!("credHelpers[{h}] = {DOCKER_HELPER} (was {o})")),
            None => changes.push(format!("credHelpers[{h}] = {DOCKER_HELPER}")),
        }
    }
    docker_link::ensure(backup)?;
    if changes.is_empty() {
        println!(
            "{}: credHelpers already name {DOCKER_HELPER} for {}; not changed",
            path.display(),
            hosts.join(", ")
        );
        return Ok(());
    }
    let mut text = serde_json::to_vec_pretty(&config)?;
    text.push(b'\n');
    backup.write(&path, &text)?;
    println!("wrote {}: {}", path.display(), changes.join(", "));
    println!("docker now runs docker-credential-{DOCKER_HELPER} for those registries");
    Ok(())
}

async fn kubectl(args: &SetupArgs, backup: &mut Backup) -> anyhow::Result<()> {
    let path = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(v) => std::env::split_paths(&v)
            .find(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| anyhow!("KUBECONFIG names no file"))?,
        None => home()?.join(".kube").join("config"),
    };
    let (name, _) = resolve_profile(args.profile.as_deref(), false).await?;
    let user = match &name {
        Some(n) => format!("touchgate-{n}"),
        None => "touchgate".to_owned(),
    };
    let mut plugin_args = vec!["kubectl-credential".to_owned()];
    if let Some(n) = &name {
        plugin_args.extend(["--profile".to_owned(), n.clone()]);
    }
    let shim = installed_shim()?;
    let kubectl = std::env::var_os("TOUCHGATE_KUBECTL").unwrap_or_else(|| "kubectl".into());
    // Check kubectl runs before touching anything. gcloud's kubectl dispatcher
    // asks the current context's server for its version even for `version
    // --client`, running that user's exec plugin (a touch, if it is ours): with
    // an empty kubeconfig there is no server to ask.
    match Command::new(&kubectl)
        .args(["version", "--client"])
        .env("KUBECONFIG", "/dev/null")
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(_) => bail!("kubectl version --client failed; kubectl is needed to edit the kubeconfig"),
        Err(e) => bail!(
            "cannot run kubectl ({e}): it is needed to edit {}; install kubectl or add the user by hand",
            path.display()
        ),
    }
    backup.before_change(&path)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut cmd = Command::new(&kubectl);
    // The dispatcher reads the global flags too: with --kubeconfig alone it
    // would ask that file's current context's server (running its plugin). A
    // context no kubeconfig has makes it skip the question; `config
    // set-credentials` itself ignores --context.
    cmd.arg(format!("--context={NO_CONTEXT}"))
        .arg("config")
        .arg("set-credentials")
        .arg(&user)
        .arg(format!("--exec-command={}", shim.display()))
        .arg(format!("--exec-api-version={KUBE_EXEC_API}"))
        .arg("--exec-interactive-mode=Never")
        // The plugin then tells the agent which cluster the token goes to (a kubectl window needs it).
        .arg("--exec-provide-cluster-info=true");
    for a in &plugin_args {
        cmd.arg(format!("--exec-arg={a}"));
    }
    cmd.arg(format!("--kubeconfig={}", path.display()));
    let out = cmd.output().context("cannot run kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl config set-credentials failed: {}; touchgate setup --undo kubectl restores {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            path.display()
        );
    }
    println!(
        "wrote {}: user {user} with exec plugin {} {} (apiVersion {KUBE_EXEC_API}, interactiveMode Never, provideClusterInfo)",
        path.display(),
        shim.display(),
        plugin_args.join(" ")
    );
    println!(
        "use it: kubectl config set-context --current --user={user} (or set-context NAME --cluster=… --user={user})"
    );
    Ok(())
}

/// The touchgate-shim installed beside touchgate, which must exist: setup
/// names it by this absolute path.
fn installed_shim() -> anyhow::Result<PathBuf> {
    let shim = crate::exec::shim_exe()?;
    if !shim.is_file() {
        bail!(
            "no touchgate-shim beside touchgate ({} is missing): install it there",
            shim.display()
        );
    }
    Ok(shim)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("bad path {}", p.display()))
}
