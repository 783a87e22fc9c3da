//! Hardware security keys over USB HID, through ctap-hid-fido2.
//!
//! Every call blocks (the agent runs it on a blocking thread). Keys are opened
//! by path; with several plugged in, a silent probe (up=false) with the
//! allow-list finds the one holding the enrolled credential. Keep-alive
//! printing is off: the agent raises its own "touch your key" signal. A
//! pending touch is cancelled with CTAPHID_CANCEL from another thread.
//! makeCredential goes over a CTAPHID channel of the agent's own
//! ([`super::ctaphid`]), so its raw response is checked (no key written twice)
//! before anything reads it; the request is still built by ctap-hid-fido2.

use std::sync::{Arc, Mutex};

use ctap_hid_fido2::fidokey::credential_management::credential_management_params::CredentialProtectionPolicy;
use ctap_hid_fido2::fidokey::get_assertion::get_assertion_params::Extension as Gext;
use ctap_hid_fido2::fidokey::make_credential::make_credential_command;
use ctap_hid_fido2::fidokey::make_credential::MakeCredentialArgs;
use ctap_hid_fido2::fidokey::{
    AssertionExtension, CredentialExtension, GetAssertionArgsBuilder, MakeCredentialArgsBuilder,
};
use ctap_hid_fido2::{FidoKeyHid, HidParam, LibCfg};
use secrecy::ExposeSecret;
use touchgate::sync::MutexExt;
use touchgate::text::{one_line, UNCUT};
use zeroize::Zeroizing;

use super::ctaphid::{self, Channel};
use super::{
    Assertion, Attestation, GetAssertionRequest, KeyError, MakeCredentialRequest, SecurityKey,
};

/// A FIDO2 key on USB HID.
pub struct HidKey {
    /// Configured hidraw paths; empty means "every FIDO device found".
    paths: Vec<String>,
    pin_protocol: u8,
    /// The device of the operation in progress, so `cancel` can reach it.
    current: Mutex<Option<Arc<FidoKeyHid>>>,
    /// The agent's own channel of a makeCredential in progress, for `cancel`.
    channel: Mutex<Option<Arc<Channel>>>,
    /// One operation at a time.
    op: Mutex<()>,
    /// The device that last made or answered for a touchgate credential: where
    /// a credential that credProtect 3 hides from the silent probe is looked for
    /// when several keys are plugged in (the agent's own memory, not persisted).
    last_used: Mutex<Option<String>>,
}

fn lib_cfg() -> LibCfg {
    let mut cfg = LibCfg::init();
    cfg.enable_log = false;
    cfg.enable_keep_alive_msg = false;
    cfg.keep_alive_msg = String::new();
    cfg
}

impl HidKey {
    pub fn new(paths: Vec<String>, pin_protocol: u8) -> HidKey {
        HidKey {
            paths,
            pin_protocol,
            current: Mutex::new(None),
            channel: Mutex::new(None),
            op: Mutex::new(()),
            last_used: Mutex::new(None),
        }
    }

    fn device_paths(&self) -> Result<Vec<String>, KeyError> {
        let paths: Vec<String> = if self.paths.is_empty() {
            ctap_hid_fido2::get_fidokey_devices()
                .into_iter()
                .filter_map(|d| match d.param {
                    HidParam::Path(p) => Some(p),
                    _ => None,
                })
                .collect()
        } else {
            self.paths.clone()
        };
        if paths.is_empty() {
            return Err(KeyError::NotFound);
        }
        Ok(paths)
    }

    fn open(&self, path: &str) -> Result<Arc<FidoKeyHid>, KeyError> {
        FidoKeyHid::new(&[HidParam::Path(path.to_owned())], &lib_cfg())
            .map(|k| Arc::new(k.with_pin_protocol_version(self.pin_protocol)))
            .map_err(|e| {
                // hidapi lists devices the user may not open: say which rule is missing.
                let denied = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
                if denied {
                    KeyError::NoAccess {
                        path: path.to_owned(),
                    }
                } else {
                    KeyError::Device(format!(
                        "cannot open the security key {path}: {}",
                        one_line(&format!("{e:#}"), UNCUT)
                    ))
                }
            })
    }

