//! Which local path a session uses, and when it moves.
//!
//! [`manager`] holds the logic as a sans-I/O state machine (inputs and `now` in, actions and the
//! next deadline out); the session's tokio driver feeds it link changes, decisions and transport
//! samples and carries out its actions (bind a socket, `Endpoint::rebind`).

pub mod manager;

pub use crate::vocab::{DegradedReason, LocalPath, MigrationReason};
