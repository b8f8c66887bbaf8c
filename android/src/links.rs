//! The link table: Android's view of its networks mapped onto roam's link model.
//!
//! Sans-I/O: [`LinkBook`] takes ConnectivityManager's facts about one `Network` at a time
//! ([`LinkUpdate`], losing, lost) with `now`, and gives the policy's [`Interface`]s and the
//! SDK's [`LinkView`]s. The JNI layer only parses Java's arguments into these types.
//!
//! The table itself is roam-link's ([`roam_link::LinkTable`], keyed by network handle): the
//! same usable-address rule, up times and start-up rule as the SDK's embedded monitor. The
//! mapping, per network:
//! - kind: from the transport (`NetworkCapabilities.TRANSPORT_*`, see [`Transport`]); a
//!   transport that names no kind (`Other`) leaves it to roam-link's name classifier;
//! - name: `LinkProperties.getInterfaceName()`; addresses: its `LinkAddress`es, of which only
//!   usable ones count ([`roam_link::AddrFacts::usable`]: no link-local, loopback, multicast or
//!   unspecified address can carry a session to a peer);
//! - state: `down` without a usable address, `degraded` after `onLosing`, `validated` with
//!   `NET_CAPABILITY_VALIDATED`, `up` otherwise;
//! - metered: not `NET_CAPABILITY_NOT_METERED`; signal: `getSignalStrength()` when known;
//! - up time: since the network last became usable. Networks usable during start-up count as
//!   up since an unknown, long time (`up_for_ms` absent), as in the SDK (`roam_link::table`
//!   says why). Android has no dump: ConnectivityManager replays the
//!   networks it has right after the service registers its callback, so start-up is the
//!   [`STARTUP_REPLAY`] after the first report.
//!
//! `onLost` removes the network: Android never reuses a `Network` handle for a new connection.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use roam::decision::LinkView;
use roam_link::{AddrFacts, LinkFacts, LinkTable};
use roam_policy::{Interface, LinkKind, LinkState};

/// How long after the first report networks still count as present at start-up: Android
/// replays the networks it has within milliseconds of the callback's registration; a second
/// leaves room for a busy main thread.
pub const STARTUP_REPLAY: Duration = Duration::from_secs(1);

/// An Android `Network`, as `Network.getNetworkHandle()` gives it (never 0, which is
/// `NETWORK_UNSPECIFIED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkHandle(pub u64);

impl fmt::Display for NetworkHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "network {}", self.0)
    }
}

/// A transport of `android.net.NetworkCapabilities` (`TRANSPORT_*`), by its platform value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// `TRANSPORT_CELLULAR` (0).
    Cellular,
    /// `TRANSPORT_WIFI` (1).
    Wifi,
    /// `TRANSPORT_BLUETOOTH` (2): Bluetooth PAN tethering.
    Bluetooth,
    /// `TRANSPORT_ETHERNET` (3).
    Ethernet,
    /// `TRANSPORT_VPN` (4).
    Vpn,
    /// `TRANSPORT_USB` (8, API 31).
    Usb,
    /// Any other transport (WiFi Aware, LoWPAN, Thread, satellite, test), by its value.
    Other(i32),
}

impl Transport {
    /// The link kind a policy's `link NAME = kind KIND` matches, for a network on
    /// `interface`: the transport's when it names one, roam-link's name classifier otherwise.
    pub fn kind_of(self, interface: &str) -> LinkKind {
        match self {
            Transport::Other(_) => roam_link::kind_from_name(interface),
            known => known.kind(),
        }
    }

    /// The link kind the transport itself names ([`LinkKind::Other`] for `Other`).
    pub fn kind(self) -> LinkKind {
        match self {
            Transport::Cellular => LinkKind::Cellular,
            Transport::Wifi => LinkKind::Wifi,
            Transport::Bluetooth => LinkKind::Bluetooth,
            Transport::Ethernet => LinkKind::Ethernet,
            Transport::Vpn => LinkKind::Vpn,
            Transport::Usb => LinkKind::Usb,
            Transport::Other(_) => LinkKind::Other,
        }
    }

