//! `touchgate-ctap-probe`: drives the REAL ctap-hid-fido2 crate against one
//! key, opened by path, and prints what happened as JSON lines on stdout.
//! Test support: run it with `LD_PRELOAD=<touchgate hidraw interposer>` and
//! `--path` the socket of an emulated key (`touchgate-ctaphid-device`, or a
//! `HidDevice` in the test), or `--path /dev/hidrawN` for a real key.
//!
//! Every line is one object with an `event` field; the last line is the
//! scenario's result, or `{"event":"error",...}` (exit status 1).
//!
//! Scenarios:
//! - `get-info`: authenticatorGetInfo → `{"event":"get_info","versions":[..],"extensions":[..],"aaguid":HEX,"options":{..},"max_msg_size":N,"pin_uv_auth_protocols":[..]}`
//! - `wink`: CTAPHID_WINK → `{"event":"wink"}`
//! - `selection`: `{"event":"started"}`, then authenticatorSelection (waits for a touch) → `{"event":"selection","ok":BOOL,"error":STR|null}`
//! - `cancel`: as `selection`, but after `started` a line on stdin makes the probe call
//!   `cancel_selection()` from another thread (`{"event":"cancel_sent"}`) before the result.
//! - `enrol-assert`: makeCredential (hmac-secret, no PIN/UV) and three getAssertions with
//!   hmac-secret (salt A, salt A, salt B) → `{"event":"enrolled",..}` then
//!   `{"event":"asserted","same_salt_same_secret":BOOL,"other_salt_other_secret":BOOL,..}`.
//!   With `--pin`, the PIN is used for both.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, ValueEnum};
use ctap_hid_fido2::fidokey::get_assertion::get_assertion_params::Extension as AssertionExtension;
use ctap_hid_fido2::fidokey::make_credential::make_credential_params::Extension as CredentialExtension;
use ctap_hid_fido2::fidokey::{GetAssertionArgsBuilder, MakeCredentialArgsBuilder};
use ctap_hid_fido2::{verifier, FidoKeyHid, HidParam, LibCfg};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "touchgate-ctap-probe",
    about = "Drive ctap-hid-fido2 against one key by path"
)]
struct Args {
    /// The key's path: an emulated key's socket (with the interposer preloaded) or /dev/hidrawN.
    #[arg(long)]
    path: String,
    /// Relying party id for enrol-assert.
    #[arg(long, default_value = "touchgate")]
    rp: String,
    /// PIN for enrol-assert (default: no PIN, no UV).
    #[arg(long)]
    pin: Option<String>,
    /// Use PIN/UV auth protocol 2 (default: the crate's default, 1).
    #[arg(long)]
    pin_protocol_2: bool,
    /// Let the crate print its CTAPHID trace (on stdout: for debugging by hand only).
    #[arg(long)]
    trace: bool,
    scenario: Scenario,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    GetInfo,
    Wink,
    Selection,
    Cancel,
    EnrolAssert,
}

fn emit(value: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            emit(json!({"event": "error", "error": format!("{e:#}")}));
            ExitCode::FAILURE
        }
    }
}

fn open(args: &Args) -> Result<FidoKeyHid> {
    // Keep-alive messages would go to stdout, in the middle of the JSON lines.
    let mut cfg = LibCfg::init();
    cfg.enable_keep_alive_msg = false;
    cfg.enable_log = args.trace;
    let key = FidoKeyHid::new(&[HidParam::Path(args.path.clone())], &cfg)
        .with_context(|| format!("opening {}", args.path))?;
    Ok(if args.pin_protocol_2 {
        key.with_pin_protocol_version(2)
    } else {
        key
    })
}

