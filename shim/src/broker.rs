//! Asking the agent for tokens on behalf of HTTP callers, so that slow touches
//! survive client timeouts.
//!
//! google-auth gives a metadata token read 3 s, then hangs up and retries (5
//! tries with backoff); a touch takes longer. So an ask is not tied to the HTTP
//! request that started it:
//!
//! - each ask for a (process, profile, scopes or ID-token audience) runs as a
//!   *flight* on its own task; a request from the same process arriving
//!   meanwhile (its retry) joins it instead of asking again, and a request that
//!   hangs up leaves it running;
//! - a token whose flight ended while nobody was waiting (the touch came
//!   between two retries) is held for [`UNCLAIMED_HOLD`] for the next request
//!   from that process, once, then dropped;
//! - an error is remembered for [`ERROR_HOLD`] (a few seconds) for that
//!   process, so its immediate automatic retries do not ask for more touches;
//!   a person running the command again asks afresh. (Final errors such as a
//!   refused touch are answered so that google-auth and gcloud do not retry
//!   at all; see `metadata::agent_error`.)
//!
//! - at most [`AGENT_CONNECTIONS`] asks are at the agent at once (each is a
//!   connection, and the agent serves one process only half of its
//!   `max_connections`); the others queue, in order, for a free connection.
//!   Asks for the same profile and scopes that reach the agent together share
//!   one touch there; during a pending touch the queue waits behind it, and
//!   inside an approval window it then drains from the agent's cache. With
//!   `every-token`, a queued ask that reaches the agent after the touch asks
//!   for its own touch: every token minted is touched for.
//!
//! Flights are per process on purpose: the agent applies its policy (allowed
//! callers, per-caller touch rules) to the program the shim names, so two
//! programs must never share a shim-side flight. Across processes the agent's
//! own single-flight joins concurrent asks and caches tokens inside approval
//! windows; this layer only bridges HTTP timeouts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use touchgate::sync::MutexExt;
use touchgate::{CallerHint, Client, ProfileInfo, Secret};

pub const UNCLAIMED_HOLD: Duration = Duration::from_secs(60);
pub const ERROR_HOLD: Duration = Duration::from_secs(5);
pub const PROFILES_TTL: Duration = Duration::from_secs(30);
/// Connections to the agent open at once (its default `max_connections` is 64,
/// and one process may hold half).
pub const AGENT_CONNECTIONS: usize = 16;

/// A token as the shim hands it out.
#[derive(Clone)]
pub struct Token {
    pub access_token: Secret,
    /// Unix seconds.
    pub expires_at: u64,
}

impl Token {
    /// Seconds of life left, now.
    pub fn expires_in(&self) -> u64 {
        self.expires_at.saturating_sub(unix_now())
    }
}

/// An agent error (or failure to reach it), as one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AskError {
    pub code: Option<touchgate::ErrorCode>,
    pub message: String,
}

type Outcome = Result<Token, AskError>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlightKey {
    /// The calling process (`None`: it could not be told, e.g. no `/proc`).
    pid: Option<u32>,
    profile: Option<String>,
    scopes: Vec<String>,
    /// An ID token for this audience (and no scopes), not an access token.
    audience: Option<String>,
}

impl FlightKey {
    fn new(pid: Option<u32>, profile: Option<&str>, scopes: &[String]) -> Self {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        FlightKey {
            pid,
            profile: profile.map(str::to_owned),
            scopes,
            audience: None,
        }
    }

    fn id_token(pid: Option<u32>, profile: Option<&str>, audience: &str) -> Self {
        FlightKey {
            audience: Some(audience.to_owned()),
            ..FlightKey::new(pid, profile, &[])
        }
    }
}

struct Held {
    outcome: Outcome,
    until: Instant,
}

#[derive(Default)]
struct State {
    pending: HashMap<FlightKey, watch::Sender<Option<Outcome>>>,
    held: HashMap<FlightKey, Held>,
}

/// The shim's way to the agent.
pub struct Broker {
    socket: Option<PathBuf>,
    state: Mutex<State>,
    profiles: Mutex<Option<(Instant, Vec<ProfileInfo>)>>,
    /// One permit per connection to the agent; waiting for one is the queue.
    connections: Arc<Semaphore>,
}

/// A connection to the agent, holding its place among [`AGENT_CONNECTIONS`].
struct AgentConn {
    client: Client,
    _slot: OwnedSemaphorePermit,
}

