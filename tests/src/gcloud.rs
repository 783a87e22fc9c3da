//! Running the real gcloud in isolation: no prompts, no usage reports, no update
//! checks, none of the user's credentials, and never the real metadata server.

use std::process::Command;

/// Make `cmd` (a gcloud command) ignore the caller's credentials and settings.
/// `GCE_METADATA_ROOT` points at a closed port: an unset root would make gcloud
/// probe `metadata.google.internal`. Set it afterwards to use a shim.
pub fn isolate(cmd: &mut Command) -> &mut Command {
    cmd.env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
        .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("CLOUDSDK_AUTH_ACCESS_TOKEN_FILE")
        .env_remove("GCE_METADATA_HOST")
        .env_remove("GCE_METADATA_IP")
        .env("GCE_METADATA_ROOT", "127.0.0.1:9")
}
