//! Length-prefixed postcard frames: a 4-byte big-endian length, then that many
//! bytes of postcard. Frames over [`MAX_FRAME`] are refused before any byte of
//! the body is read.

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

/// Read one frame and decode it. A clean EOF before the length is `Closed`.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
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
    let mut body = zeroize::Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut body).await?;
    Ok(postcard::from_bytes(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Hello, Request};

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
