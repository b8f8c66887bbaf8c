//! rtnetlink messages (links, addresses, routes) translated into link events: pure, no socket.
//!
//! [`parse_datagram`] splits what one `recv` on a route socket returned; [`translate`] turns
//! one message into a [`LinkEvent`]; [`LinkTable::apply`] folds events into the table.
//! `ip monitor link address route` shows the same stream.
#![forbid(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::time::Instant;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use roam_policy::LinkKind;

use crate::addr::AddrFacts;
use crate::table::{LinkFacts, LinkTable, Route};

/// What the kernel said about one interface (`RTM_NEWLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSeen {
    /// Kernel index.
    pub index: u32,
    /// Kernel name.
    pub name: String,
    /// `IFF_UP`.
    pub admin_up: bool,
    /// `IFF_LOWER_UP`: the driver reports carrier.
    pub carrier: bool,
    /// `IFF_LOOPBACK`: never managed.
    pub loopback: bool,
    /// The rtnetlink link kind (`veth`, `wireguard`, `tun`, ...), if the driver gives one.
    pub info_kind: Option<String>,
}

impl LinkSeen {
    /// The table's facts, with the kind the caller classified it as.
    pub fn facts(&self, kind: LinkKind) -> LinkFacts {
        LinkFacts {
            name: self.name.clone(),
            kind,
            admin_up: self.admin_up,
            carrier: self.carrier,
            loopback: self.loopback,
        }
    }
}

/// One fact from the route socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface exists with these properties (new or changed).
    Link(LinkSeen),
    /// An interface is gone.
    LinkGone {
        /// Its kernel index.
        index: u32,
    },
    /// An address was announced (`present`: new or changed) or removed.
    Address {
        /// Interface index.
        index: u32,
        /// The address and its flags; [`AddrFacts::usable`] says whether it counts.
        facts: AddrFacts,
        /// True for `RTM_NEWADDR`, false for `RTM_DELADDR`.
        present: bool,
    },
    /// A unicast route appeared (`present`) or went.
    Route {
        /// The route.
        route: Route,
        /// True when added.
        present: bool,
    },
}

/// Translates one rtnetlink message; messages about anything else give `None`, and so do
/// links without a name and addresses or routes missing what identifies them.
pub fn translate(msg: &RouteNetlinkMessage) -> Option<LinkEvent> {
    match msg {
        RouteNetlinkMessage::NewLink(m) => Some(LinkEvent::Link(link_seen(m)?)),
        RouteNetlinkMessage::DelLink(m) => Some(LinkEvent::LinkGone {
            index: m.header.index,
        }),
        RouteNetlinkMessage::NewAddress(m) => address(m, true),
        RouteNetlinkMessage::DelAddress(m) => address(m, false),
        RouteNetlinkMessage::NewRoute(m) => route(m, true),
        RouteNetlinkMessage::DelRoute(m) => route(m, false),
        _ => None,
    }
}

fn link_seen(m: &LinkMessage) -> Option<LinkSeen> {
    let mut name = None;
    let mut info_kind = None;
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        info_kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let flags = m.header.flags;
    Some(LinkSeen {
        index: m.header.index,
        name: name?,
        admin_up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        loopback: flags.contains(LinkFlags::Loopback),
        info_kind,
    })
}

fn address(m: &AddressMessage, present: bool) -> Option<LinkEvent> {
    let h = m.header.flags;
    let mut tentative = h.contains(AddressHeaderFlags::Tentative);
    let mut dadfailed = h.contains(AddressHeaderFlags::Dadfailed);
    let mut deprecated = h.contains(AddressHeaderFlags::Deprecated);
    let mut addr = None;
    for attr in &m.attributes {
        match attr {
            // IFA_LOCAL is the local address on point-to-point links, where IFA_ADDRESS is
            // the peer's; elsewhere they are equal.
            AddressAttribute::Local(a) => addr = Some(*a),
            AddressAttribute::Address(a) if addr.is_none() => addr = Some(*a),
            // IFA_FLAGS: the full 32-bit set (the header holds only the low 8 bits).
            AddressAttribute::Flags(f) => {
                tentative |= f.contains(AddressFlags::Tentative);
                dadfailed |= f.contains(AddressFlags::Dadfailed);
                deprecated |= f.contains(AddressFlags::Deprecated);
            }
            _ => {}
        }
    }
    Some(LinkEvent::Address {
        index: m.header.index,
        facts: AddrFacts {
            addr: addr?,
            prefix_len: m.header.prefix_len,
            tentative,
            dadfailed,
            deprecated,
        },
        present,
    })
}

