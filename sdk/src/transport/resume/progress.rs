//! TCP's acknowledgement progress in the path manager's terms, so a tcp-resume session is
//! judged by the same stall detector as a QUIC one (`crate::path::manager`: no ACK progress
//! with data in flight for max(`min_stall`, `stall_rtts` smoothed RTTs + `max_ack_delay`)).
//!
//! The signals are the kernel's `TCP_INFO` on the session's current TCP connection: the bytes
//! the peer acknowledged (`tcpi_bytes_acked`), the segments in flight (`tcpi_unacked`), the
//! bytes written and not sent yet (`tcpi_notsent_bytes`), the peer's window
//! (`tcpi_snd_wnd`) and the smoothed RTT (`tcpi_rtt`).
//! They are better judges than the session's own DATA and ACK frames: a frame handed to the
//! socket may wait seconds in its send buffer behind others on a slow link, and a resume ACK
//! waits for the peer's app to be scheduled, while TCP's ACKs come from the peer's kernel.
//!
//! The detector counts ack-eliciting sends and ACKs received. Here one "send" is a flight:
//! data in flight that no ACK progress has answered since the last sample that saw some, and
//! one "ACK" is a sample that saw `bytes_acked` grow, or the kernel's zero-window probes
//! answered. Data waits for an ACK when segments are in flight, when a zero-window probe is
//! out (`tcpi_probes`), or when bytes are queued while the peer's window is open: a link that
//! drops frames at the device refuses them before they count as sent (TCP keeps them unsent
//! and tries again on its retransmission timer). Bytes held back by a closed window wait for
//! the peer's app, not the path, so a slow reader is never taken for a stall; but a path that
//! dies while the window is closed leaves the kernel's probes unanswered, and that is one.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::path::manager::TransportSample;

/// Linux's shortest delayed-ACK timeout (`TCP_ATO_MIN`): the peer's kernel may hold the ACK of
/// a lone segment (a keep-alive) this long, so the detector's ACK delay is at least this.
pub(crate) const DELAYED_ACK: Duration = Duration::from_millis(40);

/// One reading of a TCP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpReading {
    /// `tcpi_bytes_acked`: bytes of this connection the peer acknowledged.
    pub(crate) bytes_acked: u64,
    /// `tcpi_bytes_received`: bytes of this connection received from the peer.
    pub(crate) bytes_received: u64,
    /// `tcpi_unacked`: segments sent and not acknowledged yet.
    pub(crate) unacked: u32,
    /// `tcpi_notsent_bytes`: bytes written and not sent yet.
    pub(crate) unsent: u32,
    /// `tcpi_snd_wnd`: the window the peer advertised (0: its app is not reading).
    pub(crate) peer_window: u32,
    /// `tcpi_probes`: zero-window probes sent and not answered yet.
    pub(crate) probes: u8,
    /// The kernel's smoothed RTT.
    pub(crate) rtt: Duration,
}

impl TcpReading {
    /// Reads `fd`'s connection (`TCP_INFO`). Kernels before 5.19 report no peer window:
    /// queued data then counts as waiting only when something is in flight.
    pub(crate) fn of(fd: BorrowedFd<'_>) -> io::Result<TcpReading> {
        let i = crate::mptcp::sockopt::tcp_info(fd)?;
        Ok(TcpReading {
            bytes_acked: i.bytes_acked.unwrap_or(0),
            bytes_received: i.bytes_received.unwrap_or(0),
            unacked: i.unacked,
            unsent: i.notsent_bytes.unwrap_or(0),
            peer_window: i.snd_wnd.unwrap_or(0),
            probes: i.probes,
            rtt: Duration::from_micros(i.rtt_us.into()),
        })
    }

    /// Data waits for an ACK: in flight, a zero-window probe out, or queued with the peer's
    /// window open.
    fn waiting(&self) -> bool {
        self.unacked > 0 || self.probes > 0 || (self.unsent > 0 && self.peer_window > 0)
    }
}

