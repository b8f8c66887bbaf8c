//! The QUIC transport on noq: the session is one bidirectional stream of a noq connection.
//! With a peer that negotiates multipath (RFC 10069), the session's paths are the
//! connection's paths, each on its own interface's socket; with a peer that does not, the
//! connection moves between interfaces as an RFC 9000 migration.
//!
//! - `connect`: the client's handshake, raced over the candidates.
//! - `accept`: the server's side of an accepted connection (first stream and header).
//! - `driver`: the tokio task that runs a client session's [`crate::path::manager`] and opens,
//!   ranks and closes its paths.
//! - `sockets`: one UDP socket per interface under one endpoint.

mod accept;
mod connect;
mod driver;
mod sockets;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use noq::PathId;
use tokio::sync::Notify;
use tokio_stream::Stream as _;

pub(crate) use accept::accept_loop;
pub(crate) use connect::connect;

use crate::error::{Error, Result};
use crate::transport::TaskHandle;
use crate::vocab::{LocalPath, PathInfo};

/// How many paths one connection may have open at once (each side's limit). A handset has
/// two or three links; the rest is room for a path being replaced while its successor opens.
const MAX_PATHS: u32 = 8;

/// State the driver (client) or the path watcher (server) updates and the session reads.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The client's primary path: its local path and socket address.
    pub(crate) path: Mutex<Option<(LocalPath, SocketAddr)>>,
    /// The connection path the session reports: the client's primary, the server's most
    /// recently active one.
    pub(crate) primary: Mutex<PathId>,
    /// The server's open paths with the bytes each had received when last looked at.
    seen: Mutex<Vec<(PathId, u64)>>,
    /// The peer's address when the session started (reported when no path is open).
    remote: SocketAddr,
}

impl Shared {
    pub(crate) fn new(path: Option<(LocalPath, SocketAddr)>, remote: SocketAddr) -> Self {
        Shared {
            path: Mutex::new(path),
            primary: Mutex::new(PathId::ZERO),
            seen: Mutex::new(vec![(PathId::ZERO, 0)]),
            remote,
        }
    }

