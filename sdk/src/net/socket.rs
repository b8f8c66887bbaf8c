//! UDP sockets bound to the interface that carries them: `SO_BINDTODEVICE` plus the
//! interface's address, so packets leave through that interface and no other, whatever the
//! routing table says about the destination.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::vocab::LocalPath;

/// What [`crate::SessionBuilder::socket_binder`] takes: called with the path and the socket.
pub type SocketBinderFn = dyn Fn(&LocalPath, BorrowedFd<'_>) -> io::Result<()> + Send + Sync;

/// The app's hook run on every socket a session opens, after creation and before bind (on
/// Android: put the socket on the path's `Network`). An error fails that socket, as a failed
/// bind would.
#[derive(Clone)]
pub(crate) struct SocketBinder(pub(crate) Arc<SocketBinderFn>);

impl fmt::Debug for SocketBinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SocketBinder(..)")
    }
}

impl SocketBinder {
    fn call(&self, path: &LocalPath, s: &Socket) -> io::Result<()> {
        (self.0)(path, s.as_fd())
    }
}

/// A non-blocking UDP socket on `path`, port chosen by the kernel.
pub(crate) fn bind_udp(
    path: &LocalPath,
    binder: Option<&SocketBinder>,
) -> io::Result<std::net::UdpSocket> {
    let domain = if path.local.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if path.local.is_ipv6() {
        s.set_only_v6(true)?;
    }
    bind_to_path(&s, path, binder)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Binds `s` to `path`: the app's binder first, then `SO_BINDTODEVICE` on its interface (where
/// permitted) and its address, port chosen by the kernel.
pub(crate) fn bind_to_path(
    s: &Socket,
    path: &LocalPath,
    binder: Option<&SocketBinder>,
) -> io::Result<()> {
    if let Some(b) = binder {
        b.call(path, s)?;
    }
    match s.bind_device(Some(path.interface.as_bytes())) {
        Ok(()) => {}
        // Without CAP_NET_RAW on older kernels the address alone has to do; source routing
        // (as roamd and Android set up) still keeps it on the interface.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::debug!(interface = %path.interface, "SO_BINDTODEVICE denied; bound by address only");
        }
        Err(e) => return Err(e),
    }
    s.bind(&SocketAddr::new(path.local, 0).into())
}
