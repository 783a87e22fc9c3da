//! Authenticator data (WebAuthn §6.1), built in one place for every answer
//! the key gives, through either front end:
//!
//! `rpIdHash(32) ‖ flags(1) ‖ signCount(4, big endian) ‖ [attested credential
//! data: aaguid(16) ‖ credIdLen(2) ‖ credId ‖ COSE_Key] ‖ [extensions: a CBOR map]`.
//!
//! The AT and ED flags follow from what is included, so they cannot disagree
//! with the bytes.

use ciborium::value::Value;

use crate::cbor::{encode, text_map};

/// Flags in authenticator data.
pub mod flags {
    /// User present.
    pub const UP: u8 = 0x01;
    /// User verified.
    pub const UV: u8 = 0x04;
    /// Attested credential data included.
    pub const AT: u8 = 0x40;
    /// Extension data included.
    pub const ED: u8 = 0x80;
}

/// Attested credential data: the AAGUID, the credential id and its public key.
pub(crate) struct Attested<'a> {
    pub aaguid: &'a [u8; 16],
    pub credential_id: &'a [u8],
    /// The COSE_Key, already encoded.
    pub cose_key: &'a [u8],
}

/// The authenticator data. `user` holds the UP and UV flags to report (others
/// are ignored); AT is set when `attested` is given, ED when `extensions` is
/// not empty (written as one map, in the order given: canonical order is the
/// caller's).
pub(crate) fn auth_data(
    rp_id_hash: &[u8; 32],
    user: u8,
    sign_count: u32,
    attested: Option<&Attested<'_>>,
    extensions: Vec<(&str, Value)>,
) -> Vec<u8> {
    let mut fl = user & (flags::UP | flags::UV);
    if attested.is_some() {
        fl |= flags::AT;
    }
    if !extensions.is_empty() {
        fl |= flags::ED;
    }
    let mut out = Vec::with_capacity(37 + 18 + 48 + 77 + 16);
    out.extend_from_slice(rp_id_hash);
    out.push(fl);
    out.extend_from_slice(&sign_count.to_be_bytes());
    if let Some(a) = attested {
        out.extend_from_slice(a.aaguid);
        let len = u16::try_from(a.credential_id.len()).expect("credential ids are short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(a.credential_id);
        out.extend_from_slice(a.cose_key);
    }
    if !extensions.is_empty() {
        out.extend_from_slice(&encode(&text_map(extensions)));
    }
    out
}
