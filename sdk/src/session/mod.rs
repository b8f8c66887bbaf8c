//! Sessions: a byte stream that outlives the interface it started on, over QUIC (one
//! bidirectional stream), MPTCP (TLS over an MPTCP socket) or TCP with resumption.
//!
//! - [`builder`]: [`SessionBuilder`] and the transport preference.
//! - `connect`: the Happy Eyeballs race across families and interfaces.
//! - `resolve`: names resolved on each link through its own nameservers.
//! - `socket`, `tcp`: UDP, TCP and MPTCP sockets bound to an interface and its address.
//! - `driver`: the tokio task that runs a client session's [`crate::path::manager`].
//! - `mptcp`: the MPTCP transport: subflows, fallback detection, the kernel's view.
//! - `options`: TCP options of a session's connection and of one MPTCP subflow.
//! - `tls_stream`: rustls over the TCP transports.
//!
//! On ALPN `roam/1` the client's first bidirectional stream (QUIC) or the TLS stream (TCP
//! transports) starts with a header: `ROAM`, a version byte (1), the app id's length (one byte)
//! and the app id. With an app's own ALPN a QUIC stream carries the app's bytes only.

pub mod builder;
mod connect;
mod driver;
mod mptcp;
mod options;
mod resolve;
mod resume;
pub(crate) mod socket;

pub use options::{Keepalive, TcpOptions};
pub use socket::SocketBinderFn;
mod tcp;
mod tls_stream;

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

/// The transport a session runs on (what `auto` chose, or what was asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// QUIC with connection migration.
    Quic,
    /// Multipath TCP: subflows on several interfaces at once.
    Mptcp,
    /// TCP with roam's resumption layer (sdk/RESUME.md).
    TcpResume,
    /// Plain TCP: an MPTCP connection whose peer or path removed MPTCP, with no resumption
    /// layer to fall back on (the peer is not a roam listener, or an app ALPN is in use).
    Tcp,
}

impl Transport {
    /// The word used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Mptcp => "mptcp",
            Transport::TcpResume => "tcp-resume",
            Transport::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a session's traffic goes now and what it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct PathInfo {
    /// The local interface (`None` on the server side, which follows the client).
    pub interface: Option<String>,
    /// The local address (the server's is its listening address).
    pub local: Option<SocketAddr>,
    /// The peer's address as this end sees it now.
    pub remote: SocketAddr,
    /// The smoothed round-trip time (QUIC's, or the TCP subflow's).
    pub rtt: Duration,
    /// Bytes sent by this connection so far (UDP payload for QUIC, TCP payload otherwise).
    pub bytes_sent: u64,
    /// Bytes received by this connection so far.
    pub bytes_received: u64,
}

/// One path of a session as the kernel (MPTCP subflows, TCP) or quinn sees it: what
/// [`Session::paths`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subflow {
    /// The subflow id the kernel gave (1 for MPTCP's initial subflow); 0 where the kernel does
    /// not say (kernels before 6.5) or for the single path of QUIC and TCP.
    pub id: u32,
    /// The local address and port.
    pub local: Option<SocketAddr>,
    /// The remote address and port.
    pub remote: Option<SocketAddr>,
    /// The interface owning the local address, when this end knows it.
    pub interface: Option<String>,
    /// Whether the subflow is a backup: `true` when either end marked it so (MP_JOIN's backup
    /// bit or MP_PRIO; `ss -tni` shows `b` for this end, `B` for the peer), and the kernel's
    /// scheduler sends on it only when no other subflow can. For MPTCP it is read through
    /// socket diagnostics ([`crate::mptcp::diag`]), which any process may use on Linux 6.x;
    /// `None` when the kernel does not say (a kernel that shows the subflows' ULP data only to
    /// CAP_NET_ADMIN, a subflow gone between the two reads). Always `Some(false)` for QUIC and
    /// plain TCP.
    pub backup: Option<bool>,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Bytes sent on this subflow (retransmissions included), when the kernel reports it.
    pub bytes_sent: Option<u64>,
    /// Bytes acknowledged by the peer on this subflow.
    pub bytes_acked: Option<u64>,
    /// Bytes received on this subflow.
    pub bytes_received: Option<u64>,
}

/// State the driver updates and the session reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) path: Mutex<Option<(LocalPath, SocketAddr)>>,
}

