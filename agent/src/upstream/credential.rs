//! Upstream credentials: what `touchgate import` reads from a Google key file
//! (service-account key, `authorized_user` or `impersonated_service_account` ADC
//! file) and what the vault seals.
//!
//! Parsing never lets a value from the file reach an error message: serde_json's
//! own messages can quote the offending value (a refresh token, a private key),
//! so every message here is built from field names, line and column only.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::jwt::SigningKey;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use touchgate::text::one_line;

/// A credential file was refused. One line, never a value from the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// A Google credential touchgate can mint tokens from.
#[derive(Clone)]
pub enum UpstreamCredential {
    ServiceAccount(ServiceAccountKey),
    AuthorizedUser(AuthorizedUser),
    Impersonated(ImpersonatedServiceAccount),
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

/// An `impersonated_service_account` ADC file (from `gcloud auth
/// application-default login --impersonate-service-account SA`): a source
/// credential that mints a token for `target` with `generateAccessToken`.
///
/// Minting: the source credential's token (scope cloud-platform) asks
/// `generateAccessToken` for `target`, through `delegates`. When a profile names
/// a service account of its own, the file's target is not the end but a hop:
/// the source impersonates the profile's account with the delegation chain
/// `delegates…, target, profile delegates…` — the file says who the user acts as,
/// the profile what that identity may become. The profile's lifetime and scopes
/// apply to the final token either way.
#[derive(Clone)]
pub struct ImpersonatedServiceAccount {
    /// `authorized_user` or `service_account` (never itself impersonated).
    pub source: Box<UpstreamCredential>,
    /// The service account the file impersonates.
    pub target: String,
    /// `service_account_impersonation_url` as written in the file.
    pub impersonation_url: String,
    /// Delegates, as emails (the file may write `projects/-/serviceAccounts/EMAIL`).
    pub delegates: Vec<String>,
    pub quota_project_id: Option<String>,
}

/// How much [`UpstreamCredential`] parsing checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Every field, and that a private key parses.
    PrivateKey,
    /// Every field.
    Fields,
}

pub const SERVICE_ACCOUNT: &str = "service_account";
pub const AUTHORIZED_USER: &str = "authorized_user";
pub const IMPERSONATED_SERVICE_ACCOUNT: &str = "impersonated_service_account";

impl UpstreamCredential {
    /// Parses a Google credential JSON file.
    pub fn parse(json: &str) -> Result<Self, CredentialError> {
        Self::parse_checking(json, Check::PrivateKey)
    }

    /// Parses a credential that [`UpstreamCredential::parse`] accepted when
    /// it was sealed: the same, except that a service account's private key
    /// is not parsed again only to be checked (the mint parses it; a sealed
    /// entry cannot change without failing to decrypt). This is on every
    /// every-token issuance.
    pub fn parse_sealed(json: &str) -> Result<Self, CredentialError> {
        Self::parse_checking(json, Check::Fields)
    }

    fn parse_checking(json: &str, check: Check) -> Result<Self, CredentialError> {
        let fields = serde_json::from_str::<Fields>(json)
            .map_err(|e| CredentialError(json_error_message(&e)))?
            .0;
        Self::from_fields(fields, false, check)
    }

    fn from_fields(
        mut fields: BTreeMap<String, Field>,
        nested: bool,
        check: Check,
    ) -> Result<Self, CredentialError> {
        let kind = match fields.remove("type") {
            Some(Field::Str(s)) => s.expose_secret().to_owned(),
            Some(other) => return Err(unsupported(other.describe(), nested)),
            None => return Err(unsupported("(missing)".into(), nested)),
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
                if check == Check::PrivateKey {
                    key.check_private_key()?;
                }
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
            IMPERSONATED_SERVICE_ACCOUNT if !nested => {
                let mut f = FieldReader {
                    kind: IMPERSONATED_SERVICE_ACCOUNT,
                    fields,
                };
                let impersonation_url = f.required_plain("service_account_impersonation_url")?;
                let target = impersonation_target(&impersonation_url)?;
                let delegates = f
                    .optional_strings("delegates")?
                    .into_iter()
                    .map(|d| {
                        d.strip_prefix("projects/-/serviceAccounts/")
                            .map(str::to_owned)
                            .unwrap_or(d)
                    })
                    .collect();
                let quota_project_id = f.optional_plain("quota_project_id")?;
                let source = f.required_object("source_credentials")?;
                let source = Self::from_fields(source, true, check)?;
                Ok(UpstreamCredential::Impersonated(
                    ImpersonatedServiceAccount {
                        source: Box::new(source),
                        target,
                        impersonation_url,
                        delegates,
                        quota_project_id,
                    },
                ))
            }
            other => Err(unsupported(format!("{:?}", one_line(other, 60)), nested)),
        }
    }