    /// The platform value (`NetworkCapabilities.TRANSPORT_*`).
    pub fn raw(self) -> i32 {
        match self {
            Transport::Cellular => 0,
            Transport::Wifi => 1,
            Transport::Bluetooth => 2,
            Transport::Ethernet => 3,
            Transport::Vpn => 4,
            Transport::Usb => 8,
            Transport::Other(v) => v,
        }
    }
}

impl From<i32> for Transport {
    fn from(v: i32) -> Transport {
        match v {
            0 => Transport::Cellular,
            1 => Transport::Wifi,
            2 => Transport::Bluetooth,
            3 => Transport::Ethernet,
            4 => Transport::Vpn,
            8 => Transport::Usb,
            other => Transport::Other(other),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Other(v) => write!(f, "transport {v}"),
            known => f.write_str(known.kind().as_str()),
        }
    }
}

/// What ConnectivityManager says about one network (`onAvailable`,
/// `onCapabilitiesChanged`, `onLinkPropertiesChanged`, merged by the Java service).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkUpdate {
    /// The network.
    pub network: NetworkHandle,
    /// Its first transport (a VPN reports `TRANSPORT_VPN` first).
    pub transport: Transport,
    /// `LinkProperties.getInterfaceName()` (`wlan0`, `rmnet_data0`).
    pub interface: String,
    /// `LinkProperties.getLinkAddresses()`, parsed.
    pub addrs: Vec<IpAddr>,
    /// `NET_CAPABILITY_NOT_METERED`.
    pub not_metered: bool,
    /// `NET_CAPABILITY_VALIDATED`: Android's own probe reached the internet.
    pub validated: bool,
    /// `NetworkCapabilities.getSignalStrength()` in dBm, when the platform knows it.
    pub signal_dbm: Option<i32>,
}

/// What Android says about a network beyond what roam-link's table keeps.
#[derive(Debug, Clone)]
struct Extra {
    update: LinkUpdate,
    losing: bool,
}

/// Every network Android reported and has not lost, by handle.
#[derive(Debug, Clone, Default)]
pub struct LinkBook {
    table: LinkTable<NetworkHandle>,
    extra: BTreeMap<NetworkHandle, Extra>,
    /// When the first network was reported: start-up ends [`STARTUP_REPLAY`] later.
    first_report: Option<Instant>,
}

/// A network the table does not know (never reported, or lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} is not known to roam (lost, or never reported with linkUpdate); report it before \
     calling this"
)]
pub struct UnknownNetwork(pub NetworkHandle);

impl LinkBook {
    /// Records what Android says about a network; true when anything a decision or a session
    /// depends on changed.
    pub fn update(&mut self, now: Instant, u: LinkUpdate) -> bool {
        let first = *self.first_report.get_or_insert(now);
        if self.table.is_starting() && now.saturating_duration_since(first) >= STARTUP_REPLAY {
            self.table.started();
        }
        if self.extra.get(&u.network).is_some_and(|e| e.update == u) {
            return false;
        }
        let facts = LinkFacts {
            name: u.interface.clone(),
            kind: u.transport.kind_of(&u.interface),
            // Android reports a network only while it is connected.
            admin_up: true,
            carrier: true,
            loopback: false,
        };
        // LinkAddress's prefix length does not cross the bridge; nothing here needs it.
        let addrs = u
            .addrs
            .iter()
            .map(|a| AddrFacts::plain(*a, if a.is_ipv4() { 32 } else { 128 }))
            .collect();
        self.table.link(u.network, facts, now);
        self.table.set_addresses(&u.network, addrs, now);
        let losing = self.extra.get(&u.network).is_some_and(|e| e.losing);
        self.extra.insert(u.network, Extra { update: u, losing });
        true
    }

    /// `onLosing`: the network is expected to go soon; it ranks after the others.
    pub fn losing(&mut self, network: NetworkHandle) -> Result<bool, UnknownNetwork> {
        let e = self
            .extra
            .get_mut(&network)
            .ok_or(UnknownNetwork(network))?;
        Ok(!std::mem::replace(&mut e.losing, true))
    }

