//! The Google emulator over real HTTP on 127.0.0.1: does it check what Google
//! checks, and record what it saw without keeping tokens?

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use touchgate::secret::fingerprint;
use touchgate_agent::clock::unix;
use touchgate_agent::upstream::jwt;
use touchgate_tests::emulator::{Fault, FaultRule, VertexRole};
use touchgate_tests::{CallKind, Emulator, EmulatorHandle, EmulatorState};

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SA: &str = "runner@proj-1.iam.gserviceaccount.com";
const TARGET: &str = "trainer@proj-1.iam.gserviceaccount.com";

struct Env {
    emu: EmulatorHandle,
    state: Arc<EmulatorState>,
    http: reqwest::Client,
    base: String,
}

async fn env() -> Env {
    let emu = Emulator::start("127.0.0.1:0").await.unwrap();
    let state = emu.state();
    let base = emu.base_url();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Env {
        emu,
        state,
        http,
        base,
    }
}

/// (email, private_key_id, key) of a key file.
fn key_of(json: &str) -> (String, String, jwt::SigningKey) {
    let v: Value = serde_json::from_str(json).unwrap();
    let key = jwt::SigningKey::from_pkcs8_pem(v["private_key"].as_str().unwrap()).unwrap();
    (
        v["client_email"].as_str().unwrap().to_owned(),
        v["private_key_id"].as_str().unwrap().to_owned(),
        key,
    )
}

impl Env {
    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn jwt_grant(&self, assertion: &str) -> (u16, Value) {
        self.post_form(
            "/token",
            &[("grant_type", JWT_BEARER), ("assertion", assertion)],
        )
        .await
    }

    fn assertion(&self, key: &jwt::SigningKey, kid: &str, iss: &str, aud: &str) -> String {
        let claims = jwt::Claims::new(
            iss,
            &[CLOUD_PLATFORM.to_owned()],
            aud,
            unix(self.state.now()),
        );
        jwt::sign(key, kid, &claims).unwrap().to_string()
    }

