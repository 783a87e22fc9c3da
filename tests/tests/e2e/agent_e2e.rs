//! End-to-end: the real agent (in-process over its real socket, or as the
//! shipped binary), the software key, the Google emulator, the CLI.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use touchgate::{CallerHint, ErrorCode, Secret};
use touchgate_agent::key::soft::{AutoTouch, ScriptedTouch};
use touchgate_tests::emulator::CallKind;

async fn enrol_and_import(c: &mut touchgate::Client, key_json: &str) {
    c.enroll(false, false, CallerHint::default()).await.unwrap();
    c.import("default", Secret::new(key_json), CallerHint::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_cold_asks_share_one_touch_and_one_mint() {
    let (emu, key_json) = emulator().await;
    let touch = Arc::new(ScriptedTouch::new());
    let cfg = config_text(
        &emu.base_url(),
        "auto",
        "every-token",
        // 100 connections from this one process: within its half of the cap.
        "max_connections = 256",
    );
    let agent = InProcess::start(&cfg, touch.clone()).await;
    {
        let mut c = agent.client().await;
        let t = touch.clone();
        let enrol = tokio::spawn(async move { enrol_and_import(&mut c, &key_json).await });
        // enrol + import: two touches
        touch.approve();
        touch.approve();
        enrol.await.unwrap();
        let _ = t;
    }
    let touches_before = agent.agent.touches();
    let gat_before = emu.state().count(CallKind::GenerateAccessToken);

    let waiting = Arc::new(AtomicUsize::new(0));
    let all_waiting = Arc::new(tokio::sync::Notify::new());
    let mut tasks = vec![];
    for i in 0..100 {
        let mut c = agent.client().await;
        let (waiting, all_waiting) = (waiting.clone(), all_waiting.clone());
        c.on_touch_needed(move |_| {
            if waiting.fetch_add(1, Ordering::SeqCst) + 1 == 100 {
                all_waiting.notify_one();
            }
        });
        tasks.push(tokio::spawn(async move {
            let hint = CallerHint {
                program: Some(format!("worker-{i}")),
                ..Default::default()
            };
            c.get_token(Some("inference"), &[], hint).await
        }));
    }
    // Every one of the 100 is told to touch before the (single) touch is given.
    all_waiting.notified().await;
    touch.approve();
    let mut tokens = vec![];
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap());
    }
    assert!(tokens
        .iter()
        .all(|t| t.access_token == tokens[0].access_token));
    assert_eq!(
        agent.agent.touches() - touches_before,
        1,
        "exactly one touch"
    );
    assert_eq!(
        touch.requested(),
        3,
        "enrol, import, and one for the 100 asks"
    );
    assert_eq!(
        emu.state().count(CallKind::GenerateAccessToken) - gat_before,
        1,
        "exactly one upstream mint"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_ask_inside_the_window_needs_no_touch() {
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "10m", "");
    let agent = InProcess::start(&cfg, Arc::new(AutoTouch)).await;
    let mut c = agent.client().await;
    enrol_and_import(&mut c, &key_json).await;
    let first = c.get_token(None, &[], CallerHint::default()).await.unwrap();
    let touches = agent.agent.touches();
    let second = c.get_token(None, &[], CallerHint::default()).await.unwrap();
    assert!(!first.from_cache);
    assert!(second.from_cache);
    assert_eq!(first.access_token, second.access_token);
    assert_eq!(agent.agent.touches(), touches, "no touch inside the window");
    assert_eq!(agent.agent.mints(), 1);

    // The token is accepted by Vertex; lock drops it and the next ask touches again.
    assert_eq!(c.lock().await.unwrap(), 1);
    c.unlock(CallerHint::default()).await.unwrap();
    let third = c.get_token(None, &[], CallerHint::default()).await.unwrap();
    assert!(!third.from_cache);
    assert_eq!(
        agent.agent.touches(),
        touches + 2,
        "unlock, then a new window"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issued_token_is_accepted_by_vertex_and_carries_the_profile_lifetime() {
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "");
    let agent = InProcess::start(&cfg, Arc::new(AutoTouch)).await;
    let mut c = agent.client().await;
    enrol_and_import(&mut c, &key_json).await;
    let t = c
        .get_token(Some("inference"), &[], CallerHint::default())
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = t.expires_at - now;
    assert!((890..=900).contains(&left), "15m lifetime, got {left}s");
    let url = format!(
        "{}/v1/projects/touchgate-test/locations/us-central1/models",
        emu.base_url()
    );
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(t.access_token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let call = emu
        .state()
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.kind == CallKind::Vertex)
        .unwrap();
    assert_eq!(
        call.bearer_fingerprint.as_deref(),
        Some(t.access_token.fingerprint().as_str())
    );
    assert_eq!(call.principal.as_deref(), Some(INFERENCE));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_touch_fails_every_waiter_and_issues_nothing() {
    let (emu, key_json) = emulator().await;
    let touch = Arc::new(ScriptedTouch::new());
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "");
    let agent = InProcess::start(&cfg, touch.clone()).await;
    let mut c = agent.client().await;
    let enrol = tokio::spawn(async move {
        enrol_and_import(&mut c, &key_json).await;
        c
    });
    touch.approve();
    touch.approve();
    let mut c = enrol.await.unwrap();
    let ask = tokio::spawn(async move { c.get_token(None, &[], CallerHint::default()).await });
    touch.deny();
    let err = ask.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TouchDenied));
    assert_eq!(agent.agent.mints(), 0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_touch_timeout_fails_every_waiter_and_the_agent_goes_on() {
    let (emu, key_json) = emulator().await;
    let touch = Arc::new(ScriptedTouch::new());
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "")
        .replace("touch_timeout = \"10s\"", "touch_timeout = \"1s\"");
    let agent = InProcess::start(&cfg, touch.clone()).await;
    let mut c = agent.client().await;
    let enrol = tokio::spawn(async move {
        enrol_and_import(&mut c, &key_json).await;
    });
    touch.approve();
    touch.approve();
    enrol.await.unwrap();

    // Five callers wait on one touch that never comes.
    let mut tasks = vec![];
    for _ in 0..5 {
        let mut c = agent.client().await;
        tasks.push(tokio::spawn(async move {
            c.get_token(None, &[], CallerHint::default()).await
        }));
    }
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TouchTimeout), "{err}");
        assert!(err.to_string().contains("within 1s"), "{err}");
    }
    assert_eq!(agent.agent.mints(), 0);

    // The key was cancelled, not left hanging: the next ask gets its touch and a token.
    let mut c = agent.client().await;
    let ask = tokio::spawn(async move { c.get_token(None, &[], CallerHint::default()).await });
    touch.approve();
    assert!(ask.await.unwrap().is_ok());
    agent.shutdown().await;
}

