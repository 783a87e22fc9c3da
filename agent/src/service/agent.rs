//! The agent's state and its answers to every request but GetToken and GetIdToken (see
//! [`crate::service::issue`]) and the key ceremonies (see [`crate::service::enrol`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc::UnboundedSender;
use touchgate::sync::{MutexExt, RwLockExt};
use touchgate::{
    EnrolledReply, ErrorCode, ProfileInfo, Request, Response, SecurityWarning, StatusReply,
};

use crate::audit::AuditLog;
use crate::caller::Caller;
use crate::clock::Clock;
use crate::config::{Config, OnAuditFailure};
use crate::fido::ids::{format_aaguid, short_id};
use crate::fido::key::SecurityKey;
use crate::fido::pin::{PinEntry, Pinentry};
use crate::notify::Notifier;
use crate::service::error::AgentError;
use crate::service::flights::Flights;
use crate::service::lock::LockState;
use crate::service::session::Sessions;
use crate::upstream::Upstream;
use crate::vault::{CounterLog, VaultFile};

/// Where the agent keeps its state.
#[derive(Debug, Clone)]
pub struct StatePaths {
    pub vault: PathBuf,
    /// The keys' signature counters since the vault's last save.
    pub counters: PathBuf,
    pub audit: PathBuf,
}

impl StatePaths {
    pub fn in_dir(dir: &std::path::Path) -> StatePaths {
        StatePaths {
            vault: dir.join("vault.json"),
            counters: dir.join("sign-counters"),
            audit: dir.join("audit.jsonl"),
        }
    }
}

/// Progress messages (touch prompts) for the connection that asked.
pub type Progress = UnboundedSender<String>;

pub struct Agent {
    /// The config in force; `reload` swaps it only for one that parsed.
    config: RwLock<Arc<Config>>,
    /// Where `reload` reads the config from (unset: no reload).
    config_path: Mutex<Option<PathBuf>>,
    pub(super) key: Arc<dyn SecurityKey>,
    pub(super) upstream: Arc<dyn Upstream>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) paths: StatePaths,
    /// The vault file as last saved. Held across a key ceremony so one touch
    /// runs at a time, and by the write of a touch's counter until it is done
    /// (shared with that write: see `enrol::CounterSave`).
    pub(super) vault: Arc<tokio::sync::Mutex<VaultFile>>,
    /// Where a touch's new counter is made durable (appended under the vault's lock).
    pub(super) counters: Arc<Mutex<CounterLog>>,
    pub(super) sessions: Mutex<Sessions>,
    /// Issuances in progress, one per (window, profile, scopes).
    pub(super) flights: Flights,
    pub(super) touches: AtomicU64,
    pub(super) mints: AtomicU64,
    pub(super) pin_entry: Arc<dyn PinEntry>,
    pub(super) audit: AuditLog,
    /// Locked or not, and why; the lock count an issuance checks against.
    pub(super) lock_state: LockState,
    /// Desktop notifications (never waited for).
    pub(super) notifier: Mutex<Arc<dyn Notifier>>,
}

impl Agent {
    /// An agent asking for PINs with the configured pinentry program.
    pub fn new(
        config: Config,
        key: Arc<dyn SecurityKey>,
        upstream: Arc<dyn Upstream>,
        clock: Arc<dyn Clock>,
        paths: StatePaths,
    ) -> Result<Arc<Agent>, AgentError> {
        let pin_entry = Arc::new(Pinentry {
            program: config.key.pinentry.clone(),
        });
        Agent::with_pin_entry(config, key, upstream, clock, paths, pin_entry)
    }

