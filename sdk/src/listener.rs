//! [`Listener`]: the server side. QUIC with connection migration on, so a client that moves
//! to another interface keeps its session; and, on the same port number, a TCP listener
//! (an MPTCP socket, which accepts plain TCP too) for the MPTCP and tcp-resume transports.
//! Each accepted connection becomes a [`Session`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::session::{Session, accept_server};

/// How many accepted sessions may wait for [`Listener::accept`].
const BACKLOG: usize = 64;

/// How many QUIC handshakes (with their session header) may be under way at once; more
/// clients wait in quinn's queue of incoming connections.
const QUIC_HANDSHAKES: usize = 256;

/// Accepts sessions on one address: UDP for QUIC, TCP (MPTCP) for the other transports.
///
/// Handshakes run concurrently, each bounded by the header timeout: a client that stalls in
/// its handshake or never sends its session header holds up no other client.
#[derive(Debug)]
pub struct Listener {
    endpoint: quinn::Endpoint,
    tcp_local: SocketAddr,
    sessions: Mutex<mpsc::Receiver<Session>>,
    /// Set when the QUIC endpoint stops accepting (closed).
    quic_closed: watch::Receiver<bool>,
    _tcp_task: crate::session::TaskHandle,
    _quic_task: crate::session::TaskHandle,
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
        let (tx, rx) = mpsc::channel(BACKLOG);
        let header_timeout = Duration::from_secs(10);
        let span = tracing::info_span!("listener", %tcp_local);
        let tcp_task = tokio::spawn(
            crate::session::tcp_accept_loop(tcp, tls, tx.clone(), header_timeout, resume_grace)
                .instrument(span.clone()),
        );
        let (closed_tx, quic_closed) = watch::channel(false);
        let quic_task = tokio::spawn(
            quic_accept_loop(endpoint.clone(), tx, header_timeout, closed_tx).instrument(span),
        );
        tracing::info!(%quic_local, %tcp_local, "listening");
        Ok(Listener {
            endpoint,
            tcp_local,
            sessions: Mutex::new(rx),
            quic_closed,
            _tcp_task: crate::session::TaskHandle::new(tcp_task.abort_handle()),
            _quic_task: crate::session::TaskHandle::new(quic_task.abort_handle()),
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
    /// fails (or takes longer than the header timeout, 10 s) is logged and skipped; a
    /// tcp-resume client coming back joins its session and is not returned again; only the
    /// listener's own end is an error.
    pub async fn accept(&self) -> Result<Session> {
        let mut sessions = self.sessions.lock().await;
        let mut closed = self.quic_closed.clone();
        tokio::select! {
            biased;
            s = sessions.recv() => s.ok_or_else(|| Error::io(
                "accepting sessions",
                std::io::Error::other("the listener stopped"),
            )),
            _ = closed.wait_for(|c| *c) => Err(Error::io(
                "accepting sessions",
                std::io::Error::other("the listener's endpoint was closed"),
            )),
        }
    }

    /// Stops accepting and closes every QUIC session of this listener.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"listener closed");
    }
}

/// Accepts QUIC connections for ever: each handshake and session header in a task of its own
/// (at most [`QUIC_HANDSHAKES`] at once), bounded by `header_timeout`; sessions go to `tx`.
/// Says `closed` when the endpoint stops.
async fn quic_accept_loop(
    endpoint: quinn::Endpoint,
    tx: mpsc::Sender<Session>,
    header_timeout: Duration,
    closed: watch::Sender<bool>,
) {
    let slots = Arc::new(Semaphore::new(QUIC_HANDSHAKES));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (tx, endpoint) = (tx.clone(), endpoint.clone());
        let peer = incoming.remote_address();
        tokio::spawn(
            async move {
                let _slot = slot;
                let handshake = async {
                    let conn = incoming
                        .await
                        .map_err(|e| Error::Protocol(format!("QUIC handshake: {e}")))?;
                    accept_server(conn, endpoint, header_timeout).await
                };
                match tokio::time::timeout(header_timeout, handshake).await {
                    Ok(Ok(s)) => {
                        tracing::info!(%peer, app = s.app().unwrap_or("default"), "session accepted");
                        let _ = tx.send(s).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "session refused"),
                    Err(_) => tracing::info!(
                        %peer,
                        "no QUIC handshake and session header within {header_timeout:?}"
                    ),
                }
            }
            .in_current_span(),
        );
    }
    let _ = closed.send(true);
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
