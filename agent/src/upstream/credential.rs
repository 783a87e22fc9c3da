//! Upstream credentials: what `touchgate import` reads from a Google key file
//! (service-account key or `authorized_user` ADC file) and what the vault seals.
//!
//! Parsing never lets a value from the file reach an error message: serde_json's
//! own messages can quote the offending value (a refresh token, a private key),
//! so every message here is built from field names, line and column only.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A credential file was refused. One line, never a value from the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// A Google credential touchgate can mint tokens from.
#[derive(Clone)]
pub enum UpstreamCredential {
    ServiceAccount(ServiceAccountKey),
    AuthorizedUser(AuthorizedUser),
}

/// A service-account key file (`"type": "service_account"`).
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: String,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) of an RSA key.
    pub private_key: SecretString,
    pub token_uri: Option<String>,
    pub project_id: Option<String>,
}

/// An `authorized_user` Application Default Credentials file (from
/// `gcloud auth application-default login`).
#[derive(Clone)]
pub struct AuthorizedUser {
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token: SecretString,
    pub token_uri: Option<String>,
    pub quota_project_id: Option<String>,
}

pub const SERVICE_ACCOUNT: &str = "service_account";
pub const AUTHORIZED_USER: &str = "authorized_user";

impl UpstreamCredential {
    /// Parses a Google credential JSON file.
    pub fn parse(json: &str) -> Result<Self, CredentialError> {
        let mut fields = serde_json::from_str::<Fields>(json)
            .map_err(|e| CredentialError(json_error_message(&e)))?
            .0;
        let kind = match fields.remove("type") {
            Some(Field::Str(s)) => s.expose_secret().to_owned(),
            Some(other) => return Err(unsupported(other.describe())),
            None => return Err(unsupported("(missing)".into())),
        };
        match kind.as_str() {
            SERVICE_ACCOUNT => {
                let mut f = FieldReader {
                    kind: SERVICE_ACCOUNT,
                    fields,
                };
                let key = ServiceAccountKey {
                    client_email: f.required_plain("client_email")?,
                    private_key_id: f.required_plain("private_key_id")?,
                    private_key: f.required_secret("private_key")?,
                    token_uri: f.optional_plain("token_uri")?,
                    project_id: f.optional_plain("project_id")?,
                };
                key.check_private_key()?;
                Ok(UpstreamCredential::ServiceAccount(key))
            }
            AUTHORIZED_USER => {
                let mut f = FieldReader {
                    kind: AUTHORIZED_USER,
                    fields,
                };
                Ok(UpstreamCredential::AuthorizedUser(AuthorizedUser {
                    client_id: f.required_plain("client_id")?,
                    client_secret: f.required_secret("client_secret")?,
                    refresh_token: f.required_secret("refresh_token")?,
                    token_uri: f.optional_plain("token_uri")?,
                    quota_project_id: f.optional_plain("quota_project_id")?,
                }))
            }
            other => Err(unsupported(format!("{:?}", one_line(other, 60)))),
        }
    }

    /// `"service_account"` or `"authorized_user"`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamCredential::ServiceAccount(_) => SERVICE_ACCOUNT,
            UpstreamCredential::AuthorizedUser(_) => AUTHORIZED_USER,
        }
    }

    /// Who tokens minted from this credential act as: the service account's
    /// email, or `user (client CLIENT_ID)` (an ADC file does not name the user).
    pub fn principal(&self) -> String {
        match self {
            UpstreamCredential::ServiceAccount(k) => k.client_email.clone(),
            UpstreamCredential::AuthorizedUser(u) => format!("user (client {})", u.client_id),
        }
    }

    /// The project the file names (`project_id` or `quota_project_id`), if any.
    pub fn project(&self) -> Option<&str> {
        match self {
            UpstreamCredential::ServiceAccount(k) => k.project_id.as_deref(),
            UpstreamCredential::AuthorizedUser(u) => u.quota_project_id.as_deref(),
        }
    }

    /// The token endpoint the file names, if any.
    pub fn token_uri(&self) -> Option<&str> {
        match self {
            UpstreamCredential::ServiceAccount(k) => k.token_uri.as_deref(),
            UpstreamCredential::AuthorizedUser(u) => u.token_uri.as_deref(),
        }
    }
}

impl ServiceAccountKey {
    /// The RSA private key. The error never shows any of the key.
    pub fn rsa_key(&self) -> Result<rsa::RsaPrivateKey, CredentialError> {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs8_pem(self.private_key.expose_secret()).map_err(|_| {
            CredentialError(format!(
                "the private_key of service account {} is not an RSA key in PKCS#8 PEM \
                 (-----BEGIN PRIVATE KEY-----): create a new key with `gcloud iam \
                 service-accounts keys create` and import that file unchanged",
                self.client_email
            ))
        })
    }

