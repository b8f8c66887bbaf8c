//! The in-kernel MPTCP path manager's endpoints, through generic netlink (`mptcp_pm`), never by
//! running `ip mptcp`.
//!
//! The device-wide default decision becomes the endpoint table: every address of every path
//! gets a `subflow` endpoint, `backup` when the path is a backup. When the decision changes the
//! agent acts at once, because the kernel does not (a stream stalled ~760 ms on its own here):
//! a promoted path's endpoint loses `backup` (the kernel sends MP_PRIO on its subflows), and a
//! dead path's endpoint is deleted (the kernel closes the subflows that use it).
//!
//! roamd only uses endpoint ids [`ID_FIRST`]..=[`ID_LAST`], so cleanup (on exit, and at start
//! after a crash) removes exactly what it added and never an endpoint someone else made.
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;

use roam_link::netlink::mptcp_pm::{self, Address, Command, EndpointFlags, Request};

use crate::core::{MptcpEndpoint, MptcpPlan};
use crate::genl::{Family, GenlSocket};

/// The first endpoint id roamd uses.
pub const ID_FIRST: u8 = 200;
/// The last endpoint id roamd uses.
pub const ID_LAST: u8 = 254;

/// One endpoint as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelEndpoint {
    /// Endpoint id.
    pub id: u8,
    /// Local address.
    pub addr: IpAddr,
    /// Its flags (`subflow`, `backup`, ...).
    pub flags: EndpointFlags,
    /// Interface index, 0 when none was given.
    pub index: i32,
}

impl fmt::Display for KernelEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} id {}", self.addr, self.id)?;
        if self.flags.contains(EndpointFlags::SUBFLOW) {
            f.write_str(" subflow")?;
        }
        if self.flags.contains(EndpointFlags::BACKUP) {
            f.write_str(" backup")?;
        }
        write!(f, " dev #{}", self.index)
    }
}

/// The `mptcp_pm` generic netlink family.
#[derive(Debug)]
pub(crate) struct MptcpPm;

impl Family for MptcpPm {
    const NAME: &'static str = mptcp_pm::FAMILY_NAME;
    const VERSION: u8 = mptcp_pm::VERSION;
}

/// A request about endpoint `id`.
fn endpoint_request(
    cmd: Command,
    id: u8,
    addr: Option<IpAddr>,
    flags: Option<EndpointFlags>,
    index: Option<i32>,
) -> Request {
    Request {
        addr: Some(Address {
            addr,
            id: Some(id),
            flags,
            if_idx: index,
            port: None,
        }),
        ..Request::new(cmd)
    }
}

/// Parses one endpoint from a `GET_ADDR` reply's attributes.
fn parse_endpoint(buf: &[u8]) -> Option<KernelEndpoint> {
    let a = Request::parse(Command::GetAddr.into(), buf).addr?;
    Some(KernelEndpoint {
        id: a.id.unwrap_or(0),
        addr: a.addr?,
        flags: a.flags.unwrap_or_default(),
        index: a.if_idx.unwrap_or(0),
    })
}

/// The `mptcp_pm` requests roamd makes.
#[derive(Debug)]
struct PmSocket(GenlSocket<MptcpPm>);

impl PmSocket {
    fn open() -> io::Result<PmSocket> {
        GenlSocket::open().map(PmSocket).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{e}; is MPTCP built in and net.mptcp.enabled=1?"),
            )
        })
    }

    fn send(&mut self, r: Request) -> io::Result<()> {
        self.0.request(r.cmd.into(), r.attrs())
    }

    /// Every endpoint in the kernel (`ip mptcp endpoint show`).
    fn endpoints(&mut self) -> io::Result<Vec<KernelEndpoint>> {
        Ok(self
            .0
            .query(Command::GetAddr.into(), Vec::new(), true)?
            .iter()
            .filter_map(|a| parse_endpoint(a))
            .collect())
    }

    fn add(&mut self, id: u8, addr: IpAddr, flags: EndpointFlags, index: i32) -> io::Result<()> {
        self.send(endpoint_request(
            Command::AddAddr,
            id,
            Some(addr),
            Some(flags),
            Some(index),
        ))
    }

    fn del(&mut self, id: u8) -> io::Result<()> {
        self.send(endpoint_request(Command::DelAddr, id, None, None, None))
    }

    fn set_backup(&mut self, id: u8, addr: IpAddr, backup: bool) -> io::Result<()> {
        let flags = EndpointFlags::backup_if(backup);
        self.send(endpoint_request(
            Command::SetFlags,
            id,
            Some(addr),
            Some(flags),
            None,
        ))
    }
}

