//! Sessions: a byte stream over one bidirectional QUIC stream that outlives the interface it
//! started on.
//!
//! - [`builder`]: [`SessionBuilder`] and the transport preference.
//! - `connect`: resolution and the Happy Eyeballs race across families and interfaces.
//! - `socket`: UDP sockets bound to an interface and its address.
//! - `driver`: the tokio task that runs a client session's [`crate::path::manager`].
//!
//! On ALPN `roam/1` the client's first bidirectional stream starts with a header: `ROAM`, a
//! version byte (1), the app id's length (one byte) and the app id. With an app's own ALPN the
//! stream carries the app's bytes only.

pub mod builder;
mod connect;
mod driver;
pub(crate) mod socket;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, broadcast};

pub use builder::{SessionBuilder, TransportPreference};

use crate::error::{Error, Result};
use crate::events::{Events, SessionEvent};
use crate::path::LocalPath;

const MAGIC: &[u8; 4] = b"ROAM";
const VERSION: u8 = 1;

/// Where a session's traffic goes now and what it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct PathInfo {
    /// The local interface (`None` on the server side, which follows the client).
    pub interface: Option<String>,
    /// The local address (the server's is its listening address).
    pub local: Option<SocketAddr>,
    /// The peer's address as this end sees it now.
    pub remote: SocketAddr,
    /// QUIC's smoothed round-trip time.
    pub rtt: Duration,
    /// UDP payload bytes sent by this connection so far.
    pub bytes_sent: u64,
    /// UDP payload bytes received by this connection so far.
    pub bytes_received: u64,
}

/// State the driver updates and the session reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) path: Mutex<Option<(LocalPath, SocketAddr)>>,
}

/// A session: a reliable, ordered byte stream (tokio [`AsyncRead`] + [`AsyncWrite`]) that
/// migrates between the device's interfaces as the policy and the paths' health say.
///
/// Made by [`Session::connect`], a [`SessionBuilder`], or a [`crate::Listener`]. Shutting the
/// writer down  ends this side of the stream; dropping the session
/// closes the connection at once, so read the peer's end first when it matters
/// (`tokio::io::AsyncWriteExt::shutdown`, then read to the end).
#[derive(Debug)]
pub struct Session {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    events: broadcast::Sender<SessionEvent>,
    shared: Arc<Shared>,
    /// Tells the driver that data is going out (client sessions).
    activity: Option<Arc<Notify>>,
    app: Option<String>,
    alpn: Vec<u8>,
    // Dropped last: keeps the socket (and the driver) alive as long as the session.
    _driver: Option<driver::Handle>,
    _endpoint: quinn::Endpoint,
}

impl Session {
    /// Connects to `target` (`host:port`) with the defaults: the built-in policy, the system's
    /// trust store, QUIC. See [`SessionBuilder`] for the rest.
    pub async fn connect(target: &str) -> Result<Session> {
        SessionBuilder::new().connect(target).await
    }

    /// A builder for a session with options.
    pub fn builder() -> SessionBuilder {
        SessionBuilder::new()
    }