    fn check_private_key(&self) -> Result<(), CredentialError> {
        self.rsa_key().map(drop)
    }
}

fn unsupported(found: String) -> CredentialError {
    CredentialError(format!(
        "unsupported credential type {found}: touchgate imports Google \"service_account\" \
         key files and \"authorized_user\" ADC files"
    ))
}

/// serde_json's message can quote values from the file; use only where and what kind.
fn json_error_message(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let (line, column) = (e.line(), e.column());
    match e.classify() {
        Category::Eof => format!(
            "credential file ends early (line {line}, column {column}): the file is truncated; \
             download or copy it again"
        ),
        Category::Syntax => format!(
            "credential file is not valid JSON (syntax error at line {line}, column {column}): \
             import the file exactly as Google wrote it"
        ),
        Category::Data => format!(
            "credential file is not a JSON object (line {line}, column {column}): expected a \
             Google service-account key or authorized_user ADC file"
        ),
        Category::Io => "cannot read the credential file".to_owned(),
    }
}

/// Cuts a non-secret string to one printable line of at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

struct FieldReader {
    kind: &'static str,
    fields: BTreeMap<String, Field>,
}

impl FieldReader {
    fn missing(&self, name: &str) -> CredentialError {
        CredentialError(format!(
            "{} credential file has no \"{name}\" field: import the file exactly as Google \
             wrote it",
            self.kind
        ))
    }

    fn wrong_type(&self, name: &str, found: &Field) -> CredentialError {
        CredentialError(format!(
            "{} credential file: field \"{name}\" must be a string, not {}: import the file \
             exactly as Google wrote it",
            self.kind,
            found.describe()
        ))
    }

