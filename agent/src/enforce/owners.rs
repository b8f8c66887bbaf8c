//! Who owns an MPTCP connection: the uid sock_diag gives for its first subflow, so roamd can
//! steer connections nobody registered (programs started with `roam run`, or any MPTCP
//! program) as the `[[app]]` map says their uid's app should be
//! ([`crate::core::MptcpEvent::Owner`]).
//!
//! The kernel gives a subflow's socket the owner of its MPTCP socket (the inode's uid, what
//! `idiag_uid` reports), so the first subflow's 4-tuple names the program's uid.
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;

use roam_link::netlink::sock_diag::{self, SOCK_DIAG_BY_FAMILY, SubflowFlags};
use roam_link::netlink::{MessageType, Messages};
use roam_link::socket::DiagSocket;

use crate::core::MptcpEvent;

/// Whether the MPTCP connection of subflow `s` is fully established: before that the
/// kernel refuses another subflow (`ENOTCONN`). MPTCP_EVENT_CREATED comes before (the client
/// has the SYN-ACK), MPTCP_EVENT_ESTABLISHED after.
fn fully_established(s: &sock_diag::Socket<'_>) -> bool {
    s.ulp()
        .and_then(|u| u.mptcp)
        .and_then(|m| m.flags)
        .is_some_and(|f| f.0 & SubflowFlags::FULLY_ESTABLISHED != 0)
}

/// A sock_diag socket and the connections already asked about.
#[derive(Debug)]
pub struct Owners {
    sock: DiagSocket,
    asked: HashSet<u32>,
}

impl Owners {
    /// Opens the sock_diag socket (roamd's network namespace).
    pub fn open() -> io::Result<Owners> {
        Ok(Owners {
            sock: DiagSocket::open()?,
            asked: HashSet::new(),
        })
    }

    /// `events` followed by an [`MptcpEvent::Owner`] for every connection they announce for
    /// the first time whose owner sock_diag names (the core needs the connection first).
    pub fn annotate(&mut self, mut events: Vec<MptcpEvent>) -> Vec<MptcpEvent> {
        let mut owners = Vec::new();
        for e in &events {
            match *e {
                MptcpEvent::Connection {
                    token,
                    local,
                    remote,
                } if !self.asked.contains(&token) => match self.uid_of(local, remote) {
                    Ok(Some(uid)) => {
                        self.asked.insert(token);
                        tracing::debug!(token, uid, "MPTCP connection owner");
                        owners.push(MptcpEvent::Owner { token, uid });
                    }
                    // Not fully established yet (CREATED): no subflow can join it (ENOTCONN),
                    // so the owner is told at ESTABLISHED, asked again then.
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(token, error = %e, "sock_diag: no owner for an MPTCP connection")
                    }
                },
                MptcpEvent::Closed { token } => {
                    self.asked.remove(&token);
                }
                _ => {}
            }
        }
        events.extend(owners);
        events
    }

    /// The uid owning the MPTCP subflow `local -> remote`; `None` when there is none, or
    /// its connection is not fully established yet.
    fn uid_of(&mut self, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<u32>> {
        let (_, got) = self
            .sock
            .ask(|seq| sock_diag::Request::subflow(local, remote, 0).map(|r| r.emit(seq)))?;
        let Some(m) = Messages::new(got).next() else {
            return Ok(None);
        };
        match m.header.kind {
            MessageType::Error => match m.error().map(|e| e.errno) {
                Some(e) if e == libc::ENOENT => Ok(None),
                Some(e) => Err(io::Error::from_raw_os_error(e)),
                None => Ok(None),
            },
            MessageType::Other(SOCK_DIAG_BY_FAMILY) => Ok(sock_diag::Socket::parse(m.payload)
                .filter(|s| s.id.src == local && s.id.dst == remote && fully_established(s))
                .map(|s| s.uid)),
            _ => Ok(None),
        }
    }
}
