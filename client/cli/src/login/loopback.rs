//! The loopback redirect of the installed-app flow: a tiny HTTP/1.1 server on
//! `127.0.0.1:<random port>` that waits for the browser to come back with
//! `?code=…&state=…` (or `?error=…`). Each connection is served on its own task:
//! browsers open speculative connections that never send a request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// Longest request head we read.
const MAX_HEAD: usize = 16 * 1024;
/// How long one connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Loopback {
    listener: TcpListener,
    port: u16,
}

/// What the browser brought back.
enum Answer {
    Code(Zeroizing<String>),
    Error(String),
}

impl Loopback {
    pub async fn bind() -> anyhow::Result<Loopback> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on 127.0.0.1 for the login redirect: {e}")
        })?;
        let port = listener.local_addr()?.port();
        Ok(Loopback { listener, port })
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Serves until a redirect carrying `state` arrives or `timeout` passes;
    /// returns its code. Redirects with another state are answered 400 and
    /// ignored (they belong to no login of ours).
    pub async fn wait(self, state: &str, timeout: Duration) -> anyhow::Result<Zeroizing<String>> {
        let (tx, mut rx) = mpsc::channel::<Answer>(4);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tasks = tokio::task::JoinSet::new();
        let answer = loop {
            tokio::select! {
                _ = &mut deadline => anyhow::bail!(
                    "no answer from the browser within {} minutes: run touchgate login again and \
                     open the printed URL in a browser on this machine (elsewhere: touchgate login \
                     --no-browser)",
                    timeout.as_secs() / 60
                ),
                Some(answer) = rx.recv() => break answer,
                accepted = self.listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    if !peer.ip().is_loopback() {
                        continue;
                    }
                    let (tx, state) = (tx.clone(), state.to_owned());
                    tasks.spawn(async move {
                        let _ = tokio::time::timeout(READ_TIMEOUT, serve(stream, &state, tx)).await;
                    });
                }
            }
        };
        tasks.abort_all();
        match answer {
            Answer::Code(code) => Ok(code),
            Answer::Error(e) if e == "access_denied" => anyhow::bail!(
                "access was declined in the browser: run touchgate login again and allow access"
            ),
            Answer::Error(e) => anyhow::bail!(
                "the browser came back with error {e:?} instead of a code: run touchgate login again"
            ),
        }
    }
}

async fn serve(mut stream: TcpStream, state: &str, tx: mpsc::Sender<Answer>) {
    let Some(target) = read_request_target(&mut stream).await else {
        let _ = respond(&mut stream, 400, "Bad Request", "Bad request.").await;
        return;
    };
    let query = Query::parse(&target);
    let (status, reason, body, answer) = match (&query.code, &query.error, &query.state) {
        (None, None, _) => (404, "Not Found", "Not found.", None),
        (_, _, s) if s.as_deref().map(|s| s.as_bytes()) != Some(state.as_bytes()) => {
            eprintln!(
                "touchgate: ignored a redirect that does not belong to this login (wrong state)"
            );
            (
                400,
                "Bad Request",
                "This answer does not belong to the touchgate login in progress; it was ignored.",
                None,
            )
        }
        (_, Some(error), _) => (
            200,
            "OK",
            "touchgate: the login was not allowed. You can close this tab.",
            Some(Answer::Error(error.as_str().to_owned())),
        ),
        (Some(code), None, _) => (
            200,
            "OK",
            "touchgate received the login. You can close this tab and return to the terminal.",
            Some(Answer::Code(code.clone())),
        ),
    };
    let _ = respond(&mut stream, status, reason, body).await;
    if let Some(a) = answer {
        let _ = tx.send(a).await;
    }
}

/// The request target of a `GET` request, once its head has arrived.
async fn read_request_target(stream: &mut TcpStream) -> Option<Zeroizing<String>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_HEAD));
    let mut chunk = Zeroizing::new([0u8; 2048]);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk[..]).await.ok()?;
        if n == 0 || buf.len() + n > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    (method == "GET" && target.starts_with('/') && version.starts_with("HTTP/1."))
        .then(|| Zeroizing::new(target.to_owned()))
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    text: &str,
) -> std::io::Result<()> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>touchgate</title></head>\
         <body><p>{text}</p></body></html>"
    );
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The parameters of a redirect, decoded (and zeroized on drop).
#[derive(Default)]
struct Query {
    code: Option<Zeroizing<String>>,
    error: Option<Zeroizing<String>>,
    state: Option<Zeroizing<String>>,
}

impl Query {
    fn parse(target: &str) -> Query {
        let mut q = Query::default();
        let Some((_, query)) = target.split_once('?') else {
            return q;
        };
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(v) = form_decode(v) else { continue };
            match k {
                "code" => q.code = Some(v),
                "error" => q.error = Some(v),
                "state" => q.state = Some(v),
                _ => {}
            }
        }
        q
    }
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn form_decode(s: &str) -> Option<Zeroizing<String>> {
    let b = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(b.len()));
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    let text = std::str::from_utf8(&out).ok()?;
    Some(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_parameters_are_decoded() {
        let q = Query::parse("/?state=abc&code=4%2F0Aemu-x_y&scope=openid+email");
        assert_eq!(q.code.as_deref().map(|s| s.as_str()), Some("4/0Aemu-x_y"));
        assert_eq!(q.state.as_deref().map(|s| s.as_str()), Some("abc"));
        assert!(q.error.is_none());
        let q = Query::parse("/favicon.ico");
        assert!(q.code.is_none() && q.state.is_none());
        assert!(form_decode("%zz").is_none());
        assert!(form_decode("%4").is_none());
        assert_eq!(form_decode("a+b%20c").unwrap().as_str(), "a b c");
    }
}
