//! The embedded monitor's view of the device's interfaces, built from rtnetlink messages.
//!
//! Pure: [`LinkTable::apply`] takes one message and says whether anything a decision depends on
//! changed. The socket that feeds it lives in [`super::netlink`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use roam_policy::LinkKind;

/// One interface as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    /// Kernel index.
    pub index: u32,
    /// Kernel name (`wlan0`).
    pub name: String,
    /// `IFF_UP` (`ip link set DEV up`).
    pub admin_up: bool,
    /// `IFF_LOWER_UP`: the driver reports carrier.
    pub carrier: bool,
    /// `IFF_LOOPBACK`: never a path.
    pub loopback: bool,
    /// Usable global addresses (not tentative, not failed DAD, not link-local), in the order
    /// the kernel announced them.
    pub addrs: Vec<IpAddr>,
}

impl LinkEntry {
    /// Up, with carrier and at least one usable address: a session can send from it.
    pub fn is_usable(&self) -> bool {
        self.admin_up && self.carrier && !self.loopback && !self.addrs.is_empty()
    }

    /// What kind of link the name says it is (the embedded monitor has no sysfs facts in a
    /// namespace; the agent's classifier also reads sysfs).
    pub fn kind(&self) -> LinkKind {
        kind_from_name(&self.name)
    }
}

/// Every interface by kernel index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkTable {
    links: BTreeMap<u32, LinkEntry>,
}

impl LinkTable {
    /// Applies one rtnetlink message; returns true when the table changed.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) -> bool {
        match msg {
            RouteNetlinkMessage::NewLink(m) => self.link(m),
            RouteNetlinkMessage::DelLink(m) => self.links.remove(&m.header.index).is_some(),
            RouteNetlinkMessage::NewAddress(m) => self.address(m, true),
            RouteNetlinkMessage::DelAddress(m) => self.address(m, false),
            _ => false,
        }
    }

    /// Every interface, by index.
    pub fn iter(&self) -> impl Iterator<Item = &LinkEntry> {
        self.links.values()
    }

    /// The interface named `name`.
    pub fn by_name(&self, name: &str) -> Option<&LinkEntry> {
        self.links.values().find(|l| l.name == name)
    }

    fn link(&mut self, m: &LinkMessage) -> bool {
        let Some(name) = m.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }) else {
            return false;
        };
        let flags = m.header.flags;
        let e = self
            .links
            .entry(m.header.index)
            .or_insert_with(|| LinkEntry {
                index: m.header.index,
                name: name.clone(),
                admin_up: false,
                carrier: false,
                loopback: false,
                addrs: Vec::new(),
            });
        let before = e.clone();
        e.name = name;
        e.admin_up = flags.contains(LinkFlags::Up);
        e.carrier = flags.contains(LinkFlags::LowerUp);
        e.loopback = flags.contains(LinkFlags::Loopback);
        *e != before
    }

    fn address(&mut self, m: &AddressMessage, new: bool) -> bool {
        // IFA_LOCAL is the local address on point-to-point links, where IFA_ADDRESS is the
        // peer's; elsewhere both are equal.
        let mut addr = None;
        let mut unusable = m
            .header
            .flags
            .intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed);
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(ip) => addr = Some(*ip),
                AddressAttribute::Address(ip) if addr.is_none() => addr = Some(*ip),
                AddressAttribute::Flags(f) => {
                    unusable |= f.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed);
                }
                _ => {}
            }
        }
        let Some(addr) = addr else { return false };
        let global = m.header.scope == AddressScope::Universe;
        let Some(link) = self.links.get_mut(&m.header.index) else {
            return false;
        };
        let had = link.addrs.contains(&addr);
        if new && global && !unusable {
            if !had {
                link.addrs.push(addr);
            }
            !had
        } else {
            link.addrs.retain(|a| *a != addr);
            had
        }
    }
}

