//! The soft key's state: its AAGUID, master secret and global signature
//! counter, and their file (`soft-key.json`, JSON, version 1).
//!
//! The file holds the master secret in plain text (hex): that is why the soft
//! key is not a security key. It is parsed into zeroizing memory, and a file
//! that does not parse is reported and left untouched, never overwritten.

use std::collections::VecDeque;
use std::path::Path;

use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::key::Error;
use crate::SOFT_AAGUID;

/// Version of the soft key's state file.
const STATE_VERSION: u32 = 1;

/// The state file as stored (`soft-key.json`).
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// hex, 16 bytes
    aaguid: String,
    /// hex, 32 bytes
    master_secret: String,
    sign_count: u32,
}

impl Drop for StateFile {
    fn drop(&mut self) {
        self.master_secret.zeroize();
    }
}

/// The state in memory. Held under the key's mutex for a whole operation,
/// which serialises operations like a real device does.
pub(crate) struct State {
    pub(crate) aaguid: [u8; 16],
    pub(crate) master: Zeroizing<[u8; 32]>,
    /// The last counter a signature used.
    pub(crate) sign_count: u32,
    /// The counter the state file holds: no signature has used a higher one,
    /// so a key opened from the file goes on above it (see
    /// [`COUNTER_BLOCK`]).
    pub(crate) reserved: u32,
    /// Public points of credentials used lately (credential id, SEC1
    /// uncompressed), so a signature costs no point multiplication to find
    /// its own public key. Never written to the file.
    pub(crate) points: VecDeque<(Vec<u8>, [u8; 65])>,
}

/// Counters the soft key reserves with one write of its state file: a
/// signature inside the reserved block costs no file write, and a key that
/// stops (or crashes) mid-block goes on above the block when opened again, so
/// the counter still only ever increases — what a relying party's clone check
/// needs. (Hardware keys keep their counter in flash the same way.)
pub const COUNTER_BLOCK: u32 = 32;

impl State {
    pub(crate) fn generate() -> State {
        let mut master = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut master[..]);
        State {
            aaguid: SOFT_AAGUID,
            master,
            sign_count: 0,
            reserved: 0,
            points: VecDeque::new(),
        }
    }

    pub(crate) fn from_json(path: &Path, bytes: &[u8]) -> Result<State, Error> {
        let bad = |what: &str| {
            Error::State(format!(
                "soft key state file {} is not valid ({what}); it was left untouched",
                path.display()
            ))
        };
        let file: StateFile = serde_json::from_slice(bytes).map_err(|e| {
            bad(&format!(
                "unreadable JSON at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        if file.version != STATE_VERSION {
            return Err(bad(&format!(
                "version {}, this agent reads version {STATE_VERSION}",
                file.version
            )));
        }
        let aaguid = <[u8; 16]>::try_from(
            hex::decode(&file.aaguid)
                .map_err(|_| bad("aaguid is not hex"))?
                .as_slice(),
        )
        .map_err(|_| bad("aaguid is not 16 bytes"))?;
        let mut master = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(file.master_secret.as_bytes(), &mut master[..])
            .map_err(|_| bad("master_secret is not 32 bytes of hex"))?;
        Ok(State {
            aaguid,
            master,
            sign_count: file.sign_count,
            reserved: file.sign_count,
            points: VecDeque::new(),
        })
    }

    pub(crate) fn to_json(&self, sign_count: u32) -> Zeroizing<Vec<u8>> {
        let file = StateFile {
            version: STATE_VERSION,
            aaguid: hex::encode(self.aaguid),
            master_secret: hex::encode(&self.master[..]),
            sign_count,
        };
        let mut out = serde_json::to_vec_pretty(&file).expect("state serialises");
        out.push(b'\n');
        Zeroizing::new(out)
    }
}