    fn last_used(&self) -> Option<String> {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember(&self, path: &str) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_owned());
    }

    /// Run `f` on `dev` with it registered for `cancel`.
    fn with_current<T>(&self, dev: &Arc<FidoKeyHid>, f: impl FnOnce(&FidoKeyHid) -> T) -> T {
        *self.current.locked() = Some(dev.clone());
        let r = f(dev);
        *self.current.locked() = None;
        r
    }

    /// makeCredential on a CTAPHID channel of the agent's own, so the raw
    /// response is read and checked ([`ctaphid::parse_make_credential`]);
    /// the request is the one ctap-hid-fido2 would send for `args`.
    fn make_credential_raw(
        &self,
        path: &str,
        dev: &FidoKeyHid,
        args: &MakeCredentialArgs,
    ) -> Result<ctaphid::MakeCredentialResponse, KeyError> {
        let mut params =
            make_credential_command::Params::new(&args.rpid, args.challenge.clone(), vec![]);
        params.option_uv = args.uv;
        params.exclude_list = args.exclude_list.clone();
        if let Some(pin) = args.pin {
            params.pin_auth = dev
                .create_pin_auth(pin, &params.client_data_hash)
                .map_err(|e| map_error(path, &e, dev))?;
        }
        let request = Zeroizing::new(
            make_credential_command::create_payload(
                params,
                args.extensions.as_ref(),
                self.pin_protocol,
            )
            .map_err(|e| map_error(path, &e, dev))?,
        );
        let channel = Arc::new(Channel::open(path).map_err(|e| map_error(path, &e, dev))?);
        *self.channel.locked() = Some(channel.clone());
        let answer = channel.cbor(&request);
        *self.channel.locked() = None;
        // On Linux every open hidraw handle gets every report: `dev`'s holds
        // this channel's answers, which ctap-hid-fido2 (it does not check
        // channel ids) would take for its own. Ask PIN retries on a fresh handle.
        let cbor = answer.map_err(|e| match self.open(path) {
            Ok(fresh) => map_error(path, &e, &fresh),
            Err(_) => map_error(path, &e, dev),
        })?;
        ctaphid::parse_make_credential(&cbor).map_err(KeyError::Device)
    }

    /// Whether the key at `path` holds one of `ids` (a silent probe, no touch).
    fn holds(
        &self,
        path: &str,
        dev: &FidoKeyHid,
        rp_id: &str,
        ids: &[Vec<u8>],
    ) -> Result<bool, KeyError> {
        let mut b = GetAssertionArgsBuilder::new(rp_id, &[0u8; 32])
            .without_up()
            .without_pin_and_uv();
        for id in ids {
            b = b.add_credential_id(id);
        }
        match dev.get_assertion_with_args(&b.build()) {
            Ok(_) => Ok(true),
            Err(e) => match map_error(path, &e, dev) {
                KeyError::NoCredentials => Ok(false),
                other => Err(other),
            },
        }
    }

    /// The first key (by path) that holds one of `allow`, found without a touch.
    /// A credential made with credProtect userVerificationRequired does not show
    /// to that silent probe: with `uv`, a single plugged-in key that shows none
    /// is the one to ask (the real request verifies the user); with several,
    /// the one that last made or answered for a credential, else which one
    /// holds it cannot be told.
    fn locate(
        &self,
        rp_id: &str,
        allow: &[Vec<u8>],
        uv: bool,
    ) -> Result<(String, Arc<FidoKeyHid>), KeyError> {
        let mut last = KeyError::NoCredentials;
        let mut silent = vec![];
        for path in self.device_paths()? {
            let dev = match self.open(&path) {
                Ok(d) => d,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match self.holds(&path, &dev, rp_id, allow) {
                Ok(true) => return Ok((path, dev)),
                Ok(false) => silent.push((path, dev)),
                Err(e) => last = e,
            }
        }
        let used = self.last_used();
        match silent.len() {
            1 if uv => Ok(silent.pop().expect("one")),
            n if uv && n > 1 && silent.iter().any(|(p, _)| Some(p) == used.as_ref()) => Ok(silent
                .into_iter()
                .find(|(p, _)| Some(p) == used.as_ref())
                .expect("found")),
            n if uv && n > 1 => Err(KeyError::Device(format!(
                "{n} security keys are plugged in, and a key enrolled with --uv shows its \
                 credential only after user verification: leave only the enrolled key plugged \
                 in, or name it in [key] devices"
            ))),
            _ => Err(last),
        }
    }
}

impl SecurityKey for HidKey {
    fn name(&self) -> String {
        match self.paths.as_slice() {
            [] => "security key".into(),
            [one] => format!("security key {one}"),
            many => format!("security key ({})", many.join(", ")),
        }
    }

