//! In-process tests: requests built by ctap-hid-fido2 3.6.1's own public
//! command builders (or, for hmac-secret, the way its `hmac_ext.rs` does),
//! responses read by its own parsers and verifier where they are public.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciborium::value::Value;
use ctap_hid_fido2::fidokey::credential_management::credential_management_params::CredentialProtectionPolicy as Protect;
use ctap_hid_fido2::fidokey::get_assertion::{get_assertion_command, get_assertion_response};
use ctap_hid_fido2::fidokey::make_credential::{
    make_credential_command, make_credential_response, Attestation as CrateAttestation,
    CredentialSupportedKeyType, Extension as Mext,
};
use ctap_hid_fido2::fidokey::pin::{self as crate_pin, Permission, SubCommand};
use ctap_hid_fido2::verifier;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use touchgate_agent::key::soft::{self, AutoTouch, DenyTouch, NeverTouch, SoftKey, TouchSource};
use touchgate_agent::key::{flags, GetAssertionRequest, SecurityKey};

use super::*;
use crate::ctap::{CancelFlag, CborHandler, OpContext, KEEPALIVE_UPNEEDED};

mod platform;
use platform::{pin_uv_auth_param, PlatformSecret};

const RP: &str = "touchgate";
const PIN: &str = "1234";

