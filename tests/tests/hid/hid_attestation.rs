//! Attestation policy over the emulated CTAPHID key and the unmodified
//! ctap-hid-fido2: with `key.attestation_roots` set, only a key whose packed
//! attestation chains to one of those roots enrols; self attestation is
//! refused then, and still enrols when no roots are configured.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use touchgate_agent::key::soft::{self, AutoTouch, TouchSource};
use touchgate_tests::ctap::authenticator::{Attestation, Authenticator, AuthenticatorOptions};
use touchgate_tests::ctap::certs::{self, TestCert};
use touchgate_tests::ctap::hid::{DeviceHandle, HidDevice};
use touchgate_tests::ctap::preload;

/// The model the attested emulated keys claim.
const AAGUID: [u8; 16] = [
    0x2f, 0xc0, 0x57, 0x9f, 0x81, 0x13, 0x47, 0xea, 0xb1, 0x16, 0xbb, 0x5a, 0x8d, 0xb9, 0x20, 0x2a,
];

struct EmuKey {
    device: DeviceHandle,
    auth: Arc<Authenticator>,
}

fn emu_key(dir: &Path, name: &str, attestation: Attestation) -> EmuKey {
    emu_key_with(
        dir,
        name,
        AuthenticatorOptions {
            aaguid: Some(AAGUID),
            attestation,
            ..Default::default()
        },
    )
}

fn emu_key_with(dir: &Path, name: &str, options: AuthenticatorOptions) -> EmuKey {
    let touch: Arc<dyn TouchSource> = Arc::new(AutoTouch);
    let key = soft::open(&dir.join(format!("{name}.state")), touch.clone()).unwrap();
    let auth = Arc::new(Authenticator::new(Arc::new(key), touch, options));
    let device = HidDevice::start(&dir.join(format!("{name}.hidraw")), auth.clone()).unwrap();
    EmuKey { device, auth }
}

/// A key attested by a chain (leaf, intermediate) under `root`.
fn attested_key(dir: &Path, name: &str, root: &TestCert) -> EmuKey {
    let (chain, leaf_key) = certs::attestation_chain(root, AAGUID);
    emu_key(dir, name, Attestation::Certificate { chain, leaf_key })
}

/// An agent on the HID backend using `key`, with `roots` as key.attestation_roots.
fn start_agent(key: &EmuKey, roots: &[PathBuf]) -> AgentProc {
    let roots: Vec<String> = roots
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let config = config_text("http://127.0.0.1:9", "auto", "every-token", "").replace(
        "backend = \"soft\"",
        &format!(
            "backend = \"hid\"\ndevices = [\"{}\"]\nattestation_roots = [{}]",
            key.device.path().display(),
            roots.join(", ")
        ),
    );
    AgentProc::start_with_env(&config, vec![("LD_PRELOAD".into(), preload::preload_env())])
}

fn write_root(dir: &Path, name: &str, root: &TestCert) -> PathBuf {
    let path = dir.join(name);
    certs::write_pem(&path, &[&root.der]).unwrap();
    path
}

#[test]
fn a_key_attested_by_a_configured_root_enrols() {
    let dir = tempfile::tempdir().unwrap();
    let root = certs::root_ca("CN=touchgate e2e vendor root,O=touchgate tests");
    let other = certs::root_ca("CN=some other vendor");
    // The bundle holds another vendor's root first: any root may match.
    let bundle = dir.path().join("roots.pem");
    certs::write_pem(&bundle, &[&other.der, &root.der]).unwrap();
    let key = attested_key(dir.path(), "k1", &root);
    let agent = start_agent(&key, &[bundle]);

    let o = agent.cli(&["enroll"]);
    assert!(
        o.status.success(),
        "{}\nagent log:\n{}",
        stderr(&o),
        agent.stderr()
    );
    let o = agent.cli(&["keys", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("aaguid 2fc0579f-8113-47ea-b116-bb5a8db9202a"),
        "{}",
        stdout(&o)
    );
    let log = agent.stderr();
    assert!(
        log.contains("attestation chains to a configured root")
            && log.contains("CN=touchgate e2e vendor root")
            && log.contains("CN=touchgate test key attestation"),
        "the chain is logged:\n{log}"
    );
}

#[test]
fn a_key_attested_under_another_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = write_root(dir.path(), "trusted.pem", &certs::root_ca("CN=trusted"));
    let untrusted = certs::root_ca("CN=untrusted vendor");
    let key = attested_key(dir.path(), "k1", &untrusted);
    let agent = start_agent(&key, &[trusted]);

    let line = assert_one_line_error(
        &agent.cli(&["enroll"]),
        "none of the 1 certificate(s) in key.attestation_roots signed",
    );
    assert!(
        line.contains("CN=untrusted vendor"),
        "names the issuer: {line}"
    );
    assert_eq!(key.auth.touches_requested(), 1);
    let o = agent.cli(&["keys", "list"]);
    assert!(
        o.status.success() && stdout(&o).trim().is_empty(),
        "nothing enrolled: {}",
        stdout(&o)
    );
}