    /// `onLost`: forgets the network; true when it was known.
    pub fn lost(&mut self, network: NetworkHandle) -> bool {
        // Android's replay only reports networks it has; a loss is a live event, so start-up
        // is over: a network that connects after it (even within the replay window) has just
        // come up and its policy's `hold` applies.
        self.table.started();
        self.table.remove(&network);
        self.extra.remove(&network).is_some()
    }

    /// The network whose interface is `name`, for binding a socket of a path to it.
    pub fn network_of(&self, name: &str) -> Option<NetworkHandle> {
        self.table.key_of(name).copied()
    }

    /// Whether the table knows `network`.
    pub fn contains(&self, network: NetworkHandle) -> bool {
        self.extra.contains_key(&network)
    }

    fn state(&self, network: NetworkHandle, link: &roam_link::Link) -> LinkState {
        let e = &self.extra[&network];
        if !link.is_usable() {
            LinkState::Down
        } else if e.losing {
            LinkState::Degraded
        } else if e.update.validated {
            LinkState::Validated
        } else {
            LinkState::Up
        }
    }

    /// The policy's view at `now`.
    pub fn interfaces(&self, now: Instant) -> Vec<Interface> {
        self.table
            .iter()
            .map(|(net, l)| {
                let e = &self.extra[net];
                let mut i = l.interface(now);
                i.state = self.state(*net, l);
                i.metered = Some(!e.update.not_metered);
                i.signal_dbm = e.update.signal_dbm.map(f64::from);
                i
            })
            .collect()
    }

    /// The SDK's view: names, kinds, states and usable addresses.
    pub fn link_views(&self) -> Vec<LinkView> {
        self.table
            .iter()
            .map(|(net, l)| LinkView {
                name: l.name().to_owned(),
                kind: l.kind(),
                state: self.state(*net, l),
                addrs: l.usable_addrs(),
            })
            .collect()
    }