impl Broker {
    /// `socket: None` → `$TOUCHGATE_SOCK`, then the default path.
    pub fn new(socket: Option<PathBuf>) -> Arc<Broker> {
        Arc::new(Broker {
            socket,
            state: Mutex::new(State::default()),
            profiles: Mutex::new(None),
            connections: Arc::new(Semaphore::new(AGENT_CONNECTIONS)),
        })
    }

    /// A connection to the agent, once one of ours is free (fair: first come, first served).
    async fn connect(&self) -> Result<AgentConn, AskError> {
        let slot = self
            .connections
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AskError {
                code: None,
                message: "touchgate-shim: shutting down".into(),
            })?;
        let r = match &self.socket {
            Some(p) => Client::connect(p).await,
            None => Client::connect_default().await,
        };
        Ok(AgentConn {
            client: r.map_err(ask_error)?,
            _slot: slot,
        })
    }

    /// The agent's profile `name` (its default profile for `None`). The list is
    /// cached for [`PROFILES_TTL`], so a reloaded agent config shows soon.
    pub async fn profile(&self, name: Option<&str>) -> Result<ProfileInfo, AskError> {
        let cached = self
            .profiles
            .locked()
            .clone()
            .filter(|(at, _)| at.elapsed() < PROFILES_TTL);
        let all = match cached {
            Some((_, p)) => p,
            None => {
                let p = self
                    .connect()
                    .await?
                    .client
                    .list_profiles()
                    .await
                    .map_err(ask_error)?;
                *self.profiles.locked() = Some((Instant::now(), p.clone()));
                p
            }
        };
        let found = all.iter().find(|p| match name {
            Some(n) => p.name == n,
            None => p.is_default,
        });
        found.cloned().ok_or_else(|| AskError {
            code: Some(touchgate::ErrorCode::UnknownProfile),
            message: match name {
                Some(n) => format!("the agent has no profile \"{n}\" (it has: {})", names(&all)),
                None => format!(
                    "the agent has no default profile: start the shim with --profile (one of: {})",
                    names(&all)
                ),
            },
        })
    }

    /// A token for `profile` and `scopes` (empty: the profile's), for the
    /// caller described by `hint`. Joins a flight in progress; see the module docs.
    pub async fn token(
        self: &Arc<Self>,
        profile: Option<&str>,
        scopes: &[String],
        hint: CallerHint,
    ) -> Outcome {
        let key = FlightKey::new(hint.pid, profile, scopes);
        self.join_or_fly(key, hint).await
    }

    /// An ID token for `audience` from `profile` (in [`Token::access_token`]),
    /// for the caller `hint` describes: the same flights as [`Broker::token`].
    pub async fn id_token(
        self: &Arc<Self>,
        profile: Option<&str>,
        audience: &str,
        hint: CallerHint,
    ) -> Outcome {
        let key = FlightKey::id_token(hint.pid, profile, audience);
        self.join_or_fly(key, hint).await
    }

    async fn join_or_fly(self: &Arc<Self>, key: FlightKey, hint: CallerHint) -> Outcome {
        let mut rx = {
            let mut st = self.state.locked();
            let now = Instant::now();
            st.held.retain(|_, h| h.until > now);
            if let Some(h) = st.held.get(&key) {
                let out = h.outcome.clone();
                if out.is_ok() {
                    // An unclaimed token goes to one request only.
                    st.held.remove(&key);
                }
                if out.as_ref().map_or(true, |t| t.expires_in() > 0) {
                    return out;
                }
            }
            match st.pending.get(&key) {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    st.pending.insert(key.clone(), tx);
                    let this = self.clone();
                    tokio::spawn(this.fly(key, hint));
                    rx
                }
            }
        };
        loop {
            if let Some(out) = rx.borrow_and_update().clone() {
                return out;
            }
            if rx.changed().await.is_err() {
                return Err(AskError {
                    code: None,
                    message: "touchgate-shim: the request to the agent stopped unexpectedly".into(),
                });
            }
        }
    }

    /// One ask to the agent; hands the outcome to every waiter, holds it when nobody waits.
    async fn fly(self: Arc<Self>, key: FlightKey, hint: CallerHint) {
        let out = self.ask(&key, hint).await;
        let mut st = self.state.locked();
        let Some(tx) = st.pending.remove(&key) else {
            return;
        };
        tx.send_replace(Some(out.clone()));
        let unclaimed = tx.receiver_count() == 0;
        let hold = match &out {
            Ok(_) if unclaimed => Some(UNCLAIMED_HOLD),
            Ok(_) => None,
            Err(_) => Some(ERROR_HOLD),
        };
        if let Some(d) = hold {
            st.held.insert(
                key,
                Held {
                    outcome: out,
                    until: Instant::now() + d,
                },
            );
        }
    }

    async fn ask(&self, key: &FlightKey, hint: CallerHint) -> Outcome {
        let mut c = self.connect().await?;
        c.client
            .on_touch_needed(|p| eprintln!("touchgate-shim: {p}"));
        if let Some(audience) = &key.audience {
            let t = c
                .client
                .get_id_token(key.profile.as_deref(), audience, hint)
                .await
                .map_err(ask_error)?;
            return Ok(Token {
                access_token: t.id_token,
                expires_at: t.expires_at,
            });
        }
        let t = c
            .client
            .get_token(key.profile.as_deref(), &key.scopes, hint)
            .await
            .map_err(ask_error)?;
        Ok(Token {
            access_token: t.access_token,
            expires_at: t.expires_at,
        })
    }
}

