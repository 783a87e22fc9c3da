//! How credentials and authenticator models are named to people: the first
//! bytes of a credential id and the AAGUID in its usual 8-4-4-4-12 form.
//! Both are public identifiers, never secrets.

/// The first 8 bytes of a credential id, hex: how keys are named to people.
pub(crate) fn short_id(id: &[u8]) -> String {
    hex::encode(&id[..id.len().min(8)])
}

/// An AAGUID as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub(crate) fn format_aaguid(a: &[u8; 16]) -> String {
    let h = hex::encode(a);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
