//! MPTCP from an app's side: the kernel's socket options ([`sockopt`]) and subflow control
//! through roamd ([`control`]).
//!
//! An app's MPTCP socket can read everything about its connection without privileges (token,
//! subflows, their addresses, RTTs and byte counts) but can change nothing: creating,
//! closing and re-prioritising subflows is the path manager's job, which needs CAP_NET_ADMIN.

pub mod control;
pub mod sockopt;
