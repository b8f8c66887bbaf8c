//! Applying decisions to the kernel, always through netlink, never by running `ip`.
//!
//! Built: policy routing ([`routing`]). Not built yet: MPTCP endpoints and the userspace path
//! manager (`mptcp_pm`); until then the agent decides and tells apps, and the kernel's own
//! MPTCP path manager acts on its own.
pub mod routing;
