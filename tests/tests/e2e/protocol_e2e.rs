//! Bad clients against a real agent socket: oversized frames, garbage, a wrong
//! version, too many connections. The agent answers with a typed error where it
//! can, closes that connection, and keeps serving everyone else.

use crate::common;

use std::sync::Arc;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use touchgate::frame::{read_frame, write_frame, MAX_FRAME};
use touchgate::{ErrorCode, Hello, HelloReply, Response, PROTOCOL_VERSION};
use touchgate_agent::key::soft::AutoTouch;

async fn agent(extra: &str) -> InProcess {
    InProcess::start(
        &config_text("http://127.0.0.1:9", "auto", "every-token", extra),
        Arc::new(AutoTouch),
    )
    .await
}

async fn hello_error(s: &mut UnixStream) -> touchgate::ErrorReply {
    match read_frame::<_, HelloReply>(s).await.unwrap() {
        HelloReply::Error(e) => e,
        HelloReply::Hello(h) => panic!("expected an error, got hello {h:?}"),
    }
}

async fn assert_closed(s: &mut UnixStream) {
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).await.unwrap(), 0, "connection closed");
}

async fn still_serves(a: &InProcess) {
    let st = a.client().await.status().await.unwrap();
    assert_eq!(st.pid, std::process::id());
}

#[tokio::test]
async fn oversized_frame_gets_an_error_and_a_close() {
    let a = agent("").await;
    let mut s = UnixStream::connect(&a.socket).await.unwrap();
    s.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
        .await
        .unwrap();
    let e = hello_error(&mut s).await;
    assert_eq!(e.code, ErrorCode::BadFrame);
    assert!(e.message.contains("cap"), "{}", e.message);
    assert_closed(&mut s).await;
    still_serves(&a).await;

    // The same after a good hello.
    let mut s = UnixStream::connect(&a.socket).await.unwrap();
    write_frame(&mut s, &Hello::ours("test")).await.unwrap();
    assert!(matches!(
        read_frame::<_, HelloReply>(&mut s).await.unwrap(),
        HelloReply::Hello(_)
    ));
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    match read_frame::<_, Response>(&mut s).await.unwrap() {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::BadFrame),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_closed(&mut s).await;
    still_serves(&a).await;
    a.shutdown().await;
}

#[tokio::test]
async fn garbage_gets_an_error_and_a_close() {
    let a = agent("").await;
    let mut s = UnixStream::connect(&a.socket).await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert_eq!(hello_error(&mut s).await.code, ErrorCode::BadFrame);
    assert_closed(&mut s).await;

    // Garbage request after a good hello.
    let mut s = UnixStream::connect(&a.socket).await.unwrap();
    write_frame(&mut s, &Hello::ours("test")).await.unwrap();
    let _: HelloReply = read_frame(&mut s).await.unwrap();
    s.write_all(&[0, 0, 0, 2, 0xee, 0xee]).await.unwrap();
    match read_frame::<_, Response>(&mut s).await.unwrap() {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::BadFrame),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_closed(&mut s).await;
    still_serves(&a).await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_wrong_version_is_named() {
    let a = agent("").await;
    let mut s = UnixStream::connect(&a.socket).await.unwrap();
    write_frame(
        &mut s,
        &Hello {
            protocol: 99,
            software: "future".into(),
        },
    )
    .await
    .unwrap();
    let e = hello_error(&mut s).await;
    assert_eq!(e.code, ErrorCode::VersionMismatch);
    assert!(e.message.contains("version 99"), "{}", e.message);
    assert!(
        e.message.contains(&format!("speaks {PROTOCOL_VERSION}")),
        "{}",
        e.message
    );
    assert_closed(&mut s).await;
    still_serves(&a).await;
    a.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_told_busy() {
    // One process may hold half of the connections (the whole cap: agent/src/daemon/admission.rs).
    let a = agent("max_connections = 4").await;
    let c1 = a.client().await;
    let c2 = a.client().await;
    let err = touchgate::Client::connect(&a.socket)
        .await
        .err()
        .expect("third connection refused");
    assert_eq!(err.code(), Some(ErrorCode::Busy));
    assert!(err.to_string().contains("max_connections"), "{err}");
    assert!(err.to_string().contains("half"), "{err}");
    drop((c1, c2));
    a.shutdown().await;
}

/// A pipelined client (hello and request in one go, as `touchgate token`
/// and the docker helper connect) hears why its hello was refused, though
/// its request was never read: not a broken pipe or a reset.
#[tokio::test]
async fn a_pipelined_client_hears_the_refusal_of_its_hello() {
    let a = agent("max_connections = 4").await;
    let c1 = a.client().await;
    let c2 = a.client().await;
    let mut c = touchgate::Client::connect_pipelined(&a.socket)
        .await
        .expect("the connection itself is made; the refusal answers the hello");
    assert_eq!(c.agent_software, "", "the hello's answer is not read yet");
    let err = c
        .get_token(None, &[], touchgate::CallerHint::default())
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::Busy), "{err}");
    assert!(err.to_string().contains("max_connections"), "{err}");
    drop((c1, c2));
    // Admitted, the same client reads the agent's hello with its first answer.
    let mut c = touchgate::Client::connect_pipelined(&a.socket)
        .await
        .unwrap();
    c.status().await.unwrap();
    assert!(
        c.agent_software.starts_with("touchgate-agent "),
        "{}",
        c.agent_software
    );
    a.shutdown().await;
}

#[tokio::test]
async fn shutdown_removes_the_socket() {
    let a = agent("").await;
    let path = a.socket.clone();
    assert!(path.exists());
    let dir = a.shutdown().await;
    assert!(dir.path().exists());
    assert!(!path.exists(), "socket removed on shutdown");
}
