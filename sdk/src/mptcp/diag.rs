//! The MP_PRIO (backup) flags of one MPTCP subflow, from socket diagnostics: what `ss -tni`
//! prints as `b`/`B` after `tcp-ulp-mptcp flags:`.
//!
//! The kernel exposes a subflow's backup bits only there: a `NETLINK_SOCK_DIAG` request
//! (`SOCK_DIAG_BY_FAMILY`, `struct inet_diag_req_v2`) for the subflow's exact TCP 4-tuple, with
//! `INET_DIAG_INFO` asked for, answers with the subflow's `INET_DIAG_ULP_INFO` nest, which holds
//! `INET_ULP_INFO_MPTCP` (`net/mptcp/diag.c`), which holds `MPTCP_SUBFLOW_ATTR_FLAGS`
//! (`include/uapi/linux/mptcp.h`). Any process may ask, for any socket of its network namespace,
//! and Linux 6.x puts the ULP nest in every answer (the namespace test reads the flags as
//! `nobody`); when the nest came (5.4) it was for CAP_NET_ADMIN only, and on such a kernel the
//! flags read as absent.
//!
//! A subflow bound to a device (an endpoint with `dev`, or `SO_BINDTODEVICE`) is found only
//! with that device's index in the request (`idiag_if`); an unbound one matches any index, so
//! the caller passes the index of the interface that owns the local address when it knows it.
//!
//! Layouts (`include/uapi/linux/inet_diag.h`, `netlink.h`; every Linux ABI):
//!
//! | struct | size | fields used (offset) |
//! | --- | --- | --- |
//! | `nlmsghdr` | 16 | len (0), type (4), flags (6), seq (8) |
//! | `inet_diag_req_v2` | 56 | family (0), protocol (1), ext (2), states (4), sockid (8) |
//! | `inet_diag_sockid` | 48 | sport be (0), dport be (2), src (4), dst (20), if (36), cookie (40) |
//! | `inet_diag_msg` | 72 | family (0), sockid (4), then attributes |
//! | `nlattr` | 4 | len (0), type (2, low 14 bits), payload padded to 4 |
//!
//! Every answer is parsed by offset with bounds checks: a short, malformed or foreign answer
//! gives `None`, never a panic and never a wrong flag.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

/// `SOCK_DIAG_BY_FAMILY` (`linux/sock_diag.h`).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 1;
/// `INET_DIAG_INFO`: asking for it (bit `INET_DIAG_INFO - 1` of `idiag_ext`) also brings the
/// ULP nest.
const INET_DIAG_INFO: u8 = 2;
/// `INET_DIAG_ULP_INFO`.
const INET_DIAG_ULP_INFO: u16 = 19;
/// `INET_ULP_INFO_MPTCP` inside `INET_DIAG_ULP_INFO`.
const INET_ULP_INFO_MPTCP: u16 = 3;
/// `MPTCP_SUBFLOW_ATTR_FLAGS` inside `INET_ULP_INFO_MPTCP`.
const MPTCP_SUBFLOW_ATTR_FLAGS: u16 = 8;
/// `NLA_TYPE_MASK`: the type bits of `nla_type` (the others are NESTED / NET_BYTEORDER).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `INET_DIAG_NOCOOKIE`.
const NOCOOKIE: u32 = !0;

/// `MPTCP_SUBFLOW_FLAG_BKUP_REM`: the peer asked that this subflow be a backup.
pub const FLAG_BKUP_REM: u32 = 1 << 4;
/// `MPTCP_SUBFLOW_FLAG_BKUP_LOC`: this end marked the subflow a backup (MP_JOIN's B bit or
/// MP_PRIO sent).
pub const FLAG_BKUP_LOC: u32 = 1 << 5;

const NLMSG_HDR: usize = 16;
const REQ_V2: usize = 56;
const DIAG_MSG: usize = 72;
/// The request's full length.
pub const REQUEST_LEN: usize = NLMSG_HDR + REQ_V2;

