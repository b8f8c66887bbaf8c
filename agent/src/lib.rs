//! roamd, the roam agent, and roamctl, its command line.
//!
//! Layout, by layer:
//! - [`core`]: the sans-I/O state machine (link table, probe pacing, decisions, pushes, the
//!   client table and its permission rules): the `roam-agent-core` crate in `agent/core/`.
//! - `monitor`: the netlink route socket and interface classification.
//! - `probe`: the UDP echo prober's sockets and the reflector.
//! - `ipc`: the Unix socket protocol between roamd and apps (the `roam-ipc` crate, `ipc/PROTOCOL.md`).
//! - `enforce`: policy routing (rtnetlink) and MPTCP endpoints (`mptcp_pm`).
//! - `config`: the TOML config file.
//! - `daemon`: the tokio shell that wires them together.
//! - [`priority`]: the loop's and the clients' thread priorities.
#![warn(missing_docs)]

mod caps;
pub mod config;
pub use roam_agent_core as core;
pub mod daemon;
pub mod enforce;
mod genl;
pub mod ipc;
pub mod monitor;
mod nlreq;
pub mod policy_cmd;
pub mod priority;
pub mod probe;
