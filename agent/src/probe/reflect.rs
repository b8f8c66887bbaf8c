//! `roamd reflect`: the UDP echo reflector probes are sent to.
//!
//! It answers only well-formed requests, with a reply of exactly the request's size (never
//! amplifies), and at most [`MAX_REPLIES_PER_SEC`] replies a second in all (never becomes a
//! flood source when someone sprays it with spoofed requests).
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::wire::{LEN, Probe};

/// Global reply budget.
pub const MAX_REPLIES_PER_SEC: u32 = 2000;

/// Token bucket: `rate` a second, bursts of up to `rate / 10`.
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Budget {
    /// A full bucket at `now`.
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate);
        Budget {
            rate,
            tokens: (rate / 10.0).max(1.0),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min((self.rate / 10.0).max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Binds `listen`, calls `ready` with the bound address, then reflects until the task is
/// dropped or the socket fails.
pub async fn run(listen: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let sock = UdpSocket::bind(listen).await?;
    ready(sock.local_addr()?);
    let mut budget = Budget::new(MAX_REPLIES_PER_SEC, Instant::now());
    // One byte more than a probe: a longer datagram fills it and is refused.
    let mut buf = [0u8; LEN + 1];
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    loop {
        let (n, from) = sock.recv_from(&mut buf).await?;
        let Some(p) = Probe::parse(&buf[..n]).filter(|p| !p.reply) else {
            continue;
        };
        if !budget.take(Instant::now()) {
            if refused_logged.elapsed() > Duration::from_secs(10) {
                tracing::warn!(%from, "reply budget exhausted; dropping probes");
                refused_logged = Instant::now();
            }
            continue;
        }
        let reply = Probe { reply: true, ..p }.emit();
        if let Err(e) = sock.send_to(&reply, from).await {
            tracing::debug!(%from, error = %e, "reply not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refills_at_its_rate_and_caps_bursts() {
        let t0 = Instant::now();
        let mut b = Budget::new(100, t0);
        let burst = (0..50).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 10);
        assert!(!b.take(t0 + Duration::from_millis(5)));
        assert!(b.take(t0 + Duration::from_millis(16)));
        let later = t0 + Duration::from_secs(100);
        assert_eq!((0..50).filter(|_| b.take(later)).count(), 10);
    }
}
