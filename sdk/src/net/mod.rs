//! The network floor under the transports: sockets bound to one interface, names resolved on
//! each link, and the Happy Eyeballs race over the candidates.
//!
//! - [`socket`]: UDP sockets on a path, the app's socket hook ([`socket::SocketBinderFn`]).
//! - [`tcp`]: TCP and MPTCP sockets on a path, and their race.
//! - [`resolve`]: names resolved on the link that will carry them, through its nameservers.
//! - [`race`]: the candidates in the decision's order and the race over them (RFC 8305).
//!
//! It knows links and paths, never a session or a transport.

pub(crate) mod race;
pub(crate) mod resolve;
pub(crate) mod socket;
pub(crate) mod tcp;
