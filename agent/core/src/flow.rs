//! Subscribers' flows: what a session reported (`subscribe` with `flow`) and the age the core
//! counts from it, so a decision that depends on the flow is made again when the flow crosses
//! one of the app's thresholds ([`roam_policy::FlowThresholds`]).
//!
//! The division of work: a session reports its bytes when they reach a threshold it was sent
//! in its `update`s (bytes are only known in the app); the core counts the age itself from
//! when the flow began, and wakes up ([`crate::Core::poll_timeout`]) when it reaches a
//! threshold, so no message is needed for that.
use std::time::{Duration, Instant};

use roam_policy::{Flow, FlowThresholds};

/// A subscriber's flow as the core follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowClock {
    /// Bytes both ways, as last reported.
    bytes: u64,
    /// When the flow began: the report's instant less its age.
    began: Instant,
}

impl FlowClock {
    /// The flow `reported` at `now`.
    pub(crate) fn new(reported: Flow, now: Instant) -> FlowClock {
        FlowClock {
            bytes: reported.bytes,
            began: now
                .checked_sub(Duration::from_millis(reported.age_ms))
                .unwrap_or(now),
        }
    }

    /// The flow at `now`: the reported bytes, the age counted since it began.
    pub(crate) fn at(&self, now: Instant) -> Flow {
        Flow {
            bytes: self.bytes,
            age_ms: u64::try_from(now.saturating_duration_since(self.began).as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// When the flow's age reaches the next of `thresholds` after `now`, if any.
    pub(crate) fn next_crossing(
        &self,
        thresholds: &FlowThresholds,
        now: Instant,
    ) -> Option<Instant> {
        let ms = thresholds.next_age_ms(self.at(now).age_ms)?;
        self.began.checked_add(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_is_counted_from_the_report_and_crosses_on_time() {
        let t0 = Instant::now();
        let c = FlowClock::new(
            Flow {
                bytes: 7,
                age_ms: 400,
            },
            t0 + Duration::from_secs(1),
        );
        assert_eq!(
            c.at(t0 + Duration::from_millis(1600)),
            Flow {
                bytes: 7,
                age_ms: 1000
            }
        );
        let t = FlowThresholds {
            bytes: vec![],
            age_ms: vec![500, 30_000],
        };
        // Began at t0 + 600 ms: 500 ms of age is at t0 + 1100 ms, then 30 s at t0 + 30.6 s.
        let now = t0 + Duration::from_secs(1);
        assert_eq!(
            c.next_crossing(&t, now),
            Some(t0 + Duration::from_millis(1100))
        );
        assert_eq!(
            c.next_crossing(&t, t0 + Duration::from_millis(1100)),
            Some(t0 + Duration::from_millis(30_600))
        );
        assert_eq!(c.next_crossing(&t, t0 + Duration::from_secs(31)), None);
    }
}
