//! The link table: every interface with its flags, kind and addresses, and how long each has
//! been usable, for the policy's `hold`.
//!
//! Clock-free: every call that can change an up time takes `now` from the caller.
//!
//! # Up times and start-up
//!
//! A link is *usable* when it is administratively up, has carrier, is not loopback and has at
//! least one usable address ([`crate::addr`]). Its up time ([`UpTime`]) counts from the moment
//! it last became usable, and is what `hold D` compares with D.
//!
//! A link already usable when watching starts — during the table's start-up, which ends at
//! [`LinkTable::started`] (after the first dump; Android: after ConnectivityManager's replay
//! of the networks it has) — is **up since an unknown, long time** ([`UpTime::SinceStart`],
//! `up_for_ms: None`, which the policy counts as up for ever). Why:
//! - `hold` is hysteresis against a link that *just came back*. A link that was up before
//!   roamd or the app started did not just come back; calling it "up 0 s" would be false, and
//!   `roamctl status` would say so.
//! - Nothing is held back at start-up: every link present then counts the same, so the policy's
//!   order stands and a fresh roamd or app uses working WiFi at once.
//! - Damping works from the first second: a WiFi that flaps (or first associates) two seconds
//!   after start waits out its `hold` against the cellular link that was there, exactly as it
//!   would an hour later. Counting start-up links as "just up" would leave every change in the
//!   first `hold` seconds undamped, and a roamd restart would open such a window each time.
//!
//! A link that was present at start but not yet usable (an IPv6 address still tentative in
//! the dump) counts from the moment it becomes usable, like any other.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use roam_policy::{Interface, LinkKind, LinkState};

use crate::addr::AddrFacts;

/// How long a link has been usable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpTime {
    /// Not usable.
    #[default]
    Down,
    /// Usable since before watching started: for an unknown, long time (see the module doc).
    SinceStart,
    /// Usable since this instant.
    Since(Instant),
}

impl UpTime {
    /// Follows a link's usability at `now`; `at_start` says whether watching is still starting
    /// (the first dump). Returns true when the up time changed (the link came up or went down).
    pub fn track(&mut self, usable: bool, at_start: bool, now: Instant) -> bool {
        let next = match (usable, *self) {
            (false, _) => UpTime::Down,
            (true, UpTime::Down) if at_start => UpTime::SinceStart,
            (true, UpTime::Down) => UpTime::Since(now),
            (true, up) => up,
        };
        std::mem::replace(self, next) != next
    }

    /// The policy's `up_for_ms`: `None` when down or up since start (the policy then counts the
    /// link as up for ever; a down link is never a candidate).
    pub fn up_for_ms(&self, now: Instant) -> Option<u64> {
        match self {
            UpTime::Since(t) => Some(
                u64::try_from(now.saturating_duration_since(*t).as_millis()).unwrap_or(u64::MAX),
            ),
            UpTime::Down | UpTime::SinceStart => None,
        }
    }

    /// The first instant after `now` at which this up time crosses one of `holds`: a decision
    /// may change then with no event.
    pub fn next_crossing(&self, now: Instant, holds: &[Duration]) -> Option<Instant> {
        let UpTime::Since(since) = *self else {
            return None;
        };
        holds.iter().map(|h| since + *h).filter(|t| *t > now).min()
    }
}

/// One unicast route through an interface (`RTM_NEWROUTE`/`RTM_DELROUTE`): only its owner,
/// table, destination and next hop matter to roam. Routes are not part of [`LinkTable`];
/// roamd's core keeps them for policy routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// Output interface index.
    pub index: u32,
    /// Routing table id.
    pub table: u32,
    /// Destination prefix; `None` for a default route.
    pub dst: Option<(IpAddr, u8)>,
    /// Next hop, for routes through a gateway.
    pub gateway: Option<IpAddr>,
}

/// What the kernel (or Android) says about an interface itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    /// Kernel name (`wlan0`).
    pub name: String,
    /// What kind of link it is ([`crate::classify()`]).
    pub kind: LinkKind,
    /// `IFF_UP` (`ip link set DEV up`).
    pub admin_up: bool,
    /// `IFF_LOWER_UP`: the driver reports carrier.
    pub carrier: bool,
    /// `IFF_LOOPBACK`: never a path.
    pub loopback: bool,
}

/// One interface in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    facts: LinkFacts,
    /// Every address the link has, in the order they were announced, usable or not.
    addrs: Vec<AddrFacts>,
    up: UpTime,
}

impl Link {
    /// What is known about the interface.
    pub fn facts(&self) -> &LinkFacts {
        &self.facts
    }

    /// Kernel name.
    pub fn name(&self) -> &str {
        &self.facts.name
    }

    /// Its kind.
    pub fn kind(&self) -> LinkKind {
        self.facts.kind
    }

    /// Every address it has (usable or not), in announcement order.
    pub fn addrs(&self) -> &[AddrFacts] {
        &self.addrs
    }

    /// Its usable addresses ([`AddrFacts::usable`]), in announcement order.
    pub fn usable_addrs(&self) -> Vec<IpAddr> {
        self.addrs
            .iter()
            .filter(|a| a.usable())
            .map(|a| a.addr)
            .collect()
    }

