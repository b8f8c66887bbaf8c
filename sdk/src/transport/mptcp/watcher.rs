//! The watcher of a client's MPTCP connection: every [`WATCH_INTERVAL`] it re-reads the
//! subflows and says when they change ([`SessionEvent::SubflowsChanged`]) or the connection
//! fell back to TCP ([`SessionEvent::MptcpFallback`]), and reports the subflows' RTTs and
//! stalls to the decision source (roamd confirms a stall with a burst of probes: the path is
//! judged by its own traffic, not by periodic probes). The kernel's MPTCP events go only to
//! CAP_NET_ADMIN listeners, so an app polls its own socket.
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

use super::progress::{self, Judge, Sample, Verdict};
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

/// Per-subflow ACK progress (TCP_INFO's bytes sent and acknowledged), and the stalls it shows:
/// one report per stall, re-armed when acknowledgements resume. A subflow stalls when it sent
/// data since its acknowledged bytes last grew and they have not grown for
/// [`progress::stall_threshold`] of its RTT.
///
/// The stall is timed from the kernel's own clock of the last ACK (`tcpi_last_ack_recv`), not
/// from the sample that saw the bytes grow, and [`StallReports::next_due`] says when the next
/// report could fall due, so the watcher wakes then instead of at its next round: at 50 ms RTT
/// the report came 150-200 ms after the last ACK (a 141 ms threshold rounded up to three
/// 50 ms rounds, plus up to one round before the growth was seen).
#[derive(Debug, Default)]
struct StallReports {
    /// Per subflow (local, remote): acknowledged bytes, when they last grew, bytes sent then,
    /// and whether this stall was reported.
    progress: Vec<((SocketAddr, SocketAddr), Progress)>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    acked: u64,
    at: std::time::Instant,
    sent: u64,
    reported: bool,
    /// When a report falls due if nothing is acknowledged before (data outstanding, not
    /// reported yet).
    due: Option<std::time::Instant>,
}

impl StallReports {
    /// The earliest moment a stall report could fall due, if one is pending.
    fn next_due(&self) -> Option<std::time::Instant> {
        self.progress.iter().filter_map(|(_, p)| p.due).min()
    }

