//! The MPTCP transport: TLS over one `IPPROTO_MPTCP` socket whose first subflow is bound to the
//! decision's best interface; further subflows come from the path manager (the kernel's, with
//! its endpoints, or roamd's userspace one by connection token).
//!
//! Fallback is never silent: right after the handshake the socket is asked `MPTCP_INFO`; a
//! socket the peer or a middlebox turned into plain TCP answers `EOPNOTSUPP` (the option
//! reaches TCP) or sets `MPTCP_INFO_FLAG_FALLBACK`, and the session says
//! [`crate::SessionEvent::MptcpFallback`]. A watcher task re-reads the subflows every
//! `watcher::WATCH_INTERVAL` (every second once the connection has carried nothing for 2 s,
//! until the app writes) and reports changes as [`crate::SessionEvent::SubflowsChanged`]:
//! the kernel's MPTCP events go only to CAP_NET_ADMIN listeners, so an app polls its own
//! socket. A change is a subflow coming or going or its backup flag changing (read through
//! sock_diag, a few microseconds per subflow). The watcher also sends the decision source the
//! RTT of every subflow that carried data, per interface, at most once per
//! [`crate::transport::report::REPORT_EVERY`] (roamd's `report_path`, as QUIC sessions do), so
//! policy conditions such as `wifi.rtt > 150ms` see MPTCP traffic too.
//!
//! - `connect`: the client's connection, raced over the candidates, and its fallback check.
//! - `accept`: the listener's side once TLS is up and the magic said `ROAM`.
//! - `watcher`: the client's task that reports subflows, fallbacks and RTTs, and judges the
//!   connection by its progress (`progress`): which subflow carries the stream, each
//!   subflow's stalls for the decision source (data unacknowledged, or a stream that stopped
//!   arriving while the app waits in a read: the stream tells the watcher when it waits),
//!   `Degraded` when none makes progress, and the session's failure after `idle_timeout`
//!   without any.
//! - here: the session's stream and the kernel's view of its subflows.

mod accept;
mod connect;
mod progress;
mod watcher;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub(crate) use accept::accept;
pub(crate) use connect::connect;

use crate::decision::Snapshot;
use crate::mptcp::control::PathControl;
use crate::mptcp::diag::Diag;
use crate::mptcp::sockopt;
use crate::transport::TaskHandle;
use crate::transport::tls_stream::TlsStream;
use crate::vocab::{PathInfo, Subflow};

/// A TLS byte stream over one TCP or MPTCP socket.
#[derive(Debug)]
pub(crate) struct MptcpStream {
    pub(crate) tls: TlsStream<TcpStream>,
    /// The decisions, to name the interface of each local address (clients).
    pub(crate) links: Option<watch::Receiver<Arc<Snapshot>>>,
    /// Who opens, closes and re-prioritises subflows (roamd).
    pub(crate) control: Arc<dyn PathControl>,
    pub(crate) _watcher: Option<TaskHandle>,
    /// What the watcher learnt: the carrying subflow, and why the session failed.
    pub(crate) judged: Arc<Judged>,
}

/// What the client's watcher and the stream tell each other.
#[derive(Debug)]
pub(crate) struct Judged {
    /// The subflow (local, remote) whose bytes move: what `path()` names.
    carrier: Mutex<Option<(SocketAddr, SocketAddr)>>,
    /// Set once the watcher gave up on the connection: every read and write fails with it.
    failed: OnceLock<String>,
    /// Since when the app's read has been waiting with nothing to take, in nanoseconds after
    /// `epoch` plus one; 0 while it is not (the watcher's receive-side stall judgement).
    waiting: AtomicU64,
    epoch: Instant,
    /// The app wrote: a watcher resting on an idle connection looks again at once.
    pub(crate) wrote: tokio::sync::Notify,
}

impl Default for Judged {
    fn default() -> Judged {
        Judged {
            carrier: Mutex::default(),
            failed: OnceLock::new(),
            waiting: AtomicU64::new(0),
            epoch: Instant::now(),
            wrote: tokio::sync::Notify::new(),
        }
    }
}

