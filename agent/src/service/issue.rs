//! Issuing a token: cache, single-flight, touch, unseal, mint. An ID token
//! ([`Agent::get_id_token`]) takes the same path, under the same policy and
//! window as the profile's access tokens, keyed by its audience instead of
//! scopes, and names the audience in the prompt and the audit record.
//!
//! Concurrent asks for the same (profile, scopes) share one [`Flight`]: one
//! touch and one upstream mint, whose result every waiter gets — also for
//! `every-token` profiles, where "every token" means every token minted.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use touchgate::kube::KubeCluster;
use touchgate::sync::MutexExt;
use touchgate::{ErrorCode, IdTokenReply, Secret, TokenReply};

use crate::audit::{Approved, Record, TouchEvidence};
use crate::caller::{Asking, Caller};
use crate::clock::unix;
use crate::config::UserVerification;
use crate::config::{format_duration, Config, Profile, TouchRule};
use crate::notify::{Kind, Notification};
use crate::policy::subject::Subject;
use crate::policy::{self, Approval, Decision, Terms};
use crate::service::agent::{Agent, Progress};
use crate::service::ceremony::Waiters;
use crate::service::error::AgentError;
use crate::service::flights::{Flight, Joined};
use crate::service::session::{scope_set, CacheKey, CachedToken};
use crate::upstream::{BoxFuture, IdTokenRequest, MintRequest, UpstreamError};

/// What one flight issues, owned by its task: who asked, for which profile,
/// on which terms, under which key.
struct Ask {
    caller: Caller,
    name: String,
    profile: Profile,
    terms: Terms,
    key: CacheKey,
    /// The kubectl window a touch opens, for the prompt (see [`policy::kubectl_grant`]).
    kubectl: Option<String>,
}

/// What is asked for: an access token for scopes (empty: the profile's), or
/// an ID token for an audience.
enum Want {
    Access(Vec<String>),
    Id(String),
}

impl Agent {
    /// An ID token for `audience` (checked with [`touchgate::check_audience`]).
    pub async fn get_id_token(
        self: &Arc<Self>,
        caller: &Caller,
        profile: Option<String>,
        audience: String,
        progress: Progress,
    ) -> Result<IdTokenReply, AgentError> {
        self.ask_id_token(caller.into(), profile, audience, progress)
            .await
    }

    pub(super) async fn ask_id_token(
        self: &Arc<Self>,
        asking: Asking<'_>,
        profile: Option<String>,
        audience: String,
        progress: Progress,
    ) -> Result<IdTokenReply, AgentError> {
        touchgate::check_audience(&audience)
            .map_err(|e| AgentError::new(ErrorCode::BadRequest, e))?;
        let t = self
            .ask(asking, profile, Want::Id(audience.clone()), None, progress)
            .await?;
        Ok(IdTokenReply {
            id_token: t.access_token,
            expires_at: t.expires_at,
            profile: t.profile,
            audience,
            from_cache: t.from_cache,
        })
    }

    pub async fn get_token(
        self: &Arc<Self>,
        caller: &Caller,
        profile: Option<String>,
        scopes: Vec<String>,
        progress: Progress,
    ) -> Result<TokenReply, AgentError> {
        self.ask_token(caller.into(), profile, scopes, None, progress)
            .await
    }

    /// [`Agent::get_token`] for a peer with its request's hint, which is
    /// applied to a copy of the caller only when a token is not at hand.
    /// `cluster`: the kubectl plugin asks, for that cluster (a kubectl window
    /// may apply, see [`policy::kubectl_grant`]).
    pub(super) async fn ask_token(
        self: &Arc<Self>,
        asking: Asking<'_>,
        profile: Option<String>,
        scopes: Vec<String>,
        cluster: Option<&KubeCluster>,
        progress: Progress,
    ) -> Result<TokenReply, AgentError> {
        self.ask(asking, profile, Want::Access(scopes), cluster, progress)
            .await
    }

