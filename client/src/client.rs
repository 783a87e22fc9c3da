//! The client library: connect to the agent, say hello, ask.

use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use crate::frame::{FrameBuf, FrameError};
use crate::protocol::{
    CallerHint, ErrorCode, ErrorReply, Hello, IdTokenReply, ProfileInfo, Request, Response,
    StatusReply, TokenReply, PROTOCOL_VERSION,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no touchgate agent is listening at {path}: start one with `eval \"$(touchgate-agent)\"` (or set TOUCHGATE_SOCK to its socket)")]
    NotRunning { path: PathBuf },
    #[error("cannot open the agent socket {path}: {source}; check its owner and permissions")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing the agent socket {path}: its directory {dir} is owned by uid {owner}, not by you (uid {me}), so another user may be listening there: set TOUCHGATE_SOCK to your own agent's socket")]
    ForeignDir {
        path: PathBuf,
        dir: PathBuf,
        owner: u32,
        me: u32,
    },
    #[error("refusing the agent socket {path}: its directory {dir} has mode {mode:04o}, so other users can reach it: chmod 700 {dir}")]
    LooseDir {
        path: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error("refusing the agent socket {path}: it is served by uid {owner}, not by you (uid {me}): set TOUCHGATE_SOCK to your own agent's socket")]
    ForeignPeer { path: PathBuf, owner: u32, me: u32 },
    #[error("the agent speaks protocol version {agent} and this client speaks {client}: run a touchgate and touchgate-agent of the same release")]
    VersionMismatch { agent: u32, client: u32 },
    #[error("{0}")]
    Agent(ErrorReply),
    #[error("the agent closed the connection unexpectedly: {0}")]
    Frame(FrameError),
    #[error("this request is {0} bytes, over the {max}-byte cap of the agent protocol, and was not sent: pass a shorter name, fewer scopes or a smaller credential file", max = crate::frame::MAX_FRAME)]
    RequestTooLarge(usize),
    #[error("the agent answered with {got} to a {asked} request; this is a bug, please report it")]
    Unexpected {
        asked: &'static str,
        got: &'static str,
    },
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Frame(e)
    }
}

impl ClientError {
    /// The agent's stable error code, when the agent said no.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Agent(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Called with the agent's prompt while a request waits for a touch.
type TouchCallback = Box<dyn Fn(&str) + Send + Sync>;

/// One connection to the agent. Requests are answered in order.
pub struct Client {
    stream: UnixStream,
    /// The connection's frame buffer: a request costs no allocation beyond its answer.
    frames: FrameBuf,
    /// The agent's software, from its answer to the hello (empty while
    /// that answer is pending: see [`Client::connect_pipelined`]).
    pub agent_software: String,
    /// The hello is sent and its answer not read yet.
    hello_pending: bool,
    on_touch: Option<TouchCallback>,
}

impl Client {
    /// Connect to the socket found by [`crate::paths::socket_path`].
    pub async fn connect_default() -> Result<Client, ClientError> {
        Client::connect(&crate::paths::socket_path()).await
    }

    /// [`Client::connect_pipelined`] to the socket found by [`crate::paths::socket_path`].
    pub async fn connect_default_pipelined() -> Result<Client, ClientError> {
        Client::connect_pipelined(&crate::paths::socket_path()).await
    }

    /// Connect and say hello. Before a byte is sent the socket's directory must
    /// be ours and 0700, and its listener ours ([`crate::agent_socket`]).
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let mut c = Client::connect_pipelined(path).await?;
        c.hello_answered().await?;
        Ok(c)
    }

