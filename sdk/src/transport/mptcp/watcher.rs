//! The watcher of a client's MPTCP connection: every [`WATCH_INTERVAL`] it re-reads the
//! subflows and says when they change ([`SessionEvent::SubflowsChanged`]) or the connection
//! fell back to TCP ([`SessionEvent::MptcpFallback`]), and reports the subflows' RTTs to the
//! decision source. The kernel's MPTCP events go only to CAP_NET_ADMIN listeners, so an app
//! polls its own socket.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use super::{check_mptcp, read_backup, read_subflows};
use crate::decision::{DecisionSource, PathReport, Snapshot};
use crate::error::{Error, Result};
use crate::mptcp::diag::Diag;
use crate::transport::TaskHandle;
use crate::transport::report::REPORT_EVERY;
use crate::transport::tls_stream::TlsStream;
use crate::vocab::{LocalPath, SessionEvent, Subflow, Transport};

/// How often a client session re-reads its subflows to report changes.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(50);

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

/// Starts the watcher of a client's MPTCP connection on a duplicate of its socket.
pub(super) fn spawn(
    stream: &TlsStream<TcpStream>,
    mut decisions: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<SessionEvent>,
    mut is_mptcp: bool,
    source: Arc<dyn DecisionSource>,
) -> Result<TaskHandle> {
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
    Ok(TaskHandle::new(tokio::spawn(task).abort_handle()))
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
