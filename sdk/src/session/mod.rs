//! Sessions: a byte stream that outlives the interface it started on, over QUIC (one
//! bidirectional stream), MPTCP (TLS over an MPTCP socket) or TCP with resumption.
//!
//! The top floor: [`Session`] wraps the connection a transport (`crate::transport`) made or
//! accepted.
//!
//! - [`builder`]: [`SessionBuilder`] and the transport preference.
//! - `connect`: what [`SessionBuilder::connect`] does, from the target to the transport.
//! - `flow`: the flow meter, bytes both ways reported to the decision source at the policy's
//!   flow thresholds (flow-size rules).
//! - `header`: the session header the client sends first on ALPN `roam/1`.
//! - `options`: TCP options of a session's connection and of one MPTCP subflow.

pub mod builder;
mod connect;
mod flow;
pub(crate) mod header;
mod options;

pub use builder::{SessionBuilder, TransportPreference};
pub use options::{Keepalive, TcpOptions};

pub use crate::net::socket::SocketBinderFn;
pub use crate::vocab::{PathInfo, Subflow, Transport};

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};
use crate::events::Events;
use crate::transport::mptcp::MptcpStream;
use crate::transport::quic::QuicStream;
use crate::transport::{Connection, Stream};

/// A session: a reliable, ordered byte stream (tokio [`AsyncRead`] + [`AsyncWrite`]) that
/// migrates between the device's interfaces as the policy and the paths' health say.
///
/// Made by [`Session::connect`], a [`SessionBuilder`], or a [`crate::Listener`]. Shutting the
/// writer down  ends this side of the stream; dropping the session
/// closes the connection at once, so read the peer's end first when it matters
/// (`tokio::io::AsyncWriteExt::shutdown`, then read to the end).
#[derive(Debug)]
pub struct Session {
    /// The stream and what the session says about it, as the transport handed them over.
    conn: Connection,
    /// The client's flow meter (a session a listener accepted follows no decisions).
    flow: Option<flow::FlowMeter>,
}

