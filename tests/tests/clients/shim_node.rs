//! Node's google-auth-library on the metadata route (README route 1): with
//! `GOOGLE_CLOUD_PROJECT` set, as the README says, a token costs one touch and
//! no gcloud runs; without it, the library runs gcloud to find the project
//! (what the README warns of), which the same trap sees.

use crate::common;
use crate::shim_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;
use shim_common::*;

use crate::shim_python::{behind_gcloud_trap, gcloud_trap};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `node`, with google-auth-library from `$TOUCHGATE_TEST_NODE_MODULES`, else
/// `<workspace>/target/node/node_modules` (scripts/node-modules.sh).
pub(crate) fn node() -> Command {
    let modules = std::env::var_os("TOUCHGATE_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/node/node_modules"));
    let check = Command::new("node")
        .args(["-e", "require('google-auth-library')"])
        .env("NODE_PATH", &modules)
        .output();
    match check {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "google-auth-library is not in {}: run scripts/node-modules.sh ({})",
            modules.display(),
            stderr(&o).lines().next().unwrap_or("")
        ),
        Err(e) => {
            panic!(
                "node is missing ({e}): install Node.js and npm, then run scripts/node-modules.sh"
            )
        }
    }
    let mut c = Command::new("node");
    c.env("NODE_PATH", modules);
    c
}

/// What the user's Node program does: find the project, get a token.
const PROGRAM: &str = r#"
const {GoogleAuth} = require('google-auth-library');
(async () => {
  const auth = new GoogleAuth({scopes: 'https://www.googleapis.com/auth/cloud-platform'});
  const client = await auth.getClient();
  const project = await auth.getProjectId().catch(e => 'error: ' + e.message);
  const {token} = await client.getAccessToken();
  console.log(JSON.stringify({project, token}));
})().catch(e => { console.error(e); process.exit(1); });
"#;

/// Route 1 for Node in a clean home: the metadata variables at `shim`, a
/// gcloud trap first on PATH, and `project` as GOOGLE_CLOUD_PROJECT (or none).
fn node_on_route_1(home: &Path, trap: &Path, shim: &ShimProc, project: Option<&str>) -> Command {
    let mut c = node();
    c.args(["-e", PROGRAM]);
    behind_gcloud_trap(&mut c, home, trap)
        .env("GCE_METADATA_ROOT", &shim.addr)
        .env("GCE_METADATA_HOST", &shim.addr)
        .env("GCE_METADATA_IP", &shim.addr)
        .env("NO_PROXY", "127.0.0.1,localhost");
    match project {
        Some(p) => c.env("GOOGLE_CLOUD_PROJECT", p),
        None => c.env_remove("GOOGLE_CLOUD_PROJECT"),
    };
    c
}

fn touches(agent: &AgentProc) -> u64 {
    let v: Value = serde_json::from_str(&agent.ok(&["status", "--json"])).unwrap();
    v["touches"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_on_route_1_with_the_project_set_costs_one_touch_and_runs_no_gcloud() {
    let (emu, key_json) = emulator().await;
    let agent = enrolled_agent(&emu, &key_json, "auto", "every-token");
    let shim = ShimProc::start(&agent.socket, &[]);

    // As the README documents it: GOOGLE_CLOUD_PROJECT set.
    let home = tempfile::tempdir().unwrap();
    let (trap, ran) = gcloud_trap(home.path());
    let before = touches(&agent);
    let o = run(node_on_route_1(home.path(), &trap, &shim, Some(PROJECT))).await;
    assert!(
        o.status.success(),
        "node: {}\nshim: {}",
        stderr(&o),
        shim.stderr()
    );
    let out: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(out["project"], PROJECT);
    let token = out["token"].as_str().unwrap();
    assert!(
        emu.state()
            .valid_access_token(token)
            .is_some_and(|t| t.principal == INFERENCE),
        "the agent's token"
    );
    assert!(
        !ran.exists(),
        "google-auth-library ran gcloud: {}",
        std::fs::read_to_string(&ran).unwrap_or_default()
    );
    assert_eq!(touches(&agent), before + 1, "one token, one touch");

    // Without it, the library runs gcloud for the project (the trap sees it):
    // the README's warning, and proof the trap would have caught it above.
    let home = tempfile::tempdir().unwrap();
    let (trap, ran) = gcloud_trap(home.path());
    let o = run(node_on_route_1(home.path(), &trap, &shim, None)).await;
    assert!(o.status.success(), "node: {}", stderr(&o));
    let calls = std::fs::read_to_string(&ran).unwrap_or_default();
    assert!(
        calls.contains("config config-helper"),
        "with no project set, google-auth-library runs gcloud config config-helper: {calls:?}"
    );
}
