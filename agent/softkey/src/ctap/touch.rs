//! Waiting for a touch the way a key does: KEEPALIVE UPNEEDED every 100 ms,
//! CTAPHID_CANCEL honoured, and a time limit.

use std::thread;
use std::time::{Duration, Instant};

use super::status::{CtapResult, Status};
use crate::ctap::{OpContext, KEEPALIVE_UPNEEDED};
use crate::touch::{CancelFlag, TouchOutcome, TouchSource};

/// How often KEEPALIVE UPNEEDED is sent while waiting.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(100);
/// How often the watcher looks whether the touch came (cancel wakes it at once).
const POLL: Duration = Duration::from_millis(10);

/// Ask `source` for a touch. Touched → Ok; refused → CTAP2_ERR_OPERATION_DENIED;
/// `ctx.cancel` set (before or during the wait) → CTAP2_ERR_KEEPALIVE_CANCEL;
/// no answer within `timeout` → CTAP2_ERR_USER_ACTION_TIMEOUT.
///
/// The touch source waits on this thread with its own cancel flag; a scoped
/// watcher thread sends the keep-alives through `ctx.keepalive` and sets
/// that flag on `ctx.cancel` or at the time limit (so a timeout never shows
/// in `ctx.cancel`, which belongs to the transport).
pub(super) fn wait_for_touch(
    source: &dyn TouchSource,
    prompt: &str,
    ctx: &OpContext,
    timeout: Duration,
) -> CtapResult<()> {
    if ctx.cancel.is_cancelled() {
        return Err(Status::KEEPALIVE_CANCEL);
    }
    let (op, done) = (CancelFlag::new(), CancelFlag::new());
    let (outcome, stopped_by) = thread::scope(|s| {
        let watcher = s.spawn(|| watch(ctx, &op, &done, timeout));
        let outcome = source.wait(prompt, &op);
        done.cancel();
        (outcome, watcher.join().unwrap_or(None))
    });
    match outcome {
        TouchOutcome::Touched => Ok(()),
        TouchOutcome::Denied => Err(Status::OPERATION_DENIED),
        TouchOutcome::Cancelled => Err(stopped_by.unwrap_or(Status::KEEPALIVE_CANCEL)),
    }
}

/// Send keep-alives until `done`; cancel `op` on `ctx.cancel` or timeout and
/// say which.
fn watch(ctx: &OpContext, op: &CancelFlag, done: &CancelFlag, timeout: Duration) -> Option<Status> {
    let start = Instant::now();
    let mut next_keepalive = start;
    while !done.is_cancelled() {
        if ctx.cancel.is_cancelled() {
            op.cancel();
            return Some(Status::KEEPALIVE_CANCEL);
        }
        if start.elapsed() >= timeout {
            op.cancel();
            return Some(Status::USER_ACTION_TIMEOUT);
        }
        if Instant::now() >= next_keepalive {
            (ctx.keepalive)(KEEPALIVE_UPNEEDED);
            next_keepalive += KEEPALIVE_INTERVAL;
        }
        ctx.cancel.wait_timeout(POLL);
    }
    None
}
