//! The resume protocol's stream state, sans I/O: app bytes and received frames go in, frames
//! to send and app bytes to read come out. It never touches a socket or a clock; the driver
//! feeds it one connection at a time and, after a reconnection, tells it where the peer is
//! ([`Core::resume`]).
//!
//! Offsets count stream bytes from 0 in each direction. The sender keeps every byte until the
//! peer acknowledges it, so after a reconnection it sends again exactly from the peer's
//! `received` offset: nothing lost, nothing twice. The receiver accepts only the next byte it
//! expects (a frame that overlaps what it has is trimmed; a gap is a protocol error) and
//! advertises a window so its buffer stays bounded.

use std::collections::VecDeque;

use super::wire::Frame;

/// Bytes per DATA frame.
pub(crate) const CHUNK: usize = 16 * 1024;
/// The window each end starts with, before the peer's first ACK.
pub(crate) const INITIAL_WINDOW: u64 = 1 << 20;

/// Why the peer's frames cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CoreError {
    /// DATA beyond the next expected byte.
    #[error("data at offset {got} leaves a gap (expected {expected})")]
    Gap { got: u64, expected: u64 },
    /// DATA past the window this end advertised.
    #[error("data up to {end} is past the advertised window {window}")]
    Window { end: u64, window: u64 },
    /// An acknowledgement of bytes never sent, or one going backwards.
    #[error("acknowledgement of {received} is outside [{acked}, {written}]")]
    BadAck {
        received: u64,
        acked: u64,
        written: u64,
    },
    /// DATA after the peer's FIN, or two FINs that disagree.
    #[error("data or FIN past the end of the stream at {fin}")]
    PastFin { fin: u64 },
    /// A handshake frame in the middle of the stream.
    #[error("unexpected {0} frame in the stream")]
    Unexpected(&'static str),
}

/// One end's stream state.
#[derive(Debug)]
pub(crate) struct Core {
    // Sending.
    /// Bytes from `acked` to `written`.
    unacked: VecDeque<u8>,
    acked: u64,
    /// Framed on the current connection; `acked <= sent <= written`.
    sent: u64,
    written: u64,
    peer_window: u64,
    send_capacity: usize,
    shutdown: bool,
    fin_sent: bool,
    // Receiving.
    readable: VecDeque<u8>,
    received: u64,
    consumed: u64,
    window: u64,
    advertised: u64,
    peer_fin: Option<u64>,
    ack_due: bool,
    ping_due: bool,
    close_sent: bool,
    /// The connection can carry stream frames (false while detached).
    attached: bool,
}

impl Core {
    /// A stream with `send_capacity` bytes of send buffer and a receive window of `window`.
    pub(crate) fn new(send_capacity: usize, window: u64) -> Core {
        Core {
            unacked: VecDeque::new(),
            acked: 0,
            sent: 0,
            written: 0,
            peer_window: INITIAL_WINDOW,
            send_capacity,
            shutdown: false,
            fin_sent: false,
            readable: VecDeque::new(),
            received: 0,
            consumed: 0,
            window,
            advertised: INITIAL_WINDOW.min(window),
            peer_fin: None,
            ack_due: false,
            ping_due: false,
            close_sent: false,
            attached: true,
        }
    }

    /// Takes app bytes; returns how many fit (0: the send buffer is full, wait for ACKs).
    pub(crate) fn write(&mut self, data: &[u8]) -> usize {
        let room = self.send_capacity.saturating_sub(self.unacked.len());
        let n = room.min(data.len());
        self.unacked.extend(&data[..n]);
        self.written += n as u64;
        n
    }

    /// The app will write no more.
    pub(crate) fn shutdown(&mut self) {
        self.shutdown = true;
    }

