//! The MPTCP transport: TLS over one `IPPROTO_MPTCP` socket whose first subflow is bound to the
//! decision's best interface; further subflows come from the path manager (the kernel's, with
//! its endpoints, or roamd's userspace one by connection token).
//!
//! Fallback is never silent: right after the handshake the socket is asked `MPTCP_INFO`; a
//! socket the peer or a middlebox turned into plain TCP answers `EOPNOTSUPP` (the option
//! reaches TCP) or sets `MPTCP_INFO_FLAG_FALLBACK`, and the session says
//! [`SessionEvent::MptcpFallback`]. A watcher task re-reads the subflows every
//! [`WATCH_INTERVAL`] and reports changes as [`SessionEvent::SubflowsChanged`]: the kernel's
//! MPTCP events go only to CAP_NET_ADMIN listeners, so an app polls its own socket. A change is
//! a subflow coming or going or its backup flag changing (read through sock_diag, a few
//! microseconds per subflow). The watcher also sends the decision source the RTT of every
//! subflow that carried data, per interface, at most once per [`REPORT_EVERY`] (roamd's
//! `report_path`, as QUIC sessions do), so policy conditions such as `wifi.rtt > 150ms` see
//! MPTCP traffic too.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use super::builder::SessionBuilder;
use super::connect::Prepared;
use super::driver::{Handle, REPORT_EVERY};
use super::tcp::{StreamProto, race};
use super::tls_stream::{self, TlsStream};
use super::{Inner, PathInfo, Session, Subflow, Transport, header, read_header_after_magic};
use crate::decision::{PathReport, Snapshot};
use crate::error::{Error, Result};
use crate::events::SessionEvent;
use crate::mptcp::control::{PathControl, Roamd};
use crate::mptcp::diag::Diag;
use crate::mptcp::sockopt;
use crate::path::LocalPath;

/// How often a client session re-reads its subflows to report changes.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// A TLS byte stream over one TCP or MPTCP socket.
#[derive(Debug)]
pub(crate) struct StreamSession {
    tls: TlsStream<TcpStream>,
    /// The decisions, to name the interface of each local address (clients).
    links: Option<watch::Receiver<Arc<Snapshot>>>,
    /// Who opens, closes and re-prioritises subflows (roamd).
    pub(crate) control: Arc<dyn PathControl>,
    _watcher: Option<Handle>,
}

impl StreamSession {
    /// The connection's socket (MPTCP, or TCP after a fallback).
    pub(crate) fn socket(&self) -> &TcpStream {
        self.tls.get_ref()
    }

    fn interface_of(&self, ip: std::net::IpAddr) -> Option<String> {
        let snap = self.links.as_ref()?.borrow().clone();
        snap.links
            .iter()
            .find(|l| l.addrs.contains(&ip))
            .map(|l| l.name.clone())
    }

    pub(crate) fn token(&self) -> Option<u32> {
        sockopt::mptcp_info(self.socket().as_fd())
            .ok()
            .filter(|i| !i.is_fallback())
            .map(|i| i.token)
    }

    pub(crate) fn paths(&self) -> Vec<Subflow> {
        let mut v = read_subflows(self.socket());
        for s in &mut v {
            s.interface = s.local.and_then(|a| self.interface_of(a.ip()));
        }
        read_backup(&mut Diag::open().ok(), &mut v);
        v
    }

    pub(crate) fn path(&self) -> PathInfo {
        let paths = self.paths();
        let s = self.socket();
        let best = paths
            .iter()
            .filter(|p| p.rtt > Duration::ZERO || p.bytes_acked.unwrap_or(0) > 0)
            .min_by_key(|p| p.id)
            .or(paths.first());
        PathInfo {
            interface: best.and_then(|b| b.interface.clone()),
            local: best.and_then(|b| b.local).or_else(|| s.local_addr().ok()),
            remote: best
                .and_then(|b| b.remote)
                .or_else(|| s.peer_addr().ok())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            rtt: best.map(|b| b.rtt).unwrap_or_default(),
            bytes_sent: paths.iter().filter_map(|p| p.bytes_sent).sum(),
            bytes_received: paths.iter().filter_map(|p| p.bytes_received).sum(),
        }
    }

