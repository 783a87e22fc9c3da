//! authenticatorGetAssertion (0x02) with an allowList, hmac-secret, silent
//! probes (`up: false`) and UV by PIN token or built-in UV.

use ciborium::value::Value;
use zeroize::Zeroizing;

use super::client_pin::PERMISSION_GA;
use super::params::{
    as_bytes, as_map, as_text, client_data_hash, credential_ids, int_get, text_get, Options, Params,
};
use super::protocol::{PinProtocol, SharedSecret};
use super::status::{CtapResult, Status};
use super::{Authenticator, UvCheck};
use crate::auth_data::flags;
use crate::cbor::{int_map, text, text_map};
use crate::credential::Credential;
use crate::ctap::OpContext;
use crate::key::Session;

pub(super) fn handle(auth: &Authenticator, p: &Params, ctx: &OpContext) -> CtapResult<Value> {
    let rp_id = as_text(p.required(0x01)?)?;
    let cdh = client_data_hash(p.required(0x02)?)?;
    let allow = p
        .get(0x03)
        .map(credential_ids)
        .transpose()?
        .unwrap_or_default();
    let hmac_request = match p.get(0x04) {
        Some(ext) if auth.options.hmac_secret => text_get(as_map(ext)?, "hmac-secret"),
        Some(ext) => as_map(ext).map(|_| None)?,
        None => None,
    };
    let options = Options::parse(p.get(0x05))?;
    if options.rk.is_some() {
        return Err(Status::UNSUPPORTED_OPTION);
    }
    let up = options.up.unwrap_or(true);
    let verified = auth.verify_user(
        ctx,
        p,
        0x06,
        UvCheck {
            options,
            client_data_hash: &cdh,
            rp_id,
            permission: PERMISSION_GA,
            uv_required: false,
        },
    )?;

    let mut session = auth.key.session();
    let cred = session
        .find_credential(rp_id, allow, verified.uv)
        .ok_or(Status::NO_CREDENTIALS)?;
    // Check the salts before bothering the user.
    let hmac = hmac_request
        .map(|v| HmacSecretInput::parse(auth, v))
        .transpose()?;

    if (up && !verified.token_up) || verified.builtin_uv {
        auth.require_touch(ctx, "approve a touchgate request")?;
    }
    if up && verified.token {
        auth.pin().consume_token();
    }
    let sign_count = session.next_sign_count().map_err(|_| Status::OTHER)?;

    let mut user = 0;
    if up {
        user |= flags::UP;
    }
    if verified.uv {
        user |= flags::UV;
    }
    let mut extensions = Vec::new();
    if let Some(hmac) = hmac {
        let output = hmac.output(&session, &cred, verified.uv);
        extensions.push(("hmac-secret", Value::Bytes(output)));
    }
    let auth_data = session.auth_data(&cred, user, sign_count, None, extensions);
    let signature = session.sign(&cred, &auth_data, &cdh);
    let mut response = vec![
        (
            0x01,
            text_map(vec![
                ("id", Value::Bytes(cred.id().to_vec())),
                ("type", text("public-key")),
            ]),
        ),
        (0x02, Value::Bytes(auth_data.clone())),
    ];
    if auth.options.duplicate_assertion_auth_data {
        response.push((0x02, Value::Bytes(auth_data)));
    }
    response.push((0x03, Value::Bytes(signature)));
    Ok(int_map(response))
}

/// The hmac-secret input `{1: keyAgreement, 2: saltEnc, 3: saltAuth,
/// 4: pinUvAuthProtocol (default 1)}`, checked and decrypted.
struct HmacSecretInput {
    shared: SharedSecret,
    /// salt1, or salt1 ‖ salt2.
    salts: Zeroizing<Vec<u8>>,
}

impl HmacSecretInput {
    /// saltAuth must be the shared secret's MAC of saltEnc
    /// (CTAP2_ERR_PIN_AUTH_INVALID), and the salts 32 or 64 bytes
    /// (CTAP1_ERR_INVALID_LENGTH).
    fn parse(auth: &Authenticator, v: &Value) -> CtapResult<HmacSecretInput> {
        let map = as_map(v)?;
        let field = |k| int_get(map, k).ok_or(Status::MISSING_PARAMETER);
        let protocol = int_get(map, 4)
            .map(PinProtocol::from_value)
            .transpose()?
            .unwrap_or(PinProtocol::One);
        let (salt_enc, salt_auth) = (as_bytes(field(2)?)?, as_bytes(field(3)?)?);
        let shared = auth
            .pin()
            .key_agreement()
            .shared_secret(protocol, field(1)?)?;
        if !shared.verify(salt_enc, salt_auth) {
            return Err(Status::PIN_AUTH_INVALID);
        }
        let salts = shared.decrypt(salt_enc)?;
        if salts.len() != 32 && salts.len() != 64 {
            return Err(Status::INVALID_LENGTH);
        }
        Ok(HmacSecretInput { shared, salts })
    }

    /// output1 (‖ output2) from the soft key's CredRandom for `uv`,
    /// encrypted for the platform.
    fn output(&self, session: &Session<'_>, cred: &Credential, uv: bool) -> Vec<u8> {
        let mut outputs = Zeroizing::new(Vec::with_capacity(self.salts.len()));
        for salt in self.salts.chunks_exact(32) {
            let salt: &[u8; 32] = salt.try_into().expect("32-byte chunk");
            outputs.extend_from_slice(&session.hmac_secret(cred, salt, uv)[..]);
        }
        self.shared.encrypt(&outputs)
    }
}
