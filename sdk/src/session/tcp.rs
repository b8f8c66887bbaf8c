//! TCP and MPTCP sockets bound to the interface that carries them, and the Happy Eyeballs race
//! of the TCP transports over the decision's candidates (the QUIC race is in `connect`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Session;

use crate::error::{Error, Result};
use crate::path::LocalPath;

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
    binder: Option<&super::socket::SocketBinder>,
) -> io::Result<TcpStream> {
    let domain = Domain::for_address(peer);
    let p = match proto {
        StreamProto::Mptcp => Protocol::MPTCP,
        StreamProto::Tcp => Protocol::TCP,
    };
    let s = Socket::new(domain, Type::STREAM, Some(p))?;
    super::socket::bind_to_path(&s, path, binder)?;
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

/// Races TCP (or MPTCP) connects over the candidates (see `connect::race`).
pub(crate) async fn race(
    cands: &[(LocalPath, SocketAddr)],
    delay: Duration,
    proto: StreamProto,
    binder: Option<super::socket::SocketBinder>,
) -> Result<(LocalPath, TcpStream)> {
    super::connect::race(cands, delay, move |path, peer| {
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

/// Accepts TCP (and MPTCP) connections for a [`crate::Listener`]: each gets its TLS handshake
/// and header in a task of its own (a slow client holds up no one), then becomes a session
/// sent to `tx`, or joins the detached tcp-resume session it proves it owns.
pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    tx: mpsc::Sender<Session>,
    header_timeout: Duration,
    resume_grace: Duration,
) {
    let registry = super::resume::Registry::new(resume_grace);
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: the listener stays; wait a little so as not to spin.
                tracing::warn!(error = %e, "accepting a TCP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let _ = sock.set_nodelay(true);
        let (tls, tx, registry) = (tls.clone(), tx.clone(), registry.clone());
        tokio::spawn(
            async move {
                let handshake = async {
                    let mut s = super::tls_stream::accept(sock, tls)
                        .await
                        .map_err(|e| Error::io("TLS handshake", e))?;
                    let roam = s.alpn() == crate::tls::ALPN;
                    if !roam {
                        return Ok(Some(super::mptcp::accept_stream_server(s, false).await?));
                    }
                    let magic = super::mptcp::read_magic(&mut s).await?;
                    match &magic {
                        super::MAGIC => Ok(Some(super::mptcp::accept_stream_server(s, true).await?)),
                        super::resume::MAGIC => registry.accept(s, peer).await,
                        other => Err(Error::Protocol(format!("bad magic {other:?}"))),
                    }
                };
                match tokio::time::timeout(header_timeout, handshake).await {
                    Ok(Ok(Some(session))) => {
                        tracing::info!(%peer, transport = %session.transport(), app = session.app().unwrap_or("default"), "session accepted");
                        let _ = tx.send(session).await;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TCP session refused"),
                    Err(_) => tracing::info!(%peer, "TCP client sent no header in time"),
                }
            }
            .in_current_span(),
        );
    }
}
