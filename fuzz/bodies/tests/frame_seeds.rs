//! Every seed of the `frame` fuzz target (`fuzz/corpus-seed/frame/`) run through
//! the target's own body, with the outcome each seed is kept for. Runs in the
//! normal `cargo test`; the fuzz target itself needs nightly (see fuzz/README.md).

use touchgate::frame::{FrameError, MAX_FRAME};
use touchgate::{
    CallerHint, ErrorCode, ErrorReply, Hello, HelloReply, IdTokenReply, ProfileInfo, Request,
    Response, Secret, StatusReply, TokenReply,
};

use touchgate_fuzz_bodies::frame as body;

use touchgate_fuzz_bodies::seeds::{seed_dir, seeds};

fn hello() -> Hello {
    Hello::ours("touchgate 0.1.0")
}

fn get_token() -> Request {
    Request::GetToken {
        profile: Some("inference".into()),
        scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
        caller: CallerHint {
            program: Some("gcloud".into()),
            pid: Some(4242),
            display: Some(":0".into()),
            wayland_display: None,
            tty: Some("/dev/pts/3".into()),
            term: Some("xterm-256color".into()),
        },
    }
}

fn agent_hello() -> HelloReply {
    HelloReply::Hello(Hello::ours("touchgate-agent 0.1.0"))
}

fn token() -> Response {
    Response::Token(TokenReply {
        access_token: Secret::new("ya29.seed"),
        expires_at: 1_800_000_000,
        profile: "inference".into(),
        scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
        from_cache: false,
    })
}

fn touch_needed() -> Response {
    Response::TouchNeeded {
        prompt: "touch your key: gcloud (pid 4242) asks for profile `inference`".into(),
    }
}

fn status() -> Response {
    Response::Status(StatusReply {
        agent_version: "0.1.0".into(),
        pid: 7,
        key_backend: "soft".into(),
        enrolled: None,
        credentials: vec!["default".into()],
        profiles: vec![ProfileInfo {
            name: "inference".into(),
            credential: "default".into(),
            service_account: Some("sa@p.iam.gserviceaccount.com".into()),
            project: Some("p".into()),
            scopes: vec![],
            touch: "10m".into(),
            lifetime_secs: 900,
            is_default: true,
            kubectl_window_secs: None,
        }],
        cached_tokens: 1,
        touches: 2,
        mints: 3,
        locked: None,
        warnings: vec![],
    })
}

fn get_id_token() -> Request {
    Request::GetIdToken {
        profile: Some("run".into()),
        audience: "https://hello-abc123-uc.a.run.app".into(),
        caller: CallerHint {
            program: Some("gcloud".into()),
            pid: Some(4242),
            ..CallerHint::default()
        },
    }
}

fn id_token() -> Response {
    Response::IdToken(IdTokenReply {
        id_token: Secret::new("eyJhbGciOiJSUzI1NiJ9.seed.sig"),
        expires_at: 1_800_000_000,
        profile: "run".into(),
        audience: "https://hello-abc123-uc.a.run.app".into(),
        from_cache: false,
    })
}

/// An ID-token ask and its answer, each after its hello.
fn id_token_session() -> Vec<u8> {
    let mut s = frame(&hello());
    s.extend(frame(&get_id_token()));
    s
}

fn id_token_reply() -> Vec<u8> {
    let mut s = frame(&agent_hello());
    s.extend(frame(&id_token()));
    s
}

fn refused() -> HelloReply {
    HelloReply::Error(ErrorReply::new(
        ErrorCode::PeerRefused,
        "this touchgate agent serves uid 1000 only, and you are uid 1001: start your own agent",
    ))
}

/// The seeds of valid streams, as the messages they hold.
fn agent_session() -> Vec<u8> {
    let mut s = frame(&hello());
    for r in [get_token(), Request::Status, Request::Reload] {
        s.extend(frame(&r));
    }
    s
}

fn client_session() -> Vec<u8> {
    let mut s = frame(&agent_hello());
    for r in [touch_needed(), token(), status()] {
        s.extend(frame(&r));
    }
    s
}

fn frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    body::now(touchgate::frame::write_frame(&mut buf, msg)).unwrap();
    buf
}

fn ended_closed(run: &body::FrameRun) -> bool {
    [
        &run.hellos.end,
        &run.requests.end,
        &run.hello_replies.end,
        &run.responses.end,
    ]
    .iter()
    .all(|e| matches!(e, FrameError::Closed))
}

