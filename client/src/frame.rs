//! Length-prefixed postcard frames: a 4-byte big-endian length, then that many
//! bytes of postcard. Frames over [`MAX_FRAME`] are refused before any byte of
//! the body is read.
//!
//! A kept connection (the agent's loop, a [`crate::Client`]) frames through a
//! [`FrameBuf`]: one buffer for the connection's life, so a frame costs no
//! allocation beyond what the decoded message owns (once the buffer has
//! grown to the connection's largest frame). Its invariant: every byte
//! a frame put in it is zeroed once that frame is done (or, if the frame was
//! abandoned half way, when the next one is done or the buffer is dropped).

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body accepted or sent: 64 KiB.
pub const MAX_FRAME: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte cap")]
    TooLarge(usize),
    #[error("peer closed the connection")]
    Closed,
    #[error("frame does not decode: {0}")]
    Decode(postcard::Error),
    #[error("i/o error on the agent socket: {0}")]
    Io(std::io::Error),
}

// Written out rather than `#[from]`: the message already carries the cause, and
// a `source()` would print it twice in an error chain.
impl From<postcard::Error> for FrameError {
    fn from(e: postcard::Error) -> Self {
        FrameError::Decode(e)
    }
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Write one message as a frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = zeroize::Zeroizing::new(postcard::to_stdvec(msg)?);
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(4 + body.len()));
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// One connection's frame buffer, reused by every frame and zeroed after each
/// (see the module header). It starts at [`FrameBuf::START`] bytes and grows to
/// the largest frame seen (at most a length and a [`MAX_FRAME`] body) by taking
/// a fresh zeroed buffer after zeroing the old, never by a `realloc` that could
/// leave a copy behind; a window hit's frames fit the start size.
pub struct FrameBuf {
    buf: Vec<u8>,
    /// How many leading bytes may be non-zero (a frame abandoned half way).
    dirty: usize,
}

impl Default for FrameBuf {
    fn default() -> Self {
        FrameBuf::new()
    }
}

impl std::fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameBuf")
    }
}

impl FrameBuf {
    /// The size a connection's buffer starts at.
    pub const START: usize = 1024;

    pub fn new() -> FrameBuf {
        FrameBuf {
            buf: vec![0u8; Self::START],
            dirty: 0,
        }
    }

    /// Take a zeroed buffer of at least `n` bytes (at most a full frame); the old is zeroed first.
    fn grow(&mut self, n: usize) {
        self.scrub();
        self.buf = vec![0u8; n.next_power_of_two().min(4 + MAX_FRAME)];
    }

    fn scrub(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf[..self.dirty]);
        self.dirty = 0;
    }

    /// Write one message as a frame (one `write_all`).
    pub async fn write<W, T>(&mut self, w: &mut W, msg: &T) -> Result<(), FrameError>
    where
        W: AsyncWrite + Unpin,
        T: Serialize,
    {
        let n = loop {
            let size = self.buf.len();
            self.dirty = size;
            match postcard::to_slice(msg, &mut self.buf[4..]) {
                Ok(body) => break body.len(),
                Err(postcard::Error::SerializeBufferFull) if size < 4 + MAX_FRAME => {
                    self.grow(size * 2);
                }
                Err(postcard::Error::SerializeBufferFull) => {
                    self.scrub();
                    // Over the cap: learn its size for the error (rare, and nothing is sent).
                    let body = zeroize::Zeroizing::new(postcard::to_stdvec(msg)?);
                    return Err(FrameError::TooLarge(body.len()));
                }
                Err(e) => {
                    self.scrub();
                    return Err(e.into());
                }
            }
        };
        self.dirty = 4 + n;
        self.buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
        w.write_all(&self.buf[..4 + n]).await?;
        w.flush().await?;
        self.scrub();
        Ok(())
    }

    /// Read one frame and decode it. A clean EOF before the length is `Closed`.
    pub async fn read<R, T>(&mut self, r: &mut R) -> Result<T, FrameError>
    where
        R: AsyncRead + Unpin,
        T: DeserializeOwned,
    {
        let len = read_len(r).await?;
        if len > self.buf.len() {
            self.grow(len);
        }
        self.dirty = self.dirty.max(len);
        r.read_exact(&mut self.buf[..len]).await?;
        let msg = postcard::from_bytes(&self.buf[..len]);
        self.scrub();
        Ok(msg?)
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        self.scrub();
    }
}

/// A frame's length, checked against the cap. A clean EOF before it is `Closed`.
async fn read_len<R: AsyncRead + Unpin>(r: &mut R) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Read one frame and decode it. A clean EOF before the length is `Closed`.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let len = read_len(r).await?;
    let mut body = zeroize::Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut body).await?;
    Ok(postcard::from_bytes(&body)?)
}