fn route(m: &RouteMessage, present: bool) -> Option<LinkEvent> {
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut oif = None;
    let mut dst = None;
    let mut gateway = None;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            _ => {}
        }
    }
    let len = m.header.destination_prefix_length;
    Some(LinkEvent::Route {
        route: Route {
            index: oif?,
            table,
            dst: if len == 0 {
                None
            } else {
                dst.map(|a| (a, len))
            },
            gateway,
        },
        present,
    })
}

/// Splits one datagram into messages and translates them. `done` is true when the datagram
/// carries the end (or the acknowledgement) of the request with sequence number `seq`; an
/// error answer to it is returned as `Err`. Messages this crate cannot parse (a newer kernel's
/// attribute) are skipped, not fatal.
pub fn parse_datagram(mut bytes: &[u8], seq: Option<u32>) -> io::Result<(Vec<LinkEvent>, bool)> {
    let mut events = Vec::new();
    let mut done = false;
    while bytes.len() >= 4 {
        // The header's length says where the next message starts, parsed or not.
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < 16 || len > bytes.len() {
            break;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len]) {
            Ok(msg) => {
                let mine = seq.is_some_and(|s| s == msg.header.sequence_number);
                match &msg.payload {
                    NetlinkPayload::InnerMessage(inner) => events.extend(translate(inner)),
                    NetlinkPayload::Done(_) if mine => done = true,
                    NetlinkPayload::Error(e) if mine => match e.code {
                        None => done = true, // an acknowledgement, not an error
                        Some(_) => return Err(e.to_io()),
                    },
                    _ => {}
                }
            }
            Err(e) => tracing::debug!(error = %e, "unparsed netlink message skipped"),
        }
        bytes = &bytes[((len + 3) & !3).min(bytes.len())..];
    }
    Ok((events, done))
}

impl LinkTable<u32> {
    /// Folds one event into the table at `now`; `kind_of` classifies a link when it is
    /// announced ([`crate::classify()`] with the caller's sysfs facts and overrides). Routes
    /// are not part of the table. True when the table changed.
    pub fn apply(
        &mut self,
        event: &LinkEvent,
        now: Instant,
        kind_of: impl FnOnce(&LinkSeen) -> LinkKind,
    ) -> bool {
        match event {
            LinkEvent::Link(l) => self.link(l.index, l.facts(kind_of(l)), now),
            LinkEvent::LinkGone { index } => self.remove(index),
            LinkEvent::Address {
                index,
                facts,
                present,
            } => self.address(index, *facts, *present, now),
            LinkEvent::Route { .. } => false,
        }
    }
}

/// Builders of rtnetlink messages as the kernel sends them, for tests of everything that
/// reads route sockets (this crate's, roamd's, the SDK's and the cross-entry-point table).
pub mod emit {
    use std::net::IpAddr;

    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

    use crate::addr::AddrFacts;