    /// The app id the session was made for (the client's, as sent in the session header).
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }

    /// The negotiated ALPN protocol (`roam/1` or one of the app's).
    pub fn alpn(&self) -> &[u8] {
        &self.alpn
    }

    /// Where the session's traffic goes now, with its round-trip time and byte counts.
    pub fn path(&self) -> PathInfo {
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

    /// A receiver of this session's events (path changes, degradation, decisions). Events
    /// sent before the call are not replayed.
    pub fn events(&self) -> Events {
        Events::new(self.events.subscribe())
    }

    /// Opens another bidirectional stream on the same connection; it migrates with the
    /// session. The peer sees it with [`Session::accept_stream`] once data is written.
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        Ok(self.conn.open_bi().await?)
    }

    /// Waits for a stream the peer opened with [`Session::open_stream`].
    pub async fn accept_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        Ok(self.conn.accept_bi().await?)
    }

    /// The underlying QUIC connection, for datagrams or statistics.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Closes the connection with an application error code and reason; the peer's reads
    /// and writes fail with them.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.conn.close(code.into(), reason);
    }

    /// Closes the connection and, on a client, waits (at most 1 s) until the close has gone
    /// out, so the peer learns at once instead of after its idle timeout. Read the peer's end
    /// of the stream first: data still unacknowledged is dropped.
    pub async fn close_and_wait(self, code: u32, reason: &[u8]) {
        self.conn.close(code.into(), reason);
        if self._driver.is_some() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self._endpoint.wait_idle()).await;
        }
    }

    /// Waits until the connection is closed (by either side or by the idle timeout).
    pub async fn closed(&self) -> Error {
        Error::Connection(self.conn.closed().await)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The driver holds a handle too: without this the connection would outlive the
        // session until the driver's abort is processed.
        self.conn.close(0u32.into(), b"session dropped");
    }
}

/// Writes the session header on a fresh stream (client, ALPN `roam/1`).
async fn write_header(send: &mut quinn::SendStream, app: Option<&str>) -> Result<()> {
    let app = app.unwrap_or("");
    let len = u8::try_from(app.len())
        .map_err(|_| Error::Protocol(format!("app id of {} bytes is over 255", app.len())))?;
    let mut h = Vec::with_capacity(6 + app.len());
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(len);
    h.extend_from_slice(app.as_bytes());
    send.write_all(&h)
        .await
        .map_err(|e| Error::Stream(format!("writing the session header: {e}")))
}

/// Reads the session header (server, ALPN `roam/1`); returns the app id.
async fn read_header(recv: &mut quinn::RecvStream) -> Result<Option<String>> {
    let mut h = [0u8; 6];
    recv.read_exact(&mut h)
        .await
        .map_err(|e| Error::Protocol(format!("reading the session header: {e}")))?;
    if &h[..4] != MAGIC {
        return Err(Error::Protocol(format!("bad magic {:?}", &h[..4])));
    }
    if h[4] != VERSION {
        return Err(Error::Protocol(format!("unknown version {}", h[4])));
    }
    let mut app = vec![0u8; h[5] as usize];
    recv.read_exact(&mut app)
        .await
        .map_err(|e| Error::Protocol(format!("reading the app id: {e}")))?;
    let app =
        String::from_utf8(app).map_err(|_| Error::Protocol("the app id is not UTF-8".into()))?;
    Ok((!app.is_empty()).then_some(app))
}

fn negotiated_alpn(conn: &quinn::Connection) -> Vec<u8> {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .unwrap_or_default()
}

impl AsyncRead for Session {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        AsyncRead::poll_read(Pin::new(&mut self.recv), cx, buf)
    }
}

impl AsyncWrite for Session {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf);
        if let (Poll::Ready(Ok(_)), Some(a)) = (&r, &self.activity) {
            a.notify_one();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

/// The server side of a session on an accepted connection: waits for the client's first
/// stream and, on ALPN `roam/1`, its header.
pub(crate) async fn accept_server(
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    header_timeout: Duration,
) -> Result<Session> {
    let alpn = negotiated_alpn(&conn);
    let remote = conn.remote_address();
    let accept = async {
        let (send, mut recv) = conn.accept_bi().await?;
        let app = if alpn == crate::tls::ALPN {
            read_header(&mut recv).await?
        } else {
            None
        };
        Ok::<_, Error>((send, recv, app))
    };
    let (send, recv, app) = tokio::time::timeout(header_timeout, accept)
        .await
        .map_err(|_| Error::Timeout {
            what: format!("the first stream of {remote}"),
            limit: header_timeout,
        })??;
    let (events, _) = broadcast::channel(64);
    Ok(Session {
        conn,
        send,
        recv,
        events,
        shared: Arc::new(Shared {
            path: Mutex::new(None),
        }),
        activity: None,
        app,
        alpn,
        _driver: None,
        _endpoint: endpoint,
    })
}