    /// Up, with carrier, not loopback, and at least one usable address: a session can send
    /// from it.
    pub fn is_usable(&self) -> bool {
        let f = &self.facts;
        f.admin_up && f.carrier && !f.loopback && self.addrs.iter().any(AddrFacts::usable)
    }

    /// `up` when usable, `down` otherwise: all a table without probes can say.
    pub fn state(&self) -> LinkState {
        if self.is_usable() {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    /// How long it has been usable.
    pub fn up_time(&self) -> UpTime {
        self.up
    }

    /// The policy's view of it at `now`: name, kind, [`Link::state`] and `up_for_ms`.
    pub fn interface(&self, now: Instant) -> Interface {
        let mut i = Interface::new(self.facts.name.clone(), self.facts.kind, self.state());
        i.up_for_ms = self.up.up_for_ms(now);
        i
    }
}

/// Every interface by key (the kernel index for roamd and the SDK, Android's network handle on
/// Android), with up times. See the module documentation for start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTable<K: Ord = u32> {
    links: BTreeMap<K, Link>,
    starting: bool,
    resyncing: Option<Vec<K>>,
}

impl<K: Ord + Clone> Default for LinkTable<K> {
    fn default() -> Self {
        LinkTable::new()
    }
}

impl<K: Ord + Clone> LinkTable<K> {
    /// An empty table, starting: links that become usable before [`LinkTable::started`]
    /// count as up since start.
    pub fn new() -> Self {
        LinkTable {
            links: BTreeMap::new(),
            starting: true,
            resyncing: None,
        }
    }

    /// Ends start-up: from now on a link that becomes usable counts from that moment.
    pub fn started(&mut self) {
        self.starting = false;
    }

    /// Whether start-up has not ended yet.
    pub fn is_starting(&self) -> bool {
        self.starting
    }

    /// Records an interface (new or changed) at `now`; true when anything changed.
    pub fn link(&mut self, key: K, facts: LinkFacts, now: Instant) -> bool {
        if let Some(seen) = &mut self.resyncing {
            seen.push(key.clone());
        }
        let changed = match self.links.get_mut(&key) {
            Some(l) if l.facts == facts => false,
            Some(l) => {
                l.facts = facts;
                true
            }
            None => {
                self.links.insert(
                    key.clone(),
                    Link {
                        facts,
                        addrs: Vec::new(),
                        up: UpTime::Down,
                    },
                );
                true
            }
        };
        self.track(&key, now);
        changed
    }

    /// Forgets an interface; true when it was known.
    pub fn remove(&mut self, key: &K) -> bool {
        self.links.remove(key).is_some()
    }

    /// An address appeared or changed (`present`), or went, at `now`; true when the link's
    /// addresses changed. Addresses of unknown links are ignored (the kernel announces a link
    /// before its addresses).
    pub fn address(&mut self, key: &K, facts: AddrFacts, present: bool, now: Instant) -> bool {
        let Some(link) = self.links.get_mut(key) else {
            return false;
        };
        let pos = link.addrs.iter().position(|a| a.addr == facts.addr);
        let changed = match (pos, present) {
            (Some(i), true) if link.addrs[i] == facts => false,
            (Some(i), true) => {
                link.addrs[i] = facts;
                true
            }
            (None, true) => {
                link.addrs.push(facts);
                true
            }
            (Some(i), false) => {
                link.addrs.remove(i);
                true
            }
            (None, false) => false,
        };
        self.track(key, now);
        changed
    }

    /// Replaces every address of a link (Android reports the whole list each time); true when
    /// they changed.
    pub fn set_addresses(&mut self, key: &K, addrs: Vec<AddrFacts>, now: Instant) -> bool {
        let Some(link) = self.links.get_mut(key) else {
            return false;
        };
        let changed = link.addrs != addrs;
        link.addrs = addrs;
        self.track(key, now);
        changed
    }

    /// Starts a resynchronisation (notifications were lost; a dump follows): until
    /// [`LinkTable::end_resync`], every link's addresses are forgotten and re-learnt from the
    /// dump while up times stand still, so a link that stays usable keeps its up time.
    pub fn begin_resync(&mut self) {
        for l in self.links.values_mut() {
            l.addrs.clear();
        }
        self.resyncing = Some(Vec::new());
    }

    /// Ends a resynchronisation at `now`: links the dump did not name are removed, and every up
    /// time follows what the dump said.
    pub fn end_resync(&mut self, now: Instant) {
        let Some(seen) = self.resyncing.take() else {
            return;
        };
        self.links.retain(|k, _| seen.contains(k));
        let keys: Vec<K> = self.links.keys().cloned().collect();
        for k in keys {
            self.track(&k, now);
        }
    }

    fn track(&mut self, key: &K, now: Instant) {
        if self.resyncing.is_some() {
            return;
        }
        let starting = self.starting;
        if let Some(l) = self.links.get_mut(key) {
            let usable = l.is_usable();
            l.up.track(usable, starting, now);
        }
    }