#[test]
fn every_frame_seed_gives_its_outcome() {
    let all = seeds("frame");
    assert!(
        all.len() >= 6,
        "seeds missing from {}",
        seed_dir("frame").display()
    );
    for (name, data) in all {
        let run = body::run(&data);
        match name.as_str() {
            "agent-session.bin" => {
                assert_eq!(
                    data,
                    agent_session(),
                    "{name} no longer matches its messages"
                );
                assert_eq!(run.hellos.frames.len(), 4);
                assert_eq!(run.hellos.frames[0], Ok(hello()));
                assert_eq!(
                    run.requests.frames[1..],
                    [Ok(get_token()), Ok(Request::Status), Ok(Request::Reload)]
                );
                assert!(ended_closed(&run), "{name}: {run:?}");
            }
            "client-session.bin" => {
                assert_eq!(
                    data,
                    client_session(),
                    "{name} no longer matches its messages"
                );
                assert_eq!(run.hello_replies.frames[0], Ok(agent_hello()));
                assert_eq!(
                    run.responses.frames[1..],
                    [Ok(touch_needed()), Ok(token()), Ok(status())]
                );
                assert!(ended_closed(&run), "{name}: {run:?}");
            }
            "id-token-session.bin" => {
                assert_eq!(
                    data,
                    id_token_session(),
                    "{name} no longer matches its messages"
                );
                assert_eq!(run.requests.frames[1..], [Ok(get_id_token())]);
                assert!(ended_closed(&run), "{name}: {run:?}");
            }
            "id-token-reply.bin" => {
                assert_eq!(
                    data,
                    id_token_reply(),
                    "{name} no longer matches its messages"
                );
                assert_eq!(run.responses.frames[1..], [Ok(id_token())]);
                assert!(ended_closed(&run), "{name}: {run:?}");
            }
            "refused-hello.bin" => {
                assert_eq!(data, frame(&refused()));
                assert_eq!(run.hello_replies.frames, [Ok(refused())]);
                assert!(ended_closed(&run), "{name}: {run:?}");
            }
            "empty.bin" => {
                assert!(run.requests.frames.is_empty() && run.responses.frames.is_empty());
                assert!(ended_closed(&run), "{name}: {run:?}");
            }
            "oversized-length.bin" => {
                // The cap is checked before a byte of the body is read.
                for (frames, end) in [
                    (run.hellos.frames.len(), &run.hellos.end),
                    (run.requests.frames.len(), &run.requests.end),
                    (run.hello_replies.frames.len(), &run.hello_replies.end),
                    (run.responses.frames.len(), &run.responses.end),
                ] {
                    assert_eq!(frames, 0, "{name}");
                    assert!(
                        matches!(end, FrameError::TooLarge(n) if *n == MAX_FRAME + 1),
                        "{name}: {end:?}"
                    );
                }
            }
            "truncated-body.bin" => {
                assert!(run.requests.frames.is_empty());
                assert!(
                    matches!(&run.requests.end, FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
                    "{name}: {:?}",
                    run.requests.end
                );
            }
            "garbage-body.bin" => {
                // A frame that does not decode is consumed whole: the reader stays in step.
                assert_eq!(run.requests.frames.len(), 2, "{name}: {run:?}");
                let cut = "Hit the end of buffer, expected more data";
                assert_eq!(run.requests.frames[0].as_ref().unwrap_err(), cut);
                assert_eq!(run.responses.frames[0].as_ref().unwrap_err(), cut);
                assert_eq!(run.requests.frames[1], Ok(Request::Status));
                assert!(ended_closed(&run), "{name}: {run:?}");
            }
            other => panic!(
                "seed {other} has no expected outcome: add one to {}",
                file!()
            ),
        }
    }
}

/// The seeds made from messages are what the protocol encodes today. After a
/// protocol change, TOUCHGATE_WRITE_SEEDS=1 rewrites them.
#[test]
fn frame_seeds_are_current() {
    let dir = seed_dir("frame");
    let write = std::env::var("TOUCHGATE_WRITE_SEEDS").is_ok_and(|v| v == "1");
    let w = |n: &str, b: &[u8]| {
        if write {
            std::fs::write(dir.join(n), b).unwrap();
        }
        let committed = std::fs::read(dir.join(n)).unwrap_or_default();
        assert!(
            committed == b,
            "fuzz/corpus-seed/frame/{n} is not what the protocol encodes now: \
             rerun with TOUCHGATE_WRITE_SEEDS=1 to rewrite it"
        );
    };
    w("agent-session.bin", &agent_session());
    w("client-session.bin", &client_session());
    w("refused-hello.bin", &frame(&refused()));
    w("id-token-session.bin", &id_token_session());
    w("id-token-reply.bin", &id_token_reply());
    w("empty.bin", b"");
    let mut big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    big.extend_from_slice(&[0; 16]);
    w("oversized-length.bin", &big);
    w("truncated-body.bin", &[0, 0, 0, 10, 1, 2, 3]);
    let mut garbage = vec![0, 0, 0, 3, 0xff, 0xff, 0xff];
    garbage.extend(frame(&Request::Status));
    w("garbage-body.bin", &garbage);
}
