//! Which public keys a verification trusts, and where they came from: the
//! vault's enrolled and retired keys, or a file `touchgate keys export` wrote.
//! Never "enrolled" lines of the log being checked.
//!
//! The key file is JSON: `{"touchgate_keys": 1, "keys": [{"credential",
//! "public_key", "key_name", "retired"}]}` (ids and SEC1 points in hex); it
//! holds public keys only.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::vault::VaultFile;

/// Public keys by credential id (hex), and a phrase naming their source.
pub struct TrustedKeys {
    pub keys: HashMap<String, Vec<u8>>,
    pub source: String,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    touchgate_keys: u32,
    keys: Vec<ExportedKey>,
}

#[derive(Serialize, Deserialize)]
struct ExportedKey {
    credential: String,
    public_key: String,
    key_name: String,
    #[serde(default)]
    retired: bool,
}

/// Public keys of the enrolled keys in a vault, and of the keys it retired
/// (removed, or replaced by a new enrolment), by credential id (hex).
pub fn keys_of(vault: &VaultFile) -> HashMap<String, Vec<u8>> {
    exported(vault)
        .into_iter()
        .filter_map(|k| Some((k.credential, hex::decode(k.public_key).ok()?)))
        .collect()
}

fn exported(vault: &VaultFile) -> Vec<ExportedKey> {
    let enrolled = vault.enrolments.iter().map(|e| ExportedKey {
        credential: hex::encode(&e.credential_id),
        public_key: hex::encode(&e.public_key_sec1),
        key_name: e.key_name.clone(),
        retired: false,
    });
    let retired = vault.retired.iter().map(|k| ExportedKey {
        credential: hex::encode(&k.credential_id),
        public_key: hex::encode(&k.public_key_sec1),
        key_name: k.key_name.clone(),
        retired: true,
    });
    enrolled.chain(retired).collect()
}

/// The key file for `vault` (pretty JSON, public keys only).
pub fn export(vault: &VaultFile) -> String {
    let file = KeyFile {
        touchgate_keys: 1,
        keys: exported(vault),
    };
    serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
}

/// The keys of the vault at `path`.
pub fn from_vault(path: &Path) -> Result<TrustedKeys, String> {
    let vault = VaultFile::load(path).map_err(|e| e.to_string())?;
    Ok(TrustedKeys {
        keys: keys_of(&vault),
        source: format!(
            "the vault {} ({} enrolled, {} retired keys)",
            path.display(),
            vault.enrolments.len(),
            vault.retired.len()
        ),
    })
}

/// The keys of a file written by `touchgate keys export`.
pub fn from_file(path: &Path) -> Result<TrustedKeys, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--keys {}: cannot read: {e}", path.display()))?;
    let bad = || {
        format!(
            "--keys {}: not a key file from touchgate keys export: export one with `touchgate keys export --out FILE`",
            path.display()
        )
    };
    let file: KeyFile = serde_json::from_str(&text).map_err(|_| bad())?;
    if file.touchgate_keys != 1 {
        return Err(bad());
    }
    let mut keys = HashMap::new();
    for k in file.keys {
        let pk = hex::decode(&k.public_key).map_err(|_| bad())?;
        keys.insert(k.credential, pk);
    }
    Ok(TrustedKeys {
        source: format!("the key file {} ({} keys)", path.display(), keys.len()),
        keys,
    })
}
