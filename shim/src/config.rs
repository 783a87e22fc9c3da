//! Where the shim listens, and what it says about the project.

use std::net::{Ipv4Addr, SocketAddr};

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

/// A stable 12-digit project number for a project id (GCE's `numeric-project-id`
/// must be digits; clients only check its shape). FNV-1a, so it never changes.
pub fn derived_project_number(project: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    100_000_000_000 + h % 900_000_000_000
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
    fn project_numbers_are_stable_twelve_digits() {
        let n = derived_project_number("touchgate-test");
        assert_eq!(n, derived_project_number("touchgate-test"));
        assert_ne!(n, derived_project_number("other"));
        assert_eq!(n.to_string().len(), 12);
    }
}