/// A key that answers with credentials the agent did not ask for: it makes a
/// second credential although asked to exclude the first, and answers with
/// `answer_with` (when set) whatever the allow-list says.
struct Misbehaving {
    soft: Arc<touchgate_agent::key::soft::SoftKey>,
    answer_with: std::sync::Mutex<Option<Vec<u8>>>,
}

impl touchgate_agent::key::SecurityKey for Misbehaving {
    fn name(&self) -> String {
        "misbehaving key".into()
    }
    fn backend(&self) -> &'static str {
        "soft"
    }
    fn make_credential(
        &self,
        req: &touchgate_agent::key::MakeCredentialRequest,
    ) -> Result<touchgate_agent::key::Attestation, touchgate_agent::key::KeyError> {
        self.soft
            .make_credential(&touchgate_agent::key::MakeCredentialRequest {
                rp_id: req.rp_id.clone(),
                challenge: req.challenge,
                user_id: req.user_id.clone(),
                user_name: req.user_name.clone(),
                hmac_secret: req.hmac_secret,
                uv: req.uv,
                pin: req.pin.clone(),
                exclude: vec![],
            })
    }
    fn get_assertion(
        &self,
        req: &touchgate_agent::key::GetAssertionRequest,
    ) -> Result<touchgate_agent::key::Assertion, touchgate_agent::key::KeyError> {
        let forced = self.answer_with.lock().unwrap().clone();
        self.soft
            .get_assertion(&touchgate_agent::key::GetAssertionRequest {
                rp_id: req.rp_id.clone(),
                challenge: req.challenge,
                allow: forced
                    .map(|id| vec![id])
                    .unwrap_or_else(|| req.allow.clone()),
                hmac_salt: req.hmac_salt,
                uv: req.uv,
                pin: req.pin.clone(),
                up: req.up,
            })
    }
    fn cancel(&self) {
        self.soft.cancel()
    }
}

