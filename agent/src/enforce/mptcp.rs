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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::core::{MptcpEndpoint, MptcpPlan};
use crate::genl::{Family, GenlSocket, NLA_F_NESTED, attrs, put};

/// The first endpoint id roamd uses.
pub const ID_FIRST: u8 = 200;
/// The last endpoint id roamd uses.
pub const ID_LAST: u8 = 254;

const CMD_ADD_ADDR: u8 = 1;
const CMD_DEL_ADDR: u8 = 2;
const CMD_GET_ADDR: u8 = 3;
const CMD_SET_FLAGS: u8 = 7;
const ATTR_ADDR: u16 = 1;
const ADDR_FAMILY: u16 = 1;
const ADDR_ID: u16 = 2;
const ADDR_ADDR4: u16 = 3;
const ADDR_ADDR6: u16 = 4;
const ADDR_FLAGS: u16 = 6;
const ADDR_IF_IDX: u16 = 7;

/// `subflow`: the kernel opens an extra subflow from this address.
pub const FLAG_SUBFLOW: u32 = 1 << 1;
/// `backup`: subflows from this address carry data only when no other can.
pub const FLAG_BACKUP: u32 = 1 << 2;

/// One endpoint as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelEndpoint {
    /// Endpoint id.
    pub id: u8,
    /// Local address.
    pub addr: IpAddr,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Interface index, 0 when none was given.
    pub index: i32,
}

impl fmt::Display for KernelEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} id {}", self.addr, self.id)?;
        if self.flags & FLAG_SUBFLOW != 0 {
            f.write_str(" subflow")?;
        }
        if self.flags & FLAG_BACKUP != 0 {
            f.write_str(" backup")?;
        }
        write!(f, " dev #{}", self.index)
    }
}

/// The `mptcp_pm` generic netlink family.
#[derive(Debug)]
pub(crate) struct MptcpPm;

impl Family for MptcpPm {
    const NAME: &'static str = "mptcp_pm";
    const VERSION: u8 = 1;
}

/// Appends an address's family and address attributes (inside a nested `MPTCP_PM_ATTR_ADDR`).
pub(crate) fn put_ip(inner: &mut Vec<u8>, a: IpAddr) {
    let (family, kind, octets) = match a {
        IpAddr::V4(v4) => (libc::AF_INET, ADDR_ADDR4, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6, ADDR_ADDR6, v6.octets().to_vec()),
    };
    put(inner, ADDR_FAMILY, &(family as u16).to_ne_bytes());
    put(inner, kind, &octets);
}

/// The nested `MPTCP_PM_ATTR_ADDR` for an endpoint.
fn addr_attr(id: u8, addr: Option<IpAddr>, flags: Option<u32>, index: Option<i32>) -> Vec<u8> {
    let mut inner = Vec::new();
    put(&mut inner, ADDR_ID, &[id]);
    if let Some(a) = addr {
        put_ip(&mut inner, a);
    }
    if let Some(f) = flags {
        put(&mut inner, ADDR_FLAGS, &f.to_ne_bytes());
    }
    if let Some(i) = index {
        put(&mut inner, ADDR_IF_IDX, &i.to_ne_bytes());
    }
    let mut out = Vec::new();
    put(&mut out, ATTR_ADDR | NLA_F_NESTED, &inner);
    out
}

/// Parses one endpoint from a `GET_ADDR` reply's attributes.
fn parse_endpoint(buf: &[u8]) -> Option<KernelEndpoint> {
    let (_, nested) = attrs(buf).into_iter().find(|(k, _)| *k == ATTR_ADDR)?;
    let mut ep = KernelEndpoint {
        id: 0,
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        flags: 0,
        index: 0,
    };
    let mut have_addr = false;
    for (k, v) in attrs(nested) {
        match (k, v.len()) {
            (ADDR_ID, 1) => ep.id = v[0],
            (ADDR_ADDR4, 4) => {
                ep.addr = IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]));
                have_addr = true;
            }
            (ADDR_ADDR6, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(v);
                ep.addr = IpAddr::V6(Ipv6Addr::from(o));
                have_addr = true;
            }
            (ADDR_FLAGS, 4) => ep.flags = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
            (ADDR_IF_IDX, 4) => ep.index = i32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
            _ => {}
        }
    }
    have_addr.then_some(ep)
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

    fn request(&mut self, cmd: u8, attrs: Vec<u8>) -> io::Result<()> {
        self.0.request(cmd, attrs)
    }

    /// Every endpoint in the kernel (`ip mptcp endpoint show`).
    fn endpoints(&mut self) -> io::Result<Vec<KernelEndpoint>> {
        Ok(self
            .0
            .query(CMD_GET_ADDR, Vec::new(), true)?
            .iter()
            .filter_map(|a| parse_endpoint(a))
            .collect())
    }

    fn add(&mut self, id: u8, addr: IpAddr, flags: u32, index: i32) -> io::Result<()> {
        self.request(
            CMD_ADD_ADDR,
            addr_attr(id, Some(addr), Some(flags), Some(index)),
        )
    }

    fn del(&mut self, id: u8) -> io::Result<()> {
        self.request(CMD_DEL_ADDR, addr_attr(id, None, None, None))
    }

    fn set_backup(&mut self, id: u8, addr: IpAddr, backup: bool) -> io::Result<()> {
        let flags = if backup { FLAG_BACKUP } else { 0 };
        self.request(CMD_SET_FLAGS, addr_attr(id, Some(addr), Some(flags), None))
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
            let flags = FLAG_SUBFLOW | if ep.backup { FLAG_BACKUP } else { 0 };
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
    fn endpoint_attributes_round_trip() {
        let a: IpAddr = "198.18.2.2".parse().unwrap();
        let bytes = addr_attr(201, Some(a), Some(FLAG_SUBFLOW | FLAG_BACKUP), Some(3));
        assert_eq!(bytes.len() % 4, 0);
        let ep = parse_endpoint(&bytes).unwrap();
        assert_eq!(
            ep,
            KernelEndpoint {
                id: 201,
                addr: a,
                flags: FLAG_SUBFLOW | FLAG_BACKUP,
                index: 3
            }
        );
        assert_eq!(ep.to_string(), "198.18.2.2 id 201 subflow backup dev #3");
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        let ep = parse_endpoint(&addr_attr(7, Some(v6), None, None)).unwrap();
        assert_eq!((ep.id, ep.addr, ep.flags), (7, v6, 0));
        assert_eq!(parse_endpoint(&addr_attr(7, None, None, None)), None);
        assert_eq!(parse_endpoint(&[1, 2, 3]), None);
    }
}
