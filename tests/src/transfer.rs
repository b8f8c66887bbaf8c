//! A bulk transfer's content and its check: the sender writes a counter pattern (byte `p` of the
//! stream is byte `p % 8` of the little-endian `p / 8`), the receiver checks every byte against
//! it, in order, and times the stream from its first byte to its last; and the CPU time of the
//! thread doing it.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

/// How many bytes [`Pattern::next_chunk`] hands out at once.
pub const CHUNK: usize = 128 * 1024;

/// The stream's content: byte `p` is byte `p % 8` of the little-endian `p / 8`.
#[derive(Debug, Default)]
pub struct Pattern {
    offset: u64,
    buf: Vec<u8>,
}

impl Pattern {
    /// The next [`CHUNK`] bytes (the offset stays a multiple of 8).
    pub fn next_chunk(&mut self) -> &[u8] {
        self.buf.resize(CHUNK, 0);
        let first = self.offset / 8;
        for (i, w) in self.buf.chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&(first + i as u64).to_le_bytes());
        }
        self.offset += CHUNK as u64;
        &self.buf
    }

    /// Bytes handed out so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// Checks received bytes against [`Pattern`], in order, and when they arrived.
#[derive(Debug, Default)]
pub struct PatternCheck {
    offset: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl PatternCheck {
    /// Checks the next bytes of the stream; an error names the first byte that differs.
    pub fn feed(&mut self, mut b: &[u8]) -> Result<()> {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        // Bytes up to the next multiple of 8, then whole words, then the rest.
        while !b.is_empty() && !self.offset.is_multiple_of(8) {
            self.byte(b[0])?;
            b = &b[1..];
        }
        let words = b.chunks_exact(8);
        let tail = words.remainder();
        let first = self.offset / 8;
        for (i, w) in words.enumerate() {
            let want = first + i as u64;
            if u64::from_le_bytes(w.try_into().expect("8 bytes")) != want {
                bail!("byte {} of the stream differs from what was sent", want * 8);
            }
        }
        self.offset += (b.len() - tail.len()) as u64;
        for &x in tail {
            self.byte(x)?;
        }
        Ok(())
    }

    fn byte(&mut self, x: u8) -> Result<()> {
        let want = ((self.offset / 8) >> (8 * (self.offset % 8))) as u8;
        ensure!(
            x == want,
            "byte {} of the stream differs from what was sent",
            self.offset
        );
        self.offset += 1;
        Ok(())
    }

    /// Bytes checked so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// From the first byte to the last.
    pub fn elapsed(&self) -> Result<Duration> {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b > a => Ok(b - a),
            _ => bail!("nothing arrived, or all of it at once"),
        }
    }
}

/// CPU time (user and system) the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given; zeroed is a valid rusage
    // should it fail.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_accepts_the_pattern_in_any_split_and_names_a_damaged_byte() {
        let mut p = Pattern::default();
        let mut stream = p.next_chunk().to_vec();
        stream.extend_from_slice(p.next_chunk());
        let mut c = PatternCheck::default();
        for piece in [
            &stream[..3],
            &stream[3..11],
            &stream[11..CHUNK + 5],
            &stream[CHUNK + 5..],
        ] {
            c.feed(piece).unwrap();
        }
        assert_eq!(c.offset(), p.offset());
        stream[1000] ^= 1;
        let mut c = PatternCheck::default();
        let e = c.feed(&stream).unwrap_err().to_string();
        assert!(e.contains("byte 1000 "), "{e}");
        let mut c = PatternCheck::default();
        c.feed(&stream[..997]).unwrap();
        let e = c.feed(&stream[997..1003]).unwrap_err().to_string();
        assert!(e.contains("byte 1000 "), "{e}");
    }
}
