//! touchgate's own CTAPHID channel (CTAP 2.1 §11.2) to a USB security key,
//! for authenticatorMakeCredential, and the reading of its raw response.
//!
//! ctap-hid-fido2 decodes a response itself and keeps one value of a map key
//! written twice, so a key could answer `sig`, `x5c` or `authData` twice and
//! let the decoder pick. The agent therefore sends makeCredential on a channel
//! of its own (CTAPHID_INIT on the same hidraw device, then CTAPHID_CBOR) and
//! reads the response's CBOR before anything uses it; the request itself is
//! still built by ctap-hid-fido2 (including the PIN's pinUvAuthParam).
//!
//! Invariants: a response is used only when it is one CBOR map with nothing
//! after it, no map in it (the top level, the attestation statement, any
//! deeper one) holds a key twice, and `fmt`, `authData`, `attStmt` have their
//! CBOR types; reports on other channels are ignored; a message longer than
//! CTAPHID allows is refused. Errors are one line and hold no request bytes
//! (the request may carry a pinUvAuthParam).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

use anyhow::{anyhow, bail};
use ciborium::value::Value;

/// A HID report of a FIDO key.
const REPORT_LEN: usize = 64;
const BROADCAST_CID: [u8; 4] = [0xff; 4];
const CMD_INIT: u8 = 0x86;
const CMD_CBOR: u8 = 0x90;
const CMD_CANCEL: u8 = 0x91;
const CMD_KEEPALIVE: u8 = 0xbb;
const CMD_ERROR: u8 = 0xbf;
/// Payload bytes in an initialisation packet and in a continuation packet.
const INIT_DATA: usize = REPORT_LEN - 7;
const CONT_DATA: usize = REPORT_LEN - 5;
/// The longest CTAPHID message: one initialisation and 128 continuation packets.
const MAX_MESSAGE: usize = INIT_DATA + 128 * CONT_DATA;
/// Nesting deeper than this is refused (a makeCredential response needs 3).
const CBOR_MAX_DEPTH: usize = 16;

/// One channel to a key, opened on its hidraw device.
pub struct Channel {
    file: File,
    cid: [u8; 4],
}

