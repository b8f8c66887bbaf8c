//! Applying decisions to the kernel, always through netlink, never by running `ip`.
//!
//! - [`routing`]: a table per interface and a source rule per address (rtnetlink).
//! - [`mptcp`]: the in-kernel MPTCP path manager's endpoints, from the device-wide default
//!   decision (generic netlink `mptcp_pm`).
//!
//! Not built yet: per-connection control through the userspace path manager for apps whose
//! decision differs from the device default (subflow create/destroy by token).
//!
//! Both remove exactly what they added, on exit and, after a crash, at the next start.
pub mod mptcp;
pub mod routing;
