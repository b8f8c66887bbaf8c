//! TCP and MPTCP sockets bound to the interface that carries them, and the Happy Eyeballs race
//! of the TCP transports over the decision's candidates (through [`super::race`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

use super::socket::{SocketBinder, bind_to_path};
use crate::error::{Error, Result};
use crate::vocab::LocalPath;

/// Which stream protocol a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamProto {
    /// `IPPROTO_MPTCP`: the kernel falls back to TCP by itself when the peer or a middlebox
    /// does not carry MPTCP.
    Mptcp,
    /// Plain `IPPROTO_TCP`.
    Tcp,
}

/// Opens a stream socket of `proto` bound to `path` (device and address) and connects it to
/// `peer` without blocking the runtime.
pub(crate) async fn connect_bound(
    path: &LocalPath,
    peer: SocketAddr,
    proto: StreamProto,
    binder: Option<&SocketBinder>,
) -> io::Result<TcpStream> {
    let domain = Domain::for_address(peer);
    let p = match proto {
        StreamProto::Mptcp => Protocol::MPTCP,
        StreamProto::Tcp => Protocol::TCP,
    };
    let s = Socket::new(domain, Type::STREAM, Some(p))?;
    bind_to_path(&s, path, binder)?;
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    match s.connect(&peer.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(s))?;
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    // A refused connection can also show as "not connected" once writable.
    stream.peer_addr()?;
    Ok(stream)
}

/// Races TCP (or MPTCP) connects over the candidates (see [`super::race::race`]).
pub(crate) async fn race(
    cands: &[(LocalPath, SocketAddr)],
    delay: Duration,
    proto: StreamProto,
    binder: Option<SocketBinder>,
) -> Result<(LocalPath, TcpStream)> {
    super::race::race(cands, delay, move |path, peer| {
        let binder = binder.clone();
        async move {
            tracing::debug!(%path, %peer, ?proto, "TCP candidate");
            match connect_bound(&path, peer, proto, binder.as_ref()).await {
                Ok(s) => Ok((path, s)),
                Err(e) => Err(stream_connect_error(&path, peer, e)),
            }
        }
    })
    .await
}

/// A failed TCP connect in the error an app reacts to.
pub(crate) fn stream_connect_error(path: &LocalPath, peer: SocketAddr, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        Error::Refused {
            peer,
            detail: format!("TCP connection from {path} refused"),
        }
    } else {
        Error::io(format!("connecting to {peer} from {path}"), e)
    }
}