/// The QUIC parts of a session.
#[derive(Debug)]
pub(crate) struct Quic {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    shared: Arc<Shared>,
    /// Tells the driver that data is going out (client sessions).
    activity: Option<Arc<Notify>>,
    // Dropped last: keeps the socket (and the driver) alive as long as the session.
    _driver: Option<driver::Handle>,
    endpoint: quinn::Endpoint,
}

#[derive(Debug)]
enum Inner {
    Quic(Quic),
    Stream(Box<mptcp::StreamSession>),
    Resume(Box<resume::ResumeStream>),
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
    inner: Inner,
    events: broadcast::Sender<SessionEvent>,
    app: Option<String>,
    alpn: Vec<u8>,
    transport: Transport,
    /// What the session said while connecting; replayed to every [`Events`].
    connect_events: Vec<SessionEvent>,
}

impl Session {
    /// Connects to `target` (`host:port`) with the defaults: the built-in policy, the system's
    /// trust store, `auto` transport. See [`SessionBuilder`] for the rest.
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

    /// The transport the session runs on. With `auto`, the one it chose (also told as
    /// [`SessionEvent::TransportChosen`]); an MPTCP session whose path stripped MPTCP says
    /// [`Transport::TcpResume`] or [`Transport::Tcp`] here.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Where the session's traffic goes now, with its round-trip time and byte counts. For
    /// MPTCP: the lowest-numbered subflow that is established (see [`Session::paths`] for all).
    pub fn path(&self) -> PathInfo {
        match &self.inner {
            Inner::Quic(q) => q.path(),
            Inner::Stream(s) => s.path(),
            Inner::Resume(r) => r.path(),
        }
    }

    /// Every path of the session: each MPTCP subflow with its id, addresses, interface, RTT
    /// and bytes (`MPTCP_FULL_INFO`, or `MPTCP_SUBFLOW_ADDRS` + `MPTCP_TCPINFO` on kernels
    /// before 6.5); the one connection of QUIC and TCP sessions.
    ///
    /// For MPTCP, `backup` comes from socket diagnostics (one `NETLINK_SOCK_DIAG` lookup per
    /// subflow): the kernel reports the MP_PRIO flags there, not through `SOL_MPTCP` options.
    pub fn paths(&self) -> Vec<Subflow> {
        match &self.inner {
            Inner::Quic(q) => {
                let p = q.path();
                vec![Subflow {
                    id: 0,
                    local: p.local,
                    remote: Some(p.remote),
                    interface: p.interface,
                    backup: Some(false),
                    rtt: p.rtt,
                    bytes_sent: Some(p.bytes_sent),
                    bytes_acked: None,
                    bytes_received: Some(p.bytes_received),
                }]
            }
            Inner::Stream(s) => s.paths(),
            Inner::Resume(r) => r.paths(),
        }
    }