    pub fn with_pin_entry(
        config: Config,
        key: Arc<dyn SecurityKey>,
        upstream: Arc<dyn Upstream>,
        clock: Arc<dyn Clock>,
        paths: StatePaths,
        pin_entry: Arc<dyn PinEntry>,
    ) -> Result<Arc<Agent>, AgentError> {
        let started = clock.now();
        let mut vault = VaultFile::load(&paths.vault)
            .map_err(|e| AgentError::new(ErrorCode::Vault, e.to_string()))?;
        let counters = CounterLog::open(&paths.counters, &mut vault)
            .map_err(|e| AgentError::new(ErrorCode::Vault, e.to_string()))?;
        let audit = AuditLog::open(&paths.audit).map_err(|e| {
            AgentError::new(
                ErrorCode::Internal,
                format!("cannot read the audit log {}: {e}", paths.audit.display()),
            )
        })?;
        let notifier = crate::notify::from_settings(&config.notify);
        Ok(Arc::new(Agent {
            notifier: Mutex::new(notifier),
            config: RwLock::new(Arc::new(config)),
            config_path: Mutex::new(None),
            key,
            upstream,
            clock,
            paths,
            vault: Arc::new(tokio::sync::Mutex::new(vault)),
            counters: Arc::new(Mutex::new(counters)),
            sessions: Mutex::new(Sessions::default()),
            flights: Flights::default(),
            touches: AtomicU64::new(0),
            mints: AtomicU64::new(0),
            pin_entry,
            audit,
            lock_state: LockState::new(started),
        }))
    }

    /// The config in force (a snapshot: a reload does not change it under the caller).
    pub fn config(&self) -> Arc<Config> {
        self.config.read_locked().clone()
    }

    /// The file `reload` re-reads.
    pub fn set_config_path(&self, path: PathBuf) {
        *self.config_path.locked() = Some(path);
    }

    /// Re-read the config file. A file that does not parse is a one-line error
    /// (file:line:col) and the running config stays. Profiles, `[agent]` and
    /// `[notify]` take effect at once; `[key]` and `[google]` at the next start.
    /// Changed profiles drop cached tokens and approval windows (a tighter rule
    /// must not be bypassed by a window the old one opened).
    pub fn reload(&self) -> Result<Vec<String>, AgentError> {
        let path = self.config_path.locked().clone().ok_or_else(|| {
            AgentError::new(
                ErrorCode::Config,
                "this agent was started without a config file path: nothing to reload",
            )
        })?;
        // The window hits counted so far are written under the config they were made under.
        self.audit.flush_reuse();
        let refused = |msg: String| {
            tracing::warn!("reload refused, the running config stays: {msg}");
            AgentError::new(
                ErrorCode::Config,
                format!("{msg} (the agent keeps its running config)"),
            )
        };
        if !path.exists() {
            return Err(refused(format!(
                "config {} is gone: put it back and run touchgate reload again",
                path.display()
            )));
        }
        let new = Config::load(&path).map_err(|e| {
            refused(e.0.replace(
                "fix the file and start the agent again",
                "fix the file and run touchgate reload again",
            ))
        })?;
        if let Err(e) = new.key.touch.parse::<crate::fido::key::soft::TouchMode>() {
            return Err(refused(format!(
                "config {}: key.touch: {e}",
                path.display()
            )));
        }
        let old = self.config();
        if new.key != old.key || new.google != old.google {
            tracing::warn!("config reloaded: changes to [key] and [google] take effect when the agent restarts");
        }
        if new.notify != old.notify {
            self.set_notifier(crate::notify::from_settings(&new.notify));
        }
        let profiles = new.profile_names();
        if new.profiles != old.profiles || new.default_profile != old.default_profile {
            let n = self.sessions.locked().lock();
            tracing::info!(
                dropped_tokens = n,
                "profiles changed: cached tokens and approval windows dropped"
            );
        }
        let mut new = new;
        // The key and upstream were built from the old settings: keep saying so.
        new.key = old.key.clone();
        new.google = old.google.clone();
        *self.config.write_locked() = Arc::new(new);
        tracing::info!(config = %path.display(), profiles = %profiles.join(", "), "config reloaded");
        Ok(profiles)
    }

    /// Replace the notifier (tests: a recording one).
    pub fn set_notifier(&self, n: Arc<dyn Notifier>) {
        *self.notifier.locked() = n;
    }

    /// Queue a desktop notification; returns at once.
    pub(crate) fn notify(&self, n: &crate::notify::Notification) {
        let notifier = self.notifier.locked().clone();
        notifier.notify(n);
    }

    pub fn key(&self) -> &Arc<dyn SecurityKey> {
        &self.key
    }