/// A ctap-hid-fido2 `CoseKey` (its type is private) from a COSE value.
macro_rules! crate_cose {
    ($v:expr) => {
        crate_pin::parse_cbor_client_pin_get_keyagreement(&cbor(&Value::Map(vec![(
            1.into(),
            $v.clone(),
        )])))
        .unwrap()
    };
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

fn decode(b: &[u8]) -> Value {
    ciborium::de::from_reader(b).unwrap()
}

fn get(v: &Value, key: i64) -> &Value {
    params::int_get(v.as_map().unwrap(), key).unwrap()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// An OpContext whose keep-alives are recorded.
fn context() -> (OpContext, Arc<Mutex<Vec<u8>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let ctx = OpContext {
        cancel: Arc::new(CancelFlag::new()),
        keepalive: Box::new(move |status| s.lock().unwrap().push(status)),
    };
    (ctx, seen)
}

/// One request: the CBOR of a success, or the error status.
fn call(auth: &Authenticator, payload: &[u8]) -> Result<Vec<u8>, u8> {
    let resp = auth.handle_cbor(payload, &context().0);
    match resp[0] {
        0 => Ok(resp[1..].to_vec()),
        status => {
            assert_eq!(resp.len(), 1, "an error carries no data");
            Err(status)
        }
    }
}

fn verify_sig(sec1: &[u8], auth_data: &[u8], cdh: &[u8; 32], der: &[u8]) {
    let msg = [auth_data, cdh].concat();
    VerifyingKey::from_sec1_bytes(sec1)
        .unwrap()
        .verify(&msg, &Signature::from_der(der).unwrap())
        .expect("signature verifies");
}

/// pinUvAuthParam and its protocol.
type PinAuth = (Vec<u8>, u8);

struct Fx {
    _dir: tempfile::TempDir,
    key: Arc<SoftKey>,
    auth: Authenticator,
}

fn fx_with(touch: Arc<dyn TouchSource>, options: AuthenticatorOptions) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(soft::open(&dir.path().join("soft-key.json"), Arc::new(AutoTouch)).unwrap());
    let auth = Authenticator::new(key.clone(), touch, options);
    Fx {
        _dir: dir,
        key,
        auth,
    }
}

fn fx(options: AuthenticatorOptions) -> Fx {
    fx_with(Arc::new(AutoTouch), options)
}

fn with_pin() -> AuthenticatorOptions {
    AuthenticatorOptions {
        pin: Some(PIN.into()),
        ..Default::default()
    }
}

fn mc_payload(challenge: &[u8], pin_auth: Option<&PinAuth>, exts: &[Mext]) -> Vec<u8> {
    // As `make_credential_with_args` with `.without_pin_and_uv()` or `.pin(p)`.
    let mut p = make_credential_command::Params::new(RP, challenge.to_vec(), vec![]);
    let mut version = 1;
    if let Some((param, v)) = pin_auth {
        (p.pin_auth, version) = (param.clone(), *v);
    }
    let exts = exts.to_vec();
    make_credential_command::create_payload(p, (!exts.is_empty()).then_some(&exts), version)
        .unwrap()
}

fn ga_params(
    cred: &[u8],
    challenge: &[u8],
    pin_auth: Option<&PinAuth>,
) -> (get_assertion_command::Params, u8) {
    let mut p = get_assertion_command::Params::new(RP, challenge.to_vec(), vec![cred.to_vec()]);
    p.option_up = true;
    let mut version = 1;
    if let Some((param, v)) = pin_auth {
        (p.pin_auth, version) = (param.clone(), *v);
    }
    (p, version)
}

fn ga_payload(cred: &[u8], challenge: &[u8], pin_auth: Option<&PinAuth>) -> Vec<u8> {
    let (p, version) = ga_params(cred, challenge, pin_auth);
    get_assertion_command::create_payload(p, None, None, version).unwrap()
}

impl Fx {
    fn key_agreement(&self, version: u8) -> Value {
        let payload = crate_pin::create_payload(SubCommand::GetKeyAgreement, version).unwrap();
        let resp = call(&self.auth, &payload).unwrap();
        crate_pin::parse_cbor_client_pin_get_keyagreement(&resp).expect("the crate reads it");
        get(&decode(&resp), 1).clone()
    }

    fn retries(&self) -> i32 {
        let payload = crate_pin::create_payload(SubCommand::GetRetries, 1).unwrap();
        crate_pin::parse_cbor_client_pin_get_retries(&call(&self.auth, &payload).unwrap())
            .unwrap()
            .retries
    }

    /// `get_pin_token` (0x05) as the crate does it.
    fn pin_token(&self, pin: &str, version: u8) -> Result<Vec<u8>, u8> {
        let secret = PlatformSecret::new(version, &self.key_agreement(version));
        let payload = crate_pin::create_payload_get_pin_token(
            &crate_cose!(secret.public_key),
            &secret.encrypt_pin(pin),
            version,
        )
        .unwrap();
        let enc =
            crate_pin::parse_cbor_client_pin_get_pin_token(&call(&self.auth, &payload)?).unwrap();
        Ok(secret.decrypt(&enc))
    }

    /// `create_pin_auth`: a fresh token's MAC of SHA-256(challenge).
    fn pin_auth(&self, challenge: &[u8], version: u8) -> PinAuth {
        let token = self.pin_token(PIN, version).unwrap();
        (
            pin_uv_auth_param(&token, &sha256(challenge), version),
            version,
        )
    }

    fn make_credential(
        &self,
        pin_auth: Option<&PinAuth>,
        exts: &[Mext],
    ) -> Result<CrateAttestation, u8> {
        let resp = call(&self.auth, &mc_payload(b"enrol", pin_auth, exts))?;
        Ok(make_credential_response::parse_cbor(&resp).expect("the crate reads it"))
    }

    /// getAssertion with hmac-secret built as `hmac_ext.rs` does (key
    /// agreement first, then the PIN token). Returns flags and output(s).
    fn hmac_assertion(
        &self,
        att: &CrateAttestation,
        salts: &[u8],
        version: u8,
        pin: bool,
    ) -> Result<(u8, Vec<u8>), u8> {
        let challenge = b"unlock";
        let secret = PlatformSecret::new(version, &self.key_agreement(version));
        let salt_enc = secret.encrypt(salts);
        let hmac = Value::Map(vec![
            (1.into(), secret.public_key.clone()),
            (2.into(), Value::Bytes(salt_enc.clone())),
            (3.into(), Value::Bytes(secret.authenticate(&salt_enc))),
            (4.into(), version.into()),
        ]);
        let pin_auth = pin.then(|| self.pin_auth(challenge, version));
        let cred = &att.credential_descriptor.id;
        let payload = ga_payload(cred, challenge, pin_auth.as_ref());
        let Value::Map(mut m) = decode(&payload[1..]) else {
            unreachable!()
        };
        let at = m.iter().position(|(k, _)| *k == Value::from(5)).unwrap();
        m.insert(
            at,
            (4.into(), Value::Map(vec![("hmac-secret".into(), hmac)])),
        );
        let resp = decode(&call(
            &self.auth,
            &[&[0x02], &cbor(&Value::Map(m))[..]].concat(),
        )?);

        let id = params::text_get(get(&resp, 1).as_map().unwrap(), "id").unwrap();
        assert_eq!(id.as_bytes(), Some(cred));
        let auth_data = get(&resp, 2).as_bytes().unwrap();
        verify_sig(
            &att.credential_publickey.der,
            auth_data,
            &sha256(challenge),
            get(&resp, 3).as_bytes().unwrap(),
        );
        let ext = decode(&auth_data[37..]);
        let enc = params::text_get(ext.as_map().unwrap(), "hmac-secret").unwrap();
        Ok((auth_data[32], secret.decrypt(enc.as_bytes().unwrap())))
    }

    /// The same through `SecurityKey::get_assertion` on the soft key.
    fn soft_hmac(&self, cred: &[u8], salt: [u8; 32], uv: bool) -> [u8; 32] {
        let req = GetAssertionRequest {
            rp_id: RP.into(),
            challenge: sha256(b"x"),
            allow: vec![cred.to_vec()],
            hmac_salt: Some(salt),
            uv,
            pin: None,
            up: true,
        };
        *self.key.get_assertion(&req).unwrap().hmac_secret.unwrap()
    }
}

#[test]
fn get_info_says_what_the_key_offers() {
    let info = decode(&call(&fx(Default::default()).auth, &[0x04]).unwrap());
    let texts = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_text().unwrap().to_owned())
            .collect()
    };
    assert_eq!(texts(get(&info, 1)), ["FIDO_2_0", "FIDO_2_1"]);
    assert_eq!(texts(get(&info, 2)), ["hmac-secret", "credProtect"]);
    assert_eq!(
        get(&info, 3).as_bytes().unwrap(),
        &touchgate_agent::key::soft::SOFT_AAGUID
    );
    let opts = |info: &Value| -> Vec<(String, bool)> {
        get(info, 4)
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_text().unwrap().to_owned(), v.as_bool().unwrap()))
            .collect()
    };
    let o = |v: &[(&str, bool)]| -> Vec<(String, bool)> {
        v.iter().map(|(k, b)| (k.to_string(), *b)).collect()
    };
    assert_eq!(
        opts(&info),
        o(&[
            ("rk", false),
            ("up", true),
            ("clientPin", false),
            ("pinUvAuthToken", true)
        ])
    );
    assert_eq!(get(&info, 5), &Value::from(1200));
    assert_eq!(get(&info, 6), &Value::Array(vec![2.into(), 1.into()]));

    let info = decode(
        &call(
            &fx(AuthenticatorOptions {
                pin: Some(PIN.into()),
                aaguid: Some([7; 16]),
                hmac_secret: false,
                built_in_uv: true,
                ..Default::default()
            })
            .auth,
            &[0x04],
        )
        .unwrap(),
    );
    assert_eq!(texts(get(&info, 2)), ["credProtect"]);
    assert_eq!(get(&info, 3).as_bytes().unwrap(), &[7; 16]);
    assert_eq!(
        opts(&info),
        o(&[
            ("rk", false),
            ("up", true),
            ("uv", true),
            ("clientPin", true),
            ("pinUvAuthToken", true)
        ])
    );
}