/// What sock_diag says of one subflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubflowFlags(pub u32);

impl SubflowFlags {
    /// This end marked the subflow a backup (`ss`'s `b`).
    pub fn backup_local(self) -> bool {
        self.0 & FLAG_BKUP_LOC != 0
    }

    /// The peer marked the subflow a backup (`ss`'s `B`).
    pub fn backup_remote(self) -> bool {
        self.0 & FLAG_BKUP_REM != 0
    }
}

/// Builds the request for the TCP socket `local -> remote` (both of one family), looked up on
/// device `ifindex` (0: any unbound socket).
pub fn request(
    local: SocketAddr,
    remote: SocketAddr,
    ifindex: u32,
    seq: u32,
) -> Option<[u8; REQUEST_LEN]> {
    let family = match (local.ip(), remote.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return None,
    };
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    let r = &mut b[NLMSG_HDR..];
    r[0] = family as u8;
    r[1] = libc::IPPROTO_TCP as u8;
    r[2] = 1 << (INET_DIAG_INFO - 1);
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    let id = &mut r[8..56];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    put_ip(&mut id[4..20], local.ip());
    put_ip(&mut id[20..36], remote.ip());
    id[36..40].copy_from_slice(&ifindex.to_ne_bytes());
    id[40..44].copy_from_slice(&NOCOOKIE.to_ne_bytes());
    id[44..48].copy_from_slice(&NOCOOKIE.to_ne_bytes());
    Some(b)
}

fn put_ip(dst: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => dst[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => dst[..16].copy_from_slice(&a.octets()),
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The attributes of `b`, as (type, payload); stops at the first malformed one.
fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = b;
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(rest, 0)?);
        let ty = u16_at(rest, 2)? & NLA_TYPE_MASK;
        let payload = rest.get(4..len)?;
        // Attributes are padded to 4 bytes; the last one may lack its padding.
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((ty, payload))
    })
}

/// Why an answer carries no flags.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The subflow's flags.
    Flags(SubflowFlags),
    /// The socket exists but the answer has no MPTCP nest (not a subflow, or a kernel that
    /// shows ULP data to CAP_NET_ADMIN only).
    NoUlp,
    /// The kernel answered with this errno (`ENOENT`: no such socket on that device).
    Errno(i32),
    /// Not an answer to this request, or malformed.
    Malformed,
}

/// Parses the kernel's answer to the request with sequence number `seq` for `local ->
/// remote`.
pub fn parse_answer(b: &[u8], seq: u32, local: SocketAddr, remote: SocketAddr) -> Answer {
    parse(b, seq, local, remote).unwrap_or(Answer::Malformed)
}

fn parse(b: &[u8], seq: u32, local: SocketAddr, remote: SocketAddr) -> Option<Answer> {
    let len = u32_at(b, 0)? as usize;
    let msg = b.get(..len)?;
    if len < NLMSG_HDR || u32_at(msg, 8)? != seq {
        return None;
    }
    let ty = u16_at(msg, 4)?;
    let body = &msg[NLMSG_HDR..];
    if ty == NLMSG_ERROR {
        let errno = i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?);
        return Some(Answer::Errno(-errno));
    }
    if ty != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    let head = body.get(..DIAG_MSG)?;
    // The answer names the socket: it must be the one asked for.
    let id = &head[4..52];
    let sport = u16::from_be_bytes(id.get(0..2)?.try_into().ok()?);
    let dport = u16::from_be_bytes(id.get(2..4)?.try_into().ok()?);
    let mut want = [0u8; 32];
    put_ip(&mut want[..16], local.ip());
    put_ip(&mut want[16..], remote.ip());
    let addr_len = if local.is_ipv4() { 4 } else { 16 };
    if sport != local.port()
        || dport != remote.port()
        || id[4..4 + addr_len] != want[..addr_len]
        || id[20..20 + addr_len] != want[16..16 + addr_len]
    {
        return None;
    }
    let Some((_, ulp)) = attrs(&body[DIAG_MSG..]).find(|(t, _)| *t == INET_DIAG_ULP_INFO) else {
        return Some(Answer::NoUlp);
    };
    let Some((_, mptcp)) = attrs(ulp).find(|(t, _)| *t == INET_ULP_INFO_MPTCP) else {
        return Some(Answer::NoUlp);
    };
    let (_, flags) = attrs(mptcp).find(|(t, _)| *t == MPTCP_SUBFLOW_ATTR_FLAGS)?;
    Some(Answer::Flags(SubflowFlags(u32_at(flags, 0)?)))
}

