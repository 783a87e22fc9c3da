//! An emulated FIDO2 security key for tests on machines without USB: the
//! soft key's CTAP2 authenticator speaking CBOR ([`authenticator`], from
//! `touchgate-softkey`), behind a real CTAPHID transport of 64-byte reports
//! on a SOCK_SEQPACKET socket ([`hid`]), which the unmodified ctap-hid-fido2
//! / hidapi opens as if it were a hidraw node through a small LD_PRELOAD
//! interposer ([`preload`]). Attestation certificates come from
//! [`certs`] (the soft key's builder).

pub use touchgate_softkey::certs;
pub use touchgate_softkey::ctap::{
    CborHandler, OpContext, KEEPALIVE_PROCESSING, KEEPALIVE_UPNEEDED,
};
pub use touchgate_softkey::CancelFlag;

pub mod authenticator;
pub mod hid;
pub mod preload;
