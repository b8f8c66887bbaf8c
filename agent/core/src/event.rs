//! What goes into the core ([`Event`]) and what comes out ([`Action`]). Client requests go in
//! through [`crate::Core::request`]; their answers come out as [`Action::Reply`].
use std::net::{IpAddr, SocketAddr};

use roam_ipc::proto::{Reply, TcpOptions, Update};

use crate::{
    ClientId, LinkInfo, MptcpEvent, MptcpPlan, Policy, PortalUrl, Route, RoutingPlan,
    SubflowCommand,
};

/// Something that happened, as the shell saw it.
#[derive(Debug, Clone)]
pub enum Event {
    /// An interface appeared or changed (flags, name, classification).
    LinkUpdated(LinkInfo),
    /// An interface disappeared.
    LinkRemoved {
        /// Its kernel index.
        index: u32,
    },
    /// An address became usable on an interface (tentative addresses are not reported).
    AddressAdded {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// An address went away (or failed duplicate address detection).
    AddressRemoved {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// Forget a link's addresses and routes: a fresh dump follows in the same batch
    /// ([`Core::resync`](crate::Core::resync)) after notifications were lost.
    Forget {
        /// Interface index.
        index: u32,
    },
    /// A route was added.
    RouteAdded(Route),
    /// A route was removed.
    RouteRemoved(Route),
    /// A probe reply with this sequence number came back on this interface.
    ProbeReply {
        /// Interface index the probe was sent from.
        index: u32,
        /// The sequence number from the reply.
        seq: u64,
    },
    /// A probe could not be sent at all (no route, interface gone): counts as a miss now.
    ProbeSendFailed {
        /// Interface index.
        index: u32,
        /// The sequence number that was to be sent.
        seq: u64,
    },
    /// The captive-portal check of this interface finished.
    PortalChecked {
        /// Interface index.
        index: u32,
        /// The HTTP status, or why there is none.
        status: Result<u16, String>,
    },
    /// nl80211's answer about a wireless link.
    Wireless {
        /// Interface index.
        index: u32,
        /// SSID, when associated.
        ssid: Option<String>,
        /// Signal in dBm, when associated.
        signal_dbm: Option<f64>,
    },
    /// A new policy replaces the one in force (it parsed; the shell checked that).
    PolicyReplaced(Policy),
    /// The kernel told about an MPTCP connection or subflow (`mptcp_pm_events`).
    Mptcp(MptcpEvent),
    /// An interface's packet counters, as [`Action::ReadCounters`] asked (rtnetlink stats or
    /// sysfs `statistics/`): received unicast packets are evidence the link works.
    Counters {
        /// Interface index.
        index: u32,
        /// Packets received since the interface appeared.
        rx_packets: u64,
        /// Of those, multicast packets (neighbour discovery, router solicitations, mDNS):
        /// they prove nothing about the path to the internet, so they are no evidence.
        rx_multicast: u64,
        /// Packets transmitted since the interface appeared.
        tx_packets: u64,
        /// Of those, IPv6 multicast packets (router solicitations, MLD reports, duplicate
        /// address detection): the kernel's own housekeeping, which expects no unicast answer,
        /// so sending them is no sign of a path that stopped answering.
        tx_multicast: u64,
    },
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this update to this client.
    Push {
        /// The subscriber.
        client: ClientId,
        /// What changed for it: one value shared by every subscriber told the same (the
        /// shell encodes it once).
        update: std::sync::Arc<Update>,
    },
    /// Send one echo probe from this interface (bound to it) to this target.
    SendProbe {
        /// Interface index.
        index: u32,
        /// Interface name (for `SO_BINDTODEVICE`).
        interface: String,
        /// Where the reflector listens.
        target: SocketAddr,
        /// Sequence number to put in the probe; the reply carries it back.
        seq: u64,
    },
    /// Ask nl80211 for this wireless interface's SSID and signal (answer: [`Event::Wireless`]).
    QueryWireless {
        /// Interface index.
        index: u32,
    },
    /// Fetch this URL from this interface (bound to it) and answer with
    /// [`Event::PortalChecked`].
    CheckPortal {
        /// Interface index.
        index: u32,
        /// Interface name (for `SO_BINDTODEVICE`).
        interface: String,
        /// What to fetch.
        url: PortalUrl,
    },
    /// Read this interface's packet counters and answer with [`Event::Counters`] (no packet
    /// is sent for it).
    ReadCounters {
        /// Interface index.
        index: u32,
        /// Interface name.
        interface: String,
    },
    /// Probing of this interface stopped: its socket can be closed.
    StopProbing {
        /// Interface index.
        index: u32,
    },
    /// Policy routing should now look like this (sent when it changes).
    Routing(RoutingPlan),
    /// The MPTCP endpoints should now look like this (sent when it changes).
    Mptcp(MptcpPlan),
    /// Send this reply to this client (the answer to one of its requests).
    Reply {
        /// The client.
        client: ClientId,
        /// The answer.
        reply: Reply,
    },
    /// An admin asked for the policy file to be read again: read it, hand the outcome to
    /// [`Core::reloaded`](crate::Core::reloaded), which answers the client.
    Reload {
        /// Who asked.
        client: ClientId,
        /// The request id to answer.
        id: u64,
    },
    /// Have the userspace path manager carry out this command.
    Subflow {
        /// What to ask the kernel.
        command: SubflowCommand,
        /// The app request it answers, if it is one (`None`: the core's own steering); the
        /// shell answers it with the kernel's reply.
        requested: Option<Requested>,
    },
}

/// An app's `mptcp_subflow_*` request the core checked and passed on to the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    /// Who asked.
    pub client: ClientId,
    /// The request id to answer.
    pub id: u64,
    /// TCP options for the new subflow alone (a checked `mptcp_subflow_create` with options):
    /// the shell records them for its BPF program before the command is sent.
    pub options: Option<TcpOptions>,
}
