//! The roamd protocol, version 1: what roamd and its clients (the `roam` SDK, `roamctl`, tests)
//! say to each other over roamd's Unix socket. `PROTOCOL.md` next to this crate is the document.
//!
//! - [`proto`]: the messages ([`proto::Request`], [`proto::Reply`]) and the framing (4-byte
//!   big-endian length, one JSON object).
//! - [`client`]: a blocking client (`roamctl`, tests).
//! - `tokio_client` (feature `tokio`, on by default): an async client whose reads are
//!   cancel-safe, for SDK sessions that follow pushed decisions while they report path figures.
//!
//! The server side lives in roamd (`roam-agent`): what a request means is the agent's business.
//! This crate stays lean (serde, serde_json, roam-policy, and tokio behind the default `tokio`
//! feature) so apps can speak the protocol
//! without linking the agent.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod proto;
#[cfg(feature = "tokio")]
pub mod tokio_client;

use std::path::{Path, PathBuf};

/// Where roamd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/roam/roamd.sock";

/// The socket path: the flag, else `ROAM_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ROAM_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

pub use client::ClientError;
pub use proto::{FrameError, Keepalive, Reply, Request, TcpOptions, VERSION};
