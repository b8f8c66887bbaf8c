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

use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr as NlAddr};
use tokio::io::unix::AsyncFd;

use roam_link::netlink::Messages;
use roam_link::netlink::genl::GenlMessage;
use roam_link::netlink::mptcp_pm::{
    self, Address, Command, EndpointFlags, Event, EventType, Request,
};

use crate::enforce::mptcp::MptcpPm;
use crate::genl::GenlSocket;

/// The multicast group the kernel sends MPTCP connection and subflow events to.
pub const EVENTS_GROUP: &str = mptcp_pm::EVENTS_GROUP;

/// One request to the userspace path manager: the core's subflow command, under the name this
/// module's callers know.
pub use crate::core::SubflowCommand as PmCommand;

/// Turns a command into its `mptcp_pm` request: command number and attributes.
trait Encode {
    fn encode(&self) -> (u8, Vec<u8>);
}

impl Encode for PmCommand {
    /// The request's command and attributes: token, the local address (port 0 left out: the
    /// kernel picks; address id, flags and interface when given), the remote address.
    fn encode(&self) -> (u8, Vec<u8>) {
        let (cmd, local, remote, flags, index, id) = match *self {
            PmCommand::RemoveAddr { token, id } => {
                let mut out = Vec::new();
                roam_link::netlink::attr::put(
                    &mut out,
                    mptcp_pm::pm_attr::TOKEN,
                    &token.to_ne_bytes(),
                );
                roam_link::netlink::attr::put(&mut out, mptcp_pm::pm_attr::LOC_ID, &[id]);
                return (Command::Remove.into(), out);
            }
            PmCommand::Create {
                local,
                remote,
                backup,
                index,
                id,
                ..
            } => (
                Command::SubflowCreate,
                local,
                remote,
                Some(EndpointFlags::backup_if(backup)),
                Some(index),
                Some(id),
            ),
            PmCommand::Destroy { local, remote, .. } => {
                (Command::SubflowDestroy, local, remote, None, None, None)
            }
            PmCommand::SetBackup {
                local,
                remote,
                backup,
                ..
            } => (
                Command::SetFlags,
                local,
                remote,
                Some(EndpointFlags::backup_if(backup)),
                None,
                None,
            ),
        };
        let request = Request {
            cmd,
            token: Some(self.token()),
            addr: Some(Address {
                id,
                flags,
                if_idx: index.filter(|i| *i != 0).map(|i| i as i32),
                ..Address::socket(local)
            }),
            remote: Some(Address::socket(remote)),
        };
        (cmd.into(), request.attrs())
    }
}

/// A finished command: what was asked, the kernel's answer, and its message when it refused
/// and said why (extended ack, e.g. `did not match address and id`).
pub type Done<T> = (T, PmCommand, io::Result<()>, Option<String>);

/// How long the agent's loop may spend on commands itself in one [`INLINE_WINDOW`], before it
/// hands the rest to the worker (a link loss under a thousand connections is three thousand
/// commands: the loop must not stall behind them).
pub const INLINE_BUDGET: std::time::Duration = std::time::Duration::from_millis(2);
/// The window [`INLINE_BUDGET`] is counted over.
pub const INLINE_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether the loop may run the next command itself: only while the worker has nothing
/// queued or running (so commands keep their order), and within [`INLINE_BUDGET`] per
/// [`INLINE_WINDOW`]. Sans-I/O: the caller says the time and what each command took.
#[derive(Debug, Clone, Copy)]
pub struct InlineBudget {
    window: Option<std::time::Instant>,
    spent: std::time::Duration,
}

impl InlineBudget {
    /// A budget with nothing spent.
    pub fn new() -> InlineBudget {
        InlineBudget {
            window: None,
            spent: std::time::Duration::ZERO,
        }
    }

    /// Whether a command may run on the loop at `now`, the worker holding `queued` commands.
    pub fn allows(&mut self, now: std::time::Instant, queued: usize) -> bool {
        if queued > 0 {
            return false;
        }
        if self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= INLINE_WINDOW)
        {
            self.window = Some(now);
            self.spent = std::time::Duration::ZERO;
        }
        self.spent < INLINE_BUDGET
    }

    /// A command run on the loop took `took`.
    pub fn spend(&mut self, took: std::time::Duration) {
        self.spent += took;
    }
}

impl Default for InlineBudget {
    fn default() -> Self {
        InlineBudget::new()
    }
}

