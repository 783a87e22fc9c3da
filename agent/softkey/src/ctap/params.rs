//! Reading CTAP2 request parameters from CBOR (responses are written with
//! the crate's `cbor` helpers).
//!
//! Requests are decoded into [`ciborium::Value`] (ciborium limits nesting
//! depth and never trusts declared lengths, so any input is safe to parse).
//! Wrong types give CTAP2_ERR_CBOR_UNEXPECTED_TYPE, absent required values
//! CTAP2_ERR_MISSING_PARAMETER. A map holding a key twice, at any depth, is
//! CTAP2_ERR_INVALID_CBOR (CTAP2 canonical CBOR has unique keys).

use ciborium::value::Value;

use super::status::{CtapResult, Status};

/// The parameter map of a request: `{uint key: value}`.
pub(crate) struct Params(Vec<(Value, Value)>);

impl Params {
    /// Parse the bytes after the command byte. No bytes is an empty map.
    pub fn parse(body: &[u8]) -> CtapResult<Params> {
        if body.is_empty() {
            return Ok(Params(Vec::new()));
        }
        let value: Value = ciborium::de::from_reader(body).map_err(|_| Status::INVALID_CBOR)?;
        if has_duplicate_key(&value) {
            return Err(Status::INVALID_CBOR);
        }
        match value {
            Value::Map(entries) => Ok(Params(entries)),
            _ => Err(Status::CBOR_UNEXPECTED_TYPE),
        }
    }

    /// The value under integer key `key`.
    pub fn get(&self, key: i64) -> Option<&Value> {
        int_get(&self.0, key)
    }

    /// The value under `key`, or CTAP2_ERR_MISSING_PARAMETER.
    pub fn required(&self, key: i64) -> CtapResult<&Value> {
        self.get(key).ok_or(Status::MISSING_PARAMETER)
    }
}

/// Whether a map in `v`, at any depth, holds a key twice.
fn has_duplicate_key(v: &Value) -> bool {
    match v {
        Value::Map(entries) => {
            entries
                .iter()
                .enumerate()
                .any(|(i, (k, _))| entries[..i].iter().any(|(seen, _)| seen == k))
                || entries
                    .iter()
                    .any(|(k, v)| has_duplicate_key(k) || has_duplicate_key(v))
        }
        Value::Array(items) => items.iter().any(has_duplicate_key),
        Value::Tag(_, inner) => has_duplicate_key(inner),
        _ => false,
    }
}

/// The value under integer key `key` in a CBOR map (also for reading responses).
pub fn int_get(map: &[(Value, Value)], key: i64) -> Option<&Value> {
    map.iter()
        .find(|(k, _)| as_int(k).ok() == Some(key))
        .map(|(_, v)| v)
}

/// The value under text key `key` in a CBOR map.
pub fn text_get<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

pub fn as_int(v: &Value) -> CtapResult<i64> {
    match v {
        Value::Integer(i) => i64::try_from(i128::from(*i)).map_err(|_| Status::INVALID_PARAMETER),
        _ => Err(Status::CBOR_UNEXPECTED_TYPE),
    }
}

pub(crate) fn as_bytes(v: &Value) -> CtapResult<&[u8]> {
    v.as_bytes()
        .map(Vec::as_slice)
        .ok_or(Status::CBOR_UNEXPECTED_TYPE)
}

pub(crate) fn as_text(v: &Value) -> CtapResult<&str> {
    v.as_text().ok_or(Status::CBOR_UNEXPECTED_TYPE)
}

pub(crate) fn as_bool(v: &Value) -> CtapResult<bool> {
    v.as_bool().ok_or(Status::CBOR_UNEXPECTED_TYPE)
}

pub(crate) fn as_map(v: &Value) -> CtapResult<&[(Value, Value)]> {
    v.as_map()
        .map(Vec::as_slice)
        .ok_or(Status::CBOR_UNEXPECTED_TYPE)
}

pub(crate) fn as_array(v: &Value) -> CtapResult<&[Value]> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or(Status::CBOR_UNEXPECTED_TYPE)
}

/// A 32-byte clientDataHash.
pub(crate) fn client_data_hash(v: &Value) -> CtapResult<[u8; 32]> {
    as_bytes(v)?
        .try_into()
        .map_err(|_| Status::INVALID_PARAMETER)
}

/// The ids of a PublicKeyCredentialDescriptor list (allowList, excludeList),
/// skipping descriptors whose type is not "public-key".
pub(crate) fn credential_ids(v: &Value) -> CtapResult<Vec<&[u8]>> {
    let mut ids = Vec::new();
    for d in as_array(v)? {
        let d = as_map(d)?;
        let id = as_bytes(text_get(d, "id").ok_or(Status::MISSING_PARAMETER)?)?;
        let ty = as_text(text_get(d, "type").ok_or(Status::MISSING_PARAMETER)?)?;
        if ty == "public-key" {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The `options` map of makeCredential / getAssertion (absent = not given).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Options {
    pub rk: Option<bool>,
    pub up: Option<bool>,
    pub uv: Option<bool>,
}

impl Options {
    pub fn parse(v: Option<&Value>) -> CtapResult<Options> {
        let Some(v) = v else {
            return Ok(Options::default());
        };
        let map = as_map(v)?;
        let get = |k| text_get(map, k).map(as_bool).transpose();
        Ok(Options {
            rk: get("rk")?,
            up: get("up")?,
            uv: get("uv")?,
        })
    }
}
