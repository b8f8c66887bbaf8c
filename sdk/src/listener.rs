//! [`Listener`]: the server side. QUIC with connection migration on, so a client that moves
//! to another interface keeps its session; each accepted connection becomes a [`Session`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;

use crate::error::{Error, Result};
use crate::session::{Session, accept_server};

/// Accepts sessions on one UDP address.
#[derive(Debug)]
pub struct Listener {
    endpoint: quinn::Endpoint,
    header_timeout: Duration,
}

impl Listener {
    /// Binds `addr` with `tls` (see [`crate::tls::server_config`]; its ALPN list should
    /// start with `roam/1`). Idle timeout 30 s, keep-alive every 1 s, migration on.
    pub fn bind(addr: SocketAddr, tls: rustls::ServerConfig) -> Result<Listener> {
        let crypto =
            QuicServerConfig::try_from(tls).map_err(|e| Error::TlsConfig(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.migration(true);
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(Some(quinn::VarInt::from_u32(30_000).into()));
        t.keep_alive_interval(Some(Duration::from_secs(1)));
        cfg.transport_config(Arc::new(t));
        let endpoint = quinn::Endpoint::server(cfg, addr)
            .map_err(|e| Error::io(format!("binding the QUIC listener on {addr}"), e))?;
        tracing::info!(%addr, "listening");
        Ok(Listener {
            endpoint,
            header_timeout: Duration::from_secs(10),
        })
    }

    /// The address the listener is bound to (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))
    }

    /// Waits for the next session. A client whose handshake or session header fails is
    /// logged and skipped; only the listener's own end is an error.
    pub async fn accept(&self) -> Result<Session> {
        loop {
            let incoming = self.endpoint.accept().await.ok_or_else(|| {
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
    }

    /// Stops accepting and closes every session of this listener.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"listener closed");
    }
}
