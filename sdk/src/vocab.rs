//! The ground floor: the words every room of the SDK speaks. A local path and why a session
//! moves ([`LocalPath`], [`MigrationReason`], [`DegradedReason`]), the transports
//! ([`Transport`]), what a session reports about its paths ([`PathInfo`], [`Subflow`]) and what
//! it tells the app ([`SessionEvent`]).
//!
//! It imports nothing from the rest of the crate: the path manager, the sockets, the
//! transports and the session all build on it, so none of them has to import another to name
//! a path or an event.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use roam_policy::Decision;

/// One local path a session can send from: an interface and its address in the peer's family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalPath {
    /// The interface name (`wlan0`).
    pub interface: String,
    /// The address the socket binds to on that interface.
    pub local: IpAddr,
}

impl fmt::Display for LocalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.interface, self.local)
    }
}

/// Why a session moved to another path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MigrationReason {
    /// The decision's primary changed (a preferred link returned after its `hold`, the
    /// policy's order changed, or the flow reached a flow-size rule's threshold that brought a
    /// link in: `start on cell then add wifi after 1MB`).
    PrimaryChanged,
    /// The link the session used went down, lost its address, or is no longer permitted.
    LinkLost,
    /// The same interface has a new address.
    AddressChanged,
    /// The session saw no acknowledgement for a few probe timeouts with data in flight.
    Stalled,
}

impl fmt::Display for MigrationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MigrationReason::PrimaryChanged => "primary changed",
            MigrationReason::LinkLost => "link lost",
            MigrationReason::AddressChanged => "address changed",
            MigrationReason::Stalled => "path stalled",
        })
    }
}

/// Why a session is degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DegradedReason {
    /// The path stalled and there is no other permitted path to move to.
    StalledNoAlternative,
    /// The policy permits no interface that is up; the session waits on its current path and
    /// never moves to a link the policy forbids.
    NoPermittedPath,
}

impl fmt::Display for DegradedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DegradedReason::StalledNoAlternative => "stalled, no other permitted path",
            DegradedReason::NoPermittedPath => "no permitted path",
        })
    }
}

/// The transport a session runs on (what `auto` chose, or what was asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// QUIC with connection migration.
    Quic,
    /// Multipath TCP: subflows on several interfaces at once.
    Mptcp,
    /// TCP with roam's resumption layer (sdk/RESUME.md).
    TcpResume,
    /// Plain TCP: an MPTCP connection whose peer or path removed MPTCP, with no resumption
    /// layer to fall back on (the peer is not a roam listener, or an app ALPN is in use).
    Tcp,
}

impl Transport {
    /// The word used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Mptcp => "mptcp",
            Transport::TcpResume => "tcp-resume",
            Transport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a session's traffic goes now and what it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct PathInfo {
    /// The local interface (`None` on the server side, which follows the client).
    pub interface: Option<String>,
    /// The local address (the server's is its listening address).
    pub local: Option<SocketAddr>,
    /// The peer's address as this end sees it now.
    pub remote: SocketAddr,
    /// The smoothed round-trip time (QUIC's, or the TCP subflow's).
    pub rtt: Duration,
    /// Bytes sent by this connection so far (UDP payload for QUIC, TCP payload otherwise).
    pub bytes_sent: u64,
    /// Bytes received by this connection so far.
    pub bytes_received: u64,
}

/// One path of a session as the kernel (MPTCP subflows, TCP) or quinn sees it: what
/// [`crate::Session::paths`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subflow {
    /// The subflow id the kernel gave (1 for MPTCP's initial subflow); 0 where the kernel does
    /// not say (kernels before 6.5) or for the single path of QUIC and TCP.
    pub id: u32,
    /// The local address and port.
    pub local: Option<SocketAddr>,
    /// The remote address and port.
    pub remote: Option<SocketAddr>,
    /// The interface owning the local address, when this end knows it.
    pub interface: Option<String>,
    /// Whether the subflow is a backup: `true` when either end marked it so (MP_JOIN's backup
    /// bit or MP_PRIO; `ss -tni` shows `b` for this end, `B` for the peer), and the kernel's
    /// scheduler sends on it only when no other subflow can. For MPTCP it is read through
    /// socket diagnostics ([`crate::mptcp::diag`]), which any process may use on Linux 6.x;
    /// `None` when the kernel does not say (a kernel that shows the subflows' ULP data only to
    /// CAP_NET_ADMIN, a subflow gone between the two reads). Always `Some(false)` for QUIC and
    /// plain TCP.
    pub backup: Option<bool>,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Bytes sent on this subflow (retransmissions included), when the kernel reports it.
    pub bytes_sent: Option<u64>,
    /// Bytes acknowledged by the peer on this subflow.
    pub bytes_acked: Option<u64>,
    /// Bytes received on this subflow.
    pub bytes_received: Option<u64>,
}

/// Something that happened to a session's paths.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The session now sends from another path.
    PathChanged {
        /// The path it left (`None` if it had none).
        from: Option<LocalPath>,
        /// The path it uses now.
        to: LocalPath,
        /// Why it moved.
        reason: MigrationReason,
    },
    /// The session's path is not carrying traffic and it cannot move.
    Degraded {
        /// The path it is on.
        path: LocalPath,
        /// Why it is degraded.
        reason: DegradedReason,
    },
    /// Acknowledgements flow again after [`SessionEvent::Degraded`] or a stall.
    Recovered {
        /// The path that carries traffic.
        path: LocalPath,
    },
    /// The policy's decision for this session changed (links came or went, a `hold` ran out).
    DecisionUpdated(Decision),
    /// Where the session's decisions come from (sent once, first): roamd when its socket
    /// answered, else the embedded monitor and policy, or the source the app gave.
    DecisionSourceChosen {
        /// [`crate::DecisionSource::name`] of the source.
        source: String,
        /// Why this one.
        why: String,
    },
    /// The transport the session runs on, and why (sent once, right after connecting).
    TransportChosen {
        /// The transport.
        transport: Transport,
        /// Why this one (what `auto` tried, or "asked for").
        why: String,
    },
    /// An MPTCP connection is plain TCP: the peer or a middlebox on `path` removed MPTCP
    /// (read back with `SOL_MPTCP` / `MPTCP_INFO`). Never silent: `now` says what the session
    /// runs on instead.
    MptcpFallback {
        /// The path the connection was made on.
        path: LocalPath,
        /// What the kernel said.
        detail: String,
        /// What the session runs on now ([`Transport::TcpResume`] when the peer is a roam
        /// listener, else [`Transport::Tcp`]).
        now: Transport,
    },
    /// No agent controls this MPTCP connection: the kernel's path manager and its endpoints
    /// (`ip mptcp endpoint`) decide which subflows exist and when they move.
    KernelPathManager {
        /// Why the agent is not in charge.
        detail: String,
    },
    /// The set of MPTCP subflows changed (one appeared or closed), as the kernel reports it.
    SubflowsChanged(Vec<Subflow>),
    /// A tcp-resume session is on a fresh TCP connection after its previous one failed: no
    /// byte lost or repeated.
    Resumed {
        /// The path it resumed on (`None` on the server side).
        path: Option<LocalPath>,
        /// Bytes this end sent again because the peer had not received them.
        resent: u64,
    },
}