    fn backend(&self) -> &'static str {
        "hid"
    }

    fn make_credential(&self, req: &MakeCredentialRequest) -> Result<Attestation, KeyError> {
        let _op = self.op.locked();
        // The key to enrol is the one plugged-in key that holds none of the excluded credentials.
        let mut candidates = vec![];
        let mut unopened = None;
        let mut excluded = false;
        for path in self.device_paths()? {
            // A configured key that is not plugged in is simply not a candidate.
            let dev = match self.open(&path) {
                Ok(d) => d,
                Err(e) => {
                    unopened = Some(e);
                    continue;
                }
            };
            if req.exclude.is_empty() || !self.holds(&path, &dev, &req.rp_id, &req.exclude)? {
                candidates.push((path, dev));
            } else {
                excluded = true;
            }
        }
        // A key enrolled with credProtect 3 hides from the probe above: with
        // credentials to exclude, the key that last answered for one is not the new one.
        let last = self.last_used();
        if candidates.len() > 1 && !req.exclude.is_empty() {
            candidates.retain(|(p, _)| Some(p) != last.as_ref());
        }
        let (path, dev) = match candidates.len() {
            0 if excluded => return Err(KeyError::Excluded),
            0 => return Err(unopened.unwrap_or(KeyError::NoCredentials)),
            1 => candidates.pop().expect("one"),
            _ => {
                let names: Vec<&str> = candidates.iter().map(|(p, _)| p.as_str()).collect();
                return Err(KeyError::Device(format!(
                    "several security keys could be enrolled ({}): leave only the one to enrol plugged in, or name it in [key] devices",
                    names.join(", ")
                )));
            }
        };
        let path = &path;
        let info = dev.get_info().map_err(|e| map_error(path, &e, &dev))?;
        if req.hmac_secret && !info.extensions.iter().any(|x| x == "hmac-secret") {
            return Err(KeyError::Unsupported {
                key: path.clone(),
                what: "the hmac-secret extension".into(),
            });
        }
        let level = cred_protect(req.uv, &info.extensions, &info.options);
        let mut exts = vec![CredentialExtension::CredProtect(Some(level))];
        if req.hmac_secret {
            exts.push(CredentialExtension::HmacSecret(Some(true)));
        }
        let pin = req
            .pin
            .as_ref()
            .map(|p| Zeroizing::new(p.expose_secret().to_owned()));
        let mut b = MakeCredentialArgsBuilder::new(&req.rp_id, &req.challenge).extensions(&exts);
        for id in &req.exclude {
            b = b.exclude_authenticator(id);
        }
        b = match (&pin, req.uv) {
            (Some(p), _) => b.pin(p.as_str()),
            (None, false) => b.without_pin_and_uv(),
            (None, true) => b,
        };
        let att = self.make_credential_raw(path, &dev, &b.build())?;
        let cred = crate::verify::attested_credential(&att.auth_data)
            .map_err(|e| KeyError::Device(format!("security key {path}: {e}")))?;
        self.remember(path);
        Ok(Attestation {
            credential_id: cred.credential_id,
            public_key_sec1: cred.public_key_sec1.to_vec(),
            aaguid: cred.aaguid,
            auth_data: att.auth_data,
            sign_count: cred.sign_count,
            format: att.fmt,
            attestation_signature: att.sig,
            statement_alg: att.alg,
            x5c: att.x5c,
            hmac_secret: cred.hmac_secret,
        })
    }

    fn get_assertion(&self, req: &GetAssertionRequest) -> Result<Assertion, KeyError> {
        let _op = self.op.locked();
        let (path, dev) = self.locate(&req.rp_id, &req.allow, req.uv)?;
        let pin = req
            .pin
            .as_ref()
            .map(|p| Zeroizing::new(p.expose_secret().to_owned()));
        let mut b = GetAssertionArgsBuilder::new(&req.rp_id, &req.challenge);
        for id in &req.allow {
            b = b.add_credential_id(id);
        }
        if let Some(salt) = req.hmac_salt {
            b = b.extensions(&[AssertionExtension::HmacSecret(Some(salt))]);
        }
        if !req.up {
            b = b.without_up();
        }
        b = match (&pin, req.uv) {
            (Some(p), _) => b.pin(p.as_str()),
            (None, false) => b.without_pin_and_uv(),
            (None, true) => b,
        };
        let mut all = self
            .with_current(&dev, |d| d.get_assertion_with_args(&b.build()))
            .map_err(|e| map_error(&path, &e, &dev))?;
        if all.is_empty() {
            return Err(KeyError::NoCredentials);
        }
        let a = all.swap_remove(0);
        // The crate decodes this response itself and keeps the last of a key
        // written twice; an authData twice still shows as two hmac-secret
        // outputs (the first taken, the last signed): refused.
        let outputs = a
            .extensions
            .iter()
            .filter(|e| matches!(e, Gext::HmacSecret(Some(_)) | Gext::HmacSecret2(Some(_))))
            .count();
        if outputs > 1 {
            return Err(KeyError::Device(format!(
                "the security key's getAssertion response carries {outputs} hmac-secret outputs \
                 (authData, key 2, twice?): refused (a faulty or hostile key; use another key)"
            )));
        }
        self.remember(&path);
        let hmac_secret = a.extensions.iter().find_map(|e| match e {
            Gext::HmacSecret(Some(out)) => Some(Zeroizing::new(*out)),
            _ => None,
        });
        Ok(Assertion {
            credential_id: a.credential_id.clone(),
            auth_data: a.auth_data.clone(),
            signature: a.signature.clone(),
            hmac_secret,
        })
    }

    fn present(&self) -> Option<bool> {
        Some(if self.paths.is_empty() {
            !ctap_hid_fido2::get_fidokey_devices().is_empty()
        } else {
            self.paths.iter().any(|p| std::path::Path::new(p).exists())
        })
    }

    fn cancel(&self) {
        let dev = self.current.locked().clone();
        if let Some(d) = dev {
            let _ = d.cancel_selection();
        }
        let channel = self.channel.locked().clone();
        if let Some(c) = channel {
            c.cancel();
        }
    }
}