#[test]
fn self_attestation_is_refused_when_roots_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_root(dir.path(), "root.pem", &certs::root_ca("CN=root"));
    let key = emu_key(dir.path(), "k1", Attestation::SelfPacked);
    let agent = start_agent(&key, &[root]);
    assert_one_line_error(
        &agent.cli(&["enroll"]),
        "this security key gave no attestation certificate, but key.attestation_roots requires one: it used self attestation",
    );

    let none = emu_key(dir.path(), "k2", Attestation::None);
    let root = write_root(dir.path(), "root2.pem", &certs::root_ca("CN=root"));
    let agent = start_agent(&none, &[root]);
    assert_one_line_error(
        &agent.cli(&["enroll"]),
        "requires one: its attestation format is none",
    );
}

#[test]
fn without_roots_self_attestation_still_enrols() {
    let dir = tempfile::tempdir().unwrap();
    let key = emu_key(dir.path(), "k1", Attestation::SelfPacked);
    let agent = start_agent(&key, &[]);
    let o = agent.cli(&["enroll"]);
    assert!(
        o.status.success(),
        "{}\nagent log:\n{}",
        stderr(&o),
        agent.stderr()
    );
}

#[test]
fn a_bad_root_file_is_named_before_any_touch() {
    let dir = tempfile::tempdir().unwrap();
    let key = attested_key(dir.path(), "k1", &certs::root_ca("CN=root"));
    let missing = dir.path().join("no-such-root.pem");
    let agent = start_agent(&key, std::slice::from_ref(&missing));
    let line = assert_one_line_error(&agent.cli(&["enroll"]), "cannot read attestation root file");
    assert!(
        line.contains(&missing.display().to_string()),
        "names the file: {line}"
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let agent = start_agent(&key, std::slice::from_ref(&garbage));
    let line = assert_one_line_error(&agent.cli(&["enroll"]), "is not a valid X.509 certificate");
    assert!(line.contains(&garbage.display().to_string()), "{line}");
    assert_eq!(key.auth.touches_requested(), 0, "no touch was asked for");
}

#[test]
fn a_chain_that_breaks_a_packed_leaf_rule_is_refused_naming_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let root = certs::root_ca("CN=vendor root,O=touchgate tests");
    let roots = write_root(dir.path(), "root.pem", &root);
    // Signed all the way to the configured root, but the leaf's subject
    // lacks OU "Authenticator Attestation".
    let inter = root.issue(
        certs::CertParams::ca("CN=vendor CA,O=touchgate tests"),
        certs::CertKey::p256(),
    );
    let leaf = inter.issue(
        certs::CertParams::leaf("CN=no ou key,O=touchgate tests", Some(AAGUID)),
        certs::CertKey::p256(),
    );
    let leaf_key = leaf.key.p256_key().unwrap().clone();
    let key = emu_key(
        dir.path(),
        "k1",
        Attestation::Certificate {
            chain: vec![leaf.der, inter.der],
            leaf_key,
        },
    );
    let agent = start_agent(&key, &[roots]);
    assert_one_line_error(
        &agent.cli(&["enroll"]),
        "attestation certificate 1 (CN=no ou key,O=touchgate tests) has no subject OU \"Authenticator Attestation\"",
    );
    let o = agent.cli(&["keys", "list"]);
    assert!(
        o.status.success() && stdout(&o).trim().is_empty(),
        "nothing enrolled: {}",
        stdout(&o)
    );
}

#[test]
fn a_key_under_a_p384_vendor_root_enrols() {
    let dir = tempfile::tempdir().unwrap();
    let root = TestCert::self_signed(
        certs::CertParams::ca("CN=p384 vendor root,O=touchgate tests"),
        certs::CertKey::p384(),
    );
    let roots = write_root(dir.path(), "root.pem", &root);
    let key = attested_key(dir.path(), "k1", &root);
    let agent = start_agent(&key, &[roots]);
    let o = agent.cli(&["enroll"]);
    assert!(
        o.status.success(),
        "{}\nagent log:\n{}",
        stderr(&o),
        agent.stderr()
    );
}

