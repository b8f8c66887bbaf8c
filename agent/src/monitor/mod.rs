//! Watching the kernel: the netlink route socket ([`netlink`]), what kind of link each
//! interface is ([`classify`]), WiFi facts ([`nl80211`]) and packet counters ([`counters`]).
pub mod classify;
pub mod counters;
pub mod netlink;
pub mod nl80211;
