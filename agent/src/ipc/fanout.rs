//! Writing one decision round's frames to many clients on two threads.
//!
//! A frame costs roamd one `send(2)` per subscriber, and on a 2-core handset that is ~1.8 us of
//! kernel time each (skb allocation, queueing, waking the reader): 1,000 subscribers are ~1.8 ms
//! of writing, so the subscriber served last learnt of a link's failure that much after the
//! first, beyond the 2 ms aim whatever the scheduler did. [`FanOut`] lets a second thread take
//! frames from the same list while the loop's thread writes: each takes the next unwritten
//! frame, one at a time and in the list's order (the subscriber that connected first is still
//! told first), so a helper that gets no CPU costs the loop nothing but one wake-up, and one
//! that does halves the writing. The loop's thread returns once every frame is written, so
//! frames to one client never overtake each other across rounds.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::server::{Outbox, SendError};

/// Below this many frames a round is written by the loop alone: waking a thread costs more
/// than it saves.
pub const PARALLEL_MIN: usize = 64;

/// A frame and the client it goes to.
pub type Job = (Outbox, Arc<[u8]>);

/// One round: the frames, the next one to take, how many are written.
struct Round {
    jobs: Vec<Job>,
    next: AtomicUsize,
    done: AtomicUsize,
    failed: Mutex<Vec<(usize, SendError)>>,
    /// The loop's thread, woken when the helper wrote the last frame.
    waiter: std::thread::Thread,
}

impl Round {
    /// Takes and writes frames until none is left; returns how many this thread wrote.
    fn work(&self) -> usize {
        let mut wrote = 0;
        let mut failed = Vec::new();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some((out, frame)) = self.jobs.get(i) else {
                break;
            };
            if let Err(e) = out.send(frame.clone()) {
                failed.push((i, e));
            }
            wrote += 1;
        }
        if !failed.is_empty() {
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(failed);
        }
        wrote
    }

    /// Counts `wrote` frames as written; true when they were the last.
    fn finish(&self, wrote: usize) -> bool {
        self.done.fetch_add(wrote, Ordering::AcqRel) + wrote == self.jobs.len()
    }
}

/// What the helper thread waits on.
#[derive(Default)]
struct Slot {
    round: Mutex<Option<Arc<Round>>>,
    wake: Condvar,
    stop: AtomicBool,
}

/// Writes a round's frames with a helper thread, started at the first round of at least
/// [`PARALLEL_MIN`] frames (an agent nobody subscribes to never starts it). The helper sleeps
/// on a condition variable between rounds: no timer, no wake-up while idle.
#[derive(Default)]
pub struct FanOut {
    helper: Option<(Arc<Slot>, std::thread::JoinHandle<()>)>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("helper", &self.helper.is_some())
            .finish()
    }
}

impl FanOut {
    /// Sends each frame to its outbox ([`Outbox::send`]: written at once or queued) and returns
    /// the failures with their index in `jobs`, in order. Frames are written in `jobs`' order
    /// give or take the one each thread has in hand; an outbox must appear at most once (two
    /// frames to one client could cross). Returns once every frame is written.
    pub fn send_all(&mut self, jobs: Vec<Job>) -> Vec<(usize, SendError)> {
        let parallel = jobs.len() >= PARALLEL_MIN && self.start();
        let round = Arc::new(Round {
            jobs,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            failed: Mutex::new(Vec::new()),
            waiter: std::thread::current(),
        });
        if parallel && let Some((slot, _)) = &self.helper {
            *slot.round.lock().unwrap_or_else(|e| e.into_inner()) = Some(round.clone());
            slot.wake.notify_one();
        }
        let wrote = round.work();
        if !round.finish(wrote) {
            // The helper has the last frames in hand (at most one each turn): wait for it,
            // briefly spinning (a frame is microseconds), then asleep until it says.
            let mut spins = 0u32;
            while round.done.load(Ordering::Acquire) < round.jobs.len() {
                if spins < 200 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::park_timeout(Duration::from_millis(1));
                }
            }
        }
        if let Some((slot, _)) = &self.helper {
            // A round the helper never picked up must not be written again later.
            slot.round.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        let mut failed =
            std::mem::take(&mut *round.failed.lock().unwrap_or_else(|e| e.into_inner()));
        failed.sort_unstable_by_key(|(i, _)| *i);
        failed
    }

