//! The embedded monitor's route socket: one dump of links and addresses, then the kernel's
//! notifications for both (`ip monitor link address` shows the same stream). No polling.
//!
//! The agent has its own monitor (`roam_agent::monitor`) with routes and classification; the
//! SDK does not depend on the agent crate (it brings clap and tracing-subscriber), so the two
//! should move into a shared crate.

use std::io;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use super::links::LinkTable;

const GROUPS: [u32; 3] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV6_IFADDR,
];

/// A route socket subscribed to link and address changes of the calling thread's namespace.
pub struct RouteSocket {
    socket: TokioSocket,
    seq: u32,
}

impl std::fmt::Debug for RouteSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSocket")
            .field("seq", &self.seq)
            .finish()
    }
}

impl RouteSocket {
    /// Opens the socket and joins the groups before dumping, so no change is missed.
    pub fn open() -> io::Result<RouteSocket> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        let s = socket.socket_mut();
        s.bind_auto()?;
        s.connect(&SocketAddr::new(0, 0))?;
        for g in GROUPS {
            s.add_membership(g)?;
        }
        s.set_rx_buf_sz(1024 * 1024)?;
        Ok(RouteSocket { socket, seq: 0 })
    }

    /// Fills `table` from a dump of links, then addresses.
    pub async fn dump(&mut self, table: &mut LinkTable) -> io::Result<()> {
        for req in [
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        ] {
            self.seq = self.seq.wrapping_add(1);
            let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(req));
            msg.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
            msg.header.sequence_number = self.seq;
            msg.finalize();
            let mut bytes = vec![0; msg.buffer_len()];
            msg.serialize(&mut bytes);
            self.socket.send(&bytes).await?;
            // Notifications that arrive during the dump are applied too, in order.
            while !self.read(table, Some(self.seq)).await?.1 {}
        }
        Ok(())
    }

    /// Waits for the next datagram and applies it; returns true when the table changed.
    pub async fn next(&mut self, table: &mut LinkTable) -> io::Result<bool> {
        Ok(self.read(table, None).await?.0)
    }

    /// Reads one datagram: (table changed, dump `seq` finished).
    async fn read(&mut self, table: &mut LinkTable, seq: Option<u32>) -> io::Result<(bool, bool)> {
        let (buf, _) = self.socket.recv_from_full().await?;
        let mut bytes = &buf[..];
        let (mut changed, mut done) = (false, false);
        while bytes.len() >= 16 {
            let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if len < 16 || len > bytes.len() {
                break;
            }
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len]) {
                Ok(msg) => {
                    let mine = seq == Some(msg.header.sequence_number);
                    match &msg.payload {
                        NetlinkPayload::InnerMessage(m) => changed |= table.apply(m),
                        NetlinkPayload::Done(_) if mine => done = true,
                        NetlinkPayload::Error(e) if mine => match e.code {
                            None => done = true,
                            Some(_) => return Err(e.to_io()),
                        },
                        _ => {}
                    }
                }
                // An attribute this crate does not know (a newer kernel) is not fatal.
                Err(e) => tracing::debug!(error = %e, "unparsed netlink message skipped"),
            }
            bytes = &bytes[((len + 3) & !3).min(bytes.len())..];
        }
        Ok((changed, done))
    }
}

/// Whether a route in the kernel's tables (not only the on-link guess the kernel makes for a
/// socket bound to a device) takes traffic from `local` on interface `oif` to `peer`:
/// `ip route get fibmatch PEER from LOCAL oif DEV`. `Err` with `EHOSTUNREACH` or
/// `ENETUNREACH` when none does (a link whose address is back before its routes); other
/// errors mean the kernel could not be asked (no netlink in a sandbox, say).
pub fn fib_route(local: std::net::IpAddr, peer: std::net::IpAddr, oif: u32) -> io::Result<()> {
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage};
    let addr = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => RouteAddress::Inet(a),
        std::net::IpAddr::V6(a) => RouteAddress::Inet6(a),
    };
    let mut m = RouteMessage::default();
    let (family, len) = if peer.is_ipv4() {
        (AddressFamily::Inet, 32)
    } else {
        (AddressFamily::Inet6, 128)
    };
    m.header.address_family = family;
    m.header.destination_prefix_length = len;
    m.header.source_prefix_length = len;
    m.header.flags = RouteFlags::FibMatch;
    m.attributes.push(RouteAttribute::Destination(addr(peer)));
    m.attributes.push(RouteAttribute::Source(addr(local)));
    m.attributes.push(RouteAttribute::Oif(oif));
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetRoute(m)),
    );
    req.header.flags = NLM_F_REQUEST;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);

    let mut s = netlink_sys::Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    // The kernel answers inside sendmsg; the timeout only guards against the unexpected.
    socket2::SockRef::from(&s).set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
    s.send(&buf, 0)?;
    let mut rx = vec![0u8; 8192];
    let n = s.recv(&mut &mut rx[..], 0)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
        _ => Ok(()),
    }
}
