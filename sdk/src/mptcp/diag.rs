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
//! The wire format (request, `inet_diag_msg`, the nests) is `roam_link::netlink::sock_diag`'s,
//! pinned there to answers captured from Linux 6.18. Every answer is parsed with bounds
//! checks: a short, malformed or foreign answer gives `None`, never a panic and never a wrong
//! flag.

use std::io;
use std::net::SocketAddr;

use roam_link::netlink::header::NLMSG_HDRLEN;
use roam_link::netlink::sock_diag::{self, SOCK_DIAG_BY_FAMILY};
use roam_link::netlink::{MessageType, Messages};
use roam_link::socket::DiagSocket;

/// What sock_diag says of one subflow: its `MPTCP_SUBFLOW_FLAG_*` bits (`backup_local()` is
/// `ss`'s `b`, `backup_remote()` its `B`).
pub use roam_link::netlink::sock_diag::SubflowFlags;

/// The request's full length.
pub const REQUEST_LEN: usize = NLMSG_HDRLEN + sock_diag::Request::LEN;

/// Builds the request for the TCP socket `local -> remote` (both of one family), looked up on
/// device `ifindex` (0: any unbound socket).
pub fn request(
    local: SocketAddr,
    remote: SocketAddr,
    ifindex: u32,
    seq: u32,
) -> Option<[u8; REQUEST_LEN]> {
    sock_diag::Request::subflow(local, remote, ifindex)?
        .emit(seq)
        .try_into()
        .ok()
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
    let m = Messages::new(b).next()?;
    if m.header.seq != seq {
        return None;
    }
    match m.header.kind {
        MessageType::Error => return Some(Answer::Errno(m.error()?.errno)),
        MessageType::Other(SOCK_DIAG_BY_FAMILY) => {}
        _ => return None,
    }
    let socket = sock_diag::Socket::parse(m.payload)?;
    // The answer names the socket: it must be the one asked for.
    if socket.id.src != local || socket.id.dst != remote {
        return None;
    }
    let Some(mptcp) = socket.ulp().and_then(|u| u.mptcp) else {
        return Some(Answer::NoUlp);
    };
    Some(Answer::Flags(mptcp.flags?))
}

/// A sock_diag socket of the caller's network namespace, for repeated subflow lookups.
#[derive(Debug)]
pub struct Diag {
    sock: DiagSocket,
}