    /// The earliest moment after `now` at which a usable link's up time crosses one of
    /// `holds`: the decision may change then with no event from Android.
    pub fn next_hold(&self, now: Instant, holds: &[Duration]) -> Option<Instant> {
        self.table.next_hold(now, holds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wifi(net: u64, addrs: &[&str]) -> LinkUpdate {
        LinkUpdate {
            network: NetworkHandle(net),
            transport: Transport::Wifi,
            interface: "wlan0".into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            not_metered: true,
            validated: false,
            signal_dbm: Some(-60),
        }
    }

    #[test]
    fn transports_map_to_kinds_and_keep_unknown_values() {
        for (raw, kind) in [
            (0, LinkKind::Cellular),
            (1, LinkKind::Wifi),
            (2, LinkKind::Bluetooth),
            (3, LinkKind::Ethernet),
            (4, LinkKind::Vpn),
            (8, LinkKind::Usb),
            (5, LinkKind::Other),
        ] {
            let t = Transport::from(raw);
            assert_eq!(t.kind(), kind, "{raw}");
            assert_eq!(t.raw(), raw);
        }
        assert_eq!(Transport::from(7).to_string(), "transport 7");
    }

    #[test]
    fn state_follows_addresses_capabilities_and_losing() {
        let t0 = Instant::now();
        let mut book = LinkBook::default();
        // Link-local only: Android has the network, a session cannot use it.
        assert!(book.update(t0, wifi(10, &["fe80::1"])));
        let i = &book.interfaces(t0)[0];
        assert_eq!((i.state, i.up_for_ms), (LinkState::Down, None));
        assert!(book.link_views()[0].addrs.is_empty());

        // Past start-up: the address counts from when it came.
        let t1 = t0 + STARTUP_REPLAY;
        assert!(book.update(t1, wifi(10, &["fe80::1", "198.18.0.2"])));
        assert!(!book.update(t1, wifi(10, &["fe80::1", "198.18.0.2"])));
        let t2 = t1 + Duration::from_millis(250);
        let i = &book.interfaces(t2)[0];
        assert_eq!(i.state, LinkState::Up);
        assert_eq!(i.up_for_ms, Some(250));
        assert_eq!((i.metered, i.signal_dbm), (Some(false), Some(-60.0)));
        assert_eq!(
            book.link_views()[0].addrs,
            ["198.18.0.2".parse::<IpAddr>().unwrap()]
        );

        let mut v = wifi(10, &["198.18.0.2"]);
        v.validated = true;
        assert!(book.update(t2, v));
        assert_eq!(book.interfaces(t2)[0].state, LinkState::Validated);
        // Validation does not restart the up time.
        assert_eq!(book.interfaces(t2)[0].up_for_ms, Some(250));

        assert_eq!(book.losing(NetworkHandle(10)), Ok(true));
        assert_eq!(book.losing(NetworkHandle(10)), Ok(false));
        assert_eq!(book.interfaces(t2)[0].state, LinkState::Degraded);
        assert_eq!(
            book.losing(NetworkHandle(11)),
            Err(UnknownNetwork(NetworkHandle(11)))
        );

        assert_eq!(book.network_of("wlan0"), Some(NetworkHandle(10)));
        assert!(book.lost(NetworkHandle(10)));
        assert!(!book.lost(NetworkHandle(10)));
        assert!(book.interfaces(t2).is_empty());
    }

    #[test]
    fn a_network_back_after_a_loss_within_the_replay_window_has_just_come_up() {
        // The host-JVM test lost WiFi and brought it back 0.6 s after the first report: the
        // returning network must be held, not taken for part of the replay.
        let t0 = Instant::now();
        let mut book = LinkBook::default();
        book.update(t0, wifi(1, &["198.18.0.2"]));
        assert!(book.lost(NetworkHandle(1)));
        let back = t0 + Duration::from_millis(600);
        book.update(back, wifi(2, &["198.18.0.3"]));
        let at = back + Duration::from_millis(100);
        assert_eq!(book.interfaces(at)[0].up_for_ms, Some(100));
    }

    #[test]
    fn networks_of_the_start_up_replay_are_up_since_start() {
        let t0 = Instant::now();
        let mut book = LinkBook::default();
        book.update(t0, wifi(1, &["198.18.0.2"]));
        let mut cell = wifi(2, &["198.18.1.2"]);
        cell.transport = Transport::Cellular;
        cell.interface = "rmnet_data0".into();
        book.update(t0 + Duration::from_millis(30), cell);
        let later = t0 + Duration::from_secs(60);
        let up: Vec<_> = book
            .interfaces(later)
            .iter()
            .map(|i| (i.kind, i.up_for_ms))
            .collect();
        assert_eq!(up, [(LinkKind::Wifi, None), (LinkKind::Cellular, None)]);
        assert_eq!(book.next_hold(t0, &[Duration::from_secs(5)]), None);
        // A transport that names no kind leaves it to the interface name.
        let mut clat = wifi(3, &["192.0.0.4"]);
        clat.transport = Transport::Other(10);
        clat.interface = "v4-rmnet_data0".into();
        book.update(later, clat);
        assert_eq!(book.link_views()[2].kind, LinkKind::Cellular);
    }

    #[test]
    fn holds_wake_at_the_first_crossing_still_ahead() {
        let start = Instant::now();
        let mut book = LinkBook::default();
        book.update(start, wifi(1, &[]));
        let t0 = start + STARTUP_REPLAY;
        book.update(t0, wifi(1, &["198.18.0.2"]));
        let holds = [Duration::from_secs(1), Duration::from_secs(5)];
        assert_eq!(book.next_hold(t0, &holds), Some(t0 + holds[0]));
        assert_eq!(
            book.next_hold(t0 + Duration::from_secs(2), &holds),
            Some(t0 + holds[1])
        );
        assert_eq!(book.next_hold(t0 + Duration::from_secs(6), &holds), None);
        // A link that loses its address starts again when it gets one back.
        book.update(t0, wifi(1, &[]));
        assert_eq!(book.next_hold(t0, &holds), None);
    }
}