impl Channel {
    /// Open `path` and allocate a channel (CTAPHID_INIT with a fresh nonce).
    pub fn open(path: &str) -> anyhow::Result<Channel> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| anyhow!("Failed to open {path}: {e}"))?;
        let mut channel = Channel {
            file,
            cid: BROADCAST_CID,
        };
        let nonce: [u8; 8] = rand::random();
        channel.send(CMD_INIT, &nonce)?;
        // Answers to other hosts' INITs on the broadcast channel carry their nonce.
        for _ in 0..64 {
            let (cmd, data) = channel.recv()?;
            if cmd == CMD_INIT && data.len() >= 17 && data[..8] == nonce {
                channel.cid.copy_from_slice(&data[8..12]);
                if channel.cid == BROADCAST_CID || channel.cid == [0; 4] {
                    bail!("the key gave a reserved CTAPHID channel id");
                }
                return Ok(channel);
            }
        }
        bail!("the key did not answer CTAPHID_INIT")
    }

    /// Send one CTAP2 request (command byte ‖ CBOR) and return the response's
    /// CBOR. A CTAP status other than success is an error naming it as
    /// `0xNN`, the form [`super::hid`] maps to a `KeyError`.
    pub fn cbor(&self, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.send(CMD_CBOR, request)?;
        loop {
            let (cmd, data) = self.recv()?;
            match cmd {
                CMD_KEEPALIVE => continue,
                CMD_ERROR => bail!("CTAPHID error 0x{:02X}", data.first().copied().unwrap_or(0)),
                CMD_CBOR => {
                    let (&status, cbor) = data
                        .split_first()
                        .ok_or_else(|| anyhow!("the key sent an empty CTAP2 response"))?;
                    if status != 0 {
                        bail!("CTAP2 status 0x{status:02X}");
                    }
                    return Ok(cbor.to_vec());
                }
                other => bail!("the key answered CTAPHID command 0x{other:02X} to CTAPHID_CBOR"),
            }
        }
    }

    /// CTAPHID_CANCEL on this channel (from another thread than the request's).
    pub fn cancel(&self) {
        let _ = self.send(CMD_CANCEL, &[]);
    }

    fn send(&self, cmd: u8, payload: &[u8]) -> anyhow::Result<()> {
        let len = u16::try_from(payload.len())
            .ok()
            .filter(|&n| usize::from(n) <= MAX_MESSAGE)
            .ok_or_else(|| anyhow!("a CTAPHID request is too long"))?;
        let (first, rest) = payload.split_at(payload.len().min(INIT_DATA));
        // hidapi's form: report id 0, then the 64-byte report.
        let mut report = [0u8; REPORT_LEN + 1];
        report[1..5].copy_from_slice(&self.cid);
        report[5] = cmd;
        report[6..8].copy_from_slice(&len.to_be_bytes());
        report[8..8 + first.len()].copy_from_slice(first);
        self.write_report(&report)?;
        for (seq, chunk) in rest.chunks(CONT_DATA).enumerate() {
            let mut report = [0u8; REPORT_LEN + 1];
            report[1..5].copy_from_slice(&self.cid);
            report[5] = seq as u8; // at most 127: the length is capped above
            report[6..6 + chunk.len()].copy_from_slice(chunk);
            self.write_report(&report)?;
        }
        Ok(())
    }

    fn write_report(&self, report: &[u8; REPORT_LEN + 1]) -> anyhow::Result<()> {
        (&self.file)
            .write_all(report)
            .map_err(|e| anyhow!("write error: {e}"))
    }

    fn read_report(&self) -> anyhow::Result<[u8; REPORT_LEN]> {
        let mut report = [0u8; REPORT_LEN];
        match (&self.file).read(&mut report) {
            Ok(0) => Err(anyhow!("read err: the device closed")),
            Ok(_) => Ok(report),
            Err(e) => Err(anyhow!("read err: {e}")),
        }
    }

    /// The next whole message on this channel: (command, payload).
    fn recv(&self) -> anyhow::Result<(u8, Vec<u8>)> {
        loop {
            let report = self.read_report()?;
            if report[..4] != self.cid || report[4] & 0x80 == 0 {
                continue; // another channel, or a stray continuation
            }
            let len = usize::from(u16::from_be_bytes([report[5], report[6]]));
            if len > MAX_MESSAGE {
                bail!("the key sent a CTAPHID message of {len} bytes, more than CTAPHID allows");
            }
            let mut data = report[7..7 + len.min(INIT_DATA)].to_vec();
            let mut seq = 0u8;
            while data.len() < len {
                let report = self.read_report()?;
                if report[..4] != self.cid {
                    continue;
                }
                if report[4] != seq {
                    bail!("the key sent CTAPHID packets out of sequence");
                }
                seq += 1;
                let take = (len - data.len()).min(CONT_DATA);
                data.extend_from_slice(&report[5..5 + take]);
            }
            return Ok((report[4], data));
        }
    }
}

/// What a makeCredential response says, read from its raw CBOR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeCredentialResponse {
    pub fmt: String,
    pub auth_data: Vec<u8>,
    /// The statement's `alg`, when it has one.
    pub alg: Option<i64>,
    /// The statement's `sig` (empty when it has none).
    pub sig: Vec<u8>,
    /// The statement's `x5c` (empty when it has none).
    pub x5c: Vec<Vec<u8>>,
}