    /// `"service_account"`, `"authorized_user"` or `"impersonated_service_account"`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamCredential::ServiceAccount(_) => SERVICE_ACCOUNT,
            UpstreamCredential::AuthorizedUser(_) => AUTHORIZED_USER,
            UpstreamCredential::Impersonated(_) => IMPERSONATED_SERVICE_ACCOUNT,
        }
    }

    /// Who tokens minted from this credential act as: the service account's
    /// email (the impersonated one for an impersonation file), or
    /// `user (client CLIENT_ID)` (an ADC file does not name the user).
    pub fn principal(&self) -> String {
        match self {
            UpstreamCredential::ServiceAccount(k) => k.client_email.clone(),
            UpstreamCredential::AuthorizedUser(u) => format!("user (client {})", u.client_id),
            UpstreamCredential::Impersonated(i) => i.target.clone(),
        }
    }

    /// The project the file names (`project_id` or `quota_project_id`), if any.
    pub fn project(&self) -> Option<&str> {
        match self {
            UpstreamCredential::ServiceAccount(k) => k.project_id.as_deref(),
            UpstreamCredential::AuthorizedUser(u) => u.quota_project_id.as_deref(),
            UpstreamCredential::Impersonated(i) => {
                i.quota_project_id.as_deref().or(i.source.project())
            }
        }
    }

    /// The project to bill API calls to (`x-goog-user-project`), if the file
    /// names one: an ADC file's `quota_project_id` (a service-account key's
    /// project is its own and needs no header).
    pub fn quota_project(&self) -> Option<&str> {
        match self {
            UpstreamCredential::ServiceAccount(_) => None,
            UpstreamCredential::AuthorizedUser(u) => u.quota_project_id.as_deref(),
            UpstreamCredential::Impersonated(i) => {
                i.quota_project_id.as_deref().or(i.source.quota_project())
            }
        }
    }

    /// The token endpoint the file names, if any (for an impersonation file, its
    /// source's).
    pub fn token_uri(&self) -> Option<&str> {
        match self {
            UpstreamCredential::ServiceAccount(k) => k.token_uri.as_deref(),
            UpstreamCredential::AuthorizedUser(u) => u.token_uri.as_deref(),
            UpstreamCredential::Impersonated(i) => i.source.token_uri(),
        }
    }
}

impl ImpersonatedServiceAccount {
    /// The IAM Credentials base URL the file points at: its impersonation URL
    /// up to `/v1/`.
    pub fn iam_credentials_base(&self) -> &str {
        self.impersonation_url
            .find("/v1/")
            .map(|i| &self.impersonation_url[..i])
            .unwrap_or(&self.impersonation_url)
    }
}

/// `…/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken` → `EMAIL`.
fn impersonation_target(url: &str) -> Result<String, CredentialError> {
    let bad = || {
        CredentialError(format!(
            "impersonated_service_account credential file: service_account_impersonation_url \
             {:?} is not an IAM Credentials generateAccessToken URL \
             (https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken): \
             import the file exactly as gcloud wrote it",
            one_line(url, 200)
        ))
    };
    let (_, rest) = url.split_once("/serviceAccounts/").ok_or_else(bad)?;
    let target = rest.strip_suffix(":generateAccessToken").ok_or_else(bad)?;
    let ok = !target.is_empty()
        && target.len() <= 254
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.-_+".contains(c));
    if ok && url.contains("/v1/") {
        Ok(target.to_owned())
    } else {
        Err(bad())
    }
}

impl ServiceAccountKey {
    /// The key that signs this account's JWTs. The error never shows any of the key.
    pub fn signing_key(&self) -> Result<SigningKey, CredentialError> {
        SigningKey::from_pkcs8_pem(self.private_key.expose_secret()).map_err(|e| {
            CredentialError(format!(
                "the private_key of service account {} {e}",
                one_line(&self.client_email, 100)
            ))
        })
    }

    fn check_private_key(&self) -> Result<(), CredentialError> {
        self.signing_key().map(drop)
    }
}

