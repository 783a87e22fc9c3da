//! The typed messages spoken over the agent socket.
//!
//! Every connection starts with a [`Hello`] each way; after that the client sends
//! [`Request`]s and the agent answers each with one [`Response`]. Frames are
//! postcard-encoded (see [`crate::frame`]). Adding a variant at the end of an
//! enum is compatible; anything else bumps [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Version of this protocol. A peer with another version is refused with an error naming both.
pub const PROTOCOL_VERSION: u32 = 3;

/// First frame, both ways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// Free text, e.g. `touchgate 0.1.0`; for logs only.
    pub software: String,
}

impl Hello {
    pub fn ours(software: &str) -> Self {
        Hello {
            protocol: PROTOCOL_VERSION,
            software: software.to_owned(),
        }
    }
}

/// Who is asking, as the front end (CLI or shim) sees it. The agent also learns
/// the socket peer's uid/pid itself; this names the client program on whose
/// behalf a shim asks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CallerHint {
    /// e.g. `gcloud`, `python3 train.py`.
    pub program: Option<String>,
    pub pid: Option<u32>,
    /// Where a PIN dialog should appear: the caller's `DISPLAY`, `WAYLAND_DISPLAY`,
    /// terminal and `TERM`.
    pub display: Option<String>,
    pub wayland_display: Option<String>,
    pub tty: Option<String>,
    pub term: Option<String>,
}

impl CallerHint {
    /// The current process's display and terminal (for a PIN dialog), no program.
    pub fn from_env() -> CallerHint {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let tty = std::fs::read_link("/proc/self/fd/0")
            .ok()
            .map(|p| p.display().to_string())
            .filter(|p| p.starts_with("/dev/pts/") || p.starts_with("/dev/tty"));
        CallerHint {
            program: None,
            pid: None,
            display: var("DISPLAY"),
            wayland_display: var("WAYLAND_DISPLAY"),
            tty,
            term: var("TERM"),
        }
    }

