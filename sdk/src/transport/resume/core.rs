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
/// Bytes of data a client sends right behind its RESUME, before the listener's answer
/// ([`Core::early_flight`]): with the client's TLS Finished and RESUME, what TCP's initial
/// congestion window (10 segments of about 1,448 bytes) carries in the first round trip. More
/// would wait a round trip for TCP's ACKs anyway.
pub(crate) const EARLY_FLIGHT: usize = 10 * 1024;

/// A client's early flight, until the listener's RESUMED.
#[derive(Debug, Clone, Copy)]
struct Early {
    /// Where its data began.
    from: u64,
    /// How many bytes the old connection had framed past `from`.
    rewound: u64,
    /// Where it must stop.
    end: u64,
}

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
    /// Client, until the listener's RESUMED: the early flight.
    early: Option<Early>,
    /// Listener, after a resumption: DATA past the next expected byte is a client's early
    /// flight that the client will send again, dropped instead of a protocol error, until
    /// DATA arrives in order.
    drop_gaps: bool,
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
            early: None,
            drop_gaps: false,
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

    /// The connection is gone: nothing goes out until [`Core::resume`]. An early flight that
    /// got no answer counts as never sent.
    pub(crate) fn detach(&mut self) {
        self.attached = false;
        if let Some(e) = self.early.take() {
            self.sent = e.from;
        }
    }

    /// Client, on a fresh connection, right behind its RESUME: DATA frames for at most
    /// `limit` bytes from where the old connection stopped, sent before the listener says what
    /// it received, starting `rewind` bytes before the first byte the old connection never
    /// framed: bytes framed but still in the old socket, never sent (the driver counts them
    /// from `tcpi_notsent_bytes`), never arrived. On a link that went down at the device what the
    /// socket did send usually arrived, so the flight continues the listener's stream and
    /// reaches its app a round trip before RESUMED could bring the client here. When the
    /// listener lacks bytes before it, it drops the flight ([`Core::resume_listener`]) and
    /// [`Core::resume`] sends it again. Until [`Core::resume`] nothing else goes out but what
    /// the app writes meanwhile, within the same `limit` ([`Core::early_more`]).
    pub(crate) fn early_flight(&mut self, limit: usize, rewind: u64) -> Vec<Frame> {
        let from = self.sent.saturating_sub(rewind).max(self.acked);
        let rewound = self.sent - from;
        self.sent = from;
        self.early = Some(Early {
            from,
            rewound,
            end: from + limit as u64,
        });
        self.early_more()
    }

    /// More of the early flight: what the app wrote since, within the flight's limit.
    pub(crate) fn early_more(&mut self) -> Vec<Frame> {
        let Some(e) = &self.early else {
            return Vec::new();
        };
        let end = self.written.min(self.peer_window).min(e.end);
        let mut out = Vec::new();
        while self.sent < end {
            let start = (self.sent - self.acked) as usize;
            let n = ((end - self.sent) as usize).min(CHUNK);
            let bytes: Vec<u8> = self.unacked.range(start..start + n).copied().collect();
            out.push(Frame::Data {
                offset: self.sent,
                bytes,
            });
            self.sent += n as u64;
        }
        out
    }

    /// On a fresh connection: the peer has received everything below `peer_received`. Sending
    /// starts again from there; returns how many bytes go out again. A client's early flight
    /// that began at or below `peer_received` continued the listener's stream and stands;
    /// one that began past it was dropped and goes out again.
    pub(crate) fn resume(&mut self, peer_received: u64) -> Result<u64, CoreError> {
        self.on_ack(peer_received, None)?;
        let resent = match self.early.take() {
            Some(e) if e.from <= peer_received => e.rewound,
            _ => {
                let resent = self.sent - self.acked;
                self.sent = self.acked;
                resent
            }
        };
        // A FIN sent on the old connection may have been lost with it (the same FIN twice is
        // harmless).
        self.fin_sent = false;
        self.attached = true;
        self.ack_due = true;
        Ok(resent)
    }

    /// [`Core::resume`] on the listener, whose client may have sent an early flight behind
    /// its RESUME ([`Core::early_flight`]): DATA past the next expected byte is dropped, not
    /// a protocol error, until DATA arrives in order (the client sends the gap and what it
    /// dropped again once it has RESUMED).
    pub(crate) fn resume_listener(&mut self, peer_received: u64) -> Result<u64, CoreError> {
        let resent = self.resume(peer_received)?;
        self.drop_gaps = true;
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
                if offset > self.received && self.drop_gaps {
                    // The client's early flight past a gap: it sends these bytes again.
                    return Ok(());
                }
                self.drop_gaps = false;
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
        self.poll_transmit_within(CHUNK)
    }

    /// [`Core::poll_transmit`] with DATA frames of at most `chunk` bytes.
    pub(crate) fn poll_transmit_within(&mut self, chunk: usize) -> Option<Frame> {
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
            let n = ((limit - self.sent) as usize).min(chunk.max(1));
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

    /// a sends `data[..sent]`, of which b receives `data[..arrived]` and a hears no ACK; both
    /// detach; a writes the rest. Returns (a, b).
    fn broken_after(data: &[u8], sent: usize, arrived: usize) -> (Core, Core) {
        let mut a = Core::new(1 << 20, 1 << 20);
        let mut b = Core::new(1 << 20, 1 << 20);
        assert_eq!(a.write(&data[..sent]), sent);
        while let Some(f) = a.poll_transmit() {
            if let Frame::Data { offset, bytes } = f {
                let keep = (arrived as u64)
                    .saturating_sub(offset)
                    .min(bytes.len() as u64);
                if keep > 0 {
                    b.handle(Frame::Data {
                        offset,
                        bytes: bytes[..keep as usize].to_vec(),
                    })
                    .unwrap();
                }
            }
        }
        while b.poll_transmit().is_some() {}
        a.detach();
        b.detach();
        assert_eq!(a.write(&data[sent..]), data.len() - sent);
        (a, b)
    }

    /// RESUME with its early flight, RESUMED, then both ends until quiet; b's stream and what
    /// a said went out again.
    fn resume_early(a: &mut Core, b: &mut Core) -> (Vec<u8>, u64) {
        let flight = a.early_flight(EARLY_FLIGHT, 0);
        assert!(!flight.is_empty());
        assert_eq!(a.poll_transmit(), None, "nothing else before RESUMED");
        b.resume_listener(a.received()).unwrap();
        let told = b.received();
        for f in flight {
            b.handle(f).unwrap();
        }
        let resent = a.resume(told).unwrap();
        for _ in 0..100 {
            if pump(a, b, false) + pump(b, a, false) == 0 {
                break;
            }
        }
        (drain(b), resent)
    }

    #[test]
    fn an_early_flight_continuing_the_listeners_stream_stands() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        // Everything the old connection carried arrived (a link that went down).
        let (mut a, mut b) = broken_after(&data, 60_000, 60_000);
        let (got, resent) = resume_early(&mut a, &mut b);
        assert_eq!(got, data);
        assert_eq!(resent, 0, "nothing went out twice");
    }

    #[test]
    fn an_early_flight_past_a_gap_is_dropped_and_sent_again() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        // The old connection's last 20 kB were lost (a blackhole).
        let (mut a, mut b) = broken_after(&data, 60_000, 40_000);
        let (got, resent) = resume_early(&mut a, &mut b);
        assert_eq!(got, data, "nothing lost, nothing twice");
        assert_eq!(resent, 20_000 + EARLY_FLIGHT as u64);
        // Dropping gaps ended with the first DATA in order: a gap now is a violation.
        assert!(matches!(
            b.handle(Frame::Data {
                offset: 200_000,
                bytes: vec![1],
            }),
            Err(CoreError::Gap { .. })
        ));
    }

    #[test]
    fn an_early_flight_starts_before_what_the_old_socket_never_sent() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        // The old connection's last 20 kB never left its socket (the link went down under
        // it); its kernel counted 20,100 bytes of TLS records not sent.
        let (mut a, mut b) = broken_after(&data, 60_000, 40_000);
        let flight = a.early_flight(EARLY_FLIGHT, 20_100);
        let from = 60_000 - 20_100;
        assert!(matches!(flight[0], Frame::Data { offset, .. } if offset == from));
        b.resume_listener(a.received()).unwrap();
        let told = b.received();
        for f in flight {
            b.handle(f).unwrap();
        }
        assert_eq!(
            b.received(),
            39_900 + EARLY_FLIGHT as u64,
            "the flight stood"
        );
        assert_eq!(
            a.resume(told).unwrap(),
            20_100,
            "the rewound bytes went out again"
        );
        for _ in 0..100 {
            if pump(&mut a, &mut b, false) + pump(&mut b, &mut a, false) == 0 {
                break;
            }
        }
        assert_eq!(drain(&mut b), data);
    }

    #[test]
    fn what_the_app_writes_before_resumed_joins_the_flight_within_its_limit() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        let (mut a, mut b) = broken_after(&data[..60_000], 60_000, 60_000);
        let flight = a.early_flight(EARLY_FLIGHT, 0);
        assert!(flight.is_empty(), "nothing was waiting");
        // The app writes on while RESUME travels: it joins the flight up to the limit.
        a.write(&data[60_000..]);
        let more = a.early_more();
        let carried: usize = more
            .iter()
            .map(|f| match f {
                Frame::Data { bytes, .. } => bytes.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(carried, EARLY_FLIGHT);
        assert!(a.early_more().is_empty(), "the limit holds");
        b.resume_listener(a.received()).unwrap();
        let told = b.received();
        for f in more {
            b.handle(f).unwrap();
        }
        assert_eq!(a.resume(told).unwrap(), 0);
        for _ in 0..100 {
            if pump(&mut a, &mut b, false) + pump(&mut b, &mut a, false) == 0 {
                break;
            }
        }
        assert_eq!(drain(&mut b), data);
    }

    #[test]
    fn an_unanswered_early_flight_counts_as_never_sent() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        let (mut a, mut b) = broken_after(&data, 60_000, 60_000);
        // The first fresh connection dies before RESUMED: its flight is lost with it.
        let lost = a.early_flight(EARLY_FLIGHT, 0);
        assert_eq!(lost.len(), 1);
        a.detach();
        // The next one flies the same bytes again, and they continue b's stream.
        let (got, resent) = resume_early(&mut a, &mut b);
        assert_eq!(got, data);
        assert_eq!(resent, 0);
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
