//! Socket diagnostics for TCP sockets (`NETLINK_SOCK_DIAG`, `include/uapi/linux/inet_diag.h`)
//! and the MPTCP subflow info the kernel attaches to a subflow's answer
//! (`INET_DIAG_ULP_INFO` > `INET_ULP_INFO_MPTCP` > `MPTCP_SUBFLOW_ATTR_*`, `net/mptcp/diag.c`,
//! `include/uapi/linux/mptcp.h`).
//!
//! | struct | size | fields (offset) |
//! | --- | --- | --- |
//! | `inet_diag_req_v2` | 56 | family (0), protocol (1), ext (2), states (4), id (8) |
//! | `inet_diag_sockid` | 48 | sport be (0), dport be (2), src (4), dst (20), if (36), cookie (40) |
//! | `inet_diag_msg` | 72 | family (0), state (1), timer (2), retrans (3), id (4), expires (52), rqueue (56), wqueue (60), uid (64), inode (68) |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::attr::Attrs;
use super::header::{self, MessageType};
use super::{AF_INET, AF_INET6, family_of};

/// `SOCK_DIAG_BY_FAMILY`: the message type of requests and answers.
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u8 = 6;
/// `INET_DIAG_NOCOOKIE`: match any cookie.
pub const NOCOOKIE: u64 = !0;
/// Every TCP state, for `states`.
pub const ALL_STATES: u32 = !0;

/// `inet_diag` attribute types (`INET_DIAG_*`) roam asks for or reads.
pub mod diag_attr {
    /// `INFO`: `struct tcp_info`. Asking for it (bit `INFO - 1` of `ext`) also brings the
    /// ULP nest.
    pub const INFO: u16 = 2;
    /// `ULP_INFO`: nested `INET_ULP_INFO_*`.
    pub const ULP_INFO: u16 = 19;
}

/// ULP info attribute types (`INET_ULP_INFO_*`) inside [`diag_attr::ULP_INFO`].
pub mod ulp_attr {
    /// `NAME`: the ULP's name (`mptcp`).
    pub const NAME: u16 = 1;
    /// `MPTCP`: nested `MPTCP_SUBFLOW_ATTR_*`.
    pub const MPTCP: u16 = 3;
}

/// MPTCP subflow attribute types (`MPTCP_SUBFLOW_ATTR_*`) inside [`ulp_attr::MPTCP`].
pub mod subflow_attr {
    /// `TOKEN_REM`: u32.
    pub const TOKEN_REM: u16 = 1;
    /// `TOKEN_LOC`: u32.
    pub const TOKEN_LOC: u16 = 2;
    /// `RELWRITE_SEQ`: u32.
    pub const RELWRITE_SEQ: u16 = 3;
    /// `MAP_SEQ`: u64.
    pub const MAP_SEQ: u16 = 4;
    /// `MAP_SFSEQ`: u32.
    pub const MAP_SFSEQ: u16 = 5;
    /// `SSN_OFFSET`: u32.
    pub const SSN_OFFSET: u16 = 6;
    /// `MAP_DATALEN`: u16.
    pub const MAP_DATALEN: u16 = 7;
    /// `FLAGS`: u32 [`SubflowFlags`](super::SubflowFlags).
    pub const FLAGS: u16 = 8;
    /// `ID_REM`: u8.
    pub const ID_REM: u16 = 9;
    /// `ID_LOC`: u8.
    pub const ID_LOC: u16 = 10;
}

/// A subflow's flags (`MPTCP_SUBFLOW_FLAG_*`), what `ss -tni` prints after
/// `tcp-ulp-mptcp flags:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubflowFlags(pub u32);