    /// Does this hint name a program on whose behalf the connection asks?
    pub fn names_a_program(&self) -> bool {
        self.program.is_some() || self.pid.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Mint or reuse an access token. `profile: None` → the config's default profile;
    /// empty `scopes` → the profile's scopes.
    GetToken {
        profile: Option<String>,
        scopes: Vec<String>,
        caller: CallerHint,
    },
    Status,
    /// Drop every cached token and approval window.
    Lock,
    ListProfiles,
    /// Create a credential on the security key (needs a touch). `uv`: every later
    /// unseal needs user verification (PIN or built-in) too. `force` replaces an
    /// existing vault: first a touch on an enrolled, trusted key; the old vault
    /// is kept as a backup file.
    Enroll {
        force: bool,
        uv: bool,
        caller: CallerHint,
    },
    /// Seal an upstream credential (a Google service-account key, `authorized_user` or
    /// `impersonated_service_account` JSON) under the enrolled keys (needs a touch).
    Import {
        name: String,
        credential_json: Secret,
        caller: CallerHint,
    },
    /// The enrolled keys.
    ListKeys,
    /// Enrol one more key (a backup): a touch on an enrolled key, then two on the new one.
    AddKey {
        caller: CallerHint,
    },
    /// Forget an enrolled key, named by a prefix of its credential id (hex), after a
    /// touch on an enrolled, trusted key. The last key cannot be removed.
    RemoveKey {
        credential: String,
        caller: CallerHint,
    },
    /// Trust a key marked suspect again (e.g. after a counter went back), after a
    /// touch on another enrolled, trusted key.
    TrustKey {
        credential: String,
        caller: CallerHint,
    },
    /// Unlock a locked agent (needs a touch on an enrolled key).
    Unlock {
        caller: CallerHint,
    },
    /// Re-read the config file; a bad file is an error and the running config stays.
    Reload,
    /// Mint or reuse a Google-signed OpenID Connect ID token whose `aud` is
    /// `audience` (the metadata route's `identity`, `touchgate token --id-token`):
    /// the same policy, touch, windows, caching and audit as [`Request::GetToken`].
    /// `profile: None` → the config's default profile. The audience must pass
    /// [`check_audience`].
    GetIdToken {
        profile: Option<String>,
        audience: String,
        caller: CallerHint,
    },
    /// [`Request::GetToken`] from the kubectl exec plugin (`touchgate-shim
    /// kubectl-credential`), with the cluster kubectl will send the token to
    /// (None: kubectl did not say, or the cluster may not have a window). The
    /// agent keeps a kubectl window for it only when the profile has
    /// `kubectl_window` and the plugin was started by kubectl; otherwise this
    /// is a plain GetToken.
    GetKubectlToken {
        profile: Option<String>,
        cluster: Option<crate::kube::KubeCluster>,
        caller: CallerHint,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Token(TokenReply),
    Status(StatusReply),
    Locked {
        dropped_tokens: u32,
    },
    Profiles(Vec<ProfileInfo>),
    Enrolled(EnrolledReply),
    Imported {
        name: String,
        kind: String,
    },
    Error(ErrorReply),
    /// Progress, not an answer: the request waits for a touch on the security key.
    /// Zero or more of these come before the final response.
    TouchNeeded {
        prompt: String,
    },
    Keys(Vec<KeyInfo>),
    KeyRemoved {
        credential: String,
    },
    KeyTrusted {
        credential: String,
    },
    Unlocked,
    /// The config file was read again and is now in force.
    Reloaded {
        profiles: Vec<String>,
    },
    IdToken(IdTokenReply),
}

/// An ID token (a JWT signed by Google) for one audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdTokenReply {
    pub id_token: Secret,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    pub profile: String,
    pub audience: String,
    /// True when answered inside an approval window without a touch.
    pub from_cache: bool,
}

/// The longest ID-token audience accepted, in bytes (a URL or an OAuth client id
/// is far shorter; the cap keeps prompts, audit records and frames small).
pub const MAX_AUDIENCE: usize = 512;

/// Checks an ID-token audience before it reaches a prompt, a log or Google:
/// 1 to [`MAX_AUDIENCE`] bytes of printable ASCII, no space. The error is one
/// line and quotes nothing of the audience.
pub fn check_audience(audience: &str) -> Result<(), String> {
    if audience.is_empty() {
        return Err(
            "the ID-token audience is empty: pass the URL of the service to call (--audience URL)"
                .into(),
        );
    }
    if audience.len() > MAX_AUDIENCE {
        return Err(format!(
            "the ID-token audience is {} bytes long, over the limit of {MAX_AUDIENCE}: pass the \
             URL of the service to call",
            audience.len()
        ));
    }
    if !audience.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the ID-token audience holds a space, a control character or non-ASCII text: \
             pass the URL of the service to call"
                .into(),
        );
    }
    Ok(())
}

/// One enrolled security key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Hex of the first 8 bytes of the credential id.
    pub credential: String,
    pub key_name: String,
    pub aaguid: String,
    pub sign_count: u32,
    /// Unix seconds.
    pub created_at: u64,
    pub uv: bool,
    pub attestation: String,
    /// Why the key is not trusted, if it is not.
    pub suspect: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenReply {
    pub access_token: Secret,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    pub profile: String,
    pub scopes: Vec<String>,
    /// True when answered inside an approval window without a touch.
    pub from_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub agent_version: String,
    pub pid: u32,
    pub key_backend: String,
    pub enrolled: Option<EnrolledReply>,
    pub credentials: Vec<String>,
    pub profiles: Vec<ProfileInfo>,
    pub cached_tokens: u32,
    pub touches: u64,
    pub mints: u64,
    /// Why the agent is locked, when it is.
    pub locked: Option<String>,
    /// What in this agent's set-up weakens touchgate's promises (empty on a safe set-up).
    pub warnings: Vec<SecurityWarning>,
}

/// Something in an agent's set-up that weakens what touchgate promises. The
/// agent logs each at start; `touchgate status` prints them and `touchgate
/// doctor` fails on [`SecurityWarning::SoftKey`] and warns on the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityWarning {
    /// `backend = "soft"`: the software key keeps its secret in plain text in
    /// this file, so a copy of the state dir opens the vault without a touch.
    SoftKey { state_file: String },
    /// `allowed_aaguids` without `attestation_roots`: a key's model (AAGUID) is
    /// only what the key says of itself, so any key can claim a listed model.
    UnattestedAaguids,
    /// `[audit] on_failure = "allow"`: when the audit log cannot be written,
    /// tokens are still issued, and go unrecorded.
    AuditFailOpen,
}