/// Carries out one command on `pm` and logs it: `waited` is how long it waited for the thread
/// that runs it (on a loaded machine a worker's wake-up alone took 51 ms once).
fn run_one(
    pm: &mut GenlSocket<MptcpPm>,
    cmd: &PmCommand,
    waited: std::time::Duration,
    on: &'static str,
) -> (io::Result<()>, Option<String>) {
    let (c, a) = cmd.encode();
    let t = std::time::Instant::now();
    let r = pm.request(c, a);
    let detail = r.is_err().then(|| pm.take_detail()).flatten();
    match &r {
        Ok(()) => tracing::info!(
            ?cmd,
            on,
            waited_us = waited.as_micros() as u64,
            took_us = t.elapsed().as_micros() as u64,
            "done"
        ),
        Err(e) => tracing::warn!(
            ?cmd,
            on,
            error = %e,
            kernel_says = detail.as_deref().unwrap_or("-"),
            "refused by the kernel"
        ),
    }
    (r, detail)
}

/// Runs [`PmCommand`]s in order; each answer goes back with the tag `T` the caller gave (who
/// to reply to). The caller's thread (the agent's loop, which was just woken by the event that
/// calls for them) runs them itself while the worker is idle, within [`InlineBudget`]; the
/// rest go to a worker thread with a socket of its own, so a burst never stalls the loop.
/// A thread hop costs a wake-up: on a loaded machine a promotion once waited 51.5 ms for the
/// worker, while the command itself takes 0.1-2.5 ms.
#[derive(Debug)]
pub struct UserspacePm<T: Send + 'static> {
    jobs: Option<std::sync::mpsc::Sender<(T, PmCommand, std::time::Instant)>>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// Commands handed to the worker and not answered yet.
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The caller's own socket, for the commands it runs itself.
    direct: GenlSocket<MptcpPm>,
    budget: InlineBudget,
    done: tokio::sync::mpsc::UnboundedSender<Done<T>>,
}