impl SubflowFlags {
    /// `MCAP_REM`: the peer sent MP_CAPABLE.
    pub const MCAP_REM: u32 = 1 << 0;
    /// `MCAP_LOC`: this end sent MP_CAPABLE.
    pub const MCAP_LOC: u32 = 1 << 1;
    /// `JOIN_REM`: the peer sent MP_JOIN.
    pub const JOIN_REM: u32 = 1 << 2;
    /// `JOIN_LOC`: this end sent MP_JOIN.
    pub const JOIN_LOC: u32 = 1 << 3;
    /// `BKUP_REM`: the peer asked that this subflow be a backup (`ss`'s `B`).
    pub const BKUP_REM: u32 = 1 << 4;
    /// `BKUP_LOC`: this end marked the subflow a backup (MP_JOIN's B bit or MP_PRIO sent;
    /// `ss`'s `b`).
    pub const BKUP_LOC: u32 = 1 << 5;
    /// `FULLY_ESTABLISHED`.
    pub const FULLY_ESTABLISHED: u32 = 1 << 6;
    /// `CONNECTED`.
    pub const CONNECTED: u32 = 1 << 7;
    /// `MAPVALID`.
    pub const MAPVALID: u32 = 1 << 8;

    /// This end marked the subflow a backup (`ss`'s `b`).
    pub fn backup_local(self) -> bool {
        self.0 & Self::BKUP_LOC != 0
    }

    /// The peer marked the subflow a backup (`ss`'s `B`).
    pub fn backup_remote(self) -> bool {
        self.0 & Self::BKUP_REM != 0
    }
}

/// `struct inet_diag_sockid`: a socket's addresses, device and cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockId {
    /// Local address and port.
    pub src: SocketAddr,
    /// Remote address and port.
    pub dst: SocketAddr,
    /// Bound device index (0: any unbound socket, in a request).
    pub ifindex: u32,
    /// The socket's cookie ([`NOCOOKIE`]: any, in a request).
    pub cookie: u64,
}

impl SockId {
    const LEN: usize = 48;

    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.src.port().to_be_bytes());
        out.extend_from_slice(&self.dst.port().to_be_bytes());
        for ip in [self.src.ip(), self.dst.ip()] {
            let mut a = [0u8; 16];
            match ip {
                IpAddr::V4(v) => a[..4].copy_from_slice(&v.octets()),
                IpAddr::V6(v) => a.copy_from_slice(&v.octets()),
            }
            out.extend_from_slice(&a);
        }
        out.extend_from_slice(&self.ifindex.to_ne_bytes());
        // `__u32 idiag_cookie[2]`: the low word first.
        out.extend_from_slice(&(self.cookie as u32).to_ne_bytes());
        out.extend_from_slice(&((self.cookie >> 32) as u32).to_ne_bytes());
    }

    fn parse(family: u16, b: &[u8]) -> Option<SockId> {
        let b = b.get(..Self::LEN)?;
        let ip = |o: usize| -> Option<IpAddr> {
            match family {
                AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(&b[o..o + 4]).ok()?,
                ))),
                AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&b[o..o + 16]).ok()?,
                ))),
                _ => None,
            }
        };
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Some(SockId {
            src: SocketAddr::new(ip(4)?, u16::from_be_bytes([b[0], b[1]])),
            dst: SocketAddr::new(ip(20)?, u16::from_be_bytes([b[2], b[3]])),
            ifindex: u32_at(36),
            cookie: u64::from(u32_at(40)) | u64::from(u32_at(44)) << 32,
        })
    }
}

/// `struct inet_diag_req_v2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// `IPPROTO_*` (TCP for subflows).
    pub protocol: u8,
    /// Extensions asked for: bit `n - 1` for attribute `n` (`1 << (INFO - 1)`).
    pub ext: u8,
    /// TCP states to match, a bit per state.
    pub states: u32,
    /// The socket (the family is its addresses').
    pub id: SockId,
}

impl Request {
    /// The size of `struct inet_diag_req_v2`.
    pub const LEN: usize = 56;

    /// The request roam makes for one TCP subflow `local -> remote` on device `ifindex`:
    /// every state, `INET_DIAG_INFO` asked for (which brings the ULP nest). `None` when the
    /// two addresses are of different families.
    pub fn subflow(local: SocketAddr, remote: SocketAddr, ifindex: u32) -> Option<Request> {
        (local.is_ipv4() == remote.is_ipv4()).then_some(Request {
            protocol: IPPROTO_TCP,
            ext: 1 << (diag_attr::INFO - 1),
            states: ALL_STATES,
            id: SockId {
                src: local,
                dst: remote,
                ifindex,
                cookie: NOCOOKIE,
            },
        })
    }

