//! Linux I/O for the link model: the route socket roamd and the SDK both read (dump, then the
//! kernel's notifications; no polling), the FIB lookup a session asks before moving, the
//! interface-index lookup, [`DiagSocket`] (sock_diag lookups of one socket), and
//! [`SysfsFacts::read`], the facts the classifier takes.
//!
//! Two `unsafe` calls live here, each with its contract stated where it is made: registering
//! the socket with tokio, and `if_nametoindex`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::unix::AsyncFd;

use crate::classify::SysfsFacts;
use crate::rtnl::{LinkEvent, parse_datagram};

/// What a [`RouteSocket`] follows besides answering dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Nothing: the socket only answers dumps (no notification can pile up unread).
    Nothing,
    /// Link and address changes.
    LinksAndAddresses,
    /// Link, address and route changes.
    LinksAddressesAndRoutes,
}

impl Watch {
    fn groups(self) -> &'static [u32] {
        const LA: [u32; 3] = [
            libc::RTNLGRP_LINK,
            libc::RTNLGRP_IPV4_IFADDR,
            libc::RTNLGRP_IPV6_IFADDR,
        ];
        const LAR: [u32; 5] = [
            libc::RTNLGRP_LINK,
            libc::RTNLGRP_IPV4_IFADDR,
            libc::RTNLGRP_IPV6_IFADDR,
            libc::RTNLGRP_IPV4_ROUTE,
            libc::RTNLGRP_IPV6_ROUTE,
        ];
        match self {
            Watch::Nothing => &[],
            Watch::LinksAndAddresses => &LA,
            Watch::LinksAddressesAndRoutes => &LAR,
        }
    }
}

/// Why a route socket stopped or must resynchronise.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The kernel dropped notifications because the socket buffer was full. The reader's view
    /// is stale: dump again.
    #[error("the kernel dropped netlink notifications (receive buffer full); re-dumping")]
    Overrun,
    /// The socket failed.
    #[error("netlink route socket: {0}")]
    Io(#[from] io::Error),
}

impl From<SocketError> for io::Error {
    fn from(e: SocketError) -> io::Error {
        match e {
            SocketError::Io(e) => e,
            SocketError::Overrun => io::Error::other(e.to_string()),
        }
    }
}

/// A netlink route socket of the calling thread's network namespace, registered with tokio.
#[derive(Debug)]
pub struct RouteSocket {
    socket: AsyncFd<Socket>,
    buf: Vec<u8>,
    seq: u32,
    watch: Watch,
}

impl RouteSocket {
    /// Opens the socket and joins the groups of `watch`. Joining happens before any dump, so
    /// nothing that changes during the dump is missed. Needs a tokio runtime with I/O enabled.
    pub fn open(watch: Watch) -> io::Result<RouteSocket> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        for g in watch.groups() {
            socket.add_membership(*g)?;
        }
        // A burst (hundreds of veths created by a test, a modem re-registering) must not
        // overflow the default 200 KiB before the reader gets to it.
        socket.set_rx_buf_sz(4 * 1024 * 1024)?;
        socket.set_non_blocking(true)?;
        // SAFETY: the AsyncFd takes ownership of the Socket, whose fd stays open and the same
        // until the AsyncFd (and with it the Socket) is dropped.
        let socket = unsafe { AsyncFd::register(socket) }?;
        Ok(RouteSocket {
            socket,
            buf: vec![0; 64 * 1024],
            seq: 0,
            watch,
        })
    }

    /// Dumps links, then addresses, then (when the socket watches routes) routes of every
    /// family. Notifications that arrive meanwhile are included, in order.
    pub async fn dump(&mut self) -> Result<Vec<LinkEvent>, SocketError> {
        let mut requests = vec![
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        ];
        if self.watch == Watch::LinksAddressesAndRoutes {
            requests.push(RouteNetlinkMessage::GetRoute({
                let mut m = RouteMessage::default();
                m.header.address_family = AddressFamily::Unspec;
                m
            }));
        }
        let mut out = Vec::new();
        for req in requests {
            self.seq = self.seq.wrapping_add(1);
            let bytes = request(req, NLM_F_DUMP | NLM_F_REQUEST, self.seq);
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

    /// Waits for the kernel's next notifications.
    pub async fn next(&mut self) -> Result<Vec<LinkEvent>, SocketError> {
        Ok(self.read(None).await?.0)
    }

    /// Reads one datagram; returns its events and whether it ended the request `seq`.
    async fn read(&mut self, seq: Option<u32>) -> Result<(Vec<LinkEvent>, bool), SocketError> {
        let n = loop {
            let mut guard = self.socket.readable().await?;
            let buf = &mut self.buf;
            match guard.try_io(|s| {
                let mut slice = &mut buf[..];
                s.get_ref().recv(&mut slice, 0)
            }) {
                Ok(Ok(n)) => break n,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(SocketError::Overrun);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        };
        Ok(parse_datagram(&self.buf[..n.min(self.buf.len())], seq)?)
    }
}

fn request(req: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(req));
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut bytes = vec![0; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

/// Whether a route in the kernel's tables (not only the on-link guess the kernel makes for a
/// socket bound to a device) takes traffic from `local` on interface `oif` to `peer`:
/// `ip route get fibmatch PEER from LOCAL oif DEV`. `Err` with `EHOSTUNREACH` or
/// `ENETUNREACH` when none does (a link whose address is back before its routes); other
/// errors mean the kernel could not be asked (no netlink in a sandbox, say). Blocking, but the
/// kernel answers inside `sendmsg`: it returns at once.
pub fn fib_route(local: IpAddr, peer: IpAddr, oif: u32) -> io::Result<()> {
    let addr = |ip: IpAddr| match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
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
    let buf = request(RouteNetlinkMessage::GetRoute(m), NLM_F_REQUEST, 1);

    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    // The timeout only guards against the unexpected.
    socket2::SockRef::from(&s).set_read_timeout(Some(Duration::from_secs(1)))?;
    s.send(&buf, 0)?;
    let mut rx = vec![0u8; 8192];
    let n = s.recv(&mut &mut rx[..], 0)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[..n.min(rx.len())])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
        _ => Ok(()),
    }
}

/// The kernel index of interface `name` in the calling thread's namespace; `None` when there
/// is no such interface (or the name holds a NUL byte, which no interface name does).
pub fn if_nametoindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that lives across the call; if_nametoindex only
    // reads it and keeps no pointer to it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

impl SysfsFacts {
    /// Reads what sysfs says about interface `name` below `root` (normally [`SYSFS_NET`]).
    /// Missing files are not errors: they mean "sysfs does not say".
    pub fn read(root: &Path, name: &str) -> SysfsFacts {
        // A name with a slash or `..` would leave the directory: no kernel name has one.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return SysfsFacts::default();
        }
        let dir = root.join(name);
        let devtype = std::fs::read_to_string(dir.join("uevent"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("DEVTYPE="))
                    .map(|v| v.trim().to_owned())
            });
        SysfsFacts {
            devtype,
            wireless: dir.join("wireless").is_dir() || dir.join("phy80211").exists(),
        }
    }
}