// Counts this thread's heap allocations, so a test can say what a frame round
// trip costs beyond the message it carries.
#[cfg(test)]
#[global_allocator]
static GLOBAL: crate::alloc_count::Counting = crate::alloc_count::Counting;
#[cfg(test)]
use crate::alloc_count as counting;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Hello, Request, Response, TokenReply};

    fn token_reply() -> Response {
        Response::Token(TokenReply {
            access_token: crate::Secret::new("ya29.".to_owned() + &"x".repeat(200)),
            expires_at: 1_700_000_000,
            profile: "default".into(),
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            from_cache: true,
        })
    }

    /// The hot path: a window hit's answer written and read on a kept
    /// connection allocates only what the decoded answer owns.
    #[tokio::test]
    async fn a_kept_connection_allocates_only_the_message() {
        let msg = token_reply();
        let bytes = postcard::to_stdvec(&msg).unwrap();
        let before = counting::allocs();
        let _decoded: Response = postcard::from_bytes(&bytes).unwrap();
        let owned = counting::allocs() - before;

        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let (mut wa, mut rb) = (FrameBuf::new(), FrameBuf::new());
        // The first frame on the pipe sizes the pipe's own buffer.
        wa.write(&mut a, &msg).await.unwrap();
        let _: Response = rb.read(&mut b).await.unwrap();
        let before = counting::allocs();
        wa.write(&mut a, &msg).await.unwrap();
        let got: Response = rb.read(&mut b).await.unwrap();
        let used = counting::allocs() - before;
        assert_eq!(got, msg);
        assert_eq!(
            used, owned,
            "a frame round trip made {used} allocations; the answer owns {owned}"
        );
    }

    #[tokio::test]
    async fn frames_round_trip_over_a_pipe() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &Hello::ours("t")).await.unwrap();
        write_frame(&mut a, &Request::Status).await.unwrap();
        let h: Hello = read_frame(&mut b).await.unwrap();
        assert_eq!(h, Hello::ours("t"));
        let r: Request = read_frame(&mut b).await.unwrap();
        assert_eq!(r, Request::Status);
        drop(a);
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_reading() {
        let (mut a, mut b) = tokio::io::duplex(16);
        a.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(FrameError::TooLarge(n)) if n == MAX_FRAME + 1
        ));
    }

    #[tokio::test]
    async fn garbage_body_is_a_decode_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(FrameError::Decode(_))
        ));
    }

    /// What a frame put in a kept buffer (a token, say) does not stay there.
    #[tokio::test]
    async fn a_kept_buffer_is_zeroed_after_each_frame() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let (mut wa, mut rb) = (FrameBuf::new(), FrameBuf::new());
        wa.write(&mut a, &token_reply()).await.unwrap();
        let _: Response = rb.read(&mut b).await.unwrap();
        assert!(wa.buf.iter().all(|&x| x == 0) && rb.buf.iter().all(|&x| x == 0));
        // Bigger than the start size: both grow, and are zeroed after.
        let import = Request::Import {
            name: "x".into(),
            credential_json: crate::Secret::new("k".repeat(20_000)),
            caller: Default::default(),
        };
        wa.write(&mut a, &import).await.unwrap();
        assert_eq!(rb.read::<_, Request>(&mut b).await.unwrap(), import);
        assert!(wa.buf.len() > FrameBuf::START && rb.buf.len() > FrameBuf::START);
        assert!(wa.buf.iter().all(|&x| x == 0) && rb.buf.iter().all(|&x| x == 0));
        // Over the cap: refused, nothing written, nothing left behind.
        let big = Request::Import {
            name: "x".into(),
            credential_json: crate::Secret::new("x".repeat(MAX_FRAME + 1)),
            caller: Default::default(),
        };
        assert!(matches!(
            wa.write(&mut a, &big).await,
            Err(FrameError::TooLarge(n)) if n > MAX_FRAME
        ));
        assert!(wa.buf.iter().all(|&x| x == 0));
        drop(a);
        assert!(matches!(
            rb.read::<_, Response>(&mut b).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn oversized_message_is_not_sent() {
        let (mut a, _b) = tokio::io::duplex(16);
        let big = Request::Import {
            name: "x".into(),
            credential_json: crate::Secret::new("x".repeat(MAX_FRAME + 1)),
            caller: Default::default(),
        };
        assert!(matches!(
            write_frame(&mut a, &big).await,
            Err(FrameError::TooLarge(_))
        ));
    }
}
