//! The userspace MPTCP path manager: subflows of one connection, by its token, through generic
//! netlink `mptcp_pm` (`ip mptcp subflow` / `ip mptcp monitor` without running `ip`).
//!
//! Requests ([`PmCommand`]): `SUBFLOW_CREATE`, `SUBFLOW_DESTROY` and `SET_FLAGS` (MP_PRIO).
//! They run on a worker thread with a socket of its own, in the order given, because every
//! `mptcp_pm` request waits behind one kernel lock, and promoting a backup must come before
//! closing the dead subflow. Events ([`PmEvents`]): the `mptcp_pm_events` multicast group,
//! read on the agent's loop, tell which connections and subflows exist, so nothing is polled.
//!
//! The kernel only lets the userspace path manager steer connections created while the
//! network namespace's `net.mptcp.pm_type` is 1; [`set_pm_type`] switches it.
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr as NlAddr};
use tokio::io::unix::AsyncFd;

use crate::enforce::mptcp::{MptcpPm, put_ip};
use crate::genl::{GenlSocket, NLA_F_NESTED, attrs, put};

const CMD_SET_FLAGS: u8 = 7;
const CMD_SUBFLOW_CREATE: u8 = 10;
const CMD_SUBFLOW_DESTROY: u8 = 11;

const ATTR_ADDR: u16 = 1;
const ATTR_TOKEN: u16 = 4;
const ATTR_ADDR_REMOTE: u16 = 6;

const ADDR_ID: u16 = 2;
#[cfg(test)]
const ADDR_ADDR4: u16 = 3;
const ADDR_PORT: u16 = 5;
const ADDR_FLAGS: u16 = 6;
const ADDR_IF_IDX: u16 = 7;

const FLAG_BACKUP: u32 = 1 << 2;

/// The multicast group the kernel sends MPTCP connection and subflow events to.
pub const EVENTS_GROUP: &str = "mptcp_pm_events";

// `enum mptcp_event_type` and `enum mptcp_event_attr` (linux/mptcp_pm.h).
const EV_CREATED: u8 = 1;
const EV_ESTABLISHED: u8 = 2;
const EV_CLOSED: u8 = 3;
const EV_SUB_ESTABLISHED: u8 = 10;
const EV_SUB_CLOSED: u8 = 11;
const EV_SUB_PRIORITY: u8 = 13;
const EA_TOKEN: u16 = 1;
const EA_SADDR4: u16 = 5;
const EA_SADDR6: u16 = 6;
const EA_DADDR4: u16 = 7;
const EA_DADDR6: u16 = 8;
const EA_SPORT: u16 = 9;
const EA_DPORT: u16 = 10;
const EA_BACKUP: u16 = 11;
const EA_SERVER_SIDE: u16 = 18;

/// One request to the userspace path manager: the core's subflow command, under the name this
/// module's callers know.
pub use crate::core::SubflowCommand as PmCommand;

/// Turns a command into its `mptcp_pm` request: command number and attributes.
trait Encode {
    fn encode(&self) -> (u8, Vec<u8>);
}

impl Encode for PmCommand {
    fn encode(&self) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        let (cmd, local, remote, flags, index, id) = match *self {
            PmCommand::Create {
                local,
                remote,
                backup,
                index,
                id,
                ..
            } => (
                CMD_SUBFLOW_CREATE,
                local,
                remote,
                Some(if backup { FLAG_BACKUP } else { 0 }),
                Some(index),
                Some(id),
            ),
            PmCommand::Destroy { local, remote, .. } => {
                (CMD_SUBFLOW_DESTROY, local, remote, None, None, None)
            }
            PmCommand::SetBackup {
                local,
                remote,
                backup,
                ..
            } => (
                CMD_SET_FLAGS,
                local,
                remote,
                Some(if backup { FLAG_BACKUP } else { 0 }),
                None,
                None,
            ),
        };
        put(&mut out, ATTR_TOKEN, &self.token().to_ne_bytes());
        put(
            &mut out,
            ATTR_ADDR | NLA_F_NESTED,
            &addr_nest(local, id, flags, index),
        );
        put(
            &mut out,
            ATTR_ADDR_REMOTE | NLA_F_NESTED,
            &addr_nest(remote, None, None, None),
        );
        (cmd, out)
    }
}