/// Turns readings of the session's successive connections into the detector's monotonic
/// counters.
#[derive(Debug, Default)]
pub(crate) struct TcpProgress {
    /// `bytes_acked` of the current connection at the last reading.
    acked: u64,
    /// Samples that saw ACK progress (the detector's "ACKs received").
    acks: u64,
    /// Flights counted (the detector's "ack-eliciting sends").
    flights: u64,
    /// A flight was counted and no ACK progress came since.
    waiting: bool,
    /// The last reading had zero-window probes out.
    probing: bool,
    /// Bytes acknowledged and received over every connection so far (the detector's bytes).
    bytes: u64,
    /// Those of the current connection at the last reading.
    conn_bytes: u64,
}

impl TcpProgress {
    /// The session moved to a fresh connection: its counters start again from zero.
    pub(crate) fn new_connection(&mut self) {
        self.acked = 0;
        self.conn_bytes = 0;
        self.waiting = false;
        self.probing = false;
    }

    /// The sample for the path manager from a reading of the current connection.
    pub(crate) fn sample(&mut self, r: TcpReading) -> TransportSample {
        // The kernel clears its probe count on the first ACK that comes back.
        let probe_answered = std::mem::replace(&mut self.probing, r.probes > 0) && r.probes == 0;
        let conn_bytes = r.bytes_acked + r.bytes_received;
        self.bytes += conn_bytes.saturating_sub(self.conn_bytes);
        self.conn_bytes = conn_bytes;
        if r.bytes_acked > self.acked || probe_answered {
            self.acked = self.acked.max(r.bytes_acked);
            self.acks += 1;
            self.waiting = false;
        } else if !r.waiting() {
            self.waiting = false;
        } else if !self.waiting {
            // In flight and unanswered since the last progress: an ACK is due from now on.
            self.flights += 1;
            self.waiting = true;
        }
        TransportSample {
            ack_eliciting_sent: self.flights,
            acks_received: self.acks,
            rtt: r.rtt,
            // Not counted: the resume protocol's own pings keep an idle or receiving
            // connection's ACK clock running (`keep_alive`), so no ping is ever asked for.
            received: 0,
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::path::manager::{Action, Config, Input, PathManager};
    use crate::vocab::{LocalPath, MigrationReason};

    fn path(interface: &str, local: &str) -> LocalPath {
        LocalPath {
            interface: interface.into(),
            local: local.parse().unwrap(),
        }
    }

    /// A TCP sender on virtual time: the path manager asks for samples, a fake connection
    /// answers them. `send` says how many bytes the app hands TCP per millisecond; `peer_window`
    /// how many the peer lets be in flight (0: its app stopped reading); `delivers` whether
    /// the path carries anything (else a silent blackhole), `refuses` whether the device takes
    /// nothing (a blackhole at the device: TCP keeps the bytes unsent); ACKs come back one
    /// `rtt` after.
    struct Sim {
        pm: PathManager,
        t0: Instant,
        now: Instant,
        progress: TcpProgress,
        rtt: Duration,
        /// Sends not acknowledged yet: when each left and the stream offset it reached.
        sent: std::collections::VecDeque<(Instant, u64)>,
        sent_total: u64,
        acked: u64,
        unsent: u64,
        send: u64,
        peer_window: u64,
        delivers: bool,
        refuses: bool,
        /// Zero-window probes out, when the next goes, and when the answer to the last comes.
        probes: u8,
        next_probe: Instant,
        probe_answer: Option<Instant>,
        moves: Vec<(Duration, String, MigrationReason)>,
    }

    impl Sim {
        fn new(rtt: Duration) -> Sim {
            let now = Instant::now();
            let wlan = path("wlan0", "198.18.0.2");
            let mut pm = PathManager::new(Config::default(), wlan.clone(), now);
            pm.handle(now, Input::Paths(vec![wlan, path("rmnet0", "198.18.1.2")]));
            Sim {
                pm,
                t0: now,
                now,
                progress: TcpProgress::default(),
                rtt,
                sent: Default::default(),
                sent_total: 0,
                acked: 0,
                unsent: 0,
                send: 16 * 1024,
                peer_window: u32::MAX.into(),
                delivers: true,
                refuses: false,
                probes: 0,
                next_probe: now,
                probe_answer: None,
                moves: Vec::new(),
            }
        }

        fn in_flight(&self) -> u64 {
            self.sent_total - self.acked
        }

        /// One millisecond of TCP: ACKs that are due arrive, the app's bytes go out as far as
        /// the peer's window allows.
        fn tick(&mut self) {
            let now = self.now;
            while self.delivers
                && let Some(&(at, end)) = self.sent.front()
                && at + self.rtt <= now
            {
                self.acked = end;
                self.sent.pop_front();
            }
            self.unsent += self.send;
            let room = self.peer_window.saturating_sub(self.in_flight());
            let n = if self.refuses {
                0
            } else {
                self.unsent.min(room)
            };
            self.unsent -= n;
            // The persist timer: with the window closed and nothing in flight, a probe every
            // 200 ms, answered one RTT later if the path delivers.
            if self.probe_answer.is_some_and(|t| t <= now) {
                self.probes = 0;
                self.probe_answer = None;
            }
            if self.peer_window == 0 && self.unsent > 0 && self.in_flight() == 0 {
                if now >= self.next_probe {
                    self.probes = self.probes.saturating_add(1);
                    self.next_probe = now + Duration::from_millis(200);
                    if self.delivers {
                        self.probe_answer = Some(now + self.rtt);
                    }
                }
            } else {
                self.probes = 0;
            }
            if n > 0 {
                self.sent_total += n;
                self.sent.push_back((now, self.sent_total));
            }
        }

        /// Runs for `ms` virtual milliseconds, answering the manager's samples and moves.
        fn run(&mut self, ms: u64) {
            for _ in 0..ms {
                self.now += Duration::from_millis(1);
                // The app's write wakes a resting manager, as `ResumeStream` does through the
                // supervisor (`Input::Awake`).
                if self.send > 0 && self.pm.resting(self.now) {
                    self.pm.handle(self.now, Input::Awake);
                }
                self.tick();
                if self.pm.poll_timeout() <= self.now {
                    self.pm.handle_timeout(self.now);
                }
                while let Some(a) = self.pm.poll_action() {
                    match a {
                        Action::Sample => {
                            let r = TcpReading {
                                bytes_acked: self.acked,
                                bytes_received: 0,
                                unacked: self.sent.len() as u32,
                                unsent: self.unsent.min(u32::MAX.into()) as u32,
                                peer_window: self.peer_window as u32,
                                probes: self.probes,
                                rtt: self.rtt,
                            };
                            let s = self.progress.sample(r);
                            self.pm.handle(self.now, Input::Sample(s));
                        }
                        Action::Move { to, reason } => {
                            self.moves
                                .push((self.now - self.t0, to.interface.clone(), reason));
                            self.pm.handle(self.now, Input::Moved(to));
                        }
                        Action::Warm(_) | Action::Event(_) | Action::Ping => {}
                    }
                }
            }
        }
    }

    #[test]
    fn a_blackhole_under_a_bulk_stream_is_seen_at_the_detectors_threshold() {
        for refuses in [false, true] {
            bulk_stream_into_a_blackhole(refuses);
        }
    }

    /// 3 s of a stream at 50 ms RTT, then a blackhole that loses what is sent (or, with
    /// `refuses`, takes nothing at the device).
    fn bulk_stream_into_a_blackhole(refuses: bool) {
        let mut s = Sim::new(Duration::from_millis(50));
        s.run(3_000);
        assert!(s.moves.is_empty(), "{:?}", s.moves);
        assert!(s.acked > 10 << 20, "the stream flowed");
        s.delivers = false;
        s.refuses = refuses;
        let hole = s.now - s.t0;
        s.run(1_000);
        assert_eq!(s.moves.len(), 1, "refuses {refuses}: {:?}", s.moves);
        let (at, to, reason) = &s.moves[0];
        assert_eq!((to.as_str(), *reason), ("rmnet0", MigrationReason::Stalled));
        // The detector's threshold at 50 ms: 2 RTTs plus 25 ms of ACK delay, counted from the
        // first sample that saw bytes in flight unanswered, plus a sampling interval or two.
        let threshold = Duration::from_millis(125);
        let seen = *at - hole;
        assert!(seen >= threshold, "{seen:?}");
        assert!(seen <= threshold + Duration::from_millis(20), "{seen:?}");
    }

    #[test]
    fn an_idle_blackhole_is_seen_once_a_keep_alive_goes_unanswered() {
        let mut s = Sim::new(Duration::from_millis(1));
        // One answered exchange, then silence: idle paths are not judged.
        s.send = 40;
        s.run(1);
        s.send = 0;
        s.run(1_000);
        s.delivers = false;
        s.run(2_000);
        assert!(s.moves.is_empty(), "nothing in flight, nothing to judge");
        // A keep-alive: a few bytes go out and nothing answers.
        s.send = 40;
        let ping = s.now - s.t0;
        s.run(1);
        s.send = 0;
        s.run(2_000);
        let (at, _, reason) = s.moves.first().expect("never moved");
        assert_eq!(*reason, MigrationReason::Stalled);
        // The 60 ms floor, from the first sample after the send: the session has been idle
        // for seconds, so it rests and samples once a second (`Config::rest_sample`).
        let seen = *at - ping;
        assert!(seen >= Duration::from_millis(60), "{seen:?}");
        assert!(seen <= Duration::from_millis(1_080), "{seen:?}");
    }

    #[test]
    fn a_write_after_a_rest_into_a_dead_path_is_judged_from_the_write() {
        let mut s = Sim::new(Duration::from_millis(50));
        // One answered exchange (a fresh session's grace ends with its first ACK), then idle
        // long enough to rest (sampling once a second).
        s.send = 40;
        s.run(1);
        s.send = 0;
        s.run(5_000);
        assert!(s.pm.resting(s.now), "an idle session rests");
        // The path dies, then the app starts a stream into it.
        s.delivers = false;
        s.send = 16 * 1024;
        let wrote = s.now - s.t0;
        s.run(1_000);
        let (at, _, reason) = s.moves.first().expect("never moved");
        assert_eq!(*reason, MigrationReason::Stalled);
        // The 125 ms threshold at 50 ms RTT from the write's first sample, not from the next
        // rest sample up to a second later.
        let seen = *at - wrote;
        assert!(seen >= Duration::from_millis(125), "{seen:?}");
        assert!(seen <= Duration::from_millis(160), "{seen:?}");
    }

    #[test]
    fn a_peer_that_stops_reading_or_a_slow_path_is_no_stall_until_the_path_dies() {
        // The peer's app stops reading: its window closes, everything sent is acknowledged,
        // and the app's bytes wait unsent for a minute.
        let mut s = Sim::new(Duration::from_millis(20));
        s.run(1_000);
        s.peer_window = 0;
        s.run(60_000);
        assert!(s.moves.is_empty(), "{:?}", s.moves);
        assert!(s.unsent > 0);
        // Then the path dies with the window still closed: the probes go unanswered.
        s.delivers = false;
        let hole = s.now - s.t0;
        s.run(2_000);
        let (at, _, reason) = s.moves.first().expect("never moved");
        assert_eq!(*reason, MigrationReason::Stalled);
        // The next probe (up to 200 ms later), then the 60 ms floor.
        assert!(*at - hole <= Duration::from_millis(300), "{:?}", *at - hole);
        // A slow, long path: 400 ms RTT with a window's worth always in flight.
        let mut s = Sim::new(Duration::from_millis(400));
        s.peer_window = 256 * 1024;
        s.run(60_000);
        assert!(s.moves.is_empty(), "{:?}", s.moves);
        assert!(s.acked > 20 << 20);
    }

    #[test]
    fn a_fresh_connection_starts_its_counters_from_zero() {
        let mut p = TcpProgress::default();
        let r = |bytes_acked, unacked| TcpReading {
            bytes_acked,
            unacked,
            rtt: Duration::from_millis(1),
            ..TcpReading::default()
        };
        let a = p.sample(r(1_000_000, 100));
        p.new_connection();
        // The new connection's first ACKs are progress, though far below the old count.
        let b = p.sample(r(5_000, 100));
        assert!(b.acks_received > a.acks_received);
        let c = p.sample(r(5_000, 100));
        assert!(
            c.ack_eliciting_sent > b.ack_eliciting_sent,
            "unanswered: a flight"
        );
        let d = p.sample(r(5_000, 100));
        assert_eq!(d, c, "the same flight is counted once");
        // The bytes carried only grow: the new connection's add to the old one's.
        assert_eq!(a.bytes, 1_000_000);
        assert_eq!(b.bytes, 1_005_000);
        assert_eq!(d.bytes, b.bytes);
    }
}