    /// Starts the helper thread if it is not running; false if it cannot be started (the loop
    /// then writes alone).
    fn start(&mut self) -> bool {
        if self.helper.is_some() {
            return true;
        }
        let slot = Arc::new(Slot::default());
        let theirs = slot.clone();
        let span = tracing::Span::current();
        match std::thread::Builder::new()
            .name("roamd-fanout".into())
            // It runs `Outbox::send` and nothing else: a small stack.
            .stack_size(64 * 1024)
            .spawn(move || {
                let _span = span.entered();
                helper(&theirs);
            }) {
            Ok(thread) => {
                self.helper = Some((slot, thread));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "no fan-out thread; the loop writes every frame itself");
                false
            }
        }
    }
}

/// The helper: waits for a round, writes frames from it with the loop's thread, tells the loop
/// when it wrote the last one.
fn helper(slot: &Slot) {
    loop {
        let round = {
            let mut r = slot.round.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if slot.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(round) = r.take() {
                    break round;
                }
                r = slot.wake.wait(r).unwrap_or_else(|e| e.into_inner());
            }
        };
        let wrote = round.work();
        if round.finish(wrote) {
            round.waiter.unpark();
        }
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        if let Some((slot, thread)) = self.helper.take() {
            slot.stop.store(true, Ordering::Relaxed);
            // Under the lock, so the helper is either before its check or asleep.
            drop(slot.round.lock().unwrap_or_else(|e| e.into_inner()));
            slot.wake.notify_one();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Every frame of a round reaches its client, whole, on however many threads; a client
    /// that is gone is reported with its index.
    #[tokio::test(flavor = "current_thread")]
    async fn every_frame_reaches_its_client_and_failures_come_back_by_index() {
        let mut peers = Vec::new();
        let mut jobs = Vec::new();
        for i in 0..(PARALLEL_MIN * 3) as u32 {
            let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
            a.set_nonblocking(true).expect("nonblocking");
            let a = tokio::net::UnixStream::from_std(a).expect("tokio stream");
            let out = Outbox::new(Arc::new(a));
            let frame: Arc<[u8]> = i.to_be_bytes().repeat(50).into();
            jobs.push((out, frame));
            peers.push(b);
        }
        let gone = 70;
        jobs[gone].0.close();
        let mut fan = FanOut::default();
        for round in 0..3 {
            let failed = fan.send_all(jobs.clone());
            assert_eq!(
                failed.iter().map(|(i, e)| (*i, *e)).collect::<Vec<_>>(),
                vec![(gone, SendError::Closed)],
                "round {round}"
            );
        }
        assert!(fan.helper.is_some(), "the helper never started");
        for (i, peer) in peers.iter_mut().enumerate() {
            if i == gone {
                continue;
            }
            let mut got = vec![0u8; 200 * 3];
            peer.read_exact(&mut got).expect("three frames");
            assert_eq!(got, (i as u32).to_be_bytes().repeat(150), "client {i}");
        }
        drop(fan);
    }

    /// A small round never starts the helper.
    #[tokio::test(flavor = "current_thread")]
    async fn a_small_round_is_written_by_the_caller_alone() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).expect("nonblocking");
        let out = Outbox::new(Arc::new(
            tokio::net::UnixStream::from_std(a).expect("tokio"),
        ));
        let mut fan = FanOut::default();
        assert!(
            fan.send_all(vec![(out, Arc::from(&b"hello"[..]))])
                .is_empty()
        );
        assert!(fan.helper.is_none());
        let mut got = [0u8; 5];
        b.read_exact(&mut got).expect("frame");
        assert_eq!(&got, b"hello");
    }
}
