//! What a session tells the app about its paths: [`SessionEvent`], read through [`Events`].

use roam_policy::Decision;
use tokio::sync::broadcast;

use crate::path::{DegradedReason, LocalPath, MigrationReason};

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
}

/// A receiver of a session's events. Every receiver sees every event sent after it was made;
/// one that falls more than 64 events behind skips the oldest.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<SessionEvent>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<SessionEvent>) -> Events {
        Events { rx }
    }

    /// The next event, or `None` once the session is gone.
    pub async fn next(&mut self) -> Option<SessionEvent> {
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
