//! The Unix socket: bind safely, check the peer's uid at accept, admit our
//! own user's connections within the caps of [`crate::daemon::admission`], close idle
//! ones, speak the protocol, shut down cleanly.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use touchgate::frame::{read_frame, write_frame, FrameBuf, FrameError};
use touchgate::{ErrorCode, Hello, HelloReply, Request, Response, PROTOCOL_VERSION};

use touchgate::refusals::RefusalLog;

use crate::caller::Caller;
use crate::daemon::admission::Admission;
use crate::service::agent::Agent;
use crate::service::error::AgentError;

/// How long a client may take to say hello (at most the idle timeout).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// After the first refusal of a uid, one log line per this long.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another touchgate-agent is already serving {0}: use it (export TOUCHGATE_SOCK={0}), stop it, or set TOUCHGATE_SOCK to another path")]
    AlreadyRunning(PathBuf),
    #[error("socket directory {dir} is owned by uid {owner}, not by you (uid {me}): remove it or set TOUCHGATE_SOCK elsewhere")]
    ForeignDir { dir: PathBuf, owner: u32, me: u32 },
    #[error("socket directory {dir} has mode {mode:04o}, so other users could reach the socket: chmod 700 {dir}, or set TOUCHGATE_SOCK to a path in a private directory")]
    LooseDir { dir: PathBuf, mode: u32 },
    #[error("cannot prepare the agent socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A listening socket: one we bound (its file is removed when dropped), or one
/// systemd passed us (left alone: systemd owns it and keeps listening).
pub struct Listener {
    inner: UnixListener,
    path: PathBuf,
    remove_on_drop: bool,
}

