//! Just enough rtnetlink to wait for link state changes by event, to timestamp the kernel's
//! link notifications ([`LinkWatcher`]) and to read link counters.
//!
//! The socket belongs to the namespace of the thread that opens it, so open it inside
//! [`crate::netns::Netns::run`]. Waiting subscribes to the link group first and then dumps the
//! current state, so no change can slip between the look and the wait.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

// The kernel's values come from libc (netlink(7), rtnetlink(7)); message types and flags are
// 16 bits on the wire.
use libc::{IFLA_IFNAME, IFLA_OPERSTATE, IFLA_STATS64, RTM_GETLINK, RTM_NEWLINK};
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;

/// RFC 2863 operational state as the kernel reports it (`ip link` shows it after `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OperState {
    /// The driver does not track it.
    Unknown,
    /// Administratively down.
    Down,
    /// Up, but what it stacks on has no carrier (a veth whose peer is down).
    LowerLayerDown,
    /// Carrier and up: frames flow.
    Up,
    /// Any other kernel value.
    Other(u8),
}

impl From<u8> for OperState {
    fn from(v: u8) -> Self {
        match v {
            0 => OperState::Unknown,
            2 => OperState::Down,
            5 => OperState::LowerLayerDown,
            6 => OperState::Up,
            other => OperState::Other(other),
        }
    }
}

/// 64-bit interface counters (`ip -s link`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// One interface as an RTM_NEWLINK message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: i32,
    /// Interface name.
    pub name: String,
    /// Operational state.
    pub operstate: OperState,
    /// Administratively up (`IFF_UP`, `ip link set DEV up`).
    pub admin_up: bool,
    /// The lower layer signals a carrier (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// Counters, when the message carried them.
    pub stats: Option<LinkStats>,
}

/// A NETLINK_ROUTE socket in the namespace of the thread that opened it.
#[derive(Debug)]
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
    /// Link events that arrived while a dump was being read; kept so no change is lost.
    pending: Vec<LinkInfo>,
}

impl Rtnl {
    /// Opens a socket subscribed to link events.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before being owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: addr is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Rtnl {
            fd,
            seq: 1,
            pending: Vec::new(),
        })
    }

    /// Every interface of the namespace with its state and counters (`ip -s link show`).
    pub fn links(&mut self) -> Result<Vec<LinkInfo>> {
        self.request_dump()?;
        let seq = self.seq;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let Some(buf) = self.recv(deadline)? else {
                bail!("netlink link dump did not finish within 5 s");
            };
            let mut done = false;
            for (ty, mseq, payload) in messages(&buf) {
                if ty == RTM_NEWLINK {
                    if let Some(info) = parse_link(payload) {
                        if mseq == seq {
                            out.push(info);
                        } else {
                            self.pending.push(info);
                        }
                    }
                } else if (ty == NLMSG_DONE || ty == NLMSG_ERROR) && mseq == seq {
                    done = true;
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// Waits until interface `name` satisfies `pred`, by netlink events, for at most `timeout`.
    pub fn wait_link(
        &mut self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&LinkInfo) -> bool,
    ) -> Result<LinkInfo> {
        let deadline = Instant::now() + timeout;
        // The subscription predates this dump, so a change after it arrives as an event.
        if let Some(l) = self.links()?.into_iter().find(|l| l.name == name)
            && pred(&l)
        {
            return Ok(l);
        }
        // Events that raced with the dump are newer than (or as new as) what it showed; they
        // come first.
        if let Some((_, l)) = self.next_link_event(name, deadline, &pred)? {
            return Ok(l);
        }
        bail!("interface {name} did not reach the expected state within {timeout:?}")
    }

    /// Waits for the next link notification about `name` that satisfies `pred`, for at most
    /// until `deadline` (`None` once it passes), and returns it with the moment it was read.
    ///
    /// Unlike [`Rtnl::wait_link`] this never dumps: it answers "when did the kernel announce
    /// the change", so call it from a thread that is already waiting when the change is made;
    /// the stamp is then the kernel's notification reaching user space. Events held back by an
    /// earlier dump come first, stamped when they are handed out.
    pub fn next_link_event(
        &mut self,
        name: &str,
        deadline: Instant,
        pred: impl Fn(&LinkInfo) -> bool,
    ) -> Result<Option<(Instant, LinkInfo)>> {
        if let Some(l) = self
            .pending
            .drain(..)
            .filter(|l| l.name == name)
            .find(|l| pred(l))
        {
            return Ok(Some((Instant::now(), l)));
        }
        // Bounded by the deadline: recv returns None once it passes.
        while let Some(buf) = self.recv(deadline)? {
            let at = Instant::now();
            for (ty, _, payload) in messages(&buf) {
                if ty != RTM_NEWLINK {
                    continue;
                }
                if let Some(l) = parse_link(payload)
                    && l.name == name
                    && pred(&l)
                {
                    return Ok(Some((at, l)));
                }
            }
        }
        Ok(None)
    }

    fn request_dump(&mut self) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(32);
        msg.extend_from_slice(&32u32.to_ne_bytes());
        msg.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
        msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        // struct ifinfomsg, all zero: every family, every interface.
        msg.extend_from_slice(&[0u8; 16]);
        // SAFETY: msg is a valid buffer of the length given; the socket is connected to the kernel.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if rc == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(Some(buf))
    }
}