/// The link kind an interface name suggests, as phones and Linux distributions name them.
pub fn kind_from_name(name: &str) -> LinkKind {
    const RULES: [(&[&str], LinkKind); 6] = [
        (
            &["wlan", "wlp", "wlx", "wifi", "ath", "swlan"],
            LinkKind::Wifi,
        ),
        (
            &["rmnet", "ccmni", "wwan", "wwp", "pdp", "v4-rmnet"],
            LinkKind::Cellular,
        ),
        (&["bnep", "bt-pan", "btpan"], LinkKind::Bluetooth),
        (&["usb", "rndis", "ncm"], LinkKind::Usb),
        (&["tun", "tap", "wg", "ppp", "ipsec", "vpn"], LinkKind::Vpn),
        (&["eth", "enp", "eno", "ens", "enx"], LinkKind::Ethernet),
    ];
    RULES
        .iter()
        .find(|(prefixes, _)| prefixes.iter().any(|p| name.starts_with(p)))
        .map_or(LinkKind::Other, |(_, k)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::AddressFamily;

    fn link(index: u32, name: &str, flags: LinkFlags) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(m)
    }

    fn addr(index: u32, ip: &str, scope: AddressScope, tentative: bool) -> AddressMessage {
        let mut a = AddressMessage::default();
        let ip: IpAddr = ip.parse().unwrap();
        a.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        a.header.index = index;
        a.header.scope = scope;
        if tentative {
            a.header.flags = AddressHeaderFlags::Tentative;
        }
        a.attributes.push(AddressAttribute::Address(ip));
        a
    }

    #[test]
    fn a_link_is_usable_with_carrier_and_a_global_address_only() {
        let mut t = LinkTable::default();
        assert!(t.apply(&link(3, "wlan0", LinkFlags::Up)));
        assert!(!t.by_name("wlan0").unwrap().is_usable());
        assert!(t.apply(&link(3, "wlan0", LinkFlags::Up | LinkFlags::LowerUp)));
        assert!(!t.apply(&link(3, "wlan0", LinkFlags::Up | LinkFlags::LowerUp)));
        // Link-local and tentative addresses do not count.
        let ll = addr(3, "fe80::1", AddressScope::Link, false);
        assert!(!t.apply(&RouteNetlinkMessage::NewAddress(ll)));
        let tent = addr(3, "2001:db8::2", AddressScope::Universe, true);
        assert!(!t.apply(&RouteNetlinkMessage::NewAddress(tent)));
        assert!(!t.by_name("wlan0").unwrap().is_usable());
        let v4 = addr(3, "198.18.0.2", AddressScope::Universe, false);
        assert!(t.apply(&RouteNetlinkMessage::NewAddress(v4.clone())));
        let w = t.by_name("wlan0").unwrap();
        assert!(w.is_usable());
        assert_eq!(w.kind(), LinkKind::Wifi);
        // Address removal and link down each make it unusable.
        assert!(t.apply(&RouteNetlinkMessage::DelAddress(v4.clone())));
        assert!(!t.by_name("wlan0").unwrap().is_usable());
        assert!(t.apply(&RouteNetlinkMessage::NewAddress(v4)));
        assert!(t.apply(&link(3, "wlan0", LinkFlags::empty())));
        assert!(!t.by_name("wlan0").unwrap().is_usable());
        // A tentative address that becomes usable is announced again without the flag.
        let mut m = LinkMessage::default();
        m.header.index = 3;
        assert!(t.apply(&RouteNetlinkMessage::DelLink(m)));
        assert!(t.by_name("wlan0").is_none());
    }

    #[test]
    fn names_give_kinds() {
        for (name, kind) in [
            ("wlan0", LinkKind::Wifi),
            ("wlp2s0", LinkKind::Wifi),
            ("rmnet_data0", LinkKind::Cellular),
            ("ccmni1", LinkKind::Cellular),
            ("bnep0", LinkKind::Bluetooth),
            ("rndis0", LinkKind::Usb),
            ("wg0", LinkKind::Vpn),
            ("tun0", LinkKind::Vpn),
            ("enp3s0", LinkKind::Ethernet),
            ("lo", LinkKind::Other),
            ("s-wlan0", LinkKind::Other),
        ] {
            assert_eq!(kind_from_name(name), kind, "{name}");
        }
    }
}