/// The endpoint table roamd keeps: what it added, by address.
#[derive(Debug)]
struct Endpoints {
    pm: PmSocket,
    /// address -> (id, backup) for every endpoint roamd added.
    installed: BTreeMap<IpAddr, (u8, bool)>,
}

impl Endpoints {
    /// Brings the endpoints to `plan`, in the order that matters on a failure: backup flags
    /// first (the surviving path carries data at once; the dying one is flagged backup so the
    /// scheduler leaves it), then new endpoints, then deletions (the kernel closes the dead
    /// path's subflows; this is the slow part, ~15 ms each here).
    fn apply(&mut self, plan: &MptcpPlan) {
        let flips: Vec<(IpAddr, u8, bool)> = self
            .installed
            .iter()
            .filter_map(|(a, &(id, backup))| {
                let want = plan.endpoints.get(a).is_none_or(|e| e.backup);
                (want != backup).then_some((*a, id, want))
            })
            .collect();
        for (addr, id, backup) in flips {
            match self.pm.set_backup(id, addr, backup) {
                Ok(()) => {
                    tracing::info!(%addr, id, backup, "endpoint priority changed");
                    self.installed.insert(addr, (id, backup));
                }
                Err(e) => tracing::warn!(%addr, id, error = %e, "endpoint priority not changed"),
            }
        }
        let new: Vec<(IpAddr, MptcpEndpoint)> = plan
            .endpoints
            .iter()
            .filter(|(a, _)| !self.installed.contains_key(*a))
            .map(|(a, e)| (*a, *e))
            .collect();
        for (addr, ep) in new {
            let used = |i: &u8| self.installed.values().any(|(u, _)| u == i);
            let Some(id) = (ID_FIRST..=ID_LAST).find(|i| !used(i)) else {
                tracing::warn!(%addr, "no free endpoint id left in {ID_FIRST}..={ID_LAST}");
                break;
            };
            let flags = EndpointFlags::SUBFLOW | EndpointFlags::backup_if(ep.backup);
            match self
                .pm
                .add(id, addr, flags, i32::try_from(ep.index).unwrap_or(0))
            {
                Ok(()) => {
                    tracing::info!(%addr, id, backup = ep.backup, "endpoint added");
                    self.installed.insert(addr, (id, ep.backup));
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    tracing::info!(%addr, "an endpoint for this address exists that roamd did not add; left alone");
                }
                Err(e) => tracing::warn!(%addr, id, error = %e, "endpoint not added"),
            }
        }
        let gone: Vec<(IpAddr, u8)> = self
            .installed
            .iter()
            .filter(|(a, _)| !plan.endpoints.contains_key(*a))
            .map(|(a, (id, _))| (*a, *id))
            .collect();
        for (addr, id) in gone {
            match self.pm.del(id) {
                Ok(()) => tracing::info!(%addr, id, "endpoint removed"),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => tracing::warn!(%addr, id, error = %e, "endpoint not removed"),
            }
            self.installed.remove(&addr);
        }
    }
}

/// Keeps the kernel's endpoints as planned, from a thread of its own.
///
/// Generic netlink serialises every `mptcp_pm` request behind one kernel lock, and deleting an
/// endpoint holds it ~15 ms here (an RCU grace period inside the request). Done on the agent's
/// loop, that would delay every decision behind it; so the loop only hands plans over (the
/// latest wins when several queue up) and a worker thread with its own socket applies them.
#[derive(Debug)]
pub struct MptcpEnforcer {
    pm: Option<PmSocket>,
    worker: Option<(
        std::sync::mpsc::Sender<MptcpPlan>,
        std::thread::JoinHandle<()>,
    )>,
}