    /// [`Client::connect`], except that the agent's answer to the hello is
    /// read with the first request's: a command that asks one thing (e.g.
    /// `touchgate token`, the docker helper) waits for the agent once, not
    /// twice. The same checks run before a byte is sent, and the same errors
    /// come back (a refused hello from the first request), but
    /// `agent_software` is empty until then.
    pub async fn connect_pipelined(path: &Path) -> Result<Client, ClientError> {
        crate::agent_socket::check_dir(path)?;
        let mut stream = match UnixStream::connect(path).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ClientError::NotRunning {
                    path: path.to_owned(),
                })
            }
            Err(source) => {
                return Err(ClientError::Connect {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        crate::agent_socket::check_peer(&stream, path)?;
        let mut frames = FrameBuf::new();
        frames
            .write(
                &mut stream,
                &Hello::ours(concat!("touchgate ", env!("CARGO_PKG_VERSION"))),
            )
            .await?;
        Ok(Client {
            stream,
            frames,
            agent_software: String::new(),
            hello_pending: true,
            on_touch: None,
        })
    }

    /// Read the agent's answer to the hello, if not read yet: its own hello,
    /// or an error (wrong version, refused peer).
    async fn hello_answered(&mut self) -> Result<(), ClientError> {
        if !self.hello_pending {
            return Ok(());
        }
        self.hello_pending = false;
        let reply: HelloReply = self.frames.read(&mut self.stream).await?;
        match reply {
            HelloReply::Hello(h) if h.protocol == PROTOCOL_VERSION => {
                self.agent_software = h.software;
                Ok(())
            }
            HelloReply::Hello(h) => Err(ClientError::VersionMismatch {
                agent: h.protocol,
                client: PROTOCOL_VERSION,
            }),
            HelloReply::Error(e) => Err(ClientError::Agent(e)),
        }
    }

    /// Call `f` with the agent's prompt whenever a request waits for a touch.
    pub fn on_touch_needed(&mut self, f: impl Fn(&str) + Send + Sync + 'static) {
        self.on_touch = Some(Box::new(f));
    }

    /// Send one request and wait for its response. An agent error becomes `Err(Agent)`.
    pub async fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let sent = self.frames.write(&mut self.stream, req).await;
        if let Err(FrameError::TooLarge(n)) = sent {
            // Nothing was sent.
            return Err(ClientError::RequestTooLarge(n));
        }
        // A hello the agent refused explains a request it did not take.
        self.hello_answered().await?;
        sent?;
        loop {
            match self.frames.read(&mut self.stream).await? {
                Response::TouchNeeded { prompt } => {
                    if let Some(f) = &self.on_touch {
                        f(&prompt);
                    }
                }
                Response::Error(e) => return Err(ClientError::Agent(e)),
                r => return Ok(r),
            }
        }
    }

    pub async fn get_token(
        &mut self,
        profile: Option<&str>,
        scopes: &[String],
        caller: CallerHint,
    ) -> Result<TokenReply, ClientError> {
        let req = Request::GetToken {
            profile: profile.map(str::to_owned),
            scopes: scopes.to_vec(),
            caller,
        };
        match self.request(&req).await? {
            Response::Token(t) => Ok(t),
            other => Err(unexpected("GetToken", &other)),
        }
    }

    /// An ID token for `audience` (see [`Request::GetIdToken`]).
    pub async fn get_id_token(
        &mut self,
        profile: Option<&str>,
        audience: &str,
        caller: CallerHint,
    ) -> Result<IdTokenReply, ClientError> {
        let req = Request::GetIdToken {
            profile: profile.map(str::to_owned),
            audience: audience.to_owned(),
            caller,
        };
        match self.request(&req).await? {
            Response::IdToken(t) => Ok(t),
            other => Err(unexpected("GetIdToken", &other)),
        }
    }

    /// [`Client::get_token`] for the kubectl exec plugin, naming the cluster
    /// kubectl sends the token to (see [`Request::GetKubectlToken`]).
    pub async fn get_kubectl_token(
        &mut self,
        profile: Option<&str>,
        cluster: Option<crate::kube::KubeCluster>,
        caller: CallerHint,
    ) -> Result<TokenReply, ClientError> {
        let req = Request::GetKubectlToken {
            profile: profile.map(str::to_owned),
            cluster,
            caller,
        };
        match self.request(&req).await? {
            Response::Token(t) => Ok(t),
            other => Err(unexpected("GetKubectlToken", &other)),
        }
    }

    pub async fn status(&mut self) -> Result<StatusReply, ClientError> {
        match self.request(&Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected("Status", &other)),
        }
    }

    pub async fn lock(&mut self) -> Result<u32, ClientError> {
        match self.request(&Request::Lock).await? {
            Response::Locked { dropped_tokens } => Ok(dropped_tokens),
            other => Err(unexpected("Lock", &other)),
        }
    }

    /// Make the agent re-read its config file; returns the profiles now in force.
    pub async fn reload(&mut self) -> Result<Vec<String>, ClientError> {
        match self.request(&Request::Reload).await? {
            Response::Reloaded { profiles } => Ok(profiles),
            other => Err(unexpected("Reload", &other)),
        }
    }

    pub async fn enroll(
        &mut self,
        force: bool,
        uv: bool,
        caller: CallerHint,
    ) -> Result<crate::EnrolledReply, ClientError> {
        match self.request(&Request::Enroll { force, uv, caller }).await? {
            Response::Enrolled(e) => Ok(e),
            other => Err(unexpected("Enroll", &other)),
        }
    }

    /// Seal `credential_json` under the enrolled key as `name`; returns its kind.
    pub async fn import(
        &mut self,
        name: &str,
        credential_json: crate::Secret,
        caller: CallerHint,
    ) -> Result<String, ClientError> {
        let req = Request::Import {
            name: name.to_owned(),
            credential_json,
            caller,
        };
        match self.request(&req).await? {
            Response::Imported { kind, .. } => Ok(kind),
            other => Err(unexpected("Import", &other)),
        }
    }

    pub async fn list_keys(&mut self) -> Result<Vec<crate::KeyInfo>, ClientError> {
        match self.request(&Request::ListKeys).await? {
            Response::Keys(k) => Ok(k),
            other => Err(unexpected("ListKeys", &other)),
        }
    }

    pub async fn add_key(
        &mut self,
        caller: CallerHint,
    ) -> Result<crate::EnrolledReply, ClientError> {
        match self.request(&Request::AddKey { caller }).await? {
            Response::Enrolled(e) => Ok(e),
            other => Err(unexpected("AddKey", &other)),
        }
    }

    /// Forget an enrolled key (the agent asks for a touch on an enrolled key).
    pub async fn remove_key(
        &mut self,
        credential: &str,
        caller: CallerHint,
    ) -> Result<String, ClientError> {
        let req = Request::RemoveKey {
            credential: credential.to_owned(),
            caller,
        };
        match self.request(&req).await? {
            Response::KeyRemoved { credential } => Ok(credential),
            other => Err(unexpected("RemoveKey", &other)),
        }
    }

    /// Trust a suspect key again (the agent asks for a touch on a trusted key).
    pub async fn trust_key(
        &mut self,
        credential: &str,
        caller: CallerHint,
    ) -> Result<String, ClientError> {
        let req = Request::TrustKey {
            credential: credential.to_owned(),
            caller,
        };
        match self.request(&req).await? {
            Response::KeyTrusted { credential } => Ok(credential),
            other => Err(unexpected("TrustKey", &other)),
        }
    }

    /// Unlock a locked agent (the agent asks for a touch).
    pub async fn unlock(&mut self, caller: CallerHint) -> Result<(), ClientError> {
        match self.request(&Request::Unlock { caller }).await? {
            Response::Unlocked => Ok(()),
            other => Err(unexpected("Unlock", &other)),
        }
    }

    pub async fn list_profiles(&mut self) -> Result<Vec<ProfileInfo>, ClientError> {
        match self.request(&Request::ListProfiles).await? {
            Response::Profiles(p) => Ok(p),
            other => Err(unexpected("ListProfiles", &other)),
        }
    }
}

