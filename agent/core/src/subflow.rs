//! The one vocabulary for MPTCP subflows: what the userspace path manager is asked to do
//! ([`SubflowCommand`]) and what the kernel says happened ([`MptcpEvent`]).
//!
//! The core's steering plans commands, an app's `mptcp_subflow_*` request is checked and turned
//! into one (`crate::clients`), and the shell's `mptcp_pm` socket encodes them and parses the
//! `mptcp_pm_events` group into events of this very type: nothing is copied between types on
//! the way.
use std::net::SocketAddr;

/// One request to the userspace MPTCP path manager, for one connection by its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubflowCommand {
    /// Open a subflow from `local` (port 0: the kernel picks) to `remote`
    /// (`ip mptcp subflow add addr LOCAL rport P raddr R token T`).
    Create {
        /// Connection token.
        token: u32,
        /// Local address.
        local: SocketAddr,
        /// Remote address.
        remote: SocketAddr,
        /// Join as a backup subflow.
        backup: bool,
        /// Interface to bind the subflow to (0: none).
        index: u32,
        /// The local address's MPTCP address id, 1-255: each local address of a connection
        /// needs its own, and the same one every time (the kernel refuses a subflow whose
        /// address or id matches an earlier one but not both).
        id: u8,
    },
    /// Close the subflow with these addresses (`ip mptcp subflow del ...`).
    Destroy {
        /// Connection token.
        token: u32,
        /// Local address and port.
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
    },
    /// Withdraw local address id `id` from the connection (`ip mptcp endpoint delete id ID
    /// token T`): the peer is told (REMOVE_ADDR, over the subflows left) and closes its side
    /// of the subflows from that address at once, sending its unacknowledged data again on
    /// the others. Without it, a peer whose subflow died with our link keeps sending on it
    /// until its retransmission timeouts (hundreds of ms). Id 0 is the first subflow's.
    RemoveAddr {
        /// Connection token.
        token: u32,
        /// The local address id.
        id: u8,
    },
    /// Set or clear the backup flag of the subflows from `local` to `remote` (MP_PRIO); a
    /// port 0 matches any port.
    SetBackup {
        /// Connection token.
        token: u32,
        /// Local address (and port).
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
        /// The new flag.
        backup: bool,
    },
}

impl SubflowCommand {
    /// The connection the command is for.
    pub fn token(&self) -> u32 {
        match *self {
            SubflowCommand::Create { token, .. }
            | SubflowCommand::Destroy { token, .. }
            | SubflowCommand::RemoveAddr { token, .. }
            | SubflowCommand::SetBackup { token, .. } => token,
        }
    }
}

/// One connection or subflow event from the kernel (`mptcp_pm_events`), client side only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MptcpEvent {
    /// A connection was created or became established (its first subflow's addresses).
    Connection {
        /// Token.
        token: u32,
        /// Local address and port.
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
    },
    /// The connection closed.
    Closed {
        /// Token.
        token: u32,
    },
    /// A subflow is established, or changed priority.
    SubflowUp {
        /// Token.
        token: u32,
        /// Local address and port.
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
        /// Its backup flag as the event carries it (the peer's, for a subflow this end
        /// opened).
        backup: bool,
    },
    /// The connection's owner, from sock_diag (the shell asks it when a connection appears):
    /// a connection nobody registered is steered as the `[[app]]` map says this uid's app is
    /// (programs run with `roam run`, or any MPTCP program).
    Owner {
        /// Token.
        token: u32,
        /// The uid of the socket's owner.
        uid: u32,
    },
    /// A subflow closed (or a join failed).
    SubflowClosed {
        /// Token.
        token: u32,
        /// Local address and port.
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
    },
}
