//! The watcher of a client's MPTCP connection: every [`WATCH_INTERVAL`] it re-reads the
//! subflows (every [`REST_ROUND`] while the connection has been idle for [`REST_AFTER`],
//! until the app writes: an idle session does not wake the handset 20 times a second) and says when they change ([`SessionEvent::SubflowsChanged`]) or the connection
//! fell back to TCP ([`SessionEvent::MptcpFallback`]), and reports the subflows' RTTs and
//! stalls to the decision source (roamd confirms a stall with a burst of probes: the path is
//! judged by its own traffic, not by periodic probes). A stall is data sent and not
//! acknowledged, or, for a download, a stream that stopped arriving while the app waits in a
//! read (`super::progress::StallReports`; the stream says when its read waits). The kernel's
//! MPTCP events go only to CAP_NET_ADMIN listeners, so an app polls its own socket.
//!
//! It also judges the whole connection by its progress (`super::progress`): a
//! [`SessionEvent::PathChanged`] whenever another subflow carries the stream (whoever moved
//! it: roamd, the kernel's scheduler, the peer), [`SessionEvent::Degraded`] as soon as no
//! subflow makes progress with data outstanding and none is left to take over,
//! [`SessionEvent::Recovered`] when bytes move again, and after the session's `idle_timeout`
//! without progress the session fails: the socket is shut down and every read and write
//! returns an error saying what happened and what would have saved it.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use super::progress::{Judge, Sample, StallReports, Verdict, carried};
use super::{Judged, check_mptcp, read_backup, read_samples};
use crate::decision::{DecisionSource, PathReport, Snapshot};
use crate::error::{Error, Result};
use crate::mptcp::diag::Diag;
use crate::transport::TaskHandle;
use crate::transport::report::REPORT_EVERY;
use crate::transport::tls_stream::TlsStream;
use crate::vocab::{DegradedReason, LocalPath, SessionEvent, Subflow, Transport};

/// How often a client session re-reads its subflows to report changes.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// How long a connection must carry nothing, with nothing in flight and its subflows
/// unchanged, before its watcher rests: far longer than any stall it judges takes to show
/// (a stream that stops is judged within a few round trips), so resting hides none.
const REST_AFTER: Duration = Duration::from_secs(2);

/// The watcher's round while it rests: an idle connection's subflow changes and fallback
/// are said within this, and the app's next write ends the rest at once. At
/// [`WATCH_INTERVAL`] an idle session woke its thread about 35 times a second
/// (`energy-bench --sessions`).
const REST_ROUND: Duration = Duration::from_secs(1);

/// Whether a connection has been idle long enough for its watcher to rest.
#[derive(Debug)]
struct Quiet {
    /// Bytes sent, acknowledged and received over every subflow at the last change.
    bytes: u64,
    since: std::time::Instant,
}

impl Quiet {
    fn new(now: std::time::Instant) -> Quiet {
        Quiet {
            bytes: 0,
            since: now,
        }
    }

    /// One round's samples (`changed`: the subflows are not those of the round before);
    /// true when the watcher may rest.
    fn observe(&mut self, now: std::time::Instant, samples: &[Sample], changed: bool) -> bool {
        let bytes = samples
            .iter()
            .map(|s| carried(&s.path) + s.path.bytes_sent.unwrap_or(0))
            .sum();
        if bytes != self.bytes || changed || samples.iter().any(|s| s.unacked > 0) {
            self.bytes = bytes;
            self.since = now;
        }
        now.saturating_duration_since(self.since) >= REST_AFTER
    }

    /// The app wrote: no rest until the connection is quiet again.
    fn woken(&mut self, now: std::time::Instant) {
        self.since = now;
    }
}

/// The soonest the watcher reads again after a round (the kernel counts `tcpi_last_ack_recv`
/// in milliseconds; a report due in less is taken a millisecond late rather than spun on).
const MIN_WAKE: Duration = Duration::from_millis(1);

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

/// Why the session failed and what would have saved it, for the error every read and write
/// returns: `steered` says roamd steers the connection.
fn failure(stalled_for: Duration, samples: &[Sample], is_mptcp: bool, steered: bool) -> String {
    let on: Vec<String> = samples
        .iter()
        .map(|s| match (&s.path.interface, s.path.local) {
            (Some(i), Some(l)) => format!("{i} ({})", l.ip()),
            (None, Some(l)) => l.ip().to_string(),
            _ => "?".into(),
        })
        .collect();
    let on = if on.is_empty() {
        "no path left".to_owned()
    } else {
        on.join(", ")
    };
    let what = format!(
        "the session made no progress for {:.1} s with data outstanding on {on} and nothing \
         could carry it",
        stalled_for.as_secs_f64()
    );
    let saved = if !is_mptcp {
        "the connection is plain TCP (MPTCP fell back, or the peer does not speak it), so it \
         cannot move to another link: a roam peer (a roam Listener; tcp-resume reconnects on \
         another link) would have saved it"
    } else if steered {
        "roamd steers this connection but had no other usable link to open a subflow on, or \
         that link failed too: another link the policy permits would have saved it"
    } else if samples.len() <= 1 {
        "nothing opened a second subflow: roamd (it opens subflows on the policy's other \
         links), a kernel endpoint on another link (`ip mptcp endpoint add ADDR dev IFACE \
         subflow backup`), or a roam peer (tcp-resume reconnects on another link) would have \
         saved it"
    } else {
        "the kernel's path manager had these subflows and none made progress: roamd (it \
         opens subflows on links that work) or a roam peer (tcp-resume) would have saved it"
    };
    format!("{what}; {saved} (the bound is the session's idle_timeout)")
}