/// What the agent sends first: its hello, or an error instead (refused peer, wrong version).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum HelloReply {
    Hello(Hello),
    Error(ErrorReply),
}

pub(crate) fn unexpected(asked: &'static str, got: &Response) -> ClientError {
    ClientError::Unexpected {
        asked,
        got: response_name(got),
    }
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Token(_) => "Token",
        Response::Status(_) => "Status",
        Response::Locked { .. } => "Locked",
        Response::Profiles(_) => "Profiles",
        Response::Enrolled(_) => "Enrolled",
        Response::Imported { .. } => "Imported",
        Response::Error(_) => "Error",
        Response::TouchNeeded { .. } => "TouchNeeded",
        Response::Keys(_) => "Keys",
        Response::KeyRemoved { .. } => "KeyRemoved",
        Response::KeyTrusted { .. } => "KeyTrusted",
        Response::Unlocked => "Unlocked",
        Response::Reloaded { .. } => "Reloaded",
        Response::IdToken(_) => "IdToken",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_replies_round_trip() {
        for r in [
            HelloReply::Hello(Hello::ours("touchgate-agent 0.1.0")),
            HelloReply::Error(ErrorReply::new(ErrorCode::PeerRefused, "no")),
        ] {
            let b = postcard::to_stdvec(&r).unwrap();
            assert_eq!(postcard::from_bytes::<HelloReply>(&b).unwrap(), r);
        }
    }

    #[tokio::test]
    async fn a_missing_socket_says_how_to_start_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(&dir.path().join("none.sock"))
            .await
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(matches!(err, ClientError::NotRunning { .. }));
        assert!(msg.contains("eval \"$(touchgate-agent)\""), "{msg}");
        assert!(!msg.contains('\n'));
    }
}
