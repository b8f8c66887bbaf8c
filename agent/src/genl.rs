//! Generic netlink sockets for the `mptcp_pm` enforcer and the `nl80211` reader: a blocking
//! request socket bound to one family, resolved by name through `nlctrl`. The messages are
//! built and read by `roam_link::netlink`; this is only the socket.
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;

use netlink_sys::protocols::NETLINK_GENERIC;
use roam_link::netlink::Messages;
use roam_link::netlink::genl::{self, GenlHeader, GenlMessage};
use roam_link::netlink::header::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

use crate::nlreq::Requester;

/// A generic netlink family, by name.
pub(crate) trait Family: Debug {
    /// The name the kernel registers it under (`mptcp_pm`, `nl80211`).
    const NAME: &'static str;
    /// The protocol version to put in requests.
    const VERSION: u8;
}

/// A generic netlink socket talking to family `F` (see [`Requester`] for why blocking).
#[derive(Debug)]
pub(crate) struct GenlSocket<F> {
    req: Requester,
    family: genl::Family,
    kind: PhantomData<F>,
}

/// The attributes of each generic netlink message in `replies` (whole netlink messages).
fn attrs_of(replies: &[Vec<u8>]) -> impl Iterator<Item = GenlMessage<'_>> {
    replies
        .iter()
        .filter_map(|b| GenlMessage::parse(&Messages::new(b).next()?))
}

impl<F: Family> GenlSocket<F> {
    /// Opens the socket and resolves the family's id. `ErrorKind::NotFound` when the kernel
    /// has no such family (no MPTCP, no cfg80211).
    pub(crate) fn open() -> io::Result<Self> {
        let mut req = Requester::open(NETLINK_GENERIC)?;
        let replies = req
            .call_raw(NLM_F_ACK, |seq| genl::get_family(F::NAME, seq))
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOENT) {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("the kernel has no `{}` netlink family", F::NAME),
                    )
                } else {
                    e
                }
            })?;
        let family = attrs_of(&replies)
            .find_map(|g| genl::Family::parse(g.attrs))
            .ok_or_else(|| io::Error::other(format!("nlctrl gave no id for {}", F::NAME)))?;
        Ok(GenlSocket {
            req,
            family,
            kind: PhantomData,
        })
    }

    /// The id of the family's multicast group `name` (`mptcp_pm_events`), if it has one.
    pub(crate) fn group(&self, name: &str) -> Option<u32> {
        self.family.group(name)
    }

    fn call(&mut self, cmd: u8, attrs: &[u8], flags: u16) -> io::Result<Vec<Vec<u8>>> {
        let (id, version) = (self.family.id, F::VERSION);
        let replies = self.req.call_raw(flags, |seq| {
            genl::request(
                id,
                flags | NLM_F_REQUEST,
                seq,
                GenlHeader { cmd, version },
                attrs,
            )
        })?;
        Ok(attrs_of(&replies).map(|g| g.attrs.to_vec()).collect())
    }

    /// The kernel's message for the last refused request, taken once.
    pub(crate) fn take_detail(&mut self) -> Option<String> {
        self.req.take_detail()
    }

    /// Sends a request and waits for its acknowledgement.
    pub(crate) fn request(&mut self, cmd: u8, attrs: Vec<u8>) -> io::Result<()> {
        let t = std::time::Instant::now();
        let r = self.call(cmd, &attrs, NLM_F_ACK).map(|_| ());
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
        self.call(cmd, &attrs, if dump { NLM_F_DUMP } else { NLM_F_ACK })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::mptcp::MptcpPm;

    #[derive(Debug)]
    struct Missing;

    impl Family for Missing {
        const NAME: &'static str = "roam_no_such";
        const VERSION: u8 = 1;
    }

    /// Asking nlctrl needs no privilege: these run as any user, in the current namespace.
    #[test]
    fn a_family_the_kernel_lacks_is_not_found() {
        let e = GenlSocket::<Missing>::open().expect_err("no such family");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn mptcp_pm_resolves_with_its_events_group() {
        let pm = GenlSocket::<MptcpPm>::open().expect("this kernel has MPTCP");
        assert!(pm.family.id > genl::GENL_ID_CTRL);
        assert!(
            pm.group(roam_link::netlink::mptcp_pm::EVENTS_GROUP)
                .is_some()
        );
        assert_eq!(pm.group("no_such_group"), None);
    }
}
