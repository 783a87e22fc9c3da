//! What `touchgate setup` wired: gcloud's configuration and ADC file, and the
//! environment variables clients read.

use super::*;

/// What a credential file is, from its `type` alone.
enum Cred {
    /// The shim's `external_account` file: the shim address and profile it names.
    Touchgate {
        shim: Option<SocketAddr>,
        profile: String,
    },
    /// A long-lived secret in plain text (service-account key, refresh token).
    Plaintext(String),
    /// Another kind (another external_account, …): named by its type.
    Other(String),
    Unreadable(String),
}

fn classify(path: &Path) -> Cred {
    let bytes = match std::fs::read(path) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) => return Cred::Unreadable(format!("cannot read it: {}", e.kind())),
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Cred::Unreadable("not a JSON credential file".into());
    };
    let ty = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let ty = match ty {
        "service_account"
        | "authorized_user"
        | "impersonated_service_account"
        | "external_account"
        | "external_account_authorized_user"
        | "gdch_service_account" => ty.to_owned(),
        "" => return Cred::Unreadable("it has no type".into()),
        _ => "an unknown type".to_owned(),
    };
    let audience = v.get("audience").and_then(|a| a.as_str()).unwrap_or("");
    if ty == "external_account" && audience.starts_with("//touchgate.local/") {
        let profile = audience
            .strip_prefix("//touchgate.local/profile/")
            .map(printable)
            .unwrap_or_else(|| "(the shim's default)".into());
        let shim = v
            .get("token_url")
            .and_then(|u| u.as_str())
            .and_then(|u| u.strip_prefix("http://"))
            .and_then(|u| u.split('/').next())
            .and_then(|a| a.parse::<SocketAddr>().ok());
        return Cred::Touchgate { shim, profile };
    }
    match ty.as_str() {
        "service_account"
        | "authorized_user"
        | "impersonated_service_account"
        | "external_account_authorized_user"
        | "gdch_service_account" => Cred::Plaintext(ty),
        _ => Cred::Other(ty),
    }
}

/// Report on the credential file `path` (`what` names it); returns whether it is the shim's.
fn credential_file(r: &mut Report, what: &str, path: &Path, shim: Option<SocketAddr>) -> bool {
    let what = format!("{what} {}", path.display());
    match classify(path) {
        Cred::Touchgate {
            shim: named,
            profile,
        } => {
            match (named, shim) {
                (Some(n), Some(s)) if n == s => r.ok(format!(
                    "{what}: the shim's external_account credential (profile {profile}, shim {n})"
                )),
                (Some(n), Some(s)) => r.fail(
                    &what,
                    format!("names the shim at {n}, but the shim is expected at {s}"),
                    format!(
                        "run touchgate-shim serve --listen {n}, or export {SHIM_ADDR_ENV}={n}, or redo touchgate setup with the right {SHIM_ADDR_ENV}"
                    ),
                ),
                _ => r.fail(
                    &what,
                    "names no usable shim address",
                    "redo touchgate setup adc (or touchgate setup gcloud)",
                ),
            }
            true
        }
        Cred::Plaintext(ty) => {
            r.warn(
                &what,
                format!("a {ty} credential: a long-lived secret in plain text"),
                format!(
                    "touchgate import {}, then touchgate setup adc",
                    path.display()
                ),
            );
            false
        }
        Cred::Other(ty) => {
            r.warn(
                &what,
                format!("a {ty} credential, not touchgate's"),
                "touchgate setup adc",
            );
            false
        }
        Cred::Unreadable(why) => {
            r.fail(&what, why, "touchgate setup adc (or remove the file)");
            false
        }
    }
}

