//! The tcp-resume frames (sdk/RESUME.md): `type` (1 byte), `length` (4 bytes, big endian),
//! then `length` bytes of payload. Parsing never trusts a length: a frame over
//! [`MAX_PAYLOAD`] or with a payload of the wrong size is an error, not an allocation.

use std::fmt;

/// The largest payload a frame may carry (a DATA frame's offset plus 64 KiB).
pub(crate) const MAX_PAYLOAD: usize = 8 + 64 * 1024;
/// Bytes before a frame's payload.
pub(crate) const HEADER: usize = 5;
/// A session id: 128 random bits chosen by the listener.
pub(crate) type SessionId = [u8; 16];
/// The resumption secret: 128 random bits chosen by the listener, sent once inside TLS.
pub(crate) type Secret = [u8; 16];
/// A proof of the secret bound to one TLS connection (a TLS exporter value).
pub(crate) type Proof = [u8; 32];

/// One frame.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Client, first frame of a new session: the app id.
    New { app: String },
    /// Listener's answer to `New`.
    Welcome { id: SessionId, secret: Secret },
    /// Client, first frame on a fresh connection of an existing session.
    Resume {
        id: SessionId,
        proof: Proof,
        received: u64,
    },
    /// Listener's answer to a valid `Resume`: what it has received.
    Resumed { received: u64 },
    /// Listener's answer to an invalid `Resume`; the connection closes after it.
    Refused { reason: String },
    /// Stream bytes starting at `offset`.
    Data { offset: u64, bytes: Vec<u8> },
    /// Everything below `received` arrived; the sender may send below `window`.
    Ack { received: u64, window: u64 },
    /// Asks for an `Ack` (liveness while idle).
    Ping,
    /// The sender's stream ends at `offset`.
    Fin { offset: u64 },
    /// The session is over: both directions ended and were acknowledged.
    Close,
}

impl fmt::Debug for Frame {
    // Never print secrets or proofs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::New { app } => write!(f, "New({app:?})"),
            Frame::Welcome { .. } => f.write_str("Welcome"),
            Frame::Resume { received, .. } => write!(f, "Resume(received {received})"),
            Frame::Resumed { received } => write!(f, "Resumed(received {received})"),
            Frame::Refused { reason } => write!(f, "Refused({reason:?})"),
            Frame::Data { offset, bytes } => write!(f, "Data({offset}+{})", bytes.len()),
            Frame::Ack { received, window } => write!(f, "Ack({received}, window {window})"),
            Frame::Ping => f.write_str("Ping"),
            Frame::Fin { offset } => write!(f, "Fin({offset})"),
            Frame::Close => f.write_str("Close"),
        }
    }
}

const NEW: u8 = 0x01;
const WELCOME: u8 = 0x02;
const RESUME: u8 = 0x03;
const RESUMED: u8 = 0x04;
const REFUSED: u8 = 0x05;
const DATA: u8 = 0x10;
const ACK: u8 = 0x11;
const PING: u8 = 0x12;
const FIN: u8 = 0x13;
const CLOSE: u8 = 0x14;

/// What is wrong with bytes that claim to be a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// An unknown frame type.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// A payload over [`MAX_PAYLOAD`].
    #[error("a frame of {0} bytes is over the limit")]
    TooLong(usize),
    /// A payload of the wrong size for its type.
    #[error("a {0} frame of {1} bytes is malformed")]
    Malformed(&'static str, usize),
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

impl Frame {
    /// Appends the frame's bytes to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        let ty = match self {
            Frame::New { app } => {
                out.extend_from_slice(app.as_bytes());
                NEW
            }
            Frame::Welcome { id, secret } => {
                out.extend_from_slice(id);
                out.extend_from_slice(secret);
                WELCOME
            }
            Frame::Resume {
                id,
                proof,
                received,
            } => {
                out.extend_from_slice(id);
                out.extend_from_slice(proof);
                out.extend_from_slice(&received.to_be_bytes());
                RESUME
            }
            Frame::Resumed { received } => {
                out.extend_from_slice(&received.to_be_bytes());
                RESUMED
            }
            Frame::Refused { reason } => {
                out.extend_from_slice(reason.as_bytes());
                REFUSED
            }
            Frame::Data { offset, bytes } => {
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(bytes);
                DATA
            }
            Frame::Ack { received, window } => {
                out.extend_from_slice(&received.to_be_bytes());
                out.extend_from_slice(&window.to_be_bytes());
                ACK
            }
            Frame::Ping => PING,
            Frame::Fin { offset } => {
                out.extend_from_slice(&offset.to_be_bytes());
                FIN
            }
            Frame::Close => CLOSE,
        };
        let len = (out.len() - start - HEADER) as u32;
        out[start] = ty;
        out[start + 1..start + HEADER].copy_from_slice(&len.to_be_bytes());
    }

    /// Parses one frame from the front of `b`: `Ok(None)` when more bytes are needed, else
    /// the frame and how many bytes it took.
    pub(crate) fn decode(b: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
        let Some(h) = b.get(..HEADER) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(WireError::TooLong(len));
        }
        let Some(p) = b.get(HEADER..HEADER + len) else {
            return Ok(None);
        };
        let exact = |name, n: usize| {
            if len == n {
                Ok(())
            } else {
                Err(WireError::Malformed(name, len))
            }
        };
        let text =
            |name| String::from_utf8(p.to_vec()).map_err(|_| WireError::Malformed(name, len));
        let frame = match h[0] {
            NEW => {
                if len > 255 {
                    return Err(WireError::Malformed("NEW", len));
                }
                Frame::New { app: text("NEW")? }
            }
            WELCOME => {
                exact("WELCOME", 32)?;
                let mut id = [0u8; 16];
                let mut secret = [0u8; 16];
                id.copy_from_slice(&p[..16]);
                secret.copy_from_slice(&p[16..32]);
                Frame::Welcome { id, secret }
            }
            RESUME => {
                exact("RESUME", 56)?;
                let mut id = [0u8; 16];
                let mut proof = [0u8; 32];
                id.copy_from_slice(&p[..16]);
                proof.copy_from_slice(&p[16..48]);
                Frame::Resume {
                    id,
                    proof,
                    received: u64_at(p, 48),
                }
            }
            RESUMED => {
                exact("RESUMED", 8)?;
                Frame::Resumed {
                    received: u64_at(p, 0),
                }
            }
            REFUSED => Frame::Refused {
                reason: text("REFUSED")?,
            },
            DATA => {
                if len < 8 {
                    return Err(WireError::Malformed("DATA", len));
                }
                Frame::Data {
                    offset: u64_at(p, 0),
                    bytes: p[8..].to_vec(),
                }
            }
            ACK => {
                exact("ACK", 16)?;
                Frame::Ack {
                    received: u64_at(p, 0),
                    window: u64_at(p, 8),
                }
            }
            PING => {
                exact("PING", 0)?;
                Frame::Ping
            }
            FIN => {
                exact("FIN", 8)?;
                Frame::Fin {
                    offset: u64_at(p, 0),
                }
            }
            CLOSE => {
                exact("CLOSE", 0)?;
                Frame::Close
            }
            other => return Err(WireError::UnknownType(other)),
        };
        Ok(Some((frame, HEADER + len)))
    }
}