impl std::fmt::Display for SecurityWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecurityWarning::SoftKey { state_file } => write!(
                f,
                "the software key (backend = \"soft\") keeps its secret in plain text in {state_file}: \
                 anyone with a copy of that file and the vault can mint tokens without a touch; \
                 for real use set backend = \"hid\" in [key] and enrol a security key"
            ),
            SecurityWarning::UnattestedAaguids => write!(
                f,
                "key.allowed_aaguids is set without key.attestation_roots: a key's model is only what \
                 the key says of itself, so any key can claim a listed AAGUID; add the vendor's root \
                 certificate to attestation_roots to enforce the list"
            ),
            SecurityWarning::AuditFailOpen => write!(
                f,
                "audit.on_failure = \"allow\": when the audit log cannot be written, tokens are still issued \
                 and go unrecorded; remove the setting to refuse them (the default)"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrolledReply {
    /// Hex of the first 8 bytes of the credential id.
    pub credential: String,
    pub aaguid: String,
    pub key_name: String,
    /// `enroll --force`: the file (0600) that keeps the vault it replaced.
    pub backup: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileInfo {
    pub name: String,
    pub credential: String,
    pub service_account: Option<String>,
    pub project: Option<String>,
    pub scopes: Vec<String>,
    /// `every-token` or a window such as `10m`.
    pub touch: String,
    pub lifetime_secs: u64,
    pub is_default: bool,
    /// An `every-token` profile's `kubectl_window`: how long the token a touch
    /// minted is handed again to one kubectl binary for one cluster.
    pub kubectl_window_secs: Option<u64>,
}

/// A typed error: a stable code for programs and a one-line message for people
/// (what is wrong and how to fix it). Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

/// The longest error message sent, in bytes: far under the frame cap, so an
/// error reply always fits in a frame whatever it quotes.
pub const MAX_ERROR_MESSAGE: usize = 4096;

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        // One line, always.
        if message.contains('\n') {
            message = message.lines().collect::<Vec<_>>().join("; ");
        }
        if message.len() > MAX_ERROR_MESSAGE {
            let mut end = MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        ErrorReply { code, message }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Hello carried another protocol version.
    VersionMismatch,
    /// A frame could not be decoded or exceeded the cap.
    BadFrame,
    /// The socket peer is another user.
    PeerRefused,
    /// Too many connections at once.
    Busy,
    NotEnrolled,
    AlreadyEnrolled,
    UnknownProfile,
    UnknownCredential,
    BadCredential,
    TouchDenied,
    TouchTimeout,
    /// PIN entry failed, the PIN was wrong or is blocked.
    Pin,
    /// The profile's rules refuse this caller or these scopes.
    PolicyRefused,
    /// The agent is locked; `touchgate unlock` (a touch) opens it.
    Locked,
    /// The key's answer failed verification (signature, challenge, counter).
    KeyVerification,
    Key,
    Upstream,
    Vault,
    Config,
    Internal,
    /// The request itself is malformed (e.g. an ID-token audience with control characters).
    BadRequest,
}

impl ErrorCode {
    /// A stable, lowercase name (for scripts and audit records).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::VersionMismatch => "version-mismatch",
            ErrorCode::BadFrame => "bad-frame",
            ErrorCode::PeerRefused => "peer-refused",
            ErrorCode::Busy => "busy",
            ErrorCode::NotEnrolled => "not-enrolled",
            ErrorCode::AlreadyEnrolled => "already-enrolled",
            ErrorCode::UnknownProfile => "unknown-profile",
            ErrorCode::UnknownCredential => "unknown-credential",
            ErrorCode::BadCredential => "bad-credential",
            ErrorCode::TouchDenied => "touch-denied",
            ErrorCode::TouchTimeout => "touch-timeout",
            ErrorCode::Pin => "pin",
            ErrorCode::PolicyRefused => "policy-refused",
            ErrorCode::Locked => "locked",
            ErrorCode::KeyVerification => "key-verification",
            ErrorCode::Key => "key",
            ErrorCode::Upstream => "upstream",
            ErrorCode::Vault => "vault",
            ErrorCode::Config => "config",
            ErrorCode::Internal => "internal",
            ErrorCode::BadRequest => "bad-request",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(v: &T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let bytes = postcard::to_stdvec(v).unwrap();
        let back: T = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&back, v);
    }

    fn profile() -> ProfileInfo {
        ProfileInfo {
            name: "inference".into(),
            credential: "default".into(),
            service_account: Some("sa@p.iam.gserviceaccount.com".into()),
            project: Some("p".into()),
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            touch: "10m".into(),
            lifetime_secs: 900,
            is_default: true,
            kubectl_window_secs: Some(300),
        }
    }

    fn enrolled() -> EnrolledReply {
        EnrolledReply {
            credential: "0011223344556677".into(),
            aaguid: "00000000-0000-0000-0000-000000000000".into(),
            key_name: "soft".into(),
            backup: Some("/s/vault.json.bak-1800000000".into()),
        }
    }

    #[test]
    fn hello_round_trips() {
        round_trip(&Hello::ours("touchgate 0.1.0"));
    }

    #[test]
    fn every_request_round_trips() {
        for r in [
            Request::GetToken {
                profile: Some("train".into()),
                scopes: vec!["a".into(), "b".into()],
                caller: CallerHint {
                    program: Some("gcloud".into()),
                    pid: Some(42),
                    display: Some(":0".into()),
                    wayland_display: None,
                    tty: Some("/dev/pts/3".into()),
                    term: Some("xterm".into()),
                },
            },
            Request::GetToken {
                profile: None,
                scopes: vec![],
                caller: CallerHint::default(),
            },
            Request::Status,
            Request::Lock,
            Request::ListProfiles,
            Request::Enroll {
                force: true,
                uv: true,
                caller: CallerHint::default(),
            },
            Request::Import {
                name: "default".into(),
                credential_json: Secret::new("{\"type\":\"service_account\"}"),
                caller: CallerHint::default(),
            },
            Request::ListKeys,
            Request::AddKey {
                caller: CallerHint::default(),
            },
            Request::RemoveKey {
                credential: "0011".into(),
                caller: CallerHint::default(),
            },
            Request::TrustKey {
                credential: "0011".into(),
                caller: CallerHint::default(),
            },
            Request::Unlock {
                caller: CallerHint::default(),
            },
            Request::Reload,
            Request::GetIdToken {
                profile: Some("run".into()),
                audience: "https://svc-abc-uc.a.run.app".into(),
                caller: CallerHint::default(),
            },
            Request::GetKubectlToken {
                profile: Some("deploy".into()),
                cluster: Some(crate::kube::KubeCluster {
                    server: "https://203.0.113.7".into(),
                    digest: "ab".repeat(32),
                }),
                caller: CallerHint::default(),
            },
            Request::GetKubectlToken {
                profile: None,
                cluster: None,
                caller: CallerHint::default(),
            },
        ] {
            round_trip(&r);
        }
    }

    #[test]
    fn every_response_round_trips() {
        for r in [
            Response::Token(TokenReply {
                access_token: Secret::new("ya29.x"),
                expires_at: 1_800_000_000,
                profile: "p".into(),
                scopes: vec!["s".into()],
                from_cache: true,
            }),
            Response::Status(StatusReply {
                agent_version: "0.1.0".into(),
                pid: 7,
                key_backend: "soft".into(),
                enrolled: Some(enrolled()),
                credentials: vec!["default".into()],
                profiles: vec![profile()],
                cached_tokens: 2,
                touches: 3,
                mints: 4,
                locked: Some("idle for 30m".into()),
                warnings: vec![
                    SecurityWarning::SoftKey {
                        state_file: "/s/soft-key.json".into(),
                    },
                    SecurityWarning::UnattestedAaguids,
                ],
            }),
            Response::Locked { dropped_tokens: 5 },
            Response::Profiles(vec![profile()]),
            Response::Enrolled(enrolled()),
            Response::Imported {
                name: "default".into(),
                kind: "service_account".into(),
            },
            Response::Error(ErrorReply::new(ErrorCode::TouchDenied, "denied")),
            Response::TouchNeeded {
                prompt: "touch your key: curl (pid 1) asks for profile `p`".into(),
            },
            Response::Keys(vec![KeyInfo {
                credential: "0011223344556677".into(),
                key_name: "security key /dev/hidraw3".into(),
                aaguid: "00000000-0000-0000-0000-000000000000".into(),
                sign_count: 7,
                created_at: 1_800_000_000,
                uv: false,
                attestation: "packed".into(),
                suspect: Some("counter went back from 9 to 3".into()),
            }]),
            Response::KeyRemoved {
                credential: "00".into(),
            },
            Response::KeyTrusted {
                credential: "00".into(),
            },
            Response::Unlocked,
            Response::Reloaded {
                profiles: vec!["inference".into(), "train".into()],
            },
            Response::IdToken(IdTokenReply {
                id_token: Secret::new("eyJ.x.y"),
                expires_at: 1_800_000_000,
                profile: "run".into(),
                audience: "https://svc-abc-uc.a.run.app".into(),
                from_cache: false,
            }),
        ] {
            round_trip(&r);
        }
    }

    #[test]
    fn every_error_code_round_trips_and_has_a_name() {
        use ErrorCode::*;
        let all = [
            VersionMismatch,
            BadFrame,
            PeerRefused,
            Busy,
            NotEnrolled,
            AlreadyEnrolled,
            UnknownProfile,
            UnknownCredential,
            BadCredential,
            TouchDenied,
            TouchTimeout,
            Pin,
            PolicyRefused,
            Locked,
            KeyVerification,
            Key,
            Upstream,
            Vault,
            Config,
            Internal,
            BadRequest,
        ];
        let mut names = std::collections::HashSet::new();
        for c in all {
            round_trip(&c);
            assert!(names.insert(c.as_str()), "duplicate name {}", c.as_str());
        }
    }

    #[test]
    fn error_messages_always_fit_in_a_frame() {
        let e = ErrorReply::new(ErrorCode::Internal, "é".repeat(crate::frame::MAX_FRAME));
        assert!(e.message.len() <= MAX_ERROR_MESSAGE + '…'.len_utf8());
        assert!(e.message.ends_with('…'));
        let b = postcard::to_stdvec(&Response::Error(e)).unwrap();
        assert!(b.len() < crate::frame::MAX_FRAME);
    }

    #[test]
    fn error_messages_are_one_line() {
        let e = ErrorReply::new(ErrorCode::Internal, "a\nb");
        assert_eq!(e.message, "a; b");
    }

    #[test]
    fn audiences_are_printable_and_bounded() {
        assert!(check_audience("https://svc-abc-uc.a.run.app").is_ok());
        assert!(check_audience("123-abc.apps.googleusercontent.com").is_ok());
        assert!(check_audience(&"a".repeat(MAX_AUDIENCE)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(MAX_AUDIENCE + 1),
            "https://x\n[touch approved]".into(),
            "https://x\u{1b}[2J".into(),
            "https://x y".into(),
            "https://x\u{0}".into(),
            "https://ünicode".into(),
        ] {
            let e = check_audience(&bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
            assert!(!e.contains("https://"), "quotes the audience: {e}");
        }
    }

    #[test]
    fn id_token_debug_hides_the_token() {
        let r = Response::IdToken(IdTokenReply {
            id_token: Secret::new("eyJSECRET"),
            expires_at: 0,
            profile: "p".into(),
            audience: "a".into(),
            from_cache: false,
        });
        assert!(!format!("{r:?}").contains("SECRET"));
    }

    #[test]
    fn token_debug_hides_the_token() {
        let r = Response::Token(TokenReply {
            access_token: Secret::new("ya29.SECRET"),
            expires_at: 0,
            profile: "p".into(),
            scopes: vec![],
            from_cache: false,
        });
        assert!(!format!("{r:?}").contains("SECRET"));
    }
}
