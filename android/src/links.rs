//! The link table: Android's view of its networks mapped onto roam's link model.
//!
//! Sans-I/O: [`LinkBook`] takes ConnectivityManager's facts about one `Network` at a time
//! ([`LinkUpdate`], losing, lost) with `now`, and gives the policy's [`Interface`]s and the
//! SDK's [`LinkView`]s. The JNI layer only parses Java's arguments into these types.
//!
//! The mapping, per network:
//! - kind: from the transport (`NetworkCapabilities.TRANSPORT_*`), see [`Transport`];
//! - name: `LinkProperties.getInterfaceName()`; addresses: its `LinkAddress`es, link-local ones
//!   dropped (a session cannot use them to reach a peer);
//! - state: `down` without a usable address, `degraded` after `onLosing`, `validated` with
//!   `NET_CAPABILITY_VALIDATED`, `up` otherwise;
//! - metered: not `NET_CAPABILITY_NOT_METERED`; signal: `getSignalStrength()` when known;
//! - up time: since the network first had a usable address as far as this table knows (a
//!   network reported when the service starts counts from then, so `hold` applies to it too).
//!
//! `onLost` removes the network: Android never reuses a `Network` handle for a new connection.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use roam::decision::LinkView;
use roam_policy::{Interface, LinkKind, LinkState};

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
    /// The link kind a policy's `link NAME = kind KIND` matches.
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

#[derive(Debug, Clone)]
struct Link {
    update: LinkUpdate,
    losing: bool,
    /// When the link last became usable; `None` while it is not.
    up_since: Option<Instant>,
}

impl Link {
    fn usable_addrs(&self) -> Vec<IpAddr> {
        self.update
            .addrs
            .iter()
            .copied()
            .filter(|a| is_usable_addr(*a))
            .collect()
    }

    fn state(&self) -> LinkState {
        if self.usable_addrs().is_empty() {
            LinkState::Down
        } else if self.losing {
            LinkState::Degraded
        } else if self.update.validated {
            LinkState::Validated
        } else {
            LinkState::Up
        }
    }
}

/// Link-local addresses cannot carry a session to a peer; the unspecified address is no source.
fn is_usable_addr(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_unicast_link_local() && !v6.is_unspecified(),
    }
}

/// Every network Android reported and has not lost, by handle.
#[derive(Debug, Clone, Default)]
pub struct LinkBook {
    links: BTreeMap<NetworkHandle, Link>,
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
        match self.links.get_mut(&u.network) {
            Some(link) if link.update == u => false,
            Some(link) => {
                link.update = u;
                link.track(now);
                true
            }
            None => {
                let mut link = Link {
                    update: u,
                    losing: false,
                    up_since: None,
                };
                link.track(now);
                self.links.insert(link.update.network, link);
                true
            }
        }
    }

    /// `onLosing`: the network is expected to go soon; it ranks after the others.
    pub fn losing(&mut self, network: NetworkHandle) -> Result<bool, UnknownNetwork> {
        let link = self
            .links
            .get_mut(&network)
            .ok_or(UnknownNetwork(network))?;
        Ok(!std::mem::replace(&mut link.losing, true))
    }

    /// `onLost`: forgets the network; true when it was known.
    pub fn lost(&mut self, network: NetworkHandle) -> bool {
        self.links.remove(&network).is_some()
    }

    /// The network whose interface is `name`, for binding a socket of a path to it.
    pub fn network_of(&self, name: &str) -> Option<NetworkHandle> {
        self.links
            .values()
            .find(|l| l.update.interface == name)
            .map(|l| l.update.network)
    }

    /// Whether the table knows `network`.
    pub fn contains(&self, network: NetworkHandle) -> bool {
        self.links.contains_key(&network)
    }

    /// The policy's view at `now`.
    pub fn interfaces(&self, now: Instant) -> Vec<Interface> {
        self.links
            .values()
            .map(|l| {
                let mut i = Interface::new(
                    l.update.interface.clone(),
                    l.update.transport.kind(),
                    l.state(),
                );
                i.metered = Some(!l.update.not_metered);
                i.signal_dbm = l.update.signal_dbm.map(f64::from);
                i.up_for_ms = l
                    .up_since
                    .map(|s| now.saturating_duration_since(s).as_millis() as u64);
                i
            })
            .collect()
    }

    /// The SDK's view: names, kinds, states and usable addresses.
    pub fn link_views(&self) -> Vec<LinkView> {
        self.links
            .values()
            .map(|l| LinkView {
                name: l.update.interface.clone(),
                kind: l.update.transport.kind(),
                state: l.state(),
                addrs: l.usable_addrs(),
            })
            .collect()
    }

    /// The earliest moment after `now` at which a usable link's up time crosses one of
    /// `holds`: the decision may change then with no event from Android.
    pub fn next_hold(&self, now: Instant, holds: &[Duration]) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|l| l.up_since)
            .flat_map(|since| holds.iter().map(move |h| since + *h))
            .filter(|t| *t > now)
            .min()
    }
}

impl Link {
    fn track(&mut self, now: Instant) {
        let usable = self.state() != LinkState::Down;
        match (usable, self.up_since) {
            (true, None) => self.up_since = Some(now),
            (false, Some(_)) => self.up_since = None,
            _ => {}
        }
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

        let t1 = t0 + Duration::from_millis(100);
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
    fn holds_wake_at_the_first_crossing_still_ahead() {
        let t0 = Instant::now();
        let mut book = LinkBook::default();
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