/// Where the kernel lists network interfaces in sysfs.
pub const SYSFS_NET: &str = "/sys/class/net";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_reader_reads_devtype_and_wireless() {
        let root = std::env::temp_dir().join(format!("roam-link-sysfs-{}", std::process::id()));
        let dir = root.join("wlp2s0");
        std::fs::create_dir_all(dir.join("wireless")).unwrap();
        std::fs::write(
            dir.join("uevent"),
            "DEVTYPE=wlan\nINTERFACE=wlp2s0\nIFINDEX=3\n",
        )
        .unwrap();
        let f = SysfsFacts::read(&root, "wlp2s0");
        assert_eq!(
            f,
            SysfsFacts {
                devtype: Some("wlan".into()),
                wireless: true
            }
        );
        assert_eq!(SysfsFacts::read(&root, "nothere"), SysfsFacts::default());
        assert_eq!(SysfsFacts::read(&root, ".."), SysfsFacts::default());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn loopback_has_an_index_and_nonsense_has_none() {
        assert!(if_nametoindex("lo").is_some_and(|i| i > 0));
        assert_eq!(if_nametoindex("no-such-if0"), None);
        assert_eq!(if_nametoindex("a\0b"), None);
    }

    #[tokio::test]
    async fn the_dump_names_loopback_with_its_address() {
        let mut s = RouteSocket::open(Watch::Nothing).unwrap();
        let events = s.dump().await.unwrap();
        let lo = if_nametoindex("lo").unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, LinkEvent::Link(l) if l.index == lo && l.loopback))
        );
        assert!(events.iter().any(|e| matches!(
            e,
            LinkEvent::Address { index, facts, present: true }
                if *index == lo && facts.addr.is_loopback()
        )));
    }
}

/// A `NETLINK_SOCK_DIAG` socket of the calling thread's network namespace, for lookups of one
/// socket at a time (the SDK's subflow flags, roamd's connection owners): one request, its
/// answer. The messages themselves are [`crate::netlink::sock_diag`]'s.
#[derive(Debug)]
pub struct DiagSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl DiagSocket {
    /// Opens one.
    pub fn open() -> io::Result<DiagSocket> {
        let mut sock = Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(DiagSocket {
            sock,
            seq: 0,
            buf: vec![0u8; 8192],
        })
    }

    /// Sends the request `build` makes for the next sequence number and returns that number
    /// and the answer datagram carrying it. `build` returning `None` (e.g. mixed address
    /// families) is an `InvalidInput` error.
    pub fn ask(&mut self, build: impl FnOnce(u32) -> Option<Vec<u8>>) -> io::Result<(u32, &[u8])> {
        self.seq = self.seq.wrapping_add(1);
        let req = build(self.seq)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mixed address families"))?;
        self.sock.send(&req, 0)?;
        // The kernel answers a single-socket request while handling the send: the answer is
        // queued already, and a missing one is an error, not a wait. Stale answers (an
        // earlier request's, left by an error) are skipped, a few at most.
        for _ in 0..8 {
            self.buf.resize(8192, 0);
            let n = self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT)?;
            let n = n.min(self.buf.len());
            if crate::netlink::header::Header::parse(&self.buf[..n]).map(|h| h.seq)
                == Some(self.seq)
            {
                return Ok((self.seq, &self.buf[..n]));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag answered other requests only",
        ))
    }
}