    async fn ask(
        self: &Arc<Self>,
        asking: Asking<'_>,
        profile: Option<String>,
        want: Want,
        cluster: Option<&KubeCluster>,
        progress: Progress,
    ) -> Result<TokenReply, AgentError> {
        self.check_unlocked()?;
        self.touch_last_use();
        // A window hit allocates nothing beyond its reply: the profile and the
        // grant are borrowed from the config, the window and scopes looked up
        // as they are, the caller not copied.
        let config = self.config();
        let (name, profile) = resolve_profile(&config, profile.as_deref())?;
        // An ID token carries no scope: the policy sees the profile's own.
        let (scopes, audience): (&[String], Option<&str>) = match &want {
            Want::Access(s) if !s.is_empty() => (s, None),
            Want::Access(_) => (&profile.scopes, None),
            Want::Id(a) => (&profile.scopes, Some(a)),
        };
        // Who the caller is (a read of /proc) only matters to caller rules: a
        // profile without them answers a window hit with no file system call.
        let who = if policy::looks_at_caller(profile) {
            asking.caller().policy_subject()
        } else {
            Subject::default()
        };
        let grant = match policy::decide(name, profile, &who, scopes) {
            Decision::Allow(grant) => grant,
            Decision::Refuse { rule, reason } => {
                let caller = &*asking.caller();
                tracing::warn!(%caller, profile = %name, %rule, "refused by policy");
                // A refusal either way; the writer logs a record it could not write.
                let _ = self
                    .audit
                    .commit(Record {
                        time: self.clock.unix_now(),
                        event: "refused".into(),
                        caller: Some(caller.into()),
                        profile: Some(name.to_owned()),
                        service_account: profile.service_account.clone(),
                        scopes: if audience.is_some() {
                            Vec::new()
                        } else {
                            scopes.to_vec()
                        },
                        audience: audience.map(str::to_owned),
                        reason: Some(reason.clone()),
                        ..Default::default()
                    })
                    .await;
                return Err(AgentError::new(ErrorCode::PolicyRefused, reason));
            }
        };
        // Who started the plugin (a read of /proc) only matters to a kubectl window.
        let grant = match cluster {
            Some(c) if profile.kubectl_window.is_some() => {
                let kubectl = asking.peer().kubectl_parent();
                policy::kubectl_grant(grant, profile, kubectl.as_deref(), Some(c))
            }
            _ => grant,
        };
        let kubectl = grant.terms.kubectl_window.map(|_| grant.window.to_string());
        let window = grant.window.text();
        let scopes = scope_set(scopes);
        if let Some(t) = self.cached_recorded(&window, name, &scopes, audience) {
            tracing::trace!(caller = %asking.caller(), profile = %name, "token from the approval window, no touch");
            self.note_reuse(asking, profile, &window, &t, audience);
            return Ok(t);
        }
        let caller = &*asking.caller();
        let key = match audience {
            Some(a) => CacheKey::id_token(&window, name, a),
            None => CacheKey::new(&window, name, &scopes),
        };
        let mut flight = self.join_flight(caller, name, profile, grant.terms, &key, kubectl);
        let mut told = false;
        loop {
            if let Some(r) = flight.result.borrow_and_update().clone() {
                return r;
            }
            if !told {
                if let Some(p) = flight.touch.borrow_and_update().clone() {
                    let _ = progress.send(p);
                    told = true;
                }
            }
            tokio::select! {
                r = flight.result.changed() => if r.is_err() {
                    // The flight ended without a result (it panicked): a bug.
                    return Err(AgentError::new(ErrorCode::Internal, "token issuance stopped unexpectedly; see the agent's log"));
                },
                _ = flight.touch.changed(), if !told => {}
                // The client hung up: leave the flight (the last to leave cancels its touch).
                () = progress.closed() => {
                    self.flights.leave(&key, flight);
                    return Err(AgentError::new(ErrorCode::Key, "the client hung up before its token was issued"));
                }
            }
        }
    }

    /// A cached token (an ID token for `audience`, if given), while the audit
    /// log takes records (a window hit is recorded, in memory first, so it
    /// needs a log that writes).
    fn cached_recorded(
        &self,
        window: &str,
        name: &str,
        scopes: &[String],
        audience: Option<&str>,
    ) -> Option<TokenReply> {
        if !self.may_reuse() {
            return None;
        }
        self.cached(window, name, scopes, audience)
    }