/// Read a makeCredential response (its CBOR, after the status byte). Errors
/// are one line, naming what is wrong.
pub fn parse_make_credential(cbor: &[u8]) -> Result<MakeCredentialResponse, String> {
    let bad = |what: &str| {
        format!(
            "the security key's makeCredential response {what}: refused (a faulty or hostile key; enrol another key)"
        )
    };
    let mut rest = cbor;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, CBOR_MAX_DEPTH)
        .map_err(|_| bad("is not valid CBOR"))?;
    if !rest.is_empty() {
        return Err(bad("has bytes after its CBOR map"));
    }
    let Value::Map(top) = &value else {
        return Err(bad("is not a CBOR map"));
    };
    if let Some(k) = first_twice(top) {
        return Err(bad(&format!("has {} twice", top_name(k))));
    }
    let get = |n: i64| {
        top.iter()
            .find(|(k, _)| k.as_integer() == Some(n.into()))
            .map(|(_, v)| v)
    };
    let stmt = match get(0x03) {
        Some(Value::Map(stmt)) => stmt,
        Some(_) => return Err(bad("has an attStmt (key 3) that is not a map")),
        None => return Err(bad("has no attStmt (key 3)")),
    };
    if let Some(k) = first_twice(stmt) {
        return Err(bad(&format!("has {} (in attStmt) twice", stmt_name(k))));
    }
    if let Some(k) = crate::fido::verify::duplicate_key(&value) {
        return Err(bad(&format!("has the map key {k} twice")));
    }
    let fmt = match get(0x01) {
        Some(Value::Text(t)) => t.clone(),
        Some(_) => return Err(bad("has an fmt (key 1) that is not text")),
        None => return Err(bad("has no fmt (key 1)")),
    };
    let auth_data = match get(0x02) {
        Some(Value::Bytes(b)) => b.clone(),
        Some(_) => return Err(bad("has an authData (key 2) that is not a byte string")),
        None => return Err(bad("has no authData (key 2)")),
    };
    let member = |name: &str| {
        stmt.iter()
            .find(|(k, _)| k.as_text() == Some(name))
            .map(|(_, v)| v)
    };
    let alg = match member("alg") {
        Some(Value::Integer(n)) => {
            Some(i64::try_from(*n).map_err(|_| bad("has an attStmt \"alg\" out of range"))?)
        }
        Some(_) => return Err(bad("has an attStmt \"alg\" that is not an integer")),
        None => None,
    };
    let sig = match member("sig") {
        Some(Value::Bytes(b)) => b.clone(),
        Some(_) => return Err(bad("has an attStmt \"sig\" that is not a byte string")),
        None => vec![],
    };
    let x5c = match member("x5c") {
        Some(Value::Array(certs)) => certs
            .iter()
            .map(|c| match c {
                Value::Bytes(b) => Ok(b.clone()),
                _ => Err(bad(
                    "has an attStmt \"x5c\" entry that is not a byte string",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("has an attStmt \"x5c\" that is not an array")),
        None => vec![],
    };
    Ok(MakeCredentialResponse {
        fmt,
        auth_data,
        alg,
        sig,
        x5c,
    })
}

/// The first key `entries` holds twice.
fn first_twice(entries: &[(Value, Value)]) -> Option<&Value> {
    entries
        .iter()
        .enumerate()
        .find(|(i, (k, _))| entries[..*i].iter().any(|(seen, _)| seen == k))
        .map(|(_, (k, _))| k)
}

/// A top-level key of a makeCredential response, as named in an error.
fn top_name(k: &Value) -> String {
    match k.as_integer().and_then(|n| i64::try_from(n).ok()) {
        Some(1) => "fmt (key 1)".into(),
        Some(2) => "authData (key 2)".into(),
        Some(3) => "attStmt (key 3)".into(),
        Some(n) => format!("key {n}"),
        None => "a non-integer key".into(),
    }
}

/// A key of the attestation statement, as named in an error (one line, short).
fn stmt_name(k: &Value) -> String {
    match k.as_text() {
        Some(t) if t.chars().count() <= 32 => format!("{t:?}"),
        Some(_) => "a long text key".into(),
        None => "a non-text key".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    const CID: [u8; 4] = [1, 2, 3, 4];

    /// A channel on one end of a datagram pair (one datagram per report),
    /// the key's end, which has already sent `reports`.
    fn channel_answered_by(reports: &[Vec<u8>]) -> (Channel, UnixDatagram) {
        let (host, key) = UnixDatagram::pair().unwrap();
        for r in reports {
            let mut report = r.clone();
            report.resize(REPORT_LEN, 0);
            key.send(&report).unwrap();
        }
        let file = File::from(std::os::fd::OwnedFd::from(host));
        (Channel { file, cid: CID }, key)
    }

    /// An initialisation report: cid, cmd, length, data.
    fn init(cid: [u8; 4], cmd: u8, len: u16, data: &[u8]) -> Vec<u8> {
        [&cid[..], &[cmd], &len.to_be_bytes(), data].concat()
    }

    #[test]
    fn keepalives_and_other_channels_are_skipped_and_messages_reassembled() {
        let body: Vec<u8> = (0..100u8).collect();
        let mut answer = vec![0u8];
        answer.extend_from_slice(&body);
        let (ch, key) = channel_answered_by(&[
            init(CID, CMD_KEEPALIVE, 1, &[2]),
            init([9; 4], CMD_CBOR, 1, &[0x27]),
            init(CID, CMD_CBOR, answer.len() as u16, &answer[..INIT_DATA]),
            [&CID[..], &[0], &answer[INIT_DATA..]].concat(),
        ]);
        assert_eq!(ch.cbor(&[0x01, 0xa0]).unwrap(), body);
        // The request went out as hidapi writes it: report id 0 and a 64-byte report.
        let mut sent = [0u8; 80];
        let n = key.recv(&mut sent).unwrap();
        assert_eq!(n, REPORT_LEN + 1);
        assert_eq!(&sent[..8], &[0, 1, 2, 3, 4, CMD_CBOR, 0, 2]);
    }

    #[test]
    fn hostile_framing_is_an_error_not_a_hang_or_a_panic() {
        let too_long = (MAX_MESSAGE + 1) as u16;
        for (reports, needle) in [
            (
                vec![init(CID, CMD_CBOR, too_long, &[])],
                "more than CTAPHID allows",
            ),
            (
                vec![
                    init(CID, CMD_CBOR, 100, &[0; INIT_DATA]),
                    [&CID[..], &[1]].concat(),
                ],
                "out of sequence",
            ),
            (vec![init(CID, CMD_CBOR, 1, &[0x27])], "0x27"),
            (vec![init(CID, CMD_ERROR, 1, &[0x06])], "CTAPHID error 0x06"),
            (vec![init(CID, CMD_CBOR, 0, &[])], "empty CTAP2 response"),
            (vec![init(CID, 0x83, 0, &[])], "CTAPHID command 0x83"),
        ] {
            let (ch, _key) = channel_answered_by(&reports);
            let e = ch.cbor(&[0x01]).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        // The key goes away mid-message: the read error hid.rs maps to "stopped answering".
        let (ch, key) = channel_answered_by(&[init(CID, CMD_CBOR, 100, &[0; INIT_DATA])]);
        drop(key);
        let e = ch.cbor(&[0x01]).unwrap_err().to_string();
        assert!(e.contains("read err") || e.contains("write error"), "{e}");
    }

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = vec![];
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn int(n: i64) -> Value {
        Value::Integer(n.into())
    }

    fn text(t: &str) -> Value {
        Value::Text(t.into())
    }

    /// A packed response; `extra` entries are added to the top level and
    /// `extra_stmt` to the statement, after the originals.
    fn response(extra: Vec<(Value, Value)>, extra_stmt: Vec<(Value, Value)>) -> Vec<u8> {
        let mut stmt = vec![
            (text("alg"), int(-7)),
            (text("sig"), Value::Bytes(vec![1, 2])),
            (text("x5c"), Value::Array(vec![Value::Bytes(vec![3])])),
        ];
        stmt.extend(extra_stmt);
        let mut top = vec![
            (int(1), text("packed")),
            (int(2), Value::Bytes(vec![9; 37])),
            (int(3), Value::Map(stmt)),
        ];
        top.extend(extra);
        encode(&Value::Map(top))
    }

    #[test]
    fn a_well_formed_response_is_read() {
        let r = parse_make_credential(&response(vec![], vec![])).unwrap();
        assert_eq!(r.fmt, "packed");
        assert_eq!(r.auth_data, vec![9; 37]);
        assert_eq!(r.alg, Some(-7));
        assert_eq!(r.sig, vec![1, 2]);
        assert_eq!(r.x5c, vec![vec![3]]);
    }

    #[test]
    fn duplicate_keys_are_refused_naming_the_key_and_the_field() {
        let cases = [
            (
                response(vec![], vec![(text("sig"), Value::Bytes(vec![7]))]),
                "has \"sig\" (in attStmt) twice",
            ),
            (
                response(vec![], vec![(text("x5c"), Value::Array(vec![]))]),
                "has \"x5c\" (in attStmt) twice",
            ),
            (
                response(vec![(int(2), Value::Bytes(vec![0; 37]))], vec![]),
                "has authData (key 2) twice",
            ),
            (
                response(vec![(int(1), text("none"))], vec![]),
                "has fmt (key 1) twice",
            ),
            (
                response(vec![(int(3), Value::Map(vec![]))], vec![]),
                "has attStmt (key 3) twice",
            ),
            (
                response(vec![(int(5), int(0)), (int(5), int(0))], vec![]),
                "has key 5 twice",
            ),
            (
                response(
                    vec![(
                        int(6),
                        Value::Map(vec![(text("a"), int(1)), (text("a"), int(1))]),
                    )],
                    vec![],
                ),
                "has the map key \"a\" twice",
            ),
        ];
        for (bytes, needle) in cases {
            let e = parse_make_credential(&bytes).unwrap_err();
            assert!(e.contains(needle), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn malformed_responses_are_refused_in_one_line() {
        let mut trailing = response(vec![], vec![]);
        trailing.push(0);
        let not_map = encode(&Value::Array(vec![]));
        let no_stmt = encode(&Value::Map(vec![(int(1), text("none"))]));
        let unknown_member = response(vec![], vec![(text("zzz"), int(0))]);
        for (bytes, needle) in [
            (trailing, "bytes after"),
            (not_map, "not a CBOR map"),
            (no_stmt, "no attStmt"),
            (vec![0xa1], "not valid CBOR"),
        ] {
            let e = parse_make_credential(&bytes).unwrap_err();
            assert!(e.contains(needle), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // Unknown statement members are ignored.
        assert!(parse_make_credential(&unknown_member).is_ok());
    }
}