impl Listener {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve a socket passed by socket activation (needs a tokio runtime).
    pub fn activated(passed: crate::daemon::activation::Passed) -> std::io::Result<Listener> {
        Ok(Listener {
            inner: UnixListener::from_std(passed.listener)?,
            path: passed.path,
            remove_on_drop: false,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind the socket at `path`: its directory 0700 and ours, the socket 0600, and
/// no second agent on the same path (a stale socket file is replaced). A
/// directory open to others is refused, not fixed: it may be a shared one
/// (`/tmp`), and clients refuse such a socket anyway.
pub async fn bind(path: &Path) -> Result<Listener, BindError> {
    let io = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = touchgate::agent_socket::socket_dir(path);
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let meta = std::fs::metadata(dir).map_err(io)?;
    let me = touchgate::paths::current_uid();
    if meta.uid() != me {
        return Err(BindError::ForeignDir {
            dir: dir.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(BindError::LooseDir {
            dir: dir.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::AlreadyRunning(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let inner = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(Listener {
        inner,
        path: path.to_owned(),
        remove_on_drop: true,
    })
}

/// Serve until `shutdown` resolves; then stop accepting, cancel any pending
/// touch, and remove the socket (unless systemd passed it).
///
/// Another user's connection is refused from its credentials at accept,
/// before it takes a connection slot; our own user's are admitted by
/// [`Admission`] (see there); a connection with no request in progress is
/// closed after `agent.idle_connection_timeout`.
pub async fn serve(
    agent: Arc<Agent>,
    listener: Listener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let settings = agent.config().agent.clone();
    let admission = Admission::new(settings.max_connections);
    let idle = settings.idle_connection_timeout;
    let refusals = RefusalLog::new(REFUSAL_LOG_EVERY);
    let watch = agent.spawn_watch();
    let me = touchgate::paths::current_uid();
    tracing::info!(socket = %listener.path.display(), max_connections = settings.max_connections, idle_connection_timeout = ?idle, "listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.inner.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let cred = match stream.peer_cred() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("cannot read the peer's credentials, closing: {e}");
                        continue;
                    }
                };
                if cred.uid() != me {
                    if let Some(n) = refusals.note(cred.uid()) {
                        tracing::warn!(peer_uid = cred.uid(), peer_pid = ?cred.pid(), refused_since_last_line = n, "refused a connection from another user");
                    }
                    let reply = AgentError::new(
                        ErrorCode::PeerRefused,
                        format!(
                            "this touchgate agent serves uid {me} only, and you are uid {}: start your own agent",
                            cred.uid()
                        ),
                    );
                    refuse_bounded(&admission, stream, reply);
                    continue;
                }
                match admission.admit(cred.pid()) {
                    Ok(ticket) => {
                        let caller = Caller::from_peer(cred.uid(), cred.pid());
                        let agent = agent.clone();
                        tokio::spawn(async move {
                            connection(agent, stream, caller, idle).await;
                            drop(ticket);
                        });
                    }
                    Err(why) => {
                        tracing::warn!(peer_pid = ?cred.pid(), "refused a connection: {why}");
                        refuse_bounded(&admission, stream, AgentError::new(ErrorCode::Busy, why));
                    }
                }
            }
        }
    }
    agent.key().cancel();
    watch.abort();
    tracing::info!(socket = %listener.path.display(), "shutting down");
    drop(listener);
}

/// Answer a refused connection if a refusal slot is free; else just close it.
fn refuse_bounded(admission: &Admission, stream: UnixStream, e: AgentError) {
    if let Some(slot) = admission.refusal_slot() {
        tokio::spawn(async move {
            refuse(stream, e).await;
            drop(slot);
        });
    }
}

/// Answer a connection's hello with an error and close. The client's hello is
/// read (briefly) first, so the refusal does not race the client's write.
async fn refuse(mut stream: UnixStream, e: AgentError) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = read_frame::<_, Hello>(&mut stream).await;
    })
    .await;
    refuse_now(stream, e).await;
}

async fn refuse_now(mut stream: UnixStream, e: AgentError) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        write_frame(&mut stream, &HelloReply::Error(e.into())),
    )
    .await;
}

/// One admitted connection of our own user. Waiting for a request (and for
/// the hello) is bounded by `idle`; handling one (e.g. waiting for a touch)
/// is not; a client that does not read its answers within `idle` is dropped.
///
/// What a request costs here beyond its own work is kept off the heap: the
/// connection's frames go through one [`FrameBuf`] and its touch prompts
/// through one channel, both made at hello.
async fn connection(agent: Arc<Agent>, mut stream: UnixStream, caller: Caller, idle: Duration) {
    let mut frames = FrameBuf::new();
    let hello: Result<Hello, FrameError> =
        match tokio::time::timeout(HELLO_TIMEOUT.min(idle), frames.read(&mut stream)).await {
            Ok(r) => r,
            Err(_) => return,
        };
    match hello {
        Ok(h) if h.protocol == PROTOCOL_VERSION => {}
        Ok(h) => {
            tracing::warn!(%caller, client_version = h.protocol, "refused a client of another protocol version");
            refuse_now(
                stream,
                AgentError::new(
                    ErrorCode::VersionMismatch,
                    format!(
                        "client speaks protocol version {} and this agent speaks {PROTOCOL_VERSION}: run a touchgate and touchgate-agent of the same release",
                        h.protocol
                    ),
                ),
            )
            .await;
            return;
        }
        Err(FrameError::Closed) => return,
        Err(e) => {
            tracing::warn!(%caller, "bad hello: {e}");
            refuse_now(stream, bad_frame(&e)).await;
            return;
        }
    }
    let reply = HelloReply::Hello(Hello::ours(concat!(
        "touchgate-agent ",
        env!("CARGO_PKG_VERSION")
    )));
    if send(&mut frames, &mut stream, &reply, idle).await.is_err() {
        return;
    }
    let (rd, mut wr) = stream.split();
    // Buffered, so a pending request can watch for the client hanging up
    // (`fill_buf` at EOF) without taking a byte of a next frame.
    let mut rd = BufReader::new(rd);
    // Each request gets a sender of this channel; the receiver is dropped when
    // the client hangs up: the request sees its `Progress` close, and a key
    // operation it waits on is cancelled on the key.
    let (mut tx, rx) = mpsc::unbounded_channel();
    let mut rx = Some(rx);
    loop {
        let req: Request = match tokio::time::timeout(idle, frames.read(&mut rd)).await {
            Err(_) => {
                tracing::debug!(%caller, "closing an idle connection (no request for {idle:?})");
                return;
            }
            Ok(Ok(r)) => r,
            Ok(Err(FrameError::Closed)) => return,
            Ok(Err(e)) => {
                tracing::warn!(%caller, "bad frame, closing the connection: {e}");
                let _ = send(
                    &mut frames,
                    &mut wr,
                    &Response::Error(bad_frame(&e).into()),
                    idle,
                )
                .await;
                return;
            }
        };
        // The channel is reused only when no sender of a past request is left
        // (the usual case), and emptied of what one sent unread: a prompt of a
        // past request is never shown as this one's.
        if tx.strong_count() > 1 {
            let (t, r) = mpsc::unbounded_channel();
            (tx, rx) = (t, Some(r));
        } else if let Some(rx) = rx.as_mut() {
            while rx.try_recv().is_ok() {}
        }
        let mut watching = true;
        // After a hang-up the request still runs to its end here, so the key
        // is free when it returns.
        let work = agent.handle(&caller, req, tx.clone());
        tokio::pin!(work);
        let resp = loop {
            tokio::select! {
                r = &mut work => break r,
                Some(prompt) = next_prompt(&mut rx) => {
                    if send(&mut frames, &mut wr, &Response::TouchNeeded { prompt }, idle).await.is_err() {
                        rx = None;
                    }
                }
                eof = hung_up(&mut rd), if watching => {
                    // Data instead (a client sending ahead) is left for the next read.
                    watching = false;
                    if eof {
                        tracing::info!(%caller, "the client hung up while its request was pending");
                        rx = None;
                    }
                }
            }
        };
        if rx.is_none() {
            return;
        }
        // An answer over the frame cap is not sent (nothing of it is written):
        // the client gets an error saying so instead of a silent hang-up.
        let mut sent = send(&mut frames, &mut wr, &resp, idle).await;
        if let Err(Some(n)) = sent {
            tracing::warn!(%caller, bytes = n, "an answer over the frame cap was replaced by an error");
            sent = send(
                &mut frames,
                &mut wr,
                &Response::Error(too_large(n).into()),
                idle,
            )
            .await;
        }
        if sent.is_err() {
            tracing::debug!(%caller, "client left before its answer");
            return;
        }
    }
}

/// Write one frame within `within`. `Err(Some(n))`: the frame of `n` bytes is over
/// the cap and nothing was written; `Err(None)`: the client is gone or does not read.
async fn send<W: tokio::io::AsyncWrite + Unpin, T: serde::Serialize>(
    frames: &mut FrameBuf,
    w: &mut W,
    msg: &T,
    within: Duration,
) -> Result<(), Option<usize>> {
    match tokio::time::timeout(within, frames.write(w, msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(FrameError::TooLarge(n))) => Err(Some(n)),
        _ => Err(None),
    }
}

fn too_large(bytes: usize) -> AgentError {
    AgentError::new(
        ErrorCode::Internal,
        format!(
            "the answer is {bytes} bytes, over the {}-byte frame cap, and was not sent; this is a bug, please report it",
            touchgate::frame::MAX_FRAME
        ),
    )
}

/// The next touch prompt of a pending request; never, once the client is gone.
async fn next_prompt(rx: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the client sends something while its request is pending:
/// true when that is the end of the stream (it hung up) or an error.
async fn hung_up<R: AsyncBufRead + Unpin>(rd: &mut R) -> bool {
    rd.fill_buf().await.map_or(true, |b| b.is_empty())
}

fn bad_frame(e: &FrameError) -> AgentError {
    AgentError::new(
        ErrorCode::BadFrame,
        format!("bad frame from client ({e}); the connection is closed"),
    )
}
