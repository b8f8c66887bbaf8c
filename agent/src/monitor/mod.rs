//! Watching the kernel: the netlink route socket ([`netlink`]) and what kind of link each
//! interface is ([`classify`]).
pub mod classify;
pub mod netlink;