    /// The whole message (a single-socket lookup: no dump, no ack).
    pub fn emit(&self, seq: u32) -> Vec<u8> {
        let mut body = Vec::with_capacity(Self::LEN);
        body.push(family_of(self.id.src.ip()) as u8);
        body.push(self.protocol);
        body.push(self.ext);
        body.push(0);
        body.extend_from_slice(&self.states.to_ne_bytes());
        self.id.emit(&mut body);
        header::message(
            MessageType::Other(SOCK_DIAG_BY_FAMILY),
            header::NLM_F_REQUEST,
            seq,
            &body,
        )
    }

    /// Reads a request's body (after the netlink header).
    pub fn parse(body: &[u8]) -> Option<Request> {
        let b = body.get(..Self::LEN)?;
        Some(Request {
            protocol: b[1],
            ext: b[2],
            states: u32::from_ne_bytes(b[4..8].try_into().ok()?),
            id: SockId::parse(u16::from(b[0]), &b[8..])?,
        })
    }
}

/// `struct inet_diag_msg`: one socket of an answer, and the attributes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket<'a> {
    /// TCP state (`TCP_ESTABLISHED` is 1).
    pub state: u8,
    /// The socket.
    pub id: SockId,
    /// Owner uid.
    pub uid: u32,
    /// Inode.
    pub inode: u32,
    /// The attributes (`INET_DIAG_*`).
    pub attrs: &'a [u8],
}

impl<'a> Socket<'a> {
    /// The size of `struct inet_diag_msg`.
    pub const LEN: usize = 72;

    /// Reads a `SOCK_DIAG_BY_FAMILY` answer's body (after the netlink header).
    pub fn parse(body: &'a [u8]) -> Option<Socket<'a>> {
        let b = body.get(..Self::LEN)?;
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Some(Socket {
            state: b[1],
            id: SockId::parse(u16::from(b[0]), &b[4..52])?,
            uid: u32_at(64),
            inode: u32_at(68),
            attrs: &body[Self::LEN..],
        })
    }

    /// The ULP info, when the answer has it (an MPTCP subflow, on a kernel that shows it to
    /// this process: Linux 6.x does to anyone, 5.x only to CAP_NET_ADMIN).
    pub fn ulp(&self) -> Option<Ulp> {
        let nest = Attrs::new(self.attrs).get(diag_attr::ULP_INFO)?;
        let mut u = Ulp::default();
        for a in nest.nested() {
            match a.kind() {
                ulp_attr::NAME => u.name = Some(UlpName::from(a.string())),
                ulp_attr::MPTCP => u.mptcp = Some(SubflowInfo::parse(a.value())),
                _ => {}
            }
        }
        Some(u)
    }
}

/// `INET_DIAG_ULP_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ulp {
    /// The ULP's name.
    pub name: Option<UlpName>,
    /// The MPTCP subflow info.
    pub mptcp: Option<SubflowInfo>,
}

/// A ULP's name, as far as roam tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UlpName {
    /// `mptcp`.
    Mptcp,
    /// Another (`tls`, ...).
    Other,
}

impl From<String> for UlpName {
    fn from(s: String) -> Self {
        if s == "mptcp" {
            UlpName::Mptcp
        } else {
            UlpName::Other
        }
    }
}

/// `INET_ULP_INFO_MPTCP`: one subflow's MPTCP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubflowInfo {
    /// The peer's token.
    pub token_rem: Option<u32>,
    /// This end's token.
    pub token_loc: Option<u32>,
    /// Flags.
    pub flags: Option<SubflowFlags>,
    /// The peer's address id.
    pub id_rem: Option<u8>,
    /// This end's address id.
    pub id_loc: Option<u8>,
}

impl SubflowInfo {
    /// Reads the nest's attributes.
    pub fn parse(buf: &[u8]) -> SubflowInfo {
        let mut s = SubflowInfo::default();
        for a in Attrs::new(buf) {
            match a.kind() {
                subflow_attr::TOKEN_REM => s.token_rem = a.u32(),
                subflow_attr::TOKEN_LOC => s.token_loc = a.u32(),
                subflow_attr::FLAGS => s.flags = a.u32().map(SubflowFlags),
                subflow_attr::ID_REM => s.id_rem = a.u8(),
                subflow_attr::ID_LOC => s.id_loc = a.u8(),
                _ => {}
            }
        }
        s
    }
}
