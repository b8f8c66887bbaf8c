//! A ping over UDP: an echo server and a prober that measures round-trip times and loss.
//!
//! Used to check paths and the emulator. Every loop is bounded by a count and a deadline.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns::Netns;

/// A UDP echo server on a thread inside a namespace; stops on drop.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl EchoServer {
    /// Binds `bind` inside `ns` (port 0 picks one) and echoes every datagram to its sender.
    pub fn start(ns: &Netns, bind: SocketAddr) -> Result<Self> {
        let sock = ns
            .run(|| UdpSocket::bind(bind))?
            .with_context(|| format!("binding {bind}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        roomy(&sock)?;
        let addr = sock.local_addr()?;
        let peers = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, st) = (peers.clone(), stop.clone());
        let thread =
            std::thread::Builder::new()
                .name("udp-echo".into())
                .spawn(move || -> Result<()> {
                    let mut buf = [0u8; 2048];
                    while !st.load(Ordering::Relaxed) {
                        match sock.recv_from(&mut buf) {
                            Ok((n, from)) => {
                                p.lock().unwrap_or_else(|e| e.into_inner()).insert(from);
                                let _ = sock.send_to(&buf[..n], from);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Ok(())
                })?;
        Ok(EchoServer {
            addr,
            peers,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every source address a datagram came from so far: the server's view of the path used.
    pub fn peers(&self) -> HashSet<SocketAddr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Gives a socket a receive buffer for a few hundred milliseconds of probes at full rate, so
/// a receiver thread the scheduler delays does not turn into measured loss.
fn roomy(sock: &UdpSocket) -> Result<()> {
    crate::emulator::force_recv_buffer(sock, 4 << 20)
        .context("enlarging the probe socket's receive buffer")
}

/// How to probe.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    /// Probes to send.
    pub count: u32,
    /// Probes sent back to back before a pause.
    pub burst: u32,
    /// Pause between bursts.
    pub interval: Duration,
    /// How long to wait for late replies after the last probe.
    pub linger: Duration,
}

/// What a probe run measured.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Probes sent.
    pub sent: u32,
    /// Round-trip time of every probe answered, in sending order.
    pub rtts: Vec<Duration>,
}

impl ProbeReport {
    /// Probes answered.
    pub fn received(&self) -> u32 {
        self.rtts.len() as u32
    }

    /// Fraction of probes not answered.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - self.received() as f64 / self.sent as f64
    }

    /// Median round-trip time, if any probe came back.
    pub fn median_rtt(&self) -> Option<Duration> {
        let mut v = self.rtts.clone();
        v.sort();
        v.get(v.len() / 2).copied()
    }
}

/// Sends numbered probes from inside `ns` (bound to `bind`, or any address) to an echo server at
/// `target` and times each answer.
pub fn probe(
    ns: &Netns,
    bind: Option<SocketAddr>,
    target: SocketAddr,
    spec: ProbeSpec,
) -> Result<ProbeReport> {
    let any: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = ns
        .run(|| UdpSocket::bind(bind.unwrap_or(any)))?
        .context("binding the probe socket")?;
    roomy(&sock)?;
    // Not connected: with no route, connect would fail, and a failure to inject must read as
    // lost probes, not as an error.
    let rx = sock.try_clone()?;
    let start = Instant::now();
    let count = spec.count as usize;
    let sends: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; count]));
    let sends_rx = sends.clone();
    let done = Arc::new(AtomicBool::new(false));
    let done_rx = done.clone();
    let receiver = std::thread::Builder::new().name("probe-rx".into()).spawn(
        move || -> Vec<Option<Duration>> {
            let mut rtts = vec![None; count];
            let mut got = 0usize;
            let mut buf = [0u8; 64];
            let _ = rx.set_read_timeout(Some(Duration::from_millis(20)));
            let mut linger_until: Option<Instant> = None;
            while got < count {
                if done_rx.load(Ordering::Relaxed) {
                    let until = *linger_until.get_or_insert_with(|| Instant::now() + spec.linger);
                    if Instant::now() >= until {
                        break;
                    }
                }
                if let Ok((n, from)) = rx.recv_from(&mut buf) {
                    let now = Instant::now();
                    if n >= 4 && from == target {
                        let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                        let sent = sends_rx
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(seq)
                            .copied()
                            .flatten();
                        if let (Some(slot), Some(t)) = (rtts.get_mut(seq), sent)
                            && slot.is_none()
                        {
                            *slot = Some(now - t);
                            got += 1;
                        }
                    }
                }
            }
            rtts
        },
    )?;
    let mut payload = [0u8; 32];
    let mut i = 0u32;
    while i < spec.count {
        for _ in 0..spec.burst.max(1) {
            if i >= spec.count {
                break;
            }
            payload[..4].copy_from_slice(&i.to_be_bytes());
            sends.lock().unwrap_or_else(|e| e.into_inner())[i as usize] = Some(Instant::now());
            // A send that fails (no route during a failure) is a lost probe, not an error.
            let _ = sock.send_to(&payload, target);
            i += 1;
        }
        // The pacing is the measurement's own schedule.
        std::thread::sleep(spec.interval);
    }
    done.store(true, Ordering::Relaxed);
    let rtts = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("probe receiver panicked"))?;
    tracing::debug!(elapsed = ?start.elapsed(), "probe finished");
    Ok(ProbeReport {
        sent: spec.count,
        rtts: rtts.into_iter().flatten().collect(),
    })
}