/// A sock_diag socket of the caller's network namespace, for repeated subflow lookups.
#[derive(Debug)]
pub struct Diag {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Diag {
    /// Opens one (in the calling thread's network namespace).
    pub fn open() -> io::Result<Diag> {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Diag {
            sock,
            seq: 0,
            buf: vec![0u8; 8192],
        })
    }

    /// The MPTCP flags of the subflow `local -> remote` on device `ifindex` (0: unbound), or
    /// `None` when the kernel does not say (no such subflow, or no ULP data for this process).
    pub fn subflow_flags(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        ifindex: u32,
    ) -> io::Result<Option<SubflowFlags>> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(local, remote, ifindex, self.seq)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mixed address families"))?;
        self.sock.send(&req, 0)?;
        // The kernel answers a single-socket request while handling the send: the answer is
        // queued already, and a missing one is an error, not a wait. Stale answers (an
        // earlier request's, left by an error) are skipped, a few at most.
        for _ in 0..8 {
            self.buf.resize(8192, 0);
            let n = self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT)?;
            let got = &self.buf[..n.min(self.buf.len())];
            if u32_at(got, 8) != Some(self.seq) {
                continue;
            }
            return match parse_answer(got, self.seq, local, remote) {
                Answer::Flags(f) => Ok(Some(f)),
                Answer::NoUlp | Answer::Malformed => Ok(None),
                Answer::Errno(e) if e == libc::ENOENT => Ok(None),
                Answer::Errno(e) => Err(io::Error::from_raw_os_error(e)),
            };
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag answered other requests only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "198.18.0.2:40000";
    const REMOTE: &str = "198.19.0.1:4433";

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// An answer as the kernel builds it: header, inet_diag_msg naming the socket, an
    /// INET_DIAG_INFO blob, then the ULP nest with the name and the MPTCP nest.
    fn answer(seq: u32, flags: u32) -> Vec<u8> {
        let (l, r): (SocketAddr, SocketAddr) = (LOCAL.parse().unwrap(), REMOTE.parse().unwrap());
        let req = request(l, r, 0, seq).unwrap();
        let mut body = vec![0u8; DIAG_MSG];
        body[0] = libc::AF_INET as u8;
        body[1] = 1; // established
        body[4..52].copy_from_slice(&req[NLMSG_HDR + 8..NLMSG_HDR + 56]);
        body.extend(nla(INET_DIAG_INFO.into(), &[0u8; 232]));
        let mut mptcp = nla(1, &7u32.to_ne_bytes()); // TOKEN_REM
        mptcp.extend(nla(MPTCP_SUBFLOW_ATTR_FLAGS, &flags.to_ne_bytes()));
        let mut ulp = nla(1, b"mptcp\0");
        ulp.extend(nla(INET_ULP_INFO_MPTCP | 0x8000, &mptcp));
        body.extend(nla(INET_DIAG_ULP_INFO | 0x8000, &ulp));
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend(body);
        msg
    }

    fn addrs() -> (SocketAddr, SocketAddr) {
        (LOCAL.parse().unwrap(), REMOTE.parse().unwrap())
    }

