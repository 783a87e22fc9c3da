//! The shim: where it should listen and whether it answers.

use super::*;

/// Where the shim is expected: `$TOUCHGATE_SHIM_ADDR` or 127.0.0.1:8946.
pub(super) fn addr() -> Result<SocketAddr, String> {
    crate::exec::shared_shim_addr().ok_or_else(|| {
        format!(
            "{SHIM_ADDR_ENV}={} is not a loopback address",
            std::env::var(SHIM_ADDR_ENV).unwrap_or_default()
        )
    })
}

pub(super) fn check(r: &mut Report, addr: Result<SocketAddr, String>, used: bool) {
    let addr = match addr {
        Ok(a) => a,
        Err(why) => {
            r.fail(
                "shim address",
                why,
                format!("export {SHIM_ADDR_ENV}=127.0.0.1:8946 (or unset it)"),
            );
            return;
        }
    };
    let from = if std::env::var_os(SHIM_ADDR_ENV).is_some_and(|v| !v.is_empty()) {
        SHIM_ADDR_ENV
    } else {
        "default"
    };
    let what = format!("shim at {addr} ({from})");
    let bad = |r: &mut Report, why: String| {
        if used {
            r.fail(&what, why, START_SHIM);
        } else {
            r.warn(
                &what,
                format!("{why}; nothing set up here uses it (touchgate exec starts its own)"),
                START_SHIM,
            );
        }
    };
    match metadata_get(addr, "/computeMetadata/v1/project/project-id") {
        Ok((200, true, body)) => r.ok(format!("{what} answers: project {}", printable(&body))),
        Ok((404, true, _)) => r.warn(
            &what,
            "answers, but serves no project",
            "set project in the profile, or touchgate-shim serve --project ID",
        ),
        Ok((status, true, _)) => bad(r, format!("answers the project-id with HTTP {status}")),
        Ok((status, false, _)) => bad(
            r,
            format!("something else answers there (HTTP {status}, no Metadata-Flavor: Google)"),
        ),
        Err(e) => bad(r, e),
    }
}

/// A metadata GET on loopback with 2 s time-outs: (status, Metadata-Flavor: Google, body).
fn metadata_get(addr: SocketAddr, path: &str) -> Result<(u16, bool, String), String> {
    use touchgate::shim::MetadataGetError;
    use touchgate::tcp_owner::OwnerError;
    // Only our own listener is asked anything (another user's gets no request).
    let r = touchgate::shim::metadata_get(addr, path, TIMEOUT, TIMEOUT).map_err(|e| match e {
        MetadataGetError::Connect(OwnerError::NothingListens { .. }) => {
            "nothing listens there".to_owned()
        }
        MetadataGetError::Connect(OwnerError::Connect { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            "no answer within 2 s".to_owned()
        }
        MetadataGetError::Connect(OwnerError::Connect { source, .. }) => {
            format!("cannot connect: {source}")
        }
        MetadataGetError::Connect(e) => {
            format!("{e}; stop that listener or point {SHIM_ADDR_ENV} at your own shim")
        }
        e => e.to_string(),
    })?;
    Ok((r.status, r.flavored, r.body))
}