    /// Answer one request from `caller`.
    pub async fn handle(
        self: &Arc<Self>,
        caller: &Caller,
        req: Request,
        progress: Progress,
    ) -> Response {
        let res = match req {
            Request::GetToken {
                profile,
                scopes,
                caller: hint,
            } => self
                .ask_token(caller.asking(&hint), profile, scopes, None, progress)
                .await
                .map(Response::Token),
            Request::GetKubectlToken {
                profile,
                cluster,
                caller: hint,
            } => self
                .ask_token(
                    caller.asking(&hint),
                    profile,
                    vec![],
                    cluster.as_ref(),
                    progress,
                )
                .await
                .map(Response::Token),
            Request::GetIdToken {
                profile,
                audience,
                caller: hint,
            } => self
                .ask_id_token(caller.asking(&hint), profile, audience, progress)
                .await
                .map(Response::IdToken),
            Request::Status => Ok(Response::Status(self.status().await)),
            Request::Lock => Ok(Response::Locked {
                dropped_tokens: self.lock_recorded(caller, "locked by touchgate lock").await,
            }),
            Request::Unlock { caller: hint } => self
                .unlock(caller, &hint, progress)
                .await
                .map(|()| Response::Unlocked),
            Request::ListProfiles => Ok(Response::Profiles(self.profiles())),
            Request::Reload => self
                .reload()
                .map(|profiles| Response::Reloaded { profiles }),
            Request::Enroll {
                force,
                uv,
                caller: hint,
            } => self
                .enroll(caller, force, uv, &hint, progress)
                .await
                .map(Response::Enrolled),
            Request::Import {
                name,
                credential_json,
                caller: hint,
            } => self
                .import(caller, &name, credential_json, &hint, progress)
                .await
                .map(|kind| Response::Imported {
                    name,
                    kind: kind.to_owned(),
                }),
            Request::ListKeys => Ok(Response::Keys(self.list_keys().await)),
            Request::AddKey { caller: hint } => self
                .add_key(caller, &hint, progress)
                .await
                .map(Response::Enrolled),
            Request::RemoveKey {
                credential,
                caller: hint,
            } => self
                .remove_key(caller, &credential, &hint, progress)
                .await
                .map(|credential| Response::KeyRemoved { credential }),
            Request::TrustKey {
                credential,
                caller: hint,
            } => self
                .trust_key(caller, &credential, &hint, progress)
                .await
                .map(|credential| Response::KeyTrusted { credential }),
        };
        res.unwrap_or_else(|e| Response::Error(e.into()))
    }

    pub async fn status(&self) -> StatusReply {
        self.check_idle();
        self.check_key();
        let locked = self.lock_state.reason();
        let vault = self.vault.lock().await;
        StatusReply {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            key_backend: self.key.backend().into(),
            enrolled: vault.enrolment().map(enrolled_reply),
            credentials: vault.entry_names(),
            profiles: self.profiles(),
            cached_tokens: self.sessions.locked().cached_tokens(),
            touches: self.touches.load(Ordering::Relaxed),
            mints: self.mints.load(Ordering::Relaxed),
            locked,
            warnings: self.security_warnings(),
        }
    }

    /// What in this agent's set-up weakens touchgate's promises (logged at
    /// start, shown by `touchgate status` and `touchgate doctor`).
    pub fn security_warnings(&self) -> Vec<SecurityWarning> {
        let mut w = Vec::new();
        if let Some(state_file) = self.key.plaintext_secret() {
            w.push(SecurityWarning::SoftKey {
                state_file: state_file.display().to_string(),
            });
        }
        let key = &self.config().key;
        if !key.allowed_aaguids.is_empty() && key.attestation_roots.is_empty() {
            w.push(SecurityWarning::UnattestedAaguids);
        }
        if self.config().audit.on_failure == OnAuditFailure::Allow {
            w.push(SecurityWarning::AuditFailOpen);
        }
        w
    }

    /// Make `r` durable before going on. When it cannot be, the caller gets a
    /// one-line error naming the file and the OS error — unless
    /// `audit.on_failure = "allow"`, which issues anyway (logged).
    pub(crate) async fn record(&self, r: crate::audit::Record) -> Result<(), AgentError> {
        match self.audit.commit(r).await {
            Ok(()) => Ok(()),
            Err(e) if self.config().audit.on_failure == OnAuditFailure::Allow => {
                tracing::warn!("{e}; going on unrecorded, as audit.on_failure = \"allow\" says");
                Ok(())
            }
            Err(e) => Err(audit_refusal(&e)),
        }
    }

