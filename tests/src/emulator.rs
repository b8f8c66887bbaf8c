//! The user-space link emulator: what netem would do, for a kernel without netem.
//!
//! An emulated path is `handset --veth-- [emulator namespace] --veth-- server`. The emulator
//! namespace has no addresses and no IP forwarding; per link, two AF_PACKET sockets read every
//! frame that reaches one veth end and write it out of the other after applying that direction's
//! [`PathConfig`]: one-way delay, jitter, seeded random loss, a rate limit with a bounded queue,
//! and a silent blackhole. Order is kept (jitter never reorders), as on a real radio bearer.
//! Every setting can change while traffic flows through an [`EmulatorHandle`].
//!
//! Frames must fit the MTU, so the topology turns segmentation and checksum offloads off on the
//! veths of an emulated path (a frame with a checksum left to offload would arrive corrupt).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::netns::Netns;
use crate::topology::Direction;

/// How one direction of a path treats frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathConfig {
    /// One-way delay added to every frame.
    pub delay: Duration,
    /// Each frame's delay varies uniformly within `delay ± jitter` (never below zero; frames are
    /// never reordered by it).
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a frame is dropped, drawn from the emulator's seeded RNG.
    pub loss: f64,
    /// Bottleneck rate in bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// Frames that would wait longer than this at the bottleneck are dropped (tail drop).
    pub queue_limit: Duration,
    /// Drop everything silently; the link stays up.
    pub blackhole: bool,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            queue_limit: Duration::from_millis(200),
            blackhole: false,
        }
    }
}

impl PathConfig {
    /// Half of `rtt` as one-way delay: set on both directions, the path's round-trip time.
    pub fn with_rtt(rtt: Duration) -> Self {
        PathConfig {
            delay: rtt / 2,
            ..PathConfig::default()
        }
    }
}

/// What one direction did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Frames passed on.
    pub forwarded: u64,
    /// Frames dropped by random loss.
    pub lost: u64,
    /// Frames dropped by the blackhole.
    pub blackholed: u64,
    /// Frames dropped because the bottleneck queue was full.
    pub queue_drops: u64,
    /// Neighbour resolution frames that arrived (ARP, NDP neighbour solicitations and
    /// advertisements), whatever became of them: zero on the topology's emulated paths, whose
    /// ends know each other (`crate::topology`).
    pub neighbour: u64,
}

struct DirState {
    cfg: PathConfig,
    rng: StdRng,
    /// When the bottleneck finishes sending what it already holds.
    bottleneck_free: Instant,
    /// Release time of the last queued frame; later frames never leave before it.
    last_release: Instant,
    queue: VecDeque<(Instant, Vec<u8>)>,
}

struct Dir {
    state: Mutex<DirState>,
    wake: Condvar,
    forwarded: AtomicU64,
    lost: AtomicU64,
    blackholed: AtomicU64,
    queue_drops: AtomicU64,
    neighbour: AtomicU64,
}