    /// Every local address the session sends from (one per path; duplicates removed): the
    /// multipath `getsockname`.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.paths().into_iter().filter_map(|p| p.local).collect();
        v.dedup();
        v
    }

    /// Every peer address the session reaches (one per path; duplicates removed): the
    /// multipath `getpeername`.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = Vec::new();
        for a in self.paths().into_iter().filter_map(|p| p.remote) {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }

    /// The MPTCP connection token (what the userspace path manager names it by); `None` for
    /// other transports and fallen-back connections.
    pub fn mptcp_token(&self) -> Option<u32> {
        match &self.inner {
            Inner::Stream(s) => s.token(),
            Inner::Quic(_) | Inner::Resume(_) => None,
        }
    }

    fn mptcp_control(&self, what: &'static str) -> Result<(&mptcp::StreamSession, u32)> {
        let not_here = || Error::NotOnThisTransport {
            what,
            transport: self.transport.as_str(),
        };
        match &self.inner {
            Inner::Stream(s) => Ok((s, s.token().ok_or_else(not_here)?)),
            _ => Err(not_here()),
        }
    }

    fn subflow(&self, what: &'static str, id: u32) -> Result<(SocketAddr, SocketAddr)> {
        self.paths()
            .into_iter()
            .find(|p| p.id == id)
            .and_then(|p| Some((p.local?, p.remote?)))
            .ok_or_else(|| Error::Stream(format!("{what}: the session has no subflow {id}")))
    }

    /// Opens an MPTCP subflow from `local` to `remote` through the path manager (roamd: it
    /// needs CAP_NET_ADMIN). Without roamd: [`Error::AgentRequired`]. Other transports:
    /// [`Error::NotOnThisTransport`].
    pub async fn open_path(&self, local: SocketAddr, remote: SocketAddr) -> Result<()> {
        let (s, token) = self.mptcp_control("open_path")?;
        s.control
            .request(crate::mptcp::control::PathRequest::Open {
                token,
                local,
                remote,
                backup: false,
            })
            .await
    }

    /// Closes the MPTCP subflow `id` (see [`Session::paths`]) through roamd.
    pub async fn close_path(&self, id: u32) -> Result<()> {
        let (s, token) = self.mptcp_control("close_path")?;
        let (local, remote) = self.subflow("close_path", id)?;
        s.control
            .request(crate::mptcp::control::PathRequest::Close {
                token,
                local,
                remote,
            })
            .await
    }

    /// Sets or clears the backup flag (MP_PRIO) of the MPTCP subflow `id` through roamd.
    pub async fn set_backup(&self, id: u32, backup: bool) -> Result<()> {
        let (s, token) = self.mptcp_control("set_backup")?;
        let (local, remote) = self.subflow("set_backup", id)?;
        s.control
            .request(crate::mptcp::control::PathRequest::SetBackup {
                token,
                local,
                remote,
                backup,
            })
            .await
    }

    /// A receiver of this session's events (path changes, degradation, decisions). The
    /// connect-time events come first; later events sent before the call are not replayed.
    pub fn events(&self) -> Events {
        Events::new(self.events.subscribe(), &self.connect_events)
    }

    fn quic(&self, what: &'static str) -> Result<&Quic> {
        match &self.inner {
            Inner::Quic(q) => Ok(q),
            Inner::Stream(_) | Inner::Resume(_) => Err(Error::NotOnThisTransport {
                what,
                transport: self.transport.as_str(),
            }),
        }
    }

    /// Opens another bidirectional stream on the same QUIC connection; it migrates with the
    /// session. The peer sees it with [`Session::accept_stream`] once data is written. Other
    /// transports carry one stream: [`Error::NotOnThisTransport`].
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        Ok(self.quic("open_stream")?.conn.open_bi().await?)
    }

    /// Waits for a stream the peer opened with [`Session::open_stream`] (QUIC only).
    pub async fn accept_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        Ok(self.quic("accept_stream")?.conn.accept_bi().await?)
    }

    /// The underlying QUIC connection, for datagrams or statistics; `None` on other
    /// transports.
    pub fn connection(&self) -> Option<&quinn::Connection> {
        self.quic("connection").ok().map(|q| &q.conn)
    }

    /// Closes the connection with an application error code and reason; the peer's reads
    /// and writes fail (QUIC: with them; TCP transports: the TCP connection is reset).
    pub fn close(&self, code: u32, reason: &[u8]) {
        match &self.inner {
            Inner::Quic(q) => q.conn.close(code.into(), reason),
            Inner::Stream(s) => s.abort(),
            Inner::Resume(r) => r.abort(),
        }
    }

    /// Closes the connection and, on a QUIC client, waits (at most 1 s) until the close has
    /// gone out, so the peer learns at once instead of after its idle timeout. Read the peer's
    /// end of the stream first: data still unacknowledged is dropped.
    pub async fn close_and_wait(self, code: u32, reason: &[u8]) {
        self.close(code, reason);
        if let Inner::Quic(q) = &self.inner
            && q._driver.is_some()
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), q.endpoint.wait_idle()).await;
        }
    }

    /// Waits until the connection is closed (by either side or by the idle timeout). A
    /// tcp-resume session is closed once both directions ended and were acknowledged (or it
    /// could not be resumed); call this before dropping a session whose last bytes matter. An
    /// MPTCP or TCP session learns the end from its reads: this returns at once with
    /// [`Error::NotOnThisTransport`] (the kernel still delivers what was written).
    pub async fn closed(&self) -> Error {
        match &self.inner {
            Inner::Quic(q) => Error::Connection(q.conn.closed().await),
            Inner::Resume(r) => Error::Stream(r.shared.ended().await),
            Inner::Stream(_) => Error::NotOnThisTransport {
                what: "closed",
                transport: self.transport.as_str(),
            },
        }
    }
}

