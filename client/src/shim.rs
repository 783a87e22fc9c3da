//! The shim's contract with the other binaries: where it listens (`--listen`,
//! `$TOUCHGATE_SHIM_ADDR`, 127.0.0.1:8946) and the `external_account` credential
//! file (the ADC file) that sends Google's client libraries to it. The shim serves
//! what these say; `touchgate setup` and `touchgate exec` write and look for the same,
//! without running the shim to ask; [`metadata_get`] is how they ask a running one.
//!
//! Invariants: an address is loopback only (a token server must not be reachable
//! from the network); the ADC file names no project number and only the shim's own
//! URLs, and its audience names the profile ([`audience_profile`] reads it back).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::tcp_owner::{connect_own, OwnerError};

/// The shim's default port: `127.0.0.1:8946`.
pub const DEFAULT_PORT: u16 = 8946;
/// Environment variable naming the listen address (`127.0.0.1:PORT`).
pub const ADDR_ENV: &str = "TOUCHGATE_SHIM_ADDR";

/// The listen address: `--listen`, else `$TOUCHGATE_SHIM_ADDR`, else `127.0.0.1:8946`.
/// Loopback only: a token server must not be reachable from the network.
pub fn listen_addr(flag: Option<&str>) -> Result<SocketAddr, String> {
    let env = std::env::var(ADDR_ENV).ok().filter(|v| !v.is_empty());
    let (text, from) = match (flag, env.as_deref()) {
        (Some(f), _) => (f.to_owned(), "--listen"),
        (None, Some(e)) => (e.to_owned(), ADDR_ENV),
        (None, None) => {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)));
        }
    };
    parse_listen(&text).map_err(|e| format!("{from}: {e}"))
}

/// `127.0.0.1:PORT`, `[::1]:PORT`, `localhost:PORT` or a bare port (on 127.0.0.1).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let addr = if let Ok(port) = text.parse::<u16>() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    } else if let Some(port) = text.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("\"{text}\" is not HOST:PORT"))?;
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    } else {
        text.parse::<SocketAddr>()
            .map_err(|_| format!("\"{text}\" is not an address such as 127.0.0.1:{DEFAULT_PORT}"))?
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {addr}: touchgate-shim hands out tokens and listens on loopback only (127.0.0.1 or ::1)"
        ));
    }
    Ok(addr)
}

/// Audience prefix; the rest names the profile. `//touchgate.local/default` is
/// the shim's `--profile`, else the agent's default profile.
pub const AUDIENCE_PREFIX: &str = "//touchgate.local/profile/";
pub const AUDIENCE_DEFAULT: &str = "//touchgate.local/default";
pub const SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The profile an audience names: `Some(None)` for the default, `None` if not ours.
pub fn audience_profile(audience: &str) -> Option<Option<String>> {
    if audience == AUDIENCE_DEFAULT {
        return Some(None);
    }
    let name = audience.strip_prefix(AUDIENCE_PREFIX)?;
    (!name.is_empty() && !name.contains('/')).then(|| Some(name.to_owned()))
}

/// The `external_account` credential file pointing at a shim on `base`
/// (`http://127.0.0.1:PORT`), for `profile` (or the default).
pub fn adc_file(base: &str, profile: Option<&str>) -> serde_json::Value {
    let audience = match profile {
        Some(p) => format!("{AUDIENCE_PREFIX}{p}"),
        None => AUDIENCE_DEFAULT.to_owned(),
    };
    serde_json::json!({
        "type": "external_account",
        "audience": audience,
        "subject_token_type": SUBJECT_TOKEN_TYPE,
        "token_url": format!("{base}/sts/token"),
        "token_info_url": format!("{base}/token_info"),
        "credential_source": {
            "url": format!("{base}/subject"),
            "headers": {"Metadata-Flavor": "Google"},
            "format": {"type": "text"},
        },
        "universe_domain": crate::google::DEFAULT_UNIVERSE_DOMAIN,
    })
}

/// [`adc_file`] as the text `touchgate-shim adc-file` prints and `touchgate setup`
/// writes: pretty JSON and a newline.
pub fn adc_file_text(base: &str, profile: Option<&str>) -> String {
    format!("{:#}\n", adc_file(base, profile))
}

/// What a metadata server answered to [`metadata_get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataReply {
    /// The HTTP status.
    pub status: u16,
    /// Whether it said `Metadata-Flavor: Google` (a metadata server, not something else).
    pub flavored: bool,
    /// The body, at most 64 KiB of the reply, lossily UTF-8.
    pub body: String,
}

