//! Per-connection MPTCP steering (userspace path manager).
//!
//! The kernel's events tell the core which connections and subflows exist; an app's
//! `register_mptcp` ties a connection to its subscription, hence to its decision. A connection
//! nobody registered is steered by its owner's uid ([`MptcpEvent::Owner`]): the decision of
//! the app the `[[app]]` map gives that uid (`uid:N`, the default block, when none), so an
//! unmodified program run with `roam run` is steered as an SDK session is. After every
//! event the core plans, for each registered connection: a subflow from every address of every
//! usable path of the decision (made ahead of time, `backup` on backup paths), the backup flag
//! of each subflow as its path's role says, and the closing of subflows on links that are no
//! longer usable or named. Promotions come out before closings: the surviving subflow carries
//! data at once (MP_PRIO), then the dead one goes, and its unacknowledged data is sent again on
//! the other (~3 ms measured here, against ~760 ms for the kernel's own stale detection).
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use roam_policy::Role;

use crate::link;
use crate::{Action, ClientId, Core, MptcpEvent, SubflowCommand};

/// How long a subflow creation may go unanswered by an event before it is tried again.
pub const CREATE_RETRY: Duration = Duration::from_secs(1);

/// Connections remembered from events, registered or not (an app registers after connecting).
pub const MAX_CONNECTIONS: usize = 4096;

/// One MPTCP connection the kernel told about.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conn {
    /// The subscribed client that registered it.
    pub(crate) client: Option<ClientId>,
    /// Its owner's app (from the owner's uid), steering it while no client registered it.
    pub(crate) owner_app: Option<String>,
    /// The peer of its first subflow: where new subflows go.
    pub(crate) remote: Option<SocketAddr>,
    /// The local address of its first subflow (address id 0).
    pub(crate) first_local: Option<IpAddr>,
    /// (local, remote) -> backup flag, for every established subflow.
    pub(crate) subflows: BTreeMap<(SocketAddr, SocketAddr), bool>,
    /// Local addresses a subflow was asked from, when, and with which backup flag: the
    /// kernel's events carry the peer's flag for a subflow this end opened, not ours.
    pub(crate) creating: BTreeMap<IpAddr, (Instant, bool)>,
    /// Subflows asked to close.
    pub(crate) destroying: BTreeSet<(SocketAddr, SocketAddr)>,
    /// The MPTCP address id each local address of ours was given, for the connection's life.
    pub(crate) ids: BTreeMap<IpAddr, u8>,
}

impl Conn {
    /// The address id for subflows from `addr`: the one it was given before, else the lowest
    /// unused one from 1 (0 is the initial subflow's). The kernel keeps one id per local
    /// address of a connection and refuses (`EINVAL`) a subflow whose address or id matches
    /// an entry but not both, so every address needs its own id, and the same one each time
    /// (an entry can outlive its subflow when the peer closed it). `None` when all 255 are
    /// taken.
    pub(crate) fn local_id(&mut self, addr: IpAddr) -> Option<u8> {
        if let Some(id) = self.ids.get(&addr) {
            return Some(*id);
        }
        let id = (1..=u8::MAX).find(|i| !self.ids.values().any(|v| v == i))?;
        self.ids.insert(addr, id);
        Some(id)
    }
}

/// What the core knows for steering.
#[derive(Debug)]
pub(crate) struct Steering {
    pub(crate) conns: BTreeMap<u32, Conn>,
    /// Whether the shell can set TCP options for one subflow, or why not.
    pub(crate) options: Result<(), String>,
}

impl Steering {
    pub(crate) fn conn(&mut self, token: u32) -> &mut Conn {
        if !self.conns.contains_key(&token) && self.conns.len() >= MAX_CONNECTIONS {
            // Forget an unregistered one first: nobody steers it.
            let victim = self
                .conns
                .iter()
                .find(|(_, c)| c.client.is_none())
                .or_else(|| self.conns.iter().next())
                .map(|(t, _)| *t);
            if let Some(t) = victim {
                self.conns.remove(&t);
            }
        }
        self.conns.entry(token).or_default()
    }
}

/// What one usable path of a decision offers a connection: local address, interface, role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Want {
    pub(crate) addr: IpAddr,
    pub(crate) index: u32,
    pub(crate) backup: bool,
}

