//! Writing CBOR with ciborium: the values the key puts in authenticator data
//! (COSE keys, extension outputs) and in CTAP2 responses. Map keys are given
//! by the callers in CTAP2 canonical order (integers ascending; text keys
//! shorter first, then bytewise), and ciborium writes every integer and length
//! in its shortest form, so the bytes are canonical CBOR.

use ciborium::value::{Integer, Value};

/// A CBOR integer value.
pub(crate) fn int(i: i64) -> Value {
    Value::Integer(Integer::from(i))
}

/// A CBOR text value.
pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// A map with integer keys, in the order given (callers give them ascending).
pub(crate) fn int_map(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (int(k), v)).collect())
}

/// A map with text keys, in the order given (callers give them canonical:
/// shorter first, then bytewise).
pub(crate) fn text_map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

/// Serialise a value.
pub(crate) fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}
