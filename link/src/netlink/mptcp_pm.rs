//! The MPTCP path manager's generic netlink family, `mptcp_pm` (`include/uapi/linux/mptcp_pm.h`):
//! endpoint requests (the in-kernel path manager: `ip mptcp endpoint`), subflow requests by
//! connection token (the userspace path manager), and the `mptcp_pm_events` multicast events.

use std::net::{IpAddr, SocketAddr};

use super::attr::{self, Attrs};
use super::genl::{self, GenlHeader};
use super::{AF_INET, AF_INET6, family_of};

/// The family's name.
pub const FAMILY_NAME: &str = "mptcp_pm";
/// `MPTCP_PM_VER`: the version requests carry.
pub const VERSION: u8 = 1;
/// The multicast group connection and subflow events go to (`MPTCP_PM_EV_GRP_NAME`).
pub const EVENTS_GROUP: &str = "mptcp_pm_events";

kernel_enum! {
    /// `mptcp_pm` commands (`MPTCP_PM_CMD_*`).
    pub enum Command: u8 {
        /// `ADD_ADDR` (1): add an endpoint.
        AddAddr = 1,
        /// `DEL_ADDR` (2): delete an endpoint (closing the subflows that use it).
        DelAddr = 2,
        /// `GET_ADDR` (3): one endpoint, or (dump) all of them.
        GetAddr = 3,
        /// `FLUSH_ADDRS` (4): delete every endpoint.
        FlushAddrs = 4,
        /// `SET_LIMITS` (5).
        SetLimits = 5,
        /// `GET_LIMITS` (6).
        GetLimits = 6,
        /// `SET_FLAGS` (7): change an endpoint's flags, or (with a token) a subflow's backup flag.
        SetFlags = 7,
        /// `ANNOUNCE` (8): announce an address on a connection (userspace PM).
        Announce = 8,
        /// `REMOVE` (9): withdraw an announced address (userspace PM).
        Remove = 9,
        /// `SUBFLOW_CREATE` (10): open a subflow on a connection (userspace PM).
        SubflowCreate = 10,
        /// `SUBFLOW_DESTROY` (11): close a subflow (userspace PM).
        SubflowDestroy = 11,
    }
}

/// Request attribute types (`MPTCP_PM_ATTR_*`).
pub mod pm_attr {
    /// `ADDR`: nested [`addr_attr`](super::addr_attr): the endpoint, or the local address.
    pub const ADDR: u16 = 1;
    /// `RCV_ADD_ADDRS`: u32 limit.
    pub const RCV_ADD_ADDRS: u16 = 2;
    /// `SUBFLOWS`: u32 limit.
    pub const SUBFLOWS: u16 = 3;
    /// `TOKEN`: u32 connection token.
    pub const TOKEN: u16 = 4;
    /// `LOC_ID`: u8 local address id.
    pub const LOC_ID: u16 = 5;
    /// `ADDR_REMOTE`: nested [`addr_attr`](super::addr_attr): the remote address.
    pub const ADDR_REMOTE: u16 = 6;
}

/// Address attribute types, inside [`pm_attr::ADDR`] and [`pm_attr::ADDR_REMOTE`]
/// (`MPTCP_PM_ADDR_ATTR_*`).
pub mod addr_attr {
    /// `FAMILY`: u16 `AF_INET` / `AF_INET6`.
    pub const FAMILY: u16 = 1;
    /// `ID`: u8 address id.
    pub const ID: u16 = 2;
    /// `ADDR4`: `struct in_addr`.
    pub const ADDR4: u16 = 3;
    /// `ADDR6`: `struct in6_addr`.
    pub const ADDR6: u16 = 4;
    /// `PORT`: u16, host order.
    pub const PORT: u16 = 5;
    /// `FLAGS`: u32 [`EndpointFlags`](super::EndpointFlags).
    pub const FLAGS: u16 = 6;
    /// `IF_IDX`: s32 interface index.
    pub const IF_IDX: u16 = 7;
}

/// An endpoint's flags (`MPTCP_PM_ADDR_FLAG_*`); bits roam does not name are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EndpointFlags(pub u32);