/// The scopes to ask the agent for: the profile's scopes play the part of a
/// GCE instance's access scopes. A client's own list narrows them (gcloud asks
/// for seven scopes, google-auth for one); a list with nothing in common with
/// the profile's gets the profile's. The agent enforces the ceiling (it refuses
/// any scope outside the profile's); this only turns what metadata and STS
/// clients ask for into a request the agent will grant, as GCE would, and lets
/// every client share one approval window per profile.
pub fn effective_scopes(requested: &[String], profile: &[String]) -> Vec<String> {
    let common: Vec<String> = profile
        .iter()
        .filter(|s| requested.contains(s))
        .cloned()
        .collect();
    if common.is_empty() {
        profile.to_vec()
    } else {
        common
    }
}

fn names(all: &[ProfileInfo]) -> String {
    all.iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn ask_error(e: touchgate::ClientError) -> AskError {
    AskError {
        code: e.code(),
        message: e.to_string().lines().collect::<Vec<_>>().join("; "),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::UnixListener;
    use touchgate::frame::{read_frame, write_frame};
    use touchgate::{Hello, HelloReply, Request, Response, TokenReply};

    /// A fake agent: answers every GetToken once `release` is notified, counting asks.
    struct FakeAgent {
        path: PathBuf,
        asks: Arc<AtomicUsize>,
        release: Arc<tokio::sync::Semaphore>,
    }

    fn fake_agent() -> FakeAgent {
        static N: AtomicUsize = AtomicUsize::new(0);
        // A private directory: the client refuses a socket others could reach.
        let dir = std::env::temp_dir().join(format!(
            "tg-shim-broker-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .unwrap();
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let asks = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (a, r) = (asks.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let (a, r) = (a.clone(), r.clone());
                tokio::spawn(async move {
                    let _: Hello = read_frame(&mut s).await.unwrap();
                    write_frame(&mut s, &HelloReply::Hello(Hello::ours("fake")))
                        .await
                        .unwrap();
                    while let Ok(req) = read_frame::<_, Request>(&mut s).await {
                        let reply = match req {
                            Request::GetToken { scopes, .. } => {
                                let n = a.fetch_add(1, Ordering::SeqCst) + 1;
                                r.acquire().await.unwrap().forget();
                                Response::Token(TokenReply {
                                    access_token: Secret::new(format!("ya29.fake-{n}")),
                                    expires_at: unix_now() + 900,
                                    profile: "p".into(),
                                    scopes,
                                    from_cache: false,
                                })
                            }
                            Request::GetIdToken { audience, .. } => {
                                let n = a.fetch_add(1, Ordering::SeqCst) + 1;
                                r.acquire().await.unwrap().forget();
                                Response::IdToken(touchgate::IdTokenReply {
                                    id_token: Secret::new(format!("eyJ.fake-{n}")),
                                    expires_at: unix_now() + 3600,
                                    profile: "p".into(),
                                    audience,
                                    from_cache: false,
                                })
                            }
                            _ => continue,
                        };
                        let _ = write_frame(&mut s, &reply).await;
                    }
                });
            }
        });
        FakeAgent {
            path,
            asks,
            release,
        }
    }

    fn hint(pid: u32) -> CallerHint {
        CallerHint {
            program: Some("python3".into()),
            pid: Some(pid),
            ..Default::default()
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_joins_the_pending_ask_and_an_unclaimed_token_waits_for_it() {
        let agent = fake_agent();
        let broker = Broker::new(Some(agent.path.clone()));
        let scopes = vec!["s".to_string()];

        // Try 1 hangs up (its future is dropped) while the agent waits for a touch.
        let b = broker.clone();
        let s = scopes.clone();
        let first = tokio::spawn(async move { b.token(Some("p"), &s, hint(42)).await });
        while agent.asks.load(Ordering::SeqCst) == 0 {
            settle().await;
        }
        first.abort();
        // Try 2 joins the same ask: still one ask at the agent.
        let b = broker.clone();
        let s = scopes.clone();
        let second = tokio::spawn(async move { b.token(Some("p"), &s, hint(42)).await });
        settle().await;
        assert_eq!(agent.asks.load(Ordering::SeqCst), 1);
        agent.release.add_permits(1);
        let t = second.await.unwrap().unwrap();
        assert_eq!(t.access_token.expose(), "ya29.fake-1");

        // The touch lands between two tries: nobody waits, the token is held
        // for that process (and only for it), once.
        let b = broker.clone();
        let s = scopes.clone();
        let third = tokio::spawn(async move { b.token(Some("p"), &s, hint(43)).await });
        while agent.asks.load(Ordering::SeqCst) < 2 {
            settle().await;
        }
        third.abort();
        let _ = third.await;
        agent.release.add_permits(1);
        while broker.state.lock().unwrap().held.is_empty() {
            settle().await;
        }
        let held = broker.token(Some("p"), &scopes, hint(43)).await.unwrap();
        assert_eq!(held.access_token.expose(), "ya29.fake-2");
        assert_eq!(
            agent.asks.load(Ordering::SeqCst),
            2,
            "no new ask for the retry"
        );
        // Another process neither gets it nor joins a flight: it asks the agent
        // itself (whose policy judges each program).
        let b = broker.clone();
        let s = scopes.clone();
        let other = tokio::spawn(async move { b.token(Some("p"), &s, hint(44)).await });
        while agent.asks.load(Ordering::SeqCst) < 3 {
            settle().await;
        }
        agent.release.add_permits(1);
        assert_eq!(
            other.await.unwrap().unwrap().access_token.expose(),
            "ya29.fake-3"
        );
        let _ = std::fs::remove_file(&agent.path);
    }

    #[tokio::test]
    async fn an_id_token_retry_joins_its_own_flight_apart_from_access_tokens() {
        let agent = fake_agent();
        let broker = Broker::new(Some(agent.path.clone()));
        let aud = "https://svc.example";
        // Try 1 hangs up while the agent waits for a touch; try 2 joins it.
        let b = broker.clone();
        let first = tokio::spawn(async move { b.id_token(Some("p"), aud, hint(42)).await });
        while agent.asks.load(Ordering::SeqCst) == 0 {
            settle().await;
        }
        first.abort();
        let b = broker.clone();
        let second = tokio::spawn(async move { b.id_token(Some("p"), aud, hint(42)).await });
        settle().await;
        assert_eq!(agent.asks.load(Ordering::SeqCst), 1);
        // An access token for the same process is another flight.
        let b = broker.clone();
        let access = tokio::spawn(async move { b.token(Some("p"), &[], hint(42)).await });
        while agent.asks.load(Ordering::SeqCst) < 2 {
            settle().await;
        }
        agent.release.add_permits(2);
        let id = second.await.unwrap().unwrap();
        let at = access.await.unwrap().unwrap();
        assert!(id.access_token.expose().starts_with("eyJ.fake-"));
        assert!(at.access_token.expose().starts_with("ya29.fake-"));
        let _ = std::fs::remove_file(&agent.path);
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn client_scopes_narrow_the_profile_scopes() {
        let profile = v(&["cloud-platform", "userinfo.email"]);
        assert_eq!(
            effective_scopes(
                &v(&["openid", "userinfo.email", "appengine.admin"]),
                &profile
            ),
            v(&["userinfo.email"])
        );
        assert_eq!(effective_scopes(&[], &profile), profile);
        assert_eq!(effective_scopes(&v(&["compute"]), &profile), profile);
    }
}