/// A nested `MPTCP_PM_ATTR_ADDR`: family, address, port (host order, as the kernel reads it),
/// address id, flags and interface when given.
fn addr_nest(a: SocketAddr, id: Option<u8>, flags: Option<u32>, index: Option<u32>) -> Vec<u8> {
    let mut inner = Vec::new();
    put_ip(&mut inner, a.ip());
    if let Some(id) = id {
        put(&mut inner, ADDR_ID, &[id]);
    }
    if a.port() != 0 {
        put(&mut inner, ADDR_PORT, &a.port().to_ne_bytes());
    }
    if let Some(f) = flags {
        put(&mut inner, ADDR_FLAGS, &f.to_ne_bytes());
    }
    if let Some(i) = index.filter(|i| *i != 0) {
        put(&mut inner, ADDR_IF_IDX, &(i as i32).to_ne_bytes());
    }
    inner
}

/// A finished command: what was asked, the kernel's answer, and its message when it refused
/// and said why (extended ack, e.g. `did not match address and id`).
pub type Done<T> = (T, PmCommand, io::Result<()>, Option<String>);

/// Runs [`PmCommand`]s on a thread of its own, in order; each answer goes back with the tag
/// `T` the caller gave (who to reply to).
#[derive(Debug)]
pub struct UserspacePm<T: Send + 'static> {
    jobs: Option<std::sync::mpsc::Sender<(T, PmCommand)>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + std::fmt::Debug + 'static> UserspacePm<T> {
    /// Opens the request socket and starts the worker; answers go to `done`.
    pub fn start(done: tokio::sync::mpsc::UnboundedSender<Done<T>>) -> io::Result<Self> {
        let mut pm = GenlSocket::<MptcpPm>::open()?;
        let (tx, rx) = std::sync::mpsc::channel::<(T, PmCommand)>();
        let span = tracing::info_span!("mptcp-userspace");
        let worker = std::thread::Builder::new()
            .name("roamd-mptcp-pm".into())
            .spawn(move || {
                let _g = span.enter();
                while let Ok((tag, cmd)) = rx.recv() {
                    let (c, a) = cmd.encode();
                    let t = std::time::Instant::now();
                    let r = pm.request(c, a);
                    let detail = r.is_err().then(|| pm.take_detail()).flatten();
                    match &r {
                        Ok(()) => {
                            tracing::info!(?cmd, took_us = t.elapsed().as_micros() as u64, "done")
                        }
                        Err(e) => tracing::warn!(
                            ?cmd,
                            error = %e,
                            kernel_says = detail.as_deref().unwrap_or("-"),
                            "refused by the kernel"
                        ),
                    }
                    if done.send((tag, cmd, r, detail)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(UserspacePm {
            jobs: Some(tx),
            worker: Some(worker),
        })
    }

    /// Queues `cmd`; its answer comes back with `tag`.
    pub fn submit(&self, tag: T, cmd: PmCommand) {
        if let Some(j) = &self.jobs {
            let _ = j.send((tag, cmd));
        }
    }
}

impl<T: Send + 'static> Drop for UserspacePm<T> {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// One connection or subflow event from the kernel: the core's event type, under the name this
/// module's callers know.
pub use crate::core::MptcpEvent as PmEvent;

/// Parses one generic netlink event's command and attributes. Server-side connections (the
/// peer opened them) and unknown events give `None`.
pub fn parse_event(cmd: u8, buf: &[u8]) -> Option<PmEvent> {
    let mut token = None;
    let (mut saddr, mut daddr) = (None, None);
    let (mut sport, mut dport) = (0u16, 0u16);
    let mut backup = false;
    let mut server = false;
    for (k, v) in attrs(buf) {
        match (k, v.len()) {
            (EA_TOKEN, 4) => token = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])),
            (EA_SADDR4, 4) => saddr = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
            (EA_DADDR4, 4) => daddr = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
            (EA_SADDR6, 16) => saddr = Some(IpAddr::V6(Ipv6Addr::from(to16(v)))),
            (EA_DADDR6, 16) => daddr = Some(IpAddr::V6(Ipv6Addr::from(to16(v)))),
            // Ports travel in network order in events.
            (EA_SPORT, 2) => sport = u16::from_be_bytes([v[0], v[1]]),
            (EA_DPORT, 2) => dport = u16::from_be_bytes([v[0], v[1]]),
            (EA_BACKUP, 1) => backup = v[0] != 0,
            (EA_SERVER_SIDE, _) => server = v.first().is_some_and(|b| *b != 0),
            _ => {}
        }
    }
    let token = token?;
    let pair = || {
        Some((
            SocketAddr::new(saddr?, sport),
            SocketAddr::new(daddr?, dport),
        ))
    };
    match cmd {
        EV_CREATED | EV_ESTABLISHED if !server => {
            let (local, remote) = pair()?;
            Some(PmEvent::Connection {
                token,
                local,
                remote,
            })
        }
        EV_CLOSED => Some(PmEvent::Closed { token }),
        EV_SUB_ESTABLISHED | EV_SUB_PRIORITY => {
            let (local, remote) = pair()?;
            Some(PmEvent::SubflowUp {
                token,
                local,
                remote,
                backup,
            })
        }
        EV_SUB_CLOSED => {
            let (local, remote) = pair()?;
            Some(PmEvent::SubflowClosed {
                token,
                local,
                remote,
            })
        }
        _ => None,
    }
}

