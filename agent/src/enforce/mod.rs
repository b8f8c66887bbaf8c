//! Applying decisions to the kernel, always through netlink, never by running `ip`.
//!
//! - [`routing`]: a table per interface and a source rule per address (rtnetlink).
//! - [`mptcp`]: the in-kernel MPTCP path manager's endpoints, from the device-wide default
//!   decision (generic netlink `mptcp_pm`).
//!
//! - [`userspace_pm`]: per-connection subflow control through the userspace path manager
//!   (subflow create/destroy and MP_PRIO by connection token) and its event stream, for
//!   connections apps registered (`[mptcp] userspace = true`).
//!
//! - [`subflow_opts`]: TCP options for one subflow (`mptcp_subflow_create` with `options`),
//!   set by a BPF sock_ops program roamd loads and attaches to a cgroup with a bpf_link, so it
//!   goes away with roamd.
//!
//! Both remove exactly what they added, on exit and, after a crash, at the next start.
pub mod mptcp;
pub mod routing;
pub mod subflow_opts;
pub mod userspace_pm;
