//! What a session tells the app about its paths: [`SessionEvent`], read through [`Events`].

use tokio::sync::broadcast;

pub use crate::vocab::SessionEvent;

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
