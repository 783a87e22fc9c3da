//! ID tokens through the shim's metadata route
//! (`…/service-accounts/default/identity?audience=AUD`), for the real gcloud
//! (`auth print-identity-token --audiences`), Python google-auth
//! (`id_token.fetch_id_token`) and Node google-auth-library
//! (`getIdTokenClient`). Each token is verified against the emulator's JWKS:
//! signature, `aud`, `email` (the profile's service account), `exp`. The
//! attacks on the new route come first.

use crate::common;
use crate::shim_common;

use std::process::Command;
use std::time::SystemTime;

use common::*;
use serde_json::Value;
use shim_common::*;
use touchgate_tests::emulator::{verify_id_token, CallKind, JWKS_PATH};
use touchgate_tests::EmulatorHandle;

const AUD: &str = "https://hello-abc123-uc.a.run.app";
const IDENTITY: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";

async fn assert_valid(emu: &EmulatorHandle, token: &str, shim: &ShimProc) {
    let jwks: Value = reqwest::get(format!("{}{JWKS_PATH}", emu.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = verify_id_token(&jwks, token.trim(), SystemTime::now()).unwrap_or_else(|e| {
        panic!(
            "the ID token does not verify ({e}): {token:?}\nshim: {}",
            shim.stderr()
        )
    });
    assert_eq!(claims["aud"], AUD, "{claims}");
    assert_eq!(claims["email"], INFERENCE, "{claims}");
    assert_eq!(
        emu.state().count_ok(CallKind::GenerateIdToken),
        1,
        "one generateIdToken; shim: {}",
        shim.stderr()
    );
}

async fn identity(shim: &ShimProc, query: &str, flavored: bool) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{}{IDENTITY}{query}", shim.url));
    if flavored {
        req = req.header("Metadata-Flavor", "Google");
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_identity_route_refuses_what_could_forge_a_prompt_and_needs_the_header() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "10m");
    let shim = ShimProc::start(&agent.socket, &[]);
    let long = "a".repeat(touchgate::MAX_AUDIENCE + 1);
    for query in [
        String::new(),
        "?audience=".into(),
        "?audience=https%3A%2F%2Fx%0Atouch%20approved".into(),
        "?audience=https%3A%2F%2Fx%1B%5B2K".into(),
        "?audience=https%3A%2F%2Fx%20y".into(),
        format!("?audience={long}"),
        "?audience=%zz".into(),
    ] {
        let (status, body) = identity(&shim, &query, true).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body.trim_end().lines().count(), 1, "{query}: {body}");
        assert!(body.starts_with("touchgate: "), "{query}: {body}");
    }
    let (status, _) = identity(&shim, &format!("?audience={AUD}"), false).await;
    assert_eq!(status, 403, "no Metadata-Flavor header");
    // gcloud's bookkeeping ask at every token refresh: "not found", as before
    // ID tokens were served, so it costs an every-token profile no touch.
    let gcloud_own = format!(
        "?audience={}&format=standard&licenses=FALSE",
        touchgate::google::GCLOUD_CLIENT_ID
    );
    let (status, _) = identity(&shim, &gcloud_own, true).await;
    assert_eq!(status, 404);
    assert_eq!(
        emu.state().count(CallKind::GenerateIdToken),
        0,
        "nothing minted"
    );
    // A good one, after all that.
    let (status, token) = identity(&shim, &format!("?audience={AUD}&format=full"), true).await;
    assert_eq!(status, 200, "{token}");
    assert_valid(&emu, &token, &shim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcloud_prints_an_identity_token_through_the_metadata_route() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "10m");
    let shim = ShimProc::start(&agent.socket, &[]);
    let config = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("gcloud");
    touchgate_tests::gcloud::isolate(&mut cmd)
        .args([
            "auth",
            "print-identity-token",
            &format!("--audiences={AUD}"),
        ])
        .env("CLOUDSDK_CONFIG", config.path())
        .env("GCE_METADATA_ROOT", &shim.addr);
    let o = run(cmd).await;
    assert!(
        o.status.success(),
        "gcloud auth print-identity-token failed (is gcloud installed?): {}\nshim: {}",
        stderr(&o),
        shim.stderr()
    );
    assert_valid(&emu, &stdout(&o), &shim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn google_auth_fetches_an_id_token_through_the_metadata_route() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "10m");
    let shim = ShimProc::start(&agent.socket, &[]);
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(crate::shim_python::python());
    cmd.args([
        "-c",
        "import sys, google.auth.transport.requests as r, google.oauth2.id_token as i; \
         print(i.fetch_id_token(r.Request(), sys.argv[1]))",
        AUD,
    ])
    .env("HOME", home.path())
    .env("CLOUDSDK_CONFIG", home.path().join("gcloud"))
    .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
    .env("GCE_METADATA_HOST", &shim.addr)
    .env("GCE_METADATA_IP", &shim.addr)
    .env("NO_PROXY", "127.0.0.1,localhost");
    let o = run(cmd).await;
    assert!(
        o.status.success(),
        "fetch_id_token failed: {}\nshim: {}",
        stderr(&o),
        shim.stderr()
    );
    assert_valid(&emu, &stdout(&o), &shim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_get_id_token_client_gets_an_id_token_through_the_metadata_route() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "10m");
    let shim = ShimProc::start(&agent.socket, &[]);
    let home = tempfile::tempdir().unwrap();
    // google-auth-library from scripts/node-modules.sh (checked there).
    let mut cmd = crate::shim_node::node();
    cmd.args([
        "-e",
        "const {GoogleAuth} = require('google-auth-library');\
         (async () => {\
           const client = await new GoogleAuth().getIdTokenClient(process.argv[1]);\
           console.log(await client.idTokenProvider.fetchIdToken(process.argv[1]));\
         })().catch(e => { console.error(String(e)); process.exit(1); });",
        AUD,
    ])
    .env("HOME", home.path())
    .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
    // README route 1: the project is set, so the library runs no gcloud to find one.
    .env("GOOGLE_CLOUD_PROJECT", PROJECT)
    .env("GCE_METADATA_HOST", &shim.addr)
    .env("GCE_METADATA_IP", &shim.addr)
    .env("METADATA_SERVER_DETECTION", "assume-present")
    .env("NO_PROXY", "127.0.0.1,localhost");
    let o = run(cmd).await;
    assert!(
        o.status.success(),
        "node getIdTokenClient failed: {}\nshim: {}",
        stderr(&o),
        shim.stderr()
    );
    assert_valid(&emu, &stdout(&o), &shim).await;
}