impl EndpointFlags {
    /// `signal`: announce the address to peers (ADD_ADDR).
    pub const SIGNAL: EndpointFlags = EndpointFlags(1 << 0);
    /// `subflow`: open an extra subflow from this address.
    pub const SUBFLOW: EndpointFlags = EndpointFlags(1 << 1);
    /// `backup`: subflows from this address carry data only when no other can.
    pub const BACKUP: EndpointFlags = EndpointFlags(1 << 2);
    /// `fullmesh`: a subflow to every address the peer announced.
    pub const FULLMESH: EndpointFlags = EndpointFlags(1 << 3);
    /// `implicit`: made by the kernel for an address a subflow used.
    pub const IMPLICIT: EndpointFlags = EndpointFlags(1 << 4);
    /// No flag.
    pub const NONE: EndpointFlags = EndpointFlags(0);

    /// Whether every bit of `f` is set.
    pub fn contains(self, f: EndpointFlags) -> bool {
        self.0 & f.0 == f.0
    }

    /// `BACKUP` when `backup`, else none.
    pub fn backup_if(backup: bool) -> EndpointFlags {
        if backup { Self::BACKUP } else { Self::NONE }
    }
}

impl std::ops::BitOr for EndpointFlags {
    type Output = EndpointFlags;
    fn bitor(self, o: EndpointFlags) -> EndpointFlags {
        EndpointFlags(self.0 | o.0)
    }
}

/// A nested `mptcp_pm` address: every part optional, as requests and replies carry different
/// subsets. Emitted in one order: family, address, id, port, flags, interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Address {
    /// The address (with its family).
    pub addr: Option<IpAddr>,
    /// The address id.
    pub id: Option<u8>,
    /// The port (0 is left out when emitting: "any").
    pub port: Option<u16>,
    /// Endpoint flags.
    pub flags: Option<EndpointFlags>,
    /// Interface index.
    pub if_idx: Option<i32>,
}

impl Address {
    /// An address with its port, when the port is not 0.
    pub fn socket(a: SocketAddr) -> Address {
        Address {
            addr: Some(a.ip()),
            port: (a.port() != 0).then_some(a.port()),
            ..Address::default()
        }
    }

    /// Reads a nested address's attributes. A family without a matching address, or an
    /// address of the wrong size, leaves `addr` empty.
    pub fn parse(buf: &[u8]) -> Address {
        let mut out = Address::default();
        let mut family = None;
        let (mut v4, mut v6) = (None, None);
        for a in Attrs::new(buf) {
            match a.kind() {
                addr_attr::FAMILY => family = a.u16(),
                addr_attr::ID => out.id = a.u8(),
                addr_attr::ADDR4 => v4 = a.ipv4(),
                addr_attr::ADDR6 => v6 = a.ipv6(),
                addr_attr::PORT => out.port = a.u16(),
                addr_attr::FLAGS => out.flags = a.u32().map(EndpointFlags),
                addr_attr::IF_IDX => out.if_idx = a.i32(),
                _ => {}
            }
        }
        out.addr = match family {
            Some(AF_INET) => v4.map(IpAddr::V4),
            Some(AF_INET6) => v6.map(IpAddr::V6),
            _ => v4.map(IpAddr::V4).or(v6.map(IpAddr::V6)),
        };
        out
    }

    /// Appends the address as nested attribute `kind`.
    pub fn emit(&self, out: &mut Vec<u8>, kind: u16) {
        attr::put_nested(out, kind, |b| {
            if let Some(a) = self.addr {
                attr::put(b, addr_attr::FAMILY, &family_of(a).to_ne_bytes());
                match a {
                    IpAddr::V4(_) => attr::put_ip(b, addr_attr::ADDR4, a),
                    IpAddr::V6(_) => attr::put_ip(b, addr_attr::ADDR6, a),
                }
            }
            if let Some(id) = self.id {
                attr::put(b, addr_attr::ID, &[id]);
            }
            if let Some(p) = self.port.filter(|p| *p != 0) {
                attr::put(b, addr_attr::PORT, &p.to_ne_bytes());
            }
            if let Some(f) = self.flags {
                attr::put(b, addr_attr::FLAGS, &f.0.to_ne_bytes());
            }
            if let Some(i) = self.if_idx {
                attr::put(b, addr_attr::IF_IDX, &i.to_ne_bytes());
            }
        });
    }
}

/// An `mptcp_pm` request (or a `GET_ADDR` reply, which has the same shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The command.
    pub cmd: Command,
    /// The connection (userspace path manager commands).
    pub token: Option<u32>,
    /// The endpoint, or the subflow's local address.
    pub addr: Option<Address>,
    /// The subflow's remote address.
    pub remote: Option<Address>,
}

impl Request {
    /// A request with no attributes.
    pub fn new(cmd: Command) -> Request {
        Request {
            cmd,
            token: None,
            addr: None,
            remote: None,
        }
    }

