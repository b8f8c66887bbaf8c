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

use std::io;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr};

/// A blocking netlink socket for requests (`NETLINK_ROUTE`, `NETLINK_GENERIC`), connected to
/// the kernel. The kernel handles these requests inside `sendmsg`, so the answer is queued
/// before `recv` is called; the 1 s receive timeout only guards against the unexpected.
fn request_socket(protocol: isize) -> io::Result<Socket> {
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket2::SockRef::from(&socket).set_read_timeout(Some(Duration::from_secs(1)))?;
    Ok(socket)
}