/// The kernel's notifications about one interface, read by a netlink socket in a namespace on
/// a thread that is always waiting (at a real-time priority, [`measuring_priority`]), each
/// stamped as it is read: when the kernel announced a
/// change, the t0 of a reaction measured elsewhere. Stops when dropped.
#[derive(Debug)]
pub struct LinkWatcher {
    dev: String,
    events: Receiver<(Instant, bool)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl LinkWatcher {
    /// Starts watching `dev` in `ns`; returns once the socket listens (at most 5 s).
    pub fn start(ns: &Netns, dev: &str) -> Result<LinkWatcher> {
        let (tx, events) = channel();
        let (ready_tx, ready_rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let name = dev.to_owned();
        let thread = ns.spawn("link-watcher", move || {
            measuring_priority();
            let mut rtnl = Rtnl::open()?;
            let _ = ready_tx.send(());
            // Wakes every 200 ms only to see `stop`; ends by itself after an hour.
            let end = Instant::now() + Duration::from_secs(3600);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                let slice = Instant::now() + Duration::from_millis(200);
                if let Some((at, l)) = rtnl.next_link_event(&name, slice, |_| true)? {
                    // Up means usable: administratively up with a carrier.
                    if tx.send((at, l.admin_up && l.carrier)).is_err() {
                        break;
                    }
                }
            }
            Ok(())
        })?;
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the netlink watcher did not start")?;
        Ok(LinkWatcher {
            dev: dev.to_owned(),
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// Forgets the notifications read so far.
    pub fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// When the first notification (since the last [`LinkWatcher::drain`]) that shows the
    /// interface usable (`up`) or not was read; waits at most `within`.
    pub fn first(&self, up: bool, within: Duration) -> Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((at, state)) if state == up => return Ok(at),
                Ok(_) => {}
                Err(_) => bail!(
                    "no kernel notification of {} {} within {within:?}",
                    self.dev,
                    if up { "up" } else { "down" }
                ),
            }
        }
    }
}

/// Gives the calling thread a real-time priority (`SCHED_FIFO` 50, not inherited by children)
/// when it may (root): a thread that only waits and stamps (the kernel's notification, a
/// subscriber's receipt) then reads as soon as its data is there, instead of after whatever
/// else is runnable on a loaded machine (the benchmark's own load generators, other builds),
/// so the figure times the system measured, not the measurer's scheduling. Such a thread must
/// block between reads: it runs ahead of every normal thread. False when refused.
pub fn measuring_priority() -> bool {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: sched_setscheduler reads the sched_param we own; pid 0 is the calling thread.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) == 0
    }
}

impl Drop for LinkWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Splits a datagram into (type, seq, payload) netlink messages, stopping at anything malformed.
fn messages(mut buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        out.push((ty, seq, &buf[16..len]));
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    out
}

fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
    if payload.len() < 16 {
        return None;
    }
    let index = i32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let flags = u32::from_ne_bytes([payload[8], payload[9], payload[10], payload[11]]);
    let mut name = None;
    let mut operstate = OperState::Unknown;
    let mut stats = None;
    let mut attrs = &payload[16..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match ty {
            IFLA_IFNAME => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                name = Some(String::from_utf8_lossy(&data[..end]).into_owned());
            }
            IFLA_OPERSTATE if !data.is_empty() => operstate = OperState::from(data[0]),
            IFLA_STATS64 if data.len() >= 32 => {
                let u = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&data[i * 8..i * 8 + 8]);
                    u64::from_ne_bytes(b)
                };
                stats = Some(LinkStats {
                    rx_packets: u(0),
                    tx_packets: u(1),
                    rx_bytes: u(2),
                    tx_bytes: u(3),
                });
            }
            _ => {}
        }
        let aligned = (len + 3) & !3;
        attrs = &attrs[aligned.min(attrs.len())..];
    }
    Some(LinkInfo {
        index,
        name: name?,
        operstate,
        admin_up: flags & libc::IFF_UP as u32 != 0,
        carrier: flags & libc::IFF_LOWER_UP as u32 != 0,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_link_message_with_name_state_and_counters() {
        let mut payload = vec![0u8; 16];
        payload[4..8].copy_from_slice(&7i32.to_ne_bytes());
        let mut push = |ty: u16, data: &[u8]| {
            let len = 4 + data.len();
            payload.extend_from_slice(&(len as u16).to_ne_bytes());
            payload.extend_from_slice(&ty.to_ne_bytes());
            payload.extend_from_slice(data);
            while !payload.len().is_multiple_of(4) {
                payload.push(0);
            }
        };
        push(IFLA_IFNAME, b"wlan0\0");
        push(IFLA_OPERSTATE, &[5]);
        let mut stats = Vec::new();
        for v in [1u64, 2, 300, 400] {
            stats.extend_from_slice(&v.to_ne_bytes());
        }
        push(IFLA_STATS64, &stats);
        let l = parse_link(&payload).unwrap();
        assert_eq!(l.index, 7);
        assert_eq!(l.name, "wlan0");
        assert_eq!(l.operstate, OperState::LowerLayerDown);
        assert_eq!(l.stats.unwrap().rx_bytes, 300);
        assert_eq!(l.stats.unwrap().tx_bytes, 400);
    }

    #[test]
    fn stops_at_a_truncated_message() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&100u32.to_ne_bytes());
        buf.extend_from_slice(&[0u8; 20]);
        assert!(messages(&buf).is_empty());
    }
}