    /// Gives the app what arrived in order; 0 with [`Core::is_finished_reading`] is the end.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.readable.len());
        for (d, s) in buf.iter_mut().zip(self.readable.drain(..n)) {
            *d = s;
        }
        self.consumed += n as u64;
        // Open the window again once a quarter of it was read.
        if self.consumed + self.window >= self.advertised + self.window / 4 {
            self.ack_due = true;
        }
        n
    }

    /// The peer's stream ended and every byte was read.
    pub(crate) fn is_finished_reading(&self) -> bool {
        self.peer_fin == Some(self.consumed)
    }

    /// Everything written was acknowledged and the FIN went out.
    fn is_send_done(&self) -> bool {
        self.shutdown && self.fin_sent && self.acked == self.written
    }

    /// Bytes that may be written now without waiting.
    #[cfg(test)]
    fn send_room(&self) -> usize {
        self.send_capacity.saturating_sub(self.unacked.len())
    }

    /// Offsets for the resume handshake: what this end has received.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Bytes sent but not acknowledged (in flight or lost with a connection).
    #[cfg(test)]
    fn in_flight(&self) -> u64 {
        self.sent - self.acked
    }

    /// Asks the peer for an ACK (keep-alive).
    pub(crate) fn ping(&mut self) {
        self.ping_due = true;
    }

    /// The connection is gone: nothing goes out until [`Core::resume`].
    pub(crate) fn detach(&mut self) {
        self.attached = false;
    }

    /// On a fresh connection: the peer has received everything below `peer_received`. Sending
    /// starts again from there; returns how many bytes go out again.
    pub(crate) fn resume(&mut self, peer_received: u64) -> Result<u64, CoreError> {
        self.on_ack(peer_received, None)?;
        let resent = self.sent - self.acked;
        self.sent = self.acked;
        self.fin_sent = false;
        self.attached = true;
        self.ack_due = true;
        Ok(resent)
    }

    fn on_ack(&mut self, received: u64, window: Option<u64>) -> Result<(), CoreError> {
        if received < self.acked || received > self.written {
            return Err(CoreError::BadAck {
                received,
                acked: self.acked,
                written: self.written,
            });
        }
        let n = (received - self.acked) as usize;
        self.unacked.drain(..n);
        self.acked = received;
        self.sent = self.sent.max(received);
        if let Some(w) = window {
            self.peer_window = self.peer_window.max(w);
        }
        Ok(())
    }

    /// Takes a frame from the peer.
    pub(crate) fn handle(&mut self, f: Frame) -> Result<(), CoreError> {
        match f {
            Frame::Data { offset, bytes } => {
                if offset > self.received {
                    return Err(CoreError::Gap {
                        got: offset,
                        expected: self.received,
                    });
                }
                // No overflow: `offset` is at most what was received, far below u64::MAX.
                let end = offset + bytes.len() as u64;
                if end > self.consumed + self.window {
                    return Err(CoreError::Window {
                        end,
                        window: self.consumed + self.window,
                    });
                }
                if let Some(fin) = self.peer_fin
                    && end > fin
                {
                    return Err(CoreError::PastFin { fin });
                }
                if end > self.received {
                    let skip = (self.received - offset) as usize;
                    self.readable.extend(&bytes[skip..]);
                    self.received = end;
                }
                self.ack_due = true;
            }
            Frame::Ack { received, window } => {
                self.on_ack(received, Some(window))?;
            }
            Frame::Ping => self.ack_due = true,
            Frame::Fin { offset } => {
                if offset < self.received || self.peer_fin.is_some_and(|f| f != offset) {
                    return Err(CoreError::PastFin { fin: offset });
                }
                self.peer_fin = Some(offset);
                self.ack_due = true;
            }
            Frame::Close => {}
            Frame::New { .. } => return Err(CoreError::Unexpected("NEW")),
            Frame::Welcome { .. } => return Err(CoreError::Unexpected("WELCOME")),
            Frame::Resume { .. } => return Err(CoreError::Unexpected("RESUME")),
            Frame::Resumed { .. } => return Err(CoreError::Unexpected("RESUMED")),
            Frame::Refused { .. } => return Err(CoreError::Unexpected("REFUSED")),
        }
        Ok(())
    }

    /// The next frame to send on the current connection, if any.
    pub(crate) fn poll_transmit(&mut self) -> Option<Frame> {
        if !self.attached {
            return None;
        }
        if self.ack_due {
            self.ack_due = false;
            self.advertised = self.consumed + self.window;
            return Some(Frame::Ack {
                received: self.received,
                window: self.advertised,
            });
        }
        let limit = self.written.min(self.peer_window);
        if self.sent < limit {
            let start = (self.sent - self.acked) as usize;
            let n = ((limit - self.sent) as usize).min(CHUNK);
            let bytes: Vec<u8> = self.unacked.range(start..start + n).copied().collect();
            let f = Frame::Data {
                offset: self.sent,
                bytes,
            };
            self.sent += n as u64;
            return Some(f);
        }
        if self.shutdown && !self.fin_sent && self.sent == self.written {
            self.fin_sent = true;
            return Some(Frame::Fin {
                offset: self.written,
            });
        }
        if self.ping_due {
            self.ping_due = false;
            return Some(Frame::Ping);
        }
        // Both directions ended and were acknowledged: the session is over; CLOSE lets the
        // listener free it at once instead of after its grace period.
        if !self.close_sent && self.peer_fin == Some(self.received) && self.is_send_done() {
            self.close_sent = true;
            return Some(Frame::Close);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer (sdk/fuzz/regressions/resume_frames): DATA whose offset plus
    /// length passes u64::MAX was added up before the gap check, a panic in builds with
    /// overflow checks. It is a gap like any other.
    #[test]
    fn data_at_the_end_of_the_offset_space_is_a_gap_not_an_overflow() {
        let mut c = Core::new(1024, 1024);
        let f = Frame::Data {
            offset: u64::MAX - 3,
            bytes: vec![0; 10],
        };
        assert_eq!(
            c.handle(f),
            Err(CoreError::Gap {
                got: u64::MAX - 3,
                expected: 0
            })
        );
    }

    /// Moves every frame `from` has for `to`, dropping them instead when `lose` is set.
    fn pump(from: &mut Core, to: &mut Core, lose: bool) -> usize {
        let mut n = 0;
        while let Some(f) = from.poll_transmit() {
            n += 1;
            if !lose {
                to.handle(f).unwrap();
            }
        }
        n
    }

    fn drain(c: &mut Core) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = c.read(&mut buf);
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_connection_lost_with_data_in_flight_resumes_without_loss_or_duplication() {
        let mut a = Core::new(1 << 20, 1 << 20);
        let mut b = Core::new(1 << 20, 1 << 20);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(a.write(&data[..100_000]), 100_000);
        pump(&mut a, &mut b, false);
        pump(&mut b, &mut a, false);
        // The next 100 kB go out and are lost with the connection; so are b's ACKs.
        assert_eq!(a.write(&data[100_000..200_000]), 100_000);
        pump(&mut a, &mut b, true);
        assert_eq!(a.in_flight(), 100_000);
        a.detach();
        b.detach();
        assert_eq!(a.write(&data[200_000..]), 100_000);
        assert_eq!(a.poll_transmit(), None, "nothing goes out while detached");
        // Fresh connection: each end learns what the other received.
        let resent = a.resume(b.received()).unwrap();
        assert_eq!(resent, 100_000);
        b.resume(a.received()).unwrap();
        a.shutdown();
        for _ in 0..100 {
            if pump(&mut a, &mut b, false) + pump(&mut b, &mut a, false) == 0 {
                break;
            }
        }
        assert_eq!(drain(&mut b), data);
        assert!(b.is_finished_reading());
        assert!(a.is_send_done());
    }

    #[test]
    fn a_repeated_prefix_is_trimmed_and_a_gap_is_an_error() {
        let mut b = Core::new(1 << 20, 1 << 20);
        b.handle(Frame::Data {
            offset: 0,
            bytes: b"hello".to_vec(),
        })
        .unwrap();
        b.handle(Frame::Data {
            offset: 3,
            bytes: b"lo world".to_vec(),
        })
        .unwrap();
        assert_eq!(drain(&mut b), b"hello world");
        assert_eq!(
            b.handle(Frame::Data {
                offset: 20,
                bytes: vec![1],
            }),
            Err(CoreError::Gap {
                got: 20,
                expected: 11
            })
        );
    }

    #[test]
    fn the_window_bounds_what_is_sent_and_what_is_accepted() {
        let mut a = Core::new(4 << 20, 1 << 20);
        let mut b = Core::new(4 << 20, 1 << 20);
        assert_eq!(a.write(&vec![0u8; 3 << 20]), 3 << 20);
        pump(&mut a, &mut b, false);
        // Only the initial window went out, and b holds it unread.
        assert_eq!(b.received(), INITIAL_WINDOW);
        pump(&mut b, &mut a, false);
        assert_eq!(pump(&mut a, &mut b, false), 0, "no room until b reads");
        let mut buf = vec![0u8; 512 * 1024];
        b.read(&mut buf);
        pump(&mut b, &mut a, false);
        pump(&mut a, &mut b, false);
        assert_eq!(b.received(), INITIAL_WINDOW + 512 * 1024);
        // A peer ignoring the window is refused.
        let mut c = Core::new(1024, 1024);
        assert!(matches!(
            c.handle(Frame::Data {
                offset: 0,
                bytes: vec![0; 2048]
            }),
            Err(CoreError::Window { .. })
        ));
    }

    #[test]
    fn acknowledgements_of_unsent_bytes_and_handshake_frames_are_refused() {
        let mut a = Core::new(1024, 1024);
        a.write(b"abc");
        assert!(matches!(
            a.handle(Frame::Ack {
                received: 10,
                window: 0
            }),
            Err(CoreError::BadAck { .. })
        ));
        assert!(a.resume(4).is_err(), "a peer claiming unsent bytes");
        assert_eq!(
            a.handle(Frame::New { app: String::new() }),
            Err(CoreError::Unexpected("NEW"))
        );
    }

    #[test]
    fn the_send_buffer_is_bounded_until_acknowledged() {
        let mut a = Core::new(10, 1024);
        let mut b = Core::new(10, 1024);
        assert_eq!(a.write(&[1; 25]), 10);
        assert_eq!(a.send_room(), 0);
        pump(&mut a, &mut b, false);
        assert_eq!(
            a.write(&[1; 5]),
            0,
            "sent but not acknowledged still counts"
        );
        pump(&mut b, &mut a, false);
        assert_eq!(a.send_room(), 10);
    }
}
