//! UDP sockets bound to the interface that carries them: `SO_BINDTODEVICE` plus the
//! interface's address, so packets leave through that interface and no other, whatever the
//! routing table says about the destination.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::path::LocalPath;

/// A non-blocking UDP socket on `path`, port chosen by the kernel.
pub(crate) fn bind_udp(path: &LocalPath) -> io::Result<std::net::UdpSocket> {
    let domain = if path.local.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if path.local.is_ipv6() {
        s.set_only_v6(true)?;
    }
    bind_to_path(&s, path)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Binds `s` to `path`: `SO_BINDTODEVICE` on its interface (where permitted) and its address,
/// port chosen by the kernel.
pub(crate) fn bind_to_path(s: &Socket, path: &LocalPath) -> io::Result<()> {
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
