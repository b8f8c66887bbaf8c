//! Generic netlink plumbing shared by the `mptcp_pm` enforcer and the `nl80211` reader: a
//! blocking request socket bound to one family, messages whose attributes are raw bytes, and
//! the attribute (TLV) encoding.
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;

use netlink_packet_core::{DecodeError, Emitable, NLM_F_ACK, NLM_F_DUMP, ParseableParametrized};
use netlink_packet_generic::ctrl::nlas::{GenlCtrlAttrs, McastGrpAttrs};
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::protocols::NETLINK_GENERIC;

use crate::nlreq::Requester;

/// A generic netlink family, by name.
pub(crate) trait Family: Debug {
    /// The name the kernel registers it under (`mptcp_pm`, `nl80211`).
    const NAME: &'static str;
    /// The protocol version to put in requests.
    const VERSION: u8;
}

/// A message of family `F`: its command and its attributes, already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Raw<F> {
    pub(crate) cmd: u8,
    pub(crate) attrs: Vec<u8>,
    family: PhantomData<F>,
}

impl<F: Family> GenlFamily for Raw<F> {
    fn family_name() -> &'static str {
        F::NAME
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        F::VERSION
    }
}

impl<F> Emitable for Raw<F> {
    fn buffer_len(&self) -> usize {
        self.attrs.len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        buffer[..self.attrs.len()].copy_from_slice(&self.attrs);
    }
}

impl<F> ParseableParametrized<[u8], GenlHeader> for Raw<F> {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(Raw {
            cmd: header.cmd,
            attrs: buf.to_vec(),
            family: PhantomData,
        })
    }
}

/// Set on a nested attribute's type.
pub(crate) const NLA_F_NESTED: u16 = 1 << 15;
const TYPE_MASK: u16 = !((1 << 15) | (1 << 14));

/// Appends one attribute (header, value, padding to 4 bytes).
pub(crate) fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

/// Splits attributes into (type, value) pairs; stops at the first malformed one.
pub(crate) fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

/// A generic netlink socket talking to family `F` (see [`Requester`] for why blocking).
#[derive(Debug)]
pub(crate) struct GenlSocket<F> {
    req: Requester,
    family: u16,
    /// The family's multicast groups: name and id.
    groups: Vec<(String, u32)>,
    kind: PhantomData<F>,
}

impl<F: Family> GenlSocket<F> {
    /// Opens the socket and resolves the family's id. `ErrorKind::NotFound` when the kernel
    /// has no such family (no MPTCP, no cfg80211).
    pub(crate) fn open() -> io::Result<Self> {
        let mut req = Requester::open(NETLINK_GENERIC)?;
        let mut g = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(F::NAME.into())],
        });
        g.finalize();
        let replies = req.call(g, NLM_F_ACK).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the kernel has no `{}` netlink family", F::NAME),
                )
            } else {
                e
            }
        })?;
        let family = replies
            .iter()
            .flat_map(|g| g.payload.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| io::Error::other(format!("nlctrl gave no id for {}", F::NAME)))?;
        let groups = replies
            .iter()
            .flat_map(|g| g.payload.nlas.iter())
            .filter_map(|a| match a {
                GenlCtrlAttrs::McastGroups(gs) => Some(gs),
                _ => None,
            })
            .flatten()
            .filter_map(|g| {
                let name = g.iter().find_map(|a| match a {
                    McastGrpAttrs::Name(n) => Some(n.clone()),
                    _ => None,
                })?;
                let id = g.iter().find_map(|a| match a {
                    McastGrpAttrs::Id(i) => Some(*i),
                    _ => None,
                })?;
                Some((name, id))
            })
            .collect();
        Ok(GenlSocket {
            req,
            family,
            groups,
            kind: PhantomData,
        })
    }

    /// The id of the family's multicast group `name` (`mptcp_pm_events`), if it has one.
    pub(crate) fn group(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|(n, _)| n == name).map(|(_, i)| *i)
    }

    fn call(&mut self, cmd: u8, attrs: Vec<u8>, flags: u16) -> io::Result<Vec<Vec<u8>>> {
        let mut g = GenlMessage::from_payload(Raw::<F> {
            cmd,
            attrs,
            family: PhantomData,
        });
        g.set_resolved_family_id(self.family);
        g.finalize();
        Ok(self
            .req
            .call(g, flags)?
            .into_iter()
            .map(|g| g.payload.attrs)
            .collect())
    }

    /// The kernel's message for the last refused request, taken once.
    pub(crate) fn take_detail(&mut self) -> Option<String> {
        self.req.take_detail()
    }

    /// Sends a request and waits for its acknowledgement.
    pub(crate) fn request(&mut self, cmd: u8, attrs: Vec<u8>) -> io::Result<()> {
        let t = std::time::Instant::now();
        let r = self.call(cmd, attrs, NLM_F_ACK).map(|_| ());
        tracing::trace!(
            family = F::NAME,
            cmd,
            took_us = t.elapsed().as_micros() as u64,
            "request"
        );
        r
    }

    /// Sends a request and returns the attributes of every message of the answer (a dump with
    /// `dump`, else a single answer).
    pub(crate) fn query(
        &mut self,
        cmd: u8,
        attrs: Vec<u8>,
        dump: bool,
    ) -> io::Result<Vec<Vec<u8>>> {
        self.call(cmd, attrs, if dump { NLM_F_DUMP } else { NLM_F_ACK })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_read_back() {
        let mut b = Vec::new();
        put(&mut b, 1, &[7]);
        put(&mut b, 2 | NLA_F_NESTED, &[1, 2, 3, 4, 5]);
        assert_eq!(b.len(), 8 + 12);
        let a = attrs(&b);
        assert_eq!(a, [(1, &[7][..]), (2, &[1, 2, 3, 4, 5][..])]);
        // A length past the end stops the walk instead of reading out of bounds.
        assert_eq!(attrs(&[200, 0, 1, 0, 9]), []);
    }
}
