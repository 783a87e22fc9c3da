//! `touchgate-impostor`: another user's programs for the uid tests, run as uid
//! 65534 with `setpriv`.
//!
//! - `agent PATH`: a fake agent listening on the Unix socket PATH (its
//!   directory is created if missing). It answers a hello like a real agent,
//!   reads one request and hangs up.
//! - `shim ADDR`: a fake metadata server on the loopback TCP address ADDR (port
//!   0 picks one). Every request gets HTTP 200 with `Metadata-Flavor: Google`;
//!   a token path gets the token [`TOKEN`].
//! - `client PATH`: a client without the trust checks of the client library:
//!   it connects to the agent socket PATH, says hello and prints what the agent
//!   answered (to show the agent's own refusal).
//!
//! The servers print `listening on WHERE` first, then one line
//! `received N bytes: TEXT` (TEXT escaped onto one line) for every read, so a
//! test can tell whether anything at all reached them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Mutex;

use touchgate::frame::MAX_FRAME;
use touchgate::{Hello, HelloReply, PROTOCOL_VERSION};

/// The token the fake shim hands out.
const TOKEN: &str = "ya29.impostor-token";

static OUT: Mutex<()> = Mutex::new(());

fn say(line: &str) {
    let _g = OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn received(bytes: &[u8]) {
    say(&format!(
        "received {} bytes: {}",
        bytes.len(),
        String::from_utf8_lossy(bytes).escape_debug()
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["agent", path] => fake_agent(Path::new(path)),
        ["shim", addr] => fake_shim(addr),
        ["client", path] => client(Path::new(path)),
        _ => Err("usage: touchgate-impostor agent PATH | shim ADDR | client PATH".into()),
    };
    if let Err(e) = res {
        eprintln!("touchgate-impostor: {e}");
        std::process::exit(1);
    }
}

/// Read one frame (length and body), reporting every byte read.
fn read_frame_bytes(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    received(&len);
    let n = (u32::from_be_bytes(len) as usize).min(MAX_FRAME);
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).ok()?;
    received(&body);
    Some(body)
}

fn write_frame_bytes(s: &mut impl Write, msg: &impl serde::Serialize) -> std::io::Result<()> {
    let body = postcard::to_stdvec(msg).map_err(std::io::Error::other)?;
    s.write_all(&(body.len() as u32).to_be_bytes())?;
    s.write_all(&body)?;
    s.flush()
}

fn fake_agent(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // A socket file of an impostor before it is stale.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    say(&format!("listening on {}", path.display()));
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        std::thread::spawn(move || {
            if read_frame_bytes(&mut s).is_none() {
                return;
            }
            let hello = HelloReply::Hello(Hello::ours("touchgate-agent 0.1.0"));
            if write_frame_bytes(&mut s, &hello).is_err() {
                return;
            }
            // The request (an import carries the credential); then hang up.
            let _ = read_frame_bytes(&mut s);
        });
    }
    Ok(())
}

fn fake_shim(addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address"));
    }
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    say(&format!("listening on {local}"));
    for conn in listener.incoming() {
        let Ok(s) = conn else { continue };
        std::thread::spawn(move || answer_http(s));
    }
    Ok(())
}

fn answer_http(s: TcpStream) {
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => {
                if !head.is_empty() {
                    received(&head);
                }
                return;
            }
            Ok(_) => head.extend_from_slice(&line),
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    received(&head);
    let target = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let body = if target.contains("/token") {
        format!(r#"{{"access_token":"{TOKEN}","expires_in":3599,"token_type":"Bearer"}}"#)
    } else if target.ends_with("/email") {
        "impostor@touchgate.invalid".to_owned()
    } else {
        "impostor".to_owned()
    };
    let _ = write!(
        w,
        "HTTP/1.0 200 OK\r\nMetadata-Flavor: Google\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn client(path: &Path) -> Result<(), String> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    write_frame_bytes(
        &mut s,
        &Hello {
            protocol: PROTOCOL_VERSION,
            software: "touchgate-impostor".into(),
        },
    )
    .map_err(|e| format!("cannot say hello: {e}"))?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .map_err(|e| format!("no answer to the hello: {e}"))?;
    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).min(MAX_FRAME)];
    s.read_exact(&mut body)
        .map_err(|e| format!("a short answer to the hello: {e}"))?;
    let reply: HelloReply =
        postcard::from_bytes(&body).map_err(|e| format!("the answer does not decode: {e}"))?;
    match reply {
        HelloReply::Hello(h) => say(&format!("hello from {}", h.software)),
        HelloReply::Error(e) => say(&format!("refused: {}", e.message)),
    }
    Ok(())
}