impl Quic {
    fn path(&self) -> PathInfo {
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

impl Drop for Quic {
    fn drop(&mut self) {
        // The driver holds a handle too: without this the connection would outlive the
        // session until the driver's abort is processed.
        self.conn.close(0u32.into(), b"session dropped");
    }
}

/// The session header: `ROAM`, version, app id length, app id.
fn header(app: Option<&str>) -> Result<Vec<u8>> {
    let app = app.unwrap_or("");
    let len = u8::try_from(app.len())
        .map_err(|_| Error::Protocol(format!("app id of {} bytes is over 255", app.len())))?;
    let mut h = Vec::with_capacity(6 + app.len());
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(len);
    h.extend_from_slice(app.as_bytes());
    Ok(h)
}

/// Writes the session header on a fresh stream (client, ALPN `roam/1`).
async fn write_header(send: &mut quinn::SendStream, app: Option<&str>) -> Result<()> {
    let h = header(app)?;
    send.write_all(&h)
        .await
        .map_err(|e| Error::Stream(format!("writing the session header: {e}")))
}

/// Reads the session header after its magic (server, ALPN `roam/1`); returns the app id.
async fn read_header_after_magic<R: AsyncRead + Unpin>(recv: &mut R) -> Result<Option<String>> {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 2];
    recv.read_exact(&mut h)
        .await
        .map_err(|e| Error::Protocol(format!("reading the session header: {e}")))?;
    if h[0] != VERSION {
        return Err(Error::Protocol(format!("unknown version {}", h[0])));
    }
    let mut app = vec![0u8; h[1] as usize];
    recv.read_exact(&mut app)
        .await
        .map_err(|e| Error::Protocol(format!("reading the app id: {e}")))?;
    let app =
        String::from_utf8(app).map_err(|_| Error::Protocol("the app id is not UTF-8".into()))?;
    Ok((!app.is_empty()).then_some(app))
}

/// Reads the session header (server, ALPN `roam/1`); returns the app id.
async fn read_header(recv: &mut quinn::RecvStream) -> Result<Option<String>> {
    let mut m = [0u8; 4];
    recv.read_exact(&mut m)
        .await
        .map_err(|e| Error::Protocol(format!("reading the session header: {e}")))?;
    if &m != MAGIC {
        return Err(Error::Protocol(format!("bad magic {m:?}")));
    }
    read_header_after_magic(recv).await
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
        match &mut self.inner {
            Inner::Quic(q) => AsyncRead::poll_read(Pin::new(&mut q.recv), cx, buf),
            Inner::Stream(s) => AsyncRead::poll_read(Pin::new(&mut **s), cx, buf),
            Inner::Resume(r) => AsyncRead::poll_read(Pin::new(&mut **r), cx, buf),
        }
    }
}

impl AsyncWrite for Session {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Quic(q) => {
                let r = AsyncWrite::poll_write(Pin::new(&mut q.send), cx, buf);
                if let (Poll::Ready(Ok(_)), Some(a)) = (&r, &q.activity) {
                    a.notify_one();
                }
                r
            }
            Inner::Stream(s) => AsyncWrite::poll_write(Pin::new(&mut **s), cx, buf),
            Inner::Resume(r) => AsyncWrite::poll_write(Pin::new(&mut **r), cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Quic(q) => AsyncWrite::poll_flush(Pin::new(&mut q.send), cx),
            Inner::Stream(s) => AsyncWrite::poll_flush(Pin::new(&mut **s), cx),
            Inner::Resume(r) => AsyncWrite::poll_flush(Pin::new(&mut **r), cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Quic(q) => AsyncWrite::poll_shutdown(Pin::new(&mut q.send), cx),
            Inner::Stream(s) => AsyncWrite::poll_shutdown(Pin::new(&mut **s), cx),
            Inner::Resume(r) => AsyncWrite::poll_shutdown(Pin::new(&mut **r), cx),
        }
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
        inner: Inner::Quic(Quic {
            conn,
            send,
            recv,
            shared: Arc::new(Shared {
                path: Mutex::new(None),
            }),
            activity: None,
            _driver: None,
            endpoint,
        }),
        events,
        app,
        alpn,
        transport: Transport::Quic,
        connect_events: Vec::new(),
    })
}

pub(crate) use driver::Handle as TaskHandle;
pub(crate) use resume::DEFAULT_GRACE as DEFAULT_RESUME_GRACE;
pub(crate) use tcp::accept_loop as tcp_accept_loop;
