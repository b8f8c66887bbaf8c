//! The netlink route socket: one initial dump of links, addresses and routes, then the
//! kernel's multicast notifications for the same. No polling: the socket is read only when the
//! kernel has something to say.
//!
//! `ip monitor link address route` shows the same stream.
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::unix::AsyncFd;

/// What the kernel said about one interface.
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

/// One fact from the route socket, in the shape the agent needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorEvent {
    /// An interface exists with these properties (new or changed).
    Link(LinkSeen),
    /// An interface is gone.
    LinkGone {
        /// Its kernel index.
        index: u32,
    },
    /// An address is present and usable (not tentative, not failed DAD) or not.
    Address {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Prefix length.
        prefix_len: u8,
        /// True when present and usable, false when removed or unusable.
        present: bool,
    },
    /// A unicast route through an interface appeared or went.
    Route {
        /// The route.
        route: crate::core::Route,
        /// True when added.
        present: bool,
    },
}

/// Translates one rtnetlink message. Messages the agent does not track give `None`.
pub fn translate(msg: &RouteNetlinkMessage) -> Option<MonitorEvent> {
    match msg {
        RouteNetlinkMessage::NewLink(m) => Some(MonitorEvent::Link(link_seen(m)?)),
        RouteNetlinkMessage::DelLink(m) => Some(MonitorEvent::LinkGone {
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

fn address(m: &AddressMessage, new: bool) -> Option<MonitorEvent> {
    let mut addr = None;
    let mut unusable = m
        .header
        .flags
        .intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed);
    for attr in &m.attributes {
        match attr {
            // IFA_LOCAL is the local address on point-to-point links, where IFA_ADDRESS is
            // the peer's; elsewhere they are equal.
            AddressAttribute::Local(a) => addr = Some(*a),
            AddressAttribute::Address(a) if addr.is_none() => addr = Some(*a),
            AddressAttribute::Flags(f) => {
                use netlink_packet_route::address::AddressFlags;
                unusable |= f.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed);
            }
            _ => {}
        }
    }
    Some(MonitorEvent::Address {
        index: m.header.index,
        addr: addr?,
        prefix_len: m.header.prefix_len,
        present: new && !unusable,
    })
}

fn route(m: &RouteMessage, new: bool) -> Option<MonitorEvent> {
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
    Some(MonitorEvent::Route {
        route: crate::core::Route {
            index: oif?,
            table,
            dst: if len == 0 {
                None
            } else {
                dst.map(|a| (a, len))
            },
            gateway,
        },
        present: new,
    })
}

/// Why the monitor stopped or must resynchronise.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The kernel dropped notifications because the socket buffer was full. The agent's view
    /// is stale: dump again.
    #[error("the kernel dropped netlink notifications (receive buffer full); re-dumping")]
    Overrun,
    /// The socket failed.
    #[error("netlink route socket: {0}")]
    Io(#[from] io::Error),
}

impl From<MonitorError> for io::Error {
    fn from(e: MonitorError) -> io::Error {
        match e {
            MonitorError::Io(e) => e,
            MonitorError::Overrun => io::Error::other(e.to_string()),
        }
    }
}

/// The route socket, registered with tokio.
#[derive(Debug)]
pub struct Monitor {
    socket: AsyncFd<Socket>,
    buf: Vec<u8>,
    seq: u32,
}

const GROUPS: [u32; 5] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV6_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV6_ROUTE,
];

impl Monitor {
    /// Opens the socket and joins the link, address and route groups. Joining happens before
    /// the dump so nothing that changes during the dump is missed.
    pub fn open() -> io::Result<Monitor> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        for g in GROUPS {
            socket.add_membership(g)?;
        }
        // A burst (hundreds of veths created by a test, a modem re-registering) must not
        // overflow the default 200 KiB before the agent reads.
        socket.set_rx_buf_sz(4 * 1024 * 1024)?;
        socket.set_non_blocking(true)?;
        // SAFETY: the AsyncFd takes ownership of the Socket, whose fd stays open and the same
        // until the AsyncFd (and with it the Socket) is dropped.
        let socket = unsafe { AsyncFd::register(socket) }?;
        Ok(Monitor {
            socket,
            buf: vec![0; 64 * 1024],
            seq: 0,
        })
    }

    /// Dumps links, then addresses, then routes (every family). Notifications that arrive
    /// meanwhile are included, in order.
    pub async fn dump(&mut self) -> Result<Vec<MonitorEvent>, MonitorError> {
        let mut out = Vec::new();
        let requests = [
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            RouteNetlinkMessage::GetRoute({
                let mut m = RouteMessage::default();
                m.header.address_family = AddressFamily::Unspec;
                m
            }),
        ];
        for req in requests {
            self.seq = self.seq.wrapping_add(1);
            let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(req));
            msg.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
            msg.header.sequence_number = self.seq;
            msg.finalize();
            let mut bytes = vec![0; msg.buffer_len()];
            msg.serialize(&mut bytes);
            loop {
                let mut guard = self.socket.writable().await?;
                match guard.try_io(|s| s.get_ref().send(&bytes, 0)) {
                    Ok(r) => {
                        r?;
                        break;
                    }
                    Err(_would_block) => continue,
                }
            }
            let seq = self.seq;
            loop {
                let (events, done) = self.read(Some(seq)).await?;
                out.extend(events);
                if done {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Waits for the next notifications from the kernel.
    pub async fn next(&mut self) -> Result<Vec<MonitorEvent>, MonitorError> {
        Ok(self.read(None).await?.0)
    }

    /// Reads one datagram; returns its events and whether it ended the dump `seq`.
    async fn read(&mut self, seq: Option<u32>) -> Result<(Vec<MonitorEvent>, bool), MonitorError> {
        let n = loop {
            let mut guard = self.socket.readable().await?;
            let buf = &mut self.buf;
            match guard.try_io(|s| {
                let mut slice = &mut buf[..];
                s.get_ref().recv(&mut slice, 0)
            }) {
                Ok(Ok(n)) => break n,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(MonitorError::Overrun);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        };
        parse_datagram(&self.buf[..n.min(self.buf.len())], seq)
    }
}

/// Splits one datagram into messages and translates them. `done` is true when the datagram
/// carries the end (or the error) of dump `seq`.
pub fn parse_datagram(
    mut bytes: &[u8],
    seq: Option<u32>,
) -> Result<(Vec<MonitorEvent>, bool), MonitorError> {
    let mut events = Vec::new();
    let mut done = false;
    while !bytes.is_empty() {
        let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(m) => m,
            Err(e) => {
                // A message this crate cannot parse (a newer kernel's attribute) is skipped,
                // not fatal: its length still tells where the next one starts.
                tracing::debug!(error = %e, "unparsed netlink message skipped");
                let len = bytes
                    .get(..4)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .unwrap_or(0);
                if len == 0 || len > bytes.len() {
                    break;
                }
                bytes = &bytes[align(len).min(bytes.len())..];
                continue;
            }
        };
        let len = msg.header.length as usize;
        let mine = seq.is_some_and(|s| s == msg.header.sequence_number);
        match &msg.payload {
            NetlinkPayload::InnerMessage(inner) => events.extend(translate(inner)),
            NetlinkPayload::Done(_) if mine => done = true,
            NetlinkPayload::Error(e) if mine => {
                if e.code.is_none() {
                    done = true; // an acknowledgement, not an error
                } else {
                    return Err(MonitorError::Io(e.to_io()));
                }
            }
            _ => {}
        }
        if len == 0 || len > bytes.len() {
            break;
        }
        bytes = &bytes[align(len).min(bytes.len())..];
    }
    Ok((events, done))
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::address::AddressHeaderFlags;
    use netlink_packet_route::link::InfoKind;
    use netlink_packet_route::route::RouteHeader;

    fn emit(msg: RouteNetlinkMessage, seq: u32) -> Vec<u8> {
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        m.header.sequence_number = seq;
        m.finalize();
        let mut b = vec![0; m.buffer_len()];
        m.serialize(&mut b);
        b
    }

    fn link(index: u32, name: &str, flags: LinkFlags) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Veth,
            )]));
        RouteNetlinkMessage::NewLink(m)
    }

    #[test]
    fn link_flags_and_kind_survive_the_wire() {
        let bytes = emit(
            link(
                7,
                "wlan0",
                LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running,
            ),
            0,
        );
        let (ev, done) = parse_datagram(&bytes, None).unwrap();
        assert!(!done);
        assert_eq!(
            ev,
            [MonitorEvent::Link(LinkSeen {
                index: 7,
                name: "wlan0".into(),
                admin_up: true,
                carrier: true,
                loopback: false,
                info_kind: Some("veth".into()),
            })]
        );
        let (ev, _) = parse_datagram(&emit(link(7, "wlan0", LinkFlags::Up), 0), None).unwrap();
        assert!(matches!(&ev[0], MonitorEvent::Link(l) if l.admin_up && !l.carrier));
    }

    #[test]
    fn tentative_addresses_are_not_usable_and_several_messages_share_a_datagram() {
        let mut a = AddressMessage::default();
        a.header.family = AddressFamily::Inet6;
        a.header.index = 3;
        a.header.prefix_len = 64;
        a.header.flags = AddressHeaderFlags::Tentative;
        let ip: IpAddr = "2001:db8::2".parse().unwrap();
        a.attributes.push(AddressAttribute::Address(ip));
        let mut bytes = emit(RouteNetlinkMessage::NewAddress(a.clone()), 0);
        a.header.flags = AddressHeaderFlags::empty();
        bytes.extend(emit(RouteNetlinkMessage::NewAddress(a.clone()), 0));
        bytes.extend(emit(RouteNetlinkMessage::DelAddress(a), 0));
        let (ev, _) = parse_datagram(&bytes, None).unwrap();
        let present: Vec<bool> = ev
            .iter()
            .map(|e| match e {
                MonitorEvent::Address { present, addr, .. } => {
                    assert_eq!(*addr, ip);
                    *present
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(present, [false, true, false]);
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
        let mut bytes = emit(RouteNetlinkMessage::NewRoute(r.clone()), 9);
        let mut done = NetlinkMessage::<RouteNetlinkMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Done(netlink_packet_core::DoneMessage::default()),
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
            [MonitorEvent::Route {
                route: crate::core::Route {
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
    }
}
