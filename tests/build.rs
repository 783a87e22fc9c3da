//! Builds the test-only hidraw interposer (`preload/hidraw_preload.c`) with the
//! system C compiler into `$OUT_DIR/libtouchgate_hidraw_preload.so`, and tells
//! the crate where it is (`TOUCHGATE_HIDRAW_PRELOAD`, read by
//! `ctap::preload::library_path`). Linux only: elsewhere nothing is built.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    const SOURCE: &str = "preload/hidraw_preload.c";
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CC");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let library = out_dir.join("libtouchgate_hidraw_preload.so");
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o"])
        .arg(&library)
        .arg(SOURCE)
        .arg("-ldl")
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(
        status.success(),
        "`{cc}` failed to build {SOURCE}: {status}"
    );
    println!(
        "cargo:rustc-env=TOUCHGATE_HIDRAW_PRELOAD={}",
        library.display()
    );
}