/// gcloud's configuration, the ADC file, GOOGLE_APPLICATION_CREDENTIALS and the
/// metadata variables; returns whether any of them relies on the shim.
pub(super) fn check(r: &mut Report, shim: Option<SocketAddr>) -> bool {
    let mut uses_shim = false;
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());

    // gcloud configuration `touchgate` (touchgate setup gcloud).
    match setup::gcloud_config_path() {
        Err(e) => r.fail("gcloud configuration", e, "set HOME or CLOUDSDK_CONFIG"),
        Ok(conf) => {
            let name = setup::GCLOUD_CONFIG_NAME;
            let what = format!("gcloud configuration {name} ({})", conf.display());
            match std::fs::read_to_string(&conf) {
                Err(_) => r.warn(&what, "not set up", "touchgate setup gcloud"),
                Ok(text) => {
                    let active = active_gcloud_config();
                    let cred = text.lines().find_map(|l| {
                        let (k, v) = l.split_once('=')?;
                        (k.trim() == "credential_file_override").then(|| PathBuf::from(v.trim()))
                    });
                    match cred {
                        None => r.warn(
                            &what,
                            "it sets no auth/credential_file_override",
                            "touchgate setup gcloud",
                        ),
                        Some(f) => {
                            uses_shim |=
                                credential_file(r, "gcloud configuration credential file", &f, shim)
                        }
                    }
                    if active == name {
                        r.ok(format!("{what}: active"));
                    } else {
                        r.warn(
                            &what,
                            format!("present but not active (active: {})", printable(&active)),
                            format!(
                                "gcloud config configurations activate {name}, or per command CLOUDSDK_ACTIVE_CONFIG_NAME={name} gcloud …"
                            ),
                        );
                    }
                }
            }
        }
    }

    // gcloud's application-default credentials file (touchgate setup adc).
    match setup::gcloud_adc_path() {
        Err(e) => r.fail("ADC file", e, "set HOME or CLOUDSDK_CONFIG"),
        Ok(adc) if !adc.exists() => r.warn(
            format!("ADC file {}", adc.display()),
            "none",
            "touchgate setup adc",
        ),
        Ok(adc) => uses_shim |= credential_file(r, "ADC file", &adc, shim),
    }

    // GOOGLE_APPLICATION_CREDENTIALS overrides the ADC file for the client libraries.
    match var("GOOGLE_APPLICATION_CREDENTIALS") {
        None => r.ok("GOOGLE_APPLICATION_CREDENTIALS not set (the ADC file is used)"),
        Some(p) => {
            let p = PathBuf::from(p);
            if p.exists() {
                uses_shim |= credential_file(r, "GOOGLE_APPLICATION_CREDENTIALS", &p, shim);
            } else {
                r.fail(
                    format!("GOOGLE_APPLICATION_CREDENTIALS {}", p.display()),
                    "no such file",
                    "unset GOOGLE_APPLICATION_CREDENTIALS, or point it at a touchgate-shim adc-file credential",
                );
            }
        }
    }

    // The metadata route: GCE_METADATA_* at the shim.
    let set: Vec<(&str, String)> = METADATA_VARS
        .iter()
        .filter_map(|k| var(k).map(|v| (*k, v.to_string_lossy().into_owned())))
        .collect();
    if set.is_empty() {
        r.ok("GCE_METADATA_ROOT/HOST/IP not set (metadata route unused; touchgate exec sets them per command)");
    }
    let shim_text = shim.map(|s| s.to_string());
    let mut metadata_at_shim = false;
    for (k, v) in &set {
        let at_shim = v.trim().parse::<SocketAddr>().ok() == shim
            || Some(v.trim().trim_start_matches("http://").trim_end_matches('/'))
                == shim_text.as_deref();
        if at_shim {
            uses_shim = true;
            metadata_at_shim |= *k == "GCE_METADATA_ROOT";
            r.ok(format!("{k}={} points at the shim", printable(v)));
        } else {
            r.warn(
                format!("{k}={}", printable(v)),
                "not the shim's address",
                format!(
                    "export {k}={}, or unset it",
                    shim_text.as_deref().unwrap_or("127.0.0.1:8946")
                ),
            );
        }
    }
    if metadata_at_shim {
        gce_cache(r);
        stored_account(r);
    }
    uses_shim
}

/// gcloud remembers for 10 minutes whether it is on GCE (`$CLOUDSDK_CONFIG/gce`):
/// after a run without the shim it will not ask the metadata server at all.
fn gce_cache(r: &mut Report) {
    let Ok(file) = setup::gcloud_dir().map(|d| d.join("gce")) else {
        return;
    };
    if std::fs::read_to_string(&file).is_ok_and(|t| t.trim() == "False") {
        r.warn(
            format!("gcloud's on-GCE cache {}", file.display()),
            "it says \"not on GCE\", so gcloud skips the metadata server for up to 10 minutes",
            format!("rm {}", file.display()),
        );
    }
}

/// The name of gcloud's active configuration (`CLOUDSDK_ACTIVE_CONFIG_NAME`,
/// else `$CLOUDSDK_CONFIG/active_config`, else `default`).
fn active_gcloud_config() -> String {
    if let Some(v) = std::env::var_os("CLOUDSDK_ACTIVE_CONFIG_NAME").filter(|v| !v.is_empty()) {
        return v.to_string_lossy().into_owned();
    }
    setup::gcloud_dir()
        .ok()
        .and_then(|d| std::fs::read_to_string(d.join("active_config")).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// An account stored in the active gcloud configuration takes precedence over
/// the metadata server: gcloud would not ask the shim.
fn stored_account(r: &mut Report) {
    let name = active_gcloud_config();
    let Ok(file) =
        setup::gcloud_dir().map(|d| d.join("configurations").join(format!("config_{name}")))
    else {
        return;
    };
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let mut in_core = false;
    let account = text.lines().find_map(|l| {
        let l = l.trim();
        if l.starts_with('[') {
            in_core = l == "[core]";
            return None;
        }
        let (k, v) = l.split_once('=')?;
        (in_core && k.trim() == "account" && !v.trim().is_empty()).then(|| v.trim().to_owned())
    });
    if let Some(account) = account {
        r.warn(
            format!("gcloud configuration {} ({})", printable(&name), file.display()),
            format!(
                "its stored account {} is used before the metadata server",
                printable(&account)
            ),
            "use the touchgate configuration (touchgate setup gcloud), or another CLOUDSDK_CONFIG for the metadata route",
        );
    }
}
