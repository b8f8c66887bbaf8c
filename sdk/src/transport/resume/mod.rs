//! The tcp-resume transport (sdk/RESUME.md): a session layer over TLS on TCP with a session
//! id, byte offsets and acknowledgements, that resumes over a fresh TCP connection.
//!
//! - `wire`: the frames.
//! - `core`: the stream state machine, sans I/O, with its tests.
//! - `driver`: the connection tasks and the app's stream.
//! - `connect`: the client's first connection (NEW / WELCOME).
//! - `supervisor`: the client's task that watches the path and reconnects.
//! - `progress`: TCP's acknowledgement progress in the path manager's terms (stalls).
//! - `accept`: the listener's [`Registry`] of sessions: new ones, resumptions, forged
//!   attempts and the grace period of a detached session.

mod accept;
mod connect;
mod core;
mod driver;
mod progress;
mod supervisor;
mod wire;

use std::time::Duration;

pub(crate) use accept::Registry;
pub(crate) use connect::connect;
pub(crate) use driver::ResumeStream;
pub(crate) use wire::fuzz as fuzz_frames;

/// The first four bytes of a tcp-resume connection (inside TLS).
pub(crate) const MAGIC: &[u8; 4] = b"RRES";
/// How long a listener keeps a detached session by default.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Bytes an end keeps until the peer acknowledges them.
pub(crate) const SEND_BUFFER: usize = 4 << 20;
/// The receive window: bytes received and not yet read by the app.
pub(crate) const RECV_WINDOW: u64 = 4 << 20;