    pub(crate) fn abort(&self) {
        let _ = socket2::SockRef::from(self.socket()).shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for StreamSession {
    fn drop(&mut self) {
        // The watcher holds a duplicate of the descriptor until its abort is processed; shut
        // the connection down now so the peer learns at once.
        if self._watcher.is_some() {
            self.abort();
        }
    }
}

impl AsyncRead for StreamSession {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for StreamSession {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

/// `TCP_CLOSE` (`tcpi_state`).
const TCP_CLOSE: u8 = 7;

/// The subflows of an MPTCP socket (closed ones left out), or its one TCP connection after a
/// fallback.
fn read_subflows(s: &TcpStream) -> Vec<Subflow> {
    let fd = s.as_fd();
    let raw = match sockopt::full_info(fd) {
        Ok((_, subs)) => Ok(subs),
        // Before 6.5: no MPTCP_FULL_INFO (EOPNOTSUPP from the MPTCP level itself).
        Err(e) if sockopt::is_not_mptcp(&e) && sockopt::mptcp_info(fd).is_ok() => {
            sockopt::subflows_legacy(fd)
        }
        Err(e) => Err(e),
    };
    match raw {
        Ok(subs) => live_subflows(subs),
        Err(_) => {
            // Plain TCP (fallen back): one path, from TCP_INFO.
            let tcp = sockopt::tcp_info(fd).unwrap_or_default();
            vec![Subflow {
                id: 0,
                local: s.local_addr().ok(),
                remote: s.peer_addr().ok(),
                interface: None,
                backup: Some(false),
                rtt: Duration::from_micros(tcp.rtt_us.into()),
                bytes_sent: tcp.bytes_sent,
                bytes_acked: tcp.bytes_acked,
                bytes_received: tcp.bytes_received,
            }]
        }
    }
}

/// The kernel's subflows as paths, closed ones left out: the kernel keeps a closed initial
/// subflow in the connection's list as long as the connection lives (roamd closing it at a
/// handover, say), and it is no path any more.
fn live_subflows(raw: Vec<sockopt::RawSubflow>) -> Vec<Subflow> {
    raw.into_iter()
        .filter(|r| r.tcp.is_none_or(|t| t.state != TCP_CLOSE))
        .map(|r| {
            let tcp = r.tcp.unwrap_or_default();
            Subflow {
                id: r.id.unwrap_or(0),
                local: r.local,
                remote: r.remote,
                interface: None,
                backup: None,
                rtt: Duration::from_micros(tcp.rtt_us.into()),
                bytes_sent: tcp.bytes_sent,
                bytes_acked: tcp.bytes_acked,
                bytes_received: tcp.bytes_received,
            }
        })
        .collect()
}

/// Fills in each MPTCP subflow's `backup` from sock_diag (`crate::mptcp::diag`): `Some(true)`
/// when either end marked it a backup (`ss`'s `b` or `B`), `None` when the kernel does not say
/// (no sock_diag socket, the subflow gone, or ULP data hidden from this process). The
/// fallen-back TCP path (id 0, `backup` already set) is left alone.
fn read_backup(diag: &mut Option<Diag>, v: &mut [Subflow]) {
    let Some(d) = diag else { return };
    for s in v.iter_mut().filter(|s| s.backup.is_none()) {
        let (Some(local), Some(remote)) = (s.local, s.remote) else {
            continue;
        };
        // A subflow bound to its device is found only on that device.
        let ifindex = s.interface.as_deref().map(ifindex).unwrap_or(0);
        s.backup = match d.subflow_flags(local, remote, ifindex) {
            Ok(f) => f.map(|f| f.backup_local() || f.backup_remote()),
            Err(e) => {
                tracing::debug!(%local, %remote, error = %e, "sock_diag lookup failed");
                None
            }
        };
    }
}

/// The index of interface `name`, 0 when there is none.
fn ifindex(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Whether the socket still speaks MPTCP; `Err(detail)` when it fell back to TCP.
pub(crate) fn check_mptcp(s: &TcpStream) -> std::result::Result<u32, String> {
    match sockopt::mptcp_info(s.as_fd()) {
        Ok(i) if i.is_fallback() => Err("MPTCP_INFO has the fallback flag set".into()),
        Ok(i) => Ok(i.token),
        Err(e) if sockopt::is_not_mptcp(&e) => Err(format!(
            "SOL_MPTCP/MPTCP_INFO answered `{e}`: the connection is plain TCP (MP_CAPABLE was \
             not answered)"
        )),
        Err(e) => Err(format!("MPTCP_INFO failed: {e}")),
    }
}

/// Connects the MPTCP transport over the prepared candidates.
pub(crate) async fn connect_mptcp(b: SessionBuilder, p: Prepared, why: String) -> Result<Session> {
    let (path, sock) = race(
        &p.cands,
        b.attempt_delay,
        StreamProto::Mptcp,
        b.binder.clone(),
    )
    .await?;
    let peer = sock
        .peer_addr()
        .map_err(|e| Error::io("reading the peer's address", e))?;
    let mptcp = check_mptcp(&sock);
    let tls = Arc::new(b.tls.build(&b.alpn)?);
    let mut stream = tls_stream::connect(sock, tls, &p.server_name)
        .await
        .map_err(|e| tls_connect_error(peer, e))?;
    let alpn = stream.alpn();
    let roam = alpn == crate::tls::ALPN;
    if let Err(detail) = &mptcp {
        tracing::warn!(%path, %peer, %detail, "MPTCP fell back to TCP");
        if roam {
            // The peer is a roam listener: go on over this connection as tcp-resume, so the
            // session still survives a handover.
            let events = vec![
                p.source_event.clone(),
                SessionEvent::TransportChosen {
                    transport: Transport::TcpResume,
                    why: format!("{why}; MPTCP was stripped on {path}, so tcp-resume"),
                },
                SessionEvent::MptcpFallback {
                    path: path.clone(),
                    detail: detail.clone(),
                    now: Transport::TcpResume,
                },
            ];
            return super::resume::connect_client(b, p, Some((path, stream)), events).await;
        }
    }
    if roam {
        tls_stream::write_flush(&mut stream, &header(b.app.as_deref())?)
            .await
            .map_err(|e| Error::Stream(format!("writing the session header: {e}")))?;
    }
    let (events, _) = broadcast::channel(64);
    let transport = match &mptcp {
        Ok(token) => {
            tracing::info!(%path, %peer, token, "MPTCP session connected");
            Transport::Mptcp
        }
        Err(_) => Transport::Tcp,
    };
    let mut connect_events = vec![
        p.source_event.clone(),
        SessionEvent::TransportChosen { transport, why },
    ];
    match &mptcp {
        Err(detail) => connect_events.push(SessionEvent::MptcpFallback {
            path: path.clone(),
            detail: detail.clone(),
            now: transport,
        }),
        Ok(token) if p.source.steers_mptcp() => {
            p.source
                .report(crate::decision::PathReport::MptcpConnected { token: *token });
        }
        Ok(_) => connect_events.push(SessionEvent::KernelPathManager {
            detail: "roamd does not steer this connection: the kernel's path manager and its \
                     endpoints (`ip mptcp endpoint`) decide the subflows"
                .into(),
        }),
    }
    let watcher = spawn_watcher(
        &stream,
        p.decisions.clone(),
        events.clone(),
        mptcp.is_ok(),
        p.source,
    )?;
    Ok(Session {
        inner: Inner::Stream(Box::new(StreamSession {
            tls: stream,
            links: Some(p.decisions),
            // The roamd the session follows (`roamd_socket`), so the requests reach the agent
            // the connection was registered with.
            control: b.path_control.clone().unwrap_or_else(|| {
                Arc::new(Roamd::at(
                    b.roamd_socket
                        .clone()
                        .unwrap_or_else(|| roam_ipc::socket_path(None)),
                ))
            }),
            _watcher: Some(watcher),
        })),
        events,
        app: b.app,
        alpn,
        transport,
        connect_events,
    })
}

/// A TLS failure on a TCP transport in the error an app reacts to.
pub(crate) fn tls_connect_error(peer: SocketAddr, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        Error::Tls {
            peer,
            detail: e.to_string(),
        }
    } else {
        Error::io(format!("TLS handshake with {peer}"), e)
    }
}

/// Which subflow RTTs go to the decision source, and when: every [`REPORT_EVERY`] at most,
/// one report per interface whose subflow carried data since the last round (its bytes
/// acknowledged grew), so an idle backup subflow's handshake RTT is not passed off as fresh.
#[derive(Debug, Default)]
struct RttReports {
    /// When the last round went out.
    at: Option<std::time::Instant>,
    /// Bytes acknowledged per subflow (local, remote) at the last round.
    acked: Vec<((SocketAddr, SocketAddr), u64)>,
}

impl RttReports {
    fn due(&mut self, now: std::time::Instant, subflows: &[Subflow]) -> Vec<PathReport> {
        if self
            .at
            .is_some_and(|at| now.duration_since(at) < REPORT_EVERY)
        {
            return Vec::new();
        }
        let mut out: Vec<PathReport> = Vec::new();
        let mut acked = Vec::new();
        for s in subflows {
            let (Some(local), Some(remote), Some(bytes)) = (s.local, s.remote, s.bytes_acked)
            else {
                continue;
            };
            acked.push(((local, remote), bytes));
            let before = self
                .acked
                .iter()
                .find(|(k, _)| *k == (local, remote))
                .map_or(0, |(_, b)| *b);
            let Some(interface) = s.interface.clone() else {
                continue;
            };
            let reported = out
                .iter()
                .any(|r| matches!(r, PathReport::Path { interface: i, .. } if *i == interface));
            if bytes > before && s.rtt > Duration::ZERO && !reported {
                out.push(PathReport::Path {
                    interface,
                    rtt: Some(s.rtt),
                    stalled: false,
                });
            }
        }
        self.acked = acked;
        if !out.is_empty() {
            self.at = Some(now);
        }
        out
    }
}

fn spawn_watcher(
    stream: &TlsStream<TcpStream>,
    mut decisions: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<SessionEvent>,
    mut is_mptcp: bool,
    source: Arc<dyn crate::DecisionSource>,
) -> Result<Handle> {
    let fd = stream
        .get_ref()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("duplicating the MPTCP socket for its watcher", e))?;
    let sock = TcpStream::from_std(std::net::TcpStream::from(fd))
        .map_err(|e| Error::io("registering the MPTCP watcher socket", e))?;
    let span = tracing::Span::current();
    let task = async move {
        type Key = Vec<(u32, Option<SocketAddr>, Option<SocketAddr>, Option<bool>)>;
        let key = |v: &[Subflow]| -> Key {
            v.iter()
                .map(|s| (s.id, s.local, s.remote, s.backup))
                .collect()
        };
        let name = |snap: &Snapshot, v: &mut Vec<Subflow>| {
            for s in v.iter_mut() {
                s.interface = s.local.and_then(|a| {
                    snap.links
                        .iter()
                        .find(|l| l.addrs.contains(&a.ip()))
                        .map(|l| l.name.clone())
                });
            }
        };
        // Opened here, in the session's network namespace; without it `backup` stays None.
        let mut diag = Diag::open()
            .inspect_err(
                |e| tracing::debug!(error = %e, "no sock_diag socket: backup flags unread"),
            )
            .ok();
        let mut last: Vec<Subflow> = Vec::new();
        let mut rtt = RttReports::default();
        let mut source_alive = true;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tokio::select! {
                r = decisions.changed(), if source_alive => match r {
                    Ok(()) => {
                        let snap = decisions.borrow_and_update().clone();
                        let _ = events.send(SessionEvent::DecisionUpdated(snap.decision.clone()));
                    }
                    Err(_) => source_alive = false,
                },
                _ = tick.tick() => {
                    let mut now = read_subflows(&sock);
                    name(&decisions.borrow().clone(), &mut now);
                    read_backup(&mut diag, &mut now);
                    for r in rtt.due(tokio::time::Instant::now().into_std(), &now) {
                        source.report(r);
                    }
                    if key(&now) != key(&last) {
                        tracing::info!(subflows = ?key(&now), "subflows changed");
                        last = now.clone();
                        let _ = events.send(SessionEvent::SubflowsChanged(now));
                    }
                    if is_mptcp && let Err(detail) = check_mptcp(&sock) {
                        // A fallback in the middle of a connection (infinite mapping): the
                        // stream goes on as plain TCP; say so.
                        is_mptcp = false;
                        if let Ok(local) = sock.local_addr() {
                            let iface = decisions.borrow().links.iter()
                                .find(|l| l.addrs.contains(&local.ip()))
                                .map(|l| l.name.clone()).unwrap_or_default();
                            let _ = events.send(SessionEvent::MptcpFallback {
                                path: LocalPath { interface: iface, local: local.ip() },
                                detail,
                                now: Transport::Tcp,
                            });
                        }
                    }
                }
            }
        }
    }
    .instrument(span);
    Ok(Handle::new(tokio::spawn(task).abort_handle()))
}

/// The server side of a TCP-transport connection whose TLS is up and whose first four bytes
/// were `ROAM`: reads the rest of the header and makes the session.
pub(crate) async fn accept_stream_server(
    mut tls: TlsStream<TcpStream>,
    roam_alpn: bool,
) -> Result<Session> {
    let app = if roam_alpn {
        read_header_after_magic(&mut tls).await?
    } else {
        None
    };
    let transport = match check_mptcp(tls.get_ref()) {
        Ok(_) => Transport::Mptcp,
        Err(_) => Transport::Tcp,
    };
    let alpn = tls.alpn();
    let (events, _) = broadcast::channel(64);
    Ok(Session {
        inner: Inner::Stream(Box::new(StreamSession {
            tls,
            links: None,
            control: Arc::new(Roamd::from_env()),
            _watcher: None,
        })),
        events,
        app,
        alpn,
        transport,
        connect_events: Vec::new(),
    })
}

/// Reads the 4-byte magic that says which protocol a TCP connection speaks.
pub(crate) async fn read_magic(tls: &mut TlsStream<TcpStream>) -> Result<[u8; 4]> {
    let mut m = [0u8; 4];
    tls.read_exact(&mut m)
        .await
        .map_err(|e| Error::Protocol(format!("reading the session header: {e}")))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subflow(iface: &str, port: u16, rtt_ms: u64, acked: u64) -> Subflow {
        Subflow {
            id: u32::from(port),
            local: Some(SocketAddr::from(([198, 18, 0, 2], port))),
            remote: Some(SocketAddr::from(([198, 19, 0, 1], 4433))),
            interface: Some(iface.into()),
            backup: Some(false),
            rtt: Duration::from_millis(rtt_ms),
            bytes_sent: None,
            bytes_acked: Some(acked),
            bytes_received: None,
        }
    }

    fn rtt_of(r: &[PathReport], iface: &str) -> Option<Duration> {
        r.iter().find_map(|r| match r {
            PathReport::Path { interface, rtt, .. } if interface == iface => *rtt,
            _ => None,
        })
    }

    #[test]
    fn a_closed_subflow_is_no_path() {
        let raw = |id, state| sockopt::RawSubflow {
            id: Some(id),
            local: Some(SocketAddr::from(([198, 18, 0, 2], 40000 + id as u16))),
            remote: Some(SocketAddr::from(([198, 19, 0, 1], 4433))),
            tcp: Some(sockopt::TcpInfo {
                state,
                rtt_us: 500,
                ..Default::default()
            }),
        };
        // The initial subflow closed at a handover, a joined one established, one connecting,
        // and one the kernel gave no tcp_info for.
        let mut unknown = raw(4, 1);
        unknown.tcp = None;
        let v = live_subflows(vec![raw(1, TCP_CLOSE), raw(2, 1), raw(3, 2), unknown]);
        let ids: Vec<u32> = v.iter().map(|s| s.id).collect();
        assert_eq!(ids, [2, 3, 4]);
        assert_eq!(v[0].rtt, Duration::from_micros(500));
        assert_eq!(v[0].backup, None, "read later, through sock_diag");
    }

    #[test]
    fn rtts_of_subflows_that_carried_data_go_out_once_per_period() {
        let t0 = std::time::Instant::now();
        let mut r = RttReports::default();
        // wlan0 carried data, rmnet0 (a backup, handshake only) did not.
        let v = [subflow("wlan0", 1, 20, 5000), subflow("rmnet0", 2, 80, 0)];
        let first = r.due(t0, &v);
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(rtt_of(&first, "wlan0"), Some(Duration::from_millis(20)));
        // Within the period: nothing, whatever changed.
        let v = [subflow("wlan0", 1, 25, 9000), subflow("rmnet0", 2, 80, 100)];
        assert!(r.due(t0 + REPORT_EVERY / 2, &v).is_empty());
        // After it: both moved data since the last round.
        let next = r.due(t0 + REPORT_EVERY, &v);
        assert_eq!(rtt_of(&next, "rmnet0"), Some(Duration::from_millis(80)));
        assert_eq!(next.len(), 2);
        // Idle subflows, an unnamed interface and an unmeasured RTT are not reported.
        let mut idle = [subflow("wlan0", 1, 25, 9000), subflow("rmnet0", 2, 0, 200)];
        idle[0].interface = None;
        idle[0].bytes_acked = Some(10_000);
        assert!(r.due(t0 + 3 * REPORT_EVERY, &idle).is_empty());
        // Two subflows on one interface: one report for it.
        let v = [
            subflow("wlan0", 1, 30, 20_000),
            subflow("wlan0", 3, 40, 500),
        ];
        let one = r.due(t0 + 4 * REPORT_EVERY, &v);
        assert_eq!(one.len(), 1, "{one:?}");
    }
}