impl Judged {
    /// The app's read returned (`pending` false) or must wait for data (`pending` true).
    fn reading(&self, pending: bool) {
        if !pending {
            self.waiting.store(0, Ordering::Relaxed);
        } else if self.waiting.load(Ordering::Relaxed) == 0 {
            let since = Instant::now().saturating_duration_since(self.epoch);
            let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1);
            self.waiting.store(nanos + 1, Ordering::Relaxed);
        }
    }

    /// Since when the app's read has been waiting with nothing to take, if it is.
    fn waiting_since(&self) -> Option<Instant> {
        match self.waiting.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }

    fn carrier(&self) -> Option<(SocketAddr, SocketAddr)> {
        *self.carrier.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_carrier(&self, k: Option<(SocketAddr, SocketAddr)>) {
        *self.carrier.lock().unwrap_or_else(|e| e.into_inner()) = k;
    }

    /// The failure, as the app's reads and writes see it.
    fn error(&self) -> Option<io::Error> {
        self.failed
            .get()
            .map(|m| io::Error::new(io::ErrorKind::TimedOut, m.clone()))
    }
}

impl MptcpStream {
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

    /// The subflow that carries the stream: the one whose bytes the watcher saw move last;
    /// before any moved (or on the server side, without a watcher), the first that is no
    /// backup and carried bytes, else the first that carried any, else the first.
    pub(crate) fn path(&self) -> PathInfo {
        let paths = self.paths();
        let s = self.socket();
        let carried = |p: &&Subflow| p.bytes_acked.unwrap_or(0) + p.bytes_received.unwrap_or(0) > 0;
        let carrier = self.judged.carrier();
        let best = paths
            .iter()
            .find(|p| carrier.is_some() && p.local.zip(p.remote) == carrier)
            .or_else(|| {
                paths
                    .iter()
                    .filter(carried)
                    .find(|p| p.backup != Some(true))
            })
            .or_else(|| paths.iter().find(carried))
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

impl Drop for MptcpStream {
    fn drop(&mut self) {
        // The watcher holds a duplicate of the descriptor until its abort is processed; shut
        // the connection down now so the peer learns at once.
        if self._watcher.is_some() {
            self.abort();
        }
    }
}

impl AsyncRead for MptcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.judged.error() {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut self.tls).poll_read(cx, buf);
        self.judged.reading(r.is_pending());
        // The watcher shut the socket down to wake us: its reason, not an end of stream.
        match (self.judged.error(), r) {
            (Some(e), Poll::Ready(_)) => Poll::Ready(Err(e)),
            (_, r) => r,
        }
    }
}

impl AsyncWrite for MptcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.judged.error() {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut self.tls).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.judged.wrote.notify_one();
        }
        match (self.judged.error(), r) {
            (Some(e), Poll::Ready(_)) => Poll::Ready(Err(e)),
            (_, r) => r,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.judged.error() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

/// `TCP_ESTABLISHED` (`tcpi_state`).
const TCP_ESTABLISHED: u8 = 1;

/// The subflows of an MPTCP socket that can carry data, or its one TCP connection after a
/// fallback.
pub(crate) fn read_subflows(s: &TcpStream) -> Vec<Subflow> {
    read_samples(s).into_iter().map(|s| s.path).collect()
}

/// [`read_subflows`] with each subflow's unacknowledged segments, for the watcher's judge.
pub(crate) fn read_samples(s: &TcpStream) -> Vec<progress::Sample> {
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
            let path = Subflow {
                id: 0,
                local: s.local_addr().ok(),
                remote: s.peer_addr().ok(),
                interface: None,
                backup: Some(false),
                rtt: Duration::from_micros(tcp.rtt_us.into()),
                bytes_sent: tcp.bytes_sent,
                bytes_acked: tcp.bytes_acked,
                bytes_received: tcp.bytes_received,
            };
            vec![progress::Sample {
                path,
                unacked: tcp.unacked,
                window_closed: tcp.snd_wnd == Some(0),
                since_ack: Some(Duration::from_millis(tcp.last_ack_recv_ms.into())),
                since_data: Some(Duration::from_millis(tcp.last_data_recv_ms.into())),
            }]
        }
    }
}