/// Plans connection `token`: `wants` are the decision's usable paths (primary first); a
/// subflow from an address no want names is on a link the decision no longer uses.
pub(crate) fn plan(
    token: u32,
    conn: &mut Conn,
    wants: &[Want],
    now: Instant,
) -> Vec<SubflowCommand> {
    let Some(remote) = conn.remote else {
        return Vec::new();
    };
    let mut steps = Vec::new();
    let want_of = |ip: IpAddr| wants.iter().find(|w| w.addr == ip);
    // A creation asked for a path no longer wanted is forgotten, and one unanswered for
    // CREATE_RETRY is asked again below: nothing stays behind to wake the core for nothing.
    conn.creating.retain(|a, (t, _)| {
        want_of(*a).is_some() && now.saturating_duration_since(*t) < CREATE_RETRY
    });
    // Flags first.
    for ((l, r), backup) in conn.subflows.iter_mut() {
        if let Some(w) = want_of(l.ip())
            && w.backup != *backup
        {
            steps.push(SubflowCommand::SetBackup {
                token,
                local: *l,
                remote: *r,
                backup: w.backup,
            });
            *backup = w.backup;
        }
    }
    // Then subflows ahead of time on paths that have none.
    for w in wants
        .iter()
        .filter(|w| w.addr.is_ipv4() == remote.is_ipv4())
    {
        let have = conn.subflows.keys().any(|(l, _)| l.ip() == w.addr);
        if !have && !conn.creating.contains_key(&w.addr) {
            let Some(id) = conn.local_id(w.addr) else {
                tracing::warn!(addr = %w.addr, "no MPTCP address id left for this connection");
                continue;
            };
            conn.creating.insert(w.addr, (now, w.backup));
            steps.push(SubflowCommand::Create {
                token,
                local: SocketAddr::new(w.addr, 0),
                remote,
                backup: w.backup,
                index: w.index,
                id,
            });
        }
    }
    // Then the dead ones, but never the last subflow on a usable path's behalf: with nothing
    // else established, a dead subflow is all the connection has until a path returns.
    let survivors = conn
        .subflows
        .keys()
        .filter(|(l, _)| want_of(l.ip()).is_some())
        .count();
    if survivors > 0 {
        for k in conn.subflows.keys() {
            if want_of(k.0.ip()).is_none() && conn.destroying.insert(*k) {
                let destroy = SubflowCommand::Destroy {
                    token,
                    local: k.0,
                    remote: k.1,
                };
                // And the peer told (REMOVE_ADDR), so it stops sending on its side of the
                // dead subflow and sends its unacknowledged data again on the others at once.
                // The id the subflow's address was given: its own, when roamd (or an app)
                // joined one from it, which happens only once the initial subflow from that
                // address is gone (a returning link keeps its address); else 0 for the
                // initial subflow's address.
                let id = conn
                    .ids
                    .get(&k.0.ip())
                    .copied()
                    .or_else(|| (conn.first_local == Some(k.0.ip())).then_some(0));
                match id {
                    // The initial subflow's address: withdrawn after the close. The kernel
                    // sends the RM_ADDR on the first subflow that can still send, and the
                    // initial subflow heads the list: closed first, it is not that one (it
                    // stays listed, so the kernel still finds id 0).
                    Some(0) => steps.extend([destroy, SubflowCommand::RemoveAddr { token, id: 0 }]),
                    // A joined subflow's address: withdrawn before the close, which deletes
                    // the kernel's entry for the address (a REMOVE after it is refused:
                    // "address with specified id not found", and the peer never learns).
                    Some(id) => steps.extend([SubflowCommand::RemoveAddr { token, id }, destroy]),
                    None => steps.push(destroy),
                }
            }
        }
    }
    steps
}

/// When an unanswered subflow creation of a steered connection is due to be asked again.
pub(crate) fn next_retry(conn: &Conn) -> Option<Instant> {
    conn.creating.values().map(|(t, _)| *t + CREATE_RETRY).min()
}

impl Core {
    /// Turns per-connection MPTCP steering on (the userspace path manager runs): registered
    /// connections get subflows on their decision's paths, and the backup is promoted and the
    /// dead subflow closed when a path fails ([`Action::Subflow`]). `subflow_options` says
    /// whether apps may give TCP options for one subflow (`Err`: why not, told to the app).
    pub fn enable_steering(&mut self, subflow_options: Result<(), String>) {
        self.steering = Some(Steering {
            conns: BTreeMap::new(),
            options: subflow_options,
        });
    }

    /// Whether the kernel told about a client-side MPTCP connection with this token, and the
    /// subflows it has: `(local, remote)` pairs.
    pub fn mptcp_subflows(&self, token: u32) -> Option<Vec<(SocketAddr, SocketAddr)>> {
        let c = self.steering.as_ref()?.conns.get(&token)?;
        Some(c.subflows.keys().copied().collect())
    }