#[test]
fn enrolment_with_uv_refuses_an_attestation_without_the_uv_flag() {
    // A key with built-in UV that verifies the user but leaves UV out of
    // the attestation's authenticator data (signed as sent).
    let dir = tempfile::tempdir().unwrap();
    let key = emu_key_with(
        dir.path(),
        "k1",
        AuthenticatorOptions {
            built_in_uv: true,
            omit_uv_flag_in_attestation: true,
            ..Default::default()
        },
    );
    let agent = start_agent(&key, &[]);
    assert_one_line_error(
        &agent.cli(&["enroll", "--uv"]),
        "enrolment asked for user verification but the attestation's authenticator data does not report it (UV flag clear)",
    );
    let o = agent.cli(&["keys", "list"]);
    assert!(
        o.status.success() && stdout(&o).trim().is_empty(),
        "nothing enrolled: {}",
        stdout(&o)
    );
}

#[test]
fn a_packed_statement_naming_another_alg_than_the_key_is_refused() {
    // Self attestation signed with the credential's ES256 key, but the
    // statement says RS256 (-257).
    let dir = tempfile::tempdir().unwrap();
    let key = emu_key_with(
        dir.path(),
        "k1",
        AuthenticatorOptions {
            misstate_packed_alg: Some(-257),
            ..Default::default()
        },
    );
    let agent = start_agent(&key, &[]);
    assert_one_line_error(
        &agent.cli(&["enroll"]),
        "the packed attestation statement names algorithm alg -257 but the credential key is ES256 (-7): refused",
    );
    let o = agent.cli(&["keys", "list"]);
    assert!(
        o.status.success() && stdout(&o).trim().is_empty(),
        "nothing enrolled: {}",
        stdout(&o)
    );
}

#[test]
fn a_certificate_statement_naming_another_alg_than_its_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = certs::root_ca("CN=vendor root,O=touchgate tests");
    let roots = write_root(dir.path(), "root.pem", &root);
    let (chain, leaf_key) = certs::attestation_chain(&root, AAGUID);
    let key = emu_key_with(
        dir.path(),
        "k1",
        AuthenticatorOptions {
            aaguid: Some(AAGUID),
            attestation: Attestation::Certificate { chain, leaf_key },
            misstate_packed_alg: Some(-8),
            ..Default::default()
        },
    );
    let agent = start_agent(&key, &[roots]);
    assert_one_line_error(
        &agent.cli(&["enroll"]),
        "the packed attestation statement names algorithm alg -8 but the attestation certificate's P-256 key is ES256 (-7): refused",
    );
}

/// A response with one key written twice (same value both times): the key is
/// refused naming the key and where it is, before anything is enrolled.
fn assert_duplicate_refused(key_name: &'static str, field: &str, attestation: Attestation) {
    let dir = tempfile::tempdir().unwrap();
    let key = emu_key_with(
        dir.path(),
        "k1",
        AuthenticatorOptions {
            aaguid: Some(AAGUID),
            attestation,
            duplicate_response_key: Some(key_name),
            ..Default::default()
        },
    );
    let agent = start_agent(&key, &[]);
    assert_one_line_error(
        &agent.cli(&["enroll"]),
        &format!("the security key's makeCredential response has {field} twice"),
    );
    let o = agent.cli(&["keys", "list"]);
    assert!(
        o.status.success() && stdout(&o).trim().is_empty(),
        "nothing enrolled: {}",
        stdout(&o)
    );
}

#[test]
fn a_make_credential_response_with_a_duplicate_key_is_refused() {
    let root = certs::root_ca("CN=vendor root,O=touchgate tests");
    let chain = || {
        let (chain, leaf_key) = certs::attestation_chain(&root, AAGUID);
        Attestation::Certificate { chain, leaf_key }
    };
    assert_duplicate_refused("sig", "\"sig\" (in attStmt)", Attestation::SelfPacked);
    assert_duplicate_refused("x5c", "\"x5c\" (in attStmt)", chain());
    assert_duplicate_refused("authData", "authData (key 2)", Attestation::SelfPacked);
    assert_duplicate_refused("fmt", "fmt (key 1)", Attestation::SelfPacked);
}