impl MptcpEnforcer {
    /// Opens the socket and resolves the `mptcp_pm` family. Fails when the kernel has no MPTCP.
    pub fn open() -> io::Result<MptcpEnforcer> {
        Ok(MptcpEnforcer {
            pm: Some(PmSocket::open()?),
            worker: None,
        })
    }

    /// Endpoints with roamd's ids (left by a roamd that did not stop cleanly).
    pub fn stale(&mut self) -> io::Result<Vec<KernelEndpoint>> {
        let Some(pm) = &mut self.pm else {
            return Ok(Vec::new());
        };
        Ok(pm
            .endpoints()?
            .into_iter()
            .filter(|e| (ID_FIRST..=ID_LAST).contains(&e.id))
            .collect())
    }

    /// Deletes every endpoint with roamd's ids, synchronously (at start, before the worker).
    /// Returns how many.
    pub fn remove_stale(&mut self) -> io::Result<usize> {
        let stale = self.stale()?;
        if let Some(pm) = &mut self.pm {
            for e in &stale {
                if let Err(err) = pm.del(e.id) {
                    tracing::warn!(endpoint = %e, error = %err, "could not remove a stale endpoint");
                }
            }
        }
        Ok(stale.len())
    }

    /// Hands `plan` to the worker (started on first use).
    pub fn apply(&mut self, plan: &MptcpPlan) {
        if self.worker.is_none()
            && let Some(pm) = self.pm.take()
        {
            let (tx, rx) = std::sync::mpsc::channel::<MptcpPlan>();
            let span = tracing::info_span!("mptcp");
            let spawned = std::thread::Builder::new()
                .name("roamd-mptcp".into())
                .spawn(move || {
                    let _g = span.enter();
                    let mut eps = Endpoints {
                        pm,
                        installed: BTreeMap::new(),
                    };
                    while let Ok(mut plan) = rx.recv() {
                        // Only the latest plan matters: skip the ones it replaced.
                        while let Ok(newer) = rx.try_recv() {
                            plan = newer;
                        }
                        eps.apply(&plan);
                    }
                    // The agent is stopping: remove everything roamd added.
                    eps.apply(&MptcpPlan::default());
                });
            match spawned {
                Ok(handle) => self.worker = Some((tx, handle)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the MPTCP worker; endpoints are not managed")
                }
            }
        }
        if let Some((tx, _)) = &self.worker {
            let _ = tx.send(plan.clone());
        }
    }

    /// Removes every endpoint roamd added and waits until that is done (on exit).
    pub fn clear(&mut self) {
        if let Some((tx, handle)) = self.worker.take() {
            drop(tx);
            if handle.join().is_err() {
                tracing::error!(
                    "the MPTCP worker panicked; endpoints may be left (the next start removes them)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_requests_read_back_as_endpoints() {
        let a: IpAddr = "198.18.2.2".parse().unwrap();
        let flags = EndpointFlags::SUBFLOW | EndpointFlags::BACKUP;
        let r = endpoint_request(Command::AddAddr, 201, Some(a), Some(flags), Some(3));
        let ep = parse_endpoint(&r.attrs()).unwrap();
        assert_eq!(
            ep,
            KernelEndpoint {
                id: 201,
                addr: a,
                flags,
                index: 3
            }
        );
        assert_eq!(ep.to_string(), "198.18.2.2 id 201 subflow backup dev #3");
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        let r = endpoint_request(Command::SetFlags, 7, Some(v6), None, None);
        let ep = parse_endpoint(&r.attrs()).unwrap();
        assert_eq!((ep.id, ep.addr, ep.flags), (7, v6, EndpointFlags::NONE));
        let r = endpoint_request(Command::DelAddr, 7, None, None, None);
        assert_eq!(parse_endpoint(&r.attrs()), None, "no address");
        assert_eq!(parse_endpoint(&[1, 2, 3]), None);
    }
}