    /// `RTM_NEWLINK` for `index`/`name` with `IFF_UP` and `IFF_LOWER_UP` as given and,
    /// when known to netlink-packet-route, the rtnetlink kind `info_kind`.
    pub fn link(
        index: u32,
        name: &str,
        admin_up: bool,
        carrier: bool,
        info_kind: Option<&str>,
    ) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        let mut flags = LinkFlags::empty();
        if admin_up {
            flags |= LinkFlags::Up;
        }
        if carrier {
            flags |= LinkFlags::LowerUp | LinkFlags::Running;
        }
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(k) = info_kind {
            m.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k.into())]));
        }
        RouteNetlinkMessage::NewLink(m)
    }

    /// `RTM_NEWADDR` (`present`) or `RTM_DELADDR` for `facts` on `index`, flags in the
    /// header as the kernel sets them.
    pub fn address(index: u32, facts: AddrFacts, present: bool) -> RouteNetlinkMessage {
        let mut a = AddressMessage::default();
        a.header.family = if facts.addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        a.header.index = index;
        a.header.prefix_len = facts.prefix_len;
        let mut flags = AddressHeaderFlags::empty();
        for (set, flag) in [
            (facts.tentative, AddressHeaderFlags::Tentative),
            (facts.dadfailed, AddressHeaderFlags::Dadfailed),
            (facts.deprecated, AddressHeaderFlags::Deprecated),
        ] {
            if set {
                flags |= flag;
            }
        }
        a.header.flags = flags;
        let addr: IpAddr = facts.addr;
        a.attributes.push(AddressAttribute::Address(addr));
        if present {
            RouteNetlinkMessage::NewAddress(a)
        } else {
            RouteNetlinkMessage::DelAddress(a)
        }
    }

    /// The bytes of `msg` in a netlink message with sequence number `seq`.
    pub fn bytes(msg: RouteNetlinkMessage, seq: u32) -> Vec<u8> {
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        m.header.sequence_number = seq;
        m.finalize();
        let mut b = vec![0; m.buffer_len()];
        m.serialize(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, NetlinkHeader};
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::route::RouteHeader;

    #[test]
    fn link_flags_and_kind_survive_the_wire() {
        let bytes = emit::bytes(emit::link(7, "wlan0", true, true, Some("veth")), 0);
        let (ev, done) = parse_datagram(&bytes, None).unwrap();
        assert!(!done);
        assert_eq!(
            ev,
            [LinkEvent::Link(LinkSeen {
                index: 7,
                name: "wlan0".into(),
                admin_up: true,
                carrier: true,
                loopback: false,
                info_kind: Some("veth".into()),
            })]
        );
        let (ev, _) = parse_datagram(
            &emit::bytes(emit::link(7, "wlan0", true, false, None), 0),
            None,
        )
        .unwrap();
        assert!(matches!(&ev[0], LinkEvent::Link(l) if l.admin_up && !l.carrier));
    }

    #[test]
    fn address_flags_and_several_messages_in_a_datagram() {
        let ip: IpAddr = "2001:db8::2".parse().unwrap();
        let mut f = AddrFacts::plain(ip, 64);
        f.tentative = true;
        let mut bytes = emit::bytes(emit::address(3, f, true), 0);
        f.tentative = false;
        f.deprecated = true;
        bytes.extend(emit::bytes(emit::address(3, f, true), 0));
        bytes.extend(emit::bytes(emit::address(3, f, false), 0));
        let (ev, _) = parse_datagram(&bytes, None).unwrap();
        let got: Vec<(bool, bool, bool)> = ev
            .iter()
            .map(|e| match e {
                LinkEvent::Address {
                    facts,
                    present,
                    index: 3,
                } => {
                    assert_eq!(facts.addr, ip);
                    (facts.tentative, facts.deprecated, *present)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (true, false, true),
                (false, true, true),
                (false, true, false)
            ]
        );
    }

    #[test]
    fn default_routes_have_no_destination_and_the_dump_end_is_seen() {
        let mut r = RouteMessage::default();
        r.header = RouteHeader {
            address_family: AddressFamily::Inet,
            table: RouteHeader::RT_TABLE_MAIN,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        r.attributes.push(RouteAttribute::Oif(4));
        r.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                [198, 18, 4, 1].into(),
            )));
        let mut bytes = emit::bytes(RouteNetlinkMessage::NewRoute(r), 9);
        let mut done = NetlinkMessage::<RouteNetlinkMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Done(DoneMessage::default()),
        );
        done.header.sequence_number = 9;
        done.finalize();
        let mut b = vec![0; done.buffer_len()];
        done.serialize(&mut b);
        bytes.extend(b);
        let (ev, finished) = parse_datagram(&bytes, Some(9)).unwrap();
        assert!(finished);
        assert_eq!(
            ev,
            [LinkEvent::Route {
                route: Route {
                    index: 4,
                    table: 254,
                    dst: None,
                    gateway: Some(IpAddr::from([198, 18, 4, 1])),
                },
                present: true
            }]
        );
        let (_, finished) = parse_datagram(&bytes, Some(10)).unwrap();
        assert!(!finished, "another dump's end is not ours");
        // A truncated datagram ends the walk without panicking.
        assert!(parse_datagram(&bytes[..10], None).unwrap().0.is_empty());
    }

    #[test]
    fn the_table_follows_the_stream() {
        let t0 = Instant::now();
        let mut t = LinkTable::<u32>::new();
        let mut bytes = emit::bytes(emit::link(3, "v4-rmnet0", true, true, Some("tun")), 1);
        bytes.extend(emit::bytes(
            emit::address(3, AddrFacts::plain("192.0.0.4".parse().unwrap(), 32), true),
            1,
        ));
        let (ev, _) = parse_datagram(&bytes, None).unwrap();
        for e in &ev {
            t.apply(e, t0, |l| {
                crate::classify(&l.name, &Default::default(), l.info_kind.as_deref(), &[])
            });
        }
        t.started();
        let l = t.get(&3).unwrap();
        assert_eq!(l.kind(), LinkKind::Cellular);
        assert!(l.is_usable());
        assert!(t.apply(&LinkEvent::LinkGone { index: 3 }, t0, |_| LinkKind::Other));
        assert!(t.get(&3).is_none());
    }
}