    /// Count a window hit for the audit log: no file system call (see [`crate::audit::AuditLog::reused`]).
    fn note_reuse(
        &self,
        asking: Asking<'_>,
        profile: &Profile,
        window: &str,
        t: &TokenReply,
        audience: Option<&str>,
    ) {
        let aud = audience.map(str::to_owned);
        let what = aud.as_ref().map_or(&t.scopes[..], std::slice::from_ref);
        let k = crate::audit::reuse_key(asking, window, &t.profile, what, t.expires_at);
        self.audit.reused(k, self.clock.unix_now(), || Record {
            event: "reused".into(),
            caller: Some((&*asking.caller()).into()),
            profile: Some(t.profile.clone()),
            service_account: profile.service_account.clone(),
            scopes: t.scopes.clone(),
            audience: aud.clone(),
            token: Some(t.access_token.fingerprint()),
            expires_at: Some(t.expires_at),
            ..Default::default()
        });
    }

    fn cached(
        &self,
        window: &str,
        name: &str,
        scopes: &[String],
        audience: Option<&str>,
    ) -> Option<TokenReply> {
        let now = self.clock.now();
        let margin = self.config().agent.expiry_margin;
        let t = match audience {
            Some(a) => self.sessions.locked().id_token(window, a, now, margin)?,
            None => self.sessions.locked().token(window, scopes, now, margin)?,
        };
        let scopes = if audience.is_some() { &[][..] } else { scopes };
        Some(TokenReply {
            access_token: t.token,
            expires_at: unix(t.expires_at),
            profile: name.to_owned(),
            scopes: scopes.to_vec(),
            from_cache: true,
        })
    }

    fn join_flight(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        profile: &Profile,
        terms: Terms,
        key: &CacheKey,
        kubectl: Option<String>,
    ) -> Joined {
        let (joined, started) = self.flights.join_or_start(key);
        let Some(flight) = started else {
            return joined;
        };
        let this = self.clone();
        let ask = Ask {
            caller: caller.clone(),
            name: name.to_owned(),
            profile: profile.clone(),
            terms,
            key: key.clone(),
            kubectl,
        };
        // The flight runs on its own task: a caller that hangs up does not cancel it for the others.
        tokio::spawn(async move {
            let mut touch = None;
            let r = this.issue(&ask, &flight, &mut touch).await;
            let Ask {
                caller,
                name,
                profile,
                key,
                ..
            } = &ask;
            this.notify_outcome(caller, name, profile, &r, touch.is_some());
            this.audit_failure(caller, name, profile, key, &r, touch)
                .await;
            this.flights.finish(key, &flight);
            flight.result.send_replace(Some(r));
        });
        joined
    }

    /// Resolves once every caller has left `flight`; it is then out of the
    /// in-flight map, so whoever asks next starts a flight (and a touch) of their own.
    fn flight_abandoned(
        self: &Arc<Self>,
        key: &CacheKey,
        flight: &Arc<Flight>,
    ) -> impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static {
        let (this, key, flight) = (self.clone(), key.clone(), flight.clone());
        move || {
            let (this, key, flight) = (this.clone(), key.clone(), flight.clone());
            Box::pin(async move { this.flights.abandoned(&key, &flight).await })
        }
    }