fn run(args: &Args) -> Result<()> {
    let key = open(args)?;
    match args.scenario {
        Scenario::GetInfo => {
            let info = key.get_info().context("get_info")?;
            let options: serde_json::Map<String, Value> = info
                .options
                .iter()
                .map(|(k, v)| (k.clone(), Value::Bool(*v)))
                .collect();
            emit(json!({
                "event": "get_info",
                "versions": info.versions,
                "extensions": info.extensions,
                "aaguid": hex::encode(&info.aaguid),
                "options": options,
                "max_msg_size": info.max_msg_size,
                "pin_uv_auth_protocols": info.pin_uv_auth_protocols,
            }));
        }
        Scenario::Wink => {
            key.wink().context("wink")?;
            emit(json!({"event": "wink"}));
        }
        Scenario::Selection => {
            emit(json!({"event": "started"}));
            emit(result_event("selection", key.selection()));
        }
        Scenario::Cancel => {
            let key = Arc::new(key);
            let op = {
                let key = key.clone();
                thread::spawn(move || key.selection())
            };
            emit(json!({"event": "started"}));
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            key.cancel_selection().context("cancel_selection")?;
            emit(json!({"event": "cancel_sent"}));
            let result = op
                .join()
                .map_err(|_| anyhow!("selection thread panicked"))?;
            emit(result_event("selection", result));
        }
        Scenario::EnrolAssert => enrol_assert(args, &key)?,
    }
    Ok(())
}

fn result_event(name: &str, result: Result<()>) -> Value {
    match result {
        Ok(()) => json!({"event": name, "ok": true, "error": null}),
        Err(e) => json!({"event": name, "ok": false, "error": format!("{e:#}")}),
    }
}

fn enrol_assert(args: &Args, key: &FidoKeyHid) -> Result<()> {
    let challenge = *b"touchgate-probe-challenge-32byte";
    let mut builder = MakeCredentialArgsBuilder::new(&args.rp, &challenge)
        .extensions(&[CredentialExtension::HmacSecret(Some(true))]);
    builder = match &args.pin {
        Some(pin) => builder.pin(pin),
        None => builder.without_pin_and_uv(),
    };
    let attestation = key
        .make_credential_with_args(&builder.build())
        .context("make_credential")?;
    let credential_id = attestation.credential_descriptor.id.clone();
    emit(json!({
        "event": "enrolled",
        "credential_id_len": credential_id.len(),
        "public_key_len": attestation.credential_publickey.der.len(),
        "flags_user_present": attestation.flags.user_present_result,
        "sign_count": attestation.sign_count,
        "hmac_secret_extension": attestation.extensions.iter().any(|e| matches!(e, CredentialExtension::HmacSecret(Some(true)))),
    }));

    let assert = |salt: [u8; 32]| -> Result<([u8; 32], u32, bool)> {
        let mut builder = GetAssertionArgsBuilder::new(&args.rp, &challenge)
            .credential_id(&credential_id)
            .extensions(&[AssertionExtension::HmacSecret(Some(salt))]);
        builder = match &args.pin {
            Some(pin) => builder.pin(pin),
            None => builder.without_pin_and_uv(),
        };
        let assertions = key
            .get_assertion_with_args(&builder.build())
            .context("get_assertion")?;
        let assertion = assertions
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no assertion"))?;
        let verified = verifier::verify_assertion(
            &args.rp,
            &attestation.credential_publickey,
            &challenge,
            &assertion,
        );
        let secret = assertion
            .extensions
            .iter()
            .find_map(|e| match e {
                AssertionExtension::HmacSecret(Some(s)) => Some(*s),
                _ => None,
            })
            .ok_or_else(|| anyhow!("no hmac-secret output in the assertion"))?;
        Ok((secret, assertion.sign_count, verified))
    };
    let (a1, count1, verified1) = assert([0xA5; 32])?;
    let (a2, count2, verified2) = assert([0xA5; 32])?;
    let (b, _, verified3) = assert([0x5A; 32])?;
    // The secrets themselves are never printed.
    emit(json!({
        "event": "asserted",
        "same_salt_same_secret": a1 == a2,
        "other_salt_other_secret": a1 != b,
        "signatures_verified": verified1 && verified2 && verified3,
        "counter_increased": count2 > count1,
    }));
    Ok(())
}
