//! An emulated FIDO2 security key for tests on machines without USB: a CTAP2
//! authenticator speaking CBOR ([`authenticator`]), behind a real CTAPHID
//! transport of 64-byte reports on a SOCK_SEQPACKET socket ([`hid`]), which
//! the unmodified ctap-hid-fido2 / hidapi opens as if it were a hidraw node
//! through a small LD_PRELOAD interposer ([`preload`]).

use std::sync::Arc;

pub use touchgate_agent::key::soft::CancelFlag;

pub mod authenticator;
pub mod certs;
pub mod hid;
pub mod preload;

/// CTAPHID_KEEPALIVE status codes.
pub const KEEPALIVE_PROCESSING: u8 = 1;
pub const KEEPALIVE_UPNEEDED: u8 = 2;

/// What the transport gives the authenticator for one CBOR request.
pub struct OpContext {
    /// Set when the host sends CTAPHID_CANCEL on this channel (or the device is unplugged).
    pub cancel: Arc<CancelFlag>,
    /// Ask the transport to send a KEEPALIVE with this status now (the transport also sends
    /// them on its own every ~100 ms while a request is being processed).
    pub keepalive: Box<dyn Fn(u8) + Send + Sync>,
}

/// The CTAP2 command layer behind a CTAPHID transport.
pub trait CborHandler: Send + Sync + 'static {
    /// `request` is the CTAPHID_CBOR payload: command byte ‖ CBOR parameters. Returns the
    /// response payload: status byte ‖ CBOR (CTAP2_OK = 0x00, CTAP2_ERR_KEEPALIVE_CANCEL = 0x2D, …).
    fn handle_cbor(&self, request: &[u8], ctx: &OpContext) -> Vec<u8>;
    /// CTAPHID_WINK: blink (no-op is fine).
    fn wink(&self) {}
}