    #[test]
    fn the_request_names_the_exact_socket() {
        let (l, r) = addrs();
        let b = request(l, r, 3, 9).unwrap();
        assert_eq!(u32_at(&b, 0), Some(72));
        assert_eq!(u16_at(&b, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(b[16], libc::AF_INET as u8);
        assert_eq!(b[17], libc::IPPROTO_TCP as u8);
        assert_eq!(b[18], 2, "INET_DIAG_INFO asked for");
        assert_eq!(&b[24..26], &40000u16.to_be_bytes());
        assert_eq!(&b[26..28], &4433u16.to_be_bytes());
        assert_eq!(&b[28..32], &[198, 18, 0, 2]);
        assert_eq!(&b[44..48], &[198, 19, 0, 1]);
        assert_eq!(u32_at(&b, 60), Some(3));
        let v6: SocketAddr = "[2001:db8::2]:1".parse().unwrap();
        assert!(request(l, v6, 0, 1).is_none(), "mixed families");
    }

    #[test]
    fn flags_are_read_from_the_nested_ulp_info() {
        let (l, r) = addrs();
        let a = answer(5, FLAG_BKUP_LOC | 1 << 3);
        let Answer::Flags(f) = parse_answer(&a, 5, l, r) else {
            panic!("no flags");
        };
        assert!(f.backup_local());
        assert!(!f.backup_remote());
        let Answer::Flags(f) = parse_answer(&answer(5, FLAG_BKUP_REM), 5, l, r) else {
            panic!("no flags");
        };
        assert!(f.backup_remote() && !f.backup_local());
    }

    #[test]
    fn foreign_or_broken_answers_give_no_flags() {
        let (l, r) = addrs();
        let a = answer(5, FLAG_BKUP_LOC);
        // Another request's answer, another socket's.
        assert_eq!(parse_answer(&a, 6, l, r), Answer::Malformed);
        let other: SocketAddr = "198.18.0.2:40001".parse().unwrap();
        assert_eq!(parse_answer(&a, 5, other, r), Answer::Malformed);
        // Every truncation: never a panic, never flags.
        for n in 0..a.len() {
            let mut cut = a[..n].to_vec();
            if cut.len() >= 4 {
                cut[0..4].copy_from_slice(&(n as u32).to_ne_bytes());
            }
            assert!(
                !matches!(parse_answer(&cut, 5, l, r), Answer::Flags(_)),
                "flags from {n} bytes"
            );
        }
        // A length field past the buffer.
        let mut long = a.clone();
        long[0..4].copy_from_slice(&(a.len() as u32 + 100).to_ne_bytes());
        assert_eq!(parse_answer(&long, 5, l, r), Answer::Malformed);
        // An attribute claiming less than its own header, or more than there is.
        let mut bad = a.clone();
        bad[NLMSG_HDR + DIAG_MSG..NLMSG_HDR + DIAG_MSG + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert!(!matches!(parse_answer(&bad, 5, l, r), Answer::Flags(_)));
        bad[NLMSG_HDR + DIAG_MSG..NLMSG_HDR + DIAG_MSG + 2]
            .copy_from_slice(&u16::MAX.to_ne_bytes());
        assert!(!matches!(parse_answer(&bad, 5, l, r), Answer::Flags(_)));
    }

    #[test]
    fn a_socket_without_the_mptcp_nest_and_errors_are_told_apart() {
        let (l, r) = addrs();
        let full = answer(5, 0);
        // The same answer cut after the INET_DIAG_INFO attribute: a plain TCP socket, or a
        // kernel hiding ULP data.
        let cut_at = NLMSG_HDR + DIAG_MSG + 4 + 232;
        let mut plain = full[..cut_at].to_vec();
        plain[0..4].copy_from_slice(&(cut_at as u32).to_ne_bytes());
        assert_eq!(parse_answer(&plain, 5, l, r), Answer::NoUlp);
        let mut err = vec![0u8; NLMSG_HDR + 4 + 16];
        let len = err.len() as u32;
        err[0..4].copy_from_slice(&len.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[8..12].copy_from_slice(&5u32.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(parse_answer(&err, 5, l, r), Answer::Errno(libc::ENOENT));
    }
}
