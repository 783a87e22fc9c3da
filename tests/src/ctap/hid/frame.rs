//! CTAPHID framing (CTAP 2.1 §11.2.4): 64-byte reports, init and continuation
//! packets, command and error codes. Used by the device and by tests that
//! talk raw CTAPHID to it.

/// Size of a CTAPHID report (the FIDO report descriptor's input/output size).
pub const REPORT_LEN: usize = 64;
/// Payload bytes in an init packet: CID(4) ‖ CMD(1) ‖ BCNTH ‖ BCNTL ‖ data(57).
pub const INIT_DATA_LEN: usize = REPORT_LEN - 7;
/// Payload bytes in a continuation packet: CID(4) ‖ SEQ(1) ‖ data(59).
pub const CONT_DATA_LEN: usize = REPORT_LEN - 5;
/// Largest message a transaction can carry: one init and 128 continuation packets.
pub const MAX_MESSAGE_LEN: usize = INIT_DATA_LEN + 128 * CONT_DATA_LEN;
/// The broadcast channel, used only by CTAPHID_INIT to get a channel.
pub const BROADCAST_CID: u32 = 0xffff_ffff;
/// Bit 7 of the command byte marks an init packet.
pub const TYPE_INIT: u8 = 0x80;

/// CTAPHID commands (without the init bit).
pub mod cmd {
    pub const PING: u8 = 0x01;
    pub const MSG: u8 = 0x03;
    pub const LOCK: u8 = 0x04;
    pub const INIT: u8 = 0x06;
    pub const WINK: u8 = 0x08;
    pub const CBOR: u8 = 0x10;
    pub const CANCEL: u8 = 0x11;
    pub const KEEPALIVE: u8 = 0x3B;
    pub const ERROR: u8 = 0x3F;
}

/// CTAPHID_ERROR codes.
pub mod err {
    pub const INVALID_CMD: u8 = 0x01;
    pub const INVALID_PAR: u8 = 0x02;
    pub const INVALID_LEN: u8 = 0x03;
    pub const INVALID_SEQ: u8 = 0x04;
    pub const MSG_TIMEOUT: u8 = 0x05;
    pub const CHANNEL_BUSY: u8 = 0x06;
    pub const LOCK_REQUIRED: u8 = 0x0A;
    pub const INVALID_CHANNEL: u8 = 0x0B;
    pub const OTHER: u8 = 0x7F;
}

/// CTAPHID_INIT capability flags.
pub mod capability {
    pub const WINK: u8 = 0x01;
    pub const CBOR: u8 = 0x04;
    pub const NMSG: u8 = 0x08;
}

/// One report as the device reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// First packet of a message: `cmd` without the init bit, `bcnt` the whole message length.
    Init {
        cid: u32,
        cmd: u8,
        bcnt: u16,
        data: [u8; INIT_DATA_LEN],
    },
    /// A following packet, `seq` 0..=127.
    Cont {
        cid: u32,
        seq: u8,
        data: [u8; CONT_DATA_LEN],
    },
}

impl Packet {
    pub fn cid(&self) -> u32 {
        match self {
            Packet::Init { cid, .. } | Packet::Cont { cid, .. } => *cid,
        }
    }

    /// Decode one 64-byte report. Every report decodes: bit 7 of byte 4 says which kind.
    pub fn parse(report: &[u8; REPORT_LEN]) -> Packet {
        let cid = u32::from_be_bytes([report[0], report[1], report[2], report[3]]);
        if report[4] & TYPE_INIT != 0 {
            let mut data = [0; INIT_DATA_LEN];
            data.copy_from_slice(&report[7..]);
            Packet::Init {
                cid,
                cmd: report[4] & !TYPE_INIT,
                bcnt: u16::from_be_bytes([report[5], report[6]]),
                data,
            }
        } else {
            let mut data = [0; CONT_DATA_LEN];
            data.copy_from_slice(&report[5..]);
            Packet::Cont {
                cid,
                seq: report[4],
                data,
            }
        }
    }
}

/// Split a message into 64-byte reports (zero-padded). `cmd` is without the
/// init bit. Panics if `payload` is longer than [`MAX_MESSAGE_LEN`].
pub fn fragment(cid: u32, cmd: u8, payload: &[u8]) -> Vec<[u8; REPORT_LEN]> {
    assert!(payload.len() <= MAX_MESSAGE_LEN, "CTAPHID message too long");
    let mut reports = Vec::with_capacity(1 + payload.len() / CONT_DATA_LEN);
    let mut first = [0u8; REPORT_LEN];
    first[..4].copy_from_slice(&cid.to_be_bytes());
    first[4] = cmd | TYPE_INIT;
    first[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    let n = payload.len().min(INIT_DATA_LEN);
    first[7..7 + n].copy_from_slice(&payload[..n]);
    reports.push(first);
    for (seq, chunk) in payload[n..].chunks(CONT_DATA_LEN).enumerate() {
        let mut report = [0u8; REPORT_LEN];
        report[..4].copy_from_slice(&cid.to_be_bytes());
        report[4] = seq as u8;
        report[5..5 + chunk.len()].copy_from_slice(chunk);
        reports.push(report);
    }
    reports
}

/// Normalise what a host wrote into one report: hidraw writes carry a leading
/// report id 0 (65 bytes), which is stripped; 64 bytes are taken as they are;
/// shorter writes are zero-padded, as HID pads a short output report. `None`
/// for an empty write, a 65-byte write with a non-zero report id (the
/// descriptor declares none) or anything longer.
pub fn normalise_write(bytes: &[u8]) -> Option<[u8; REPORT_LEN]> {
    let body = match bytes.len() {
        0 => return None,
        len if len == REPORT_LEN + 1 => {
            if bytes[0] != 0 {
                return None;
            }
            &bytes[1..]
        }
        len if len <= REPORT_LEN => bytes,
        _ => return None,
    };
    let mut report = [0u8; REPORT_LEN];
    report[..body.len()].copy_from_slice(body);
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_and_parse_round_trip() {
        let payload: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let reports = fragment(0x0102_0304, cmd::CBOR, &payload);
        assert_eq!(reports.len(), 1 + (200 - 57usize).div_ceil(59));
        let mut out = Vec::new();
        for (i, r) in reports.iter().enumerate() {
            match Packet::parse(r) {
                Packet::Init {
                    cid,
                    cmd,
                    bcnt,
                    data,
                } => {
                    assert_eq!((i, cid, cmd, bcnt), (0, 0x0102_0304, cmd::CBOR, 200));
                    out.extend_from_slice(&data);
                }
                Packet::Cont { cid, seq, data } => {
                    assert_eq!((cid, seq as usize), (0x0102_0304, i - 1));
                    out.extend_from_slice(&data);
                }
            }
        }
        assert_eq!(&out[..200], &payload[..]);
    }

    #[test]
    fn writes_are_normalised() {
        let mut w = [0u8; 65];
        w[1] = 0xAA;
        assert_eq!(normalise_write(&w).unwrap()[0], 0xAA);
        w[0] = 1;
        assert!(normalise_write(&w).is_none());
        assert_eq!(normalise_write(&[7u8; 64]).unwrap(), [7u8; 64]);
        assert_eq!(normalise_write(&[7u8; 3]).unwrap()[3], 0);
        assert!(normalise_write(&[]).is_none());
        assert!(normalise_write(&[0u8; 66]).is_none());
        assert_eq!(MAX_MESSAGE_LEN, 7609);
    }
}
