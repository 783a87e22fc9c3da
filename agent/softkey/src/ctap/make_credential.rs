//! authenticatorMakeCredential (0x01): a non-discoverable ES256 credential
//! of the soft key, with hmac-secret and credProtect, packed self or none
//! attestation, or packed full attestation with a certificate chain.

use ciborium::value::Value;
use p256::ecdsa::signature::Signer as _;

use super::client_pin::PERMISSION_MC;
use super::params::{
    as_array, as_bool, as_int, as_map, as_text, client_data_hash, credential_ids, text_get,
    Options, Params,
};
use super::status::{CtapResult, Status};
use super::{Attestation, Authenticator, UvCheck};
use crate::auth_data::flags;
use crate::cbor::{int, int_map, text, text_map};
use crate::credential::ALG_ES256;
use crate::ctap::OpContext;

/// credProtect userVerificationRequired.
const CRED_PROTECT_UV_REQUIRED: i64 = 3;

pub(super) fn handle(auth: &Authenticator, p: &Params, ctx: &OpContext) -> CtapResult<Value> {
    let cdh = client_data_hash(p.required(0x01)?)?;
    let rp_id =
        as_text(text_get(as_map(p.required(0x02)?)?, "id").ok_or(Status::MISSING_PARAMETER)?)?;
    as_bytes_field(as_map(p.required(0x03)?)?, "id")?;
    if !supports_es256(as_array(p.required(0x04)?)?)? {
        return Err(Status::UNSUPPORTED_ALGORITHM);
    }
    let exclude = p
        .get(0x05)
        .map(credential_ids)
        .transpose()?
        .unwrap_or_default();
    let (hmac_secret, cred_protect) = extensions(p.get(0x06))?;
    let options = Options::parse(p.get(0x07))?;
    if options.rk == Some(true) {
        return Err(Status::UNSUPPORTED_OPTION);
    }
    if options.up == Some(false) {
        return Err(Status::INVALID_OPTION);
    }
    let verified = auth.verify_user(
        ctx,
        p,
        0x08,
        UvCheck {
            options,
            client_data_hash: &cdh,
            rp_id,
            permission: PERMISSION_MC,
            uv_required: true,
        },
    )?;

    let mut session = auth.key.session();
    if session
        .find_credential(rp_id, exclude, verified.uv)
        .is_some()
    {
        auth.require_touch(ctx, "confirm this security key is already registered")?;
        return Err(Status::CREDENTIAL_EXCLUDED);
    }
    if !verified.token_up {
        auth.require_touch(ctx, "create a touchgate credential")?;
    }
    if verified.token {
        auth.pin().consume_token();
    }

    let uv_required = cred_protect == Some(CRED_PROTECT_UV_REQUIRED);
    let cred = session.create_credential(rp_id, uv_required);
    let sign_count = session.next_sign_count().map_err(|_| Status::OTHER)?;

    // Canonical order: "credProtect" before "hmac-secret".
    let mut ext = Vec::new();
    if let Some(level) = cred_protect {
        ext.push(("credProtect", int(level)));
    }
    if hmac_secret && auth.options.hmac_secret {
        ext.push(("hmac-secret", Value::Bool(true)));
    }
    let mut user = flags::UP;
    if verified.uv && !auth.options.omit_uv_flag_in_attestation {
        user |= flags::UV;
    }
    let auth_data = session.auth_data(&cred, user, sign_count, Some(&auth.aaguid), ext);

    let alg = int(auth.options.misstate_packed_alg.unwrap_or(ALG_ES256));
    let (fmt, att_stmt) = match &auth.options.attestation {
        Attestation::SelfPacked => {
            let sig = session.sign(&cred, &auth_data, &cdh);
            (
                "packed",
                text_map(vec![("alg", alg), ("sig", Value::Bytes(sig))]),
            )
        }
        Attestation::None => ("none", Value::Map(Vec::new())),
        Attestation::Certificate { chain, leaf_key } => {
            let sig: p256::ecdsa::Signature =
                leaf_key.sign(&[auth_data.as_slice(), &cdh[..]].concat());
            let x5c = chain.iter().map(|c| Value::Bytes(c.clone())).collect();
            (
                "packed",
                text_map(vec![
                    ("alg", alg),
                    ("sig", Value::Bytes(sig.to_der().as_bytes().to_vec())),
                    ("x5c", Value::Array(x5c)),
                ]),
            )
        }
    };
    let response = int_map(vec![
        (0x01, text(fmt)),
        (0x02, Value::Bytes(auth_data)),
        (0x03, att_stmt),
    ]);
    Ok(match auth.options.duplicate_response_key {
        Some(key) => with_duplicate(response, key),
        None => response,
    })
}

/// The response with `key` (a top-level member's name, or a member of the
/// attestation statement) written twice, the copy right after the original.
fn with_duplicate(response: Value, key: &str) -> Value {
    let top = match key {
        "fmt" => Some(0x01),
        "authData" => Some(0x02),
        "attStmt" => Some(0x03),
        _ => None,
    };
    let Value::Map(mut entries) = response else {
        return response;
    };
    let twice = |entries: &mut Vec<(Value, Value)>, at: usize| {
        let copy = entries[at].clone();
        entries.insert(at + 1, copy);
    };
    if let Some(n) = top {
        if let Some(at) = entries.iter().position(|(k, _)| *k == int(n)) {
            twice(&mut entries, at);
        }
    } else if let Some((_, Value::Map(stmt))) = entries.iter_mut().find(|(k, _)| *k == int(0x03)) {
        if let Some(at) = stmt.iter().position(|(k, _)| *k == text(key)) {
            twice(stmt, at);
        }
    }
    Value::Map(entries)
}

/// A required byte-string field of a map (user.id).
fn as_bytes_field(map: &[(Value, Value)], key: &str) -> CtapResult<()> {
    super::params::as_bytes(text_get(map, key).ok_or(Status::MISSING_PARAMETER)?).map(|_| ())
}

/// pubKeyCredParams holds `{alg: -7, type: "public-key"}`.
fn supports_es256(params: &[Value]) -> CtapResult<bool> {
    for param in params {
        let param = as_map(param)?;
        let alg = as_int(text_get(param, "alg").ok_or(Status::MISSING_PARAMETER)?)?;
        let ty = as_text(text_get(param, "type").ok_or(Status::MISSING_PARAMETER)?)?;
        if alg == ALG_ES256 && ty == "public-key" {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The extensions we act on: hmac-secret (bool) and credProtect (1..=3;
/// other values are ignored). Others are ignored, as the spec says.
fn extensions(v: Option<&Value>) -> CtapResult<(bool, Option<i64>)> {
    let Some(v) = v else {
        return Ok((false, None));
    };
    let map = as_map(v)?;
    let hmac_secret = text_get(map, "hmac-secret")
        .map(as_bool)
        .transpose()?
        .unwrap_or(false);
    let cred_protect = text_get(map, "credProtect")
        .map(as_int)
        .transpose()?
        .filter(|l| (1..=3).contains(l));
    Ok((hmac_secret, cred_protect))
}
