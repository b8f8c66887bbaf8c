//! The embedded link monitor's link table: roam-link's route-socket events in, the policy's
//! interfaces and the sessions' link views out.
//!
//! Everything here is roam-link's: the route socket (`roam_link::socket`), the classifier
//! (with sysfs facts, as roamd classifies), the usable-address rule and the link table with
//! its up times. A link usable when the monitor starts counts as up since an unknown, long
//! time, as on Android (`roam_link::table` says why). The SDK has no netlink code of its own.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use roam_link::rtnl::LinkEvent;
use roam_link::{LinkTable, SysfsFacts};
use roam_policy::Interface;

use crate::decision::LinkView;

/// The paths the session code has always used.
pub mod links {
    pub use roam_link::kind_from_name;
}

/// The paths the session code has always used.
pub mod netlink {
    pub use roam_link::socket::{fib_route, if_nametoindex};
}

/// Every interface of the app's network namespace, as the embedded monitor sees it.
#[derive(Debug, Clone)]
pub struct Links {
    table: LinkTable<u32>,
    sysfs: PathBuf,
}

impl Default for Links {
    fn default() -> Self {
        Links::new()
    }
}

impl Links {
    /// An empty table, starting, classifying with the facts in `/sys/class/net`.
    pub fn new() -> Links {
        Links::with_sysfs(roam_link::socket::SYSFS_NET.into())
    }

    /// An empty table, starting, classifying with the sysfs facts below `root` (a directory
    /// laid out like `/sys/class/net`).
    pub fn with_sysfs(root: PathBuf) -> Links {
        Links {
            table: LinkTable::new(),
            sysfs: root,
        }
    }

    /// Applies one event from the route socket at `now`; true when the table changed.
    pub fn apply(&mut self, event: &LinkEvent, now: Instant) -> bool {
        let sysfs = &self.sysfs;
        self.table.apply(event, now, |l| {
            let facts = SysfsFacts::read(sysfs, &l.name);
            roam_link::classify(&l.name, &facts, l.info_kind.as_deref(), &[])
        })
    }

    /// Ends start-up (call after the first dump): links that become usable from now on count
    /// from that moment.
    pub fn started(&mut self) {
        self.table.started();
    }

    /// Starts a re-dump after lost notifications ([`LinkTable::begin_resync`]).
    pub fn begin_resync(&mut self) {
        self.table.begin_resync();
    }

    /// Ends a re-dump at `now` ([`LinkTable::end_resync`]).
    pub fn end_resync(&mut self, now: Instant) {
        self.table.end_resync(now);
    }

    /// The policy's view at `now`: every interface but loopback, `up` or `down`.
    pub fn interfaces(&self, now: Instant) -> Vec<Interface> {
        self.table.interfaces(now)
    }

    /// The sessions' view: every interface but loopback with its usable addresses.
    pub fn views(&self) -> Vec<LinkView> {
        self.table
            .iter()
            .map(|(_, l)| l)
            .filter(|l| !l.facts().loopback)
            .map(|l| LinkView {
                name: l.name().to_owned(),
                kind: l.kind(),
                state: l.state(),
                addrs: l.usable_addrs(),
            })
            .collect()
    }

    /// The usable addresses of the interface named `name` (none when unknown).
    pub fn usable_addrs(&self, name: &str) -> Vec<IpAddr> {
        self.table
            .by_name(name)
            .map(|l| l.usable_addrs())
            .unwrap_or_default()
    }

    /// The earliest moment after `now` at which a usable link's up time crosses one of
    /// `holds`.
    pub fn next_hold(&self, now: Instant, holds: &[Duration]) -> Option<Instant> {
        self.table.next_hold(now, holds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_link::AddrFacts;
    use roam_link::rtnl::{emit, parse_datagram};
    use roam_policy::{LinkKind, LinkState};

    fn feed(links: &mut Links, msgs: Vec<Vec<u8>>, now: Instant) -> bool {
        let (events, _) = parse_datagram(&msgs.concat(), None).unwrap();
        let mut changed = false;
        for e in &events {
            changed |= links.apply(e, now);
        }
        changed
    }

    #[test]
    fn usable_with_carrier_and_a_usable_address_and_up_since_start() {
        let t0 = Instant::now();
        let mut l = Links::with_sysfs(PathBuf::from("/nonexistent"));
        let v4 = AddrFacts::plain("198.18.0.2".parse().unwrap(), 24);
        assert!(feed(
            &mut l,
            vec![
                emit::bytes(emit::link(3, "wlan0", true, true, None), 0),
                emit::bytes(emit::address(3, v4, true), 0)
            ],
            t0
        ));
        l.started();
        let i = &l.interfaces(t0)[0];
        assert_eq!(
            (i.kind, i.state, i.up_for_ms),
            (LinkKind::Wifi, LinkState::Up, None)
        );
        assert_eq!(l.usable_addrs("wlan0"), [v4.addr]);
        let t1 = t0 + Duration::from_secs(1);
        assert!(feed(
            &mut l,
            vec![emit::bytes(emit::address(3, v4, false), 0)],
            t1
        ));
        assert_eq!(l.views()[0].state, LinkState::Down);
        assert!(feed(
            &mut l,
            vec![emit::bytes(emit::address(3, v4, true), 0)],
            t1
        ));
        assert_eq!(
            l.interfaces(t1 + Duration::from_millis(40))[0].up_for_ms,
            Some(40)
        );
        assert!(
            !feed(&mut l, vec![emit::bytes(emit::address(3, v4, true), 0)], t1),
            "nothing new"
        );
    }
}
