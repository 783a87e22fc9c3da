//! The input of the `attestation` and `chain` fuzz targets, shared by
//! their bodies and the regression tests.
//!
//! The input is a CTAP2 attestation object, a CBOR map as a key sends it,
//! `{"fmt": text, "authData": bytes, "attStmt": {"alg": int, "sig": bytes,
//! "x5c": [bytes]}}`, with three more keys the check needs: `"cdh"` (the
//! 32-byte clientDataHash), `"roots"` (`[bytes]`, DER root certificates) and
//! `"now"` (unix seconds). The credential id, AAGUID, public key and
//! hmac-secret the backend reports are what the authData says when it parses
//! (as a real backend reports them), else empty.

use std::time::{Duration, SystemTime};

use ciborium::value::Value;
use touchgate_agent::key::Attestation;

pub struct Input {
    pub att: Attestation,
    pub cdh: [u8; 32],
    pub roots: Vec<Vec<u8>>,
    pub now: SystemTime,
}

fn text_get<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn bytes_list(v: Option<&Value>) -> Vec<Vec<u8>> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|c| c.as_bytes().cloned()).collect())
        .unwrap_or_default()
}

/// The attestation object in `data`, or `None` when it is not one (the
/// harness's own format, not the code under test).
pub fn decode(data: &[u8]) -> Option<Input> {
    let value: Value = ciborium::de::from_reader(data).ok()?;
    let map = value.as_map()?;
    let format = text_get(map, "fmt")?.as_text()?.to_owned();
    let auth_data = text_get(map, "authData")?.as_bytes()?.clone();
    let stmt = text_get(map, "attStmt")
        .and_then(Value::as_map)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let signature = text_get(stmt, "sig")
        .and_then(Value::as_bytes)
        .cloned()
        .unwrap_or_default();
    let x5c = bytes_list(text_get(stmt, "x5c"));
    let statement_alg = text_get(stmt, "alg")
        .and_then(Value::as_integer)
        .and_then(|i| i64::try_from(i).ok());
    let mut cdh = [0u8; 32];
    if let Some(b) = text_get(map, "cdh").and_then(Value::as_bytes) {
        let n = b.len().min(32);
        cdh[..n].copy_from_slice(&b[..n]);
    }
    let roots = bytes_list(text_get(map, "roots"));
    let now = text_get(map, "now")
        .and_then(Value::as_integer)
        .and_then(|i| u64::try_from(i).ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s.min(1 << 40)))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let parsed = touchgate_agent::verify::attested_credential(&auth_data).ok();
    let att = Attestation {
        credential_id: parsed
            .as_ref()
            .map(|p| p.credential_id.clone())
            .unwrap_or_default(),
        public_key_sec1: parsed
            .as_ref()
            .map(|p| p.public_key_sec1.to_vec())
            .unwrap_or_default(),
        aaguid: parsed.as_ref().map(|p| p.aaguid).unwrap_or_default(),
        sign_count: parsed.as_ref().map(|p| p.sign_count).unwrap_or_default(),
        hmac_secret: parsed.as_ref().is_some_and(|p| p.hmac_secret),
        auth_data,
        format,
        attestation_signature: signature,
        x5c,
        statement_alg,
    };
    Some(Input {
        att,
        cdh,
        roots,
        now,
    })
}

/// `e` is one line, as every error shown to the user must be.
pub fn assert_one_line(e: &dyn std::fmt::Display) {
    let s = e.to_string();
    assert!(
        !s.contains('\n') && !s.contains('\r'),
        "error is not one line: {s:?}"
    );
    assert!(!s.is_empty(), "empty error");
}
