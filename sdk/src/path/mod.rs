//! Which local path a session uses, and when it moves.
//!
//! [`manager`] holds the logic as a sans-I/O state machine (inputs and `now` in, actions and the
//! next deadline out); the session's tokio driver feeds it link changes, decisions and transport
//! samples and carries out its actions (bind a socket, `Endpoint::rebind`).
//!
//! It knows nothing of sessions or transports: it imports only the ground floor
//! ([`crate::vocab`]), the policy's multipath mode and std, and says what happened as its own
//! [`manager::PathEvent`]s, which the drivers pass on to the app as [`crate::SessionEvent`]s.

pub mod manager;

pub use crate::vocab::{DegradedReason, LocalPath, MigrationReason};