fn unsupported(found: String, nested: bool) -> CredentialError {
    if nested {
        return CredentialError(format!(
            "unsupported source_credentials type {found} in an impersonated_service_account \
             file: the source must be \"authorized_user\" or \"service_account\""
        ));
    }
    CredentialError(format!(
        "unsupported credential type {found}: touchgate imports Google \"service_account\" \
         key files and \"authorized_user\" or \"impersonated_service_account\" ADC files"
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
             Google service-account key or an authorized_user or impersonated_service_account \
             ADC file"
        ),
        Category::Io => "cannot read the credential file".to_owned(),
    }
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

    fn required_object(&mut self, name: &str) -> Result<BTreeMap<String, Field>, CredentialError> {
        match self.fields.remove(name) {
            Some(Field::Object(o)) => Ok(o),
            None | Some(Field::Null) => Err(self.missing(name)),
            Some(other) => Err(CredentialError(format!(
                "{} credential file: field \"{name}\" must be an object, not {}: import the \
                 file exactly as Google wrote it",
                self.kind,
                other.describe()
            ))),
        }
    }

    /// An array of strings (missing or null: empty).
    fn optional_strings(&mut self, name: &str) -> Result<Vec<String>, CredentialError> {
        let wrong = |kind: &str, found: &Field| {
            CredentialError(format!(
                "{kind} credential file: field \"{name}\" must be an array of strings, not \
                 {}: import the file exactly as Google wrote it",
                found.describe()
            ))
        };
        match self.fields.remove(name) {
            None | Some(Field::Null) => Ok(Vec::new()),
            Some(Field::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Field::Str(s) => Ok(s.expose_secret().to_owned()),
                    other => Err(wrong(self.kind, &other)),
                })
                .collect(),
            Some(other) => Err(wrong(self.kind, &other)),
        }
    }
}

/// A field of the file. Strings go straight into a `SecretString`; objects and
/// arrays keep their fields the same way (an impersonation file nests its source
/// credential); other values are only described by type, never kept.
enum Field {
    Str(SecretString),
    Null,
    Object(BTreeMap<String, Field>),
    Array(Vec<Field>),
    Other(&'static str),
}

/// Objects and arrays deeper than this are described, not kept.
const MAX_DEPTH: usize = 4;

impl Field {
    fn describe(&self) -> String {
        match self {
            Field::Str(_) => "a string".into(),
            Field::Null => "null".into(),
            Field::Object(_) => "an object".into(),
            Field::Array(_) => "an array".into(),
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
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Fields, A::Error> {
                read_map(map, 1).map(Fields)
            }
        }
        d.deserialize_map(V)
    }
}

fn read_map<'de, A: MapAccess<'de>>(
    mut map: A,
    depth: usize,
) -> Result<BTreeMap<String, Field>, A::Error> {
    let mut out = BTreeMap::new();
    while let Some(key) = map.next_key::<String>()? {
        let value = map.next_value_seed(FieldSeed { depth })?;
        out.insert(key, value);
    }
    Ok(out)
}

/// A [`Field`] at `depth` (the top-level object's fields are at depth 1).
struct FieldSeed {
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for FieldSeed {
    type Value = Field;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
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
        if self.depth >= MAX_DEPTH {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Field::Other("an array"));
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(FieldSeed {
            depth: self.depth + 1,
        })? {
            items.push(item);
        }
        Ok(Field::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        if self.depth >= MAX_DEPTH {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Field::Other("an object"));
        }
        read_map(map, self.depth + 1).map(Field::Object)
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
            UpstreamCredential::Impersonated(i) => f.debug_tuple("Impersonated").field(i).finish(),
        }
    }
}