/// A touch's counter is made durable in the counters file, not by rewriting
/// the vault; a restarted agent still knows the newest, so a key answering
/// below it (a clone used meanwhile) is refused although the vault file
/// holds an older counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_leaves_the_vault_file_alone_and_its_counter_outlives_a_restart() {
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "");
    let agent = InProcess::start(&cfg, Arc::new(AutoTouch)).await;
    let mut c = agent.client().await;
    enrol_and_import(&mut c, &key_json).await;
    let vault_path = agent.dir.path().join("vault.json");
    let sealed = std::fs::read(&vault_path).unwrap();
    let at_import = agent.key.sign_count();
    for _ in 0..3 {
        c.get_token(None, &[], CallerHint::default()).await.unwrap();
    }
    assert_eq!(
        std::fs::read(&vault_path).unwrap(),
        sealed,
        "a touch rewrote the vault file"
    );
    let newest = agent.key.sign_count();
    assert_eq!(newest, at_import + 3);
    let keys = c.list_keys().await.unwrap();
    assert_eq!(keys[0].sign_count, newest);
    drop(c);

    let agent = agent.restart(&cfg).await;
    let mut c = agent.client().await;
    assert_eq!(
        c.list_keys().await.unwrap()[0].sign_count,
        newest,
        "the restarted agent lost the newest counter"
    );
    // Above the vault file's counter, below the newest: refused.
    agent.key.set_sign_count(at_import + 1).unwrap();
    let e = c
        .get_token(None, &[], CallerHint::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("marked suspect"), "{e}");
    drop(c);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspect_credential_that_answers_anyway_is_refused() {
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "");
    let mut soft = None;
    let misbehaving = std::sync::OnceLock::<Arc<Misbehaving>>::new();
    let agent = InProcess::start_with(
        &cfg,
        Arc::new(AutoTouch),
        Arc::new(touchgate_agent::clock::SystemClock),
        |k| {
            soft = Some(k.clone());
            let m = Arc::new(Misbehaving {
                soft: k,
                answer_with: std::sync::Mutex::new(None),
            });
            let _ = misbehaving.set(m.clone());
            m
        },
    )
    .await;
    let (soft, key) = (soft.unwrap(), misbehaving.get().unwrap().clone());
    let mut c = agent.client().await;
    enrol_and_import(&mut c, &key_json).await;
    c.add_key(CallerHint::default()).await.unwrap();
    let keys = c.list_keys().await.unwrap();
    assert_eq!(keys.len(), 2);

    // The first credential's counter goes back: it is marked suspect.
    soft.set_sign_count(1).unwrap();
    let e = c
        .get_token(None, &[], CallerHint::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("marked suspect"), "{e}");
    let keys = c.list_keys().await.unwrap();
    let suspect = keys
        .iter()
        .find(|k| k.suspect.is_some())
        .expect("a suspect key");
    soft.set_sign_count(1000).unwrap();

    // It is left off the allow-list, but answers anyway.
    let vault =
        touchgate_agent::vault::VaultFile::load(&agent.dir.path().join("vault.json")).unwrap();
    let id = vault
        .enrolments
        .iter()
        .find(|e| hex::encode(&e.credential_id).starts_with(&suspect.credential))
        .unwrap()
        .credential_id
        .clone();
    *key.answer_with.lock().unwrap() = Some(id);
    let e = c
        .get_token(None, &[], CallerHint::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("marked suspect"),
        "a suspect credential's answer is refused: {e}"
    );
    assert_eq!(
        emu.state()
            .calls()
            .iter()
            .filter(|c| c.kind == CallKind::Token)
            .count(),
        0,
        "nothing minted"
    );
}

