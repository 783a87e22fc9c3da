//! The body of the `frame` fuzz target, shared with the regression test
//! (`tests/frame_seeds.rs` of this package) so that both run exactly the same code.
//!
//! The input is a byte stream as read from the agent socket. It is read frame by
//! frame with the real `read_frame`, once for each type a peer reads: `Hello` and
//! `Request` (the agent), `HelloReply` and `Response` (the client). Every frame
//! that decodes is written again with `write_frame`, read back, and must equal
//! what was decoded.

use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::{de::DeserializeOwned, Serialize};
use touchgate::frame::{read_frame, write_frame, FrameError};
use touchgate::{Hello, HelloReply, Request, Response};

/// Every frame of one stream, decoded as one type, and how the stream ended.
#[derive(Debug)]
pub struct Frames<T> {
    /// One entry per complete frame: the value, or the decode error's message.
    pub frames: Vec<Result<T, String>>,
    /// The error that stopped reading (`Closed` at a clean end).
    pub end: FrameError,
}

/// The stream read as each type a peer reads.
#[derive(Debug)]
pub struct FrameRun {
    pub hellos: Frames<Hello>,
    pub requests: Frames<Request>,
    pub hello_replies: Frames<HelloReply>,
    pub responses: Frames<Response>,
}

pub fn run(data: &[u8]) -> FrameRun {
    FrameRun {
        hellos: frames(data),
        requests: frames(data),
        hello_replies: frames(data),
        responses: frames(data),
    }
}

fn frames<T>(data: &[u8]) -> Frames<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let mut stream = data;
    let mut frames = Vec::new();
    loop {
        // Every call consumes at least the 4-byte length, so this ends.
        match now(read_frame::<_, T>(&mut stream)) {
            Ok(v) => {
                round_trip(&v);
                frames.push(Ok(v));
            }
            Err(FrameError::Decode(e)) => frames.push(Err(e.to_string())),
            Err(end) => return Frames { frames, end },
        }
    }
}

/// decode(encode(v)) == v, through the real frame writer and reader.
fn round_trip<T>(v: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let mut buf: Vec<u8> = Vec::new();
    now(write_frame(&mut buf, v)).expect("a decoded message encodes again");
    let mut rest = buf.as_slice();
    let back: T = now(read_frame(&mut rest)).expect("an encoded message decodes");
    assert_eq!(&back, v, "round trip changed the message");
    assert!(
        rest.is_empty(),
        "the frame writer wrote more than one frame"
    );
}

/// Run a future that never waits: reading a byte slice and writing a `Vec` are
/// always ready, so one poll finishes it.
pub fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("frame i/o on memory buffers waited"),
    }
}