/// The fuzz target's body (sdk/fuzz, `resume_frames`) and its corpus replay: `data` as what a
/// peer sends after `RRES`, decoded frame by frame and fed to a listener's session state as
/// the connection task does (a fresh session's, then one just resumed, which drops an early
/// flight's DATA past a gap), until the bytes end or a frame is refused. Never panics on any
/// input; every decoded frame encodes back to the bytes it came from.
pub(crate) fn fuzz(data: &[u8]) {
    fuzz_core(
        data,
        super::core::Core::new(super::SEND_BUFFER, super::RECV_WINDOW),
    );
    let mut resumed = super::core::Core::new(super::SEND_BUFFER, super::RECV_WINDOW);
    resumed.detach();
    let _ = resumed.resume_listener(0);
    fuzz_core(data, resumed);
}

fn fuzz_core(data: &[u8], mut core: super::core::Core) {
    let mut rest = data;
    let mut out = Vec::new();
    let mut app = vec![0u8; 16 * 1024];
    while let Ok(Some((f, n))) = Frame::decode(rest) {
        out.clear();
        f.encode(&mut out);
        assert_eq!(out, rest[..n], "{f:?} does not round-trip");
        rest = &rest[n..];
        if core.handle(f).is_err() {
            break;
        }
        while core.poll_transmit().is_some() {}
        while core.read(&mut app) > 0 {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips_and_splits_anywhere() {
        let frames = [
            Frame::New {
                app: "com.example.chat".into(),
            },
            Frame::Welcome {
                id: [1; 16],
                secret: [2; 16],
            },
            Frame::Resume {
                id: [3; 16],
                proof: [4; 32],
                received: 1 << 40,
            },
            Frame::Resumed { received: 7 },
            Frame::Refused {
                reason: "unknown session".into(),
            },
            Frame::Data {
                offset: 99,
                bytes: vec![5; 300],
            },
            Frame::Ack {
                received: 10,
                window: 20,
            },
            Frame::Ping,
            Frame::Fin { offset: 400 },
            Frame::Close,
        ];
        let mut all = Vec::new();
        for f in &frames {
            f.encode(&mut all);
        }
        // Captured bytes of one frame, so the format cannot drift unnoticed.
        let mut ack = Vec::new();
        Frame::Ack {
            received: 1,
            window: 2,
        }
        .encode(&mut ack);
        assert_eq!(
            ack,
            [
                0x11, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2
            ]
        );
        // Every prefix of the stream is either whole frames or "need more".
        for cut in 0..all.len() {
            let mut b = &all[..cut];
            while let Some((_, n)) = Frame::decode(b).unwrap() {
                b = &b[n..];
            }
        }
        let mut b = &all[..];
        for f in &frames {
            let (got, n) = Frame::decode(b).unwrap().unwrap();
            assert_eq!(&got, f);
            b = &b[n..];
        }
        assert!(b.is_empty());
    }

    #[test]
    fn hostile_frames_are_errors() {
        assert_eq!(
            Frame::decode(&[0x10, 0xff, 0xff, 0xff, 0xff]),
            Err(WireError::TooLong(u32::MAX as usize))
        );
        assert_eq!(
            Frame::decode(&[0x7f, 0, 0, 0, 0]),
            Err(WireError::UnknownType(0x7f))
        );
        assert_eq!(
            Frame::decode(&[0x11, 0, 0, 0, 1, 0]),
            Err(WireError::Malformed("ACK", 1))
        );
        assert_eq!(
            Frame::decode(&[0x10, 0, 0, 0, 2, 0, 0]),
            Err(WireError::Malformed("DATA", 2))
        );
        let mut short_resume = vec![0x03, 0, 0, 0, 10];
        short_resume.extend_from_slice(&[0; 10]);
        assert_eq!(
            Frame::decode(&short_resume),
            Err(WireError::Malformed("RESUME", 10))
        );
    }

    #[test]
    fn secrets_never_show_in_logs() {
        let f = Frame::Welcome {
            id: [0xab; 16],
            secret: [0xcd; 16],
        };
        assert_eq!(format!("{f:?}"), "Welcome");
    }
}
