//! Per-connection MPTCP steering for registered connections (userspace path manager).
//!
//! The kernel's events tell the core which connections and subflows exist; an app's
//! `register_mptcp` ties a connection to its subscription, hence to its decision. After every
//! event the core plans, for each registered connection: a subflow from every address of every
//! usable path of the decision (made ahead of time, `backup` on backup paths), the backup flag
//! of each subflow as its path's role says, and the closing of subflows on links that are no
//! longer usable or named. Promotions come out before closings: the surviving subflow carries
//! data at once (MP_PRIO), then the dead one goes, and its unacknowledged data is sent again on
//! the other (~3 ms measured here, against ~760 ms for the kernel's own stale detection).
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::ClientId;

/// How long a subflow creation may go unanswered by an event before it is tried again.
pub const CREATE_RETRY: Duration = Duration::from_secs(1);

/// Connections remembered from events, registered or not (an app registers after connecting).
pub const MAX_CONNECTIONS: usize = 4096;

/// One MPTCP connection the kernel told about.
#[derive(Debug, Clone, Default)]
pub(super) struct Conn {
    /// The subscribed client that registered it.
    pub(super) client: Option<ClientId>,
    /// The peer of its first subflow: where new subflows go.
    pub(super) remote: Option<SocketAddr>,
    /// (local, remote) -> backup flag, for every established subflow.
    pub(super) subflows: BTreeMap<(SocketAddr, SocketAddr), bool>,
    /// Local addresses a subflow was asked from, when, and with which backup flag: the
    /// kernel's events carry the peer's flag for a subflow this end opened, not ours.
    pub(super) creating: BTreeMap<IpAddr, (Instant, bool)>,
    /// Subflows asked to close.
    pub(super) destroying: BTreeSet<(SocketAddr, SocketAddr)>,
}

/// What the core knows for steering.
#[derive(Debug, Default)]
pub(super) struct Steering {
    pub(super) conns: BTreeMap<u32, Conn>,
}

impl Steering {
    pub(super) fn conn(&mut self, token: u32) -> &mut Conn {
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
pub(super) struct Want {
    pub(super) addr: IpAddr,
    pub(super) index: u32,
    pub(super) backup: bool,
}

/// A steering step, before it becomes an [`super::Action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Promote {
        local: SocketAddr,
        remote: SocketAddr,
        backup: bool,
    },
    Create {
        local: SocketAddr,
        remote: SocketAddr,
        backup: bool,
        index: u32,
    },
    Destroy {
        local: SocketAddr,
        remote: SocketAddr,
    },
}

/// Plans one connection: `wants` are the decision's usable paths (primary first), `alive`
/// tells whether a local address is on a link the decision still names as usable.
pub(super) fn plan(conn: &mut Conn, wants: &[Want], now: Instant) -> Vec<Step> {
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
            steps.push(Step::Promote {
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
            conn.creating.insert(w.addr, (now, w.backup));
            steps.push(Step::Create {
                local: SocketAddr::new(w.addr, 0),
                remote,
                backup: w.backup,
                index: w.index,
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
                steps.push(Step::Destroy {
                    local: k.0,
                    remote: k.1,
                });
            }
        }
    }
    steps
}

/// When an unanswered subflow creation of a steered connection is due to be asked again.
pub(super) fn next_retry(conn: &Conn) -> Option<Instant> {
    conn.creating.values().map(|(t, _)| *t + CREATE_RETRY).min()
}
