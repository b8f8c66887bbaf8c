//! The QUIC transport: the session is one bidirectional stream of a quinn connection, and the
//! connection moves between interfaces with `Endpoint::rebind`.
//!
//! - `connect`: the client's handshake, raced over the candidates.
//! - `accept`: the server's side of an accepted connection (first stream and header).
//! - `driver`: the tokio task that runs a client session's [`crate::path::manager`].

mod accept;
mod connect;
mod driver;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub(crate) use accept::accept_loop;
pub(crate) use connect::connect;

use crate::transport::TaskHandle;
use crate::vocab::{LocalPath, PathInfo};

/// State the driver updates and the session reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) path: Mutex<Option<(LocalPath, SocketAddr)>>,
}

/// The QUIC parts of a session.
#[derive(Debug)]
pub(crate) struct QuicStream {
    pub(crate) conn: quinn::Connection,
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    shared: Arc<Shared>,
    /// Tells the driver that data is going out (client sessions).
    pub(crate) activity: Option<Arc<Notify>>,
    // Dropped last: keeps the socket (and the driver) alive as long as the session.
    pub(crate) _driver: Option<TaskHandle>,
    pub(crate) endpoint: quinn::Endpoint,
}

impl QuicStream {
    /// Where the connection's traffic goes now, with quinn's RTT and byte counts.
    pub(crate) fn path(&self) -> PathInfo {
        let stats = self.conn.stats();
        let local = self
            .shared
            .path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        PathInfo {
            interface: local.as_ref().map(|(p, _)| p.interface.clone()),
            local: local.map(|(_, a)| a),
            remote: self.conn.remote_address(),
            rtt: stats.path.rtt,
            bytes_sent: stats.udp_tx.bytes,
            bytes_received: stats.udp_rx.bytes,
        }
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        // The driver holds a handle too: without this the connection would outlive the
        // session until the driver's abort is processed.
        self.conn.close(0u32.into(), b"session dropped");
    }
}

/// The ALPN protocol the handshake settled on (empty when none).
fn negotiated_alpn(conn: &quinn::Connection) -> Vec<u8> {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .unwrap_or_default()
}