impl Diag {
    /// Opens one (in the calling thread's network namespace).
    pub fn open() -> io::Result<Diag> {
        Ok(Diag {
            sock: DiagSocket::open()?,
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
        let (seq, got) = self
            .sock
            .ask(|seq| request(local, remote, ifindex, seq).map(|r| r.to_vec()))?;
        match parse_answer(got, seq, local, remote) {
            Answer::Flags(f) => Ok(Some(f)),
            Answer::NoUlp | Answer::Malformed => Ok(None),
            Answer::Errno(e) if e == libc::ENOENT => Ok(None),
            Answer::Errno(e) => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use roam_link::netlink::attr::{put, put_nested};
    use roam_link::netlink::header::{self as nlh, NLM_F_REQUEST};
    use roam_link::netlink::sock_diag::{diag_attr, subflow_attr, ulp_attr};

    use super::*;

    const LOCAL: &str = "198.18.0.2:40000";
    const REMOTE: &str = "198.19.0.1:4433";
    const DIAG_MSG: usize = sock_diag::Socket::LEN;

    /// An answer shaped as the kernel's: header, inet_diag_msg naming the socket, an
    /// INET_DIAG_INFO blob, then the ULP nest with the name and the MPTCP nest.
    fn answer(seq: u32, flags: u32) -> Vec<u8> {
        let (l, r): (SocketAddr, SocketAddr) = (LOCAL.parse().unwrap(), REMOTE.parse().unwrap());
        let req = request(l, r, 0, seq).unwrap();
        let mut body = vec![0u8; DIAG_MSG];
        body[0] = libc::AF_INET as u8;
        body[1] = 1; // established
        body[4..52].copy_from_slice(&req[NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 56]);
        put(&mut body, diag_attr::INFO, &[0u8; 232]);
        put_nested(&mut body, diag_attr::ULP_INFO, |u| {
            put(u, ulp_attr::NAME, b"mptcp\0");
            put_nested(u, ulp_attr::MPTCP, |m| {
                put(m, subflow_attr::TOKEN_REM, &7u32.to_ne_bytes());
                put(m, subflow_attr::FLAGS, &flags.to_ne_bytes());
            });
        });
        nlh::message(MessageType::Other(SOCK_DIAG_BY_FAMILY), 0, seq, &body)
    }

    fn addrs() -> (SocketAddr, SocketAddr) {
        (LOCAL.parse().unwrap(), REMOTE.parse().unwrap())
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn the_request_names_the_exact_socket() {
        let (l, r) = addrs();
        let b = request(l, r, 3, 9).unwrap();
        assert_eq!(u32_at(&b, 0), 72);
        assert_eq!(&b[4..8], &[20, 0, NLM_F_REQUEST as u8, 0][..]);
        assert_eq!(b[16], libc::AF_INET as u8);
        assert_eq!(b[17], libc::IPPROTO_TCP as u8);
        assert_eq!(b[18], 2, "INET_DIAG_INFO asked for");
        assert_eq!(&b[24..26], &40000u16.to_be_bytes());
        assert_eq!(&b[26..28], &4433u16.to_be_bytes());
        assert_eq!(&b[28..32], &[198, 18, 0, 2]);
        assert_eq!(&b[44..48], &[198, 19, 0, 1]);
        assert_eq!(u32_at(&b, 60), 3);
        let v6: SocketAddr = "[2001:db8::2]:1".parse().unwrap();
        assert!(request(l, v6, 0, 1).is_none(), "mixed families");
    }

    /// The kernel's answer for a subflow roam made a backup (`link/tests/data`, Linux 6.18).
    #[test]
    fn a_captured_answer_gives_the_subflows_backup_flag() {
        let text = include_str!("../../../link/tests/data/sock_diag_subflow_backup.hex");
        let hex = |p: &str| -> Vec<u8> {
            let h = text.lines().find_map(|l| l.strip_prefix(p)).unwrap();
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        };
        let (sent, got) = (hex("> "), hex("< "));
        let asked = sock_diag::Request::parse(&sent[NLMSG_HDRLEN..]).unwrap();
        let (l, r) = (asked.id.src, asked.id.dst);
        assert_eq!(request(l, r, 3, 7).map(|b| b.to_vec()), Some(sent));
        let Answer::Flags(f) = parse_answer(&got, 7, l, r) else {
            panic!("no flags");
        };
        assert!(f.backup_local() && !f.backup_remote());
        assert_eq!(
            parse_answer(&got, 8, l, r),
            Answer::Malformed,
            "another seq"
        );
    }

    #[test]
    fn flags_are_read_from_the_nested_ulp_info() {
        let (l, r) = addrs();
        let a = answer(5, SubflowFlags::BKUP_LOC | SubflowFlags::JOIN_LOC);
        let Answer::Flags(f) = parse_answer(&a, 5, l, r) else {
            panic!("no flags");
        };
        assert!(f.backup_local());
        assert!(!f.backup_remote());
        let Answer::Flags(f) = parse_answer(&answer(5, SubflowFlags::BKUP_REM), 5, l, r) else {
            panic!("no flags");
        };
        assert!(f.backup_remote() && !f.backup_local());
    }

    #[test]
    fn foreign_or_broken_answers_give_no_flags() {
        let (l, r) = addrs();
        let a = answer(5, SubflowFlags::BKUP_LOC);
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
        let at = NLMSG_HDRLEN + DIAG_MSG;
        let mut bad = a.clone();
        bad[at..at + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert!(!matches!(parse_answer(&bad, 5, l, r), Answer::Flags(_)));
        bad[at..at + 2].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert!(!matches!(parse_answer(&bad, 5, l, r), Answer::Flags(_)));
    }

    #[test]
    fn a_socket_without_the_mptcp_nest_and_errors_are_told_apart() {
        let (l, r) = addrs();
        let full = answer(5, 0);
        // The same answer cut after the INET_DIAG_INFO attribute: a plain TCP socket, or a
        // kernel hiding ULP data.
        let cut_at = NLMSG_HDRLEN + DIAG_MSG + 4 + 232;
        let mut plain = full[..cut_at].to_vec();
        plain[0..4].copy_from_slice(&(cut_at as u32).to_ne_bytes());
        assert_eq!(parse_answer(&plain, 5, l, r), Answer::NoUlp);
        // An error: the code, then the echoed request header.
        let mut body = (-libc::ENOENT).to_ne_bytes().to_vec();
        body.extend_from_slice(&request(l, r, 0, 5).unwrap()[..NLMSG_HDRLEN]);
        let err = nlh::message(MessageType::Error, 0, 5, &body);
        assert_eq!(parse_answer(&err, 5, l, r), Answer::Errno(libc::ENOENT));
    }
}
