//! The MPTCP session judged by its own progress, sans I/O: which subflow really carries the
//! stream (the one whose bytes are acknowledged or received), when the carrier changes
//! (whoever changed it: roamd, the kernel's scheduler, the peer), when the whole connection
//! stops making progress (`Degraded`), and when it has made none for the session's bound
//! (the session fails with a reason instead of blocking).
//!
//! The watcher feeds it one [`Sample`] per subflow every `WATCH_INTERVAL`; it answers with
//! [`Verdict`]s. Progress is the kernel's own counting: `tcpi_bytes_acked` (our data the peer
//! acknowledged) and `tcpi_bytes_received` (the peer's data) of each subflow. Data is
//! outstanding on a subflow that has segments unacknowledged (`tcpi_unacked`) or sent bytes
//! since the last progress (`tcpi_bytes_sent` counts every attempt: on a link that went down
//! the sends fail before they count as in flight, so `tcpi_unacked` alone reads 0 there). An
//! idle connection is never judged.
//!
//! [`StallReports`] judges each subflow on its own, in both directions, for the decision
//! source (roamd confirms a reported stall with a probe burst): a sender's subflow whose data
//! goes unacknowledged, and a receiver's subflow whose data stops arriving while the app waits
//! for it. The second is what a download meets on a silent blackhole: the handset sends
//! nothing, so nothing of its own is ever outstanding, and only the silence of a subflow that
//! was streaming tells.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::vocab::{LocalPath, MigrationReason, Subflow};

/// A connection is stalled when data is outstanding and nothing was acknowledged or received
/// for this many smoothed RTTs (of the slowest subflow with data in flight) ...
pub(crate) const STALL_RTTS: u32 = 2;
/// ... plus the longest a Linux peer holds back an ACK while data flows (40 ms, the minimum
/// delack) ...
pub(crate) const STALL_ACK_DELAY: Duration = Duration::from_millis(40);
/// ... and never sooner than this, whatever the RTT (as the path manager's `min_stall`).
pub(crate) const STALL_MIN: Duration = Duration::from_millis(60);

/// The stall threshold of a subflow with smoothed RTT `rtt`.
pub(crate) fn stall_threshold(rtt: Duration) -> Duration {
    (rtt * STALL_RTTS + STALL_ACK_DELAY).max(STALL_MIN)
}

/// The silence after which a subflow that was streaming to a waiting app is reported, with
/// smoothed RTT `rtt`: one RTT plus half of one (never sooner than [`STALL_MIN`]). A receiver
/// waits on the peer's data, not on ACKs it holds back, so the sender's delayed ACK is no part
/// of it; and a sender whose window is full is clocked by our ACKs, so its data keeps coming
/// through the round trip. What goes silent for longer is a dead path, a tail loss (the
/// sender probes it after two RTTs), or a peer that ran out of data: a report is only a
/// suspicion roamd confirms with its probes, and at 50 ms RTT reporting 75 ms after the last
/// data instead of 140 shortens a download's blackhole by as much.
pub(crate) fn silence_threshold(rtt: Duration) -> Duration {
    (rtt + rtt / 2).max(STALL_MIN)
}

/// One subflow as read at one instant: its public view and its unacknowledged segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) path: Subflow,
    /// `tcpi_unacked`: segments sent and not acknowledged yet.
    pub(crate) unacked: u32,
    /// The peer advertises a zero window (`tcpi_snd_wnd` 0): its app is not reading. The
    /// peer is alive (it answers the window probes); a slow reader is no dead path.
    pub(crate) window_closed: bool,
    /// How long ago its last ACK arrived (`tcpi_last_ack_recv`), when the kernel said.
    pub(crate) since_ack: Option<Duration>,
    /// How long ago its last data segment arrived (`tcpi_last_data_recv`), when the kernel
    /// said.
    pub(crate) since_data: Option<Duration>,
}

type Key = (SocketAddr, SocketAddr);

fn key(s: &Subflow) -> Option<Key> {
    Some((s.local?, s.remote?))
}

/// Bytes that prove a subflow carries the stream: acknowledged plus received.
pub(crate) fn carried(s: &Subflow) -> u64 {
    s.bytes_acked.unwrap_or(0) + s.bytes_received.unwrap_or(0)
}

fn local_path(s: &Subflow) -> Option<LocalPath> {
    Some(LocalPath {
        interface: s.interface.clone().unwrap_or_default(),
        local: s.local?.ip(),
    })
}

/// What the judge concluded from a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Another subflow carries the stream now.
    Moved {
        from: Option<LocalPath>,
        to: LocalPath,
        reason: MigrationReason,
    },
    /// Data is outstanding and no subflow made progress for the stall threshold, and none
    /// is left that could take over (every live subflow stalled or none other exists).
    Degraded { path: LocalPath },
    /// Progress again after [`Verdict::Degraded`].
    Recovered { path: LocalPath },
    /// No progress for the session's bound with data outstanding: nothing carries it.
    Failed { stalled_for: Duration },
}