#[test]
fn make_credential_and_get_assertion_verify_with_the_crate_and_the_agent() {
    let f = fx(Default::default());
    let exts = [
        Mext::HmacSecret(Some(true)),
        Mext::CredProtect(Some(Protect::UserVerificationOptionalWithCredentialIdList)),
    ];
    let att = f.make_credential(None, &exts).unwrap();
    assert_eq!(att.fmt, "packed");
    assert_eq!(att.attstmt_alg, -7);
    assert!(att.attstmt_x5c.is_empty());
    assert_eq!(att.aaguid, touchgate_agent::key::soft::SOFT_AAGUID);
    assert!(att.flags.user_present_result && att.flags.attested_credential_data_included);
    assert!(att.flags.extension_data_included && !att.flags.user_verified_result);
    assert!(matches!(
        att.extensions[..],
        [
            Mext::CredProtect(Some(Protect::UserVerificationOptionalWithCredentialIdList)),
            Mext::HmacSecret(Some(true))
        ]
    ));
    let cdh = sha256(b"enrol");
    verify_sig(
        &att.credential_publickey.der,
        &att.auth_data,
        &cdh,
        &att.attstmt_sig,
    );

    // The agent accepts it as it accepts the soft key's own.
    let agent_att = touchgate_agent::key::Attestation {
        credential_id: att.credential_descriptor.id.clone(),
        public_key_sec1: att.credential_publickey.der.clone(),
        aaguid: att.aaguid.clone().try_into().unwrap(),
        auth_data: att.auth_data.clone(),
        sign_count: att.sign_count,
        format: att.fmt.clone(),
        attestation_signature: att.attstmt_sig.clone(),
        statement_alg: Some(i64::from(att.attstmt_alg)),
        x5c: vec![],
        hmac_secret: true,
    };
    touchgate_agent::verify::check_attestation(&agent_att, &cdh, RP, false).unwrap();

    let resp = call(
        &f.auth,
        &ga_payload(&att.credential_descriptor.id, b"assert", None),
    )
    .unwrap();
    let ass = get_assertion_response::parse_cbor(&resp, None).unwrap();
    assert!(verifier::verify_assertion(
        RP,
        &att.credential_publickey,
        b"assert",
        &ass
    ));
    assert_eq!(ass.credential_id, att.credential_descriptor.id);
    assert_eq!(ass.sign_count, att.sign_count + 1);
    assert!(ass.flags.user_present_result && !ass.flags.user_verified_result);
    assert_eq!(f.auth.touches_requested(), 2);

    // `none` attestation: empty statement, same authData shape.
    let f = fx(AuthenticatorOptions {
        attestation: Attestation::None,
        ..Default::default()
    });
    let att = f.make_credential(None, &[]).unwrap();
    assert_eq!((att.fmt.as_str(), att.attstmt_sig.len()), ("none", 0));
    assert!(!att.flags.extension_data_included);
}