    async fn issue(
        self: &Arc<Self>,
        ask: &Ask,
        flight: &Arc<Flight>,
        touch: &mut Option<TouchEvidence>,
    ) -> Result<TokenReply, AgentError> {
        let Ask {
            caller,
            name,
            profile,
            terms,
            key,
            kubectl,
        } = ask;
        let locks = self.lock_state.count()?;
        let audience = key.audience.as_deref();
        if let Some(t) = self.cached_recorded(&key.window, name, &key.scopes, audience) {
            self.note_reuse(caller.into(), profile, &key.window, &t, audience);
            return Ok(t);
        }
        let started = self.clock.now();
        let window = self
            .sessions
            .locked()
            .window_credential(&key.window, started);
        let (credential, touched, saved) = match window {
            Some(c) => (c, false, None),
            None => {
                let approved = approved(caller, name, profile, key);
                let mut approval = match audience {
                    Some(a) => Approval::id_token(name, profile, a),
                    None => Approval::new(name, profile, &key.scopes),
                };
                if let (Some(length), Some(window)) = (terms.kubectl_window, kubectl) {
                    approval.kubectl = Some((window.clone(), length));
                }
                let prompt = match audience {
                    Some(a) => format!(
                        "touch your security key: {caller} asks for an ID token for audience {a} with profile `{name}`: {approval}"
                    ),
                    None => format!(
                        "touch your security key: {caller} asks for profile `{name}`: {approval}"
                    ),
                };
                let desktop = self.notifier.locked().clone();
                let note =
                    Notification::touch_needed(caller, &approval, profile.project.as_deref());
                let prompts = flight.clone();
                let notify = Waiters::new(
                    move |p| {
                        prompts.touch.send_replace(Some(p));
                        desktop.notify(&note);
                    },
                    self.flight_abandoned(key, flight),
                );
                let hint = caller.display.clone();
                let (cred, evidence, saved) = self
                    .approve_and_unseal(
                        &profile.credential,
                        &approved,
                        &hint,
                        terms.user_verification == UserVerification::Required,
                        prompt,
                        &notify,
                    )
                    .await
                    // Locked meanwhile (the lock cancelled the touch): say so.
                    .map_err(|e| self.lock_state.still_unlocked(locks).err().unwrap_or(e))?;
                *touch = Some(evidence);
                // Locked while the touch was pending: nothing minted.
                self.lock_state.still_unlocked(locks)?;
                (Arc::new(cred), true, Some(saved))
            }
        };
        // Once the touch's counter is saved (it is written while the token is
        // minted), its window opens.
        let opened = {
            let cred = credential.clone();
            async move {
                let Some(saved) = saved else { return Ok(()) };
                saved.done().await?;
                // Locked while the touch was pending or the counter written: no window.
                let mut sessions = self.sessions.locked();
                self.lock_state.still_unlocked(locks)?;
                match (terms.touch, terms.kubectl_window) {
                    (TouchRule::Window(w), _) => sessions.open_window(
                        &key.window,
                        self.clock.now(),
                        w,
                        terms.max_tokens,
                        cred,
                    ),
                    // The token minted below is kept, not the credential.
                    (TouchRule::EveryToken, Some(w)) => sessions.open_token_window(
                        &key.window,
                        self.clock.now(),
                        w,
                        terms.max_tokens,
                    ),
                    (TouchRule::EveryToken, None) => {}
                }
                Ok::<_, AgentError>(())
            }
        };
        let mint = match audience {
            Some(a) => {
                let req = IdTokenRequest {
                    audience: a.to_owned(),
                    impersonate: profile.service_account.clone(),
                    delegates: profile.delegates.clone(),
                    quota_project: profile.quota_project.clone(),
                };
                Box::pin(async move { self.upstream.mint_id_token(&credential, &req).await })
                    as BoxFuture<'_, _>
            }
            None => {
                let req = MintRequest {
                    scopes: key.scopes.clone(),
                    impersonate: profile.service_account.clone(),
                    lifetime: terms.lifetime,
                    delegates: profile.delegates.clone(),
                    quota_project: profile.quota_project.clone(),
                };
                Box::pin(async move { self.upstream.mint(&credential, &req).await })
            }
        };
        // A lock ends the mint at once; whatever it would have brought is
        // dropped. A counter that could not be saved drops the token too.
        let minted = tokio::select! {
            biased;
            e = self.lock_state.locked_since(locks) => return Err(e),
            (m, o) = async { tokio::join!(mint, opened) } => {
                o?;
                m.map_err(upstream_error)?
            }
        };
        self.mints.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let margin = self.config().agent.expiry_margin;
        if now
            .checked_add(margin)
            .is_none_or(|m| minted.expires_at <= m)
        {
            return Err(AgentError::new(
                ErrorCode::Upstream,
                format!(
                    "Google issued a token for profile \"{name}\" that expires in {}s, inside agent.expiry_margin ({}): lower expiry_margin or raise the profile's lifetime",
                    minted.expires_at.duration_since(now).unwrap_or_default().as_secs(),
                    format_duration(margin)
                ),
            ));
        }
        tracing::info!(
            %caller,
            profile = %name,
            principal = %minted.principal,
            audience = audience.unwrap_or("-"),
            token = %minted.access_token.fingerprint(),
            expires_at = unix(minted.expires_at),
            touched,
            "issued token"
        );
        // Durable before it is handed out or cached: a token the log cannot
        // hold is dropped (fail closed, unless audit.on_failure = "allow").
        self.record(Record {
            time: self.clock.unix_now(),
            event: "issued".into(),
            token: Some(minted.access_token.fingerprint()),
            expires_at: Some(unix(minted.expires_at)),
            touch: touch.clone(),
            ..approved(caller, name, profile, key).record()
        })
        .await?;
        {
            // Under the session lock, as `lock` drops windows and tokens under it:
            // a lock from here on drops what is stored now, and one before is seen.
            let mut sessions = self.sessions.locked();
            if let Err(e) = self.lock_state.still_unlocked(locks) {
                // Its touch is in the issued record already: not in a second one.
                touch.take();
                return Err(e);
            }
            sessions.note_handed(&key.window);
            sessions.store_token(
                key.clone(),
                CachedToken {
                    token: minted.access_token.clone(),
                    expires_at: minted.expires_at,
                },
            );
        }
        Ok(TokenReply {
            access_token: Secret::clone(&minted.access_token),
            expires_at: unix(minted.expires_at),
            profile: name.to_owned(),
            scopes: key.scopes.clone(),
            from_cache: false,
        })
    }
}