/// The hang-up tests' agent, enrolled and holding a key, on a scripted key whose
/// touch may take a minute: an orphaned key operation would still be waiting
/// when the next request comes.
/// Also the emulator (keep it) and the sealed key's JSON.
async fn patient_agent() -> (
    touchgate_tests::emulator::EmulatorHandle,
    String,
    Arc<ScriptedTouch>,
    InProcess,
) {
    let (emu, key_json) = emulator().await;
    let config = config_text(&emu.base_url(), "auto", "every-token", "")
        .replace("touch_timeout = \"10s\"", "touch_timeout = \"60s\"");
    let touch = Arc::new(ScriptedTouch::new());
    let agent = InProcess::start(&config, touch.clone()).await;
    touch.approve();
    touch.approve();
    enrol_and_import(&mut agent.client().await, &key_json).await;
    (emu, key_json, touch, agent)
}

/// Wait (on a blocking thread) until the key has been asked for `n` touches in
/// all; else fail with `why` — after refusing whatever touch is pending, so the
/// failing test ends instead of waiting on a key operation nobody cancels.
async fn assert_asked(touch: &Arc<ScriptedTouch>, n: u64, why: &str) {
    let t = touch.clone();
    let asked = tokio::task::spawn_blocking(move || t.wait_requested(n, Duration::from_secs(20)))
        .await
        .unwrap();
    if !asked {
        for _ in 0..8 {
            touch.deny();
        }
        panic!("{why}");
    }
}

/// A client that hangs up while its unlock or import waits for a touch takes
/// the key operation with it: the next request asks for its own touch at
/// once (not after the orphan's minute), and one touch does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_hangs_up_cancels_its_key_operation() {
    let (_emu, key_json, touch, agent) = patient_agent().await;
    agent.client().await.lock().await.unwrap();

    // Unlock, then hang up while it waits for the touch.
    let asked = touch.requested();
    let mut c = agent.client().await;
    let gone = tokio::spawn(async move { c.unlock(CallerHint::default()).await });
    assert_asked(&touch, asked + 1, "the key was not asked for a touch").await;
    gone.abort();
    let _ = gone.await;
    let touches = agent.agent.touches();
    let mut c = agent.client().await;
    let next = tokio::spawn(async move { c.unlock(CallerHint::default()).await.map(|()| c) });
    assert_asked(&touch, asked + 2, "the hung-up unlock still holds the key").await;
    touch.approve();
    let mut c = next.await.unwrap().unwrap();
    assert_eq!(agent.agent.touches(), touches + 1, "one touch unlocked");
    assert!(c.status().await.unwrap().locked.is_none());

    // The same for an import.
    let mut c2 = agent.client().await;
    let json = key_json.clone();
    let gone = tokio::spawn(async move {
        c2.import("other", Secret::new(&json), CallerHint::default())
            .await
    });
    assert_asked(&touch, asked + 3, "the key was not asked for a touch").await;
    gone.abort();
    let _ = gone.await;
    let next = tokio::spawn(async move {
        c.import("other", Secret::new(&key_json), CallerHint::default())
            .await
    });
    assert_asked(&touch, asked + 4, "the hung-up import still holds the key").await;
    touch.approve();
    next.await.unwrap().unwrap();
    agent.shutdown().await;
}