#[test]
fn certificate_attestation_is_packed_with_x5c_and_chains_to_its_root() {
    let aaguid = [0x42; 16];
    let root = crate::ctap::certs::root_ca("CN=emulator test root");
    let (chain, leaf_key) = crate::ctap::certs::attestation_chain(&root, aaguid);
    let f = fx(AuthenticatorOptions {
        aaguid: Some(aaguid),
        attestation: Attestation::Certificate {
            chain: chain.clone(),
            leaf_key: leaf_key.clone(),
        },
        ..Default::default()
    });
    let att = f
        .make_credential(None, &[Mext::HmacSecret(Some(true))])
        .unwrap();
    assert_eq!((att.fmt.as_str(), att.attstmt_alg), ("packed", -7));
    assert_eq!(att.attstmt_x5c, chain, "the crate reads x5c");
    let cdh = sha256(b"enrol");
    // Signed by the leaf certificate's key, not the credential's.
    let leaf_pub = leaf_key.verifying_key().to_encoded_point(false);
    verify_sig(leaf_pub.as_bytes(), &att.auth_data, &cdh, &att.attstmt_sig);

    let agent_att = touchgate_agent::key::Attestation {
        credential_id: att.credential_descriptor.id.clone(),
        public_key_sec1: att.credential_publickey.der.clone(),
        aaguid: att.aaguid.clone().try_into().unwrap(),
        auth_data: att.auth_data.clone(),
        sign_count: att.sign_count,
        format: att.fmt.clone(),
        attestation_signature: att.attstmt_sig.clone(),
        statement_alg: Some(i64::from(att.attstmt_alg)),
        x5c: att.attstmt_x5c.clone(),
        hmac_secret: true,
    };
    touchgate_agent::verify::check_attestation(&agent_att, &cdh, RP, false).unwrap();
    let info = touchgate_agent::attestation::verify_packed_chain(
        &agent_att,
        &cdh,
        std::slice::from_ref(&root.der),
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert_eq!(info.root_subject, "CN=emulator test root");
    assert_eq!(info.chain_len, 2);
}

#[test]
fn hmac_secret_matches_the_soft_key_for_both_protocols_with_and_without_uv() {
    let f = fx(with_pin());
    for version in [1, 2] {
        let att = f
            .make_credential(
                Some(&f.pin_auth(b"enrol", version)),
                &[Mext::HmacSecret(Some(true))],
            )
            .unwrap();
        let cred = att.credential_descriptor.id.clone();
        let (fl, plain) = f.hmac_assertion(&att, &[5; 32], version, false).unwrap();
        assert_eq!(fl, flags::UP | flags::ED);
        assert_eq!(plain, f.soft_hmac(&cred, [5; 32], false));
        let (fl, verified) = f.hmac_assertion(&att, &[5; 32], version, true).unwrap();
        assert_eq!(fl, flags::UP | flags::UV | flags::ED);
        assert_eq!(verified, f.soft_hmac(&cred, [5; 32], true));
        assert_ne!(plain, verified, "UV and no-UV secrets differ");
        // Two salts, two outputs.
        let salts = [[5u8; 32], [6; 32]].concat();
        let (_, both) = f.hmac_assertion(&att, &salts, version, false).unwrap();
        assert_eq!(both[..32], plain[..]);
        assert_eq!(both[32..], f.soft_hmac(&cred, [6; 32], false));
    }
    // The key without hmac-secret ignores the extension.
    let f = fx(AuthenticatorOptions {
        hmac_secret: false,
        ..Default::default()
    });
    let att = f
        .make_credential(None, &[Mext::HmacSecret(Some(true))])
        .unwrap();
    assert!(att.extensions.is_empty() && !att.flags.extension_data_included);
}

#[test]
fn a_bad_salt_auth_is_refused_before_any_touch() {
    let f = fx(Default::default());
    let att = f.make_credential(None, &[]).unwrap();
    let secret = PlatformSecret::new(2, &f.key_agreement(2));
    let salt_enc = secret.encrypt(&[1; 32]);
    let mut auth = secret.authenticate(&salt_enc);
    auth[0] ^= 1;
    let (p, v) = ga_params(&att.credential_descriptor.id, b"c", None);
    let Value::Map(mut m) =
        decode(&get_assertion_command::create_payload(p, None, None, v).unwrap()[1..])
    else {
        unreachable!()
    };
    m.push((
        4.into(),
        Value::Map(vec![(
            "hmac-secret".into(),
            Value::Map(vec![
                (1.into(), secret.public_key.clone()),
                (2.into(), Value::Bytes(salt_enc)),
                (3.into(), Value::Bytes(auth)),
                (4.into(), 2.into()),
            ]),
        )]),
    ));
    let touches = f.auth.touches_requested();
    assert_eq!(
        call(&f.auth, &[&[0x02], &cbor(&Value::Map(m))[..]].concat()),
        Err(0x33)
    );
    assert_eq!(f.auth.touches_requested(), touches);
}

#[test]
fn pin_tokens_authorise_once_and_the_newest_wins() {
    for version in [1, 2] {
        let f = fx(with_pin());
        assert_eq!(
            f.make_credential(None, &[]).unwrap_err(),
            0x36,
            "PIN set: PUAT required"
        );
        let pin_auth = f.pin_auth(b"enrol", version);
        let att = f.make_credential(Some(&pin_auth), &[]).unwrap();
        assert!(att.flags.user_verified_result && att.flags.user_present_result);
        // Its mc permission is used up once presence was collected.
        assert_eq!(f.make_credential(Some(&pin_auth), &[]).unwrap_err(), 0x33);

        let cred = &att.credential_descriptor.id;
        let old = f.pin_token(PIN, version).unwrap();
        let new = f.pin_token(PIN, version).unwrap();
        let auth_with = |t: &[u8]| (pin_uv_auth_param(t, &sha256(b"c"), version), version);
        assert_eq!(
            call(&f.auth, &ga_payload(cred, b"c", Some(&auth_with(&old)))),
            Err(0x33)
        );
        let resp = call(&f.auth, &ga_payload(cred, b"c", Some(&auth_with(&new)))).unwrap();
        let ass = get_assertion_response::parse_cbor(&resp, None).unwrap();
        assert!(ass.flags.user_verified_result);
        assert!(verifier::verify_assertion(
            RP,
            &att.credential_publickey,
            b"c",
            &ass
        ));
        // A token for another challenge does not verify.
        let wrong = (
            pin_uv_auth_param(
                &f.pin_token(PIN, version).unwrap(),
                &sha256(b"other"),
                version,
            ),
            version,
        );
        assert_eq!(
            call(&f.auth, &ga_payload(cred, b"c", Some(&wrong))),
            Err(0x33)
        );
    }
    // No PIN, no token to verify.
    let f = fx(Default::default());
    assert_eq!(
        f.make_credential(Some(&(vec![0; 16], 1)), &[]).unwrap_err(),
        0x35
    );
    assert_eq!(f.pin_token(PIN, 1).unwrap_err(), 0x35);
}

#[test]
fn wrong_pins_count_down_block_and_a_right_one_resets() {
    let f = fx(with_pin());
    assert_eq!(f.retries(), 8);
    assert_eq!(f.pin_token("0000", 2), Err(0x31));
    assert_eq!((f.retries(), f.auth.pin_retries()), (7, 7));
    assert_eq!(f.pin_token("0000", 1), Err(0x31));
    assert_eq!(f.pin_token("0000", 2), Err(0x34), "3rd in a row");
    assert_eq!(f.pin_token(PIN, 2), Err(0x34), "blocked until power cycle");
    assert_eq!(f.retries(), 5);
    f.auth.power_cycle();
    f.pin_token(PIN, 2).unwrap();
    assert_eq!(f.retries(), 8);

    for left in (0..8u8).rev() {
        let status = f.pin_token("0000", 1).unwrap_err();
        assert_eq!(f.auth.pin_retries(), left);
        if left == 0 {
            assert_eq!(status, 0x32);
        } else if status == 0x34 {
            f.auth.power_cycle();
        } else {
            assert_eq!(status, 0x31);
        }
    }
    assert_eq!(f.pin_token(PIN, 1), Err(0x32));
}

#[test]
fn set_and_change_pin_as_the_crate_does() {
    let f = fx(Default::default());
    let set_pin = |pin: &str, v: u8| {
        let s = PlatformSecret::new(v, &f.key_agreement(v));
        let new_pin_enc = s.encrypt_new_pin(pin);
        let payload = crate_pin::create_payload_set_pin(
            &crate_cose!(s.public_key),
            &s.authenticate(&new_pin_enc),
            &new_pin_enc,
            v,
        )
        .unwrap();
        call(&f.auth, &payload)
    };
    let change_pin = |current: &str, new: &str, v: u8| {
        let s = PlatformSecret::new(v, &f.key_agreement(v));
        let (cur_enc, new_enc) = (s.encrypt_pin(current), s.encrypt_new_pin(new));
        let pin_auth = s.authenticate(&[&new_enc[..], &cur_enc].concat());
        let payload = crate_pin::create_payload_change_pin(
            &crate_cose!(s.public_key),
            &pin_auth,
            &new_enc,
            &cur_enc,
            v,
        )
        .unwrap();
        call(&f.auth, &payload)
    };
    assert_eq!(set_pin("12", 1), Err(0x37), "too short");
    set_pin("4321", 2).unwrap();
    assert_eq!(set_pin("5555", 1), Err(0x30), "already set");
    let info = decode(&call(&f.auth, &[0x04]).unwrap());
    assert_eq!(
        params::text_get(get(&info, 4).as_map().unwrap(), "clientPin"),
        Some(&Value::Bool(true))
    );
    assert_eq!(change_pin("0000", "5555", 1), Err(0x31));
    change_pin("4321", PIN, 1).unwrap();
    assert_eq!(f.pin_token("4321", 2), Err(0x31));
    f.pin_token(PIN, 2).unwrap();
    assert_eq!(f.retries(), 8);
}

#[test]
fn touch_refused_cancelled_or_never_given() {
    let f = fx_with(Arc::new(DenyTouch), Default::default());
    assert_eq!(f.make_credential(None, &[]).unwrap_err(), 0x27);
    assert_eq!(call(&f.auth, &[0x0B]), Err(0x27));

    let f = fx_with(Arc::new(NeverTouch), Default::default());
    let (ctx, keepalives) = context();
    let cancel = ctx.cancel.clone();
    let payload = mc_payload(b"enrol", None, &[]);
    let t = Instant::now();
    let resp = std::thread::scope(|s| {
        let h = s.spawn(|| f.auth.handle_cbor(&payload, &ctx));
        std::thread::sleep(Duration::from_millis(250));
        cancel.cancel();
        h.join().unwrap()
    });
    assert_eq!(resp, [0x2D]);
    assert!(t.elapsed() < Duration::from_secs(2));
    let k = keepalives.lock().unwrap();
    assert!(
        k.len() >= 2 && k.iter().all(|&s| s == KEEPALIVE_UPNEEDED),
        "{k:?}"
    );
    // Already cancelled: no wait at all.
    assert_eq!(f.auth.handle_cbor(&payload, &ctx), [0x2D]);

    let f = fx_with(
        Arc::new(NeverTouch),
        AuthenticatorOptions {
            touch_timeout: Duration::from_millis(100),
            ..Default::default()
        },
    );
    assert_eq!(f.make_credential(None, &[]).unwrap_err(), 0x2F);
}

#[test]
fn silent_probes_and_unknown_credentials_need_no_touch() {
    let f = fx(Default::default());
    let att = f.make_credential(None, &[]).unwrap();
    let other = fx(Default::default()).make_credential(None, &[]).unwrap();
    let touches = f.auth.touches_requested();

    let (mut p, v) = ga_params(&att.credential_descriptor.id, b"probe", None);
    p.option_up = false;
    let resp = call(
        &f.auth,
        &get_assertion_command::create_payload(p, None, None, v).unwrap(),
    )
    .unwrap();
    let ass = get_assertion_response::parse_cbor(&resp, None).unwrap();
    assert!(!ass.flags.user_present_result);
    assert!(verifier::verify_assertion(
        RP,
        &att.credential_publickey,
        b"probe",
        &ass
    ));

    assert_eq!(
        call(
            &f.auth,
            &ga_payload(&other.credential_descriptor.id, b"c", None)
        ),
        Err(0x2E)
    );
    let mut p = get_assertion_command::Params::new(RP, b"c".to_vec(), vec![]);
    p.option_up = true;
    assert_eq!(
        call(
            &f.auth,
            &get_assertion_command::create_payload(p, None, None, 1).unwrap()
        ),
        Err(0x2E)
    );
    assert_eq!(f.auth.touches_requested(), touches);
}

#[test]
fn exclude_list_algorithms_and_options() {
    let f = fx(Default::default());
    let att = f.make_credential(None, &[]).unwrap();
    let mut p = make_credential_command::Params::new(RP, b"e".to_vec(), vec![]);
    p.exclude_list = vec![att.credential_descriptor.id.clone()];
    let touches = f.auth.touches_requested();
    assert_eq!(
        call(
            &f.auth,
            &make_credential_command::create_payload(p, None, 1).unwrap()
        ),
        Err(0x19)
    );
    assert_eq!(
        f.auth.touches_requested(),
        touches + 1,
        "excluded only after a touch"
    );

    let mut p = make_credential_command::Params::new(RP, b"e".to_vec(), vec![]);
    p.key_types = vec![CredentialSupportedKeyType::Ed25519];
    assert_eq!(
        call(
            &f.auth,
            &make_credential_command::create_payload(p, None, 1).unwrap()
        ),
        Err(0x26)
    );
    let mut p = make_credential_command::Params::new(RP, b"e".to_vec(), vec![]);
    p.option_rk = true;
    assert_eq!(
        call(
            &f.auth,
            &make_credential_command::create_payload(p, None, 1).unwrap()
        ),
        Err(0x2B)
    );
    // The builder's default uv: true, on a key without built-in UV.
    let mut p = make_credential_command::Params::new(RP, b"e".to_vec(), vec![]);
    p.option_uv = Some(true);
    assert_eq!(
        call(
            &f.auth,
            &make_credential_command::create_payload(p, None, 1).unwrap()
        ),
        Err(0x2C)
    );
}

#[test]
fn cred_protect_uv_required_answers_only_with_uv() {
    let f = fx(with_pin());
    let exts = [Mext::CredProtect(Some(Protect::UserVerificationRequired))];
    let att = f
        .make_credential(Some(&f.pin_auth(b"enrol", 2)), &exts)
        .unwrap();
    let cred = &att.credential_descriptor.id;
    assert_eq!(call(&f.auth, &ga_payload(cred, b"c", None)), Err(0x2E));
    call(&f.auth, &ga_payload(cred, b"c", Some(&f.pin_auth(b"c", 2)))).unwrap();
    // The soft key's SecurityKey path honours it too.
    assert_eq!(f.soft_hmac(cred, [1; 32], true).len(), 32);
    let req = GetAssertionRequest {
        rp_id: RP.into(),
        challenge: [0; 32],
        allow: vec![cred.clone()],
        hmac_salt: None,
        uv: false,
        pin: None,
        up: true,
    };
    assert!(f.key.get_assertion(&req).is_err());
}

#[test]
fn built_in_uv_and_uv_tokens() {
    let f = fx(AuthenticatorOptions {
        built_in_uv: true,
        ..Default::default()
    });
    // Protected by UV: without it makeCredential needs a token.
    assert_eq!(f.make_credential(None, &[]).unwrap_err(), 0x36);
    let mut p = make_credential_command::Params::new(RP, b"enrol".to_vec(), vec![]);
    p.option_uv = Some(true);
    let resp = call(
        &f.auth,
        &make_credential_command::create_payload(p, None, 1).unwrap(),
    )
    .unwrap();
    let att = make_credential_response::parse_cbor(&resp).unwrap();
    assert!(att.flags.user_verified_result && att.flags.user_present_result);

    let s = PlatformSecret::new(2, &f.key_agreement(2));
    let payload = crate_pin::create_payload_get_pin_uv_auth_token_using_uv_with_permissions(
        &crate_cose!(s.public_key),
        Permission::GetAssertion,
        RP,
        2,
    )
    .unwrap();
    let touches = f.auth.touches_requested();
    let token = s.decrypt(
        &crate_pin::parse_cbor_client_pin_get_pin_token(&call(&f.auth, &payload).unwrap()).unwrap(),
    );
    let pin_auth = (pin_uv_auth_param(&token, &sha256(b"c"), 2), 2);
    let resp = call(
        &f.auth,
        &ga_payload(&att.credential_descriptor.id, b"c", Some(&pin_auth)),
    )
    .unwrap();
    let ass = get_assertion_response::parse_cbor(&resp, None).unwrap();
    assert!(ass.flags.user_present_result && ass.flags.user_verified_result);
    assert_eq!(
        f.auth.touches_requested(),
        touches + 1,
        "the UV touch was also the presence"
    );
    // A ga-only token cannot make credentials.
    assert_eq!(
        call(&f.auth, &mc_payload(b"c", Some(&pin_auth), &[])),
        Err(0x33)
    );
}

#[test]
fn sign_count_knob_rolls_the_counter_back() {
    let f = fx(Default::default());
    let att = f.make_credential(None, &[]).unwrap();
    f.auth.set_sign_count(0).unwrap();
    let resp = call(
        &f.auth,
        &ga_payload(&att.credential_descriptor.id, b"c", None),
    )
    .unwrap();
    assert_eq!(
        get_assertion_response::parse_cbor(&resp, None)
            .unwrap()
            .sign_count,
        1
    );
    assert_eq!(f.key.sign_count(), 1);
}

#[test]
fn other_commands_and_bad_requests() {
    let f = fx(with_pin());
    assert_eq!(call(&f.auth, &[]), Err(0x01));
    assert_eq!(call(&f.auth, &[0x03]), Err(0x01));
    assert_eq!(call(&f.auth, &[0x40, 0xA0]), Err(0x01));
    assert_eq!(call(&f.auth, &[0x08]), Err(0x30));
    assert_eq!(call(&f.auth, &[0x0B]), Ok(vec![]));
    assert_eq!(call(&f.auth, &[0x01, 0xA1]), Err(0x12), "truncated CBOR");
    assert_eq!(call(&f.auth, &[0x01, 0x80]), Err(0x11), "not a map");
    assert_eq!(call(&f.auth, &[0x01]), Err(0x14));
    assert_eq!(call(&f.auth, &[0x06, 0xA1, 0x02, 0x18, 0x42]), Err(0x3E));
    assert_eq!(
        call(&f.auth, &[0x06, 0xA1, 0x02, 0x02]),
        Err(0x14),
        "no protocol"
    );
    assert_eq!(
        call(&f.auth, &[0x06, 0xA2, 0x01, 0x03, 0x02, 0x02]),
        Err(0x02),
        "protocol 3"
    );
    // Reset (after a touch) forgets the PIN.
    assert_eq!(call(&f.auth, &[0x07]), Ok(vec![]));
    assert_eq!(f.pin_token(PIN, 1), Err(0x35));
}

#[test]
fn duplicate_map_keys_are_invalid_cbor() {
    let f = fx(with_pin());
    // getClientPIN getRetries {1: 1, 2: 1, 2: 1}: key 2 twice.
    assert_eq!(
        call(&f.auth, &[0x06, 0xA3, 0x01, 0x01, 0x02, 0x01, 0x02, 0x01]),
        Err(0x12)
    );
    assert!(call(&f.auth, &[0x06, 0xA2, 0x01, 0x01, 0x02, 0x01]).is_ok());
    // makeCredential whose extensions map holds "hmac-secret" twice.
    let payload = mc_payload(b"challenge", None, &[]);
    let Value::Map(mut params) = decode(&payload[1..]) else {
        panic!("makeCredential parameters are a map")
    };
    params.retain(|(k, _)| params::as_int(k).ok() != Some(6));
    let twice = vec![
        (Value::Text("hmac-secret".into()), Value::Bool(true)),
        (Value::Text("hmac-secret".into()), Value::Bool(true)),
    ];
    params.push((6.into(), Value::Map(twice)));
    let mut dup = vec![payload[0]];
    dup.extend(cbor(&Value::Map(params)));
    assert_eq!(call(&f.auth, &dup), Err(0x12));
}

#[test]
fn never_panics_on_garbage() {
    let f = fx_with(Arc::new(AutoTouch), with_pin());
    let att = f
        .make_credential(Some(&f.pin_auth(b"enrol", 1)), &[])
        .unwrap();
    let valid = [
        mc_payload(
            b"x",
            Some(&f.pin_auth(b"x", 2)),
            &[Mext::HmacSecret(Some(true))],
        ),
        ga_payload(
            &att.credential_descriptor.id,
            b"x",
            Some(&f.pin_auth(b"x", 1)),
        ),
        crate_pin::create_payload(SubCommand::GetKeyAgreement, 2).unwrap(),
        crate_pin::create_payload_get_pin_token(&crate_cose!(f.key_agreement(1)), &[0; 16], 1)
            .unwrap(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7047);
    let check = |req: &[u8]| assert!(!f.auth.handle_cbor(req, &context().0).is_empty());
    for v in &valid {
        for n in 0..v.len() {
            check(&v[..n]);
        }
        for _ in 0..300 {
            let mut m = v.clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..m.len());
                m[i] = rng.gen();
            }
            check(&m);
        }
    }
    for _ in 0..2000 {
        let len = rng.gen_range(0..200);
        let mut req: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if let Some(c) = req.first_mut() {
            *c %= 0x0C;
        }
        check(&req);
    }
    // Lengths that lie, and nesting too deep.
    check(&[0x01, 0x5B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    check(&[0x02, 0xBB, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    check(&[0x02, 0x9B, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]);
    check(&[&[0x06][..], &[0x81; 5000]].concat());
    check(&[&[0x01][..], &[0xA1, 0x01].repeat(3000)].concat());
    f.auth.power_cycle(); // the fuzzing may have blocked the PIN for now
}

#[test]
fn secrets_stay_out_of_debug() {
    let options = with_pin();
    assert!(!format!("{options:?}").contains(PIN));
    let f = fx(options);
    assert!(!format!("{:?}", f.auth).contains(PIN));
}

/// The `auth_data`, `attestation` and `chain` fuzz seeds
/// (`fuzz/corpus-seed/<target>/`), made from this emulated key's real
/// answers: self, `none` and certificate attestations, and edits of them
/// that break one thing. Without `TOUCHGATE_WRITE_SEEDS=1` fresh answers
/// must still pass the agent's checks as the kept seeds do (their outcomes
/// are checked by fuzz/bodies/tests/agent_seeds.rs); with it, the seeds are
/// rewritten.
#[test]
fn attestation_fuzz_seeds_come_from_the_emulated_key() {
    use std::time::{SystemTime, UNIX_EPOCH};
    use touchgate_agent::key::Attestation as AgentAttestation;
    const HMAC_EXT: &[u8] = b"\xA1\x6Bhmac-secret\xF5";

    fn agent_att(att: &CrateAttestation) -> AgentAttestation {
        AgentAttestation {
            credential_id: att.credential_descriptor.id.clone(),
            public_key_sec1: att.credential_publickey.der.clone(),
            aaguid: att.aaguid.clone().try_into().unwrap(),
            auth_data: att.auth_data.clone(),
            sign_count: att.sign_count,
            format: att.fmt.clone(),
            attestation_signature: att.attstmt_sig.clone(),
            x5c: att.attstmt_x5c.clone(),
            hmac_secret: att.flags.extension_data_included,
            statement_alg: Some(i64::from(att.attstmt_alg)),
        }
    }
    /// The fuzz input: an attestation object with cdh, roots and now.
    fn object(a: &AgentAttestation, roots: &[&[u8]], now: u64) -> Vec<u8> {
        let mut stmt = vec![
            ("alg".into(), Value::from(-7)),
            ("sig".into(), Value::Bytes(a.attestation_signature.clone())),
        ];
        if !a.x5c.is_empty() {
            let x5c = a.x5c.iter().map(|c| Value::Bytes(c.clone())).collect();
            stmt.push(("x5c".into(), Value::Array(x5c)));
        }
        let roots = roots.iter().map(|r| Value::Bytes(r.to_vec())).collect();
        cbor(&Value::Map(vec![
            ("fmt".into(), a.format.clone().into()),
            ("authData".into(), Value::Bytes(a.auth_data.clone())),
            ("attStmt".into(), Value::Map(stmt)),
            ("cdh".into(), Value::Bytes(sha256(b"enrol").to_vec())),
            ("roots".into(), Value::Array(roots)),
            ("now".into(), now.into()),
        ]))
    }

    let cdh = sha256(b"enrol");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hmac = [Mext::HmacSecret(Some(true))];
    let own = agent_att(&fx(Default::default()).make_credential(None, &hmac).unwrap());
    let none = agent_att(
        &fx(AuthenticatorOptions {
            attestation: Attestation::None,
            ..Default::default()
        })
        .make_credential(None, &[])
        .unwrap(),
    );
    let aaguid = [0x42; 16];
    let root = crate::ctap::certs::root_ca("CN=emulator test root");
    let other_root = crate::ctap::certs::root_ca("CN=another root");
    let (chain, leaf_key) = crate::ctap::certs::attestation_chain(&root, aaguid);
    let certified = agent_att(
        &fx(AuthenticatorOptions {
            aaguid: Some(aaguid),
            attestation: Attestation::Certificate { chain, leaf_key },
            ..Default::default()
        })
        .make_credential(None, &hmac)
        .unwrap(),
    );
    for a in [&own, &none, &certified] {
        touchgate_agent::verify::check_attestation(a, &cdh, RP, false).unwrap();
    }
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(now);
    touchgate_agent::attestation::verify_packed_chain(
        &certified,
        &cdh,
        std::slice::from_ref(&root.der),
        at,
    )
    .unwrap();

    // Edits that break exactly one thing.
    assert!(
        own.auth_data.ends_with(HMAC_EXT),
        "the extensions come last"
    );
    let mut dup = own.clone();
    dup.auth_data.truncate(own.auth_data.len() - HMAC_EXT.len());
    dup.auth_data
        .extend_from_slice(b"\xA2\x6Bhmac-secret\xF5\x6Bhmac-secret\xF5");
    let mut bad_sig = certified.clone();
    let last = bad_sig.attestation_signature.len() - 1;
    bad_sig.attestation_signature[last] ^= 1;
    let mut truncated = own.auth_data.clone();
    truncated.truncate(37 + 16 + 2 + own.credential_id.len() + 20);

    if std::env::var_os("TOUCHGATE_WRITE_SEEDS").is_none() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus-seed");
    let write = |target: &str, name: &str, data: &[u8]| {
        std::fs::create_dir_all(dir.join(target)).unwrap();
        std::fs::write(dir.join(target).join(name), data).unwrap();
    };
    write("auth_data", "self-packed-hmac-secret.bin", &own.auth_data);
    write("auth_data", "none.bin", &none.auth_data);
    write("auth_data", "certified.bin", &certified.auth_data);
    write("auth_data", "duplicate-hmac-secret.bin", &dup.auth_data);
    write("auth_data", "truncated-cose-key.bin", &truncated);
    let r: &[&[u8]] = &[&root.der];
    write("attestation", "self-packed.cbor", &object(&own, &[], now));
    write("attestation", "none.cbor", &object(&none, &[], now));
    write(
        "attestation",
        "x5c-packed.cbor",
        &object(&certified, r, now),
    );
    write(
        "attestation",
        "x5c-bad-signature.cbor",
        &object(&bad_sig, r, now),
    );
    write(
        "attestation",
        "duplicate-hmac-secret.cbor",
        &object(&dup, &[], now),
    );
    write("chain", "x5c-to-root.cbor", &object(&certified, r, now));
    write(
        "chain",
        "x5c-other-root.cbor",
        &object(&certified, &[&other_root.der], now),
    );
    write(
        "chain",
        "x5c-expired.cbor",
        &object(&certified, r, now + 20 * 365 * 86400),
    );
    write("chain", "x5c-bad-signature.cbor", &object(&bad_sig, r, now));
    write("chain", "self-attestation.cbor", &object(&own, r, now));
}
