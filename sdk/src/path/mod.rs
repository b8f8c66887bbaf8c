//! Which local path a session uses, and when it moves.
//!
//! [`manager`] holds the logic as a sans-I/O state machine (inputs and `now` in, actions and the
//! next deadline out); the session's tokio driver feeds it link changes, decisions and transport
//! samples and carries out its actions (bind a socket, `Endpoint::rebind`).

pub mod manager;

use std::fmt;
use std::net::IpAddr;

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
    /// The decision's primary changed (a preferred link returned after its `hold`, or the
    /// policy's order changed).
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