/// The judge of one connection.
#[derive(Debug)]
pub(crate) struct Judge {
    /// How long without progress, data outstanding, before the session fails.
    give_up: Duration,
    /// Each subflow's carried bytes at the last sample.
    last: Vec<(Key, u64)>,
    /// Each subflow's sent bytes at the last progress (or when it was first seen).
    sent_base: Vec<(Key, u64)>,
    /// Since when data has been outstanding without progress (`None`: not outstanding, or
    /// progress at the last sample).
    since: Option<Instant>,
    /// The subflow that carries the stream, and its path.
    carrier: Option<(Key, LocalPath)>,
    degraded: Option<LocalPath>,
    failed: bool,
}

impl Judge {
    /// A judge that gives up after `give_up` without progress.
    pub(crate) fn new(give_up: Duration) -> Judge {
        Judge {
            give_up,
            last: Vec::new(),
            sent_base: Vec::new(),
            since: None,
            carrier: None,
            degraded: None,
            failed: false,
        }
    }

    /// The subflow that carries the stream, as last judged.
    pub(crate) fn carrier(&self) -> Option<Key> {
        self.carrier.as_ref().map(|(k, _)| *k)
    }

    /// Takes one sample of every live subflow at `now`.
    pub(crate) fn observe(&mut self, now: Instant, samples: &[Sample]) -> Vec<Verdict> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        // Per subflow: how much it carried since the last sample (a new one: nothing yet).
        let mut grew: Vec<(&Sample, u64)> = Vec::new();
        let mut next = Vec::new();
        for s in samples {
            let Some(k) = key(&s.path) else { continue };
            let now_bytes = carried(&s.path);
            let before = self.last.iter().find(|(l, _)| *l == k).map(|(_, b)| *b);
            grew.push((s, before.map_or(0, |b| now_bytes.saturating_sub(b))));
            next.push((k, now_bytes));
        }
        self.last = next;
        let progress = grew.iter().any(|(_, g)| *g > 0);
        let sent = |s: &Sample| s.path.bytes_sent.unwrap_or(0);
        let base = std::mem::take(&mut self.sent_base);
        self.sent_base = samples
            .iter()
            .filter_map(|s| {
                let k = key(&s.path)?;
                let b = base.iter().find(|(l, _)| *l == k).map(|(_, b)| *b);
                Some((
                    k,
                    if progress {
                        sent(s)
                    } else {
                        b.unwrap_or(sent(s))
                    },
                ))
            })
            .collect();
        let stuck = |s: &Sample| {
            s.unacked > 0
                || key(&s.path)
                    .is_some_and(|k| self.sent_base.iter().any(|(l, b)| *l == k && sent(s) > *b))
        };
        let outstanding = samples.iter().any(stuck);

        // The carrier: the subflow that carried the most since the last sample; the same one
        // while nothing moved and it is still there.
        let busiest = grew
            .iter()
            .filter(|(_, g)| *g > 0)
            .max_by_key(|(_, g)| *g)
            .map(|(s, _)| *s);
        let still_there = |k: Key| samples.iter().any(|s| key(&s.path) == Some(k));
        if let Some(s) = busiest
            && let (Some(k), Some(to)) = (key(&s.path), local_path(&s.path))
            && self.carrier.as_ref().map(|(c, _)| *c) != Some(k)
        {
            let from = self.carrier.take();
            let reason = match &from {
                Some((c, _)) if !still_there(*c) => MigrationReason::LinkLost,
                Some(_) if self.since.is_some() => MigrationReason::Stalled,
                _ => MigrationReason::PrimaryChanged,
            };
            // The first carrier is where the session was made: no move.
            if let Some((_, from)) = from
                && from != to
            {
                out.push(Verdict::Moved {
                    from: Some(from),
                    to: to.clone(),
                    reason,
                });
            }
            self.carrier = Some((k, to));
        }

        // Progress, stalls and the bound. A peer that closed its window is waited for as
        // long as it takes: it answers, its app just does not read.
        let waiting_for_reader = samples.iter().any(|s| s.window_closed);
        if progress || !outstanding || waiting_for_reader {
            self.since = None;
            if progress && let Some(path) = self.degraded.take() {
                let path = self.carrier.as_ref().map_or(path, |(_, p)| p.clone());
                out.push(Verdict::Recovered { path });
            }
            return out;
        }
        let since = *self.since.get_or_insert(now);
        let waited = now.saturating_duration_since(since);
        let threshold = samples
            .iter()
            .filter(|s| stuck(s))
            .map(|s| stall_threshold(s.path.rtt))
            .max()
            .unwrap_or(STALL_MIN);
        // Nobody left to take over: every live subflow has data stuck on it, or there is
        // only one.
        let none_left = samples.len() <= 1 || samples.iter().all(stuck);
        if waited >= threshold && none_left && self.degraded.is_none() {
            let path = self
                .carrier
                .as_ref()
                .map(|(_, p)| p.clone())
                .or_else(|| samples.iter().find_map(|s| local_path(&s.path)));
            if let Some(path) = path {
                self.degraded = Some(path.clone());
                out.push(Verdict::Degraded { path });
            }
        }
        if waited >= self.give_up {
            self.failed = true;
            out.push(Verdict::Failed {
                stalled_for: waited,
            });
        }
        out
    }
}

