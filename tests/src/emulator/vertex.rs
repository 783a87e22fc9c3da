//! Vertex AI REST, just enough to check a bearer token the way Google does.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::state::CLOUD_PLATFORM;
use super::{authenticate, AppState, Details};

const CLOUD_PLATFORM_READ_ONLY: &str = "https://www.googleapis.com/auth/cloud-platform.read-only";

/// `GET /v1/projects/{p}/locations/{l}/models` (any query, e.g. `?alt=json&pageSize=100`).
pub(crate) async fn list_models(
    State(state): State<AppState>,
    Path((_project, _location)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut details = Details::default();
    let response = match authenticate(
        &state,
        &headers,
        &mut details,
        &[CLOUD_PLATFORM, CLOUD_PLATFORM_READ_ONLY],
    ) {
        Ok(_) => Json(serde_json::json!({"models": []})).into_response(),
        Err(r) => r,
    };
    details.respond(response)
}