impl Agent {
    /// After a touch: a desktop notification saying how it ended (queued, never waited for).
    fn notify_outcome(
        &self,
        caller: &Caller,
        name: &str,
        profile: &Profile,
        r: &Result<TokenReply, AgentError>,
        touched: bool,
    ) {
        let kind = match r {
            Ok(_) if touched => Kind::Issued,
            Err(e) if e.code() == ErrorCode::TouchDenied => Kind::Denied,
            Err(e) if e.code() == ErrorCode::TouchTimeout => Kind::TimedOut,
            _ => return,
        };
        self.notify(&Notification::outcome(
            kind,
            caller,
            name,
            profile.project.as_deref(),
        ));
    }

    /// The audit record of an issuance that ended without a token (one that
    /// ended with a token was recorded before it was handed out). Waited for,
    /// so the caller hears only once the log holds it.
    async fn audit_failure(
        &self,
        caller: &Caller,
        name: &str,
        profile: &Profile,
        key: &CacheKey,
        r: &Result<TokenReply, AgentError>,
        touch: Option<TouchEvidence>,
    ) {
        let Err(e) = r else { return };
        let event = match e.code() {
            ErrorCode::TouchDenied => "denied",
            ErrorCode::TouchTimeout => "timed-out",
            _ => "failed",
        };
        let _ = self
            .audit
            .commit(Record {
                time: self.clock.unix_now(),
                event: event.into(),
                touch,
                reason: Some(e.message().to_string()),
                ..approved(caller, name, profile, key).record()
            })
            .await;
    }
}

/// The profile asked for (or the default one), borrowed from `config`.
fn resolve_profile<'a>(
    config: &'a Config,
    asked: Option<&'a str>,
) -> Result<(&'a str, &'a Profile), AgentError> {
    let names = || config.profile_names().join(", ");
    let name = match asked {
        Some(n) => n,
        None => config.default_profile_name().ok_or_else(|| {
            AgentError::new(
                ErrorCode::UnknownProfile,
                format!("no profile named and no default_profile in the config: pass --profile (one of: {})", names()),
            )
        })?,
    };
    match config.profiles.get(name) {
        Some(p) => Ok((name, p)),
        None => Err(AgentError::new(
            ErrorCode::UnknownProfile,
            format!(
                "unknown profile {}: use one of {} (see touchgate profiles)",
                touchgate::quote(name),
                names()
            ),
        )),
    }
}

/// What a token touch approves: the fields of its record its challenge binds.
fn approved(caller: &Caller, name: &str, profile: &Profile, key: &CacheKey) -> Approved {
    Approved {
        caller: Some(caller.into()),
        profile: Some(name.to_owned()),
        service_account: profile.service_account.clone(),
        scopes: key.scopes.clone(),
        lifetime: match key.audience {
            // An ID token's lifetime is Google's (an hour), not the profile's.
            Some(_) => None,
            None => Some(profile.lifetime.as_secs()),
        },
        credential: Some(profile.credential.clone()),
        audience: key.audience.clone(),
    }
}

fn upstream_error(e: UpstreamError) -> AgentError {
    AgentError::new(ErrorCode::Upstream, e.to_string())
}