/// The kernel dates `tcpi_last_ack_recv` and `tcpi_last_data_recv` in jiffies (1 to 10 ms),
/// so an arrival it dates may look up to this much later than it was.
const KERNEL_CLOCK: Duration = Duration::from_millis(10);

/// Per-subflow stalls for the decision source, in both directions: one report per stall,
/// re-armed when the subflow moves again. A report is a suspicion for roamd to confirm with
/// its probes, never a verdict.
///
/// - Sending: a subflow sent data since its acknowledged bytes last grew and they have not
///   grown for [`stall_threshold`] of its RTT. The stall is timed from the kernel's own clock
///   of the last ACK (`tcpi_last_ack_recv`), not from the sample that saw the bytes grow: at
///   50 ms RTT the report came 150-200 ms after the last ACK otherwise (a 141 ms threshold
///   rounded up to three 50 ms rounds, plus up to one round before the growth was seen).
/// - Receiving: a subflow was streaming (its data kept arriving, no silence of a stall
///   threshold, for at least one), the app waits in a read and has taken everything
///   it delivered, and nothing arrived for [`silence_threshold`] since the later of its last
///   data (`tcpi_last_data_recv`) and the start of the app's wait. What tells a dead path from
///   a peer with nothing to say is the flow before the silence: a peer that sent one message,
///   or a burst shorter than the threshold, or nothing, is never judged; an app that does not
///   read (its window closes, the peer must stop) is never judged; data arriving on another
///   subflow wakes the app and restarts its wait. A peer that streamed and then fell silent
///   while the app still waits does look like a stall: the report costs one probe burst on a
///   radio that carried that stream a threshold ago, so is still awake, and roamd rate-limits
///   bursts per app and link.
///
/// [`StallReports::next_due`] says when the next report could fall due, so the watcher wakes
/// then instead of at its next round.
#[derive(Debug, Default)]
pub(crate) struct StallReports {
    subflows: Vec<(Key, Watch)>,
}

/// One subflow's progress in each direction the kernel reports.
#[derive(Debug, Clone, Copy, Default)]
struct Watch {
    send: Option<Sending>,
    recv: Option<Receiving>,
}

#[derive(Debug, Clone, Copy)]
struct Sending {
    /// Acknowledged bytes, when they last grew, and the bytes sent then.
    acked: u64,
    at: Instant,
    sent: u64,
    reported: bool,
    /// When a report falls due if nothing is acknowledged before (data outstanding, not
    /// reported yet).
    due: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Receiving {
    /// Received bytes at the last sample.
    received: u64,
    /// The flow that ended with the last data to arrive, once any arrived while watched.
    flow: Option<Flow>,
    reported: bool,
    /// When a report falls due if nothing arrives before.
    due: Option<Instant>,
}

/// A run of arrivals with no silence of a stall threshold in it.
#[derive(Debug, Clone, Copy)]
struct Flow {
    start: Instant,
    last: Instant,
}

impl Flow {
    /// Whether it streamed long enough that a silence as long as the threshold stands out.
    fn streamed(&self, threshold: Duration) -> bool {
        self.last.saturating_duration_since(self.start) >= threshold
    }
}

/// When the kernel says the event `ago` happened, seen at `now` (`now` itself if it did not).
fn dated(now: Instant, ago: Option<Duration>) -> Instant {
    ago.and_then(|d| now.checked_sub(d)).unwrap_or(now)
}

impl StallReports {
    /// The earliest moment a stall report could fall due, if one is pending.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.subflows
            .iter()
            .flat_map(|(_, w)| [w.send.and_then(|s| s.due), w.recv.and_then(|r| r.due)])
            .flatten()
            .min()
    }