    /// Whether a window hit may be answered: only while the log takes records
    /// (or the config says to go on without).
    pub(crate) fn may_reuse(&self) -> bool {
        self.audit.healthy() || self.config().audit.on_failure == OnAuditFailure::Allow
    }

    /// The open audit log (the daemon adds the journal as a sink for its head).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Write what the audit log holds pending and stop its writer (at shutdown).
    pub fn close_audit(&self) {
        self.audit.close();
    }

    /// Lock: drop every cached token, approval window and unsealed credential,
    /// cancel a pending touch, and refuse tokens until `unlock` (a touch).
    pub fn lock(&self, caller: &Caller, why: &str) -> u32 {
        self.lock_state.lock(why);
        let n = self.sessions.locked().lock();
        self.key.cancel();
        // Queued behind the window hits counted so far; `Request::Lock` waits for it.
        self.audit.append(crate::audit::Record {
            time: self.clock.unix_now(),
            event: "locked".into(),
            caller: Some(caller.into()),
            reason: Some(format!("{why}; {n} cached token(s) dropped")),
            ..Default::default()
        });
        tracing::info!(%caller, dropped_tokens = n, "locked ({why}): cached tokens and unsealed credentials dropped");
        n
    }

    /// [`Agent::lock`], then wait until the log holds the lock (locked either way).
    pub async fn lock_recorded(&self, caller: &Caller, why: &str) -> u32 {
        let n = self.lock(caller, why);
        if let Err(e) = self.audit.sync().await {
            tracing::error!("{e}: the lock is not recorded");
        }
        n
    }

    /// The error every token request gets while locked.
    pub(crate) fn check_unlocked(&self) -> Result<(), AgentError> {
        self.lock_state.check()
    }

    /// Note a token request (for the idle lock).
    pub(crate) fn touch_last_use(&self) {
        self.lock_state.note_use(self.clock.now());
    }

    /// Lock if no token was asked for during `agent.idle_lock`.
    pub fn check_idle(&self) {
        let Some(idle) = self.config().agent.idle_lock else {
            return;
        };
        if self.lock_state.is_locked() {
            return;
        }
        let since = self.lock_state.last_use();
        if self.clock.now().duration_since(since).unwrap_or_default() >= idle {
            self.lock(
                &Caller::default(),
                &format!("idle for {}", crate::config::format_duration(idle)),
            );
        }
    }

    /// Lock when the key that was plugged in is gone.
    pub fn check_key(&self) {
        if !self.config().agent.lock_on_key_removal {
            return;
        }
        let Some(now) = self.key.present() else {
            return;
        };
        if self.lock_state.key_removed(now) && !self.lock_state.is_locked() {
            self.lock(&Caller::default(), "security key removed");
        }
    }

    /// Watch for idleness and key removal until the agent is dropped.
    pub fn spawn_watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            loop {
                tick.tick().await;
                let Some(agent) = weak.upgrade() else { return };
                agent.check_idle();
                agent.check_key();
            }
        })
    }

    pub fn profiles(&self) -> Vec<ProfileInfo> {
        let config = self.config();
        let default = config.default_profile_name();
        config
            .profiles
            .iter()
            .map(|(name, p)| ProfileInfo {
                name: name.clone(),
                credential: p.credential.clone(),
                service_account: p.service_account.clone(),
                project: p.project.clone(),
                scopes: p.scopes.clone(),
                touch: p.touch.to_string(),
                lifetime_secs: p.lifetime.as_secs(),
                is_default: Some(name.as_str()) == default,
                kubectl_window_secs: p.kubectl_window.map(|w| w.as_secs()),
            })
            .collect()
    }

    pub fn touches(&self) -> u64 {
        self.touches.load(Ordering::Relaxed)
    }

    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }
}

/// The error a caller gets when its record cannot be made durable.
fn audit_refusal(e: &crate::audit::AuditFailure) -> AgentError {
    AgentError::new(
        ErrorCode::Internal,
        format!("{e}: nothing is issued that the audit log does not hold; make the file writable or free space, or set on_failure = \"allow\" in [audit] to issue anyway"),
    )
}

pub(crate) fn enrolled_reply(e: &crate::vault::Enrolment) -> EnrolledReply {
    EnrolledReply {
        credential: short_id(&e.credential_id),
        aaguid: format_aaguid(&e.aaguid),
        key_name: e.key_name.clone(),
        backup: None,
    }
}
