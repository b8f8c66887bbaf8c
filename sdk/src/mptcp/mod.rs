//! MPTCP from an app's side: the kernel's socket options ([`sockopt`]), the subflows' backup
//! flags from socket diagnostics ([`diag`]), and subflow control through roamd ([`control`]).
//!
//! An app's MPTCP socket can read everything about its connection without privileges (token,
//! subflows, their addresses, RTTs and byte counts; the backup flags through sock_diag, which
//! needs no privileges on Linux 6.x either) but can change nothing: creating,
//! closing and re-prioritising subflows is the path manager's job, which needs CAP_NET_ADMIN.

pub mod control;
pub mod diag;
pub mod sockopt;