impl From<Connection> for Session {
    fn from(conn: Connection) -> Session {
        Session { conn, flow: None }
    }
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
        self.conn.app.as_deref()
    }

    /// The negotiated ALPN protocol (`roam/1` or one of the app's).
    pub fn alpn(&self) -> &[u8] {
        &self.conn.alpn
    }

    /// The transport the session runs on. With `auto`, the one it chose (also told as
    /// [`crate::SessionEvent::TransportChosen`]); an MPTCP session whose path stripped MPTCP says
    /// [`Transport::TcpResume`] or [`Transport::Tcp`] here.
    pub fn transport(&self) -> Transport {
        self.conn.transport
    }

    /// Where the session's traffic goes now, with its round-trip time and byte counts. For
    /// MPTCP: the subflow that carries the stream, judged by the kernel's byte counters (the
    /// one whose bytes were last acknowledged or received, whoever moved the stream there:
    /// roamd, the kernel's scheduler or the peer; [`crate::SessionEvent::PathChanged`] says
    /// when it changes); see [`Session::paths`] for all.
    pub fn path(&self) -> PathInfo {
        match &self.conn.stream {
            Stream::Quic(q) => q.path(),
            Stream::Mptcp(s) => s.path(),
            Stream::Resume(r) => r.path(),
        }
    }

    /// Every path of the session: each MPTCP subflow that can carry data (established; not
    /// one being closed or still connecting) with its id, addresses, interface, RTT and bytes (`MPTCP_FULL_INFO`, or `MPTCP_SUBFLOW_ADDRS` + `MPTCP_TCPINFO` on kernels
    /// before 6.5); the one connection of QUIC and TCP sessions.
    ///
    /// For MPTCP, `backup` comes from socket diagnostics (one `NETLINK_SOCK_DIAG` lookup per
    /// subflow): the kernel reports the MP_PRIO flags there, not through `SOL_MPTCP` options.
    pub fn paths(&self) -> Vec<Subflow> {
        match &self.conn.stream {
            Stream::Quic(q) => {
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
            Stream::Mptcp(s) => s.paths(),
            Stream::Resume(r) => r.paths(),
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
        match &self.conn.stream {
            Stream::Mptcp(s) => s.token(),
            Stream::Quic(_) | Stream::Resume(_) => None,
        }
    }

    fn mptcp_control(&self, what: &'static str) -> Result<(&MptcpStream, u32)> {
        let not_here = || Error::NotOnThisTransport {
            what,
            transport: self.conn.transport.as_str(),
        };
        match &self.conn.stream {
            Stream::Mptcp(s) => Ok((s, s.token().ok_or_else(not_here)?)),
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
        Events::new(self.conn.events.subscribe(), &self.conn.connect_events)
    }

    fn quic(&self, what: &'static str) -> Result<&QuicStream> {
        match &self.conn.stream {
            Stream::Quic(q) => Ok(q),
            Stream::Mptcp(_) | Stream::Resume(_) => Err(Error::NotOnThisTransport {
                what,
                transport: self.conn.transport.as_str(),
            }),
        }
    }

    /// Opens another bidirectional stream on the same QUIC connection; it migrates with the
    /// session. The peer sees it with [`Session::accept_stream`] once data is written. Other
    /// transports carry one stream: [`Error::NotOnThisTransport`].
    pub async fn open_stream(&self) -> Result<(noq::SendStream, noq::RecvStream)> {
        Ok(self.quic("open_stream")?.conn.open_bi().await?)
    }

    /// Waits for a stream the peer opened with [`Session::open_stream`] (QUIC only).
    pub async fn accept_stream(&self) -> Result<(noq::SendStream, noq::RecvStream)> {
        Ok(self.quic("accept_stream")?.conn.accept_bi().await?)
    }

    /// The underlying QUIC connection, for datagrams or statistics; `None` on other
    /// transports.
    pub fn connection(&self) -> Option<&noq::Connection> {
        self.quic("connection").ok().map(|q| &q.conn)
    }

    /// Closes the connection with an application error code and reason; the peer's reads
    /// and writes fail (QUIC: with them; TCP transports: the TCP connection is reset).
    pub fn close(&self, code: u32, reason: &[u8]) {
        match &self.conn.stream {
            Stream::Quic(q) => q.conn.close(code.into(), reason),
            Stream::Mptcp(s) => s.abort(),
            Stream::Resume(r) => r.abort(),
        }
    }

    /// Closes the connection and, on a QUIC client, waits (at most 1 s) until the close has
    /// gone out, so the peer learns at once instead of after its idle timeout. Read the peer's
    /// end of the stream first: data still unacknowledged is dropped.
    pub async fn close_and_wait(self, code: u32, reason: &[u8]) {
        self.close(code, reason);
        if let Stream::Quic(q) = &self.conn.stream
            && q.activity.is_some()
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
        match &self.conn.stream {
            Stream::Quic(q) => Error::Connection(q.conn.closed().await),
            Stream::Resume(r) => Error::Stream(r.shared.ended().await),
            Stream::Mptcp(_) => Error::NotOnThisTransport {
                what: "closed",
                transport: self.conn.transport.as_str(),
            },
        }
    }
}

impl AsyncRead for Session {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = match &mut self.conn.stream {
            Stream::Quic(q) => AsyncRead::poll_read(Pin::new(&mut q.recv), cx, buf),
            Stream::Mptcp(s) => AsyncRead::poll_read(Pin::new(&mut **s), cx, buf),
            Stream::Resume(r) => AsyncRead::poll_read(Pin::new(&mut **r), cx, buf),
        };
        if let (Poll::Ready(Ok(())), Some(m)) = (&r, &mut self.flow) {
            m.count(buf.filled().len().saturating_sub(before));
        }
        r
    }
}

impl AsyncWrite for Session {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = match &mut self.conn.stream {
            Stream::Quic(q) => {
                let r = AsyncWrite::poll_write(Pin::new(&mut q.send), cx, buf);
                if let (Poll::Ready(Ok(_)), Some(a)) = (&r, &q.activity) {
                    a.notify_one();
                }
                r
            }
            Stream::Mptcp(s) => AsyncWrite::poll_write(Pin::new(&mut **s), cx, buf),
            Stream::Resume(r) => AsyncWrite::poll_write(Pin::new(&mut **r), cx, buf),
        };
        if let (Poll::Ready(Ok(n)), Some(m)) = (&r, &mut self.flow) {
            m.count(*n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.conn.stream {
            Stream::Quic(q) => AsyncWrite::poll_flush(Pin::new(&mut q.send), cx),
            Stream::Mptcp(s) => AsyncWrite::poll_flush(Pin::new(&mut **s), cx),
            Stream::Resume(r) => AsyncWrite::poll_flush(Pin::new(&mut **r), cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.conn.stream {
            Stream::Quic(q) => AsyncWrite::poll_shutdown(Pin::new(&mut q.send), cx),
            Stream::Mptcp(s) => AsyncWrite::poll_shutdown(Pin::new(&mut **s), cx),
            Stream::Resume(r) => AsyncWrite::poll_shutdown(Pin::new(&mut **r), cx),
        }
    }
}