    fn optional_secret(&mut self, name: &str) -> Result<Option<SecretString>, CredentialError> {
        match self.fields.remove(name) {
            None | Some(Field::Null) => Ok(None),
            Some(Field::Str(s)) if s.expose_secret().is_empty() => Ok(None),
            Some(Field::Str(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(name, &other)),
        }
    }

    fn required_secret(&mut self, name: &str) -> Result<SecretString, CredentialError> {
        self.optional_secret(name)?
            .ok_or_else(|| self.missing(name))
    }

    fn optional_plain(&mut self, name: &str) -> Result<Option<String>, CredentialError> {
        Ok(self
            .optional_secret(name)?
            .map(|s| s.expose_secret().to_owned()))
    }

    fn required_plain(&mut self, name: &str) -> Result<String, CredentialError> {
        Ok(self.required_secret(name)?.expose_secret().to_owned())
    }
}

/// A top-level field of the file. Strings go straight into a `SecretString`;
/// other values are only described by type, never kept.
enum Field {
    Str(SecretString),
    Null,
    Other(&'static str),
}

impl Field {
    fn describe(&self) -> String {
        match self {
            Field::Str(_) => "a string".into(),
            Field::Null => "null".into(),
            Field::Other(t) => (*t).into(),
        }
    }
}

struct Fields(BTreeMap<String, Field>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<Field>()?;
                    out.insert(key, value);
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::Str(SecretString::from(v)))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Field, E> {
                let v = zeroize::Zeroizing::new(v);
                Ok(Field::Str(SecretString::from(v.as_str())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field, E> {
                Ok(Field::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field, E> {
                Ok(Field::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Field, E> {
                Ok(Field::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field, E> {
                Ok(Field::Other("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
                Ok(Field::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Field, E> {
                Ok(Field::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

const REDACTED: &str = "[REDACTED]";

impl fmt::Debug for UpstreamCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamCredential::ServiceAccount(k) => {
                f.debug_tuple("ServiceAccount").field(k).finish()
            }
            UpstreamCredential::AuthorizedUser(u) => {
                f.debug_tuple("AuthorizedUser").field(u).finish()
            }
        }
    }
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &format_args!("{REDACTED}"))
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .finish()
    }
}

impl fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("client_id", &self.client_id)
            .field("client_secret", &format_args!("{REDACTED}"))
            .field("refresh_token", &format_args!("{REDACTED}"))
            .field("token_uri", &self.token_uri)
            .field("quota_project_id", &self.quota_project_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn pem() -> &'static str {
        static PEM: OnceLock<String> = OnceLock::new();
        PEM.get_or_init(|| {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
            key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .unwrap()
                .to_string()
        })
    }

    fn sa_json() -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "proj-1",
            "private_key_id": "abc123",
            "private_key": pem(),
            "client_email": "bot@proj-1.iam.gserviceaccount.com",
            "client_id": "1234",
            "token_uri": "http://127.0.0.1:9/token",
            "universe_domain": "googleapis.com",
        })
        .to_string()
    }

    const AU: &str = r#"{
        "account": "",
        "client_id": "764086051850-x.apps.googleusercontent.com",
        "client_secret": "d-SECRET-client",
        "quota_project_id": "quota-p",
        "refresh_token": "1//REFRESH-secret",
        "type": "authorized_user",
        "universe_domain": "googleapis.com"
    }"#;

    #[test]
    fn parses_service_account() {
        let c = UpstreamCredential::parse(&sa_json()).unwrap();
        assert_eq!(c.kind(), "service_account");
        assert_eq!(c.principal(), "bot@proj-1.iam.gserviceaccount.com");
        assert_eq!(c.project(), Some("proj-1"));
        assert_eq!(c.token_uri(), Some("http://127.0.0.1:9/token"));
        let UpstreamCredential::ServiceAccount(k) = &c else {
            panic!("not an SA")
        };
        assert_eq!(k.private_key_id, "abc123");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
        assert!(
            dbg.contains("[REDACTED]") && dbg.contains("bot@proj-1"),
            "{dbg}"
        );
    }

    #[test]
    fn parses_authorized_user() {
        let c = UpstreamCredential::parse(AU).unwrap();
        assert_eq!(c.kind(), "authorized_user");
        assert_eq!(
            c.principal(),
            "user (client 764086051850-x.apps.googleusercontent.com)"
        );
        assert_eq!(c.project(), Some("quota-p"));
        assert_eq!(c.token_uri(), None);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("SECRET") && !dbg.contains("REFRESH"), "{dbg}");
        let UpstreamCredential::AuthorizedUser(u) = c else {
            panic!()
        };
        assert_eq!(u.refresh_token.expose_secret(), "1//REFRESH-secret");
    }

    #[test]
    fn unknown_and_missing_type() {
        let e = UpstreamCredential::parse(r#"{"type":"external_account"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported credential type \"external_account\": touchgate imports Google \
             \"service_account\" key files and \"authorized_user\" ADC files"
        );
        let e = UpstreamCredential::parse(r#"{"client_id":"x"}"#).unwrap_err();
        assert!(
            e.0.starts_with("unsupported credential type (missing)"),
            "{e}"
        );
        let e = UpstreamCredential::parse(r#"{"type":7}"#).unwrap_err();
        assert!(
            e.0.starts_with("unsupported credential type a number"),
            "{e}"
        );
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let e = UpstreamCredential::parse(&AU.replace("\"refresh_token\"", "\"x\"")).unwrap_err();
        assert!(e.0.contains("no \"refresh_token\" field"), "{e}");
        let e = UpstreamCredential::parse(
            r#"{"type":"authorized_user","client_id":"c","client_secret":["s3cr3t"],"refresh_token":"r"}"#,
        )
        .unwrap_err();
        assert!(
            e.0.contains("\"client_secret\" must be a string, not an array"),
            "{e}"
        );
        assert!(!e.0.contains("s3cr3t"));
        let mut v: serde_json::Value = serde_json::from_str(&sa_json()).unwrap();
        v.as_object_mut().unwrap().remove("client_email");
        let e = UpstreamCredential::parse(&v.to_string()).unwrap_err();
        assert!(
            e.0.starts_with("service_account credential file has no \"client_email\" field"),
            "{e}"
        );
    }

    #[test]
    fn bad_json_names_position_but_no_value() {
        let bad =
            "{\n  \"type\": \"authorized_user\",\n  \"refresh_token\": \"1//TOPSECRET\" \"x\"\n}";
        let e = UpstreamCredential::parse(bad).unwrap_err();
        assert!(e.0.contains("line 3"), "{e}");
        assert!(!e.0.contains("TOPSECRET"), "{e}");
        // A value of the wrong kind at the top, that serde would quote.
        let e = UpstreamCredential::parse("\"1//TOPSECRET\"").unwrap_err();
        assert!(e.0.contains("not a JSON object"), "{e}");
        assert!(!e.0.contains("TOPSECRET"), "{e}");
        let e = UpstreamCredential::parse(
            "{\"type\": \"authorized_user\", \"refresh_token\": \"1//TOPSE",
        )
        .unwrap_err();
        assert!(e.0.contains("ends early"), "{e}");
        assert!(!e.0.contains("TOPSE"), "{e}");
    }

    #[test]
    fn private_key_must_be_rsa_pkcs8() {
        let mut v: serde_json::Value = serde_json::from_str(&sa_json()).unwrap();
        v["private_key"] =
            "-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n-----END PRIVATE KEY-----\n".into();
        let e = UpstreamCredential::parse(&v.to_string()).unwrap_err();
        assert!(e.0.contains("not an RSA key in PKCS#8 PEM"), "{e}");
        assert!(!e.0.contains("SECRETSTUFF"), "{e}");
    }
}