impl Dir {
    fn new(cfg: PathConfig, seed: u64) -> Self {
        let now = Instant::now();
        Dir {
            state: Mutex::new(DirState {
                cfg,
                rng: StdRng::seed_from_u64(seed),
                bottleneck_free: now,
                last_release: now,
                queue: VecDeque::new(),
            }),
            wake: Condvar::new(),
            forwarded: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            blackholed: AtomicU64::new(0),
            queue_drops: AtomicU64::new(0),
            neighbour: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DirState> {
        // A panic elsewhere cannot leave the state half-updated in a way that matters here.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides a frame's fate at arrival time `now` and queues it when it survives.
    fn admit(&self, now: Instant, frame: Vec<u8>) {
        if is_neighbour_resolution(&frame) {
            self.neighbour.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = self.lock();
        let cfg = s.cfg;
        if cfg.blackhole {
            self.blackholed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if cfg.loss > 0.0 && s.rng.random::<f64>() < cfg.loss {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut depart = now;
        if let Some(rate) = cfg.rate_bps.filter(|r| *r > 0) {
            let start = s.bottleneck_free.max(now);
            if start - now > cfg.queue_limit {
                self.queue_drops.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let tx = Duration::from_nanos(frame.len() as u64 * 8 * 1_000_000_000 / rate);
            s.bottleneck_free = start + tx;
            depart = s.bottleneck_free;
        }
        let mut delay = cfg.delay;
        if !cfg.jitter.is_zero() {
            let j = cfg.jitter.as_secs_f64();
            let offset = s.rng.random_range(-j..=j);
            delay = Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0));
        }
        let release = (depart + delay).max(s.last_release);
        s.last_release = release;
        s.queue.push_back((release, frame));
        drop(s);
        self.wake.notify_one();
    }
}

/// Changes a running emulator's settings; cheap to clone.
#[derive(Clone)]
pub struct EmulatorHandle {
    up: Arc<Dir>,
    down: Arc<Dir>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("up", &self.config(Direction::Up))
            .field("down", &self.config(Direction::Down))
            .finish()
    }
}

impl EmulatorHandle {
    fn dirs(&self, dir: Direction) -> Vec<&Arc<Dir>> {
        match dir {
            Direction::Up => vec![&self.up],
            Direction::Down => vec![&self.down],
            Direction::Both => vec![&self.up, &self.down],
        }
    }

    /// Applies `change` to the settings of `dir`; frames already queued keep their release time.
    pub fn update(&self, dir: Direction, change: impl Fn(&mut PathConfig)) {
        for d in self.dirs(dir) {
            change(&mut d.lock().cfg);
            d.wake.notify_one();
        }
    }

    /// Replaces the settings of `dir`.
    pub fn set(&self, dir: Direction, cfg: PathConfig) {
        self.update(dir, |c| *c = cfg);
    }

    /// Sets the one-way delay of both directions to `rtt / 2`.
    pub fn set_rtt(&self, rtt: Duration) {
        self.update(Direction::Both, |c| c.delay = rtt / 2);
    }

    /// Sets the one-way delay of `dir`.
    pub fn set_delay(&self, dir: Direction, delay: Duration) {
        self.update(dir, |c| c.delay = delay);
    }

    /// Sets the jitter of `dir`.
    pub fn set_jitter(&self, dir: Direction, jitter: Duration) {
        self.update(dir, |c| c.jitter = jitter);
    }

    /// Sets the loss probability of `dir` (clamped to `[0, 1]`).
    pub fn set_loss(&self, dir: Direction, loss: f64) {
        self.update(dir, |c| c.loss = loss.clamp(0.0, 1.0));
    }

    /// Sets the rate limit of `dir` in bits per second (`None`: unlimited).
    pub fn set_rate(&self, dir: Direction, rate_bps: Option<u64>) {
        self.update(dir, |c| c.rate_bps = rate_bps);
    }

    /// Turns the silent blackhole of `dir` on or off.
    pub fn set_blackhole(&self, dir: Direction, on: bool) {
        self.update(dir, |c| c.blackhole = on);
    }

    /// The current settings of one direction (`Both` reads `Up`).
    pub fn config(&self, dir: Direction) -> PathConfig {
        let d = if dir == Direction::Down {
            &self.down
        } else {
            &self.up
        };
        d.lock().cfg
    }

    /// Counters of one direction (`Both` adds them up).
    pub fn stats(&self, dir: Direction) -> DirectionStats {
        let mut out = DirectionStats::default();
        for d in self.dirs(dir) {
            out.forwarded += d.forwarded.load(Ordering::Relaxed);
            out.lost += d.lost.load(Ordering::Relaxed);
            out.blackholed += d.blackholed.load(Ordering::Relaxed);
            out.queue_drops += d.queue_drops.load(Ordering::Relaxed);
            out.neighbour += d.neighbour.load(Ordering::Relaxed);
        }
        out
    }
}

/// Whether an Ethernet frame is ARP, or an IPv6 neighbour solicitation or advertisement (ICMPv6
/// types 135 and 136 right after the fixed header: NDP carries no extension headers).
fn is_neighbour_resolution(frame: &[u8]) -> bool {
    const ETH_HLEN: usize = 14;
    const IPV6_HLEN: usize = 40;
    const IPPROTO_ICMPV6: u8 = 58;
    match frame
        .get(12..ETH_HLEN)
        .map(|t| u16::from_be_bytes([t[0], t[1]]))
    {
        Some(0x0806) => true,
        Some(0x86dd) => {
            frame.get(ETH_HLEN + 6) == Some(&IPPROTO_ICMPV6)
                && matches!(frame.get(ETH_HLEN + IPV6_HLEN), Some(135 | 136))
        }
        _ => false,
    }
}

/// A running emulator for one link; stops and joins its threads on drop.
pub struct LinkEmulator {
    handle: EmulatorHandle,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    name: String,
}

impl std::fmt::Debug for LinkEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEmulator")
            .field("name", &self.name)
            .finish()
    }
}

impl LinkEmulator {
    /// Starts forwarding between `handset_dev` and `server_dev`, two interfaces of `ns`, with
    /// `up` applied to frames towards the server and `down` to frames towards the handset.
    /// Returns once both sockets are bound: frames sent after that are forwarded.
    pub fn start(
        ns: &Netns,
        name: &str,
        handset_dev: &str,
        server_dev: &str,
        up: PathConfig,
        down: PathConfig,
        seed: u64,
    ) -> Result<Self> {
        let (hs, ss) = ns
            .run(|| -> io::Result<(OwnedFd, OwnedFd)> {
                Ok((packet_socket(handset_dev)?, packet_socket(server_dev)?))
            })?
            .with_context(|| format!("opening packet sockets on {handset_dev} and {server_dev}"))?;
        let hs = Arc::new(hs);
        let ss = Arc::new(ss);
        let handle = EmulatorHandle {
            up: Arc::new(Dir::new(up, seed)),
            down: Arc::new(Dir::new(down, seed ^ 0x9e37_79b9_7f4a_7c15)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (dir, from, to, label) in [
            (&handle.up, &hs, &ss, "up"),
            (&handle.down, &ss, &hs, "down"),
        ] {
            let (d, f, st) = (dir.clone(), from.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("emu-{name}-{label}-rx"))
                    .spawn(move || rx_loop(&d, &f, &st))?,
            );
            let (d, t, st) = (dir.clone(), to.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("emu-{name}-{label}-tx"))
                    .spawn(move || tx_loop(&d, &t, &st))?,
            );
        }
        tracing::debug!(link = name, ?up, ?down, "emulator started");
        Ok(LinkEmulator {
            handle,
            stop,
            threads,
            name: name.to_owned(),
        })
    }

    /// A handle to change settings while traffic flows.
    pub fn handle(&self) -> EmulatorHandle {
        self.handle.clone()
    }
}

impl Drop for LinkEmulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.up.wake.notify_all();
        self.handle.down.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How long a blocked receive waits before looking at the stop flag.
const POLL: Duration = Duration::from_millis(50);

fn rx_loop(dir: &Dir, sock: &OwnedFd, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // A device going down reports ENETDOWN once; the socket rebinds when it comes back.
            if e.raw_os_error() == Some(libc::ENETDOWN) {
                continue;
            }
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                tracing::warn!(error = %e, "emulator receive failed");
                return;
            }
            continue;
        }
        dir.admit(Instant::now(), buf[..n as usize].to_vec());
    }
}