    /// The attributes: token, address, remote address.
    pub fn attrs(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(t) = self.token {
            attr::put(&mut out, pm_attr::TOKEN, &t.to_ne_bytes());
        }
        if let Some(a) = &self.addr {
            a.emit(&mut out, pm_attr::ADDR);
        }
        if let Some(r) = &self.remote {
            r.emit(&mut out, pm_attr::ADDR_REMOTE);
        }
        out
    }

    /// The whole message for family id `family`.
    pub fn emit(&self, family: u16, flags: u16, seq: u32) -> Vec<u8> {
        genl::request(
            family,
            flags,
            seq,
            GenlHeader {
                cmd: self.cmd.into(),
                version: VERSION,
            },
            &self.attrs(),
        )
    }

    /// Reads a message's command and attributes.
    pub fn parse(cmd: u8, attrs: &[u8]) -> Request {
        let mut r = Request::new(cmd.into());
        for a in Attrs::new(attrs) {
            match a.kind() {
                pm_attr::TOKEN => r.token = a.u32(),
                pm_attr::ADDR => r.addr = Some(Address::parse(a.value())),
                pm_attr::ADDR_REMOTE => r.remote = Some(Address::parse(a.value())),
                _ => {}
            }
        }
        r
    }
}

kernel_enum! {
    /// Event types (`enum mptcp_event_type`).
    pub enum EventType: u8 {
        /// `CREATED` (1): a connection was created (its first subflow's SYN).
        Created = 1,
        /// `ESTABLISHED` (2): the connection is established.
        Established = 2,
        /// `CLOSED` (3): the connection closed.
        Closed = 3,
        /// `ANNOUNCED` (6): the peer announced an address.
        Announced = 6,
        /// `REMOVED` (7): the peer withdrew an address.
        Removed = 7,
        /// `SUB_ESTABLISHED` (10): a subflow is established.
        SubEstablished = 10,
        /// `SUB_CLOSED` (11): a subflow closed, or a join failed.
        SubClosed = 11,
        /// `SUB_PRIORITY` (13): a subflow's backup flag changed.
        SubPriority = 13,
        /// `LISTENER_CREATED` (15): a listening socket was made (e.g. for a `signal` endpoint
        /// with a port).
        ListenerCreated = 15,
        /// `LISTENER_CLOSED` (16).
        ListenerClosed = 16,
    }
}

/// Event attribute types (`enum mptcp_event_attr`).
pub mod event_attr {
    /// `TOKEN`: u32.
    pub const TOKEN: u16 = 1;
    /// `FAMILY`: u16.
    pub const FAMILY: u16 = 2;
    /// `LOC_ID`: u8.
    pub const LOC_ID: u16 = 3;
    /// `REM_ID`: u8.
    pub const REM_ID: u16 = 4;
    /// `SADDR4`: be32.
    pub const SADDR4: u16 = 5;
    /// `SADDR6`: `struct in6_addr`.
    pub const SADDR6: u16 = 6;
    /// `DADDR4`: be32.
    pub const DADDR4: u16 = 7;
    /// `DADDR6`: `struct in6_addr`.
    pub const DADDR6: u16 = 8;
    /// `SPORT`: be16 (network order, unlike request ports).
    pub const SPORT: u16 = 9;
    /// `DPORT`: be16.
    pub const DPORT: u16 = 10;
    /// `BACKUP`: u8.
    pub const BACKUP: u16 = 11;
    /// `ERROR`: u8.
    pub const ERROR: u16 = 12;
    /// `FLAGS`: u16.
    pub const FLAGS: u16 = 13;
    /// `TIMEOUT`: u32.
    pub const TIMEOUT: u16 = 14;
    /// `IF_IDX`: s32.
    pub const IF_IDX: u16 = 15;
    /// `RESET_REASON`: u32.
    pub const RESET_REASON: u16 = 16;
    /// `RESET_FLAGS`: u32.
    pub const RESET_FLAGS: u16 = 17;
    /// `SERVER_SIDE`: u8, present (1) on the side that accepted the connection.
    pub const SERVER_SIDE: u16 = 18;
}