fn to16(v: &[u8]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o.copy_from_slice(v);
    o
}

/// The `mptcp_pm_events` group, registered with tokio.
#[derive(Debug)]
pub struct PmEvents {
    socket: AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl PmEvents {
    /// Joins the `mptcp_pm_events` group.
    pub fn open() -> io::Result<PmEvents> {
        let group = GenlSocket::<MptcpPm>::open()?
            .group(EVENTS_GROUP)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the kernel's mptcp_pm family has no `{EVENTS_GROUP}` group"),
                )
            })?;
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&NlAddr::new(0, 0))?;
        socket.add_membership(group)?;
        socket.set_rx_buf_sz(1024 * 1024)?;
        socket.set_non_blocking(true)?;
        // SAFETY: the AsyncFd owns the Socket; its fd stays open and the same until dropped.
        let socket = unsafe { AsyncFd::register(socket) }?;
        Ok(PmEvents {
            socket,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Waits for the next datagram and returns the events in it. A lost burst (`ENOBUFS`) is
    /// logged and skipped: later events still describe every subflow that changes.
    pub async fn next(&mut self) -> io::Result<Vec<PmEvent>> {
        loop {
            let mut guard = self.socket.readable().await?;
            let buf = &mut self.buf;
            let n = match guard.try_io(|s| {
                let mut slice = &mut buf[..];
                s.get_ref().recv(&mut slice, 0)
            }) {
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::warn!("MPTCP events were lost (receive buffer full)");
                    continue;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            };
            return Ok(split_events(&self.buf[..n.min(self.buf.len())]));
        }
    }
}

/// Walks the netlink messages of one datagram: header (16), genl header (4), attributes.
fn split_events(mut rest: &[u8]) -> Vec<PmEvent> {
    let mut out = Vec::new();
    while rest.len() >= 20 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 20 || len > rest.len() {
            break;
        }
        if let Some(e) = parse_event(rest[16], &rest[20..len]) {
            out.push(e);
        }
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    out
}

/// Sets `net.mptcp.pm_type` of this network namespace (0 kernel, 1 userspace) and returns
/// the value it had.
pub fn set_pm_type(value: u8) -> io::Result<u8> {
    const PATH: &str = "/proc/sys/net/mptcp/pm_type";
    let old = std::fs::read_to_string(PATH)?;
    let old: u8 = old
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{PATH}: unexpected value {old:?}")))?;
    if old != value {
        std::fs::write(PATH, format!("{value}\n"))?;
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request the kernel refuses comes back with the kernel's reason, not only its errno.
    /// Runs in a network namespace of its own (a thread that unshared it): nothing is sent.
    #[test]
    fn a_refused_request_carries_the_kernels_reason() {
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "needs root (CAP_NET_ADMIN) under CI"
            );
            eprintln!("skipped: needs root");
            return;
        }
        let r = std::thread::spawn(|| {
            // SAFETY: only this thread's network namespace changes.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            let mut pm = GenlSocket::<MptcpPm>::open().expect("mptcp_pm family");
            let cmd = PmCommand::Create {
                token: 0xdead_beef,
                local: "198.18.2.2:0".parse().unwrap(),
                remote: "198.19.0.1:4433".parse().unwrap(),
                backup: false,
                index: 0,
                id: 1,
            };
            let (c, a) = cmd.encode();
            let e = pm.request(c, a).expect_err("no such connection");
            (e.raw_os_error(), pm.take_detail())
        })
        .join()
        .unwrap();
        assert_eq!(r, (Some(libc::EINVAL), Some("invalid token".to_owned())));
    }

    #[test]
    fn commands_carry_token_and_both_addresses() {
        let cmd = PmCommand::Create {
            token: 0xdead_beef,
            local: "198.18.2.2:0".parse().unwrap(),
            remote: "198.19.0.1:4433".parse().unwrap(),
            backup: true,
            index: 3,
            id: 7,
        };
        let (c, bytes) = cmd.encode();
        assert_eq!(c, CMD_SUBFLOW_CREATE);
        let top = attrs(&bytes);
        assert_eq!(top[0], (ATTR_TOKEN, &0xdead_beef_u32.to_ne_bytes()[..]));
        let local = attrs(top[1].1);
        assert!(local.contains(&(ADDR_ADDR4, &[198, 18, 2, 2][..])));
        assert!(
            !local.iter().any(|(k, _)| *k == ADDR_PORT),
            "port 0 is left out"
        );
        assert!(local.contains(&(ADDR_FLAGS, &FLAG_BACKUP.to_ne_bytes()[..])));
        assert!(local.contains(&(ADDR_IF_IDX, &3i32.to_ne_bytes()[..])));
        assert!(
            local.contains(&(ADDR_ID, &[7][..])),
            "the address id is a u8"
        );
        let remote = attrs(top[2].1);
        assert!(remote.contains(&(ADDR_PORT, &4433u16.to_ne_bytes()[..])));
    }

    #[test]
    fn events_parse_with_ports_in_network_order() {
        let mut b = Vec::new();
        put(&mut b, EA_TOKEN, &7u32.to_ne_bytes());
        put(&mut b, EA_SADDR4, &[198, 18, 1, 2]);
        put(&mut b, EA_DADDR4, &[198, 19, 0, 1]);
        put(&mut b, EA_SPORT, &40000u16.to_be_bytes());
        put(&mut b, EA_DPORT, &4433u16.to_be_bytes());
        put(&mut b, EA_BACKUP, &[1]);
        assert_eq!(
            parse_event(EV_SUB_ESTABLISHED, &b),
            Some(PmEvent::SubflowUp {
                token: 7,
                local: "198.18.1.2:40000".parse().unwrap(),
                remote: "198.19.0.1:4433".parse().unwrap(),
                backup: true
            })
        );
        let mut srv = b.clone();
        put(&mut srv, EA_SERVER_SIDE, &[1]);
        assert_eq!(parse_event(EV_ESTABLISHED, &srv), None);
        assert_eq!(
            parse_event(EV_CLOSED, &b),
            Some(PmEvent::Closed { token: 7 })
        );
        // A message header and a genl header in front, as the socket delivers them.
        let mut dgram = vec![0u8; 20];
        dgram[..4].copy_from_slice(&((20 + b.len()) as u32).to_ne_bytes());
        dgram[16] = EV_CLOSED;
        dgram.extend_from_slice(&b);
        assert_eq!(split_events(&dgram), [PmEvent::Closed { token: 7 }]);
    }
}