    /// The link with this key.
    pub fn get(&self, key: &K) -> Option<&Link> {
        self.links.get(key)
    }

    /// Every link, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Link)> {
        self.links.iter()
    }

    /// The link named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.facts.name == name)
    }

    /// The key of the link named `name`.
    pub fn key_of(&self, name: &str) -> Option<&K> {
        self.links
            .iter()
            .find(|(_, l)| l.facts.name == name)
            .map(|(k, _)| k)
    }

    /// The policy's view of every link but loopback at `now`.
    pub fn interfaces(&self, now: Instant) -> Vec<Interface> {
        self.links
            .values()
            .filter(|l| !l.facts.loopback)
            .map(|l| l.interface(now))
            .collect()
    }

    /// The earliest moment after `now` at which a usable link's up time crosses one of
    /// `holds` ([`roam_policy::Policy::hold_durations`]): the decision may change then with no
    /// event.
    pub fn next_hold(&self, now: Instant, holds: &[Duration]) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|l| l.up.next_crossing(now, holds))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wifi(up: bool) -> LinkFacts {
        LinkFacts {
            name: "wlan0".into(),
            kind: LinkKind::Wifi,
            admin_up: up,
            carrier: up,
            loopback: false,
        }
    }

    fn v4(a: &str) -> AddrFacts {
        AddrFacts::plain(a.parse().unwrap(), 24)
    }

    #[test]
    fn links_usable_at_start_are_up_since_start_and_flaps_count_from_then() {
        let t0 = Instant::now();
        let mut t = LinkTable::<u32>::new();
        assert!(t.link(3, wifi(true), t0));
        assert!(!t.link(3, wifi(true), t0));
        assert_eq!(t.get(&3).unwrap().up_time(), UpTime::Down, "no address yet");
        assert!(t.address(&3, v4("198.18.0.2"), true, t0));
        t.started();
        let w = t.get(&3).unwrap();
        assert_eq!(w.up_time(), UpTime::SinceStart);
        assert_eq!(w.interface(t0).up_for_ms, None);
        assert_eq!(w.state(), LinkState::Up);
        let holds = [Duration::from_secs(5)];
        assert_eq!(t.next_hold(t0, &holds), None);

        let t1 = t0 + Duration::from_secs(1);
        assert!(t.link(3, wifi(false), t1));
        assert_eq!(t.get(&3).unwrap().up_time(), UpTime::Down);
        let t2 = t1 + Duration::from_secs(1);
        assert!(t.link(3, wifi(true), t2));
        assert_eq!(t.get(&3).unwrap().up_time(), UpTime::Since(t2));
        assert_eq!(
            t.interfaces(t2 + Duration::from_millis(300))[0].up_for_ms,
            Some(300)
        );
        assert_eq!(t.next_hold(t2, &holds), Some(t2 + holds[0]));
        assert_eq!(t.next_hold(t2 + holds[0], &holds), None);
    }

    #[test]
    fn unusable_addresses_do_not_make_a_link_usable_and_settle_in_place() {
        let t0 = Instant::now();
        let mut t = LinkTable::<u32>::new();
        t.started();
        t.link(3, wifi(true), t0);
        let ll = AddrFacts::plain("fe80::1".parse().unwrap(), 64);
        let mut tent = AddrFacts::plain("2001:db8::2".parse().unwrap(), 64);
        tent.tentative = true;
        assert!(t.address(&3, ll, true, t0));
        assert!(t.address(&3, tent, true, t0));
        assert!(!t.get(&3).unwrap().is_usable());
        let t1 = t0 + Duration::from_secs(1);
        tent.tentative = false;
        assert!(t.address(&3, tent, true, t1));
        let w = t.get(&3).unwrap();
        assert_eq!(w.usable_addrs(), [tent.addr]);
        assert_eq!(w.addrs().len(), 2);
        assert_eq!(w.up_time(), UpTime::Since(t1));
        assert!(t.address(&3, tent, false, t1));
        assert!(!t.address(&3, tent, false, t1));
        assert_eq!(t.get(&3).unwrap().up_time(), UpTime::Down);
        assert!(!t.address(&9, tent, true, t1), "unknown link");
    }

    #[test]
    fn a_resync_keeps_up_times_of_links_that_stay_and_drops_the_rest() {
        let t0 = Instant::now();
        let mut t = LinkTable::<u32>::new();
        t.started();
        t.link(3, wifi(true), t0);
        t.address(&3, v4("198.18.0.2"), true, t0);
        let mut eth = wifi(true);
        eth.name = "eth0".into();
        t.link(4, eth, t0);
        let t1 = t0 + Duration::from_secs(3);
        t.begin_resync();
        t.link(3, wifi(true), t1);
        t.address(&3, v4("198.18.0.2"), true, t1);
        t.end_resync(t1);
        assert_eq!(t.get(&3).unwrap().up_time(), UpTime::Since(t0));
        assert!(t.get(&4).is_none());
        assert_eq!(t.key_of("wlan0"), Some(&3));
        assert!(t.remove(&3));
        assert!(!t.remove(&3));
    }
}