/// One `mptcp_pm_events` event with every attribute the kernel may give; which are present
/// depends on the type (see `linux/mptcp_pm.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The event type.
    pub kind: EventType,
    /// The connection.
    pub token: Option<u32>,
    /// Local address id.
    pub loc_id: Option<u8>,
    /// Remote address id.
    pub rem_id: Option<u8>,
    /// Source (local) address.
    pub saddr: Option<IpAddr>,
    /// Destination (remote) address.
    pub daddr: Option<IpAddr>,
    /// Source port, host order.
    pub sport: Option<u16>,
    /// Destination port, host order.
    pub dport: Option<u16>,
    /// The subflow's backup flag.
    pub backup: Option<bool>,
    /// An error (on `SUB_CLOSED`).
    pub error: Option<u8>,
    /// `MPTCP_PM_EV_FLAG_*` bits.
    pub flags: Option<u16>,
    /// The address announcement timeout.
    pub timeout: Option<u32>,
    /// The subflow's interface.
    pub if_idx: Option<i32>,
    /// Reset reason.
    pub reset_reason: Option<u32>,
    /// Reset flags.
    pub reset_flags: Option<u32>,
    /// The connection was accepted here (the peer opened it).
    pub server_side: bool,
}

impl Event {
    /// Reads an event from its generic netlink command and attributes. Ports are converted
    /// to host order.
    pub fn parse(cmd: u8, attrs: &[u8]) -> Event {
        use event_attr as ea;
        let mut e = Event {
            kind: cmd.into(),
            token: None,
            loc_id: None,
            rem_id: None,
            saddr: None,
            daddr: None,
            sport: None,
            dport: None,
            backup: None,
            error: None,
            flags: None,
            timeout: None,
            if_idx: None,
            reset_reason: None,
            reset_flags: None,
            server_side: false,
        };
        for a in Attrs::new(attrs) {
            match a.kind() {
                ea::TOKEN => e.token = a.u32(),
                ea::LOC_ID => e.loc_id = a.u8(),
                ea::REM_ID => e.rem_id = a.u8(),
                ea::SADDR4 => e.saddr = a.ipv4().map(IpAddr::V4).or(e.saddr),
                ea::SADDR6 => e.saddr = a.ipv6().map(IpAddr::V6).or(e.saddr),
                ea::DADDR4 => e.daddr = a.ipv4().map(IpAddr::V4).or(e.daddr),
                ea::DADDR6 => e.daddr = a.ipv6().map(IpAddr::V6).or(e.daddr),
                ea::SPORT => e.sport = a.be16(),
                ea::DPORT => e.dport = a.be16(),
                ea::BACKUP => e.backup = a.u8().map(|b| b != 0),
                ea::ERROR => e.error = a.u8(),
                ea::FLAGS => e.flags = a.u16(),
                ea::TIMEOUT => e.timeout = a.u32(),
                ea::IF_IDX => e.if_idx = a.i32(),
                ea::RESET_REASON => e.reset_reason = a.u32(),
                ea::RESET_FLAGS => e.reset_flags = a.u32(),
                ea::SERVER_SIDE => e.server_side = a.value().first().is_some_and(|b| *b != 0),
                _ => {}
            }
        }
        e
    }

    /// The local address and port, when the event has both addresses (a missing port is 0).
    pub fn local(&self) -> Option<SocketAddr> {
        self.daddr?;
        Some(SocketAddr::new(self.saddr?, self.sport.unwrap_or(0)))
    }

    /// The remote address and port, when the event has both addresses.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.saddr?;
        Some(SocketAddr::new(self.daddr?, self.dport.unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_values_round_trip_and_unknown_ones_are_kept() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Command::from(v)), v);
            assert_eq!(u8::from(EventType::from(v)), v);
        }
        assert_eq!(Command::from(12), Command::Other(12));
        assert_eq!(EventType::from(4), EventType::Other(4));
    }

    #[test]
    fn an_address_reads_back_what_it_emits() {
        let a = Address {
            addr: Some("2001:db8::2".parse().unwrap()),
            id: Some(9),
            port: Some(443),
            flags: Some(EndpointFlags::SUBFLOW | EndpointFlags::BACKUP),
            if_idx: Some(4),
        };
        let mut b = Vec::new();
        a.emit(&mut b, pm_attr::ADDR);
        let r = Request::parse(3, &b);
        assert_eq!(r.addr, Some(a));
        assert!(
            r.addr
                .unwrap()
                .flags
                .unwrap()
                .contains(EndpointFlags::BACKUP)
        );
        // Port 0 means any and is left out.
        let mut b = Vec::new();
        Address::socket("198.18.0.1:0".parse().unwrap()).emit(&mut b, pm_attr::ADDR);
        assert_eq!(Request::parse(3, &b).addr.unwrap().port, None);
    }
}
