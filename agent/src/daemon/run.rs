//! Assemble a real agent from config: the soft key, the Google upstream, the
//! system clock, the socket.

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::SystemClock;
use crate::config::{Config, KeyBackend};
use crate::fido::key::hid::HidKey;
use crate::fido::key::soft::{self, touch_source, TouchMode};
use crate::fido::key::SecurityKey;
use crate::service::agent::{Agent, StatePaths};
use crate::upstream::google::GoogleUpstream;

/// Everything a running agent needs to know about where it lives.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
}

impl Settings {
    pub fn from_env() -> Settings {
        Settings {
            config_path: touchgate::paths::config_path(),
            state_dir: touchgate::paths::state_dir(),
            socket: touchgate::paths::socket_path(),
        }
    }
}

/// Build the agent described by `settings` (config errors are one line).
pub fn build(settings: &Settings) -> anyhow::Result<Arc<Agent>> {
    let config = Config::load(&settings.config_path)?;
    // Private before anything is written to it, whatever the umask.
    let prepared = crate::state_dir::prepare(&settings.state_dir)
        .map_err(|e| anyhow::anyhow!("cannot prepare the state directory: {e}"))?;
    for note in &prepared.notes {
        tracing::warn!("{note}");
    }
    let key: Arc<dyn SecurityKey> = match config.key.backend {
        KeyBackend::Soft => {
            let mode: TouchMode = config.key.touch.parse().map_err(|e| {
                anyhow::anyhow!("config {}: key.touch: {e}", settings.config_path.display())
            })?;
            let path = config
                .key
                .soft_key_state
                .clone()
                .unwrap_or_else(|| settings.state_dir.join("soft-key.json"));
            Arc::new(soft::open(&path, touch_source(mode))?)
        }
        KeyBackend::Hid => Arc::new(HidKey::new(
            config.key.devices.clone(),
            config.key.pin_protocol,
        )),
    };
    let clock = Arc::new(SystemClock);
    let upstream = Arc::new(GoogleUpstream::new(config.google.clone(), clock.clone()));
    let agent = Agent::new(
        config,
        key,
        upstream,
        clock,
        StatePaths::in_dir(&settings.state_dir),
    )?;
    agent.set_config_path(settings.config_path.clone());
    // The audit head also goes to the system journal, where one listens.
    if let Some(sink) = crate::audit::journal::JournalSink::start(agent.audit().path()) {
        crate::audit::HeadSink::durable(sink.as_ref(), &agent.audit().head());
        agent.audit().add_sink(sink);
    }
    // Lock on session lock and sleep (logind); never waited for.
    crate::daemon::session_lock::spawn(&agent);
    Ok(agent)
}