fn tx_loop(dir: &Dir, sock: &OwnedFd, stop: &AtomicBool) {
    let mut s = dir.lock();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match s.queue.front() {
            Some((release, _)) if *release <= now => {
                let Some((_, frame)) = s.queue.pop_front() else {
                    continue;
                };
                drop(s);
                // SAFETY: frame is readable for its length; the socket is bound to one interface.
                let rc =
                    unsafe { libc::send(sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if rc < 0 {
                    tracing::debug!(error = %io::Error::last_os_error(), len = frame.len(), "emulator send failed");
                } else {
                    dir.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                s = dir.lock();
            }
            Some((release, _)) => {
                let wait = (*release - now).min(POLL);
                s = dir
                    .wake
                    .wait_timeout(s, wait)
                    .map(|r| r.0)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            None => {
                s = dir
                    .wake
                    .wait_timeout(s, POLL)
                    .map(|r| r.0)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
    }
}

/// An AF_PACKET socket that sees every frame arriving on `dev` (not the ones it sends itself).
fn packet_socket(dev: &str) -> io::Result<OwnedFd> {
    let ifindex = roam_link::socket::if_nametoindex(dev)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {dev}")))?;
    // Protocol 0 receives nothing until bind narrows it to one interface, so no frame of another
    // interface slips in between socket and bind.
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
    setsockopt(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one)?;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: POLL.as_micros() as libc::suseconds_t,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    force_recv_buffer(&fd, 4 << 20)?;
    // SAFETY: sockaddr_ll is plain data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Gives a socket a receive buffer of `bytes`: `SO_RCVBUFFORCE` (root: past
/// `net.core.rmem_max`, whatever a fresh machine has it at), else `SO_RCVBUF`.
pub(crate) fn force_recv_buffer(fd: &impl AsFd, bytes: usize) -> io::Result<()> {
    let fd = fd.as_fd().try_clone_to_owned()?;
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size)
        .or_else(|_| setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size))
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points to a T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(d: &Dir) -> Vec<Instant> {
        d.lock().queue.iter().map(|(t, _)| *t).collect()
    }

    #[test]
    fn delay_and_rate_set_release_times_in_order() {
        let cfg = PathConfig {
            delay: Duration::from_millis(10),
            rate_bps: Some(8_000_000),
            ..PathConfig::default()
        };
        let d = Dir::new(cfg, 1);
        let t0 = Instant::now();
        // 1000 bytes at 8 Mbit/s take 1 ms at the bottleneck.
        d.admit(t0, vec![0; 1000]);
        d.admit(t0, vec![0; 1000]);
        let r = drain(&d);
        assert_eq!(r[0] - t0, Duration::from_millis(11));
        assert_eq!(r[1] - t0, Duration::from_millis(12));
    }

    #[test]
    fn seeded_loss_is_close_to_the_setting_and_repeatable() {
        let cfg = PathConfig {
            loss: 0.05,
            ..PathConfig::default()
        };
        let run = || {
            let d = Dir::new(cfg, 42);
            let t0 = Instant::now();
            for _ in 0..20_000 {
                d.admit(t0, vec![0; 10]);
            }
            d.lost.load(Ordering::Relaxed)
        };
        let lost = run();
        assert_eq!(lost, run());
        assert!((900..1100).contains(&lost), "lost {lost} of 20000");
    }

    #[test]
    fn jitter_spreads_delays_without_reordering() {
        let cfg = PathConfig {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            ..PathConfig::default()
        };
        let d = Dir::new(cfg, 3);
        let t0 = Instant::now();
        let sent: Vec<Instant> = (0..200).map(|i| t0 + Duration::from_millis(i)).collect();
        for t in &sent {
            d.admit(*t, vec![0; 10]);
        }
        let released = drain(&d);
        assert!(released.windows(2).all(|w| w[0] <= w[1]), "reordered");
        let delays: Vec<Duration> = released.iter().zip(&sent).map(|(r, s)| *r - *s).collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(5)));
        let spread = *delays.iter().max().unwrap() - *delays.iter().min().unwrap();
        assert!(
            spread > Duration::from_millis(5),
            "no jitter: spread {spread:?}"
        );
    }

    #[test]
    fn arp_and_ndp_are_counted_as_neighbour_resolution() {
        let eth = |ethertype: u16, payload: &[u8]| {
            let mut f = vec![0u8; 12];
            f.extend(ethertype.to_be_bytes());
            f.extend(payload);
            f
        };
        let ipv6 = |next: u8, first: u8| {
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[6] = next;
            h.push(first);
            h
        };
        let d = Dir::new(PathConfig::default(), 1);
        let t0 = Instant::now();
        d.admit(t0, eth(0x0806, &[0; 28]));
        d.admit(t0, eth(0x86dd, &ipv6(58, 135)));
        d.admit(t0, eth(0x86dd, &ipv6(58, 136)));
        assert_eq!(d.neighbour.load(Ordering::Relaxed), 3);
        // An echo request, a UDP datagram, IPv4 and a runt are not.
        d.admit(t0, eth(0x86dd, &ipv6(58, 128)));
        d.admit(t0, eth(0x86dd, &ipv6(17, 135)));
        d.admit(t0, eth(0x0800, &[0x45; 28]));
        d.admit(t0, vec![0; 10]);
        assert_eq!(d.neighbour.load(Ordering::Relaxed), 3);
        assert_eq!(drain(&d).len(), 7, "counting drops nothing");
    }

    #[test]
    fn blackhole_and_queue_limit_drop() {
        let cfg = PathConfig {
            rate_bps: Some(8_000),
            queue_limit: Duration::from_millis(5),
            ..PathConfig::default()
        };
        let d = Dir::new(cfg, 1);
        let t0 = Instant::now();
        // 10 bytes at 8 kbit/s take 10 ms: the second frame would wait past the 5 ms limit.
        d.admit(t0, vec![0; 10]);
        d.admit(t0, vec![0; 10]);
        assert_eq!(d.queue_drops.load(Ordering::Relaxed), 1);
        d.lock().cfg.blackhole = true;
        d.admit(t0, vec![0; 10]);
        assert_eq!(d.blackholed.load(Ordering::Relaxed), 1);
        assert_eq!(drain(&d).len(), 1);
    }
}
