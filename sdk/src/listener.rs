//! [`Listener`]: the server side. QUIC with connection migration on, so a client that moves
//! to another interface keeps its session; and, on the same port number, a TCP listener
//! (an MPTCP socket, which accepts plain TCP too) for the MPTCP and tcp-resume transports.
//! Each accepted connection becomes a [`Session`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{Mutex, mpsc};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::session::{Session, accept_server};

/// How many accepted TCP sessions may wait for [`Listener::accept`].
const TCP_BACKLOG: usize = 64;

/// Accepts sessions on one address: UDP for QUIC, TCP (MPTCP) for the other transports.
#[derive(Debug)]
pub struct Listener {
    endpoint: quinn::Endpoint,
    header_timeout: Duration,
    tcp_local: SocketAddr,
    tcp_sessions: Mutex<mpsc::Receiver<Session>>,
    _tcp_task: crate::session::TaskHandle,
}

impl Listener {
    /// Binds `addr` with `tls` (see [`crate::tls::server_config`]; its ALPN list should
    /// start with `roam/1`). QUIC: idle timeout 30 s, keep-alive every 1 s, migration on.
    /// TCP: the same port number, an MPTCP socket when the kernel has MPTCP (it accepts plain
    /// TCP too), else a TCP one. Detached tcp-resume sessions wait 30 s for their client
    /// ([`Listener::bind_with_grace`] chooses).
    pub fn bind(addr: SocketAddr, tls: rustls::ServerConfig) -> Result<Listener> {
        Listener::bind_with_grace(addr, tls, crate::session::DEFAULT_RESUME_GRACE)
    }

    /// [`Listener::bind`] with the time a detached tcp-resume session is kept for its client
    /// to come back before it is freed.
    pub fn bind_with_grace(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        resume_grace: Duration,
    ) -> Result<Listener> {
        let tls = Arc::new(tls);
        let crypto =
            QuicServerConfig::try_from(tls.clone()).map_err(|e| Error::TlsConfig(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.migration(true);
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(Some(quinn::VarInt::from_u32(30_000).into()));
        t.keep_alive_interval(Some(Duration::from_secs(1)));
        cfg.transport_config(Arc::new(t));
        let endpoint = quinn::Endpoint::server(cfg, addr)
            .map_err(|e| Error::io(format!("binding the QUIC listener on {addr}"), e))?;
        let quic_local = endpoint
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        let tcp_addr = SocketAddr::new(addr.ip(), quic_local.port());
        let tcp = bind_stream_listener(tcp_addr)?;
        let tcp_local = tcp
            .local_addr()
            .map_err(|e| Error::io("reading the TCP listener's address", e))?;
        let (tx, rx) = mpsc::channel(TCP_BACKLOG);
        let header_timeout = Duration::from_secs(10);
        let span = tracing::info_span!("listener", %tcp_local);
        let task = tokio::spawn(
            crate::session::tcp_accept_loop(tcp, tls, tx, header_timeout, resume_grace)
                .instrument(span),
        );
        tracing::info!(%quic_local, %tcp_local, "listening");
        Ok(Listener {
            endpoint,
            header_timeout,
            tcp_local,
            tcp_sessions: Mutex::new(rx),
            _tcp_task: crate::session::TaskHandle::new(task.abort_handle()),
        })
    }

    /// The address the listener is bound to (with the port the kernel chose for port 0); the
    /// TCP listener has the same port number.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))
    }

    /// The TCP (MPTCP) listener's address.
    pub fn tcp_local_addr(&self) -> SocketAddr {
        self.tcp_local
    }

    /// Waits for the next session, QUIC or TCP. A client whose handshake or session header
    /// fails is logged and skipped; a tcp-resume client coming back joins its session and is
    /// not returned again; only the listener's own end is an error.
    pub async fn accept(&self) -> Result<Session> {
        let mut tcp = self.tcp_sessions.lock().await;
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let incoming = incoming.ok_or_else(|| {
                        Error::io(
                            "accepting sessions",
                            std::io::Error::other("the listener's endpoint was closed"),
                        )
                    })?;
                    let peer = incoming.remote_address();
                    let conn = match incoming.await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::info!(%peer, error = %e, "handshake failed");
                            continue;
                        }
                    };
                    match accept_server(conn, self.endpoint.clone(), self.header_timeout).await {
                        Ok(s) => {
                            tracing::info!(%peer, app = s.app().unwrap_or("default"), "session accepted");
                            return Ok(s);
                        }
                        Err(e) => tracing::info!(%peer, error = %e, "session refused"),
                    }
                }
                s = tcp.recv() => {
                    return s.ok_or_else(|| Error::io(
                        "accepting sessions",
                        std::io::Error::other("the TCP listener stopped"),
                    ));
                }
            }
        }
    }

    /// Stops accepting and closes every QUIC session of this listener.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"listener closed");
    }
}

/// A listening stream socket on `addr`: MPTCP when the kernel has it, else TCP.
fn bind_stream_listener(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let what = || format!("binding the TCP listener on {addr}");
    let domain = Domain::for_address(addr);
    let sock = match Socket::new(domain, Type::STREAM, Some(Protocol::MPTCP)) {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, "no MPTCP in this kernel; the TCP listener is plain TCP");
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
                .map_err(|e| Error::io(what(), e))?
        }
    };
    sock.set_reuse_address(true)
        .map_err(|e| Error::io(what(), e))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true).map_err(|e| Error::io(what(), e))?;
    }
    sock.bind(&addr.into()).map_err(|e| Error::io(what(), e))?;
    sock.listen(128).map_err(|e| Error::io(what(), e))?;
    sock.set_nonblocking(true)
        .map_err(|e| Error::io(what(), e))?;
    tokio::net::TcpListener::from_std(sock.into()).map_err(|e| Error::io(what(), e))
}