    /// The MPTCP address id for a subflow of connection `token` from `local` (an app's own
    /// `mptcp_subflow_create`): the same allocation as roamd's own subflows, so the two never
    /// collide. `None` for an unknown connection or when its ids are exhausted.
    pub(crate) fn mptcp_local_id(&mut self, token: u32, local: IpAddr) -> Option<u8> {
        self.steering
            .as_mut()?
            .conns
            .get_mut(&token)?
            .local_id(local)
    }

    pub(crate) fn plan_steering(&mut self, now: Instant) {
        let Some(st) = &mut self.steering else { return };
        // Owners' decisions, once per app; only when a connection has an owner and no
        // registrant (the interfaces cost a walk of the links).
        let mut owned: BTreeMap<String, roam_policy::Decision> = BTreeMap::new();
        for conn in st.conns.values() {
            if let Some(app) = &conn.owner_app
                && conn.client.is_none()
                && !owned.contains_key(app)
            {
                let interfaces: Vec<_> = self.links.values().map(|l| l.interface(now)).collect();
                let d = self.policy.evaluate(&roam_policy::State {
                    app: Some(app.clone()),
                    flow: None,
                    interfaces,
                });
                owned.insert(app.clone(), d);
            }
        }
        for (&token, conn) in st.conns.iter_mut() {
            let registered = conn
                .client
                .and_then(|c| self.clients.subs.get(&c))
                .and_then(|c| c.last.as_deref());
            let by_owner = || {
                conn.client
                    .is_none()
                    .then(|| conn.owner_app.as_ref().and_then(|a| owned.get(a)))
                    .flatten()
            };
            let Some(decision) = registered.or_else(by_owner).cloned() else {
                // Nobody steers it: no creation of ours is waiting for an answer.
                conn.creating.clear();
                continue;
            };
            let mut wants = Vec::new();
            for path in &decision.paths {
                let Some((index, link)) = link::named(&self.links, &path.interface) else {
                    continue;
                };
                if !link.state.is_usable() {
                    continue;
                }
                for a in link.usable_addrs() {
                    wants.push(Want {
                        addr: a,
                        index,
                        backup: path.role == Role::Backup,
                    });
                }
            }
            for command in plan(token, conn, &wants, now) {
                tracing::info!(token, ?command, "steering");
                self.actions.push_back(Action::Subflow {
                    command,
                    requested: None,
                });
            }
        }
    }

