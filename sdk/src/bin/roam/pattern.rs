//! The counter pattern `roam connect --bytes` sends, and the clock of its echo.
//!
//! Byte `p` of the stream is byte `p % 8` of the little-endian `p / 8`: every offset has its
//! own 8-byte word, so a lost, repeated or reordered chunk never matches by chance.

use std::time::{Duration, Instant};

/// Byte `p` of the pattern.
pub fn byte_at(p: u64) -> u8 {
    (p / 8).to_le_bytes()[(p % 8) as usize]
}

/// Fills `buf` with the pattern from offset `from`.
pub fn fill(buf: &mut [u8], from: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte_at(from + i as u64);
    }
}

/// The first offset in `buf` (read at stream offset `from`) where it differs from the pattern.
pub fn first_mismatch(buf: &[u8], from: u64) -> Option<u64> {
    buf.iter()
        .enumerate()
        .find(|(i, b)| **b != byte_at(from + *i as u64))
        .map(|(i, _)| from + i as u64)
}

/// What was sent and echoed, and the longest pause in the echo while sent data was waiting
/// for it: the pause the app felt, whichever direction stalled.
#[derive(Debug, Default)]
pub struct EchoClock {
    /// Bytes written into the session.
    pub sent: u64,
    /// Bytes that came back.
    pub echoed: u64,
    /// Since when the echo has been awaited without progress (`None`: nothing outstanding).
    waiting_since: Option<Instant>,
    /// The longest such wait so far.
    pub max_gap: Duration,
}

impl EchoClock {
    /// `n` more bytes were written at `now`.
    pub fn wrote(&mut self, n: u64, now: Instant) {
        self.sent += n;
        if self.waiting_since.is_none() && self.echoed < self.sent {
            self.waiting_since = Some(now);
        }
    }

    /// `n` more bytes came back at `now`.
    pub fn echoed(&mut self, n: u64, now: Instant) {
        self.echoed += n;
        self.close_wait(now);
        self.waiting_since = (self.echoed < self.sent).then_some(now);
    }

    /// The transfer is over at `now`: an echo still awaited counts up to now.
    pub fn finish(&mut self, now: Instant) {
        self.close_wait(now);
        self.waiting_since = None;
    }

    fn close_wait(&mut self, now: Instant) {
        if let Some(since) = self.waiting_since {
            self.max_gap = self.max_gap.max(now.saturating_duration_since(since));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offset_has_its_own_word() {
        let mut buf = [0u8; 24];
        fill(&mut buf, 8);
        assert_eq!(&buf[..8], &1u64.to_le_bytes());
        assert_eq!(&buf[8..16], &2u64.to_le_bytes());
        assert_eq!(first_mismatch(&buf, 8), None);
        // The same bytes read at another offset do not match.
        assert_eq!(first_mismatch(&buf, 16), Some(16));
        buf[13] ^= 1;
        assert_eq!(first_mismatch(&buf, 8), Some(21));
    }

    #[test]
    fn the_gap_is_the_longest_wait_with_data_outstanding() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = EchoClock::default();
        c.wrote(100, ms(0));
        c.echoed(40, ms(5));
        c.echoed(60, ms(10));
        // Nothing outstanding from 10 to 100 ms: idle time is no gap.
        c.wrote(100, ms(100));
        c.echoed(100, ms(190));
        c.wrote(10, ms(200));
        c.finish(ms(230));
        assert_eq!(c.max_gap, Duration::from_millis(90));
        assert_eq!((c.sent, c.echoed), (210, 200));
    }
}
