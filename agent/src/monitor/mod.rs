//! Watching the kernel: the netlink route socket ([`netlink`]), what kind of link each
//! interface is ([`classify`]) and WiFi facts ([`nl80211`]).
pub mod classify;
pub mod netlink;
pub mod nl80211;