    /// Takes one sample of every live subflow at `now`; `waiting` is since when the app has
    /// been waiting in a read with nothing to take (`None`: it is not reading now). Returns
    /// the interfaces to report stalled, each once.
    pub(crate) fn due(
        &mut self,
        now: Instant,
        samples: &[Sample],
        waiting: Option<Instant>,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut next = Vec::new();
        for sample in samples {
            let s = &sample.path;
            let Some(k) = key(s) else { continue };
            let before = self
                .subflows
                .iter()
                .find(|(l, _)| *l == k)
                .map(|(_, w)| *w)
                .unwrap_or_default();
            let threshold = stall_threshold(s.rtt);
            let silence = silence_threshold(s.rtt);
            let send = s
                .bytes_acked
                .zip(s.bytes_sent)
                .map(|(acked, sent)| sending(before.send, now, sample, acked, sent, threshold));
            let recv = s
                .bytes_received
                .map(|received| receiving(before.recv, now, sample, received, silence, waiting));
            let w = Watch {
                send: send.map(|(p, _)| p),
                recv: recv.map(|(p, _)| p),
            };
            let stalled = [
                send.filter(|(_, st)| *st)
                    .map(|_| "data sent, nothing acknowledged"),
                recv.filter(|(_, st)| *st)
                    .map(|_| "a stream stopped arriving while the app waits"),
            ];
            for why in stalled.into_iter().flatten() {
                if let Some(interface) = s.interface.clone()
                    && !out.contains(&interface)
                {
                    tracing::debug!(%interface, ?threshold, ?silence, why, "subflow stalled");
                    out.push(interface);
                }
            }
            next.push((k, w));
        }
        self.subflows = next;
        out
    }
}

/// The send side of a subflow after a sample, and whether it stalled just now.
fn sending(
    before: Option<Sending>,
    now: Instant,
    sample: &Sample,
    acked: u64,
    sent: u64,
    threshold: Duration,
) -> (Sending, bool) {
    let mut p = match before {
        Some(p) if p.acked == acked => p,
        // New subflow, or acknowledgements moved: progress when the last ACK came (after the
        // previous sample, since it moved the bytes), else now.
        _ => Sending {
            acked,
            at: dated(now, sample.since_ack),
            sent,
            reported: false,
            due: None,
        },
    };
    let outstanding = sent > p.sent;
    p.due = (!p.reported && outstanding).then(|| p.at + threshold);
    let stalled = !p.reported && outstanding && now.duration_since(p.at) >= threshold;
    if stalled {
        p.reported = true;
        p.due = None;
    }
    (p, stalled)
}

