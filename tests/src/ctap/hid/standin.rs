//! A stand-in CTAP2 command layer for transport tests: authenticatorGetInfo
//! and authenticatorSelection (which waits for a touch, so it can be
//! cancelled), and CTAP1_ERR_INVALID_COMMAND for everything else. It records
//! how each request ended, so tests can see that a host's CTAPHID_CANCEL
//! reached the handler's [`CancelFlag`](crate::ctap::CancelFlag).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ciborium::Value;
use touchgate_softkey::{TouchOutcome, TouchSource};

use crate::ctap::{CborHandler, OpContext, KEEPALIVE_UPNEEDED};

pub const AUTHENTICATOR_GET_INFO: u8 = 0x04;
pub const AUTHENTICATOR_SELECTION: u8 = 0x0B;
pub const CTAP2_OK: u8 = 0x00;
pub const CTAP1_ERR_INVALID_COMMAND: u8 = 0x01;
pub const CTAP2_ERR_OPERATION_DENIED: u8 = 0x27;
pub const CTAP2_ERR_KEEPALIVE_CANCEL: u8 = 0x2D;
/// The stand-in's AAGUID.
pub const STANDIN_AAGUID: [u8; 16] = *b"touchgate-stdin\x01";

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub command: u8,
    /// The status byte answered.
    pub status: u8,
    /// Whether the request's cancel flag was set when the handler returned.
    pub cancelled: bool,
}

pub struct StandInHandler {
    touch: Arc<dyn TouchSource>,
    handled: Mutex<Vec<Handled>>,
    changed: Condvar,
}

impl StandInHandler {
    pub fn new(touch: Arc<dyn TouchSource>) -> Self {
        StandInHandler {
            touch,
            handled: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        }
    }

    pub fn handled(&self) -> Vec<Handled> {
        self.handled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait until `n` requests have been handled; returns them, or `None` on timeout.
    pub fn wait_handled(&self, n: usize, timeout: Duration) -> Option<Vec<Handled>> {
        let deadline = Instant::now() + timeout;
        let mut handled = self.handled.lock().unwrap_or_else(|e| e.into_inner());
        while handled.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            handled = self
                .changed
                .wait_timeout(handled, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Some(handled.clone())
    }

    /// authenticatorGetInfo's answer (CBOR map, CTAP 2.1 §6.4).
    pub fn get_info() -> Vec<u8> {
        let text = |s: &str| Value::Text(s.into());
        let int = |i: u64| Value::Integer(i.into());
        let info = Value::Map(vec![
            (
                int(1),
                Value::Array(vec![text("FIDO_2_0"), text("FIDO_2_1")]),
            ),
            (int(2), Value::Array(vec![text("hmac-secret")])),
            (int(3), Value::Bytes(STANDIN_AAGUID.to_vec())),
            (
                int(4),
                Value::Map(vec![
                    (text("rk"), Value::Bool(false)),
                    (text("up"), Value::Bool(true)),
                    (text("plat"), Value::Bool(false)),
                ]),
            ),
            (int(5), int(1200)),
            (int(6), Value::Array(vec![int(2), int(1)])),
        ]);
        let mut out = vec![CTAP2_OK];
        ciborium::into_writer(&info, &mut out).expect("CBOR into a Vec");
        out
    }
}

impl CborHandler for StandInHandler {
    fn handle_cbor(&self, request: &[u8], ctx: &OpContext) -> Vec<u8> {
        let command = request[0];
        let response = match command {
            AUTHENTICATOR_GET_INFO => Self::get_info(),
            AUTHENTICATOR_SELECTION => {
                (ctx.keepalive)(KEEPALIVE_UPNEEDED);
                vec![match self.touch.wait("select this key", &ctx.cancel) {
                    TouchOutcome::Touched => CTAP2_OK,
                    TouchOutcome::Denied => CTAP2_ERR_OPERATION_DENIED,
                    TouchOutcome::Cancelled => CTAP2_ERR_KEEPALIVE_CANCEL,
                }]
            }
            _ => vec![CTAP1_ERR_INVALID_COMMAND],
        };
        self.handled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Handled {
                command,
                status: response[0],
                cancelled: ctx.cancel.is_cancelled(),
            });
        self.changed.notify_all();
        response
    }
}