    /// Takes in what the kernel said about MPTCP connections and subflows.
    pub(crate) fn apply_mptcp_event(&mut self, event: MptcpEvent) {
        let Some(st) = &mut self.steering else { return };
        match event {
            MptcpEvent::Connection {
                token,
                local,
                remote,
            } => {
                let c = st.conn(token);
                c.remote = Some(remote);
                c.first_local = Some(local.ip());
                // CREATED then ESTABLISHED name the same first subflow.
                c.subflows.entry((local, remote)).or_insert(false);
            }
            MptcpEvent::Closed { token } => {
                st.conns.remove(&token);
            }
            MptcpEvent::Owner { token, uid } => {
                if let Some(c) = st.conns.get_mut(&token) {
                    c.owner_app = Some(crate::apps::app_of(&self.apps, uid));
                }
            }
            MptcpEvent::SubflowUp {
                token,
                local,
                remote,
                backup,
            } => {
                if let Some(c) = st.conns.get_mut(&token) {
                    // The event's flag is the peer's (MP_JOIN's answer, or its MP_PRIO): ours
                    // is the one we asked for, and stays what we last set.
                    let asked = c.creating.remove(&local.ip()).map(|(_, b)| b);
                    c.subflows
                        .entry((local, remote))
                        .or_insert(asked.unwrap_or(backup));
                }
            }
            MptcpEvent::SubflowClosed {
                token,
                local,
                remote,
            } => {
                if let Some(c) = st.conns.get_mut(&token) {
                    c.subflows.remove(&(local, remote));
                    c.destroying.remove(&(local, remote));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_local_address_keeps_its_own_nonzero_id() {
        let mut c = Conn::default();
        let a: IpAddr = "198.18.2.2".parse().unwrap();
        let b: IpAddr = "198.18.3.2".parse().unwrap();
        let v6: IpAddr = "2001:db8:0:3::2".parse().unwrap();
        let (ia, ib, i6) = (c.local_id(a), c.local_id(b), c.local_id(v6));
        assert_eq!((ia, ib, i6), (Some(1), Some(2), Some(3)));
        // The same address asks again (a subflow re-created after its link returned).
        assert_eq!(c.local_id(b), Some(2));
        assert_eq!(c.local_id(a), Some(1));
    }

    #[test]
    fn ids_run_out_after_255_addresses_without_wrapping_to_zero() {
        let mut c = Conn::default();
        for i in 0..255u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i));
            assert_eq!(c.local_id(ip), Some((i + 1) as u8));
        }
        assert_eq!(c.local_id("198.19.9.9".parse().unwrap()), None);
    }

    /// The peer is told of every dead subflow's address in an order the kernel accepts: the
    /// initial subflow's (id 0) after its close, a joined one's before (the close deletes the
    /// kernel's entry for the address).
    #[test]
    fn a_dead_subflows_address_is_withdrawn_in_the_order_the_kernel_accepts() {
        let remote: SocketAddr = "198.19.0.1:4433".parse().unwrap();
        let wlan: IpAddr = "198.18.2.2".parse().unwrap();
        let rmnet: IpAddr = "198.18.3.2".parse().unwrap();
        let (first, joined) = (SocketAddr::new(wlan, 40000), SocketAddr::new(wlan, 40002));
        let cell = SocketAddr::new(rmnet, 40001);
        let mut c = Conn {
            remote: Some(remote),
            first_local: Some(wlan),
            ..Conn::default()
        };
        c.local_id(rmnet);
        c.subflows.insert((first, remote), false);
        c.subflows.insert((cell, remote), true);
        let t0 = Instant::now();
        let only_cell = [Want {
            addr: rmnet,
            index: 3,
            backup: false,
        }];
        let steps = plan(7, &mut c, &only_cell, t0);
        assert_eq!(
            steps,
            [
                SubflowCommand::SetBackup {
                    token: 7,
                    local: cell,
                    remote,
                    backup: false
                },
                SubflowCommand::Destroy {
                    token: 7,
                    local: first,
                    remote
                },
                SubflowCommand::RemoveAddr { token: 7, id: 0 },
            ]
        );
        // WiFi returned with the same address: roamd joined a subflow from it (an id of its
        // own, not the initial subflow's 0), and it dies again.
        c.subflows.remove(&(first, remote));
        c.destroying.clear();
        let id = c.local_id(wlan).unwrap();
        assert_ne!(id, 0);
        c.subflows.insert((joined, remote), false);
        let steps = plan(7, &mut c, &only_cell, t0);
        assert_eq!(
            steps,
            [
                SubflowCommand::RemoveAddr { token: 7, id },
                SubflowCommand::Destroy {
                    token: 7,
                    local: joined,
                    remote
                },
            ]
        );
    }

    #[test]
    fn a_path_that_returns_is_created_again_with_its_first_id() {
        let remote: SocketAddr = "198.19.0.1:4433".parse().unwrap();
        let wlan: IpAddr = "198.18.2.2".parse().unwrap();
        let rmnet: IpAddr = "198.18.3.2".parse().unwrap();
        let mut c = Conn {
            remote: Some(remote),
            ..Conn::default()
        };
        // The initial subflow on wlan0 (id 0, the kernel's), rmnet0 wanted as backup.
        c.subflows
            .insert((SocketAddr::new(wlan, 40000), remote), false);
        let t0 = Instant::now();
        let wants = |w: bool| {
            let mut v = Vec::new();
            if w {
                v.push(Want {
                    addr: wlan,
                    index: 2,
                    backup: false,
                });
            }
            v.push(Want {
                addr: rmnet,
                index: 3,
                backup: !w,
            });
            v
        };
        let ids = |steps: &[SubflowCommand]| -> Vec<(IpAddr, u8)> {
            steps
                .iter()
                .filter_map(|s| match s {
                    SubflowCommand::Create { local, id, .. } => Some((local.ip(), *id)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(ids(&plan(7, &mut c, &wants(true), t0)), [(rmnet, 1)]);
        c.creating.clear();
        c.subflows
            .insert((SocketAddr::new(rmnet, 40001), remote), true);
        // wlan0 goes: its subflow is closed; it returns: a new subflow from it, not id 1.
        plan(7, &mut c, &wants(false), t0);
        c.subflows.remove(&(SocketAddr::new(wlan, 40000), remote));
        assert_eq!(ids(&plan(7, &mut c, &wants(true), t0)), [(wlan, 2)]);
        c.creating.clear();
        // And again after a second flap: the same id as the first time.
        assert_eq!(
            ids(&plan(7, &mut c, &wants(true), t0 + CREATE_RETRY)),
            [(wlan, 2)]
        );
    }
}