/// The receive side of a subflow after a sample, and whether it stalled just now.
fn receiving(
    before: Option<Receiving>,
    now: Instant,
    sample: &Sample,
    received: u64,
    threshold: Duration,
    waiting: Option<Instant>,
) -> (Receiving, bool) {
    let mut r = match before {
        Some(r) if r.received == received => r,
        // Data arrived since the last sample, the last of it when the kernel says: the flow
        // goes on, unless a silence of a threshold may lie between (then it starts again).
        Some(r) if received > r.received => {
            let last = dated(now, sample.since_data);
            let start = match r.flow {
                Some(f) if last.saturating_duration_since(f.last) < threshold => f.start,
                _ => last,
            };
            Receiving {
                received,
                flow: Some(Flow { start, last }),
                reported: false,
                due: None,
            }
        }
        // A new subflow: its flow starts with the next data to arrive while watched.
        _ => Receiving {
            received,
            flow: None,
            reported: false,
            due: None,
        },
    };
    r.due = None;
    let Some(flow) = r.flow.filter(|f| !r.reported && f.streamed(threshold)) else {
        return (r, false);
    };
    // The app waits, took everything this subflow delivered, and began to wait before the
    // subflow had been silent for a threshold: a wait begun before the last data (by the
    // kernel's coarse clock) is a read the app left, or has not come back to, and data it
    // does not take is no data it misses; a subflow already silent for a threshold when the
    // wait began had stopped while the app was fed by another subflow or was not reading
    // (its window closed, so the peer had to stop): its silence is not what the app waits on.
    let waits_since =
        waiting.filter(|w| *w + KERNEL_CLOCK >= flow.last && *w < flow.last + threshold);
    let due = waits_since.map_or(flow.last, |w| w.max(flow.last)) + threshold;
    if waits_since.is_some() && now >= due {
        r.reported = true;
        return (r, true);
    }
    // Checked again when it would fall due (not before the app waits: the next round sees).
    r.due = (due > now).then_some(due);
    (r, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(iface: &str, host: u8, acked: u64, received: u64, unacked: u32) -> Sample {
        Sample {
            path: Subflow {
                id: u32::from(host),
                local: Some(SocketAddr::from(([198, 18, host, 2], 40000))),
                remote: Some(SocketAddr::from(([198, 19, 0, 1], 4433))),
                interface: Some(iface.into()),
                backup: Some(false),
                rtt: Duration::from_millis(10),
                bytes_sent: Some(acked),
                bytes_acked: Some(acked),
                bytes_received: Some(received),
            },
            unacked,
            window_closed: false,
            since_ack: None,
            since_data: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_carrier_is_the_subflow_whose_bytes_move_and_a_move_is_told_once() {
        let t0 = Instant::now();
        let mut j = Judge::new(Duration::from_secs(5));
        // Both subflows exist; wlan0 carries.
        assert!(
            j.observe(t0, &[sub("wlan0", 2, 0, 0, 0), sub("rmnet0", 3, 0, 0, 0)])
                .is_empty()
        );
        assert!(
            j.observe(
                t0 + ms(50),
                &[sub("wlan0", 2, 5000, 100, 2), sub("rmnet0", 3, 0, 0, 0)]
            )
            .is_empty(),
            "the first carrier is no move"
        );
        assert_eq!(j.carrier().unwrap().0.ip().to_string(), "198.18.2.2");
        // The peer (or the kernel) moves the stream to rmnet0 while wlan0 is still there:
        // only received bytes move there.
        let v = j.observe(
            t0 + ms(100),
            &[sub("wlan0", 2, 5000, 100, 0), sub("rmnet0", 3, 0, 800, 0)],
        );
        assert_eq!(
            v,
            [Verdict::Moved {
                from: Some(LocalPath {
                    interface: "wlan0".into(),
                    local: "198.18.2.2".parse().unwrap()
                }),
                to: LocalPath {
                    interface: "rmnet0".into(),
                    local: "198.18.3.2".parse().unwrap()
                },
                reason: MigrationReason::PrimaryChanged
            }]
        );
        // Idle: the carrier stays, no event.
        assert!(
            j.observe(
                t0 + ms(150),
                &[sub("wlan0", 2, 5000, 100, 0), sub("rmnet0", 3, 0, 800, 0)]
            )
            .is_empty()
        );
        // rmnet0's subflow goes, wlan0 carries again: the link was lost.
        let v = j.observe(t0 + ms(200), &[sub("wlan0", 2, 9000, 100, 1)]);
        assert!(
            matches!(&v[..], [Verdict::Moved { reason: MigrationReason::LinkLost, to, .. }]
                if to.interface == "wlan0"),
            "{v:?}"
        );
    }

    #[test]
    fn a_lone_stuck_subflow_degrades_at_the_threshold_then_fails_at_the_bound() {
        let t0 = Instant::now();
        let mut j = Judge::new(ms(1000));
        j.observe(t0, &[sub("wlan0", 2, 1000, 0, 0)]);
        j.observe(t0 + ms(50), &[sub("wlan0", 2, 2000, 0, 3)]);
        // Stuck from t0 + 100 ms: 2 x 10 ms + 40 ms, at least 60 ms.
        assert!(
            j.observe(t0 + ms(100), &[sub("wlan0", 2, 2000, 0, 3)])
                .is_empty()
        );
        assert!(
            j.observe(t0 + ms(150), &[sub("wlan0", 2, 2000, 0, 3)])
                .is_empty()
        );
        let v = j.observe(t0 + ms(160), &[sub("wlan0", 2, 2000, 0, 3)]);
        assert!(matches!(&v[..], [Verdict::Degraded { path }] if path.interface == "wlan0"));
        // Once.
        assert!(
            j.observe(t0 + ms(500), &[sub("wlan0", 2, 2000, 0, 3)])
                .is_empty()
        );
        let v = j.observe(t0 + ms(1100), &[sub("wlan0", 2, 2000, 0, 3)]);
        assert_eq!(
            v,
            [Verdict::Failed {
                stalled_for: ms(1000)
            }]
        );
        // And nothing after.
        assert!(
            j.observe(t0 + ms(1200), &[sub("wlan0", 2, 9000, 0, 0)])
                .is_empty()
        );
    }

    #[test]
    fn sends_that_fail_on_a_link_gone_down_count_as_outstanding() {
        let t0 = Instant::now();
        let mut j = Judge::new(ms(1000));
        let at = |sent: u64, acked: u64| {
            let mut s = sub("wlan0", 2, acked, 0, 0);
            s.path.bytes_sent = Some(sent);
            [s]
        };
        j.observe(t0, &at(1000, 0));
        j.observe(t0 + ms(50), &at(2000, 2000));
        // Idle: nothing sent since the last progress.
        assert!(j.observe(t0 + ms(500), &at(2000, 2000)).is_empty());
        // The link is gone: every attempt counts as sent, none is in flight (unacked 0).
        j.observe(t0 + ms(550), &at(9000, 2000));
        let v = j.observe(t0 + ms(620), &at(9000, 2000));
        assert!(matches!(&v[..], [Verdict::Degraded { .. }]), "{v:?}");
    }

    #[test]
    fn a_peer_that_does_not_read_is_no_stall() {
        let t0 = Instant::now();
        let mut j = Judge::new(ms(1000));
        j.observe(t0, &[sub("wlan0", 2, 0, 0, 0)]);
        j.observe(t0 + ms(50), &[sub("wlan0", 2, 1000, 0, 2)]);
        let mut full = sub("wlan0", 2, 1000, 0, 2);
        full.window_closed = true;
        for i in 2..100 {
            let v = j.observe(t0 + ms(50 * i), std::slice::from_ref(&full));
            assert!(v.is_empty(), "{v:?}");
        }
    }

    #[test]
    fn progress_recovers_and_idle_or_a_free_subflow_is_no_degradation() {
        let t0 = Instant::now();
        let mut j = Judge::new(ms(1000));
        // Idle for long after carrying: nothing outstanding, nothing judged.
        j.observe(t0, &[sub("wlan0", 2, 0, 0, 0)]);
        j.observe(t0 + ms(50), &[sub("wlan0", 2, 1000, 0, 0)]);
        assert!(
            j.observe(t0 + ms(900), &[sub("wlan0", 2, 1000, 0, 0)])
                .is_empty()
        );
        // Stuck on wlan0 with an idle backup: the backup may take over, so no Degraded yet
        // (the kernel or roamd moves the stream) ...
        let two = |a: u64, b: u64, ua: u32, ub: u32| {
            [sub("wlan0", 2, a, 0, ua), sub("rmnet0", 3, b, 0, ub)]
        };
        j.observe(t0 + ms(950), &two(1000, 0, 2, 0));
        assert!(j.observe(t0 + ms(1200), &two(1000, 0, 2, 0)).is_empty());
        // ... until the backup is stuck too.
        let v = j.observe(t0 + ms(1250), &two(1000, 0, 2, 1));
        assert!(matches!(&v[..], [Verdict::Degraded { .. }]), "{v:?}");
        // rmnet0's bytes move: the stream moved there (stalled before), and recovered.
        let v = j.observe(t0 + ms(1300), &two(1000, 4000, 2, 0));
        assert!(
            matches!(&v[..], [
                Verdict::Moved { reason: MigrationReason::Stalled, to: a, .. },
                Verdict::Recovered { path: b },
            ] if a.interface == "rmnet0" && b.interface == "rmnet0"),
            "{v:?}"
        );
        // The bound counts from the last progress: far from failing now.
        assert!(j.observe(t0 + ms(2000), &two(1000, 4000, 2, 1)).is_empty());
    }

    /// Samples of one subflow with the kernel's last-ACK clock.
    fn sending_at(sent: u64, acked: u64, rtt_ms: u64, since_ack: Option<u64>) -> Vec<Sample> {
        let mut s = sub("wlan0", 2, acked, 0, 0);
        s.path.bytes_sent = Some(sent);
        s.path.rtt = ms(rtt_ms);
        s.since_ack = since_ack.map(ms);
        vec![s]
    }

    #[test]
    fn a_subflow_that_sends_without_acknowledgements_is_reported_stalled_once() {
        let t0 = Instant::now();
        let mut st = StallReports::default();
        let at = |sent: u64, acked: u64| {
            let mut v = sending_at(sent, acked, 10, None);
            // An idle backup: nothing sent, nothing acknowledged, never stalled.
            v.push(sub("rmnet0", 3, 0, 0, 0));
            v
        };
        assert!(st.due(t0, &at(1000, 1000), None).is_empty());
        // Acknowledgements keep up: no stall however long.
        assert!(st.due(t0 + ms(500), &at(5000, 5000), None).is_empty());
        // Data sent, nothing acknowledged since t0 + 500 ms: 2 x 10 + 40 = 60 ms.
        assert!(st.due(t0 + ms(520), &at(9000, 5000), None).is_empty());
        assert_eq!(st.due(t0 + ms(560), &at(9000, 5000), None), ["wlan0"]);
        // Once per stall ...
        assert!(st.due(t0 + ms(700), &at(12000, 5000), None).is_empty());
        // ... re-armed when acknowledgements resume.
        assert!(st.due(t0 + ms(800), &at(12000, 12000), None).is_empty());
        assert!(
            st.due(t0 + ms(900), &at(12000, 12000), None).is_empty(),
            "idle is no stall"
        );
        assert_eq!(st.due(t0 + ms(1000), &at(13000, 12000), None), ["wlan0"]);
    }

    /// The stall is timed from the last ACK as the kernel clocked it, and the watcher is told
    /// when the report falls due, so it need not wait for its next 50 ms round.
    #[test]
    fn a_send_stall_is_timed_from_the_kernels_last_ack_and_its_report_is_scheduled() {
        let t0 = Instant::now();
        let mut st = StallReports::default();
        // 50 ms RTT: 2 x 50 + 40 = 140 ms.
        let at = |sent, acked, since_ack| sending_at(sent, acked, 50, Some(since_ack));
        assert!(st.due(t0, &at(1000, 1000, 0), None).is_empty());
        assert_eq!(st.next_due(), None, "nothing outstanding");
        // The bytes grew in this round; the last ACK came 45 ms before it.
        assert!(st.due(t0 + ms(50), &at(4000, 3000, 45), None).is_empty());
        // Data sent since, no ACK: due 140 ms after that ACK (t0 + 5 + 140), not 140 ms after
        // the round that saw it (t0 + 190, read at the round of t0 + 200).
        assert!(st.due(t0 + ms(100), &at(6000, 3000, 95), None).is_empty());
        assert_eq!(st.next_due(), Some(t0 + ms(145)));
        assert!(st.due(t0 + ms(144), &at(7000, 3000, 139), None).is_empty());
        assert_eq!(st.due(t0 + ms(145), &at(7000, 3000, 140), None), ["wlan0"]);
        assert_eq!(st.next_due(), None, "reported once");
        // A kernel that says nothing of its last ACK: timed from the round that saw progress.
        let mut st = StallReports::default();
        let plain = |sent, acked| sending_at(sent, acked, 50, None);
        assert!(st.due(t0 + ms(50), &plain(4000, 3000), None).is_empty());
        assert!(st.due(t0 + ms(100), &plain(6000, 3000), None).is_empty());
        assert_eq!(st.next_due(), Some(t0 + ms(190)));
    }

    /// How the app reads in [`Receiver`].
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum App {
        /// Always waiting in a read: each arrival is taken at once and the read waits again.
        Waits,
        /// Does not read: whatever arrives stays in the socket.
        Busy,
        /// Left a read waiting (a select that moved on) and takes nothing that arrives.
        LeftARead,
    }

    /// A handset receiving on virtual time, one millisecond a step, and its watcher as the
    /// shell runs it: a round every 50 ms, sooner when a report falls due. `send[i]` is what
    /// subflow `i` (wlan0, rmnet0) receives per millisecond (0: silence).
    struct Receiver {
        t0: Instant,
        now: Instant,
        rtt: Duration,
        st: StallReports,
        received: [u64; 2],
        last: [Option<Instant>; 2],
        send: [u64; 2],
        app: App,
        waiting: Option<Instant>,
        wake: Instant,
        reports: Vec<(Duration, String)>,
    }

    impl Receiver {
        fn new(rtt: Duration) -> Receiver {
            let now = Instant::now();
            Receiver {
                t0: now,
                now,
                rtt,
                st: StallReports::default(),
                received: [0; 2],
                last: [None; 2],
                send: [0; 2],
                app: App::Waits,
                waiting: None,
                wake: now,
                reports: Vec::new(),
            }
        }

        fn at(&self) -> Duration {
            self.now - self.t0
        }

        fn run(&mut self, steps: u64) {
            for _ in 0..steps {
                self.now += Duration::from_millis(1);
                let mut arrived = false;
                for i in 0..2 {
                    if self.send[i] > 0 {
                        self.received[i] += self.send[i];
                        self.last[i] = Some(self.now);
                        arrived = true;
                    }
                }
                self.waiting = match self.app {
                    App::Waits if arrived => Some(self.now),
                    App::Waits => self.waiting.or(Some(self.now)),
                    App::Busy => None,
                    App::LeftARead => self.waiting,
                };
                if self.now < self.wake {
                    continue;
                }
                let samples: Vec<Sample> = ["wlan0", "rmnet0"]
                    .iter()
                    .enumerate()
                    .map(|(i, iface)| {
                        let mut s = sub(iface, 2 + i as u8, 0, self.received[i], 0);
                        s.path.bytes_sent = Some(0);
                        s.path.rtt = self.rtt;
                        // The kernel's clock: whole 4 ms jiffies.
                        s.since_data = self.last[i].map(|l| {
                            let d = (self.now - l).as_millis() as u64;
                            ms(d - d % 4)
                        });
                        s
                    })
                    .collect();
                for iface in self.st.due(self.now, &samples, self.waiting) {
                    self.reports.push((self.at(), iface));
                }
                let round = self.now + WATCH_ROUND;
                self.wake = self
                    .st
                    .next_due()
                    .filter(|d| *d < round)
                    .map_or(round, |d| d.max(self.now + ms(1)));
            }
        }
    }

    /// The watcher's round (its `WATCH_INTERVAL`).
    const WATCH_ROUND: Duration = Duration::from_millis(50);

    #[test]
    fn a_stream_that_stops_arriving_while_the_app_waits_is_reported_at_the_threshold() {
        // A receiver's threshold: 1.5 RTTs, at least 60 ms; no delayed ACK in it.
        assert_eq!(silence_threshold(ms(0)), ms(60));
        assert_eq!(silence_threshold(ms(50)), ms(75));
        assert_eq!(silence_threshold(ms(100)), ms(150));
        assert_eq!(stall_threshold(ms(50)), ms(140));
        for rtt in [0, 10, 50, 100] {
            let mut r = Receiver::new(ms(rtt));
            r.send = [64, 0];
            r.run(300);
            assert!(r.reports.is_empty(), "{:?}", r.reports);
            // A silent blackhole: nothing arrives, the app waits.
            r.send = [0, 0];
            let hole = r.at();
            r.run(2_000);
            let threshold = silence_threshold(ms(rtt));
            assert_eq!(r.reports.len(), 1, "once: {:?}", r.reports);
            let (at, iface) = &r.reports[0];
            assert_eq!(iface, "wlan0");
            let seen = *at - hole;
            // From the last data, by the kernel's 4 ms clock, at a wake scheduled for it.
            assert!(seen >= threshold, "rtt {rtt}: {seen:?}");
            assert!(seen <= threshold + ms(5), "rtt {rtt}: {seen:?}");
        }
    }

    #[test]
    fn a_peer_with_nothing_to_say_is_no_stall() {
        let mut r = Receiver::new(ms(10));
        // Silence from the start, the app waiting.
        r.run(5_000);
        // One message, a reply of 50 ms (shorter than the 60 ms threshold), then silence.
        r.send = [64, 0];
        r.run(1);
        r.send = [0, 0];
        r.run(5_000);
        r.send = [1500, 0];
        r.run(50);
        r.send = [0, 0];
        r.run(5_000);
        // A paced stream whose pauses are longer than the threshold: each chunk a new flow.
        for _ in 0..50 {
            r.send = [1500, 0];
            r.run(20);
            r.send = [0, 0];
            r.run(80);
        }
        assert!(r.reports.is_empty(), "{:?}", r.reports);
        // Paced with pauses shorter than the threshold: a stream, so its end is suspect.
        for _ in 0..10 {
            r.send = [1500, 0];
            r.run(5);
            r.send = [0, 0];
            r.run(40);
        }
        r.run(1_000);
        assert_eq!(r.reports.len(), 1, "{:?}", r.reports);
    }

    #[test]
    fn an_app_that_does_not_read_is_no_stall() {
        // It stops reading (its window closes and the peer has to stop), or it left a read
        // waiting and took nothing since.
        for app in [App::Busy, App::LeftARead] {
            let mut r = Receiver::new(ms(10));
            r.send = [64, 0];
            r.run(300);
            r.app = app;
            r.run(40);
            r.send = [0, 0];
            r.run(5_000);
            assert!(r.reports.is_empty(), "{app:?}: {:?}", r.reports);
            // It reads again after a long while and nothing comes: the stream had ended long
            // before it waited, nothing says the peer has more.
            r.app = App::Waits;
            r.run(5_000);
            assert!(r.reports.is_empty(), "{app:?}: {:?}", r.reports);
        }
        // Busy for a moment just as the stream stops, then waiting: a threshold after it
        // began to wait, not after the last data.
        let mut r = Receiver::new(ms(10));
        r.send = [64, 0];
        r.run(300);
        r.app = App::Busy;
        r.send = [0, 0];
        r.run(40);
        r.app = App::Waits;
        let back = r.at();
        r.run(1_000);
        let (at, _) = r.reports.first().expect("never reported");
        assert!(*at - back >= silence_threshold(ms(10)), "{:?}", *at - back);
        assert!(
            *at - back <= silence_threshold(ms(10)) + WATCH_ROUND,
            "{:?}",
            *at - back
        );
    }

    #[test]
    fn data_on_another_subflow_is_no_stall_and_a_report_is_rearmed_by_a_new_stream() {
        let mut r = Receiver::new(ms(10));
        r.send = [64, 0];
        r.run(300);
        // The peer moves the stream to rmnet0 (its scheduler, or MP_PRIO): the app is fed.
        r.send = [0, 64];
        r.run(2_000);
        assert!(r.reports.is_empty(), "{:?}", r.reports);
        // rmnet0 goes silent: rmnet0 is suspect, not wlan0, which stopped long before.
        r.send = [0, 0];
        r.run(500);
        let ifaces: Vec<&str> = r.reports.iter().map(|(_, i)| i.as_str()).collect();
        assert_eq!(ifaces, ["rmnet0"]);
        // Back on rmnet0 for long enough to be a stream, silent again: reported again.
        r.send = [0, 64];
        r.run(200);
        r.send = [0, 0];
        r.run(500);
        assert_eq!(r.reports.len(), 2, "{:?}", r.reports);
        // Two streams at once (the scheduler uses both) and both stop: both are suspect.
        r.send = [64, 64];
        r.run(200);
        r.send = [0, 0];
        r.run(500);
        let last: Vec<&str> = r.reports[2..].iter().map(|(_, i)| i.as_str()).collect();
        assert_eq!(last, ["wlan0", "rmnet0"]);
    }
}
