//! The embedded link monitor used when no agent runs: a link table ([`links`]) fed by a route
//! socket ([`netlink`]).
pub mod links;
pub mod netlink;