/// The kernel's subflows that can carry data: established ones (and those the kernel gave no
/// `tcp_info` for). Left out: a closed initial subflow, which the kernel keeps in the
/// connection's list as long as the connection lives (roamd closing it at a handover, say),
/// a subflow being closed (FIN-WAIT-1 while its FIN waits on a dead link, CLOSE-WAIT after the
/// peer closed it) and one still connecting: none of them is a path the stream can use.
fn live_subflows(raw: Vec<sockopt::RawSubflow>) -> Vec<progress::Sample> {
    raw.into_iter()
        .filter(|r| r.tcp.is_none_or(|t| t.state == TCP_ESTABLISHED))
        .map(|r| {
            let tcp = r.tcp.unwrap_or_default();
            let path = Subflow {
                id: r.id.unwrap_or(0),
                local: r.local,
                remote: r.remote,
                interface: None,
                backup: None,
                rtt: Duration::from_micros(tcp.rtt_us.into()),
                bytes_sent: tcp.bytes_sent,
                bytes_acked: tcp.bytes_acked,
                bytes_received: tcp.bytes_received,
            };
            progress::Sample {
                path,
                unacked: tcp.unacked,
                window_closed: tcp.snd_wnd == Some(0),
                since_ack: r
                    .tcp
                    .map(|t| Duration::from_millis(t.last_ack_recv_ms.into())),
                since_data: r
                    .tcp
                    .map(|t| Duration::from_millis(t.last_data_recv_ms.into())),
            }
        })
        .collect()
}

/// Fills in each MPTCP subflow's `backup` from sock_diag (`crate::mptcp::diag`): `Some(true)`
/// when either end marked it a backup (`ss`'s `b` or `B`), `None` when the kernel does not say
/// (no sock_diag socket, the subflow gone, or ULP data hidden from this process). The
/// fallen-back TCP path (id 0, `backup` already set) is left alone.
pub(crate) fn read_backup(diag: &mut Option<Diag>, v: &mut [Subflow]) {
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
    roam_link::socket::if_nametoindex(name).unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_waits_from_its_first_pending_read_until_one_returns() {
        let j = Judged::default();
        assert_eq!(j.waiting_since(), None);
        let before = Instant::now();
        j.reading(true);
        let since = j.waiting_since().expect("waiting");
        assert!(since >= before && since <= Instant::now());
        // Polled again with nothing to take, later by the clock: still waiting since the
        // first time. (The monotonic clock has nanoseconds here: a few reads move it.)
        let later = (0..1_000_000)
            .map(|_| Instant::now())
            .find(|t| *t > since)
            .expect("the clock moves");
        j.reading(true);
        assert_eq!(j.waiting_since(), Some(since));
        j.reading(false);
        assert_eq!(j.waiting_since(), None);
        j.reading(true);
        assert!(j.waiting_since().expect("waiting again") >= later);
    }

    #[test]
    fn only_established_subflows_are_paths() {
        let raw = |id, state| sockopt::RawSubflow {
            id: Some(id),
            local: Some(SocketAddr::from(([198, 18, 0, 2], 40000 + id as u16))),
            remote: Some(SocketAddr::from(([198, 19, 0, 1], 4433))),
            tcp: Some(sockopt::TcpInfo {
                state,
                rtt_us: 500,
                unacked: 3,
                ..Default::default()
            }),
        };
        // The initial subflow closed at a handover (TCP_CLOSE 7), a joined one established
        // (1), one connecting (SYN-SENT 2), one whose FIN waits on a dead link (FIN-WAIT-1
        // 4), one the peer closed (CLOSE-WAIT 8), and one the kernel gave no tcp_info for.
        let mut unknown = raw(6, 1);
        unknown.tcp = None;
        let v = live_subflows(vec![
            raw(1, 7),
            raw(2, TCP_ESTABLISHED),
            raw(3, 2),
            raw(4, 4),
            raw(5, 8),
            unknown,
        ]);
        let ids: Vec<u32> = v.iter().map(|s| s.path.id).collect();
        assert_eq!(ids, [2, 6]);
        assert_eq!(v[0].path.rtt, Duration::from_micros(500));
        assert_eq!(v[0].unacked, 3);
        assert_eq!(v[0].path.backup, None, "read later, through sock_diag");
    }
}
