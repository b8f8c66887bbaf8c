//! The session's flow meter: bytes both ways, counted on every read and write, told to the
//! decision source only when they reach one of the snapshot's flow thresholds
//! ([`crate::decision::Snapshot::flow_thresholds`]). The age is the source's to count.

use std::sync::Arc;
use std::time::Instant;

use roam_policy::Flow;
use tokio::sync::watch;

use crate::decision::{FlowWatch, Snapshot};

/// Counts a session's bytes and reports at the thresholds.
#[derive(Debug)]
pub(crate) struct FlowMeter {
    /// Bytes read and written so far.
    bytes: u64,
    /// When the flow began (the subscription), for the age it reports.
    began: Instant,
    /// The next byte count to report at; `None`: none left.
    next: Option<u64>,
    /// Decisions, for the thresholds (they change on a policy reload).
    decisions: watch::Receiver<Arc<Snapshot>>,
    reports: watch::Sender<Flow>,
}

impl FlowMeter {
    /// A flow starting now, and the watch its source follows.
    pub(crate) fn channel() -> (watch::Sender<Flow>, FlowWatch, Instant) {
        let (tx, rx) = watch::channel(Flow::default());
        (tx, rx, Instant::now())
    }

    /// The meter of a flow that began at `began`, reporting on `reports`, at the thresholds
    /// of `decisions`.
    pub(crate) fn new(
        reports: watch::Sender<Flow>,
        began: Instant,
        mut decisions: watch::Receiver<Arc<Snapshot>>,
    ) -> FlowMeter {
        let next = decisions.borrow_and_update().flow_thresholds.next_bytes(0);
        FlowMeter {
            bytes: 0,
            began,
            next,
            decisions,
            reports,
        }
    }

    /// Counts `n` more bytes (read or written); reports the flow when the count reached a
    /// threshold. Cheap: two comparisons when nothing is due.
    pub(crate) fn count(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
        if self.decisions.has_changed().unwrap_or(false) {
            // New thresholds count from what was last reported: one passed since is due now.
            let reported = self.reports.borrow().bytes;
            self.next = self
                .decisions
                .borrow_and_update()
                .flow_thresholds
                .next_bytes(reported);
        }
        if self.next.is_none_or(|t| self.bytes < t) {
            return;
        }
        let flow = Flow {
            bytes: self.bytes,
            age_ms: u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        tracing::debug!(
            bytes = flow.bytes,
            age_ms = flow.age_ms,
            "flow reached a threshold; telling the decision source"
        );
        self.reports.send_replace(flow);
        self.next = self
            .decisions
            .borrow()
            .flow_thresholds
            .next_bytes(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::LinkView;
    use roam_policy::{Decision, FlowThresholds, MultipathMode};

    fn snap(bytes: &[u64]) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            decision: Decision {
                app: None,
                multipath: MultipathMode::Handover,
                paths: vec![],
                explain: vec![],
            },
            links: Vec::<LinkView>::new(),
            flow_thresholds: FlowThresholds {
                bytes: bytes.to_vec(),
                age_ms: vec![],
            },
        })
    }

    #[test]
    fn the_flow_is_reported_only_when_the_bytes_reach_a_threshold() {
        let (dtx, drx) = watch::channel(snap(&[1000, 5000]));
        let (tx, mut rx, began) = FlowMeter::channel();
        let mut m = FlowMeter::new(tx, began, drx);
        for _ in 0..9 {
            m.count(100);
        }
        assert!(!rx.has_changed().unwrap(), "900 bytes: nothing to say");
        m.count(150);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().bytes, 1050);
        m.count(3000);
        assert!(!rx.has_changed().unwrap(), "4050 bytes: below the next");
        // A reload lowers the next threshold below the count: due at the next byte.
        dtx.send_replace(snap(&[1000, 2000]));
        m.count(1);
        assert_eq!(rx.borrow_and_update().bytes, 4051);
        m.count(1_000_000);
        assert!(!rx.has_changed().unwrap(), "past the last threshold");
    }

    #[test]
    fn a_session_without_thresholds_never_reports() {
        let (_dtx, drx) = watch::channel(snap(&[]));
        let (tx, rx, began) = FlowMeter::channel();
        let mut m = FlowMeter::new(tx, began, drx);
        m.count(usize::MAX);
        m.count(usize::MAX);
        assert!(!rx.has_changed().unwrap());
    }
}
