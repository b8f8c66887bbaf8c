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
}

type Key = (SocketAddr, SocketAddr);

fn key(s: &Subflow) -> Option<Key> {
    Some((s.local?, s.remote?))
}

/// Bytes that prove a subflow carries the stream: acknowledged plus received.
fn carried(s: &Subflow) -> u64 {
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
}