    pub(crate) fn primary(&self) -> PathId {
        *self.primary.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_primary(&self, id: PathId) {
        *self.primary.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    /// Server side: the open path that received the most since the last look becomes the
    /// reported one (a client that moves sends its data on its new path).
    fn follow_traffic(&self, conn: &noq::Connection) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut best: Option<(PathId, u64)> = None;
        for (id, last) in seen.iter_mut() {
            let Some(p) = conn.path(*id) else { continue };
            let rx = p.stats().udp_rx.bytes;
            let grew = rx.saturating_sub(*last);
            *last = rx;
            if grew > 0 && best.is_none_or(|(_, g)| grew > g) {
                best = Some((*id, grew));
            }
        }
        if let Some((id, _)) = best {
            self.set_primary(id);
        }
    }

    /// Server side: keeps the list of open paths as the client opens and closes them.
    pub(crate) fn watch_paths(self: &Arc<Self>, conn: &noq::Connection) -> TaskHandle {
        let mut events = conn.path_events();
        let shared = Arc::downgrade(self);
        TaskHandle::new(
            tokio::spawn(async move {
                while let Some(e) =
                    std::future::poll_fn(|cx| Pin::new(&mut events).poll_next(cx)).await
                {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    let mut seen = shared.seen.lock().unwrap_or_else(|p| p.into_inner());
                    match e {
                        Ok(noq::PathEvent::Established { id, .. }) => {
                            if !seen.iter().any(|(i, _)| *i == id) {
                                seen.push((id, 0));
                            }
                        }
                        Ok(noq::PathEvent::Discarded { id, .. }) => seen.retain(|(i, _)| *i != id),
                        Ok(_) => {}
                        // Missed events: the next look skips paths that are gone.
                        Err(noq::Lagged(n)) => tracing::debug!(missed = n, "path events lagged"),
                    }
                }
            })
            .abort_handle(),
        )
    }
}

/// The QUIC parts of a session.
#[derive(Debug)]
pub(crate) struct QuicStream {
    pub(crate) conn: noq::Connection,
    pub(crate) send: noq::SendStream,
    pub(crate) recv: noq::RecvStream,
    shared: Arc<Shared>,
    /// Tells the driver that data is going out; `None` on the server side.
    pub(crate) activity: Option<Arc<Notify>>,
    // Dropped last: keeps the sockets (and the driver, or the server's path watcher) alive as
    // long as the session.
    pub(crate) _driver: Option<TaskHandle>,
    pub(crate) endpoint: noq::Endpoint,
}

impl QuicStream {
    /// Where the connection's traffic goes now: the primary path's addresses and RTT, and
    /// the byte counts of all its paths.
    pub(crate) fn path(&self) -> PathInfo {
        if self.activity.is_none() {
            // Server side: no driver says which path is the client's primary.
            self.shared.follow_traffic(&self.conn);
        }
        let stats = self.conn.stats();
        let local = self
            .shared
            .path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let primary = self.conn.path(self.shared.primary());
        PathInfo {
            interface: local.as_ref().map(|(p, _)| p.interface.clone()),
            local: local.map(|(_, a)| a),
            remote: primary
                .as_ref()
                .and_then(|p| p.remote_address().ok())
                .unwrap_or(self.shared.remote),
            rtt: primary.map(|p| p.stats().rtt).unwrap_or_default(),
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
fn negotiated_alpn(conn: &noq::Connection) -> Vec<u8> {
    conn.handshake_data()
        .and_then(|d| d.downcast::<noq::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .unwrap_or_default()
}

/// The RTT noq assumes on a path it has no sample for: 100 ms (Google's QUIC stacks use the
/// same; RFC 9002's default is 333 ms). It sets the first timeout of a path's validation, which
/// is what the peer of a session that moved waits on when its PATH_CHALLENGE goes unanswered:
/// a server sees a migrated path from a new address as a new path (noq-proto 1.4 `migrate`:
/// fresh RTT state, no data and no ACKs there until validated) and challenges it again only
/// after `3 x initial RTT`. Caught at trace in `handover-bench --transport quic --scenario
/// blackhole` (3 of 12 repeats, plain veth): the first challenge went unanswered, the retry
/// came exactly 1.000 s later and the blackhole's gap was 1,065-1,106 ms. With 100 ms the retry
/// comes after 300 ms. On a path slower than that a handshake may send one needless probe.
const INITIAL_RTT: Duration = Duration::from_millis(100);

/// The transport settings both sides use: the idle timeout and keep-alive asked for, and
/// multipath offered (a peer that does not offer it gets RFC 9000 migration).
pub(crate) fn transport_config(
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
) -> Result<noq::TransportConfig> {
    let mut t = noq::TransportConfig::default();
    t.max_idle_timeout(Some(noq::IdleTimeout::try_from(idle_timeout).map_err(
        |_| Error::TlsConfig(format!("idle timeout {idle_timeout:?} is too large")),
    )?));
    t.keep_alive_interval(keep_alive);
    t.max_concurrent_multipath_paths(MAX_PATHS);
    // noq fills its paths in order: the second path carries data only while the first one's
    // congestion window is full. Cubic grows a window into a link's whole queue (a phone's
    // link buffer: measured 16 MB on a 50 Mbit/s path with a 100 ms queue, RTT 3 -> 20 ms),
    // so the first path never fills and the second stays idle; BBR (v3) keeps a window of
    // about two bandwidth-delay products, so both carry data (measured: two 100 Mbit/s paths,
    // 187 Mbit/s against 117 with Cubic), and a blackhole strands less data in flight (gap
    // 68 ms against 124 ms on plain veth). The stream windows stay noq's: with 8 MiB ones a
    // blackhole at 50 ms RTT left the receiver more than noq's 1024 gaps to reassemble and it
    // closed the connection ("too many gaps in stream buffer").
    t.congestion_controller_factory(Arc::new(noq::congestion::Bbr3Config::default()));
    t.initial_rtt(INITIAL_RTT);
    Ok(t)
}
