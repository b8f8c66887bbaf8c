//! The netlink route socket (roam-link's, shared with the SDK): one initial dump of links,
//! addresses and routes, then the kernel's multicast notifications for the same. No polling:
//! the socket is read only when the kernel has something to say.
//!
//! This module turns roam-link's [`LinkEvent`]s into the shape the agent's core takes:
//! addresses the kernel has not settled (tentative, DAD failed) are reported as absent, and
//! routes as [`crate::core::Route`]s. The core applies the value half of the usable-address
//! rule (`roam_link::usable_ip`) itself.
//!
//! `ip monitor link address route` shows the same stream.
use std::net::IpAddr;

use netlink_packet_route::RouteNetlinkMessage;
use roam_link::rtnl::{self, LinkEvent};
use roam_link::socket::{RouteSocket, Watch};

pub use roam_link::rtnl::LinkSeen;
/// Why the monitor stopped or must resynchronise (`Overrun`: dump again).
pub use roam_link::socket::SocketError as MonitorError;

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
    /// An address is present and settled (not tentative, not failed DAD) or not.
    Address {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Prefix length.
        prefix_len: u8,
        /// True when present and settled, false when removed or not settled.
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

impl From<LinkEvent> for MonitorEvent {
    fn from(e: LinkEvent) -> MonitorEvent {
        match e {
            LinkEvent::Link(l) => MonitorEvent::Link(l),
            LinkEvent::LinkGone { index } => MonitorEvent::LinkGone { index },
            LinkEvent::Address {
                index,
                facts,
                present,
            } => MonitorEvent::Address {
                index,
                addr: facts.addr,
                prefix_len: facts.prefix_len,
                present: present && facts.settled(),
            },
            LinkEvent::Route { route, present } => MonitorEvent::Route {
                route: crate::core::Route {
                    index: route.index,
                    table: route.table,
                    dst: route.dst,
                    gateway: route.gateway,
                },
                present,
            },
        }
    }
}

/// Translates one rtnetlink message. Messages the agent does not track give `None`.
pub fn translate(msg: &RouteNetlinkMessage) -> Option<MonitorEvent> {
    rtnl::translate(msg).map(MonitorEvent::from)
}

/// Splits one datagram into messages and translates them. `done` is true when the datagram
/// carries the end (or the acknowledgement) of dump `seq`.
pub fn parse_datagram(
    bytes: &[u8],
    seq: Option<u32>,
) -> Result<(Vec<MonitorEvent>, bool), MonitorError> {
    let (events, done) = rtnl::parse_datagram(bytes, seq)?;
    Ok((events.into_iter().map(MonitorEvent::from).collect(), done))
}

/// The route socket, registered with tokio, watching links, addresses and routes.
#[derive(Debug)]
pub struct Monitor {
    socket: RouteSocket,
}

impl Monitor {
    /// Opens the socket and joins the link, address and route groups. Joining happens before
    /// the dump so nothing that changes during the dump is missed.
    pub fn open() -> std::io::Result<Monitor> {
        Ok(Monitor {
            socket: RouteSocket::open(Watch::LinksAddressesAndRoutes)?,
        })
    }

    /// Dumps links, then addresses, then routes (every family). Notifications that arrive
    /// meanwhile are included, in order.
    pub async fn dump(&mut self) -> Result<Vec<MonitorEvent>, MonitorError> {
        Ok(self
            .socket
            .dump()
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Waits for the next notifications from the kernel, then takes every datagram already
    /// queued behind them (at most [`MAX_DATAGRAMS`] in all) without waiting: one change is
    /// several datagrams (`ip link set wlan0 down` queues the IPv6 addresses' and routes'
    /// removals and then the link's own message, all at once), and the core decides once
    /// per batch, so its subscribers are evaluated once instead of once per datagram.
    pub async fn next(&mut self) -> Result<Vec<MonitorEvent>, MonitorError> {
        let mut events: Vec<MonitorEvent> = Vec::new();
        events.extend(
            self.socket
                .next()
                .await?
                .into_iter()
                .map(MonitorEvent::from),
        );
        for _ in 1..MAX_DATAGRAMS {
            match ready_now(self.socket.next()) {
                Some(batch) => events.extend(batch?.into_iter().map(MonitorEvent::from)),
                None => break,
            }
        }
        Ok(events)
    }
}

/// How many datagrams [`Monitor::next`] takes in one batch: a burst (hundreds of interfaces
/// created at once) is still decided in steps, and a client's request waits at most this
/// many datagrams' parsing.
pub const MAX_DATAGRAMS: usize = 64;

/// The output of `f` if it is ready without waiting (the socket has a datagram queued), else
/// `None`. `RouteSocket::next` reads one whole datagram or nothing, so dropping it unfinished
/// loses nothing, and the loop's next real wait registers its own waker.
fn ready_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_link::AddrFacts;

    #[test]
    fn unsettled_addresses_reach_the_core_as_absent_and_deprecated_ones_as_present() {
        let ip: IpAddr = "2001:db8::2".parse().unwrap();
        let settled = AddrFacts::plain(ip, 64);
        let flagged = |set: fn(&mut AddrFacts)| {
            let mut f = settled;
            set(&mut f);
            f
        };
        for (facts, announced, want) in [
            (settled, true, true),
            (settled, false, false),
            (flagged(|f| f.tentative = true), true, false),
            (flagged(|f| f.dadfailed = true), true, false),
            (flagged(|f| f.deprecated = true), true, true),
        ] {
            let e = MonitorEvent::from(LinkEvent::Address {
                index: 3,
                facts,
                present: announced,
            });
            assert_eq!(
                e,
                MonitorEvent::Address {
                    index: 3,
                    addr: ip,
                    prefix_len: 64,
                    present: want
                },
                "{facts:?} announced {announced}"
            );
        }
    }

    #[test]
    fn routes_keep_every_field() {
        let route = roam_link::Route {
            index: 4,
            table: 254,
            dst: Some(("198.18.0.0".parse().unwrap(), 24)),
            gateway: Some("198.18.0.1".parse().unwrap()),
        };
        let e = MonitorEvent::from(LinkEvent::Route {
            route,
            present: false,
        });
        assert_eq!(
            e,
            MonitorEvent::Route {
                route: crate::core::Route {
                    index: 4,
                    table: 254,
                    dst: route.dst,
                    gateway: route.gateway,
                },
                present: false
            }
        );
    }
}
