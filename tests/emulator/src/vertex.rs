//! Vertex AI REST, just enough to check a bearer token and the caller's role
//! the way Google does:
//!
//! - `GET  …/locations/{l}/models`                 `aiplatform.models.list`
//! - `POST …/locations/{l}/endpoints/{e}:predict`  `aiplatform.endpoints.predict`
//! - `POST …/locations/{l}/customJobs`             `aiplatform.customJobs.create`
//!
//! Roles ([`VertexRole`](super::state::VertexRole)): `inference` may list and
//! predict, `training` may also create custom jobs, `roles/aiplatform.user`
//! may do everything. A principal without a role is refused, 403 in Google's
//! error shape.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::state::{
    EmulatorState, IssuedToken, CLOUD_PLATFORM, CUSTOM_JOBS_CREATE, ENDPOINTS_PREDICT, MODELS_LIST,
};
use super::{authenticate, google_error, rfc3339, AppState, Details};

const CLOUD_PLATFORM_READ_ONLY: &str = "https://www.googleapis.com/auth/cloud-platform.read-only";

/// Authenticates, then checks `permission` on `resource` (`projects/P/locations/L/…`).
// The error is the ready-made HTTP reply; size does not matter here.
#[allow(clippy::result_large_err)]
fn authorize(
    state: &EmulatorState,
    headers: &HeaderMap,
    details: &mut Details,
    scopes: &[&str],
    permission: &str,
    resource: String,
) -> Result<IssuedToken, Response> {
    details.permission = Some(permission.to_owned());
    details.resource = Some(resource.clone());
    let caller = authenticate(state, headers, details, scopes)?;
    if !state.vertex_permits(&caller.principal, permission) {
        return Err(google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!(
                "Permission '{permission}' denied on resource \
                 '//aiplatform.googleapis.com/{resource}' (or it may not exist)."
            ),
        ));
    }
    Ok(caller)
}

fn invalid(message: &str) -> Response {
    google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// A JSON object body, or Google's 400.
// The error is the ready-made HTTP reply; size does not matter here.
#[allow(clippy::result_large_err)]
fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(invalid("Invalid JSON payload received.")),
    }
}

/// A cloud-platform [`authorize`] for `permission` on `resource`, then the JSON
/// object in `body`.
#[allow(clippy::result_large_err)]
fn authorized_body(
    state: &EmulatorState,
    headers: &HeaderMap,
    details: &mut Details,
    permission: &str,
    resource: &str,
    body: &[u8],
) -> Result<serde_json::Map<String, Value>, Response> {
    authorize(
        state,
        headers,
        details,
        &[CLOUD_PLATFORM],
        permission,
        resource.to_owned(),
    )?;
    json_object(body)
}

/// `GET /v1/projects/{p}/locations/{l}/models` (any query, e.g. `?alt=json&pageSize=100`).
pub(crate) async fn list_models(
    State(state): State<AppState>,
    Path((project, location)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut details = Details::default();
    let response = match authorize(
        &state,
        &headers,
        &mut details,
        &[CLOUD_PLATFORM, CLOUD_PLATFORM_READ_ONLY],
        MODELS_LIST,
        format!("projects/{project}/locations/{location}"),
    ) {
        Ok(_) => Json(serde_json::json!({"models": []})).into_response(),
        Err(r) => r,
    };
    details.respond(response)
}

/// `POST /v1/projects/{p}/locations/{l}/endpoints/{e}:predict`
/// (`{name}` is the whole last segment; routes cannot split on `:`).
pub(crate) async fn endpoint_method(
    State(state): State<AppState>,
    Path((project, location, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut details = Details::default();
    let response = match name.rsplit_once(':') {
        Some((endpoint, "predict")) if !endpoint.is_empty() => {
            let resource = format!("projects/{project}/locations/{location}/endpoints/{endpoint}");
            predict(&state, &headers, &body, resource, &mut details).unwrap_or_else(|r| r)
        }
        _ => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found."),
    };
    details.respond(response)
}

// The error is the ready-made HTTP reply; size does not matter here.
#[allow(clippy::result_large_err)]
fn predict(
    state: &EmulatorState,
    headers: &HeaderMap,
    body: &[u8],
    resource: String,
    details: &mut Details,
) -> Result<Response, Response> {
    let request = authorized_body(state, headers, details, ENDPOINTS_PREDICT, &resource, body)?;
    let instances = match request.get("instances") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(invalid(
                "Invalid argument: instances must be a non-empty list.",
            ))
        }
    };
    let predictions: Vec<Value> = instances
        .iter()
        .enumerate()
        .map(|(i, instance)| serde_json::json!({"index": i, "echo": instance}))
        .collect();
    Ok(Json(serde_json::json!({
        "predictions": predictions,
        "deployedModelId": stable_id(&resource),
    }))
    .into_response())
}

/// `POST /v1/projects/{p}/locations/{l}/customJobs` with a CustomJob
/// (`displayName`, `jobSpec`): the job, pending.
pub(crate) async fn create_custom_job(
    State(state): State<AppState>,
    Path((project, location)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut details = Details::default();
    let parent = format!("projects/{project}/locations/{location}");
    let response = custom_job(&state, &headers, &body, parent, &mut details).unwrap_or_else(|r| r);
    details.respond(response)
}

// The error is the ready-made HTTP reply; size does not matter here.
#[allow(clippy::result_large_err)]
fn custom_job(
    state: &EmulatorState,
    headers: &HeaderMap,
    body: &[u8],
    parent: String,
    details: &mut Details,
) -> Result<Response, Response> {
    let job = authorized_body(state, headers, details, CUSTOM_JOBS_CREATE, &parent, body)?;
    let display_name = match job.get("displayName") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("CustomJob.displayName is required.")),
    };
    let job_spec = job.get("jobSpec").cloned().unwrap_or(Value::Null);
    if !job_spec.is_object() {
        return Err(invalid("CustomJob.jobSpec is required."));
    }
    let id = u64::from_be_bytes(
        super::state::random_bytes(8)
            .try_into()
            .expect("8 random bytes"),
    ) >> 1;
    Ok(Json(serde_json::json!({
        "name": format!("{parent}/customJobs/{id}"),
        "displayName": display_name,
        "jobSpec": job_spec,
        "state": "JOB_STATE_PENDING",
        "createTime": rfc3339(state.now()),
    }))
    .into_response())
}

/// A stable numeric id for a resource name.
fn stable_id(seed: &str) -> String {
    let d = Sha256::digest(seed.as_bytes());
    (u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) >> 1).to_string()
}