/// Why [`metadata_get`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum MetadataGetError {
    /// Nothing listens there, it does not answer, or another user's listener holds it.
    #[error(transparent)]
    Connect(#[from] OwnerError),
    #[error("no usable answer: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an HTTP answer")]
    NotHttp,
}

/// `GET path` with `Metadata-Flavor: Google` from the metadata server at `addr`, only if
/// the listener there is this user's own ([`connect_own`]: another user's gets no request).
/// `connect` bounds the connect, `io` each read and write.
pub fn metadata_get(
    addr: SocketAddr,
    path: &str,
    connect: Duration,
    io: Duration,
) -> Result<MetadataReply, MetadataGetError> {
    let mut s = connect_own(addr, connect)?;
    s.set_read_timeout(Some(io))?;
    s.set_write_timeout(Some(io))?;
    // One write: the request must not reach the server in pieces.
    s.write_all(
        format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(MetadataGetError::NotHttp)?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(MetadataGetError::NotHttp)?;
    let flavored = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("metadata-flavor") && v.trim() == "Google"
        })
    });
    Ok(MetadataReply {
        status,
        flavored,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert_eq!(
            parse_listen("127.0.0.1:9000").unwrap().to_string(),
            "127.0.0.1:9000"
        );
        assert_eq!(
            parse_listen("[::1]:9000").unwrap().to_string(),
            "[::1]:9000"
        );
        assert_eq!(
            parse_listen("localhost:1").unwrap().to_string(),
            "127.0.0.1:1"
        );
        assert_eq!(parse_listen("0").unwrap().to_string(), "127.0.0.1:0");
        let e = parse_listen("0.0.0.0:8946").unwrap_err();
        assert!(e.contains("loopback only"), "{e}");
        assert!(parse_listen("10.1.2.3:80").is_err());
        assert!(parse_listen("nonsense")
            .unwrap_err()
            .contains("not an address"));
    }

    #[test]
    fn the_adc_file_text_is_pretty_json_and_a_newline() {
        let f = adc_file("http://127.0.0.1:8946", None);
        let expected = serde_json::to_string_pretty(&f).unwrap() + "\n";
        assert_eq!(adc_file_text("http://127.0.0.1:8946", None), expected);
    }

    #[test]
    fn audiences_name_profiles() {
        assert_eq!(
            audience_profile("//touchgate.local/profile/train"),
            Some(Some("train".into()))
        );
        assert_eq!(audience_profile("//touchgate.local/default"), Some(None));
        assert_eq!(audience_profile("//touchgate.local/profile/"), None);
        assert_eq!(
            audience_profile("//iam.googleapis.com/projects/1/locations/global/x"),
            None
        );
    }

    #[test]
    fn the_adc_file_never_names_a_project_number() {
        let f = adc_file("http://127.0.0.1:8946", Some("inference"));
        assert_eq!(f["type"], "external_account");
        assert_eq!(f["token_url"], "http://127.0.0.1:8946/sts/token");
        assert_eq!(
            f["credential_source"]["url"],
            "http://127.0.0.1:8946/subject"
        );
        assert!(!f["audience"].as_str().unwrap().contains("/projects/"));
        assert_eq!(
            audience_profile(f["audience"].as_str().unwrap()),
            Some(Some("inference".into()))
        );
    }

    /// One loopback listener that answers one request with `reply`.
    fn answering(reply: &'static str) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
                req.push(byte[0]);
            }
            s.write_all(reply.as_bytes()).unwrap();
        });
        addr
    }

    #[test]
    fn metadata_get_reads_status_flavor_and_body() {
        let t = Duration::from_secs(5);
        let addr = answering("HTTP/1.0 200 OK\r\nmetadata-flavor:  Google\r\n\r\nmy-proj");
        let r = metadata_get(addr, "/computeMetadata/v1/project/project-id", t, t).unwrap();
        assert_eq!(
            (r.status, r.flavored, r.body.as_str()),
            (200, true, "my-proj")
        );
        let addr = answering("HTTP/1.0 404 Not Found\r\nServer: other\r\n\r\n");
        let r = metadata_get(addr, "/", t, t).unwrap();
        assert_eq!((r.status, r.flavored), (404, false));
        let addr = answering("SSH-2.0-OpenSSH\r\n");
        let e = metadata_get(addr, "/", t, t).unwrap_err();
        assert_eq!(e.to_string(), "not an HTTP answer");
    }
}
