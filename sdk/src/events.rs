//! What a session tells the app about its paths: [`SessionEvent`], read through [`Events`].

use roam_policy::Decision;
use tokio::sync::broadcast;

use crate::path::{DegradedReason, LocalPath, MigrationReason};
use crate::session::{Subflow, Transport};

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

/// A receiver of a session's events. Every receiver first sees what the session said while it
/// connected ([`SessionEvent::DecisionSourceChosen`], [`SessionEvent::TransportChosen`], [`SessionEvent::MptcpFallback`],
/// [`SessionEvent::KernelPathManager`]), then every event sent after it was made; one that
/// falls more than 64 events behind skips the oldest.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<SessionEvent>,
    /// What the session said while connecting, told first.
    replay: std::collections::VecDeque<SessionEvent>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<SessionEvent>, replay: &[SessionEvent]) -> Events {
        Events {
            rx,
            replay: replay.iter().cloned().collect(),
        }
    }

    /// The next event, or `None` once the session is gone.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        if let Some(e) = self.replay.pop_front() {
            return Some(e);
        }
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "session event receiver lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
