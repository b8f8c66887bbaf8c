//! What every transport tells its decision source about the session's path: the RTT, at most
//! every [`REPORT_EVERY`], and stalls at once (a stall speeds up roamd's verdict on the link).

use crate::decision::{DecisionSource, PathReport};
use crate::path::manager::{Action, PathEvent};
use crate::vocab::{DegradedReason, LocalPath, MigrationReason};

/// How often a session reports its RTT to the decision source.
pub(crate) const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reports the RTT of the session's path to its decision source, at most every
/// [`REPORT_EVERY`] (`reported` remembers when it last did).
pub(crate) fn report_rtt(
    source: &dyn DecisionSource,
    reported: &mut Option<std::time::Instant>,
    now: std::time::Instant,
    path: &LocalPath,
    rtt: std::time::Duration,
) {
    if reported.is_some_and(|r| now.duration_since(r) < REPORT_EVERY) {
        return;
    }
    *reported = Some(now);
    source.report(PathReport::Path {
        interface: path.interface.clone(),
        rtt: Some(rtt),
        stalled: false,
    });
}

/// When the path manager's action says the session's path stalled (a move away from
/// `current` because of it, or no alternative to it), tells the decision source: a stall
/// speeds up the agent's verdict on the link (it probes at once).
pub(crate) fn report_stall(source: &dyn DecisionSource, a: &Action, current: Option<&LocalPath>) {
    let interface = match a {
        Action::Move {
            reason: MigrationReason::Stalled,
            ..
        } => current.map(|p| p.interface.clone()),
        Action::Event(PathEvent::Degraded {
            path,
            reason: DegradedReason::StalledNoAlternative,
        }) => Some(path.interface.clone()),
        _ => None,
    };
    if let Some(interface) = interface {
        source.report(PathReport::Path {
            interface,
            rtt: None,
            stalled: true,
        });
    }
}