impl<T: Send + std::fmt::Debug + 'static> UserspacePm<T> {
    /// Opens the request sockets and starts the worker; answers go to `done`.
    pub fn start(done: tokio::sync::mpsc::UnboundedSender<Done<T>>) -> io::Result<Self> {
        let mut pm = GenlSocket::<MptcpPm>::open()?;
        let direct = GenlSocket::<MptcpPm>::open()?;
        let (tx, rx) = std::sync::mpsc::channel::<(T, PmCommand, std::time::Instant)>();
        let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let left = queued.clone();
        let answers = done.clone();
        let span = tracing::info_span!("mptcp-userspace");
        let worker = std::thread::Builder::new()
            .name("roamd-mptcp-pm".into())
            .spawn(move || {
                let _g = span.enter();
                while let Ok((tag, cmd, at)) = rx.recv() {
                    let (r, detail) = run_one(&mut pm, &cmd, at.elapsed(), "worker");
                    let sent = answers.send((tag, cmd, r, detail));
                    left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    if sent.is_err() {
                        return;
                    }
                }
            })?;
        Ok(UserspacePm {
            jobs: Some(tx),
            worker: Some(worker),
            queued,
            direct,
            budget: InlineBudget::new(),
            done,
        })
    }

    /// Carries out `cmd` now when the worker is idle and the budget allows, else queues it
    /// behind the worker's; its answer comes back with `tag` either way.
    pub fn submit(&mut self, tag: T, cmd: PmCommand) {
        let now = std::time::Instant::now();
        let queued = self.queued.load(std::sync::atomic::Ordering::Acquire);
        if self.budget.allows(now, queued) {
            let (r, detail) = run_one(&mut self.direct, &cmd, std::time::Duration::ZERO, "loop");
            self.budget.spend(now.elapsed());
            let _ = self.done.send((tag, cmd, r, detail));
            return;
        }
        if let Some(j) = &self.jobs {
            self.queued
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            if j.send((tag, cmd, now)).is_err() {
                self.queued
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
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
    let e = Event::parse(cmd, buf);
    let token = e.token?;
    let pair = || Some((e.local()?, e.remote()?));
    match e.kind {
        EventType::Created | EventType::Established if !e.server_side => {
            let (local, remote) = pair()?;
            Some(PmEvent::Connection {
                token,
                local,
                remote,
            })
        }
        EventType::Closed => Some(PmEvent::Closed { token }),
        EventType::SubEstablished | EventType::SubPriority => {
            let (local, remote) = pair()?;
            Some(PmEvent::SubflowUp {
                token,
                local,
                remote,
                backup: e.backup.unwrap_or(false),
            })
        }
        EventType::SubClosed => {
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

/// The events in the netlink messages of one datagram.
fn split_events(datagram: &[u8]) -> Vec<PmEvent> {
    Messages::new(datagram)
        .filter_map(|m| {
            let g = GenlMessage::parse(&m)?;
            parse_event(g.header.cmd, g.attrs)
        })
        .collect()
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
    use std::time::{Duration, Instant};

    /// The loop runs commands itself only while the worker is idle (order kept) and within
    /// its budget per window; a burst beyond it goes to the worker.
    #[test]
    fn the_loop_runs_commands_itself_only_while_the_worker_is_idle_and_within_budget() {
        let t0 = Instant::now();
        let mut b = InlineBudget::new();
        assert!(b.allows(t0, 0));
        assert!(
            !b.allows(t0, 1),
            "the worker holds commands: queue behind them"
        );
        b.spend(Duration::from_micros(1500));
        assert!(b.allows(t0 + Duration::from_millis(1), 0));
        b.spend(Duration::from_micros(600));
        assert!(
            !b.allows(t0 + Duration::from_millis(2), 0),
            "2.1 ms spent in this window"
        );
        // A new window, a new budget.
        assert!(b.allows(t0 + INLINE_WINDOW, 0));
        assert!(!b.allows(t0 + INLINE_WINDOW, 3));
    }

    use std::net::IpAddr;

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
        let r = Request::parse(c, &bytes);
        assert_eq!(r.cmd, Command::SubflowCreate);
        assert_eq!(r.token, Some(0xdead_beef));
        assert_eq!(
            r.addr,
            Some(Address {
                addr: Some("198.18.2.2".parse().unwrap()),
                id: Some(7),
                port: None,
                flags: Some(EndpointFlags::BACKUP),
                if_idx: Some(3),
            }),
            "port 0 is left out; the address id is a u8"
        );
        assert_eq!(
            r.remote,
            Some(Address::socket("198.19.0.1:4433".parse().unwrap()))
        );
        let (c, bytes) = PmCommand::Destroy {
            token: 1,
            local: "198.18.2.2:40000".parse().unwrap(),
            remote: "198.19.0.1:4433".parse().unwrap(),
        }
        .encode();
        let r = Request::parse(c, &bytes);
        assert_eq!(r.cmd, Command::SubflowDestroy);
        assert_eq!(r.addr.and_then(|a| a.port), Some(40000));
        assert_eq!(r.addr.and_then(|a| a.flags), None);
    }

    /// The events of one userspace-PM connection as Linux 6.18 sent them
    /// (`link/tests/data/events_userspace_pm.hex`): the client side's connection, its subflow
    /// from 198.18.1.1 coming up and closing, then the close.
    #[test]
    fn captured_kernel_events_become_pm_events() {
        let text = include_str!("../../../link/tests/data/events_userspace_pm.hex");
        let mut events = Vec::new();
        for line in text.lines().filter_map(|l| l.strip_prefix("< ")) {
            let bytes: Vec<u8> = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
                .collect();
            events.extend(split_events(&bytes));
        }
        let [
            PmEvent::Connection {
                token,
                local,
                remote,
            },
            PmEvent::Connection { .. },
            PmEvent::SubflowUp {
                local: sub,
                backup: false,
                ..
            },
            PmEvent::SubflowClosed { local: gone, .. },
            PmEvent::Closed { token: closed },
        ] = events[..]
        else {
            panic!("unexpected events: {events:?}");
        };
        assert_eq!(closed, token);
        assert_eq!(local.ip(), "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(remote, "198.18.0.254:4434".parse().unwrap());
        assert_eq!(sub.ip(), "198.18.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(gone, sub);
    }

    #[test]
    fn events_parse_with_ports_in_network_order() {
        use roam_link::netlink::attr::put;
        use roam_link::netlink::mptcp_pm::event_attr as ea;
        let mut b = Vec::new();
        put(&mut b, ea::TOKEN, &7u32.to_ne_bytes());
        put(&mut b, ea::SADDR4, &[198, 18, 1, 2]);
        put(&mut b, ea::DADDR4, &[198, 19, 0, 1]);
        put(&mut b, ea::SPORT, &40000u16.to_be_bytes());
        put(&mut b, ea::DPORT, &4433u16.to_be_bytes());
        put(&mut b, ea::BACKUP, &[1]);
        let sub_established = EventType::SubEstablished.into();
        assert_eq!(
            parse_event(sub_established, &b),
            Some(PmEvent::SubflowUp {
                token: 7,
                local: "198.18.1.2:40000".parse().unwrap(),
                remote: "198.19.0.1:4433".parse().unwrap(),
                backup: true
            })
        );
        let mut srv = b.clone();
        put(&mut srv, ea::SERVER_SIDE, &[1]);
        assert_eq!(parse_event(EventType::Established.into(), &srv), None);
        assert_eq!(
            parse_event(EventType::Closed.into(), &b),
            Some(PmEvent::Closed { token: 7 })
        );
        assert_eq!(parse_event(EventType::Other(99).into(), &b), None);
    }
}
