//! Profiles end to end: `inference` impersonates a predict-only service account
//! with a 15-minute lifetime, `train` a training service account with a
//! 5-minute lifetime; the emulator's Vertex AI roles decide what each token may do.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use touchgate::{CallerHint, Secret};
use touchgate_agent::key::soft::AutoTouch;
use touchgate_tests::emulator::VertexRole;

const TRAINER: &str = "trainer@touchgate-test.iam.gserviceaccount.com";

fn config(base: &str) -> String {
    config_text(base, "auto", "every-token", "")
        + &format!(
            "\n[profiles.train]\nservice_account = \"{TRAINER}\"\nproject = \"touchgate-test\"\nlifetime = \"5m\"\ntouch = \"every-token\"\n"
        )
}

async fn post(url: &str, token: &Secret, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(token.expose())
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inference_can_predict_but_not_train_and_train_can_train() {
    let (emu, key_json) = emulator().await;
    emu.state().add_service_account(TRAINER);
    emu.state().grant_token_creator(RUNNER, TRAINER);
    emu.state().grant_vertex(TRAINER, VertexRole::Training);
    let agent = InProcess::start(&config(&emu.base_url()), Arc::new(AutoTouch)).await;
    let mut c = agent.client().await;
    c.enroll(false, false, CallerHint::default()).await.unwrap();
    c.import(
        "default",
        Secret::new(key_json.as_str()),
        CallerHint::default(),
    )
    .await
    .unwrap();

    let base = format!(
        "{}/v1/projects/touchgate-test/locations/us-central1",
        emu.base_url()
    );
    let predict = format!("{base}/endpoints/123:predict");
    let jobs = format!("{base}/customJobs");
    let job = serde_json::json!({"displayName": "t", "jobSpec": {"workerPoolSpecs": []}});
    let instances = serde_json::json!({"instances": [{"x": 1}]});

    for (profile, sa, lifetime, can_train) in [
        ("inference", INFERENCE, 900, false),
        ("train", TRAINER, 300, true),
    ] {
        let t = c
            .get_token(Some(profile), &[], CallerHint::default())
            .await
            .unwrap();
        // Checked at the emulator: who the token acts as and when it expires.
        let issued = emu
            .state()
            .valid_access_token(t.access_token.expose())
            .unwrap();
        assert_eq!(issued.principal, sa, "{profile}");
        let left = issued
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .as_secs();
        assert!(
            (lifetime - 10..=lifetime).contains(&left),
            "{profile}: {left}s left"
        );
        assert_eq!(
            t.expires_at,
            touchgate_agent::clock::unix(issued.expires_at)
        );

        assert_eq!(
            post(&predict, &t.access_token, instances.clone()).await,
            200,
            "{profile} predicts"
        );
        let status = post(&jobs, &t.access_token, job.clone()).await;
        assert_eq!(
            status,
            if can_train { 200 } else { 403 },
            "{profile} custom job"
        );
    }
    agent.shutdown().await;
}