    /// A cloud-platform token for service account `SA` via the jwt-bearer grant.
    async fn sa_token(&self) -> String {
        let (email, kid, key) = key_of(&self.state.add_service_account(SA));
        let (status, body) = self
            .jwt_grant(&self.assertion(&key, &kid, &email, &self.state.token_url()))
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn generate(&self, bearer: &str, target: &str, lifetime: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!(
                "{}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                self.base
            ))
            .bearer_auth(bearer)
            .json(&json!({"scope": [CLOUD_PLATFORM], "lifetime": lifetime}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn models(&self, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!(
            "{}/v1/projects/proj-1/locations/us-central1/models?alt=json&pageSize=100",
            self.base
        ));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn assert_oauth_error(status: u16, body: &Value, want_status: u16, error: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

#[tokio::test]
async fn jwt_bearer_grant_checks_signature_audience_and_time() {
    let e = env().await;
    let (email, kid, key) = key_of(&e.state.add_service_account(SA));
    let aud = e.state.token_url();

    let (status, body) = e.jwt_grant(&e.assertion(&key, &kid, &email, &aud)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"]
        .as_str()
        .unwrap()
        .starts_with("ya29.emu."));
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["token_type"], "Bearer");

    // Signed by a key the account does not have (same kid).
    let (_, _, other) = key_of(
        &e.state
            .add_service_account("stranger@proj-1.iam.gserviceaccount.com"),
    );
    let (status, body) = e.jwt_grant(&e.assertion(&other, &kid, &email, &aud)).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    assert_eq!(body["error_description"], "Invalid JWT Signature.");

    // Google's own token URL is an audience Google accepts wherever the grant
    // is posted (gcloud and google-auth sign for it).
    let (status, body) = e
        .jwt_grant(&e.assertion(&key, &kid, &email, "https://oauth2.googleapis.com/token"))
        .await;
    assert_eq!(status, 200, "{body}");

    // Wrong audience.
    let (status, body) = e
        .jwt_grant(&e.assertion(&key, &kid, &email, "https://token.example/token"))
        .await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("Failed audience check"));

    // Unknown kid: the emulator tries every key of the account.
    let (status, body) = e
        .jwt_grant(&e.assertion(&key, "no-such-kid", &email, &aud))
        .await;
    assert_eq!(status, 200, "{body}");

    // Unknown account.
    let (status, body) = e
        .jwt_grant(&e.assertion(&key, &kid, "ghost@proj-1.iam.gserviceaccount.com", &aud))
        .await;
    assert_oauth_error(status, &body, 400, "invalid_grant");

    // Expired by the emulator clock (issued 2 h ago).
    let old = jwt::Claims::new(
        &email,
        &[CLOUD_PLATFORM.into()],
        &aud,
        unix(e.state.now()) - 7200,
    );
    let (status, body) = e.jwt_grant(&jwt::sign(&key, &kid, &old).unwrap()).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("iat and exp"));

    // Too long-lived, and from the future.
    let mut long = jwt::Claims::new(&email, &[CLOUD_PLATFORM.into()], &aud, unix(e.state.now()));
    long.exp += 60;
    let (status, _) = e.jwt_grant(&jwt::sign(&key, &kid, &long).unwrap()).await;
    assert_eq!(status, 400);
    let future = jwt::Claims::new(
        &email,
        &[CLOUD_PLATFORM.into()],
        &aud,
        unix(e.state.now()) + 600,
    );
    let (status, _) = e.jwt_grant(&jwt::sign(&key, &kid, &future).unwrap()).await;
    assert_eq!(status, 400);

    // Garbage, and a deleted key.
    let (status, body) = e.jwt_grant("not.a.jwt").await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    assert!(e.state.delete_service_account_key(&email, &kid));
    let (status, body) = e.jwt_grant(&e.assertion(&key, &kid, &email, &aud)).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");

    // Other grant types and missing parameters.
    let (status, body) = e.post_form("/token", &[("grant_type", "password")]).await;
    assert_oauth_error(status, &body, 400, "unsupported_grant_type");
    let (status, body) = e.post_form("/token", &[("assertion", "x")]).await;
    assert_oauth_error(status, &body, 400, "invalid_request");

    assert_eq!(e.state.count_ok(CallKind::Token), 3);
    assert_eq!(e.state.count(CallKind::Token), 13);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn refresh_token_grant_and_revocation() {
    let e = env().await;
    let adc: Value = serde_json::from_str(&e.state.add_authorized_user("ada@example.com")).unwrap();
    assert_eq!(adc["type"], "authorized_user");
    assert_eq!(adc["token_uri"], e.state.token_url().as_str());
    let (client_id, secret, refresh) = (
        adc["client_id"].as_str().unwrap(),
        adc["client_secret"].as_str().unwrap(),
        adc["refresh_token"].as_str().unwrap(),
    );
    let grant = |s: &str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", client_id.to_owned()),
            ("client_secret", s.to_owned()),
            ("refresh_token", refresh.to_owned()),
        ]
    };
    let post = |f: Vec<(&'static str, String)>| {
        let http = e.http.clone();
        let url = format!("{}/token", e.base);
        async move {
            let r = http.post(url).form(&f).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    e.state.grant_vertex("ada@example.com", VertexRole::User);
    let (status, body) = post(grant(secret)).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert!(body["scope"].as_str().unwrap().contains(CLOUD_PLATFORM));
    assert_eq!(e.models(Some(&token)).await.0, 200);

    let (status, body) = post(grant("wrong-secret")).await;
    assert_oauth_error(status, &body, 401, "invalid_client");

    assert!(e.state.revoke_refresh_token(refresh));
    let (status, body) = post(grant(secret)).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    assert_eq!(
        body["error_description"],
        "Token has been expired or revoked."
    );
    // Access tokens minted from a revoked refresh token die with it.
    assert_eq!(e.models(Some(&token)).await.0, 401);

    let tokens = e.state.calls_of(CallKind::Token);
    assert_eq!(tokens.len(), 3);
    assert!(tokens
        .iter()
        .all(|c| c.grant_type.as_deref() == Some("refresh_token")));
    assert_eq!(tokens[0].principal.as_deref(), Some("ada@example.com"));
    assert_eq!(
        tokens[0].issued_fingerprint.as_deref(),
        Some(fingerprint(token.as_bytes()).as_str())
    );
    assert_eq!(tokens[2].principal.as_deref(), Some("ada@example.com"));
    assert_eq!(tokens[2].status, 400);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn generate_access_token_needs_the_grant_and_honours_lifetime() {
    let e = env().await;
    let base = e.sa_token().await;
    e.state.add_service_account(TARGET);

    // No binding yet.
    let (status, body) = e.generate(&base, TARGET, "300s").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(
        body["error"]["message"],
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    );

    e.state.grant_token_creator(SA, TARGET);
    let before = unix(e.state.now());
    let (status, body) = e.generate(&base, TARGET, "300s").await;
    let after = unix(e.state.now());
    assert_eq!(status, 200, "{body}");
    let token = body["accessToken"].as_str().unwrap().to_owned();
    let expire = time::OffsetDateTime::parse(
        body["expireTime"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expire = expire.unix_timestamp() as u64;
    assert!(
        (before + 300..=after + 300).contains(&expire),
        "{before} {expire} {after}"
    );
    // The issued token acts as the target.
    let issued = e.state.valid_access_token(&token).unwrap();
    assert_eq!(issued.principal, TARGET);
    e.state.grant_vertex(TARGET, VertexRole::Inference);
    assert_eq!(e.models(Some(&token)).await.0, 200);

    // Too long, unknown account, bad bearer, no bearer.
    let (status, body) = e.generate(&base, TARGET, "7200s").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    let (status, body) = e
        .generate(&base, "ghost@proj-1.iam.gserviceaccount.com", "300s")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    let (status, body) = e.generate("ya29.not-ours", TARGET, "300s").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

    let gen = e.state.calls_of(CallKind::GenerateAccessToken);
    assert_eq!(gen.len(), 5);
    assert_eq!(gen[1].status, 200);
    assert_eq!(gen[1].principal.as_deref(), Some(SA));
    assert_eq!(gen[1].target.as_deref(), Some(TARGET));
    assert_eq!(gen[1].lifetime_secs, Some(300));
    assert_eq!(
        gen[1].bearer_fingerprint.as_deref(),
        Some(fingerprint(base.as_bytes()).as_str())
    );
    assert_eq!(
        gen[1].issued_fingerprint.as_deref(),
        Some(fingerprint(token.as_bytes()).as_str())
    );
    assert_eq!(e.state.count_ok(CallKind::GenerateAccessToken), 1);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn delegation_chain_needs_every_hop() {
    let e = env().await;
    let base = e.sa_token().await;
    let middle = "middle@proj-1.iam.gserviceaccount.com";
    e.state.add_service_account(middle);
    e.state.add_service_account(TARGET);
    let ask = || {
        e.http
            .post(format!(
                "{}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken",
                e.base
            ))
            .bearer_auth(&base)
            .json(&json!({
                "scope": [CLOUD_PLATFORM],
                "delegates": [format!("projects/-/serviceAccounts/{middle}")],
            }))
            .send()
    };
    e.state.grant_token_creator(SA, middle);
    assert_eq!(ask().await.unwrap().status().as_u16(), 403);
    e.state.grant_token_creator(middle, TARGET);
    let r = ask().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn vertex_accepts_only_live_emulator_tokens() {
    let e = env().await;
    let token = e.sa_token().await;
    e.state.grant_vertex(SA, VertexRole::Inference);
    let (status, body) = e.models(Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"models": []}));

    let (status, body) = e.models(Some("ya29.unknown")).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access \
                        token, login cookie or other valid authentication credential. See \
                        https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "status": "UNAUTHENTICATED"
        }})
    );
    let (status, body) = e.models(None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");

    // A token without cloud-platform.
    let (narrow, _) = e.state.issue_access_token(
        SA,
        vec!["https://www.googleapis.com/auth/devstorage.read_only".into()],
        Duration::from_secs(600),
    );
    let (status, body) = e.models(Some(&narrow)).await;
    assert_eq!(status, 403, "{body}");

    // Expiry by the emulator clock.
    e.state.advance(Duration::from_secs(3590));
    assert_eq!(e.models(Some(&token)).await.0, 200);
    e.state.advance(Duration::from_secs(10));
    assert_eq!(e.models(Some(&token)).await.0, 401);

    // Unknown routes answer like Google.
    let r = e
        .http
        .get(format!("{}/v1/nope", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND");

    let vertex = e.state.calls_of(CallKind::Vertex);
    assert_eq!(vertex.len(), 6);
    assert_eq!(
        vertex[0].path,
        "/v1/projects/proj-1/locations/us-central1/models"
    );
    assert_eq!(vertex[0].query.as_deref(), Some("alt=json&pageSize=100"));
    assert_eq!(vertex[0].principal.as_deref(), Some(SA));
    assert_eq!(
        vertex[0].bearer_fingerprint.as_deref(),
        Some(fingerprint(token.as_bytes()).as_str())
    );
    assert_eq!(vertex[2].bearer_fingerprint, None);
    assert_eq!(e.state.count(CallKind::Other), 1);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_routes_and_records_never_hold_tokens() {
    let e = env().await;
    let admin = e.emu.client();
    let key = admin.add_service_account(SA).await.unwrap();
    let (email, kid, key) = key_of(&key);
    assert_eq!(email, SA);
    let adc = admin.add_authorized_user("ada@example.com").await.unwrap();
    let adc: Value = serde_json::from_str(&adc).unwrap();
    admin.add_service_account(TARGET).await.unwrap();
    admin.grant_token_creator(SA, TARGET).await.unwrap();
    assert!(e.state.has_token_creator(SA, TARGET));
    admin
        .grant_vertex(TARGET, VertexRole::Inference)
        .await
        .unwrap();
    assert!(e
        .state
        .vertex_permits(TARGET, "aiplatform.endpoints.predict"));
    assert!(!e
        .state
        .vertex_permits(TARGET, "aiplatform.customJobs.create"));

    let (_, body) = e
        .jwt_grant(&e.assertion(&key, &kid, &email, &e.state.token_url()))
        .await;
    let base = body["access_token"].as_str().unwrap().to_owned();
    let (_, body) = e.generate(&base, TARGET, "600s").await;
    let impersonated = body["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(e.models(Some(&impersonated)).await.0, 200);

    let t0 = admin.now().await.unwrap();
    admin.advance(Duration::from_secs(601)).await.unwrap();
    let t1 = admin.now().await.unwrap();
    assert!(t1.duration_since(t0).unwrap() >= Duration::from_secs(601));
    assert_eq!(e.models(Some(&impersonated)).await.0, 401);
    assert!(admin
        .revoke_refresh_token(adc["refresh_token"].as_str().unwrap())
        .await
        .unwrap());

    let calls = admin.calls().await.unwrap();
    assert_eq!(calls, e.state.calls());
    let admin_calls = calls.iter().filter(|c| c.kind == CallKind::Admin).count();
    // add SA ×2, add user, grant, Vertex grant, advance, revoke (GETs of calls/now are not
    // recorded).
    assert_eq!(admin_calls, 7);
    let dump = serde_json::to_string(&calls).unwrap();
    for secret in [
        base.as_str(),
        impersonated.as_str(),
        adc["refresh_token"].as_str().unwrap(),
        adc["client_secret"].as_str().unwrap(),
    ] {
        assert!(!dump.contains(secret), "records hold a secret");
    }
    assert!(!dump.contains("ya29."));
    assert!(dump.contains(&fingerprint(impersonated.as_bytes())));

    // Bad admin input is refused, Google-shaped.
    let r = e
        .http
        .post(format!("{}/__emulator/service-accounts", e.base))
        .json(&json!({"email": "no-at-sign"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn refuses_to_listen_beyond_loopback() {
    let err = Emulator::start("0.0.0.0:0").await.err().unwrap();
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

#[test]
fn binary_announces_writes_ready_file_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("emulator.url");
    let mut child = Command::new(crate::common::bin("touchgate-google-emulator"))
        .args(["--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("touchgate-google-emulator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    // The ready file is written (renamed into place) before the line is printed.
    assert_eq!(std::fs::read_to_string(&ready).unwrap().trim(), url);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = rt.block_on(async {
        let admin = touchgate_tests::EmulatorClient::new(&url);
        admin.add_authorized_user("ada@example.com").await.unwrap();
        admin.calls().await.unwrap().len()
    });
    assert_eq!(n, 1);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/__emulator/authorized-users"), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

const INF: &str = "inference@proj-1.iam.gserviceaccount.com";
const TRN: &str = "trainer@proj-1.iam.gserviceaccount.com";

impl Env {
    async fn vertex(
        &self,
        method: &str,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!(
            "{}/v1/projects/proj-1/locations/us-central1{path}",
            self.base
        );
        let mut req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        req = req.bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    fn token_for(&self, principal: &str) -> String {
        self.state
            .issue_access_token(
                principal,
                vec![CLOUD_PLATFORM.into()],
                Duration::from_secs(600),
            )
            .0
    }
}

fn denied(permission: &str, resource: &str) -> Value {
    json!({"error": {
        "code": 403,
        "message": format!(
            "Permission '{permission}' denied on resource '//aiplatform.googleapis.com/{resource}' \
             (or it may not exist)."
        ),
        "status": "PERMISSION_DENIED"
    }})
}

#[tokio::test]
async fn vertex_roles_decide_who_predicts_and_who_trains() {
    let e = env().await;
    let parent = "projects/proj-1/locations/us-central1";
    let job =
        json!({"displayName": "train-1", "jobSpec": {"workerPoolSpecs": [{"replicaCount": "1"}]}});
    let predict = json!({"instances": [{"x": 1}, {"x": 2}]});

    // No role at all: refused, Google-shaped.
    let nobody = e.token_for(SA);
    let (status, body) = e.vertex("GET", "/models", &nobody, None).await;
    assert_eq!(status, 403);
    assert_eq!(body, denied("aiplatform.models.list", parent));

    // Inference: list and predict, not train.
    e.state.grant_vertex(INF, VertexRole::Inference);
    let inf = e.token_for(INF);
    assert_eq!(e.vertex("GET", "/models", &inf, None).await.0, 200);
    let (status, body) = e
        .vertex("POST", "/endpoints/42:predict", &inf, Some(predict.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"].as_array().unwrap().len(), 2);
    assert_eq!(body["predictions"][1]["echo"], json!({"x": 2}));
    assert!(body["deployedModelId"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    let (status, body) = e
        .vertex("POST", "/customJobs", &inf, Some(job.clone()))
        .await;
    assert_eq!(status, 403);
    assert_eq!(body, denied("aiplatform.customJobs.create", parent));

    // Training: everything here.
    e.state.grant_vertex(TRN, VertexRole::Training);
    let trn = e.token_for(TRN);
    let (status, body) = e
        .vertex("POST", "/customJobs", &trn, Some(job.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["name"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{parent}/customJobs/")));
    assert_eq!(body["state"], "JOB_STATE_PENDING");
    assert_eq!(body["displayName"], "train-1");
    assert_eq!(
        e.vertex("POST", "/endpoints/42:predict", &trn, Some(predict.clone()))
            .await
            .0,
        200
    );

    // roles/aiplatform.user, granted over HTTP.
    e.emu
        .client()
        .grant_vertex("ada@example.com", VertexRole::User)
        .await
        .unwrap();
    let ada = e.token_for("ada@example.com");
    assert_eq!(
        e.vertex("POST", "/customJobs", &ada, Some(job.clone()))
            .await
            .0,
        200
    );
    let r = e
        .http
        .post(format!("{}/__emulator/vertex-grants", e.base))
        .json(&json!({"principal": SA, "role": "owner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Bad bodies, other methods, read-only tokens.
    let (status, body) = e
        .vertex("POST", "/endpoints/42:predict", &inf, Some(json!({})))
        .await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    let (status, _) = e
        .vertex("POST", "/customJobs", &trn, Some(json!({"jobSpec": {}})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = e
        .vertex("POST", "/endpoints/42:explain", &inf, Some(predict.clone()))
        .await;
    assert_eq!(status, 404);
    let (read_only, _) = e.state.issue_access_token(
        INF,
        vec!["https://www.googleapis.com/auth/cloud-platform.read-only".into()],
        Duration::from_secs(600),
    );
    assert_eq!(e.vertex("GET", "/models", &read_only, None).await.0, 200);
    assert_eq!(
        e.vertex("POST", "/endpoints/42:predict", &read_only, Some(predict))
            .await
            .0,
        403
    );
    e.state.revoke_vertex(INF, VertexRole::Inference);
    assert_eq!(e.vertex("GET", "/models", &inf, None).await.0, 403);

    // Every call recorded with its principal, permission and resource.
    let vertex = e.state.calls_of(CallKind::Vertex);
    assert_eq!(vertex[0].principal.as_deref(), Some(SA));
    assert_eq!(vertex[0].status, 403);
    assert_eq!(
        vertex[0].permission.as_deref(),
        Some("aiplatform.models.list")
    );
    assert_eq!(vertex[2].method, "POST");
    assert_eq!(vertex[2].principal.as_deref(), Some(INF));
    assert_eq!(
        vertex[2].permission.as_deref(),
        Some("aiplatform.endpoints.predict")
    );
    assert_eq!(
        vertex[2].resource.as_deref(),
        Some("projects/proj-1/locations/us-central1/endpoints/42")
    );
    assert_eq!(
        vertex[3].permission.as_deref(),
        Some("aiplatform.customJobs.create")
    );
    assert_eq!(vertex[3].resource.as_deref(), Some(parent));
    assert_eq!(vertex[4].principal.as_deref(), Some(TRN));
    assert_eq!(vertex[4].status, 200);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn lifetime_is_capped_at_an_hour_unless_extended() {
    let e = env().await;
    let base = e.sa_token().await;
    e.state.add_service_account(TARGET);
    e.state.grant_token_creator(SA, TARGET);
    assert_eq!(e.generate(&base, TARGET, "3600s").await.0, 200);
    let (status, body) = e.generate(&base, TARGET, "3601s").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "The lifetime must be between 1 and 3600 seconds (longer needs the org policy \
         constraints/iam.allowServiceAccountCredentialLifetimeExtension)."
    );

    e.emu
        .client()
        .allow_extended_lifetime(TARGET)
        .await
        .unwrap();
    let before = unix(e.state.now());
    let (status, body) = e.generate(&base, TARGET, "43200s").await;
    assert_eq!(status, 200, "{body}");
    let expire = time::OffsetDateTime::parse(
        body["expireTime"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp() as u64;
    assert!(
        (before + 43200..=before + 43202).contains(&expire),
        "{expire}"
    );
    let (status, body) = e.generate(&base, TARGET, "43201s").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "The lifetime must be between 1 and 43200 seconds."
    );
    // Only that account.
    e.state.add_service_account(INF);
    e.state.grant_token_creator(SA, INF);
    assert_eq!(e.generate(&base, INF, "7200s").await.0, 400);
    let lifetimes: Vec<_> = e
        .state
        .calls()
        .into_iter()
        .filter(|c| c.kind == CallKind::GenerateAccessToken && c.ok())
        .map(|c| c.lifetime_secs)
        .collect();
    assert_eq!(lifetimes, vec![Some(3600), Some(43200)]);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_scopes_are_refused_like_google() {
    let e = env().await;
    let (email, kid, key) = key_of(&e.state.add_service_account(SA));
    let claims = jwt::Claims::new(
        &email,
        &["cloud-platform".into()],
        &e.state.token_url(),
        unix(e.state.now()),
    );
    let (status, body) = e.jwt_grant(&jwt::sign(&key, &kid, &claims).unwrap()).await;
    assert_oauth_error(status, &body, 400, "invalid_scope");

    let base = e.sa_token().await;
    e.state.add_service_account(TARGET);
    e.state.grant_token_creator(SA, TARGET);
    let r = e
        .http
        .post(format!(
            "{}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken",
            e.base
        ))
        .bearer_auth(&base)
        .json(&json!({"scope": ["https://www.googleapis.com/auth/nonsense"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn faults_answer_in_order_then_run_out() {
    let e = env().await;
    let token = e.sa_token().await;
    e.state.grant_vertex(SA, VertexRole::Inference);
    e.state.inject(FaultRule {
        endpoint: CallKind::Vertex,
        fault: Fault::Status(503),
        times: 1,
    });
    e.state.inject(FaultRule {
        endpoint: CallKind::Vertex,
        fault: Fault::RateLimited {
            retry_after: Duration::from_secs(3),
        },
        times: 1,
    });
    e.state.inject(FaultRule {
        endpoint: CallKind::Vertex,
        fault: Fault::Reset,
        times: 1,
    });
    e.state.inject(FaultRule {
        endpoint: CallKind::Vertex,
        fault: Fault::Slow(Duration::from_millis(30)),
        times: 1,
    });
    // Another endpoint's faults leave Vertex alone.
    e.state.inject(FaultRule {
        endpoint: CallKind::GenerateAccessToken,
        fault: Fault::Status(500),
        times: 1,
    });
    let url = format!("{}/v1/projects/proj-1/locations/us-central1/models", e.base);
    let get = || e.http.get(&url).bearer_auth(&token).send();

    let r = get().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAVAILABLE");

    let r = get().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");

    let err = get().await.unwrap_err();
    assert!(!err.is_status(), "no answer at all: {err}");

    let started = std::time::Instant::now();
    assert_eq!(get().await.unwrap().status().as_u16(), 200);
    assert!(started.elapsed() >= Duration::from_millis(30));

    assert_eq!(get().await.unwrap().status().as_u16(), 200);
    assert_eq!(e.state.pending_faults().len(), 1);
    e.state.clear_faults();
    assert!(e.state.pending_faults().is_empty());

    let vertex: Vec<_> = e
        .state
        .calls_of(CallKind::Vertex)
        .into_iter()
        .map(|c| (c.status, c.fault))
        .collect();
    assert_eq!(
        vertex,
        vec![
            (503, Some("HTTP 503".to_owned())),
            (429, Some("HTTP 429, Retry-After 3".to_owned())),
            (0, Some("reset".to_owned())),
            (200, Some("slow 30ms".to_owned())),
            (200, None),
        ]
    );

    // Over HTTP too, and a slow answer does not hold up shutdown.
    e.emu
        .client()
        .inject(&FaultRule {
            endpoint: CallKind::Vertex,
            fault: Fault::Slow(Duration::from_secs(3600)),
            times: 1,
        })
        .await
        .unwrap();
    let pending = tokio::spawn(get());
    // Wait until the slow call is in (the fault is used up when it arrives).
    while !e.state.pending_faults().is_empty() {
        tokio::task::yield_now().await;
    }
    let started = std::time::Instant::now();
    e.emu.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    let r = pending.await.unwrap();
    assert!(r.map(|r| r.status().as_u16() == 503).unwrap_or(true));
}

/// The emulator's JWKS over HTTP, as a relying party fetches it.
async fn published_jwks(e: &Env) -> Value {
    let r = e
        .http
        .get(format!(
            "{}{}",
            e.base,
            touchgate_tests::emulator::JWKS_PATH
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn generate_id_token_needs_the_grant_and_signs_for_the_audience() {
    let e = env().await;
    let bearer = e.sa_token().await;
    e.state.add_service_account(TARGET);
    let url = format!(
        "{}/v1/projects/-/serviceAccounts/{TARGET}:generateIdToken",
        e.base
    );
    let ask = |body: Value| e.http.post(&url).bearer_auth(&bearer).json(&body).send();
    let r = ask(json!({"audience": "https://svc.example", "includeEmail": true}))
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no grant yet");
    e.state.grant_token_creator(SA, TARGET);
    let r = ask(json!({"includeEmail": true})).await.unwrap();
    assert_eq!(r.status(), 400, "the audience is required");
    let body: Value = ask(json!({"audience": "https://svc.example", "includeEmail": true}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap();
    let claims =
        touchgate_tests::emulator::verify_id_token(&published_jwks(&e).await, token, e.state.now())
            .unwrap();
    assert_eq!(claims["aud"], "https://svc.example");
    assert_eq!(claims["email"], TARGET);
    assert_eq!(claims["iss"], "https://accounts.google.com");
    let exp = claims["exp"].as_u64().unwrap();
    assert_eq!(exp - claims["iat"].as_u64().unwrap(), 3600);
    // Without includeEmail: no email claim.
    let body: Value = ask(json!({"audience": "https://svc.example"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bare = touchgate_tests::emulator::verify_id_token(
        &published_jwks(&e).await,
        body["token"].as_str().unwrap(),
        e.state.now(),
    )
    .unwrap();
    assert!(bare.get("email").is_none(), "{bare}");
    let calls = e.state.calls_of(CallKind::GenerateIdToken);
    assert_eq!(calls.len(), 4);
    assert_eq!(
        calls[2].issued_fingerprint.as_deref(),
        Some(fingerprint(token.as_bytes()).as_str())
    );
    drop(e.emu);
}

#[tokio::test]
async fn jwt_bearer_with_a_target_audience_answers_an_id_token_only() {
    let e = env().await;
    let (email, kid, key) = key_of(&e.state.add_service_account(SA));
    let claims = jwt::IdTokenClaims::new(
        &email,
        "https://svc.example",
        &e.state.token_url(),
        unix(e.state.now()),
    );
    let assertion = jwt::sign(&key, &kid, &claims).unwrap();
    let (status, body) = e.jwt_grant(&assertion).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    let claims = touchgate_tests::emulator::verify_id_token(
        &published_jwks(&e).await,
        body["id_token"].as_str().unwrap(),
        e.state.now(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "https://svc.example");
    assert_eq!(claims["email"], SA);
}

#[tokio::test]
async fn a_refresh_of_an_openid_login_carries_an_id_token_for_the_client() {
    let e = env().await;
    let adc: Value = serde_json::from_str(&e.state.add_authorized_user("ada@example.com")).unwrap();
    let (status, body) = e
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", adc["client_id"].as_str().unwrap()),
                ("client_secret", adc["client_secret"].as_str().unwrap()),
                ("refresh_token", adc["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());
    let claims = touchgate_tests::emulator::verify_id_token(
        &published_jwks(&e).await,
        body["id_token"].as_str().unwrap(),
        e.state.now(),
    )
    .unwrap();
    assert_eq!(claims["aud"], adc["client_id"]);
    assert_eq!(claims["email"], "ada@example.com");
}
