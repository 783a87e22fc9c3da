//! A raw CTAPHID host for tests: talks to an emulated device's socket directly
//! (no hidapi, no interposer), to send well-formed and malformed reports and
//! read the device's answers.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use uds::UnixSeqpacketConn;

use super::frame::{cmd, fragment, Packet, BROADCAST_CID, REPORT_LEN};

/// A message read back from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub cid: u32,
    /// Without the init bit.
    pub cmd: u8,
    pub payload: Vec<u8>,
}

pub struct RawHost {
    sock: UnixSeqpacketConn,
}

impl RawHost {
    /// Open the device (connect to its socket).
    pub fn connect(path: &Path) -> io::Result<RawHost> {
        Ok(RawHost {
            sock: UnixSeqpacketConn::connect(path)?,
        })
    }

    /// Write raw bytes as one HID write (any length: for malformed input).
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.sock.send(bytes).map(|_| ())
    }

    /// Write a message as hidapi does: 65-byte writes, report id 0 ‖ report.
    pub fn send(&self, cid: u32, command: u8, payload: &[u8]) -> io::Result<()> {
        for report in fragment(cid, command, payload) {
            let mut write = [0u8; REPORT_LEN + 1];
            write[1..].copy_from_slice(&report);
            self.send_raw(&write)?;
        }
        Ok(())
    }

    /// Read one report. `Ok(None)` when the device closed the connection.
    pub fn recv_report(&self, timeout: Duration) -> io::Result<Option<[u8; REPORT_LEN]>> {
        self.sock.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 2 * REPORT_LEN];
        let n = self.sock.recv(&mut buf)?;
        match n {
            0 => Ok(None),
            REPORT_LEN => {
                let mut report = [0u8; REPORT_LEN];
                report.copy_from_slice(&buf[..REPORT_LEN]);
                Ok(Some(report))
            }
            n => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("device sent a {n}-byte report"),
            )),
        }
    }

    /// Read one whole message (KEEPALIVEs included), checking the continuation
    /// sequence, within `timeout`.
    pub fn recv(&self, timeout: Duration) -> io::Result<Message> {
        let deadline = Instant::now() + timeout;
        let first = self.next_report(deadline)?;
        let Packet::Init {
            cid,
            cmd: command,
            bcnt,
            data,
        } = Packet::parse(&first)
        else {
            return Err(invalid("device sent a continuation packet first"));
        };
        let len = usize::from(bcnt);
        let mut payload = data.to_vec();
        let mut seq = 0u8;
        while payload.len() < len {
            match Packet::parse(&self.next_report(deadline)?) {
                Packet::Cont {
                    cid: c,
                    seq: s,
                    data,
                } if c == cid && s == seq => payload.extend_from_slice(&data),
                other => return Err(invalid(&format!("unexpected packet {other:?}"))),
            }
            seq += 1;
        }
        payload.truncate(len);
        Ok(Message {
            cid,
            cmd: command,
            payload,
        })
    }

    /// Read messages until one that is not a KEEPALIVE; returns it and the
    /// keep-alive statuses seen before it.
    pub fn recv_skipping_keepalives(&self, timeout: Duration) -> io::Result<(Message, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        let mut statuses = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.recv(left.max(Duration::from_millis(1)))?;
            if msg.cmd != cmd::KEEPALIVE {
                return Ok((msg, statuses));
            }
            statuses.push(msg.payload.first().copied().unwrap_or(0));
        }
    }

    /// CTAPHID_INIT on the broadcast channel: returns the new channel.
    pub fn init(&self, timeout: Duration) -> io::Result<u32> {
        let nonce = *b"tgnonce!";
        self.send(BROADCAST_CID, cmd::INIT, &nonce)?;
        let msg = self.recv(timeout)?;
        if msg.cmd != cmd::INIT || msg.payload.len() < 17 || msg.payload[..8] != nonce {
            return Err(invalid(&format!("bad INIT answer {msg:?}")));
        }
        Ok(u32::from_be_bytes([
            msg.payload[8],
            msg.payload[9],
            msg.payload[10],
            msg.payload[11],
        ]))
    }

    fn next_report(&self, deadline: Instant) -> io::Result<[u8; REPORT_LEN]> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.recv_report(left)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "device closed"))
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}