    fn due(&mut self, now: std::time::Instant, samples: &[progress::Sample]) -> Vec<PathReport> {
        let mut out: Vec<PathReport> = Vec::new();
        let mut next = Vec::new();
        for sample in samples {
            let s = &sample.path;
            let (Some(local), Some(remote), Some(acked), Some(sent)) =
                (s.local, s.remote, s.bytes_acked, s.bytes_sent)
            else {
                continue;
            };
            let key = (local, remote);
            let before = self
                .progress
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, p)| *p);
            let mut p = match before {
                Some(p) if p.acked == acked => p,
                // New subflow, or acknowledgements moved: progress when the last ACK came
                // (after the previous sample, since it moved the bytes), else now.
                _ => Progress {
                    acked,
                    at: sample
                        .since_ack
                        .and_then(|d| now.checked_sub(d))
                        .unwrap_or(now),
                    sent,
                    reported: false,
                    due: None,
                },
            };
            let threshold = progress::stall_threshold(s.rtt);
            let outstanding = sent > p.sent;
            p.due = (!p.reported && outstanding).then(|| p.at + threshold);
            if !p.reported && outstanding && now.duration_since(p.at) >= threshold {
                p.reported = true;
                p.due = None;
                if let Some(interface) = s.interface.clone()
                    && !out.iter().any(
                        |r| matches!(r, PathReport::Path { interface: i, .. } if *i == interface),
                    )
                {
                    tracing::debug!(%interface, ?threshold, "subflow stalled: data sent, nothing acknowledged");
                    out.push(PathReport::Path {
                        interface,
                        rtt: None,
                        stalled: true,
                    });
                }
            }
            next.push((key, p));
        }
        self.progress = next;
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
        // Every WATCH_INTERVAL, and sooner when a stall report falls due before that.
        let mut wake = tokio::time::Instant::now();
        loop {
            tokio::select! {
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
                    for r in stalls.due(t, &samples).into_iter().chain(rtt.due(t, &now)) {
                        source.report(r);
                    }
                    let round = t + WATCH_INTERVAL;
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

    fn stalled_on(r: &[PathReport]) -> Vec<String> {
        r.iter()
            .filter_map(|r| match r {
                PathReport::Path {
                    interface,
                    stalled: true,
                    ..
                } => Some(interface.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_subflow_that_sends_without_acknowledgements_is_reported_stalled_once() {
        let t0 = std::time::Instant::now();
        let mut st = StallReports::default();
        let at = |sent: u64, acked: u64| {
            let mut s = subflow("wlan0", 1, 10, acked);
            s.bytes_sent = Some(sent);
            samples(vec![s, {
                // An idle backup: nothing sent, nothing acknowledged, never stalled.
                let mut b = subflow("rmnet0", 2, 10, 0);
                b.bytes_sent = Some(0);
                b
            }])
        };
        assert!(st.due(t0, &at(1000, 1000)).is_empty());
        // Acknowledgements keep up: no stall however long.
        assert!(st.due(t0 + ms(500), &at(5000, 5000)).is_empty());
        // Data sent, nothing acknowledged since t0 + 500 ms: 2 x 10 + 40 = 60 ms.
        assert!(st.due(t0 + ms(520), &at(9000, 5000)).is_empty());
        assert_eq!(
            stalled_on(&st.due(t0 + ms(560), &at(9000, 5000))),
            ["wlan0"]
        );
        // Once per stall ...
        assert!(st.due(t0 + ms(700), &at(12000, 5000)).is_empty());
        // ... re-armed when acknowledgements resume.
        assert!(st.due(t0 + ms(800), &at(12000, 12000)).is_empty());
        assert!(
            st.due(t0 + ms(900), &at(12000, 12000)).is_empty(),
            "idle is no stall"
        );
        assert_eq!(
            stalled_on(&st.due(t0 + ms(1000), &at(13000, 12000))),
            ["wlan0"]
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Samples of `v` without the kernel's last-ACK clock (a kernel that did not say).
    fn samples(v: Vec<Subflow>) -> Vec<progress::Sample> {
        v.into_iter()
            .map(|path| progress::Sample {
                path,
                unacked: 0,
                window_closed: false,
                since_ack: None,
            })
            .collect()
    }

    /// The stall is timed from the last ACK as the kernel clocked it, and the watcher is told
    /// when the report falls due, so it need not wait for its next 50 ms round.
    #[test]
    fn a_stall_is_timed_from_the_kernels_last_ack_and_its_report_is_scheduled() {
        let t0 = std::time::Instant::now();
        let mut st = StallReports::default();
        // 50 ms RTT: 2 x 50 + 40 = 140 ms.
        let at = |sent: u64, acked: u64, since_ack: u64| {
            let mut s = subflow("wlan0", 1, 50, acked);
            s.bytes_sent = Some(sent);
            let mut v = samples(vec![s]);
            v[0].since_ack = Some(ms(since_ack));
            v
        };
        assert!(st.due(t0, &at(1000, 1000, 0)).is_empty());
        assert_eq!(st.next_due(), None, "nothing outstanding");
        // The bytes grew in this round; the last ACK came 45 ms before it.
        assert!(st.due(t0 + ms(50), &at(4000, 3000, 45)).is_empty());
        // Data sent since, no ACK: due 140 ms after that ACK (t0 + 5 + 140), not 140 ms after
        // the round that saw it (t0 + 190, read at the round of t0 + 200).
        assert!(st.due(t0 + ms(100), &at(6000, 3000, 95)).is_empty());
        assert_eq!(st.next_due(), Some(t0 + ms(145)));
        assert!(st.due(t0 + ms(144), &at(7000, 3000, 139)).is_empty());
        assert_eq!(
            stalled_on(&st.due(t0 + ms(145), &at(7000, 3000, 140))),
            ["wlan0"]
        );
        assert_eq!(st.next_due(), None, "reported once");
        // A kernel that says nothing of its last ACK: timed from the round that saw progress.
        let mut st = StallReports::default();
        let plain = |sent: u64, acked: u64| {
            let mut s = subflow("wlan0", 1, 50, acked);
            s.bytes_sent = Some(sent);
            samples(vec![s])
        };
        assert!(st.due(t0 + ms(50), &plain(4000, 3000)).is_empty());
        assert!(st.due(t0 + ms(100), &plain(6000, 3000)).is_empty());
        assert_eq!(st.next_due(), Some(t0 + ms(190)));
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
