//! The test-only hidraw interposer (`tests/preload/hidraw_preload.c`, built by
//! `tests/build.rs`): a shared library that, when a process runs with
//! `LD_PRELOAD=<library_path()>`, lets hidapi's hidraw backend open a
//! SOCK_SEQPACKET Unix socket served by [`crate::ctap::hid::HidDevice`] as if
//! it were `/dev/hidrawN`. Linux only.
//!
//! A process cannot preload a library into itself: spawn the program that
//! uses ctap-hid-fido2 (the agent, or `touchgate-ctap-probe`) with
//! [`preload_env`] and open the key by path
//! (`FidoKeyHid::new(&[HidParam::Path(socket_path)], &cfg)`).

#[cfg(target_os = "linux")]
use std::ffi::OsString;
#[cfg(target_os = "linux")]
use std::path::Path;

/// The interposer library to put in `LD_PRELOAD`.
#[cfg(target_os = "linux")]
pub fn library_path() -> &'static Path {
    Path::new(env!("TOUCHGATE_HIDRAW_PRELOAD"))
}

/// The `LD_PRELOAD` value for a child: the interposer, ahead of whatever this
/// process's own `LD_PRELOAD` holds. Use as `cmd.env("LD_PRELOAD", preload_env())`.
#[cfg(target_os = "linux")]
pub fn preload_env() -> OsString {
    let mut value = OsString::from(library_path());
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        value.push(":");
        value.push(existing);
    }
    value
}
