//! roam SDK: sessions that survive losing the interface they started on.
//!
//! This crate is being built: the QUIC sessions, the MPTCP transport and session resumption
//! over TCP arrive with their issues. Today it re-exports the decision model every roam crate
//! speaks, so apps can already read what the policy decided for them.
#![warn(missing_docs)]

pub use roam_policy::model;
