//! Emulated CTAPHID security keys for the `backend = "hid"` tests: served in the
//! test process, opened by the agent binary through the LD_PRELOAD interposer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use touchgate_agent::key::soft::{self, AutoTouch, TouchSource};
use touchgate_tests::ctap::authenticator::{Authenticator, AuthenticatorOptions};
use touchgate_tests::ctap::hid::{DeviceHandle, HidDevice};
use touchgate_tests::ctap::preload;

use super::{config_text, AgentProc};

/// An emulated security key served in this test process.
pub struct EmuKey {
    pub device: DeviceHandle,
    pub auth: Arc<Authenticator>,
}

impl EmuKey {
    pub fn start(
        dir: &Path,
        name: &str,
        touch: Arc<dyn TouchSource>,
        options: AuthenticatorOptions,
    ) -> EmuKey {
        let key = soft::open(&dir.join(format!("{name}.state")), touch.clone()).unwrap();
        let auth = Arc::new(Authenticator::new(Arc::new(key), touch, options));
        let device = HidDevice::start(&dir.join(format!("{name}.hidraw")), auth.clone()).unwrap();
        EmuKey { device, auth }
    }

    pub fn path(&self) -> PathBuf {
        self.device.path().to_path_buf()
    }
}

/// The test config with `backend = "hid"` over `devices`; `extra_key` goes into `[key]`.
pub fn hid_config(
    base_url: &str,
    devices: &[PathBuf],
    profile_touch: &str,
    touch_timeout: &str,
    extra_key: &str,
) -> String {
    let list: Vec<String> = devices
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    config_text(base_url, "auto", profile_touch, "")
        .replace(
            "backend = \"soft\"",
            &format!(
                "backend = \"hid\"\ndevices = [{}]\n{extra_key}",
                list.join(", ")
            ),
        )
        .replace(
            "touch_timeout = \"10s\"",
            &format!("touch_timeout = \"{touch_timeout}\""),
        )
}

/// An auto-touching key "k1" in `dir`, and a [`start_hid_agent`] over it only
/// (`profile_touch`, touch timeout 10s), enrolled and holding `key_json`.
pub fn enrolled_hid_agent(
    base_url: &str,
    key_json: &str,
    dir: &Path,
    profile_touch: &str,
) -> (EmuKey, AgentProc) {
    let key = EmuKey::start(
        dir,
        "k1",
        Arc::new(AutoTouch),
        AuthenticatorOptions::default(),
    );
    let agent = start_hid_agent(&hid_config(
        base_url,
        &[key.path()],
        profile_touch,
        "10s",
        "",
    ));
    agent.enrol_and_import(key_json);
    (key, agent)
}

/// The agent binary with the hidraw interposer preloaded.
pub fn start_hid_agent(config: &str) -> AgentProc {
    AgentProc::start_with_env(config, vec![("LD_PRELOAD".into(), preload::preload_env())])
}