/// How the watcher judges the connection.
pub(super) struct Judging {
    /// Shared with the stream: the carrier for `path()`, the failure for reads and writes.
    pub(super) judged: Arc<Judged>,
    /// How long without progress, data outstanding, before the session fails.
    pub(super) give_up: Duration,
    /// Whether roamd steers the connection (for the failure's message).
    pub(super) steered: bool,
}

/// Starts the watcher of a client's MPTCP connection on a duplicate of its socket.
pub(super) fn spawn(
    stream: &TlsStream<TcpStream>,
    mut decisions: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<SessionEvent>,
    mut is_mptcp: bool,
    source: Arc<dyn DecisionSource>,
    judging: Judging,
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
        let mut stalls = StallReports::default();
        let mut judge = Judge::new(judging.give_up);
        let mut source_alive = true;
        let mut quiet = Quiet::new(std::time::Instant::now());
        let mut resting = false;
        // Every WATCH_INTERVAL (REST_ROUND while resting), and sooner when a stall report
        // falls due before that.
        let mut wake = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = judging.judged.wrote.notified(), if resting => {
                    resting = false;
                    quiet.woken(std::time::Instant::now());
                    wake = tokio::time::Instant::now();
                }
                r = decisions.changed(), if source_alive => match r {
                    Ok(()) => {
                        let snap = decisions.borrow_and_update().clone();
                        let _ = events.send(SessionEvent::DecisionUpdated(snap.decision.clone()));
                    }
                    Err(_) => source_alive = false,
                },
                _ = tokio::time::sleep_until(wake) => {
                    let mut samples = read_samples(&sock);
                    let mut now: Vec<Subflow> = samples.iter().map(|s| s.path.clone()).collect();
                    name(&decisions.borrow().clone(), &mut now);
                    read_backup(&mut diag, &mut now);
                    for (s, p) in samples.iter_mut().zip(&now) {
                        s.path = p.clone();
                    }
                    let t = tokio::time::Instant::now().into_std();
                    let stalled = stalls
                        .due(t, &samples, judging.judged.waiting_since())
                        .into_iter()
                        .map(|interface| PathReport::Path { interface, rtt: None, stalled: true });
                    for r in stalled.chain(rtt.due(t, &now)) {
                        source.report(r);
                    }
                    resting = quiet.observe(t, &samples, key(&now) != key(&last));
                    let round = t + if resting { REST_ROUND } else { WATCH_INTERVAL };
                    wake = stalls
                        .next_due()
                        .filter(|d| *d < round)
                        .map_or(round, |d| d.max(t + MIN_WAKE))
                        .into();
                    for v in judge.observe(t, &samples) {
                        let e = match v {
                            Verdict::Moved { from, to, reason } => {
                                tracing::info!(?from, %to, %reason, "the stream is carried by another subflow");
                                SessionEvent::PathChanged { from, to, reason }
                            }
                            Verdict::Degraded { path } => {
                                tracing::warn!(%path, "no subflow makes progress");
                                SessionEvent::Degraded {
                                    path,
                                    reason: DegradedReason::StalledNoAlternative,
                                }
                            }
                            Verdict::Recovered { path } => SessionEvent::Recovered { path },
                            Verdict::Failed { stalled_for } => {
                                let why = failure(stalled_for, &samples, is_mptcp, judging.steered);
                                tracing::warn!(%why, "the session failed");
                                let _ = judging.judged.failed.set(why);
                                // Wakes a read or write blocked on the socket; the stream then
                                // returns the reason.
                                let _ = socket2::SockRef::from(&sock).shutdown(std::net::Shutdown::Both);
                                return;
                            }
                        };
                        let _ = events.send(e);
                    }
                    judging.judged.set_carrier(judge.carrier());
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

    fn sample(acked: u64, unacked: u32) -> Sample {
        Sample {
            path: subflow("wlan0", 40000, 10, acked),
            unacked,
            window_closed: false,
            since_ack: None,
            since_data: None,
        }
    }

    #[test]
    fn the_watcher_rests_only_after_a_quiet_spell_and_a_write_wakes_it() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut q = Quiet::new(t0);
        // Bytes moving, then a keep-nothing idle connection: rests 2 s after the last byte.
        assert!(!q.observe(at(0), &[sample(1000, 0)], false));
        assert!(!q.observe(at(50), &[sample(2000, 0)], false));
        assert!(!q.observe(at(2_000), &[sample(2000, 0)], false));
        assert!(q.observe(at(2_050), &[sample(2000, 0)], false));
        // A segment in flight, a new subflow or a byte more: awake again.
        assert!(!q.observe(at(3_000), &[sample(2000, 1)], false));
        assert!(!q.observe(at(5_100), &[sample(2000, 0)], true));
        assert!(q.observe(at(7_100), &[sample(2000, 0)], false));
        assert!(!q.observe(at(8_000), &[sample(2001, 0)], false));
        // The app's write ends a rest.
        assert!(q.observe(at(10_000), &[sample(2001, 0)], false));
        q.woken(at(10_500));
        assert!(!q.observe(at(10_550), &[sample(2001, 0)], false));
    }

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