impl fmt::Debug for ImpersonatedServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpersonatedServiceAccount")
            .field("source", &self.source)
            .field("target", &self.target)
            .field("impersonation_url", &self.impersonation_url)
            .field("delegates", &self.delegates)
            .field("quota_project_id", &self.quota_project_id)
            .finish()
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

    /// A test-only key (openssl genpkey, RSA 2048, PKCS#8), never used outside tests.
    fn pem() -> &'static str {
        include_str!("testdata/rsa-2048.pem")
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
             \"service_account\" key files and \"authorized_user\" or \
             \"impersonated_service_account\" ADC files"
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

    fn impersonated_json(source: serde_json::Value) -> String {
        serde_json::json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/inf@proj-1.iam.gserviceaccount.com:generateAccessToken",
            "delegates": ["projects/-/serviceAccounts/mid@proj-1.iam.gserviceaccount.com"],
            "quota_project_id": "billing-p",
            "source_credentials": source,
        })
        .to_string()
    }

    #[test]
    fn parses_impersonated_service_account() {
        let au: serde_json::Value = serde_json::from_str(AU).unwrap();
        let c = UpstreamCredential::parse(&impersonated_json(au)).unwrap();
        assert_eq!(c.kind(), "impersonated_service_account");
        assert_eq!(c.principal(), "inf@proj-1.iam.gserviceaccount.com");
        assert_eq!(c.project(), Some("billing-p"));
        assert_eq!(c.quota_project(), Some("billing-p"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("SECRET") && !dbg.contains("REFRESH"), "{dbg}");
        let UpstreamCredential::Impersonated(i) = &c else {
            panic!("not impersonated")
        };
        assert_eq!(i.target, "inf@proj-1.iam.gserviceaccount.com");
        assert_eq!(i.delegates, vec!["mid@proj-1.iam.gserviceaccount.com"]);
        assert_eq!(
            i.iam_credentials_base(),
            "https://iamcredentials.googleapis.com"
        );
        assert_eq!(i.source.kind(), "authorized_user");

        // A service-account source, no delegates, no quota project.
        let sa: serde_json::Value = serde_json::from_str(&sa_json()).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&impersonated_json(sa)).unwrap();
        v.as_object_mut().unwrap().remove("delegates");
        v.as_object_mut().unwrap().remove("quota_project_id");
        let c = UpstreamCredential::parse(&v.to_string()).unwrap();
        assert_eq!(c.quota_project(), None);
        assert_eq!(c.project(), Some("proj-1"));
        assert_eq!(c.token_uri(), Some("http://127.0.0.1:9/token"));
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn impersonated_service_account_refusals() {
        let au: serde_json::Value = serde_json::from_str(AU).unwrap();
        let good: serde_json::Value = serde_json::from_str(&impersonated_json(au.clone())).unwrap();
        let with = |k: &str, val: serde_json::Value| {
            let mut v = good.clone();
            v[k] = val;
            UpstreamCredential::parse(&v.to_string()).unwrap_err().0
        };
        let e = with("source_credentials", serde_json::Value::Null);
        assert_eq!(
            e,
            "impersonated_service_account credential file has no \"source_credentials\" \
             field: import the file exactly as Google wrote it"
        );
        let e = with("source_credentials", "1//TOPSECRET".into());
        assert!(e.contains("must be an object, not a string"), "{e}");
        assert!(!e.contains("TOPSECRET"), "{e}");
        let e = with(
            "source_credentials",
            serde_json::json!({"type": "impersonated_service_account"}),
        );
        assert_eq!(
            e,
            "unsupported source_credentials type \"impersonated_service_account\" in an \
             impersonated_service_account file: the source must be \"authorized_user\" or \
             \"service_account\""
        );
        let mut bad_source = au.clone();
        bad_source.as_object_mut().unwrap().remove("refresh_token");
        let e = with("source_credentials", bad_source);
        assert!(
            e.contains("authorized_user credential file has no \"refresh_token\""),
            "{e}"
        );
        let e = with(
            "service_account_impersonation_url",
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a/b:generateAccessToken".into(),
        );
        assert!(
            e.contains("is not an IAM Credentials generateAccessToken URL"),
            "{e}"
        );
        let e = with("delegates", serde_json::json!(["ok@p", 3]));
        assert!(
            e.contains("\"delegates\" must be an array of strings, not a number"),
            "{e}"
        );
    }

    /// The one-line error `parse` gives for a key file whose `private_key` is `pem`.
    fn key_error(pem: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(&sa_json()).unwrap();
        v["private_key"] = pem.into();
        let e = UpstreamCredential::parse(&v.to_string()).unwrap_err().0;
        assert!(!e.contains('\n'), "not one line: {e}");
        assert!(!e.contains("PRIVATE KEY-----\n"), "{e}");
        assert!(
            e.contains("private_key of service account bot@proj-1.iam.gserviceaccount.com"),
            "{e}"
        );
        e
    }

    #[test]
    fn private_key_under_2048_bits_is_refused() {
        let e = key_error(include_str!("testdata/rsa-1024.pem"));
        assert!(e.contains("shorter than 2048 bits"), "{e}");
        assert!(e.contains("gcloud iam service-accounts keys create"), "{e}");
    }

    #[test]
    fn private_key_in_pkcs1_is_refused_with_the_conversion() {
        let e = key_error(include_str!("testdata/rsa-2048-pkcs1.pem"));
        assert!(
            e.contains("PKCS#1 (-----BEGIN RSA PRIVATE KEY-----)"),
            "{e}"
        );
        assert!(e.contains("openssl pkcs8 -topk8 -nocrypt"), "{e}");
    }

    #[test]
    fn private_key_that_is_not_rsa_is_refused() {
        let e = key_error(include_str!("testdata/ec-p256.pem"));
        assert!(e.contains("not an RSA key"), "{e}");
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

    /// A sealed credential was checked when sealed: unsealing it checks its
    /// fields again but does not parse the private key only to check it.
    #[test]
    fn a_sealed_credential_is_not_checked_twice() {
        let mut v: serde_json::Value = serde_json::from_str(&sa_json()).unwrap();
        v["private_key"] = include_str!("testdata/rsa-1024.pem").into();
        let text = v.to_string();
        assert!(UpstreamCredential::parse(&text).is_err());
        assert!(UpstreamCredential::parse_sealed(&text).is_ok());
        v["client_email"] = serde_json::Value::Null;
        let e = UpstreamCredential::parse_sealed(&v.to_string()).unwrap_err();
        assert!(e.0.contains("client_email"), "{e}");
    }
}