/// Callers waiting on one shared touch: the touch goes on while any of them
/// waits, and is cancelled on the key once every one has hung up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_touch_is_cancelled_only_when_every_waiter_is_gone() {
    use tokio::sync::mpsc::unbounded_channel;
    use touchgate_agent::caller::Caller;
    let (_emu, _, touch, agent) = patient_agent().await;
    // A GetToken as the server runs it; dropping the receiver is the client hanging up.
    let ask = || {
        let (tx, rx) = unbounded_channel();
        let a = agent.agent.clone();
        let t =
            tokio::spawn(async move { a.get_token(&Caller::default(), None, vec![], tx).await });
        (t, rx)
    };
    type Asked =
        tokio::task::JoinHandle<Result<touchgate::TokenReply, touchgate_agent::AgentError>>;
    let ended = |t: Asked| {
        let touch = touch.clone();
        async move {
            match tokio::time::timeout(Duration::from_secs(20), t).await {
                Ok(r) => r.unwrap(),
                Err(_) => {
                    for _ in 0..8 {
                        touch.deny();
                    }
                    panic!("a caller that hung up is still waiting");
                }
            }
        }
    };

    let asked = touch.requested();
    let (a, a_rx) = ask();
    let (b, _b_rx) = ask();
    assert_asked(&touch, asked + 1, "the key was not asked for a touch").await;
    drop(a_rx);
    let _ = ended(a).await;
    touch.approve();
    assert!(ended(b).await.is_ok(), "b still waited and got the token");
    assert_eq!(touch.requested(), asked + 1, "one touch for both");

    let (c, c_rx) = ask();
    let (d, d_rx) = ask();
    assert_asked(&touch, asked + 2, "the key was not asked for a touch").await;
    drop(c_rx);
    drop(d_rx);
    let _ = ended(c).await;
    let _ = ended(d).await;
    // Through the socket too: a client that hangs up.
    let mut e = agent.client().await;
    let e = tokio::spawn(async move { e.get_token(None, &[], CallerHint::default()).await });
    assert_asked(
        &touch,
        asked + 3,
        "the abandoned touch was not cancelled: a new ask joined it",
    )
    .await;
    e.abort();
    let _ = e.await;
    let mut f = agent.client().await;
    let f = tokio::spawn(async move { f.get_token(None, &[], CallerHint::default()).await });
    assert_asked(
        &touch,
        asked + 4,
        "the touch of a client that hung up was not cancelled",
    )
    .await;
    touch.approve();
    assert!(f.await.unwrap().is_ok());
    assert_eq!(
        agent.agent.mints(),
        2,
        "nothing was minted for those who left"
    );
    agent.shutdown().await;
}

// Counts this thread's heap allocations, so a test can say what a window hit
// costs beyond the reply it hands out (as frame.rs's test does for a frame).
#[global_allocator]
static GLOBAL: touchgate::alloc_count::Counting = touchgate::alloc_count::Counting;
use touchgate::alloc_count as counting;

/// The hot path: a GetToken answered from an open window allocates only the
/// reply it returns — no copy of the profile, the caller or a cache key —
/// also for a real peer (its executable and parent known) whose request
/// names a display.
#[tokio::test(flavor = "current_thread")]
async fn a_window_hit_allocates_only_its_reply() {
    use touchgate::{Request, Response};
    use touchgate_agent::caller::Caller;
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "15m", "");
    let agent = InProcess::start(&cfg, Arc::new(AutoTouch)).await;
    {
        let mut c = agent.client().await;
        enrol_and_import(&mut c, &key_json).await;
        let first = c.get_token(None, &[], CallerHint::default()).await.unwrap();
        assert!(!first.from_cache);
    }
    let caller = Caller::from_peer(0, i32::try_from(std::process::id()).ok());
    assert!(
        caller.exe.is_some() && caller.parent.is_some(),
        "{caller:?}"
    );
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let ask = || Request::GetToken {
        profile: None,
        scopes: vec![],
        caller: CallerHint {
            display: Some(":1".into()),
            tty: Some("/dev/pts/3".into()),
            ..CallerHint::default()
        },
    };
    // The first hit writes the window's "reused" record; count the ones after.
    let _ = agent.agent.handle(&caller, ask(), tx.clone()).await;
    for _ in 0..3 {
        let req = ask();
        let before = counting::allocs();
        let r = agent.agent.handle(&caller, req, tx.clone()).await;
        let spent = counting::allocs() - before;
        let Response::Token(t) = r else {
            panic!("not a token: {r:?}")
        };
        assert!(t.from_cache, "not a window hit");
        let before = counting::allocs();
        let copy = t.clone();
        let reply = counting::allocs() - before;
        drop(copy);
        assert!(
            spent <= reply,
            "a window hit made {spent} allocations; its reply owns {reply}"
        );
    }
    agent.shutdown().await;
}
