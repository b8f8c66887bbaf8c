//! The traffic every handover measurement carries: numbered messages at a steady pace, and a
//! receiver that checks and timestamps each one.
//!
//! A message is [`MSG_LEN`] bytes: magic, sequence number, a payload derived from the sequence
//! number, and a checksum over all of it. The receiver knows what every message must contain, so
//! a flipped bit, a hole or a reordering is counted as corrupted, and both ends keep a running
//! digest of the delivered stream to compare.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes per message.
pub const MSG_LEN: usize = 64;
const MAGIC: [u8; 4] = *b"RoaM";

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The message with sequence number `seq`.
pub fn encode(seq: u64) -> [u8; MSG_LEN] {
    let mut m = [0u8; MSG_LEN];
    m[..4].copy_from_slice(&MAGIC);
    m[4..12].copy_from_slice(&seq.to_be_bytes());
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in &mut m[12..MSG_LEN - 8] {
        // xorshift: cheap bytes that differ from message to message.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sum = fnv(FNV_START, &m[..MSG_LEN - 8]);
    m[MSG_LEN - 8..].copy_from_slice(&sum.to_be_bytes());
    m
}

/// The digest of messages `0..count` delivered in order: what the receiver's digest must be.
pub fn expected_digest(count: u64) -> u64 {
    (0..count).fold(FNV_START, |h, seq| fnv(h, &encode(seq)))
}

/// What a receiver saw.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Messages delivered in order, each once.
    pub delivered: u64,
    /// Messages that were damaged, missing (a hole in the sequence) or out of order.
    pub corrupted: u64,
    /// Messages seen again after delivery (a resumed session resending); not an error.
    pub duplicates: u64,
    /// Running digest of the delivered messages, comparable with [`expected_digest`].
    pub digest: u64,
    /// Arrival time of every delivered message, in order.
    pub arrivals: Vec<Instant>,
    /// Sequence number of each entry of `arrivals`.
    pub arrival_seqs: Vec<u64>,
    /// The peer address the server saw, each time it changed: the path actually used.
    pub peers: Vec<(Instant, SocketAddr)>,
}

impl Delivery {
    /// The longest pause between consecutive deliveries that ends at or after `from`, or `None`
    /// when nothing was delivered after it.
    pub fn longest_pause_after(&self, from: Instant) -> Option<Duration> {
        let first = self.arrivals.partition_point(|t| *t < from);
        if first >= self.arrivals.len() {
            return None;
        }
        let start = first.saturating_sub(1);
        let pauses = self.arrivals[start..].windows(2).map(|w| w[1] - w[0]);
        // With no delivery before `from`, the pause runs from `from` itself.
        let lead = if first == 0 {
            self.arrivals[0] - from
        } else {
            Duration::ZERO
        };
        Some(pauses.fold(lead, Duration::max))
    }

    /// The deliveries that arrived before `to` (to measure one event of several).
    pub fn until(&self, to: Instant) -> Delivery {
        let n = self.arrivals.partition_point(|t| *t < to);
        Delivery {
            arrivals: self.arrivals[..n].to_vec(),
            arrival_seqs: self.arrival_seqs[..n].to_vec(),
            ..self.clone()
        }
    }

    /// The longest time the receiver was held up around `from`: the largest extra delay of a
    /// message delivered at or after `from`, over the least delay before it. Message `seq` was
    /// due at `paced_from + seq * interval`, so with a steady sender this is how long the stream
    /// stood still at that point, even when a stray packet got through in the middle of a stall
    /// (which splits the plain inter-arrival pause in two).
    pub fn longest_hold_after(
        &self,
        from: Instant,
        paced_from: Instant,
        interval: Duration,
    ) -> Option<Duration> {
        let delay = |i: usize| {
            let due =
                paced_from + interval * u32::try_from(self.arrival_seqs[i]).unwrap_or(u32::MAX);
            self.arrivals[i].saturating_duration_since(due)
        };
        let first = self.arrivals.partition_point(|t| *t < from);
        if first >= self.arrivals.len() {
            return None;
        }
        // The usual delay is the path's own: the least any message took before the failure (a
        // median would include the backlog of a session still ramping up).
        let normal = (0..first).map(delay).min().unwrap_or(Duration::ZERO);
        (first..self.arrivals.len())
            .map(|i| delay(i).saturating_sub(normal))
            .max()
    }
}

struct RecorderState {
    d: Delivery,
    partial: Vec<u8>,
}

/// The receiving end's bookkeeping, shared between the server task and the harness, which
/// waits on it for delivery progress (an event, not a sleep).
pub struct Recorder {
    state: Mutex<RecorderState>,
    progress: Condvar,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("delivered", &self.delivered())
            .finish()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            state: Mutex::new(RecorderState {
                d: Delivery {
                    digest: FNV_START,
                    ..Delivery::default()
                },
                partial: Vec::with_capacity(MSG_LEN),
            }),
            progress: Condvar::new(),
        }
    }
}

impl Recorder {
    /// A recorder that has seen nothing.
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    fn lock(&self) -> MutexGuard<'_, RecorderState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds bytes read from a byte stream (any split); whole messages are checked and recorded
    /// with arrival time `now`.
    pub fn feed(&self, now: Instant, mut bytes: &[u8]) {
        let mut s = self.lock();
        while !bytes.is_empty() {
            let need = MSG_LEN - s.partial.len();
            let take = need.min(bytes.len());
            s.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if s.partial.len() == MSG_LEN {
                let mut msg = [0u8; MSG_LEN];
                msg.copy_from_slice(&s.partial);
                s.partial.clear();
                Self::record(&mut s.d, now, &msg);
            }
        }
        drop(s);
        self.progress.notify_all();
    }