/// The credProtect level of a new credential: userVerificationRequired (3)
/// when the user is verified at every use (`enroll --uv`) and the key offers
/// credProtect and a way to verify (a PIN or built-in UV), so no process that
/// merely can open the key gets the hmac-secret without the PIN or finger;
/// else userVerificationOptionalWithCredentialIdList (2).
/// `extensions` and `options` are the key's getInfo.
fn cred_protect(
    uv: bool,
    extensions: &[String],
    options: &[(String, bool)],
) -> CredentialProtectionPolicy {
    let offers = |name: &str| extensions.iter().any(|x| x == name);
    let option = |name: &str| options.iter().any(|(k, v)| k == name && *v);
    if uv && offers("credProtect") && (option("clientPin") || option("uv")) {
        CredentialProtectionPolicy::UserVerificationRequired
    } else {
        CredentialProtectionPolicy::UserVerificationOptionalWithCredentialIdList
    }
}

/// Map the crate's error text (it reports CTAP status bytes as `0xNN …`) to a [`KeyError`].
fn map_error(path: &str, e: &anyhow::Error, dev: &FidoKeyHid) -> KeyError {
    let msg = one_line(&format!("{e:#}"), UNCUT);
    let has = |code: &str| msg.contains(code);
    if has("0x27") {
        KeyError::TouchDenied
    } else if has("0x2D") {
        KeyError::Cancelled
    } else if has("0x2E") {
        KeyError::NoCredentials
    } else if has("0x19") {
        KeyError::Excluded
    } else if has("0x2C") {
        // UNSUPPORTED_OPTION: uv asked of a key without built-in verification.
        KeyError::PinRequired
    } else if has("0x31") {
        let retries = dev
            .get_pin_retries()
            .ok()
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0);
        KeyError::PinInvalid { retries }
    } else if has("0x32") {
        KeyError::PinBlocked
    } else if has("0x34") {
        KeyError::Device(format!(
            "too many wrong PINs in a row on the security key {path}: unplug it, plug it back in and try again"
        ))
    } else if has("0x35") || has("0x36") {
        KeyError::PinRequired
    } else if has("read err") || has("write error") || has("Failed to open") {
        KeyError::Device(format!(
            "the security key {path} stopped answering (unplugged?): plug it back in and try again"
        ))
    } else {
        KeyError::Device(format!("security key {path}: {msg}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The level `cred_protect` picks, as its CTAP number.
    fn level(uv: bool, extensions: &[&str], options: &[(&str, bool)]) -> u8 {
        let ext: Vec<String> = extensions.iter().map(|s| s.to_string()).collect();
        let opt: Vec<(String, bool)> = options.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        match cred_protect(uv, &ext, &opt) {
            CredentialProtectionPolicy::UserVerificationRequired => 3,
            CredentialProtectionPolicy::UserVerificationOptionalWithCredentialIdList => 2,
            _ => 1,
        }
    }

    #[test]
    fn uv_enrolments_on_keys_that_can_verify_get_cred_protect_3() {
        let both = ["hmac-secret", "credProtect"];
        assert_eq!(level(true, &both, &[("clientPin", true)]), 3);
        assert_eq!(level(true, &both, &[("uv", true)]), 3);
        assert_eq!(level(false, &both, &[("clientPin", true)]), 2);
        // No way to verify the user, or no credProtect: level 2.
        assert_eq!(level(true, &both, &[("clientPin", false)]), 2);
        assert_eq!(level(true, &["hmac-secret"], &[("clientPin", true)]), 2);
    }
}