    /// Notes the peer address the server sees at `now`; only changes are kept.
    pub fn note_peer(&self, now: Instant, peer: SocketAddr) {
        let mut s = self.lock();
        if s.d.peers.last().map(|(_, p)| *p) != Some(peer) {
            s.d.peers.push((now, peer));
        }
    }

    /// Drops a half-received message: a resumed session starts again on a message boundary.
    pub fn reset_partial(&self) {
        self.lock().partial.clear();
    }

    fn record(d: &mut Delivery, now: Instant, msg: &[u8; MSG_LEN]) {
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&msg[4..12]);
        let seq = u64::from_be_bytes(seq_bytes);
        if msg != &encode(seq) {
            d.corrupted += 1;
            return;
        }
        match seq.cmp(&d.delivered) {
            std::cmp::Ordering::Less => d.duplicates += 1,
            std::cmp::Ordering::Equal => {
                d.delivered += 1;
                d.digest = fnv(d.digest, msg);
                d.arrivals.push(now);
                d.arrival_seqs.push(seq);
            }
            std::cmp::Ordering::Greater => {
                // A reliable stream skipped messages: count the hole, resynchronise on this one.
                d.corrupted += seq - d.delivered;
                d.delivered = seq + 1;
                d.digest = fnv(d.digest, msg);
                d.arrivals.push(now);
                d.arrival_seqs.push(seq);
            }
        }
    }

    /// Messages delivered in order so far (also the next sequence number expected).
    pub fn delivered(&self) -> u64 {
        self.lock().d.delivered
    }

    /// Waits until at least `count` messages are delivered or `deadline` passes; returns the
    /// number delivered.
    pub fn wait_for(&self, count: u64, deadline: Instant) -> u64 {
        let mut s = self.lock();
        // Bounded by the deadline; each wakeup is a delivery or the timeout.
        while s.d.delivered < count {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .progress
                .wait_timeout(s, deadline - now)
                .map(|r| r.0)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        s.d.delivered
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Delivery {
        self.lock().d.clone()
    }
}

/// Hands out sequence numbers 0, 1, ... on a thread of its own, number `n` due at `start + n *
/// interval`, until `stop` flips, the receiver goes or `limit` has passed; the thread returns
/// how many it produced. tokio's timer has millisecond resolution and messages may be due
/// every 100 µs, so numbers due while the consumer is slow are handed over together: the
/// application "wrote" them on time.
pub fn pace(
    name: &str,
    start: Instant,
    interval: Duration,
    limit: Duration,
    tx: tokio::sync::mpsc::UnboundedSender<u64>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<u64>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let step = interval.as_nanos().max(1);
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                let due = (start.elapsed().as_nanos() / step) as u64 + 1;
                while next < due {
                    if tx.send(next).is_err() {
                        return next;
                    }
                    next += 1;
                }
                // The pacing is the schedule the delivery is measured against.
                std::thread::sleep(interval);
            }
            next
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_split_stream_is_delivered_intact() {
        let r = Recorder::new();
        let mut stream = Vec::new();
        for seq in 0..100 {
            stream.extend_from_slice(&encode(seq));
        }
        let t = Instant::now();
        for chunk in stream.chunks(37) {
            r.feed(t, chunk);
        }
        let d = r.snapshot();
        assert_eq!(d.delivered, 100);
        assert_eq!(d.corrupted, 0);
        assert_eq!(d.digest, expected_digest(100));
    }

    #[test]
    fn damage_holes_and_duplicates_are_counted() {
        let r = Recorder::new();
        let t = Instant::now();
        r.feed(t, &encode(0));
        let mut bad = encode(1);
        bad[20] ^= 1;
        r.feed(t, &bad);
        r.feed(t, &encode(1));
        r.feed(t, &encode(4));
        r.feed(t, &encode(2));
        let d = r.snapshot();
        assert_eq!(d.delivered, 5);
        assert_eq!(d.corrupted, 1 + 2);
        assert_eq!(d.duplicates, 1);
        assert_ne!(d.digest, expected_digest(5));
    }

    #[test]
    fn longest_pause_spans_the_failure() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let d = Delivery {
            arrivals: vec![
                t0,
                t0 + ms(1),
                t0 + ms(2),
                t0 + ms(50),
                t0 + ms(51),
                t0 + ms(60),
            ],
            ..Delivery::default()
        };
        assert_eq!(d.longest_pause_after(t0 + ms(10)), Some(ms(48)));
        assert_eq!(d.longest_pause_after(t0 + ms(55)), Some(ms(9)));
        assert_eq!(d.longest_pause_after(t0 + ms(61)), None);
    }

    #[test]
    fn a_stray_delivery_does_not_hide_a_stall() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // One message every ms, 0.5 ms in flight; a stall from 10 ms to 800 ms in which one
        // message (seq 10) got through at 200 ms; the backlog arrives at 800 ms.
        let mut arrivals = Vec::new();
        let mut seqs = Vec::new();
        for seq in 0..10u64 {
            arrivals.push(t0 + ms(seq) + Duration::from_micros(500));
            seqs.push(seq);
        }
        arrivals.push(t0 + ms(200));
        seqs.push(10);
        for seq in 11..20u64 {
            arrivals.push(t0 + ms(800));
            seqs.push(seq);
        }
        let d = Delivery {
            arrivals,
            arrival_seqs: seqs,
            ..Delivery::default()
        };
        let from = t0 + ms(10);
        assert_eq!(d.longest_pause_after(from), Some(ms(600)));
        let hold = d.longest_hold_after(from, t0, ms(1)).unwrap();
        assert_eq!(hold, ms(789) - Duration::from_micros(500));
    }
}
